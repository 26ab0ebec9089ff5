"""LineCatalog: the shipped default, validation on load, edits, round trip."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import saffron_xr
from saffron_xr.catalog import CatalogError, Line, LineCatalog, Window

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cat():
    return LineCatalog.default()


@pytest.fixture
def raw(cat):
    return cat.to_dict()


# ----------------------------------------------------------------------------- default data
def test_default_catalog_content(cat):
    assert saffron_xr.LineCatalog is LineCatalog
    assert len(cat) >= 35
    table = cat.lines
    sw = table[(table.rest_wavelength > 695) & (table.rest_wavelength < 800)]
    lw = table[(table.rest_wavelength > 965) & (table.rest_wavelength < 1055)]
    assert len(sw) >= 15 and len(lw) >= 15
    assert set(sw.detector) == {"SW"} and set(lw.detector) == {"LW"}
    for name in [
        "ne_8 770.42", "mg_9 706.06", "mg_9 749.55", "s_4 748.40", "s_4 750.22", "s_5 786.47",
        "n_4 765.15", "n_3 991.58", "o_3 702.90", "o_3 703.85", "o_4 787.71", "o_5 760.45",
        "o_6 1031.91", "o_6 1037.61", "c_3 977.03", "h_1 972.54", "h_1 1025.72",
        "n_3 989.80", "ne_8 780.39", "mg_8 772.26", "mg_8 782.36",
    ]:  # fmt: skip
        assert name in cat, name
    # CHIANTI numbers (observed-energy wavelengths of the .wgfa files)
    assert cat["ne_8 770.42"].rest_wavelength == pytest.approx(770.428)
    assert cat["mg_9 706.06"].rest_wavelength == pytest.approx(706.060)
    assert cat["c_3 977.03"].rest_wavelength == pytest.approx(977.020)
    assert cat["h_1 1025.72"].rest_wavelength == pytest.approx(1025.722)
    # FIPs are the element constants (eV), formation temperatures plausible
    assert cat["ne_8 770.42"].fip == pytest.approx(21.565, abs=0.01)
    assert cat["mg_9 706.06"].fip == pytest.approx(7.646, abs=0.01)
    assert cat["s_4 750.22"].fip == pytest.approx(10.360, abs=0.01)
    assert cat["o_6 1031.91"].log_t == pytest.approx(5.5, abs=0.1)
    assert cat["ne_8 770.42"].log_t == pytest.approx(5.8, abs=0.1)
    assert cat["mg_9 706.06"].log_t == pytest.approx(6.0, abs=0.1)
    for line in cat:
        assert line.source.startswith("CHIANTI ") and ".wgfa" in line.source
        assert line.element.lower() == line.ion.split("_")[0]
    assert "CHIANTI" in cat.provenance["rest_wavelength"]
    # windows and blends name their brightest line
    wins = cat.windows
    assert wins["Ne VIII 770"].brightest == "ne_8 770.42"
    assert wins["Ly gamma / C III 977"].brightest == "c_3 977.03"
    assert any(w.blend for w in wins.values()) and any(not w.blend for w in wins.values())
    for w in wins.values():
        assert w.brightest in w.lines
    # no window listed twice (the original tool's catalog had duplicates)
    assert len({tuple(sorted(w.lines)) for w in wins.values()}) == len(wins)
    assert "57 lines" in repr(cat)


def test_default_wavelengths_match_chianti(cat, xuvtop):
    """Re-read every rest wavelength from the CHIANTI files named in its source."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import make_catalog
    finally:
        sys.path.pop(0)
    for line in cat:
        rel, levels = line.source.split()[1], line.source.split()[3]
        lo, up = (int(v) for v in levels.split("-"))
        wvl = make_catalog.read_wgfa(xuvtop / rel)[(lo, up)][0]
        assert wvl > 0, line.name  # observed energies
        assert line.rest_wavelength == pytest.approx(wvl, abs=5e-4), line.name


def test_shipped_json_is_what_the_generator_writes(xuvtop):
    res = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "make_catalog.py"), "--check",
         "--xuvtop", str(xuvtop)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr


def test_default_is_a_fresh_copy(cat):
    cat.remove_window("Ne VIII 770")
    assert "Ne VIII 770" in LineCatalog.default().windows


def test_in_range(cat):
    sub = cat.in_range(768.0, 773.0)
    assert sub.names == ["mg_8 769.36", "ne_8 770.42", "mg_8 772.26"]
    assert list(sub.windows) == ["Ne VIII 770"]
    # a window whose brightest line falls outside is not kept
    sub = cat.in_range(972.0, 975.0)
    assert "Ly gamma / C III 977" not in sub.windows
    assert sub.names == ["h_1 972.54", "ne_7 973.33", "fe_18 974.86"]
    assert len(cat.in_range(800.0, 900.0)) == 0
    with pytest.raises(ValueError, match="larger than"):
        cat.in_range(780.0, 770.0)


# ----------------------------------------------------------------------------- round trip
def test_round_trip(cat, tmp_path):
    cat.add_line(ion="fe_12", rest_wavelength=1242.0, fip=7.902, log_t=6.2, detector=None)
    cat.add_window(["fe_12 1242.00"], name="Fe XII 1242")
    path = tmp_path / "cat.json"
    cat.dump(path)
    back = LineCatalog.load(path)
    assert back == cat
    assert back.names == cat.names
    assert back.windows == cat.windows
    assert back["fe_12 1242.00"] == cat["fe_12 1242.00"]
    assert back.provenance == cat.provenance
    # and the file is stable: dumping again gives identical text
    path2 = tmp_path / "cat2.json"
    back.dump(path2)
    assert path2.read_text() == path.read_text()
    assert cat != LineCatalog.default()


# ----------------------------------------------------------------------------- edits
def test_add_and_remove_line(cat):
    line = cat.add_line(ion="si_10", rest_wavelength=1034.77, log_t=6.15, detector="LW")
    assert isinstance(line, Line)
    assert line.name == "si_10 1034.77" and line.element == "Si"
    assert line.fip == pytest.approx(cat["si_2 989.87"].fip)  # FIP from the element
    assert line.source == "user"
    assert "si_10 1034.77" in cat.in_range(1030, 1040)
    cat.remove_line("si_10 1034.77")
    assert "si_10 1034.77" not in cat


def test_invalid_line_edits(cat):
    n = len(cat)
    with pytest.raises(CatalogError, match="already in the catalog"):
        cat.add_line("ne_8 770.42", ion="ne_8", rest_wavelength=770.428, log_t=5.8)
    with pytest.raises(CatalogError, match="CHIANTI-style"):
        cat.add_line(ion="Ne VIII", rest_wavelength=770.4, log_t=5.8)
    with pytest.raises(CatalogError, match="more than 0.05 Angstrom"):
        cat.add_line("ne_8 771.00", ion="ne_8", rest_wavelength=770.428, log_t=5.8)
    with pytest.raises(CatalogError, match="must be '<ion> <wavelength>'"):
        cat.add_line("neviii", ion="ne_8", rest_wavelength=770.428, log_t=5.8)
    with pytest.raises(CatalogError, match="no FIP known for element 'Ca'"):
        cat.add_line(ion="ca_10", rest_wavelength=574.0, log_t=5.9)
    with pytest.raises(CatalogError, match="log_t"):
        cat.add_line(ion="o_6", rest_wavelength=1000.0, log_t=55.0)
    with pytest.raises(CatalogError, match="detector"):
        cat.add_line(ion="o_6", rest_wavelength=1000.0, log_t=5.5, detector="NUV")
    with pytest.raises(CatalogError, match="does not match ion"):
        cat.add_line(ion="o_6", element="Ne", rest_wavelength=1000.0, log_t=5.5)
    with pytest.raises(CatalogError, match="no line named"):
        cat.remove_line("xx_1 100.00")
    assert len(cat) == n


def test_remove_line_used_by_windows(cat):
    with pytest.raises(CatalogError, match="used by window"):
        cat.remove_line("mg_8 769.36")
    assert "mg_8 769.36" in cat
    cat.remove_line("mg_8 769.36", from_windows=True)
    assert cat.windows["Ne VIII 770"].lines == ("ne_8 770.42", "mg_8 772.26")
    with pytest.raises(CatalogError, match="brightest line of window"):
        cat.remove_line("ne_8 770.42", from_windows=True)
    # a window left empty disappears with its line
    cat.add_line(ion="fe_12", rest_wavelength=1242.0, fip=7.902, log_t=6.2)
    cat.add_window(["fe_12 1242.00"])
    cat.remove_line("fe_12 1242.00", from_windows=True)
    assert "fe_12 1242.00" not in cat.windows


def test_window_edits(cat):
    w = cat.add_window(["n_3 763.33", "n_3 764.35"], brightest="n_3 764.35", name="N III 764")
    assert isinstance(w, Window) and cat.windows["N III 764"] == w
    b = cat.add_window(["o_4 787.71", "s_5 786.47"], brightest="o_4 787.71", blend=True)
    assert b.name == "o_4 787.71 blend" and b.blend
    with pytest.raises(CatalogError, match="unknown line"):
        cat.add_window(["ne_8 770.42", "xx_9 123.45"], brightest="ne_8 770.42", name="bad")
    with pytest.raises(CatalogError, match="is not in the window"):
        cat.add_window(["ne_8 770.42", "mg_8 772.26"], brightest="o_6 1031.91", name="bad")
    with pytest.raises(CatalogError, match="say which"):
        cat.add_window(["ne_8 770.42", "mg_8 772.26"], name="bad")
    with pytest.raises(CatalogError, match="already exists"):
        cat.add_window(["ne_8 770.42"], name="Ne VIII 770")
    with pytest.raises(CatalogError, match="more than once"):
        cat.add_window(["ne_8 770.42", "ne_8 770.42"], brightest="ne_8 770.42", name="bad")
    with pytest.raises(CatalogError, match="at least one line"):
        cat.add_window([], name="bad")
    assert "bad" not in cat.windows
    cat.remove_window("N III 764")
    assert "N III 764" not in cat.windows and "n_3 763.33" in cat
    with pytest.raises(CatalogError, match="no window named"):
        cat.remove_window("N III 764")


def test_constructor_rejects_duplicates(cat):
    line = cat["ne_8 770.42"]
    with pytest.raises(CatalogError, match="duplicate line name"):
        LineCatalog([line, line])
    with pytest.raises(CatalogError, match="unknown line"):
        LineCatalog([line], [Window("w", ("mg_8 772.26",), "mg_8 772.26")])


# ----------------------------------------------------------------------------- invalid files
def _write(tmp_path, data) -> Path:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(format="something else"), "'format' must be"),
        (lambda d: d.update(format_version=99), "unsupported format_version 99"),
        (lambda d: d.update(extra=1), "unknown top-level key"),
        (lambda d: d.update(lines={}), "'lines' must be a list"),
        (lambda d: d["lines"][3].pop("rest_wavelength"), r"lines\[3\]: missing required"),
        (lambda d: d["lines"][3].update(rest_wavelength="703"), "must be a number"),
        (lambda d: d["lines"][3].update(rest_wavelength=float("nan")), "must be finite"),
        (lambda d: d["lines"][3].update(colour="red"), "unknown key"),
        (lambda d: d["lines"][3].update(ion="o3"), "CHIANTI-style"),
        (lambda d: d["lines"][3].update(fip=-1.0), "fip=-1.0 outside"),
        (lambda d: d["lines"][3].update(fip=14.0), "differs from elements"),
        (lambda d: d["lines"].append(dict(d["lines"][3])), "duplicate line name"),
        (lambda d: d["windows"][0]["lines"].append("zz_1 700.00"), "unknown line"),
        (lambda d: d["windows"][0].update(brightest="ne_8 770.42"), "is not in the window"),
        (lambda d: d["windows"][1].update(name=d["windows"][0]["name"]), "already exists"),
        (lambda d: d["windows"][0].update(blend="yes"), "blend must be true or false"),
        (lambda d: d["windows"][0].update(size=3), "unknown key"),
    ],
)
def test_invalid_files(raw, tmp_path, mutate, message):
    mutate(raw)
    path = _write(tmp_path, raw)
    with pytest.raises(CatalogError, match=message) as info:
        LineCatalog.load(path)
    assert str(path) in str(info.value)  # the message names the file


def test_unreadable_files(tmp_path):
    with pytest.raises(CatalogError, match="not valid JSON"):
        LineCatalog.load(_write(tmp_path, "{not json"))
    with pytest.raises(CatalogError, match="cannot read catalog"):
        LineCatalog.load(tmp_path / "missing.json")
    with pytest.raises(CatalogError, match="top level must be a JSON object"):
        LineCatalog.load(_write(tmp_path, "[1, 2]"))
