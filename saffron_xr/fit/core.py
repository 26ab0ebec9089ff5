"""fit_lines(): the one place that calls ``xr.apply_ufunc`` for fitting; model_spectrum().

The numba kernels (``_kernels.py``) are imported on first use, inside the functions that
run on the data, so importing the package does not import numba.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from .._units import is_angstrom
from ._results import PACKED_DIM, add_levels, add_quality, unpack
from .model import PARAM_KINDS, LineModel
from .profiles import gaussian

__all__ = ["fit_lines", "model_spectrum"]

#: Input attributes copied to the result (provenance), when present.

_PARAM_DIM = "_param"
_THRESHOLD_KINDS = PARAM_KINDS


def fit_lines(
    data: xr.DataArray,
    model: LineModel,
    *,
    error: xr.DataArray | None = None,
    dim: str = "wavelength",
    max_iter: int = 100,
    ftol: float = 1e-5,
    xtol: float = 3e-3,
    min_valid: int | None = None,
    scale_errors: bool | None = None,
    rescale_initial: bool = True,
    level_dim: str = "level",
    thresholds: dict | None = None,
    noise: xr.Dataset | None = None,
    moments: bool = True,
    detection_threshold: float = 3.0,
    covariance: bool = False,
) -> xr.Dataset:
    """Fit Gaussian lines on a polynomial background to every spectrum of a DataArray.

    Lazy: builds one ``xr.apply_ufunc(..., dask="parallelized")`` over a numba
    Levenberg-Marquardt gufunc; nothing is computed until the result is. With numpy input
    the fit runs at once, in the calling thread. Results do not depend on the chunking.

    Parameters
    ----------
    data : xarray.DataArray
        Spectra, with dimension `dim` and a 1-D coordinate on it in Angstrom (a ``units``
        attribute other than Angstrom raises). Any other dims are fitted pixel by pixel.
        If dask-backed with several chunks along `dim` (or `level_dim` in adaptive mode),
        it is rechunked to one chunk along them.
    model : LineModel
        Lines, background, bounds and ties. DataArray initial values must have dims among
        the data's non-wavelength dims.
    error : xarray.DataArray, optional
        1-sigma uncertainty of each sample, broadcastable against `data` (missing
        dimensions, even `dim` or `level_dim`, are broadcast). Samples with a
        NaN, infinite, zero or negative error are skipped like NaN data. Without it every
        sample has unit weight and the errors are scaled by the reduced chi2.
    dim : str, default "wavelength"
        The spectral dimension.
    max_iter : int, default 100
        Levenberg-Marquardt iteration limit per pixel (status ``MAX_ITER`` when reached).
    ftol : float, default 1e-5
        Convergence when a step lowers chi2 by less than ``ftol`` times the reduced chi2.
    xtol : float, default 3e-3
        ...or when every free parameter moves by less than ``xtol`` times its 1-sigma
        (conditional) uncertainty.
    min_valid : int, optional
        Minimum number of valid samples to attempt a fit (status ``TOO_FEW_VALID`` below);
        default and minimum: number of free parameters + 1.
    scale_errors : bool, optional
        Multiply the covariance by the reduced chi2 (as ``curve_fit(absolute_sigma=False)``).
        Default: False when `error` is given (absolute errors), True otherwise.
    rescale_initial : bool, default True
        Before iterating, solve for each pixel's amplitudes and background coefficients by
        linear least squares at the initial centroids and widths (the model is linear in
        them), so one window-level guess works across a raster. Amplitudes that come out on
        their lower bound start one rough sigma above it.
    level_dim : str, default "level"
        Adaptive mode only: the dimension of stacked binning levels, least binned first.
    thresholds : dict, optional
        Adaptive mode: ``{"amplitude": r_a, "centroid": r_c, "width": r_w}``, maximum relative
        errors ``|err / value|`` (every line, kinds left out are not constrained). Each pixel
        is fitted at level 0, 1, ... and keeps the first level where every relative error
        meets its threshold. If none does, it keeps the level with the smallest
        ``max(relative error / threshold)`` among the converged fits, with status
        ``THRESHOLD_NOT_MET``; if no level converged, the last level and its status.
        Requires `level_dim` in ``data.dims``.
    noise : xarray.Dataset, optional
        A noise model with variables ``photon`` and ``floor`` (broadcastable against
        `data`, e.g. from ``saffron_xr.spice_noise_terms`` or
        ``saffron_xr.calibrate_noise_terms``), such that the variance of a sample of
        expected signal ``m`` is ``photon * max(m, 0) + floor``. With it, the weights come
        from the model, not from the noisy data (whose fluctuations bias a fit: samples that
        fluctuate low get too much weight; -9 % in radiance at peak S/N 5 on SPICE-like
        spectra, +0.3 % with model weights, ``tests/test_fit_honesty.py``): `error`
        selects the valid samples and weights the starting point (moments and linear
        solve); then the weights are taken from the starting model, the fit iterates, and
        it iterates once more with weights from the fitted model. Errors and chi2 refer to the final weights. The batch runner
        does this by default.
    moments : bool, default True
        With `rescale_initial`, start isolated lines of each pixel at the centroid and width
        given by the first and second moments of their excess over the rest of the model
        (when significant), before the linear solve: fewer iterations and fewer wrong
        minima on rasters whose lines move or broaden.
    detection_threshold : float, default 3.0
        A line is ``detected`` where its ``significance`` (see Returns) is at least this
        (in sigma). Measured on 4,000 SPICE-like noise-only spectra (one line free in
        centroid within +-0.4 Angstrom and in width): 0.7 % reach 3 sigma (0.1 % of them
        also not at a bound), 0.08 % reach 4 and none 5 (``tests/test_fit_honesty.py``).
    covariance : bool, default False
        Also return the full covariance matrix of the free parameters (``covariance``,
        dims ``param``, ``param2`` + pixel dims), e.g. for ratios of blended lines.

    Returns
    -------
    xarray.Dataset
        ``amplitude``, ``centroid``, ``width`` and their ``_err`` (dims ``line`` + the
        data's other dims); ``cov_amplitude_centroid``, ``cov_amplitude_width``,
        ``cov_centroid_width`` (same dims; zero for tied/fixed pairs with no free
        parameter); ``background`` and ``background_err`` (dims ``degree``, or
        ``segment, degree``, + pixel dims: coefficients of powers of
        ``wavelength - background_reference``); ``chi2`` (reduced), ``status``
        (`FitStatus` codes), ``n_iter``, ``n_valid``; per line ``significance`` (the line's
        amplitude over its error at fixed centroids and widths: the signed square root of
        the chi2 increase when the line is removed and the other amplitudes and background
        refit; 0 for a line whose amplitude went to 0), ``detected`` (significance >=
        `detection_threshold`) and ``at_bound`` (a free parameter of the line sits on a
        bound; the error of such a parameter is NaN, and the errors of the others are
        conditional on it). Centroid and width errors of a line whose amplitude is 0 are
        NaN; the other lines keep theirs. In adaptive mode ``level_index`` and ``level``;
        with `covariance`, ``covariance``. Coordinates ``line``, ``ion``, ``rest_wavelength``, ``degree``,
        ``background_reference`` (and ``segment``, ``segment_min``, ``segment_max``) plus
        the data's coordinates off `dim`. Attributes: the model as JSON (``line_model``),
        the options (``fit_options``), ``saffron_xr_version`` and the input's provenance
        keywords (``SPIOBSID``, ``RASTERNO``, ``STUDY``, ``DATE-OBS``, ``filename``,
        ``EXTNAME``, ``DETECTOR``).

    Raises
    ------
    TypeError
        If `data` is not a DataArray or `model` not a LineModel.
    ValueError
        Missing dimension or coordinate, wavelength not in Angstrom, an initial value not
        set, bad thresholds, or `min_valid` below the number of free parameters + 1.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> wl = np.linspace(769.0, 771.0, 40)
    >>> spec = 2.0 * np.exp(-0.5 * ((wl - 770.1) / 0.12) ** 2) + 0.1
    >>> da = xr.DataArray(np.tile(spec, (3, 1)), dims=("y", "wavelength"),
    ...                   coords={"wavelength": wl}, attrs={"units": "W m-2 sr-1 nm-1"})
    >>> m = LineModel()
    >>> m.add_line("ne_8 770.42", amplitude=1.0, centroid=770.0, width=0.1)
    >>> ds = fit_lines(da, m, error=xr.full_like(da, 0.01))
    >>> ds.centroid.dims
    ('line', 'y')
    >>> float(ds.centroid[0, 0].round(6))
    770.1
    """
    if not isinstance(data, xr.DataArray):
        raise TypeError(f"fit_lines: data must be an xarray.DataArray, got {type(data).__name__}")
    if not isinstance(model, LineModel):
        raise TypeError(f"fit_lines: model must be a LineModel, got {type(model).__name__}")
    adaptive = thresholds is not None
    core = [level_dim, dim] if adaptive else [dim]
    for d in core:
        if d not in data.dims:
            raise ValueError(f"fit_lines: data has no dimension {d!r} (dims: {data.dims})")
    wave = _wavelength(data, dim)
    compiled = model.compile(wave)
    options, thr = _options(
        compiled,
        error=error,
        dim=dim,
        max_iter=max_iter,
        ftol=ftol,
        xtol=xtol,
        min_valid=min_valid,
        scale_errors=scale_errors,
        rescale_initial=rescale_initial,
        noise=noise,
        moments=moments,
        detection_threshold=detection_threshold,
        covariance=covariance,
        level_dim=level_dim,
        thresholds=thresholds,
    )

    from . import _kernels

    spec = _kernels.pack_spec(
        compiled,
        max_iter=options["max_iter"],
        ftol=options["ftol"],
        xtol=options["xtol"],
        min_valid=options["min_valid"],
        scale_errors=options["scale_errors"],
        rescale_initial=options["rescale_initial"],
        moments=options["moments"],
        reweight=noise is not None,
        full_cov=options["covariance"],
        detection=options["detection_threshold"],
        thresholds=thr,
    )
    layout = _kernels.packed_layout(
        compiled.n_lines,
        compiled.n_full,
        compiled.n_free,
        full_cov=options["covariance"],
        adaptive=adaptive,
    )
    loop_dims = [d for d in data.dims if d not in core]
    inputs, core_dims = _inputs(data, error, noise, wave, compiled, model, core, loop_dims)
    packed = xr.apply_ufunc(
        _fit_block,
        *inputs,
        kwargs={"spec": spec, "size": layout["size"], "adaptive": adaptive},
        input_core_dims=core_dims,
        output_core_dims=[[PACKED_DIM]],
        dask="parallelized",
        output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {PACKED_DIM: layout["size"]}},
        join="exact",
        keep_attrs=False,
    )
    # keep_attrs=False also drops the attrs of the pixel coordinates (units, the spatial
    # WCS of hpln/hplt): put the input's coordinates back
    packed = packed.assign_coords(
        {k: v for k, v in data.coords.items() if k in packed.coords and k not in packed.indexes}
    )
    ds = unpack(packed, layout, compiled, model, data, loop_dims, options)
    ds = add_quality(ds, packed, layout, compiled, loop_dims, options["detection_threshold"])
    if adaptive:
        ds = add_levels(ds, packed, layout, data, level_dim)
    return ds


def _options(compiled, *, error, dim, max_iter, ftol, xtol, min_valid, scale_errors,
             rescale_initial, noise, moments, detection_threshold, covariance, level_dim,
             thresholds) -> tuple[dict, tuple]:  # fmt: skip
    """The checked fit options with their defaults (the ``fit_options`` attribute), and the
    adaptive thresholds ``(amplitude, centroid, width)`` (inf: not constrained)."""
    n_free = compiled.n_free
    if min_valid is None:
        min_valid = n_free + 1
    elif int(min_valid) < n_free + 1:
        raise ValueError(
            f"fit_lines: min_valid={min_valid} is below the number of free parameters + 1 "
            f"({n_free + 1})"
        )
    if max_iter < 0 or not (ftol >= 0 and xtol >= 0):
        raise ValueError("fit_lines: max_iter, ftol and xtol must be >= 0")
    if scale_errors is None:
        scale_errors = error is None
    adaptive = thresholds is not None
    thr = _thresholds(thresholds) if adaptive else (math.inf,) * 3
    if not (detection_threshold >= 0):
        raise ValueError(
            f"fit_lines: detection_threshold must be >= 0 (sigma), got {detection_threshold}"
        )
    options = {
        "dim": dim,
        "max_iter": int(max_iter),
        "ftol": float(ftol),
        "xtol": float(xtol),
        "min_valid": int(min_valid),
        "scale_errors": bool(scale_errors),
        "rescale_initial": bool(rescale_initial),
        "error_given": error is not None,
        "noise_weights": "model" if noise is not None else "error",
        "moments": bool(moments),
        "detection_threshold": float(detection_threshold),
        "covariance": bool(covariance),
    }
    if adaptive:
        options["level_dim"] = level_dim
        options["thresholds"] = {
            k: None if math.isinf(v) else v for k, v in zip(_THRESHOLD_KINDS, thr, strict=True)
        }
    return options, thr


def _inputs(data, error, noise, wave, compiled, model, core, loop_dims) -> tuple[list, list]:
    """The arrays given to the gufunc and their core dims: data, error, wavelength,
    initial parameters and (with a noise model) its two terms; one chunk along `core`."""
    values = data if data.dtype in (np.float32, np.float64) else data.astype(np.float64)
    if error is None:
        err = xr.DataArray(np.ones([data.sizes[d] for d in core], values.dtype), dims=core)
    else:
        if not isinstance(error, xr.DataArray):
            raise TypeError("fit_lines: error must be an xarray.DataArray (1-sigma) or None")
        err = error.astype(values.dtype) if error.dtype != values.dtype else error
        missing = {d: data.sizes[d] for d in core if d not in error.dims}
        if missing:  # e.g. one error for every binning level: broadcast (a view)
            err = err.expand_dims(missing)
    p0 = _initial(compiled, model, loop_dims)
    values = _one_chunk(values, core)
    err = _one_chunk(err, core)
    dim = core[-1]
    inputs = [values, err, xr.DataArray(wave, dims=[dim]), p0]
    core_dims = [core, core, [dim], [_PARAM_DIM]]
    if noise is not None:  # without a noise model the kernel gets NaN terms (see _fit_block)
        for term in _noise_inputs(noise, data, core):
            inputs.append(_one_chunk(term, core))
            core_dims.append(core)
    return inputs, core_dims


def _fit_block(y, err, wave, p0, photon=None, floor=None, *, spec, size, adaptive):
    """Run the gufunc on one block (numpy in, numpy out); runs on the dask workers.

    Without noise terms the kernel gets NaN ones (one row, broadcast), which it ignores.
    """
    from . import _kernels

    y = np.asarray(y)
    if y.dtype not in (np.float32, np.float64):
        y = y.astype(np.float64)
    factory = _kernels.adaptive_gufunc if adaptive else _kernels.fit_gufunc
    gufunc = factory(y.dtype.name)
    err = np.asarray(err, dtype=y.dtype)
    wave = np.ascontiguousarray(wave, dtype=np.float64)
    if photon is None:
        photon = floor = np.full(y.shape[-2:] if adaptive else y.shape[-1:], np.nan)
    photon = np.asarray(photon, dtype=np.float64)
    floor = np.asarray(floor, dtype=np.float64)
    p0 = np.asarray(p0, dtype=np.float64)
    template = np.empty(size)
    # NaN samples are missing data by design: comparisons on them raise the CPU's
    # "invalid" flag, which numpy would report as a RuntimeWarning after the loop.
    with np.errstate(invalid="ignore", divide="ignore", over="ignore", under="ignore"):
        return gufunc(y, err, wave, photon, floor, p0, spec, template)


def _noise_inputs(noise, data, core):
    """The photon and floor noise terms as float64 DataArrays with every core dim."""
    if not isinstance(noise, xr.Dataset) or not {"photon", "floor"} <= set(noise.data_vars):
        raise TypeError(
            "fit_lines: noise must be an xarray.Dataset with variables 'photon' and 'floor' "
            "(sigma**2 = photon * max(model, 0) + floor), e.g. from spice_noise_terms"
        )
    out = []
    for name in ("photon", "floor"):
        term = noise[name].astype(np.float64)
        extra = [d for d in term.dims if d not in data.dims]
        if extra:
            raise ValueError(
                f"fit_lines: noise[{name!r}] has dims {term.dims}; {extra} are not dims of "
                f"the data {data.dims}"
            )
        missing = {d: data.sizes[d] for d in core if d not in term.dims}
        if missing:
            term = term.expand_dims(missing)
        out.append(term.drop_vars([c for c in term.coords if c not in term.dims]))
    return out[0], out[1]


def _wavelength(data, dim) -> np.ndarray:
    if dim not in data.coords:
        raise ValueError(f"fit_lines: data has no {dim!r} coordinate (Angstrom) to fit against")
    coord = data.coords[dim]
    if coord.dims != (dim,):
        raise ValueError(f"fit_lines: the {dim!r} coordinate must be 1-D along {dim!r}")
    units = str(coord.attrs.get("units", "Angstrom")).strip()
    if not is_angstrom(units):
        raise ValueError(
            f"fit_lines: the {dim!r} coordinate is in {units!r}; convert it to Angstrom "
            "(the fitter's unit for centroids and widths)"
        )
    return np.asarray(coord.values, dtype=np.float64)


def _thresholds(thresholds) -> tuple:
    if not isinstance(thresholds, dict) or not thresholds:
        raise ValueError(
            "fit_lines: thresholds must be a non-empty dict like "
            "{'amplitude': 0.1, 'centroid': 1e-4, 'width': 0.1}"
        )
    unknown = set(thresholds) - set(_THRESHOLD_KINDS)
    if unknown:
        raise ValueError(
            f"fit_lines: unknown threshold kind(s) {sorted(unknown)}; use {_THRESHOLD_KINDS}"
        )
    out = []
    for kind in _THRESHOLD_KINDS:
        v = thresholds.get(kind)
        v = math.inf if v is None else float(v)
        if not v > 0:
            raise ValueError(f"fit_lines: threshold for {kind} must be > 0, got {v}")
        out.append(v)
    return tuple(out)


def _one_chunk(arr, dims):
    """Rechunk a dask-backed DataArray to a single chunk along `dims` (explicitly)."""
    if arr.chunks is None:
        return arr
    sizes = dict(zip(arr.dims, arr.chunks, strict=True))
    multi = {d: -1 for d in dims if d in sizes and len(sizes[d]) > 1}
    return arr.chunk(multi) if multi else arr


def _initial(compiled, model, loop_dims) -> xr.DataArray:
    """Initial full parameters, dims (..., _param): scalars, or broadcast DataArrays."""
    missing = [n for n, v in zip(compiled.full_names, compiled.initial, strict=True) if v is None]
    if missing:
        raise ValueError(
            f"fit_lines: initial value(s) not set for {missing} (per-pixel initial values are "
            "not stored in JSON); call model.set_initial(line, param, value)"
        )
    if all(np.ndim(v) == 0 and not hasattr(v, "dims") for v in compiled.initial):
        return xr.DataArray(np.array(compiled.initial, dtype=np.float64), dims=[_PARAM_DIM])
    pieces = []
    for name, v in zip(compiled.full_names, compiled.initial, strict=True):
        if hasattr(v, "dims"):
            extra = [d for d in v.dims if d not in loop_dims]
            if extra:
                raise ValueError(
                    f"fit_lines: the initial value of {name} has dims {v.dims}; only the "
                    f"data's pixel dims {tuple(loop_dims)} are allowed"
                )
            pieces.append(v.astype(np.float64))
        else:
            pieces.append(xr.DataArray(float(v)))
    pieces = xr.broadcast(*pieces)
    return xr.concat(pieces, dim=_PARAM_DIM, coords="minimal", compat="override").transpose(
        ..., _PARAM_DIM
    )


def model_spectrum(
    params: xr.Dataset, wavelength: xr.DataArray | np.ndarray, *, dim: str = "wavelength"
) -> xr.DataArray:
    """The fitted model, lines plus background, evaluated on a wavelength grid.

    As lazy as `params` (dask-backed results give a dask-backed cube; nothing is computed
    here). Pixels whose fit failed are NaN; so are wavelengths outside every background
    segment of a segmented model. Residuals are ``data - model_spectrum(params,
    data.wavelength)``.

    Parameters
    ----------
    params : xarray.Dataset
        Output of `fit_lines` (needs ``amplitude``, ``centroid``, ``width``,
        ``background`` and the ``background_reference`` coordinate).
    wavelength : xarray.DataArray or array-like
        Wavelengths in Angstrom (1-D).
    dim : str, default "wavelength"
        Name of the wavelength dimension of the result (when `wavelength` is not a
        DataArray).

    Returns
    -------
    xarray.DataArray
        Dims: the pixel dims of `params`, then the wavelength dim; units of ``amplitude``.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> wl = np.linspace(769.0, 771.0, 40)
    >>> spec = 2.0 * np.exp(-0.5 * ((wl - 770.1) / 0.12) ** 2) + 0.1
    >>> da = xr.DataArray(spec[None], dims=("y", "wavelength"), coords={"wavelength": wl})
    >>> m = LineModel()
    >>> m.add_line("ne_8 770.42", amplitude=1.0, centroid=770.0, width=0.1)
    >>> fit = fit_lines(da, m)
    >>> bool(np.allclose(model_spectrum(fit, da.wavelength), da, atol=1e-6))
    True
    """
    if isinstance(wavelength, xr.DataArray):
        if wavelength.ndim != 1:
            raise ValueError("model_spectrum: wavelength must be 1-D")
        lam = wavelength.astype(np.float64)
        dim = lam.dims[0]
    else:
        values = np.asarray(wavelength, dtype=np.float64)
        if values.ndim != 1:
            raise ValueError("model_spectrum: wavelength must be 1-D")
        lam = xr.DataArray(values, dims=[dim], coords={dim: values}, attrs={"units": "Angstrom"})
    for name in ("amplitude", "centroid", "width", "background"):
        if name not in params:
            raise ValueError(f"model_spectrum: params has no {name!r} variable")
    if "background_reference" not in params.coords and "background_reference" not in params:
        raise ValueError("model_spectrum: params has no 'background_reference' coordinate")
    lines = gaussian(lam, params["amplitude"], params["centroid"], params["width"])
    lines = lines.sum("line", skipna=False)
    bg = params["background"]
    ref = params["background_reference"]
    degree = (
        bg["degree"]
        if "degree" in bg.coords
        else xr.DataArray(np.arange(bg.sizes["degree"]), dims="degree")
    )
    powers = (lam - ref) ** degree
    poly = (bg * powers).sum("degree", skipna=False)
    if "segment" in poly.dims:
        lo = np.asarray(params["segment_min"].values, dtype=float)
        hi = np.asarray(params["segment_max"].values, dtype=float)
        lv = np.asarray(lam.values)
        inside = (lv[:, None] >= lo[None, :]) & (lv[:, None] <= hi[None, :])
        seg = np.where(inside.any(axis=1), inside.argmax(axis=1), -1)
        picker = xr.DataArray(np.maximum(seg, 0), dims=[dim])
        poly = poly.isel(segment=picker).where(xr.DataArray(seg >= 0, dims=[dim]))
        poly = poly.drop_vars(
            [
                c
                for c in ("segment", "segment_min", "segment_max", "background_reference")
                if c in poly.coords
            ]
        )
    out = lines + poly
    drop = [c for c in ("degree", "background_reference") if c in out.coords]
    out = out.drop_vars(drop)
    pixel_dims = [d for d in params["amplitude"].dims if d != "line"]
    out = out.transpose(*pixel_dims, dim)
    out.attrs = {
        "units": params["amplitude"].attrs.get("units", "unknown"),
        "long_name": "fitted model",
    }
    out.name = "model"
    return out
