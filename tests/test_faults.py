"""Faults during a batch: the disk filling during a write.

In every case nothing already finished is lost, nothing half-written stands under a final
name, and a rerun completes.

The "full disk" is real where it can be without privileges: ``RLIMIT_FSIZE`` makes the
kernel refuse writes beyond a size (EFBIG, the same path through HDF5 and astropy as a full
disk's ENOSPC). A mounted small file system would need root and a loop device that CI
runners lack. ENOSPC itself is simulated by failing the netCDF write half-way. Ctrl-C and
SIGTERM, and a worker killed mid-campaign, are tested with the runner (tests/test_runner.py).
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import resource
import signal
from pathlib import Path

import bad_inputs as corpus
import netCDF4
import pytest
import xarray as xr

from saffron_xr.io.l3fits import to_l3_fits
from saffron_xr.io.netcdf import open_results
from saffron_xr.pipeline.campaign import INDEX_NAME
from saffron_xr.pipeline.runner import run


@contextlib.contextmanager
def file_size_limit(nbytes: int):
    """The kernel refuses to grow any file of this process beyond ``nbytes`` (EFBIG)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    if hard != resource.RLIM_INFINITY and hard < nbytes:
        pytest.fail(f"the hard RLIMIT_FSIZE {hard} is below the {nbytes} bytes this test needs")
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an error, not a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def _config(root: Path, source, **output) -> dict:
    return {
        "files": {"source": source},
        "output": {"folder": "out", **output},
        "scheduler": {"kind": "threads", "n_workers": 2},
        "_base_dir": str(root),
    }


def _open_netcdf_files() -> list[str]:
    """Paths of the netCDF4 Datasets still open among the objects the garbage collector
    tracks (no collection is made here)."""
    out = []
    for obj in gc.get_objects():
        try:
            if isinstance(obj, netCDF4.Dataset) and obj.isopen():
                out.append(obj.filepath())
        except ReferenceError:  # a weak proxy to a freed group
            continue
    return out


def _snapshot(folder: Path) -> dict:
    """The results files of a folder (the campaign index is rewritten by every run)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != INDEX_NAME}


@pytest.fixture
def three_rasters(tmp_path):
    data = tmp_path / "data"
    return tmp_path, [corpus.make_base_raster(data, spiobsid=8000 + i, seed=i) for i in range(3)]


def test_disk_full_during_the_netcdf_write(three_rasters):
    root, rasters = three_rasters
    first = run(_config(root, [str(rasters[0])]))
    assert len(first.done) == 1, str(first)
    out = root / "out"
    before = _snapshot(out)
    (finished,) = before
    assert len(before[finished]) > 100_000  # the limit below is really hit

    with file_size_limit(100_000):
        full = run(_config(root, "data"))
    # the failed writes' files are closed by the batch, not left to a garbage collection in
    # a random thread (which crashed netCDF calls running in another one)
    assert _open_netcdf_files() == []
    assert [Path(f.path) for f in full.skipped] == [rasters[0]], str(full)
    assert sorted(Path(f.path) for f in full.failed) == rasters[1:], str(full)
    for result in full.failed:
        # the reason names the output and what the file system said
        assert "File too large" in result.error, result.error
        assert Path(result.path).stem in result.error, result.error
    assert _snapshot(out) == before  # nothing lost, nothing half-written, no .part left

    again = run(_config(root, "data"))
    assert sorted(Path(f.path) for f in again.done) == rasters[1:], str(again)
    assert [Path(f.path) for f in again.skipped] == [rasters[0]]
    assert not again.failed
    assert (out / finished).read_bytes() == before[finished]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [Path(f.output).name for f in again.done + again.skipped] + [INDEX_NAME]
    )
    for result in again.done:
        assert open_results(result.output).attrs["saffron_xr_complete"] == 1


def test_no_space_left_half_way_through_the_netcdf_write(three_rasters, monkeypatch):
    """Simulated ENOSPC: the netCDF library writes half the file, then the device is full."""
    root, rasters = three_rasters
    first = run(_config(root, [str(rasters[0])]))
    out = root / "out"
    before = _snapshot(out)
    original = xr.DataTree.to_netcdf
    seen = []

    def disk_fills(self, path, *args, **kwargs):
        original(self, path, *args, **kwargs)
        seen.append(Path(path))
        size = os.path.getsize(path)
        with open(path, "r+b") as fh:
            fh.truncate(size // 2)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(xr.DataTree, "to_netcdf", disk_fills)
    full = run(_config(root, "data"))
    monkeypatch.undo()
    assert len(first.done) == 1 and len(seen) == 2, str(full)
    assert all(p.name.endswith(".part") for p in seen)  # written under a temporary name
    assert sorted(Path(f.path) for f in full.failed) == rasters[1:], str(full)
    for result in full.failed:
        assert "No space left on device" in result.error, result.error
    assert _snapshot(out) == before

    again = run(_config(root, "data"))
    assert sorted(Path(f.path) for f in again.done) == rasters[1:], str(again)
    assert _snapshot(out)[next(iter(before))] == next(iter(before.values()))


def test_disk_full_during_an_l3_fits_write_keeps_the_old_file(three_rasters):
    root, rasters = three_rasters
    done = run(_config(root, [str(rasters[0])]))
    window = open_results(done.done[0].output)["Ne_VIII_770_Peak"].to_dataset().load()
    target = root / "l3" / "window_L3.fits"
    target.parent.mkdir()
    to_l3_fits(window, target)
    old = target.read_bytes()
    assert len(old) > 60_000
    changed = window.copy()
    changed["amplitude"] = changed["amplitude"] * 2
    with file_size_limit(60_000), pytest.raises(OSError) as info:
        to_l3_fits(changed, target, overwrite=True)
    assert info.value.errno == errno.EFBIG, info.value
    assert str(target) in str(info.value)
    assert [p.name for p in target.parent.iterdir()] == [target.name]
    assert target.read_bytes() == old
    to_l3_fits(changed, target, overwrite=True)  # with room again
    assert target.read_bytes() != old


# A worker killed mid-campaign: tests/test_runner.py::test_a_worker_killed_mid_campaign_every_file_still_done
