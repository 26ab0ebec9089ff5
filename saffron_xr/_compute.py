"""Computing several lazy Datasets in one dask call.

``dask.compute(ds1, ds2)`` on xarray Datasets loses graph dependencies with the dask/xarray
versions of late 2026 whenever a variable is a transposed or sliced view of another one
(xarray issue 11329: "Missing dependency ... transpose"). Computing the underlying dask
arrays together works and keeps the shared work (one fit feeds many variables) computed once.
"""

from __future__ import annotations

import dask
import xarray as xr

__all__ = ["compute_datasets"]


def compute_datasets(*datasets: xr.Dataset) -> tuple[xr.Dataset, ...]:
    """Compute Datasets together in one ``dask.compute`` call over their dask arrays.

    Uses the active scheduler (threads, or a distributed Client). Variables that are not dask
    arrays are left as they are.

    Parameters
    ----------
    *datasets : xarray.Dataset
        The Datasets to compute (data variables and coordinates).

    Returns
    -------
    tuple of xarray.Dataset
        In-memory copies, in the order given.
    """
    slots = []
    arrays = []
    for i, ds in enumerate(datasets):
        for name, var in ds.variables.items():
            if dask.is_dask_collection(var.data):
                slots.append((i, name))
                arrays.append(var.data)
    values = dask.compute(*arrays) if arrays else ()
    out = [ds.copy() for ds in datasets]
    for (i, name), value in zip(slots, values, strict=True):
        var = out[i].variables[name].copy(data=value)
        if name in out[i].coords:
            out[i] = out[i].assign_coords({name: var})
        else:
            out[i][name] = var
    return tuple(out)
