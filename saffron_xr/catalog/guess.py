"""Automatic initial models: catalog lines matched to a window and guessed from its data.

:func:`guess_model` reads the *mean spectrum* of a window (the only reduction of the data it
computes), finds the usable wavelength range, matches catalog lines to it, estimates the
window's wavelength offset (SPICE's wavelength scale is pre-flight: lines sit up to ~0.5
Angstrom from their rest wavelengths), fits the mean spectrum with the matched lines and
builds a :class:`~saffron_xr.LineModel` with documented, configurable bounds. Every decision
(offset, lines kept, merged, dropped and why) is recorded in a :class:`GuessReport`. The
stages are the functions of :mod:`saffron_xr.catalog.guess_stages`; the settings are the
fields of :class:`GuessOptions`.
"""

from __future__ import annotations

import logging

import numpy as np
import xarray as xr

from .._units import is_angstrom
from . import guess_stages as stages
from .catalog import CatalogError, LineCatalog
from .guess_fit import fit_mean_spectrum, unexplained
from .guess_options import GuessOptions, resolve_options
from .guess_report import GuessReport, LineGuess
from .guess_stages import MIN_WIDTH_FACTOR, mean_spectrum

__all__ = [
    "guess_model",
    "guess_models",
    "GuessOptions",
    "GuessReport",
    "LineGuess",
    "mean_spectrum",
    "MIN_WIDTH_FACTOR",
]

logger = logging.getLogger(__name__)


def guess_model(
    radiance: xr.DataArray,
    catalog: LineCatalog | None = None,
    *,
    error: xr.DataArray | None = None,
    options: GuessOptions | None = None,
    return_report: bool = False,
    **settings,
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
    4. *Mean-spectrum fit* with the package's own :func:`~saffron_xr.fit_lines`, first with
       every centroid at ``rest + offset`` (one free offset per segment), then with each
       centroid free within ``refine_range`` of it; widths within ``width_bounds`` times
       ``width``; amplitudes >= 0. After each fit, lines whose S/N is below ``min_snr``
       are dropped and the fit repeated.

    The S/N of a line is its fitted peak amplitude over the noise of the mean spectrum
    within 3 widths of its centroid: the mean ``error`` over the square root of the number
    of valid spectra, scaled up by the square root of the local reduced chi-square when that
    exceeds 1 (model mismatch counts as noise); without ``error``, the local RMS residual of
    the fit. It measures whether the data show the line at all. The typical single-pixel peak S/N (amplitude
    over mean ``error``) is recorded as ``snr_pixel``. A kept line that one pixel cannot
    measure (``snr_pixel`` below ``weak_pixel_snr``, default 1) and that is not the
    brightest of its segment follows the brightest: its centroid is tied to it at their
    mean-spectrum separation and its width fixed at its mean-spectrum width; only its
    amplitude is fitted per pixel (the report says so).

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
    options : GuessOptions, optional
        The settings as one object (default ``GuessOptions()``).
    return_report : bool, default False
        Also return the :class:`GuessReport` of every choice made.
    **settings
        Any field of :class:`GuessOptions`, overriding ``options``: ``max_offset``,
        ``width``, ``min_snr``, ``min_separation``, ``merge_blends``, ``refine_range``,
        ``centroid_range``, ``width_bounds``, ``amplitude_bounds``, ``weak_pixel_snr``,
        ``background_degree``, ``min_valid_fraction`` (each documented there, with its default). An unknown name
        raises `TypeError`.

    Returns
    -------
    LineModel or (LineModel, GuessReport)
        Lines in rest-wavelength order named as in the catalog, initial values from the mean
        spectrum, bounds as above; ``segments`` (wavelength range of each) for fused windows.

    Raises
    ------
    ValueError
        No ``wavelength`` dimension, no usable sample, no catalog line in the usable range,
        no line reaching ``min_snr`` (the message names the best one), a failed
        mean-spectrum fit, or an invalid setting (see :class:`GuessOptions`).
    TypeError
        ``catalog`` not a LineCatalog, ``options`` not a GuessOptions, or an unknown
        setting name.

    Examples
    --------
    >>> import saffron_xr
    >>> tree = saffron_xr.open_spice(saffron_xr.ne8_window_path())
    >>> model = guess_model(tree["Ne_VIII_770_Peak_data"].radiance)
    >>> model.lines
    ['ne_8 770.42']
    """

    options = resolve_options(options, settings, "guess_model")
    catalog = _check_inputs(radiance, catalog)
    spectrum = stages.reduce_window(radiance, error)  # the one data reduction
    report = GuessReport(window=spectrum.name, settings=options.as_settings())

    spans, mask = stages.usable_ranges(spectrum, options.min_valid_fraction)
    report.usable_range = [list(sp) for sp in spans]
    cands = stages.find_candidates(catalog, spans, options.max_offset)
    report.lines = [c.guess for c in cands]
    if not cands:
        raise ValueError(
            f"guess_model: no catalog line within {options.max_offset} Angstrom of the usable "
            f"range of window {spectrum.name!r} ("
            + ", ".join(f"{a:.2f}-{b:.2f}" for a, b in spans)
            + " Angstrom)"
        )
    samples = stages.fit_samples(spectrum, mask)
    if options.merge_blends:
        cands = stages.merge_blends(cands, catalog)
    cands = stages.merge_close(cands, catalog, samples, options.separation, options.max_offset)

    step = spectrum.step(default=options.width)
    estimate = stages.estimate_offsets(
        cands, catalog, samples, spans, options.width, options.max_offset, step
    )
    cands = stages.drop_outside(cands, estimate.offset, spans)
    if not cands:
        raise ValueError(
            f"guess_model: no catalog line falls inside the usable range of window "
            f"{spectrum.name!r} after the offset estimate ("
            f"{', '.join(f'{o:+.2f}' for o in estimate.offset)} Angstrom)"
        )

    fit = fit_mean_spectrum(cands, samples, estimate.offset, spans, options, step, spectrum.name)
    _complete_report(report, fit, estimate, samples, options)
    degree, slope_chi2 = stages.choose_background_degree(fit, samples, options)
    report.background_degree, report.slope_chi2 = degree, slope_chi2
    model = stages.build_model(fit, options, catalog, spectrum, radiance.attrs, degree)
    logger.debug("guess_model: %s", report)
    return (model, report) if return_report else model


def _check_inputs(radiance, catalog) -> LineCatalog:
    """The catalog to use (default: the package's); raise for unusable input."""
    if catalog is None:
        catalog = LineCatalog.default()
    if not isinstance(catalog, LineCatalog):
        raise TypeError(
            f"guess_model: catalog must be a LineCatalog, got {type(catalog).__name__}"
        )
    window = stages.window_name(radiance)
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
    return catalog


def _complete_report(report, fit, estimate, samples, options) -> None:
    """Record the outcome of the mean-spectrum fit in ``report`` (in place)."""
    report.offset = [float(o) for o in fit.offset]
    report.offset_at_limit = list(estimate.at_limit)
    report.anchor = []
    for sg, anchor in enumerate(estimate.anchor):
        mine = [c.guess for c in fit.lines if c.segment == sg]
        brightest = max(mine, key=lambda g: g.amplitude).name if mine else None
        report.anchor.append(anchor or brightest)
    report.background = fit.background
    report.noise = float(np.median(fit.noise))
    report.fit_status = list(fit.status)
    report.unexplained = unexplained(
        samples.wavelength, fit.residual, samples.noise_sigma, max(options.min_snr, 3.0)
    )
    for c in fit.lines:
        c.guess.reason = "kept"
    report.lines.sort(key=lambda g: (g.segment, g.rest_wavelength))


def guess_models(
    tree: xr.DataTree,
    catalog: LineCatalog | None = None,
    *,
    windows=None,
    variable: str = "radiance",
    error: str | None = "error",
    errors: str = "skip",
    options: GuessOptions | None = None,
    **settings,
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
    options : GuessOptions, optional
        The guess settings (default ``GuessOptions()``), as for :func:`guess_model`.
    **settings
        Any field of :class:`GuessOptions`, overriding ``options``; an unknown name raises
        `TypeError`.

    Returns
    -------
    dict
        ``{node name: LineModel}``; windows without a usable line are absent.
    """

    options = resolve_options(options, settings, "guess_models")
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
            out[name] = guess_model(ds[variable], catalog, error=err, options=options)
        except (ValueError, CatalogError) as exc:
            if errors == "raise":
                raise
            logger.info("guess_models: window %r skipped: %s", name, exc)
    return out
