"""A whole real SPICE raster window fitted end to end with a guessed model, on 2 threads.

Data: ``../shared/data/spice/raster_20240425_lyg_c3/grid_data.npz`` (``$SAFFRON_TEST_DATA``
overrides ``../shared/data``), the H I Ly-gamma 972.54 / C III 977.03 window of raster
``solo_L2_spice-n-ras_20240425T121922_V22_251658647-000``: ``intensity`` (60 wavelengths,
834 y, 192 x; big-endian float32, W m-2 sr-1 nm-1), ``uncertainty`` (1-sigma, float64),
``mask`` (True = no valid sample there: it is exactly where ``intensity`` is NaN, the
window edges that drift along the slit and 96 rows without data) and ``wavelength``
(Angstrom). They become a dask-backed DataArray ``(y, x, wavelength)`` with its ``error``;
masked samples are NaN in both.

Steps timed: load + build the arrays; ``guess_model`` (catalog lines, offset and
initial values from the mean spectrum: one dask computation); ``fit_lines`` computed on the
threaded scheduler with 2 workers ("fit alone"). The numba compilation is done and timed
first, outside the totals. Printed: wall times, spectra/s, the fit status of the pixels
with valid data, the convergence fraction over them, and median relative errors.

Acceptance (issue 7), 2 cores: at least 95% of the pixels with valid data converge, and
under 10 s of fitting.

Run::

    python benchmarks/bench_real_raster.py [--threads 2] [--chunks 128 64] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np


def machine() -> str:
    model = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"nproc {nproc}, cpu {model}, python {platform.python_version()}, load avg {load}"


def load_raster(path: Path, chunks: dict):
    """The npz arrays as dask-backed ``radiance`` and ``error`` DataArrays (y, x, wavelength)."""
    import xarray as xr

    with np.load(path) as data:
        intensity = data["intensity"].astype(np.float32)  # big-endian -> native
        uncertainty = data["uncertainty"].astype(np.float32)
        mask = data["mask"]
        wavelength = data["wavelength"].astype(np.float64)
        wv_unit, in_unit = str(data["wv_unit"]), str(data["in_unit"])
    if wv_unit != "Angstrom":
        raise ValueError(f"{path}: wavelength unit {wv_unit!r}, expected Angstrom")
    bad = mask | ~np.isfinite(intensity) | ~(uncertainty > 0)
    intensity[bad] = np.nan
    uncertainty[bad] = np.nan
    coords = {"wavelength": ("wavelength", wavelength, {"units": "Angstrom"})}
    attrs = {"units": "W m-2 sr-1 nm-1", "file_units": in_unit}
    radiance = xr.DataArray(
        intensity.transpose(1, 2, 0), dims=("y", "x", "wavelength"), coords=coords, attrs=attrs
    ).chunk({**chunks, "wavelength": -1})
    error = radiance.copy(data=uncertainty.transpose(1, 2, 0)).chunk({**chunks, "wavelength": -1})
    n_valid = (~bad).sum(axis=0)  # (y, x)
    return radiance.rename("radiance"), error.rename("error"), n_valid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunks", type=int, nargs=2, default=(128, 64), metavar=("Y", "X"))
    parser.add_argument("--min-snr", type=float, default=3.0, help="as the pipeline default")
    parser.add_argument("--background-degree", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="time the fit this many times")
    args = parser.parse_args()

    import dask

    from saffron_xr import guess_model
    from saffron_xr.catalog import LineCatalog
    from saffron_xr.fit import _kernels
    from saffron_xr.fit.core import fit_lines
    from saffron_xr.fit.status import FitStatus
    from saffron_xr.testing import shared_data_dir

    path = shared_data_dir() / "spice" / "raster_20240425_lyg_c3" / "grid_data.npz"
    print("machine:", machine())
    t = time.perf_counter()
    _kernels.fit_gufunc()
    print(f"numba compilation (not in the totals): {time.perf_counter() - t:.1f} s")

    with dask.config.set(scheduler="threads", num_workers=args.threads):
        t0 = time.perf_counter()
        radiance, error, n_valid = load_raster(path, {"y": args.chunks[0], "x": args.chunks[1]})
        t_load = time.perf_counter() - t0

        t = time.perf_counter()
        model = guess_model(
            radiance,
            LineCatalog.default(),
            error=error,
            min_snr=args.min_snr,
            background_degree=args.background_degree,
        )
        t_guess = time.perf_counter() - t

        fit_times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            params = fit_lines(radiance, model, error=error).compute()
            fit_times.append(time.perf_counter() - t)
        total = time.perf_counter() - t0 - sum(fit_times[1:])

    ny, nx, nw = radiance.shape
    n_pixels = ny * nx
    status = params["status"].values
    has_data = n_valid > 0
    attempted = ~np.isin(status, [FitStatus.ALL_NAN, FitStatus.TOO_FEW_VALID])
    converged = np.isin(status, [FitStatus.CONVERGED, FitStatus.CONVERGED_AT_BOUND])
    fit_s = fit_times[0]

    print(f"data: {path}")
    print(
        f"  {ny} x {nx} pixels x {nw} wavelengths = {n_pixels} spectra; "
        f"{int(has_data.sum())} with valid data, {int(attempted.sum())} fitted "
        f"(enough valid samples); chunks y={args.chunks[0]} x={args.chunks[1]}, "
        f"{args.threads} threads"
    )
    print(f"model: {model!r}"[:400])
    print("timings:")
    print(f"  load + build arrays        {t_load:7.2f} s")
    print(f"  guess_model (mean spectrum){t_guess:7.2f} s")
    fits_txt = ", ".join(f"{x:.2f}" for x in fit_times)
    print(f"  fit alone (compute)        {fit_s:7.2f} s   (runs: {fits_txt})")
    print(f"  total                      {total:7.2f} s")
    print(
        f"  spectra/s (fit alone)      {n_pixels / fit_s:9.0f} of all, "
        f"{attempted.sum() / fit_s:9.0f} of the fitted"
    )
    print(f"  spectra/s (total)          {n_pixels / total:9.0f}")
    print("status of the pixels with valid data:")
    for code in FitStatus:
        n = int((status[has_data] == code).sum())
        if n:
            print(f"  {code.name:20s} {n:7d}  {n / has_data.sum():6.1%}")
    print(
        f"converged (CONVERGED or CONVERGED_AT_BOUND): {converged[has_data].mean():.1%} of the "
        f"pixels with valid data, {converged[attempted].mean():.1%} of the fitted ones"
    )
    print("median relative 1-sigma errors over the converged pixels:")
    for line in params["line"].values:
        p = params.sel(line=line)
        row = [f"  {line:14s}"]
        for name in ("amplitude", "width"):
            rel = (p[f"{name}_err"] / np.abs(p[name])).values[converged]
            row.append(f"{name} {np.nanmedian(rel):7.2%}")
        cerr = p["centroid_err"].values[converged]
        rest = float(p["rest_wavelength"]) if "rest_wavelength" in p.coords else np.nan
        kms = np.nanmedian(cerr) / rest * 299792.458
        row.append(f"centroid {np.nanmedian(cerr) * 1000:6.1f} mA ({kms:5.2f} km/s)")
        row.append(f"median amplitude {np.nanmedian(p['amplitude'].values[converged]):.3g}")
        print("  ".join(row))
    print("parameters on a bound (share of the fitted pixels with status CONVERGED_AT_BOUND):")
    at_bound = status == FitStatus.CONVERGED_AT_BOUND
    for line in params["line"].values:
        bounds = model.line_info(str(line))["bounds"]
        row = [f"  {line:14s}"]
        for name in ("amplitude", "centroid", "width"):
            v = params[name].sel(line=line).values[at_bound]
            lo, hi = bounds[name]
            on = np.isclose(v, lo, rtol=1e-6) | np.isclose(v, hi, rtol=1e-6)
            row.append(f"{name} {on.sum() / max(attempted.sum(), 1):6.1%} {(lo, hi)}")
        print("  ".join(row))
    chi2 = params["chi2"].values[converged]
    print(f"median reduced chi2 {np.nanmedian(chi2):.2f}")
    print(f"load avg after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
