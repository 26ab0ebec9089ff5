"""Configuration file: template, validation messages, scheduler selection."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dask
import pytest
import yaml

from saffron_xr.cli import main
from saffron_xr.pipeline.config import (
    ConfigError,
    default_config,
    load_config,
    template_text,
    validate_config,
)
from saffron_xr.pipeline.scheduler import jobqueue_cluster, scheduler_context
from saffron_xr.testing import make_spice_l2


def test_init_template_validates_as_written(tmp_path):
    path = tmp_path / "saffron.yaml"
    assert main(["init", str(path)]) == 0
    assert path.read_text() == template_text()
    cfg = load_config(path)
    assert cfg["scheduler"]["kind"] == "auto"
    assert cfg["_base_dir"] == str(tmp_path.resolve())
    # every section of the defaults is documented by a comment in the template
    for section in default_config():
        assert f"\n{section}:" in "\n" + template_text()
    assert main(["init", str(path)]) == 1  # refuses to overwrite
    # valid only when the run can start: the template's source "." holds no SPICE file yet
    assert main(["run", str(path), "--check"]) == 2
    make_spice_l2(tmp_path, ny=4, nx=2, nwave=40)
    assert main(["run", str(path), "--check"]) == 0


def test_check_says_valid_only_when_the_run_can_start(tmp_path, capsys):
    make_spice_l2(tmp_path / "data", ny=4, nx=2, nwave=40)
    path = tmp_path / "batch.yaml"
    cases = {
        "files: {source: missing}\n": "missing does not exist",
        "files: {source: 'data/*.fts'}\n": "matches no file",
        "files: {source: data}\noutput: {folder: no/such/out}\n": "does not exist",
        "files: {source: data}\noutput: {folder: data/x.fits}\n": "output.folder",
        "files: {source: data}\nscheduler: {kind: address}\n": "scheduler.address",
    }
    (tmp_path / "data" / "x.fits").write_text("a file where the output folder should be")
    for text, message in cases.items():
        path.write_text(text)
        assert main(["run", str(path), "--check"]) == 2, text
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    path.write_text("files: {source: data}\n")
    assert main(["run", str(path), "--check", "--scheduler", "address"]) == 2
    assert "scheduler.address" in capsys.readouterr().err
    args = ["run", str(path), "--check", "--scheduler", "address", "--address", "tcp://h:8786"]
    assert main(args) == 0
    assert capsys.readouterr().out == f"{path}: valid\n"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"prep": {"despike": {"treshold": 3}}}, "unknown key 'prep.despike.treshold'"),
        ({"scheduler": {"kind": "mpi"}}, "'scheduler.kind' must be one of"),
        ({"output": {"resume": "yes"}}, "'output.resume' must be true/false"),
        ({"files": {"kind": "raster"}}, "'files.kind' must be ras, sit, exp"),
        ({"prep": {"binning": {"sizes": [3, 1]}}}, "'prep.binning.sizes' must increase"),
        ({"prep": {"binning": {"sizes": [0]}}}, "positive integers"),
        ({"prep": {"binning": {"sizes": [1], "levels": [1]}}}, "old name of 'sizes'"),
        ({"derive": {"mask": "all"}}, "'derive.mask'"),
        ({"scheduler": {"files_in_flight": 0}}, "'scheduler.files_in_flight'"),
        ({"catalog": {"background_degree": 3}}, "'catalog.background_degree'"),
        ({"catalog": {"background_degree": "linear"}}, "must be auto, 0, 1 or 2"),
        ({"derive": {"doppler_reference": "sun"}}, "'derive.doppler_reference'"),
        ({"files": {"start": "yesterday"}}, "'files.start' is not an ISO date"),
        ({"scheduler": {"kind": "address"}}, "'scheduler.address' is required"),
        ({"fuse": [["only_one"]]}, "'fuse[0]'"),
        ({"chunks": {"y": 0}}, "'chunks.y'"),
        ({"bogus": 1}, "unknown key 'bogus'"),
    ],
)
def test_invalid_configs_name_the_key(config, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")) as info:
        validate_config(config, where="my.yaml")
    assert str(info.value).startswith("my.yaml")


def test_bad_files(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("files: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_config(p)
    assert str(p) in str(info.value)
    p.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(p)
    assert main(["run", str(p)]) == 2


def test_partial_config_fills_defaults():
    cfg = validate_config({"output": {"folder": "out"}})
    assert cfg["output"]["folder"] == "out"
    assert cfg["output"]["resume"] is True
    assert cfg["prep"]["noise"]["dark_factor"] == 2
    assert yaml.safe_load(template_text()) == default_config()
    # the batch runner's guess defaults are guess_model's
    from saffron_xr.catalog import GuessOptions

    assert cfg["catalog"]["background_degree"] == GuessOptions().background_degree == "auto"
    assert cfg["catalog"]["min_snr"] == 3.0


def test_threads_scheduler_context():
    cfg = validate_config({"scheduler": {"kind": "threads", "n_workers": 2}})
    with scheduler_context(cfg["scheduler"]) as name:
        assert dask.config.get("scheduler") == "threads"
        assert dask.config.get("num_workers") == 2
        assert "threads" in name
    assert dask.config.get("scheduler", None) != "threads"


def _needs_dask_jobqueue():
    """Skip without the hpc extra; find_spec, not importorskip, which would import it
    without keeping the SIGINT handler (see the test below)."""
    import importlib.util

    if importlib.util.find_spec("dask_jobqueue") is None:
        pytest.skip("the hpc extra (dask-jobqueue) is not installed")


_SIGINT_SCRIPT = """
import os, signal, sys, threading, time
from saffron_xr.pipeline.config import validate_config
from saffron_xr.pipeline.scheduler import jobqueue_cluster
assert "dask_jobqueue" not in sys.modules
before = signal.getsignal(signal.SIGINT)
if sys.argv[1] == "imported_before":  # e.g. by the user's own code: its handler is in place
    import dask_jobqueue
    assert signal.getsignal(signal.SIGINT) is not before
cfg = validate_config({"scheduler": {"kind": "slurm", "jobqueue": {
    "cores": 1, "memory": "1GB", "walltime": "00:01:00"}}})
if sys.argv[1] == "thread":
    box = []
    def build():
        try:
            jobqueue_cluster(cfg["scheduler"]).close()
        except RuntimeError as exc:
            box.append(str(exc))
    t = threading.Thread(target=build)
    t.start()
    t.join()
    print(box)
    sys.exit(0)
jobqueue_cluster(cfg["scheduler"]).close()
assert "dask_jobqueue" in sys.modules
assert signal.getsignal(signal.SIGINT) is before, signal.getsignal(signal.SIGINT)
try:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)
except KeyboardInterrupt:
    print("KeyboardInterrupt")
"""


@pytest.mark.parametrize("case", ["fresh", "imported_before", "thread"])
def test_importing_dask_jobqueue_keeps_the_sigint_handler(tmp_path, case):
    """dask-jobqueue 0.9.0 replaces SIGINT's handler with sys.exit() when imported (Ctrl-C
    would end a run with SystemExit and exit status 0). In a fresh process, building the
    SLURM cluster imports it and the handler stays: Ctrl-C is still KeyboardInterrupt. If
    the user's code imported it before, Python's handler is put back. From another thread
    (where that release cannot be imported) the error says to import it in the main one."""
    _needs_dask_jobqueue()
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", _SIGINT_SCRIPT, case], capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    if case == "thread":
        assert "must first be imported in the main thread" in proc.stdout, proc.stdout
    else:
        assert "KeyboardInterrupt" in proc.stdout, proc.stdout + proc.stderr


def test_slurm_job_script_from_config():
    _needs_dask_jobqueue()
    cfg = validate_config(
        {
            "scheduler": {
                "kind": "slurm",
                "jobqueue": {
                    "cores": 4,
                    "memory": "8GB",
                    "processes": 2,
                    "walltime": "00:30:00",
                    "queue": "short",
                    "account": "solar",
                    "job_extra_directives": ["--exclusive"],
                },
            }
        }
    )
    cluster = jobqueue_cluster(cfg["scheduler"])
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH -p short" in script
    assert "#SBATCH -A solar" in script
    assert "#SBATCH -t 00:30:00" in script
    assert "#SBATCH --exclusive" in script
    assert "--nworkers 2" in script or "--nprocs 2" in script


def test_sections_are_the_keywords_of_their_functions():
    """Each prep/catalog/derive section holds the keywords of the function it configures
    (besides ``enabled`` and the section's own switches)."""
    import dataclasses
    import inspect

    from saffron_xr.catalog import guess_model
    from saffron_xr.catalog.guess_options import GuessOptions
    from saffron_xr.derive import derive_all
    from saffron_xr.prep import bin_levels, denoise, despike, spice_error

    cfg = default_config()
    own = {"enabled", "calibrate", "path", "thresholds"}  # switches, a path, fit_lines' own
    for section, functions in [
        (cfg["prep"]["noise"], [spice_error]),
        (cfg["prep"]["despike"], [despike]),
        (cfg["prep"]["denoise"], [denoise]),
        (cfg["prep"]["binning"], [bin_levels]),
        (cfg["catalog"], [guess_model]),
        (cfg["derive"], [derive_all]),
    ]:
        accepted = {p for f in functions for p in inspect.signature(f).parameters}
        if guess_model in functions:  # its settings are the fields of one options object
            accepted |= {f.name for f in dataclasses.fields(GuessOptions)}
        assert set(section) - own <= accepted, (section, functions)
    assert set(cfg["derive"]) - {"enabled"} == set(inspect.signature(derive_all).parameters) - {
        "params"
    }


def test_keys_of_older_templates_are_renamed(caplog):
    import logging

    caplog.set_level(logging.INFO, logger="saffron_xr")
    old = {
        "prep": {"despike": {"threshold": 4.0}, "binning": {"levels": [1, 3],
                 "min_valid_fraction": 0.25}},
        "derive": {"radiance": True, "widths": True, "doppler_reference": "rest"},
    }  # fmt: skip
    cfg = validate_config(old)
    assert cfg["prep"]["despike"]["n_sigma"] == 4.0
    assert cfg["prep"]["binning"]["sizes"] == [1, 3]
    assert cfg["prep"]["binning"]["min_valid"] == 0.25
    assert "radiance" not in cfg["derive"] and cfg["derive"]["doppler_reference"] == "rest"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "'prep.binning.levels' is now called 'sizes'" in logged
    assert "'derive.widths' is no longer a setting" in logged
