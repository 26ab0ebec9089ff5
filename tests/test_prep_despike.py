"""Despiking: injected hits on the real Ne VIII window, line cores, laziness, chunking."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import saffron_xr as sx
from saffron_xr.prep.despike import _box_median
from saffron_xr.prep.noise import model_sigma, noise_model_terms
from saffron_xr.testing import raise_if_dask_computes

ATTRS = {
    "RADCAL": 38.15,
    "XPOSURE": 4.7,
    "NBIN2": 1,
    "NBIN3": 1,
    "DETECTOR": "SW",
    "units": "W m-2 sr-1 nm-1",
}


@pytest.fixture(scope="module")
def ne8_radiance(ne8_file):
    tree = sx.open_spice(ne8_file)
    (node,) = tree.children.values()
    return node.ds.radiance.load()


def _line_core(radiance):
    """Wavelength samples where the mean spectrum is above half its peak over background."""
    mean = radiance.mean(("y", "x")).values
    low, high = np.nanmin(mean), np.nanmax(mean)
    return np.flatnonzero(mean > low + 0.5 * (high - low))


@pytest.mark.parametrize("seed", [0, 1])
def test_injected_spikes_in_real_ne8_window(ne8_radiance, seed):
    raw = ne8_radiance.values
    sigma = sx.spice_error(ne8_radiance).values
    rng = np.random.default_rng(seed)
    valid = np.flatnonzero(np.isfinite(raw))
    hits = rng.choice(valid, 100, replace=False)
    spiked = raw.copy().ravel()
    spiked[hits] += rng.uniform(10.0, 100.0, hits.size) * sigma.ravel()[hits]
    truth = np.zeros(raw.size, bool)
    truth[hits] = True
    truth = truth.reshape(raw.shape)
    data = ne8_radiance.copy(data=spiked.reshape(raw.shape)).chunk({"y": 200})

    with raise_if_dask_computes():
        cleaned, spikes = sx.despike(data)
    flagged = spikes.values
    found = np.count_nonzero(flagged & truth)
    others = np.count_nonzero(np.isfinite(raw) & ~truth)
    false_alarms = np.count_nonzero(flagged & ~truth)
    core = np.zeros(raw.shape, bool)
    core[..., _line_core(ne8_radiance)] = True
    clean_pixels = ~truth.any(axis=-1, keepdims=True)
    core_changed = np.count_nonzero(flagged & core & clean_pixels)
    print(
        f"seed {seed}: found {found}/100, other samples changed {false_alarms}/{others} "
        f"({100 * false_alarms / others:.3f} %), line-core samples changed at unspiked "
        f"pixels {core_changed}"
    )
    assert found >= 95
    assert false_alarms < 1e-3 * others
    assert core_changed == 0
    # replaced by NaN, nothing else touched
    out = cleaned.values
    assert np.all(np.isnan(out[flagged]))
    assert np.array_equal(out[~flagged], data.values[~flagged], equal_nan=True)
    assert cleaned.dtype == data.dtype and spikes.dtype == bool


def test_spectral_reference_protects_compact_bright_core():
    """A line core in one isolated bright pixel: far above its 3-D neighbours, yet kept."""
    wl = np.arange(40) * 0.0975
    profile = np.exp(-0.5 * ((wl - wl[20]) / 0.33) ** 2)
    data = np.full((7, 5, 40), 0.1) + 0.3 * profile
    data[3, 2] += 8.0 * profile  # a compact brightening, steep gradient in y and x
    rad = xr.DataArray(data.astype("float32"), dims=("y", "x", "wavelength"), attrs=ATTRS)
    # premise: against the 3-D median alone the core would be a >5 sigma outlier
    photon, floor, _ = noise_model_terms(rad)
    median3d = _box_median(rad, {"y": 3, "x": 3, "wavelength": 3})
    excess = (rad - median3d) / model_sigma(median3d, photon, floor)
    assert float(excess[3, 2, 20]) > 5
    cleaned, spikes = sx.despike(rad)
    assert not spikes.values.any()
    xr.testing.assert_identical(cleaned.drop_attrs(), rad.drop_attrs())
    # the same pixel with a one-sample hit on the core is caught
    hit = data.copy()
    hit[3, 2, 22] += 20.0
    _, spikes = sx.despike(rad.copy(data=hit.astype("float32")))
    assert np.argwhere(spikes.values).tolist() == [[3, 2, 22]]


def test_replace_median_chunking_nan_and_accessor():
    rng = np.random.default_rng(5)
    data = rng.normal(0.5, 0.2, (30, 6, 24)).astype("float32")
    data[4, 2, 10] += 30.0
    data[17, 0, 3] += 25.0  # at the x edge
    data[:, :, :2] = np.nan  # NaN window edge
    data[10, 3, 12] = np.nan
    rad = xr.DataArray(data, dims=("y", "x", "wavelength"), attrs=ATTRS)
    cleaned, spikes = sx.despike(rad, replace="median")
    assert sorted(map(tuple, np.argwhere(spikes.values).tolist())) == [(4, 2, 10), (17, 0, 3)]
    assert abs(float(cleaned[4, 2, 10]) - 0.5) < 0.3  # a local median, not the hit
    assert np.isnan(cleaned.values[10, 3, 12]) and np.isnan(cleaned.values[:, :, :2]).all()
    assert cleaned.attrs["despike_replace"] == "median"
    one = sx.despike(rad.chunk({"y": -1}))
    many = sx.despike(rad.chunk({"y": 4, "x": 2, "wavelength": 7}))
    for a, b in zip(one, many, strict=True):
        xr.testing.assert_identical(a.compute(), b.compute())
    via = rad.chunk({"y": 8}).saffron.despike(n_sigma=5.0)
    xr.testing.assert_identical(via[1].compute(), one[1].compute())


def test_sit_and_stare_dims_and_errors():
    rng = np.random.default_rng(2)
    data = rng.normal(1.0, 0.1, (5, 20, 16)).astype("float32")
    data[2, 9, 8] += 40.0
    rad = xr.DataArray(data, dims=("time", "y", "wavelength"), attrs=ATTRS)
    _, spikes = sx.despike(rad)
    assert np.argwhere(spikes.values).tolist() == [[2, 9, 8]]
    with pytest.raises(ValueError, match="odd"):
        sx.despike(rad, size=4)
    with pytest.raises(ValueError, match="replace"):
        sx.despike(rad, replace="zero")
    with pytest.raises(KeyError, match="RADCAL"):
        sx.despike(rad.drop_attrs())
