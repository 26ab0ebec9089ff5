"""NaN-aware spatial binning with error propagation: box convolution, superpixels, levels.

Every bin (a sliding box, or a superpixel) averages its valid samples and propagates the
errors of independent samples,

    value = sum(I_i) / N,    error = sqrt(sum(sigma_i**2)) / N,

over the ``N`` valid samples (finite radiance and finite error). A bin is NaN when fewer than
``min_valid`` of its samples inside the array are valid. Only the spatial dims ``y`` and ``x``
are binned (``time`` of sit-and-stare data and ``wavelength`` are left alone). By default the
extent along ``x`` is matched to the extent along ``y`` in arcsec through the pixel scales
CDELT1 (x) and CDELT2 (y), whether the raster steps are larger or smaller than the slit
pixels.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import numpy as np
import xarray as xr
from scipy.ndimage import uniform_filter1d

from ._overlap import apply_overlap

__all__ = ["bin_spatial", "rebin", "bin_levels"]

_SPATIAL = ("y", "x")


def bin_extents(
    radiance: xr.DataArray,
    size: int | Mapping[str, int],
    *,
    match_pixel_scale: bool = True,
    odd: bool = True,
) -> dict[str, int]:
    """Box extent in pixels along each spatial dim of ``radiance``.

    Parameters
    ----------
    radiance : xarray.DataArray
        With dims ``y`` and possibly ``x``; CDELT1 and CDELT2 attrs when the x extent is
        matched.
    size : int or mapping of str to int
        An int is the extent along ``y`` (slit pixels); the ``x`` extent then follows from
        the pixel scales, ``round(size * CDELT2 / CDELT1)`` (at least 1, and odd when
        ``odd``), whether the raster steps are larger or smaller than the slit pixels. A
        mapping such as ``{"y": 3, "x": 1}`` gives the extents explicitly.
    match_pixel_scale : bool, default True
        If False an int ``size`` is used along both dims.
    odd : bool, default True
        Require odd extents (centred boxes).

    Returns
    -------
    dict
        Extent per spatial dim present in ``radiance`` (1 along a dim of length 1).
    """
    dims = [d for d in _SPATIAL if d in radiance.dims]
    if "y" not in dims:
        raise ValueError(f"binning needs a 'y' dim; the array has dims {radiance.dims}")
    if isinstance(size, Mapping):
        unknown = set(size) - set(dims)
        if unknown:
            raise ValueError(
                f"binning: size names {sorted(unknown)}; only spatial dims {dims} are binned"
            )
        extents = {d: int(size.get(d, 1)) for d in dims}
    else:
        extents = {"y": int(size)}
        if "x" in dims:
            if match_pixel_scale:
                missing = [k for k in ("CDELT1", "CDELT2") if k not in radiance.attrs]
                if missing:
                    raise KeyError(
                        f"binning: header keyword(s) {missing} missing from the radiance "
                        "attrs; needed to match the x extent to the y extent (pass "
                        "size={'y': ..., 'x': ...} or match_pixel_scale=False)"
                    )
                ratio = abs(float(radiance.attrs["CDELT2"]) / float(radiance.attrs["CDELT1"]))
                nx = size * ratio
                if odd:
                    extents["x"] = max(1, 2 * int(np.floor(nx / 2)) + 1)
                else:
                    extents["x"] = max(1, int(np.floor(nx + 0.5)))
            else:
                extents["x"] = int(size)
    for d in dims:
        if radiance.sizes[d] == 1:  # e.g. x of a single exposure: nothing to bin
            extents[d] = 1
    for d, n in extents.items():
        if n < 1 or (odd and n % 2 == 0):
            kind = "odd and >= 1" if odd else ">= 1"
            raise ValueError(f"binning: extent along {d!r} must be {kind}, got {n}")
    return extents


def _box_sum(values: np.ndarray, half: Sequence[int]) -> np.ndarray:
    out = values
    for axis, h in enumerate(half):
        if h > 0:
            n = 2 * h + 1
            out = uniform_filter1d(out, n, axis=axis, mode="constant", cval=0.0) * n
    return out


def _box_block(data, error, *, half, min_valid, want):
    """Box mean (``want='value'``) or propagated error of one padded block.

    The halo beyond the array edges is +inf (outside the array), NaN is missing data.
    """
    data = data.astype(np.float64)
    inside = ~np.isposinf(data)
    valid = np.isfinite(data)
    if error is not None:
        error = error.astype(np.float64)
        valid &= np.isfinite(error)
    n_inside = _box_sum(inside.astype(np.float64), half)
    n_valid = _box_sum(valid.astype(np.float64), half)
    n_valid = np.rint(n_valid)
    good = (n_valid > 0) & (n_valid >= min_valid * np.rint(n_inside) - 1e-9)
    with np.errstate(invalid="ignore", divide="ignore"):
        if want == "value":
            total = _box_sum(np.where(valid, data, 0.0), half)
            out = total / n_valid
        else:
            total = _box_sum(np.where(valid, error * error, 0.0), half)
            out = np.sqrt(np.clip(total, 0.0, None)) / n_valid
    out[~good] = np.nan
    return out


def _check_pair(radiance: xr.DataArray, error: xr.DataArray | None) -> xr.DataArray | None:
    if error is None:
        return None
    if set(error.dims) != set(radiance.dims) or any(
        error.sizes[d] != radiance.sizes[d] for d in radiance.dims
    ):
        raise ValueError(
            f"binning: error dims {dict(error.sizes)} differ from radiance dims "
            f"{dict(radiance.sizes)}"
        )
    error = error.transpose(*radiance.dims)
    if radiance.chunks is not None:
        error = error.chunk(dict(zip(radiance.dims, radiance.chunks, strict=True)))
    return error


def _units(da: xr.DataArray, fallback: str) -> str:
    return str(da.attrs.get("units", da.attrs.get("BUNIT", fallback)))


def _finish(radiance, error, value, sigma, extents, method, min_valid, extra_attrs=None):
    """Wrap binned arrays in a Dataset with attrs."""
    binning = {
        "bin_method": method,
        "bin_size_y": int(extents.get("y", 1)),
        "bin_size_x": int(extents.get("x", 1)),
        "bin_min_valid": float(min_valid),
    }
    attrs = dict(radiance.attrs)
    attrs.update(binning)
    attrs.update(extra_attrs or {})
    attrs["units"] = _units(radiance, "W m-2 sr-1 nm-1")
    variables = {"radiance": value.astype(radiance.dtype).assign_attrs(attrs)}
    if error is not None:
        err_attrs = dict(error.attrs)
        err_attrs.update(binning)
        err_attrs.update(extra_attrs or {})
        err_attrs["units"] = _units(error, attrs["units"])
        err_attrs["long_name"] = "1-sigma radiance uncertainty, propagated through binning"
        variables["error"] = sigma.astype(error.dtype).assign_attrs(err_attrs)
    return xr.Dataset(variables)


def _convolve(radiance, error, extents, min_valid):
    half = {d: n // 2 for d, n in extents.items()}
    half_axes = tuple(half.get(d, 0) for d in radiance.dims)
    arrays = [radiance] if error is None else [radiance, error]

    def value_func(data, err=None):
        block = _box_block(data, err, half=half_axes, min_valid=min_valid, want="value")
        return block.astype(radiance.dtype)

    value = apply_overlap(value_func, arrays, half, np.inf, radiance.dtype)
    sigma = None
    if error is not None:
        error_func = functools.partial(
            _box_block, half=half_axes, min_valid=min_valid, want="error"
        )

        def sigma_func(data, err):
            return error_func(data, err).astype(error.dtype)

        sigma = apply_overlap(sigma_func, arrays, half, np.inf, error.dtype)
    return value, sigma


def _edge_counts(length: int, size: int) -> np.ndarray:
    counts = np.full(-(-length // size), size, dtype=np.float64)
    if length % size:
        counts[-1] = length % size
    return counts


def _rebin(radiance, error, extents, min_valid):
    valid = radiance.notnull()
    if error is not None:
        valid = valid & error.notnull()
    window = {d: n for d, n in extents.items() if n > 1}
    if not window:
        value = radiance.where(valid)
        return value, None if error is None else error.where(valid)

    def coarse_sum(arr):
        return arr.coarsen(window, boundary="pad").sum()

    n_valid = coarse_sum(valid.astype(radiance.dtype))
    n_inside = 1.0
    for d, n in window.items():
        n_inside = n_inside * xr.DataArray(_edge_counts(radiance.sizes[d], n), dims=d)
    good = (n_valid > 0) & (n_valid >= min_valid * n_inside - 1e-9)
    n_valid = n_valid.where(good)  # NaN, not 0/0, for the bins dropped
    value = coarse_sum(radiance.where(valid, 0)) / n_valid
    value = value.where(good).transpose(*radiance.dims)
    sigma = None
    if error is not None:
        sigma = np.sqrt(coarse_sum((error * error).where(valid, 0))) / n_valid
        sigma = sigma.where(good).transpose(*radiance.dims)
    return value, sigma


def bin_spatial(
    radiance: xr.DataArray,
    error: xr.DataArray | None = None,
    size: int | Mapping[str, int] = 3,
    *,
    method: str = "convolve",
    min_valid: float = 0.5,
    match_pixel_scale: bool = True,
) -> xr.Dataset:
    """Spatially bin radiances (and errors), NaN-aware, lazily.

    ``method="convolve"`` replaces every sample by the mean over a centred box around it
    (same grid; the box is truncated at the array edges); ``method="rebin"`` averages
    non-overlapping superpixels (a coarser grid; a partial superpixel at the far edge is
    kept). In both, ``value = sum(I) / N`` and ``error = sqrt(sum(sigma**2)) / N`` over the
    ``N`` valid samples, which is exact for independent errors. The box along ``x`` is
    matched to the box along ``y`` through the pixel scales (CDELT1, CDELT2) unless the
    extents are given explicitly.

    Parameters
    ----------
    radiance : xarray.DataArray
        Spectral radiance with dims including ``y`` (and usually ``x``, ``wavelength``).
    error : xarray.DataArray, optional
        1-sigma errors with the same dims and shape as ``radiance``. A sample is valid when
        both its radiance and its error are finite.
    size : int or mapping of str to int, default 3
        Extent along ``y`` in pixels (the ``x`` extent then follows from the pixel scales,
        see :func:`bin_extents`), or explicit extents such as ``{"y": 3, "x": 1}``. Odd for
        ``method="convolve"``.
    method : {"convolve", "rebin"}, default "convolve"
        Sliding box on the same grid, or superpixels on a coarser grid.
    min_valid : float, default 0.5
        Minimum fraction of valid samples among the box samples inside the array; bins
        below it are NaN.
    match_pixel_scale : bool, default True
        Match the x extent to the y extent in arcsec (CDELT1, CDELT2 attrs needed); if
        False an int ``size`` is used along both.

    Returns
    -------
    xarray.Dataset
        ``radiance`` (and ``error`` when given), same dtype as the inputs, with the binning
        recorded in ``bin_method``, ``bin_size_y``, ``bin_size_x``, ``bin_min_valid`` attrs.
        For ``rebin``, spatial coordinates are averaged over each superpixel and CDELT1,
        CDELT2 attrs are scaled by the extents.

    Notes
    -----
    Binned samples are correlated with their neighbours for ``method="convolve"``: fit
    each pixel on its own, do not average binned pixels again as if independent.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> rad = xr.DataArray(np.ones((6, 4, 5), dtype="float32"), dims=("y", "x", "wavelength"),
    ...                    attrs={"CDELT1": 4.0, "CDELT2": 1.098, "units": "W m-2 sr-1 nm-1"})
    >>> err = xr.full_like(rad, 0.3)
    >>> out = bin_spatial(rad, err, 3)
    >>> out.radiance.attrs["bin_size_y"], out.radiance.attrs["bin_size_x"]
    (3, 1)
    >>> round(float(out.error[2, 1, 0]), 4)  # 0.3 / sqrt(3)
    0.1732
    >>> rebin(rad, err, {"y": 2, "x": 2}).radiance.shape
    (3, 2, 5)
    """
    if method not in ("convolve", "rebin"):
        raise ValueError(f"bin_spatial: method must be 'convolve' or 'rebin', got {method!r}")
    if not 0.0 <= min_valid <= 1.0:
        raise ValueError(f"bin_spatial: min_valid must be in [0, 1], got {min_valid}")
    error = _check_pair(radiance, error)
    extents = bin_extents(
        radiance, size, match_pixel_scale=match_pixel_scale, odd=(method == "convolve")
    )
    if method == "convolve":
        value, sigma = _convolve(radiance, error, extents, min_valid)
        extra = None
    else:
        value, sigma = _rebin(radiance, error, extents, min_valid)
        extra = {}
        for key, dim in (("CDELT1", "x"), ("CDELT2", "y")):
            if key in radiance.attrs and dim in extents:
                extra[key] = float(radiance.attrs[key]) * extents[dim]
    return _finish(radiance, error, value, sigma, extents, method, min_valid, extra)


def rebin(
    radiance: xr.DataArray,
    error: xr.DataArray | None = None,
    size: int | Mapping[str, int] = 3,
    *,
    min_valid: float = 0.5,
    match_pixel_scale: bool = True,
) -> xr.Dataset:
    """Average non-overlapping superpixels; :func:`bin_spatial` with ``method="rebin"``.

    Parameters
    ----------
    radiance, error, size, min_valid, match_pixel_scale
        As for :func:`bin_spatial`; ``size`` need not be odd.

    Returns
    -------
    xarray.Dataset
        ``radiance`` (and ``error``) on the coarser grid.
    """
    return bin_spatial(
        radiance,
        error,
        size,
        method="rebin",
        min_valid=min_valid,
        match_pixel_scale=match_pixel_scale,
    )


def bin_levels(
    radiance: xr.DataArray,
    error: xr.DataArray,
    sizes: Sequence[int] = (1, 3, 5),
    *,
    min_valid: float = 0.5,
    match_pixel_scale: bool = True,
) -> xr.Dataset:
    """Stack box-convolved versions of the radiance along a ``level`` dim, lazily.

    Level ``i`` is :func:`bin_spatial` with ``size=sizes[i]`` (``method="convolve"``, so all
    levels share the grid). This is the input of the adaptive-binning fit, which picks per
    pixel the smallest level whose parameter errors meet the thresholds.

    Parameters
    ----------
    radiance : xarray.DataArray
        Spectral radiance, dims including ``y`` (and ``x``) and ``wavelength``.
    error : xarray.DataArray
        Its 1-sigma errors, same dims and shape.
    sizes : sequence of int, default (1, 3, 5)
        Odd, strictly increasing box extents along ``y`` (1 = unbinned); the ``x`` extents
        follow from the pixel scales (see :func:`bin_extents`).
    min_valid : float, default 0.5
        As for :func:`bin_spatial`.
    match_pixel_scale : bool, default True
        As for :func:`bin_spatial`.

    Returns
    -------
    xarray.Dataset
        ``radiance`` and ``error`` with a leading ``level`` dim (one chunk) and coords
        ``level`` (the sizes), ``level_size_y`` and ``level_size_x`` (the extents in pixels).

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> rad = xr.DataArray(np.ones((6, 4, 5), dtype="float32"), dims=("y", "x", "wavelength"),
    ...                    attrs={"CDELT1": 1.0, "CDELT2": 1.0, "units": "W m-2 sr-1 nm-1"})
    >>> levels = bin_levels(rad.chunk(), xr.full_like(rad, 0.3).chunk(), sizes=[1, 3])
    >>> dict(levels.radiance.sizes)
    {'level': 2, 'y': 6, 'x': 4, 'wavelength': 5}
    """
    sizes = [int(s) for s in sizes]
    if not sizes or any(b <= a for a, b in zip(sizes, sizes[1:], strict=False)):
        raise ValueError(f"bin_levels: sizes must be strictly increasing, got {sizes}")
    if error is None:
        raise ValueError("bin_levels: error is required (use saffron_xr.spice_error)")
    levels = []
    extents = []
    for s in sizes:
        ext = bin_extents(radiance, s, match_pixel_scale=match_pixel_scale, odd=True)
        extents.append(ext)
        levels.append(bin_spatial(radiance, error, ext, min_valid=min_valid))
    stacked = xr.concat(levels, dim="level", combine_attrs="drop_conflicts")
    stacked = stacked.assign_coords(
        level=("level", np.asarray(sizes), {"long_name": "binning box extent along y"}),
        level_size_y=("level", np.asarray([e.get("y", 1) for e in extents])),
        level_size_x=("level", np.asarray([e.get("x", 1) for e in extents])),
    )
    for name in ("radiance", "error"):
        attrs = {k: v for k, v in stacked[name].attrs.items() if not k.startswith("bin_size")}
        attrs["bin_method"] = "convolve"
        stacked[name].attrs = attrs
    for name in ("radiance", "error"):  # one chunk along level; coords stay as they are
        if stacked[name].chunks is not None:
            stacked[name] = stacked[name].chunk(level=-1)
    dims = ("level", *radiance.dims)
    return stacked.transpose(*dims)
