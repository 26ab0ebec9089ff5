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
import re
from pathlib import Path

import numpy as np
import xarray as xr

__all__ = ["quicklook", "line_label", "STATUS_COLORS"]

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

# Panel layout (inches) and the thinnest map (width / height) drawn without stretching x.
_MAP_HEIGHT = 3.6
_MAP_MAX_WIDTH = 4.2
_MARGIN_LEFT = 0.8  # y tick labels and label
_MARGIN_TOP = 0.75  # three lines of panel title
_MARGIN_BOTTOM = 0.6  # x tick labels and label
_COLORBAR_GAP, _COLORBAR_WIDTH, _COLORBAR_ROOM = 0.1, 0.14, 1.05
_SUPTITLE_ROOM = 0.45
_MIN_MAP_RATIO = 0.22
_MISSING_COLOR = "0.72"

#: Largest image (pixels) :func:`quicklook` writes in a raster format; ``dpi`` is lowered
#: for figures that would be larger (many lines).
MAX_PIXELS = 10_000_000


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


# ----------------------------------------------------------------------------- inputs


def _is_results(ds: xr.Dataset) -> bool:
    return "amplitude" in ds.data_vars and "line" in ds["amplitude"].dims


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
            if _is_results(ds) or "radiance" in node.data_vars:
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


def _with_errors(ds: xr.Dataset) -> xr.Dataset:
    """Zero errors where a parameter has none, so the derive functions accept the Dataset."""
    missing = {
        f"{v}_err": xr.zeros_like(ds[v])
        for v in ("amplitude", "centroid", "width")
        if v in ds and f"{v}_err" not in ds
    }
    return ds.assign(missing) if missing else ds


def _derived(ds: xr.Dataset, velocity_reference) -> xr.Dataset:
    """Radiance, Doppler velocity and FWHM: taken from ``ds`` when present, else derived."""
    from .. import derive

    params = _with_errors(ds)
    out = {}
    if "radiance" in ds and "line" in ds["radiance"].dims:
        out["radiance"] = ds["radiance"]
    else:
        out["radiance"] = derive.radiance(params)["radiance"]
    stored = velocity_reference is None or (
        isinstance(velocity_reference, str) and velocity_reference == "stored"
    )
    if stored and "doppler_velocity" in ds:
        out["doppler_velocity"] = ds["doppler_velocity"]
    elif velocity_reference is None:  # nothing stored: the package's default reference
        out["doppler_velocity"] = derive.doppler_velocity(params)["doppler_velocity"]
    elif stored:
        raise ValueError(
            "velocity_reference='stored' needs a 'doppler_velocity' variable in the results"
        )
    else:
        out["doppler_velocity"] = derive.doppler_velocity(params, reference=velocity_reference)[
            "doppler_velocity"
        ]
    out["fwhm"] = ds["fwhm"] if "fwhm" in ds else derive.fwhm(params)["fwhm"]
    return xr.Dataset(out)


def _velocity_reference_text(v: xr.DataArray) -> str:
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


# ----------------------------------------------------------------------------- geometry


def _pad(a: np.ndarray, axis: int, step: np.ndarray) -> np.ndarray:
    """Extend ``a`` by one linearly extrapolated sample at both ends of ``axis``.

    ``step`` (broadcastable to one slice) is used when the axis has a single sample.
    """
    a = np.moveaxis(a, axis, 0)
    if a.shape[0] > 1:
        first, last = 2 * a[0] - a[1], 2 * a[-1] - a[-2]
    else:
        first, last = a[0] - step, a[0] + step
    out = np.concatenate([first[None], a, last[None]], axis=0)
    return np.moveaxis(out, 0, axis)


def _corners(centers: np.ndarray, step_y, step_x) -> np.ndarray:
    """Pixel corners ``(ny+1, nx+1, 2)`` from pixel centres ``(ny, nx, 2)``."""
    ext = _pad(_pad(centers, 0, np.asarray(step_y)), 1, np.asarray(step_x))
    return 0.25 * (ext[:-1, :-1] + ext[1:, :-1] + ext[:-1, 1:] + ext[1:, 1:])


class _Geometry:
    """Where each ``(y, h)`` pixel of a map goes: corners, axis labels, aspect."""

    def __init__(self, ds: xr.Dataset, h_dim: str):
        self.h_dim = h_dim
        ny, nh = ds.sizes["y"], ds.sizes[h_dim]
        cdelt1 = float(ds.attrs.get("CDELT1", 1.0) or 1.0)
        cdelt2 = float(ds.attrs.get("CDELT2", 1.0) or 1.0)
        self.is_time = h_dim != "x"
        # a single raster step (single exposures): a map would be a sliver, so each panel
        # shows the quantity along the slit instead
        self.profile = h_dim == "x" and nh == 1
        if self.is_time:
            # sit-and-stare: time horizontally, solar Y along the slit vertically
            import matplotlib.dates as mdates

            times = ds[h_dim].values if h_dim in ds.coords else np.arange(nh)
            if np.issubdtype(np.asarray(times).dtype, np.datetime64):
                hvals = mdates.date2num(times)
            else:
                hvals = np.asarray(times, dtype=float)
                self.is_time = False
            if "hplt" in ds.coords:
                hplt = ds["hplt"]
                yvals = hplt.mean([d for d in hplt.dims if d != "y"]).values
            else:
                yvals = np.arange(ny) * cdelt2
            centers = np.stack(np.broadcast_arrays(hvals[None, :], yvals[:, None]), axis=-1)
            dh = np.diff(hvals).mean() if nh > 1 else 1.0
            self.corners = _corners(centers, [0.0, cdelt2], [dh, 0.0])
            self.xlabel = "time (UTC)" if h_dim == "time" else h_dim
            self.ylabel = "Solar Y (arcsec)" if "hplt" in ds.coords else "along slit (arcsec)"
            self.aspect = "auto"
            self.stretch = 1
            return
        if "hpln" in ds.coords and "hplt" in ds.coords:
            hpln = ds["hpln"].transpose("y", "x").values.astype(float)
            hplt = ds["hplt"].transpose("y", "x").values.astype(float)
            self.xlabel, self.ylabel = "Solar X (arcsec)", "Solar Y (arcsec)"
        else:
            hplt, hpln = np.meshgrid(np.arange(ny) * cdelt2, np.arange(nh) * cdelt1, indexing="ij")
            self.xlabel, self.ylabel = "raster offset (arcsec)", "slit offset (arcsec)"
        centers = np.stack([hpln, hplt], axis=-1)
        # a single step along an axis: use the pixel size, perpendicular to the other axis
        if ny > 1:
            along = centers[-1, 0] - centers[0, 0]
            along = along / np.hypot(*along)
        else:
            along = np.array([0.0, 1.0])
        across = np.array([along[1], -along[0]])
        if across[0] < 0:
            across = -across
        self.corners = _corners(centers, along * cdelt2, across * cdelt1)
        width = np.ptp(self.corners[..., 0])
        height = np.ptp(self.corners[..., 1])
        ratio = width / height if height > 0 else 1.0
        # very narrow rasters (a few steps) are stretched in x by an integer factor, and the
        # axis label says so; the y/x scale stays exact otherwise
        self.stretch = max(1, math.ceil(_MIN_MAP_RATIO / ratio)) if ratio > 0 else 1
        self.aspect = 1.0 / self.stretch
        if self.stretch > 1:
            self.xlabel += f"  [x stretched ×{self.stretch}]"
        self.slit_y = hplt[:, 0]
        if self.profile:
            self.stretch, self.aspect = 1, "auto"

    @property
    def display_ratio(self) -> float:
        """Width / height of the map as drawn."""
        if self.profile:
            return 0.6
        if self.aspect == "auto":
            return 1.6
        width = np.ptp(self.corners[..., 0]) * self.stretch
        height = np.ptp(self.corners[..., 1])
        return float(width / height) if height > 0 else 1.0

    def draw(self, ax, values: np.ndarray, *, quantity: str = "", **kwargs):
        """pcolormesh of a ``(y, h)`` map (or, for one raster step, a profile along the slit,
        points coloured like the map); returns the mappable."""
        if self.profile:
            return self._draw_profile(
                ax, np.asarray(values, dtype=float)[:, 0], quantity, **kwargs
            )
        # no antialiasing: each data pixel is a block of one colour, which PNG compresses
        # well (antialiased edges of the tilted quadrilaterals double the file size)
        # rasterized: one image, not thousands of polygons, in vector formats
        mesh = ax.pcolormesh(
            self.corners[..., 0],
            self.corners[..., 1],
            np.ma.masked_invalid(values),
            antialiased=False,
            rasterized=True,
            **kwargs,
        )
        ax.set_facecolor(_MISSING_COLOR)
        ax.set_xlim(self.corners[..., 0].min(), self.corners[..., 0].max())
        ax.set_ylim(self.corners[..., 1].min(), self.corners[..., 1].max())
        ax.set_aspect(self.aspect, adjustable="box")
        ax.set_xlabel(self.xlabel, fontsize="small")
        ax.set_ylabel(self.ylabel, fontsize="small")
        ax.tick_params(labelsize="x-small")
        if self.is_time:
            import matplotlib.dates as mdates

            loc = mdates.AutoDateLocator(minticks=3, maxticks=6)
            ax.xaxis.set_major_locator(loc)
            ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))
        else:
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(nbins=3 if self.stretch > 1 else 4))
        return mesh

    def _draw_profile(self, ax, values, quantity, *, cmap, norm):
        from matplotlib.colors import LogNorm
        from matplotlib.ticker import NullFormatter

        ok = np.isfinite(values)
        points = ax.scatter(
            values[ok],
            self.slit_y[ok],
            c=values[ok],
            cmap=cmap,
            norm=norm,
            s=6,
            edgecolors="0.4",
            linewidths=0.2,
        )
        if isinstance(norm, LogNorm):
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        lo, hi = norm.vmin, norm.vmax
        if lo is not None and hi is not None and hi > lo:
            pad = (hi / lo) ** 0.05 if isinstance(norm, LogNorm) else 0.05 * (hi - lo)
            ax.set_xlim(
                *((lo / pad, hi * pad) if isinstance(norm, LogNorm) else (lo - pad, hi + pad))
            )
        ax.set_ylim(np.nanmin(self.slit_y), np.nanmax(self.slit_y))
        ax.set_xlabel(quantity, fontsize="small")
        ax.set_ylabel(self.ylabel, fontsize="small")
        ax.tick_params(labelsize="x-small")
        ax.grid(alpha=0.3)
        return points


# ----------------------------------------------------------------------------- limits


def _finite(values) -> np.ndarray:
    v = np.asarray(values, dtype=float).ravel()
    return v[np.isfinite(v)]


def _range(values, percentile: float, *, positive: bool = False) -> tuple[float, float]:
    v = _finite(values)
    if positive:
        v = v[v > 0]
    if v.size == 0:
        return (0.1, 1.0) if positive else (0.0, 1.0)
    lo, hi = np.percentile(v, [100.0 - percentile, percentile])
    if not hi > lo:
        lo, hi = (lo / 2, lo * 2) if positive else (lo - 0.5, lo + 0.5)
    return float(lo), float(hi)


def _symmetric(values, percentile: float) -> float:
    v = _finite(values)
    if v.size == 0:
        return 1.0
    lim = float(np.percentile(np.abs(v), percentile))
    return lim if lim > 0 else 1.0


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
        derived = _derived(ds, velocity_reference)
        keep = {
            "radiance": derived["radiance"],
            "doppler_velocity": derived["doppler_velocity"],
            "fwhm": derived["fwhm"],
        }
        for v in ("chi2", "status"):
            if v in ds:
                keep[v] = ds[v]
        maps = xr.Dataset(keep).compute()  # the one load of this window
        geom = _Geometry(ds, h_dim)
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
        lo, hi = _range(rad, percentile, positive=True)
        norm = LogNorm(lo, hi) if np.any(_finite(rad) > 0) else Normalize(*_range(rad, percentile))
        rad_label = f"radiance ({sel['radiance'].attrs.get('units', '')})"
        m = geom.draw(axes[r, 0], rad, cmap="inferno", norm=norm, quantity=rad_label)
        _colorbar(fig, m, cax=caxes[r, 0], label=rad_label)
        axes[r, 0].set_title(f"{label}\nradiance", fontsize="small")

        # Doppler velocity: diverging, symmetric about 0
        vel = yh(sel["doppler_velocity"])
        vmax = _symmetric(vel, percentile)
        m = geom.draw(
            axes[r, 1],
            vel,
            cmap="RdBu_r",
            norm=Normalize(-vmax, vmax),
            quantity="Doppler velocity (km/s)",
        )
        ref = _velocity_reference_text(maps["doppler_velocity"])
        _colorbar(fig, m, cax=caxes[r, 1], label=f"Doppler velocity (km/s), {ref}")
        axes[r, 1].set_title(f"{label}\nDoppler velocity\n{ref}", fontsize="small")

        # FWHM
        fw = yh(sel["fwhm"])
        fw_label = f"FWHM ({sel['fwhm'].attrs.get('units', 'Angstrom')})"
        fw_norm = Normalize(*_range(fw, percentile))
        m = geom.draw(axes[r, 2], fw, cmap="viridis", norm=fw_norm, quantity=fw_label)
        _colorbar(fig, m, cax=caxes[r, 2], label=fw_label)
        axes[r, 2].set_title(f"{label}\nFWHM", fontsize="small")

        # reduced chi2
        if "chi2" in sel:
            chi = yh(sel["chi2"])
            lo, hi = _range(chi, percentile)
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

        geom = _Geometry(ds, h_dim)
        img = averaged.values
        lo, hi = _range(img, percentile, positive=True)
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
        lo, hi = _range(det, percentile)
        m = ax.pcolormesh(
            wl,
            ycoord,
            np.ma.masked_invalid(det),
            cmap="inferno",
            shading="nearest",
            norm=Normalize(lo, hi),
        )
        ax.set_facecolor(_MISSING_COLOR)
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
    if all(_is_results(ds) for _, ds in windows):
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
