"""Seeds: reading seed files and InterSyn topic x template seeds into typed ``Seed`` records, with bad lines
quarantined (read.py); planning them in DuckDB at any size, where repeated seeds and ids are quarantined and
near-duplicate seeds dropped before any model call (plan.py); and grouping a
folder of pictures into a seed file (from_images.py).

Uses: the job spec, the dedup index (for near-duplicate seeds) and the image store (seed pictures are stored by key
as they are read). Never starts Ray or loads a generation model.
"""

from seir.engine.seeds.from_images import (
    DEFAULT_SIMILARITY,
    EMBEDDINGS,
    IMAGE_SUFFIXES,
    clip_embeddings,
    group_images,
    images_in,
    read_texts,
    seed_lines,
)
from seir.engine.seeds.plan import SeedCounts, load_seeds, plan_seeds
from seir.engine.seeds.read import MAX_SEED_IMAGES, SeedLoad, image_key_only

__all__ = [
    "DEFAULT_SIMILARITY",
    "EMBEDDINGS",
    "IMAGE_SUFFIXES",
    "MAX_SEED_IMAGES",
    "SeedCounts",
    "SeedLoad",
    "clip_embeddings",
    "group_images",
    "image_key_only",
    "images_in",
    "load_seeds",
    "plan_seeds",
    "read_texts",
    "seed_lines",
]
