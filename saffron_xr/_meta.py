"""Facts about the installed package, at the bottom of the layers: every module may import this.

Writers record :data:`__version__` in their provenance; they import it from here rather than
from the package root, so no module imports back up the layers.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _distribution_version

__all__ = ["__version__"]

try:
    __version__ = _distribution_version("saffron_xr")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"
