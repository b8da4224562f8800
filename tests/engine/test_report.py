"""report.html in a real browser (Debian's chromium, driven by playwright without any browser download): it opens
offline, the plots render with no console error, the screenshot is not blank and every gallery image loads."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from PIL import Image

from seir.engine.cli import main
from tests.engine.conftest import FinishedRun

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def browser_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("no chromium on this machine (.ci/run installs Debian's package where it can, as root)")
    return found


def test_every_version_writes_a_report_that_renders_offline(finished: FinishedRun, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    report = finished.out / "versions" / "v0001" / "report.html"
    assert Path(finished.summary["report_path"]) == report and report.stat().st_size > 1_000_000  # plotly inlined
    rebuilt = tmp_path / "out"
    shutil.copytree(finished.out, rebuilt)
    (rebuilt / "versions" / "v0001" / "report.html").unlink()
    assert main(["report", "--out", str(rebuilt), "--version", "1"]) == 0
    page_file = rebuilt / "versions" / "v0001" / "report.html"
    shutil.rmtree(rebuilt / "images")  # the page must not need the output's files: images are inlined

    errors: list[str] = []
    fetched: list[str] = []
    with sync_playwright() as driver:
        # playwright gives the browser a fresh temporary profile of its own (the --user-data-dir of a bare launch)
        browser = driver.chromium.launch(executable_path=browser_path(), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("request", lambda request: fetched.append(request.url))
            page.goto(page_file.as_uri(), wait_until="load")
            page.wait_for_selector(".plotly-graph-div .main-svg", timeout=30_000)
            plots = page.locator(".plotly-graph-div").count()
            rendered = page.locator(".plotly-graph-div .main-svg").count()
            traces = page.evaluate("Array.from(document.querySelectorAll('.plotly-graph-div'))"
                                   ".map(d => (d.data || []).length)")
            images = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
            shot = page.screenshot()
        finally:
            browser.close()
    assert not errors, errors
    assert plots == 6 and rendered >= 6 and all(n > 0 for n in traces), (plots, rendered, traces)
    assert images and all(done and width > 0 for done, width in images), images
    assert all(url.startswith(("file:", "data:")) for url in fetched), fetched  # nothing from a network
    colours = Image.open(io.BytesIO(shot)).convert("L").getextrema()
    assert colours[1] - colours[0] > 50, colours  # not a blank page
