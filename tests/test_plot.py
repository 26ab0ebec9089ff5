"""Quicklooks (matplotlib) and explorers (holoviews/bokeh) on real and synthetic data."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

import saffron_xr
from saffron_xr import derive
from saffron_xr.plot import explore, explore_results, explore_window, line_label, quicklook
from saffron_xr.plot._geometry import pixel_corners
from saffron_xr.testing import raise_if_dask_computes

NE8_NODE = "Ne_VIII_770_Peak_data"


# ----------------------------------------------------------------------------- data


def synthetic_results(
    ny=60, nx=24, lines=("ne_8 770.42", "mg_9 706.02"), seed=1, hpln=None, hplt=None
):
    """A parameter Dataset with the documented layout and known maps (seeded).

    Velocity (before 2 km/s noise): +20 km/s in the first quarter of the raster steps, -20 in
    the last, 0 between (so 0 is also the median); a block of failed pixels (status SINGULAR, NaN parameters) and a NaN top row.
    """
    rng = np.random.default_rng(seed)
    cdelt1, cdelt2 = 4.0, 1.098
    if hpln is None:
        jj, ii = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        th = np.deg2rad(2.0)
        dx, dy = (ii - nx / 2) * cdelt1, (jj - ny / 2) * cdelt2
        hpln = 300 + dx * np.cos(th) - dy * np.sin(th)
        hplt = -200 + dx * np.sin(th) + dy * np.cos(th)
    ny, nx = np.shape(hpln)
    nl = len(lines)
    rest = np.array([float(s.split()[1]) for s in lines])
    amp = rng.lognormal(0.0, 0.2, (nl, ny, nx)) * (1 + np.arange(nl))[:, None, None]
    col = np.arange(nx)
    pattern = np.select([col < nx // 4, col >= nx - nx // 4], [20.0, -20.0], 0.0)
    v = pattern[None, None, :] + rng.normal(0, 2, (nl, ny, nx))
    cen = rest[:, None, None] * (1 + v / derive.SPEED_OF_LIGHT)
    wid = 0.35 + rng.normal(0, 0.01, (nl, ny, nx))
    status = np.zeros((ny, nx), int)
    status[0, :] = 5
    status[ny // 2 : ny // 2 + 3, 2:6] = 3
    status[rng.random((ny, nx)) < 0.03] = 1
    bad = np.isin(status, (3, 5))
    for a in (amp, cen, wid):
        a[:, bad] = np.nan
    chi2 = rng.gamma(8, 1 / 8, (ny, nx))
    chi2[bad] = np.nan

    def pv(a, units):
        return xr.DataArray(a, dims=("line", "y", "x"), attrs={"units": units})

    return xr.Dataset(
        {
            "amplitude": pv(amp, "W m-2 sr-1 nm-1"),
            "amplitude_err": pv(0.05 * amp, "W m-2 sr-1 nm-1"),
            "centroid": pv(cen, "Angstrom"),
            "centroid_err": pv(np.full_like(cen, 0.005), "Angstrom"),
            "width": pv(wid, "Angstrom"),
            "width_err": pv(np.full_like(wid, 0.01), "Angstrom"),
            "background": (
                ("degree", "y", "x"),
                np.full((1, ny, nx), 0.1),
                {"units": "W m-2 sr-1 nm-1"},
            ),
            "chi2": (("y", "x"), chi2, {"units": "1"}),
            "status": (("y", "x"), status, {"units": "1"}),
            "n_iter": (("y", "x"), np.full((ny, nx), 5), {"units": "1"}),
            "n_valid": (("y", "x"), np.full((ny, nx), 40), {"units": "1"}),
        },
        coords={
            "line": list(lines),
            "ion": ("line", [s.split()[0] for s in lines]),
            "rest_wavelength": ("line", rest, {"units": "Angstrom"}),
            "degree": [0],
            "background_reference": ((), float(rest.mean()), {"units": "Angstrom"}),
            "hpln": (("y", "x"), np.asarray(hpln, float), {"units": "arcsec"}),
            "hplt": (("y", "x"), np.asarray(hplt, float), {"units": "arcsec"}),
        },
        attrs={
            "STUDY": "SYNTHETIC_STUDY",
            "DATE-OBS": "2024-04-25T12:19:22.000",
            "EXTNAME": "Synthetic window",
            "CDELT1": cdelt1,
            "CDELT2": cdelt2,
        },
    )


@pytest.fixture(scope="module")
def ne8_tree():
    return saffron_xr.open_spice(saffron_xr.ne8_window_path())


@pytest.fixture(scope="module")
def ne8_results(ne8_tree):
    """Parameters on the real Ne VIII window's coordinates (3 raster steps, tilted slit)."""
    ds = ne8_tree[NE8_NODE].dataset
    res = synthetic_results(lines=("ne_8 770.42",), hpln=ds["hpln"].values, hplt=ds["hplt"].values)
    for key in ("STUDY", "DATE-OBS", "EXTNAME", "CDELT1", "CDELT2"):
        res.attrs[key] = ds.attrs[key]
    return res


@pytest.fixture(scope="module")
def ne8_fit(ne8_tree):
    """A real fit of the shipped Ne VIII window (noise-model errors, guessed model)."""
    from saffron_xr.prep.noise import spice_error

    radiance = ne8_tree[NE8_NODE].dataset["radiance"]
    error = spice_error(radiance)
    model = saffron_xr.guess_model(radiance, error=error)
    return saffron_xr.fit_lines(radiance, model, error=error).compute()


def _map_axes(fig):
    """The map axes (those with a pcolormesh), in row-major order."""
    from matplotlib.collections import QuadMesh

    return [
        ax
        for ax in fig.axes
        if ax.get_label() != "<colorbar>" and any(isinstance(c, QuadMesh) for c in ax.collections)
    ]


def _mesh(ax):
    from matplotlib.collections import QuadMesh

    return next(c for c in ax.collections if isinstance(c, QuadMesh))


# ----------------------------------------------------------------------------- helpers


def test_line_label():
    assert line_label("ne_8 770.42") == "Ne VIII 770.42 Å"
    assert line_label("fe_12 1242.00") == "Fe XII 1242.00 Å"
    assert line_label("h_1 1025.72") == "H I 1025.72 Å"
    assert line_label("o_6 1031.91") == "O VI 1031.91 Å"
    assert line_label("not a line") == "not a line"


def test_model_parts_split_one_pixel_into_background_and_gaussians():
    """The explorers' components: each line's Gaussian at half maximum one half-FWHM from its
    centre, the linear background, and their sum equal to the fitted model."""
    from saffron_xr.fit.profiles import gaussian
    from saffron_xr.plot._common import model_parts

    px = xr.Dataset(
        {
            "amplitude": ("line", [3.0, 1.5]),
            "centroid": ("line", [770.0, 771.0]),
            "width": ("line", [0.2, 0.1]),
            "background": ("degree", [0.5, 0.25]),
        },
        coords={"line": ["ne_8 770.42", "mg_9 706.06"], "background_reference": 770.5},
    )
    wl = np.linspace(769.0, 772.0, 301)
    model, background, lines = model_parts(px, wl)
    np.testing.assert_allclose(background, 0.5 + 0.25 * (wl - 770.5), atol=1e-12)
    half = np.sqrt(2.0 * np.log(2.0))  # half width at half maximum, in sigmas
    assert lines["ne_8 770.42"][100] == pytest.approx(3.0)  # wl[100] = 770.0
    assert gaussian(770.0 + 0.2 * half, 3.0, 770.0, 0.2) == pytest.approx(1.5)
    assert gaussian(771.0 - 0.1 * half, 1.5, 771.0, 0.1) == pytest.approx(0.75)
    np.testing.assert_allclose(model, background + sum(lines.values()), atol=1e-12)
    assert model[100] == pytest.approx(3.0 + 0.5 - 0.125 + 1.5 * np.exp(-50.0), abs=1e-12)


def test_corners_of_a_regular_grid_are_half_steps():
    ys, xs = np.meshgrid(np.arange(4) * 1.5, 10 + np.arange(3) * 4.0, indexing="ij")
    c = pixel_corners(np.stack([xs, ys], -1), [0, 1.5], [4.0, 0])
    assert c.shape == (5, 4, 2)
    np.testing.assert_allclose(c[0, 0], [8.0, -0.75])
    np.testing.assert_allclose(c[-1, -1], [20.0, 5.25])
    # a single raster step: the cell is the given step wide
    c1 = pixel_corners(np.stack([xs[:, :1], ys[:, :1]], -1), [0, 1.5], [4.0, 0])
    np.testing.assert_allclose(c1[0, :, 0], [8.0, 12.0])


# ----------------------------------------------------------------------------- quicklook


def test_quicklook_axes_labels_and_colour_limits(tmp_path):
    import matplotlib as mpl
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    res = synthetic_results()
    rc_before = dict(mpl.rcParams)
    figs_before = plt.get_fignums()
    out = tmp_path / "sub" / "ql.png"
    fig = quicklook(res, out, dpi=50, velocity_reference="median")

    assert isinstance(fig, Figure)
    assert dict(mpl.rcParams) == rc_before, "quicklook changed matplotlib rcParams"
    assert plt.get_fignums() == figs_before, "quicklook registered a pyplot figure"
    assert out.stat().st_size > 10_000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    maps = _map_axes(fig)
    assert len(maps) == 2 * 5  # two lines, five panels each
    title = fig.get_suptitle()
    assert "SYNTHETIC_STUDY" in title and "2024-04-25T12:19:22" in title
    for ax in maps:
        assert ax.get_xlabel() == "Solar X (arcsec)"
        assert ax.get_ylabel() == "Solar Y (arcsec)"
        assert ax.get_aspect() == 1.0  # arcsec on both axes, true scale
        # the limits cover the pixel footprints (centres +- half a pixel)
        x0, x1 = ax.get_xlim()
        assert x0 < res.hpln.min() - 1.9 and x1 > res.hpln.max() + 1.9
    for row, line in enumerate(res.line.values):
        rad_ax, vel_ax, fw_ax, chi_ax, st_ax = maps[5 * row : 5 * row + 5]
        label = line_label(str(line))
        for ax in (rad_ax, vel_ax, fw_ax, chi_ax, st_ax):
            assert ax.get_title().startswith(label)
        assert "radiance" in rad_ax.get_title()
        assert "Doppler velocity" in vel_ax.get_title()
        assert "FWHM" in fw_ax.get_title()
        assert "χ²" in chi_ax.get_title()
        assert "status" in st_ax.get_title()

        assert isinstance(_mesh(rad_ax).norm, LogNorm)
        # velocity: diverging colour map, limits symmetric about 0 at the 99th percentile
        mesh = _mesh(vel_ax)
        assert mesh.get_cmap().name == "RdBu_r"
        vmin, vmax = mesh.get_clim()
        assert vmin == pytest.approx(-vmax)
        v = derive.doppler_velocity(res.sel(line=[line]), reference="median")["doppler_velocity"]
        expected = np.nanpercentile(np.abs(v.values), 99.0)
        assert vmax == pytest.approx(expected, rel=1e-6)
        assert 18 < vmax < 30  # the +-20 km/s pattern plus noise
        # the first quarter of the raster is red-shifted: positive values there
        arr = mesh.get_array().filled(np.nan).reshape(res.sizes["y"], res.sizes["x"])
        assert np.nanmedian(arr[:, : res.sizes["x"] // 4]) > 15
        assert np.nanmedian(arr[:, -(res.sizes["x"] // 4) :]) < -15

    # the status map shows the codes, with the failed block
    st = _mesh(maps[4]).get_array()
    assert set(np.unique(np.asarray(st))) == {0, 1, 3, 5}
    st_all = res.status.values
    with_data = st_all != 5
    conv = 100 * (st_all[with_data] == 0).mean()
    at_bound = 100 * (st_all[with_data] == 1).mean()
    title = maps[4].get_title()
    # one definition: status CONVERGED only, stated; at-bound fits counted separately
    assert f"{conv:.1f}% converged (= status CONVERGED)" in title
    assert f"{at_bound:.1f}% converged at a bound" in title
    # NaN (failed) pixels are masked, drawn on the grey background
    rad = _mesh(maps[0]).get_array()
    assert np.ma.count_masked(rad) == int((res.status != 0).sum())


def test_quicklook_velocity_reference():
    res = synthetic_results(lines=("ne_8 770.42",))
    full = xr.merge(
        [res, derive.doppler_velocity(res, reference="rest")], combine_attrs="override"
    )
    full["doppler_velocity"] = full["doppler_velocity"] + 100.0  # a stored, corrected one
    # default: the stored velocity as it is (the same numbers as the file), its reference
    # stated in the title and in the colour-bar label
    for fig in (quicklook(full), quicklook(full, velocity_reference="stored")):
        vel_ax = _map_axes(fig)[1]
        assert "rel. to rest wavelength" in vel_ax.get_title()
        mesh = _mesh(vel_ax)
        assert "rel. to rest wavelength" in mesh.colorbar.ax.get_ylabel()
        vmax = mesh.get_clim()[1]
        expected = np.nanpercentile(np.abs(full.doppler_velocity.values), 99.0)
        assert vmax == pytest.approx(expected) and vmax > 100
        drawn = mesh.get_array().filled(np.nan).ravel()
        stored = full.doppler_velocity.sel(line="ne_8 770.42").transpose("y", "x").values
        np.testing.assert_array_equal(drawn, stored.ravel())
    # an explicit reference recomputes from the centroids
    fig = quicklook(full, velocity_reference="median")
    vel_ax = _map_axes(fig)[1]
    assert "median" in vel_ax.get_title()
    assert _mesh(vel_ax).get_clim()[1] < 40
    # nothing stored: the package's default reference, stated
    fig = quicklook(res)
    default = derive.doppler_velocity(res)["doppler_velocity"]
    vel_ax = _map_axes(fig)[1]
    assert _mesh(vel_ax).get_clim()[1] == pytest.approx(
        np.nanpercentile(np.abs(default.values), 99.0)
    )
    assert "reference not stated" not in vel_ax.get_title()
    # an explicit wavelength
    fig = quicklook(res, velocity_reference=770.0)
    assert "ref: " in _map_axes(fig)[1].get_title()
    with pytest.raises(ValueError, match="stored"):
        quicklook(res, velocity_reference="stored")


def test_quicklook_png_is_written_atomically(tmp_path, monkeypatch):
    from PIL import Image

    res = synthetic_results(lines=("ne_8 770.42",))
    out = tmp_path / "ql.png"
    original = Image.Image.save

    def interrupted(self, fp, *args, **kwargs):
        original(self, fp, *args, **kwargs)
        raise KeyboardInterrupt  # after the image is written, before it gets its name

    monkeypatch.setattr(Image.Image, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        quicklook(res, out, dpi=30)
    assert list(tmp_path.iterdir()) == []  # neither the final name nor a .part file


def test_quicklook_real_ne8_geometry_is_stretched_and_labelled(ne8_results):
    fig = quicklook(ne8_results)
    maps = _map_axes(fig)
    assert len(maps) == 5
    ax = maps[1]
    # 3 raster steps of 4" against 832 slit pixels of 1.098": x is stretched, and says so
    assert "stretched" in ax.get_xlabel()
    stretch = int(ax.get_xlabel().split("×")[1].rstrip("]"))
    assert stretch > 1
    assert ax.get_aspect() == pytest.approx(1.0 / stretch)
    y0, y1 = ax.get_ylim()
    hplt = ne8_results.hplt.values
    assert y0 == pytest.approx(hplt.min() - 1.098 / 2, abs=0.2)
    assert y1 == pytest.approx(hplt.max() + 1.098 / 2, abs=0.2)
    assert "SCI_HIGH-CAD_SS_SL04_4.7S_FF" in fig.get_suptitle()
    assert "2022-03-17T00:25:36" in fig.get_suptitle()


@pytest.mark.slow  # compiles the fitting kernel once (real fit fixture)
def test_quicklook_of_a_real_fit(ne8_fit, tmp_path):
    from saffron_xr import FitStatus

    fig = ne8_fit.saffron.quicklook(tmp_path / "ne8.png", dpi=40)
    assert (tmp_path / "ne8.png").stat().st_size > 5_000
    maps = _map_axes(fig)
    assert len(maps) == 5
    assert maps[0].get_title() == "Ne VIII 770.42 Å\nradiance"
    # status: the off-slit rows of the window are ALL_NAN, the rest were fitted
    status = np.asarray(_mesh(maps[4]).get_array())
    assert int(FitStatus.ALL_NAN) in status
    assert np.isin(status, [int(c) for c in FitStatus.usable()]).mean() > 0.5
    st = ne8_fit.status.values
    conv = 100.0 * (st[st != int(FitStatus.ALL_NAN)] == 0).mean()
    assert f"{conv:.1f}% converged" in maps[4].get_title()
    # velocity: symmetric limits, diverging map
    mesh = _mesh(maps[1])
    vmin, vmax = mesh.get_clim()
    assert vmin == pytest.approx(-vmax) and vmax > 0
    assert mesh.get_cmap().name == "RdBu_r"


def test_quicklook_datatree_of_windows_and_accessors(tmp_path):
    a = synthetic_results(lines=("ne_8 770.42",), seed=2)
    b = synthetic_results(lines=("o_6 1031.91", "c_2 1036.34"), seed=3)
    tree = xr.DataTree.from_dict({"/": xr.Dataset(attrs=a.attrs), "/w1": a, "/w2": b})
    fig = tree.saffron.quicklook(tmp_path / "tree.png", dpi=40)
    maps = _map_axes(fig)
    assert len(maps) == 3 * 5
    titles = [maps[5 * r].get_title() for r in range(3)]
    assert [t.split("\n")[0] for t in titles] == [
        "Ne VIII 770.42 Å",
        "O VI 1031.91 Å",
        "C II 1036.34 Å",
    ]
    assert (tmp_path / "tree.png").exists()
    assert len(_map_axes(a.saffron.quicklook())) == 5


def test_quicklook_sit_and_stare():
    res = synthetic_results(lines=("ne_8 770.42",))
    sas = res.rename(x="time").assign_coords(
        time=np.datetime64("2020-06-20T23:59:01")
        + np.arange(res.sizes["x"]) * np.timedelta64(5, "s")
    )
    sas = sas.assign_coords(hplt=sas.hplt.mean("time"), hpln=sas.hpln.mean("time"))
    fig = quicklook(sas)
    ax = _map_axes(fig)[1]
    assert ax.get_xlabel() == "time (UTC)"
    assert ax.get_ylabel() == "Solar Y (arcsec)"
    assert ax.get_aspect() == "auto"


def test_quicklook_raw_window(ne8_tree, tmp_path):
    fig = ne8_tree.saffron.quicklook(tmp_path / "window.png", dpi=40)
    ax_map, ax_det, ax_spec = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert ax_map.get_xlabel().startswith("Solar X (arcsec)")
    assert "mean over wavelength" in ax_map.get_title()
    assert ax_det.get_xlabel() == "wavelength (Å)"
    # the mean spectrum peaks near the (blue-shifted) Ne VIII line
    wl, mean = ax_spec.lines[0].get_data()
    assert 769.5 < wl[np.nanargmax(mean)] < 770.6
    # the DataArray accessor draws the same
    da_fig = ne8_tree[NE8_NODE].dataset["radiance"].saffron.quicklook()
    assert len(da_fig.axes) == len(fig.axes)


def test_quicklook_single_raster_step_draws_profiles(exp_file):
    """x = 1 (single exposures): each panel is the quantity along the slit, not a sliver."""
    from matplotlib.collections import PathCollection

    tree = saffron_xr.open_spice(exp_file)
    fig = quicklook(tree)
    profile_axes = [
        ax for ax in fig.axes if any(isinstance(c, PathCollection) for c in ax.collections)
    ]
    assert len(profile_axes) == len(tree.children) == 2
    for ax in profile_axes:
        assert ax.get_ylabel() == "Solar Y (arcsec)"
        assert ax.get_xlabel().startswith("mean radiance")
    res = synthetic_results(nx=1, lines=("ne_8 770.42",))
    fig = quicklook(res)
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(axes) == 5
    vel = next(c for c in axes[1].collections if isinstance(c, PathCollection))
    vmin, vmax = vel.get_clim()
    assert vmin == pytest.approx(-vmax) and vel.get_cmap().name == "RdBu_r"
    assert axes[1].get_xlabel() == "Doppler velocity (km/s)"
    # every pixel with a derived velocity (finite centroid and a good fit) is a point
    good = np.isfinite(res.centroid) & (res.status == 0)
    assert len(vel.get_offsets()) == int(good.sum())


def test_quicklook_rejects_bad_input():
    with pytest.raises(TypeError, match="quicklook takes"):
        quicklook(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="percentile"):
        quicklook(synthetic_results(), percentile=30)
    with pytest.raises(ValueError, match="no node"):
        quicklook(xr.DataTree(xr.Dataset({"a": ("q", [1.0])})))


# ----------------------------------------------------------------------------- explorer


def test_import_does_not_load_plotting_libraries():
    code = (
        "import sys, saffron_xr, saffron_xr.plot\n"
        "loaded = [m for m in ('holoviews', 'hvplot', 'bokeh', 'matplotlib', 'panel')"
        " if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture(scope="module")
def lazy_pair(ne8_tree, ne8_fit):
    """The real window (dask) and its real fit, dask-backed."""
    return ne8_tree, ne8_fit.chunk({"y": 208})


@pytest.mark.slow  # compiles the fitting kernel once (real fit fixture)
def test_explore_window_builds_lazily_and_renders(lazy_pair):
    import holoviews as hv

    tree, res = lazy_pair
    with raise_if_dask_computes():
        view = explore_window(tree, res)
        view2 = tree.saffron.explore(res)
    assert isinstance(view, hv.Layout) and isinstance(view2, hv.Layout)
    # one frame: the mean image, the marker and the spectrum of one pixel
    with raise_if_dask_computes(max_computes=4) as sched:
        model = hv.render(view, backend="bokeh")
    assert sched.total_computes >= 1
    from bokeh.models import TapTool
    from bokeh.plotting import figure

    figs = {
        f.title.text.split(":")[1].strip().split(" ")[0]: f for f in model.select({"type": figure})
    }
    assert set(figs) == {"mean", "spectrum"}
    image_fig = figs["mean"]
    assert list(image_fig.select(TapTool)), "the image must take taps"
    assert image_fig.xaxis[0].axis_label.startswith("Solar X (arcsec)")
    assert figs["spectrum"].xaxis[0].axis_label == "wavelength (Å)"
    from bokeh.embed import file_html
    from bokeh.resources import CDN

    html = file_html(model, CDN, "explorer")
    assert "bokeh" in html and len(html) > 10_000


@pytest.mark.slow  # compiles the fitting kernel once (real fit fixture)
def test_explore_window_frames_show_the_right_data(lazy_pair):
    tree, res = lazy_pair
    view = explore_window(tree, res)
    image_map, spectrum_map = view.DynamicMap.I, view.DynamicMap.II
    rad = tree[NE8_NODE].dataset["radiance"]
    wl = rad.wavelength.values

    # image at a wavelength (slider) is the radiance there
    img = image_map[("at wavelength", round(float(wl[20]), 3))].Image.I
    expected = rad.isel(wavelength=20).values
    got = img.dimension_values(2, flat=False)
    assert np.nanmax(np.abs(np.sort(got.ravel()) - np.sort(expected.ravel()))) < 1e-6
    assert img.kdims[0].name == "solar_x"
    # the default image: the mean over wavelength of each pixel
    mean = image_map[("mean", round(float(wl[0]), 3))].Image.I.dimension_values(2)
    assert np.nansum(mean) == pytest.approx(float(rad.mean("wavelength").sum()), rel=1e-5)

    # a tap at a pixel shows that pixel's spectrum, model and components
    ds = tree[NE8_NODE].dataset
    iy, ix = 400, 2
    x = float(ds.hpln.isel(x=ix).mean())
    y = float(ds.hplt.isel(y=iy).mean())
    spectrum_map.streams[0].event(x=x, y=y)
    overlay = spectrum_map[()]
    curves = {c.label: c for c in overlay}
    np.testing.assert_allclose(
        curves["data"].dimension_values(1), rad.isel(y=iy, x=ix).values, equal_nan=True
    )
    assert {"model", "background", "Ne VIII 770.42 Å"} <= set(curves)
    p = res.isel(y=iy, x=ix).compute()
    assert int(p.status) in [int(c) for c in saffron_xr.FitStatus.usable()]
    model = curves["model"]
    fine = model.dimension_values(0)
    np.testing.assert_allclose(
        model.dimension_values(1), saffron_xr.model_spectrum(p, fine).values, rtol=1e-10
    )
    peak = fine[np.argmax(model.dimension_values(1))]
    assert peak == pytest.approx(float(p.centroid.isel(line=0)), abs=0.05)
    # the component drawn is the Gaussian on top of the background
    comp = curves["Ne VIII 770.42 Å"].dimension_values(1) - curves["background"].dimension_values(
        1
    )
    assert comp.max() == pytest.approx(float(p.amplitude.isel(line=0)), rel=1e-3)
    assert "status: " in overlay.opts.get().kwargs["title"]
    assert f"y={iy}, x={ix}" in overlay.opts.get().kwargs["title"]


@pytest.mark.slow  # compiles the fitting kernel once (real fit fixture)
def test_explore_results_builds_lazily_and_selects_lines(lazy_pair):
    import holoviews as hv

    _, res = lazy_pair
    two = synthetic_results().chunk({"y": 30})
    with raise_if_dask_computes():
        dmap = explore_results(two)
        dmap2 = two.saffron.explore()
        single = explore(res)
    assert isinstance(dmap, hv.DynamicMap) and isinstance(dmap2, hv.DynamicMap)
    assert dmap.kdims[0].values == ["Ne VIII 770.42 Å", "Mg IX 706.02 Å"]
    assert "doppler_velocity" in dmap.kdims[1].values and "status" in dmap.kdims[1].values
    with raise_if_dask_computes(max_computes=3):
        hv.render(single, backend="bokeh")
    frame = dmap[("Mg IX 706.02 Å", "doppler_velocity")]
    lo, hi = frame.opts.get().kwargs["clim"]
    assert lo == pytest.approx(-hi) and hi > 15
    assert frame.opts.get().kwargs["cmap"] == "RdBu_r"
    from bokeh.models import ColorBar, LinearColorMapper

    fig = hv.render(frame, backend="bokeh")
    (mapper,) = fig.select(LinearColorMapper)
    assert mapper.low == pytest.approx(-mapper.high) and mapper.high == pytest.approx(hi)
    assert "km s-1" in next(iter(fig.select(ColorBar))).title
    assert fig.xaxis[0].axis_label == "Solar X (arcsec)"
    rad = dmap[("Ne VIII 770.42 Å", "radiance")].dimension_values(2)
    expected = derive.radiance(two.isel(line=[0]))["radiance"].values
    assert np.nansum(rad) == pytest.approx(float(np.nansum(expected)))


def test_explore_results_of_a_datatree():
    a = synthetic_results(lines=("ne_8 770.42",), seed=2)
    b = synthetic_results(lines=("ne_8 770.42", "o_6 1031.91"), seed=3)
    tree = xr.DataTree.from_dict({"/w1": a, "/w2": b})
    dmap = explore(tree)
    assert dmap.kdims[0].values == [
        "w1: Ne VIII 770.42 Å",
        "w2: Ne VIII 770.42 Å",
        "O VI 1031.91 Å",
    ]
    import holoviews as hv
    from bokeh.models import LinearColorMapper

    from saffron_xr.plot.quicklook import STATUS_COLORS

    fig = hv.render(dmap[("O VI 1031.91 Å", "status")], backend="bokeh")
    (mapper,) = fig.select(LinearColorMapper)
    assert list(mapper.palette) == [STATUS_COLORS[c.name] for c in saffron_xr.FitStatus]
    assert (mapper.low, mapper.high) == (-0.5, len(saffron_xr.FitStatus) - 0.5)
    img = dmap[("O VI 1031.91 Å", "width")]
    np.testing.assert_allclose(
        np.nansum(img.dimension_values(2)), np.nansum(b.width.sel(line="o_6 1031.91"))
    )
