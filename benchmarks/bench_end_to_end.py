"""End to end: a generated full composition raster from FITS to netCDF with ``saffron_xr.run``.

The raster is ``make_spice_l2``'s default composition study: 9 windows (SW + LW, 40-80
wavelengths each), 832 x 192 pixels, i.e. 1.44 M spectra. It is written once, then each
measurement runs in a fresh Python process (so that neither the generation nor an earlier
run inflates the memory figures):

* ``threads``: ``run()`` with the threaded scheduler on all cores; the numba compilation is
  timed first and separately (add it for a cold start); then, in the same process, the fits
  alone on the same windows (prepared inputs and guessed models held in memory, not timed),
  for the ratio whole run / fit alone (issue 13: <= 1.3); ``--threads 1`` gives the same
  on one thread (AMD EPYC, 2026-11-29: 36.9 s against 28.0 s, 1.32; on both cores 1.47-1.49:
  the difference is time when a core is idle, mostly while the windows are prepared);
* ``local``: a ``distributed.LocalCluster`` of 2 worker processes x 1 thread; cluster start and
  the workers' numba compilation are timed separately, then ``run()`` uses the cluster.

The configuration is the default one (noise model on, guessed models, fit, derived radiance,
Doppler velocity and widths, netCDF output). During ``run()``, peak RSS is sampled every
20 ms with psutil (for the cluster: the client process, and the sum of the peaks of every
worker and nanny) and so is the CPU time (user + system) of all processes: on a machine
shared with other work, CPU time / nproc estimates the wall time of an idle machine.
With ``--profile`` a second threads run goes through the runner's phases one at a time
(open, graph building with the model guesses, compute of fit + derive, netCDF write; unlike
``run()`` it holds all results in memory before writing) and dask's profiler sums task time
by task name.

Acceptance (issue 7), 2 cores: under 60 s wall on threads, peak RSS under 1.5 GB.

Run::

    python benchmarks/bench_end_to_end.py [--profile] [--only threads|local] [--threads N]
        [--ny N --nx N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


class PeakRSS(threading.Thread):
    """Samples the RSS of this process and all its descendants; keeps each one's peak."""

    def __init__(self, interval: float = 0.02):
        import psutil

        super().__init__(daemon=True)
        self.interval = interval
        self.root = psutil.Process()
        self.peaks: dict[int, int] = {}
        self.cpu: dict[int, float] = {}  # CPU seconds (user + system) at the last sample
        self.running = True

    def sample(self) -> None:
        import psutil

        procs = [self.root]
        try:
            procs += self.root.children(recursive=True)
        except psutil.Error:
            pass
        for proc in procs:
            try:
                rss = proc.memory_info().rss
                cpu = proc.cpu_times()
            except psutil.Error:
                continue
            self.peaks[proc.pid] = max(self.peaks.get(proc.pid, 0), rss)
            self.cpu[proc.pid] = cpu.user + cpu.system

    def run(self) -> None:
        self.sample()
        self.cpu0 = dict(self.cpu)
        while self.running:
            self.sample()
            time.sleep(self.interval)

    def stop(self) -> dict:
        self.running = False
        self.join()
        self.sample()
        me = self.root.pid
        others = {pid: peak for pid, peak in self.peaks.items() if pid != me}
        cpu = {pid: t - self.cpu0.get(pid, 0.0) for pid, t in self.cpu.items()}
        return {
            "peak_rss_main_mb": self.peaks[me] / 2**20,
            "peak_rss_children_sum_mb": sum(others.values()) / 2**20,
            "n_children": len(others),
            "cpu_main_s": cpu[me],
            "cpu_children_s": sum(t for pid, t in cpu.items() if pid != me),
        }


def machine() -> dict:
    model = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    return {
        "nproc": usable,
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
    }


def _config(path: Path, out: Path, scheduler: dict) -> dict:
    return {
        "files": {"source": [str(path)]},
        "output": {"folder": str(out), "resume": False},
        "scheduler": scheduler,
        "_base_dir": str(out.parent),
    }


def _profile_phases(cfg: dict) -> dict:
    """The steps of ``filejob.process_file``, timed one by one; task time by task name."""
    from dask.diagnostics import Profiler
    from dask.utils import key_split

    from saffron_xr.io.netcdf import to_netcdf
    from saffron_xr.io.reader import open_spice
    from saffron_xr.pipeline import filejob, runner, steps
    from saffron_xr.pipeline.config import validate_config
    from saffron_xr.pipeline.scheduler import scheduler_context

    cfg = validate_config(cfg, base_dir=cfg["_base_dir"])
    path = Path(cfg["files"]["source"][0])
    out = runner.output_path(cfg, path)
    out.parent.mkdir(parents=True, exist_ok=True)
    phases = {}
    with scheduler_context(cfg["scheduler"]):
        t = time.perf_counter()
        catalog = steps.load_catalog(cfg)
        tree = open_spice(path, chunks=dict(cfg["chunks"]))
        phases["open_s"] = time.perf_counter() - t
        t = time.perf_counter()
        results = runner.process_tree(cfg, tree, catalog)
        phases["build_and_guess_models_s"] = time.perf_counter() - t
        t = time.perf_counter()
        with Profiler() as prof:
            computed = filejob._compute_tree(results)
        phases["compute_fit_and_derive_s"] = time.perf_counter() - t
        t = time.perf_counter()
        to_netcdf(computed, out, config=cfg)
        phases["write_netcdf_s"] = time.perf_counter() - t
    by_name: dict[str, float] = {}
    for task in prof.results:
        name = key_split(task.key)
        by_name[name] = by_name.get(name, 0.0) + (task.end_time - task.start_time)
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:8]
    phases["task_seconds_by_name"] = {k: round(v, 2) for k, v in top}
    phases["output_mb"] = out.stat().st_size / 2**20
    return phases


def _fit_alone(cfg: dict) -> dict:
    """The fits of the same windows alone: the prepared inputs (radiance, errors, noise terms)
    and the guessed models are built and held in memory first (not timed), then every
    window's ``fit_lines`` is computed in one ``dask.compute`` on the same scheduler."""
    import dask

    from saffron_xr.fit.core import fit_lines
    from saffron_xr.io.reader import open_spice
    from saffron_xr.pipeline import steps
    from saffron_xr.pipeline.config import validate_config
    from saffron_xr.pipeline.scheduler import scheduler_context

    cfg = validate_config(cfg, base_dir=cfg["_base_dir"])
    path = Path(cfg["files"]["source"][0])
    catalog = steps.load_catalog(cfg)
    tree = open_spice(path, chunks=dict(cfg["chunks"]))
    with scheduler_context(cfg["scheduler"]):
        jobs = []
        for name, node in tree.children.items():
            ds = node.dataset
            radiance, error, terms, _ = steps._prepare(cfg, name, ds["radiance"])
            model = steps._window_model(cfg, name, ds, ds["radiance"], error, catalog)
            noise = steps._fit_noise(cfg, radiance, terms)
            radiance, error = dask.persist(radiance, error)
            jobs.append((radiance, error, model, noise))
        t = time.perf_counter()
        c = time.process_time()
        fits = [fit_lines(r, m, error=e, noise=n) for r, e, m, n in jobs]
        dask.compute(*fits)
        return {"wall_s": time.perf_counter() - t, "cpu_s": time.process_time() - c}


def child(mode: str, path: Path, workdir: Path, profile: bool, threads: int | None) -> dict:
    import saffron_xr  # noqa: F401  (import time is not part of the figures)
    from saffron_xr.fit import _kernels
    from saffron_xr.pipeline.filejob import warm_kernels
    from saffron_xr.pipeline.runner import run

    report: dict = {"mode": mode}
    out = workdir / f"out_{mode}"
    if mode == "threads":
        t = time.perf_counter()
        warm_kernels("float32")  # the fits (SPICE L2: float32), the noise calibration
        _kernels.fit_gufunc("float64")  # the guesses
        report["numba_compile_s"] = time.perf_counter() - t
        n = threads or machine()["nproc"]
        cfg = _config(path, out, {"kind": "threads", "n_workers": n})
        sampler = PeakRSS()
        sampler.start()
        t = time.perf_counter()
        summary = run(cfg)
        report["wall_s"] = time.perf_counter() - t
        report.update(sampler.stop())
        report["fit_alone"] = _fit_alone(_config(path, workdir / "out_fit", cfg["scheduler"]))
        if profile:
            report["profile"] = _profile_phases(
                _config(path, workdir / "out_profile", cfg["scheduler"])
            )
    else:
        from distributed import Client, LocalCluster

        _kernels.fit_gufunc("float64")  # the guesses run in this process
        t = time.perf_counter()
        with (
            LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
            ) as cluster,
            Client(cluster) as client,
        ):
            report["cluster_start_s"] = time.perf_counter() - t
            t = time.perf_counter()
            client.run(warm_kernels, "float32")
            report["numba_compile_on_workers_s"] = time.perf_counter() - t
            sampler = PeakRSS()
            sampler.start()
            t = time.perf_counter()
            summary = run(_config(path, out, {"kind": "auto"}))
            report["wall_s"] = time.perf_counter() - t
            report.update(sampler.stop())
    (result,) = summary.files
    if result.status != "done":
        raise RuntimeError(f"the run failed: {result.error}")
    report["scheduler"] = summary.scheduler
    report["n_fitted"] = result.n_spectra
    report["n_converged"] = result.n_converged
    report["output_mb"] = Path(result.output).stat().st_size / 2**20
    return report


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ny", type=int, default=832)
    parser.add_argument("--nx", type=int, default=192)
    parser.add_argument("--only", choices=["threads", "local"])
    parser.add_argument("--profile", action="store_true", help="phase breakdown (threads)")
    parser.add_argument("--keep", help="work folder to keep (default: a temporary one)")
    parser.add_argument(
        "--threads",
        type=_positive,
        help="threads of the threaded scheduler (default: one per core); 1 gives the "
        "one-core figures and ratio. The 'local' mode keeps its 2 workers x 1 thread",
    )
    parser.add_argument(
        "--child", nargs=3, metavar=("MODE", "FILE", "WORKDIR"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        mode, path, workdir = args.child
        print(json.dumps(child(mode, Path(path), Path(workdir), args.profile, args.threads)))
        return

    from saffron_xr.testing import make_spice_l2

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.keep or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        print("machine:", json.dumps(machine()))
        t = time.perf_counter()
        make_spice_l2(workdir, ny=args.ny, nx=args.nx, seed=7)
        (path,) = workdir.glob("solo_L2_*.fits")
        gen_s = time.perf_counter() - t
        n_spectra = 0
        from astropy.io import fits

        with fits.open(path) as hdul:
            shapes = [h.header["NAXIS3"] for h in hdul if h.header.get("NAXIS", 0) == 4]
            n_spectra = len(shapes) * args.ny * args.nx
        print(
            f"raster: {len(shapes)} windows, {args.ny} x {args.nx}, {min(shapes)}-{max(shapes)} "
            f"wavelengths, {n_spectra} spectra, {path.stat().st_size / 2**20:.0f} MB "
            f"(generated in {gen_s:.1f} s)"
        )
        modes = [args.only] if args.only else ["threads", "local"]
        for mode in modes:
            cmd = [sys.executable, __file__, "--child", mode, str(path), str(workdir)]
            if args.profile:
                cmd.append("--profile")
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{mode}: FAILED\n{proc.stderr[-3000:]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"\n[{mode}] {r['scheduler']}")
            for key in ("numba_compile_s", "cluster_start_s", "numba_compile_on_workers_s"):
                if key in r:
                    print(f"  {key:28s} {r[key]:8.1f}")
            print(f"  {'wall_s (run)':28s} {r['wall_s']:8.1f}")
            print(f"  {'spectra/s':28s} {n_spectra / r['wall_s']:8.0f}")
            print(
                f"  {'fitted, converged':28s} {r['n_fitted']} of {n_spectra}, "
                f"{r['n_converged'] / max(r['n_fitted'], 1):.1%}"
            )
            cpu = r["cpu_main_s"] + r["cpu_children_s"]
            cores = args.threads if (mode == "threads" and args.threads) else machine()["nproc"]
            print(
                f"  {'CPU time (s)':28s} {cpu:8.1f} (user + system, all processes; "
                f"CPU time / {cores} = {cpu / cores:.1f} s is the wall time an idle machine "
                "would need at full parallel use)"
            )
            print(f"  {'peak RSS main (MB)':28s} {r['peak_rss_main_mb']:8.0f}")
            if r["n_children"]:
                print(
                    f"  {'peak RSS workers (MB)':28s} {r['peak_rss_children_sum_mb']:8.0f} "
                    f"(sum over {r['n_children']} processes)"
                )
                total = r["peak_rss_main_mb"] + r["peak_rss_children_sum_mb"]
                print(f"  {'peak RSS total (MB)':28s} {total:8.0f}")
            print(f"  {'netCDF output (MB)':28s} {r['output_mb']:8.0f}")
            if "fit_alone" in r:
                fa = r["fit_alone"]
                print(
                    f"  {'fit alone, same windows':28s} {fa['wall_s']:8.1f} s wall, "
                    f"{fa['cpu_s']:.1f} s CPU; whole run / fit alone: "
                    f"{r['wall_s'] / fa['wall_s']:.2f} (wall), {cpu / fa['cpu_s']:.2f} (CPU)"
                )
            if "profile" in r:
                print("  profile (a second run in the same process, phase by phase):")
                for key, value in r["profile"].items():
                    if isinstance(value, dict):
                        print(f"    {key}: {json.dumps(value)}")
                    else:
                        print(f"    {key:30s} {value:8.1f}")
        print("\nload average after:", [round(x, 2) for x in os.getloadavg()])


if __name__ == "__main__":
    main()
