"""Line profiles in numpy: the package's one Gaussian outside the numba kernel."""

from __future__ import annotations

import numpy as np

__all__ = ["gaussian"]


def gaussian(wavelength, amplitude, centroid, width):
    """A Gaussian line profile, ``amplitude * exp(-((wavelength - centroid) / width)**2 / 2)``.

    Plain arithmetic, so it broadcasts numpy arrays and xarray objects alike (and stays lazy
    on dask-backed DataArrays).

    Parameters
    ----------
    wavelength : array-like or xarray.DataArray
        Where to evaluate the profile (same unit as ``centroid`` and ``width``).
    amplitude : float, array-like or xarray.DataArray
        Peak value.
    centroid : float, array-like or xarray.DataArray
        Centre wavelength.
    width : float, array-like or xarray.DataArray
        Gaussian sigma (not the FWHM).

    Returns
    -------
    numpy.ndarray or xarray.DataArray
        The profile, broadcast over the arguments.

    Examples
    --------
    >>> import numpy as np
    >>> gaussian(np.array([770.0, 770.1]), 2.0, 770.0, 0.1).round(4)
    array([2.    , 1.2131])
    """
    z = (wavelength - centroid) / width
    return amplitude * np.exp(-0.5 * z * z)
