"""Tests of the lazy SPICE L2 reader on real files and on broken ones."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings

import dask
import numpy as np
import pytest
import xarray as xr
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

import saffron_xr
from saffron_xr import SpiceFileError, open_spice
from saffron_xr.io.reader import window_node_name
from saffron_xr.testing import raise_if_dask_computes


def _wcs(header):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header)


def test_exp_file_two_windows(exp_file):
    tree = open_spice(exp_file)
    names = list(tree.children)
    assert names == ["FLT02_Two_Window_OB_ID_253", "FLT02_Two_Window_OB_ID_254"]
    shapes = [tree[n].dataset.radiance.shape for n in names]
    assert shapes == [(1024, 1, 50), (1024, 1, 36)]
    with fits.open(exp_file) as hdul:
        for n, hdu in zip(names, hdul[:2], strict=True):
            ds = tree[n].dataset
            assert ds.radiance.dims == ("y", "x", "wavelength")
            assert ds.attrs["EXTNAME"] == hdu.header["EXTNAME"]
            wl = ds.wavelength.values
            assert ds.wavelength.attrs["units"] == "Angstrom"
            assert (
                wl.min() >= hdu.header["WAVEMIN"] * 10 and wl.max() <= hdu.header["WAVEMAX"] * 10
            )
            w = _wcs(hdu.header)
            nw = hdu.header["NAXIS3"]
            ref = (
                w.wcs_pix2world(
                    np.column_stack([np.zeros(nw), np.zeros(nw), np.arange(nw), np.zeros(nw)]), 0
                )[:, 2]
                * 1e10
            )
            np.testing.assert_allclose(wl, ref, atol=1e-6, rtol=0)
            # per-wavelength RADCAL from the VARIABLE_KEYWORDS table
            assert ds.radcal.shape == (nw,)
            np.testing.assert_allclose(ds.radcal.mean(), hdu.header["RADCAL"], rtol=1e-6)
            assert ds.radiance.attrs["units"] == "W m-2 sr-1 nm-1"
            assert ds.radiance.attrs["DETECTOR"] in ("SW", "LW")
            assert "CRVAL3" in ds.attrs["header"]
            # real values: identical to astropy's reading of the same HDU
            ref_data = np.transpose(hdu.data[0], (1, 2, 0))
            np.testing.assert_array_equal(ds.radiance.values, ref_data)
    assert tree.attrs["SPIOBSID"] == 234881027


def test_ne8_coordinates_match_astropy_everywhere(ne8_file):
    tree = open_spice(ne8_file)
    ds = tree["Ne_VIII_770_Peak_data"].dataset
    ny, nx, nw = ds.radiance.shape
    assert (ny, nx, nw) == (832, 3, 50)
    hdr = fits.getheader(ne8_file)
    w = _wcs(hdr)
    ix, iy = np.meshgrid(np.arange(nx), np.arange(ny))
    ref = w.pixel_to_world_values(ix, iy, np.full(ix.shape, hdr["CRPIX3"] - 1), np.zeros(ix.shape))
    lon = (ref[0] + 180) % 360 - 180
    np.testing.assert_allclose(ds.hpln.values, lon * 3600, atol=1e-6)
    np.testing.assert_allclose(ds.hplt.values, ref[1] * 3600, atol=1e-6)
    assert ds.hpln.attrs["units"] == "arcsec"
    # full-WCS check of the wavelength axis
    wl_ref = w.pixel_to_world_values(0, 0, np.arange(nw), 0)[2] * 1e10
    np.testing.assert_allclose(ds.wavelength.values, wl_ref, atol=1e-6, rtol=0)
    # the line sits ~0.3 A blueward of 770.42 A
    mean = ds.radiance.mean(("y", "x")).values
    assert 769.8 < ds.wavelength.values[np.nanargmax(mean)] < 770.3
    # raster step times from the PC4_1 coupling: 5 s apart, x = 0 observed last
    dt = np.diff(ds.time.values).astype("timedelta64[ms]").astype(float) / 1e3
    np.testing.assert_allclose(dt, hdr["PC4_1"] * hdr["CDELT4"])


def test_open_reads_no_pixel_data(ne8_file, monkeypatch):
    calls = []
    original = np.memmap.__new__

    def spy(cls, *args, **kwargs):
        calls.append(args)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(np.memmap, "__new__", spy)
    with raise_if_dask_computes():
        tree = open_spice(ne8_file)
        rad = tree["Ne_VIII_770_Peak_data"].dataset.radiance
        assert isinstance(rad.data, dask.array.Array)
    assert calls == []
    assert np.isfinite(rad[400:410].values).any()  # now data is read
    assert calls


def test_chunks_and_dtype(ne8_file):
    tree = open_spice(ne8_file, chunks={"y": 100, "x": 1})
    rad = tree["Ne_VIII_770_Peak_data"].dataset.radiance
    assert rad.chunks[0][0] == 100 and rad.chunks[1] == (1, 1, 1)
    assert rad.chunks[2] == (50,)
    assert rad.dtype == np.float32 and rad.dtype.byteorder in ("=", "<")
    assert rad.sum().compute() == pytest.approx(
        float(np.nansum(fits.getdata(ne8_file).astype(np.float64))), rel=1e-5
    )
    with pytest.raises(ValueError, match="wavelength"):
        open_spice(ne8_file, chunks={"wavelength": 10})
    with pytest.raises(ValueError, match="unknown dimension"):
        open_spice(ne8_file, chunks={"z": 10})


def test_accessor_registered():
    da = xr.DataArray(np.zeros(3))
    assert hasattr(da, "saffron") and hasattr(xr.Dataset(), "saffron")
    assert hasattr(xr.DataTree(), "saffron") and hasattr(xr.Dataset(), "fip")


def test_sample_data_opens():
    tree = open_spice(saffron_xr.ne8_window_path())
    assert tree["Ne_VIII_770_Peak_data"].dataset.radiance.shape == (832, 3, 50)


def test_window_selection(exp_file):
    tree = open_spice(exp_file, windows=["FLT02_Two Window_OB_ID_254_"])
    assert list(tree.children) == ["FLT02_Two_Window_OB_ID_254"]
    tree = open_spice(exp_file, windows=0)
    assert list(tree.children) == ["FLT02_Two_Window_OB_ID_253"]
    with pytest.raises(SpiceFileError, match="has no window 'Fe XVIII'.*OB_ID_253") as info:
        open_spice(exp_file, windows="Fe XVIII")
    assert exp_file.name in str(info.value)
    with pytest.raises(SpiceFileError, match="no window number 5"):
        open_spice(exp_file, windows=5)


# ------------------------------------------------------------------- bad input


def test_not_fits(tmp_path):
    bad = tmp_path / "notes.fits"
    bad.write_text("this is not a FITS file\n")
    with pytest.raises(SpiceFileError, match="not a FITS file") as info:
        open_spice(bad)
    assert str(bad) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing_here.fits"):
        open_spice(tmp_path / "nothing_here.fits")


def test_truncated(tmp_path, ne8_file):
    bad = tmp_path / "truncated.fits"
    raw = ne8_file.read_bytes()
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(SpiceFileError, match="truncated") as info:
        open_spice(bad)
    assert str(bad) in str(info.value)


def test_not_spice(tmp_path):
    bad = tmp_path / "aia.fits"
    hdu = fits.PrimaryHDU(np.zeros((4, 4), np.float32))
    hdu.header["INSTRUME"] = "AIA_3"
    hdu.writeto(bad)
    with pytest.raises(SpiceFileError, match="not a SPICE file") as info:
        open_spice(bad)
    assert str(bad) in str(info.value)


def test_not_level2(tmp_path, ne8_file):
    bad = tmp_path / "l1.fits"
    with fits.open(ne8_file) as hdul:
        hdul[0].header["LEVEL"] = "L1"
        hdul.writeto(bad)
    with pytest.raises(SpiceFileError, match="not a Level-2 file") as info:
        open_spice(bad)
    assert str(bad) in str(info.value)


def test_missing_wcs(tmp_path, ne8_file):
    bad = tmp_path / "nowcs.fits"
    with fits.open(ne8_file) as hdul:
        del hdul[0].header["CRVAL3"]
        del hdul[0].header["CDELT1"]
        hdul.writeto(bad)
    with pytest.raises(SpiceFileError, match="lacks the WCS keywords CDELT1, CRVAL3") as info:
        open_spice(bad)
    assert str(bad) in str(info.value)


def test_no_windows(tmp_path):
    bad = tmp_path / "empty.fits"
    hdu = fits.PrimaryHDU()
    hdu.header["INSTRUME"] = "SPICE"
    hdu.header["LEVEL"] = "L2"
    hdu.writeto(bad)
    with pytest.raises(SpiceFileError, match="no spectral window") as info:
        open_spice(bad)
    assert str(bad) in str(info.value)


# ---------------------------------------------- layouts from the real headers


def _fill_header_file(src, dst, nt=1):
    """Put generated data under real header-only (NAXIS=0) SPICE L2 headers."""
    rng = np.random.default_rng(1)
    out = []
    with fits.open(src) as hdul:
        for hdu in hdul:
            # real commissioning headers carry tabs in HISTORY cards, which FITS forbids
            hdr = fits.Header.fromstring(hdu.header.tostring().replace("\t", " "))
            if isinstance(hdu, fits.BinTableHDU):
                out.append(hdu.copy())
                continue
            n1 = abs(hdr["PXEND1"] - hdr["PXBEG1"]) + 1
            n2 = (abs(hdr["PXEND2"] - hdr["PXBEG2"]) + 1) // hdr["NBIN2"]
            n3 = (abs(hdr["PXEND3"] - hdr["PXBEG3"]) + 1) // hdr["NBIN3"]
            if "sit" in str(hdr.get("DATAPROD", "")).lower():
                shape = (nt, n3, n2, 1)
            else:
                shape = (1, n3, n2, n1)
            data = rng.normal(size=shape).astype(">f4")
            cls = fits.PrimaryHDU if not out else fits.ImageHDU
            new = cls(data=data, header=hdr)
            out.append(new)
    fits.HDUList(out).writeto(dst)
    return dst


def test_dumbbells_only_on_request(tmp_path, spice_dir):
    src = spice_dir / "headers" / "solo_L2_spice-n-ras-db_20200602T081733_V01_12583760-000.fits"
    f = _fill_header_file(src, tmp_path / src.name)
    tree = open_spice(f)
    assert list(tree.children) == ["WINDOW0_70_51", "WINDOW1_76_65"]
    tree = open_spice(f, dumbbells=True)
    assert "DUMBBELL_UPPER_WINDOW3_97_20" in tree.children
    db = tree["DUMBBELL_UPPER_WINDOW3_97_20"].dataset
    # PC1_3 != 0: coordinates evaluated at the reference wavelength, and it says so
    assert "PC matrix mixes wavelength" in db.attrs["wcs_note"]
    assert db.hpln.dims == ("y", "x")
    full = open_spice(f, dumbbells=True, mixed_wcs="full")["DUMBBELL_UPPER_WINDOW3_97_20"]
    assert full.dataset.hpln.dims == ("y", "x", "wavelength")
    lon = full.dataset.hpln.values
    assert np.ptp(lon[0, 0, :]) > 1.0  # longitude really changes with wavelength
    with pytest.raises(SpiceFileError, match="mixes wavelength with position") as info:
        open_spice(f, dumbbells=True, mixed_wcs="raise")
    assert str(f) in str(info.value)
    # raster: 30 steps; the VARIABLE_KEYWORDS table is not a window
    ds = tree["WINDOW0_70_51"].dataset
    assert ds.radiance.sizes["x"] == 30 and ds.radiance.sizes["y"] == 768
    assert np.all(np.diff(ds.time.values) < np.timedelta64(0))  # PC4_1 < 0


# the real commissioning header has tab characters in COMMENT cards; astropy warns while we
# rewrite it with generated data underneath (the warning is about the input, not our code)
@pytest.mark.filterwarnings("ignore::astropy.io.fits.verify.VerifyWarning")
def test_sit_and_stare_layout(tmp_path, spice_dir):
    src = spice_dir / "headers" / "solo_L2_spice-n-sit_20200620T235901_V01_16777431-000.fits"
    f = _fill_header_file(src, tmp_path / src.name, nt=32)
    tree = open_spice(f)
    ds = tree["FLT02_Two_Window_OB_ID_253"].dataset
    assert ds.radiance.dims == ("time", "y", "wavelength")
    assert ds.radiance.sizes["time"] == 32
    assert ds.time.dims == ("time",) and ds.hpln.dims == ("time", "y")
    assert np.all(np.diff(ds.time.values) > np.timedelta64(0))


def test_several_files_of_one_observation(tmp_path, ne8_file):
    paths = []
    for n in (18, 17):
        p = tmp_path / f"solo_L2_spice-n-ras_20220317T002536_V03_100663832-{n:03d}.fits"
        with fits.open(ne8_file) as hdul:
            hdul[0].header["RASTERNO"] = n
            hdul.writeto(p)
        paths.append(p)
    with raise_if_dask_computes():
        tree = open_spice(paths)
    ds = tree["Ne_VIII_770_Peak_data"].dataset
    assert ds.radiance.dims == ("raster", "y", "x", "wavelength")
    assert list(ds.rasterno.values) == [17, 18]
    single = open_spice(ne8_file)["Ne_VIII_770_Peak_data"].dataset.radiance
    np.testing.assert_array_equal(ds.radiance.isel(raster=0).values, single.values)
    other = tmp_path / "other.fits"
    shutil.copy(ne8_file, other)
    with fits.open(other, mode="update") as hdul:
        hdul[0].header["SPIOBSID"] = 1
    with pytest.raises(ValueError, match="different observations"):
        open_spice([paths[0], other])


def test_node_names():
    assert window_node_name("Ne VIII 770 - Peak data") == "Ne_VIII_770_Peak_data"
    assert window_node_name("DUMBBELL_UPPER_WINDOW3_97.20") == "DUMBBELL_UPPER_WINDOW3_97_20"


_PRINT_DASK_NAME = """
import sys
from saffron_xr.io.reader import open_spice
tree = open_spice(sys.argv[1])
for node in sorted(tree.children):
    print(node, tree[node].dataset.radiance.data.name)
"""


def test_dask_names_are_the_same_in_two_processes(exp_file):
    """Task keys do not depend on the process (string hashing is salted per process)."""

    names = []
    for seed in ("1", "2"):  # different string-hash salts, as two dask workers would have
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", _PRINT_DASK_NAME, str(exp_file)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        names.append(done.stdout.splitlines())
    assert len(names[0]) == 2  # the file's two windows
    assert names[0] == names[1]
    # and this process agrees with both
    here = open_spice(exp_file)
    assert [f"{n} {here[n].dataset.radiance.data.name}" for n in sorted(here.children)] == names[0]


def test_dask_names_change_when_the_file_changes(exp_file, tmp_path):
    """A rewritten file (other size or time) gets new task keys: no stale cached results."""
    copy = tmp_path / exp_file.name
    shutil.copyfile(exp_file, copy)

    def names():
        tree = open_spice(copy)
        return {n: tree[n].dataset.radiance.data.name for n in tree.children}

    os.utime(copy, ns=(1_000_000_000, 1_000_000_000))
    before = names()
    os.utime(copy, ns=(2_000_000_000, 2_000_000_000))
    after = names()
    assert before.keys() == after.keys()
    assert all(before[n] != after[n] for n in before)
