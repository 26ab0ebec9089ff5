"""The fit engine's step (issue 13): full Hessian near the minimum, steps stopped at bounds.

The Levenberg-Marquardt step of the kernel uses, near the minimum, the full Hessian of
chi2 / 2 (J^T J minus the residual-weighted second derivatives of the model), and a step that
would leave the box stops the parameters concerned on their bound and solves again for the
others. Checked here against independent computations: the Hessian against finite
differences of a numpy gradient (blended lines with ties, a fixed parameter, gaps); the
reduced step against ``numpy.linalg.solve``; end to end, the solutions are bounded local
minima for scipy's ``least_squares`` (ties and an amplitude on its bound), an amplitude held
on its bound is CONVERGED_AT_BOUND, and a six-line blend needs fewer iterations than the
Gauss-Newton engine did (counted, not timed).

(Variable projection, the issue's other proposal, was implemented and measured slower on
every benchmark case: see the branch history; it is not in the kernel.)
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
COORDS = {"wavelength": ("wavelength", WAVE, {"units": "Angstrom"})}


def _blend_with_ties():
    """Three blended lines + linear background: width and amplitude of line 3 tied to line
    2, centroid of line 3 tied to line 1 with an offset, the width of line 1 fixed."""
    m = LineModel(background_degree=1)
    m.add_line("fe_10 767.0", amplitude=3.0, centroid=769.3, width=SIGMA_LINE,
               bounds={"amplitude": (0.0, None), "centroid": (769.0, 769.6),
                       "width": (0.2, 0.8)})  # fmt: skip
    m.add_line("fe_11 768.0", amplitude=2.0, centroid=770.0, width=SIGMA_LINE * 1.1,
               bounds={"amplitude": (0.0, None), "centroid": (769.7, 770.3),
                       "width": (0.2, 0.8)})  # fmt: skip
    m.add_line("fe_12 769.0", amplitude=1.0, centroid=770.6, width=SIGMA_LINE,
               bounds={"amplitude": (0.0, None), "centroid": (770.3, 770.9),
                       "width": (0.2, 0.8)})  # fmt: skip
    m.tie_width("fe_12 769.0", "fe_11 768.0", 0.9)
    m.tie_amplitude("fe_12 769.0", "fe_11 768.0", 0.5)
    m.tie_centroid("fe_12 769.0", "fe_10 767.0", 1.3)
    m.fix("fe_10 767.0", "width", SIGMA_LINE)
    return m


def test_full_hessian_matches_finite_differences_of_the_gradient():
    """hmat = J^T J - sum_i r_i d2(w m_i) equals the derivative of the numpy gradient
    -J^T r of chi2 / 2 (central differences), ties and scale factors included."""
    from saffron_xr.fit import _kernels as k
    from saffron_xr.fit._kernel_base import _second_order

    m = _blend_with_ties()
    comp = m.compile(WAVE)
    nl, degree, ref = comp.n_lines, comp.degree, comp.segment_reference[0]
    rng = np.random.default_rng(3)
    truth = np.array([4.0, 769.35, SIGMA_LINE, 2.5, 770.02, SIGMA_LINE * 1.05, 1.25, 770.65,
                      SIGMA_LINE * 0.945, 0.1, 0.01])  # fmt: skip
    clean = numpy_model(WAVE, truth, nl, degree, ref)
    sigma = np.sqrt(PHOTON * clean + FLOOR)
    y = clean + sigma * rng.standard_normal(WAVE.size)
    y[[7, 8, 40]] = np.nan  # gaps
    nw, nf = WAVE.size, comp.n_free
    spec, n, smp, mdl = kernel_scratch(comp, y, sigma, WAVE)
    tmat, const = np.asarray(comp.transform), np.asarray(comp.constant)
    # a point off the minimum, with residuals that are not small
    q = np.linalg.lstsq(tmat, truth - const, rcond=None)[0]
    kind = np.asarray(comp.full_kind)[comp.free_root]
    q = np.where(kind == 1, q + 0.04 * rng.standard_normal(nf),
                 q * (1.0 + 0.05 * rng.standard_normal(nf)))  # fmt: skip
    pfull = np.zeros(comp.n_full)
    lines = k._line_store(nl, nw)
    k._chi2_g(q, n, smp, mdl, pfull, True, lines)
    jac = (np.zeros((nf, n)), np.zeros(nf), np.zeros(nf), np.zeros((nf, nf)), np.zeros(nf))
    k._jacobian_g(q, n, smp, mdl, pfull, jac, True, lines, False)
    hmat = np.tril(jac[3]).copy()
    _second_order(n, smp, mdl, pfull, lines, hmat)
    h_kernel = np.tril(hmat) + np.tril(hmat, -1).T

    ok = np.isfinite(y)
    x, yy, s = WAVE[ok], y[ok], sigma[ok]

    def grad(qq):
        p = tmat @ qq + const
        r = (yy - numpy_model(x, p, nl, degree, ref)) / s
        jf = (numpy_jacobian(x, p, nl, degree, ref) / s[:, None]) @ tmat
        return -jf.T @ r

    h_num = np.empty((nf, nf))
    for j in range(nf):
        step = 1e-5 if kind[j] == 1 else 1e-5 * max(abs(q[j]), 1e-2)  # Angstrom / relative
        e = np.zeros(nf)
        e[j] = step
        h_num[:, j] = (grad(q + e) - grad(q - e)) / (2.0 * step)
    h_num = 0.5 * (h_num + h_num.T)
    norm = np.sqrt(np.outer(np.abs(np.diag(h_num)), np.abs(np.diag(h_num))))
    np.testing.assert_allclose(h_kernel / norm, h_num / norm, rtol=0, atol=2e-5)
    # the second-order term matters here (else this test would not test it)
    jtj = np.tril(jac[3]) + np.tril(jac[3], -1).T
    assert np.max(np.abs(jtj - h_num) / norm) > 1e-2


def test_a_step_leaving_the_box_stops_on_the_bounds_and_solves_the_rest():
    """The reduced step: parameters that would leave the box sit on their bound, the others
    solve the damped system with those fixed (numpy), and the step stays in the box."""
    from saffron_xr.fit._kernels import _stop_at_bounds

    rng = np.random.default_rng(8)
    nf = 9
    for trial in range(20):
        a = rng.standard_normal((30, nf))
        h = a.T @ a
        g = 3.0 * rng.standard_normal(nf)
        q = rng.uniform(-1.0, 1.0, nf)
        lower = q - rng.uniform(0.05, 2.0, nf)
        upper = q + rng.uniform(0.05, 2.0, nf)
        lower[0] = -np.inf  # an unbounded parameter
        free = np.ones(nf)
        free[1] = 0.0  # frozen by the active set: no step
        lmb, floor = 1e-3, 1e-12
        damp = h + lmb * np.diag(np.maximum(np.diag(h), floor))
        fr = free == 1.0
        delta = np.zeros(nf)
        delta[fr] = np.linalg.solve(damp[np.ix_(fr, fr)], g[fr])
        hmat = np.tril(h).copy()
        d = delta.copy()
        any_out = _stop_at_bounds(q, d, free, np.empty(nf), np.empty(nf), hmat, h, g,
                                  np.empty((nf, nf)), np.empty(nf), lower, upper, lmb,
                                  floor)  # fmt: skip
        left = (q + delta < lower) | (q + delta > upper)
        assert any_out == bool(left[fr].any()), trial
        assert d[1] == 0.0
        new = q + d
        assert np.all(new >= lower - 1e-12) and np.all(new <= upper + 1e-12), trial
        on = np.isclose(new, lower, rtol=0, atol=1e-12) | np.isclose(new, upper, rtol=0,
                                                                     atol=1e-12)  # fmt: skip
        on &= fr
        assert on[left & fr].all(), trial  # those that left sit on their bound
        rest = fr & ~on
        if rest.any():
            rhs = g[rest] - h[np.ix_(rest, on)] @ d[on]
            expect = np.linalg.solve(damp[np.ix_(rest, rest)], rhs)
            np.testing.assert_allclose(d[rest], expect, rtol=1e-9, atol=1e-12)


def _fit_table(ds, nl, degree):
    cols = []
    for ln in range(nl):
        for kind in ("amplitude", "centroid", "width"):
            cols.append(ds[kind].isel(line=ln).values)
    for d in range(degree + 1):
        cols.append(ds.background.isel(degree=d).values)
    return np.stack(cols, -1)


def test_solutions_with_ties_and_an_amplitude_on_its_bound_are_scipy_minima():
    """A blend with ties where the third line (tied amplitude) is absent: every converged
    solution is a bounded local minimum for scipy's least_squares started there (it moves
    less than 1e-3 sigma, chi2 does not go down), and amplitudes held at 0 are flagged."""
    m = _blend_with_ties()
    comp = m.compile(WAVE)
    nl, degree, ref = comp.n_lines, comp.degree, comp.segment_reference[0]
    tmat, const = np.asarray(comp.transform), np.asarray(comp.constant)
    rng = np.random.default_rng(21)
    n_spec = 60
    truth = np.empty((n_spec, comp.n_full))
    truth[:, 0] = rng.uniform(3.0, 6.0, n_spec)
    truth[:, 1] = 769.3 + rng.normal(0, 0.03, n_spec)
    truth[:, 2] = SIGMA_LINE
    truth[:, 3] = rng.uniform(-0.3, 0.3, n_spec)  # line 2 absent or nearly (tied line 3)
    truth[:, 4] = 770.0 + rng.normal(0, 0.03, n_spec)
    truth[:, 5] = SIGMA_LINE * 1.1
    truth[:, 6] = 0.5 * truth[:, 3]
    truth[:, 7] = truth[:, 1] + 1.3
    truth[:, 8] = 0.9 * truth[:, 5]
    truth[:, 9] = rng.uniform(0.05, 0.2, n_spec)
    truth[:, 10] = rng.uniform(-0.02, 0.02, n_spec)
    clean = np.stack([numpy_model(WAVE, p, nl, degree, ref) for p in truth])
    sigma = np.sqrt(PHOTON * np.clip(clean, 0.0, None) + FLOOR)
    y = clean + sigma * rng.standard_normal(clean.shape)
    ds = fit_lines(xr.DataArray(y, dims=("y", "wavelength"), coords=COORDS), m,
                   error=xr.DataArray(sigma, dims=("y", "wavelength"), coords=COORDS),
                   ftol=1e-10, xtol=1e-8, max_iter=200)  # fmt: skip
    status = ds.status.values
    p_fit = _fit_table(ds, nl, degree)
    lo, hi = np.asarray(comp.free_lower), np.asarray(comp.free_upper)
    amp2 = ds.amplitude.isel(line=1).values
    at_zero = amp2 == 0.0
    assert at_zero.sum() >= 10  # the bound is active in many spectra
    assert np.all(status[at_zero] == int(FitStatus.CONVERGED_AT_BOUND))
    assert np.all(ds.at_bound.isel(line=1).values[at_zero])
    assert np.all(np.isnan(ds.amplitude_err.isel(line=1).values[at_zero]))
    checked = 0
    for i in range(n_spec):
        if status[i] not in (int(FitStatus.CONVERGED), int(FitStatus.CONVERGED_AT_BOUND)):
            continue
        q0 = np.linalg.lstsq(tmat, p_fit[i] - const, rcond=None)[0]
        np.testing.assert_allclose(tmat @ q0 + const, p_fit[i], rtol=1e-12, atol=1e-12)

        def resid(qq, yy=y[i], s=sigma[i]):
            return (numpy_model(WAVE, tmat @ qq + const, nl, degree, ref) - yy) / s

        def jac(qq, s=sigma[i]):
            return (numpy_jacobian(WAVE, tmat @ qq + const, nl, degree, ref) / s[:, None]) @ tmat

        start = np.clip(q0, lo, hi)
        # with line 2 (and its tied line 3) at zero amplitude, the width they share and the
        # centroid of line 2 do nothing: they stay where they are (free parameters 3, 4)
        var = np.ones(start.size, bool)
        if at_zero[i]:
            var[[3, 4]] = False

        def sub(qv, start=start, var=var):
            full = start.copy()
            full[var] = qv
            return full

        sol = least_squares(lambda qv, r=resid: r(sub(qv)), start[var],
                            jac=lambda qv, j=jac, v=var: j(sub(qv))[:, v],
                            bounds=(lo[var], hi[var]), method="trf", xtol=1e-15, ftol=1e-15,
                            gtol=1e-15, x_scale="jac")  # fmt: skip
        chi2_ours = np.sum(resid(start) ** 2)
        assert sol.cost * 2.0 > chi2_ours - 1e-6 * chi2_ours, i  # no lower chi2 nearby
        jm = jac(sub(sol.x))[:, var]
        inside = (sol.x > lo[var]) & (sol.x < hi[var])
        cov = np.linalg.inv(jm[:, inside].T @ jm[:, inside])
        err = np.sqrt(np.diag(cov))
        assert np.max(np.abs(sol.x[inside] - start[var][inside]) / err) < 1e-3, i
        checked += 1
    assert checked >= 0.9 * n_spec


def _six_line_blend(n_spec, seed):
    centres = [767.6, 768.5, 769.3, 770.2, 771.0, 772.1]
    rng = np.random.default_rng(seed)
    nl = len(centres)
    ref = 0.5 * (WAVE.min() + WAVE.max())
    truth = np.empty((n_spec, 3 * nl + 2))
    truth[:, 0 : 3 * nl : 3] = rng.uniform(2.0, 12.0, size=(n_spec, nl))
    truth[:, 3 : 3 * nl : 3] *= rng.uniform(0.3, 1.0, size=(n_spec, nl - 1))
    truth[:, 1 : 3 * nl : 3] = np.array(centres) + rng.normal(0.0, 0.03, size=(n_spec, nl))
    truth[:, 2 : 3 * nl : 3] = SIGMA_LINE * rng.uniform(0.9, 1.1, size=(n_spec, nl))
    truth[:, 3 * nl] = rng.uniform(0.05, 0.2, n_spec)
    truth[:, 3 * nl + 1] = rng.uniform(-0.02, 0.02, n_spec)
    clean = np.stack([numpy_model(WAVE, p, nl, 1, ref) for p in truth])
    sigma = np.sqrt(PHOTON * np.clip(clean, 0.0, None) + FLOOR)
    y = clean + sigma * rng.standard_normal(clean.shape)
    y[rng.random(y.shape) < 0.01] = np.nan
    m = LineModel(background_degree=1)
    for k, c in enumerate(centres):
        m.add_line(f"fe_{10 + k} {700 + k}.0", amplitude=4.2, centroid=c + 0.02,
                   width=SIGMA_LINE * 1.1,
                   bounds={"amplitude": (0.0, None), "centroid": (c - 0.3, c + 0.3),
                           "width": (0.6 * SIGMA_LINE, 2.5 * SIGMA_LINE)})  # fmt: skip
    da = xr.DataArray(y, dims=("y", "wavelength"), coords=COORDS)
    err = xr.DataArray(sigma, dims=("y", "wavelength"), coords=COORDS)
    return da, err, m


@pytest.mark.parametrize("seed", [1, 2])
def test_six_line_blend_needs_fewer_iterations_than_gauss_newton(seed):
    """Iterations counted on 400 blended six-line spectra (the benchmark's blend6 case),
    default tolerances. Measured on these data: Gauss-Newton engine (before issue 13) 15.3
    and 15.8 per spectrum, this engine 11.0 and 11.2; the bound asserted leaves room for
    small changes, not for a return to the old rate. Every fit is usable, as before."""
    da, err, m = _six_line_blend(400, seed)
    ds = fit_lines(da, m, error=err)
    usable = np.isin(ds.status.values, [int(s) for s in FitStatus.usable()])
    assert usable.all()
    assert ds.n_iter.values[usable].mean() < 13.0
