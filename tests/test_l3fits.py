"""SOLARNET / SPICE Level-3 style FITS export and reader."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import xarray as xr
from astropy.io import fits
from astropy.wcs import WCS

import saffron_xr
from saffron_xr.io.l3fits import open_l3_fits, to_l3_fits

pytestmark = pytest.mark.filterwarnings("error::astropy.io.fits.verify.VerifyWarning")

REFERENCE = "reference/spicefit_L3_100663832-017_ne8-770.fits"
LINES = ["ne_8 770.42", "mg_8 769.38"]


@pytest.fixture(scope="module")
def ne8_window(ne8_file):
    tree = saffron_xr.open_spice(ne8_file)
    return tree[next(iter(tree.children))].to_dataset()


def _params(window: xr.Dataset, *, dtype="f4", seed=0, degree=1) -> xr.Dataset:
    """A parameter Dataset shaped like fit_lines' output on the real Ne VIII window."""
    rng = np.random.default_rng(seed)
    ny, nx = window.sizes["y"], window.sizes["x"]
    nl = len(LINES)
    ds = xr.Dataset(
        coords={
            "line": LINES,
            "ion": ("line", ["ne_8", "mg_8"]),
            "rest_wavelength": ("line", [770.42, 769.38], {"units": "Angstrom"}),
            "hpln": window["hpln"],
            "hplt": window["hplt"],
            "time": window["time"],
        }
    )
    spec = {
        "amplitude": ("W m-2 sr-1 nm-1", 0.3, 0.1),
        "centroid": ("Angstrom", 770.05, 0.05),
        "width": ("Angstrom", 0.35, 0.03),
    }
    for name, (units, loc, scale) in spec.items():
        values = (loc + scale * rng.normal(size=(nl, ny, nx))).astype(dtype)
        values[:, :7] = np.nan
        ds[name] = (("line", "y", "x"), values, {"units": units, "long_name": name})
        err = np.abs(0.1 * scale * rng.normal(size=(nl, ny, nx))).astype(dtype)
        ds[f"{name}_err"] = (("line", "y", "x"), err, {"units": units})
    ds["cov_amplitude_width"] = (
        ("line", "y", "x"),
        (1e-4 * rng.normal(size=(nl, ny, nx))).astype(dtype),
        {"units": "W m-2 sr-1 nm-1 Angstrom"},
    )
    ds["background"] = (
        ("degree", "y", "x"),
        rng.normal(0.05, 0.01, (degree + 1, ny, nx)).astype(dtype),
        {"units": "W m-2 sr-1 nm-1"},
    )
    ds["background_err"] = (
        ("degree", "y", "x"),
        np.abs(rng.normal(0, 0.001, (degree + 1, ny, nx))).astype(dtype),
        {"units": "W m-2 sr-1 nm-1"},
    )
    ds["chi2"] = (("y", "x"), rng.random((ny, nx)).astype(dtype), {"units": "1"})
    ds["status"] = (("y", "x"), rng.integers(0, 7, (ny, nx)).astype("i1"), {"units": "1"})
    ds["n_iter"] = (("y", "x"), rng.integers(0, 50, (ny, nx)).astype("i4"), {"units": "1"})
    ds["n_valid"] = (("y", "x"), rng.integers(0, 50, (ny, nx)).astype("i4"), {"units": "1"})
    model = {
        "format": "saffron_xr.LineModel",
        "background_degree": degree,
        "segments": None,
        "lines": [
            {
                "name": "ne_8 770.42",
                "amplitude": 0.3,
                "centroid": 770.05,
                "width": 0.35,
                "bounds": {
                    "amplitude": [0.0, None],
                    "centroid": [769.65, 770.45],
                    "width": [0.1, 1.0],
                },
            }
        ],
        "ties": [{"line": "mg_8 769.38", "param": "width", "to": "ne_8 770.42", "value": 1.0}],
        "fixed": [],
    }
    keep = ("SPIOBSID", "RASTERNO", "STUDY", "DATE-OBS", "filename", "EXTNAME", "DETECTOR")
    ds.attrs = {k: window.attrs[k] for k in keep}
    ds.attrs["line_model"] = json.dumps(model)
    ds.attrs["header"] = window.attrs["header"]
    return ds


# ----------------------------------------------------------------------------- reference


def test_reads_reference_file(spice_dir, ne8_window):
    tree = open_l3_fits(spice_dir / REFERENCE)
    assert list(tree.children) == ["Ne_VIII_770_Peak"]
    ds = tree["Ne_VIII_770_Peak"].to_dataset()
    raw = fits.getdata(spice_dir / REFERENCE, 0)  # (parameter, time, y, x), nm and FWHM
    assert list(ds["line"].values) == ["ne_8 770.42"]
    assert ds["ion"].item() == "ne_8" and ds["rest_wavelength"].item() == 770.42
    assert ds["amplitude"].dims == ("line", "y", "x")
    np.testing.assert_array_equal(ds["amplitude"].values[0], raw[0, 0])
    # Position in nm -> Angstrom; Width stored as FWHM with PTRA = 0.424661 -> sigma
    np.testing.assert_allclose(ds["centroid"].values[0], raw[1, 0] * 10, rtol=1e-12)
    np.testing.assert_allclose(ds["width"].values[0], raw[2, 0] * 0.424661 * 10, rtol=1e-12)
    np.testing.assert_array_equal(ds["chi2"].values, raw[4, 0])
    np.testing.assert_array_equal(ds["background"].values[0], raw[3, 0])
    assert 769.9 < float(ds["centroid"].median()) < 770.2  # the line sits near 770.05
    # coordinates from its WCS: longitude and times equal the L2 file's; its writer dropped
    # the L2 PC2_1 term (0.1326), so latitudes differ by up to CDELT2*PC2_1 = 0.146 arcsec
    np.testing.assert_allclose(ds["hpln"], ne8_window["hpln"], atol=1e-6)
    lat_diff = np.abs(ds["hplt"].values - ne8_window["hplt"].values)
    assert 0.1 < lat_diff.max() < 0.15
    np.testing.assert_array_equal(ds["time"].values, ne8_window["time"].values)
    assert ds.attrs["EXTNAME"] == "Ne VIII 770 - Peak"


# ----------------------------------------------------------------------------- round trip


def test_round_trip_identical_float32(ne8_window, tmp_path):
    params = _params(ne8_window)
    path = to_l3_fits(params, tmp_path / "l3.fits")
    back = open_l3_fits(path)
    assert list(back.children) == ["Ne_VIII_770_Peak_data"]
    got = back["Ne_VIII_770_Peak_data"].to_dataset()
    xr.testing.assert_identical(got, params)
    for name in params.variables:
        assert got[name].dims == params[name].dims
        assert got[name].dtype == params[name].dtype


def test_round_trip_identical_float64(ne8_window, tmp_path):
    params = _params(ne8_window, dtype="f8", seed=1)
    back = open_l3_fits(to_l3_fits(params, tmp_path / "l3.fits"))
    xr.testing.assert_identical(back["Ne_VIII_770_Peak_data"].to_dataset(), params)


def test_l3_header_convention(ne8_window, ne8_file, tmp_path):
    params = _params(ne8_window)
    path = params.saffron.to_l3_fits(tmp_path / "l3.fits")
    with fits.open(path) as hdul:
        res, sig = hdul[0], hdul[1]
        ext = "Ne VIII 770 - Peak data"
        assert res.header["EXTNAME"] == f"{ext} results"
        assert sig.header["EXTNAME"] == f"{ext} sigma"
        for h in (res.header, sig.header):
            assert h["SOLARNET"] == 1 and h["OBS_HDU"] == 2
            assert h["ANA_NCMP"] == 3  # two Gaussians and the background
            assert h["RESEXT"] == f"{ext} results" and h["UNCEXT"] == f"{ext} sigma"
            assert h["DATAEXT"] == f"{ne8_file.name};{ext}"  # external L2 extension
            assert h["PARENT"] == ne8_file.name
            assert h["XTYPE1"] == "WAVE" and h["XDIMEN1"] == 3
            assert [h["CMPTYP1"], h["CMPTYP2"], h["CMPTYP3"]] == [
                "Gaussian",
                "Gaussian",
                "Polynomial",
            ]
            assert [h["CMPNAM1"], h["CMPNAM2"], h["CMPNAM3"]] == LINES + ["background"]
            assert [h["CMP_NP1"], h["CMP_NP2"], h["CMP_NP3"]] == [3, 3, 2]
            # positions and widths stored in Angstrom; PTRA converts to nm (the WAVE unit)
            assert h["PUNIT1B"] == "Angstrom" and h["PUNIT1C"] == "Angstrom"
            assert h["PTRA1B"] == 0.1 and h["PTRA1C"] == 0.1 and h["PTRB1C"] == 0.0
            assert h["PTRA1A"] == 1.0 and h["WAVEUNIT"] == -9
            assert h["PMIN1B"] == pytest.approx(76.965) and h["PMAX1C"] == pytest.approx(0.1)
            assert "tied to ne_8 770.42" in h["CMPDES2"]
            assert h["CTYPE4"] == "PARAMETER"
        # data axes (x, y, time, parameter): 2 x 3 + 2 + chi2 = 9 planes
        assert res.data.shape == (9, 1, ne8_window.sizes["y"], ne8_window.sizes["x"])
        np.testing.assert_array_equal(res.data[-1, 0], params["chi2"].values)
        np.testing.assert_array_equal(res.data[1, 0], params["centroid"].values[0])
        np.testing.assert_array_equal(sig.data[3, 0], params["amplitude_err"].values[1])
        assert np.isnan(sig.data[-1]).all()
        l2 = fits.getheader(ne8_file, 0)
        h = res.header
        # the spatial WCS of the L2 window is kept (axis 4 of L2, time, becomes axis 3)
        for key in ("CRVAL1", "CRVAL2", "CDELT1", "CDELT2", "CRPIX1", "CRPIX2", "CTYPE1"):
            assert h[key] == l2[key]
        for key in ("PC1_1", "PC1_2", "PC2_1", "PC2_2"):
            assert h[key] == l2[key]
        assert h["PC3_1"] == l2["PC4_1"] and h["CTYPE3"] == l2["CTYPE4"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            w = WCS(h)
    ny, nx = ne8_window.sizes["y"], ne8_window.sizes["x"]
    ix, iy = np.meshgrid(np.arange(nx), np.arange(ny))
    world = w.wcs_pix2world(
        np.stack([ix.ravel(), iy.ravel(), 0 * ix.ravel(), 0 * ix.ravel()], -1), 0
    )
    lon = ((world[:, 0] + 180) % 360 - 180) * 3600
    np.testing.assert_allclose(lon.reshape(ny, nx), ne8_window["hpln"], atol=1e-6)
    np.testing.assert_allclose(world[:, 1].reshape(ny, nx) * 3600, ne8_window["hplt"], atol=1e-6)


def test_background_converted_to_absolute_wavelength_basis(ne8_window, tmp_path):
    """The Polynomial component evaluates like saffron_xr's (lambda - ref) basis."""
    params = _params(ne8_window, dtype="f8", degree=2)
    path = to_l3_fits(params, tmp_path / "l3.fits", data=ne8_window)
    ref = 0.5 * (ne8_window["wavelength"].min() + ne8_window["wavelength"].max()).item()
    res = fits.getdata(path, 0)
    lam = np.array([768.9, 770.1, 771.3])  # Angstrom
    b = params["background"].values[:, 400, 1]
    ours = sum(b[k] * (lam - ref) ** k for k in range(3))
    c = res[6:9, 0, 400, 1]
    theirs = sum(c[j] * (lam / 10) ** j for j in range(3))
    np.testing.assert_allclose(theirs, ours, rtol=1e-9)


def test_data_extension_written_and_linked(ne8_window, ne8_file, tmp_path):
    params = _params(ne8_window)
    path = to_l3_fits(params, tmp_path / "l3.fits", data=ne8_window)
    with fits.open(path) as hdul:
        assert hdul[0].header["DATAEXT"] == "Ne VIII 770 - Peak data data"
        assert hdul[0].header["PARENTXT"] == f"{ne8_file.name};Ne VIII 770 - Peak data"
        data = hdul["Ne VIII 770 - Peak data data"]
        original = fits.getdata(ne8_file, 0)
        np.testing.assert_array_equal(data.data, original)
        assert data.header["CTYPE3"] == "WAVE"
    got = open_l3_fits(path)["Ne_VIII_770_Peak_data"].to_dataset()
    xr.testing.assert_identical(got, params)


def test_generic_reader_on_our_file(ne8_window, tmp_path):
    """Without the saffron_xr table the file still reads as any L3 file would."""
    params = _params(ne8_window, dtype="f8")
    path = to_l3_fits(params, tmp_path / "l3.fits")
    with fits.open(path) as hdul:
        keep = fits.HDUList([hdul[0].copy(), hdul[1].copy()])
    del keep[0].header["SXMETA"]
    keep.writeto(tmp_path / "plain.fits")
    got = open_l3_fits(tmp_path / "plain.fits")["Ne_VIII_770_Peak_data"].to_dataset()
    for name in ("amplitude", "centroid", "width", "amplitude_err", "centroid_err", "chi2"):
        np.testing.assert_allclose(got[name], params[name], rtol=1e-14)
    np.testing.assert_allclose(got["hpln"], params["hpln"], atol=1e-6)
    np.testing.assert_allclose(got["hplt"], params["hplt"], atol=1e-6)
    np.testing.assert_array_equal(got["time"], params["time"])
    assert list(got["line"].values) == LINES
    assert got["rest_wavelength"].values.tolist() == [770.42, 769.38]


def test_without_header_wcs_is_fitted_to_coordinates(ne8_window, tmp_path):
    params = _params(ne8_window, degree=0)
    del params.attrs["header"]
    path = to_l3_fits(params, tmp_path / "l3.fits")
    h = fits.getheader(path, 0)
    assert h["CTYPE1"] == "HPLN-TAN" and h["CTYPE4"] == "PARAMETER"
    with fits.open(path) as hdul:
        keep = fits.HDUList([hdul[0].copy(), hdul[1].copy()])
    del keep[0].header["SXMETA"]
    keep.writeto(tmp_path / "plain.fits")
    got = open_l3_fits(tmp_path / "plain.fits")["Ne_VIII_770_Peak_data"].to_dataset()
    np.testing.assert_allclose(got["hpln"], params["hpln"], atol=0.01)
    np.testing.assert_allclose(got["hplt"], params["hplt"], atol=0.01)
    dt = np.abs(got["time"].values - params["time"].values) / np.timedelta64(1, "ms")
    assert dt.max() < 1


def test_several_windows_and_sit_and_stare(ne8_window, tmp_path):
    ras = _params(ne8_window)
    times = np.datetime64("2022-03-17T00:00", "ns") + np.arange(3) * np.timedelta64(5, "s")
    sit = _params(ne8_window, seed=3, degree=0).isel(x=0, drop=True)
    sit = sit.expand_dims(time=3).transpose("line", "time", "y", "degree")
    sit = sit.assign_coords(time=("time", times))
    sit.attrs = {k: v for k, v in sit.attrs.items() if k != "header"} | {"EXTNAME": "Sit window"}
    tree = xr.DataTree.from_dict({"/ras": ras, "/sit": sit})
    path = tree.saffron.to_l3_fits(tmp_path / "two.fits")
    back = open_l3_fits(path)
    assert set(back.children) == {"ras", "sit"}
    xr.testing.assert_identical(back["ras"].to_dataset(), ras)
    xr.testing.assert_identical(back["sit"].to_dataset(), sit)
    with fits.open(path) as hdul:
        assert hdul["Sit window results"].data.shape == (8, 3, ne8_window.sizes["y"], 1)


def test_errors_and_atomicity(ne8_window, tmp_path):
    params = _params(ne8_window)
    with pytest.raises(ValueError, match="extra dims"):
        to_l3_fits(params.expand_dims(level=2), tmp_path / "a.fits")
    with pytest.raises(ValueError, match="'amplitude'"):
        to_l3_fits(params.drop_vars("amplitude"), tmp_path / "a.fits")
    deg1 = params.copy()
    deg1.attrs = {k: v for k, v in params.attrs.items() if k not in ("line_model", "header")}
    with pytest.raises(ValueError, match="reference wavelength"):
        to_l3_fits(deg1, tmp_path / "a.fits")
    assert list(tmp_path.iterdir()) == []
    path = to_l3_fits(params, tmp_path / "a.fits")
    with pytest.raises(FileExistsError, match="a.fits"):
        to_l3_fits(params, path, overwrite=False)
    (tmp_path / "x.fits").write_bytes(b"not fits")
    with pytest.raises(ValueError, match="x.fits"):
        open_l3_fits(tmp_path / "x.fits")
    fits.PrimaryHDU(np.zeros(3)).writeto(tmp_path / "plain.fits")
    with pytest.raises(ValueError, match="no results extension"):
        open_l3_fits(tmp_path / "plain.fits")


# ----------------------------------------------------------------------------- with the fitter


@pytest.mark.slow
def test_fit_results_round_trip_and_reference_cross_check(ne8_window, spice_dir, tmp_path):
    params = saffron_xr.fit_lines(
        ne8_window["radiance"], saffron_xr.guess_model(ne8_window["radiance"])
    )
    params = params.compute()
    path = to_l3_fits(params, tmp_path / "fit.fits", data=ne8_window)
    got = open_l3_fits(path)["Ne_VIII_770_Peak_data"].to_dataset()
    xr.testing.assert_identical(got, params)
    with fits.open(path) as hdul:
        h = hdul[0].header
        assert h["ANA_NCMP"] == params.sizes["line"] + 1
        assert h["CMPNAM1"] == "ne_8 770.42"
        assert h["CHISQAVG"] == pytest.approx(float(params["chi2"].mean()))
    # loose cross-check of the centroids with another package's fit of the same window
    ref = open_l3_fits(spice_dir / REFERENCE)["Ne_VIII_770_Peak"].to_dataset()
    ours = params["centroid"].sel(line="ne_8 770.42").values
    diff = ours - ref["centroid"].values[0]
    ok = np.isfinite(diff) & (params["status"].values <= 1)
    assert ok.sum() > 1000
    assert abs(np.median(diff[ok])) < 0.05


# ----------------------------------------------------------------------------- logged fallbacks


def _singular(header: fits.Header) -> None:
    """Make the spatial PC matrix of ``header`` singular (wcslib cannot invert it)."""
    for key in ("PC1_1", "PC1_2", "PC2_1", "PC2_2"):
        header[key] = 0.0


def test_generic_reader_logs_an_unusable_wcs(ne8_window, tmp_path, caplog):
    """A results header whose WCS cannot be evaluated: read without coordinates, and said so."""
    params = _params(ne8_window, dtype="f8")
    path = to_l3_fits(params, tmp_path / "l3.fits")
    with fits.open(path) as hdul:
        keep = fits.HDUList([hdul[0].copy(), hdul[1].copy()])
    del keep[0].header["SXMETA"]
    _singular(keep[0].header)
    keep.writeto(tmp_path / "plain.fits")
    with caplog.at_level("WARNING", logger="saffron_xr"):
        got = open_l3_fits(tmp_path / "plain.fits")["Ne_VIII_770_Peak_data"].to_dataset()
    assert "hpln" not in got.coords and "hplt" not in got.coords
    np.testing.assert_allclose(got["amplitude"], params["amplitude"], rtol=1e-14)
    messages = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(
        "plain.fits" in m and "WCS cannot be evaluated" in m and "hpln/hplt/time" in m
        for m in messages
    ), messages


def test_writer_logs_a_wcs_fitted_to_a_cutout(ne8_window, tmp_path, caplog):
    """The L2 WCS does not describe a cut-out: a fitted WCS is written, and that is logged."""
    params = _params(ne8_window, degree=0).isel(y=slice(100, 300))
    with caplog.at_level("INFO", logger="saffron_xr"):
        path = to_l3_fits(params, tmp_path / "l3.fits")
    h = fits.getheader(path, 0)
    assert "fitted to the hpln/hplt" in str(h["COMMENT"])
    assert any("writing a WCS fitted" in r.getMessage() for r in caplog.records)


def test_writer_logs_an_l2_wcs_it_cannot_evaluate(ne8_window, tmp_path, caplog):
    params = _params(ne8_window, degree=0)
    header = fits.Header.fromstring(params.attrs["header"], sep="\n")
    _singular(header)
    params.attrs["header"] = header.tostring(sep="\n", padding=False)
    with caplog.at_level("WARNING", logger="saffron_xr"):
        path = to_l3_fits(params, tmp_path / "l3.fits")
    got = open_l3_fits(path)["Ne_VIII_770_Peak_data"].to_dataset()
    np.testing.assert_array_equal(got["hpln"], params["hpln"])  # the table keeps them
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("cannot be evaluated on the results grid" in m for m in warned), warned
    assert "fitted to the hpln/hplt" in str(fits.getheader(path, 0)["COMMENT"])


def test_writer_logs_an_unreadable_line_model(ne8_window, tmp_path, caplog):
    good = to_l3_fits(_params(ne8_window, degree=0), tmp_path / "good.fits")
    assert "PMIN1B" in fits.getheader(good, 0)  # the bounds of the model are written
    params = _params(ne8_window, degree=0)
    params.attrs["line_model"] = "{not json"
    with caplog.at_level("WARNING", logger="saffron_xr"):
        path = to_l3_fits(params, tmp_path / "l3.fits")
    assert "PMIN1B" not in fits.getheader(path, 0)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("'line_model' attribute cannot be read" in m for m in warned), warned
