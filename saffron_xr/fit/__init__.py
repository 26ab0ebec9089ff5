"""Line fitting: `LineModel`, `fit_lines`, `model_spectrum` and the `FitStatus` codes.

The numba kernels live in ``_kernels.py`` and are compiled on the first fit.
"""

from .core import fit_lines, model_spectrum
from .model import LineModel
from .status import FitStatus

__all__ = ["LineModel", "fit_lines", "model_spectrum", "FitStatus"]
