"""Writes this folder: 20 of scikit-image's real photographs (``skimage.data``, 64 px on the longer side, PNG) and
``seeds.jsonl``, four MMDU-shaped seeds for jobs/demo-long.yaml: 27 turns each, the pictures arriving over several
turns (20, 12 and 6 of them; one seed brings none).

    .venv/bin/python jobs/data/long/make_seeds.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

SIDE = 64
TURNS = 27
PHOTOS = ("astronaut", "brick", "camera", "cell", "chelsea", "checkerboard", "clock", "coffee", "coins", "colorwheel",
          "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "logo", "moon", "page", "retina",
          "rocket")
SEEDS = (
    ("tour", "I will show you my photographs one or two at a time. Tell me what each shows, then draw something "
             "inspired by it.", 20),
    ("lab", "These are pictures from my lab notebook and my desk. Explain what you see in each and sketch a diagram "
            "of it.", 12),
    ("textures", "Here are some textures and patterns. Describe each one and draw a tile pattern based on it.", 6),
    ("museum", "Walk me through a museum of the history of astronomy, room by room, drawing each exhibit.", 0),
)


def turn_images(names: list[str]) -> list[list[str]]:
    """The pictures spread over the first turns: two at the first turn, then one a turn."""
    per_turn: list[list[str]] = [[] for _ in range(TURNS)]
    for index, name in enumerate(names):
        per_turn[max(0, index - 1)].append(f"{name}.png")
    while per_turn and not per_turn[-1]:
        per_turn.pop()
    return per_turn


def main() -> None:
    folder = Path(__file__).resolve().parent
    for name in PHOTOS:
        pixels = np.asarray(getattr(skimage.data, name)())
        image = Image.fromarray(pixels).convert("RGB")
        image.thumbnail((SIDE, SIDE), Image.Resampling.LANCZOS)
        image.save(folder / f"{name}.png", optimize=True)
    with (folder / "seeds.jsonl").open("w") as out:
        for seed_id, text, count in SEEDS:
            row = {"id": seed_id, "text": text, "turns": TURNS}
            if count:
                row["turn_images"] = turn_images(list(PHOTOS[:count]))
            out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
