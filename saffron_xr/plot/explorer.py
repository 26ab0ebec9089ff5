"""Interactive explorers (hvplot on xarray, holoviews/bokeh) for SPICE windows and fit results.

* :func:`explore_window` -- a window's image, averaged over wavelength or at a wavelength chosen
  with a slider, and the spectrum at the tapped pixel (with the fitted model, its Gaussian
  components and background when results are given).
* :func:`explore_results` -- maps of the fitted and derived parameters with a line selector.
* :func:`explore` -- either of the two, depending on what it is given.

Building an explorer computes nothing: every image and spectrum is a
:class:`holoviews.DynamicMap` whose callback selects and computes only what it displays
(one 2-D map or one spectrum) and draws it with ``.hvplot`` on a labelled DataArray (maps
with ``.hvplot.image``, spectra with ``.hvplot.step``/``.hvplot.line``); the streams and
selectors are holoviews'. hvplot and holoviews are imported inside the functions. For a
served page with a map per parameter see :mod:`saffron_xr.plot.serve`
(``saffron-xr explore RESULTS.nc``). Display the
returned object in a notebook after ``holoviews.extension("bokeh")``, serve it with
``panel``, or save it with ``holoviews.save(obj, "explorer.html")``.

The images are drawn on a rectilinear grid: each raster step at the mean helioprojective
longitude of its slit pixels, each slit pixel at its mean latitude over the raster (the
slit's small roll, about 2 degrees, is not drawn; :func:`saffron_xr.plot.quicklook` draws it).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import xarray as xr

from ._common import (
    STATUS_COLORS,
    color_limits,
    derived,
    is_results,
    line_label,
    model_parts,
    pixel_status,
    select_nodes,
    symmetric_limits,
    velocity_reference_text,
)

__all__ = ["explore", "explore_window", "explore_results"]

_FRAME_HEIGHT = 420
# thinnest image (width / height) shown without stretching x; wider than the quicklook's
# because the frame also carries the tap target
_MIN_MAP_RATIO = 0.35
_SPECTRUM_WIDTH = 520
_COMPONENT_COLORS = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")

#: Quantities :func:`explore_results` offers, in selector order: (label, colormap).
RESULT_QUANTITIES = {
    "radiance": ("line radiance", "inferno"),
    "doppler_velocity": ("Doppler velocity", "RdBu_r"),
    "fwhm": ("FWHM", "viridis"),
    "amplitude": ("amplitude (peak)", "inferno"),
    "centroid": ("centroid", "viridis"),
    "width": ("width (sigma)", "viridis"),
    "chi2": ("reduced chi2", "magma"),
    "status": ("fit status", None),  # the quicklook's STATUS_COLORS, one per code
}


# ----------------------------------------------------------------------------- helpers


def _hv():
    try:
        import holoviews as hv
        import holoviews.plotting.bokeh  # noqa: F401  (registers the bokeh backend's options)
    except ImportError as exc:  # pragma: no cover - holoviews is in the plot extra
        raise ImportError(
            "the explorers need holoviews and bokeh: pip install 'saffron_xr[plot]'"
        ) from exc
    return hv


def _hvplot():
    """Register ``.hvplot`` on xarray objects (imported here, never at package import)."""
    import hvplot.xarray  # noqa: F401


def _curve(hv, x, y, wdim, rdim, label: str, *, step: bool = False):
    """A spectrum curve drawn by ``.hvplot.line``/``.hvplot.step`` on a DataArray."""
    _hvplot()
    da = xr.DataArray(
        np.asarray(y, dtype=float),
        dims=("wavelength",),
        coords={"wavelength": np.asarray(x, dtype=float)},
        name="radiance",
    )
    if step:
        element = da.hvplot.step(x="wavelength", where="mid", label=label)
    else:
        element = da.hvplot.line(x="wavelength", label=label)
    return element.redim(wavelength=wdim, radiance=rdim)


def _has_radiance(ds) -> bool:
    return "radiance" in ds.data_vars and "wavelength" in ds["radiance"].dims


def _pick(nodes: dict, window, what: str) -> tuple[str, xr.Dataset]:
    if not nodes:
        raise ValueError(f"the DataTree has no {what}")
    if window is None:
        name = next(iter(nodes))
    elif window in nodes:
        name = window
    else:
        raise ValueError(f"window {window!r} not found; the DataTree has {list(nodes)}")
    return name, nodes[name]


def _h_dim(da: xr.DataArray, skip) -> str:
    if "x" in da.dims:
        return "x"
    others = [d for d in da.dims if d not in skip]
    if not others:
        raise ValueError(f"cannot find the raster (x) or time dimension among {da.dims}")
    return others[0]


class _Grid:
    """A rectilinear display grid in arcsec for ``(y, h)`` maps.

    Reads (computes, if they are dask arrays) the ``hpln``/``hplt`` coordinates: build it
    inside a display callback.
    """

    def __init__(self, ds: xr.Dataset, h_dim: str):
        ny, nh = ds.sizes["y"], ds.sizes[h_dim]
        cdelt1 = float(ds.attrs.get("CDELT1", 1.0) or 1.0)
        cdelt2 = float(ds.attrs.get("CDELT2", 1.0) or 1.0)
        self.h_dim = h_dim
        hpln = ds.coords.get("hpln")
        hplt = ds.coords.get("hplt")
        if h_dim == "x" and hpln is not None:
            self.xs = np.asarray(hpln.mean([d for d in hpln.dims if d != "x"]).values, float)
            self.xlabel = "Solar X (arcsec)"
        elif h_dim == "x":
            self.xs = np.arange(nh) * cdelt1
            self.xlabel = "raster offset (arcsec)"
        else:
            self.xs = np.arange(nh, dtype=float)
            self.xlabel = f"{h_dim} (index)"
        if hplt is not None:
            self.ys = np.asarray(hplt.mean([d for d in hplt.dims if d != "y"]).values, float)
            self.ylabel = "Solar Y (arcsec)"
        else:
            self.ys = np.arange(ny) * cdelt2
            self.ylabel = "slit offset (arcsec)"
        if self.xs.size == 1:
            self.xs = self.xs.reshape(1)
        dx = abs(float(np.mean(np.diff(self.xs)))) if self.xs.size > 1 else cdelt1
        dy = abs(float(np.mean(np.diff(self.ys)))) if self.ys.size > 1 else cdelt2
        self.bounds = (
            float(self.xs.min()) - dx / 2,
            float(self.ys.min()) - dy / 2,
            float(self.xs.max()) + dx / 2,
            float(self.ys.max()) + dy / 2,
        )
        width = self.bounds[2] - self.bounds[0]
        height = self.bounds[3] - self.bounds[1]
        ratio = width / height if height > 0 else 1.0
        self.stretch = 1
        if h_dim == "x" and ratio > 0:
            self.stretch = max(1, math.ceil(_MIN_MAP_RATIO / ratio))
        if self.stretch > 1:
            self.xlabel += f" [x stretched ×{self.stretch}]"
        self.data_aspect = 1.0 / self.stretch if h_dim == "x" else None

    def image(self, hv, values: np.ndarray, *, vdims):
        """An ``hv.Image`` of a ``(y, h)`` array, drawn by ``.hvplot.image`` on a DataArray
        labelled in arcsec (the grid regularised to the mean pixel steps)."""
        _hvplot()
        (vdim,) = vdims
        name = vdim.name if isinstance(vdim, hv.Dimension) else str(vdim)
        ny, nh = np.shape(values)
        grid = xr.DataArray(
            np.asarray(values, dtype=float),
            dims=("solar_y", "solar_x"),
            coords={
                "solar_y": np.linspace(self.ys[0], self.ys[-1], ny) if ny > 1 else self.ys,
                "solar_x": np.linspace(self.xs[0], self.xs[-1], nh) if nh > 1 else self.xs,
            },
            name=name,
        )
        img = grid.hvplot.image(x="solar_x", y="solar_y", frame_height=_FRAME_HEIGHT)
        return img.redim(**{name: vdim}) if isinstance(vdim, hv.Dimension) else img

    def nearest(self, x, y) -> tuple[int, int]:
        """Indices ``(iy, ih)`` of the pixel nearest to display position ``(x, y)``."""
        if x is None or y is None:
            return len(self.ys) // 2, len(self.xs) // 2
        return int(np.argmin(np.abs(self.ys - y))), int(np.argmin(np.abs(self.xs - x)))

    def display_opts(self) -> dict:
        o = {"xlabel": self.xlabel, "ylabel": self.ylabel, "frame_height": _FRAME_HEIGHT}
        if self.data_aspect is not None:
            o["data_aspect"] = self.data_aspect
        else:
            o["frame_width"] = _FRAME_HEIGHT
        return o


def _window_inputs(data, results, window) -> tuple[str, xr.Dataset, xr.Dataset | None]:
    """The window's name and Dataset, and its fit results (or None), from the explorer's
    arguments; a clear error when they do not fit together."""
    if isinstance(data, xr.DataTree):
        name, ds = _pick(select_nodes(data, _has_radiance), window, "window with a 'radiance'")
    elif isinstance(data, xr.DataArray):
        name, ds = str(data.attrs.get("EXTNAME", data.name)), data.to_dataset(name="radiance")
    elif isinstance(data, xr.Dataset):
        if not _has_radiance(data):
            raise ValueError("explore_window needs a 'radiance' variable with a 'wavelength' dim")
        name, ds = str(data.attrs.get("EXTNAME", "window")), data
    else:
        raise TypeError(f"explore_window takes a DataTree, Dataset or DataArray, not {type(data)}")
    if isinstance(results, xr.DataTree):
        nodes = select_nodes(results, is_results)
        if name not in nodes:
            raise ValueError(f"results have no node {name!r}; they have {list(nodes)}")
        results = nodes[name]
    if results is not None and not is_results(results):
        raise ValueError("results must hold fitted parameters ('amplitude' on 'line')")
    return name, ds, results


def _data_curves(hv, wavelength: np.ndarray, spec: np.ndarray, err, wdim, rdim) -> list:
    """The observed spectrum at one pixel (steps) and its error bars when ``err`` is given."""
    curves = [
        _curve(hv, wavelength, spec, wdim, rdim, "data", step=True).opts(
            backend="bokeh", interpolation="steps-mid", color="black"
        )
    ]
    if err is not None:
        err = np.asarray(err, dtype=float)
        curves.append(
            hv.ErrorBars((wavelength, spec, err), wdim, [rdim, "error"]).opts(
                backend="bokeh", color="gray"
            )
        )
    return curves


def _model_curves(hv, px: xr.Dataset, fine: np.ndarray, wdim, rdim) -> list:
    """Background, each Gaussian on it and the whole model at one pixel, as curves."""
    model, background, lines = model_parts(px, fine)
    curves = [
        _curve(hv, fine, background, wdim, rdim, "background").opts(
            backend="bokeh", color="gray", line_dash="dotted"
        )
    ]
    for k, (line, g) in enumerate(lines.items()):
        curves.append(
            _curve(hv, fine, g + background, wdim, rdim, line_label(line)).opts(
                backend="bokeh",
                color=_COMPONENT_COLORS[k % len(_COMPONENT_COLORS)],
                line_dash="dashed",
            )
        )
    curves.append(
        _curve(hv, fine, model, wdim, rdim, "model").opts(
            backend="bokeh", color="red", line_width=2
        )
    )
    return curves


# ----------------------------------------------------------------------------- window


def explore_window(data, results=None, *, window: str | None = None):
    """Interactive view of a window: its image and the spectrum at a tapped pixel.

    The left panel shows the window's radiance, averaged over wavelength or at the wavelength
    chosen with the slider (the ``image`` selector switches between the two); a tap on it
    selects a pixel, whose spectrum the right panel shows -- with the fitted model, each
    Gaussian component and the background when ``results`` are given. Nothing is computed
    when the explorer is built; each displayed frame computes one 2-D image or one spectrum.

    Parameters
    ----------
    data : xarray.DataTree, xarray.Dataset or xarray.DataArray
        An opened SPICE file (:func:`saffron_xr.open_spice`), one window Dataset with a
        ``radiance`` variable, or the radiance DataArray itself (dims ``(y, x, wavelength)``
        or ``(time, y, wavelength)``).
    results : xarray.Dataset or xarray.DataTree, optional
        Fitted parameters for that window (:func:`saffron_xr.fit_lines`), or a DataTree of
        results with a node of the same name as the window.
    window : str, optional
        Node name of the window when ``data`` is a DataTree (default: the first window).

    Returns
    -------
    holoviews.Layout
        Image (with a marker at the selected pixel) and spectrum, both ``DynamicMap``.

    Examples
    --------
    >>> import saffron_xr
    >>> from saffron_xr.plot import explore_window
    >>> tree = saffron_xr.open_spice(saffron_xr.ne8_window_path())
    >>> view = explore_window(tree)  # nothing computed yet
    """
    hv = _hv()
    name, ds, results = _window_inputs(data, results, window)
    rad = ds["radiance"]
    h_dim = _h_dim(rad, ("y", "wavelength"))
    rad = rad.transpose("y", h_dim, "wavelength")
    grid = functools.cache(lambda: _Grid(ds, h_dim))
    wavelength = np.asarray(rad["wavelength"].values, dtype=float)
    units = str(rad.attrs.get("units", rad.attrs.get("BUNIT", "")))
    error = ds["error"].transpose("y", h_dim, "wavelength") if "error" in ds else None

    def image(image, wavelength):
        if image == "mean":
            # the mean, not the sum: NaN edge samples differ between slit positions
            values = rad.mean("wavelength", skipna=True).values
            label, vunits = f"{name}: mean over wavelength", units
        else:
            values = rad.sel(wavelength=wavelength, method="nearest").values
            label, vunits = f"{name}: {wavelength:.3f} Å", units
        return (
            grid()
            .image(hv, values, vdims=[hv.Dimension("radiance", unit=vunits)])
            .opts(
                backend="bokeh",
                title=label,
                cmap="inferno",
                colorbar=True,
                clim=color_limits(values),
                tools=["tap"],
                **grid().display_opts(),
            )
        )

    kdims = [
        hv.Dimension("image", values=["mean", "at wavelength"], default="mean"),
        hv.Dimension(
            "wavelength",
            values=[round(float(w), 3) for w in wavelength],
            default=round(float(wavelength[wavelength.size // 2]), 3),
            unit="Å",
        ),
    ]
    image_map = hv.DynamicMap(image, kdims=kdims).opts(backend="bokeh", framewise=True)
    tap = hv.streams.Tap(source=image_map, x=None, y=None)

    def marker(x, y):
        iy, ih = grid().nearest(x, y)
        return hv.Points([(grid().xs[ih], grid().ys[iy])]).opts(
            backend="bokeh", marker="x", size=14, color="cyan", line_width=2
        )

    def spectrum(x, y):
        iy, ih = grid().nearest(x, y)
        spec = np.asarray(rad.isel(y=iy, **{h_dim: ih}).values, dtype=float)
        where = f'y={iy}, {h_dim}={ih} ({grid().xs[ih]:.0f}", {grid().ys[iy]:.0f}")'
        wdim = hv.Dimension("wavelength", unit="Å")
        rdim = hv.Dimension("radiance", unit=units)
        err = None if error is None else error.isel(y=iy, **{h_dim: ih}).values
        parts = _data_curves(hv, wavelength, spec, err, wdim, rdim)
        title = f"{name}: spectrum at {where}"
        if results is not None:
            px = results.isel(y=iy, **{h_dim: ih}).compute()
            state = pixel_status(px)
            title += f"\n{state}" if state else ""
            fine = np.linspace(wavelength.min(), wavelength.max(), 8 * wavelength.size)
            if np.all(np.isfinite(px["amplitude"].values)):
                parts += _model_curves(hv, px, fine, wdim, rdim)
        return hv.Overlay(parts).opts(
            backend="bokeh",
            title=title,
            frame_width=_SPECTRUM_WIDTH,
            frame_height=_FRAME_HEIGHT - 60,
            legend_position="top_right",
            show_grid=True,
        )

    marker_map = hv.DynamicMap(marker, streams=[tap])
    spectrum_map = hv.DynamicMap(spectrum, streams=[tap]).opts(backend="bokeh", framewise=True)
    return (image_map * marker_map + spectrum_map).opts(backend="bokeh", shared_axes=False)


# ----------------------------------------------------------------------------- results


def explore_results(results, *, velocity_reference="median"):
    """Interactive parameter maps with a line selector and a quantity selector.

    Offers, per line, the line radiance, Doppler velocity (colour limits symmetric about 0),
    FWHM, amplitude, centroid and width, and the per-pixel reduced chi2 and fit status. Each
    displayed frame computes one 2-D map; building the explorer computes nothing.

    Parameters
    ----------
    results : xarray.Dataset or xarray.DataTree
        Fitted parameters (one window) or a DataTree of them (lines of every window are
        offered; their ids are prefixed by the window name if two windows share a line).
    velocity_reference : optional
        Reference of the Doppler velocity, as for :func:`saffron_xr.plot.quicklook`
        (default ``"median"``; ``"stored"`` shows an existing ``doppler_velocity``).

    Returns
    -------
    holoviews.DynamicMap
        With kdims ``line`` and ``quantity``.
    """
    hv = _hv()
    if isinstance(results, xr.DataTree):
        nodes = select_nodes(results, is_results)
        if not nodes:
            raise ValueError("the DataTree has no node with fitted parameters")
    elif isinstance(results, xr.Dataset) and is_results(results):
        nodes = {str(results.attrs.get("EXTNAME", "results")): results}
    else:
        raise ValueError("explore_results needs fitted parameters ('amplitude' on 'line')")

    entries = {}  # label -> (window Dataset, line id)
    all_lines = [str(v) for ds in nodes.values() for v in np.atleast_1d(ds["line"].values)]
    for wname, ds in nodes.items():
        for line in np.atleast_1d(ds["line"].values):
            label = line_label(str(line))
            if all_lines.count(str(line)) > 1:
                label = f"{wname}: {label}"
            entries[label] = (ds, str(line))
    derived_maps = {id(ds): derived(ds, velocity_reference) for ds in nodes.values()}
    quantities = [q for q in RESULT_QUANTITIES if q not in ("chi2", "status")]
    quantities += [q for q in ("chi2", "status") if any(q in ds for ds in nodes.values())]

    def frame(line, quantity):
        ds, line_id = entries[line]
        h_dim = _h_dim(ds["amplitude"], ("line", "y"))
        grid = _Grid(ds, h_dim)
        source = derived_maps[id(ds)] if quantity in derived_maps[id(ds)] else ds
        da = source[quantity]
        if "line" in da.dims:
            da = da.sel(line=line_id)
        values = da.transpose("y", h_dim).values
        descr, cmap = RESULT_QUANTITIES[quantity]
        if quantity == "doppler_velocity":
            clim = symmetric_limits(values)
            ref = velocity_reference_text(source[quantity])
            descr = f"{descr} ({ref})" if ref else descr
        else:
            clim = color_limits(values)
        extra = {}
        if quantity == "status":
            from ..fit.status import FitStatus

            cmap = [STATUS_COLORS.get(code.name, "#000000") for code in FitStatus]
            clim = (-0.5, len(cmap) - 0.5)
            extra["color_levels"] = len(cmap)
            descr = (
                "fit status (" + ", ".join(f"{int(c)} {c.name.lower()}" for c in FitStatus) + ")"
            )
        unit = str(da.attrs.get("units", ""))
        title = f"{line}: {descr}" if "line" in source[quantity].dims else descr
        return grid.image(hv, values, vdims=[hv.Dimension(quantity, label=descr, unit=unit)]).opts(
            backend="bokeh",
            title=title,
            cmap=cmap,
            clim=clim,
            colorbar=True,
            tools=["hover"],
            **extra,
            **grid.display_opts(),
        )

    kdims = [
        hv.Dimension("line", values=list(entries), default=next(iter(entries))),
        hv.Dimension("quantity", values=quantities, default="radiance"),
    ]
    return hv.DynamicMap(frame, kdims=kdims).opts(backend="bokeh", framewise=True)


# ----------------------------------------------------------------------------- dispatch


def explore(data, results=None, *, window: str | None = None):
    """The explorer that fits ``data``: parameter maps or a window view.

    Parameters
    ----------
    data : xarray.DataTree, xarray.Dataset or xarray.DataArray
        Fitted parameters (-> :func:`explore_results`) or SPICE radiance windows
        (-> :func:`explore_window`).
    results : xarray.Dataset or xarray.DataTree, optional
        Fitted parameters for the window view.
    window : str, optional
        Window node name when ``data`` is a DataTree of windows.

    Returns
    -------
    holoviews.Layout or holoviews.DynamicMap
        Nothing is computed until it is displayed.
    """
    if isinstance(data, xr.Dataset) and is_results(data):
        return explore_results(data)
    if isinstance(data, xr.DataTree) and not select_nodes(data, _has_radiance):
        return explore_results(data)
    return explore_window(data, results, window=window)
