"""The whole chain on built-in and synthetic data: what ``saffron-xr demo`` runs.

Inputs: the real Ne VIII window shipped with the package, and a small *synthetic*
composition raster (9 windows, generated; its file name says so: observation date
2000-01-01, before Solar Orbiter's launch, SPIOBSID 999000001 and the suffix
``_synthetic``). Both are fitted by the batch runner; the raster's fitted radiances then go
through the LCR method to a FIP-bias map. Everything is written under one folder::

    <folder>/inputs/    the two input files
    <folder>/results/   one netCDF results file and one quicklook PNG per input
    <folder>/fip_bias_synthetic.png   line radiances and the FIP-bias map of the raster
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from ..sample_data import ne8_window_path
from .config import validate_config
from .runner import RunSummary, output_path, run

__all__ = ["run_demo", "DEMO_RASTER", "SYNTHETIC_NAME", "FIP_LINES"]

log = logging.getLogger(__name__)

#: Size of the generated composition raster (9 windows) fitted by the demo.
DEMO_RASTER = {"ny": 120, "nx": 40, "seed": 2024}

#: File name of the synthetic raster: clearly not a real SPICE product.
SYNTHETIC_NAME = "solo_L2_spice-n-ras_20000101T000000_V01_999000001-000_synthetic.fits"

#: Low-FIP and high-FIP lines of the demo's FIP-bias map (all in the composition study).
FIP_LINES = {"low": ["s_4 750.22", "s_5 786.47"], "high": ["n_3 991.58", "n_4 765.15"]}

#: Pixels binned (per side) before the FIP-bias map.
BIN = 3

#: Electron density (cm-3) assumed by the demo's FIP-bias map.
FIP_DENSITY = 1e9


def run_demo(
    folder, *, progress: bool = False, scheduler: str | None = None, raster: dict | None = None
) -> RunSummary:
    """Fit the shipped Ne VIII window and a synthetic composition raster; FIP-bias map.

    Writes into ``folder`` (see the module docstring): ``inputs/``, ``results/`` (netCDF
    and quicklook PNG per input) and ``fip_bias_synthetic.png``. A rerun resumes.

    Parameters
    ----------
    folder : path-like
        Output folder (created).
    progress : bool
        Show progress bars.
    scheduler : str, optional
        Override the scheduler (default: threads on all cores).
    raster : dict, optional
        Keyword arguments of :func:`saffron_xr.synthetic.make_spice_l2` that override
        :data:`DEMO_RASTER` (e.g. ``{"ny": 64, "nx": 16}`` for a quick run). A raster
        generated earlier in ``folder`` with other settings is regenerated.

    Returns
    -------
    RunSummary
    """
    from ..synthetic import make_spice_l2

    folder = Path(folder).resolve()
    inputs = folder / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    ne8 = inputs / ne8_window_path().name
    if not ne8.exists():
        shutil.copyfile(ne8_window_path(), ne8)
    settings = {**DEMO_RASTER, **(raster or {})}
    raster_path = inputs / SYNTHETIC_NAME
    cfg = {
        "files": {"source": [str(ne8), str(raster_path)]},
        "output": {"folder": "results", "quicklook": True, "resume": True},
        "_base_dir": str(folder),
    }
    stamp = raster_path.with_name(raster_path.name + ".settings.json")
    wanted = json.dumps(settings, sort_keys=True)
    if not raster_path.exists() or not stamp.exists() or stamp.read_text() != wanted:
        tmp = raster_path.with_name(raster_path.name + ".part")
        make_spice_l2(
            tmp,
            spiobsid=999000001,
            date_obs="2000-01-01T00:00:00",
            study="SYNTHETIC_DEMO_COMPOSITION",
            soopname="SYNTHETIC_DEMO",
            **settings,
        )
        tmp.replace(raster_path)
        stamp.write_text(wanted)
        # results of an earlier raster must not be taken as complete by resume
        old = output_path(validate_config(cfg, base_dir=str(folder)), raster_path)
        old.unlink(missing_ok=True)
        old.with_suffix(".png").unlink(missing_ok=True)
    summary = run(cfg, progress=progress, scheduler=scheduler)
    done = {f.path: f for f in summary.done + summary.skipped}
    if str(raster_path) in done:
        fip_figure(done[str(raster_path)].output, folder / "fip_bias_synthetic.png")
    return summary


def fip_figure(results_path, png_path, *, dpi: int = 80):
    """Radiance maps of the FIP lines and the LCR FIP-bias map of a results file.

    Parameters
    ----------
    results_path : path-like
        A results file of the synthetic composition raster (all :data:`FIP_LINES` fitted).
    png_path : path-like
        Where the figure is written (atomically).
    dpi : int
        Resolution.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import numpy as np
    import xarray as xr
    from matplotlib.figure import Figure

    from ..fip.maps import lcr
    from ..io._atomic import write_atomically
    from ..io.netcdf import open_results
    from ..plot import line_label

    wanted = FIP_LINES["low"] + FIP_LINES["high"]
    with open_results(results_path) as tree:
        parts = []
        for node in tree.children.values():
            ds = node.to_dataset()
            have = [str(v) for v in ds["line"].values if str(v) in wanted]
            if have:
                keep = ["radiance", "radiance_err"]
                parts.append(ds[keep].sel(line=have).reset_coords(drop=True))
        rad = xr.concat(parts, dim="line").compute()
    # 3 x 3 pixel sums (radiance and error added like independent measurements): the faint
    # S IV line needs the signal
    n = BIN * BIN
    binned = rad.coarsen(y=BIN, x=BIN, boundary="trim")
    rad = xr.Dataset(
        {
            "radiance": binned.sum()["radiance"] / n,
            "radiance_err": np.sqrt((rad["radiance_err"] ** 2).coarsen(
                y=BIN, x=BIN, boundary="trim").sum()) / n,
        }
    )  # fmt: skip
    missing = sorted(set(wanted) - {str(v) for v in rad["line"].values})
    if missing:
        raise ValueError(f"{results_path}: the FIP lines {missing} were not fitted")
    fmap = lcr(rad, FIP_LINES["low"], FIP_LINES["high"], density=FIP_DENSITY).compute()

    fig = Figure(figsize=(12.5, 4.6), layout="constrained")
    axes = fig.subplots(1, 5)
    fig.suptitle(
        "SYNTHETIC demo raster (generated, not an observation): fitted radiances of the FIP "
        f"lines and the LCR FIP bias ({BIN}x{BIN} pixels binned, n_e = {FIP_DENSITY:.0e} cm-3; "
        "illustrative only)",
        fontsize="small",
    )
    for ax, line in zip(axes[:4], wanted, strict=True):
        img = rad["radiance"].sel(line=line).transpose("y", "x").values
        finite = img[np.isfinite(img) & (img > 0)]
        lo, hi = np.percentile(finite, [1, 99]) if finite.size else (0.1, 1.0)
        m = ax.imshow(img, origin="lower", aspect="auto", cmap="inferno", vmin=lo, vmax=hi,
                      rasterized=True)  # fmt: skip
        ax.set_title(f"{line_label(line)}\n({'low' if line in FIP_LINES['low'] else 'high'} "
                     "FIP)", fontsize="small")  # fmt: skip
        fig.colorbar(m, ax=ax, orientation="horizontal", label="radiance (W m-2 sr-1)")
    f = fmap["fip_bias"].transpose("y", "x").values
    finite = f[np.isfinite(f)]
    lo, hi = np.percentile(finite, [1, 99]) if finite.size else (0.5, 2.0)
    m = axes[4].imshow(f, origin="lower", aspect="auto", cmap="viridis", vmin=lo, vmax=hi,
                       rasterized=True)  # fmt: skip
    axes[4].set_title("FIP bias (LCR)", fontsize="small")
    fig.colorbar(m, ax=axes[4], orientation="horizontal", label="FIP bias")
    for ax in axes:
        ax.set_xlabel(f"raster step / {BIN}", fontsize="small")
        ax.tick_params(labelsize="x-small")
    axes[0].set_ylabel(f"slit pixel / {BIN}", fontsize="small")
    png_path = Path(png_path)
    write_atomically(png_path, lambda part: fig.savefig(part, dpi=dpi, format="png"))
    return fig
