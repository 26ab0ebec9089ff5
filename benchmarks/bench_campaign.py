"""A campaign of generated composition rasters: threads vs a 2-worker LocalCluster (issue 15).

The campaign is ``--files`` rasters (default 6) of ``make_spice_l2``'s 9-window composition
study, ``--ny`` x ``--nx`` pixels each (default 128 x 192), different seeds and SPIOBSIDs.
Each measurement runs in a fresh Python process (imports are not timed):

* ``threads``: ``run()`` on the threaded scheduler, all cores, files in flight as configured
  (default 2); the numba compilation (or the load from its disk cache) is included;
* ``local``: a ``LocalCluster`` of ``--workers`` worker processes x 1 thread is started,
  then ``run()`` sends each file to a worker, which writes it; the wall time includes the
  cluster start and the workers' kernel warm-up (whose seconds per worker are printed);
* ``rss``: the client's peak RSS (``resource.getrusage``, the whole process life) for a
  campaign of 2 and of 8 files on the cluster: the client holds only per-file summaries, so
  the difference should stay small (target < 50 MB).

The ``threads`` and ``local`` outputs are then compared window by window (identical numbers
expected). The ratio printed is threads wall time / cluster wall time, i.e. the cluster's
throughput as a fraction of the threaded one (target >= 0.85 on 2 cores). On a machine
shared with other work the timings are noisy: compare runs taken back to back.

Run::

    python benchmarks/bench_campaign.py                     # the issue's campaign
    python benchmarks/bench_campaign.py --files 2 --ny 32 --nx 16 --rss-files 1,2   # quick
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_end_to_end import _config, machine  # noqa: E402  (a folder is a source too)


def _make_campaign(folder: Path, n: int, ny: int, nx: int) -> list[Path]:
    from saffron_xr.synthetic import make_spice_l2

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        make_spice_l2(folder, ny=ny, nx=nx, seed=100 + i, spiobsid=880000 + i)
    return sorted(folder.glob("*.fits"))


class _Warm(logging.Handler):
    """Keeps the runner's "fit kernel ready on N worker(s) in ... s" line."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        if "fit kernel ready" in record.getMessage():
            self.lines.append(record.getMessage())


def _case(args) -> dict:
    """One measurement, in this (fresh) process; returns a JSON-able dict."""
    import resource

    import saffron_xr  # noqa: F401  (imports are not part of the figures)
    from saffron_xr.pipeline.runner import run

    warm = _Warm()
    logging.getLogger("saffron_xr").addHandler(warm)
    logging.getLogger("saffron_xr").setLevel(logging.INFO)
    data, out = Path(args.data), Path(args.out)
    t0 = time.perf_counter()
    if args.case == "threads":
        summary = run(_config(data, out, {"kind": "threads"}))
    else:
        from distributed import Client, LocalCluster

        with (
            LocalCluster(
                n_workers=args.workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
            ) as cluster,  # fmt: skip
            Client(cluster),
        ):
            summary = run(_config(data, out, {"kind": "auto"}))
    wall = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "case": args.case,
        "files_done": len(summary.done),
        "files_failed": [f"{f.path}: {f.error}" for f in summary.failed],
        "spectra": sum(f.n_spectra for f in summary.done),
        "wall_s": round(wall, 2),
        "client_peak_rss_mb": round(peak_kb / 1024, 1),
        "warm_up": warm.lines,
    }


def _in_subprocess(case: str, data: Path, out: Path, workers: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--case", case, "--data", str(data),
           "--out", str(out), "--workers", str(workers)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{case} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _compare(a: Path, b: Path) -> str:
    """'identical' or the first difference between two folders of result files."""
    import xarray as xr

    from saffron_xr.io.netcdf import open_results

    names = sorted(p.name for p in a.glob("*.nc"))
    if names != sorted(p.name for p in b.glob("*.nc")):
        return "different file lists"
    for name in names:
        ta, tb = open_results(a / name), open_results(b / name)
        if sorted(ta.children) != sorted(tb.children):
            return f"{name}: different windows"
        for window in ta.children:
            try:
                xr.testing.assert_equal(ta[window].to_dataset(), tb[window].to_dataset())
            except AssertionError as exc:
                return f"{name} {window}: {str(exc).splitlines()[0]}"
    return f"identical ({len(names)} files)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=6)
    parser.add_argument("--ny", type=int, default=128)
    parser.add_argument("--nx", type=int, default=192)
    parser.add_argument("--size", help="NYxNX, e.g. 32x16 (overrides --ny/--nx)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rss-files", default="2,8", help="campaign sizes for the RSS case")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--case", choices=["threads", "local"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(_case(args)))
        return
    if args.size:
        args.ny, args.nx = (int(v) for v in args.size.lower().split("x"))
    print("machine:", json.dumps(machine()))
    with tempfile.TemporaryDirectory(prefix="bench_campaign_") as tmp:
        root = Path(tmp)
        files = _make_campaign(root / "data", args.files, args.ny, args.nx)
        print(f"campaign: {len(files)} files of {args.ny} x {args.nx} pixels, 9 windows")
        threads = _in_subprocess("threads", root / "data", root / "threads", args.workers)
        print("threads:", json.dumps(threads))
        local = _in_subprocess("local", root / "data", root / "local", args.workers)
        print(f"LocalCluster ({args.workers} workers x 1 thread):", json.dumps(local))
        ratio = threads["wall_s"] / local["wall_s"]
        print(f"cluster throughput / threaded throughput: {ratio:.2f} (target >= 0.85)")
        print("outputs:", _compare(root / "threads", root / "local"))
        if args.skip_rss:
            return
        peaks = {}
        for n in (int(v) for v in args.rss_files.split(",")):
            data = root / f"rss_{n}"
            _make_campaign(data, n, args.ny, args.nx)
            peaks[n] = _in_subprocess("local", data, root / f"rss_out_{n}", args.workers)
            print(f"client peak RSS, {n} files: {peaks[n]['client_peak_rss_mb']} MB")
        lo, hi = min(peaks), max(peaks)
        growth = peaks[hi]["client_peak_rss_mb"] - peaks[lo]["client_peak_rss_mb"]
        print(f"client peak RSS growth {lo} -> {hi} files: {growth:.1f} MB (target < 50 MB)")
        print(f"(loadavg at the end: {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
