"""The bad-input corpus (tests/bad_inputs.py): one clear message per file, the batch goes on.

Each case is written from a real file in ``$SAFFRON_TEST_DATA/spice`` or a small generated
two-window raster. The reader must raise one :class:`SpiceFileError` whose message is the
file name and the expected problem, or open the file (and log a warning naming the file
where a window is left out). A batch over the whole corpus (runner API, then the
``saffron-xr run`` command in a subprocess) must report every bad file with that problem,
finish every good file and window, and exit non-zero because files failed.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import bad_inputs as corpus
import numpy as np
import pytest
import xarray as xr
from astropy.io import fits

from saffron_xr import open_spice
from saffron_xr.errors import SpiceFileError
from saffron_xr.io.netcdf import open_results
from saffron_xr.pipeline.runner import run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sources(tmp_path_factory, shared_data) -> dict:
    base = tmp_path_factory.mktemp("base")
    return {"raster": corpus.make_base_raster(base), "data": shared_data}


def test_the_corpus_is_large_enough():
    assert len(corpus.CASES) >= 20
    assert len(set(corpus.case_names())) == len(corpus.CASES)
    assert sum(case.problem is not None for case in corpus.CASES) >= 20


@pytest.mark.parametrize("case", corpus.CASES, ids=corpus.case_names())
def test_reader_gives_one_clear_message(case, sources, tmp_path, caplog):
    path = corpus.build(case, sources, tmp_path, corpus.CASES.index(case))
    if case.problem is not None:
        with pytest.raises(SpiceFileError) as info:
            open_spice(path)
        message = str(info.value)
        # the file first, then the problem, on one line
        assert message.startswith(f"{path}: "), message
        assert "\n" not in message
        assert info.value.path == str(path)
        assert re.search(case.problem, info.value.problem), message
        return
    with caplog.at_level(logging.WARNING, logger="saffron_xr"):
        tree = open_spice(path)
    assert tuple(tree.children) == (case.windows_open or case.windows_done)
    for node in tree.children.values():
        radiance = node.dataset["radiance"]
        assert radiance.sizes["wavelength"] > 0
        assert np.isfinite(node.dataset["hpln"].values).all()
        assert radiance.isel(wavelength=0).values.shape == radiance.shape[:-1]  # bytes read
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    if case.warns is None:
        assert not warnings
    else:
        (warning,) = warnings
        assert warning.startswith(f"{path}: ")
        assert re.search(case.warns, warning), warning
        assert tree.attrs["windows_without_data"] == "Ne VIII 770 - Peak"
        with pytest.raises(SpiceFileError, match=r"window 'Ne VIII 770 - Peak' has no data"):
            open_spice(path, windows="Ne VIII 770 - Peak")


def test_a_file_unreadable_by_permissions_is_named(sources, tmp_path, monkeypatch):
    """Simulated: the reader's first read of the file is refused (works as root too)."""
    from saffron_xr.io import _spice_header

    path = corpus.build(corpus.CASES[0], sources, tmp_path, 99)
    shutil.copyfile(sources["raster"], path)
    real_open = open

    def refuse(file, *args, **kwargs):
        if Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(_spice_header, "open", refuse, raising=False)
    with pytest.raises(SpiceFileError) as info:
        open_spice(path)
    assert str(info.value) == f"{path}: cannot be read: permission denied"


def test_mixed_files_of_one_observation(tmp_path):
    """Files of one SPIOBSID that cannot be stacked are named, never silently NaN-padded."""
    from saffron_xr.testing import composition_windows, make_spice_l2

    windows = [w for w in composition_windows() if w["extname"] in corpus.WINDOWS]

    def raster(sub, **kw):
        kw.setdefault("ny", 24)
        kw.setdefault("nx", 4)
        truth = make_spice_l2(tmp_path / sub, windows=windows, spiobsid=77, seed=1, **kw)
        return Path(truth.attrs["path"])

    first = raster("a", rasterno=0)
    cases = {
        "shape": (raster("b", rasterno=1, ny=20), r"has shape \{'y': 20, 'x': 4"),
        "kind": (raster("c", rasterno=2, kind="sit"), r"is a sit-and-stare, unlike"),
        "windows": (
            Path(make_spice_l2(tmp_path / "d", windows=windows[:1], ny=24, nx=4, spiobsid=77,
                               rasterno=3).attrs["path"]),
            r"has windows \['N_IV_765_Peak'\], unlike",
        ),
    }  # fmt: skip
    # the same raster with its wavelength scale moved by a tenth of a pixel
    moved = tmp_path / "e" / first.name.replace("-000.fits", "-004.fits")
    moved.parent.mkdir()
    with fits.open(first) as hdul:
        hdul[0].header["RASTERNO"] = 4
        hdul[0].header["CRVAL3"] += 0.1 * hdul[0].header["CDELT3"]
        hdul.writeto(moved)
    cases["wavelength"] = (moved, r"has other wavelengths than in")
    for what, (other, problem) in cases.items():
        with pytest.raises(SpiceFileError) as info:
            open_spice([first, other])
        assert info.value.path == str(other), what
        assert re.search(problem, info.value.problem), (what, str(info.value))
        assert first.name in info.value.problem, what

    # stackable: same layout, another raster number: stacked along "raster", no NaN added
    again = tmp_path / "f" / first.name.replace("-000.fits", "-005.fits")
    again.parent.mkdir()
    with fits.open(first) as hdul:
        hdul[0].header["RASTERNO"] = 5
        hdul[1].header["RASTERNO"] = 5
        hdul.writeto(again)
    tree = open_spice([first, again])
    radiance = tree["N_IV_765_Peak"].dataset.radiance
    assert radiance.sizes["raster"] == 2
    single = open_spice(first)["N_IV_765_Peak"].dataset.radiance
    xr.testing.assert_equal(radiance.isel(raster=0, drop=True), single)


# ----------------------------------------------------------------------- the whole corpus


def _summary_line(text: str, name: str) -> str:
    # the file's own line (a failed window of a done file adds a line that names it too)
    line = next(line for line in text.splitlines() if name in line)
    return line


def _unreadable_for_a_subprocess(path: Path) -> list[str] | None:
    """chmod 000 ``path``; the command prefix under which it is unreadable, or None.

    Root reads any file whatever its mode (CAP_DAC_OVERRIDE). As root the command then
    runs under ``setpriv`` with every capability dropped (still uid 0, so it can write the
    root-owned output folder); if setpriv cannot do that here, None.
    """
    os.chmod(path, 0)
    probe = [sys.executable, "-c", f"open({str(path)!r}, 'rb')"]
    prefixes = [[]]
    if os.geteuid() == 0 and shutil.which("setpriv"):
        prefixes.append(["setpriv", "--bounding-set=-all", "--inh-caps=-all"])
    for prefix in prefixes:
        done = subprocess.run(prefix + probe, capture_output=True, text=True, timeout=60)
        if done.returncode != 0 and "PermissionError" in done.stderr:
            return prefix
    return None


@pytest.mark.slow
def test_corpus_batch_reports_each_file_and_finishes_the_rest(sources, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    built = {
        case.name: corpus.build(case, sources, data, i) for i, case in enumerate(corpus.CASES)
    }
    good = [corpus.make_base_raster(data, spiobsid=5000 + i, seed=i) for i in range(2)]
    config = tmp_path / "config.yaml"
    config.write_text(
        "files:\n  source: data\n"
        "output:\n  folder: out\n"
        "scheduler:\n  kind: threads\n  n_workers: 2\n"
    )

    summary = run(config)
    text = str(summary)
    by_name = {Path(f.path).name: f for f in summary.files}
    inputs = [c.name for c in corpus.CASES if c.batch != "not-an-input"]
    assert len(by_name) == len(inputs) + len(good), text
    for path in good:
        assert by_name[path.name].status == "done", text
    for name, case in ((c.name, c) for c in corpus.CASES if c.name in inputs):
        result = by_name[built[name].name]
        line = _summary_line(text, built[name].name)
        if case.batch == "done":
            assert result.status == "done", (name, line)
            tree = open_results(result.output)
            assert tuple(sorted(tree.children)) == tuple(sorted(case.windows_done)), name
            for node in tree.children.values():
                assert float(np.isfinite(node.dataset["amplitude"]).mean()) > 0.5, name
            continue
        if case.batch == "failed" and result.status == "done":
            # a problem confined to one window's header fails that window alone (issue 14
            # item 5): the file is written with the other window, the failure reported
            assert result.failed_windows, (name, line)
            assert re.search(case.reason, text), (name, text)
            continue
        if case.batch == "failed":
            assert result.status == "failed", (name, line)
        elif case.batch == "window-failed":
            assert result.status in ("failed", "done"), (name, line)
            if result.status == "done":
                tree = open_results(result.output)
                assert tuple(sorted(tree.children)) == tuple(sorted(case.windows_done)), name
        else:  # "not-done": failed or skipped, with the reason
            # listed explicitly a header-only or L3 file fails; found in a folder it is ignored
            assert result.status in ("failed", "skipped", "ignored"), (name, line)
            assert result.output is None or not Path(result.output).exists(), name
        if result.status == "ignored":  # the runner's folder-mode reason, not the reader's
            assert re.search(r"header only|L3|level 3", line, flags=re.I), (name, line)
        elif case.batch == "window-failed" and result.status == "done":
            # the failed window is reported on its own line of the summary
            assert re.search(case.reason, text), (name, text)
            assert result.failed_windows, (name, line)
        else:
            assert re.search(case.reason, line), (name, line)
        if result.status == "failed":
            assert re.search(case.reason, result.error), (name, result.error)
            assert result.output is None or not Path(result.output).exists(), name
    out = tmp_path / "out"
    written = sorted(p.name for p in out.iterdir() if p.name != "campaign_index.csv")
    assert not [p for p in written if p.endswith(".part")], written
    assert sorted(Path(f.output).name for f in summary.done) == written

    # the command line over the same configuration: the complete outputs are kept, the bad
    # files reported again (one line each, naming the file and the problem), exit status 1;
    # one more file made unreadable (chmod 000) is reported too
    locked = data / good[1].name.replace("-000.fits", "-001.fits")
    shutil.copyfile(good[1], locked)
    prefix = _unreadable_for_a_subprocess(locked)
    if prefix is None:  # root, and setpriv cannot drop privileges here: the file is readable
        locked.unlink()  # (the in-process test above covers the message)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cli = subprocess.run(
        [*(prefix or []), sys.executable, "-m", "saffron_xr.cli", "run", str(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    if prefix is not None:
        os.chmod(locked, 0o644)
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert "Traceback" not in cli.stdout + cli.stderr
    for path in good:
        assert re.search(rf"skipped\s+{re.escape(path.name)}", cli.stdout), cli.stdout
    for name, case in ((c.name, c) for c in corpus.CASES if c.name in inputs):
        if case.batch == "done":
            continue
        line = _summary_line(cli.stdout, built[name].name)
        if "ignored" in line:  # folder mode: the runner's reason (header only, L3)
            assert re.search(r"header only|L3|level 3", line, flags=re.I), (name, line)
        elif line.lstrip().startswith("skipped"):  # written before, a window failed alone
            assert by_name[built[name].name].failed_windows, (name, line)
        elif line.lstrip().startswith("done"):  # a window failed alone
            assert re.search(case.reason, cli.stdout), (name, cli.stdout)
        else:
            assert re.search(case.reason, line), (name, line)
    if prefix is not None:
        line = _summary_line(cli.stdout, locked.name)
        assert "FAILED" in line and "permission denied" in line, line
    assert sorted(p.name for p in out.iterdir() if p.name != "campaign_index.csv") == written

    # only good files left: every one complete, exit status 0
    for path in data.iterdir():
        if path not in good:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    ok = subprocess.run(
        [sys.executable, "-m", "saffron_xr.cli", "run", str(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr


@pytest.mark.slow
def test_an_all_nan_window_fails_alone(sources, tmp_path):
    case = next(c for c in corpus.CASES if c.name == "all-nan-window")
    path = corpus.build(case, sources, tmp_path, 0)
    cfg = {
        "files": {"source": [str(path)]},
        "output": {"folder": "out"},
        "scheduler": {"kind": "threads", "n_workers": 2},
        "_base_dir": str(tmp_path),
    }
    summary = run(cfg)
    (result,) = summary.files
    assert re.search(case.reason, str(summary)), str(summary)
    assert result.status == "done", str(summary)
    tree = open_results(result.output)
    assert tuple(tree.children) == case.windows_done
    assert float(np.isfinite(tree["N_IV_765_Peak"].dataset["amplitude"]).mean()) > 0.9


def test_older_versions_of_one_product_are_set_aside_with_a_word(sources, tmp_path, caplog):
    """Two versions of one raster (same SPIOBSID and raster number): the newer is used, and
    the log says which file was set aside and why."""
    from saffron_xr.io.select import select_files

    old = tmp_path / corpus.spice_filename("ras", "2024-04-25T12:19:22", 1, 4242, 0)
    new = tmp_path / corpus.spice_filename("ras", "2024-04-25T12:19:22", 3, 4242, 0)
    for path in (new, old):
        shutil.copyfile(sources["raster"], path)
    with caplog.at_level(logging.INFO, logger="saffron_xr"):
        assert select_files(tmp_path) == [new]
    (message,) = [r.getMessage() for r in caplog.records if str(old) in r.getMessage()]
    assert message == f"{old}: superseded by version 3 ({new})"
