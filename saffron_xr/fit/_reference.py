"""Slow, obviously-correct reference fit of one spectrum with ``scipy.optimize.least_squares``.

Used by the tests and the benchmark to check the numba kernel. It shares only the model's
tie map (``full = T @ free + c``) with the kernel; the model function is written out in
numpy here, and the Jacobian is left to scipy's finite differences.
"""

from __future__ import annotations

import numpy as np

from .model import LineModel
from .profiles import gaussian

__all__ = ["fit_reference", "evaluate_model"]


def evaluate_model(full, wavelength, compiled) -> np.ndarray:
    """Model spectrum (lines + background) for a full parameter vector.

    Parameters
    ----------
    full : array-like
        Full parameter vector (see ``LineModel.compile``).
    wavelength : array-like
        Angstrom.
    compiled : CompiledModel

    Returns
    -------
    numpy.ndarray
        NaN outside every background segment.
    """
    full = np.asarray(full, dtype=float)
    lam = np.asarray(wavelength, dtype=float)
    out = np.zeros_like(lam)
    for ln in range(compiled.n_lines):
        amp, cen, wid = full[3 * ln : 3 * ln + 3]
        out += gaussian(lam, amp, cen, wid)
    nbg = compiled.degree + 1
    bg = np.full_like(lam, np.nan)
    for s in range(compiled.n_segments):
        inside = (lam >= compiled.segment_min[s]) & (lam <= compiled.segment_max[s])
        coef = full[3 * compiled.n_lines + s * nbg : 3 * compiled.n_lines + (s + 1) * nbg]
        t = lam[inside] - compiled.segment_reference[s]
        bg[inside] = sum(c * t**k for k, c in enumerate(coef))
    return out + bg


def fit_reference(
    wavelength,
    data,
    error,
    model: LineModel,
    *,
    initial=None,
    scale_errors: bool = False,
    wavelength_grid=None,
) -> dict:
    """Fit one spectrum with ``least_squares`` (trf, bounds, 3-point Jacobian).

    Parameters
    ----------
    wavelength, data, error : array-like
        One spectrum (Angstrom, data units, 1-sigma). NaN samples, non-positive or
        non-finite errors and samples outside the segments are dropped.
    model : LineModel
    initial : array-like, optional
        Full initial parameter vector (default: the model's scalar initial values, zero
        background).
    scale_errors : bool
        Scale the covariance by the reduced chi2.
    wavelength_grid : array-like, optional
        Grid that fixes the background reference (default `wavelength`), so that results
        compare with a ``fit_lines`` run on that grid.

    Returns
    -------
    dict
        ``params``, ``errors`` (full vectors), ``cov`` (full covariance ``T C T^T``),
        ``chi2`` (reduced), ``n_valid``, ``success`` (scipy's), ``free``.
    """
    from scipy.optimize import least_squares

    lam = np.asarray(wavelength, dtype=float)
    y = np.asarray(data, dtype=float)
    sig = np.asarray(error, dtype=float) if error is not None else np.ones_like(y)
    c = model.compile(lam if wavelength_grid is None else wavelength_grid)
    inside = np.zeros(lam.shape, bool)
    for s in range(c.n_segments):
        inside |= (lam >= c.segment_min[s]) & (lam <= c.segment_max[s])
    good = np.isfinite(lam) & np.isfinite(y) & np.isfinite(sig) & (sig > 0) & inside
    lam, y, sig = lam[good], y[good], sig[good]
    t, const = c.transform, c.constant
    if initial is None:
        initial = np.array([0.0 if v is None or np.ndim(v) else v for v in c.initial], float)
    q0 = np.clip(c.free_from_full(initial), c.free_lower, c.free_upper)
    q0 = np.where(q0 == c.free_lower, q0 + 1e-9 * np.maximum(abs(q0), 1), q0)
    q0 = np.where(q0 == c.free_upper, q0 - 1e-9 * np.maximum(abs(q0), 1), q0)

    soft = c.free_soft_inv > 0

    def residuals(q):
        r = (y - evaluate_model(t @ q + const, lam, c)) / sig
        if not soft.any():
            return r
        # the soft lower bounds as pseudo-residuals (see LineModel.set_soft_min_width)
        below = np.maximum(c.free_soft_min[soft] - q[soft], 0.0) * c.free_soft_inv[soft]
        return np.concatenate([r, below])

    res = least_squares(
        residuals,
        q0,
        jac="3-point",
        bounds=(c.free_lower, c.free_upper),
        method="trf",
        x_scale="jac",
        ftol=1e-14,
        xtol=1e-14,
        gtol=1e-14,
        max_nfev=20000,
    )
    n, nfree = y.size, c.n_free
    chi2 = float(np.sum(res.fun[:n] ** 2) / (n - nfree))  # the data's chi2 alone
    jac = res.jac
    try:
        cov_free = np.linalg.inv(jac.T @ jac)
    except np.linalg.LinAlgError:
        cov_free = np.full((nfree, nfree), np.nan)
        res.success = False
    if scale_errors:
        cov_free = cov_free * chi2
    cov = t @ cov_free @ t.T
    return {
        "params": t @ res.x + const,
        "errors": np.sqrt(np.clip(np.diag(cov), 0, None)),
        "cov": cov,
        "chi2": chi2,
        "n_valid": int(n),
        "success": bool(res.success),
        "free": res.x,
    }
