"""saffron_xr: xarray-native, dask-distributed line fitting for Solar Orbiter/SPICE.

Importing the package registers the ``.saffron`` accessor on DataArray, Dataset and
DataTree (and ``.fip`` on Dataset). It has no other side effect.

Each section below belongs to one sub-package; add new public names in their section.
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

try:
    __version__ = _version("saffron_xr")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

import logging as _logging

# the library logs; applications decide where it goes (no "last resort" output to stderr)
_logging.getLogger(__name__).addHandler(_logging.NullHandler())

# --- errors ---
from .errors import SpiceFileError

# --- prep ---
from .prep import (
    SPICE_NOISE_CITATION,
    SPICE_NOISE_CONSTANTS,
    bin_levels,
    bin_spatial,
    calibrate_error,
    calibrate_noise_terms,
    denoise,
    despike,
    error_from_terms,
    rebin,
    spice_error,
    spice_noise_terms,
)

# --- fit ---
from .fit import FitStatus, LineModel, fit_lines, model_spectrum

# --- io ---
from .io.reader import open_spice
from .io.select import select_files
from .io.netcdf import open_results, output_name, to_netcdf
from .io.l3fits import open_l3_fits, to_l3_fits
from .io.reconstruct import reconstruct
from .io.sunpy_map import to_sunpy_map

# --- derive ---
from .derive import (
    correct_doppler_gradient,
    derive_all,
    doppler_velocity,
    fwhm,
    line_widths,
    nonthermal_velocity,
    radiance,
)

# --- catalog ---
from .catalog import CatalogError, LineCatalog, fuse_windows, guess_model

# --- fip ---
from . import fip

# --- sample data ---
from .sample_data import ne8_window_path

# --- accessors (registration happens on import) ---
from . import accessors as _accessors  # noqa: F401  (registers .saffron / .fip)

__all__ = [
    "__version__",
    # prep
    "spice_error",
    "spice_noise_terms",
    "calibrate_error",
    "calibrate_noise_terms",
    "error_from_terms",
    "SPICE_NOISE_CONSTANTS",
    "SPICE_NOISE_CITATION",
    "despike",
    "denoise",
    "bin_spatial",
    "rebin",
    "bin_levels",
    # fit
    "LineModel",
    "fit_lines",
    "model_spectrum",
    "FitStatus",
    # catalog
    "CatalogError",
    "LineCatalog",
    "fuse_windows",
    "guess_model",
    "SpiceFileError",
    "ne8_window_path",
    "open_spice",
    "select_files",
    # io (results)
    "to_netcdf",
    "open_results",
    "output_name",
    "to_l3_fits",
    "open_l3_fits",
    "reconstruct",
    "to_sunpy_map",
    # derive
    "radiance",
    "doppler_velocity",
    "fwhm",
    "line_widths",
    "nonthermal_velocity",
    "correct_doppler_gradient",
    "derive_all",
    # fip
    "fip",
]
