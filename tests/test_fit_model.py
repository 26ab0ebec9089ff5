"""LineModel: building, validation errors at build time, the tie map, JSON round trips."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import xarray as xr

from saffron_xr import LineModel


def two_lines(**kw) -> LineModel:
    m = LineModel(**kw)
    m.add_line(
        "ne_8 770.42",
        amplitude=1.0,
        centroid=770.1,
        width=0.2,
        bounds={"centroid": (769.6, 770.6), "width": (0.05, 0.6)},
    )
    m.add_line("mg_8 769.38", amplitude=0.3, centroid=769.1, width=0.2)
    return m


def test_lines_names_ion_and_rest_wavelength_parsed():
    m = two_lines()
    assert m.lines == ["ne_8 770.42", "mg_8 769.38"]
    info = m.line_info("ne_8 770.42")
    assert info["ion"] == "ne_8"
    assert info["rest_wavelength"] == pytest.approx(770.42)
    assert info["bounds"]["amplitude"] == (0.0, math.inf)
    assert m.n_full == 7 and m.n_free == 7


def test_explicit_ion_and_rest_wavelength_win_over_name():
    m = LineModel()
    m.add_line(
        "blend A", ion="o_4", rest_wavelength=787.71, amplitude=1, centroid=787.5, width=0.2
    )
    assert m.line_info("blend A")["ion"] == "o_4"
    assert m.line_info("blend A")["rest_wavelength"] == 787.71


def test_constructor_lines_list():
    m = LineModel(
        lines=[{"name": "ne_8 770.42", "amplitude": 1.0, "centroid": 770.1, "width": 0.2}],
        background_degree=2,
    )
    assert m.lines == ["ne_8 770.42"]
    assert m.n_full == 3 + 3


@pytest.mark.parametrize("degree", [3, -1, 1.5])
def test_degree_out_of_range_raises(degree):
    with pytest.raises(ValueError, match="background_degree must be 0, 1 or 2"):
        LineModel(background_degree=degree)


def test_tie_to_missing_line_raises():
    m = two_lines()
    with pytest.raises(ValueError, match="no line named 'fe_8 000'"):
        m.tie_width("mg_8 769.38", "fe_8 000")
    with pytest.raises(ValueError, match="no line named 'nope'"):
        m.tie_centroid("nope", "ne_8 770.42", 0.1)


def test_tie_cycle_raises_and_leaves_model_unchanged():
    m = two_lines()
    m.add_line("o_4 769.0", amplitude=0.1, centroid=769.5, width=0.2)
    m.tie_width("mg_8 769.38", "ne_8 770.42")
    m.tie_width("o_4 769.0", "mg_8 769.38")
    before = m.to_dict()
    with pytest.raises(ValueError, match="cycle"):
        m.tie_width("ne_8 770.42", "o_4 769.0")
    assert m.to_dict() == before
    with pytest.raises(ValueError, match="itself"):
        m.tie_amplitude("ne_8 770.42", "ne_8 770.42", 1.0)


def test_bounds_excluding_initial_value_raise():
    m = LineModel()
    with pytest.raises(ValueError, match="outside its bounds"):
        m.add_line("ne_8 770.42", amplitude=1, centroid=771.5, width=0.2,
                   bounds={"centroid": (769.6, 770.6)})  # fmt: skip
    with pytest.raises(ValueError, match="lo < hi"):
        m.add_line("ne_8 770.42", amplitude=1, centroid=770, width=0.2,
                   bounds={"centroid": (771, 770)})  # fmt: skip
    with pytest.raises(ValueError, match="must be > 0"):
        m.add_line("ne_8 770.42", amplitude=1, centroid=770, width=0.2, bounds={"width": (0, 1)})
    with pytest.raises(ValueError, match="unknown bound kind"):
        m.add_line("ne_8 770.42", amplitude=1, centroid=770, width=0.2, bounds={"sigma": (0, 1)})
    assert m.lines == []


def test_tie_that_pushes_root_out_of_bounds_raises():
    m = two_lines()
    # mg_8 centroid bounds are unbounded, ne_8's are (769.6, 770.6): tying ne_8 to mg_8
    # with offset +1 puts ne_8 at 770.1 when mg_8 is at 769.1, fine ...
    m.tie_centroid("ne_8 770.42", "mg_8 769.38", 1.0)
    # ... but an offset that maps mg_8's initial 769.1 to 772.1 contradicts ne_8's bounds
    m2 = two_lines()
    with pytest.raises(ValueError, match="outside the bounds"):
        m2.tie_centroid("ne_8 770.42", "mg_8 769.38", 3.0)


def test_fix_outside_bounds_and_conflicts_raise():
    m = two_lines()
    with pytest.raises(ValueError, match="outside its bounds"):
        m.fix("ne_8 770.42", "width", 0.9)
    m.fix("ne_8 770.42", "width", 0.25)
    with pytest.raises(ValueError, match="fixed; it cannot also be tied"):
        m.tie_width("ne_8 770.42", "mg_8 769.38")
    m.tie_centroid("mg_8 769.38", "ne_8 770.42")
    with pytest.raises(ValueError, match="cannot also be fixed"):
        m.fix("mg_8 769.38", "centroid", 769.0)
    with pytest.raises(ValueError, match="already tied"):
        m.tie_centroid("mg_8 769.38", "ne_8 770.42", 0.5)
    with pytest.raises(ValueError, match="parameter must be one of"):
        m.fix("ne_8 770.42", "fwhm", 0.5)


@pytest.mark.parametrize(
    ("method", "args"),
    [("tie_width", (0.0,)), ("tie_width", (-1.0,)), ("tie_amplitude", (0.0,))],
)
def test_bad_tie_values_raise(method, args):
    m = two_lines()
    with pytest.raises(ValueError, match="factor|ratio"):
        getattr(m, method)("mg_8 769.38", "ne_8 770.42", *args)


def test_segments_validation():
    with pytest.raises(ValueError, match="overlap"):
        LineModel(segments=[(700, 705), (704, 710)])
    with pytest.raises(ValueError, match="wmin < wmax"):
        LineModel(segments=[(705, 700)])
    m = LineModel(segments=[(770, 775), (700, 705)], background_degree=1)
    assert m.n_segments == 2 and m.n_full == 4


def test_transform_implements_ties_and_fixes():
    m = two_lines()
    m.add_line("o_4 769.0", amplitude=0.1, centroid=769.5, width=0.2)
    m.tie_centroid("mg_8 769.38", "ne_8 770.42")  # default offset: rest difference
    m.tie_width("mg_8 769.38", "ne_8 770.42", 1.5)
    m.tie_amplitude("o_4 769.0", "mg_8 769.38", 0.5)
    m.tie_width("o_4 769.0", "mg_8 769.38", 2.0)  # chained: 3 x width(ne_8)
    m.fix("o_4 769.0", "centroid", 769.4)
    c = m.compile(np.linspace(768, 772, 40))
    assert c.n_free == m.n_free == 9 - 5 + 1  # 4 line params + 1 background
    free = np.array([2.0, 770.2, 0.3, 0.7, 5.0])  # A_ne, c_ne, w_ne, A_mg, bg0
    full = c.full_from_free(free)
    p = dict(zip(c.full_names, full, strict=True))
    assert p["mg_8 769.38/centroid"] == pytest.approx(770.2 + 769.38 - 770.42)
    assert p["mg_8 769.38/width"] == pytest.approx(0.45)
    assert p["o_4 769.0/amplitude"] == pytest.approx(0.35)
    assert p["o_4 769.0/width"] == pytest.approx(0.9)
    assert p["o_4 769.0/centroid"] == 769.4
    assert p["background/0/0"] == 5.0
    t = c.transform
    assert t.shape == (10, 5)
    np.testing.assert_allclose(t @ free + c.constant, full)


def test_json_round_trip_with_ties_fixes_segments():
    m = two_lines(background_degree=1, segments=[(768.0, 772.0), (780.0, 781.0)])
    m.tie_width("mg_8 769.38", "ne_8 770.42", 1.1)
    m.fix("mg_8 769.38", "centroid", 769.0)
    text = m.to_json()
    assert json.loads(text)["lines"][0]["bounds"]["amplitude"] == [0.0, None]
    back = LineModel.from_json(text)
    assert back == m
    assert back.to_dict() == m.to_dict()
    assert back.tie_of("mg_8 769.38", "width") == ("tied", "ne_8 770.42", 1.1)
    assert back.tie_of("mg_8 769.38", "centroid") == ("fixed", 769.0)
    assert LineModel.from_dict(m.to_dict()).segments == [(768.0, 772.0), (780.0, 781.0)]


def test_per_pixel_initial_values_serialise_as_null():
    m = LineModel()
    cen = xr.DataArray(np.full((2, 3), 770.1), dims=("y", "x"))
    m.add_line("ne_8 770.42", amplitude=1.0, centroid=cen, width=0.2)
    d = m.to_dict()
    assert d["lines"][0]["centroid"] is None
    back = LineModel.from_dict(d)
    assert back.line_info("ne_8 770.42")["centroid"] is None
    back.set_initial("ne_8 770.42", "centroid", 770.0)
    assert back.line_info("ne_8 770.42")["centroid"] == 770.0


def test_from_dict_rejects_non_model():
    with pytest.raises(ValueError, match="not a LineModel dict"):
        LineModel.from_dict({"foo": 1})


def test_copy_is_independent():
    m = two_lines()
    c = m.copy()
    c.tie_width("mg_8 769.38", "ne_8 770.42")
    assert m.tie_of("mg_8 769.38", "width") is None
    assert c.tie_of("mg_8 769.38", "width") is not None


def test_set_bounds_moves_the_initial_value_inside_and_keeps_ties_consistent():
    m = LineModel()
    m.add_line("ne_8 770.42", amplitude=1.0, centroid=770.0, width=0.3,
               bounds={"centroid": (769.6, 770.4)})  # fmt: skip
    m.set_bounds("ne_8 770.42", "centroid", (770.1, 770.5))
    info = m.line_info("ne_8 770.42")
    assert info["bounds"]["centroid"] == (770.1, 770.5)
    assert 770.1 < info["centroid"] < 770.1 + 1e-6
    with pytest.raises(ValueError, match="lo < hi"):
        m.set_bounds("ne_8 770.42", "centroid", (771.0, 770.0))
    assert m.line_info("ne_8 770.42")["bounds"]["centroid"] == (770.1, 770.5)
