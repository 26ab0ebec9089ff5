"""Wavelength units: the one place that decides whether a unit string is Angstrom.

The package works in Angstrom for wavelengths, centroids and widths. Files and users spell
units in many ways ("Angstrom", "AA", "Å", "0.1 nm", "nm", "m"); :func:`angstrom_factor`
turns any of them into the factor that converts to Angstrom, and :func:`is_angstrom` says
whether no conversion is needed. Every module that checks a wavelength unit uses these two.
"""

from __future__ import annotations

__all__ = ["ANGSTROM", "angstrom_factor", "is_angstrom"]

ANGSTROM = "Angstrom"

# the spellings met in SPICE files, FITS headers and xarray attrs, without a parse
_KNOWN = {
    "angstrom": 1.0,
    "angstroms": 1.0,
    "a": 1.0,
    "aa": 1.0,
    "\u00e5": 1.0,
    "\u212b": 1.0,
    "0.1 nm": 1.0,
    "1e-10 m": 1.0,
    "nm": 10.0,
    "pm": 1e-2,
    "um": 1e4,
    "m": 1e10,
}


def angstrom_factor(unit, default: str = ANGSTROM) -> float | None:
    """The factor converting wavelengths in ``unit`` to Angstrom, or None if it is no length.

    ``unit`` may be None or empty, meaning ``default``. Spellings astropy understands beyond
    the common ones are accepted too (``"100 pm"``, ``"micron"``).

    >>> angstrom_factor("nm"), angstrom_factor("0.1 nm"), angstrom_factor("s")
    (10.0, 1.0, None)
    """
    text = str(default if unit is None else unit).strip() or default
    key = text.lower()
    if key in _KNOWN:
        return _KNOWN[key]
    import astropy.units as u

    try:
        return float(u.Unit(text).to(u.AA))
    except (ValueError, TypeError, u.UnitConversionError):
        return None


def is_angstrom(unit, default: str = ANGSTROM) -> bool:
    """True when values in ``unit`` (None or empty: ``default``) are already in Angstrom."""
    factor = angstrom_factor(unit, default)
    return factor is not None and abs(factor - 1.0) < 1e-12
