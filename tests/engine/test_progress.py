"""Progress: counts, rate and ETA at least every 10 s as plain lines where no terminal is, a bar redrawn in place
on one; and in a real `seir run` / `seir judge-eval` writing to a pipe, with the workers' chatter kept out."""

from __future__ import annotations

import io
import itertools
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from seir.engine.progress import Meter, say
from seir.engine.run.summary import Progress, format_summary, run_summary
from seir.engine.store import ProvenanceStore
from tests.conftest import shared_file
from tests.engine.conftest import TOPICS, job_dict, write_job


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_keep_coming_while_nothing_advances() -> None:
    stream = io.StringIO()
    with Meter("judge-eval", 40, "items", stream, every_s=0.1) as meter:
        meter.advance(10)
        time.sleep(0.45)
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 4, lines  # the first, timer lines while idle, the last
    assert all(line.startswith("[seir] judge-eval ") and " items/min | ETA " in line for line in lines)
    assert lines[-1].startswith("[seir] judge-eval 10/40 items (25%)")
    assert "\r" not in stream.getvalue()


def test_a_terminal_gets_one_bar_redrawn_in_place_and_lines_above_it() -> None:
    stream = Terminal()
    with Meter("rescore", 4, "dialogues", stream, every_s=0.1) as meter:
        meter.advance(2)
        say(stream, "a line of its own")
        meter.advance(2)
    text = stream.getvalue()
    assert "\r\x1b[K[seir] [##########..........] rescore 2/4 dialogues (50%)" in text
    assert "\r\x1b[K[seir] a line of its own\n" in text
    assert text.endswith("[seir] rescore 4/4 dialogues (100%)" + text.split("(100%)", 1)[1].split("\n")[0] + "\n")


def test_run_progress_says_what_it_works_on_between_commits() -> None:
    stream = io.StringIO()
    progress = Progress(total_dialogues=8, total_shards=2, stream=stream, every_s=0.05)
    progress.note_round(1, "image", 2, 3)
    with progress:
        time.sleep(0.2)
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 3 and all(line.startswith("[seir] run 0/8 dialogues (0%)") for line in lines)
    assert "ETA ?" in lines[-1] and "shards 0/2" in lines[-1]
    assert lines[-1].endswith("working on turn 2 image round 2 (3 dialogues)")


def timed_lines(command: list[str]) -> tuple[list[tuple[float, str]], int]:
    """Every line the command writes to its standard error (a pipe, not a terminal), with when it came."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    lines: list[tuple[float, str]] = []

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append((time.monotonic(), line.rstrip("\n")))

    reader = threading.Thread(target=read)
    reader.start()
    process.wait(timeout=600)
    reader.join()
    return lines, process.returncode


def assert_steady(lines: list[tuple[float, str]], label: str) -> None:
    texts = [text for _, text in lines]
    seir = [(at, text) for at, text in lines if text.startswith("[seir] ")]
    assert seir, texts
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(seir)]
    assert max(gaps, default=0) <= 12.0, (max(gaps), texts)  # 10 s and a little scheduling slack
    assert any(text.startswith(f"[seir] {label} ") and "ETA" in text for text in texts), texts
    # Quiet by default: what workers print stays out of the terminal.
    assert not [text for text in texts if "pid=" in text or "Loading" in text], texts


def test_a_run_writes_progress_lines_to_a_pipe(ray_local: None, tmp_path: Path) -> None:
    job = write_job(tmp_path / "job", job_dict("lines", topics=TOPICS[:2], seir={"turns": 1, "rounds": 1},
                                                execution={"shard_size": 1, "shards_in_flight": 1}))
    out = tmp_path / "out"
    lines, code = timed_lines([sys.executable, "-m", "seir.engine.cli", "run", str(job), "--out", str(out)])
    assert code == 0, [text for _, text in lines]
    assert_steady(lines, "run")
    assert (out / "logs" / "seir.log").exists()


def test_judge_eval_writes_progress_lines_to_a_pipe(ray_local: None, tmp_path: Path) -> None:
    intermt = shared_file("intermt", "score_evaluation_test.json")
    job = write_job(tmp_path, job_dict("judge-lines"))
    lines, code = timed_lines([sys.executable, "-m", "seir.engine.cli", "judge-eval", str(intermt), "--job",
                               str(job), "--out", str(tmp_path / "out"), "--limit", "24"])
    assert code == 0, [text for _, text in lines]
    assert_steady(lines, "judge-eval")
    assert any(text.startswith("[seir] judge-eval 24/24 items (100%)") for _, text in lines)


def test_the_summary_lists_each_roles_most_frequent_errors(tmp_path: Path) -> None:
    with ProvenanceStore(tmp_path) as store:
        errors = [("judge", "judge score failed: HTTP 422")] * 3 + [("judge", "judge chat timed out")] * 2 + [
            ("judge", "a"), ("judge", "b"), ("llm", "llm chat failed: HTTP 401"), ("llm", None)]
        for i, (role, error) in enumerate(errors):
            store.con.execute("INSERT INTO model_calls (call_key, run_id, role, method, cached, error) "
                              "VALUES (?, 'r', ?, 'chat', false, ?)", [f"k{i}", role, error])
        summary = run_summary(store.con, "r")
    assert summary["top_errors"] == [
        {"role": "judge", "error": "judge score failed: HTTP 422", "count": 3},
        {"role": "judge", "error": "judge chat timed out", "count": 2},
        {"role": "judge", "error": "a", "count": 1},  # three per role, ties by message
        {"role": "llm", "error": "llm chat failed: HTTP 401", "count": 1}]
    assert "  error  judge  x3: judge score failed: HTTP 422" in format_summary(summary).splitlines()
