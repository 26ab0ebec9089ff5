"""Catalog entries: the :class:`Line` and :class:`Window` records and their validation.

Shared by :class:`~saffron_xr.catalog.LineCatalog` (loading files and editing) so that a line
or window is checked by the same code whichever way it enters a catalog; every error names
the file (when there is one) and the offending entry.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "CatalogError",
    "Line",
    "Window",
    "LABEL_TOLERANCE",
    "ION_RE",
    "ELEMENT_SYMBOLS",
    "where_prefix",
    "validate_line",
    "make_line",
    "make_window",
]

#: A label's number may differ from the rest wavelength by at most this much (Angstrom).
LABEL_TOLERANCE = 0.05

ION_RE = re.compile(r"^([a-z]{1,2})_([1-9]\d?)$")
_NAME_RE = re.compile(r"^([a-z]{1,2}_[1-9]\d?) (\d+(?:\.\d+)?)$")
_DETECTORS = ("SW", "LW")

#: element symbols for CHIANTI ion prefixes (used when add_line is not given element=);
#: FIPs come from the catalog file's ``elements`` table or its lines.
ELEMENT_SYMBOLS = {
    "h": "H", "he": "He", "c": "C", "n": "N", "o": "O", "ne": "Ne", "na": "Na", "mg": "Mg",
    "al": "Al", "si": "Si", "s": "S", "ar": "Ar", "ca": "Ca", "fe": "Fe", "ni": "Ni",
}  # fmt: skip


class CatalogError(ValueError):
    """An invalid line catalog file or an invalid edit of a :class:`LineCatalog`.

    The message names the file (when there is one) and the offending entry.
    """


@dataclass(frozen=True)
class Line:
    """One emission line of the catalog.

    Attributes
    ----------
    name : str
        Line identifier, ``"<ion> <wavelength>"`` (e.g. ``"ne_8 770.42"``): the ion and the
        wavelength as commonly quoted, within 0.05 Angstrom of ``rest_wavelength``.
    ion : str
        CHIANTI-style ion, element symbol in lower case and spectroscopic stage
        (``"ne_8"`` is Ne VIII).
    element : str
        Element symbol (``"Ne"``).
    rest_wavelength : float
        Vacuum rest wavelength in Angstrom.
    fip : float
        First-ionisation potential of the element, eV.
    log_t : float
        Approximate formation temperature, log10(T / K).
    detector : str or None
        SPICE detector that records the line, ``"SW"`` or ``"LW"``.
    transition : str
        Lower and upper level of the transition.
    source : str
        Where ``rest_wavelength`` comes from (file and levels).
    """

    name: str
    ion: str
    element: str
    rest_wavelength: float
    fip: float
    log_t: float
    detector: str | None = None
    transition: str = ""
    source: str = ""


@dataclass(frozen=True)
class Window:
    """A named group of lines with its brightest member.

    A *window* (``blend=False``) lists lines recorded together by SPICE studies; its brightest
    line anchors the wavelength-offset estimate of :func:`~saffron_xr.guess_model`. A *blend*
    (``blend=True``) lists lines closer together than SPICE resolves; the initial-model builder
    fits them as one component named after the brightest line.
    """

    name: str
    lines: tuple[str, ...]
    brightest: str
    blend: bool = False


def where_prefix(path) -> str:
    """``"<path>: "`` to start an error message, or ``""`` without a file."""
    return f"{path}: " if path is not None else ""


def validate_line(entry, index, elements, path) -> Line:
    """The :class:`Line` of entry ``index`` of a catalog file's ``lines`` (raises
    :class:`CatalogError` naming the file and entry)."""
    where = f"{where_prefix(path)}lines[{index}]"
    if not isinstance(entry, dict):
        raise CatalogError(f"{where}: expected an object, got {type(entry).__name__}")
    required = ("name", "ion", "element", "rest_wavelength", "fip", "log_t")
    missing = [k for k in required if k not in entry]
    if missing:
        raise CatalogError(f"{where}: missing required key(s) {missing}")
    known = set(required) | {"detector", "transition", "source"}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise CatalogError(f"{where} ({entry.get('name')!r}): unknown key(s) {unknown}")
    name = entry["name"]
    where = f"{where} ({name!r})"
    line = make_line(
        name=name,
        ion=entry["ion"],
        element=entry["element"],
        rest_wavelength=entry["rest_wavelength"],
        fip=entry["fip"],
        log_t=entry["log_t"],
        detector=entry.get("detector"),
        transition=entry.get("transition", ""),
        source=entry.get("source", ""),
        where=where,
    )
    el = elements.get(line.element)
    if el is not None and abs(float(el["fip"]) - line.fip) > 1e-6:
        raise CatalogError(
            f"{where}: fip {line.fip} eV differs from elements[{line.element!r}] ({el['fip']} eV)"
        )
    return line


def _number(value, key, where, lo=None, hi=None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CatalogError(f"{where}: {key} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise CatalogError(f"{where}: {key} must be finite, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise CatalogError(f"{where}: {key}={value} outside [{lo}, {hi}]")
    return value


def make_line(
    *, name, ion, element, rest_wavelength, fip, log_t, detector, transition, source, where
) -> Line:
    """A validated :class:`Line`; ``where`` starts every error message."""
    if not isinstance(ion, str) or not ION_RE.match(ion):
        raise CatalogError(f"{where}: ion {ion!r} is not CHIANTI-style like 'ne_8'")
    symbol = ion.split("_")[0]
    if not isinstance(element, str) or element.lower() != symbol:
        raise CatalogError(f"{where}: element {element!r} does not match ion {ion!r}")
    rest = _number(rest_wavelength, "rest_wavelength", where, 1.0, 1e5)
    if not isinstance(name, str):
        raise CatalogError(f"{where}: name must be a string, got {name!r}")
    m = _NAME_RE.match(name)
    if m is None or m.group(1) != ion:
        raise CatalogError(
            f"{where}: name {name!r} must be '<ion> <wavelength>' with ion {ion!r}, "
            f"e.g. '{ion} {rest:.2f}'"
        )
    if abs(float(m.group(2)) - rest) > LABEL_TOLERANCE:
        raise CatalogError(
            f"{where}: name {name!r} is more than {LABEL_TOLERANCE} Angstrom from "
            f"rest_wavelength {rest}"
        )
    fip = _number(fip, "fip", where, 0.1, 100.0)
    log_t = _number(log_t, "log_t", where, 3.0, 9.0)
    if detector is not None and detector not in _DETECTORS:
        raise CatalogError(f"{where}: detector {detector!r} is not one of {_DETECTORS} or null")
    for key, val in (("transition", transition), ("source", source)):
        if not isinstance(val, str):
            raise CatalogError(f"{where}: {key} must be a string, got {val!r}")
    return Line(name, ion, element, rest, fip, log_t, detector, transition, source)


def make_window(name, lines, brightest, blend, known, where) -> Window:
    """A validated :class:`Window` over the line names in ``known``; ``where`` starts every
    error message."""
    if not isinstance(name, str) or not name.strip():
        raise CatalogError(f"{where}: window name must be a non-empty string, got {name!r}")
    where = f"{where} ({name!r})"
    if isinstance(lines, str) or not isinstance(lines, Iterable):
        raise CatalogError(f"{where}: lines must be a list of line names, got {lines!r}")
    lines = tuple(lines)
    if not lines:
        raise CatalogError(f"{where}: a window needs at least one line")
    unknown = [n for n in lines if n not in known]
    if unknown:
        raise CatalogError(f"{where}: unknown line(s) {unknown}; add them to the catalog first")
    dupes = sorted({n for n in lines if lines.count(n) > 1})
    if dupes:
        raise CatalogError(f"{where}: line(s) {dupes} listed more than once")
    if brightest is None:
        if len(lines) > 1:
            raise CatalogError(f"{where}: say which of {list(lines)} is the brightest")
        brightest = lines[0]
    if brightest not in lines:
        raise CatalogError(f"{where}: brightest line {brightest!r} is not in the window {lines}")
    if not isinstance(blend, bool):
        raise CatalogError(f"{where}: blend must be true or false, got {blend!r}")
    return Window(name, lines, brightest, blend)
