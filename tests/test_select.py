"""File selection (saffron_xr.select_files) and SPICE file-name parsing."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import saffron_xr
from saffron_xr import SpiceFileError, select_files
from saffron_xr.io.filenames import parse_kind, parse_spice_filename, spice_filename
from saffron_xr.testing import make_spice_l2

# --- file names ------------------------------------------------------------------------------


def test_parse_real_file_names():
    info = parse_spice_filename("solo_L2_spice-n-ras_20220317T002536_V03_100663832-017.fits")
    assert (info.level, info.slit, info.kind, info.kind_full) == ("L2", "n", "ras", "ras")
    assert info.date == dt.datetime(2022, 3, 17, 0, 25, 36)
    assert (info.version, info.spiobsid, info.rasterno) == (3, 100663832, 17)
    assert not (info.dumbbell or info.intensity or info.concat)

    info = parse_spice_filename(
        "/archive/2020/06/02/solo_L2_spice-n-ras-db_20200602T081733_V01_12583760-000.fits"
    )
    assert info.kind == "ras" and info.dumbbell and info.kind_full == "ras-db"
    assert info.name.startswith("solo_L2") and info.spiobsid == 12583760

    info = parse_spice_filename(
        "solo_L2_spice-n-ras_20220317T002536_V03_100663832-017_ne8-770-window.fits"
    )
    assert info.suffix == "ne8-770-window" and info.rasterno == 17

    info = parse_spice_filename("solo_L1_spice-w-exp-int_20210314T135349751_V22_1234-001.fits.gz")
    assert (info.level, info.slit, info.kind_full, info.extension) == (
        "L1",
        "w",
        "exp-int",
        ".fits.gz",
    )
    assert info.date == dt.datetime(2021, 3, 14, 13, 53, 49, 751000)
    assert info.version == 22

    info = parse_spice_filename("solo_L3_spice-concat-n-sit_20230101T000000_V01_5-000.fits")
    assert info.concat and info.kind == "sit" and info.level == "L3"


@pytest.mark.parametrize(
    "name",
    [
        "README.txt",
        "solo_L2_eui-fsi174-image_20220317T002536_V03.fits",
        "solo_L2_spice-n-xyz_20220317T002536_V03_100663832-017.fits",
        "solo_L2_spice-n-ras_20220317_V03_100663832-017.fits",
        "solo_L2_spice-n-ras_20221317T002536_V03_100663832-017.fits",  # month 13
        "solo_L2_spice-n-ras_20220317T002536_V03_100663832-017.nc",
    ],
)
def test_parse_rejects_other_names_naming_the_file(name):
    with pytest.raises(SpiceFileError) as err:
        parse_spice_filename(name)
    assert name in str(err.value)


def test_spice_filename_examples():
    assert (
        spice_filename("ras", "2024-04-25T12:19:22.5", 1, 251658647, 0)
        == "solo_L2_spice-n-ras_20240425T121922_V01_251658647-000.fits"
    )
    assert (
        spice_filename("w-sit-db", dt.datetime(2020, 6, 20, 23, 59, 1), 12, 16777431, 5)
        == "solo_L2_spice-w-sit-db_20200620T235901_V12_16777431-005.fits"
    )
    with pytest.raises(ValueError, match="unknown SPICE file kind"):
        spice_filename("raster", "2024-01-01", 1, 1, 0)


@given(
    kind=st.sampled_from(["ras", "sit", "exp", "ras-db", "sit-db", "exp-int", "w-ras", "w-exp"]),
    date=st.datetimes(min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2035, 12, 31)),
    version=st.integers(1, 99),
    spiobsid=st.integers(0, 2**32),
    rasterno=st.integers(0, 999),
    level=st.sampled_from(["L1", "L2", "L3"]),
)
def test_spice_filename_round_trips(kind, date, version, spiobsid, rasterno, level):
    name = spice_filename(kind, date, version, spiobsid, rasterno, level=level)
    info = parse_spice_filename(name)
    assert info.date == date.replace(microsecond=0)
    assert (info.version, info.spiobsid, info.rasterno, info.level) == (
        version,
        spiobsid,
        rasterno,
        level,
    )
    slit, base, db, intensity = parse_kind(kind)
    assert info.kind == base and info.dumbbell == db and info.intensity == intensity
    assert info.slit == (slit or "n")
    assert info.matches_kind(kind) and info.matches_kind(base)


# --- a generated archive tree ----------------------------------------------------------------

# (kind, date, version, spiobsid, rasterno)
TREE = [
    ("ras", "2024-04-24T23:50:00", 1, 100, 0),
    ("ras", "2024-04-25T00:10:00", 1, 101, 0),
    ("ras", "2024-04-25T00:10:00", 2, 101, 0),  # newer version of the previous file
    ("ras", "2024-04-25T01:00:00", 1, 101, 1),
    ("ras-db", "2024-04-25T06:00:00", 1, 102, 0),
    ("sit", "2024-04-25T12:00:00", 3, 103, 0),
    ("sit", "2024-04-25T12:00:00", 2, 103, 0),  # older version
    ("exp", "2024-04-25T23:59:59", 1, 104, 0),
    ("w-exp", "2024-04-26T00:00:00", 1, 105, 0),
    ("ras", "2024-05-01T10:00:00", 4, 106, 2),
]


def _folder(root: Path, date: str) -> Path:
    d = np.datetime64(date, "D").astype(object)
    return root / f"{d.year:04d}" / f"{d.month:02d}" / f"{d.day:02d}"


@pytest.fixture
def archive(tmp_path):
    """YYYY/MM/DD tree of empty files named like SPICE L2 files, plus unrelated files."""
    root = tmp_path / "level2"
    for kind, date, version, obsid, raster in TREE:
        folder = _folder(root, date)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / spice_filename(kind, date, version, obsid, raster)).touch()
    (root / "2024" / "04" / "25" / "README.txt").write_text("not data")
    (root / "2024" / "04" / "25" / "notes_truth.nc").touch()
    (root / "2024" / "04" / "25" / "solo_L2_eui-fsi174-image_20240425T000000_V01.fits").touch()
    return root


def _names(paths):
    return [p.name for p in paths]


def test_folder_is_searched_recursively_sorted_and_deduplicated(archive):
    files = select_files(archive)
    assert all(isinstance(p, Path) and p.is_file() for p in files)
    infos = [parse_spice_filename(p) for p in files]
    # 10 SPICE files, two superseded by newer versions
    assert len(files) == 8
    assert [(i.spiobsid, i.rasterno, i.version) for i in infos] == [
        (100, 0, 1),
        (101, 0, 2),
        (101, 1, 1),
        (102, 0, 1),
        (103, 0, 3),
        (104, 0, 1),
        (105, 0, 1),
        (106, 2, 4),
    ]
    assert [i.date for i in infos] == sorted(i.date for i in infos)
    assert files[0].parent == archive / "2024" / "04" / "24"
    # through the package namespace too
    assert saffron_xr.select_files(str(archive)) == files


def test_date_range(archive):
    files = select_files(archive, start="2024-04-25", end="2024-04-25")  # the whole day
    assert [parse_spice_filename(p).spiobsid for p in files] == [101, 101, 102, 103, 104]
    files = select_files(archive, start="2024-04-25T06:00:00", end="2024-04-25T12:00:00")
    assert [parse_spice_filename(p).spiobsid for p in files] == [102, 103]
    files = select_files(archive, start=dt.datetime(2024, 4, 25, 12, 0, 1))
    assert [parse_spice_filename(p).spiobsid for p in files] == [104, 105, 106]
    files = select_files(archive, end=np.datetime64("2024-04-25T00:10:00"))
    assert [parse_spice_filename(p).spiobsid for p in files] == [100, 101]
    files = select_files(archive, start=dt.date(2024, 4, 26), end=dt.date(2024, 4, 30))
    assert [parse_spice_filename(p).spiobsid for p in files] == [105]
    assert select_files(archive, start="2025-01-01") == []
    with pytest.raises(ValueError, match="cannot read a date"):
        select_files(archive, start="yesterday")


def test_kind_filter(archive):
    def obsids(**kw):
        return [parse_spice_filename(p).spiobsid for p in select_files(archive, **kw)]

    assert obsids(kind="ras") == [100, 101, 101, 102, 106]  # dumbbell rasters are rasters
    assert obsids(kind="ras-db") == [102]
    assert obsids(kind="sit") == [103]
    assert obsids(kind="exp") == [104, 105]
    assert obsids(kind="w-exp") == [105]
    assert obsids(kind="n-exp") == [104]
    assert obsids(kind=["sit", "exp"]) == [103, 104, 105]
    with pytest.raises(ValueError, match="unknown SPICE file kind"):
        select_files(archive, kind="raster")


def test_spiobsid_and_level_filters(archive):
    files = select_files(archive, spiobsid=101)
    assert [
        (parse_spice_filename(p).rasterno, parse_spice_filename(p).version) for p in files
    ] == [
        (0, 2),
        (1, 1),
    ]
    assert len(select_files(archive, spiobsid=[100, 106, 999])) == 2
    assert len(select_files(archive, level="L2")) == 8
    assert select_files(archive, level="L1") == []


def test_glob_and_lists(archive):
    pattern = str(archive / "**" / "*-sit_*.fits")
    files = select_files(pattern)
    assert _names(files) == ["solo_L2_spice-n-sit_20240425T120000_V03_103-000.fits"]
    day = archive / "2024" / "04" / "25"
    explicit = sorted(day.glob("solo_L2_spice-*.fits"))
    assert len(explicit) == 7
    files = select_files([*explicit, str(archive / "2024" / "05")])
    assert [parse_spice_filename(p).spiobsid for p in files] == [101, 101, 102, 103, 104, 106]
    # the same file reached twice (folder and explicit path) counts once
    assert select_files([day, explicit[0]]) == select_files(day)
    assert select_files(str(archive / "nothing-*.fits")) == []


def test_same_version_in_two_folders_counts_once(tmp_path):
    name = spice_filename("ras", "2024-01-01T00:00:00", 1, 7, 0)
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / name).touch()
    files = select_files(tmp_path)
    assert files == [tmp_path / "a" / name]


def test_bad_sources_name_the_file(tmp_path):
    missing = tmp_path / "missing_folder"
    with pytest.raises(FileNotFoundError, match="missing_folder"):
        select_files(missing)
    other = tmp_path / "my_data.fits"
    other.touch()
    with pytest.raises(SpiceFileError, match="my_data.fits"):
        select_files([other])
    with pytest.raises(TypeError, match="source items"):
        select_files([42])


# --- study / SOOP filters read headers ---------------------------------------------------


TINY = [{"extname": "N IV 765 - Peak", "lines": [("n_4", 765.147, 3.0)], "wavemin": 763.2}]


@pytest.fixture
def headered(tmp_path):
    """Tiny real FITS files with different STUDY / SOOPNAME headers."""
    specs = [
        ("SCI_COMPO_SL04_60S_FF", "R_SMALL_MRES_MCAD_Composition-Mapping", 201),
        ("SCI_COMPO_SL04_30S_FF", "L_FULL_HRES_HCAD_Coronal-Dynamics", 202),
        ("SCI_DYN-MED_SL04_5S_FF", "R_SMALL_HRES_HCAD_Fast-Wind; L_BOTH_MRES_MCAD_Flare", 203),
    ]
    for study, soop, obsid in specs:
        make_spice_l2(
            tmp_path / "2024" / "04" / "25",
            windows=TINY,
            ny=2,
            nx=1,
            nwave=8,
            study=study,
            soopname=soop,
            spiobsid=obsid,
            date_obs=f"2024-04-25T0{obsid - 200}:00:00",
        )
    return tmp_path


def test_study_filter_reads_headers(headered):
    def obsids(**kw):
        return [parse_spice_filename(p).spiobsid for p in select_files(headered, **kw)]

    assert obsids() == [201, 202, 203]
    assert obsids(study="SCI_COMPO_SL04_60S_FF") == [201]
    assert obsids(study="sci_compo*") == [201, 202]  # patterns, case-insensitive
    assert obsids(study=["SCI_DYN*", "SCI_COMPO_SL04_30S_FF"]) == [202, 203]
    assert obsids(study="SCI_COMPO") == []  # exact unless a pattern is given
    assert obsids(study="SCI_COMPO*", spiobsid=202) == [202]


def test_soop_filter_matches_any_listed_campaign(headered):
    def obsids(**kw):
        return [parse_spice_filename(p).spiobsid for p in select_files(headered, **kw)]

    assert obsids(soop="R_SMALL_MRES_MCAD_Composition-Mapping") == [201]
    assert obsids(soop="L_BOTH_MRES_MCAD_Flare") == [203]  # second of two SOOPs
    assert obsids(soop="*Coronal-Dynamics") == [202]
    assert obsids(soop="R_SMALL_*", study="SCI_DYN*") == [203]


def test_header_filter_on_broken_file_names_it(tmp_path):
    bad = tmp_path / spice_filename("ras", "2024-01-01", 1, 9, 0)
    bad.write_bytes(b"this is not a FITS file at all")
    with pytest.raises(SpiceFileError, match=bad.name):
        select_files(tmp_path, study="*")
    # without a header filter the name alone is enough
    assert select_files(tmp_path) == [bad]


def test_real_spice_folder(spice_dir):
    """The real test data: names with suffixes, header-only files, unrelated files skipped."""
    files = select_files(spice_dir)
    assert _names(files) == [
        "solo_L2_spice-n-ras-db_20200602T081733_V01_12583760-000.fits",
        "solo_L2_spice-n-sit_20200620T235901_V01_16777431-000.fits",
        "solo_L2_spice-n-ras_20220317T002536_V03_100663832-017_ne8-770-window.fits",
        "solo_L2_spice-n-exp_20240101T213346_V02_234881027-000.fits",
    ]
    calibration = select_files(spice_dir, study="CAL_FULLSP-PREP_TS_SL04_0.5S_FD")
    assert _names(calibration) == [files[1].name, files[3].name]
    assert _names(select_files(spice_dir, soop="R_BOTH_HRES_HCAD_Nanoflares")) == [files[2].name]
    assert _names(select_files(spice_dir, kind="ras-db")) == [files[0].name]
