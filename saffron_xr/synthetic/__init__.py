"""Synthetic SPICE Level-2 files and spectra with known truth (`make_spice_l2`, `make_spectra`).

Used by the demo, the notebooks, the tests and the benchmarks: SPICE-like windows (sampling,
NaN-padded edges, header keywords, noise drawn from the SPICE noise model) whose true line
parameters are returned alongside the file. ``saffron_xr.testing`` re-exports these names.
"""

from ._cube import make_spectra
from ._l2file import make_spice_l2
from ._windows import composition_windows

__all__ = ["make_spice_l2", "make_spectra", "composition_windows"]
