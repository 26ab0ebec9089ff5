"""saffron_xr: xarray-native, dask-distributed line fitting for Solar Orbiter/SPICE.

Importing the package registers the ``.saffron`` accessor on DataArray, Dataset and
DataTree (and ``.fip`` on Dataset). It has no other side effect.

Each section below belongs to one sub-package; add new public names in their section.
"""

from ._meta import __version__

import logging as _logging

# the library logs; applications decide where it goes (no "last resort" output to stderr)
_logging.getLogger(__name__).addHandler(_logging.NullHandler())

# Public names are imported on first use (PEP 562), so that ``import saffron_xr`` -- and the
# ``saffron-xr`` command's --help -- does not load numba, dask and scipy. Each section maps
# names to the sub-module that defines them; add new public names in their section.
_LAZY: dict[str, tuple[str, str | None]] = {}


def _lazy(module: str, *names: str) -> None:
    for name in names:
        _LAZY[name] = (module, name)


# --- errors ---
_lazy(".errors", "SpiceFileError")

# --- prep ---
_lazy(
    ".prep",
    "SPICE_NOISE_CITATION",
    "SPICE_NOISE_CONSTANTS",
    "bin_levels",
    "bin_spatial",
    "calibrate_error",
    "calibrate_noise_terms",
    "denoise",
    "despike",
    "error_from_terms",
    "rebin",
    "spice_error",
    "spice_noise_terms",
)

# --- fit ---
_lazy(".fit", "FitStatus", "LineModel", "fit_lines", "model_spectrum")

# --- io ---
_lazy(".io.reader", "open_spice")
_lazy(".io.select", "select_files")
_lazy(".io.netcdf", "open_results", "output_name", "to_netcdf")
_lazy(".io.l3fits", "open_l3_fits", "to_l3_fits")
_lazy(".io.reconstruct", "reconstruct")
_lazy(".io.sunpy_map", "to_sunpy_map")
_lazy(".io.campaign", "open_campaign")

# --- derive ---
_lazy(
    ".derive",
    "correct_doppler_gradient",
    "derive_all",
    "doppler_velocity",
    "fwhm",
    "line_widths",
    "nonthermal_velocity",
    "radiance",
)

# --- catalog ---
_lazy(".catalog", "CatalogError", "GuessOptions", "LineCatalog", "fuse_windows", "guess_model")

# --- fip ---
_LAZY["fip"] = (".fip", None)

# --- sample data ---
_lazy(".sample_data", "ne8_window_path")

# --- accessors (registration happens on import; needs only xarray) ---
from . import accessors as _accessors  # noqa: E402, F401  (registers .saffron / .fip)


def __getattr__(name: str):
    import importlib
    import importlib.util

    if name not in _LAZY:
        # sub-packages and modules (saffron_xr.derive, saffron_xr.io, ...), as an eager
        # import of the package used to provide them
        if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}"):
            value = importlib.import_module(f"{__name__}.{name}")
            globals()[name] = value
            return value
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = importlib.import_module(module, __name__)
    if attr is not None:
        value = getattr(value, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
    "GuessOptions",
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
    "open_campaign",
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
