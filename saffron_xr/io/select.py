"""Select SPICE files from a list, a glob pattern or an archive folder.

Everything except the STUDY and SOOPNAME filters comes from the file names (see
:mod:`saffron_xr.io.filenames`); those two read the primary header only.
"""

from __future__ import annotations

import datetime as _dt
import glob
import logging
import os
import re
from collections.abc import Iterable
from fnmatch import fnmatchcase
from pathlib import Path

from ..errors import SpiceFileError
from .filenames import SpiceFileName, parse_kind, parse_spice_filename, to_datetime

__all__ = ["select_files", "expand_sources", "not_an_input", "NoMatchError"]

log = logging.getLogger(__name__)

_GLOB_CHARS = re.compile(r"[*?\[]")
_DATE_ONLY = re.compile(r"^\s*\d{4}-\d{2}-\d{2}\s*$")


def select_files(
    source,
    *,
    start=None,
    end=None,
    kind=None,
    study=None,
    soop=None,
    spiobsid=None,
    level=None,
) -> list[Path]:
    """Find SPICE files and filter them by date, kind, observation, study or SOOP.

    Parameters
    ----------
    source : str, path-like, or a list of them
        Each item is a file, a folder (searched recursively, as in the SPICE archive's
        ``YYYY/MM/DD`` layout) or a glob pattern (``**`` allowed). Folders and patterns
        keep only files whose names follow the SPICE convention; an explicitly listed file
        must follow it.
    start, end : str, datetime.datetime, datetime.date or numpy.datetime64, optional
        Keep files whose observation starts (time in the file name, UTC) at or after
        ``start`` and at or before ``end``. An ``end`` given as a date only
        (``"2024-04-25"`` or a ``datetime.date``) includes that whole day.
    kind : str or list of str, optional
        ``"ras"``, ``"sit"`` or ``"exp"``; ``"ras"`` also matches dumbbell (``-db``) and
        intensity (``-int``) files, ``"ras-db"`` only dumbbell rasters; a slit prefix
        (``"w-ras"``) restricts to the wide (``w``) or narrow (``n``) slit.
    study : str or list of str, optional
        STUDY keyword of the primary header; shell-style patterns (``"SCI_COMPO*"``),
        case-insensitive.
    soop : str or list of str, optional
        SOOPNAME keyword (patterns as for ``study``); a SOOPNAME listing several
        campaigns (separated by ``,`` or ``;``) matches if any of them does.
    spiobsid : int or list of int, optional
        SPICE observation ID(s).
    level : str, optional
        Processing level (``"L2"``); default: any.

    Returns
    -------
    list of pathlib.Path
        Sorted by observation start, SPIOBSID, raster number and name. Of several
        versions of one file (same level, kind, SPIOBSID, raster number) only the highest
        version is kept.

    Raises
    ------
    FileNotFoundError
        If a listed file or folder does not exist.
    SpiceFileError
        If an explicitly listed file has a non-SPICE name, or a header needed for the
        ``study`` / ``soop`` filter cannot be read.

    Examples
    --------
    >>> import tempfile
    >>> from saffron_xr.synthetic import make_spice_l2
    >>> with tempfile.TemporaryDirectory() as root:
    ...     _ = make_spice_l2(f"{root}/2024/04/25", ny=4, nx=2, nwave=40)
    ...     found = select_files(root, kind="ras", start="2024-04-25", end="2024-04-25")
    ...     print([path.name for path in found])
    ['solo_L2_spice-n-ras_20240425T121922_V01_251658647-000.fits']
    """
    candidates = _collect(source)

    start_dt = _as_bound(start, is_end=False) if start is not None else None
    end_dt = _as_bound(end, is_end=True) if end is not None else None
    kinds = _as_list(kind, "kind")
    for spec in kinds:
        parse_kind(spec)  # raises a clear ValueError on a bad spec
    obsids = {int(i) for i in _as_list(spiobsid, "spiobsid")}
    level_up = str(level).upper() if level is not None else None

    kept: list[tuple[Path, SpiceFileName]] = []
    for path, info in candidates:
        if start_dt is not None and info.date < start_dt:
            continue
        if end_dt is not None and info.date > end_dt:
            continue
        if kinds and not any(info.matches_kind(spec) for spec in kinds):
            continue
        if obsids and info.spiobsid not in obsids:
            continue
        if level_up is not None and info.level.upper() != level_up:
            continue
        kept.append((path, info))

    kept = _latest_versions(kept)

    study_patterns = _as_list(study, "study")
    soop_patterns = _as_list(soop, "soop")
    if study_patterns or soop_patterns:
        kept = [
            (path, info)
            for path, info in kept
            if _header_matches(path, study_patterns, soop_patterns)
        ]

    kept.sort(key=lambda item: (item[1].date, item[1].spiobsid, item[1].rasterno, item[0].name))
    return [path for path, _ in kept]


def _collect(source) -> list[tuple[Path, SpiceFileName]]:
    """Expand ``source`` into (path, parsed name) pairs, each resolved file once."""
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    found: dict[Path, tuple[Path, SpiceFileName]] = {}

    def add(path: Path, strict: bool) -> None:
        try:
            info = parse_spice_filename(path)
        except SpiceFileError:
            if strict:
                raise
            log.debug("skipping %s: not a SPICE file name", path)
            return
        found.setdefault(path.resolve(), (path, info))

    for item in items:
        if not isinstance(item, (str, os.PathLike)):
            raise TypeError(
                f"source items must be paths, folders or glob patterns, not {type(item).__name__}"
            )
        text = os.fspath(item)
        path = Path(text).expanduser()
        if path.is_dir():
            for root, _dirs, files in os.walk(path):
                for name in sorted(files):
                    add(Path(root) / name, strict=False)
        elif path.is_file():
            add(path, strict=True)
        elif _GLOB_CHARS.search(text):
            for match in sorted(glob.glob(os.path.expanduser(text), recursive=True)):
                match_path = Path(match)
                if match_path.is_file():
                    add(match_path, strict=False)
        else:
            raise FileNotFoundError(f"{text}: no such file or folder")
    return list(found.values())


def _latest_versions(
    items: list[tuple[Path, SpiceFileName]],
) -> list[tuple[Path, SpiceFileName]]:
    """Keep the highest version of each product (ties: first path in sorted order)."""
    best: dict[tuple, tuple[Path, SpiceFileName]] = {}
    for path, info in sorted(items, key=lambda item: str(item[0])):
        key = info.product_key
        current = best.get(key)
        if current is None or info.version > current[1].version:
            if current is not None:
                log.info("%s: superseded by version %d (%s)", current[0], info.version, path)
            best[key] = (path, info)
        else:
            log.info("%s: superseded by version %d (%s)", path, current[1].version, current[0])
    return list(best.values())


def _as_list(value, name: str) -> list:
    if value is None:
        return []
    if isinstance(value, (str, bytes, int)):
        return [value]
    if isinstance(value, Iterable):
        return list(value)
    raise TypeError(f"{name} must be a value or a list of values, not {type(value).__name__}")


def _as_bound(value, *, is_end: bool) -> _dt.datetime:
    """A start/end bound; a date-only ``end`` extends to the end of that day."""
    date_only = (isinstance(value, _dt.date) and not isinstance(value, _dt.datetime)) or (
        isinstance(value, str) and _DATE_ONLY.match(value) is not None
    )
    moment = to_datetime(value)
    if is_end and date_only:
        moment = moment + _dt.timedelta(days=1) - _dt.timedelta(microseconds=1)
    return moment


def _header_matches(path: Path, study: list, soop: list) -> bool:
    from astropy.io import fits

    try:
        header = fits.getheader(path, 0)
    except Exception as exc:  # astropy raises OSError, ValueError, TypeError, ...
        raise SpiceFileError(path, f"cannot read the primary FITS header ({exc})") from exc
    if study and not _any_match(str(header.get("STUDY", "")), study, split=False):
        return False
    if soop and not _any_match(str(header.get("SOOPNAME", "")), soop, split=True):
        return False
    return True


def _any_match(value: str, patterns: list, *, split: bool) -> bool:
    value = value.strip()
    candidates = [value]
    if split:
        candidates += [part.strip() for part in re.split(r"[,;]", value) if part.strip()]
    upper = [c.upper() for c in candidates]
    return any(fnmatchcase(c, str(p).strip().upper()) for p in patterns for c in upper)


# ----------------------------------------------------------------------------- batch inputs

_FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz")


class NoMatchError(FileNotFoundError):
    """A listed source does not exist, or a glob pattern matches no file."""


def _is_fits_name(path: Path) -> bool:
    name = path.name.lower()
    return not name.startswith(".") and name.endswith(_FITS_SUFFIXES)


def _is_spice_name(path: Path) -> bool:
    try:
        parse_spice_filename(path)
    except SpiceFileError:
        return False
    return True


def _scan(source: str) -> list[Path] | None:
    """The files under a folder or matched by a glob, sorted; None for a plain file."""
    path = Path(source)
    if path.is_dir():
        return sorted(Path(root) / name for root, _d, names in os.walk(path) for name in names)
    if glob.has_magic(source):
        found = sorted(Path(m) for m in glob.glob(source, recursive=True) if Path(m).is_file())
        if not found:
            raise NoMatchError(f"the pattern {source} matches no file")
        return found
    if not path.exists():
        raise NoMatchError(f"{source} does not exist")
    return None


def expand_sources(
    sources: list[str], exclude: Path | None = None
) -> tuple[list[str], list[Path], set[str]]:
    """Sort batch sources into files to select from and FITS files with non-SPICE names.

    Folders and globs are expanded here rather than in :func:`select_files`, which skips
    non-SPICE names there silently: a batch reports them instead.

    Parameters
    ----------
    sources : list of str
        Files, folders (searched recursively) and glob patterns.
    exclude : path-like, optional
        A folder whose files are never inputs (a batch's output folder: L3 FITS outputs keep
        the input's SPICE-like name and would otherwise compete with it as a "version").

    Returns
    -------
    keep : list of str
        Files with SPICE names, for :func:`select_files`.
    rejected : list of pathlib.Path
        FITS files (listed, or found in a folder or glob) whose names are not SPICE names.
    scanned : set of str
        The members of ``keep`` found by scanning a folder or glob rather than listed.

    Raises
    ------
    NoMatchError
        A listed file or folder does not exist, or a glob matches nothing.
    """
    exclude = Path(exclude).resolve() if exclude is not None else None
    keep: list[str] = []
    rejected: list[Path] = []
    scanned_names: set[str] = set()
    for source in sources:
        scanned = _scan(source)
        if scanned is None:  # a listed file
            if _is_spice_name(Path(source)):
                keep.append(source)
            else:
                rejected.append(Path(source))
            continue
        for f in scanned:
            if exclude is not None and f.resolve().is_relative_to(exclude):
                continue
            if _is_spice_name(f):
                keep.append(str(f))
                scanned_names.add(str(f))
            elif _is_fits_name(f):
                rejected.append(f)
    unique = {f.resolve(): f for f in rejected}
    return keep, list(unique.values()), scanned_names


def not_an_input(path) -> str | None:
    """Why ``path`` is not a Level-2 file to fit (an L3 product, a header-only file), or None.

    Only the file name and the headers are read. A file that cannot be read at all gives
    None: opening it says why, with the file's name.
    """
    from astropy.io import fits

    path = Path(path)
    level = parse_spice_filename(path).level
    if level.upper() != "L2":
        return f"a {level} file (saffron_xr fits Level-2 files)"
    try:
        with fits.open(path, lazy_load_hdus=True) as hdul:
            images = [h for h in hdul if isinstance(h, (fits.PrimaryHDU, fits.ImageHDU))]
            if all(int(h.header.get("NAXIS", 0)) == 0 for h in images):
                return "header only: no data array in any window"
    except Exception as exc:  # astropy's errors vary; the reader reports them by name
        log.debug("%s: headers not readable here (%s); the reader will say why", path, exc)
    return None
