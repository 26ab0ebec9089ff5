"""Peak memory and wall time of a full prepared, adaptive fit of a composition raster (issue 5).

Acceptance (issue 5): preparing and fitting a full generated composition raster (9 windows,
832 x 192; noise model + despike + 3 binning levels, adaptive fit), streamed to a netCDF file,
keeps the peak memory under 1.5 GB.

The raster is written first with :func:`saffron_xr.testing.make_spice_l2`; the batch runner
:func:`saffron_xr.pipeline.runner.run` then processes it in a fresh Python process (so that
nothing from the generation inflates the figures), on the threaded scheduler with 2 workers.
That process reports:

* wall time of ``run`` and spectra fitted per second (pixels x windows; each adaptive fit may
  try up to 3 levels per pixel);
* peak RSS of the process, sampled with psutil every 50 ms by a background thread, and the
  kernel's ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (exact, includes the imports);
* RSS after ``import saffron_xr`` (the baseline), and the output file size.

The machine (``nproc``, CPU model, ``uptime`` load average before and after) is printed too:
the machine is shared, so wall times vary with its load; memory figures do not.

Run::

    python benchmarks/bench_prep_memory.py [--keep FOLDER] [--chunks Y X] [--workers N]
                                           [--levels 1 3 5] [--no-despike]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, threading, time
import psutil

proc = psutil.Process()


class PeakRSS(threading.Thread):
    # samples the process RSS every 50 ms until stopped; keeps the peak and a short trace
    def __init__(self, t0):
        super().__init__(daemon=True)
        self.peak = proc.memory_info().rss
        self.trace = []
        self.t0 = t0
        self.running = True

    def run(self):
        while self.running:
            rss = proc.memory_info().rss
            self.peak = max(self.peak, rss)
            self.trace.append((time.perf_counter() - self.t0, rss))
            time.sleep(0.05)


import saffron_xr  # noqa: E402
from saffron_xr.pipeline.runner import run  # noqa: E402

cfg = json.loads(sys.argv[1])
rss_import = proc.memory_info().rss
t0 = time.perf_counter()
sampler = PeakRSS(t0)
sampler.start()
summary = run(cfg)
wall = time.perf_counter() - t0
sampler.running = False
sampler.join()
maxrss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
f = summary.files[0]
# RSS trace thinned to ~40 points, for a look at when the peak happens
step = max(1, len(sampler.trace) // 40)
trace = [(round(t, 1), round(r / 2**20)) for t, r in sampler.trace[::step]]
print(json.dumps({
    "status": f.status, "error": f.error, "output": f.output,
    "wall_s": wall, "file_s": f.seconds, "n_spectra": f.n_spectra,
    "n_converged": f.n_converged, "scheduler": summary.scheduler,
    "rss_import_mb": rss_import / 2**20,
    "peak_rss_mb": max(sampler.peak, proc.memory_info().rss) / 2**20,
    "maxrss_mb": maxrss_kb / 2**10,
    "trace": trace,
}))
"""


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="write the raster and results here, keep them")
    parser.add_argument("--chunks", type=int, nargs=2, metavar=("Y", "X"),
                        help="config 'chunks' (default: the configuration's default)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=2, help="threads (default 2)")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--no-despike", action="store_true")
    parser.add_argument("--trace", action="store_true", help="print the RSS trace")
    parser.add_argument("--ny", type=int, default=832, help="slit pixels (default 832)")
    parser.add_argument("--nx", type=int, default=192, help="raster steps (default 192)")
    args = parser.parse_args()

    from saffron_xr.testing import make_spice_l2

    print(f"machine: nproc={os.cpu_count()}, CPU {_cpu_model()}")
    print(f"before : {_uptime()}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        data_dir = folder / "data"
        data_dir.mkdir(exist_ok=True)
        t0 = time.perf_counter()
        truth = make_spice_l2(data_dir, ny=args.ny, nx=args.nx, seed=0)
        write_s = time.perf_counter() - t0
        path = Path(truth.attrs["path"])
        out = folder / "results"
        cfg = {
            "files": {"source": [str(path)]},
            "prep": {
                "noise": {"enabled": True},
                "despike": {"enabled": not args.no_despike},
                "binning": {"levels": list(args.levels)},
            },
            "output": {"folder": str(out), "resume": False},
            "scheduler": {"kind": "threads", "n_workers": args.workers},
            "_base_dir": str(folder),
        }
        if args.chunks:
            cfg["chunks"] = {"y": args.chunks[0], "x": args.chunks[1]}
        print(f"raster : {path.name} ({path.stat().st_size / 2**20:.0f} MB, written in "
              f"{write_s:.1f} s)")  # fmt: skip
        print(f"config : {json.dumps({k: v for k, v in cfg.items() if k != '_base_dir'})}")
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            raise SystemExit(f"the measured run failed (exit code {proc.returncode})")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        out_mb = Path(res["output"]).stat().st_size / 2**20 if res["output"] else float("nan")
    print(f"after  : {_uptime()}")
    if res["status"] != "done":
        raise SystemExit(f"run {res['status']}: {res['error']}")
    frac = res["n_converged"] / res["n_spectra"] if res["n_spectra"] else float("nan")
    print(f"scheduler            : {res['scheduler']}")
    print(f"wall time of run()   : {res['wall_s']:7.1f} s")
    print(f"spectra fitted       : {res['n_spectra']} ({frac:.1%} converged), "
          f"{res['n_spectra'] / res['wall_s']:.0f} spectra/s")  # fmt: skip
    print(f"RSS after import     : {res['rss_import_mb']:7.0f} MB")
    print(f"peak RSS (psutil 50ms): {res['peak_rss_mb']:7.0f} MB   (target < 1536 MB)")
    print(f"peak RSS (getrusage) : {res['maxrss_mb']:7.0f} MB   (target < 1536 MB)")
    print(f"output netCDF        : {out_mb:7.1f} MB")
    if args.trace:
        print("RSS trace (s, MB):", " ".join(f"{t}:{m}" for t, m in res["trace"]))


if __name__ == "__main__":
    main()
