"""Acceptance of guess_model: fitting real and generated SPICE data with the guessed models.

Run with ``-s`` to see the models chosen and the convergence figures.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import saffron_xr
from saffron_xr.catalog import fuse_windows, guess_model
from saffron_xr.fit import FitStatus, fit_lines
from saffron_xr.prep.noise import spice_error
from saffron_xr.testing import composition_windows, make_spice_l2

CONVERGED = (FitStatus.CONVERGED, FitStatus.CONVERGED_AT_BOUND)


def _statuses(status) -> dict:
    codes, counts = np.unique(np.asarray(status), return_counts=True)
    return {FitStatus(int(c)).name: int(n) for c, n in zip(codes, counts, strict=True)}


def test_ne8_real_window_fit(ne8_file):
    rad = saffron_xr.open_spice(ne8_file)["Ne_VIII_770_Peak_data"]["radiance"]
    err = spice_error(rad)
    model, report = guess_model(rad, error=err, return_report=True)
    print(report)
    fit = fit_lines(rad, model, error=err).compute()
    enough = fit.n_valid.values >= 20
    status = fit.status.values[enough]
    converged = np.isin(status, CONVERGED).mean()
    print(f"Ne VIII: {enough.sum()} pixels with >= 20 valid samples, converged fraction "
          f"{converged:.4f}, statuses {_statuses(status)}")  # fmt: skip
    assert enough.sum() > 1500
    assert converged >= 0.95
    cen = fit.centroid.sel(line="ne_8 770.42").values[enough]
    assert 769.95 < np.nanmedian(cen) < 770.10


@pytest.mark.slow
def test_lyg_raster_fit(spice_dir):
    g = np.load(spice_dir / "raster_20240425_lyg_c3" / "grid_data.npz")
    coords = {"wavelength": ("wavelength", g["wavelength"], {"units": "Angstrom"})}
    units = {"units": "W m-2 sr-1 nm-1"}
    rad = xr.DataArray(
        np.moveaxis(g["intensity"].astype(np.float32), 0, -1),
        dims=("y", "x", "wavelength"),
        coords=coords,
        attrs=units,
    ).chunk({"y": 210})
    err = xr.DataArray(np.moveaxis(g["uncertainty"].astype(np.float32), 0, -1),
                       dims=("y", "x", "wavelength"), coords=coords, attrs=units).chunk({"y": 210})  # fmt: skip
    model, report = guess_model(rad, error=err, return_report=True)
    print(report)
    print(model)
    assert {"h_1 972.54", "c_3 977.03"} <= set(model.lines)
    fit = fit_lines(rad, model, error=err).compute()
    valid = fit.n_valid.values > 0
    status = fit.status.values[valid]
    converged = np.isin(status, CONVERGED).mean()
    print(f"Ly gamma / C III: {valid.sum()} pixels with valid data, converged fraction "
          f"{converged:.4f}, statuses {_statuses(status)}")  # fmt: skip
    assert valid.sum() > 100_000
    assert converged >= 0.95
    med = np.nanmedian(fit.centroid.values[:, valid], axis=1)
    assert med == pytest.approx([model.line_info(n)["centroid"] for n in model.lines], abs=0.05)


def _truth_map(report, truth_node):
    """Model component of each true line (blend members map to the component kept)."""
    out = {}
    for line in truth_node.line.values:
        t = truth_node.sel(line=line)
        (g,) = [
            g for g in report.lines
            if g.ion == str(t.ion.values) and abs(g.rest_wavelength - float(t.rest_wavelength)) < 0.02
        ]  # fmt: skip
        out[str(line)] = g.merged_into if g.status == "merged" else g.name
    return out


@pytest.mark.slow
def test_composition_raster_recovery(tmp_path):
    """All default windows, random offsets within +-0.5 A: guesses within 0.05 A of truth and
    fits within 3 error bars for 99% of the pixels whose lines have peak S/N > 10."""
    truth = make_spice_l2(tmp_path, ny=192, nx=24, seed=7, offset_range=(-0.5, 0.5),
                          include_radiance=True)  # fmt: skip
    tree = saffron_xr.open_spice(truth.attrs["path"])
    offsets = [float(truth[n].offset) for n in tree.children]
    assert max(offsets) - min(offsets) > 0.4  # the windows really are shifted differently
    guess_err, z_scores, n_pix = [], {"amplitude": [], "centroid": [], "width": []}, 0
    for name in tree.children:
        rad = tree[name]["radiance"]
        tr = truth[name]
        err = tr.error_true.transpose(*rad.dims).assign_coords(wavelength=rad.wavelength)
        model, report = guess_model(rad, error=err, return_report=True)
        assert report.offset[0] == pytest.approx(float(tr.offset), abs=0.05), name
        fit = fit_lines(rad, model, error=err).compute()
        for line, comp in _truth_map(report, tr).items():
            assert comp in model.lines, (name, line, str(report))
            t = tr.sel(line=line)
            peak = np.abs(tr.wavelength - t.centroid).argmin("wavelength")
            strong = (t.amplitude / tr.error_true.isel(wavelength=peak)).values > 10
            n_pix += strong.sum()
            guess = model.line_info(comp)["centroid"]
            guess_err.append(np.abs(guess - t.centroid.values[strong]))
            f = fit.sel(line=comp)
            assert np.isin(f.status.values[strong], CONVERGED).all()
            for p in z_scores:
                z_scores[p].append(np.abs((f[p] - t[p]) / f[f"{p}_err"]).values[strong])
    guess_err = np.concatenate(guess_err)
    print(f"{n_pix} line-pixels with peak S/N > 10; max |guess - truth| centroid "
          f"{guess_err.max():.4f} A")  # fmt: skip
    assert n_pix > 3000
    assert guess_err.max() < 0.05
    for p, z in z_scores.items():
        frac = np.mean(np.concatenate(z) < 3.0)
        print(f"  {p}: fraction within 3 error bars {frac:.4f}")
        assert frac >= 0.99, p


def test_locked_centroids_across_fused_windows(tmp_path):
    """The original tool's documented case: Mg IX 706 (one window) and Mg IX 749.55 (another)
    with centroids tied at their rest separation, and the S IV 748.40 / 750.22 pair likewise."""
    wins = [w for w in composition_windows() if "Mg IX" in w["extname"]]
    truth = make_spice_l2(tmp_path, windows=wins, ny=64, nx=8, seed=3,
                          offset_range=(0.3, 0.3 + 1e-9), include_radiance=True)  # fmt: skip
    tree = saffron_xr.open_spice(truth.attrs["path"])
    (a,) = [n for n in tree.children if n.startswith("O_III")]
    (b,) = [n for n in tree.children if n.startswith("S_IV")]
    fused = fuse_windows(tree, [a, b])
    err = spice_error(fused.radiance)
    model = guess_model(fused.radiance, error=err)
    free = fit_lines(fused.radiance, model, error=err).compute()
    locked = model.copy()
    locked.tie_centroid("mg_9 749.55", "mg_9 706.06")
    locked.tie_centroid("s_4 750.22", "s_4 748.40")
    assert locked.n_free == model.n_free - 2
    fit = fit_lines(fused.radiance, locked, error=err).compute()
    assert fit.background.sizes["segment"] == 2  # separate backgrounds
    ok = np.isin(fit.status.values, CONVERGED)
    assert ok.mean() > 0.95
    cen = fit.centroid.where(ok)
    for line, to in [("mg_9 749.55", "mg_9 706.06"), ("s_4 750.22", "s_4 748.40")]:
        sep = (cen.sel(line=line) - cen.sel(line=to)).values[ok]
        rest = float(fit.rest_wavelength.sel(line=line) - fit.rest_wavelength.sel(line=to))
        np.testing.assert_allclose(sep, rest, atol=1e-6)
        # the tied line borrows the precision of both
        assert np.nanmedian(fit.centroid_err.sel(line=to)) < np.nanmedian(
            free.centroid_err.sel(line=to)
        )
    for node in (a, b):
        tr = truth[node]
        for line in tr.line.values:
            t = tr.sel(line=line)
            comp = [n for n in locked.lines if n.startswith(str(t.ion.values))
                    and abs(locked.line_info(n)["rest_wavelength"] - float(t.rest_wavelength)) < 0.07]  # fmt: skip
            got = float(np.nanmedian(cen.sel(line=comp[0])))
            assert got == pytest.approx(float(np.median(t.centroid)), abs=0.03), (line, comp)


def test_weak_lines_per_pixel_are_tied_and_their_amplitudes_unbiased():
    """Mg VIII 772 at ~0.4 sigma per pixel: the mean of 3000 spectra measures it (kept), one
    spectrum cannot. By default its centroid follows Ne VIII and its width is fixed; its
    amplitude is then unbiased against the truth with pulls of 1, and it no longer ends on
    a bound. Free (weak_pixel_snr=None) it wanders: on a bound in many pixels."""
    from saffron_xr.testing import make_spectra

    ds = make_spectra(3000, lines=(("ne_8", 770.428, 2.0), ("mg_8", 772.262, 0.1)), seed=21)
    model, rep = guess_model(ds.radiance, error=ds.error, return_report=True)
    weak = rep["mg_8 772.26"]
    assert weak.status == "kept" and weak.snr >= 5.0 and weak.snr_pixel < 1.0
    assert "weak_pixel_snr" in weak.reason
    kind, to, offset = model.tie_of("mg_8 772.26", "centroid")
    assert (kind, to) == ("tied", "ne_8 770.42")
    assert offset == pytest.approx(772.262 - 770.428, abs=0.02)
    assert model.tie_of("mg_8 772.26", "width")[0] == "fixed"
    assert model.tie_of("mg_8 772.26", "amplitude") is None
    assert all(model.tie_of("ne_8 770.42", p) is None for p in ("amplitude", "centroid", "width"))

    fits = {}
    for setting in (1.0, None):
        m = guess_model(ds.radiance, error=ds.error, weak_pixel_snr=setting)
        fits[setting] = fit_lines(ds.radiance, m, error=ds.error).compute()
    fit = fits[1.0]
    mg = fit.sel(line="mg_8 772.26")
    truth = ds.amplitude.isel(line=1)
    diff = (mg.amplitude - truth).values
    assert abs(diff.mean()) < 4 * diff.std() / np.sqrt(diff.size)
    assert 0.9 < float(((mg.amplitude - truth) / mg.amplitude_err).std()) < 1.1
    assert float(mg.at_bound.mean()) < 0.01
    ne = fit.sel(line="ne_8 770.42")
    for p in ("amplitude", "centroid", "width"):
        pull = (ne[p] - ds[p].isel(line=0)) / ne[f"{p}_err"]
        assert 0.9 < float(pull.std()) < 1.1, p
    free = fits[None]
    assert free.sizes["line"] == 2
    assert float(free.sel(line="mg_8 772.26").at_bound.mean()) > 0.1
    assert float(free.n_iter.mean()) > float(fit.n_iter.mean())
