"""Many files in flight: the campaign engines and the campaign index.

Two engines run :func:`~saffron_xr.pipeline.filejob.process_file` over the files of a run, a
bounded number at a time (``scheduler.files_in_flight``; on a cluster by default every file
is submitted and the scheduler runs as many as the workers have threads), and hand each
:class:`~saffron_xr.pipeline.summary.FileResult` to a callback as soon as its file finishes:

- in this process, on a thread pool (threads/processes/synchronous schedulers, and the
  ``output.shared_filesystem: false`` fallback of a distributed cluster, where each file is
  computed on the cluster and gathered here to be written);
- on a distributed cluster, one task per file (``client.submit``): the file's whole pipeline
  runs on a worker with the worker's threads and the worker writes the outputs, so the client
  holds only the small FileResults. A task whose worker is lost is rerun by dask (the
  scheduler's ``allowed-failures``; ``scheduler.retries`` resubmits a task that erred).

After each file the client rewrites ``<output folder>/campaign_index.csv`` (atomically).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from dask.callbacks import Callback

from ..io.campaign import INDEX_COLUMNS, INDEX_NAME
from .filejob import Stopped, process_file, process_file_on_worker, warm_kernels
from .summary import FileResult

__all__ = ["Job", "CampaignInterrupted", "run_jobs", "write_index", "INDEX_NAME", "INDEX_COLUMNS"]

log = logging.getLogger(__name__)

#: FileResult statuses that get a row in the index (an "ignored" file is not an input)
_INDEXED = ("done", "skipped", "failed")


@dataclasses.dataclass(frozen=True)
class Job:
    """One input file of a campaign: its place in the run, path, and how it was found."""

    number: int
    total: int
    path: Path
    scanned: bool

    @property
    def counter(self) -> str:
        return f"[{self.number}/{self.total}]"


class CampaignInterrupted(KeyboardInterrupt):
    """The campaign was interrupted; ``in_flight`` lists the files not finished."""

    def __init__(self, in_flight: list[str]):
        super().__init__("campaign interrupted")
        self.in_flight = in_flight


# ----------------------------------------------------------------------------- index


def _number(value, digits: int = 10) -> str:
    return "" if value is None else f"{value:.{digits}g}"


def index_row(result: FileResult) -> dict:
    """The campaign-index row of one file."""
    n = result.n_spectra
    return {
        "input": result.path,
        "status": result.status,
        "reason": result.error or result.note or "",
        "spectra": str(n) if result.status == "done" else "",
        "converged_fraction": _number(result.n_converged / n if n else None),
        "at_bound_fraction": _number(result.n_at_bound / n if n else None),
        "noise_floor_ratio": _number(result.noise_floor_ratio),
        "noise_photon_ratio": _number(result.noise_photon_ratio),
        "seconds": f"{result.seconds:.2f}",
        "output": result.output or "",
        "fip_output": result.fip_output or "",
    }


def write_index(folder: Path, results: list[FileResult]) -> Path | None:
    """Rewrite ``folder/campaign_index.csv`` atomically: one row per input file finished
    (done, skipped or failed), in the run's order. None if ``folder`` does not exist."""
    from ..io._atomic import write_atomically

    folder = Path(folder)
    if not folder.is_dir():
        return None
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=INDEX_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for result in results:
        if result.status in _INDEXED:
            writer.writerow(index_row(result))
    data = text.getvalue()
    return write_atomically(folder / INDEX_NAME, lambda part: Path(part).write_text(data))


# ----------------------------------------------------------------------------- engines


class _StopAtNextTask(Callback):
    """A dask callback that stops local computations once ``stop`` is set (Ctrl-C)."""

    def __init__(self, stop: threading.Event):
        super().__init__()
        self._stop = stop

    def _pretask(self, key, dsk, state):
        if self._stop.is_set():
            raise Stopped("the campaign was interrupted")


def files_in_flight(cfg: dict, client) -> int | None:
    """``scheduler.files_in_flight``, or its default: 2 in this process (one file's guess and
    write overlap another's fit), 1 if synchronous; None on a distributed cluster (every file
    is submitted, and the scheduler runs as many at once as the workers have threads)."""
    n = cfg["scheduler"].get("files_in_flight")
    if n:
        return int(n)
    if client is not None:
        return None
    return 1 if cfg["scheduler"]["kind"] == "synchronous" else 2


def run_jobs(cfg, jobs: list[Job], catalog, on_result, *, client=None, force=False,
             progress=False) -> None:  # fmt: skip
    """Process ``jobs``, a bounded number in flight; ``on_result(job, FileResult)`` is called
    in this thread as each file finishes.

    ``client``: a distributed Client. With ``output.shared_filesystem`` (default) each file
    runs on a worker; otherwise here, computed on the cluster.

    Raises
    ------
    CampaignInterrupted
        On KeyboardInterrupt; no file in flight is written under its final name by this
        process (files running on workers finish and are written atomically).
    """
    if not jobs:
        return
    n = min(files_in_flight(cfg, client) or len(jobs), len(jobs))
    if client is not None and cfg["output"].get("shared_filesystem", True):
        _run_on_workers(client, cfg, jobs, catalog, on_result, n, force, progress)
    else:
        n = n if client is None else min(n, _worker_threads(client))
        _run_here(cfg, jobs, catalog, on_result, n, force, progress, local=client is None)


def _run_here(cfg, jobs, catalog, on_result, n, force, progress, local) -> None:
    if n == 1:  # one at a time, in this thread (dask's progress bar per file)
        for i, job in enumerate(jobs):
            try:
                result = process_file(cfg, job.path, catalog, force=force, scanned=job.scanned,
                                      counter=job.counter, progress=progress)  # fmt: skip
            except KeyboardInterrupt as exc:
                raise CampaignInterrupted([str(jobs[i].path)]) from exc
            on_result(job, result)
        return
    stop = threading.Event()
    pending: dict = {}
    queue = iter(jobs)

    def submit(pool) -> None:
        job = next(queue, None)
        if job is not None:
            fut = pool.submit(process_file, cfg, job.path, catalog, force=force,
                              scanned=job.scanned, counter=job.counter, stop=stop,
                              compute_first=True)  # fmt: skip
            pending[fut] = job

    with ThreadPoolExecutor(n, thread_name_prefix="saffron-file") as pool, _StopAtNextTask(stop):
        for _ in range(n):
            submit(pool)
        current = None
        try:
            while pending:
                done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                for fut in done:
                    current = pending.pop(fut)
                    on_result(current, fut.result())  # KeyboardInterrupt from the file
                    current = None
                    submit(pool)
        except KeyboardInterrupt as exc:
            stop.set()
            in_flight = [
                str(j.path) for j in ([current] if current else []) + list(pending.values())
            ]
            if local:  # local computations stop at their next task: wait for their clean-up
                wait(pending)
            raise CampaignInterrupted(in_flight) from exc


def _warm_workers(client, cfg) -> None:
    """Load the fit kernel once on every worker before any file (see ``warm_kernels``)."""
    adaptive = cfg["prep"]["binning"]["sizes"] != [1]
    seconds = client.run(warm_kernels, "float32", adaptive)
    log.info("fit kernel ready on %d worker(s) in %s s", len(seconds),
             ", ".join(f"{s:.1f}" for s in seconds.values()))  # fmt: skip


def _worker_threads(client) -> int:
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    return max(1, sum(w.get("nthreads", 1) for w in workers))


def _show_progress(futures) -> None:
    """distributed's progress bar over the campaign's file tasks, drawn from a thread."""
    from distributed import progress

    def draw():
        try:
            progress(futures, notebook=False, multi=False)
        except Exception as exc:  # a display problem never stops the campaign
            log.debug("progress bar stopped: %s", exc)

    threading.Thread(target=draw, name="saffron-progress", daemon=True).start()


def _run_on_workers(client, cfg, jobs, catalog, on_result, n, force, progress) -> None:
    from dask.base import tokenize
    from distributed import as_completed

    _warm_workers(client, cfg)
    pending: dict = {}
    queue = iter(jobs)
    finished = as_completed()
    retries = cfg["scheduler"].get("retries", 2)

    def submit() -> None:
        job = next(queue, None)
        if job is None:
            return
        key = f"saffron-file-{job.path.stem}-{tokenize(str(job.path), time.time())}"
        fut = client.submit(process_file_on_worker, cfg, str(job.path), catalog, force,
                            job.scanned, job.counter, key=key, pure=False,
                            retries=retries)  # fmt: skip
        pending[fut] = job
        finished.add(fut)
        log.debug("%s %s: sent to the cluster", job.counter, job.path.name)

    for _ in range(n):
        submit()
    log.info("%d of %d file(s) submitted to the cluster (%d worker threads)", len(pending),
             len(jobs), _worker_threads(client))  # fmt: skip
    if progress and len(pending) == len(jobs):  # every file task known: one bar for all
        _show_progress(list(pending))
    try:
        for fut in finished:
            job = pending.pop(fut)
            on_result(job, _worker_result(fut, job))
            submit()
    except KeyboardInterrupt as exc:
        client.cancel(list(pending))
        raise CampaignInterrupted([str(j.path) for j in pending.values()]) from exc


def _worker_result(fut, job: Job) -> FileResult:
    """The FileResult of a file task; a task that erred (e.g. its worker lost more often than
    the scheduler allows) is the file's failure, not the campaign's."""
    try:
        return fut.result()
    except Exception as exc:
        log.error("%s %s: FAILED on the cluster", job.counter, job.path.name)
        return FileResult(str(job.path), "failed", error=f"{type(exc).__name__}: {exc}")
