"""NaN-aware spatial binning: Monte-Carlo errors, NaN rules, pixel-scale matching, levels."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import saffron_xr as sx
from saffron_xr.prep import bin_extents
from saffron_xr.testing import raise_if_dask_computes

SCALES = {"CDELT1": 4.0, "CDELT2": 1.098, "units": "W m-2 sr-1 nm-1"}


def _noise_cube(seed=0, shape=(18, 10), n_draws=4000, holes=True):
    """Per-pixel sigma maps; the wavelength axis holds independent draws of the noise."""
    rng = np.random.default_rng(seed)
    sigma = rng.uniform(0.1, 1.0, shape)
    data = 3.0 + sigma[..., None] * rng.standard_normal((*shape, n_draws))
    if holes:
        data[2:5, 3:6] = np.nan  # a block of missing pixels
        data[10, :] = np.nan  # a missing row
        data[0, 0] = np.nan  # a missing corner
    rad = xr.DataArray(data, dims=("y", "x", "wavelength"), attrs=SCALES)
    err = xr.DataArray(
        np.broadcast_to(sigma[..., None], data.shape).copy(),
        dims=rad.dims,
        attrs={"units": "W m-2 sr-1 nm-1"},
    )
    return rad, err


@pytest.mark.parametrize(
    ("method", "size"),
    [("convolve", {"y": 3, "x": 3}), ("convolve", {"y": 5, "x": 1}), ("rebin", {"y": 2, "x": 3})],
)
def test_propagated_error_matches_monte_carlo(method, size):
    rad, err = _noise_cube()
    out = sx.bin_spatial(rad.chunk({"y": 7}), err.chunk({"y": 7}), size, method=method)
    values = out.radiance.values
    predicted = out.error.isel(wavelength=0).values
    good = np.isfinite(predicted)
    assert good.sum() > 20 and np.isnan(values[~good]).all()
    mc = values[good].std(axis=-1)  # scatter over independent draws
    ratio = mc / predicted[good]
    print(
        f"{method} {size}: MC/propagated median {np.median(ratio):.4f}, "
        f"range {ratio.min():.4f}-{ratio.max():.4f} over {good.sum()} bins"
    )
    assert np.all(np.abs(ratio - 1) < 0.05)
    # the error is not just constant: it follows sqrt(sum sigma^2) / N of the valid samples
    assert predicted[good].std() > 0.05 * predicted[good].mean()


def test_convolve_nan_rules_by_hand():
    data = np.arange(20.0).reshape(5, 4, 1)
    data[1, 1] = np.nan
    data[0, 2] = np.nan
    rad = xr.DataArray(data, dims=("y", "x", "wavelength"), attrs=SCALES)
    err = xr.full_like(rad, 2.0)
    out = sx.bin_spatial(rad, err, {"y": 3, "x": 3}, min_valid=0.5)
    # interior box around (1, 2): 9 samples, 2 NaN
    box = data[0:3, 1:4, 0]
    assert float(out.radiance[1, 2, 0]) == pytest.approx(np.nanmean(box))
    assert float(out.error[1, 2, 0]) == pytest.approx(2.0 * np.sqrt(7) / 7)
    # corner (0, 0): the box inside the array has 4 samples, one NaN -> 3/4 valid, kept
    assert float(out.radiance[0, 0, 0]) == pytest.approx(np.nanmean(data[0:2, 0:2, 0]))
    assert float(out.error[0, 0, 0]) == pytest.approx(2.0 / np.sqrt(3))
    # min_valid: with 0.8 the (1, 2) box (7/9 = 0.78) is dropped, the fully valid ones stay
    strict = sx.bin_spatial(rad, err, {"y": 3, "x": 3}, min_valid=0.8)
    assert np.isnan(strict.radiance[1, 2, 0]) and np.isfinite(strict.radiance[3, 2, 0])
    # an error that is NaN makes its sample invalid too
    err2 = err.copy()
    err2[3, 3, 0] = np.nan
    one = sx.bin_spatial(rad, err2, {"y": 1, "x": 1})
    assert np.isnan(one.radiance[3, 3, 0]) and np.isnan(one.error[3, 3, 0])
    assert float(one.radiance[4, 3, 0]) == data[4, 3, 0]


def test_rebin_partial_superpixels_coords_and_attrs():
    rng = np.random.default_rng(1)
    data = rng.normal(size=(7, 5, 3)).astype("float32")
    data[6, 4] = np.nan
    hpln = np.broadcast_to(np.arange(5.0) * 4, (7, 5))
    rad = xr.DataArray(
        data,
        dims=("y", "x", "wavelength"),
        coords={"hpln": (("y", "x"), hpln), "wavelength": [770.0, 770.1, 770.2]},
        attrs=SCALES,
    )
    err = xr.full_like(rad, 0.5)
    out = sx.rebin(rad, err, {"y": 2, "x": 2})
    assert out.radiance.shape == (4, 3, 3) and out.radiance.dtype == np.float32
    assert float(out.radiance[1, 1, 0]) == pytest.approx(data[2:4, 2:4, 0].mean(), rel=1e-6)
    # last superpixel in y holds 1 row; the corner (6, 4) one is a lone NaN sample -> NaN
    assert float(out.radiance[3, 0, 1]) == pytest.approx(data[6, 0:2, 1].mean(), rel=1e-6)
    assert float(out.error[3, 0, 1]) == pytest.approx(0.5 / np.sqrt(2))
    assert np.isnan(out.radiance[3, 2]).all()
    assert out.hpln.values[0].tolist() == [2.0, 10.0, 16.0]
    assert out.radiance.attrs["CDELT1"] == 8.0 and out.radiance.attrs["CDELT2"] == 2.196
    assert out.error.attrs["units"] == "W m-2 sr-1 nm-1"


def test_x_extent_matched_to_y_in_both_directions():
    rad = xr.DataArray(np.zeros((4, 4, 2)), dims=("y", "x", "wavelength"), attrs=SCALES)
    assert bin_extents(rad, 3) == {"y": 3, "x": 1}  # 3.3" along y, 4" raster steps
    assert bin_extents(rad, 11) == {"y": 11, "x": 3}  # 12.1" -> 3.02 steps
    fine = rad.assign_attrs(CDELT1=0.5)  # steps finer than the slit pixels
    assert bin_extents(fine, 3) == {"y": 3, "x": 7}  # 3.29" / 0.5" = 6.6 -> 7
    assert bin_extents(fine, 3, odd=False) == {"y": 3, "x": 7}
    assert bin_extents(fine, 2, odd=False) == {"y": 2, "x": 4}
    assert bin_extents(rad, 3, match_pixel_scale=False) == {"y": 3, "x": 3}
    assert bin_extents(rad, {"y": 5}) == {"y": 5, "x": 1}
    with pytest.raises(KeyError, match="CDELT1"):
        bin_extents(rad.drop_attrs(), 3)
    with pytest.raises(ValueError, match="odd"):
        sx.bin_spatial(rad, None, 4)
    single = xr.DataArray(np.zeros((4, 1, 2)), dims=("y", "x", "wavelength"), attrs=SCALES)
    assert bin_extents(single.assign_attrs(CDELT1=1.0), 3) == {"y": 3, "x": 1}
    sit = xr.DataArray(np.zeros((3, 4, 2)), dims=("time", "y", "wavelength"))
    assert bin_extents(sit, 3) == {"y": 3}  # time is not binned


def test_lazy_chunk_independent_and_dtype():
    rad, err = _noise_cube(shape=(16, 9), n_draws=6)
    rad, err = rad.astype("float32"), err.astype("float32")
    with raise_if_dask_computes():
        a = sx.bin_spatial(rad.chunk({"y": 3, "x": 2}), err.chunk({"y": 3, "x": 2}), 5)
        b = sx.rebin(rad.chunk({"y": 5}), err.chunk({"y": 5}), 3)
        c = sx.bin_levels(rad.chunk({"y": 4}), err.chunk({"y": 4}), [1, 3, 5])
        d = rad.chunk({"y": 4}).saffron.bin(err.chunk({"y": 4}), 5)
    ref = sx.bin_spatial(rad, err, 5)
    xr.testing.assert_allclose(a.compute(), ref, rtol=1e-6)
    xr.testing.assert_allclose(d.compute(), ref, rtol=1e-6)
    assert a.radiance.dtype == np.float32 and a.error.dtype == np.float32
    assert b.radiance.dtype == np.float32
    assert c.radiance.dtype == np.float32


def test_bin_levels_structure_and_content():
    rad, err = _noise_cube(shape=(12, 8), n_draws=5)
    levels = sx.bin_levels(rad.chunk({"y": 6}), err.chunk({"y": 6}), sizes=[1, 3, 5])
    assert levels.radiance.dims == ("level", "y", "x", "wavelength")
    assert levels.level.values.tolist() == [1, 3, 5]
    assert levels.level_size_x.values.tolist() == [1, 1, 1]  # 4" steps vs 1.1" pixels
    assert levels.radiance.chunks[0] == (3,)  # one chunk along level for the fit gufunc
    computed = levels.compute()
    xr.testing.assert_allclose(computed.radiance.isel(level=0, drop=True), rad.drop_attrs())
    level5 = sx.bin_spatial(rad, err, 5)
    xr.testing.assert_allclose(computed.error.isel(level=2, drop=True), level5.error.drop_attrs())
    assert computed.error.attrs["units"] == "W m-2 sr-1 nm-1"
    via = rad.saffron.bin_levels(err, [1, 3])
    assert via.level.values.tolist() == [1, 3]
    with pytest.raises(ValueError, match="increasing"):
        sx.bin_levels(rad, err, [3, 1])


def test_bin_levels_on_real_ne8_window(ne8_file):
    tree = sx.open_spice(ne8_file)
    (node,) = tree.children.values()
    radiance = node.ds.radiance.chunk({"y": 208})
    with raise_if_dask_computes():
        error = sx.spice_error(radiance)
        levels = sx.bin_levels(radiance, error, [1, 3, 5])
    assert levels.level_size_x.values.tolist() == [1, 1, 1]  # CDELT1 = 4", CDELT2 = 1.098"
    err = levels.error.compute()
    base = err.isel(level=0)
    interior = (base.notnull() & err.isel(level=2).notnull()).values
    # constant-ish errors along y: level 5 is about 1/sqrt(5) of level 1
    ratio = (err.isel(level=2) / base).values[interior]
    assert 0.35 < np.median(ratio) < 0.55
