"""Constants and small helpers shared by the Level-3 FITS writer, reader and WCS modules."""

from __future__ import annotations

import string

import numpy as np
import xarray as xr

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
