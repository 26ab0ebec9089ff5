"""FIP-bias maps in the batch: the ``fip:`` section applied to one written results file.

:func:`fip_for_file` opens a results file, gathers the lines of each configured line set from
whichever windows hold them (a composition raster has its low- and high-FIP lines in
different windows), computes the FIP-bias map and its error with :func:`saffron_xr.fip.lcr`
or :func:`saffron_xr.fip.two_line_ratio`, and writes ``<results stem>_fip.nc`` next to the
results, atomically: one group per line set, holding ``fip_bias`` and ``fip_bias_err`` over
``(y, x)`` with the pointing coordinates of the results, and the method, lines, windows,
density, coefficients and reference-DEM ratios in its attributes.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from pathlib import Path

import numpy as np
import xarray as xr

from ..io._atomic import write_atomically
from ..io.netcdf import open_results

__all__ = ["fip_for_file", "fip_output_path"]

log = logging.getLogger(__name__)

_RADIANCE_VARS = ("radiance", "radiance_err")
_FIT_VARS = ("amplitude", "amplitude_err", "width", "width_err")


def fip_output_path(results_path) -> Path:
    """``<results stem>_fip.nc`` in the folder of ``results_path``."""
    results_path = Path(results_path)
    stem = results_path.name
    for suffix in (".nc", ".zarr"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    return results_path.with_name(f"{stem}_fip.nc")


def _line_windows(tree: xr.DataTree) -> dict[str, str]:
    """Line id -> node name of the first window holding it."""
    found: dict[str, str] = {}
    for name, child in tree.children.items():
        if "line" not in child.dataset.indexes:
            continue
        for line in child.dataset.indexes["line"]:
            if str(line) in found:
                log.debug("line %s in %s and %s: using %s", line, found[line], name, found[line])
                continue
            found[str(line)] = name
    return found


def _line_params(tree: xr.DataTree, lines: list[str], where: dict[str, str], path) -> xr.Dataset:
    """One Dataset over ``line`` with each line's radiance (or fit parameters) and errors,
    taken from the window holding it; the pixel grids of the windows must agree."""
    nodes = [tree[where[line]].dataset for line in lines]
    names = _RADIANCE_VARS
    if not all(all(v in ds.data_vars for v in _RADIANCE_VARS) for ds in nodes):
        names = _FIT_VARS
    sizes = {
        where[line]: (ds.sizes.get("y"), ds.sizes.get("x"))
        for line, ds in zip(lines, nodes, strict=True)
    }
    if len(set(sizes.values())) > 1:
        raise ValueError(
            f"{path}: the windows holding the FIP lines have different pixel grids (y, x): "
            + ", ".join(f"{w} {s}" for w, s in sizes.items())
        )
    parts = []
    for line, ds in zip(lines, nodes, strict=True):
        absent = [v for v in names if v not in ds.data_vars]
        if absent:
            raise ValueError(f"{path}: window {where[line]} lacks the variables {absent}")
        parts.append(ds[list(names)].sel(line=[line]).reset_coords(drop=True))
    return xr.concat(parts, dim="line", coords="minimal", compat="override", join="exact")


def _pixel_coords(ds: xr.Dataset) -> dict:
    """Non-index coordinates on the pixel dims (pointing, time) of a window."""
    return {
        name: coord
        for name, coord in ds.coords.items()
        if name not in ds.indexes and coord.dims and set(coord.dims) <= {"y", "x"}
    }


def _density(fip_cfg: dict, tree: xr.DataTree, path):
    density = fip_cfg["density"]
    if not isinstance(density, str):
        return float(density)
    for child in tree.children.values():
        if density in child.dataset.data_vars:
            da = child.dataset[density]
            if not set(da.dims) <= {"y", "x"}:
                raise ValueError(
                    f"{path}: fip.density names {density!r}, whose dims {da.dims} are not "
                    "pixel dims (y, x)"
                )
            return da.reset_coords(drop=True)
    raise ValueError(
        f"{path}: fip.density names {density!r}, which is no variable of the results "
        f"(windows: {', '.join(tree.children)})"
    )


def _fip_set(fip_cfg: dict, params: xr.Dataset, low, high, density) -> xr.Dataset:
    from ..fip.maps import lcr, two_line_ratio

    if fip_cfg["method"] == "two-line":
        return two_line_ratio(
            params,
            low[0],
            high[0],
            density,
            dem=fip_cfg["dems"][0],
            abundance=fip_cfg["abundance"],
        )
    return lcr(
        params,
        low,
        high,
        density,
        dems=list(fip_cfg["dems"]),
        abundance=fip_cfg["abundance"],
        regularization=float(fip_cfg["regularization"]),
    )


def _netcdf_attrs(attrs: dict) -> dict:
    """Attributes netCDF can hold: others (lists, bools, None, dicts) as JSON text."""
    out = {}
    for key, value in attrs.items():
        if isinstance(value, bool) or not isinstance(value, str | int | float | np.number):
            value = json.dumps(value, default=str)
        out[key] = value
    return out


def _write(tree: xr.DataTree, path: Path) -> Path:
    encoding = {}
    for node in tree.subtree:
        enc = {
            name: {"zlib": True, "complevel": 4}
            for name, var in node.dataset.data_vars.items()
            if var.dtype.kind == "f" and var.ndim > 0
        }
        if enc:
            encoding[node.path] = enc
    return write_atomically(
        path, lambda part: tree.to_netcdf(part, mode="w", engine="netcdf4", encoding=encoding)
    )


def fip_for_file(fip_cfg: dict, results_path, cfg: dict) -> Path | None:
    """FIP-bias maps of one results file, written as ``<results stem>_fip.nc`` beside it.

    This function computes: it reads the line radiances it needs and writes the maps.

    Parameters
    ----------
    fip_cfg : dict
        The validated ``fip`` section of a configuration (see ``saffron-xr init``): ``sets``
        (each a ``name``, ``low`` and ``high`` line ids as in the results' ``line``
        coordinate), ``method`` (``lcr`` or ``two-line``), ``density`` (cm-3, or the name of
        a results variable over ``(y, x)``), ``dems``, ``abundance``, ``regularization``.
    results_path : path-like
        A results file written by the batch runner (:func:`saffron_xr.io.netcdf.to_netcdf`).
    cfg : dict
        The whole configuration, stored as provenance in the output.

    Returns
    -------
    pathlib.Path or None
        The FIP file; None (with a log line) when FIP is disabled or no line set has all its
        lines in the file.

    Raises
    ------
    ValueError
        The windows holding a set's lines have different pixel grids, lack the radiance or
        fit variables, or ``fip.density`` names no pixel variable of the results.

    Notes
    -----
    Each line is taken from the first window (in file order) whose ``line`` coordinate holds
    it. The radiances are the results' ``radiance`` / ``radiance_err`` when every window
    involved has them, otherwise computed from ``amplitude`` and ``width`` with the default
    mask of :func:`saffron_xr.radiance`; the FIP bias is NaN wherever one of its lines is
    masked. Errors come from the radiance errors only (see :func:`saffron_xr.fip.lcr`).

    The maps are computed with the active dask scheduler. They are small (a few line
    radiances per pixel), so a caller running this inside a task on a distributed worker
    can wrap it in ``dask.config.set(scheduler="synchronous")``.
    """
    results_path = Path(results_path)
    if not fip_cfg.get("enabled", False):
        log.debug("%s: fip.enabled is false, no FIP maps", results_path.name)
        return None
    tree = open_results(results_path)
    try:
        where = _line_windows(tree)
        out: dict[str, xr.Dataset] = {}
        for entry in fip_cfg["sets"]:
            low, high = list(entry["low"]), list(entry["high"])
            missing = [line for line in low + high if line not in where]
            if missing:
                log.info(
                    "%s: FIP set %s skipped: lines %s not in the results",
                    results_path.name,
                    entry["name"],
                    missing,
                )
                continue
            params = _line_params(tree, low + high, where, results_path)
            density = _density(fip_cfg, tree, results_path)
            fip = _fip_set(fip_cfg, params, low, high, density)
            fip = fip.assign_coords(_pixel_coords(tree[where[low[0]]].dataset))
            fip.attrs.update(
                line_set=entry["name"],
                line_windows=json.dumps({line: where[line] for line in low + high}),
            )
            fip.attrs = _netcdf_attrs(fip.attrs)
            out[f"/{entry['name']}"] = fip
        if not out:
            log.info("%s: no FIP line set has all its lines; no FIP file", results_path.name)
            return None
        from .._meta import __version__
        from .config import config_json

        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        out["/"] = xr.Dataset(
            attrs={
                "title": "FIP-bias maps from Solar Orbiter/SPICE line fits",
                "source": f"saffron_xr {__version__}",
                "saffron_xr_version": __version__,
                "date_created": now,
                "results_file": results_path.name,
                "line_sets": ", ".join(name.lstrip("/") for name in out),
                "fip_config": json.dumps(fip_cfg, default=str),
                "config": config_json(cfg),
            }
        )
        path = _write(xr.DataTree.from_dict(out), fip_output_path(results_path))
    finally:
        tree.close()
    log.info("%s: FIP maps written to %s", results_path.name, path.name)
    return path
