"""The usual set of derived quantities in one call: :func:`derive_all`."""

from __future__ import annotations

import json
from collections.abc import Mapping

import xarray as xr

from ._masks import PreparedMask, quality_mask
from .doppler import correct_doppler_gradient, doppler_velocity
from .intensity import radiance
from .widths import line_widths

__all__ = ["derive_all"]


def derive_all(
    params: xr.Dataset,
    *,
    doppler_reference="median",
    log_t=None,
    instrumental_fwhm=None,
    nonthermal: bool | None = None,
    gradient: Mapping | None = None,
    mask="good",
) -> xr.Dataset:
    """The parameters plus radiance, Doppler velocity and widths (FWHM, thermal, non-thermal).

    Parameters
    ----------
    params : xarray.Dataset
        Fitted parameters (:func:`saffron_xr.fit_lines`), returned with the derived variables.
    doppler_reference : optional
        See :func:`doppler_velocity` (default ``"median"``: the median centroid of each line
        over the kept pixels, which removes SPICE's wavelength-scale offset).
    log_t, instrumental_fwhm : optional
        See :func:`nonthermal_velocity`.
    nonthermal : bool, optional
        See :func:`line_widths`: by default the thermal and non-thermal widths are written
        whenever a formation temperature is known for every line (argument, ``log_t``
        coordinate or the default line catalog).
    gradient : dict, optional
        Keyword arguments of :func:`correct_doppler_gradient` (e.g. ``{"dim": "x",
        "degree": 1, "reference_line": "ne_8 770.42"}``); ``None`` applies no correction.
    mask : {"good", "usable", None} or xarray.DataArray, default "good"
        Which pixels keep derived values (and define the median references); see the module
        documentation. Recorded as ``mask_rule`` on each derived variable.

    Returns
    -------
    xarray.Dataset
        ``params`` merged with the derived variables; the settings are recorded as JSON in the
        ``derive_settings`` attribute. Lazy.
    """
    keep = PreparedMask(quality_mask(params, mask))  # built once for the three parts
    parts = [radiance(params, mask=keep)]
    widths = line_widths(
        params, log_t=log_t, instrumental_fwhm=instrumental_fwhm, nonthermal=nonthermal, mask=keep
    )
    parts.append(widths)
    vel = doppler_velocity(params, reference=doppler_reference, mask=keep)
    if gradient:
        vel = correct_doppler_gradient(vel, **dict(gradient))
    parts.append(vel)
    out = params.copy()
    for part in parts:
        for name, var in part.data_vars.items():
            out[name] = var
    settings = {
        "doppler_reference": doppler_reference
        if isinstance(doppler_reference, (str, float, int))
        else "DataArray",
        "nonthermal": "nonthermal_velocity" in widths,
        "widths": widths.attrs["widths"],
        "log_t": log_t if isinstance(log_t, (float, int, dict)) else None,
        "instrumental_fwhm": instrumental_fwhm
        if isinstance(instrumental_fwhm, (float, int))
        else None,
        "gradient": dict(gradient) if gradient else None,
        "mask": mask if isinstance(mask, str) or mask is None else "DataArray",
        "mask_rule": out["radiance"].attrs["mask_rule"],
    }
    out.attrs["derive_settings"] = json.dumps(settings)
    return out
