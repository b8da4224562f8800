"""Seeds: reading seed files and InterSyn topic x template seeds into typed ``Seed`` records, with bad lines
quarantined (read.py); dropping near-duplicate seeds before any model call (near_duplicates.py); and grouping a
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
from seir.engine.seeds.near_duplicates import near_duplicate_seeds
from seir.engine.seeds.read import MAX_SEED_IMAGES, SeedLoad, image_key_only, load_seeds

__all__ = ["DEFAULT_SIMILARITY", "EMBEDDINGS", "IMAGE_SUFFIXES", "MAX_SEED_IMAGES", "SeedLoad", "clip_embeddings",
           "group_images", "image_key_only", "images_in", "load_seeds", "near_duplicate_seeds", "read_texts",
           "seed_lines"]
