"""Fusing windows: two or more windows of one observation joined along wavelength.

Lines in different windows can then be fitted together, e.g. with their centroids tied at
the rest-wavelength separation (Mg IX 706.06 in one window and Mg IX 749.55 in another).
Each window keeps its own background polynomial: the fused Dataset carries a ``segment``
coordinate along ``wavelength`` that :func:`~saffron_xr.guess_model` turns into the model's
background segments.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

__all__ = ["fuse_windows"]

#: Attributes combined rather than compared when windows are fused.
_RANGE_ATTRS = {"WAVEMIN": min, "WAVEMAX": max}


def _attr_equal(a, b) -> bool:
    try:
        eq = a == b
        return bool(np.all(eq))
    except (TypeError, ValueError):
        return False


def _merge_attrs(attr_list, names):
    """Attributes equal in every window, ranges combined, the others recorded as JSON."""
    merged, differing = {}, {}
    keys = list(dict.fromkeys(k for a in attr_list for k in a))
    for k in keys:
        values = [a.get(k) for a in attr_list]
        if k in _RANGE_ATTRS and all(isinstance(v, (int, float)) for v in values):
            merged[k] = _RANGE_ATTRS[k](values)
        elif all(k in a for a in attr_list) and all(_attr_equal(values[0], v) for v in values):
            merged[k] = values[0]
        elif k != "header":
            differing[k] = {n: _jsonable(v) for n, v in zip(names, values, strict=True)}
    if "EXTNAME" in differing:
        merged["EXTNAME"] = " + ".join(
            str(a.get("EXTNAME", n)) for a, n in zip(attr_list, names, strict=True)
        )
    if differing:
        merged["fused_attrs"] = json.dumps(differing, sort_keys=True)
    return merged


def _jsonable(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def fuse_windows(tree: xr.DataTree, windows, *, name: str | None = None) -> xr.Dataset:
    """Join windows of one observation along wavelength into one Dataset (lazily).

    Parameters
    ----------
    tree : xarray.DataTree
        Windows as child nodes (as from :func:`~saffron_xr.open_spice`), all with the same
        spatial/time shape.
    windows : list of str
        Two or more node names. Their wavelength ranges must not overlap.
    name : str, optional
        ``EXTNAME``-like label of the result; default the windows' ``EXTNAME`` joined by
        ``" + "``.

    Returns
    -------
    xarray.Dataset
        Every variable with a ``wavelength`` dimension concatenated in wavelength order (one
        dask chunk along ``wavelength``); a ``segment`` coordinate along ``wavelength`` with
        the source node name of each sample; other variables and coordinates (``hpln``,
        ``hplt``, ``time``) from the first window. Attributes equal in all windows are kept,
        ``WAVEMIN``/``WAVEMAX`` span the union, ``fused_windows`` lists the node names
        (comma-separated, in wavelength order), and
        the attributes that differ (``RADCAL``, ``EXTNAME``, ...) are recorded per window in
        ``fused_attrs`` (JSON). Compute per-window quantities that depend on those (e.g. the
        ``error`` from the noise model) before fusing.

    Raises
    ------
    ValueError
        Fewer than two windows, unknown names, different spatial shapes, a window without
        a wavelength dimension, or overlapping wavelength ranges.

    Examples
    --------
    >>> fused = fuse_windows(tree, ["Mg_IX_706_data", "S_IV_750_data"])  # doctest: +SKIP
    >>> guess_model(fused.radiance)  # doctest: +SKIP
    """
    windows = list(windows)
    if len(windows) < 2:
        raise ValueError(f"fuse_windows: give two or more window names, got {windows}")
    if len(set(windows)) != len(windows):
        raise ValueError(f"fuse_windows: a window is listed twice in {windows}")
    children = list(tree.children)
    missing = [w for w in windows if w not in tree.children]
    if missing:
        raise ValueError(f"fuse_windows: no window(s) {missing} in the tree; windows: {children}")
    datasets = [tree[w].to_dataset() for w in windows]
    for w, ds in zip(windows, datasets, strict=True):
        if "wavelength" not in ds.dims:
            raise ValueError(f"fuse_windows: window {w!r} has no wavelength dimension")
    shape0 = {d: s for d, s in datasets[0].sizes.items() if d != "wavelength"}
    for w, ds in zip(windows[1:], datasets[1:], strict=True):
        shape = {d: s for d, s in ds.sizes.items() if d != "wavelength"}
        if shape != shape0:
            raise ValueError(
                f"fuse_windows: window {w!r} has shape {shape}, {windows[0]!r} has {shape0}; "
                "only windows of the same observation can be fused"
            )
    ranges = [(float(ds["wavelength"].min()), float(ds["wavelength"].max())) for ds in datasets]
    order = sorted(range(len(windows)), key=lambda i: ranges[i][0])
    for a, b in zip(order[:-1], order[1:], strict=True):
        if ranges[b][0] <= ranges[a][1]:
            raise ValueError(
                f"fuse_windows: windows {windows[a]!r} ({ranges[a][0]:.2f}-{ranges[a][1]:.2f} A) "
                f"and {windows[b]!r} ({ranges[b][0]:.2f}-{ranges[b][1]:.2f} A) overlap"
            )
    parts = []
    for i in order:
        ds = datasets[i]
        wl_vars = [v for v in ds.data_vars if "wavelength" in ds[v].dims]
        part = ds[wl_vars]
        if i != order[0]:
            # spatial coordinates come from the first window
            part = part.drop_vars([c for c in part.coords if "wavelength" not in part[c].dims])
        order_w = np.argsort(part["wavelength"].values, kind="stable")
        part = part.isel(wavelength=order_w)
        part = part.assign_coords(
            segment=("wavelength", np.full(part.sizes["wavelength"], windows[i], dtype=object))
        )
        parts.append(part)
    var_sets = [set(p.data_vars) for p in parts]
    common = set.intersection(*var_sets)
    if common != set.union(*var_sets):
        raise ValueError(
            "fuse_windows: the windows hold different wavelength variables "
            f"({[sorted(s) for s in var_sets]}); give them the same ones (e.g. add 'error' "
            "to all)"
        )
    fused = xr.concat(
        parts, dim="wavelength", data_vars="all", coords="minimal", compat="override",
        join="override", combine_attrs="drop",
    )  # fmt: skip
    fused = fused.assign_coords(segment=fused["segment"].astype(str))
    chunked = {v: fused[v].chunk({"wavelength": -1}) for v in fused.data_vars
               if fused[v].chunks is not None}  # fmt: skip
    fused = fused.assign(chunked)
    # other (non-wavelength) variables of the first window
    first = datasets[order[0]]
    for v in first.data_vars:
        if v not in fused.data_vars:
            fused[v] = first[v]
    names = [windows[i] for i in order]
    attrs = _merge_attrs([datasets[i].attrs for i in order], names)
    if name is not None:
        attrs["EXTNAME"] = name
    attrs["fused_windows"] = ",".join(names)
    fused.attrs = attrs
    for v in fused.data_vars:
        var_attrs = _merge_attrs([datasets[i][v].attrs for i in order if v in datasets[i]], names)
        if name is not None and "EXTNAME" in var_attrs:
            var_attrs["EXTNAME"] = name
        fused[v].attrs = var_attrs
    fused["wavelength"].attrs = dict(datasets[order[0]]["wavelength"].attrs)
    fused["segment"].attrs = {"long_name": "source window of each wavelength sample"}
    return fused
