"""CompiledModel: a LineModel as the arrays the kernel and the reference read.

The tie map ``full = T @ free + c`` (see :mod:`saffron_xr.fit.model`) as index, scale and
offset arrays, the bounds of the free parameters (the own bounds of each root intersected
with those of every parameter tied to it, mapped through the tie), the background segments
and the initial values. Built by :meth:`LineModel.compile <saffron_xr.fit.model.LineModel.compile>`
through :func:`compile_model`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CompiledModel", "compile_model"]

#: The parameters of one Gaussian line, in the order of the full parameter vector.
PARAM_KINDS = ("amplitude", "centroid", "width")


@dataclass
class CompiledModel:
    """The arrays the kernel and the reference read, for one wavelength grid.

    Attributes
    ----------
    n_lines, degree, n_segments, n_full, n_free : int
        Sizes.
    full_names : list of str
        ``"<line>/<kind>"`` or ``"background/<segment>/<degree>"`` for every full parameter.
    full_kind : numpy.ndarray of int
        0 amplitude, 1 centroid, 2 width, 3 background, per full parameter.
    root : numpy.ndarray of int
        Index of the free parameter each full parameter follows, -1 if fixed.
    scale, offset : numpy.ndarray
        ``full[j] = scale[j] * free[root[j]] + offset[j]`` (``offset[j]`` alone if fixed).
    free_root : numpy.ndarray of int
        For each free parameter, the full parameter it *is* (scale 1, offset 0).
    free_lower, free_upper : numpy.ndarray
        Bounds of the free parameters (the own bounds of the root intersected with the
        bounds of every full parameter tied to it, mapped through the tie).
    free_soft_min, free_soft_inv : numpy.ndarray
        Soft lower bounds of the free parameters: below ``free_soft_min`` the fit pays
        ``((free_soft_min - q) * free_soft_inv)**2`` of chi-square (a one-sided Gaussian
        prior); ``free_soft_inv`` 0 (and ``free_soft_min`` -inf) where there is none. From
        the lines' soft width minima (`LineModel.set_soft_min_width`), mapped through the
        width ties (the tightest one wins when several lines share a width).
    transform : numpy.ndarray
        ``T`` (n_full x n_free).
    constant : numpy.ndarray
        ``c`` (n_full).
    segment_min, segment_max, segment_reference : numpy.ndarray
        Wavelength range of each segment and the wavelength the background polynomial is
        centred on (Angstrom).
    initial : list
        Initial value of every full parameter: float, DataArray over the fitted pixels, or
        None (per-pixel value not stored, see `LineModel.from_dict`).
    """

    n_lines: int
    degree: int
    n_segments: int
    full_names: list
    full_kind: np.ndarray
    root: np.ndarray
    scale: np.ndarray
    offset: np.ndarray
    free_root: np.ndarray
    free_lower: np.ndarray
    free_upper: np.ndarray
    free_soft_min: np.ndarray
    free_soft_inv: np.ndarray
    segment_min: np.ndarray
    segment_max: np.ndarray
    segment_reference: np.ndarray
    initial: list

    @property
    def n_full(self) -> int:
        return len(self.full_names)

    @property
    def n_free(self) -> int:
        return len(self.free_root)

    @property
    def transform(self) -> np.ndarray:
        t = np.zeros((self.n_full, self.n_free))
        free = self.root >= 0
        t[np.flatnonzero(free), self.root[free]] = self.scale[free]
        return t

    @property
    def constant(self) -> np.ndarray:
        return self.offset.copy()

    def full_from_free(self, free) -> np.ndarray:
        """Full parameter vector from a free one (``T @ free + c``)."""
        return self.transform @ np.asarray(free, dtype=float) + self.offset

    def free_from_full(self, full) -> np.ndarray:
        """Free parameter vector read from the root entries of a full one."""
        return np.asarray(full, dtype=float)[self.free_root]


def compile_model(lines, degree, segments, resolve, wavelength=None) -> CompiledModel:
    """Build the `CompiledModel` of a model given as plain data.

    Parameters
    ----------
    lines : list of (str, dict, dict) or (str, dict, dict, tuple or None)
        Per line, in model order: name, initial value per kind (float, DataArray or None),
        ``(lo, hi)`` bounds per kind and, optionally, the soft width minimum
        ``(value, tolerance)`` (None for none).
    degree : int
        Background polynomial degree.
    segments : list of (float, float) or None
        Background segments (Angstrom); None for one background.
    resolve : callable
        ``resolve(name, kind) -> (root, scale, offset)``: the ``(line, kind)`` key of the free
        parameter it follows (None if fixed) and the linear map from it.
    wavelength : array-like, optional
        The fitted grid; required when `segments` is None.

    Returns
    -------
    CompiledModel
    """
    if segments is None:
        if wavelength is None:
            raise ValueError("LineModel.compile: wavelength is required without segments")
        w = np.asarray(wavelength, dtype=float)
        w = w[np.isfinite(w)]
        if w.size == 0:
            raise ValueError("LineModel.compile: the wavelength grid has no finite value")
        seg_min = np.array([-np.inf])
        seg_max = np.array([np.inf])
        seg_ref = np.array([0.5 * (w.min() + w.max())])
    else:
        seg_min = np.array([s[0] for s in segments], dtype=float)
        seg_max = np.array([s[1] for s in segments], dtype=float)
        seg_ref = 0.5 * (seg_min + seg_max)
    lines = [tuple(ln) + (None,) * (4 - len(ln)) for ln in lines]
    names = [ln[0] for ln in lines]
    initial_of = {ln[0]: ln[1] for ln in lines}
    bounds_of = {ln[0]: ln[2] for ln in lines}
    soft_of = {ln[0]: ln[3] for ln in lines}
    n_segments = 1 if segments is None else len(segments)
    index = {}
    full_names, full_kind, initial = [], [], []
    for name in names:
        for k, kind in enumerate(PARAM_KINDS):
            index[(name, kind)] = len(full_names)
            full_names.append(f"{name}/{kind}")
            full_kind.append(k)
            initial.append(initial_of[name][kind])
    for s in range(n_segments):
        for k in range(degree + 1):
            full_names.append(f"background/{s}/{k}")
            full_kind.append(3)
            initial.append(0.0)
    n_full = len(full_names)
    root_full = np.empty(n_full, dtype=np.int64)  # root as a *full* index, -1 fixed
    scale = np.ones(n_full)
    offset = np.zeros(n_full)
    for (name, kind), j in index.items():
        r, s, o = resolve(name, kind)
        root_full[j] = -1 if r is None else index[r]
        scale[j], offset[j] = s, o
    for j in range(3 * len(names), n_full):
        root_full[j] = j
    free_root = np.flatnonzero(root_full == np.arange(n_full))
    free_of_full = {int(j): f for f, j in enumerate(free_root)}
    root = np.array([-1 if r < 0 else free_of_full[int(r)] for r in root_full], np.int64)
    lower = np.full(n_full, -np.inf)
    upper = np.full(n_full, np.inf)
    for (name, kind), j in index.items():
        lower[j], upper[j] = bounds_of[name][kind]
    free_lower = np.full(free_root.size, -np.inf)
    free_upper = np.full(free_root.size, np.inf)
    for j in range(n_full):
        f = root[j]
        if f < 0:
            continue
        a = (lower[j] - offset[j]) / scale[j]
        b = (upper[j] - offset[j]) / scale[j]
        lo, hi = (a, b) if scale[j] > 0 else (b, a)
        free_lower[f] = max(free_lower[f], lo)
        free_upper[f] = min(free_upper[f], hi)
    soft_min = np.full(free_root.size, -np.inf)
    soft_inv = np.zeros(free_root.size)
    for name, soft in soft_of.items():
        j = index[(name, "width")]
        f = root[j]
        if soft is None or f < 0 or not scale[j] > 0:
            continue
        value, tolerance = soft
        # width = scale * free + offset (width ties have offset 0, scale > 0)
        soft_min[f] = max(soft_min[f], (value - offset[j]) / scale[j])
        soft_inv[f] = max(soft_inv[f], scale[j] / tolerance)
    return CompiledModel(
        n_lines=len(names),
        degree=degree,
        n_segments=n_segments,
        full_names=full_names,
        full_kind=np.array(full_kind, dtype=np.int64),
        root=root,
        scale=scale,
        offset=offset,
        free_root=free_root.astype(np.int64),
        free_lower=free_lower,
        free_upper=free_upper,
        free_soft_min=soft_min,
        free_soft_inv=soft_inv,
        segment_min=seg_min,
        segment_max=seg_max,
        segment_reference=seg_ref,
        initial=initial,
    )
