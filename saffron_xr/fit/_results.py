"""The Dataset that ``fit_lines`` returns, assembled from the kernel's packed output.

``unpack`` splits the packed per-pixel vector (layout: ``fit/_kernels.py``, `packed_layout`)
into named variables with units, coordinates and provenance attributes (the only place that
reads it); ``add_quality`` adds the per-line significance and flags and the optional full
covariance, ``add_levels`` the binning level kept by adaptive fits. Lazy on dask input.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from .compiled import PARAM_KINDS
from .status import FitStatus

__all__ = ["PACKED_DIM", "PROVENANCE_ATTRS", "unpack", "add_quality", "add_levels"]

#: Header keywords of the input copied to the results (provenance).
PROVENANCE_ATTRS = ("SPIOBSID", "RASTERNO", "STUDY", "DATE-OBS", "filename", "EXTNAME", "DETECTOR")

#: The core dimension of the kernel's packed output.
PACKED_DIM = "_packed"


def _units(data) -> str:
    return str(data.attrs.get("units") or data.attrs.get("BUNIT") or "unknown")


def unpack(packed, layout, compiled, model, data, loop_dims, options) -> xr.Dataset:
    """Split the packed per-pixel vector into named variables (the only place that does)."""
    segmented = model.segments is not None
    amp_units = _units(data)

    def take(index, dims):
        return packed.isel({PACKED_DIM: xr.DataArray(index, dims=dims)}).transpose(
            *dims, *loop_dims
        )

    data_vars = _line_variables(take, layout, compiled.n_lines, amp_units)
    data_vars.update(_background_variables(take, layout, compiled, segmented, amp_units))
    data_vars.update(_summary_variables(packed, layout))
    ds = xr.Dataset(data_vars).assign_coords(_coords(model, compiled, segmented))
    ds["line"] = ds["line"].astype(str)
    ds["ion"] = ds["ion"].astype(str)
    from .._meta import __version__

    attrs = {k: data.attrs[k] for k in PROVENANCE_ATTRS if k in data.attrs}
    attrs["line_model"] = model.to_json()
    attrs["fit_options"] = json.dumps(options, allow_nan=False)
    attrs["saffron_xr_version"] = __version__
    ds.attrs = attrs
    return ds


def _line_variables(take, layout, nl, amp_units) -> dict:
    """amplitude, centroid, width, their errors and the per-line covariances."""
    line_idx = np.arange(nl) * 3
    units = {"amplitude": amp_units, "centroid": "Angstrom", "width": "Angstrom"}
    long = {
        "amplitude": "peak spectral radiance of the Gaussian",
        "centroid": "line centroid wavelength",
        "width": "Gaussian sigma (FWHM = 2 sqrt(2 ln 2) sigma)",
    }
    data_vars = {}
    for k, kind in enumerate(PARAM_KINDS):
        attrs = {"units": units[kind], "long_name": long[kind]}
        data_vars[kind] = take(layout["params"].start + line_idx + k, ["line"]).assign_attrs(attrs)
        data_vars[f"{kind}_err"] = take(
            layout["errors"].start + line_idx + k, ["line"]
        ).assign_attrs({"units": units[kind], "long_name": f"1-sigma error of {kind}"})
    cov_units = {
        "cov_amplitude_centroid": f"{amp_units} Angstrom",
        "cov_amplitude_width": f"{amp_units} Angstrom",
        "cov_centroid_width": "Angstrom2",
    }
    for name, u in cov_units.items():
        a, b = name[4:].split("_")
        data_vars[name] = take(layout[name].start + np.arange(nl), ["line"]).assign_attrs(
            {"units": u, "long_name": f"covariance of {a} and {b}"}
        )
    return data_vars


def _background_variables(take, layout, compiled, segmented, amp_units) -> dict:
    """background and background_err, dims (segment,) degree."""
    nl = compiled.n_lines
    nbg = compiled.degree + 1
    bg_dims = ["segment", "degree"] if segmented else ["degree"]
    bg_index = 3 * nl + np.arange(compiled.n_segments * nbg).reshape(compiled.n_segments, nbg)
    if not segmented:
        bg_index = bg_index[0]
    bg_attrs = {
        # one variable holds every degree: `units` is that of degree 0, the others follow
        "units": amp_units,
        "units_by_degree": "; ".join(
            f"{k}: {amp_units}" + (f" Angstrom-{k}" if k else "") for k in range(nbg)
        ),
        "long_name": "background polynomial coefficients",
        "description": (
            "background(wavelength) = sum_k background[k] * (wavelength - "
            "background_reference)**k, wavelength in Angstrom; coefficient k is in "
            f"{amp_units} per Angstrom**k"
        ),
    }
    return {
        "background": take(layout["params"].start + bg_index, bg_dims).assign_attrs(bg_attrs),
        "background_err": take(layout["errors"].start + bg_index, bg_dims).assign_attrs(
            {**bg_attrs, "long_name": "1-sigma error of the background coefficients"}
        ),
    }


def _summary_variables(packed, layout) -> dict:
    """chi2, status, n_iter and n_valid: one value per pixel."""

    def scalar(name):
        return packed.isel({PACKED_DIM: layout[name].start})

    status_attrs = {
        "units": "1",
        "long_name": "fit status (saffron_xr.FitStatus)",
        "flag_values": np.array([int(s) for s in FitStatus], dtype=np.int8),
        "flag_meanings": FitStatus.flag_attrs()["flag_meanings"],
    }
    return {
        "chi2": scalar("chi2").assign_attrs(
            {"units": "1", "long_name": "reduced chi-square (chi2 / (n_valid - n_free))"}
        ),
        "status": scalar("status").astype(np.int8).assign_attrs(status_attrs),
        "n_iter": scalar("n_iter")
        .astype(np.int32)
        .assign_attrs({"units": "1", "long_name": "Levenberg-Marquardt iterations"}),
        "n_valid": scalar("n_valid")
        .astype(np.int32)
        .assign_attrs({"units": "1", "long_name": "number of valid samples fitted"}),
    }


def _coords(model, compiled, segmented) -> dict:
    """line, ion, rest_wavelength, degree, background_reference (and the segments)."""
    names = model.lines
    infos = [model.line_info(n) for n in names]
    coords = {
        "line": ("line", np.array(names, dtype=object)),
        "ion": ("line", np.array([i["ion"] or "" for i in infos], dtype=object)),
        "rest_wavelength": (
            "line",
            np.array(
                [np.nan if i["rest_wavelength"] is None else i["rest_wavelength"] for i in infos],
                dtype=np.float64,
            ),
            {"units": "Angstrom", "long_name": "rest wavelength"},
        ),
        "degree": ("degree", np.arange(compiled.degree + 1)),
    }
    ref_attrs = {"units": "Angstrom", "long_name": "centre of the background polynomial"}
    if segmented:
        coords["segment"] = ("segment", np.arange(compiled.n_segments))
        coords["segment_min"] = ("segment", compiled.segment_min, {"units": "Angstrom"})
        coords["segment_max"] = ("segment", compiled.segment_max, {"units": "Angstrom"})
        coords["background_reference"] = ("segment", compiled.segment_reference, ref_attrs)
    else:
        coords["background_reference"] = ((), float(compiled.segment_reference[0]), ref_attrs)
    return coords


def add_quality(ds, packed, layout, compiled, loop_dims, threshold) -> xr.Dataset:
    """Per-line significance, detection and at-bound flags; the optional full covariance."""

    def per_line(name):
        index = xr.DataArray(np.arange(layout[name].start, layout[name].stop), dims=["line"])
        return packed.isel({PACKED_DIM: index}).transpose("line", *loop_dims)

    sig = per_line("significance")
    ds["significance"] = sig.assign_attrs(
        {
            "units": "1",
            "long_name": "line significance (sigma)",
            "description": (
                "amplitude / its 1-sigma error with centroids and widths fixed: the signed "
                "square root of the chi2 increase when the line is removed and the other "
                "amplitudes and background refit; 0 where the amplitude went to 0"
            ),
        }
    )
    # packed by the kernel (not `sig >= threshold`: a dask key shared by two variables of
    # one Dataset has been lost by graph optimisation on distributed, see the tests)
    ds["detected"] = (per_line("detected") > 0.5).assign_attrs(
        {
            "units": "1",
            "long_name": "line detected",
            "description": f"significance >= {threshold:g}",
        }
    )
    ds["at_bound"] = (per_line("at_bound") > 0.5).assign_attrs(
        {
            "units": "1",
            "long_name": "a free parameter of the line sits on one of its bounds",
            "description": (
                "that parameter's error is NaN (the curvature at a bound understates the "
                "uncertainty); the other errors are conditional on it"
            ),
        }
    )
    ds.attrs["detection_threshold"] = threshold
    nfree = compiled.n_free
    if layout["covariance"].stop > layout["covariance"].start:
        index = np.arange(layout["covariance"].start, layout["covariance"].stop).reshape(
            nfree, nfree
        )
        cov = packed.isel({PACKED_DIM: xr.DataArray(index, dims=["param", "param2"])})
        names = [compiled.full_names[int(j)] for j in compiled.free_root]
        ds["covariance"] = (
            cov.transpose("param", "param2", *loop_dims)
            .assign_coords(param=("param", names), param2=("param2", names))
            .assign_attrs(
                {
                    "units": "mixed (products of the parameters' units)",
                    "long_name": "covariance of the free parameters",
                    "description": (
                        "rows/columns named '<line>/<kind>' or 'background/<segment>/<degree>'; "
                        "in the units of the parameters' products; NaN rows for parameters "
                        "on a bound or not identifiable"
                    ),
                }
            )
        )
    return ds


def add_levels(ds, packed, layout, data, level_dim) -> xr.Dataset:
    index = packed.isel({PACKED_DIM: layout["level"].start}).astype(np.int32)
    ds["level_index"] = index.assign_attrs(
        {"units": "1", "long_name": f"index along {level_dim!r} of the level kept"}
    )
    if level_dim in data.coords:
        values = np.asarray(data[level_dim].values)
        level = xr.apply_ufunc(
            _take_values,
            index,
            kwargs={"values": values},
            dask="parallelized",
            output_dtypes=[values.dtype],
        )
        attrs = dict(data[level_dim].attrs)
        attrs.setdefault("units", "1")
        attrs["long_name"] = f"{level_dim} kept (coordinate value)"
        ds["level"] = level.assign_attrs(attrs)
    return ds


def _take_values(index, *, values):
    return values[index]
