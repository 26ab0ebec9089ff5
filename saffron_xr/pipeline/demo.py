"""The main job on built-in data: what ``saffron-xr demo`` runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..sample_data import ne8_window_path
from .config import validate_config
from .runner import RunSummary, output_path, run

__all__ = ["run_demo", "DEMO_RASTER"]

#: Size of the generated composition raster (9 windows) fitted by the demo.
DEMO_RASTER = {"ny": 416, "nx": 96, "seed": 2024}


def run_demo(
    folder, *, progress: bool = False, scheduler: str | None = None, raster: dict | None = None
) -> RunSummary:
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
    raster : dict, optional
        Keyword arguments of :func:`saffron_xr.testing.make_spice_l2` that override
        :data:`DEMO_RASTER` (e.g. ``{"ny": 64, "nx": 16}`` for a quick run). A raster
        generated earlier in ``folder`` with other settings is regenerated.

    Returns
    -------
    RunSummary
    """
    from ..testing import make_spice_l2

    folder = Path(folder).resolve()
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    ne8 = data / ne8_window_path().name
    if not ne8.exists():
        shutil.copyfile(ne8_window_path(), ne8)
    settings = {**DEMO_RASTER, **(raster or {})}
    raster_path = data / "solo_L2_spice-n-ras_20240425T121922_V01_268435999-000.fits"
    cfg = {
        "files": {"source": [str(ne8), str(raster_path)]},
        "output": {"folder": str(folder), "quicklook": True, "resume": True},
        "_base_dir": str(folder),
    }
    stamp = raster_path.with_name(raster_path.name + ".settings.json")
    wanted = json.dumps(settings, sort_keys=True)
    if not raster_path.exists() or not stamp.exists() or stamp.read_text() != wanted:
        tmp = raster_path.with_name(raster_path.name + ".part")
        make_spice_l2(tmp, spiobsid=268435999, **settings)
        tmp.replace(raster_path)
        stamp.write_text(wanted)
        # results of an earlier raster must not be taken as complete by resume
        old = output_path(validate_config(cfg, base_dir=str(folder)), raster_path)
        old.unlink(missing_ok=True)
        old.with_suffix(".png").unlink(missing_ok=True)
    return run(cfg, progress=progress, scheduler=scheduler)
