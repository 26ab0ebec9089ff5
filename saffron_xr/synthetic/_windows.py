"""The windows of a synthetic SPICE file: the composition study and the window specs.

Detector sampling, default RADCAL, line widths and backgrounds, and the checks that turn a
user's window dicts into complete specs (`resolve_windows`).
"""

from __future__ import annotations

__all__ = ["composition_windows", "resolve_windows"]

# Spectral sampling (nm per detector pixel, unbinned), as in real L2 headers.
_CDELT3_NM = {"SW": 0.0097517, "LW": 0.009623}
# RADCAL per second of exposure (DN per W m-2 sr-1 nm-1 per s): SW from the real 2022 Ne VIII
# window (38.15 at 4.7 s); LW from it by the SW/LW ratio (6.42) of a real 2024 exposure file
# (SW and LW windows of the same exposure). The default RADCAL of a window is this rate times
# XPOSURE.
_RADCAL_RATE = {"SW": 38.15 / 4.7, "LW": 38.15 / 4.7 / 6.42}
# Typical Gaussian sigma (Angstrom) of SPICE lines, instrumental broadening included.
_DEFAULT_WIDTH = {"SW": 0.33, "LW": 0.36}
_DEFAULT_BACKGROUND = {"SW": 0.05, "LW": 0.15}

_COMPOSITION = (
    ("O III 703 / Mg IX 706 - Peak", "SW", 701.3, 64,
     (("o_3", 702.838, 1.0), ("o_3", 703.854, 1.5), ("mg_9", 706.060, 0.6))),
    ("S IV 748 / Mg IX 750 - Peak", "SW", 746.9, 48,
     (("s_4", 748.393, 0.4, "s_4 748.40"), ("mg_9", 749.552, 0.8), ("s_4", 750.221, 0.7))),
    ("N IV 765 - Peak", "SW", 763.2, 40, (("n_4", 765.147, 3.0),)),
    ("Ne VIII 770 - Peak", "SW", 768.4, 56,
     (("ne_8", 770.428, 2.0, "ne_8 770.42"), ("mg_8", 772.262, 0.4))),
    ("S V 786 / O IV 787 - Peak", "SW", 784.9, 48, (("s_5", 786.468, 1.2), ("o_4", 787.710, 2.0))),
    ("Ly gamma / C III 977 - Peak", "LW", 970.9, 80,
     (("h_1", 972.537, 6.0), ("c_3", 977.020, 20.0, "c_3 977.03"))),
    ("N III 991 - Peak", "LW", 988.2, 52, (("n_3", 989.799, 2.0), ("n_3", 991.577, 4.0))),
    ("O VI 1032 - Peak", "LW", 1029.9, 42, (("o_6", 1031.912, 15.0),)),
    ("O VI 1037 - Peak", "LW", 1035.6, 42, (("o_6", 1037.613, 7.5),)),
)  # fmt: skip


def composition_windows() -> list[dict]:
    """The 9-window SW+LW composition study used by :func:`make_spice_l2` by default.

    Rest wavelengths (Angstrom) are CHIANTI's observed-energy wavelengths (``.wgfa`` files);
    line ids are those of the default line catalog (``saffron_xr/catalog/spice_lines.json``),
    which keeps three conventional labels (``"ne_8 770.42"`` for 770.428 A, ``"s_4 748.40"``,
    ``"c_3 977.03"``); other ids are ``f"{ion} {rest_wavelength:.2f}"``.
    peak radiances (W m-2 sr-1 nm-1) are typical quiet-Sun values. :func:`make_spice_l2`
    varies them smoothly (x0.4 to x2.5) and brightens them 5-13 times in an "active region"
    patch, so that the peak S/N per pixel spans ~1 to ~25 at the default 5 s exposure and
    ~5 to ~90 at 60 s.

    Returns
    -------
    list of dict
        A fresh copy each call, in the form accepted by ``make_spice_l2(windows=...)``:
        keys ``extname``, ``detector``, ``wavemin`` (Angstrom), ``nwave`` and ``lines``
        (``(ion, rest_wavelength, peak_radiance[, line_id])`` tuples).

    Examples
    --------
    >>> [w["extname"] for w in composition_windows()][:2]
    ['O III 703 / Mg IX 706 - Peak', 'S IV 748 / Mg IX 750 - Peak']
    """
    return [
        {"extname": name, "detector": det, "wavemin": wmin, "nwave": nw, "lines": list(lines)}
        for name, det, wmin, nw, lines in _COMPOSITION
    ]


def _line_id(ion: str, rest: float) -> str:
    return f"{ion} {rest:.2f}"


def resolve_windows(windows, nwave, radcal, nbin3, xposure) -> list[dict]:
    """Validate window specs and fill in defaults; returns new dicts."""
    if isinstance(windows, str):
        if windows != "composition":
            raise ValueError(f"windows must be 'composition' or a list of dicts, not {windows!r}")
        windows = composition_windows()
    if isinstance(windows, dict):
        windows = [windows]
    out = []
    seen = set()
    for i, spec in enumerate(windows):
        if not isinstance(spec, dict):
            raise TypeError(f"window {i} must be a dict, not {type(spec).__name__}")
        unknown = set(spec) - {
            "extname",
            "lines",
            "wavemin",
            "nwave",
            "detector",
            "background",
            "width",
            "radcal",
        }
        if unknown:
            raise ValueError(f"window {i}: unknown keys {sorted(unknown)}")
        if "wavemin" not in spec:
            raise ValueError(f"window {i}: 'wavemin' (Angstrom) is required")
        wavemin = float(spec["wavemin"])
        det = str(spec.get("detector") or ("SW" if wavemin < 850.0 else "LW")).upper()
        if det not in ("SW", "LW"):
            raise ValueError(f"window {i}: detector must be 'SW' or 'LW', not {det!r}")
        extname = str(spec.get("extname") or f"WINDOW{i}_{wavemin / 10:.2f}")
        if extname in seen:
            raise ValueError(f"window {i}: duplicate extname {extname!r}")
        seen.add(extname)
        step = _CDELT3_NM[det] * 10.0 * nbin3  # Angstrom per (binned) pixel
        nw = int(spec.get("nwave", 50))
        if nwave is not None:  # override, keeping the window centre
            wavemin += (nw - int(nwave)) * step / 2.0
            nw = int(nwave)
        if nw < 8:
            raise ValueError(f"window {extname!r}: nwave must be at least 8, not {nw}")
        if isinstance(radcal, dict):
            rc = radcal.get(det, _RADCAL_RATE[det] * xposure)
        else:
            rc = radcal if radcal is not None else _RADCAL_RATE[det] * xposure
        rc = float(spec.get("radcal", rc))
        if not rc > 0:
            raise ValueError(f"window {extname!r}: RADCAL must be positive, not {rc}")
        lines = []
        for line in spec.get("lines", ()):
            if len(line) not in (3, 4):
                raise ValueError(
                    f"window {extname!r}: lines are (ion, rest_wavelength, peak[, id]), "
                    f"not {line!r}"
                )
            ion, rest, peak = str(line[0]), float(line[1]), float(line[2])
            name = str(line[3]) if len(line) == 4 else _line_id(ion, rest)
            lines.append((ion, rest, peak, name))
        out.append(
            {
                "extname": extname,
                "detector": det,
                "wavemin": wavemin,
                "nwave": nw,
                "step": step,
                "lines": lines,
                "background": float(spec.get("background", _DEFAULT_BACKGROUND[det])),
                "width": float(spec.get("width", _DEFAULT_WIDTH[det])),
                "radcal": rc,
            }
        )
    if not out:
        raise ValueError("at least one window is needed")
    return out
