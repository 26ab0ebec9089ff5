"""Lazy reading of SPICE Level-2 FITS files into labelled xarray objects.

A SPICE L2 file holds one image HDU per spectral *window*, data in numpy order
``(t, wavelength, y, x)``, radiance in W m-2 sr-1 nm-1. :func:`open_spice` maps each window's
bytes (memmap, one chunk at a time) into a dask array with dims ``(y, x, wavelength)`` (rasters
and single exposures) or ``(time, y, wavelength)`` (sit-and-stare), and computes the
coordinates (wavelength in Angstrom, helioprojective longitude/latitude in arcsec, time) from
the header's full WCS. Opening reads headers only: no pixel data, no NaN mask.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr
from astropy.io.fits.verify import VerifyError

from ..errors import SpiceFileError
from ._spice_header import (
    attr_value,
    check_instrument,
    check_wave_range,
    check_wcs,
    file_error,
    is_dumbbell,
    is_window,
    kind_of,
    no_data,
    open_hdulist,
    variable_radcal,
    wave_scale,
)
from ._spice_wcs import spatial_wcs_text, window_coordinates
from ._window_array import MemmapWindow, dask_array, resolve_chunks, window_array_name

__all__ = ["open_spice", "window_node_name", "spatial_wcs_text", "PIPELINE_KEYWORDS"]

log = logging.getLogger(__name__)

#: Header keywords copied as attributes onto each window Dataset and its ``radiance``.
PIPELINE_KEYWORDS = (
    "INSTRUME",
    "TELESCOP",
    "LEVEL",
    "STUDY",
    "STUDYTYP",
    "OBS_MODE",
    "OBS_ID",
    "SOOPNAME",
    "SPIOBSID",
    "RASTERNO",
    "NRASTERS",
    "DATE-OBS",
    "DATE-BEG",
    "DATE-END",
    "DATE-AVG",
    "DATEREF",
    "XPOSURE",
    "TELAPSE",
    "RADCAL",
    "NBIN",
    "NBIN1",
    "NBIN2",
    "NBIN3",
    "SLIT_ID",
    "SLIT_WID",
    "WAVEMIN",
    "WAVEMAX",
    "WAVEUNIT",
    "WAVEREF",
    "BUNIT",
    "BTYPE",
    "DETECTOR",
    "WINNO",
    "WIN_TYPE",
    "DATAPROD",
    "DUMBBELL",
    "EXTNAME",
    "VERSION",
    "VERS_CAL",
    "CDELT1",
    "CDELT2",
    "CDELT3",
    "CROTA",
    "DSUN_OBS",
    "RSUN_ARC",
    "HGLN_OBS",
    "HGLT_OBS",
    "OBS_VR",
    "CRVAL1",
    "CRVAL2",
)

_WCS_REQUIRED = ("CTYPE{i}", "CUNIT{i}", "CRVAL{i}", "CDELT{i}", "CRPIX{i}")
_DEFAULT_CHUNK_BYTES = 8 * 2**20


def window_node_name(extname: str) -> str:
    """DataTree node name for a window EXTNAME: runs of non-alphanumerics become ``_``.

    Parameters
    ----------
    extname : str
        The window's EXTNAME (or an already sanitised node name, which is returned as is).

    Returns
    -------
    str
        The name with leading/trailing ``_`` stripped; ``"window"`` if nothing is left.

    Examples
    --------
    >>> window_node_name("Ne VIII 770 - Peak")
    'Ne_VIII_770_Peak'
    >>> window_node_name("FLT02_Two Window_OB_ID_253_")
    'FLT02_Two_Window_OB_ID_253'
    """
    name = re.sub(r"[^0-9A-Za-z]+", "_", str(extname)).strip("_")
    return name or "window"


def _open_window(path, hdul, hdu, kind, chunks, mixed_wcs, cache=None, make_array=None):
    """One window as a Dataset.

    ``make_array(source, kind, chunks, name) -> (data, encoding)`` turns the window's
    :class:`MemmapWindow` into the ``radiance`` data (default: a dask array, see
    :func:`dask_array`); the xarray backend passes its own lazily indexed array.
    """
    hdr = hdu.header
    extname = str(hdr.get("EXTNAME", "PRIMARY")).strip()
    check_wcs(path, hdr, extname)
    if hdr.get("NAXIS") != 4:
        raise file_error(path, f"window {extname!r} has NAXIS={hdr.get('NAXIS')}; expected 4")
    file_shape = tuple(int(hdr[f"NAXIS{i}"]) for i in (4, 3, 2, 1))  # (t, wavelength, y, x)
    bitpix = int(hdr["BITPIX"])
    if bitpix not in (-32, -64) or hdr.get("BSCALE", 1) != 1 or hdr.get("BZERO", 0) != 0:
        raise file_error(
            path,
            f"window {extname!r} has BITPIX={bitpix} (BSCALE/BZERO scaling); "
            "only floating-point L2 windows are supported",
        )
    dtype = np.dtype(">f4" if bitpix == -32 else ">f8")
    info = hdu.fileinfo()
    offset = int(info["datLoc"])
    nbytes = int(np.prod(file_shape)) * dtype.itemsize
    size = os.path.getsize(path)
    if offset + nbytes > size:
        raise file_error(
            path,
            f"is truncated: window {extname!r} needs bytes up to {offset + nbytes} "
            f"but the file has {size}",
        )
    nt, nw, ny, nx = file_shape
    source = MemmapWindow(str(path), offset, file_shape, dtype)
    ch = resolve_chunks(chunks, kind, file_shape, dtype.itemsize)
    if kind == "sit":
        if nx != 1:
            raise file_error(path, f"sit-and-stare window {extname!r} has {nx} slit positions")
        dims = ("time", "y", "wavelength")
    else:
        if nt != 1:
            raise file_error(path, f"raster window {extname!r} has {nt} exposures along time")
        dims = ("y", "x", "wavelength")
    data, encoding = (make_array or dask_array)(
        source, kind, ch, window_array_name(path, offset, extname)
    )

    radcal = variable_radcal(path, hdul, extname)
    check_instrument(path, hdr, extname, radcal)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # wcslib's complaints become the error below
            coords, note = window_coordinates(
                path, hdr, extname, file_shape, kind, mixed_wcs, cache
            )
    except SpiceFileError:
        raise
    except Exception as exc:  # wcslib raises its own errors (singular matrix, bad CTYPE...)
        detail = str(exc).strip().splitlines()
        raise file_error(
            path,
            f"window {extname!r}: its WCS cannot be evaluated "
            f"({type(exc).__name__}: {detail[-1] if detail else ''})",
        ) from exc
    for name in ("wavelength", "hpln", "hplt"):
        values = np.asarray(coords[name][1], dtype=float)
        if not np.all(np.isfinite(values)):
            raise file_error(
                path,
                f"window {extname!r}: its WCS gives non-finite {name} coordinates "
                f"({int((~np.isfinite(values)).sum())} of {values.size})",
            )
    check_wave_range(path, hdr, extname, np.asarray(coords["wavelength"][1], dtype=float))
    wave_scale(path, hdr, extname)  # rejects an unknown CUNIT3 (astropy gives metres)
    if radcal is not None and radcal.size == nw:
        coords["radcal"] = (
            "wavelength",
            radcal,
            {
                "long_name": "radiometric calibration factor per wavelength",
                "units": "DN / (W m-2 sr-1 nm-1)",
            },
        )

    key_attrs = {k: attr_value(hdr[k]) for k in PIPELINE_KEYWORDS if k in hdr}
    key_attrs["EXTNAME"] = extname
    key_attrs["filename"] = Path(path).name
    key_attrs["KIND"] = kind
    if note:
        key_attrs["wcs_note"] = note
    bunit = str(hdr.get("BUNIT", "")).strip()
    units = (
        "W m-2 sr-1 nm-1" if bunit.replace(" ", "") in ("W/m2/sr/nm", "Wm-2sr-1nm-1") else bunit
    )
    rad_attrs = dict(key_attrs)
    rad_attrs.update(units=units, long_name="spectral radiance")
    radiance = xr.DataArray(data, dims=dims, attrs=rad_attrs)
    radiance.encoding.update(encoding)
    ds = xr.Dataset({"radiance": radiance}, coords=coords)
    ds.attrs.update(key_attrs)
    ds.attrs["header"] = hdr.tostring(sep="\n", padding=False)
    return window_node_name(extname), ds


def _chosen_windows(path, by_name: dict, empty: dict, windows) -> dict:
    """The entries of ``by_name`` (node -> (extname, hdu)) that ``windows`` asks for.

    ``windows`` names windows by EXTNAME or node name, or numbers them among the windows with
    data; an unknown window or one without data raises, listing what the file holds.
    """
    wanted = [windows] if isinstance(windows, str | int) else list(windows)
    chosen = {}
    available = [ext for ext, _ in by_name.values()]
    with_data = [node for node in by_name if node not in empty]
    for w in wanted:
        if isinstance(w, int | np.integer):
            if not 0 <= int(w) < len(with_data):
                raise file_error(
                    path,
                    f"has no window number {w}; it has {len(with_data)} windows with "
                    "data: " + ", ".join(repr(by_name[n][0]) for n in with_data),
                )
            node = with_data[int(w)]
        else:
            node = window_node_name(w)
            if node not in by_name:
                raise file_error(
                    path,
                    f"has no window {w!r}; its windows are: "
                    + ", ".join(repr(a) for a in available),
                )
        if node in empty:
            raise file_error(path, f"window {by_name[node][0]!r} has no data ({empty[node]})")
        chosen[node] = by_name[node]
    return chosen


def open_one(path, windows, chunks, dumbbells, mixed_wcs, make_array=None):
    """The window Datasets (by node name) and root attributes of one file.

    Shared by :func:`open_spice` and the xarray backend; ``make_array`` is the hook of
    :func:`_open_window`.
    """
    path = Path(path)
    hdul = open_hdulist(path)
    try:
        if len(hdul) == 0:
            raise file_error(path, "contains no HDU")
        primary = hdul[0].header
        instrume = str(primary.get("INSTRUME", "")).strip()
        if instrume.upper() != "SPICE":
            raise file_error(path, f"is not a SPICE file (INSTRUME={instrume or 'missing'!r})")
        level = str(primary.get("LEVEL", "")).strip()
        if level.upper() != "L2":
            raise file_error(path, f"is not a Level-2 file (LEVEL={level or 'missing'!r})")
        candidates = [hdu for hdu in hdul if is_window(hdu)]
        if not dumbbells:
            candidates = [hdu for hdu in candidates if not is_dumbbell(path, hdu.header)]
        if not any(no_data(hdu.header) is None for hdu in candidates):
            raise file_error(path, "contains no spectral window with data")
        by_name = {}
        for hdu in candidates:
            extname = str(hdu.header.get("EXTNAME", "PRIMARY")).strip()
            node = window_node_name(extname)
            if node in by_name:
                other = by_name[node][0]
                same = (
                    f"two windows named {extname!r}"
                    if other == extname
                    else (
                        f"windows {other!r} and {extname!r}, which both give the node name {node!r}"
                    )
                )
                raise file_error(path, f"has {same}; cannot tell them apart")
            by_name[node] = (extname, hdu)
        candidates_by_node = dict(by_name)
        empty = {
            node: reason
            for node, (_ext, hdu) in by_name.items()
            if (reason := no_data(hdu.header)) is not None
        }
        if windows is not None:
            by_name = _chosen_windows(path, by_name, empty, windows)
        for node, reason in empty.items():
            if node in by_name:
                log.warning(
                    "%s: window %r has no data (%s); it is left out",
                    path,
                    by_name[node][0],
                    reason,
                )
                by_name.pop(node)
        nodes = {}
        cache = {}
        for _extname, hdu in by_name.values():
            kind = kind_of(hdu.header)
            name, ds = _open_window(path, hdul, hdu, kind, chunks, mixed_wcs, cache, make_array)
            nodes[name] = ds
        root_attrs = {k: attr_value(primary[k]) for k in PIPELINE_KEYWORDS if k in primary}
        root_attrs["filename"] = path.name
        root_attrs.pop("EXTNAME", None)
        left_out = [ext for node, (ext, _hdu) in candidates_by_node.items() if node in empty]
        if left_out:
            root_attrs["windows_without_data"] = ", ".join(left_out)
        return nodes, root_attrs
    except VerifyError as exc:  # a card whose value astropy cannot parse, met on the way
        raise file_error(path, f"has a header card that cannot be parsed ({exc})") from exc
    finally:
        hdul.close()


def open_spice(
    path,
    *,
    windows=None,
    chunks="auto",
    dumbbells: bool = False,
    mixed_wcs: str = "center",
) -> xr.DataTree:
    """Open a SPICE Level-2 FITS file lazily, one DataTree node per spectral window.

    Parameters
    ----------
    path : str, path-like, or sequence of them
        One L2 file, or several files of one observation (same SPIOBSID), which are
        concatenated along ``raster`` (rasters, coordinate ``rasterno``) or ``time``
        (sit-and-stare).
    windows : str, int or list of them, optional
        Windows to open, by EXTNAME (or node name) or position among the windows;
        default all. An unknown window raises :class:`SpiceFileError` listing those present.
    chunks : "auto" or dict, optional
        Dask chunk sizes over ``y``/``x`` (``time``/``y`` for sit-and-stare). The wavelength
        dimension is always one chunk. ``"auto"`` aims at about 8 MiB per chunk.
    dumbbells : bool, default False
        Also open dumbbell (context) windows.
    mixed_wcs : {"center", "full", "raise"}, default "center"
        What to do when a window's PC matrix mixes wavelength with position (wide-slit and
        dumbbell windows): ``"center"`` evaluates the 2-D ``hpln``/``hplt`` coordinates at the
        reference wavelength pixel (noted in the ``wcs_note`` attribute), ``"full"`` gives them
        dims ``(y, x, wavelength)``, ``"raise"`` raises :class:`SpiceFileError`.

    Returns
    -------
    xarray.DataTree
        Root attributes hold observation keywords; each child (named from EXTNAME, see
        :func:`window_node_name`) holds a Dataset with ``radiance`` (dims ``(y, x, wavelength)``
        or ``(time, y, wavelength)``, file unit), coordinates ``wavelength`` (Angstrom),
        ``hpln``/``hplt`` (arcsec), ``time``, and ``radcal`` (per wavelength) when the file
        has it. Pipeline keywords are attributes of the Dataset and of ``radiance``; the full
        header is the Dataset attribute ``header``.

    Raises
    ------
    SpiceFileError
        The file cannot be read (permissions), is not FITS, is truncated, is not SPICE or not
        Level 2; a window lacks WCS keywords or has invalid ones (not finite, zero CDELT,
        units that are not angles/lengths, wavelengths outside WAVEMIN/WAVEMAX); an
        instrument keyword that is present is invalid (XPOSURE or RADCAL not positive, a
        calibrated window whose BUNIT is not W/m2/sr/nm); two windows share a name; a
        requested window does not exist or has no data; or several files cannot be stacked
        (different kinds, shapes or wavelengths). The message starts with the file name.
    FileNotFoundError
        The file does not exist.

    Notes
    -----
    A window without data (``NAXIS=0`` or a zero axis length) is left out with a logged
    warning and listed in the root attribute ``windows_without_data``.

    Examples
    --------
    >>> import saffron_xr
    >>> tree = saffron_xr.open_spice(saffron_xr.ne8_window_path())
    >>> list(tree.children)
    ['Ne_VIII_770_Peak_data']
    >>> tree["Ne_VIII_770_Peak_data"].dataset.radiance.sizes
    Frozen({'y': 832, 'x': 3, 'wavelength': 50})
    """
    if mixed_wcs not in ("center", "full", "raise"):
        raise ValueError(f"mixed_wcs must be 'center', 'full' or 'raise', got {mixed_wcs!r}")
    if isinstance(path, str | os.PathLike):
        nodes, root_attrs = open_one(path, windows, chunks, dumbbells, mixed_wcs)
        tree = xr.DataTree(xr.Dataset(attrs=root_attrs))
        for name, ds in nodes.items():
            tree[name] = xr.DataTree(ds)
        return tree
    return _open_many(list(path), windows, chunks, dumbbells, mixed_wcs)


def _check_same_layout(path: Path, ds: xr.Dataset, first: Path, ref: xr.Dataset) -> None:
    """A window of ``path`` can be stacked with the same window of ``first``."""
    ext = ds.attrs.get("EXTNAME")
    if ds.attrs.get("KIND") != ref.attrs.get("KIND"):
        kinds = {"ras": "a raster", "sit": "a sit-and-stare", "exp": "a single exposure"}
        raise file_error(
            path,
            f"window {ext!r} is {kinds.get(ds.attrs.get('KIND'), '?')}, unlike {first.name} "
            f"({kinds.get(ref.attrs.get('KIND'), '?')}); such files cannot be opened together",
        )
    spatial = [d for d in ds.radiance.dims if d != "time" or ds.attrs.get("KIND") != "sit"]
    shape = {d: ds.radiance.sizes[d] for d in spatial}
    ref_shape = {d: ref.radiance.sizes[d] for d in spatial}
    if shape != ref_shape:
        raise file_error(
            path,
            f"window {ext!r} has shape {shape}, unlike {first.name} ({ref_shape}); "
            "such files cannot be opened together",
        )
    wave, ref_wave = ds["wavelength"].values, ref["wavelength"].values
    if not np.array_equal(wave, ref_wave):
        shift = float(np.max(np.abs(wave - ref_wave)))
        raise file_error(
            path,
            f"window {ext!r} has other wavelengths than in {first.name} (up to {shift:.3g} "
            "Angstrom apart); such files cannot be opened together",
        )


def _open_many(paths: Sequence, windows, chunks, dumbbells, mixed_wcs) -> xr.DataTree:
    if not paths:
        raise ValueError("open_spice got an empty list of files")
    opened = [(Path(p), *open_one(p, windows, chunks, dumbbells, mixed_wcs)) for p in paths]
    ids = {attrs.get("SPIOBSID") for _, _, attrs in opened}
    if len(ids) > 1:
        listing = ", ".join(f"{p.name} ({a.get('SPIOBSID')})" for p, _, a in opened)
        raise ValueError(
            f"files of different observations (SPIOBSID) cannot be opened together: {listing}"
        )
    names = set(opened[0][1])
    for p, nodes, _ in opened[1:]:
        if set(nodes) != names:
            raise file_error(
                p,
                f"has windows {sorted(nodes)}, unlike {opened[0][0].name} ({sorted(names)})",
            )
    first_path, first_nodes, _ = opened[0]
    for p, nodes, _ in opened[1:]:
        for name, ds in nodes.items():
            _check_same_layout(p, ds, first_path, first_nodes[name])
    order = sorted(
        opened, key=lambda item: (item[2].get("RASTERNO", 0), str(item[2].get("DATE-OBS", "")))
    )
    root_attrs = dict(order[0][2])
    root_attrs["filename"] = ",".join(p.name for p, _, _ in order)
    tree = xr.DataTree(xr.Dataset(attrs=root_attrs))
    for name in opened[0][1]:
        parts = [nodes[name] for _, nodes, _ in order]
        if "time" in parts[0].radiance.dims:
            combined = xr.concat(parts, dim="time", join="exact", combine_attrs="drop_conflicts")
        else:
            rasterno = [int(ds.attrs.get("RASTERNO", i)) for i, ds in enumerate(parts)]
            combined = xr.concat(
                parts,
                dim="raster",
                coords="different",
                compat="equals",
                join="exact",
                combine_attrs="drop_conflicts",
            ).assign_coords(rasterno=("raster", rasterno))
        combined.attrs["filename"] = ",".join(ds.attrs["filename"] for ds in parts)
        combined["radiance"].attrs["filename"] = combined.attrs["filename"]
        tree[name] = xr.DataTree(combined)
    return tree
