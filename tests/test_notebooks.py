"""The notebooks in ``notebooks/`` run top to bottom and are committed with outputs stripped.

Each notebook is executed with nbclient in a fresh ``python3`` kernel, from the notebooks
folder, with the real SPICE data and CHIANTI found through ``SAFFRON_TEST_DATA`` / ``XUVTOP``
(defaults ``../shared/...``) and an empty contribution-function cache (so the FIP notebook
really runs ChiantiPy). Outputs are never written back.
"""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook tests need nbformat (test extra)")
nbclient = pytest.importorskip("nbclient", reason="the notebook tests need nbclient (test extra)")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = {"01_quickstart", "02_preparation", "03_fip_maps", "04_scaling_out"}


def test_the_notebooks_are_there():
    assert {p.stem for p in NOTEBOOKS} >= EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_stripped(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{path.name} has no code"
    for cell in code:
        assert cell.outputs == [], f"{path.name}: a cell has outputs; strip them"
        assert cell.execution_count is None, f"{path.name}: strip the execution counts"
    # the first cell says what the notebook is about
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


@pytest.mark.slow  # each notebook starts a kernel and compiles the fitting kernel
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, shared_data, xuvtop, tmp_path, monkeypatch):
    monkeypatch.setenv("SAFFRON_TEST_DATA", str(shared_data))
    monkeypatch.setenv("XUVTOP", str(xuvtop))
    monkeypatch.setenv("SAFFRON_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    client.execute()  # raises CellExecutionError naming the cell on any error
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert outputs, f"{path.name} produced no output"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_do_not_use_test_helpers(path):
    """Users have no test data folder or fixtures: the notebooks find data like users do."""
    nb = nbformat.read(path, as_version=4)
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    for helper in (
        "saffron_xr.testing",
        "shared_data_dir",
        "chianti_dir",
        "conftest",
        "from tests",
    ):
        assert helper not in source, f"{path.name} uses the test helper {helper}"


@pytest.mark.slow
def test_fip_notebook_runs_without_chianti(shared_data, tmp_path, monkeypatch):
    """Notebook 03 promises the shipped contribution table when there is no CHIANTI."""
    monkeypatch.delenv("XUVTOP", raising=False)
    monkeypatch.setenv("SAFFRON_TEST_DATA", str(shared_data))
    monkeypatch.setenv("SAFFRON_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK_DIR / "03_fip_maps.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )  # fmt: skip
    client.execute()
    text = "\n".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
    )
    assert "no CHIANTI database: using the shipped contribution-function table" in text
