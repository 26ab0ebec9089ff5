"""Reading Level-3 FITS results: saffron_xr's own files and other tools' (generic)."""

from __future__ import annotations

import logging
import re

import astropy.units as u
import numpy as np
import xarray as xr
from astropy.io.fits.verify import VerifyError

from .._units import angstrom_factor
from ._l3_common import GAUSS, LETTERS, SPATIAL
from ._l3_wcs import wcs_world

log = logging.getLogger(__name__)


def read_saffron(hdul, res_hdu, meta) -> xr.Dataset:
    """One window of a file written by saffron_xr, exactly as written (from its metadata)."""
    results = np.asarray(res_hdu.data, dtype=np.float64)
    sigma = np.asarray(hdul[res_hdu.header["UNCEXT"]].data, dtype=np.float64)
    data_vars, coords = {}, {}
    for entry in meta["variables"]:
        dims, dtype, store = entry["dims"], np.dtype(entry["dtype"]), entry["store"]
        if store in ("results", "sigma"):
            cube = results if store == "results" else sigma
            stack = cube[entry["planes"]] / entry["scale"]  # (n, t, y, x)
            spatial = [d for d in SPATIAL if d in dims]
            lead = ["line"] if "line" in dims else []
            shape = [stack.shape[0]] if lead else []
            shape += [stack.shape[1 + SPATIAL.index(d)] for d in spatial]
            values = stack.reshape(shape) if lead else stack[0].reshape(shape)
            arr = xr.Variable(lead + spatial, values).transpose(*dims)
            values = arr.values.astype(dtype)
        elif store == "inline":
            values = np.asarray(entry["values"]).astype(dtype)
        else:
            raw = np.asarray(hdul[entry["hdu"]].data)
            if dtype.kind in "mM":
                values = raw.astype(np.int64).view(dtype)
            else:
                values = raw.astype(dtype)
        var = xr.Variable(dims, values, attrs=entry["attrs"])
        (data_vars if entry["kind"] == "data" else coords)[entry["name"]] = var
    return xr.Dataset(data_vars, coords=coords, attrs=meta["attrs"])


def _letters_of(header, n: int) -> list[str]:
    letters = [c for c in LETTERS if f"PNAME{n}{c}" in header or f"PUNIT{n}{c}" in header]
    if not letters:
        letters = list(LETTERS[: int(header.get(f"CMP_NP{n}", 0))])
    return letters


def _to_angstrom(values, unit: str) -> np.ndarray:
    factor = angstrom_factor(unit, default="nm")
    return values if factor is None else values * factor


def _our_unit(unit: str) -> str:
    try:
        if u.Unit(unit).is_equivalent(u.Unit("W m-2 sr-1 nm-1")):
            factor = float(u.Unit(unit).to(u.Unit("W m-2 sr-1 nm-1")))
            if abs(factor - 1.0) < 1e-12:
                return "W m-2 sr-1 nm-1"
    except ValueError:  # not a unit astropy knows: kept as written
        return unit
    return unit


def _wave_unit(hdul, h) -> str | None:
    """Unit of the fitted WAVE axis (that of the Gaussian function parameters), if known."""
    if "WAVEUNIT" in h:
        return f"1e{int(h['WAVEUNIT'])} m"
    name = str(h.get("DATAEXT", "")).strip()
    if name and ";" not in name and name in hdul:
        dh = hdul[name].header
        for i in range(1, int(dh.get("NAXIS", 0)) + 1):
            if str(dh.get(f"CTYPE{i}", "")).strip() == "WAVE":
                return str(dh.get(f"CUNIT{i}", "")).strip() or None
    return None


def _generic_coords(hdul, h, names: list, sizes) -> dict:
    """Line coords from the component names; hpln/hplt/time from the header's WCS.

    A WCS that cannot be evaluated is logged and its coordinates are left out.
    """
    nt, ny, nx = sizes
    ions, rests = [], []
    for name in names:
        m = re.match(r"^([a-z]{1,2}_\d+)\s+([0-9.]+)", name)
        ions.append(m.group(1) if m else "")
        rests.append(float(m.group(2)) if m else np.nan)
    coords = {
        "line": ("line", names),
        "ion": ("line", ions),
        "rest_wavelength": ("line", rests, {"units": "Angstrom"}),
    }
    try:
        lon, lat, tsec = wcs_world(h, (nt, ny, nx))
        coords["hpln"] = (("y", "x"), lon, {"units": "arcsec"})
        coords["hplt"] = (("y", "x"), lat, {"units": "arcsec"})
        ref = h.get("DATEREF") or h.get("DATE-BEG") or h.get("DATE-OBS")
        if ref:
            t = np.datetime64(str(ref).strip()) + np.round(tsec * 1e6).astype("timedelta64[us]")
            coords["time"] = ("time" if nt > 1 else "x", t.astype("datetime64[ns]"))
    except (ValueError, KeyError, TypeError, VerifyError) as exc:
        # wcslib's errors are ValueErrors (singular matrix, bad CTYPE, ...)
        log.warning(
            "%s: results extension %r: its WCS cannot be evaluated (%s: %s); the window is "
            "read without the hpln/hplt/time coordinates",
            hdul.filename() or "results file",
            str(h.get("EXTNAME", "")),
            type(exc).__name__,
            exc,
        )
    return coords


def read_generic(hdul, res_hdu) -> xr.Dataset:
    """One results extension of another tool's file, by the SOLARNET component keywords.

    Gaussian components give ``amplitude``/``centroid``/``width`` (Angstrom), polynomial ones
    ``background``, the last plane ``chi2``; coordinates come from the header's WCS (a WCS
    that cannot be evaluated is logged and the coordinates are left out).
    """
    h = res_hdu.header
    results = np.asarray(res_hdu.data, dtype=np.float64)
    if results.ndim != 4:
        raise ValueError(
            f"results extension {h.get('EXTNAME')!r} has {results.ndim} axes; expected 4 "
            "(x, y, time, parameter)"
        )
    unc = h.get("UNCEXT")
    sigma = np.asarray(hdul[unc].data, dtype=np.float64) if unc and unc in hdul else None
    nt, ny, nx = results.shape[1:]
    gauss = {k: [] for k in GAUSS}
    gauss_err = {k: [] for k in GAUSS}
    names, bg, bg_err, chi2 = [], [], [], None
    amp_unit = "W m-2 sr-1 nm-1"
    wave_unit = _wave_unit(hdul, h)
    plane = 0
    for n in range(1, int(h.get("ANA_NCMP", 0)) + 1):
        ctype = str(h.get(f"CMPTYP{n}", "")).strip()
        cname = str(h.get(f"CMPNAM{n}", f"component {n}")).strip()
        letters = _letters_of(h, n)
        if "chi" in cname.lower():
            chi2 = results[plane]
            plane += len(letters)
            continue
        for k, c in enumerate(letters):
            a = float(h.get(f"PTRA{n}{c}", 1.0))
            b = float(h.get(f"PTRB{n}{c}", 0.0))
            unit = str(h.get(f"PUNIT{n}{c}", "")).strip()
            val = results[plane] * a + b
            err = sigma[plane] * abs(a) if sigma is not None else np.full_like(val, np.nan)
            if ctype == "Gaussian" and k < 3:
                kind = GAUSS[k]
                if kind == "amplitude":
                    amp_unit = _our_unit(unit) or amp_unit
                elif wave_unit is not None:
                    val, err = _to_angstrom(val, wave_unit), _to_angstrom(err, wave_unit)
                elif a == 1.0 and b == 0.0:
                    val, err = _to_angstrom(val, unit), _to_angstrom(err, unit)
                else:  # transformed parameter of unknown unit: SPICE L2 wavelengths are nm
                    val, err = _to_angstrom(val, "nm"), _to_angstrom(err, "nm")
                gauss[kind].append(val)
                gauss_err[kind].append(err)
            elif ctype == "Polynomial":
                factor = 0.1**k  # per nm**k -> per Angstrom**k
                bg.append(val * factor)
                bg_err.append(err * factor)
            plane += 1
        if ctype == "Gaussian":
            names.append(cname)
    if chi2 is None and plane < results.shape[0]:
        chi2 = results[plane]

    def squeeze(arr):  # (n, t, y, x) -> dims
        dims = [d for d, s in zip(SPATIAL, (nt, ny, nx), strict=True) if d != "time" or s > 1]
        shape = [arr.shape[0]] + [{"time": nt, "y": ny, "x": nx}[d] for d in dims]
        return dims, arr.reshape(shape)

    data_vars = {}
    units = {"amplitude": amp_unit, "centroid": "Angstrom", "width": "Angstrom"}
    for kind in GAUSS:
        if gauss[kind]:
            dims, v = squeeze(np.stack(gauss[kind]))
            data_vars[kind] = (["line", *dims], v, {"units": units[kind]})
            dims, e = squeeze(np.stack(gauss_err[kind]))
            data_vars[f"{kind}_err"] = (["line", *dims], e, {"units": units[kind]})
    if bg:
        dims, v = squeeze(np.stack(bg))
        data_vars["background"] = (
            ["degree", *dims],
            v,
            {"units": amp_unit, "reference_wavelength": 0.0},
        )
        dims, e = squeeze(np.stack(bg_err))
        data_vars["background_err"] = (["degree", *dims], e, {"units": amp_unit})
    if chi2 is not None:
        dims, v = squeeze(chi2[None])
        data_vars["chi2"] = (dims, v[0], {"units": "1", "long_name": "reduced chi-squared"})

    coords = _generic_coords(hdul, h, names, (nt, ny, nx))
    attrs = {}
    for key in ("SPIOBSID", "RASTERNO", "STUDY", "DATE-OBS", "DETECTOR", "SLIT_WID"):
        if key in h:
            attrs[key] = h[key]
    attrs["EXTNAME"] = str(h.get("ORNAME") or h.get("PGEXTNAM") or h["EXTNAME"])
    attrs["EXTNAME"] = re.sub(r"\s+results$", "", attrs["EXTNAME"])
    if h.get("PARENT"):
        attrs["filename"] = str(h["PARENT"])
    attrs["header"] = h.tostring(sep="\n", padding=False)
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)
