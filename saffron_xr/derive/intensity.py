"""Line radiance: the wavelength-integrated Gaussian of each fitted line, with its error."""

from __future__ import annotations

import math

import astropy.units as u
import numpy as np
import xarray as xr

from ._masks import covariance, keep_coords, masked, quality_mask, require, to_angstrom

__all__ = ["radiance"]


def radiance(params: xr.Dataset, *, mask="good") -> xr.Dataset:
    """Line radiance (wavelength-integrated) of each fitted Gaussian, with its error.

    ``radiance = amplitude * width * sqrt(2 pi)``, with the width converted from Angstrom to nm
    so that an amplitude in W m-2 sr-1 nm-1 gives a radiance in W m-2 sr-1. The error is

    ``sigma_R^2 = 2 pi f^2 (w^2 sigma_A^2 + A^2 sigma_w^2 + 2 A w cov(A, w))``

    with ``f`` the width unit conversion; ``cov_amplitude_width`` is used when present.

    Parameters
    ----------
    params : xarray.Dataset
        Fitted parameters with ``amplitude``, ``width``, ``amplitude_err``, ``width_err``.
    mask : {"good", "usable", None} or xarray.DataArray, default "good"
        Which pixels keep a value (others NaN; rule in :mod:`saffron_xr.derive`, ``mask_rule``).

    Returns
    -------
    xarray.Dataset
        ``radiance`` and ``radiance_err`` with the dims of ``amplitude``. Lazy.

    Examples
    --------
    >>> import xarray as xr
    >>> p = xr.Dataset({"amplitude": ("line", [2.0]), "width": ("line", [0.4]),
    ...                 "amplitude_err": ("line", [0.1]), "width_err": ("line", [0.01])})
    >>> round(float(radiance(p)["radiance"][0]), 6)
    0.20053
    """
    require(params, ["amplitude", "width", "amplitude_err", "width_err"], "radiance")
    amp, wid = params["amplitude"], params["width"]
    amp_units = str(amp.attrs.get("units", "W m-2 sr-1 nm-1")).strip() or "W m-2 sr-1 nm-1"
    wfac = to_angstrom(wid) / 10.0  # Angstrom to nm
    try:
        out_unit = u.Unit(amp_units) * u.nm
        if out_unit.is_equivalent(u.Unit("W m-2 sr-1")):
            scale = float(out_unit.to(u.Unit("W m-2 sr-1")))
            units = "W m-2 sr-1"
        else:
            scale = 1.0
            units = out_unit.to_string()
    except ValueError:
        scale, units = 1.0, f"({amp_units}) nm"
    k = math.sqrt(2.0 * math.pi) * wfac * scale
    w = wid
    rad = k * amp * w
    var = (
        w**2 * params["amplitude_err"] ** 2
        + amp**2 * params["width_err"] ** 2
        + 2.0 * amp * w * covariance(params, "cov_amplitude_width")
    )
    err = k * np.sqrt(var.clip(min=0))
    keep, rule = quality_mask(params, mask)
    rad, err = masked(rad, keep), masked(err, keep)
    rad.attrs = {
        "units": units,
        "long_name": "line radiance (integrated Gaussian)",
        "mask_rule": rule,
    }
    err.attrs = {"units": units, "long_name": "1-sigma error of line radiance", "mask_rule": rule}
    return xr.Dataset({"radiance": rad, "radiance_err": err}, coords=keep_coords(params))
