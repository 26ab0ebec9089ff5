"""Honest fits (issue 12): vanished lines, bounds, statuses, detection, model-based weights.

Expectations come from the truth of seeded synthetic data (Monte Carlo), from scipy, or from
hand calculations; none copies the kernel's formulas.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from kernel_helpers import kernel_scratch
from scipy.optimize import least_squares

from saffron_xr import FitStatus, LineModel, fit_lines

UNITS = "W m-2 sr-1 nm-1"
# SPICE SW sampling (CDELT3 = 0.0097517 nm) and a 0.8 Angstrom FWHM line
WAVE = 770.0 + 0.097517 * (np.arange(64) - 32)
SIGMA_LINE = 0.8 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
# SPICE noise model terms for SW, RADCAL 38.15, 4.7 s, no binning, k = 2 (Huang et al. 2023:
# G = 3.58 DN/photon, F = 1, R = 6.9 DN, D = 0.89 DN/s), computed here by hand
PHOTON = 1.0 * 3.58 / 38.15
FLOOR = 2 * 1 * (6.9**2 + 0.89 * 4.7) / 38.15**2


def gauss(a, c, w, wave=WAVE):
    return np.asarray(a)[..., None] * np.exp(-0.5 * ((wave - np.asarray(c)[..., None]) / w) ** 2)


def as_data(y, wave=WAVE):
    coords = {"wavelength": ("wavelength", wave, {"units": "Angstrom"})}
    return xr.DataArray(y, dims=("y", "wavelength"), coords=coords, attrs={"units": UNITS})


def two_line_model(amp_lower=0.0):
    m = LineModel(background_degree=0)
    m.add_line("ne_8 770.42", amplitude=5.0, centroid=769.6, width=SIGMA_LINE,
               bounds={"amplitude": (amp_lower, None), "centroid": (769.2, 770.0),
                       "width": (0.25, 0.8)})  # fmt: skip
    m.add_line("mg_8 771.3", amplitude=1.0, centroid=771.0, width=SIGMA_LINE,
               bounds={"amplitude": (amp_lower, None), "centroid": (770.6, 771.4),
                       "width": (0.25, 0.8)})  # fmt: skip
    return m


def test_an_absent_line_never_costs_the_present_line_its_fit():
    """Issue 12: 200 spectra, second line absent: no pixel may lose the strong line."""
    rng = np.random.default_rng(12)
    n = 300
    amp = rng.uniform(4.0, 8.0, n)
    cen = 769.6 + rng.normal(0.0, 0.03, n)
    clean = gauss(amp, cen, SIGMA_LINE) + 0.5
    sigma = np.sqrt(PHOTON * clean + FLOOR)
    y = clean + sigma * rng.standard_normal(clean.shape)
    ds = fit_lines(as_data(y), two_line_model(), error=as_data(sigma))
    st = ds.status.values
    assert np.isin(st, [int(s) for s in FitStatus.usable()]).all()
    strong = ds.isel(line=0)
    for name in ("amplitude", "centroid", "width"):
        assert np.isfinite(strong[name].values).all(), name
        assert np.isfinite(strong[name + "_err"].values).all(), name
    pull = (strong.amplitude.values - amp) / strong.amplitude_err.values
    assert 0.8 < np.std(pull) < 1.25 and abs(np.mean(pull)) < 0.25
    weak = ds.isel(line=1)
    vanished = weak.amplitude.values == 0.0
    assert vanished.sum() > 20  # the situation that used to give SINGULAR for the pixel
    # a vanished line: its centroid and width are unidentified (NaN errors), not detected
    assert np.isnan(weak.centroid_err.values[vanished]).all()
    assert np.isnan(weak.width_err.values[vanished]).all()
    assert not weak.detected.values[vanished].any()
    assert (weak.significance.values[vanished] == 0).all()
    # and the absent line is (almost) never "detected" at the default 5 sigma
    assert weak.detected.values.mean() < 0.02
    assert strong.detected.values.all()


def test_parameter_on_a_bound_has_nan_error_and_flag_on_every_exit_path():
    rng = np.random.default_rng(3)
    n = 200
    clean = gauss(np.full(n, 6.0), np.full(n, 769.6), 0.2) + 0.5  # narrower than the bound
    sigma = np.sqrt(PHOTON * clean + FLOOR)
    y = clean + sigma * rng.standard_normal(clean.shape)
    m = LineModel(background_degree=0)
    m.add_line("ne_8 770.42", amplitude=5.0, centroid=769.6, width=0.34,
               bounds={"centroid": (769.2, 770.0), "width": (0.3, 0.8)})  # fmt: skip
    for max_iter in (100, 1):
        ds = fit_lines(as_data(y), m, error=as_data(sigma), max_iter=max_iter)
        pinned = ds.width.values[0] <= 0.3
        assert pinned.mean() > 0.9
        assert ds.at_bound.values[0][pinned].all()
        assert np.isnan(ds.width_err.values[0][pinned]).all()
        assert np.isfinite(ds.amplitude_err.values[0][pinned]).all()
        if max_iter == 100:
            assert (ds.status.values[pinned] == FitStatus.CONVERGED_AT_BOUND).all()
        else:
            assert (ds.status.values == FitStatus.MAX_ITER).any()
            mi = ds.status.values == FitStatus.MAX_ITER
            assert ds.at_bound.values[0][mi & pinned].all()


def test_singular_drops_only_the_degenerate_parameters():
    """Two lines with the same fixed centroid and width cannot be told apart."""
    rng = np.random.default_rng(5)
    clean = gauss(np.full(20, 6.0), np.full(20, 769.6), SIGMA_LINE) + 0.5
    sigma = np.sqrt(PHOTON * clean + FLOOR)
    y = clean + sigma * rng.standard_normal(clean.shape)
    m = LineModel(background_degree=0)
    m.add_line("ne_8 770.42", amplitude=3.0, centroid=769.6, width=SIGMA_LINE)
    m.add_line("o_2 770.0", amplitude=3.0, centroid=769.6, width=SIGMA_LINE)
    for line in ("ne_8 770.42", "o_2 770.0"):
        m.fix(line, "centroid", 769.6)
        m.fix(line, "width", SIGMA_LINE)
    ds = fit_lines(as_data(y), m, error=as_data(sigma))
    assert (ds.status.values == FitStatus.SINGULAR).all()
    assert np.isfinite(ds.background_err.values).all()
    assert np.isnan(ds.amplitude_err.values).any(axis=0).all()
    total = ds.amplitude.sum("line").values
    np.testing.assert_allclose(total.mean(), 6.0, rtol=0.05)


def test_significance_is_the_delta_chi2_of_removing_the_line():
    """sqrt(chi2 without the line - chi2 with it), both minimised by scipy."""
    rng = np.random.default_rng(8)
    clean = gauss(np.array([1.2]), np.array([769.6]), SIGMA_LINE)[0] + 0.5
    sigma = np.sqrt(PHOTON * clean + FLOOR)
    y = clean + sigma * rng.standard_normal(clean.shape)
    m = LineModel(background_degree=1)
    m.add_line("ne_8 770.42", amplitude=1.0, centroid=769.6, width=SIGMA_LINE,
               bounds={"centroid": (769.2, 770.0), "width": (0.25, 0.8)})  # fmt: skip
    ds = fit_lines(as_data(y[None]), m, error=as_data(sigma[None]))
    c, w = float(ds.centroid[0, 0]), float(ds.width[0, 0])
    ref = 0.5 * (WAVE.min() + WAVE.max())

    def res(p, with_line):
        model = p[0] + p[1] * (WAVE - ref)
        if with_line:
            model = model + p[2] * np.exp(-0.5 * ((WAVE - c) / w) ** 2)
        return (y - model) / sigma

    with_line = least_squares(res, [0.5, 0.0, 1.0], args=(True,))
    without = least_squares(res, [0.5, 0.0], args=(False,))
    expected = np.sqrt(2 * without.cost - 2 * with_line.cost)
    np.testing.assert_allclose(float(ds.significance[0, 0]), expected, rtol=1e-4)
    assert bool(ds.detected[0, 0]) == (expected >= 5.0)


def _spice_like(amp, n, seed, bg=0.01):
    rng = np.random.default_rng(seed)
    clean = np.broadcast_to(gauss(np.array([amp]), np.array([770.05]), SIGMA_LINE)[0] + bg,
                            (n, WAVE.size))  # fmt: skip
    sigma = np.sqrt(PHOTON * clean + FLOOR)
    y = clean + sigma * rng.standard_normal(clean.shape)
    # the data-based error as the SPICE model gives it, |I| rule for negative samples
    err = np.where(
        y >= 0, np.sqrt(PHOTON * np.clip(y, 0, None) + FLOOR), np.abs(y) + np.sqrt(FLOOR)
    )
    # guess_model's default width limits, by hand: the narrowest width w0 is the SW
    # instrumental FWHM 0.761 A (SPICE release notes) (+) Ne VIII thermal at log T 5.8;
    # hard bounds 0.7 w0 and 4 x the guess, soft minimum 0.85 w0 with tolerance 0.05 w0
    w0 = np.hypot(0.761 / 2.35482, 770.428 * np.sqrt(1.380649e-23 * 10**5.8 / (20.18 * 1.66054e-27))
                  / 2.99792458e8)  # fmt: skip
    m = LineModel(background_degree=0)
    m.add_line("ne_8 770.42", amplitude=amp, centroid=770.0, width=0.34,
               bounds={"centroid": (769.6, 770.4), "width": (0.7 * w0, 4 * 0.34)})  # fmt: skip
    m.set_soft_min_width("ne_8 770.42", 0.85 * w0, 0.05 * w0)
    noise = xr.Dataset({"photon": xr.DataArray(PHOTON), "floor": xr.DataArray(FLOOR)})
    return as_data(y), as_data(err), m, noise, sigma


@pytest.mark.slow
def test_model_weights_remove_the_bias_of_data_weights():
    """Issue 12 acceptance: mean radiance bias < 3 % at peak amplitude 3 (was -7 %)."""
    amp = 3.0
    data, err, m, noise, _ = _spice_like(amp, 3000, seed=21)
    truth = amp * SIGMA_LINE * np.sqrt(2 * np.pi)
    biased = fit_lines(data, m, error=err)
    honest = fit_lines(data, m, error=err, noise=noise)
    for ds, low, high in ((biased, -0.5, -0.04), (honest, -0.03, 0.03)):
        ok = np.isin(ds.status.values, [int(s) for s in FitStatus.usable()])
        rad = (ds.amplitude * ds.width).values[0][ok] * np.sqrt(2 * np.pi)
        assert low < rad.mean() / truth - 1 < high
    # the background is unbiased too (< 0.2 sigma of its scatter)
    bg = honest.background.values[0]
    assert abs(bg.mean() - 0.01) < 0.2 * bg.std()
    assert json_option(honest, "noise_weights") == "model"


def test_a_model_weighted_fit_is_the_minimum_for_the_weights_of_its_model():
    """With model weights the fit is refitted after each reweighting; only the last pass
    must converge at ftol, xtol (the earlier ones stop at 0.05 sigma: the new weights move
    the minimum anyway). At the fit, chi2 with sigma**2 = photon * model + floor from the
    fitted model has its minimum there: scipy from the fit, at tight tolerances, moves the
    parameters by a median 0.0014 and a 99th percentile 0.012 of their errors (xtol 3e-3;
    the last pass's weights come from the model of the pass before). A last pass stopped at
    0.05 sigma would give 0.010 and 0.050."""
    rng = np.random.default_rng(44)
    n = 300
    truth = np.array([8.0, 770.05, SIGMA_LINE, 0.3])

    def model(p):
        return p[0] * np.exp(-0.5 * ((WAVE - p[1]) / p[2]) ** 2) + p[3]

    clean = model(truth)
    sigma = np.sqrt(PHOTON * clean + FLOOR)
    y = clean + sigma * rng.standard_normal((n, WAVE.size))
    err = np.sqrt(PHOTON * np.clip(y, 0, None) + FLOOR)
    m = LineModel(background_degree=0)
    m.add_line("ne_8 770.42", amplitude=5.0, centroid=770.0, width=0.3,
               bounds={"centroid": (769.6, 770.4), "width": (0.1, 1.0)})  # fmt: skip
    noise = xr.Dataset({"photon": xr.DataArray(PHOTON), "floor": xr.DataArray(FLOOR)})
    ds = fit_lines(as_data(y), m, error=as_data(err), noise=noise)
    assert np.all(ds.status.values == int(FitStatus.CONVERGED))
    names = ("amplitude", "centroid", "width")
    shifts = []
    for i in range(n):
        p = np.array([float(ds[k].values[0, i]) for k in names] + [float(ds.background[0, i])])
        e = np.array([float(ds[k + "_err"].values[0, i]) for k in names]
                     + [float(ds.background_err[0, i])])  # fmt: skip
        s = np.sqrt(PHOTON * np.maximum(model(p), 0.0) + FLOOR)
        ref = least_squares(lambda q, i=i, s=s: (y[i] - model(q)) / s, p, method="lm",
                            xtol=1e-12, ftol=1e-12, gtol=1e-12)  # fmt: skip
        shifts.append(np.max(np.abs(ref.x - p) / e))
    assert np.median(shifts) < 0.004 and np.percentile(shifts, 99) < 0.025, np.percentile(
        shifts, [50, 99]
    )


@pytest.mark.slow
@pytest.mark.parametrize("snr", [3, 5])
def test_pulls_with_model_weights_at_low_signal(snr):
    """Pulls 0.95-1.05 where detected; amplitude x width bias < 3 % at peak S/N 3.

    With guess_model's default width limits no detected width sits on a hard bound. At
    peak S/N 3 the soft minimum holds up the widths the noise would push below it, while
    their errors stay the data's: the width pulls are conservative there (0.92), and held
    to 0.95-1.05 from S/N 5.
    """
    # peak S/N: amplitude a with a / sqrt(PHOTON a + FLOOR) = snr
    a = (snr**2 * PHOTON + np.sqrt(snr**4 * PHOTON**2 + 4 * snr**2 * FLOOR)) / 2
    data, err, m, noise, _ = _spice_like(a, 4000, seed=33)
    ds = fit_lines(data, m, error=err, noise=noise)
    det = ds.detected.values[0]
    assert det.mean() > 0.95
    truth = {"amplitude": a, "centroid": 770.05, "width": SIGMA_LINE}
    assert ds.at_bound.values[0][det].mean() < 0.005
    good = det
    for name, value in truth.items():
        pull = (ds[name].values[0][good] - value) / ds[name + "_err"].values[0][good]
        low = 0.90 if (name == "width" and snr == 3) else 0.945
        assert low < np.std(pull) < 1.05, (name, np.std(pull))
        # the width estimate is slightly low at low S/N (-0.11 sigma at S/N 5)
        assert abs(np.mean(pull)) < 0.15, (name, np.mean(pull))
    ok = np.isin(ds.status.values, [int(s) for s in FitStatus.usable()])
    prod = (ds.amplitude * ds.width).values[0][ok]
    assert abs(prod.mean() / (a * SIGMA_LINE) - 1) < 0.03
    # reduced chi2 of a correct noise model: the median of chi2_60 / 60 is 0.989
    assert 0.95 < np.median(ds.chi2.values) < 1.03


def json_option(ds, key):
    import json

    return json.loads(ds.attrs["fit_options"])[key]


def test_full_covariance_matches_scipy():
    rng = np.random.default_rng(9)
    clean = gauss(np.array([6.0]), np.array([769.6]), SIGMA_LINE)[0]
    clean = clean + gauss(np.array([2.0]), np.array([770.3]), SIGMA_LINE)[0] + 0.5
    sigma = np.sqrt(PHOTON * clean + FLOOR)
    y = clean + sigma * rng.standard_normal(clean.shape)
    m = LineModel(background_degree=0)
    m.add_line("ne_8 770.42", amplitude=5.0, centroid=769.6, width=SIGMA_LINE,
               bounds={"centroid": (769.2, 770.0), "width": (0.25, 0.8)})  # fmt: skip
    m.add_line("mg_8 771.3", amplitude=1.0, centroid=770.3, width=SIGMA_LINE,
               bounds={"centroid": (770.0, 770.6), "width": (0.25, 0.8)})  # fmt: skip
    ds = fit_lines(as_data(y[None]), m, error=as_data(sigma[None]), covariance=True,
                   ftol=1e-12, xtol=1e-10)  # fmt: skip
    p = np.array([float(ds[k][i, 0]) for i in range(2) for k in ("amplitude", "centroid", "width")]
                 + [float(ds.background[0, 0])])  # fmt: skip

    def res(q):
        model = q[6] + sum(q[3 * i] * np.exp(-0.5 * ((WAVE - q[3 * i + 1]) / q[3 * i + 2]) ** 2)
                           for i in range(2))  # fmt: skip
        return (y - model) / sigma

    fit = least_squares(res, p, xtol=1e-14, ftol=1e-14, gtol=1e-14)
    jac = fit.jac
    cov = np.linalg.inv(jac.T @ jac)
    got = ds.covariance.isel(y=0).values
    np.testing.assert_allclose(got, cov, rtol=2e-3, atol=1e-12)
    assert list(ds.covariance.param.values[:3]) == [
        "ne_8 770.42/amplitude",
        "ne_8 770.42/centroid",
        "ne_8 770.42/width",
    ]


def test_false_detections_on_noise_only_spectra():
    """The default 3-sigma threshold on spectra without a line: under 1.5 % detected."""
    rng = np.random.default_rng(1)
    n = 4000
    clean = np.zeros((n, WAVE.size)) + 0.05
    sigma = np.sqrt(PHOTON * clean + FLOOR)
    y = clean + sigma * rng.standard_normal(clean.shape)
    m = LineModel(background_degree=1)
    m.add_line("ne_8 770.42", amplitude=0.5, centroid=770.0, width=0.34,
               bounds={"centroid": (769.6, 770.4), "width": (0.8 * 0.761 / 2.3548, 1.0)})  # fmt: skip
    ds = fit_lines(as_data(y), m, error=as_data(sigma))
    assert ds.attrs["detection_threshold"] == 3.0
    assert ds.detected.values.mean() < 0.015
    assert (ds.significance.values >= 5).mean() < 0.001


def test_no_accepted_step_is_no_step_not_converged():
    """Issue 12: a fit where no step was ever accepted must not report CONVERGED.

    Driven through the kernel's own stages with a gradient that points uphill (as a wrong
    derivative would): every trial raises chi2, so the start is returned as NO_STEP.
    """
    from saffron_xr.fit import _kernels as k

    rng = np.random.default_rng(2)
    clean = gauss(np.array([5.0]), np.array([769.6]), SIGMA_LINE)[0] + 0.5
    sigma = np.sqrt(PHOTON * clean + FLOOR)
    y = clean + sigma * rng.standard_normal(clean.shape)
    m = LineModel(background_degree=0)
    m.add_line("ne_8 770.42", amplitude=3.0, centroid=769.5, width=0.3,
               bounds={"centroid": (769.2, 770.0), "width": (0.25, 0.8)})  # fmt: skip
    comp = m.compile(WAVE)
    nf = comp.n_free
    _spec, n, smp, mdl = kernel_scratch(comp, y, sigma, WAVE)
    q = np.array(comp.initial, dtype=float)[comp.free_root]
    pfull = np.zeros(comp.n_full)
    jac = (np.zeros((nf, n)), np.zeros(nf), np.zeros(nf), np.zeros((nf, nf)), np.zeros(nf))
    tmp = (np.zeros(nf), np.zeros(nf), np.zeros(nf), np.zeros(nf), np.zeros((nf, nf)))
    chi2 = k._chi2(q, n, smp, mdl, pfull, True)
    k._jacobian(q, n, smp, mdl, pfull, jac, True)
    honest = k._iterate(q.copy(), chi2, n, smp, mdl, pfull, jac, tmp, comp.free_lower,
                        comp.free_upper, 50, 1e-5, 3e-3, True)  # fmt: skip
    assert honest[0] == FitStatus.CONVERGED and honest[2] < chi2
    k._chi2(q, n, smp, mdl, pfull, True)
    k._jacobian(q, n, smp, mdl, pfull, jac, True)
    jac[4][:] *= -1.0  # J^T r pointing uphill
    status, n_iter, chi2_end = k._iterate(q, chi2, n, smp, mdl, pfull, jac, tmp,
                                          comp.free_lower, comp.free_upper, 50, 1e-5, 3e-3,
                                          True)  # fmt: skip
    assert status == FitStatus.NO_STEP
    assert chi2_end == chi2 and n_iter == 1


# ---------------------------------------------------------------- soft lower width bound
def _one_line_model(soft=None, width_bounds=(0.1, 1.5)):
    m = LineModel(background_degree=0)
    m.add_line("ne_8 770.42", amplitude=2.0, centroid=770.0, width=SIGMA_LINE,
               bounds={"centroid": (769.6, 770.4), "width": width_bounds})  # fmt: skip
    if soft is not None:
        m.set_soft_min_width("ne_8 770.42", *soft)
    return m


def test_soft_min_width_matches_a_hand_written_penalised_fit():
    """The kernel minimises chi2 + ((w0 - w) / tol)**2 below w0: compare with scipy on the
    same objective written out here, on spectra that want a narrower line than w0."""
    rng = np.random.default_rng(21)
    w0, tol = 1.2 * SIGMA_LINE, 0.1 * SIGMA_LINE
    n = 40
    amp = rng.uniform(1.5, 3.0, n)
    clean = gauss(amp, 770.0, SIGMA_LINE) + 0.3
    sigma = np.sqrt(PHOTON * clean + FLOOR)
    y = clean + sigma * rng.standard_normal(clean.shape)
    ds = fit_lines(as_data(y), _one_line_model((w0, tol)), error=as_data(sigma), ftol=1e-12,
                   xtol=1e-10).compute()  # fmt: skip
    held = 0
    for i in range(n):

        def resid(p, i=i):
            model = p[0] * np.exp(-0.5 * ((WAVE - p[1]) / p[2]) ** 2) + p[3]
            return np.append((y[i] - model) / sigma[i], max(w0 - p[2], 0.0) / tol)

        ref = least_squares(resid, [amp[i], 770.0, w0, 0.3], method="trf", x_scale="jac",
                            bounds=([-np.inf, 769.6, 0.1, -np.inf], [np.inf, 770.4, 1.5, np.inf]),
                            ftol=1e-14, xtol=1e-14, gtol=1e-14)  # fmt: skip
        fit = ds.isel(y=i, line=0)
        err_a = float(fit.amplitude_err)
        assert abs(float(fit.amplitude) - ref.x[0]) < 1e-3 * err_a
        assert abs(float(fit.width) - ref.x[2]) < 1e-3 * float(fit.width_err)
        # the reported chi2 is the data's alone (the penalty is not in it)
        data_chi2 = np.sum(ref.fun[:-1] ** 2) / (WAVE.size - 4)
        assert float(ds.chi2[i]) == pytest.approx(data_chi2, rel=1e-4)
        # errors are the data's: (J^T J)^-1 of the data residuals alone at the solution,
        # also where the penalty holds the width up
        jac = ref.jac[:-1]
        data_err = np.sqrt(np.diag(np.linalg.inv(jac.T @ jac)))
        assert float(fit.width_err) == pytest.approx(data_err[2], rel=2e-3)
        assert float(fit.amplitude_err) == pytest.approx(data_err[0], rel=2e-3)
        if ref.x[2] < w0:
            held += 1
            assert int(ds.status[i]) == FitStatus.CONVERGED
    assert held > n // 4  # the truth (1 / 1.2 of w0) is below w0: many fits feel the penalty


def test_a_step_across_the_soft_minimum_is_solved_with_its_penalty():
    """Two blended lines whose data want widths below the soft minimum, started above it:
    the plain step overshoots into the penalty it did not model. Solved again with the
    penalty (`_soft_crossing`), the fits converge in fewer iterations: 8.2 on average
    here, 9.5 when such trials were rejected and the damping grew instead (the S IV /
    Mg IX window of a composition raster: 18.4 -> 12.9). The minimum itself is checked
    against scipy in ``test_soft_min_width_matches_a_hand_written_penalised_fit``."""
    rng = np.random.default_rng(8)
    w0, tol = 1.25 * SIGMA_LINE, 0.05 * SIGMA_LINE
    n = 400
    a1, a2 = rng.uniform(4.0, 10.0, n), rng.uniform(4.0, 10.0, n)
    c2 = 769.8 + 2.0 * SIGMA_LINE
    clean = gauss(a1, 769.8, SIGMA_LINE) + gauss(a2, c2, SIGMA_LINE) + 0.3
    sigma = np.sqrt(PHOTON * clean + FLOOR)
    y = clean + sigma * rng.standard_normal(clean.shape)
    m = LineModel(background_degree=0)
    for name, c in (("a 769.80", 769.8), ("b 770.10", c2)):
        m.add_line(name, amplitude=6.0, centroid=c, width=1.6 * SIGMA_LINE,
                   bounds={"centroid": (c - 0.3, c + 0.3), "width": (0.1, 1.5)})  # fmt: skip
        m.set_soft_min_width(name, w0, tol)
    ds = fit_lines(as_data(y), m, error=as_data(sigma), moments=False).compute()
    assert (ds.status == FitStatus.CONVERGED).all()
    assert float((ds.width < w0).mean()) > 0.9  # the penalty holds them: the case in point
    assert float(ds.n_iter.mean()) < 8.8


def test_soft_min_width_keeps_faint_lines_off_the_hard_bound():
    """Monte Carlo, truth at the narrowest physical width w0, with the defaults of
    guess_model (hard bound 0.7 w0, soft minimum 0.85 w0 with tolerance 0.05 w0). At peak
    S/N ~1.7 a hard bound alone catches many widths, the soft minimum almost none; at peak
    S/N 3 the radiance (amplitude x width) stays unbiased to < 3 % either way."""
    rng = np.random.default_rng(22)
    n = 1000
    lo = 0.7 * SIGMA_LINE
    soft_min = (0.85 * SIGMA_LINE, 0.05 * SIGMA_LINE)
    for amp, check in ((0.6, "bound"), (1.35, "bias")):
        clean = gauss(np.full(n, amp), 770.0, SIGMA_LINE) + 0.05
        sigma = np.sqrt(PHOTON * np.clip(clean, 0, None) + FLOOR)
        y = clean + sigma * rng.standard_normal(clean.shape)
        peak_snr = amp / np.sqrt(PHOTON * (amp + 0.05) + FLOOR)
        fits = {
            name: fit_lines(
                as_data(y), _one_line_model(soft, (lo, 4 * SIGMA_LINE)), error=as_data(sigma)
            ).compute()  # fmt: skip
            for name, soft in (("hard", None), ("soft", soft_min))
        }
        if check == "bound":
            assert 1.5 < peak_snr < 1.9
            on_lo = {k: np.mean(np.isclose(ds.width.isel(line=0).values, lo)) for k, ds in
                     fits.items()}  # fmt: skip
            assert on_lo["hard"] > 0.15 and on_lo["soft"] < 0.01, on_lo
        else:
            assert 2.8 < peak_snr < 3.2
            for name, ds in fits.items():
                usable = np.isin(ds.status.values, [int(s) for s in FitStatus.usable()])
                aw = (ds.amplitude * ds.width).isel(line=0).values[usable]
                assert abs(np.mean(aw) / (amp * SIGMA_LINE) - 1) < 0.03, name


def test_soft_min_width_model_api():
    m = _one_line_model((0.3, 0.03))
    assert m.line_info("ne_8 770.42")["soft_min_width"] == (0.3, 0.03)
    back = LineModel.from_json(m.to_json())
    assert back == m and back.line_info("ne_8 770.42")["soft_min_width"] == (0.3, 0.03)
    c = m.compile(WAVE)
    f = int(c.root[2])  # the width's free parameter
    assert c.free_soft_min[f] == 0.3 and c.free_soft_inv[f] == pytest.approx(1 / 0.03)
    assert (np.delete(c.free_soft_inv, f) == 0).all()
    for bad in ((0.0, 0.01), (0.3, 0.0), (np.nan, 0.1), (0.3, None)):
        with pytest.raises(ValueError, match="set_soft_min_width"):
            m.set_soft_min_width("ne_8 770.42", *bad)
    m.set_soft_min_width("ne_8 770.42", None)
    assert m.line_info("ne_8 770.42")["soft_min_width"] is None
    assert "soft_min_width" not in m.to_dict()["lines"][0]
    # a width tied with a factor: the soft minimum maps through the tie
    t = LineModel(background_degree=0)
    t.add_line("a 770.0", amplitude=1.0, centroid=770.0, width=0.4)
    t.add_line("b 771.0", amplitude=1.0, centroid=771.0, width=0.8)
    t.tie_width("b 771.0", "a 770.0", factor=2.0)
    t.set_soft_min_width("b 771.0", 0.6, 0.06)
    c = t.compile(WAVE)
    f = int(c.root[2])
    assert c.free_soft_min[f] == pytest.approx(0.3) and c.free_soft_inv[f] == pytest.approx(
        2 / 0.06
    )
