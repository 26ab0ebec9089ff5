"""Zarr results stores: the same groups, attributes and provenance as netCDF files."""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr
from test_netcdf import _window

from saffron_xr.io.netcdf import open_results, to_netcdf
from saffron_xr.pipeline.config import ConfigError, default_config, validate_config
from saffron_xr.testing import raise_if_dask_computes


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


def test_zarr_round_trip_equals_netcdf(tree, tmp_path):
    cfg = {"fit": {"max_iter": 50}}
    store = to_netcdf(tree, tmp_path / "r.zarr", config=cfg)  # format from the suffix
    assert store.is_dir()
    nc = to_netcdf(tree, tmp_path / "r.nc", config=cfg)
    assert nc.is_file()
    with raise_if_dask_computes():
        back = open_results(store)
    other = open_results(nc)
    assert list(back.children) == list(tree.children)
    for name in tree.children:
        got, want = back[name].to_dataset(), tree[name].to_dataset()
        xr.testing.assert_identical(got, want)
        xr.testing.assert_identical(got, other[name].to_dataset())
        assert isinstance(got["amplitude"].data, da.Array)
        # store chunks are the dask chunks that were written
        assert got["amplitude"].chunks == want["amplitude"].chunks
        for var in ("amplitude", "status", "n_iter", "chi2"):
            assert got[var].dtype == want[var].dtype
        assert got.attrs["pair"] == (1, "two") and got.attrs["converged"] is True
        assert got.attrs["settings"] == {"a": [1, 2], "b": "x"}
        assert isinstance(got.attrs["scale"], np.float32)
    # the same provenance in the root group (up to the write time)
    moving = {"date_created", "history"}
    assert {k: v for k, v in back.attrs.items() if k not in moving} == {
        k: v for k, v in other.attrs.items() if k not in moving
    }
    assert json.loads(back.attrs["config"]) == cfg
    assert [e["window"] for e in json.loads(back.attrs["input_files"])] == list(tree.children)
    # a plain Zarr reader sees the groups and compressed arrays
    group = zarr.open_group(str(store), mode="r")
    arr = group["Ne_VIII_770_Peak"]["amplitude"]
    assert arr.chunks == (1, 4, 5)
    (codec,) = arr.compressors
    assert codec.codec_id == "blosc" and codec.cname == "zstd" and codec.clevel == 4


def test_explicit_format_and_bad_format(tree, tmp_path):
    store = to_netcdf(tree, tmp_path / "results_store", format="zarr")
    assert store.is_dir() and (store / ".zmetadata").is_file()
    xr.testing.assert_identical(
        open_results(store)["Ne_VIII_770_Peak"].to_dataset(),
        tree["Ne_VIII_770_Peak"].to_dataset(),
    )
    with pytest.raises(ValueError, match="format must be one of"):
        to_netcdf(tree, tmp_path / "x.nc", format="hdf5")
    (tmp_path / "junk").mkdir()
    with pytest.raises(ValueError, match="junk: not a readable Zarr"):
        open_results(tmp_path / "junk")


def test_zarr_overwrite_is_whole_and_leaves_nothing_behind(tree, tmp_path):
    final = tmp_path / "r.zarr"
    to_netcdf(tree, final)
    new = tree["O_III_703_Mg_IX_706"].to_dataset()
    to_netcdf(new, final)  # replaces the two-window store by a one-window store
    back = open_results(final)
    assert list(back.children) == ["O_III_703_Mg_IX_706"]
    xr.testing.assert_identical(back["O_III_703_Mg_IX_706"].to_dataset(), new)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.zarr"]
    with pytest.raises(FileExistsError, match="overwrite=False"):
        to_netcdf(tree, final, overwrite=False)


def test_failing_computation_leaves_no_store(tmp_path):
    def boom(block):
        raise RuntimeError("chunk failed")

    ds = _window("W", ["ne_8 770.42"], seed=7)
    ds["amplitude"] = ds["amplitude"].copy(data=ds["amplitude"].data.map_blocks(boom, dtype="f4"))
    old = _window("W", ["ne_8 770.42"], seed=8)
    final = tmp_path / "f.zarr"
    to_netcdf(old, final)
    with pytest.raises(RuntimeError, match="chunk failed"):
        to_netcdf(ds, final)
    # the previous store is intact and no temporary folder is left
    xr.testing.assert_identical(open_results(final)["W"].to_dataset(), old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.zarr"]


def test_config_output_format():
    cfg = default_config()
    assert cfg["output"]["format"] == "netcdf"
    cfg["output"]["format"] = "zarr"
    assert validate_config(cfg)["output"]["format"] == "zarr"
    cfg["output"]["format"] = "parquet"
    with pytest.raises(ConfigError, match="'output.format' must be netcdf or zarr"):
        validate_config(cfg)


def test_config_output_compression():
    cfg = default_config()
    assert cfg["output"]["compression"] == "zstd"
    for codec in ("zlib", "none", None):
        cfg["output"]["compression"] = codec
        assert validate_config(cfg)["output"]["compression"] == codec
    cfg["output"]["compression"] = "gzip"
    with pytest.raises(ConfigError, match="'output.compression' must be zstd, zlib or none"):
        validate_config(cfg)


def test_config_catalog_weak_pixel_snr():
    cfg = default_config()
    assert cfg["catalog"]["weak_pixel_snr"] == 1.0
    for value in (0, 2.5, None):
        cfg["catalog"]["weak_pixel_snr"] = value
        assert validate_config(cfg)["catalog"]["weak_pixel_snr"] == value
    cfg["catalog"]["weak_pixel_snr"] = -1.0
    with pytest.raises(ConfigError, match="'catalog.weak_pixel_snr' must be >= 0 or null"):
        validate_config(cfg)
    for bad in (True, "high"):
        cfg["catalog"]["weak_pixel_snr"] = bad
        with pytest.raises(ConfigError, match="'catalog.weak_pixel_snr' must be .* or null"):
            validate_config(cfg)
