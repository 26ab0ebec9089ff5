"""Synthetic spectra: smooth true parameter maps, the line cube and its SPICE noise.

`make_spectra` (in-memory spectra with random true parameters) and the pieces that
``make_spice_l2`` assembles into a file (`window_truth`, `add_lines`, `noise_terms`,
`noise_sigma`, `active_region`, `nan_padding`).
"""

from __future__ import annotations

import math as _math

import numpy as _np

from ..fit.profiles import gaussian
from ..prep.noise import spice_noise_terms
from ._windows import resolve_windows

__all__ = ["make_spectra"]

_C_KMS = 299792.458
_DOPPLER_KMS = 5.0  # amplitude of the smooth Doppler maps
_WIDTH_VARIATION = 0.1  # relative amplitude of the smooth width maps
_AMPLITUDE_LOG_RANGE = 0.9  # quiet-Sun amplitude maps span peak * exp(+-0.9)
# range of the per-line brightening (amplitude x (1 + contrast)) at the "active region" centre
_AR_CONTRAST = (4.0, 12.0)


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


def noise_terms(detector: str, radcal: float, xposure: float, nbin2: int, nbin3: int):
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


def noise_sigma(radiance, photon: float, floor: float):
    """One-sigma noise (radiance units) for a true radiance array, float32, new array."""
    sigma = _np.maximum(radiance, 0, dtype=_np.float32)
    sigma *= _np.float32(photon)
    sigma += _np.float32(floor)
    _np.sqrt(sigma, out=sigma)
    return sigma


def add_lines(out, rel_wave, background, amp, cent_rel, width):
    """out[w, a, b] = background[a, b] + sum_l amp * exp(-0.5 ((wave - cent) / width)^2).

    ``rel_wave`` and ``cent_rel`` are relative to a common reference wavelength (float32
    precision is then ample); all inputs are float32.
    """
    out[...] = background[None]
    lam = rel_wave[:, None, None]
    for amp_l, cent_l, width_l in zip(amp, cent_rel, width, strict=True):
        out += gaussian(lam, amp_l[None], cent_l[None], width_l[None])


def active_region(seed: int, na: int, nb: int) -> _np.ndarray:
    """A bright patch (0..1, shape (na, nb)) at the same place in every window."""
    rng = _np.random.default_rng([int(seed), 2**31 - 1])
    ca, cb = rng.uniform(0.25, 0.75, size=2)
    a = ((_np.arange(na) + 0.5) / na)[:, None]
    b = ((_np.arange(nb) + 0.5) / nb)[None, :]
    return _np.exp(-0.5 * (((a - ca) / 0.12) ** 2 + ((b - cb) / 0.15) ** 2))


def window_truth(spec, na, nb, rng, offset_range, active):
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


def nan_padding(ny: int, rng) -> tuple[_np.ndarray, _np.ndarray]:
    """NaN samples at the low/high wavelength edge for each y: 3-5, drifting along the slit
    (a tilt like the one left by SPICE's distortion correction)."""
    base_lo, base_hi = rng.integers(3, 5, size=2)
    frac = _np.arange(ny) / max(ny, 1)
    low = base_lo + (frac * 2).astype(int)
    high = base_hi + (frac[::-1] * 2).astype(int)
    return low, high


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

    spec = resolve_windows(
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
    add_lines(
        cube,
        (wave - ref).astype(_np.float32),
        bg[:, None].astype(_np.float32),
        amp[:, :, None].astype(_np.float32),
        (cent - ref)[:, :, None].astype(_np.float32),
        wid[:, :, None].astype(_np.float32),
    )
    photon, floor, _ = noise_terms(spec["detector"], spec["radcal"], float(xposure), 1, 1)
    sigma = noise_sigma(cube, photon, floor)
    radiance = cube.copy()
    if noise:
        radiance += sigma * rng.standard_normal(cube.shape, dtype=_np.float32)
    radiance = radiance[:, :, 0].T.astype(dtype)
    error = sigma[:, :, 0].T.astype(dtype)
    truth = {"amplitude": amp, "centroid": cent, "width": wid, "doppler_velocity": vel,
             "background": bg, "rest": rest[:, 0]}  # fmt: skip
    return _spectra_dataset(spec, float(xposure), wave, radiance, error, truth)


def _spectra_dataset(spec, xposure, wave, radiance, error, truth):
    """The Dataset returned by `make_spectra`."""
    import xarray as xr

    attrs = {
        "RADCAL": spec["radcal"],
        "XPOSURE": xposure,
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
            "amplitude": (("line", "y"), truth["amplitude"], {"units": "W m-2 sr-1 nm-1"}),
            "centroid": (("line", "y"), truth["centroid"], {"units": "Angstrom"}),
            "width": (("line", "y"), truth["width"],
                      {"units": "Angstrom", "long_name": "Gaussian sigma"}),
            "doppler_velocity": (("line", "y"), truth["doppler_velocity"], {"units": "km/s"}),
            "background": ("y", truth["background"], {"units": "W m-2 sr-1 nm-1"}),
        },
        coords={
            "wavelength": ("wavelength", wave, {"units": "Angstrom"}),
            "line": ("line", _np.array([line[3] for line in spec["lines"]], str)),
            "ion": ("line", _np.array(ion, dtype=str)),
            "rest_wavelength": ("line", truth["rest"], {"units": "Angstrom"}),
        },
        attrs=attrs,
    )  # fmt: skip
