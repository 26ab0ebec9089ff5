"""saffron_xr.testing: the test-data folders come from the environment, never a guessed path."""

from __future__ import annotations

from pathlib import Path

import pytest

import saffron_xr.testing as testing_module
from saffron_xr.testing import chianti_dir, shared_data_dir


@pytest.mark.parametrize(
    ("helper", "variable"), [(shared_data_dir, "SAFFRON_TEST_DATA"), (chianti_dir, "XUVTOP")]
)
def test_folder_is_the_environment_variable(helper, variable, monkeypatch, tmp_path):
    monkeypatch.setenv(variable, str(tmp_path / "somewhere"))
    assert helper() == tmp_path / "somewhere"


@pytest.mark.parametrize(
    ("helper", "variable"), [(shared_data_dir, "SAFFRON_TEST_DATA"), (chianti_dir, "XUVTOP")]
)
@pytest.mark.parametrize("value", [None, "", "  "])
def test_unset_variable_says_how_to_set_it(helper, variable, value, monkeypatch):
    if value is None:
        monkeypatch.delenv(variable, raising=False)
    else:
        monkeypatch.setenv(variable, value)
    with pytest.raises(RuntimeError, match=rf"{variable} is not set.*export {variable}="):
        helper()


def test_no_path_is_guessed_beside_the_repository():
    """The helpers hold no ``../shared`` fallback (the data folder is the user's choice)."""
    source = Path(testing_module.__file__).read_text()
    assert '"shared"' not in source
    assert "parent.parent" not in source
