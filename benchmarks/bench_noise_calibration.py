"""Noise calibration on the real data sets: measured/model ratios and the cost of the pass.

Run from the repository root:  python benchmarks/bench_noise_calibration.py [--sizes]
(SAFFRON_TEST_DATA, default ../shared/data). Timings are wall-clock on a shared machine: noisy.
``--sizes``: the ratios recovered on the nine windows of a generated composition raster
(832 x 192, noise drawn from the model, so both true ratios are 1) for subsamples of 500 k,
1 M and 2 M samples, with their CPU time (the choice of the ``max_samples`` default).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import xarray as xr

import saffron_xr as sx

DATA = Path(os.environ.get("SAFFRON_TEST_DATA", "../shared/data")) / "spice"


def _report(label, terms, seconds):
    record = json.loads(terms.attrs["noise_calibration"])
    per_dir = ", ".join(
        f"{d}: floor {v['floor_ratio']:.3f}, signal {v['signal_ratio'] or float('nan'):.3f}"
        for d, v in record["directions"].items()
    )
    print(
        f"{label:34s} floor x{terms.attrs['noise_floor_ratio']:.3f}  signal "
        f"x{terms.attrs['noise_signal_ratio']:.3f} "
        f"({'measured' if terms.attrs['noise_signal_measured'] else 'model kept'}); "
        f"{record['subsample']}; {seconds:.2f} s\n{'':34s} per direction: {per_dir}"
    )


def main():
    tree = sx.open_spice(
        DATA / "solo_L2_spice-n-ras_20220317T002536_V03_100663832-017_ne8-770-window.fits"
    )
    rad = tree[next(iter(tree.children))].dataset["radiance"]
    t0 = time.perf_counter()
    terms = sx.calibrate_noise_terms(rad)
    _report("Ne VIII 770 window (2022), SPICE model", terms, time.perf_counter() - t0)

    npz = np.load(DATA / "raster_20240425_lyg_c3" / "grid_data.npz")
    dims = ("wavelength", "y", "x")
    radiance = xr.DataArray(npz["intensity"].astype("float32"), dims=dims)
    radiance = radiance.where(~xr.DataArray(npz["mask"], dims=dims)).chunk({"x": 32})
    error = xr.DataArray(npz["uncertainty"], dims=dims).chunk({"x": 32})
    t0 = time.perf_counter()
    terms = sx.calibrate_noise_terms(radiance, error=error)
    _report("Ly-gamma/C III raster (2024), own unc.", terms, time.perf_counter() - t0)
    print(
        "note: the raster product holds no non-positive sample (minimum "
        f"{np.nanmin(npz['intensity']):.2e}; {npz['mask'].mean():.0%} masked), so its faint "
        "samples are a truncated distribution and its floor ratio is biased low"
    )


def sizes():
    import tempfile

    from bench_real_raster import machine  # the script's folder is on sys.path

    from saffron_xr.testing import make_spice_l2

    print(f"machine: {machine()}; noise calibration by subsample size")
    with tempfile.TemporaryDirectory() as tmp:
        make_spice_l2(tmp, ny=832, nx=192, seed=7)
        (path,) = Path(tmp).glob("solo_L2_*.fits")
        tree = sx.open_spice(path)
        # not timed: the first call imports numba and loads the compiled statistics
        sx.calibrate_noise_terms(tree[next(iter(tree.children))].dataset["radiance"])
        for n in (500_000, 1_000_000, 2_000_000):
            floor, signal, cpu = [], [], 0.0
            for name in tree.children:
                t0 = time.process_time()
                terms = sx.calibrate_noise_terms(tree[name].dataset["radiance"], max_samples=n)
                cpu += time.process_time() - t0
                floor.append(terms.attrs["noise_floor_ratio"])
                signal.append(terms.attrs["noise_signal_ratio"])
            print(
                f"{n:>9d} samples: floor {min(floor):.3f}-{max(floor):.3f}, signal "
                f"{min(signal):.3f}-{max(signal):.3f} over 9 windows; {cpu / 9:.2f} CPU-s per window"
            )


if __name__ == "__main__":
    import sys

    sizes() if "--sizes" in sys.argv else main()
