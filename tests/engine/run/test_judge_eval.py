"""`seir judge-eval` on InterMT's real human scores, with the tiny judge behind a Ray pool, recorded as a run."""

from __future__ import annotations

import json
from pathlib import Path

from seir.engine.cli import main
from tests.conftest import shared_file
from tests.engine.conftest import FinishedRun, job_dict, write_job
from tests.engine.export.test_report import render


def test_judge_eval_reports_agreement_and_is_recorded(ray_local: None, tmp_path: Path) -> None:
    intermt = shared_file("intermt", "score_evaluation_test.json")
    job = write_job(tmp_path, job_dict("judge-eval"))
    out = tmp_path / "out"
    assert main(["judge-eval", str(intermt), "--rubric", "intermt", "--job", str(job), "--out", str(out),
                 "--limit", "4"]) == 0
    report_file = next((out / "judge-eval").glob("*.json"))
    report = json.loads(report_file.read_text())
    by_name = {d["name"]: d for d in report["dimensions"]}
    assert set(by_name) == {"local_image_text_consistency", "visual_perceptual_quality", "text_quality",
                            "context_coherence", "context_awareness", "helpfulness", "crucial_step_recognition",
                            "global_image_text_consistency", "style_coherence"}
    # The file ships no images: picture dimensions are reported as not evaluable, never guessed.
    for name in ("local_image_text_consistency", "visual_perceptual_quality", "global_image_text_consistency"):
        assert not by_name[name]["evaluable"] and by_name[name]["reason"]
    text = by_name["text_quality"]
    assert text["evaluable"] and text["n"] == 4 and 0 <= text["exact"] <= 1
    render(report_file.with_suffix(".html")).assert_fine(plots=1)  # judge vs human, one panel per dimension
    run = FinishedRun(out, {}, "", job)
    assert run.sql("SELECT kind, status FROM runs") == [("judge-eval", "finished")]
    calls = run.sql("SELECT count(*) FILTER (WHERE NOT cached), count(DISTINCT method) FROM model_calls "
                    "WHERE role = 'judge'")[0]
    assert calls[0] > 0 and calls[1] == 2
