"""Generate ``saffron_xr/catalog/spice_lines.json`` (the default SPICE line catalog) from CHIANTI.

Every rest wavelength, element first-ionisation potential and formation temperature in the
catalog is read here from the CHIANTI database files, nothing is typed in by hand except *which*
transitions the catalog holds (ion and the lower/upper level indices of the transition in that
ion's ``.wgfa`` file), their display labels and the window / blend groups.

* rest wavelength: the ``.wgfa`` file of the ion (column 3, Angstrom, vacuum). CHIANTI writes
  a positive wavelength when both levels have observed energies; the script refuses negative
  (theoretical-only) wavelengths. As a check it recomputes the wavelength from the level
  energies in the ``.elvlc`` file and requires agreement to 0.005 Angstrom.
* FIP: ``ip/chianti.ip`` (ionisation potential of the neutral, cm-1, converted to eV).
* log T: temperature at the peak of the ion's fractional abundance in ``ioneq/chianti.ioneq``.

Usage (from the repository root)::

    XUVTOP=../shared/chianti python tools/make_catalog.py [--check]

``--check`` regenerates in memory and fails if the shipped JSON differs (used by a test).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

#: 1 eV in cm-1 (CODATA 2018: 8065.543937... cm-1)
EV_IN_CM1 = 8065.543937

#: (label, ion, lower level, upper level, detector).  The label is the name users quote for the
#: line: the ion and its wavelength as commonly written (within 0.05 A of the CHIANTI value).
LINES = [
    # --- SW detector ---
    ("ar_8 700.24", "ar_8", 1, 3, "SW"),
    ("o_3 702.34", "o_3", 1, 11, "SW"),
    ("o_3 702.84", "o_3", 2, 10, "SW"),
    ("o_3 702.90", "o_3", 2, 12, "SW"),
    ("o_3 703.85", "o_3", 3, 12, "SW"),
    ("mg_9 706.06", "mg_9", 1, 3, "SW"),
    ("ar_8 713.80", "ar_8", 1, 2, "SW"),
    ("o_2 718.51", "o_2", 2, 9, "SW"),
    ("fe_20 721.56", "fe_20", 1, 2, "SW"),
    ("s_4 744.90", "s_4", 1, 10, "SW"),
    ("s_4 748.40", "s_4", 1, 9, "SW"),
    ("mg_9 749.55", "mg_9", 5, 9, "SW"),
    ("s_4 750.22", "s_4", 2, 10, "SW"),
    ("s_4 753.76", "s_4", 2, 9, "SW"),
    ("o_5 758.68", "o_5", 3, 8, "SW"),
    ("o_5 759.44", "o_5", 2, 6, "SW"),
    ("o_5 760.23", "o_5", 3, 6, "SW"),
    ("o_5 760.45", "o_5", 4, 8, "SW"),
    ("o_5 761.13", "o_5", 3, 7, "SW"),
    ("o_5 762.00", "o_5", 4, 6, "SW"),
    ("n_3 763.33", "n_3", 1, 8, "SW"),
    ("n_3 764.35", "n_3", 2, 8, "SW"),
    ("n_4 765.15", "n_4", 1, 5, "SW"),
    ("mg_8 769.36", "mg_8", 1, 3, "SW"),
    ("ne_8 770.42", "ne_8", 1, 3, "SW"),
    ("mg_8 772.26", "mg_8", 2, 5, "SW"),
    ("ne_8 780.39", "ne_8", 1, 2, "SW"),
    ("mg_8 782.36", "mg_8", 2, 4, "SW"),
    ("s_5 786.47", "s_5", 1, 5, "SW"),
    ("o_4 787.71", "o_4", 1, 6, "SW"),
    ("mg_8 789.41", "mg_8", 2, 3, "SW"),
    ("o_4 790.20", "o_4", 2, 7, "SW"),
    # --- LW detector ---
    ("h_1 972.54", "h_1", 1, 12, "LW"),
    ("ne_7 973.33", "ne_7", 5, 9, "LW"),
    ("fe_18 974.86", "fe_18", 1, 2, "LW"),
    ("c_3 977.03", "c_3", 1, 5, "LW"),
    ("n_3 989.80", "n_3", 1, 6, "LW"),
    ("si_2 989.87", "si_2", 1, 17, "LW"),
    ("n_3 991.51", "n_3", 2, 6, "LW"),
    ("n_3 991.58", "n_3", 2, 7, "LW"),
    ("si_2 992.68", "si_2", 2, 18, "LW"),
    ("si_3 994.79", "si_3", 3, 13, "LW"),
    ("si_3 997.39", "si_3", 4, 13, "LW"),
    ("c_2 1009.86", "c_2", 3, 14, "LW"),
    ("c_2 1010.08", "c_2", 4, 14, "LW"),
    ("c_2 1010.37", "c_2", 5, 14, "LW"),
    ("s_3 1012.49", "s_3", 1, 11, "LW"),
    ("s_3 1015.50", "s_3", 2, 12, "LW"),
    ("s_3 1015.56", "s_3", 2, 11, "LW"),
    ("s_3 1021.11", "s_3", 3, 11, "LW"),
    ("s_3 1021.32", "s_3", 3, 10, "LW"),
    ("si_2 1023.70", "si_2", 2, 16, "LW"),
    ("h_1 1025.72", "h_1", 1, 7, "LW"),
    ("o_6 1031.91", "o_6", 1, 3, "LW"),
    ("c_2 1036.34", "c_2", 1, 8, "LW"),
    ("c_2 1037.02", "c_2", 2, 8, "LW"),
    ("o_6 1037.61", "o_6", 1, 2, "LW"),
]

#: Windows: lines SPICE studies record together, with the line that dominates the window in
#: quiet-Sun and active-region spectra (used to anchor the wavelength-offset estimate).
#: Blends: lines closer than SPICE resolves (FWHM ~0.8-1.1 A); fitted as one component.
WINDOWS = [
    (
        "O III 703 / Mg IX 706",
        ["o_3 702.34", "o_3 702.84", "o_3 702.90", "o_3 703.85", "mg_9 706.06"],
        "o_3 703.85",
        False,
    ),
    ("Ar VIII 700", ["ar_8 700.24"], "ar_8 700.24", False),
    ("Ar VIII 713", ["ar_8 713.80"], "ar_8 713.80", False),
    ("O II 718", ["o_2 718.51"], "o_2 718.51", False),
    ("Fe XX 721", ["fe_20 721.56"], "fe_20 721.56", False),
    (
        "S IV 748 / Mg IX 750",
        ["s_4 744.90", "s_4 748.40", "mg_9 749.55", "s_4 750.22", "s_4 753.76"],
        "s_4 750.22",
        False,
    ),
    (
        "O V 760",
        ["o_5 758.68", "o_5 759.44", "o_5 760.23", "o_5 760.45", "o_5 761.13", "o_5 762.00"],
        "o_5 760.45",
        False,
    ),
    ("N IV 765", ["n_3 763.33", "n_3 764.35", "n_4 765.15"], "n_4 765.15", False),
    ("Ne VIII 770", ["mg_8 769.36", "ne_8 770.42", "mg_8 772.26"], "ne_8 770.42", False),
    ("Ne VIII 780", ["ne_8 780.39", "mg_8 782.36"], "ne_8 780.39", False),
    ("S V 786 / O IV 787", ["s_5 786.47", "o_4 787.71"], "o_4 787.71", False),
    ("O IV 790", ["mg_8 789.41", "o_4 790.20"], "o_4 790.20", False),
    (
        "Ly gamma / C III 977",
        ["h_1 972.54", "ne_7 973.33", "fe_18 974.86", "c_3 977.03"],
        "c_3 977.03",
        False,
    ),
    (
        "N III 991",
        ["n_3 989.80", "si_2 989.87", "n_3 991.51", "n_3 991.58", "si_2 992.68"],
        "n_3 991.58",
        False,
    ),
    ("Si III 997", ["si_3 994.79", "si_3 997.39"], "si_3 997.39", False),
    ("C II 1010", ["c_2 1009.86", "c_2 1010.08", "c_2 1010.37"], "c_2 1010.37", False),
    (
        "S III 1015 / 1021",
        ["s_3 1012.49", "s_3 1015.50", "s_3 1015.56", "s_3 1021.11", "s_3 1021.32"],
        "s_3 1021.32",
        False,
    ),
    ("Ly beta 1025", ["si_2 1023.70", "h_1 1025.72"], "h_1 1025.72", False),
    ("O VI 1032", ["o_6 1031.91"], "o_6 1031.91", False),
    ("C II / O VI 1037", ["c_2 1036.34", "c_2 1037.02", "o_6 1037.61"], "o_6 1037.61", False),
    # blends (unresolved at SPICE resolution)
    ("O III 702.9 blend", ["o_3 702.84", "o_3 702.90"], "o_3 702.90", True),
    ("O V 760.3 blend", ["o_5 760.23", "o_5 760.45"], "o_5 760.45", True),
    ("N III / Si II 989.8 blend", ["n_3 989.80", "si_2 989.87"], "n_3 989.80", True),
    ("N III 991.6 blend", ["n_3 991.51", "n_3 991.58"], "n_3 991.58", True),
    ("S III 1015.5 blend", ["s_3 1015.50", "s_3 1015.56"], "s_3 1015.50", True),
    ("S III 1021.2 blend", ["s_3 1021.11", "s_3 1021.32"], "s_3 1021.32", True),
]

ELEMENT_Z = {
    "H": 1,
    "C": 6,
    "N": 7,
    "O": 8,
    "Ne": 10,
    "Mg": 12,
    "Si": 14,
    "S": 16,
    "Ar": 18,
    "Fe": 26,
}

_FLOAT = r"[-+]?\d+\.\d*(?:[eE][-+]?\d+)?"


def element_of(ion: str) -> str:
    return ion.split("_")[0].capitalize()


def ion_dir(xuvtop: Path, ion: str) -> Path:
    return xuvtop / ion.split("_")[0] / ion


def read_wgfa(path: Path) -> dict:
    """{(lower, upper): (wavelength, gf, A, pretty)} from a CHIANTI .wgfa file."""
    out = {}
    with open(path) as f:
        for line in f:
            if line.strip().startswith("-1"):
                break
            m = re.match(rf"^\s*(\d+)\s+(\d+)\s+({_FLOAT})\s+({_FLOAT})\s+({_FLOAT})(.*)$", line)
            if m is None:
                raise ValueError(f"{path}: unreadable line {line!r}")
            lo, up = int(m.group(1)), int(m.group(2))
            out[(lo, up)] = (
                float(m.group(3)),
                float(m.group(4)),
                float(m.group(5)),
                m.group(6).strip(),
            )
    return out


def read_elvlc(path: Path) -> dict:
    """{level: (label, observed energy or None, theoretical energy)} from a .elvlc file (cm-1)."""
    out = {}
    with open(path) as f:
        for line in f:
            if line.strip().startswith("-1"):
                break
            body = line.split(",")[0]
            m = re.match(
                rf"^\s*(\d+)\s+(.*?)\s+(\d+)\s+([A-Z])\s+(\d+(?:\.\d+)?)\s+"
                rf"({_FLOAT})\s+({_FLOAT})\s*$",
                body,
            )
            if m is None:
                raise ValueError(f"{path}: unreadable level line {line!r}")
            config = m.group(2).split()
            if len(config) > 1 and config[-1].isdigit():  # a reference-number column
                config = config[:-1]
            j = float(m.group(5))
            jtxt = f"{int(j)}" if j == int(j) else f"{int(round(2 * j))}/2"
            label = f"{' '.join(config)} {m.group(3)}{m.group(4)}{jtxt}"
            e_obs = float(m.group(6))
            out[int(m.group(1))] = (
                label,
                e_obs if e_obs > 0 or int(m.group(1)) == 1 else None,
                float(m.group(7)),
            )
    return out


def read_ip(path: Path) -> dict:
    """{(Z, stage): ionisation potential in cm-1}."""
    out = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 3 or parts[0] == "-1":
                break
            out[(int(parts[0]), int(parts[1]))] = float(parts[2])
    return out


def read_ioneq(path: Path):
    with open(path) as f:
        first = f.readline().split()
        ntemp = int(first[0])
        temps = [float(v) for v in f.readline().split()]
        if len(temps) != ntemp:
            raise ValueError(f"{path}: expected {ntemp} temperatures")
        table = {}
        for line in f:
            parts = line.split()
            if not parts or parts[0] == "-1":
                break
            # fixed-width values that may touch ("0.000e+001.203e-10"): split by pattern
            values = re.findall(r"\d\.\d+[eE][-+]\d\d", line[6:])
            table[(int(line[:3]), int(line[3:6]))] = [float(v) for v in values]
    return temps, table


def build(xuvtop: Path) -> dict:
    ip = read_ip(xuvtop / "ip" / "chianti.ip")
    temps, ioneq = read_ioneq(xuvtop / "ioneq" / "chianti.ioneq")
    version = (xuvtop / "VERSION").read_text().strip()
    provenance = {}
    prov_file = xuvtop / "PROVENANCE.json"
    if prov_file.exists():
        provenance = json.loads(prov_file.read_text()).get("ion_dir_source_tag", {})

    elements = {}
    for el, z in ELEMENT_Z.items():
        elements[el] = {"z": z, "fip": round(ip[(z, 1)] / EV_IN_CM1, 3)}

    lines = []
    for label, ion, lo, up, detector in LINES:
        el = element_of(ion)
        z, stage = ELEMENT_Z[el], int(ion.split("_")[1])
        wgfa_path = ion_dir(xuvtop, ion) / f"{ion}.wgfa"
        elvlc_path = ion_dir(xuvtop, ion) / f"{ion}.elvlc"
        wvl, _gf, _a, pretty = read_wgfa(wgfa_path)[(lo, up)]
        if wvl <= 0:
            raise ValueError(f"{wgfa_path}: levels {lo}-{up} have no observed wavelength")
        levels = read_elvlc(elvlc_path)
        (lab_lo, e_lo, _), (lab_up, e_up, _) = levels[lo], levels[up]
        if e_lo is None or e_up is None:
            raise ValueError(f"{elvlc_path}: levels {lo}/{up} lack observed energies")
        check = 1e8 / (e_up - e_lo)
        if abs(check - wvl) > 0.005:
            raise ValueError(f"{ion} {lo}-{up}: wgfa {wvl} vs elvlc {check:.4f} Angstrom")
        number = float(label.split()[1])
        if abs(number - wvl) > 0.05 or not label.startswith(ion + " "):
            raise ValueError(f"label {label!r} does not match {ion} at {wvl} Angstrom")
        frac = ioneq[(z, stage)]
        log_t = temps[max(range(len(frac)), key=frac.__getitem__)]
        rel = wgfa_path.relative_to(xuvtop).as_posix()
        tag = provenance.get(ion, version).split(" (DERIVED")[0]
        lines.append(
            {
                "name": label,
                "ion": ion,
                "element": el,
                "rest_wavelength": round(wvl, 3),
                "fip": elements[el]["fip"],
                "log_t": round(log_t, 2),
                "detector": detector,
                "transition": " - ".join(" ".join(p.split()) for p in pretty.split(" - "))
                if pretty
                else f"{lab_lo} - {lab_up}",
                "source": f"CHIANTI {rel} levels {lo}-{up} (ion data {tag})",
            }
        )

    windows = [
        {"name": name, "lines": members, "brightest": brightest, "blend": blend}
        for name, members, brightest, blend in WINDOWS
    ]
    return {
        "format": "saffron_xr line catalog",
        "format_version": 1,
        "description": (
            "Default SPICE line catalog: emission lines of the SW (~700-792 A) and LW "
            "(~970-1050 A) detectors that the SPICE community fits, with windows (lines "
            "recorded together, with the brightest one) and blends (lines SPICE does not "
            "resolve)."
        ),
        "units": {"rest_wavelength": "Angstrom (vacuum)", "fip": "eV", "log_t": "log10(K)"},
        "provenance": {
            "rest_wavelength": (
                "CHIANTI .wgfa files (wavelengths from observed level energies, checked "
                "against the .elvlc files); each line's 'source' names the file and levels"
            ),
            "fip": "CHIANTI ip/chianti.ip (ionisation potential of the neutral atom)",
            "log_t": "peak of the ion fraction in CHIANTI ioneq/chianti.ioneq",
            "chianti_version": version,
            "generator": "tools/make_catalog.py",
        },
        "elements": elements,
        "lines": lines,
        "windows": windows,
    }


def render(catalog: dict) -> str:
    return json.dumps(catalog, indent=1) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--xuvtop", default=os.environ.get("XUVTOP", "../shared/chianti"))
    parser.add_argument(
        "--output",
        default=str(
            Path(__file__).resolve().parent.parent / "saffron_xr" / "catalog" / "spice_lines.json"
        ),
    )
    parser.add_argument("--check", action="store_true", help="fail if the output differs")
    args = parser.parse_args(argv)
    text = render(build(Path(args.xuvtop)))
    out = Path(args.output)
    if args.check:
        if not out.exists() or out.read_text() != text:
            print(f"{out} is out of date: run tools/make_catalog.py", file=sys.stderr)  # noqa: T201
            return 1
        return 0
    out.write_text(text)
    print(f"wrote {out} ({len(json.loads(text)['lines'])} lines)")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
