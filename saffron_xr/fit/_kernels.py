"""numba kernels: Gaussian-lines model, analytic Jacobian, Levenberg-Marquardt, as gufuncs.

This is the only module of the package that imports numba; it imports neither xarray nor
the rest of the fitting code (only the status enum). ``fit/core.py`` imports it lazily, on
the first fit.

Layouts (named here, once, and read by both the kernel and ``fit/core.py``):

*spec* (``(k)``, float64) — the compiled model and the options, built by `pack_spec`:
``SPEC_*`` header entries, then the arrays named in `_SPEC_ARRAYS` one after the other
(see ``saffron_xr.fit.model.CompiledModel``); `spec_offsets` gives where each starts.

*packed output* (``(q)``, float64) — per pixel, the blocks named in `_PACKED_BLOCKS` with the
sizes given there (full parameters, their 1-sigma errors, three per-line covariance terms,
per-line significance, at-bound and detected flags, ``chi2, n_iter, n_valid, status``, the optional
full covariance of the free parameters, and ``level`` for the adaptive kernel);
`packed_offsets` computes the offsets for both Python and the kernel.

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
and are cached on disk by numba (``cache=True``) in a per-user folder (see
``saffron_xr.fit.kernel_cache_dir``), so later processes and dask workers load the compiled
code instead of compiling it. ``SAFFRON_NUMBA_CACHE=0`` turns the disk cache off;
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
# Variance of a Gaussian truncated at +-2.5 sigma, over the untruncated variance.
_MOMENT_TRUNCATION = 0.9113


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
    detection: float = 5.0,
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
    header[SPEC_REWEIGHT] = float(bool(reweight))
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
    return np.concatenate([header] + [arrays[name] for name, _ in _SPEC_ARRAYS]).astype(
        np.float64
    )


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


@_jit
def _dot(a, b, lo, hi):
    """Sum of a[i] * b[i] for lo <= i < hi, with four partial sums (lets LLVM vectorise)."""
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    i = lo
    while i + 4 <= hi:
        s0 += a[i] * b[i]
        s1 += a[i + 1] * b[i + 1]
        s2 += a[i + 2] * b[i + 2]
        s3 += a[i + 3] * b[i + 3]
        i += 4
    while i < hi:
        s0 += a[i] * b[i]
        i += 1
    return (s0 + s1) + (s2 + s3)


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
def _chi2(q, n, lam, yv, wv, segv, nl, nbg, seg_ref, root, scale, offset, pfull, fv, ascending):
    """Weighted chi2 at free parameters q; leaves r = (y - model) / sigma in fv."""
    _full_params(q, root, scale, offset, pfull)
    nlp = 3 * nl
    for i in range(n):
        s = int(segv[i])
        t = lam[i] - seg_ref[s]
        base = nlp + s * nbg
        f = 0.0
        tk = 1.0
        for k in range(nbg):
            f += pfull[base + k] * tk
            tk *= t
        fv[i] = f
    for ln in range(nl):
        amp = pfull[3 * ln]
        if amp == 0.0:
            continue
        cen = pfull[3 * ln + 1]
        wid = pfull[3 * ln + 2]
        inv = 1.0 / wid
        i0, i1 = _line_range(lam, n, ascending, cen, wid, _REACH)
        for i in range(i0, i1):
            z = (lam[i] - cen) * inv
            fv[i] += amp * math.exp(-0.5 * z * z)
    chi2 = 0.0
    for i in range(n):
        r = (yv[i] - fv[i]) * wv[i]
        fv[i] = r
        chi2 += r * r
    return chi2


@_jit
def _jacobian(
    q, n, lam, wv, segv, nl, nbg, seg_ref, root, scale, offset, pfull, fv, jmat, clo, chi,
    jtj, jtr, ascending,
):  # fmt: skip
    """J^T J (lower triangle) and J^T r at q, with r the residuals left in fv by `_chi2`.

    J (one row of jmat per free parameter) is the Jacobian of the weighted model. Each free
    parameter's row is non-zero only on [clo, chi) (its lines' reach; the whole range for
    background terms): only that range is cleared and summed, and pairs of parameters whose
    ranges do not overlap (lines far apart) cost nothing.
    """
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
        wid = pfull[3 * ln + 2]
        inv = 1.0 / wid
        i0, i1 = _line_range(lam, n, ascending, cen, wid, _REACH)
        # d/dA = g, d/dc = A g z / w, d/dw = A g z^2 / w, with z = (x - c) / w
        ra = int(root[3 * ln])
        rc = int(root[3 * ln + 1])
        rw = int(root[3 * ln + 2])
        if ra >= 0:
            sa = scale[3 * ln]
            ja = jmat[ra]
            for i in range(i0, i1):
                z = (lam[i] - cen) * inv
                ja[i] += sa * math.exp(-0.5 * z * z) * wv[i]
        if rc >= 0 or rw >= 0:
            sc = scale[3 * ln + 1] * amp * inv if rc >= 0 else 0.0
            sw = scale[3 * ln + 2] * amp * inv if rw >= 0 else 0.0
            jc = jmat[max(rc, 0)]
            jw = jmat[max(rw, 0)]
            if rc >= 0 and rw >= 0:
                for i in range(i0, i1):
                    z = (lam[i] - cen) * inv
                    gz = math.exp(-0.5 * z * z) * wv[i] * z
                    jc[i] += sc * gz
                    jw[i] += sw * gz * z
            elif rc >= 0:
                for i in range(i0, i1):
                    z = (lam[i] - cen) * inv
                    jc[i] += sc * math.exp(-0.5 * z * z) * wv[i] * z
            else:
                for i in range(i0, i1):
                    z = (lam[i] - cen) * inv
                    jw[i] += sw * math.exp(-0.5 * z * z) * wv[i] * z * z
    for i in range(n):
        s = int(segv[i])
        t = lam[i] - seg_ref[s]
        base = nlp + s * nbg
        tk = wv[i]
        for k in range(nbg):
            r = int(root[base + k])
            if r >= 0:
                jmat[r, i] += scale[base + k] * tk
            tk *= t
    for a in range(nfree):
        ja = jmat[a]
        la = int(clo[a])
        ha = int(chi[a])
        for b in range(a + 1):
            lo = max(la, int(clo[b]))
            hi = min(ha, int(chi[b]))
            jtj[a, b] = _dot(ja, jmat[b], lo, hi) if hi > lo else 0.0
        jtr[a] = _dot(ja, fv, la, ha)


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
    return (7 + nfree) * nw + 10 * nfree + 4 * nfree * nfree + nfull


@_jit
def _compact(y, err, wave, photon, floor, spec, work):
    """Copy the valid samples into work (float64); return their number.

    Valid: finite data, wavelength and error, error > 0, inside a background segment.
    Layout: wavelength, data, 1/error, segment index, photon and floor noise terms, each in a
    block of len(y). This is the only part compiled once per data dtype.
    """
    nseg = int(spec[SPEC_N_SEGMENTS])
    seg_min = spec[SPEC_HEADER : SPEC_HEADER + nseg]
    seg_max = spec[SPEC_HEADER + nseg : SPEC_HEADER + 2 * nseg]
    nw = y.shape[0]
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
        work[n] = x
        work[nw + n] = yi
        work[2 * nw + n] = 1.0 / ei
        work[3 * nw + n] = s
        work[4 * nw + n] = photon[i]
        work[5 * nw + n] = floor[i]
        n += 1
    return n


@_jit
def _moments(
    q, n, lam, yv, wv, segv, nl, nbg, seg_ref, root, scale, offset, pfull, fv, lower, upper,
    ascending,
):  # fmt: skip
    """Per-pixel centroid and width of isolated lines from the moments of their excess.

    The excess is the data minus the rest of the model (background and the other lines) in
    a window of +-_MOMENT_REACH widths; only positive excess counts. A line is changed only
    if its centroid and width are free and its own (not tied), no other line is near, and
    the excess is significant. Returns the number of lines changed.
    """
    nfree = q.shape[0]
    changed = 0
    _chi2(q, n, lam, yv, wv, segv, nl, nbg, seg_ref, root, scale, offset, pfull, fv, ascending)
    # fv now holds (y - model) / sigma at q
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
            own_model = amp * math.exp(-0.5 * z * z)
            e = fv[i] / wv[i] + own_model  # data minus the rest of the model
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
            e = fv[i] / wv[i] + amp * math.exp(-0.5 * z * z)
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
def _linear_solve(q, q_try, jtj, jtr, amat, rhs, delta, keep, free_kind, lower, upper, nfree):
    """q_try: q with amplitudes and background at their linear least-squares values.

    One Gauss-Newton step restricted to the linear parameters (the model is linear in them,
    so the step is exact), from the J^T J, J^T r at q. Amplitudes that come out on their
    lower bound start one rough sigma above it so that centroid and width keep a gradient.
    Returns False if the linear system is singular.
    """
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
            q_try[f] = q[f]
            continue
        v = q[f] + delta[f]
        if int(free_kind[f]) == 0 and lower[f] > -math.inf and v <= lower[f]:
            v = lower[f] + 1.0 / math.sqrt(max(jtj[f, f], 1e-300))
        q_try[f] = min(max(v, lower[f]), upper[f])
    return True


@_jit
def _iterate(
    q, chi2, n, lam, yv, wv, segv, nl, nbg, seg_ref, root, scale, offset, pfull, fv, jmat,
    clo, chi, jtj, jtr, q_try, delta, rhs, frozen, amat, lower, upper, max_iter, ftol, xtol,
    ascending,
):  # fmt: skip
    """Bounded Levenberg-Marquardt from q (jtj, jtr, fv already at q).

    Returns (status, iterations, chi2); on return q, fv, jtj and jtr belong to the same point.
    Trial points cost one chi2 evaluation; J is rebuilt only at accepted points.
    """
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
            frozen[f] = 0.0 if frz else 1.0  # 1.0: free to move (a keep flag)
        accepted = False
        converged_now = False
        first_try = True
        dchi = 0.0
        lam_used = lmb
        chi2_try = chi2
        while lmb <= _LAMBDA_MAX:
            for a in range(nfree):
                if frozen[a] == 0.0:
                    for b in range(a + 1):
                        amat[a, b] = 0.0
                    amat[a, a] = 1.0
                    rhs[a] = 0.0
                    continue
                for b in range(a):
                    amat[a, b] = 0.0 if frozen[b] == 0.0 else jtj[a, b]
                amat[a, a] = jtj[a, a] + lmb * max(jtj[a, a], floor)
                rhs[a] = jtr[a]
            if _cholesky(amat, nfree, frozen) < 0:
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
                    s2 = max(chi2 / dof, 1e-300)
                    pred = _predicted_decrease(q, q_try, jtj, jtr, nfree)
                    small_step = True
                    for a in range(nfree):
                        da = q_try[a] - q[a]
                        if da * da * jtj[a, a] > xtol * xtol * s2:
                            small_step = False
                    if pred <= ftol * s2 or small_step:
                        converged_now = True
                        break
                first_try = False
                chi2_try = _chi2(
                    q_try, n, lam, yv, wv, segv, nl, nbg, seg_ref, root, scale, offset, pfull,
                    fv, ascending,
                )  # fmt: skip
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
            # machine precision; from the start it is not a verified minimum. fv was
            # overwritten by the rejected trials: restore it (and jtj, jtr are still at q).
            _chi2(q, n, lam, yv, wv, segv, nl, nbg, seg_ref, root, scale, offset, pfull, fv,
                  ascending)  # fmt: skip
            status = _ST_CONVERGED if n_accepted > 0 else _ST_NO_STEP
            break
        n_accepted += 1
        for a in range(nfree):
            delta[a] = q_try[a] - q[a]  # the step taken
            q[a] = q_try[a]
        chi2 = chi2_try
        _jacobian(q, n, lam, wv, segv, nl, nbg, seg_ref, root, scale, offset, pfull, fv, jmat,
                  clo, chi, jtj, jtr, ascending)  # fmt: skip
        s2 = max(chi2 / dof, 1e-300)
        small_step = True
        for f in range(nfree):
            if delta[f] * delta[f] * jtj[f, f] > xtol * xtol * s2:
                small_step = False
        if lam_used <= 1.0 and (dchi <= ftol * s2 or small_step):
            status = _ST_CONVERGED
            break
    return status, n_iter, chi2


@_jit
def _reweight(n, yv, wv, pv, bv, fv):
    """Weights 1/sigma with sigma**2 = photon * max(model, 0) + floor, model = y - r sigma.

    fv must hold the weighted residuals of the current fit; samples whose noise terms are
    not finite (or give sigma <= 0) keep their weight. Returns the number reweighted.
    """
    count = 0
    for i in range(n):
        p = pv[i]
        b = bv[i]
        if not (math.isfinite(p) and math.isfinite(b)):
            continue
        model = yv[i] - fv[i] / wv[i]
        var = p * max(model, 0.0) + b
        if var > 0.0 and math.isfinite(var):
            wv[i] = 1.0 / math.sqrt(var)
            count += 1
    return count


@_jit
def _significance(q, jtj, amat, rhs, delta, keep, free_kind, nfree, factor, root, nl, sig):
    """Per line: amplitude / sigma(amplitude | centroids and widths fixed).

    The linear block of J^T J (amplitudes and background) is factored; the variance of a
    free amplitude is the diagonal of its inverse, ``|L^-1 e_r|^2``. For a linear least
    squares problem, (amplitude / sigma)**2 is exactly the chi2 increase when the line is
    removed and the other linear parameters are refit. NaN for fixed amplitudes.
    """
    for f in range(nfree):
        kind = int(free_kind[f])
        keep[f] = 1.0 if (kind == 0 or kind == 3) else 0.0
    _factor_kept(jtj, amat, keep, nfree)
    for ln in range(nl):
        sig[ln] = np.nan
        r = int(root[3 * ln])
        if r < 0 or keep[r] == 0.0:
            continue
        # forward solve L x = e_r; x is zero above r
        for i in range(nfree):
            delta[i] = 0.0
        delta[r] = 1.0 / amat[r, r]
        for i in range(r + 1, nfree):
            if keep[i] == 0.0:
                continue
            s = 0.0
            for k in range(r, i):
                s -= amat[i, k] * delta[k]
            delta[i] = s / amat[i, i]
        var = 0.0
        for i in range(r, nfree):
            var += delta[i] * delta[i]
        var *= factor
        sig[ln] = q[r] / math.sqrt(var) if var > 0.0 else np.nan


@_jit
def _fit_pixel(work, nw, n, p0, spec, out):
    """Fit the n valid samples put into work by `_compact`; write the packed results.

    Never raises for bad data: failures are status codes with NaN parameters.
    """
    nl = int(spec[SPEC_N_LINES])
    nbg = int(spec[SPEC_DEGREE]) + 1
    nseg = int(spec[SPEC_N_SEGMENTS])
    nfree = int(spec[SPEC_N_FREE])
    max_iter = int(spec[SPEC_MAX_ITER])
    ftol = spec[SPEC_FTOL]
    xtol = spec[SPEC_XTOL]
    min_valid = int(spec[SPEC_MIN_VALID])
    scale_errors = spec[SPEC_SCALE_ERRORS] != 0.0
    rescale = spec[SPEC_RESCALE] != 0.0
    moments = spec[SPEC_MOMENTS] != 0.0
    reweight = spec[SPEC_REWEIGHT] != 0.0
    full_cov = spec[SPEC_FULL_COV] != 0.0
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

    # packed output offsets (same order as _PACKED_BLOCKS)
    o_err = nfull
    o_cov = 2 * nfull
    o_sig = o_cov + 3 * nl
    o_bound = o_sig + nl
    o_det = o_bound + nl
    o_chi2 = o_det + nl
    o_fullcov = o_chi2 + 4
    for k in range(o_chi2 + 1):
        out[k] = np.nan
    out[o_chi2 + 1] = 0.0
    if full_cov:
        for k in range(nfree * nfree):
            out[o_fullcov + k] = np.nan

    # views into the scratch array (layout: see _work_size and _compact)
    nf2 = nfree * nfree
    lam = work[0:nw]
    yv = work[nw : 2 * nw]
    wv = work[2 * nw : 3 * nw]
    segv = work[3 * nw : 4 * nw]
    pv = work[4 * nw : 5 * nw]
    bv = work[5 * nw : 6 * nw]
    fv = work[6 * nw : 7 * nw]
    jmat = work[7 * nw : (7 + nfree) * nw].reshape((nfree, nw))
    o = (7 + nfree) * nw
    q = work[o : o + nfree]
    q_try = work[o + nfree : o + 2 * nfree]
    delta = work[o + 2 * nfree : o + 3 * nfree]
    jtr = work[o + 3 * nfree : o + 4 * nfree]
    rhs = work[o + 4 * nfree : o + 5 * nfree]
    frozen = work[o + 5 * nfree : o + 6 * nfree]
    keep = work[o + 6 * nfree : o + 7 * nfree]
    clo = work[o + 7 * nfree : o + 8 * nfree]
    chi = work[o + 8 * nfree : o + 9 * nfree]
    o += 10 * nfree
    jtj = work[o : o + nf2].reshape((nfree, nfree))
    amat = work[o + nf2 : o + 2 * nf2].reshape((nfree, nfree))
    cov = work[o + 2 * nf2 : o + 3 * nf2].reshape((nfree, nfree))
    pfull = work[o + 4 * nf2 : o + 4 * nf2 + nfull]

    out[o_chi2 + 2] = n
    if n == 0:
        out[o_chi2 + 3] = _ST_ALL_NAN
        return
    if n < min_valid or n <= nfree:
        out[o_chi2 + 3] = _ST_TOO_FEW
        return
    ascending = True
    for i in range(1, n):
        if not lam[i] > lam[i - 1]:
            ascending = False
            break

    # ---- start: initial values in the bounds, moments, linear solve
    for f in range(nfree):
        v = p0[int(free_root[f])]
        if not math.isfinite(v):
            out[o_chi2 + 3] = _ST_BAD_INITIAL
            return
        q[f] = min(max(v, lower[f]), upper[f])
    chi2 = _chi2(q, n, lam, yv, wv, segv, nl, nbg, seg_ref, root, scale, offset, pfull, fv,
                 ascending)  # fmt: skip
    if not math.isfinite(chi2):
        out[o_chi2 + 3] = _ST_BAD_INITIAL
        return
    _jacobian(q, n, lam, wv, segv, nl, nbg, seg_ref, root, scale, offset, pfull, fv, jmat,
              clo, chi, jtj, jtr, ascending)  # fmt: skip
    if rescale and _linear_solve(q, q_try, jtj, jtr, amat, rhs, delta, keep, free_kind, lower,
                                 upper, nfree):  # fmt: skip
        for f in range(nfree):
            q[f] = q_try[f]
        if moments and _moments(q, n, lam, yv, wv, segv, nl, nbg, seg_ref, root, scale, offset,
                                pfull, fv, lower, upper, ascending) > 0:  # fmt: skip
            _chi2(q, n, lam, yv, wv, segv, nl, nbg, seg_ref, root, scale, offset, pfull, fv,
                  ascending)  # fmt: skip
            _jacobian(q, n, lam, wv, segv, nl, nbg, seg_ref, root, scale, offset, pfull, fv,
                      jmat, clo, chi, jtj, jtr, ascending)  # fmt: skip
            if _linear_solve(q, q_try, jtj, jtr, amat, rhs, delta, keep, free_kind, lower,
                             upper, nfree):  # fmt: skip
                for f in range(nfree):
                    q[f] = q_try[f]
        chi2_start = _chi2(q, n, lam, yv, wv, segv, nl, nbg, seg_ref, root, scale, offset,
                           pfull, fv, ascending)  # fmt: skip
        if math.isfinite(chi2_start):
            chi2 = chi2_start
            _jacobian(q, n, lam, wv, segv, nl, nbg, seg_ref, root, scale, offset, pfull, fv,
                      jmat, clo, chi, jtj, jtr, ascending)  # fmt: skip
        else:  # keep the clipped initial values
            for f in range(nfree):
                q[f] = min(max(p0[int(free_root[f])], lower[f]), upper[f])
            chi2 = _chi2(q, n, lam, yv, wv, segv, nl, nbg, seg_ref, root, scale, offset,
                         pfull, fv, ascending)  # fmt: skip
            _jacobian(q, n, lam, wv, segv, nl, nbg, seg_ref, root, scale, offset, pfull, fv,
                      jmat, clo, chi, jtj, jtr, ascending)  # fmt: skip

    # ---- iterate (and once more with weights from the model)
    status, n_iter, chi2 = _iterate(
        q, chi2, n, lam, yv, wv, segv, nl, nbg, seg_ref, root, scale, offset, pfull, fv, jmat,
        clo, chi, jtj, jtr, q_try, delta, rhs, frozen, amat, lower, upper, max_iter, ftol,
        xtol, ascending,
    )  # fmt: skip
    if reweight and _reweight(n, yv, wv, pv, bv, fv) > 0:
        chi2 = _chi2(q, n, lam, yv, wv, segv, nl, nbg, seg_ref, root, scale, offset, pfull,
                     fv, ascending)  # fmt: skip
        _jacobian(q, n, lam, wv, segv, nl, nbg, seg_ref, root, scale, offset, pfull, fv, jmat,
                  clo, chi, jtj, jtr, ascending)  # fmt: skip
        status2, n_iter2, chi2 = _iterate(
            q, chi2, n, lam, yv, wv, segv, nl, nbg, seg_ref, root, scale, offset, pfull, fv,
            jmat, clo, chi, jtj, jtr, q_try, delta, rhs, frozen, amat, lower, upper,
            max_iter, ftol, xtol, ascending,
        )  # fmt: skip
        n_iter += n_iter2
        if status2 != _ST_NO_STEP or status == _ST_NO_STEP:
            status = status2
    dof = n - nfree
    out[o_chi2] = chi2 / dof
    out[o_chi2 + 1] = n_iter
    factor = max(chi2 / dof, 0.0) if scale_errors else 1.0
    _full_params(q, root, scale, offset, pfull)

    # ---- covariance over the identifiable free parameters
    any_bound = False
    for f in range(nfree):
        at = q[f] <= lower[f] or q[f] >= upper[f]
        keep[f] = 0.0 if at else 1.0
        any_bound = any_bound or at
        kind = int(free_kind[f])
        if not at and (kind == 1 or kind == 2):
            # a centroid or width is identifiable only through a line of non-zero amplitude
            ident = False
            for ln in range(nl):
                if int(root[3 * ln + kind]) == f and pfull[3 * ln] != 0.0:
                    ident = True
            if not ident:
                keep[f] = 0.0
    singular = _factor_kept(jtj, amat, keep, nfree) > 0
    for f in range(nfree):
        for a in range(nfree):
            rhs[a] = 0.0
        rhs[f] = 1.0
        _cholesky_solve(amat, rhs, delta, nfree)
        for a in range(nfree):
            cov[a, f] = delta[a] if (keep[a] != 0.0 and keep[f] != 0.0) else np.nan
    if status == _ST_CONVERGED and any_bound:
        status = _ST_AT_BOUND
    if singular and (status == _ST_CONVERGED or status == _ST_AT_BOUND):
        status = _ST_SINGULAR
    out[o_chi2 + 3] = status

    # ---- pack
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
    _significance(q, jtj, amat, rhs, delta, keep, free_kind, nfree, factor, root, nl,
                  out[o_sig : o_sig + nl])  # fmt: skip
    for ln in range(nl):
        if pfull[3 * ln] == 0.0:
            out[o_sig + ln] = 0.0
        out[o_det + ln] = 1.0 if out[o_sig + ln] >= spec[SPEC_DETECTION] else 0.0


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
    status_at = 2 * nfull + 6 * nl + 3
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
