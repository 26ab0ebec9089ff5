"""Benchmark of the fitting engine: saffron_xr vs scipy ``curve_fit``, on three cases.

Cases (seeded synthetic spectra, float32, noise drawn from the stated model):

* ``easy``: 2 Gaussians + constant, 48 samples, high S/N (the first round's case);
* ``spice2``: a SPICE-like 2-line window: 0.097517 Angstrom sampling (SW), 64 samples,
  FWHM 0.8 Angstrom, peak S/N 3-30, errors from the SPICE noise model (SW, RADCAL 38.15,
  4.7 s); 1 % NaN samples;
* ``blend6``: 6 blended lines + linear background, 64 samples (a busy composition window).

Like for like: every fitter starts from the same point (the model's window-level guess);
saffron_xr is timed twice, ``as is`` (its defaults: per-pixel moments and linear solve of
amplitudes and background, ftol 1e-5, xtol 3e-3 sigma) and ``like-for-like`` (no per-pixel
start, ftol = xtol = 1e-8, as scipy's defaults); scipy ``curve_fit`` runs MINPACK ``lm``
(no bounds, analytic Jacobian) and ``trf`` (the same bounds, analytic Jacobian). Each timing
is the best of ``--repeat`` runs, for every fitter (saffron's two settings alternate). Rates are per CPU-second of one core
(``time.process_time``; wall-clock in brackets), which is less sensitive to other load on a
shared machine. Accuracy: the pull widths against the truth and the median
``|saffron - scipy| / error`` where both converged.

Start-up: a fresh Python process imports the package and fits 16 spectra, once with an
empty numba cache folder (cold: compiles) and once more (warm: loads the cached kernels).

Run: ``python benchmarks/bench_fit.py`` (``--help`` for sizes and cases).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import xarray as xr
from bench_real_raster import machine  # the script's folder is on sys.path

from saffron_xr import FitStatus, LineModel, fit_lines
from saffron_xr.testing import gaussian_lines, gaussian_lines_jacobian

SIGMA_OF_FWHM = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
# SPICE SW noise model terms, by hand (Huang et al. 2023): G = 3.58, F = 1, R = 6.9 DN,
# D = 0.89 DN/s, RADCAL 38.15, t = 4.7 s, k = 2, no binning
PHOTON = 3.58 / 38.15
FLOOR = 2 * (6.9**2 + 0.89 * 4.7) / 38.15**2


class Case:
    """Wavelengths, truth (n_lines x 3 + background), noise, bounds, start point."""

    def __init__(self, name, wave, centres, widths, amp_range, bg, degree, noise, desc):
        self.name = name
        self.wave = wave
        self.centres = np.asarray(centres)
        self.widths = np.asarray(widths)
        self.amp_range = amp_range
        self.bg = bg
        self.degree = degree
        self.noise = noise
        self.desc = desc
        self.nl = len(centres)
        self.ref = 0.5 * (wave.min() + wave.max())

    def truth(self, n, rng):
        nl = self.nl
        amp = rng.uniform(*self.amp_range, size=(n, nl))
        if amp.shape[1] > 1:
            amp[:, 1:] *= rng.uniform(0.3, 1.0, size=(n, nl - 1))
        cen = self.centres + rng.normal(0.0, 0.03, size=(n, nl))
        wid = self.widths * rng.uniform(0.9, 1.1, size=(n, nl))
        bg = np.column_stack([rng.uniform(*self.bg, n)] + [rng.uniform(-0.02, 0.02, n)] *
                             self.degree)  # fmt: skip
        p = np.empty((n, 3 * nl + self.degree + 1))
        p[:, 0 : 3 * nl : 3], p[:, 1 : 3 * nl : 3], p[:, 2 : 3 * nl : 3] = amp, cen, wid
        p[:, 3 * nl :] = bg
        return p

    def model(self, x, *p):
        return gaussian_lines(x, p, self.nl, self.degree, self.ref)

    def jac(self, x, *p):
        return gaussian_lines_jacobian(x, p, self.nl, self.degree, self.ref)

    def start(self):
        amp0 = 0.5 * (self.amp_range[0] + self.amp_range[1])
        p0 = []
        for c, w in zip(self.centres, self.widths, strict=True):
            p0 += [amp0 * 0.6, c + 0.02, w * 1.1]
        p0 += [0.5 * (self.bg[0] + self.bg[1])] + [0.0] * self.degree
        return np.array(p0)

    def bounds(self):
        lo, hi = [], []
        for c, w in zip(self.centres, self.widths, strict=True):
            lo += [0.0, c - 0.3, 0.6 * w]
            hi += [np.inf, c + 0.3, 2.5 * w]
        lo += [-np.inf] * (self.degree + 1)
        hi += [np.inf] * (self.degree + 1)
        return np.array(lo), np.array(hi)

    def line_model(self):
        m = LineModel(background_degree=self.degree)
        p0 = self.start()
        lo, hi = self.bounds()
        for k in range(self.nl):
            m.add_line(
                f"fe_{10 + k} {700 + k}.0", amplitude=p0[3 * k], centroid=p0[3 * k + 1],
                width=p0[3 * k + 2],
                bounds={"amplitude": (lo[3 * k], None),
                        "centroid": (lo[3 * k + 1], hi[3 * k + 1]),
                        "width": (lo[3 * k + 2], hi[3 * k + 2])},
            )  # fmt: skip
        return m

    def cube(self, n, seed):
        rng = np.random.default_rng(seed)
        p = self.truth(n, rng)
        clean = np.stack([self.model(self.wave, *row) for row in p])
        sigma = self.noise(clean)
        y = clean + sigma * rng.standard_normal(clean.shape)
        y[rng.random(y.shape) < 0.01] = np.nan
        coords = {"wavelength": ("wavelength", self.wave, {"units": "Angstrom"})}
        data = xr.DataArray(y.astype(np.float32), dims=("y", "wavelength"), coords=coords,
                            attrs={"units": "W m-2 sr-1 nm-1"})  # fmt: skip
        error = xr.DataArray(sigma.astype(np.float32), dims=("y", "wavelength"), coords=coords)
        return data, error, p


def _spice_noise(clean):
    return np.sqrt(PHOTON * np.clip(clean, 0.0, None) + FLOOR)


SW_STEP = 0.097517
CASES = {
    "easy": Case(
        "easy", np.linspace(768.0, 772.6, 48), [770.0, 771.3], [0.2, 0.2], (5.0, 20.0),
        (0.5, 1.5), 0, lambda c: 0.3 * np.sqrt(c) + 0.15,
        "2 Gaussians + constant, 48 samples, high S/N",
    ),
    "spice2": Case(
        "spice2", 770.0 + SW_STEP * (np.arange(64) - 32), [769.4, 770.9],
        [0.8 * SIGMA_OF_FWHM] * 2, (0.7, 9.0), (0.01, 0.1), 0, _spice_noise,
        "SPICE-like 2 lines, 0.0975 A sampling, 64 samples, peak S/N 3-30, SPICE noise model",
    ),
    "blend6": Case(
        "blend6", 770.0 + SW_STEP * (np.arange(64) - 32),
        [767.6, 768.5, 769.3, 770.2, 771.0, 772.1], [0.8 * SIGMA_OF_FWHM] * 6, (2.0, 12.0),
        (0.05, 0.2), 1, _spice_noise, "6 blended lines + linear background, 64 samples",
    ),
}  # fmt: skip


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - w0, time.process_time() - c0


def best_of(fn, repeat):
    runs = [timed(fn) for _ in range(repeat)]
    return runs[-1][0], min(r[1] for r in runs), min(r[2] for r in runs)


def scipy_loop(case, y, s, method):
    from scipy.optimize import curve_fit

    npar = 3 * case.nl + case.degree + 1
    params = np.full((y.shape[0], npar), np.nan)
    errors = np.full((y.shape[0], npar), np.nan)
    bounds = case.bounds() if method == "trf" else (-np.inf, np.inf)
    p0 = case.start()
    for i in range(y.shape[0]):
        ok = np.isfinite(y[i])
        try:
            p, cov = curve_fit(case.model, case.wave[ok], y[i, ok], p0=p0, sigma=s[i, ok],
                               absolute_sigma=True, jac=case.jac, bounds=bounds,
                               method=method)  # fmt: skip
        except (RuntimeError, ValueError):
            continue
        params[i] = p
        errors[i] = np.sqrt(np.diag(cov))
    return params, errors


def saffron_matrix(ds, case):
    cols, errs = [], []
    for ln in range(case.nl):
        for kind in ("amplitude", "centroid", "width"):
            cols.append(ds[kind].isel(line=ln).values.ravel())
            errs.append(ds[kind + "_err"].isel(line=ln).values.ravel())
    for d in range(case.degree + 1):
        cols.append(ds.background.isel(degree=d).values.ravel())
        errs.append(ds.background_err.isel(degree=d).values.ravel())
    return np.stack(cols, 1), np.stack(errs, 1)


def pulls(params, errors, truth, ok, nl):
    cols = list(range(3 * nl))
    z = (params[ok][:, cols] - truth[ok][:, cols]) / errors[ok][:, cols]
    z = z[np.isfinite(z).all(1)]
    return np.std(z, 0) if len(z) else np.full(len(cols), np.nan)


def run_case(case, args):
    n = args.n
    data, error, truth = case.cube(n, seed=20240101)
    model = case.line_model()
    print(f"\n=== {case.name}: {case.desc}; {n} spectra (float32, 1% NaN samples)")
    fit_lines(data[:2], model, error=error[:2])  # compile outside the timings
    settings = {
        "as is": {},
        "like-for-like": dict(rescale_initial=False, moments=False, ftol=1e-8, xtol=1e-8),
    }
    rates, results = {}, {}
    runs = {label: [] for label in settings}
    for _ in range(args.repeat):  # the settings alternate: neither runs on a warmer machine
        for label, kw in settings.items():
            runs[label].append(timed(lambda kw=kw: fit_lines(data, model, error=error, **kw)))
    for label in settings:
        ds = runs[label][-1][0]
        wall = min(r[1] for r in runs[label])
        cpu = min(r[2] for r in runs[label])
        rates[label] = n / cpu
        results[label] = ds
        conv = np.isin(ds.status.values, [int(s) for s in FitStatus.converged()]).mean()
        usable = np.isin(ds.status.values, [int(s) for s in FitStatus.usable()]).mean()
        print(f"saffron_xr {label:<14}: {n / cpu:9.0f} fits/CPU-s [{n / wall:9.0f}/s wall]; "
              f"mean iterations {float(ds.n_iter.mean()):.1f}; converged {conv:.1%}, "
              f"usable {usable:.1%}")  # fmt: skip
    m = min(args.scipy_subset, n)
    y2 = data.values[:m].astype(float)
    s2 = error.values[:m].astype(float)
    scipy_res = {}
    for method in ("lm", "trf"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res, wall, cpu = best_of(lambda method=method: scipy_loop(case, y2, s2, method),
                                     args.repeat)  # fmt: skip
        rates[method] = m / cpu
        scipy_res[method] = res
        label = "lm, no bounds" if method == "lm" else "trf, same bounds"
        print(f"scipy curve_fit {label:<17}: {m / cpu:9.0f} fits/CPU-s [{m / wall:9.0f}/s wall] "
              f"({m} spectra, analytic Jacobian, ftol=xtol=gtol=1e-8)")  # fmt: skip
    print("ratios (per CPU-second):")
    for label in settings:
        for method in ("lm", "trf"):
            print(
                f"  saffron {label:<14} / scipy {method:<3}: {rates[label] / rates[method]:7.1f}x"
            )
    print("accuracy (pull std per line parameter, a c w ...; and agreement with scipy):")
    for label, ds in results.items():
        p, e = saffron_matrix(ds, case)
        ok = np.isin(ds.status.values.ravel(), [int(s) for s in FitStatus.usable()])
        ok &= np.isfinite(e[:, : 3 * case.nl]).all(1)
        z = pulls(p, e, truth, ok, case.nl)
        print(f"  saffron {label:<14} pulls: " + " ".join(f"{v:.2f}" for v in z))
        for method, (sp, se) in scipy_res.items():
            both = ok[:m] & np.isfinite(sp).all(1) & np.isfinite(se).all(1)
            both &= np.all(np.abs((sp - truth[:m]) / se) < 10, axis=1)  # same minimum
            d = np.abs(p[:m][both] - sp[both]) / se[both]
            print(f"    vs scipy {method}: median |diff|/error {np.median(d):.1e}, "
                  f"95th pct {np.percentile(d, 95):.1e} ({both.sum()} spectra)")  # fmt: skip
    for method, (sp, se) in scipy_res.items():
        good = np.isfinite(sp).all(1) & np.isfinite(se).all(1)
        z = pulls(sp, se, truth[:m], good, case.nl)
        print(f"  scipy {method:<3} pulls: " + " ".join(f"{v:.2f}" for v in z)
              + f"  (failed {1 - good.mean():.1%})")  # fmt: skip
    return rates


STARTUP = """
import time
t0 = time.perf_counter()
import numpy as np, xarray as xr
import saffron_xr
wl = np.linspace(769.0, 771.0, 40)
spec = 2.0 * np.exp(-0.5 * ((wl - 770.1) / 0.3) ** 2) + 0.1
da = xr.DataArray(np.tile(spec, (16, 1)), dims=("y", "wavelength"), coords={"wavelength": wl})
m = saffron_xr.LineModel()
m.add_line("ne_8 770.42", amplitude=1.0, centroid=770.0, width=0.3)
ds = saffron_xr.fit_lines(da, m, error=xr.full_like(da, 0.01))
assert int(ds.status[0]) == 0
print(f"{time.perf_counter() - t0:.2f}")
"""


def startup():
    """Cold (empty cache folder) and warm start-up of a fresh process, in seconds."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        times = []
        for _ in range(3):
            out = subprocess.run([sys.executable, "-c", STARTUP], env=env, capture_output=True,
                                 text=True, check=True)  # fmt: skip
            times.append(float(out.stdout.strip().splitlines()[-1]))
    print(f"\nstart-up (import + fit 16 spectra in a fresh process): cold {times[0]:.1f} s "
          f"(compiles into an empty cache), warm {times[1]:.1f} s and {times[2]:.1f} s "
          "(kernels loaded from the cache)")  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="spectra per case")
    parser.add_argument("--scipy-subset", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=2, help="best of N, for every fitter")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--no-startup", action="store_true")
    args = parser.parse_args()
    print("machine:", machine())
    if not args.no_startup:
        startup()
    for name in args.cases:
        run_case(CASES[name], args)
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
