"""Scheduler selection for batch runs: threads, processes, or a distributed cluster.

The library never starts a cluster by itself; :func:`scheduler_context` does so only when the
configuration asks for one (``local``, ``slurm``, ``pbs``) and closes it afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading

import dask

__all__ = ["scheduler_context", "jobqueue_cluster", "active_client"]

log = logging.getLogger(__name__)


def active_client():
    """The active ``distributed.Client``, or None (also when distributed is not installed)."""
    try:
        from distributed import get_client
    except ImportError:  # pragma: no cover - distributed is an optional extra
        return None
    try:
        return get_client()
    except ValueError:
        return None


def jobqueue_cluster(sched: dict):
    """Build (but do not scale) a dask-jobqueue SLURM or PBS cluster from the config section.

    Parameters
    ----------
    sched : dict
        The ``scheduler`` section of a validated configuration, kind ``slurm`` or ``pbs``.

    Returns
    -------
    dask_jobqueue.JobQueueCluster
        ``cluster.job_script()`` shows the batch script it would submit.
    """
    dask_jobqueue = _import_dask_jobqueue()
    jq = dict(sched["jobqueue"])
    jq.pop("jobs", None)
    params = {k: v for k, v in jq.items() if v is not None and v != []}
    if jq.get("job_extra_directives"):
        params["job_extra_directives"] = list(jq["job_extra_directives"])
    cls = dask_jobqueue.SLURMCluster if sched["kind"] == "slurm" else dask_jobqueue.PBSCluster
    return cls(**params)


def _import_dask_jobqueue():
    """``import dask_jobqueue``, keeping this process's SIGINT handler.

    dask-jobqueue 0.9.0 (the newest release) replaces the SIGINT handler of the main thread
    with ``sys.exit()`` when it is imported (dask-jobqueue issue 696): Ctrl-C would then end
    a run with SystemExit, exit status 0 and no report of what finished, instead of
    KeyboardInterrupt (``saffron-xr run``: status 130). The handler in place before the
    import is put back (Python's default one if it was not set from Python); if something
    imported dask-jobqueue earlier, its handler is replaced by Python's default one. A
    Ctrl-C during the import itself (a fraction of a second, once per process) is still
    SystemExit. That release cannot be imported outside the main thread (setting a handler
    raises there): a clear error says so.
    """
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGINT) if main else None
    if main and (before is None or getattr(before, "__module__", None) == "dask_jobqueue.runner"):
        before = signal.default_int_handler  # not set from Python, or an earlier import's
    try:
        import dask_jobqueue
    except ImportError as exc:
        raise ImportError(
            "scheduler.kind slurm/pbs needs dask-jobqueue: pip install 'saffron_xr[hpc]'"
        ) from exc
    except ValueError as exc:  # signal.signal outside the main thread
        raise RuntimeError(
            "scheduler.kind slurm/pbs: dask-jobqueue must first be imported in the main "
            f"thread (importing it in another thread failed: {exc})"
        ) from exc
    finally:
        if main and signal.getsignal(signal.SIGINT) is not before:
            signal.signal(signal.SIGINT, before)
    return dask_jobqueue


@contextlib.contextmanager
def scheduler_context(sched: dict):
    """Make the configured scheduler active for the ``with`` block.

    Parameters
    ----------
    sched : dict
        The ``scheduler`` section of a validated configuration.

    Yields
    ------
    str
        A short description of the scheduler in use (for logs and summaries).
    """
    kind = sched["kind"]
    n = sched.get("n_workers") or os.cpu_count() or 1
    if kind == "auto":
        client = active_client()
        if client is not None:
            yield f"distributed client {client.scheduler.address}"
            return
        kind = "threads"
    if kind in ("threads", "processes", "synchronous"):
        opts = {"scheduler": kind}
        if kind != "synchronous":
            opts["num_workers"] = n
        with dask.config.set(**opts):
            yield f"{kind} ({n} workers)" if kind != "synchronous" else kind
        return
    from distributed import Client, LocalCluster

    if kind == "address":
        with Client(sched["address"]) as client:
            yield f"distributed client {client.scheduler.address}"
        return
    if kind == "local":
        with (
            LocalCluster(
                n_workers=n,
                threads_per_worker=sched.get("threads_per_worker") or 1,
                processes=True,
                dashboard_address=":0",  # any free port: never clashes with another cluster
            ) as cluster,
            Client(cluster) as client,
        ):
            log.info("started LocalCluster with %d workers", n)
            yield f"LocalCluster ({n} workers) {client.scheduler.address}"
        return
    cluster = jobqueue_cluster(sched)
    try:
        cluster.scale(jobs=sched["jobqueue"].get("jobs") or 1)
        with Client(cluster) as client:
            yield f"{kind} cluster {client.scheduler.address}"
    finally:
        cluster.close()
