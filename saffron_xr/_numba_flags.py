"""Compile settings shared by the package's numba code (read from the environment once).

``SAFFRON_NUMBA_CACHE`` (default on) keeps compiled functions in numba's on-disk cache so
that a fresh process starts warm; ``SAFFRON_NUMBA_FASTMATH`` (default off) is read by the
fit kernels only. Importing this module does not import numba.
"""

from __future__ import annotations

import os


def env_flag(name: str, default: bool) -> bool:
    """The boolean environment setting ``name`` ("1", "true", "yes", "on"), else default."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    return value in ("1", "true", "yes", "on")


#: numba's on-disk cache of compiled functions
CACHE = env_flag("SAFFRON_NUMBA_CACHE", True)
