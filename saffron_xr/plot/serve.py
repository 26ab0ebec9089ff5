"""A served results explorer: ``saffron-xr explore RESULTS.nc`` (hvplot + panel).

The page shows, for the line chosen in the *line* selector, one map per parameter (line
radiance, Doppler velocity, FWHM, reduced chi2, fit status and, when the results have it,
the ``detected`` mask), each drawn with ``.hvplot.image`` on the xarray map in
helioprojective arcsec. A *mask* selector hides the pixels whose fit did not converge or
whose line was not detected. A click on any map selects a pixel: the right column shows
that pixel's spectrum (when the L2 file is found), the fitted model with each Gaussian
component, and the residuals (data - model, with the 1-sigma error band when the
results carry the noise model), each drawn with ``.hvplot`` too.

panel, hvplot, holoviews and bokeh are imported inside the functions. Nothing is computed
until the page asks: each map is one 2-D slice of the results, each spectrum one pixel.
"""

from __future__ import annotations

import logging
from pathlib import Path

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
)

__all__ = ["explorer_page", "serve", "add_explore_command"]

log = logging.getLogger(__name__)

#: Maps of the page, in order: quantity -> (title, colormap).
PAGE_MAPS = {
    "radiance": ("line radiance", "inferno"),
    "doppler_velocity": ("Doppler velocity", "RdBu_r"),
    "fwhm": ("FWHM", "viridis"),
    "chi2": ("reduced chi2", "magma"),
    "status": ("fit status", None),
    "detected": ("detected", ["#d9d9d9", "#1a9850"]),
}
MASKS = ("none", "converged", "detected")
_MAP_HEIGHT = 380
_SPECTRUM_WIDTH = 560


def _imports():
    try:
        import holoviews as hv
        import hvplot.xarray  # noqa: F401  (registers .hvplot on xarray objects)
        import panel as pn
    except ImportError as exc:  # pragma: no cover - in the plot extra
        raise ImportError(
            "the served explorer needs panel, hvplot, holoviews and bokeh: "
            "pip install 'saffron_xr[plot]'"
        ) from exc
    return hv, pn


def _find_data(results_path: Path, filename: str | None, data) -> Path | None:
    """The L2 file of the results: ``data`` if given, else the input file named in the
    results, looked up beside the results file, in its parent folder and in the current
    folder."""
    if data is not None:
        return Path(data)
    if not filename:
        return None
    name = str(filename).split(",")[0].strip()
    for folder in (results_path.parent, results_path.parent.parent, Path.cwd()):
        if (folder / name).is_file():
            return folder / name
    return None


class _Window:
    """One window's results (and data, if found), with its display grid in arcsec."""

    def __init__(self, name: str, results: xr.Dataset, radiance: xr.DataArray | None):
        self.name = name
        self.results = results
        self.radiance = radiance
        self.derived = derived(results, "median")
        ny, nx = results.sizes["y"], results.sizes["x"]
        if "hpln" in results.coords and "hplt" in results.coords:
            hpln, hplt = results["hpln"], results["hplt"]
            self.xs = np.asarray(hpln.mean("y").values, dtype=float)
            self.ys = np.asarray(hplt.mean("x").values, dtype=float)
            self.xlabel, self.ylabel = "Solar X (arcsec)", "Solar Y (arcsec)"
        else:
            self.xs, self.ys = np.arange(nx, dtype=float), np.arange(ny, dtype=float)
            self.xlabel, self.ylabel = "x (pixel)", "y (pixel)"
        dx = abs(float(np.mean(np.diff(self.xs)))) if nx > 1 else 1.0
        dy = abs(float(np.mean(np.diff(self.ys)))) if ny > 1 else 1.0
        self.aspect = (nx * dx) / (ny * dy)

    def nearest(self, x: float, y: float) -> tuple[int, int]:
        return int(np.argmin(np.abs(self.ys - y))), int(np.argmin(np.abs(self.xs - x)))

    def quantity(self, name: str, line: str) -> xr.DataArray | None:
        source = self.derived if name in self.derived else self.results
        if name not in source:
            return None
        da = source[name]
        if "line" in da.dims:
            da = da.sel(line=line)
        return da.transpose("y", "x")

    def mask(self, kind: str, line: str) -> np.ndarray | None:
        if kind == "converged" and "status" in self.results:
            from ..fit.status import FitStatus

            good = [int(c) for c in FitStatus.converged()]
            return np.isin(self.results["status"].transpose("y", "x").values, good)
        if kind == "detected" and "detected" in self.results:
            return self.results["detected"].sel(line=line).transpose("y", "x").values.astype(bool)
        return None


def _regular(values: np.ndarray) -> np.ndarray:
    return np.linspace(values[0], values[-1], values.size) if values.size > 1 else values


def _map(hv, window: _Window, quantity: str, line: str, mask: np.ndarray | None):
    """One parameter map of the page, drawn by hvplot (an ``hv.Image``), or None."""
    da = window.quantity(quantity, line)
    if da is None:
        return None
    values = np.asarray(da.values, dtype=float)
    if mask is not None and quantity not in ("status", "detected"):
        values = np.where(mask, values, np.nan)
    title, cmap = PAGE_MAPS[quantity]
    opts = {}
    if quantity == "doppler_velocity":
        clim = symmetric_limits(values)
    elif quantity == "status":
        from ..fit.status import FitStatus

        cmap = [STATUS_COLORS.get(code.name, "#000000") for code in FitStatus]
        clim = (-0.5, len(cmap) - 0.5)
        opts["color_levels"] = len(cmap)
    elif quantity == "detected":
        clim = (-0.5, 1.5)
        opts["color_levels"] = 2
    else:
        clim = color_limits(values)
    units = str(da.attrs.get("units", ""))
    label = f"{title} ({units})" if units and quantity not in ("status", "detected") else title
    grid = xr.DataArray(
        values,
        dims=("solar_y", "solar_x"),
        # hv.Image needs a regular grid: the mean pixel steps (the slit's roll is not drawn)
        coords={"solar_y": _regular(window.ys), "solar_x": _regular(window.xs)},
        name=quantity,
        attrs={"units": units},
    )
    return grid.hvplot.image(
        x="solar_x",
        y="solar_y",
        cmap=cmap,
        clim=clim,
        colorbar=True,
        clabel=label,
        title=f"{title}",
        xlabel=window.xlabel,
        ylabel=window.ylabel,
        frame_height=_MAP_HEIGHT,
        frame_width=max(120, min(_MAP_HEIGHT, int(_MAP_HEIGHT * window.aspect))),
        tools=["tap", "hover"],
    ).opts(**opts)


def _spectrum(hv, window: _Window, iy: int, ix: int):
    """Data, fitted model and components, and residuals at one pixel (hvplot elements)."""
    from ..fit.core import model_spectrum

    px = window.results.isel(y=iy, x=ix).compute()
    units = str(window.results["amplitude"].attrs.get("units", ""))
    if window.radiance is not None:
        wavelength = np.asarray(window.radiance["wavelength"].values, dtype=float)
    else:
        lo = float(np.nanmin(px["centroid"] - 6 * px["width"]))
        hi = float(np.nanmax(px["centroid"] + 6 * px["width"]))
        wavelength = np.linspace(lo, hi, 60) if np.isfinite(lo + hi) else np.linspace(0, 1, 2)
    fine = np.linspace(wavelength.min(), wavelength.max(), 8 * wavelength.size)
    curves = {}
    model_ok = bool(np.all(np.isfinite(px["amplitude"].values)))
    if model_ok:
        curves["model"], background, lines = model_parts(px, fine)
        curves["background"] = background
        for line, g in lines.items():
            curves[line_label(line)] = g + background
    frame = (
        xr.Dataset({k: ("wavelength", v) for k, v in curves.items()}, coords={"wavelength": fine})
        if curves
        else None
    )
    ylabel = f"radiance ({units})" if units else "radiance"
    top = []
    residual_plot = None
    if window.radiance is not None:
        spec = window.radiance.isel(y=iy, x=ix).compute()
        top.append(
            spec.hvplot.step(
                x="wavelength", where="mid", color="black", label="data", ylabel=ylabel
            )
        )
        if model_ok:
            model_at = np.asarray(model_spectrum(px, wavelength).values, dtype=float)
            resid = xr.DataArray(
                np.asarray(spec.values, dtype=float) - model_at,
                dims=("wavelength",),
                coords={"wavelength": wavelength},
                name="residual",
            )
            residual_plot = resid.hvplot.step(
                x="wavelength",
                where="mid",
                color="black",
                title="residuals (data - model)",
                xlabel="wavelength (Å)",
                ylabel=ylabel,
                frame_width=_SPECTRUM_WIDTH,
                frame_height=150,
            ) * hv.HLine(0).opts(color="red", line_dash="dashed")
    if frame is not None:
        colors = ["red", "gray"] + ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"]
        for k, name in enumerate(curves):
            top.append(
                frame.hvplot.line(
                    x="wavelength",
                    y=name,
                    label=name,
                    color=colors[min(k, len(colors) - 1)],
                    line_dash="solid" if name == "model" else "dashed",
                    line_width=2 if name == "model" else 1,
                )
            )
    status = pixel_status(px)
    where = f'y={iy}, x={ix} ({window.xs[ix]:.0f}", {window.ys[iy]:.0f}")'
    title = f"{window.name}: spectrum at {where}"
    if not top:
        top.append(hv.Curve([], "wavelength", "radiance"))
    overlay = hv.Overlay(top).opts(
        title=title,
        frame_width=_SPECTRUM_WIDTH,
        frame_height=260,
        legend_position="top_right",
        show_grid=True,
        xlabel="wavelength (Å)",
        ylabel=ylabel,
    )
    return overlay, residual_plot, status


def explorer_page(results, data=None, *, results_path=None):
    """The explorer page as a panel layout (serve it with :func:`serve` or ``.show()``).

    Parameters
    ----------
    results : xarray.DataTree or xarray.Dataset
        Fit results (e.g. :func:`saffron_xr.open_results`), one node per window.
    data : xarray.DataTree, optional
        The L2 file opened with :func:`saffron_xr.open_spice`, for spectra and residuals;
        without it the spectrum panel shows the fitted model only.
    results_path : path-like, optional
        Only used in the page title.

    Returns
    -------
    panel.layout.Panel
        Selectors (line, mask), the maps, the pixel's spectrum and residuals.
    """
    hv, pn = _imports()
    if isinstance(results, xr.Dataset):
        name = str(results.attrs.get("EXTNAME", "results"))
        nodes = {name: results}
    else:
        nodes = select_nodes(results, is_results)
    if not nodes:
        raise ValueError("the results have no node with fitted parameters")
    data_nodes = {}
    if data is not None:
        data_nodes = {
            (n.name or "/"): n.to_dataset() for n in data.subtree if "radiance" in n.dataset
        }
    windows, entries = {}, {}
    all_lines = [str(v) for ds in nodes.values() for v in np.atleast_1d(ds["line"].values)]
    for wname, ds in nodes.items():
        rad = data_nodes[wname]["radiance"] if wname in data_nodes else None
        if rad is not None and "x" not in rad.dims:
            rad = None
        windows[wname] = _Window(wname, ds, rad)
        for line in np.atleast_1d(ds["line"].values):
            label = line_label(str(line))
            if all_lines.count(str(line)) > 1:
                label = f"{wname}: {label}"
            entries[label] = (wname, str(line))

    line_select = pn.widgets.Select(name="line", options=list(entries), width=260)
    mask_select = pn.widgets.Select(name="mask", options=list(MASKS), value="none", width=160)
    first = windows[entries[line_select.value][0]]
    pixel = {"y": pn.widgets.IntInput(name="y", value=first.results.sizes["y"] // 2, width=90)}
    pixel["x"] = pn.widgets.IntInput(name="x", value=first.results.sizes["x"] // 2, width=90)
    status_text = pn.pane.Markdown("", width=_SPECTRUM_WIDTH)

    def on_tap(window, x, y):
        if x is None or y is None:
            return
        iy, ix = window.nearest(x, y)
        pixel["y"].value, pixel["x"].value = iy, ix

    def maps(label, mask_kind):
        wname, line = entries[label]
        window = windows[wname]
        mask = window.mask(mask_kind, line)
        plots = []
        for quantity in PAGE_MAPS:
            img = _map(hv, window, quantity, line, mask)
            if img is None:
                continue
            tap = hv.streams.Tap(source=img, x=None, y=None)
            tap.add_subscriber(lambda x, y, window=window: on_tap(window, x, y))
            plots.append(img)
        return pn.pane.HoloViews(
            hv.Layout(plots).opts(shared_axes=True).cols(3), backend="bokeh", linked_axes=True
        )

    def spectrum(label, iy, ix):
        wname, _ = entries[label]
        window = windows[wname]
        iy = int(np.clip(iy, 0, window.results.sizes["y"] - 1))
        ix = int(np.clip(ix, 0, window.results.sizes["x"] - 1))
        overlay, residuals, status = _spectrum(hv, window, iy, ix)
        status_text.object = f"**pixel** y={iy}, x={ix} — {status}"
        parts = [pn.pane.HoloViews(overlay, backend="bokeh")]
        if residuals is not None:
            parts.append(pn.pane.HoloViews(residuals, backend="bokeh"))
        elif window.radiance is None:
            parts.append(
                pn.pane.Markdown(
                    "*No L2 data file found: pass `--data` for spectra and residuals.*"
                )
            )
        return pn.Column(*parts)

    title = "saffron_xr explorer" + (f": {Path(results_path).name}" if results_path else "")
    controls = pn.Row(line_select, mask_select, pixel["y"], pixel["x"])
    return pn.Column(
        pn.pane.Markdown(f"## {title}"),
        controls,
        pn.Row(
            pn.bind(maps, line_select, mask_select),
            pn.Column(status_text, pn.bind(spectrum, line_select, pixel["y"], pixel["x"])),
        ),
    )


def serve(
    results_path,
    *,
    data=None,
    port: int = 5006,
    address: str = "127.0.0.1",
    show: bool = True,
):
    """Serve the explorer of a results file (blocks until interrupted).

    Parameters
    ----------
    results_path : path-like
        A results file or store (:func:`saffron_xr.to_netcdf`).
    data : path-like, optional
        The L2 FITS file the results came from; by default the input file named in the
        results is looked up beside the results file, in its parent folder and in the
        current folder.
    port : int, default 5006
        Port (0: any free port).
    address : str, default "127.0.0.1"
        Address to listen on (the page is reachable from this machine only by default).
    show : bool, default True
        Open the page in a web browser.
    """
    from ..io.netcdf import open_results
    from ..io.reader import open_spice

    _, pn = _imports()
    results_path = Path(results_path)
    results = open_results(results_path)  # fails early with a clear message
    names = [n for n in results.children]
    filename = None
    for name in names:
        filename = filename or results[name].attrs.get("filename")
    data_path = _find_data(results_path, filename, data)
    if data is not None and not Path(data).is_file():
        raise FileNotFoundError(f"{data}: no such L2 file")
    if data_path is None:
        log.warning("no L2 file found for %s: the explorer shows models only", results_path)
    results.close()

    def page():
        res = open_results(results_path)
        tree = open_spice(data_path) if data_path is not None else None
        return explorer_page(res, tree, results_path=results_path)

    log.info("serving the explorer of %s on http://%s:%s/", results_path, address, port)
    return pn.serve(
        {"/": page},
        port=port,
        address=address,
        show=show,
        title="saffron_xr explorer",
        websocket_origin=[f"{address}:{port}", f"localhost:{port}"],
        threaded=False,
        start=True,
    )


def _cmd_explore(args) -> int:
    serve(args.results, data=args.data, port=args.port, address=args.address, show=args.show)
    return 0


def add_explore_command(subparsers) -> None:
    """Register ``saffron-xr explore RESULTS [--data L2] [--port N] [--no-show]``."""
    p = subparsers.add_parser(
        "explore", help="serve an interactive explorer of a results file in the browser"
    )
    p.add_argument("results", help="results file (.nc) or store (.zarr)")
    p.add_argument("--data", help="the L2 FITS file (default: found from the results)")
    p.add_argument("--port", type=int, default=5006, help="port (default 5006)")
    p.add_argument("--address", default="127.0.0.1", help="address to listen on")
    p.add_argument(
        "--no-show", dest="show", action="store_false", help="do not open a web browser"
    )
    p.set_defaults(func=_cmd_explore)
