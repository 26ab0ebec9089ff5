"""Automatic initial models: catalog lines matched to a window and guessed from its data.

:func:`guess_model` reads the *mean spectrum* of a window (the only reduction of the data it
computes), finds the usable wavelength range, matches catalog lines to it, estimates the
window's wavelength offset (SPICE's wavelength scale is pre-flight: lines sit up to ~0.5
Angstrom from their rest wavelengths), fits the mean spectrum with the matched lines and
builds a :class:`~saffron_xr.LineModel` with documented, configurable bounds. Every decision
(offset, lines kept, merged, dropped and why) is recorded in a :class:`GuessReport`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import dask
import numpy as np
import xarray as xr

from .._units import is_angstrom
from .catalog import CatalogError, LineCatalog

__all__ = ["guess_model", "guess_models", "GuessReport", "LineGuess", "mean_spectrum"]

logger = logging.getLogger(__name__)

#: Offset solutions whose template chi2 is within this fraction of the best are taken as
#: equally good; the catalog window's brightest line then decides (see guess_model).
_EQUIVALENT_CHI2 = 0.05


@dataclass
class LineGuess:
    """What :func:`guess_model` decided about one catalog line.

    Attributes
    ----------
    name, ion : str
        Catalog identity.
    rest_wavelength : float
        Angstrom.
    segment : int
        Index of the wavelength segment (0 unless the window is fused).
    status : {"kept", "dropped", "merged", "outside"}
        ``kept``: in the model; ``dropped``: below the S/N threshold; ``merged``: closer
        than the resolution to a kept line (a catalog blend or ``min_separation``);
        ``outside``: its expected position is outside the usable range.
    reason : str
        Human-readable explanation.
    amplitude, centroid, width : float
        Mean-spectrum estimates (data units, Angstrom, Angstrom sigma); NaN if not fitted.
    snr : float
        Peak amplitude over the noise of the mean spectrum at the line (see
        :func:`guess_model`); NaN if not fitted.
    snr_pixel : float
        Peak amplitude over the mean per-pixel ``error`` at the line (typical single-pixel
        peak S/N); NaN without ``error``.
    merged_into : str or None
        The kept line a ``merged`` line was folded into.
    """

    name: str
    ion: str
    rest_wavelength: float
    segment: int = 0
    status: str = "kept"
    reason: str = ""
    amplitude: float = math.nan
    centroid: float = math.nan
    width: float = math.nan
    snr: float = math.nan
    snr_pixel: float = math.nan
    merged_into: str | None = None


@dataclass
class GuessReport:
    """Record of the choices :func:`guess_model` made for one window.

    Attributes
    ----------
    window : str
        Window name (the DataArray name or its ``EXTNAME``).
    usable_range : list of (float, float)
        Usable wavelength range of each segment (Angstrom).
    offset : list of float
        Estimated wavelength offset (observed minus rest, Angstrom) of each segment, from
        the mean-spectrum fit with every centroid at ``rest + offset``.
    anchor : list of str or None
        Per segment, the brightest line of the catalog window that matches it (which
        settles equally good offset solutions), else the brightest fitted line.
    offset_at_limit : list of bool
        True where the offset estimate hit ``+-max_offset`` (unreliable).
    background : list of list of float
        Mean-spectrum background polynomial coefficients per segment (degree 0 first,
        centred on the segment middle), in data units.
    noise : float
        Noise level of the mean spectrum (data units; median over the usable samples, with
        the whole fit's reduced chi-square); each line's ``snr`` uses the local equivalent.
    lines : list of LineGuess
        One entry per catalog line considered.
    unexplained : list of [float, float]
        Emission the model does not account for: up to five ``[wavelength, excess]`` pairs
        (Angstrom, data units), the maxima of runs of two or more samples where the
        mean-spectrum residual exceeds ``max(min_snr, 3)`` times the random noise of the mean
        spectrum (from ``error``, else from sample-to-sample differences). Not added to the
        model.
    settings : dict
        The keyword arguments used.
    """

    window: str
    usable_range: list = field(default_factory=list)
    offset: list = field(default_factory=list)
    anchor: list = field(default_factory=list)
    offset_at_limit: list = field(default_factory=list)
    background: list = field(default_factory=list)
    noise: float = math.nan
    lines: list = field(default_factory=list)
    unexplained: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    @property
    def kept(self) -> list[str]:
        """Names of the lines in the model."""
        return [g.name for g in self.lines if g.status == "kept"]

    @property
    def dropped(self) -> list[str]:
        """Names of lines left out (dropped, merged or outside)."""
        return [g.name for g in self.lines if g.status != "kept"]

    def __getitem__(self, name: str) -> LineGuess:
        for g in self.lines:
            if g.name == name:
                return g
        raise KeyError(f"line {name!r} was not considered for window {self.window!r}")

    def to_dict(self) -> dict:
        """JSON-able form (for provenance attributes)."""
        from dataclasses import asdict

        return asdict(self)

    def __str__(self) -> str:
        out = [f"guess for window {self.window!r}"]
        for s, rng in enumerate(self.usable_range):
            lim = " (at the search limit!)" if self.offset_at_limit[s] else ""
            out.append(
                f"  segment {s}: usable {rng[0]:.3f}-{rng[1]:.3f} A, offset "
                f"{self.offset[s]:+.3f} A{lim} anchored on {self.anchor[s]}, background "
                + ", ".join(f"{b:.4g}" for b in self.background[s])
            )
        out.append(f"  mean-spectrum noise {self.noise:.4g}")
        for g in self.lines:
            num = (
                f"amp {g.amplitude:.4g} cen {g.centroid:.3f} sigma {g.width:.3f} "
                f"S/N {g.snr:.1f} (pixel {g.snr_pixel:.1f})"
                if math.isfinite(g.amplitude)
                else ""
            )
            out.append(f"  {g.status:8s} {g.name:14s} {num}  {g.reason}".rstrip())
        if self.unexplained:
            out.append(
                "  unexplained emission (not in the model) near "
                + ", ".join(f"{w:.2f} A (+{e:.3g})" for w, e in self.unexplained)
            )
        return "\n".join(out)


# ---------------------------------------------------------------------------- data reduction
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
            f"mean_spectrum: {_name(radiance)!r} has no 'wavelength' dimension "
            f"(dims {radiance.dims})"
        )
    other = [d for d in radiance.dims if d != "wavelength"]
    data = radiance.astype(np.float64)
    valid = data.notnull()
    count = valid.sum(other)
    total = data.fillna(0.0).sum(other)
    out = xr.Dataset({"count": count, "total": total})
    if error is not None:
        err = error.astype(np.float64).where(valid & np.isfinite(error))
        out["error_total"] = err.fillna(0.0).sum(other)
        out["error_count"] = err.notnull().sum(other)
    n = int(np.prod([radiance.sizes[d] for d in other])) if other else 1
    safe = count.where(count > 0)
    ds = xr.Dataset({"mean": out.total / safe, "count": count})
    ds["mean"].attrs["units"] = radiance.attrs.get("units", "")
    ds["count"].attrs["units"] = "1"
    if error is not None:
        ds["error_mean"] = out.error_total / out.error_count.where(out.error_count > 0)
        ds["error_mean"].attrs["units"] = radiance.attrs.get("units", "")
    ds.attrs["n_spectra"] = n
    return ds


def _name(da) -> str:
    return str(da.attrs.get("EXTNAME") or da.name or "window")


# ---------------------------------------------------------------------------- helpers
def _gauss(x, amp, cen, wid):
    return amp * np.exp(-0.5 * ((x - cen) / wid) ** 2)


def _segments_of(radiance) -> tuple[np.ndarray, list]:
    """Per-sample segment index and the segment labels (one segment unless fused)."""
    n = radiance.sizes["wavelength"]
    if "segment" in radiance.coords and radiance["segment"].dims == ("wavelength",):
        values = np.asarray(radiance["segment"].values)
        labels = list(dict.fromkeys(values.tolist()))
        index = np.array([labels.index(v) for v in values.tolist()], dtype=int)
        return index, labels
    return np.zeros(n, dtype=int), [None]


def _usable(mask: np.ndarray) -> tuple[int, int] | None:
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return None
    return int(idx[0]), int(idx[-1])


def _design(x, seg_of, seg_ref, centres, segs, width, degree, n_seg):
    """Columns: one unit Gaussian per line, then background monomials per segment."""
    cols = [
        np.exp(-0.5 * ((x - c) / width) ** 2) * (seg_of == sg)
        for c, sg in zip(centres, segs, strict=True)
    ]
    dx = x - seg_ref[seg_of]
    for sg in range(n_seg):
        for k in range(degree + 1):
            cols.append(np.where(seg_of == sg, dx**k, 0.0))
    return np.array(cols).T


def _offset_profile(x, y, sigma, rest, anchor, width, degree, max_offset, step, span):
    """Wavelength offset of one segment from the chi2 profile of the catalog template.

    For each trial offset in ``[-max_offset, max_offset]`` the template -- Gaussians of
    sigma ``width`` at ``rest + offset`` with non-negative fitted heights, on a polynomial
    background -- is fitted by linear least squares (lines whose shifted position leaves
    ``span`` do not contribute). This is a cross-correlation of the spectrum with the
    catalog template in which the line heights come from the data. Local minima of chi2
    within ``_EQUIVALENT_CHI2`` (relative) of the best are equally good explanations of
    the data (typically one bright peak that either of two catalog lines could be); among
    them the one giving the ``anchor`` line (index, or None) the largest share of the
    flux wins. Returns (offset, at_limit).
    """
    from scipy.optimize import lsq_linear

    nl = len(rest)
    seg = np.zeros(nl, dtype=int)
    seg_of = np.zeros(x.size, dtype=int)
    ref = np.array([0.5 * (span[0] + span[1])])
    deltas = np.arange(-max_offset, max_offset + 0.5 * step, step)
    lo = np.r_[np.zeros(nl), np.full(degree + 1, -np.inf)]
    hi = np.full(lo.size, np.inf)
    chi2 = np.empty(deltas.size)
    share = np.zeros(deltas.size)
    yw = y / sigma
    for k, d in enumerate(deltas):
        a = _design(x, seg_of, ref, rest + d, seg, width, degree, 1)
        outside = (rest + d < span[0]) | (rest + d > span[1])
        a[:, :nl][:, outside] = 0.0
        res = lsq_linear(a / sigma[:, None], yw, bounds=(lo, hi), method="bvls")
        chi2[k] = np.sum((a @ res.x / sigma - yw) ** 2)
        amps = res.x[:nl]
        if anchor is not None and amps.max() > 0:
            share[k] = amps[anchor] / amps.max()
    interior = np.r_[True, chi2[1:] <= chi2[:-1]] & np.r_[chi2[:-1] <= chi2[1:], True]
    minima = np.flatnonzero(interior & (chi2 <= chi2.min() * (1.0 + _EQUIVALENT_CHI2)))
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


# ---------------------------------------------------------------------------- mean-spectrum fit
def _fit_mean(x, y, sigma, seg_of, seg_ref, lines, degree, width_lo, width_hi, tol, tied):
    """Least-squares fit of the mean spectrum.

    ``lines``: dicts with ``rest``, ``segment``, ``amplitude``, ``width``, ``centroid`` and
    ``span`` (rest wavelengths of the merged members relative to ``rest``: min, max).
    ``tied``: centroids are ``rest + offset[segment]`` (+ a shift within ``span``) with each
    segment's offset within ``tol`` of ``centroid - rest`` of its lines; otherwise each
    centroid is free within ``tol`` of its ``centroid``. Returns a dict with per-line
    ``amplitude``, ``centroid``, ``width``, per-segment ``offset`` (tied) and
    ``background``, and the ``model``.
    """
    from scipy.optimize import least_squares

    n_seg = len(seg_ref)
    nl = len(lines)
    nb = degree + 1
    x0, lo, hi = [], [], []
    for ln in lines:
        x0 += [ln["amplitude"], ln["width"]]
        lo += [0.0, width_lo]
        hi += [np.inf, width_hi]
    if tied:
        off0 = np.zeros(n_seg)
        for ln in lines:
            off0[ln["segment"]] = ln["centroid"] - ln["rest"]
        x0 += list(off0)
        lo += list(off0 - tol)
        hi += list(off0 + tol)
        # a component standing for merged lines may sit anywhere between its members
        spread = [i for i, ln in enumerate(lines) if ln["span"][1] > ln["span"][0]]
        for i in spread:
            a, b = lines[i]["span"]
            x0.append(min(max(0.0, a), b))
            lo.append(a)
            hi.append(b)
    else:
        for ln in lines:
            x0.append(ln["centroid"])
            lo.append(ln["centroid"] - tol)
            hi.append(ln["centroid"] + tol)
    n_nonlin = len(x0)
    for sg in range(n_seg):
        in_s = seg_of == sg
        x0 += [float(np.percentile(y[in_s], 10.0)) if in_s.any() else 0.0] + [0.0] * degree
        lo += [-np.inf] * nb
        hi += [np.inf] * nb
    lo, hi = np.array(lo), np.array(hi)
    x0 = np.minimum(np.maximum(np.array(x0, float), lo), hi)
    dx = x - seg_ref[seg_of]
    rest = np.array([ln["rest"] for ln in lines])
    segs = np.array([ln["segment"] for ln in lines], dtype=int)

    def centres(p):
        if tied:
            cen = rest + p[2 * nl : 2 * nl + n_seg][segs]
            cen[spread] += p[2 * nl + n_seg : n_nonlin]
            return cen
        return p[2 * nl : 3 * nl]

    def model(p):
        out = np.zeros_like(x)
        cen = centres(p)
        for i in range(nl):
            out += _gauss(x, p[2 * i], cen[i], p[2 * i + 1]) * (seg_of == segs[i])
        for sg in range(n_seg):
            coef = p[n_nonlin + sg * nb : n_nonlin + (sg + 1) * nb]
            in_s = seg_of == sg
            out[in_s] += np.polynomial.polynomial.polyval(dx[in_s], coef)
        return out

    res = least_squares(
        lambda p: (model(p) - y) / sigma, x0, bounds=(lo, hi), x_scale="jac", max_nfev=4000
    )
    p = res.x
    return {
        "amplitude": p[0 : 2 * nl : 2].copy(),
        "width": p[1 : 2 * nl : 2].copy(),
        "centroid": centres(p).copy(),
        "offset": p[2 * nl : 2 * nl + n_seg].copy() if tied else None,
        "background": [
            p[n_nonlin + sg * nb : n_nonlin + (sg + 1) * nb].tolist() for sg in range(n_seg)
        ],
        "model": model(p),
    }


def _noise(resid, sigma, dof):
    """Noise of the mean spectrum per sample: ``sigma`` scaled by sqrt(reduced chi2) when
    that exceeds 1, or the RMS residual without ``sigma``. ``dof`` None: residual count."""
    dof = max(resid.size if dof is None else dof, 1)
    if sigma is not None:
        chi2 = float(np.sum((resid / sigma) ** 2)) / dof
        return sigma * max(1.0, math.sqrt(chi2))
    return np.full(resid.shape, max(math.sqrt(float(np.sum(resid**2)) / dof), 1e-300))


def _unexplained(x, resid, sigma, k):
    """Positive residual runs (>= 2 samples) above ``k`` times the random noise of the mean
    spectrum: ``sigma`` when known, else a robust estimate from sample-to-sample differences.
    Returns up to five ``[wavelength of the maximum, excess]`` pairs, largest excess first."""
    if sigma is None:
        d = np.diff(resid)
        mad = np.median(np.abs(d - np.median(d))) if d.size else 0.0
        sigma = np.full_like(resid, max(1.4826 * mad / math.sqrt(2.0), 1e-300))
    hot = resid > k * sigma
    idx = np.flatnonzero(hot)
    if idx.size == 0:
        return []
    runs = [r for r in np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1) if r.size >= 2]
    peaks = [[float(x[r[np.argmax(resid[r])]]), float(resid[r].max())] for r in runs]
    peaks.sort(key=lambda p: -p[1])
    return peaks[:5]


def _segment_bounds(wave, seg_of, n_seg):
    """(wmin, wmax) of each segment's samples (Angstrom), for ``LineModel(segments=...)``."""
    return [
        (float(wave[seg_of == sg].min()), float(wave[seg_of == sg].max())) for sg in range(n_seg)
    ]


# ---------------------------------------------------------------------------- public API
def guess_model(
    radiance: xr.DataArray,
    catalog: LineCatalog | None = None,
    *,
    error: xr.DataArray | None = None,
    max_offset: float = 0.6,
    width: float = 0.4,
    min_snr: float = 5.0,
    min_separation: float | None = None,
    merge_blends: bool = True,
    refine_range: float = 0.15,
    centroid_range: float = 0.4,
    width_bounds: tuple[float, float] | None = None,
    amplitude_bounds: tuple[float | None, float | None] = (None, None),
    background_degree: int = 1,
    min_valid_fraction: float = 0.8,
    return_report: bool = False,
):
    """Build an initial LineModel for one window from the catalog and its mean spectrum.

    **This function reads data**: it computes the mean spectrum of ``radiance`` (and the mean
    of ``error`` over the same samples) in one dask computation, and nothing else; the rest
    works on those 1-D arrays.

    Steps, per wavelength segment (one, unless the window was fused):

    1. *Usable range*: from the first to the last wavelength sample that is valid in at
       least ``min_valid_fraction`` of the spectra holding any data (NaN-padded edges and
       off-slit pixels are excluded).
    2. *Candidates*: catalog lines whose rest wavelength lies within ``max_offset`` of the
       usable range. Members of a catalog blend are merged into its brightest line
       (``merge_blends``), and of two lines closer than ``min_separation`` the brighter one
       in the data (or the one a shared catalog window calls brightest) is kept. A merged
       component keeps the name of the line kept; its centroid may lie anywhere between
       its members' (shifted) rest wavelengths.
    3. *Offset* (observed minus rest wavelength): the shift, searched over
       ``+-max_offset``, that best fits the mean spectrum with the catalog template --
       Gaussians of sigma ``width`` at the shifted rest wavelengths with non-negative fitted
       heights on a polynomial background. This is a cross-correlation with the catalog
       template in which the line heights come from the data, so the brightest line
       dominates it. When several offsets explain the data equally well (template chi2
       within 5% of the best, e.g. a single bright peak that N III 764.35 or N IV 765.15
       could be), the one where the *anchor* -- the brightest line of the catalog window
       sharing most lines with the candidates -- carries the most flux is chosen. Lines
       whose shifted position falls outside the usable range are left out ("outside").
    4. *Mean-spectrum fit*, first with every centroid at ``rest + offset`` (one free
       offset per segment), then with each centroid free within ``refine_range`` of it;
       widths within ``width_bounds`` times ``width``; amplitudes >= 0. After each fit,
       lines whose S/N is below ``min_snr`` are dropped and the fit repeated.

    The S/N of a line is its fitted peak amplitude over the noise of the mean spectrum
    within 3 widths of its centroid: the mean ``error`` over the square root of the number
    of valid spectra, scaled up by the square root of the local reduced chi-square when that
    exceeds 1 (model mismatch counts as noise); without ``error``, the local RMS residual of
    the fit. It measures whether the data show the line at all. The typical single-pixel peak S/N (amplitude
    over mean ``error``) is recorded as ``snr_pixel``.

    The model's bounds, for the per-pixel fits: centroid within ``centroid_range`` of its
    guess, width within ``width_bounds`` times its guess, amplitude within
    ``amplitude_bounds`` (default unbounded; the mean-spectrum fit itself keeps amplitudes
    >= 0). Background coefficients are unbounded (their mean-spectrum values
    are in the report: `LineModel` keeps no background initial values).

    Parameters
    ----------
    radiance : xarray.DataArray
        A window: dims include ``wavelength`` (coordinate in Angstrom); all other dims are
        averaged. A ``segment`` coordinate along ``wavelength`` (from
        :func:`~saffron_xr.fuse_windows`) gives each segment its own offset and background.
    catalog : LineCatalog, optional
        Default :meth:`LineCatalog.default`.
    error : xarray.DataArray, optional
        1-sigma errors of ``radiance`` (same units).
    max_offset : float, default 0.6
        Largest wavelength offset searched, Angstrom.
    width : float, default 0.4
        Typical SPICE line sigma (Angstrom, instrumental broadening included): the template
        width and the scale of the width bounds of the mean-spectrum fit.
    min_snr : float, default 5.0
        Mean-spectrum S/N below which a line is dropped (0 keeps every line that fits).
    min_separation : float, optional
        Lines closer than this (Angstrom) are fitted as one. Default: ``width``.
    merge_blends : bool, default True
        Merge the members of the catalog's blend groups into their brightest line.
    refine_range : float, default 0.15
        How far (Angstrom) a centroid may move from ``rest + offset`` in the second
        mean-spectrum fit (lines of different ions have different Doppler shifts).
    centroid_range : float, default 0.4
        Model bound: centroid guess +- this (Angstrom; ~155 km/s at 770 Angstrom).
    width_bounds : (float, float), optional
        Model width bounds as factors of each line's guessed width (and of ``width`` in the
        mean-spectrum fit), e.g. ``(0.5, 3.0)``. Default (None): *physical* bounds. The
        lower bound is `MIN_WIDTH_FACTOR` (0.8) times the narrowest width a line can have,
        the quadrature sum of the SPICE instrumental width (detector and slit from the
        ``DETECTOR``/``SLIT_WID`` attributes or the wavelength; values and source in
        ``saffron_xr.derive.INSTRUMENTAL_FWHM``) and the ion's thermal width at its
        catalog formation temperature. The factor allows for the variation of the
        instrumental width along the slit and in time that a single published value does
        not describe: the narrowest significant C III 977 lines of a real 2024 raster have
        FWHM 0.78 Angstrom at their 5th percentile, 0.86 times the LW value. The upper
        bound is the larger of 3 times the guessed width and 3 times that narrowest width
        (FWHM ~2.7 Angstrom, beyond any SPICE line but a blend). Without these bounds,
        faint pixels fit noise with unphysically narrow lines whose amplitude x width is
        biased high.
    amplitude_bounds : (float or None, float or None), default (None, None)
        Model amplitude bounds (data units); None for no bound. Unbounded by default: in
        pixels where a line is faint its amplitude may come out negative, consistent with
        zero within its error, instead of sticking to a zero bound (where its width and
        centroid are undefined and the fit fails as singular); averages and ratios of
        amplitudes are then unbiased. Pass ``(0.0, None)`` for non-negative amplitudes.
    background_degree : int, default 1
        Degree of the background polynomial (per segment); the batch runner's default too.
    min_valid_fraction : float, default 0.8
        Fraction of the spectra (of those with any data) a wavelength sample must be valid
        in to be usable. Near NaN-padded edges that drift along the slit, the mean of the
        remaining spectra is biased towards their rows; a high fraction keeps it out.
    return_report : bool, default False
        Also return the :class:`GuessReport` of every choice made.

    Returns
    -------
    LineModel or (LineModel, GuessReport)
        Lines in rest-wavelength order named as in the catalog, initial values from the mean
        spectrum, bounds as above; ``segments`` (wavelength range of each) for fused windows.

    Raises
    ------
    ValueError
        No ``wavelength`` dimension, no usable sample, no catalog line in the usable range,
        or no line reaching ``min_snr`` (the message names the best one).

    Examples
    --------
    >>> import saffron_xr
    >>> tree = saffron_xr.open_spice(saffron_xr.ne8_window_path())
    >>> model = guess_model(tree["Ne_VIII_770_Peak_data"].radiance)
    >>> model.lines
    ['ne_8 770.42']
    """
    from ..fit.model import LineModel

    if catalog is None:
        catalog = LineCatalog.default()
    if not isinstance(catalog, LineCatalog):
        raise TypeError(
            f"guess_model: catalog must be a LineCatalog, got {type(catalog).__name__}"
        )
    if min_separation is None:
        min_separation = width
    physical_widths = width_bounds is None
    lo_f, hi_f = (0.5, 3.0) if physical_widths else width_bounds
    if not 0 < lo_f < 1 < hi_f:
        raise ValueError(
            f"guess_model: width_bounds must satisfy 0 < lo < 1 < hi, got {width_bounds}"
        )
    for key, val in (("max_offset", max_offset), ("width", width),
                     ("refine_range", refine_range), ("centroid_range", centroid_range)):  # fmt: skip
        if not (math.isfinite(val) and val > 0):
            raise ValueError(f"guess_model: {key} must be finite and > 0, got {val}")
    window = _name(radiance)
    settings = dict(
        max_offset=max_offset, width=width, min_snr=min_snr, min_separation=min_separation,
        merge_blends=merge_blends, refine_range=refine_range, centroid_range=centroid_range,
        width_bounds=None if physical_widths else list(width_bounds),
        amplitude_bounds=list(amplitude_bounds),
        background_degree=background_degree, min_valid_fraction=min_valid_fraction,
    )  # fmt: skip

    if "wavelength" not in radiance.dims:
        raise ValueError(
            f"guess_model: {window!r} has no 'wavelength' dimension (dims {radiance.dims})"
        )
    if "wavelength" not in radiance.coords:
        raise ValueError(f"guess_model: {window!r} has no 'wavelength' coordinate (Angstrom)")
    wunit = str(radiance["wavelength"].attrs.get("units", "Angstrom")).strip()
    if not is_angstrom(wunit):
        raise ValueError(
            f"guess_model: the wavelength coordinate of {window!r} is in {wunit!r}; "
            "convert it to Angstrom"
        )

    # ---- the one data reduction
    ms = mean_spectrum(radiance, error)
    arrays = [ms["mean"].data, ms["count"].data]
    if error is not None:
        arrays.append(ms["error_mean"].data)
    computed = dask.compute(*arrays)
    spec = np.asarray(computed[0], dtype=float)
    count = np.asarray(computed[1], dtype=float)
    err_mean = np.asarray(computed[2], dtype=float) if error is not None else None
    wave = np.asarray(radiance["wavelength"].values, dtype=float)
    seg_of, seg_labels = _segments_of(radiance)
    order = np.argsort(wave, kind="stable")
    wave, spec, count, seg_of = wave[order], spec[order], count[order], seg_of[order]
    if err_mean is not None:
        err_mean = err_mean[order]
    n_seg = len(seg_labels)
    step = float(np.median(np.diff(wave))) if wave.size > 1 else width

    # ---- usable range and candidates, per segment
    report = GuessReport(window=window, settings=settings)
    n_with_data = max(float(np.max(count)) if count.size else 0.0, 1.0)
    ok = (count / n_with_data >= min_valid_fraction) & np.isfinite(spec)
    usable = np.zeros(wave.size, dtype=bool)
    spans, cands = [], []
    for sg in range(n_seg):
        span = _usable(ok & (seg_of == sg))
        if span is None:
            where = f" segment {seg_labels[sg]!r}" if seg_labels[sg] is not None else ""
            raise ValueError(
                f"guess_model: window {window!r}{where} has no wavelength sample valid in "
                f">= {min_valid_fraction:.0%} of its spectra"
            )
        i0, i1 = span
        usable[i0 : i1 + 1] |= seg_of[i0 : i1 + 1] == sg
        w0, w1 = float(wave[i0]), float(wave[i1])
        spans.append((w0, w1))
        for ln in catalog.in_range(w0 - max_offset, w1 + max_offset):
            g = LineGuess(ln.name, ln.ion, ln.rest_wavelength, segment=sg)
            report.lines.append(g)
            cands.append({"guess": g, "rest": ln.rest_wavelength, "segment": sg,
                          "span": (0.0, 0.0)})  # fmt: skip
    report.usable_range = [list(sp) for sp in spans]
    if not cands:
        raise ValueError(
            f"guess_model: no catalog line within {max_offset} Angstrom of the usable range "
            f"of window {window!r} ("
            + ", ".join(f"{a:.2f}-{b:.2f}" for a, b in spans)
            + " Angstrom)"
        )
    fit = usable & ok
    x, y, sx = wave[fit], spec[fit], seg_of[fit]
    seg_ref = np.array([0.5 * (a + b) for a, b in spans])
    if err_mean is not None:
        sigma = err_mean[fit] / np.sqrt(np.maximum(count[fit], 1.0))
        good = np.isfinite(sigma) & (sigma > 0)
        sigma = np.where(good, sigma, np.median(sigma[good]) if good.any() else 1.0)
    else:
        # relative noise of a mean of ``count`` spectra
        sigma = np.sqrt(n_with_data / np.maximum(count[fit], 1.0))

    def merge(loser, winner, reason):
        loser["guess"].status = "merged"
        loser["guess"].merged_into = winner["guess"].name
        loser["guess"].reason = reason
        d0 = loser["rest"] + loser["span"][0] - winner["rest"]
        d1 = loser["rest"] + loser["span"][1] - winner["rest"]
        winner["span"] = (min(winner["span"][0], d0), max(winner["span"][1], d1))

    # ---- catalog blends and close lines
    if merge_blends:
        for w in catalog.windows.values():
            if not w.blend:
                continue
            for sg in range(n_seg):
                members = [c for c in cands if c["guess"].name in w.lines and c["segment"] == sg]
                if len(members) < 2:
                    continue
                names = [c["guess"].name for c in members]
                keep = members[names.index(w.brightest)] if w.brightest in names else members[0]
                for c in members:
                    if c is not keep and c["guess"].status == "kept":
                        merge(c, keep, f"catalog blend {w.name!r}: fitted as {keep['guess'].name}")
        cands = [c for c in cands if c["guess"].status == "kept"]

    def data_peak(c):
        near = (sx == c["segment"]) & (np.abs(x - c["rest"]) <= max_offset)
        return float(np.max(y[near])) if near.any() else -np.inf

    def prefer(a, b) -> bool:
        na, nb = a["guess"].name, b["guess"].name
        for w in catalog.windows_of(na, blend=False):
            if nb in w.lines and w.brightest in (na, nb):
                return w.brightest == na
        return data_peak(a) >= data_peak(b)

    cands.sort(key=lambda c: (c["segment"], c["rest"]))
    merged_any = True
    while merged_any:
        merged_any = False
        for a, b in zip(cands[:-1], cands[1:], strict=True):
            if a["segment"] == b["segment"] and b["rest"] - a["rest"] < min_separation:
                win, lose = (a, b) if prefer(a, b) else (b, a)
                merge(lose, win, f"{b['rest'] - a['rest']:.2f} A from {win['guess'].name} "
                      f"(< min_separation {min_separation} A): fitted as one")  # fmt: skip
                cands.remove(lose)
                merged_any = True
                break

    # ---- offset per segment
    offsets = np.zeros(n_seg)
    at_limit = [False] * n_seg
    anchors: list[str | None] = [None] * n_seg
    for sg in range(n_seg):
        mine = [c for c in cands if c["segment"] == sg]
        in_s = sx == sg
        if not mine:
            continue
        rest = np.array([c["rest"] for c in mine])
        names = [c["guess"].name for c in mine]
        anchor = _anchor_of(catalog, names)
        anchors[sg] = anchor
        # a constant background in the offset search: a sloped one can trade a line at the
        # window edge for the slope and pick the wrong catalog line as the anchor
        offsets[sg], at_limit[sg] = _offset_profile(
            x[in_s], y[in_s], sigma[in_s], rest, None if anchor is None else names.index(anchor),
            width, 0, max_offset, min(0.01, step / 4.0), spans[sg],
        )  # fmt: skip
    for c in list(cands):
        sg = c["segment"]
        pos = c["rest"] + offsets[sg]
        w0, w1 = spans[sg]
        if not w0 <= pos <= w1:
            c["guess"].status = "outside"
            c[
                "guess"
            ].reason = f"expected at {pos:.2f} A, outside the usable range {w0:.2f}-{w1:.2f} A"
            cands.remove(c)
    if not cands:
        raise ValueError(
            f"guess_model: no catalog line falls inside the usable range of window {window!r} "
            f"after the offset estimate ({', '.join(f'{o:+.2f}' for o in offsets)} Angstrom)"
        )

    # ---- mean-spectrum fits: tied centroids, then free; drop weak lines after each
    base = float(np.percentile(y, 10.0))
    for c in cands:
        c["centroid"] = c["rest"] + offsets[c["segment"]]
        near = (sx == c["segment"]) & (np.abs(x - c["centroid"]) <= max(width, step))
        peak = float(np.max(y[near])) if near.any() else base
        c["amplitude"] = max(peak - base, 1e-3 * max(float(np.max(y)) - base, 1e-30))
        c["width"] = width

    def fit_and_judge(active, tied):
        while True:
            res = _fit_mean(x, y, sigma, sx, seg_ref, active, background_degree,
                            lo_f * width, hi_f * width,
                            refine_range, tied)  # fmt: skip
            resid = y - res["model"]
            n_par = 3 * len(active) + n_seg * (background_degree + 1)
            noise = _noise(resid, sigma if err_mean is not None else None, y.size - n_par)
            weak = []
            for i, c in enumerate(active):
                g = c["guess"]
                g.amplitude = float(res["amplitude"][i])
                g.centroid = float(res["centroid"][i])
                g.width = float(res["width"][i])
                local = np.abs(x - g.centroid) <= 3.0 * max(g.width, width)
                if local.sum() < 5:
                    local = np.argsort(np.abs(x - g.centroid))[:5]
                g.snr = float(g.amplitude / _noise(resid[local], None if err_mean is None
                                                   else sigma[local], None).mean())  # fmt: skip
                if err_mean is not None:
                    g.snr_pixel = float(g.amplitude / np.interp(g.centroid, x, err_mean[fit]))
                if not g.snr >= min_snr:
                    weak.append(c)
            if not weak:
                return active, res, resid, noise
            if len(weak) == len(active):
                best = max(active, key=lambda c: c["guess"].snr)["guess"]
                raise ValueError(
                    f"guess_model: no line of window {window!r} reaches S/N {min_snr} in the "
                    f"mean spectrum (best: {best.name}, S/N {best.snr:.2f}); lower min_snr "
                    "to fit it anyway"
                )
            for c in weak:
                c["guess"].status = "dropped"
                c["guess"].reason = (
                    f"mean-spectrum S/N {c['guess'].snr:.2f} < min_snr {min_snr}"
                    + ("" if tied else " (after refining centroids)")
                )
            active = [c for c in active if c["guess"].status == "kept"]
            for c in active:  # restart from the current estimates
                c["amplitude"], c["width"] = c["guess"].amplitude, c["guess"].width

    # ties keep lines in their catalog positions while the offset settles (a weak line
    # cannot wander onto a neighbour); the second fit lets each line find its own centroid
    active, res, _, _ = fit_and_judge(cands, tied=True)
    for i, c in enumerate(active):
        c["amplitude"], c["width"] = float(res["amplitude"][i]), float(res["width"][i])
        c["centroid"] = float(res["centroid"][i])
    for sg in range(n_seg):
        if any(c["segment"] == sg for c in active):
            offsets[sg] = float(res["offset"][sg])
    active, res, resid, noise = fit_and_judge(active, tied=False)

    report.offset = [float(o) for o in offsets]
    report.offset_at_limit = at_limit
    report.anchor = []
    for sg in range(n_seg):
        mine = [c["guess"] for c in active if c["segment"] == sg]
        brightest = max(mine, key=lambda g: g.amplitude).name if mine else None
        report.anchor.append(anchors[sg] or brightest)
    report.background = res["background"]
    report.noise = float(np.median(noise))
    report.unexplained = _unexplained(
        x, resid, sigma if err_mean is not None else None, max(min_snr, 3.0)
    )
    for c in active:
        c["guess"].reason = "kept"
    report.lines.sort(key=lambda g: (g.segment, g.rest_wavelength))

    # ---- the model
    amp_lo, amp_hi = amplitude_bounds
    segments = _segment_bounds(wave, seg_of, n_seg) if n_seg > 1 else None
    model = LineModel(background_degree=background_degree, segments=segments)
    for c in sorted(active, key=lambda c: c["rest"]):
        g = c["guess"]
        amp = g.amplitude if amp_hi is None else min(g.amplitude, amp_hi)
        amp = amp if amp_lo is None else max(amp, amp_lo)
        if physical_widths:
            narrowest = _narrowest_width(catalog, g, radiance.attrs)
            w_lo = MIN_WIDTH_FACTOR * narrowest
            w_hi = max(hi_f * g.width, 3.0 * narrowest)
        else:
            w_lo, w_hi = lo_f * g.width, hi_f * g.width
        start_width = min(max(g.width, w_lo * 1.05), w_hi)
        model.add_line(
            g.name,
            ion=g.ion,
            rest_wavelength=g.rest_wavelength,
            amplitude=amp,
            centroid=g.centroid,
            width=start_width,
            bounds={
                "amplitude": (amp_lo, amp_hi),
                "centroid": (g.centroid - centroid_range, g.centroid + centroid_range),
                "width": (w_lo, w_hi),
            },
        )
    return (model, report) if return_report else model


#: The default lower width bound is this factor times the narrowest physical width (see
#: `guess_model`, ``width_bounds``).
MIN_WIDTH_FACTOR = 0.8
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
_SW_LW_BOUNDARY = 850.0  # Angstrom: SW covers 704-790, LW 973-1049


def _narrowest_width(catalog: LineCatalog, guess: LineGuess, attrs) -> float:
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


def guess_models(
    tree: xr.DataTree,
    catalog: LineCatalog | None = None,
    *,
    windows=None,
    variable: str = "radiance",
    error: str | None = "error",
    errors: str = "skip",
    max_offset: float = 0.6,
    width: float = 0.4,
    min_snr: float = 5.0,
    min_separation: float | None = None,
    merge_blends: bool = True,
    refine_range: float = 0.15,
    centroid_range: float = 0.4,
    width_bounds: tuple[float, float] | None = None,
    amplitude_bounds: tuple[float | None, float | None] = (None, None),
    background_degree: int = 1,
    min_valid_fraction: float = 0.8,
) -> dict:
    """:func:`guess_model` for every window of a DataTree.

    **Reads data**: one mean spectrum per window (see :func:`guess_model`), each its own
    dask computation.

    Parameters
    ----------
    tree : xarray.DataTree
        One node per window, each with a ``radiance`` variable (as from
        :func:`~saffron_xr.open_spice`).
    catalog : LineCatalog, optional
        Default :meth:`LineCatalog.default`.
    windows : list of str, optional
        Node names to use (default: every node whose ``variable`` has a ``wavelength`` dim).
    variable : str, default "radiance"
        The data variable to model.
    error : str or None, default "error"
        Name of the 1-sigma error variable, used when the node has it.
    errors : {"skip", "raise"}, default "skip"
        What to do with a window that has no usable line: leave it out of the result (and
        log why at INFO level on the ``saffron_xr.catalog.guess`` logger) or raise.
    max_offset, width, min_snr, min_separation, merge_blends, refine_range, centroid_range, \
width_bounds, amplitude_bounds, background_degree, min_valid_fraction
        As for :func:`guess_model`.

    Returns
    -------
    dict
        ``{node name: LineModel}``; windows without a usable line are absent.
    """
    kwargs = dict(
        max_offset=max_offset, width=width, min_snr=min_snr, min_separation=min_separation,
        merge_blends=merge_blends, refine_range=refine_range, centroid_range=centroid_range,
        width_bounds=width_bounds, amplitude_bounds=amplitude_bounds,
        background_degree=background_degree, min_valid_fraction=min_valid_fraction,
    )  # fmt: skip
    if errors not in ("skip", "raise"):
        raise ValueError(f"guess_models: errors must be 'skip' or 'raise', got {errors!r}")
    if catalog is None:
        catalog = LineCatalog.default()
    nodes = {}
    for node in tree.subtree:
        if variable in node.ds.data_vars and "wavelength" in node.ds[variable].dims:
            nodes[node.name if node.parent is not None else "/"] = node
    if windows is not None:
        missing = [w for w in windows if w not in nodes]
        if missing:
            raise KeyError(
                f"guess_models: window(s) {missing} not in the tree; windows are {list(nodes)}"
            )
        nodes = {w: nodes[w] for w in windows}
    out = {}
    for name, node in nodes.items():
        ds = node.ds
        err = ds[error] if error is not None and error in ds.data_vars else None
        try:
            out[name] = guess_model(ds[variable], catalog, error=err, **kwargs)
        except (ValueError, CatalogError) as exc:
            if errors == "raise":
                raise
            logger.info("guess_models: window %r skipped: %s", name, exc)
    return out
