"""Scoring throughput per scorer (turns per second), median of repeated runs, each beside its ideal: the time its
model calls took inside the same runs (for image-quality, decoding the same pictures, in alternating runs). The
ratio is the scorer's own overhead: prompt building, input guards, metrics and bookkeeping.

    .venv/bin/python bench/bench_scoring.py [--repeats 5] [--append bench/RESULTS.md]

Models: the real all-MiniLM-L6-v2 for text embeddings, the tiny random CLIP and LLaVA-style judge (built offline)
for clip and judge, so their absolute numbers measure the scorers' machinery, not a real model's speed.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def picture(seed: int, size: int = 512) -> bytes:
    """A smooth random colour field with a few hard-edged shapes, PNG-encoded."""
    rng = np.random.default_rng(seed)
    field = rng.normal(128, 60, (8, 8, 3)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(field).resize((size, size), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.integers(0, size - 64, 2)
        draw.ellipse((int(x), int(y), int(x) + 60, int(y) + 40), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def turns(n: int) -> list:
    from seir.operators.scoring.rubrics import TurnView

    topics = ["a paper boat", "sourdough bread", "a bike tyre", "a bird feeder", "a herb garden", "a kite"]
    views = []
    for i in range(n):
        topic = topics[i % len(topics)]
        views.append(TurnView(
            question=f"How do I make {topic} at home, step by step?",
            answer=f"Start by gathering what {topic} needs, then work through each step slowly and check the result "
                   f"before moving on; most people finish {topic} in an afternoon (variant {i}).",
            caption=f"Hands at a wooden table working on {topic}, tools laid out in the afternoon light.",
            image=picture(i), history=[("What should I try this weekend?", f"Making {topic} is a good start.")]))
    return views


def timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def medians(scorer: Callable[[], object], ideal: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median seconds of each; runs alternate, so a busy neighbour on the machine slows both alike."""
    scorer(), ideal()  # warm-up: lazy loads, caches, allocator
    pairs = [(timed(scorer), timed(ideal)) for _ in range(repeats)]
    return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)


class ModelClock:
    """Wraps a scorer's model callables and adds up the seconds spent inside them: the ideal is measured within
    the very runs it is compared with, so a busy machine cannot skew the ratio."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, call: Callable[[list[Any]], list[Any]]) -> Callable[[list[Any]], list[Any]]:
        def clocked(requests: list[Any]) -> list[Any]:
            started = time.perf_counter()
            try:
                return call(requests)
            finally:
                self.seconds += time.perf_counter() - started

        return clocked

    def split(self, run: Callable[[], object], repeats: int) -> tuple[float, float]:
        """Median seconds of whole runs and of the model calls inside them."""
        run()  # warm-up
        totals, inside = [], []
        for _ in range(repeats):
            self.seconds = 0.0
            totals.append(timed(run))
            inside.append(self.seconds)
        return statistics.median(totals), statistics.median(inside)


def measure(repeats: int) -> list[tuple[str, int, float, float, str]]:
    """Rows of (scorer, batch size, scorer seconds, ideal seconds, what the ideal is)."""
    from seir.operators.backends.clip import ClipSimilarity
    from seir.operators.backends.sentence_embed import SentenceEmbed
    from seir.operators.backends.transformers_vision import TransformersVisionChat
    from seir.operators.scoring.clip import ClipScorer
    from seir.operators.scoring.guards import image_array
    from seir.operators.scoring.image_quality import ImageQualityScorer
    from seir.operators.scoring.judge import JudgeScorer
    from seir.operators.scoring.text import TextScorer

    views = turns(32)
    quality = ImageQualityScorer()
    rows = [("image-quality", len(views), *medians(lambda: quality.score_turns(views),
                                                   lambda: [image_array(v.image) for v in views], repeats),
             "PNG decode alone (alternating runs)")]
    embed = SentenceEmbed("bundled:all-MiniLM-L6-v2").embed
    clock = ModelClock()
    text = TextScorer(clock.wrap(embed))
    rows.append(("text (MiniLM)", len(views), *clock.split(lambda: text.score_turns(views), repeats),
                 "its embed calls"))
    clip = ClipScorer(clock.wrap(ClipSimilarity("tiny:clip").similarity), clock.wrap(embed))
    rows.append(("clip (tiny CLIP + MiniLM)", len(views), *clock.split(lambda: clip.score_turns(views), repeats),
                 "its similarity and embed calls"))
    backend = TransformersVisionChat("tiny:judge")
    judge = JudgeScorer(clock.wrap(backend.chat), clock.wrap(backend.score))
    few = views[:8]
    rows.append(("judge (tiny judge, SynJudge's 4 dims)", len(few), *clock.split(lambda: judge.score_turns(few),
                                                                                 repeats),
                 "its chat and score calls"))
    return rows


def report(rows: list[tuple[str, int, float, float, str]], repeats: int, command: str) -> str:
    lines = [
        "## Scoring (issue 3)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, CPU only; "
        f"median of {repeats} repeats after a warm-up.",
        "",
        "| scorer | batch | turns/s | ideal turns/s | ratio (scorer / ideal time) | ideal |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, n, seconds, ideal, what in rows:
        lines.append(f"| {name} | {n} | {n / seconds:.1f} | {n / ideal:.1f} | {seconds / ideal:.2f} | {what} |")
    lines += ["", "Images are 512x512 PNGs. clip and judge run random tiny models: their turns/s measure the scorers' "
              "machinery on this CPU, not a real model. The share of a demo run's time spent scoring is to be read "
              "from the engine's provenance (model_calls latency by role) once the demo job runs end to end.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--append", type=Path, help="append the markdown section to this file")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    text = report(measure(args.repeats), args.repeats, " ".join([".venv/bin/python", *sys.argv]))
    print(text)
    if args.append:
        with args.append.open("a", encoding="utf-8") as out:
            out.write(("\n" if args.append.exists() and args.append.stat().st_size else "") + text)


if __name__ == "__main__":
    main()
