"""2-D maps as :class:`sunpy.map.GenericMap`: helioprojective WCS, observer, time, unit.

Every study that overlays SPICE maps on EUI or AIA images, reprojects them or plots them with
sunpy needs a Map. :func:`to_sunpy_map` builds one from any 2-D ``(y, x)`` DataArray that
came from a SPICE window -- a fitted parameter, a derived map (velocity, radiance, width),
a quality map, or radiance at one wavelength -- without re-reading the file:

* the WCS is the file's helioprojective WCS, which the reader stores as FITS cards in the
  ``spatial_wcs`` attribute of the ``hpln``/``hplt`` coordinates (see
  :func:`saffron_xr.io.reader.spatial_wcs_text`); a map that is a cut-out, a strided or
  binned version of the window gets that WCS regridded onto its own pixels (the pixel
  mapping is fitted to the ``hpln``/``hplt`` coordinates), and every pixel's world
  coordinate is checked against ``hpln``/``hplt`` to 0.1 arcsec;
* the observer location comes from the header's ``DSUN_OBS``, ``HGLN_OBS``, ``HGLT_OBS``
  and the observation time from ``DATE-OBS``/``DATE-AVG`` (sunpy's reference date);
* the unit from the DataArray's ``units`` attribute, and a colormap and normalisation that
  suit the quantity (symmetric diverging for Doppler velocities, a square-root stretch for
  radiances, a linear one otherwise).

sunpy is an optional dependency (``pip install 'saffron_xr[sunpy]'``), imported inside the
function. For users who hold an ndcube / sunraster object of a SPICE file: open the same
file with :func:`saffron_xr.open_spice` (sunraster's ``read_spice_l2_fits`` and saffron_xr
read the same L2 FITS), and hand the maps back with this function.
"""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr
from astropy.io import fits

__all__ = ["to_sunpy_map", "WCS_TOLERANCE_ARCSEC"]

#: Largest allowed difference (arcsec) between a Map pixel's world coordinate and the
#: ``hpln``/``hplt`` coordinates of that pixel.
WCS_TOLERANCE_ARCSEC = 0.1

_OBSERVER_KEYS = (
    "TIMESYS",
    "DATE-OBS",
    "DATE-BEG",
    "DATE-AVG",
    "DATE-END",
    "DSUN_OBS",
    "HGLN_OBS",
    "HGLT_OBS",
    "CRLN_OBS",
    "CRLT_OBS",
    "RSUN_REF",
    "RSUN_ARC",
    "OBS_VR",
)
_PROVENANCE_KEYS = ("INSTRUME", "TELESCOP", "DETECTOR", "STUDY", "SPIOBSID", "RASTERNO")


def _header_text(obj) -> str | None:
    """The ``spatial_wcs`` card text carried by ``obj`` (coordinates first), or None."""
    if isinstance(obj, fits.Header):
        from .reader import spatial_wcs_text

        return spatial_wcs_text(obj)
    if isinstance(obj, str):
        return obj
    if isinstance(obj, xr.DataTree):
        obj = obj.to_dataset()
    if isinstance(obj, xr.DataArray | xr.Dataset):
        for name in ("hpln", "hplt"):
            if name in obj.coords and obj[name].attrs.get("spatial_wcs"):
                return str(obj[name].attrs["spatial_wcs"])
        if obj.attrs.get("spatial_wcs"):
            return str(obj.attrs["spatial_wcs"])
        if obj.attrs.get("header"):  # a window Dataset from open_spice: its full header
            from .reader import spatial_wcs_text

            return spatial_wcs_text(fits.Header.fromstring(str(obj.attrs["header"]), sep="\n"))
    return None


def _celestial_wcs(header: fits.Header):
    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        w = WCS(header, naxis=2, fix=False)
    w.wcs.set()
    return w


def _world_deg(w, ix, iy) -> tuple[np.ndarray, np.ndarray]:
    """World coordinates (deg; longitude wrapped to [-180, 180)) of 0-based pixels."""
    lon, lat = w.wcs_pix2world(np.ravel(ix), np.ravel(iy), 0)
    return (np.asarray(lon) + 180.0) % 360.0 - 180.0, np.asarray(lat)


def _regridded_header(src: fits.Header, lon, lat) -> fits.Header:
    """``src``'s celestial WCS moved onto the pixels of a map whose centres are ``lon``/``lat``
    (arcsec, shape (ny, nx)): the affine map from the map's pixels to the file's pixels is
    fitted, then folded into CRPIX and the PC matrix."""
    w = _celestial_wcs(src)
    ny, nx = lon.shape
    px, py = w.wcs_world2pix(np.ravel(lon) / 3600.0, np.ravel(lat) / 3600.0, 0)
    iy, ix = np.meshgrid(np.arange(ny, dtype=float), np.arange(nx, dtype=float), indexing="ij")
    design = np.stack([ix.ravel(), iy.ravel(), np.ones(ix.size)], -1)
    ok = np.isfinite(px) & np.isfinite(py)
    if ok.sum() < 1:
        raise ValueError("to_sunpy_map: the hpln/hplt coordinates have no finite value")
    coef_x = np.linalg.lstsq(design[ok], px[ok], rcond=None)[0]
    coef_y = np.linalg.lstsq(design[ok], py[ok], rcond=None)[0]
    # orig = A @ new + b; an axis of length 1 keeps the file's pixel step
    a = np.array([[coef_x[0], coef_x[1]], [coef_y[0], coef_y[1]]])
    b = np.array([coef_x[2], coef_y[2]])
    if nx == 1:
        a[:, 0] = (1.0, 0.0)
    if ny == 1:
        a[:, 1] = (0.0, 1.0)
    if abs(np.linalg.det(a)) < 1e-12:
        raise ValueError("to_sunpy_map: the hpln/hplt coordinates do not span a 2-D grid")
    # snap to the exact integer steps and offsets of cut-outs and strides
    a = np.where(np.abs(a - np.round(a)) < 1e-6, np.round(a), a)
    c0 = w.wcs.crpix - 1.0
    q0 = np.linalg.solve(a, c0 - b)
    pc = w.wcs.get_pc() @ a
    out = fits.Header()
    for i in (1, 2):
        for key in ("CTYPE", "CUNIT", "CRVAL", "CDELT"):
            if f"{key}{i}" in src:
                out[f"{key}{i}"] = src[f"{key}{i}"]
        out[f"CRPIX{i}"] = float(q0[i - 1] + 1.0)
    for i in (1, 2):
        for j in (1, 2):
            out[f"PC{i}_{j}"] = float(pc[i - 1, j - 1])
    for key in ("LONPOLE", "LATPOLE", "WCSNAME"):
        if key in src:
            out[key] = src[key]
    if "CDELT1" not in out or "CDELT2" not in out:
        raise ValueError("to_sunpy_map: the spatial WCS has no CDELT1/CDELT2")
    return out


def _check_grid(header: fits.Header, lon, lat) -> float:
    """Largest world-coordinate difference (arcsec) between ``header``'s WCS and lon/lat."""
    w = _celestial_wcs(header)
    ny, nx = lon.shape
    iy, ix = np.meshgrid(np.arange(ny, dtype=float), np.arange(nx, dtype=float), indexing="ij")
    wl, wt = _world_deg(w, ix, iy)
    dlon = (wl * 3600.0 - np.ravel(lon) + 648000.0) % 1296000.0 - 648000.0
    dlat = wt * 3600.0 - np.ravel(lat)
    return float(np.nanmax(np.hypot(dlon, dlat)))


def _style(data: xr.DataArray, values: np.ndarray, cmap, norm):
    """Colormap and normalisation for the quantity (the caller's when given)."""
    import matplotlib.colors as mcolors
    from astropy.visualization import ImageNormalize, PercentileInterval, SqrtStretch

    name = str(data.name or "").lower()
    units = str(data.attrs.get("units", "")).replace(" ", "").lower()
    finite = values[np.isfinite(values)]
    velocity = units in ("kms-1", "km/s") and "velocity" in name and "nonthermal" not in name
    if name == "status":
        auto_cmap, auto_norm = "tab10", mcolors.Normalize(-0.5, 9.5)
    elif velocity and not name.endswith("_err"):
        lim = float(np.percentile(np.abs(finite), 99.0)) if finite.size else 1.0
        lim = lim if lim > 0 else 1.0
        auto_cmap, auto_norm = "RdBu_r", mcolors.Normalize(-lim, lim)
    elif units.startswith("wm-2") and not name.endswith("_err"):
        auto_cmap = "inferno"
        auto_norm = ImageNormalize(
            finite if finite.size else None,
            interval=PercentileInterval(99.5),
            stretch=SqrtStretch(),
        )
    else:
        auto_cmap = "viridis"
        auto_norm = ImageNormalize(
            finite if finite.size else None, interval=PercentileInterval(99.0)
        )
    return (auto_cmap if cmap is None else cmap), (auto_norm if norm is None else norm)


def _check_map(data) -> None:
    """``data`` is a 2-D ``(y, x)`` DataArray with 2-D ``hpln``/``hplt`` coordinates."""
    if not isinstance(data, xr.DataArray):
        raise TypeError(f"to_sunpy_map takes a 2-D DataArray, not {type(data).__name__}")
    if set(data.dims) != {"y", "x"}:
        raise ValueError(
            f"to_sunpy_map needs a 2-D map with dims ('y', 'x'); {data.name!r} has dims "
            f"{data.dims}: select one element of the others first (e.g. .sel(line=...))"
        )
    for name in ("hpln", "hplt"):
        if name not in data.coords or set(data[name].dims) != {"y", "x"}:
            raise ValueError(
                f"to_sunpy_map needs the {name!r} coordinate with dims ('y', 'x') on "
                f"{data.name!r} (helioprojective coordinates of the window's pixels)"
            )


def _map_meta(data: xr.DataArray, header: fits.Header, src: fits.Header, shape) -> dict:
    """The Map's metadata: the regridded WCS, observer, dates, provenance and measurement."""
    meta = dict(header)
    meta["NAXIS"] = 2
    meta["NAXIS1"], meta["NAXIS2"] = int(shape[1]), int(shape[0])
    for key in _OBSERVER_KEYS:
        if key in src:
            meta[key] = src[key]
    missing = [k for k in ("DSUN_OBS", "HGLN_OBS", "HGLT_OBS") if k not in meta]
    if missing or not any(k in meta for k in ("DATE-AVG", "DATE-OBS")):
        raise ValueError(
            f"to_sunpy_map: the window's header lacks the observer keywords {missing} or a "
            "DATE-OBS; sunpy would assume an Earth observer"
        )
    for key in _PROVENANCE_KEYS:
        if key in data.attrs:
            meta[key] = data.attrs[key]
    if "XPOSURE" in data.attrs:
        meta["EXPTIME"] = data.attrs["XPOSURE"]
    meta.setdefault("INSTRUME", "SPICE")
    meta["OBSRVTRY"] = "Solar Orbiter"
    units = str(data.attrs.get("units", "")).strip()
    if units:
        meta["BUNIT"] = units
    if "rest_wavelength" in data.coords and data["rest_wavelength"].ndim == 0:
        meta["WAVELNTH"] = float(data["rest_wavelength"])
        meta["WAVEUNIT"] = "Angstrom"
    elif "wavelength" in data.coords and data["wavelength"].ndim == 0:
        meta["WAVELNTH"] = float(data["wavelength"])
        meta["WAVEUNIT"] = "Angstrom"
    measurement = str(data.attrs.get("long_name") or data.name or "")
    if "line" in data.coords and data["line"].ndim == 0:
        measurement = f"{data['line'].item()} {measurement}".strip()
    if measurement:
        meta["BTYPE"] = measurement
    return meta


def to_sunpy_map(data: xr.DataArray, *, wcs_source=None, cmap=None, norm=None):
    """A :class:`sunpy.map.GenericMap` of a 2-D ``(y, x)`` map from a SPICE window.

    This function computes: it reads the map's values (and its coordinates).

    Parameters
    ----------
    data : xarray.DataArray
        A 2-D map with dims ``y`` and ``x`` and the ``hpln``/``hplt`` coordinates of the
        window it came from, e.g. ``vel["doppler_velocity"].sel(line="ne_8 770.42")`` or
        ``radiance.isel(wavelength=25)``. Select a line, level or raster first. Its
        ``units`` attribute becomes the Map's unit.
    wcs_source : optional
        Where the file's helioprojective WCS and observer keywords come from when ``data``'s
        coordinates do not carry them (their ``spatial_wcs`` attribute): an opened window
        (Dataset, DataArray or DataTree node from :func:`saffron_xr.open_spice`), an
        :class:`astropy.io.fits.Header`, or the card text.
    cmap : str or matplotlib colormap, optional
        Default: ``"RdBu_r"`` for Doppler velocities, ``"inferno"`` for radiances,
        ``"tab10"`` for ``status``, ``"viridis"`` otherwise.
    norm : matplotlib.colors.Normalize, optional
        Default: symmetric about 0 at the 99th percentile of ``|v|`` for velocities, a
        square-root stretch over the 99.5 % interval for radiances, linear over the 99 %
        interval otherwise.

    Returns
    -------
    sunpy.map.GenericMap
        Data in ``(y, x)`` order with the window's helioprojective WCS on this map's pixels,
        observer location (``DSUN_OBS``, ``HGLN_OBS``, ``HGLT_OBS``), dates (``DATE-OBS`` to
        ``DATE-END``, reference ``DATE-AVG``), ``BUNIT``, instrument keywords, the line's
        rest wavelength (``WAVELNTH``, Angstrom) when ``data`` has one, and ``plot_settings``
        with the colormap and normalisation.

    Raises
    ------
    ImportError
        sunpy is not installed.
    ValueError
        ``data`` is not a 2-D ``(y, x)`` map, has no ``hpln``/``hplt`` coordinates, carries
        no WCS and none is given, or its coordinates depart from the regridded WCS by more
        than :data:`WCS_TOLERANCE_ARCSEC`.

    Examples
    --------
    >>> import saffron_xr
    >>> tree = saffron_xr.open_spice(saffron_xr.ne8_window_path())
    >>> rad = tree["Ne_VIII_770_Peak_data"].dataset.radiance
    >>> m = to_sunpy_map(rad.isel(wavelength=30))  # doctest: +SKIP
    >>> m.unit  # doctest: +SKIP
    Unit("W / (nm sr m2)")
    """
    try:
        import sunpy.map
    except ImportError as exc:
        raise ImportError("to_sunpy_map needs sunpy: pip install 'saffron_xr[sunpy]'") from exc
    _check_map(data)
    text = _header_text(wcs_source) if wcs_source is not None else _header_text(data)
    if not text:
        raise ValueError(
            f"{data.name!r} carries no helioprojective WCS: its hpln/hplt coordinates have "
            "no 'spatial_wcs' attribute (set by saffron_xr.open_spice); pass the opened "
            "window as wcs_source="
        )
    src = fits.Header.fromstring(text, sep="\n")
    data = data.transpose("y", "x")
    lon = np.asarray(data["hpln"].transpose("y", "x").values, dtype=float)
    lat = np.asarray(data["hplt"].transpose("y", "x").values, dtype=float)
    header = _regridded_header(src, lon, lat)
    worst = _check_grid(header, lon, lat)
    if not worst <= WCS_TOLERANCE_ARCSEC:
        raise ValueError(
            f"to_sunpy_map: the hpln/hplt coordinates of {data.name!r} depart from the "
            f"window's WCS regridded onto the map by up to {worst:.3g} arcsec "
            f"(> {WCS_TOLERANCE_ARCSEC}); is the map resampled non-linearly?"
        )
    values = np.asarray(data.values)
    if values.dtype.kind not in "f":
        values = values.astype(np.float64)
    meta = _map_meta(data, header, src, values.shape)
    smap = sunpy.map.Map(values, meta)
    style_cmap, style_norm = _style(data, values, cmap, norm)
    smap.plot_settings["cmap"] = style_cmap
    smap.plot_settings["norm"] = style_norm
    return smap
