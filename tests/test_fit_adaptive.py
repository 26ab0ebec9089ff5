"""Adaptive binning inside the fit (issue 5, item 5): fit_lines(..., thresholds=...) on data
stacked over binning levels picks, per pixel, the least-binned level meeting the thresholds."""

from __future__ import annotations

import dask.array as dsa
import numpy as np
import pytest
import xarray as xr
from scipy.ndimage import uniform_filter

from saffron_xr import FitStatus, LineModel, fit_lines
from saffron_xr.testing import raise_if_dask_computes

WAVE = np.linspace(768.6, 771.6, 32)
THRESHOLDS = {"amplitude": 0.1, "centroid": 1e-4, "width": 0.1}
SIGMA = 0.2


def fading_raster(ny=24, nx=30, sizes=(1, 3, 5), seed=1):
    """One line whose amplitude falls by 100x across x, binned by hand into levels."""
    rng = np.random.default_rng(seed)
    amp = 20.0 * 10 ** (-2.0 * np.arange(nx) / (nx - 1))  # 20 -> 0.2
    amp = np.broadcast_to(amp, (ny, nx))
    clean = amp[..., None] * np.exp(-0.5 * ((WAVE - 770.1) / 0.2) ** 2) + 1.0
    noisy = clean + SIGMA * rng.standard_normal(clean.shape)
    levels, errors = [], []
    for k in sizes:
        # box mean over (y, x); the error of a mean of k*k independent samples
        levels.append(uniform_filter(noisy, size=(k, k, 1), mode="nearest"))
        errors.append(np.full(noisy.shape, SIGMA / k))
    dims = ("level", "y", "x", "wavelength")
    coords = {"level": ("level", list(sizes), {"units": "pixel", "long_name": "bin size"}),
              "wavelength": ("wavelength", WAVE, {"units": "Angstrom"})}  # fmt: skip
    data = xr.DataArray(np.stack(levels).astype(np.float32), dims=dims, coords=coords,
                        attrs={"units": "W m-2 sr-1 nm-1"})  # fmt: skip
    error = xr.DataArray(np.stack(errors).astype(np.float32), dims=dims, coords=coords)
    return data, error, amp


def model():
    m = LineModel()
    m.add_line("ne_8 770.42", amplitude=5.0, centroid=770.1, width=0.2,
               bounds={"centroid": (769.6, 770.6), "width": (0.05, 0.6)})  # fmt: skip
    return m


def meets(ds):
    """Whether each pixel's fit meets THRESHOLDS (every kind, the one line)."""
    ok = np.isin(ds.status.values, [FitStatus.CONVERGED, FitStatus.CONVERGED_AT_BOUND])
    for kind, thr in THRESHOLDS.items():
        rel = np.abs(ds[kind + "_err"].isel(line=0).values / ds[kind].isel(line=0).values)
        ok &= rel <= thr
    return ok


def test_faint_pixels_choose_larger_levels_and_thresholds_are_met():
    data, error, _ = fading_raster()
    ds = fit_lines(data, model(), error=error, thresholds=THRESHOLDS)
    assert ds.level.dims == ("y", "x") and ds.level_index.dims == ("y", "x")
    assert ds.level.attrs["long_name"].startswith("level kept")
    level = ds.level.values
    nx = level.shape[1]
    bright, faint = level[:, : nx // 3], level[:, -nx // 3 :]
    print("mean bin size, bright third:", bright.mean(), " faint third:", faint.mean())
    assert (bright == 1).mean() > 0.95
    assert faint.mean() > bright.mean() + 1.5
    # the level grows (weakly) with faintness: median bin size is monotone across x
    med = np.median(level, axis=0)
    assert np.all(np.diff(med) >= 0)

    # per level, which pixels could meet the thresholds at all
    per_level = [fit_lines(data.isel(level=i), model(), error=error.isel(level=i))
                 for i in range(data.sizes["level"])]  # fmt: skip
    can = np.any([meets(p) for p in per_level], axis=0)
    met = ds.status.values == FitStatus.CONVERGED
    print(f"{can.sum()} pixels can meet the thresholds; {met[can].mean():.3f} of them do")
    assert met[can].mean() >= 0.95
    # every kept fit is exactly the plain fit of its level, and the least-binned that meets
    index = ds.level_index.values
    for i, p in enumerate(per_level):
        sel = index == i
        np.testing.assert_array_equal(ds.amplitude.values[0][sel], p.amplitude.values[0][sel])
        np.testing.assert_array_equal(
            ds.centroid_err.values[0][sel], p.centroid_err.values[0][sel]
        )
        for j in range(i):  # smaller levels did not meet the thresholds there
            assert not (meets(per_level[j]) & sel & met).any()


def test_three_levels_crash_case_and_no_level_rule():
    """Three levels (the original tool crashed with more than one); pixels too faint for
    every level keep the level with the smallest worst relative error / threshold."""
    data, error, _ = fading_raster(ny=6, nx=30, sizes=(1, 2, 3), seed=3)
    strict = {"amplitude": 0.02, "centroid": 1e-5, "width": 0.02}
    ds = fit_lines(data, model(), error=error, thresholds=strict)
    st = ds.status.values
    none = st == FitStatus.THRESHOLD_NOT_MET
    assert none.sum() > 10 and (st == FitStatus.CONVERGED).sum() > 10
    per_level = [fit_lines(data.isel(level=i), model(), error=error.isel(level=i))
                 for i in range(3)]  # fmt: skip
    scores = []
    for p in per_level:
        worst = np.zeros(p.status.shape)
        for kind, thr in strict.items():
            rel = np.abs(p[kind + "_err"].isel(line=0) / p[kind].isel(line=0)).values / thr
            # a NaN error (parameter on a bound) cannot meet a threshold
            worst = np.maximum(worst, np.where(np.isfinite(rel), rel, np.inf))
        usable = np.isin(p.status.values, [FitStatus.CONVERGED, FitStatus.CONVERGED_AT_BOUND])
        scores.append(np.where(usable, worst, np.inf))
    expected = np.argmin(np.stack(scores), axis=0)
    np.testing.assert_array_equal(ds.level_index.values[none], expected[none])
    assert np.isfinite(ds.amplitude.values[0][none]).all()


def test_all_nan_pixel_and_laziness():
    data, error, _ = fading_raster(ny=4, nx=6)
    values = data.values.copy()
    values[:, 0, 0] = np.nan
    data = data.copy(data=values)
    lazy_data = data.chunk({"y": 2, "x": 3, "level": 1})
    with raise_if_dask_computes():
        ds = fit_lines(lazy_data, model(), error=error.chunk({"y": 2}), thresholds=THRESHOLDS)
    assert isinstance(ds.level.data, dsa.Array)
    ds = ds.compute()
    assert ds.status.values[0, 0] == FitStatus.ALL_NAN
    assert ds.level_index.values[0, 0] == data.sizes["level"] - 1
    eager = fit_lines(data, model(), error=error, thresholds=THRESHOLDS)
    xr.testing.assert_identical(ds, eager)
    assert eager.attrs["fit_options"].count('"thresholds"') == 1


def test_adaptive_requires_level_dim_and_valid_thresholds():
    data, error, _ = fading_raster(ny=2, nx=3)
    with pytest.raises(ValueError, match="no dimension 'bins'"):
        fit_lines(data, model(), error=error, thresholds=THRESHOLDS, level_dim="bins")
    with pytest.raises(ValueError, match="must be > 0"):
        fit_lines(data, model(), error=error, thresholds={"amplitude": 0})
    with pytest.raises(ValueError, match="non-empty dict"):
        fit_lines(data, model(), error=error, thresholds={})
    # without thresholds the level dim is just another pixel dim
    plain = fit_lines(data, model(), error=error)
    assert plain.amplitude.dims == ("line", "level", "y", "x")
    # a level-less error broadcasts over levels
    e0 = error.isel(level=0, drop=True)
    broadcast = fit_lines(data, model(), error=e0, thresholds={"amplitude": 0.5})
    explicit = fit_lines(data, model(), error=e0.broadcast_like(data).transpose(*data.dims),
                         thresholds={"amplitude": 0.5})  # fmt: skip
    xr.testing.assert_identical(broadcast, explicit)


def test_real_ne8_window_three_levels(ne8_file):
    """Real data through the reader, the noise model and bin_levels (3 levels): the
    adaptive fit meets the thresholds at more pixels than the unbinned fit."""
    import saffron_xr
    from saffron_xr.prep.binning import bin_levels
    from saffron_xr.prep.noise import spice_error

    tree = saffron_xr.open_spice(ne8_file)
    radiance = next(n for n in tree.subtree if "radiance" in n.ds).ds["radiance"]
    levels = bin_levels(radiance, spice_error(radiance), sizes=[1, 3, 5])
    m = LineModel()
    m.add_line("ne_8 770.42", amplitude=0.3, centroid=770.05, width=0.22,
               bounds={"centroid": (769.3, 770.8), "width": (0.05, 0.8)})  # fmt: skip
    thresholds = {"amplitude": 0.4, "centroid": 2e-4, "width": 0.5}  # S/N ~ 1 per sample
    with raise_if_dask_computes():
        ds = fit_lines(levels.radiance, m, error=levels.error, thresholds=thresholds)
    ds = ds.compute()
    plain = fit_lines(radiance, m, error=levels.error.isel(level=0)).compute()
    enough = plain.n_valid.values >= 20

    def met(d):
        ok = d.status.values == FitStatus.CONVERGED
        for kind, thr in thresholds.items():
            rel = np.abs(d[kind + "_err"].isel(line=0) / d[kind].isel(line=0)).values
            ok &= rel <= thr
        return ok

    adaptive_met = ds.status.values[enough] == FitStatus.CONVERGED
    print(f"real Ne VIII, {enough.sum()} pixels: thresholds met unbinned "
          f"{met(plain)[enough].mean():.3f}, adaptive {adaptive_met.mean():.3f}; "
          f"levels kept {np.bincount(ds.level_index.values[enough])}")  # fmt: skip
    assert adaptive_met.mean() > met(plain)[enough].mean() + 0.1
    assert set(np.unique(ds.level.values)) <= {1, 3, 5}
    assert (ds.level_index.values[enough] > 0).any()
