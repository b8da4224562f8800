"""Seeds that bring real photographs (scikit-image's): the writer and the judge see them, the export shows them where
the user brought them, and provenance lists which images each call saw. Assertions read the recorded requests, never
what the random-weight models wrote."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
import skimage.data
from PIL import Image

from seir.engine.keys import bytes_key
from seir.engine.store import ImageStore
from seir.operators.scoring.rubrics import INTERMT_DIALOGUE
from tests.engine.conftest import FinishedRun, job_dict, run_job, write_job

pytestmark = pytest.mark.slow


def save_photo(pixels, path: Path, side: int = 64) -> str:
    """A real photograph, downscaled and saved as PNG; returns the key seir stores it under."""
    image = Image.fromarray(pixels).convert("RGB")
    image.thumbnail((side, side))
    image.save(path)
    return bytes_key(path.read_bytes())


def image_job(name: str, **roles: dict) -> dict:
    """The tiny job, lean: the judge alone scores (the turns, and the dialogue on InterMT's five dimensions), every
    dialogue accepted (thresholds 0), one draft per stage."""
    dimensions = ("question", "text_content", "image_content", "image_quality", "image_text_synergy",
                  *INTERMT_DIALOGUE)
    # A gate of 0 passes every usable first draft; a second round is there only to retry an unusable one.
    job = job_dict(name, seir={"turns": 2, "rounds": 1, "gate_default": 0.0},
                   scoring={"weights": {d: {"judge": 1.0} for d in dimensions},
                            "thresholds": dict.fromkeys(dimensions, 0.0)})
    for role in ("embed", "clip"):
        job["roles"].pop(role)
    job["roles"].update(roles)
    return job


VLM = {"backend": "transformers-vision-chat", "model": "tiny:judge", "num_cpus": 0.4, "batch_size": 8,
       "sampling": {"max_new_tokens": 12, "temperature": 0.8, "top_p": 0.95}}


@pytest.fixture(scope="module")
def photos_run(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[FinishedRun, dict[str, str]]:
    folder = tmp_path_factory.mktemp("image-seeds")
    keys = {name: save_photo(getattr(skimage.data, name)(), folder / f"{name}.png")
            for name in ("astronaut", "coffee", "rocket")}
    seeds = [
        {"id": "pair", "text": "What do these two photos show? Draw them side by side.",
         "images": ["astronaut.png", "coffee.png"]},
        {"id": "later", "text": "How is a rocket launched? Draw the launch pad.",
         "turn_images": [[], ["rocket.png"]]},
        {"id": "plain", "text": "How do yaks stay warm in winter? Draw one in the snow.", "turns": 1},
    ]
    job = write_job(folder, image_job("photos", vlm=VLM), seed_lines=seeds)
    return run_job(job, folder / "out"), keys


def draft_calls(run: FinishedRun, dialogue_id: str, turn: int, stage: str, role: str) -> list[str]:
    """The keys of the calls one role made for a stage of a turn, in the order the drafts made them."""
    return [key for (key,) in run.sql(
        """SELECT c.call_key FROM drafts dr JOIN dialogues d USING (dialogue_key),
                  unnest(dr.call_keys) WITH ORDINALITY AS u(call_key, n)
           JOIN (SELECT DISTINCT call_key, role FROM model_calls) c ON c.call_key = u.call_key
           WHERE d.dialogue_id = ? AND dr.turn_index = ? AND dr.stage = ? AND c.role = ?
           ORDER BY dr.round, u.n""", [dialogue_id, turn, stage, role])]


def shown(run: FinishedRun, call_key: str) -> list[str]:
    return [key for (key,) in run.sql("SELECT image_key FROM call_images WHERE call_key = ? ORDER BY position",
                                      [call_key])]


def test_the_writers_first_request_carries_both_photographs_in_order(photos_run) -> None:
    run, keys = photos_run
    first = draft_calls(run, "pair", 0, "question", "vlm")[0]
    assert shown(run, first) == [keys["astronaut"], keys["coffee"]]
    [(request,)] = run.sql("SELECT request FROM call_outputs WHERE call_key = ?", [first])
    user = json.loads(request)["messages"][-1]["content"]
    assert [part["type"] for part in user] == ["image", "image", "text"]
    assert [part["image"]["__bytes_xxh3_128__"] for part in user[:2]] == [keys["astronaut"], keys["coffee"]]
    # Every question, answer and caption request of that turn went to the vision writer with both photographs.
    for stage in ("question", "answer"):
        assert not draft_calls(run, "pair", 0, stage, "llm")
        written = draft_calls(run, "pair", 0, stage, "vlm")
        assert len(written) >= 1 + (stage == "answer")  # an answer draft is an answer and a caption call
        assert all(shown(run, key)[:2] == [keys["astronaut"], keys["coffee"]] for key in written)
    # The stored photographs are the keyed files, read back byte for byte.
    store = ImageStore(run.out)
    assert bytes_key(store.get(keys["astronaut"])) == keys["astronaut"]


def test_every_judge_request_of_the_turn_sees_the_photographs(photos_run) -> None:
    run, keys = photos_run
    for stage in ("question", "answer", "image"):
        judged = draft_calls(run, "pair", 0, stage, "judge")
        assert judged, stage
        for key in judged:
            assert shown(run, key)[:2] == [keys["astronaut"], keys["coffee"]], stage
    # The image stage's judge sees the user's photographs, then the one the picture was edited from (seir.edit is
    # auto), then the picture made.
    [(generated, source)] = run.sql("""SELECT dr.image_key, dr.source_key FROM drafts dr JOIN dialogues d
                                      USING (dialogue_key)
                                      WHERE d.dialogue_id = 'pair' AND dr.turn_index = 0 AND dr.stage = 'image'""")
    assert source in (keys["astronaut"], keys["coffee"])
    assert all(shown(run, key) == [keys["astronaut"], keys["coffee"], source, generated]
               for key in draft_calls(run, "pair", 0, "image", "judge"))
    # In the next turn the history the judge reads holds the photographs of the first.
    later = draft_calls(run, "pair", 1, "answer", "judge")
    assert later and all(shown(run, key)[:2] == [keys["astronaut"], keys["coffee"]] for key in later)
    # So does the writer of the next question and answer.
    written = draft_calls(run, "pair", 1, "question", "vlm") + draft_calls(run, "pair", 1, "answer", "vlm")
    assert written and all(shown(run, key) == [keys["astronaut"], keys["coffee"]] for key in written)


def test_exported_first_user_message_holds_both_photographs_in_order(photos_run) -> None:
    run, keys = photos_run
    version = run.out / "versions" / "v0001" / "accepted.parquet"
    rows = {row["dialogue_id"]: row for row in pq.read_table(version).to_pylist()}
    messages = rows["pair"]["messages"]
    messages = json.loads(messages) if isinstance(messages, str) else messages
    first = messages[0]
    assert first["role"] == "user"
    parts = [(p["type"], p.get("image")) for p in first["content"]]
    assert parts[:2] == [("image", f"images/{k[:2]}/{k}.png") for k in (keys["astronaut"], keys["coffee"])]
    assert parts[2][0] == "text" and len(parts) == 3
    assert all((run.out / path).is_file() for _, path in parts[:2])
    # Later user turns bring nothing new, so they carry no image part.
    assert all(p["type"] == "text" for m in messages[1:] if m["role"] == "user" for p in m["content"])


def test_a_per_turn_image_appears_in_turn_two_only(photos_run) -> None:
    run, keys = photos_run
    [(messages,)] = run.sql("SELECT messages FROM dialogues WHERE dialogue_id = 'later'")
    users = [m for m in json.loads(messages) if m["role"] == "user"]
    assert [[p.get("image") for p in m["content"] if p["type"] == "image"] for m in users] == [
        [], [f"images/{keys['rocket'][:2]}/{keys['rocket']}.png"]]
    turn_one = draft_calls(run, "later", 0, "question", "vlm")
    assert turn_one and all(not shown(run, key) for key in turn_one)
    turn_two = draft_calls(run, "later", 1, "question", "vlm")
    assert turn_two and all(shown(run, key) == [keys["rocket"]] for key in turn_two)
    judged = draft_calls(run, "later", 1, "answer", "judge")
    assert judged and all(keys["rocket"] in shown(run, key) for key in judged)


def test_a_text_seed_is_written_by_the_text_writer_and_shows_no_image(photos_run) -> None:
    run, keys = photos_run
    calls = draft_calls(run, "plain", 0, "question", "llm") + draft_calls(run, "plain", 0, "answer", "llm")
    assert calls and not draft_calls(run, "plain", 0, "question", "vlm")
    assert all(not shown(run, key) for key in calls)
    assert run.sql("SELECT turn_images FROM seeds WHERE seed_id = 'later'") == [([[], [keys["rocket"]]],)]


def test_call_images_is_read_back_by_a_plain_duckdb_query(photos_run) -> None:
    run, _ = photos_run
    with duckdb.connect(str(run.out / "provenance.duckdb"), read_only=True) as con:
        roles = dict(con.execute("""SELECT c.role, count(DISTINCT i.call_key) FROM call_images i
                                    JOIN model_calls c USING (call_key) GROUP BY ALL""").fetchall())
    assert roles.get("vlm", 0) > 0 and roles.get("judge", 0) > 0 and "llm" not in roles


def test_a_rescore_shows_the_judge_the_same_photographs(photos_run, tmp_path: Path) -> None:
    """A rescore under another weighting asks the judge exactly what the loop asked, pictures included: every judge
    call is answered from the cache."""
    import io
    import shutil

    from seir.engine.run import Runner
    from seir.engine.spec import load_job

    run, keys = photos_run
    out = tmp_path / "out"
    shutil.copytree(run.out, out)
    job = image_job("photos", vlm=VLM)
    job["scoring"]["weights"]["image_quality"] = {"judge": 0.5, "image-quality": 0.5}
    path = write_job(tmp_path / "job", job, seed_lines=[])
    spec = load_job(path).model_copy(update={"seeds": load_job(run.job).seeds})
    summary = Runner(spec, out, stream=io.StringIO()).rescore()
    rescored = FinishedRun(out, summary, "", path)
    [(run_id,)] = rescored.sql("SELECT run_id FROM runs WHERE kind = 'rescore'")
    calls = rescored.sql("SELECT call_key, cached FROM model_calls WHERE run_id = ? AND role = 'judge'", [run_id])
    assert calls and all(cached for _, cached in calls)
    assert any(shown(rescored, key)[:2] == [keys["astronaut"], keys["coffee"]] for key, _ in calls)
    # The dialogue-level dimensions are judged again too, over the same turns and pictures (so from the cache).
    [(judged,)] = rescored.sql("SELECT count(DISTINCT dialogue_key) FROM dialogue_scores WHERE run_id = ?", [run_id])
    assert judged == len(rescored.sql("SELECT dialogue_key FROM dialogues WHERE failure = ''"))


def test_each_dialogue_is_judged_on_the_five_dialogue_dimensions_over_all_its_pictures(photos_run) -> None:
    run, keys = photos_run
    rows = run.sql("""SELECT d.dialogue_id, s.dimension, s.value, s.call_keys FROM dialogue_scores s
                      JOIN dialogues d USING (dialogue_key) WHERE s.scorer = 'combined'""")
    by_dialogue: dict[str, dict[str, float]] = {}
    for dialogue_id, dimension, value, _ in rows:
        by_dialogue.setdefault(dialogue_id, {})[dimension] = value
    complete = {i for (i,) in run.sql("SELECT dialogue_id FROM dialogues WHERE failure = ''")}
    assert "pair" in complete and set(by_dialogue) == complete
    assert all(set(scores) == set(INTERMT_DIALOGUE) and all(0 <= v <= 5 for v in scores.values())
               for scores in by_dialogue.values())
    # The dialogue judge saw the user's photographs where they were shown, then each turn's generated picture.
    generated = [key for (key,) in run.sql("""SELECT t.image_key FROM turns t JOIN dialogues d USING (dialogue_key)
                                              WHERE d.dialogue_id = 'pair' ORDER BY t.turn_index""") if key]
    call_keys = {key for dialogue_id, _, _, keys_ in rows if dialogue_id == "pair" for key in keys_}
    assert call_keys and all(shown(run, key) == [keys["astronaut"], keys["coffee"], *generated] for key in call_keys)


def test_dialogue_thresholds_decide_acceptance_from_stored_scores(photos_run, tmp_path: Path) -> None:
    """A threshold of 5 on a dialogue dimension rejects, naming it, with no model call: decided from stored scores."""
    import io
    import shutil

    from seir.engine.run import Runner
    from seir.engine.spec import load_job

    run, _ = photos_run
    out = tmp_path / "out"
    shutil.copytree(run.out, out)
    spec = load_job(run.job)
    thresholds = {**spec.scoring.thresholds, "context_awareness": 5.0}
    spec = spec.model_copy(update={"scoring": spec.scoring.model_copy(update={"thresholds": thresholds})})
    Runner(spec, out, stream=io.StringIO()).rescore()
    again = FinishedRun(out, {}, "", run.job)
    [(run_id,)] = again.sql("SELECT run_id FROM runs WHERE kind = 'rescore'")
    assert again.sql("SELECT count(*) FROM model_calls WHERE run_id = ?", [run_id]) == [(0,)]
    [(accepted, reason)] = again.sql("""SELECT l.accepted, l.reason FROM latest_decisions l JOIN dialogues d
                                        USING (dialogue_key) WHERE d.dialogue_id = 'pair'""")
    assert not accepted and reason.startswith("dialogue: context_awareness ") and reason.endswith(" < 5.00")
