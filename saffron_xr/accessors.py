"""The ``.saffron`` accessors (DataArray, Dataset, DataTree) and ``.fip`` (Dataset).

Each method forwards in one line to a public function with the same explicit signature;
the accessors hold no state. Sections belong to sub-packages: add methods in yours. Methods
that several accessors offer are written once, in a small base class (plot methods on all
three ``.saffron`` accessors, result writers on the Dataset and DataTree ones).
"""

from __future__ import annotations

import xarray as xr


class _PlotMethods:
    """Plot methods of every ``.saffron`` accessor (DataArray, Dataset and DataTree)."""

    _obj: xr.DataArray | xr.Dataset | xr.DataTree

    def quicklook(self, path=None, *, velocity_reference=None, percentile=99.0, dpi=100):
        """Static overview figure; see :func:`saffron_xr.plot.quicklook` (computes)."""
        from .plot.quicklook import quicklook

        return quicklook(self._obj, path, velocity_reference=velocity_reference, percentile=percentile, dpi=dpi)  # fmt: skip

    def explore(self, results=None, *, window=None):
        """Interactive explorer; see :func:`saffron_xr.plot.explore` (lazy until shown)."""
        from .plot.explorer import explore

        return explore(self._obj, results, window=window)


class _WriteMethods:
    """Writers of fit results, on the Dataset (one window) and DataTree (per window) accessors."""

    _obj: xr.Dataset | xr.DataTree

    def to_netcdf(
        self,
        path,
        *,
        config=None,
        provenance=None,
        compression="zstd",
        compression_level=None,
        overwrite=True,
        format=None,
    ):
        """Write as a results file, one group per window; see :func:`saffron_xr.to_netcdf`
        (computes)."""
        from .io.netcdf import to_netcdf

        return to_netcdf(self._obj, path, config=config, provenance=provenance, compression=compression, compression_level=compression_level, overwrite=overwrite, format=format)  # fmt: skip

    def to_l3_fits(self, path, *, data=None, overwrite=True):
        """Write SOLARNET/SPICE L3-style FITS; see :func:`saffron_xr.to_l3_fits` (computes)."""
        from .io.l3fits import to_l3_fits

        return to_l3_fits(self._obj, path, data=data, overwrite=overwrite)


@xr.register_dataarray_accessor("saffron")
class SaffronDataArrayAccessor(_PlotMethods):
    """Methods on a SPICE radiance DataArray: preparation and fitting."""

    def __init__(self, obj):
        self._obj = obj

    # --- prep ---
    def spice_error(
        self,
        *,
        radcal=None,
        xposure=None,
        nbin2=None,
        nbin3=None,
        detector=None,
        dark_factor=2,
    ):
        """Noise-model errors; see :func:`saffron_xr.spice_error` (lazy)."""
        from .prep import spice_error

        return spice_error(self._obj, radcal=radcal, xposure=xposure, nbin2=nbin2, nbin3=nbin3, detector=detector, dark_factor=dark_factor)  # fmt: skip

    def calibrate_error(
        self,
        error=None,
        *,
        terms=None,
        lags=(2, 3, 4),
        max_samples=500_000,
        radcal=None,
        xposure=None,
        nbin2=None,
        nbin3=None,
        detector=None,
        dark_factor=2,
    ):
        """Noise model rescaled to the data; see :func:`saffron_xr.calibrate_error` (lazy
        error, one small statistics pass)."""
        from .prep import calibrate_error

        return calibrate_error(self._obj, error, terms=terms, lags=lags, max_samples=max_samples, radcal=radcal, xposure=xposure, nbin2=nbin2, nbin3=nbin3, detector=detector, dark_factor=dark_factor)  # fmt: skip

    def despike(self, *, n_sigma=5.0, size=3, replace="nan", dark_factor=2, local_scatter=True):
        """Remove cosmic-ray hits, returns (cleaned, spikes); see :func:`saffron_xr.despike`
        (lazy)."""
        from .prep import despike

        return despike(self._obj, n_sigma=n_sigma, size=size, replace=replace, dark_factor=dark_factor, local_scatter=local_scatter)  # fmt: skip

    def denoise(
        self,
        error,
        *,
        scales=3,
        spectral_scales=0,
        threshold=3.0,
        transform="2d1d",
        spatial_dims=("y", "x"),
    ):
        """Starlet denoising, returns a Dataset; see :func:`saffron_xr.denoise` (lazy)."""
        from .prep import denoise

        return denoise(self._obj, error, scales=scales, spectral_scales=spectral_scales, threshold=threshold, transform=transform, spatial_dims=spatial_dims)  # fmt: skip

    def bin(self, error=None, size=3, *, method="convolve", min_valid=0.5, match_pixel_scale=True):
        """NaN-aware spatial binning, returns a Dataset; see :func:`saffron_xr.bin_spatial`
        (lazy)."""
        from .prep import bin_spatial

        return bin_spatial(self._obj, error, size, method=method, min_valid=min_valid, match_pixel_scale=match_pixel_scale)  # fmt: skip

    def bin_levels(self, error, sizes=(1, 3, 5), *, min_valid=0.5, match_pixel_scale=True):
        """Binning levels stacked along ``level``; see :func:`saffron_xr.bin_levels` (lazy)."""
        from .prep import bin_levels

        return bin_levels(self._obj, error, sizes, min_valid=min_valid, match_pixel_scale=match_pixel_scale)  # fmt: skip

    # --- fit ---
    def fit(
        self,
        model,
        *,
        error=None,
        dim="wavelength",
        max_iter=100,
        ftol=1e-5,
        xtol=3e-3,
        min_valid=None,
        scale_errors=None,
        rescale_initial=True,
        level_dim="level",
        thresholds=None,
        noise=None,
        moments=True,
        detection_threshold=3.0,
        covariance=False,
    ):
        """Fit a LineModel to every spectrum; see :func:`saffron_xr.fit_lines` (lazy)."""
        from .fit import fit_lines

        return fit_lines(self._obj, model, error=error, dim=dim, max_iter=max_iter, ftol=ftol, xtol=xtol, min_valid=min_valid, scale_errors=scale_errors, rescale_initial=rescale_initial, level_dim=level_dim, thresholds=thresholds, noise=noise, moments=moments, detection_threshold=detection_threshold, covariance=covariance)  # fmt: skip

    # --- catalog ---
    def guess_model(
        self, catalog=None, *, error=None, options=None, return_report=False, **settings
    ):
        """Initial LineModel for this window; see :func:`saffron_xr.guess_model` (reads the
        mean spectrum). ``settings``: fields of :class:`saffron_xr.GuessOptions`."""
        from .catalog import guess_model

        return guess_model(self._obj, catalog, error=error, options=options, return_report=return_report, **settings)  # fmt: skip

    # --- io: sunpy ---
    def to_sunpy_map(self, *, wcs_source=None, cmap=None, norm=None):
        """A sunpy Map of this 2-D (y, x) map; see :func:`saffron_xr.to_sunpy_map` (computes)."""
        from .io.sunpy_map import to_sunpy_map

        return to_sunpy_map(self._obj, wcs_source=wcs_source, cmap=cmap, norm=norm)


@xr.register_dataset_accessor("saffron")
class SaffronDatasetAccessor(_PlotMethods, _WriteMethods):
    """Methods on a window Dataset or a fitted-parameter Dataset."""

    def __init__(self, obj):
        self._obj = obj

    # --- derive ---
    def radiance(self, *, mask="good"):
        """Line radiance and error; see :func:`saffron_xr.radiance` (lazy)."""
        from .derive import radiance

        return radiance(self._obj, mask=mask)

    def doppler_velocity(self, reference="median", *, mask="good"):
        """Doppler velocity and error; see :func:`saffron_xr.doppler_velocity` (lazy)."""
        from .derive import doppler_velocity

        return doppler_velocity(self._obj, reference=reference, mask=mask)

    def fwhm(self, *, mask="good"):
        """Line FWHM and error; see :func:`saffron_xr.fwhm` (lazy)."""
        from .derive import fwhm

        return fwhm(self._obj, mask=mask)

    def nonthermal_velocity(
        self, *, log_t=None, instrumental_fwhm=None, slit_width=None, detector=None, mask="good"
    ):
        """Non-thermal velocity; see :func:`saffron_xr.nonthermal_velocity` (lazy)."""
        from .derive import nonthermal_velocity

        return nonthermal_velocity(self._obj, log_t=log_t, instrumental_fwhm=instrumental_fwhm, slit_width=slit_width, detector=detector, mask=mask)  # fmt: skip

    def line_widths(self, *, log_t=None, instrumental_fwhm=None, nonthermal=None, mask="good"):
        """FWHM, thermal and non-thermal widths; see :func:`saffron_xr.line_widths` (lazy)."""
        from .derive import line_widths

        return line_widths(self._obj, log_t=log_t, instrumental_fwhm=instrumental_fwhm, nonthermal=nonthermal, mask=mask)  # fmt: skip

    def correct_doppler_gradient(
        self, *, reference_line=None, dim="x", degree=1, reference="median", mask="good"
    ):
        """Remove a velocity trend; see :func:`saffron_xr.correct_doppler_gradient` (lazy)."""
        from .derive import correct_doppler_gradient

        return correct_doppler_gradient(self._obj, reference_line=reference_line, dim=dim, degree=degree, reference=reference, mask=mask)  # fmt: skip

    def derive_all(
        self,
        *,
        doppler_reference="median",
        log_t=None,
        instrumental_fwhm=None,
        nonthermal=None,
        gradient=None,
        mask="good",
    ):
        """Parameters plus derived quantities; see :func:`saffron_xr.derive_all` (lazy)."""
        from .derive import derive_all

        return derive_all(self._obj, doppler_reference=doppler_reference, log_t=log_t, instrumental_fwhm=instrumental_fwhm, nonthermal=nonthermal, gradient=gradient, mask=mask)  # fmt: skip

    # --- io ---
    def reconstruct(self, data=None, *, window=None, wavelength=None, error=None):
        """Model cube and residuals; see :func:`saffron_xr.reconstruct` (lazy)."""
        from .io.reconstruct import reconstruct

        return reconstruct(self._obj, data, window=window, wavelength=wavelength, error=error)


@xr.register_datatree_accessor("saffron")
class SaffronDataTreeAccessor(_PlotMethods, _WriteMethods):
    """Methods on a DataTree of SPICE windows or of per-window results."""

    def __init__(self, obj):
        self._obj = obj

    # --- catalog ---
    def guess_models(self, catalog=None, *, windows=None, variable="radiance", error="error", errors="skip", options=None, **settings):  # fmt: skip
        """Initial LineModel of every window; see :func:`saffron_xr.catalog.guess_models`
        (reads one mean spectrum per window). ``settings``: fields of
        :class:`saffron_xr.GuessOptions`."""
        from .catalog import guess_models

        return guess_models(self._obj, catalog, windows=windows, variable=variable, error=error, errors=errors, options=options, **settings)  # fmt: skip


@xr.register_dataset_accessor("fip")
class FipDatasetAccessor:
    """FIP-bias (composition) methods on a fitted-parameter Dataset."""

    def __init__(self, obj):
        self._obj = obj

    # --- fip ---
    def lcr(
        self,
        low,
        high,
        density=1e9,
        *,
        dems=("quiet_sun", "active_region", "coronal_hole"),
        abundance="archive/sun_photospheric_2007_grevesse",
        contributions=None,
        regularization=0.0,
        xuvtop=None,
    ):
        """FIP-bias map by the LCR method; see :func:`saffron_xr.fip.lcr` (lazy)."""
        from .fip import lcr

        return lcr(self._obj, low, high, density, dems=dems, abundance=abundance, contributions=contributions, regularization=regularization, xuvtop=xuvtop)  # fmt: skip

    def two_line_ratio(
        self,
        low,
        high,
        density=1e9,
        *,
        dem="quiet_sun",
        abundance="archive/sun_photospheric_2007_grevesse",
        contributions=None,
        xuvtop=None,
    ):
        """FIP-bias map from one line ratio; see :func:`saffron_xr.fip.two_line_ratio` (lazy)."""
        from .fip import two_line_ratio

        return two_line_ratio(self._obj, low, high, density, dem=dem, abundance=abundance, contributions=contributions, xuvtop=xuvtop)  # fmt: skip
