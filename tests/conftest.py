"""Shared fixtures: real SPICE data from ``../shared`` and the CHIANTI subset.

The package itself finds them only through ``$SAFFRON_TEST_DATA`` and ``$XUVTOP``; the test
suite defaults both to the ``shared`` folder beside the repository, so that README's test
command works on a fresh clone without exporting anything.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from saffron_xr.testing import chianti_dir, shared_data_dir

_SHARED = Path(__file__).resolve().parents[2] / "shared"
os.environ.setdefault("SAFFRON_TEST_DATA", str(_SHARED / "data"))
os.environ.setdefault("XUVTOP", str(_SHARED / "chianti"))


NE8_NAME = "solo_L2_spice-n-ras_20220317T002536_V03_100663832-017_ne8-770-window.fits"
EXP_NAME = "solo_L2_spice-n-exp_20240101T213346_V02_234881027-000.fits"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of real SPICE data (``$SAFFRON_TEST_DATA``, default ``../shared/data``)."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.fail(f"real SPICE data folder {path} is absent (set SAFFRON_TEST_DATA)")
    return path


@pytest.fixture(scope="session")
def spice_dir(shared_data) -> Path:
    return shared_data / "spice"


@pytest.fixture(scope="session")
def ne8_file(spice_dir) -> Path:
    """The real Ne VIII 770 window (one HDU, shape (1, 50, 832, 3))."""
    return spice_dir / NE8_NAME


@pytest.fixture(scope="session")
def exp_file(spice_dir) -> Path:
    """The complete real two-window single-exposure L2 file."""
    return spice_dir / EXP_NAME


@pytest.fixture(scope="session")
def xuvtop() -> Path:
    """The CHIANTI subset folder (``$XUVTOP``, default ``../shared/chianti``)."""
    path = chianti_dir()
    if not (path / "masterlist").is_dir():
        pytest.fail(f"CHIANTI folder {path} is absent (set XUVTOP)")
    return path
