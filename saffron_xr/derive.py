"""Derived physical quantities from a fitted-parameter Dataset.

The parameter Dataset is what :func:`saffron_xr.fit_lines` returns: ``amplitude`` (peak
spectral radiance), ``centroid`` and ``width`` (Gaussian sigma, Angstrom) with their
``<name>_err`` 1-sigma errors and, where the fit provides them, the covariance terms
``cov_amplitude_width``, ``cov_amplitude_centroid`` and ``cov_centroid_width``; dims
``(line, y, x)`` (or ``(line, time, y)`` for sit-and-stare); coordinates ``line``, ``ion`` and
``rest_wavelength`` (Angstrom) on ``line``.

Every function here is lazy (plain xarray arithmetic on dask arrays, reductions included) and
returns a new Dataset holding the derived quantity, its 1-sigma error and what was used to
compute it, with ``units`` and ``long_name`` on every variable. Merge it back with
``params.merge(result)`` or use :func:`derive_all` for the usual set.

Error propagation is linear (first order); covariance terms are used when present and taken as
zero otherwise.

Which pixels count (``mask=``): by default (``"good"``) a derived value is kept only where the
line is ``detected``, not ``at_bound`` (per-line variables of the fit result) and the pixel's
``status`` is ``CONVERGED`` (:meth:`saffron_xr.FitStatus.converged`, the one definition of
"converged"); elsewhere it is NaN. When the fit result has no ``detected``/``at_bound``
variables the status alone decides, and the rule says so. ``"usable"`` keeps every status whose
parameters are finite (:meth:`saffron_xr.FitStatus.usable`), ``None`` keeps everything, and a
boolean DataArray is used as given. The rule applied is recorded in the ``mask_rule``
attribute of every derived variable. The Doppler ``"median"`` and ``"column"`` references are
medians over the same kept pixels, so centroids pinned at a bound never move them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Mapping

import astropy.constants as const
import astropy.units as u
import numpy as np
import xarray as xr

__all__ = [
    "MASK_RULES",
    "SPEED_OF_LIGHT",
    "FWHM_PER_SIGMA",
    "ATOMIC_WEIGHTS",
    "INSTRUMENTAL_FWHM",
    "radiance",
    "doppler_velocity",
    "fwhm",
    "thermal_fwhm",
    "default_instrumental_fwhm",
    "nonthermal_velocity",
    "line_widths",
    "correct_doppler_gradient",
    "derive_all",
]

#: Speed of light in km/s (astropy constants).
SPEED_OF_LIGHT = float(const.c.to_value("km/s"))

#: FWHM of a Gaussian in units of its sigma, 2 sqrt(2 ln 2).
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))

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


# ----------------------------------------------------------------------------- helpers


#: Names accepted by the ``mask=`` keyword (besides a boolean DataArray).
MASK_RULES = ("good", "usable", None)


def _quality_mask(params: xr.Dataset, mask) -> tuple[xr.DataArray | None, str]:
    """The boolean keep-mask for ``mask`` (None: keep all) and the rule as text."""
    from .fit.status import FitStatus

    if mask is None or (isinstance(mask, str) and mask == "none"):
        return None, "none: every fitted value kept"
    if isinstance(mask, xr.DataArray):
        if mask.dtype != bool:
            raise ValueError(f"a mask DataArray must be boolean, got dtype {mask.dtype}")
        return mask, "user mask (DataArray)"
    if mask not in ("good", "usable"):
        raise ValueError(
            f"unknown mask {mask!r}: use 'good' (detected, converged, not at a bound), "
            "'usable' (finite parameters), None (keep all) or a boolean DataArray"
        )
    if "status" not in params.variables:
        return None, f"{mask}: no 'status' in the parameters, every fitted value kept"
    if mask == "usable":
        codes = [int(c) for c in FitStatus.usable()]
        names = "/".join(c.name for c in FitStatus.usable())
        return params["status"].isin(codes), f"usable: status in {names}"
    codes = [int(c) for c in FitStatus.converged()]
    keep = params["status"].isin(codes)
    parts = [f"status {'/'.join(c.name for c in FitStatus.converged())}"]
    absent = []
    if "detected" in params.variables:
        keep = keep & params["detected"].astype(bool)
        parts.insert(0, "detected")
    else:
        absent.append("detected")
    if "at_bound" in params.variables:
        keep = keep & ~params["at_bound"].astype(bool)
        parts.append("not at_bound")
    else:
        absent.append("at_bound")
    rule = "good: " + " & ".join(parts)
    if absent:
        rule += f" ({' and '.join(absent)} absent from the fit result: not applied)"
    return keep, rule


def _masked(da: xr.DataArray, keep: xr.DataArray | None) -> xr.DataArray:
    """``da`` with NaN where ``keep`` is False (dims and attrs of ``da``)."""
    if keep is None:
        return da
    attrs = da.attrs
    out = da.where(keep)
    extra = [d for d in out.dims if d not in da.dims]
    if extra:
        raise ValueError(
            f"the mask has dims {extra} that {da.name or 'the variable'} {da.dims} lacks"
        )
    out = out.transpose(*da.dims)
    out.attrs = attrs
    return out


def _require(params: xr.Dataset, names, what: str) -> None:
    missing = [n for n in names if n not in params.variables]
    if missing:
        raise ValueError(
            f"{what} needs the variable(s) {missing} in the parameter Dataset; "
            f"it has {sorted(map(str, params.data_vars))}"
        )


def _unit_factor(obj: xr.DataArray, target: str, default: str) -> float:
    """Factor converting ``obj`` (its ``units`` attr, ``default`` if absent) to ``target``."""
    units = str(obj.attrs.get("units", default)).strip() or default
    try:
        return float(u.Unit(units).to(u.Unit(target)))
    except (ValueError, u.UnitConversionError) as exc:
        raise ValueError(
            f"variable {obj.name!r} has units {units!r}, which cannot be converted to {target!r}"
        ) from exc


def _cov(params: xr.Dataset, name: str) -> xr.DataArray | int:
    """A covariance term if the fit provides it (NaN treated as 0), else 0."""
    if name in params.variables:
        return params[name].fillna(0.0)
    return 0


def _keep_coords(params: xr.Dataset) -> dict:
    return {k: v for k, v in params.coords.items()}


def _spatial_dims(da: xr.DataArray) -> list[Hashable]:
    return [d for d in da.dims if d != "line"]


def _rest_wavelength(params: xr.Dataset, what: str) -> xr.DataArray:
    if "rest_wavelength" not in params.coords and "rest_wavelength" not in params.variables:
        raise ValueError(
            f"{what} needs a 'rest_wavelength' coordinate (Angstrom) on 'line'; the parameter "
            "Dataset has none"
        )
    rest = params["rest_wavelength"]
    return rest * _unit_factor(rest, "Angstrom", "Angstrom")


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


# ----------------------------------------------------------------------------- radiance


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
        Which pixels keep a value (others NaN); see the module documentation. The rule is
        recorded in the ``mask_rule`` attribute.

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
    _require(params, ["amplitude", "width", "amplitude_err", "width_err"], "radiance")
    amp, wid = params["amplitude"], params["width"]
    amp_units = str(amp.attrs.get("units", "W m-2 sr-1 nm-1")).strip() or "W m-2 sr-1 nm-1"
    wfac = _unit_factor(wid, "nm", "Angstrom")
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
        + 2.0 * amp * w * _cov(params, "cov_amplitude_width")
    )
    err = k * np.sqrt(var.clip(min=0))
    keep, rule = _quality_mask(params, mask)
    rad, err = _masked(rad, keep), _masked(err, keep)
    rad.attrs = {
        "units": units,
        "long_name": "line radiance (integrated Gaussian)",
        "mask_rule": rule,
    }
    err.attrs = {"units": units, "long_name": "1-sigma error of line radiance", "mask_rule": rule}
    return xr.Dataset({"radiance": rad, "radiance_err": err}, coords=_keep_coords(params))


# ----------------------------------------------------------------------------- Doppler


def _reference_wavelength(
    params: xr.Dataset, reference, keep: xr.DataArray | None = None, rule: str = ""
) -> tuple[xr.DataArray, str]:
    centroid = params["centroid"] * _unit_factor(params["centroid"], "Angstrom", "Angstrom")
    kept = _masked(centroid, keep)
    over = f" of the kept pixels ({rule})" if keep is not None else " of all pixels"
    if isinstance(reference, xr.DataArray):
        extra = set(reference.dims) - set(centroid.dims)
        if extra:
            raise ValueError(
                f"the reference wavelength DataArray has dims {reference.dims}; they must be "
                f"among the centroid dims {centroid.dims}"
            )
        ref = reference * _unit_factor(reference, "Angstrom", "Angstrom")
        return ref, "user DataArray"
    if isinstance(reference, (int, float, np.floating, np.integer)) and not isinstance(
        reference, bool
    ):
        return xr.DataArray(float(reference)), f"fixed wavelength {float(reference)!r} Angstrom"
    if reference == "rest":
        return _rest_wavelength(params, "doppler_velocity(reference='rest')"), (
            "rest: catalog rest wavelength of each line"
        )
    if reference == "median":
        dims = _spatial_dims(centroid)
        return kept.median(dims, skipna=True), (
            f"median: median centroid of each line over {', '.join(map(str, dims))}{over}; "
            "removes the instrument's wavelength-scale offset (and any mean flow of the window)"
        )
    if reference == "column":
        if "y" not in centroid.dims:
            raise ValueError(
                "doppler_velocity(reference='column') takes the median along the slit (dim "
                f"'y'); the centroid has dims {centroid.dims}"
            )
        return kept.median("y", skipna=True), (
            "column: median centroid of each line along the slit (y), per raster column" + over
        )
    raise ValueError(
        f"unknown Doppler reference {reference!r}: use 'rest', 'median', 'column', a wavelength "
        "in Angstrom or a DataArray of wavelengths"
    )


def doppler_velocity(params: xr.Dataset, reference="median", *, mask="good") -> xr.Dataset:
    """Doppler velocity of each line relative to a reference wavelength, in km/s.

    ``v = c (centroid - reference) / reference`` (non-relativistic; positive = redshift, i.e.
    motion away from the observer), ``sigma_v = c sigma_centroid / reference``. The uncertainty
    of the reference itself is not included (for the median references it is negligible).

    Parameters
    ----------
    params : xarray.Dataset
        Fitted parameters with ``centroid`` and ``centroid_err`` (Angstrom).
    reference : {"median", "rest", "column"}, float or xarray.DataArray, default "median"
        ``"median"`` (default): the median centroid of each line over the map (the window),
        taken over the pixels kept by ``mask`` only. SPICE's wavelength scale is pre-flight
        and off by tenths of an Angstrom (the real 2022 Ne VIII window sits at about
        -164 km/s against the rest wavelength), so this is the reference a SPICE user should
        get: it removes the instrument's offset (and with it any mean flow of the window).
        ``"rest"``: the ``rest_wavelength`` coordinate of each line (catalog value; absolute
        velocities then carry the wavelength-scale offset). ``"column"``: the median centroid
        of each line along the slit (``y``), per raster column (per exposure for
        sit-and-stare), over the kept pixels. A float: one wavelength in Angstrom for every
        line. A DataArray: wavelengths in Angstrom whose dims are among the centroid's (e.g.
        ``line``, or ``(line, x)``).
    mask : {"good", "usable", None} or xarray.DataArray, default "good"
        Which pixels keep a value (others NaN); see the module documentation. The rule is
        recorded in the ``mask_rule`` attribute.

    Returns
    -------
    xarray.Dataset
        ``doppler_velocity`` and ``doppler_velocity_err`` (km/s) and
        ``doppler_reference_wavelength`` (Angstrom, the reference actually used); attributes
        ``doppler_reference`` (the reference's name), ``doppler_reference_description``,
        ``reference_wavelength`` (the values when known without computing, else a pointer to
        the ``doppler_reference_wavelength`` variable) and ``mask_rule``. Lazy.

    Examples
    --------
    >>> import xarray as xr
    >>> p = xr.Dataset({"centroid": ("line", [770.5]), "centroid_err": ("line", [0.01])},
    ...                coords={"rest_wavelength": ("line", [770.42])})
    >>> round(float(doppler_velocity(p, "rest")["doppler_velocity"][0]), 3)
    31.13
    """
    _require(params, ["centroid", "centroid_err"], "doppler_velocity")
    keep, rule = _quality_mask(params, mask)
    ref, description = _reference_wavelength(params, reference, keep, rule)
    cfac = _unit_factor(params["centroid"], "Angstrom", "Angstrom")
    efac = _unit_factor(params["centroid_err"], "Angstrom", "Angstrom")
    centroid = params["centroid"] * cfac
    with xr.set_options(arithmetic_join="exact"):
        v = SPEED_OF_LIGHT * (centroid - ref) / ref
        err = SPEED_OF_LIGHT * (params["centroid_err"] * efac) / ref
    v = _masked(v.transpose(*centroid.dims), keep)
    err = _masked(err.transpose(*centroid.dims), keep)
    label = reference if isinstance(reference, str) else description
    if ref.chunks is None and ref.size <= 64:
        known = json.dumps(np.round(np.atleast_1d(ref.values).astype(float), 6).tolist())
    else:
        known = "see the variable doppler_reference_wavelength (computed with the maps)"
    common = {
        "doppler_reference": str(label),
        "doppler_reference_description": description,
        "reference_wavelength": known,
        "mask_rule": rule,
    }
    v.attrs = {
        "units": "km s-1",
        "long_name": "Doppler velocity (positive = redshift)",
        **common,
    }
    err.attrs = {"units": "km s-1", "long_name": "1-sigma error of Doppler velocity", **common}
    ref = ref.copy()
    ref.attrs = {
        "units": "Angstrom",
        "long_name": "reference wavelength of the Doppler velocity",
        **common,
    }
    # the reference must not carry coordinates that would clash with the parameters'
    ref = ref.reset_coords(drop=True) if ref.dims else ref.drop_vars(list(ref.coords))
    return xr.Dataset(
        {"doppler_velocity": v, "doppler_velocity_err": err, "doppler_reference_wavelength": ref},
        coords=_keep_coords(params),
    )


# ----------------------------------------------------------------------------- widths


def fwhm(params: xr.Dataset, *, mask="good") -> xr.Dataset:
    """Full width at half maximum of each line, ``2 sqrt(2 ln 2) width``, in Angstrom.

    Parameters
    ----------
    params : xarray.Dataset
        Fitted parameters with ``width`` and ``width_err`` (Gaussian sigma).
    mask : {"good", "usable", None} or xarray.DataArray, default "good"
        Which pixels keep a value (others NaN); see the module documentation. The rule is
        recorded in the ``mask_rule`` attribute.

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
    _require(params, ["width", "width_err"], "fwhm")
    wfac = _unit_factor(params["width"], "Angstrom", "Angstrom")
    efac = _unit_factor(params["width_err"], "Angstrom", "Angstrom")
    keep, rule = _quality_mask(params, mask)
    f = _masked(FWHM_PER_SIGMA * wfac * params["width"], keep)
    e = _masked(FWHM_PER_SIGMA * efac * params["width_err"], keep)
    f.attrs = {"units": "Angstrom", "long_name": "full width at half maximum", "mask_rule": rule}
    e.attrs = {
        "units": "Angstrom",
        "long_name": "1-sigma error of full width at half maximum",
        "mask_rule": rule,
    }
    return xr.Dataset({"fwhm": f, "fwhm_err": e}, coords=_keep_coords(params))


def _catalog_log_t(lines: list[str]) -> dict[str, float]:
    """Formation temperatures (log10 K) of ``lines`` from the default line catalog."""
    try:
        from .catalog import LineCatalog  # optional: written separately
    except ImportError:
        return {}
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
    lam0 = _rest_wavelength(params, "thermal_fwhm")
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
        lam0 = np.atleast_1d(_rest_wavelength(params, "instrumental_fwhm").values)
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
        Which pixels keep a value (others NaN); see the module documentation. The rule is
        recorded in the ``mask_rule`` attribute.

    Returns
    -------
    xarray.Dataset
        ``nonthermal_velocity``, ``nonthermal_velocity_err`` (km/s), ``thermal_fwhm`` and
        ``instrumental_fwhm`` (Angstrom). Lazy.
    """
    _require(params, ["width", "width_err"], "nonthermal_velocity")
    lam0 = _rest_wavelength(params, "nonthermal_velocity")
    widths = fwhm(params, mask=mask)
    w, w_err = widths["fwhm"], widths["fwhm_err"]
    rule = w.attrs["mask_rule"]
    th = thermal_fwhm(params, log_t=log_t)
    if instrumental_fwhm is None:
        inst = default_instrumental_fwhm(params, slit_width=slit_width, detector=detector)
    elif isinstance(instrumental_fwhm, xr.DataArray):
        inst = instrumental_fwhm * _unit_factor(instrumental_fwhm, "Angstrom", "Angstrom")
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
        coords=_keep_coords(params),
    )


# ----------------------------------------------------------------------------- gradient


def _nanpolyfit(profile: np.ndarray, degree: int) -> np.ndarray:
    """Least-squares polynomial coefficients (lowest order first) over the last axis."""
    out = np.full(profile.shape[:-1] + (degree + 1,), np.nan)
    pos = np.arange(profile.shape[-1], dtype=float)
    flat = profile.reshape(-1, profile.shape[-1])
    res = out.reshape(-1, degree + 1)
    for i, row in enumerate(flat):
        ok = np.isfinite(row)
        if ok.sum() > degree:
            res[i] = np.polynomial.polynomial.polyfit(pos[ok], row[ok], degree)
    return out


def correct_doppler_gradient(
    ds: xr.Dataset,
    *,
    reference_line: str | None = None,
    dim: str = "x",
    degree: int = 1,
    reference="median",
    mask="good",
) -> xr.Dataset:
    """Remove a smooth trend of Doppler velocity along ``x`` or ``y`` from all lines.

    The reference line's velocity is collapsed to a profile along ``dim`` (median over the
    other spatial dims), a polynomial of ``degree`` in pixel index is fitted to it by least
    squares, and that trend (km/s) is subtracted from the velocity of every line. This removes
    instrumental drifts (e.g. thermal wavelength drift during a raster) as the original tool
    offers; it also removes any real large-scale flow pattern of that shape.

    Parameters
    ----------
    ds : xarray.Dataset
        Either the output of :func:`doppler_velocity` (``doppler_velocity`` variable) or a
        parameter Dataset, whose velocities are then computed with ``reference``.
    reference_line : str, optional
        The ``line`` whose velocity defines the trend. Default: the first line.
    dim : str, default "x"
        Dimension along which the trend is fitted (``"x"`` or ``"y"``, or ``"time"``).
    degree : int, default 1
        Polynomial degree (0 = constant offset, 1 = linear, ...).
    reference : optional
        Doppler reference used when ``ds`` holds parameters (see :func:`doppler_velocity`).
    mask : optional
        Pixel mask used when ``ds`` holds parameters (see :func:`doppler_velocity`).

    Returns
    -------
    xarray.Dataset
        The velocity Dataset with ``doppler_velocity`` corrected, plus ``doppler_trend`` (km/s,
        along ``dim``) and ``doppler_trend_coefficients`` (km/s per pixel**k, dim
        ``trend_degree``); the settings are recorded in attributes. Lazy.
    """
    if "doppler_velocity" not in ds.variables:
        if "centroid" not in ds.variables:
            raise ValueError(
                "correct_doppler_gradient needs a 'doppler_velocity' variable (from "
                "doppler_velocity()) or fitted parameters with a 'centroid'"
            )
        ds = doppler_velocity(ds, reference=reference, mask=mask)
    v = ds["doppler_velocity"]
    if dim not in v.dims:
        raise ValueError(f"dim {dim!r} is not a dimension of doppler_velocity {v.dims}")
    if int(degree) < 0:
        raise ValueError(f"degree must be >= 0, got {degree}")
    degree = int(degree)
    lines = [str(s) for s in np.atleast_1d(v["line"].values)] if "line" in v.dims else []
    if "line" in v.dims:
        ref_line = reference_line if reference_line is not None else lines[0]
        if ref_line not in lines:
            raise ValueError(f"reference_line {ref_line!r} is not among the lines {lines}")
        vref = v.sel(line=ref_line, drop=True)
    else:
        ref_line = reference_line
        vref = v
    others = [d for d in vref.dims if d != dim]
    profile = vref.median(others, skipna=True) if others else vref
    profile = profile.chunk({dim: -1}) if profile.chunks is not None else profile
    coeffs = xr.apply_ufunc(
        _nanpolyfit,
        profile,
        input_core_dims=[[dim]],
        output_core_dims=[["trend_degree"]],
        kwargs={"degree": degree},
        dask="parallelized",
        output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {"trend_degree": degree + 1}},
    )
    coeffs = coeffs.assign_coords(trend_degree=np.arange(degree + 1))
    pos = xr.DataArray(np.arange(v.sizes[dim], dtype=float), dims=dim)
    trend = sum(coeffs.isel(trend_degree=k, drop=True) * pos**k for k in range(degree + 1))
    trend = trend.reset_coords(drop=True)
    settings = {
        "doppler_gradient_reference_line": "" if ref_line is None else str(ref_line),
        "doppler_gradient_dim": dim,
        "doppler_gradient_degree": degree,
    }
    corrected = (v - trend).transpose(*v.dims)
    corrected.attrs = {**v.attrs, **settings}
    trend.attrs = {
        "units": "km s-1",
        "long_name": f"Doppler velocity trend along {dim} removed from all lines",
        **settings,
    }
    coeffs = coeffs.reset_coords(drop=True).assign_coords(trend_degree=np.arange(degree + 1))
    coeffs.attrs = {
        "units": "km s-1",
        "long_name": "polynomial coefficients of the trend (lowest order first, pixel index)",
        **settings,
    }
    out = ds.copy()
    out["doppler_velocity"] = corrected
    out["doppler_trend"] = trend
    out["doppler_trend_coefficients"] = coeffs
    return out


# ----------------------------------------------------------------------------- all


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
        Fitted parameters.
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
    parts = [radiance(params, mask=mask)]
    widths = line_widths(
        params, log_t=log_t, instrumental_fwhm=instrumental_fwhm, nonthermal=nonthermal, mask=mask
    )
    parts.append(widths)
    vel = doppler_velocity(params, reference=doppler_reference, mask=mask)
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
