"""Synthetic SPICE L2 files (saffron_xr.testing.make_spice_l2) and in-memory spectra."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import xarray as xr
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

import saffron_xr
from saffron_xr.io.filenames import parse_spice_filename
from saffron_xr.prep.noise import SPICE_NOISE_CONSTANTS
from saffron_xr.testing import (
    composition_windows,
    make_spectra,
    make_spice_l2,
)

C_KMS = 299792.458
NY, NX = 24, 6


@pytest.fixture(scope="module")
def noiseless(tmp_path_factory):
    """A small noise-free composition raster with the true radiance kept."""
    folder = tmp_path_factory.mktemp("noiseless")
    truth = make_spice_l2(folder, ny=NY, nx=NX, seed=4, noise=False, include_radiance=True)
    return truth


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    """A noisy composition raster, 64 x 16, with the true radiance and noise sigma kept."""
    folder = tmp_path_factory.mktemp("noisy")
    return make_spice_l2(folder, ny=64, nx=16, seed=11, include_radiance=True)


def _window_data(path, extname):
    with fits.open(path) as hdul:
        hdu = hdul[extname]
        return hdu.data.copy(), hdu.header.copy()


def _as_reader_layout(data, kind):
    """File order (t, wavelength, y, x) -> the reader's (y, x, wavelength) / (time, y, wl)."""
    if kind == "sit":
        return np.transpose(data[:, :, :, 0], (0, 2, 1))
    return np.transpose(data[0], (1, 2, 0))


# --- file structure and headers ------------------------------------------------------------


def test_file_layout_like_real_l2(noiseless):
    path = noiseless.attrs["path"]
    specs = composition_windows()
    with fits.open(path) as hdul:
        assert len(hdul) == len(specs) + 1
        assert isinstance(hdul[0], fits.PrimaryHDU)
        assert all(isinstance(h, fits.ImageHDU) for h in hdul[1:-1])
        table = hdul[-1]
        assert isinstance(table, fits.BinTableHDU)
        assert table.header["EXTNAME"] == "VARIABLE_KEYWORDS"
        for hdu, spec in zip(hdul[:-1], specs, strict=True):
            hdr = hdu.header
            assert hdr["EXTNAME"] == spec["extname"]
            assert hdu.data.dtype == np.dtype(">f4")
            assert hdu.data.shape == (1, spec["nwave"], NY, NX)
            assert 40 <= spec["nwave"] <= 80
            radcal = table.data[f"RADCAL[{spec['extname']}]"][0]
            assert radcal.size == spec["nwave"]
            np.testing.assert_allclose(radcal, hdr["RADCAL"])
            assert hdr["VAR_KEYS"].startswith("VARIABLE_KEYWORDS;RADCAL[")
            assert hdr["NWIN"] == len(specs)
    assert len(specs) == 9
    assert {s["detector"] for s in specs} == {"SW", "LW"}


def test_headers_carry_pipeline_keywords(noiseless):
    path = noiseless.attrs["path"]
    info = parse_spice_filename(path)
    with fits.open(path) as hdul:
        for hdu in hdul[:-1]:
            h = hdu.header
            assert h["INSTRUME"] == "SPICE"
            assert h["LEVEL"] == "L2"
            assert h["BUNIT"] == "W/m2/sr/nm"
            assert h["STUDYTYP"] == "Raster"
            assert h["DATAPROD"] == "Narrow-slit Spectral Raster"
            assert h["WIN_TYPE"] == "Narrow-slit Spectral"
            assert h["OBS_HDU"] == 1
            assert h["SLIT_WID"] == 4
            assert h["XPOSURE"] == 5.0
            assert h["NBIN2"] == 1 and h["NBIN3"] == 1
            assert h["DETECTOR"] in ("SW", "LW")
            assert h["TELESCOP"] == f"SOLO/SPICE/{h['DETECTOR']}"
            # default RADCAL is proportional to the exposure time (38.15 for SW at 4.7 s)
            rate = {"SW": 38.15 / 4.7, "LW": 38.15 / 4.7 / 6.42}[h["DETECTOR"]]
            assert h["RADCAL"] == pytest.approx(rate * 5.0)
            assert h["SPIOBSID"] == info.spiobsid
            assert h["RASTERNO"] == info.rasterno
            assert h["FILENAME"] == info.name
            assert int(h["VERSION"]) == info.version
            assert h["DATE-OBS"] == h["DATE-BEG"] == h["DATEREF"] == "2024-04-25T12:19:22.000"
            assert np.datetime64(h["DATE-END"]) > np.datetime64(h["DATE-BEG"])
            assert h["STUDY"] and h["SOOPNAME"]
            # WCS: helioprojective TAN axes, wavelength in nm, 4 arcsec steps, 1.098 arcsec pixels
            assert (h["CTYPE1"], h["CTYPE2"], h["CTYPE3"], h["CTYPE4"]) == (
                "HPLN-TAN",
                "HPLT-TAN",
                "WAVE",
                "UTC",
            )
            assert h["CUNIT3"] == "nm"
            assert h["CDELT1"] == 4.0 and h["CDELT2"] == 1.098
            cdelt3 = {"SW": 0.0097517, "LW": 0.009623}[h["DETECTOR"]]
            assert h["CDELT3"] == pytest.approx(cdelt3)
            assert h["PC4_1"] == pytest.approx(-(h["XPOSURE"] + 0.3))
            # the PC matrix is a rotation by CROTA in arcsec units
            rho = math.radians(h["CROTA"])
            assert h["PC1_1"] == pytest.approx(math.cos(rho))
            assert h["PC1_2"] * h["CDELT1"] / h["CDELT2"] == pytest.approx(-math.sin(rho))
            assert h["PC2_1"] * h["CDELT2"] / h["CDELT1"] == pytest.approx(math.sin(rho))
            # WAVEMIN/WAVEMAX are the outer edges of the first/last pixels (nm)
            n = h["NAXIS3"]
            first = h["CRVAL3"] + h["CDELT3"] * (1 - h["CRPIX3"])
            assert h["WAVEMIN"] == pytest.approx(first - h["CDELT3"] / 2, abs=1e-7)
            assert h["WAVEMAX"] == pytest.approx(first + h["CDELT3"] * (n - 0.5), abs=1e-7)


def test_filename_follows_spice_convention(tmp_path):
    truth = make_spice_l2(
        tmp_path,
        windows=[
            {"extname": "N IV 765 - Peak", "lines": [("n_4", 765.147, 3.0)], "wavemin": 763.2}
        ],
        ny=4,
        nx=2,
        spiobsid=100663832,
        rasterno=17,
        date_obs="2022-03-17T00:25:36.658",
        version=3,
    )
    assert truth.attrs["filename"] == "solo_L2_spice-n-ras_20220317T002536_V03_100663832-017.fits"
    # a full path is used as given
    target = tmp_path / "sub" / "my_file.fits"
    truth = make_spice_l2(target, windows=[{"wavemin": 763.2, "nwave": 40}], ny=4, nx=2)
    assert truth.attrs["path"] == str(target) and target.is_file()


def test_composition_rest_wavelengths_are_chianti_values(xuvtop):
    """Each composition line is a transition of its ion in CHIANTI's .wgfa file (0.001 A)."""
    for spec in composition_windows():
        for ion, rest, peak, *_ in spec["lines"]:
            element = ion.split("_")[0]
            wgfa = xuvtop / element / ion / f"{ion}.wgfa"
            wavelengths = []
            for row in wgfa.read_text().splitlines():
                if row.strip() == "-1":
                    break
                try:
                    wavelengths.append(abs(float(row[10:25])))
                except ValueError:
                    continue
            closest = min(wavelengths, key=lambda w: abs(w - rest))
            assert closest == pytest.approx(rest, abs=1e-3), (ion, rest)
            assert peak > 0
            window = (spec["wavemin"], spec["wavemin"] + spec["nwave"] * 0.0975)
            assert window[0] + 1.0 < rest < window[1] - 1.0, (spec["extname"], rest)


# --- the data match the truth ----------------------------------------------------------------


def test_noiseless_data_is_the_gaussian_model_of_the_truth(noiseless):
    """Rebuild each window from the truth parameters (float64) and the header WCS."""
    path = noiseless.attrs["path"]
    for name, node in noiseless.children.items():
        tr = node.to_dataset()
        data, hdr = _window_data(path, tr.attrs["EXTNAME"])
        cube = _as_reader_layout(data, "ras")  # (y, x, wavelength)
        nw = hdr["NAXIS3"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)  # CROTA, DATEREF -> MJDREF notes
            wcs = WCS(hdr, fix=False)
        wave = wcs.wcs_pix2world(np.c_[np.zeros((nw, 2)), np.arange(nw), np.zeros(nw)], 0)
        wave = wave[:, 2] * 1e10
        np.testing.assert_array_equal(tr.wavelength.values, wave)
        model = tr.background.values[..., None] + sum(
            a[..., None] * np.exp(-0.5 * ((wave - c[..., None]) / w[..., None]) ** 2)
            for a, c, w in zip(
                tr.amplitude.values, tr.centroid.values, tr.width.values, strict=True
            )
        )
        valid = np.isfinite(cube)
        assert valid.mean() > 0.75, name
        np.testing.assert_allclose(cube[valid], model[valid], rtol=2e-4, atol=1e-6, err_msg=name)
        np.testing.assert_array_equal(cube[valid], tr.radiance_true.values[valid])


def test_nan_padding_at_window_edges(noiseless):
    path = noiseless.attrs["path"]
    for node in noiseless.children.values():
        tr = node.to_dataset()
        data, _ = _window_data(path, tr.attrs["EXTNAME"])
        cube = data[0]  # (wavelength, y, x)
        nw = cube.shape[0]
        low, high = tr.nan_pad_low.values, tr.nan_pad_high.values
        assert low.min() >= 3 and high.min() >= 3 and low.max() <= 5 and high.max() <= 5
        assert low[0] != low[-1] or high[0] != high[-1]  # the padding drifts along the slit
        expected = np.zeros(cube.shape, bool)
        for iy in range(cube.shape[1]):
            expected[: low[iy], iy, :] = True
            expected[nw - high[iy] :, iy, :] = True
        np.testing.assert_array_equal(np.isnan(cube), expected)


def test_truth_dataset_conventions(noiseless):
    specs = {s["extname"]: s for s in composition_windows()}
    assert set(noiseless.children) == {
        "O_III_703_Mg_IX_706_Peak",
        "S_IV_748_Mg_IX_750_Peak",
        "N_IV_765_Peak",
        "Ne_VIII_770_Peak",
        "S_V_786_O_IV_787_Peak",
        "Ly_gamma_C_III_977_Peak",
        "N_III_991_Peak",
        "O_VI_1032_Peak",
        "O_VI_1037_Peak",
    }
    for node in noiseless.children.values():
        tr = node.to_dataset()
        spec = specs[tr.attrs["EXTNAME"]]
        for var in ("amplitude", "centroid", "width", "doppler_velocity"):
            assert tr[var].dims == ("line", "y", "x")
            assert tr[var].shape == (len(spec["lines"]), NY, NX)
        assert tr.background.dims == ("y", "x")
        assert tr.offset.dims == ()
        for var in tr.data_vars:
            assert "units" in tr[var].attrs, var
        assert tr.rest_wavelength.attrs["units"] == "Angstrom"
        assert list(tr.line.values) == [
            line[3] if len(line) == 4 else f"{line[0]} {line[1]:.2f}" for line in spec["lines"]
        ]
        assert list(tr.ion.values) == [line[0] for line in spec["lines"]]
        # observed centroid = Doppler-shifted rest wavelength + the window's offset
        rest = tr.rest_wavelength
        expected = rest * (1 + tr.doppler_velocity / C_KMS) + tr.offset
        np.testing.assert_allclose(tr.centroid, expected, rtol=0, atol=1e-9)
        assert -0.5 <= float(tr.offset) <= 0.5
        # smooth maps: a few km/s, widths near SPICE's ~0.35 A sigma, amplitudes vary
        assert 0.5 < float(abs(tr.doppler_velocity).max()) <= 5.0
        assert 0.25 < float(tr.width.min()) and float(tr.width.max()) < 0.45
        ratio = tr.amplitude.max(("y", "x")) / tr.amplitude.min(("y", "x"))
        assert (ratio > 1.5).all()
        # neighbouring pixels differ little (smooth), unlike white noise
        v = tr.doppler_velocity.values
        assert np.abs(np.diff(v, axis=1)).mean() < 0.5 * v.std()


def test_offsets_differ_between_windows_and_follow_offset_range(tmp_path):
    wins = [
        {"extname": f"W{i}", "lines": [("ne_8", 770.428, 1.0)], "wavemin": 768.4} for i in range(4)
    ]
    truth = make_spice_l2(tmp_path / "a", windows=wins, ny=4, nx=2, offset_range=(-0.4, -0.2))
    offsets = [float(n["offset"]) for n in truth.children.values()]
    assert all(-0.4 <= o <= -0.2 for o in offsets)
    assert len(set(offsets)) == 4
    truth = make_spice_l2(tmp_path / "b", windows=wins, ny=4, nx=2, offset_range=(0.0, 0.0))
    assert all(float(n["offset"]) == 0.0 for n in truth.children.values())


# --- noise -----------------------------------------------------------------------------------


def test_noise_follows_the_spice_model(noisy):
    path = noisy.attrs["path"]
    pulls = []
    for node in noisy.children.values():
        tr = node.to_dataset()
        data, hdr = _window_data(path, tr.attrs["EXTNAME"])
        cube = _as_reader_layout(data, "ras")
        det = hdr["DETECTOR"]
        c = SPICE_NOISE_CONSTANTS[det]
        true = tr.radiance_true.values.astype(float)
        expected = (
            np.sqrt(
                c["noise_factor"] ** 2 * c["gain"] * hdr["RADCAL"] * np.maximum(true, 0)
                + 2.0 * 1 * (6.9**2 + c["dark_current"] * hdr["XPOSURE"])
            )
            / hdr["RADCAL"]
        )
        np.testing.assert_allclose(tr.error_true.values, expected, rtol=1e-5)
        valid = np.isfinite(cube)
        pulls.append(((cube - true) / expected)[valid])
    pulls = np.concatenate(pulls)
    assert pulls.size > 300_000
    assert abs(pulls.mean()) < 0.01
    assert abs(pulls.std() - 1) < 0.01
    assert abs(np.mean(np.abs(pulls) > 3) - 0.0027) < 0.001  # Gaussian tails


def test_noise_floor_values():
    """Zero-signal sigma by hand: sqrt(k NBIN (R^2 + D t)) / RADCAL."""
    ds = make_spectra(1, lines=[], background=0.0, detector="SW", radcal=10.0, xposure=4.0)
    assert float(ds.error.max()) == pytest.approx(math.sqrt(2 * (6.9**2 + 0.89 * 4)) / 10, 1e-5)
    ds = make_spectra(1, lines=[], background=0.0, wavemin=975.0, detector="LW", radcal=2.0)
    assert float(ds.error.max()) == pytest.approx(math.sqrt(2 * (6.9**2 + 0.54 * 5)) / 2, 1e-5)


def _peak_snr(truth):
    snr = []
    for node in truth.children.values():
        tr = node.to_dataset()
        c = SPICE_NOISE_CONSTANTS[tr.attrs["DETECTOR"]]
        radcal, t = tr.attrs["RADCAL"], tr.attrs["XPOSURE"]
        peak = tr.amplitude + tr.background
        var = c["noise_factor"] ** 2 * c["gain"] * radcal * peak
        var = var + 2 * (6.9**2 + c["dark_current"] * t)
        snr.append((tr.amplitude * radcal / np.sqrt(var)).values.ravel())
    return np.concatenate(snr)


def test_peak_signal_to_noise_spans_weak_to_strong(noisy, tmp_path):
    snr = _peak_snr(noisy)  # 5 s exposures
    assert np.percentile(snr, 5) < 2
    assert np.percentile(snr, 95) > 8
    long = make_spice_l2(tmp_path, ny=64, nx=16, seed=11, noise=False, xposure=60.0)
    snr_long = _peak_snr(long)
    assert np.percentile(snr_long, 5) > 4
    assert np.percentile(snr_long, 99) > 40
    # a bright patch at the same place in every window
    brightest = {
        np.unravel_index(int(np.argmax(n.amplitude.values[0])), (64, 16))
        for n in long.children.values()
    }
    rows = [b[0] for b in brightest]
    assert max(rows) - min(rows) < 16


def test_seeded_and_reproducible(tmp_path):
    kw = {"ny": 8, "nx": 3, "nwave": 40}
    a = make_spice_l2(tmp_path / "a.fits", seed=5, **kw)
    b = make_spice_l2(tmp_path / "b.fits", seed=5, **kw)
    c = make_spice_l2(tmp_path / "c.fits", seed=6, **kw)
    with fits.open(a.attrs["path"]) as ha, fits.open(b.attrs["path"]) as hb:
        with fits.open(c.attrs["path"]) as hc:
            for i in range(9):
                np.testing.assert_array_equal(ha[i].data, hb[i].data)
                assert not np.array_equal(ha[i].data, hc[i].data, equal_nan=True)
    xr.testing.assert_identical(a["N_IV_765_Peak"].to_dataset(), b["N_IV_765_Peak"].to_dataset())


# --- options ---------------------------------------------------------------------------------


def test_sit_and_stare_layout(tmp_path):
    truth = make_spice_l2(
        tmp_path,
        kind="sit",
        ny=10,
        nx=7,
        windows=[{"extname": "O VI 1032 - Peak", "lines": [("o_6", 1031.912, 15.0)],
                  "wavemin": 1029.9, "nwave": 42}],
        noise=False,
        include_radiance=True,
        xposure=2.0,
    )  # fmt: skip
    assert truth.attrs["filename"].startswith("solo_L2_spice-n-sit_")
    tr = truth["O_VI_1032_Peak"].to_dataset()
    assert tr.amplitude.dims == ("line", "time", "y") and tr.amplitude.shape == (1, 7, 10)
    assert tr.radiance_true.dims == ("time", "y", "wavelength")
    data, h = _window_data(truth.attrs["path"], "O VI 1032 - Peak")
    assert data.shape == (7, 42, 10, 1)
    assert h["STUDYTYP"] == "Sit-and-stare" and h["DATAPROD"].endswith("Sit-and-stare")
    assert h["CDELT4"] == pytest.approx(2.3) and "PC4_1" not in h
    assert h["DETECTOR"] == "LW"
    cube = _as_reader_layout(data, "sit")
    valid = np.isfinite(cube)
    np.testing.assert_array_equal(cube[valid], tr.radiance_true.values[valid])


def test_single_exposure_has_one_slit_position(tmp_path):
    truth = make_spice_l2(tmp_path, kind="exp", ny=12, nx=50, nwave=40)
    data, h = _window_data(truth.attrs["path"], 0)
    assert data.shape == (1, 40, 12, 1)
    assert h["STUDYTYP"] == "Single Exposure"
    assert truth["N_IV_765_Peak"].amplitude.dims == ("line", "y", "x")
    assert truth["N_IV_765_Peak"].amplitude.shape == (1, 12, 1)


def test_binning_float64_and_radcal_options(tmp_path):
    truth = make_spice_l2(
        tmp_path,
        ny=6,
        nx=2,
        nwave=40,
        nbin2=2,
        nbin3=2,
        dtype="float64",
        radcal={"SW": 20.0, "LW": 3.0},
        include_radiance=True,
    )
    with fits.open(truth.attrs["path"]) as hdul:
        h = hdul[0].header
        assert hdul[0].data.dtype == np.dtype(">f8") and h["BITPIX"] == -64
        assert h["CDELT2"] == pytest.approx(2 * 1.098)
        assert h["CDELT3"] == pytest.approx(2 * 0.0097517)
        assert (h["NBIN2"], h["NBIN3"], h["NBIN"]) == (2, 2, 4)
        assert h["RADCAL"] == 20.0 and hdul[6].header["RADCAL"] == 3.0
    floor = float(truth["N_IV_765_Peak"].error_true.min())
    signal_free = math.sqrt(2 * 4 * (6.9**2 + 0.89 * 5)) / 20.0
    assert floor == pytest.approx(signal_free, rel=0.05)


def test_store_truth_round_trips(tmp_path):
    truth = make_spice_l2(tmp_path, ny=5, nx=3, nwave=40, store_truth=True)
    nc = tmp_path / (truth.attrs["filename"].removesuffix(".fits") + "_truth.nc")
    assert nc.is_file()
    with xr.open_datatree(nc) as back:
        assert set(back.children) == set(truth.children)
        for name in truth.children:
            xr.testing.assert_allclose(back[name].to_dataset(), truth[name].to_dataset())


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="kind"):
        make_spice_l2("/nonexistent-never-written", kind="raster")
    with pytest.raises(ValueError, match="wavemin"):
        make_spice_l2("/nonexistent-never-written", windows=[{"lines": []}])
    with pytest.raises(ValueError, match="unknown keys"):
        make_spice_l2("/nonexistent-never-written", windows=[{"wavemin": 700, "lamda": 3}])
    with pytest.raises(ValueError, match="duplicate extname"):
        make_spice_l2(
            "/nonexistent-never-written",
            windows=[{"extname": "A", "wavemin": 700}, {"extname": "A", "wavemin": 710}],
        )
    with pytest.raises(ValueError, match="dtype"):
        make_spice_l2("/nonexistent-never-written", dtype="int16")


# --- reading it back with the package's reader ----------------------------------------------


def test_open_spice_reads_generated_file_like_the_truth(noiseless):
    tree = saffron_xr.open_spice(noiseless.attrs["path"])
    assert set(tree.children) == set(noiseless.children)
    for name, node in noiseless.children.items():
        ds = tree[name].to_dataset()
        tr = node.to_dataset()
        assert ds.radiance.dims == ("y", "x", "wavelength")
        np.testing.assert_array_equal(ds.wavelength.values, tr.wavelength.values)
        assert ds.attrs["EXTNAME"] == tr.attrs["EXTNAME"]
        assert ds.attrs["DETECTOR"] == tr.attrs["DETECTOR"]
        assert ds.attrs["RADCAL"] == tr.attrs["RADCAL"]
        diff = (ds.radiance - tr.radiance_true).values
        assert np.nanmax(np.abs(diff)) == 0.0


def test_synthetic_noise_is_the_package_noise_model(noiseless):
    """The generator's sigma is what spice_error gives for the file it wrote (same model)."""
    tree = saffron_xr.open_spice(noiseless.attrs["path"])
    for name, node in noiseless.children.items():
        tr = node.to_dataset()
        error = saffron_xr.spice_error(tree[name].to_dataset().radiance).values
        valid = np.isfinite(error)
        assert valid.mean() > 0.75, name
        np.testing.assert_allclose(tr.error_true.values[valid], error[valid], rtol=1e-6)
        assert tr.attrs["noise_gain"] == SPICE_NOISE_CONSTANTS[tr.attrs["DETECTOR"]]["gain"]
    assert noiseless.attrs["noise_model_citation"] == saffron_xr.SPICE_NOISE_CITATION


# --- in-memory spectra -----------------------------------------------------------------------


def test_make_spectra_truth_and_noise():
    lines = [("c_3", 977.020, 20.0), ("h_1", 972.537, 6.0)]
    clean = make_spectra(500, lines=lines, wavemin=970.9, nwave=80, detector="LW", noise=False)
    noisy = make_spectra(500, lines=lines, wavemin=970.9, nwave=80, detector="LW", seed=0)
    assert clean.radiance.dims == ("y", "wavelength") and clean.radiance.shape == (500, 80)
    assert clean.amplitude.dims == ("line", "y")
    assert list(clean.line.values) == ["c_3 977.02", "h_1 972.54"]
    assert clean.radiance.attrs["RADCAL"] == pytest.approx(38.15 / 4.7 / 6.42 * 5)
    assert clean.radiance.attrs["units"] == "W m-2 sr-1 nm-1"
    w = clean.wavelength.values
    model = clean.background.values[:, None] + sum(
        a[:, None] * np.exp(-0.5 * ((w - c[:, None]) / s[:, None]) ** 2)
        for a, c, s in zip(
            clean.amplitude.values, clean.centroid.values, clean.width.values, strict=True
        )
    )
    np.testing.assert_allclose(clean.radiance.values, model, rtol=2e-4, atol=1e-6)
    # same seed, same truth; the noise has the advertised sigma
    xr.testing.assert_identical(clean.amplitude, noisy.amplitude)
    pulls = ((noisy.radiance - clean.radiance) / noisy.error).values
    assert abs(pulls.std() - 1) < 0.02 and abs(pulls.mean()) < 0.02
    assert float(abs(clean.doppler_velocity).max()) <= 20.0


@pytest.mark.slow
def test_full_composition_raster(tmp_path):
    """The default 9-window 832 x 192 raster: sizes on disk and a readable last window."""
    truth = make_spice_l2(tmp_path)
    path = truth.attrs["path"]
    total = sum(s["nwave"] for s in composition_windows())
    expected_bytes = total * 832 * 192 * 4
    assert expected_bytes < (tmp_path / truth.attrs["filename"]).stat().st_size
    with fits.open(path, memmap=True) as hdul:
        assert [h.data.shape for h in hdul[:-1]] == [
            (1, s["nwave"], 832, 192) for s in composition_windows()
        ]
        last = np.asarray(hdul[8].data[0, :, 400, :])
        assert np.isfinite(last[10:-10]).all()


def test_composition_line_ids_are_default_catalog_names():
    """Fits driven by the default catalog line up with the truth by ``line`` id."""
    catalog = saffron_xr.LineCatalog.default()
    for spec in composition_windows():
        for ion, rest, _peak, *name in spec["lines"]:
            line_id = name[0] if name else f"{ion} {rest:.2f}"
            assert line_id in catalog, line_id
            assert catalog[line_id].rest_wavelength == pytest.approx(rest, abs=1e-9)
