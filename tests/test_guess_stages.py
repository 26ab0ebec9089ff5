"""The stages of guess_model, each on a hand-made spectrum or catalog whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from saffron_xr.catalog import GuessOptions, LineCatalog, LineGuess
from saffron_xr.catalog import guess_stages as stages
from saffron_xr.catalog.guess_fit import MeanFit, fit_mean_spectrum, noise_of, unexplained

FIP = {"ne": 21.56, "mg": 7.65, "o": 13.62, "n": 14.53}


def _catalog(*lines, windows=()):
    """A catalog of ``(ion, rest)`` lines and ``(names, brightest, blend)`` windows."""
    cat = LineCatalog(description="test")
    for ion, rest in lines:
        cat.add_line(ion=ion, rest_wavelength=rest, fip=FIP[ion.split("_")[0]], log_t=5.5)
    for names, brightest, blend in windows:
        cat.add_window(names, brightest, blend=blend)
    return cat


def _gauss(x, amp, cen, sigma):  # the test's own profile: independent of the package
    return amp * np.exp(-0.5 * ((x - cen) / sigma) ** 2)


def _samples(x, y, sigma=0.01, segment=None):
    return stages.FitSamples(
        wavelength=x,
        mean=y,
        sigma=np.full(x.size, sigma),
        segment=np.zeros(x.size, int) if segment is None else segment,
        error_mean=np.full(x.size, sigma * 10.0),  # as if 100 spectra were averaged
    )


# ----------------------------------------------------------------------------- 1. reduction
def test_reduce_window_sorts_and_averages():
    wave = np.array([772.0, 770.0, 771.0, 769.0])  # not in order
    data = np.arange(24, dtype=float).reshape(2, 3, 4)
    data[0, 0, 1] = np.nan
    data[:, :, 3] = np.nan  # a sample without any data
    err = np.full_like(data, 0.5)
    err[1, 2, 0] = 2.0
    coords = {"wavelength": ("wavelength", wave, {"units": "Angstrom"})}
    dims = ("y", "x", "wavelength")
    rad = xr.DataArray(data, dims=dims, coords=coords, attrs={"EXTNAME": "W1"}).chunk({"y": 1})
    spec = stages.reduce_window(rad, xr.DataArray(err, dims=dims, coords=coords))
    order = np.argsort(wave)
    flat, flat_err = data.reshape(6, 4), err.reshape(6, 4)
    valid = np.isfinite(flat)
    with np.errstate(invalid="ignore"):
        expected_mean = np.nansum(flat, 0) / valid.sum(0)
        expected_err = np.where(valid, flat_err, 0).sum(0) / valid.sum(0)
    assert spec.name == "W1" and spec.n_segments == 1
    np.testing.assert_array_equal(spec.wavelength, wave[order])
    np.testing.assert_array_equal(spec.count, valid.sum(0)[order])
    np.testing.assert_allclose(spec.mean, expected_mean[order])
    np.testing.assert_allclose(spec.error_mean, expected_err[order])
    assert spec.step(default=9.0) == 1.0 and spec.n_with_data == 6.0


@pytest.mark.parametrize("layout", ["numpy", "dask", "wavelength_first", "error_per_wavelength"])
def test_mean_spectrum_one_pass_matches_numpy(layout):
    """The fused per-block sums give the NaN-aware means of a plain numpy computation,
    whatever the dims' order, chunking, and an error that is NaN where the data are not or
    that varies along wavelength only."""
    rng = np.random.default_rng(3)
    data = rng.normal(5.0, 1.0, (5, 4, 6)).astype(np.float32)
    data[0, :, 2] = np.nan
    data[1, 1, :] = np.nan
    err = rng.uniform(0.5, 1.5, data.shape)
    err[2, 3, 4] = np.nan  # error missing at a valid sample: out of error_mean only
    dims = ("y", "x", "wavelength")
    rad = xr.DataArray(data, dims=dims, coords={"wavelength": np.arange(6.0)})
    error = xr.DataArray(err, dims=dims)
    if layout == "error_per_wavelength":
        err = np.broadcast_to(err[0, 0], data.shape)
        error = xr.DataArray(err[0, 0], dims=("wavelength",))
    if layout in ("dask", "error_per_wavelength"):
        rad, error = rad.chunk({"y": 2, "wavelength": 4}), error.chunk()
    if layout == "wavelength_first":
        rad, error = rad.transpose("wavelength", "x", "y"), error.transpose("wavelength", "y", "x")
    ms = stages.mean_spectrum(rad, error).compute()
    flat = data.reshape(-1, 6).astype(np.float64)
    flat_err = np.asarray(err, dtype=np.float64).reshape(-1, 6)
    valid = np.isfinite(flat)
    ok = valid & np.isfinite(flat_err)
    np.testing.assert_array_equal(ms["count"].values, valid.sum(0))
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(
            ms["mean"].values, np.nansum(flat, 0) / valid.sum(0), rtol=1e-12
        )
        expected_err = np.where(ok, flat_err, 0).sum(0) / ok.sum(0)
    np.testing.assert_allclose(ms["error_mean"].values, expected_err, rtol=1e-12)
    assert np.isnan(ms["mean"].values[2]) == (valid[:, 2].sum() == 0)
    assert ms.attrs["n_spectra"] == 20 and ms["mean"].dims == ("wavelength",)
    np.testing.assert_array_equal(ms["wavelength"].values, np.arange(6.0))


def test_reduce_window_segments_of_a_fused_window():
    wave = np.array([700.0, 700.1, 750.0, 750.1, 750.2])
    rad = xr.DataArray(
        np.ones((2, 5)),
        dims=("y", "wavelength"),
        coords={"wavelength": wave, "segment": ("wavelength", ["b", "b", "a", "a", "a"])},
    )
    spec = stages.reduce_window(rad)
    assert spec.segment_labels == ["b", "a"] and list(spec.segment) == [0, 0, 1, 1, 1]
    assert spec.error_mean is None


# ----------------------------------------------------------------------------- 2. usable range
def _spectrum(count, mean=None, segment=None):
    n = len(count)
    wave = 770.0 + 0.1 * np.arange(n)
    return stages.WindowSpectrum(
        name="W",
        wavelength=wave,
        mean=np.ones(n) if mean is None else np.asarray(mean, float),
        count=np.asarray(count, float),
        error_mean=None,
        segment=np.zeros(n, int) if segment is None else np.asarray(segment),
        segment_labels=[None] if segment is None else sorted(set(segment)),
    )


def test_usable_ranges():
    mean = [1, 1, 1, np.nan, 1, 1, 1]
    spec = _spectrum([0, 5, 10, 10, 8, 10, 3], mean)
    spans, mask = stages.usable_ranges(spec, 0.8)
    w = spec.wavelength
    # valid in >= 8 of 10 spectra: samples 2-5; sample 3 is inside but NaN
    assert spans == [(w[2], w[5])]
    assert list(np.flatnonzero(mask)) == [2, 4, 5]
    spans, _ = stages.usable_ranges(spec, 0.5)
    assert spans == [(w[1], w[5])]
    # a segment without a usable sample is named
    two = _spectrum([10, 10, 10, 1, 1], segment=[0, 0, 0, 1, 1])
    two = stages.WindowSpectrum(**{**two.__dict__, "segment_labels": ["A", "B"]})
    with pytest.raises(ValueError, match="window 'W' segment 'B' has no wavelength sample"):
        stages.usable_ranges(two, 0.8)


def test_fit_samples_noise():
    spec = _spectrum([4, 16, 16, 9])
    spec = stages.WindowSpectrum(**{**spec.__dict__, "error_mean": np.array([2.0, 2, 4, 3])})
    mask = np.array([False, True, True, True])
    s = stages.fit_samples(spec, mask)
    np.testing.assert_allclose(s.sigma, [2 / 4, 4 / 4, 3 / 3])  # error / sqrt(count)
    np.testing.assert_array_equal(s.noise_sigma, s.sigma)
    relative = stages.fit_samples(
        stages.WindowSpectrum(**{**spec.__dict__, "error_mean": None}), mask
    )
    np.testing.assert_allclose(relative.sigma, np.sqrt(16 / np.array([16, 16, 9])))
    assert relative.noise_sigma is None and relative.error_mean is None


# ----------------------------------------------------------------------------- 3-4. candidates
def test_find_candidates():
    cat = _catalog(("mg_8", 769.356), ("ne_8", 770.428), ("mg_8", 772.262), ("o_4", 775.0))
    cands = stages.find_candidates(cat, [(769.8, 771.5), (774.5, 776.0)], 0.6)
    # within 0.6 A of (769.8, 771.5): 769.36 and 770.43; of (774.5, 776.0): 775.0
    assert [(c.name, c.segment) for c in cands] == [
        ("mg_8 769.36", 0),
        ("ne_8 770.43", 0),
        ("o_4 775.00", 1),
    ]
    assert all(c.guess.status == "kept" and not c.spread for c in cands)
    assert cands[1].rest == 770.428 and cands[1].guess.segment == 0


def test_merge_blends_into_the_brightest():
    cat = _catalog(
        ("n_3", 989.799), ("n_3", 991.511), ("n_3", 991.577),
        windows=[(["n_3 991.51", "n_3 991.58"], "n_3 991.58", True)],
    )  # fmt: skip
    cands = stages.find_candidates(cat, [(988.5, 993.0)], 0.6)
    kept = stages.merge_blends(cands, cat)
    assert [c.name for c in kept] == ["n_3 989.80", "n_3 991.58"]
    blend = kept[1]
    assert blend.span == pytest.approx((991.511 - 991.577, 0.0)) and blend.spread
    g = cands[1].guess
    assert (g.status, g.merged_into) == ("merged", "n_3 991.58") and "blend" in g.reason


def test_merge_close_keeps_the_brighter_in_the_data():
    cat = _catalog(("o_4", 770.0), ("o_5", 770.2), ("o_6", 771.0))
    cands = stages.find_candidates(cat, [(769.0, 772.0)], 0.6)
    x = np.linspace(769.0, 772.0, 61)
    y = _gauss(x, 5.0, 770.2, 0.1) + _gauss(x, 1.0, 771.0, 0.1)  # o_5 is the bright one
    kept = stages.merge_close(cands, cat, _samples(x, y), 0.4, 0.1)
    assert [c.name for c in kept] == ["o_5 770.20", "o_6 771.00"]
    assert kept[0].span == pytest.approx((-0.2, 0.0))
    assert cands[0].guess.merged_into == "o_5 770.20" and "min_separation" in cands[0].guess.reason
    # a catalog window naming the brightest line overrides the data
    for c in cands:
        c.guess.status, c.guess.merged_into = "kept", None
    cat.add_window(["o_4 770.00", "o_5 770.20"], "o_4 770.00")
    kept = stages.merge_close(cands, cat, _samples(x, y), 0.4, 0.1)
    assert [c.name for c in kept] == ["o_4 770.00", "o_6 771.00"]
    assert kept[0].span == pytest.approx((0.0, 0.2))


# ----------------------------------------------------------------------------- 5. offset
def test_estimate_offsets_recovers_a_shift():
    cat = _catalog(("ne_8", 770.428), ("mg_8", 772.262))
    x = np.arange(768.5, 774.0, 0.08)
    shift = 0.23
    y = 1.0 + _gauss(x, 10.0, 770.428 + shift, 0.35) + _gauss(x, 2.0, 772.262 + shift, 0.35)
    span = (float(x[0]), float(x[-1]))
    cands = stages.find_candidates(cat, [span], 0.6)
    est = stages.estimate_offsets(cands, cat, _samples(x, y), [span], 0.4, 0.6, 0.08)
    assert est.offset[0] == pytest.approx(shift, abs=0.01)
    assert est.at_limit == [False] and est.anchor == [None]  # no catalog window
    cat.add_window(["ne_8 770.43", "mg_8 772.26"], "ne_8 770.43")
    est = stages.estimate_offsets(cands, cat, _samples(x, y), [span], 0.4, 0.6, 0.08)
    assert est.anchor == ["ne_8 770.43"]
    # a shift beyond the search range ends at its limit
    far = 1.0 + _gauss(x, 10.0, 770.428 + 0.5, 0.35)
    est = stages.estimate_offsets(cands[:1], cat, _samples(x, far), [span], 0.4, 0.3, 0.08)
    assert est.at_limit == [True] and est.offset[0] == pytest.approx(0.3, abs=1e-9)


def test_drop_outside():
    cat = _catalog(("ne_8", 770.428), ("mg_8", 771.4))
    cands = stages.find_candidates(cat, [(769.8, 771.5)], 0.6)
    kept = stages.drop_outside(cands, [0.3], [(769.8, 771.5)])
    assert [c.name for c in kept] == ["ne_8 770.43"]
    g = cands[1].guess
    assert g.status == "outside" and "771.70 A, outside the usable range" in g.reason


# ----------------------------------------------------------------------------- 6. mean fit
def test_fit_mean_spectrum_recovers_known_lines():
    cat = _catalog(("ne_8", 770.428), ("mg_8", 772.262), ("o_4", 773.5))
    x = np.arange(769.0, 774.2, 0.0975)
    mid = 0.5 * (x[0] + x[-1])
    truth = [(5.0, 770.10, 0.30), (1.5, 772.00, 0.32)]
    y = 0.2 + 0.01 * (x - mid) + sum(_gauss(x, *t) for t in truth)  # no o_4 flux
    span = (float(x[0]), float(x[-1]))
    cands = stages.find_candidates(cat, [span], 0.6)
    fit = fit_mean_spectrum(cands, _samples(x, y), [-0.3], [span], GuessOptions(), 0.0975)
    assert [c.name for c in fit.lines] == ["ne_8 770.43", "mg_8 772.26"]
    for i, (amp, cen, wid) in enumerate(truth):
        assert fit.amplitude[i] == pytest.approx(amp, rel=1e-4)
        assert fit.centroid[i] == pytest.approx(cen, abs=1e-4)
        assert fit.width[i] == pytest.approx(wid, rel=1e-4)
    np.testing.assert_allclose(fit.background, [[0.2, 0.01]], atol=1e-5)
    np.testing.assert_allclose(fit.residual, 0.0, atol=1e-5)
    # the offset of the fit with tied centroids: the bright line's, pulled a little by the
    # other one (which sits 0.06 A off its rest separation)
    assert -0.33 < fit.offset[0] < -0.26
    weak = cands[2].guess
    assert weak.status == "dropped" and "min_snr 5.0" in weak.reason
    assert "after refining" not in weak.reason  # dropped by the tied fit
    assert fit.status[0].startswith("tied") and fit.status[-1].startswith("free")
    assert cands[0].guess.snr > 100 and cands[0].guess.snr_pixel == pytest.approx(5.0 / 0.1)
    with pytest.raises(ValueError, match=r"reaches S/N 1000000.0.*best: ne_8 770.43"):
        fit_mean_spectrum(cands[:2], _samples(x, y), [-0.3], [span],
                          GuessOptions(min_snr=1e6), 0.0975)  # fmt: skip


def test_noise_of_and_unexplained():
    resid = np.array([0.0, 2.0, -2.0, 0.0])
    sigma = np.full(4, 0.5)
    # reduced chi2 = (16 + 16) / 2 = 16: sigma scaled by 4; below 1 it is left alone
    np.testing.assert_allclose(noise_of(resid, sigma, 2), 2.0)
    np.testing.assert_allclose(noise_of(resid, np.full(4, 10.0), 2), 10.0)
    np.testing.assert_allclose(noise_of(resid, None, None), np.sqrt(8 / 4))
    x = np.arange(10.0)
    bump = np.zeros(10)
    bump[[3, 4, 5]] = [4.0, 6.0, 4.0]
    bump[8] = 9.0  # one sample alone is not a run
    assert unexplained(x, bump, np.ones(10), 3.0) == [[4.0, 6.0]]


# ----------------------------------------------------------------------------- 7. the model
def test_build_model_bounds():
    guesses = [
        LineGuess("mg_8 772.26", "mg_8", 772.262, amplitude=9.0, centroid=772.0, width=0.3),
        LineGuess("ne_8 770.43", "ne_8", 770.428, amplitude=2.0, centroid=770.1, width=0.4),
    ]
    cands = [stages.Candidate(g, g.rest_wavelength, 0) for g in guesses]
    fit = MeanFit(cands, None, None, None, [-0.3], [[0.0, 0.0]], None, None, [])
    opts = GuessOptions(width_bounds=(0.5, 2.0), amplitude_bounds=(0.0, 3.0), centroid_range=0.3)
    spec = _spectrum([1] * 5)
    model = stages.build_model(fit, opts, LineCatalog.default(), spec, {})
    assert model.lines == ["ne_8 770.43", "mg_8 772.26"]  # rest-wavelength order
    mg = model.line_info("mg_8 772.26")
    assert mg["amplitude"] == 3.0  # clipped to its bound
    assert mg["bounds"]["amplitude"] == (0.0, 3.0)
    assert mg["bounds"]["centroid"] == pytest.approx((771.7, 772.3))
    assert mg["bounds"]["width"] == pytest.approx((0.15, 0.6))
    assert model.segments is None and model.background_degree == 1
