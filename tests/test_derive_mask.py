"""Derived maps use only detected, converged, not-at-bound values; the Doppler reference."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import xarray as xr

import saffron_xr
from saffron_xr import FitStatus
from saffron_xr.derive import (
    derive_all,
    doppler_velocity,
    fwhm,
    line_widths,
    nonthermal_velocity,
    radiance,
)
from saffron_xr.testing import raise_if_dask_computes

C = 299792.458
LINES = ["ne_8 770.42", "mg_9 706.06"]
REST = np.array([770.42, 706.06])


def _fit_result(ny=30, nx=10, seed=0, pinned_fraction=0.0, chunks=None):
    """A hand-built fit result with flags; returns (Dataset, expected keep mask (numpy))."""
    rng = np.random.default_rng(seed)
    shape = (2, ny, nx)
    offset = -0.42  # the instrument's wavelength-scale offset, Angstrom
    cen = REST[:, None, None] + offset + rng.normal(0, 0.01, shape)
    status = rng.choice(
        [int(FitStatus.CONVERGED)] * 6
        + [int(FitStatus.CONVERGED_AT_BOUND), int(FitStatus.MAX_ITER), int(FitStatus.NO_STEP)],
        size=(ny, nx),
    )
    detected = rng.random(shape) > 0.15
    at_bound = rng.random(shape) < 0.1
    if pinned_fraction:
        # centroids pinned at the lower bound (rest - 0.4 - offset ... far to the blue)
        pinned = rng.random(shape) < pinned_fraction
        cen = np.where(pinned, REST[:, None, None] - 0.8, cen)
        at_bound = at_bound | pinned
    dims = ("line", "y", "x")
    ds = xr.Dataset(
        {
            "amplitude": (dims, rng.uniform(1, 2, shape), {"units": "W m-2 sr-1 nm-1"}),
            "centroid": (dims, cen, {"units": "Angstrom"}),
            "width": (dims, rng.uniform(0.3, 0.4, shape), {"units": "Angstrom"}),
            "amplitude_err": (dims, np.full(shape, 0.05), {"units": "W m-2 sr-1 nm-1"}),
            "centroid_err": (dims, np.full(shape, 0.005), {"units": "Angstrom"}),
            "width_err": (dims, np.full(shape, 0.01), {"units": "Angstrom"}),
            "status": (("y", "x"), status),
            "detected": (dims, detected),
            "at_bound": (dims, at_bound),
        },
        coords={
            "line": LINES,
            "ion": ("line", ["ne_8", "mg_9"]),
            "rest_wavelength": ("line", REST, {"units": "Angstrom"}),
        },
        attrs={"detection_threshold": 5.0},
    )
    keep = detected & ~at_bound & (status == 0)[None]
    if chunks:  # the data lazy, the small coordinates in memory (as fit_lines returns them)
        ds = ds.chunk(chunks).assign_coords({k: ds[k] for k in ("ion", "rest_wavelength")})
    return ds, keep


def test_default_mask_nans_everything_not_good():
    ds, keep = _fit_result(chunks={"y": 10})
    assert 0.3 < keep.mean() < 0.8  # a real mixture
    with raise_if_dask_computes():
        rad = radiance(ds)
        vel = doppler_velocity(ds)
        wid = fwhm(ds)
        nt = nonthermal_velocity(ds, log_t=5.8, instrumental_fwhm=0.5)
    for out, names in (
        (rad, ["radiance", "radiance_err"]),
        (vel, ["doppler_velocity", "doppler_velocity_err"]),
        (wid, ["fwhm", "fwhm_err"]),
    ):
        for name in names:
            values = out[name].values
            assert out[name].dims == ("line", "y", "x")
            np.testing.assert_array_equal(np.isfinite(values), keep)
            rule = out[name].attrs["mask_rule"]
            assert "detected" in rule and "not at_bound" in rule and "CONVERGED" in rule
    # non-thermal: NaN at least where masked (also where the width is below thermal+inst)
    assert not np.isfinite(nt["nonthermal_velocity"].values[~keep]).any()
    assert np.isfinite(nt["nonthermal_velocity"].values[keep]).mean() > 0.9
    assert "detected" in nt["nonthermal_velocity"].attrs["mask_rule"]
    # kept values are the unmasked formula (checked by hand for FWHM)
    np.testing.assert_allclose(
        wid["fwhm"].values[keep], 2 * np.sqrt(2 * np.log(2)) * ds["width"].values[keep]
    )


def test_usable_none_and_custom_masks():
    ds, keep = _fit_result()
    status = ds["status"].values
    usable = np.isin(status, [int(s) for s in FitStatus.usable()])
    out = radiance(ds, mask="usable")["radiance"]
    np.testing.assert_array_equal(np.isfinite(out.values), np.broadcast_to(usable, keep.shape))
    assert out.attrs["mask_rule"].startswith("usable")
    out = radiance(ds, mask=None)["radiance"]
    assert np.isfinite(out.values).all()
    assert out.attrs["mask_rule"].startswith("none")
    custom = xr.DataArray(np.arange(ds.sizes["x"]) % 2 == 0, dims="x")
    out = fwhm(ds, mask=custom)["fwhm"]
    assert np.isfinite(out.values[:, :, 0::2]).all() and np.isnan(out.values[:, :, 1::2]).all()
    with pytest.raises(ValueError, match="unknown mask 'best'"):
        radiance(ds, mask="best")


def test_status_only_when_detection_variables_are_absent():
    ds, _ = _fit_result()
    legacy = ds.drop_vars(["detected", "at_bound"])
    out = doppler_velocity(legacy)["doppler_velocity"]
    converged = legacy["status"].values == int(FitStatus.CONVERGED)
    np.testing.assert_array_equal(np.isfinite(out.values), np.broadcast_to(converged, out.shape))
    assert "absent" in out.attrs["mask_rule"]
    assert "detected and at_bound" in out.attrs["mask_rule"]
    # no status at all: nothing masked, and the rule says why
    bare = legacy.drop_vars("status")
    assert "no 'status'" in radiance(bare)["radiance"].attrs["mask_rule"]


def test_median_reference_ignores_pinned_centroids():
    ds, keep = _fit_result(pinned_fraction=0.4, seed=4)
    cen = ds["centroid"].values
    good_median = np.array([np.median(cen[i][keep[i]]) for i in range(2)])
    all_median = np.median(cen.reshape(2, -1), axis=1)
    # the case is built so that including the pinned centroids moves the median
    assert np.all(np.abs(all_median - good_median) > 0.005)
    out = doppler_velocity(ds)  # default: median over good pixels
    np.testing.assert_allclose(out["doppler_reference_wavelength"], good_median, rtol=1e-12)
    v = out["doppler_velocity"]
    expected = C * (cen - good_median[:, None, None]) / good_median[:, None, None]
    np.testing.assert_allclose(v.values[keep], expected[keep], rtol=1e-10)
    assert v.attrs["doppler_reference"] == "median"
    assert "kept pixels" in v.attrs["doppler_reference_description"]
    np.testing.assert_allclose(json.loads(v.attrs["reference_wavelength"]), good_median, rtol=1e-6)
    # the offset of the wavelength scale is removed: median velocity 0 instead of ~-164 km/s
    np.testing.assert_allclose(np.nanmedian(v.values.reshape(2, -1), axis=1), 0.0, atol=1e-9)
    rest = doppler_velocity(ds, "rest")["doppler_velocity"]
    assert np.nanmedian(rest.values[0]) == pytest.approx(C * -0.42 / 770.42, abs=5.0)
    # the column reference also ignores them
    col = doppler_velocity(ds, "column")["doppler_reference_wavelength"].values
    for i in range(2):
        for j in range(ds.sizes["x"]):
            kept = cen[i, :, j][keep[i, :, j]]
            if kept.size:
                assert col[i, j] == pytest.approx(np.median(kept), rel=1e-12)


def test_derive_all_writes_the_widths_the_template_promises():
    ds, keep = _fit_result(chunks={"y": 15})
    with raise_if_dask_computes():
        out = derive_all(ds)  # formation temperatures from the default line catalog
    for name in (
        "radiance",
        "doppler_velocity",
        "fwhm",
        "thermal_fwhm",
        "instrumental_fwhm",
        "nonthermal_velocity",
    ):
        assert name in out, name
    settings = json.loads(out.attrs["derive_settings"])
    assert settings["nonthermal"] is True and settings["mask"] == "good"
    assert settings["doppler_reference"] == "median"
    assert "detected" in settings["mask_rule"]
    assert np.isnan(out["radiance"].values[~keep]).all()
    # an ion the catalog does not know: FWHM only, and the attrs say why
    odd = ds.assign_coords(line=["ne_8 770.42", "xx_1 706.06"], ion=("line", ["ne_8", "fe_1"]))
    widths = line_widths(odd)
    assert "nonthermal_velocity" not in widths
    assert "FWHM only" in widths.attrs["widths"]
    # the accessor forwards
    xr.testing.assert_identical(ds.saffron.line_widths(mask=None), line_widths(ds, mask=None))


def test_real_ne8_fit_velocity_reference_and_mask(ne8_file):
    """A real fit: the default reference removes the -164 km/s scale offset (issue 14)."""
    tree = saffron_xr.open_spice(ne8_file)
    rad = tree[next(iter(tree.children))].dataset["radiance"]
    # the default path: calibrated noise model, weights from the fitted model
    terms = saffron_xr.calibrate_noise_terms(rad)
    error = saffron_xr.error_from_terms(rad, terms)
    model = saffron_xr.guess_model(rad, error=error)
    params = saffron_xr.fit_lines(rad, model, error=error, noise=terms).compute()
    line = "ne_8 770.42"
    vel = doppler_velocity(params).sel(line=line)
    v = vel["doppler_velocity"]
    status = params["status"].values
    good = status == int(FitStatus.CONVERGED)
    for flag, value in (("detected", False), ("at_bound", True)):
        if flag in params:
            good &= params[flag].sel(line=line).values != value
    np.testing.assert_array_equal(np.isfinite(v.values), good)
    assert good.sum() > 300
    assert abs(float(np.nanmedian(v.values))) < 1e-6
    rest = doppler_velocity(params, "rest")["doppler_velocity"].sel(line=line).values
    # the pre-flight wavelength scale: about -164 km/s against the rest wavelength
    assert -190 < float(np.nanmedian(rest)) < -140
    assert v.attrs["mask_rule"].startswith("good")


@pytest.mark.parametrize("mask", ["good", "usable", None])
def test_derive_all_builds_the_mask_once_and_matches_the_parts(mask, monkeypatch):
    """derive_all passes one prepared mask to its parts: every derived variable (values and
    mask_rule) is what radiance / line_widths / doppler_velocity give on their own, and
    the mask is built once instead of once per part."""
    import importlib

    from saffron_xr.derive import _masks

    built = []
    real = _masks.quality_mask

    def counting(params, m):
        if not isinstance(m, _masks.PreparedMask):
            built.append(m)
        return real(params, m)

    for mod in ("combined", "intensity", "widths", "doppler"):
        monkeypatch.setattr(importlib.import_module(f"saffron_xr.derive.{mod}"), "quality_mask",
                            counting)  # fmt: skip
    ds, _ = _fit_result(chunks={"y": 15})
    out = derive_all(ds, mask=mask).compute()
    assert len(built) == 1
    parts = [radiance(ds, mask=mask), line_widths(ds, mask=mask), doppler_velocity(ds, mask=mask)]
    for part in parts:
        part = part.compute()
        for name, var in part.data_vars.items():
            xr.testing.assert_identical(out[name], var)
            assert out[name].attrs.get("mask_rule") == var.attrs.get("mask_rule")
    assert json.loads(out.attrs["derive_settings"])["mask"] == mask


@pytest.mark.parametrize("reference", ["median", "column"])
def test_a_line_with_no_kept_pixel_gets_nan_velocities_without_a_warning(reference):
    """The median reference of a line none of whose pixels is kept is NaN, and computing it
    raises no numpy "All-NaN slice" RuntimeWarning (it came from inside the dask tasks,
    where a batch user cannot catch it); the other line's reference is numpy's nanmedian."""
    ds, keep = _fit_result(chunks={"y": 15})
    ds["detected"] = ds["detected"].copy(data=np.asarray(ds["detected"]))
    ds["detected"][1] = False  # no pixel of the second line is kept under mask="good"
    keep = keep.copy()
    keep[1] = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = doppler_velocity(ds, reference=reference).compute()
    v = out["doppler_velocity"]
    assert np.isnan(v.sel(line=LINES[1])).all()
    cen = np.where(keep[0], ds["centroid"].values[0], np.nan)
    ref = np.nanmedian(cen) if reference == "median" else np.nanmedian(cen, axis=0)
    expected = C * (cen - ref) / ref
    np.testing.assert_allclose(v.sel(line=LINES[0]).values, expected, rtol=1e-9, equal_nan=True)
