"""The ``saffron-xr`` command: init, run, info, demo."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

__all__ = ["main"]


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
    from .pipeline.runner import run

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print(f"{args.config}: valid")
        return 0
    summary = run(cfg, progress=_show_progress(args), scheduler=args.scheduler)
    print(summary)
    return 1 if summary.failed else 0


def _cmd_info(args) -> int:
    from .errors import SpiceFileError
    from .io.reader import open_spice

    status = 0
    for f in args.files:
        try:
            tree = open_spice(f, dumbbells=True)
        except (SpiceFileError, FileNotFoundError) as exc:
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
    summary = run_demo(Path(args.output), progress=_show_progress(args), scheduler=args.scheduler)
    print(summary)
    print(f"demo finished in {time.perf_counter() - t0:.1f} s; outputs in {args.output}/")
    return 1 if summary.failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saffron-xr",
        description="Fit emission lines in Solar Orbiter/SPICE L2 files with saffron_xr.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", help="write a commented configuration template")
    p.add_argument("path", nargs="?", default="saffron.yaml")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=_cmd_init)

    scheds = ["auto", "threads", "processes", "synchronous", "local", "address", "slurm", "pbs"]
    p = sub.add_parser("run", help="run a configured batch")
    p.add_argument("config")
    p.add_argument("--scheduler", choices=scheds, help="override scheduler.kind")
    p.add_argument("--check", action="store_true", help="only validate the configuration")
    # SUPPRESS: "saffron-xr -q run ..." must stay quiet (a subparser default would reset it)
    p.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress output"
    )
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("info", help="windows, shapes, study, times of SPICE files")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("demo", help="the main job on the built-in data")
    p.add_argument("--output", default="saffron_demo")
    p.add_argument("--scheduler", choices=scheds)
    # SUPPRESS: "saffron-xr -q run ..." must stay quiet (a subparser default would reset it)
    p.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress output"
    )
    p.set_defaults(func=_cmd_demo)

    # explore: the served hvplot explorer (saffron_xr/plot/serve.py)
    from .plot.serve import add_explore_command

    add_explore_command(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else (logging.WARNING if args.quiet else logging.INFO)
    logging.basicConfig(level=level, format="%(message)s")
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
