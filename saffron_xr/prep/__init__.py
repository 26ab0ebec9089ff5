"""Data preparation: noise model, despiking, denoising and NaN-aware spatial binning.

Every function takes and returns xarray objects and is lazy on dask-backed input.
"""

from .binning import bin_extents, bin_levels, bin_spatial, rebin
from .calibrate import calibrate_error, calibrate_noise_terms, error_from_terms
from .denoise import denoise
from .despike import despike
from .noise import SPICE_NOISE_CITATION, SPICE_NOISE_CONSTANTS, spice_error, spice_noise_terms

__all__ = [
    "SPICE_NOISE_CITATION",
    "SPICE_NOISE_CONSTANTS",
    "bin_extents",
    "calibrate_error",
    "calibrate_noise_terms",
    "bin_levels",
    "bin_spatial",
    "denoise",
    "despike",
    "error_from_terms",
    "rebin",
    "spice_error",
    "spice_noise_terms",
]
