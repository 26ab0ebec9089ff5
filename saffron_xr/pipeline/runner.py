"""The batch runner: configured runs from SPICE L2 files to result files.

For each selected file: open lazily, prepare (noise model, despike, denoise, binning), guess
or load line models, fit, derive physical quantities, and write one netCDF file (one group per
window) atomically; several files are in flight at once. A file that fails is logged and
reported; the batch goes on. The pieces: :mod:`~saffron_xr.io.select` finds the files,
:mod:`.steps` composes the science, :mod:`.filejob` does one file, :mod:`.campaign` runs
many, :mod:`.resume` decides what is already done.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from .campaign import CampaignInterrupted, Job, run_jobs, write_index
from .config import load_config, resolve_path, validate_config
from .resume import output_path
from .scheduler import active_client, scheduler_context
from .steps import load_catalog, process_tree, process_window
from .summary import BatchError, BatchInterrupted, FileResult, RunSummary

__all__ = [
    "run",
    "check",
    "RunSummary",
    "FileResult",
    "BatchError",
    "BatchInterrupted",
    "process_tree",
    "process_window",
    "output_path",
]

log = logging.getLogger(__name__)


def _input_files(cfg) -> tuple[list[Path], list[Path], set[str]]:
    """(SPICE files to process, FITS files with non-SPICE names found in the sources, the
    files found by scanning a folder or glob: among them, files that are not inputs -- L3,
    header-only -- are ignored with a reason rather than failed)."""
    from ..io.select import NoMatchError, expand_sources, select_files

    fcfg = cfg["files"]
    sources = [fcfg["source"]] if isinstance(fcfg["source"], str) else list(fcfg["source"])
    try:
        resolved, rejected, scanned = expand_sources(
            [str(resolve_path(cfg, s)) for s in sources],
            exclude=resolve_path(cfg, cfg["output"]["folder"]),
        )
    except NoMatchError as exc:
        raise BatchError(f"files.source: {exc}") from exc
    if not resolved:
        return [], rejected, scanned
    filters = {k: fcfg[k] for k in ("start", "end", "kind", "study", "soop", "spiobsid")}
    return [Path(p) for p in select_files(resolved, **filters)], rejected, scanned


def _check_output_folder(folder: Path) -> None:
    """Raise :class:`BatchError` unless ``folder`` exists or can be created, and is writable.

    The folder itself is created if missing (its parent must exist: a mistyped path should
    not silently create a tree of folders).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise BatchError(f"output.folder: {folder} is a file, not a folder")
    if not folder.exists():
        if not folder.parent.is_dir():
            raise BatchError(
                f"output.folder: cannot create {folder}: its parent {folder.parent} does not exist"
            )
        try:
            folder.mkdir()
        except OSError as exc:
            raise BatchError(f"output.folder: cannot create {folder} ({exc.strerror})") from exc
    probe = folder / f".saffron_write_test.{os.getpid()}"
    try:
        probe.write_bytes(b"")
    except OSError as exc:
        raise BatchError(f"output.folder: cannot write in {folder} ({exc.strerror})") from exc
    finally:
        probe.unlink(missing_ok=True)


def check(config) -> list[str]:
    """Problems that would stop a configured batch from starting (empty if it can start).

    Checks the configuration, that the sources exist and give at least one input file, that
    the output folder is usable (without creating it), and that the scheduler can be set up
    (an address for ``address``, the optional packages for ``local``/``slurm``/``pbs``).

    Parameters
    ----------
    config : dict or path-like
        As for :func:`run`.

    Returns
    -------
    list of str
        One line per problem.
    """
    from .config import ConfigError

    try:
        cfg = _config_of(config)
    except ConfigError as exc:
        return [str(exc)]
    problems = []
    try:
        files, rejected, _scanned = _input_files(cfg)
        if not files and not rejected:
            problems.append("files.source: no SPICE file found in " + _sources_text(cfg))
    except (BatchError, FileNotFoundError, ValueError) as exc:
        problems.append(str(exc))
    problems += _folder_problems(resolve_path(cfg, cfg["output"]["folder"]))
    return problems + _scheduler_problems(cfg["scheduler"])


def _folder_problems(folder: Path) -> list[str]:
    if folder.exists() and not folder.is_dir():
        return [f"output.folder: {folder} is a file, not a folder"]
    if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
        return [f"output.folder: {folder} is not writable"]
    if not folder.exists() and not folder.parent.is_dir():
        return [
            f"output.folder: cannot create {folder}: its parent {folder.parent} does not exist"
        ]
    if not folder.exists() and not os.access(folder.parent, os.W_OK | os.X_OK):
        return [f"output.folder: cannot create {folder}: {folder.parent} is not writable"]
    return []


def _scheduler_problems(sched: dict) -> list[str]:
    kind = sched["kind"]
    problems = []
    if kind == "address" and not sched["address"]:
        problems.append("scheduler.address: required when scheduler.kind is address")
    modules = {"local": "distributed", "address": "distributed", "slurm": "dask_jobqueue",
               "pbs": "dask_jobqueue"}  # fmt: skip
    if kind in modules:
        import importlib.util

        if importlib.util.find_spec(modules[kind]) is None:
            problems.append(
                f"scheduler.kind {kind} needs the {modules[kind]} package (not installed)"
            )
    return problems


def _sources_text(cfg) -> str:
    source = cfg["files"]["source"]
    return ", ".join([source] if isinstance(source, str) else source)


def _config_of(config, scheduler=None, address=None) -> dict:
    if isinstance(config, dict):
        cfg = validate_config(config, base_dir=config.get("_base_dir"))
    else:
        cfg = load_config(config)
    if scheduler is not None or address is not None:
        if scheduler is not None:
            cfg["scheduler"]["kind"] = scheduler
        if address is not None:
            cfg["scheduler"]["address"] = address
        cfg = validate_config(cfg, base_dir=cfg["_base_dir"])
    return cfg


def run(
    config,
    *,
    progress: bool = False,
    scheduler: str | None = None,
    address: str | None = None,
    force: bool = False,
    allow_empty: bool = False,
) -> RunSummary:
    """Run a configured batch: select files, fit every window, write one result file each.

    Parameters
    ----------
    config : dict or path-like
        A configuration mapping (validated here) or a YAML file (see ``saffron-xr init``).
    progress : bool, default False
        dask's progress bar while a file computes, when files go one at a time in this process
        (used by the command line on a terminal; off when called from code). The campaign's
        progress, one line per file finished (files done, spectra per second), is logged at
        INFO in every case.
    scheduler : str, optional
        Override ``scheduler.kind``.
    address : str, optional
        Override ``scheduler.address`` (the scheduler of ``scheduler.kind: address``).
    force : bool, default False
        Process every file even if ``output.resume`` would skip it.
    allow_empty : bool, default False
        Return an empty summary when the sources hold no SPICE file, instead of raising.

    Returns
    -------
    RunSummary
        Per-file outcome; failures carry their reason. A failing file never stops the batch.

    Raises
    ------
    BatchError
        Before any work: a source that does not exist, no input file (unless
        ``allow_empty``), or an output folder that cannot be created or written.
    BatchInterrupted
        On KeyboardInterrupt; it carries the summary of the files finished before.

    Notes
    -----
    Files are processed ``scheduler.files_in_flight`` at a time (see
    :mod:`saffron_xr.pipeline.campaign`); on a distributed cluster each file runs on a worker,
    which writes its outputs (``output.shared_filesystem``). After each file,
    ``campaign_index.csv`` in the output folder is rewritten: one row per input file.

    With ``output.resume`` a file is skipped only if its results file is complete and was
    made by this package version, from the same result-relevant configuration (``windows``,
    ``prep``, ``catalog``, ``models``, ``fuse``, ``locks``, ``derive`` and the content of
    the model/catalog files they name) and from the same input file (size and modification
    time), and every requested product (quicklook, L3 FITS) exists. A file whose results are
    current but a product is missing gets only the missing products; otherwise it is redone,
    and the summary says why.
    """
    cfg = _config_of(config, scheduler, address)
    t0 = time.perf_counter()
    files, not_spice, scanned = _input_files(cfg)
    if not files and not not_spice and not allow_empty:
        raise BatchError(f"no SPICE file found in {_sources_text(cfg)}; nothing to do")
    folder = resolve_path(cfg, cfg["output"]["folder"])
    if files:
        _check_output_folder(folder)
    results: list[FileResult] = []
    for path in not_spice:
        log.error("FAILED %s", path)
        results.append(FileResult(str(path), "failed", error="not a SPICE file name"))
    jobs = [Job(i + 1, len(files), p, str(p) in scanned) for i, p in enumerate(files)]
    finished: dict[int, FileResult] = {}
    tally = _Tally(len(files))

    def on_result(job: Job, result: FileResult) -> None:
        finished[job.number] = result
        tally.add(job, result)
        try:
            write_index(folder, results + [finished[k] for k in sorted(finished)])
        except OSError as exc:  # e.g. the disk is full: the files are what matters
            log.warning("campaign index not updated: %s", exc)

    sched_name = cfg["scheduler"]["kind"]
    try:
        with scheduler_context(cfg["scheduler"]) as sched_name:
            client = _campaign_client()
            if progress and client is None:
                log.info("(the first file waits near 1%% while numba compiles the fit kernel, "
                         "typically 10-20 s; later files start at once)")  # fmt: skip
            run_jobs(cfg, jobs, load_catalog(cfg), on_result, client=client, force=force,
                     progress=progress)  # fmt: skip
    except KeyboardInterrupt as exc:
        done = results + [finished[k] for k in sorted(finished)]
        summary = RunSummary(done, sched_name, time.perf_counter() - t0, interrupted=True)
        in_flight = exc.in_flight if isinstance(exc, CampaignInterrupted) else []
        raise BatchInterrupted(summary, in_flight[0] if in_flight else None, in_flight) from exc
    results += [finished[k] for k in sorted(finished)]
    return RunSummary(results, sched_name, time.perf_counter() - t0)


def _campaign_client():
    """The distributed Client the campaign runs on, or None (a local scheduler is set)."""
    import dask

    local = ("threads", "threading", "processes", "multiprocessing", "synchronous", "sync",
             "single-threaded")  # fmt: skip
    return None if dask.config.get("scheduler", None) in local else active_client()


class _Tally:
    """The campaign's progress: one INFO line per file finished (files done, spectra/s).

    On a terminal the command line shows these lines; otherwise they go to the log.
    """

    def __init__(self, total: int):
        self.total = total
        self.count = self.spectra = 0
        self.t0 = time.perf_counter()

    def add(self, job: Job, result: FileResult) -> None:
        self.count += 1
        self.spectra += result.n_spectra
        rate = self.spectra / max(time.perf_counter() - self.t0, 1e-9)
        log.info("campaign: %d/%d files finished (%s %s), %.0f spectra/s", self.count,
                 self.total, job.path.name, result.status, rate)  # fmt: skip
