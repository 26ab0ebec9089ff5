"""Synthetic SPICE Level-2 files and spectra with known truth (`make_spice_l2`, `make_spectra`).

Used by the demo, the notebooks, the tests and the benchmarks: SPICE-like windows (sampling,
NaN-padded edges, header keywords, noise drawn from the SPICE noise model) whose true line
parameters are returned alongside the file. ``saffron_xr.testing`` re-exports these names.
"""

from __future__ import annotations

import datetime as _dt
import math as _math
from pathlib import Path

import numpy as _np

from .fit.profiles import gaussian
from .prep.noise import SPICE_NOISE_CITATION, SPICE_NOISE_CONSTANTS, spice_noise_terms

__all__ = ["make_spice_l2", "make_spectra", "composition_windows"]

_C_KMS = 299792.458

# Spectral sampling (nm per detector pixel, unbinned), as in real L2 headers.
_CDELT3_NM = {"SW": 0.0097517, "LW": 0.009623}
# RADCAL per second of exposure (DN per W m-2 sr-1 nm-1 per s): SW from the real 2022 Ne VIII
# window (38.15 at 4.7 s); LW from it by the SW/LW ratio (6.42) of a real 2024 exposure file
# (SW and LW windows of the same exposure). The default RADCAL of a window is this rate times
# XPOSURE.
_RADCAL_RATE = {"SW": 38.15 / 4.7, "LW": 38.15 / 4.7 / 6.42}
# Typical Gaussian sigma (Angstrom) of SPICE lines, instrumental broadening included.
_DEFAULT_WIDTH = {"SW": 0.33, "LW": 0.36}
_DEFAULT_BACKGROUND = {"SW": 0.05, "LW": 0.15}
_DOPPLER_KMS = 5.0  # amplitude of the smooth Doppler maps
_WIDTH_VARIATION = 0.1  # relative amplitude of the smooth width maps
_AMPLITUDE_LOG_RANGE = 0.9  # quiet-Sun amplitude maps span peak * exp(+-0.9)
# range of the per-line brightening (amplitude x (1 + contrast)) at the "active region" centre
_AR_CONTRAST = (4.0, 12.0)
_STEP_OVERHEAD_S = 0.3  # raster step / exposure cadence = XPOSURE + overhead
_POINTING = {"xcen": -250.0, "ycen": 120.0, "crota": 2.0}  # arcsec, arcsec, degrees
_BLOCK_ROWS = 64  # rows of the outer spatial axis computed at once (fixes the noise draw order)

_COMPOSITION = (
    ("O III 703 / Mg IX 706 - Peak", "SW", 701.3, 64,
     (("o_3", 702.838, 1.0), ("o_3", 703.854, 1.5), ("mg_9", 706.060, 0.6))),
    ("S IV 748 / Mg IX 750 - Peak", "SW", 746.9, 48,
     (("s_4", 748.393, 0.4, "s_4 748.40"), ("mg_9", 749.552, 0.8), ("s_4", 750.221, 0.7))),
    ("N IV 765 - Peak", "SW", 763.2, 40, (("n_4", 765.147, 3.0),)),
    ("Ne VIII 770 - Peak", "SW", 768.4, 56,
     (("ne_8", 770.428, 2.0, "ne_8 770.42"), ("mg_8", 772.262, 0.4))),
    ("S V 786 / O IV 787 - Peak", "SW", 784.9, 48, (("s_5", 786.468, 1.2), ("o_4", 787.710, 2.0))),
    ("Ly gamma / C III 977 - Peak", "LW", 970.9, 80,
     (("h_1", 972.537, 6.0), ("c_3", 977.020, 20.0, "c_3 977.03"))),
    ("N III 991 - Peak", "LW", 988.2, 52, (("n_3", 989.799, 2.0), ("n_3", 991.577, 4.0))),
    ("O VI 1032 - Peak", "LW", 1029.9, 42, (("o_6", 1031.912, 15.0),)),
    ("O VI 1037 - Peak", "LW", 1035.6, 42, (("o_6", 1037.613, 7.5),)),
)  # fmt: skip


def composition_windows() -> list[dict]:
    """The 9-window SW+LW composition study used by :func:`make_spice_l2` by default.

    Rest wavelengths (Angstrom) are CHIANTI's observed-energy wavelengths (``.wgfa`` files);
    line ids are those of the default line catalog (``saffron_xr/catalog/spice_lines.json``),
    which keeps three conventional labels (``"ne_8 770.42"`` for 770.428 A, ``"s_4 748.40"``,
    ``"c_3 977.03"``); other ids are ``f"{ion} {rest_wavelength:.2f}"``.
    peak radiances (W m-2 sr-1 nm-1) are typical quiet-Sun values. :func:`make_spice_l2`
    varies them smoothly (x0.4 to x2.5) and brightens them 5-13 times in an "active region"
    patch, so that the peak S/N per pixel spans ~1 to ~25 at the default 5 s exposure and
    ~5 to ~90 at 60 s.

    Returns
    -------
    list of dict
        A fresh copy each call, in the form accepted by ``make_spice_l2(windows=...)``:
        keys ``extname``, ``detector``, ``wavemin`` (Angstrom), ``nwave`` and ``lines``
        (``(ion, rest_wavelength, peak_radiance[, line_id])`` tuples).

    Examples
    --------
    >>> [w["extname"] for w in composition_windows()][:2]
    ['O III 703 / Mg IX 706 - Peak', 'S IV 748 / Mg IX 750 - Peak']
    """
    return [
        {"extname": name, "detector": det, "wavemin": wmin, "nwave": nw, "lines": list(lines)}
        for name, det, wmin, nw, lines in _COMPOSITION
    ]


def _line_id(ion: str, rest: float) -> str:
    return f"{ion} {rest:.2f}"


def _resolve_windows(windows, nwave, radcal, nbin3, xposure) -> list[dict]:
    """Validate window specs and fill in defaults; returns new dicts."""
    if isinstance(windows, str):
        if windows != "composition":
            raise ValueError(f"windows must be 'composition' or a list of dicts, not {windows!r}")
        windows = composition_windows()
    if isinstance(windows, dict):
        windows = [windows]
    out = []
    seen = set()
    for i, spec in enumerate(windows):
        if not isinstance(spec, dict):
            raise TypeError(f"window {i} must be a dict, not {type(spec).__name__}")
        unknown = set(spec) - {
            "extname",
            "lines",
            "wavemin",
            "nwave",
            "detector",
            "background",
            "width",
            "radcal",
        }
        if unknown:
            raise ValueError(f"window {i}: unknown keys {sorted(unknown)}")
        if "wavemin" not in spec:
            raise ValueError(f"window {i}: 'wavemin' (Angstrom) is required")
        wavemin = float(spec["wavemin"])
        det = str(spec.get("detector") or ("SW" if wavemin < 850.0 else "LW")).upper()
        if det not in ("SW", "LW"):
            raise ValueError(f"window {i}: detector must be 'SW' or 'LW', not {det!r}")
        extname = str(spec.get("extname") or f"WINDOW{i}_{wavemin / 10:.2f}")
        if extname in seen:
            raise ValueError(f"window {i}: duplicate extname {extname!r}")
        seen.add(extname)
        step = _CDELT3_NM[det] * 10.0 * nbin3  # Angstrom per (binned) pixel
        nw = int(spec.get("nwave", 50))
        if nwave is not None:  # override, keeping the window centre
            wavemin += (nw - int(nwave)) * step / 2.0
            nw = int(nwave)
        if nw < 8:
            raise ValueError(f"window {extname!r}: nwave must be at least 8, not {nw}")
        if isinstance(radcal, dict):
            rc = radcal.get(det, _RADCAL_RATE[det] * xposure)
        else:
            rc = radcal if radcal is not None else _RADCAL_RATE[det] * xposure
        rc = float(spec.get("radcal", rc))
        if not rc > 0:
            raise ValueError(f"window {extname!r}: RADCAL must be positive, not {rc}")
        lines = []
        for line in spec.get("lines", ()):
            if len(line) not in (3, 4):
                raise ValueError(
                    f"window {extname!r}: lines are (ion, rest_wavelength, peak[, id]), "
                    f"not {line!r}"
                )
            ion, rest, peak = str(line[0]), float(line[1]), float(line[2])
            name = str(line[3]) if len(line) == 4 else _line_id(ion, rest)
            lines.append((ion, rest, peak, name))
        out.append(
            {
                "extname": extname,
                "detector": det,
                "wavemin": wavemin,
                "nwave": nw,
                "step": step,
                "lines": lines,
                "background": float(spec.get("background", _DEFAULT_BACKGROUND[det])),
                "width": float(spec.get("width", _DEFAULT_WIDTH[det])),
                "radcal": rc,
            }
        )
    if not out:
        raise ValueError("at least one window is needed")
    return out


def _smooth_field(rng, na: int, nb: int) -> _np.ndarray:
    """A smooth random pattern in [-1, 1] of shape (na, nb): two low-order sinusoids."""
    a = _np.linspace(0.0, 1.0, na)[:, None]
    b = _np.linspace(0.0, 1.0, nb)[None, :]
    k = rng.integers(1, 4, size=4)
    ph = rng.uniform(0.0, 2 * _math.pi, size=3)
    # 0.6 sin(2 pi k0 a + p0) cos(pi k1 b + p1) + 0.4 sin(pi k2 a + pi k3 b + p2), written
    # as outer products of 1-D terms so that it costs a few passes over (na, nb)
    u = 2 * _math.pi * k[0] * a + ph[0]
    v = _math.pi * k[2] * a + ph[2]
    w = _math.pi * k[3] * b
    f = (0.6 * _np.sin(u)) * _np.cos(_math.pi * k[1] * b + ph[1])
    f += (0.4 * _np.sin(v)) * _np.cos(w)
    f += (0.4 * _np.cos(v)) * _np.sin(w)
    return f


def _noise_terms(detector: str, radcal: float, xposure: float, nbin2: int, nbin3: int):
    """The package's SPICE noise model for one window: ``(photon, floor, attrs)``.

    ``sigma**2 = photon * max(I, 0) + floor`` (:func:`saffron_xr.spice_noise_terms`, the
    constants of :data:`saffron_xr.SPICE_NOISE_CONSTANTS`, dark-subtraction factor 2).
    """
    import xarray as xr

    terms = spice_noise_terms(
        xr.DataArray(0.0, attrs={"units": "W m-2 sr-1 nm-1"}),
        radcal=radcal,
        xposure=xposure,
        nbin2=nbin2,
        nbin3=nbin3,
        detector=detector,
    )
    return float(terms.photon), float(terms.floor), dict(terms.attrs)


def _noise_sigma(radiance, photon: float, floor: float):
    """One-sigma noise (radiance units) for a true radiance array, float32, new array."""
    sigma = _np.maximum(radiance, 0, dtype=_np.float32)
    sigma *= _np.float32(photon)
    sigma += _np.float32(floor)
    _np.sqrt(sigma, out=sigma)
    return sigma


def _add_lines(out, rel_wave, background, amp, cent_rel, width):
    """out[w, a, b] = background[a, b] + sum_l amp * exp(-0.5 ((wave - cent) / width)^2).

    ``rel_wave`` and ``cent_rel`` are relative to a common reference wavelength (float32
    precision is then ample); all inputs are float32.
    """
    out[...] = background[None]
    lam = rel_wave[:, None, None]
    for amp_l, cent_l, width_l in zip(amp, cent_rel, width, strict=True):
        out += gaussian(lam, amp_l[None], cent_l[None], width_l[None])


def _active_region(seed: int, na: int, nb: int) -> _np.ndarray:
    """A bright patch (0..1, shape (na, nb)) at the same place in every window."""
    rng = _np.random.default_rng([int(seed), 2**31 - 1])
    ca, cb = rng.uniform(0.25, 0.75, size=2)
    a = ((_np.arange(na) + 0.5) / na)[:, None]
    b = ((_np.arange(nb) + 0.5) / nb)[None, :]
    return _np.exp(-0.5 * (((a - ca) / 0.12) ** 2 + ((b - cb) / 0.15) ** 2))


def _window_truth(spec, na, nb, rng, offset_range, active):
    """True parameter maps (float64, shape (line, na, nb)) for one window."""
    nl = len(spec["lines"])
    common = _smooth_field(rng, na, nb)
    amp = _np.empty((nl, na, nb))
    vel = _np.empty((nl, na, nb))
    wid = _np.empty((nl, na, nb))
    flow = _smooth_field(rng, na, nb)
    broadening = _smooth_field(rng, na, nb)
    for j, (_ion, _rest, peak, _name) in enumerate(spec["lines"]):
        own = _smooth_field(rng, na, nb)
        contrast = rng.uniform(*_AR_CONTRAST)
        amp[j] = peak * _np.exp(_AMPLITUDE_LOG_RANGE * (0.7 * common + 0.3 * own))
        amp[j] *= 1.0 + contrast * active
        vel[j] = _DOPPLER_KMS * (0.6 * flow + 0.4 * _smooth_field(rng, na, nb))
        wid[j] = spec["width"] * (
            1.0 + _WIDTH_VARIATION * (0.7 * broadening + 0.3 * _smooth_field(rng, na, nb))
        )
    bg = spec["background"] * (1.0 + 0.3 * _smooth_field(rng, na, nb)) * (1.0 + active)
    offset = float(rng.uniform(*offset_range)) if offset_range[1] > offset_range[0] else 0.0
    rest = _np.array([line[1] for line in spec["lines"]], dtype=float).reshape(nl, 1, 1)
    cent = rest * (1.0 + vel / _C_KMS) + offset
    return {
        "amplitude": amp,
        "centroid": cent,
        "width": wid,
        "velocity": vel,
        "background": bg,
        "offset": offset,
    }


def _nan_padding(ny: int, rng) -> tuple[_np.ndarray, _np.ndarray]:
    """NaN samples at the low/high wavelength edge for each y: 3-5, drifting along the slit
    (a tilt like the one left by SPICE's distortion correction)."""
    base_lo, base_hi = rng.integers(3, 5, size=2)
    frac = _np.arange(ny) / max(ny, 1)
    low = base_lo + (frac * 2).astype(int)
    high = base_hi + (frac[::-1] * 2).astype(int)
    return low, high


def _runs(values: _np.ndarray):
    """(value, slice) for each run of equal values."""
    edges = _np.flatnonzero(_np.diff(values)) + 1
    starts = _np.concatenate([[0], edges])
    stops = _np.concatenate([edges, [values.size]])
    for s0, s1 in zip(starts, stops, strict=True):
        yield int(values[s0]), slice(int(s0), int(s1))


def _iso(moment: _dt.datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def _window_header(
    spec,
    *,
    index,
    nwin,
    kind,
    shape,
    date_beg,
    xposure,
    nbin2,
    nbin3,
    spiobsid,
    rasterno,
    study,
    soopname,
    filename,
    version,
    var_keys,
):
    """A FITS header for one window, modelled on real SPICE L2 headers."""
    import warnings

    from astropy.io import fits

    nt, nw, ny, nx = shape
    det = spec["detector"]
    studytyp = {"ras": "Raster", "sit": "Sit-and-stare", "exp": "Single Exposure"}[kind]
    step = xposure + _STEP_OVERHEAD_S
    nexp = nx if kind == "ras" else nt
    telapse = (nexp - 1) * step + xposure
    date_end = date_beg + _dt.timedelta(seconds=telapse)
    date_avg = date_beg + _dt.timedelta(seconds=telapse / 2)

    cdelt3 = spec["step"] / 10.0  # nm
    crpix3 = (nw + 1) / 2.0
    wavemin = spec["wavemin"] / 10.0  # nm, left edge of the first pixel
    crval3 = round(wavemin + cdelt3 * (crpix3 - 0.5), 10)  # round-trips through the header
    wavemin = crval3 - cdelt3 * (crpix3 - 0.5)
    wavemax = wavemin + cdelt3 * nw

    cdelt1 = 4.0 if kind == "ras" else 1.0
    cdelt2 = 1.098 * nbin2
    crpix1 = (nx + 1) / 2.0 if kind == "ras" else 1.0
    rho = _math.radians(_POINTING["crota"])
    cos_r, sin_r = _math.cos(rho), _math.sin(rho)

    h = fits.Header()
    cards = [
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
    dsun = 0.45 * 1.495978707e11
    cards += [
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
    import xarray as xr
    from astropy.io import fits

    from .io.filenames import spice_filename, to_datetime
    from .io.reader import window_node_name

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
    specs = _resolve_windows(windows, nwave, radcal, nbin3, float(xposure))
    if study is None:
        study = f"SCI_COMPO-SYNTH_SL04_{float(xposure):g}S_FF"

    date_beg = to_datetime(date_obs)
    target = Path(path)
    if target.is_dir() or (not target.suffix and not target.exists()):
        target.mkdir(parents=True, exist_ok=True)
        target = target / spice_filename(kind, date_beg, version, spiobsid, rasterno)
    target.parent.mkdir(parents=True, exist_ok=True)

    # spatial layout of the maps: (na, nb) = (y, x) for rasters/exposures, (time, y) for sit
    na, nb = (nx, ny) if kind == "sit" else (ny, nx)
    map_dims = ("time", "y") if kind == "sit" else ("y", "x")
    nt = nx if kind == "sit" else 1
    nx_file = 1 if kind == "sit" else nx
    var_keys = "VARIABLE_KEYWORDS;" + ",".join(f"RADCAL[{s['extname']}]" for s in specs)

    active = _active_region(seed, na, nb)
    children = {}
    radcal_cols = []
    for index, spec in enumerate(specs):
        rng = _np.random.default_rng([int(seed), index])
        truth = _window_truth(spec, na, nb, rng, (lo, hi), active)
        low, high = _nan_padding(ny, rng)
        nw = spec["nwave"]
        shape4 = (nt, nw, ny, nx_file)
        header = _window_header(
            spec,
            index=index,
            nwin=len(specs),
            kind=kind,
            shape=shape4,
            date_beg=date_beg,
            xposure=float(xposure),
            nbin2=nbin2,
            nbin3=nbin3,
            spiobsid=spiobsid,
            rasterno=rasterno,
            study=study,
            soopname=soopname,
            filename=target.name,
            version=version,
            var_keys=var_keys,
        )
        wave = _header_wavelength(header, nw)  # Angstrom, exactly as a WCS reader sees it
        ref = float(wave[nw // 2])
        rel_wave = (wave - ref).astype(_np.float32)
        amp32 = truth["amplitude"].astype(_np.float32)
        cent32 = (truth["centroid"] - ref).astype(_np.float32)
        wid32 = truth["width"].astype(_np.float32)
        bg32 = truth["background"].astype(_np.float32)
        photon, floor, noise_attrs = _noise_terms(
            spec["detector"], spec["radcal"], float(xposure), nbin2, nbin3
        )

        data = _np.empty(shape4, dtype=np_dtype)
        keep = {}
        if include_radiance:
            keep["radiance_true"] = _np.empty((na, nb, nw), dtype=_np.float32)
            keep["error_true"] = _np.empty((na, nb, nw), dtype=_np.float32)
        block = _np.empty((nw, min(_BLOCK_ROWS, na), nb), dtype=_np.float32)
        for a0 in range(0, na, _BLOCK_ROWS):
            a1 = min(a0 + _BLOCK_ROWS, na)
            cube = block[:, : a1 - a0]
            sl = slice(a0, a1)
            _add_lines(cube, rel_wave, bg32[sl], amp32[:, sl], cent32[:, sl], wid32[:, sl])
            sigma = None
            if noise or include_radiance:
                sigma = _noise_sigma(cube, photon, floor)
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
        for pad, rows in _runs(low):
            data[:, :pad, rows, :] = _np.nan
        for pad, rows in _runs(high):
            data[:, nw - pad :, rows, :] = _np.nan

        # big-endian on disk: swap in place and reinterpret, no extra copy
        data.byteswap(inplace=True)
        data = data.view(np_dtype.newbyteorder(">"))
        if index == 0:
            fits.PrimaryHDU(data, header).writeto(target, overwrite=True)
        else:
            fits.append(target, data, header, verify=False)
        del data
        radcal_cols.append(
            fits.Column(
                name=f"RADCAL[{spec['extname']}]",
                format=f"{nw}D",
                dim=f"(1,1,{nw},1)",
                unit="DN/(W/m2/sr/nm)",
                array=_np.full((1, 1, nw, 1, 1), spec["radcal"]),
            )
        )

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
                    low.astype(_np.int16),
                    {"units": "1", "long_name": "NaN samples at the short edge"},
                ),
                "nan_pad_high": (
                    "y",
                    high.astype(_np.int16),
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
        if include_radiance:
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
        ds.attrs.update(
            EXTNAME=spec["extname"],
            DETECTOR=spec["detector"],
            RADCAL=spec["radcal"],
            XPOSURE=float(xposure),
            NBIN2=nbin2,
            NBIN3=nbin3,
            WAVEMIN=header["WAVEMIN"],
            WAVEMAX=header["WAVEMAX"],
        )
        ds.attrs.update({k: v for k, v in noise_attrs.items() if k != "noise_formula"})
        children[window_node_name(spec["extname"])] = ds

    table = fits.BinTableHDU.from_columns(radcal_cols)
    table.header["EXTNAME"] = ("VARIABLE_KEYWORDS", "Extension name")
    table.header["FILENAME"] = target.name
    fits.append(target, table.data, table.header, verify=False)

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
    tree = xr.DataTree.from_dict({"/": root, **{f"/{k}": v for k, v in children.items()}})
    if store_truth:
        tree.to_netcdf(target.with_name(target.stem + "_truth.nc"))
    return tree


def make_spectra(
    n: int,
    *,
    lines=(("ne_8", 770.428, 2.0, "ne_8 770.42"),),
    wavemin: float = 768.4,
    nwave: int = 56,
    detector: str = "SW",
    background: float | None = None,
    width: float | None = None,
    radcal: float | None = None,
    xposure: float = 5.0,
    seed: int = 0,
    noise: bool = True,
    dtype: str = "float32",
):
    """In-memory SPICE-like spectra with random (seeded) true parameters, for fit tests.

    Each spectrum has its own amplitude (``peak * U(0.3, 3)``, log-uniform), Doppler velocity
    (uniform +-20 km/s), width (``width * U(0.85, 1.2)``) and background
    (``background * U(0.5, 1.5)``), and the noise of :func:`make_spice_l2`.

    Parameters
    ----------
    n : int
        Number of spectra (dimension ``y``).
    lines : sequence of (ion, rest_wavelength, peak_radiance[, line_id]), optional
        Rest wavelength in Angstrom, peak radiance in W m-2 sr-1 nm-1.
    wavemin : float, optional
        Left edge of the first wavelength pixel (Angstrom).
    nwave : int, optional
        Number of wavelength samples.
    detector : {"SW", "LW"}, optional
        Sets the sampling, noise constants and defaults.
    background, width, radcal : float, optional
        Defaults as in :func:`make_spice_l2` for the detector.
    xposure : float, optional
        Exposure time (s), for the noise.
    seed : int, optional
        Random seed.
    noise : bool, optional
        Add noise to ``radiance``.
    dtype : {"float32", "float64"}, optional
        Type of ``radiance`` and ``error``.

    Returns
    -------
    xarray.Dataset
        ``radiance`` and ``error`` (noise-model 1-sigma) with dims ``(y, wavelength)``,
        attrs ``RADCAL``, ``XPOSURE``, ``DETECTOR``, ``NBIN2``, ``NBIN3`` like the reader's;
        truth ``amplitude``, ``centroid``, ``width``, ``doppler_velocity`` (dims
        ``(line, y)``) and ``background`` (``y``); coords ``wavelength``, ``line``,
        ``ion``, ``rest_wavelength``.

    Examples
    --------
    >>> ds = make_spectra(3)
    >>> ds.radiance.dims, ds.amplitude.dims
    (('y', 'wavelength'), ('line', 'y'))
    """
    import xarray as xr

    spec = _resolve_windows(
        [{"extname": "spectra", "lines": list(lines), "wavemin": wavemin, "nwave": nwave,
          "detector": detector}
         | ({} if background is None else {"background": background})
         | ({} if width is None else {"width": width})
         | ({} if radcal is None else {"radcal": radcal})],
        None, None, 1, float(xposure),
    )[0]  # fmt: skip
    rng = _np.random.default_rng(int(seed))
    nl = len(spec["lines"])
    rest = _np.array([line[1] for line in spec["lines"]], dtype=float)[:, None]
    peak = _np.array([line[2] for line in spec["lines"]], dtype=float)[:, None]
    amp = peak * _np.exp(rng.uniform(_math.log(0.3), _math.log(3.0), size=(nl, n)))
    vel = rng.uniform(-20.0, 20.0, size=(nl, n))
    wid = spec["width"] * rng.uniform(0.85, 1.2, size=(nl, n))
    bg = spec["background"] * rng.uniform(0.5, 1.5, size=n)
    cent = rest * (1.0 + vel / _C_KMS)

    nw = spec["nwave"]
    wave = spec["wavemin"] + spec["step"] * (_np.arange(nw) + 0.5)
    ref = float(wave[nw // 2])
    cube = _np.empty((nw, n, 1), dtype=_np.float32)
    _add_lines(
        cube,
        (wave - ref).astype(_np.float32),
        bg[:, None].astype(_np.float32),
        amp[:, :, None].astype(_np.float32),
        (cent - ref)[:, :, None].astype(_np.float32),
        wid[:, :, None].astype(_np.float32),
    )
    photon, floor, _ = _noise_terms(spec["detector"], spec["radcal"], float(xposure), 1, 1)
    sigma = _noise_sigma(cube, photon, floor)
    radiance = cube.copy()
    if noise:
        radiance += sigma * rng.standard_normal(cube.shape, dtype=_np.float32)
    radiance = radiance[:, :, 0].T.astype(dtype)
    error = sigma[:, :, 0].T.astype(dtype)

    attrs = {
        "RADCAL": spec["radcal"],
        "XPOSURE": float(xposure),
        "DETECTOR": spec["detector"],
        "NBIN2": 1,
        "NBIN3": 1,
        "BUNIT": "W/m2/sr/nm",
    }
    ion = [line[0] for line in spec["lines"]]
    return xr.Dataset(
        {
            "radiance": (("y", "wavelength"), radiance,
                         {"units": "W m-2 sr-1 nm-1", "long_name": "spectral radiance", **attrs}),
            "error": (("y", "wavelength"), error,
                      {"units": "W m-2 sr-1 nm-1", "long_name": "noise-model 1-sigma"}),
            "amplitude": (("line", "y"), amp, {"units": "W m-2 sr-1 nm-1"}),
            "centroid": (("line", "y"), cent, {"units": "Angstrom"}),
            "width": (("line", "y"), wid, {"units": "Angstrom", "long_name": "Gaussian sigma"}),
            "doppler_velocity": (("line", "y"), vel, {"units": "km/s"}),
            "background": ("y", bg, {"units": "W m-2 sr-1 nm-1"}),
        },
        coords={
            "wavelength": ("wavelength", wave, {"units": "Angstrom"}),
            "line": ("line", _np.array([line[3] for line in spec["lines"]], str)),
            "ion": ("line", _np.array(ion, dtype=str)),
            "rest_wavelength": ("line", rest[:, 0], {"units": "Angstrom"}),
        },
        attrs=attrs,
    )  # fmt: skip
