"""Doppler velocity against a chosen reference wavelength, and the removal of its trends."""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from ._masks import (
    SPEED_OF_LIGHT,
    keep_coords,
    masked,
    quality_mask,
    quiet_median,
    require,
    rest_wavelength,
    spatial_dims,
    to_angstrom,
)

__all__ = ["doppler_velocity", "correct_doppler_gradient"]


def _reference_wavelength(
    params: xr.Dataset, reference, keep: xr.DataArray | None = None, rule: str = ""
) -> tuple[xr.DataArray, str]:
    centroid = params["centroid"] * to_angstrom(params["centroid"])
    kept = masked(centroid, keep)
    over = f" of the kept pixels ({rule})" if keep is not None else " of all pixels"
    if isinstance(reference, xr.DataArray):
        extra = set(reference.dims) - set(centroid.dims)
        if extra:
            raise ValueError(
                f"the reference wavelength DataArray has dims {reference.dims}; they must be "
                f"among the centroid dims {centroid.dims}"
            )
        ref = reference * to_angstrom(reference)
        return ref, "user DataArray"
    if isinstance(reference, (int, float, np.floating, np.integer)) and not isinstance(
        reference, bool
    ):
        return xr.DataArray(float(reference)), f"fixed wavelength {float(reference)!r} Angstrom"
    if reference == "rest":
        return rest_wavelength(params, "doppler_velocity(reference='rest')"), (
            "rest: catalog rest wavelength of each line"
        )
    if reference == "median":
        dims = spatial_dims(centroid)
        return quiet_median(kept, dims), (
            f"median: median centroid of each line over {', '.join(map(str, dims))}{over}; "
            "removes the instrument's wavelength-scale offset (and any mean flow of the window)"
        )
    if reference == "column":
        if "y" not in centroid.dims:
            raise ValueError(
                "doppler_velocity(reference='column') takes the median along the slit (dim "
                f"'y'); the centroid has dims {centroid.dims}"
            )
        return quiet_median(kept, "y"), (
            "column: median centroid of each line along the slit (y), per raster column" + over
        )
    raise ValueError(
        f"unknown Doppler reference {reference!r}: use 'rest', 'median', 'column', a wavelength "
        "in Angstrom or a DataArray of wavelengths"
    )


def doppler_velocity(params: xr.Dataset, reference="median", *, mask="good") -> xr.Dataset:
    """Doppler velocity of each line relative to a reference wavelength, in km/s.

    ``v = c (centroid - reference) / reference`` (non-relativistic; positive = redshift, i.e.
    motion away from the observer), ``sigma_v = c sigma_centroid / reference``. The uncertainty
    of the reference itself is not included (for the median references it is negligible).

    Parameters
    ----------
    params : xarray.Dataset
        Fitted parameters with ``centroid`` and ``centroid_err`` (Angstrom).
    reference : {"median", "rest", "column"}, float or xarray.DataArray, default "median"
        ``"median"`` (default): the median centroid of each line over the map (the window),
        taken over the pixels kept by ``mask`` only. SPICE's wavelength scale is pre-flight
        and off by tenths of an Angstrom (the real 2022 Ne VIII window sits at about
        -164 km/s against the rest wavelength), so this is the reference a SPICE user should
        get: it removes the instrument's offset (and with it any mean flow of the window).
        ``"rest"``: the ``rest_wavelength`` coordinate of each line (catalog value; absolute
        velocities then carry the wavelength-scale offset). ``"column"``: the median centroid
        of each line along the slit (``y``), per raster column (per exposure for
        sit-and-stare), over the kept pixels. A float: one wavelength in Angstrom for every
        line. A DataArray: wavelengths in Angstrom whose dims are among the centroid's (e.g.
        ``line``, or ``(line, x)``).
    mask : {"good", "usable", None} or xarray.DataArray, default "good"
        Which pixels keep a value (others NaN; rule in :mod:`saffron_xr.derive`, ``mask_rule``).

    Returns
    -------
    xarray.Dataset
        ``doppler_velocity`` and ``doppler_velocity_err`` (km/s) and
        ``doppler_reference_wavelength`` (Angstrom, the reference actually used); attributes
        ``doppler_reference`` (the reference's name), ``doppler_reference_description``,
        ``reference_wavelength`` (the values when known without computing, else a pointer to
        the ``doppler_reference_wavelength`` variable) and ``mask_rule``. Lazy.

    Examples
    --------
    >>> import xarray as xr
    >>> p = xr.Dataset({"centroid": ("line", [770.5]), "centroid_err": ("line", [0.01])},
    ...                coords={"rest_wavelength": ("line", [770.42])})
    >>> round(float(doppler_velocity(p, "rest")["doppler_velocity"][0]), 3)
    31.13
    """
    require(params, ["centroid", "centroid_err"], "doppler_velocity")
    keep, rule = quality_mask(params, mask)
    ref, description = _reference_wavelength(params, reference, keep, rule)
    cfac = to_angstrom(params["centroid"])
    efac = to_angstrom(params["centroid_err"])
    centroid = params["centroid"] * cfac
    with xr.set_options(arithmetic_join="exact"):
        v = SPEED_OF_LIGHT * (centroid - ref) / ref
        err = SPEED_OF_LIGHT * (params["centroid_err"] * efac) / ref
    v = masked(v.transpose(*centroid.dims), keep)
    err = masked(err.transpose(*centroid.dims), keep)
    label = reference if isinstance(reference, str) else description
    if ref.chunks is None and ref.size <= 64:
        known = json.dumps(np.round(np.atleast_1d(ref.values).astype(float), 6).tolist())
    else:
        known = "see the variable doppler_reference_wavelength (computed with the maps)"
    common = {
        "doppler_reference": str(label),
        "doppler_reference_description": description,
        "reference_wavelength": known,
        "mask_rule": rule,
    }
    v.attrs = {
        "units": "km s-1",
        "long_name": "Doppler velocity (positive = redshift)",
        **common,
    }
    err.attrs = {"units": "km s-1", "long_name": "1-sigma error of Doppler velocity", **common}
    ref = ref.copy()
    ref.attrs = {
        "units": "Angstrom",
        "long_name": "reference wavelength of the Doppler velocity",
        **common,
    }
    # the reference must not carry coordinates that would clash with the parameters'
    ref = ref.reset_coords(drop=True) if ref.dims else ref.drop_vars(list(ref.coords))
    return xr.Dataset(
        {"doppler_velocity": v, "doppler_velocity_err": err, "doppler_reference_wavelength": ref},
        coords=keep_coords(params),
    )


def _nanpolyfit(profile: np.ndarray, degree: int) -> np.ndarray:
    """Least-squares polynomial coefficients (lowest order first) over the last axis."""
    out = np.full(profile.shape[:-1] + (degree + 1,), np.nan)
    pos = np.arange(profile.shape[-1], dtype=float)
    flat = profile.reshape(-1, profile.shape[-1])
    res = out.reshape(-1, degree + 1)
    for i, row in enumerate(flat):
        ok = np.isfinite(row)
        if ok.sum() > degree:
            res[i] = np.polynomial.polynomial.polyfit(pos[ok], row[ok], degree)
    return out


def correct_doppler_gradient(
    ds: xr.Dataset,
    *,
    reference_line: str | None = None,
    dim: str = "x",
    degree: int = 1,
    reference="median",
    mask="good",
) -> xr.Dataset:
    """Remove a smooth trend of Doppler velocity along ``x`` or ``y`` from all lines.

    The reference line's velocity is collapsed to a profile along ``dim`` (median over the
    other spatial dims), a polynomial of ``degree`` in pixel index is fitted to it by least
    squares, and that trend (km/s) is subtracted from the velocity of every line. This removes
    instrumental drifts (e.g. thermal wavelength drift during a raster) as the original tool
    offers; it also removes any real large-scale flow pattern of that shape.

    Parameters
    ----------
    ds : xarray.Dataset
        Either the output of :func:`doppler_velocity` (``doppler_velocity`` variable) or a
        parameter Dataset, whose velocities are then computed with ``reference``.
    reference_line : str, optional
        The ``line`` whose velocity defines the trend. Default: the first line.
    dim : str, default "x"
        Dimension along which the trend is fitted (``"x"`` or ``"y"``, or ``"time"``).
    degree : int, default 1
        Polynomial degree (0 = constant offset, 1 = linear, ...).
    reference : optional
        Doppler reference used when ``ds`` holds parameters (see :func:`doppler_velocity`).
    mask : optional
        Pixel mask used when ``ds`` holds parameters (see :func:`doppler_velocity`).

    Returns
    -------
    xarray.Dataset
        The velocity Dataset with ``doppler_velocity`` corrected, plus ``doppler_trend`` (km/s,
        along ``dim``) and ``doppler_trend_coefficients`` (km/s per pixel**k, dim
        ``trend_degree``); the settings are recorded in attributes. Lazy.
    """
    if "doppler_velocity" not in ds.variables:
        if "centroid" not in ds.variables:
            raise ValueError(
                "correct_doppler_gradient needs a 'doppler_velocity' variable (from "
                "doppler_velocity()) or fitted parameters with a 'centroid'"
            )
        ds = doppler_velocity(ds, reference=reference, mask=mask)
    v = ds["doppler_velocity"]
    if dim not in v.dims:
        raise ValueError(f"dim {dim!r} is not a dimension of doppler_velocity {v.dims}")
    if int(degree) < 0:
        raise ValueError(f"degree must be >= 0, got {degree}")
    degree = int(degree)
    lines = [str(s) for s in np.atleast_1d(v["line"].values)] if "line" in v.dims else []
    if "line" in v.dims:
        ref_line = reference_line if reference_line is not None else lines[0]
        if ref_line not in lines:
            raise ValueError(f"reference_line {ref_line!r} is not among the lines {lines}")
        vref = v.sel(line=ref_line, drop=True)
    else:
        ref_line = reference_line
        vref = v
    others = [d for d in vref.dims if d != dim]
    profile = quiet_median(vref, others) if others else vref
    profile = profile.chunk({dim: -1}) if profile.chunks is not None else profile
    coeffs = xr.apply_ufunc(
        _nanpolyfit,
        profile,
        input_core_dims=[[dim]],
        output_core_dims=[["trend_degree"]],
        kwargs={"degree": degree},
        dask="parallelized",
        output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {"trend_degree": degree + 1}},
    )
    coeffs = coeffs.assign_coords(trend_degree=np.arange(degree + 1))
    pos = xr.DataArray(np.arange(v.sizes[dim], dtype=float), dims=dim)
    trend = sum(coeffs.isel(trend_degree=k, drop=True) * pos**k for k in range(degree + 1))
    trend = trend.reset_coords(drop=True)
    settings = {
        "doppler_gradient_reference_line": "" if ref_line is None else str(ref_line),
        "doppler_gradient_dim": dim,
        "doppler_gradient_degree": degree,
    }
    corrected = (v - trend).transpose(*v.dims)
    corrected.attrs = {**v.attrs, **settings}
    trend.attrs = {
        "units": "km s-1",
        "long_name": f"Doppler velocity trend along {dim} removed from all lines",
        **settings,
    }
    coeffs = coeffs.reset_coords(drop=True).assign_coords(trend_degree=np.arange(degree + 1))
    coeffs.attrs = {
        "units": "km s-1",
        "long_name": "polynomial coefficients of the trend (lowest order first, pixel index)",
        **settings,
    }
    out = ds.copy()
    out["doppler_velocity"] = corrected
    out["doppler_trend"] = trend
    out["doppler_trend_coefficients"] = coeffs
    return out
