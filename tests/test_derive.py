"""Derived quantities: radiance, Doppler velocity, widths, non-thermal velocity, gradients."""

from __future__ import annotations

import importlib
import inspect
import math

import dask.array as da
import numpy as np
import pytest
import xarray as xr

import saffron_xr
from saffron_xr.derive import (
    ATOMIC_WEIGHTS,
    FWHM_PER_SIGMA,
    INSTRUMENTAL_FWHM,
    SPEED_OF_LIGHT,
    correct_doppler_gradient,
    default_instrumental_fwhm,
    derive_all,
    doppler_velocity,
    fwhm,
    nonthermal_velocity,
    radiance,
    thermal_fwhm,
)
from saffron_xr.testing import raise_if_dask_computes

C = 299792.458
LINES = ["ne_8 770.42", "mg_9 706.06"]
REST = np.array([770.42, 706.06])


def _params(ny=20, nx=8, seed=0, chunks=(1, 10, 4)) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    shape = (2, ny, nx)
    amp = rng.uniform(0.5, 2.0, shape)
    cen = REST[:, None, None] + rng.normal(0, 0.05, shape)
    wid = rng.uniform(0.3, 0.5, shape)
    errs = [rng.uniform(0.01, 0.05, shape) * s for s in (1.0, 0.01, 0.02)]
    cov_aw = 0.5 * errs[0] * errs[2] * rng.uniform(-1, 1, shape)
    cov_ac = 0.3 * errs[0] * errs[1] * rng.uniform(-1, 1, shape)

    def var(a, units):
        return ("line", "y", "x"), da.from_array(a, chunks=chunks), {"units": units}

    ds = xr.Dataset(
        {
            "amplitude": var(amp, "W m-2 sr-1 nm-1"),
            "centroid": var(cen, "Angstrom"),
            "width": var(wid, "Angstrom"),
            "amplitude_err": var(errs[0], "W m-2 sr-1 nm-1"),
            "centroid_err": var(errs[1], "Angstrom"),
            "width_err": var(errs[2], "Angstrom"),
            "cov_amplitude_width": var(cov_aw, "W m-2 sr-1 nm-1 Angstrom"),
            "cov_amplitude_centroid": var(cov_ac, "W m-2 sr-1 nm-1 Angstrom"),
        },
        coords={
            "line": LINES,
            "ion": ("line", ["ne_8", "mg_9"]),
            "rest_wavelength": ("line", REST, {"units": "Angstrom"}),
            "hpln": (("y", "x"), rng.normal(size=(ny, nx)), {"units": "arcsec"}),
        },
        attrs={"DETECTOR": "SW", "SLIT_WID": 4, "EXTNAME": "test"},
    )
    ds["amplitude"][0, 0, 0] = np.nan
    return ds


@pytest.fixture
def params():
    return _params()


# ----------------------------------------------------------------------------- radiance


def test_radiance_values_units_and_covariance(params):
    with raise_if_dask_computes():
        out = radiance(params)
    p = params.compute()
    rad = out["radiance"].values
    expect = p["amplitude"] * p["width"] * math.sqrt(2 * math.pi) * 0.1
    np.testing.assert_allclose(rad, expect, rtol=1e-12)
    assert out["radiance"].attrs["units"] == "W m-2 sr-1"
    assert out["radiance_err"].attrs["units"] == "W m-2 sr-1"
    assert "long_name" in out["radiance"].attrs and "long_name" in out["radiance_err"].attrs
    assert np.isnan(rad[0, 0, 0])
    # error = sqrt(J C J^T) with the numerical Jacobian of the radiance
    a, w = p["amplitude"].values, p["width"].values
    sa, sw, caw = p["amplitude_err"].values, p["width_err"].values, p["cov_amplitude_width"].values
    ja, jw = w * math.sqrt(2 * math.pi) * 0.1, a * math.sqrt(2 * math.pi) * 0.1
    expect_err = np.sqrt(ja**2 * sa**2 + jw**2 * sw**2 + 2 * ja * jw * caw)
    np.testing.assert_allclose(out["radiance_err"].values, expect_err, rtol=1e-12)
    # without the covariance term the error changes (so the term is really used)
    no_cov = radiance(params.drop_vars("cov_amplitude_width"))["radiance_err"].values
    assert not np.allclose(no_cov[1], expect_err[1])
    np.testing.assert_allclose(no_cov, np.sqrt(ja**2 * sa**2 + jw**2 * sw**2), rtol=1e-12)
    assert out["hpln"].dims == ("y", "x")  # coordinates carried along


def test_radiance_converts_width_units(params):
    nm = params.copy()
    nm["width"] = params["width"] / 10
    nm["width"].attrs["units"] = "nm"
    nm["width_err"] = params["width_err"] / 10
    nm["width_err"].attrs["units"] = "nm"
    xr.testing.assert_allclose(radiance(nm)["radiance"], radiance(params)["radiance"])
    with pytest.raises(ValueError, match="'width'.*cannot be converted"):
        bad = params.copy()
        bad["width"].attrs["units"] = "s"
        radiance(bad)
    with pytest.raises(ValueError, match="amplitude_err"):
        radiance(params.drop_vars("amplitude_err"))


# ----------------------------------------------------------------------------- Doppler


def test_doppler_rest_reference(params):
    with raise_if_dask_computes():
        out = doppler_velocity(params, reference="rest")
    p = params.compute()
    v = C * (p["centroid"] - p["rest_wavelength"]) / p["rest_wavelength"]
    np.testing.assert_allclose(out["doppler_velocity"], v, rtol=1e-12)
    np.testing.assert_allclose(
        out["doppler_velocity_err"], C * p["centroid_err"] / p["rest_wavelength"], rtol=1e-12
    )
    assert out["doppler_velocity"].attrs["units"] == "km s-1"
    assert out["doppler_velocity"].attrs["doppler_reference"] == "rest"
    np.testing.assert_array_equal(out["doppler_reference_wavelength"], REST)
    assert out["doppler_velocity"].dims == ("line", "y", "x")


def test_doppler_median_and_column_references(params):
    with raise_if_dask_computes():
        med = doppler_velocity(params, reference="median")
        col = doppler_velocity(params, reference="column")
    v = med["doppler_velocity"].compute()
    assert med["doppler_velocity"].attrs["doppler_reference"] == "median"
    np.testing.assert_allclose(v.median(["y", "x"]), 0.0, atol=1e-9)
    ref = med["doppler_reference_wavelength"].values
    np.testing.assert_allclose(ref, params["centroid"].median(["y", "x"]).values)
    vc = col["doppler_velocity"].compute()
    assert col["doppler_reference_wavelength"].dims == ("line", "x")
    np.testing.assert_allclose(vc.median("y"), 0.0, atol=1e-9)
    assert col["doppler_velocity"].attrs["doppler_reference"] == "column"


def test_doppler_given_wavelength_and_dataarray(params):
    out = doppler_velocity(params, reference=770.0)
    assert "770.0" in out["doppler_velocity"].attrs["doppler_reference"]
    np.testing.assert_allclose(
        out["doppler_velocity"], C * (params["centroid"] - 770.0) / 770.0, rtol=1e-12
    )
    ref = xr.DataArray([770.1, 706.0], dims="line", coords={"line": LINES})
    out = doppler_velocity(params, reference=ref)
    np.testing.assert_allclose(out["doppler_reference_wavelength"], [770.1, 706.0])
    np.testing.assert_allclose(
        out["doppler_velocity"].sel(line=LINES[1]),
        C * (params["centroid"].sel(line=LINES[1]) - 706.0) / 706.0,
        rtol=1e-12,
    )
    with pytest.raises(ValueError, match="dims"):
        doppler_velocity(params, reference=xr.DataArray([1.0], dims="wavelength"))
    with pytest.raises(ValueError, match="unknown Doppler reference 'mean'"):
        doppler_velocity(params, reference="mean")
    # misaligned line labels are not silently dropped
    with pytest.raises(ValueError, match="join='exact'"):
        doppler_velocity(params, reference=ref.assign_coords(line=["a", "b"]))
    with pytest.raises(ValueError, match="rest_wavelength"):
        doppler_velocity(params.drop_vars("rest_wavelength"), "rest")


# ----------------------------------------------------------------------------- widths


def test_fwhm(params):
    out = fwhm(params)
    np.testing.assert_allclose(out["fwhm"], params["width"] * 2.3548200450309493, rtol=1e-14)
    np.testing.assert_allclose(out["fwhm_err"], params["width_err"] * FWHM_PER_SIGMA)
    assert out["fwhm"].attrs["units"] == "Angstrom"


def test_thermal_width_by_hand():
    ds = xr.Dataset(
        coords={
            "line": ["fe_12 195.12"],
            "ion": ("line", ["fe_12"]),
            "rest_wavelength": ("line", [195.12]),
        }
    )
    th = thermal_fwhm(ds, log_t=6.2).item()
    k, amu = 1.380649e-23, 1.66053906892e-27
    vt = math.sqrt(2 * k * 10**6.2 / (55.845 * amu)) / 1e3
    assert th == pytest.approx(195.12 / C * math.sqrt(4 * math.log(2)) * vt, rel=1e-12)
    assert th == pytest.approx(0.0235, abs=5e-4)  # ~0.024 Angstrom, the textbook value
    assert ATOMIC_WEIGHTS["ne"] == pytest.approx(20.18, abs=0.01)
    with pytest.raises(ValueError, match="'xx_3'"):
        thermal_fwhm(ds.assign_coords(ion=("line", ["xx_3"])), log_t=6.0)
    # an empty ion (lines added without one) falls back to the line id
    assert thermal_fwhm(ds.assign_coords(ion=("line", [""])), log_t=6.2).item() == th


def _synthetic_widths(xi_kms, log_t, inst_fwhm, lam0=770.42, mass=20.180):
    k, amu = 1.380649e-23, 1.66053906892e-27
    vt2 = 2 * k * 10**log_t / (mass * amu) / 1e6
    w2 = inst_fwhm**2 + 4 * math.log(2) * (lam0 / C) ** 2 * (vt2 + np.asarray(xi_kms) ** 2)
    return np.sqrt(w2) / FWHM_PER_SIGMA  # Gaussian sigma


def test_nonthermal_velocity_recovers_known_parts():
    xi_true = np.array([[0.0, 5.0, 20.0, 45.0, 80.0]])
    sigma = _synthetic_widths(xi_true, 5.8, 0.761)
    ds = xr.Dataset(
        {
            "width": (("line", "x"), sigma, {"units": "Angstrom"}),
            "width_err": (("line", "x"), np.full_like(sigma, 0.005), {"units": "Angstrom"}),
        },
        coords={
            "line": ["ne_8 770.42"],
            "ion": ("line", ["ne_8"]),
            "rest_wavelength": ("line", [770.42]),
        },
    )
    out = nonthermal_velocity(ds, log_t=5.8, instrumental_fwhm=0.761)
    got = out["nonthermal_velocity"].values[0]
    assert np.isnan(got[0]) or abs(got[0]) < 1.0  # zero non-thermal part: 0 or NaN
    np.testing.assert_allclose(got[1:], xi_true[0, 1:], atol=1e-6)
    assert out["nonthermal_velocity"].attrs["units"] == "km s-1"
    # narrower than thermal + instrumental: NaN, never imaginary or negative
    narrow = ds.copy()
    narrow["width"] = ds["width"] * 0.9
    res = nonthermal_velocity(narrow, log_t=5.8, instrumental_fwhm=0.761)
    values = res["nonthermal_velocity"].values
    assert np.isnan(values[0, :3]).all() and not np.iscomplexobj(values)
    assert (values[np.isfinite(values)] > 0).all()
    # error: finite-difference derivative of xi(W) times sigma_W
    h = 1e-7
    up = ds.copy()
    up["width"] = ds["width"] + h
    dxi = (
        nonthermal_velocity(up, log_t=5.8, instrumental_fwhm=0.761)["nonthermal_velocity"] - got
    ) / h
    np.testing.assert_allclose(
        out["nonthermal_velocity_err"].values[0, 2:], (dxi * 0.005).values[0, 2:], rtol=1e-4
    )


def test_nonthermal_temperature_sources(params):
    with pytest.raises(ValueError, match=r"no formation temperature.*log_t="):
        nonthermal_velocity(params.assign_coords(line=["xx_1 1.0", "yy_2 2.0"]))
    by_dict = nonthermal_velocity(params, log_t={LINES[0]: 5.8, LINES[1]: 6.0})
    by_coord = nonthermal_velocity(params.assign_coords(log_t=("line", [5.8, 6.0])))
    np.testing.assert_allclose(
        by_dict["nonthermal_velocity"].values, by_coord["nonthermal_velocity"].values
    )
    assert by_coord["thermal_fwhm"].attrs["log_t_source"].startswith("log_t coordinate")
    with pytest.raises(ValueError, match="mg_9 706.06"):
        nonthermal_velocity(params, log_t={LINES[0]: 5.8})


def test_formation_temperature_from_catalog(params):
    out = nonthermal_velocity(params)
    assert out["thermal_fwhm"].attrs["log_t_source"] == "default line catalog"
    expect = thermal_fwhm(params, log_t={LINES[0]: 5.8, LINES[1]: 6.0})
    catalog = saffron_xr.LineCatalog.default()
    want = [catalog[line].log_t for line in LINES]
    np.testing.assert_allclose(
        out["thermal_fwhm"], thermal_fwhm(params, log_t=dict(zip(LINES, want, strict=True)))
    )
    assert expect.shape == (2,)


def test_default_instrumental_width_per_slit(params):
    inst = default_instrumental_fwhm(params)
    np.testing.assert_allclose(inst, [INSTRUMENTAL_FWHM[("SW", 4)]] * 2)
    assert inst.values[0] == pytest.approx(7.8 * 0.097517)
    assert "release notes" in inst.attrs["source"]
    lw = default_instrumental_fwhm(params, detector="LW", slit_width=2)
    assert lw.values[0] == pytest.approx(9.4 * 0.09623)
    no_attrs = params.copy()
    no_attrs.attrs = {}
    both = xr.Dataset(coords={"line": ["a 1", "b 2"], "rest_wavelength": ("line", [770.4, 977.0])})
    np.testing.assert_allclose(
        default_instrumental_fwhm(both),
        [INSTRUMENTAL_FWHM[("SW", 2)], INSTRUMENTAL_FWHM[("LW", 2)]],
    )
    with pytest.raises(ValueError, match="30 arcsec"):
        default_instrumental_fwhm(params, slit_width=30)
    out = nonthermal_velocity(params, log_t=5.8)
    assert out["instrumental_fwhm"].attrs["source"].endswith("slit 4 arcsec")


# ----------------------------------------------------------------------------- gradient


@pytest.mark.parametrize("dim", ["x", "y"])
def test_doppler_gradient_removed_from_all_lines(dim):
    rng = np.random.default_rng(5)
    ny, nx = 60, 40
    base = rng.normal(0, 3.0, (2, ny, nx))  # km/s, no trend
    pos = np.arange(ny if dim == "y" else nx, dtype=float)
    trend = 4.0 - 0.25 * pos + 0.002 * pos**2
    shaped = trend[:, None] if dim == "y" else trend[None, :]
    v = xr.DataArray(
        da.from_array(base + shaped[None], chunks=(1, 20, 20)),
        dims=("line", "y", "x"),
        coords={"line": LINES},
        attrs={"units": "km s-1"},
    )
    ds = xr.Dataset({"doppler_velocity": v})
    with raise_if_dask_computes():
        out = correct_doppler_gradient(ds, reference_line=LINES[1], dim=dim, degree=2)
    coeffs = out["doppler_trend_coefficients"].values
    assert np.all(np.abs(coeffs - [4.0, -0.25, 0.002]) < [0.6, 0.05, 0.001]), coeffs
    corrected = out["doppler_velocity"].values
    resid_trend = np.median(corrected[0], axis=0 if dim == "y" else 1)
    assert np.abs(corrected - base).max() < 1.0
    assert np.abs(np.median(corrected - base)) < 0.3
    assert np.std(resid_trend) < 1.0 < np.std(trend)
    assert out["doppler_velocity"].attrs["doppler_gradient_reference_line"] == LINES[1]
    assert out["doppler_trend"].dims == (dim,)
    assert out["doppler_trend"].attrs["units"] == "km s-1"


def test_doppler_gradient_from_parameters(params):
    out = params.saffron.correct_doppler_gradient(dim="x", degree=1, reference="rest")
    assert "doppler_trend" in out and out["doppler_velocity"].dims == ("line", "y", "x")
    with pytest.raises(ValueError, match="'z'"):
        correct_doppler_gradient(params, dim="z")
    with pytest.raises(ValueError, match="reference_line 'fe_12 195.12'"):
        correct_doppler_gradient(params, reference_line="fe_12 195.12")


# ----------------------------------------------------------------------------- all


def test_derive_all_and_accessors(params):
    with raise_if_dask_computes():
        out = derive_all(params, doppler_reference="median", log_t=5.9)
    for name in (
        "radiance",
        "radiance_err",
        "doppler_velocity",
        "doppler_velocity_err",
        "fwhm",
        "nonthermal_velocity",
        "amplitude",
    ):
        assert name in out, name
        assert "units" in out[name].attrs
    xr.testing.assert_identical(params.saffron.radiance(), radiance(params))
    xr.testing.assert_identical(params.saffron.fwhm(), fwhm(params))
    xr.testing.assert_identical(
        params.saffron.doppler_velocity("column"), doppler_velocity(params, "column")
    )
    xr.testing.assert_identical(
        params.saffron.nonthermal_velocity(log_t=5.9), nonthermal_velocity(params, log_t=5.9)
    )
    assert saffron_xr.radiance is radiance and saffron_xr.derive_all is derive_all
    assert SPEED_OF_LIGHT == C


# ----------------------------------------------------------------------------- with the fitter


def _single_line_model(amplitude, centroid, width):
    model = saffron_xr.LineModel()
    model.add_line("ne_8 770.42", amplitude=amplitude, centroid=centroid, width=width)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("snr", [20.0, 10.0])
def test_monte_carlo_error_propagation(snr):
    """Propagated radiance and velocity errors match the scatter of 1,000 noisy fits."""
    rng = np.random.default_rng(int(snr))
    wl = 767.7 + 0.0975 * np.arange(50)
    amp, cen, sig, bg = 1.0, 770.1, 0.35, 0.15
    truth = amp * np.exp(-0.5 * ((wl - cen) / sig) ** 2) + bg
    # photon-like noise: larger in the line core; peak S/N = amp / noise at the peak
    noise = (amp / snr) * np.sqrt(0.3 + 0.7 * truth / (amp + bg))
    n = 1000
    data = xr.DataArray(
        truth + rng.normal(size=(n, wl.size)) * noise,
        dims=("realisation", "wavelength"),
        coords={"wavelength": wl},
        attrs={"units": "W m-2 sr-1 nm-1"},
    )
    error = xr.full_like(data, 0.0) + noise
    params = saffron_xr.fit_lines(data, _single_line_model(0.8, 770.0, 0.3), error=error)
    params = params.compute()
    assert (params["status"] == 0).all()
    rad = radiance(params)
    vel = doppler_velocity(params, reference="rest")
    ratios = {}
    for name, ds in (("radiance", rad), ("doppler_velocity", vel)):
        scatter = float(ds[name].std())
        propagated = float(ds[f"{name}_err"].median())
        ratios[name] = propagated / scatter
        print(f"S/N {snr:g} {name}: scatter {scatter:.4g}, propagated {propagated:.4g}")
    assert 0.9 < ratios["radiance"] < 1.1
    assert 0.9 < ratios["doppler_velocity"] < 1.1
    # the amplitude-width covariance matters: without it the radiance error is far off
    no_cov = radiance(params.drop_vars("cov_amplitude_width"))["radiance_err"].median()
    assert float(no_cov) / float(rad["radiance"].std()) > 1.2
    # the mean radiance is the true one (the sqrt(2 pi) and Angstrom -> nm factors)
    true_rad = amp * sig * math.sqrt(2 * math.pi) * 0.1
    assert float(rad["radiance"].mean()) == pytest.approx(true_rad, rel=0.01)


@pytest.mark.slow
def test_nonthermal_velocity_from_fitted_spectra():
    """Spectra broadened by known thermal, instrumental and non-thermal parts, then fitted."""
    rng = np.random.default_rng(11)
    wl = 767.7 + 0.0975 * np.arange(50)
    xi, log_t, inst = 25.0, 5.8, INSTRUMENTAL_FWHM[("SW", 4)]
    sigma = float(_synthetic_widths(xi, log_t, inst))
    profile = 2.0 * np.exp(-0.5 * ((wl - 770.3) / sigma) ** 2) + 0.05
    data = xr.DataArray(
        profile + rng.normal(0, 0.004, (200, wl.size)),
        dims=("y", "wavelength"),
        coords={"wavelength": wl},
        attrs={"units": "W m-2 sr-1 nm-1"},
    )
    params = saffron_xr.fit_lines(
        data, _single_line_model(1.5, 770.2, 0.3), error=xr.full_like(data, 0.004)
    )
    params = params.assign_attrs(DETECTOR="SW", SLIT_WID=4)
    out = nonthermal_velocity(params, log_t=log_t).compute()
    got = float(out["nonthermal_velocity"].median())
    print(f"non-thermal velocity: true {xi} km/s, recovered {got:.3f} km/s")
    assert abs(got - xi) < 1.0
    # the propagated error describes the scatter of the 200 recovered values
    ratio = float(out["nonthermal_velocity"].std() / out["nonthermal_velocity_err"].median())
    assert 0.8 < ratio < 1.2


@pytest.mark.slow
def test_velocity_recovery_on_generated_raster(tmp_path):
    """Known Doppler maps of a generated composition raster, fitted end to end.

    For the pixels whose line peak S/N exceeds 20, the median (signed) velocity error is under
    0.5 km/s for every well-constrained line and over all lines together. The absolute
    errors are what photon noise allows: median |error| / propagated sigma is the 0.674 of a
    normal distribution (at S/N 20-40 the propagated sigma is 1-2 km/s, so the median
    absolute error is about 1 km/s; the test prints the figures).
    """
    from saffron_xr.testing import make_spice_l2

    truth = make_spice_l2(tmp_path, ny=96, nx=24, seed=3, xposure=60.0, include_radiance=True)
    observed = saffron_xr.open_spice(truth.attrs["path"])
    pooled_error, pooled_pull = [], []
    checked = 0
    for name in observed.children:
        radiance_ = observed[name]["radiance"]
        true = truth[name].to_dataset()
        error = true["error_true"].assign_coords(wavelength=radiance_["wavelength"])
        model = saffron_xr.guess_model(radiance_, error=error)
        params = saffron_xr.fit_lines(radiance_, model, error=error).compute()
        common = [ln for ln in params["line"].values if ln in true["line"].values]
        reference = (true["rest_wavelength"] + true["offset"]).sel(line=common)
        vel = doppler_velocity(params.sel(line=common), reference=reference, mask=None)
        wl = radiance_["wavelength"].values
        err_cube = error.transpose("y", "x", "wavelength").values
        for line in common:
            centre = true["centroid"].sel(line=line).values
            idx = np.abs(wl[None, None, :] - centre[..., None]).argmin(-1)
            peak_noise = np.take_along_axis(err_cube, idx[..., None], -1)[..., 0]
            snr = true["amplitude"].sel(line=line).values / peak_noise
            ok = (snr > 20) & (params["status"].values <= 1)
            if ok.sum() < 30:
                continue
            diff = (
                vel["doppler_velocity"].sel(line=line).values
                - true["doppler_velocity"].sel(line=line).values
            )[ok]
            sigma = vel["doppler_velocity_err"].sel(line=line).values[ok]
            pooled_error += list(diff)
            pooled_pull += list(diff / sigma)
            print(
                f"{line:14s} n={ok.sum():5d} median S/N {np.median(snr[ok]):5.1f}  "
                f"median error {np.median(diff):+.3f} km/s  median |error| "
                f"{np.median(np.abs(diff)):.3f} km/s  median sigma {np.median(sigma):.3f}"
            )
            if np.median(sigma) < 2.5:  # well-constrained (not a close blend)
                assert abs(np.median(diff)) < 0.5, line
                checked += 1
    pooled_error, pooled_pull = np.array(pooled_error), np.array(pooled_pull)
    print(
        f"all lines: {pooled_error.size} pixels, median error {np.median(pooled_error):+.3f} "
        f"km/s, median |error| {np.median(np.abs(pooled_error)):.3f} km/s"
    )
    assert checked >= 8 and pooled_error.size > 5000
    assert abs(np.median(pooled_error)) < 0.5
    assert 0.57 < np.median(np.abs(pooled_pull)) < 0.78


@pytest.mark.parametrize(
    ("accessor", "name", "module"),
    [
        ("SaffronDatasetAccessor", n, "saffron_xr.derive")
        for n in (
            "radiance",
            "doppler_velocity",
            "fwhm",
            "nonthermal_velocity",
            "line_widths",
            "correct_doppler_gradient",
            "derive_all",
        )
    ]
    + [
        ("SaffronDataArrayAccessor", "guess_model", "saffron_xr.catalog"),
        ("SaffronDataTreeAccessor", "guess_models", "saffron_xr.catalog"),
        ("SaffronDatasetAccessor", "to_netcdf", "saffron_xr.io.netcdf"),
        ("SaffronDataTreeAccessor", "to_netcdf", "saffron_xr.io.netcdf"),
        ("SaffronDatasetAccessor", "to_l3_fits", "saffron_xr.io.l3fits"),
        ("SaffronDataTreeAccessor", "to_l3_fits", "saffron_xr.io.l3fits"),
        ("SaffronDatasetAccessor", "reconstruct", "saffron_xr.io.reconstruct"),
    ]
    + [
        ("SaffronDataArrayAccessor", n, "saffron_xr.prep")
        for n in ("spice_error", "calibrate_error", "despike", "denoise", "bin_levels")
    ],
)
def test_accessor_signatures_match_functions(accessor, name, module):
    """The accessors repeat the functions' defaults: they must not drift apart."""
    method = getattr(getattr(saffron_xr.accessors, accessor), name)
    function = getattr(importlib.import_module(module), name)
    m = list(inspect.signature(method).parameters.values())[1:]
    f = list(inspect.signature(function).parameters.values())[1:]
    assert [(p.name, p.kind, p.default) for p in m] == [(p.name, p.kind, p.default) for p in f]
