"""Near-duplicate seeds are dropped before any model call: two seeds that differ by punctuation or a word or two
would make two near-identical dialogues, and the output dedup would throw one away after paying for both.

Seeds are compared by MinHash over the word shingles of their text with punctuation removed
(``keys.normalize_words``), with the same threshold machinery as the output dedup. Seeds that bring images are
duplicates only of seeds that bring the same images: "What is in this picture?" over two different photographs is
two tasks. Of each group of duplicates the first seed (in seed order) is kept.
"""

from __future__ import annotations

from collections.abc import Sequence

from seir.engine.dedup import DedupItem, find_duplicates
from seir.engine.keys import content_key, normalize_words
from seir.engine.records import Seed, SeedDuplicate
from seir.engine.spec import DedupConfig
from seir.operators.dedup import MinHashDedup


def near_duplicate_seeds(seeds: Sequence[Seed], threshold: float) -> list[SeedDuplicate]:
    """The seeds to drop, each with the seed it duplicates, by method and similarity."""
    config = DedupConfig(methods=("exact-text", "minhash"), minhash=MinHashDedup(threshold=threshold))
    by_images: dict[str, list[tuple[int, Seed]]] = {}
    for position, seed in enumerate(seeds):
        by_images.setdefault(content_key(sorted(seed.images)), []).append((position, seed))
    dropped = []
    for group in by_images.values():
        if len(group) < 2:
            continue
        by_id = {str(position): seed for position, seed in group}
        result = find_duplicates((DedupItem(dialogue_id=str(position), text=normalize_words(seed.text),
                                            order=position) for position, seed in group), config)
        dropped += [SeedDuplicate(by_id[d.dropped_id], by_id[d.matched_id], d.method, d.similarity)
                    for d in result.decisions]
    return sorted(dropped, key=lambda d: seeds.index(d.seed))
