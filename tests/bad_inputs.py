"""A generated corpus of bad (and tricky but valid) SPICE input files.

Every case starts from a real file in ``$SAFFRON_TEST_DATA/spice`` or from a small
:func:`saffron_xr.testing.make_spice_l2` raster (two windows), and breaks one thing. A case
says what the reader must answer (a :class:`~saffron_xr.errors.SpiceFileError` whose message
matches ``problem``, or nothing) and what a batch must report for the file.

Used by ``tests/test_bad_inputs.py`` and ``tests/test_header_fuzz.py``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from astropy.io import fits

from saffron_xr.io.filenames import spice_filename
from saffron_xr.testing import composition_windows, make_spice_l2

#: The two windows of the generated base raster, and their DataTree node names.
WINDOWS = ("N IV 765 - Peak", "Ne VIII 770 - Peak")
NODES = ("N_IV_765_Peak", "Ne_VIII_770_Peak")

NE8_NAME = "solo_L2_spice-n-ras_20220317T002536_V03_100663832-017_ne8-770-window.fits"
EXP_NAME = "solo_L2_spice-n-exp_20240101T213346_V02_234881027-000.fits"
L3_NAME = "reference/spicefit_L3_100663832-017_ne8-770.fits"
HEADER_ONLY_NAME = "headers/solo_L2_spice-n-sit_20200620T235901_V01_16777431-000.fits"


def make_base_raster(folder: Path, *, spiobsid: int = 251658647, seed: int = 0) -> Path:
    """A small valid two-window raster (24 x 4 pixels) named by the SPICE convention."""
    windows = [w for w in composition_windows() if w["extname"] in WINDOWS]
    truth = make_spice_l2(folder, windows=windows, ny=24, nx=4, seed=seed, spiobsid=spiobsid)
    return Path(truth.attrs["path"])


@dataclasses.dataclass(frozen=True)
class Case:
    """One corpus entry.

    Attributes
    ----------
    name : str
        Short identifier (test id).
    make : callable
        ``make(sources, dest) -> None`` writes the file ``dest``; ``sources`` maps
        ``"raster"`` (the generated base raster) and ``"data"`` (the real data folder).
    problem : str or None
        Regular expression the reader's message must match (after the file name); None if
        the reader opens the file.
    batch : str
        What a batch run must report for this file: ``"failed"``, ``"done"``,
        ``"not-done"`` (failed, or skipped with the reason; the runner may do either) or
        ``"not-an-input"`` (a folder mode batch does not list it) or ``"window-failed"``
        (the batch names the window and the problem; the file fails, or is done with the
        other windows, ``windows_done``).
    batch_problem : str or None
        Regular expression for the batch's reason (default: ``problem``).
    windows_done : tuple of str
        The windows the reader opens (when it opens the file) and, for ``"done"``, the
        window groups the output must hold.
    warns : str or None
        Regular expression a logged warning (naming the file) must match.
    windows_open : tuple of str, optional
        The windows the reader opens, if not ``windows_done``.
    """

    name: str
    make: Callable[[dict, Path], None]
    problem: str | None
    batch: str = "failed"
    batch_problem: str | None = None
    windows_done: tuple = NODES
    warns: str | None = None
    windows_open: tuple | None = None

    @property
    def reason(self) -> str | None:
        return self.batch_problem if self.batch_problem is not None else self.problem


# ----------------------------------------------------------------------------- helpers


def _rewrite(src: Path, dest: Path, edit: Callable[[fits.HDUList], None]) -> None:
    """Copy ``src`` to ``dest`` through astropy, applying ``edit`` to the HDU list."""
    with fits.open(src) as hdul, warnings.catch_warnings():
        # the real headers are not all FITS-standard; astropy's fixes do not matter here
        warnings.simplefilter("ignore")
        hdul = fits.HDUList([hdu.copy() for hdu in hdul])
        edit(hdul)
        hdul.writeto(dest, output_verify="silentfix")


def _header_edit(index: int, **changes) -> Callable[[dict, Path], None]:
    """Set (value) or delete (None) keywords of HDU ``index`` of the base raster."""

    def edit(hdul):
        hdr = hdul[index].header
        for key, value in changes.items():
            key = key.replace("__", "-")
            if value is None:
                del hdr[key]
            else:
                hdr[key] = value

    return lambda src, dest: _rewrite(src["raster"], dest, edit)


def _truncate_at(where: Callable[[Path], int]) -> Callable[[dict, Path], None]:
    def make(src, dest):
        raw = src["raster"].read_bytes()
        dest.write_bytes(raw[: where(src["raster"])])

    return make


def _hdu_info(path: Path, index: int) -> dict:
    with fits.open(path) as hdul:
        return hdul.fileinfo(index)


def _data_end(path: Path, index: int) -> int:
    with fits.open(path) as hdul:
        info = hdul.fileinfo(index)
        return info["datLoc"] + _nbytes(hdul[index].header)


def _nbytes(hdr) -> int:
    n = abs(int(hdr["BITPIX"])) // 8
    for i in range(1, int(hdr["NAXIS"]) + 1):
        n *= int(hdr[f"NAXIS{i}"])
    return n


def _raw_card(index: int, key: str, value: bytes) -> Callable[[dict, Path], None]:
    """Replace the value of card ``key`` in HDU ``index`` by raw bytes (e.g. ``NaN``)."""

    def make(src, dest):
        path = src["raster"]
        raw = bytearray(path.read_bytes())
        start = _hdu_info(path, index)["hdrLoc"]
        end = _hdu_info(path, index)["datLoc"]
        for pos in range(start, end, 80):
            if raw[pos : pos + 8] == key.ljust(8).encode():
                raw[pos + 10 : pos + 80] = value.rjust(20).ljust(70)
                break
        else:
            raise AssertionError(f"no {key} card in HDU {index}")
        dest.write_bytes(bytes(raw))

    return make


def _nan_window(index: int) -> Callable[[dict, Path], None]:
    def edit(hdul):
        hdul[index].data = np.full_like(hdul[index].data, np.nan)

    return lambda src, dest: _rewrite(src["raster"], dest, edit)


def _window_without_data(src, dest):
    """Window 1 keeps its header but has no data (NAXIS = 0), as astropy writes it."""

    def edit(hdul):
        hdul[1] = fits.ImageHDU(data=None, header=hdul[1].header.copy())

    _rewrite(src["raster"], dest, edit)


def _zero_length_window(src, dest):
    """Window 1 with zero wavelength samples: NAXIS = 4 with NAXIS3 = 0, so no data bytes.

    astropy rewrites such a header to NAXIS = 0, so the header is spliced in as bytes.
    """
    path = src["raster"]
    raw = path.read_bytes()
    info = _hdu_info(path, 1)
    with fits.open(path) as hdul:
        hdr = hdul[1].header.copy()
    hdr["NAXIS3"] = 0
    block = hdr.tostring(padding=True).encode("ascii")
    start, stop = info["hdrLoc"], info["datLoc"] + info["datSpan"]
    dest.write_bytes(raw[:start] + block + raw[stop:])


def _extra_hdus(src, dest):
    """An image without WCS, a table and a 2-D image appended: not windows, ignored."""

    def edit(hdul):
        img = fits.ImageHDU(np.zeros((8, 8), np.float32), name="CONTEXT_IMAGE")
        table = fits.BinTableHDU.from_columns(
            [fits.Column(name="TIME", format="D", array=np.arange(3.0))], name="EXTRA_TABLE"
        )
        hdul.insert(2, img)
        hdul.append(table)

    _rewrite(src["raster"], dest, edit)


def _duplicate_extname(src, dest):
    def edit(hdul):
        hdul[1].header["EXTNAME"] = hdul[0].header["EXTNAME"]

    _rewrite(src["raster"], dest, edit)


def _radcal_only_in_table(src, dest):
    """No RADCAL keyword, but the VARIABLE_KEYWORDS table has it per wavelength: usable."""

    def edit(hdul):
        for hdu in hdul[:2]:
            del hdu.header["RADCAL"]

    _rewrite(src["raster"], dest, edit)


def _no_radcal_anywhere(src, dest):
    def edit(hdul):
        for hdu in hdul[:2]:
            del hdu.header["RADCAL"]
        del hdul[-1]  # the VARIABLE_KEYWORDS table

    _rewrite(src["raster"], dest, edit)


def _copy_real(name: str) -> Callable[[dict, Path], None]:
    return lambda src, dest: shutil.copyfile(src["data"] / "spice" / name, dest)


def _text(content: bytes) -> Callable[[dict, Path], None]:
    return lambda src, dest: dest.write_bytes(content)


def _other_instrument(src, dest):
    """A FITS image from another instrument (EUI) under a SPICE-like name."""
    hdu = fits.PrimaryHDU(np.zeros((16, 16), np.float32))
    hdu.header["INSTRUME"] = "EUI"
    hdu.header["LEVEL"] = "L2"
    hdu.writeto(dest)


def _l1_real(src, dest):
    def edit(hdul):
        for hdu in hdul:
            if "LEVEL" in hdu.header:
                hdu.header["LEVEL"] = "L1"
            hdu.header["BUNIT"] = "adu"

    _rewrite(src["data"] / "spice" / NE8_NAME, dest, edit)


def _directory(src, dest):
    dest.mkdir()


# ----------------------------------------------------------------------------- the corpus


def _first_header_end(path):
    return _hdu_info(path, 0)["datLoc"]


def _second_header_middle(path):
    info = _hdu_info(path, 1)
    return info["hdrLoc"] + 2880 + 400


CASES: tuple[Case, ...] = (
    Case("text-not-fits", _text(b"This is a text file, not FITS.\n" * 20), r"not a FITS file"),
    Case("empty-file", _text(b""), r"not a FITS file"),
    Case("html-error-page", _text(b"<html><body>404 Not Found</body></html>\n"), "not a FITS"),
    Case("truncated-in-primary-header", _truncate_at(lambda p: 1000), r"truncated|cannot be"),
    Case("truncated-after-primary-header", _truncate_at(_first_header_end), r"truncated"),
    Case(
        "truncated-mid-first-window",
        _truncate_at(lambda p: _first_header_end(p) + 3000),
        r"truncated",
    ),
    Case("truncated-in-second-header", _truncate_at(_second_header_middle), r"truncated"),
    Case("truncated-last-window-short", _truncate_at(lambda p: _data_end(p, 1) - 8), "truncated"),
    Case(
        "truncated-in-radcal-table",
        _truncate_at(lambda p: _hdu_info(p, 2)["datLoc"] + 10),
        r"truncated",
    ),
    Case("other-instrument", _other_instrument, r"not a SPICE file \(INSTRUME='EUI'\)"),
    Case("level-1", _l1_real, r"not a Level-2 file \(LEVEL='L1'\)"),
    Case("level-3-real", _copy_real(L3_NAME), r"not a Level-2 file \(LEVEL='L3'\)", "not-done"),
    Case(
        "header-only-real",
        _copy_real(HEADER_ONLY_NAME),
        r"no spectral window with data",
        "not-done",
    ),
    Case("missing-CRVAL3", _header_edit(0, CRVAL3=None), r"lacks the WCS keywords CRVAL3"),
    Case(
        "missing-CTYPE1-CDELT2",
        _header_edit(1, CTYPE1=None, CDELT2=None),
        r"window 'Ne VIII 770 - Peak' lacks the WCS keywords CTYPE1, CDELT2",
    ),
    Case("nan-CDELT1", _raw_card(0, "CDELT1", b"NaN"), r"CDELT1.*not a finite number"),
    Case("nan-CRVAL3", _raw_card(1, "CRVAL3", b"NaN"), r"CRVAL3.*not a finite number"),
    Case("zero-CDELT3", _header_edit(0, CDELT3=0.0), r"CDELT3 = 0: a zero pixel size"),
    Case("missing-CUNIT3", _header_edit(0, CUNIT3=None), r"lacks the WCS keywords CUNIT3"),
    # nm values read as Angstrom: a wavelength scale ten times too small
    Case("wrong-CUNIT3", _header_edit(1, CUNIT3="Angstrom"), r"outside WAVEMIN/WAVEMAX"),
    Case("CRVAL3-off-by-2-nm", _header_edit(0, CRVAL3=74.6), r"outside WAVEMIN/WAVEMAX"),
    Case("CUNIT1-not-an-angle", _header_edit(0, CUNIT1="nm"), r"CUNIT1='nm'.*angle"),
    Case("text-CRPIX2", _header_edit(0, CRPIX2="middle"), r"CRPIX2.*not a finite number"),
    Case(
        "window-without-data",
        _window_without_data,
        None,
        "done",
        warns=r"window 'Ne VIII 770 - Peak' has no data \(NAXIS=0\)",
        windows_done=NODES[:1],
    ),
    Case(
        "zero-length-window",
        _zero_length_window,
        None,
        "done",
        warns=r"window 'Ne VIII 770 - Peak' has no data \(NAXIS3=0\)",
        windows_done=NODES[:1],
    ),
    Case(
        "all-nan-window",
        _nan_window(1),
        None,
        "window-failed",
        batch_problem=r"Ne.VIII.770.*(NaN|no wavelength sample valid|no valid)",
        windows_done=NODES[:1],
        windows_open=NODES,
    ),
    Case("missing-XPOSURE", _header_edit(0, XPOSURE=None), None, batch_problem="XPOSURE"),
    Case("missing-DETECTOR", _header_edit(1, DETECTOR=None), None, batch_problem="DETECTOR"),
    Case("missing-RADCAL-everywhere", _no_radcal_anywhere, None, batch_problem="RADCAL"),
    Case("radcal-only-in-table", _radcal_only_in_table, None, "done"),
    Case("negative-XPOSURE", _header_edit(0, XPOSURE=-5.0), r"XPOSURE=-5.*positive"),
    Case("zero-RADCAL", _header_edit(1, RADCAL=0.0), r"RADCAL=0.*positive"),
    Case(
        "wrong-BUNIT",
        _header_edit(0, BUNIT="DN/s"),
        r"BUNIT='DN/s'.*spectral radiance",
    ),
    Case("unknown-DETECTOR", _header_edit(0, DETECTOR="XW"), None, batch_problem="DETECTOR"),
    Case("extra-hdus", _extra_hdus, None, "done"),
    Case("duplicate-extname", _duplicate_extname, r"two windows named 'N IV 765 - Peak'"),
    # a batch walks into a folder whatever its name: not an input there
    Case("folder-named-fits", _directory, r"is a folder", "not-an-input"),
)


def case_names() -> list[str]:
    return [case.name for case in CASES]


def build(case: Case, sources: dict, folder: Path, index: int) -> Path:
    """Write ``case`` into ``folder`` under a SPICE file name unique to it; return the path."""
    name = spice_filename("ras", "2024-04-25T12:19:22", 1, 900000 + index, 0)
    dest = Path(folder) / name
    case.make(sources, dest)
    return dest


def unreadable(path: Path) -> bool:
    """Make ``path`` unreadable by this process (chmod 000); False if it stays readable.

    A root process reads any file whatever its mode (CAP_DAC_OVERRIDE), so as root this
    returns False and the caller must take another way.
    """
    os.chmod(path, 0)
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        return True
    return False
