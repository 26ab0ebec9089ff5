"""The SPICE noise model (saffron_xr.spice_error) against hand computations on real files."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from astropy.io import fits

import saffron_xr as sx
from saffron_xr.testing import raise_if_dask_computes

ATTRS = {
    "RADCAL": 38.15,
    "XPOSURE": 4.7,
    "NBIN2": 1,
    "NBIN3": 1,
    "DETECTOR": "SW",
    "units": "W m-2 sr-1 nm-1",
}


def _hand_sigma(data, radcal, xposure, nbin, detector, k=2):
    """The published formula, written out independently in float64."""
    gain, dark, factor = {"SW": (3.58, 0.89, 1.0), "LW": (0.57, 0.54, 1.6)}[detector]
    floor = k * nbin * (6.9**2 + dark * xposure)
    data = np.asarray(data, dtype=np.float64)
    positive = np.sqrt(factor**2 * gain * radcal * np.maximum(data, 0.0) + floor) / radcal
    negative = np.abs(data) + np.sqrt(floor) / radcal
    return np.where(data >= 0, positive, negative)


def _rel_diff(a, b):
    both = np.isfinite(a) & np.isfinite(b)
    assert np.array_equal(np.isfinite(a), np.isfinite(b))
    return np.max(np.abs(a[both] - b[both]) / np.abs(b[both]))


def test_real_exp_file_per_wavelength_radcal(exp_file):
    tree = sx.open_spice(exp_file)
    with fits.open(exp_file) as hdul:
        table = hdul["VARIABLE_KEYWORDS"].data
        hdus = [(h.header, h.data) for h in hdul if h.is_image]
    assert len(hdus) == 2
    for (header, data), node in zip(hdus, tree.children.values(), strict=True):
        radiance = node.ds.radiance
        assert "radcal" in radiance.coords  # the per-wavelength table reached the DataArray
        with raise_if_dask_computes():
            error = sx.spice_error(radiance)
            # rechunking makes the radcal coordinate a dask array too: still nothing computed
            rechunked = sx.spice_error(radiance.chunk({"y": 256}))
        assert rechunked.chunks[0] == (256,) * 4
        # hand computation straight from the FITS file: (t, wavelength, y, x) -> (y, x, wl)
        radcal = np.asarray(table[f"RADCAL[{header['EXTNAME']}]"], dtype=float).ravel()
        cube = np.moveaxis(data[0].astype(np.float64), 0, -1)
        nbin = header["NBIN2"] * header["NBIN3"]
        expected = _hand_sigma(cube, radcal, header["XPOSURE"], nbin, header["DETECTOR"])
        got = error.values
        assert got.dtype == np.float32 == radiance.dtype
        assert got.shape == expected.shape
        assert _rel_diff(got, expected) < 1e-6
        assert _rel_diff(rechunked.values, expected) < 1e-6
        # the scalar RADCAL would differ: the coordinate was really used
        scalar = _hand_sigma(cube, header["RADCAL"], header["XPOSURE"], nbin, header["DETECTOR"])
        assert _rel_diff(got, scalar) > 1e-3
        assert error.attrs["units"] == radiance.attrs["units"]
        assert error.attrs["noise_detector"] == header["DETECTOR"]
        assert error.name == "error"
        # a calibration exposure with no line: both branches of the rule are exercised
        assert np.nanmin(cube) < 0 < np.nanmax(cube)


def test_real_ne8_window_scalar_radcal(ne8_file):
    tree = sx.open_spice(ne8_file)
    (node,) = tree.children.values()
    radiance = node.ds.radiance
    with raise_if_dask_computes():
        error = sx.spice_error(radiance)
    assert error.chunks == radiance.chunks
    with fits.open(ne8_file) as hdul:
        header, data = hdul[0].header, hdul[0].data
    cube = np.moveaxis(data[0].astype(np.float64), 0, -1)
    expected = _hand_sigma(cube, header["RADCAL"], header["XPOSURE"], 1, "SW")
    assert _rel_diff(error.values, expected) < 1e-6
    assert error.attrs["noise_radcal"] == pytest.approx(38.1512290011)
    assert error.attrs["noise_model_citation"] == sx.SPICE_NOISE_CITATION
    assert "10.1051/0004-6361/202345988" in sx.SPICE_NOISE_CITATION


def test_negative_zero_and_positive_branches():
    values = np.array([[[-1.0, 0.0, 2.0]]], dtype="float32")
    rad = xr.DataArray(values, dims=("y", "x", "wavelength"), attrs=ATTRS)
    err = sx.spice_error(rad).values[0, 0]
    floor = np.sqrt(2 * (6.9**2 + 0.89 * 4.7)) / 38.15
    assert err[0] == pytest.approx(1.0 + floor, rel=1e-6)
    assert err[1] == pytest.approx(floor, rel=1e-6)
    assert err[2] == pytest.approx(np.sqrt(3.58 * 38.15 * 2 + floor**2 * 38.15**2) / 38.15)


def test_lw_constants_dark_factor_binning_and_overrides():
    rad = xr.DataArray(np.full((2, 1, 3), 5.0), dims=("y", "x", "wavelength"), attrs=ATTRS)
    lw = sx.spice_error(rad, detector="LW", radcal=2.0, xposure=30.0, nbin2=2, dark_factor=1)
    expected = _hand_sigma(5.0, 2.0, 30.0, 2, "LW", k=1)
    assert np.allclose(lw.values, expected, rtol=1e-12)
    assert lw.dtype == np.float64  # float64 in, float64 out
    k2 = sx.spice_error(rad.assign_attrs(DETECTOR="LW", RADCAL=2.0, XPOSURE=30.0, NBIN2=2))
    assert np.all(k2.values > lw.values)  # k = 2 doubles the signal-independent variance
    assert k2.attrs["noise_dark_factor"] == 2 and lw.attrs["noise_dark_factor"] == 1
    assert lw.attrs["noise_gain"] == 0.57 and lw.attrs["noise_factor"] == 1.6


def test_missing_keyword_names_it_and_bad_values_raise():
    attrs = {k: v for k, v in ATTRS.items() if k != "XPOSURE"}
    rad = xr.DataArray(np.ones((1, 1, 2)), dims=("y", "x", "wavelength"), attrs=attrs)
    with pytest.raises(KeyError, match="XPOSURE"):
        sx.spice_error(rad)
    assert sx.spice_error(rad, xposure=4.7).shape == (1, 1, 2)  # an override fills the gap
    with pytest.raises(ValueError, match="DETECTOR"):
        sx.spice_error(rad, xposure=1.0, detector="XX")
    with pytest.raises(ValueError, match="dark_factor"):
        sx.spice_error(rad, xposure=1.0, dark_factor=3)
    with pytest.raises(ValueError, match="RADCAL"):
        sx.spice_error(rad, xposure=1.0, radcal=0.0)


def test_constants_table_is_read_only_and_complete():
    assert set(sx.SPICE_NOISE_CONSTANTS) == {"SW", "LW"}
    assert sx.SPICE_NOISE_CONSTANTS["SW"]["gain"] == 3.58
    assert sx.SPICE_NOISE_CONSTANTS["LW"]["dark_current"] == 0.54
    assert all(c["read_noise"] == 6.9 for c in sx.SPICE_NOISE_CONSTANTS.values())
    with pytest.raises(TypeError):
        sx.SPICE_NOISE_CONSTANTS["SW"]["gain"] = 1.0  # type: ignore[index]


def test_accessor_forwards():
    rad = xr.DataArray(
        np.ones((2, 2, 3), dtype="float32"), dims=("y", "x", "wavelength"), attrs=ATTRS
    ).chunk({"y": 1})
    with raise_if_dask_computes():
        via_accessor = rad.saffron.spice_error(dark_factor=1)
    xr.testing.assert_identical(via_accessor, sx.spice_error(rad, dark_factor=1))


@pytest.mark.parametrize(
    ("method", "function"),
    [
        ("spice_error", sx.spice_error),
        ("calibrate_error", sx.calibrate_error),
        ("despike", sx.despike),
        ("denoise", sx.denoise),
        ("bin", sx.bin_spatial),
        ("bin_levels", sx.bin_levels),
    ],
)
def test_prep_accessor_signatures_match_functions(method, function):
    import inspect

    accessor = inspect.signature(getattr(xr.DataArray.saffron, method))
    target = inspect.signature(function)
    got = [(p.name, p.kind, p.default) for p in list(accessor.parameters.values())[1:]]
    want = [(p.name, p.kind, p.default) for p in list(target.parameters.values())[1:]]
    assert got == want
