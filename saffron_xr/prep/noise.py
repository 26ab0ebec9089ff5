"""The SPICE noise model: per-sample 1-sigma errors of Level-2 radiances.

The model (Huang et al. 2023, A&A, doi:10.1051/0004-6361/202345988) gives, in radiance
units,

    sigma = sqrt(F**2 G RADCAL max(I, 0) + k N_bin (R**2 + D t)) / RADCAL

with ``I`` the radiance, ``RADCAL`` the radiometric calibration factor (DN per radiance unit),
``G`` the detector gain (DN/photon), ``F`` the intensifier noise factor, ``R`` the read noise
(DN), ``D`` the dark current (DN/s/pixel), ``t`` the exposure time (``XPOSURE``, s),
``N_bin = NBIN2 * NBIN3`` the number of detector pixels summed on board and ``k`` the
dark-subtraction factor (2 when a dark frame of the same exposure was subtracted, as in current
SPICE pipelines; 1 for older products). Negative radiances (noise around a dark-subtracted
zero) get ``|I|`` plus the signal-independent part, so they never pull a fit harder than the
noise floor allows.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
import xarray as xr

__all__ = ["SPICE_NOISE_CONSTANTS", "SPICE_NOISE_CITATION", "spice_error", "spice_noise_terms"]

#: Bibliographic source of :data:`SPICE_NOISE_CONSTANTS`.
SPICE_NOISE_CITATION = "Huang et al. 2023, A&A, doi:10.1051/0004-6361/202345988"

#: Per-detector constants of the SPICE noise model (read-only). Keys per detector:
#: ``gain`` G (DN/photon), ``dark_current`` D (DN/s/pixel), ``noise_factor`` F (intensifier
#: excess-noise factor, dimensionless), ``read_noise`` R (DN).
SPICE_NOISE_CONSTANTS: Mapping[str, Mapping[str, float]] = MappingProxyType(
    {
        "SW": MappingProxyType(
            {"gain": 3.58, "dark_current": 0.89, "noise_factor": 1.0, "read_noise": 6.9}
        ),
        "LW": MappingProxyType(
            {"gain": 0.57, "dark_current": 0.54, "noise_factor": 1.6, "read_noise": 6.9}
        ),
    }
)

#: Default dark-subtraction factor ``k`` (a dark frame of the same exposure was subtracted).
DEFAULT_DARK_FACTOR = 2


def _keyword(radiance: xr.DataArray, key: str, override):
    """A header keyword from ``radiance.attrs`` unless overridden; clear error if absent."""
    if override is not None:
        return override
    if key in radiance.attrs:
        return radiance.attrs[key]
    name = radiance.name if radiance.name is not None else "radiance"
    source = radiance.attrs.get("filename", "")
    where = f" (from {source})" if source else ""
    raise KeyError(
        f"SPICE noise model: header keyword {key} is missing from the attrs of DataArray "
        f"{name!r}{where}; open the file with saffron_xr.open_spice or pass "
        f"{key.lower()}=... explicitly"
    )


def radiance_units(radiance: xr.DataArray) -> str:
    """The radiance unit string of ``radiance`` (``units``, else ``BUNIT``, else SPICE's)."""
    return str(radiance.attrs.get("units", radiance.attrs.get("BUNIT", "W m-2 sr-1 nm-1")))


def noise_model_terms(
    radiance: xr.DataArray,
    *,
    radcal=None,
    xposure=None,
    nbin2=None,
    nbin3=None,
    detector=None,
    dark_factor: int | float = DEFAULT_DARK_FACTOR,
):
    """The two terms of the noise model in radiance units, plus the constants used.

    Returns ``(photon, floor, info)`` with ``sigma**2 = photon * max(I, 0) + floor``;
    ``photon`` and ``floor`` are floats, or float64 DataArrays along ``wavelength`` when
    RADCAL is given per wavelength. ``info`` holds the constants for the output attrs.
    Computes nothing on the radiance.
    """
    if radcal is None and "radcal" in radiance.coords:
        radcal = radiance.coords["radcal"]
    radcal = _keyword(radiance, "RADCAL", radcal)
    xposure = float(_keyword(radiance, "XPOSURE", xposure))
    nbin2 = int(_keyword(radiance, "NBIN2", nbin2))
    nbin3 = int(_keyword(radiance, "NBIN3", nbin3))
    detector = str(_keyword(radiance, "DETECTOR", detector)).strip().upper()
    if detector not in SPICE_NOISE_CONSTANTS:
        raise ValueError(
            f"spice_error: DETECTOR is {detector!r}; the noise model knows "
            f"{sorted(SPICE_NOISE_CONSTANTS)}"
        )
    if dark_factor not in (1, 2):
        raise ValueError(f"spice_error: dark_factor must be 1 or 2, got {dark_factor!r}")
    if xposure <= 0 or nbin2 < 1 or nbin3 < 1:
        raise ValueError(
            f"spice_error: need XPOSURE > 0 and NBIN2, NBIN3 >= 1, got XPOSURE={xposure}, "
            f"NBIN2={nbin2}, NBIN3={nbin3}"
        )

    if isinstance(radcal, xr.DataArray):
        radcal = radcal.astype(np.float64)
        radcal_attr = "per wavelength (coordinate radcal)"
        # a small coordinate; checked only when in memory (a chunked one stays lazy)
        radcal_min = None if radcal.chunks is not None else float(radcal.min())
    else:
        radcal = float(radcal)
        radcal_min = radcal
        radcal_attr = radcal
    if radcal_min is not None and not (np.isfinite(radcal_min) and radcal_min > 0):
        raise ValueError(f"spice_error: RADCAL must be positive and finite, got {radcal_min}")

    const = SPICE_NOISE_CONSTANTS[detector]
    gain = const["gain"]
    factor = const["noise_factor"]
    read = const["read_noise"]
    dark = const["dark_current"]
    n_bin = nbin2 * nbin3
    photon = factor**2 * gain / radcal
    floor = dark_factor * n_bin * (read**2 + dark * xposure) / radcal**2
    info = {
        "noise_model": "SPICE (Huang et al. 2023)",
        "noise_model_citation": SPICE_NOISE_CITATION,
        "noise_detector": detector,
        "noise_gain": gain,
        "noise_dark_current": dark,
        "noise_factor": factor,
        "noise_read_noise": read,
        "noise_dark_factor": int(dark_factor),
        "noise_xposure": xposure,
        "noise_nbin": n_bin,
        "noise_radcal": radcal_attr,
        "noise_formula": (
            "sigma = sqrt(F^2 G RADCAL max(I,0) + k N_bin (R^2 + D t)) / RADCAL; "
            "I < 0: sigma = |I| + sqrt(k N_bin (R^2 + D t)) / RADCAL"
        ),
    }
    return photon, floor, info


def terms_units(radiance: xr.DataArray) -> tuple[str, str]:
    """Units of the photon term (radiance unit) and of the floor (radiance unit squared)."""
    import astropy.units as u

    units = radiance_units(radiance)
    try:
        squared = (u.Unit(units) ** 2).to_string()
    except ValueError:
        squared = f"({units})2"
    return units, squared


def spice_noise_terms(
    radiance: xr.DataArray,
    *,
    radcal=None,
    xposure: float | None = None,
    nbin2: int | None = None,
    nbin3: int | None = None,
    detector: str | None = None,
    dark_factor: int = DEFAULT_DARK_FACTOR,
) -> xr.Dataset:
    """The two terms of the SPICE noise model, ``sigma**2 = photon * max(I, 0) + floor``.

    ``photon = F**2 G / RADCAL`` (the signal-dependent, photon-counting term) and
    ``floor = k N_bin (R**2 + D t) / RADCAL**2`` (read noise and dark current), in radiance
    units, with the same constants as :func:`spice_error` (Huang et al. 2023). This is the
    form a fit weighted by its model uses (``sigma`` evaluated at the model, not at the noisy
    sample, so no ``|I|`` rule), and the form :func:`saffron_xr.calibrate_noise_terms`
    rescales.

    Parameters
    ----------
    radiance : xarray.DataArray
        Spectral radiance with the header keywords in its attrs (see :func:`spice_error`);
        only its attrs, units and ``radcal`` coordinate are read, never its values.
    radcal, xposure, nbin2, nbin3, detector, dark_factor
        As for :func:`spice_error`.

    Returns
    -------
    xarray.Dataset
        ``photon`` (radiance units) and ``floor`` (radiance units squared), float64, 0-d or
        along ``wavelength`` when RADCAL is given per wavelength (lazy if that coordinate is
        chunked); the model constants in ``noise_*`` attrs.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> rad = xr.DataArray(
    ...     np.zeros((1, 1, 2), dtype="float32"), dims=("y", "x", "wavelength"),
    ...     attrs={"RADCAL": 38.15, "XPOSURE": 4.7, "NBIN2": 1, "NBIN3": 1,
    ...            "DETECTOR": "SW", "units": "W m-2 sr-1 nm-1"})
    >>> terms = spice_noise_terms(rad)
    >>> round(float(terms.photon), 5), round(float(terms.floor), 5)
    (0.09384, 0.07117)
    """
    photon, floor, info = noise_model_terms(
        radiance,
        radcal=radcal,
        xposure=xposure,
        nbin2=nbin2,
        nbin3=nbin3,
        detector=detector,
        dark_factor=dark_factor,
    )
    units, squared = terms_units(radiance)

    def _as_da(value, attrs):
        da = value if isinstance(value, xr.DataArray) else xr.DataArray(float(value))
        da = da.astype(np.float64)
        if da.dims:
            da = da.reset_coords(drop=True)
        return da.assign_attrs(attrs)

    ds = xr.Dataset(
        {
            "photon": _as_da(
                photon,
                {"units": units, "long_name": "signal-dependent noise term F^2 G / RADCAL"},
            ),
            "floor": _as_da(
                floor,
                {
                    "units": squared,
                    "long_name": "signal-independent noise variance k N_bin (R^2 + D t) / "
                    "RADCAL^2",
                },
            ),
        },
        attrs={**info, "noise_terms_formula": "sigma^2 = photon * max(I, 0) + floor"},
    )
    return ds


def model_sigma(signal: xr.DataArray, photon, floor) -> xr.DataArray:
    """sigma of the model for a signal, with the negative-signal rule (float64 or input)."""
    positive = np.sqrt(photon * signal.clip(min=0) + floor)
    negative = abs(signal) + np.sqrt(floor)
    return xr.where(signal >= 0, positive, negative, keep_attrs=False)


def spice_error(
    radiance: xr.DataArray,
    *,
    radcal=None,
    xposure: float | None = None,
    nbin2: int | None = None,
    nbin3: int | None = None,
    detector: str | None = None,
    dark_factor: int = DEFAULT_DARK_FACTOR,
) -> xr.DataArray:
    """Per-sample 1-sigma error of SPICE L2 radiances from the SPICE noise model.

    ``sigma = sqrt(F**2 G RADCAL max(I, 0) + k N_bin (R**2 + D t)) / RADCAL`` for
    ``I >= 0`` and ``|I| + sqrt(k N_bin (R**2 + D t)) / RADCAL`` for ``I < 0``, with the
    per-detector constants of :data:`SPICE_NOISE_CONSTANTS` (Huang et al. 2023). Lazy: with
    a dask-backed radiance nothing is computed.

    Parameters
    ----------
    radiance : xarray.DataArray
        Spectral radiance in the file unit (W m-2 sr-1 nm-1, the unit RADCAL refers to),
        with the header keywords RADCAL, XPOSURE, NBIN2, NBIN3 and DETECTOR in its attrs
        (as :func:`saffron_xr.open_spice` puts them). A coordinate ``radcal`` along
        ``wavelength`` (per-wavelength calibration) takes precedence over the RADCAL attr.
    radcal : float or xarray.DataArray, optional
        Override RADCAL (DN per radiance unit); a DataArray must broadcast against
        ``radiance`` (e.g. along ``wavelength``).
    xposure : float, optional
        Override the exposure time XPOSURE (s).
    nbin2, nbin3 : int, optional
        Override the on-board binning factors NBIN2 (along the slit) and NBIN3 (spectral).
    detector : {"SW", "LW"}, optional
        Override the detector.
    dark_factor : {1, 2}, default 2
        ``k``: 2 when a dark frame was subtracted (current SPICE pipelines), 1 for older
        products.

    Returns
    -------
    xarray.DataArray
        ``error``: same dims, coords, chunks and dtype as ``radiance``; ``units`` equal to the
        radiance units; the model constants and citation in ``noise_*`` attrs. NaN where the
        radiance is NaN.

    Raises
    ------
    KeyError
        If a needed header keyword is neither in the attrs nor given explicitly.
    ValueError
        For an unknown detector or non-physical keyword values.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> rad = xr.DataArray(
    ...     np.array([[[0.0, 1.0]]], dtype="float32"), dims=("y", "x", "wavelength"),
    ...     attrs={"RADCAL": 38.15, "XPOSURE": 4.7, "NBIN2": 1, "NBIN3": 1,
    ...            "DETECTOR": "SW", "units": "W m-2 sr-1 nm-1"})
    >>> err = spice_error(rad)
    >>> err.dtype, err.attrs["units"]
    (dtype('float32'), 'W m-2 sr-1 nm-1')
    >>> float(err[0, 0, 0]).__round__(4)
    0.2668
    """
    photon, floor, info = noise_model_terms(
        radiance,
        radcal=radcal,
        xposure=xposure,
        nbin2=nbin2,
        nbin3=nbin3,
        detector=detector,
        dark_factor=dark_factor,
    )
    dtype = radiance.dtype if np.issubdtype(radiance.dtype, np.floating) else np.float64
    sigma = model_sigma(radiance, photon, floor).astype(dtype)
    sigma = sigma.transpose(*radiance.dims)
    # keep the header keywords for provenance, but not what describes the radiance itself
    attrs = {
        k: v
        for k, v in radiance.attrs.items()
        if k not in ("long_name", "standard_name", "BTYPE", "units")
    }
    attrs.update(info)
    attrs["units"] = radiance_units(radiance)
    attrs["long_name"] = "1-sigma radiance uncertainty (SPICE noise model)"
    return sigma.rename("error").assign_attrs(attrs)
