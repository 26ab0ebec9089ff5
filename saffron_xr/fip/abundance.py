"""Elemental abundance sets (CHIANTI ``.abund`` files) and first ionisation potentials.

A set is looked up by CHIANTI name (``"archive/sun_photospheric_2007_grevesse"``, relative to
``$XUVTOP/abundance``) or by file path. The sets of the CHIANTI subset the package is tested
against are stored in the shipped contribution-function table, so the default sets work
without a CHIANTI install.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xarray as xr

__all__ = [
    "read_abundance",
    "DEFAULT_PHOTOSPHERIC",
    "DEFAULT_CORONAL",
    "FIRST_IONISATION_POTENTIAL",
    "element_of",
]

#: Photospheric abundances the FIP bias is measured against by default.
DEFAULT_PHOTOSPHERIC = "archive/sun_photospheric_2007_grevesse"
#: A coronal set, for forward models of coronal plasma.
DEFAULT_CORONAL = "archive/sun_coronal_1992_feldman_ext"

ELEMENTS = (
    "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne", "Na", "Mg", "Al", "Si", "P", "S",
    "Cl", "Ar", "K", "Ca", "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn",
)  # fmt: skip

#: First ionisation potentials (eV, NIST / CHIANTI ``ip/chianti.ip``) of the elements that
#: have lines in the SPICE range.
FIRST_IONISATION_POTENTIAL = {
    "H": 13.598, "He": 24.587, "C": 11.260, "N": 14.534, "O": 13.618, "Ne": 21.565,
    "Na": 5.139, "Mg": 7.646, "Al": 5.986, "Si": 8.152, "S": 10.360, "Ar": 15.760,
    "Ca": 6.113, "Fe": 7.902, "Ni": 7.640,
}  # fmt: skip


def element_of(ion: str) -> str:
    """Element symbol of a CHIANTI ion name (``"ne_8"`` -> ``"Ne"``).

    Parameters
    ----------
    ion : str
        CHIANTI-style ion name, e.g. ``"fe_12"``.

    Returns
    -------
    str
        The element symbol, capitalised as in :data:`ELEMENTS`.

    Raises
    ------
    ValueError
        If the prefix is not an element from H to Zn.
    """
    symbol = ion.split("_")[0].capitalize()
    if symbol not in ELEMENTS:
        raise ValueError(f"ion {ion!r}: unknown element {symbol!r}")
    return symbol


def _parse_abund(path: Path) -> np.ndarray:
    """Abundances relative to H (linear) for Z = 1..30 from a CHIANTI ``.abund`` file."""
    values = np.zeros(len(ELEMENTS))
    with open(path) as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "-1":
                break
            try:
                z, log_ab = int(parts[0]), float(parts[1])
            except (ValueError, IndexError):
                raise ValueError(f"{path}: unreadable abundance line {line.strip()!r}") from None
            if 1 <= z <= len(ELEMENTS):
                values[z - 1] = 10.0 ** (log_ab - 12.0)
    if values[0] == 0:
        raise ValueError(f"{path}: no hydrogen entry; not a CHIANTI abundance file")
    return values / values[0]


def _abundance_da(values, name, source) -> xr.DataArray:
    return xr.DataArray(
        np.asarray(values, dtype=float),
        dims="element",
        coords={"element": list(ELEMENTS)},
        name="abundance",
        attrs={
            "units": "1",
            "long_name": "number abundance relative to hydrogen",
            "abundance_set": name,
            "source": source,
        },
    )


def read_abundance(name: str = DEFAULT_PHOTOSPHERIC, *, xuvtop=None) -> xr.DataArray:
    """Read an elemental abundance set.

    Parameters
    ----------
    name : str or path-like
        A ``.abund`` file path, or a CHIANTI abundance name relative to
        ``$XUVTOP/abundance`` with its subfolder (``"archive/sun_coronal_1992_feldman_ext"``,
        ``"sun_photospheric_2021_asplund"``).
    xuvtop : str or path-like, optional
        CHIANTI database folder. Looked up, in order: a file path; ``xuvtop``; the sets stored
        in the shipped contribution table; ``$XUVTOP``.

    Returns
    -------
    xarray.DataArray
        ``abundance`` over dim ``element`` (symbols H..Zn), number abundance relative to H
        (linear; 0 where the file has no entry).

    Examples
    --------
    >>> ab = read_abundance("archive/sun_photospheric_2007_grevesse")
    >>> round(float(ab.sel(element="H")), 1)
    1.0
    """
    name = str(name)
    path = Path(name).expanduser()
    if path.suffix == ".abund" and path.is_file():
        return _abundance_da(_parse_abund(path), path.stem, str(path))
    stem = name[: -len(".abund")] if name.endswith(".abund") else name
    if xuvtop is not None:
        path = Path(xuvtop) / "abundance" / f"{stem}.abund"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such CHIANTI abundance file")
        return _abundance_da(_parse_abund(path), stem, str(path))
    from .contribution import load_table_dataset

    shipped = load_table_dataset()["abundance"]
    if stem in shipped.indexes["abundance_set"]:
        return _abundance_da(
            shipped.sel(abundance_set=stem).values, stem, "shipped copy of CHIANTI " + stem
        )
    env = os.environ.get("XUVTOP")
    if env:
        path = Path(env) / "abundance" / f"{stem}.abund"
        if path.is_file():
            return _abundance_da(_parse_abund(path), stem, str(path))
    raise FileNotFoundError(
        f"abundance set {name!r} not found: give a .abund file path, set XUVTOP to a CHIANTI "
        f"database, or use one of the shipped sets {sorted(shipped.indexes['abundance_set'])}"
    )
