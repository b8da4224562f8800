"""Pictures that answer pictures: in a turn where the user shows photographs (scikit-image's), the render is an edit
of one of them. Assertions read the recorded requests and provenance, never what the random-weight models drew or
wrote: which picture the writer names is noise, so every check holds for whichever shown picture it is."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
import skimage.data
import yaml
from PIL import Image

from seir.engine.export import ExportOptions, export
from seir.engine.query import format_lineage, lineage
from seir.engine.records import TURN_DIMENSIONS
from seir.engine.run import Runner
from seir.engine.spec import load_job
from tests.engine.conftest import FinishedRun, job_dict, run_job, write_job
from tests.engine.run.test_image_seeds import VLM, save_photo, shown
from tests.engine.run.test_incremental import _forecast_holds

pytestmark = pytest.mark.slow
BYTES = "__bytes_xxh3_128__"


def edit_job(**seir: object) -> dict:
    """Two turns, two refinement rounds that always run (a gate of 5), every turn accepted; the judge scores the turn
    dimensions, source-similarity too on image content (no dialogue-level ones, so a changed picture changes only
    image-stage calls)."""
    weights = {d: {"judge": 1.0} for d in TURN_DIMENSIONS} | {"image_content": {"judge": 0.5,
                                                                               "source-similarity": 0.5}}
    job = job_dict("edits", seir={"turns": 2, "rounds": 2, "gate_default": 5.0, **seir},
                   scoring={"weights": weights, "thresholds": dict.fromkeys(TURN_DIMENSIONS, 0.0)})
    for role in ("embed", "clip"):
        job["roles"].pop(role)
    job["roles"]["vlm"] = VLM
    return job


@pytest.fixture(scope="module")
def edits(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[FinishedRun, dict[str, str]]:
    folder = tmp_path_factory.mktemp("edits")
    keys = {name: save_photo(getattr(skimage.data, name)(), folder / f"{name}.png")
            for name in ("chelsea", "astronaut", "coffee", "rocket")}
    seeds = [
        {"id": "cat", "text": "What is this cat doing? Draw the same cat as a watercolour.", "images": ["chelsea.png"]},
        {"id": "pair", "text": "What do these two photos show? Draw the first at night.",
         "images": ["astronaut.png", "coffee.png"]},
        {"id": "later", "text": "How is a rocket launched? Draw the launch pad.", "turn_images": [[], ["rocket.png"]]},
        {"id": "plain", "text": "How do yaks stay warm in winter? Draw one in the snow."},
    ]
    job = write_job(folder, edit_job(), seed_lines=seeds)
    return run_job(job, folder / "out"), keys


def image_drafts(run: FinishedRun, run_id: str | None = None) -> list[dict]:
    """Every image-stage draft that rendered, with its render call's recorded request."""
    rows = run.sql("""SELECT d.dialogue_id, dr.turn_index, dr.round, dr.image_key, dr.source_key, c.call_key,
                             c.request
                      FROM drafts dr JOIN dialogues d USING (dialogue_key), unnest(dr.call_keys) AS u(call_key)
                      JOIN call_outputs c ON c.call_key = u.call_key
                      WHERE c.call_key IN (SELECT call_key FROM model_calls WHERE method = 'render')
                        AND dr.stage = 'image' AND dr.image_key IS NOT NULL AND dr.run_id = coalesce(?, dr.run_id)
                      ORDER BY 1, 2, 3""", [run_id])
    names = ("dialogue", "turn", "round", "image_key", "source_key", "render_call", "request")
    return [dict(zip(names, row, strict=True)) | {"request": json.loads(row[-1])} for row in rows]


def test_a_grounded_turns_render_starts_from_a_picture_the_user_showed_in_every_round(edits) -> None:
    run, keys = edits
    shown_in = {("cat", 0): [keys["chelsea"]], ("pair", 0): [keys["astronaut"], keys["coffee"]],
                ("later", 1): [keys["rocket"]]}
    drafts = image_drafts(run)
    grounded = [d for d in drafts if (d["dialogue"], d["turn"]) in shown_in]
    assert {(d["dialogue"], d["turn"]) for d in grounded} == set(shown_in)
    for draft in grounded:
        source = draft["request"]["source"][BYTES]
        # The recorded request names the picture by its key, call_images lists it, and the draft records it.
        assert source in shown_in[(draft["dialogue"], draft["turn"])]
        assert draft["source_key"] == source and shown(run, draft["render_call"]) == [source]
        assert draft["request"]["strength"] == 0.6
    # Refinement renders again from the same source: rounds of one turn never drift to another picture.
    for turn in shown_in:
        rounds = [d for d in grounded if (d["dialogue"], d["turn"]) == turn]
        assert len(rounds) >= 2 and len({d["source_key"] for d in rounds}) == 1
    # The turn records what its picture was edited from.
    assert {(d, t) for d, t, source in run.sql(
        """SELECT d.dialogue_id, t.turn_index, t.source_key FROM turns t JOIN dialogues d USING (dialogue_key)""")
        if source} == set(shown_in)


def test_text_seeds_and_turns_without_pictures_never_condition(edits) -> None:
    run, _ = edits
    plain = [d for d in image_drafts(run) if d["dialogue"] == "plain" or (d["dialogue"], d["turn"]) in
             {("cat", 1), ("pair", 1), ("later", 0)}]
    assert {d["dialogue"] for d in plain} == {"plain", "cat", "pair", "later"}
    for draft in plain:
        assert "source" not in draft["request"] and "strength" not in draft["request"]
        assert draft["source_key"] is None and shown(run, draft["render_call"]) == []


def test_the_judge_of_an_edit_sees_the_source_then_the_result(edits) -> None:
    run, _ = edits
    judged = 0
    for draft in image_drafts(run):
        calls = [key for (key,) in run.sql(
            """SELECT DISTINCT u.call_key FROM drafts dr, unnest(dr.call_keys) AS u(call_key)
               JOIN model_calls c ON c.call_key = u.call_key AND c.role = 'judge'
               WHERE dr.image_key = ? AND dr.stage = 'image'""", [draft["image_key"]])]
        assert calls
        for key in calls:
            seen = shown(run, key)
            if draft["source_key"]:
                assert seen[-2:] == [draft["source_key"], draft["image_key"]]
                judged += 1
            else:
                assert seen[-1] == draft["image_key"] and seen.count(draft["image_key"]) == 1
    assert judged


def test_source_similarity_scores_the_edits_and_only_them(edits) -> None:
    run, _ = edits
    scored = run.sql("""SELECT dr.source_key IS NOT NULL, count(s.value), min(s.value), max(s.value)
                        FROM drafts dr LEFT JOIN scores s ON s.draft_key = dr.draft_key
                                                          AND s.scorer = 'source-similarity'
                        WHERE dr.stage = 'image' AND dr.image_key IS NOT NULL GROUP BY ALL ORDER BY 1""")
    assert len(scored) == 2
    (_, from_text, _, _), (_, edits_scored, low, high) = scored
    assert from_text == 0 and edits_scored > 0 and 0.0 <= low <= high <= 5.0


def test_lineage_and_exports_keep_the_source(edits, tmp_path: Path) -> None:
    run, keys = edits
    text = format_lineage(lineage(run.out, "cat"))
    assert f"edited from images/{keys['chelsea'][:2]}/{keys['chelsea']}.png (a picture the user showed)" in text
    # The dialogue's messages hold the user's photograph, then the edit made from it.
    [(messages, edit)] = run.sql("""SELECT d.messages, t.image_key FROM dialogues d JOIN turns t USING (dialogue_key)
                                    WHERE d.dialogue_id = 'cat' AND t.turn_index = 0""")
    pictures = [part["image"] for message in json.loads(messages)[:2] for part in message["content"]
                if part["type"] == "image"]
    assert pictures == [f"images/{key[:2]}/{key}.png" for key in (keys["chelsea"], edit)]
    # Every scored pair of drafts, however close (which pairs a margin keeps depends on what the noise scored).
    export(run.out, tmp_path / "dpo", ExportOptions("trl-dpo", version=1, min_margin=0.0), stream=io.StringIO())
    from datasets import load_from_disk

    dataset = load_from_disk(str(tmp_path / "dpo" / "image_pairs"))
    pairs = [row for split in dataset for row in dataset[split]]
    sources = dict(run.sql("""SELECT d.dialogue_id || '/' || t.turn_index, t.source_key
                              FROM turns t JOIN dialogues d USING (dialogue_key) WHERE t.source_key IS NOT NULL"""))
    edited = [row for row in pairs if f"{row['dialogue_id']}/{row['turn']}" in sources]
    assert edited and all(row["source_image"] is None for row in pairs if row not in edited)
    for row in edited:  # the user's photograph itself, byte for byte
        key = sources[f"{row['dialogue_id']}/{row['turn']}"]
        stored = Image.open(run.out / "images" / key[:2] / f"{key}.png")
        assert row["source_image"].tobytes() == stored.convert(row["source_image"].mode).tobytes()


def test_refresh_after_changing_only_seir_edit_recomputes_only_image_stage_calls(edits, tmp_path: Path) -> None:
    run, _ = edits
    job = yaml.safe_load(run.job.read_text())
    job["seir"]["edit"] = "never"
    never = run.job.with_name("edits-never.yaml")
    never.write_text(yaml.safe_dump(job, sort_keys=False))
    shutil.copytree(run.out, tmp_path / "out")  # the other tests read the first run's output as it was
    stream = io.StringIO()
    runner = Runner(load_job(never), tmp_path / "out", stream=stream)
    runner.run(show_plan=True)
    again = FinishedRun(tmp_path / "out", {}, stream.getvalue(), never)
    [(run_id,)] = again.sql("SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1")
    # The plan said so before the run: the question and answer stages come from the cache.
    assert "question, answer stages: every call" in again.log
    _forecast_holds(runner, again.out, run_id)
    # Conditioning is off: no render of this run starts from a picture.
    assert all("source" not in d["request"] for d in image_drafts(again, run_id))
    computed = again.sql("""SELECT DISTINCT dr.stage FROM model_calls c
                            JOIN drafts dr ON list_contains(dr.call_keys, c.call_key) AND dr.run_id = c.run_id
                            WHERE c.run_id = ? AND NOT c.cached""", [run_id])
    assert computed == [("image",)]
    [(fresh,)] = again.sql("SELECT count(*) FROM model_calls WHERE run_id = ? AND NOT cached", [run_id])
    [(drafted,)] = again.sql("""SELECT count(*) FROM model_calls c WHERE c.run_id = ? AND NOT c.cached AND EXISTS (
                                    SELECT 1 FROM drafts dr WHERE dr.run_id = c.run_id
                                    AND dr.stage = 'image' AND list_contains(dr.call_keys, c.call_key))""", [run_id])
    assert fresh == drafted > 0
