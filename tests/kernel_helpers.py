"""Shared helpers of the kernel-level tests (test_fit_vp, test_fit_speed_invariants,
test_fit_honesty): an independent numpy model of Gaussian lines + polynomial background with
its analytic Jacobian, and the per-pixel scratch the numba stages work on."""

from __future__ import annotations

import numpy as np


def numpy_model(x, p, nl, degree, ref):
    """Sum of ``nl`` Gaussians (amplitude, centroid, sigma) plus a polynomial in x - ref."""
    y = np.zeros_like(x)
    for k in range(nl):
        y = y + p[3 * k] * np.exp(-0.5 * ((x - p[3 * k + 1]) / p[3 * k + 2]) ** 2)
    for d in range(degree + 1):
        y = y + p[3 * nl + d] * (x - ref) ** d
    return y


def numpy_jacobian(x, p, nl, degree, ref):
    """d numpy_model / d p, by hand (samples x parameters)."""
    out = np.empty((x.size, len(p)))
    for k in range(nl):
        a, c, w = p[3 * k : 3 * k + 3]
        z = (x - c) / w
        g = np.exp(-0.5 * z * z)
        out[:, 3 * k] = g
        out[:, 3 * k + 1] = a * g * z / w
        out[:, 3 * k + 2] = a * g * z * z / w
    for d in range(degree + 1):
        out[:, 3 * nl + d] = (x - ref) ** d
    return out


def kernel_scratch(comp, y, sigma, wave):
    """(spec, n valid samples, sample block, model tuple) of one spectrum for the numba
    stages, as ``_fit_kernel`` prepares them (no noise terms, no per-pixel start)."""
    from saffron_xr.fit import _kernels as k

    spec = k.pack_spec(comp, max_iter=50, ftol=1e-5, xtol=3e-3, min_valid=5,
                       scale_errors=False, rescale_initial=False)  # fmt: skip
    nw = wave.size
    work = np.zeros(k._work_size(spec, nw))
    nan = np.full(nw, np.nan)
    n = k._compact(y, sigma, wave, nan, nan, spec, work)
    smp = work[: k._N_ROWS * nw].reshape(k._N_ROWS, nw)
    mdl = (comp.n_lines, comp.degree + 1, comp.segment_reference, comp.root.astype(float),
           comp.scale, comp.offset, comp.free_soft_min, comp.free_soft_inv)  # fmt: skip
    return spec, n, smp, mdl
