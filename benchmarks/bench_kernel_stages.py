"""Per-stage timing of the fit kernel on the `bench_fit` cases, and old/new output comparison.

The gufunc inputs of each case are captured from ``fit_lines`` (its ``_fit_block`` call), so
the figures are those of the kernel alone (no xarray). Cases: those of ``bench_fit.py`` plus
``spice2n``, the ``spice2`` spectra fitted with the SPICE noise model (weights from the
model, ``_REWEIGHT_PASSES`` refits).

* ``stages``: CPU time (``time.process_time``, best of ``--repeat``) per spectrum of the
  cumulative stages compact, + start, + first iterate, + reweight passes, + the whole pixel
  (covariance, significance, pack), each called from one numba loop over the spectra; and
  the gufunc itself.
* ``--rates``: the gufunc alone, fits per CPU-second (any version of the kernels: run it
  alternately with an old and a new checkout on ``PYTHONPATH`` for an A/B comparison).
* ``--dump FILE``: write the packed outputs of every case (npz), e.g. once with an old
  checkout on ``PYTHONPATH`` and once with the new one; ``--compare OLD NEW`` reports the
  status agreement and the largest parameter difference in units of the error bar.

Run: ``PYTHONPATH=$PWD python benchmarks/bench_kernel_stages.py [--n 20000]``.
"""

from __future__ import annotations

import argparse
import math
import time

import numba
import numpy as np
import xarray as xr
from bench_fit import CASES, FLOOR, PHOTON  # the script's folder is on sys.path

from saffron_xr import fit_lines
from saffron_xr.fit import _kernels as K
from saffron_xr.fit import core


def capture(case_name, n, seed=20240101):
    """The gufunc inputs (y, err, wave, photon, floor, p0, spec, template) of one case."""
    name = "spice2" if case_name == "spice2n" else case_name
    case = CASES[name]
    data, error, _ = case.cube(n, seed=seed)
    kw = {}
    if case_name == "spice2n":
        kw["noise"] = xr.Dataset(
            {"photon": PHOTON + 0.0 * data[0], "floor": FLOOR + 0.0 * data[0]}
        )
    box = {}
    orig = core._fit_block

    def spy(*args, **kwargs):
        box["args"] = args
        box["kwargs"] = kwargs
        return orig(*args, **kwargs)

    core._fit_block = spy
    try:
        fit_lines(data, case.line_model(), error=error, **kw)
    finally:
        core._fit_block = orig
    args = list(box["args"])
    y, err, wave, p0 = (np.asarray(a) for a in args[:4])
    if len(args) > 4:
        photon = np.broadcast_to(np.asarray(args[4], dtype=np.float64), y.shape).copy()
        floor = np.broadcast_to(np.asarray(args[5], dtype=np.float64), y.shape).copy()
    else:
        photon = np.full(y.shape, np.nan)
        floor = np.full(y.shape, np.nan)
    spec = box["kwargs"]["spec"]
    template = np.empty(box["kwargs"]["size"])
    p0 = np.broadcast_to(p0, (y.shape[0], p0.shape[-1])).copy()
    return (y, err.astype(y.dtype), np.ascontiguousarray(wave, dtype=np.float64), photon,
            floor, p0, spec, template)  # fmt: skip


def run_gufunc(inputs):
    y, err, wave, photon, floor, p0, spec, template = inputs
    g = K.fit_gufunc(y.dtype.name)
    with np.errstate(all="ignore"):
        return g(y, err, wave, photon, floor, p0, spec, template)


@numba.njit(cache=False)
def unpack_spec(spec):
    """(mdl, free_root, lower, upper, free_kind) from a packed spec, as `_fit_pixel` reads
    them (mdl: the model tuple the kernel's stages take)."""
    nl = int(spec[K.SPEC_N_LINES])
    nbg = int(spec[K.SPEC_DEGREE]) + 1
    nseg = int(spec[K.SPEC_N_SEGMENTS])
    nfree = int(spec[K.SPEC_N_FREE])
    nfull = 3 * nl + nseg * nbg
    o = K.SPEC_HEADER + 2 * nseg
    seg_ref = spec[o : o + nseg]
    o += nseg
    root = spec[o : o + nfull]
    scale = spec[o + nfull : o + 2 * nfull]
    offset = spec[o + 2 * nfull : o + 3 * nfull]
    o += 3 * nfull
    free_root = spec[o : o + nfree]
    lower = spec[o + nfree : o + 2 * nfree]
    upper = spec[o + 2 * nfree : o + 3 * nfree]
    free_kind = spec[o + 3 * nfree : o + 4 * nfree]
    soft_min = spec[o + 4 * nfree : o + 5 * nfree]
    soft_inv = spec[o + 5 * nfree : o + 6 * nfree]
    mdl = (nl, nbg, seg_ref, root, scale, offset, soft_min, soft_inv)
    return mdl, free_root, lower, upper, free_kind


@numba.njit(cache=False)
def _stages(y, err, wave, photon, floor, p0, spec, out, upto):
    """Run the pixel fit up to stage `upto` (0 compact, 1 start, 2 iterate, 3 reweight,
    4 all) for every spectrum; returns the total of iterations (a checksum)."""
    n_spec, nw = y.shape
    mdl, free_root, lower, upper, free_kind = unpack_spec(spec)
    nl = mdl[0]
    nfree = free_root.shape[0]
    nfull = mdl[3].shape[0]
    total = 0
    for px in range(n_spec):
        work = np.empty(K._work_size(spec, nw))
        n = K._compact(y[px], err[px], wave, photon[px], floor[px], spec, work)
        if upto == 0 or n <= nfree:
            continue
        if upto == 4:
            K._fit_pixel(work, nw, n, p0[px], spec, out[px])
            total += int(out[px, 2 * nfull + 6 * nl + 1])
            continue
        smp = work[: K._N_ROWS * nw].reshape((K._N_ROWS, nw))
        o = K._N_ROWS * nw
        jmat = work[o : o + nfree * n].reshape((nfree, n))
        o += nfree * nw
        vec = work[o : o + 10 * nfree].reshape((10, nfree))
        o += 10 * nfree
        mats = work[o : o + 4 * nfree * nfree].reshape((4, nfree, nfree))
        o += 4 * nfree * nfree
        pfull = work[o : o + nfull]
        o += nfull
        lines = (work[o : o + nl * nw].reshape((nl, nw)),
                 work[o + nl * nw : o + nl * nw + 2 * nl].reshape((nl, 2)))  # fmt: skip
        pfull_old = work[o + nl * nw + 2 * nl : o + nl * nw + 2 * nl + nfull]
        jac = (jmat, vec[6], vec[7], mats[0], vec[3])
        tmp = (vec[1], vec[2], vec[4], vec[5], mats[1])
        aux = (mats[2], vec[8], vec[9])
        q = vec[0]
        chi2 = K._start(q, p0[px], n, smp, mdl, pfull, jac, tmp, free_root, free_kind, lower,
                        upper, spec[K.SPEC_RESCALE] != 0.0, spec[K.SPEC_MOMENTS] != 0.0,
                        True, lines, pfull_old)  # fmt: skip
        if upto == 1 or not math.isfinite(chi2):
            continue
        n_passes = int(spec[K.SPEC_REWEIGHT])
        if n_passes > 0 and K._reweight(n, smp) > 0:
            chi2 = K._chi2_g(q, n, smp, mdl, pfull, True, lines)
            K._jacobian_g(q, n, smp, mdl, pfull, jac, True, lines, False)
            n_passes -= 1
        st, it, chi2 = K._iterate_g(q, chi2, n, smp, mdl, pfull, jac, tmp, lower, upper,
                                    int(spec[K.SPEC_MAX_ITER]), spec[K.SPEC_FTOL],
                                    spec[K.SPEC_XTOL], True, lines, aux,
                                    False)  # fmt: skip
        total += it
        if upto == 2:
            continue
        for _p in range(n_passes):
            if K._reweight(n, smp) == 0:
                break
            chi2 = K._chi2_g(q, n, smp, mdl, pfull, True, lines)
            K._jacobian_g(q, n, smp, mdl, pfull, jac, True, lines, False)
            st, it, chi2 = K._iterate_g(q, chi2, n, smp, mdl, pfull, jac, tmp, lower, upper,
                                        int(spec[K.SPEC_MAX_ITER]), spec[K.SPEC_FTOL],
                                        spec[K.SPEC_XTOL], True, lines, aux,
                                        True)  # fmt: skip
            total += it
    return total


@numba.njit(cache=False)
def _evals(y, err, wave, photon, floor, p0, spec, reps, which):
    """Time of `reps` chi2 (which=0) or chi2 + Jacobian (which=1) evaluations at the start
    point of every spectrum (after compaction)."""
    n_spec, nw = y.shape
    mdl, free_root, _lower, _upper, _free_kind = unpack_spec(spec)
    nl = mdl[0]
    nfree = free_root.shape[0]
    nfull = mdl[3].shape[0]
    acc = 0.0
    work = np.empty(K._work_size(spec, nw))
    for px in range(n_spec):
        n = K._compact(y[px], err[px], wave, photon[px], floor[px], spec, work)
        smp = work[: K._N_ROWS * nw].reshape((K._N_ROWS, nw))
        o = K._N_ROWS * nw
        jmat = work[o : o + nfree * n].reshape((nfree, n))
        o += nfree * nw
        vec = work[o : o + 10 * nfree].reshape((10, nfree))
        o += 10 * nfree
        mats = work[o : o + 4 * nfree * nfree].reshape((4, nfree, nfree))
        o += 4 * nfree * nfree
        pfull = work[o : o + nfull]
        o += nfull
        lines = (work[o : o + nl * nw].reshape((nl, nw)),
                 work[o + nl * nw : o + nl * nw + 2 * nl].reshape((nl, 2)))  # fmt: skip
        jac = (jmat, vec[6], vec[7], mats[0], vec[3])
        q = vec[0]
        for f in range(nfree):
            q[f] = p0[px, int(free_root[f])]
        for _r in range(reps):
            acc += K._chi2_g(q, n, smp, mdl, pfull, True, lines)
            if which > 0:
                K._jacobian_g(q, n, smp, mdl, pfull, jac, True, lines, which == 2)
    return acc


def best(fn, repeat):
    t = []
    for _ in range(repeat):
        c0 = time.process_time()
        fn()
        t.append(time.process_time() - c0)
    return min(t)


def stages(names, n, repeat):
    for name in names:
        inputs = capture(name, n)
        y, err, wave, photon, floor, p0, spec, template = inputs
        out = np.empty((y.shape[0], template.shape[0]))
        y64 = y.astype(np.float64)
        e64 = err.astype(np.float64)
        args = (y64, e64, wave, photon, floor, p0, spec)
        for upto in range(5):  # compile
            _stages(y64[:2], e64[:2], wave, photon[:2], floor[:2], p0[:2], spec, out[:2], upto)
        _evals(y64[:2], e64[:2], wave, photon[:2], floor[:2], p0[:2], spec, 1, 0)
        _evals(y64[:2], e64[:2], wave, photon[:2], floor[:2], p0[:2], spec, 1, 1)
        _evals(y64[:2], e64[:2], wave, photon[:2], floor[:2], p0[:2], spec, 1, 2)
        run_gufunc(tuple(a[:2] if i in (0, 1, 3, 4, 5) else a for i, a in enumerate(inputs)))
        times = {}
        labels = ("compact", "+start", "+iterate", "+reweight", "whole")
        its = 0
        for _ in range(repeat):
            for upto, lab in enumerate(labels):
                c0 = time.process_time()
                tot = _stages(*args, out, upto)
                dt = time.process_time() - c0
                times[lab] = min(times.get(lab, math.inf), dt)
                if upto == 4:
                    its = tot
            c0 = time.process_time()
            run_gufunc(inputs)
            dt = time.process_time() - c0
            times["gufunc"] = min(times.get("gufunc", math.inf), dt)
        reps = 10
        t_chi2 = best(lambda a=args, r=reps: _evals(*a, r, 0), repeat) / (reps * n)
        t_both = best(lambda a=args, r=reps: _evals(*a, r, 1), repeat) / (reps * n)
        t_lin = best(lambda a=args, r=reps: _evals(*a, r, 2), repeat) / (reps * n)
        print(f"=== {name}: {n} spectra; mean iterations {its / n:.2f}")
        prev = 0.0
        for lab in labels:
            t = times[lab] / n * 1e6
            print(f"  {lab:<10} {t:8.2f} us/spectrum (stage {t - prev:7.2f} us)")
            prev = t
        t = times["gufunc"] / n
        print(f"  gufunc     {t * 1e6:8.2f} us/spectrum = {1 / t:9.0f} fits/CPU-s")
        print(
            f"  one chi2 {t_chi2 * 1e6:.3f} us, one Jacobian {(t_both - t_chi2) * 1e6:.3f} us"
            f" (linear-only {(t_lin - t_chi2) * 1e6:.3f} us)"
        )


def rates(names, n, repeat):
    """fits per CPU-second of the gufunc alone (works with any version of the kernels)."""
    parts = []
    for name in names:
        inputs = capture(name, n)
        run_gufunc(tuple(a[:2] if i in (0, 1, 3, 4, 5) else a for i, a in enumerate(inputs)))
        t = best(lambda x=inputs: run_gufunc(x), repeat)
        parts.append(f"{name} {n / t:8.0f}")
    print("fits/CPU-s: " + ", ".join(parts))


def dump(names, n, path):
    arrays = {}
    for name in names:
        arrays[name] = run_gufunc(capture(name, n))
    np.savez(path, **arrays)


def compare(old_path, new_path):
    old = np.load(old_path)
    new = np.load(new_path)
    for name in old.files:
        a, b = old[name], new[name]
        case = CASES["spice2" if name == "spice2n" else name]
        nl = case.nl
        nfull = 3 * nl + case.degree + 1
        lay = K.packed_layout(nl, nfull)
        st_a = a[:, lay["status"]].ravel()
        st_b = b[:, lay["status"]].ravel()
        same = np.mean(st_a == st_b)
        both = (st_a <= 1) & (st_b <= 1)  # converged (at bound or not)
        pa, pb = a[both][:, lay["params"]], b[both][:, lay["params"]]
        ea = a[both][:, lay["errors"]]
        with np.errstate(all="ignore"):
            d = np.abs(pa - pb) / np.where(ea > 0, ea, np.nan)
        d = d[np.isfinite(d)]
        it_a = a[:, lay["n_iter"]].mean()
        it_b = b[:, lay["n_iter"]].mean()
        print(f"{name}: statuses identical {same:.4%}; converged in both {both.mean():.2%}; "
              f"|dp|/err max {d.max():.2e}, 99.9th pct {np.percentile(d, 99.9):.2e}, "
              f"median {np.median(d):.2e}; fraction > 1e-3: {np.mean(d > 1e-3):.2e}; "
              f"mean iterations {it_a:.2f} -> {it_b:.2f}")  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cases", nargs="+", default=["easy", "spice2", "blend6", "spice2n"])
    parser.add_argument("--dump", metavar="FILE")
    parser.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"))
    parser.add_argument("--rates", action="store_true", help="time the gufunc alone")
    args = parser.parse_args()
    if args.compare:
        compare(*args.compare)
    elif args.rates:
        rates(args.cases, args.n, args.repeat)
    elif args.dump:
        dump(args.cases, args.n, args.dump)
    else:
        stages(args.cases, args.n, args.repeat)


if __name__ == "__main__":
    main()
