"""Long dialogues on the tiny models with small windows set on the roles: every recorded request fits its role's
window with room for its reply, left-out history shows its marker, the pictures the user shows in a turn are in
every request of that turn, a refresh replays from the cache, and a window too small for a request's fixed parts
fails those drafts (never sent) while the rest of the shard goes on. The windows are computed here from the real
prompts with the longest texts the job lets the writer make, so what fits never depends on what the random-weight
models happen to write."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import skimage.data

from seir.engine.export import ExportOptions, export
from seir.operators.backends.transformers_vision import TransformersVisionChat
from seir.operators.context import TokenCounter
from seir.operators.scoring.rubrics import INTERMT_DIALOGUE, SYNJUDGE, DialogueView, TurnView, critique_messages
from seir.operators.stages.prompts import History, caption_messages, question_messages
from tests.engine.conftest import FinishedRun, run_job, write_job
from tests.engine.export.test_export import _args as trainer_args
from tests.engine.export.test_export import _train as train_briefly
from tests.engine.export.test_export import assert_pair_prompts_are_the_writers_requests
from tests.engine.run.test_image_seeds import VLM, image_job, save_photo, shown

pytestmark = pytest.mark.slow

TURNS = 10
REPLY = {"llm": 24, "judge": 8}
SLACK = 40  # a reply decoded and tokenised again may come out a few tokens longer than it was written
PHOTOS = ("astronaut", "coffee", "rocket", "chelsea", "camera")


def stand_in(tokens: int) -> str:
    return " ".join(["picture"] * tokens)  # one token each in the tiny tokenizer


def blank(side: int = 32) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (side, side)).save(out, format="PNG")
    return out.getvalue()


def windows(counter: TokenCounter, opening: str) -> dict[str, int]:
    """Windows the requests' fixed parts always fit (their texts at the longest the writer can make them), and that
    the history of the later turns cannot fit beside."""
    text, pictures = stand_in(REPLY["llm"]), [blank()] * len(PHOTOS)
    writer = max(counter.count(question_messages(opening, History(), 50, images=pictures[:2])),
                 counter.count(caption_messages(text, text, 65, images=pictures, starts=pictures[:2])))
    turn = TurnView(text, text, text, blank(), shown=pictures[:2], source=blank())  # an edit: source and result
    judge = max(counter.count(critique_messages(list(SYNJUDGE.values())[1:], turn)),
                counter.count(critique_messages(list(INTERMT_DIALOGUE.values()), DialogueView([turn]))))
    return {"llm": writer + REPLY["llm"] + SLACK, "judge": judge + REPLY["judge"] + 24 + SLACK}


def long_job(name: str, limits: dict[str, int], **seir: int) -> dict:
    job = image_job(name, llm={**VLM, "sampling": {**VLM["sampling"], "max_new_tokens": REPLY["llm"]},
                               "context_length": limits["llm"]})
    job["roles"]["judge"]["context_length"] = limits["judge"]
    job["seir"] = {**job["seir"], "turns": TURNS, "rounds": 0, **seir}
    job["execution"] = {"shard_size": 2, "shards_in_flight": 1}
    job["seeds"] = {"topics": [], "templates": []}  # the seed file's alone
    return job


OPENING = "I will show you my photographs over several turns. Tell me what each shows and draw something from it."


@pytest.fixture(scope="module")
def long_run(ray_local: None, tiny_models: dict[str, Path],
             tmp_path_factory: pytest.TempPathFactory) -> tuple[FinishedRun, dict[str, int], list[list[str]]]:
    folder = tmp_path_factory.mktemp("long")
    keys = {name: save_photo(getattr(skimage.data, name)(), folder / f"{name}.png", side=48) for name in PHOTOS}
    turn_images = [["astronaut.png", "coffee.png"], ["rocket.png"], [], ["chelsea.png"], ["camera.png"]]
    seeds = [{"id": "album", "text": OPENING, "turn_images": turn_images},
             {"id": "plain", "text": "Walk me through a museum of astronomy, room by room, drawing each exhibit."}]
    _, counter = TransformersVisionChat.offline_context(str(tiny_models["judge"]))
    limits = windows(counter, OPENING)
    run = run_job(write_job(folder, long_job("long", limits), seed_lines=seeds), folder / "out", folder / "cache")
    return run, limits, [[keys[name.removesuffix(".png")] for name in names] for names in turn_images]


def test_every_recorded_request_fits_its_window_with_room_for_its_reply(long_run) -> None:
    run, limits, _ = long_run
    rows = run.sql("SELECT role, method, max(tokens_in), count(*) FROM model_calls WHERE role IN ('llm', 'judge') "
                   "GROUP BY ALL")
    assert {(role, method) for role, method, _, _ in rows} >= {("llm", "chat"), ("judge", "chat"), ("judge", "score")}
    for role, method, longest, _ in rows:
        reply = 1 if method == "score" else REPLY[role]
        assert longest + reply <= limits[role], (role, method, longest, limits[role])
    assert run.sql("SELECT count(*) FROM model_calls WHERE error IS NOT NULL") == [(0,)]
    assert run.sql("SELECT count(*) FROM dialogues WHERE failure <> ''") == [(0,)]
    assert run.sql("SELECT max(n_turns) FROM dialogues") == [(TURNS,)]
    assert run.summary.get("did_not_fit") == {}


def test_left_out_history_shows_its_marker_in_the_recorded_requests(long_run) -> None:
    run, _, _ = long_run
    marked = dict(run.sql("""SELECT role, count(*) FROM model_calls JOIN call_outputs USING (call_key)
                             WHERE CAST(request AS VARCHAR) LIKE '%omitted]%' GROUP BY ALL"""))
    assert marked.get("llm", 0) > 0 and marked.get("judge", 0) > 0, marked
    # A whole dialogue's judgement left out its oldest turns too, saying so.
    [(dialogue_marked,)] = run.sql("""SELECT count(*) FROM call_outputs WHERE CAST(request AS VARCHAR) LIKE
                                      '%omitted]%Turn 10%'""")
    assert dialogue_marked > 0


def test_the_pictures_shown_in_a_turn_are_in_every_request_of_that_turn(long_run) -> None:
    """Whatever was left out, each question and answer request of a turn (the writer's and the judge's) ends with
    the pictures the user shows in that turn."""
    run, _, turn_images = long_run
    calls = run.sql("""SELECT dr.turn_index, u.call_key FROM drafts dr JOIN dialogues d USING (dialogue_key),
                       unnest(dr.call_keys) AS u(call_key)
                       WHERE d.dialogue_id = 'album' AND dr.stage IN ('question', 'answer')""")
    assert len(calls) >= 4 * TURNS  # per turn: a question's writer and judge calls, an answer's, its caption's
    for turn, call_key in calls:
        now = turn_images[turn] if turn < len(turn_images) else []
        if now:
            assert shown(run, call_key)[-len(now):] == now, (turn, call_key)


def test_the_same_job_elsewhere_replays_every_call_from_the_cache(long_run, tmp_path: Path) -> None:
    """Into a new output with the first run's call cache: every fitted request is made again exactly as before, so
    every call is answered from the cache and nothing is computed."""
    run, _, _ = long_run
    again = run_job(run.job, tmp_path / "again", run.out.parent / "cache")
    calls = again.summary["calls"]
    assert {"llm", "judge", "image"} <= calls.keys()
    assert {role: c["computed"] for role, c in calls.items()} == dict.fromkeys(calls, 0)
    assert again.sql("SELECT count(*) FROM dialogues") == run.sql("SELECT count(*) FROM dialogues") == [(2,)]
    assert again.sql("SELECT list(messages ORDER BY dialogue_id) FROM dialogues") == \
        run.sql("SELECT list(messages ORDER BY dialogue_id) FROM dialogues")


def test_a_window_too_small_for_the_fixed_parts_fails_those_drafts_unsent(
        ray_local: None, tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """A seed whose opening alone overflows the writer's window: its question request is never sent, its dialogue
    fails with a reason naming the request, its size, the role and the window, and the other dialogue of the shard
    is made; the run summary counts the failed draft for that role."""
    _, counter = TransformersVisionChat.offline_context(str(tiny_models["judge"]))
    limits = windows(counter, OPENING)
    long_opening = "Tell me about the harbor. " * 60
    fixed = counter.count(question_messages(long_opening.strip(), History(), 50))
    assert fixed + REPLY["llm"] > limits["llm"]
    seeds = [{"id": "too-long", "text": long_opening}, {"id": "fits", "text": OPENING}]
    run = run_job(write_job(tmp_path, long_job("small", limits, turns=1), seed_lines=seeds), tmp_path / "out")
    [(failure,)] = run.sql("SELECT failure FROM dialogues WHERE dialogue_id = 'too-long'")
    assert f"question request of {fixed:,} tokens with {REPLY['llm']} to write does not fit llm's " \
           f"{limits['llm']:,}" in failure
    assert run.sql("SELECT failure, n_turns FROM dialogues WHERE dialogue_id = 'fits'") == [("", 1)]
    assert run.summary["did_not_fit"] == {"llm": 1}
    assert "drafts failed as too long for a role's window: llm 1" in run.log
    sent = run.sql("""SELECT count(*) FROM model_calls JOIN call_outputs USING (call_key)
                      WHERE role = 'llm' AND CAST(request AS VARCHAR) LIKE '%Tell me about the harbor. Tell me%'""")
    assert sent == [(0,)]


@pytest.fixture(scope="module")
def album_pairs(ray_local: None, tiny_models: dict[str, Path],
                tmp_path_factory: pytest.TempPathFactory) -> tuple[FinishedRun, Path, dict[str, str]]:
    """Two candidates per round of the question and answer stages on the photo album, in windows its later turns'
    history does not fit, exported as sibling pairs."""
    folder = tmp_path_factory.mktemp("album-pairs")
    keys = {name: save_photo(getattr(skimage.data, name)(), folder / f"{name}.png", side=48) for name in PHOTOS}
    turn_images = [["astronaut.png", "coffee.png"], ["rocket.png"], [], ["chelsea.png"], ["camera.png"]]
    _, counter = TransformersVisionChat.offline_context(str(tiny_models["judge"]))
    job = long_job("pairs", windows(counter, OPENING), turns=6, candidates={"question": 2, "answer": 2})
    seeds = [{"id": "album", "text": OPENING, "turn_images": turn_images}]
    run = run_job(write_job(folder, job, seed_lines=seeds), folder / "out")
    export(run.out, folder / "dpo", ExportOptions("trl-dpo", pairs="siblings"), stream=io.StringIO())
    return run, folder / "dpo", keys


def test_every_pairs_prompt_is_the_fitted_request_with_the_pictures_its_writer_was_sent(album_pairs) -> None:
    """Every sibling pair's prompt is the recorded request both candidates were written for, with the user's
    pictures and the marker of the history left out, as the writer was sent it."""
    run, exported, keys = album_pairs
    pairs = assert_pair_prompts_are_the_writers_requests(run, exported)
    assert pairs and {p["stage"] for p in pairs} <= {"question", "answer"}
    prompts = [json.dumps(p["prompt"]) for p in pairs]
    assert any("omitted]" in prompt for prompt in prompts), "no exported prompt was fitted to its window"
    shown_in_prompts = {image["path"].removesuffix(".png") for p in pairs for image in p["images"]}
    assert shown_in_prompts and shown_in_prompts <= set(keys.values())


def test_trl_dpo_trainer_runs_on_pairs_with_pictures_with_the_tiny_vision_lm(
        album_pairs, tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """TRL's vision preference path, on pairs whose prompts hold the user's pictures."""
    from datasets import load_from_disk
    from transformers import AutoProcessor, LlavaForConditionalGeneration
    from trl import DPOConfig, DPOTrainer

    _, exported, _ = album_pairs
    with_pictures = load_from_disk(str(exported))["train"].filter(lambda row: len(row["images"]) > 0)
    assert with_pictures.num_rows
    trainer = DPOTrainer(model=LlavaForConditionalGeneration.from_pretrained(tiny_models["judge"]),
                         args=trainer_args(DPOConfig, tmp_path / "run", max_length=None), train_dataset=with_pictures,
                         processing_class=AutoProcessor.from_pretrained(tiny_models["judge"]))
    train_briefly(trainer)
