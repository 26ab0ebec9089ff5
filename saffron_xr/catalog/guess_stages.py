"""The stages of :func:`~saffron_xr.guess_model`, in the order it runs them.

1. :func:`reduce_window` -- the one data reduction: the window's mean spectrum, sorted.
2. :func:`usable_ranges` -- per segment, the samples valid in enough spectra.
3. :func:`find_candidates` -- catalog lines within ``max_offset`` of the usable ranges.
4. :func:`merge_blends`, :func:`merge_close` -- blend members and close lines become one.
5. :func:`estimate_offsets` (then :func:`drop_outside`) -- wavelength offset per segment.
6. :func:`~saffron_xr.catalog.guess_fit.fit_mean_spectrum` (in ``guess_fit.py``) -- the
   mean spectrum fitted with the package's ``fit_lines``, weak lines dropped.
7. :func:`build_model` -- the :class:`~saffron_xr.LineModel` with its bounds.

Every decision about a line is written into its :class:`~saffron_xr.catalog.LineGuess`
(shared by the :class:`Candidate` that carries it), so the report records them all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import dask
import numpy as np
import xarray as xr

from ..fit.profiles import gaussian
from .catalog import LineCatalog
from .guess_options import GuessOptions
from .guess_report import LineGuess

__all__ = [
    "WindowSpectrum",
    "FitSamples",
    "Candidate",
    "OffsetEstimate",
    "mean_spectrum",
    "window_name",
    "reduce_window",
    "usable_ranges",
    "fit_samples",
    "find_candidates",
    "merge_blends",
    "merge_close",
    "estimate_offsets",
    "drop_outside",
    "build_model",
    "choose_background_degree",
    "MIN_WIDTH_FACTOR",
]

#: Offset solutions whose template chi2 is within this fraction of the best are taken as
#: equally good; the catalog window's brightest line then decides (see `estimate_offsets`).
EQUIVALENT_CHI2 = 0.05

#: The default (hard) lower width bound is this factor times the narrowest physical width
#: (see :func:`~saffron_xr.guess_model`, ``width_bounds``).
MIN_WIDTH_FACTOR = 0.7
#: The default soft lower width bound (`LineModel.set_soft_min_width`): the penalty starts
#: at SOFT_MIN_WIDTH_FACTOR times the narrowest physical width, with a tolerance of
#: SOFT_WIDTH_TOLERANCE times that width.
SOFT_MIN_WIDTH_FACTOR = 0.85
SOFT_WIDTH_TOLERANCE = 0.05
#: ``background_degree="auto"`` keeps the mean spectrum's slope when it changes the chi2 of
#: one spectrum by at least this much (see `choose_background_degree`).
AUTO_SLOPE_CHI2 = 1.0
#: The default upper width bound is this factor times the larger of the guessed width and
#: the narrowest physical width.
MAX_WIDTH_FACTOR = 4.0
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
_SW_LW_BOUNDARY = 850.0  # Angstrom: SW covers 704-790, LW 973-1049


# ---------------------------------------------------------------------------- 1. reduction
def mean_spectrum(radiance: xr.DataArray, error: xr.DataArray | None = None) -> xr.Dataset:
    """The mean spectrum of a window (NaN samples skipped), lazily.

    Parameters
    ----------
    radiance : xarray.DataArray
        Spectra with a ``wavelength`` dimension; every other dimension is averaged.
    error : xarray.DataArray, optional
        1-sigma errors broadcastable to ``radiance``; their mean over the valid samples is
        returned too.

    Returns
    -------
    xarray.Dataset
        ``mean`` (data units), ``count`` (valid samples per wavelength), ``n_spectra``
        (attribute) and, with ``error``, ``error_mean``; dims ``(wavelength,)``; lazy when
        the input is.
    """
    if "wavelength" not in radiance.dims:
        raise ValueError(
            f"mean_spectrum: {window_name(radiance)!r} has no 'wavelength' dimension "
            f"(dims {radiance.dims})"
        )
    other = [d for d in radiance.dims if d != "wavelength"]
    n = int(np.prod([radiance.sizes[d] for d in other])) if other else 1
    data = radiance.transpose(*other, "wavelength")
    err = None
    if error is not None:
        err = error.broadcast_like(radiance).transpose(*data.dims)
    sums = _window_sums(data.data, None if err is None else err.data)
    coords = {k: v for k, v in radiance.coords.items() if set(v.dims) <= {"wavelength"}}
    wave_dims = ("wavelength",)
    count = xr.DataArray(sums[:, 0], dims=wave_dims, coords=coords)
    total = xr.DataArray(sums[:, 1], dims=wave_dims, coords=coords)
    ds = xr.Dataset({"mean": total / count.where(count > 0), "count": count})
    ds["mean"].attrs["units"] = radiance.attrs.get("units", "")
    ds["count"].attrs["units"] = "1"
    if error is not None:
        err_count = xr.DataArray(sums[:, 2], dims=wave_dims, coords=coords)
        err_total = xr.DataArray(sums[:, 3], dims=wave_dims, coords=coords)
        ds["error_mean"] = err_total / err_count.where(err_count > 0)
        ds["error_mean"].attrs["units"] = radiance.attrs.get("units", "")
    ds.attrs["n_spectra"] = n
    return ds


def _block_sums(values, error=None):
    """Per wavelength (last axis) of one block: valid samples, their sum, and (with
    ``error``) the samples whose error is finite too and the sum of those errors; float64
    sums, shape ``(1, ..., 1, wavelength, 4)``."""
    axes = tuple(range(values.ndim - 1))
    valid = np.isfinite(values)
    out = np.zeros(values.shape[-1:] + (4,))
    out[:, 0] = valid.sum(axis=axes)
    out[:, 1] = np.where(valid, values, 0.0).sum(axis=axes, dtype=np.float64)
    if error is not None:
        ok = valid & np.isfinite(error)
        out[:, 2] = ok.sum(axis=axes)
        out[:, 3] = np.where(ok, error, 0.0).sum(axis=axes, dtype=np.float64)
    return out.reshape((1,) * len(axes) + out.shape)


def _window_sums(values, error=None):
    """The sums of `_block_sums` over every spectrum, ``(wavelength, 4)``: one pass over the
    data per block (a chain of xarray operations made five full-size temporaries and took
    2.5x as long on a 160,000-spectrum window). Lazy for dask input."""
    import dask.array as da

    if not isinstance(values, da.Array) and not isinstance(error, da.Array):
        err = None if error is None else np.asarray(error)
        return _block_sums(np.asarray(values), err).reshape(-1, 4)
    values = da.asarray(values)
    args = [values]
    if error is not None:
        args.append(da.asarray(error).rechunk(values.chunks))
    ndim = values.ndim
    chunks = tuple((1,) * len(c) for c in values.chunks[:-1]) + (values.chunks[-1], (4,))
    parts = da.map_blocks(_block_sums, *args, chunks=chunks, new_axis=ndim, dtype=np.float64)
    return parts.sum(axis=tuple(range(ndim - 1)))


def window_name(da) -> str:
    """The window's name for messages and reports: ``EXTNAME``, else the DataArray name."""
    return str(da.attrs.get("EXTNAME") or da.name or "window")


@dataclass(frozen=True)
class WindowSpectrum:
    """The mean spectrum of a window, sorted by wavelength: what every later stage reads.

    Attributes
    ----------
    name : str
        Window name (for messages).
    wavelength, mean, count : numpy.ndarray
        Angstrom; data units; valid spectra per sample.
    error_mean : numpy.ndarray or None
        Mean 1-sigma error per sample (None without ``error``).
    segment : numpy.ndarray of int
        Segment index of each sample (all 0 unless the window was fused).
    segment_labels : list
        The ``segment`` coordinate's value of each segment (``[None]`` when not fused).
    """

    name: str
    wavelength: np.ndarray
    mean: np.ndarray
    count: np.ndarray
    error_mean: np.ndarray | None
    segment: np.ndarray
    segment_labels: list

    @property
    def n_segments(self) -> int:
        return len(self.segment_labels)

    @property
    def n_with_data(self) -> float:
        """Largest number of valid spectra at any sample (at least 1)."""
        return max(float(np.max(self.count)) if self.count.size else 0.0, 1.0)

    def step(self, default: float) -> float:
        """Median wavelength step (Angstrom); ``default`` for a single sample."""
        w = self.wavelength
        return float(np.median(np.diff(w))) if w.size > 1 else default


def reduce_window(radiance: xr.DataArray, error: xr.DataArray | None = None) -> WindowSpectrum:
    """Compute the mean spectrum of a window (one dask computation) and sort it.

    Returns
    -------
    WindowSpectrum
    """
    ms = mean_spectrum(radiance, error)
    names = ["mean", "count"] + (["error_mean"] if error is not None else [])
    computed = [np.asarray(a, dtype=float) for a in dask.compute(*[ms[n].data for n in names])]
    wave = np.asarray(radiance["wavelength"].values, dtype=float)
    segment, labels = _segments_of(radiance)
    order = np.argsort(wave, kind="stable")
    return WindowSpectrum(
        name=window_name(radiance),
        wavelength=wave[order],
        mean=computed[0][order],
        count=computed[1][order],
        error_mean=computed[2][order] if error is not None else None,
        segment=segment[order],
        segment_labels=labels,
    )


def _segments_of(radiance) -> tuple[np.ndarray, list]:
    """Per-sample segment index and the segment labels (one segment unless fused)."""
    n = radiance.sizes["wavelength"]
    if "segment" in radiance.coords and radiance["segment"].dims == ("wavelength",):
        values = np.asarray(radiance["segment"].values).tolist()
        labels = list(dict.fromkeys(values))
        return np.array([labels.index(v) for v in values], dtype=int), labels
    return np.zeros(n, dtype=int), [None]


# ---------------------------------------------------------------------------- 2. usable range
def usable_ranges(
    spectrum: WindowSpectrum, min_valid_fraction: float
) -> tuple[list[tuple[float, float]], np.ndarray]:
    """Per segment, the wavelength range from the first to the last sample valid in at least
    ``min_valid_fraction`` of the spectra holding any data.

    Returns
    -------
    spans : list of (float, float)
        Usable range of each segment, Angstrom.
    mask : numpy.ndarray of bool
        The samples the fits use: inside their segment's range and themselves valid.

    Raises
    ------
    ValueError
        A segment without any such sample (the message names the window and segment).
    """
    ok = (spectrum.count / spectrum.n_with_data >= min_valid_fraction) & np.isfinite(spectrum.mean)
    inside = np.zeros(ok.size, dtype=bool)
    spans = []
    for sg, label in enumerate(spectrum.segment_labels):
        idx = np.flatnonzero(ok & (spectrum.segment == sg))
        if idx.size == 0:
            where = f" segment {label!r}" if label is not None else ""
            raise ValueError(
                f"guess_model: window {spectrum.name!r}{where} has no wavelength sample valid "
                f"in >= {min_valid_fraction:.0%} of its spectra"
            )
        i0, i1 = int(idx[0]), int(idx[-1])
        inside[i0 : i1 + 1] |= spectrum.segment[i0 : i1 + 1] == sg
        spans.append((float(spectrum.wavelength[i0]), float(spectrum.wavelength[i1])))
    return spans, inside & ok


@dataclass(frozen=True)
class FitSamples:
    """The usable samples of the mean spectrum: what the offset search and the fits see.

    Attributes
    ----------
    wavelength, mean : numpy.ndarray
        Angstrom, data units.
    sigma : numpy.ndarray
        Noise of the mean per sample: mean error over sqrt(valid spectra); without
        ``error``, the *relative* noise sqrt(n_with_data / count) (weights only).
    segment : numpy.ndarray of int
    error_mean : numpy.ndarray or None
        Mean per-pixel error (for the single-pixel S/N); None without ``error``.
    """

    wavelength: np.ndarray
    mean: np.ndarray
    sigma: np.ndarray
    segment: np.ndarray
    error_mean: np.ndarray | None

    @property
    def noise_sigma(self) -> np.ndarray | None:
        """``sigma`` when it is absolute (errors given), else None."""
        return None if self.error_mean is None else self.sigma


def fit_samples(spectrum: WindowSpectrum, mask: np.ndarray) -> FitSamples:
    """The samples under ``mask`` (from `usable_ranges`) with their noise."""
    count = spectrum.count[mask]
    err = None if spectrum.error_mean is None else spectrum.error_mean[mask]
    if err is not None:
        sigma = err / np.sqrt(np.maximum(count, 1.0))
        good = np.isfinite(sigma) & (sigma > 0)
        sigma = np.where(good, sigma, np.median(sigma[good]) if good.any() else 1.0)
    else:  # relative noise of a mean of ``count`` spectra
        sigma = np.sqrt(spectrum.n_with_data / np.maximum(count, 1.0))
    return FitSamples(
        spectrum.wavelength[mask], spectrum.mean[mask], sigma, spectrum.segment[mask], err
    )


# ---------------------------------------------------------------------------- 3-4. candidates
@dataclass(frozen=True)
class Candidate:
    """A catalog line that may become a model component.

    Attributes
    ----------
    guess : LineGuess
        Its record in the report (status, reason and estimates are written there).
    rest : float
        Rest wavelength, Angstrom.
    segment : int
    span : (float, float)
        Rest wavelengths of the lines merged into it, relative to ``rest`` (min, max);
        ``(0, 0)`` for a single line. The component's centroid may lie anywhere in it.
    """

    guess: LineGuess
    rest: float
    segment: int
    span: tuple[float, float] = (0.0, 0.0)

    @property
    def name(self) -> str:
        return self.guess.name

    @property
    def spread(self) -> bool:
        """True for a component standing for several lines at different wavelengths."""
        return self.span[1] > self.span[0]


def find_candidates(
    catalog: LineCatalog, spans: list[tuple[float, float]], max_offset: float
) -> list[Candidate]:
    """Catalog lines whose rest wavelength is within ``max_offset`` of a usable range, in
    segment then catalog order, each with a new `LineGuess` (status ``kept``)."""
    return [
        Candidate(
            LineGuess(ln.name, ln.ion, ln.rest_wavelength, segment=sg), ln.rest_wavelength, sg
        )
        for sg, (w0, w1) in enumerate(spans)
        for ln in catalog.in_range(w0 - max_offset, w1 + max_offset)
    ]


def _merge(loser: Candidate, winner: Candidate, reason: str) -> Candidate:
    """Record ``loser`` as merged into ``winner``; return ``winner`` with its span widened."""
    loser.guess.status = "merged"
    loser.guess.merged_into = winner.name
    loser.guess.reason = reason
    d0 = loser.rest + loser.span[0] - winner.rest
    d1 = loser.rest + loser.span[1] - winner.rest
    return replace(winner, span=(min(winner.span[0], d0), max(winner.span[1], d1)))


def merge_blends(cands: list[Candidate], catalog: LineCatalog) -> list[Candidate]:
    """Merge the members of each catalog blend (per segment) into its brightest line (or the
    first member present); returns the candidates still kept."""
    cands = list(cands)
    for w in catalog.windows.values():
        if not w.blend:
            continue
        for sg in sorted({c.segment for c in cands}):
            members = [i for i, c in enumerate(cands) if c.name in w.lines and c.segment == sg]
            if len(members) < 2:
                continue
            names = [cands[i].name for i in members]
            k = members[names.index(w.brightest)] if w.brightest in names else members[0]
            for i in members:
                if i != k and cands[i].guess.status == "kept":
                    reason = f"catalog blend {w.name!r}: fitted as {cands[k].name}"
                    cands[k] = _merge(cands[i], cands[k], reason)
    return [c for c in cands if c.guess.status == "kept"]


def merge_close(
    cands: list[Candidate],
    catalog: LineCatalog,
    samples: FitSamples,
    min_separation: float,
    max_offset: float,
) -> list[Candidate]:
    """Fit lines closer than ``min_separation`` (same segment) as one, repeatedly.

    Of two close lines the one a shared catalog window calls brightest is kept, else the
    one with the higher mean-spectrum peak within ``max_offset`` of its rest wavelength.
    Returns the remaining candidates sorted by (segment, rest wavelength).
    """

    def peak(c):
        near = (samples.segment == c.segment) & (np.abs(samples.wavelength - c.rest) <= max_offset)
        return float(np.max(samples.mean[near])) if near.any() else -np.inf

    def prefer(a, b) -> bool:
        for w in catalog.windows_of(a.name, blend=False):
            if b.name in w.lines and w.brightest in (a.name, b.name):
                return w.brightest == a.name
        return peak(a) >= peak(b)

    cands = sorted(cands, key=lambda c: (c.segment, c.rest))
    k = 0
    while k < len(cands) - 1:
        a, b = cands[k], cands[k + 1]
        if a.segment == b.segment and b.rest - a.rest < min_separation:
            (win, w), (lose, lo) = ((a, k), (b, k + 1)) if prefer(a, b) else ((b, k + 1), (a, k))
            cands[w] = _merge(lose, win, f"{b.rest - a.rest:.2f} A from {win.name} (< "
                              f"min_separation {min_separation} A): fitted as one")  # fmt: skip
            del cands[lo]
            k = 0  # start over, as the merged component may now be close to another
        else:
            k += 1
    return cands


# ---------------------------------------------------------------------------- 5. offset
@dataclass(frozen=True)
class OffsetEstimate:
    """Wavelength offset (observed minus rest) of each segment from the catalog template.

    Attributes
    ----------
    offset : list of float
        Angstrom (0 for a segment without candidates).
    at_limit : list of bool
        True where the search hit ``+-max_offset`` (unreliable).
    anchor : list of str or None
        The catalog window's brightest line that settled equally good solutions.
    """

    offset: list
    at_limit: list
    anchor: list


def estimate_offsets(
    cands: list[Candidate],
    catalog: LineCatalog,
    samples: FitSamples,
    spans: list[tuple[float, float]],
    width: float,
    max_offset: float,
    step: float,
) -> OffsetEstimate:
    """The offset of each segment that best explains its mean spectrum with the catalog
    template (see `offset_profile`), searched over ``+-max_offset`` in steps of
    ``min(0.01, step / 4)`` Angstrom (``step``: the wavelength sampling)."""
    offsets, at_limit, anchors = [], [], []
    for sg, span in enumerate(spans):
        mine = [c for c in cands if c.segment == sg]
        names = [c.name for c in mine]
        anchor = _anchor_of(catalog, names) if mine else None
        anchors.append(anchor)
        if not mine:
            offsets.append(0.0)
            at_limit.append(False)
            continue
        in_s = samples.segment == sg
        # a constant background in the offset search: a sloped one can trade a line at the
        # window edge for the slope and pick the wrong catalog line as the anchor
        off, limit = offset_profile(
            samples.wavelength[in_s], samples.mean[in_s], samples.sigma[in_s],
            np.array([c.rest for c in mine]), None if anchor is None else names.index(anchor),
            width, 0, max_offset, min(0.01, step / 4.0), span,
        )  # fmt: skip
        offsets.append(off)
        at_limit.append(limit)
    return OffsetEstimate(offsets, at_limit, anchors)


def _template(x, centres, width, degree, ref):
    """Design matrix: one unit-height Gaussian column per centre, then background monomials."""
    cols = [gaussian(x, 1.0, c, width) for c in centres]
    cols += [(x - ref) ** k for k in range(degree + 1)]
    return np.array(cols).T


def offset_profile(x, y, sigma, rest, anchor, width, degree, max_offset, step, span):
    """Wavelength offset of one segment from the chi2 profile of the catalog template.

    For each trial offset in ``[-max_offset, max_offset]`` the template -- Gaussians of
    sigma ``width`` at ``rest + offset`` with non-negative fitted heights, on a polynomial
    background -- is fitted by linear least squares (lines whose shifted position leaves
    ``span`` do not contribute). This is a cross-correlation of the spectrum with the
    catalog template in which the line heights come from the data. Local minima of chi2
    within `EQUIVALENT_CHI2` (relative) of the best are equally good explanations of the
    data (typically one bright peak that either of two catalog lines could be); among them
    the one giving the ``anchor`` line (index, or None) the largest share of the flux wins.

    Returns
    -------
    (float, bool)
        The offset (Angstrom, refined by a parabola through the chi2 minimum) and whether
        it is at the edge of the search range.
    """
    from scipy.optimize import lsq_linear

    nl = len(rest)
    ref = 0.5 * (span[0] + span[1])
    deltas = np.arange(-max_offset, max_offset + 0.5 * step, step)
    lo = np.r_[np.zeros(nl), np.full(degree + 1, -np.inf)]
    hi = np.full(lo.size, np.inf)
    chi2 = np.empty(deltas.size)
    share = np.zeros(deltas.size)
    yw = y / sigma
    for k, d in enumerate(deltas):
        a = _template(x, rest + d, width, degree, ref)
        a[:, :nl][:, (rest + d < span[0]) | (rest + d > span[1])] = 0.0
        res = lsq_linear(a / sigma[:, None], yw, bounds=(lo, hi), method="bvls")
        chi2[k] = np.sum((a @ res.x / sigma - yw) ** 2)
        amps = res.x[:nl]
        if anchor is not None and amps.max() > 0:
            share[k] = amps[anchor] / amps.max()
    interior = np.r_[True, chi2[1:] <= chi2[:-1]] & np.r_[chi2[:-1] <= chi2[1:], True]
    minima = np.flatnonzero(interior & (chi2 <= chi2.min() * (1.0 + EQUIVALENT_CHI2)))
    k = int(minima[np.lexsort((chi2[minima], -share[minima]))[0]])
    best = deltas[k]
    if 0 < k < deltas.size - 1:
        y0, y1, y2 = chi2[k - 1], chi2[k], chi2[k + 1]
        den = y0 - 2 * y1 + y2
        if den > 0:
            best = best + 0.5 * step * (y0 - y2) / den
    return float(best), bool(k == 0 or k == deltas.size - 1)


def _anchor_of(catalog: LineCatalog, names: list[str]) -> str | None:
    """Brightest line of the catalog window (not blend) sharing most lines with ``names``."""
    best, best_n = None, 0
    for w in catalog.windows.values():
        if w.blend or w.brightest not in names:
            continue
        n = sum(x in names for x in w.lines)
        if n > best_n:
            best, best_n = w.brightest, n
    return best


def drop_outside(
    cands: list[Candidate], offsets: list[float], spans: list[tuple[float, float]]
) -> list[Candidate]:
    """Mark ``outside`` the candidates whose ``rest + offset`` leaves their usable range;
    return the others."""
    kept = []
    for c in cands:
        pos = c.rest + offsets[c.segment]
        w0, w1 = spans[c.segment]
        if w0 <= pos <= w1:
            kept.append(c)
        else:
            c.guess.status = "outside"
            c.guess.reason = (
                f"expected at {pos:.2f} A, outside the usable range {w0:.2f}-{w1:.2f} A"
            )
    return kept


# ---------------------------------------------------------------------------- 7. the model
def choose_background_degree(fit, samples: FitSamples, options: GuessOptions):
    """The model's background degree and, for ``"auto"``, the slope's chi2 per spectrum.

    For ``background_degree="auto"`` (see :class:`~saffron_xr.catalog.GuessOptions`): the
    part of the mean spectrum's linear background that a constant cannot absorb,
    ``b1 (t - <t>)`` per segment (``<t>`` the inverse-variance weighted mean of ``t``), is
    compared with the mean per-pixel errors: ``chi2 = sum (b1 (t - <t>))**2 / e**2`` over
    the usable samples. Degree 1 if ``chi2 >= AUTO_SLOPE_CHI2`` (or without errors), else 0.

    Returns
    -------
    (int, float)
        The degree and the slope chi2 (NaN when not computed).
    """
    if options.background_degree != "auto":
        return int(options.background_degree), math.nan
    if samples.error_mean is None:
        return 1, math.nan
    chi2 = 0.0
    for sg, coef in enumerate(fit.background):
        if len(coef) < 2:
            continue
        sel = (samples.segment == sg) & np.isfinite(samples.error_mean)
        sel &= samples.error_mean > 0
        if sel.sum() < 2:
            continue
        w = samples.wavelength[sel]
        inv_var = 1.0 / samples.error_mean[sel] ** 2
        t = w - np.sum(w * inv_var) / np.sum(inv_var)
        chi2 += float(np.sum((coef[1] * t) ** 2 * inv_var))
    return (1 if chi2 >= AUTO_SLOPE_CHI2 else 0), chi2


def build_model(
    fit,
    options: GuessOptions,
    catalog: LineCatalog,
    spectrum: WindowSpectrum,
    attrs: dict,
    degree: int | None = None,
):
    """The initial LineModel: the kept lines (rest-wavelength order, catalog names) at their
    mean-spectrum values, with the bounds of :func:`~saffron_xr.guess_model`.

    Parameters
    ----------
    fit : saffron_xr.catalog.guess_fit.MeanFit
    options : GuessOptions
    catalog : LineCatalog
        For the formation temperatures of the physical width bounds.
    spectrum : WindowSpectrum
        For the wavelength range of each segment (``segments`` of a fused window).
    attrs : dict
        The window's attributes (``DETECTOR``, ``SLIT_WID``) for the instrumental width.
    degree : int, optional
        Background degree (default: that of the mean-spectrum fit).
    """
    from ..fit.model import LineModel

    amp_lo, amp_hi = options.amplitude_bounds
    lo_f, hi_f = options.fit_width_factors
    segments = None
    if spectrum.n_segments > 1:
        w, s = spectrum.wavelength, spectrum.segment
        segments = [
            (float(w[s == k].min()), float(w[s == k].max())) for k in range(spectrum.n_segments)
        ]
    degree = options.mean_fit_degree if degree is None else degree
    model = LineModel(background_degree=degree, segments=segments)
    for i in sorted(range(len(fit.lines)), key=lambda i: fit.lines[i].rest):
        g = fit.lines[i].guess
        amp = g.amplitude if amp_hi is None else min(g.amplitude, amp_hi)
        amp = amp if amp_lo is None else max(amp, amp_lo)
        if options.physical_widths:
            narrowest = narrowest_width(catalog, g, attrs)
            w_lo = MIN_WIDTH_FACTOR * narrowest
            w_hi = MAX_WIDTH_FACTOR * max(g.width, narrowest)
            soft = (SOFT_MIN_WIDTH_FACTOR * narrowest, SOFT_WIDTH_TOLERANCE * narrowest)
        else:
            w_lo, w_hi = lo_f * g.width, hi_f * g.width
            soft = None
        model.add_line(
            g.name,
            ion=g.ion,
            rest_wavelength=g.rest_wavelength,
            amplitude=amp,
            centroid=g.centroid,
            width=min(max(g.width, (w_lo if soft is None else soft[0]) * 1.05), w_hi),
            bounds={
                "amplitude": (amp_lo, amp_hi),
                "centroid": (
                    g.centroid - options.centroid_range,
                    g.centroid + options.centroid_range,
                ),
                "width": (w_lo, w_hi),
            },
        )
        if soft is not None:
            model.set_soft_min_width(g.name, *soft)
    _tie_weak_lines(model, fit, options)
    return model


def _tie_weak_lines(model, fit, options: GuessOptions) -> None:
    """Constrain the lines that one pixel cannot measure (see ``GuessOptions.weak_pixel_snr``).

    Per segment, every kept line but the brightest (by single-pixel S/N) whose ``snr_pixel``
    is below the threshold gets its centroid tied to the brightest line at their
    mean-spectrum separation and its width fixed at its mean-spectrum width (within its
    bounds); its amplitude stays free. The line's report says so.
    """
    limit = options.weak_pixel_snr
    if limit is None:
        return
    by_segment: dict[int, list] = {}
    for cand in fit.lines:
        if math.isfinite(cand.guess.snr_pixel):
            by_segment.setdefault(cand.segment, []).append(cand.guess)
    for guesses in by_segment.values():
        anchor = max(guesses, key=lambda g: g.snr_pixel)
        for g in guesses:
            if g is anchor or not g.snr_pixel < limit:
                continue
            offset = g.centroid - anchor.centroid
            lo, hi = model.line_info(g.name)["bounds"]["width"]
            width = min(max(g.width, lo), hi)
            model.tie_centroid(g.name, anchor.name, offset)
            model.set_soft_min_width(g.name, None)
            model.fix(g.name, "width", width)
            g.reason = (
                f"single-pixel S/N {g.snr_pixel:.2f} < weak_pixel_snr {limit:g}: centroid tied "
                f"to {anchor.name} ({offset:+.3f} A), width fixed at {width:.3f} A"
            )


def narrowest_width(catalog: LineCatalog, guess: LineGuess, attrs) -> float:
    """Gaussian sigma (Angstrom) of the instrumental and thermal widths in quadrature."""
    import astropy.constants as const

    from ..derive import ATOMIC_WEIGHTS, INSTRUMENTAL_FWHM

    rest = guess.rest_wavelength if guess.rest_wavelength else guess.centroid
    det = str(attrs.get("DETECTOR", "") or "").strip().upper()
    if det not in ("SW", "LW"):
        det = "SW" if rest < _SW_LW_BOUNDARY else "LW"
    try:
        slit = int(round(float(attrs.get("SLIT_WID", 2))))
    except (TypeError, ValueError):
        slit = 2
    fwhm_inst = INSTRUMENTAL_FWHM.get((det, slit), INSTRUMENTAL_FWHM[(det, 2)])
    sigma2 = (fwhm_inst / _FWHM_PER_SIGMA) ** 2
    log_t = catalog[guess.name].log_t if guess.name in catalog else None
    element = (guess.ion or "").split("_")[0]
    mass = ATOMIC_WEIGHTS.get(element)
    if log_t is not None and mass is not None and math.isfinite(float(log_t)):
        kt_over_m = const.k_B.value * 10.0 ** float(log_t) / (mass * const.u.value)
        sigma2 += (rest * math.sqrt(kt_over_m) / const.c.value) ** 2
    return math.sqrt(sigma2)
