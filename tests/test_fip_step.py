"""FIP-bias maps in the batch: the ``fip:`` config section and ``fip_for_file``."""

from __future__ import annotations

import copy
import json
import logging

import numpy as np
import pytest
import xarray as xr

from saffron_xr.fip import lcr_coefficients
from saffron_xr.io.netcdf import open_results, to_netcdf
from saffron_xr.pipeline.config import ConfigError, default_config, validate_config
from saffron_xr.pipeline.fip_step import fip_for_file, fip_output_path
from saffron_xr.testing import make_spice_l2

LOW = ["s_4 750.22", "s_5 786.47"]
HIGH = ["n_3 991.58", "n_4 765.15"]


# --- configuration ---------------------------------------------------------------------------


def test_default_fip_section_is_disabled_and_valid():
    cfg = validate_config({})
    assert cfg["fip"]["enabled"] is False
    assert cfg["fip"]["method"] == "lcr"
    assert cfg["fip"]["sets"][0] == {"name": "S_N", "low": LOW, "high": HIGH}
    assert cfg["fip"]["density"] == 1e9
    assert default_config()["fip"]["dems"] == ["quiet_sun", "active_region", "coronal_hole"]


def test_fip_density_forms():
    # YAML reads 1e9 (no dot) as text: it is taken as the number
    assert validate_config({"fip": {"density": "1e9"}})["fip"]["density"] == 1e9
    assert validate_config({"fip": {"density": 3 * 10**9}})["fip"]["density"] == 3e9
    assert validate_config({"fip": {"density": "ne_map"}})["fip"]["density"] == "ne_map"


@pytest.mark.parametrize(
    ("fip", "key"),
    [
        ({"method": "ratio"}, "'fip.method'"),
        ({"enabled": "yes"}, "'fip.enabled'"),
        ({"colour": 1}, "'fip.colour'"),
        ({"sets": [{"name": "a", "low": ["s_4 750.22"]}]}, "'fip.sets[0]'"),
        ({"sets": [{"name": "a", "low": LOW, "high": HIGH, "lines": []}]}, "'fip.sets[0].lines'"),
        ({"sets": [{"name": "a", "low": ["s_4 750.22", "S IV"], "high": HIGH}]}, "low[1]'"),
        ({"sets": [{"name": "a/b", "low": LOW, "high": HIGH}]}, "'fip.sets[0].name'"),
        ({"sets": [{"name": "a", "low": LOW, "high": [LOW[0]]}]}, "both in low and high"),
        (
            {"sets": [{"name": "a", "low": LOW, "high": HIGH}] * 2},
            "'fip.sets' names must be unique",
        ),
        ({"method": "two-line"}, "two-line takes exactly one low and one high"),
        ({"enabled": True, "sets": []}, "'fip.sets' must be a non-empty list"),
        ({"density": -1.0}, "'fip.density' must be positive"),
        ({"density": True}, "'fip.density'"),
        ({"dems": []}, "'fip.dems'"),
        ({"dems": ["quiet_sun", "no_such_dem"]}, "'fip.dems[1]'"),
        ({"regularization": -0.1}, "'fip.regularization'"),
    ],
)
def test_fip_config_errors_name_the_key(fip, key, monkeypatch):
    monkeypatch.delenv("XUVTOP", raising=False)
    with pytest.raises(ConfigError) as info:
        validate_config({"fip": fip}, where="campaign.yaml")
    assert key in str(info.value)
    assert str(info.value).startswith("campaign.yaml: ")


def test_fip_two_line_and_chianti_dem_accepted(xuvtop, monkeypatch):
    monkeypatch.setenv("XUVTOP", str(xuvtop))
    sets = [{"name": "Mg_Ne", "low": "mg_9 706.06", "high": ["ne_8 770.42"]}]
    fip = validate_config({"fip": {"method": "two-line", "sets": sets, "dems": ["flare"]}})["fip"]
    assert fip["sets"] == [{"name": "Mg_Ne", "low": ["mg_9 706.06"], "high": ["ne_8 770.42"]}]


def test_fip_disabled_writes_nothing(tmp_path):
    assert fip_for_file(validate_config({})["fip"], tmp_path / "x_saffron.nc", {}) is None
    assert not list(tmp_path.iterdir())


def test_fip_output_path():
    assert fip_output_path("/a/b/r_saffron.nc").as_posix() == "/a/b/r_saffron_fip.nc"
    assert fip_output_path("/a/b/r_saffron.zarr").as_posix() == "/a/b/r_saffron_fip.nc"


# --- end to end on a fitted synthetic composition raster -------------------------------------


@pytest.fixture(scope="module")
def fitted_raster(tmp_path_factory):
    """A 9-window composition raster with truth, fitted by the batch runner."""
    from saffron_xr.pipeline.runner import run

    folder = tmp_path_factory.mktemp("fip_batch")
    truth = make_spice_l2(folder / "in", ny=32, nx=16, seed=5, xposure=120.0, store_truth=True)
    cfg = validate_config(
        {
            "files": {"source": [str(folder / "in")]},
            "output": {"folder": str(folder / "out")},
            "scheduler": {"kind": "threads"},
            "chunks": {"y": 32, "x": 16},
        }
    )
    summary = run(cfg)
    assert summary.ok, str(summary)
    (results,) = sorted((folder / "out").glob("*_saffron.nc"))
    return truth, results, cfg


def _enabled(cfg, **changes):
    fip = copy.deepcopy(cfg["fip"]) | {"enabled": True} | changes
    return validate_config({"fip": fip})["fip"]


def _true_radiance(truth: xr.DataTree, line: str) -> np.ndarray:
    """Line radiance (W m-2 sr-1) of the noiseless truth: peak x sigma x sqrt(2 pi), with the
    peak per nm and the sigma in Angstrom."""
    for node in truth.children.values():
        if line in node.dataset.indexes["line"]:
            ds = node.dataset.sel(line=line)
            return (ds["amplitude"] * ds["width"] * 0.1 * np.sqrt(2 * np.pi)).values
    raise KeyError(line)


@pytest.mark.slow
def test_fip_map_matches_the_truth_within_errors(fitted_raster, tmp_path):
    truth, results, cfg = fitted_raster
    fip_cfg = _enabled(cfg)
    path = fip_for_file(fip_cfg, results, cfg)
    assert path == fip_output_path(results) and path.is_file()
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".part")]

    # independent expectation: the LCR coefficients applied by hand to the true radiances
    coef = lcr_coefficients(LOW, HIGH, density=1e9)["coefficient"].isel(density=0)
    num = sum(float(coef.sel(line=line)) * _true_radiance(truth, line) for line in LOW)
    den = sum(float(coef.sel(line=line)) * _true_radiance(truth, line) for line in HIGH)
    expected = num / den

    out = open_results(path)
    try:
        ds = out["S_N"].to_dataset().load()
        assert out.attrs["results_file"] == results.name
    finally:
        out.close()
    assert ds["fip_bias"].dims == ("y", "x")
    assert "hpln" in ds.coords  # pointing of the results kept
    assert ds.attrs["line_set"] == "S_N"
    assert set(json.loads(ds.attrs["line_windows"]).values()) >= {
        "N_IV_765_Peak",
        "N_III_991_Peak",
    }
    fip, err = ds["fip_bias"].values, ds["fip_bias_err"].values
    good = np.isfinite(fip) & np.isfinite(err) & (err > 0)
    # the default radiance mask drops pixels where a window's fit sits on a bound: here 58 %
    # of the S IV 748 window's pixels (status CONVERGED_AT_BOUND), so about a third remain
    assert good.sum() > 100, f"only {good.sum()} pixels have a FIP bias"
    pull = (fip[good] - expected[good]) / err[good]
    # the truth lies within the errors: pulls centred on 0, not wider than 1 sigma. (They are
    # narrower, about 0.6: the batch fits without covariance terms, so the radiance errors
    # ignore the amplitude-width anticorrelation and are conservative.)
    assert abs(np.median(pull)) < 0.3, np.median(pull)
    scatter = 1.4826 * np.median(np.abs(pull - np.median(pull)))
    assert 0.3 < scatter < 1.2, scatter
    assert np.mean(np.abs(pull) < 3) > 0.97
    # and the check has teeth: a FIP bias off by 25 % would be seen
    relative = np.median(err[good] / fip[good])
    assert relative < 0.3, relative
    assert abs(np.median((fip[good] - 1.25 * expected[good]) / err[good])) > 0.5


@pytest.mark.slow
def test_fip_density_map_and_missing_lines(fitted_raster, tmp_path, caplog):
    truth, results, cfg = fitted_raster
    # a results file with a constant density map in one window gives the same FIP map as the
    # same density given as a number (1e9 cm-3 is on the contribution-function grid)
    tree = open_results(results)
    node = tree["N_IV_765_Peak"].to_dataset()
    ne = xr.full_like(node["amplitude"].isel(line=0, drop=True), 1e9).rename("ne")
    tree["N_IV_765_Peak"] = xr.DataTree(node.assign(ne=ne))
    copy_path = to_netcdf(tree, tmp_path / "map_saffron.nc")
    tree.close()
    by_number = fip_for_file(_enabled(cfg), copy_path, cfg)
    with xr.open_dataset(by_number, group="S_N") as ds:
        number_map = ds.load()
    by_map = fip_for_file(_enabled(cfg, density="ne"), copy_path, cfg)
    assert by_map == by_number  # the same file name: replaced
    with xr.open_dataset(by_map, group="S_N") as ds:
        density_map = ds.load()
    assert density_map.attrs["density"] == "map" and number_map.attrs["density"] == 1e9
    np.testing.assert_allclose(density_map["fip_bias"], number_map["fip_bias"], rtol=1e-6)
    np.testing.assert_allclose(density_map["fip_bias_err"], number_map["fip_bias_err"], rtol=1e-6)

    with pytest.raises(ValueError, match="'no_map', which is no variable"):
        fip_for_file(_enabled(cfg, density="no_map"), copy_path, cfg)

    sets = [{"name": "Fe", "low": ["fe_12 1242.00"], "high": ["ne_8 770.42"]}]
    with caplog.at_level(logging.INFO, logger="saffron_xr.pipeline.fip_step"):
        assert fip_for_file(_enabled(cfg, sets=sets), results, cfg) is None
    assert "fe_12 1242.00" in caplog.text and "no FIP file" in caplog.text
