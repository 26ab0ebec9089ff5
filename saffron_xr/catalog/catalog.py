"""The SPICE line catalog: emission lines, their physics, and named windows / blends.

The default catalog ships as package data (``spice_lines.json``, generated from CHIANTI by
``tools/make_catalog.py``); its schema is documented in ``SCHEMA.md`` next to this module and
in :class:`LineCatalog`. Every file is validated when it is loaded, with errors that name the
file and the offending entry.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from pathlib import Path

from ._entries import (
    ELEMENT_SYMBOLS,
    ION_RE,
    CatalogError,
    Line,
    Window,
    make_line,
    make_window,
    validate_line,
    where_prefix,
)

__all__ = ["CatalogError", "Line", "Window", "LineCatalog", "FORMAT", "FORMAT_VERSION"]

FORMAT = "saffron_xr line catalog"
FORMAT_VERSION = 1
DEFAULT_FILE = "spice_lines.json"


@dataclass
class _Meta:
    description: str = ""
    units: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    elements: dict = field(default_factory=dict)


class LineCatalog:
    """An editable list of emission lines with named windows and blends.

    Parameters
    ----------
    lines : iterable of Line, optional
        The lines (names must be unique).
    windows : iterable of Window, optional
        Named windows / blends referring to those lines.
    description : str, optional
        Free text saved with the catalog.

    Notes
    -----
    File format (JSON, ``format_version`` 1; full description in ``catalog/SCHEMA.md``)::

        {"format": "saffron_xr line catalog", "format_version": 1,
         "description": "...", "units": {...}, "provenance": {...},
         "elements": {"Ne": {"z": 10, "fip": 21.565}, ...},
         "lines": [{"name": "ne_8 770.42", "ion": "ne_8", "element": "Ne",
                    "rest_wavelength": 770.428, "fip": 21.565, "log_t": 5.8,
                    "detector": "SW", "transition": "...", "source": "..."}, ...],
         "windows": [{"name": "Ne VIII 770", "lines": ["mg_8 769.36", "ne_8 770.42"],
                      "brightest": "ne_8 770.42", "blend": false}, ...]}

    Required line keys: ``name``, ``ion``, ``element``, ``rest_wavelength`` (Angstrom),
    ``fip`` (eV), ``log_t``; optional ``detector`` (``"SW"``/``"LW"``/null), ``transition``,
    ``source``. Names are ``"<ion> <wavelength>"`` with the number within 0.05 Angstrom of the
    rest wavelength. Windows must name known lines and contain their brightest line.

    Examples
    --------
    >>> cat = LineCatalog.default()
    >>> cat["ne_8 770.42"].rest_wavelength
    770.428
    >>> sorted(cat.in_range(768.0, 773.0).names)
    ['mg_8 769.36', 'mg_8 772.26', 'ne_8 770.42']
    """

    def __init__(self, lines: Iterable[Line] = (), windows: Iterable[Window] = (), *,
                 description: str = ""):  # fmt: skip
        self._lines: dict[str, Line] = {}
        self._windows: dict[str, Window] = {}
        self._meta = _Meta(description=description)
        for line in lines:
            if not isinstance(line, Line):
                raise CatalogError(f"expected Line objects, got {type(line).__name__}")
            if line.name in self._lines:
                raise CatalogError(f"duplicate line name {line.name!r}")
            self._lines[line.name] = line
        for win in windows:
            self._add_window(win, where="window")

    # ----------------------------------------------------------------- construction / IO
    @classmethod
    def default(cls) -> LineCatalog:
        """The default SPICE catalog shipped with the package (a fresh, editable copy).

        Returns
        -------
        LineCatalog
            At least 35 lines on both SPICE detectors, rest wavelengths from CHIANTI.
        """
        resource = files("saffron_xr.catalog") / DEFAULT_FILE
        return cls._from_text(
            resource.read_text(encoding="utf-8"), path=f"<package>/{DEFAULT_FILE}"
        )

    @classmethod
    def load(cls, path) -> LineCatalog:
        """Read and validate a catalog JSON file.

        Parameters
        ----------
        path : str or path-like
            The file.

        Returns
        -------
        LineCatalog

        Raises
        ------
        CatalogError
            If the file is not valid JSON or does not follow the schema; the message names
            the file and the offending entry.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CatalogError(f"{path}: cannot read catalog ({exc.strerror})") from exc
        return cls._from_text(text, path=path)

    @classmethod
    def from_dict(cls, data: dict, *, path=None) -> LineCatalog:
        """Build a catalog from the parsed JSON structure, validating it.

        Parameters
        ----------
        data : dict
            The structure described in the class notes.
        path : str, optional
            Name used in error messages.

        Returns
        -------
        LineCatalog
        """
        where = where_prefix(path)
        if not isinstance(data, dict):
            raise CatalogError(f"{where}top level must be a JSON object")
        if data.get("format") != FORMAT:
            raise CatalogError(f"{where}'format' must be {FORMAT!r}, got {data.get('format')!r}")
        if data.get("format_version") != FORMAT_VERSION:
            raise CatalogError(
                f"{where}unsupported format_version {data.get('format_version')!r} "
                f"(this version reads {FORMAT_VERSION})"
            )
        known = {"format", "format_version", "description", "units", "provenance", "elements",
                 "lines", "windows"}  # fmt: skip
        unknown = sorted(set(data) - known)
        if unknown:
            raise CatalogError(f"{where}unknown top-level key(s) {unknown}")
        elements = data.get("elements", {})
        if not isinstance(elements, dict) or not all(
            isinstance(v, dict) and "fip" in v for v in elements.values()
        ):
            raise CatalogError(f"{where}'elements' must map symbols to objects with 'fip'")
        raw_lines = data.get("lines")
        if not isinstance(raw_lines, list):
            raise CatalogError(f"{where}'lines' must be a list")
        lines = []
        seen = set()
        for i, entry in enumerate(raw_lines):
            line = validate_line(entry, i, elements, path)
            if line.name in seen:
                raise CatalogError(f"{where}lines[{i}]: duplicate line name {line.name!r}")
            seen.add(line.name)
            lines.append(line)
        cat = cls(lines, description=str(data.get("description", "")))
        raw_windows = data.get("windows", [])
        if not isinstance(raw_windows, list):
            raise CatalogError(f"{where}'windows' must be a list")
        for i, entry in enumerate(raw_windows):
            w_where = f"{where}windows[{i}]"
            if not isinstance(entry, dict) or "name" not in entry or "lines" not in entry:
                raise CatalogError(f"{w_where}: expected an object with 'name' and 'lines'")
            extra = sorted(set(entry) - {"name", "lines", "brightest", "blend"})
            if extra:
                raise CatalogError(f"{w_where}: unknown key(s) {extra}")
            win = make_window(entry["name"], entry["lines"], entry.get("brightest"),
                               entry.get("blend", False), cat._lines, w_where)  # fmt: skip
            cat._add_window(win, where=w_where)
        cat._meta.units = dict(data.get("units", {}))
        cat._meta.provenance = dict(data.get("provenance", {}))
        cat._meta.elements = {k: dict(v) for k, v in elements.items()}
        return cat

    @classmethod
    def _from_text(cls, text: str, path) -> LineCatalog:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CatalogError(f"{path}: not valid JSON ({exc})") from exc
        return cls.from_dict(data, path=path)

    def to_dict(self) -> dict:
        """The catalog as the JSON structure :meth:`dump` writes.

        Returns
        -------
        dict
        """
        lines = []
        for line in self._sorted_lines():
            d = asdict(line)
            lines.append({k: v for k, v in d.items() if not (k == "detector" and v is None)})
        elements = dict(self._meta.elements)
        for line in self._lines.values():
            elements.setdefault(line.element, {"fip": line.fip})
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "description": self._meta.description,
            "units": self._meta.units
            or {"rest_wavelength": "Angstrom (vacuum)", "fip": "eV", "log_t": "log10(K)"},
            "provenance": self._meta.provenance,
            "elements": elements,
            "lines": lines,
            "windows": [
                {
                    "name": w.name,
                    "lines": list(w.lines),
                    "brightest": w.brightest,
                    "blend": w.blend,
                }  # fmt: skip
                for w in self._windows.values()
            ],
        }

    def dump(self, path) -> None:
        """Write the catalog to a JSON file that :meth:`load` reads back unchanged.

        Parameters
        ----------
        path : str or path-like
            Output file (overwritten).
        """
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")

    # ----------------------------------------------------------------- edits
    def add_line(
        self,
        name: str | None = None,
        *,
        ion: str,
        rest_wavelength: float,
        fip: float | None = None,
        log_t: float,
        element: str | None = None,
        detector: str | None = None,
        transition: str = "",
        source: str = "user",
    ) -> Line:
        """Add a line (in place).

        Parameters
        ----------
        name : str, optional
            Identifier; default ``f"{ion} {rest_wavelength:.2f}"``.
        ion : str
            CHIANTI-style ion, e.g. ``"fe_12"``.
        rest_wavelength : float
            Rest wavelength, Angstrom.
        fip : float, optional
            First-ionisation potential of the element (eV); default: the catalog's value for
            the element (an error if the catalog has no line of that element).
        log_t : float
            Approximate formation temperature, log10(T/K).
        element : str, optional
            Element symbol; default from ``ion``.
        detector : {"SW", "LW", None}
            SPICE detector.
        transition, source : str
            Free text: levels and where the wavelength comes from.

        Returns
        -------
        Line
            The new line.

        Raises
        ------
        CatalogError
            Duplicate name, malformed ion/name, or values out of range.
        """
        if not isinstance(ion, str) or not ION_RE.match(ion):
            raise CatalogError(f"add_line: ion {ion!r} is not CHIANTI-style like 'ne_8'")
        symbol = ion.split("_")[0]
        if element is None:
            element = ELEMENT_SYMBOLS.get(symbol, symbol.capitalize())
        if name is None:
            name = f"{ion} {float(rest_wavelength):.2f}"
        if name in self._lines:
            raise CatalogError(f"add_line: a line named {name!r} is already in the catalog")
        if fip is None:
            fip = self._element_fip(element)
            if fip is None:
                raise CatalogError(
                    f"add_line: no FIP known for element {element!r}; pass fip= (eV)"
                )
        line = make_line(
            name=name, ion=ion, element=element, rest_wavelength=rest_wavelength, fip=fip,
            log_t=log_t, detector=detector, transition=transition, source=source,
            where=f"add_line({name!r})",
        )  # fmt: skip
        self._lines[name] = line
        return line

    def remove_line(self, name: str, *, from_windows: bool = False) -> None:
        """Remove a line (in place).

        Parameters
        ----------
        name : str
            The line.
        from_windows : bool, default False
            Also take the line out of the windows that list it (a window left empty is
            removed). Without it, removing a line a window uses is an error.

        Raises
        ------
        CatalogError
            Unknown line; line used by windows (without ``from_windows``); line is the
            brightest of a window that would keep other lines.
        """
        if name not in self._lines:
            raise CatalogError(f"remove_line: no line named {name!r} in the catalog")
        users = [w for w in self._windows.values() if name in w.lines]
        if users and not from_windows:
            raise CatalogError(
                f"remove_line: {name!r} is used by window(s) {[w.name for w in users]}; "
                "remove them first or pass from_windows=True"
            )
        for w in users:
            rest = tuple(n for n in w.lines if n != name)
            if rest and w.brightest == name:
                raise CatalogError(
                    f"remove_line: {name!r} is the brightest line of window {w.name!r}; "
                    "remove or redefine that window first"
                )
        for w in users:
            rest = tuple(n for n in w.lines if n != name)
            if rest:
                self._windows[w.name] = Window(w.name, rest, w.brightest, w.blend)
            else:
                del self._windows[w.name]
        del self._lines[name]

    def add_window(
        self,
        lines: Iterable[str],
        brightest: str | None = None,
        *,
        name: str | None = None,
        blend: bool = False,
    ) -> Window:
        """Add a named window or blend group (in place).

        Parameters
        ----------
        lines : iterable of str
            Names of catalog lines.
        brightest : str, optional
            The brightest of ``lines`` (required when there is more than one line).
        name : str, optional
            Window name; default the brightest line's name (``" blend"`` appended for blends).
        blend : bool, default False
            True if the lines are closer than SPICE resolves and should be fitted as one.

        Returns
        -------
        Window

        Raises
        ------
        CatalogError
            Unknown line, duplicate line, brightest not in the window, duplicate name.
        """
        lines = tuple(lines) if not isinstance(lines, str) else (lines,)
        b = brightest if brightest is not None else (lines[0] if len(lines) == 1 else None)
        if name is None and b is not None:
            name = f"{b} blend" if blend else b
        win = make_window(name, lines, brightest, blend, self._lines, "add_window")
        self._add_window(win, where="add_window")
        return win

    def remove_window(self, name: str) -> None:
        """Remove a window or blend group by name (in place); its lines stay.

        Parameters
        ----------
        name : str
            The window or blend group's name.

        Raises
        ------
        CatalogError
            If there is no such window.
        """
        if name not in self._windows:
            raise CatalogError(
                f"remove_window: no window named {name!r}; known: {sorted(self._windows)}"
            )
        del self._windows[name]

    def _add_window(self, win: Window, where: str) -> None:
        if not isinstance(win, Window):
            raise CatalogError(f"{where}: expected a Window, got {type(win).__name__}")
        if win.name in self._windows:
            raise CatalogError(f"{where}: a window named {win.name!r} already exists")
        make_window(win.name, win.lines, win.brightest, win.blend, self._lines, where)
        self._windows[win.name] = win

    def _element_fip(self, element: str) -> float | None:
        el = self._meta.elements.get(element)
        if el is not None:
            return float(el["fip"])
        for line in self._lines.values():
            if line.element == element:
                return line.fip
        return None

    # ----------------------------------------------------------------- queries
    def _sorted_lines(self) -> list[Line]:
        return sorted(self._lines.values(), key=lambda ln: (ln.rest_wavelength, ln.name))

    @property
    def names(self) -> list[str]:
        """Line names, by increasing rest wavelength."""
        return [ln.name for ln in self._sorted_lines()]

    @property
    def lines(self):
        """The lines as a table (``pandas.DataFrame`` indexed by name, by wavelength).

        Columns: ``ion``, ``element``, ``rest_wavelength`` (Angstrom), ``fip`` (eV),
        ``log_t``, ``detector``, ``transition``, ``source``.
        """
        import pandas as pd

        rows = [asdict(ln) for ln in self._sorted_lines()]
        cols = ["name", "ion", "element", "rest_wavelength", "fip", "log_t", "detector",
                "transition", "source"]  # fmt: skip
        return pd.DataFrame(rows, columns=cols).set_index("name")

    @property
    def windows(self) -> dict[str, Window]:
        """Windows and blends by name (a copy; edit with :meth:`add_window`)."""
        return dict(self._windows)

    @property
    def description(self) -> str:
        """Free-text description saved with the catalog."""
        return self._meta.description

    @property
    def provenance(self) -> dict:
        """Where the numbers come from (copied from the file)."""
        return dict(self._meta.provenance)

    def in_range(self, wmin: float, wmax: float) -> LineCatalog:
        """The lines with rest wavelength in ``[wmin, wmax]`` (Angstrom) as a new catalog.

        Windows are kept restricted to those lines when their brightest line is inside.

        Parameters
        ----------
        wmin, wmax : float
            Wavelength range, Angstrom.

        Returns
        -------
        LineCatalog
        """
        if not wmin <= wmax:
            raise ValueError(f"in_range: wmin {wmin} is larger than wmax {wmax}")
        keep = [ln for ln in self._sorted_lines() if wmin <= ln.rest_wavelength <= wmax]
        names = {ln.name for ln in keep}
        wins = []
        for w in self._windows.values():
            sub = tuple(n for n in w.lines if n in names)
            if sub and w.brightest in names:
                wins.append(Window(w.name, sub, w.brightest, w.blend))
        out = LineCatalog(keep, wins, description=self._meta.description)
        out._meta.units = dict(self._meta.units)
        out._meta.provenance = dict(self._meta.provenance)
        out._meta.elements = dict(self._meta.elements)
        return out

    def windows_of(self, name: str, *, blend: bool | None = None) -> list[Window]:
        """Windows (``blend=False``), blends (``blend=True``) or both (None) listing a line.

        Parameters
        ----------
        name : str
            Line id, e.g. ``"ne_8 770.42"``.
        blend : bool, optional
            Restrict to windows (False) or blend groups (True); default both.

        Returns
        -------
        list of Window
        """
        return [
            w for w in self._windows.values()
            if name in w.lines and (blend is None or w.blend == blend)
        ]  # fmt: skip

    def __getitem__(self, name: str) -> Line:
        try:
            return self._lines[name]
        except KeyError:
            raise KeyError(f"no line named {name!r} in the catalog") from None

    def __contains__(self, name) -> bool:
        return name in self._lines

    def __iter__(self) -> Iterator[Line]:
        return iter(self._sorted_lines())

    def __len__(self) -> int:
        return len(self._lines)

    def __eq__(self, other) -> bool:
        if not isinstance(other, LineCatalog):
            return NotImplemented
        return self._lines == other._lines and self._windows == other._windows

    def __repr__(self) -> str:
        sw = sum(ln.detector == "SW" for ln in self._lines.values())
        lw = sum(ln.detector == "LW" for ln in self._lines.values())
        nb = sum(w.blend for w in self._windows.values())
        return (
            f"<LineCatalog: {len(self)} lines (SW {sw}, LW {lw}), "
            f"{len(self._windows) - nb} windows, {nb} blends>"
        )
