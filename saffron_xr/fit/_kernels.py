"""numba kernels: Gaussian-lines model, analytic Jacobian, Levenberg-Marquardt, as gufuncs.

This is the only module of the package that imports numba; it imports neither xarray nor
the rest of the fitting code (only the status enum). ``fit/core.py`` imports it lazily, on
the first fit.

Layouts (named here, once):

*spec* (``(k)``, float64) — the compiled model and the options, built by `pack_spec`:
``SPEC_*`` header entries, then ``seg_min[nseg], seg_max[nseg], seg_ref[nseg],
root[nfull], scale[nfull], offset[nfull], free_root[nfree], free_lower[nfree],
free_upper[nfree]`` (see ``saffron_xr.fit.model.CompiledModel``).

*packed output* (``(q)``, float64) — per pixel, see `packed_layout`: the full parameters,
their 1-sigma errors, three per-line covariance terms, then ``chi2, n_iter, n_valid,
status`` (and ``level`` for the adaptive kernel).

The gufuncs are built on first use by `fit_gufunc` / `adaptive_gufunc` (``functools.cache``).
Environment variables ``SAFFRON_NUMBA_FASTMATH=1`` and ``SAFFRON_NUMBA_CACHE=1`` opt in to
numba's fastmath and on-disk caching; both are off by default (fastmath breaks the ``isnan``
tests that skip missing samples, and cached gufuncs have failed after pickling to dask
workers). They are read when this module is first imported.
"""

from __future__ import annotations

import functools
import math
import os

import numba
import numpy as np

from .status import FitStatus

# ----------------------------------------------------------------------------- layouts
SPEC_N_LINES = 0
SPEC_DEGREE = 1
SPEC_N_SEGMENTS = 2
SPEC_N_FREE = 3
SPEC_MAX_ITER = 4
SPEC_FTOL = 5
SPEC_XTOL = 6
SPEC_MIN_VALID = 7
SPEC_SCALE_ERRORS = 8
SPEC_RESCALE = 9
SPEC_THRESHOLD_AMPLITUDE = 10
SPEC_THRESHOLD_CENTROID = 11
SPEC_THRESHOLD_WIDTH = 12
SPEC_HEADER = 13

_ST_CONVERGED = int(FitStatus.CONVERGED)
_ST_AT_BOUND = int(FitStatus.CONVERGED_AT_BOUND)
_ST_MAX_ITER = int(FitStatus.MAX_ITER)
_ST_SINGULAR = int(FitStatus.SINGULAR)
_ST_TOO_FEW = int(FitStatus.TOO_FEW_VALID)
_ST_ALL_NAN = int(FitStatus.ALL_NAN)
_ST_BAD_INITIAL = int(FitStatus.BAD_INITIAL)
_ST_THRESHOLD = int(FitStatus.THRESHOLD_NOT_MET)

# Damping of the normal matrix: A = JtJ + lam * max(diag(JtJ), _DIAG_FLOOR * max diag).
_LAMBDA_START = 1e-3
_LAMBDA_MAX = 1e16
_LAMBDA_MIN = 1e-15
_DIAG_FLOOR = 1e-12
# Cholesky pivot below _PIVOT_RTOL * (its diagonal entry) counts as singular.
_PIVOT_RTOL = 1e-13


def pack_spec(
    compiled,
    *,
    max_iter: int,
    ftol: float,
    xtol: float,
    min_valid: int,
    scale_errors: bool,
    rescale_initial: bool,
    thresholds=(math.inf, math.inf, math.inf),
) -> np.ndarray:
    """Pack a ``CompiledModel`` and the fit options into the kernel's ``spec`` array.

    Parameters
    ----------
    compiled : saffron_xr.fit.model.CompiledModel
    max_iter, ftol, xtol, min_valid, scale_errors, rescale_initial
        See ``saffron_xr.fit_lines``.
    thresholds : (float, float, float)
        Relative-error thresholds for amplitude, centroid and width (adaptive kernel only).

    Returns
    -------
    numpy.ndarray
        float64, 1-D.
    """
    header = np.zeros(SPEC_HEADER)
    header[SPEC_N_LINES] = compiled.n_lines
    header[SPEC_DEGREE] = compiled.degree
    header[SPEC_N_SEGMENTS] = compiled.n_segments
    header[SPEC_N_FREE] = compiled.n_free
    header[SPEC_MAX_ITER] = max_iter
    header[SPEC_FTOL] = ftol
    header[SPEC_XTOL] = xtol
    header[SPEC_MIN_VALID] = min_valid
    header[SPEC_SCALE_ERRORS] = float(bool(scale_errors))
    header[SPEC_RESCALE] = float(bool(rescale_initial))
    header[SPEC_THRESHOLD_AMPLITUDE : SPEC_THRESHOLD_WIDTH + 1] = thresholds
    return np.concatenate(
        [
            header,
            compiled.segment_min,
            compiled.segment_max,
            compiled.segment_reference,
            compiled.root.astype(np.float64),
            compiled.scale,
            compiled.offset,
            compiled.free_root.astype(np.float64),
            compiled.free_lower,
            compiled.free_upper,
        ]
    ).astype(np.float64)


def packed_layout(n_lines: int, n_full: int, adaptive: bool = False) -> dict[str, slice]:
    """Where each per-pixel result sits in the packed output vector.

    Parameters
    ----------
    n_lines, n_full : int
    adaptive : bool
        Whether the ``level`` entry (adaptive kernel) is present.

    Returns
    -------
    dict
        Name -> slice; ``"size"`` -> total length (an int).
    """
    o = 0
    layout = {}
    for name, n in (
        ("params", n_full),
        ("errors", n_full),
        ("cov_amplitude_centroid", n_lines),
        ("cov_amplitude_width", n_lines),
        ("cov_centroid_width", n_lines),
        ("chi2", 1),
        ("n_iter", 1),
        ("n_valid", 1),
        ("status", 1),
    ):
        layout[name] = slice(o, o + n)
        o += n
    if adaptive:
        layout["level"] = slice(o, o + 1)
        o += 1
    layout["size"] = o
    return layout


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


_FLAGS = {
    "fastmath": _env_flag("SAFFRON_NUMBA_FASTMATH"),
    "cache": _env_flag("SAFFRON_NUMBA_CACHE"),
}
_jit = numba.njit(nogil=True, **_FLAGS)


# ----------------------------------------------------------------------------- linear algebra
@_jit
def _cholesky(a, n):
    """In-place lower Cholesky factor of the leading n x n block; False if not positive."""
    for j in range(n):
        d = a[j, j]
        s = d
        for k in range(j):
            s -= a[j, k] * a[j, k]
        if not (s > _PIVOT_RTOL * d) or not (s > 0.0):
            return False
        r = math.sqrt(s)
        a[j, j] = r
        for i in range(j + 1, n):
            s = a[i, j]
            for k in range(j):
                s -= a[i, k] * a[j, k]
            a[i, j] = s / r
    return True


@_jit
def _cholesky_solve(chol, b, x, n):
    """Solve (L L^T) x = b with the factor from `_cholesky` (x may alias b)."""
    for i in range(n):
        s = b[i]
        for k in range(i):
            s -= chol[i, k] * x[k]
        x[i] = s / chol[i, i]
    for i in range(n - 1, -1, -1):
        s = x[i]
        for k in range(i + 1, n):
            s -= chol[k, i] * x[k]
        x[i] = s / chol[i, i]


# ----------------------------------------------------------------------------- model
@_jit
def _full_params(q, root, scale, offset, pfull):
    for j in range(pfull.shape[0]):
        r = int(root[j])
        pfull[j] = offset[j] + (scale[j] * q[r] if r >= 0 else 0.0)


@_jit
def _dot(a, b, n):
    """Sum of a[i] * b[i] over i < n, with four partial sums (lets LLVM vectorise)."""
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    i = 0
    while i + 4 <= n:
        s0 += a[i] * b[i]
        s1 += a[i + 1] * b[i + 1]
        s2 += a[i + 2] * b[i + 2]
        s3 += a[i + 3] * b[i + 3]
        i += 4
    while i < n:
        s0 += a[i] * b[i]
        i += 1
    return (s0 + s1) + (s2 + s3)


@_jit
def _evaluate(
    q, n, lam, yv, wv, segv, nl, nbg, seg_ref, root, scale, offset, pfull, jmat, fv, jtj, jtr,
    want_jac,
):  # fmt: skip
    """Weighted chi2 at free parameters q; with want_jac also J^T J (lower) and J^T r.

    J (stored column by column in jmat, one row per free parameter) is the Jacobian of the
    weighted model with respect to the free parameters and r = (y - model) / sigma (left in
    fv), so the Gauss-Newton step solves (J^T J) d = J^T r.
    """
    nfree = q.shape[0]
    _full_params(q, root, scale, offset, pfull)
    for i in range(n):
        fv[i] = 0.0
    if want_jac:
        for a in range(nfree):
            for i in range(n):
                jmat[a, i] = 0.0
    for ln in range(nl):
        amp = pfull[3 * ln]
        cen = pfull[3 * ln + 1]
        inv = 1.0 / pfull[3 * ln + 2]
        if want_jac:
            # d/dA = g, d/dc = A g z / w, d/dw = A g z^2 / w, with z = (x - c) / w
            ra = int(root[3 * ln])
            rc = int(root[3 * ln + 1])
            rw = int(root[3 * ln + 2])
            sa = scale[3 * ln] if ra >= 0 else 0.0
            sc = scale[3 * ln + 1] * amp * inv if rc >= 0 else 0.0
            sw = scale[3 * ln + 2] * amp * inv if rw >= 0 else 0.0
            ja = jmat[max(ra, 0)]
            jc = jmat[max(rc, 0)]
            jw = jmat[max(rw, 0)]
            for i in range(n):
                z = (lam[i] - cen) * inv
                g = math.exp(-0.5 * z * z)
                fv[i] += amp * g
                gw = g * wv[i]
                ja[i] += sa * gw
                gz = gw * z
                jc[i] += sc * gz
                jw[i] += sw * gz * z
        else:
            for i in range(n):
                z = (lam[i] - cen) * inv
                fv[i] += amp * math.exp(-0.5 * z * z)
    nlp = 3 * nl
    chi2 = 0.0
    for i in range(n):
        s = int(segv[i])
        t = lam[i] - seg_ref[s]
        base = nlp + s * nbg
        tk = 1.0
        f = fv[i]
        w = wv[i]
        for k in range(nbg):
            f += pfull[base + k] * tk
            if want_jac:
                jmat[int(root[base + k]), i] += tk * w
            tk *= t
        res = (yv[i] - f) * w
        fv[i] = res
        chi2 += res * res
    if want_jac:
        for a in range(nfree):
            ja = jmat[a]
            for b in range(a + 1):
                jtj[a, b] = _dot(ja, jmat[b], n)
            jtr[a] = _dot(ja, fv, n)
    return chi2


# ----------------------------------------------------------------------------- one pixel
@_jit
def _work_size(spec, nw):
    """Length of the per-pixel float64 scratch array (layout: see `_fit_samples`)."""
    nl = int(spec[SPEC_N_LINES])
    nfree = int(spec[SPEC_N_FREE])
    nfull = 3 * nl + int(spec[SPEC_N_SEGMENTS]) * (int(spec[SPEC_DEGREE]) + 1)
    return (5 + nfree) * nw + 7 * nfree + 4 * nfree * nfree + nfull


@_jit
def _compact(y, err, wave, spec, work):
    """Copy the valid samples into work (float64); return their number.

    Valid: finite data, wavelength and error, error > 0, inside a background segment.
    Layout: wavelength, data, 1/error and segment index, each in a block of len(y).
    This is the only part compiled once per data dtype.
    """
    nseg = int(spec[SPEC_N_SEGMENTS])
    seg_min = spec[SPEC_HEADER : SPEC_HEADER + nseg]
    seg_max = spec[SPEC_HEADER + nseg : SPEC_HEADER + 2 * nseg]
    nw = y.shape[0]
    n = 0
    for i in range(nw):
        x = wave[i]
        yi = y[i]
        ei = err[i]
        if not (math.isfinite(x) and math.isfinite(yi) and math.isfinite(ei) and ei > 0.0):
            continue
        s = -1
        for k in range(nseg):
            if seg_min[k] <= x <= seg_max[k]:
                s = k
                break
        if s < 0:
            continue
        work[n] = x
        work[nw + n] = yi
        work[2 * nw + n] = 1.0 / ei
        work[3 * nw + n] = s
        n += 1
    return n


@_jit
def _fit_samples(work, nw, n, p0, spec, out):
    """Levenberg-Marquardt fit of the n valid samples put into work by `_compact`.

    Writes the packed results into out; never raises for bad data.
    """
    nl = int(spec[SPEC_N_LINES])
    nbg = int(spec[SPEC_DEGREE]) + 1
    nseg = int(spec[SPEC_N_SEGMENTS])
    nfree = int(spec[SPEC_N_FREE])
    max_iter = int(spec[SPEC_MAX_ITER])
    ftol = spec[SPEC_FTOL]
    xtol = spec[SPEC_XTOL]
    min_valid = int(spec[SPEC_MIN_VALID])
    scale_errors = spec[SPEC_SCALE_ERRORS] != 0.0
    rescale = spec[SPEC_RESCALE] != 0.0
    nfull = 3 * nl + nseg * nbg
    o = SPEC_HEADER + 2 * nseg
    seg_ref = spec[o : o + nseg]
    o += nseg
    root = spec[o : o + nfull]
    scale = spec[o + nfull : o + 2 * nfull]
    offset = spec[o + 2 * nfull : o + 3 * nfull]
    o += 3 * nfull
    free_root = spec[o : o + nfree]
    lower = spec[o + nfree : o + 2 * nfree]
    upper = spec[o + 2 * nfree : o + 3 * nfree]

    # packed output offsets (see packed_layout)
    o_err = nfull
    o_cov = 2 * nfull
    o_chi2 = 2 * nfull + 3 * nl
    for k in range(o_chi2):
        out[k] = np.nan
    out[o_chi2] = np.nan
    out[o_chi2 + 1] = 0.0

    # views into the scratch array (layout: see _work_size)
    nf2 = nfree * nfree
    lam = work[0:nw]
    yv = work[nw : 2 * nw]
    wv = work[2 * nw : 3 * nw]
    segv = work[3 * nw : 4 * nw]
    fv = work[4 * nw : 5 * nw]
    jmat = work[5 * nw : (5 + nfree) * nw].reshape((nfree, nw))
    o = (5 + nfree) * nw
    q = work[o : o + nfree]
    q_try = work[o + nfree : o + 2 * nfree]
    delta = work[o + 2 * nfree : o + 3 * nfree]
    jtr = work[o + 3 * nfree : o + 4 * nfree]
    jtr_try = work[o + 4 * nfree : o + 5 * nfree]
    rhs = work[o + 5 * nfree : o + 6 * nfree]
    frozen = work[o + 6 * nfree : o + 7 * nfree]
    o += 7 * nfree
    jtj = work[o : o + nf2].reshape((nfree, nfree))
    jtj_try = work[o + nf2 : o + 2 * nf2].reshape((nfree, nfree))
    amat = work[o + 2 * nf2 : o + 3 * nf2].reshape((nfree, nfree))
    cov = work[o + 3 * nf2 : o + 4 * nf2].reshape((nfree, nfree))
    pfull = work[o + 4 * nf2 : o + 4 * nf2 + nfull]

    out[o_chi2 + 2] = n
    if n == 0:
        out[o_chi2 + 3] = _ST_ALL_NAN
        return
    if n < min_valid or n <= nfree:
        out[o_chi2 + 3] = _ST_TOO_FEW
        return

    # initial free parameters, inside their bounds
    for f in range(nfree):
        v = p0[int(free_root[f])]
        if not math.isfinite(v):
            out[o_chi2 + 3] = _ST_BAD_INITIAL
            return
        q[f] = min(max(v, lower[f]), upper[f])
    chi2 = _evaluate(
        q,
        n,
        lam,
        yv,
        wv,
        segv,
        nl,
        nbg,
        seg_ref,
        root,
        scale,
        offset,
        pfull,
        jmat,
        fv,
        jtj,
        jtr,
        True,
    )
    if not math.isfinite(chi2):
        out[o_chi2 + 3] = _ST_BAD_INITIAL
        return

    if rescale:
        # The model is linear in amplitudes and background coefficients: one Gauss-Newton
        # step restricted to them solves for their best values at the initial centroids
        # and widths, i.e. rescales the window-level guess to this pixel's spectrum.
        s2 = chi2 / n
        nlin = 0
        for f in range(nfree):
            kind = int(free_root[f])
            kind = kind % 3 if kind < 3 * nl else 3
            frozen[f] = 0.0 if (kind == 0 or kind == 3) else 1.0
        for a in range(nfree):
            for b in range(a + 1):
                amat[a, b] = jtj[a, b] if (frozen[a] == 0.0 and frozen[b] == 0.0) else 0.0
            if frozen[a] != 0.0:
                amat[a, a] = 1.0
                rhs[a] = 0.0
            else:
                amat[a, a] = jtj[a, a] * (1.0 + 1e-10) + 1e-300
                rhs[a] = jtr[a]
                nlin += 1
        if nlin > 0 and _cholesky(amat, nfree):
            _cholesky_solve(amat, rhs, delta, nfree)
            for f in range(nfree):
                if frozen[f] != 0.0:
                    q_try[f] = q[f]
                    continue
                v = q[f] + delta[f]
                kind = int(free_root[f])
                if kind < 3 * nl and lower[f] > -math.inf and v <= lower[f]:
                    # an amplitude driven onto its lower bound: start one (rough) sigma
                    # above it so centroid and width keep a gradient
                    v = lower[f] + math.sqrt(s2 / max(jtj[f, f], 1e-300))
                q_try[f] = min(max(v, lower[f]), upper[f])
            chi2_try = _evaluate(
                q_try, n, lam, yv, wv, segv, nl, nbg, seg_ref, root, scale, offset, pfull, jmat,
                fv, jtj_try, jtr_try, True,
            )  # fmt: skip
            if math.isfinite(chi2_try) and chi2_try < chi2:
                chi2 = chi2_try
                for a in range(nfree):
                    q[a] = q_try[a]
                    jtr[a] = jtr_try[a]
                    for b in range(a + 1):
                        jtj[a, b] = jtj_try[a, b]

    # Levenberg-Marquardt with bounds: an active set freezes parameters on a bound whose
    # descent direction points outward; trial points are clipped into the box.
    dof = n - nfree
    lmb = _LAMBDA_START
    nu = 2.0
    status = _ST_MAX_ITER
    n_iter = 0
    for it in range(max_iter):
        n_iter = it + 1
        maxdiag = 0.0
        for a in range(nfree):
            if jtj[a, a] > maxdiag:
                maxdiag = jtj[a, a]
        floor = _DIAG_FLOOR * maxdiag + 1e-300
        for f in range(nfree):
            frz = (q[f] <= lower[f] and jtr[f] <= 0.0) or (q[f] >= upper[f] and jtr[f] >= 0.0)
            frozen[f] = 1.0 if frz else 0.0
        accepted = False
        converged_now = False
        first_try = True
        dchi = 0.0
        lam_used = lmb
        while lmb <= _LAMBDA_MAX:
            for a in range(nfree):
                if frozen[a] != 0.0:
                    for b in range(a + 1):
                        amat[a, b] = 0.0
                    amat[a, a] = 1.0
                    rhs[a] = 0.0
                    continue
                for b in range(a):
                    amat[a, b] = 0.0 if frozen[b] != 0.0 else jtj[a, b]
                amat[a, a] = jtj[a, a] + lmb * max(jtj[a, a], floor)
                rhs[a] = jtr[a]
            if _cholesky(amat, nfree):
                _cholesky_solve(amat, rhs, delta, nfree)
                clipped = False
                for f in range(nfree):
                    v = q[f] + delta[f]
                    q_try[f] = min(max(v, lower[f]), upper[f])
                    if q_try[f] != v:
                        clipped = True
                if lmb <= 1.0 and first_try and not clipped:
                    # Converged already if the proposed (nearly Gauss-Newton) step is
                    # negligible: this saves evaluating a last, useless trial point.
                    s2 = max(chi2 / dof, 1e-300)
                    pred = 0.0
                    small_step = True
                    for a in range(nfree):
                        da = q_try[a] - q[a]
                        pred += da * (2.0 * jtr[a] - jtj[a, a] * da)
                        for b in range(a):
                            pred -= 2.0 * jtj[a, b] * da * (q_try[b] - q[b])
                        if da * da * jtj[a, a] > xtol * xtol * s2:
                            small_step = False
                    if pred <= ftol * s2 or small_step:
                        converged_now = True
                        break
                first_try = False
                chi2_try = _evaluate(
                    q_try, n, lam, yv, wv, segv, nl, nbg, seg_ref, root, scale, offset, pfull,
                    jmat, fv, jtj_try, jtr_try, True,
                )  # fmt: skip
                if math.isfinite(chi2_try) and chi2_try <= chi2:
                    accepted = True
                    lam_used = lmb
                    dchi = chi2 - chi2_try
                    # gain ratio: actual over Gauss-Newton-predicted decrease (Nielsen 1999)
                    pred = 0.0
                    for a in range(nfree):
                        da = q_try[a] - q[a]
                        pred += da * (2.0 * jtr[a] - jtj[a, a] * da)
                        for b in range(a):
                            pred -= 2.0 * jtj[a, b] * da * (q_try[b] - q[b])
                    rho = dchi / pred if pred > 0.0 else 0.0
                    t = 2.0 * rho - 1.0
                    lmb = max(lmb * max(1.0 / 3.0, 1.0 - t * t * t), _LAMBDA_MIN)
                    nu = 2.0
                    break
            lmb *= nu
            nu *= 2.0
        if converged_now or not accepted:
            # the next step is negligible, or no step lowers chi2 any more: we are at the
            # (bounded) minimum; q, chi2, jtj and jtr all belong to the same point
            status = _ST_CONVERGED
            break
        s2 = max(chi2_try / dof, 1e-300)
        small_step = True
        for f in range(nfree):
            d = q_try[f] - q[f]
            if d * d * jtj_try[f, f] > xtol * xtol * s2:
                small_step = False
        chi2 = chi2_try
        for a in range(nfree):
            q[a] = q_try[a]
            jtr[a] = jtr_try[a]
            for b in range(a + 1):
                jtj[a, b] = jtj_try[a, b]
        if lam_used <= 1.0 and (dchi <= ftol * s2 or small_step):
            status = _ST_CONVERGED
            break

    out[o_chi2] = chi2 / dof
    out[o_chi2 + 1] = n_iter
    # covariance of the free parameters: (J^T J)^-1 at the solution
    for a in range(nfree):
        for b in range(a + 1):
            amat[a, b] = jtj[a, b]
    if not _cholesky(amat, nfree):
        out[o_chi2 + 3] = _ST_SINGULAR
        return
    for f in range(nfree):
        for a in range(nfree):
            rhs[a] = 0.0
        rhs[f] = 1.0
        _cholesky_solve(amat, rhs, delta, nfree)
        for a in range(nfree):
            cov[a, f] = delta[a]
    factor = max(chi2 / dof, 0.0) if scale_errors else 1.0
    if status == _ST_CONVERGED:
        for f in range(nfree):
            if q[f] <= lower[f] or q[f] >= upper[f]:
                status = _ST_AT_BOUND
    out[o_chi2 + 3] = status
    _full_params(q, root, scale, offset, pfull)
    for j in range(nfull):
        out[j] = pfull[j]
        r = int(root[j])
        out[o_err + j] = (
            math.sqrt(max(scale[j] * scale[j] * cov[r, r] * factor, 0.0)) if r >= 0 else 0.0
        )
    for ln in range(nl):
        ra = int(root[3 * ln])
        rc = int(root[3 * ln + 1])
        rw = int(root[3 * ln + 2])
        sa = scale[3 * ln]
        sc = scale[3 * ln + 1]
        sw = scale[3 * ln + 2]
        out[o_cov + ln] = sa * sc * cov[ra, rc] * factor if ra >= 0 and rc >= 0 else 0.0
        out[o_cov + nl + ln] = sa * sw * cov[ra, rw] * factor if ra >= 0 and rw >= 0 else 0.0
        out[o_cov + 2 * nl + ln] = sc * sw * cov[rc, rw] * factor if rc >= 0 and rw >= 0 else 0.0


# ----------------------------------------------------------------------------- adaptive
@_jit
def _worst_relative_error(out, nl, nfull, thr_a, thr_c, thr_w):
    """max over lines and kinds of (|err / value| / threshold); inf if not usable."""
    st = int(out[2 * nfull + 3 * nl + 3])
    if not (st == _ST_CONVERGED or st == _ST_AT_BOUND):
        return math.inf
    worst = 0.0
    for ln in range(nl):
        for k in range(3):
            thr = thr_a if k == 0 else (thr_c if k == 1 else thr_w)
            if not (thr < math.inf):
                continue
            v = out[3 * ln + k]
            e = out[nfull + 3 * ln + k]
            if e == 0.0:  # fixed (or tied to a fixed) parameter
                continue
            rel = abs(e / v) if v != 0.0 else math.inf
            if not math.isfinite(rel):
                return math.inf
            rel /= thr
            if rel > worst:
                worst = rel
    return worst


# ----------------------------------------------------------------------------- gufuncs
# The kernels are compiled by numba.guvectorize, once per signature; each links the
# float64-only `_fit_samples`, and only `_compact` depends on the data dtype.
_SIG_TYPES = ("float32", "float64")


def _fit_kernel(y, err, wave, p0, spec, template, out):
    nw = y.shape[0]
    work = np.empty(_work_size(spec, nw))  # one scratch allocation per pixel
    n = _compact(y, err, wave, spec, work)
    _fit_samples(work, nw, n, p0, spec, out)


def _adaptive_kernel(y, err, wave, p0, spec, template, out):
    """Fit levels from the first (least binned); keep the first meeting the thresholds."""
    nl = int(spec[SPEC_N_LINES])
    nfull = 3 * nl + int(spec[SPEC_N_SEGMENTS]) * (int(spec[SPEC_DEGREE]) + 1)
    thr_a = spec[SPEC_THRESHOLD_AMPLITUDE]
    thr_c = spec[SPEC_THRESHOLD_CENTROID]
    thr_w = spec[SPEC_THRESHOLD_WIDTH]
    nq = out.shape[0] - 1  # the last entry is the level index
    n_levels = y.shape[0]
    nw = y.shape[1]
    work = np.empty(_work_size(spec, nw) + nq)
    cur = work[work.shape[0] - nq :]
    best_score = math.inf
    best_level = 0
    for lv in range(n_levels):
        n = _compact(y[lv], err[lv], wave, spec, work)
        _fit_samples(work, nw, n, p0, spec, cur)
        score = _worst_relative_error(cur, nl, nfull, thr_a, thr_c, thr_w)
        if lv == 0 or score < best_score:
            best_score = score
            best_level = lv
            for k in range(nq):
                out[k] = cur[k]
        if score <= 1.0:
            out[nq] = lv
            return
    # No level met the thresholds. Keep the level with the smallest worst relative error
    # (relative to its threshold), flagged THRESHOLD_NOT_MET; if no level gave a usable fit,
    # keep the last (most binned) level with its own failure status.
    if best_score == math.inf:
        for k in range(nq):
            out[k] = cur[k]
        out[nq] = n_levels - 1
        return
    out[nq] = best_level
    out[nq - 1] = _ST_THRESHOLD


def _check_dtype(dtype: str) -> str:
    if dtype not in _SIG_TYPES:
        raise ValueError(f"saffron_xr kernels take float32 or float64 data, not {dtype!r}")
    return dtype


@functools.cache
def fit_gufunc(dtype: str = "float64"):
    """The per-pixel fitting gufunc for float32 or float64 data (built on first call).

    Signature ``(w),(w),(w),(p),(k),(q)->(q)``: data, 1-sigma error (both of `dtype`),
    wavelength (float64, Angstrom), initial full parameters (float64), spec (`pack_spec`),
    a template whose only use is to give the length of the packed output (numba needs
    every output core dimension to appear in an input), and the packed output (float64,
    `packed_layout`). Arithmetic is float64 throughout. One signature per call, so that a
    worker compiles only the dtype it meets.
    """
    t = _check_dtype(dtype)
    sig = f"void({t}[:], {t}[:], f8[:], f8[:], f8[:], f8[:], f8[:])"
    layout = "(w),(w),(w),(p),(k),(q)->(q)"
    return numba.guvectorize([sig], layout, nopython=True, **_FLAGS)(_fit_kernel)


@functools.cache
def adaptive_gufunc(dtype: str = "float64"):
    """The adaptive-binning gufunc (built on first call).

    Signature ``(l,w),(l,w),(w),(p),(k),(q)->(q)``: as `fit_gufunc` with data and error
    stacked over binning levels (least binned first); the packed output has one more entry,
    the index of the chosen level.
    """
    t = _check_dtype(dtype)
    sig = f"void({t}[:, :], {t}[:, :], f8[:], f8[:], f8[:], f8[:], f8[:])"
    layout = "(l,w),(l,w),(w),(p),(k),(q)->(q)"
    return numba.guvectorize([sig], layout, nopython=True, **_FLAGS)(_adaptive_kernel)
