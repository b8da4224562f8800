"""Verdict files read as `seir verdicts import` reads them: seir's JSON lines and Label Studio's JSON export, each
bad line named by file, line and field before anything is stored; and acceptance with people's verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seir.engine.store.acceptance import HumanSays, decide
from seir.engine.store.verdict_files import read_verdict_file
from seir.engine.store.verdicts import VerdictError
from seir.operators.scoring.combine import ScoringConfig

THRESHOLDS = {"text_content": 3.0, "image_quality": 3.0}
WEIGHTS = {"text_content": {"judge": 1.0}, "image_quality": {"judge": 1.0}}


def lines(tmp_path: Path, *rows: object) -> Path:
    path = tmp_path / "verdicts.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_json_lines_read_with_turns_from_one(tmp_path: Path) -> None:
    path = lines(tmp_path, {"dialogue_id": "d1", "turn": 1, "dimension": "image_quality", "score": 0},
                 "", {"dialogue_id": "d2", "verdict": "reject", "note": "off topic", "annotator": "bo"},
                 {"dialogue_id": "d3", "turn": 2, "prefer": "a" * 32, "other": "b" * 32})
    read = read_verdict_file(path, "ana")
    assert [where for where, _ in read] == [f"{path}:1", f"{path}:3", f"{path}:4"]
    first, second, third = (v for _, v in read)
    assert (first.turn_index, first.dimension, first.score, first.annotator) == (0, "image_quality", 0.0, "ana")
    assert (second.turn_index, second.verdict, second.note, second.annotator) == (None, "reject", "off topic", "bo")
    assert (third.turn_index, third.prefer, third.other) == (1, "a" * 32, "b" * 32)
    # the same file read again gives the same verdicts, so importing it twice stores each once
    assert [v.verdict_key for _, v in read_verdict_file(path, "ana")] == [v.verdict_key for _, v in read]


@pytest.mark.parametrize(("row", "says"), [
    ({"dialogue_id": "d1", "turn": 1, "dimension": "image_quality", "score": 7}, ":1: field 'score': 7.0 is outside"),
    ({"dialogue_id": "d1", "turn": 1, "dimension": "sharpness", "score": 2}, ":1: field 'dimension': 'sharpness'"),
    ({"dialogue_id": "d1", "turn": 0, "verdict": "accept"}, ":1: field 'turn': turns count from 1"),
    ({"dialogue_id": "d1", "turn": "1", "verdict": "accept"}, ":1: field 'turn': '1' is not a whole number"),
    ({"dialogue_id": "d1", "verdict": "maybe"}, ":1: field 'verdict': 'maybe' is not accept or reject"),
    ({"dialogue_id": "d1", "dimension": "image_quality", "score": 1}, ":1: field 'turn': a score is given to a turn"),
    ({"dialogue_id": "d1", "turn": 1, "score": 1}, ":1: field 'dimension': a score needs both"),
    ({"dialogue_id": "d1", "turn": 1}, ":1: a verdict gives a score"),
    ({"dialogue_id": "d1", "verdict": "accept", "colour": "red"}, ":1: field 'colour' is not a verdict field"),
    ({"turn": 1, "verdict": "accept"}, ":1: field 'dialogue_id'"),
    ("{not json", ":1: not valid JSON"),
])
def test_a_bad_line_is_named_by_file_line_and_field(tmp_path: Path, row: object, says: str) -> None:
    path = lines(tmp_path, row)
    with pytest.raises(VerdictError) as refused:
        read_verdict_file(path, "ana")
    assert str(refused.value).startswith(str(path)) and says in str(refused.value), refused.value


def test_label_studio_export(tmp_path: Path) -> None:
    """A Label Studio JSON export: a Rating per dimension, a 'verdict' Choices and a 'note' TextArea per annotation."""
    export = [{"id": 7, "data": {"dialogue_id": "d1", "turn": 2}, "annotations": [
        {"completed_by": 3, "created_at": "2026-12-01T10:00:00.000Z", "result": [
            {"from_name": "image_quality", "to_name": "image", "type": "rating", "value": {"rating": 2}},
            {"from_name": "text_content", "to_name": "text", "type": "rating", "value": {"rating": 5}},
            {"from_name": "note", "to_name": "text", "type": "textarea", "value": {"text": ["blurry"]}}]},
        {"completed_by": 4, "was_cancelled": True, "result": []},
        {"completed_by": 5, "result": [{"from_name": "verdict", "type": "choices", "value": {"choices": ["Reject"]}}]},
    ]}]
    path = tmp_path / "project-1.json"
    path.write_text(json.dumps(export))
    read = [v for _, v in read_verdict_file(path, "ana")]
    assert [(v.annotator, v.turn_index, v.dimension, v.score, v.verdict, v.note) for v in read] == [
        ("3", 1, "image_quality", 2.0, None, "blurry"), ("3", 1, "text_content", 5.0, None, "blurry"),
        ("5", 1, None, None, "reject", "")]
    assert read[0].created_at.isoformat() == "2026-12-01T10:00:00+00:00"
    path.write_text(json.dumps([{"id": 8, "annotations": []}]))
    with pytest.raises(VerdictError, match="task 8: field 'data'"):
        read_verdict_file(path, "ana")


def test_people_override_the_judge_only_when_asked() -> None:
    judged = [{"text_content": 4.0, "image_quality": 4.0}, {"text_content": 4.0, "image_quality": 1.0}]
    people = HumanSays(scores={0: {"image_quality": 1.0}, 1: {"image_quality": 5.0}})
    off = ScoringConfig(weights=WEIGHTS, thresholds=THRESHOLDS)
    override = off.model_copy(update={"human": "override"})
    weight = off.model_copy(update={"human": "weight", "human_weight": 0.5})
    assert decide("", judged, THRESHOLDS, None, people, off).reason == "turn 2: image_quality 1.00 < 3.00"
    assert decide("", judged, THRESHOLDS, None, people, override).reason == "turn 1: image_quality 1.00 < 3.00"
    # (4 + 1) / 2 = 2.5 fails turn 1; (1 + 5) / 2 = 3 passes turn 2
    assert decide("", judged, THRESHOLDS, None, people, weight).reason == "turn 1: image_quality 2.50 < 3.00"
    rejected = HumanSays(turns={0: "reject"})
    assert decide("", judged[:1], THRESHOLDS, None, rejected, override) .reason == "turn 1: rejected by a person"
    assert decide("", judged[:1], THRESHOLDS, None, rejected, weight).accepted  # weight: scores only
    accepted = HumanSays(dialogue="accept")
    assert decide("", judged, THRESHOLDS, None, accepted, override).accepted
    assert not decide("no usable draft", judged, THRESHOLDS, None, accepted, override).accepted  # nothing to accept
    assert decide("", judged[:1], THRESHOLDS, None, HumanSays(dialogue="reject"), override).reason == \
        "dialogue: rejected by a person"


def test_a_job_without_people_keeps_its_keys() -> None:
    """`scoring.human` left at its default leaves the scoring config's dump, and so every key, as it was."""
    plain = ScoringConfig(weights=WEIGHTS, thresholds=THRESHOLDS)
    assert set(plain.model_dump(mode="json")) == {"weights", "thresholds"}
    assert plain.model_copy(update={"human": "override"}).model_dump(mode="json")["human"] == "override"
