"""Layouts shared by the fit kernels and fit/core.py: the spec header and the packed output.

Named here once (see the `_kernels` module docstring for what each layout holds); numba reads
`packed_offsets` inside the kernels, Python reads `packed_layout` and builds specs with `pack_spec`.
"""

from __future__ import annotations

import math

import numba
import numpy as np

# ----------------------------------------------------------------------------- layouts
SPEC_N_LINES = 0
SPEC_DEGREE = 1
SPEC_N_SEGMENTS = 2
SPEC_N_FREE = 3
SPEC_MAX_ITER = 4
SPEC_FTOL = 5
SPEC_XTOL = 6
SPEC_MIN_VALID = 7
SPEC_SCALE_ERRORS = 8
SPEC_RESCALE = 9
SPEC_THRESHOLD_AMPLITUDE = 10
SPEC_THRESHOLD_CENTROID = 11
SPEC_THRESHOLD_WIDTH = 12
SPEC_MOMENTS = 13
SPEC_REWEIGHT = 14
SPEC_FULL_COV = 15
SPEC_DETECTION = 16
SPEC_HEADER = 17

#: The arrays after the spec header, in order, with their length as a function of
#: (n_segments, n_full, n_free).
# Fits with weights from the model: passes after the first fit.
_REWEIGHT_PASSES = 2

_SPEC_ARRAYS = (
    ("segment_min", "seg"),
    ("segment_max", "seg"),
    ("segment_reference", "seg"),
    ("root", "full"),
    ("scale", "full"),
    ("offset", "full"),
    ("free_root", "free"),
    ("free_lower", "free"),
    ("free_upper", "free"),
    ("free_kind", "free"),
    ("free_soft_min", "free"),
    ("free_soft_inv", "free"),
)

#: The blocks of the packed per-pixel output, in order, with their length as a function of
#: (n_lines, n_full, n_free, full covariance?, adaptive?).
_PACKED_BLOCKS = (
    ("params", "full"),
    ("errors", "full"),
    ("cov_amplitude_centroid", "lines"),
    ("cov_amplitude_width", "lines"),
    ("cov_centroid_width", "lines"),
    ("significance", "lines"),
    ("at_bound", "lines"),
    ("detected", "lines"),
    ("chi2", "one"),
    ("n_iter", "one"),
    ("n_valid", "one"),
    ("status", "one"),
    ("covariance", "free2"),
    ("level", "adaptive"),
)


@numba.njit(cache=False)
def packed_offsets(n_lines, n_full):
    """Start of each block of the packed output, in `_PACKED_BLOCKS` order.

    The one definition of the layout: `packed_layout` (Python) and the kernels (numba)
    both call this. Returns ``(params, errors, covariance terms, significance, at_bound,
    detected, chi2, full covariance)``; ``n_iter``, ``n_valid`` and ``status`` follow
    ``chi2``, and ``level`` follows the full covariance (adaptive kernel).
    """
    o_err = n_full
    o_cov = 2 * n_full
    o_sig = o_cov + 3 * n_lines
    o_bound = o_sig + n_lines
    o_det = o_bound + n_lines
    o_chi2 = o_det + n_lines
    return 0, o_err, o_cov, o_sig, o_bound, o_det, o_chi2, o_chi2 + 4


def _block_sizes(n_lines, n_full, n_free, full_cov, adaptive):
    return {
        "full": n_full,
        "lines": n_lines,
        "one": 1,
        "free2": n_free * n_free if full_cov else 0,
        "adaptive": 1 if adaptive else 0,
    }


def packed_layout(
    n_lines: int, n_full: int, n_free: int = 0, *, full_cov: bool = False, adaptive: bool = False
) -> dict[str, slice]:
    """Where each per-pixel result sits in the packed output vector.

    Parameters
    ----------
    n_lines, n_full, n_free : int
        Model sizes.
    full_cov : bool
        Whether the full covariance block of the free parameters is present.
    adaptive : bool
        Whether the ``level`` entry (adaptive kernel) is present.

    Returns
    -------
    dict
        Name -> slice (empty slices for absent blocks); ``"size"`` -> total length (an int).
    """
    sizes = _block_sizes(n_lines, n_full, n_free, full_cov, adaptive)
    o = 0
    layout = {}
    for name, kind in _PACKED_BLOCKS:
        n = sizes[kind]
        layout[name] = slice(o, o + n)
        o += n
    layout["size"] = o
    # the Python function under the njit one: the same numbers without compiling it in
    # every fresh process (it is cheap; the kernels inline their own compiled copy)
    starts = packed_offsets.py_func(n_lines, n_full)
    names = ("params", "errors", "cov_amplitude_centroid", "significance", "at_bound",
             "detected", "chi2", "covariance")  # fmt: skip
    for name, start in zip(names, starts, strict=True):
        if layout[name].start != start:  # pragma: no cover - a layout edit gone wrong
            raise AssertionError(f"packed layout: {name} at {layout[name].start}, kernel {start}")
    return layout


def pack_spec(
    compiled,
    *,
    max_iter: int,
    ftol: float,
    xtol: float,
    min_valid: int,
    scale_errors: bool,
    rescale_initial: bool,
    moments: bool = True,
    reweight: bool = False,
    full_cov: bool = False,
    detection: float = 3.0,
    thresholds=(math.inf, math.inf, math.inf),
) -> np.ndarray:
    """Pack a ``CompiledModel`` and the fit options into the kernel's ``spec`` array.

    Parameters
    ----------
    compiled : saffron_xr.fit.model.CompiledModel
    max_iter, ftol, xtol, min_valid, scale_errors, rescale_initial
        See ``saffron_xr.fit_lines``.
    moments : bool
        Per-pixel centroid and width starting values from moments.
    reweight : bool
        Recompute the weights from the fitted model and refit (needs the noise inputs).
    full_cov : bool
        Write the full covariance of the free parameters.
    detection : float
        Significance (sigma) from which a line counts as detected.
    thresholds : (float, float, float)
        Relative-error thresholds for amplitude, centroid and width (adaptive kernel only).

    Returns
    -------
    numpy.ndarray
        float64, 1-D.
    """
    header = np.zeros(SPEC_HEADER)
    header[SPEC_N_LINES] = compiled.n_lines
    header[SPEC_DEGREE] = compiled.degree
    header[SPEC_N_SEGMENTS] = compiled.n_segments
    header[SPEC_N_FREE] = compiled.n_free
    header[SPEC_MAX_ITER] = max_iter
    header[SPEC_FTOL] = ftol
    header[SPEC_XTOL] = xtol
    header[SPEC_MIN_VALID] = min_valid
    header[SPEC_SCALE_ERRORS] = float(bool(scale_errors))
    header[SPEC_RESCALE] = float(bool(rescale_initial))
    header[SPEC_THRESHOLD_AMPLITUDE : SPEC_THRESHOLD_WIDTH + 1] = thresholds
    header[SPEC_MOMENTS] = float(bool(moments))
    header[SPEC_REWEIGHT] = _REWEIGHT_PASSES if reweight else 0
    header[SPEC_FULL_COV] = float(bool(full_cov))
    header[SPEC_DETECTION] = detection
    free_kind = np.asarray(compiled.full_kind)[np.asarray(compiled.free_root, dtype=np.int64)]
    arrays = {
        "segment_min": compiled.segment_min,
        "segment_max": compiled.segment_max,
        "segment_reference": compiled.segment_reference,
        "root": compiled.root.astype(np.float64),
        "scale": compiled.scale,
        "offset": compiled.offset,
        "free_root": compiled.free_root.astype(np.float64),
        "free_lower": compiled.free_lower,
        "free_upper": compiled.free_upper,
        "free_kind": free_kind.astype(np.float64),
        "free_soft_min": compiled.free_soft_min,
        "free_soft_inv": compiled.free_soft_inv,
    }
    return np.concatenate([header] + [arrays[name] for name, _ in _SPEC_ARRAYS]).astype(np.float64)
