"""Static matplotlib quicklooks of fitted-parameter maps and of raw SPICE windows.

:func:`quicklook` draws, for every fitted line, a row of maps -- line radiance, Doppler
velocity, FWHM, reduced chi2 and the fit status -- in helioprojective arcsec with the true
aspect ratio (each pixel is drawn as the quadrilateral its ``hpln``/``hplt`` coordinates
define, so the raster step ``CDELT1``, the slit pixel ``CDELT2`` and the slit tilt are all
honoured). Given radiance windows instead of parameters, it draws per window the
wavelength-averaged map, the detector view (slit position against wavelength) and the mean
spectrum.

These functions *compute*: they load the variables they draw. matplotlib is imported inside
the functions and only the object-oriented interface is used (no pyplot state, no rcParams
changes), so they are safe in scripts, workers and notebooks alike.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import xarray as xr

from ._common import (
    STATUS_COLORS,
    color_limits,
    derived,
    finite,
    is_results,
    line_label,
    symmetric_limits,
    velocity_reference_text,
)
from ._geometry import MISSING_COLOR, Geometry

__all__ = ["quicklook", "line_label", "STATUS_COLORS"]


# Panel layout (inches).
_MAP_HEIGHT = 3.6
_MAP_MAX_WIDTH = 4.2
_MARGIN_LEFT = 0.8  # y tick labels and label
_MARGIN_TOP = 0.75  # three lines of panel title
_MARGIN_BOTTOM = 0.6  # x tick labels and label
_COLORBAR_GAP, _COLORBAR_WIDTH, _COLORBAR_ROOM = 0.1, 0.14, 1.05
_SUPTITLE_ROOM = 0.45

#: Largest image (pixels) :func:`quicklook` writes in a raster format; ``dpi`` is lowered
#: for figures that would be larger (many lines).
MAX_PIXELS = 10_000_000


# ----------------------------------------------------------------------------- inputs


def _windows(data) -> list[tuple[str, xr.Dataset]]:
    """``(name, Dataset)`` for every window (node with data variables) of the input."""
    if isinstance(data, xr.DataArray):
        name = data.name if data.name is not None else "radiance"
        return [(str(data.attrs.get("EXTNAME", name)), data.to_dataset(name="radiance"))]
    if isinstance(data, xr.Dataset):
        return [(str(data.attrs.get("EXTNAME", "")), data)]
    if isinstance(data, xr.DataTree):
        out = []
        for node in data.subtree:
            ds = node.to_dataset(inherit=True)
            if is_results(ds) or "radiance" in node.data_vars:
                out.append((node.name or "/", ds))
        if not out:
            raise ValueError(
                "quicklook: the DataTree has no node with fitted parameters ('amplitude' on "
                "'line') or a 'radiance' variable"
            )
        return out
    raise TypeError(f"quicklook takes a Dataset, DataTree or DataArray, not {type(data).__name__}")


def _title_attrs(attrs: dict) -> str:
    parts = []
    if attrs.get("STUDY"):
        parts.append(str(attrs["STUDY"]).strip())
    if attrs.get("DATE-OBS"):
        parts.append(str(attrs["DATE-OBS"]).strip())
    if attrs.get("SPIOBSID") not in (None, ""):
        obs = f"SPIOBSID {attrs['SPIOBSID']}"
        if attrs.get("RASTERNO") not in (None, ""):
            obs += f" raster {attrs['RASTERNO']}"
        parts.append(obs)
    return "SPICE  " + "   ".join(parts) if parts else "SPICE"


# ----------------------------------------------------------------------------- layout


def _grid_figure(ratios, ncols):
    """A figure of ``len(ratios)`` rows of ``ncols`` maps, each with a colour bar beside it.

    Laid out by hand (no layout engine: it costs seconds for a many-line figure): every map
    of row ``r`` is drawn at width / height ``ratios[r]``, within a box of
    ``_MAP_MAX_WIDTH`` x ``_MAP_HEIGHT`` inches, shrunk (down to 55%) for figures of more
    than 8 rows so that a study of many lines stays a reasonable image.

    Returns
    -------
    (Figure, ndarray of Axes (rows, ncols), ndarray of colour-bar Axes (rows, ncols))
    """
    from matplotlib.figure import Figure

    scale = min(1.0, max(0.55, 8.0 / max(len(ratios), 1)))
    sizes = []
    for ratio in ratios:
        w = min(_MAP_MAX_WIDTH * scale, _MAP_HEIGHT * scale * ratio)
        sizes.append((w, w / ratio))
    box_w = max(w for w, _ in sizes)
    cell_w = _MARGIN_LEFT + box_w + _COLORBAR_GAP + _COLORBAR_WIDTH + _COLORBAR_ROOM
    row_hs = [_MARGIN_TOP + h + _MARGIN_BOTTOM for _, h in sizes]
    fig_w = ncols * cell_w + 0.2
    fig_h = _SUPTITLE_ROOM + sum(row_hs)
    fig = Figure(figsize=(fig_w, fig_h))
    axes = np.empty((len(ratios), ncols), dtype=object)
    caxes = np.empty_like(axes)
    top = fig_h - _SUPTITLE_ROOM
    for r, ((w, h), row_h) in enumerate(zip(sizes, row_hs, strict=True)):
        bottom = top - _MARGIN_TOP - h
        for c in range(ncols):
            left = 0.1 + c * cell_w + _MARGIN_LEFT
            axes[r, c] = fig.add_axes((left / fig_w, bottom / fig_h, w / fig_w, h / fig_h))
            cleft = left + w + _COLORBAR_GAP
            caxes[r, c] = fig.add_axes(
                (cleft / fig_w, bottom / fig_h, _COLORBAR_WIDTH / fig_w, h / fig_h),
                label="<colorbar>",
            )
        top -= row_h
    return fig, axes, caxes


def _colorbar(fig, mesh, label, *, cax=None, ax=None):
    if cax is not None:
        cb = fig.colorbar(mesh, cax=cax)
    else:
        cb = fig.colorbar(mesh, ax=ax, fraction=0.08, pad=0.03, aspect=30)
    cb.set_label(label, fontsize="small")
    cb.ax.tick_params(which="both", labelsize="x-small")
    return cb


# ----------------------------------------------------------------------------- panels


def _status_panel(fig, ax, cax, geom, status: np.ndarray, title: str):
    from matplotlib.colors import BoundaryNorm, ListedColormap

    from ..fit.status import FitStatus

    codes = [(int(s), s.name) for s in FitStatus]
    colors = [STATUS_COLORS.get(name, "#000000") for _, name in codes]
    values = [c for c, _ in codes]
    cmap = ListedColormap(colors)
    bounds = np.concatenate([[values[0] - 0.5], np.asarray(values) + 0.5])
    norm = BoundaryNorm(bounds, cmap.N)
    st = np.asarray(status, dtype=float)
    mesh = geom.draw(ax, st, cmap=cmap, norm=norm, quantity="status code")
    cb = _colorbar(fig, mesh, "", cax=cax)
    cb.set_ticks(values)
    cb.set_ticklabels([name.lower().replace("_", " ") for _, name in codes])
    cb.ax.tick_params(labelsize=6, length=0)
    # fractions of the pixels with data (not ALL_NAN)
    with_data = np.isfinite(st) & (st != int(FitStatus.ALL_NAN))
    n = int(with_data.sum())
    if n:
        converged = [int(c) for c in FitStatus.converged()]
        conv = 100.0 * np.isin(st[with_data], converged).sum() / n
        bound = 100.0 * np.sum(st[with_data] == int(FitStatus.CONVERGED_AT_BOUND)) / n
        # the one definition of converged (FitStatus.converged), stated on the figure
        frac = f"{conv:.1f}% converged (= status CONVERGED)\n{bound:.1f}% converged at a bound"
    else:
        frac = "no pixel with data"
    ax.set_title(f"{title}: fit status\n{frac}", fontsize="small")
    return mesh


def _results_figure(windows, *, velocity_reference, percentile, title):
    from matplotlib.colors import LogNorm, Normalize

    rows = []  # (window name, line, maps dict, geometry)
    for name, ds in windows:
        h_dim = (
            "x"
            if "x" in ds["amplitude"].dims
            else next(d for d in ds["amplitude"].dims if d not in ("line", "y"))
        )
        shown = derived(ds, velocity_reference)
        keep = {
            "radiance": shown["radiance"],
            "doppler_velocity": shown["doppler_velocity"],
            "fwhm": shown["fwhm"],
        }
        for v in ("chi2", "status"):
            if v in ds:
                keep[v] = ds[v]
        maps = xr.Dataset(keep).compute()  # the one load of this window
        geom = Geometry(ds, h_dim)
        for line in np.atleast_1d(maps["line"].values):
            rows.append((name, str(line), maps, geom))
    if not rows:
        raise ValueError("quicklook: no fitted line to show")

    fig, axes, caxes = _grid_figure([g.display_ratio for *_, g in rows], ncols=5)
    fig.suptitle(title, fontsize="medium", y=1 - 0.12 / fig.get_figheight())

    for r, (_window, line, maps, geom) in enumerate(rows):
        label = line_label(line)
        sel = maps.sel(line=line)
        h = geom.h_dim

        def yh(da, h=h):
            return da.transpose("y", h).values

        # radiance (log scale when positive)
        rad = yh(sel["radiance"])
        lo, hi = color_limits(rad, percentile, positive=True)
        norm = (
            LogNorm(lo, hi)
            if np.any(finite(rad) > 0)
            else Normalize(*color_limits(rad, percentile))
        )
        rad_label = f"radiance ({sel['radiance'].attrs.get('units', '')})"
        m = geom.draw(axes[r, 0], rad, cmap="inferno", norm=norm, quantity=rad_label)
        _colorbar(fig, m, cax=caxes[r, 0], label=rad_label)
        axes[r, 0].set_title(f"{label}\nradiance", fontsize="small")

        # Doppler velocity: diverging, symmetric about 0
        vel = yh(sel["doppler_velocity"])
        vmin, vmax = symmetric_limits(vel, percentile)
        m = geom.draw(
            axes[r, 1],
            vel,
            cmap="RdBu_r",
            norm=Normalize(vmin, vmax),
            quantity="Doppler velocity (km/s)",
        )
        ref = velocity_reference_text(maps["doppler_velocity"])
        _colorbar(fig, m, cax=caxes[r, 1], label=f"Doppler velocity (km/s), {ref}")
        axes[r, 1].set_title(f"{label}\nDoppler velocity\n{ref}", fontsize="small")

        # FWHM
        fw = yh(sel["fwhm"])
        fw_label = f"FWHM ({sel['fwhm'].attrs.get('units', 'Angstrom')})"
        fw_norm = Normalize(*color_limits(fw, percentile))
        m = geom.draw(axes[r, 2], fw, cmap="viridis", norm=fw_norm, quantity=fw_label)
        _colorbar(fig, m, cax=caxes[r, 2], label=fw_label)
        axes[r, 2].set_title(f"{label}\nFWHM", fontsize="small")

        # reduced chi2
        if "chi2" in sel:
            chi = yh(sel["chi2"])
            lo, hi = color_limits(chi, percentile)
            chi_norm = Normalize(min(lo, 0.0), hi)
            m = geom.draw(axes[r, 3], chi, cmap="magma", norm=chi_norm, quantity="reduced χ²")
            _colorbar(fig, m, cax=caxes[r, 3], label="reduced χ²")
            axes[r, 3].set_title(f"{label}\nreduced χ²", fontsize="small")
        else:
            axes[r, 3].set_axis_off()
            caxes[r, 3].set_axis_off()

        # fit status
        if "status" in sel:
            _status_panel(fig, axes[r, 4], caxes[r, 4], geom, yh(sel["status"]), label)
        else:
            axes[r, 4].set_axis_off()
            caxes[r, 4].set_axis_off()
    return fig


def _window_figure(windows, *, percentile, title):
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.figure import Figure

    n = len(windows)
    fig = Figure(figsize=(3 * 4.2 + 0.5, n * (_MAP_HEIGHT + 1.2) + 0.7), layout="constrained")
    axes = fig.subplots(n, 3, squeeze=False)
    fig.suptitle(title, fontsize="medium")
    for r, (name, ds) in enumerate(windows):
        rad = ds["radiance"]
        if "wavelength" not in rad.dims:
            raise ValueError(f"quicklook: window {name!r} radiance has no 'wavelength' dim")
        h_dim = (
            "x" if "x" in rad.dims else next(d for d in rad.dims if d not in ("y", "wavelength"))
        )
        wl = rad["wavelength"].values
        units = rad.attrs.get("units", rad.attrs.get("BUNIT", ""))
        # the mean, not the sum: windows have NaN samples at their edges, more at some
        # slit positions than at others
        averaged = rad.mean("wavelength", skipna=True).transpose("y", h_dim)
        mid = rad.sizes[h_dim] // 2
        detector = rad.isel({h_dim: mid}).transpose("y", "wavelength")
        mean = rad.mean(["y", h_dim], skipna=True)
        averaged, detector, mean = (a.compute() for a in (averaged, detector, mean))

        geom = Geometry(ds, h_dim)
        img = averaged.values
        lo, hi = color_limits(img, percentile, positive=True)
        m = geom.draw(
            axes[r, 0],
            img,
            cmap="inferno",
            norm=LogNorm(lo, hi),
            quantity=f"mean radiance ({units})",
        )
        _colorbar(fig, m, f"mean radiance ({units})", ax=axes[r, 0])
        axes[r, 0].set_title(f"{name}\nmean over wavelength", fontsize="small")

        ax = axes[r, 1]
        det = detector.values
        ycoord = (
            ds["hplt"].isel({h_dim: mid}).values
            if "hplt" in ds.coords and h_dim in ds["hplt"].dims
            else np.arange(det.shape[0]) * float(ds.attrs.get("CDELT2", 1.0) or 1.0)
        )
        lo, hi = color_limits(det, percentile)
        m = ax.pcolormesh(
            wl,
            ycoord,
            np.ma.masked_invalid(det),
            cmap="inferno",
            shading="nearest",
            norm=Normalize(lo, hi),
        )
        ax.set_facecolor(MISSING_COLOR)
        _colorbar(fig, m, f"radiance ({units})", ax=ax)
        ax.set_xlabel("wavelength (Å)", fontsize="small")
        ax.set_ylabel("Solar Y (arcsec)", fontsize="small")
        ax.tick_params(labelsize="x-small")
        ax.set_title(f"{name}\ndetector view, {h_dim} = {mid}", fontsize="small")

        ax = axes[r, 2]
        ax.plot(wl, mean.values, drawstyle="steps-mid", color="k", lw=1)
        ax.set_xlabel("wavelength (Å)", fontsize="small")
        ax.set_ylabel(f"mean radiance ({units})", fontsize="small")
        ax.tick_params(labelsize="x-small")
        ax.set_title(f"{name}\nmean spectrum", fontsize="small")
        ax.grid(alpha=0.3)
    return fig


def _save_png(fig, path, dpi: float) -> None:
    """Write ``fig`` as a 256-colour PNG: colour-mapped noisy maps take about a third of
    the bytes of a full-colour PNG, with no visible difference at quicklook scale."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    old = fig.dpi
    fig.set_dpi(dpi)
    try:
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        rgb = Image.frombuffer(
            "RGBA", canvas.get_width_height(), canvas.buffer_rgba(), "raw", "RGBA", 0, 1
        ).convert("RGB")
    finally:
        fig.set_dpi(old)
    image = rgb.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    image.save(path, format="png", optimize=True)


# ----------------------------------------------------------------------------- public


def quicklook(
    results,
    path=None,
    *,
    velocity_reference=None,
    percentile: float = 99.0,
    dpi: int = 100,
):
    """A static overview figure of fitted-parameter maps (or of raw SPICE windows).

    For every line of every window, one row of five maps in helioprojective arcsec with the
    true aspect ratio: line radiance (log scale), Doppler velocity (diverging colour map,
    limits symmetric about 0), FWHM, reduced chi2 and the fit status of each pixel. Pixels
    without a value are grey. Colour limits are clipped at percentiles of the finite values.
    Rasters narrower than about a fifth of their height are stretched in x by an integer
    factor, stated in the axis label.

    Given radiance data (a window Dataset with ``radiance``, a radiance DataArray or a
    DataTree of windows) instead of parameters, draws per window the wavelength-averaged
    map, the detector view (slit position against wavelength, middle raster step) and the
    mean spectrum.

    This function computes (loads) the variables it draws.

    Parameters
    ----------
    results : xarray.Dataset, xarray.DataTree or xarray.DataArray
        A fitted-parameter Dataset (``amplitude``, ``centroid``, ``width`` on ``(line, y, x)``
        or ``(line, time, y)``, plus ``chi2`` and ``status``), a DataTree of them (one node
        per window), or radiance windows (see above). Variables ``radiance`` and ``fwhm``
        already present (e.g. from :func:`saffron_xr.derive_all`) are drawn as they are;
        missing ones are derived.
    path : str or path-like, optional
        Write the figure there (format from the suffix, e.g. ``.png``).
    velocity_reference : None, {"median", "rest", "column", "stored"}, float or DataArray
        Reference wavelength of the Doppler velocity (see
        :func:`saffron_xr.derive.doppler_velocity`). Default None: the ``doppler_velocity``
        variable of the results as it is (so the figure shows the same numbers as the file,
        e.g. a results file of ``saffron-xr run``), or, if there is none, the velocity with
        the package's default reference. ``"stored"`` insists on the stored variable. Any
        other value recomputes the velocity from the centroids with that reference. The
        reference used is stated in each velocity panel's title and colour-bar label (from
        the ``doppler_reference`` attribute).
    percentile : float, default 99.0
        Colour limits: ``[100 - percentile, percentile]`` percentiles of the finite values;
        for the velocity, ``±`` the ``percentile`` percentile of ``|v|``.
    dpi : int, default 100
        Resolution of the written file; lowered for raster formats (PNG, JPEG) when the image
        would exceed :data:`MAX_PIXELS` (10 million pixels; a figure of many lines).

    Returns
    -------
    matplotlib.figure.Figure
        The figure (not registered with pyplot).

    Examples
    --------
    >>> import saffron_xr
    >>> from saffron_xr.plot import quicklook
    >>> tree = saffron_xr.open_spice(saffron_xr.ne8_window_path())
    >>> fig = quicklook(tree)  # raw window: mean map, detector view, mean spectrum
    >>> len(fig.axes) > 3
    True
    """
    if not 50.0 < float(percentile) <= 100.0:
        raise ValueError(f"quicklook: percentile must be in (50, 100], got {percentile}")
    windows = _windows(results)
    attrs = dict(getattr(results, "attrs", {}))
    attrs = {**windows[0][1].attrs, **attrs} if not attrs.get("STUDY") else attrs
    title = _title_attrs(attrs)
    if all(is_results(ds) for _, ds in windows):
        fig = _results_figure(
            windows, velocity_reference=velocity_reference, percentile=percentile, title=title
        )
    elif all("radiance" in ds.data_vars for _, ds in windows):
        fig = _window_figure(windows, percentile=percentile, title=title)
    else:
        raise ValueError(
            "quicklook: expected fitted parameters ('amplitude' on 'line') or radiance windows "
            "('radiance'), not a mixture"
        )
    if path is not None:
        from ..io._atomic import write_atomically

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fmt = path.suffix.lstrip(".").lower() or None
        width, height = fig.get_size_inches()
        # many lines make a tall figure: lower the resolution of raster formats so that the
        # image stays readable but small (at most MAX_PIXELS pixels, under ~2 MB as PNG)
        if fmt not in ("pdf", "svg", "eps", "ps"):
            dpi = min(float(dpi), math.sqrt(MAX_PIXELS / (width * height)))
        # atomically: an interrupted write leaves no truncated image under the final name
        if fmt == "png":
            write_atomically(path, lambda part: _save_png(fig, part, dpi))
        else:
            write_atomically(path, lambda part: fig.savefig(part, dpi=dpi, format=fmt))
    return fig
