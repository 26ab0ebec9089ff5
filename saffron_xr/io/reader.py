"""Lazy reading of SPICE Level-2 FITS files into labelled xarray objects.

A SPICE L2 file holds one image HDU per spectral *window*, data in numpy order
``(t, wavelength, y, x)``, radiance in W m-2 sr-1 nm-1. :func:`open_spice` maps each window's
bytes (memmap, one chunk at a time) into a dask array with dims ``(y, x, wavelength)`` (rasters
and single exposures) or ``(time, y, wavelength)`` (sit-and-stare), and computes the
coordinates (wavelength in Angstrom, helioprojective longitude/latitude in arcsec, time) from
the header's full WCS. Opening reads headers only: no pixel data, no NaN mask.
"""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr
from astropy.io import fits
from astropy.io.fits.verify import VerifyError
from astropy.wcs import WCS, FITSFixedWarning

from .._units import angstrom_factor
from ..errors import SpiceFileError

__all__ = ["open_spice", "window_node_name", "spatial_wcs_text", "PIPELINE_KEYWORDS"]

log = logging.getLogger(__name__)

#: Header keywords copied as attributes onto each window Dataset and its ``radiance``.
PIPELINE_KEYWORDS = (
    "INSTRUME",
    "TELESCOP",
    "LEVEL",
    "STUDY",
    "STUDYTYP",
    "OBS_MODE",
    "OBS_ID",
    "SOOPNAME",
    "SPIOBSID",
    "RASTERNO",
    "NRASTERS",
    "DATE-OBS",
    "DATE-BEG",
    "DATE-END",
    "DATE-AVG",
    "DATEREF",
    "XPOSURE",
    "TELAPSE",
    "RADCAL",
    "NBIN",
    "NBIN1",
    "NBIN2",
    "NBIN3",
    "SLIT_ID",
    "SLIT_WID",
    "WAVEMIN",
    "WAVEMAX",
    "WAVEUNIT",
    "WAVEREF",
    "BUNIT",
    "BTYPE",
    "DETECTOR",
    "WINNO",
    "WIN_TYPE",
    "DATAPROD",
    "DUMBBELL",
    "EXTNAME",
    "VERSION",
    "VERS_CAL",
    "CDELT1",
    "CDELT2",
    "CDELT3",
    "CROTA",
    "DSUN_OBS",
    "RSUN_ARC",
    "HGLN_OBS",
    "HGLT_OBS",
    "OBS_VR",
    "CRVAL1",
    "CRVAL2",
)

_WCS_REQUIRED = ("CTYPE{i}", "CUNIT{i}", "CRVAL{i}", "CDELT{i}", "CRPIX{i}")
_DEFAULT_CHUNK_BYTES = 8 * 2**20


def window_node_name(extname: str) -> str:
    """DataTree node name for a window EXTNAME: runs of non-alphanumerics become ``_``.

    Parameters
    ----------
    extname : str
        The window's EXTNAME (or an already sanitised node name, which is returned as is).

    Returns
    -------
    str
        The name with leading/trailing ``_`` stripped; ``"window"`` if nothing is left.

    Examples
    --------
    >>> window_node_name("Ne VIII 770 - Peak")
    'Ne_VIII_770_Peak'
    >>> window_node_name("FLT02_Two Window_OB_ID_253_")
    'FLT02_Two_Window_OB_ID_253'
    """
    name = re.sub(r"[^0-9A-Za-z]+", "_", str(extname)).strip("_")
    return name or "window"


class _MemmapWindow:
    """Array-like view of one window's bytes, presented as ``(time, y, x, wavelength)``.

    Holds only the file name, byte offset, shape and dtype, so it pickles to dask workers in a
    few bytes; each ``__getitem__`` maps the file, slices the requested block and returns a
    native-endian copy of that block only.
    """

    def __init__(self, path: str, offset: int, file_shape: tuple, dtype: np.dtype):
        self.path = path
        self.offset = int(offset)
        self.file_shape = tuple(int(n) for n in file_shape)  # (t, wavelength, y, x)
        self.file_dtype = np.dtype(dtype)
        nt, nw, ny, nx = self.file_shape
        self.shape = (nt, ny, nx, nw)
        self.dtype = self.file_dtype.newbyteorder("=")
        self.ndim = 4

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (4 - len(key))
        # dask may fuse a later integer index into the read: read with slices only, then
        # drop the integer-indexed axes after reordering to (t, y, x, wavelength)
        slices, drop = [], []
        for axis, k in enumerate(key):
            if isinstance(k, int | np.integer):
                slices.append(slice(int(k), int(k) + 1))
                drop.append(axis)
            elif isinstance(k, slice):
                slices.append(k)
            else:
                raise TypeError(f"unsupported index {k!r} into a SPICE window")
        kt, ky, kx, kw = slices
        mm = np.memmap(
            self.path, mode="r", dtype=self.file_dtype, offset=self.offset, shape=self.file_shape
        )
        block = np.moveaxis(mm[kt, kw, ky, kx], 1, -1)
        out = np.ascontiguousarray(block, dtype=self.dtype)
        del mm
        if drop:
            out = out.reshape([n for axis, n in enumerate(out.shape) if axis not in drop])
        return out


def _err(path, problem):
    return SpiceFileError(path, problem)


def _open_hdulist(path: Path):
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise _err(path, "is a folder, not a FITS file")
    try:
        with open(path, "rb") as fh:
            first = fh.read(30)
    except PermissionError as exc:
        raise _err(path, "cannot be read: permission denied") from exc
    except OSError as exc:
        raise _err(path, f"cannot be read ({exc.strerror or exc})") from exc
    if not first.startswith(b"SIMPLE  ="):
        raise _err(path, "not a FITS file (it does not start with a SIMPLE card)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hdul = fits.open(path, memmap=False, lazy_load_hdus=False, ignore_missing_end=True)
    except Exception as exc:  # astropy raises OSError/ValueError/TypeError variously
        if not _has_end_card(path):
            raise _err(path, "is truncated: its primary header ends before its END card") from exc
        raise _err(path, f"cannot be read as FITS ({exc})") from exc
    try:
        with warnings.catch_warnings():
            # fileinfo() verifies each header; the values that matter are checked later
            warnings.simplefilter("ignore")
            _check_complete(path, hdul)
    except BaseException:
        hdul.close()
        raise
    return hdul


def _has_end_card(path: Path) -> bool:
    """Whether the file has an END card (at an 80-byte card boundary) in its first 10 MB."""
    with open(path, "rb") as fh:
        head = fh.read(10 * 2**20)
    return any(head[i : i + 80].rstrip() == b"END" for i in range(0, len(head) - 79, 80))


def _axis_length(hdr, key) -> int | None:
    value = hdr.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        return None
    return int(value)


def _data_bytes(hdr) -> int:
    """Size in bytes of an HDU's data part (without padding), from its header.

    Raises ValueError naming the keyword if an axis length is not a whole number >= 0.
    """
    naxis = _axis_length(hdr, "NAXIS")
    if naxis is None:
        raise ValueError(f"NAXIS={hdr.get('NAXIS')!r}")
    if naxis == 0:
        return 0
    n = 1
    for i in range(1, naxis + 1):
        length = _axis_length(hdr, f"NAXIS{i}")
        if length is None:
            raise ValueError(f"NAXIS{i}={hdr.get(f'NAXIS{i}')!r}")
        n *= length
    gcount = int(hdr.get("GCOUNT", 1) or 1)
    pcount = int(hdr.get("PCOUNT", 0) or 0)
    return abs(int(hdr.get("BITPIX", 8))) // 8 * gcount * (pcount + n)


def _hdu_label(index: int, hdr) -> str:
    extname = str(hdr.get("EXTNAME", "")).strip()
    return f"HDU {index} ({extname!r})" if extname else f"HDU {index}"


def _check_complete(path: Path, hdul) -> None:
    """Every HDU's data lies inside the file, and nothing but padding follows the last one.

    astropy (with ``ignore_missing_end``) silently drops an HDU whose header is cut short,
    which would lose a window without a word; a cut in a table shows only when it is read.
    """
    size = os.path.getsize(path)
    end = 0
    for index, hdu in enumerate(hdul):
        info = hdul.fileinfo(index)
        if info is None:
            continue
        try:
            need = int(info["datLoc"]) + _data_bytes(hdu.header)
        except ValueError as exc:
            raise _err(
                path,
                f"{_hdu_label(index, hdu.header)} has {exc}: an axis length must be a whole "
                "number >= 0",
            ) from None
        if need > size:
            raise _err(
                path,
                f"is truncated: {_hdu_label(index, hdu.header)} needs bytes up to {need} "
                f"but the file has {size}",
            )
        end = max(end, need)
    if size > end:
        with open(path, "rb") as fh:
            fh.seek(end)
            tail = fh.read()
        # the last block may be padded with zeros (data) or blanks (an empty header block)
        if tail.strip(b"\0 "):
            raise _err(
                path,
                f"is truncated or corrupt: {size - end} bytes after the end of the last "
                f"complete HDU ({_hdu_label(len(hdul) - 1, hdul[-1].header)}) do not form "
                "a complete FITS HDU",
            )


def _is_window(hdu) -> bool:
    """An image HDU with a WAVE axis (with or without data)."""
    if not isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU):
        return False
    hdr = hdu.header
    extname = str(hdr.get("EXTNAME", "")).strip().upper()
    if extname.startswith("WCSDVARR") or extname == "VARIABLE_KEYWORDS":
        return False
    ctypes = [str(hdr.get(f"CTYPE{i}", "")).strip().upper() for i in range(1, 5)]
    return "WAVE" in ctypes


def _no_data(hdr) -> str | None:
    """Why a window header holds no data (``"NAXIS=0"``, ``"NAXIS3=0"``), or None."""
    naxis = int(hdr.get("NAXIS", 0) or 0)
    if naxis == 0:
        return "NAXIS=0"
    for i in range(1, naxis + 1):
        if int(hdr.get(f"NAXIS{i}", 0) or 0) == 0:
            return f"NAXIS{i}=0"
    return None


def _is_dumbbell(path, hdr) -> bool:
    flag = _card_value(hdr, "DUMBBELL") if "DUMBBELL" in hdr else 0
    if isinstance(flag, str) or not math.isfinite(float(flag)):
        raise _err(
            path,
            f"window {str(hdr.get('EXTNAME', '')).strip()!r} has DUMBBELL="
            f"{_raw_value(hdr, 'DUMBBELL')}; expected 0 or 1",
        )
    return bool(flag) or "DUMBBELL" in str(hdr.get("WIN_TYPE", "")).upper()


def _attr_value(value):
    if isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int | float | np.integer | np.floating):
        return value
    return str(value)


_WCS_NUMBER = re.compile(r"^(CRVAL\d|CDELT\d|CRPIX\d|PC\d_\d|CROTA\d?|LONPOLE|LATPOLE)$")


def _card_value(hdr, key):
    """A card's value; astropy's fallback string for an unparsable card (e.g. ``NaN``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy warns while it "fixes" a bad card
        try:
            return hdr[key]
        except Exception:  # VerifyError for an unparsable card; the second read gives text
            return hdr.cards[key].image[10:].split("/")[0].strip()


def _raw_value(hdr, key) -> str:
    """A keyword's value as written, for messages (strings quoted, numbers as they are)."""
    value = _card_value(hdr, key)
    return repr(value.strip()) if isinstance(value, str) else str(value)


def _number(hdr, key) -> float | None:
    """A keyword's value as a finite float, or None if it is not one."""
    value = _card_value(hdr, key)
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _check_wcs(path, hdr, extname):
    missing = [
        key.format(i=i) for i in (1, 2, 3) for key in _WCS_REQUIRED if key.format(i=i) not in hdr
    ]
    if missing:
        raise _err(path, f"window {extname!r} lacks the WCS keywords {', '.join(missing)}")
    for key in hdr:
        if not _WCS_NUMBER.match(key):
            continue
        value = _number(hdr, key)
        if value is None:
            raise _err(
                path,
                f"window {extname!r} has an invalid WCS value {key}={_raw_value(hdr, key)} "
                "(not a finite number)",
            )
        if key.startswith("CDELT") and value == 0:
            raise _err(path, f"window {extname!r} has {key} = 0: a zero pixel size is invalid")
    if str(hdr["CTYPE1"]).strip()[:4] != "HPLN" or str(hdr["CTYPE2"]).strip()[:4] != "HPLT":
        raise _err(
            path,
            f"window {extname!r} has axes CTYPE1={hdr['CTYPE1']!r}, CTYPE2={hdr['CTYPE2']!r}; "
            "expected HPLN-TAN and HPLT-TAN",
        )
    if str(hdr["CTYPE3"]).strip() != "WAVE":
        raise _err(path, f"window {extname!r} has CTYPE3={hdr['CTYPE3']!r}; expected 'WAVE'")
    # without its unit a value means something else (the FITS defaults are deg and m)
    for i in (1, 2):
        unit = _card_value(hdr, f"CUNIT{i}")
        if not _is_unit(unit, "angle"):
            raise _err(
                path,
                f"window {extname!r} has CUNIT{i}={unit!r}; expected an angle unit (arcsec)",
            )
    unit = _card_value(hdr, "CUNIT3")
    if not isinstance(unit, str) or angstrom_factor(unit) is None:
        raise _err(path, f"window {extname!r} has an unknown wavelength unit CUNIT3={unit!r}")
    if "CUNIT4" in hdr and str(_card_value(hdr, "CUNIT4")).strip() not in ("s", ""):
        raise _err(
            path,
            f"window {extname!r} has CUNIT4={_raw_value(hdr, 'CUNIT4')}; expected 's' "
            "(seconds) for the time axis",
        )


def _is_unit(text, physical_type: str) -> bool:
    """Whether ``text`` is a unit string of the given physical type (e.g. ``"angle"``)."""
    if not isinstance(text, str) or not text.strip():
        return False
    import astropy.units as u

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            unit = u.Unit(text.strip(), format="fits")
    except (ValueError, TypeError):
        return False
    return unit.physical_type == physical_type


_RADIANCE_SPELLINGS = ("W/m2/sr/nm", "Wm-2sr-1nm-1", "W/(m2srnm)", "W.m-2.sr-1.nm-1")


def _is_spectral_radiance(bunit: str) -> bool:
    """Whether BUNIT is W m-2 sr-1 nm-1 (the unit RADCAL and the noise model refer to)."""
    text = bunit.replace(" ", "")
    if text in _RADIANCE_SPELLINGS:
        return True
    import astropy.units as u

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            unit = u.Unit(bunit)
    except (ValueError, TypeError):
        return False
    return unit == u.W / u.m**2 / u.sr / u.nm


def _check_instrument(path, hdr, extname, table_radcal) -> None:
    """Instrument keywords that are present must make sense (absent ones are not checked).

    An exposure time or calibration factor that is not positive, or a calibrated window
    whose unit is not spectral radiance, would give results that look fine and are wrong.
    """
    for key in ("XPOSURE", "RADCAL"):
        if key in hdr:
            value = _number(hdr, key)
            if value is None or value <= 0:
                what = "exposure time" if key == "XPOSURE" else "calibration factor"
                raise _err(
                    path,
                    f"window {extname!r} has {key}={_raw_value(hdr, key)}: the {what} must "
                    "be a positive finite number",
                )
    for key in ("NBIN2", "NBIN3"):
        if key in hdr:
            value = _number(hdr, key)
            if value is None or value < 1 or value != int(value):
                raise _err(
                    path,
                    f"window {extname!r} has {key}={_raw_value(hdr, key)}: a binning factor "
                    "must be a whole number >= 1",
                )
    if "RADCAL" in hdr or table_radcal is not None:
        bunit = _card_value(hdr, "BUNIT") if "BUNIT" in hdr else None
        if not isinstance(bunit, str) or not _is_spectral_radiance(bunit.strip()):
            shown = f"BUNIT={bunit.strip()!r}" if isinstance(bunit, str) else "no BUNIT"
            raise _err(
                path,
                f"window {extname!r} has {shown} but a radiometric calibration (RADCAL): "
                "a calibrated SPICE L2 window holds spectral radiance in W/m2/sr/nm",
            )


def _check_wave_range(path, hdr, extname, wavelength) -> None:
    """The WCS wavelengths (Angstrom) lie within WAVEMIN..WAVEMAX (pixel edges), when given.

    SPICE writes the window's range twice: through the WCS and as WAVEMIN/WAVEMAX (in units
    of 10**WAVEUNIT m, nm by default). A corrupted CRVAL3, CDELT3, CRPIX3, PC3_3 or CUNIT3
    would otherwise give a plausible-looking but wrong wavelength scale. Only containment
    is checked (half a pixel of slack): in real commissioning headers WAVEMIN/WAVEMAX span
    more than the window's pixels.
    """
    if wavelength.size < 2 or "WAVEMIN" not in hdr or "WAVEMAX" not in hdr:
        return
    low, high = _number(hdr, "WAVEMIN"), _number(hdr, "WAVEMAX")
    power = _number(hdr, "WAVEUNIT") if "WAVEUNIT" in hdr else -9.0
    if low is None or high is None or power is None:
        return  # not usable as a check; the WCS stands alone
    scale = 10.0 ** (power + 10.0)
    step = np.diff(wavelength)
    if not (np.all(step > 0) or np.all(step < 0)):
        raise _err(path, f"window {extname!r}: its WCS wavelengths are not monotonic")
    half = abs(float(np.median(step))) / 2.0
    edges = sorted((float(wavelength.min()) - half, float(wavelength.max()) + half))
    stated = sorted((low * scale, high * scale))
    if edges[0] < stated[0] - half or edges[1] > stated[1] + half:
        raise _err(
            path,
            f"window {extname!r}: its WCS gives wavelengths {edges[0]:.6g}-{edges[1]:.6g} "
            f"Angstrom, outside WAVEMIN/WAVEMAX ({stated[0]:.6g}-{stated[1]:.6g} Angstrom); "
            "the wavelength keywords (CRVAL3, CDELT3, CRPIX3, CUNIT3, PC3_3) are inconsistent",
        )


def _wave_scale(path, hdr, extname) -> float:
    unit = str(hdr.get("CUNIT3", "nm")).strip()
    factor = angstrom_factor(unit, default="nm")
    if factor is None:
        raise _err(path, f"window {extname!r} has an unknown wavelength unit CUNIT3={unit!r}")
    return factor


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


def _coordinates(path, hdr, extname, shape, kind, mixed_wcs, cache=None):
    """Wavelength (Angstrom), hpln/hplt (arcsec) and time coordinates from the full WCS.

    ``cache`` (a dict) reuses spatial and time coordinates between windows of one file that
    share the same spatial WCS keywords.
    """
    nt, nw, ny, nx = shape
    w = _window_wcs(hdr)
    naxis = w.pixel_n_dim
    pc = w.wcs.get_pc()
    if naxis >= 3 and (abs(pc[2, 0]) > 0 or abs(pc[2, 1]) > 0):
        raise _err(
            path,
            f"window {extname!r}: its PC matrix makes the wavelength depend on position "
            f"(PC3_1={pc[2, 0]}, PC3_2={pc[2, 1]}); saffron_xr cannot give it a 1-D "
            "wavelength coordinate",
        )
    mixed = naxis >= 3 and (abs(pc[0, 2]) > 0 or abs(pc[1, 2]) > 0)
    ref_w = float(hdr.get("CRPIX3", (nw + 1) / 2.0)) - 1.0
    if mixed and mixed_wcs == "raise":
        raise _err(
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


def _variable_radcal(path, hdul, extname):
    """Per-wavelength RADCAL from the VARIABLE_KEYWORDS table, or None."""
    for hdu in hdul:
        if isinstance(hdu, fits.BinTableHDU) and str(hdu.header.get("EXTNAME", "")).strip() == (
            "VARIABLE_KEYWORDS"
        ):
            col = f"RADCAL[{extname}]"
            try:
                names = hdu.columns.names or []
                if col in names:
                    return np.asarray(hdu.data[col][0], dtype=float).ravel()
            except Exception as exc:  # astropy: ValueError, KeyError, IndexError, ...
                raise _err(
                    path,
                    f"its VARIABLE_KEYWORDS table cannot be read ({type(exc).__name__}: {exc})",
                ) from exc
    return None


def _default_chunks(kind, shape, itemsize):
    nt, nw, ny, nx = shape
    per_spectrum = max(nw * itemsize, 1)
    target = max(_DEFAULT_CHUNK_BYTES // per_spectrum, 1)
    if kind == "sit":
        cy = min(ny, max(target // max(nt, 1), 16))
        return {"time": nt if cy == ny else min(nt, max(target // ny, 1)), "y": cy}
    cx = nx if nx <= 64 else 64
    cy = min(ny, max(target // cx, 1))
    return {"y": cy, "x": cx}


def _resolve_chunks(chunks, kind, shape, itemsize):
    default = _default_chunks(kind, shape, itemsize)
    if chunks is None or chunks == "auto":
        return default
    if not isinstance(chunks, dict):
        raise TypeError(f"chunks must be 'auto', None or a dict of dim -> size, got {chunks!r}")
    if "wavelength" in chunks and chunks["wavelength"] not in (-1, None, shape[1]):
        raise ValueError("the wavelength dimension is always one chunk; drop it from chunks")
    out = dict(default)
    for dim, size in chunks.items():
        if dim == "wavelength":
            continue
        if dim not in out:
            raise ValueError(f"unknown dimension {dim!r} in chunks; use {sorted(out)}")
        out[dim] = size
    return out


def _kind_of(hdr) -> str:
    prod = str(hdr.get("DATAPROD", "")).lower()
    if "sit-and-stare" in prod or "sit and stare" in prod:
        return "sit"
    if "single exposure" in prod:
        return "exp"
    return "ras"


def _dask_array(source: _MemmapWindow, kind: str, chunks: dict, name: str):
    """The window as a dask array over ``source`` (dims as :func:`_open_window` names them)."""
    nt, ny, nx, nw = source.shape
    block = (
        (chunks["time"], chunks["y"], 1, nw)
        if kind == "sit"
        else (1, chunks["y"], chunks["x"], nw)
    )
    arr4 = da.from_array(
        source, chunks=block, meta=np.empty((0, 0, 0, 0), source.dtype), name=name
    )
    return (arr4[:, :, 0, :] if kind == "sit" else arr4[0]), {}


def _open_window(path, hdul, hdu, kind, chunks, mixed_wcs, cache=None, make_array=None):
    """One window as a Dataset.

    ``make_array(source, kind, chunks, name) -> (data, encoding)`` turns the window's
    :class:`_MemmapWindow` into the ``radiance`` data (default: a dask array, see
    :func:`_dask_array`); the xarray backend passes its own lazily indexed array.
    """
    hdr = hdu.header
    extname = str(hdr.get("EXTNAME", "PRIMARY")).strip()
    _check_wcs(path, hdr, extname)
    if hdr.get("NAXIS") != 4:
        raise _err(path, f"window {extname!r} has NAXIS={hdr.get('NAXIS')}; expected 4")
    file_shape = tuple(int(hdr[f"NAXIS{i}"]) for i in (4, 3, 2, 1))  # (t, wavelength, y, x)
    bitpix = int(hdr["BITPIX"])
    if bitpix not in (-32, -64) or hdr.get("BSCALE", 1) != 1 or hdr.get("BZERO", 0) != 0:
        raise _err(
            path,
            f"window {extname!r} has BITPIX={bitpix} (BSCALE/BZERO scaling); "
            "only floating-point L2 windows are supported",
        )
    dtype = np.dtype(">f4" if bitpix == -32 else ">f8")
    info = hdu.fileinfo()
    offset = int(info["datLoc"])
    nbytes = int(np.prod(file_shape)) * dtype.itemsize
    size = os.path.getsize(path)
    if offset + nbytes > size:
        raise _err(
            path,
            f"is truncated: window {extname!r} needs bytes up to {offset + nbytes} "
            f"but the file has {size}",
        )
    nt, nw, ny, nx = file_shape
    source = _MemmapWindow(str(path), offset, file_shape, dtype)
    ch = _resolve_chunks(chunks, kind, file_shape, dtype.itemsize)
    if kind == "sit":
        if nx != 1:
            raise _err(path, f"sit-and-stare window {extname!r} has {nx} slit positions")
        dims = ("time", "y", "wavelength")
    else:
        if nt != 1:
            raise _err(path, f"raster window {extname!r} has {nt} exposures along time")
        dims = ("y", "x", "wavelength")
    data, encoding = (make_array or _dask_array)(
        source, kind, ch, f"spice-{extname}-{abs(hash((str(path), offset)))}"
    )

    radcal = _variable_radcal(path, hdul, extname)
    _check_instrument(path, hdr, extname, radcal)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # wcslib's complaints become the error below
            coords, note = _coordinates(path, hdr, extname, file_shape, kind, mixed_wcs, cache)
    except SpiceFileError:
        raise
    except Exception as exc:  # wcslib raises its own errors (singular matrix, bad CTYPE...)
        detail = str(exc).strip().splitlines()
        raise _err(
            path,
            f"window {extname!r}: its WCS cannot be evaluated "
            f"({type(exc).__name__}: {detail[-1] if detail else ''})",
        ) from exc
    for name in ("wavelength", "hpln", "hplt"):
        values = np.asarray(coords[name][1], dtype=float)
        if not np.all(np.isfinite(values)):
            raise _err(
                path,
                f"window {extname!r}: its WCS gives non-finite {name} coordinates "
                f"({int((~np.isfinite(values)).sum())} of {values.size})",
            )
    _check_wave_range(path, hdr, extname, np.asarray(coords["wavelength"][1], dtype=float))
    _wave_scale(path, hdr, extname)  # rejects an unknown CUNIT3 (astropy gives metres)
    if radcal is not None and radcal.size == nw:
        coords["radcal"] = (
            "wavelength",
            radcal,
            {
                "long_name": "radiometric calibration factor per wavelength",
                "units": "DN / (W m-2 sr-1 nm-1)",
            },
        )

    key_attrs = {k: _attr_value(hdr[k]) for k in PIPELINE_KEYWORDS if k in hdr}
    key_attrs["EXTNAME"] = extname
    key_attrs["filename"] = Path(path).name
    key_attrs["KIND"] = kind
    if note:
        key_attrs["wcs_note"] = note
    bunit = str(hdr.get("BUNIT", "")).strip()
    units = (
        "W m-2 sr-1 nm-1" if bunit.replace(" ", "") in ("W/m2/sr/nm", "Wm-2sr-1nm-1") else bunit
    )
    rad_attrs = dict(key_attrs)
    rad_attrs.update(units=units, long_name="spectral radiance")
    radiance = xr.DataArray(data, dims=dims, attrs=rad_attrs)
    radiance.encoding.update(encoding)
    ds = xr.Dataset({"radiance": radiance}, coords=coords)
    ds.attrs.update(key_attrs)
    ds.attrs["header"] = hdr.tostring(sep="\n", padding=False)
    return window_node_name(extname), ds


def _open_one(path, windows, chunks, dumbbells, mixed_wcs, make_array=None):
    path = Path(path)
    hdul = _open_hdulist(path)
    try:
        if len(hdul) == 0:
            raise _err(path, "contains no HDU")
        primary = hdul[0].header
        instrume = str(primary.get("INSTRUME", "")).strip()
        if instrume.upper() != "SPICE":
            raise _err(path, f"is not a SPICE file (INSTRUME={instrume or 'missing'!r})")
        level = str(primary.get("LEVEL", "")).strip()
        if level.upper() != "L2":
            raise _err(path, f"is not a Level-2 file (LEVEL={level or 'missing'!r})")
        candidates = [hdu for hdu in hdul if _is_window(hdu)]
        if not dumbbells:
            candidates = [hdu for hdu in candidates if not _is_dumbbell(path, hdu.header)]
        if not any(_no_data(hdu.header) is None for hdu in candidates):
            raise _err(path, "contains no spectral window with data")
        by_name = {}
        for hdu in candidates:
            extname = str(hdu.header.get("EXTNAME", "PRIMARY")).strip()
            node = window_node_name(extname)
            if node in by_name:
                other = by_name[node][0]
                same = (
                    f"two windows named {extname!r}"
                    if other == extname
                    else (
                        f"windows {other!r} and {extname!r}, which both give the node name {node!r}"
                    )
                )
                raise _err(path, f"has {same}; cannot tell them apart")
            by_name[node] = (extname, hdu)
        candidates_by_node = dict(by_name)
        empty = {
            node: reason
            for node, (_ext, hdu) in by_name.items()
            if (reason := _no_data(hdu.header)) is not None
        }
        if windows is not None:
            wanted = [windows] if isinstance(windows, str | int) else list(windows)
            chosen = {}
            available = [ext for ext, _ in by_name.values()]
            with_data = [node for node in by_name if node not in empty]
            for w in wanted:
                if isinstance(w, int | np.integer):
                    if not 0 <= int(w) < len(with_data):
                        raise _err(
                            path,
                            f"has no window number {w}; it has {len(with_data)} windows with "
                            "data: " + ", ".join(repr(by_name[n][0]) for n in with_data),
                        )
                    node = with_data[int(w)]
                else:
                    node = window_node_name(w)
                    if node not in by_name:
                        raise _err(
                            path,
                            f"has no window {w!r}; its windows are: "
                            + ", ".join(repr(a) for a in available),
                        )
                if node in empty:
                    raise _err(path, f"window {by_name[node][0]!r} has no data ({empty[node]})")
                chosen[node] = by_name[node]
            by_name = chosen
        for node, reason in empty.items():
            if node in by_name:
                log.warning(
                    "%s: window %r has no data (%s); it is left out",
                    path,
                    by_name[node][0],
                    reason,
                )
                by_name.pop(node)
        nodes = {}
        cache = {}
        for _extname, hdu in by_name.values():
            kind = _kind_of(hdu.header)
            name, ds = _open_window(path, hdul, hdu, kind, chunks, mixed_wcs, cache, make_array)
            nodes[name] = ds
        root_attrs = {k: _attr_value(primary[k]) for k in PIPELINE_KEYWORDS if k in primary}
        root_attrs["filename"] = path.name
        root_attrs.pop("EXTNAME", None)
        left_out = [ext for node, (ext, _hdu) in candidates_by_node.items() if node in empty]
        if left_out:
            root_attrs["windows_without_data"] = ", ".join(left_out)
        return nodes, root_attrs
    except VerifyError as exc:  # a card whose value astropy cannot parse, met on the way
        raise _err(path, f"has a header card that cannot be parsed ({exc})") from exc
    finally:
        hdul.close()


def open_spice(
    path,
    *,
    windows=None,
    chunks="auto",
    dumbbells: bool = False,
    mixed_wcs: str = "center",
) -> xr.DataTree:
    """Open a SPICE Level-2 FITS file lazily, one DataTree node per spectral window.

    Parameters
    ----------
    path : str, path-like, or sequence of them
        One L2 file, or several files of one observation (same SPIOBSID), which are
        concatenated along ``raster`` (rasters, coordinate ``rasterno``) or ``time``
        (sit-and-stare).
    windows : str, int or list of them, optional
        Windows to open, by EXTNAME (or node name) or position among the windows;
        default all. An unknown window raises :class:`SpiceFileError` listing those present.
    chunks : "auto" or dict, optional
        Dask chunk sizes over ``y``/``x`` (``time``/``y`` for sit-and-stare). The wavelength
        dimension is always one chunk. ``"auto"`` aims at about 8 MiB per chunk.
    dumbbells : bool, default False
        Also open dumbbell (context) windows.
    mixed_wcs : {"center", "full", "raise"}, default "center"
        What to do when a window's PC matrix mixes wavelength with position (wide-slit and
        dumbbell windows): ``"center"`` evaluates the 2-D ``hpln``/``hplt`` coordinates at the
        reference wavelength pixel (noted in the ``wcs_note`` attribute), ``"full"`` gives them
        dims ``(y, x, wavelength)``, ``"raise"`` raises :class:`SpiceFileError`.

    Returns
    -------
    xarray.DataTree
        Root attributes hold observation keywords; each child (named from EXTNAME, see
        :func:`window_node_name`) holds a Dataset with ``radiance`` (dims ``(y, x, wavelength)``
        or ``(time, y, wavelength)``, file unit), coordinates ``wavelength`` (Angstrom),
        ``hpln``/``hplt`` (arcsec), ``time``, and ``radcal`` (per wavelength) when the file
        has it. Pipeline keywords are attributes of the Dataset and of ``radiance``; the full
        header is the Dataset attribute ``header``.

    Raises
    ------
    SpiceFileError
        The file cannot be read (permissions), is not FITS, is truncated, is not SPICE or not
        Level 2; a window lacks WCS keywords or has invalid ones (not finite, zero CDELT,
        units that are not angles/lengths, wavelengths outside WAVEMIN/WAVEMAX); an
        instrument keyword that is present is invalid (XPOSURE or RADCAL not positive, a
        calibrated window whose BUNIT is not W/m2/sr/nm); two windows share a name; a
        requested window does not exist or has no data; or several files cannot be stacked
        (different kinds, shapes or wavelengths). The message starts with the file name.
    FileNotFoundError
        The file does not exist.

    Notes
    -----
    A window without data (``NAXIS=0`` or a zero axis length) is left out with a logged
    warning and listed in the root attribute ``windows_without_data``.

    Examples
    --------
    >>> import saffron_xr
    >>> tree = saffron_xr.open_spice(saffron_xr.ne8_window_path())
    >>> list(tree.children)
    ['Ne_VIII_770_Peak_data']
    >>> tree["Ne_VIII_770_Peak_data"].dataset.radiance.sizes
    Frozen({'y': 832, 'x': 3, 'wavelength': 50})
    """
    if mixed_wcs not in ("center", "full", "raise"):
        raise ValueError(f"mixed_wcs must be 'center', 'full' or 'raise', got {mixed_wcs!r}")
    if isinstance(path, str | os.PathLike):
        nodes, root_attrs = _open_one(path, windows, chunks, dumbbells, mixed_wcs)
        tree = xr.DataTree(xr.Dataset(attrs=root_attrs))
        for name, ds in nodes.items():
            tree[name] = xr.DataTree(ds)
        return tree
    return _open_many(list(path), windows, chunks, dumbbells, mixed_wcs)


def _check_same_layout(path: Path, ds: xr.Dataset, first: Path, ref: xr.Dataset) -> None:
    """A window of ``path`` can be stacked with the same window of ``first``."""
    ext = ds.attrs.get("EXTNAME")
    if ds.attrs.get("KIND") != ref.attrs.get("KIND"):
        kinds = {"ras": "a raster", "sit": "a sit-and-stare", "exp": "a single exposure"}
        raise _err(
            path,
            f"window {ext!r} is {kinds.get(ds.attrs.get('KIND'), '?')}, unlike {first.name} "
            f"({kinds.get(ref.attrs.get('KIND'), '?')}); such files cannot be opened together",
        )
    spatial = [d for d in ds.radiance.dims if d != "time" or ds.attrs.get("KIND") != "sit"]
    shape = {d: ds.radiance.sizes[d] for d in spatial}
    ref_shape = {d: ref.radiance.sizes[d] for d in spatial}
    if shape != ref_shape:
        raise _err(
            path,
            f"window {ext!r} has shape {shape}, unlike {first.name} ({ref_shape}); "
            "such files cannot be opened together",
        )
    wave, ref_wave = ds["wavelength"].values, ref["wavelength"].values
    if not np.array_equal(wave, ref_wave):
        shift = float(np.max(np.abs(wave - ref_wave)))
        raise _err(
            path,
            f"window {ext!r} has other wavelengths than in {first.name} (up to {shift:.3g} "
            "Angstrom apart); such files cannot be opened together",
        )


def _open_many(paths: Sequence, windows, chunks, dumbbells, mixed_wcs) -> xr.DataTree:
    if not paths:
        raise ValueError("open_spice got an empty list of files")
    opened = [(Path(p), *_open_one(p, windows, chunks, dumbbells, mixed_wcs)) for p in paths]
    ids = {attrs.get("SPIOBSID") for _, _, attrs in opened}
    if len(ids) > 1:
        listing = ", ".join(f"{p.name} ({a.get('SPIOBSID')})" for p, _, a in opened)
        raise ValueError(
            f"files of different observations (SPIOBSID) cannot be opened together: {listing}"
        )
    names = set(opened[0][1])
    for p, nodes, _ in opened[1:]:
        if set(nodes) != names:
            raise _err(
                p,
                f"has windows {sorted(nodes)}, unlike {opened[0][0].name} ({sorted(names)})",
            )
    first_path, first_nodes, _ = opened[0]
    for p, nodes, _ in opened[1:]:
        for name, ds in nodes.items():
            _check_same_layout(p, ds, first_path, first_nodes[name])
    order = sorted(
        opened, key=lambda item: (item[2].get("RASTERNO", 0), str(item[2].get("DATE-OBS", "")))
    )
    root_attrs = dict(order[0][2])
    root_attrs["filename"] = ",".join(p.name for p, _, _ in order)
    tree = xr.DataTree(xr.Dataset(attrs=root_attrs))
    for name in opened[0][1]:
        parts = [nodes[name] for _, nodes, _ in order]
        if "time" in parts[0].radiance.dims:
            combined = xr.concat(parts, dim="time", join="exact", combine_attrs="drop_conflicts")
        else:
            rasterno = [int(ds.attrs.get("RASTERNO", i)) for i, ds in enumerate(parts)]
            combined = xr.concat(
                parts,
                dim="raster",
                coords="different",
                compat="equals",
                join="exact",
                combine_attrs="drop_conflicts",
            ).assign_coords(rasterno=("raster", rasterno))
        combined.attrs["filename"] = ",".join(ds.attrs["filename"] for ds in parts)
        combined["radiance"].attrs["filename"] = combined.attrs["filename"]
        tree[name] = xr.DataTree(combined)
    return tree
