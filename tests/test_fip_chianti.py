"""Contribution functions computed with ChiantiPy from the CHIANTI subset (``xuvtop`` fixture).

ChiantiPy runs in a child process with its own empty ``HOME``; the cache goes to a temporary
folder. ``pytest -s`` prints the peak temperatures and the table-vs-fresh differences.
"""

from __future__ import annotations

import numpy as np
import pytest

from saffron_xr import fip
from saffron_xr.fip import contribution

ACCEPTANCE = {  # line id -> expected peak log T (issue 8)
    "s_4 750.22": 5.1,
    "s_5 786.47": 5.2,
    "n_4 765.15": 5.2,
    "n_3 991.58": 4.95,
    "ne_8 770.42": 5.8,
    "mg_9 706.06": 6.0,
}
DENSITIES = [1e9, 1e11]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("saffron_cache")


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch, cache):
    monkeypatch.setenv("SAFFRON_CACHE_DIR", str(cache))


@pytest.fixture(scope="module")
def fresh(xuvtop, cache):
    """The acceptance lines on the table's temperatures and two of its densities."""
    table = fip.load_contribution_table()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SAFFRON_CACHE_DIR", str(cache))
        return fip.contribution_functions(
            list(ACCEPTANCE),
            temperature=table.temperature.values,
            density=DENSITIES,
            xuvtop=xuvtop,
        )


def test_peak_temperatures(fresh):
    peaks = np.log10(fresh.sel(density=1e9).idxmax("temperature"))
    print("\nChiantiPy with XUVTOP=../shared/chianti, peak log T at n_e = 1e9:")
    for line, expected in ACCEPTANCE.items():
        got = float(peaks.sel(line=line))
        print(f"  {line:<12s} {got:.2f} (expected {expected})  [{fresh.transitions.sel(line=line).item()}]")  # fmt: skip
        assert got == pytest.approx(expected, abs=0.1), line
    assert fresh.attrs["chianti_version"] == "10.1"
    assert fresh.attrs["chiantipy_version"]
    assert fresh.attrs["database_sha256"]


def test_shipped_table_matches_fresh_computation(fresh):
    table = fip.load_contribution_table().sel(line=list(ACCEPTANCE), density=DENSITIES)
    significant = table.values > 1e-6 * table.values.max(axis=-1, keepdims=True)
    rel = np.abs(fresh.values / np.where(significant, table.values, 1.0) - 1)[significant]
    absolute = np.abs(fresh.values - table.values).max(axis=-1) / table.values.max(axis=-1)
    print(f"\nshipped table vs fresh ChiantiPy: max relative difference {rel.max():.2e} "
          f"(points above 1e-6 of the peak), max |diff|/peak {absolute.max():.2e}")  # fmt: skip
    assert rel.max() < 1e-6
    assert absolute.max() < 1e-6
    np.testing.assert_array_equal(table.transitions.values, fresh.transitions.values)


def test_cache_is_used_and_not_in_working_directory(xuvtop, cache, monkeypatch, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    # a stray chiantirc in the user's HOME must not matter
    (tmp_path / "home" / ".chianti").mkdir(parents=True)
    (tmp_path / "home" / ".chianti" / "chiantirc").write_text(
        "[chianti]\nabundfile = no_such_file\nioneqfile = no_such_ioneq\nwavelength = nm\n"
    )
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    kwargs = dict(temperature=10 ** np.array([5.0, 5.2]), density=[1e9], xuvtop=xuvtop)
    first = fip.contribution_functions(["n_4 765.15"], **kwargs)
    entries = list((cache / "contribution").glob("*.nc"))
    assert entries, "a cache entry was written"

    def no_chiantipy(*args, **kw):
        raise AssertionError("ChiantiPy ran although the result was cached")

    monkeypatch.setattr(contribution, "_run_chiantipy", no_chiantipy)
    again = fip.contribution_functions(["n_4 765.15"], **kwargs)
    np.testing.assert_array_equal(first.values, again.values)
    assert list(work.iterdir()) == [], "nothing is written to the working directory"
    # the same numbers as the shipped table (chiantirc ignored: same ioneq and wavelength unit)
    table = fip.load_contribution_table().sel(line="n_4 765.15", density=1e9)
    np.testing.assert_allclose(first.values[0, 0], table.sel(temperature=first.temperature).values, rtol=1e-6)  # fmt: skip


def test_line_outside_table_and_env_var(xuvtop, monkeypatch):
    """O IV 554.51 is not a SPICE line: it needs CHIANTI, found through $XUVTOP."""
    monkeypatch.setenv("XUVTOP", str(xuvtop))
    g = fip.contribution_functions(
        {"o_4 554.51": 554.513}, temperature=10 ** np.arange(4.9, 5.61, 0.1), density=[1e9]
    )
    peak = float(np.log10(g.idxmax("temperature")[0, 0]))
    print(f"\nO IV 554.51 via $XUVTOP: peak log T {peak:.1f}; {g.transitions.item()}")
    assert g.attrs["units"] == "erg cm3 s-1 sr-1"
    assert 5.0 <= peak <= 5.3
    assert g.rest_wavelength.item() == 554.513


def test_request_errors_are_clear(xuvtop):
    with pytest.raises(ValueError, match="no s_5 transition within"):
        fip.contribution_functions(["s_5 700.00"], density=[1e9], temperature=[2e5], xuvtop=xuvtop)  # fmt: skip
    with pytest.raises(ValueError, match="not in .*masterlist"):
        fip.contribution_functions(["ca_10 557.77"], density=[1e9], temperature=[6e5], xuvtop=xuvtop)  # fmt: skip
    with pytest.raises(ValueError, match="abundance file"):
        fip.contribution_functions(["ne_8 770.42"], abundance="no_such", xuvtop=xuvtop)


@pytest.mark.slow
def test_whole_shipped_table_matches_fresh_computation(xuvtop):
    """Every line of the table, at a few temperatures around its peak and two densities."""
    table = fip.load_contribution_table()
    temperature = table.temperature.values[::5]
    density = table.density.values[[4, 12]]
    fresh = fip.contribution_functions(
        dict(zip(table.line.values, table.rest_wavelength.values, strict=True)),
        temperature=temperature,
        density=density,
        xuvtop=xuvtop,
    )
    ref = table.sel(temperature=temperature, density=density)
    scale = ref.max("temperature")
    diff = float((np.abs(fresh - ref) / scale).max())
    print(f"\nall {table.sizes['line']} table lines: max |fresh - table| / peak = {diff:.2e}")
    assert diff < 1e-6
