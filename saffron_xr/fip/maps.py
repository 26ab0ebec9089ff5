"""FIP-bias maps from fitted line parameters (or line radiances), lazily over (y, x).

The input is the fitter's parameter Dataset (dims ``line, y, x``; ``amplitude`` in
W m-2 sr-1 nm-1 and ``width``, the Gaussian sigma, in Angstrom, each with ``_err``) or a
Dataset with ``radiance`` and ``radiance_err`` (W m-2 sr-1) over ``line``. The map is a
ratio of linear combinations of the radiances (:mod:`saffron_xr.fip.lcr`); its error is the
linear propagation of the radiance errors, taken as independent. Nothing is computed here
beyond the (small) coefficients: with dask-backed inputs the outputs are dask-backed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import xarray as xr

from .abundance import DEFAULT_PHOTOSPHERIC
from .contribution import density_weights
from .dem import REFERENCE_DEMS
from .lcr import DEFAULT_REGULARIZATION, as_line_list, lcr_coefficients, two_line_coefficients

__all__ = ["lcr", "two_line_ratio", "line_radiance"]


def line_radiance(params: xr.Dataset, lines: Sequence[str] | None = None) -> xr.Dataset:
    """Line radiances and their 1-sigma errors, in W m-2 sr-1.

    Parameters
    ----------
    params : xarray.Dataset
        Either holds ``radiance`` and ``radiance_err`` over ``line`` (used as they are), or
        the fitted ``amplitude``, ``width`` (Gaussian sigma) and their ``_err``, from which
        :func:`saffron_xr.radiance` computes them with its default mask: only lines that are
        detected, converged and not at a bound keep a radiance, so the FIP bias is NaN
        wherever one of its lines is not (the rule is in ``mask_rule`` of the radiance).
    lines : sequence of str, optional
        Restrict to these line ids (others are never touched).

    Returns
    -------
    xarray.Dataset
        ``radiance`` and ``radiance_err`` over ``line`` and the pixel dims; lazy if the input
        is.
    """
    if "line" not in params.dims:
        raise ValueError(
            "FIP maps need a Dataset with a 'line' dimension: the fitted parameters "
            f"(amplitude, width, ...) or line radiances; got dims {tuple(params.dims)}"
        )
    if lines is not None:
        lines = as_line_list(lines)
        missing = [line for line in lines if line not in params.indexes["line"]]
        if missing:
            raise KeyError(
                f"lines {missing} are not in the Dataset (its lines: "
                f"{[str(v) for v in params['line'].values]})"
            )
        params = params.sel(line=lines)
    if "radiance" in params.data_vars:
        if "radiance_err" not in params.data_vars:
            raise ValueError("the Dataset has 'radiance' but no 'radiance_err'")
        return params[["radiance", "radiance_err"]]
    needed = ["amplitude", "width", "amplitude_err", "width_err"]
    absent = [name for name in needed if name not in params.data_vars]
    if absent:
        raise ValueError(
            f"cannot compute line radiances: variables {absent} are missing (need "
            "radiance/radiance_err, or amplitude, width and their _err)"
        )
    from ..derive import radiance

    out = radiance(params)
    units = out["radiance"].attrs.get("units")
    if units != "W m-2 sr-1":
        raise ValueError(
            f"line radiances come out in {units!r}, not W m-2 sr-1: check the units attrs "
            "of amplitude (W m-2 sr-1 nm-1) and width (Angstrom)"
        )
    return out[["radiance", "radiance_err"]]


def _fip_map(params, low, high, density, coefficients: xr.Dataset, method: str) -> xr.Dataset:
    lines = low + high
    rad = line_radiance(params, lines)
    coef = coefficients["coefficient"].reset_coords(drop=True)
    if isinstance(density, xr.DataArray):
        weights = density_weights(coef["density"].values, density)
        coef = xr.dot(coef.drop_vars("density"), weights, dim="density")
        coef = coef.where(weights.sum("density") > 0)
        density_attr = "map"
    else:
        coef = coef.isel(density=0, drop=True)
        density_attr = float(density)
    weighted = coef * rad["radiance"]
    weighted_err = coef * rad["radiance_err"]
    numerator = weighted.sel(line=low).sum("line", skipna=False)
    denominator = weighted.sel(line=high).sum("line", skipna=False)
    fip = (numerator / denominator).where(denominator > 0)
    relative_var = (weighted_err.sel(line=low) ** 2).sum("line", skipna=False) / numerator**2 + (
        weighted_err.sel(line=high) ** 2
    ).sum("line", skipna=False) / denominator**2
    fip_err = np.abs(fip) * np.sqrt(relative_var)
    c = coefficients["coefficient"]
    coef_attr = {"density": c["density"].values.tolist()} | {
        str(line): c.sel(line=line).values.tolist() for line in lines
    }
    attrs = dict(coefficients.attrs)
    attrs.update(
        method=method,
        density=density_attr,
        coefficients=json.dumps(coef_attr),
        reference_ratio=json.dumps(
            {
                str(d): coefficients["reference_ratio"].sel(dem=d).values.tolist()
                for d in coefficients["dem"].values
            }
        ),
    )
    from .._meta import __version__

    attrs["saffron_xr_version"] = __version__
    out = xr.Dataset(
        {
            "fip_bias": fip.assign_attrs(
                units="1", long_name="FIP bias (low-FIP / high-FIP, relative to reference)"
            ),
            "fip_bias_err": fip_err.assign_attrs(
                units="1", long_name="1-sigma error of the FIP bias (radiance errors only)"
            ),
        },
        attrs=attrs,
    )
    return out


def lcr(
    params: xr.Dataset,
    low: Sequence[str],
    high: Sequence[str],
    density=1e9,
    *,
    dems=REFERENCE_DEMS,
    abundance=DEFAULT_PHOTOSPHERIC,
    contributions: xr.DataArray | None = None,
    regularization: float = DEFAULT_REGULARIZATION,
    xuvtop=None,
) -> xr.Dataset:
    """FIP-bias map by the Linear Combination Ratio method (Zambrana Prado & Buchlin 2019).

    Parameters
    ----------
    params : xarray.Dataset
        Fitted parameters (dims ``line, y, x``) or line radiances; see :func:`line_radiance`.
    low, high : sequence of str
        Low-FIP and high-FIP line ids, e.g. ``["s_4 750.22", "s_5 786.47"]`` and
        ``["n_3 991.58", "n_4 765.15"]``.
    density : float or xarray.DataArray
        Electron density (cm-3): one value, or a map (e.g. dims ``(y, x)``, may be dask) for
        which the coefficients computed on the density grid are interpolated per pixel
        (linear in log n; NaN outside the grid).
    dems, abundance, contributions, regularization, xuvtop
        As for :func:`~saffron_xr.fip.lcr_coefficients`.

    Returns
    -------
    xarray.Dataset
        ``fip_bias`` and ``fip_bias_err`` (dimensionless) over the pixel dims; NaN where the
        high-FIP combination is not positive or a radiance is NaN. The attrs hold the method,
        lines, density, coefficients and reference-DEM ratios (JSON), abundance set,
        contribution-function provenance and package version.

    Examples
    --------
    >>> from saffron_xr.fip import forward_radiances
    >>> lines = ["s_4 750.22", "s_5 786.47", "n_3 991.58", "n_4 765.15"]
    >>> rad = forward_radiances("quiet_sun", lines, fip_bias=3.0)
    >>> ds = xr.Dataset({"radiance": rad, "radiance_err": 0.01 * rad})
    >>> out = lcr(ds, ["s_4 750.22", "s_5 786.47"], ["n_3 991.58", "n_4 765.15"])
    >>> round(float(out.fip_bias), 2)
    3.0
    """
    low, high = as_line_list(low), as_line_list(high)
    coefficients = lcr_coefficients(
        low,
        high,
        density=None if isinstance(density, xr.DataArray) else density,
        dems=dems,
        abundance=abundance,
        contributions=contributions,
        regularization=regularization,
        xuvtop=xuvtop,
    )
    return _fip_map(params, low, high, density, coefficients, coefficients.attrs["method"])


def two_line_ratio(
    params: xr.Dataset,
    low: str,
    high: str,
    density=1e9,
    *,
    dem="quiet_sun",
    abundance=DEFAULT_PHOTOSPHERIC,
    contributions: xr.DataArray | None = None,
    xuvtop=None,
) -> xr.Dataset:
    """FIP-bias map from the ratio of one low-FIP and one high-FIP line.

    ``f = (I_low / I_high) / R``, where ``R`` is the ratio expected for the given DEM with
    the reference abundances.

    Parameters
    ----------
    params : xarray.Dataset
        Fitted parameters or line radiances; see :func:`line_radiance`.
    low, high : str
        The two line ids, e.g. ``"mg_9 706.06"`` and ``"ne_8 770.42"``.
    density : float or xarray.DataArray
        Electron density (cm-3), one value or a map.
    dem : str or xarray.DataArray
        DEM assumed for the plasma (default quiet Sun).
    abundance, contributions, xuvtop
        As for :func:`lcr`.

    Returns
    -------
    xarray.Dataset
        ``fip_bias`` and ``fip_bias_err``, as for :func:`lcr`.
    """
    coefficients = two_line_coefficients(
        str(low),
        str(high),
        density=None if isinstance(density, xr.DataArray) else density,
        dem=dem,
        abundance=abundance,
        contributions=contributions,
        xuvtop=xuvtop,
    )
    return _fip_map(
        params, [str(low)], [str(high)], density, coefficients, coefficients.attrs["method"]
    )
