"""What :func:`~saffron_xr.guess_model` decided: one :class:`LineGuess` per catalog line
considered, gathered in the :class:`GuessReport` of a window."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

__all__ = ["GuessReport", "LineGuess"]


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
        The settings used (:class:`~saffron_xr.catalog.GuessOptions` fields,
        ``min_separation`` resolved).
    background_degree : int or None
        The model's background degree (see ``background_degree`` of
        :class:`~saffron_xr.catalog.GuessOptions`).
    slope_chi2 : float
        With ``background_degree="auto"``: the chi2 the mean spectrum's background slope
        would add to one spectrum (the slope is kept from 1); else NaN.
    fit_status : list of str
        :class:`~saffron_xr.fit.FitStatus` name of each mean-spectrum fit, in order
        (``"tied ..."`` with centroids at ``rest + offset``, then ``"free ..."``; one more
        of a kind each time weak lines were dropped and the fit repeated).
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
    fit_status: list = field(default_factory=list)
    background_degree: int | None = None
    slope_chi2: float = math.nan

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
        out.append(f"  mean-spectrum noise {self.noise:.4g}; fits: {', '.join(self.fit_status)}")
        out.append(
            f"  model background degree {self.background_degree}"
            + ("" if math.isnan(self.slope_chi2) else f" (slope chi2 {self.slope_chi2:.3g})")
        )
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
