"""SOLARNET "Level P" / SPICE Level-3 style FITS export of fit results, and a reader.

Layout, per window (``E`` is the window's EXTNAME), following Appendix IX of the SOLARNET
metadata recommendations and the SPICE L3 files (the file in
``../shared/data/spice/reference`` is an example):

``E results``
    float64 cube, FITS axes ``(x, y, time, PARAMETER)`` (numpy ``(parameter, time, y, x)``;
    time has length 1 for rasters). Parameters: for every line a ``'Gaussian'`` component
    (amplitude in the data unit; position and sigma stored in Angstrom with ``PTRA = 0.1`` so
    that the function parameters are in nm, the unit of the L2 WAVE axis), then one
    ``'Polynomial'`` background component per wavelength segment (coefficients of
    ``lambda**0 .. lambda**degree`` with lambda in nm, converted from saffron_xr's
    ``(lambda - lambda_ref)**k`` Angstrom basis), then the reduced chi2 as the last plane.
    Header: ``SOLARNET = 1``, ``OBS_HDU = 2``, ``ANA_NCMP``, ``CMPTYPn``, ``CMPNAMn``,
    ``CMP_NPn``, ``CMPDESn``, ``PNAMEna``, ``PUNITna``, ``PDESCna``, ``PINITna``/``PMINna``/
    ``PMAXna`` (from the line model, function units), ``PCONSna``, ``PTRAna``, ``PTRBna``,
    ``WAVEUNIT = -9``, ``RESEXT``,
    ``UNCEXT``, ``DATAEXT`` (the data HDU when written, else the external L2 extension
    ``file.fits;EXTNAME``), ``PARENTXT``, ``XTYPE1 = 'WAVE'``, ``XDIMEN1 = 3``,
    ``CHISQAVG``, and the spatial/time WCS of the L2 window (axes 1, 2 and 4 of the L2 file
    become 1, 2 and 3; the parameter axis is ``CTYPE4 = 'PARAMETER'``), plus observer keywords.
    The first window's results are the primary HDU, as in the reference file.
``E sigma``
    Same shape and header: the 1-sigma errors (NaN for the chi2 plane).
``E data`` (only with ``data=``)
    The L2 radiance cube of the window with its L2 header.
``E <variable>`` and ``E saffron`` (saffron_xr extension, ignored by other tools)
    Every other variable and coordinate with spatial dims (background in its native basis,
    covariances, ``status``, ``n_iter``, ``n_valid``, ``hpln``, ``hplt``, ``time``, derived
    quantities...) as its own image, and a one-row table holding, as JSON, the dims, dtypes
    and attributes of every variable and the small coordinates, so :func:`open_l3_fits` gives
    back exactly the Dataset that was written.

:func:`open_l3_fits` also reads files written by other packages in this convention (no
``E saffron`` table): Gaussian components become ``amplitude``/``centroid``/``width``
(``PTRA``/``PTRB`` applied, nm converted to Angstrom), polynomial components ``background``
(absolute-wavelength basis, Angstrom), the last plane ``chi2``, and the coordinates come from
the header's WCS.
"""

from __future__ import annotations

from pathlib import Path

import xarray as xr
from astropy.io import fits

from ._atomic import check_destination, write_atomically
from ._l3_common import META_FORMAT
from ._l3_reader import read_generic, read_saffron
from ._l3_writer import shorten_comments, window_hdus
from .netcdf import as_results_tree, loads_tagged
from .reader import window_node_name

__all__ = ["to_l3_fits", "open_l3_fits"]


def to_l3_fits(results, path, *, data=None, overwrite: bool = True) -> Path:
    """Write fit results in the SOLARNET / SPICE Level-3 FITS convention, atomically.

    This function computes (it loads each window's results to write them).

    Parameters
    ----------
    results : xarray.Dataset or xarray.DataTree
        Parameter Dataset of one window, or a DataTree of per-window results (every node
        with an ``amplitude`` variable is a window).
    path : str or path-like
        Output file (its folder must exist).
    data : xarray.Dataset, xarray.DataArray or xarray.DataTree, optional
        The fitted L2 window(s), as from :func:`saffron_xr.open_spice`: written as the
        ``DATAEXT`` data HDU of each window (matched by node name for a DataTree), and used
        for the background's reference wavelength and the L2 header (WCS, observer keywords)
        when the results do not carry them. Without it, ``DATAEXT`` links to the external L2
        extension (``file.fits;EXTNAME``).
    overwrite : bool, default True
        Replace an existing file (atomically); if False, raise :class:`FileExistsError`.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    path = check_destination(path, overwrite)
    tree = as_results_tree(results)
    windows = [n for n in tree.subtree if "amplitude" in n.dataset.variables]
    if not windows:
        raise ValueError("to_l3_fits: no window with an 'amplitude' variable in the results")
    hdus = []
    for i, node in enumerate(windows):
        if isinstance(data, xr.DataTree):
            d = data[node.name].to_dataset() if node.name in data.children else None
        elif data is not None:
            if len(windows) > 1:
                raise ValueError(
                    "to_l3_fits: data= for several windows must be a DataTree with the same "
                    "node names"
                )
            d = data
        else:
            d = None
        hdus += window_hdus(node.to_dataset(), node.name or "window", i == 0, d, path.name)
    names = [h.name for h in hdus]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"to_l3_fits: two windows give the same extension names {dupes}")
    for hdu in hdus:
        shorten_comments(hdu.header)
    return write_atomically(
        path,
        lambda part: fits.HDUList(hdus).writeto(part, output_verify="exception", checksum=True),
    )


def open_l3_fits(path) -> xr.DataTree:
    """Read a SOLARNET / SPICE Level-3 style results file into a DataTree.

    Files written by :func:`to_l3_fits` come back identical to what was written. Files
    written by other tools in the convention are read generically (see the module docstring).
    This function reads the whole file into memory (results files are small: a few planes
    per line).

    Parameters
    ----------
    path : str or path-like
        The results file.

    Returns
    -------
    xarray.DataTree
        One child per results extension, named from its original EXTNAME.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        hdul = fits.open(path, memmap=False)
    except OSError as exc:
        raise ValueError(f"{path}: not a FITS file ({exc})") from exc
    with hdul:
        nodes = {}
        for hdu in hdul:
            h = hdu.header
            if "ANA_NCMP" not in h or hdu.data is None:
                continue
            if str(h.get("RESEXT", h.get("EXTNAME", ""))).strip().lower() != (
                str(h.get("EXTNAME", "")).strip().lower()
            ):
                continue
            meta_name = h.get("SXMETA")
            if meta_name and meta_name in hdul:
                text = str(hdul[meta_name].data["json"][0])
                meta = loads_tagged(text)
                if meta.get("format") != META_FORMAT:
                    raise ValueError(f"{path}: unknown saffron_xr metadata format")
                name, ds = meta["window"], read_saffron(hdul, hdu, meta)
            else:
                try:
                    ds = read_generic(hdul, hdu)
                except ValueError as exc:
                    raise ValueError(f"{path}: {exc}") from exc
                name = window_node_name(ds.attrs["EXTNAME"])
            nodes[f"/{name}"] = ds
        if not nodes:
            raise ValueError(
                f"{path}: no results extension (ANA_NCMP keyword with EXTNAME == RESEXT) found"
            )
    return xr.DataTree.from_dict(nodes)
