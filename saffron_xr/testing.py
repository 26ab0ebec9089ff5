"""Testing helpers: a compute-counting scheduler and synthetic SPICE L2 files with truth.

Public helpers here are used by the test-suite and the benchmarks, and are useful to users
who want to check a fitting setup against known truth.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import dask

__all__ = ["raise_if_dask_computes", "shared_data_dir", "chianti_dir"]


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


def shared_data_dir() -> Path:
    """The folder of real SPICE test data: ``$SAFFRON_TEST_DATA`` or ``../shared/data``.

    ``../shared/data`` is resolved relative to the repository root (the parent of the
    ``saffron_xr`` package folder).
    """
    env = os.environ.get("SAFFRON_TEST_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def chianti_dir() -> Path:
    """The CHIANTI database folder: ``$XUVTOP`` or ``../shared/chianti``."""
    env = os.environ.get("XUVTOP")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "chianti"


# the synthetic-file generator lives in its own module (the demo and notebooks use it too)
from .synthetic import composition_windows, make_spectra, make_spice_l2  # noqa: E402

__all__ += ["make_spice_l2", "make_spectra", "composition_windows"]
