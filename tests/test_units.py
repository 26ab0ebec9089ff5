"""The one wavelength-unit helper: every spelling the package meets, checked by hand."""

import pytest

from saffron_xr._units import angstrom_factor, is_angstrom


@pytest.mark.parametrize(
    "unit, factor",
    [
        ("Angstrom", 1.0),
        ("AA", 1.0),
        ("\u00c5", 1.0),
        ("0.1 nm", 1.0),
        ("nm", 10.0),
        ("m", 1e10),
        ("pm", 0.01),
        ("100 pm", 1.0),
        ("micron", 1e4),
        (None, 1.0),
        ("", 1.0),
    ],
)
def test_factor_of_each_spelling(unit, factor):
    assert angstrom_factor(unit) == pytest.approx(factor, rel=1e-12)


def test_not_a_length_is_none_and_not_angstrom():
    assert angstrom_factor("s") is None
    assert angstrom_factor("W m-2 sr-1 nm-1") is None
    assert angstrom_factor("no such unit") is None
    assert not is_angstrom("nm")
    assert is_angstrom("0.1 nm") and is_angstrom("AA")


def test_default_applies_to_missing_unit():
    assert angstrom_factor(None, default="nm") == 10.0
    assert not is_angstrom("", default="nm")


def test_fit_lines_and_guess_accept_the_same_spellings():
    # the two entry points that demand Angstrom agree (they disagreed on "0.1 nm" before)
    import numpy as np
    import xarray as xr

    from saffron_xr.catalog.guess import guess_model

    wave = np.linspace(769.0, 771.0, 40)
    cube = xr.DataArray(
        np.exp(-0.5 * ((wave - 770.0) / 0.3) ** 2)[None, None, :] * np.ones((3, 3, 1)) + 0.01,
        dims=("y", "x", "wavelength"),
        coords={"wavelength": ("wavelength", wave, {"units": "0.1 nm"})},
        name="Ne VIII 770",
    )
    guess_model(cube)  # does not raise on "0.1 nm"
    cube.wavelength.attrs["units"] = "nm"
    with pytest.raises(ValueError, match="convert it to Angstrom"):
        guess_model(cube)
