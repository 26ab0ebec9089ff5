"""Benchmark: FIP-bias maps (LCR) for 160,000 pixels once the line radiances exist.

Builds a 400 x 400 raster of fitted parameters (amplitude, width and errors of S IV 750,
S V 786, N III 991, N IV 765) with a known FIP-bias map, then times ``params.fip.lcr`` from
the parameters to the computed map: with one density, and with a density map. Run with
``XUVTOP`` unset to use the shipped table (what is timed is then the whole call, including
the coefficients), e.g.::

    env -u XUVTOP python benchmarks/bench_fip.py

It prints the timings and the recovery error; it asserts nothing.
"""

from __future__ import annotations

import os
import time

import dask
import numpy as np
import xarray as xr

import saffron_xr  # noqa: F401  (registers the .fip accessor)
from saffron_xr import fip

LOW = ["s_4 750.22", "s_5 786.47"]
HIGH = ["n_3 991.58", "n_4 765.15"]
NY, NX = 400, 400


def make_params(rng, chunks=None) -> tuple[xr.Dataset, xr.DataArray, xr.DataArray]:
    truth = xr.DataArray(1.0 + 3.0 * rng.random((NY, NX)), dims=("y", "x"))
    density = 10 ** xr.DataArray(8.5 + 2.0 * rng.random((NY, NX)), dims=("y", "x"))
    rad = fip.forward_radiances("quiet_sun", LOW + HIGH, density=1e9, fip_bias=truth)
    rad = (rad / float(rad.max()) * 5.0).transpose("line", "y", "x")
    width = xr.full_like(rad, 0.35).assign_attrs(units="Angstrom")
    amplitude = rad / (width * np.sqrt(2 * np.pi) / 10)
    noise = 0.02 * amplitude
    amplitude = amplitude + noise * rng.standard_normal(amplitude.shape)
    params = xr.Dataset(
        {
            "amplitude": amplitude.assign_attrs(units="W m-2 sr-1 nm-1"),
            "amplitude_err": noise.assign_attrs(units="W m-2 sr-1 nm-1"),
            "width": width,
            "width_err": (0.01 * width).assign_attrs(units="Angstrom"),
        }
    )
    if chunks:
        params = params.chunk(chunks)
        density = density.chunk(chunks)
    return params, truth, density


def timed(label, func, repeat=3):
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        result = func()
        best = min(best, time.perf_counter() - start)
    print(f"  {label:<58s} {best:7.3f} s")
    return result


def main():
    rng = np.random.default_rng(2024)
    print(f"XUVTOP={os.environ.get('XUVTOP', '(unset: shipped table)')}")
    print(f"FIP maps (LCR, {'+'.join(LOW)} / {'+'.join(HIGH)}), {NY * NX} pixels, best of 3:")
    params, truth, density = make_params(rng)
    timed("coefficients only (one density)", lambda: fip.lcr_coefficients(LOW, HIGH, density=1e9))
    timed("coefficients on the whole density grid", lambda: fip.lcr_coefficients(LOW, HIGH))
    out = timed(
        "numpy, one density, from parameters", lambda: params.fip.lcr(LOW, HIGH, 1e9).compute()
    )
    rel = np.abs(out.fip_bias / truth - 1)
    print(f"    median |error| {float(rel.median()):.2%}, median fip_bias_err / fip_bias "
          f"{float((out.fip_bias_err / out.fip_bias).median()):.2%}")  # fmt: skip
    timed(
        "numpy, density map, from parameters",
        lambda: params.fip.lcr(LOW, HIGH, density).compute(),
    )
    lazy_params, _, lazy_density = make_params(np.random.default_rng(2024), {"y": 100})
    with dask.config.set(scheduler="threads"):
        timed(
            "dask (4 chunks, threads), one density",
            lambda: lazy_params.fip.lcr(LOW, HIGH, 1e9).compute(),
        )
        timed(
            "dask (4 chunks, threads), density map",
            lambda: lazy_params.fip.lcr(LOW, HIGH, lazy_density).compute(),
        )


if __name__ == "__main__":
    main()
