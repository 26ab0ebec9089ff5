"""Campaign index and open_campaign: results of several files opened lazily as one tree."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import xarray as xr

from saffron_xr.catalog import guess_model
from saffron_xr.fit import fit_lines
from saffron_xr.io.campaign import INDEX_COLUMNS, open_campaign, read_campaign_index
from saffron_xr.io.netcdf import to_netcdf
from saffron_xr.testing import make_spectra, raise_if_dask_computes

STEMS = [
    "solo_L2_spice-n-ras_20240425T121922_V01_251658647-000",
    "solo_L2_spice-n-ras_20240425T131922_V01_251658648-000",
    "solo_L2_spice-n-ras_20240425T141922_V01_251658649-000",
]


def _fitted(seed: int) -> xr.Dataset:
    """A small fitted result: 12 synthetic Ne VIII spectra, fitted with the package."""
    spectra = make_spectra(12, seed=seed, xposure=30.0)
    model = guess_model(spectra.radiance, error=spectra.error, min_snr=3.0)
    out = fit_lines(spectra.radiance, model, error=spectra.error)
    out.attrs["EXTNAME"] = "Ne VIII 770 - Peak"
    return out


def _write_index(folder, rows):
    with open(folder / "campaign_index.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=INDEX_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in INDEX_COLUMNS})


def _row(stem, status, output="", reason="", spectra=12, conv=1.0):
    return {
        "input": f"/data/spice/2024/04/25/{stem}.fits",
        "status": status,
        "reason": reason,
        "spectra": spectra if status != "failed" else "",
        "converged_fraction": conv if status != "failed" else "",
        "at_bound_fraction": 0.0 if status != "failed" else "",
        "noise_floor_ratio": 0.9,
        "noise_photon_ratio": 1.1,
        "seconds": 3.5,
        "output": output,
        "fip_output": "",
    }


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    folder = tmp_path_factory.mktemp("campaign")
    fitted = {}
    for i, stem in enumerate(STEMS[:2]):
        fitted[stem] = _fitted(seed=i).compute()
        to_netcdf(fitted[stem], folder / f"{stem}_saffron.nc")
    rows = [
        # one output named relative to the folder, one with an absolute path
        _row(STEMS[0], "done", f"{STEMS[0]}_saffron.nc", conv=0.75),
        _row(STEMS[1], "skipped", str(folder / f"{STEMS[1]}_saffron.nc"), reason="up to date"),
        _row(STEMS[2], "failed", reason="not a SPICE file: bad header"),
    ]
    _write_index(folder, rows)
    return folder, fitted


def test_read_campaign_index(campaign):
    folder, _ = campaign
    table = read_campaign_index(folder)
    assert list(table.columns) == list(INDEX_COLUMNS)
    assert list(table["status"]) == ["done", "skipped", "failed"]
    assert table["converged_fraction"].iloc[0] == 0.75
    assert np.isnan(table["spectra"].iloc[2])
    assert table["reason"].iloc[2] == "not a SPICE file: bad header"
    assert table["fip_output"].iloc[0] == ""


def test_open_campaign_is_lazy_and_labelled(campaign):
    folder, fitted = campaign
    with raise_if_dask_computes():
        tree = open_campaign(folder)
    try:
        assert set(tree.children) == set(STEMS[:2])  # the failed file has no node
        # the root index holds every row, the failed one with its reason
        assert list(tree["file"].values) == STEMS
        assert list(tree["status"].values) == ["done", "skipped", "failed"]
        assert str(tree["reason"].values[2]) == "not a SPICE file: bad header"
        node = tree[STEMS[0]]
        assert node.attrs["status"] == "done"
        assert node.attrs["converged_fraction"] == 0.75
        assert node.attrs["input"].endswith(f"{STEMS[0]}.fits")
        assert "saffron_xr_version" in node.attrs  # the results' own provenance is kept
        window = node["Ne_VIII_770_Peak"]
        assert window["amplitude"].chunks is not None  # dask-backed: nothing read yet
        # the values are the ones written
        for stem in STEMS[:2]:
            got = tree[stem]["Ne_VIII_770_Peak"].to_dataset()
            xr.testing.assert_allclose(got["amplitude"].load(), fitted[stem]["amplitude"])
            xr.testing.assert_equal(got["status"].load(), fitted[stem]["status"])
    finally:
        tree.close()


def test_open_campaign_missing_output(campaign, tmp_path, caplog):
    folder, _ = campaign
    rows = [
        _row(STEMS[0], "done", str(folder / f"{STEMS[0]}_saffron.nc")),
        _row(STEMS[1], "done", "gone_saffron.nc"),
    ]
    _write_index(tmp_path, rows)
    with pytest.raises(FileNotFoundError, match="gone_saffron.nc"):
        open_campaign(tmp_path)
    tree = open_campaign(tmp_path, on_missing="mark")
    try:
        assert list(tree.children) == [STEMS[0]]
        assert list(tree["status"].values) == ["done", "missing"]
        assert "gone_saffron.nc" in str(tree["reason"].values[1])
    finally:
        tree.close()
    assert "gone_saffron.nc" in caplog.text


def test_moved_campaign_finds_outputs_by_name(campaign, tmp_path):
    folder, fitted = campaign
    (tmp_path / f"{STEMS[0]}_saffron.nc").write_bytes(
        (folder / f"{STEMS[0]}_saffron.nc").read_bytes()
    )
    _write_index(tmp_path, [_row(STEMS[0], "done", f"/old/place/{STEMS[0]}_saffron.nc")])
    tree = open_campaign(tmp_path)
    try:
        got = tree[STEMS[0]]["Ne_VIII_770_Peak"]["centroid"].load()
        xr.testing.assert_allclose(got, fitted[STEMS[0]]["centroid"])
    finally:
        tree.close()


def test_node_names_are_valid_and_unique(tmp_path, campaign):
    folder, _ = campaign
    out = str(folder / f"{STEMS[0]}_saffron.nc")
    rows = [_row(STEMS[0], "done", out), _row(STEMS[0], "done", out)]
    rows[0]["input"] = "/a/my file.v2.fits"
    rows[1]["input"] = "/b/my file.v2.fits"
    _write_index(tmp_path, rows)
    tree = open_campaign(tmp_path)
    try:
        assert list(tree.children) == ["my_file", "my_file_2"]
    finally:
        tree.close()


def test_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such campaign folder"):
        open_campaign(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="campaign_index.csv"):
        open_campaign(tmp_path)
    (tmp_path / "campaign_index.csv").write_text("input,status\nx.fits,done\n")
    with pytest.raises(ValueError, match="lacks the columns"):
        read_campaign_index(tmp_path)
    _write_index(tmp_path, [_row(STEMS[0], "finished", "x.nc")])
    with pytest.raises(ValueError, match="row 1 .*status must be one of"):
        read_campaign_index(tmp_path)
    rows = [_row(STEMS[0], "done", "x.nc")]
    rows[0]["seconds"] = "fast"
    _write_index(tmp_path, rows)
    with pytest.raises(ValueError, match="'seconds' is not a number"):
        read_campaign_index(tmp_path)
    with pytest.raises(ValueError, match="on_missing"):
        open_campaign(tmp_path, on_missing="ignore")


def test_top_level_name():
    import saffron_xr

    assert saffron_xr.open_campaign is open_campaign


def test_fip_output_becomes_a_fip_node(campaign, tmp_path):
    folder, _ = campaign
    fip = xr.Dataset(
        {
            "fip_bias": (("y",), np.linspace(1.0, 3.0, 12)),
            "fip_bias_err": (("y",), np.full(12, 0.2)),
        }
    )
    xr.DataTree.from_dict({"/": xr.Dataset(), "/S_N": fip}).to_netcdf(tmp_path / "a_fip.nc")
    row = _row(STEMS[0], "done", str(folder / f"{STEMS[0]}_saffron.nc"))
    row["fip_output"] = "a_fip.nc"
    _write_index(tmp_path, [row])
    with raise_if_dask_computes():
        tree = open_campaign(tmp_path)
    try:
        node = tree[STEMS[0]]
        assert set(node.children) == {"Ne_VIII_770_Peak", "fip"}
        np.testing.assert_allclose(node["fip/S_N"]["fip_bias"].values, fip["fip_bias"].values)
        assert node.attrs["fip_output"] == "a_fip.nc"
    finally:
        tree.close()
