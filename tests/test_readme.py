"""The README's tour runs as written and keeps what it computes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _tour() -> str:
    text = README.read_text()
    section = text.split("## A short tour", 1)[1]
    # the first code block of the tour (later ones need files that are not shipped)
    return re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], flags=re.S)[0]


@pytest.mark.slow  # fits the real Ne VIII window
def test_readme_tour_writes_the_derived_maps_and_reads_them_back(tmp_path, monkeypatch):
    from saffron_xr import open_results

    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_tour(), str(README), "exec"), namespace)  # noqa: S102 - our own README
    back = open_results(tmp_path / "ne8_results.nc")
    ds = back["Ne_VIII_770_Peak_data"].dataset
    for name in ("amplitude", "doppler_velocity", "doppler_velocity_err", "radiance"):
        assert name in ds, f"the README's results file lacks {name}"
    assert "ne8" in namespace and "doppler_velocity" in namespace["ne8"]
