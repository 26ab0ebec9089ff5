"""What the quicklook, the explorers and the served page share.

Public within :mod:`saffron_xr.plot` (its modules import these names): line labels, the
status colours, which inputs are fit results, the maps derived for display, colour limits and
the fitted model of one pixel split into its parts. Nothing here imports a plotting library.
"""

from __future__ import annotations

import re

import numpy as np
import xarray as xr

__all__ = [
    "STATUS_COLORS",
    "line_label",
    "is_results",
    "select_nodes",
    "derived",
    "velocity_reference_text",
    "finite",
    "color_limits",
    "symmetric_limits",
    "status_name",
    "pixel_status",
    "gaussians",
    "model_parts",
]

#: Colour of each fit status code in the status panel (keys are ``FitStatus`` names).
STATUS_COLORS = {
    "CONVERGED": "#e8e8e8",
    "CONVERGED_AT_BOUND": "#fdae61",
    "MAX_ITER": "#fee08b",
    "SINGULAR": "#d73027",
    "TOO_FEW_VALID": "#74add1",
    "ALL_NAN": "#313695",
    "BAD_INITIAL": "#a50026",
    "THRESHOLD_NOT_MET": "#abdda4",
    "NO_STEP": "#c2a5cf",
}

_ROMAN = [
    (1000, "M"),
    (900, "CM"),
    (500, "D"),
    (400, "CD"),
    (100, "C"),
    (90, "XC"),
    (50, "L"),
    (40, "XL"),
    (10, "X"),
    (9, "IX"),
    (5, "V"),
    (4, "IV"),
    (1, "I"),
]
_LINE_RE = re.compile(r"^\s*([A-Za-z]{1,2})_(\d+)(d?)\s+([0-9.]+)\s*$")


# ----------------------------------------------------------------------------- labels


def _roman(n: int) -> str:
    out = []
    for value, numeral in _ROMAN:
        while n >= value:
            out.append(numeral)
            n -= value
    return "".join(out)


def line_label(line: str) -> str:
    """Spectroscopic label of a line id: ``"ne_8 770.42"`` -> ``"Ne VIII 770.42 Å"``.

    Parameters
    ----------
    line : str
        CHIANTI-style line id (ion, space, rest wavelength in Angstrom).

    Returns
    -------
    str
        The label; ids that do not follow the convention are returned unchanged.

    Examples
    --------
    >>> line_label("ne_8 770.42")
    'Ne VIII 770.42 Å'
    >>> line_label("mystery")
    'mystery'
    """
    m = _LINE_RE.match(str(line))
    if not m:
        return str(line)
    element, stage, dielectronic, wave = m.groups()
    return f"{element.capitalize()} {_roman(int(stage))}{dielectronic} {wave} Å"


def status_name(code) -> str:
    """Readable name of a fit status code (``"converged at bound"``), or the code itself."""
    try:
        from ..fit.status import FitStatus

        return FitStatus(int(code)).name.lower().replace("_", " ")
    except (ImportError, ValueError):
        return str(code)


def pixel_status(px: xr.Dataset) -> str:
    """``"status: converged, reduced chi2 = 1.02"`` for the fit result of one pixel."""
    parts = []
    if "status" in px:
        parts.append(f"status: {status_name(px['status'].values)}")
    if "chi2" in px:
        parts.append(f"reduced chi2 = {float(px['chi2']):.2f}")
    return ", ".join(parts)


# ----------------------------------------------------------------------------- inputs


def is_results(ds: xr.Dataset) -> bool:
    """True when ``ds`` holds fitted parameters (``amplitude`` on ``line``)."""
    return "amplitude" in ds.data_vars and "line" in ds["amplitude"].dims


def select_nodes(tree: xr.DataTree, want) -> dict[str, xr.Dataset]:
    """``{node name: Dataset (inherited coordinates included)}`` of the nodes whose own
    Dataset satisfies ``want``."""
    return {
        (node.name or "/"): node.to_dataset(inherit=True)
        for node in tree.subtree
        if want(node.to_dataset(inherit=False))
    }


def _with_errors(ds: xr.Dataset) -> xr.Dataset:
    """Zero errors where a parameter has none, so the derive functions accept the Dataset."""
    missing = {
        f"{v}_err": xr.zeros_like(ds[v])
        for v in ("amplitude", "centroid", "width")
        if v in ds and f"{v}_err" not in ds
    }
    return ds.assign(missing) if missing else ds


def derived(ds: xr.Dataset, velocity_reference) -> xr.Dataset:
    """Radiance, Doppler velocity and FWHM: taken from ``ds`` when present, else derived.

    ``velocity_reference`` as for :func:`saffron_xr.plot.quicklook` (None: the stored
    velocity, else the package's default reference; ``"stored"``: the stored one or an error).
    """
    from ..derive import doppler_velocity, fwhm, radiance

    params = _with_errors(ds)
    out = {}
    if "radiance" in ds and "line" in ds["radiance"].dims:
        out["radiance"] = ds["radiance"]
    else:
        out["radiance"] = radiance(params)["radiance"]
    stored = velocity_reference is None or (
        isinstance(velocity_reference, str) and velocity_reference == "stored"
    )
    if stored and "doppler_velocity" in ds:
        out["doppler_velocity"] = ds["doppler_velocity"]
    elif velocity_reference is None:  # nothing stored: the package's default reference
        out["doppler_velocity"] = doppler_velocity(params)["doppler_velocity"]
    elif stored:
        raise ValueError(
            "velocity_reference='stored' needs a 'doppler_velocity' variable in the results"
        )
    else:
        velocity = doppler_velocity(params, reference=velocity_reference)
        out["doppler_velocity"] = velocity["doppler_velocity"]
    out["fwhm"] = ds["fwhm"] if "fwhm" in ds else fwhm(params)["fwhm"]
    return xr.Dataset(out)


def velocity_reference_text(v: xr.DataArray) -> str:
    """The Doppler reference of a velocity map, as its attributes state it."""
    ref = str(v.attrs.get("doppler_reference", ""))
    known = {
        "rest": "rel. to rest wavelength",
        "median": "rel. to median centroid",
        "column": "rel. to column median",
    }
    if ref in known:
        return known[ref]
    description = str(v.attrs.get("doppler_reference_description", ""))
    text = description.split(":")[0].strip() if description else ref
    return f"ref: {text}" if text else "reference not stated"


# ----------------------------------------------------------------------------- limits


def finite(values) -> np.ndarray:
    """The finite values of ``values``, flattened."""
    v = np.asarray(values, dtype=float).ravel()
    return v[np.isfinite(v)]


def color_limits(
    values, percentile: float = 99.0, *, positive: bool = False
) -> tuple[float, float]:
    """Colour limits: the ``100 - percentile`` and ``percentile`` percentiles of the finite
    (with ``positive``, the positive) values; a range around them when they are all equal, a
    default one when there are none."""
    v = finite(values)
    if positive:
        v = v[v > 0]
    if v.size == 0:
        return (0.1, 1.0) if positive else (0.0, 1.0)
    lo, hi = np.percentile(v, [100.0 - percentile, percentile])
    if not hi > lo:
        lo, hi = (lo / 2, lo * 2) if positive else (lo - 0.5, lo + 0.5)
    return float(lo), float(hi)


def symmetric_limits(values, percentile: float = 99.0) -> tuple[float, float]:
    """Colour limits symmetric about 0: ``±`` the ``percentile`` percentile of ``|values|``."""
    v = finite(values)
    lim = float(np.percentile(np.abs(v), percentile)) if v.size else 1.0
    lim = lim if lim > 0 else 1.0
    return -lim, lim


# ----------------------------------------------------------------------------- model


def gaussians(params_px: xr.Dataset, wavelength: np.ndarray) -> dict[str, np.ndarray]:
    """``{line id: its fitted Gaussian on wavelength}`` at one pixel."""
    from ..fit.profiles import gaussian

    out = {}
    for line in np.atleast_1d(params_px["line"].values):
        p = params_px.sel(line=line)
        a, c, w = (float(p[k]) for k in ("amplitude", "centroid", "width"))
        out[str(line)] = gaussian(np.asarray(wavelength, dtype=float), a, c, w)
    return out


def model_parts(params_px: xr.Dataset, wavelength: np.ndarray):
    """The fitted model at one pixel on ``wavelength``, split into its parts.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, dict)
        The model (lines plus background), the background alone and ``{line id: Gaussian}``.
    """
    from ..fit.core import model_spectrum

    model = np.asarray(model_spectrum(params_px, wavelength).values, dtype=float)
    lines = gaussians(params_px, wavelength)
    return model, model - sum(lines.values()), lines
