"""Writes this folder's photographs: scikit-image's real photos (``skimage.data``), downscaled to 128 px on the longer
side and saved as PNG, so jobs/demo-images.yaml has image seeds without any download.

    .venv/bin/python jobs/data/images/make_photos.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

SIDE = 128


def photos() -> dict[str, np.ndarray]:
    left, right, _ = skimage.data.stereo_motorcycle()  # two views of one motorcycle, from a stereo pair
    return {"astronaut": skimage.data.astronaut(), "chelsea": skimage.data.chelsea(),
            "coffee": skimage.data.coffee(), "rocket": skimage.data.rocket(),
            "motorcycle_left": left, "motorcycle_right": right}


def main() -> None:
    folder = Path(__file__).resolve().parent
    for name, pixels in photos().items():
        image = Image.fromarray(pixels).convert("RGB")
        image.thumbnail((SIDE, SIDE), Image.Resampling.LANCZOS)
        image.save(folder / f"{name}.png", optimize=True)


if __name__ == "__main__":
    main()
