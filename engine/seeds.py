"""Seeds: InterSyn-style topics put into question templates, and JSONL seed files.

A bad line never stops a run: it goes to quarantine with the file, line, field and reason, and the good lines go
on. JSONL seed lines look like::

    {"id": "pandas-1", "text": "How do pandas spend their day? Please draw one for me.", "turns": 2}
    {"topic": "Snow Leopard", "template": "Do you know ***? Can you draw a picture of it for me?"}
    {"text": "What is in this picture?", "images": ["photos/cat.jpg"], "meta": {"source": "forum"}}

``images`` are paths relative to the seed file (or to the job's ``seeds.images_root``); each must resolve, `..` and
symlinks followed, inside the seed file's folder, the job's folder or a declared ``seeds.roots`` folder, or the line
is quarantined without the file being opened. ``turns`` overrides the job's number of turns; ``meta`` is kept.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from seir.engine.images import as_png
from seir.engine.keys import bytes_key, content_key
from seir.engine.records import Quarantined, Seed
from seir.engine.spec import SeedSpec

_SEED_FIELDS = {"id": str, "text": str, "topic": str, "template": str, "images": list, "turns": int, "meta": dict}
MAX_SEED_TEXT_CHARS = 20_000


@dataclass
class SeedLoad:
    seeds: list[Seed] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    images: dict[str, bytes] = field(default_factory=dict)  # image key -> bytes, for images the seeds brought


class _BadLine(Exception):
    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(reason)
        self.field_name = field_name
        self.reason = reason


def load_seeds(spec: SeedSpec) -> SeedLoad:
    load = SeedLoad()
    seen: dict[str, str] = {}  # seed key -> where it was first seen
    for seed, where in _intersyn_seeds(spec, load) + _file_seeds(spec, load):
        first = seen.setdefault(seed.seed_key, where)
        if first != where:
            source, _, line = where.rpartition(":")
            load.quarantined.append(Quarantined(source, int(line), "text", f"duplicate of the seed at {first}", ""))
            continue
        load.seeds.append(seed)
    return load


def _intersyn_seeds(spec: SeedSpec, load: SeedLoad) -> list[tuple[Seed, str]]:
    topics = _listed(spec.topics, spec.topics_file, "topics", load)
    templates = _listed(spec.templates, spec.templates_file, "templates", load)
    usable = []
    for template, where in templates:
        if spec.slot not in template:
            source, _, line = where.rpartition(":")
            reason = f"template has no {spec.slot!r} slot for the topic"
            load.quarantined.append(Quarantined(source, int(line), "template", reason, template))
        else:
            usable.append(template)
    if topics and not usable:
        raise ValueError(f"none of the {len(templates)} question templates has a {spec.slot!r} slot")
    seeds = []
    for topic, where in topics[: spec.limit]:
        # Each topic's templates are chosen by key, so adding topics or templates leaves earlier pairs alone.
        chosen = sorted(usable, key=lambda t, topic=topic: content_key([topic, t]))[: spec.templates_per_topic]
        for template in chosen:
            text = template.replace(spec.slot, topic)
            key = content_key({"text": text, "topic": topic, "template": template, "images": [], "turns": None})
            seeds.append((Seed(key, f"intersyn-{key[:12]}", "intersyn", text, topic, template), where))
    return seeds


def _listed(inline: list[str], path: Path | None, what: str, load: SeedLoad) -> list[tuple[str, str]]:
    """Strings from the spec and/or a file (a JSON list, or one per line), each with 'source:line'."""
    items = [(text, f"job spec {what}:{i + 1}") for i, text in enumerate(inline)]
    if path is not None:
        text = path.read_text(encoding="utf-8")
        if text.lstrip().startswith("["):
            items += [(s, f"{path}:{line}") for s, line in _json_list_with_lines(text, path)]
        else:
            items += [(s.strip(), f"{path}:{i + 1}") for i, s in enumerate(text.splitlines()) if s.strip()]
    good = []
    for value, where in items:
        if isinstance(value, str) and value.strip():
            good.append((value.strip(), where))
        else:
            source, _, line = where.rpartition(":")
            load.quarantined.append(Quarantined(source, int(line), what, "not a non-empty string", repr(value)))
    return good


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


def _file_seeds(spec: SeedSpec, load: SeedLoad) -> list[tuple[Seed, str]]:
    seeds = []
    for path in spec.files:
        if not path.is_file():
            raise FileNotFoundError(f"seed file {path} does not exist (named in the job's seeds.files)")
        for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                seeds.append((_parse_line(raw, path, number, spec, load), f"{path}:{number}"))
            except _BadLine as bad:
                shown = raw[:500].decode("utf-8", errors="replace")
                load.quarantined.append(Quarantined(str(path), number, bad.field_name, bad.reason, shown))
    return seeds


def _parse_line(raw: bytes, path: Path, number: int, spec: SeedSpec, load: SeedLoad) -> Seed:
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
    if turns is not None and not 1 <= turns <= 10:
        raise _BadLine("turns", f"turns must be 1..10, got {turns}")
    image_keys = tuple(_load_image(spec, path, ref, i, load) for i, ref in enumerate(row.get("images", [])))
    key = content_key({"text": opening.strip(), "topic": topic, "template": template, "images": image_keys,
                       "turns": turns})
    seed_id = row.get("id") or f"seed-{key[:12]}"
    return Seed(key, seed_id, f"{path}:{number}", opening.strip(), topic, template, image_keys, turns)


def _load_image(spec: SeedSpec, seed_file: Path, ref: Any, index: int, load: SeedLoad) -> str:
    field_name = f"images[{index}]"
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
    if image_path.exists() and not image_path.is_file():
        raise _BadLine(field_name, f"image {image_path} is not a regular file")
    try:
        data = image_path.read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            image.verify()  # checks structure without decoding all pixels
    except FileNotFoundError:
        raise _BadLine(field_name, f"image file {image_path} not found") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as err:
        raise _BadLine(field_name, f"image {image_path} is not a readable image: {err}") from None
    png = as_png(data)
    key = bytes_key(png)
    load.images[key] = png
    return key
