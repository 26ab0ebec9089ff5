"""The ``saffron-xr`` command: info, init, run, demo, and the installed console script."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from astropy.io import fits

from saffron_xr.cli import main
from saffron_xr.fit.status import FitStatus
from saffron_xr.io.netcdf import open_results
from saffron_xr.pipeline import demo
from saffron_xr.pipeline.config import load_config, template_text
from saffron_xr.testing import composition_windows, make_spice_l2

# "  <node name> <detector> <dim=size x ...> <first>- <last> A"
WINDOW_LINE = re.compile(
    r"^  (?P<name>\S+)\s+(?P<det>SW|LW)\s+(?P<shape>\S+=\d+(?: x \S+=\d+)*)\s+"
    r"(?P<lo>\d+\.\d+)-\s*(?P<hi>\d+\.\d+) A$"
)


def _header_windows(path: Path) -> list[dict]:
    """Detector, sizes and first/last wavelength (Angstrom) of each window, from the header."""
    out = []
    with fits.open(path) as hdul:
        for hdu in hdul:
            h = hdu.header
            if h.get("NAXIS", 0) != 4:
                continue
            assert h["CUNIT3"] == "nm"
            first = h["CRVAL3"] + (1 - h["CRPIX3"]) * h["CDELT3"]
            last = h["CRVAL3"] + (h["NAXIS3"] - h["CRPIX3"]) * h["CDELT3"]
            out.append(
                {
                    "det": h["DETECTOR"],
                    "sizes": {"y": h["NAXIS2"], "x": h["NAXIS1"], "wavelength": h["NAXIS3"]},
                    "range": (10 * first, 10 * last),
                    "study": h["STUDY"],
                    "spiobsid": h["SPIOBSID"],
                }
            )
    return out


def test_info_prints_windows_shapes_and_wavelength_ranges(exp_file, ne8_file, capsys):
    assert main(["info", str(exp_file), str(ne8_file)]) == 0
    out = capsys.readouterr().out
    blocks = out.split(f"{ne8_file}\n")
    assert blocks[0].startswith(f"{exp_file}\n") and len(blocks) == 2
    for path, text in zip((exp_file, ne8_file), blocks, strict=True):
        expected = _header_windows(path)
        assert f"study {expected[0]['study']}" in text
        assert f"SPIOBSID {expected[0]['spiobsid']}" in text
        found = [m for m in map(WINDOW_LINE.match, text.splitlines()) if m]
        assert len(found) == len(expected)
        for m, exp in zip(found, expected, strict=True):
            assert m["det"] == exp["det"]
            sizes = dict(item.split("=") for item in m["shape"].split(" x "))
            assert {k: int(v) for k, v in sizes.items()} == exp["sizes"]
            assert float(m["lo"]) == pytest.approx(exp["range"][0], abs=0.006)
            assert float(m["hi"]) == pytest.approx(exp["range"][1], abs=0.006)
    assert "FLT02_Two_Window_OB_ID_253" in out and "Ne_VIII_770_Peak_data" in out


def test_info_on_a_bad_file_names_it_on_stderr(tmp_path, ne8_file, capsys):
    bad = tmp_path / "notes.fits"
    fits.PrimaryHDU(np.zeros((2, 2), np.float32)).writeto(bad)
    assert main(["info", str(bad), str(ne8_file)]) == 1
    captured = capsys.readouterr()
    assert str(bad) in captured.err
    assert str(bad) not in captured.out
    assert "Ne_VIII_770_Peak_data" in captured.out  # the good file is still described


def test_init_writes_a_template_that_validates(tmp_path, capsys):
    path = tmp_path / "batch.yaml"
    assert main(["init", str(path)]) == 0
    assert path.read_text() == template_text()
    assert "wrote" in capsys.readouterr().out
    cfg = load_config(path)
    assert cfg["output"]["resume"] is True
    path.write_text("files: {source: data}\n")
    assert main(["init", str(path)]) == 1
    assert str(path) in capsys.readouterr().err
    assert main(["init", str(path), "--force"]) == 0
    assert path.read_text() == template_text()


def test_run_config_end_to_end_quiet(tmp_path, capsys):
    data = tmp_path / "data"
    windows = [w for w in composition_windows() if w["extname"] == "Ne VIII 770 - Peak"]
    make_spice_l2(data, windows=windows, ny=32, nx=6, seed=11, spiobsid=8000)
    config = tmp_path / "tiny.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "files": {"source": "data"},
                "output": {"folder": "results"},
                "scheduler": {"kind": "threads", "n_workers": 2},
            }
        )
    )
    assert main(["run", str(config), "--check"]) == 0
    assert capsys.readouterr().out == f"{config}: valid\n"

    assert main(["-q", "run", str(config), "--scheduler", "synchronous"]) == 0
    captured = capsys.readouterr()
    head = captured.out.splitlines()[0]
    assert head.startswith("saffron_xr run: 1 done, 0 skipped, 0 failed")
    assert head.endswith("on synchronous")
    assert captured.err == ""
    (result,) = (tmp_path / "results").glob("*_8000-000_saffron.nc")
    tree = open_results(result)
    assert list(tree.children) == ["Ne_VIII_770_Peak"]
    assert float(np.isfinite(tree["Ne_VIII_770_Peak"]["centroid"]).mean()) > 0.9

    # resume, and a bad file turns the exit status to 1
    fits.PrimaryHDU(np.zeros((2, 2), np.float32)).writeto(data / "flatfield.fits")
    assert main(["run", str(config), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "0 done, 1 skipped, 1 failed" in out
    assert "FAILED   flatfield.fits: not a SPICE file name" in out


@pytest.mark.slow
def test_demo_writes_results_quicklooks_and_a_fip_map(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from saffron_xr.io.filenames import parse_spice_filename

    # the CLI demo with a shrunken composition raster
    monkeypatch.setattr(demo, "DEMO_RASTER", {**demo.DEMO_RASTER, "ny": 48, "nx": 12})
    folder = tmp_path / "saffron_demo"
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--output", str(folder), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "saffron_xr run: 2 done, 0 skipped, 0 failed" in out
    assert f"outputs in {folder}/" in out
    # everything under the named folder, nothing in the current one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saffron_demo"]
    # the generated input is clearly synthetic by name: not a real product's name or date
    (synthetic,) = (folder / "inputs").glob("*synthetic*.fits")
    info = parse_spice_filename(synthetic)
    assert info.date.year < 2020  # before Solar Orbiter's launch
    results = sorted((folder / "results").glob("*_saffron.nc"))
    assert len(results) == 2
    pngs = sorted((folder / "results").glob("*_saffron.png")) + [folder / "fip_bias_synthetic.png"]
    for png in pngs:
        assert png.stat().st_size < 2_000_000
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = Image.open(png).size
        assert width * height <= 10_000_000
    raster = open_results(results[0])
    assert "synthetic" in results[0].name
    assert len(raster.children) == len(composition_windows())
    assert raster["Ne_VIII_770_Peak"].sizes["y"] == 48
    ne8 = open_results(results[1])
    assert list(ne8.children) == ["Ne_VIII_770_Peak_data"]
    # the real window has rows without data (status ALL_NAN); the others are fitted
    ds = ne8["Ne_VIII_770_Peak_data"].to_dataset().compute()
    attempted = ~ds["status"].isin([FitStatus.ALL_NAN, FitStatus.TOO_FEW_VALID])
    assert int(attempted.sum()) > 1500
    assert float(np.isfinite(ds["centroid"]).where(attempted).mean()) > 0.95
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert total < 20_000_000

    # the FIP-bias map: the LCR method on the fitted radiances of the four FIP lines
    fig = demo.fip_figure(results[0], tmp_path / "again.png")
    assert "FIP bias" in fig.axes[4].get_title()
    assert "SYNTHETIC" in fig.get_suptitle()

    # a rerun resumes; other raster settings regenerate the raster and redo its results
    assert (
        demo.run_demo(folder, raster={"ny": 48, "nx": 12})
        .skipped[0]
        .path.endswith("_synthetic.fits")
    )
    again = demo.run_demo(folder, raster={"ny": 36, "nx": 12})
    assert len(again.skipped) == 1 and len(again.done) == 1
    assert open_results(results[0])["Ne_VIII_770_Peak"].sizes["y"] == 36


def test_console_script_help():
    exe = shutil.which("saffron-xr") or str(Path(sys.executable).with_name("saffron-xr"))
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for command in ("init", "run", "info", "demo"):
        assert command in proc.stdout


# ----------------------------------------------------------------------------- signals


def _signal_batch(root: Path, n: int = 3) -> Path:
    data = root / "data"
    windows = [w for w in composition_windows() if w["extname"] == "Ne VIII 770 - Peak"]
    for i in range(n):
        make_spice_l2(data, windows=windows, ny=48, nx=8, seed=i, spiobsid=8100 + i)
    config = root / "batch.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "files": {"source": "data"},
                "output": {"folder": "results", "quicklook": True},
                "scheduler": {"kind": "threads", "n_workers": 2},
            }
        )
    )
    return config


def _command(*args) -> list[str]:
    return [sys.executable, "-m", "saffron_xr.cli", *args]


def _env() -> dict:
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env["MPLBACKEND"] = "Agg"
    return env


@pytest.mark.slow
@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_signal_stops_the_batch_cleanly_and_a_rerun_completes(tmp_path, signame):
    """The signal at random points of a real batch (a subprocess): exit 130 / 143, no
    traceback, a report of what finished and how to resume, nothing half-written under a
    final name; the rerun finishes the batch and keeps what was done."""
    import signal
    import time

    config = _signal_batch(tmp_path)
    sig = getattr(signal, signame)
    rng = np.random.default_rng(14 if signame == "SIGINT" else 15)
    results = tmp_path / "results"
    for delay in rng.uniform(0.5, 20.0, size=2):
        proc = subprocess.Popen(
            _command("run", str(config)),
            cwd=tmp_path,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(delay)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
        if proc.returncode == 0:  # finished before the signal: nothing to check here
            continue
        assert proc.returncode == 128 + int(sig), (proc.returncode, err)
        assert "Traceback" not in err, err
        assert f"interrupted by {signame}" in err
        assert "to resume, run the same command again" in err
        assert not list(results.glob(".*.part")) if results.exists() else True
        for nc in results.glob("*.nc") if results.exists() else []:
            tree = open_results(nc)
            assert tree.attrs["saffron_xr_complete"] == 1
            tree.close()
            assert nc.name.replace("_saffron.nc", "") in err  # listed as finished
    proc = subprocess.run(
        _command("-q", "run", str(config)), cwd=tmp_path, env=_env(), capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert len(list(results.glob("*_saffron.nc"))) == 3
    assert len(list(results.glob("*_saffron.png"))) == 3
    assert not list(results.glob(".*.part"))


# ----------------------------------------------------------------------------- small items


def test_version_and_options_after_the_sub_command(tmp_path, capsys):
    import saffron_xr
    from saffron_xr import ne8_window_path

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"saffron-xr {saffron_xr.__version__}"
    # -v and -q after the sub-command, as before it
    (tmp_path / "data").mkdir()
    config = tmp_path / "c.yaml"
    config.write_text("files: {source: data}\n")
    from saffron_xr.cli import build_parser

    for argv in (["-v", "run", str(config)], ["run", str(config), "-v"]):
        args = build_parser().parse_args(argv)
        assert args.verbose and not args.quiet
    for argv in (["-q", "run", str(config)], ["run", str(config), "--quiet"]):
        args = build_parser().parse_args(argv)
        assert args.quiet and not args.verbose
    assert main(["run", str(config), "-v", "--allow-empty"]) == 0
    assert main(["info", str(ne8_window_path()), "-q"]) == 0


def test_a_batch_with_nothing_to_do_exits_2_with_one_line(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    config = tmp_path / "c.yaml"
    config.write_text("files: {source: data}\n")
    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no SPICE file found" in err[0] and str(config) in err[0]
    config.write_text("files: {source: missing}\n")
    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err
    assert "missing does not exist" in err and "Traceback" not in err
    assert main(["run", str(config.with_name("absent.yaml"))]) == 2


def test_help_documents_arguments_and_imports_no_heavy_module():
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "saffron_xr.cli", "--help"],
        capture_output=True, text=True, env=_env(), timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()}
    for heavy in ("numba", "dask", "scipy", "matplotlib", "astropy", "netCDF4"):
        assert heavy not in imported, f"--help imports {heavy}"
    for command in ("init", "run", "info", "demo", "--version", "130", "143"):
        assert command in proc.stdout
    for sub, words in (("run", ["YAML configuration file", "--address", "--force"]),
                       ("info", ["folders"]), ("init", ["file to write"])):  # fmt: skip
        text = subprocess.run(
            _command(sub, "--help"), capture_output=True, text=True, env=_env(), timeout=120
        ).stdout
        for w in words:
            assert w in text, (sub, w)


def test_info_accepts_folders(tmp_path, ne8_file, capsys):
    import shutil as sh

    sub = tmp_path / "2022" / "03" / "17"
    sub.mkdir(parents=True)
    sh.copy(ne8_file, sub / ne8_file.name)
    assert main(["info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert str(sub / ne8_file.name) in out and "Ne_VIII_770_Peak_data" in out
    (tmp_path / "empty").mkdir()
    assert main(["info", str(tmp_path / "empty")]) == 1
    assert "no FITS file" in capsys.readouterr().err


def test_dask_chatter_is_quiet_unless_verbose(tmp_path, monkeypatch):
    import logging

    from saffron_xr import cli

    monkeypatch.delenv("DASK_LOGGING__DISTRIBUTED", raising=False)
    levels = {n: logging.getLogger(n).level for n in ("distributed", "dask")}
    try:
        cli._setup_logging(cli.build_parser().parse_args(["info", "x"]))
        assert logging.getLogger("distributed").getEffectiveLevel() == logging.WARNING
        assert logging.getLogger("distributed.nanny").getEffectiveLevel() >= logging.WARNING
        assert os.environ["DASK_LOGGING__DISTRIBUTED"] == "warning"  # for worker processes
        monkeypatch.delenv("DASK_LOGGING__DISTRIBUTED")
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)
        cli._setup_logging(cli.build_parser().parse_args(["info", "x", "-v"]))
        assert "DASK_LOGGING__DISTRIBUTED" not in os.environ
    finally:
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)
