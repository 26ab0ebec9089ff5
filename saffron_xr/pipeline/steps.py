"""One file's science, as the configuration asks: prepare, model, fit and derive each window.

A thin composition of the public functions. Each configuration section gives the keywords of
one function (besides ``enabled``): ``prep.noise`` -> :func:`~saffron_xr.prep.spice_error` /
:func:`~saffron_xr.prep.calibrate_noise_terms` (``dark_factor``), ``prep.despike`` ->
:func:`~saffron_xr.prep.despike`, ``prep.denoise`` -> :func:`~saffron_xr.prep.denoise`,
``prep.binning`` -> :func:`~saffron_xr.prep.bin_levels` (``sizes``, ``min_valid``) and
:func:`~saffron_xr.fit.core.fit_lines` (``thresholds``), ``catalog`` ->
:func:`~saffron_xr.catalog.guess_model` (``min_snr``, ``background_degree``,
``weak_pixel_snr``), ``derive`` ->
:func:`saffron_xr.derive.derive_all`. Everything stays lazy except the guess's mean spectrum.
"""

from __future__ import annotations

import json
import logging
import os

import dask
import xarray as xr

from .config import resolve_path

__all__ = ["process_window", "process_tree", "load_catalog", "count_status", "keywords"]

log = logging.getLogger(__name__)


def keywords(section: dict, *names: str) -> dict:
    """The keywords a configuration section gives its function: every key but ``enabled``
    (or only ``names`` when given)."""
    keys = names or [k for k in section if k != "enabled"]
    return {k: section[k] for k in keys}


def load_catalog(cfg):
    """The line catalog of ``catalog.path`` (relative to the configuration's folder), or the
    built-in SPICE catalog."""
    from ..catalog import LineCatalog

    if cfg["catalog"]["path"]:
        return LineCatalog.load(resolve_path(cfg, cfg["catalog"]["path"]))
    return LineCatalog.default()


def _window_model(cfg, name, ds, radiance, error, catalog):
    from ..catalog import guess_model
    from ..fit.model import LineModel

    override = cfg["models"].get(name) or cfg["models"].get(ds.attrs.get("EXTNAME", ""))
    if override is not None:
        if isinstance(override, dict):
            return LineModel.from_dict(override)
        return LineModel.from_json(resolve_path(cfg, override).read_text())
    return guess_model(
        radiance,
        catalog,
        error=error,
        **keywords(cfg["catalog"], "min_snr", "background_degree", "weak_pixel_snr"),
    )


def _selected(cfg, names_and_ext):
    inc = cfg["windows"]["include"]
    exc = set(cfg["windows"]["exclude"])
    inc = [inc] if isinstance(inc, str) else inc
    out = []
    for name, ext in names_and_ext:
        if inc is not None and name not in inc and ext not in inc:
            continue
        if name in exc or ext in exc:
            continue
        out.append(name)
    return out


_NOISE_PROVENANCE = (
    "noise_floor_ratio",
    "noise_signal_ratio",
    "noise_signal_measured",
    "noise_calibration_method",
    "noise_calibration",
)


def _noise(name: str, radiance: xr.DataArray, ncfg: dict):
    """(error, calibrated noise terms or None, provenance attrs) from ``prep.noise``.

    With ``calibrate``, the model's floor and photon terms are rescaled to the noise measured
    in this window (issue 12); ratios and method go to the window's attrs.
    """
    from ..prep import spice_error

    error = spice_error(radiance, **keywords(ncfg, "dark_factor"))
    if not ncfg["calibrate"]:
        return error, None, {}
    from ..prep import calibrate_noise_terms, error_from_terms

    try:
        terms = calibrate_noise_terms(radiance, **keywords(ncfg, "dark_factor"))
    except ValueError as exc:  # e.g. a window too small to measure: keep the model
        log.warning("%s: noise not calibrated (%s); SPICE model kept", name, exc)
        return error, None, {"noise_calibration_method": f"not calibrated: {exc}"}
    return error_from_terms(radiance, terms), terms, {k: terms.attrs[k] for k in _NOISE_PROVENANCE}


def _prepare(cfg: dict, name: str, radiance: xr.DataArray):
    """(radiance, error or None, noise terms or None, provenance) after ``prep``."""
    pcfg = cfg["prep"]
    error, terms, provenance = None, None, {}
    if pcfg["noise"]["enabled"]:
        error, terms, provenance = _noise(name, radiance, pcfg["noise"])
    if pcfg["despike"]["enabled"]:
        from ..prep import despike

        radiance, _changed = despike(
            radiance, **keywords(pcfg["despike"]), dark_factor=pcfg["noise"]["dark_factor"]
        )
    if pcfg["denoise"]["enabled"]:
        from ..prep import denoise

        if error is None:
            raise ValueError("prep.denoise needs the noise model (prep.noise.enabled: true)")
        # keep the input errors: the denoiser's propagated error ignores the correlation it
        # introduces between neighbouring samples, so fitted errors would come out too small
        radiance = denoise(radiance, error, **keywords(pcfg["denoise"]))["radiance"]
    return radiance, error, terms, provenance


def _fit_noise(cfg: dict, radiance: xr.DataArray, terms):
    """The noise terms for model-based weights (issue 12), or None.

    With the noise model on, fits take their weights from the fitted model rather than from
    the noisy samples (``fit_lines(noise=...)``): the calibrated terms when calibrated,
    else the SPICE model's. Not after denoising, whose output no longer has the model's
    noise (the input errors are kept there).
    """
    pcfg = cfg["prep"]
    if not pcfg["noise"]["enabled"] or pcfg["denoise"]["enabled"]:
        return None
    if terms is None:
        from ..prep import spice_noise_terms

        terms = spice_noise_terms(radiance, **keywords(pcfg["noise"], "dark_factor"))
    return terms


def process_window(
    cfg: dict, name: str, ds: xr.Dataset, catalog, *, prepared_only: bool = False
) -> xr.Dataset:
    """Prepare, model, fit and derive one window Dataset; returns a lazy result Dataset.

    Only the mean spectrum used by the model guess is computed here. With
    ``prepared_only``, returns the prepared ``(radiance, error)`` instead (error may be None).
    """
    radiance, error, terms, provenance = _prepare(cfg, name, ds["radiance"])
    if prepared_only:
        return radiance, error
    return _fit_window(
        cfg, name, ds, radiance, error, catalog, noise_terms=terms, provenance=provenance
    )


def _fit(cfg, radiance, error, model, noise):
    """``fit_lines`` on the prepared window, over binning levels if ``prep.binning`` asks."""
    from ..fit.core import fit_lines

    bcfg = cfg["prep"]["binning"]
    sizes = bcfg["sizes"]
    if len(sizes) == 1 and sizes[0] == 1:
        return fit_lines(radiance, model, error=error, noise=noise)
    from ..prep import bin_levels

    if error is None:
        raise ValueError("prep.binning needs the noise model (prep.noise.enabled: true)")
    stacked = bin_levels(radiance, error, **keywords(bcfg, "sizes", "min_valid"))
    return fit_lines(
        stacked["radiance"],
        model,
        error=stacked["error"],
        level_dim="level",
        thresholds=dict(bcfg["thresholds"]),
    )


def _fit_window(
    cfg, name, ds, radiance, error, catalog, *, noise_terms=None, provenance=None,
    model_weights=True,
) -> xr.Dataset:  # fmt: skip
    """Model, fit and derive a prepared window (``ds`` gives the input radiance and attrs).

    With ``model_weights`` (and the noise model on), the fit takes its weights from the
    fitted model (`_fit_noise`); fused windows are fitted with their errors only.
    """
    from ..derive import derive_all

    # the guess reads the mean spectrum of the *input* radiance: guessing from the prepared
    # one would compute despike/denoise twice (once here, once in the fit), about 70 s of a
    # 220 s full composition raster (benchmarks/bench_prep_memory.py); a few spikes among
    # ~160,000 pixels do not move the window's mean spectrum measurably
    model = _window_model(cfg, name, ds, ds["radiance"], error, catalog)
    locks = _apply_locks(cfg, name, model)
    noise = _fit_noise(cfg, radiance, noise_terms) if model_weights else None
    params = _fit(cfg, radiance, error, model, noise)
    if cfg["derive"]["enabled"]:
        params = derive_all(params, **keywords(cfg["derive"]))
    out = params.assign_attrs(provenance or {})
    if locks:
        out.attrs["centroid_locks"] = json.dumps(locks)
    if "fused_windows" in ds.attrs:
        out.attrs["fused_windows"] = ds.attrs["fused_windows"]
    return _with_coordinate_units(out)


def _with_coordinate_units(ds: xr.Dataset) -> xr.Dataset:
    """Units on the helioprojective coordinates (arcsec) where the fit dropped them."""
    fixed = {}
    for name, long_name in (
        ("hpln", "helioprojective longitude (Solar X)"),
        ("hplt", "helioprojective latitude (Solar Y)"),
    ):
        if name in ds.coords and "units" not in ds[name].attrs:
            fixed[name] = ds[name].assign_attrs(units="arcsec", long_name=long_name)
    return ds.assign_coords(fixed) if fixed else ds


def _apply_locks(cfg, name: str, model) -> list[dict]:
    """Tie centroids of line pairs as ``cfg["locks"]`` asks; returns the locks applied.

    A lock whose lines are not both in the window's model is logged and left out (a window
    holds only the lines in its wavelength range, and weak lines are dropped by the guess).
    """
    applied = []
    lines = set(model.lines)
    for lock in cfg["locks"]:
        line, to, offset = lock["line"], lock["to"], lock.get("offset")
        if line in lines and to in lines:
            if offset is None:
                offset = (
                    model.line_info(line)["rest_wavelength"]
                    - model.line_info(to)["rest_wavelength"]
                )
            # the locked line follows its root: its own centroid bounds become the root's,
            # shifted (windows guessed apart can disagree on them by their offsets)
            lo, hi = model.line_info(to)["bounds"]["centroid"]
            model.set_bounds(line, "centroid", (lo + offset, hi + offset))
            model.tie_centroid(line, to, offset)
            applied.append({"line": line, "to": to, "offset": model.tie_of(line, "centroid")[2]})
        elif line in lines or to in lines:
            log.warning(
                "window %s: lock %s -> %s not applied: %s is not in the model (lines: %s)",
                name,
                line,
                to,
                to if line in lines else line,
                ", ".join(model.lines),
            )
    return applied


def _node_of(tree: xr.DataTree, name: str) -> str | None:
    """The node name of a window given by node name or EXTNAME, or None."""
    from ..io.reader import window_node_name

    if name in tree.children:
        return name
    for node, child in tree.children.items():
        if child.dataset.attrs.get("EXTNAME") == name or window_node_name(name) == node:
            return node
    return None


def _fuse_groups(cfg, tree: xr.DataTree) -> list[list[str]]:
    """``cfg["fuse"]`` as node names; a group naming an absent window is an error."""
    groups = []
    for group in cfg["fuse"]:
        nodes = [_node_of(tree, w) for w in group]
        missing = [w for w, n in zip(group, nodes, strict=True) if n is None]
        if missing:
            raise ValueError(
                f"fuse: no window {', '.join(map(repr, missing))} in the file; its windows are "
                + ", ".join(tree.children)
            )
        groups.append(nodes)
    return groups


def _fused_name(nodes: list[str]) -> str:
    return "+".join(nodes)


def _process_fused(cfg, tree: xr.DataTree, nodes: list[str], catalog) -> xr.Dataset:
    """Prepare each window of a fuse group, join them along wavelength, fit them together."""
    from ..catalog import fuse_windows

    parts = {}
    for node in nodes:
        ds = tree[node].dataset
        radiance, error = process_window(cfg, node, ds, catalog, prepared_only=True)
        part = xr.Dataset({"radiance": radiance, "input_radiance": ds["radiance"]}, attrs=ds.attrs)
        if error is not None:
            part["error"] = error
        parts[node] = part
    fused = fuse_windows(xr.DataTree.from_dict(parts), nodes, name=_fused_name(nodes))
    inputs = fused.drop_vars(["radiance"]).rename({"input_radiance": "radiance"})
    error = fused["error"] if "error" in fused else None
    return _fit_window(
        cfg, _fused_name(nodes), inputs, fused["radiance"], error, catalog, model_weights=False
    )


def _window_error(exc: Exception, node: str, extname: str | None) -> str:
    """One line naming the window by its node name (as ``saffron-xr info`` prints it)."""
    text = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
    if extname and extname != node:
        text = text.replace(repr(extname), repr(node)).replace(extname, node)
    return text


def _build_threads(n_units: int) -> int:
    """Threads for preparing and modelling the windows of a file: one per thread of the
    in-process scheduler (dask's ``num_workers``, by default one per core; at most 4), so
    a cluster worker given one thread builds on one; 1 under the synchronous scheduler or
    a distributed client (its own workers compute the small statistics passes)."""
    from .filejob import _in_process_scheduler

    if n_units < 2 or not _in_process_scheduler():
        return 1
    if dask.config.get("scheduler", None) in ("synchronous", "sync", "single-threaded"):
        return 1
    n = dask.config.get("num_workers", None) or os.cpu_count() or 1
    return max(1, min(n_units, int(n), 4))


def _map_windows(build, units) -> list:
    """``[build(u) for u in units]``, in that order, on `_build_threads` threads.

    Building a window computes its small statistics passes (noise calibration, mean
    spectrum for the model guess) and builds its fit graph: on a 9-window composition
    raster about 4.5 CPU-s before the first fit starts, part of it Python that holds the
    GIL (AMD EPYC: 3.9 s on one thread, 3.1 s on two, no better on three or four). On
    Ctrl-C the windows not started are dropped and the interrupt propagates at once.
    """
    n_threads = _build_threads(len(units))
    if n_threads == 1:
        return [build(u) for u in units]
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(n_threads, thread_name_prefix="saffron-window")
    try:
        built = list(pool.map(build, units))
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return built


def process_tree(cfg: dict, tree: xr.DataTree, catalog=None) -> xr.DataTree:
    """Lazy results for every selected window of an opened file (a DataTree like the input).

    Windows listed together in ``cfg["fuse"]`` are fitted as one (node name: their node
    names joined by ``+``) and not on their own. A window that cannot be prepared or modelled
    (e.g. no catalog line in its range) fails alone: the others are fitted, and the failed
    ones are listed with their reasons in the root attribute ``failed_windows`` (a mapping
    node name -> reason). If every window fails, a ValueError lists them all.
    """
    catalog = catalog if catalog is not None else load_catalog(cfg)
    pairs = [(n, c.dataset.attrs.get("EXTNAME", n)) for n, c in tree.children.items()]
    names = _selected(cfg, pairs)
    if not names:
        raise ValueError(
            "no window left after windows.include/exclude; the file has "
            + ", ".join(n for n, _ in pairs)
        )
    groups = _fuse_groups(cfg, tree)
    in_groups = {n for g in groups for n in g}
    units = [[n] for n in names if n not in in_groups] + groups

    def build(unit):
        name = unit[0] if len(unit) == 1 else _fused_name(unit)
        try:
            if len(unit) == 1:
                return name, process_window(cfg, name, tree[name].dataset, catalog), None
            return name, _process_fused(cfg, tree, unit, catalog), None
        except (KeyboardInterrupt, SystemExit, MemoryError):
            raise
        except Exception as exc:  # one window fails alone
            extname = tree[unit[0]].dataset.attrs.get("EXTNAME") if len(unit) == 1 else None
            return name, None, _window_error(exc, name, extname)

    built = _map_windows(build, units)
    out = xr.DataTree(xr.Dataset(attrs=dict(tree.attrs)))
    failed = {}
    for name, ds, error in built:
        if ds is None:
            failed[name] = error
            log.warning("window %s failed: %s", name, error)
            continue
        out[name] = xr.DataTree(ds)
    if not out.children:
        raise ValueError(
            "every window failed: " + "; ".join(f"{n}: {r}" for n, r in failed.items())
        )
    if failed:
        out.attrs["failed_windows"] = failed
    return out


def count_status(results: xr.DataTree) -> tuple[int, int, int]:
    """(spectra fitted, of which converged, of which converged at a bound) over all windows.

    "Converged" is :meth:`FitStatus.converged` (status ``CONVERGED`` only); spectra with no
    or too few valid samples are not counted as fitted. Reads the ``status`` arrays.
    """
    import numpy as np

    from ..fit.status import FitStatus

    n = conv = at_bound = 0
    skipped = [int(FitStatus.ALL_NAN), int(FitStatus.TOO_FEW_VALID)]
    good = [int(s) for s in FitStatus.converged()]
    for node in results.children.values():
        st = np.asarray(node.dataset["status"])
        n += int((~np.isin(st, skipped)).sum())
        conv += int(np.isin(st, good).sum())
        at_bound += int((st == int(FitStatus.CONVERGED_AT_BOUND)).sum())
    return n, conv, at_bound
