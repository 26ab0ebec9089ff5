"""The ``saffron-xr`` command: init, run, info, demo.

Heavy modules (numpy, xarray, dask, numba) are imported inside the sub-commands, so that
``saffron-xr --help`` and ``--version`` answer at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path

__all__ = ["main"]

#: Exit codes: 0 all done, 1 a file (or window) failed, 2 the batch could not start (bad
#: configuration, no input, unusable output folder), 128 + signal number when interrupted.
EXIT_FAILED, EXIT_UNUSABLE = 1, 2

_SCHEDULERS = ["auto", "threads", "processes", "synchronous", "local", "address", "slurm", "pbs"]


def _show_progress(args) -> bool:
    """Progress bars on a terminal unless --quiet (batch logs get the per-file lines only)."""
    return not args.quiet and sys.stdout.isatty()


def _cmd_init(args) -> int:
    from .pipeline.config import template_text

    path = Path(args.path)
    if path.exists() and not args.force:
        print(f"{path} exists; use --force to overwrite", file=sys.stderr)
        return 1
    path.write_text(template_text())
    print(f"wrote {path}")
    return 0


def _cmd_run(args) -> int:
    from .pipeline.config import ConfigError, load_config
    from .pipeline.runner import BatchError, check, run

    try:
        cfg = load_config(args.config)
        if args.scheduler is not None or args.address is not None:
            from .pipeline.runner import _config_of

            cfg = _config_of(cfg, args.scheduler, args.address)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    if args.check:
        problems = check(cfg)
        if problems:
            for p in problems:
                print(f"error: {args.config}: {p}", file=sys.stderr)
            return EXIT_UNUSABLE
        print(f"{args.config}: valid")
        return 0
    try:
        summary = _interruptible(
            lambda: run(
                cfg,
                progress=_show_progress(args),
                force=args.force,
                allow_empty=args.allow_empty,
            ),
            f"saffron-xr run {args.config}",
        )
    except BatchError as exc:
        print(f"error: {args.config}: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    if isinstance(summary, int):
        return summary
    print(summary)
    return 0 if summary.ok else EXIT_FAILED


# ----------------------------------------------------------------------------- signals

_RECEIVED: dict[str, int | None] = {"signal": None}


def _on_signal(signum, _frame):
    if _RECEIVED["signal"] is None:
        _RECEIVED["signal"] = signum
    raise KeyboardInterrupt


def _interruptible(work, command: str):
    """Run ``work()``; on SIGINT/SIGTERM say what finished and how to resume.

    Returns what ``work`` returns, or the exit code ``128 + signal number`` (130 for Ctrl-C,
    143 for SIGTERM) after an interruption.
    """
    from .pipeline.runner import BatchInterrupted

    _RECEIVED["signal"] = None
    installed = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            installed[sig] = signal.signal(sig, _on_signal)
        except ValueError:  # not the main thread: leave the handlers alone
            pass
    try:
        return work()
    except KeyboardInterrupt as exc:
        signum = _RECEIVED["signal"] or signal.SIGINT
        # a second signal during the report must not print a traceback
        for sig in installed:
            signal.signal(sig, signal.SIG_IGN)
        name = signal.Signals(signum).name
        lines = [f"interrupted by {name}."]
        if isinstance(exc, BatchInterrupted):
            s = exc.summary
            finished = s.done + s.skipped
            if finished:
                lines.append(f"{len(finished)} file(s) finished and kept:")
                lines += [f"  {Path(f.path).name} -> {f.output}" for f in finished]
            else:
                lines.append("no file finished.")
            for current in exc.in_flight:
                lines.append(
                    f"not finished (nothing written under its final name): {Path(current).name}"
                )
            if s.failed:
                lines.append(f"{len(s.failed)} file(s) failed before the interruption:")
                lines += [f"  FAILED   {Path(f.path).name}: {f.error}" for f in s.failed]
        lines.append(f"to resume, run the same command again ({command}): finished files are "
                     "skipped")  # fmt: skip
        print("\n".join(lines), file=sys.stderr)
        return 128 + int(signum)
    finally:
        for sig, old in installed.items():
            if signal.getsignal(sig) is _on_signal:
                signal.signal(sig, old)


# ----------------------------------------------------------------------------- info


def _info_files(items) -> list[str]:
    """Files named, and FITS files found in folders (recursively), in order."""
    out = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                Path(root) / name
                for root, _dirs, names in os.walk(p)
                for name in names
                if name.lower().endswith((".fits", ".fit", ".fts", ".fits.gz"))
                and not name.startswith(".")
            )
            if not found:
                print(f"error: {p}: no FITS file in this folder", file=sys.stderr)
                out.append(None)
            out += [str(f) for f in found]
        else:
            out.append(str(p))
    return out


def _cmd_info(args) -> int:
    from .errors import SpiceFileError
    from .io.reader import open_spice

    status = 0
    for f in _info_files(args.files):
        if f is None:
            status = 1
            continue
        try:
            tree = open_spice(f, dumbbells=True)
        except (SpiceFileError, FileNotFoundError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 1
            continue
        a = tree.attrs
        print(f"{f}")
        print(
            f"  study {a.get('STUDY', '?')}  SPIOBSID {a.get('SPIOBSID', '?')}  "
            f"raster {a.get('RASTERNO', '?')}  {a.get('DATE-BEG', a.get('DATE-OBS', '?'))} .. "
            f"{a.get('DATE-END', '?')}"
        )
        for name, node in tree.children.items():
            ds = node.dataset
            rad = ds["radiance"]
            wl = ds["wavelength"].values
            shape = " x ".join(f"{d}={n}" for d, n in rad.sizes.items())
            print(
                f"  {name:32s} {ds.attrs.get('DETECTOR', '?'):2s} {shape:36s} "
                f"{wl.min():8.2f}-{wl.max():8.2f} A"
            )
    return status


def _cmd_demo(args) -> int:
    from .pipeline.demo import run_demo

    t0 = time.perf_counter()
    summary = _interruptible(
        lambda: run_demo(
            Path(args.output), progress=_show_progress(args), scheduler=args.scheduler
        ),
        f"saffron-xr demo --output {args.output}",
    )
    if isinstance(summary, int):
        return summary
    print(summary)
    print(f"demo finished in {time.perf_counter() - t0:.1f} s; outputs in {args.output}/")
    return 0 if summary.ok else EXIT_FAILED


# ----------------------------------------------------------------------------- parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("saffron_xr")
    except PackageNotFoundError:  # pragma: no cover - a source tree without install
        return "unknown"


def _common(p: argparse.ArgumentParser, *, top: bool = False) -> None:
    """-q / -v, accepted before and after the sub-command."""
    # SUPPRESS in sub-commands: "saffron-xr -q run ..." must stay quiet (a sub-command
    # default would reset it)
    extra = {} if top else {"default": argparse.SUPPRESS}
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output", **extra)
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log more (debug messages, dask and distributed logs)",
        **extra,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saffron-xr",
        description="Fit emission lines in Solar Orbiter/SPICE L2 files with saffron_xr.",
        epilog="Exit codes: 0 success, 1 a file or window failed, 2 the batch could not start, "
        "130 interrupted (Ctrl-C), 143 terminated (SIGTERM).",
    )
    parser.add_argument("--version", action="version", version=f"saffron-xr {_version()}")
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", help="write a commented configuration template")
    p.add_argument(
        "path",
        nargs="?",
        default="saffron.yaml",
        help="file to write (default: saffron.yaml)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    _common(p)
    p.set_defaults(func=_cmd_init)

    p = sub.add_parser(
        "run",
        help="run a configured batch",
        description="Fit every selected file of a configured batch; one results file each.",
    )
    p.add_argument("config", help="YAML configuration file (write one with 'saffron-xr init')")
    p.add_argument("--scheduler", choices=_SCHEDULERS, help="override scheduler.kind")
    p.add_argument(
        "--address",
        metavar="URL",
        help="scheduler address for --scheduler address (overrides scheduler.address), "
        "e.g. tcp://10.0.0.1:8786",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="only check that the batch can start: configuration, sources, output folder, "
        "scheduler",
    )
    p.add_argument(
        "--force", action="store_true", help="redo every file, even those resume would skip"
    )
    p.add_argument(
        "--allow-empty",
        action="store_true",
        help="succeed when the sources hold no SPICE file (default: an error)",
    )
    _common(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("info", help="windows, shapes, study, times of SPICE files")
    p.add_argument("files", nargs="+", help="SPICE FITS files, or folders (searched recursively)")
    _common(p)
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("demo", help="the whole chain on built-in and synthetic data")
    p.add_argument(
        "--output", default="saffron_demo", help="folder to write into (default: saffron_demo)"
    )
    p.add_argument("--scheduler", choices=_SCHEDULERS, help="override the scheduler")
    _common(p)
    p.set_defaults(func=_cmd_demo)

    # explore: the served hvplot explorer (saffron_xr/plot/serve.py)
    from .plot.serve import add_explore_command

    add_explore_command(sub)
    return parser


def _setup_logging(args) -> None:
    level = logging.DEBUG if args.verbose else (logging.WARNING if args.quiet else logging.INFO)
    logging.basicConfig(level=level, format="%(message)s")
    if not args.verbose:
        # dask/distributed log cluster chatter ("Lost all workers", dashboard hints) at INFO;
        # keep their warnings. The environment reaches worker processes started later.
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
        for name in ("distributed", "dask", "bokeh", "tornado", "numba"):
            logging.getLogger(name).setLevel(logging.WARNING)
        if "dask" in sys.modules:
            import dask

            dask.config.refresh()


def main(argv=None) -> int:
    """Entry point of ``saffron-xr``; returns the exit code.

    Run as the command (``argv`` None), an interrupted run exits at once after its report,
    without waiting for running computations (worker threads cannot be stopped otherwise).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args)
    code = args.func(args)
    if argv is None and code >= 128:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
