"""What the derive modules share: the pixel mask, unit conversion and small helpers.

Public within :mod:`saffron_xr.derive` (its modules import these names); users reach
:data:`MASK_RULES`, :data:`SPEED_OF_LIGHT` and :data:`FWHM_PER_SIGMA` through the package.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable

import astropy.constants as const
import numpy as np
import xarray as xr

from .._units import angstrom_factor

__all__ = [
    "MASK_RULES",
    "SPEED_OF_LIGHT",
    "FWHM_PER_SIGMA",
    "PreparedMask",
    "quality_mask",
    "quiet_median",
    "masked",
    "require",
    "to_angstrom",
    "covariance",
    "keep_coords",
    "spatial_dims",
    "rest_wavelength",
]

#: Speed of light in km/s (astropy constants).
SPEED_OF_LIGHT = float(const.c.to_value("km/s"))

#: FWHM of a Gaussian in units of its sigma, 2 sqrt(2 ln 2).
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))

#: Names accepted by the ``mask=`` keyword (besides a boolean DataArray).
MASK_RULES = ("good", "usable", None)


class PreparedMask(tuple):
    """``(keep, rule)`` from :func:`quality_mask`, passed on as ``mask=`` so that the
    derive functions one :func:`~saffron_xr.derive.derive_all` call runs build the mask
    once (it was four lazy graphs per window, a quarter of derive's graph-building time)."""

    __slots__ = ()


def quality_mask(params: xr.Dataset, mask) -> tuple[xr.DataArray | None, str]:
    """The boolean keep-mask for ``mask`` (None: keep all) and the rule as text."""
    from ..fit.status import FitStatus

    if isinstance(mask, PreparedMask):
        return mask[0], mask[1]
    if mask is None or (isinstance(mask, str) and mask == "none"):
        return None, "none: every fitted value kept"
    if isinstance(mask, xr.DataArray):
        if mask.dtype != bool:
            raise ValueError(f"a mask DataArray must be boolean, got dtype {mask.dtype}")
        return mask, "user mask (DataArray)"
    if mask not in ("good", "usable"):
        raise ValueError(
            f"unknown mask {mask!r}: use 'good' (detected, converged, not at a bound), "
            "'usable' (finite parameters), None (keep all) or a boolean DataArray"
        )
    if "status" not in params.variables:
        return None, f"{mask}: no 'status' in the parameters, every fitted value kept"
    if mask == "usable":
        codes = [int(c) for c in FitStatus.usable()]
        names = "/".join(c.name for c in FitStatus.usable())
        return params["status"].isin(codes), f"usable: status in {names}"
    codes = [int(c) for c in FitStatus.converged()]
    keep = params["status"].isin(codes)
    parts = [f"status {'/'.join(c.name for c in FitStatus.converged())}"]
    absent = []
    if "detected" in params.variables:
        keep = keep & params["detected"].astype(bool)
        parts.insert(0, "detected")
    else:
        absent.append("detected")
    if "at_bound" in params.variables:
        keep = keep & ~params["at_bound"].astype(bool)
        parts.append("not at_bound")
    else:
        absent.append("at_bound")
    rule = "good: " + " & ".join(parts)
    if absent:
        rule += f" ({' and '.join(absent)} absent from the fit result: not applied)"
    return keep, rule


def masked(da: xr.DataArray, keep: xr.DataArray | None) -> xr.DataArray:
    """``da`` with NaN where ``keep`` is False (dims and attrs of ``da``)."""
    if keep is None:
        return da
    attrs = da.attrs
    out = da.where(keep)
    extra = [d for d in out.dims if d not in da.dims]
    if extra:
        raise ValueError(
            f"the mask has dims {extra} that {da.name or 'the variable'} {da.dims} lacks"
        )
    out = out.transpose(*da.dims)
    out.attrs = attrs
    return out


def require(params: xr.Dataset, names, what: str) -> None:
    """Raise a ValueError naming ``what`` when ``params`` lacks any of ``names``."""
    missing = [n for n in names if n not in params.variables]
    if missing:
        raise ValueError(
            f"{what} needs the variable(s) {missing} in the parameter Dataset; "
            f"it has {sorted(map(str, params.data_vars))}"
        )


def to_angstrom(obj: xr.DataArray) -> float:
    """Factor converting ``obj`` (its ``units`` attribute, Angstrom if absent) to Angstrom."""
    units = str(obj.attrs.get("units", "Angstrom")).strip() or "Angstrom"
    factor = angstrom_factor(units)
    if factor is None:
        raise ValueError(
            f"variable {obj.name!r} has units {units!r}, which cannot be converted to 'Angstrom'"
        )
    return factor


def covariance(params: xr.Dataset, name: str) -> xr.DataArray | int:
    """A covariance term if the fit provides it (NaN treated as 0), else 0."""
    if name in params.variables:
        return params[name].fillna(0.0)
    return 0


def keep_coords(params: xr.Dataset) -> dict:
    """The coordinates of ``params``, to carry over to a derived Dataset."""
    return {k: v for k, v in params.coords.items()}


def spatial_dims(da: xr.DataArray) -> list[Hashable]:
    """The dims of ``da`` other than ``line``."""
    return [d for d in da.dims if d != "line"]


def rest_wavelength(params: xr.Dataset, what: str) -> xr.DataArray:
    """The ``rest_wavelength`` of each line in Angstrom (``what`` names the caller in errors)."""
    if "rest_wavelength" not in params.coords and "rest_wavelength" not in params.variables:
        raise ValueError(
            f"{what} needs a 'rest_wavelength' coordinate (Angstrom) on 'line'; the parameter "
            "Dataset has none"
        )
    rest = params["rest_wavelength"]
    return rest * to_angstrom(rest)


def _nanmedian_last(a: np.ndarray, n_axes: int) -> np.ndarray:
    """NaN-skipping median over the last ``n_axes`` axes; NaN, silently, where all are NaN."""
    flat = a.reshape(a.shape[: a.ndim - n_axes] + (-1,))
    with warnings.catch_warnings():
        # a line with no kept pixel has no median: NaN is the answer, not a warning
        warnings.filterwarnings("ignore", "All-NaN slice encountered", RuntimeWarning)
        return np.nanmedian(flat, axis=-1)


def quiet_median(da: xr.DataArray, dims) -> xr.DataArray:
    """``da.median(dims, skipna=True)`` without numpy's "All-NaN slice" RuntimeWarning
    (raised inside the dask tasks at compute time, where a caller cannot catch it) for the
    slices where no value is kept. Lazy for dask input."""
    dims = [dims] if isinstance(dims, str) else list(dims)
    out_dtype = np.result_type(da.dtype, np.float64)
    return xr.apply_ufunc(
        _nanmedian_last,
        da,
        input_core_dims=[dims],
        kwargs={"n_axes": len(dims)},
        dask="parallelized",
        output_dtypes=[out_dtype],
        dask_gufunc_kwargs={"allow_rechunk": True},
    )
