"""Starlet denoising: propagated errors against Monte Carlo, NaN handling, chunking, and the
acceptance test on a generated low-S/N raster fitted with saffron_xr.fit_lines."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import saffron_xr as sx
from saffron_xr.testing import make_spice_l2, raise_if_dask_computes


def _cube(seed=0, shape=(32, 24, 20), holes=True):
    rng = np.random.default_rng(seed)
    sigma = 0.1 + 0.2 * rng.random(shape)
    truth = np.ones(shape)
    data = truth + sigma * rng.standard_normal(shape)
    if holes:
        data[10:13, 5:9, :] = np.nan
        data[:, :, :2] = np.nan
    rad = xr.DataArray(data, dims=("y", "x", "wavelength"), attrs={"units": "W m-2 sr-1 nm-1"})
    return rad, rad.copy(data=sigma)


@pytest.mark.parametrize(
    "options",
    [{"threshold": 1e9}, {"threshold": 1e9, "transform": "isotropic"}],
    ids=["spatial", "isotropic"],
)
def test_linearised_error_matches_monte_carlo(options):
    """With infinite thresholds the denoiser is linear (the coarsest band only): its error is
    exact, up to the approximate treatment of samples next to holes and edges."""
    rad, err = _cube(holes=True)
    kwargs = {"scales": 2, **options}
    predicted = sx.denoise(rad, err, **kwargs).error.values
    # 200 independent draws along an extra dim, which the transform leaves alone
    rng = np.random.default_rng(11)
    noise = err.values * rng.normal(size=(200, *rad.shape))
    draws = xr.DataArray(
        np.where(np.isnan(rad.values), np.nan, 1.0 + noise), dims=("draw", *rad.dims)
    )
    errors = err.broadcast_like(draws).transpose(*draws.dims)
    # dask input: only the radiance is computed, not its (costlier) error
    out = sx.denoise(draws.chunk({"draw": 50}), errors.chunk({"draw": 50}), **kwargs)
    mc = out.radiance.values.std(axis=0)
    good = np.isfinite(predicted)
    assert np.array_equal(good, np.isfinite(rad.values))
    ratio = mc[good] / predicted[good]
    print(
        f"{options}: MC/propagated median {np.median(ratio):.3f}, "
        f"1-99 % {np.percentile(ratio, 1):.3f}-{np.percentile(ratio, 99):.3f}"
    )
    assert abs(np.median(ratio) - 1) < 0.05
    assert np.percentile(ratio, 1) > 0.8 and np.percentile(ratio, 99) < 1.2
    assert np.median(predicted[good] / err.values[good]) < 0.5


@pytest.mark.parametrize(
    "options",
    [{}, {"spectral_scales": 2}, {"transform": "isotropic"}],
    ids=["spatial", "2d1d", "isotropic"],
)
def test_zero_threshold_gives_the_input_back(options):
    """Every band kept: the transform sums back to the data, the error to the input error."""
    rad, err = _cube(shape=(20, 18, 16), holes=True)
    out = sx.denoise(rad, err, scales=2, threshold=0.0, **options)
    good = np.isfinite(rad.values)
    np.testing.assert_allclose(out.radiance.values[good], rad.values[good], rtol=1e-10)
    np.testing.assert_allclose(out.error.values[good], err.values[good], rtol=1e-10)
    assert np.isnan(out.radiance.values[~good]).all() and np.isnan(out.error.values[~good]).all()


def test_nan_chunking_dtype_laziness_and_accessor():
    rad, err = _cube(seed=3, shape=(40, 30, 24))
    rad, err = rad.astype("float32"), err.astype("float32")
    ref = sx.denoise(rad, err)  # numpy path
    with raise_if_dask_computes():
        lazy = sx.denoise(rad.chunk({"y": 9, "x": 7}), err.chunk({"y": 9, "x": 7}))
        via = rad.chunk({"y": 20}).saffron.denoise(err.chunk({"y": 20}))
    out = lazy.compute()
    xr.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    xr.testing.assert_allclose(via.compute(), ref, rtol=1e-5, atol=1e-6)
    assert out.radiance.dtype == np.float32 and out.error.dtype == np.float32
    assert np.array_equal(np.isnan(out.radiance.values), np.isnan(rad.values))
    assert float(abs(out.radiance - 1).std()) < 0.5 * float(abs(rad - 1).std())
    assert out.radiance.attrs["denoise_scales"] == 3
    assert out.error.attrs["units"] == "W m-2 sr-1 nm-1"
    # the other transforms run lazily too and give different results
    iso = sx.denoise(rad.chunk({"y": 20}), err.chunk({"y": 20}), transform="isotropic")
    assert not np.allclose(iso.radiance.values, ref.radiance.values, equal_nan=True)
    with pytest.raises(ValueError, match="threshold"):
        sx.denoise(rad, err, threshold=[3.0, 3.0])
    with pytest.raises(ValueError, match="transform"):
        sx.denoise(rad, err, transform="3d")


@pytest.mark.slow
def test_denoising_improves_fitted_amplitudes_without_bias(tmp_path):
    """Acceptance: on a generated low-S/N raster, fitted amplitudes get a lower RMS error
    and their mean moves by less than 1 %. Both fits weight with the true noise-model
    errors, so that the comparison is about the denoiser, not about noisy weights."""
    window = {
        "extname": "Ne VIII 770 - Peak",
        "lines": [("ne_8", 770.428, 1.0, "ne_8 770.42")],
        "wavemin": 768.4,
        "nwave": 56,
    }
    truth = make_spice_l2(tmp_path, windows=[window], ny=96, nx=64, seed=3, include_radiance=True)
    tree = sx.open_spice(truth.attrs["path"])
    (name,) = tree.children
    radiance = tree[name].ds.radiance.chunk({"y": 48})
    true = truth[name].ds
    error_true = xr.DataArray(true.error_true.values, dims=radiance.dims)
    with raise_if_dask_computes():
        denoised = sx.denoise(radiance, sx.spice_error(radiance))
    model = sx.LineModel()
    model.add_line("ne_8 770.42", amplitude=1.0, centroid=770.3, width=0.33)
    raw_fit = sx.fit_lines(radiance, model, error=error_true).compute()
    den_fit = sx.fit_lines(denoised.radiance, model, error=error_true).compute()

    amp_true = true.amplitude.values[0]
    amp_raw = raw_fit.amplitude.values[0]
    amp_den = den_fit.amplitude.values[0]
    ok = np.isfinite(amp_raw) & np.isfinite(amp_den)
    assert ok.mean() > 0.99
    peak_snr = amp_true / true.error_true.max("wavelength").values
    rms_raw = np.sqrt(np.mean((amp_raw[ok] - amp_true[ok]) ** 2))
    rms_den = np.sqrt(np.mean((amp_den[ok] - amp_true[ok]) ** 2))
    bias_raw = amp_raw[ok].mean() / amp_true[ok].mean() - 1
    bias_den = amp_den[ok].mean() / amp_true[ok].mean() - 1
    print(
        f"peak S/N median {np.median(peak_snr):.1f}; amplitude RMS error raw {rms_raw:.4f}, "
        f"denoised {rms_den:.4f}; mean bias raw {100 * bias_raw:+.2f} %, "
        f"denoised {100 * bias_den:+.2f} %"
    )
    assert np.median(peak_snr) < 5  # low S/N indeed
    assert rms_den < 0.5 * rms_raw
    assert abs(bias_den) < 0.01
