"""LineModel: Gaussian emission lines on a polynomial background, with bounds and ties.

A model is an ordered set of Gaussian lines plus a polynomial background of degree 0-2 in
each wavelength *segment*. Its *full* parameter vector is, line after line,
``amplitude, centroid, width``, then the background coefficients, segment after segment,
``degree = 0 .. background_degree``. Ties and fixed values make the full vector a linear
function of a smaller *free* vector, ``full = T @ free + c``: the kernel fits the free
parameters with the Jacobian ``J_full @ T`` and reports the covariance of every full
parameter as ``T C_free T^T``.

Every mutating method validates the whole model and leaves it unchanged when it raises, so a
model that exists is a model that can be fitted.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import re
from dataclasses import dataclass, field

from ._model_checks import check_bound, check_initial, check_segments, is_scalar
from .compiled import PARAM_KINDS, CompiledModel, compile_model

__all__ = ["LineModel", "CompiledModel", "PARAM_KINDS", "DEFAULT_BOUNDS"]

#: Bounds used for a line parameter when ``add_line`` is not given any. The width's lower
#: bound (1e-3 Angstrom, far below any resolvable SPICE width) keeps every Gaussian finite.
DEFAULT_BOUNDS = {
    "amplitude": (0.0, math.inf),
    "centroid": (-math.inf, math.inf),
    "width": (1e-3, math.inf),
}

_MAX_DEGREE = 2
_NAME_RE = re.compile(r"^\s*([A-Za-z]{1,2}_\d+)\s+([0-9]+(?:\.[0-9]*)?)\s*$")


@dataclass
class _Line:
    name: str
    ion: str | None
    rest_wavelength: float | None
    initial: dict = field(default_factory=dict)  # kind -> float, DataArray or None
    bounds: dict = field(default_factory=dict)  # kind -> (lo, hi)
    soft_min_width: tuple | None = None  # (value, tolerance), Angstrom


class LineModel:
    """Gaussian emission lines on a polynomial background, with bounds, ties and fixes.

    Parameters
    ----------
    lines : list of dict, optional
        Lines to add, each a dict of `add_line` keyword arguments (``name`` included).
    background_degree : int, default 0
        Degree (0, 1 or 2) of the background polynomial in each segment. The background of
        a segment is ``sum_k b_k (lambda - lambda_ref)^k`` with ``lambda_ref`` the middle of
        the segment (of the fitted wavelength range when there are no segments), lambda in
        Angstrom.
    segments : list of (float, float), optional
        Wavelength ranges (Angstrom, inclusive, not overlapping) each with its own
        background polynomial, for fused windows. Samples outside every segment are not
        fitted. None (default): one background over the whole fitted range.

    Raises
    ------
    ValueError
        For a degree outside 0-2, bad segments, or invalid lines.

    Examples
    --------
    >>> m = LineModel(background_degree=1)
    >>> m.add_line("ne_8 770.42", amplitude=0.3, centroid=770.1, width=0.15,
    ...            bounds={"centroid": (769.6, 770.6)})
    >>> m.add_line("mg_8 769.38", amplitude=0.05, centroid=769.1, width=0.15)
    >>> m.tie_width("mg_8 769.38", "ne_8 770.42")
    >>> m.lines
    ['ne_8 770.42', 'mg_8 769.38']
    >>> m.n_free
    7
    """

    def __init__(self, lines=None, background_degree: int = 0, segments=None):
        degree = int(background_degree)
        if degree != background_degree or not 0 <= degree <= _MAX_DEGREE:
            raise ValueError(
                f"LineModel: background_degree must be 0, 1 or 2, got {background_degree!r}"
            )
        self._degree = degree
        self._segments = check_segments(segments)
        self._lines: dict[str, _Line] = {}
        self._ties: dict[tuple[str, str], tuple[str, float]] = {}
        self._fixed: dict[tuple[str, str], float] = {}
        for spec in lines or []:
            if not isinstance(spec, dict) or "name" not in spec:
                raise ValueError(
                    "LineModel: each entry of `lines` must be a dict of add_line keyword "
                    f"arguments including 'name', got {spec!r}"
                )
            spec = dict(spec)
            self.add_line(spec.pop("name"), **spec)

    # ------------------------------------------------------------------ properties
    @property
    def lines(self) -> list[str]:
        """Line names, in model order."""
        return list(self._lines)

    @property
    def background_degree(self) -> int:
        """Degree of the background polynomial (per segment)."""
        return self._degree

    @property
    def segments(self) -> list[tuple[float, float]] | None:
        """Background segments (Angstrom), or None for one background over the window."""
        return None if self._segments is None else list(self._segments)

    @property
    def n_segments(self) -> int:
        """Number of background polynomials (1 when `segments` is None)."""
        return 1 if self._segments is None else len(self._segments)

    @property
    def n_full(self) -> int:
        """Number of full parameters (3 per line plus the background coefficients)."""
        return 3 * len(self._lines) + self.n_segments * (self._degree + 1)

    @property
    def n_free(self) -> int:
        """Number of free parameters (full parameters neither tied nor fixed)."""
        return self.n_full - len(self._ties) - len(self._fixed)

    def line_info(self, name: str) -> dict:
        """Ion, rest wavelength, initial values and bounds of one line.

        Parameters
        ----------
        name : str

        Returns
        -------
        dict
            Keys ``name``, ``ion``, ``rest_wavelength``, ``amplitude``, ``centroid``,
            ``width`` (initial values), ``bounds`` and ``soft_min_width`` (``(value,
            tolerance)`` or None, see `set_soft_min_width`).
        """
        line = self._get(name, "line_info")
        return {
            "name": line.name,
            "ion": line.ion,
            "rest_wavelength": line.rest_wavelength,
            **dict(line.initial),
            "bounds": dict(line.bounds),
            "soft_min_width": line.soft_min_width,
        }

    def tie_of(self, name: str, param: str):
        """How one parameter is constrained.

        Returns
        -------
        tuple or None
            ``("tied", to_line, value)``, ``("fixed", value)`` or None if free.
        """
        key = (name, param)
        if key in self._ties:
            return ("tied", *self._ties[key])
        if key in self._fixed:
            return ("fixed", self._fixed[key])
        return None

    # ------------------------------------------------------------------ building
    def add_line(
        self,
        name: str,
        *,
        ion: str | None = None,
        rest_wavelength: float | None = None,
        amplitude,
        centroid,
        width,
        bounds: dict | None = None,
    ) -> None:
        """Add a Gaussian line.

        Parameters
        ----------
        name : str
            Unique line id, e.g. ``"ne_8 770.42"``.
        ion : str, optional
            CHIANTI ion name (``"ne_8"``); parsed from a ``"<ion> <wavelength>"`` name when
            not given.
        rest_wavelength : float, optional
            Rest wavelength in Angstrom; parsed from the name when not given.
        amplitude, centroid, width : float or xarray.DataArray
            Initial peak spectral radiance (data units), centroid (Angstrom) and Gaussian
            sigma (Angstrom). A DataArray gives one value per pixel; its dims must be
            among the fitted data's non-wavelength dims.
        bounds : dict, optional
            ``{"amplitude": (lo, hi), "centroid": (lo, hi), "width": (lo, hi)}``; missing
            kinds take `DEFAULT_BOUNDS`. Use None or +-inf for no bound.

        Raises
        ------
        ValueError
            Duplicate name, unknown bound kind, ``lo >= hi``, a scalar initial value
            outside its bounds, a non-finite scalar initial value, or a width bound that
            allows zero or negative widths.
        """
        name = str(name)
        if name in self._lines:
            raise ValueError(f"LineModel.add_line: a line named {name!r} already exists")
        parsed = _NAME_RE.match(name)
        if ion is None and parsed:
            ion = parsed.group(1)
        if rest_wavelength is None and parsed:
            rest_wavelength = float(parsed.group(2))
        bounds = dict(bounds or {})
        unknown = set(bounds) - set(PARAM_KINDS)
        if unknown:
            raise ValueError(
                f"LineModel.add_line({name!r}): unknown bound kind(s) {sorted(unknown)}; "
                f"expected some of {PARAM_KINDS}"
            )
        line = _Line(
            name=name,
            ion=None if ion is None else str(ion),
            rest_wavelength=None if rest_wavelength is None else float(rest_wavelength),
        )
        for kind, value in zip(PARAM_KINDS, (amplitude, centroid, width), strict=True):
            lo, hi = check_bound(name, kind, bounds.get(kind, DEFAULT_BOUNDS[kind]))
            line.bounds[kind] = (lo, hi)
            line.initial[kind] = check_initial(name, kind, value, lo, hi)
        with self._transaction():
            self._lines[name] = line

    def tie_centroid(self, line: str, to: str, offset: float | None = None) -> None:
        """Tie a centroid: ``centroid[line] = centroid[to] + offset``.

        Parameters
        ----------
        line, to : str
            Names of existing lines.
        offset : float, optional
            Angstrom. Default: the difference of the rest wavelengths.
        """
        if offset is None:
            a, b = self._get(line, "tie_centroid"), self._get(to, "tie_centroid")
            if a.rest_wavelength is None or b.rest_wavelength is None:
                raise ValueError(
                    f"LineModel.tie_centroid({line!r}, {to!r}): no offset given and a rest "
                    "wavelength is missing"
                )
            offset = a.rest_wavelength - b.rest_wavelength
        self._tie(line, to, "centroid", float(offset))

    def tie_width(self, line: str, to: str, factor: float = 1.0) -> None:
        """Tie a width: ``width[line] = factor * width[to]`` (``factor > 0``)."""
        factor = float(factor)
        if not (factor > 0 and math.isfinite(factor)):
            raise ValueError(
                f"LineModel.tie_width({line!r}, {to!r}): factor must be finite and > 0, "
                f"got {factor}"
            )
        self._tie(line, to, "width", factor)

    def tie_amplitude(self, line: str, to: str, ratio: float) -> None:
        """Tie an amplitude: ``amplitude[line] = ratio * amplitude[to]`` (``ratio != 0``)."""
        ratio = float(ratio)
        if not (ratio != 0 and math.isfinite(ratio)):
            raise ValueError(
                f"LineModel.tie_amplitude({line!r}, {to!r}): ratio must be finite and "
                f"non-zero, got {ratio}"
            )
        self._tie(line, to, "amplitude", ratio)

    def fix(self, line: str, param: str, value: float) -> None:
        """Fix one line parameter to a value (in its bounds).

        Parameters
        ----------
        line : str
        param : {"amplitude", "centroid", "width"}
        value : float
        """
        self._get(line, "fix")
        self._check_kind(param, "fix")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"LineModel.fix({line!r}, {param!r}): value must be finite")
        key = (line, param)
        if key in self._ties:
            raise ValueError(
                f"LineModel.fix({line!r}, {param!r}): this parameter is tied to line "
                f"{self._ties[key][0]!r}; it cannot also be fixed"
            )
        with self._transaction():
            self._fixed[key] = value

    def set_initial(self, line: str, param: str, value) -> None:
        """Replace the initial value of one line parameter (float or DataArray).

        Raises
        ------
        ValueError
            If a scalar value lies outside the parameter's bounds.
        """
        ln = self._get(line, "set_initial")
        self._check_kind(param, "set_initial")
        lo, hi = ln.bounds[param]
        value = check_initial(line, param, value, lo, hi)
        old = ln.initial[param]
        ln.initial[param] = value
        try:
            self._validate()
        except ValueError:
            ln.initial[param] = old
            raise

    def set_bounds(self, line: str, param: str, bounds) -> None:
        """Replace the bounds of one line parameter; a scalar initial value outside the new
        bounds is moved to the nearest bound's inside (1e-9 of the range in).

        Parameters
        ----------
        line : str
        param : {"amplitude", "centroid", "width"}
        bounds : (float or None, float or None)
            None for no bound.

        Raises
        ------
        ValueError
            Bounds that are not ``lo < hi`` (or a width bound <= 0), or that leave a tied
            parameter without any allowed value.
        """
        ln = self._get(line, "set_bounds")
        self._check_kind(param, "set_bounds")
        lo, hi = check_bound(line, param, bounds)
        old_bounds, old_initial = ln.bounds[param], ln.initial[param]
        value = old_initial
        if is_scalar(value) and value is not None:
            eps = 1e-9 * (hi - lo) if math.isfinite(hi - lo) else 0.0
            value = min(max(float(value), lo + eps), hi - eps)
        ln.bounds[param] = (lo, hi)
        ln.initial[param] = value
        try:
            self._validate()
        except ValueError:
            ln.bounds[param], ln.initial[param] = old_bounds, old_initial
            raise

    def set_soft_min_width(self, line: str, value, tolerance=None) -> None:
        """Give a line's width a soft lower bound: a one-sided Gaussian prior.

        Below ``value`` the fit pays ``((value - width) / tolerance)**2`` of chi-square;
        above it, nothing. For a line that is known not to be narrower than the instrument
        (up to the uncertainty of the instrumental width, `tolerance`), this keeps fits of
        faint lines, whose width the noise alone would often drive far below the
        instrumental width or onto a hard bound, near physical widths, while a bright line
        narrower than ``value`` is still measured (its own chi-square dominates). The
        penalty is part of what is minimised, but not of the reported ``chi2`` nor of the
        covariance: errors are those the data support at the solution (a width held up by
        the penalty keeps the data's large error, not `tolerance`). The hard width bounds
        still apply.

        Parameters
        ----------
        line : str
        value : float or None
            Width (Gaussian sigma, Angstrom) below which the penalty starts; None removes
            the soft bound.
        tolerance : float
            The penalty's scale (Angstrom), > 0; required with a value.

        Raises
        ------
        ValueError
            A value or tolerance that is not finite and > 0.
        """
        ln = self._get(line, "set_soft_min_width")
        if value is None:
            ln.soft_min_width = None
            return
        value = float(value)
        tolerance = float(tolerance) if tolerance is not None else math.nan
        if not (math.isfinite(value) and value > 0 and math.isfinite(tolerance) and tolerance > 0):
            raise ValueError(
                f"LineModel.set_soft_min_width({line!r}): value and tolerance must be finite "
                f"and > 0, got value={value}, tolerance={tolerance}"
            )
        ln.soft_min_width = (value, tolerance)

    def copy(self) -> LineModel:
        """An independent copy (DataArray initial values are shared, not copied)."""
        new = copy.copy(self)
        new._lines = {
            k: _Line(
                v.name, v.ion, v.rest_wavelength, dict(v.initial), dict(v.bounds), v.soft_min_width
            )  # fmt: skip
            for k, v in self._lines.items()
        }
        new._ties = dict(self._ties)
        new._fixed = dict(self._fixed)
        new._segments = None if self._segments is None else list(self._segments)
        return new

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict:
        """A JSON-able description of the model.

        Infinite bounds are written as None. Per-pixel (DataArray) initial values cannot be
        stored and are written as None; a model read back from such a dict needs
        `set_initial` before fitting.

        Returns
        -------
        dict
        """

        def num(v):
            return None if v is None or not is_scalar(v) or math.isinf(v) else float(v)

        return {
            "format": "saffron_xr.LineModel",
            "version": 1,
            "background_degree": self._degree,
            "segments": None
            if self._segments is None
            else [[float(a), float(b)] for a, b in self._segments],
            "lines": [
                {
                    "name": ln.name,
                    "ion": ln.ion,
                    "rest_wavelength": ln.rest_wavelength,
                    **{k: num(ln.initial[k]) for k in PARAM_KINDS},
                    "bounds": {
                        k: [num(ln.bounds[k][0]), num(ln.bounds[k][1])] for k in PARAM_KINDS
                    },
                    **(
                        {"soft_min_width": list(ln.soft_min_width)}
                        if ln.soft_min_width is not None
                        else {}
                    ),
                }
                for ln in self._lines.values()
            ],
            "ties": [
                {"line": a, "param": k, "to": to, "value": v}
                for (a, k), (to, v) in self._ties.items()
            ],
            "fixed": [{"line": a, "param": k, "value": v} for (a, k), v in self._fixed.items()],
        }

    @classmethod
    def from_dict(cls, d: dict) -> LineModel:
        """Rebuild a model written by `to_dict`.

        Parameters
        ----------
        d : dict

        Returns
        -------
        LineModel
        """
        if not isinstance(d, dict) or "lines" not in d:
            raise ValueError("LineModel.from_dict: not a LineModel dict (no 'lines' key)")
        model = cls(background_degree=d.get("background_degree", 0), segments=d.get("segments"))
        for ld in d["lines"]:
            bounds = {
                k: (
                    -math.inf if v[0] is None else v[0],
                    math.inf if v[1] is None else v[1],
                )
                for k, v in ld.get("bounds", {}).items()
            }
            line = _Line(ld["name"], ld.get("ion"), ld.get("rest_wavelength"))
            for kind in PARAM_KINDS:
                lo, hi = check_bound(ld["name"], kind, bounds.get(kind, DEFAULT_BOUNDS[kind]))
                line.bounds[kind] = (lo, hi)
                value = ld.get(kind)
                line.initial[kind] = (
                    None if value is None else check_initial(ld["name"], kind, value, lo, hi)
                )
            if line.name in model._lines:
                raise ValueError(f"LineModel.from_dict: duplicate line {line.name!r}")
            model._lines[line.name] = line
            soft = ld.get("soft_min_width")
            if soft is not None:
                model.set_soft_min_width(line.name, *soft)
        model._validate()
        for t in d.get("ties", []):
            model._tie(t["line"], t["to"], t["param"], float(t["value"]))
        for f in d.get("fixed", []):
            model.fix(f["line"], f["param"], f["value"])
        return model

    def to_json(self, **kwargs) -> str:
        """`to_dict` as a JSON string (keyword arguments go to `json.dumps`)."""
        return json.dumps(self.to_dict(), allow_nan=False, **kwargs)

    @classmethod
    def from_json(cls, text: str) -> LineModel:
        """Rebuild a model from `to_json` output."""
        return cls.from_dict(json.loads(text))

    def __eq__(self, other) -> bool:
        if not isinstance(other, LineModel):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        lines = ", ".join(self._lines)
        seg = "" if self._segments is None else f", segments={self._segments}"
        return (
            f"LineModel(lines=[{lines}], background_degree={self._degree}{seg}, "
            f"ties={len(self._ties)}, fixed={len(self._fixed)}, n_free={self.n_free})"
        )

    # ------------------------------------------------------------------ compilation
    def compile(self, wavelength=None) -> CompiledModel:
        """Compile to the arrays read by the kernel (see `CompiledModel`).

        Parameters
        ----------
        wavelength : array-like, optional
            The fitted wavelength grid (Angstrom); without segments the background is
            centred on the middle of its finite range. Required when `segments` is None.

        Returns
        -------
        CompiledModel
        """
        lines = [
            (name, line.initial, line.bounds, line.soft_min_width)
            for name, line in self._lines.items()
        ]
        return compile_model(lines, self._degree, self._segments, self._resolve, wavelength)

    # ------------------------------------------------------------------ internals
    def _get(self, name, where) -> _Line:
        try:
            return self._lines[name]
        except KeyError:
            raise ValueError(
                f"LineModel.{where}: no line named {name!r}; lines are {self.lines}"
            ) from None

    @staticmethod
    def _check_kind(kind, where):
        if kind not in PARAM_KINDS:
            raise ValueError(
                f"LineModel.{where}: parameter must be one of {PARAM_KINDS}, got {kind!r}"
            )

    def _tie(self, line, to, kind, value):
        where = f"tie_{kind}"
        self._get(line, where)
        self._get(to, where)
        self._check_kind(kind, where)
        if line == to:
            raise ValueError(f"LineModel.{where}: cannot tie line {line!r} to itself")
        key = (line, kind)
        if key in self._fixed:
            raise ValueError(
                f"LineModel.{where}({line!r}, {to!r}): the {kind} of {line!r} is fixed; it "
                "cannot also be tied"
            )
        if key in self._ties:
            raise ValueError(
                f"LineModel.{where}({line!r}, {to!r}): the {kind} of {line!r} is already tied "
                f"to {self._ties[key][0]!r}"
            )
        with self._transaction():
            self._ties[key] = (to, value)

    def _resolve(self, name, kind, _seen=None):
        """(root key or None if fixed, scale, offset) of one line parameter."""
        key = (name, kind)
        seen = [] if _seen is None else _seen
        if key in seen:
            chain = " -> ".join([n for n, _ in seen] + [name])
            raise ValueError(f"LineModel: {kind} ties form a cycle ({chain})")
        seen.append(key)
        if key in self._fixed:
            return None, 0.0, self._fixed[key]
        if key not in self._ties:
            return key, 1.0, 0.0
        to, value = self._ties[key]
        root, s, o = self._resolve(to, kind, seen)
        if kind == "centroid":
            return root, s, o + value
        return root, s * value, o * value

    def _validate(self):
        """Check ties (cycles), fixed values and tie-derived bounds; raise ValueError."""
        c = self.compile(wavelength=[0.0] if self._segments is None else None)
        names = c.full_names
        own_bounds = {
            f"{name}/{kind}": line.bounds[kind]
            for name, line in self._lines.items()
            for kind in PARAM_KINDS
        }
        for j, name in enumerate(names):
            if c.root[j] < 0:
                lo, hi = own_bounds[name]
                if not lo <= c.offset[j] <= hi:
                    raise ValueError(
                        f"LineModel: {name} is fixed (directly or through a tie) at "
                        f"{c.offset[j]}, outside its bounds ({lo}, {hi})"
                    )
        for f, j in enumerate(c.free_root):
            lo, hi = c.free_lower[f], c.free_upper[f]
            if not lo < hi:
                raise ValueError(
                    f"LineModel: the ties on {names[j]} leave it no room: its bounds and those "
                    f"of the parameters tied to it intersect to ({lo}, {hi})"
                )
            init = c.initial[j]
            if init is not None and is_scalar(init) and not lo <= init <= hi:
                raise ValueError(
                    f"LineModel: initial value {init} of {names[j]} is outside the bounds "
                    f"({lo}, {hi}) implied by its own bounds and those of the parameters tied "
                    "to it"
                )

    @contextlib.contextmanager
    def _transaction(self):
        """Apply a change, validate the model, and undo the change if either raises."""
        saved = (dict(self._lines), dict(self._ties), dict(self._fixed))
        try:
            yield
            self._validate()
        except BaseException:
            self._lines, self._ties, self._fixed = saved
            raise
