"""Derived physical quantities from a fitted-parameter Dataset.

The parameter Dataset is what :func:`saffron_xr.fit_lines` returns: ``amplitude`` (peak
spectral radiance), ``centroid`` and ``width`` (Gaussian sigma, Angstrom) with their
``<name>_err`` 1-sigma errors and, where the fit provides them, the covariance terms
``cov_amplitude_width``, ``cov_amplitude_centroid`` and ``cov_centroid_width``; dims
``(line, y, x)`` (or ``(line, time, y)`` for sit-and-stare); coordinates ``line``, ``ion`` and
``rest_wavelength`` (Angstrom) on ``line``.

Every function here is lazy (plain xarray arithmetic on dask arrays, reductions included) and
returns a new Dataset holding the derived quantity, its 1-sigma error and what was used to
compute it, with ``units`` and ``long_name`` on every variable. Merge it back with
``params.merge(result)`` or use :func:`derive_all` for the usual set.

Error propagation is linear (first order); covariance terms are used when present and taken as
zero otherwise.

Which pixels count (``mask=``): by default (``"good"``) a derived value is kept only where the
line is ``detected``, not ``at_bound`` (per-line variables of the fit result) and the pixel's
``status`` is ``CONVERGED`` (:meth:`saffron_xr.FitStatus.converged`, the one definition of
"converged"); elsewhere it is NaN. When the fit result has no ``detected``/``at_bound``
variables the status alone decides, and the rule says so. ``"usable"`` keeps every status whose
parameters are finite (:meth:`saffron_xr.FitStatus.usable`), ``None`` keeps everything, and a
boolean DataArray is used as given. The rule applied is recorded in the ``mask_rule``
attribute of every derived variable. The Doppler ``"median"`` and ``"column"`` references are
medians over the same kept pixels, so centroids pinned at a bound never move them.

Modules: :mod:`~saffron_xr.derive.intensity` (radiance), :mod:`~saffron_xr.derive.doppler`
(Doppler velocity and its trend correction), :mod:`~saffron_xr.derive.widths` (FWHM, thermal,
instrumental and non-thermal widths), :mod:`~saffron_xr.derive.combined` (:func:`derive_all`);
the mask rule and unit helpers they share live in ``_masks``. Every public name is importable
from ``saffron_xr.derive`` itself.
"""

from __future__ import annotations

from ._masks import FWHM_PER_SIGMA, MASK_RULES, SPEED_OF_LIGHT
from .combined import derive_all
from .doppler import correct_doppler_gradient, doppler_velocity
from .intensity import radiance
from .widths import (
    ATOMIC_WEIGHTS,
    INSTRUMENTAL_FWHM,
    default_instrumental_fwhm,
    fwhm,
    line_widths,
    nonthermal_velocity,
    thermal_fwhm,
)

__all__ = [
    "MASK_RULES",
    "SPEED_OF_LIGHT",
    "FWHM_PER_SIGMA",
    "ATOMIC_WEIGHTS",
    "INSTRUMENTAL_FWHM",
    "radiance",
    "doppler_velocity",
    "fwhm",
    "thermal_fwhm",
    "default_instrumental_fwhm",
    "nonthermal_velocity",
    "line_widths",
    "correct_doppler_gradient",
    "derive_all",
]
