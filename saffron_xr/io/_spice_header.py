"""Opening a SPICE L2 file and validating its headers (used by :mod:`saffron_xr.io.reader`).

Every problem raises :class:`~saffron_xr.errors.SpiceFileError` naming the file, the window and
the keyword: a file that is not FITS, truncated or padded with garbage; a window whose WCS or
instrument keywords are missing, not finite or inconsistent.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyError

from .._units import angstrom_factor
from ..errors import SpiceFileError

_WCS_REQUIRED = ("CTYPE{i}", "CUNIT{i}", "CRVAL{i}", "CDELT{i}", "CRPIX{i}")


def file_error(path, problem):
    """The :class:`SpiceFileError` for ``path`` with ``problem`` (the message names the file)."""
    return SpiceFileError(path, problem)


def open_hdulist(path: Path):
    """The file's HDU list, after checking it is a readable, complete FITS file."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise file_error(path, "is a folder, not a FITS file")
    try:
        with open(path, "rb") as fh:
            first = fh.read(30)
    except PermissionError as exc:
        raise file_error(path, "cannot be read: permission denied") from exc
    except OSError as exc:
        raise file_error(path, f"cannot be read ({exc.strerror or exc})") from exc
    if not first.startswith(b"SIMPLE  ="):
        raise file_error(path, "not a FITS file (it does not start with a SIMPLE card)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hdul = fits.open(path, memmap=False, lazy_load_hdus=False, ignore_missing_end=True)
    except Exception as exc:  # astropy raises OSError/ValueError/TypeError variously
        if not _has_end_card(path):
            raise file_error(
                path, "is truncated: its primary header ends before its END card"
            ) from exc
        raise file_error(path, f"cannot be read as FITS ({exc})") from exc
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
            raise file_error(
                path,
                f"{_hdu_label(index, hdu.header)} has {exc}: an axis length must be a whole "
                "number >= 0",
            ) from None
        if need > size:
            raise file_error(
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
            raise file_error(
                path,
                f"is truncated or corrupt: {size - end} bytes after the end of the last "
                f"complete HDU ({_hdu_label(len(hdul) - 1, hdul[-1].header)}) do not form "
                "a complete FITS HDU",
            )


def is_window(hdu) -> bool:
    """An image HDU with a WAVE axis (with or without data)."""
    if not isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU):
        return False
    hdr = hdu.header
    extname = str(hdr.get("EXTNAME", "")).strip().upper()
    if extname.startswith("WCSDVARR") or extname == "VARIABLE_KEYWORDS":
        return False
    ctypes = [str(hdr.get(f"CTYPE{i}", "")).strip().upper() for i in range(1, 5)]
    return "WAVE" in ctypes


def no_data(hdr) -> str | None:
    """Why a window header holds no data (``"NAXIS=0"``, ``"NAXIS3=0"``), or None."""
    naxis = int(hdr.get("NAXIS", 0) or 0)
    if naxis == 0:
        return "NAXIS=0"
    for i in range(1, naxis + 1):
        if int(hdr.get(f"NAXIS{i}", 0) or 0) == 0:
            return f"NAXIS{i}=0"
    return None


def is_dumbbell(path, hdr) -> bool:
    """Whether a window is a dumbbell (context) window (DUMBBELL=1 or WIN_TYPE says so)."""
    flag = _card_value(hdr, "DUMBBELL") if "DUMBBELL" in hdr else 0
    if isinstance(flag, str) or not math.isfinite(float(flag)):
        raise file_error(
            path,
            f"window {str(hdr.get('EXTNAME', '')).strip()!r} has DUMBBELL="
            f"{_raw_value(hdr, 'DUMBBELL')}; expected 0 or 1",
        )
    return bool(flag) or "DUMBBELL" in str(hdr.get("WIN_TYPE", "")).upper()


def attr_value(value):
    """A header value as an attribute value (bool as int, str stripped, numbers as they are)."""
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
        except (VerifyError, ValueError):  # an unparsable card: its value as written
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


def check_wcs(path, hdr, extname):
    """The window's WCS keywords are present, finite, non-degenerate and in known units."""
    missing = [
        key.format(i=i) for i in (1, 2, 3) for key in _WCS_REQUIRED if key.format(i=i) not in hdr
    ]
    if missing:
        raise file_error(path, f"window {extname!r} lacks the WCS keywords {', '.join(missing)}")
    for key in hdr:
        if not _WCS_NUMBER.match(key):
            continue
        value = _number(hdr, key)
        if value is None:
            raise file_error(
                path,
                f"window {extname!r} has an invalid WCS value {key}={_raw_value(hdr, key)} "
                "(not a finite number)",
            )
        if key.startswith("CDELT") and value == 0:
            raise file_error(
                path, f"window {extname!r} has {key} = 0: a zero pixel size is invalid"
            )
    if str(hdr["CTYPE1"]).strip()[:4] != "HPLN" or str(hdr["CTYPE2"]).strip()[:4] != "HPLT":
        raise file_error(
            path,
            f"window {extname!r} has axes CTYPE1={hdr['CTYPE1']!r}, CTYPE2={hdr['CTYPE2']!r}; "
            "expected HPLN-TAN and HPLT-TAN",
        )
    if str(hdr["CTYPE3"]).strip() != "WAVE":
        raise file_error(path, f"window {extname!r} has CTYPE3={hdr['CTYPE3']!r}; expected 'WAVE'")
    # without its unit a value means something else (the FITS defaults are deg and m)
    for i in (1, 2):
        unit = _card_value(hdr, f"CUNIT{i}")
        if not _is_unit(unit, "angle"):
            raise file_error(
                path,
                f"window {extname!r} has CUNIT{i}={unit!r}; expected an angle unit (arcsec)",
            )
    unit = _card_value(hdr, "CUNIT3")
    if not isinstance(unit, str) or angstrom_factor(unit) is None:
        raise file_error(
            path, f"window {extname!r} has an unknown wavelength unit CUNIT3={unit!r}"
        )
    if "CUNIT4" in hdr and str(_card_value(hdr, "CUNIT4")).strip() not in ("s", ""):
        raise file_error(
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


def check_instrument(path, hdr, extname, table_radcal) -> None:
    """Instrument keywords that are present must make sense (absent ones are not checked).

    An exposure time or calibration factor that is not positive, or a calibrated window
    whose unit is not spectral radiance, would give results that look fine and are wrong.
    """
    for key in ("XPOSURE", "RADCAL"):
        if key in hdr:
            value = _number(hdr, key)
            if value is None or value <= 0:
                what = "exposure time" if key == "XPOSURE" else "calibration factor"
                raise file_error(
                    path,
                    f"window {extname!r} has {key}={_raw_value(hdr, key)}: the {what} must "
                    "be a positive finite number",
                )
    for key in ("NBIN2", "NBIN3"):
        if key in hdr:
            value = _number(hdr, key)
            if value is None or value < 1 or value != int(value):
                raise file_error(
                    path,
                    f"window {extname!r} has {key}={_raw_value(hdr, key)}: a binning factor "
                    "must be a whole number >= 1",
                )
    if "RADCAL" in hdr or table_radcal is not None:
        bunit = _card_value(hdr, "BUNIT") if "BUNIT" in hdr else None
        if not isinstance(bunit, str) or not _is_spectral_radiance(bunit.strip()):
            shown = f"BUNIT={bunit.strip()!r}" if isinstance(bunit, str) else "no BUNIT"
            raise file_error(
                path,
                f"window {extname!r} has {shown} but a radiometric calibration (RADCAL): "
                "a calibrated SPICE L2 window holds spectral radiance in W/m2/sr/nm",
            )


def check_wave_range(path, hdr, extname, wavelength) -> None:
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
        raise file_error(path, f"window {extname!r}: its WCS wavelengths are not monotonic")
    half = abs(float(np.median(step))) / 2.0
    edges = sorted((float(wavelength.min()) - half, float(wavelength.max()) + half))
    stated = sorted((low * scale, high * scale))
    if edges[0] < stated[0] - half or edges[1] > stated[1] + half:
        raise file_error(
            path,
            f"window {extname!r}: its WCS gives wavelengths {edges[0]:.6g}-{edges[1]:.6g} "
            f"Angstrom, outside WAVEMIN/WAVEMAX ({stated[0]:.6g}-{stated[1]:.6g} Angstrom); "
            "the wavelength keywords (CRVAL3, CDELT3, CRPIX3, CUNIT3, PC3_3) are inconsistent",
        )


def wave_scale(path, hdr, extname) -> float:
    """Angstrom per unit of CUNIT3 (nm when absent); an unknown unit raises."""
    unit = str(hdr.get("CUNIT3", "nm")).strip()
    factor = angstrom_factor(unit, default="nm")
    if factor is None:
        raise file_error(
            path, f"window {extname!r} has an unknown wavelength unit CUNIT3={unit!r}"
        )
    return factor


def variable_radcal(path, hdul, extname):
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
                raise file_error(
                    path,
                    f"its VARIABLE_KEYWORDS table cannot be read ({type(exc).__name__}: {exc})",
                ) from exc
    return None


def kind_of(hdr) -> str:
    """The window kind from DATAPROD: ``"sit"`` (sit-and-stare), ``"exp"`` or ``"ras"``."""
    prod = str(hdr.get("DATAPROD", "")).lower()
    if "sit-and-stare" in prod or "sit and stare" in prod:
        return "sit"
    if "single exposure" in prod:
        return "exp"
    return "ras"
