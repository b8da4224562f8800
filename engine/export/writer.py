"""``seir export``: a dataset version as files trainers read, with a dataset card and a manifest of hashes.

Rows stream from the provenance store (opened read-only) through per-split writers that cut shards, so memory stays
bounded by one record batch whatever the dataset's size. The export is written into a hidden folder beside the
target and renamed into place when complete. The same version and options give byte-identical files: rows are
ordered by dialogue id, splits come from a hash of the dialogue id, and nothing records a time or a path.
Formats and layouts: docs/export.md.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

import seir
from seir.engine.errors import writing
from seir.engine.export.formats import (
    FORMATS,
    Format,
    ImageFolder,
    JsonArray,
    ShardedTable,
    llama_factory_info,
    save_to_disk_state,
)
from seir.engine.export.rows import (
    PAIR_KINDS,
    DialogueRow,
    ExportError,
    PairOptions,
    PairRow,
    count_dialogues,
    dialogue_rows,
    most_candidates,
    pair_rows,
    pair_stages,
)
from seir.engine.keys import bytes_key, content_key, file_key
from seir.engine.progress import Meter
from seir.engine.records import CONTENT_DIMENSIONS, StageRecord
from seir.engine.store import folder_whole, limit_memory, open_read_only, output_stages, version_name

__all__ = ["ExportError", "ExportOptions", "ExportResult", "export", "parse_splits"]

MANIFEST = "manifest.json"
CARD = "README.md"


def parse_splits(text: str) -> tuple[tuple[str, float], ...]:
    """``train=0.95,test=0.05`` as ((name, fraction), ...); fractions are positive and sum to 1."""
    splits = []
    for part in text.split(","):
        name, _, value = part.partition("=")
        name = name.strip()
        try:
            fraction = float(value)
        except ValueError:
            fraction = -1.0
        if not name.isidentifier() or not 0 < fraction <= 1:
            raise ExportError(f"--split {text}: each part is NAME=FRACTION with a fraction in (0, 1], e.g. "
                              "train=0.95,test=0.05")
        splits.append((name, fraction))
    if len({n for n, _ in splits}) != len(splits) or abs(sum(f for _, f in splits) - 1) > 1e-9:
        raise ExportError(f"--split {text}: split names must differ and fractions add up to 1")
    return tuple(splits)


def split_of(dialogue_id: str, splits: tuple[tuple[str, float], ...]) -> str:
    """A dialogue's split, from a hash of its id: it stays in its split when later versions add dialogues, and all
    pairs of one dialogue land in the same split."""
    point = int(bytes_key(dialogue_id.encode("utf-8"))[:15], 16) / 16**15
    edge = 0.0
    for name, fraction in splits:
        edge += fraction
        if point < edge:
            return name
    return splits[-1][0]


@dataclass(frozen=True)
class ExportOptions:
    format: str
    version: int | None = None  # default: the latest
    splits: tuple[tuple[str, float], ...] = (("train", 1.0),)
    parquet: bool = False  # Hugging Face formats: the Hub's Parquet layout instead of save_to_disk's Arrow files
    stages: tuple[str, ...] | None = None  # pair formats: default every stage the format can hold
    min_margin: float = 0.0
    pairs_per_turn: int | None = None
    pairs: str = "both"  # refinement, siblings or both (rows.PAIR_KINDS)
    shard_mb: int = 500

    def __post_init__(self) -> None:
        if self.pairs not in PAIR_KINDS:
            raise ExportError(f"--pairs {self.pairs}: choose among {', '.join(PAIR_KINDS)}")
        if self.min_margin < 0:
            raise ExportError(f"--min-margin {self.min_margin}: a margin is 0 or more (scores are 0-5)")
        if self.pairs_per_turn is not None and self.pairs_per_turn < 1:
            raise ExportError(f"--pairs-per-turn {self.pairs_per_turn}: give 1 or more (or leave it out for all "
                              "pairs)")

    def described(self, pairs: PairOptions | None) -> dict[str, Any]:
        """The options that shape the files (what the export key and the card record); ``pairs``: the pair options
        resolved against the output's stages (``pair_options``)."""
        shown: dict[str, Any] = {"splits": dict(self.splits)}
        if FORMATS[self.format].tables is not None:
            shown.update(parquet=self.parquet, shard_mb=self.shard_mb)
        if pairs is not None:
            shown.update(stages=pairs.names, min_margin=self.min_margin, pairs_per_turn=self.pairs_per_turn,
                         pairs=self.pairs)
        return shown

    def pair_options(self, known: list[StageRecord]) -> PairOptions:
        """The pairs to export of an output that ran the stages ``known``."""
        fmt = FORMATS[self.format]
        return PairOptions(pair_stages(known, self.stages, fmt.text_stages_only), self.min_margin,
                           self.pairs_per_turn, self.pairs)


@dataclass
class Summary:
    """A streaming distribution of 0-5 values: count, mean, extremes and a histogram in half-point bins."""

    n: int = 0
    total: float = 0.0
    low: float = float("inf")
    high: float = float("-inf")
    bins: list[int] = field(default_factory=lambda: [0] * 10)

    def add(self, value: float | None) -> None:
        if value is None:
            return
        self.n += 1
        self.total += value
        self.low, self.high = min(self.low, value), max(self.high, value)
        self.bins[min(max(int(value * 2), 0), 9)] += 1

    def described(self) -> dict[str, Any]:
        if not self.n:
            return {"n": 0}
        return {"n": self.n, "mean": round(self.total / self.n, 4), "min": round(self.low, 4),
                "max": round(self.high, 4),
                "histogram_0_to_5_by_half": self.bins}


@dataclass
class ExportResult:
    path: Path
    format: str
    version: int
    rows: dict[str, dict[str, int]]  # split -> table -> rows
    files: int
    bytes: int
    seconds: float


class _Tables:
    """Every (table, split) writer of a Hugging Face format, created up front so each split exists even empty."""

    def __init__(self, root: Path, fmt: Format, options: ExportOptions) -> None:
        assert fmt.tables is not None
        self.root, self.fmt, self.options = root, fmt, options
        self.writers = {(table, split): ShardedTable(self.folder(table, split), split, features, options.parquet,
                                                     options.shard_mb << 20)
                        for table, features in fmt.tables.items() for split, _ in options.splits}

    def folder(self, table: str, split: str) -> Path:
        if self.options.parquet:
            return self.root / ("data" if table == "default" else table)
        return self.root / ("" if table == "default" else table) / split

    def add(self, item: Any, split: str) -> tuple[str, int]:
        assert self.fmt.route is not None
        table, row = self.fmt.route(item)
        return table, self.writers[table, split].add(row)

    def finish(self, fingerprint: str) -> None:
        for (table, split), writer in self.writers.items():
            shards = writer.finish()
            if not self.options.parquet:
                save_to_disk_state(writer.folder, split, shards, writer.features,
                                   content_key([fingerprint, table, split]))
        if not self.options.parquet:
            assert self.fmt.tables is not None
            for table in self.fmt.tables:
                folder = self.root / ("" if table == "default" else table)
                splits = [split for split, _ in self.options.splits]
                (folder / "dataset_dict.json").write_text(json.dumps({"splits": splits}), encoding="utf-8")


class _JsonFiles:
    def __init__(self, root: Path, fmt: Format, options: ExportOptions) -> None:
        self.fmt, self.images = fmt, ImageFolder(root)
        self.writers = {split: JsonArray(root / f"{split}.json") for split, _ in options.splits}

    def add(self, item: Any, split: str) -> tuple[str, int]:
        assert self.fmt.item is not None
        copied = self.images.copied_bytes
        self.writers[split].add(self.fmt.item(item, self.images))
        return "default", self.images.copied_bytes - copied

    def finish(self, fingerprint: str) -> None:
        for writer in self.writers.values():
            writer.finish()


def export(out_dir: Path, to: Path, options: ExportOptions, stream: TextIO | None = None) -> ExportResult:
    """Export a dataset version of ``out_dir`` into the new folder ``to``."""
    stream = stream or sys.stderr
    if options.format not in FORMATS:
        raise ExportError(f"--format {options.format}: choose among {', '.join(FORMATS)}")
    fmt = FORMATS[options.format]
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        raise ExportError(f"{to} exists and is not an empty folder: export into a new folder (or remove it first)")
    started = time.monotonic()
    con = open_read_only(out_dir)
    spill = tempfile.TemporaryDirectory(prefix="seir-export-")
    try:
        # The store's cap on DuckDB's buffers ($SEIR_DUCKDB_MEMORY), spilling sorts into a temporary folder, so an
        # export's memory does not grow with the dataset.
        limit_memory(con, Path(spill.name))
        version = _version(con, out_dir, options.version)
        pair_options = options.pair_options(output_stages(con)) if fmt.source == "pairs" else None
        if (pair_options is not None and "sibling" in PAIR_KINDS[pair_options.pairs]
                and most_candidates(con) == 1):
            stream.write("[seir] no sibling pairs here: every round of this output sampled one candidate. Set "
                         "seir.candidates above 1 and refresh to sample several (refinement pairs are exported "
                         "as asked)\n")
        source = _source(con, out_dir, version, options, pair_options)
        with (writing(to.parent, f"the export {to.name}"),
              folder_whole(to, to.with_name(f".{to.name}.partial-{os.getpid()}")) as temp):
            rows = _write(temp, fmt, options, source, stream)
            _card_and_manifest(temp, fmt, options, source, rows)
    finally:
        con.close()
        spill.cleanup()
    files = [p for p in to.rglob("*") if p.is_file()]
    result = ExportResult(to, fmt.name, version, {s: dict(t) for s, t in rows.items()}, len(files),
                          sum(p.stat().st_size for p in files), time.monotonic() - started)
    counts = ", ".join(f"{split} {sum(tables.values())}" for split, tables in result.rows.items())
    stream.write(f"[seir] exported {version_name(version)} as {fmt.name} to {to}: {counts} "
                 f"({result.files} files, {result.bytes / 1e6:.1f} MB, {result.seconds:.1f} s)\n")
    return result


@dataclass
class _Source:
    version: int
    total: int | None
    unit: str
    items: Iterator[DialogueRow] | Iterator[PairRow]
    about: dict[str, Any]  # what the card says of the version
    pairs: PairOptions | None  # the pairs it holds, for pair formats
    scores: dict[str, Summary] = field(default_factory=dict)


def _version(con: Any, out_dir: Path, wanted: int | None) -> int:
    known = [row[0] for row in con.execute("SELECT version FROM versions ORDER BY version").fetchall()]
    if not known:
        raise ExportError(f"{out_dir} has no dataset version yet: run `seir run JOB --out {out_dir}` first")
    if wanted is None:
        return known[-1]
    if wanted not in known:
        raise ExportError(f"no version {version_name(wanted)} in {out_dir}; it has "
                          f"{', '.join(version_name(v) for v in known)} (see `seir versions --out {out_dir}`)")
    return wanted


def _source(con: Any, out_dir: Path, version: int, options: ExportOptions,
            pair_options: PairOptions | None) -> _Source:
    job_key, engine_version, job_name = con.execute(
        "SELECT v.job_key, v.engine_version, r.job_name FROM versions v LEFT JOIN runs r USING (run_id) "
        "WHERE v.version = ?", [version]).fetchall()[0]
    manifest = out_dir / "versions" / version_name(version) / "manifest.json"
    about = {"dataset_version": version_name(version), "version_manifest_key": file_key(manifest)
             if manifest.is_file() else None, "job_key": job_key, "job_name": job_name,
             "generated_by_seir": engine_version}
    if pair_options is None:
        return _Source(version, count_dialogues(con, version), "dialogues", dialogue_rows(con, out_dir, version),
                       about, None)
    # Pairs are found page by page as they are written: their number is known at the end.
    return _Source(version, None, "pairs", pair_rows(con, out_dir, version, pair_options), about, pair_options)


def _write(root: Path, fmt: Format, options: ExportOptions, source: _Source,
           stream: TextIO) -> dict[str, dict[str, int]]:
    writers: _Tables | _JsonFiles = _Tables(root, fmt, options) if fmt.tables else _JsonFiles(root, fmt, options)
    tables = list(fmt.tables or {"default": None})
    rows = {split: dict.fromkeys(tables, 0) for split, _ in options.splits}
    images_mb = 0.0
    started = time.monotonic()

    def image_rate() -> str:
        return f"images {images_mb:.1f} MB, {images_mb / max(time.monotonic() - started, 1e-9):.1f} MB/s"

    with Meter(f"export {version_name(source.version)} as {fmt.name}", source.total, source.unit, stream,
               detail=image_rate) as progress:
        for item in source.items:
            split = split_of(item.dialogue_id, options.splits)
            table, image_bytes = writers.add(item, split)
            rows[split][table] += 1
            _note_scores(source.scores, item)
            images_mb += image_bytes / 1e6
            progress.advance()
        writers.finish(_export_key(fmt, options, source))
    return rows


def _note_scores(scores: dict[str, Summary], item: DialogueRow | PairRow) -> None:
    if isinstance(item, DialogueRow):
        for turn in item.scores:
            for name in CONTENT_DIMENSIONS:
                scores.setdefault(name, Summary()).add(turn.get(name))
    else:
        for what, value in (("chosen", item.chosen.score), ("rejected", item.rejected.score),
                            ("margin", item.margin)):
            scores.setdefault(f"{item.stage}.{item.kind}.{what}", Summary()).add(value)


def _export_key(fmt: Format, options: ExportOptions, source: _Source) -> str:
    return content_key({"format": fmt.name, "options": options.described(source.pairs), "version": source.about,
                        "seir": seir.__version__})


def _card_and_manifest(root: Path, fmt: Format, options: ExportOptions, source: _Source,
                       rows: dict[str, dict[str, int]]) -> None:
    export_key = _export_key(fmt, options, source)
    total = sum(sum(t.values()) for t in rows.values())
    header: dict[str, Any] = {
        "license": None,
        "pretty_name": f"{source.about['job_name'] or 'seir'} {source.about['dataset_version']} ({fmt.name})",
        "task_categories": ["image-text-to-text"],
        "tags": ["seir", "synthetic", "interleaved-image-text"] + (["preference"] if fmt.source == "pairs" else []),
        "size_categories": [_size_category(total)],
    }
    if fmt.tables and options.parquet:
        header["configs"] = [
            {"config_name": table, "data_files": [
                {"split": split, "path": f"{'data' if table == 'default' else table}/{split}-*"}
                for split, _ in options.splits]}
            for table in fmt.tables]
    header["seir"] = {
        "format": fmt.name, "export_key": export_key, "seir_version": seir.__version__, **source.about,
        "options": options.described(source.pairs), "rows": rows,
        "scores": {name: s.described() for name, s in sorted(source.scores.items())},
    }
    yaml_text = yaml.safe_dump(header, sort_keys=False, allow_unicode=True, default_flow_style=None, width=120)
    yaml_text = yaml_text.replace("license: null\n", "license: null  # set your data's license before sharing it\n",
                                  1)
    (root / CARD).write_text(f"---\n{yaml_text}---\n\n{_card_body(fmt, options, source, rows)}", encoding="utf-8")
    if fmt.name.startswith("sharegpt"):
        info = llama_factory_info([s for s, _ in options.splits], ranking=fmt.source == "pairs")
        (root / "dataset_info.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    manifest = {"format": fmt.name, "export_key": export_key, "dataset_version": source.about["dataset_version"],
                "hash": "xxh3_128",
                "files": [{"path": p.relative_to(root).as_posix(), "bytes": p.stat().st_size, "xxh3_128": file_key(p)}
                          for p in files]}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


_LOADING = {
    "hf": "from datasets import load_from_disk\nds = load_from_disk(\"PATH\")  # a DatasetDict, one entry per split",
    "trl-sft": "from datasets import load_from_disk\nfrom trl import SFTTrainer\n"
               "ds = load_from_disk(\"PATH\")\ntrainer = SFTTrainer(model=..., train_dataset=ds[\"train\"], ...)",
    "trl-dpo": "from datasets import load_from_disk\nfrom trl import DPOTrainer\n"
               "pairs = load_from_disk(\"PATH\")                  # text pairs, TRL's preference format\n"
               "image_pairs = load_from_disk(\"PATH/image_pairs\")  # image-stage pairs (see below)\n"
               "trainer = DPOTrainer(model=..., train_dataset=pairs[\"train\"], ...)",
    "llava": "import json\nitems = json.load(open(\"PATH/train.json\"))  # image paths are relative to PATH",
    "sharegpt": "# LLaMA-Factory: dataset_dir: PATH, dataset: seir_train (dataset_info.json registers each split)",
    "sharegpt-dpo": "# LLaMA-Factory (stage: dpo): dataset_dir: PATH, dataset: seir_train",
}


def _card_body(fmt: Format, options: ExportOptions, source: _Source, rows: dict[str, dict[str, int]]) -> str:
    loading = _LOADING[fmt.name]
    if fmt.tables and options.parquet:
        loading = "from datasets import load_dataset\nds = load_dataset(\"PATH\")  # the configs in this card's header"
        if "image_pairs" in fmt.tables:
            loading += "\nimage_pairs = load_dataset(\"PATH\", \"image_pairs\")"
    counts = "\n".join(f"| {split} | " + " | ".join(str(tables.get(t, 0)) for t in (fmt.tables or {"default": 0}))
                       + " |" for split, tables in rows.items())
    columns = " | ".join(fmt.tables or {"rows": 0})
    lines = [
        f"# {source.about['job_name'] or 'seir'} {source.about['dataset_version']} ({fmt.name})",
        "",
        f"{fmt.describe}. Exported by seir {seir.__version__} from dataset version "
        f"{source.about['dataset_version']} (manifest key `{source.about['version_manifest_key']}`, job key "
        f"`{source.about['job_key']}`); every file is listed with its xxh3_128 hash in `manifest.json`.",
        "",
        f"| split | {columns} |",
        "| --- |" + " ---: |" * len(fmt.tables or {"rows": 0}),
        counts,
        "",
        "## Loading",
        "",
        "```python",
        loading.replace("PATH", "path/to/this/folder"),
        "```",
        "",
        "Score distributions (0-5, combined scores) per dimension are in the header under `seir.scores`. "
        "Trace any row back with `seir lineage --out OUTPUT DIALOGUE_ID` in the output folder it came from.",
    ]
    if fmt.source == "pairs":
        lines += ["", "Each pair's chosen draft is the one seir's refinement kept for that stage; the rejected one is "
                  "an earlier draft of the same stage that scored lower by at least the margin. Both drafts' keys, "
                  "scores, the margin and the critique the kept draft answered are in each row."]
    if fmt.name == "trl-dpo":
        lines += ["", "Image-stage pairs differ in their generated image, which TRL's preference format (one `images` "
                  "list for the prompt, text completions) cannot express: they are in `image_pairs/` with "
                  "`chosen_image` and `rejected_image` beside the caption context (docs/export.md in seir)."]
    lines += ["", "## License", "", "Set `license` in the header to the license of your data before sharing it: "
              "it depends on the seeds and the models that generated it, which seir cannot know.", ""]
    return "\n".join(lines)
