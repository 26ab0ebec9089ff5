"""The helioprojective/time WCS of Level-3 results: copied from L2, fitted, or evaluated."""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import xarray as xr
from astropy.io import fits
from astropy.io.fits.verify import VerifyError

from ._l3_common import cube

log = logging.getLogger(__name__)

#: L2 axis -> results axis (the WAVE axis 3 is absorbed by the fit).
_AXIS_MAP = {1: 1, 2: 2, 4: 3}
_AXIS_KEYS = ("CTYPE", "CUNIT", "CNAME", "CRVAL", "CDELT", "CRPIX", "CRDER", "CSYER", "CWERR")


def wcs_world(header: fits.Header, sizes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """hpln, hplt (arcsec, shape (y, x)) and seconds (per x, or per t) from a results header."""
    from astropy.wcs import WCS

    nt, ny, nx = sizes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w = WCS(header, naxis=4, fix=False)
    ix, iy = np.meshgrid(np.arange(nx, dtype=float), np.arange(ny, dtype=float))
    pix = np.stack([ix.ravel(), iy.ravel(), np.zeros(ix.size), np.zeros(ix.size)], -1)
    world = w.wcs_pix2world(pix, 0)
    lon = ((world[:, 0] + 180.0) % 360.0 - 180.0) * 3600.0
    lat = world[:, 1] * 3600.0
    if nt > 1:
        tp = np.stack([np.zeros(nt), np.zeros(nt), np.arange(nt, dtype=float), np.zeros(nt)], -1)
    else:
        tp = np.stack([np.arange(nx, dtype=float), np.zeros(nx), np.zeros(nx), np.zeros(nx)], -1)
    tsec = w.wcs_pix2world(tp, 0)[:, 2]
    return lon.reshape(ny, nx), lat.reshape(ny, nx), tsec


def _copied_wcs(src: fits.Header) -> list[tuple]:
    cards = []
    for key in ("WCSNAME", "LONPOLE", "LATPOLE"):
        if key in src:
            cards.append((key, src[key]))
    for old, new in _AXIS_MAP.items():
        for key in _AXIS_KEYS:
            if f"{key}{old}" in src:
                cards.append((f"{key}{new}", src[f"{key}{old}"]))
    for i, j in ((a, b) for a in _AXIS_MAP for b in _AXIS_MAP):
        key = f"PC{i}_{j}"
        if key in src:
            cards.append((f"PC{_AXIS_MAP[i]}_{_AXIS_MAP[j]}", src[key]))
    return cards


def _fitted_wcs(ds: xr.Dataset, sizes) -> list[tuple]:
    """An affine helioprojective WCS fitted to the ``hpln``/``hplt`` coordinates."""
    nt, ny, nx = sizes
    cards = [("WCSNAME", "Helioprojective-cartesian")]
    crpix1, crpix2 = (nx + 1) / 2.0, (ny + 1) / 2.0
    if "hpln" in ds.coords and "hplt" in ds.coords and set(ds["hpln"].dims) <= {"y", "x"}:
        lon = cube(ds["hpln"].broadcast_like(ds["hplt"]), (1, ny, nx))[0]
        lat = cube(ds["hplt"].broadcast_like(ds["hpln"]), (1, ny, nx))[0]
        ix, iy = np.meshgrid(np.arange(1, nx + 1.0) - crpix1, np.arange(1, ny + 1.0) - crpix2)
        a = np.stack([np.ones(ix.size), ix.ravel(), iy.ravel()], -1)
        ok = np.isfinite(lon.ravel()) & np.isfinite(lat.ravel())
        cl = np.linalg.lstsq(a[ok], lon.ravel()[ok], rcond=None)[0]
        ct = np.linalg.lstsq(a[ok], lat.ravel()[ok], rcond=None)[0]
        cd1 = float(ds.attrs.get("CDELT1", 0) or 0) or float(math.hypot(cl[1], ct[1])) or 1.0
        cd2 = float(ds.attrs.get("CDELT2", 0) or 0) or float(math.hypot(cl[2], ct[2])) or 1.0
        if nx == 1:
            cd1 = float(ds.attrs.get("CDELT1", 0) or 0) or 1.0
        cards += [
            ("CTYPE1", "HPLN-TAN"),
            ("CUNIT1", "arcsec"),
            ("CRVAL1", float(cl[0])),
            ("CDELT1", cd1),
            ("CRPIX1", crpix1),
            ("CTYPE2", "HPLT-TAN"),
            ("CUNIT2", "arcsec"),
            ("CRVAL2", float(ct[0])),
            ("CDELT2", cd2),
            ("CRPIX2", crpix2),
            ("PC1_1", float(cl[1]) / cd1 if nx > 1 else 1.0),
            ("PC1_2", float(cl[2]) / cd1),
            ("PC2_1", float(ct[1]) / cd2 if nx > 1 else 0.0),
            ("PC2_2", float(ct[2]) / cd2),
        ]
    else:
        cards += [
            ("CTYPE1", "PIXEL"),
            ("CRVAL1", 1.0),
            ("CDELT1", 1.0),
            ("CRPIX1", 1.0),
            ("CTYPE2", "PIXEL"),
            ("CRVAL2", 1.0),
            ("CDELT2", 1.0),
            ("CRPIX2", 1.0),
        ]
    cards += [("CTYPE3", "UTC"), ("CUNIT3", "s"), ("CRPIX3", 1.0)]
    if "time" in ds.coords and ds["time"].dtype.kind == "M" and ds["time"].size:
        times = np.asarray(ds["time"].values).ravel()
        t0 = times[0]
        sec = (times - t0) / np.timedelta64(1, "s")
        cards.append(("DATEREF", str(np.datetime_as_string(t0, unit="ms"))))
        if ds["time"].dims == ("x",) and nx > 1:
            slope = float(np.polyfit(np.arange(nx, dtype=float), sec.astype(float), 1)[0])
            cards += [("CRVAL3", slope * (crpix1 - 1)), ("CDELT3", 1.0), ("PC3_1", slope)]
        elif ds["time"].dims == ("time",) and nt > 1:
            step = float(np.polyfit(np.arange(nt, dtype=float), sec.astype(float), 1)[0])
            cards += [("CRVAL3", 0.0), ("CDELT3", step or 1.0)]
        else:
            cards += [("CRVAL3", 0.0), ("CDELT3", 1.0)]
    else:
        cards += [("CRVAL3", 0.0), ("CDELT3", 1.0)]
    cards.append(("COMMENT", "saffron_xr: spatial WCS fitted to the hpln/hplt coordinates"))
    return cards


def wcs_cards(ds: xr.Dataset, src: fits.Header | None, sizes) -> list[tuple]:
    """WCS cards of the results cube: the L2 window's when they give the results' hpln/hplt.

    Otherwise (a cut-out, binned or rebuilt grid, or no L2 header) an affine WCS fitted to
    the ``hpln``/``hplt`` coordinates (:func:`_fitted_wcs`); the switch is logged.
    """
    if src is not None and all(f"CTYPE{i}" in src for i in (1, 2)):
        cards = _copied_wcs(src)
        if "hpln" not in ds.coords or "hplt" not in ds.coords:
            return cards
        if not set(ds["hpln"].dims) <= {"y", "x"} or not set(ds["hplt"].dims) <= {"y", "x"}:
            return cards
        probe = fits.Header()
        for key, value in cards:
            probe[key] = value
        probe["CTYPE4"], probe["CRVAL4"], probe["CDELT4"], probe["CRPIX4"] = "PARAMETER", 1, 1, 1
        for k in range(1, 5):
            probe[f"NAXIS{k}"] = [sizes[2], sizes[1], sizes[0], 1][k - 1]
        try:
            lon, lat, _ = wcs_world(probe, sizes)
            want_lon = cube(ds["hpln"], (1, sizes[1], sizes[2]))[0] if ds["hpln"].ndim else None
            want_lat = cube(ds["hplt"], (1, sizes[1], sizes[2]))[0] if ds["hplt"].ndim else None
            if (
                want_lon is not None
                and want_lat is not None
                and np.nanmax(np.abs(lon - want_lon)) < 1e-3
                and np.nanmax(np.abs(lat - want_lat)) < 1e-3
            ):
                return cards
            log.info(
                "window %r: the L2 WCS does not give the results' hpln/hplt (a cut-out or "
                "binned grid); writing a WCS fitted to them instead",
                ds.attrs.get("EXTNAME", ""),
            )
        except (ValueError, KeyError, TypeError, VerifyError) as exc:
            # wcslib's errors are ValueErrors (singular matrix, bad CTYPE, ...)
            log.warning(
                "window %r: the L2 WCS cannot be evaluated on the results grid (%s: %s); "
                "writing a WCS fitted to hpln/hplt instead",
                ds.attrs.get("EXTNAME", ""),
                type(exc).__name__,
                exc,
            )
    return _fitted_wcs(ds, sizes)
