"""FIP-bias (composition) maps: contribution functions, reference DEMs, LCR method.

* :func:`contribution_functions` -- G(T, n_e) of lines from CHIANTI via ChiantiPy (cached), or
  from the table shipped for the default SPICE lines (:func:`load_contribution_table`).
* :func:`read_dem`, :data:`REFERENCE_DEMS` -- CHIANTI DEMs; :func:`read_abundance` -- CHIANTI
  abundance sets.
* :func:`lcr_coefficients`, :func:`two_line_coefficients` -- coefficients of the Linear
  Combination Ratio method (Zambrana Prado & Buchlin 2019, A&A 632, A20) and of line ratios.
* :func:`lcr`, :func:`two_line_ratio` -- FIP-bias maps with errors from a fitted-parameter
  Dataset (also ``params.fip.lcr(...)``); lazy over the pixels.
* :func:`forward_radiances` -- line radiances for a DEM and a known FIP bias.

CHIANTI is found through ``xuvtop=`` or the ``XUVTOP`` environment variable; ChiantiPy then
runs in a child process, so the variable may be set or changed at any time. Without it the
shipped table serves the default lines.
"""

from .abundance import (
    DEFAULT_CORONAL,
    DEFAULT_PHOTOSPHERIC,
    FIRST_IONISATION_POTENTIAL,
    read_abundance,
)
from .contribution import (
    ChiantiUnavailableError,
    cache_dir,
    contribution_functions,
    interp_log_density,
    load_contribution_table,
)
from .dem import REFERENCE_DEMS, dem_on_grid, integrate_dem, read_dem
from .forward import FIP_THRESHOLD, forward_radiances
from .lcr import DEFAULT_REGULARIZATION, lcr_coefficients, line_abundances, two_line_coefficients
from .maps import lcr, line_radiance, two_line_ratio

__all__ = [
    "ChiantiUnavailableError",
    "DEFAULT_CORONAL",
    "DEFAULT_PHOTOSPHERIC",
    "DEFAULT_REGULARIZATION",
    "FIP_THRESHOLD",
    "FIRST_IONISATION_POTENTIAL",
    "REFERENCE_DEMS",
    "cache_dir",
    "contribution_functions",
    "dem_on_grid",
    "forward_radiances",
    "integrate_dem",
    "interp_log_density",
    "lcr",
    "lcr_coefficients",
    "line_abundances",
    "line_radiance",
    "load_contribution_table",
    "read_abundance",
    "read_dem",
    "two_line_coefficients",
    "two_line_ratio",
]
