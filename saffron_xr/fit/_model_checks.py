"""Checks of LineModel arguments (segments, bounds, initial values): ValueError or the value.

Plain functions, shared by the model's editing methods and by ``LineModel.from_dict``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["is_scalar", "check_segments", "check_bound", "check_initial"]


def is_scalar(value) -> bool:
    """A plain number (not an array, not an xarray object)."""
    return np.ndim(value) == 0 and not hasattr(value, "dims")


def check_segments(segments):
    """Validated segments as a list of (lo, hi) floats, or None."""
    if segments is None:
        return None
    out = []
    for seg in segments:
        try:
            lo, hi = (float(v) for v in seg)
        except (TypeError, ValueError):
            raise ValueError(
                f"LineModel: each segment must be a (wmin, wmax) pair in Angstrom, got {seg!r}"
            ) from None
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"LineModel: segment {seg!r} needs finite wmin < wmax")
        out.append((lo, hi))
    if not out:
        raise ValueError("LineModel: `segments` is empty; use None for one background")
    ordered = sorted(out)
    for (a0, a1), (b0, _) in zip(ordered[:-1], ordered[1:], strict=True):
        if b0 <= a1:
            raise ValueError(f"LineModel: segments {(a0, a1)} and {(b0, _)} overlap")
    return out


def check_bound(name, kind, bound):
    """A (lo, hi) bound of parameter `kind` of line `name` as floats (None is infinite)."""
    try:
        lo, hi = bound
    except (TypeError, ValueError):
        raise ValueError(
            f"LineModel: bounds of {name!r} {kind} must be a (lo, hi) pair, got {bound!r}"
        ) from None
    lo = -math.inf if lo is None else float(lo)
    hi = math.inf if hi is None else float(hi)
    if math.isnan(lo) or math.isnan(hi) or not lo < hi:
        raise ValueError(
            f"LineModel: bounds of {name!r} {kind} must satisfy lo < hi, got ({lo}, {hi})"
        )
    if kind == "width" and not lo > 0:
        raise ValueError(
            f"LineModel: the lower width bound of {name!r} must be > 0 Angstrom "
            f"(got {lo}); a zero width makes the Gaussian undefined"
        )
    return lo, hi


def check_initial(name, kind, value, lo, hi):
    """An initial value: a finite float inside (lo, hi), a DataArray, or None."""
    if value is None:
        return None
    if is_scalar(value):
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"LineModel: initial {kind} of {name!r} is not finite ({value})")
        if not lo <= value <= hi:
            raise ValueError(
                f"LineModel: initial {kind} of {name!r} ({value}) is outside its bounds "
                f"({lo}, {hi})"
            )
        return value
    if not hasattr(value, "dims"):
        raise ValueError(
            f"LineModel: initial {kind} of {name!r} must be a number or an "
            f"xarray.DataArray, got {type(value).__name__}"
        )
    return value
