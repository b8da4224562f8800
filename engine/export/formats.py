"""Export formats: how a dialogue or a preference pair becomes a row of a Hugging Face dataset (``hf``, ``trl-sft``,
``trl-dpo``) or an item of a JSON file (``llava``, ``sharegpt``, ``sharegpt-dpo``), and the writers that stream them
into shards. Layouts are documented in docs/export.md.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from datasets import Features, Image, List, Value
from datasets.arrow_writer import ArrowWriter, ParquetWriter

from seir.engine.export.rows import Conversation, DialogueRow, ImageRef, PairRow
from seir.engine.records import CONTENT_DIMENSIONS

# -- Hugging Face features ------------------------------------------------------------------------------------------
# Content parts carry only "type" and "text": a chat template that tests `'image' in part` must not see an "image"
# key on text parts, which a struct with an image field would give every part.
MESSAGES = List({"role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})})
IMAGES = List(Image())
TURN_SCORES = List({"turn": Value("int32"), **{name: Value("float64") for name in CONTENT_DIMENSIONS}})
DRAFT_SCORES = List({"dimension": Value("string"), "value": Value("float64")})
IDS = {"dialogue_id": Value("string"), "dialogue_key": Value("string")}
PAIR_FIELDS = {
    **IDS, "turn": Value("int32"), "stage": Value("string"),
    "kind": Value("string"), "chosen_draft_key": Value("string"), "rejected_draft_key": Value("string"),
    "chosen_round": Value("int32"), "rejected_round": Value("int32"),
    "chosen_candidate": Value("int32"), "rejected_candidate": Value("int32"),
    "chosen_score": Value("float64"), "rejected_score": Value("float64"), "margin": Value("float64"),
    "chosen_scores": DRAFT_SCORES, "rejected_scores": DRAFT_SCORES, "pairwise": Value("float64"),
    "critique": Value("string"),
}
TEXT_PAIRS = Features({"prompt": MESSAGES, "chosen": MESSAGES, "rejected": MESSAGES, "images": IMAGES,
                       "chosen_caption": Value("string"), "rejected_caption": Value("string"), **PAIR_FIELDS})
IMAGE_PAIRS = Features({"prompt": MESSAGES, "images": IMAGES, "answer": Value("string"), "caption": Value("string"),
                        "chosen_image": Image(), "rejected_image": Image(), "chosen_caption": Value("string"),
                        "rejected_caption": Value("string"), "source_image": Image(), **PAIR_FIELDS})

IMAGE_TOKEN = "<image>"  # LLaVA's and LLaMA-Factory's placeholder in message text
JSON_ROLES = {"user": "human", "assistant": "gpt", "system": "system"}  # ShareGPT's and LLaVA's "from" tags


def image_cell(image: ImageRef) -> dict[str, Any]:
    """An ``Image`` feature's storage: the bytes embedded, the file's name only (no folder that would not travel)."""
    return {"bytes": image.read(), "path": f"{image.key}.png"}


def _reply(text: str) -> list[dict[str, Any]]:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


def _pair_fields(pair: PairRow) -> dict[str, Any]:
    return {
        "dialogue_id": pair.dialogue_id, "dialogue_key": pair.dialogue_key, "turn": pair.turn, "stage": pair.stage,
        "kind": pair.kind, "chosen_draft_key": pair.chosen.draft_key, "rejected_draft_key": pair.rejected.draft_key,
        "chosen_round": pair.chosen.round, "rejected_round": pair.rejected.round,
        "chosen_candidate": pair.chosen.candidate, "rejected_candidate": pair.rejected.candidate,
        "chosen_score": pair.chosen.score, "rejected_score": pair.rejected.score, "margin": pair.margin,
        "chosen_scores": pair.chosen.scores, "rejected_scores": pair.rejected.scores, "pairwise": pair.pairwise,
        "critique": pair.critique,
    }


def hf_dialogue(row: DialogueRow) -> dict[str, Any]:
    return {"dialogue_id": row.dialogue_id, "dialogue_key": row.dialogue_key,
            "messages": row.conversation.messages, "images": [image_cell(i) for i in row.conversation.images],
            "scores": row.scores}


def sft_dialogue(row: DialogueRow) -> dict[str, Any]:
    return {"messages": row.conversation.messages, "images": [image_cell(i) for i in row.conversation.images],
            "dialogue_id": row.dialogue_id, "dialogue_key": row.dialogue_key}


def text_pair(pair: PairRow) -> dict[str, Any]:
    return {"prompt": pair.prompt.messages, "chosen": _reply(pair.chosen.text), "rejected": _reply(pair.rejected.text),
            "images": [image_cell(i) for i in pair.prompt.images], "chosen_caption": pair.chosen.caption,
            "rejected_caption": pair.rejected.caption, **_pair_fields(pair)}


def image_pair(pair: PairRow) -> dict[str, Any]:
    assert pair.chosen.image is not None and pair.rejected.image is not None  # image-stage drafts that were ok
    return {"prompt": pair.prompt.messages, "images": [image_cell(i) for i in pair.prompt.images],
            "answer": pair.answer, "caption": pair.caption, "chosen_image": image_cell(pair.chosen.image),
            "rejected_image": image_cell(pair.rejected.image), "chosen_caption": pair.chosen.text,
            "rejected_caption": pair.rejected.text,
            "source_image": image_cell(pair.source) if pair.source else None, **_pair_fields(pair)}


# -- JSON formats (image files copied beside them) ------------------------------------------------------------------
class ImageFolder:
    """``images/KEY.png`` inside the export: each image copied once, named by its content key."""

    def __init__(self, root: Path) -> None:
        self.folder = root / "images"
        self.copied_bytes = 0

    def place(self, image: ImageRef) -> str:
        target = self.folder / f"{image.key}.png"
        if not target.exists():
            self.folder.mkdir(exist_ok=True)
            shutil.copyfile(image.path, target)
            self.copied_bytes += target.stat().st_size
        return f"images/{image.key}.png"


def _json_turns(conversation: Conversation) -> tuple[list[dict[str, str]], str | None]:
    """Messages as ``{"from", "value"}`` with ``<image>`` where each image was; a leading system message apart."""
    turns, system = [], None
    for message in conversation.messages:
        value = "\n".join(IMAGE_TOKEN if p["type"] == "image" else p["text"] or "" for p in message["content"])
        if message["role"] == "system" and not turns:
            system = value
        else:
            turns.append({"from": JSON_ROLES[message["role"]], "value": value})
    return turns, system


def llava_dialogue(row: DialogueRow, images: ImageFolder) -> dict[str, Any]:
    turns, system = _json_turns(row.conversation)
    item: dict[str, Any] = {"id": row.dialogue_id, "dialogue_key": row.dialogue_key}
    if row.conversation.images:
        item["image"] = [images.place(i) for i in row.conversation.images]
    item["conversations"] = ([{"from": "system", "value": system}] if system else []) + turns
    return item


def sharegpt_dialogue(row: DialogueRow, images: ImageFolder) -> dict[str, Any]:
    turns, system = _json_turns(row.conversation)
    item = {"conversations": turns, "images": [images.place(i) for i in row.conversation.images],
            "id": row.dialogue_id, "dialogue_key": row.dialogue_key}
    return {**item, "system": system} if system else item


def sharegpt_pair(pair: PairRow, images: ImageFolder) -> dict[str, Any]:
    turns, system = _json_turns(pair.prompt)
    fields = _pair_fields(pair)
    return {"conversations": turns, "chosen": {"from": "gpt", "value": pair.chosen.text},
            "rejected": {"from": "gpt", "value": pair.rejected.text},
            "images": [images.place(i) for i in pair.prompt.images], "system": system or "", **fields}


def llama_factory_info(splits: list[str], ranking: bool) -> dict[str, Any]:
    """LLaMA-Factory's dataset_info.json registering each split file (``dataset: seir_train`` in its config)."""
    columns = {"messages": "conversations", "images": "images"}
    if ranking:
        columns.update({"chosen": "chosen", "rejected": "rejected", "system": "system"})
    return {f"seir_{split}": {"file_name": f"{split}.json", "formatting": "sharegpt", "ranking": ranking,
                              "columns": columns} for split in splits}


# -- the formats ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Format:
    name: str
    source: str  # "dialogues" or "pairs"
    describe: str
    tables: dict[str, Features] | None = None  # Hugging Face formats: table name -> features
    route: Callable[[Any], tuple[str, dict[str, Any]]] | None = None  # HF: (table, row) for a dialogue or pair
    item: Callable[[Any, ImageFolder], dict[str, Any]] | None = None  # JSON formats
    text_stages_only: bool = False


def _pair_route(pair: PairRow) -> tuple[str, dict[str, Any]]:
    return ("image_pairs", image_pair(pair)) if pair.image_pair else ("default", text_pair(pair))


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("hf", "dialogues", "Hugging Face dataset: messages with image placeholders, embedded images, scores",
           tables={"default": Features({**IDS, "messages": MESSAGES, "images": IMAGES, "scores": TURN_SCORES})},
           route=lambda row: ("default", hf_dialogue(row))),
    Format("trl-sft", "dialogues", "TRL's conversational vision format for SFTTrainer (messages + images)",
           tables={"default": Features({"messages": MESSAGES, "images": IMAGES, **IDS})},
           route=lambda row: ("default", sft_dialogue(row))),
    Format("trl-dpo", "pairs", "TRL's vision preference format for DPOTrainer (images, prompt, chosen, rejected); "
           "image-stage pairs in image_pairs/", tables={"default": TEXT_PAIRS, "image_pairs": IMAGE_PAIRS},
           route=_pair_route),
    Format("llava", "dialogues", "LLaVA conversation JSON with <image> tokens, images beside it",
           item=llava_dialogue),
    Format("sharegpt", "dialogues", "LLaMA-Factory's ShareGPT JSON with images", item=sharegpt_dialogue),
    Format("sharegpt-dpo", "pairs", "LLaMA-Factory's ShareGPT preference JSON (chosen/rejected) with images",
           item=sharegpt_pair, text_stages_only=True),
)}


# -- writers --------------------------------------------------------------------------------------------------------
BATCH_ROWS = 512  # rows per Arrow record batch at most
BATCH_BYTES = 32 << 20  # image bytes per record batch at most: what bounds an export's memory


def _cell_bytes(row: dict[str, Any]) -> int:
    total = 0
    for value in row.values():
        if isinstance(value, dict) and isinstance(value.get("bytes"), bytes):
            total += len(value["bytes"])
        elif isinstance(value, list):
            total += sum(len(v["bytes"]) for v in value if isinstance(v, dict) and isinstance(v.get("bytes"), bytes))
    return total


class ShardedTable:
    """One split of one table, written in shards of at most ``shard_bytes``: save_to_disk's Arrow files
    (``data-00000-of-00002.arrow``) or the Hub's Parquet files (``train-00000-of-00002.parquet``), through the
    writers ``datasets`` itself uses. Rows are buffered into record batches bounded in rows and image bytes."""

    def __init__(self, folder: Path, split: str, features: Features, parquet: bool, shard_bytes: int) -> None:
        self.folder, self.split, self.features = folder, split, features
        self.parquet, self.shard_bytes = parquet, shard_bytes
        self.buffer: list[dict[str, Any]] = []
        self.buffered_bytes = 0
        self.shards: list[Path] = []
        self.rows = 0
        self.writer: ArrowWriter | None = None
        self.written = 0  # bytes in the current shard

    def add(self, row: dict[str, Any]) -> int:
        """Buffer ``row``; returns its image bytes."""
        size = _cell_bytes(row)
        self.buffer.append(row)
        self.buffered_bytes += size
        if len(self.buffer) >= BATCH_ROWS or self.buffered_bytes >= BATCH_BYTES:
            self._flush()
        return size

    def _flush(self) -> None:
        if not self.buffer:
            return
        if self.writer is None:
            name = f"{self.split}-{len(self.shards):05d}.parquet" if self.parquet else f"data-{len(self.shards):05d}"
            path = self.folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            self.shards.append(path)
            self.writer = (ParquetWriter if self.parquet else ArrowWriter)(features=self.features, path=str(path))
            self.written = 0
        # Rows are already in the features' storage form (images as {"bytes", "path"}), so Arrow builds the batch
        # directly, without datasets' per-example encoding.
        self.writer.write_table(pa.Table.from_pylist(self.buffer, schema=self.features.arrow_schema))
        self.rows += len(self.buffer)
        self.written += self.buffered_bytes
        self.buffer, self.buffered_bytes = [], 0
        if self.written >= self.shard_bytes:
            self._close_shard()

    def _close_shard(self) -> None:
        assert self.writer is not None
        self.writer.finalize()
        self.writer.close()
        self.writer = None

    def finish(self) -> list[Path]:
        """Close the last shard and give every shard its final name (``-of-N``); an empty split gets one empty
        shard, so every split loads."""
        self._flush()
        if self.writer is not None:
            self._close_shard()
        if not self.shards:
            name = f"{self.split}-00000.parquet" if self.parquet else "data-00000"
            self.shards.append(self.folder / name)
            self.folder.mkdir(parents=True, exist_ok=True)
            self.writer = (ParquetWriter if self.parquet else ArrowWriter)(features=self.features,
                                                                           path=str(self.shards[0]))
            self._close_shard()
        count = len(self.shards)
        final = []
        for i, path in enumerate(self.shards):
            name = (f"{self.split}-{i:05d}-of-{count:05d}.parquet" if self.parquet
                    else f"data-{i:05d}-of-{count:05d}.arrow")
            final.append(path.rename(path.with_name(name)))
        return final


def save_to_disk_state(folder: Path, split: str, shards: list[Path], features: Features, fingerprint: str) -> None:
    """The two JSON files ``Dataset.save_to_disk`` writes beside its shards, so ``load_from_disk`` reads them."""
    from dataclasses import asdict

    from datasets import DatasetInfo

    state = {"_data_files": [{"filename": p.name} for p in shards], "_fingerprint": fingerprint,
             "_format_columns": None, "_format_kwargs": {}, "_format_type": None, "_output_all_columns": False,
             "_split": split}
    (folder / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
    info = asdict(DatasetInfo(features=features))
    (folder / "dataset_info.json").write_text(json.dumps({k: info[k] for k in sorted(info)}, indent=2),
                                              encoding="utf-8")


class JsonArray:
    """A JSON array written item by item: one item per line, so a plain ``json.load`` reads the whole file and a
    large export never holds more than one item."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle = path.open("w", encoding="utf-8")
        self.handle.write("[")
        self.rows = 0

    def add(self, item: dict[str, Any]) -> None:
        self.handle.write(("\n" if self.rows == 0 else ",\n") + json.dumps(item, ensure_ascii=False))
        self.rows += 1

    def finish(self) -> list[Path]:
        self.handle.write("\n]\n")
        self.handle.close()
        return [self.path]
