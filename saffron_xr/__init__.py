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

# --- errors ---
from .errors import SpiceFileError

# --- io ---
from .io.reader import open_spice

# --- sample data ---
from .sample_data import ne8_window_path

# --- accessors (registration happens on import) ---
from . import accessors as _accessors  # noqa: F401  (registers .saffron / .fip)

__all__ = [
    "__version__",
    "SpiceFileError",
    "ne8_window_path",
    "open_spice",
]
