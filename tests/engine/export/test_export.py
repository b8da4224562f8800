"""``seir export`` on a real run of the tiny models: every format read back by its real client (``datasets`` in a
fresh process, TRL's trainers, a plain JSON reader), pairs checked against provenance, exports reproducible."""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from seir.engine.cli import main
from seir.engine.export import ExportError, ExportOptions, export, parse_splits
from seir.engine.export import ExportError as RowsError
from seir.engine.export import formats as export_formats
from seir.engine.export.rows import OutputImages, conversation, turn_spans
from seir.engine.export.writer import split_of
from seir.engine.keys import file_key
from seir.engine.query import lineage
from seir.operators.registry import lookup
from tests.engine.conftest import TOPICS, FinishedRun, job_dict, run_job, write_job

SPLITS = (("train", 0.5), ("test", 0.5))


@pytest.fixture(scope="module")
def refined(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> FinishedRun:
    """Four dialogues of three turns, every stage refined twice (no draft reaches a gate of 5), so the kept draft of
    most stages is a later one: preference pairs exist whatever the random weights score, and later turns' pairs
    carry earlier turns' images in their prompts."""
    folder = tmp_path_factory.mktemp("export")
    job = write_job(folder, job_dict("export", topics=TOPICS[:4], seir={"gate_default": 5.0, "rounds": 2,
                                                                         "turns": 3}))
    return run_job(job, folder / "out")


def run_export(run: FinishedRun, to: Path, fmt: str, **options: Any) -> Path:
    export(run.out, to, ExportOptions(fmt, **options), stream=io.StringIO())
    return to


def stored_pixels(run: FinishedRun, key: str) -> tuple[str, tuple[int, int], bytes]:
    with Image.open(run.out / "images" / key[:2] / f"{key}.png") as image:
        return image.mode, image.size, image.tobytes()


def stored_dialogues(run: FinishedRun) -> dict[str, list[dict[str, Any]]]:
    rows = run.sql("""SELECT d.dialogue_id, d.messages FROM version_dialogues vd JOIN dialogues d USING (dialogue_key)
                      WHERE vd.version = (SELECT max(version) FROM versions) AND vd.accepted""")
    return {dialogue_id: json.loads(messages) for dialogue_id, messages in rows}


# A reader that knows nothing of seir: it loads both layouts and prints what it found, images as pixels.
READER = """
import hashlib, json, sys
from datasets import load_dataset, load_from_disk
found = {}
for layout, ds in (("disk", load_from_disk(sys.argv[1])), ("parquet", load_dataset(sys.argv[2]))):
    for split, rows in ds.items():
        for row in rows:
            images = [[im.mode, list(im.size), hashlib.sha256(im.tobytes()).hexdigest()] for im in row["images"]]
            found.setdefault(layout, {}).setdefault(split, []).append(
                {"id": row["dialogue_id"], "messages": row["messages"], "images": images, "scores": row["scores"]})
assert not any(name == "seir" or name.startswith("seir.") for name in sys.modules), "loading imported seir"
print(json.dumps(found))
"""


def test_hf_export_loads_on_another_machine_with_images_equal_to_the_stored_ones(
        refined: FinishedRun, tmp_path: Path) -> None:
    import hashlib

    disk = run_export(refined, tmp_path / "disk", "hf", splits=SPLITS)
    parquet = run_export(refined, tmp_path / "parquet", "hf", splits=SPLITS, parquet=True)
    elsewhere = tmp_path / "elsewhere"
    for folder in (disk, parquet):
        shutil.copytree(folder, elsewhere / folder.name)
        shutil.rmtree(folder)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", READER, str(elsewhere / "disk"), str(elsewhere / "parquet")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.splitlines()[-1])
    stored = stored_dialogues(refined)
    assert stored, "the run accepted no dialogue"
    for layout in ("disk", "parquet"):
        rows = [row for split in ("train", "test") for row in found[layout][split]]
        assert sorted(r["id"] for r in rows) == sorted(stored)
        for split in ("train", "test"):
            assert all(split_of(r["id"], SPLITS) == split for r in found[layout][split])
        for row in rows:
            messages = stored[row["id"]]
            keys = [Path(p["image"]).stem for m in messages for p in m["content"] if p["type"] == "image"]
            assert keys, "every dialogue of this job has images"
            expected = []
            for key in keys:
                mode, size, pixels = stored_pixels(refined, key)
                expected.append([mode, list(size), hashlib.sha256(pixels).hexdigest()])
            assert row["images"] == expected
            assert [m["role"] for m in row["messages"]] == [m["role"] for m in messages]
            texts = [[p["text"] if p["type"] == "text" else "<image>" for p in m["content"]] for m in row["messages"]]
            assert texts == [[p["text"] if p["type"] == "text" else "<image>" for p in m["content"]]
                             for m in messages]
            assert [s["turn"] for s in row["scores"]] == list(range(len(row["scores"])))


def load(path: Path) -> Any:
    from datasets import load_from_disk

    return load_from_disk(str(path))


def draft_score(run: FinishedRun, draft_key: str) -> tuple[float, dict[str, Any]]:
    """The mean combined score of a draft on its stage's dimensions, as the run that made it scored it."""
    draft = dict(zip(("stage", "round", "best", "dialogue_key", "turn_index", "run_id"), run.sql(
        "SELECT stage, round, best, dialogue_key, turn_index, run_id FROM drafts WHERE draft_key = ?",
        [draft_key])[0], strict=True))
    dims = lookup("stage", draft["stage"]).dimensions
    values = [v for d, v in run.sql("SELECT dimension, value FROM scores WHERE draft_key = ? AND scorer = 'combined' "
                                    "AND run_id = ?", [draft_key, draft["run_id"]]) if d in dims]
    return sum(values) / len(values), draft


def exported_pairs(path: Path) -> list[dict[str, Any]]:
    rows = []
    for folder in (path, path / "image_pairs"):
        dataset = load(folder)
        for split in dataset:
            rows += [dict(r) for r in dataset[split].remove_columns(
                [c for c in ("images", "chosen_image", "rejected_image", "source_image")
                 if c in dataset[split].column_names])]
    return rows


def writer_request(run: FinishedRun, draft_key: str) -> tuple[list[dict[str, Any]], list[str]] | None:
    """What a draft's writer was sent, read from provenance: the request of the draft's first chat call by a writer
    role, as text parts with image placeholders and the keys of its pictures in order (None: not recorded)."""
    [(call_keys,)] = run.sql("SELECT call_keys FROM drafts WHERE draft_key = ?", [draft_key])
    for call_key in call_keys:
        found = run.sql("""SELECT c.request FROM model_calls m JOIN call_outputs c USING (call_key)
                           WHERE m.call_key = ? AND m.role IN ('llm', 'vlm') AND m.method = 'chat'""", [call_key])
        if found:
            messages, keys = [], []
            for message in json.loads(found[0][0])["messages"]:
                parts = message["content"]
                parts = [{"type": "text", "text": parts}] if isinstance(parts, str) else parts
                keys += [p["image"]["__bytes_xxh3_128__"] for p in parts if p["type"] == "image"]
                messages.append({"role": message["role"], "content": [
                    {"type": p["type"], "text": p.get("text") if p["type"] == "text" else None} for p in parts]})
            return messages, keys
    return None


def assert_pair_prompts_are_the_writers_requests(run: FinishedRun, export_dir: Path) -> list[dict[str, Any]]:
    """Every text pair's prompt is exactly what the stage's writer was sent, as provenance recorded it (messages,
    pictures and trimming): for siblings their round's request, for refinement pairs the first round's. Returns the
    pairs checked."""
    from datasets import Image as ImageFeature
    from datasets import Sequence as SequenceFeature
    from datasets import load_from_disk

    checked = []
    dataset = load_from_disk(str(export_dir))
    for split in dataset:
        rows = dataset[split].cast_column("images", SequenceFeature(ImageFeature(decode=False)))
        for row in rows:
            asked_in = row["chosen_round"] if row["kind"] == "sibling" else 0
            first_drafts = [key for (key,) in run.sql(
                "SELECT draft_key FROM drafts WHERE dialogue_key = ? AND turn_index = ? AND stage = ? AND round = ? "
                "ORDER BY candidate", [row["dialogue_key"], row["turn"], row["stage"], asked_in])]
            sent = next(found for key in first_drafts if (found := writer_request(run, key)) is not None)
            assert [{"role": m["role"], "content": [{"type": p["type"], "text": p["text"]} for p in m["content"]]}
                    for m in row["prompt"]] == sent[0], (row["dialogue_id"], row["turn"], row["stage"])
            assert [image["path"].removesuffix(".png") for image in row["images"]] == sent[1]
            checked.append(row)
    return checked


def test_every_pair_scores_above_its_rejected_draft_by_the_margin_read_back_from_provenance(
        refined: FinishedRun, tmp_path: Path) -> None:
    margin = 0.05
    pairs = exported_pairs(run_export(refined, tmp_path / "dpo", "trl-dpo", splits=SPLITS, min_margin=margin))
    assert pairs, "no stage's kept draft beat an earlier one"
    for pair in pairs:
        chosen, chosen_draft = draft_score(refined, pair["chosen_draft_key"])
        rejected, rejected_draft = draft_score(refined, pair["rejected_draft_key"])
        assert chosen - rejected >= margin - 1e-12 and chosen > rejected
        assert math.isclose(pair["margin"], chosen - rejected, abs_tol=1e-9)
        assert chosen_draft["best"] and chosen_draft["round"] > rejected_draft["round"]
        assert {k: chosen_draft[k] for k in ("stage", "dialogue_key", "turn_index")} == \
            {k: rejected_draft[k] for k in ("stage", "dialogue_key", "turn_index")} == \
            {"stage": pair["stage"], "dialogue_key": pair["dialogue_key"], "turn_index": pair["turn"]}
        refined_from = refined.sql("SELECT critique FROM drafts WHERE dialogue_key = ? AND turn_index = ? AND "
                                   "stage = ? AND round = ?", [pair["dialogue_key"], pair["turn"], pair["stage"],
                                                               chosen_draft["round"] - 1])
        assert pair["critique"] == refined_from[0][0]
    # Every pair the rule allows is there: each kept draft against each earlier ok draft it beats by the margin.
    expected = set()
    for chosen_key, rejected_key in refined.sql("""
            SELECT k.draft_key, e.draft_key FROM drafts k JOIN drafts e USING (dialogue_key, turn_index,
            stage) JOIN version_dialogues vd ON vd.dialogue_key = k.dialogue_key AND vd.accepted
            AND vd.version = (SELECT max(version) FROM versions)
            WHERE k.best AND e.ok AND e.round < k.round"""):
        if draft_score(refined, chosen_key)[0] - draft_score(refined, rejected_key)[0] >= margin:
            expected.add((chosen_key, rejected_key))
    assert {(p["chosen_draft_key"], p["rejected_draft_key"]) for p in pairs} == expected
    stages = {p["stage"] for p in pairs}
    assert stages <= {"question", "answer", "image"}


def test_every_text_pairs_prompt_is_the_request_its_writer_was_sent(refined: FinishedRun, tmp_path: Path) -> None:
    """Refinement pairs: the prompt is the stage's first request as sent (the question writer's, the answer writer's
    with its system message), never one rebuilt from the dialogue."""
    pairs = assert_pair_prompts_are_the_writers_requests(refined, run_export(refined, tmp_path / "dpo", "trl-dpo"))
    assert pairs and {p["stage"] for p in pairs} <= {"question", "answer"}
    assert {p["kind"] for p in pairs} == {"refinement"}


def test_pairs_per_turn_keeps_the_widest_margins_and_stages_filter(refined: FinishedRun, tmp_path: Path) -> None:
    every = exported_pairs(run_export(refined, tmp_path / "all", "trl-dpo"))
    one = exported_pairs(run_export(refined, tmp_path / "one", "trl-dpo", pairs_per_turn=1))
    turns = {(p["dialogue_key"], p["turn"]) for p in every}
    assert len(one) == len(turns)
    for pair in one:
        widest = max(p["margin"] for p in every if (p["dialogue_key"], p["turn"]) == (pair["dialogue_key"],
                                                                                     pair["turn"]))
        assert pair["margin"] == widest
    answers = load(run_export(refined, tmp_path / "answers", "trl-dpo", stages=("answer",)))
    assert set(answers["train"]["stage"]) <= {"answer"}
    assert answers["train"].num_rows == sum(p["stage"] == "answer" for p in every)


def test_a_pair_traces_back_with_lineage(refined: FinishedRun, tmp_path: Path) -> None:
    pair = exported_pairs(run_export(refined, tmp_path / "dpo", "trl-dpo"))[0]
    tree = lineage(refined.out, pair["dialogue_id"])
    keys = {d["draft_key"]: d for d in tree["drafts"]}
    assert keys[pair["chosen_draft_key"]]["best"] and pair["rejected_draft_key"] in keys


def test_image_pairs_hold_both_generated_images(refined: FinishedRun, tmp_path: Path) -> None:
    images = load(run_export(refined, tmp_path / "dpo", "trl-dpo") / "image_pairs")["train"]
    assert images.num_rows, "no image stage's kept image beat an earlier one"
    for row in images:
        for side in ("chosen", "rejected"):
            key = row[f"{side}_draft_key"]
            image_key = refined.sql("SELECT image_key FROM drafts WHERE draft_key = ?", [key])[0][0]
            mode, size, pixels = stored_pixels(refined, image_key)
            assert (row[f"{side}_image"].mode, row[f"{side}_image"].size, row[f"{side}_image"].tobytes()) == \
                (mode, size, pixels)
        assert sum(p["type"] == "image" for m in row["prompt"] for p in m["content"]) == len(row["images"])


def test_llava_and_sharegpt_files_load_with_a_plain_json_reader(refined: FinishedRun, tmp_path: Path) -> None:
    stored = stored_dialogues(refined)
    for fmt in ("llava", "sharegpt", "sharegpt-dpo"):
        folder = run_export(refined, tmp_path / fmt, fmt, splits=SPLITS)
        items = []
        for split, _ in SPLITS:
            with (folder / f"{split}.json").open(encoding="utf-8") as handle:
                items += json.load(handle)
        assert items
        for item in items:
            turns = item["conversations"]
            paths = item.get("image", []) if fmt == "llava" else item["images"]
            assert all((folder / p).is_file() for p in paths)
            tokens = sum(t["value"].count("<image>") for t in turns)
            assert tokens == len(paths)
            if fmt == "sharegpt-dpo":
                assert turns[-1]["from"] == "human" and item["chosen"]["from"] == "gpt" and item["stage"] != "image"
            else:
                dialogue_id = item["id"]
                assert [t["from"] for t in turns] == [{"user": "human", "assistant": "gpt"}[m["role"]]
                                                      for m in stored[dialogue_id]]
                assert [Path(p).stem for p in paths] == [Path(p["image"]).stem for m in stored[dialogue_id]
                                                         for p in m["content"] if p["type"] == "image"]
        if fmt.startswith("sharegpt"):
            registry = json.loads((folder / "dataset_info.json").read_text())
            assert all((folder / entry["file_name"]).is_file() for entry in registry.values())


def test_an_export_is_reproducible_byte_for_byte(refined: FinishedRun, tmp_path: Path) -> None:
    for fmt, options in (("hf", {"parquet": True}), ("hf", {}), ("trl-dpo", {}), ("llava", {})):
        first = run_export(refined, tmp_path / f"{fmt}-{len(options)}-a", fmt, splits=SPLITS, **options)
        second = run_export(refined, tmp_path / f"{fmt}-{len(options)}-b", fmt, splits=SPLITS, **options)
        files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
        for name in files:
            assert (first / name).read_bytes() == (second / name).read_bytes(), f"{fmt}: {name} differs"
        manifest = json.loads((first / "manifest.json").read_text())
        listed = {f["path"]: f for f in manifest["files"]}
        assert set(listed) == {n.as_posix() for n in files} - {"manifest.json"}
        assert all(listed[n]["xxh3_128"] == file_key(first / n) for n in listed)


def test_the_card_states_counts_scores_and_where_the_data_came_from(refined: FinishedRun, tmp_path: Path) -> None:
    folder = run_export(refined, tmp_path / "hf", "hf", splits=SPLITS)
    text = (folder / "README.md").read_text()
    header = yaml.safe_load(text.split("---\n")[1])
    assert "license" in header and header["license"] is None
    about = header["seir"]
    version, job_key = refined.sql("SELECT max(version), arg_max(job_key, version) FROM versions")[0]
    assert about["dataset_version"] == f"v{version:04d}" and about["job_key"] == job_key
    assert about["version_manifest_key"] == file_key(refined.out / "versions" / f"v{version:04d}" / "manifest.json")
    assert sum(split["default"] for split in about["rows"].values()) == len(stored_dialogues(refined))
    turns = refined.sql("""SELECT count(*) FROM turn_final_scores t JOIN version_dialogues vd USING (dialogue_key)
                           WHERE vd.accepted AND vd.version = ? AND t.text_content IS NOT NULL""", [version])[0][0]
    assert about["scores"]["text_content"]["n"] == turns
    assert sum(about["scores"]["text_content"]["histogram_0_to_5_by_half"]) == turns


def test_shards_stream_and_progress_is_plain_lines_off_a_terminal(
        refined: FinishedRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export_formats, "BATCH_ROWS", 1)
    stream = io.StringIO()
    export(refined.out, tmp_path / "hf", ExportOptions("hf", shard_mb=0), stream=stream)
    shards = sorted((tmp_path / "hf" / "train").glob("data-*.arrow"))
    total = len(stored_dialogues(refined))
    assert len(shards) == total and shards[-1].name == f"data-{total - 1:05d}-of-{total:05d}.arrow"
    assert list(load(tmp_path / "hf")["train"]["dialogue_id"]) == sorted(stored_dialogues(refined))
    lines = stream.getvalue().splitlines()
    assert all(line.startswith("[seir] ") and "\r" not in line for line in lines)
    assert f"{total}/{total} dialogues" in lines[-2] and "dialogues/min" in lines[-2]


def test_bad_requests_are_refused_saying_what_to_do(refined: FinishedRun, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"no version v0099 .* has v0001"):
        run_export(refined, tmp_path / "a", "hf", version=99)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ExportError, match="exists and is not an empty folder"):
        run_export(refined, tmp_path / "full", "hf")
    with pytest.raises(ExportError, match="text pairs only"):
        run_export(refined, tmp_path / "b", "sharegpt-dpo", stages=("image",))
    with pytest.raises(ExportError, match="--stages"):
        run_export(refined, tmp_path / "c", "trl-dpo", stages=("caption",))
    for bad in ("train=0.9,test=0.2", "train", "train=0.5,train=0.5", "bad name=1"):
        with pytest.raises(ExportError, match="--split"):
            parse_splits(bad)
    assert not (tmp_path / "a").exists() and not list(tmp_path.glob(".*partial*"))


def test_images_anywhere_in_messages_become_placeholders_in_order(tmp_path: Path) -> None:
    """Seed images in user messages (not only the assistant's pictures) export where they were shown."""
    keys = [first * 2 + digit * 30 for first, digit in (("a", "1"), ("b", "2"), ("c", "3"))]
    for key in keys:
        (tmp_path / "images" / key[:2]).mkdir(parents=True)
        Image.new("RGB", (4, 4)).save(tmp_path / "images" / key[:2] / f"{key}.png")
    paths = [f"images/{key[:2]}/{key}.png" for key in keys]
    messages = [
        {"role": "user", "content": [{"type": "image", "image": paths[0]}, {"type": "image", "image": paths[1]},
                                     {"type": "text", "text": "q"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "image", "image": paths[2]}]},
        {"role": "user", "content": [{"type": "text", "text": "q2"}]},
    ]
    found = conversation(messages, OutputImages(tmp_path), "test")
    assert [i.key for i in found.images] == keys
    assert [i.read() for i in found.images] == [(tmp_path / p).read_bytes() for p in paths]
    assert found.messages[0]["content"] == [{"type": "image", "text": None}, {"type": "image", "text": None},
                                            {"type": "text", "text": "q"}]
    assert turn_spans(messages) == [0, 2]
    for outside in ("../secret.png", f"images/aa/../../{keys[0]}.png", "/etc/passwd"):
        with pytest.raises(RowsError, match="refusing to read it"):
            conversation([{"role": "user", "content": [{"type": "image", "image": outside}]}],
                         OutputImages(tmp_path), "dialogue x")


# -- TRL's trainers on the exports, on CPU, a few steps each -------------------------------------------------------
STEPS = 2


def _train(trainer: Any) -> None:
    result = trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert result.global_step == STEPS and len(losses) == STEPS
    assert all(math.isfinite(loss) for loss in losses)


def _args(config: Any, out: Path, **options: Any) -> Any:
    return config(output_dir=str(out), max_steps=STEPS, per_device_train_batch_size=2, logging_steps=1, report_to=[],
                  save_strategy="no", use_cpu=True, **options)


def test_trl_sft_trainer_runs_on_the_trl_sft_export(refined: FinishedRun, tiny_models: dict[str, Path],
                                                    tmp_path: Path) -> None:
    from transformers import AutoProcessor, LlavaForConditionalGeneration
    from trl import SFTConfig, SFTTrainer

    dataset = load(run_export(refined, tmp_path / "sft", "trl-sft"))["train"]
    assert dataset.num_rows and all(len(r["images"]) for r in dataset)
    model = LlavaForConditionalGeneration.from_pretrained(tiny_models["judge"])
    trainer = SFTTrainer(model=model, args=_args(SFTConfig, tmp_path / "run", max_length=None),
                         train_dataset=dataset, processing_class=AutoProcessor.from_pretrained(tiny_models["judge"]))
    _train(trainer)


def test_trl_dpo_trainer_runs_on_text_pairs_with_the_tiny_causal_lm(refined: FinishedRun, tiny_models: dict[str, Path],
                                                                   tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    pairs = load(run_export(refined, tmp_path / "dpo", "trl-dpo", stages=("question", "answer")))["train"]
    text = pairs.filter(lambda row: not row["images"]).remove_columns("images")
    assert text.num_rows, "no text pair without images"
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_models["llm"]),
                         args=_args(DPOConfig, tmp_path / "run"), train_dataset=text,
                         processing_class=AutoTokenizer.from_pretrained(tiny_models["llm"]))
    _train(trainer)


def test_the_command_line_exports_and_refuses_with_one_line(refined: FinishedRun, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:

    to = tmp_path / "dpo"
    assert main(["export", "--out", str(refined.out), "--format", "trl-dpo", "--to", str(to), "--split",
                 "train=0.9,test=0.1", "--min-margin", "0.1", "--pairs-per-turn", "2", "--version", "v0001"]) == 0
    assert (to / "README.md").is_file() and (to / "image_pairs" / "dataset_dict.json").is_file()
    assert "exported v0001 as trl-dpo" in capsys.readouterr().err
    assert main(["export", "--out", str(refined.out), "--format", "hf", "--to", str(to)]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err


def test_human_preferences_export_as_pairs_beside_seirs(refined: FinishedRun, tmp_path: Path) -> None:
    """A person's preference (here the first round's answer over the draft refinement kept, against the judge) is a
    pair of `--pairs human`, with the writer's first request as its prompt; `--pairs all` holds it beside seir's."""
    out = Path(shutil.copytree(refined.out, tmp_path / "out"))
    dialogue_id, turn, kept, first = refined.sql("""
        SELECT d.dialogue_id, k.turn_index, k.draft_key, e.draft_key FROM drafts k JOIN drafts e
        USING (dialogue_key, turn_index, stage) JOIN dialogues d USING (dialogue_key)
        JOIN version_dialogues vd ON vd.dialogue_key = k.dialogue_key AND vd.accepted
        WHERE k.stage = 'answer' AND k.best AND k.round > 0 AND e.round = 0 AND e.ok
        ORDER BY d.dialogue_id, k.turn_index LIMIT 1""")[0]
    verdicts = tmp_path / "prefer.jsonl"
    verdicts.write_text(json.dumps({"dialogue_id": dialogue_id, "turn": turn + 1, "prefer": first, "other": kept}))
    assert main(["verdicts", "import", "--out", str(out), str(verdicts)]) == 0
    moved = FinishedRun(out, refined.summary, refined.log, refined.job)
    human = exported_pairs(run_export(moved, tmp_path / "human", "trl-dpo", pairs="human"))
    assert [(p["chosen_draft_key"], p["rejected_draft_key"], p["kind"]) for p in human] == [(first, kept, "human")]
    assert_pair_prompts_are_the_writers_requests(moved, tmp_path / "human")
    every = exported_pairs(run_export(moved, tmp_path / "all", "trl-dpo", pairs="all"))
    both = exported_pairs(run_export(moved, tmp_path / "both", "trl-dpo"))
    assert sorted(p["chosen_draft_key"] + p["rejected_draft_key"] for p in every) == sorted(
        [first + kept] + [p["chosen_draft_key"] + p["rejected_draft_key"] for p in both])
