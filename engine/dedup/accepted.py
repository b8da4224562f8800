"""The dedup pass over a run's accepted dialogues: read them from the store a page at a time, find duplicates across
every shard and earlier run (``DedupIndex``, whose tables live in the provenance database), and record one decision
per dropped dialogue for the version about to be written. What the pass holds in memory is one page and the
duplicate links; the rest stays in DuckDB, which spills to disk."""

from __future__ import annotations

from typing import TextIO

from seir.engine.dedup.index import DedupIndex, DedupItem
from seir.engine.progress import Meter, say
from seir.engine.spec import DedupConfig
from seir.engine.store import ImageStore, ProvenanceStore


def dedup_accepted(store: ProvenanceStore, config: DedupConfig, embed_key: str, images: ImageStore, run_id: str,
                   stream: TextIO) -> None:
    """Duplicates among the run's accepted dialogues, recorded under ``run_id`` (nothing when the job runs no dedup
    method). ``embed_key`` names the embeddings semantic dedup compares ('' without an embed role)."""
    if not config.methods:
        return
    with store.held() as con:  # the index's working tables live as long as this connection
        total = store.dedup_candidate_count(run_id)
        index = DedupIndex(config, con)
        index.retain_run(run_id)
        with Meter("dedup", total, "dialogues", stream) as meter:
            for rows in store.dedup_candidates(run_id, embed_key):
                index.add(DedupItem(dialogue_id=row.dialogue_id, text=row.text, score=row.score, order=row.order,
                                    image_bytes=lambda keys=row.image_keys: [images.get(k) for k in keys],
                                    embedding=row.embedding) for row in rows)
                meter.advance(len(rows))
            dropped = index.decide()
        store.record_dedup(run_id)
        by_method = con.execute("SELECT method, count(*) FROM dedup_decided GROUP BY ALL ORDER BY ALL").fetchall()
    if dropped:
        say(stream, f"dedup dropped {dropped} of {total} accepted dialogues: "
                    + ", ".join(f"{m} {n}" for m, n in by_method))
