"""Model cubes and residuals rebuilt from fit results (a results file, a DataTree or a Dataset).

The Gaussian-plus-background model itself is :func:`saffron_xr.model_spectrum` (the fitter's);
this module only finds the window, its wavelength grid and its data, and assembles the
outputs lazily.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from .reader import window_node_name

__all__ = ["reconstruct"]


def _window_node(tree: xr.DataTree, window, what: str) -> xr.Dataset:
    variable = "radiance" if what == "data" else "amplitude"
    windows = [n for n in tree.subtree if variable in n.dataset.variables]
    names = [n.name for n in windows]
    if window is None:
        if len(windows) != 1:
            raise ValueError(
                f"the {what} has {len(windows)} windows {names}; choose one with window="
            )
        return windows[0].to_dataset()
    key = window if window in names else window_node_name(window)
    for node in windows:
        if node.name == key:
            return node.to_dataset()
    raise ValueError(f"window {window!r} is not in the {what}; it has {names}")


def _results_dataset(results, window) -> xr.Dataset:
    if isinstance(results, (str, Path)):
        from .netcdf import open_results

        results = open_results(results)
    if isinstance(results, xr.DataTree):
        return _window_node(results, window, "results")
    if isinstance(results, xr.Dataset):
        return results
    raise TypeError(
        f"results must be a results file path, a DataTree or a Dataset, got {type(results)}"
    )


def _data_array(data, window, params: xr.Dataset):
    """(radiance DataArray, error DataArray or None) of the fitted window, or (None, None)."""
    if data is None:
        return None, None
    if isinstance(data, (str, Path)):
        from .reader import open_spice

        data = open_spice(data)
    if isinstance(data, xr.DataTree):
        key = window
        if key is None and "EXTNAME" in params.attrs:
            key = window_node_name(params.attrs["EXTNAME"])
        data = _window_node(data, key, "data")
    if isinstance(data, xr.Dataset):
        if "radiance" not in data:
            raise ValueError(f"the data Dataset has no 'radiance'; it has {list(data.data_vars)}")
        return data["radiance"], data.get("error")
    if isinstance(data, xr.DataArray):
        return data, None
    raise TypeError(f"data must be a path, DataTree, Dataset or DataArray, got {type(data)}")


def reconstruct(results, data=None, *, window=None, wavelength=None, error=None) -> xr.Dataset:
    """Model cube (and residuals) of one window from its fit results, lazily.

    Parameters
    ----------
    results : str, path-like, xarray.DataTree or xarray.Dataset
        A results file written by :func:`saffron_xr.to_netcdf`, a DataTree of per-window
        results, or one window's parameter Dataset.
    data : str, path-like, xarray.DataTree, xarray.Dataset or xarray.DataArray, optional
        The fitted L2 data (a file for :func:`saffron_xr.open_spice`, its DataTree, a window
        Dataset or the ``radiance`` DataArray). Gives the wavelength grid and the residuals.
    window : str, optional
        Window (node name or EXTNAME) when ``results`` or ``data`` hold several.
    wavelength : array-like or xarray.DataArray, optional
        Wavelength grid (Angstrom) for the model when no ``data`` is given (or to override
        it). Default: the data's ``wavelength`` coordinate, else a ``wavelength`` coordinate
        of the results.
    error : xarray.DataArray, optional
        1-sigma errors of the data; default the data Dataset's ``error`` variable if any.

    Returns
    -------
    xarray.Dataset
        ``model`` (the data's units, dims of the parameters plus ``wavelength``); with data
        also ``residual`` (data - model) and, with errors, ``normalized_residual``
        (residual / error). Lazy: nothing is computed.
    """
    from ..fit.core import model_spectrum

    params = _results_dataset(results, window)
    radiance, data_error = _data_array(data, window, params)
    if error is None:
        error = data_error
    if wavelength is None:
        if radiance is not None and "wavelength" in radiance.coords:
            wavelength = radiance["wavelength"]
        elif "wavelength" in params.coords:
            wavelength = params["wavelength"]
        else:
            raise ValueError(
                "reconstruct needs a wavelength grid: pass data= (the fitted window) or "
                "wavelength= (Angstrom); the results hold none"
            )
    if not isinstance(wavelength, xr.DataArray):
        values = np.asarray(wavelength, dtype=float)
        wavelength = xr.DataArray(
            values, dims="wavelength", coords={"wavelength": values}, attrs={"units": "Angstrom"}
        )
    model = model_spectrum(params, wavelength)
    units = params["amplitude"].attrs.get("units", "W m-2 sr-1 nm-1")
    model.attrs = {"units": units, "long_name": "fitted model spectrum"}
    out = xr.Dataset({"model": model})
    if radiance is not None:
        # the data's own coordinates win: comparing (lazy) coordinate copies would compute
        shared = [c for c in model.coords if c in radiance.coords and c not in model.indexes]
        residual = (radiance - model.drop_vars(shared)).transpose(*radiance.dims)
        residual.attrs = {"units": units, "long_name": "data minus fitted model"}
        out["residual"] = residual
        if error is not None:
            nres = (residual / error).transpose(*radiance.dims)
            nres.attrs = {"units": "1", "long_name": "residual divided by the 1-sigma error"}
            out["normalized_residual"] = nres
    return out
