"""Dedup inputs and outputs: dialogue embeddings (which are missing, storing new ones), the accepted dialogues
as the dedup pass sees them, and the pass's decisions. What a dialogue's text is and how its keep-score is
computed are stated once, in schema.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from seir.engine.records import Ledger
from seir.engine.store.base import held, now
from seir.engine.store.call_records import CallRecords
from seir.engine.store.schema import dialogue_text_sql, keep_score_sql


@dataclass(frozen=True)
class DedupRow:
    dialogue_id: str
    text: str
    score: float
    order: int
    image_keys: list[str]
    embedding: list[float] | None


class DedupInputs(CallRecords):
    @held
    def missing_embeddings(self, dialogue_keys: Sequence[str], embed_key: str) -> list[tuple[str, str]]:
        """(dialogue key, dialogue text) of dialogues without an embedding under ``embed_key``. Rejected ones are
        embedded too, so new thresholds that accept them need no model call."""
        return [tuple(row) for row in self.con.execute(
            f"""SELECT d.dialogue_key, {dialogue_text_sql("d")} FROM dialogues d
                WHERE d.dialogue_key IN (SELECT unnest(?::VARCHAR[]))
                  AND NOT EXISTS (SELECT 1 FROM dialogue_embeddings e
                                  WHERE e.dialogue_key = d.dialogue_key AND e.embed_key = ?)
                ORDER BY d.dialogue_key""", [list(dialogue_keys), embed_key]).fetchall()]

    def commit_embeddings(self, run_id: str, embed_key: str, vectors: Sequence[tuple[str, list[float]]],
                          ledger: Ledger, image_path: Any) -> None:
        with self.transaction():
            self._insert("dialogue_embeddings", {
                "dialogue_key": [k for k, _ in vectors], "embed_key": [embed_key] * len(vectors),
                "vector": [list(map(float, v)) for _, v in vectors], "run_id": [run_id] * len(vectors),
            })
            self._insert_ledger(run_id, None, ledger, image_path, now())

    @held
    def dedup_candidates(self, dialogue_keys: Sequence[str], embed_key: str) -> list[DedupRow]:
        """Accepted dialogues among ``dialogue_keys``, as the dedup pass sees them. ``order`` ranks the earliest
        made first, so on equal scores the dialogue that existed first is kept."""
        rows = self.con.execute(
            f"""SELECT d.dialogue_id, {dialogue_text_sql("d")}, {keep_score_sql("d")},
                       row_number() OVER (ORDER BY d.created_at, d.dialogue_id) - 1,
                       coalesce((SELECT list(t.image_key ORDER BY t.turn_index) FILTER (WHERE t.image_key IS NOT NULL)
                                 FROM turns t WHERE t.dialogue_key = d.dialogue_key), []),
                       (SELECT any_value(e.vector) FROM dialogue_embeddings e
                        WHERE e.dialogue_key = d.dialogue_key AND e.embed_key = ?)
                FROM dialogues d JOIN latest_decisions ld USING (dialogue_key)
                WHERE ld.accepted AND d.dialogue_key IN (SELECT unnest(?::VARCHAR[]))
                ORDER BY d.dialogue_id""", [embed_key, list(dialogue_keys)]).fetchall()
        return [DedupRow(*row) for row in rows]

    def record_dedup(self, run_id: str, decisions: Sequence[Any]) -> None:
        """This run's dedup decisions, replacing any it wrote before being interrupted."""
        with self.transaction():
            self.con.execute("DELETE FROM dedup WHERE run_id = ?", [run_id])
            self._insert("dedup", {
                "run_id": [run_id] * len(decisions), "dropped_id": [d.dropped_id for d in decisions],
                "kept_id": [d.kept_id for d in decisions], "matched_id": [d.matched_id for d in decisions],
                "method": [d.method for d in decisions], "similarity": [d.similarity for d in decisions],
                "created_at": [now()] * len(decisions),
            })
