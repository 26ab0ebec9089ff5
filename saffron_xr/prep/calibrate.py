"""Calibrate the noise model on the data itself.

The SPICE noise model (:func:`saffron_xr.spice_error`) is implemented faithfully, but it does
not describe every Level-2 product: the measured noise floor of the 2022 Ne VIII window is
about 0.7x the model's, some 2024 long-wavelength windows are about 2x above it (issue 12).
This module measures, from the radiances alone, by how much each of the two terms of the
model

    sigma**2 = photon * max(I, 0) + floor

must be scaled, and returns the rescaled terms (:func:`calibrate_noise_terms`) or the rescaled
error (:func:`calibrate_error`).

Method (the small "statistics pass", the only computation done eagerly):

1. A subsample of the cube is read: every sample along the slit (``y``) and along
   ``wavelength``, and a regular stride over the other dims (raster steps, times), at most
   ``max_samples`` samples.
2. Along ``y`` and along ``wavelength`` separately, for each lag ``L`` in ``lags`` (>= 2:
   neighbours at lag 1 are correlated by the L2 resampling and the on-board compression, so
   their differences understate the noise), the second difference
   ``d = I[i] - (I[i-L] + I[i+L]) / 2`` (a linear trend of the signal cancels) is divided by
   its model standard deviation, computed from the local signal ``s`` (mean of the three
   samples). For Gaussian noise of equal variance ``d`` and ``s`` are independent, so
   selecting samples by ``s`` does not bias the spread of ``d``.
3. The standardised differences ``z`` are grouped in bins of the model's photon fraction
   ``phi = photon-term / total variance`` (0: line-free, floor-dominated samples; near 1:
   bright, photon-dominated samples). In each bin the variance of ``z`` is measured
   robustly, ``(1.4826 MAD)**2``, which ignores the few large differences that solar
   structure and residual spikes produce. Its expectation is ``b (1 - phi) + a phi`` with
   ``b`` and ``a`` the variance ratios (measured / model) of the floor and the photon term.
4. The floor ratio ``b`` comes from the floor-dominated bins (``phi < 0.1``; the small
   photon part there is taken at the model's), averaged over the two directions. The signal
   ratio ``a`` comes from the bins where the photon term is at least 30% of the variance
   (``phi >= 0.3``): ``a_k = (v_k - b (1 - phi_k)) / phi_k`` per bin; structure of the Sun
   (along the slit) and of the line profile (along wavelength) can only *add* variance, so
   per bin the smaller of the two directions is kept, and ``a`` is the count-weighted median
   over the bins. It is measured only when at least 2000 differences are in those bins;
   otherwise the model's photon term is kept (ratio 1) and the attributes say so. On bright,
   structured data the structure that survives the second difference in both directions
   makes ``a`` an upper bound.

The ratios are reported as ratios of *standard deviations*: ``noise_floor_ratio = sqrt(b)``
and ``noise_signal_ratio = sqrt(a)``; the calibrated terms are ``a * photon`` and
``b * floor``.

The calibrated error is ``sqrt(photon' max(I, 0) + floor')``: the ``|I|`` rule that
:func:`saffron_xr.spice_error` applies to negative samples is *not* used. That rule makes
negative samples look noisier than they are, which pulls chi2 down (0.59 instead of 1 in a
Monte Carlo with an exact noise model) and biases fitted backgrounds up; the signal
``max(I, 0)`` is the honest choice, and it is the form a fit weighted by its model uses
(``fit_lines(noise=...)`` with the terms of :func:`calibrate_noise_terms`).
"""

from __future__ import annotations

import json
import logging
import math

import dask
import numpy as np
import xarray as xr

from .noise import DEFAULT_DARK_FACTOR, radiance_units, spice_noise_terms, terms_units

__all__ = ["calibrate_error", "calibrate_noise_terms", "error_from_terms"]

_log = logging.getLogger(__name__)

#: 1 / Phi^-1(3/4): the MAD of a Gaussian times this is its standard deviation.
_MAD_TO_SIGMA = 1.482602218505602
_DEFAULT_LAGS = (2, 3, 4)
_DEFAULT_MAX_SAMPLES = 500_000
_N_BINS = 16
_MIN_BIN_COUNT = 200
#: photon fraction below which a sample measures the floor (photon term corrected at the model)
_FLOOR_DOMINATED = 0.1
#: photon fraction above which a sample measures the signal-dependent term
_PHOTON_DOMINATED = 0.3
_MIN_PHOTON_SAMPLES = 2000
_DIMS = ("y", "wavelength")
_SIGNAL_HALF_WIDTH = 7


# ----------------------------------------------------------------------------- public


def error_from_terms(radiance: xr.DataArray, terms: xr.Dataset) -> xr.DataArray:
    """1-sigma error ``sqrt(photon * max(I, 0) + floor)`` from a noise-terms Dataset.

    No ``|I|`` rule for negative samples (see the module documentation). Lazy.

    Parameters
    ----------
    radiance : xarray.DataArray
        Spectral radiance.
    terms : xarray.Dataset
        ``photon`` and ``floor`` broadcastable against ``radiance`` (e.g. from
        :func:`saffron_xr.spice_noise_terms` or :func:`calibrate_noise_terms`).

    Returns
    -------
    xarray.DataArray
        ``error`` with the dims, chunks and (floating) dtype of ``radiance``; NaN where the
        radiance is NaN; the attrs of ``terms`` plus ``units`` and ``long_name``.

    Examples
    --------
    >>> import xarray as xr
    >>> rad = xr.DataArray([-1.0, 0.0, 3.0], dims="wavelength")
    >>> terms = xr.Dataset({"photon": 0.5, "floor": 0.25})
    >>> error_from_terms(rad, terms).values.tolist()
    [0.5, 0.5, 1.3228756555322954]
    """
    _check_terms(terms)
    dtype = radiance.dtype if np.issubdtype(radiance.dtype, np.floating) else np.float64
    sigma = np.sqrt(terms["photon"] * radiance.clip(min=0) + terms["floor"])
    sigma = sigma.astype(dtype).transpose(*radiance.dims)
    sigma = sigma.reset_coords(drop=True).assign_coords(radiance.coords)
    attrs = {
        k: v
        for k, v in radiance.attrs.items()
        if k not in ("long_name", "standard_name", "BTYPE", "units")
    }
    attrs.update(terms.attrs)
    attrs["units"] = radiance_units(radiance)
    attrs["long_name"] = "1-sigma radiance uncertainty, sqrt(photon max(I,0) + floor)"
    return sigma.rename("error").assign_attrs(attrs)


def calibrate_noise_terms(
    radiance: xr.DataArray,
    terms: xr.Dataset | None = None,
    *,
    error: xr.DataArray | None = None,
    lags=_DEFAULT_LAGS,
    max_samples: int = _DEFAULT_MAX_SAMPLES,
    radcal=None,
    xposure: float | None = None,
    nbin2: int | None = None,
    nbin3: int | None = None,
    detector: str | None = None,
    dark_factor: int = DEFAULT_DARK_FACTOR,
) -> xr.Dataset:
    """The noise terms ``photon`` and ``floor`` rescaled to the noise measured in the data.

    See the module documentation for the method. Computes one small statistics pass on a
    subsample of ``radiance`` (at most ``max_samples`` samples, plus the same samples of
    ``error`` when given); the returned terms are small (0-d or along ``wavelength``).

    Parameters
    ----------
    radiance : xarray.DataArray
        Spectral radiance with dims ``y`` and ``wavelength`` (others, e.g. ``x``, are
        subsampled with a regular stride).
    terms : xarray.Dataset, optional
        The model to calibrate (``photon``, ``floor``). Default: from ``error`` when given,
        else :func:`saffron_xr.spice_noise_terms` from the header keywords.
    error : xarray.DataArray, optional
        A per-sample model error to calibrate instead (e.g. an ``uncertainty`` array that
        came with the data): its terms are fitted as ``error**2 = photon * I + floor`` over
        the samples with ``I >= 0`` of the subsample, per wavelength. Not with ``terms``.
    lags : sequence of int, default (2, 3, 4)
        Lags (samples) of the second differences; each must be >= 2.
    max_samples : int, default 500_000
        Size of the subsample read for the statistics. On the nine windows of a synthetic
        composition raster (832 x 192, noise drawn from the model, so both true ratios are
        1) the spread over windows is set by the windows' structure, not by the sample
        size: floor 1.006-1.027 and signal 0.966-1.003 with 500 k samples, 1.005-1.024 and
        0.954-0.997 with 1 M, 1.006-1.024 and 0.972-0.997 with 2 M, for 0.15, 0.27 and
        0.56 CPU-s per window, most of it in compiled code that releases the GIL (AMD EPYC;
        ``benchmarks/bench_noise_calibration.py --sizes``). On the real Ly-gamma/C III
        raster (with its own uncertainty) 500 k vs 1 M samples move the floor ratio from
        0.332 to 0.329 and the
        signal ratio from 1.331 to 1.351.
    radcal, xposure, nbin2, nbin3, detector, dark_factor
        Header overrides for :func:`saffron_xr.spice_noise_terms` (default model only).

    Returns
    -------
    xarray.Dataset
        ``photon`` and ``floor`` (calibrated), with attrs ``noise_floor_ratio`` and
        ``noise_signal_ratio`` (measured / model, ratios of standard deviations),
        ``noise_signal_measured`` (1 if the signal term was measurable, else 0 and the ratio
        is 1), ``noise_calibration_method`` (text) and ``noise_calibration`` (JSON: per
        direction ratios, bins, sample counts, the model terms), plus the model's attrs.

    Raises
    ------
    ValueError
        Missing dims, a lag below 2, ``terms`` and ``error`` both given, too few valid
        samples, or an ``error`` that is not of the model's form.
    """
    lags = _check_lags(lags)
    for dim in _DIMS:
        if dim not in radiance.dims:
            raise ValueError(
                f"calibrate_noise_terms needs the dims {_DIMS} (differences along the slit "
                f"and along wavelength); the radiance has dims {radiance.dims}"
            )
    empty = [dim for dim in radiance.dims if radiance.sizes[dim] == 0]
    if empty:
        raise ValueError(
            f"calibrate_noise_terms: the radiance has no samples along {empty} "
            f"(sizes {dict(radiance.sizes)}); nothing to measure the noise from"
        )
    if terms is not None and error is not None:
        raise ValueError("calibrate_noise_terms: give terms= or error=, not both")
    if terms is None and error is None:
        header = dict(radcal=radcal, xposure=xposure, nbin2=nbin2, nbin3=nbin3, detector=detector)
        terms = spice_noise_terms(radiance, **header, dark_factor=dark_factor)
        source = "SPICE noise model (spice_noise_terms) from the header keywords"
    elif terms is not None:
        _check_terms(terms)
        source = "terms given"
    else:
        source = "fitted to the given error: error**2 = photon I + floor (I >= 0), per wavelength"
    values, photon_v, floor_v, model_terms, fit_residual, description = _statistics_pass(
        radiance, terms, error, max_samples
    )
    result = _measure(values, photon_v, floor_v, lags)
    out = _calibrated_terms(model_terms, result, lags, description, source, fit_residual)
    floor_ratio = out.attrs["noise_floor_ratio"]
    signal_ratio = out.attrs["noise_signal_ratio"]
    _log.info(
        "noise calibration: floor x%.3f, signal term x%.3f (%s)",
        floor_ratio,
        signal_ratio,
        "measured" if result["signal_measured"] else "model kept",
    )
    return out


def _statistics_pass(radiance, terms, error, max_samples: int):
    """The one compute of the calibration: a subsample of the radiance and its model terms.

    Returns ``(values, photon, floor, model_terms, fit_residual, description)``: the
    subsample (float64, dims ``(y, wavelength, ...)``), the model terms broadcast onto it,
    the terms as a Dataset (fitted to ``error`` when ``terms`` is None), the relative rms of
    that fit (None otherwise) and a description of the subsample.
    """
    sub, sel, description = _subsample(radiance, max_samples)
    sub = sub.transpose(*_DIMS, ...)
    lazy = [sub]
    if terms is not None:
        photon_b, floor_b = (
            xr.broadcast(terms[name].reset_coords(drop=True), sub)[0].transpose(*sub.dims)
            for name in ("photon", "floor")
        )
        lazy += [photon_b, floor_b]
    else:
        if set(error.dims) != set(radiance.dims):
            raise ValueError(
                f"calibrate_noise_terms: error has dims {error.dims}, the radiance "
                f"{radiance.dims}; they must be the same"
            )
        err_sub = error.reset_coords(drop=True).isel(sel)
        lazy.append(err_sub.transpose(*sub.dims))
    # the statistics pass: one compute of the subsample (and of the matching error/terms)
    computed = dask.compute(*[da.variable for da in lazy])
    values = np.asarray(computed[0], dtype=np.float64)
    if terms is not None:
        photon_v = np.broadcast_to(np.asarray(computed[1], dtype=np.float64), values.shape)
        floor_v = np.broadcast_to(np.asarray(computed[2], dtype=np.float64), values.shape)
        model_terms = terms
        fit_residual = None
    else:
        photon_w, floor_w, fit_residual = _terms_from_error(values, np.asarray(computed[1]))
        photon_v = np.broadcast_to(photon_w[None, :, None], values.shape)
        floor_v = np.broadcast_to(floor_w[None, :, None], values.shape)
        model_terms = _terms_dataset(radiance, photon_w, floor_w, error)

    return values, photon_v, floor_v, model_terms, fit_residual, description


def _calibrated_terms(model_terms, result, lags, description, source, fit_residual):
    """The model terms scaled by the measured variance ratios, with the calibration record."""
    a = result["signal_variance_ratio"]
    b = result["floor_variance_ratio"]
    floor_ratio = math.sqrt(b)
    signal_ratio = math.sqrt(a)
    method = (
        f"robust (1.4826 MAD) variance of second differences at lags {list(lags)} along y "
        f"and wavelength, standardised by the model and binned by its photon fraction phi; "
        f"floor ratio: bins with phi < {_FLOOR_DOMINATED}, mean of the two directions; "
        f"signal ratio: "
        + (
            f"bins with phi >= {_PHOTON_DOMINATED}, smaller of the two directions per bin "
            "(structure only adds variance), weighted median over bins"
            if result["signal_measured"]
            else "not measurable (too few photon-dominated samples), model kept"
        )
        + f"; subsample: {description}; model: {source}"
    )
    record = {
        "noise_floor_ratio": floor_ratio,
        "noise_signal_ratio": signal_ratio,
        "signal_measured": bool(result["signal_measured"]),
        "lags": list(lags),
        "subsample": description,
        "model": source,
        "directions": result["directions"],
        "model_photon": _summary(model_terms["photon"]),
        "model_floor": _summary(model_terms["floor"]),
    }
    if fit_residual is not None:
        record["error_fit_relative_rms"] = fit_residual
    attrs = dict(model_terms.attrs)
    attrs.update(
        noise_floor_ratio=floor_ratio,
        noise_signal_ratio=signal_ratio,
        noise_signal_measured=int(result["signal_measured"]),
        noise_calibration_method=method,
        noise_calibration=json.dumps(record),
        noise_terms_formula="sigma^2 = photon * max(I, 0) + floor (calibrated)",
    )
    out = xr.Dataset(
        {
            "photon": (model_terms["photon"] * a).assign_attrs(model_terms["photon"].attrs),
            "floor": (model_terms["floor"] * b).assign_attrs(model_terms["floor"].attrs),
        },
        attrs=attrs,
    )
    return out


def calibrate_error(
    radiance: xr.DataArray,
    error: xr.DataArray | None = None,
    *,
    terms: xr.Dataset | None = None,
    lags=_DEFAULT_LAGS,
    max_samples: int = _DEFAULT_MAX_SAMPLES,
    radcal=None,
    xposure: float | None = None,
    nbin2: int | None = None,
    nbin3: int | None = None,
    detector: str | None = None,
    dark_factor: int = DEFAULT_DARK_FACTOR,
) -> xr.DataArray:
    """Per-sample 1-sigma errors with the noise model rescaled to the noise in the data.

    ``sigma = sqrt(a photon max(I, 0) + b floor)`` with ``a`` and ``b`` measured by
    :func:`calibrate_noise_terms` (see the module documentation for the method and why the
    ``|I|`` rule of :func:`saffron_xr.spice_error` is not used). Only the small statistics
    pass of :func:`calibrate_noise_terms` is computed; the returned error is lazy.

    Parameters
    ----------
    radiance : xarray.DataArray
        Spectral radiance with dims ``y`` and ``wavelength``.
    error : xarray.DataArray, optional
        The model error to rescale (its terms are fitted from it). Default: the SPICE noise
        model from the header keywords (:func:`saffron_xr.spice_noise_terms`).
    terms : xarray.Dataset, optional
        Model terms ``photon``, ``floor`` to rescale instead of ``error``.
    lags, max_samples, radcal, xposure, nbin2, nbin3, detector, dark_factor
        See :func:`calibrate_noise_terms`.

    Returns
    -------
    xarray.DataArray
        ``error``: dims, chunks and dtype of ``radiance``, lazy; attrs
        ``noise_floor_ratio``, ``noise_signal_ratio`` (floats), ``noise_signal_measured``,
        ``noise_calibration_method`` and ``noise_calibration`` (JSON), and the model's
        ``noise_*`` constants.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> rng = np.random.default_rng(0)
    >>> attrs = {"RADCAL": 38.15, "XPOSURE": 4.7, "NBIN2": 1, "NBIN3": 1, "DETECTOR": "SW",
    ...          "units": "W m-2 sr-1 nm-1"}
    >>> floor = spice_noise_terms(xr.DataArray(0.0, attrs=attrs)).floor.item()
    >>> noise = 0.7 * np.sqrt(floor) * rng.standard_normal((400, 4, 60))
    >>> rad = xr.DataArray(noise, dims=("y", "x", "wavelength"), attrs=attrs)
    >>> err = calibrate_error(rad)
    >>> round(err.attrs["noise_floor_ratio"], 1)
    0.7
    """
    cal = calibrate_noise_terms(
        radiance,
        terms,
        error=error,
        lags=lags,
        max_samples=max_samples,
        radcal=radcal,
        xposure=xposure,
        nbin2=nbin2,
        nbin3=nbin3,
        detector=detector,
        dark_factor=dark_factor,
    )
    out = error_from_terms(radiance, cal)
    out.attrs["long_name"] = "1-sigma radiance uncertainty (noise model calibrated on the data)"
    return out


# ----------------------------------------------------------------------------- helpers


def _check_terms(terms) -> None:
    if not isinstance(terms, xr.Dataset) or not {"photon", "floor"} <= set(terms.data_vars):
        raise ValueError(
            "noise terms must be an xarray.Dataset with variables 'photon' and 'floor' "
            "(sigma**2 = photon * max(I, 0) + floor)"
        )


def _check_lags(lags) -> tuple[int, ...]:
    lags = tuple(int(lag) for lag in np.atleast_1d(lags))
    if not lags or min(lags) < 2:
        raise ValueError(
            f"lags must be >= 2 (lag-1 neighbours are correlated by the L2 resampling and "
            f"compression), got {list(lags)}"
        )
    return lags


def _subsample(radiance: xr.DataArray, max_samples: int):
    """Every y and wavelength sample, a regular stride over the other dims (lazy)."""
    if int(max_samples) < 1:
        raise ValueError(f"max_samples must be positive, got {max_samples}")
    others = [d for d in radiance.dims if d not in _DIMS]
    n_slice = radiance.sizes["y"] * radiance.sizes["wavelength"]
    n_other = int(np.prod([radiance.sizes[d] for d in others])) if others else 1
    sel = {}
    keep = max(1, int(max_samples) // n_slice)
    remaining = n_other
    for dim in sorted(others, key=lambda d: -radiance.sizes[d]):
        if remaining <= keep:
            break
        step = math.ceil(remaining / keep)
        step = min(step, radiance.sizes[dim])
        sel[dim] = slice(None, None, step)
        remaining = remaining // radiance.sizes[dim] * len(range(0, radiance.sizes[dim], step))
    if n_slice > max_samples:  # a central slab along the slit
        ny = max(int(max_samples) // radiance.sizes["wavelength"], 1)
        start = (radiance.sizes["y"] - ny) // 2
        sel["y"] = slice(start, start + ny)
    sub = radiance.reset_coords(drop=True).isel(sel)
    parts = [
        f"{d}[{s.start or 0}:{s.stop if s.stop is not None else ''}:{s.step or 1}]"
        for d, s in sel.items()
    ]
    description = f"{sub.size} samples" + (f" ({', '.join(parts)})" if parts else " (all)")
    return sub, sel, description


def _local_signal(values: np.ndarray) -> np.ndarray:
    """Signal estimate per sample: NaN-aware running mean along ``y`` (axis 0), clipped at 0.

    The photon part of a difference's variance needs the *true* signal; the sample itself (or
    the mean of the three samples of the difference) is so noisy at low signal that, with the
    clip at zero, it misplaces faint samples. A mean over ``2 * _SIGNAL_HALF_WIDTH + 1``
    samples along the slit at the same wavelength divides that noise by ~4 while keeping the
    line profile intact.
    """
    finite = np.isfinite(values)
    filled = np.where(finite, values, 0.0)
    k = _SIGNAL_HALF_WIDTH
    pad = [(k, k)] + [(0, 0)] * (values.ndim - 1)
    csum = np.cumsum(np.pad(filled, pad), axis=0)
    ccnt = np.cumsum(np.pad(finite.astype(float), pad), axis=0)
    zero = np.zeros((1,) + values.shape[1:])
    csum = np.concatenate([zero, csum])
    ccnt = np.concatenate([zero, ccnt])
    window = 2 * k + 1
    total = csum[window:] - csum[:-window]
    count = ccnt[window:] - ccnt[:-window]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
    return np.clip(mean, 0.0, None)


def _binned(z, phi, edges):
    """Rows (bin index, mean phi, robust variance of z, count) of the populated bins
    (at least `_MIN_BIN_COUNT` values); the robust variance is ``(1.4826 MAD)**2``."""
    from ._calibrate_kernels import binned_robust_variance

    return binned_robust_variance(z, phi, edges, _MIN_BIN_COUNT, _MAD_TO_SIGMA)


def _floor_ratio(bins, a: float) -> float:
    """Floor variance ratio from the floor-dominated bins, given the signal ratio ``a``."""
    low = bins[bins[:, 1] < _FLOOR_DOMINATED]
    if low.size == 0:
        return np.nan
    _, ph, var, cnt = low.T
    return float(np.sum(cnt * (var - a * ph) / (1.0 - ph)) / np.sum(cnt))


def _weighted_median(values, weights) -> float:
    order = np.argsort(values)
    cum = np.cumsum(np.asarray(weights, dtype=float)[order])
    return float(np.asarray(values)[order][np.searchsorted(cum, 0.5 * cum[-1])])


def _measure(values, photon, floor, lags) -> dict:
    """Floor and signal variance ratios from the subsample (dims y, wavelength, ...)."""
    from ._calibrate_kernels import second_differences

    signal = _local_signal(values)
    # (y, wavelength, rest), float64, contiguous and writable (numba compiles read-only
    # arrays, e.g. terms broadcast onto the subsample, as another version of the kernel)
    rest = math.prod(values.shape[2:])
    arrays = [
        np.require(a, np.float64, ["C", "W"]).reshape(a.shape[0], a.shape[1], rest)
        for a in (values, signal, photon, floor)
    ]
    lag_array = np.asarray(lags, dtype=np.int64)
    per_dir = {dim: second_differences(*arrays, axis, lag_array) for axis, dim in enumerate(_DIMS)}
    all_phi = np.concatenate([p for _, p in per_dir.values()])
    if all_phi.size < 10 * _MIN_BIN_COUNT:
        raise ValueError(
            f"noise calibration: only {all_phi.size} valid second differences in the "
            f"subsample (need {10 * _MIN_BIN_COUNT}); the cube is too small or mostly NaN"
        )
    # equal-count bins, plus fixed edges separating the floor- and photon-dominated ranges
    # (from every k-th value, at most ~2**16 of them: the edges only need to split the
    # samples into roughly equal parts, and a quantile of millions costs a second)
    step = max(1, all_phi.size >> 16)
    edges = np.quantile(all_phi[::step], np.linspace(0.0, 1.0, _N_BINS + 1))
    edges = np.concatenate([edges, [_FLOOR_DOMINATED, _PHOTON_DOMINATED]])
    edges = edges[(edges > all_phi.min()) & (edges <= all_phi.max())]
    edges = np.unique(np.concatenate([[all_phi.min()], edges, [all_phi.max() + 1e-12]]))
    bins = {dim: _binned(z, phi, edges) for dim, (z, phi) in per_dir.items()}
    bins = {dim: rows for dim, rows in bins.items() if rows.size}
    # alternate: floor given the signal ratio, signal ratio given the floor
    a, measured, b_dir, a_dir = 1.0, False, {}, {}
    for _ in range(5):
        b_dir = {dim: _floor_ratio(rows, a) for dim, rows in bins.items()}
        floors = [f for f in b_dir.values() if np.isfinite(f)]
        if not floors:
            raise ValueError(
                "noise calibration: no floor-dominated samples (photon fraction < "
                f"{_FLOOR_DOMINATED}) in the subsample; the noise floor cannot be measured"
            )
        b = float(np.mean(floors))
        if not b > 0:
            raise ValueError("noise calibration: the measured noise floor is zero")
        a_dir = {}
        for dim, rows in bins.items():
            high = rows[rows[:, 1] >= _PHOTON_DOMINATED]
            if high.size and high[:, 3].sum() >= _MIN_PHOTON_SAMPLES:
                a_dir[dim] = {
                    int(k): ((var - b * (1.0 - ph)) / ph, ph, cnt) for k, ph, var, cnt in high
                }
        # per bin the smaller of the two directions: structure only adds variance
        per_bin = {}
        for est in a_dir.values():
            for k, (a_k, _, cnt) in est.items():
                if k not in per_bin or a_k < per_bin[k][0]:
                    per_bin[k] = (a_k, cnt)
        if not per_bin:
            a, measured = 1.0, False
            break
        a = max(
            _weighted_median([v[0] for v in per_bin.values()], [v[1] for v in per_bin.values()]),
            0.0,
        )
        measured = True
    directions = {}
    for dim, rows in bins.items():
        est = a_dir.get(dim, {})
        directions[dim] = {
            "floor_variance_ratio": b_dir[dim],
            "floor_ratio": math.sqrt(b_dir[dim]) if b_dir[dim] > 0 else float(b_dir[dim]),
            "signal_ratio": (
                math.sqrt(
                    max(
                        _weighted_median(
                            [v[0] for v in est.values()], [v[2] for v in est.values()]
                        ),
                        0.0,
                    )
                )
                if est
                else None
            ),
            "n_samples": int(rows[:, 3].sum()),
            "n_photon_dominated": int(rows[rows[:, 1] >= _PHOTON_DOMINATED, 3].sum()),
            "bins_phi_variance_count": [
                [round(ph, 4), round(var, 5), int(cnt)] for _, ph, var, cnt in rows
            ],
        }
    return {
        "floor_variance_ratio": b,
        "signal_variance_ratio": a,
        "signal_measured": measured,
        "directions": directions,
    }


def _terms_from_error(values, err):
    """Per-wavelength least squares of ``err**2 = photon * I + floor`` over ``I >= 0``."""
    ok = np.isfinite(values) & np.isfinite(err) & (err > 0) & (values >= 0)
    x = np.where(ok, values, np.nan)
    y = np.where(ok, np.asarray(err, dtype=np.float64) ** 2, np.nan)
    n_w = values.shape[1]
    flat_x = np.moveaxis(x, 1, 0).reshape(n_w, -1)
    flat_y = np.moveaxis(y, 1, 0).reshape(n_w, -1)

    def _lsq(xx, yy):
        good = np.isfinite(xx) & np.isfinite(yy)
        if good.sum() < 3 or np.ptp(xx[good]) <= 0:
            return np.nan, np.nan
        design = np.column_stack([xx[good], np.ones(good.sum())])
        return tuple(np.linalg.lstsq(design, yy[good], rcond=None)[0])

    glob = _lsq(flat_x.ravel(), flat_y.ravel())
    if not np.all(np.isfinite(glob)):
        raise ValueError(
            "calibrate_noise_terms: cannot fit error**2 = photon I + floor to the given error "
            "(too few valid non-negative samples with a range of signal)"
        )
    photon = np.empty(n_w)
    floor = np.empty(n_w)
    for k in range(n_w):
        photon[k], floor[k] = _lsq(flat_x[k], flat_y[k])
    bad = ~(np.isfinite(photon) & np.isfinite(floor))
    photon[bad], floor[bad] = glob
    if np.any(photon < 0) or np.any(floor <= 0):
        raise ValueError(
            "calibrate_noise_terms: the given error is not of the form "
            "sqrt(photon * I + floor) with photon >= 0 and floor > 0"
        )
    pred = photon[None, :, None] * x + floor[None, :, None]
    rel = (np.sqrt(pred) - np.sqrt(y)) / np.sqrt(y)
    rms = float(np.sqrt(np.nanmean(rel**2)))
    if rms > 0.05:
        _log.warning(
            "the given error departs from sqrt(photon I + floor) by %.1f%% rms; the "
            "calibrated error has that form",
            100 * rms,
        )
    return photon, floor, rms


def _terms_dataset(radiance, photon, floor, error) -> xr.Dataset:
    units, squared = terms_units(radiance)
    wl = (
        radiance["wavelength"].reset_coords(drop=True) if "wavelength" in radiance.coords else None
    )
    coords = {"wavelength": wl} if wl is not None else {}
    if np.allclose(photon, photon[0], rtol=1e-6) and np.allclose(floor, floor[0], rtol=1e-6):
        p_da = xr.DataArray(float(photon[0]))
        f_da = xr.DataArray(float(floor[0]))
    else:
        p_da = xr.DataArray(photon, dims="wavelength", coords=coords)
        f_da = xr.DataArray(floor, dims="wavelength", coords=coords)
    name = error.name if error.name is not None else "error"
    return xr.Dataset(
        {
            "photon": p_da.assign_attrs(units=units, long_name="signal-dependent noise term"),
            "floor": f_da.assign_attrs(units=squared, long_name="noise variance floor"),
        },
        attrs={"noise_model": f"fitted to the given error {name!r}"},
    )


def _summary(da: xr.DataArray):
    """A JSON-friendly value of a (small) term: a float, or min/median/max along its dim."""
    if da.ndim == 0:
        return float(da)
    v = np.asarray(da.values, dtype=float)
    return {
        "min": float(np.nanmin(v)),
        "median": float(np.nanmedian(v)),
        "max": float(np.nanmax(v)),
    }
