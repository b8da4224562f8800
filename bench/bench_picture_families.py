"""Issue 40 benchmark: the picture families at tiny size, renders and edits at the job's size.

Each family's tiny model (``tiny:NAME``, built offline from its real diffusers classes) renders ``--requests``
pictures from text and edits as many of a real photograph (skimage's chelsea, 451x300), all at ``--side`` square, in
batches of 8; the median seconds of ``--repeats`` calls are printed with the ratio to Stable Diffusion's (the
reference every family is compared with, measured in the same run). Before issue 40, FLUX.1's img2img rendered its
edits at its default 1024x1024 and took 81 times SD3's time for the same 20 edits; a ratio near 1 says every family
renders at the size asked. Each picture's size is checked, and a family that wrote another size stops the bench.

    .venv/bin/python bench/bench_picture_families.py --requests 20 --side 64 --repeats 3
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import skimage.data
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from seir.operators.backends.base import RenderRequest  # noqa: E402  (after the repository is importable)
from seir.operators.backends.diffusers_image import DiffusersImageToImage, DiffusersInstructEdit  # noqa: E402

RENDERERS = ("sd", "sdxl", "sd3", "flux", "qwen-image")
INSTRUCTION_EDITS = ("sd-instruct-edit", "flux-kontext", "qwen-image-edit")


def photograph() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(skimage.data.chelsea()).save(buffer, format="PNG")
    return buffer.getvalue()


def timed(backend: DiffusersImageToImage, requests: list[RenderRequest], repeats: int, side: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        results = backend.render(requests)
        times.append(time.perf_counter() - started)
        sizes = {Image.open(io.BytesIO(r.png)).size for r in results}
        if sizes != {(side, side)}:
            raise SystemExit(f"{backend.model_id}: wrote {sizes}, asked {side}x{side}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    source = photograph()
    texts = [RenderRequest(f"a red fox near a stone bridge, view {i}", seed=i, width=args.side, height=args.side,
                           steps=args.steps) for i in range(args.requests)]
    edits = [RenderRequest(f"make it snow, take {i}", seed=i, width=args.side, height=args.side, steps=args.steps,
                           source=source, strength=0.6) for i in range(args.requests)]
    print(f"{args.requests} renders and {args.requests} edits at {args.side}x{args.side}, {args.steps} steps, "
          f"median of {args.repeats}")
    print(f"{'family':<18}{'render s':>10}{'edit s':>10}{'render / sd':>13}{'edit / sd':>11}")
    reference: tuple[float, float] | None = None
    for name in (*RENDERERS, *INSTRUCTION_EDITS):
        backend_class = DiffusersInstructEdit if name in INSTRUCTION_EDITS else DiffusersImageToImage
        backend = backend_class(f"tiny:{name}", max_batch_size=8)
        render, edit = (timed(backend, requests, args.repeats, args.side) for requests in (texts, edits))
        reference = reference or (render, edit)
        print(f"{name:<18}{render:>10.2f}{edit:>10.2f}{render / reference[0]:>13.2f}{edit / reference[1]:>11.2f}")


if __name__ == "__main__":
    main()
