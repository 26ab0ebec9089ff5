"""numba's disk cache of the fit kernels: a fresh process loads them instead of compiling.

Two subprocesses share an empty cache folder (``NUMBA_CACHE_DIR``, set in the children's
environment only): the first compiles the kernels and writes them there; the second fits
the same spectra and must compile nothing (no ``numba:compile`` event, numba's documented
event API) and give the same results.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import saffron_xr

FIT_IN_A_FRESH_PROCESS = """
import json
import numpy as np, xarray as xr
from numba.core import event
from saffron_xr.fit import _kernels
from saffron_xr.fit.core import fit_lines
from saffron_xr.fit.model import LineModel

wl = np.linspace(769.0, 771.0, 40)
spec = 2.0 * np.exp(-0.5 * ((wl - 770.1) / 0.3) ** 2) + 0.1
da = xr.DataArray(np.tile(spec, (4, 1)), dims=("y", "wavelength"), coords={"wavelength": wl})
m = LineModel()
m.add_line("ne_8 770.42", amplitude=1.0, centroid=770.0, width=0.3)
with event.install_recorder("numba:compile") as rec:
    ds = fit_lines(da, m, error=xr.full_like(da, 0.01))
    status = ds.status.values.tolist()
print(json.dumps({
    "compiles": len(rec.buffer),
    "fit_pixel_compiled": len(_kernels._fit_pixel.signatures),
    "status": status,
    "centroid": ds.centroid.values.ravel().tolist(),
}))
"""


def _run(cache_dir: Path) -> dict:
    env = dict(os.environ)
    env["NUMBA_CACHE_DIR"] = str(cache_dir)
    env["SAFFRON_NUMBA_CACHE"] = "1"  # the default; a user's 0 would defeat the test
    root = str(Path(saffron_xr.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", FIT_IN_A_FRESH_PROCESS],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_fresh_process_loads_the_kernels_from_the_disk_cache(tmp_path):
    cache = tmp_path / "numba-cache"
    cold = _run(cache)
    assert cold["compiles"] > 0  # an empty folder: everything is compiled...
    assert cold["fit_pixel_compiled"] == 1
    assert any(p.name.startswith("guf-_kernels._fit_kernel") for p in cache.rglob("*.nbi"))

    warm = _run(cache)
    assert warm["compiles"] == 0  # ...and loaded, not compiled, by the next process
    assert warm["fit_pixel_compiled"] == 0  # the helpers are not even typed
    assert warm["status"] == cold["status"] == [0, 0, 0, 0]
    assert warm["centroid"] == cold["centroid"]
