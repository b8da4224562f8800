"""Verdict files for ``seir verdicts import`` (docs/viewer.md, "Verdicts from a file"): seir's JSON lines, or a
Label Studio JSON export whose tasks carry ``dialogue_id`` and ``turn`` in their data.

A JSON line is at least ``{"dialogue_id": "...", "turn": 1, "dimension": "image_quality", "score": 0}`` (turns from
1; leave ``turn`` out for the whole dialogue), with optional ``stage``, ``draft_key``, ``verdict`` (accept or
reject), ``prefer`` and ``other`` (draft keys: ``prefer`` is better than ``other``, or than every other candidate of
its round when ``other`` is left out), ``note``, ``annotator`` and ``created_at`` (ISO 8601).

In a Label Studio export a Rating named after a dimension gives its score, a Choices named ``verdict`` accept or
reject, a TextArea named ``note`` the note; each annotation is one annotator's (``completed_by``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from seir.engine.store.verdicts import HumanVerdict, VerdictError
from seir.operators.jsonlines import object_lines

_FIELDS = {"dialogue_id": str, "turn": int, "dimension": str, "score": (int, float), "verdict": str, "stage": str,
           "draft_key": str, "prefer": str, "other": str, "note": str, "annotator": str, "created_at": str}


def read_verdict_file(path: Path, annotator: str) -> list[tuple[str, HumanVerdict]]:
    """Every verdict of ``path`` with where it was read (file and line, or task), checked field by field."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise VerdictError(f"{path}: cannot read it ({err})") from None
    # A verdict without its own time takes the file's: the same file imported twice gives the same verdicts.
    made = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
    if text.lstrip().startswith("["):
        return list(_label_studio(path, text, annotator, made))
    return list(_json_lines(path, text, annotator, made))


def _json_lines(path: Path, text: str, annotator: str, made: datetime) -> Iterator[tuple[str, HumanVerdict]]:
    for where, fields in object_lines(path, text, VerdictError):
        yield where, _verdict(fields, where, annotator, str(path), made)


def _verdict(fields: Mapping[str, Any], where: str, annotator: str, source: str, made: datetime) -> HumanVerdict:
    for name, value in fields.items():
        kind = _FIELDS.get(name)
        if kind is None:
            raise VerdictError(f"{where}: field {name!r} is not a verdict field ({', '.join(_FIELDS)})")
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise VerdictError(f"{where}: field {name!r}: {value!r} is not a {_kind_name(kind)}")
    turn = fields.get("turn")
    return HumanVerdict(
        dialogue_id=fields.get("dialogue_id") or "", turn_index=None if turn is None else turn - 1,
        dimension=fields.get("dimension"), score=None if fields.get("score") is None else float(fields["score"]),
        verdict=fields.get("verdict"), stage=fields.get("stage"), draft_key=fields.get("draft_key"),
        prefer=fields.get("prefer"), other=fields.get("other"), note=fields.get("note") or "",
        annotator=fields.get("annotator") or annotator, source=source,
        created_at=_when(fields.get("created_at"), where) or made).checked(where)


def _label_studio(path: Path, text: str, annotator: str, made: datetime) -> Iterator[tuple[str, HumanVerdict]]:
    try:
        tasks = json.loads(text)
    except json.JSONDecodeError as err:
        raise VerdictError(f"{path}: not a Label Studio JSON export ({err.msg} at line {err.lineno})") from None
    for index, task in enumerate(tasks):
        where = f"{path}: task {task.get('id', index) if isinstance(task, dict) else index}"
        data = task.get("data") if isinstance(task, dict) else None
        if not isinstance(data, dict):
            raise VerdictError(f"{where}: field 'data': a task holds its dialogue_id and turn in data")
        target = {k: data[k] for k in ("dialogue_id", "turn", "stage", "draft_key") if k in data}
        for annotation in task.get("annotations") or []:
            results = annotation.get("result") if isinstance(annotation, dict) else None
            if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
                raise VerdictError(f"{where}: field 'annotations': each annotation holds a list of results")
            if annotation.get("was_cancelled"):
                continue
            who = str(annotation.get("completed_by") or annotator)
            found: dict[str, Any] = {"note": ""}
            scores = []
            for result in results:
                name, value = result.get("from_name"), result.get("value") or {}
                if "rating" in value:
                    scores.append((name, value["rating"]))
                elif "choices" in value and name == "verdict":
                    found["verdict"] = str(value["choices"][0]).lower()
                elif "text" in value and name == "note":
                    found["note"] = " ".join(value["text"])
            found["created_at"] = annotation.get("created_at")
            if not scores:
                yield where, _verdict({**target, **found, "annotator": who}, where, annotator, str(path), made)
            for name, rating in scores:
                yield where, _verdict({**target, **found, "dimension": name, "score": rating, "annotator": who},
                                      where, annotator, str(path), made)


def _when(text: str | None, where: str) -> datetime | None:
    if text is None:
        return None
    try:
        found = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise VerdictError(f"{where}: field 'created_at': {text!r} is not an ISO 8601 time") from None
    return found if found.tzinfo else found.replace(tzinfo=timezone.utc)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return "number" if isinstance(kind, tuple) else {"str": "string", "int": "whole number"}[kind.__name__]
