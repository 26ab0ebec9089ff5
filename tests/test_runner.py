"""Batch runner: failures reported by name, resume, atomic outputs, Ctrl-C, schedulers.

Inputs are small generated SPICE L2 rasters (two composition windows, seeded). The slow
tests start ``distributed.LocalCluster``s of two worker processes; each worker compiles the
numba kernel once (10-20 s on a loaded 2-core machine), which dominates their run time.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from astropy.io import fits

from saffron_xr.io.netcdf import open_results
from saffron_xr.pipeline.config import validate_config
from saffron_xr.pipeline.runner import output_path, run
from saffron_xr.testing import composition_windows, make_spice_l2

WINDOWS = ("N IV 765 - Peak", "Ne VIII 770 - Peak")
NODES = ("N_IV_765_Peak", "Ne_VIII_770_Peak")


def _windows():
    return [w for w in composition_windows() if w["extname"] in WINDOWS]


def _raster(folder: Path, spiobsid: int, *, ny: int = 40, nx: int = 8, seed: int = 0) -> Path:
    """A small two-window raster named by the SPICE convention; returns its path."""
    make_spice_l2(folder, windows=_windows(), ny=ny, nx=nx, seed=seed, spiobsid=spiobsid)
    (path,) = folder.glob(f"*_{spiobsid}-000.fits")
    return path


def _config(root: Path, source, out: str = "out", **sections) -> dict:
    cfg = {
        "files": {"source": source},
        "output": {"folder": out},
        "scheduler": {"kind": "threads", "n_workers": 2},
        "_base_dir": str(root),
    }
    for key, value in sections.items():
        cfg.setdefault(key, {}).update(value)
    return cfg


def _by_name(summary) -> dict:
    return {Path(f.path).name: f for f in summary.files}


def _assert_same_results(path_a: Path, path_b: Path) -> None:
    """Every window group of two result files holds the same numbers."""
    a, b = open_results(path_a), open_results(path_b)
    assert sorted(a.children) == sorted(b.children) == sorted(NODES)
    for name in NODES:
        da, db = a[name].to_dataset().compute(), b[name].to_dataset().compute()
        assert set(da.data_vars) == set(db.data_vars)
        xr.testing.assert_equal(da, db)
        assert np.isfinite(da["amplitude"]).mean() > 0.9


@pytest.fixture
def batch(tmp_path):
    """A folder with three good rasters, a truncated SPICE file and a non-SPICE FITS."""
    data = tmp_path / "data"
    data.mkdir()
    good = [_raster(data, 1000 + i, seed=i) for i in range(3)]
    corrupt = _raster(data, 2000, seed=9)
    raw = corrupt.read_bytes()
    corrupt.write_bytes(raw[: len(raw) // 2])
    other = data / "calibration_notes.fits"
    fits.PrimaryHDU(np.zeros((4, 4), np.float32)).writeto(other)
    (data / "README.txt").write_text("not a FITS file: neither processed nor reported\n")
    return {"root": tmp_path, "good": good, "corrupt": corrupt, "other": other}


def test_batch_reports_failures_by_name_and_resumes(batch):
    root = batch["root"]
    cfg = _config(root, "data")
    summary = run(cfg)

    files = _by_name(summary)
    assert len(files) == 5
    assert {f.path for f in summary.done} == {str(p) for p in batch["good"]}
    failed = {Path(f.path).name: f.error for f in summary.failed}
    assert set(failed) == {batch["corrupt"].name, batch["other"].name}
    assert failed[batch["other"].name] == "not a SPICE file name"
    assert "truncated" in failed[batch["corrupt"].name]
    text = str(summary)
    assert "3 done, 0 skipped, 2 failed" in text
    for name in failed:
        assert f"FAILED   {name}" in text

    outputs = {p: output_path(validate_config(cfg, base_dir=str(root)), p) for p in batch["good"]}
    for path, out in outputs.items():
        assert files[path.name].output == str(out)
        assert out.is_file()
        tree = open_results(out)
        assert sorted(tree.children) == sorted(NODES)
        assert tree.attrs["saffron_xr_complete"] == 1
        assert path.name in tree.attrs["input_files"]
        assert float(np.isfinite(tree["Ne_VIII_770_Peak"]["amplitude"]).mean()) > 0.9
        assert files[path.name].n_converged > 0.9 * files[path.name].n_spectra > 0
    assert not output_path(validate_config(cfg, base_dir=str(root)), batch["corrupt"]).exists()
    assert sorted(p.name for p in (root / "out").iterdir()) == sorted(
        o.name for o in outputs.values()
    )

    # rerun: the three complete outputs are skipped, untouched; the failures are reported again
    mtimes = {out: out.stat().st_mtime_ns for out in outputs.values()}
    again = run(cfg)
    assert sorted(f.path for f in again.skipped) == sorted(str(p) for p in batch["good"])
    assert not again.done
    assert {Path(f.path).name for f in again.failed} == set(failed)
    assert {out: out.stat().st_mtime_ns for out in outputs.values()} == mtimes
    assert "0 done, 3 skipped, 2 failed" in str(again)


def test_partial_outputs_are_cleaned_and_redone(batch):
    root = batch["root"]
    cfg = _config(root, [str(p) for p in batch["good"]])
    first = run(cfg)
    assert len(first.done) == 3
    out = [Path(f.output) for f in first.done]
    intact = out[2].stat().st_mtime_ns

    # a writer killed mid-write leaves a hidden .part file (see io.netcdf.to_netcdf) ...
    out[0].unlink()
    leftover = out[0].with_name(f".{out[0].name}.0badc0de.part")
    leftover.write_bytes(out[1].read_bytes()[:1000])
    # ... and a non-atomic copy can leave a truncated file under the final name
    out[1].write_bytes(out[1].read_bytes()[:1000])
    stale = out[2].with_name(f".{out[2].name}.deadbeef.part")
    stale.write_bytes(b"\x89HDF")

    second = run(cfg)
    assert sorted(f.output for f in second.done) == sorted(str(p) for p in out[:2]), str(second)
    assert [f.output for f in second.skipped] == [str(out[2])]
    assert not second.failed
    assert not leftover.exists() and not stale.exists()
    assert out[2].stat().st_mtime_ns == intact
    assert sorted(p.name for p in (root / "out").iterdir()) == sorted(p.name for p in out)
    for path in out[:2]:
        assert open_results(path).attrs["saffron_xr_complete"] == 1


def test_explicit_non_spice_file_is_reported_not_raised(batch):
    cfg = _config(batch["root"], [str(batch["other"]), str(batch["corrupt"])])
    summary = run(cfg)
    assert [Path(f.path).name for f in summary.failed] == [
        batch["other"].name,
        batch["corrupt"].name,
    ]
    assert summary.failed[0].error == "not a SPICE file name"
    assert not (batch["root"] / "out").exists()


def test_prep_options_adaptive_binning_and_outputs_inside_source(tmp_path):
    """Despike, denoise and adaptive binning [1, 3] run; L3 FITS written next to the netCDF
    inside the scanned folder are not mistaken for (non-SPICE) inputs on a rerun."""
    raster = _raster(tmp_path, 3000, ny=48, nx=8, seed=5)
    cfg = _config(
        tmp_path,
        ".",
        out="results",
        prep={
            "despike": {"enabled": True, "threshold": 5.0},
            "denoise": {"enabled": True, "threshold": 3.0},
            "binning": {"levels": [1, 3]},
        },
    )
    cfg["output"]["l3_fits"] = True
    summary = run(cfg)
    assert not summary.failed, str(summary)
    (done,) = summary.done
    assert done.path == str(raster)
    tree = open_results(done.output)
    ds = tree["Ne_VIII_770_Peak"].to_dataset()
    assert {"amplitude", "centroid", "width", "level", "level_index"} <= set(ds.data_vars)
    levels = set(np.unique(ds["level"].values).tolist())
    assert levels <= {1, 3} and 1 in levels
    assert float(np.isfinite(ds["amplitude"]).mean()) > 0.9
    config = tree.attrs["config"]
    assert '"despike"' in config and '"denoise"' in config
    l3 = sorted((tmp_path / "results").glob("*_L3.fits"))
    assert len(l3) == len(NODES)

    again = run(cfg)
    assert [f.path for f in again.skipped] == [str(raster)]
    assert not again.failed, str(again)


@pytest.mark.parametrize("where", ["fit", "write"])
def test_ctrl_c_leaves_no_file_under_the_final_name(tmp_path, monkeypatch, where):
    first = _raster(tmp_path, 4000, seed=1)
    second = _raster(tmp_path, 4001, seed=2)
    cfg = _config(tmp_path, ".")
    summary = run({**cfg, "files": {"source": [str(first)]}})
    done = Path(summary.done[0].output)
    before = done.read_bytes()

    if where == "fit":
        # a real SIGINT, sent from a dask worker thread while the main thread waits in compute
        from saffron_xr.fit import core

        original = core._fit_block
        sent = threading.Event()

        def interrupted(*args, **kwargs):
            if not sent.is_set():
                sent.set()
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.5)
            return original(*args, **kwargs)

        monkeypatch.setattr(core, "_fit_block", interrupted)
    else:
        # Ctrl-C after netCDF wrote the temporary file, before it is renamed
        original = xr.DataTree.to_netcdf

        def interrupted(self, path, *args, **kwargs):
            original(self, path, *args, **kwargs)
            assert Path(path).is_file()
            raise KeyboardInterrupt

        monkeypatch.setattr(xr.DataTree, "to_netcdf", interrupted)

    cfg["output"]["resume"] = False  # redo the first file too: its output must stay intact
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    if where == "fit":
        assert sent.is_set()
    monkeypatch.undo()
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [done.name]  # no .part, no second output
    assert done.read_bytes() == before
    cfg["output"]["resume"] = True
    after = run(cfg)
    assert [f.path for f in after.done] == [str(second)]
    assert [f.path for f in after.skipped] == [str(first)]


def test_run_from_code_prints_nothing(tmp_path, capsys, caplog):
    _raster(tmp_path, 5000, seed=3)
    (tmp_path / "junk.fits").write_bytes(b"SIMPLE  =                    T")
    summary = run(_config(tmp_path, "."))
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ""
    assert len(summary.done) == 1 and len(summary.failed) == 1
    # the failure goes to the logger instead
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert any("junk.fits" in r.getMessage() for r in errors)


# ----------------------------------------------------------------------------- clusters


CLUSTER_CHUNKS = {"chunks": {"y": 16, "x": 8}}  # 24 chunks per window


@pytest.fixture(scope="module")
def cluster_case(tmp_path_factory):
    """A raster large enough to kill a worker mid-fit, and its results on threads."""
    root = tmp_path_factory.mktemp("cluster")
    _raster(root, 7000, ny=96, nx=32, seed=6)
    reference = run(_config(root, ".", out="threads", **CLUSTER_CHUNKS))
    assert len(reference.done) == 1, str(reference)
    return root, Path(reference.done[0].output)


@pytest.mark.slow
def test_local_cluster_equals_threads(cluster_case):
    root, reference = cluster_case
    local = run(
        _config(
            root,
            ".",
            out="local",
            scheduler={"kind": "local", "n_workers": 2, "threads_per_worker": 1},
            **CLUSTER_CHUNKS,
        )
    )
    assert "LocalCluster (2 workers)" in local.scheduler
    assert len(local.done) == 1, str(local)
    _assert_same_results(reference, Path(local.done[0].output))


def _fit_progress(dask_scheduler):
    """(fit tasks finished, fit tasks not yet run, keys in memory per worker) on the scheduler."""
    from dask.utils import key_split

    finished = pending = 0
    held: dict[str, int] = {}
    for key, ts in dask_scheduler.tasks.items():
        if key_split(key).startswith("fit_block"):
            if ts.state in ("memory", "released", "forgotten"):
                finished += 1
            else:
                pending += 1
        if ts.state == "memory":
            for ws in ts.who_has:
                held[ws.address] = held.get(ws.address, 0) + 1
    return finished, pending, held


@pytest.mark.slow
def test_killed_worker_run_completes_with_correct_outputs(cluster_case):
    from distributed import Client, LocalCluster

    root, reference = cluster_case

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        pids = client.run(os.getpid)
        result = {}

        def target():
            try:
                result["summary"] = run(
                    _config(root, ".", out="cluster", scheduler={"kind": "auto"}, **CLUSTER_CHUNKS)
                )
            except BaseException as exc:  # surfaced by the assertions below
                result["error"] = exc

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        deadline = time.monotonic() + 120
        victim = None
        while time.monotonic() < deadline and thread.is_alive():
            finished, pending, held = client.run_on_scheduler(_fit_progress)
            if finished >= 4 and pending >= 8 and held:
                victim = max(held, key=held.get)
                break
            time.sleep(0.1)
        assert victim is not None, f"never caught the run mid-way: {result}"
        assert thread.is_alive()
        os.kill(pids[victim], signal.SIGKILL)

        thread.join(timeout=150)
        assert not thread.is_alive(), "the run did not finish after a worker was killed"
        assert "error" not in result, result.get("error")
        summary = result["summary"]
        assert "distributed client" in summary.scheduler
        assert len(summary.done) == 1, str(summary)
        # the nanny restarted the killed worker
        client.wait_for_workers(2, timeout=60)
        assert pids[victim] not in client.run(os.getpid).values()

    _assert_same_results(reference, Path(summary.done[0].output))
