"""Noise calibration on the real data sets: measured/model ratios and the cost of the pass.

Run from the repository root:  python benchmarks/bench_noise_calibration.py
(SAFFRON_TEST_DATA, default ../shared/data). Timings are wall-clock on a shared machine: noisy.
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


if __name__ == "__main__":
    main()
