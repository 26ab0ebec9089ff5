"""Data preparation: noise model, despiking, denoising and NaN-aware spatial binning.

Every function takes and returns xarray objects and is lazy on dask-backed input.
"""

from .binning import bin_extents, bin_levels, bin_spatial, rebin
from .denoise import denoise
from .despike import despike
from .noise import SPICE_NOISE_CITATION, SPICE_NOISE_CONSTANTS, spice_error

__all__ = [
    "SPICE_NOISE_CITATION",
    "SPICE_NOISE_CONSTANTS",
    "bin_extents",
    "bin_levels",
    "bin_spatial",
    "denoise",
    "despike",
    "rebin",
    "spice_error",
]
