"""SPICE line catalog, matching lines to a window and automatic initial models.

* :class:`LineCatalog` -- the editable line list (default: ``spice_lines.json``, from CHIANTI;
  format in ``SCHEMA.md``).
* :func:`guess_model` -- an initial :class:`~saffron_xr.LineModel` for one window, from its
  mean spectrum; :func:`guess_models` for every window of a DataTree; their settings are
  the fields of :class:`GuessOptions`.
* :func:`fuse_windows` -- join windows along wavelength (separate backgrounds).
"""

from .catalog import CatalogError, Line, LineCatalog, Window
from .fuse import fuse_windows
from .guess import GuessOptions, GuessReport, LineGuess, guess_model, guess_models, mean_spectrum

__all__ = [
    "CatalogError",
    "GuessOptions",
    "GuessReport",
    "Line",
    "LineCatalog",
    "LineGuess",
    "Window",
    "fuse_windows",
    "guess_model",
    "guess_models",
    "mean_spectrum",
]
