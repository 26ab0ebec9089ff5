"""The numpy Gaussian profile (saffron_xr.fit.profiles.gaussian)."""

from __future__ import annotations

import math

import numpy as np
import xarray as xr
from scipy.stats import norm

from saffron_xr.fit.profiles import gaussian


def test_gaussian_matches_the_normal_density():
    """amplitude * sqrt(2 pi) sigma * normal pdf, from scipy: an independent formula."""
    wl = np.linspace(768.0, 772.0, 81)
    got = gaussian(wl, 3.5, 770.2, 0.31)
    expected = 3.5 * math.sqrt(2 * math.pi) * 0.31 * norm.pdf(wl, loc=770.2, scale=0.31)
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-300)
    assert gaussian(770.2, 3.5, 770.2, 0.31) == 3.5  # the peak value at the centroid
    # one sigma away: exp(-1/2)
    assert math.isclose(gaussian(770.51, 2.0, 770.2, 0.31), 2.0 * math.exp(-0.5), rel_tol=1e-12)


def test_gaussian_broadcasts_and_keeps_float32():
    wl = np.linspace(-1.0, 1.0, 5, dtype=np.float32)[:, None]
    amp = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    out = gaussian(wl, amp, np.float32(0.0), np.float32(0.5))
    assert out.shape == (5, 3)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:, 2], 3.0 * np.exp(-2.0 * wl[:, 0].astype(float) ** 2),
                               rtol=1e-6)  # fmt: skip


def test_gaussian_broadcasts_xarray_by_name():
    wl = xr.DataArray(np.linspace(769.0, 771.0, 7), dims="wavelength")
    amp = xr.DataArray([1.0, 2.0], dims="line")
    cen = xr.DataArray([769.5, 770.5], dims="line")
    out = gaussian(wl, amp, cen, 0.2)
    assert set(out.dims) == {"wavelength", "line"}
    np.testing.assert_allclose(
        out.isel(line=1).values,
        2.0 * np.exp(-0.5 * ((wl.values - 770.5) / 0.2) ** 2),
        rtol=1e-13,
    )
    assert np.isnan(gaussian(np.array([770.0, np.nan]), 1.0, 770.0, 0.1)[1])
