"""numba kernels: Gaussian-lines model, analytic Jacobian, Levenberg-Marquardt, as gufuncs.

This is the only module of the package that imports numba; it imports neither xarray nor
the rest of the fitting code (only the status enum). ``fit/core.py`` imports it lazily, on
the first fit.

Layouts (named here, once, and read by both the kernel and ``fit/core.py``):

*spec* (``(k)``, float64) — the compiled model and the options, built by `pack_spec`:
``SPEC_*`` header entries, then the arrays named in `_SPEC_ARRAYS` one after the other
(see ``saffron_xr.fit.model.CompiledModel``), read back in that order by `_fit_pixel`.

*packed output* (``(q)``, float64) — per pixel, the blocks named in `_PACKED_BLOCKS` with the
sizes given there (full parameters, their 1-sigma errors, three per-line covariance terms,
per-line significance, at-bound and detected flags, ``chi2, n_iter, n_valid, status``, the
optional full covariance of the free parameters, and ``level`` for the adaptive kernel);
`packed_offsets` computes the offsets for both Python and the kernels.

How one pixel is fitted (`_fit_pixel`, each stage its own small function):

1. `_compact`: the valid samples (finite data, error and wavelength, error > 0, inside a
   background segment) are copied into a scratch array.
2. `_start`: initial values clipped into the bounds; per-pixel centroids and widths from the
   first and second moments of the line's excess over the rest of the model (isolated lines
   with a significant excess only); amplitudes and background by linear least squares at
   those centroids and widths (the model is linear in them).
3. `_iterate`: bounded Levenberg-Marquardt (active set on the bounds, Nielsen's damping
   update). Trial points cost one chi-square evaluation; the Jacobian and the normal matrix
   are built only at accepted points. Each line is evaluated only where ``|z| < _REACH``.
4. With a noise model (``photon``, ``floor``), the weights are recomputed from the fitted
   model, ``sigma**2 = photon * max(model, 0) + floor``, and the fit is iterated once more
   from its solution, so the weights no longer follow the noise of the data.
5. `_covariance`: ``(J^T J)^-1`` over the identifiable free parameters: parameters on a
   bound, and centroids/widths of lines whose amplitude is zero, are left out (errors NaN,
   ``at_bound`` flag); a remaining exact degeneracy drops the parameter concerned (status
   SINGULAR) instead of losing the pixel.
6. `_significance`: per line, ``amplitude / sigma`` with sigma from the linear block (the
   amplitudes and background at fixed centroids and widths), i.e. the signed square root of
   the chi-square increase when the line is removed and the other linear parameters refit.

The gufuncs are built on first use by `fit_gufunc` / `adaptive_gufunc` (``functools.cache``)
and are cached on disk by numba (``cache=True``), in ``__pycache__`` next to this file when
it is writable, else in numba's per-user cache folder (or ``NUMBA_CACHE_DIR``). The cache
is keyed on this file's modification time and size and on the numba version, so an
upgrade recompiles (and on the CPU, so a folder shared by different machines is safe);
later processes and every dask worker on the same file system load the compiled code
instead of compiling it: a warm process compiles nothing (``tests/test_fit_cache.py``).
numba writes each cache file to a temporary name and renames it, so workers compiling at
the same time do not corrupt it; the gufunc itself is never pickled: workers build it from
this importable module. ``SAFFRON_NUMBA_CACHE=0`` turns the disk cache off;
``SAFFRON_NUMBA_FASTMATH=1`` opts in to fastmath flags that keep NaN/Inf semantics.
"""

from __future__ import annotations

import functools
import math
import os

import numba
import numpy as np

from .status import FitStatus

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

_ST_CONVERGED = int(FitStatus.CONVERGED)
_ST_AT_BOUND = int(FitStatus.CONVERGED_AT_BOUND)
_ST_MAX_ITER = int(FitStatus.MAX_ITER)
_ST_SINGULAR = int(FitStatus.SINGULAR)
_ST_TOO_FEW = int(FitStatus.TOO_FEW_VALID)
_ST_ALL_NAN = int(FitStatus.ALL_NAN)
_ST_BAD_INITIAL = int(FitStatus.BAD_INITIAL)
_ST_THRESHOLD = int(FitStatus.THRESHOLD_NOT_MET)
_ST_NO_STEP = int(FitStatus.NO_STEP)

# Damping of the normal matrix: A = JtJ + lam * max(diag(JtJ), _DIAG_FLOOR * max diag).
_LAMBDA_START = 1e-3
_LAMBDA_MAX = 1e16
_LAMBDA_MIN = 1e-15
_DIAG_FLOOR = 1e-12
# Cholesky pivot below _PIVOT_RTOL * (its diagonal entry) counts as singular.
_PIVOT_RTOL = 1e-13
# A line is evaluated where |wavelength - centroid| < _REACH * width (exp(-_REACH**2/2)
# = 1e-14 of the peak beyond).
_REACH = 8.0
# Moments: the window is +-_MOMENT_REACH initial widths around the initial centroid; a line
# gets moment starting values only if no other line's centroid is closer than
# _MOMENT_ISOLATION * (sum of the two initial widths) and its excess in the window exceeds
# _MOMENT_SNR times the noise of that sum.
_MOMENT_REACH = 2.5
_MOMENT_ISOLATION = 1.5
_MOMENT_SNR = 5.0
# Fits with weights from the model: passes after the first fit.
_REWEIGHT_PASSES = 2
# Variance of a Gaussian truncated at +-2.5 sigma, over the untruncated variance.
_MOMENT_TRUNCATION = 0.9113


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
    }
    return np.concatenate([header] + [arrays[name] for name, _ in _SPEC_ARRAYS]).astype(np.float64)


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    return value in ("1", "true", "yes", "on")


# fastmath without "nnan"/"ninf": NaN samples and infinite bounds keep their meaning.
_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
_FLAGS = {
    "fastmath": _FASTMATH if _env_flag("SAFFRON_NUMBA_FASTMATH", False) else False,
    "cache": _env_flag("SAFFRON_NUMBA_CACHE", True),
}
_jit = numba.njit(nogil=True, **_FLAGS)


# ----------------------------------------------------------------------------- linear algebra
@_jit
def _cholesky(a, n, keep):
    """In-place lower Cholesky factor of the kept rows/columns of the leading n x n block.

    Rows and columns with ``keep[j] == 0`` must hold the identity (the caller sets them).
    Returns -1 on success, else the index of the first pivot that is not positive.
    """
    for j in range(n):
        if keep[j] == 0.0:
            continue
        d = a[j, j]
        s = d
        for k in range(j):
            s -= a[j, k] * a[j, k]
        if not (s > _PIVOT_RTOL * d) or not (s > 0.0):
            return j
        r = math.sqrt(s)
        a[j, j] = r
        for i in range(j + 1, n):
            s = a[i, j]
            for k in range(j):
                s -= a[i, k] * a[j, k]
            a[i, j] = s / r
    return -1


@_jit
def _cholesky_solve(chol, b, x, n):
    """Solve (L L^T) x = b with the factor from `_cholesky` (x may alias b)."""
    for i in range(n):
        s = b[i]
        for k in range(i):
            s -= chol[i, k] * x[k]
        x[i] = s / chol[i, i]
    for i in range(n - 1, -1, -1):
        s = x[i]
        for k in range(i + 1, n):
            s -= chol[k, i] * x[k]
        x[i] = s / chol[i, i]


@_jit
def _cholesky_inverse(chol, linv, out, n):
    """out = (L L^T)^-1 from the factor L of `_cholesky`, through M = L^-1: out = M^T M.

    n divisions in all (a solve per column would take 2 n**2, and divisions are slow).
    """
    for j in range(n):
        linv[j, j] = 1.0 / chol[j, j]
    for j in range(n):
        for i in range(j + 1, n):
            s = 0.0
            for k in range(j, i):
                s -= chol[i, k] * linv[k, j]
            linv[i, j] = s * linv[i, i]
    for a in range(n):
        for b in range(a + 1):
            s = 0.0
            for k in range(a, n):
                s += linv[k, a] * linv[k, b]
            out[a, b] = s
            out[b, a] = s


@_jit
def _factor_kept(jtj, amat, keep, n):
    """Factor JtJ restricted to the kept parameters; drop any that make it singular.

    Returns the number of parameters dropped for singularity (their keep flag is cleared).
    """
    dropped = 0
    for _attempt in range(n + 1):
        for a in range(n):
            for b in range(a + 1):
                if keep[a] != 0.0 and keep[b] != 0.0:
                    amat[a, b] = jtj[a, b]
                else:
                    amat[a, b] = 0.0
            if keep[a] == 0.0:
                amat[a, a] = 1.0
        bad = _cholesky(amat, n, keep)
        if bad < 0:
            return dropped
        keep[bad] = 0.0
        dropped += 1
    return dropped


# ----------------------------------------------------------------------------- model
@_jit
def _full_params(q, root, scale, offset, pfull):
    for j in range(pfull.shape[0]):
        r = int(root[j])
        pfull[j] = offset[j] + (scale[j] * q[r] if r >= 0 else 0.0)


@_jit
def _line_range(lam, n, ascending, centre, width, reach):
    """Index range [i0, i1) of the samples with |lam - centre| <= reach * |width|."""
    if not ascending:
        return 0, n
    half = reach * abs(width)
    lo = centre - half
    hi = centre + half
    a = 0
    b = n
    while a < b:
        m = (a + b) >> 1
        if lam[m] < lo:
            a = m + 1
        else:
            b = m
    i0 = a
    b = n
    while a < b:
        m = (a + b) >> 1
        if lam[m] <= hi:
            a = m + 1
        else:
            b = m
    return i0, a


@_jit
def _gaussian(lam, i0, i1, centre, inv_width, gv):
    """gv[i] = exp(-z**2 / 2), z = (lam[i] - centre) * inv_width, for i0 <= i < i1.

    On a uniform grid the exponential follows the exact recurrence
    g[i+1] = g[i] R[i], R[i+1] = R[i] Q, with R[i] = exp(-z[i] d - d**2 / 2) and
    Q = exp(-d**2), d = step * inv_width: three exponentials per line instead of one per
    sample (relative error ~1e-15 per step). Where the spacing changes (missing samples)
    the recurrence restarts from a direct evaluation.
    """
    if i1 <= i0:
        return
    z = (lam[i0] - centre) * inv_width
    gv[i0] = math.exp(-0.5 * z * z)
    if i1 - i0 < 4:
        for i in range(i0 + 1, i1):
            z = (lam[i] - centre) * inv_width
            gv[i] = math.exp(-0.5 * z * z)
        return
    step = lam[i0 + 1] - lam[i0]
    d = step * inv_width
    q = math.exp(-d * d)
    r = math.exp(-z * d - 0.5 * d * d)
    tol = 1e-9 * abs(step)
    for i in range(i0 + 1, i1):
        if abs(lam[i] - lam[i - 1] - step) <= tol:
            gv[i] = gv[i - 1] * r
            r *= q
        else:  # restart after a gap
            z = (lam[i] - centre) * inv_width
            gv[i] = math.exp(-0.5 * z * z)
            if i + 1 < i1:
                step = lam[i + 1] - lam[i]
                d = step * inv_width
                q = math.exp(-d * d)
                r = math.exp(-z * d - 0.5 * d * d)
                tol = 1e-9 * abs(step)


# Rows of the per-pixel sample block `smp` (see `_compact`).
_LAM = 0  # wavelength (Angstrom)
_Y = 1  # data
_W = 2  # weight 1 / sigma
_SEG = 3  # background segment index
_PHOTON = 4  # noise term per unit signal
_FLOOR = 5  # noise term independent of the signal
_RES = 6  # weighted residual (y - model) / sigma, at the current point
_GAUSS = 7  # scratch: one line's exp(-z**2 / 2)
_N_ROWS = 8


@_jit
def _chi2(q, n, smp, mdl, pfull, ascending):
    """Weighted chi2 at free parameters q; leaves the weighted residuals in smp[_RES].

    ``mdl`` is ``(n_lines, n_background_terms, segment_reference, root, scale, offset)``.
    """
    nl, nbg, seg_ref, root, scale, offset = mdl
    lam = smp[_LAM]
    res = smp[_RES]
    gv = smp[_GAUSS]
    _full_params(q, root, scale, offset, pfull)
    nlp = 3 * nl
    for i in range(n):
        s = int(smp[_SEG, i])
        t = lam[i] - seg_ref[s]
        base = nlp + s * nbg
        f = 0.0
        tk = 1.0
        for k in range(nbg):
            f += pfull[base + k] * tk
            tk *= t
        res[i] = f
    for ln in range(nl):
        amp = pfull[3 * ln]
        if amp == 0.0:
            continue
        cen = pfull[3 * ln + 1]
        wid = pfull[3 * ln + 2]
        i0, i1 = _line_range(lam, n, ascending, cen, wid, _REACH)
        _gaussian(lam, i0, i1, cen, 1.0 / wid, gv)
        for i in range(i0, i1):
            res[i] += amp * gv[i]
    yv = smp[_Y]
    wv = smp[_W]
    chi2 = 0.0
    for i in range(n):
        r = (yv[i] - res[i]) * wv[i]
        res[i] = r
        chi2 += r * r
    return chi2


@_jit
def _jacobian(q, n, smp, mdl, pfull, jac, ascending):
    """J^T J (lower triangle) and J^T r at q, r being the residuals left by `_chi2` at q.

    ``jac`` is ``(jmat, clo, chi, jtj, jtr)``: J has one row of jmat per free parameter (the
    derivative of the weighted model). A row is non-zero only on [clo, chi) (its lines'
    reach; everything for background terms): only that range is cleared and summed, and
    pairs of parameters whose ranges do not overlap (lines far apart) cost nothing.
    """
    nl, nbg, seg_ref, root, scale, offset = mdl
    jmat, clo, chi, jtj, jtr = jac
    lam = smp[_LAM]
    wv = smp[_W]
    gv = smp[_GAUSS]
    nfree = q.shape[0]
    _full_params(q, root, scale, offset, pfull)
    for f in range(nfree):
        clo[f] = n
        chi[f] = 0
    nlp = 3 * nl
    for ln in range(nl):
        i0, i1 = _line_range(lam, n, ascending, pfull[3 * ln + 1], pfull[3 * ln + 2], _REACH)
        for k in range(3):
            r = int(root[3 * ln + k])
            if r >= 0:
                clo[r] = min(clo[r], i0)
                chi[r] = max(chi[r], i1)
    for j in range(nlp, pfull.shape[0]):
        r = int(root[j])
        if r >= 0:
            clo[r] = 0
            chi[r] = n
    for f in range(nfree):
        row = jmat[f]
        for i in range(int(clo[f]), int(chi[f])):
            row[i] = 0.0
    for ln in range(nl):
        amp = pfull[3 * ln]
        cen = pfull[3 * ln + 1]
        inv = 1.0 / pfull[3 * ln + 2]
        i0, i1 = _line_range(lam, n, ascending, cen, pfull[3 * ln + 2], _REACH)
        _gaussian(lam, i0, i1, cen, inv, gv)
        # d/dA = g, d/dc = A g z / w, d/dw = A g z^2 / w, with z = (x - c) / w
        ra = int(root[3 * ln])
        rc = int(root[3 * ln + 1])
        rw = int(root[3 * ln + 2])
        if ra >= 0:
            sa = scale[3 * ln]
            ja = jmat[ra]
            for i in range(i0, i1):
                ja[i] += sa * gv[i] * wv[i]
        if rc >= 0 and rw >= 0:
            sc = scale[3 * ln + 1] * amp * inv
            sw = scale[3 * ln + 2] * amp * inv
            jc = jmat[rc]
            jw = jmat[rw]
            for i in range(i0, i1):
                z = (lam[i] - cen) * inv
                gz = gv[i] * wv[i] * z
                jc[i] += sc * gz
                jw[i] += sw * gz * z
        elif rc >= 0:
            sc = scale[3 * ln + 1] * amp * inv
            jc = jmat[rc]
            for i in range(i0, i1):
                jc[i] += sc * gv[i] * wv[i] * (lam[i] - cen) * inv
        elif rw >= 0:
            sw = scale[3 * ln + 2] * amp * inv
            jw = jmat[rw]
            for i in range(i0, i1):
                z = (lam[i] - cen) * inv
                jw[i] += sw * gv[i] * wv[i] * z * z
    for i in range(n):
        s = int(smp[_SEG, i])
        t = lam[i] - seg_ref[s]
        base = nlp + s * nbg
        tk = wv[i]
        for k in range(nbg):
            r = int(root[base + k])
            if r >= 0:
                jmat[r, i] += scale[base + k] * tk
            tk *= t
    res = smp[_RES]
    for a in range(nfree):
        la = int(clo[a])
        ha = int(chi[a])
        for b in range(a + 1):
            s = 0.0
            for i in range(max(la, int(clo[b])), min(ha, int(chi[b]))):
                s += jmat[a, i] * jmat[b, i]
            jtj[a, b] = s
        s = 0.0
        for i in range(la, ha):
            s += jmat[a, i] * res[i]
        jtr[a] = s


@_jit
def _predicted_decrease(q, q_try, jtj, jtr, nfree):
    """Gauss-Newton predicted chi2 decrease for the step q -> q_try."""
    pred = 0.0
    for a in range(nfree):
        da = q_try[a] - q[a]
        pred += da * (2.0 * jtr[a] - jtj[a, a] * da)
        for b in range(a):
            pred -= 2.0 * jtj[a, b] * da * (q_try[b] - q[b])
    return pred


# ----------------------------------------------------------------------------- one pixel
@_jit
def _work_size(spec, nw):
    """Length of the per-pixel float64 scratch array (layout: see `_fit_pixel`)."""
    nl = int(spec[SPEC_N_LINES])
    nfree = int(spec[SPEC_N_FREE])
    nfull = 3 * nl + int(spec[SPEC_N_SEGMENTS]) * (int(spec[SPEC_DEGREE]) + 1)
    return (_N_ROWS + nfree) * nw + 10 * nfree + 4 * nfree * nfree + nfull


@_jit
def _compact(y, err, wave, photon, floor, spec, work):
    """Copy the valid samples into the sample block at the start of work; return their number.

    Valid: finite data, wavelength and error, error > 0, inside a background segment. The
    block has `_N_ROWS` rows of len(y) (`_LAM`, `_Y`, ...). This is the only part compiled
    once per data dtype.
    """
    nseg = int(spec[SPEC_N_SEGMENTS])
    seg_min = spec[SPEC_HEADER : SPEC_HEADER + nseg]
    seg_max = spec[SPEC_HEADER + nseg : SPEC_HEADER + 2 * nseg]
    nw = y.shape[0]
    smp = work[: _N_ROWS * nw].reshape((_N_ROWS, nw))
    n = 0
    for i in range(nw):
        x = wave[i]
        yi = y[i]
        ei = err[i]
        if not (math.isfinite(x) and math.isfinite(yi) and math.isfinite(ei) and ei > 0.0):
            continue
        s = -1
        for k in range(nseg):
            if seg_min[k] <= x <= seg_max[k]:
                s = k
                break
        if s < 0:
            continue
        smp[_LAM, n] = x
        smp[_Y, n] = yi
        smp[_W, n] = 1.0 / ei
        smp[_SEG, n] = s
        smp[_PHOTON, n] = photon[i]
        smp[_FLOOR, n] = floor[i]
        n += 1
    return n


@_jit
def _moments(q, n, smp, mdl, pfull, lower, upper, ascending):
    """Per-pixel centroid and width of isolated lines from the moments of their excess.

    The excess is the data minus the rest of the model (background and the other lines) in
    a window of +-_MOMENT_REACH widths; only positive excess counts. A line is changed only
    if its centroid and width are free and its own (not tied), no other line is near, and
    the excess is significant. Returns the number of lines changed.
    """
    nl, nbg, seg_ref, root, scale, offset = mdl
    lam = smp[_LAM]
    wv = smp[_W]
    res = smp[_RES]
    changed = 0
    _chi2(q, n, smp, mdl, pfull, ascending)
    for ln in range(nl):
        rc = int(root[3 * ln + 1])
        rw = int(root[3 * ln + 2])
        if rc < 0 or rw < 0 or scale[3 * ln + 1] != 1.0 or scale[3 * ln + 2] != 1.0:
            continue
        own = True
        for j in range(3 * nl):
            if j != 3 * ln + 1 and j != 3 * ln + 2:
                r = int(root[j])
                if r == rc or r == rw:
                    own = False
        if not own:
            continue
        amp = pfull[3 * ln]
        cen = pfull[3 * ln + 1]
        wid = abs(pfull[3 * ln + 2])
        isolated = True
        for other in range(nl):
            if other != ln:
                d = abs(pfull[3 * other + 1] - cen)
                if d < _MOMENT_ISOLATION * (wid + abs(pfull[3 * other + 2])):
                    isolated = False
        if not isolated:
            continue
        i0, i1 = _line_range(lam, n, ascending, cen, wid, _MOMENT_REACH)
        if i1 - i0 < 4:
            continue
        s0 = 0.0
        s1 = 0.0
        var = 0.0
        inv = 1.0 / wid
        for i in range(i0, i1):
            z = (lam[i] - cen) * inv
            e = res[i] / wv[i] + amp * math.exp(-0.5 * z * z)  # data minus the rest
            var += 1.0 / (wv[i] * wv[i])
            if e > 0.0:
                s0 += e
                s1 += e * lam[i]
        if not (s0 > _MOMENT_SNR * math.sqrt(var)):
            continue
        c_new = s1 / s0
        s2 = 0.0
        for i in range(i0, i1):
            z = (lam[i] - cen) * inv
            e = res[i] / wv[i] + amp * math.exp(-0.5 * z * z)
            if e > 0.0:
                d = lam[i] - c_new
                s2 += e * d * d
        w_new = math.sqrt(max(s2 / s0, 0.0) / _MOMENT_TRUNCATION)
        if not (math.isfinite(c_new) and math.isfinite(w_new) and w_new > 0.0):
            continue
        q[rc] = min(max(c_new, lower[rc]), upper[rc])
        q[rw] = min(max(w_new, lower[rw]), upper[rw])
        changed += 1
    return changed


@_jit
def _linear_solve(q, jac, tmp, free_kind, lower, upper):
    """q with amplitudes and background at their linear least-squares values (in place).

    One Gauss-Newton step restricted to the linear parameters (the model is linear in them,
    so the step is exact), from the J^T J, J^T r at q. Amplitudes that come out on their
    lower bound start one rough sigma above it so that centroid and width keep a gradient.
    Returns False (q unchanged) if there is no linear parameter or the system is singular.
    """
    jmat, clo, chi, jtj, jtr = jac
    q_try, delta, rhs, keep, amat = tmp
    nfree = q.shape[0]
    nlin = 0
    for f in range(nfree):
        kind = int(free_kind[f])
        keep[f] = 1.0 if (kind == 0 or kind == 3) else 0.0
        if keep[f] != 0.0:
            nlin += 1
    if nlin == 0:
        return False
    for a in range(nfree):
        for b in range(a + 1):
            amat[a, b] = jtj[a, b] if (keep[a] != 0.0 and keep[b] != 0.0) else 0.0
        if keep[a] == 0.0:
            amat[a, a] = 1.0
            rhs[a] = 0.0
        else:
            amat[a, a] = jtj[a, a] * (1.0 + 1e-10) + 1e-300
            rhs[a] = jtr[a]
    if _cholesky(amat, nfree, keep) >= 0:
        return False
    _cholesky_solve(amat, rhs, delta, nfree)
    for f in range(nfree):
        if keep[f] == 0.0:
            continue
        v = q[f] + delta[f]
        if int(free_kind[f]) == 0 and lower[f] > -math.inf and v <= lower[f]:
            v = lower[f] + 1.0 / math.sqrt(max(jtj[f, f], 1e-300))
        q[f] = min(max(v, lower[f]), upper[f])
    return True


@_jit
def _start(q, p0, n, smp, mdl, pfull, jac, tmp, free_root, free_kind, lower, upper,
           rescale, moments, ascending):  # fmt: skip
    """Starting point: initial values clipped into the bounds, then (with `rescale`) the
    moments of isolated lines and the linear solve of amplitudes and background.

    Returns chi2 at the start (NaN if the initial values are not usable); on return the
    residuals, J^T J and J^T r belong to q.
    """
    nfree = q.shape[0]
    for f in range(nfree):
        v = p0[int(free_root[f])]
        if not math.isfinite(v):
            return np.nan
        q[f] = min(max(v, lower[f]), upper[f])
    chi2 = _chi2(q, n, smp, mdl, pfull, ascending)
    if not math.isfinite(chi2):
        return np.nan
    _jacobian(q, n, smp, mdl, pfull, jac, ascending)
    if not rescale:
        return chi2
    q_try = tmp[0]
    for f in range(nfree):
        q_try[f] = q[f]  # to fall back on
    if not _linear_solve(q, jac, tmp, free_kind, lower, upper):
        return chi2
    if moments and _moments(q, n, smp, mdl, pfull, lower, upper, ascending) > 0:
        _chi2(q, n, smp, mdl, pfull, ascending)
        _jacobian(q, n, smp, mdl, pfull, jac, ascending)
        _linear_solve(q, jac, tmp, free_kind, lower, upper)
    chi2_start = _chi2(q, n, smp, mdl, pfull, ascending)
    if not math.isfinite(chi2_start):  # back to the clipped initial values
        for f in range(nfree):
            q[f] = q_try[f]
        chi2_start = _chi2(q, n, smp, mdl, pfull, ascending)
    _jacobian(q, n, smp, mdl, pfull, jac, ascending)
    return chi2_start


@_jit
def _negligible(decrease, step, jtj, chi2, dof, ftol, xtol):
    """Whether a step (taken or proposed) ends the iteration: chi2 decreases by at most
    ``ftol * s2``, or every parameter moves by at most ``xtol`` of its 1-sigma error
    (``step**2 * (J^T J)_aa <= xtol**2 * s2``), with ``s2 = chi2 / dof``.
    """
    s2 = max(chi2 / dof, 1e-300)
    if decrease <= ftol * s2:
        return True
    for a in range(step.shape[0]):
        if step[a] * step[a] * jtj[a, a] > xtol * xtol * s2:
            return False
    return True


@_jit
def _iterate(q, chi2, n, smp, mdl, pfull, jac, tmp, lower, upper, max_iter, ftol, xtol,
             ascending):  # fmt: skip
    """Bounded Levenberg-Marquardt from q (residuals, J^T J and J^T r already at q).

    Returns (status, iterations, chi2); on return q, the residuals, J^T J and J^T r all
    belong to the same point. Trial points cost one chi2 evaluation; J is rebuilt only at
    accepted points. Parameters on a bound whose descent direction points outward are
    frozen for the step (active set); trial points are clipped into the box.
    """
    jmat, clo, chi, jtj, jtr = jac
    q_try, delta, rhs, free, amat = tmp
    nfree = q.shape[0]
    dof = max(n - nfree, 1)
    lmb = _LAMBDA_START
    nu = 2.0
    status = _ST_MAX_ITER
    n_iter = 0
    n_accepted = 0
    for it in range(max_iter):
        n_iter = it + 1
        maxdiag = 0.0
        for a in range(nfree):
            if jtj[a, a] > maxdiag:
                maxdiag = jtj[a, a]
        floor = _DIAG_FLOOR * maxdiag + 1e-300
        for f in range(nfree):
            frz = (q[f] <= lower[f] and jtr[f] <= 0.0) or (q[f] >= upper[f] and jtr[f] >= 0.0)
            free[f] = 0.0 if frz else 1.0
        accepted = False
        converged_now = False
        first_try = True
        dchi = 0.0
        lam_used = lmb
        chi2_try = chi2
        while lmb <= _LAMBDA_MAX:
            for a in range(nfree):
                if free[a] == 0.0:
                    for b in range(a + 1):
                        amat[a, b] = 0.0
                    amat[a, a] = 1.0
                    rhs[a] = 0.0
                    continue
                for b in range(a):
                    amat[a, b] = 0.0 if free[b] == 0.0 else jtj[a, b]
                amat[a, a] = jtj[a, a] + lmb * max(jtj[a, a], floor)
                rhs[a] = jtr[a]
            if _cholesky(amat, nfree, free) < 0:
                _cholesky_solve(amat, rhs, delta, nfree)
                clipped = False
                for f in range(nfree):
                    v = q[f] + delta[f]
                    q_try[f] = min(max(v, lower[f]), upper[f])
                    if q_try[f] != v:
                        clipped = True
                if lmb <= 1.0 and first_try and not clipped:
                    # Converged already if the proposed (nearly Gauss-Newton) step is
                    # negligible: this saves evaluating a last, useless trial point.
                    pred = _predicted_decrease(q, q_try, jtj, jtr, nfree)
                    for a in range(nfree):
                        delta[a] = q_try[a] - q[a]  # the step proposed
                    if _negligible(pred, delta, jtj, chi2, dof, ftol, xtol):
                        converged_now = True
                        break
                first_try = False
                chi2_try = _chi2(q_try, n, smp, mdl, pfull, ascending)
                if math.isfinite(chi2_try) and chi2_try <= chi2:
                    accepted = True
                    lam_used = lmb
                    dchi = chi2 - chi2_try
                    # gain ratio: actual over Gauss-Newton-predicted decrease (Nielsen 1999)
                    pred = _predicted_decrease(q, q_try, jtj, jtr, nfree)
                    rho = dchi / pred if pred > 0.0 else 0.0
                    t = 2.0 * rho - 1.0
                    lmb = max(lmb * max(1.0 / 3.0, 1.0 - t * t * t), _LAMBDA_MIN)
                    nu = 2.0
                    break
            lmb *= nu
            nu *= 2.0
        if converged_now:
            status = _ST_CONVERGED
            break
        if not accepted:
            # No step lowers chi2. After accepted steps this is the (bounded) minimum to
            # machine precision; from the start it is not a verified minimum. The rejected
            # trials overwrote the residuals: restore them (J^T J, J^T r are still at q).
            _chi2(q, n, smp, mdl, pfull, ascending)
            status = _ST_CONVERGED if n_accepted > 0 else _ST_NO_STEP
            break
        n_accepted += 1
        for a in range(nfree):
            delta[a] = q_try[a] - q[a]  # the step taken
            q[a] = q_try[a]
        chi2 = chi2_try
        _jacobian(q, n, smp, mdl, pfull, jac, ascending)
        if lam_used <= 1.0 and _negligible(dchi, delta, jtj, chi2, dof, ftol, xtol):
            status = _ST_CONVERGED
            break
    return status, n_iter, chi2


@_jit
def _reweight(n, smp):
    """Weights 1/sigma with sigma**2 = photon * max(model, 0) + floor, model = y - r sigma.

    The residuals in smp must be those of the current fit; samples whose noise terms are
    not finite (or give sigma <= 0) keep their weight. Returns the number reweighted.
    """
    count = 0
    for i in range(n):
        p = smp[_PHOTON, i]
        b = smp[_FLOOR, i]
        if not (math.isfinite(p) and math.isfinite(b)):
            continue
        model = smp[_Y, i] - smp[_RES, i] / smp[_W, i]
        var = p * max(model, 0.0) + b
        if var > 0.0 and math.isfinite(var):
            smp[_W, i] = 1.0 / math.sqrt(var)
            count += 1
    return count


@_jit
def _identifiable(q, pfull, root, nl, free_kind, lower, upper, keep):
    """keep[f] = 1 for the free parameters that the data constrain at the solution.

    Left out: parameters on a bound, and centroids/widths that only serve lines of zero
    amplitude. Returns whether any free parameter is on a bound.
    """
    any_bound = False
    for f in range(q.shape[0]):
        at = q[f] <= lower[f] or q[f] >= upper[f]
        keep[f] = 0.0 if at else 1.0
        any_bound = any_bound or at
        kind = int(free_kind[f])
        if not at and (kind == 1 or kind == 2):
            ident = False
            for ln in range(nl):
                if int(root[3 * ln + kind]) == f and pfull[3 * ln] != 0.0:
                    ident = True
            if not ident:
                keep[f] = 0.0
    return any_bound


@_jit
def _covariance(jtj, amat, linv, keep, cov):
    """cov = (J^T J)^-1 over the kept parameters (NaN elsewhere), dropping any parameter
    that leaves the matrix singular; returns True if one was dropped."""
    nfree = jtj.shape[0]
    singular = _factor_kept(jtj, amat, keep, nfree) > 0
    _cholesky_inverse(amat, linv, cov, nfree)
    for a in range(nfree):
        for b in range(nfree):
            if keep[a] == 0.0 or keep[b] == 0.0:
                cov[a, b] = np.nan
    return singular


@_jit
def _significance(q, jtj, tmp, free_kind, factor, root, nl, sig):
    """Per line: amplitude / sigma(amplitude | centroids and widths fixed).

    The linear block of J^T J (amplitudes and background) is factored; the variance of a
    free amplitude is the diagonal of its inverse, ``|L^-1 e_r|^2``. For a linear least
    squares problem, (amplitude / sigma)**2 is exactly the chi2 increase when the line is
    removed and the other linear parameters are refit. NaN for fixed amplitudes.
    """
    q_try, x, rhs, keep, amat = tmp
    nfree = q.shape[0]
    for f in range(nfree):
        kind = int(free_kind[f])
        keep[f] = 1.0 if (kind == 0 or kind == 3) else 0.0
    _factor_kept(jtj, amat, keep, nfree)
    for ln in range(nl):
        sig[ln] = np.nan
        r = int(root[3 * ln])
        if r < 0 or keep[r] == 0.0:
            continue
        # forward solve L x = e_r (x is zero above r)
        for i in range(nfree):
            x[i] = 0.0
        x[r] = 1.0 / amat[r, r]
        for i in range(r + 1, nfree):
            if keep[i] == 0.0:
                continue
            s = 0.0
            for k in range(r, i):
                s -= amat[i, k] * x[k]
            x[i] = s / amat[i, i]
        var = 0.0
        for i in range(r, nfree):
            var += x[i] * x[i]
        var *= factor
        sig[ln] = q[r] / math.sqrt(var) if var > 0.0 else np.nan


@_jit
def _pack(out, q, pfull, cov, factor, mdl, nfree, lower, upper, full_cov):
    """Parameters, errors, per-line covariance terms, at-bound flags, full covariance."""
    nl, nbg, seg_ref, root, scale, offset = mdl
    nfull = pfull.shape[0]
    _, o_err, o_cov, _, o_bound, _, _, o_fullcov = packed_offsets(nl, nfull)
    for j in range(nfull):
        out[j] = pfull[j]
        r = int(root[j])
        if r < 0:
            out[o_err + j] = 0.0
        else:
            out[o_err + j] = math.sqrt(max(scale[j] * scale[j] * cov[r, r] * factor, 0.0))
    for ln in range(nl):
        ra = int(root[3 * ln])
        rc = int(root[3 * ln + 1])
        rw = int(root[3 * ln + 2])
        sa = scale[3 * ln]
        sc = scale[3 * ln + 1]
        sw = scale[3 * ln + 2]
        out[o_cov + ln] = sa * sc * cov[ra, rc] * factor if ra >= 0 and rc >= 0 else 0.0
        out[o_cov + nl + ln] = sa * sw * cov[ra, rw] * factor if ra >= 0 and rw >= 0 else 0.0
        out[o_cov + 2 * nl + ln] = sc * sw * cov[rc, rw] * factor if rc >= 0 and rw >= 0 else 0.0
        bound = False
        for r in (ra, rc, rw):
            if r >= 0 and (q[r] <= lower[r] or q[r] >= upper[r]):
                bound = True
        out[o_bound + ln] = 1.0 if bound else 0.0
    if full_cov:
        for a in range(nfree):
            for b in range(nfree):
                out[o_fullcov + a * nfree + b] = cov[a, b] * factor


@_jit
def _fit_pixel(work, nw, n, p0, spec, out):
    """Fit the n valid samples put into work by `_compact`; write the packed results.

    Never raises for bad data: failures are status codes with NaN parameters.
    """
    nl = int(spec[SPEC_N_LINES])
    nbg = int(spec[SPEC_DEGREE]) + 1
    nseg = int(spec[SPEC_N_SEGMENTS])
    nfree = int(spec[SPEC_N_FREE])
    nfull = 3 * nl + nseg * nbg
    o = SPEC_HEADER + 2 * nseg
    seg_ref = spec[o : o + nseg]
    o += nseg
    root = spec[o : o + nfull]
    scale = spec[o + nfull : o + 2 * nfull]
    offset = spec[o + 2 * nfull : o + 3 * nfull]
    o += 3 * nfull
    free_root = spec[o : o + nfree]
    lower = spec[o + nfree : o + 2 * nfree]
    upper = spec[o + 2 * nfree : o + 3 * nfree]
    free_kind = spec[o + 3 * nfree : o + 4 * nfree]
    mdl = (nl, nbg, seg_ref, root, scale, offset)
    full_cov = spec[SPEC_FULL_COV] != 0.0

    # packed output offsets (same order as _PACKED_BLOCKS)
    _, _, _, o_sig, _, o_det, o_chi2, _ = packed_offsets(nl, nfull)
    for k in range(o_chi2 + 1):
        out[k] = np.nan
    out[o_chi2 + 1] = 0.0
    if full_cov:
        for k in range(nfree * nfree):
            out[o_chi2 + 4 + k] = np.nan
    out[o_chi2 + 2] = n
    if n == 0:
        out[o_chi2 + 3] = _ST_ALL_NAN
        return
    if n < int(spec[SPEC_MIN_VALID]) or n <= nfree:
        out[o_chi2 + 3] = _ST_TOO_FEW
        return

    # views into the scratch array (sizes: see _work_size)
    smp = work[: _N_ROWS * nw].reshape((_N_ROWS, nw))
    o = _N_ROWS * nw
    jmat = work[o : o + nfree * nw].reshape((nfree, nw))
    o += nfree * nw
    vec = work[o : o + 10 * nfree].reshape((10, nfree))
    q, q_try, delta, jtr, rhs, keep, clo, chi = vec[0], vec[1], vec[2], vec[3], vec[4], \
        vec[5], vec[6], vec[7]  # fmt: skip
    o += 10 * nfree
    mats = work[o : o + 4 * nfree * nfree].reshape((4, nfree, nfree))
    jtj, amat, cov, linv = mats[0], mats[1], mats[2], mats[3]
    pfull = work[o + 4 * nfree * nfree : o + 4 * nfree * nfree + nfull]
    jac = (jmat, clo, chi, jtj, jtr)
    tmp = (q_try, delta, rhs, keep, amat)

    ascending = True
    lam = smp[_LAM]
    for i in range(1, n):
        if not lam[i] > lam[i - 1]:
            ascending = False
            break

    chi2 = _start(q, p0, n, smp, mdl, pfull, jac, tmp, free_root, free_kind, lower, upper,
                  spec[SPEC_RESCALE] != 0.0, spec[SPEC_MOMENTS] != 0.0, ascending)  # fmt: skip
    if not math.isfinite(chi2):
        out[o_chi2 + 3] = _ST_BAD_INITIAL
        return
    max_iter = int(spec[SPEC_MAX_ITER])
    ftol = spec[SPEC_FTOL]
    xtol = spec[SPEC_XTOL]
    n_passes = int(spec[SPEC_REWEIGHT])
    if n_passes > 0 and _reweight(n, smp) > 0:
        # weights from the starting model rather than from the noisy data
        chi2 = _chi2(q, n, smp, mdl, pfull, ascending)
        _jacobian(q, n, smp, mdl, pfull, jac, ascending)
        n_passes -= 1
    status, n_iter, chi2 = _iterate(q, chi2, n, smp, mdl, pfull, jac, tmp, lower, upper,
                                    max_iter, ftol, xtol, ascending)  # fmt: skip
    for _pass in range(n_passes):
        # weights from the fitted model, then iterate again from the solution (the
        # starting model's weights are close, but its centroids and widths are the guess)
        if _reweight(n, smp) == 0:
            break
        chi2 = _chi2(q, n, smp, mdl, pfull, ascending)
        _jacobian(q, n, smp, mdl, pfull, jac, ascending)
        status2, n_iter2, chi2 = _iterate(q, chi2, n, smp, mdl, pfull, jac, tmp, lower,
                                          upper, max_iter, ftol, xtol, ascending)  # fmt: skip
        n_iter += n_iter2
        if status2 != _ST_NO_STEP or status == _ST_NO_STEP:
            status = status2

    dof = n - nfree
    out[o_chi2] = chi2 / dof
    out[o_chi2 + 1] = n_iter
    factor = max(chi2 / dof, 0.0) if spec[SPEC_SCALE_ERRORS] != 0.0 else 1.0
    _full_params(q, root, scale, offset, pfull)
    any_bound = _identifiable(q, pfull, root, nl, free_kind, lower, upper, keep)
    singular = _covariance(jtj, amat, linv, keep, cov)
    if status == _ST_CONVERGED and any_bound:
        status = _ST_AT_BOUND
    if singular and (status == _ST_CONVERGED or status == _ST_AT_BOUND):
        status = _ST_SINGULAR
    out[o_chi2 + 3] = status
    _pack(out, q, pfull, cov, factor, mdl, nfree, lower, upper, full_cov)
    _significance(q, jtj, tmp, free_kind, factor, root, nl, out[o_sig : o_sig + nl])
    detection = spec[SPEC_DETECTION]
    for ln in range(nl):
        if pfull[3 * ln] == 0.0:
            out[o_sig + ln] = 0.0
        out[o_det + ln] = 1.0 if out[o_sig + ln] >= detection else 0.0


# ----------------------------------------------------------------------------- adaptive
@_jit
def _worst_relative_error(out, nl, nfull, status_at, thr_a, thr_c, thr_w):
    """max over lines and kinds of (|err / value| / threshold); inf if not usable."""
    st = int(out[status_at])
    if not (st == _ST_CONVERGED or st == _ST_AT_BOUND):
        return math.inf
    worst = 0.0
    for ln in range(nl):
        for k in range(3):
            thr = thr_a if k == 0 else (thr_c if k == 1 else thr_w)
            if not (thr < math.inf):
                continue
            v = out[3 * ln + k]
            e = out[nfull + 3 * ln + k]
            if e == 0.0:  # fixed (or tied to a fixed) parameter
                continue
            rel = abs(e / v) if v != 0.0 else math.inf
            if not math.isfinite(rel):
                return math.inf
            rel /= thr
            if rel > worst:
                worst = rel
    return worst


# ----------------------------------------------------------------------------- gufuncs
# The kernels are compiled by numba.guvectorize, once per signature; each links the
# float64-only `_fit_pixel`, and only `_compact` depends on the data dtype.
_SIG_TYPES = ("float32", "float64")


def _fit_kernel(y, err, wave, photon, floor, p0, spec, template, out):
    nw = y.shape[0]
    work = np.empty(_work_size(spec, nw))  # one scratch allocation per pixel
    n = _compact(y, err, wave, photon, floor, spec, work)
    _fit_pixel(work, nw, n, p0, spec, out)


def _adaptive_kernel(y, err, wave, photon, floor, p0, spec, template, out):
    """Fit levels from the first (least binned); keep the first meeting the thresholds."""
    nl = int(spec[SPEC_N_LINES])
    nfull = 3 * nl + int(spec[SPEC_N_SEGMENTS]) * (int(spec[SPEC_DEGREE]) + 1)
    status_at = packed_offsets(nl, nfull)[6] + 3
    thr_a = spec[SPEC_THRESHOLD_AMPLITUDE]
    thr_c = spec[SPEC_THRESHOLD_CENTROID]
    thr_w = spec[SPEC_THRESHOLD_WIDTH]
    nq = out.shape[0] - 1  # the last entry is the level index
    n_levels = y.shape[0]
    nw = y.shape[1]
    work = np.empty(_work_size(spec, nw) + nq)
    cur = work[work.shape[0] - nq :]
    best_score = math.inf
    best_level = 0
    for lv in range(n_levels):
        n = _compact(y[lv], err[lv], wave, photon[lv], floor[lv], spec, work)
        _fit_pixel(work, nw, n, p0, spec, cur)
        score = _worst_relative_error(cur, nl, nfull, status_at, thr_a, thr_c, thr_w)
        if lv == 0 or score < best_score:
            best_score = score
            best_level = lv
            for k in range(nq):
                out[k] = cur[k]
        if score <= 1.0:
            out[nq] = lv
            return
    # No level met the thresholds. Keep the level with the smallest worst relative error
    # (relative to its threshold), flagged THRESHOLD_NOT_MET (the per-line at-bound flags
    # keep what the status no longer says); if no level gave a usable fit, keep the last
    # (most binned) level with its own failure status.
    if best_score == math.inf:
        for k in range(nq):
            out[k] = cur[k]
        out[nq] = n_levels - 1
        return
    out[nq] = best_level
    out[status_at] = _ST_THRESHOLD


def _check_dtype(dtype: str) -> str:
    if dtype not in _SIG_TYPES:
        raise ValueError(f"saffron_xr kernels take float32 or float64 data, not {dtype!r}")
    return dtype


@functools.cache
def fit_gufunc(dtype: str = "float64"):
    """The per-pixel fitting gufunc for float32 or float64 data (built on first call).

    Signature ``(w),(w),(w),(w),(w),(p),(k),(q)->(q)``: data, 1-sigma error (both of
    `dtype`), wavelength (float64, Angstrom), the noise terms ``photon`` and ``floor``
    (float64; NaN when there is no noise model), initial full parameters (float64), spec
    (`pack_spec`), a template whose only use is to give the length of the packed output
    (numba needs every output core dimension to appear in an input), and the packed output
    (float64, `packed_layout`). Arithmetic is float64 throughout. One signature per call, so
    that a worker compiles (or loads from the disk cache) only the dtype it meets.
    """
    t = _check_dtype(dtype)
    sig = f"void({t}[:], {t}[:], f8[:], f8[:], f8[:], f8[:], f8[:], f8[:], f8[:])"
    layout = "(w),(w),(w),(w),(w),(p),(k),(q)->(q)"
    return numba.guvectorize([sig], layout, nopython=True, **_FLAGS)(_fit_kernel)


@functools.cache
def adaptive_gufunc(dtype: str = "float64"):
    """The adaptive-binning gufunc (built on first call).

    Signature ``(l,w),(l,w),(w),(l,w),(l,w),(p),(k),(q)->(q)``: as `fit_gufunc` with data,
    error and noise terms stacked over binning levels (least binned first); the packed
    output has one more entry, the index of the chosen level.
    """
    t = _check_dtype(dtype)
    sig = f"void({t}[:, :], {t}[:, :], f8[:], f8[:, :], f8[:, :], f8[:], f8[:], f8[:], f8[:])"
    layout = "(l,w),(l,w),(w),(l,w),(l,w),(p),(k),(q)->(q)"
    return numba.guvectorize([sig], layout, nopython=True, **_FLAGS)(_adaptive_kernel)
