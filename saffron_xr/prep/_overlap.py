"""Run a numpy block function with halos on a DataArray: dask ``map_overlap`` or numpy pad.

One place for the halo logic shared by despike, denoise and binning, so that results do not
depend on the chunking: each block sees ``depth`` extra samples on both sides along the named
dims, padded with ``fill`` at the array edges.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import dask.array as da
import numpy as np
import xarray as xr


def apply_overlap(
    func: Callable[..., np.ndarray],
    arrays: list[xr.DataArray],
    depth: Mapping[str, int],
    fill: float,
    dtype,
) -> xr.DataArray:
    """Apply ``func(*blocks)`` with halos of ``depth`` along named dims.

    Parameters
    ----------
    func : callable
        Takes numpy blocks (halo included, same shape, axis order of ``arrays[0].dims``) and
        returns one array of the same shape and ``dtype``.
    arrays : list of xarray.DataArray
        Inputs with identical dims, shapes and chunks (they are aligned by position).
    depth : mapping of str to int
        Halo width per dim; dims not named get no halo.
    fill : float
        Value of the padding beyond the array edges (NaN means "missing").
    dtype : numpy dtype
        Output dtype.

    Returns
    -------
    xarray.DataArray
        Same dims and coords as ``arrays[0]``, no attrs, lazy when the inputs are dask.
    """
    template = arrays[0]
    dims = template.dims
    unknown = set(depth) - set(dims)
    if unknown:
        raise ValueError(f"no dims {sorted(unknown)} in an array with dims {dims}")
    axis_depth = {i: int(depth.get(d, 0)) for i, d in enumerate(dims)}
    datas = [a.transpose(*dims).data for a in arrays]
    if any(isinstance(d, da.Array) for d in datas):
        datas = [
            d if isinstance(d, da.Array) else da.from_array(d, chunks=datas[0].chunks)
            for d in datas
        ]
        chunks = datas[0].chunks
        datas = [d.rechunk(chunks) for d in datas]
        # a halo wider than the array: one chunk, padded here, no halo exchange needed
        wide = {i: n for i, n in axis_depth.items() if n > 0 and n >= template.shape[i]}
        if wide:
            pad = [(wide.get(i, 0),) * 2 for i in range(template.ndim)]
            datas = [
                da.pad(d, pad, constant_values=fill).rechunk({i: -1 for i in wide}) for d in datas
            ]
            axis_depth = {i: (0 if i in wide else n) for i, n in axis_depth.items()}
        boundary = {i: (fill if n > 0 else "none") for i, n in axis_depth.items()}
        out = da.map_overlap(
            func,
            *datas,
            depth=axis_depth,
            boundary=boundary,
            dtype=dtype,
            meta=np.array((), dtype=dtype),
            trim=True,
            align_arrays=False,
        )
        if wide:
            keep = [slice(None)] * template.ndim
            for i, n in wide.items():
                keep[i] = slice(n, n + template.shape[i])
            out = out[tuple(keep)]
    else:
        pad = [(n, n) for n in axis_depth.values()]
        blocks = [np.pad(np.asarray(d), pad, mode="constant", constant_values=fill) for d in datas]
        full = func(*blocks)
        trim = tuple(slice(n, full.shape[i] - n) for i, n in axis_depth.items())
        out = full[trim]
    return xr.DataArray(out, dims=dims, coords=template.coords)
