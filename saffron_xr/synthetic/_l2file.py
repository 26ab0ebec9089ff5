"""Synthetic SPICE Level-2 FITS files with known truth: `make_spice_l2`.

Headers modelled on real L2 files (one image HDU per window, full WCS with a PC matrix,
time axis, a ``VARIABLE_KEYWORDS`` table), data from :mod:`._cube`, truth as a DataTree.
"""

from __future__ import annotations

import datetime as _dt
import math as _math
from pathlib import Path

import numpy as _np

from ..prep.noise import SPICE_NOISE_CITATION, SPICE_NOISE_CONSTANTS
from ._cube import active_region, add_lines, nan_padding, noise_sigma, noise_terms, window_truth
from ._windows import resolve_windows

__all__ = ["make_spice_l2"]

_STEP_OVERHEAD_S = 0.3  # raster step / exposure cadence = XPOSURE + overhead
_POINTING = {"xcen": -250.0, "ycen": 120.0, "crota": 2.0}  # arcsec, arcsec, degrees
_BLOCK_ROWS = 64  # rows of the outer spatial axis computed at once (fixes the noise draw order)


def _runs(values: _np.ndarray):
    """(value, slice) for each run of equal values."""
    edges = _np.flatnonzero(_np.diff(values)) + 1
    starts = _np.concatenate([[0], edges])
    stops = _np.concatenate([edges, [values.size]])
    for s0, s1 in zip(starts, stops, strict=True):
        yield int(values[s0]), slice(int(s0), int(s1))


def _iso(moment: _dt.datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def _window_header(spec, *, index, shape, kind, date_beg, xposure, **observation):
    """A FITS header for one window, modelled on real SPICE L2 headers.

    ``observation``: ``nwin``, ``nbin2``, ``nbin3``, ``spiobsid``, ``rasterno``, ``study``,
    ``soopname``, ``filename``, ``version`` and ``var_keys``, as in `make_spice_l2`.
    """
    import warnings

    from astropy.io import fits

    step = xposure + _STEP_OVERHEAD_S
    spectral = _spectral_axis(spec, shape[1])
    cards = _observation_cards(spec, index, shape, kind, date_beg, xposure, step, spectral,
                               **observation)  # fmt: skip
    cards += _wcs_cards(shape, kind, xposure, step, spectral, observation["nbin2"])
    cards += _ephemeris_cards(spec, observation["var_keys"])
    h = fits.Header()
    for key, value, comment in cards:
        card = fits.Card(key, value, comment)
        with warnings.catch_warnings():
            warnings.simplefilter("error", fits.verify.VerifyWarning)
            try:
                str(card)  # formats the card image, warning if it is too long
            except fits.verify.VerifyWarning:  # too long with its comment: drop the comment
                card = fits.Card(key, value)
        h.append(card, end=True)
    h.add_comment("Synthetic SPICE L2 window written by saffron_xr.synthetic.make_spice_l2;")
    h.add_comment("the true line parameters are returned by make_spice_l2 (store_truth=True")
    h.add_comment("also writes them next to this file as <name>_truth.nc).")
    return h


def _spectral_axis(spec, nw):
    """(CDELT3, CRPIX3, CRVAL3, WAVEMIN, WAVEMAX) in nm; CRVAL3 round-trips the header."""
    cdelt3 = spec["step"] / 10.0  # nm
    crpix3 = (nw + 1) / 2.0
    wavemin = spec["wavemin"] / 10.0  # nm, left edge of the first pixel
    crval3 = round(wavemin + cdelt3 * (crpix3 - 0.5), 10)  # round-trips through the header
    wavemin = crval3 - cdelt3 * (crpix3 - 0.5)
    wavemax = wavemin + cdelt3 * nw
    return cdelt3, crpix3, crval3, wavemin, wavemax


def _observation_cards(spec, index, shape, kind, date_beg, xposure, step, spectral, *, nwin,
                       nbin2, nbin3, spiobsid, rasterno, study, soopname, filename, version,
                       var_keys):  # fmt: skip
    """Study, timing, detector, window and binning keywords."""
    nt, nw, ny, nx = shape
    det = spec["detector"]
    studytyp = {"ras": "Raster", "sit": "Sit-and-stare", "exp": "Single Exposure"}[kind]
    nexp = nx if kind == "ras" else nt
    telapse = (nexp - 1) * step + xposure
    date_end = date_beg + _dt.timedelta(seconds=telapse)
    date_avg = date_beg + _dt.timedelta(seconds=telapse / 2)
    wavemin, wavemax = spectral[3], spectral[4]
    return [
        ("EXTEND", True, "FITS dataset may contain extensions"),
        ("EXTNAME", spec["extname"], "Extension name"),
        ("FILENAME", filename, "Filename"),
        ("STUDYTYP", studytyp, "Sit-and-stare, Raster or Single Exposure"),
        ("STUDYDES", "Synthetic composition study (saffron_xr.synthetic)", "Study description"),
        ("STUDY", study, "SPICE Study name"),
        ("OBS_MODE", study, "= STUDY"),
        ("SPIOBSID", int(spiobsid), "SPICE Observation ID"),
        ("PURPOSE", "Science", "Purpose of study (Science/Calibration/Checkout)"),
        ("READMODE", "Destructive", "Destructive or non-destructive"),
        ("SOOPNAME", soopname, "SOOP Campaign name(s)"),
        ("NRASTERS", int(rasterno) + 1, "Number of planned rasters for this SPIOBSID"),
        ("RASTERNO", int(rasterno), "Raster number (starting at 0)"),
        ("XPOSURE", float(xposure), "[s] Total effective exposure time"),
        ("NWIN", nwin, "Total number of windows in this file"),
        ("NWIN_PRF", nwin, "Number of windows not Dumbbell or Intensity"),
        ("NWIN_DUM", 0, "Number of Dumbbell windows"),
        ("NWIN_INT", 0, "Number of Intensity-windows"),
        ("TIMESYS", "UTC", "TIMESYS included for readability"),
        ("DATEREF", _iso(date_beg), "[UTC] Zero point of time coordinate"),
        ("DATE-BEG", _iso(date_beg), "[UTC] Beginning of data acquisition"),
        ("DATE-OBS", _iso(date_beg), "[UTC] Equals DATE-BEG"),
        ("DATE-AVG", _iso(date_avg), "[UTC] Data acquisition midpoint"),
        ("DATE-END", _iso(date_end), "[UTC] End of data acquisition"),
        ("TELAPSE", telapse, "[s] Elapsed time between beg. and end of acqu."),
        ("LEVEL", "L2", "Data processing level"),
        ("CREATOR", "saffron_xr.synthetic.make_spice_l2", "Name of pipeline"),
        ("ORIGIN", "saffron_xr (synthetic data)", "Name of institution"),
        ("VERSION", f"{int(version):02d}", "Incremental file version number"),
        ("OBSRVTRY", "Solar Orbiter", "Observatory Name"),
        ("INSTRUME", "SPICE", "Instrument name"),
        ("CROTA", _POINTING["crota"], "[deg] S/C counter-clockwise roll rel to Solar N"),
        ("COMPLETE", "C", "Complete data set, all windows combined"),
        ("WIN_TYPE", "Narrow-slit Spectral", "Description of window type"),
        ("DATAPROD", f"Narrow-slit Spectral {studytyp}", "WIN_TYPE+STUDYTYP"),
        ("TELESCOP", f"SOLO/SPICE/{det}", "Telescope/Sensor name/Detector array name"),
        ("DETECTOR", det, "Detector array name"),
        ("WINNO", index, "Window number (starting at 0) within this study"),
        ("SLIT_ID", 2, "Slit ID (0-3)"),
        ("SLIT_WID", 4, "[arcsec] Slit width"),
        ("DUMBBELL", 0, "0/1/2: not a dumbbell/lower dumbbel/upper dumbb"),
        ("WAVEUNIT", -9, "Power of 10 by which the metre is multiplied"),
        ("WAVEREF", "vacuum", "Wavelengths are given in vacuum"),
        ("WAVEMIN", round(wavemin, 7), "[nm] Left edge of first read detector pixel"),
        ("WAVEMAX", round(wavemax, 7), "[nm] Right edge of last read detector pixel"),
        ("WINWIDTH", round(wavemax - wavemin, 7), "[nm] Window width"),
        ("BTYPE", "Spectral Radiance", "Type of data"),
        ("UCD", "phot.radiance;em.line", "Unified Content Descriptors v1.23"),
        ("BUNIT", "W/m2/sr/nm", "Physical units of calibrated data"),
        ("NBIN1", 1, "Binning factor in X dimension"),
        ("NBIN2", int(nbin2), "Binning factor in Y dimension"),
        ("NBIN3", int(nbin3), "Binning factor in dispersion dimension"),
        ("NBIN4", 1, "Binning factor in time dimension"),
        ("NBIN", int(nbin2 * nbin3), "Total binning factor"),
    ]


def _wcs_cards(shape, kind, xposure, step, spectral, nbin2):
    """The world coordinates: helioprojective with a roll (PC matrix), wavelength, time."""
    nt, nw, ny, nx = shape
    cdelt3, crpix3, crval3 = spectral[:3]
    cdelt1 = 4.0 if kind == "ras" else 1.0
    cdelt2 = 1.098 * nbin2
    crpix1 = (nx + 1) / 2.0 if kind == "ras" else 1.0
    rho = _math.radians(_POINTING["crota"])
    cos_r, sin_r = _math.cos(rho), _math.sin(rho)
    cards = [
        ("WCSNAME", "Helioprojective-cartesian", "Name of coordinate system"),
        ("LONPOLE", 180.0, "[deg] Native longitude of celestial pole"),
        ("SPECSYS", "TOPOCENT", "Spectral coord. not corrected for S/C velocity"),
        ("VELOSYS", 0.0, "[m/s] Default for SPECSYS='TOPOCENT'"),
        ("CTYPE1", "HPLN-TAN", "Type of 1st coordinate"),
        ("CUNIT1", "arcsec", "Units for 1st coordinate (for CRVAL1, CDELT1)"),
        ("CRVAL1", _POINTING["xcen"], "[arcsec] 1st coordinate of reference point"),
        ("CDELT1", cdelt1, "[arcsec] Increment of 1st coord at ref point"),
        ("CRPIX1", crpix1, "[pixel] 1st pixel index of reference point"),
        ("PC1_1", cos_r, "Non-default value due to CROTA degrees S/C roll"),
        ("PC1_2", -sin_r * cdelt2 / cdelt1, "Contribution of dim 2 to coord 1 due to roll"),
        ("CTYPE2", "HPLT-TAN", "Type of 2nd coordinate"),
        ("CUNIT2", "arcsec", "Units for 2nd coordinate (for CRVAL2, CDELT2)"),
        ("CRVAL2", _POINTING["ycen"], "[arcsec] 2nd coordinate of reference point"),
        ("CDELT2", cdelt2, "[arcsec] Increment of 2nd coord at ref point"),
        ("CRPIX2", (ny + 1) / 2.0, "[pixel] 2nd pixel index of reference point"),
        ("PC2_1", sin_r * cdelt1 / cdelt2, "Contribution of dim 1 to coord 2 due to roll"),
        ("PC2_2", cos_r, "Non-default value due to CROTA degrees S/C roll"),
        ("CTYPE3", "WAVE", "Type of 3rd coordinate"),
        ("CNAME3", "Wavelength", "Description of 3rd coordinate"),
        ("CUNIT3", "nm", "Units for 3rd coordinate (for CRVAL3, CDELT3)"),
        ("CRVAL3", crval3, "[nm] 3rd coordinate of reference point"),
        ("CDELT3", cdelt3, "[nm] Increment of 3rd coord at ref point"),
        ("CRPIX3", crpix3, "[pixel] 3rd pixel index of reference point"),
        ("PC3_3", 1.0, "Default value, no rotation"),
        ("CTYPE4", "UTC", "Type of 4th coordinate"),
        ("CUNIT4", "s", "Units for 4th coordinate (for CRVAL4, CDELT4)"),
    ]
    if kind == "ras":
        cards += [
            ("CNAME4", "Time (Degenerate Dimension)", "Description of 4th coordinate"),
            ("CRVAL4", xposure / 2 + step * (nx - crpix1), "[s] 4th coord of ref point"),
            ("CDELT4", 1.0, "[s] Degenerate dimension; default value"),
            ("CRPIX4", 1.0, "[pixel] 4th pixel index of reference point"),
            ("PC4_4", 1.0, "Default value, no rotation"),
            ("PC4_1", -step, "[s] -(time between raster steps)"),
        ]
    else:
        cards += [
            ("CNAME4", "Time", "Description of 4th coordinate"),
            ("CRVAL4", xposure / 2, "[s] 4th coord of ref point, relative to DATEREF"),
            ("CDELT4", step if kind == "sit" else 1.0, "[s] Increment of 4th coord"),
            ("CRPIX4", 1.0, "[pixel] 4th pixel index of reference point"),
            ("PC4_4", 1.0, "Default value, no rotation"),
        ]
    return cards


def _ephemeris_cards(spec, var_keys):
    """RADCAL, SOLARNET and the spacecraft position (a fixed, plausible one)."""
    dsun = 0.45 * 1.495978707e11
    return [
        ("LONGSTRN", "OGIP 1.0", "The OGIP long string convention may be used."),
        ("VAR_KEYS", var_keys, "Variable keywords"),
        ("RADCAL", spec["radcal"], "[DN/(W/m2/sr/nm)] Average calibration factor"),
        ("SOLARNET", 1.0, "Fully/Partially/No SOLARNET compliant"),
        ("OBS_HDU", 1, "HDU contains observational data (1) or not (0)"),
        ("DSUN_OBS", dsun, "[m]  S/C distance from Sun"),
        ("DSUN_AU", dsun / 1.495978707e11, "[AU] S/C distance from Sun"),
        ("RSUN_ARC", _math.degrees(_math.atan(6.957e8 / dsun)) * 3600, "[arcsec] Solar radius"),
        ("RSUN_REF", 6.957e8, "[m]      Assumed  photospheric Solar radius"),
        ("HGLT_OBS", 4.5, "[deg] S/C Heliographic latitude (B0 angle)"),
        ("HGLN_OBS", -20.0, "[deg] S/C Heliographic longitude"),
        ("CRLT_OBS", 4.5, "[deg] S/C Carrington   latitude (B0 angle)"),
        ("CRLN_OBS", 150.0, "[deg] S/C Carrington   longitude (L0 angle)"),
        ("OBS_VR", 0.0, "[m/s] Radial velocity of S/C away from the Sun"),
    ]


def _header_wavelength(header, nwave: int) -> _np.ndarray:
    """Wavelengths (Angstrom) of the ``nwave`` samples, from the header's WCS via astropy."""
    import warnings

    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header, naxis=4, fix=False)
    pix = _np.zeros((nwave, 4))
    pix[:, 2] = _np.arange(nwave)
    return wcs.wcs_pix2world(pix, 0)[:, 2] * 1e10


def make_spice_l2(
    path,
    *,
    windows="composition",
    ny: int = 832,
    nx: int = 192,
    nwave: int | None = None,
    kind: str = "ras",
    seed: int = 0,
    noise: bool = True,
    radcal=None,
    xposure: float = 5.0,
    nbin2: int = 1,
    nbin3: int = 1,
    offset_range: tuple[float, float] = (-0.5, 0.5),
    spiobsid: int = 251658647,
    rasterno: int = 0,
    date_obs: str = "2024-04-25T12:19:22",
    dtype: str = "float32",
    store_truth: bool = False,
    version: int = 1,
    study: str | None = None,
    soopname: str = "R_SMALL_MRES_MCAD_Composition-Mapping",
    include_radiance: bool = False,
):
    """Write a synthetic SPICE Level-2 FITS file with known truth and return the truth.

    Each window holds Gaussian emission lines on a background, with smooth maps of
    amplitude (plus a bright "active region" patch at the same place in every window),
    Doppler velocity (a few km/s) and width across the field, a per-window
    wavelength offset (like SPICE's pre-flight wavelength scale), NaN padding at the
    window edges (3-5 samples each side, drifting along the slit) and SPICE-like noise:
    photon noise through RADCAL and the detector gain, plus read noise and dark current
    (:data:`saffron_xr.SPICE_NOISE_CONSTANTS`, dark-subtraction factor 2). Headers follow real L2 files: one image HDU per window
    (the first in the primary HDU), big-endian data of numpy shape ``(t, wavelength, y, x)``,
    full WCS with a PC matrix (2 degrees roll), time axis with ``PC4_1 = -step`` for rasters,
    and a ``VARIABLE_KEYWORDS`` table (per-wavelength RADCAL) at the end.

    Parameters
    ----------
    path : str or path-like
        A folder (the file is named by the SPICE convention, see
        :func:`saffron_xr.io.filenames.spice_filename`) or a full file path.
    windows : "composition" or list of dict, optional
        ``"composition"``: the 9-window SW+LW study of :func:`composition_windows`. Or dicts
        with keys ``extname``, ``lines`` (list of ``(ion, rest_wavelength [A],
        peak_radiance [W m-2 sr-1 nm-1][, line_id])``; the id defaults to
        ``f"{ion} {rest_wavelength:.2f}"``), ``wavemin`` (Angstrom, left edge of the first
        pixel; required), ``nwave`` (default 50), ``detector`` ("SW"/"LW", default from the
        wavelength), ``background`` (W m-2 sr-1 nm-1), ``width`` (Gaussian sigma, Angstrom)
        and ``radcal``.
    ny : int, optional
        Pixels along the slit (after NBIN2 binning).
    nx : int, optional
        Raster steps for ``kind="ras"``; number of exposures (time steps) for
        ``kind="sit"``; ignored (1) for ``kind="exp"``.
    nwave : int, optional
        Override every window's number of wavelength samples (keeping its centre).
    kind : {"ras", "sit", "exp"}, optional
        Raster, sit-and-stare (data ``(nt, nwave, ny, 1)``) or single exposure.
    seed : int, optional
        Seed of everything random (maps, offsets, padding, noise).
    noise : bool, optional
        Add noise (otherwise the file holds the noiseless radiance).
    radcal : float or dict, optional
        RADCAL (DN per W m-2 sr-1 nm-1) for all windows, or ``{"SW": .., "LW": ..}``;
        default proportional to ``xposure``: 8.12 (SW) and 1.26 (LW) times ``xposure``
        (38.15 for SW at 4.7 s, as in the real 2022 Ne VIII window).
    xposure : float, optional
        Exposure time (s); steps/exposures are ``xposure + 0.3`` s apart.
    nbin2, nbin3 : int, optional
        On-board binning along the slit / in wavelength (scales CDELT2 / CDELT3 and the
        read-noise term).
    offset_range : (float, float), optional
        Range (Angstrom) of the uniform random per-window wavelength offset.
    spiobsid, rasterno, date_obs : optional
        Observation ID, raster number and start time (UTC) written to headers and name.
    dtype : {"float32", "float64"}, optional
        Data type on disk (big-endian).
    store_truth : bool, optional
        Also write the truth as netCDF next to the file (``<name>_truth.nc``).
    version : int, optional
        File version (header VERSION and ``_V01_`` in the name).
    study, soopname : str, optional
        STUDY (default ``"SCI_COMPO-SYNTH_SL04_<xposure>S_FF"``) and SOOPNAME keywords.
    include_radiance : bool, optional
        Add ``radiance_true`` (noiseless radiance) and ``error_true`` (noise-model
        1-sigma) to each truth node, in the reader's dims (holds a copy of the data in
        memory).

    Returns
    -------
    xarray.DataTree
        The truth: root attrs ``path`` (the FITS file written), ``filename``, ``kind`` and
        the noise constants; one child per window, named like :func:`saffron_xr.open_spice`
        names nodes, holding ``amplitude`` (peak spectral radiance, W m-2 sr-1 nm-1),
        ``centroid`` (observed, Angstrom: rest wavelength Doppler-shifted, plus the offset),
        ``width`` (Gaussian sigma, Angstrom) and ``doppler_velocity`` (km/s, positive =
        redshift) with dims ``(line, y, x)`` (sit-and-stare: ``(line, time, y)``); coords
        ``line`` (ids like ``"ne_8 770.42"``), ``ion``, ``rest_wavelength``; ``background``
        (``(y, x)``), ``offset`` (scalar, Angstrom) and ``nan_pad_low``/``nan_pad_high``
        (NaN samples at each wavelength edge, per ``y``).

    Examples
    --------
    >>> import tempfile
    >>> truth = make_spice_l2(tempfile.mkdtemp(), ny=16, nx=4, nwave=40)
    >>> len(truth.children), truth["N_IV_765_Peak"]["amplitude"].dims
    (9, ('line', 'y', 'x'))
    """
    from astropy.io import fits

    from ..io.filenames import to_datetime
    from ..io.reader import window_node_name

    np_dtype, ny, nx, nbin2, nbin3, (lo, hi) = _checked_arguments(
        kind, dtype, ny, nx, nbin2, nbin3, xposure, offset_range
    )
    specs = resolve_windows(windows, nwave, radcal, nbin3, float(xposure))
    if study is None:
        study = f"SCI_COMPO-SYNTH_SL04_{float(xposure):g}S_FF"
    date_beg = to_datetime(date_obs)
    target = _target_path(path, kind, date_beg, version, spiobsid, rasterno)

    # spatial layout of the maps: (na, nb) = (y, x) for rasters/exposures, (time, y) for sit
    na, nb = (nx, ny) if kind == "sit" else (ny, nx)
    map_dims = ("time", "y") if kind == "sit" else ("y", "x")
    nt = nx if kind == "sit" else 1
    nx_file = 1 if kind == "sit" else nx
    observation = {
        "nwin": len(specs),
        "kind": kind,
        "date_beg": date_beg,
        "xposure": float(xposure),
        "nbin2": nbin2,
        "nbin3": nbin3,
        "spiobsid": spiobsid,
        "rasterno": rasterno,
        "study": study,
        "soopname": soopname,
        "filename": target.name,
        "version": version,
        "var_keys": "VARIABLE_KEYWORDS;" + ",".join(f"RADCAL[{s['extname']}]" for s in specs),
    }

    active = active_region(seed, na, nb)
    children = {}
    radcal_cols = []
    for index, spec in enumerate(specs):
        ds, column = _write_window(
            target, spec, index, observation, active, seed=seed, offset_range=(lo, hi),
            layout=(na, nb, nt, ny, nx_file, map_dims), noise=noise,
            include_radiance=include_radiance, dtype=np_dtype,
        )  # fmt: skip
        radcal_cols.append(column)
        children[window_node_name(spec["extname"])] = ds

    table = fits.BinTableHDU.from_columns(radcal_cols)
    table.header["EXTNAME"] = ("VARIABLE_KEYWORDS", "Extension name")
    table.header["FILENAME"] = target.name
    fits.append(target, table.data, table.header, verify=False)
    tree = _truth_tree(target, kind, seed, noise, children)
    if store_truth:
        tree.to_netcdf(target.with_name(target.stem + "_truth.nc"))
    return tree


def _write_window(target, spec, index, observation, active, *, seed, offset_range, layout,
                  noise, include_radiance, dtype):  # fmt: skip
    """Draw one window (truth, data, noise), append it to the file; its truth Dataset and its
    column of the ``VARIABLE_KEYWORDS`` table (per-wavelength RADCAL)."""
    from astropy.io import fits

    na, nb, nt, ny, nx_file, map_dims = layout
    kind = observation["kind"]
    rng = _np.random.default_rng([int(seed), index])
    truth = window_truth(spec, na, nb, rng, offset_range, active)
    low, high = nan_padding(ny, rng)
    nw = spec["nwave"]
    shape4 = (nt, nw, ny, nx_file)
    header = _window_header(spec, index=index, shape=shape4, **observation)
    wave = _header_wavelength(header, nw)  # Angstrom, exactly as a WCS reader sees it
    photon, floor, noise_attrs = noise_terms(
        spec["detector"], spec["radcal"], *(observation[k] for k in ("xposure", "nbin2", "nbin3"))
    )
    data, keep = _window_data(
        truth, wave, shape4, rng, (photon, floor), kind=kind, dtype=dtype,
        noise=noise, include_radiance=include_radiance, nan_pad=(low, high),
    )  # fmt: skip
    if index == 0:
        fits.PrimaryHDU(data, header).writeto(target, overwrite=True)
    else:
        fits.append(target, data, header, verify=False)
    del data
    column = fits.Column(
        name=f"RADCAL[{spec['extname']}]",
        format=f"{nw}D",
        dim=f"(1,1,{nw},1)",
        unit="DN/(W/m2/sr/nm)",
        array=_np.full((1, 1, nw, 1, 1), spec["radcal"]),
    )
    ds = _truth_dataset(spec, truth, (low, high), map_dims, keep, wave)
    ds.attrs.update(
        EXTNAME=spec["extname"],
        DETECTOR=spec["detector"],
        RADCAL=spec["radcal"],
        XPOSURE=observation["xposure"],
        NBIN2=observation["nbin2"],
        NBIN3=observation["nbin3"],
        WAVEMIN=header["WAVEMIN"],
        WAVEMAX=header["WAVEMAX"],
    )
    ds.attrs.update({k: v for k, v in noise_attrs.items() if k != "noise_formula"})
    return ds, column


def _checked_arguments(kind, dtype, ny, nx, nbin2, nbin3, xposure, offset_range):
    """Checked shape and binning (``nx`` is 1 for a single exposure), dtype, offset range."""
    if kind not in ("ras", "sit", "exp"):
        raise ValueError(f"kind must be 'ras', 'sit' or 'exp', not {kind!r}")
    np_dtype = _np.dtype(dtype)
    if np_dtype not in (_np.dtype("float32"), _np.dtype("float64")):
        raise ValueError(f"dtype must be float32 or float64, not {dtype!r}")
    ny, nx, nbin2, nbin3 = int(ny), int(nx), int(nbin2), int(nbin3)
    if kind == "exp":
        nx = 1
    if ny < 1 or nx < 1 or nbin2 < 1 or nbin3 < 1:
        raise ValueError("ny, nx, nbin2 and nbin3 must be positive")
    if not xposure > 0:
        raise ValueError(f"xposure must be positive, not {xposure}")
    lo, hi = (float(v) for v in offset_range)
    if hi < lo:
        raise ValueError(f"offset_range must be (low, high), not {offset_range!r}")
    return np_dtype, ny, nx, nbin2, nbin3, (lo, hi)


def _target_path(path, kind, date_beg, version, spiobsid, rasterno) -> Path:
    """The file to write: `path`, or a file named by the SPICE convention in folder `path`."""
    from ..io.filenames import spice_filename

    target = Path(path)
    if target.is_dir() or (not target.suffix and not target.exists()):
        target.mkdir(parents=True, exist_ok=True)
        target = target / spice_filename(kind, date_beg, version, spiobsid, rasterno)
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def _truth_tree(target, kind, seed, noise, children):
    """The DataTree returned by `make_spice_l2`: file and noise model at the root."""
    import xarray as xr

    root = xr.Dataset(
        attrs={
            "path": str(target),
            "filename": target.name,
            "kind": kind,
            "seed": int(seed),
            "noise": int(bool(noise)),
            "noise_model": "sigma = sqrt(F^2 G RADCAL I + k NBIN (R^2 + D XPOSURE)) / RADCAL",
            "noise_model_citation": SPICE_NOISE_CITATION,
            "noise_constants": repr({d: dict(c) for d, c in SPICE_NOISE_CONSTANTS.items()}),
            "description": "true line parameters of a synthetic SPICE L2 file",
        }
    )
    return xr.DataTree.from_dict({"/": root, **{f"/{k}": v for k, v in children.items()}})


def _window_data(truth, wave, shape4, rng, noise_terms, *, kind, dtype, noise,
                 include_radiance, nan_pad):  # fmt: skip
    """The data of one window in file order ``(t, wavelength, y, x)``, big-endian, and the
    noiseless radiance and sigma to keep (``include_radiance``), in the reader's order.

    Computed in blocks of `_BLOCK_ROWS` rows of the outer spatial axis (float32 Gaussian
    lines on the background, noise drawn from `rng`), then NaN-padded at the edges.
    """
    nt, nw, ny, _ = shape4
    na, nb = truth["background"].shape
    photon, floor = noise_terms
    ref = float(wave[nw // 2])
    rel_wave = (wave - ref).astype(_np.float32)
    amp32 = truth["amplitude"].astype(_np.float32)
    cent32 = (truth["centroid"] - ref).astype(_np.float32)
    wid32 = truth["width"].astype(_np.float32)
    bg32 = truth["background"].astype(_np.float32)

    data = _np.empty(shape4, dtype=dtype)
    keep = {}
    if include_radiance:
        keep["radiance_true"] = _np.empty((na, nb, nw), dtype=_np.float32)
        keep["error_true"] = _np.empty((na, nb, nw), dtype=_np.float32)
    block = _np.empty((nw, min(_BLOCK_ROWS, na), nb), dtype=_np.float32)
    for a0 in range(0, na, _BLOCK_ROWS):
        a1 = min(a0 + _BLOCK_ROWS, na)
        cube = block[:, : a1 - a0]
        sl = slice(a0, a1)
        add_lines(cube, rel_wave, bg32[sl], amp32[:, sl], cent32[:, sl], wid32[:, sl])
        sigma = None
        if noise or include_radiance:
            sigma = noise_sigma(cube, photon, floor)
        if include_radiance:
            keep["radiance_true"][sl] = cube.transpose(1, 2, 0)
            keep["error_true"][sl] = sigma.transpose(1, 2, 0)
        if noise:
            draw = rng.standard_normal(cube.shape, dtype=_np.float32)
            draw *= sigma
            cube += draw
        if kind == "sit":
            data[sl, :, :, 0] = cube.transpose(1, 0, 2)
        else:
            data[0, :, sl, :] = cube
    low, high = nan_pad
    for pad, rows in _runs(low):
        data[:, :pad, rows, :] = _np.nan
    for pad, rows in _runs(high):
        data[:, nw - pad :, rows, :] = _np.nan
    # big-endian on disk: swap in place and reinterpret, no extra copy
    data.byteswap(inplace=True)
    return data.view(dtype.newbyteorder(">")), keep


def _truth_dataset(spec, truth, nan_pad, map_dims, keep, wave):
    """The truth of one window: parameter maps, background, offset and NaN padding (and,
    with `keep`, the noiseless radiance and the noise-model sigma)."""
    import xarray as xr

    ids = [line[3] for line in spec["lines"]]
    line_dims = ("line", *map_dims)
    ds = xr.Dataset(
        {
            "amplitude": (
                line_dims,
                truth["amplitude"],
                {"units": "W m-2 sr-1 nm-1", "long_name": "peak spectral radiance"},
            ),
            "centroid": (
                line_dims,
                truth["centroid"],
                {"units": "Angstrom", "long_name": "observed line centroid"},
            ),
            "width": (
                line_dims,
                truth["width"],
                {"units": "Angstrom", "long_name": "Gaussian sigma"},
            ),
            "doppler_velocity": (
                line_dims,
                truth["velocity"],
                {
                    "units": "km/s",
                    "long_name": "Doppler velocity",
                    "comment": "positive = redshift; excludes the offset",
                },
            ),
            "background": (
                map_dims,
                truth["background"],
                {"units": "W m-2 sr-1 nm-1", "long_name": "constant background"},
            ),
            "offset": (
                (),
                truth["offset"],
                {"units": "Angstrom", "long_name": "wavelength offset of the window"},
            ),
            "nan_pad_low": (
                "y",
                nan_pad[0].astype(_np.int16),
                {"units": "1", "long_name": "NaN samples at the short edge"},
            ),
            "nan_pad_high": (
                "y",
                nan_pad[1].astype(_np.int16),
                {"units": "1", "long_name": "NaN samples at the long edge"},
            ),
        },
        coords={
            "line": ("line", _np.array(ids, dtype=str)),
            "ion": ("line", _np.array([line[0] for line in spec["lines"]], dtype=str)),
            "rest_wavelength": (
                "line",
                _np.array([line[1] for line in spec["lines"]], float),
                {"units": "Angstrom"},
            ),
        },
    )
    if keep:
        rad_dims = (*map_dims, "wavelength")
        ds["radiance_true"] = (
            rad_dims,
            keep["radiance_true"],
            {"units": "W m-2 sr-1 nm-1", "long_name": "noiseless radiance"},
        )
        ds["error_true"] = (
            rad_dims,
            keep["error_true"],
            {"units": "W m-2 sr-1 nm-1", "long_name": "noise-model 1-sigma"},
        )
        ds = ds.assign_coords(wavelength=("wavelength", wave, {"units": "Angstrom"}))
    return ds
