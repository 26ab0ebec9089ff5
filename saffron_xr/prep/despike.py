"""Cosmic-ray removal against the local median, with thresholds from the SPICE noise model.

A sample is a spike when it exceeds its local reference by more than ``n_sigma`` times the
noise: the noise-model error *of the reference* (not of the sample, which a hit inflates),
or the robust scatter of the neighbours where that is larger (where the model underestimates
the real noise). The model is the floor, so neither a hit nor a bright structure nearby can
lower the threshold. The reference is the larger of two NaN-aware medians of the neighbours
(the sample itself left out):

* the 3-D median over a box in (y, x, wavelength) — what the sample would be without a hit;
* the spectral median over the wavelength neighbours only.

A cosmic-ray hit is sharp along every axis, so it stands out from both. A real line core is
never sharper along wavelength than the instrumental profile, so its spectral neighbours
vouch for it even where the spatial gradients are steep (a compact brightening, a loop
footpoint) and the 3-D median is far below it. Only positive excursions are detected:
cosmic rays add charge.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping

import numpy as np
import xarray as xr

from ._overlap import apply_overlap
from .noise import DEFAULT_DARK_FACTOR, model_sigma, noise_model_terms

__all__ = ["despike"]

_SLAB_BYTES = 32 * 2**20  # memory bound of the neighbour stack per slab
_MIN_SCATTER_SAMPLES = 5  # fewer valid neighbours: no scatter estimate, the model alone


def _nanmedian_sorted(stack: np.ndarray) -> np.ndarray:
    """Median over axis 0 ignoring NaN (NaN when all are NaN); sorts in place."""
    stack.sort(axis=0)  # NaN go last
    n_valid = np.count_nonzero(~np.isnan(stack), axis=0)
    lo = np.clip((n_valid - 1) // 2, 0, None)[None]
    hi = np.clip(n_valid // 2, 0, stack.shape[0] - 1)[None]
    med = 0.5 * (
        np.take_along_axis(stack, lo, axis=0)[0] + np.take_along_axis(stack, hi, axis=0)[0]
    )
    med[n_valid == 0] = np.nan
    return med


def _robust_scatter(stack: np.ndarray, median: np.ndarray) -> np.ndarray:
    """1.4826 x the median absolute deviation over axis 0 (NaN with < 5 valid values)."""
    deviation = np.abs(stack - median[None])
    n_valid = np.count_nonzero(~np.isnan(deviation), axis=0)
    scatter = 1.4826 * _nanmedian_sorted(deviation)
    scatter[n_valid < _MIN_SCATTER_SAMPLES] = np.nan
    return scatter


def _neighbour_median(block: np.ndarray, half: tuple[int, ...], scatter: bool = False):
    """NaN-aware median of the box neighbours (centre excluded) of every interior sample.

    ``half`` is the half-width per axis; the outer ``half`` samples of the block (the halo)
    are returned as NaN. With ``scatter`` the robust scatter (scaled MAD) of the neighbours
    is returned instead.
    """
    out = np.full(block.shape, np.nan, dtype=block.dtype)
    offsets = [
        off
        for off in itertools.product(*(range(-h, h + 1) for h in half))
        if any(o != 0 for o in off)
    ]
    inner = tuple(n - 2 * h for n, h in zip(block.shape, half, strict=True))
    if not offsets or min(inner) <= 0:
        return out
    row_bytes = len(offsets) * int(np.prod(inner[1:])) * block.itemsize
    slab = max(1, _SLAB_BYTES // max(row_bytes, 1))
    h0 = half[0]
    for start in range(0, inner[0], slab):
        stop = min(start + slab, inner[0])
        stack = np.empty((len(offsets), stop - start, *inner[1:]), dtype=block.dtype)
        for k, off in enumerate(offsets):
            index = [slice(h0 + off[0] + start, h0 + off[0] + stop)]
            for n_ax, h, o in zip(inner[1:], half[1:], off[1:], strict=True):
                index.append(slice(h + o, h + o + n_ax))
            stack[k] = block[tuple(index)]
        out_index = (slice(h0 + start, h0 + stop),) + tuple(
            slice(h, h + n_ax) for n_ax, h in zip(inner[1:], half[1:], strict=True)
        )
        median = _nanmedian_sorted(stack)
        out[out_index] = _robust_scatter(stack, median) if scatter else median
    return out


def _box_median(
    radiance: xr.DataArray, sizes: Mapping[str, int], scatter: bool = False
) -> xr.DataArray:
    half = tuple(sizes.get(d, 1) // 2 for d in radiance.dims)
    func = functools.partial(_neighbour_median, half=half, scatter=scatter)
    depth = {d: h for d, h in zip(radiance.dims, half, strict=True) if h > 0}
    return apply_overlap(func, [radiance], depth, np.nan, radiance.dtype)


def _window_sizes(radiance: xr.DataArray, size) -> dict[str, int]:
    if isinstance(size, Mapping):
        unknown = set(size) - set(radiance.dims)
        if unknown:
            raise ValueError(
                f"despike: size names dims {sorted(unknown)} absent from {radiance.dims}"
            )
        sizes = {d: int(size.get(d, 1)) for d in radiance.dims}
    else:
        sizes = {d: int(size) for d in radiance.dims}
    for d, n in sizes.items():
        if n < 1 or n % 2 == 0:
            raise ValueError(f"despike: window size along {d!r} must be odd and >= 1, got {n}")
    if "wavelength" not in sizes or sizes["wavelength"] < 3:
        raise ValueError("despike: needs a wavelength dim with a window of at least 3")
    return sizes


def despike(
    radiance: xr.DataArray,
    *,
    n_sigma: float = 5.0,
    size: int | Mapping[str, int] = 3,
    replace: str = "nan",
    dark_factor: int = DEFAULT_DARK_FACTOR,
    local_scatter: bool = True,
) -> tuple[xr.DataArray, xr.DataArray]:
    """Remove cosmic-ray hits, using the local median and the SPICE noise model.

    A sample ``I`` is flagged when ``I - ref > n_sigma * max(sigma(ref), s)``, where
    ``ref`` is the larger of the NaN-aware median of its neighbours in a box over all dims
    (default 3 x 3 x 3 in y, x, wavelength, the sample itself excluded) and the median of its
    wavelength neighbours alone, ``sigma(ref)`` is the noise-model error
    (:func:`~saffron_xr.spice_error`) of a sample of radiance ``ref`` and ``s`` the robust
    scatter of the box neighbours (see ``local_scatter``). Using the spectral
    reference keeps bright line cores with steep spatial gradients: a real line is never
    sharper along wavelength than the instrumental profile, a hit is. Lazy
    (``dask.array.map_overlap``), and the result does not depend on the chunking.

    Parameters
    ----------
    radiance : xarray.DataArray
        Spectral radiance with a ``wavelength`` dim and the noise-model header keywords in its
        attrs (see :func:`~saffron_xr.spice_error`); dims ``(y, x, wavelength)`` or
        ``(time, y, wavelength)`` (any order).
    n_sigma : float, default 5.0
        Detection threshold in noise-model sigmas above the reference.
    size : int or mapping of str to int, default 3
        Odd box size of the neighbourhood, for every dim or per dim (dims not named get 1).
        The wavelength entry also sets the spectral reference window.
    replace : {"nan", "median"}, default "nan"
        Replace flagged samples by NaN (missing data for the fit) or by the 3-D neighbour
        median.
    dark_factor : {1, 2}, default 2
        Dark-subtraction factor of the noise model (see :func:`~saffron_xr.spice_error`).
    local_scatter : bool, default True
        Use ``max(sigma(ref), s)`` as the noise, with ``s`` the robust scatter (1.4826 x
        MAD) of the box neighbours: where the noise model underestimates the real noise
        (seen on LW calibration exposures, real scatter 1.3-1.7 x the model) the threshold
        follows the data instead of flagging noise. The model remains the floor, so a hit
        or a sharp structure never lowers the threshold. False: the noise model alone.

    Returns
    -------
    cleaned : xarray.DataArray
        The radiance with spikes replaced; same dims, coords, dtype and attrs, plus
        ``despike_n_sigma``, ``despike_size`` and ``despike_replace`` attrs.
    spikes : xarray.DataArray
        Boolean, named ``spike``: True where a sample was changed.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> rng = np.random.default_rng(0)
    >>> data = rng.normal(1.0, 0.05, (8, 3, 20)).astype("float32")
    >>> data[4, 1, 10] += 50.0
    >>> rad = xr.DataArray(data, dims=("y", "x", "wavelength"), attrs={
    ...     "RADCAL": 38.15, "XPOSURE": 4.7, "NBIN2": 1, "NBIN3": 1, "DETECTOR": "SW",
    ...     "units": "W m-2 sr-1 nm-1"})
    >>> cleaned, spikes = despike(rad)
    >>> int(spikes.sum()), bool(np.isnan(cleaned[4, 1, 10]))
    (1, True)
    """
    if replace not in ("nan", "median"):
        raise ValueError(f"despike: replace must be 'nan' or 'median', got {replace!r}")
    if n_sigma <= 0:
        raise ValueError(f"despike: n_sigma must be positive, got {n_sigma}")
    sizes = _window_sizes(radiance, size)
    photon, floor, _ = noise_model_terms(radiance, dark_factor=dark_factor)

    median_box = _box_median(radiance, sizes)
    spectral = {d: (sizes["wavelength"] if d == "wavelength" else 1) for d in radiance.dims}
    median_spectral = _box_median(radiance, spectral)
    reference = np.fmax(median_box, median_spectral)
    noise = model_sigma(reference, photon, floor)
    if local_scatter:
        noise = np.fmax(noise, _box_median(radiance, sizes, scatter=True))
    spikes = (radiance - reference) > n_sigma * noise
    spikes = spikes.transpose(*radiance.dims)

    fill = np.nan if replace == "nan" else median_box
    cleaned = xr.where(spikes, fill, radiance, keep_attrs=False).astype(radiance.dtype)
    cleaned = cleaned.transpose(*radiance.dims).rename(radiance.name)
    cleaned.attrs = dict(radiance.attrs)
    cleaned.attrs.update(
        despike_n_sigma=float(n_sigma),
        despike_size=" ".join(f"{d}={sizes[d]}" for d in radiance.dims),
        despike_replace=replace,
        despike_noise_dark_factor=int(dark_factor),
        despike_local_scatter=int(local_scatter),
    )
    spikes = spikes.rename("spike").assign_attrs(
        units="1",
        long_name="sample changed by despike",
        despike_n_sigma=float(n_sigma),
    )
    return cleaned, spikes
