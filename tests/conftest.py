"""Shared fixtures: real SPICE data from ``../shared`` and the CHIANTI subset."""

from __future__ import annotations

from pathlib import Path

import pytest

from saffron_xr.testing import chianti_dir, shared_data_dir

NE8_NAME = "solo_L2_spice-n-ras_20220317T002536_V03_100663832-017_ne8-770-window.fits"
EXP_NAME = "solo_L2_spice-n-exp_20240101T213346_V02_234881027-000.fits"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of real SPICE data (``$SAFFRON_TEST_DATA``, default ``../shared/data``)."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"real SPICE data folder {path} is absent (set SAFFRON_TEST_DATA)")
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
        pytest.skip(f"CHIANTI folder {path} is absent (set XUVTOP)")
    return path
