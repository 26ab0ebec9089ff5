"""Line profiles in numpy: the one Gaussian of the package outside the numba kernels.

``fit/_kernels.py`` has its own compiled Gaussian (evaluated only near each line, by
recurrence on uniform grids); everything else that draws a line (``model_spectrum``, the
scipy reference fit, the synthetic data, the plots) uses :func:`gaussian`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["gaussian"]


def gaussian(wavelength, amplitude, centroid, width):
    """Gaussian line profile ``amplitude * exp(-0.5 * ((wavelength - centroid) / width)**2)``.

    The arguments broadcast against each other by numpy's rules (xarray objects broadcast by
    dimension name); the result has their common shape and the precision of the inputs
    (float32 in, float32 out).

    Parameters
    ----------
    wavelength : array-like
        Wavelengths (same unit as `centroid` and `width`).
    amplitude : array-like
        Peak value.
    centroid : array-like
        Line centre.
    width : array-like
        Gaussian sigma (not the FWHM).

    Returns
    -------
    numpy.ndarray or xarray.DataArray
        The profile; a scalar for scalar inputs.

    Examples
    --------
    >>> import numpy as np
    >>> gaussian(np.array([770.0, 770.1]), 2.0, 770.0, 0.1).round(4)
    array([2.    , 1.2131])
    >>> gaussian(np.zeros((3, 1)), np.ones(4), 0.0, 1.0).shape
    (3, 4)
    """
    z = (wavelength - centroid) * (1.0 / width)  # one division per line, not per sample
    return amplitude * np.exp(-0.5 * z * z)
