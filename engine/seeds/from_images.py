"""A JSONL seed file from a folder of pictures, one seed per picture or per group of
related pictures (MMDU builds its multi-image dialogues from clusters of related images).

Pictures are grouped by the cosine similarity of an image embedding, merging the most similar pairs first (single
linkage) while a group stays within ``max_images``:

- ``pixels`` (no model): a 16x16 thumbnail with each colour channel standardised. It groups pictures of the same
  layout (two views of one scene, crops, re-exposures), not pictures that share only a subject.
- ``clip``: the image embedding of a CLIP-style model loaded with ``from_pretrained`` (a hub id, a local folder or
  ``tiny:clip``, whose random weights group nothing meaningful). It groups by what pictures show.
- ``none``: one seed per picture.

The output is an ordinary seed file (paths relative to it), for the user to read and edit; ``seir seeds
from-images`` (cli/seeds.py) writes one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seir.engine.seeds.read import MAX_SEED_IMAGES
from seir.operators.scoring.guards import open_image

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
DEFAULT_SIMILARITY = {"pixels": 0.6, "clip": 0.85}  # pixels: 0.84 for skimage's stereo motorcycle pair, <= 0.23 else
THUMBNAIL_SIDE = 16
EMBED_BATCH = 32


@dataclass
class Grouping:
    groups: list[list[Path]]
    skipped: list[tuple[Path, str]]  # pictures that could not be read, and why


def pixel_embeddings(images: Sequence[object]) -> np.ndarray:
    """Unit vectors of 16x16 RGB thumbnails, each channel standardised (so exposure and colour cast count less)."""
    from PIL import Image

    rows = []
    for image in images:
        thumb = image.convert("RGB").resize((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.BOX)  # type: ignore[attr-defined]
        pixels = np.asarray(thumb, dtype=np.float64).reshape(-1, 3)
        pixels = (pixels - pixels.mean(0)) / (pixels.std(0) + 1e-6)
        rows.append(pixels.ravel())
    return _unit(np.stack(rows))


def clip_embeddings(model: str) -> Callable[[Sequence[object]], np.ndarray]:
    """Unit image embeddings of a CLIP-style model (``from_pretrained`` on a hub id, a folder or ``tiny:clip``)."""
    import torch
    from transformers import AutoModel, AutoProcessor

    from seir.operators.backends.tiny import resolve_model_ref

    path = resolve_model_ref(model)
    processor = AutoProcessor.from_pretrained(path)
    network = AutoModel.from_pretrained(path).eval()

    def embed(images: Sequence[object]) -> np.ndarray:
        encoded = processor(images=[image.convert("RGB") for image in images], return_tensors="pt")  # type: ignore[attr-defined]
        with torch.inference_mode():
            features = network.get_image_features(pixel_values=encoded["pixel_values"])
        features = getattr(features, "pooler_output", features)  # a tensor, or an output object holding it
        return _unit(features.float().numpy())

    return embed


EMBEDDINGS: dict[str, Callable[[Sequence[object]], np.ndarray] | None] = {"pixels": pixel_embeddings, "none": None}


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def group_images(paths: Sequence[Path], embed: Callable[[Sequence[object]], np.ndarray] | None, similarity: float,
                 max_images: int = MAX_SEED_IMAGES) -> Grouping:
    """Groups of related pictures (each sorted by name, groups by their first name); ``embed`` None: one each."""
    readable: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    batches = []
    paths = sorted(paths)
    for start in range(0, len(paths), EMBED_BATCH):  # a batch of pictures is decoded at a time, never the folder
        images = []
        for path in paths[start : start + EMBED_BATCH]:
            image, reasons = open_image(path.read_bytes())
            if image is None:
                skipped.append((path, "; ".join(reasons)))
            else:
                readable.append(path)
                images.append(image)
        if embed is not None and images:
            batches.append(embed(images))
    if embed is None or len(readable) < 2:
        return Grouping([[path] for path in readable], skipped)
    vectors = np.concatenate(batches)
    cosines = vectors @ vectors.T
    upper = np.triu_indices(len(readable), k=1)
    order = np.lexsort((upper[1], upper[0], -cosines[upper]))  # most similar pair first, ties by position
    parent = list(range(len(readable)))
    size = [1] * len(readable)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for pair in order:
        a, b = int(upper[0][pair]), int(upper[1][pair])
        if cosines[a, b] < similarity:
            break
        ra, rb = root(a), root(b)
        if ra != rb and size[ra] + size[rb] <= max_images:
            parent[rb] = ra
            size[ra] += size[rb]
    groups: dict[int, list[Path]] = {}
    for i, path in enumerate(readable):
        groups.setdefault(root(i), []).append(path)
    return Grouping(sorted(groups.values()), skipped)


DEFAULT_EDIT = "keep its subject and layout, and make it a watercolour painting"


def seed_lines(groups: Sequence[Sequence[Path]], out: Path, texts: Sequence[str] = (),
               edit: bool = False) -> list[dict[str, object]]:
    """One seed per group: its pictures by path relative to the seed file, and a text (``texts`` in turn, cycled,
    or a request to look and draw). With ``edit`` the text asks for an edit of the (first) picture, and ``texts``
    say what to change in it ("make it night", "as a pencil sketch")."""
    lines = []
    for number, group in enumerate(groups):
        if edit:
            change = texts[number % len(texts)] if texts else DEFAULT_EDIT
            which = "this picture" if len(group) == 1 else f"these {len(group)} pictures"
            target = "it" if len(group) == 1 else "the first"
            text = f"What is in {which}? Then edit {target}: {change.rstrip('.')}."
        elif texts:
            text = texts[number % len(texts)]
        elif len(group) == 1:
            text = "What is in this picture? Describe it, then draw a new picture inspired by it."
        else:
            text = (f"What do these {len(group)} pictures show, and how do they differ? Then draw one picture that "
                    "brings them together.")
        suffix = f"+{len(group) - 1}" if len(group) > 1 else ""
        lines.append({"id": f"img-{group[0].stem}{suffix}", "text": text,
                      "images": [Path(os.path.relpath(p.resolve(), out.resolve().parent)).as_posix() for p in group]})
    return lines


def read_texts(path: Path) -> list[str]:
    """Texts from a file: a JSON list of strings, or one per line."""
    raw = path.read_text(encoding="utf-8")
    items = json.loads(raw) if raw.lstrip().startswith("[") else raw.splitlines()
    texts = [t.strip() for t in items if isinstance(t, str) and t.strip()]
    if not texts:
        raise ValueError(f"{path}: no texts (give a JSON list of strings, or one text per line)")
    return texts


def images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder of images")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
