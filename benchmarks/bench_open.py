"""Time and memory of opening a generated 9-window 832 x 192 composition raster.

Acceptance (issue 2): ``saffron_xr.open_spice`` on this file takes < 1 s and < 100 MB of
extra memory. The file is written first (the write time is printed too); the open is then
measured in a fresh Python process so that nothing from the write inflates the figures:

* wall time of the first ``open_spice(path)`` after ``import saffron_xr`` (the file is in
  the OS page cache since it was just written), and of a second open in the same process;
* extra resident memory: RSS after the first open minus RSS before it, and the peak RSS
  during it (sampled every millisecond by a thread) minus RSS before it;
* the peak of Python allocations during a third open, run under ``tracemalloc`` (kept out
  of the timed opens because it slows them down).

Run::

    python benchmarks/bench_open.py [--keep FOLDER]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, threading, time, tracemalloc
import psutil
import saffron_xr

proc = psutil.Process()
path = sys.argv[1]


class PeakRSS(threading.Thread):
    # samples the process RSS every millisecond until stopped
    def __init__(self):
        super().__init__(daemon=True)
        self.peak = proc.memory_info().rss
        self.running = True

    def run(self):
        while self.running:
            self.peak = max(self.peak, proc.memory_info().rss)
            time.sleep(0.001)


rss0 = proc.memory_info().rss
sampler = PeakRSS()
sampler.start()
t0 = time.perf_counter()
tree = saffron_xr.open_spice(path)
t1 = time.perf_counter()
sampler.running = False
sampler.join()
rss1 = proc.memory_info().rss

t2 = time.perf_counter()
tree2 = saffron_xr.open_spice(path)
t3 = time.perf_counter()

tracemalloc.start()
tree3 = saffron_xr.open_spice(path)
_, traced_peak = tracemalloc.get_traced_memory()
tracemalloc.stop()

nodes = list(tree.children)
shapes = {n: dict(tree[n].to_dataset().radiance.sizes) for n in nodes}
print(json.dumps({
    "open_s": t1 - t0, "reopen_s": t3 - t2,
    "rss_extra_mb": (rss1 - rss0) / 2**20,
    "peak_rss_extra_mb": (max(sampler.peak, rss1) - rss0) / 2**20,
    "tracemalloc_peak_mb": traced_peak / 2**20,
    "nodes": len(nodes), "shapes": shapes,
}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="write the file here and keep it")
    args = parser.parse_args()

    from saffron_xr.testing import make_spice_l2

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        t0 = time.perf_counter()
        truth = make_spice_l2(folder, seed=0)
        write_s = time.perf_counter() - t0
        path = Path(truth.attrs["path"])
        size_mb = path.stat().st_size / 2**20

        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(path)],
            check=True,
            capture_output=True,
            text=True,
        )
        res = json.loads(out.stdout.strip().splitlines()[-1])

    nwave = sorted({s["wavelength"] for s in res["shapes"].values()})
    first = next(iter(res["shapes"].values()))
    print(f"file: {path.name} ({size_mb:.0f} MB), {res['nodes']} windows, "
          f"y={first['y']} x={first['x']} wavelength {nwave[0]}-{nwave[-1]}")  # fmt: skip
    print(f"make_spice_l2 write time : {write_s:6.2f} s")
    print(f"open_spice wall time     : {res['open_s']:6.3f} s   (target < 1 s)")
    print(f"open_spice again         : {res['reopen_s']:6.3f} s")
    print(f"extra RSS after open     : {res['rss_extra_mb']:6.1f} MB (target < 100 MB)")
    print(f"peak RSS during open     : {res['peak_rss_extra_mb']:6.1f} MB")
    print(f"tracemalloc peak (3rd open): {res['tracemalloc_peak_mb']:6.1f} MB")


if __name__ == "__main__":
    main()
