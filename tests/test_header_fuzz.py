"""Header fuzzing: random removals and corruptions of WCS and instrument keywords.

The base is the real Ne VIII window (its header unchanged, its data cut to 16 slit rows).
Each example removes or corrupts a few keywords, writes the file card by card (so values
astropy would refuse to write, such as ``NaN``, reach the reader as they would from a broken
pipeline), and opens it. The reader must either raise :class:`SpiceFileError` with a
one-line message starting with the file name, or give coordinates that agree with astropy's
WCS of the header as written, data equal to what astropy reads, and the header's keyword
values as attributes. Any other exception fails the test.

CI runs a fixed, derandomised set of examples; set ``SAFFRON_FUZZ_EXAMPLES=2000`` and
``SAFFRON_FUZZ_RANDOM=1`` for a longer random search.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from saffron_xr import open_spice
from saffron_xr.errors import SpiceFileError
from saffron_xr.io.reader import PIPELINE_KEYWORDS

NY = 16

WCS_KEYS = [
    f"{key}{i}" for i in (1, 2, 3, 4) for key in ("CTYPE", "CUNIT", "CRVAL", "CDELT", "CRPIX")
] + ["PC1_1", "PC1_2", "PC2_1", "PC2_2", "PC3_3", "PC4_4", "PC4_1", "NAXIS2", "NAXIS3"]
INSTRUMENT_KEYS = [
    "XPOSURE", "RADCAL", "DETECTOR", "BUNIT", "LEVEL", "INSTRUME", "NBIN2", "NBIN3",
    "DATE-BEG", "DATE-OBS", "DATEREF", "EXTNAME", "DATAPROD", "WIN_TYPE", "DUMBBELL",
]  # fmt: skip
TEXT_VALUES = [
    "", "garbage", "HPLN-TAN", "HPLT-TAN", "WAVE", "UTC", "HPLN-AZP", "RA---TAN", "nm",
    "Angstrom", "m", "arcsec", "deg", "furlong", "W/m2/sr/nm", "DN", "SW", "LW", "L2", "L3",
    "SPICE", "2022-03-17T00:25:36.000", "not a date", "Raster", "sit-and-stare",
]  # fmt: skip
RAW_VALUES = ["NaN", "Inf", "-Inf", "1.0E+400", "T", "F", "'unterminated", "1.2.3"]


class _Base(tuple):
    def __repr__(self) -> str:  # hypothesis prints the arguments of a failing example
        return "<the real Ne VIII window header and data>"


@pytest.fixture(scope="module")
def base(ne8_file) -> tuple[list[str], bytes, np.ndarray]:
    """(the real header's cards as written, data bytes incl. padding, data array)."""
    with fits.open(ne8_file) as hdul:
        header = hdul[0].header.copy()
        data = np.ascontiguousarray(hdul[0].data[:, :, :NY, :])
    header["NAXIS2"] = NY
    cards = [card.image for card in header.cards]
    raw = data.astype(">f4").tobytes()
    raw += b"\0" * (-len(raw) % 2880)
    return _Base((cards, raw, data))


def _card(key: str, value) -> str:
    """A card image; ``("raw", text)`` writes ``text`` unchecked as the value."""
    if isinstance(value, tuple):
        return f"{key:8s}= {value[1]:>20s}".ljust(80)[:80]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fits.Card(key, value).image


def _write(path: Path, cards: list[str], raw: bytes, edits: dict) -> None:
    out = []
    seen = set()
    for image in cards:
        key = image[:8].strip()
        if key in edits:
            seen.add(key)
            if edits[key] is None:
                continue
            out.append(_card(key, edits[key]))
        else:
            out.append(image)
    end = [i for i, image in enumerate(out) if image.startswith("END     ")]
    if end:
        out = out[: end[0]]
    for key, value in edits.items():  # corruptions of keywords the header lacks
        if key not in seen and value is not None:
            out.append(_card(key, value))
    text = "".join(out) + "END".ljust(80)
    text += " " * (-len(text) % 2880)
    path.write_bytes(text.encode("ascii", "replace") + raw)


def _corruption(key: str, current):
    numbers = [
        st.just(0.0),
        st.floats(-1e6, 1e6, allow_nan=False),
        st.just(1e30),
        st.sampled_from(RAW_VALUES).map(lambda text: ("raw", text)),
        st.sampled_from(TEXT_VALUES),
        st.just(None),  # removal
    ]
    if isinstance(current, int | float) and not isinstance(current, bool):
        numbers += [
            st.floats(-3, 3).map(lambda f: current * 10**f),
            st.just(-current),
            st.integers(-2, 2).map(lambda n: current + n),
        ]
    return st.one_of(numbers)


def _edits_strategy(header):
    keys = st.sampled_from(WCS_KEYS + INSTRUMENT_KEYS)
    return st.lists(keys, min_size=1, max_size=4, unique=True).flatmap(
        lambda chosen: st.fixed_dictionaries(
            {key: _corruption(key, header.get(key)) for key in chosen}
        )
    )


def _astropy_world(header, ds):
    """Wavelength (A), hpln/hplt (arcsec) from astropy's WCS of the full header."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w = WCS(header)
    nw = ds.sizes["wavelength"]
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    n = w.pixel_n_dim
    ref = float(header["CRPIX3"]) - 1.0
    iw = np.arange(nw, dtype=float)
    wave = w.wcs_pix2world(np.stack([np.zeros(nw), np.zeros(nw), iw, np.zeros(nw)][:n], -1), 0)
    ix, iy = np.meshgrid(np.arange(nx, dtype=float), np.arange(ny, dtype=float))
    grid = [ix.ravel(), iy.ravel(), np.full(ix.size, ref), np.zeros(ix.size)][:n]
    sky = w.wcs_pix2world(np.stack(grid, -1), 0)
    lon = ((sky[:, 0] + 180.0) % 360.0 - 180.0) * 3600.0
    return wave[:, 2] * 1e10, lon.reshape(ny, nx), (sky[:, 1] * 3600.0).reshape(ny, nx)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@settings(
    max_examples=int(os.environ.get("SAFFRON_FUZZ_EXAMPLES", "150")),
    derandomize=not os.environ.get("SAFFRON_FUZZ_RANDOM"),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_corrupted_headers_raise_clearly_or_read_consistently(data, base, scratch):
    cards, raw, array = base
    header = fits.Header.fromstring("".join(cards))
    edits = data.draw(_edits_strategy(header), label="edits")
    path = scratch / "solo_L2_spice-n-ras_20220317T002536_V03_100663832-017.fits"
    _write(path, cards, raw, edits)

    try:
        tree = open_spice(path)
    except SpiceFileError as exc:
        message = str(exc)
        assert message.startswith(f"{path}: "), message
        assert "\n" not in message, message
        assert exc.problem.strip(), message
        event("rejected")
        return
    event("accepted")
    # accepted: everything it gives must agree with the header as written
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fits.open(path) as hdul:
            written = hdul[0].header.copy()
            expected = np.asarray(hdul[0].data, dtype=np.float64)
    (node,) = tree.children.values()
    ds = node.dataset
    wave, lon, lat = _astropy_world(written, ds)
    assert np.isfinite(ds.wavelength.values).all() and np.isfinite(ds.hpln.values).all()
    np.testing.assert_allclose(ds.wavelength.values, wave, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(ds.hpln.values, lon, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ds.hplt.values, lat, rtol=0, atol=1e-6)
    unit = str(written["CUNIT3"]).strip().lower()
    scale = {"nm": 10.0, "angstrom": 1.0, "m": 1e10}.get(unit)
    if scale is not None and unit != "m":
        # the unit is honoured: CRVAL3 (in CUNIT3) is the wavelength at CRPIX3
        step = float(np.mean(np.diff(wave)))  # linear: extrapolate to a CRPIX3 outside
        at_ref = wave[0] + (float(written["CRPIX3"]) - 1.0) * step
        tol = 1e-9 * (abs(at_ref) + abs(step) * wave.size)
        assert math.isclose(at_ref, float(written["CRVAL3"]) * scale, rel_tol=0, abs_tol=tol)
    # the data are the bytes astropy reads, in the reader's (y, x, wavelength) order
    np.testing.assert_array_equal(
        ds.radiance.values, np.moveaxis(expected[0], 0, -1).astype(ds.radiance.dtype)
    )
    for key in PIPELINE_KEYWORDS:
        if key in written and key not in ("EXTNAME",) and key in ds.attrs:
            value = written[key]
            value = value.strip() if isinstance(value, str) else value
            assert ds.attrs[key] == (int(value) if isinstance(value, bool) else value), key
    for key in ("XPOSURE", "RADCAL"):
        if key in ds.attrs:
            assert ds.attrs[key] > 0, (key, ds.attrs[key])
