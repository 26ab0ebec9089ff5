"""Benchmark of the fitting engine (issue 3): saffron_xr vs scipy curve_fit vs xarray curvefit.

One seeded synthetic cube: 2 Gaussians + constant background, 48 wavelength samples,
100,000 spectra (float32 radiance and 1-sigma error, 2 % NaN samples). Timed in one run:

* saffron_xr serial: numpy input, ``fit_lines`` runs the gufunc in the calling thread;
* saffron_xr through dask, threaded scheduler with 1 and with 2 threads;
* ``scipy.optimize.curve_fit`` with an analytic Jacobian, per spectrum, on a subset
  (``method="trf"`` with the same bounds, and MINPACK ``"lm"`` without bounds);
* ``xarray.DataArray.curvefit`` on a subset.

Prints fits/s for each (wall clock; CPU seconds too, which are less sensitive to other
processes on a shared machine), the ratios, the load average before and after, and the
accuracy against the truth (pull widths, median |fit - truth| / error, converged fraction).

Run: ``python benchmarks/bench_fit.py`` (``--help`` for sizes).
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import xarray as xr

from saffron_xr import FitStatus, LineModel, fit_lines

NW = 48
WAVE = np.linspace(768.0, 772.6, NW)
KINDS = ("amplitude", "centroid", "width")


def make_cube(n: int, seed: int = 20240101):
    rng = np.random.default_rng(seed)
    ny = 500
    nx = n // ny
    shape = (ny, nx)
    truth = {
        "a1": rng.uniform(5.0, 20.0, shape),
        "c1": 770.0 + rng.normal(0.0, 0.05, shape),
        "w1": rng.uniform(0.17, 0.24, shape),
        "a2": rng.uniform(2.5, 8.0, shape),
        "c2": 771.3 + rng.normal(0.0, 0.05, shape),
        "w2": rng.uniform(0.17, 0.24, shape),
        "b": rng.uniform(0.5, 1.5, shape),
    }

    def g(a, c, w):
        return a[..., None] * np.exp(-0.5 * ((WAVE - c[..., None]) / w[..., None]) ** 2)

    clean = g(truth["a1"], truth["c1"], truth["w1"]) + g(truth["a2"], truth["c2"], truth["w2"])
    clean += truth["b"][..., None]
    sigma = 0.3 * np.sqrt(clean) + 0.15
    y = clean + sigma * rng.standard_normal(clean.shape)
    y[rng.random(y.shape) < 0.02] = np.nan
    coords = {"wavelength": ("wavelength", WAVE, {"units": "Angstrom"})}
    dims = ("y", "x", "wavelength")
    data = xr.DataArray(y.astype(np.float32), dims=dims, coords=coords,
                        attrs={"units": "W m-2 sr-1 nm-1"})  # fmt: skip
    error = xr.DataArray(sigma.astype(np.float32), dims=dims, coords=coords)
    return data, error, truth


def make_model() -> LineModel:
    m = LineModel(background_degree=0)
    m.add_line("ne_8 770.42", amplitude=10.0, centroid=770.0, width=0.2,
               bounds={"centroid": (769.5, 770.5), "width": (0.05, 0.6)})  # fmt: skip
    m.add_line("mg_8 771.3", amplitude=4.0, centroid=771.3, width=0.2,
               bounds={"centroid": (770.8, 771.8), "width": (0.05, 0.6)})  # fmt: skip
    return m


P0 = [10.0, 770.0, 0.2, 4.0, 771.3, 0.2, 1.0]
LOWER = [0.0, 769.5, 0.05, 0.0, 770.8, 0.05, -np.inf]
UPPER = [np.inf, 770.5, 0.6, np.inf, 771.8, 0.6, np.inf]


def model_fn(x, a1, c1, w1, a2, c2, w2, b):
    return a1 * np.exp(-0.5 * ((x - c1) / w1) ** 2) + a2 * np.exp(-0.5 * ((x - c2) / w2) ** 2) + b


def jac_fn(x, a1, c1, w1, a2, c2, w2, b):
    out = np.empty((x.size, 7))
    for k, (a, c, w) in enumerate(((a1, c1, w1), (a2, c2, w2))):
        z = (x - c) / w
        g = np.exp(-0.5 * z * z)
        out[:, 3 * k] = g
        out[:, 3 * k + 1] = a * g * z / w
        out[:, 3 * k + 2] = a * g * z * z / w
    out[:, 6] = 1.0
    return out


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - w0, time.process_time() - c0


def scipy_loop(y, s, method):
    from scipy.optimize import curve_fit

    params = np.full((y.shape[0], 7), np.nan)
    errors = np.full((y.shape[0], 7), np.nan)
    bounds = (LOWER, UPPER) if method == "trf" else (-np.inf, np.inf)
    for i in range(y.shape[0]):
        ok = np.isfinite(y[i])
        try:
            p, cov = curve_fit(model_fn, WAVE[ok], y[i, ok], p0=P0, sigma=s[i, ok],
                               absolute_sigma=True, jac=jac_fn, bounds=bounds, method=method)  # fmt: skip
        except (RuntimeError, ValueError):
            continue
        params[i] = p
        errors[i] = np.sqrt(np.diag(cov))
    return params, errors


def accuracy(label, params, errors, truth, ok):
    """params/errors: (n, 7) in the order a1 c1 w1 a2 c2 w2 b; truth: dict of (n,)."""
    keys = ("a1", "c1", "w1", "a2", "c2", "w2")
    parts = []
    for j, k in enumerate(keys):
        pull = (params[ok, j] - truth[k][ok]) / errors[ok, j]
        parts.append(f"{k} {np.std(pull):.3f}")
    print(f"  {label:<28} converged {ok.mean():6.1%}   pull std: " + ", ".join(parts))


def saffron_matrix(ds):
    cols, errs = [], []
    for ln in range(2):
        for kind in KINDS:
            cols.append(ds[kind].isel(line=ln).values.ravel())
            errs.append(ds[kind + "_err"].isel(line=ln).values.ravel())
    cols.append(ds.background.isel(degree=0).values.ravel())
    errs.append(ds.background_err.isel(degree=0).values.ravel())
    return np.stack(cols, 1), np.stack(errs, 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="spectra (multiple of 500)")
    parser.add_argument("--scipy-subset", type=int, default=2000)
    parser.add_argument("--curvefit-subset", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3, help="best of N for saffron runs")
    args = parser.parse_args()

    import dask

    load0 = os.getloadavg()
    print(f"load average before: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} "
          f"on {os.cpu_count()} CPUs")  # fmt: skip
    data, error, truth = make_cube(args.n)
    n = data.sizes["y"] * data.sizes["x"]
    model = make_model()
    flat_truth = {k: v.ravel() for k, v in truth.items()}
    print(f"cube: {n} spectra x {NW} samples, float32, 2 Gaussians + constant")

    # compile once, outside the timings
    _, wall, _ = timed(lambda: fit_lines(data[:1, :2], model, error=error[:1, :2]))
    print(f"numba compilation (first call): {wall:.1f} s wall")

    def best(fn, repeat):
        runs = [timed(fn) for _ in range(repeat)]
        result = runs[-1][0]
        return result, min(r[1] for r in runs), min(r[2] for r in runs)

    rates = {}
    ds, wall, cpu = best(lambda: fit_lines(data, model, error=error), args.repeat)
    rates["serial"] = n / wall
    cpu_rates = {"serial": n / cpu}
    print(f"saffron_xr serial (numpy in, 1 thread): {n / wall:10.0f} fits/s "
          f"({wall:.2f} s wall, {n / cpu:.0f} fits/CPU-s)")  # fmt: skip
    p, e = saffron_matrix(ds)
    ok = ds.status.values.ravel() == FitStatus.CONVERGED

    chunks = {"y": 25}
    lazy = fit_lines(data.chunk(chunks), model, error=error.chunk(chunks))
    for threads in (1, 2):
        with dask.config.set(scheduler="threads", num_workers=threads):
            _, wall, cpu = best(lambda: lazy.compute(), args.repeat)
        rates[f"dask{threads}"] = n / wall
        print(f"saffron_xr dask, {threads} thread(s), {len(lazy.chunks['y'])} chunks: "
              f"{n / wall:10.0f} fits/s ({wall:.2f} s wall, CPU {cpu:.2f} s)")  # fmt: skip

    m = args.scipy_subset
    y2 = data.values.reshape(n, NW)[:m].astype(float)
    s2 = error.values.reshape(n, NW)[:m].astype(float)
    sub_truth = {k: v[:m] for k, v in flat_truth.items()}
    scipy_res = {}
    for method in ("trf", "lm"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            (sp, se), wall, cpu = timed(lambda method=method: scipy_loop(y2, s2, method))
        rates[f"scipy_{method}"] = m / wall
        cpu_rates[f"scipy_{method}"] = m / cpu
        scipy_res[method] = (sp, se)
        label = "trf, bounds" if method == "trf" else "lm, no bounds"
        print(f"scipy curve_fit ({label}, analytic jac), {m} spectra: "
              f"{m / wall:10.0f} fits/s ({wall:.2f} s wall, {m / cpu:.0f} fits/CPU-s)")  # fmt: skip

    k = args.curvefit_subset
    ny_sub = max(1, k // data.sizes["x"])
    sub = data.isel(y=slice(0, ny_sub)).astype(float)
    sub_err = error.isel(y=slice(0, ny_sub)).astype(float)
    kk = sub.sizes["y"] * sub.sizes["x"]
    names = ["a1", "c1", "w1", "a2", "c2", "w2", "b"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cf, wall, _ = timed(
            lambda: sub.curvefit(
                "wavelength", model_fn, p0=dict(zip(names, P0, strict=True)),
                bounds={nm: (lo, hi) for nm, lo, hi in zip(names, LOWER, UPPER, strict=True)},
                skipna=True, kwargs={"sigma": None},
            )
        )  # fmt: skip
    rates["curvefit"] = kk / wall
    print(f"xarray DataArray.curvefit (unweighted), {kk} spectra: {kk / wall:10.0f} fits/s "
          f"({wall:.2f} s wall)")  # fmt: skip
    del sub_err

    print("ratios (wall clock; in brackets: per CPU-second, insensitive to other load):")
    for method in ("trf", "lm"):
        print(f"  serial / scipy curve_fit {method:<3} : "
              f"{rates['serial'] / rates['scipy_' + method]:8.1f}x "
              f"[{cpu_rates['serial'] / cpu_rates['scipy_' + method]:.1f}x]")  # fmt: skip
    print(f"  serial / xarray curvefit      : {rates['serial'] / rates['curvefit']:8.1f}x")
    print(f"  dask 2 threads / 1 thread     : {rates['dask2'] / rates['dask1']:8.2f}x")
    print(f"  dask 1 thread / serial        : {rates['dask1'] / rates['serial']:8.2f}x")

    print("accuracy against the truth:")
    accuracy("saffron_xr (all)", p, e, flat_truth, ok)
    for method, (sp, se) in scipy_res.items():
        good = np.isfinite(sp).all(1) & np.isfinite(se).all(1)
        accuracy(f"scipy curve_fit {method}", sp, se, sub_truth, good)
        both = good & ok[:m]
        d = np.abs(p[:m][both] - sp[both]) / se[both]
        print(
            f"    median |saffron - scipy {method}| / error: "
            + ", ".join(f"{v:.1e}" for v in np.median(d, 0)[:6])
        )
    load1 = os.getloadavg()
    print(f"load average after: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}"
          + ("  (other processes were running: wall-clock rates are pessimistic)"
             if max(load0[0], load1[0]) > 0.5 else ""))  # fmt: skip


if __name__ == "__main__":
    main()
