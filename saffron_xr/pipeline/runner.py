"""The batch runner: configured runs from SPICE L2 files to result files.

For each selected file: open lazily, prepare (noise model, despike, denoise, binning), guess
or load line models, fit, derive physical quantities, and write one netCDF file (one group per
window) atomically. A file that fails is logged and reported; the batch goes on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import logging
import os
import time
from pathlib import Path

import dask
import xarray as xr

from .._compute import compute_datasets
from ..errors import SpiceFileError
from .config import config_json, load_config, validate_config
from .scheduler import scheduler_context

__all__ = ["run", "RunSummary", "FileResult", "process_tree", "output_path"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class FileResult:
    """What happened to one input file."""

    path: str
    status: str  # "done", "skipped" (complete output exists) or "failed"
    output: str | None = None
    error: str | None = None
    seconds: float = 0.0
    n_spectra: int = 0
    n_converged: int = 0


@dataclasses.dataclass
class RunSummary:
    """The outcome of :func:`run`: one :class:`FileResult` per input file."""

    files: list[FileResult]
    scheduler: str
    seconds: float

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "failed"]

    @property
    def done(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "done"]

    @property
    def skipped(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "skipped"]

    def __str__(self) -> str:
        lines = [
            f"saffron_xr run: {len(self.done)} done, {len(self.skipped)} skipped, "
            f"{len(self.failed)} failed in {self.seconds:.1f} s on {self.scheduler}"
        ]
        for f in self.files:
            if f.status == "done":
                frac = f.n_converged / f.n_spectra if f.n_spectra else float("nan")
                lines.append(
                    f"  done     {Path(f.path).name} -> {f.output} "
                    f"({f.n_spectra} spectra fitted, {frac:.1%} converged, {f.seconds:.1f} s)"
                )
            elif f.status == "skipped":
                lines.append(f"  skipped  {Path(f.path).name} (complete output {f.output} exists)")
            else:
                lines.append(f"  FAILED   {Path(f.path).name}: {f.error}")
        return "\n".join(lines)


def _resolve(base_dir, p) -> Path:
    p = Path(p).expanduser()
    return p if p.is_absolute() else Path(base_dir) / p


_FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz")


def _is_fits_name(path: Path) -> bool:
    name = path.name.lower()
    return not name.startswith(".") and name.endswith(_FITS_SUFFIXES)


def _inside(path: Path, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def _expand_sources(sources: list[str], output_folder: Path) -> tuple[list[str], list[Path]]:
    """Files with SPICE names for ``select_files``, and FITS files with other names.

    Folders and globs are expanded here rather than in ``select_files``, which silently
    skips non-SPICE names there: a batch reports them instead. Files under the output folder
    are outputs, never inputs (L3 FITS outputs keep the input's SPICE-like name and would
    otherwise compete with it as a "version" of the same product).
    """
    from ..errors import SpiceFileError
    from ..io.filenames import parse_spice_filename

    def spice_name(path: Path) -> bool:
        try:
            parse_spice_filename(path)
        except SpiceFileError:
            return False
        return True

    keep: list[str] = []
    rejected: list[Path] = []
    for s in sources:
        p = Path(s)
        if p.is_dir():
            scanned = sorted(Path(root) / name for root, _d, names in os.walk(p) for name in names)
        elif glob.has_magic(s):
            scanned = sorted(Path(m) for m in glob.glob(s, recursive=True) if Path(m).is_file())
        elif p.is_file() and not spice_name(p):
            rejected.append(p)
            continue
        else:  # a SPICE-named file, or a missing one (select_files says so)
            keep.append(s)
            continue
        for f in scanned:
            if _inside(f, output_folder):
                continue
            if spice_name(f):
                keep.append(str(f))
            elif _is_fits_name(f):
                rejected.append(f)
    unique = {f.resolve(): f for f in rejected}
    return keep, list(unique.values())


def _input_files(cfg) -> tuple[list[Path], list[Path]]:
    """(SPICE files to process, FITS files with non-SPICE names found in the sources)."""
    from ..io.select import select_files

    fcfg = cfg["files"]
    base = cfg["_base_dir"]
    source = fcfg["source"]
    sources = [source] if isinstance(source, str) else list(source)
    resolved = [str(_resolve(base, s)) for s in sources]
    output_folder = _resolve(base, cfg["output"]["folder"])
    resolved, rejected = _expand_sources(resolved, output_folder)
    if not resolved:
        return [], rejected
    files = select_files(
        resolved,
        start=fcfg["start"],
        end=fcfg["end"],
        kind=fcfg["kind"],
        study=fcfg["study"],
        soop=fcfg["soop"],
        spiobsid=fcfg["spiobsid"],
    )
    return [Path(p) for p in files], rejected


def output_path(cfg, path: Path, window: str = "all", level: str = "l3") -> Path:
    """Output file name for an input file, from ``output.folder`` and ``output.template``."""
    from ..errors import SpiceFileError
    from ..io.filenames import parse_spice_filename
    from ..io.netcdf import output_name

    attrs = {"filename": Path(path).name}
    try:
        parsed = parse_spice_filename(path)
    except SpiceFileError:
        pass  # a non-standard name: only {stem} is available
    else:
        attrs.update(
            SPIOBSID=parsed.spiobsid,
            RASTERNO=parsed.rasterno,
            **{"DATE-OBS": parsed.date.isoformat()},
        )
    folder = _resolve(cfg["_base_dir"], cfg["output"]["folder"])
    return folder / output_name(cfg["output"]["template"], attrs, window=window, level=level)


def _load_catalog(cfg):
    from ..catalog import LineCatalog

    if cfg["catalog"]["path"]:
        return LineCatalog.load(_resolve(cfg["_base_dir"], cfg["catalog"]["path"]))
    return LineCatalog.default()


def _window_model(cfg, name, ds, radiance, error, catalog):
    from ..catalog import guess_model
    from ..fit.model import LineModel

    override = cfg["models"].get(name) or cfg["models"].get(ds.attrs.get("EXTNAME", ""))
    if override is not None:
        if isinstance(override, dict):
            return LineModel.from_dict(override)
        return LineModel.from_json(_resolve(cfg["_base_dir"], override).read_text())
    return guess_model(
        radiance,
        catalog,
        error=error,
        min_snr=cfg["catalog"]["min_snr"],
        background_degree=cfg["catalog"]["background_degree"],
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


def _fit_noise(cfg: dict, radiance: xr.DataArray, terms):
    """The noise terms for model-based weights (issue 12), or None.

    With the noise model on, fits take their weights from the fitted model rather than from
    the noisy samples (``fit_lines(noise=...)``): the calibrated terms when calibrated,
    else the SPICE model's. Not after denoising, whose output no longer has the model's
    noise (the input errors are kept there, see below).
    """
    pcfg = cfg["prep"]
    if not pcfg["noise"]["enabled"] or pcfg["denoise"]["enabled"]:
        return None
    if terms is None:
        from ..prep import spice_noise_terms

        terms = spice_noise_terms(radiance, dark_factor=pcfg["noise"]["dark_factor"])
    return terms


def process_window(cfg: dict, name: str, ds: xr.Dataset, catalog) -> xr.Dataset:
    """Prepare, model, fit and derive one window Dataset; returns a lazy result Dataset.

    Only the mean spectrum used by the model guess is computed here.
    """
    from .. import derive
    from ..fit.core import fit_lines

    radiance = ds["radiance"]
    pcfg = cfg["prep"]
    error = None
    if pcfg["noise"]["enabled"]:
        from ..prep import spice_error

        error = spice_error(radiance, dark_factor=pcfg["noise"]["dark_factor"])
    # --- noise calibration (issue 12; prep.noise.calibrate): the model's floor and photon
    # terms rescaled to the noise measured in this window (one small statistics pass);
    # sigma from max(I, 0), no |I| rule; ratios and method go to the window's attrs.
    # noise_terms is what fit_lines(noise=...) takes for model-weighted fits.
    noise_terms, noise_provenance = None, {}
    if pcfg["noise"]["enabled"] and pcfg["noise"]["calibrate"]:
        from ..prep import calibrate_noise_terms, error_from_terms

        try:
            noise_terms = calibrate_noise_terms(radiance, dark_factor=pcfg["noise"]["dark_factor"])
        except ValueError as exc:  # e.g. a window too small to measure: keep the model
            log.warning("%s: noise not calibrated (%s); SPICE model kept", name, exc)
            noise_provenance = {"noise_calibration_method": f"not calibrated: {exc}"}
        else:
            error = error_from_terms(radiance, noise_terms)
            noise_provenance = {
                k: noise_terms.attrs[k]
                for k in (
                    "noise_floor_ratio",
                    "noise_signal_ratio",
                    "noise_signal_measured",
                    "noise_calibration_method",
                    "noise_calibration",
                )
            }
    # --- end of noise calibration
    if pcfg["despike"]["enabled"]:
        from ..prep import despike

        radiance, _changed = despike(
            radiance,
            n_sigma=pcfg["despike"]["threshold"],
            replace=pcfg["despike"]["replace"],
            dark_factor=pcfg["noise"]["dark_factor"],
        )
    if pcfg["denoise"]["enabled"]:
        from ..prep import denoise

        if error is None:
            raise ValueError("prep.denoise needs the noise model (prep.noise.enabled: true)")
        # keep the input errors: the denoiser's propagated error ignores the correlation it
        # introduces between neighbouring samples, so fitted errors would come out too small
        radiance = denoise(radiance, error, threshold=pcfg["denoise"]["threshold"])["radiance"]
    # the guess reads the mean spectrum of the *input* radiance: guessing from the prepared
    # one would compute despike/denoise twice (once here, once in the fit), about 70 s of a
    # 220 s full composition raster (benchmarks/bench_prep_memory.py); a few spikes among
    # ~160,000 pixels do not move the window's mean spectrum measurably
    model = _window_model(cfg, name, ds, ds["radiance"], error, catalog)
    levels = pcfg["binning"]["levels"]
    if len(levels) > 1 or levels[0] != 1:
        from ..prep import bin_levels

        if error is None:
            raise ValueError("prep.binning needs the noise model (prep.noise.enabled: true)")
        stacked = bin_levels(
            radiance, error, sizes=levels, min_valid=pcfg["binning"]["min_valid_fraction"]
        )
        params = fit_lines(
            stacked["radiance"],
            model,
            error=stacked["error"],
            level_dim="level",
            thresholds=dict(pcfg["binning"]["thresholds"]),
        )
    else:
        params = fit_lines(
            radiance, model, error=error, noise=_fit_noise(cfg, radiance, noise_terms)
        )
    dcfg = cfg["derive"]
    extra = {}
    if dcfg["radiance"]:
        extra.update(derive.radiance(params).data_vars)
    ref = dcfg["doppler_reference"]
    if ref is not None:
        extra.update(derive.doppler_velocity(params, reference=ref).data_vars)
    if dcfg["widths"]:
        extra.update(derive.fwhm(params).data_vars)
    return params.assign(extra).assign_attrs(noise_provenance)


def process_tree(cfg: dict, tree: xr.DataTree, catalog=None) -> xr.DataTree:
    """Lazy results for every selected window of an opened file (a DataTree like the input)."""
    catalog = catalog if catalog is not None else _load_catalog(cfg)
    pairs = [(n, c.dataset.attrs.get("EXTNAME", n)) for n, c in tree.children.items()]
    names = _selected(cfg, pairs)
    if not names:
        raise ValueError(
            "no window left after windows.include/exclude; the file has "
            + ", ".join(n for n, _ in pairs)
        )
    out = xr.DataTree(xr.Dataset(attrs=dict(tree.attrs)))
    for name in names:
        out[name] = xr.DataTree(process_window(cfg, name, tree[name].dataset, catalog))
    return out


def _count(results: xr.DataTree):
    """(spectra with enough valid samples to fit, of which converged) over all windows."""
    import numpy as np

    from ..fit.status import FitStatus

    n = conv = 0
    skipped = [int(FitStatus.ALL_NAN), int(FitStatus.TOO_FEW_VALID)]
    good = [int(FitStatus.CONVERGED), int(FitStatus.CONVERGED_AT_BOUND)]
    for node in results.children.values():
        st = np.asarray(node.dataset["status"])
        n += int((~np.isin(st, skipped)).sum())
        conv += int(np.isin(st, good).sum())
    return n, conv


def _process_file(cfg, path: Path, catalog, progress: bool) -> FileResult:
    from .. import __version__
    from ..io.netcdf import to_netcdf
    from ..io.reader import open_spice

    t0 = time.perf_counter()
    tree = open_spice(path, chunks=dict(cfg["chunks"]), dumbbells=cfg["windows"]["dumbbells"])
    out_path = output_path(cfg, path)
    results = process_tree(cfg, tree, catalog)
    results.attrs.update(
        saffron_xr_version=__version__,
        configuration=config_json(cfg),
        input_files=path.name,
        saffron_xr_complete=1,
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if _in_process_scheduler():
        # to_netcdf computes the windows one by one while it writes them: only the chunks
        # in flight and one window's variables are in memory, never all the results
        ctx = contextlib.nullcontext()
        if progress:
            from dask.diagnostics import ProgressBar

            ctx = ProgressBar(minimum=1.0)
        with ctx:
            to_netcdf(results, out_path, config=cfg)
    else:  # worker processes may not share this file system: gather the results here
        to_netcdf(_compute_tree(results, progress), out_path, config=cfg)
    with _reopen(out_path) as written:
        if cfg["output"]["quicklook"]:
            from ..plot import quicklook

            quicklook(written, path=out_path.with_suffix(".png"))
        if cfg["output"]["l3_fits"]:
            from ..io.l3fits import to_l3_fits

            for name, node in written.children.items():
                to_l3_fits(node.dataset, out_path.with_name(f"{out_path.stem}_{name}_L3.fits"))
        n, conv = _count(written)
    return FileResult(
        str(path),
        "done",
        str(out_path),
        seconds=time.perf_counter() - t0,
        n_spectra=n,
        n_converged=conv,
    )


@contextlib.contextmanager
def _reopen(path: Path):
    """A written results file, lazily; the file is closed on leaving the block.

    A handle left open would make later checks of this path (resume) read cached old content.
    """
    from ..io.netcdf import open_results

    tree = open_results(path)
    try:
        yield tree
    finally:
        tree.close()


def _in_process_scheduler() -> bool:
    """True if dask computes in this process (threads or synchronous, no distributed Client)."""
    from .scheduler import active_client

    sched = dask.config.get("scheduler", None)
    if sched in (None, "dask.distributed", "distributed"):
        return active_client() is None
    return sched in ("threads", "threading", "synchronous", "sync", "single-threaded")


def _compute_tree(results: xr.DataTree, progress: bool = False) -> xr.DataTree:
    """Compute every window of a result tree in one dask call (windows run in parallel)."""
    from .scheduler import active_client

    names = list(results.children)
    lazy = [results[n].dataset for n in names]
    client = None
    if dask.config.get("scheduler", None) in (None, "dask.distributed", "distributed"):
        client = active_client()
    if client is not None:
        persisted = [ds.persist() for ds in lazy]
        if progress:
            from distributed import progress as dist_progress

            dist_progress(
                [
                    v.data
                    for ds in persisted
                    for v in ds.variables.values()
                    if dask.is_dask_collection(v.data)
                ]
            )
        datasets = compute_datasets(*persisted)
    else:
        ctx = contextlib.nullcontext()
        if progress:
            from dask.diagnostics import ProgressBar

            ctx = ProgressBar(minimum=1.0)
        with ctx:
            datasets = compute_datasets(*lazy)
    out = xr.DataTree(xr.Dataset(attrs=dict(results.attrs)))
    for name, ds in zip(names, datasets, strict=True):
        out[name] = xr.DataTree(ds)
    return out


def run(config, *, progress: bool = False, scheduler: str | None = None) -> RunSummary:
    """Run a configured batch: select files, fit every window, write one result file each.

    Parameters
    ----------
    config : dict or path-like
        A configuration mapping (validated here) or a YAML file (see ``saffron-xr init``).
    progress : bool, default False
        Show progress bars (used by the command line; off when called from code).
    scheduler : str, optional
        Override ``scheduler.kind``.

    Returns
    -------
    RunSummary
        Per-file outcome; failures carry their reason. A failing file never stops the batch.
    """
    if isinstance(config, dict):
        cfg = validate_config(config, base_dir=config.get("_base_dir"))
    else:
        cfg = load_config(config)
    if scheduler is not None:
        cfg["scheduler"]["kind"] = scheduler
        cfg = validate_config(cfg, base_dir=cfg["_base_dir"])
    t0 = time.perf_counter()
    files, not_spice = _input_files(cfg)
    results: list[FileResult] = []
    for path in not_spice:
        log.error("failed: %s: not a SPICE file name", path)
        results.append(FileResult(str(path), "failed", error="not a SPICE file name"))
    catalog = _load_catalog(cfg)
    with scheduler_context(cfg["scheduler"]) as sched_name:
        for i, path in enumerate(files):
            if progress:
                log.info("[%d/%d] %s", i + 1, len(files), path.name)
            try:
                _remove_partial_outputs(output_path(cfg, path))
                if cfg["output"]["resume"]:
                    done = _complete_output(cfg, path)
                    if done is not None:
                        results.append(FileResult(str(path), "skipped", str(done)))
                        continue
                results.append(_process_file(cfg, path, catalog, progress))
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # a bad file is reported, the batch goes on
                if isinstance(exc, SpiceFileError):  # the message starts with the path
                    same = Path(exc.path).name == path.name
                    reason = exc.problem if same else str(exc)
                else:
                    reason = f"{type(exc).__name__}: {exc}"
                log.error("failed: %s: %s", path, reason)
                results.append(FileResult(str(path), "failed", error=reason))
    return RunSummary(results, sched_name, time.perf_counter() - t0)


def _remove_partial_outputs(out: Path) -> None:
    """Delete ``.part`` files a killed writer left for ``out`` (see ``io.netcdf.to_netcdf``)."""
    if not out.parent.is_dir():
        return
    for part in out.parent.glob(f".{glob.escape(out.name)}.*.part"):
        log.info("removing the partial output %s", part)
        part.unlink(missing_ok=True)


def _complete_output(cfg, path: Path):
    """The existing complete output of ``path``, or None (partial files never count)."""
    out = output_path(cfg, path)
    if not out.exists():
        return None
    try:
        with xr.open_datatree(out) as existing:
            if existing.attrs.get("saffron_xr_complete", 0) != 1:
                return None
    except Exception:
        return None
    return out
