"""Constants and small helpers shared by the Level-3 FITS writer, reader and WCS modules."""

from __future__ import annotations

import logging
import string
import warnings

import numpy as np
import xarray as xr
from astropy.io import fits
from astropy.io.fits.verify import VerifyError

log = logging.getLogger(__name__)

#: Spatial dims of results, in the order of the FITS cube's numpy axes.
SPATIAL = ("time", "y", "x")
#: The Gaussian parameters, in the order of their planes.
GAUSS = ("amplitude", "centroid", "width")
LETTERS = string.ascii_uppercase
ANGSTROM_TO_NM = 0.1
META_FORMAT = "saffron_xr.L3"


def cube(da: xr.DataArray, sizes) -> np.ndarray:
    """(time, y, x) float64 array of a DataArray whose dims are spatial only."""
    present = [d for d in SPATIAL if d in da.dims]
    arr = np.asarray(da.transpose(*present).values, dtype=np.float64)
    return arr.reshape(sizes)


def header_from_text(text) -> fits.Header | None:
    if not text or not isinstance(text, str):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fits.Header.fromstring(text, sep="\n")
    except (ValueError, VerifyError) as exc:
        log.warning(
            "a 'header' attribute cannot be parsed as FITS cards (%s: %s); its keywords "
            "(WCS, observer) are not used",
            type(exc).__name__,
            exc,
        )
        return None
