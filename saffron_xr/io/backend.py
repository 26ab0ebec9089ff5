"""xarray backend ``engine="spice"``: SPICE Level-2 FITS files through xarray's own openers.

Registered as the ``spice`` entry of the ``xarray.backends`` entry-point group (see
``pyproject.toml``), so once saffron_xr is installed::

    tree = xr.open_datatree(path, engine="spice", chunks={})  # == saffron_xr.open_spice(path)
    ds = xr.open_dataset(path, engine="spice", group="Ne_VIII_770_Peak_data", chunks={})
    tree = xr.open_datatree(path)  # the engine is guessed from the file's header

It is the same reader as :func:`saffron_xr.open_spice` (same windows, node names, coordinates,
attributes), with one difference that comes from xarray's protocol: the backend hands xarray a
lazily indexed array per window and xarray decides about dask from its own ``chunks``
argument. ``chunks={}`` gives dask arrays chunked exactly as :func:`~saffron_xr.open_spice`
chunks them (the backend declares those chunks as ``preferred_chunks``); ``chunks=None``
(xarray's default) gives xarray's lazily indexed arrays, which read only the selected pixels
on access; ``chunks={"y": 128}`` or ``"auto"`` work as with any engine. Opening reads headers
only, never pixel data.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import xarray as xr
from astropy.io import fits
from xarray.backends import BackendArray, BackendEntrypoint
from xarray.core import indexing

from ._window_array import MemmapWindow
from .reader import open_one

__all__ = ["SpiceBackendEntrypoint", "is_spice_l2"]

_FITS_SUFFIXES = (".fits", ".fts", ".fit")


class _SpiceWindowArray(BackendArray):
    """One window as an xarray lazily indexed array, dims ``(y, x, wavelength)`` (rasters) or
    ``(time, y, wavelength)`` (sit-and-stare); each read maps only the requested block."""

    def __init__(self, source: MemmapWindow, kind: str):
        self.source = source
        self.kind = kind
        nt, ny, nx, nw = source.shape
        self.shape = (nt, ny, nw) if kind == "sit" else (ny, nx, nw)
        self.dtype = source.dtype

    def __getitem__(self, key):
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.BASIC, self._getitem
        )

    def _getitem(self, key: tuple):
        k0, k1, k2 = key
        # MemmapWindow is (time, y, x, wavelength); an integer index drops its axis
        full = (k0, k1, 0, k2) if self.kind == "sit" else (0, k0, k1, k2)
        return self.source[full]


def _backend_array(source: MemmapWindow, kind: str, chunks: dict, name: str):
    """``make_array`` hook of the reader: a lazily indexed array plus its preferred chunks."""
    nw = source.shape[-1]
    if kind == "sit":
        preferred = {"time": chunks["time"], "y": chunks["y"], "wavelength": nw}
    else:
        preferred = {"y": chunks["y"], "x": chunks["x"], "wavelength": nw}
    data = indexing.LazilyIndexedArray(_SpiceWindowArray(source, kind))
    return data, {"preferred_chunks": preferred}


def _as_path(filename_or_obj) -> Path:
    if isinstance(filename_or_obj, str | os.PathLike):
        return Path(filename_or_obj)
    raise TypeError(
        "engine='spice' opens SPICE L2 FITS files by path (str or path-like), not "
        f"{type(filename_or_obj).__name__} objects"
    )


def is_spice_l2(path) -> bool:
    """Whether ``path`` names a SPICE Level-2 FITS file (reads its primary header only).

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    bool
        True for an existing file whose name ends in ``.fits``/``.fts``/``.fit`` and whose
        primary header has ``INSTRUME = 'SPICE'`` and ``LEVEL = 'L2'``; False otherwise
        (never raises).

    Examples
    --------
    >>> import saffron_xr
    >>> is_spice_l2(saffron_xr.ne8_window_path())
    True
    >>> is_spice_l2("results.nc")
    False
    """
    try:
        path = Path(path)
        if path.suffix.lower() not in _FITS_SUFFIXES or not path.is_file():
            return False
        with open(path, "rb") as fh:
            if not fh.read(9).startswith(b"SIMPLE  ="):
                return False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = fits.getheader(path, 0, ignore_missing_end=True)
        return (
            str(header.get("INSTRUME", "")).strip().upper() == "SPICE"
            and str(header.get("LEVEL", "")).strip().upper() == "L2"
        )
    except (OSError, TypeError, ValueError):
        return False


def _drop(ds: xr.Dataset, drop_variables) -> xr.Dataset:
    if drop_variables is None:
        return ds
    names = [drop_variables] if isinstance(drop_variables, str) else list(drop_variables)
    return ds.drop_vars(names, errors="ignore")


class SpiceBackendEntrypoint(BackendEntrypoint):
    """``engine="spice"``: Solar Orbiter/SPICE Level-2 FITS files, one group per window.

    Groups are the window node names of :func:`saffron_xr.open_spice` (from EXTNAME, see
    :func:`saffron_xr.io.reader.window_node_name`); the root holds the observation keywords.
    Backend keywords (pass them to ``xr.open_dataset`` / ``xr.open_datatree``):

    windows : str, int or list, optional
        Windows to open (``open_datatree`` only), as in :func:`saffron_xr.open_spice`.
    dumbbells : bool, default False
        Also open dumbbell (context) windows.
    mixed_wcs : {"center", "full", "raise"}, default "center"
        As in :func:`saffron_xr.open_spice`.

    ``xr.open_dataset(path, engine="spice", group=window)`` opens one window (a node name or
    an EXTNAME; ``group=None`` opens the file's only window and raises, listing the windows,
    when there are several). ``chunks={}`` gives :func:`~saffron_xr.open_spice`'s dask
    chunks.
    """

    description = "Solar Orbiter/SPICE Level-2 FITS files (saffron_xr), one group per window"
    open_dataset_parameters = (
        "filename_or_obj",
        "drop_variables",
        "group",
        "dumbbells",
        "mixed_wcs",
    )
    supports_groups = True

    def guess_can_open(self, filename_or_obj) -> bool:
        if not isinstance(filename_or_obj, str | os.PathLike):
            return False
        return is_spice_l2(filename_or_obj)

    def open_groups_as_dict(
        self,
        filename_or_obj,
        *,
        drop_variables: str | Iterable[str] | None = None,
        group: str | None = None,
        windows=None,
        dumbbells: bool = False,
        mixed_wcs: str = "center",
    ) -> dict[str, xr.Dataset]:
        """Root Dataset (observation keywords) and one Dataset per window, keyed by path."""
        path = _as_path(filename_or_obj)
        if mixed_wcs not in ("center", "full", "raise"):
            raise ValueError(f"mixed_wcs must be 'center', 'full' or 'raise', got {mixed_wcs!r}")
        if group is not None and str(group).strip("/"):
            if windows is not None:
                raise ValueError("give either group= or windows=, not both")
            windows = [str(group).strip("/")]
        nodes, root_attrs = open_one(
            path, windows, "auto", dumbbells, mixed_wcs, make_array=_backend_array
        )
        groups = {"/": xr.Dataset(attrs=root_attrs)}
        for name, ds in nodes.items():
            groups[f"/{name}"] = _drop(ds, drop_variables)
        return groups

    def open_datatree(
        self,
        filename_or_obj,
        *,
        drop_variables: str | Iterable[str] | None = None,
        group: str | None = None,
        windows=None,
        dumbbells: bool = False,
        mixed_wcs: str = "center",
    ) -> xr.DataTree:
        """All windows (or those in ``windows``) as a DataTree, like :func:`open_spice`."""
        groups = self.open_groups_as_dict(
            filename_or_obj,
            drop_variables=drop_variables,
            group=group,
            windows=windows,
            dumbbells=dumbbells,
            mixed_wcs=mixed_wcs,
        )
        if group is not None and str(group).strip("/"):
            # xarray's convention: the tree is rooted at the requested group
            (window,) = (ds for key, ds in groups.items() if key != "/")
            return xr.DataTree(window)
        return xr.DataTree.from_dict(groups)

    def open_dataset(
        self,
        filename_or_obj,
        *,
        drop_variables: str | Iterable[str] | None = None,
        group: str | None = None,
        dumbbells: bool = False,
        mixed_wcs: str = "center",
    ) -> xr.Dataset:
        """One window (``group``) as a Dataset."""
        path = _as_path(filename_or_obj)
        if group is None or not str(group).strip("/"):
            groups = self.open_groups_as_dict(
                path, drop_variables=drop_variables, dumbbells=dumbbells, mixed_wcs=mixed_wcs
            )
            windows = [key for key in groups if key != "/"]
            if len(windows) != 1:
                raise ValueError(
                    f"{path.name}: has {len(windows)} windows; choose one with group=, one of "
                    + ", ".join(repr(w.lstrip("/")) for w in windows)
                )
            return groups[windows[0]]
        groups = self.open_groups_as_dict(
            path,
            drop_variables=drop_variables,
            group=group,
            dumbbells=dumbbells,
            mixed_wcs=mixed_wcs,
        )
        (window,) = (ds for key, ds in groups.items() if key != "/")
        return window
