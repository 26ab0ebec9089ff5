"""Data shipped inside the package (see ``saffron_xr/data/ORIGIN.md``)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

NE8_WINDOW_FILE = "solo_L2_spice-n-ras_20220317T002536_V03_100663832-017_ne8-770-window.fits"


def ne8_window_path() -> Path:
    """Path of the real SPICE Ne VIII 770 window shipped with the package.

    One L2 window (shape t=1, wavelength=50, y=832, x=3) of raster 17 of SPIOBSID
    100663832 (2022-03-17), data and header unchanged.

    Returns
    -------
    pathlib.Path
        Absolute path of the FITS file.

    Examples
    --------
    >>> ne8_window_path().name
    'solo_L2_spice-n-ras_20220317T002536_V03_100663832-017_ne8-770-window.fits'
    """
    return Path(str(files("saffron_xr") / "data" / NE8_WINDOW_FILE))
