"""numba kernels: Gaussian-lines model, analytic Jacobian, Levenberg-Marquardt, as gufuncs.

This module and its two parts, ``_kernel_layout.py`` (the spec and packed-output layouts)
and ``_kernel_base.py`` (flags, constants, linear algebra, the model and its Jacobian, the
first stages of a pixel fit), are the only modules of the package that import numba; they
import neither xarray nor the rest of the fitting code (only the status enum). ``fit/core.py``
imports this module lazily, on the first fit.

Layouts (named here, once, and read by both the kernel and ``fit/core.py``):

*spec* (``(k)``, float64) — the compiled model and the options, built by `pack_spec`:
``SPEC_*`` header entries, then the arrays named in `_SPEC_ARRAYS` one after the other
(see ``saffron_xr.fit.model.CompiledModel``), read back in that order by `_fit_pixel`.

*packed output* (``(q)``, float64) — per pixel, the blocks named in `_PACKED_BLOCKS` with the
sizes given there (full parameters, their 1-sigma errors, three per-line covariance terms,
per-line significance, at-bound and detected flags, ``chi2, n_iter, n_valid, status``, the
optional full covariance of the free parameters, and ``level`` for the adaptive kernel);
`packed_offsets` computes the offsets for both Python and the kernels.

How one pixel is fitted (`_fit_pixel`, each stage its own small function):

1. `_compact`: the valid samples (finite data, error and wavelength, error > 0, inside a
   background segment) are copied into a scratch array.
2. `_start`: initial values clipped into the bounds; per-pixel centroids and widths from the
   first and second moments of the line's excess over the rest of the model (isolated lines
   with a significant excess only); amplitudes and background by linear least squares at
   those centroids and widths (the model is linear in them, and the residuals after a
   solve follow from the rows of J, ``r -= J delta``, without a chi-square evaluation).
   A solve before the moments builds only the rows of the linear parameters; the last
   one is made from the full J of the start point, and J^T J, J^T r are carried through
   it algebraically (a line's centroid and width rows scale with its amplitude), so the
   start builds one full J fewer (`_solve_linear_full`; ~3 % on the 2-line cases).
3. `_iterate`: bounded Levenberg-Marquardt (active set on the bounds, Nielsen's damping
   update; a step that would leave the box stops the parameters concerned on their bound
   and is solved again for the others, `_stop_at_bounds`). Trial points cost one
   chi-square evaluation; the Jacobian and the normal matrix are built only at accepted
   points, from the Gaussians that the chi-square of that point left in the per-pixel line
   store (no exponential is computed twice). Each line is evaluated only where
   ``|z| < _REACH``. Once an accepted step has moved every parameter
   by less than `_NEWTON_REACH` sigmas (near the minimum), the step's matrix is the full
   Hessian of chi2 / 2, J^T J minus the residual-weighted second derivatives of the
   model (`_second_order`: per line, from the Gaussians of the line store), so that the
   last iterations converge quadratically where Gauss-Newton crawls at a linear rate
   (noisy or blended lines: residuals not small next to the curvature); where that
   Hessian is not positive definite, the iteration falls back to J^T J. J^T J itself,
   which the damping, the convergence test and the covariance use, is unchanged.
   Measured and not used: variable projection (LM over centroids and widths, amplitudes
   and background solved by bounded linear least squares at every trial point, step from
   the Schur complement of J^T J): fewer iterations on blends, but each costs a linear
   solve more, and it was slower on every benchmark case.
   Soft lower bounds (``LineModel.set_soft_min_width``) add one pseudo-residual per
   parameter below its soft minimum to chi2, J^T J and J^T r (`_penalty`); the reported
   chi2 and the covariance (step 5) leave it out: errors are the data's. A step that
   would take a parameter from above its soft minimum to below it is solved again with
   that penalty in the step's model (`_soft_crossing`), instead of overshooting into it,
   being rejected and raising the damping (on the blended S IV / Mg IX window of a
   composition raster, 18.4 -> 12.9 iterations, and the raster's fits 17 % faster).
4. With a noise model (``photon``, ``floor``), the weights are recomputed from the fitted
   model, ``sigma**2 = photon * max(model, 0) + floor``, and the fit is iterated once more
   from its solution, so the weights no longer follow the noise of the data (these passes
   start near the minimum: full Hessian from their first step). Residuals and the
   columns of J scale with the weights, so chi2, J and J^T J are carried to the new
   weights (`_reweight_carry`) rather than recomputed (no Gaussian evaluated).
5. `_covariance`: ``(J^T J)^-1`` over the identifiable free parameters: parameters on a
   bound, and centroids/widths of lines whose amplitude is zero, are left out (errors NaN,
   ``at_bound`` flag); a remaining exact degeneracy drops the parameter concerned (status
   SINGULAR) instead of losing the pixel.
6. `_significance`: per line, ``amplitude / sigma`` with sigma from the linear block (the
   amplitudes and background at fixed centroids and widths), i.e. the signed square root of
   the chi-square increase when the line is removed and the other linear parameters refit.

The gufuncs are built on first use by `fit_gufunc` / `adaptive_gufunc` (``functools.cache``)
and are cached on disk by numba (``cache=True``), in ``__pycache__`` next to this file when
it is writable, else in numba's per-user cache folder (or ``NUMBA_CACHE_DIR``). The cache
is keyed on this file's modification time and size and on the numba version, so an
upgrade recompiles (and on the CPU, so a folder shared by different machines is safe);
later processes and every dask worker on the same file system load the compiled code
instead of compiling it: a warm process compiles nothing (``tests/test_fit_cache.py``).
numba writes each cache file to a temporary name and renames it, so workers compiling at
the same time do not corrupt it; the gufunc itself is never pickled: workers build it from
this importable module. ``SAFFRON_NUMBA_CACHE=0`` turns the disk cache off;
``SAFFRON_NUMBA_FASTMATH=1`` opts in to fastmath flags that keep NaN/Inf semantics
(measured: at most +5 % and results move, so off by default).

For developers: numba keys a cached gufunc on *this* file only, not on the callees it
compiled in from ``_kernel_base.py`` and ``_kernel_layout.py``. An installed release is
safe (every file is new), but after editing one of those two files in a checkout, delete
the stale entries (``saffron_xr/fit/__pycache__/*.nbi`` and ``*.nbc``) or run with
``SAFFRON_NUMBA_CACHE=0``, else the old kernel is loaded without warning.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np

from ._kernel_base import (  # noqa: F401
    _DIAG_FLOOR,
    _FLAGS,
    _FLOOR,
    _LAM,
    _LAMBDA_MAX,
    _LAMBDA_MIN,
    _LAMBDA_START,
    _N_ROWS,
    _PHOTON,
    _REACH,
    _RES,
    _SCRATCH,
    _ST_ALL_NAN,
    _ST_AT_BOUND,
    _ST_BAD_INITIAL,
    _ST_CONVERGED,
    _ST_MAX_ITER,
    _ST_NO_STEP,
    _ST_SINGULAR,
    _ST_THRESHOLD,
    _ST_TOO_FEW,
    _W,
    _Y,
    _chi2,
    _chi2_g,
    _cholesky,
    _cholesky_inverse,
    _cholesky_solve,
    _compact,
    _factor_kept,
    _full_params,
    _jacobian,
    _jacobian_g,
    _jit,
    _line_store,
    _normal_equations,
    _penalty,
    _penalty_terms,
    _predicted_decrease,
    _second_order,
    _start,
    _work_size,
)
from ._kernel_layout import (  # noqa: F401
    _PACKED_BLOCKS,
    _SPEC_ARRAYS,
    SPEC_DEGREE,
    SPEC_DETECTION,
    SPEC_FTOL,
    SPEC_FULL_COV,
    SPEC_HEADER,
    SPEC_MAX_ITER,
    SPEC_MIN_VALID,
    SPEC_MOMENTS,
    SPEC_N_FREE,
    SPEC_N_LINES,
    SPEC_N_SEGMENTS,
    SPEC_RESCALE,
    SPEC_REWEIGHT,
    SPEC_SCALE_ERRORS,
    SPEC_THRESHOLD_AMPLITUDE,
    SPEC_THRESHOLD_CENTROID,
    SPEC_THRESHOLD_WIDTH,
    SPEC_XTOL,
    pack_spec,
    packed_layout,
    packed_offsets,
)

# The full Hessian replaces J^T J in the step once an accepted step moved every parameter by
# less than _NEWTON_REACH (conditional) sigmas.
_NEWTON_REACH = 3.0

# Tolerances of a pass that a reweighted pass follows (`_fit_pixel`): chi2 decrease below
# 1e-3 of the reduced chi2, or every step below 0.05 sigma.
_LOOSE_FTOL = 1e-3
_LOOSE_XTOL = 0.05


@_jit
def _negligible(decrease, step, jtj, chi2, dof, ftol, xtol):
    """Whether a step (taken or proposed) ends the iteration: chi2 decreases by at most
    ``ftol * s2``, or every parameter moves by at most ``xtol`` of its 1-sigma error
    (``step**2 * (J^T J)_aa <= xtol**2 * s2``), with ``s2 = chi2 / dof``.
    """
    s2 = max(chi2 / dof, 1e-300)
    if decrease <= ftol * s2:
        return True
    for a in range(step.shape[0]):
        if step[a] * step[a] * jtj[a, a] > xtol * xtol * s2:
            return False
    return True


@_jit
def _damped_system(hmat, jtj, jtr, keep, lmb, floor, amat, rhs):
    """The damped system of a step over the kept parameters (lower triangles): amat = hmat +
    lmb * max(diag(J^T J), floor) on the diagonal, rhs = J^T r; the rows and columns of the
    others are those of the identity, with rhs 0 (their step is zero)."""
    nfree = jtr.shape[0]
    for a in range(nfree):
        if keep[a] == 0.0:
            for b in range(a + 1):
                amat[a, b] = 0.0
            amat[a, a] = 1.0
            rhs[a] = 0.0
            continue
        for b in range(a):
            amat[a, b] = 0.0 if keep[b] == 0.0 else hmat[a, b]
        amat[a, a] = hmat[a, a] + lmb * max(jtj[a, a], floor)
        rhs[a] = jtr[a]


@_jit
def _stop_at_bounds(q, delta, free, sfree, fixed, hmat, jtj, jtr, amat, rhs, lower, upper,
                    lmb, floor):  # fmt: skip
    """A step q + delta that leaves the box: the parameters that leave it stop on their
    bound (fixed there) and the damped system is solved again for the others, until the
    step stays inside (each round fixes at least one more). Returns whether any stopped.

    ``free`` is the active set of the step, ``hmat`` (lower triangle) its matrix; amat
    and rhs are overwritten; if a reduced system cannot be factored, delta is left as
    it was (the caller clips it into the box).
    """
    nfree = q.shape[0]
    any_fixed = False
    for f in range(nfree):
        sfree[f] = free[f]
        fixed[f] = 0.0
    for _round in range(nfree):
        out = False
        for f in range(nfree):
            if sfree[f] == 0.0:
                continue
            v = q[f] + delta[f]
            if v < lower[f]:
                sfree[f] = 0.0
                fixed[f] = lower[f] - q[f]
                out = True
            elif v > upper[f]:
                sfree[f] = 0.0
                fixed[f] = upper[f] - q[f]
                out = True
        if not out:
            break
        any_fixed = True
        _damped_system(hmat, jtj, jtr, sfree, lmb, floor, amat, rhs)
        for a in range(nfree):  # the fixed parameters' share moves to the right-hand side
            if sfree[a] == 0.0:
                continue
            r = rhs[a]
            for b in range(nfree):
                if fixed[b] != 0.0:
                    r -= (hmat[a, b] if b <= a else hmat[b, a]) * fixed[b]
            rhs[a] = r
        if _cholesky(amat, nfree, sfree) >= 0:
            break
        _cholesky_solve(amat, rhs, delta, nfree)
        for f in range(nfree):
            if sfree[f] == 0.0:
                delta[f] = fixed[f] if free[f] != 0.0 else 0.0
    return any_fixed


@_jit
def _soft_crossing(q, q_try, free, soft_min, soft_inv, hmat, jtj, jtr, lmb, floor, amat, rhs,
                   delta, lower, upper):  # fmt: skip
    """A proposed step that takes parameters from above their soft minimum to below it.

    The step's quadratic model had no penalty for them (it is zero above the soft
    minimum), so it overshoots into the penalty, the trial is rejected and the damping
    grows: on blends whose widths the data want below the soft minimum, most iterations
    went to that. Here the step is solved again with those parameters' penalty in the
    model, ``((soft_min - q - delta) * soft_inv)**2``, exact below the soft minimum; a
    parameter that then stays above it stops at it. q_try is updated; returns the
    penalty of the new q_try (to take from the predicted decrease), or -1 if no parameter
    crosses or the new system cannot be factored (q_try unchanged).
    """
    nfree = q.shape[0]
    any_cross = False
    for f in range(nfree):
        if free[f] != 0.0 and soft_inv[f] > 0.0 and q[f] >= soft_min[f] > q_try[f]:
            any_cross = True
    if not any_cross:
        return -1.0
    _damped_system(hmat, jtj, jtr, free, lmb, floor, amat, rhs)
    for f in range(nfree):
        if free[f] != 0.0 and soft_inv[f] > 0.0 and q[f] >= soft_min[f] > q_try[f]:
            inv2 = soft_inv[f] * soft_inv[f]
            amat[f, f] += inv2
            rhs[f] += inv2 * (soft_min[f] - q[f])
            delta[f] = 1.0  # marks the crossing ones (q_try still holds the old step)
        else:
            delta[f] = 0.0
    if _cholesky(amat, nfree, free) >= 0:
        return -1.0  # (q_try still the plain step's)
    for f in range(nfree):
        q_try[f] = delta[f]  # the marks, while delta receives the new step
    _cholesky_solve(amat, rhs, delta, nfree)
    penalty = 0.0
    for f in range(nfree):
        cross = q_try[f] != 0.0
        v = q[f] + delta[f] if free[f] != 0.0 else q[f]
        v = min(max(v, lower[f]), upper[f])
        if cross:
            if v > soft_min[f]:
                v = soft_min[f]
            d = (soft_min[f] - v) * soft_inv[f]
            penalty += d * d
        q_try[f] = v
    return penalty


@_jit
def _iterate(q, chi2, n, smp, mdl, pfull, jac, tmp, lower, upper, max_iter, ftol, xtol,
             ascending):  # fmt: skip
    """`_iterate_g` with a fresh line store and Hessian (for callers that keep none)."""
    nfree = q.shape[0]
    return _iterate_g(q, chi2, n, smp, mdl, pfull, jac, tmp, lower, upper, max_iter, ftol,
                      xtol, ascending, _line_store(mdl[0], smp.shape[1]),
                      (np.empty((nfree, nfree)), np.empty(nfree), np.empty(nfree)),
                      False)  # fmt: skip


@_jit
def _iterate_g(q, chi2, n, smp, mdl, pfull, jac, tmp, lower, upper, max_iter, ftol, xtol,
               ascending, lines, aux, newton):  # fmt: skip
    """Bounded Levenberg-Marquardt from q (residuals, J^T J and J^T r already at q).

    Returns (status, iterations, chi2); on return q, the residuals, J^T J and J^T r all
    belong to the same point. Trial points cost one chi2 evaluation; J is rebuilt only at
    accepted points (from the Gaussians of the trial point's chi2, kept in the line
    store). Parameters on a bound whose descent direction points outward are frozen for the
    step (active set); the parameters that a step would take out of the box stop on their
    bound and the step of the others is solved again with them fixed there. ``aux`` is
    scratch ``(hmat, step_free, fixed)``; hmat receives the step's matrix: J^T J, or once
    a step moved every parameter by less than
    `_NEWTON_REACH` sigmas (from the first step with `newton`, for a start known to be
    near the minimum) the full Hessian (`_second_order`) where it is positive definite;
    damping and the convergence test scale with J^T J.
    """
    jmat, clo, chi, jtj, jtr = jac
    q_try, delta, rhs, free, amat = tmp
    hmat, sfree, fixed = aux
    soft_min = mdl[6]
    soft_inv = mdl[7]
    nfree = q.shape[0]
    dof = max(n - nfree, 1)
    lmb = _LAMBDA_START
    nu = 2.0
    status = _ST_MAX_ITER
    n_iter = 0
    n_accepted = 0
    for it in range(max_iter):
        n_iter = it + 1
        # the matrix of the step: J^T J, or near the minimum the full Hessian of chi2 / 2
        for a in range(nfree):
            for b in range(a + 1):
                hmat[a, b] = jtj[a, b]
        full_hessian = newton
        if newton:
            _second_order(n, smp, mdl, pfull, lines, hmat)
        maxdiag = 0.0
        for a in range(nfree):
            if jtj[a, a] > maxdiag:
                maxdiag = jtj[a, a]
        floor = _DIAG_FLOOR * maxdiag + 1e-300
        for f in range(nfree):
            frz = (q[f] <= lower[f] and jtr[f] <= 0.0) or (q[f] >= upper[f] and jtr[f] >= 0.0)
            free[f] = 0.0 if frz else 1.0
        accepted = False
        converged_now = False
        first_try = True
        dchi = 0.0
        lam_used = lmb
        chi2_try = chi2
        pred = 0.0
        while lmb <= _LAMBDA_MAX:
            _damped_system(hmat, jtj, jtr, free, lmb, floor, amat, rhs)
            factored = _cholesky(amat, nfree, free) < 0
            if not factored and full_hessian:
                # the Hessian is not positive definite here: J^T J for this iteration
                full_hessian = False
                for a in range(nfree):
                    for b in range(a + 1):
                        hmat[a, b] = jtj[a, b]
                continue
            if factored:
                _cholesky_solve(amat, rhs, delta, nfree)
                clipped = False
                for f in range(nfree):
                    v = q[f] + delta[f]
                    if v < lower[f] or v > upper[f]:
                        clipped = True
                if clipped:
                    _stop_at_bounds(q, delta, free, sfree, fixed, hmat, jtj, jtr, amat, rhs,
                                    lower, upper, lmb, floor)  # fmt: skip
                for f in range(nfree):
                    v = q[f] + delta[f]
                    q_try[f] = min(max(v, lower[f]), upper[f])
                    if q_try[f] != v:
                        clipped = True
                soft_pen = _soft_crossing(q, q_try, free, soft_min, soft_inv, hmat, jtj, jtr,
                                          lmb, floor, amat, rhs, delta, lower, upper)  # fmt: skip
                if soft_pen >= 0.0:
                    clipped = True  # not the plain step: no early convergence test
                else:
                    soft_pen = 0.0
                pred_ready = False
                if lmb <= 1.0 and first_try and not clipped:
                    # Converged already if the proposed (nearly Gauss-Newton) step is
                    # negligible: this saves evaluating a last, useless trial point.
                    pred = _predicted_decrease(q, q_try, hmat, jtr, nfree)
                    pred_ready = True  # that of this q_try, kept for the gain ratio
                    for a in range(nfree):
                        delta[a] = q_try[a] - q[a]  # the step proposed
                    if _negligible(pred, delta, jtj, chi2, dof, ftol, xtol):
                        converged_now = True
                        break
                first_try = False
                chi2_try = _chi2_g(q_try, n, smp, mdl, pfull, ascending, lines)
                if math.isfinite(chi2_try) and chi2_try <= chi2:
                    accepted = True
                    lam_used = lmb
                    dchi = chi2 - chi2_try
                    # gain ratio: actual over Gauss-Newton-predicted decrease (Nielsen 1999)
                    if not pred_ready:
                        pred = _predicted_decrease(q, q_try, hmat, jtr, nfree) - soft_pen
                    rho = dchi / pred if pred > 0.0 else 0.0
                    t = 2.0 * rho - 1.0
                    lmb = max(lmb * max(1.0 / 3.0, 1.0 - t * t * t), _LAMBDA_MIN)
                    nu = 2.0
                    break
            lmb *= nu
            nu *= 2.0
        if converged_now:
            status = _ST_CONVERGED
            break
        if not accepted:
            # No step lowers chi2. After accepted steps this is the (bounded) minimum to
            # machine precision; from the start it is not a verified minimum. The rejected
            # trials overwrote the residuals: restore them (J^T J, J^T r are still at q).
            _chi2_g(q, n, smp, mdl, pfull, ascending, lines)
            status = _ST_CONVERGED if n_accepted > 0 else _ST_NO_STEP
            break
        n_accepted += 1
        step = 0.0  # the largest step in units of its (conditional) sigma
        for a in range(nfree):
            delta[a] = q_try[a] - q[a]  # the step taken
            q[a] = q_try[a]
            step = max(step, delta[a] * delta[a] * jtj[a, a])
        chi2 = chi2_try
        if step < _NEWTON_REACH * _NEWTON_REACH:
            newton = True  # near the minimum, where the quadratic model holds
        _jacobian_g(q, n, smp, mdl, pfull, jac, ascending, lines, False)
        if lam_used <= 1.0 and _negligible(dchi, delta, jtj, chi2, dof, ftol, xtol):
            status = _ST_CONVERGED
            break
    return status, n_iter, chi2


@_jit
def _reweight(n, smp):
    """Weights 1/sigma with sigma**2 = photon * max(model, 0) + floor, model = y - r sigma.

    The residuals in smp must be those of the current fit; samples whose noise terms are
    not finite (or give sigma <= 0) keep their weight. Returns the number reweighted.
    """
    count = 0
    for i in range(n):
        p = smp[_PHOTON, i]
        b = smp[_FLOOR, i]
        if not (math.isfinite(p) and math.isfinite(b)):
            continue
        model = smp[_Y, i] - smp[_RES, i] / smp[_W, i]
        var = p * max(model, 0.0) + b
        if var > 0.0 and math.isfinite(var):
            smp[_W, i] = 1.0 / math.sqrt(var)
            count += 1
    return count


@_jit
def _reweight_carry(q, n, smp, mdl, jac):
    """`_reweight` at the current fit, with chi2, J, J^T J and J^T r carried to the new
    weights instead of recomputed: every residual and every column of J is the weight of
    its sample times a term that does not depend on it, so both scale by w_new / w_old
    (no Gaussian, no row of J rebuilt). J must be that of q (as `_iterate_g` and `_start`
    leave it). Returns (number reweighted, chi2 at q with the new weights).
    """
    jmat, clo, chi, jtj, jtr = jac
    res = smp[_RES]
    fac = smp[_SCRATCH]
    wv = smp[_W]
    for i in range(n):
        fac[i] = wv[i]
    count = _reweight(n, smp)
    chi2 = 0.0
    for i in range(n):
        f = wv[i] / fac[i]
        fac[i] = f
        res[i] *= f
        chi2 += res[i] * res[i]
    if count > 0:
        for a in range(q.shape[0]):
            row = jmat[a]
            for i in range(int(clo[a]), int(chi[a])):
                row[i] *= fac[i]
        _normal_equations(jmat, clo, chi, res, jtj, jtr)
        _penalty_terms(q, mdl[6], mdl[7], jtj, jtr)
    return count, chi2 + _penalty(q, mdl[6], mdl[7])


@_jit
def _reweighted_passes(q, chi2, status, n_iter, n_passes, n, smp, mdl, pfull, jac, tmp, lower,
                       upper, max_iter, ftol, xtol, ascending, lines, aux):  # fmt: skip
    """The passes after a first (loose) one with model weights: each reweights from the
    fitted model and iterates again from the solution (full Hessian from the first step);
    every pass but the last stops at `_LOOSE_FTOL` / `_LOOSE_XTOL` (the next weights move the
    minimum anyway), the last converges at ftol, xtol. If no sample can be reweighted, one
    pass at ftol, xtol with the weights as they are. Returns (status, iterations, chi2).
    """
    for k in range(n_passes):
        count, chi2_w = _reweight_carry(q, n, smp, mdl, jac)
        last = k == n_passes - 1 or count == 0
        if count > 0:
            chi2 = chi2_w
        status2, n_iter2, chi2 = _iterate_g(q, chi2, n, smp, mdl, pfull, jac, tmp, lower,
                                            upper, max_iter,
                                            ftol if last else max(ftol, _LOOSE_FTOL),
                                            xtol if last else max(xtol, _LOOSE_XTOL),
                                            ascending, lines, aux, True)  # fmt: skip
        n_iter += n_iter2
        if status2 != _ST_NO_STEP or status == _ST_NO_STEP:
            status = status2
        if last:
            break
    return status, n_iter, chi2


@_jit
def _identifiable(q, pfull, root, nl, free_kind, lower, upper, keep):
    """keep[f] = 1 for the free parameters that the data constrain at the solution.

    Left out: parameters on a bound, and centroids/widths that only serve lines of zero
    amplitude. Returns whether any free parameter is on a bound.
    """
    any_bound = False
    for f in range(q.shape[0]):
        at = q[f] <= lower[f] or q[f] >= upper[f]
        keep[f] = 0.0 if at else 1.0
        any_bound = any_bound or at
        kind = int(free_kind[f])
        if not at and (kind == 1 or kind == 2):
            ident = False
            for ln in range(nl):
                if int(root[3 * ln + kind]) == f and pfull[3 * ln] != 0.0:
                    ident = True
            if not ident:
                keep[f] = 0.0
    return any_bound


@_jit
def _covariance(jtj, amat, linv, keep, cov):
    """cov = (J^T J)^-1 over the kept parameters (NaN elsewhere), dropping any parameter
    that leaves the matrix singular; returns True if one was dropped."""
    nfree = jtj.shape[0]
    singular = _factor_kept(jtj, amat, keep, nfree) > 0
    _cholesky_inverse(amat, linv, cov, nfree)
    for a in range(nfree):
        for b in range(nfree):
            if keep[a] == 0.0 or keep[b] == 0.0:
                cov[a, b] = np.nan
    return singular


@_jit
def _significance(q, jtj, tmp, free_kind, factor, root, nl, sig):
    """Per line: amplitude / sigma(amplitude | centroids and widths fixed).

    The linear block of J^T J (amplitudes and background) is factored; the variance of a
    free amplitude is the diagonal of its inverse, ``|L^-1 e_r|^2``. For a linear least
    squares problem, (amplitude / sigma)**2 is exactly the chi2 increase when the line is
    removed and the other linear parameters are refit. NaN for fixed amplitudes.
    """
    q_try, x, rhs, keep, amat = tmp
    nfree = q.shape[0]
    for f in range(nfree):
        kind = int(free_kind[f])
        keep[f] = 1.0 if (kind == 0 or kind == 3) else 0.0
    _factor_kept(jtj, amat, keep, nfree)
    for ln in range(nl):
        sig[ln] = np.nan
        r = int(root[3 * ln])
        if r < 0 or keep[r] == 0.0:
            continue
        # forward solve L x = e_r (x is zero above r)
        for i in range(nfree):
            x[i] = 0.0
        x[r] = 1.0 / amat[r, r]
        for i in range(r + 1, nfree):
            if keep[i] == 0.0:
                continue
            s = 0.0
            for k in range(r, i):
                s -= amat[i, k] * x[k]
            x[i] = s / amat[i, i]
        var = 0.0
        for i in range(r, nfree):
            var += x[i] * x[i]
        var *= factor
        sig[ln] = q[r] / math.sqrt(var) if var > 0.0 else np.nan


@_jit
def _pack(out, q, pfull, cov, factor, mdl, nfree, lower, upper, full_cov):
    """Parameters, errors, per-line covariance terms, at-bound flags, full covariance."""
    nl, nbg, seg_ref, root, scale, offset, soft_min, soft_inv = mdl
    nfull = pfull.shape[0]
    _, o_err, o_cov, _, o_bound, _, _, o_fullcov = packed_offsets(nl, nfull)
    for j in range(nfull):
        out[j] = pfull[j]
        r = int(root[j])
        if r < 0:
            out[o_err + j] = 0.0
        else:
            out[o_err + j] = math.sqrt(max(scale[j] * scale[j] * cov[r, r] * factor, 0.0))
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
        bound = False
        for r in (ra, rc, rw):
            if r >= 0 and (q[r] <= lower[r] or q[r] >= upper[r]):
                bound = True
        out[o_bound + ln] = 1.0 if bound else 0.0
    if full_cov:
        for a in range(nfree):
            for b in range(nfree):
                out[o_fullcov + a * nfree + b] = cov[a, b] * factor


@_jit
def _fit_pixel(work, nw, n, p0, spec, out):
    """Fit the n valid samples put into work by `_compact`; write the packed results.

    Never raises for bad data: failures are status codes with NaN parameters.
    """
    nl = int(spec[SPEC_N_LINES])
    nbg = int(spec[SPEC_DEGREE]) + 1
    nseg = int(spec[SPEC_N_SEGMENTS])
    nfree = int(spec[SPEC_N_FREE])
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
    free_kind = spec[o + 3 * nfree : o + 4 * nfree]
    soft_min = spec[o + 4 * nfree : o + 5 * nfree]
    soft_inv = spec[o + 5 * nfree : o + 6 * nfree]
    mdl = (nl, nbg, seg_ref, root, scale, offset, soft_min, soft_inv)
    full_cov = spec[SPEC_FULL_COV] != 0.0

    # packed output offsets (same order as _PACKED_BLOCKS)
    _, _, _, o_sig, _, o_det, o_chi2, _ = packed_offsets(nl, nfull)
    for k in range(o_chi2 + 1):
        out[k] = np.nan
    out[o_chi2 + 1] = 0.0
    if full_cov:
        for k in range(nfree * nfree):
            out[o_chi2 + 4 + k] = np.nan
    out[o_chi2 + 2] = n
    if n == 0:
        out[o_chi2 + 3] = _ST_ALL_NAN
        return
    if n < int(spec[SPEC_MIN_VALID]) or n <= nfree:
        out[o_chi2 + 3] = _ST_TOO_FEW
        return

    # views into the scratch array (sizes: see _work_size)
    smp = work[: _N_ROWS * nw].reshape((_N_ROWS, nw))
    o = _N_ROWS * nw
    jmat = work[o : o + nfree * n].reshape((nfree, n))  # exactly n columns
    o += nfree * nw
    vec = work[o : o + 10 * nfree].reshape((10, nfree))
    q, q_try, delta, jtr, rhs, keep, clo, chi = vec[0], vec[1], vec[2], vec[3], vec[4], \
        vec[5], vec[6], vec[7]  # fmt: skip
    o += 10 * nfree
    mats = work[o : o + 4 * nfree * nfree].reshape((4, nfree, nfree))
    jtj, amat, cov, linv = mats[0], mats[1], mats[2], mats[3]
    o += 4 * nfree * nfree
    pfull = work[o : o + nfull]
    o += nfull
    lines = (work[o : o + nl * nw].reshape((nl, nw)), work[o + nl * nw : o + nl * nw + 2 * nl]
             .reshape((nl, 2)))  # fmt: skip
    o += nl * nw + 2 * nl
    pfull_old = work[o : o + nfull]
    jac = (jmat, clo, chi, jtj, jtr)
    tmp = (q_try, delta, rhs, keep, amat)
    aux = (cov, vec[8], vec[9])  # cov is free until the covariance

    ascending = True
    lam = smp[_LAM]
    for i in range(1, n):
        if not lam[i] > lam[i - 1]:
            ascending = False
            break

    chi2 = _start(q, p0, n, smp, mdl, pfull, jac, tmp, free_root, free_kind, lower, upper,
                  spec[SPEC_RESCALE] != 0.0, spec[SPEC_MOMENTS] != 0.0, ascending,
                  lines, pfull_old)  # fmt: skip
    if not math.isfinite(chi2):
        out[o_chi2 + 3] = _ST_BAD_INITIAL
        return
    max_iter = int(spec[SPEC_MAX_ITER])
    ftol = spec[SPEC_FTOL]
    xtol = spec[SPEC_XTOL]
    n_passes = int(spec[SPEC_REWEIGHT])
    if n_passes > 0:
        # weights from the starting model rather than from the noisy data
        count, chi2_w = _reweight_carry(q, n, smp, mdl, jac)
        if count > 0:
            chi2 = chi2_w
            n_passes -= 1
    # A pass followed by a reweighted one need not converge tightly (`_reweighted_passes`)
    loose = n_passes > 0
    status, n_iter, chi2 = _iterate_g(q, chi2, n, smp, mdl, pfull, jac, tmp, lower, upper,
                                      max_iter, max(ftol, _LOOSE_FTOL) if loose else ftol,
                                      max(xtol, _LOOSE_XTOL) if loose else xtol, ascending,
                                      lines, aux, False)  # fmt: skip
    if loose:
        status, n_iter, chi2 = _reweighted_passes(q, chi2, status, n_iter, n_passes, n, smp,
                                                  mdl, pfull, jac, tmp, lower, upper,
                                                  max_iter, ftol, xtol, ascending, lines,
                                                  aux)  # fmt: skip

    dof = n - nfree
    chi2 -= _penalty(q, soft_min, soft_inv)  # report the data's chi2 alone
    out[o_chi2] = chi2 / dof
    out[o_chi2 + 1] = n_iter
    factor = max(chi2 / dof, 0.0) if spec[SPEC_SCALE_ERRORS] != 0.0 else 1.0
    _full_params(q, root, scale, offset, pfull)
    # errors from the data alone: a width the soft minimum holds up (the data wanted it
    # narrower) keeps the data's uncertainty, not the prior's tolerance
    for f in range(nfree):
        if soft_inv[f] > 0.0 and q[f] < soft_min[f]:
            jtj[f, f] -= soft_inv[f] * soft_inv[f]
    any_bound = _identifiable(q, pfull, root, nl, free_kind, lower, upper, keep)
    singular = _covariance(jtj, amat, linv, keep, cov)
    if status == _ST_CONVERGED and any_bound:
        status = _ST_AT_BOUND
    if singular and (status == _ST_CONVERGED or status == _ST_AT_BOUND):
        status = _ST_SINGULAR
    out[o_chi2 + 3] = status
    _pack(out, q, pfull, cov, factor, mdl, nfree, lower, upper, full_cov)
    _significance(q, jtj, tmp, free_kind, factor, root, nl, out[o_sig : o_sig + nl])
    detection = spec[SPEC_DETECTION]
    for ln in range(nl):
        if pfull[3 * ln] == 0.0:
            out[o_sig + ln] = 0.0
        out[o_det + ln] = 1.0 if out[o_sig + ln] >= detection else 0.0


# ----------------------------------------------------------------------------- adaptive
@_jit
def _worst_relative_error(out, nl, nfull, status_at, thr_a, thr_c, thr_w):
    """max over lines and kinds of (|err / value| / threshold); inf if not usable."""
    st = int(out[status_at])
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
# float64-only `_fit_pixel`, and only `_compact` depends on the data dtype.
_SIG_TYPES = ("float32", "float64")


def _fit_kernel(y, err, wave, photon, floor, p0, spec, template, out):
    nw = y.shape[0]
    work = np.empty(_work_size(spec, nw))  # one scratch allocation per pixel
    n = _compact(y, err, wave, photon, floor, spec, work)
    _fit_pixel(work, nw, n, p0, spec, out)


def _adaptive_kernel(y, err, wave, photon, floor, p0, spec, template, out):
    """Fit levels from the first (least binned); keep the first meeting the thresholds."""
    nl = int(spec[SPEC_N_LINES])
    nfull = 3 * nl + int(spec[SPEC_N_SEGMENTS]) * (int(spec[SPEC_DEGREE]) + 1)
    status_at = packed_offsets(nl, nfull)[6] + 3
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
        n = _compact(y[lv], err[lv], wave, photon[lv], floor[lv], spec, work)
        _fit_pixel(work, nw, n, p0, spec, cur)
        score = _worst_relative_error(cur, nl, nfull, status_at, thr_a, thr_c, thr_w)
        if lv == 0 or score < best_score:
            best_score = score
            best_level = lv
            for k in range(nq):
                out[k] = cur[k]
        if score <= 1.0:
            out[nq] = lv
            return
    # No level met the thresholds. Keep the level with the smallest worst relative error
    # (relative to its threshold), flagged THRESHOLD_NOT_MET (the per-line at-bound flags
    # keep what the status no longer says); if no level gave a usable fit, keep the last
    # (most binned) level with its own failure status.
    if best_score == math.inf:
        for k in range(nq):
            out[k] = cur[k]
        out[nq] = n_levels - 1
        return
    out[nq] = best_level
    out[status_at] = _ST_THRESHOLD


def _check_dtype(dtype: str) -> str:
    if dtype not in _SIG_TYPES:
        raise ValueError(f"saffron_xr kernels take float32 or float64 data, not {dtype!r}")
    return dtype


@functools.cache
def fit_gufunc(dtype: str = "float64"):
    """The per-pixel fitting gufunc for float32 or float64 data (built on first call).

    Signature ``(w),(w),(w),(w),(w),(p),(k),(q)->(q)``: data, 1-sigma error (both of
    `dtype`), wavelength (float64, Angstrom), the noise terms ``photon`` and ``floor``
    (float64; NaN when there is no noise model), initial full parameters (float64), spec
    (`pack_spec`), a template whose only use is to give the length of the packed output
    (numba needs every output core dimension to appear in an input), and the packed output
    (float64, `packed_layout`). Arithmetic is float64 throughout. One signature per call, so
    that a worker compiles (or loads from the disk cache) only the dtype it meets.
    """
    t = _check_dtype(dtype)
    sig = f"void({t}[:], {t}[:], f8[:], f8[:], f8[:], f8[:], f8[:], f8[:], f8[:])"
    layout = "(w),(w),(w),(w),(w),(p),(k),(q)->(q)"
    return numba.guvectorize([sig], layout, nopython=True, **_FLAGS)(_fit_kernel)


@functools.cache
def adaptive_gufunc(dtype: str = "float64"):
    """The adaptive-binning gufunc (built on first call).

    Signature ``(l,w),(l,w),(w),(l,w),(l,w),(p),(k),(q)->(q)``: as `fit_gufunc` with data,
    error and noise terms stacked over binning levels (least binned first); the packed
    output has one more entry, the index of the chosen level.
    """
    t = _check_dtype(dtype)
    sig = f"void({t}[:, :], {t}[:, :], f8[:], f8[:, :], f8[:, :], f8[:], f8[:], f8[:], f8[:])"
    layout = "(l,w),(l,w),(w),(l,w),(l,w),(p),(k),(q)->(q)"
    return numba.guvectorize([sig], layout, nopython=True, **_FLAGS)(_adaptive_kernel)
