"""Judge evaluation: metrics against hand computations and scipy, readers on the real InterMT file and on our JSONL,
and whole evaluations with an oracle judge and with the tiny judge."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from seir.operators.backends.base import ChatRequest, ChatResult, Sampling, ScoreRequest, ScoreResult
from seir.operators.scoring.judge import JudgeScorer
from seir.operators.scoring.judge_eval import (
    EvalDataError,
    EvalItem,
    EvalSet,
    Preference,
    agreement,
    evaluate,
    pair_accuracy,
    read_eval_data,
    read_intermt,
    read_jsonl,
)
from seir.operators.scoring.measures import (
    average_ranks,
    fisher_interval,
    kendall_tau_b,
    pearson,
    spearman,
    wilson_interval,
)
from seir.operators.scoring.rubrics import DIMENSIONS, INTERMT_DIALOGUE, INTERMT_TURN, DialogueView, TurnView
from tests.conftest import shared_file


@pytest.fixture(scope="module")
def intermt_file() -> Path:
    return shared_file("intermt", "score_evaluation_test.json")

HUMAN = [0, 1, 2, 3, 3, 2, 1, 3]
MODEL = [0.4, 1.2, 1.4, 2.9, 2.6, 2.2, 1.5, 1.9]


def test_correlations_match_a_hand_computation_and_scipy() -> None:
    n = len(HUMAN)
    mh, mm = sum(HUMAN) / n, sum(MODEL) / n
    cov = sum((h - mh) * (m - mm) for h, m in zip(HUMAN, MODEL, strict=True))
    by_hand = cov / math.sqrt(sum((h - mh) ** 2 for h in HUMAN) * sum((m - mm) ** 2 for m in MODEL))
    assert pearson(HUMAN, MODEL) == pytest.approx(by_hand, abs=1e-12)
    assert pearson(HUMAN, MODEL) == pytest.approx(stats.pearsonr(HUMAN, MODEL).statistic, abs=1e-12)
    # human ranks with ties: 0 -> 1; the two 1s -> 2.5; the two 2s -> 4.5; the three 3s -> 7
    assert average_ranks(HUMAN).tolist() == [1, 2.5, 4.5, 7, 7, 4.5, 2.5, 7]
    assert spearman(HUMAN, MODEL) == pytest.approx(stats.spearmanr(HUMAN, MODEL).statistic, abs=1e-12)
    assert pearson([1, 1, 1], [1, 2, 3]) is None and spearman([2], [3]) is None


def test_agreement_rounds_half_up_onto_the_scale() -> None:
    # rounded: 0, 1, 1, 3, 3, 2, 2, 2 against 0, 1, 2, 3, 3, 2, 1, 3 -> 5 of 8 exact, all within one
    assert agreement(HUMAN, MODEL, (0, 3)) == (5 / 8, 1.0)
    assert agreement([0, 3], [-0.7, 4.4], (0, 3)) == (1.0, 1.0)  # clipped onto the scale
    assert agreement([2, 0], [0.5, 2.49], (0, 3)) == (0.0, 0.5)


def test_pair_accuracy_counts_ordered_pairs_within_groups() -> None:
    human = [1, 2, 3, 2, 2, 0, 3]
    model = [0.5, 2.5, 2.0, 1.0, 1.0, 9.0, 9.0]
    groups = ["a", "a", "a", "b", "b", None, "c"]
    # group a: (1,2) right, (1,3) right, (2,3) wrong; group b: equal humans, no pair; c alone; None never paired
    assert pair_accuracy(human, model, groups) == (3, 2.0)
    assert pair_accuracy([1, 2], [1.0, 1.0], ["g", "g"]) == (1, 0.5)  # a model tie earns half


@pytest.fixture(scope="module")
def intermt(intermt_file: Path) -> EvalSet:
    return read_eval_data(intermt_file)


def test_reads_the_real_intermt_file(intermt: EvalSet, intermt_file: Path) -> None:
    raw = json.loads(intermt_file.read_text(encoding="utf-8"))
    turns = [i for i in intermt.items if isinstance(i.view, TurnView)]
    dialogues = [i for i in intermt.items if isinstance(i.view, DialogueView)]
    assert len(dialogues) == len(raw) == 248 and len(turns) == 1514
    first = raw[0]["conversations"]
    assert dialogues[0].human == {k: v for k, v in first[0]["annotations"].items() if not k.startswith("reason")}
    second = next(i for i in turns if i.item_id == "0/2")
    assert second.view.question == first[2]["round_conversations"]["prompt"]
    earlier = first[1]["round_conversations"]
    assert second.view.history == [(earlier["prompt"], earlier["response"])]
    assert set(second.human) == set(INTERMT_TURN) and second.group == "dialogue 0"
    assert all(i.unavailable == {"image"} and i.view.image is None for i in turns)  # the file ships no images
    assert {d.group for d in dialogues} == {"dialogues"} and len(dialogues[0].view.turns) == len(first) - 1


def test_intermt_images_beside_the_file_are_used(tmp_path: Path, intermt_file: Path) -> None:
    item = json.loads(intermt_file.read_text(encoding="utf-8"))[0]
    (tmp_path / "images").mkdir()
    first_image = item["conversations"][1]["round_conversations"]["response_images"][0]
    (tmp_path / first_image).write_bytes(b"picture bytes")
    (tmp_path / "bench.json").write_text(json.dumps([item]))
    data = read_intermt(tmp_path / "bench.json")
    assert data.items[0].view.image == b"picture bytes" and data.items[0].unavailable == frozenset()
    assert data.items[1].unavailable == {"image"} and data.items[-1].unavailable == {"image"}


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d[1].update(conversations="x"), "item 1: field 'conversations' should be list"),
    (lambda d: d[0]["conversations"][2]["annotations"].update(text_quality="good"),
     "item 0: field conversations[2].annotations.'text_quality' should be a number in 0-3"),
    (lambda d: d[0]["conversations"][1]["round_conversations"].pop("response"),
     "item 0: field conversations[1].round_conversations.'response' is missing"),
    (lambda d: d[2]["conversations"][0]["annotations"].update(helpfulness=7),
     "item 2: field conversations[0].annotations.'helpfulness' should be a number in 0-3"),
])
def test_intermt_reader_names_item_and_field(tmp_path: Path, intermt_file: Path, mutate, message: str) -> None:
    data = json.loads(intermt_file.read_text(encoding="utf-8"))[:3]
    mutate(data)
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(EvalDataError, match=re.escape(f"bad.json: {message}")):
        read_intermt(tmp_path / "bad.json")


def write_jsonl(folder: Path, rows: list[object]) -> Path:
    path = folder / "eval.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


GOOD_ROWS: list[object] = [
    {"id": "a1", "question": "How do I boil an egg?", "answer": "Simmer it for nine minutes.", "caption": "An egg.",
     "image": "egg.png", "scores": {"text_content": 4, "image_quality": 3}, "group": "egg"},
    {"id": "a2", "question": "How do I boil an egg?", "answer": "Eggs are food.", "scores": {"text_content": 1},
     "group": "egg", "history": [["Hi", "Hello"]]},
    {"id": "a3", "question": "How do I poach an egg?", "answer": "Swirl simmering water, slide the egg in.",
     "scores": {"text_content": 5}},
    "",
    {"id": "d1", "turns": [{"question": "Plan a picnic?", "answer": "Pack sandwiches."}],
     "scores": {"helpfulness": 2, "style_coherence": 1}},
    {"preference": {"chosen": "a3", "rejected": "a2", "dimension": "text_content"}},
]


def test_reads_our_jsonl(tmp_path: Path) -> None:
    (tmp_path / "egg.png").write_bytes(b"egg picture")
    data = read_eval_data(write_jsonl(tmp_path, GOOD_ROWS))
    assert [i.item_id for i in data.items] == ["a1", "a2", "a3", "d1"]
    assert data.items[0].view.image == b"egg picture" and data.items[1].view.history == [("Hi", "Hello")]
    assert data.items[1].view.caption is None and data.items[0].group == "egg" and data.items[2].group is None
    assert isinstance(data.items[3].view, DialogueView) and data.items[3].human == {"helpfulness": 2.0,
                                                                                    "style_coherence": 1.0}
    assert data.preferences == [Preference("a3", "a2", "text_content")]


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected an object, got list"),
    ({"id": "x", "answer": "a", "scores": {}}, "a line holds a turn"),
    ({"id": "x", "question": "q", "scores": {"text_content": 6}}, "field scores.'text_content' should be a number"),
    ({"id": "x", "question": "q", "scores": {"txt": 3}}, "field scores.'txt' is not a known dimension"),
    ({"id": "x", "question": "q"}, "field 'scores' is missing"),
    ({"id": 3, "question": "q", "scores": {}}, "field 'id' should be str, got int"),
    ({"id": "x", "question": "q", "image": "nowhere.png", "scores": {}}, "field 'image': cannot read 'nowhere.png'"),
    ({"id": "x", "question": "q", "history": [["only one"]], "scores": {}}, "field 'history' should be a list of"),
    ({"id": "x", "turns": [{"answer": "a"}], "scores": {}}, "field turns[0].'question' is missing"),
    ({"preference": {"chosen": "a2", "rejected": "zz"}}, "field 'preference.rejected' names no item: 'zz'"),
    ({"preference": {"chosen": "a2", "rejected": "a2", "dimension": "vibes"}}, "names unknown dimension 'vibes'"),
])
def test_jsonl_reader_names_line_and_field(tmp_path: Path, line: object, message: str) -> None:
    path = write_jsonl(tmp_path, [GOOD_ROWS[1], line])  # the bad row is line 2
    with pytest.raises(EvalDataError, match=re.escape(f"{path}:2: ") + ".*" + re.escape(message)):
        read_jsonl(path)


def test_jsonl_ids_must_be_unique(tmp_path: Path) -> None:
    with pytest.raises(EvalDataError, match=re.escape("eval.jsonl: ids repeat: ['a2']")):
        read_jsonl(write_jsonl(tmp_path, [GOOD_ROWS[1], GOOD_ROWS[1]]))


class Oracle:
    """A judge that knows the human scores: its score tokens put all mass on the human level (plus a nudge)."""

    def __init__(self, data: EvalSet, nudge: float = 0.0) -> None:
        self.by_answer = {self._key(i.view): i.human for i in data.items}
        self.nudge = nudge

    @staticmethod
    def _key(view: TurnView | DialogueView) -> str:
        return view.turns[-1].answer if isinstance(view, DialogueView) else view.answer or ""

    def chat(self, requests: list[ChatRequest]) -> list[ChatResult]:
        return [ChatResult("Looks fine.\nnone", 10, 3, "stop") for _ in requests]

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        results = []
        for request in requests:
            text = "".join(p.get("text", "") for p in request.messages[0]["content"])
            human = next(h for answer, h in self.by_answer.items() if f"Assistant: {answer}\n" in text)
            lines = {f"{d.title} score ({d.scale[0]}-{d.scale[1]}): ": d for d in DIMENSIONS.values()}
            dimension = next(d for line, d in lines.items() if request.answer_prefix.endswith(line))
            level = min(int(human[dimension.name] + self.nudge), dimension.scale[1])
            probabilities = [1.0 if str(level) == label else 0.0 for label in request.labels]
            results.append(ScoreResult(probabilities, float(level), 0.95, 10))
        return results


def test_an_oracle_judge_agrees_perfectly(tmp_path: Path) -> None:
    (tmp_path / "egg.png").write_bytes(b"egg picture")  # undecodable: the judge scores image_quality 0
    data = read_jsonl(write_jsonl(tmp_path, GOOD_ROWS))
    oracle = Oracle(data)
    report = evaluate(data, JudgeScorer(oracle.chat, oracle.score), rubric="synjudge")
    text_content = next(d for d in report.dimensions if d.name == "text_content")
    assert (text_content.n, text_content.exact, text_content.within_one) == (3, 1.0, 1.0)
    assert text_content.pearson == pytest.approx(1.0) and text_content.spearman == pytest.approx(1.0)
    assert (text_content.pairs, text_content.pair_accuracy) == (2, 1.0)  # a1 > a2 in group egg, and a3 > a2
    quality = next(d for d in report.dimensions if d.name == "image_quality")
    assert quality.n == 1 and quality.exact == 0.0  # the picture does not decode, so the judge gave 0, not 3
    assert quality.pearson is None and "n/a" in report.to_text()
    unscored = next(d for d in report.dimensions if d.name == "image_content")
    assert not unscored.evaluable and unscored.reason == "no human scores for it in this data"
    assert {p.item_id for p in report.predictions} == {"a1", "a2", "a3"}


def test_evaluate_on_intermt_with_the_tiny_judge(intermt: EvalSet, tiny_models: dict[str, Path]) -> None:
    from seir.operators.backends.transformers_vision import TransformersVisionChat

    backend = TransformersVisionChat(str(tiny_models["judge"]))
    judge = JudgeScorer(backend.chat, backend.score, sampling=Sampling(max_new_tokens=8))
    subset = EvalSet(intermt.source, [i for i in intermt.items if i.item_id.split("/")[0] in {"1", "20"}])  # short ones
    report = evaluate(subset, judge, rubric="intermt", batch_size=4)
    evaluable = {d.name for d in report.dimensions if d.evaluable}
    assert evaluable == {"text_quality", "context_coherence", "context_awareness", "helpfulness",
                         "crucial_step_recognition"}
    for d in report.dimensions:
        if d.evaluable:
            assert d.n == sum(1 for i in subset.items if d.name in i.human) and d.skipped == 0
            assert 0 <= d.exact <= d.within_one <= 1 and 0 < d.label_mass <= 1
        else:
            assert d.reason.startswith("needs image, which") and d.skipped > 0
    turns = next(d for d in report.dimensions if d.name == "text_quality")
    assert turns.level == "turn" and turns.pairs > 0 and 0 <= turns.pair_accuracy <= 1
    assert json.loads(report.to_json()) == json.loads(json.dumps(report.to_dict()))
    table = report.to_text()
    assert "visual_perceptual_quality" in table and "not evaluable: needs image" in table
    assert report.judge["operator"] == "judge" and report.n_items == len(subset.items)


def test_evaluate_accepts_a_plain_list_and_a_custom_rubric() -> None:
    items = [EvalItem(str(k), TurnView("q", f"answer {k}"), {"text_quality": float(k % 4)}, "g") for k in range(6)]
    oracle = Oracle(EvalSet("x", items), nudge=1)  # one level too high, except at the top
    report = evaluate(items, JudgeScorer(oracle.chat, oracle.score), rubric={"text_quality": INTERMT_TURN[
        "text_quality"], "helpfulness": INTERMT_DIALOGUE["helpfulness"]})
    quality = report.dimensions[0]
    assert report.rubric == "custom" and quality.exact == pytest.approx(1 / 6) and quality.within_one == 1.0
    assert quality.spearman == pytest.approx(stats.spearmanr([k % 4 for k in range(6)],
                                                             [min(k % 4 + 1, 3) for k in range(6)]).statistic)
    assert not report.dimensions[1].evaluable
    with pytest.raises(ValueError, match="unknown rubric 'vibes'; known: synjudge"):
        evaluate(items, JudgeScorer(oracle.chat, oracle.score), rubric="vibes")


def test_kendall_tau_b_and_intervals_match_scipy() -> None:
    """Tau-b with ties on both sides, as scipy computes it; the intervals hold the estimate and narrow with n."""
    rng = np.random.default_rng(3)
    human = rng.integers(0, 6, 200).astype(float)  # 0-5 scores: many ties
    model = np.round(human + rng.normal(0, 1.5, 200), 1)
    assert kendall_tau_b(human, model) == pytest.approx(stats.kendalltau(human, model).statistic, abs=1e-12)
    assert kendall_tau_b([1, 1, 1], [1, 2, 3]) is None
    low, high = fisher_interval(0.5, 50, 1.06 / 47)
    assert low < 0.5 < high and high - low > fisher_interval(0.5, 500, 1.06 / 497)[1] - 0.5
    wide, narrow = wilson_interval(7, 10), wilson_interval(700, 1000)
    assert wide[0] < 0.7 < wide[1] and narrow[1] - narrow[0] < wide[1] - wide[0]
    assert wilson_interval(0, 0) is None
