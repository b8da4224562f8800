"""One dialogue drawn as HTML, by report.html's gallery and by ``seir view``'s dialogue page alike: the turns as a
chat with the user's pictures, each turn's final scores against the thresholds (combined and per scorer), each
stage's refinement history (every round's candidates, critique, scores, which was kept, an edited picture beside the
one it was edited from) and what people said of it.

The caller says where a picture comes from (``image_src``: a data URL in the report, a URL of the viewer) and
whether the page is the viewer's (``live``: links to each draft's recorded requests, candidates to compare, and the
forms that record verdicts).
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import duckdb

from seir.engine.records import TURN_DIMENSIONS
from seir.engine.store import HumanVerdict, output_stages, stage_order_sql


@dataclass
class DraftRow:
    draft_key: str
    turn_index: int
    stage: str
    round: int
    candidate: int
    round_best: bool
    ok: bool
    passed: bool
    best: bool
    text: str
    caption: str | None
    image_key: str | None
    source_key: str | None
    critique: str
    reason: str
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # scorer -> dimension -> value


@dataclass
class TurnRow:
    index: int
    question: str
    answer: str
    caption: str
    image_key: str | None
    shown: list[str]  # the keys of the pictures the user brought to this turn
    final: dict[str, float]  # dimension -> final combined score


@dataclass
class DialogueRecord:
    dialogue_key: str
    dialogue_id: str
    status: str  # accepted, rejected, failed, undecided
    reason: str
    seed_id: str
    seed_text: str
    run_id: str
    thresholds: dict[str, float]
    turns: list[TurnRow]
    drafts: list[DraftRow]
    verdicts: list[HumanVerdict] = field(default_factory=list)  # people's, newest first
    pending: list[HumanVerdict] = field(default_factory=list)  # saved in the inbox, not yet stored

    @property
    def mean_score(self) -> float:
        values = [v for turn in self.turns for d, v in turn.final.items() if d != "question" and v is not None]
        return sum(values) / len(values) if values else 0.0


# Where a dialogue's rows lie in the store's large tables (the viewer's list records it): per table, ranges of
# ``rowid`` ((first, last), or (first, None) for every row from first on). A table not named is read whole.
RowRanges = Mapping[str, Sequence[tuple[int, int | None]]]


def _within(near: RowRanges, table: str, alias: str = "") -> str:
    ranges = near.get(table)
    if not ranges:
        return ""
    column = f"{alias}rowid"
    return " AND (" + " OR ".join(f"{column} BETWEEN {int(lo)} AND {int(hi)}" if hi is not None
                                  else f"{column} >= {int(lo)}" for lo, hi in ranges) + ")"


def load_dialogue(con: duckdb.DuckDBPyConnection, dialogue_key: str, near: RowRanges | None = None
                  ) -> DialogueRecord | None:
    """A dialogue as the store holds it, by key (None when there is none); ``near`` says where its rows lie, so a
    large store is read a few row groups at a time."""
    near = near or {}
    found = con.execute(f"""
        SELECT dialogue_id, failure, run_id, seed_key FROM dialogues
        WHERE dialogue_key = ?{_within(near, "dialogues")} ORDER BY created_at DESC LIMIT 1""",
                        [dialogue_key]).fetchall()
    if not found:
        return None
    dialogue_id, failure, run_id, seed_key = found[0]
    seed_id, seed_text, shown = (con.execute("SELECT seed_id, text, turn_images FROM seeds WHERE seed_key = ? LIMIT 1",
                                             [seed_key]).fetchone() or ("", "", []))
    accepted, reason, decided_by = con.execute(f"""
        SELECT arg_max(accepted, decided_at), arg_max(reason, decided_at), arg_max(run_id, decided_at)
        FROM decisions WHERE dialogue_key = ?{_within(near, "decisions")}""", [dialogue_key]).fetchone()
    spec = (con.execute("SELECT job_spec FROM runs WHERE run_id = ?", [decided_by or run_id]).fetchone() or [None])[0]
    status = "failed" if failure else "undecided" if accepted is None else "accepted" if accepted else "rejected"
    # Each turn's final scores, the latest run's, filtered to this dialogue before any grouping.
    finals: dict[int, dict[str, float]] = {}
    for index, dimension, value in con.execute(f"""
            SELECT ts.turn_index, ts.dimension, arg_max(ts.value, r.started_at) FROM turn_scores ts
            JOIN runs r USING (run_id) WHERE ts.dialogue_key = ?{_within(near, "turn_scores", "ts.")}
            GROUP BY ALL""", [dialogue_key]).fetchall():
        finals.setdefault(index, {})[dimension] = value
    shown = shown or []
    turns = [TurnRow(index, question or "", answer or "", caption or "", image_key,
                     shown[index] if index < len(shown) else [], finals.get(index, {}))
             for index, question, answer, caption, image_key in con.execute(f"""
        SELECT turn_index, question, answer, caption, image_key FROM turns
        WHERE dialogue_key = ?{_within(near, "turns")} ORDER BY turn_index""", [dialogue_key]).fetchall()]
    order = stage_order_sql("stage", output_stages(con))
    drafts = [DraftRow(*row) for row in con.execute(f"""
        SELECT draft_key, turn_index, stage, round, candidate, round_best, ok, passed, best, coalesce(text, ''),
               caption, image_key, source_key, coalesce(critique, ''), coalesce(reason, '')
        FROM drafts WHERE dialogue_key = ?{_within(near, "drafts")}
        ORDER BY turn_index, {order}, round, candidate""", [dialogue_key]).fetchall()]
    by_key = {d.draft_key: d for d in drafts}
    for draft_key, scorer, dimension, value in con.execute(f"""
            SELECT s.draft_key, s.scorer, s.dimension, arg_max(s.value, r.started_at) FROM scores s
            JOIN runs r USING (run_id) WHERE s.dialogue_key = ?{_within(near, "scores", "s.")}
            GROUP BY ALL ORDER BY ALL""", [dialogue_key]).fetchall():
        if draft_key in by_key:
            by_key[draft_key].scores.setdefault(scorer, {})[dimension] = value
    found_verdicts = con.execute("SELECT * EXCLUDE (verdict_key) FROM human_verdicts WHERE dialogue_key = ? "
                                 "ORDER BY created_at DESC", [dialogue_key])
    names = [column[0] for column in found_verdicts.description]
    verdicts = [HumanVerdict(**dict(zip(names, row, strict=True))) for row in found_verdicts.fetchall()]
    thresholds = json.loads(spec or "{}").get("scoring", {}).get("thresholds", {})
    return DialogueRecord(dialogue_key, dialogue_id, status, failure or reason or "", seed_id or "", seed_text or "",
                          run_id, thresholds, turns, drafts, verdicts)


def dialogue_html(record: DialogueRecord, image_src: Callable[[str], str], live: bool = False) -> str:
    """The dialogue as an ``<article>``; ``live`` adds the viewer's links and verdict forms."""
    turns = "".join(_turn_html(record, turn, image_src, live) for turn in record.turns)
    said = "".join(f"<li>{_verdict_text(v, pending=True)}</li>" for v in record.pending) + "".join(
        f"<li>{_verdict_text(v)}</li>" for v in record.verdicts)
    forms = _dialogue_form() if live else ""
    return (f'<article class="dialogue" data-key="{record.dialogue_key}" data-id="{html.escape(record.dialogue_id)}">'
            f"<h4>{html.escape(record.dialogue_id)} — <span class='status {record.status}'>{record.status}</span>"
            f"{': ' + html.escape(record.reason) if record.reason else ''}, mean final score "
            f"{record.mean_score:.2f}</h4><p class='seed'>seed {html.escape(record.seed_id)}: "
            f"{html.escape(record.seed_text)}</p>{turns}"
            + (f"<h5>People said</h5><ul class='verdicts'>{said}</ul>" if said else "") + forms + "</article>")


def _turn_html(record: DialogueRecord, turn: TurnRow, image_src: Callable[[str], str], live: bool) -> str:
    shown = "".join(f'<img class="shown" alt="picture the user showed" src="{image_src(k)}">' for k in turn.shown)
    made = f'<img class="made" alt="turn {turn.index + 1} picture" src="{image_src(turn.image_key)}">' \
        if turn.image_key else ""
    chat = (f'<div class="chat"><div class="user"><b>user</b> {html.escape(turn.question)}{shown}</div>'
            f'<div class="assistant"><b>assistant</b> {html.escape(turn.answer)}{made}'
            + (f"<p><i>{html.escape(turn.caption)}</i></p>" if turn.caption else "") + "</div></div>")
    mine = [d for d in record.drafts if d.turn_index == turn.index]
    stages: dict[str, list[DraftRow]] = {}
    for draft in mine:
        stages.setdefault(draft.stage, []).append(draft)
    history = "".join(
        f'<div class="stage"><h5>turn {turn.index + 1} · {html.escape(stage)}</h5><div class="drafts">'
        + "".join(_draft_html(d, image_src, live) for d in drafts) + "</div></div>" for stage, drafts in stages.items())
    form = _turn_form(turn.index) if live else ""
    return (f'<section class="turn" data-turn="{turn.index + 1}"><h4>turn {turn.index + 1}</h4>{chat}'
            f"{_scores_table(record, turn)}{history}{form}</section>")


def _scores_table(record: DialogueRecord, turn: TurnRow) -> str:
    """The turn's final score per dimension against its threshold, and each scorer's score of the kept drafts."""
    kept = [d for d in record.drafts if d.turn_index == turn.index and d.best]
    scorers = sorted({s for d in kept for s in d.scores if s != "combined"})
    rows = []
    for dimension in TURN_DIMENSIONS:
        value = turn.final.get(dimension)
        if value is None:
            continue
        threshold = record.thresholds.get(dimension)
        low = threshold is not None and value < threshold
        parts = [next((d.scores[s][dimension] for d in kept if dimension in d.scores.get(s, {})), None)
                 for s in scorers]
        rows.append(f"<tr class='{'below' if low else 'met'}'><td>{dimension}</td><td>{value:.2f}</td>"
                    f"<td>{'-' if threshold is None else f'{threshold:.2f}'}</td>"
                    + "".join(f"<td>{'-' if p is None else f'{p:.2f}'}</td>" for p in parts) + "</tr>")
    head = "".join(f"<th>{html.escape(s)}</th>" for s in scorers)
    return (f"<table class='scores'><tr><th>dimension</th><th>final</th><th>threshold</th>{head}</tr>"
            + "".join(rows) + "</table>") if rows else ""


def _draft_html(draft: DraftRow, image_src: Callable[[str], str], live: bool) -> str:
    name = f"round {draft.round}" + (f" candidate {draft.candidate}" if draft.candidate else "")
    why = "kept" if draft.best else "refined further" if draft.round_best else "another candidate was better"
    if not draft.ok:
        why = f"failed: {draft.reason}"
    image = f'<img alt="{name}" src="{image_src(draft.image_key)}">' if draft.image_key else ""
    if draft.source_key and draft.image_key:
        image = (f'<div class="edit"><figure><img alt="source" src="{image_src(draft.source_key)}">'
                 f"<figcaption>edited from</figcaption></figure><figure>{image}<figcaption>edit</figcaption>"
                 "</figure></div>")
    scores = "".join(f"<li>{html.escape(scorer)}: " + ", ".join(f"{d} {v:.2f}" for d, v in sorted(found.items()))
                     + "</li>" for scorer, found in sorted(draft.scores.items()))
    links = (f'<p class="links"><a href="/draft/{draft.draft_key}">requests</a> '
             f'<label><input type="checkbox" class="pick" value="{draft.draft_key}"> compare</label></p>'
             if live else "")
    return (f'<div class="draft{" kept" if draft.best else ""}" data-draft="{draft.draft_key}"><b>{name}</b> '
            f"<small>{html.escape(why)}{', passed' if draft.passed else ''}</small>"
            f"<p>{html.escape(draft.text)}</p>"
            + (f"<p><i>{html.escape(draft.caption)}</i></p>" if draft.caption else "")
            + f"{image}<ul>{scores}</ul><p class='critique'>{html.escape(draft.critique)}</p>{links}</div>")


def _verdict_text(verdict: HumanVerdict, pending: bool = False) -> str:
    target = "the dialogue" if verdict.turn_index is None else f"turn {verdict.turn_index + 1}"
    said = []
    if verdict.score is not None:
        said.append(f"{verdict.dimension} {verdict.score:g}")
    if verdict.verdict:
        said.append(f"{verdict.verdict}ed")
    if verdict.prefer:
        said.append(f"preferred {verdict.prefer[:12]}" + (f" over {verdict.other[:12]}" if verdict.other else ""))
    note = f" — {html.escape(verdict.note)}" if verdict.note else ""
    return (f"{html.escape(verdict.annotator or '?')} on {target}: {html.escape(', '.join(said))}{note} "
            f"<small>{'saved, not yet in provenance' if pending else verdict.created_at}</small>")


def _turn_form(index: int) -> str:
    options = "".join(f"<option>{d}</option>" for d in TURN_DIMENSIONS)
    return (f'<form class="verdict" data-turn="{index + 1}"><select name="dimension">{options}</select> '
            '<input name="score" type="number" min="0" max="5" step="1" value="3"> '
            '<button name="kind" value="score">score turn</button> '
            '<input name="note" placeholder="note"> <button name="kind" value="accept">accept turn</button> '
            '<button name="kind" value="reject">reject turn</button></form>')


def _dialogue_form() -> str:
    return ('<form class="verdict" data-turn=""><input name="note" placeholder="note"> '
            '<button name="kind" value="accept">accept dialogue</button> '
            '<button name="kind" value="reject">reject dialogue</button></form>')


def draft_card(draft: DraftRow, image_src: Callable[[str], str]) -> str:
    """One draft alone, as the comparison page shows two side by side."""
    return _draft_html(draft, image_src, live=False)


STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
.dialogue { border: 1px solid #ccc; margin: 1em 0; padding: 0.5em; }
.chat .user, .chat .assistant { margin: 0.3em 0; padding: 0.4em; border-radius: 6px; }
.chat .user { background: #eef3ff; } .chat .assistant { background: #f3f3f3; }
.chat img { width: 160px; display: block; margin-top: 0.3em; }
.drafts { display: flex; gap: 0.5em; overflow-x: auto; }
.draft { flex: 0 0 260px; border: 1px solid #eee; padding: 0.4em; font-size: 0.85em; }
.draft.kept { border-color: #2a7; }
.draft img { width: 192px; display: block; image-rendering: pixelated; }
.edit { display: flex; gap: 0.3em; } .edit img { width: 120px; }
.critique { color: #666; font-style: italic; }
.status.accepted { color: #2a7; } .status.rejected, .status.failed { color: #b33; }
tr.below td { color: #b33; }
td, th { border-bottom: 1px solid #ddd; padding: 0.2em 0.6em; text-align: left; }
"""
