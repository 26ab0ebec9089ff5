"""compute_datasets: several lazy Datasets in one dask computation (xarray#11329 workaround)."""

from __future__ import annotations

import threading

import dask.array as da
import numpy as np
import xarray as xr

from saffron_xr._compute import compute_datasets
from saffron_xr.testing import raise_if_dask_computes


def test_shared_work_computed_once_and_views_kept():
    calls = []
    lock = threading.Lock()

    def expensive(block):
        with lock:
            calls.append(block.shape)
        return block * 2.0

    rng = np.random.default_rng(3)
    values = rng.normal(size=(4, 6, 5))
    base = da.from_array(values, chunks=(2, 3, 5)).map_blocks(expensive, dtype=float)
    a = xr.Dataset(
        {
            "p": (("line", "y", "x"), base),
            # a transposed and a sliced view of the same graph: the case xarray#11329 breaks
            "pt": (("x", "y", "line"), base.transpose(2, 1, 0)),
        },
        coords={"lazy_coord": ("y", da.arange(6, chunks=3))},
    )
    b = xr.Dataset({"q": (("y", "x"), base[1]), "n": ("x", np.arange(5))})
    calls.clear()  # map_blocks calls the function once on an empty meta array
    with raise_if_dask_computes(max_computes=1):
        ca, cb = compute_datasets(a, b)
    assert len(calls) == 4  # each of the 4 blocks once, shared by p, pt and q
    for ds in (ca, cb):
        for var in ds.variables.values():
            assert isinstance(var.data, np.ndarray)
    np.testing.assert_array_equal(ca["p"].values, 2.0 * values)
    np.testing.assert_array_equal(ca["pt"].values, 2.0 * values.transpose(2, 1, 0))
    np.testing.assert_array_equal(ca["lazy_coord"].values, np.arange(6))
    assert "lazy_coord" in ca.coords
    np.testing.assert_array_equal(cb["q"].values, 2.0 * values[1])
    np.testing.assert_array_equal(cb["n"].values, np.arange(5))
    # the inputs stay lazy
    assert isinstance(a["p"].data, da.Array)


def test_no_dask_arrays():
    ds = xr.Dataset({"v": ("x", np.arange(3.0))})
    (out,) = compute_datasets(ds)
    xr.testing.assert_identical(out, ds)
    assert compute_datasets() == ()
