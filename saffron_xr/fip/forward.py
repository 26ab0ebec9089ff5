"""Forward model of line radiances from a DEM, abundances and contribution functions.

``I_i = 1e-3 * Ab_i * f_i * integral G_i(T, n_e) DEM(T) dT``  (W m-2 sr-1), where ``f_i`` is
the FIP bias applied to the element of line ``i``: ``fip_bias`` for elements whose first
ionisation potential is below ``fip_threshold``, 1 otherwise. Used to make rasters with a
known FIP bias for tests and to check a line choice against DEMs outside the LCR reference
set.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from .abundance import DEFAULT_PHOTOSPHERIC
from .contribution import contribution_functions, interp_log_density
from .dem import integrate_dem, read_dem
from .lcr import ERG_CM2_TO_W_M2, as_line_list, line_abundances

__all__ = ["forward_radiances", "FIP_THRESHOLD"]

#: Elements with a first ionisation potential below this (eV) get the FIP bias. 10.5 eV
#: puts S (10.36 eV), the low-FIP proxy of the S/N line ratios, with Mg, Si, Fe, ...
FIP_THRESHOLD = 10.5


def forward_radiances(
    dem,
    lines: Sequence[str],
    *,
    density=1e9,
    fip_bias=1.0,
    abundance=DEFAULT_PHOTOSPHERIC,
    fip_threshold: float = FIP_THRESHOLD,
    contributions: xr.DataArray | None = None,
    xuvtop=None,
) -> xr.DataArray:
    """Line radiances of a plasma with a given DEM, density and FIP bias.

    Parameters
    ----------
    dem : str or xarray.DataArray
        DEM (cm-5 K-1) over ``temperature`` (K), possibly with other dims (e.g. one DEM per
        pixel), or a name for :func:`~saffron_xr.fip.read_dem`. Interpolated onto the
        contribution functions' temperature grid; zero outside its own range.
    lines : sequence of str
        Line ids.
    density : float or xarray.DataArray
        Electron density (cm-3), one value or a map (interpolated linearly in log n).
    fip_bias : float or xarray.DataArray
        Enhancement of low-FIP elements over ``abundance``; a DataArray (e.g. over ``y, x``)
        gives a raster.
    abundance : str or xarray.DataArray
        Base (photospheric) abundance set.
    fip_threshold : float
        First ionisation potential (eV) below which an element is enhanced.
    contributions : xarray.DataArray, optional
        Contribution functions holding the lines; default
        :func:`~saffron_xr.fip.contribution_functions` on the standard grid.
    xuvtop : str or path-like, optional
        CHIANTI folder (contribution functions, DEM, abundances).

    Returns
    -------
    xarray.DataArray
        ``radiance`` (W m-2 sr-1) over ``line`` and the dims of ``dem``, ``density`` and
        ``fip_bias``, with coords ``element`` and ``fip`` on ``line``.

    Examples
    --------
    >>> rad = forward_radiances("quiet_sun", ["mg_9 706.06", "ne_8 770.42"], fip_bias=2.0)
    >>> rad.dims, rad.attrs["units"]
    (('line',), 'W m-2 sr-1')
    """
    lines = as_line_list(lines)
    if contributions is None:
        contributions = contribution_functions(lines, xuvtop=xuvtop)
    g = contributions.sel(line=lines)
    if not isinstance(dem, xr.DataArray):
        dem = read_dem(dem, xuvtop=xuvtop)
    integral = interp_log_density(integrate_dem(g, dem), density)
    ab = line_abundances(lines, abundance, xuvtop=xuvtop)
    enhanced = xr.DataArray(np.asarray(ab["fip"].values) < fip_threshold, dims="line")
    factor = xr.where(enhanced, fip_bias, 1.0)
    radiance = ERG_CM2_TO_W_M2 * ab.drop_vars(["element", "fip"]) * factor * integral
    return (
        radiance.assign_coords(element=ab["element"], fip=ab["fip"])
        .assign_attrs(
            units="W m-2 sr-1",
            long_name="forward-modelled line radiance",
            dem=str(dem.name),
            abundance=ab.attrs["abundance_set"],
            fip_threshold_ev=float(fip_threshold),
        )
        .rename("radiance")
    )
