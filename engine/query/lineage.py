"""``seir lineage``: why a dialogue is in the dataset and where it came from, as a tree.

The seed, every draft of every stage in round order with its scores and critique, the images, the model calls
behind each draft, acceptance decisions, dedup decisions, and the runs and versions that produced it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

from seir.engine.query.sql import QueryRefused
from seir.engine.store import ImageStore, open_read_only, output_stages, stage_order_sql


def lineage(out_dir: Path, dialogue: str) -> dict[str, Any]:
    """The lineage of a dialogue named by id or key (the newest dialogue with that id when there are several)."""
    con = open_read_only(out_dir)
    try:
        return _lineage(con, dialogue, ImageStore(out_dir).relative_path)
    finally:
        con.close()


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    result = con.execute(sql, params)
    names = [d[0] for d in result.description]
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


def _lineage(con: duckdb.DuckDBPyConnection, dialogue: str, image_path: Callable[[str], str]) -> dict[str, Any]:
    found = _rows(con, """SELECT d.*, s.seed_id, s.source, s.text AS seed_text, s.topic, s.template
                          FROM dialogues d LEFT JOIN seeds s USING (seed_key)
                          WHERE d.dialogue_id = ? OR d.dialogue_key = ? ORDER BY d.created_at DESC LIMIT 1""",
                  [dialogue, dialogue])
    if not found:
        duplicate = _rows(con, """SELECT * FROM seed_duplicates WHERE seed_id = ? OR seed_key = ?
                                   ORDER BY run_id DESC LIMIT 1""", [dialogue, dialogue])
        if duplicate:
            return {"dialogue_id": None, "seed_duplicate": duplicate[0]}
        raise QueryRefused(f"no dialogue with id or key {dialogue!r}; list some with "
                           "`seir sql --out DIR \"SELECT dialogue_id FROM dataset_latest\"`")
    d = found[0]
    key = d["dialogue_key"]
    drafts = _rows(con, """SELECT draft_key, turn_index, stage, round, candidate, round_best, ok, passed, best, text,
                                  caption, image_key, source_key, reason, critique, call_keys, run_id FROM drafts
                           WHERE dialogue_key = ?
                           ORDER BY turn_index, {order}, round, candidate""".format(
                               order=stage_order_sql("stage", output_stages(con))), [key])
    scores = _rows(con, """SELECT draft_key, dimension, scorer, value, run_id FROM scores WHERE dialogue_key = ?
                           ORDER BY dimension, scorer""", [key])
    # A draft's calls were committed in the same transaction as its dialogue, with the same timestamp: filtering on
    # it lets DuckDB skip every other row group of a large model_calls table instead of hashing all of it.
    call_keys = [k for draft in drafts for k in draft["call_keys"] or []]
    calls = _rows(con, """SELECT c.call_key, c.role, c.method, c.model_id, c.cached, c.latency_ms, c.tokens_in,
                                 c.tokens_out, c.error, c.run_id
                          FROM model_calls c
                          WHERE c.created_at = ? AND c.call_key IN (SELECT unnest(?::VARCHAR[]))""",
                  [d["created_at"], call_keys])
    images = {r["image_key"]: r for r in _rows(con, """SELECT image_key, path, width, height FROM images
        WHERE image_key IN (SELECT image_key FROM drafts WHERE dialogue_key = ?)""", [key])}
    by_call: dict[str, list[dict[str, Any]]] = {}
    for call in calls:
        by_call.setdefault(call["call_key"], []).append(call)
    for draft in drafts:
        draft["scores"] = [s for s in scores if s["draft_key"] == draft["draft_key"]]
        draft["calls"] = [c for k in draft.pop("call_keys") or [] for c in by_call.get(k, [])[:1]]
        draft["image"] = images.get(draft["image_key"])
        source = draft.pop("source_key")  # one of the seed's pictures: stored, but not in the images table
        draft["edited_from"] = image_path(source) if source else None
    return {
        "dialogue_id": d["dialogue_id"], "dialogue_key": key, "generated_by": d["run_id"],
        "generation_key": d["generation_key"], "failure": d["failure"],
        "seed": {k: d[k] for k in ("seed_id", "seed_key", "source", "seed_text", "topic", "template")},
        "decisions": _rows(con, """SELECT run_id, accepted, reason, decided_at FROM decisions
                                   WHERE dialogue_key = ? ORDER BY decided_at""", [key]),
        "versions": _rows(con, """SELECT version, accepted FROM version_dialogues WHERE dialogue_key = ?
                                  ORDER BY version""", [key]),
        "dedup": _rows(con, """SELECT run_id, dropped_id, kept_id, matched_id, method, similarity FROM dedup
                               WHERE ? IN (dropped_id, kept_id, matched_id) ORDER BY created_at""",
                       [d["dialogue_id"]]),
        "runs": _rows(con, """SELECT run_id, kind, job_name, started_at, status FROM runs WHERE run_id IN (
                                  SELECT run_id FROM decisions WHERE dialogue_key = ? UNION SELECT ?)
                              ORDER BY started_at""", [key, d["run_id"]]),
        "drafts": drafts,
        "seed_duplicates": _rows(con, """SELECT seed_id, source, text, method, similarity, run_id
                                         FROM seed_duplicates WHERE kept_seed_key = ? ORDER BY seed_id""",
                                 [d["seed_key"]]),
    }


def format_lineage(tree: dict[str, Any]) -> str:
    if tree["dialogue_id"] is None:
        dup = tree["seed_duplicate"]
        return (f"seed {dup['seed_id']} from {dup['source']} was dropped before any model call (run {dup['run_id']}):"
                f" a near-duplicate of seed {dup['kept_seed_id']} by {dup['method']} at {dup['similarity']:.3f}\n"
                f"└─ text: {_short(dup['text'], 100)}")
    seed = tree["seed"]
    latest = tree["decisions"][-1] if tree["decisions"] else None
    status = "undecided" if latest is None else "accepted" if latest["accepted"] else f"rejected: {latest['reason']}"
    lines = [f"dialogue {tree['dialogue_id']} (key {tree['dialogue_key']}) {status}",
             f"├─ seed {seed['seed_id']} from {seed['source']}: {_short(seed['seed_text'], 100)}",
             f"├─ generated by {tree['generated_by']}" + (f", stopped early: {tree['failure']}"
                                                          if tree["failure"] else "")]
    for run in tree["runs"]:
        lines.append(f"│  run {run['run_id']} ({run['kind']}, job {run['job_name']}, {run['status']})")
    for decision in tree["decisions"]:
        verdict = "accepted" if decision["accepted"] else f"rejected: {decision['reason']}"
        lines.append(f"├─ decision by {decision['run_id']}: {verdict}")
    versions = ", ".join(f"v{v['version']:04d} {'accepted' if v['accepted'] else 'rejected'}"
                         for v in tree["versions"])
    lines.append(f"├─ versions: {versions or 'none yet'}")
    for dup in tree["seed_duplicates"]:
        lines.append(f"├─ seed {dup['seed_id']} from {dup['source']} dropped as a near-duplicate of this seed by "
                     f"{dup['method']} at {dup['similarity']:.3f} ({dup['run_id']})")
    for entry in tree["dedup"]:
        lines.append(f"├─ dedup ({entry['run_id']}): {entry['dropped_id']} dropped as a duplicate of "
                     f"{entry['matched_id']} by {entry['method']} at {entry['similarity']:.3f}; "
                     f"kept {entry['kept_id']}")
    turn = None
    per_round = Counter((d["turn_index"], d["stage"], d["round"]) for d in tree["drafts"])
    for draft in tree["drafts"]:
        if draft["turn_index"] != turn:
            turn = draft["turn_index"]
            lines.append(f"└─ turn {turn + 1}")
        mark = "kept" if draft["best"] else "passed" if draft["passed"] else "ok" if draft["ok"] else "failed"
        text = draft["text"] if not draft["caption"] else f"{draft['text']} | caption: {draft['caption']}"
        # Candidates are named only where a round has several (seir.candidates), and the one refined is marked.
        several = per_round[(draft["turn_index"], draft["stage"], draft["round"])] > 1
        name = f"round {draft['round']}" + (f" candidate {draft['candidate']}" if several else "")
        chosen = ", chosen" if several and draft["round_best"] else ""
        lines.append(f"   ├─ {draft['stage']} {name} [{mark}{chosen}] {_short(text or '', 90)}")
        if not draft["ok"]:
            lines.append(f"   │    reason: {draft['reason']}")
        combined = [s for s in draft["scores"] if s["scorer"] == "combined"]
        for score in combined:
            parts = ", ".join(f"{s['scorer']} {s['value']:.2f}" for s in draft["scores"]
                              if s["dimension"] == score["dimension"] and s["scorer"] != "combined"
                              and s["run_id"] == score["run_id"])
            lines.append(f"   │    {score['dimension']} {score['value']:.2f} ({parts}) [{score['run_id']}]")
        if draft["critique"]:
            lines.append(f"   │    critique: {_short(draft['critique'], 100)}")
        if draft["image"]:
            image = draft["image"]
            lines.append(f"   │    image {image['path']} {image['width']}x{image['height']}")
        if draft["edited_from"]:
            lines.append(f"   │    edited from {draft['edited_from']} (a picture the user showed)")
        for call in draft["calls"]:
            how = "cached" if call["cached"] else f"{call['latency_ms']:.0f} ms batch"
            error = f" error: {call['error']}" if call["error"] else ""
            lines.append(f"   │    call {call['role']}.{call['method']} {call['model_id']} {call['call_key'][:12]} "
                         f"({how}, {call['tokens_in']}→{call['tokens_out']} tokens){error}")
    return "\n".join(lines)


def lineage_json(tree: dict[str, Any]) -> str:
    return json.dumps(tree, indent=1, default=str)


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
