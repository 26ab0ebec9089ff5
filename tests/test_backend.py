"""The xarray backend ``engine="spice"`` against :func:`saffron_xr.open_spice` on real files.

The engine is found through the package's ``xarray.backends`` entry point, so these tests need
the package installed (``pip install -e .``), as README's test command does.
"""

from __future__ import annotations

import dask.array
import numpy as np
import pytest
import xarray as xr
from test_reader import _fill_header_file

from saffron_xr import SpiceFileError, open_spice
from saffron_xr.io._window_array import MemmapWindow
from saffron_xr.io.backend import SpiceBackendEntrypoint, is_spice_l2
from saffron_xr.testing import raise_if_dask_computes

NE8_NODE = "Ne_VIII_770_Peak_data"


def _real_files(spice_dir):
    files = sorted(spice_dir.glob("*.fits"))
    assert len(files) >= 2, f"expected the real L2 files in {spice_dir}"
    return files


def test_entry_point_registered():
    engines = xr.backends.list_engines()
    assert "spice" in engines, (
        "engine 'spice' is not registered: install the package (pip install -e .) so that its "
        "xarray.backends entry point exists"
    )
    assert isinstance(engines["spice"], SpiceBackendEntrypoint)


def _no_pixel_reads(monkeypatch):
    """Make any read of pixel data fail."""

    def boom(self, key):
        raise AssertionError(f"pixel data of {self.path} read while opening")

    monkeypatch.setattr(MemmapWindow, "__getitem__", boom)


@pytest.mark.parametrize("chunks", [{}, None])
def test_open_datatree_equals_open_spice_on_every_real_file(spice_dir, monkeypatch, chunks):
    for path in _real_files(spice_dir):
        _no_pixel_reads(monkeypatch)
        with raise_if_dask_computes():
            tree = xr.open_datatree(path, engine="spice", chunks=chunks)
            ref = open_spice(path)
        monkeypatch.undo()
        assert list(tree.children) == list(ref.children), path.name
        assert tree.attrs == ref.attrs
        for name in ref.children:
            got, want = tree[name].dataset, ref[name].dataset
            if chunks == {}:
                # xarray's chunks={} takes the backend's preferred chunks: open_spice's
                assert isinstance(got.radiance.data, dask.array.Array)
                assert got.radiance.chunks == want.radiance.chunks, (path.name, name)
            else:
                assert not isinstance(got.radiance.variable._data, dask.array.Array)
            assert got.radiance.dtype == want.radiance.dtype
            # values (NaN edges included), coordinates, attrs of dataset and variables
            xr.testing.assert_identical(got, want)
        xr.testing.assert_identical(tree, ref)


def test_open_dataset_one_window(exp_file, ne8_file):
    ref = open_spice(exp_file)
    for name in ref.children:
        with raise_if_dask_computes():
            ds = xr.open_dataset(exp_file, engine="spice", group=name, chunks={})
        xr.testing.assert_identical(ds, ref[name].to_dataset())
        assert ds.radiance.chunks == ref[name].dataset.radiance.chunks
    # an EXTNAME works as a group too, and a leading "/" is accepted
    extname = ref[list(ref.children)[1]].dataset.attrs["EXTNAME"]
    ds = xr.open_dataset(exp_file, engine="spice", group=extname)
    assert ds.attrs["EXTNAME"] == extname
    ds = xr.open_dataset(exp_file, engine="spice", group="/" + list(ref.children)[0])
    assert ds.attrs["EXTNAME"] == ref[list(ref.children)[0]].dataset.attrs["EXTNAME"]
    # without group: the only window of a one-window file, a clear error otherwise
    ds = xr.open_dataset(ne8_file, engine="spice")
    assert ds.attrs["EXTNAME"] == "Ne VIII 770 - Peak data"
    with pytest.raises(ValueError, match="has 2 windows; choose one with group=") as info:
        xr.open_dataset(exp_file, engine="spice")
    assert exp_file.name in str(info.value)
    with pytest.raises(SpiceFileError, match="has no window 'Fe XX'") as info:
        xr.open_dataset(exp_file, engine="spice", group="Fe XX")
    assert str(exp_file) in str(info.value)


def test_lazy_reads_only_the_selection(ne8_file, monkeypatch):
    """With chunks=None the lazily indexed array reads just the selected block."""
    reads = []
    original = MemmapWindow.__getitem__

    def spy(self, key):
        out = original(self, key)
        reads.append(out.size)
        return out

    monkeypatch.setattr(MemmapWindow, "__getitem__", spy)
    ds = xr.open_dataset(ne8_file, engine="spice", cache=False)
    want = open_spice(ne8_file)[NE8_NODE].dataset.radiance
    reads.clear()
    got = ds.radiance.isel(y=slice(400, 410), x=1).values
    assert reads == [10 * 50]  # 10 spectra of 50 samples, not the window
    np.testing.assert_array_equal(got, want.isel(y=slice(400, 410), x=1).values)
    point = ds.radiance.isel(y=500, x=2, wavelength=25).values
    assert point == want.isel(y=500, x=2, wavelength=25).values


def test_guess_can_open(spice_dir, tmp_path):
    backend = SpiceBackendEntrypoint()
    for path in _real_files(spice_dir) + sorted((spice_dir / "headers").glob("*.fits")):
        assert backend.guess_can_open(path), path.name
        assert backend.guess_can_open(str(path))
        assert is_spice_l2(path)
    # the L3 reference file is FITS but not L2; a netCDF file is not FITS
    assert not backend.guess_can_open(
        spice_dir / "reference" / "spicefit_L3_100663832-017_ne8-770.fits"
    )
    nc = tmp_path / "x.nc"
    xr.Dataset({"a": ("x", [1.0])}).to_netcdf(nc)
    assert not backend.guess_can_open(nc)
    assert not backend.guess_can_open(tmp_path / "missing.fits")
    assert not backend.guess_can_open(b"SIMPLE  =")
    # xarray picks the engine by itself
    ne8 = next(p for p in _real_files(spice_dir) if "ne8" in p.name)
    xr.testing.assert_identical(xr.open_datatree(ne8), open_spice(ne8))


def test_header_only_files_raise_like_open_spice(spice_dir):
    for path in sorted((spice_dir / "headers").glob("*.fits")):
        with pytest.raises(SpiceFileError, match="no spectral window with data") as info:
            xr.open_datatree(path, engine="spice")
        assert str(path) in str(info.value)


# the real commissioning header has tab characters in COMMENT cards; astropy warns while the
# helper rewrites it with generated data underneath (about the input, not our code)
@pytest.mark.filterwarnings("ignore::astropy.io.fits.verify.VerifyWarning")
def test_sit_and_stare_and_dumbbells(tmp_path, spice_dir):
    src = spice_dir / "headers" / "solo_L2_spice-n-sit_20200620T235901_V01_16777431-000.fits"
    f = _fill_header_file(src, tmp_path / src.name, nt=32)
    tree = xr.open_datatree(f, engine="spice", chunks={})
    ref = open_spice(f)
    xr.testing.assert_identical(tree, ref)
    name = "FLT02_Two_Window_OB_ID_253"
    assert tree[name].dataset.radiance.chunks == ref[name].dataset.radiance.chunks
    ds = xr.open_dataset(f, engine="spice", group=name)
    np.testing.assert_array_equal(
        ds.radiance.isel(time=slice(3, 7), y=100).values,
        ref[name].dataset.radiance.isel(time=slice(3, 7), y=100).values,
    )
    src = spice_dir / "headers" / "solo_L2_spice-n-ras-db_20200602T081733_V01_12583760-000.fits"
    f = _fill_header_file(src, tmp_path / src.name)
    kwargs = {"dumbbells": True, "mixed_wcs": "full"}
    xr.testing.assert_identical(
        xr.open_datatree(f, engine="spice", **kwargs), open_spice(f, **kwargs)
    )


def test_drop_variables_and_bad_input(ne8_file):
    ds = xr.open_dataset(ne8_file, engine="spice", drop_variables=["radiance"])
    assert "radiance" not in ds and "hpln" in ds.coords
    with pytest.raises(TypeError, match="by path"):
        with open(ne8_file, "rb") as fh:
            SpiceBackendEntrypoint().open_dataset(fh)
    with pytest.raises(ValueError, match="mixed_wcs"):
        xr.open_dataset(ne8_file, engine="spice", mixed_wcs="nope")
