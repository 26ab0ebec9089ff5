"""netCDF results files: round trip, provenance, compression, atomic writes, name templates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import dask.array as da
import netCDF4
import numpy as np
import pytest
import xarray as xr

import saffron_xr
from saffron_xr.io.netcdf import open_results, output_name, to_netcdf
from saffron_xr.testing import raise_if_dask_computes

SPICE_STEM = "solo_L2_spice-n-ras_20220317T002536_V03_100663832-017"


def _window(extname, lines, *, seed, ny=12, nx=5, dtype="f4"):
    rng = np.random.default_rng(seed)
    nl = len(lines)
    coords = {
        "line": lines,
        "ion": ("line", [ln.split()[0] for ln in lines]),
        "rest_wavelength": ("line", [float(ln.split()[1]) for ln in lines], {"units": "Angstrom"}),
        "hpln": (("y", "x"), rng.normal(450, 50, (ny, nx)), {"units": "arcsec"}),
        "hplt": (("y", "x"), rng.normal(-80, 50, (ny, nx)), {"units": "arcsec"}),
        "time": (
            "x",
            np.datetime64("2022-03-17T00:25:36.658", "ns")
            + np.arange(nx) * np.timedelta64(5, "s"),
        ),
    }
    ds = xr.Dataset(coords=coords)
    for name, units in (
        ("amplitude", "W m-2 sr-1 nm-1"),
        ("centroid", "Angstrom"),
        ("width", "Angstrom"),
    ):
        for suffix in ("", "_err"):
            values = rng.normal(1.0, 0.3, (nl, ny, nx)).astype(dtype)
            values[0, 0, 0] = np.nan
            ds[name + suffix] = (
                ("line", "y", "x"),
                da.from_array(values, chunks=(1, 4, 5)),
                {"units": units, "long_name": name + suffix},
            )
    ds["background"] = (
        ("degree", "y", "x"),
        rng.normal(size=(2, ny, nx)).astype(dtype),
        {"units": "W m-2 sr-1 nm-1"},
    )
    ds["chi2"] = (("y", "x"), rng.random((ny, nx)).astype(dtype), {"units": "1"})
    ds["status"] = (
        ("y", "x"),
        rng.integers(0, 7, (ny, nx)).astype("i1"),
        {"units": "1", "flag_values": np.arange(8, dtype="i1")},
    )
    ds["n_iter"] = (("y", "x"), rng.integers(0, 40, (ny, nx)).astype("i4"), {"units": "1"})
    ds["error_scale"] = ((), 1.5, {"noise_dark_factor": 2, "units": "1"})
    ds.attrs = {
        "EXTNAME": extname,
        "filename": f"{SPICE_STEM}.fits",
        "SPIOBSID": 100663832,
        "RASTERNO": 17,
        "DATE-OBS": "2022-03-17T00:25:36.658",
        "DETECTOR": "SW",
        "line_model": json.dumps({"format": "saffron_xr.LineModel", "lines": lines}),
        "converged": True,
        "nothing": None,
        "settings": {"a": [1, 2], "b": "x"},
        "pair": (1, "two"),
        "scale": np.float32(0.5),
        "levels": np.array([1, 3, 5]),
    }
    return ds


@pytest.fixture
def tree():
    return xr.DataTree.from_dict(
        {
            "/Ne_VIII_770_Peak": _window("Ne VIII 770 - Peak", ["ne_8 770.42"], seed=1),
            "/O_III_703_Mg_IX_706": _window(
                "O III 703 / Mg IX 706", ["o_3 703.85", "mg_9 706.06"], seed=2
            ),
        }
    )


def test_round_trip_identical_and_lazy(tree, tmp_path):
    path = to_netcdf(tree, tmp_path / "r.nc", config={"fit": {"max_iter": 50}})
    with raise_if_dask_computes():
        back = open_results(path)
    assert set(back.children) == set(tree.children)
    for name in tree.children:
        got, want = back[name].to_dataset(), tree[name].to_dataset()
        xr.testing.assert_identical(got, want)
        for var in want.variables:
            assert got[var].dims == want[var].dims
            assert got[var].dtype == want[var].dtype
        assert isinstance(got["amplitude"].data, da.Array)
        # attribute types survive: tuples, numpy scalars and arrays, None, bools, dicts
        assert got.attrs["pair"] == (1, "two")
        assert got.attrs["converged"] is True and got.attrs["nothing"] is None
        assert got.attrs["settings"] == {"a": [1, 2], "b": "x"}
        assert isinstance(got.attrs["scale"], np.float32)
        np.testing.assert_array_equal(got.attrs["levels"], [1, 3, 5])
        assert got["amplitude"].attrs["units"] == "W m-2 sr-1 nm-1"


def test_open_dataset_on_a_results_file_says_where_the_results_are(tree, tmp_path):
    """The usual first attempt, xr.open_dataset(path), must not look like an empty file."""
    path = to_netcdf(tree, tmp_path / "r.nc")
    with xr.open_dataset(path) as first_try:
        assert list(first_try.data_vars) == ["README"]
        note = str(first_try["README"].values)
        text = repr(first_try)
    for words in ("open_results", "open_datatree", "group="):
        assert words in note
    for name in tree.children:
        assert name in note
    assert "open_results" in text  # visible in what the user sees printed
    # what the note says works
    group = first_try["README"].attrs["groups"].split(", ")[0]
    with xr.open_dataset(path, group=group) as one:
        assert "amplitude" in one
    # and the note is not part of the results read back
    back = open_results(path)
    assert "README" not in back.to_dataset().variables
    assert set(back.children) == set(tree.children)


def test_float64_and_nan_values_exact(tmp_path):
    ds = _window("W", ["fe_10 257.26"], seed=3, dtype="f8")
    back = open_results(to_netcdf(ds, tmp_path / "a.nc"))
    got = back["W"].to_dataset()
    xr.testing.assert_identical(got, ds)
    assert np.isnan(got["amplitude"].values[0, 0, 0])


def test_dataset_becomes_window_group_and_accessors(tmp_path):
    ds = _window("Ne VIII 770 - Peak", ["ne_8 770.42"], seed=4)
    back = open_results(ds.saffron.to_netcdf(tmp_path / "d.nc"))
    assert list(back.children) == ["Ne_VIII_770_Peak"]
    xr.testing.assert_identical(back["Ne_VIII_770_Peak"].to_dataset(), ds)
    tree = xr.DataTree.from_dict({"/a": ds})
    back2 = open_results(tree.saffron.to_netcdf(tmp_path / "t.nc"))
    xr.testing.assert_identical(back2["a"].to_dataset(), ds)


def test_provenance_attributes(tree, tmp_path):
    config = {"files": ["a.fits"], "fit": {"max_iter": 50}, "scheduler": "threads"}
    path = to_netcdf(tree, tmp_path / "p.nc", config=config, provenance={"chianti": "10.1"})
    root = open_results(path).attrs
    assert root["Conventions"].startswith("CF-")
    assert root["saffron_xr_version"] == saffron_xr.__version__
    assert saffron_xr.__version__ in root["history"]
    assert json.loads(root["config"]) == config
    assert json.loads(root["provenance"]) == {"chianti": "10.1"}
    models = json.loads(root["line_models"])
    assert models["O_III_703_Mg_IX_706"]["lines"] == ["o_3 703.85", "mg_9 706.06"]
    inputs = json.loads(root["input_files"])
    assert {e["window"] for e in inputs} == set(tree.children)
    for entry in inputs:
        assert entry["filename"] == f"{SPICE_STEM}.fits"
        assert entry["SPIOBSID"] == 100663832 and entry["RASTERNO"] == 17
    noise = json.loads(root["noise_constants"])
    assert noise["Ne_VIII_770_Peak"] == {"error_scale.noise_dark_factor": 2}
    assert root["date_obs_start"] == "2022-03-17T00:25:36.658"
    assert np.datetime64(root["date_created"][:19]) <= np.datetime64("now")


def test_compression_and_groups_in_file(tree, tmp_path):
    path = to_netcdf(tree, tmp_path / "c.nc", compression="zlib", compression_level=5)
    with netCDF4.Dataset(path) as nc:
        assert set(nc.groups) == set(tree.children)
        var = nc.groups["Ne_VIII_770_Peak"].variables["amplitude"]
        filters = var.filters()
        assert filters["zlib"] and filters["complevel"] == 5 and filters["shuffle"]
        assert not filters["zstd"]
        assert nc.data_model == "NETCDF4"


@pytest.mark.parametrize(
    "codec, level, flag", [(None, None, "zstd"), ("zstd", 3, "zstd"), ("zlib", None, "zlib")]
)
def test_codecs_round_trip_and_are_recorded_in_the_file(tree, tmp_path, codec, level, flag):
    """Default zstd level 1; zlib level 4 by default; every codec reads back identical."""
    kwargs = {} if codec is None else {"compression": codec}
    if level is not None:
        kwargs["compression_level"] = level
    path = to_netcdf(tree, tmp_path / "c.nc", **kwargs)
    expected_level = level if level is not None else {"zstd": 1, "zlib": 4}[flag]
    with netCDF4.Dataset(path) as nc:
        filters = nc.groups["Ne_VIII_770_Peak"].variables["amplitude"].filters()
        assert filters[flag] and filters["complevel"] == expected_level
        assert not filters["zlib" if flag == "zstd" else "zstd"]
    back = open_results(path)
    for name in tree.children:
        xr.testing.assert_identical(back[name].to_dataset(), tree[name].to_dataset())


def test_uncompressed_output_and_bad_codec(tree, tmp_path):
    path = to_netcdf(tree, tmp_path / "u.nc", compression=None)
    with netCDF4.Dataset(path) as nc:
        filters = nc.groups["Ne_VIII_770_Peak"].variables["amplitude"].filters()
        assert not (filters["zlib"] or filters["zstd"])
    # compressible data: both codecs make the file smaller than the uncompressed one
    ds = xr.Dataset({"amplitude": (("y", "x"), np.zeros((300, 200)))})
    sizes = {c: to_netcdf(ds, tmp_path / f"z_{c}.nc", compression=c).stat().st_size
             for c in ("zstd", "zlib", None)}  # fmt: skip
    assert sizes["zstd"] < sizes[None] / 10 and sizes["zlib"] < sizes[None] / 10
    with pytest.raises(ValueError, match="compression must be one of"):
        to_netcdf(tree, tmp_path / "b.nc", compression="lzma")
    assert not (tmp_path / "b.nc").exists()


def test_write_is_lazy_until_written_and_streams_dask(tmp_path):
    """to_netcdf computes each dask chunk once and the data end up in the file."""
    ds = _window("W", ["ne_8 770.42"], seed=5)
    with raise_if_dask_computes(max_computes=1):
        to_netcdf(ds, tmp_path / "w.nc")
    back = open_results(tmp_path / "w.nc")
    np.testing.assert_array_equal(back["W"]["amplitude"].values, ds["amplitude"].values)


def test_overwrite_false_and_bad_inputs(tree, tmp_path):
    path = to_netcdf(tree, tmp_path / "o.nc")
    with pytest.raises(FileExistsError, match="o.nc"):
        to_netcdf(tree, path, overwrite=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        to_netcdf(tree, tmp_path / "missing" / "x.nc")
    ds = _window("W", ["ne_8 770.42"], seed=6)
    ds.attrs["bad"] = object()
    with pytest.raises(TypeError, match="'bad'"):
        to_netcdf(ds, tmp_path / "b.nc")
    assert not (tmp_path / "b.nc").exists()
    assert not list(tmp_path.glob(".*.part"))
    with pytest.raises(FileNotFoundError, match="nope.nc"):
        open_results(tmp_path / "nope.nc")
    (tmp_path / "junk.nc").write_text("not netcdf")
    with pytest.raises(ValueError, match="junk.nc"):
        open_results(tmp_path / "junk.nc")


def test_failing_computation_leaves_no_file(tmp_path):
    def boom(block):
        raise RuntimeError("chunk failed")

    ds = _window("W", ["ne_8 770.42"], seed=7)
    ds["amplitude"] = ds["amplitude"].copy(data=ds["amplitude"].data.map_blocks(boom, dtype="f4"))
    final = tmp_path / "f.nc"
    with pytest.raises(RuntimeError, match="chunk failed"):
        to_netcdf(ds, final)
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []


_SLOW_WRITER = textwrap.dedent(
    """
    import sys, time
    import dask, dask.array as da, numpy as np, xarray as xr
    from saffron_xr.io.netcdf import to_netcdf

    def slow(block):
        time.sleep(0.05)
        return block

    arr = da.ones((400, 64, 64), chunks=(1, 64, 64), dtype="f4").map_blocks(slow)
    ds = xr.Dataset(
        {"amplitude": (("line", "y", "x"), arr, {"units": "W m-2 sr-1 nm-1"})},
        attrs={"EXTNAME": "slow"},
    )
    with dask.config.set(scheduler="synchronous"):
        to_netcdf(ds, sys.argv[1])
    """
)


def _start_and_kill_writer(final, tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(_SLOW_WRITER)
    proc = subprocess.Popen([sys.executable, str(script), str(final)])
    try:
        deadline = time.monotonic() + 120
        part = None
        while time.monotonic() < deadline:
            parts = list(final.parent.glob(f".{final.name}.*.part"))
            if parts and parts[0].stat().st_size > 0:
                part = parts[0]
                break
            assert proc.poll() is None, "the writer finished or died before it was killed"
            time.sleep(0.05)
        assert part is not None, "the writer never started writing its temporary file"
        time.sleep(0.3)
        assert proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return part


@pytest.mark.slow
def test_killed_writer_leaves_no_file_under_final_name(tmp_path):
    final = tmp_path / "results.nc"
    part = _start_and_kill_writer(final, tmp_path)
    assert not final.exists()
    assert part.exists()  # the temporary file is what is left behind, under its own name


@pytest.mark.slow
def test_killed_overwrite_keeps_previous_file_intact(tmp_path):
    final = tmp_path / "results.nc"
    old = _window("W", ["ne_8 770.42"], seed=8)
    to_netcdf(old, final)
    before = os.stat(final).st_ino
    _start_and_kill_writer(final, tmp_path)
    assert os.stat(final).st_ino == before
    xr.testing.assert_identical(open_results(final)["W"].to_dataset(), old)


# ----------------------------------------------------------------------------- names


def test_output_name_fields(tree):
    ds = tree["Ne_VIII_770_Peak"].to_dataset()
    assert output_name("{stem}_saffron.nc", ds) == f"{SPICE_STEM}_saffron.nc"
    assert output_name("{stem}.nc", tree) == f"{SPICE_STEM}.nc"
    assert (
        output_name("{spiobsid}-{rasterno:03d}_{window}_L{level}_{date}.nc", ds, level=2)
        == "100663832-017_Ne_VIII_770_Peak_L2_20220317T002536.nc"
    )
    assert output_name("{window}.nc", ds, window="custom") == "custom.nc"
    assert output_name("{stem}.nc", ds, stem="mine") == "mine.nc"
    # values with path separators cannot escape the output folder
    assert "/" not in output_name("{window}.nc", {"EXTNAME": "O III 703 / Mg IX 706"})


def test_output_name_errors(tree):
    ds = tree["Ne_VIII_770_Peak"].to_dataset()
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['SAMENAME'\]"):
        output_name("{SAMENAME}.nc", ds)
    with pytest.raises(ValueError, match=r"needs field\(s\) \['level'\]"):
        output_name("{stem}_{level}.nc", ds)
    with pytest.raises(ValueError, match="stem"):
        output_name("{stem}.nc", {"SPIOBSID": 1})


# ----------------------------------------------------------------------------- with the fitter


@pytest.fixture(scope="module")
def fitted_ne8(ne8_file):
    """The real Ne VIII window fitted end to end (noise model, guessed model, fit)."""
    from saffron_xr.prep.noise import spice_error

    tree = saffron_xr.open_spice(ne8_file)
    name = next(iter(tree.children))
    radiance = tree[name]["radiance"]
    error = spice_error(radiance)
    model = saffron_xr.guess_model(radiance, error=error)
    params = saffron_xr.fit_lines(radiance, model, error=error)
    noise = {k: v for k, v in error.attrs.items() if k.startswith("noise_")}
    return tree, name, params.assign_attrs(noise), error


@pytest.mark.slow
def test_fit_results_round_trip_and_provenance(fitted_ne8, tmp_path):
    tree, name, params, _ = fitted_ne8
    derived = saffron_xr.derive_all(params, doppler_reference="median")
    results = xr.DataTree.from_dict({f"/{name}": derived})
    path = to_netcdf(results, tmp_path / output_name("{stem}_saffron.nc", derived))
    assert path.name.startswith("solo_L2_spice-n-ras_20220317T002536_V03_100663832-017")
    back = open_results(path)
    computed = derived.compute()
    xr.testing.assert_identical(back[name].to_dataset().compute(), computed)
    root = back.attrs
    noise = json.loads(root["noise_constants"])[name]
    assert noise["noise_detector"] == "SW" and noise["noise_gain"] == 3.58
    models = json.loads(root["line_models"])
    assert [ln["name"] for ln in models[name]["lines"]][0] == "ne_8 770.42"
    assert json.loads(root["input_files"])[0]["SPIOBSID"] == 100663832


@pytest.mark.slow
def test_reconstruct_model_and_residuals_from_file(fitted_ne8, ne8_file, tmp_path):
    tree, name, params, error = fitted_ne8
    path = to_netcdf(params, tmp_path / "r.nc")
    with raise_if_dask_computes():
        rec = saffron_xr.reconstruct(path, ne8_file, error=error)
        rec_tree = saffron_xr.reconstruct(open_results(path), tree, window=name)
    assert set(rec.data_vars) == {"model", "residual", "normalized_residual"}
    assert rec["model"].attrs["units"] == "W m-2 sr-1 nm-1"
    rec = rec.compute()
    p = params.compute()
    # the model at one converged pixel equals the Gaussian + background by hand
    iy, ix = np.argwhere(p["status"].values == 0)[0]
    wl = tree[name]["wavelength"].values
    a, c, w = (float(p[k][0, iy, ix]) for k in ("amplitude", "centroid", "width"))
    ref = float(p["background_reference"])
    bg = sum(float(p["background"][k, iy, ix]) * (wl - ref) ** k for k in range(p.sizes["degree"]))
    hand = a * np.exp(-0.5 * ((wl - c) / w) ** 2) + bg
    np.testing.assert_allclose(rec["model"].values[iy, ix], hand, rtol=1e-10)
    data = tree[name]["radiance"].values
    np.testing.assert_allclose(rec["residual"].values, data - rec["model"].values)
    # converged pixels: the normalised residuals give back the fit's reduced chi2
    n_free = saffron_xr.LineModel.from_json(p.attrs["line_model"]).n_free
    good = p["status"].values == 0
    nres = rec["normalized_residual"].values[good]
    chi2 = np.nansum(nres**2, axis=-1) / (p["n_valid"].values[good] - n_free)
    np.testing.assert_allclose(chi2, p["chi2"].values[good], rtol=1e-5)
    xr.testing.assert_allclose(rec_tree["model"].compute(), rec["model"])
    with pytest.raises(ValueError, match="wavelength"):
        saffron_xr.reconstruct(path)
