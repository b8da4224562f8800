"""report.html in a real browser (Debian's chromium, driven by playwright without any browser download): it opens
offline, the plots render with no console error, the screenshot is not blank and every gallery image loads. The
same for `seir diff --report`."""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from PIL import Image

from seir.engine.cli import main
from tests.engine.conftest import FinishedRun

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@dataclass
class Rendered:
    errors: list[str]
    plots: int  # plotly figures drawn on the page
    traces: list[int]  # traces per figure (an empty one, such as "no duplicates", still has its trace)
    painted: list[int]  # trace elements plotly painted per figure
    images: list[tuple[bool, int]]  # (loaded, natural width) of every <img>
    fetched: list[str]  # every URL the page asked for
    contrast: int  # brightest minus darkest grey level of the screenshot

    def assert_fine(self, plots: int) -> None:
        assert not self.errors, self.errors
        assert self.plots == plots and all(n > 0 for n in self.traces), (self.plots, self.traces)
        assert self.painted[0] > 0, self.painted  # the first plot always has data
        assert all(done and width > 0 for done, width in self.images), self.images
        assert all(url.startswith(("file:", "data:")) for url in self.fetched), self.fetched  # nothing from a network
        assert self.contrast > 50, self.contrast  # not a blank page


def render(page_file: Path) -> Rendered:
    from playwright.sync_api import sync_playwright

    browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser_path is None:
        pytest.skip("no chromium on this machine (.ci/run installs Debian's package where it can, as root)")
    errors: list[str] = []
    fetched: list[str] = []
    with sync_playwright() as driver:
        # playwright gives the browser a fresh temporary profile of its own (a bare launch's --user-data-dir)
        browser = driver.chromium.launch(executable_path=browser_path, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("request", lambda request: fetched.append(request.url))
            page.goto(page_file.as_uri(), wait_until="load")
            page.wait_for_selector(".plotly-graph-div .main-svg", timeout=30_000)
            figures = "Array.from(document.querySelectorAll('.plotly-graph-div'))"
            plots = page.evaluate(f"{figures}.filter(d => d.querySelector('.main-svg')).length")
            traces = page.evaluate(f"{figures}.map(d => (d.data || []).length)")
            painted = page.evaluate(f"{figures}.map(d => d.querySelectorAll('.trace, .funnel').length)")
            images = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
            shot = page.screenshot()
        finally:
            browser.close()
    low, high = Image.open(io.BytesIO(shot)).convert("L").getextrema()
    return Rendered(errors, plots, traces, painted, [tuple(i) for i in images], fetched, high - low)


def test_every_version_writes_a_report_that_renders_offline(finished: FinishedRun, tmp_path: Path) -> None:
    report = finished.out / "versions" / "v0001" / "report.html"
    assert Path(finished.summary["report_path"]) == report and report.stat().st_size > 1_000_000  # plotly inlined
    out = Path(shutil.copytree(finished.out, tmp_path / "out"))
    (out / "versions" / "v0001" / "report.html").unlink()
    assert main(["report", "--out", str(out), "--version", "1"]) == 0
    page_file = out / "versions" / "v0001" / "report.html"
    shutil.rmtree(out / "images")  # the page must not need the output's files: images are inlined
    rendered = render(page_file)
    rendered.assert_fine(plots=7)
    assert len(rendered.images) >= 3  # the gallery shows the drafts' images


def test_diff_report_shows_two_versions_and_what_changed(finished: FinishedRun, tmp_path: Path) -> None:
    out = Path(shutil.copytree(finished.out, tmp_path / "out"))
    strict = yaml.safe_load(finished.job.read_text())
    strict["scoring"]["thresholds"] = dict.fromkeys(strict["scoring"]["thresholds"], 5.0)  # rejects every one
    job = tmp_path / "strict.yaml"
    job.write_text(yaml.safe_dump(strict))
    shutil.copy(finished.job.parent / "seeds.jsonl", tmp_path / "seeds.jsonl")
    assert main(["rescore", str(job), "--out", str(out)]) == 0  # the same scorers: re-decided, no model call
    page_file = tmp_path / "diff.html"
    assert main(["diff", "--out", str(out), "1", "2", "--report", str(page_file)]) == 0
    text = page_file.read_text()
    assert "v0001: " in text and "v0002: " in text
    accepted_before = finished.sql("SELECT count(*) FROM version_dialogues WHERE version = 1 AND accepted")[0][0]
    assert text.count("<tr><td>status</td>") == accepted_before > 0
    render(page_file).assert_fine(plots=7)
