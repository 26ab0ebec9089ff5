"""SOLARNET "Level P" / SPICE Level-3 style FITS export of fit results, and a reader.

Layout, per window (``E`` is the window's EXTNAME), following Appendix IX of the SOLARNET
metadata recommendations and the SPICE L3 files (the file in
``../shared/data/spice/reference`` is an example):

``E results``
    float64 cube, FITS axes ``(x, y, time, PARAMETER)`` (numpy ``(parameter, time, y, x)``;
    time has length 1 for rasters). Parameters: for every line a ``'Gaussian'`` component
    (amplitude in the data unit; position and sigma stored in Angstrom with ``PTRA = 0.1`` so
    that the function parameters are in nm, the unit of the L2 WAVE axis), then one
    ``'Polynomial'`` background component per wavelength segment (coefficients of
    ``lambda**0 .. lambda**degree`` with lambda in nm, converted from saffron_xr's
    ``(lambda - lambda_ref)**k`` Angstrom basis), then the reduced chi2 as the last plane.
    Header: ``SOLARNET = 1``, ``OBS_HDU = 2``, ``ANA_NCMP``, ``CMPTYPn``, ``CMPNAMn``,
    ``CMP_NPn``, ``CMPDESn``, ``PNAMEna``, ``PUNITna``, ``PDESCna``, ``PINITna``/``PMINna``/
    ``PMAXna`` (from the line model, function units), ``PCONSna``, ``PTRAna``, ``PTRBna``,
    ``WAVEUNIT = -9``, ``RESEXT``,
    ``UNCEXT``, ``DATAEXT`` (the data HDU when written, else the external L2 extension
    ``file.fits;EXTNAME``), ``PARENTXT``, ``XTYPE1 = 'WAVE'``, ``XDIMEN1 = 3``,
    ``CHISQAVG``, and the spatial/time WCS of the L2 window (axes 1, 2 and 4 of the L2 file
    become 1, 2 and 3; the parameter axis is ``CTYPE4 = 'PARAMETER'``), plus observer keywords.
    The first window's results are the primary HDU, as in the reference file.
``E sigma``
    Same shape and header: the 1-sigma errors (NaN for the chi2 plane).
``E data`` (only with ``data=``)
    The L2 radiance cube of the window with its L2 header.
``E <variable>`` and ``E saffron`` (saffron_xr extension, ignored by other tools)
    Every other variable and coordinate with spatial dims (background in its native basis,
    covariances, ``status``, ``n_iter``, ``n_valid``, ``hpln``, ``hplt``, ``time``, derived
    quantities...) as its own image, and a one-row table holding, as JSON, the dims, dtypes
    and attributes of every variable and the small coordinates, so :func:`open_l3_fits` gives
    back exactly the Dataset that was written.

:func:`open_l3_fits` also reads files written by other packages in this convention (no
``E saffron`` table): Gaussian components become ``amplitude``/``centroid``/``width``
(``PTRA``/``PTRB`` applied, nm converted to Angstrom), polynomial components ``background``
(absolute-wavelength basis, Angstrom), the last plane ``chi2``, and the coordinates come from
the header's WCS.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
import string
import warnings
from pathlib import Path

import astropy.units as u
import numpy as np
import xarray as xr
from astropy.io import fits

from .._units import angstrom_factor
from ._atomic import check_destination, write_atomically
from .netcdf import as_results_tree, dumps_tagged, loads_tagged
from .reader import window_node_name

__all__ = ["to_l3_fits", "open_l3_fits"]

_SPATIAL = ("time", "y", "x")
_GAUSS = ("amplitude", "centroid", "width")
_LETTERS = string.ascii_uppercase
_ANGSTROM_TO_NM = 0.1
_META_FORMAT = "saffron_xr.L3"
#: L2 axis -> results axis (the WAVE axis 3 is absorbed by the fit).
_AXIS_MAP = {1: 1, 2: 2, 4: 3}
_AXIS_KEYS = ("CTYPE", "CUNIT", "CNAME", "CRVAL", "CDELT", "CRPIX", "CRDER", "CSYER", "CWERR")
_COPY_KEYS = (
    "INSTRUME",
    "OBSRVTRY",
    "TELESCOP",
    "DETECTOR",
    "STUDYTYP",
    "STUDY",
    "OBS_MODE",
    "OBS_ID",
    "SPIOBSID",
    "RASTERNO",
    "NRASTERS",
    "SOOPNAME",
    "PURPOSE",
    "SLIT_ID",
    "SLIT_WID",
    "NBIN2",
    "NBIN3",
    "XPOSURE",
    "TELAPSE",
    "TIMESYS",
    "DATEREF",
    "DATE-BEG",
    "DATE-OBS",
    "DATE-AVG",
    "DATE-END",
    "OBT_BEG",
    "CROTA",
    "WAVEREF",
    "WAVEMIN",
    "WAVEMAX",
    "WINNO",
    "SPECSYS",
    "VELOSYS",
    "DSUN_OBS",
    "DSUN_AU",
    "RSUN_ARC",
    "RSUN_REF",
    "SOLAR_B0",
    "SOLAR_P0",
    "SOLAR_EP",
    "CAR_ROT",
    "HGLT_OBS",
    "HGLN_OBS",
    "CRLT_OBS",
    "CRLN_OBS",
    "HEEX_OBS",
    "HEEY_OBS",
    "HEEZ_OBS",
    "HCIX_OBS",
    "HCIY_OBS",
    "HCIZ_OBS",
    "HCIX_VOB",
    "HCIY_VOB",
    "HCIZ_VOB",
    "HAEX_OBS",
    "HAEY_OBS",
    "HAEZ_OBS",
    "HEQX_OBS",
    "HEQY_OBS",
    "HEQZ_OBS",
    "GSEX_OBS",
    "GSEY_OBS",
    "GSEZ_OBS",
    "OBS_VR",
    "EAR_TDEL",
    "SUN_TIME",
    "DATE_EAR",
    "DATE_SUN",
)
_STRUCTURAL = {
    "SIMPLE",
    "XTENSION",
    "BITPIX",
    "NAXIS",
    "EXTEND",
    "PCOUNT",
    "GCOUNT",
    "BSCALE",
    "BZERO",
    "CHECKSUM",
    "DATASUM",
    "EXTNAME",
}
_GAUSS_PARAMS = (
    ("Amplitude", "Peak spectral radiance of the Gaussian, in the units of the fitted data"),
    ("Position", "Centre of the Gaussian (vacuum wavelength), in the units of the WAVE axis"),
    ("Width", "Gaussian sigma (standard deviation, not FWHM), in the units of the WAVE axis"),
)


# ----------------------------------------------------------------------------- helpers


def _fits_unit(units: str) -> str:
    try:
        return u.Unit(units).to_string("fits")
    except ValueError:
        return units


def _factor(units: str | None, default: str, target: str) -> float:
    return float(u.Unit(units or default).to(u.Unit(target)))


def _spatial_sizes(ds: xr.Dataset) -> tuple[int, int, int]:
    return tuple(int(ds.sizes.get(d, 1)) for d in _SPATIAL)


def _cube(da: xr.DataArray, sizes) -> np.ndarray:
    """(time, y, x) float64 array of a DataArray whose dims are spatial only."""
    present = [d for d in _SPATIAL if d in da.dims]
    arr = np.asarray(da.transpose(*present).values, dtype=np.float64)
    return arr.reshape(sizes)


def _gauss_ok(ds: xr.Dataset, name: str) -> bool:
    if name not in ds.variables:
        return False
    dims = set(ds[name].dims)
    return "line" in dims and dims - {"line"} <= set(_SPATIAL)


def _line_model(ds: xr.Dataset) -> dict:
    text = ds.attrs.get("line_model")
    if not text:
        return {}
    try:
        model = json.loads(text) if isinstance(text, str) else dict(text)
    except (TypeError, ValueError):
        return {}
    return model if isinstance(model, dict) else {}


def _header_wavelength_middle(text) -> float | None:
    """Middle of the WAVE axis range (Angstrom) of an L2 window header, or None."""
    h = _header_from_text(text)
    if h is None or str(h.get("CTYPE3", "")).strip() != "WAVE" or "NAXIS3" not in h:
        return None
    try:
        mid = float(h["CRVAL3"]) + float(h["CDELT3"]) * (
            (1 + int(h["NAXIS3"])) / 2.0 - float(h["CRPIX3"])
        ) * float(h.get("PC3_3", 1.0))
        return mid * float(u.Unit(str(h.get("CUNIT3", "nm")).strip() or "nm").to(u.AA))
    except (KeyError, ValueError, TypeError):
        return None


def _background_reference(ds: xr.Dataset, data, n_segments: int, degree: int) -> np.ndarray:
    """Reference wavelength (Angstrom) of each background segment's polynomial."""
    for name in ("background_reference", "background_reference_wavelength"):
        if name in ds.variables:
            ref = np.atleast_1d(np.asarray(ds[name].values, dtype=float))
            if ref.size == n_segments:
                return ref
        if name in ds.attrs:
            ref = np.atleast_1d(np.asarray(ds.attrs[name], dtype=float))
            if ref.size == n_segments:
                return ref
    segments = _line_model(ds).get("segments")
    if segments and len(segments) == n_segments:
        return np.array([0.5 * (a + b) for a, b in segments], dtype=float)
    if data is not None and "wavelength" in data.coords and n_segments == 1:
        w = np.asarray(data["wavelength"].values, dtype=float)
        w = w[np.isfinite(w)]
        if w.size:
            return np.array([0.5 * (w.min() + w.max())])
    for source in (ds, data):
        if source is not None and n_segments == 1:
            mid = _header_wavelength_middle(source.attrs.get("header"))
            if mid is not None:
                return np.array([mid])
    if degree == 0:
        return np.zeros(n_segments)
    raise ValueError(
        "to_l3_fits: the background polynomial has degree > 0 but its reference wavelength is "
        "unknown (no 'background_reference' variable/attribute, no segments in the line model); "
        "pass data= (the fitted window, for its wavelength grid)"
    )


def _basis_matrix(ref_angstrom: float, degree: int) -> np.ndarray:
    """M with c = M b: b_k of (lambda_A - ref)^k -> c_j of lambda_nm^j."""
    s = ref_angstrom / 10.0
    m = np.zeros((degree + 1, degree + 1))
    for k in range(degree + 1):
        for j in range(k + 1):
            m[j, k] = 10.0**k * math.comb(k, j) * (-s) ** (k - j)
    return m


def _header_from_text(text) -> fits.Header | None:
    if not text or not isinstance(text, str):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fits.Header.fromstring(text, sep="\n")
    except Exception:
        return None


def _source_header(ds: xr.Dataset, data) -> fits.Header | None:
    hdr = _header_from_text(ds.attrs.get("header"))
    if hdr is None and data is not None:
        hdr = _header_from_text(data.attrs.get("header"))
    return hdr


def _wcs_world(header: fits.Header, sizes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
        lon = _cube(ds["hpln"].broadcast_like(ds["hplt"]), (1, ny, nx))[0]
        lat = _cube(ds["hplt"].broadcast_like(ds["hpln"]), (1, ny, nx))[0]
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


def _wcs_cards(ds: xr.Dataset, src: fits.Header | None, sizes) -> list[tuple]:
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
            lon, lat, _ = _wcs_world(probe, sizes)
            want_lon = _cube(ds["hpln"], (1, sizes[1], sizes[2]))[0] if ds["hpln"].ndim else None
            want_lat = _cube(ds["hplt"], (1, sizes[1], sizes[2]))[0] if ds["hplt"].ndim else None
            if (
                want_lon is not None
                and want_lat is not None
                and np.nanmax(np.abs(lon - want_lon)) < 1e-3
                and np.nanmax(np.abs(lat - want_lat)) < 1e-3
            ):
                return cards
        except Exception:  # the source WCS does not describe this grid: fit one below
            pass
    return _fitted_wcs(ds, sizes)


# ----------------------------------------------------------------------------- writing


def _param_cards(
    n: int, letter: str, name, unit, desc, init=None, lo=None, hi=None, cons=0, ptra=1.0
):
    cards = [
        (f"PNAME{n}{letter}", name, f"Name of parameter {letter}"),
        (f"PUNIT{n}{letter}", unit, f"Unit of parameter {letter}"),
        (f"PDESC{n}{letter}", desc, f"Description of parameter {letter}"),
    ]
    for key, value in (("PINIT", init), ("PMIN", lo), ("PMAX", hi)):
        if value is not None and np.isfinite(value):
            value = float(f"{float(value):.12g}")
            cards.append((f"{key}{n}{letter}", value, f"{key[1:]} of parameter {letter}"))
    cards += [
        (f"PTRA{n}{letter}", float(ptra), "Linear coefficient A in Lambda=PVAL*PTRA+PTRB"),
        (f"PTRB{n}{letter}", 0.0, "Linear coefficient B in Lambda=PVAL*PTRA+PTRB"),
        (f"PCONS{n}{letter}", int(cons), f"1 if parameter {letter} of component {n} is constant"),
    ]
    return cards


def _components(ds, model, amp_unit, bg_info):
    """Header cards describing the components, and the number of parameters."""
    lines = [str(v) for v in np.atleast_1d(ds["line"].values)]
    by_name = {ln.get("name"): ln for ln in model.get("lines", []) if isinstance(ln, dict)}
    fixed = {(f.get("line"), f.get("param")) for f in model.get("fixed", [])}
    ties = {(t.get("line"), t.get("param")): t for t in model.get("ties", [])}
    cards = []
    n = 0
    for line in lines:
        n += 1
        info = by_name.get(line, {})
        bounds = info.get("bounds", {})
        cards += [
            ("COMMENT", f"--- fit component {n}: Gaussian {line} ---"),
            (f"CMPTYP{n}", "Gaussian", f"Type of fit component {n}"),
            (f"CMPNAM{n}", line, f"Name of fit component {n}"),
            (f"CMP_NP{n}", 3, f"Number of parameters in fit component {n}"),
            (f"CMPSTR{n}", "g", f"cfit function string of component {n}"),
        ]
        tie_text = [
            f"{kind} tied to {t['to']} ({t['value']})"
            for kind in _GAUSS
            if (t := ties.get((line, kind)))
        ]
        if tie_text:
            cards.append((f"CMPDES{n}", "; ".join(tie_text), f"Ties of component {n}"))
        for k, kind in enumerate(_GAUSS):
            # PINIT/PMIN/PMAX are values of the function parameter (nm); the stored (nominal)
            # position and width are in Angstrom, PTRA = 0.1 converts them to nm
            scale = 1.0 if kind == "amplitude" else _ANGSTROM_TO_NM
            unit = _fits_unit(amp_unit) if kind == "amplitude" else "Angstrom"
            lo, hi = (list(bounds.get(kind) or []) + [None, None])[:2]
            init = info.get(kind)
            cards += _param_cards(
                n,
                _LETTERS[k],
                _GAUSS_PARAMS[k][0],
                unit,
                _GAUSS_PARAMS[k][1],
                None if init is None else init * scale,
                None if lo is None else lo * scale,
                None if hi is None else hi * scale,
                cons=(line, kind) in fixed,
                ptra=scale,
            )
    if bg_info is not None:
        degree, refs, segments = bg_info
        for s, ref in enumerate(refs):
            n += 1
            name = "background" if len(refs) == 1 else f"background segment {s}"
            rng = ""
            if segments:
                rng = f" for {segments[s][0]:g}-{segments[s][1]:g} Angstrom only"
            cards += [
                ("COMMENT", f"--- fit component {n}: Polynomial {name} ---"),
                (f"CMPTYP{n}", "Polynomial", f"Type of fit component {n}"),
                (f"CMPNAM{n}", name, f"Name of fit component {n}"),
                (f"CMP_NP{n}", degree + 1, f"Number of parameters in fit component {n}"),
                (f"CMPSTR{n}", f"p{degree}", f"cfit function string of component {n}"),
                (
                    f"CMPDES{n}",
                    f"Polynomial of degree {degree} in wavelength (nm){rng}; converted from "
                    f"saffron_xr's basis (lambda - {ref:.6f} Angstrom)**k",
                    f"Description of component {n}",
                ),
            ]
            for j in range(degree + 1):
                unit = _fits_unit(str(u.Unit(amp_unit) / u.nm**j)) if j else _fits_unit(amp_unit)
                cards += _param_cards(
                    n, _LETTERS[j], f"c{j}", unit, f"Coefficient of lambda**{j} (lambda in nm)"
                )
    return cards, n


def _saffron_store(ds: xr.Dataset) -> dict[str, str]:
    """Where each variable goes: 'results', 'sigma', 'inline' or 'hdu'."""
    store = {}
    for name, var in ds.variables.items():
        if name in _GAUSS and _gauss_ok(ds, name):
            store[name] = "results"
        elif name.endswith("_err") and name[:-4] in _GAUSS and _gauss_ok(ds, name):
            store[name] = "sigma"
        elif name == "chi2" and set(var.dims) <= set(_SPATIAL):
            store[name] = "results"
        elif not set(var.dims) & set(_SPATIAL):
            store[name] = "inline"
        else:
            store[name] = "hdu"
    return store


_SAFE_DTYPES = {
    "b": np.uint8,
    "i1": np.int16,
    "u1": np.uint8,
    "i2": np.int16,
    "u2": np.int32,
    "i4": np.int32,
    "u4": np.int64,
    "i8": np.int64,
    "f2": np.float32,
    "f4": np.float32,
    "f8": np.float64,
}


def _hdu_array(values: np.ndarray, name: str) -> np.ndarray:
    if values.dtype.kind in "mM":
        return values.astype("int64") if values.dtype.kind == "m" else values.view("int64")
    key = "b" if values.dtype.kind == "b" else f"{values.dtype.kind}{values.dtype.itemsize}"
    if key not in _SAFE_DTYPES:
        raise TypeError(
            f"to_l3_fits: variable {name!r} has dtype {values.dtype}, which cannot be written "
            "as a FITS image"
        )
    return values.astype(_SAFE_DTYPES[key])


def _window_hdus(ds: xr.Dataset, node_name: str, primary: bool, data, out_name: str):
    from .._meta import __version__

    if "amplitude" in ds.variables:
        extra = set(ds["amplitude"].dims) - {"line", *_SPATIAL}
        if extra:
            raise ValueError(
                f"to_l3_fits: window {node_name!r} has extra dims {sorted(extra)}; select one "
                "value of them first (e.g. .isel(level=0))"
            )
    ds = ds.compute()
    for name in _GAUSS:
        if not _gauss_ok(ds, name):
            raise ValueError(
                f"to_l3_fits: window {node_name!r} needs {name!r} with dims 'line' plus any of "
                f"{_SPATIAL}; found {ds[name].dims if name in ds.variables else 'nothing'}"
            )
    base = str(ds.attrs.get("EXTNAME", node_name))
    if isinstance(data, xr.Dataset):
        data_da = data["radiance"] if "radiance" in data else None
        data_attrs = data.attrs
    else:
        data_da = data
        data_attrs = data.attrs if data is not None else {}
    sizes = _spatial_sizes(ds)
    nt, ny, nx = sizes
    lines = [str(v) for v in np.atleast_1d(ds["line"].values)]
    amp_unit = str(ds["amplitude"].attrs.get("units", "W m-2 sr-1 nm-1"))
    wfac = _factor(ds["centroid"].attrs.get("units"), "Angstrom", "Angstrom")
    wfac_w = _factor(ds["width"].attrs.get("units"), "Angstrom", "Angstrom")
    model = _line_model(ds)

    planes, sigmas, plane_of = [], [], {}
    for il, _line in enumerate(lines):
        for kind, fac in zip(_GAUSS, (1.0, wfac, wfac_w), strict=True):
            plane_of.setdefault(kind, []).append(len(planes))
            planes.append(_cube(ds[kind].isel(line=il), sizes) * fac)
            err = f"{kind}_err"
            if err in ds.variables and _gauss_ok(ds, err):
                eunit = ds[err].attrs.get("units", ds[kind].attrs.get("units"))
                if kind == "amplitude":
                    efac = _factor(eunit, amp_unit, amp_unit)
                else:
                    efac = _factor(eunit, "Angstrom", "Angstrom")
                sigmas.append(_cube(ds[err].isel(line=il), sizes) * efac)
            else:
                sigmas.append(np.full(sizes, np.nan))

    bg_info = None
    bg = ds.get("background")
    if bg is not None and "degree" in bg.dims and set(bg.dims) <= {"degree", "segment", *_SPATIAL}:
        degree = bg.sizes["degree"] - 1
        nseg = bg.sizes.get("segment", 1)
        refs = _background_reference(ds, data_da if data_da is not None else data, nseg, degree)
        segments = model.get("segments")
        bfac = _factor(bg.attrs.get("units"), amp_unit, amp_unit) if bg.attrs else 1.0
        bg_err = ds.get("background_err")
        for s in range(nseg):
            b = bg.isel(segment=s) if "segment" in bg.dims else bg
            coef = np.stack([_cube(b.isel(degree=k), sizes) for k in range(degree + 1)]) * bfac
            m = _basis_matrix(float(refs[s]), degree)
            conv = np.tensordot(m, coef, axes=1)
            if bg_err is not None and bg_err.dims == bg.dims:
                e = bg_err.isel(segment=s) if "segment" in bg_err.dims else bg_err
                var = np.stack([_cube(e.isel(degree=k), sizes) for k in range(degree + 1)]) ** 2
                conv_err = np.sqrt(np.tensordot(m**2, var * bfac**2, axes=1))
            else:
                conv_err = np.full_like(conv, np.nan)
            planes += list(conv)
            sigmas += list(conv_err)
        bg_info = (degree, [float(r) for r in refs], segments)
    chi2 = ds.get("chi2")
    if chi2 is not None and set(chi2.dims) <= set(_SPATIAL):
        planes.append(_cube(chi2, sizes))
        chisqavg = float(np.nanmean(planes[-1])) if np.isfinite(planes[-1]).any() else np.nan
    else:
        planes.append(np.full(sizes, np.nan))
        chisqavg = np.nan
    sigmas.append(np.full(sizes, np.nan))
    results = np.stack(planes).astype(np.float64)
    sigma = np.stack(sigmas).astype(np.float64)

    comp_cards, ncomp = _components(ds, model, amp_unit, bg_info)
    src = _source_header(ds, data_da if data_da is not None else data)
    filename = ds.attrs.get("filename", data_attrs.get("filename"))
    filename = str(filename).split(",")[0].strip() if filename else None
    resext, uncext = f"{base} results", f"{base} sigma"
    dataext_name = f"{base} data"
    external = f"{filename};{base}" if filename else ""
    meta_ext = f"{base} saffron"
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")

    head = [
        ("DATE", now, "Date and time of FITS file creation"),
        ("EXTNAME", resext, "Extension name"),
        ("FILENAME", out_name, "Filename"),
        ("SOLARNET", 1, "Fully SOLARNET compliant"),
        ("OBS_HDU", 2, "HDU contains SOLARNET Type P data"),
        ("ORNAME", base, "Original extension name"),
        ("LEVEL", "L3", "Data processing level"),
        ("CREATOR", f"saffron_xr {__version__}", "Software that created this file"),
        ("LONGSTRN", "OGIP 1.0", "The OGIP long string convention may be used"),
    ]
    if filename:
        head += [
            ("PARENT", filename, "Parent (L2) file"),
            ("PARENTXT", external, "Parent file;extension name"),
        ]
    head += [
        ("COMMENT", "--- keywords describing the whole analysis ---"),
        ("ANA_NCMP", ncomp, "Number of fit components"),
        ("RESEXT", resext, "Extension name of results"),
        ("UNCEXT", uncext, "Extension name of uncertainties"),
        (
            "DATAEXT",
            dataext_name if data_da is not None else external,
            "Extension name of data",
        ),
        ("XTYPE1", "WAVE", "Type of 1st coordinate absorbed by analysis"),
        ("XDIMEN1", 3, "Dimension number of 1st dimension absorbed"),
        ("WAVEUNIT", -9, "Fitted wavelengths in 10**WAVEUNIT m (nm)"),
        ("ANA_MISS", "NaN", "Missing value in results"),
        ("CHISQAVG", chisqavg if np.isfinite(chisqavg) else "NaN", "Average reduced chi2"),
        ("SXMETA", meta_ext, "saffron_xr metadata table"),
        (
            "COMMENT",
            "The last plane of the PARAMETER axis is the reduced chi2 of the fit.",
        ),
        (
            "COMMENT",
            "Gaussian positions and widths are stored in Angstrom; PTRA = 0.1 gives nm.",
        ),
    ]
    head += comp_cards
    wcs = _wcs_cards(ds, src, sizes)
    wcs += [
        ("CTYPE4", "PARAMETER"),
        ("CNAME4", "Fit parameter"),
        ("CUNIT4", ""),
        ("CRVAL4", 1.0),
        ("CDELT4", 1.0),
        ("CRPIX4", 1.0),
    ]
    observer = []
    source_keys = src if src is not None else ds.attrs
    for key in _COPY_KEYS:
        if key in source_keys and key not in {c[0] for c in wcs}:
            val = source_keys[key]
            if isinstance(val, np.generic):
                val = val.item()
            if isinstance(val, (str, int, float, bool)):
                observer.append((key, val))
    body = [("BTYPE", ""), ("BUNIT", ""), ("COMMENT", "--- WCS ---"), *wcs, *observer]

    def header(extname):
        h = fits.Header()
        for card in head + body:
            if card[0] == "EXTNAME":
                card = ("EXTNAME", extname, card[2])
            h.append(fits.Card(*card), end=True)
        return h

    res_hdu_cls = fits.PrimaryHDU if primary else fits.ImageHDU
    hdus = [
        res_hdu_cls(data=results, header=header(resext)),
        fits.ImageHDU(data=sigma, header=header(uncext)),
    ]
    if data_da is not None:
        hdus.append(_data_hdu(data_da, data_attrs, dataext_name))

    store = _saffron_store(ds)
    variables = []
    for name in list(ds.data_vars) + list(ds.coords):
        var = ds.variables[name]
        entry = {
            "name": str(name),
            "kind": "data" if name in ds.data_vars else "coord",
            "dims": [str(d) for d in var.dims],
            "dtype": str(var.dtype),
            "attrs": var.attrs,
            "store": store[name],
        }
        if store[name] == "results":
            entry["planes"] = plane_of.get(name, [len(planes) - 1])
            entry["scale"] = {"amplitude": 1.0, "centroid": wfac, "width": wfac_w}.get(name, 1.0)
        elif store[name] == "sigma":
            kind = name[:-4]
            entry["planes"] = plane_of[kind]
            unit = ds[name].attrs.get("units", ds[kind].attrs.get("units"))
            if kind == "amplitude":
                entry["scale"] = _factor(unit, amp_unit, amp_unit)
            else:
                entry["scale"] = _factor(unit, "Angstrom", "Angstrom")
        elif store[name] == "inline":
            entry["values"] = np.asarray(var.values)
        else:
            hname = f"{base} {name}"
            entry["hdu"] = hname
            h = fits.Header()
            h["SXVAR"] = (str(name), "saffron_xr variable name")
            h["SXDIMS"] = (json.dumps(entry["dims"]), "dims, numpy order")
            h["RESEXT"] = (resext, "Extension name of results")
            h["EXTNAME"] = hname
            hdus.append(fits.ImageHDU(data=_hdu_array(np.asarray(var.values), name), header=h))
        variables.append(entry)
    meta = {
        "format": _META_FORMAT,
        "version": 1,
        "window": node_name,
        "attrs": ds.attrs,
        "variables": variables,
    }
    text = dumps_tagged(meta)
    col = fits.Column(name="json", format=f"{max(len(text), 1)}A", array=np.array([text]))
    table = fits.BinTableHDU.from_columns([col])
    table.header["EXTNAME"] = meta_ext
    table.header["RESEXT"] = (resext, "Extension name of results")
    hdus.append(table)
    return hdus


def _data_hdu(data: xr.DataArray, attrs, extname: str) -> fits.ImageHDU:
    dims = data.dims
    if set(dims) == {"y", "x", "wavelength"}:
        arr = np.asarray(data.transpose("wavelength", "y", "x").values)[None]
    elif set(dims) == {"time", "y", "wavelength"}:
        arr = np.asarray(data.transpose("time", "wavelength", "y").values)[..., None]
    else:
        raise ValueError(
            f"to_l3_fits: data= must have dims (y, x, wavelength) or (time, y, wavelength), "
            f"got {dims}"
        )
    h = _header_from_text(attrs.get("header") or data.attrs.get("header")) or fits.Header()
    out = fits.Header()
    for card in h.cards:
        if card.keyword in _STRUCTURAL or card.keyword.startswith("NAXIS"):
            continue
        if card.keyword in ("COMMENT", "HISTORY", ""):
            continue
        out.append(card, end=True)
    out["EXTNAME"] = extname
    return fits.ImageHDU(data=arr.astype(np.float32), header=out)


def to_l3_fits(results, path, *, data=None, overwrite: bool = True) -> Path:
    """Write fit results in the SOLARNET / SPICE Level-3 FITS convention, atomically.

    This function computes (it loads each window's results to write them).

    Parameters
    ----------
    results : xarray.Dataset or xarray.DataTree
        Parameter Dataset of one window, or a DataTree of per-window results (every node
        with an ``amplitude`` variable is a window).
    path : str or path-like
        Output file (its folder must exist).
    data : xarray.Dataset, xarray.DataArray or xarray.DataTree, optional
        The fitted L2 window(s), as from :func:`saffron_xr.open_spice`: written as the
        ``DATAEXT`` data HDU of each window (matched by node name for a DataTree), and used
        for the background's reference wavelength and the L2 header (WCS, observer keywords)
        when the results do not carry them. Without it, ``DATAEXT`` links to the external L2
        extension (``file.fits;EXTNAME``).
    overwrite : bool, default True
        Replace an existing file (atomically); if False, raise :class:`FileExistsError`.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    path = check_destination(path, overwrite)
    tree = as_results_tree(results)
    windows = [n for n in tree.subtree if "amplitude" in n.dataset.variables]
    if not windows:
        raise ValueError("to_l3_fits: no window with an 'amplitude' variable in the results")
    hdus = []
    for i, node in enumerate(windows):
        if isinstance(data, xr.DataTree):
            d = data[node.name].to_dataset() if node.name in data.children else None
        elif data is not None:
            if len(windows) > 1:
                raise ValueError(
                    "to_l3_fits: data= for several windows must be a DataTree with the same "
                    "node names"
                )
            d = data
        else:
            d = None
        hdus += _window_hdus(node.to_dataset(), node.name or "window", i == 0, d, path.name)
    names = [h.name for h in hdus]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"to_l3_fits: two windows give the same extension names {dupes}")
    for hdu in hdus:
        _shorten_comments(hdu.header)
    return write_atomically(
        path,
        lambda part: fits.HDUList(hdus).writeto(part, output_verify="exception", checksum=True),
    )


def _shorten_comments(header) -> None:
    """Cut card comments so that each card fits in 80 characters (values are never cut)."""
    for card in header.cards:
        if card.keyword in ("COMMENT", "HISTORY", "") or not card.comment:
            continue
        value = fits.Card(card.keyword, card.value).image.rstrip()
        room = 80 - len(value) - 3  # " / "
        if len(card.comment) > room:
            header.comments[card.keyword] = card.comment[: max(room, 0)]


# ----------------------------------------------------------------------------- reading


def _read_saffron(hdul, res_hdu, meta) -> xr.Dataset:
    results = np.asarray(res_hdu.data, dtype=np.float64)
    sigma = np.asarray(hdul[res_hdu.header["UNCEXT"]].data, dtype=np.float64)
    data_vars, coords = {}, {}
    for entry in meta["variables"]:
        dims, dtype, store = entry["dims"], np.dtype(entry["dtype"]), entry["store"]
        if store in ("results", "sigma"):
            cube = results if store == "results" else sigma
            stack = cube[entry["planes"]] / entry["scale"]  # (n, t, y, x)
            spatial = [d for d in _SPATIAL if d in dims]
            lead = ["line"] if "line" in dims else []
            shape = [stack.shape[0]] if lead else []
            shape += [stack.shape[1 + _SPATIAL.index(d)] for d in spatial]
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
    letters = [c for c in _LETTERS if f"PNAME{n}{c}" in header or f"PUNIT{n}{c}" in header]
    if not letters:
        letters = list(_LETTERS[: int(header.get(f"CMP_NP{n}", 0))])
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
    except ValueError:
        pass
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


def _read_generic(hdul, res_hdu) -> xr.Dataset:
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
    gauss = {k: [] for k in _GAUSS}
    gauss_err = {k: [] for k in _GAUSS}
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
                kind = _GAUSS[k]
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
        dims = [d for d, s in zip(_SPATIAL, (nt, ny, nx), strict=True) if d != "time" or s > 1]
        shape = [arr.shape[0]] + [{"time": nt, "y": ny, "x": nx}[d] for d in dims]
        return dims, arr.reshape(shape)

    data_vars = {}
    units = {"amplitude": amp_unit, "centroid": "Angstrom", "width": "Angstrom"}
    for kind in _GAUSS:
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
        lon, lat, tsec = _wcs_world(h, (nt, ny, nx))
        coords["hpln"] = (("y", "x"), lon, {"units": "arcsec"})
        coords["hplt"] = (("y", "x"), lat, {"units": "arcsec"})
        ref = h.get("DATEREF") or h.get("DATE-BEG") or h.get("DATE-OBS")
        if ref:
            t = np.datetime64(str(ref).strip()) + np.round(tsec * 1e6).astype("timedelta64[us]")
            coords["time"] = ("time" if nt > 1 else "x", t.astype("datetime64[ns]"))
    except Exception:  # a header without a usable WCS: no coordinates
        pass
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


def open_l3_fits(path) -> xr.DataTree:
    """Read a SOLARNET / SPICE Level-3 style results file into a DataTree.

    Files written by :func:`to_l3_fits` come back identical to what was written. Files
    written by other tools in the convention are read generically (see the module docstring).
    This function reads the whole file into memory (results files are small: a few planes
    per line).

    Parameters
    ----------
    path : str or path-like
        The results file.

    Returns
    -------
    xarray.DataTree
        One child per results extension, named from its original EXTNAME.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        hdul = fits.open(path, memmap=False)
    except OSError as exc:
        raise ValueError(f"{path}: not a FITS file ({exc})") from exc
    with hdul:
        nodes = {}
        for hdu in hdul:
            h = hdu.header
            if "ANA_NCMP" not in h or hdu.data is None:
                continue
            if str(h.get("RESEXT", h.get("EXTNAME", ""))).strip().lower() != (
                str(h.get("EXTNAME", "")).strip().lower()
            ):
                continue
            meta_name = h.get("SXMETA")
            if meta_name and meta_name in hdul:
                text = str(hdul[meta_name].data["json"][0])
                meta = loads_tagged(text)
                if meta.get("format") != _META_FORMAT:
                    raise ValueError(f"{path}: unknown saffron_xr metadata format")
                name, ds = meta["window"], _read_saffron(hdul, hdu, meta)
            else:
                try:
                    ds = _read_generic(hdul, hdu)
                except ValueError as exc:
                    raise ValueError(f"{path}: {exc}") from exc
                name = window_node_name(ds.attrs["EXTNAME"])
            nodes[f"/{name}"] = ds
        if not nodes:
            raise ValueError(
                f"{path}: no results extension (ANA_NCMP keyword with EXTNAME == RESEXT) found"
            )
    return xr.DataTree.from_dict(nodes)
