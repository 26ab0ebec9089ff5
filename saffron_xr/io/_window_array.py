"""Lazy arrays over one SPICE window's bytes: a memmap view and its dask array.

:class:`MemmapWindow` holds only the file name, offset, shape and dtype (it pickles to dask
workers in a few bytes) and maps the file on each read; :func:`dask_array` chunks it, and the
xarray backend wraps the same view in its own lazily indexed array.
"""

from __future__ import annotations

import os
from pathlib import Path

import dask.array as da
import numpy as np
from dask.base import tokenize

_DEFAULT_CHUNK_BYTES = 8 * 2**20


class MemmapWindow:
    """Array-like view of one window's bytes, presented as ``(time, y, x, wavelength)``.

    Holds only the file name, byte offset, shape and dtype, so it pickles to dask workers in a
    few bytes; each ``__getitem__`` maps the file, slices the requested block and returns a
    native-endian copy of that block only.
    """

    def __init__(self, path: str, offset: int, file_shape: tuple, dtype: np.dtype):
        self.path = path
        self.offset = int(offset)
        self.file_shape = tuple(int(n) for n in file_shape)  # (t, wavelength, y, x)
        self.file_dtype = np.dtype(dtype)
        nt, nw, ny, nx = self.file_shape
        self.shape = (nt, ny, nx, nw)
        self.dtype = self.file_dtype.newbyteorder("=")
        self.ndim = 4

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (4 - len(key))
        # dask may fuse a later integer index into the read: read with slices only, then
        # drop the integer-indexed axes after reordering to (t, y, x, wavelength)
        slices, drop = [], []
        for axis, k in enumerate(key):
            if isinstance(k, int | np.integer):
                slices.append(slice(int(k), int(k) + 1))
                drop.append(axis)
            elif isinstance(k, slice):
                slices.append(k)
            else:
                raise TypeError(f"unsupported index {k!r} into a SPICE window")
        kt, ky, kx, kw = slices
        mm = np.memmap(
            self.path, mode="r", dtype=self.file_dtype, offset=self.offset, shape=self.file_shape
        )
        block = np.moveaxis(mm[kt, kw, ky, kx], 1, -1)
        out = np.ascontiguousarray(block, dtype=self.dtype)
        del mm
        if drop:
            out = out.reshape([n for axis, n in enumerate(out.shape) if axis not in drop])
        return out


def _default_chunks(kind, shape, itemsize):
    nt, nw, ny, nx = shape
    per_spectrum = max(nw * itemsize, 1)
    target = max(_DEFAULT_CHUNK_BYTES // per_spectrum, 1)
    if kind == "sit":
        cy = min(ny, max(target // max(nt, 1), 16))
        return {"time": nt if cy == ny else min(nt, max(target // ny, 1)), "y": cy}
    cx = nx if nx <= 64 else 64
    cy = min(ny, max(target // cx, 1))
    return {"y": cy, "x": cx}


def resolve_chunks(chunks, kind, shape, itemsize):
    """The dask chunks of a window: the defaults, updated by the user's ``chunks`` dict."""
    default = _default_chunks(kind, shape, itemsize)
    if chunks is None or chunks == "auto":
        return default
    if not isinstance(chunks, dict):
        raise TypeError(f"chunks must be 'auto', None or a dict of dim -> size, got {chunks!r}")
    if "wavelength" in chunks and chunks["wavelength"] not in (-1, None, shape[1]):
        raise ValueError("the wavelength dimension is always one chunk; drop it from chunks")
    out = dict(default)
    for dim, size in chunks.items():
        if dim == "wavelength":
            continue
        if dim not in out:
            raise ValueError(f"unknown dimension {dim!r} in chunks; use {sorted(out)}")
        out[dim] = size
    return out


def window_array_name(path, offset: int, extname: str) -> str:
    """The dask name of a window's array: the same in every process for the same file bytes.

    Tokenized from the resolved path, the file's modification time and size, the window's
    byte offset and its EXTNAME, so a rewritten file gets new task keys and two processes
    (or dask workers) opening the same file agree on them.
    """
    path = Path(path).resolve()
    stat = os.stat(path)
    token = tokenize(str(path), stat.st_mtime_ns, stat.st_size, int(offset), str(extname))
    return f"spice-{extname}-{token}"


def dask_array(source: MemmapWindow, kind: str, chunks: dict, name: str):
    """The window as a dask array over ``source`` (dims as the reader names them)."""
    nt, ny, nx, nw = source.shape
    block = (
        (chunks["time"], chunks["y"], 1, nw)
        if kind == "sit"
        else (1, chunks["y"], chunks["x"], nw)
    )
    arr4 = da.from_array(
        source, chunks=block, meta=np.empty((0, 0, 0, 0), source.dtype), name=name
    )
    return (arr4[:, :, 0, :] if kind == "sit" else arr4[0]), {}
