"""One input file from start to written results: the unit of work of a campaign.

:func:`process_file` opens the file, runs :func:`~saffron_xr.pipeline.steps.process_tree`,
writes the results (atomically), the requested products and the FIP maps, and returns a small
:class:`~saffron_xr.pipeline.summary.FileResult`; a failure is returned, never raised.
:func:`process_file_on_worker` is the same, run as a task on a distributed worker with the
worker's own threads: the worker writes, the client receives only the FileResult.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import threading
import time
from pathlib import Path

import dask
import xarray as xr

from .._compute import compute_datasets
from ..errors import SpiceFileError
from . import resume
from .config import config_json
from .steps import count_status, process_tree
from .summary import FileResult

__all__ = ["process_file", "process_file_on_worker", "warm_kernels"]

log = logging.getLogger(__name__)


#: The netCDF-C library is not thread-safe, and xarray does not lock all of its calls (two
#: threads creating variables in two files can crash the process): one file at a time per
#: process reads or writes netCDF. Files in flight in one process therefore compute their
#: results first, in parallel, and only write under this lock.
NETCDF_LOCK = threading.RLock()


def _close_what_failed() -> None:
    """Close, holding `NETCDF_LOCK`, the netCDF files that a failed step left open.

    A write that fails (disk full, file size limit) leaves its netCDF4 Dataset open, reachable
    only from the exception's traceback: it is closed when the garbage collector frees it,
    in whichever thread happens to start a collection, possibly while another file's netCDF
    call runs in another thread (the test suite crashed that way: SIGSEGV in netCDF open
    while another thread was collecting). Collected here, it closes where no other netCDF
    call can run. Call it once the exception is gone.
    """
    with NETCDF_LOCK:
        gc.collect()


class Stopped(KeyboardInterrupt):
    """The campaign was interrupted while this file was in flight."""


def _check_stop(stop) -> None:
    if stop is not None and stop.is_set():
        raise Stopped("the campaign was interrupted")


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


def _median_attr(tree: xr.DataTree, name: str) -> float | None:
    """Median over windows of a numeric window attribute (None if no window has it)."""
    import numpy as np

    values = [node.attrs.get(name) for node in tree.children.values()]
    values = [float(v) for v in values if isinstance(v, (int, float, np.number))]
    return float(np.median(values)) if values else None


def _write_products(cfg, out: Path) -> dict:
    """Quicklook and L3 FITS from the written results (each written atomically); returns the
    counts and noise ratios of the results for the summary."""
    with NETCDF_LOCK, _reopen(out) as written:
        if cfg["output"]["quicklook"]:
            from ..plot import quicklook

            quicklook(written, path=out.with_suffix(".png"))
        if cfg["output"]["l3_fits"]:
            from ..io.l3fits import to_l3_fits

            for name, node in written.children.items():
                to_l3_fits(node.dataset, resume.l3_path(out, name))
        n, conv, at_bound = count_status(written)
        return {
            "n_spectra": n,
            "n_converged": conv,
            "n_at_bound": at_bound,
            "noise_floor_ratio": _median_attr(written, "noise_floor_ratio"),
            "noise_photon_ratio": _median_attr(written, "noise_signal_ratio"),
        }


def _fip(cfg, out: Path) -> tuple[str | None, str]:
    """The FIP step (``fip:`` section) on written results: (FIP file or None, note).

    It reads the results and writes the FIP file with netCDF, so it holds `NETCDF_LOCK`:
    with several files in flight another file may be writing its results meanwhile, and
    netCDF-C is not thread-safe (concurrent calls can crash the process)."""
    fcfg = cfg.get("fip") or {}
    if not fcfg.get("enabled"):
        return None, ""
    try:
        from .fip_step import fip_for_file
    except ImportError:
        log.warning("%s: fip.enabled but the FIP step is not installed; skipped", out.name)
        return None, "FIP step not available"
    try:
        with NETCDF_LOCK:
            made = fip_for_file(fcfg, out, cfg)
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except Exception as exc:  # the results stand; the FIP maps are reported missing
        log.warning("%s: FIP maps not made (%s)", out.name, exc)
        note = f"FIP maps not made: {exc}"
    else:
        return (str(made) if made is not None else None), ""
    _close_what_failed()
    return None, note


def _write_results(cfg, results, out_path: Path, progress: bool, stop, compute_first) -> None:
    from ..io.netcdf import to_netcdf

    fmt = cfg["output"].get("format")
    codec = cfg["output"].get("compression", "zstd")
    codec = None if codec in ("none", None) else codec
    if _in_process_scheduler() and not compute_first:
        # to_netcdf computes every window in one dask computation while it writes them
        # chunk by chunk: only the chunks in flight are in memory, never all the results
        ctx = contextlib.nullcontext()
        if progress:
            from dask.diagnostics import ProgressBar

            ctx = ProgressBar(minimum=1.0)
        with ctx, NETCDF_LOCK:
            to_netcdf(results, out_path, config=cfg, format=fmt, compression=codec)
        return
    # other files are in flight in this process (netCDF writes one at a time), or computed on
    # a cluster whose workers may not share this file system (output.shared_filesystem:
    # false): compute the results, then write them
    computed = _compute_tree(results)
    _check_stop(stop)
    with NETCDF_LOCK:
        to_netcdf(computed, out_path, config=cfg, format=fmt, compression=codec)


def _process(cfg, path, catalog, progress, stop=None, compute_first=False) -> FileResult:
    from ..io.reader import open_spice

    t0 = time.perf_counter()
    identity = resume.input_identity(path)
    tree = open_spice(path, chunks=dict(cfg["chunks"]), dumbbells=cfg["windows"]["dumbbells"])
    out_path = resume.output_path(cfg, path)
    results = process_tree(cfg, tree, catalog)
    fp = resume.fingerprint(cfg)
    results.attrs.update(
        saffron_xr_version=fp["saffron_xr_version"],
        configuration=config_json(cfg),
        saffron_xr_fingerprint=json.dumps(fp, sort_keys=True),
        saffron_xr_input=json.dumps(identity, sort_keys=True),
        input_files=path.name,
        saffron_xr_complete=1,
    )
    failed_windows = dict(results.attrs.get("failed_windows", {}))
    # products of an earlier run must not outlive results they no longer match
    for paths in resume.products(cfg, out_path, results.children).values():
        for p in paths:
            p.unlink(missing_ok=True)
    _check_stop(stop)
    _write_results(cfg, results, out_path, progress, stop, compute_first)
    summary = _write_products(cfg, out_path)
    fip_output, fip_note = _fip(cfg, out_path)
    return FileResult(
        str(path), "done", str(out_path), seconds=time.perf_counter() - t0,
        failed_windows=failed_windows, fip_output=fip_output, note=fip_note, **summary,
    )  # fmt: skip


def _in_process_scheduler() -> bool:
    """True if dask computes in this process (threads or synchronous, no distributed Client)."""
    from .scheduler import active_client

    sched = dask.config.get("scheduler", None)
    if sched in (None, "dask.distributed", "distributed"):
        return active_client() is None
    return sched in ("threads", "threading", "synchronous", "sync", "single-threaded")


def _compute_tree(results: xr.DataTree) -> xr.DataTree:
    """Compute every window of a result tree in one dask call (windows run in parallel)."""
    names = list(results.children)
    datasets = compute_datasets(*[results[n].dataset for n in names])
    out = xr.DataTree(xr.Dataset(attrs=dict(results.attrs)))
    for name, ds in zip(names, datasets, strict=True):
        out[name] = xr.DataTree(ds)
    return out


def _failure_reason(exc: Exception, path: Path) -> str:
    if isinstance(exc, SpiceFileError):  # the message starts with the path
        return exc.problem if Path(exc.path).name == path.name else str(exc)
    if isinstance(exc, (ValueError, FileNotFoundError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _resumed(cfg, path: Path, force: bool, counter: str) -> tuple[FileResult | None, str]:
    """(a FileResult if resume settles the file, else None; the note for a redone file)."""
    out = resume.output_path(cfg, path)
    if cfg["output"]["resume"] and not force:
        t0 = time.perf_counter()
        with NETCDF_LOCK:
            action, note = resume.resume_state(cfg, path)
        if action == "skip":
            log.info("%s %s: skipped (complete output %s exists)", counter, path.name, out)
            return FileResult(str(path), "skipped", str(out)), ""
        if action == "products":
            made = note[len("missing ") :]
            summary = _write_products(cfg, out)
            log.info("%s %s: done (%s made)", counter, path.name, made)
            return FileResult(
                str(path), "done", str(out), seconds=time.perf_counter() - t0,
                note=f"results current, made the {made}", **summary,
            ), ""  # fmt: skip
        return None, f"redone: {note}" if note else ""
    return None, "redone: --force" if force and out.exists() else ""


def process_file(
    cfg: dict,
    path,
    catalog,
    *,
    force: bool = False,
    scanned: bool = False,
    counter: str = "",
    progress: bool = False,
    stop: threading.Event | None = None,
    compute_first: bool = False,
) -> FileResult:
    """Process (or skip) one file of a configured batch; a failure is returned, never raised.

    Parameters
    ----------
    cfg : dict
        A validated configuration.
    path : path-like
        The input file.
    catalog : LineCatalog
        The catalog for the model guesses.
    force : bool
        Redo the file even if ``output.resume`` would skip it.
    scanned : bool
        The file was found in a folder or by a glob (not listed): a file that is not an
        input (L3, header only) is then ``"ignored"`` rather than ``"failed"``.
    counter : str
        A prefix for the log lines, e.g. ``"[3/10]"``.
    progress : bool
        Show dask's progress bar while the file computes (in-process schedulers).
    stop : threading.Event, optional
        Set when the campaign is interrupted: the file stops before it writes.
    compute_first : bool
        Compute all the results before writing them (other files are in flight in this
        process: netCDF writes go one at a time); otherwise they are streamed to the file.

    Returns
    -------
    FileResult
    """
    from ..io.select import not_an_input

    path = Path(path)
    log.info("%s %s: started", counter, path.name)
    try:
        reason = not_an_input(path)
        if reason is not None:
            status = "ignored" if scanned else "failed"
            # the reason is printed once, in the summary
            log.log(logging.INFO if status == "ignored" else logging.ERROR,
                    "%s %s: %s", counter, path.name, status.upper())  # fmt: skip
            return FileResult(str(path), status, error=reason)
        resume.remove_partial_outputs(resume.output_path(cfg, path))
        settled, note = _resumed(cfg, path, force, counter)
        if settled is not None:
            return settled
        result = _process(cfg, path, catalog, progress, stop, compute_first)
        result.note = "; ".join(n for n in (note, result.note) if n)
        failed = f" ({len(result.failed_windows)} window(s) failed)"
        log.info("%s %s: done in %.1f s%s", counter, path.name, result.seconds,
                 failed if result.failed_windows else "")  # fmt: skip
        return result
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # a bad file is reported, the batch goes on
        reason = _failure_reason(exc, path)
        # the reason is printed once, in the summary; the log names the file
        log.error("%s %s: FAILED", counter, path.name)
        log.debug("%s: %s", path, reason, exc_info=True)
    _close_what_failed()  # the exception and its traceback are gone here
    return FileResult(str(path), "failed", error=reason)


# ----------------------------------------------------------------------------- on a worker

_LOCAL_THREADS = {"users": 0, "restore": None}
_LOCAL_LOCK = threading.Lock()


@contextlib.contextmanager
def _worker_threads(n: int):
    """Compute with a local thread pool of ``n`` threads while any file task runs here.

    dask's configuration is per process: with several file tasks on one worker (or a worker
    in the client's process), the scheduler is set by the first task in and restored by the
    last one out, so that no task finds the distributed client restored under it.
    """
    with _LOCAL_LOCK:
        if _LOCAL_THREADS["users"] == 0:
            _LOCAL_THREADS["restore"] = dask.config.set(scheduler="threads", num_workers=n)
        _LOCAL_THREADS["users"] += 1
    try:
        yield
    finally:
        with _LOCAL_LOCK:
            _LOCAL_THREADS["users"] -= 1
            if _LOCAL_THREADS["users"] == 0:
                _LOCAL_THREADS["restore"].__exit__(None, None, None)


def process_file_on_worker(
    cfg: dict, path: str, catalog, force: bool, scanned: bool, counter: str
) -> FileResult:
    """:func:`process_file` as a task of a distributed worker: the file is computed with the
    worker's own threads and written by the worker; only the FileResult goes back.

    Needs a file system shared by the workers and the client (``output.shared_filesystem``).
    """
    from distributed import get_worker

    n = get_worker().state.nthreads
    with _worker_threads(n):
        return process_file(cfg, path, catalog, force=force, scanned=scanned, counter=counter,
                            compute_first=n > 1)  # fmt: skip


def warm_kernels(dtype: str = "float32", adaptive: bool = False) -> float:
    """Build the fit kernel and the noise calibration's compiled statistics in this process
    (loaded from numba's on-disk cache when it is warm); returns the seconds it took.

    Run once per worker at the start of a campaign (SPICE L2 data are float32), so that
    the files in flight on a worker never wait on each other's compilation.
    """
    from ..fit import _kernels
    from ..prep import _calibrate_kernels

    t0 = time.perf_counter()
    (_kernels.adaptive_gufunc if adaptive else _kernels.fit_gufunc)(dtype)
    _calibrate_kernels.warm()
    return time.perf_counter() - t0
