"""Writing one window's fit results as Level-3 FITS HDUs (see :mod:`saffron_xr.io.l3fits`)."""

from __future__ import annotations

import json
import logging
import math
import warnings

import astropy.units as u
import numpy as np
import xarray as xr
from astropy.io import fits
from astropy.io.fits.verify import VerifyError

from ._l3_cards import (
    PARAMETER_AXIS_CARDS,
    ExtensionNames,
    analysis_cards,
    component_cards,
    observer_cards,
)
from ._l3_common import GAUSS, META_FORMAT, SPATIAL, cube
from ._l3_wcs import wcs_cards
from .netcdf import dumps_tagged

log = logging.getLogger(__name__)

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


def _factor(units: str | None, default: str, target: str) -> float:
    return float(u.Unit(units or default).to(u.Unit(target)))


def _spatial_sizes(ds: xr.Dataset) -> tuple[int, int, int]:
    return tuple(int(ds.sizes.get(d, 1)) for d in SPATIAL)


def _gauss_ok(ds: xr.Dataset, name: str) -> bool:
    if name not in ds.variables:
        return False
    dims = set(ds[name].dims)
    return "line" in dims and dims - {"line"} <= set(SPATIAL)


def _line_model(ds: xr.Dataset) -> dict:
    """The window's line model (``line_model`` attr, JSON) as a dict; {} if absent or unreadable."""
    text = ds.attrs.get("line_model")
    if not text:
        return {}
    try:
        model = json.loads(text) if isinstance(text, str) else dict(text)
    except (TypeError, ValueError) as exc:
        log.warning(
            "window %r: its 'line_model' attribute cannot be read (%s: %s); the component "
            "start values, bounds and ties are left out of the header",
            ds.attrs.get("EXTNAME", ""),
            type(exc).__name__,
            exc,
        )
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
    """The FITS header of card text (one card a line), or None (no text, or unparsable: logged)."""
    if not text or not isinstance(text, str):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fits.Header.fromstring(text, sep="\n")
    except (ValueError, VerifyError) as exc:
        log.warning(
            "a 'header' attribute cannot be parsed as FITS cards (%s: %s); its keywords "
            "(WCS, observer) are not used",
            type(exc).__name__,
            exc,
        )
        return None


def _source_header(ds: xr.Dataset, data) -> fits.Header | None:
    hdr = _header_from_text(ds.attrs.get("header"))
    if hdr is None and data is not None:
        hdr = _header_from_text(data.attrs.get("header"))
    return hdr


def _saffron_store(ds: xr.Dataset) -> dict[str, str]:
    """Where each variable goes: 'results', 'sigma', 'inline' or 'hdu'."""
    store = {}
    for name, var in ds.variables.items():
        if name in GAUSS and _gauss_ok(ds, name):
            store[name] = "results"
        elif name.endswith("_err") and name[:-4] in GAUSS and _gauss_ok(ds, name):
            store[name] = "sigma"
        elif name == "chi2" and set(var.dims) <= set(SPATIAL):
            store[name] = "results"
        elif not set(var.dims) & set(SPATIAL):
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


def _checked_window(ds: xr.Dataset, node_name: str) -> xr.Dataset:
    """The window's results, loaded, after checking they have the Gaussian parameters."""
    if "amplitude" in ds.variables:
        extra = set(ds["amplitude"].dims) - {"line", *SPATIAL}
        if extra:
            raise ValueError(
                f"to_l3_fits: window {node_name!r} has extra dims {sorted(extra)}; select one "
                "value of them first (e.g. .isel(level=0))"
            )
    ds = ds.compute()
    for name in GAUSS:
        if not _gauss_ok(ds, name):
            raise ValueError(
                f"to_l3_fits: window {node_name!r} needs {name!r} with dims 'line' plus any of "
                f"{SPATIAL}; found {ds[name].dims if name in ds.variables else 'nothing'}"
            )
    return ds


def _gaussian_planes(ds: xr.Dataset, sizes, amp_unit: str, scales: dict):
    """Result and sigma planes of the Gaussian parameters, and the planes of each parameter."""
    planes, sigmas, plane_of = [], [], {}
    for il in range(ds.sizes["line"] if "line" in ds.dims else 1):
        for kind in GAUSS:
            plane_of.setdefault(kind, []).append(len(planes))
            planes.append(cube(ds[kind].isel(line=il), sizes) * scales[kind])
            err = f"{kind}_err"
            if err in ds.variables and _gauss_ok(ds, err):
                sigmas.append(cube(ds[err].isel(line=il), sizes) * _err_scale(ds, kind, amp_unit))
            else:
                sigmas.append(np.full(sizes, np.nan))
    return planes, sigmas, plane_of


def _err_scale(ds: xr.Dataset, kind: str, amp_unit: str) -> float:
    """Factor from the unit of ``{kind}_err`` to the stored unit (data unit or Angstrom)."""
    unit = ds[f"{kind}_err"].attrs.get("units", ds[kind].attrs.get("units"))
    if kind == "amplitude":
        return _factor(unit, amp_unit, amp_unit)
    return _factor(unit, "Angstrom", "Angstrom")


def _background_planes(ds: xr.Dataset, data, sizes, amp_unit: str, model: dict):
    """Result and sigma planes of the background polynomials (lambda_nm**j basis).

    Returns ``(planes, sigmas, bg_info)`` with ``bg_info = (degree, references, segments)``,
    or empty lists and None when the results have no background.
    """
    bg = ds.get("background")
    if (
        bg is None
        or "degree" not in bg.dims
        or not set(bg.dims) <= {"degree", "segment", *SPATIAL}
    ):
        return [], [], None
    planes, sigmas = [], []
    degree = bg.sizes["degree"] - 1
    nseg = bg.sizes.get("segment", 1)
    refs = _background_reference(ds, data, nseg, degree)
    bfac = _factor(bg.attrs.get("units"), amp_unit, amp_unit) if bg.attrs else 1.0
    bg_err = ds.get("background_err")
    for s in range(nseg):
        b = bg.isel(segment=s) if "segment" in bg.dims else bg
        coef = np.stack([cube(b.isel(degree=k), sizes) for k in range(degree + 1)]) * bfac
        m = _basis_matrix(float(refs[s]), degree)
        conv = np.tensordot(m, coef, axes=1)
        if bg_err is not None and bg_err.dims == bg.dims:
            e = bg_err.isel(segment=s) if "segment" in bg_err.dims else bg_err
            var = np.stack([cube(e.isel(degree=k), sizes) for k in range(degree + 1)]) ** 2
            conv_err = np.sqrt(np.tensordot(m**2, var * bfac**2, axes=1))
        else:
            conv_err = np.full_like(conv, np.nan)
        planes += list(conv)
        sigmas += list(conv_err)
    return planes, sigmas, (degree, [float(r) for r in refs], model.get("segments"))


def _window_parts(data):
    """The radiance DataArray (or None) and the attrs of the ``data=`` argument of a window."""
    if isinstance(data, xr.Dataset):
        return (data["radiance"] if "radiance" in data else None), data.attrs
    return data, (data.attrs if data is not None else {})


def window_hdus(ds: xr.Dataset, node_name: str, primary: bool, data, out_name: str):
    """The HDUs of one window: results, sigma, the optional data, extra variables, metadata."""
    ds = _checked_window(ds, node_name)
    base = str(ds.attrs.get("EXTNAME", node_name))
    data_da, data_attrs = _window_parts(data)
    source = data_da if data_da is not None else data
    sizes = _spatial_sizes(ds)
    amp_unit = str(ds["amplitude"].attrs.get("units", "W m-2 sr-1 nm-1"))
    scales = {
        "amplitude": 1.0,
        "centroid": _factor(ds["centroid"].attrs.get("units"), "Angstrom", "Angstrom"),
        "width": _factor(ds["width"].attrs.get("units"), "Angstrom", "Angstrom"),
    }
    model = _line_model(ds)

    planes, sigmas, plane_of = _gaussian_planes(ds, sizes, amp_unit, scales)
    bg_planes, bg_sigmas, bg_info = _background_planes(ds, source, sizes, amp_unit, model)
    planes += bg_planes
    sigmas += bg_sigmas
    chi2 = ds.get("chi2")
    if chi2 is not None and set(chi2.dims) <= set(SPATIAL):
        planes.append(cube(chi2, sizes))
        chisqavg = float(np.nanmean(planes[-1])) if np.isfinite(planes[-1]).any() else np.nan
    else:
        planes.append(np.full(sizes, np.nan))
        chisqavg = np.nan
    sigmas.append(np.full(sizes, np.nan))
    results = np.stack(planes).astype(np.float64)
    sigma = np.stack(sigmas).astype(np.float64)

    comp_cards, ncomp = component_cards(ds, model, amp_unit, bg_info)
    src = _source_header(ds, source)
    filename = ds.attrs.get("filename", data_attrs.get("filename"))
    names = ExtensionNames(base, str(filename).split(",")[0].strip() if filename else None)
    head = analysis_cards(names, out_name, ncomp, chisqavg, with_data=data_da is not None)
    wcs = [*wcs_cards(ds, src, sizes), *PARAMETER_AXIS_CARDS]
    body = [
        ("BTYPE", ""),
        ("BUNIT", ""),
        ("COMMENT", "--- WCS ---"),
        *wcs,
        *observer_cards(src if src is not None else ds.attrs, {c[0] for c in wcs}),
    ]
    cards = head + comp_cards + body

    res_hdu_cls = fits.PrimaryHDU if primary else fits.ImageHDU
    hdus = [
        res_hdu_cls(data=results, header=_header(cards, names.results)),
        fits.ImageHDU(data=sigma, header=_header(cards, names.sigma)),
    ]
    if data_da is not None:
        hdus.append(_data_hdu(data_da, data_attrs, names.data))
    variables, extra_hdus = _variable_entries(ds, names, plane_of, len(planes), amp_unit, scales)
    hdus += extra_hdus
    hdus.append(_meta_table(ds, node_name, variables, names))
    return hdus


def _header(cards, extname: str) -> fits.Header:
    """A header of ``cards`` with its EXTNAME card set to ``extname``."""
    h = fits.Header()
    for card in cards:
        if card[0] == "EXTNAME":
            card = ("EXTNAME", extname, card[2])
        h.append(fits.Card(*card), end=True)
    return h


def _variable_entries(ds, names, plane_of, n_planes: int, amp_unit: str, scales: dict):
    """How each variable is stored (metadata entries), and the image HDUs of the extra ones."""
    store = _saffron_store(ds)
    variables, hdus = [], []
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
            entry["planes"] = plane_of.get(name, [n_planes - 1])
            entry["scale"] = scales.get(name, 1.0)
        elif store[name] == "sigma":
            kind = name[:-4]
            entry["planes"] = plane_of[kind]
            entry["scale"] = _err_scale(ds, kind, amp_unit)
        elif store[name] == "inline":
            entry["values"] = np.asarray(var.values)
        else:
            hname = f"{names.base} {name}"
            entry["hdu"] = hname
            h = fits.Header()
            h["SXVAR"] = (str(name), "saffron_xr variable name")
            h["SXDIMS"] = (json.dumps(entry["dims"]), "dims, numpy order")
            h["RESEXT"] = (names.results, "Extension name of results")
            h["EXTNAME"] = hname
            hdus.append(fits.ImageHDU(data=_hdu_array(np.asarray(var.values), name), header=h))
        variables.append(entry)
    return variables, hdus


def _meta_table(ds, node_name: str, variables: list, names) -> fits.BinTableHDU:
    """The one-row ``E saffron`` table: the window's attrs and variable layout as JSON."""
    meta = {
        "format": META_FORMAT,
        "version": 1,
        "window": node_name,
        "attrs": ds.attrs,
        "variables": variables,
    }
    text = dumps_tagged(meta)
    col = fits.Column(name="json", format=f"{max(len(text), 1)}A", array=np.array([text]))
    table = fits.BinTableHDU.from_columns([col])
    table.header["EXTNAME"] = names.meta
    table.header["RESEXT"] = (names.results, "Extension name of results")
    return table


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


def shorten_comments(header) -> None:
    """Cut card comments so that each card fits in 80 characters (values are never cut)."""
    for card in header.cards:
        if card.keyword in ("COMMENT", "HISTORY", "") or not card.comment:
            continue
        value = fits.Card(card.keyword, card.value).image.rstrip()
        room = 80 - len(value) - 3  # " / "
        if len(card.comment) > room:
            header.comments[card.keyword] = card.comment[: max(room, 0)]
