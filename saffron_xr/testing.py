"""Testing helpers: a compute-counting scheduler, the test-data folders, synthetic files.

Public helpers here are used by the test-suite and the benchmarks, and are useful to users
who want to check a fitting setup against known truth.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import dask
import numpy as np

# the synthetic-file generator is its own module (the demo and notebooks use it too); it is
# re-exported here for the tests and benchmarks
from .synthetic import composition_windows, make_spectra, make_spice_l2

__all__ = [
    "raise_if_dask_computes",
    "shared_data_dir",
    "chianti_dir",
    "make_spice_l2",
    "make_spectra",
    "composition_windows",
    "gaussian_lines",
    "gaussian_lines_jacobian",
]


class _CountingScheduler:
    """A dask scheduler that counts calls and fails after ``max_computes`` of them."""

    def __init__(self, max_computes: int = 0):
        self.total_computes = 0
        self.max_computes = max_computes

    def __call__(self, dsk, keys, **kwargs):
        self.total_computes += 1
        if self.total_computes > self.max_computes:
            raise RuntimeError(
                f"Too many dask computations were scheduled: {self.total_computes} "
                f"(allowed: {self.max_computes})"
            )
        return dask.get(dsk, keys, **kwargs)


@contextlib.contextmanager
def raise_if_dask_computes(max_computes: int = 0):
    """Context manager that fails if dask computes more than ``max_computes`` times.

    Use it around graph-building calls to prove they are lazy.

    Examples
    --------
    >>> import dask.array as da
    >>> x = da.ones(4, chunks=2)
    >>> with raise_if_dask_computes():
    ...     y = x + 1
    """
    scheduler = _CountingScheduler(max_computes)
    with dask.config.set(scheduler=scheduler):
        yield scheduler


def _folder_from_env(variable: str, what: str, example: str) -> Path:
    """The folder named by the environment variable ``variable``; clear error when unset."""
    value = os.environ.get(variable, "").strip()
    if not value:
        raise RuntimeError(
            f"{variable} is not set: it must name the folder of {what}; set it before running, "
            f"e.g. `export {variable}={example}` (.ci/run sets it to the folder beside the "
            "repository)"
        )
    return Path(value)


def shared_data_dir() -> Path:
    """The folder of real SPICE test data, named by ``$SAFFRON_TEST_DATA``.

    Returns
    -------
    pathlib.Path
        The folder (not checked for existence).

    Raises
    ------
    RuntimeError
        If ``SAFFRON_TEST_DATA`` is unset or empty; the message says how to set it.
    """
    return _folder_from_env(
        "SAFFRON_TEST_DATA",
        "real SPICE test data (with a spice/ sub-folder)",
        "/path/to/shared/data",
    )


def chianti_dir() -> Path:
    """The CHIANTI database folder, named by ``$XUVTOP``.

    Returns
    -------
    pathlib.Path
        The folder (not checked for existence).

    Raises
    ------
    RuntimeError
        If ``XUVTOP`` is unset or empty; the message says how to set it.
    """
    return _folder_from_env(
        "XUVTOP", "the CHIANTI database (with a masterlist/ sub-folder)", "/path/to/shared/chianti"
    )


def gaussian_lines(x, p, n_lines: int, degree: int, ref: float) -> np.ndarray:
    """A plain numpy model to check fits against: ``n_lines`` Gaussians (amplitude,
    centroid, sigma in ``p[3k:3k+3]``) plus a polynomial of ``degree`` in ``x - ref``
    (coefficients after the lines). Independent of the package's numba kernels."""
    y = np.zeros_like(x, dtype=float)
    for k in range(n_lines):
        y = y + p[3 * k] * np.exp(-0.5 * ((x - p[3 * k + 1]) / p[3 * k + 2]) ** 2)
    for d in range(degree + 1):
        y = y + p[3 * n_lines + d] * (x - ref) ** d
    return y


def gaussian_lines_jacobian(x, p, n_lines: int, degree: int, ref: float) -> np.ndarray:
    """d `gaussian_lines` / d p, written out by hand: shape (samples, parameters)."""
    out = np.empty((np.size(x), len(p)))
    for k in range(n_lines):
        a, c, w = p[3 * k : 3 * k + 3]
        z = (x - c) / w
        g = np.exp(-0.5 * z * z)
        out[:, 3 * k] = g
        out[:, 3 * k + 1] = a * g * z / w
        out[:, 3 * k + 2] = a * g * z * z / w
    for d in range(degree + 1):
        out[:, 3 * n_lines + d] = (x - ref) ** d
    return out
