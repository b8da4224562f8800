"""`seir view` in a real browser (Debian's chromium through playwright), as a person uses it, while a run writes to
the output: filter to rejected dialogues, open one, see its pictures load, record a score and a preference, find both
on the page after a reload and in provenance through `seir sql`, and again after the viewer is killed with -9."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seir.engine.query import run_sql
from seir.engine.store import StoreError
from tests.engine.conftest import TOPICS, job_dict, write_job
from tests.engine.export.test_report import CHROMIUM_FLAGS
from tests.engine.run.test_resume import kill_group, seir_run

VERDICTS = ("SELECT annotator, source, turn_index, dimension, score, prefer IS NOT NULL FROM human_verdicts "
            "ORDER BY 3, 4")


def start_viewer(out: Path) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen([sys.executable, "-m", "seir.engine.cli", "view", "--out", str(out), "--port", "0",
                                "--annotator", "ana"], stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert process.stderr is not None
    said = []
    for line in process.stderr:
        said.append(line)
        found = re.search(r"\[seir\] view: (http://\S+)", line)
        if found:
            return process, found.group(1)
    pytest.fail(f"the viewer stopped before it served ({process.wait()}):\n{''.join(said)}")


def committed_shards(out: Path) -> int:
    try:
        return run_sql(out, "SELECT count(*) FROM shards WHERE status = 'committed'")[1][0][0]
    except StoreError:  # not created yet
        return 0


def verdicts_shown(page: object, url: str) -> str:
    page.goto(url)  # type: ignore[attr-defined]
    return page.inner_text("ul.verdicts")  # type: ignore[attr-defined]


def test_a_person_browses_a_run_in_progress_and_records_verdicts(ray_local: None, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser_path is None:
        pytest.skip("no chromium on this machine (.ci/run installs Debian's package where it can, as root)")
    # Every threshold at 5: every dialogue is rejected; every stage is refined, so each has two rounds to compare.
    spec = job_dict("viewing", topics=TOPICS[:8], seir={"turns": 1, "rounds": 1, "gate_default": 5.0},
                    scoring={"thresholds": dict.fromkeys(job_dict()["scoring"]["thresholds"], 5.0)},
                    execution={"shard_size": 1, "shards_in_flight": 1})
    out = tmp_path / "out"
    run = seir_run(write_job(tmp_path / "job", spec), out)
    viewers: list[subprocess.Popen[str]] = []
    try:
        deadline = time.monotonic() + 300
        while committed_shards(out) < 1:
            assert run.poll() is None and time.monotonic() < deadline, "no shard committed"
            time.sleep(0.3)
        viewer, url = start_viewer(out)
        viewers.append(viewer)
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=browser_path, args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page()
                errors: list[str] = []
                images: dict[str, int] = {}
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.on("response", lambda r: images.__setitem__(r.url, r.status) if "/image/" in r.url else None)
                page.goto(url)
                listed_while_running = run.poll() is None and page.locator("tr.row").count() >= 1
                page.select_option("select[name=status]", "rejected")
                with page.expect_navigation():
                    page.click("form.filters button")
                while not page.locator("tr.row").count():  # shown as the run commits them
                    assert time.monotonic() < deadline, "no rejected dialogue listed"
                    time.sleep(1)
                    page.reload()
                statuses = page.eval_on_selector_all("tr.row td:nth-child(2)",
                                                     "cells => cells.map(c => c.textContent)")
                assert statuses and set(statuses) == {"rejected"}, statuses
                with page.expect_navigation():
                    page.click("tr.row a")
                dialogue_url = page.url
                page.wait_for_load_state("load")
                drawn = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth, "
                                      "i.naturalHeight])")
                assert drawn and all(done and (w, h) == (32, 32) for done, w, h in drawn), drawn
                assert images and set(images.values()) == {200}, images

                form = page.locator("section.turn form.verdict").first
                form.locator("select[name=dimension]").select_option("image_quality")
                form.locator("input[name=score]").fill("1")
                with page.expect_navigation():
                    form.locator("button[value=score]").click()
                answer = page.locator(".stage").filter(has_text="answer").first
                answer.locator("input.pick").nth(0).check()
                answer.locator("input.pick").nth(1).check()
                with page.expect_navigation():
                    page.click("#compare")
                assert page.locator("[data-draft]").count() == 2
                with page.expect_navigation():
                    page.click("button.prefer >> nth=0")
                shown = verdicts_shown(page, dialogue_url)
                assert "ana on turn 1: image_quality 1" in shown and "ana on turn 1: preferred" in shown, shown
                stored = run_sql(out, VERDICTS)[1]
                assert stored == [("ana", "viewer", 0, "image_quality", 1.0, False),
                                  ("ana", "viewer", 0, None, None, True)], stored

                kill_group(viewer)  # kill -9: nothing given is lost
                viewer, url = start_viewer(out)
                viewers.append(viewer)
                shown = verdicts_shown(page, url.rstrip("/") + "/" + dialogue_url.split("/", 3)[3])
                assert "image_quality 1" in shown and "preferred" in shown, shown
                assert not errors, errors
            finally:
                browser.close()
        assert listed_while_running, "the run ended before the viewer listed its first shard"
        assert run.wait(timeout=600) == 0, run.stderr.read() if run.stderr else ""
        assert run_sql(out, VERDICTS)[1] == stored  # the run's own commits and decisions kept them
    finally:
        for process in viewers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        kill_group(run)
