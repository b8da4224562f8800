"""Scores and acceptance: score rows (per draft and per turn), what a rescore reads (dialogues scored under
another config, the kept turns) and writes, and acceptance decided again from the final scores."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from seir.engine.records import DialogueJudgement, Draft, Ledger, Score
from seir.engine.store.acceptance import HumanSays, decide
from seir.engine.store.base import held, now, pages
from seir.engine.store.call_records import CallRecords
from seir.engine.store.schema import HUMAN_SAYS
from seir.operators.scoring.combine import ScoringConfig
from seir.operators.stages import stored_fields

REDECIDE_ROWS = 16384  # dialogues decided per page


@dataclass(frozen=True)
class KeptTurn:
    """A committed turn as a rescore judges it again: the turn, what came before it, and its stages' kept drafts."""

    dialogue_key: str
    turn_index: int
    question: str
    answer: str
    caption: str
    image_key: str | None
    history: list[tuple[str, str]]  # the earlier turns' (question, answer)
    turn_images: list[list[str]]  # the keys of the pictures the user brought in each turn (the seed's)
    drafts: dict[str, Draft]  # the kept draft of each stage, by stage name


class Decisions(CallRecords):
    @held
    def scored_under_other_config(self, run_id: str, scoring_key: str) -> list[str]:
        """The run's dialogues whose latest scores came from a run with another scoring config."""
        return [row[0] for row in self.con.execute(
            """SELECT ts.dialogue_key FROM turn_scores ts JOIN runs r USING (run_id)
               WHERE ts.dialogue_key IN (SELECT dialogue_key FROM run_dialogues WHERE run_id = ?)
               GROUP BY ts.dialogue_key HAVING arg_max(r.scoring_key, r.started_at) IS DISTINCT FROM ?
               ORDER BY ts.dialogue_key""", [run_id, scoring_key]).fetchall()]

    @held
    def kept_turns(self, dialogue_keys: Sequence[str]) -> list[KeptTurn]:
        """Every committed turn of these dialogues with the kept draft of each of its stages, read as ``Draft``
        records (their columns are the record's), in dialogue and turn order."""
        keys = [list(dialogue_keys)]
        columns = ", ".join(f.name for f in stored_fields(Draft))
        drafts: dict[tuple[str, int], dict[str, Draft]] = {}
        found = self.con.execute(f"SELECT {columns} FROM drafts WHERE best AND dialogue_key IN "
                                 "(SELECT unnest(?::VARCHAR[]))", keys)
        names = [column[0] for column in found.description]
        for row in found.fetchall():
            draft = Draft(**dict(zip(names, row, strict=True)))
            drafts.setdefault((draft.dialogue_key, draft.turn_index), {})[draft.stage] = draft
        rows = self.con.execute(
            """SELECT t.dialogue_key, t.turn_index, t.question, t.answer, t.caption, t.image_key,
                      coalesce(list([h.question, h.answer] ORDER BY h.turn_index)
                               FILTER (WHERE h.turn_index IS NOT NULL), []),
                      coalesce((SELECT any_value(s.turn_images) FROM dialogues d JOIN seeds s USING (seed_key)
                                WHERE d.dialogue_key = t.dialogue_key), [])
               FROM turns t LEFT JOIN turns h ON h.dialogue_key = t.dialogue_key AND h.turn_index < t.turn_index
               WHERE t.dialogue_key IN (SELECT unnest(?::VARCHAR[]))
               GROUP BY ALL ORDER BY t.dialogue_key, t.turn_index""", keys).fetchall()
        return [KeptTurn(*row[:6], history=[(q, a) for q, a in row[6]], turn_images=row[7],
                         drafts=drafts.get((row[0], row[1]), {})) for row in rows]

    def commit_rescore(self, run_id: str, draft_scores: Sequence[tuple[str, str, Sequence[Score]]],
                       turn_scores: Mapping[tuple[str, int], Mapping[str, float]], ledger: Ledger,
                       image_path: Any, judged: Sequence[tuple[str, DialogueJudgement]] = ()) -> None:
        """New scores of kept drafts, the turns' new final scores and the dialogues' own, with the calls that made
        them."""
        scores = [(draft, dialogue, s) for draft, dialogue, found in draft_scores for s in found]
        with self.transaction():
            self._insert_scores(run_id, scores)
            self.insert_dialogue_scores(run_id, judged)
            self.insert_turn_scores(run_id, [(key, index, values) for (key, index), values in turn_scores.items()])
            self._insert_ledger(run_id, None, ledger, image_path, now())

    @held
    def redecide(self, run_id: str, scoring: ScoringConfig) -> None:
        """Decide acceptance of the run's dialogues under ``scoring`` (its thresholds, and people's verdicts as its
        ``human`` says) from their final scores; a dialogue whose decision changed (or that had none) gets a new
        decision row from ``run_id``. The inputs are gathered in one query and decided a page at a time."""
        # Each turn's final score on every dimension it has (its stages' own included), the latest run's; and what
        # people said of the dialogue (each annotator's latest word on each target counts).
        inputs = f"""
            WITH mine AS (SELECT DISTINCT dialogue_key FROM run_dialogues WHERE run_id = $run),
            finals AS (SELECT ts.dialogue_key, ts.turn_index, ts.dimension, arg_max(ts.value, r.started_at) AS value
                       FROM turn_scores ts SEMI JOIN mine USING (dialogue_key) JOIN runs r USING (run_id)
                       WHERE ts.value IS NOT NULL GROUP BY ALL),
            turns AS (SELECT dialogue_key, turn_index, map(list(dimension), list(value)) AS scores FROM finals
                      GROUP BY ALL),
            people AS ({HUMAN_SAYS})
            SELECT d.dialogue_key, any_value(d.failure) AS failure,
                   list(t.scores ORDER BY t.turn_index) FILTER (WHERE t.turn_index IS NOT NULL) AS turns,
                   any_value(ld.accepted) AS accepted, any_value(ld.reason) AS reason,
                   any_value((SELECT map(list(f.dimension), list(f.value)) FROM dialogue_final_scores f
                              WHERE f.dialogue_key = d.dialogue_key)) AS whole,
                   any_value(p.scores) AS human_scores, any_value(p.turns) AS human_turns,
                   any_value(p.dialogue) AS human_dialogue
            FROM mine JOIN dialogues d USING (dialogue_key)
            LEFT JOIN turns t USING (dialogue_key)
            LEFT JOIN latest_decisions ld USING (dialogue_key)
            LEFT JOIN people p USING (dialogue_key)
            GROUP BY d.dialogue_key"""
        for page in pages(self.con, inputs, "dialogue_key", REDECIDE_ROWS, {"run": run_id}):
            changed = []
            for key, failure, turns, was_accepted, was_reason, whole, human_scores, human_turns, human_dialogue in zip(
                    *(page.column(i).to_pylist() for i in range(9)), strict=True):
                scores = [dict(t) for t in turns or []]
                human = HumanSays({turn: dict(values) for turn, values in human_scores or []},
                                  dict(human_turns or []), human_dialogue)
                decision = decide(failure or "", scores, scoring.thresholds, dict(whole or {}), human, scoring)
                if (decision.accepted, decision.reason) != (was_accepted, was_reason):
                    changed.append((key, decision))
            with self.transaction():
                self._insert("decisions", {
                    "dialogue_key": [k for k, _ in changed], "run_id": [run_id] * len(changed),
                    "accepted": [d.accepted for _, d in changed], "reason": [d.reason for _, d in changed],
                    "turns_accepted": [list(d.turns_accepted) for _, d in changed],
                    "decided_at": [now()] * len(changed),
                })

    def insert_dialogue_scores(self, run_id: str, judged: Sequence[tuple[str, DialogueJudgement]]) -> None:
        """(dialogue key, its judgement on the dialogue-level dimensions) as scored by ``run_id``."""
        rows = [(key, j, s) for key, j in judged for s in j.scores]
        self._insert("dialogue_scores", {
            "dialogue_key": [k for k, _, _ in rows], "dimension": [s.dimension for _, _, s in rows],
            "scorer": [s.scorer for _, _, s in rows], "value": [s.value for _, _, s in rows],
            "model_id": [s.model_id for _, _, s in rows], "raw": [json.dumps(s.raw) for _, _, s in rows],
            "critique": [j.critique for _, j, _ in rows], "call_keys": [j.call_keys for _, j, _ in rows],
            "run_id": [run_id] * len(rows),
        })

    def insert_turn_scores(self, run_id: str, turns: Sequence[tuple[str, int, dict[str, float]]]) -> None:
        """(dialogue key, turn index, combined score per dimension) as scored by ``run_id``."""
        rows = [(key, index, dim, value) for key, index, scores in turns for dim, value in scores.items()]
        self._insert("turn_scores", {
            "dialogue_key": [r[0] for r in rows], "turn_index": [r[1] for r in rows],
            "dimension": [r[2] for r in rows], "value": [r[3] for r in rows], "run_id": [run_id] * len(rows),
        })

    def _insert_scores(self, run_id: str, scores: Sequence[tuple[str, str, Score]]) -> None:
        """(draft key, dialogue key, score) of drafts, per scorer and combined, as scored by ``run_id``."""
        self._insert("scores", {
            "draft_key": [d for d, _, _ in scores], "dialogue_key": [k for _, k, _ in scores],
            "dimension": [s.dimension for _, _, s in scores], "scorer": [s.scorer for _, _, s in scores],
            "value": [s.value for _, _, s in scores], "model_id": [s.model_id for _, _, s in scores],
            "raw": [json.dumps(s.raw) for _, _, s in scores], "run_id": [run_id] * len(scores),
            "method": [s.method for _, _, s in scores],
        })
