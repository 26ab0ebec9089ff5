"""SPICE file names: parse them without opening the file, and build them.

SPICE archive files are named ::

    solo_<level>_spice[-concat]-<slit>-<kind>[-db][-int]_<YYYYMMDDTHHMMSS>_V<version>_<SPIOBSID>-<RASTERNO>.fits

for example ``solo_L2_spice-n-ras_20220317T002536_V03_100663832-017.fits``: level ``L2``,
narrow slit (``n``; ``w`` is the wide slit), a raster (``ras``; also ``sit`` for
sit-and-stare and ``exp`` for single exposures), ``-db`` when the file holds dumbbell
windows, ``-int`` for intensity windows, the start of the observation (UTC), the file
version, the SPICE observation ID and the raster number. Text after the raster number
(``..._100663832-017_ne8-770-window.fits``) is kept as :attr:`SpiceFileName.suffix`.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SpiceFileError

__all__ = ["SpiceFileName", "parse_kind", "parse_spice_filename", "spice_filename"]

KINDS = ("ras", "sit", "exp")
SLITS = ("n", "w")

_NAME_RE = re.compile(
    r"""
    ^solo_(?P<level>L\d)
    _spice(?P<concat>-concat)?
    -(?P<slit>[nw])
    -(?P<kind>ras|sit|exp)
    (?P<db>-db)?
    (?P<int>-int)?
    _(?P<date>\d{8}T\d{6})(?P<fraction>\d*)
    _V(?P<version>\d+)
    _(?P<spiobsid>\d+)-(?P<rasterno>\d+)
    (?:_(?P<suffix>[^.]*))?
    (?P<extension>\.(?:fits|fit|fts)(?:\.gz)?)$
    """,
    re.VERBOSE | re.IGNORECASE,
)

_KIND_SPEC_RE = re.compile(
    r"^(?:(?P<slit>[nw])-)?(?P<kind>ras|sit|exp)(?P<db>-db)?(?P<int>-int)?$", re.IGNORECASE
)


@dataclass(frozen=True)
class SpiceFileName:
    """What a SPICE file name says about the file (see the module docstring).

    Attributes
    ----------
    name : str
        The file name without its folder.
    level : str
        Processing level, e.g. ``"L2"``.
    slit : str
        ``"n"`` (narrow slit) or ``"w"`` (wide slit).
    kind : str
        ``"ras"`` (raster), ``"sit"`` (sit-and-stare) or ``"exp"`` (single exposure).
    dumbbell : bool
        The name carries ``-db`` (the file holds dumbbell windows).
    intensity : bool
        The name carries ``-int`` (intensity windows).
    concat : bool
        The name carries ``-concat`` (a concatenated file).
    date : datetime.datetime
        Start of the observation (UTC, naive), from the name.
    version : int
        File version (``V03`` -> 3).
    spiobsid : int
        SPICE observation ID.
    rasterno : int
        Raster number within the observation.
    suffix : str
        Any text between the raster number and the extension ("" normally).
    extension : str
        ``".fits"``, ``".fits.gz"``, ...
    """

    name: str
    level: str
    slit: str
    kind: str
    dumbbell: bool
    intensity: bool
    concat: bool
    date: _dt.datetime
    version: int
    spiobsid: int
    rasterno: int
    suffix: str
    extension: str

    @property
    def kind_full(self) -> str:
        """The kind with its suffixes, as in the name: ``"ras"``, ``"ras-db"``, ``"sit-int"``..."""
        return self.kind + ("-db" if self.dumbbell else "") + ("-int" if self.intensity else "")

    @property
    def product_key(self) -> tuple:
        """Identity of the data product regardless of its version (used to de-duplicate)."""
        return (
            self.level.upper(),
            self.concat,
            self.slit.lower(),
            self.kind_full.lower(),
            self.spiobsid,
            self.rasterno,
            self.suffix,
        )

    def matches_kind(self, spec: str) -> bool:
        """Whether the file is of the kind ``spec`` (see :func:`parse_kind`).

        Parameters
        ----------
        spec : str
            A kind such as ``"ras"``, ``"n-sit"`` or ``"ras-db"``.

        Returns
        -------
        bool
        """
        slit, kind, dumbbell, intensity = parse_kind(spec)
        return (
            kind == self.kind.lower()
            and (slit is None or slit == self.slit.lower())
            and (not dumbbell or self.dumbbell)
            and (not intensity or self.intensity)
        )


def parse_kind(spec: str) -> tuple[str | None, str, bool, bool]:
    """Split a kind specification such as ``"ras"``, ``"ras-db"`` or ``"w-exp"``.

    Parameters
    ----------
    spec : str
        ``[n-|w-]{ras,sit,exp}[-db][-int]``.

    Returns
    -------
    tuple
        ``(slit or None, kind, dumbbell, intensity)``.

    Raises
    ------
    ValueError
        If ``spec`` is not a kind specification.
    """
    match = _KIND_SPEC_RE.match(str(spec).strip())
    if match is None:
        raise ValueError(
            f"unknown SPICE file kind {spec!r}; expected [n-|w-]ras|sit|exp[-db][-int], "
            "e.g. 'ras', 'ras-db', 'w-exp'"
        )
    slit = match["slit"].lower() if match["slit"] else None
    return slit, match["kind"].lower(), bool(match["db"]), bool(match["int"])


def parse_spice_filename(path: str | os.PathLike) -> SpiceFileName:
    """Read level, kind, date, version, SPIOBSID and raster number from a SPICE file name.

    The file is not opened (it need not exist).

    Parameters
    ----------
    path : str or path-like
        A file name or path.

    Returns
    -------
    SpiceFileName

    Raises
    ------
    SpiceFileError
        If the name does not follow the SPICE convention.

    Examples
    --------
    >>> info = parse_spice_filename("solo_L2_spice-n-ras_20220317T002536_V03_100663832-017.fits")
    >>> info.kind, info.version, info.spiobsid, info.rasterno
    ('ras', 3, 100663832, 17)
    >>> info.date
    datetime.datetime(2022, 3, 17, 0, 25, 36)
    """
    name = Path(path).name
    match = _NAME_RE.match(name)
    if match is None:
        raise SpiceFileError(
            path,
            "file name does not follow the SPICE convention "
            "solo_<level>_spice-<n|w>-<ras|sit|exp>[-db][-int]_<YYYYMMDDTHHMMSS>_V<version>"
            "_<SPIOBSID>-<RASTERNO>.fits",
        )
    try:
        date = _dt.datetime.strptime(match["date"], "%Y%m%dT%H%M%S")
    except ValueError as exc:
        raise SpiceFileError(path, f"invalid date {match['date']!r} in the file name") from exc
    fraction = match["fraction"]
    if fraction:
        date += _dt.timedelta(microseconds=round(float("0." + fraction) * 1e6))
    return SpiceFileName(
        name=name,
        level=match["level"],
        slit=match["slit"],
        kind=match["kind"],
        dumbbell=bool(match["db"]),
        intensity=bool(match["int"]),
        concat=bool(match["concat"]),
        date=date,
        version=int(match["version"]),
        spiobsid=int(match["spiobsid"]),
        rasterno=int(match["rasterno"]),
        suffix=match["suffix"] or "",
        extension=match["extension"],
    )


def to_datetime(value) -> _dt.datetime:
    """Convert a str / datetime / date / numpy.datetime64 to a naive UTC ``datetime``.

    Parameters
    ----------
    value : str, datetime.datetime, datetime.date or numpy.datetime64
        ISO strings may carry a trailing ``Z``; timezone-aware datetimes are converted to UTC.

    Returns
    -------
    datetime.datetime
    """
    if isinstance(value, _dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(_dt.timezone.utc).replace(tzinfo=None)
        return value
    if isinstance(value, _dt.date):
        return _dt.datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1]
        try:
            value = np.datetime64(text, "us")
        except ValueError as exc:
            raise ValueError(f"cannot read a date/time from {value!r}") from exc
    if isinstance(value, np.datetime64):
        if np.isnat(value):
            raise ValueError("a date/time is NaT")
        micro = int(value.astype("datetime64[us]").astype(np.int64))
        return _dt.datetime(1970, 1, 1) + _dt.timedelta(microseconds=micro)
    raise TypeError(f"cannot read a date/time from {value!r} (type {type(value).__name__})")


def spice_filename(
    kind: str,
    date,
    version: int,
    spiobsid: int,
    rasterno: int,
    *,
    level: str = "L2",
    slit: str = "n",
    suffix: str = "",
    extension: str = ".fits",
) -> str:
    """Build a SPICE file name.

    Parameters
    ----------
    kind : str
        ``"ras"``, ``"sit"`` or ``"exp"``, optionally with ``-db`` / ``-int`` suffixes and a
        slit prefix (``"w-ras"``); a prefix overrides ``slit``.
    date : str, datetime or numpy.datetime64
        Start of the observation (UTC); written to the second.
    version : int
        File version (written as ``V01``).
    spiobsid : int
        SPICE observation ID.
    rasterno : int
        Raster number (written with three digits).
    level : str, optional
        Processing level, default ``"L2"``.
    slit : str, optional
        ``"n"`` (narrow, default) or ``"w"`` (wide).
    suffix : str, optional
        Extra text after the raster number (joined with ``_``).
    extension : str, optional
        Default ``".fits"``.

    Returns
    -------
    str
        The file name (no folder).

    Examples
    --------
    >>> spice_filename("ras", "2024-04-25T12:19:22.5", 1, 251658647, 0)
    'solo_L2_spice-n-ras_20240425T121922_V01_251658647-000.fits'
    >>> spice_filename("ras-db", "2020-06-02T08:17:33", 1, 12583760, 0)
    'solo_L2_spice-n-ras-db_20200602T081733_V01_12583760-000.fits'
    """
    spec_slit, base, dumbbell, intensity = parse_kind(kind)
    slit = (spec_slit or slit).lower()
    if slit not in SLITS:
        raise ValueError(f"slit must be 'n' or 'w', not {slit!r}")
    if not re.fullmatch(r"L\d", str(level)):
        raise ValueError(f"level must look like 'L2', not {level!r}")
    stamp = to_datetime(date).strftime("%Y%m%dT%H%M%S")
    full_kind = base + ("-db" if dumbbell else "") + ("-int" if intensity else "")
    tail = f"_{suffix}" if suffix else ""
    return (
        f"solo_{level}_spice-{slit}-{full_kind}_{stamp}_V{int(version):02d}"
        f"_{int(spiobsid)}-{int(rasterno):03d}{tail}{extension}"
    )
