"""sunpy Maps of SPICE maps: WCS against hpln/hplt, observer, time, unit, styles."""

from __future__ import annotations

import inspect

import astropy.units as u
import numpy as np
import pytest
import sunpy.map
import xarray as xr
from astropy.io import fits

import saffron_xr
from saffron_xr import open_spice, to_sunpy_map
from saffron_xr.io.sunpy_map import WCS_TOLERANCE_ARCSEC

NE8_NODE = "Ne_VIII_770_Peak_data"


@pytest.fixture(scope="module")
def ne8_window(ne8_file):
    return open_spice(ne8_file)[NE8_NODE].to_dataset()


def _world_arcsec(smap):
    """sunpy's world coordinate (arcsec) of every pixel of the map, shape (ny, nx)."""
    ny, nx = smap.data.shape
    iy, ix = np.mgrid[:ny, :nx]
    coord = smap.pixel_to_world(ix * u.pix, iy * u.pix)
    return coord.Tx.to_value(u.arcsec), coord.Ty.to_value(u.arcsec)


def _assert_on_grid(smap, da):
    lon, lat = _world_arcsec(smap)
    want_lon = da["hpln"].transpose("y", "x").values
    want_lat = da["hplt"].transpose("y", "x").values
    assert np.abs(lon - want_lon).max() < 0.1
    assert np.abs(lat - want_lat).max() < 0.1


def _observer_checks(smap, window):
    hdr = fits.Header.fromstring(window.attrs["header"], sep="\n")
    obs = smap.observer_coordinate
    assert obs.lon.to_value(u.deg) == pytest.approx(hdr["HGLN_OBS"], abs=1e-9)
    assert obs.lat.to_value(u.deg) == pytest.approx(hdr["HGLT_OBS"], abs=1e-9)
    assert obs.radius.to_value(u.m) == pytest.approx(hdr["DSUN_OBS"], rel=1e-12)
    assert smap.date.isot.startswith(hdr["DATE-OBS"][:19])
    assert smap.reference_date.isot.startswith(hdr["DATE-AVG"][:19])


@pytest.mark.slow
def test_velocity_map_of_the_real_ne8_window(ne8_window):
    rad = ne8_window["radiance"]
    err = rad.saffron.spice_error()
    model = rad.saffron.guess_model(error=err)
    params = rad.saffron.fit(model, error=err).compute()
    vel = params.saffron.doppler_velocity(reference="median")
    v = vel["doppler_velocity"].sel(line="ne_8 770.42")
    # the window's WCS is taken from the opened window (results may not carry it)
    smap = to_sunpy_map(v, wcs_source=ne8_window)
    assert isinstance(smap, sunpy.map.GenericMap)
    assert smap.unit == u.km / u.s
    np.testing.assert_array_equal(smap.data, v.transpose("y", "x").values)
    # every pixel, the centre one included, sits on hpln/hplt
    _assert_on_grid(smap, v.assign_coords(hpln=ne8_window.hpln, hplt=ne8_window.hplt))
    cy, cx = smap.data.shape[0] // 2, smap.data.shape[1] // 2
    centre = smap.pixel_to_world(cx * u.pix, cy * u.pix)
    assert centre.Tx.to_value(u.arcsec) == pytest.approx(float(ne8_window.hpln[cy, cx]), abs=0.1)
    assert centre.Ty.to_value(u.arcsec) == pytest.approx(float(ne8_window.hplt[cy, cx]), abs=0.1)
    _observer_checks(smap, ne8_window)
    assert smap.wavelength.to_value(u.AA) == pytest.approx(float(v["rest_wavelength"]))
    # diverging colormap, symmetric about zero
    assert smap.plot_settings["cmap"] == "RdBu_r"
    norm = smap.plot_settings["norm"]
    assert norm.vmin == pytest.approx(-norm.vmax) and norm.vmax > 0
    # sunpy sees it as a helioprojective map
    assert smap.coordinate_frame.name == "helioprojective"


def _params_like(window, rng):
    """A hand-built fit result on the window's grid (coordinates as the reader gives them)."""
    ny, nx = window.sizes["y"], window.sizes["x"]
    centroid = 770.0 + 0.02 * rng.standard_normal((1, ny, nx))
    return xr.Dataset(
        {
            "centroid": (("line", "y", "x"), centroid, {"units": "Angstrom"}),
            "centroid_err": (
                ("line", "y", "x"),
                np.full((1, ny, nx), 0.01),
                {"units": "Angstrom"},
            ),
            "amplitude": (("line", "y", "x"), np.ones((1, ny, nx)), {"units": "W m-2 sr-1 nm-1"}),
        },
        coords={
            "line": ["ne_8 770.42"],
            "rest_wavelength": ("line", [770.42]),
            "hpln": window.hpln,
            "hplt": window.hplt,
        },
        attrs={"EXTNAME": window.attrs["EXTNAME"]},
    )


def test_derived_map_carries_its_wcs_through_coordinates(ne8_window, tmp_path):
    params = _params_like(ne8_window, np.random.default_rng(3))
    v = params.saffron.doppler_velocity(reference="median")["doppler_velocity"]
    v = v.sel(line="ne_8 770.42")
    assert "spatial_wcs" in v["hpln"].attrs  # derive keeps the coordinates' attributes
    smap = v.saffron.to_sunpy_map()
    _assert_on_grid(smap, v)
    _observer_checks(smap, ne8_window)
    assert smap.unit == u.km / u.s
    # a results file keeps them too
    path = saffron_xr.to_netcdf(params, tmp_path / "r.nc")
    with saffron_xr.open_results(path) as tree:
        back = tree[NE8_NODE]["centroid"].sel(line="ne_8 770.42")
        smap2 = to_sunpy_map(back)
        _assert_on_grid(smap2, back)
        assert smap2.unit == u.AA


def test_data_maps_cutouts_strides_binning(ne8_window):
    rad = ne8_window["radiance"]
    at = rad.isel(wavelength=30)
    smap = to_sunpy_map(at)
    _assert_on_grid(smap, at)
    assert smap.unit == u.W / (u.m**2 * u.sr * u.nm)
    assert smap.plot_settings["cmap"] == "inferno"
    assert smap.wavelength.to_value(u.AA) == pytest.approx(float(at.wavelength))
    # a mean over wavelength keeps the coordinates (and their WCS attribute)
    _assert_on_grid(to_sunpy_map(rad.mean("wavelength")), rad.isel(wavelength=0))
    for cut in (
        at.isel(y=slice(100, 700, 3), x=slice(1, 3)),
        at.isel(y=slice(None, None, -1)),  # flipped
        at.transpose("x", "y"),  # order of dims does not matter
        at.isel(x=[2]),  # one raster step
        at.coarsen(y=4, boundary="trim").mean(),  # binned: mean coordinates
    ):
        m = to_sunpy_map(cut)
        assert m.data.shape == (cut.sizes["y"], cut.sizes["x"])
        _assert_on_grid(m, cut)
        np.testing.assert_array_equal(m.data, cut.transpose("y", "x").values)


def test_single_slit_position_file(exp_file):
    tree = open_spice(exp_file)
    for name in tree.children:
        ds = tree[name].to_dataset()
        at = ds["radiance"].isel(wavelength=10)
        assert at.sizes["x"] == 1
        m = to_sunpy_map(at)
        _assert_on_grid(m, at)
        _observer_checks(m, ds)


def test_bad_input(ne8_window):
    rad = ne8_window["radiance"]
    with pytest.raises(ValueError, match=r"dims \('y', 'x'\)"):
        to_sunpy_map(rad)
    with pytest.raises(ValueError, match="'hpln' coordinate"):
        to_sunpy_map(rad.isel(wavelength=3).drop_vars("hpln"))
    bare = rad.isel(wavelength=3)
    bare = bare.assign_coords(hpln=bare.hpln.copy(), hplt=bare.hplt.copy())
    bare.hpln.attrs.clear()
    bare.hplt.attrs.clear()
    with pytest.raises(ValueError, match="carries no helioprojective WCS"):
        to_sunpy_map(bare)
    # with the window as the source it works
    _assert_on_grid(to_sunpy_map(bare, wcs_source=ne8_window), bare)
    # coordinates that no affine regridding of the WCS explains are refused
    bent = rad.isel(wavelength=3)
    bent = bent.assign_coords(hpln=bent.hpln + 1e-5 * (bent.hplt - float(bent.hplt.mean())) ** 2)
    bent.hpln.attrs.update(rad.hpln.attrs)
    with pytest.raises(ValueError, match="depart from the window's WCS") as info:
        to_sunpy_map(bent)
    assert str(WCS_TOLERANCE_ARCSEC) in str(info.value)
    with pytest.raises(TypeError):
        to_sunpy_map(ne8_window)


def test_caller_styles_and_accessor_signature(ne8_window):
    import matplotlib.colors as mcolors

    at = ne8_window["radiance"].isel(wavelength=30)
    norm = mcolors.LogNorm(1e-3, 1.0)
    m = at.saffron.to_sunpy_map(cmap="gray", norm=norm)
    assert m.plot_settings["cmap"] == "gray" and m.plot_settings["norm"] is norm
    method = inspect.signature(xr.DataArray.saffron.to_sunpy_map)
    function = inspect.signature(to_sunpy_map)
    assert list(method.parameters)[1:] == list(function.parameters)[1:]
