"""Per-window fit cost of the composition raster, as the batch fits it, and what the guessed
model's weak-line rule (``GuessOptions.weak_pixel_snr``) changes.

The raster is ``make_spice_l2``'s default composition study (9 windows, 832 x 192 by default;
``--ny`` for fewer rows), written with its truth. For every window the batch's own steps
prepare the data (SPICE noise model, calibrated) and guess the model (catalog ``min_snr`` of
the batch template), once with the default ``weak_pixel_snr`` and once with None (every kept
line free); the first ``--rows`` rows are fitted (pulls, iterations, bounds) and the last
dask chunk of them (the batch's chunks) is fitted again by the gufunc alone, synchronously, and
timed with ``time.process_time`` (best of ``--repeat``, the two settings alternating). Printed per window and setting: free parameters, fits per CPU-second, mean LM
iterations, the fraction of fits on a bound, and for every line of the truth the median
|pull| of its amplitude (fitted minus true, over the error; 0.674 for honest errors).

Run: ``python benchmarks/bench_raster_windows.py [--ny 832] [--rows 64] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import dask
import numpy as np
import xarray as xr


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _capture(radiance, model, error, noise):
    """The gufunc inputs of the last chunk ``fit_lines`` fits on these data (its last
    ``_fit_block`` call), and the computed result of all of them."""
    from saffron_xr import fit_lines
    from saffron_xr.fit import core

    box = {}
    orig = core._fit_block

    def spy(*args, **kwargs):
        box["args"], box["kwargs"] = args, kwargs
        return orig(*args, **kwargs)

    core._fit_block = spy
    try:
        with dask.config.set(scheduler="synchronous"):
            result = fit_lines(radiance, model, error=error, noise=noise).compute()
    finally:
        core._fit_block = orig
    args = [np.asarray(a) for a in box["args"]]
    shape = args[0].shape
    n = int(np.prod(shape[:-1]))

    def flat(a, dtype=np.float64):
        a = np.broadcast_to(a, shape[:-1] + (a.shape[-1],))
        return np.ascontiguousarray(a.reshape(n, -1), dtype=dtype)

    y = flat(args[0], args[0].dtype)
    inputs = (y, flat(args[1], y.dtype), np.ascontiguousarray(args[2], np.float64),
              flat(args[4]), flat(args[5]), flat(args[3]), box["kwargs"]["spec"],
              np.empty(box["kwargs"]["size"]))  # fmt: skip
    return inputs, result


def _cpu_seconds(inputs):
    from saffron_xr.fit import _kernels

    g = _kernels.fit_gufunc(inputs[0].dtype.name)
    with np.errstate(all="ignore"):
        t = time.process_time()
        g(*inputs)
        return time.process_time() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ny", type=int, default=832)
    parser.add_argument("--nx", type=int, default=192)
    parser.add_argument("--rows", type=int, default=64, help="rows fitted per window")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from saffron_xr.catalog import guess_model
    from saffron_xr.io.reader import open_spice
    from saffron_xr.pipeline import steps
    from saffron_xr.pipeline.config import validate_config
    from saffron_xr.testing import make_spice_l2

    print(f"machine: {_cpu_model()}, python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        make_spice_l2(tmp, ny=args.ny, nx=args.nx, seed=7, store_truth=True)
        (src,) = Path(tmp).glob("solo_L2_*.fits")
        (truth_path,) = Path(tmp).glob("*_truth.nc")
        truth = xr.open_datatree(truth_path)
        cfg = validate_config(
            {"files": {"source": [str(src)]}, "output": {"folder": tmp}}, base_dir=tmp
        )
        catalog = steps.load_catalog(cfg)
        tree = open_spice(src, chunks=dict(cfg["chunks"]))
        rows = slice(0, args.rows)
        print(f"raster {args.ny} x {args.nx}, models guessed on the whole window, "
              f"{args.rows} rows fitted per window\n")  # fmt: skip
        head = f"{'window':26s} {'weak_pixel_snr':>14s} {'free':>4s} {'fits/CPU-s':>10s} "
        print(head + f"{'iter':>5s} {'bound':>6s}  median |amplitude pull| per true line")
        totals = {}
        for name in tree.children:
            radiance, error, terms, _ = steps._prepare(cfg, name, tree[name].dataset["radiance"])
            noise = steps._fit_noise(cfg, radiance, terms)
            true = truth[name].dataset.isel(y=rows)
            runs = {}
            for weak in (1.0, None):
                model = guess_model(radiance, catalog, error=error, weak_pixel_snr=weak,
                                    min_snr=cfg["catalog"]["min_snr"],
                                    background_degree=cfg["catalog"]["background_degree"])  # fmt: skip
                inputs, fit = _capture(radiance.isel(y=rows), model, error.isel(y=rows), noise)
                runs[weak] = (model, inputs, fit, np.inf)
            for _ in range(args.repeat):  # the two settings alternate
                for weak, (model, inputs, fit, best) in runs.items():
                    runs[weak] = (model, inputs, fit, min(best, _cpu_seconds(inputs)))
            for weak, (model, inputs, fit, best) in runs.items():
                n_window = radiance.size // radiance.sizes["wavelength"]
                totals[weak] = totals.get(weak, 0.0) + best * n_window / inputs[0].shape[0]
                pulls = []
                for line, rest in zip(true.line.values, true.rest_wavelength.values, strict=True):
                    k = int(np.argmin(np.abs(fit.rest_wavelength.values - rest)))
                    f = fit.isel(line=k)
                    pull = (f.amplitude - true.amplitude.sel(line=line)) / f.amplitude_err
                    pulls.append(f"{line} {float(np.nanmedian(np.abs(pull))):.2f}")
                print(f"{name[:26]:26s} {str(weak):>14s} {model.n_free:4d} "
                      f"{inputs[0].shape[0] / best:10.0f} {float(fit.n_iter.mean()):5.1f} "
                      f"{float((fit.status == 1).mean()):6.3f}  " + ", ".join(pulls))  # fmt: skip
        print(
            f"\nwhole raster, gufunc alone (CPU-s, extrapolated from the chunks timed): "
            f"default {totals[1.0]:.1f}, every line free {totals[None]:.1f} "
            f"(ratio {totals[None] / totals[1.0]:.2f})"
        )


if __name__ == "__main__":
    main()
