"""Shard commits: everything a shard produced (dialogues, turns, drafts and their scores, calls, images) in one
transaction, exactly once per shard."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from seir.engine.records import Comparison, Dialogue, Draft, Ledger
from seir.engine.store.acceptance import Decision
from seir.engine.store.base import StoreError, now
from seir.engine.store.decisions import Decisions
from seir.operators.stages import stored_fields


class ShardCommits(Decisions):
    def commit_shard(self, run_id: str, shard_id: str, dialogues: Sequence[Dialogue], decided: Sequence[Decision],
                     ledger: Ledger, generation_key: str, image_path: Any) -> bool:
        """Write everything a shard produced in one transaction, with each dialogue's acceptance as the run decided it
        on the spot (so a reader sees it while the run goes on; the run decides all again at its end). Returns False
        (writing nothing) if the shard was already committed, which is what makes a commit exactly-once."""
        with self.transaction():
            status = self.con.execute("SELECT status FROM shards WHERE shard_id = ?", [shard_id]).fetchall()
            if not status:
                raise StoreError(f"shard {shard_id} was never planned")
            if status[0][0] == "committed":
                return False
            stamp = now()
            self._insert_dialogues(run_id, shard_id, dialogues, generation_key, image_path, stamp)
            self._insert_ledger(run_id, shard_id, ledger, image_path, stamp)
            self._insert("decisions", {
                "dialogue_key": [d.dialogue_key for d in dialogues], "run_id": [run_id] * len(dialogues),
                "accepted": [x.accepted for x in decided], "reason": [x.reason for x in decided],
                "turns_accepted": [list(x.turns_accepted) for x in decided], "decided_at": [stamp] * len(dialogues),
            })
            self.con.execute("UPDATE shards SET status = 'committed', committed_at = ? WHERE shard_id = ?",
                             [stamp, shard_id])
        return True

    def _insert_dialogues(self, run_id: str, shard_id: str, dialogues: Sequence[Dialogue], generation_key: str,
                          image_path: Any, stamp: datetime) -> None:
        self._insert("dialogues", {
            "dialogue_key": [d.dialogue_key for d in dialogues], "dialogue_id": [d.dialogue_id for d in dialogues],
            "seed_key": [d.seed.seed_key for d in dialogues], "generation_key": [generation_key] * len(dialogues),
            "run_id": [run_id] * len(dialogues), "shard_id": [shard_id] * len(dialogues),
            "n_turns": [len(d.turns) for d in dialogues], "failure": [d.failure for d in dialogues],
            "messages": [json.dumps(d.messages(image_path)) for d in dialogues],
            "created_at": [stamp] * len(dialogues),
        })
        turns = [(d, t) for d in dialogues for t in d.turns]
        self._insert("turns", {
            "dialogue_key": [d.dialogue_key for d, _ in turns], "turn_index": [t.index for _, t in turns],
            "question": [t.question for _, t in turns], "answer": [t.answer for _, t in turns],
            "caption": [t.caption for _, t in turns], "image_key": [t.image_key for _, t in turns],
            "run_id": [run_id] * len(turns), "source_key": [t.source_key for _, t in turns],
        })
        self.insert_turn_scores(run_id, [(d.dialogue_key, t.index, t.scores) for d, t in turns])
        drafts = [draft for d in dialogues for draft in d.drafts]
        self._insert("drafts", _columns(Draft, drafts, run_id))
        self._insert("comparisons", _columns(Comparison, [c for d in dialogues for c in d.comparisons], run_id))
        self._insert_scores(run_id, [(x.draft_key, x.dialogue_key, s) for x in drafts for s in x.scores])
        self.insert_dialogue_scores(run_id, [(d.dialogue_key, d.judgement) for d in dialogues if d.judgement])


def _columns(record: type, rows: Sequence[Any], run_id: str) -> dict[str, list[Any]]:
    """Rows of a record type as its table's columns: the fields the record declares stored, and the run that made
    them."""
    return {**{f.name: [getattr(row, f.name) for row in rows] for f in stored_fields(record)},
            "run_id": [run_id] * len(rows)}
