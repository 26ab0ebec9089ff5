"""``saffron-xr explore`` served and driven in a real headless Chromium (Debian's package).

The server runs in a subprocess on a free loopback port; playwright drives the system
browser (``/usr/bin/chromium``, installed by ``.ci/run``; playwright never downloads one).
The test saves a screenshot of the page after a click (``explorer.png`` in its tmp folder).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from playwright.sync_api import sync_playwright

import saffron_xr

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PIXEL_RE = re.compile(r"pixel y=(\d+), x=(\d+)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def results_folder(tmp_path_factory, ne8_file):
    """The real Ne VIII window fitted, written as a results file beside its L2 file."""
    folder = tmp_path_factory.mktemp("explore")
    shutil.copy(ne8_file, folder / ne8_file.name)
    tree = saffron_xr.open_spice(folder / ne8_file.name)
    rad = tree["Ne_VIII_770_Peak_data"].dataset.radiance
    err = rad.saffron.spice_error()
    params = rad.saffron.fit(rad.saffron.guess_model(error=err), error=err)
    saffron_xr.to_netcdf(params, folder / "ne8_results.nc")
    return folder


@pytest.fixture
def server(results_folder):
    port = _free_port()
    log = open(results_folder / f"server-{port}.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "saffron_xr.cli", "explore", "ne8_results.nc"]
        + ["--port", str(port), "--no-show"],
        cwd=results_folder,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (results_folder / f"server-{port}.log").read_text()
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the explorer server did not answer in 90 s"
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _distinct_colours(png: bytes) -> int:
    from io import BytesIO

    from PIL import Image

    image = np.asarray(Image.open(BytesIO(png)).convert("RGB"))
    return len(np.unique(image.reshape(-1, 3), axis=0))


@pytest.mark.slow
def test_explorer_page_in_chromium(server, results_folder, tmp_path):
    assert os.path.exists(CHROMIUM), (
        f"{CHROMIUM} is missing: install Debian's chromium package (.ci/run does)"
    )
    errors = []
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh profile
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1700, "height": 1100},
        )
        try:
            page = context.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server, wait_until="networkidle", timeout=90_000)
            status = page.get_by_text(PIXEL_RE)
            status.wait_for(timeout=60_000)
            assert "Traceback" not in page.content()
            # the maps and the spectrum are drawn (bokeh canvases with real pictures)
            canvases = page.locator("canvas")
            assert canvases.count() >= 6
            radiance_map = canvases.first
            box = radiance_map.bounding_box()
            assert box and box["width"] > 100 and box["height"] > 200
            assert _distinct_colours(radiance_map.screenshot()) > 50

            def click_and_read(fy):
                before = status.inner_text()
                page.mouse.click(box["x"] + 0.3 * box["width"], box["y"] + fy * box["height"])
                deadline = time.monotonic() + 60
                while status.inner_text() == before and time.monotonic() < deadline:
                    page.wait_for_timeout(200)
                text = status.inner_text()
                assert text != before, "a click on the map did not select a pixel"
                iy, ix = (int(v) for v in PIXEL_RE.search(text).groups())
                return iy, ix, text

            iy_high, ix, text = click_and_read(0.35)
            assert 0 <= iy_high < 832 and 0 <= ix < 3
            assert "status: " in text and "reduced chi2" in text
            page.wait_for_timeout(1500)  # let the spectrum redraw
            iy_low, _, _ = click_and_read(0.6)
            # lower on the screen is further south: a smaller Solar Y, a smaller row index
            assert iy_low < iy_high
            page.wait_for_timeout(1500)
            shot = tmp_path / "explorer.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 50_000
            # the spectrum (and residual) canvases show a picture too
            assert _distinct_colours(canvases.nth(canvases.count() - 1).screenshot()) > 5
        finally:
            context.close()
    assert errors == [], errors


def test_explore_command_registered_and_bad_input(tmp_path):
    from saffron_xr.cli import build_parser
    from saffron_xr.plot.serve import serve

    args = build_parser().parse_args(["explore", "r.nc", "--port", "0", "--no-show"])
    assert (args.results, args.port, args.show, args.data) == ("r.nc", 0, False, None)
    assert args.func.__module__ == "saffron_xr.plot.serve"
    with pytest.raises(FileNotFoundError, match="nope.nc"):
        serve(tmp_path / "nope.nc", show=False)
