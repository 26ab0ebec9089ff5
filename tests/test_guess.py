"""guess_model / guess_models / fuse_windows: line matching and initial models from data."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import saffron_xr
from saffron_xr.catalog import (
    GuessOptions,
    GuessReport,
    LineCatalog,
    fuse_windows,
    guess_model,
    guess_models,
)
from saffron_xr.catalog.guess import mean_spectrum
from saffron_xr.fit.model import LineModel
from saffron_xr.testing import (
    composition_windows,
    make_spectra,
    make_spice_l2,
    raise_if_dask_computes,
)

NE8_NODE = "Ne_VIII_770_Peak_data"


def _peak(wave, spec):
    """Wavelength of the maximum of a spectrum (parabola through the three top samples)."""
    spec = np.where(np.isfinite(spec), spec, -np.inf)
    k = int(np.argmax(spec))
    y0, y1, y2 = spec[k - 1], spec[k], spec[k + 1]
    return float(wave[k] + 0.5 * (wave[k + 1] - wave[k]) * (y0 - y2) / (y0 - 2 * y1 + y2))


def _shifted(lines, offset):
    return [(ion, rest + offset, peak) for ion, rest, peak in lines]


@pytest.fixture(scope="module")
def ne8_radiance(ne8_file):
    return saffron_xr.open_spice(ne8_file)[NE8_NODE]["radiance"]


@pytest.fixture(scope="module")
def lyg(spice_dir):
    """The real Ly-gamma / C III raster as (y, x, wavelength) dask DataArrays."""
    g = np.load(spice_dir / "raster_20240425_lyg_c3" / "grid_data.npz")
    coords = {"wavelength": ("wavelength", g["wavelength"], {"units": "Angstrom"})}
    attrs = {"units": "W m-2 sr-1 nm-1", "EXTNAME": "Ly gamma / C III (raster 2024-04-25)"}
    rad = xr.DataArray(
        np.moveaxis(g["intensity"].astype(np.float32), 0, -1),
        dims=("y", "x", "wavelength"), coords=coords, attrs=attrs, name="radiance",
    ).chunk({"y": 210})  # fmt: skip
    err = xr.DataArray(
        np.moveaxis(g["uncertainty"].astype(np.float32), 0, -1),
        dims=("y", "x", "wavelength"), coords=coords, attrs={"units": attrs["units"]},
        name="error",
    ).chunk({"y": 210})  # fmt: skip
    return rad, err


# ----------------------------------------------------------------------------- real data
def test_ne8_real_window(ne8_radiance):
    with raise_if_dask_computes(max_computes=1):  # the mean spectrum, once
        model, report = guess_model(ne8_radiance, return_report=True)
    assert isinstance(model, LineModel) and isinstance(report, GuessReport)
    assert "ne_8 770.42" in model.lines
    info = model.line_info("ne_8 770.42")
    assert info["ion"] == "ne_8" and info["rest_wavelength"] == pytest.approx(770.428)
    mean = ne8_radiance.mean(("y", "x")).values
    peak = _peak(ne8_radiance.wavelength.values, mean)
    assert 769.95 < peak < 770.15
    assert abs(info["centroid"] - peak) < 0.1
    # SPICE's pre-flight wavelength scale: ~0.4 A blueward
    assert -0.5 < report.offset[0] < -0.3
    # the NaN-padded edges are not usable
    w = ne8_radiance.wavelength.values
    assert report.usable_range[0][0] > w[5] and report.usable_range[0][1] < w[-6]
    # bounds are what the docstring says (defaults)
    lo, hi = info["bounds"]["centroid"]
    assert lo == pytest.approx(info["centroid"] - 0.4) and hi == pytest.approx(
        info["centroid"] + 0.4
    )
    # physical width bounds: hard 0.7 x and soft 0.85 x (tolerance 0.05 x) the instrumental
    # (+) thermal width, by hand: SW 2" slit FWHM 7.8 px x 0.097517 A (SPICE release
    # notes), Ne VIII thermal at log T 5.8, A = 20.18
    sigma_inst = 7.8 * 0.097517 / 2.35482
    sigma_th = 770.428 * np.sqrt(1.380649e-23 * 10**5.8 / (20.18 * 1.66054e-27)) / 2.99792458e8
    wlo, whi = info["bounds"]["width"]
    assert wlo == pytest.approx(0.7 * np.hypot(sigma_inst, sigma_th), rel=1e-3)
    soft_min, tolerance = info["soft_min_width"]
    assert soft_min == pytest.approx(0.85 * np.hypot(sigma_inst, sigma_th), rel=1e-3)
    assert tolerance == pytest.approx(0.05 * np.hypot(sigma_inst, sigma_th), rel=1e-3)
    assert whi >= 3.0 * np.hypot(sigma_inst, sigma_th) and whi >= 3.0 * info["width"] * 0.999
    assert 0.25 < info["width"] < 0.45
    # Mg VIII 769.36 is considered and its fate recorded
    assert report["mg_8 769.36"].status in ("dropped", "outside")
    assert report["mg_8 769.36"].reason
    # background_degree="auto": without errors the slope is kept; with the noise model's
    # errors it is far below what one spectrum can measure, and dropped
    assert model.background_degree == report.background_degree == 1
    err = saffron_xr.spice_error(ne8_radiance)
    model0, report0 = guess_model(ne8_radiance, error=err, return_report=True)
    assert model0.background_degree == report0.background_degree == 0
    assert report0.slope_chi2 < 0.1
    print(report)


def test_lyg_raster_guess(lyg):
    rad, err = lyg
    with raise_if_dask_computes(max_computes=1):
        model, report = guess_model(rad, error=err, return_report=True)
    print(report)
    assert "h_1 972.54" in model.lines and "c_3 977.03" in model.lines
    wave = rad.wavelength.values
    mean = rad.mean(("y", "x")).values
    lyg_peak = _peak(wave[wave < 975], mean[wave < 975])
    c3_peak = _peak(wave, mean)
    assert abs(model.line_info("h_1 972.54")["centroid"] - lyg_peak) < 0.15
    assert abs(model.line_info("c_3 977.03")["centroid"] - c3_peak) < 0.15
    # every catalog line in the window was considered, and weak ones are accounted for
    considered = {g.name for g in report.lines}
    assert {"h_1 972.54", "ne_7 973.33", "fe_18 974.86", "c_3 977.03"} <= considered
    assert report["fe_18 974.86"].status == "dropped"
    assert "min_snr" in report["fe_18 974.86"].reason
    # the emission between the lines that no catalog line explains is reported
    assert any(975.0 < w < 976.5 for w, _ in report.unexplained)
    # with errors the typical single-pixel S/N is recorded (median peak S/N ~18 for C III)
    assert 10 < report["c_3 977.03"].snr_pixel < 40
    # background_degree="auto": the LW continuum's slope is measurable in one spectrum
    assert model.background_degree == report.background_degree == 1
    assert report.slope_chi2 > 3


def test_mean_spectrum_is_lazy(ne8_radiance):
    with raise_if_dask_computes():
        ms = mean_spectrum(ne8_radiance)
    assert ms["mean"].dims == ("wavelength",) and ms["mean"].attrs["units"]
    counts = ms["count"].values
    assert counts[:5].sum() == 0 and counts.max() == 1677


# ----------------------------------------------------------------------------- synthetic
def test_offset_and_centroids_synthetic():
    lines = (("ne_8", 770.428, 2.0), ("mg_8", 772.262, 0.4))
    for seed, offset in enumerate([-0.48, -0.2, 0.0, 0.25, 0.5]):
        ds = make_spectra(300, lines=_shifted(lines, offset), seed=seed, wavemin=768.2)
        model, rep = guess_model(ds.radiance, error=ds.error, return_report=True)
        assert rep.offset[0] == pytest.approx(offset, abs=0.03), seed
        assert model.lines == ["ne_8 770.42", "mg_8 772.26"]
        for name, truth in zip(model.lines, ds.centroid.mean("y").values, strict=True):
            assert model.line_info(name)["centroid"] == pytest.approx(truth, abs=0.03)


@pytest.mark.parametrize("target", [0.1, 10.0])
def test_auto_background_degree_keeps_a_slope_one_spectrum_can_measure(target):
    """A slope added to synthetic spectra, scaled so that it changes one spectrum's chi2 by
    `target` (by hand: sum of (s (lambda - <lambda>))**2 / error**2 with the spectra's own
    errors, the part a constant cannot absorb): kept at 10, dropped at 0.1."""
    ds = make_spectra(300, seed=3)
    wave = ds.wavelength.values
    e2 = (ds.error**2).mean("y").values
    centre = np.sum(wave / e2) / np.sum(1 / e2)
    per_unit = np.sum((wave - centre) ** 2 / e2)  # chi2 of a slope of 1 per Angstrom
    slope = np.sqrt(target / per_unit)
    rad = ds.radiance + slope * (ds.wavelength - centre)
    model, report = guess_model(rad, error=ds.error, return_report=True)
    assert report.slope_chi2 == pytest.approx(target, rel=0.35)
    assert model.background_degree == (1 if target > 1 else 0)
    # an explicit degree is kept whatever the slope
    assert guess_model(rad, error=ds.error, background_degree=1).background_degree == 1
    # without errors the slope cannot be judged: it is kept
    assert guess_model(rad).background_degree == 1


@pytest.mark.parametrize("offset", [-0.46, 0.45])
def test_anchor_settles_ambiguous_offsets(offset):
    """One bright peak that N III 764.35 or N IV 765.15 could explain (0.8 A apart, less than
    twice the offset search range): the window's brightest catalog line, N IV, takes it."""
    ds = make_spectra(200, lines=(("n_4", 765.147 + offset, 3.0),), wavemin=763.2, nwave=40,
                      seed=8)  # fmt: skip
    model, rep = guess_model(ds.radiance, error=ds.error, return_report=True)
    assert model.lines == ["n_4 765.15"]
    assert rep.anchor == ["n_4 765.15"]
    assert rep.offset[0] == pytest.approx(offset, abs=0.03)


def test_weak_lines_threshold_is_configurable():
    # Mg VIII 772 at ~1/100 of Ne VIII: invisible in 40 spectra
    ds = make_spectra(40, lines=(("ne_8", 770.428, 2.0), ("mg_8", 772.262, 0.01)), seed=4)
    model, rep = guess_model(ds.radiance, error=ds.error, return_report=True)
    assert model.lines == ["ne_8 770.42"]
    g = rep["mg_8 772.26"]
    assert g.status == "dropped" and g.snr < 5.0 and "min_snr 5.0" in g.reason
    model0, rep0 = guess_model(ds.radiance, error=ds.error, min_snr=0.0, return_report=True)
    assert "mg_8 772.26" in model0.lines and rep0["mg_8 772.26"].status == "kept"
    # nothing at all: a clear error naming the best candidate
    flat = make_spectra(20, lines=(("ne_8", 770.428, 0.0),), seed=1)
    with pytest.raises(ValueError, match="reaches S/N 5.0.*lower min_snr"):
        guess_model(flat.radiance, error=flat.error)


def test_blends_are_merged():
    lines = (("n_3", 989.799, 2.0), ("n_3", 991.511, 0.5), ("n_3", 991.577, 4.0))
    ds = make_spectra(200, lines=lines, wavemin=988.2, nwave=52, detector="LW", seed=2)
    model, rep = guess_model(ds.radiance, error=ds.error, return_report=True)
    assert "n_3 991.58" in model.lines and "n_3 991.51" not in model.lines
    g = rep["n_3 991.51"]
    assert g.status == "merged" and g.merged_into == "n_3 991.58" and "blend" in g.reason
    assert rep["si_2 989.87"].merged_into == "n_3 989.80"
    # without the catalog blends the separation rule still merges them
    model2, rep2 = guess_model(ds.radiance, error=ds.error, merge_blends=False, return_report=True)
    assert rep2["n_3 991.51"].status == "merged" and "min_separation" in rep2["n_3 991.51"].reason


def test_usable_range_excludes_nan_edges():
    ds = make_spectra(100, lines=(("ne_8", 770.428 - 0.3, 2.0),), seed=3, wavemin=767.7)
    rad = ds.radiance.copy()
    rad[:, :6] = np.nan
    rad[:50, 6:9] = np.nan  # drifting padding: these samples are valid in half the rows
    rad[:, -5:] = np.nan
    model, rep = guess_model(rad, error=ds.error, return_report=True)
    w = rad.wavelength.values
    assert rep.usable_range[0] == pytest.approx([w[9], w[-6]])
    assert rep["mg_8 769.36"].status in ("outside", "dropped")
    # lower threshold: the half-valid samples count
    _, rep2 = guess_model(rad, error=ds.error, min_valid_fraction=0.4, return_report=True)
    assert rep2.usable_range[0][0] == pytest.approx(w[6])


def test_settings_change_the_bounds():
    ds = make_spectra(50, seed=5)
    model = guess_model(ds.radiance, centroid_range=0.2, width_bounds=(0.8, 1.5),
                        amplitude_bounds=(0.0, 100.0), background_degree=1)  # fmt: skip
    info = model.line_info("ne_8 770.42")
    c, w = info["centroid"], info["width"]
    assert info["bounds"]["centroid"] == pytest.approx((c - 0.2, c + 0.2))
    assert info["bounds"]["width"] == pytest.approx((0.8 * w, 1.5 * w))
    assert info["bounds"]["amplitude"] == (0.0, 100.0)
    default = guess_model(ds.radiance).line_info("ne_8 770.42")["bounds"]["amplitude"]
    assert default == (-np.inf, np.inf)  # unbounded by default (see the docstring)
    assert model.background_degree == 1


def test_guess_model_errors():
    ds = make_spectra(10, seed=0)
    with pytest.raises(ValueError, match="no 'wavelength' dimension"):
        guess_model(ds.radiance.rename(wavelength="lam"))
    with pytest.raises(ValueError, match="no 'wavelength' coordinate"):
        guess_model(ds.radiance.drop_vars("wavelength"))
    with pytest.raises(ValueError, match="no 'wavelength' dimension"):
        guess_model(ds.radiance.rename(wavelength="lam"))
    nm = ds.radiance.assign_coords(
        wavelength=("wavelength", ds.wavelength.values / 10, {"units": "nm"})
    )
    with pytest.raises(ValueError, match="convert it to Angstrom"):
        guess_model(nm)
    with pytest.raises(ValueError, match="no wavelength sample valid"):
        guess_model(ds.radiance * np.nan)
    far = ds.radiance.assign_coords(wavelength=ds.wavelength + 80.0)
    with pytest.raises(ValueError, match="no catalog line within 0.6 Angstrom"):
        guess_model(far)
    with pytest.raises(ValueError, match="width_bounds"):
        guess_model(ds.radiance, width_bounds=(1.2, 2.0))
    with pytest.raises(TypeError, match="LineCatalog"):
        guess_model(ds.radiance, catalog={"ne_8 770.42": 770.4})


def test_custom_catalog_is_used():
    ds = make_spectra(100, lines=(("ne_8", 770.428, 2.0), ("mg_8", 772.262, 0.4)), seed=6)
    cat = LineCatalog.default()
    cat.remove_line("mg_8 772.26", from_windows=True)
    model = guess_model(ds.radiance, cat, error=ds.error)
    assert model.lines == ["ne_8 770.42"]


def test_accessor_forwards(ne8_radiance):
    a = ne8_radiance.saffron.guess_model(min_snr=4.0)
    b = guess_model(ne8_radiance, min_snr=4.0)
    assert a == b


# ----------------------------------------------------------------------------- trees / fusion
@pytest.fixture(scope="module")
def composition(tmp_path_factory):
    """Small generated composition raster (all default windows) and its truth."""
    truth = make_spice_l2(tmp_path_factory.mktemp("compo"), ny=48, nx=6, seed=11,
                          include_radiance=True)  # fmt: skip
    return saffron_xr.open_spice(truth.attrs["path"]), truth


def test_guess_models_tree(composition):
    tree, truth = composition
    with raise_if_dask_computes(max_computes=len(tree.children)):
        models = guess_models(tree)
    assert set(models) == set(tree.children)
    assert models == tree.saffron.guess_models()
    for name, model in models.items():
        rest = truth[name].rest_wavelength.values
        got = [model.line_info(n)["rest_wavelength"] for n in model.lines]
        for r in rest:  # every true line has a model component (blends by their brightest)
            assert min(abs(np.array(got) - r)) < 0.07, (name, r, model.lines)
    first = sorted(tree.children)[0]
    assert list(guess_models(tree, windows=[first])) == [first]
    with pytest.raises(KeyError, match="not in the tree"):
        guess_models(tree, windows=["nope"])


def test_guess_models_skips_windows_without_lines(exp_file):
    tree = saffron_xr.open_spice(exp_file)  # 0.5 s calibration exposure: no emission line
    assert guess_models(tree) == {}
    with pytest.raises(ValueError, match="no catalog line within .* of window 'FLT02"):
        guess_models(tree, errors="raise")
    with pytest.raises(ValueError, match="errors must be"):
        guess_models(tree, errors="ignore")


def _mg9_tree(tmp_path, offset=0.25, seed=5, ny=64, nx=8):
    wins = [w for w in composition_windows() if "Mg IX" in w["extname"]]
    truth = make_spice_l2(tmp_path, windows=wins, ny=ny, nx=nx, seed=seed,
                          offset_range=(offset, offset + 1e-9), include_radiance=True)  # fmt: skip
    tree = saffron_xr.open_spice(truth.attrs["path"])
    (a,) = [n for n in tree.children if n.startswith("O_III")]
    (b,) = [n for n in tree.children if n.startswith("S_IV")]
    return tree, truth, a, b


def test_fuse_windows(tmp_path):
    tree, _, a, b = _mg9_tree(tmp_path)
    with raise_if_dask_computes():
        fused = fuse_windows(tree, [b, a])
    na, nb = tree[a].sizes["wavelength"], tree[b].sizes["wavelength"]
    assert fused.sizes["wavelength"] == na + nb
    assert np.all(np.diff(fused.wavelength.values) > 0)
    assert list(fused.segment.values[:na]) == [a] * na and fused.segment.values[-1] == b
    assert fused.radiance.chunks[-1] == (na + nb,)  # one chunk along wavelength
    np.testing.assert_array_equal(fused.radiance.isel(wavelength=slice(0, na)).values,
                                  tree[a].radiance.values)  # fmt: skip
    assert fused.attrs["fused_windows"] == f"{a},{b}"
    assert fused.attrs["WAVEMIN"] == tree[a].attrs["WAVEMIN"]
    assert fused.attrs["WAVEMAX"] == tree[b].attrs["WAVEMAX"]
    assert "O III 703" in fused.attrs["EXTNAME"] and "S IV" in fused.attrs["EXTNAME"]
    assert "EXTNAME" in fused.attrs["fused_attrs"]
    assert fused.radiance.attrs["units"] == tree[a].radiance.attrs["units"]
    assert fuse_windows(tree, [a, b], name="Mg IX pair").attrs["EXTNAME"] == "Mg IX pair"
    for bad, msg in [([a], "two or more"), ([a, a], "listed twice"), ([a, "x"], "no window")]:
        with pytest.raises(ValueError, match=msg):
            fuse_windows(tree, bad)


def test_fuse_windows_rejects_mismatched_windows(tmp_path):
    tree, _, a, _ = _mg9_tree(tmp_path)
    shifted = tree[a].to_dataset().assign_coords(wavelength=tree[a].wavelength + 1.0)
    t2 = tree.copy()
    t2["shifted"] = xr.DataTree(shifted)
    with pytest.raises(ValueError, match="overlap"):
        fuse_windows(t2, [a, "shifted"])
    small = (
        tree[a]
        .to_dataset()
        .isel(y=slice(0, 10))
        .assign_coords(wavelength=tree[a].wavelength + 100.0)
    )
    t2["small"] = xr.DataTree(small)
    with pytest.raises(ValueError, match="same observation"):
        fuse_windows(t2, [a, "small"])


def test_guess_model_on_fused_windows(tmp_path):
    tree, truth, a, b = _mg9_tree(tmp_path)
    fused = fuse_windows(tree, [a, b])
    model, rep = guess_model(fused.radiance, return_report=True)
    assert len(model.segments) == 2
    (s0, s1), (t0, t1) = model.segments
    assert s0 <= float(tree[a].wavelength.min()) and s1 >= float(tree[a].wavelength.max())
    assert t0 <= float(tree[b].wavelength.min()) and t1 >= float(tree[b].wavelength.max())
    assert {"mg_9 706.06", "mg_9 749.55", "s_4 748.40", "s_4 750.22", "o_3 703.85"} <= set(
        model.lines
    )
    assert rep.offset == pytest.approx([0.25, 0.25], abs=0.02)  # one per segment
    assert len(rep.background) == 2
    # the locking use case: Mg IX 706 and 749 (different windows), and the S IV pair, tied
    model.tie_centroid("mg_9 749.55", "mg_9 706.06")
    model.tie_centroid("s_4 750.22", "s_4 748.40")
    assert model.tie_of("mg_9 749.55", "centroid") == (
        "tied",
        "mg_9 706.06",
        pytest.approx(749.552 - 706.060),
    )
    # 3 per line, a linear background (the default degree 1) per segment, minus the 2 ties
    assert model.n_free == 3 * len(model.lines) + 2 * 2 - 2


# ----------------------------------------------------------------------------- options
def _documented_defaults(doc: str) -> dict:
    """``{name: default}`` from numpydoc lines ``name : type, default X`` / ``, optional``."""
    import ast
    import re

    out = {}
    for m in re.finditer(r"^    (\w+) : [^\n]*?, (default (.+)|optional)$", doc, re.M):
        out[m.group(1)] = ast.literal_eval(m.group(3)) if m.group(3) else None
    return out


def test_options_defaults_are_the_documented_ones():
    import dataclasses

    fields = {f.name: f.default for f in dataclasses.fields(GuessOptions)}
    assert len(fields) == 12
    # the options' docstring documents every setting with its default; guess_model names them
    assert _documented_defaults(GuessOptions.__doc__) == fields
    assert all(f"``{name}``" in guess_model.__doc__ for name in fields)
    assert GuessOptions() == GuessOptions(**fields)
    # what the report records: min_separation resolved to width, lists for JSON
    settings = GuessOptions().as_settings()
    assert settings["min_separation"] == fields["width"] == 0.4
    assert settings["amplitude_bounds"] == [None, None] and settings["width_bounds"] is None


def test_options_override_and_validation():
    opts = GuessOptions(min_snr=3.0, width_bounds=(0.5, 2.0))
    assert opts.with_settings({}) is opts
    new = opts.with_settings({"min_snr": 7.0, "background_degree": 0})
    assert (new.min_snr, new.background_degree, new.width_bounds) == (7.0, 0, (0.5, 2.0))
    assert opts.min_snr == 3.0  # frozen: the original is unchanged
    with pytest.raises(TypeError, match=r"'min_snrr'.*settings are max_offset"):
        opts.with_settings({"min_snrr": 1.0})
    for bad in ({"width_bounds": (1.2, 2.0)}, {"width_bounds": (0.5, 0.9)}):
        with pytest.raises(ValueError, match="width_bounds must satisfy"):
            GuessOptions(**bad)
    for key in ("max_offset", "width", "refine_range", "centroid_range"):
        with pytest.raises(ValueError, match=f"{key} must be finite and > 0"):
            GuessOptions(**{key: 0.0})
    for bad in ("linear", 3, -1):
        with pytest.raises(ValueError, match="background_degree must be 'auto', 0, 1 or 2"):
            GuessOptions(background_degree=bad)
    for bad in (-0.5, "1"):
        with pytest.raises(ValueError, match="weak_pixel_snr must be >= 0 or None"):
            GuessOptions(weak_pixel_snr=bad)
    assert GuessOptions(weak_pixel_snr=None).weak_pixel_snr is None


def test_options_and_keywords_give_the_same_guess():
    # Mg VIII 772 is weak: min_snr decides whether it is in the model
    ds = make_spectra(40, lines=(("ne_8", 770.428, 2.0), ("mg_8", 772.262, 0.01)), seed=4)
    rad, err = ds.radiance, ds.error
    by_keyword, rep_k = guess_model(rad, error=err, min_snr=0.0, return_report=True)
    by_options, rep_o = guess_model(
        rad, error=err, options=GuessOptions(min_snr=0.0), return_report=True
    )
    assert by_keyword == by_options and "mg_8 772.26" in by_options.lines
    assert rep_k.settings == rep_o.settings == GuessOptions(min_snr=0.0).as_settings()
    # a keyword overrides the options' field
    overridden = guess_model(rad, error=err, options=GuessOptions(min_snr=0.0), min_snr=5.0)
    assert overridden == guess_model(rad, error=err) and overridden.lines == ["ne_8 770.42"]
    # the accessor is the function
    assert rad.saffron.guess_model(error=err, options=GuessOptions(min_snr=0.0)) == by_options


def test_unknown_setting_is_named():
    ds = make_spectra(10, seed=0)
    tree = xr.DataTree.from_dict({"w": ds})
    calls = [
        lambda: guess_model(ds.radiance, min_snrr=3.0),
        lambda: ds.radiance.saffron.guess_model(min_snrr=3.0),
        lambda: guess_models(tree, min_snrr=3.0),
        lambda: tree.saffron.guess_models(min_snrr=3.0),
    ]
    for call in calls:
        with pytest.raises(TypeError, match="unknown setting.*'min_snrr'"):
            call()
    with pytest.raises(TypeError, match="options must be a GuessOptions"):
        guess_model(ds.radiance, options={"min_snr": 3.0})


def test_guess_models_options(composition):
    tree, _ = composition
    first = sorted(tree.children)[0]
    opts = GuessOptions(background_degree=0, centroid_range=0.3)
    models = guess_models(tree, windows=[first], options=opts)
    assert models == tree.saffron.guess_models(windows=[first], options=opts)
    assert models == guess_models(tree, windows=[first], background_degree=0, centroid_range=0.3)
    expected = guess_model(tree[first].radiance, error=tree[first].ds.get("error"), options=opts)
    assert models[first] == expected and expected.background_degree == 0
