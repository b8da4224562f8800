"""Dedup inputs and outputs: dialogue embeddings (which are missing, storing new ones), the accepted dialogues
as the dedup pass sees them, and the pass's decisions. What a dialogue's text is and how its keep-score is
computed are stated once, in schema.py."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from seir.engine.records import Ledger
from seir.engine.store.base import held, now
from seir.engine.store.call_records import CallRecords
from seir.engine.store.schema import ACCEPTED_IN_RUN, dialogue_text_sql, keep_score_sql


@dataclass(frozen=True)
class DedupRow:
    dialogue_id: str
    text: str
    score: float
    order: int
    image_keys: list[str]
    embedding: list[float] | None


PAGE_ROWS = 8192  # dialogues read per page for embedding and dedup
# The dialogues of run $1 without an embedding under embed key $2.
_MISSING = f"""
    SELECT d.dialogue_key, {dialogue_text_sql("d")} AS text FROM dialogues d
    WHERE d.dialogue_key IN (SELECT dialogue_key FROM run_dialogues WHERE run_id = ?)
      AND NOT EXISTS (SELECT 1 FROM dialogue_embeddings e WHERE e.dialogue_key = d.dialogue_key AND e.embed_key = ?)"""


class DedupInputs(CallRecords):
    @held
    def missing_embeddings(self, run_id: str, embed_key: str) -> Iterator[list[tuple[str, str]]]:
        """(dialogue key, dialogue text) of the run's dialogues without an embedding under ``embed_key``, a page at a
        time. Rejected ones are embedded too, so new thresholds that accept them need no model call."""
        for page in self.paged(_MISSING, "dialogue_key", PAGE_ROWS, [run_id, embed_key]):
            yield list(zip(page.column(0).to_pylist(), page.column(1).to_pylist(), strict=True))

    @held
    def missing_embedding_count(self, run_id: str, embed_key: str) -> int:
        return self.con.execute(f"SELECT count(*) FROM ({_MISSING})", [run_id, embed_key]).fetchall()[0][0]

    def commit_embeddings(self, run_id: str, embed_key: str, vectors: Sequence[tuple[str, list[float]]],
                          ledger: Ledger, image_path: Any) -> None:
        with self.transaction():
            self._insert("dialogue_embeddings", {
                "dialogue_key": [k for k, _ in vectors], "embed_key": [embed_key] * len(vectors),
                "vector": [list(map(float, v)) for _, v in vectors], "run_id": [run_id] * len(vectors),
            })
            self._insert_ledger(run_id, None, ledger, image_path, now())

    def dedup_candidates(self, run_id: str, embed_key: str) -> Iterator[list[DedupRow]]:
        """The run's accepted dialogues as the dedup pass sees them, a page at a time: the pages are cut from the
        dialogue ids and keep-scores, and each page's texts and pictures are gathered for that page alone, so no
        query holds every dialogue's text. ``order`` ranks the earliest made first, so on equal scores the dialogue
        that existed first is kept."""
        ordered = (f"SELECT d.dialogue_key, d.dialogue_id, {keep_score_sql('d')} AS score, "
                   f"row_number() OVER (ORDER BY d.created_at, d.dialogue_id) - 1 AS ord FROM ({ACCEPTED_IN_RUN}) d")
        for keys in self.paged(ordered, "dialogue_id", PAGE_ROWS, {"run": run_id}):
            with self.held():
                self.con.register("dedup_page", keys)
                self.con.execute("CREATE OR REPLACE TEMP TABLE dedup_page_turns AS SELECT * FROM turns "
                                 "SEMI JOIN dedup_page USING (dialogue_key)")
                rows = self.con.execute(f"""
                    SELECT d.dialogue_id, {dialogue_text_sql("d", "dedup_page_turns")}, d.score, d.ord,
                           coalesce((SELECT list(t.image_key ORDER BY t.turn_index)
                                            FILTER (WHERE t.image_key IS NOT NULL)
                                     FROM dedup_page_turns t WHERE t.dialogue_key = d.dialogue_key), []),
                           (SELECT any_value(e.vector) FROM dialogue_embeddings e
                            WHERE e.dialogue_key = d.dialogue_key AND e.embed_key = ?)
                    FROM dedup_page d ORDER BY d.dialogue_id""", [embed_key]).fetchall()
                self.con.execute("DROP TABLE dedup_page_turns")
                self.con.unregister("dedup_page")
            yield [DedupRow(*row) for row in rows]

    @held
    def dedup_candidate_count(self, run_id: str) -> int:
        return self.con.execute(f"SELECT count(*) FROM ({ACCEPTED_IN_RUN})", {"run": run_id}).fetchall()[0][0]

    def record_dedup(self, run_id: str) -> None:
        """This run's dedup decisions (temp table ``dedup_decided``), replacing any it wrote before being
        interrupted."""
        with self.transaction():
            self.con.execute("DELETE FROM dedup WHERE run_id = ?", [run_id])
            self.con.execute("INSERT INTO dedup BY NAME SELECT ? AS run_id, *, ? AS created_at FROM dedup_decided",
                             [run_id, now()])
