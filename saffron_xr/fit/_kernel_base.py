"""Building blocks of the fit kernels: compile flags, constants, linear algebra, the model,
its Jacobian and the first stages of a pixel fit (compaction, moments, linear start).

numba code only (no xarray); `_kernels` composes these into the per-pixel fit and the gufuncs.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from .._numba_flags import CACHE, env_flag
from ._kernel_layout import (  # noqa: F401
    SPEC_DEGREE,
    SPEC_HEADER,
    SPEC_N_FREE,
    SPEC_N_LINES,
    SPEC_N_SEGMENTS,
)
from .status import FitStatus

_ST_CONVERGED = int(FitStatus.CONVERGED)
_ST_AT_BOUND = int(FitStatus.CONVERGED_AT_BOUND)
_ST_MAX_ITER = int(FitStatus.MAX_ITER)
_ST_SINGULAR = int(FitStatus.SINGULAR)
_ST_TOO_FEW = int(FitStatus.TOO_FEW_VALID)
_ST_ALL_NAN = int(FitStatus.ALL_NAN)
_ST_BAD_INITIAL = int(FitStatus.BAD_INITIAL)
_ST_THRESHOLD = int(FitStatus.THRESHOLD_NOT_MET)
_ST_NO_STEP = int(FitStatus.NO_STEP)

# Damping of the normal matrix: A = JtJ + lam * max(diag(JtJ), _DIAG_FLOOR * max diag).
_LAMBDA_START = 1e-3
_LAMBDA_MAX = 1e16
_LAMBDA_MIN = 1e-15
_DIAG_FLOOR = 1e-12
# Cholesky pivot below _PIVOT_RTOL * (its diagonal entry) counts as singular.
_PIVOT_RTOL = 1e-13
# A line is evaluated where |wavelength - centroid| < _REACH * width (exp(-_REACH**2/2)
# = 1e-14 of the peak beyond).
_REACH = 8.0
# Moments: the window is +-_MOMENT_REACH initial widths around the initial centroid; a line
# gets moment starting values only if no other line's centroid is closer than
# _MOMENT_ISOLATION * (sum of the two initial widths) and its excess in the window exceeds
# _MOMENT_SNR times the noise of that sum.
_MOMENT_REACH = 2.5
_MOMENT_ISOLATION = 1.5
_MOMENT_SNR = 5.0
# Variance of a Gaussian truncated at +-2.5 sigma, over the untruncated variance.
_MOMENT_TRUNCATION = 0.9113


# fastmath without "nnan"/"ninf": NaN samples and infinite bounds keep their meaning.
_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
_FLAGS = {
    "fastmath": _FASTMATH if env_flag("SAFFRON_NUMBA_FASTMATH", False) else False,
    "cache": CACHE,
}
_jit = numba.njit(nogil=True, **_FLAGS)


# ----------------------------------------------------------------------------- linear algebra
@_jit
def _cholesky(a, n, keep):
    """In-place lower Cholesky factor of the kept rows/columns of the leading n x n block.

    Rows and columns with ``keep[j] == 0`` must hold the identity (the caller sets them).
    Returns -1 on success, else the index of the first pivot that is not positive.
    """
    for j in range(n):
        if keep[j] == 0.0:
            continue
        d = a[j, j]
        s = d
        for k in range(j):
            s -= a[j, k] * a[j, k]
        if not (s > _PIVOT_RTOL * d) or not (s > 0.0):
            return j
        r = math.sqrt(s)
        a[j, j] = r
        # column j below the diagonal, four rows at a time once the sums are long enough:
        # four independent sums that share the loads of row j (each in the order of a
        # single one: same results)
        i = j + 1
        while j >= 4 and i + 4 <= n:
            s0 = a[i, j]
            s1 = a[i + 1, j]
            s2 = a[i + 2, j]
            s3 = a[i + 3, j]
            for k in range(j):
                v = a[j, k]
                s0 -= a[i, k] * v
                s1 -= a[i + 1, k] * v
                s2 -= a[i + 2, k] * v
                s3 -= a[i + 3, k] * v
            a[i, j] = s0 / r
            a[i + 1, j] = s1 / r
            a[i + 2, j] = s2 / r
            a[i + 3, j] = s3 / r
            i += 4
        while i < n:
            s = a[i, j]
            for k in range(j):
                s -= a[i, k] * a[j, k]
            a[i, j] = s / r
            i += 1
    return -1


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


@_jit
def _cholesky_inverse(chol, linv, out, n):
    """out = (L L^T)^-1 from the factor L of `_cholesky`, through M = L^-1: out = M^T M.

    n divisions in all (a solve per column would take 2 n**2, and divisions are slow).
    """
    for j in range(n):
        linv[j, j] = 1.0 / chol[j, j]
    for j in range(n):
        for i in range(j + 1, n):
            s = 0.0
            for k in range(j, i):
                s -= chol[i, k] * linv[k, j]
            linv[i, j] = s * linv[i, i]
    for a in range(n):
        for b in range(a + 1):
            s = 0.0
            for k in range(a, n):
                s += linv[k, a] * linv[k, b]
            out[a, b] = s
            out[b, a] = s


@_jit
def _factor_kept(jtj, amat, keep, n):
    """Factor JtJ restricted to the kept parameters; drop any that make it singular.

    Returns the number of parameters dropped for singularity (their keep flag is cleared).
    """
    dropped = 0
    for _attempt in range(n + 1):
        for a in range(n):
            for b in range(a + 1):
                if keep[a] != 0.0 and keep[b] != 0.0:
                    amat[a, b] = jtj[a, b]
                else:
                    amat[a, b] = 0.0
            if keep[a] == 0.0:
                amat[a, a] = 1.0
        bad = _cholesky(amat, n, keep)
        if bad < 0:
            return dropped
        keep[bad] = 0.0
        dropped += 1
    return dropped


# ----------------------------------------------------------------------------- model
@_jit
def _full_params(q, root, scale, offset, pfull):
    for j in range(pfull.shape[0]):
        r = int(root[j])
        pfull[j] = offset[j] + (scale[j] * q[r] if r >= 0 else 0.0)


@_jit
def _line_range(lam, n, ascending, centre, width, reach):
    """Index range [i0, i1) of the samples with |lam - centre| <= reach * |width|."""
    if not ascending:
        return 0, n
    half = reach * abs(width)
    lo = centre - half
    hi = centre + half
    a = 0
    b = n
    while a < b:
        m = (a + b) >> 1
        if lam[m] < lo:
            a = m + 1
        else:
            b = m
    i0 = a
    b = n
    while a < b:
        m = (a + b) >> 1
        if lam[m] <= hi:
            a = m + 1
        else:
            b = m
    return i0, a


@_jit
def _gaussian(lam, i0, i1, centre, inv_width, gv):
    """gv[i] = exp(-z**2 / 2), z = (lam[i] - centre) * inv_width, for i0 <= i < i1.

    On a uniform grid the exponential follows the exact recurrence
    g[i+1] = g[i] R[i], R[i+1] = R[i] Q, with R[i] = exp(-z[i] d - d**2 / 2) and
    Q = exp(-d**2), d = step * inv_width: three exponentials per line instead of one per
    sample (relative error ~1e-15 per step). Where the spacing changes (missing samples)
    the recurrence restarts from a direct evaluation.
    """
    if i1 <= i0:
        return
    z = (lam[i0] - centre) * inv_width
    gv[i0] = math.exp(-0.5 * z * z)
    if i1 - i0 < 4:
        for i in range(i0 + 1, i1):
            z = (lam[i] - centre) * inv_width
            gv[i] = math.exp(-0.5 * z * z)
        return
    step = lam[i0 + 1] - lam[i0]
    d = step * inv_width
    q = math.exp(-d * d)
    r = math.exp(-z * d - 0.5 * d * d)
    tol = 1e-9 * abs(step)
    g = gv[i0]  # carried in a register, not reloaded from gv
    prev = lam[i0]
    for i in range(i0 + 1, i1):
        x = lam[i]
        if abs(x - prev - step) <= tol:
            g = g * r
            r *= q
        else:  # restart after a gap
            z = (x - centre) * inv_width
            g = math.exp(-0.5 * z * z)
            if i + 1 < i1:
                step = lam[i + 1] - x
                d = step * inv_width
                q = math.exp(-d * d)
                r = math.exp(-z * d - 0.5 * d * d)
                tol = 1e-9 * abs(step)
        gv[i] = g
        prev = x


# Rows of the per-pixel sample block `smp` (see `_compact`).
_LAM = 0  # wavelength (Angstrom)
_Y = 1  # data
_W = 2  # weight 1 / sigma
_SEG = 3  # background segment index
_PHOTON = 4  # noise term per unit signal
_FLOOR = 5  # noise term independent of the signal
_RES = 6  # weighted residual (y - model) / sigma, at the current point
_SCRATCH = 7  # scratch: per-sample factors (`_reweight_carry`)
_N_ROWS = 8


@_jit
def _line_store(nl, nw):
    """A fresh line store (see `_chi2_g`) in which no Gaussian is computed yet."""
    return np.empty((nl, nw)), np.full((nl, 2), -1.0)


@_jit
def _chi2(q, n, smp, mdl, pfull, ascending):
    """`_chi2_g` with a fresh line store (for callers that do not keep one)."""
    return _chi2_g(q, n, smp, mdl, pfull, ascending, _line_store(mdl[0], smp.shape[1]))


@_jit
def _chi2_g(q, n, smp, mdl, pfull, ascending, lines):
    """Weighted chi2 at free parameters q; leaves the weighted residuals in smp[_RES].

    ``mdl`` is ``(n_lines, n_background_terms, segment_reference, root, scale, offset,
    soft_min, soft_inv)``. The chi2 includes the soft lower bounds' penalty (`_penalty`).
    ``lines`` is the line store ``(gauss, ranges)``: each line's ``exp(-z**2 / 2)`` on its
    sample range ``[ranges[l, 0], ranges[l, 1])`` is left there for `_jacobian_g` at the
    same point (range -1: not computed, the line's amplitude being zero).
    """
    nl, nbg, seg_ref, root, scale, offset, soft_min, soft_inv = mdl
    gmat, grng = lines
    lam = smp[_LAM]
    res = smp[_RES]
    _full_params(q, root, scale, offset, pfull)
    nlp = 3 * nl
    if seg_ref.shape[0] == 1 and nbg <= 2:  # one segment, constant or linear: same sums
        c0 = 0.0 + pfull[nlp]
        if nbg == 1:
            for i in range(n):
                res[i] = c0
        else:
            c1 = pfull[nlp + 1]
            ref = seg_ref[0]
            for i in range(n):
                res[i] = c0 + c1 * (lam[i] - ref)
    else:
        for i in range(n):
            s = int(smp[_SEG, i])
            t = lam[i] - seg_ref[s]
            base = nlp + s * nbg
            f = 0.0
            tk = 1.0
            for k in range(nbg):
                f += pfull[base + k] * tk
                tk *= t
            res[i] = f
    for ln in range(nl):
        amp = pfull[3 * ln]
        if amp == 0.0:
            grng[ln, 0] = -1.0
            continue
        cen = pfull[3 * ln + 1]
        wid = pfull[3 * ln + 2]
        i0, i1 = _line_range(lam, n, ascending, cen, wid, _REACH)
        gv = gmat[ln]
        _gaussian(lam, i0, i1, cen, 1.0 / wid, gv)
        grng[ln, 0] = i0
        grng[ln, 1] = i1
        for i in range(i0, i1):
            res[i] += amp * gv[i]
    yv = smp[_Y]
    wv = smp[_W]
    chi2 = 0.0
    for i in range(n):
        r = (yv[i] - res[i]) * wv[i]
        res[i] = r
        chi2 += r * r
    return chi2 + _penalty(q, soft_min, soft_inv)


@_jit
def _penalty(q, soft_min, soft_inv):
    """Chi-square of the soft lower bounds: sum of ((soft_min - q) * soft_inv)**2 below."""
    total = 0.0
    for f in range(q.shape[0]):
        if soft_inv[f] > 0.0 and q[f] < soft_min[f]:
            d = (soft_min[f] - q[f]) * soft_inv[f]
            total += d * d
    return total


@_jit
def _jacobian(q, n, smp, mdl, pfull, jac, ascending):
    """`_jacobian_g` with a fresh line store (every Gaussian recomputed)."""
    _jacobian_g(q, n, smp, mdl, pfull, jac, ascending, _line_store(mdl[0], smp.shape[1]),
                False)  # fmt: skip


@_jit
def _jacobian_g(q, n, smp, mdl, pfull, jac, ascending, lines, linear_only):
    """J^T J and J^T r at q, r being the residuals left by `_chi2_g` at q.

    ``jac`` is ``(jmat, clo, chi, jtj, jtr)``: J has one row of jmat per free parameter (the
    derivative of the weighted model) and exactly n columns. A row is non-zero only on
    [clo, chi) (its lines' reach; everything for background terms): only that range is
    filled (`_linear_update` reads the ranges too). The Gaussians come from the line store left by
    `_chi2_g` at the same q (lines of zero amplitude are computed here). With
    ``linear_only``, only the rows of amplitudes and background are built (the others are
    zero): enough for `_linear_solve`.
    """
    nl, nbg, seg_ref, root, scale, offset, soft_min, soft_inv = mdl
    gmat, grng = lines
    jmat, clo, chi, jtj, jtr = jac
    lam = smp[_LAM]
    wv = smp[_W]
    nfree = q.shape[0]
    _full_params(q, root, scale, offset, pfull)
    for f in range(nfree):
        clo[f] = n
        chi[f] = 0
    nlp = 3 * nl
    nk = 1 if linear_only else 3
    for ln in range(nl):
        if grng[ln, 0] < 0.0:
            cen = pfull[3 * ln + 1]
            wid = pfull[3 * ln + 2]
            i0, i1 = _line_range(lam, n, ascending, cen, wid, _REACH)
            _gaussian(lam, i0, i1, cen, 1.0 / wid, gmat[ln])
            grng[ln, 0] = i0
            grng[ln, 1] = i1
        i0 = int(grng[ln, 0])
        i1 = int(grng[ln, 1])
        for k in range(nk):
            r = int(root[3 * ln + k])
            if r >= 0:
                clo[r] = min(clo[r], i0)
                chi[r] = max(chi[r], i1)
    for j in range(nlp, pfull.shape[0]):
        r = int(root[j])
        if r >= 0:
            clo[r] = 0
            chi[r] = n
    # rows are cleared over all samples: J^T J is a dense product (`_normal_equations`)
    for f in range(nfree):
        row = jmat[f]
        for i in range(jmat.shape[1]):
            row[i] = 0.0
    for ln in range(nl):
        amp = pfull[3 * ln]
        cen = pfull[3 * ln + 1]
        inv = 1.0 / pfull[3 * ln + 2]
        i0 = int(grng[ln, 0])
        i1 = int(grng[ln, 1])
        gv = gmat[ln]
        # d/dA = g, d/dc = A g z / w, d/dw = A g z^2 / w, with z = (x - c) / w
        ra = int(root[3 * ln])
        rc = -1 if linear_only else int(root[3 * ln + 1])
        rw = -1 if linear_only else int(root[3 * ln + 2])
        if ra >= 0:
            sa = scale[3 * ln]
            ja = jmat[ra]
            for i in range(i0, i1):
                ja[i] += sa * gv[i] * wv[i]
        if rc >= 0 and rw >= 0:
            sc = scale[3 * ln + 1] * amp * inv
            sw = scale[3 * ln + 2] * amp * inv
            jc = jmat[rc]
            jw = jmat[rw]
            for i in range(i0, i1):
                z = (lam[i] - cen) * inv
                gz = gv[i] * wv[i] * z
                jc[i] += sc * gz
                jw[i] += sw * gz * z
        elif rc >= 0:
            sc = scale[3 * ln + 1] * amp * inv
            jc = jmat[rc]
            for i in range(i0, i1):
                jc[i] += sc * gv[i] * wv[i] * (lam[i] - cen) * inv
        elif rw >= 0:
            sw = scale[3 * ln + 2] * amp * inv
            jw = jmat[rw]
            for i in range(i0, i1):
                z = (lam[i] - cen) * inv
                jw[i] += sw * gv[i] * wv[i] * z * z
    if seg_ref.shape[0] == 1 and nbg <= 2:  # one segment, constant or linear: same sums
        ref = seg_ref[0]
        r = int(root[nlp])
        if r >= 0:
            s0 = scale[nlp]
            jr = jmat[r]
            for i in range(n):
                jr[i] += s0 * wv[i]
        r = int(root[nlp + 1]) if nbg == 2 else -1
        if r >= 0:
            s1 = scale[nlp + 1]
            jr = jmat[r]
            for i in range(n):
                jr[i] += s1 * (wv[i] * (lam[i] - ref))
    else:
        for i in range(n):
            s = int(smp[_SEG, i])
            t = lam[i] - seg_ref[s]
            base = nlp + s * nbg
            tk = wv[i]
            for k in range(nbg):
                r = int(root[base + k])
                if r >= 0:
                    jmat[r, i] += scale[base + k] * tk
                tk *= t
    _normal_equations(jmat, clo, chi, smp[_RES], jtj, jtr)
    _penalty_terms(q, soft_min, soft_inv, jtj, jtr)


@_jit
def _penalty_terms(q, soft_min, soft_inv, jtj, jtr):
    """The soft lower bounds' share of J^T J and J^T r: one pseudo-residual
    (soft_min - q) * inv, with derivative inv, per parameter below its soft minimum."""
    for a in range(q.shape[0]):
        if soft_inv[a] > 0.0 and q[a] < soft_min[a]:
            inv2 = soft_inv[a] * soft_inv[a]
            jtj[a, a] += inv2
            jtr[a] += inv2 * (soft_min[a] - q[a])


@_jit
def _hess_add(hmat, a, b, v):
    """hmat[a, b] += v on the lower triangle (a pair on the diagonal counts twice)."""
    if a < 0 or b < 0:
        return
    if a == b:
        hmat[a, a] += 2.0 * v
    elif a > b:
        hmat[a, b] += v
    else:
        hmat[b, a] += v


@_jit
def _second_order(n, smp, mdl, pfull, lines, hmat):
    """hmat -= sum_i r_i d2(w m_i): the Hessian of chi2 / 2 from the Gauss-Newton J^T J.

    r are the weighted residuals left in smp[_RES], the Gaussians those of the line store,
    both at the point of pfull. Only the parameters of one line have a second
    cross-derivative (the model is a sum over lines, linear in the amplitudes and the
    background); ties map them onto the free parameters with their scale factors.
    """
    nl, nbg, seg_ref, root, scale, offset, soft_min, soft_inv = mdl
    gmat, grng = lines
    lam = smp[_LAM]
    wv = smp[_W]
    res = smp[_RES]
    for ln in range(nl):
        if grng[ln, 0] < 0.0:
            continue
        ra = int(root[3 * ln])
        rc = int(root[3 * ln + 1])
        rw = int(root[3 * ln + 2])
        if rc < 0 and rw < 0:
            continue
        amp = pfull[3 * ln]
        cen = pfull[3 * ln + 1]
        inv = 1.0 / pfull[3 * ln + 2]
        gv = gmat[ln]
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        s4 = 0.0
        s5 = 0.0
        for i in range(int(grng[ln, 0]), int(grng[ln, 1])):
            z = (lam[i] - cen) * inv
            u = res[i] * wv[i] * gv[i]
            z2 = z * z
            s1 += u * z
            s2 += u * z2
            s3 += u * (z2 - 1.0)
            s4 += u * z * (z2 - 2.0)
            s5 += u * z2 * (z2 - 3.0)
        sa = scale[3 * ln]
        sc = scale[3 * ln + 1]
        sw = scale[3 * ln + 2]
        a2 = amp * inv * inv
        # d2m/dA dc = g z / w, d2m/dA dw = g z^2 / w, d2m/dc2 = A g (z^2 - 1) / w^2,
        # d2m/dc dw = A g z (z^2 - 2) / w^2, d2m/dw2 = A g z^2 (z^2 - 3) / w^2
        _hess_add(hmat, ra, rc, -sa * sc * s1 * inv)
        _hess_add(hmat, ra, rw, -sa * sw * s2 * inv)
        _hess_add(hmat, rc, rc, -0.5 * sc * sc * s3 * a2)
        _hess_add(hmat, rc, rw, -sc * sw * s4 * a2)
        _hess_add(hmat, rw, rw, -0.5 * sw * sw * s5 * a2)


# OpenBLAS runs a gemm on several threads from m * n * k >= 262144 and a gemv from
# m * n >= 9216 (measured: CPU time 1.9x wall on 2 cores above them, 1.0x below): inside
# dask's threads that would oversubscribe the cores, so larger problems use the loop.
_BLAS_GEMM_MAX = 262144
_BLAS_GEMV_MAX = 9216


@_jit
def _normal_equations(jmat, clo, chi, res, jtj, jtr):
    """jtj = J J^T (both triangles), jtr = J r: J is jmat, one row per free parameter and
    one column per valid sample (exactly n columns), r the first n residuals.

    Two BLAS calls (gemm, gemv through scipy's BLAS): on the 6-line, 20-parameter case
    (64 samples) 1.2 us instead of 3.7 us for the best loop in numba (four independent sums
    per row, which LLVM does not vectorise without reassociating the sums), and faster on
    the 7-parameter cases too even though the loop skipped the pairs of lines far apart.
    The sums are BLAS's (in its order): results move at the 1e-16 relative level. Problems
    large enough for BLAS to start threads of its own go to `_normal_equations_rows`.
    """
    nfree, n = jmat.shape
    if nfree * nfree * n >= _BLAS_GEMM_MAX or nfree * n >= _BLAS_GEMV_MAX:
        _normal_equations_rows(jmat, clo, chi, res, jtj, jtr)
        return
    np.dot(jmat, jmat.T, jtj)
    np.dot(jmat, res[:n], jtr)


@_jit
def _normal_equations_rows(jmat, clo, chi, res, jtj, jtr):
    """`_normal_equations` by loops on one thread: each sum runs over the overlap of its two
    rows' ranges [clo, chi) (rows are zero outside theirs)."""
    nfree = jtr.shape[0]
    for a in range(nfree):
        la = int(clo[a])
        ha = int(chi[a])
        ra = jmat[a]
        sr = 0.0
        for i in range(la, ha):
            sr += ra[i] * res[i]
        jtr[a] = sr
        for b in range(a + 1):
            lo = max(la, int(clo[b]))
            hi = min(ha, int(chi[b]))
            rb = jmat[b]
            acc = 0.0
            for i in range(lo, hi):
                acc += ra[i] * rb[i]
            jtj[a, b] = acc
            jtj[b, a] = acc


@_jit
def _predicted_decrease(q, q_try, jtj, jtr, nfree):
    """Gauss-Newton predicted chi2 decrease for the step q -> q_try."""
    pred = 0.0
    for a in range(nfree):
        da = q_try[a] - q[a]
        pred += da * (2.0 * jtr[a] - jtj[a, a] * da)
        for b in range(a):
            pred -= 2.0 * jtj[a, b] * da * (q_try[b] - q[b])
    return pred


# ----------------------------------------------------------------------------- one pixel
@_jit
def _work_size(spec, nw):
    """Length of the per-pixel float64 scratch array (layout: see `_fit_pixel`)."""
    nl = int(spec[SPEC_N_LINES])
    nfree = int(spec[SPEC_N_FREE])
    nfull = 3 * nl + int(spec[SPEC_N_SEGMENTS]) * (int(spec[SPEC_DEGREE]) + 1)
    return (_N_ROWS + nfree + nl) * nw + 10 * nfree + 4 * nfree * nfree + 2 * nfull + 2 * nl


@_jit
def _compact(y, err, wave, photon, floor, spec, work):
    """Copy the valid samples into the sample block at the start of work; return their number.

    Valid: finite data, wavelength and error, error > 0, inside a background segment. The
    block has `_N_ROWS` rows of len(y) (`_LAM`, `_Y`, ...). This is the only part compiled
    once per data dtype.
    """
    nseg = int(spec[SPEC_N_SEGMENTS])
    seg_min = spec[SPEC_HEADER : SPEC_HEADER + nseg]
    seg_max = spec[SPEC_HEADER + nseg : SPEC_HEADER + 2 * nseg]
    nw = y.shape[0]
    smp = work[: _N_ROWS * nw].reshape((_N_ROWS, nw))
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
        smp[_LAM, n] = x
        smp[_Y, n] = yi
        smp[_W, n] = 1.0 / ei
        smp[_SEG, n] = s
        smp[_PHOTON, n] = photon[i]
        smp[_FLOOR, n] = floor[i]
        n += 1
    return n


@_jit
def _moments(q, n, smp, mdl, pfull, lower, upper, ascending, lines):
    """Per-pixel centroid and width of isolated lines from the moments of their excess.

    The excess is the data minus the rest of the model (background and the other lines) in
    a window of +-_MOMENT_REACH widths; only positive excess counts. A line is changed only
    if its centroid and width are free and its own (not tied), no other line is near, and
    the excess is significant. Needs the residuals, full parameters and line store left by
    `_chi2_g` at q. Returns the number of lines changed.
    """
    nl, nbg, seg_ref, root, scale, offset, soft_min, soft_inv = mdl
    gmat, grng = lines
    lam = smp[_LAM]
    wv = smp[_W]
    res = smp[_RES]
    changed = 0
    for ln in range(nl):
        rc = int(root[3 * ln + 1])
        rw = int(root[3 * ln + 2])
        if rc < 0 or rw < 0 or scale[3 * ln + 1] != 1.0 or scale[3 * ln + 2] != 1.0:
            continue
        own = True
        for j in range(3 * nl):
            if j != 3 * ln + 1 and j != 3 * ln + 2:
                r = int(root[j])
                if r == rc or r == rw:
                    own = False
        if not own:
            continue
        amp = pfull[3 * ln]
        cen = pfull[3 * ln + 1]
        wid = abs(pfull[3 * ln + 2])
        if not _isolated(pfull, nl, ln):
            continue
        i0, i1 = _line_range(lam, n, ascending, cen, wid, _MOMENT_REACH)
        if i1 - i0 < 4:
            continue
        s0 = 0.0
        s1 = 0.0
        var = 0.0
        # the line's own model amp * g: g from the line store (the window lies inside the
        # line's range there); a line of zero amplitude has none (and adds nothing)
        gv = gmat[ln]
        for i in range(i0, i1):
            e = res[i] / wv[i]  # data minus the rest
            if amp != 0.0:
                e += amp * gv[i]
            var += 1.0 / (wv[i] * wv[i])
            if e > 0.0:
                s0 += e
                s1 += e * lam[i]
        if not (s0 > _MOMENT_SNR * math.sqrt(var)):
            continue
        c_new = s1 / s0
        s2 = 0.0
        for i in range(i0, i1):
            e = res[i] / wv[i]
            if amp != 0.0:
                e += amp * gv[i]
            if e > 0.0:
                d = lam[i] - c_new
                s2 += e * d * d
        w_new = math.sqrt(max(s2 / s0, 0.0) / _MOMENT_TRUNCATION)
        if not (math.isfinite(c_new) and math.isfinite(w_new) and w_new > 0.0):
            continue
        q[rc] = min(max(c_new, lower[rc]), upper[rc])
        q[rw] = min(max(w_new, lower[rw]), upper[rw])
        changed += 1
    return changed


@_jit
def _linear_solve(q, jac, tmp, free_kind, lower, upper):
    """q with amplitudes and background at their linear least-squares values (in place).

    One Gauss-Newton step restricted to the linear parameters (the model is linear in them,
    so the step is exact), from the J^T J, J^T r at q. Amplitudes that come out on their
    lower bound start one rough sigma above it so that centroid and width keep a gradient.
    Returns False (q unchanged, tmp[1] undefined) if there is no linear parameter or the
    system is singular; else the change of each parameter is left in tmp[1]
    (`_linear_update`).

    The system is factored on the linear block alone, packed into the leading rows and
    columns of tmp[4]: the same operations in the same order as on the whole matrix with
    identity rows for the other parameters (whose terms are exact zeros), at a fraction of
    the cost; bitwise the same results for finite J^T J and J^T r without fastmath.
    """
    jmat, clo, chi, jtj, jtr = jac
    q_try, delta, rhs, keep, amat = tmp
    nfree = q.shape[0]
    m = 0
    for a in range(nfree):
        kind = int(free_kind[a])
        keep[a] = 1.0 if (kind == 0 or kind == 3) else 0.0
        if keep[a] == 0.0:
            continue
        k = 0
        for b in range(a):
            if keep[b] != 0.0:
                amat[m, k] = jtj[a, b]
                k += 1
        amat[m, m] = jtj[a, a] * (1.0 + 1e-10) + 1e-300
        rhs[m] = jtr[a]
        delta[m] = 1.0  # `_cholesky`'s keep flags for the packed block
        m += 1
    if m == 0:
        return False
    if _cholesky(amat, m, delta) >= 0:
        return False
    _cholesky_solve(amat, rhs, rhs, m)
    k = m
    for f in range(nfree - 1, -1, -1):  # unpack; rhs[k] belongs to the k-th kept parameter
        if keep[f] == 0.0:
            delta[f] = 0.0
        else:
            k -= 1
            delta[f] = rhs[k]
    for f in range(nfree):
        if keep[f] == 0.0:
            continue
        v = q[f] + delta[f]
        if int(free_kind[f]) == 0 and lower[f] > -math.inf and v <= lower[f]:
            v = lower[f] + 1.0 / math.sqrt(max(jtj[f, f], 1e-300))
        old = q[f]
        q[f] = min(max(v, lower[f]), upper[f])
        delta[f] = q[f] - old
    return True


@_jit
def _linear_update(q, n, smp, mdl, pfull, jac, delta):
    """Residuals, full parameters and chi2 after `_linear_solve` changed the linear
    parameters by delta: the model is linear in them, so ``r -= J delta`` with the rows
    of J that the solve used (no Gaussian recomputed). Returns chi2 at q.
    """
    nl, nbg, seg_ref, root, scale, offset, soft_min, soft_inv = mdl
    jmat, clo, chi, jtj, jtr = jac
    res = smp[_RES]
    for f in range(q.shape[0]):
        d = delta[f]
        if d == 0.0:
            continue
        row = jmat[f]
        for i in range(int(clo[f]), int(chi[f])):
            res[i] -= row[i] * d
    _full_params(q, root, scale, offset, pfull)
    chi2 = 0.0
    for i in range(n):
        chi2 += res[i] * res[i]
    return chi2 + _penalty(q, soft_min, soft_inv)


@_jit
def _rescaled_normal_equations(q, pfull_old, mdl, pfull, jac, delta, free_kind, scale_of):
    """J, J^T J and J^T r after `_linear_update` changed the linear parameters by delta,
    from those before it, without touching the samples: the rows of amplitudes and
    background do not depend on the linear parameters, those of a line's centroid and width
    are proportional to its amplitude (factor s = A_new / A_old), and r_new = r - J^T delta
    (J: one row per free parameter): J_new = S J, J^T r_new = S (J^T r - (J^T J) delta),
    J^T J_new = S (J^T J) S. J itself is kept current because `_reweight_carry` reuses it.

    Returns False (nothing changed) where that does not hold exactly: a centroid or width
    shared by several lines (ties), a line whose old amplitude is zero, or a soft-minimum
    penalty in J^T J (its terms do not scale); the caller then rebuilds J.
    ``scale_of`` is scratch (nfree).
    """
    nl, nbg, seg_ref, root, scale, offset, soft_min, soft_inv = mdl
    jmat, clo, chi, jtj, jtr = jac
    nfree = q.shape[0]
    for f in range(nfree):
        scale_of[f] = 1.0
        if soft_inv[f] > 0.0 and q[f] < soft_min[f]:
            return False
    for f in range(nfree):
        kind = int(free_kind[f])
        if kind != 1 and kind != 2:
            continue
        owner = -1
        for ln in range(nl):
            if int(root[3 * ln + kind]) == f:
                if owner >= 0:
                    return False  # tied across lines
                owner = ln
        if owner < 0:
            continue
        a_old = pfull_old[3 * owner]
        if a_old == 0.0:
            return False
        scale_of[f] = pfull[3 * owner] / a_old
    for a in range(nfree):
        s = jtr[a]
        for b in range(nfree):
            if delta[b] != 0.0:
                s -= jtj[a, b] * delta[b]
        jtr[a] = s * scale_of[a]
    for a in range(nfree):
        for b in range(nfree):
            jtj[a, b] *= scale_of[a] * scale_of[b]
        if scale_of[a] != 1.0:
            row = jmat[a]
            for i in range(int(clo[a]), int(chi[a])):
                row[i] *= scale_of[a]
    return True


@_jit
def _moments_possible(mdl, pfull):
    """Whether `_moments` can change any line (some line with its own free centroid and
    width, no other line near): only then is the linear solve before it worth a
    Jacobian of its own."""
    nl, nbg, seg_ref, root, scale, offset, soft_min, soft_inv = mdl
    for ln in range(nl):
        rc = int(root[3 * ln + 1])
        rw = int(root[3 * ln + 2])
        if rc < 0 or rw < 0 or scale[3 * ln + 1] != 1.0 or scale[3 * ln + 2] != 1.0:
            continue
        if _isolated(pfull, nl, ln):
            return True
    return False


@_jit
def _isolated(pfull, nl, ln):
    """No other line within `_MOMENT_ISOLATION` times the sum of the two widths of line ln."""
    cen = pfull[3 * ln + 1]
    wid = abs(pfull[3 * ln + 2])
    for other in range(nl):
        if other != ln:
            d = abs(pfull[3 * other + 1] - cen)
            if d < _MOMENT_ISOLATION * (wid + abs(pfull[3 * other + 2])):
                return False
    return True


@_jit
def _solve_linear_full(q, n, smp, mdl, pfull, jac, tmp, free_kind, lower, upper, ascending,
                       lines, pfull_old):  # fmt: skip
    """From the full J^T J, J^T r at q (`_jacobian_g`): amplitudes and background at their
    linear least-squares values, and J^T J, J^T r carried to the new q
    (`_rescaled_normal_equations`, or rebuilt). Returns chi2 at q, or NaN if q is
    unchanged (no linear parameter, singular system)."""
    delta = tmp[1]
    if not _linear_solve(q, jac, tmp, free_kind, lower, upper):
        return np.nan
    for j in range(pfull.shape[0]):
        pfull_old[j] = pfull[j]
    chi2 = _linear_update(q, n, smp, mdl, pfull, jac, delta)
    if not _rescaled_normal_equations(q, pfull_old, mdl, pfull, jac, delta, free_kind, tmp[2]):
        _jacobian_g(q, n, smp, mdl, pfull, jac, ascending, lines, False)
    return chi2


@_jit
def _start(q, p0, n, smp, mdl, pfull, jac, tmp, free_root, free_kind, lower, upper,
           rescale, moments, ascending, lines, pfull_old):  # fmt: skip
    """Starting point: initial values clipped into the bounds, then (with `rescale`) the
    moments of isolated lines and the linear solve of amplitudes and background.

    Returns chi2 at the start (NaN if the initial values are not usable); on return the
    residuals, J^T J and J^T r belong to q. The last linear solve is made from the full J
    at the centroids and widths of the start, and J^T J, J^T r are carried through it
    algebraically (`_solve_linear_full`); a linear solve before the moments needs only the
    rows of J of the linear parameters, and the residuals after it follow from those rows
    (`_linear_update`). ``pfull_old`` is scratch (n full parameters).
    """
    nfree = q.shape[0]
    for f in range(nfree):
        v = p0[int(free_root[f])]
        if not math.isfinite(v):
            return np.nan
        q[f] = min(max(v, lower[f]), upper[f])
    chi2 = _chi2_g(q, n, smp, mdl, pfull, ascending, lines)
    if not math.isfinite(chi2):
        return np.nan
    if not rescale:
        _jacobian_g(q, n, smp, mdl, pfull, jac, ascending, lines, False)
        return chi2
    q_try = tmp[0]
    for f in range(nfree):
        q_try[f] = q[f]  # to fall back on
    chi2_start = np.nan
    if moments and _moments_possible(mdl, pfull):
        _jacobian_g(q, n, smp, mdl, pfull, jac, ascending, lines, True)
        if _linear_solve(q, jac, tmp, free_kind, lower, upper):
            chi2_start = _linear_update(q, n, smp, mdl, pfull, jac, tmp[1])
            moved = _moments(q, n, smp, mdl, pfull, lower, upper, ascending, lines) > 0
            if moved:
                chi2_start = _chi2_g(q, n, smp, mdl, pfull, ascending, lines)
            if math.isfinite(chi2_start):
                _jacobian_g(q, n, smp, mdl, pfull, jac, ascending, lines, False)
            if moved and math.isfinite(chi2_start):
                chi2_lin = _solve_linear_full(q, n, smp, mdl, pfull, jac, tmp, free_kind,
                                              lower, upper, ascending, lines, pfull_old)  # fmt: skip
                if not math.isnan(chi2_lin):
                    chi2_start = chi2_lin
    else:
        _jacobian_g(q, n, smp, mdl, pfull, jac, ascending, lines, False)
        chi2_start = _solve_linear_full(q, n, smp, mdl, pfull, jac, tmp, free_kind, lower,
                                        upper, ascending, lines, pfull_old)  # fmt: skip
        if math.isnan(chi2_start):  # q unchanged: J^T J, J^T r are those at q
            return chi2
    if not math.isfinite(chi2_start):  # back to the clipped initial values
        for f in range(nfree):
            q[f] = q_try[f]
        chi2_start = _chi2_g(q, n, smp, mdl, pfull, ascending, lines)
        _jacobian_g(q, n, smp, mdl, pfull, jac, ascending, lines, False)
    return chi2_start
