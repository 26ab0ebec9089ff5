"""The numba kernel through fit_lines: agreement with the scipy reference, ties, bounds,
bad pixels, and pulls (fit - truth) / error over 10,000 synthetic spectra."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from saffron_xr import FitStatus, LineModel, fit_lines
from saffron_xr.fit._reference import evaluate_model, fit_reference

WAVE = np.linspace(768.0, 772.6, 48)
UNITS = "W m-2 sr-1 nm-1"


def gaussian(a, c, w, wave=WAVE):
    return a[..., None] * np.exp(-0.5 * ((wave - c[..., None]) / w[..., None]) ** 2)


def make_truth(n, rng):
    """Two lines + linear background; returns dict of truth arrays (n,)."""
    return {
        "a1": rng.uniform(4.0, 20.0, n),
        "c1": 770.0 + rng.normal(0, 0.04, n),
        "w1": rng.uniform(0.17, 0.24, n),
        "a2": rng.uniform(2.0, 8.0, n),
        "c2": 771.3 + rng.normal(0, 0.04, n),
        "w2": rng.uniform(0.17, 0.24, n),
        "b0": rng.uniform(0.5, 1.5, n),
        "b1": rng.uniform(-0.2, 0.2, n),
    }


def make_data(t, rng, dtype=np.float64, nan_fraction=0.0, wave=WAVE):
    ref = 0.5 * (wave.min() + wave.max())
    clean = (
        gaussian(t["a1"], t["c1"], t["w1"], wave)
        + gaussian(t["a2"], t["c2"], t["w2"], wave)
        + t["b0"][:, None]
        + t["b1"][:, None] * (wave - ref)
    )
    sigma = 0.3 * np.sqrt(clean) + 0.15
    y = clean + sigma * rng.standard_normal(clean.shape)
    if nan_fraction:
        y[rng.random(y.shape) < nan_fraction] = np.nan
    coords = {"wavelength": ("wavelength", wave, {"units": "Angstrom"})}
    data = xr.DataArray(y.astype(dtype), dims=("y", "wavelength"), coords=coords,
                        attrs={"units": UNITS})  # fmt: skip
    error = xr.DataArray(sigma.astype(dtype), dims=("y", "wavelength"), coords=coords)
    return data, error


def base_model(degree=1) -> LineModel:
    m = LineModel(background_degree=degree)
    m.add_line("ne_8 770.42", amplitude=5.0, centroid=770.0, width=0.2,
               bounds={"centroid": (769.5, 770.5), "width": (0.05, 0.6)})  # fmt: skip
    m.add_line("mg_8 771.3", amplitude=2.0, centroid=771.3, width=0.2,
               bounds={"centroid": (770.8, 771.8), "width": (0.05, 0.6)})  # fmt: skip
    return m


def full_matrix(ds, name):
    """(n_pixels, n_full) array of parameters (name="") or errors (name="_err")."""
    cols = []
    for i in range(ds.sizes["line"]):
        for kind in ("amplitude", "centroid", "width"):
            cols.append(ds[kind + name].isel(line=i).values)
    bg = ds["background" + name].values  # (degree, y) or (segment, degree, y)
    cols.extend(bg.reshape(-1, bg.shape[-1]))
    return np.stack(cols, axis=-1)


def compare_with_reference(ds, data, error, model, truth_full):
    usable = np.isin(ds.status.values, [FitStatus.CONVERGED, FitStatus.CONVERGED_AT_BOUND])
    p, e = full_matrix(ds, ""), full_matrix(ds, "_err")
    diffs, err_ratio = [], []
    for i in np.flatnonzero(usable):
        ref = fit_reference(WAVE, data.values[i], error.values[i], model,
                            initial=truth_full[i], wavelength_grid=WAVE)  # fmt: skip
        if not ref["success"]:
            continue
        free = ref["errors"] > 0  # fixed parameters have zero error in both
        np.testing.assert_array_equal(e[i][~free], 0.0)
        np.testing.assert_allclose(p[i][~free], ref["params"][~free], rtol=1e-12)
        diffs.append(
            np.where(free, np.abs(p[i] - ref["params"]) / np.where(free, ref["errors"], 1), 0)
        )
        err_ratio.append(np.where(free, e[i] / np.where(free, ref["errors"], 1), 1))
        assert ds.n_valid.values[i] == ref["n_valid"]
        assert ds.chi2.values[i] == pytest.approx(ref["chi2"], rel=1e-4)
    return np.array(diffs), np.array(err_ratio)


def truth_matrix(t):
    return np.stack([t["a1"], t["c1"], t["w1"], t["a2"], t["c2"], t["w2"], t["b0"], t["b1"]], 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_matches_scipy_reference_with_nan_holes(dtype):
    rng = np.random.default_rng(42)
    n = 120
    t = make_truth(n, rng)
    data, error = make_data(t, rng, dtype=dtype, nan_fraction=0.08)
    model = base_model()
    ds = fit_lines(data, model, error=error)
    assert ds.amplitude.dtype == np.float64
    assert (ds.status.values == FitStatus.CONVERGED).mean() > 0.97
    assert (ds.n_valid.values < 48).mean() > 0.9  # the NaN holes were skipped
    diffs, ratio = compare_with_reference(ds, data, error, model, truth_matrix(t))
    assert len(diffs) > 0.95 * n
    med = np.median(diffs, axis=0)
    print("median |kernel - scipy| / error per parameter:", med)
    assert np.all(med < 0.01)
    np.testing.assert_allclose(np.median(ratio, axis=0), 1.0, rtol=1e-3)


def test_float32_and_float64_inputs_agree():
    rng = np.random.default_rng(3)
    t = make_truth(50, rng)
    data, error = make_data(t, rng)
    m = base_model()
    a = fit_lines(data, m, error=error)
    b = fit_lines(data.astype(np.float32), m, error=error.astype(np.float32))
    rel = np.abs(a.centroid - b.centroid) / a.centroid_err
    assert float(rel.max()) < 0.01


def tied_truth(n, rng):
    t = make_truth(n, rng)
    t["c2"] = t["c1"] + 1.25
    t["w2"] = 1.1 * t["w1"]
    t["a2"] = 0.4 * t["a1"]
    return t


@pytest.mark.parametrize("tie", ["centroid", "width", "amplitude", "all", "fix"])
def test_each_tie_type(tie):
    rng = np.random.default_rng(7)
    n = 40
    t = tied_truth(n, rng)
    if tie == "fix":
        t["w2"][:] = 0.21
    data, error = make_data(t, rng, nan_fraction=0.03)
    m = base_model()
    a, b = "ne_8 770.42", "mg_8 771.3"
    if tie in ("centroid", "all"):
        m.tie_centroid(b, a, 1.25)
    if tie in ("width", "all"):
        m.tie_width(b, a, 1.1)
    if tie in ("amplitude", "all"):
        m.tie_amplitude(b, a, 0.4)
    if tie == "fix":
        m.fix(b, "width", 0.21)
    ds = fit_lines(data, m, error=error)
    assert (ds.status.values == FitStatus.CONVERGED).all()
    A, B = ds.sel(line=a), ds.sel(line=b)
    if tie in ("centroid", "all"):
        np.testing.assert_allclose(B.centroid - A.centroid, 1.25, atol=1e-9)
        np.testing.assert_allclose(B.centroid_err, A.centroid_err, rtol=1e-9)
    if tie in ("width", "all"):
        np.testing.assert_allclose(B.width / A.width, 1.1, rtol=1e-12)
        np.testing.assert_allclose(B.width_err, 1.1 * A.width_err, rtol=1e-9)
    if tie in ("amplitude", "all"):
        np.testing.assert_allclose(B.amplitude / A.amplitude, 0.4, rtol=1e-12)
        np.testing.assert_allclose(B.amplitude_err, 0.4 * A.amplitude_err, rtol=1e-9)
    if tie == "fix":
        np.testing.assert_array_equal(B.width, 0.21)
        np.testing.assert_array_equal(B.width_err, 0.0)
        np.testing.assert_array_equal(B.cov_amplitude_width, 0.0)
    diffs, ratio = compare_with_reference(ds, data, error, m, truth_matrix(t))
    assert len(diffs) >= 0.9 * n
    assert np.all(np.median(diffs, axis=0) < 0.01)
    np.testing.assert_allclose(np.median(ratio, axis=0), 1.0, rtol=2e-3)


def test_covariance_terms_match_reference_full_covariance():
    rng = np.random.default_rng(11)
    t = make_truth(20, rng)
    data, error = make_data(t, rng)
    m = base_model()
    m.tie_width("mg_8 771.3", "ne_8 770.42", 1.0)
    ds = fit_lines(data, m, error=error)
    c = m.compile(WAVE)
    for i in range(5):
        init = truth_matrix(t)[i]
        ref = fit_reference(WAVE, data.values[i], error.values[i], m, initial=init)
        cov = ref["cov"]
        for ln in range(2):
            ia, ic, iw = 3 * ln, 3 * ln + 1, 3 * ln + 2
            for name, (j, k) in {
                "cov_amplitude_centroid": (ia, ic),
                "cov_amplitude_width": (ia, iw),
                "cov_centroid_width": (ic, iw),
            }.items():
                got = float(ds[name].isel(line=ln, y=i))
                scale = np.sqrt(cov[j, j] * cov[k, k])
                assert abs(got - cov[j, k]) < 0.01 * scale, (name, ln, got, cov[j, k])
    # a tied width: the line-2 amplitude-width covariance uses the line-1 width column
    assert c.n_free == 7


def test_active_bounds_give_at_bound_status_and_match_reference():
    rng = np.random.default_rng(5)
    n = 30
    t = make_truth(n, rng)
    t["w2"][:] = 0.3  # true width above the upper bound below
    data, error = make_data(t, rng)
    m = LineModel(background_degree=1)
    m.add_line("ne_8 770.42", amplitude=5.0, centroid=770.0, width=0.2,
               bounds={"centroid": (769.5, 770.5), "width": (0.05, 0.6)})  # fmt: skip
    m.add_line("mg_8 771.3", amplitude=2.0, centroid=771.3, width=0.2,
               bounds={"centroid": (770.8, 771.8), "width": (0.05, 0.25)})  # fmt: skip
    ds = fit_lines(data, m, error=error)
    st = ds.status.values
    assert (st == FitStatus.CONVERGED_AT_BOUND).mean() > 0.9
    w2 = ds.width.sel(line="mg_8 771.3").values
    np.testing.assert_array_equal(w2[st == FitStatus.CONVERGED_AT_BOUND], 0.25)
    assert np.all(ds.width.values <= 0.6) and np.all(ds.centroid.values[0] >= 769.5)
    init = truth_matrix(t).copy()
    init[:, 5] = 0.2499
    diffs, _ = compare_with_reference(ds, data, error, m, init)
    assert len(diffs) >= 0.9 * n
    assert np.all(np.median(diffs, axis=0) < 0.01)


def test_bad_pixels_give_status_and_nan_never_raise():
    rng = np.random.default_rng(0)
    t = make_truth(5, rng)
    data, error = make_data(t, rng)
    y = data.values.copy()
    y[0] = np.nan  # all NaN
    y[1, 8:] = np.nan  # 8 valid samples < 9 = n_free + 1 (7 free + ... )
    err = error.values.copy()
    err[2, :] = 0.0  # zero errors: no valid sample either
    data = data.copy(data=y)
    error = error.copy(data=err)
    m = base_model()
    ds = fit_lines(data, m, error=error)
    st = ds.status.values
    assert st[0] == FitStatus.ALL_NAN and ds.n_valid.values[0] == 0
    assert st[1] == FitStatus.TOO_FEW_VALID and ds.n_valid.values[1] == 8
    assert st[2] == FitStatus.ALL_NAN
    assert st[3] == FitStatus.CONVERGED and st[4] == FitStatus.CONVERGED
    for name in ("amplitude", "centroid", "width_err", "background"):
        assert np.isnan(ds[name].isel(y=[0, 1, 2])).all()
    assert np.isfinite(ds.amplitude.isel(y=[3, 4])).all()
    # a higher min_valid turns the good pixels into TOO_FEW_VALID
    ds2 = fit_lines(data, m, error=error, min_valid=49)
    assert (ds2.status.values[3:] == FitStatus.TOO_FEW_VALID).all()
    with pytest.raises(ValueError, match="min_valid"):
        fit_lines(data, m, error=error, min_valid=3)


def test_nan_initial_value_gives_bad_initial_and_max_iter_status():
    rng = np.random.default_rng(1)
    t = make_truth(3, rng)
    data, error = make_data(t, rng)
    m = base_model()
    cen = xr.DataArray([770.0, np.nan, 770.0], dims="y")
    m.set_initial("ne_8 770.42", "centroid", cen)
    ds = fit_lines(data, m, error=error)
    assert ds.status.values.tolist()[1] == FitStatus.BAD_INITIAL
    assert np.isnan(ds.amplitude.values[:, 1]).all()
    ds = fit_lines(data, base_model(), error=error, max_iter=1)
    assert (ds.status.values == FitStatus.MAX_ITER).all()
    assert np.isfinite(ds.centroid).all()  # MAX_ITER keeps the last parameters


def test_without_error_the_errors_are_scaled_by_chi2():
    rng = np.random.default_rng(9)
    t = make_truth(200, rng)
    data, error = make_data(t, rng)
    m = base_model()
    absolute = fit_lines(data, m, error=error)
    scaled = fit_lines(data, m, error=error, scale_errors=True)
    ratio = scaled.amplitude_err / absolute.amplitude_err
    np.testing.assert_allclose(ratio**2, scaled.chi2.broadcast_like(ratio), rtol=1e-9)
    # unit weights: chi2 is in data units, errors scaled -> same order as the truth's
    none = fit_lines(data, m)
    assert none.attrs["fit_options"].find('"scale_errors": true') >= 0
    assert np.isfinite(none.centroid_err).all()


def test_pulls_over_10000_spectra():
    rng = np.random.default_rng(2024)
    n = 10_000
    t = make_truth(n, rng)
    t["a1"] = rng.uniform(10.0, 30.0, n)
    t["a2"] = rng.uniform(6.0, 15.0, n)
    data, error = make_data(t, rng, nan_fraction=0.02)
    ds = fit_lines(data, base_model(), error=error)
    ok = ds.status.values == FitStatus.CONVERGED
    assert ok.mean() > 0.99
    for ln, (ka, kc, kw) in enumerate((("a1", "c1", "w1"), ("a2", "c2", "w2"))):
        for kind, key in (("amplitude", ka), ("centroid", kc), ("width", kw)):
            fit = ds[kind].isel(line=ln).values[ok]
            err = ds[kind + "_err"].isel(line=ln).values[ok]
            pull = (fit - t[key][ok]) / err
            std = np.std(pull)
            print(f"pull line {ln} {kind}: mean {pull.mean():+.3f} std {std:.3f}")
            assert 0.9 <= std <= 1.1
            assert abs(np.mean(pull)) < 0.1


def test_segments_fit_their_own_background():
    rng = np.random.default_rng(4)
    n = 30
    wave = np.concatenate([np.linspace(768.0, 771.0, 30), np.linspace(780.0, 783.0, 30)])
    amp = rng.uniform(5, 10, (2, n))
    cen = np.stack([770.0 + rng.normal(0, 0.03, n), 781.5 + rng.normal(0, 0.03, n)])
    wid = np.full((2, n), 0.2)
    clean = gaussian(amp[0], cen[0], wid[0], wave) + gaussian(amp[1], cen[1], wid[1], wave)
    clean += np.where(wave < 775, 1.0, 3.0)
    sigma = np.full_like(clean, 0.1)
    y = clean + sigma * rng.standard_normal(clean.shape)
    data = xr.DataArray(y, dims=("y", "wavelength"), coords={"wavelength": wave})
    m = LineModel(segments=[(767.9, 771.1), (779.9, 783.1)], background_degree=0)
    m.add_line("ne_8 770.42", amplitude=5.0, centroid=770.0, width=0.2)
    m.add_line("x_1 781.5", amplitude=5.0, centroid=781.5, width=0.2)
    ds = fit_lines(data, m, error=xr.full_like(data, 0.1))
    assert ds.background.dims == ("segment", "degree", "y")
    assert (ds.status == FitStatus.CONVERGED).all()
    np.testing.assert_allclose(ds.background.sel(degree=0).mean("y"), [1.0, 3.0], atol=0.02)
    np.testing.assert_allclose(ds.segment_min, [767.9, 779.9])
    # the reference agrees
    c = m.compile(wave)
    ref = fit_reference(
        wave,
        y[0],
        sigma[0],
        m,
        initial=[amp[0, 0], cen[0, 0], 0.2, amp[1, 0], cen[1, 0], 0.2, 1, 3],
    )
    p = full_matrix(ds, "")[0]
    np.testing.assert_allclose(p, ref["params"], atol=1e-3 * np.max(np.abs(ref["errors"])))
    assert np.all(np.isfinite(evaluate_model(ref["params"], wave, c)))
