"""FIP-bias maps without ChiantiPy: shipped table, DEMs, abundances, LCR, maps, forward model.

Every test here runs with ``XUVTOP`` unset (the shipped contribution table serves the default
lines); DEMs outside the shipped reference set are read from the CHIANTI subset folder
(``xuvtop`` fixture) by explicit path. ``pytest -s`` prints the recovered FIP biases.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from scipy.integrate import trapezoid

import saffron_xr  # noqa: F401  (registers the .fip accessor)
from saffron_xr import fip
from saffron_xr.catalog import LineCatalog
from saffron_xr.fip.contribution import density_weights
from saffron_xr.testing import raise_if_dask_computes

LOW = ["s_4 750.22", "s_5 786.47"]
HIGH = ["n_3 991.58", "n_4 765.15"]
ACCEPTANCE_LINES = LOW + HIGH + ["ne_8 770.42", "mg_9 706.06"]


@pytest.fixture(autouse=True)
def _no_chianti(monkeypatch, tmp_path):
    """No CHIANTI for the library; a private cache folder."""
    monkeypatch.delenv("XUVTOP", raising=False)
    monkeypatch.setenv("SAFFRON_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def table():
    return fip.load_contribution_table()


def _params_from_radiance(radiance, rel_error, rng, width=0.35):
    """A fitted-parameter Dataset (amplitude, width, errors) with the given radiances."""
    width_da = xr.full_like(radiance, width).assign_attrs(units="Angstrom")
    amplitude = (radiance / (width_da * np.sqrt(2 * np.pi) / 10)).assign_attrs(
        units="W m-2 sr-1 nm-1"
    )
    amp_err = rel_error * amplitude
    noisy = amplitude + amp_err * rng.standard_normal(amplitude.shape)
    return xr.Dataset(
        {
            "amplitude": noisy.assign_attrs(units="W m-2 sr-1 nm-1"),
            "amplitude_err": amp_err.assign_attrs(units="W m-2 sr-1 nm-1"),
            "width": width_da,
            "width_err": xr.zeros_like(width_da).assign_attrs(units="Angstrom"),
        }
    )


# ------------------------------------------------------------------------------ table


def test_shipped_table_layout_and_provenance(table):
    assert table.dims == ("line", "density", "temperature")
    assert table.attrs["units"] == "erg cm3 s-1 sr-1"
    for key in ("chianti_version", "chiantipy_version", "database_sha256", "generator", "ioneq"):
        assert table.attrs[key], key
    np.testing.assert_allclose(
        np.log10(table.temperature), fip.contribution.DEFAULT_LOG_TEMPERATURE
    )
    np.testing.assert_allclose(np.log10(table.density), fip.contribution.DEFAULT_LOG_DENSITY)
    assert float(np.log10(table.temperature[0])) == pytest.approx(4.5)
    assert float(np.log10(table.temperature[-1])) == pytest.approx(7.0)
    assert np.all(table.values >= 0) and np.all(table.max("temperature") > 0)
    assert all(table.transitions.values), "every line names its CHIANTI transitions"


def test_shipped_table_covers_default_catalog(table):
    missing = sorted(set(LineCatalog.default().names) - set(table.line.values))
    assert not missing, (
        f"default catalog lines {missing} are not in the shipped contribution table; "
        "regenerate it: XUVTOP=../shared/chianti python tools/make_contribution_table.py"
    )
    assert set(ACCEPTANCE_LINES) <= set(table.line.values)


def test_contribution_functions_from_table_without_xuvtop(table):
    g = fip.contribution_functions(ACCEPTANCE_LINES, density=[1e9, 1e10])
    assert list(g.line.values) == ACCEPTANCE_LINES
    xr.testing.assert_identical(g, table.sel(line=ACCEPTANCE_LINES, density=[1e9, 1e10]))
    peaks = np.log10(g.sel(density=1e9).idxmax("temperature"))
    expected = [5.1, 5.2, 4.95, 5.2, 5.8, 6.0]
    print("\nshipped table, peak log T at n_e = 1e9:")
    for line, peak, exp in zip(ACCEPTANCE_LINES, peaks.values, expected, strict=True):
        print(f"  {line:<12s} {peak:.2f} (expected {exp})")
    np.testing.assert_allclose(peaks.values, expected, atol=0.1)


def test_contribution_functions_errors_without_chianti():
    with pytest.raises(fip.ChiantiUnavailableError, match="XUVTOP.*xuvtop=|ChiantiPy"):
        fip.contribution_functions(["fe_12 1242.00"])
    with pytest.raises(fip.ChiantiUnavailableError, match="ChiantiPy") as info:
        fip.contribution_functions(["o_4 554.51", "ne_8 770.42"])
    assert "o_4 554.51" in str(info.value) and "XUVTOP" in str(info.value)
    with pytest.raises(fip.ChiantiUnavailableError, match="temperature"):
        fip.contribution_functions(["ne_8 770.42"], temperature=[1.23e5])
    with pytest.raises(fip.ChiantiUnavailableError, match="abundance"):
        fip.contribution_functions(["ne_8 770.42"], abundance="sun_coronal_2021_chianti")
    with pytest.raises(ValueError, match="form"):
        fip.contribution_functions(["Ne VIII 770"])
    with pytest.raises(ValueError, match="increasing"):
        fip.contribution_functions(["ne_8 770.42"], density=[1e10, 1e9])


def test_explicit_xuvtop_that_is_not_chianti(tmp_path):
    with pytest.raises(fip.ChiantiUnavailableError, match="not a CHIANTI database"):
        fip.contribution_functions(["ne_8 770.42"], xuvtop=tmp_path)


def test_cache_dir_location(monkeypatch, tmp_path):
    monkeypatch.setenv("SAFFRON_CACHE_DIR", str(tmp_path / "c"))
    assert fip.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("SAFFRON_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    expected = {
        "linux": tmp_path / "xdg" / "saffron_xr",
        "darwin": tmp_path / "home" / "Library" / "Caches" / "saffron_xr",
    }
    assert fip.cache_dir() == expected.get(sys.platform, fip.cache_dir())
    assert Path.cwd() not in fip.cache_dir().parents and fip.cache_dir() != Path.cwd()


# ------------------------------------------------------------------------- DEMs, abundances


def test_read_dem_shipped_matches_chianti(xuvtop):
    for name in fip.REFERENCE_DEMS:
        shipped = fip.read_dem(name)
        original = fip.read_dem(name, xuvtop=xuvtop)
        assert shipped.attrs["units"] == "cm-5 K-1" and shipped.name == name
        xr.testing.assert_allclose(shipped, original)
    qs = fip.read_dem("quiet_sun")
    assert float(qs.temperature[0]) == pytest.approx(1e4)
    assert float(qs[0]) == pytest.approx(10**26.391)
    assert "Vernazza" in qs.attrs["comment"]


def test_read_dem_other_and_missing(xuvtop):
    flare = fip.read_dem(xuvtop / "dem" / "flare.dem")
    assert flare.name == "flare" and float(np.log10(flare.temperature[-1])) == pytest.approx(7.4)
    with pytest.raises(FileNotFoundError, match="XUVTOP"):
        fip.read_dem("flare")  # not shipped, no XUVTOP
    with pytest.raises(FileNotFoundError, match="no such"):
        fip.read_dem("nonexistent", xuvtop=xuvtop)


def test_dem_on_grid_and_integral():
    qs = fip.read_dem("quiet_sun")
    t = 10 ** np.array([3.5, 4.0, 4.05, 6.6, 6.7])
    on = fip.dem_on_grid(qs, t)
    assert on[0] == 0 and on[-1] == 0
    assert float(on[1]) == pytest.approx(10**26.391)
    assert float(np.log10(on[2])) == pytest.approx((26.391 + 25.383) / 2)
    # integral of a flat G = 1 equals a trapezoid integral of the DEM
    temperature = np.geomspace(1e5, 1e6, 201)
    g = xr.DataArray(np.ones((1, 201)), dims=("line", "temperature"),
                     coords={"temperature": temperature})  # fmt: skip
    expected = trapezoid(fip.dem_on_grid(qs, temperature).values, temperature)
    assert float(fip.integrate_dem(g, qs)[0]) == pytest.approx(expected)


def test_read_abundance_shipped_and_file(xuvtop):
    shipped = fip.read_abundance(fip.DEFAULT_PHOTOSPHERIC)
    from_file = fip.read_abundance(fip.DEFAULT_PHOTOSPHERIC, xuvtop=xuvtop)
    np.testing.assert_allclose(shipped.values, from_file.values)
    assert float(shipped.sel(element="H")) == 1.0
    assert float(shipped.sel(element="S")) == pytest.approx(10 ** (7.14 - 12))
    assert float(shipped.sel(element="N")) == pytest.approx(10 ** (7.78 - 12))
    coronal = fip.read_abundance(fip.DEFAULT_CORONAL)
    # Feldman's coronal Mg is ~4x photospheric, Ne is not enhanced
    assert float(coronal.sel(element="Mg") / shipped.sel(element="Mg")) > 2.5
    with pytest.raises(FileNotFoundError, match="shipped sets"):
        fip.read_abundance("no_such_set")


# ------------------------------------------------------------------------ interpolation


def test_density_interpolation_is_linear_in_log_n():
    grid = 10.0 ** np.array([8.0, 9.0, 9.5, 10.0])
    obj = xr.DataArray([[1.0, 3.0, 4.0, 10.0]], dims=("line", "density"),
                       coords={"density": grid})  # fmt: skip
    got = fip.interp_log_density(obj, [1e8, 10**8.5, 10**9.25, 1e10, 1e7, 1e11])
    np.testing.assert_allclose(got.values[0], [1, 2, 3.5, 10, np.nan, np.nan])
    density_map = xr.DataArray(da.from_array(10 ** np.array([[8.5, 9.75]]), chunks=1),
                               dims=("y", "x"))  # fmt: skip
    with raise_if_dask_computes():
        lazy = fip.interp_log_density(obj, density_map)
    assert isinstance(lazy.data, da.Array)
    np.testing.assert_allclose(lazy.values[0], [[2.0, 7.0]])
    w = density_weights(grid, 10**9.2)
    assert float(w.sum()) == pytest.approx(1.0)


# ------------------------------------------------------------------------------ LCR


def test_lcr_coefficients_reference_ratios():
    c = fip.lcr_coefficients(LOW, HIGH)
    assert c.coefficient.dims == ("line", "density") and c.sizes["density"] == 21
    assert list(c.group.values) == ["low", "low", "high", "high"]
    assert np.all(c.coefficient.values >= 0)
    assert c.coefficient.attrs["units"]
    worst = float(np.abs(c.reference_ratio - 1).max())
    print(f"\nLCR {LOW}/{HIGH}: worst reference-DEM ratio over the density grid: 1 +- {worst:.4f}")
    assert worst < 0.02
    single = fip.lcr_coefficients(LOW, HIGH, density=10**9.1)
    assert single.sizes["density"] == 1
    assert float(np.abs(single.reference_ratio - 1).max()) < 0.02
    with pytest.raises(ValueError, match="outside"):
        fip.lcr_coefficients(LOW, HIGH, density=1e14)
    with pytest.raises(ValueError, match="both"):
        fip.lcr_coefficients(LOW, LOW)


@pytest.mark.parametrize("density", [1e8, 1e9, 1e10])
def test_acceptance_recovered_fip_bias(xuvtop, density):
    """Known FIP bias 1, 2, 4 under each reference DEM (5 %) and other DEMs (20 %)."""
    lines = LOW + HIGH
    dems = {name: fip.read_dem(name) for name in fip.REFERENCE_DEMS}
    others = {
        name: fip.read_dem(xuvtop / "dem" / f"{name}.dem") for name in ("flare", "prominence")
    }
    truth = xr.DataArray([1.0, 2.0, 4.0], dims="case")
    print(f"\nLCR S IV+S V / N III+N IV, n_e = {density:.0e} cm-3 (truth 1, 2, 4)")
    for group, tolerance in ((dems, 0.05), (others, 0.20)):
        for name, dem in group.items():
            rad = fip.forward_radiances(dem, lines, density=density, fip_bias=truth)
            ds = xr.Dataset({"radiance": rad, "radiance_err": 0.01 * rad})
            got = fip.lcr(ds, LOW, HIGH, density=density).fip_bias
            rel = got / truth - 1
            print(f"  {name:<14s} recovered {np.round(got.values, 3)}  "
                  f"(max error {float(np.abs(rel).max()):.1%}, limit {tolerance:.0%})")  # fmt: skip
            assert float(np.abs(rel).max()) < tolerance, name


def test_two_line_ratio_exact_for_its_dem():
    lines = ["mg_9 706.06", "ne_8 770.42"]
    rad = fip.forward_radiances(
        "active_region", lines, fip_bias=xr.DataArray([1.0, 3.0], dims="c")
    )
    ds = xr.Dataset({"radiance": rad, "radiance_err": 0.02 * rad})
    out = fip.two_line_ratio(ds, "mg_9 706.06", "ne_8 770.42", dem="active_region")
    np.testing.assert_allclose(out.fip_bias.values, [1.0, 3.0], rtol=1e-9)
    # 2 % errors on both lines -> sqrt(2) * 2 % on the ratio
    np.testing.assert_allclose(out.fip_bias_err.values, np.sqrt(2) * 0.02 * out.fip_bias.values)
    wrong = fip.two_line_ratio(ds, "mg_9 706.06", "ne_8 770.42", dem="coronal_hole")
    print(f"\nMg IX/Ne VIII normalised on the wrong DEM: {wrong.fip_bias.values} (truth 1, 3)")
    assert not np.allclose(wrong.fip_bias.values, [1.0, 3.0], rtol=0.05)


# ----------------------------------------------------------------------------- maps


@pytest.fixture(scope="module")
def raster():
    """A 30 x 40 raster of fitted parameters with a known FIP-bias map (quiet-Sun DEM)."""
    rng = np.random.default_rng(8)
    truth = xr.DataArray(1.0 + 3.0 * rng.random((30, 40)), dims=("y", "x"))
    rad = fip.forward_radiances("quiet_sun", LOW + HIGH, density=1e9, fip_bias=truth)
    rad = rad / float(rad.max()) * 50.0  # a few tens of W m-2 sr-1 nm-1 in amplitude
    params = _params_from_radiance(rad.transpose("line", "y", "x"), 0.01, rng)
    return params, truth


def test_lcr_map_from_parameters(raster):
    params, truth = raster
    out = params.fip.lcr(LOW, HIGH, density=1e9)
    assert set(out.data_vars) == {"fip_bias", "fip_bias_err"}
    assert out.fip_bias.dims == ("y", "x")
    assert out.fip_bias.attrs["units"] == "1" and out.fip_bias_err.attrs["units"] == "1"
    for key in ("method", "coefficients", "reference_ratio", "low_fip_lines", "abundance",
                "contribution_chianti_version", "saffron_xr_version"):  # fmt: skip
        assert key in out.attrs, key
    assert out.attrs["density"] == 1e9
    pull = (out.fip_bias - truth) / out.fip_bias_err
    rel = np.abs(out.fip_bias / truth - 1)
    print(f"\nLCR map, 1 % amplitude noise: median |error| {float(rel.median()):.2%}, "
          f"pull std {float(pull.std()):.2f}")  # fmt: skip
    assert float(rel.median()) < 0.02
    assert 0.8 < float(pull.std()) < 1.2, "errors must describe the scatter"
    assert abs(float(pull.mean())) < 0.15


def test_lcr_map_is_lazy_and_chunk_independent(raster):
    params, _ = raster
    eager = fip.lcr(params, LOW, HIGH, density=1e9)
    lazy_params = params.chunk(y=7, x=11)
    with raise_if_dask_computes():
        lazy = lazy_params.fip.lcr(LOW, HIGH, density=1e9)
    assert isinstance(lazy.fip_bias.data, da.Array)
    assert isinstance(lazy.fip_bias_err.data, da.Array)
    xr.testing.assert_allclose(lazy.compute(), eager, rtol=1e-12)
    other = fip.lcr(params.chunk(y=30, x=5), LOW, HIGH, density=1e9).compute()
    xr.testing.assert_allclose(other, eager, rtol=1e-12)


def test_lcr_with_density_map():
    rng = np.random.default_rng(3)
    log_n = xr.DataArray(8.0 + 3.0 * rng.random((6, 5)), dims=("y", "x"))
    log_n[0, 0] = 13.0  # outside the grid -> NaN
    density = 10**log_n
    truth = xr.DataArray(1.0 + rng.random((6, 5)), dims=("y", "x"))
    rad = fip.forward_radiances("coronal_hole", LOW + HIGH, density=density, fip_bias=truth)
    ds = xr.Dataset({"radiance": rad, "radiance_err": 0.01 * rad}).chunk(y=3)
    with raise_if_dask_computes():
        out = ds.fip.lcr(LOW, HIGH, density=density.chunk(y=3))
    out = out.compute()
    assert out.attrs["density"] == "map"
    assert np.isnan(out.fip_bias[0, 0]) and np.isnan(out.fip_bias_err[0, 0])
    rel = np.abs(out.fip_bias / truth - 1).values.ravel()[1:]
    print(f"\nLCR with a density map (log n 8-11), coronal hole: max error {rel.max():.2%}")
    assert rel.max() < 0.05
    # a pixel's value matches the scalar-density computation at its density
    one = fip.lcr(ds.isel(y=[2], x=[3]), LOW, HIGH, density=float(density[2, 3]))
    assert float(one.fip_bias[0, 0]) == pytest.approx(float(out.fip_bias[2, 3]), rel=0.02)


def test_map_nan_and_bad_pixels(raster):
    params, _ = raster
    bad = params.copy(deep=True)
    bad["amplitude"][0, 0, 0] = np.nan  # a low-FIP line missing
    bad["amplitude"][2, 1, 1] = -bad["amplitude"][2, 1, 1] * 1e3  # negative high-FIP sum
    out = fip.lcr(bad, LOW, HIGH)
    assert np.isnan(out.fip_bias[0, 0]) and np.isnan(out.fip_bias[1, 1])
    assert np.isfinite(out.fip_bias[5, 5])


def test_map_input_errors(raster):
    params, _ = raster
    with pytest.raises(KeyError, match="o_6 1031.91"):
        fip.lcr(params, LOW, ["o_6 1031.91"])
    with pytest.raises(ValueError, match="'line' dimension"):
        fip.lcr(params.isel(line=0), LOW, HIGH)
    with pytest.raises(ValueError, match="missing"):
        fip.lcr(params.drop_vars("width_err"), LOW, HIGH)


def test_accessor_signatures_match_functions():
    for name in ("lcr", "two_line_ratio"):
        method = inspect.signature(getattr(saffron_xr.accessors.FipDatasetAccessor, name))
        function = inspect.signature(getattr(fip, name))
        m = list(method.parameters.values())[1:]
        f = list(function.parameters.values())[1:]
        assert [(p.name, p.kind, p.default) for p in m] == [
            (p.name, p.kind, p.default) for p in f
        ], name


def test_forward_radiances_scaling():
    lines = ["mg_9 706.06", "ne_8 770.42", "s_5 786.47", "o_4 787.71"]
    base = fip.forward_radiances("quiet_sun", lines)
    double = fip.forward_radiances("quiet_sun", lines, fip_bias=2.0)
    assert base.attrs["units"] == "W m-2 sr-1" and np.all(base > 0)
    np.testing.assert_allclose((double / base).values, [2.0, 1.0, 2.0, 1.0])
    only_mg = fip.forward_radiances("quiet_sun", lines, fip_bias=2.0, fip_threshold=9.0)
    np.testing.assert_allclose((only_mg / base).values, [2.0, 1.0, 1.0, 1.0])
    # Ne VIII 770 in the quiet Sun: order of 1e-1..1e1 mW m-2 sr-1 ... W m-2 sr-1 scale check
    assert 1e-5 < float(base.sel(line="ne_8 770.42")) < 1e1
