"""Differential emission measures (CHIANTI ``.dem`` files) and integrals over them.

A CHIANTI ``.dem`` file lists ``log10(T/K)  log10(DEM)`` pairs, ended by ``-1`` and followed
by comments; DEM is ``n_e n_H dh/dT`` in cm-5 K-1. The quiet-Sun, active-region and
coronal-hole DEMs (CHIANTI 10.1) ship with the package (``saffron_xr/data/dem``) and are the
default reference set of the LCR method; the other CHIANTI DEMs (flare, prominence, ...) are
read from ``$XUVTOP/dem``.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

import numpy as np
import xarray as xr

__all__ = ["read_dem", "REFERENCE_DEMS", "dem_on_grid", "integrate_dem"]

#: The reference DEMs used by default to determine LCR coefficients.
REFERENCE_DEMS = ("quiet_sun", "active_region", "coronal_hole")


def _shipped_dem_dir() -> Path:
    return Path(str(files("saffron_xr") / "data" / "dem"))


def _find_dem(name: str, xuvtop) -> Path:
    path = Path(name).expanduser()
    if path.suffix == ".dem" and path.is_file():
        return path
    stem = name[: -len(".dem")] if name.endswith(".dem") else name
    if xuvtop is not None:
        path = Path(xuvtop) / "dem" / f"{stem}.dem"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such CHIANTI DEM file")
        return path
    shipped = _shipped_dem_dir() / f"{stem}.dem"
    if shipped.is_file():
        return shipped
    env = os.environ.get("XUVTOP")
    if env and (Path(env) / "dem" / f"{stem}.dem").is_file():
        return Path(env) / "dem" / f"{stem}.dem"
    available = sorted(p.stem for p in _shipped_dem_dir().glob("*.dem"))
    raise FileNotFoundError(
        f"DEM {name!r} not found: give a .dem file path, set XUVTOP to a CHIANTI database "
        f"(its dem/ folder), or use a shipped DEM {available}"
    )


def read_dem(name, *, xuvtop=None) -> xr.DataArray:
    """Read a CHIANTI differential emission measure.

    Parameters
    ----------
    name : str or path-like
        A ``.dem`` file path, or a CHIANTI DEM name (``"quiet_sun"``, ``"flare"``). Looked up,
        in order: a file path; ``xuvtop``'s ``dem/``; the DEMs shipped with the package
        (quiet_sun, active_region, coronal_hole); ``$XUVTOP/dem``.
    xuvtop : str or path-like, optional
        CHIANTI database folder.

    Returns
    -------
    xarray.DataArray
        ``dem`` in cm-5 K-1 over dim ``temperature`` (K), named after the file; attrs hold
        the file's comments and path.

    Examples
    --------
    >>> dem = read_dem("quiet_sun")
    >>> dem.attrs["units"], dem.dims
    ('cm-5 K-1', ('temperature',))
    """
    path = _find_dem(str(name), xuvtop)
    log_t, log_dem, comments = [], [], []
    with open(path) as f:
        ended = False
        for line in f:
            parts = line.split()
            if ended:
                if line.strip():
                    comments.append(line.strip())
                continue
            if not parts:
                continue
            if parts[0] == "-1":
                ended = True
                continue
            try:
                log_t.append(float(parts[0]))
                log_dem.append(float(parts[1]))
            except (ValueError, IndexError):
                raise ValueError(f"{path}: unreadable DEM line {line.strip()!r}") from None
    if len(log_t) < 2 or np.any(np.diff(log_t) <= 0):
        raise ValueError(f"{path}: a DEM needs at least two points in increasing log T")
    return xr.DataArray(
        10.0 ** np.asarray(log_dem),
        dims="temperature",
        coords={"temperature": ("temperature", 10.0 ** np.asarray(log_t), {"units": "K"})},
        name=path.stem,
        attrs={
            "units": "cm-5 K-1",
            "long_name": "differential emission measure n_e n_H dh/dT",
            "source": str(path),
            "comment": "\n".join(comments),
        },
    )


def _as_dem(dem, xuvtop=None) -> xr.DataArray:
    if isinstance(dem, xr.DataArray):
        if "temperature" not in dem.dims:
            raise ValueError("a DEM DataArray needs a 'temperature' dimension (K)")
        return dem
    return read_dem(dem, xuvtop=xuvtop)


def dem_on_grid(dem, temperature) -> xr.DataArray:
    """A DEM interpolated onto a temperature grid (linear in log DEM vs log T).

    Parameters
    ----------
    dem : xarray.DataArray or str
        DEM over ``temperature`` (K), possibly with other dims, or a name for
        :func:`read_dem`.
    temperature : array-like
        Target temperatures (K).

    Returns
    -------
    xarray.DataArray
        The DEM on ``temperature``; zero outside the DEM's own temperature range.
    """
    dem = _as_dem(dem)
    temperature = np.asarray(temperature, dtype=float)
    log_dem = np.log10(dem.where(dem > 0)).assign_coords(
        temperature=np.log10(dem["temperature"].values)
    )
    out = 10.0 ** log_dem.interp(temperature=np.log10(temperature))
    out = out.assign_coords(temperature=("temperature", temperature, {"units": "K"}))
    return out.fillna(0.0).assign_attrs(dem.attrs).rename(dem.name)


def _temperature_weights(temperature) -> xr.DataArray:
    """Trapezoid weights (K) for an integral over ``temperature``."""
    t = np.asarray(temperature, dtype=float)
    w = np.zeros_like(t)
    if t.size > 1:
        dt = np.diff(t)
        w[:-1] += dt / 2
        w[1:] += dt / 2
    return xr.DataArray(w, dims="temperature")


def integrate_dem(contribution: xr.DataArray, dem) -> xr.DataArray:
    """``integral G(T) DEM(T) dT`` on the contribution functions' temperature grid.

    Parameters
    ----------
    contribution : xarray.DataArray
        Contribution functions with a ``temperature`` dim (K), erg cm3 s-1 sr-1.
    dem : xarray.DataArray or str
        DEM (cm-5 K-1), interpolated onto that grid with :func:`dem_on_grid` (zero outside
        its range; the grid's range also bounds the integral). Other dims broadcast.

    Returns
    -------
    xarray.DataArray
        In erg cm-2 s-1 sr-1 per unit abundance (multiply by the abundance for a radiance).
    """
    grid = contribution["temperature"].values
    on_grid = dem_on_grid(dem, grid).drop_vars("temperature")
    weights = _temperature_weights(grid)
    out = xr.dot(contribution.drop_vars("temperature"), on_grid * weights, dim="temperature")
    return out.assign_attrs(units="erg cm-2 s-1 sr-1")
