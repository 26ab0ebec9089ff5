"""What a fit engine batched across pixels could gain (issue 13): the evaluations that an
iteration makes, per pixel as the kernel makes them, and for groups of L pixels at once with
the pixels innermost ("lanes"), so that the compiler can use the CPU's vector registers
across pixels instead of within one pixel's short, dependent loops.

Two measurements per case, each at every pixel's true parameters of a `bench_fit` case:

* ``chi2``: the model, the weighted residuals and their sum of squares;
* ``chi2 + J, J^T J, J^T r``: the same followed by the Jacobian and the normal equations.

The per-pixel figures run the kernel's own ``_chi2_g`` and ``_jacobian_g`` on each pixel's
compacted samples (valid samples only, each line over its reach, J^T J by BLAS). The lane
code evaluates every line on every sample of the uniform grid with the same exponential
recurrence as the kernel (three exponentials per line and pixel), NaN samples having weight
0, every parameter free; its inputs are laid out (samples, lanes) beforehand. Neither timing
includes that preparation, and both repeat the evaluation on data in cache, as an iteration
does. The lane results must match the kernel's: the largest relative differences of chi2
and of J^T J are printed.

Measured (AMD EPYC, AVX-512, numba 0.68, 2026-11-29, three runs): at 64 lanes chi2 is
3.3-3.8x faster than per pixel and chi2 with the normal equations 2.3-2.5x on the 2-line
cases; at 8 lanes chi2 is 1.1-1.4x faster and chi2 with the normal equations 0.4-0.9x (that
is, slower). On ``blend6`` (20 parameters) chi2 is 3.1-3.3x faster, but the lane code's
dense J^T J (210 sums over every sample) is no faster than the kernel's BLAS product per
pixel (1.0-1.1x). The rest of an iteration (the damped solve, bounds, acceptance) is per-pixel scalar
code today and is about half of a fit's time on these cases (``bench_kernel_stages.py``), so
the gain carries to a whole fit only if that part runs across lanes as well.

This measures pieces of an engine that does not exist; it is not one.

Run: ``python benchmarks/bench_lanes.py [--cases easy spice2 blend6] [--n 16384]``.
"""

from __future__ import annotations

import argparse
import math
import re
import time

import numba
import numpy as np
from bench_fit import CASES  # the script's folder is on sys.path
from bench_kernel_stages import capture, unpack_spec
from bench_real_raster import machine

from saffron_xr.fit import _kernels as K

LANES = (8, 16, 64, 128)


@numba.njit(nogil=True)
def _per_pixel(smp_all, n_all, q_all, spec, reps, normal, jtj_out):
    """Sum over pixels and repetitions of the kernel's chi2 at each pixel's q; with
    ``normal``, each chi2 is followed by the kernel's J, J^T J and J^T r there (J^T J of the
    first ``len(jtj_out)`` pixels copied to jtj_out)."""
    mdl, free_root, _lower, _upper, _kind = unpack_spec(spec)
    nl = mdl[0]
    nfree = free_root.shape[0]
    nfull = mdl[3].shape[0]
    nw = smp_all.shape[2]
    lines = K._line_store(nl, nw)
    pfull = np.empty(nfull)
    jbuf = np.empty(nfree * nw)  # J of each pixel: its first nfree * n values, (nfree, n)
    vec = (np.empty(nfree), np.empty(nfree), np.empty((nfree, nfree)), np.empty(nfree))
    total = 0.0
    for px in range(smp_all.shape[0]):
        smp = smp_all[px]
        n = n_all[px]
        jac = (jbuf[: nfree * n].reshape((nfree, n)), vec[0], vec[1], vec[2], vec[3])
        for _r in range(reps):  # repeated on one pixel: its samples stay in cache, as in a fit
            total += K._chi2_g(q_all[px], n, smp, mdl, pfull, True, lines)
            if normal:
                K._jacobian_g(q_all[px], n, smp, mdl, pfull, jac, True, lines, False)
                total += jac[3][0, 0]
        if normal and px < jtj_out.shape[0]:
            jtj_out[px] = jac[3]
    return total


@numba.njit(nogil=True)
def _lanes(lam, ys, ws, ps, nl, nbg, ref, out, res, gg, rr, qq, g, jm, jtj, jtr, normal):
    """chi2 of the L pixels of one group: ys, ws (n, L); ps (n_full, L); out (L,). With
    ``normal``, also J (jm: (n_full, n, L), every parameter free), J^T J and J^T r."""
    n = lam.shape[0]
    nlanes = ys.shape[1]
    step = lam[1] - lam[0]
    b = 3 * nl
    for i in range(n):
        t = lam[i] - ref
        for lane in range(nlanes):
            res[i, lane] = ps[b, lane]
        if nbg > 1:
            for lane in range(nlanes):
                res[i, lane] += ps[b + 1, lane] * t
    for k in range(nl):
        for lane in range(nlanes):
            inv = 1.0 / ps[3 * k + 2, lane]
            z0 = (lam[0] - ps[3 * k + 1, lane]) * inv
            d = step * inv
            qq[lane] = math.exp(-d * d)
            rr[lane] = math.exp(-z0 * d - 0.5 * d * d)
            gg[lane] = math.exp(-0.5 * z0 * z0)
        gk = g[k]
        for i in range(n):
            for lane in range(nlanes):
                gk[i, lane] = gg[lane]
                res[i, lane] += ps[3 * k, lane] * gg[lane]
                gg[lane] *= rr[lane]
                rr[lane] *= qq[lane]
    for lane in range(nlanes):
        out[lane] = 0.0
    for i in range(n):
        for lane in range(nlanes):
            d = (ys[i, lane] - res[i, lane]) * ws[i, lane]
            res[i, lane] = d
            out[lane] += d * d
    if not normal:
        return
    nfree = b + nbg
    for k in range(nl):  # g holds exp(-z**2 / 2)
        ja = jm[3 * k]
        jc = jm[3 * k + 1]
        jw = jm[3 * k + 2]
        gk = g[k]
        for lane in range(nlanes):  # scratch free after the chi2: 1 / width, amplitude / width
            qq[lane] = 1.0 / ps[3 * k + 2, lane]
            rr[lane] = ps[3 * k, lane] * qq[lane]
        for i in range(n):
            for lane in range(nlanes):
                z = (lam[i] - ps[3 * k + 1, lane]) * qq[lane]
                t = gk[i, lane] * ws[i, lane]
                ja[i, lane] = t
                u = rr[lane] * t * z
                jc[i, lane] = u
                jw[i, lane] = u * z
    for i in range(n):
        t = lam[i] - ref
        for lane in range(nlanes):
            jm[b, i, lane] = ws[i, lane]
        if nbg > 1:
            for lane in range(nlanes):
                jm[b + 1, i, lane] = ws[i, lane] * t
    for a in range(nfree):
        ja = jm[a]
        acc = jtr[a]
        for lane in range(nlanes):
            acc[lane] = 0.0
        for i in range(n):
            for lane in range(nlanes):
                acc[lane] += ja[i, lane] * res[i, lane]
        for c in range(a + 1):
            jc = jm[c]
            acc = jtj[a, c]
            for lane in range(nlanes):
                acc[lane] = 0.0
            for i in range(n):
                for lane in range(nlanes):
                    acc[lane] += ja[i, lane] * jc[i, lane]


@numba.njit(nogil=True)
def _all_lanes(lam, ys, ws, ps, nl, nbg, ref, out, reps, normal):
    """`_lanes` over every group (ys, ws: (groups, n, L); ps: (groups, n_full, L))."""
    ng, n, nlanes = ys.shape
    nfull = ps.shape[1]
    s = _scratch(nl, n, nfull, nlanes)
    total = 0.0
    for grp in range(ng):
        for _r in range(reps):  # repeated on one group, as `_per_pixel` does
            _lanes(lam, ys[grp], ws[grp], ps[grp], nl, nbg, ref, out[grp], *s, normal)
            total += out[grp, 0] + s[6][0, 0, 0]
    return total


@numba.njit(nogil=True)
def _scratch(nl, n, nfull, nlanes):
    """res, gg, rr, qq, g, jm, jtj, jtr for `_lanes`."""
    return (np.empty((n, nlanes)), np.empty(nlanes), np.empty(nlanes), np.empty(nlanes),
            np.empty((nl, n, nlanes)), np.empty((nfull, n, nlanes)),
            np.empty((nfull, nfull, nlanes)), np.empty((nfull, nlanes)))  # fmt: skip


def _prepare(case, n, seed=20240101):
    """Per-pixel compacted samples (the kernel's layout) and the raw arrays."""
    y, err, wave, _photon, _floor, _p0, spec, _template = capture(case.name, n, seed=seed)
    _, _, truth = case.cube(n, seed=seed)  # the same draw as the captured spectra
    y = y.astype(np.float64)
    err = err.astype(np.float64)
    nw = wave.shape[0]
    nan = np.full(nw, np.nan)
    smp_all = np.empty((n, K._N_ROWS, nw))
    n_all = np.empty(n, dtype=np.int64)
    work = np.empty(K._work_size(spec, nw))
    for px in range(n):
        n_all[px] = K._compact(y[px], err[px], wave, nan, nan, spec, work)
        smp_all[px] = work[: K._N_ROWS * nw].reshape(K._N_ROWS, nw)
    nfree = int(spec[K.SPEC_N_FREE])
    if nfree != truth.shape[1]:
        raise ValueError(f"{case.name}: the lane comparison needs every parameter free")
    return spec, smp_all, n_all, np.ascontiguousarray(truth), y, err, wave


def _best(fn, repeat):
    best = math.inf
    for _ in range(repeat):
        c0 = time.process_time()
        fn()
        best = min(best, time.process_time() - c0)
    return best


def _lane_jtj(wave, ys, ws, ps, nl, nbg, ref, m):
    """J^T J (lower triangle) of the first m pixels from the lane code, (m, n_full, n_full)."""
    nlanes = ys.shape[2]
    nfull = ps.shape[1]
    out = np.empty((m, nfull, nfull))
    for grp in range(-(-m // nlanes)):
        s = _scratch(nl, ys.shape[1], nfull, nlanes)
        chi2 = np.empty(nlanes)
        _lanes(wave, ys[grp], ws[grp], ps[grp], nl, nbg, ref, chi2, *s, True)
        for lane in range(nlanes):
            px = grp * nlanes + lane
            if px < m:
                out[px] = np.tril(s[6][:, :, lane])
                out[px] += np.tril(out[px], -1).T
    return out


def _packed_multiplies():
    """Packed (vector) double multiplications and fused multiply-adds in the compiled lane
    code (one compiled version serves every case and number of lanes)."""
    asm = _lanes.inspect_asm(_lanes.signatures[0])
    return len(re.findall(r"\bv(?:mul|fn?m(?:add|sub)\d{3})pd\b", asm))


def _lane_layout(a, nlanes):
    """(pixels, k) -> (groups, k, lanes), the pixels that do not fill a group dropped."""
    ng = a.shape[0] // nlanes
    return np.ascontiguousarray(a[: ng * nlanes].reshape(ng, nlanes, -1).transpose(0, 2, 1))


def run(case_name, n, reps, repeat):
    case = CASES[case_name]
    spec, smp_all, n_all, truth, y, err, wave = _prepare(case, n)
    nl = int(spec[K.SPEC_N_LINES])
    nbg = int(spec[K.SPEC_DEGREE]) + 1
    ref = float(spec[K.SPEC_HEADER + 2 * int(spec[K.SPEC_N_SEGMENTS])])  # segment 0
    ok = np.isfinite(y) & np.isfinite(err) & (err > 0)
    w = np.where(ok, 1.0 / np.where(ok, err, 1.0), 0.0)
    y0 = np.where(ok, y, 0.0)
    print(f"=== {case_name}: {n} pixels, {wave.shape[0]} samples, {nl} lines")
    for normal in (False, True):
        what = "chi2 + J, J^T J, J^T r" if normal else "chi2"
        nfree = truth.shape[1]
        none = np.empty((0, nfree, nfree))
        t_pp = _best(lambda nm=normal, no=none: _per_pixel(smp_all, n_all, truth, spec, reps, nm,
                                                           no), repeat)  # fmt: skip
        ns_pp = t_pp / (reps * n) * 1e9
        print(f"  {what}: per pixel (the kernel's functions) {ns_pp:7.1f} ns/pixel")
        k = min(n, 128)
        chi_pp = np.array([_per_pixel(smp_all[i : i + 1], n_all[i : i + 1], truth[i : i + 1],
                                      spec, 1, False, none) for i in range(k)])  # fmt: skip
        jtj_pp = np.empty((k, nfree, nfree))
        _per_pixel(smp_all[:k], n_all[:k], truth[:k], spec, 1, True, jtj_pp)
        for nlanes in LANES:
            ys, ws, ps = (_lane_layout(a, nlanes) for a in (y0, w, truth))
            out = np.empty(ys.shape[::2])
            _all_lanes(wave, ys[:1], ws[:1], ps[:1], nl, nbg, ref, out[:1], 1, normal)
            t = _best(lambda a=(wave, ys, ws, ps, nl, nbg, ref, out, reps, normal):
                      _all_lanes(*a), repeat)  # fmt: skip
            ns = t / (reps * ys.shape[0] * nlanes) * 1e9
            m = min(k, out.size)
            rel = np.max(np.abs(out.reshape(-1)[:m] - chi_pp[:m]) / np.abs(chi_pp[:m]))
            line = (f"    {nlanes:3d} lanes {ns:7.1f} ns/pixel (speed-up {ns_pp / ns:4.2f}x); "
                    f"largest relative difference: chi2 {rel:.1e}")  # fmt: skip
            if normal:
                got = _lane_jtj(wave, ys, ws, ps, nl, nbg, ref, m)
                lower = np.tril_indices(nfree)
                d = np.abs(got - jtj_pp[:m])[:, lower[0], lower[1]]
                scale = np.abs(jtj_pp[:m])[:, lower[0], lower[1]].max(axis=1, keepdims=True)
                line += f", J^T J {np.max(d / scale):.1e}"
            print(line)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cases", nargs="+", default=["easy", "spice2", "blend6"], choices=list(CASES)
    )
    parser.add_argument("--n", type=int, default=16384)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print("machine:", machine())
    for name in args.cases:
        run(name, args.n, args.reps, args.repeat)
    print(f"packed multiplications and multiply-adds in the compiled lane code: "
          f"{_packed_multiplies()}")  # fmt: skip


if __name__ == "__main__":
    main()
