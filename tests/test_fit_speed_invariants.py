"""What the kernel's speed-ups must not change.

The Jacobian reuses the Gaussians that the chi-square left in the line store at the same
point, the start's linear solves build only the rows of the linear parameters, and J^T J and
J^T r are BLAS products. Checked here: (1) against the same quantities computed
independently (numpy), at points where some lines have zero amplitude and where samples are
missing (gaps in the grid, which restart the exponential recurrence); (2) end to end, against
scipy's ``least_squares`` on a few hundred spectra of the benchmark's two-line and blended
six-line cases, at tight tolerances: the parameters agree to 1e-3 of their error bars and
the errors to 1e-3 (relative) with scipy's ``(J^T J)^-1``.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from kernel_helpers import kernel_scratch, numpy_jacobian, numpy_model
from scipy.optimize import least_squares

from saffron_xr import FitStatus, LineModel, fit_lines

STEP = 0.097517
WAVE = 770.0 + STEP * (np.arange(64) - 32)
SIGMA_LINE = 0.8 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
PHOTON = 3.58 / 38.15
FLOOR = 2 * (6.9**2 + 0.89 * 4.7) / 38.15**2


def _line_model(centres, degree, start, lo, hi):
    m = LineModel(background_degree=degree)
    for k, c in enumerate(centres):
        m.add_line(f"fe_{10 + k} {700 + k}.0", amplitude=start[3 * k], centroid=start[3 * k + 1],
                   width=start[3 * k + 2],
                   bounds={"amplitude": (0.0, None), "centroid": (c - 0.3, c + 0.3),
                           "width": (lo, hi)})  # fmt: skip
    return m


# ---------------------------------------------------------------- stage level
def _kernel_setup(centres, degree, y, sigma):
    from saffron_xr.fit import _kernels as k

    start = []
    for c in centres:
        start += [2.0, c + 0.02, SIGMA_LINE * 1.1]
    start += [0.1] + [0.01] * degree
    m = _line_model(centres, degree, start, 0.6 * SIGMA_LINE, 2.5 * SIGMA_LINE)
    comp = m.compile(WAVE)
    _spec, n, smp, mdl = kernel_scratch(comp, y, sigma, WAVE)
    return k, comp, n, smp, mdl


def _jac_buffers(nf, n):
    """J (exactly n columns: one per valid sample), its ranges, J^T J and J^T r."""
    return (np.zeros((nf, n)), np.zeros(nf), np.zeros(nf), np.zeros((nf, nf)), np.zeros(nf))


@pytest.mark.parametrize("zero_amplitude", [False, True])
def test_jacobian_from_the_line_store_matches_numpy(zero_amplitude):
    """J^T J and J^T r built from the Gaussians left by the chi2 (line store) equal numpy's,
    with gaps in the grid (missing samples) and lines of zero amplitude (not in the store)."""
    centres = [767.6, 768.5, 769.3, 770.2, 771.0, 772.1]
    rng = np.random.default_rng(5)
    truth = []
    for c in centres:
        truth += [rng.uniform(1.0, 5.0), c + rng.normal(0, 0.03), SIGMA_LINE]
    truth += [0.1, 0.01]
    clean = numpy_model(WAVE, np.array(truth), 6, 1, 770.0)
    sigma = np.sqrt(PHOTON * clean + FLOOR)
    y = clean + sigma * rng.standard_normal(WAVE.size)
    y[[5, 6, 30, 47]] = np.nan  # gaps: the exponential recurrence restarts after each
    k, comp, n, smp, mdl = _kernel_setup(centres, 1, y, sigma)
    assert n == WAVE.size - 4
    nf = comp.n_free
    kind = np.asarray(comp.full_kind)[comp.free_root]
    q = np.array(truth)[comp.free_root]
    q = np.where(kind == 1, q + 0.01, q * np.array([1.05, 1.0, 1.03, 1.1])[kind])
    if zero_amplitude:
        q[[0, 9]] = 0.0  # amplitudes of lines 1 and 4
    pfull = np.zeros(comp.n_full)
    lines = k._line_store(comp.n_lines, WAVE.size)
    chi2 = k._chi2_g(q, n, smp, mdl, pfull, True, lines)
    jac = _jac_buffers(nf, n)
    k._jacobian_g(q, n, smp, mdl, pfull, jac, True, lines, False)

    ok = np.isfinite(y)
    x, yy, s = WAVE[ok], y[ok], sigma[ok]
    p = np.asarray(comp.offset) + np.asarray(comp.scale) * q[comp.root]  # all free here
    r = (yy - numpy_model(x, p, 6, 1, comp.segment_reference[0])) / s
    jm = numpy_jacobian(x, p, 6, 1, comp.segment_reference[0]) / s[:, None]
    assert chi2 == pytest.approx(np.sum(r * r), rel=1e-10)  # reach 8 widths, recurrence
    jtj = jm.T @ jm
    scale = np.sqrt(np.outer(np.diag(jtj), np.diag(jtj)))
    tri = np.tril_indices(nf)
    live = scale[tri] > 0  # rows of centroids/widths of zero-amplitude lines are zero
    np.testing.assert_allclose(jac[3][tri][live] / scale[tri][live],
                               jtj[tri][live] / scale[tri][live], rtol=0, atol=1e-9)  # fmt: skip
    assert np.all(jac[3][tri][~live] == 0.0)
    assert (~live).any() == zero_amplitude
    jtr = jm.T @ r
    np.testing.assert_allclose(jac[4], jtr, rtol=1e-9, atol=1e-9 * np.abs(jtr).max())

    # a fresh store (every Gaussian recomputed) gives the same numbers, bit for bit
    fresh = _jac_buffers(nf, n)
    k._jacobian(q, n, smp, mdl, pfull, fresh, True)
    np.testing.assert_array_equal(np.tril(fresh[3]), np.tril(jac[3]))
    np.testing.assert_array_equal(fresh[4], jac[4])

    # the linear-only Jacobian: the same amplitude/background block, bit for bit
    lin = _jac_buffers(nf, n)
    k._chi2_g(q, n, smp, mdl, pfull, True, lines)
    k._jacobian_g(q, n, smp, mdl, pfull, lin, True, lines, True)
    linear = np.isin(kind, (0, 3))
    block = np.ix_(linear, linear)
    np.testing.assert_array_equal(np.tril(lin[3])[block], np.tril(jac[3])[block])
    np.testing.assert_array_equal(lin[4][linear], jac[4][linear])


def _two_lines(seed):
    """Centres, truth, data (two missing samples) and sigma of a SPICE-like 2-line spectrum."""
    rng = np.random.default_rng(seed)
    truth = [6.0, 769.41, SIGMA_LINE, 2.5, 770.88, SIGMA_LINE, 0.3]
    clean = numpy_model(WAVE, np.array(truth), 2, 0, 770.0)
    sigma = np.sqrt(PHOTON * clean + FLOOR)
    y = clean + sigma * rng.standard_normal(WAVE.size)
    y[[3, 40]] = np.nan
    return [769.4, 770.9], truth, y, sigma


def _numpy_normal_equations(comp, q, y, sigma):
    """J^T J and J^T r at free parameters q, by numpy (independent of the kernel)."""
    ok = np.isfinite(y)
    x, yy, s = WAVE[ok], y[ok], sigma[ok]
    p = np.asarray(comp.offset) + np.asarray(comp.scale) * q[comp.root]
    ref = comp.segment_reference[0]
    r = (yy - numpy_model(x, p, comp.n_lines, comp.degree, ref)) / s
    jm = numpy_jacobian(x, p, comp.n_lines, comp.degree, ref) / s[:, None]
    jm = jm @ _tie_matrix(comp)
    return jm.T @ jm, jm.T @ r, np.sum(r * r), jm


def _tie_matrix(comp):
    """d(full parameters) / d(free parameters): scale factors of the ties."""
    t = np.zeros((comp.n_full, comp.n_free))
    for j, r in enumerate(comp.root):
        if r >= 0:
            t[j, r] = comp.scale[j]
    return t


def _start_state(m, y, sigma):
    """Compiled model, sample block and the kernel's state at the model's initial values:
    residuals, J, J^T J, J^T r (comp, n, smp, mdl, q, pfull, lines, jac, tmp, lower, upper,
    kind)."""
    from saffron_xr.fit import _kernel_base as kb

    comp = m.compile(WAVE)
    _spec, n, smp, mdl = kernel_scratch(comp, y, sigma, WAVE)
    nf = comp.n_free
    q = np.array([comp.initial[j] for j in comp.free_root], dtype=float)
    pfull = np.zeros(comp.n_full)
    lines = kb._line_store(comp.n_lines, WAVE.size)
    kb._chi2_g(q, n, smp, mdl, pfull, True, lines)
    jac = _jac_buffers(nf, n)
    kb._jacobian_g(q, n, smp, mdl, pfull, jac, True, lines, False)
    tmp = (np.zeros(nf), np.zeros(nf), np.zeros(nf), np.zeros(nf), np.zeros((nf, nf)))
    lower = np.asarray(comp.free_lower, dtype=float)
    upper = np.asarray(comp.free_upper, dtype=float)
    kind = np.asarray(comp.full_kind, dtype=float)[comp.free_root]
    return comp, n, smp, mdl, q, pfull, lines, jac, tmp, lower, upper, kind


@pytest.mark.parametrize("tied", [False, True])
def test_linear_solve_carries_the_normal_equations_to_the_new_point(tied):
    """After the start's linear solve from the full J, J, J^T J and J^T r are carried to the new
    amplitudes and background algebraically (centroid and width rows scale with their
    line's amplitude; r changes by J delta): they equal numpy's at the new point. A width
    shared by two lines (a tie) does not scale that way: J is rebuilt, with the same
    result."""
    from saffron_xr.fit import _kernel_base as kb

    centres, truth, y, sigma = _two_lines(seed=11)
    start = [2.0, 769.43, SIGMA_LINE * 1.2, 1.0, 770.86, SIGMA_LINE * 0.9, 0.1]
    m = _line_model(centres, 0, start, 0.6 * SIGMA_LINE, 2.5 * SIGMA_LINE)
    if tied:
        m.tie_width(list(m.lines)[1], to=list(m.lines)[0])
    comp, n, smp, mdl, q, pfull, lines, jac, tmp, lower, upper, kind = _start_state(m, y, sigma)
    nf = comp.n_free
    before = q.copy()
    carried = kb._rescaled_normal_equations  # the algebraic path, spied on
    calls = []

    chi2 = kb._solve_linear_full(q, n, smp, mdl, pfull, jac, tmp, kind, lower, upper, True,
                                 lines, np.zeros(comp.n_full))  # fmt: skip
    linear = np.isin(kind, (0, 3))
    assert np.all(q[~linear] == before[~linear]) and np.any(q[linear] != before[linear])
    jtj, jtr, chi2_np, jm = _numpy_normal_equations(comp, q, y, sigma)
    np.testing.assert_allclose(jac[0], jm.T, rtol=1e-10, atol=1e-12 * np.abs(jm).max())
    assert chi2 == pytest.approx(chi2_np, rel=1e-10)
    scale = np.sqrt(np.outer(np.diag(jtj), np.diag(jtj)))
    np.testing.assert_allclose(jac[3] / scale, jtj / scale, rtol=0, atol=1e-10)
    np.testing.assert_allclose(jac[4], jtr, rtol=0, atol=1e-9 * np.abs(jtr).max())
    # at the linear least-squares point, the gradient of the linear parameters is zero
    assert np.all(np.abs(jac[4][linear]) < 1e-8 * np.sqrt(np.diag(jtj)[linear] * chi2_np))
    # which path: scalable without ties, rebuilt with one
    trial = (np.zeros((nf, n)), np.zeros(nf), np.zeros(nf), jtj.copy(), jtr.copy())
    pf_old = np.asarray(comp.offset) + np.asarray(comp.scale) * before[comp.root]
    pf_old[np.asarray(comp.root) < 0] = np.asarray(comp.offset)[np.asarray(comp.root) < 0]
    calls.append(carried(q, pf_old, mdl, pfull, trial, q - before, kind, np.zeros(nf)))
    assert calls == [not tied]


@pytest.mark.parametrize("fixed", [None, "amplitude"])
def test_linear_solve_matches_numpy_least_squares(fixed):
    """`_linear_solve` (the linear block packed out of the free parameters, here interleaved
    with centroids and widths, and a linear background) gives numpy's least-squares step of
    the amplitudes and background at fixed centroids and widths; an amplitude whose solution
    falls below its lower bound starts 1 / sqrt(J^T J) above it; centroids and widths do not
    move. With the amplitudes fixed, the background alone is solved."""
    from saffron_xr.fit import _kernel_base as kb

    centres, truth, y, sigma = _two_lines(seed=5)
    # the second line's data dip below the background: its amplitude solves to < 0
    y = y - numpy_model(WAVE, np.array([4.0, 770.88, SIGMA_LINE, 0.0]), 1, 0, 770.0)
    start = [2.0, 769.43, SIGMA_LINE * 1.2, 1.0, 770.86, SIGMA_LINE * 0.9, 0.1, 0.01]
    m = _line_model(centres, 1, start, 0.6 * SIGMA_LINE, 2.5 * SIGMA_LINE)
    names = list(m.lines)
    if fixed:
        for ln in names:
            m.fix(ln, "amplitude", 1.0)
    comp, n, smp, mdl, q, pfull, lines, jac, tmp, lower, upper, kind = _start_state(m, y, sigma)
    linear = np.isin(kind, (0, 3))
    before = q.copy()
    done = kb._linear_solve(q, jac, tmp, kind, lower, upper)
    if fixed:  # the background is still linear and free
        assert linear.sum() == 2 and done
    else:
        assert linear.sum() == 4 and done
    jtj, jtr, _chi2, jm = _numpy_normal_equations(comp, before, y, sigma)
    ok = np.isfinite(y)
    r = (
        y[ok]
        - numpy_model(
            WAVE[ok],
            np.asarray(comp.offset) + np.asarray(comp.scale) * before[comp.root],
            comp.n_lines,
            comp.degree,
            770.0,
        )
    ) / sigma[ok]
    step = np.linalg.lstsq(jm[:, linear], r, rcond=None)[0]
    expected = before.copy()
    expected[linear] += step
    floor_hit = (kind == 0) & (expected <= lower)
    expected[floor_hit] = lower[floor_hit] + 1.0 / np.sqrt(np.diag(jtj)[floor_hit])
    assert fixed or floor_hit.sum() == 1  # the second line's amplitude hits its floor
    np.testing.assert_allclose(q, expected, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(tmp[1], q - before, rtol=1e-12, atol=1e-14)
    assert np.all(q[~linear] == before[~linear])


def test_linear_solve_on_random_systems_matches_numpy():
    """Random symmetric positive definite J^T J with up to 21 free parameters of mixed kinds
    (up to 15 linear: the factorisation's four-row blocks from the fifth column on): the
    step of the linear parameters is numpy's solution of the regularised linear block,
    ``(A + 1e-10 diag A) x = b``; the others do not move."""
    from saffron_xr.fit import _kernel_base as kb

    rng = np.random.default_rng(3)
    for trial in range(300):
        nf = int(rng.integers(1, 22))
        kind = rng.choice([0.0, 1.0, 2.0, 3.0], size=nf)
        if trial % 3 == 0:
            kind[: min(nf, 15)] = rng.choice([0.0, 3.0], size=min(nf, 15))
        a = rng.standard_normal((nf, nf + 5))
        jtj = a @ a.T
        jtr = rng.standard_normal(nf)
        q = rng.standard_normal(nf)
        before = q.copy()
        lin = np.isin(kind, (0, 3))
        jac = (np.zeros((nf, 4)), np.zeros(nf), np.zeros(nf), jtj, jtr)
        tmp = (np.zeros(nf), np.zeros(nf), np.zeros(nf), np.zeros(nf), np.zeros((nf, nf)))
        inf = np.full(nf, np.inf)
        done = kb._linear_solve(q, jac, tmp, kind, -inf, inf)
        assert done == bool(lin.any())
        if not done:
            assert np.all(q == before)
            continue
        block = jtj[np.ix_(lin, lin)]
        block = block + np.diag(np.diag(block) * 1e-10 + 1e-300)
        step = np.linalg.solve(block, jtr[lin])
        np.testing.assert_allclose(q[lin], before[lin] + step, rtol=1e-9,
                                   atol=1e-9 * np.abs(step).max())  # fmt: skip
        assert np.all(q[~lin] == before[~lin]) and np.all(tmp[1][~lin] == 0.0)


def test_linear_solve_declines_without_linear_parameters():
    """Only centroids and widths free (kinds 1, 2): no linear step, q unchanged."""
    from saffron_xr.fit import _kernel_base as kb

    kind = np.array([1.0, 2.0, 1.0, 2.0])
    q = np.array([769.4, 0.3, 770.9, 0.35])
    before = q.copy()
    jtj = np.diag([4.0, 3.0, 2.0, 1.0])
    jac = (np.ones((4, 8)), np.zeros(4), np.full(4, 8.0), jtj, np.ones(4))
    tmp = (np.zeros(4), np.zeros(4), np.zeros(4), np.zeros(4), np.zeros((4, 4)))
    assert not kb._linear_solve(q, jac, tmp, kind, np.full(4, -np.inf), np.full(4, np.inf))
    assert np.all(q == before)


def test_carrying_the_normal_equations_declines_where_it_would_be_wrong():
    """A line of zero amplitude (its centroid and width rows are zero, not scalable) and a
    soft-minimum penalty in J^T J (it does not scale): the caller must rebuild J."""
    from saffron_xr.fit import _kernel_base as kb

    centres = [769.4, 770.9]
    start = [2.0, 769.43, SIGMA_LINE * 1.2, 1.0, 770.86, SIGMA_LINE * 0.9, 0.1]
    m = _line_model(centres, 0, start, 0.6 * SIGMA_LINE, 2.5 * SIGMA_LINE)
    comp = m.compile(WAVE)
    y = numpy_model(WAVE, np.array(start), 2, 0, 770.0)
    _spec, n, smp, mdl = kernel_scratch(comp, y, np.ones(WAVE.size), WAVE)
    nf = comp.n_free
    kind = np.asarray(comp.full_kind, dtype=float)[comp.free_root]
    q = np.array([comp.initial[j] for j in comp.free_root], dtype=float)
    pfull = np.asarray(comp.offset) + np.asarray(comp.scale) * q[comp.root]
    jac = (np.zeros((nf, n)), np.zeros(nf), np.zeros(nf), np.eye(nf), np.ones(nf))
    delta = np.where(np.isin(kind, (0, 3)), 0.1, 0.0)
    old = pfull.copy()
    old[0] = 0.0  # line 1 had zero amplitude
    assert not kb._rescaled_normal_equations(q, old, mdl, pfull, jac, delta, kind, np.zeros(nf))
    np.testing.assert_array_equal(jac[3], np.eye(nf))  # untouched
    soft = np.where(kind == 2, q[kind == 2].max() * 2.0, -np.inf)
    mdl_soft = mdl[:6] + (soft, np.where(kind == 2, 1.0, 0.0))
    assert not kb._rescaled_normal_equations(q, pfull, mdl_soft, pfull, jac, delta, kind,
                                             np.zeros(nf))  # fmt: skip
    assert kb._rescaled_normal_equations(q, pfull, mdl, pfull, jac, delta, kind, np.zeros(nf))


def test_reweighting_carries_chi2_and_the_normal_equations_to_the_new_weights():
    """Weights from the model (noise terms photon, floor) at the current point: chi2, J^T J
    and J^T r carried to the new weights (residuals and columns of J rescaled) equal numpy's
    with sigma**2 = photon * max(model, 0) + floor; samples whose noise terms are not
    finite keep their weight."""
    from saffron_xr.fit import _kernels as k

    centres, truth, y, sigma = _two_lines(seed=12)
    m = _line_model(centres, 0, truth, 0.6 * SIGMA_LINE, 2.5 * SIGMA_LINE)
    comp = m.compile(WAVE)
    spec = k.pack_spec(comp, max_iter=50, ftol=1e-5, xtol=3e-3, min_valid=5,
                       scale_errors=False, rescale_initial=False)  # fmt: skip
    photon = np.full(WAVE.size, PHOTON)
    floor = np.full(WAVE.size, FLOOR)
    photon[10] = np.nan  # this sample keeps its weight
    nw = WAVE.size
    work = np.zeros(k._work_size(spec, nw))
    n = k._compact(y, sigma * 1.3, WAVE, photon, floor, spec, work)
    smp = work[: k._N_ROWS * nw].reshape(k._N_ROWS, nw)
    mdl = (comp.n_lines, comp.degree + 1, comp.segment_reference, comp.root.astype(float),
           comp.scale, comp.offset, comp.free_soft_min, comp.free_soft_inv)  # fmt: skip
    nf = comp.n_free
    q = np.array(truth)[comp.free_root] * np.array([1.1, 1.0, 1.05, 0.9, 1.0, 0.97, 1.2])
    pfull = np.zeros(comp.n_full)
    lines = k._line_store(comp.n_lines, nw)
    k._chi2_g(q, n, smp, mdl, pfull, True, lines)
    jac = _jac_buffers(nf, n)
    k._jacobian_g(q, n, smp, mdl, pfull, jac, True, lines, False)
    count, chi2 = k._reweight_carry(q, n, smp, mdl, jac)

    ok = np.isfinite(y)
    x, yy = WAVE[ok], y[ok]
    p = np.asarray(comp.offset) + np.asarray(comp.scale) * q[comp.root]
    model = numpy_model(x, p, 2, 0, comp.segment_reference[0])
    s_new = np.sqrt(PHOTON * np.maximum(model, 0.0) + FLOOR)
    keep_old = ~np.isfinite(photon[ok])
    s_new[keep_old] = (sigma * 1.3)[ok][keep_old]
    assert count == ok.sum() - 1
    r = (yy - model) / s_new
    jm = numpy_jacobian(x, p, 2, 0, comp.segment_reference[0]) / s_new[:, None]
    assert chi2 == pytest.approx(np.sum(r * r), rel=1e-10)
    jtj = jm.T @ jm
    scale = np.sqrt(np.outer(np.diag(jtj), np.diag(jtj)))
    np.testing.assert_allclose(jac[3] / scale, jtj / scale, rtol=0, atol=1e-10)
    np.testing.assert_allclose(jac[4], jm.T @ r, rtol=0, atol=1e-9 * np.abs(jm.T @ r).max())
    np.testing.assert_allclose(jac[0], jm.T, rtol=1e-10, atol=1e-12 * np.abs(jm).max())


# ---------------------------------------------------------------- end to end vs scipy
CASES = {
    # name: centres, amplitude range, background range, degree
    "two lines": ([769.4, 770.9], (0.7, 9.0), (0.01, 0.1), 0),
    "blend of six": ([767.6, 768.5, 769.3, 770.2, 771.0, 772.1], (4.0, 12.0), (0.05, 0.2), 1),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fit_agrees_with_scipy_least_squares(case):
    centres, amp_range, bg_range, degree = CASES[case]
    nl = len(centres)
    n_spec = 300 if nl == 2 else 120
    rng = np.random.default_rng(11)
    ref = 0.5 * (WAVE.min() + WAVE.max())
    truth = np.empty((n_spec, 3 * nl + degree + 1))
    truth[:, 0 : 3 * nl : 3] = rng.uniform(*amp_range, size=(n_spec, nl))
    truth[:, 1 : 3 * nl : 3] = np.array(centres) + rng.normal(0.0, 0.03, size=(n_spec, nl))
    truth[:, 2 : 3 * nl : 3] = SIGMA_LINE * rng.uniform(0.9, 1.1, size=(n_spec, nl))
    truth[:, 3 * nl] = rng.uniform(*bg_range, n_spec)
    if degree:
        truth[:, 3 * nl + 1] = rng.uniform(-0.02, 0.02, n_spec)
    clean = np.stack([numpy_model(WAVE, p, nl, degree, ref) for p in truth])
    sigma = np.sqrt(PHOTON * np.clip(clean, 0.0, None) + FLOOR)
    y = clean + sigma * rng.standard_normal(clean.shape)
    y[rng.random(y.shape) < 0.01] = np.nan

    start = []
    for c in centres:
        start += [0.6 * np.mean(amp_range), c + 0.02, SIGMA_LINE * 1.1]
    start += [np.mean(bg_range)] + [0.0] * degree
    lo_w, hi_w = 0.6 * SIGMA_LINE, 2.5 * SIGMA_LINE
    m = _line_model(centres, degree, start, lo_w, hi_w)
    coords = {"wavelength": ("wavelength", WAVE, {"units": "Angstrom"})}
    da = xr.DataArray(y, dims=("y", "wavelength"), coords=coords)
    err = xr.DataArray(sigma, dims=("y", "wavelength"), coords=coords)
    ds = fit_lines(da, m, error=err, ftol=1e-12, xtol=1e-10, max_iter=500)

    cols, errs = [], []
    for ln in range(nl):
        for kind in ("amplitude", "centroid", "width"):
            cols.append(ds[kind].isel(line=ln).values)
            errs.append(ds[kind + "_err"].isel(line=ln).values)
    for d in range(degree + 1):
        cols.append(ds.background.isel(degree=d).values)
        errs.append(ds.background_err.isel(degree=d).values)
    p_fit, e_fit = np.stack(cols, 1), np.stack(errs, 1)
    status = ds.status.values

    lo = np.array([0.0, 0.0, lo_w] * nl + [-np.inf] * (degree + 1))
    hi = np.array([np.inf, 0.0, hi_w] * nl + [np.inf] * (degree + 1))
    lo[1 : 3 * nl : 3] = np.array(centres) - 0.3
    hi[1 : 3 * nl : 3] = np.array(centres) + 0.3
    compared = 0
    for i in range(n_spec):
        if status[i] != int(FitStatus.CONVERGED):
            continue  # interior minima only: at a bound the two solvers' errors differ
        ok = np.isfinite(y[i])
        x, yy, s = WAVE[ok], y[i, ok], sigma[i, ok]

        def resid(p, x=x, yy=yy, s=s):
            return (numpy_model(x, p, nl, degree, ref) - yy) / s

        def jac(p, x=x, s=s):
            return numpy_jacobian(x, p, nl, degree, ref) / s[:, None]

        sol = least_squares(resid, p_fit[i], jac=jac, bounds=(lo, hi), method="trf",
                            xtol=1e-15, ftol=1e-15, gtol=1e-15, x_scale="jac")  # fmt: skip
        cov = np.linalg.inv(sol.jac.T @ sol.jac)
        e_ref = np.sqrt(np.diag(cov))
        interior = np.all((sol.x > lo + 1e-6 * e_ref) & (sol.x < hi - 1e-6 * e_ref))
        if not interior:
            continue
        compared += 1
        assert np.max(np.abs(p_fit[i] - sol.x) / e_ref) < 1e-3, i
        np.testing.assert_allclose(e_fit[i], e_ref, rtol=1e-3)
    # blended lines often end with a width on a bound (not compared): still dozens left
    assert compared > (0.8 * n_spec if nl == 2 else 20)


@pytest.mark.parametrize(
    ("nfree", "n", "blas"), [(7, 48, True), (20, 64, True), (70, 64, False), (8, 1500, False)]
)
def test_normal_equations_match_numpy_below_and_above_the_blas_threshold(nfree, n, blas):
    """J J^T and J r equal numpy's whichever way they are summed: BLAS for small problems,
    the single-threaded range loop where BLAS would start threads of its own (the last two
    cases), on a J whose rows are zero outside their ranges."""
    from saffron_xr.fit import _kernel_base as kb

    rng = np.random.default_rng(nfree)
    clo = rng.integers(0, n // 2, nfree).astype(float)
    chi = clo + rng.integers(1, n // 2, nfree)
    clo[0], chi[0] = 0.0, float(n)  # a background row spans every sample
    jmat = np.zeros((nfree, n))
    for a in range(nfree):
        jmat[a, int(clo[a]) : int(chi[a])] = rng.normal(size=int(chi[a] - clo[a]))
    res = rng.normal(size=n)
    jtj = np.full((nfree, nfree), np.nan)
    jtr = np.full(nfree, np.nan)
    assert blas == (nfree * nfree * n < kb._BLAS_GEMM_MAX and nfree * n < kb._BLAS_GEMV_MAX)
    kb._normal_equations(jmat, clo, chi, res, jtj, jtr)
    np.testing.assert_allclose(jtj, jmat @ jmat.T, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(jtr, jmat @ res, rtol=1e-12, atol=1e-12)
