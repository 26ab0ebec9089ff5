"""The main job on built-in data: what ``saffron-xr demo`` runs."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..sample_data import ne8_window_path
from .runner import RunSummary, run

__all__ = ["run_demo", "DEMO_RASTER"]

#: Size of the generated composition raster (9 windows) fitted by the demo.
DEMO_RASTER = {"ny": 416, "nx": 96, "seed": 2024}


def run_demo(folder, *, progress: bool = False, scheduler: str | None = None) -> RunSummary:
    """Fit the shipped Ne VIII window and a generated composition raster.

    Writes into ``folder``: ``data/`` (the two inputs), one netCDF result file per input and a
    PNG quicklook of each.

    Parameters
    ----------
    folder : path-like
        Output folder (created).
    progress : bool
        Show progress bars.
    scheduler : str, optional
        Override the scheduler (default: threads on all cores).

    Returns
    -------
    RunSummary
    """
    from ..testing import make_spice_l2

    folder = Path(folder)
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    ne8 = data / ne8_window_path().name
    if not ne8.exists():
        shutil.copyfile(ne8_window_path(), ne8)
    raster = data / "solo_L2_spice-n-ras_20240425T121922_V01_268435999-000.fits"
    if not raster.exists():
        tmp = raster.with_name(raster.name + ".part")
        make_spice_l2(tmp, spiobsid=268435999, **DEMO_RASTER)
        tmp.replace(raster)
    cfg = {
        "files": {"source": [str(ne8), str(raster)]},
        "output": {"folder": str(folder), "quicklook": True, "resume": True},
        "_base_dir": str(folder),
    }
    return run(cfg, progress=progress, scheduler=scheduler)
