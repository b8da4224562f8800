"""The dedup pass over an output's accepted dialogues: read them from the store, find duplicates across every shard
and earlier run (``DedupIndex``, whose tables live in the provenance database), and record one decision per dropped
dialogue for the version about to be written."""

from __future__ import annotations

from typing import TextIO

from seir.engine.dedup.index import DedupIndex, DedupItem
from seir.engine.progress import Meter, say
from seir.engine.spec import DedupConfig
from seir.engine.store import ImageStore, ProvenanceStore


def dedup_accepted(store: ProvenanceStore, config: DedupConfig, embed_key: str, images: ImageStore, run_id: str,
                   dialogue_keys: list[str], stream: TextIO) -> None:
    """Duplicates among the accepted dialogues of ``dialogue_keys``, recorded under ``run_id`` (nothing when the job
    runs no dedup method). ``embed_key`` names the embeddings semantic dedup compares ('' without an embed role)."""
    if not config.methods:
        return
    rows = store.dedup_candidates(dialogue_keys, embed_key)
    with store.held() as con:  # the index's working tables live as long as this connection
        index = DedupIndex(config, con)
        index.retain([row.dialogue_id for row in rows])
        with Meter("dedup", len(rows), "dialogues", stream) as meter:
            index.add(meter.counted(
                DedupItem(dialogue_id=row.dialogue_id, text=row.text, score=row.score, order=row.order,
                          image_bytes=lambda keys=row.image_keys: [images.get(k) for k in keys],
                          embedding=row.embedding) for row in rows))
            result = index.resolve()
        store.record_dedup(run_id, result.decisions)
    if result.decisions:
        by_method: dict[str, int] = {}
        for decision in result.decisions:
            by_method[decision.method] = by_method.get(decision.method, 0) + 1
        say(stream, f"dedup dropped {len(result.decisions)} of {len(rows)} accepted dialogues: "
                    + ", ".join(f"{m} {n}" for m, n in sorted(by_method.items())))
