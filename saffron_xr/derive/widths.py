"""Line widths: FWHM, the thermal and instrumental widths and the non-thermal velocity."""

from __future__ import annotations

import math
from collections.abc import Mapping

import astropy.constants as const
import numpy as np
import xarray as xr

from ._masks import (
    FWHM_PER_SIGMA,
    SPEED_OF_LIGHT,
    keep_coords,
    masked,
    quality_mask,
    require,
    rest_wavelength,
    to_angstrom,
)

__all__ = [
    "ATOMIC_WEIGHTS",
    "INSTRUMENTAL_FWHM",
    "fwhm",
    "thermal_fwhm",
    "default_instrumental_fwhm",
    "nonthermal_velocity",
    "line_widths",
]

_K_B = float(const.k_B.to_value("J/K"))
_AMU = float(const.u.to_value("kg"))

#: Standard atomic weights (IUPAC, abridged conventional values, CIAAW 2021) of the elements
#: up to zinc, keyed by lower-case symbol, in atomic mass units.
ATOMIC_WEIGHTS = {
    "h": 1.008,
    "he": 4.0026,
    "li": 6.94,
    "be": 9.0122,
    "b": 10.81,
    "c": 12.011,
    "n": 14.007,
    "o": 15.999,
    "f": 18.998,
    "ne": 20.180,
    "na": 22.990,
    "mg": 24.305,
    "al": 26.982,
    "si": 28.085,
    "p": 30.974,
    "s": 32.06,
    "cl": 35.45,
    "ar": 39.95,
    "k": 39.098,
    "ca": 40.078,
    "sc": 44.956,
    "ti": 47.867,
    "v": 50.942,
    "cr": 51.996,
    "mn": 54.938,
    "fe": 55.845,
    "co": 58.933,
    "ni": 58.693,
    "cu": 63.546,
    "zn": 65.38,
}

#: In-flight instrumental FWHM of SPICE in Angstrom, keyed by (detector, slit width in arcsec).
#:
#: The SPICE data release notes (e.g. Data Release 5.0, doi:10.48326/idoc.medoc.spice.5.0,
#: "Known limitations") give the in-flight spectral resolution of the 2" slit as 7.8 detector
#: pixels FWHM on the SW detector and 9.4 pixels on the LW detector; with the L2 dispersions
#: (CDELT3 = 0.0097517 nm on SW, 0.009623 nm on LW) these are 0.761 and 0.905 Angstrom.
#: The release notes give no separate in-flight value for the 4" and 6" slits, so the 2" value
#: is used for them too (a lower bound: a wider slit can only broaden the profile). Pass
#: ``instrumental_fwhm=`` explicitly when a better value is known. The 30" slit gives an image
#: of the slit, not a line profile, and has no entry.
INSTRUMENTAL_FWHM = {
    ("SW", 2): 7.8 * 0.097517,
    ("SW", 4): 7.8 * 0.097517,
    ("SW", 6): 7.8 * 0.097517,
    ("LW", 2): 9.4 * 0.09623,
    ("LW", 4): 9.4 * 0.09623,
    ("LW", 6): 9.4 * 0.09623,
}

_INSTRUMENTAL_SOURCE = (
    "SPICE data release notes (doi:10.48326/idoc.medoc.spice.5.0): 2 arcsec slit in flight, "
    "7.8 px FWHM (SW), 9.4 px (LW); used for the 2, 4 and 6 arcsec slits"
)
_SW_LW_BOUNDARY = 850.0  # Angstrom: SW covers ~704-790, LW ~973-1049


def _element(ion: str) -> str:
    """Element symbol (lower case) of a CHIANTI-style ion name such as ``"fe_12"``."""
    symbol = str(ion).strip().lower().split("_")[0].split(" ")[0]
    if symbol not in ATOMIC_WEIGHTS:
        raise ValueError(
            f"cannot find the element of ion {ion!r}: expected a CHIANTI-style name such as "
            f"'fe_12' with an element among {sorted(ATOMIC_WEIGHTS)}"
        )
    return symbol


def _ions(params: xr.Dataset) -> list[str]:
    """Ion of each line: the ``ion`` coordinate, else (or where empty) the line id's prefix."""
    lines = [str(v) for v in np.atleast_1d(params["line"].values)]
    if "ion" in params.coords or "ion" in params.variables:
        ions = [str(v) for v in np.atleast_1d(params["ion"].values)]
    else:
        ions = [""] * len(lines)
    return [ion or line.split(" ")[0] for ion, line in zip(ions, lines, strict=True)]


def fwhm(params: xr.Dataset, *, mask="good") -> xr.Dataset:
    """Full width at half maximum of each line, ``2 sqrt(2 ln 2) width``, in Angstrom.

    Parameters
    ----------
    params : xarray.Dataset
        Fitted parameters with ``width`` and ``width_err`` (Gaussian sigma).
    mask : {"good", "usable", None} or xarray.DataArray, default "good"
        Which pixels keep a value (others NaN; rule in :mod:`saffron_xr.derive`, ``mask_rule``).

    Returns
    -------
    xarray.Dataset
        ``fwhm`` and ``fwhm_err`` (Angstrom). Lazy.

    Examples
    --------
    >>> import xarray as xr
    >>> p = xr.Dataset({"width": ("line", [1.0]), "width_err": ("line", [0.1])})
    >>> round(float(fwhm(p)["fwhm"][0]), 4)
    2.3548
    """
    require(params, ["width", "width_err"], "fwhm")
    wfac = to_angstrom(params["width"])
    efac = to_angstrom(params["width_err"])
    keep, rule = quality_mask(params, mask)
    f = masked(FWHM_PER_SIGMA * wfac * params["width"], keep)
    e = masked(FWHM_PER_SIGMA * efac * params["width_err"], keep)
    f.attrs = {"units": "Angstrom", "long_name": "full width at half maximum", "mask_rule": rule}
    e.attrs = {
        "units": "Angstrom",
        "long_name": "1-sigma error of full width at half maximum",
        "mask_rule": rule,
    }
    return xr.Dataset({"fwhm": f, "fwhm_err": e}, coords=keep_coords(params))


def _catalog_log_t(lines: list[str]) -> dict[str, float]:
    """Formation temperatures (log10 K) of ``lines`` from the default line catalog."""
    from ..catalog.catalog import LineCatalog

    catalog = LineCatalog.default()
    return {line: float(catalog[line].log_t) for line in lines if line in catalog}


def _resolve_log_t(params: xr.Dataset, log_t) -> tuple[xr.DataArray, str]:
    lines = [str(v) for v in np.atleast_1d(params["line"].values)]
    if isinstance(log_t, xr.DataArray):
        return log_t, "argument log_t"
    if isinstance(log_t, Mapping):
        missing = [ln for ln in lines if ln not in log_t]
        if missing:
            raise ValueError(f"log_t has no formation temperature for line(s) {missing}")
        return xr.DataArray([float(log_t[ln]) for ln in lines], dims="line"), "argument log_t"
    if log_t is not None:
        return xr.DataArray(float(log_t)), "argument log_t"
    if "log_t" in params.coords or "log_t" in params.variables:
        return params["log_t"], "log_t coordinate of the parameters"
    cat = _catalog_log_t(lines)
    missing = [ln for ln in lines if ln not in cat]
    if missing:
        raise ValueError(
            f"no formation temperature for line(s) {missing}: pass log_t= (a number, a dict "
            "{line: log10 T} or a DataArray on 'line'), or add a 'log_t' coordinate on 'line'; "
            "the default line catalog has no value for them"
        )
    return xr.DataArray([cat[ln] for ln in lines], dims="line"), "default line catalog"


def thermal_fwhm(params: xr.Dataset, *, log_t=None) -> xr.DataArray:
    """Thermal Doppler FWHM of each line at its formation temperature, in Angstrom.

    ``FWHM_th = (lambda_0 / c) sqrt(8 ln 2 k T / M)`` with ``M`` the mass of the ion's element
    (standard atomic weight) and ``lambda_0`` the rest wavelength.

    Parameters
    ----------
    params : xarray.Dataset
        Parameters with ``rest_wavelength`` and ``ion`` coordinates on ``line``.
    log_t : float, dict, xarray.DataArray or None
        Formation temperature, log10 of kelvin: one value, ``{line: value}``, or a DataArray
        (dims among the parameters', e.g. ``line`` or ``(line, y, x)``). ``None``: the
        ``log_t`` coordinate of ``params`` if present, else the default line catalog.

    Returns
    -------
    xarray.DataArray
        Thermal FWHM (Angstrom), dims ``line`` plus any dims of ``log_t``.
    """
    lam0 = rest_wavelength(params, "thermal_fwhm")
    logt, source = _resolve_log_t(params, log_t)
    mass = xr.DataArray(
        [ATOMIC_WEIGHTS[_element(ion)] * _AMU for ion in _ions(params)], dims="line"
    )
    v_th = np.sqrt(2.0 * _K_B * 10.0**logt / mass) / 1e3  # most probable speed, km/s
    out = lam0 / SPEED_OF_LIGHT * math.sqrt(4.0 * math.log(2.0)) * v_th
    out = out.reset_coords(drop=True) if out.dims else out
    out.attrs = {
        "units": "Angstrom",
        "long_name": "thermal Doppler FWHM",
        "log_t_source": source,
    }
    return out


def default_instrumental_fwhm(
    params: xr.Dataset, *, slit_width: float | None = None, detector: str | None = None
) -> xr.DataArray:
    """Default SPICE instrumental FWHM (Angstrom) for each line, from :data:`INSTRUMENTAL_FWHM`.

    Parameters
    ----------
    params : xarray.Dataset
        Parameters; their ``SLIT_WID`` and ``DETECTOR`` attributes are used when the arguments
        are not given.
    slit_width : float, optional
        Slit width in arcsec (2, 4 or 6). Default: ``SLIT_WID`` attribute, else 2.
    detector : {"SW", "LW"}, optional
        Default: ``DETECTOR`` attribute, else chosen per line from its rest wavelength.

    Returns
    -------
    xarray.DataArray
        Instrumental FWHM (Angstrom) on ``line``.
    """
    slit = slit_width if slit_width is not None else params.attrs.get("SLIT_WID", 2)
    slit = int(round(float(slit)))
    det = detector if detector is not None else params.attrs.get("DETECTOR")
    if det is not None:
        dets = [str(det).strip().upper()] * params.sizes.get("line", 1)
    else:
        lam0 = np.atleast_1d(rest_wavelength(params, "instrumental_fwhm").values)
        dets = ["SW" if lam < _SW_LW_BOUNDARY else "LW" for lam in lam0]
    values = []
    for d in dets:
        if (d, slit) not in INSTRUMENTAL_FWHM:
            raise ValueError(
                f"no default SPICE instrumental width for detector {d!r} and a {slit} arcsec "
                f"slit (known: {sorted(INSTRUMENTAL_FWHM)}); pass instrumental_fwhm= in Angstrom"
            )
        values.append(INSTRUMENTAL_FWHM[(d, slit)])
    return xr.DataArray(
        values,
        dims="line",
        attrs={
            "units": "Angstrom",
            "long_name": "instrumental FWHM",
            "source": f"{_INSTRUMENTAL_SOURCE}; slit {slit} arcsec",
        },
    )


def nonthermal_velocity(
    params: xr.Dataset,
    *,
    log_t=None,
    instrumental_fwhm=None,
    slit_width: float | None = None,
    detector: str | None = None,
    mask="good",
) -> xr.Dataset:
    """Non-thermal velocity from the observed line width, in km/s.

    The observed FWHM ``W`` is split as ``W^2 = W_I^2 + 4 ln2 (lambda_0/c)^2 (2kT/M + xi^2)``
    (``W_I`` instrumental FWHM, ``T`` formation temperature, ``M`` ion mass); ``xi`` is the
    most-probable non-thermal speed (the 1/e half width in velocity, the convention of e.g. the
    Hinode/EIS software; the Gaussian sigma in velocity is ``xi / sqrt(2)``). Where the observed
    width does not exceed the quadrature sum of the thermal and instrumental widths, ``xi`` is
    NaN (never imaginary). Error: ``sigma_xi = (c/lambda_0)^2 W sigma_W / (4 ln2 xi)``, from the
    width error only (temperature and instrumental width taken as exact).

    Parameters
    ----------
    params : xarray.Dataset
        Fitted parameters with ``width``, ``width_err`` and ``rest_wavelength``/``ion``
        coordinates.
    log_t : float, dict, xarray.DataArray or None
        Formation temperature (log10 K); see :func:`thermal_fwhm`.
    instrumental_fwhm : float or xarray.DataArray, optional
        Instrumental FWHM in Angstrom. Default: :func:`default_instrumental_fwhm` for the slit and
        detector (values and citation in :data:`INSTRUMENTAL_FWHM`).
    slit_width, detector : optional
        Passed to the default instrumental width lookup.
    mask : {"good", "usable", None} or xarray.DataArray, default "good"
        Which pixels keep a value (others NaN; rule in :mod:`saffron_xr.derive`, ``mask_rule``).

    Returns
    -------
    xarray.Dataset
        ``nonthermal_velocity``, ``nonthermal_velocity_err`` (km/s), ``thermal_fwhm`` and
        ``instrumental_fwhm`` (Angstrom). Lazy.
    """
    require(params, ["width", "width_err"], "nonthermal_velocity")
    lam0 = rest_wavelength(params, "nonthermal_velocity")
    widths = fwhm(params, mask=mask)
    w, w_err = widths["fwhm"], widths["fwhm_err"]
    rule = w.attrs["mask_rule"]
    th = thermal_fwhm(params, log_t=log_t)
    if instrumental_fwhm is None:
        inst = default_instrumental_fwhm(params, slit_width=slit_width, detector=detector)
    elif isinstance(instrumental_fwhm, xr.DataArray):
        inst = instrumental_fwhm * to_angstrom(instrumental_fwhm)
        inst.attrs = {"units": "Angstrom", "long_name": "instrumental FWHM", "source": "argument"}
    else:
        inst = xr.DataArray(
            float(instrumental_fwhm),
            attrs={"units": "Angstrom", "long_name": "instrumental FWHM", "source": "argument"},
        )
    k = (SPEED_OF_LIGHT / lam0) ** 2 / (4.0 * math.log(2.0))
    xi2 = k * (w**2 - inst**2 - th**2)
    xi = np.sqrt(xi2.where(xi2 > 0))
    err = k * w * w_err / xi
    xi = xi.transpose(*params["width"].dims)
    err = err.transpose(*params["width"].dims)
    conv = (
        "W^2 = W_inst^2 + 4 ln2 (lambda0/c)^2 (2kT/M + xi^2); xi = most-probable (1/e) "
        "non-thermal speed; NaN where W^2 <= W_inst^2 + W_th^2"
    )
    xi.attrs = {
        "units": "km s-1",
        "long_name": "non-thermal velocity",
        "convention": conv,
        "mask_rule": rule,
    }
    err.attrs = {
        "units": "km s-1",
        "long_name": "1-sigma error of non-thermal velocity",
        "mask_rule": rule,
    }
    th = th.reset_coords(drop=True) if th.dims else th
    inst = inst.reset_coords(drop=True) if inst.dims else inst
    return xr.Dataset(
        {
            "nonthermal_velocity": xi,
            "nonthermal_velocity_err": err,
            "thermal_fwhm": th,
            "instrumental_fwhm": inst,
        },
        coords=keep_coords(params),
    )


def _nonthermal_available(params: xr.Dataset, log_t, instrumental_fwhm) -> str:
    """Why non-thermal widths cannot be computed ("" if they can)."""
    try:
        if "rest_wavelength" not in params.coords and "rest_wavelength" not in params.variables:
            return "no rest_wavelength coordinate"
        _resolve_log_t(params, log_t)
        if instrumental_fwhm is None:
            default_instrumental_fwhm(params)
    except ValueError as exc:
        return str(exc)
    return ""


def line_widths(
    params: xr.Dataset,
    *,
    log_t=None,
    instrumental_fwhm=None,
    nonthermal: bool | None = None,
    mask="good",
) -> xr.Dataset:
    """FWHM and, where a formation temperature is known, thermal and non-thermal widths.

    Parameters
    ----------
    params : xarray.Dataset
        Fitted parameters.
    log_t, instrumental_fwhm : optional
        See :func:`nonthermal_velocity`.
    nonthermal : bool, optional
        ``True``: compute the thermal and non-thermal widths (error if impossible);
        ``False``: FWHM only; ``None`` (default): compute them when a formation temperature
        is known for every line (``log_t``, a ``log_t`` coordinate or the default line
        catalog) and an instrumental width is known, else FWHM only.
    mask : optional
        See :func:`fwhm`.

    Returns
    -------
    xarray.Dataset
        ``fwhm``, ``fwhm_err`` and, when computed, ``nonthermal_velocity``,
        ``nonthermal_velocity_err``, ``thermal_fwhm`` and ``instrumental_fwhm``; the
        ``widths`` attribute says which were written and why. Lazy.
    """
    out = fwhm(params, mask=mask)
    reason = ""
    if nonthermal is None:
        reason = _nonthermal_available(params, log_t, instrumental_fwhm)
        nonthermal = not reason
    if nonthermal:
        nt = nonthermal_velocity(
            params, log_t=log_t, instrumental_fwhm=instrumental_fwhm, mask=mask
        )
        out = out.merge(nt)
        out.attrs["widths"] = "FWHM, thermal FWHM, instrumental FWHM and non-thermal velocity"
    else:
        out.attrs["widths"] = "FWHM only" + (
            f" (no thermal/non-thermal widths: {reason})" if reason else ""
        )
    return out
