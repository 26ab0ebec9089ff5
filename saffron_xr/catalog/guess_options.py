"""GuessOptions: the settings of :func:`~saffron_xr.guess_model`, written once.

:func:`~saffron_xr.guess_model`, :func:`~saffron_xr.catalog.guess_models` and their two
accessors take ``options=GuessOptions(...)`` and/or the same settings as keywords (keywords
override the options' fields; an unknown name raises `TypeError` naming it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

__all__ = ["GuessOptions"]

#: Width-bound factors of the mean-spectrum fit (times ``width``) when the model's width
#: bounds are physical (``width_bounds=None``).
DEFAULT_FIT_WIDTH_FACTORS = (0.5, 3.0)


@dataclass(frozen=True)
class GuessOptions:
    """Settings of the initial-model guess (see :func:`~saffron_xr.guess_model`).

    Parameters
    ----------
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
        mean-spectrum fit (lines of different ions have different Doppler shifts); also how
        far the offset may move from its template estimate in the first.
    centroid_range : float, default 0.4
        Model bound: centroid guess +- this (Angstrom; ~155 km/s at 770 Angstrom).
    width_bounds : (float, float), optional
        Model width bounds as factors of each line's guessed width (and of ``width`` in the
        mean-spectrum fit), e.g. ``(0.5, 3.0)``; ``0 < lo < 1 < hi``. Default (None):
        *physical* bounds (and ``(0.5, 3.0)`` in the mean-spectrum fit), built on the
        narrowest width a line can have: the quadrature sum of the SPICE instrumental width
        (detector and slit from the ``DETECTOR``/``SLIT_WID`` attributes or the wavelength;
        values and source in ``saffron_xr.derive.INSTRUMENTAL_FWHM``) and the ion's thermal
        width at its catalog formation temperature. Below ``SOFT_MIN_WIDTH_FACTOR``
        (0.85) times that width the fit pays a soft penalty (``LineModel.
        set_soft_min_width``: a one-sided Gaussian prior, tolerance
        ``SOFT_WIDTH_TOLERANCE`` (0.05) times the width); the hard lower bound is
        ``MIN_WIDTH_FACTOR`` (0.7) times it, 3 tolerances lower. The margin below the
        published width allows for its variation along the slit and in time (the narrowest
        significant C III 977 lines of a real 2024 raster have FWHM 0.79 Angstrom at their
        5th percentile, 0.87 times the LW value), and a bright line narrower than that is
        still measured. A faint line, whose width the noise alone would often drive onto
        a hard bound (22 % of the 5-sigma Ne VIII detections of the real 2022 window with
        a hard bound at 0.8 times; none with the soft minimum), stays near physical widths
        with an error that says how little the data constrain it. Measured on synthetic
        SPICE SW lines with the truth at the published width, peak S/N 3: amplitude x width
        biased +1.6 % (a soft minimum at 1.0 times with tolerance 0.1: +3.1 %; a hard bound
        at 0.7 times alone: +1.4 %, with 3.4 % of the fits on it).
        The upper bound is ``MAX_WIDTH_FACTOR`` (4) times the larger of the guessed width
        and that narrowest width (FWHM ~3.6 Angstrom on LW): it only keeps a line from
        absorbing the background or a neighbour. The real 2024 raster has broad C III
        profiles up to FWHM 3.75 Angstrom (99th percentile, where a second component is
        needed); with a bound at 3 times, 4 % of its 5-sigma C III detections sat on it.
    amplitude_bounds : (float or None, float or None), default (None, None)
        Model amplitude bounds (data units); None for no bound. Unbounded by default: in
        pixels where a line is faint its amplitude may come out negative, consistent with
        zero within its error, instead of sticking to a zero bound (where its width and
        centroid are undefined and the fit fails as singular); averages and ratios of
        amplitudes are then unbiased. Pass ``(0.0, None)`` for non-negative amplitudes.
    weak_pixel_snr : float or None, default 1.0
        A kept line whose single-pixel peak S/N (``snr_pixel``: its mean-spectrum amplitude
        over the mean per-pixel error) is below this, and that is not the brightest line of
        its segment, is fitted with its centroid tied to the brightest line (at their
        mean-spectrum separation) and its width fixed at its mean-spectrum width: only its
        amplitude is free. One pixel cannot measure such a line; free, its centroid and
        width wander to their bounds (in the synthetic 9-window composition raster, a C II
        1037.02 component at 0.03 sigma per pixel, kept because the mean of 160,000
        spectra measures it, took 30 iterations per pixel and ended on a bound in 72 % of
        them), whereas constrained it still takes its share of the blend and its amplitude
        stays an unbiased (possibly negative) estimate. Needs ``error``; None keeps every
        line free.
    background_degree : {"auto", 0, 1, 2}, default "auto"
        Degree of the background polynomial (per segment); the batch runner's default too.
        ``"auto"``: the mean spectrum is fitted with a linear background, and the model
        keeps the slope only if one spectrum could measure it, i.e. if the slope part of
        that background (what a constant cannot absorb) would change the chi-square of a
        single spectrum, with the window's mean per-pixel errors, by at least
        ``guess_stages.AUTO_SLOPE_CHI2`` (1); else the background is a constant. A slope
        that no pixel can measure only adds a parameter that trades off against a broad
        or shifted line: on the real 2022 Ne VIII window (slope chi2 0.016 per spectrum)
        a linear background left 8.9 % of the 5-sigma detections with a centroid or width
        on a bound (broad, shifted Gaussians absorbing the baseline), a constant one 3.2 %;
        the real 2024 Ly-gamma / C III raster (slope chi2 19) keeps its slope. Without
        ``error`` the slope is kept. The choice and the slope chi2 are in the report.
    min_valid_fraction : float, default 0.8
        Fraction of the spectra (of those with any data) a wavelength sample must be valid
        in to be usable. Near NaN-padded edges that drift along the slit, the mean of the
        remaining spectra is biased towards their rows; a high fraction keeps it out.

    Raises
    ------
    ValueError
        ``width_bounds`` not ``0 < lo < 1 < hi``, ``background_degree`` not ``"auto"``,
        0, 1 or 2, or ``max_offset``, ``width``,
        ``refine_range`` or ``centroid_range`` not finite and > 0.

    Examples
    --------
    >>> opts = GuessOptions(min_snr=3.0)
    >>> opts.with_settings({"background_degree": 0}).background_degree
    0
    >>> opts.with_settings({"min_snr": 4.0}).min_snr
    4.0
    """

    max_offset: float = 0.6
    width: float = 0.4
    min_snr: float = 5.0
    min_separation: float | None = None
    merge_blends: bool = True
    refine_range: float = 0.15
    centroid_range: float = 0.4
    width_bounds: tuple[float, float] | None = None
    amplitude_bounds: tuple[float | None, float | None] = (None, None)
    weak_pixel_snr: float | None = 1.0
    background_degree: int | str = "auto"
    min_valid_fraction: float = 0.8

    def __post_init__(self):
        lo, hi = self.fit_width_factors
        if not 0 < lo < 1 < hi:
            raise ValueError(
                f"GuessOptions: width_bounds must satisfy 0 < lo < 1 < hi, got {self.width_bounds}"
            )
        if self.background_degree != "auto" and self.background_degree not in (0, 1, 2):
            raise ValueError(
                "GuessOptions: background_degree must be 'auto', 0, 1 or 2, got "
                f"{self.background_degree!r}"
            )
        weak = self.weak_pixel_snr
        if weak is not None and not (isinstance(weak, (int, float)) and weak >= 0):
            raise ValueError(f"GuessOptions: weak_pixel_snr must be >= 0 or None, got {weak!r}")
        for key in ("max_offset", "width", "refine_range", "centroid_range"):
            val = getattr(self, key)
            if not (math.isfinite(val) and val > 0):
                raise ValueError(f"GuessOptions: {key} must be finite and > 0, got {val}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The setting names, in declaration order."""
        return tuple(f.name for f in fields(cls))

    def with_settings(self, settings: dict, *, where: str = "GuessOptions") -> GuessOptions:
        """A copy with some settings replaced.

        Parameters
        ----------
        settings : dict
            ``{setting name: value}``; empty returns ``self``.
        where : str, optional
            Name of the caller, to start error messages.

        Raises
        ------
        TypeError
            A name that is not a setting (the message names it and lists the settings).
        """
        unknown = sorted(set(settings) - set(self.names()))
        if unknown:
            raise TypeError(
                f"{where}: unknown setting(s) {', '.join(map(repr, unknown))}; the settings "
                f"are {', '.join(self.names())}"
            )
        return replace(self, **settings) if settings else self

    @property
    def mean_fit_degree(self) -> int:
        """Background degree of the mean-spectrum fit (1 for ``"auto"``)."""
        return 1 if self.background_degree == "auto" else int(self.background_degree)

    @property
    def separation(self) -> float:
        """``min_separation``, or ``width`` when it is None."""
        return self.width if self.min_separation is None else self.min_separation

    @property
    def physical_widths(self) -> bool:
        """True when the model's width bounds are physical (``width_bounds`` is None)."""
        return self.width_bounds is None

    @property
    def fit_width_factors(self) -> tuple[float, float]:
        """Width bounds of the mean-spectrum fit, as factors of ``width``."""
        lo_hi = DEFAULT_FIT_WIDTH_FACTORS if self.width_bounds is None else self.width_bounds
        lo, hi = lo_hi
        return float(lo), float(hi)

    def as_settings(self) -> dict:
        """The settings as recorded in a :class:`~saffron_xr.catalog.GuessReport` (JSON-able,
        ``min_separation`` resolved)."""
        out = {name: getattr(self, name) for name in self.names()}
        out["min_separation"] = self.separation
        out["width_bounds"] = None if self.width_bounds is None else list(self.width_bounds)
        out["amplitude_bounds"] = list(self.amplitude_bounds)
        return out


def resolve_options(options: GuessOptions | None, settings: dict, where: str) -> GuessOptions:
    """``options`` (default `GuessOptions()`) with the keyword ``settings`` applied.

    Raises
    ------
    TypeError
        ``options`` is not a GuessOptions, or a setting name is unknown.
    """
    if options is None:
        options = GuessOptions()
    elif not isinstance(options, GuessOptions):
        raise TypeError(f"{where}: options must be a GuessOptions, got {type(options).__name__}")
    return options.with_settings(settings, where=where)
