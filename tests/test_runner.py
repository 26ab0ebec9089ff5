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
from saffron_xr.pipeline.campaign import INDEX_COLUMNS, INDEX_NAME
from saffron_xr.pipeline.config import validate_config
from saffron_xr.pipeline.runner import FileResult, output_path, run
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
    with open_results(path_a) as a, open_results(path_b) as b:
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
    assert "converged = fit status CONVERGED" in text

    outputs = {p: output_path(validate_config(cfg, base_dir=str(root)), p) for p in batch["good"]}
    for path, out in outputs.items():
        assert files[path.name].output == str(out)
        assert out.is_file()
        tree = open_results(out)
        assert sorted(tree.children) == sorted(NODES)
        assert tree.attrs["saffron_xr_complete"] == 1
        assert path.name in tree.attrs["input_files"]
        assert float(np.isfinite(tree["Ne_VIII_770_Peak"]["amplitude"]).mean()) > 0.9
        # converged = status CONVERGED (0) only; converged at a bound (1) counted apart
        status = np.concatenate([tree[n]["status"].values.ravel() for n in NODES])
        fitted = ~np.isin(status, [4, 5])
        assert files[path.name].n_spectra == fitted.sum() > 0
        assert files[path.name].n_converged == (status == 0).sum()
        assert files[path.name].n_at_bound == (status == 1).sum()
    assert not output_path(validate_config(cfg, base_dir=str(root)), batch["corrupt"]).exists()
    assert sorted(p.name for p in (root / "out").iterdir()) == sorted(
        [o.name for o in outputs.values()] + [INDEX_NAME]
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
    assert sorted(p.name for p in (root / "out").iterdir()) == sorted(
        [p.name for p in out] + [INDEX_NAME]
    )
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
    # the output folder is checked (created) before any work; nothing but the campaign
    # index (which lists the failure) is written in it
    assert [p.name for p in (batch["root"] / "out").iterdir()] == [INDEX_NAME]


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
    # no .part, no second output
    assert sorted(p.name for p in out.iterdir()) == sorted([done.name, INDEX_NAME])
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


# ----------------------------------------------------------------------------- campaigns


@pytest.fixture(scope="module")
def campaign_case(tmp_path_factory):
    """Three rasters, and their results made one file at a time on threads."""
    root = tmp_path_factory.mktemp("campaign")
    for i in range(3):
        _raster(root / "data", 7100 + i, ny=64, nx=16, seed=20 + i)
    cfg = _config(root, "data", out="one_by_one", scheduler={"files_in_flight": 1},
                  **CLUSTER_CHUNKS)  # fmt: skip
    reference = run(cfg)
    assert len(reference.done) == 3, str(reference)
    return root, {Path(f.path).name: Path(f.output) for f in reference.done}


def _assert_campaign_equals(summary, reference: dict) -> None:
    assert len(summary.done) == len(reference) and summary.ok, str(summary)
    for f in summary.done:
        _assert_same_results(reference[Path(f.path).name], Path(f.output))


def _read_index(folder: Path) -> list[dict]:
    import csv

    with open(folder / INDEX_NAME, newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == INDEX_COLUMNS
        return list(reader)


def test_files_in_flight_on_threads_give_the_same_outputs_and_an_index(campaign_case):
    root, reference = campaign_case
    cfg = _config(root, "data", out="in_flight", scheduler={"files_in_flight": 3},
                  **CLUSTER_CHUNKS)  # fmt: skip
    summary = run(cfg)
    _assert_campaign_equals(summary, reference)
    assert [Path(f.path).name for f in summary.files] == sorted(reference)  # the run's order

    rows = _read_index(root / "in_flight")
    assert [Path(r["input"]).name for r in rows] == sorted(reference)
    for row, f in zip(rows, summary.files, strict=True):
        tree = open_results(f.output)
        status = np.concatenate([tree[n]["status"].values.ravel() for n in NODES])
        fitted = ~np.isin(status, [4, 5])
        assert row["status"] == "done" and row["reason"] == "" and row["fip_output"] == ""
        assert row["output"] == f.output
        assert int(row["spectra"]) == fitted.sum()
        assert float(row["converged_fraction"]) == pytest.approx(
            (status == 0).sum() / fitted.sum()
        )
        assert float(row["at_bound_fraction"]) == pytest.approx((status == 1).sum() / fitted.sum())
        floor = np.median([tree[n].attrs["noise_floor_ratio"] for n in NODES])
        photon = np.median([tree[n].attrs["noise_signal_ratio"] for n in NODES])
        assert float(row["noise_floor_ratio"]) == pytest.approx(floor, rel=1e-5)
        assert float(row["noise_photon_ratio"]) == pytest.approx(photon, rel=1e-5)
        assert float(row["seconds"]) > 0

    # a rerun rewrites the index: skipped files, and a failure with its reason
    bad = root / "data" / "solo_L2_spice-n-ras_20240425T121922_V01_7199-000.fits"
    bad.write_bytes(b"SIMPLE  =                    T")
    try:
        again = run(cfg)
    finally:
        bad.unlink()
    rows = {Path(r["input"]).name: r for r in _read_index(root / "in_flight")}
    assert len(again.skipped) == 3 and len(again.failed) == 1
    assert {rows[n]["status"] for n in reference} == {"skipped"}
    assert rows[bad.name]["status"] == "failed"
    assert rows[bad.name]["reason"] == again.failed[0].error != ""
    assert rows[bad.name]["spectra"] == rows[bad.name]["output"] == ""


def test_fip_hook_output_goes_to_the_index(tmp_path, monkeypatch):
    """With fip.enabled, the FIP step runs on the written results, holding the netCDF lock;
    its file is indexed. Without the step's module, the file is done and the hook is skipped
    with a note."""
    import sys
    import types

    from saffron_xr.pipeline import campaign, filejob

    out = tmp_path / "results.nc"
    out.write_bytes(b"")
    cfg = {"fip": {"enabled": True, "lines": ["x"]}}
    calls = []
    fake = types.ModuleType("saffron_xr.pipeline.fip_step")

    def fip_for_file(fcfg, results_path, full):
        # netCDF is not thread-safe: no other file may write while the step reads and writes
        free = []
        probe = threading.Thread(target=lambda: free.append(filejob.NETCDF_LOCK.acquire(False)))
        probe.start()
        probe.join()
        if free[0]:
            filejob.NETCDF_LOCK.release()
        calls.append((fcfg, results_path, full, free[0]))
        return results_path.with_name("results_fip.nc")

    fake.fip_for_file = fip_for_file
    monkeypatch.setitem(sys.modules, "saffron_xr.pipeline.fip_step", fake)
    made, note = filejob._fip(cfg, out)
    assert made == str(tmp_path / "results_fip.nc") and note == ""
    assert calls == [(cfg["fip"], out, cfg, False)]  # the lock was held by the step
    row = campaign.index_row(FileResult(str(out), "done", str(out), fip_output=made))
    assert row["fip_output"] == made
    assert filejob._fip({"fip": {"enabled": False}}, out) == (None, "")
    monkeypatch.setitem(sys.modules, "saffron_xr.pipeline.fip_step", None)  # not installed
    assert filejob._fip(cfg, out) == (None, "FIP step not available")


def _file_keys(dask_scheduler):
    """Key prefixes the scheduler has seen."""
    return sorted(dask_scheduler.task_prefixes)


@pytest.mark.slow
def test_workers_write_and_the_client_gets_only_summaries(campaign_case, monkeypatch, capsys,
                                                         caplog):  # fmt: skip
    """On a cluster each file runs on a worker, which writes it; no fit task of a file goes
    through the scheduler (the worker computes it with its own threads). With progress, one
    distributed progress bar covers the campaign's files, and each file finished is logged."""
    import logging

    caplog.set_level(logging.INFO, logger="saffron_xr")
    from distributed import Client, LocalCluster, get_worker

    from saffron_xr.io import netcdf

    root, reference = campaign_case
    writers = []
    original = netcdf.to_netcdf

    def recording(results, path, **kwargs):
        writers.append(get_worker().address)  # raises ValueError outside a worker
        return original(results, path, **kwargs)

    monkeypatch.setattr(netcdf, "to_netcdf", recording)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=2, processes=False, dashboard_address=None
        ) as cluster,  # fmt: skip
        Client(cluster) as client,
    ):
        summary = run(_config(root, "data", out="workers", scheduler={"kind": "auto"},
                              **CLUSTER_CHUNKS), progress=True)  # fmt: skip
        prefixes = client.run_on_scheduler(_file_keys)
        shown = ""
        for _ in range(50):  # the bar is drawn from its own thread
            shown += capsys.readouterr().out
            if "100% Completed" in shown:
                break
            time.sleep(0.1)
        workers = set(client.scheduler_info()["workers"])
    assert "distributed client" in summary.scheduler
    assert all(isinstance(f, FileResult) for f in summary.files)
    _assert_campaign_equals(summary, reference)
    assert len(writers) == 3 and set(writers) <= workers
    assert [p for p in prefixes if p.startswith("saffron-file")]
    assert not [p for p in prefixes if "fit" in p], prefixes
    assert len(_read_index(root / "workers")) == 3
    assert "100% Completed" in shown, shown
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("campaign:")]
    assert len(logged) == 3 and logged[-1].startswith("campaign: 3/3 files finished"), logged


@pytest.mark.slow
def test_no_shared_filesystem_gathers_to_the_client(campaign_case):
    from distributed import Client, LocalCluster

    root, reference = campaign_case
    cfg = _config(root, "data", out="gathered", scheduler={"kind": "auto"}, **CLUSTER_CHUNKS)
    cfg["output"]["shared_filesystem"] = False
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,  # fmt: skip
        Client(cluster) as client,
    ):
        summary = run(cfg)
        prefixes = client.run_on_scheduler(_file_keys)
    _assert_campaign_equals(summary, reference)
    assert [p for p in prefixes if "fit" in p]  # the fit ran as tasks of the cluster
    assert not [p for p in prefixes if p.startswith("saffron-file")]


def _files_processing(dask_scheduler):
    """{file task key: worker address} for the file tasks running now."""
    return {
        str(key): ts.processing_on.address
        for key, ts in dask_scheduler.tasks.items()
        if str(key).startswith("saffron-file") and ts.state == "processing"
        and ts.processing_on is not None
    }  # fmt: skip


@pytest.mark.slow
def test_a_worker_killed_mid_campaign_every_file_still_done(campaign_case):
    """Kill a LocalCluster worker process while it runs a file: dask reruns the file on
    another worker, every file is done, the outputs equal the one-at-a-time threaded ones, no
    partial file is left, and a rerun skips them all."""
    from distributed import Client, LocalCluster

    root, reference = campaign_case
    cfg = _config(root, "data", out="killed", scheduler={"kind": "auto"}, **CLUSTER_CHUNKS)
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
                result["summary"] = run(cfg)
            except BaseException as exc:  # surfaced by the assertions below
                result["error"] = exc

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        deadline = time.monotonic() + 180
        victim = None
        while time.monotonic() < deadline and thread.is_alive():
            running = client.run_on_scheduler(_files_processing)
            if running:
                time.sleep(1.0)  # into the file's fit
                running = client.run_on_scheduler(_files_processing)
                if running:
                    victim = next(iter(running.values()))
                    break
            time.sleep(0.1)
        assert victim is not None, f"never caught a file on a worker: {result}"
        os.kill(pids[victim], signal.SIGKILL)
        thread.join(timeout=300)
        assert not thread.is_alive(), "the campaign did not finish after a worker was killed"
        assert "error" not in result, result.get("error")
        # the nanny restarted the killed worker
        client.wait_for_workers(2, timeout=60)
        assert pids[victim] not in client.run(os.getpid).values()
    summary = result["summary"]
    assert "distributed client" in summary.scheduler
    _assert_campaign_equals(summary, reference)
    out = root / "killed"
    assert not list(out.glob(".*.part")), list(out.iterdir())
    assert [r["status"] for r in _read_index(out)] == ["done"] * 3
    assert len(run({**cfg, "scheduler": {"kind": "threads"}}).skipped) == 3


# ----------------------------------------------------------------------------- issue 14


def test_nothing_to_do_is_an_error_unless_allowed(tmp_path):
    from saffron_xr.pipeline.runner import BatchError, check

    (tmp_path / "empty").mkdir()
    for source in ("empty", "empty/*.fits", "missing_folder"):
        cfg = _config(tmp_path, source)
        with pytest.raises(BatchError) as info:
            run(cfg)
        assert "\n" not in str(info.value)
        assert (tmp_path / "missing_folder").name in str(info.value) or "empty" in str(info.value)
        assert check(cfg), source  # --check says so too
    summary = run(_config(tmp_path, "empty"), allow_empty=True)
    assert summary.files == [] and summary.ok
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("problem", ["missing parent", "a file", "read-only"])
def test_unusable_output_folder_is_reported_once_before_any_work(
    tmp_path, monkeypatch, caplog, problem
):
    from saffron_xr.pipeline import filejob
    from saffron_xr.pipeline.runner import BatchError, check

    _raster(tmp_path, 4100, seed=1)
    _raster(tmp_path, 4101, seed=2)
    out = "no/such/out" if problem == "missing parent" else "out"
    if problem == "a file":
        (tmp_path / "out").write_text("in the way\n")
    cfg = _config(tmp_path, ".", out=out)
    if problem == "read-only":
        (tmp_path / "out").mkdir()
        # root ignores permission bits: make the write fail as on a read-only mount
        original = Path.write_bytes

        def refuse(self, data):
            if self.parent == tmp_path / "out":
                raise PermissionError(13, "Permission denied", str(self))
            return original(self, data)

        monkeypatch.setattr(Path, "write_bytes", refuse)
    started = []
    monkeypatch.setattr(filejob, "_process", lambda *a, **k: started.append(a))
    with pytest.raises(BatchError) as info:
        run(cfg)
    message = str(info.value)
    assert message.startswith("output.folder:") and "\n" not in message
    assert {"missing parent": "does not exist", "a file": "is a file",
            "read-only": "Permission denied"}[problem] in message  # fmt: skip
    assert not started
    assert not any("started" in r.getMessage() for r in caplog.records)
    if problem != "read-only":
        assert any(p.startswith("output.folder:") for p in check(cfg))


def _l3_and_header_only(folder: Path) -> tuple[Path, Path]:
    """An L3-named file and a header-only L2 file (windows without data)."""
    l3 = _raster(folder, 4200, seed=4)
    l3 = l3.rename(l3.with_name(l3.name.replace("_L2_", "_L3_")))
    header_only = _raster(folder, 4201, seed=5)
    with fits.open(header_only) as hdul:
        hdus = [fits.PrimaryHDU(header=hdul[0].header)] + [
            fits.ImageHDU(header=h.header) for h in hdul[1:] if isinstance(h, fits.ImageHDU)
        ]
        for h in hdus:
            h.data = None
        fits.HDUList(hdus).writeto(header_only, overwrite=True)
    return l3, header_only


def test_folder_mode_ignores_l3_and_header_only_files_with_a_reason(tmp_path):
    good = _raster(tmp_path, 4202, seed=6)
    l3, header_only = _l3_and_header_only(tmp_path)
    summary = run(_config(tmp_path, "."))
    assert summary.ok, str(summary)
    assert [f.path for f in summary.done] == [str(good)]
    reasons = {Path(f.path).name: f.error for f in summary.ignored}
    assert set(reasons) == {l3.name, header_only.name}
    assert "L3" in reasons[l3.name]
    assert "header only" in reasons[header_only.name]
    text = str(summary)
    assert "1 done, 0 skipped, 0 failed, 2 ignored" in text
    assert f"ignored  {header_only.name}: header only" in text
    # listed explicitly, they are failures (the user asked for them)
    listed = run(_config(tmp_path, [str(header_only)]))
    assert [f.error for f in listed.failed] == [reasons[header_only.name]]


def _catalog_without(tmp_path: Path, lo: float, hi: float) -> Path:
    """The default catalog less its lines between ``lo`` and ``hi`` Angstrom."""
    import json

    from saffron_xr.catalog import LineCatalog

    data = LineCatalog.default().to_dict()
    gone = {ln["name"] for ln in data["lines"] if lo < ln["rest_wavelength"] < hi}
    data["lines"] = [ln for ln in data["lines"] if ln["name"] not in gone]
    data["windows"] = [w for w in data.get("windows", []) if not gone & set(w["lines"])]
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(data))
    return path


def test_a_window_that_cannot_be_modelled_fails_alone(tmp_path):
    raster = _raster(tmp_path, 4300, seed=7)
    cfg = _config(tmp_path, [str(raster)])
    cfg["catalog"] = {"path": str(_catalog_without(tmp_path, 750.0, 767.6))}
    summary = run(cfg)
    (done,) = summary.done
    assert not summary.ok  # a window failed: the exit status says so
    assert list(done.failed_windows) == ["N_IV_765_Peak"]  # the node name, as info prints
    reason = done.failed_windows["N_IV_765_Peak"]
    assert "catalog line" in reason and "N IV 765 - Peak" not in reason
    tree = open_results(done.output)
    assert list(tree.children) == ["Ne_VIII_770_Peak"]
    assert float(np.isfinite(tree["Ne_VIII_770_Peak"]["amplitude"]).mean()) > 0.9
    assert tree.attrs["failed_windows"] == {"N_IV_765_Peak": reason}
    for coord in ("hpln", "hplt"):  # coordinates keep their units in the results
        assert tree["Ne_VIII_770_Peak"][coord].attrs["units"] == "arcsec"
    text = str(summary)
    assert text.count(reason) == 1
    assert "window N_IV_765_Peak FAILED" in text


def test_windows_are_built_in_parallel_with_the_serial_results(tmp_path, monkeypatch):
    """The windows of a file are prepared and modelled on several threads (the noise
    calibration and the mean spectra are computed then): same windows in the same order,
    same models and the same failures as one at a time."""
    import dask

    from saffron_xr.io.reader import open_spice
    from saffron_xr.pipeline import steps
    from saffron_xr.pipeline.config import validate_config

    make_spice_l2(tmp_path, ny=24, nx=6, seed=3, spiobsid=4400)
    (path,) = tmp_path.glob("*_4400-000.fits")
    cfg = validate_config(_config(tmp_path, [str(path)]), base_dir=str(tmp_path))
    cfg["catalog"]["path"] = str(_catalog_without(tmp_path, 750.0, 767.6))  # N IV fails
    threads_seen = set()
    original = steps.process_window

    def spy(*args, **kwargs):
        threads_seen.add(threading.get_ident())
        return original(*args, **kwargs)

    monkeypatch.setattr(steps, "process_window", spy)
    trees = {}
    for opts, want in (
        ({"scheduler": "threads", "num_workers": None}, min(9, os.cpu_count(), 4)),
        ({"scheduler": "threads", "num_workers": 1}, 1),  # a 1-thread cluster worker
        ({"scheduler": "threads", "num_workers": 3}, 3),
        ({"scheduler": "threads", "num_workers": 16}, 4),
        ({"scheduler": "synchronous"}, 1),
    ):
        with dask.config.set(**opts):
            assert steps._build_threads(9) == want, opts
            assert steps._build_threads(1) == 1
    with dask.config.set(scheduler="threads"):
        for n in (1, 2):
            monkeypatch.setattr(steps, "_build_threads", lambda k, n=n: n)
            threads_seen.clear()
            trees[n] = steps.process_tree(cfg, open_spice(path))
            assert len(threads_seen) == n
    serial, parallel = trees[1], trees[2]
    assert list(parallel.children) == list(serial.children) and len(serial.children) == 8
    assert parallel.attrs["failed_windows"] == serial.attrs["failed_windows"]
    assert list(serial.attrs["failed_windows"]) == ["N_IV_765_Peak"]
    for name in serial.children:
        assert parallel[name].attrs["line_model"] == serial[name].attrs["line_model"]
        assert parallel[name].attrs["noise_floor_ratio"] == serial[name].attrs["noise_floor_ratio"]


def test_each_failure_is_printed_once_and_files_are_logged(tmp_path, caplog):
    import logging

    _raster(tmp_path, 4400, seed=8)
    bad = _raster(tmp_path, 4401, seed=9)
    bad.write_bytes(bad.read_bytes()[:5000])
    caplog.set_level(logging.INFO, logger="saffron_xr")
    summary = run(_config(tmp_path, "."))
    (failed,) = summary.failed
    logged = "\n".join(r.getMessage() for r in caplog.records)
    # one line per file started and one per file finished, reasons only in the summary
    assert logged.count("started") == 2
    assert logged.count(": done in ") == 1 and logged.count(": FAILED") == 1
    assert failed.error not in logged
    assert str(summary).count(failed.error) == 1


def test_resume_redoes_on_configuration_version_and_input_changes(tmp_path, monkeypatch):
    import json

    from saffron_xr.pipeline import resume

    raster = _raster(tmp_path, 4500, seed=10)
    cfg = _config(tmp_path, [str(raster)])
    first = run(cfg)
    out = Path(first.done[0].output)

    assert [f.path for f in run(cfg).skipped] == [str(raster)]
    # a changed setting that changes the numbers: redone, and the summary says why
    changed = _config(tmp_path, [str(raster)], derive={"doppler_reference": "rest"})
    again = run(changed)
    assert [f.path for f in again.done] == [str(raster)]
    assert "derive.doppler_reference" in again.done[0].note
    stored = json.loads(open_results(out).attrs["configuration"])
    assert stored["derive"]["doppler_reference"] == "rest"
    # a setting that does not change the numbers (scheduler, chunks): still skipped
    other = _config(tmp_path, [str(raster)], derive={"doppler_reference": "rest"},
                    chunks={"y": 8}, scheduler={"kind": "synchronous"})  # fmt: skip
    assert len(run(other).skipped) == 1
    # a new input (same name): redone
    os.utime(raster, ns=(raster.stat().st_atime_ns, raster.stat().st_mtime_ns + 10**9))
    assert "input file changed" in run(changed).done[0].note
    # another package version: redone
    fp = resume.fingerprint
    monkeypatch.setattr(resume, "fingerprint", lambda c: {**fp(c), "saffron_xr_version": "9.9.9"})
    assert "9.9.9" in run(changed).done[0].note
    monkeypatch.undo()
    # --force redoes a current file
    forced = run(changed, force=True)
    assert [f.path for f in forced.done] == [str(raster)]


def test_resume_makes_missing_products_and_redoes_interrupted_ones(tmp_path, monkeypatch):
    from saffron_xr import plot

    raster = _raster(tmp_path, 4600, seed=11)
    cfg = _config(tmp_path, [str(raster)])
    out = Path(run(cfg).done[0].output)
    mtime = out.stat().st_mtime_ns
    png = out.with_suffix(".png")

    # quicklook turned on after the run: made from the existing results, not refitted
    cfg["output"]["quicklook"] = True
    cfg["output"]["l3_fits"] = True
    made = run(cfg)
    assert [f.path for f in made.done] == [str(raster)], str(made)
    assert "quicklook" in made.done[0].note and "L3 FITS" in made.done[0].note
    assert out.stat().st_mtime_ns == mtime
    assert png.is_file()
    assert len(list(out.parent.glob("*_L3.fits"))) == len(NODES)
    assert len(run(cfg).skipped) == 1

    # Ctrl-C while the quicklook is drawn: no PNG under its name, and a rerun makes it
    png.unlink()
    original = plot.quicklook

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(plot, "quicklook", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, force=True)
    monkeypatch.setattr(plot, "quicklook", original)
    assert not png.exists()
    assert not list(out.parent.glob(".*.part"))
    again = run(cfg)
    assert len(again.done) == 1 and png.is_file(), str(again)


def test_fuse_and_locks_fit_windows_together(tmp_path):
    raster = _raster(tmp_path, 4700, ny=24, nx=6, seed=12)
    offset = 770.42 - 765.15 + 0.01
    cfg = _config(
        tmp_path,
        [str(raster)],
        catalog={"min_snr": 3.0},
    )
    cfg["fuse"] = [["N IV 765 - Peak", "Ne_VIII_770_Peak"]]  # EXTNAME or node name
    cfg["locks"] = [{"line": "ne_8 770.42", "to": "n_4 765.15", "offset": offset}]
    summary = run(cfg)
    (done,) = summary.done
    assert summary.ok, str(summary)
    tree = open_results(done.output)
    assert list(tree.children) == ["N_IV_765_Peak+Ne_VIII_770_Peak"]  # components skipped
    ds = tree["N_IV_765_Peak+Ne_VIII_770_Peak"].to_dataset().compute()
    assert {"n_4 765.15", "ne_8 770.42"} <= set(ds["line"].values.tolist())
    sep = ds["centroid"].sel(line="ne_8 770.42") - ds["centroid"].sel(line="n_4 765.15")
    ok = np.isfinite(sep)
    assert ok.mean() > 0.9
    np.testing.assert_allclose(sep.values[ok.values], offset, rtol=0, atol=1e-9)
    assert "offset" in ds.attrs["centroid_locks"]
    # a lock naming a line of no window is an error only in the configuration's spelling
    from saffron_xr.pipeline.config import ConfigError

    with pytest.raises(ConfigError, match="locks"):
        validate_config({"locks": [{"line": "a", "to": "a"}]})


@pytest.mark.parametrize("codec, flag", [("zlib", "zlib"), ("none", None)])
def test_output_compression_setting_reaches_the_file(tmp_path, codec, flag):
    """output.compression: zlib (portable) or none instead of the default zstd; same numbers."""
    import netCDF4

    data = tmp_path / "data"
    data.mkdir()
    path = _raster(data, 1000, ny=16, seed=3)
    default = run(_config(tmp_path, [str(path)], out="a"))
    other = run(_config(tmp_path, [str(path)], out="b", output={"compression": codec}))
    (a,), (b,) = default.done, other.done
    for out, want in ((a.output, "zstd"), (b.output, flag)):
        with netCDF4.Dataset(out) as nc:
            filters = nc.groups[NODES[0]].variables["amplitude"].filters()
            for name in ("zstd", "zlib"):
                assert filters[name] == (name == want)
    _assert_same_results(Path(a.output), Path(b.output))
