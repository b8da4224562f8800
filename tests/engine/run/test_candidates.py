"""Best-of-N: several candidates per round of a stage, judged together, the best refined; pairwise judging in both
orders; sibling preference pairs; one candidate keeps every key of today (local Ray, tiny models, everything read
back from provenance)."""

from __future__ import annotations

import io
import itertools
import json
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from seir.engine.export import ExportOptions, export
from seir.engine.keys import content_key
from seir.engine.run import Runner
from seir.engine.spec import JobSpecError, load_job
from seir.operators.registry import lookup
from seir.operators.stages import BUILT_IN
from tests.engine.conftest import TOPICS, FinishedRun, job_dict, run_job, write_job
from tests.engine.export.test_export import _args, _train, exported_pairs, load

BASE = {"turns": 1, "rounds": 1, "gate_default": 5.0}  # no draft reaches a gate of 5: every stage is refined


def _job(folder: Path, name: str, **seir: Any) -> Path:
    return write_job(folder, job_dict(name, topics=TOPICS[:2], seir={**BASE, **seir}))


@pytest.fixture(scope="module")
def single(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> FinishedRun:
    folder = tmp_path_factory.mktemp("single")
    return run_job(_job(folder, "single"), folder / "out")


@pytest.fixture(scope="module")
def best_of_three(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> FinishedRun:
    folder = tmp_path_factory.mktemp("best-of-three")
    # Compared pairwise but ranked by scores: the comparisons are recorded beside them.
    return run_job(_job(folder, "three", candidates=3, pairwise="record"), folder / "out")


@pytest.fixture(scope="module")
def ranked(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> FinishedRun:
    folder = tmp_path_factory.mktemp("ranked")
    return run_job(_job(folder, "ranked", candidates={"answer": 3, "image": 2}, pairwise="rank"), folder / "out")


def _drafts(run: FinishedRun) -> list[dict[str, Any]]:
    """Every draft with its mean combined score on its stage's dimensions (None when it was not judged)."""
    rows = run.sql("""SELECT draft_key, dialogue_key, turn_index, stage, round, candidate, ok, best, round_best,
                             call_keys, text, run_id FROM drafts ORDER BY ALL""")
    names = ("draft_key", "dialogue_key", "turn_index", "stage", "round", "candidate", "ok", "best", "round_best",
             "call_keys", "text", "run_id")
    drafts = [dict(zip(names, row, strict=True)) for row in rows]
    for draft in drafts:
        dims = lookup("stage", draft["stage"]).dimensions
        values = [v for d, v in run.sql("SELECT dimension, value FROM scores WHERE draft_key = ? AND run_id = ? AND "
                                        "scorer = 'combined'", [draft["draft_key"], draft["run_id"]]) if d in dims]
        draft["mean"] = sum(values) / len(values) if values else None
    return drafts


def _rounds(drafts: list[dict[str, Any]]) -> dict[tuple[str, int, str, int], list[dict[str, Any]]]:
    grouped: dict[tuple[str, int, str, int], list[dict[str, Any]]] = defaultdict(list)
    for draft in drafts:
        grouped[(draft["dialogue_key"], draft["turn_index"], draft["stage"], draft["round"])].append(draft)
    return grouped


def _request(run: FinishedRun, call_key: str) -> dict[str, Any]:
    return json.loads(run.sql("SELECT request FROM call_outputs WHERE call_key = ?", [call_key])[0][0])


def _writer_call(run: FinishedRun, draft: dict[str, Any]) -> dict[str, Any]:
    keys = run.sql("SELECT call_key, batch_id FROM model_calls WHERE call_key IN (SELECT unnest(?::VARCHAR[])) "
                   "AND role = 'llm' ORDER BY call_key", [draft["call_keys"]])
    return {"call_key": keys[0][0], "batch_id": keys[0][1], "request": _request(run, keys[0][0])}


def test_every_round_holds_n_candidates_judged_together_and_the_best_goes_on(best_of_three: FinishedRun) -> None:
    rounds = _rounds(_drafts(best_of_three))
    assert rounds and {stage for _, _, stage, _ in rounds} == set(BUILT_IN)
    for (_, _, stage, round_), candidates in rounds.items():
        assert sorted(d["candidate"] for d in candidates) == [0, 1, 2], (stage, round_)
        assert len({d["draft_key"] for d in candidates}) == 3
        judged = [d for d in candidates if d["ok"] and d["mean"] is not None]
        chosen = [d for d in candidates if d["round_best"]]
        assert len(chosen) == 1
        if judged:
            assert chosen[0]["mean"] == max(d["mean"] for d in judged)
    for (dialogue, turn, stage, _), _ in rounds.items():
        stage_drafts = [d for (k, t, s, _), ds in rounds.items() if (k, t, s) == (dialogue, turn, stage) for d in ds]
        kept = [d for d in stage_drafts if d["best"]]
        assert len(kept) == 1
        assert kept[0]["mean"] == max(d["mean"] for d in stage_drafts if d["mean"] is not None)
    # The first round's question candidates: distinct sampling seeds, asked in one batched call.
    first = [ds for (_, _, stage, round_), ds in rounds.items() if stage == "question" and round_ == 0]
    calls = [_writer_call(best_of_three, d) for ds in first for d in ds]
    assert len({c["request"]["sampling"]["seed"] for c in calls}) == len(calls) == 3 * len(first)
    assert len({c["batch_id"] for c in calls}) == 1


def test_one_candidate_keeps_every_key_and_its_drafts_are_todays(single: FinishedRun, best_of_three: FinishedRun,
                                                                 tmp_path: Path) -> None:
    base = job_dict("keys", topics=TOPICS[:2], seir=BASE)
    plain = load_job(write_job(tmp_path / "plain", base))
    for same in ({"candidates": 1}, {"candidates": {"question": 1, "answer": 1, "image": 1}}, {"pairwise": "off"}):
        spelled = load_job(write_job(tmp_path / "spelled", {**base, "seir": {**base["seir"], **same}}))
        assert (spelled.key(), spelled.generation_key("p")) == (plain.key(), plain.generation_key("p")), same
    more = load_job(write_job(tmp_path / "more", {**base, "seir": {**base["seir"], "candidates": {"answer": 2}}}))
    assert more.generation_key("p") != plain.generation_key("p")
    # Today's draft key (dialogue, turn, stage, round) names every draft of a one-candidate run...
    for draft in _drafts(single):
        expected = content_key([draft["dialogue_key"], draft["turn_index"], draft["stage"], draft["round"]])
        assert (draft["draft_key"], draft["candidate"], draft["round_best"]) == (expected, 0, True)
    # ... and a best-of-three run's first candidates are today's drafts: the same first question requests.
    def first_questions(run: FinishedRun) -> set[str]:
        return {_writer_call(run, d)["call_key"] for d in _drafts(run)
                if (d["stage"], d["round"], d["candidate"]) == ("question", 0, 0)}

    assert first_questions(single) == first_questions(best_of_three)
    # Spelling out one candidate per stage remakes nothing: the same dialogues, no computed call.
    out = Path(shutil.copytree(single.out, tmp_path / "out"))
    spelled_job = write_job(tmp_path / "again", job_dict("single", topics=TOPICS[:2], seir={
        **BASE, "candidates": {"question": 1, "answer": 1, "image": 1}, "pairwise": "off"}))
    again = run_job(spelled_job, out)
    assert "0 dialogues to make" in again.log
    run_id = again.sql("SELECT run_id FROM runs WHERE kind = 'run' ORDER BY started_at DESC LIMIT 1")[0][0]
    assert again.sql("SELECT count(*) FROM model_calls WHERE run_id = ? AND NOT cached", [run_id]) == [(0,)]


def test_pairwise_judging_asks_both_orders_stores_both_and_ranks_by_them(ranked: FinishedRun) -> None:
    drafts = {d["draft_key"]: d for d in _drafts(ranked)}
    rows = ranked.sql("SELECT stage, round, first_key, second_key, p_first, p_second, p_tie, call_key "
                      "FROM comparisons")
    assert rows and {stage for stage, *_ in rows} == {"answer", "image"}  # one question candidate: none compared
    asked = {(first, second): (p_first, p_second, p_tie, key) for _, _, first, second, p_first, p_second, p_tie, key
             in rows}
    assert len(asked) == len(rows) and len({key for *_, key in asked.values()}) == len(rows)
    for (first, second), (p_first, p_second, p_tie, key) in asked.items():
        assert (second, first) in asked  # both orders
        assert p_first + p_second + p_tie == pytest.approx(1.0)
        assert drafts[first]["round"] == drafts[second]["round"] and drafts[first]["stage"] == drafts[second]["stage"]
        if drafts[first]["stage"] == "answer":  # the request shows the first candidate as A, the second as B
            text = "".join(part.get("text") or "" for part in _request(ranked, key)["messages"][0]["content"])
            assert 0 <= text.index(drafts[first]["text"]) < text.index("Candidate B") < text.index(
                drafts[second]["text"])
    for (_, _, stage, _), candidates in _rounds(list(drafts.values())).items():
        judged = [d for d in candidates if d["ok"] and d["mean"] is not None]
        if stage == "question" or len(judged) < 2:
            continue
        pairs = list(itertools.combinations(judged, 2))
        assert {(a["draft_key"], b["draft_key"]) for a, b in pairs} <= set(asked)
        standing = {}
        for d in judged:  # each candidate's win probability (a tie half), averaged over every order it was asked
            wins = [asked[(d["draft_key"], o["draft_key"])][0] + asked[(d["draft_key"], o["draft_key"])][2] / 2
                    for o in judged if o is not d]
            wins += [asked[(o["draft_key"], d["draft_key"])][1] + asked[(o["draft_key"], d["draft_key"])][2] / 2
                     for o in judged if o is not d]
            standing[d["draft_key"]] = sum(wins) / len(wins)
        chosen = next(d for d in candidates if d["round_best"])
        assert chosen["draft_key"] == max(judged, key=lambda d: (standing[d["draft_key"]], d["mean"]))["draft_key"]
    assert ranked.sql("SELECT count(*), bool_and(orders = 2) FROM candidate_preferences")[0] == (len(rows), True)


def _sibling_pairs(run: FinishedRun) -> set[tuple[str, str]]:
    """Sibling pairs computed from the drafts table alone: two judged candidates of one round of an accepted
    dialogue, the higher mean score chosen."""
    accepted = {k for (k,) in run.sql("SELECT dialogue_key FROM version_dialogues WHERE accepted AND version = "
                                      "(SELECT max(version) FROM versions)")}
    pairs = set()
    for (dialogue, *_), candidates in _rounds(_drafts(run)).items():
        judged = [d for d in candidates if d["ok"] and d["mean"] is not None and dialogue in accepted]
        pairs |= {(a["draft_key"], b["draft_key"]) for a in judged for b in judged if a["mean"] > b["mean"]}
    return pairs


def test_sibling_pairs_share_their_prompt_and_equal_an_independent_computation(best_of_three: FinishedRun,
                                                                               tmp_path: Path) -> None:
    to = tmp_path / "siblings"
    export(best_of_three.out, to, ExportOptions("trl-dpo", pairs="siblings"))
    rows = exported_pairs(to)
    expected = _sibling_pairs(best_of_three)
    assert expected and {(r["chosen_draft_key"], r["rejected_draft_key"]) for r in rows} == expected
    assert len(rows) == len(expected)
    means = {d["draft_key"]: d["mean"] for d in _drafts(best_of_three)}
    asked = {(first, second): p_first + p_tie / 2 for first, second, p_first, p_tie in best_of_three.sql(
        "SELECT first_key, second_key, p_first, p_tie FROM comparisons")}
    prompts: dict[tuple[str, int, str, int], list[Any]] = defaultdict(list)
    for row in rows:
        assert row["kind"] == "sibling" and row["chosen_round"] == row["rejected_round"]
        assert row["chosen_candidate"] != row["rejected_candidate"]
        chosen, rejected = row["chosen_draft_key"], row["rejected_draft_key"]
        assert row["pairwise"] == pytest.approx((asked[(chosen, rejected)] + 1 - asked[(rejected, chosen)]) / 2)
        assert row["chosen_score"] == pytest.approx(means[row["chosen_draft_key"]])
        assert row["rejected_score"] == pytest.approx(means[row["rejected_draft_key"]])
        assert row["margin"] == pytest.approx(row["chosen_score"] - row["rejected_score"]) and row["margin"] > 0
        prompts[(row["dialogue_key"], row["turn"], row["stage"], row["chosen_round"])].append(row["prompt"])
    assert all(p == group[0] for group in prompts.values() for p in group)
    refinement = exported_pairs(export_to(best_of_three, tmp_path / "refinement", "refinement"))
    both = exported_pairs(export_to(best_of_three, tmp_path / "both", "both"))
    assert refinement and all(r["kind"] == "refinement" and r["pairwise"] is None for r in refinement)
    assert sorted(r["chosen_draft_key"] + r["rejected_draft_key"] for r in both) == sorted(
        r["chosen_draft_key"] + r["rejected_draft_key"] for r in [*rows, *refinement])


def export_to(run: FinishedRun, to: Path, pairs: str) -> Path:
    export(run.out, to, ExportOptions("trl-dpo", pairs=pairs))
    return to


def test_trl_dpo_trainer_runs_on_sibling_pairs(best_of_three: FinishedRun, tiny_models: dict[str, Path],
                                               tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    to = tmp_path / "dpo"
    export(best_of_three.out, to, ExportOptions("trl-dpo", pairs="siblings", stages=("question", "answer")))
    pairs = load(to)["train"]
    text = pairs.filter(lambda row: not row["images"]).remove_columns("images")
    assert text.num_rows and set(text["kind"]) == {"sibling"}
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_models["llm"]),
                         args=_args(DPOConfig, tmp_path / "run"), train_dataset=text,
                         processing_class=AutoTokenizer.from_pretrained(tiny_models["llm"]))
    _train(trainer)


def test_the_refresh_forecast_counts_the_candidates_and_comparisons(single: FinishedRun, tmp_path: Path) -> None:
    out = Path(shutil.copytree(single.out, tmp_path / "out"))
    job = write_job(tmp_path / "two", job_dict("single", topics=TOPICS[:2], seir={
        **BASE, "candidates": 2, "pairwise": "record"}))
    runner = Runner(load_job(job), out, stream=io.StringIO())
    runner.run(show_plan=True)
    assert runner.forecast is not None and runner.forecast.known
    run_id = FinishedRun(out, {}, "", job).sql(
        "SELECT run_id FROM runs WHERE kind = 'run' ORDER BY started_at DESC LIMIT 1")[0][0]
    computed = dict(FinishedRun(out, {}, "", job).sql(
        "SELECT role, count(*) FROM model_calls WHERE run_id = ? AND NOT cached GROUP BY role", [run_id]))
    assert computed["judge"] > 0
    for role in ("llm", "judge", "image"):
        assert computed.get(role, 0) <= runner.forecast.roles[role].computed_max, role
    # The bound is N per round: one candidate would bound half as many writer calls.
    one = Runner(load_job(write_job(tmp_path / "one", job_dict("single", topics=TOPICS[:2], seir={
        **BASE, "gate_default": 4.5}))), Path(shutil.copytree(single.out, tmp_path / "out-one")), stream=io.StringIO())
    one.run(show_plan=True, dry_run=True)
    assert one.forecast is not None
    assert runner.forecast.roles["llm"].computed_max == 2 * one.forecast.roles["llm"].computed_max


def test_candidates_from_a_greedy_writer_are_refused_at_load(tmp_path: Path) -> None:
    job = job_dict("greedy", topics=TOPICS[:2], seir={**BASE, "candidates": {"answer": 3}})
    job["roles"]["llm"]["sampling"] = {"max_new_tokens": 12, "temperature": 0.0}
    with pytest.raises(JobSpecError, match=r"roles\.llm\.sampling\.temperature.*same text"):
        load_job(write_job(tmp_path, job))
    job["seir"]["candidates"] = {"image": 3}  # renders differ by their seeds: fine
    assert load_job(write_job(tmp_path, job)).seir.candidates_for("image") == 3
    for wrong, said in (({"answr": 2}, "unknown stage 'answr'"), (0, r"give 1 to 16 drafts per round")):
        job["seir"]["candidates"] = wrong
        with pytest.raises(JobSpecError, match=rf"greedy\.yaml:\d+: seir\.candidates: .*{said}"):
            load_job(write_job(tmp_path, job))


def test_asking_for_sibling_pairs_of_a_one_candidate_output_says_why_there_are_none(
        single: FinishedRun, best_of_three: FinishedRun, tmp_path: Path) -> None:
    said = io.StringIO()
    export(single.out, tmp_path / "none", ExportOptions("trl-dpo", pairs="siblings"), stream=said)
    assert "no sibling pairs here" in said.getvalue() and "seir.candidates above 1" in said.getvalue()
    assert not exported_pairs(tmp_path / "none")
    said = io.StringIO()
    export(best_of_three.out, tmp_path / "some", ExportOptions("trl-dpo", pairs="siblings"), stream=said)
    assert "no sibling pairs" not in said.getvalue() and exported_pairs(tmp_path / "some")
