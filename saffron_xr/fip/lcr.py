"""Linear Combination Ratio (LCR) coefficients for FIP-bias measurements.

Method of Zambrana Prado & Buchlin (2019, A&A 632, A20). With radiances
``I_i = Ab_i * integral G_i(T, n) DEM(T) dT``, a set of low-FIP lines ``l`` and high-FIP
lines ``h`` and coefficients ``c >= 0``, the FIP bias is estimated as

    f = sum_l c_l I_l / sum_h c_h I_h .

If every low-FIP element is enhanced by the same factor over its photospheric abundance, and
the high-FIP ones are not, ``f`` is that factor as long as ``sum_l c_l Ab_l^P G_l(T)`` and
``sum_h c_h Ab_h^P G_h(T)`` weigh the DEM alike. The coefficients are therefore chosen so that
``f = 1`` for each reference DEM with photospheric abundances (``Ab^P``): with ``x`` the
coefficients of the peak-normalised contribution functions ``G_i / max G_i``, the
non-negative least-squares problem

* one row per reference DEM ``k``: ``(sum_l x_l J_lk - sum_h x_h J_hk) / s_k = 0``, with
  ``J_ik = integral G_i DEM_k dT / max G_i`` and ``s_k`` the mean of ``J_hk``
  (a relative mismatch);
* a normalisation row ``sum_k sum_h x_h J_hk / s_k = K`` (the ratio is scale-free), weighted
  heavily;
* optionally (``regularization`` > 0) rows
  ``sqrt(lambda / N_T) (sum_l x_l G_l(T_t) - sum_h x_h G_h(T_t))`` for every grid temperature,
  which prefer combinations whose combined contribution functions have the same shape. They
  are off by default: on DEMs outside the reference set they do not help on average (see
  :data:`DEFAULT_REGULARIZATION` for what was measured),

is solved (``scipy.optimize.nnls``) independently for every density of the grid: a loop over
a few tens of densities, never over pixels. ``c_i = x_i / (max G_i Ab_i^P)``.

The two-line ratio method is the special case of one low-FIP and one high-FIP line and one
DEM (see :func:`two_line_coefficients`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import xarray as xr

from .abundance import DEFAULT_PHOTOSPHERIC, FIRST_IONISATION_POTENTIAL, element_of
from .abundance import read_abundance as _read_abundance
from .contribution import contribution_functions, interp_log_density
from .dem import REFERENCE_DEMS, dem_on_grid, integrate_dem

__all__ = [
    "lcr_coefficients",
    "two_line_coefficients",
    "DEFAULT_REGULARIZATION",
    "line_abundances",
]

#: Weight of the shape-matching rows relative to the reference-DEM rows (default 0: none).
#:
#: Measured by ``tests/test_fip_regularization.py`` (run it with ``-s`` for the table): the
#: S IV 750.22 + S V 786.47 / N III 991.58 + N IV 765.15 combination, a known FIP bias of 3
#: forward-modelled independently on the 10 distinct CHIANTI DEMs outside the reference set that
#: reach down to the lines' formation temperatures (``dem/`` and ``dem/version_3/``), at
#: n_e = 1e8, 1e9 and 1e10 cm-3. RMS relative error of the recovered bias: 0.0614 with 0 (and
#: 1e-4), 0.0619 with 1e-3, 0.0656 with 0.01 (the former default), 0.0737 with 0.1; mean
#: absolute error 0.041, 0.041, 0.044, 0.052 for 0, 1e-3, 0.01, 0.1. The shape rows are not
#: uniformly worse: with 0.01 the largest error is 0.131 instead of 0.147 (quiet_sun_cds) and
#: it is the better choice on 15 of the 30 cases, but it costs most where the error is
#: already largest (prominence 0.088 -> 0.110, AU_Mic 0.033 -> 0.047). With 0 the method is
#: the plain reference-DEM fit of Zambrana Prado & Buchlin (2019), the form an independent
#: implementation reproduces to 0.5 % (issue 12).
DEFAULT_REGULARIZATION = 0.0
#: Weight of the normalisation row (large: it is a constraint).
_NORMALISATION_WEIGHT = 1e3
#: W m-2 per erg cm-2 s-1.
ERG_CM2_TO_W_M2 = 1e-3


def as_line_list(lines) -> list[str]:
    """Line ids as a list of str (one id given as a str becomes a one-element list)."""
    if isinstance(lines, str):
        return [lines]
    return [str(line) for line in lines]


def line_abundances(lines, abundance=DEFAULT_PHOTOSPHERIC, *, xuvtop=None) -> xr.DataArray:
    """Abundance (relative to H) of the element of each line.

    Parameters
    ----------
    lines : sequence of str
        Line ids (``"ne_8 770.42"``).
    abundance : str or xarray.DataArray
        An abundance set name for :func:`~saffron_xr.fip.read_abundance`, or its result.
    xuvtop : str or path-like, optional
        CHIANTI folder to read the abundance file from.

    Returns
    -------
    xarray.DataArray
        Over ``line``, with coords ``element`` and ``fip`` (eV).
    """
    lines = as_line_list(lines)
    if not isinstance(abundance, xr.DataArray):
        abundance = _read_abundance(abundance, xuvtop=xuvtop)
    elements = [element_of(line.split()[0]) for line in lines]
    values = abundance.sel(element=elements).values
    if np.any(values <= 0):
        bad = [e for e, v in zip(elements, values, strict=True) if v <= 0]
        raise ValueError(
            f"abundance set {abundance.attrs.get('abundance_set', '?')} has no abundance "
            f"for {sorted(set(bad))}"
        )
    return xr.DataArray(
        values,
        dims="line",
        coords={
            "line": lines,
            "element": ("line", elements),
            "fip": (
                "line",
                [FIRST_IONISATION_POTENTIAL.get(e, np.nan) for e in elements],
                {"units": "eV"},
            ),
        },
        name="abundance",
        attrs={"units": "1", "abundance_set": abundance.attrs.get("abundance_set", "")},
    )


def _dem_stack(dems, temperature, xuvtop) -> xr.DataArray:
    """Reference DEMs on ``temperature``, dims (dem, temperature)."""
    if isinstance(dems, (str, xr.DataArray)):
        dems = [dems]
    from .dem import read_dem

    arrays, names = [], []
    for i, dem in enumerate(dems):
        da = dem if isinstance(dem, xr.DataArray) else read_dem(dem, xuvtop=xuvtop)
        if set(da.dims) != {"temperature"}:
            raise ValueError("each reference DEM must have the single dim 'temperature'")
        arrays.append(dem_on_grid(da, temperature))
        names.append(str(da.name) if da.name is not None else f"dem_{i}")
    if len(set(names)) != len(names):
        raise ValueError(f"reference DEM names must be unique, got {names}")
    return xr.concat(arrays, dim="dem").assign_coords(dem=names)


def _solve(j_low, j_high, g_low, g_high, regularization):
    """NNLS for one density. j_*: (line, dem), g_*: (line, temperature) peak-normalised."""
    from scipy.optimize import nnls

    n_dem = j_low.shape[1]
    scale = j_high.mean(axis=0)
    if np.any(~(scale > 0)):
        raise ValueError(
            "a reference DEM gives no emission in the high-FIP lines on this temperature "
            "grid; choose other DEMs or lines"
        )
    rows = [np.concatenate([j_low[:, k], -j_high[:, k]]) / scale[k] for k in range(n_dem)]
    rhs = [0.0] * n_dem
    norm = np.concatenate([np.zeros(j_low.shape[0]), (j_high / scale).sum(axis=1)])
    rows.append(_NORMALISATION_WEIGHT * norm)
    rhs.append(_NORMALISATION_WEIGHT * n_dem)
    if regularization > 0:
        n_t = g_low.shape[1]
        shape_rows = np.concatenate([g_low, -g_high], axis=0).T * np.sqrt(regularization / n_t)
        rows.extend(shape_rows)
        rhs.extend([0.0] * n_t)
    x, _ = nnls(np.asarray(rows), np.asarray(rhs), maxiter=50 * len(rows))
    return x


def _contributions_at(contributions: xr.DataArray, lines: list, density):
    """The lines' contribution functions at ``density`` (or on the grid), and their peaks.

    Returns ``(g, peak)`` with ``g`` of dims ``(line, density, temperature)`` and ``peak`` its
    maximum over temperature; missing lines, densities off the grid and lines with a zero
    contribution function raise ValueError.
    """
    missing = [line for line in lines if line not in contributions.indexes["line"]]
    if missing:
        raise ValueError(f"lines {missing} are not in the given contribution functions")
    g = contributions.sel(line=lines)
    if density is not None:
        target = np.atleast_1d(np.asarray(density, dtype=float))
        g = interp_log_density(g, target).rename(density_target="density")
        g = g.assign_coords(density=("density", target, {"units": "cm-3"}))
        if bool(g.isnull().any()):
            raise ValueError(
                f"density {density} is outside the contribution grid "
                f"({float(contributions.density.min()):.3g}-"
                f"{float(contributions.density.max()):.3g} cm-3)"
            )
    g = g.transpose("line", "density", "temperature")
    peak = g.max("temperature")
    if bool((peak <= 0).any()):
        bad = list(peak.line.values[(peak <= 0).any("density").values])
        raise ValueError(f"lines {bad} have zero contribution function on the grid")
    return g, peak


def lcr_coefficients(
    low: Sequence[str],
    high: Sequence[str],
    *,
    density=None,
    dems=REFERENCE_DEMS,
    abundance=DEFAULT_PHOTOSPHERIC,
    contributions: xr.DataArray | None = None,
    regularization: float = DEFAULT_REGULARIZATION,
    xuvtop=None,
) -> xr.Dataset:
    """Coefficients of the Linear Combination Ratio method, per density.

    Parameters
    ----------
    low, high : sequence of str
        Line ids of the low-FIP and high-FIP lines (e.g. ``["s_4 750.22", "s_5 786.47"]`` and
        ``["n_3 991.58", "n_4 765.15"]``).
    density : float or array-like, optional
        Electron densities (cm-3) to compute the coefficients at (contribution functions
        interpolated linearly in log n). Default: every density of the contribution grid.
    dems : sequence of str or xarray.DataArray
        Reference DEMs (names for :func:`~saffron_xr.fip.read_dem` or DataArrays over
        ``temperature``). Default: quiet Sun, active region, coronal hole.
    abundance : str or xarray.DataArray
        Reference (photospheric) abundance set; the FIP bias is relative to it.
    contributions : xarray.DataArray, optional
        Contribution functions holding all the lines (dims ``line, density, temperature``);
        default :func:`~saffron_xr.fip.contribution_functions` on the standard grid.
    regularization : float, default 0
        Weight of the shape-matching rows (0: fit the reference DEMs only). The default and
        the measurement behind it: :data:`DEFAULT_REGULARIZATION`.
    xuvtop : str or path-like, optional
        CHIANTI database folder (contribution functions, DEMs and abundances).

    Returns
    -------
    xarray.Dataset
        ``coefficient`` (line, density): multiplies radiances in W m-2 sr-1 (overall scale
        arbitrary), with coord ``group`` (``"low"``/``"high"``) on ``line``;
        ``reference_ratio`` (dem, density): the estimate for each reference DEM with the
        reference abundances, ideally 1. Settings in attrs.

    Examples
    --------
    >>> c = lcr_coefficients(["s_4 750.22", "s_5 786.47"], ["n_3 991.58", "n_4 765.15"],
    ...                      density=1e9)
    >>> bool(abs(c.reference_ratio - 1).max() < 0.01)
    True
    """
    low, high = as_line_list(low), as_line_list(high)
    if not low or not high:
        raise ValueError("the LCR method needs at least one low-FIP and one high-FIP line")
    if set(low) & set(high):
        raise ValueError(f"lines {sorted(set(low) & set(high))} are both low- and high-FIP")
    lines = low + high
    if contributions is None:
        contributions = contribution_functions(lines, xuvtop=xuvtop)
    g, peak = _contributions_at(contributions, lines, density)
    g_norm = g / peak
    dem_stack = _dem_stack(dems, g["temperature"].values, xuvtop)
    j = integrate_dem(g_norm, dem_stack).transpose("line", "density", "dem").values
    gv = g_norm.values
    n_low = len(low)
    x = np.empty((len(lines), g.sizes["density"]))
    for i in range(g.sizes["density"]):
        x[:, i] = _solve(
            j[:n_low, i], j[n_low:, i], gv[:n_low, i], gv[n_low:, i], float(regularization)
        )
    ratio = np.einsum("ld,ldk->kd", x[:n_low], j[:n_low]) / np.einsum(
        "ld,ldk->kd", x[n_low:], j[n_low:]
    )
    ab = line_abundances(lines, abundance, xuvtop=xuvtop)
    coefficient = x / (peak.values * ab.values[:, None] * ERG_CM2_TO_W_M2)
    coords = {"line": lines, "density": g["density"]}
    attrs = {
        "method": "LCR, Zambrana Prado & Buchlin 2019, A&A 632, A20",
        "low_fip_lines": json.dumps(low),
        "high_fip_lines": json.dumps(high),
        "reference_dems": json.dumps([str(d) for d in dem_stack["dem"].values]),
        "abundance": ab.attrs["abundance_set"],
        "regularization": float(regularization),
        **_provenance(contributions),
    }
    return xr.Dataset(
        {
            "coefficient": xr.DataArray(
                coefficient,
                dims=("line", "density"),
                coords=coords,
                attrs={
                    "units": "m2 sr W-1",
                    "long_name": "LCR coefficient applied to line radiance",
                    "note": "overall scale arbitrary: only the ratio matters",
                },
            ).assign_coords(
                group=("line", ["low"] * n_low + ["high"] * len(high)),
                element=ab["element"],
            ),
            "reference_ratio": xr.DataArray(
                ratio,
                dims=("dem", "density"),
                coords={"dem": dem_stack["dem"].values, "density": g["density"]},
                attrs={
                    "units": "1",
                    "long_name": "LCR estimate for each reference DEM with reference "
                    "abundances (ideally 1)",
                },
            ),
        },
        attrs=attrs,
    )


def two_line_coefficients(
    low: str,
    high: str,
    *,
    density=None,
    dem="quiet_sun",
    abundance=DEFAULT_PHOTOSPHERIC,
    contributions: xr.DataArray | None = None,
    xuvtop=None,
) -> xr.Dataset:
    """Coefficients of the two-line ratio method: ``f = c_l I_l / (c_h I_h)``.

    The ratio is normalised so that ``f = 1`` for the given DEM with the reference
    abundances: ``c_i = 1 / (Ab_i integral G_i DEM dT)``, up to a common factor.

    Parameters
    ----------
    low, high : str
        The low-FIP and the high-FIP line ids (e.g. ``"mg_9 706.06"``, ``"ne_8 770.42"``).
    density, abundance, contributions, xuvtop
        As for :func:`lcr_coefficients`.
    dem : str or xarray.DataArray
        The DEM assumed for the plasma (default quiet Sun).

    Returns
    -------
    xarray.Dataset
        Same layout as :func:`lcr_coefficients`.
    """
    out = lcr_coefficients(
        [low],
        [high],
        density=density,
        dems=[dem],
        abundance=abundance,
        contributions=contributions,
        regularization=0.0,
        xuvtop=xuvtop,
    )
    out.attrs["method"] = "two-line ratio normalised with one DEM"
    return out


def _provenance(contributions: xr.DataArray) -> dict:
    keys = ("chianti_version", "chiantipy_version", "ioneq", "database_sha256", "database")
    return {f"contribution_{k}": contributions.attrs[k] for k in keys if k in contributions.attrs}
