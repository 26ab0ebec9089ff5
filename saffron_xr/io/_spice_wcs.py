"""World coordinates of a SPICE window: wavelength, helioprojective position, time.

From the header's full WCS (astropy/wcslib): the wavelength (Angstrom) along axis 3, the
``hpln``/``hplt`` coordinates (arcsec) and the exposure times, evaluated once per set of spatial
WCS keywords and reused across the windows of a file that share them.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from ._spice_header import file_error

_WCS_KEY = re.compile(
    r"^(NAXIS\d?|WCSAXES|CTYPE\d|CUNIT\d|CRVAL\d|CDELT\d|CRPIX\d|PC\d_\d|CROTA\d?|"
    r"LONPOLE|LATPOLE|DATEREF|MJDREF[IF]?|DATE-OBS|DATE-BEG|TIMESYS|SPECSYS|RESTWAV)$"
)


def _window_wcs(hdr) -> WCS:
    """Astropy WCS from the WCS keywords only (parsing the whole header is much slower)."""
    slim = fits.Header([card for card in hdr.cards if _WCS_KEY.match(card.keyword)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        w = WCS(slim, naxis=min(4, int(hdr.get("NAXIS", 4))) or 4, fix=False)
    return w


_SPATIAL_WCS_KEY = re.compile(
    r"^(CTYPE[12]|CUNIT[12]|CRVAL[12]|CDELT[12]|CRPIX[12]|PC[12]_[12]|CROTA2?|LONPOLE|LATPOLE|"
    r"WCSNAME|TIMESYS|DATE-OBS|DATE-BEG|DATE-AVG|DATE-END|DSUN_OBS|HGLN_OBS|HGLT_OBS|"
    r"CRLN_OBS|CRLT_OBS|RSUN_REF|RSUN_ARC|OBS_VR)$"
)


def spatial_wcs_text(hdr) -> str:
    """The helioprojective part of a window header, as FITS card text (one card a line).

    Keeps the WCS of the file's pixel axes 1 (x) and 2 (y) -- axes 3 and 4 (wavelength, time)
    are dropped, which evaluates a PC matrix that mixes wavelength into position at the
    reference wavelength pixel, as the ``hpln``/``hplt`` coordinates are -- plus the
    observation dates and the observer's location (``DSUN_OBS``, ``HGLN_OBS``, ``HGLT_OBS``).
    The reader stores it as the ``spatial_wcs`` attribute of the ``hpln``/``hplt``
    coordinates, which travel with every result computed from the window (fits, derived
    maps, results files), so :func:`saffron_xr.to_sunpy_map` can rebuild the WCS from them.
    """
    cards = [card for card in hdr.cards if _SPATIAL_WCS_KEY.match(card.keyword)]
    return fits.Header(cards).tostring(sep="\n", padding=False)


_AXIS3_ONLY = re.compile(r"^(NAXIS3|CTYPE3|CUNIT3|CRVAL3|CDELT3|CRPIX3|PC3_\d)$")


def _wcs_signature(hdr, shape, kind, extra):
    """Header values that fix the spatial/time coordinates (for reuse across windows)."""
    keys = sorted(k for k in hdr if _WCS_KEY.match(k) and not _AXIS3_ONLY.match(k))
    nt, _, ny, nx = shape
    return (kind, nt, ny, nx, extra) + tuple((k, str(hdr[k])) for k in keys)


def window_coordinates(path, hdr, extname, shape, kind, mixed_wcs, cache=None):
    """Wavelength (Angstrom), hpln/hplt (arcsec) and time coordinates from the full WCS.

    ``cache`` (a dict) reuses spatial and time coordinates between windows of one file that
    share the same spatial WCS keywords.
    """
    nt, nw, ny, nx = shape
    w = _window_wcs(hdr)
    naxis = w.pixel_n_dim
    pc = w.wcs.get_pc()
    if naxis >= 3 and (abs(pc[2, 0]) > 0 or abs(pc[2, 1]) > 0):
        raise file_error(
            path,
            f"window {extname!r}: its PC matrix makes the wavelength depend on position "
            f"(PC3_1={pc[2, 0]}, PC3_2={pc[2, 1]}); saffron_xr cannot give it a 1-D "
            "wavelength coordinate",
        )
    mixed = naxis >= 3 and (abs(pc[0, 2]) > 0 or abs(pc[1, 2]) > 0)
    ref_w = float(hdr.get("CRPIX3", (nw + 1) / 2.0)) - 1.0
    if mixed and mixed_wcs == "raise":
        raise file_error(
            path,
            f"window {extname!r} (a wide-slit or dumbbell window): its PC matrix mixes "
            f"wavelength with position (PC1_3={pc[0, 2]}, PC2_3={pc[1, 2]}), so the "
            "helioprojective coordinates depend on wavelength; open it with "
            "mixed_wcs='center' or 'full'",
        )

    def world(px, py, pw, pt):
        pix = [px, py, pw, pt][:naxis]
        return w.wcs_pix2world(np.stack([np.ravel(p) for p in np.broadcast_arrays(*pix)], -1), 0)

    # wavelength along axis 3 (independent of position, checked above)
    wave_world = world(np.zeros(nw), np.zeros(nw), np.arange(nw, dtype=float), np.zeros(nw))
    # astropy converts WAVE to SI metres
    wavelength = wave_world[:, 2] * 1e10

    ref_time = hdr.get("DATEREF") or hdr.get("DATE-BEG") or hdr.get("DATE-OBS")
    t0 = np.datetime64(str(ref_time).strip()) if ref_time else None

    coords = {}
    key = None
    if cache is not None and not mixed:
        time_on_wave = naxis >= 4 and abs(w.wcs.get_pc()[3, 2]) > 0
        key = _wcs_signature(hdr, shape, kind, ref_w if time_on_wave else None)
    if key is not None and key in cache:
        lon, lat, sdims, tsec, tdims, attrs_note = cache[key]
    else:
        lon, lat, sdims, tsec, tdims, attrs_note = _spatial(
            world, kind, shape, ref_w, naxis, mixed, mixed_wcs
        )
        if key is not None:
            cache[key] = (lon, lat, sdims, tsec, tdims, attrs_note)
    coords["wavelength"] = (
        "wavelength",
        wavelength,
        {"units": "Angstrom", "long_name": "wavelength", "standard_name": "radiation_wavelength"},
    )
    coords["hpln"] = (
        sdims,
        lon,
        {"units": "arcsec", "long_name": "helioprojective longitude (Solar X)"},
    )
    coords["hplt"] = (
        sdims,
        lat,
        {"units": "arcsec", "long_name": "helioprojective latitude (Solar Y)"},
    )
    spatial_wcs = spatial_wcs_text(hdr)
    coords["hpln"][2]["spatial_wcs"] = spatial_wcs
    coords["hplt"][2]["spatial_wcs"] = spatial_wcs
    if t0 is not None:
        times = t0 + np.round(np.asarray(tsec) * 1e6).astype("timedelta64[us]")
        coords["time"] = (tdims, times.astype("datetime64[ns]"), {"long_name": "time of exposure"})
    return coords, attrs_note


def _spatial(world, kind, shape, ref_w, naxis, mixed, mixed_wcs):
    """hpln/hplt (arcsec) and time offsets (s) over the window's pixels."""
    nt, nw, ny, nx = shape

    def to_arcsec_lon(deg):
        return ((np.asarray(deg) + 180.0) % 360.0 - 180.0) * 3600.0

    attrs_note = None
    if kind == "sit":
        iy, it = np.meshgrid(np.arange(ny, dtype=float), np.arange(nt, dtype=float))
        vals = world(np.zeros_like(iy), iy, np.full_like(iy, ref_w), it)
        lon = to_arcsec_lon(vals[:, 0]).reshape(nt, ny)
        lat = (vals[:, 1] * 3600.0).reshape(nt, ny)
        sdims = ("time", "y")
        tsec = vals[:, 3].reshape(nt, ny)[:, 0] if naxis >= 4 else np.zeros(nt)
        tdims = ("time",)
    else:
        ix, iy = np.meshgrid(np.arange(nx, dtype=float), np.arange(ny, dtype=float))
        if mixed and mixed_wcs == "full":
            iw = np.arange(nw, dtype=float)
            gx, gy, gw = np.meshgrid(np.arange(nx, dtype=float), np.arange(ny, dtype=float), iw)
            vals3 = world(gx, gy, gw, np.zeros_like(gx))
            lon = to_arcsec_lon(vals3[:, 0]).reshape(ny, nx, nw)
            lat = (vals3[:, 1] * 3600.0).reshape(ny, nx, nw)
            sdims = ("y", "x", "wavelength")
        else:
            vals = world(ix, iy, np.full_like(ix, ref_w), np.zeros_like(ix))
            lon = to_arcsec_lon(vals[:, 0]).reshape(ny, nx)
            lat = (vals[:, 1] * 3600.0).reshape(ny, nx)
            sdims = ("y", "x")
            if mixed:
                attrs_note = (
                    "PC matrix mixes wavelength with position; hpln/hplt are evaluated at "
                    f"wavelength pixel {ref_w:g} (CRPIX3)"
                )
        tvals = world(np.arange(nx, dtype=float), np.zeros(nx), np.full(nx, ref_w), np.zeros(nx))
        tsec = tvals[:, 3] if naxis >= 4 else np.zeros(nx)
        tdims = ("x",)
    return lon, lat, sdims, tsec, tdims, attrs_note
