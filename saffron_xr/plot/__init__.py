"""Looking at SPICE data and fit results: static quicklooks and an interactive explorer.

* :func:`quicklook` -- matplotlib overview of parameter maps (or raw windows), optionally
  written to a PNG.
* :func:`explore`, :func:`explore_window`, :func:`explore_results` -- holoviews/bokeh
  explorers (window image with a wavelength slider, spectrum and fit at a tapped pixel;
  parameter maps with a line selector).

matplotlib, holoviews and bokeh are imported inside the functions, never at import.
"""

from ._common import line_label
from .explorer import explore, explore_results, explore_window
from .quicklook import quicklook

__all__ = ["quicklook", "line_label", "explore", "explore_window", "explore_results"]
