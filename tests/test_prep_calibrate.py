"""Noise calibration from the data: known scale factors come back; real-data ratios; laziness."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

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
# SPICE SW model terms by hand (Huang et al. 2023 constants: G=3.58, F=1, R=6.9, D=0.89, k=2)
PHOTON = 3.58 / 38.15
FLOOR = 2 * (6.9**2 + 0.89 * 4.7) / 38.15**2


def _cube(floor_scale, signal_scale, seed, ny=400, nx=8, nw=50):
    """A SPICE-like cube: continuum + one line whose peak grows along x, constant along y.

    Noise drawn with sigma**2 = signal_scale**2 PHOTON S + floor_scale**2 FLOOR.
    """
    rng = np.random.default_rng(seed)
    wl = 767.7 + 0.0975 * np.arange(nw)
    peak = np.geomspace(0.3, 30.0, nx)
    profile = np.exp(-0.5 * ((wl - wl.mean()) / 0.33) ** 2)
    signal = 0.05 + peak[:, None] * profile[None, :]  # (x, wavelength)
    signal = np.broadcast_to(signal, (ny, nx, nw))
    var = signal_scale**2 * PHOTON * signal + floor_scale**2 * FLOOR
    data = signal + np.sqrt(var) * rng.standard_normal(signal.shape)
    return xr.DataArray(
        data.astype("float32"),
        dims=("y", "x", "wavelength"),
        coords={"wavelength": ("wavelength", wl, {"units": "Angstrom"})},
        attrs=ATTRS,
    )


def test_spice_noise_terms_by_hand_and_consistent_with_spice_error():
    rad = xr.DataArray(np.array([[[0.0, 2.0, -1.0]]]), dims=("y", "x", "wavelength"), attrs=ATTRS)
    terms = sx.spice_noise_terms(rad)
    assert float(terms.photon) == pytest.approx(PHOTON, rel=1e-12)
    assert float(terms.floor) == pytest.approx(FLOOR, rel=1e-12)
    assert terms.photon.attrs["units"] == "W m-2 sr-1 nm-1"
    # for I >= 0 the official error is sqrt(photon I + floor)
    err = sx.spice_error(rad).values[0, 0]
    assert err[:2] == pytest.approx(np.sqrt(PHOTON * np.array([0.0, 2.0]) + FLOOR), rel=1e-12)
    # the calibrated path never uses the |I| rule: a negative sample gets the floor
    via_terms = sx.error_from_terms(rad, terms).values[0, 0]
    assert via_terms[2] == pytest.approx(np.sqrt(FLOOR), rel=1e-12)
    assert err[2] > via_terms[2]


@pytest.mark.parametrize(
    ("floor_scale", "signal_scale"), [(0.7, 1.0), (2.2, 1.0), (1.0, 1.3), (0.7, 0.6)]
)
def test_known_scale_factors_are_recovered(floor_scale, signal_scale):
    rad = _cube(floor_scale, signal_scale, seed=int(10 * floor_scale + 100 * signal_scale))
    terms = sx.calibrate_noise_terms(rad)
    assert terms.attrs["noise_signal_measured"] == 1
    assert terms.attrs["noise_floor_ratio"] == pytest.approx(floor_scale, rel=0.03)
    assert terms.attrs["noise_signal_ratio"] == pytest.approx(signal_scale, rel=0.05)
    assert float(terms.floor) == pytest.approx(floor_scale**2 * FLOOR, rel=0.06)
    assert float(terms.photon) == pytest.approx(signal_scale**2 * PHOTON, rel=0.1)
    record = json.loads(terms.attrs["noise_calibration"])
    assert record["lags"] == [2, 3, 4]
    assert set(record["directions"]) == {"y", "wavelength"}


def test_calibrated_error_matches_the_scatter_it_was_drawn_with():
    """Independent check: the scatter of repeated draws around the truth, per sample."""
    rad = _cube(0.7, 1.0, seed=3)
    err = sx.calibrate_error(rad)
    signal = _cube(0.0, 0.0, seed=0)  # the noise-free signal (both scales 0)
    terms = sx.calibrate_noise_terms(rad)
    at_truth = sx.error_from_terms(signal, terms)  # the calibrated sigma at the true signal
    pull = ((rad - signal) / at_truth).std().item()
    assert pull == pytest.approx(1.0, abs=0.02)
    # the same sigma evaluated at the noisy samples is what calibrate_error returns
    xr.testing.assert_allclose(err, sx.error_from_terms(rad, terms).assign_attrs(err.attrs))
    assert err.attrs["noise_floor_ratio"] == pytest.approx(0.7, rel=0.03)
    assert isinstance(err.attrs["noise_floor_ratio"], float)
    assert "MAD" in err.attrs["noise_calibration_method"]


def test_terms_from_a_given_error_array():
    rad = _cube(2.2, 1.0, seed=5)
    model_err = sx.spice_error(rad)  # |I| rule on negatives: the fit uses I >= 0 only
    terms = sx.calibrate_noise_terms(rad, error=model_err)
    assert terms.attrs["noise_floor_ratio"] == pytest.approx(2.2, rel=0.03)
    record = json.loads(terms.attrs["noise_calibration"])
    assert record["model_floor"] == pytest.approx(FLOOR, rel=1e-6)
    assert record["error_fit_relative_rms"] < 1e-5
    with pytest.raises(ValueError, match="not both"):
        sx.calibrate_noise_terms(rad, sx.spice_noise_terms(rad), error=model_err)


def test_lag_one_is_refused_and_bad_dims_named():
    rad = _cube(1.0, 1.0, seed=1, ny=50, nx=2)
    with pytest.raises(ValueError, match="lags must be >= 2"):
        sx.calibrate_error(rad, lags=(1, 2))
    with pytest.raises(ValueError, match="needs the dims"):
        sx.calibrate_error(rad.rename(y="slit"))


def test_calibration_is_lazy_except_one_small_statistics_pass():
    rad = _cube(0.7, 1.0, seed=2, nx=40).chunk({"y": 100, "x": 10})
    with raise_if_dask_computes(max_computes=1) as sched:
        err = sx.calibrate_error(rad, max_samples=100_000)
    assert sched.total_computes == 1
    assert err.chunks == rad.chunks
    assert err.dtype == rad.dtype
    with raise_if_dask_computes():
        again = sx.error_from_terms(rad, sx.spice_noise_terms(rad))
    assert again.chunks == rad.chunks
    with raise_if_dask_computes(max_computes=1):
        via_accessor = rad.saffron.calibrate_error(terms=sx.spice_noise_terms(rad), lags=(2, 3))
    assert via_accessor.attrs["noise_floor_ratio"] == pytest.approx(0.7, rel=0.05)
    # the subsample honoured max_samples (a stride over x)
    record = json.loads(err.attrs["noise_calibration"])
    assert "x[0::" in record["subsample"]


def test_real_ne8_window_floor_is_below_the_model(ne8_file):
    """Issue 12: the 2022 Ne VIII window's noise floor is about 0.70x the model's."""
    tree = sx.open_spice(ne8_file)
    rad = tree[next(iter(tree.children))].dataset["radiance"]
    err = sx.calibrate_error(rad)
    floor_ratio = err.attrs["noise_floor_ratio"]
    assert 0.6 < floor_ratio < 0.8
    directions = json.loads(err.attrs["noise_calibration"])["directions"]
    # both directions agree on the floor within 10%
    y, w = directions["y"]["floor_ratio"], directions["wavelength"]["floor_ratio"]
    assert abs(y - w) < 0.1 * max(y, w)
    # the calibrated floor describes the line-free scatter: lag-3 differences along the slit
    # at wavelengths more than 1.2 Angstrom from the line (chosen from the coordinate, not
    # from the noisy values) have the robust spread sqrt(2) sigma_floor (by hand)
    v = rad.transpose("y", "x", "wavelength")
    free = np.abs(v["wavelength"].values - 770.1) > 1.2
    v = v.values[:, :, free].astype(float)
    d = (v[3:] - v[:-3]).ravel()
    d = d[np.isfinite(d)]
    sigma_floor = 1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2)
    calibrated_floor = np.sqrt(FLOOR) * floor_ratio
    assert sigma_floor == pytest.approx(calibrated_floor, rel=0.1)
    assert sigma_floor < 0.85 * np.sqrt(FLOOR)


def test_real_lyg_c3_raster_with_its_own_uncertainty(shared_data):
    npz = np.load(shared_data / "spice" / "raster_20240425_lyg_c3" / "grid_data.npz")
    dims = ("wavelength", "y", "x")
    rad = xr.DataArray(npz["intensity"].astype("float32"), dims=dims)
    rad = rad.where(~xr.DataArray(npz["mask"], dims=dims))
    unc = xr.DataArray(npz["uncertainty"], dims=dims)
    terms = sx.calibrate_noise_terms(rad, error=unc, max_samples=1_000_000)
    record = json.loads(terms.attrs["noise_calibration"])
    # the uncertainty array is exactly of the model's form
    assert record["error_fit_relative_rms"] < 1e-6
    assert terms.attrs["noise_signal_measured"] == 1
    # this product holds no non-positive sample (they are masked), so faint samples are a
    # truncated distribution and the floor ratio comes out far below 1; the bright C III
    # samples are photon-dominated and the measured signal ratio exceeds 1 (structure adds)
    assert float(np.nanmin(npz["intensity"])) > 0
    assert 0.1 < terms.attrs["noise_floor_ratio"] < 0.8
    assert terms.attrs["noise_signal_ratio"] > 1.0


@pytest.mark.parametrize("calibrate", [True, False])
def test_runner_records_the_calibration(ne8_file, calibrate):
    from saffron_xr.pipeline.config import ConfigError, validate_config
    from saffron_xr.pipeline.runner import process_window

    assert validate_config({})["prep"]["noise"]["calibrate"] is True
    with pytest.raises(ConfigError, match="prep.noise.calibrate"):
        validate_config({"prep": {"noise": {"calibrate": "yes"}}})
    cfg = validate_config({"prep": {"noise": {"calibrate": calibrate}}})
    tree = sx.open_spice(ne8_file)
    name = next(iter(tree.children))
    catalog = sx.LineCatalog.default()
    out = process_window(cfg, name, tree[name].dataset, catalog)  # lazy: the fit is not run
    if calibrate:
        assert 0.6 < out.attrs["noise_floor_ratio"] < 0.8
        assert json.loads(out.attrs["noise_calibration"])["lags"] == [2, 3, 4]
        assert "MAD" in out.attrs["noise_calibration_method"]
    else:
        assert "noise_floor_ratio" not in out.attrs


# ----------------------------------------------------------------- the compiled statistics


def test_second_differences_match_the_formula_sample_by_sample():
    """Every standardised difference and photon fraction, in order, against loops written
    from the method's definition (NaN samples and a zero-variance sample dropped)."""
    from saffron_xr.prep._calibrate_kernels import second_differences

    rng = np.random.default_rng(3)
    ny, nw, nr = 13, 11, 3
    values = rng.normal(2.0, 1.0, (ny, nw, nr))
    values[4, 5, 1] = np.nan
    signal = np.abs(rng.normal(1.0, 0.5, (ny, nw, nr)))
    photon = rng.uniform(0.1, 0.5, (ny, nw, nr))
    floor = rng.uniform(0.2, 0.4, (ny, nw, nr))
    photon[7, 2, 0] = 0.0
    floor[7, 2, 0] = 0.0
    signal[7, 2, 0] = 0.0  # a difference centred here still has its neighbours' variance
    floor[[5, 9], 2, 0] = 0.0
    photon[[5, 9], 2, 0] = 0.0  # ...and this one (along y, lag 2) has none: dropped
    for axis in (0, 1):
        expected_z, expected_phi = [], []
        for lag in (2, 3):
            step = np.zeros(3, int)
            step[axis] = lag
            for i in range(ny):
                for j in range(nw):
                    for k in range(nr):
                        lo = (i - step[0], j - step[1], k)
                        hi = (i + step[0], j + step[1], k)
                        if min(lo) < 0 or hi[0] >= ny or hi[1] >= nw:
                            continue
                        d = values[i, j, k] - (values[lo] + values[hi]) / 2
                        pv = (
                            photon[i, j, k] * signal[i, j, k]
                            + (photon[lo] * signal[lo] + photon[hi] * signal[hi]) / 4
                        )
                        var = pv + floor[i, j, k] + (floor[lo] + floor[hi]) / 4
                        if np.isfinite(d) and var > 0:
                            expected_z.append(d / np.sqrt(var))
                            expected_phi.append(pv / var)
        z, phi = second_differences(values, signal, photon, floor, axis, np.array([2, 3]))
        assert len(z) == len(expected_z) == len(phi)
        np.testing.assert_allclose(z, expected_z, rtol=1e-14)
        np.testing.assert_allclose(phi, expected_phi, rtol=1e-14)
    # the difference centred on (7, 2, 0) along y at lag 2 is the one with no variance
    assert len(expected_z) < (ny - 4) * nw * nr + (ny - 6) * nw * nr


def test_binned_robust_variance_matches_numpy_medians_per_bin():
    """Bins by edges (values on an edge go to the bin above it, values outside the edges to
    the end bins), the count threshold (a bin of exactly ``min_count`` values is kept, one
    of ``min_count - 1`` is not), and (1.4826 MAD)**2 against numpy's median, with odd and
    even counts and ties."""
    from saffron_xr.prep._calibrate_kernels import binned_robust_variance

    rng = np.random.default_rng(4)
    edges = np.array([0.0, 0.1, 0.3, 0.45, 0.5, 0.7, 1.0])
    # per bin: its phi values (counts 201, 200, 199, 350, 260, 230)
    phi = np.concatenate(
        [
            np.concatenate([[-0.5, 0.0], rng.uniform(0.0, 0.1, 199)]),  # below the first edge
            np.concatenate([[0.1], rng.uniform(0.1, 0.3, 199)]),  # exactly min_count
            rng.uniform(0.3, 0.45, 199),  # one short: left out
            np.full(350, 0.45),  # all on an edge
            rng.uniform(0.5, 0.7, 260),
            np.concatenate([[1.0, 1.5], rng.uniform(0.7, 1.0, 228)]),  # on / above the last
        ]
    )
    expected_bin = np.repeat(np.arange(6), [201, 200, 199, 350, 260, 230])
    z = rng.standard_normal(phi.size) * (1.0 + phi)
    z[expected_bin == 3] = np.round(z[expected_bin == 3], 1)  # ties
    order = rng.permutation(phi.size)
    phi, z, expected_bin = phi[order], z[order], expected_bin[order]
    rows = binned_robust_variance(z, phi, edges, 200, 1.4826)
    expected = []
    for b in range(len(edges) - 1):
        zb = z[expected_bin == b]
        if zb.size < 200:
            continue
        mad = np.median(np.abs(zb - np.median(zb)))
        expected.append((b, phi[expected_bin == b].mean(), (1.4826 * mad) ** 2, zb.size))
    expected = np.array(expected)
    np.testing.assert_array_equal(expected[:, 0], [0, 1, 3, 4, 5])
    np.testing.assert_array_equal(rows[:, [0, 3]], expected[:, [0, 3]])
    np.testing.assert_allclose(rows[:, 1], expected[:, 1], rtol=1e-13)
    np.testing.assert_allclose(rows[:, 2], expected[:, 2], rtol=1e-15)  # medians are exact


def test_an_empty_dimension_is_refused_by_name():
    rad = _cube(1.0, 1.0, seed=6, ny=50, nx=2, nw=30).isel(y=slice(0, 0))
    with pytest.raises(ValueError, match=r"no samples along \['y'\]"):
        sx.calibrate_noise_terms(rad)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 10, 101, 1000])
def test_median_in_place_is_numpys_median(n):
    from saffron_xr.prep._calibrate_kernels import _median_in_place

    rng = np.random.default_rng(n)
    for data in (
        rng.standard_normal(n),
        rng.integers(0, 3, n).astype(float),  # many ties
        np.sort(rng.standard_normal(n)),
        np.sort(rng.standard_normal(n))[::-1].copy(),
    ):
        padded = np.concatenate([[1e9, -1e9], data, [-1e9]])  # outside the range: untouched
        assert _median_in_place(padded, 2, 2 + n) == np.median(data)
        assert padded[0] == 1e9 and padded[1] == -1e9 and padded[-1] == -1e9
        np.testing.assert_array_equal(np.sort(padded[2 : 2 + n]), np.sort(data))


def test_warm_kernels_compiles_the_calibration_statistics_for_the_types_used(tmp_path):
    """In a fresh process (nothing compiled by earlier tests), after ``warm_kernels`` (run on
    every cluster worker) a calibration compiles nothing new: neither with the header's
    model terms nor with full-size read-only terms. The warmed signatures are the ones
    `_measure` calls (contiguous, writable float64 cubes, int64 lags)."""
    import subprocess
    import sys

    script = tmp_path / "warm.py"
    script.write_text(
        "import numpy as np, xarray as xr\n"
        "import saffron_xr as sx\n"
        "from saffron_xr.prep import _calibrate_kernels as ck\n"
        "from saffron_xr.pipeline.filejob import warm_kernels\n"
        "def sigs():\n"
        "    return (len(ck.second_differences.signatures),\n"
        "            len(ck.binned_robust_variance.signatures))\n"
        "assert sigs() == (0, 0), sigs()\n"
        "warm_kernels('float32')\n"
        "warmed = sigs()\n"
        "assert warmed == (1, 1), warmed\n"
        f"attrs = {ATTRS!r}\n"
        "rng = np.random.default_rng(5)\n"
        f"noise = rng.normal(0.0, {np.sqrt(FLOOR)!r}, (120, 4, 30))\n"
        "rad = xr.DataArray(noise.astype(np.float32),\n"
        "                   dims=('y', 'x', 'wavelength'), attrs=attrs)\n"
        "sx.calibrate_noise_terms(rad)\n"
        "full = np.ones((120, 30, 4))\n"
        "terms = xr.Dataset(\n"
        f"    {{'photon': (('y', 'wavelength', 'x'), {PHOTON!r} * full),\n"
        f"     'floor': (('y', 'wavelength', 'x'), {FLOOR!r} * full)}})\n"
        "sx.calibrate_noise_terms(rad, terms=terms)\n"
        "assert sigs() == warmed, sigs()\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("ok")
