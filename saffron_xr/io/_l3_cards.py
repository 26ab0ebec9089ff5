"""Header cards of Level-3 results: the analysis, the fit components, the observer."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

import astropy.units as u
import numpy as np

from ._l3_common import ANGSTROM_TO_NM, GAUSS, LETTERS

_COPY_KEYS = (
    "INSTRUME",
    "OBSRVTRY",
    "TELESCOP",
    "DETECTOR",
    "STUDYTYP",
    "STUDY",
    "OBS_MODE",
    "OBS_ID",
    "SPIOBSID",
    "RASTERNO",
    "NRASTERS",
    "SOOPNAME",
    "PURPOSE",
    "SLIT_ID",
    "SLIT_WID",
    "NBIN2",
    "NBIN3",
    "XPOSURE",
    "TELAPSE",
    "TIMESYS",
    "DATEREF",
    "DATE-BEG",
    "DATE-OBS",
    "DATE-AVG",
    "DATE-END",
    "OBT_BEG",
    "CROTA",
    "WAVEREF",
    "WAVEMIN",
    "WAVEMAX",
    "WINNO",
    "SPECSYS",
    "VELOSYS",
    "DSUN_OBS",
    "DSUN_AU",
    "RSUN_ARC",
    "RSUN_REF",
    "SOLAR_B0",
    "SOLAR_P0",
    "SOLAR_EP",
    "CAR_ROT",
    "HGLT_OBS",
    "HGLN_OBS",
    "CRLT_OBS",
    "CRLN_OBS",
    "HEEX_OBS",
    "HEEY_OBS",
    "HEEZ_OBS",
    "HCIX_OBS",
    "HCIY_OBS",
    "HCIZ_OBS",
    "HCIX_VOB",
    "HCIY_VOB",
    "HCIZ_VOB",
    "HAEX_OBS",
    "HAEY_OBS",
    "HAEZ_OBS",
    "HEQX_OBS",
    "HEQY_OBS",
    "HEQZ_OBS",
    "GSEX_OBS",
    "GSEY_OBS",
    "GSEZ_OBS",
    "OBS_VR",
    "EAR_TDEL",
    "SUN_TIME",
    "DATE_EAR",
    "DATE_SUN",
)
_GAUSS_PARAMS = (
    ("Amplitude", "Peak spectral radiance of the Gaussian, in the units of the fitted data"),
    ("Position", "Centre of the Gaussian (vacuum wavelength), in the units of the WAVE axis"),
    ("Width", "Gaussian sigma (standard deviation, not FWHM), in the units of the WAVE axis"),
)


@dataclass(frozen=True)
class ExtensionNames:
    """The extension names of one window ``base`` (its EXTNAME) and its parent L2 file."""

    base: str
    parent: str | None = None

    @property
    def results(self) -> str:
        return f"{self.base} results"

    @property
    def sigma(self) -> str:
        return f"{self.base} sigma"

    @property
    def data(self) -> str:
        return f"{self.base} data"

    @property
    def meta(self) -> str:
        return f"{self.base} saffron"

    @property
    def external(self) -> str:
        """``file.fits;EXTNAME`` of the window in its parent L2 file ('' when unknown)."""
        return f"{self.parent};{self.base}" if self.parent else ""


#: The PARAMETER axis (axis 4) of the results and sigma cubes.
PARAMETER_AXIS_CARDS = (
    ("CTYPE4", "PARAMETER"),
    ("CNAME4", "Fit parameter"),
    ("CUNIT4", ""),
    ("CRVAL4", 1.0),
    ("CDELT4", 1.0),
    ("CRPIX4", 1.0),
)


def analysis_cards(
    names: ExtensionNames, out_name: str, ncomp: int, chisqavg: float, *, with_data: bool
) -> list[tuple]:
    """The SOLARNET keywords describing the file and the whole analysis of one window."""
    from .._meta import __version__

    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    head = [
        ("DATE", now, "Date and time of FITS file creation"),
        ("EXTNAME", names.results, "Extension name"),
        ("FILENAME", out_name, "Filename"),
        ("SOLARNET", 1, "Fully SOLARNET compliant"),
        ("OBS_HDU", 2, "HDU contains SOLARNET Type P data"),
        ("ORNAME", names.base, "Original extension name"),
        ("LEVEL", "L3", "Data processing level"),
        ("CREATOR", f"saffron_xr {__version__}", "Software that created this file"),
        ("LONGSTRN", "OGIP 1.0", "The OGIP long string convention may be used"),
    ]
    if names.parent:
        head += [
            ("PARENT", names.parent, "Parent (L2) file"),
            ("PARENTXT", names.external, "Parent file;extension name"),
        ]
    head += [
        ("COMMENT", "--- keywords describing the whole analysis ---"),
        ("ANA_NCMP", ncomp, "Number of fit components"),
        ("RESEXT", names.results, "Extension name of results"),
        ("UNCEXT", names.sigma, "Extension name of uncertainties"),
        ("DATAEXT", names.data if with_data else names.external, "Extension name of data"),
        ("XTYPE1", "WAVE", "Type of 1st coordinate absorbed by analysis"),
        ("XDIMEN1", 3, "Dimension number of 1st dimension absorbed"),
        ("WAVEUNIT", -9, "Fitted wavelengths in 10**WAVEUNIT m (nm)"),
        ("ANA_MISS", "NaN", "Missing value in results"),
        ("CHISQAVG", chisqavg if np.isfinite(chisqavg) else "NaN", "Average reduced chi2"),
        ("SXMETA", names.meta, "saffron_xr metadata table"),
        ("COMMENT", "The last plane of the PARAMETER axis is the reduced chi2 of the fit."),
        ("COMMENT", "Gaussian positions and widths are stored in Angstrom; PTRA = 0.1 gives nm."),
    ]
    return head


def observer_cards(source, taken: set) -> list[tuple]:
    """Observation and observer keywords copied from the L2 header (or attrs) ``source``.

    Keys already in ``taken`` (the WCS cards) and values that are not str/int/float/bool are
    left out.
    """
    cards = []
    for key in _COPY_KEYS:
        if key in source and key not in taken:
            val = source[key]
            if isinstance(val, np.generic):
                val = val.item()
            if isinstance(val, (str, int, float, bool)):
                cards.append((key, val))
    return cards


def _fits_unit(units: str) -> str:
    """``units`` in the FITS unit syntax (as given when astropy does not know it)."""
    try:
        return u.Unit(units).to_string("fits")
    except ValueError:
        return units


def _param_cards(
    n: int, letter: str, name, unit, desc, init=None, lo=None, hi=None, cons=0, ptra=1.0
):
    cards = [
        (f"PNAME{n}{letter}", name, f"Name of parameter {letter}"),
        (f"PUNIT{n}{letter}", unit, f"Unit of parameter {letter}"),
        (f"PDESC{n}{letter}", desc, f"Description of parameter {letter}"),
    ]
    for key, value in (("PINIT", init), ("PMIN", lo), ("PMAX", hi)):
        if value is not None and np.isfinite(value):
            value = float(f"{float(value):.12g}")
            cards.append((f"{key}{n}{letter}", value, f"{key[1:]} of parameter {letter}"))
    cards += [
        (f"PTRA{n}{letter}", float(ptra), "Linear coefficient A in Lambda=PVAL*PTRA+PTRB"),
        (f"PTRB{n}{letter}", 0.0, "Linear coefficient B in Lambda=PVAL*PTRA+PTRB"),
        (f"PCONS{n}{letter}", int(cons), f"1 if parameter {letter} of component {n} is constant"),
    ]
    return cards


def component_cards(ds, model, amp_unit, bg_info):
    """Header cards describing the components, and the number of parameters."""
    lines = [str(v) for v in np.atleast_1d(ds["line"].values)]
    by_name = {ln.get("name"): ln for ln in model.get("lines", []) if isinstance(ln, dict)}
    fixed = {(f.get("line"), f.get("param")) for f in model.get("fixed", [])}
    ties = {(t.get("line"), t.get("param")): t for t in model.get("ties", [])}
    cards = []
    n = 0
    for line in lines:
        n += 1
        info = by_name.get(line, {})
        bounds = info.get("bounds", {})
        cards += [
            ("COMMENT", f"--- fit component {n}: Gaussian {line} ---"),
            (f"CMPTYP{n}", "Gaussian", f"Type of fit component {n}"),
            (f"CMPNAM{n}", line, f"Name of fit component {n}"),
            (f"CMP_NP{n}", 3, f"Number of parameters in fit component {n}"),
            (f"CMPSTR{n}", "g", f"cfit function string of component {n}"),
        ]
        tie_text = [
            f"{kind} tied to {t['to']} ({t['value']})"
            for kind in GAUSS
            if (t := ties.get((line, kind)))
        ]
        if tie_text:
            cards.append((f"CMPDES{n}", "; ".join(tie_text), f"Ties of component {n}"))
        for k, kind in enumerate(GAUSS):
            # PINIT/PMIN/PMAX are values of the function parameter (nm); the stored (nominal)
            # position and width are in Angstrom, PTRA = 0.1 converts them to nm
            scale = 1.0 if kind == "amplitude" else ANGSTROM_TO_NM
            unit = _fits_unit(amp_unit) if kind == "amplitude" else "Angstrom"
            lo, hi = (list(bounds.get(kind) or []) + [None, None])[:2]
            init = info.get(kind)
            cards += _param_cards(
                n,
                LETTERS[k],
                _GAUSS_PARAMS[k][0],
                unit,
                _GAUSS_PARAMS[k][1],
                None if init is None else init * scale,
                None if lo is None else lo * scale,
                None if hi is None else hi * scale,
                cons=(line, kind) in fixed,
                ptra=scale,
            )
    if bg_info is not None:
        degree, refs, segments = bg_info
        for s, ref in enumerate(refs):
            n += 1
            name = "background" if len(refs) == 1 else f"background segment {s}"
            rng = ""
            if segments:
                rng = f" for {segments[s][0]:g}-{segments[s][1]:g} Angstrom only"
            cards += [
                ("COMMENT", f"--- fit component {n}: Polynomial {name} ---"),
                (f"CMPTYP{n}", "Polynomial", f"Type of fit component {n}"),
                (f"CMPNAM{n}", name, f"Name of fit component {n}"),
                (f"CMP_NP{n}", degree + 1, f"Number of parameters in fit component {n}"),
                (f"CMPSTR{n}", f"p{degree}", f"cfit function string of component {n}"),
                (
                    f"CMPDES{n}",
                    f"Polynomial of degree {degree} in wavelength (nm){rng}; converted from "
                    f"saffron_xr's basis (lambda - {ref:.6f} Angstrom)**k",
                    f"Description of component {n}",
                ),
            ]
            for j in range(degree + 1):
                unit = _fits_unit(str(u.Unit(amp_unit) / u.nm**j)) if j else _fits_unit(amp_unit)
                cards += _param_cards(
                    n, LETTERS[j], f"c{j}", unit, f"Coefficient of lambda**{j} (lambda in nm)"
                )
    return cards, n
