"""Child-process side of the ChiantiPy computation (run as a script, never imported).

ChiantiPy reads ``XUVTOP`` and ``~/.chianti/chiantirc`` once, when it is first imported, prints
to stdout and may prompt on stdin. The parent (:mod:`saffron_xr.fip.contribution`) therefore
runs this file in a fresh interpreter with ``XUVTOP`` set, ``HOME`` pointing to an empty
temporary folder (so ChiantiPy's built-in defaults apply: ``chianti.ioneq``), stdin closed and
stdout captured. This script depends only on numpy and ChiantiPy.

Usage: ``python _chianti_worker.py request.json result.npz``

The request holds ``temperature`` (K) and ``density`` (cm-3) lists, ``abundance`` (a path
relative to ``$XUVTOP/abundance``, with its extension), ``tolerance`` and ``blend_width``
(Angstrom) and ``lines``: a list of ``[ion, wavelength]``. The result holds
``contribution`` with shape (line, density, temperature) in erg cm3 s-1 sr-1 (abundance
excluded) and ``matches``, a JSON string describing the CHIANTI transitions used per line.
"""

import json
import sys

import numpy as np

#: Marks a request error on stderr (exit status 2).
ERROR_PREFIX = "saffron_xr request error: "


class RequestError(ValueError):
    """The request cannot be served (unknown ion, no matching transition, ...)."""


def _ion_contributions(ch, ion, wavelengths, temperature_grid, density_grid, request):
    """Contribution functions of the lines ``wavelengths`` of one ion, shape (line, n, T)."""
    shape = (density_grid.size, temperature_grid.size)
    temperature = np.tile(temperature_grid, density_grid.size)
    density = np.repeat(density_grid, temperature_grid.size)
    if temperature.size == 1:  # ChiantiPy's single-point path fails for some ions: use two
        temperature, density = np.repeat(temperature, 2), np.repeat(density, 2)
    obj = ch.ion(ion, temperature=temperature, eDensity=density, abundance=request["abundance"])
    if not hasattr(obj, "Wgfa"):
        raise RequestError(f"ion {ion} has no level data in the CHIANTI masterlist")
    if not obj.Abundance > 0:
        raise RequestError(
            f"abundance file {request['abundance']} gives no abundance for the element of {ion}"
        )
    obj.intensity()
    intensity = obj.Intensity
    wgfa_wvl = np.abs(np.asarray(obj.Wgfa["wvl"], dtype=float))
    keep = wgfa_wvl != 0.0  # two-photon decays have wvl 0; ChiantiPy drops them too
    wvl = wgfa_wvl[keep]
    lvl1 = np.asarray(obj.Wgfa["lvl1"])[keep]
    lvl2 = np.asarray(obj.Wgfa["lvl2"])[keep]
    if "wvl" in intensity:
        values = np.atleast_2d(np.asarray(intensity["intensity"], dtype=float))
        values = values.reshape(temperature.size, -1)[: shape[0] * shape[1]] / obj.Abundance
    else:  # ion fraction zero over the whole grid: ChiantiPy returns no line list
        values = np.zeros((shape[0] * shape[1], wvl.size))
    out = np.zeros((len(wavelengths), *shape))
    matches = []
    for i, target in enumerate(wavelengths):
        distance = np.abs(wvl - target)
        nearest = int(np.argmin(distance))
        if distance[nearest] > request["tolerance"]:
            raise RequestError(
                f"no {ion} transition within {request['tolerance']} A of {target} A "
                f"(nearest: {wvl[nearest]:.4f} A)"
            )
        members = np.flatnonzero(np.abs(wvl - wvl[nearest]) <= request["blend_width"])
        out[i] = values[:, members].sum(axis=1).reshape(shape)
        matches.append(
            [
                {"lvl1": int(lvl1[m]), "lvl2": int(lvl2[m]), "wavelength": float(wvl[m])}
                for m in members
            ]
        )
    return out, matches


def main(request_path, result_path):
    with open(request_path) as f:
        request = json.load(f)
    import ChiantiPy
    import ChiantiPy.core as ch
    import ChiantiPy.tools.data as chdata

    temperature = np.asarray(request["temperature"], dtype=float)
    density = np.asarray(request["density"], dtype=float)
    by_ion = {}
    for index, (ion, wavelength) in enumerate(request["lines"]):
        by_ion.setdefault(ion, []).append((index, float(wavelength)))
    missing = sorted(ion for ion in by_ion if ion not in chdata.MasterList)
    if missing:
        raise RequestError(f"ions {missing} are not in $XUVTOP/masterlist/masterlist.ions")
    result = np.zeros((len(request["lines"]), density.size, temperature.size))
    matches = [None] * len(request["lines"])
    for ion, entries in by_ion.items():
        values, found = _ion_contributions(
            ch, ion, [w for _, w in entries], temperature, density, request
        )
        for k, (index, _) in enumerate(entries):
            result[index] = values[k]
            matches[index] = found[k]
    np.savez(
        result_path,
        contribution=result,
        matches=json.dumps(matches),
        chiantipy_version=str(ChiantiPy.__version__),
        chianti_version=str(chdata.ChiantiVersion),
        ioneq=str(chdata.Defaults["ioneqfile"]),
    )


if __name__ == "__main__":
    try:
        main(sys.argv[1], sys.argv[2])
    except RequestError as exc:  # a problem with the request: the parent re-raises it
        sys.stderr.write(f"\n{ERROR_PREFIX}{exc}\n")
        sys.exit(2)
