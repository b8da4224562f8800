"""Seeds: InterSyn-style topics put into question templates, and JSONL seed files.

A bad line never stops a run: it goes to quarantine with the file, line, field and reason, and the good lines go
on. JSONL seed lines look like::

    {"id": "pandas-1", "text": "How do pandas spend their day? Please draw one for me.", "turns": 2}
    {"topic": "Snow Leopard", "template": "Do you know ***? Can you draw a picture of it for me?"}
    {"text": "What is in this picture?", "images": ["photos/cat.jpg"], "meta": {"source": "forum"}}

    {"text": "Compare these two views.", "turn_images": [["left.png"], ["right.png"]], "turns": 2}

``images`` are the pictures the user brings with the first question; ``turn_images`` place them per turn (MMDU
style: entry N holds the pictures the user brings in turn N + 1; an empty entry brings none). A seed brings 1 to
``MAX_SEED_IMAGES`` images in all. Paths are relative to the seed file (or to the job's ``seeds.images_root``); each
must resolve, `..` and symlinks followed, inside the seed file's folder, the job's folder or a declared
``seeds.roots`` folder, or the line is quarantined without the file being opened. An image that does not decode, or
whose header declares more pixels than the judge's limit (a decompression bomb), is quarantined too. ``turns``
overrides the job's number of turns; ``meta`` is kept.

Images are streamed: each is stored content-addressed as it is read (``put_image``) and only its key is kept, so
loading a seed file of 100k image seeds never holds 100k images in memory.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seir.engine.keys import bytes_key, content_key
from seir.engine.records import Quarantined, Seed
from seir.engine.spec import MAX_TURNS, SeedSpec
from seir.engine.store import as_png
from seir.operators.scoring.guards import model_ready_image

_SEED_FIELDS = {"id": str, "text": str, "topic": str, "template": str, "images": list, "turn_images": list,
                "turns": int, "meta": dict}
MAX_SEED_TEXT_CHARS = 20_000
MAX_SEED_IMAGES = 20  # MMDU's dialogues show 2 to 20 related images
_PATHS_REMEMBERED = 4096


def image_key_only(data: bytes) -> str:
    """The key an image would be stored under, storing nothing (a dry run, ``seir validate``)."""
    return bytes_key(as_png(data))


@dataclass
class SeedLoad:
    """A small job's seeds in memory (``seir validate``, tests): what ``plan_seeds`` keeps, and what it refused."""

    seeds: list[Seed] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)


@dataclass
class SeedReader:
    """Reads the job's seeds one at a time, in seed order (topic x template seeds first, then each file's lines).

    ``put_image`` stores each seed picture as it is read and returns its key; ``on_bytes`` hears how many bytes of
    the seed files were read (progress). Nothing grows with the number of seeds: lines are read one by one and the
    remembered image paths are bounded."""

    spec: SeedSpec
    put_image: Callable[[bytes], str] = image_key_only
    on_bytes: Callable[[int], None] = lambda n: None
    # resolved path -> key, so a picture many seeds share is read once; bounded (emptied when full) so a file of 100k
    # image seeds does not keep 100k paths either
    image_keys: dict[Path, str] = field(default_factory=dict)

    def total_bytes(self) -> int:
        files = [*self.spec.files, self.spec.topics_file]
        return sum(path.stat().st_size for path in files if path is not None and path.is_file())

    def __iter__(self) -> Iterator[tuple[Seed, str] | Quarantined]:
        """Each seed with where it was read ('source:line'), or the bad line's quarantine record."""
        yield from self._intersyn_seeds()
        yield from self._file_seeds()

    def _intersyn_seeds(self) -> Iterator[tuple[Seed, str] | Quarantined]:
        spec = self.spec
        templates = list(self._listed(spec.templates, spec.templates_file, "templates"))
        usable = []
        for item in templates:
            if isinstance(item, Quarantined):
                yield item
                continue
            template, where = item
            if spec.slot not in template:
                source, _, line = where.rpartition(":")
                yield Quarantined(source, int(line), "template", f"template has no {spec.slot!r} slot for the topic",
                                  template)
            else:
                usable.append(template)
        topics = self._listed(spec.topics, spec.topics_file, "topics")
        taken = 0
        for item in topics:
            if isinstance(item, Quarantined):
                yield item
                continue
            if spec.limit is not None and taken >= spec.limit:
                break
            taken += 1
            if not usable:
                raise ValueError(f"none of the {len(templates)} question templates has a {spec.slot!r} slot")
            topic, where = item
            # Each topic's templates are chosen by key, so adding topics or templates leaves earlier pairs alone.
            chosen = sorted(usable, key=lambda t, topic=topic: content_key([topic, t]))[: spec.templates_per_topic]
            for template in chosen:
                text = template.replace(spec.slot, topic)
                key = content_key({"text": text, "topic": topic, "template": template, "images": [], "turns": None})
                yield Seed(key, f"intersyn-{key[:12]}", "intersyn", text, topic, template), where

    def _listed(self, inline: list[str], path: Path | None,
                what: str) -> Iterator[tuple[str, str] | Quarantined]:
        """Strings from the spec and/or a file (a JSON list, or one per line), each with 'source:line'."""
        items: Iterable[tuple[Any, str]] = ((text, f"job spec {what}:{i + 1}") for i, text in enumerate(inline))
        if path is not None:
            items = itertools.chain(items, self._file_items(path))
        for value, where in items:
            if isinstance(value, str) and value.strip():
                yield value.strip(), where
            else:
                source, _, line = where.rpartition(":")
                yield Quarantined(source, int(line), what, "not a non-empty string", repr(value))

    def _file_items(self, path: Path) -> Iterator[tuple[Any, str]]:
        with path.open("rb") as lines:
            first = lines.read(4096)
        if first.lstrip().startswith(b"["):  # a JSON list is parsed whole: lists are topics, not millions of seeds
            text = path.read_text(encoding="utf-8")
            self.on_bytes(len(text))
            yield from ((s, f"{path}:{line}") for s, line in _json_list_with_lines(text, path))
            return
        for number, raw in self._lines(path):
            if raw.strip():
                yield raw.decode("utf-8", errors="replace").strip(), f"{path}:{number}"

    def _lines(self, path: Path) -> Iterator[tuple[int, bytes]]:
        with path.open("rb") as lines:
            for number, raw in enumerate(lines, start=1):
                self.on_bytes(len(raw))
                yield number, raw.rstrip(b"\r\n")

    def _file_seeds(self) -> Iterator[tuple[Seed, str] | Quarantined]:
        for path in self.spec.files:
            if not path.is_file():
                raise FileNotFoundError(f"seed file {path} does not exist (named in the job's seeds.files)")
            for number, raw in self._lines(path):
                if not raw.strip():
                    continue
                try:
                    yield _parse_line(raw, path, number, self), f"{path}:{number}"
                except _BadLine as bad:
                    shown = raw[:500].decode("utf-8", errors="replace")
                    yield Quarantined(str(path), number, bad.field_name, bad.reason, shown)


class _BadLine(Exception):
    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(reason)
        self.field_name = field_name
        self.reason = reason


def _json_list_with_lines(text: str, path: Path) -> list[tuple[Any, int]]:
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    items = []
    while True:
        pos = _skip(text, pos, ",")
        if pos >= len(text):
            raise ValueError(f"{path}: the JSON list is not closed")
        if text[pos] == "]":
            return items
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{err.lineno}: not valid JSON: {err.msg}") from None
        items.append((value, text.count("\n", 0, pos) + 1))
        pos = end


def _skip(text: str, pos: int, separators: str) -> int:
    while pos < len(text) and (text[pos].isspace() or text[pos] in separators):
        pos += 1
    return pos


def _parse_line(raw: bytes, path: Path, number: int, reader: SeedReader) -> Seed:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _BadLine("(line)", f"invalid UTF-8 at byte {err.start}") from None
    try:
        row = json.loads(text)
    except json.JSONDecodeError as err:
        raise _BadLine("(line)", f"malformed JSON: {err.msg} at column {err.colno}") from None
    if not isinstance(row, dict):
        raise _BadLine("(line)", f"a seed is a JSON object, got {type(row).__name__}")
    for name, value in row.items():
        expected = _SEED_FIELDS.get(name)
        if expected is None:
            raise _BadLine(name, f"unknown field (known: {', '.join(sorted(_SEED_FIELDS))})")
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise _BadLine(name, f"expected {expected.__name__}, got {type(value).__name__}")
    topic, template = row.get("topic"), row.get("template")
    if "text" in row:
        opening = row["text"]
        field_name = "text"
    elif topic is not None and template is not None:
        if "***" not in template:
            raise _BadLine("template", "template has no '***' slot for the topic")
        opening, field_name = template.replace("***", topic), "topic"
    else:
        raise _BadLine("text", "missing: give text, or topic and template")
    if not opening.strip():
        raise _BadLine(field_name, "empty text")
    if len(opening) > MAX_SEED_TEXT_CHARS:
        raise _BadLine(field_name, f"text of {len(opening)} characters is over the {MAX_SEED_TEXT_CHARS} limit")
    turns = row.get("turns")
    if turns is not None and not 1 <= turns <= MAX_TURNS:
        raise _BadLine("turns", f"turns must be 1..{MAX_TURNS}, got {turns}")
    turn_images = _turn_images(row, path, turns, reader)
    key_fields: dict[str, Any] = {"text": opening.strip(), "topic": topic, "template": template,
                                  "images": list(turn_images[0]) if turn_images else [], "turns": turns}
    if len(turn_images) > 1:  # a seed with first-turn images only keys as before turn_images existed
        key_fields["turn_images"] = [list(keys) for keys in turn_images]
    key = content_key(key_fields)
    seed_id = row.get("id") or f"seed-{key[:12]}"
    return Seed(key, seed_id, f"{path}:{number}", opening.strip(), topic, template, turn_images, turns)


def _turn_images(row: dict[str, Any], path: Path, turns: int | None,
                 reader: SeedReader) -> tuple[tuple[str, ...], ...]:
    """Image keys per user turn, from ``images`` (the first turn) or ``turn_images``; trailing empty turns dropped."""
    if "images" in row and "turn_images" in row:
        raise _BadLine("turn_images", "give images (the first turn's) or turn_images (per turn), not both")
    if "turn_images" in row:
        refs = row["turn_images"]
        for i, entry in enumerate(refs):
            if not isinstance(entry, list):
                raise _BadLine(f"turn_images[{i}]", f"each turn's images are a list, got {type(entry).__name__}")
        if turns is not None and len(refs) > turns:
            raise _BadLine("turn_images", f"images for {len(refs)} turns, but the seed has turns: {turns}; give "
                                          "fewer entries or more turns")
        if len(refs) > MAX_TURNS:
            raise _BadLine("turn_images", f"images for {len(refs)} turns, over the {MAX_TURNS} turn limit")
        named = [(f"turn_images[{t}][{i}]", ref) for t, entry in enumerate(refs) for i, ref in enumerate(entry)]
        field_name = "turn_images"
    else:
        refs = [row.get("images", [])]
        named = [(f"images[{i}]", ref) for i, ref in enumerate(refs[0])]
        field_name = "images"
    if len(named) > MAX_SEED_IMAGES:
        raise _BadLine(field_name, f"{len(named)} images, over the {MAX_SEED_IMAGES} a seed may bring")
    keys = iter([_load_image(reader, path, ref, where) for where, ref in named])
    per_turn = [tuple(next(keys) for _ in entry) for entry in refs]
    while per_turn and not per_turn[-1]:
        per_turn.pop()
    return tuple(per_turn)


def _load_image(reader: SeedReader, seed_file: Path, ref: Any, field_name: str) -> str:
    spec = reader.spec
    if not isinstance(ref, str) or not ref:
        raise _BadLine(field_name, "an image is a path relative to the seed file")
    try:  # containment is decided on the resolved path, before anything is opened; the resolved path is what is read
        image_path = spec.inside_roots((spec.images_root or seed_file.parent) / ref, seed_file.parent)
    except (OSError, RuntimeError, ValueError) as err:  # a NUL byte; a symlink loop (RuntimeError before 3.13)
        raise _BadLine(field_name, f"image path {ref!r} cannot be resolved: {err}") from None
    if image_path is None:
        roots = ", ".join(map(str, spec.read_roots(seed_file.parent)))
        raise _BadLine(field_name, f"image {ref} is outside the folders seeds may read ({roots}), so it was not "
                                   "opened; add its folder to the job's seeds.roots")
    if image_path in reader.image_keys:
        return reader.image_keys[image_path]
    if image_path.exists() and not image_path.is_file():
        raise _BadLine(field_name, f"image {image_path} is not a regular file")
    try:
        data = image_path.read_bytes()
    except FileNotFoundError:
        raise _BadLine(field_name, f"image file {image_path} not found") from None
    except OSError as err:
        raise _BadLine(field_name, f"image {image_path} cannot be read: {err}") from None
    # The judge's own check: the size is read from the header before any pixel is decoded, so a decompression bomb
    # is refused unallocated; what is stored is what every vision backend reads unchanged (8-bit RGB or grey).
    ready, reasons = model_ready_image(data)
    if ready is None:
        raise _BadLine(field_name, f"image {image_path} is not a readable image: {'; '.join(reasons)}")
    key = reader.put_image(as_png(ready))
    if len(reader.image_keys) >= _PATHS_REMEMBERED:
        reader.image_keys.clear()
    reader.image_keys[image_path] = key
    return key
