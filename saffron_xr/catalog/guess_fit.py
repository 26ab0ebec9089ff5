"""Stage 6 of :func:`~saffron_xr.guess_model`: the mean spectrum fitted with the package's
own :func:`~saffron_xr.fit.core.fit_lines`, weak lines dropped (see
:mod:`saffron_xr.catalog.guess_stages` for the other stages)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import xarray as xr

from .guess_options import GuessOptions
from .guess_stages import Candidate, FitSamples

__all__ = ["MeanFit", "fit_mean_spectrum", "noise_of", "unexplained"]


#: Iteration limit and tolerances of the mean-spectrum fits (one spectrum: tight is cheap).
_MEAN_FIT = {"max_iter": 400, "ftol": 1e-9, "xtol": 1e-6}


@dataclass(frozen=True)
class MeanFit:
    """What `fit_mean_spectrum` found.

    Attributes
    ----------
    lines : list of Candidate
        The candidates kept (S/N >= ``min_snr``), in input order.
    amplitude, centroid, width : numpy.ndarray
        Their fitted values (data units, Angstrom, Angstrom sigma), in the order of `lines`.
    offset : list of float
        Per segment, the offset from the fit with centroids tied at ``rest + offset``.
    background : list of list of float
        Background coefficients per segment (degree 0 first, centred on the segment middle).
    residual : numpy.ndarray
        Mean spectrum minus the final fit, at the fitted samples.
    noise : numpy.ndarray
        Noise of the mean spectrum per sample (see `noise_of`).
    status : list of str
        ``"tied <FitStatus>"`` / ``"free <FitStatus>"`` of every fit made, in order.
    """

    lines: list
    amplitude: np.ndarray
    centroid: np.ndarray
    width: np.ndarray
    offset: list
    background: list
    residual: np.ndarray
    noise: np.ndarray
    status: list


@dataclass(frozen=True)
class _Fitted:
    amplitude: np.ndarray
    centroid: np.ndarray
    width: np.ndarray
    background: list
    residual: np.ndarray
    status: str


def fit_mean_spectrum(
    cands: list[Candidate],
    samples: FitSamples,
    offsets: list[float],
    spans: list[tuple[float, float]],
    options: GuessOptions,
    step: float,
    window: str = "window",
) -> MeanFit:
    """Fit the mean spectrum with ``fit_lines``: centroids tied at ``rest + offset``, then free.

    The first fit keeps every line at its catalog position relative to the others (one
    offset per segment, free within ``refine_range`` of ``offsets``; a merged component
    may sit anywhere between its members), so a weak line cannot wander onto a neighbour
    while the offset settles; the second lets each centroid move within ``refine_range``.
    Widths stay within `GuessOptions.fit_width_factors` times ``width``, amplitudes >= 0.
    After each fit the lines whose S/N is below ``min_snr`` are marked ``dropped`` and the
    fit is repeated without them.

    Raises
    ------
    ValueError
        No line reaches ``min_snr`` (the message names the best), or a fit failed.
    """
    y = samples.mean
    base = float(np.percentile(y, 10.0))
    centre = np.array([c.rest + offsets[c.segment] for c in cands])
    amplitude = np.empty(len(cands))
    for i, c in enumerate(cands):
        near = (samples.segment == c.segment) & (
            np.abs(samples.wavelength - centre[i]) <= max(options.width, step)
        )
        peak = float(np.max(y[near])) if near.any() else base
        amplitude[i] = max(peak - base, 1e-3 * max(float(np.max(y)) - base, 1e-30))
    start = (amplitude, centre, np.full(len(cands), options.width))
    statuses: list[str] = []
    active, fit = _fit_and_judge(cands, start, samples, offsets, spans, options, True,
                                 statuses, window)  # fmt: skip
    offsets = _tied_offsets(active, fit, offsets)
    start = (fit.amplitude, fit.centroid, fit.width)
    active, fit = _fit_and_judge(active, start, samples, offsets, spans, options, False,
                                 statuses, window)  # fmt: skip
    n_par = 3 * len(active) + len(spans) * (options.mean_fit_degree + 1)
    return MeanFit(
        lines=active, amplitude=fit.amplitude, centroid=fit.centroid, width=fit.width,
        offset=offsets, background=fit.background, residual=fit.residual,
        noise=noise_of(fit.residual, samples.noise_sigma, y.size - n_par), status=statuses,
    )  # fmt: skip


def _fit_and_judge(cands, start, samples, offsets, spans, options, tied, statuses, window):
    """Fit, judge the S/N of every line, drop the weak ones and refit until none is weak."""
    active = list(cands)
    while True:
        fit = _fit_once(active, start, samples, offsets, spans, options, tied, window)
        statuses.append(f"{'tied' if tied else 'free'} {fit.status}")
        weak = _judge(active, fit, samples, options)
        if not weak.any():
            return active, fit
        if weak.all():
            best = max(active, key=lambda c: c.guess.snr).guess
            raise ValueError(
                f"guess_model: no line of window {window!r} reaches S/N {options.min_snr} in "
                f"the mean spectrum (best: {best.name}, S/N {best.snr:.2f}); lower min_snr "
                "to fit it anyway"
            )
        for c in np.array(active, dtype=object)[weak]:
            c.guess.status = "dropped"
            c.guess.reason = f"mean-spectrum S/N {c.guess.snr:.2f} < min_snr {options.min_snr}" + (
                "" if tied else " (after refining centroids)"
            )
        keep = ~weak
        active = [c for c, k in zip(active, keep, strict=True) if k]
        # restart from the current amplitudes and widths, at the same centroids
        start = (fit.amplitude[keep], start[1][keep], fit.width[keep])


def _judge(active, fit, samples, options) -> np.ndarray:
    """Write the fitted values and S/N into each line's `LineGuess`; True where weak."""
    x, resid, sigma = samples.wavelength, fit.residual, samples.noise_sigma
    weak = np.zeros(len(active), dtype=bool)
    for i, c in enumerate(active):
        g = c.guess
        g.amplitude = float(fit.amplitude[i])
        g.centroid = float(fit.centroid[i])
        g.width = float(fit.width[i])
        local = np.abs(x - g.centroid) <= 3.0 * max(g.width, options.width)
        if local.sum() < 5:
            local = np.argsort(np.abs(x - g.centroid))[:5]
        local_sigma = None if sigma is None else sigma[local]
        g.snr = float(g.amplitude / noise_of(resid[local], local_sigma, None).mean())
        if samples.error_mean is not None:
            g.snr_pixel = float(g.amplitude / np.interp(g.centroid, x, samples.error_mean))
        weak[i] = not g.snr >= options.min_snr
    return weak


def _fit_once(active, start, samples, offsets, spans, options, tied, window) -> _Fitted:
    """One ``fit_lines`` fit of the mean spectrum (see `fit_mean_spectrum`)."""
    from ..fit.core import fit_lines, model_spectrum
    from ..fit.status import FitStatus

    model = _mean_model(active, start, offsets, spans, options, tied)
    wavelength = {"wavelength": ("wavelength", samples.wavelength, {"units": "Angstrom"})}
    data = xr.DataArray(samples.mean, dims=("wavelength",), coords=wavelength)
    error = xr.DataArray(samples.sigma, dims=("wavelength",), coords=wavelength)
    ds = fit_lines(data, model, error=error, moments=False, **_MEAN_FIT)
    status = FitStatus(int(ds.status))
    amplitude = np.asarray(ds.amplitude.values, dtype=float)
    if not np.all(np.isfinite(amplitude)):
        raise ValueError(
            f"guess_model: the mean-spectrum fit of window {window!r} failed ({status.name}, "
            f"{samples.wavelength.size} usable samples for {model.n_free} free parameters)"
        )
    background = np.asarray(ds.background.values, dtype=float).reshape(len(spans), -1)
    return _Fitted(
        amplitude=amplitude,
        centroid=np.asarray(ds.centroid.values, dtype=float),
        width=np.asarray(ds.width.values, dtype=float),
        background=background.tolist(),
        residual=samples.mean - np.asarray(model_spectrum(ds, samples.wavelength).values),
        status=status.name,
    )


def _mean_model(active, start, offsets, spans, options, tied):
    """The LineModel of one mean-spectrum fit (lines named by their index: the same catalog
    line may be a candidate in two segments). Tied: per segment, every single line's
    centroid is tied to the brightest one's (at the rest separation); merged components
    stay free between their members' shifted rest wavelengths."""
    from ..fit.model import LineModel

    tol = options.refine_range
    lo_f, hi_f = options.fit_width_factors
    model = LineModel(
        background_degree=options.mean_fit_degree, segments=spans if len(spans) > 1 else None
    )
    amplitude, centroid, width = start
    for i, c in enumerate(active):
        if tied:
            at = c.rest + offsets[c.segment]
            lo, hi = at + c.span[0] - tol, at + c.span[1] + tol
            cen = at + min(max(0.0, c.span[0]), c.span[1])
        else:
            cen = float(centroid[i])
            lo, hi = cen - tol, cen + tol
        model.add_line(
            f"line {i}", rest_wavelength=c.rest, amplitude=float(amplitude[i]), centroid=cen,
            width=float(width[i]),
            bounds={"amplitude": (0.0, None), "centroid": (lo, hi),
                    "width": (lo_f * options.width, hi_f * options.width)},
        )  # fmt: skip
    if tied:
        for sg in range(len(spans)):
            single = [i for i, c in enumerate(active) if c.segment == sg and not c.spread]
            if not single:
                continue
            ref = max(single, key=lambda i: amplitude[i])
            for i in single:
                if i != ref:
                    offset = active[i].rest - active[ref].rest
                    model.tie_centroid(f"line {i}", f"line {ref}", offset=offset)
    return model


def _tied_offsets(active, fit, offsets) -> list[float]:
    """Offset of each segment after the tied fit, from its brightest line: its centroid
    minus its rest wavelength, less (for a merged component) the shift within its members'
    span that brings it closest to the template offset ``offsets``; unchanged for segments
    without lines."""
    out = list(offsets)
    for sg in range(len(out)):
        mine = [i for i, c in enumerate(active) if c.segment == sg]
        if not mine:
            continue
        i = max(mine, key=lambda j: fit.amplitude[j])
        a, b = active[i].span
        seen = float(fit.centroid[i]) - active[i].rest
        out[sg] = seen - min(max(seen - offsets[sg], a), b)
    return out


def noise_of(resid, sigma, dof):
    """Noise of the mean spectrum per sample: ``sigma`` scaled by sqrt(reduced chi2) when
    that exceeds 1, or the RMS residual without ``sigma``. ``dof`` None: residual count."""
    dof = max(resid.size if dof is None else dof, 1)
    if sigma is not None:
        chi2 = float(np.sum((resid / sigma) ** 2)) / dof
        return sigma * max(1.0, math.sqrt(chi2))
    return np.full(resid.shape, max(math.sqrt(float(np.sum(resid**2)) / dof), 1e-300))


def unexplained(x, resid, sigma, k):
    """Positive residual runs (>= 2 samples) above ``k`` times the random noise of the mean
    spectrum: ``sigma`` when known, else a robust estimate from sample-to-sample differences.
    Returns up to five ``[wavelength of the maximum, excess]`` pairs, largest excess first."""
    if sigma is None:
        d = np.diff(resid)
        mad = np.median(np.abs(d - np.median(d))) if d.size else 0.0
        sigma = np.full_like(resid, max(1.4826 * mad / math.sqrt(2.0), 1e-300))
    idx = np.flatnonzero(resid > k * sigma)
    if idx.size == 0:
        return []
    runs = [r for r in np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1) if r.size >= 2]
    peaks = [[float(x[r[np.argmax(resid[r])]]), float(resid[r].max())] for r in runs]
    peaks.sort(key=lambda p: -p[1])
    return peaks[:5]
