"""Where each pixel of a quicklook map goes: corners in helioprojective arcsec, aspect, labels.

Each pixel is the quadrilateral its ``hpln``/``hplt`` coordinates define, so the raster step
``CDELT1``, the slit pixel ``CDELT2`` and the slit tilt are honoured; sit-and-stare maps are
drawn against time. :class:`Geometry` is public within :mod:`saffron_xr.plot`.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

__all__ = ["Geometry", "MISSING_COLOR", "pixel_corners"]

# the thinnest map (width / height) drawn without stretching x
_MIN_MAP_RATIO = 0.22
#: Colour of pixels without a value.
MISSING_COLOR = "0.72"


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


def pixel_corners(centers: np.ndarray, step_y, step_x) -> np.ndarray:
    """Pixel corners ``(ny+1, nx+1, 2)`` from pixel centres ``(ny, nx, 2)``."""
    ext = _pad(_pad(centers, 0, np.asarray(step_y)), 1, np.asarray(step_x))
    return 0.25 * (ext[:-1, :-1] + ext[1:, :-1] + ext[:-1, 1:] + ext[1:, 1:])


class Geometry:
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
            self.corners = pixel_corners(centers, [0.0, cdelt2], [dh, 0.0])
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
        self.corners = pixel_corners(centers, along * cdelt2, across * cdelt1)
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
        ax.set_facecolor(MISSING_COLOR)
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
