"""Issue 40 benchmark: counting a long dialogue's prompts when a family reads a picture differently alone.

LLaVA-OneVision tiles a picture only when it is alone in its prompt, so ``ChatTokenCounter`` measures each picture
size alone and beside another. A dialogue of N turns whose turn k shows the first k pictures (MMDU's shape) has N
prompts holding 1..N pictures; the seconds to count all of them are printed for each N, with the ratio to N=10.

    .venv/bin/python bench/bench_picture_counts.py --turns 3 10 30 100
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seir.operators.backends.tiny import build_tiny_models
from seir.operators.backends.transformers_chat import ChatTokenCounter
from seir.operators.backends.transformers_vision import TransformersVisionChat


def picture(seed: int) -> bytes:
    pixels = (np.random.default_rng(seed).random((30 + seed % 3, 40, 3)) * 255).astype("uint8")  # three sizes
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, nargs="+", default=[3, 10, 30, 100])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = str(build_tiny_models(folder, ["llava-onevision"])["llava-onevision"])
        processor = TransformersVisionChat.load_processor(path, None)
    pictures = [picture(i) for i in range(max(args.turns))]
    base = None
    print(f"{'turns':>6}{'count s':>10}{'/ 10 turns':>12}")
    for turns in args.turns:
        counter = ChatTokenCounter(processor)
        started = time.perf_counter()
        for k in range(1, turns + 1):
            counter.count([{"role": "user", "content": [*({"type": "image", "image": p} for p in pictures[:k]),
                                                         {"type": "text", "text": "Describe the last picture."}]}])
        seconds = time.perf_counter() - started
        base = seconds if turns == 10 else base
        print(f"{turns:>6}{seconds:>10.3f}{(seconds / base if base else float('nan')):>12.1f}")


if __name__ == "__main__":
    main()
