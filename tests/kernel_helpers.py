"""Shared helpers of the kernel-level tests (test_fit_vp, test_fit_speed_invariants,
test_fit_honesty): an independent numpy model of Gaussian lines + polynomial background with
its analytic Jacobian, and the per-pixel scratch the numba stages work on."""

from __future__ import annotations

import numpy as np

# the independent numpy model and its hand-written Jacobian (shared with benchmarks/bench_fit.py)
from saffron_xr.testing import gaussian_lines as numpy_model  # noqa: F401
from saffron_xr.testing import gaussian_lines_jacobian as numpy_jacobian  # noqa: F401


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
