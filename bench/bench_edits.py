"""Issue 23 benchmark: edits of the user's pictures.

1. Renders per second of the tiny SD weights at one size and step count, in the same run: text-to-image, then
   image-to-image from a real photograph (``seir.edit_strength`` 0.6, the default, and 1.0), then the
   InstructPix2Pix-style pipeline of the same size. img2img denoises the last ``steps x strength`` of the schedule,
   so it is expected to beat text-to-image by about 1 / strength less the source's VAE encoding.
2. The image demo (``jobs/demo-images.yaml``) before and after: dialogues per minute over the shard phase with the
   image role as it was (``diffusers-text-to-image``, ``seir.edit: never``) and as shipped (img2img edits), each into
   a fresh output on one local Ray.
3. With ``--scale N ...``: how one img2img call grows with its requests (each its own photograph-sized source), in
   seconds per 100 renders and the call's peak traced Python memory, against text-to-image at the same sizes.

    python bench/bench_edits.py --side 256 --steps 20 --batch 8 --repeats 3 --demo-repeats 3
    python bench/bench_edits.py --demo-repeats 0 --repeats 1 --scale 10 100 1000
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

from bench.bench_images import dialogues_per_minute  # noqa: E402  (after the repository is importable)


def photograph(side: int) -> bytes:
    image = Image.fromarray(skimage.data.chelsea()).resize((side, side))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def renders_per_second(side: int, steps: int, batch: int, repeats: int) -> None:
    from seir.operators.backends.base import RenderRequest
    from seir.operators.backends.diffusers_image import DiffusersImageToImage, DiffusersInstructEdit

    source = photograph(side)
    editor, instruct = DiffusersImageToImage("tiny:sd"), DiffusersInstructEdit("tiny:sd-instruct-edit")
    paths = {
        "text-to-image": (editor, {}),
        "img2img, strength 0.6": (editor, {"source": source, "strength": 0.6}),
        "img2img, strength 1.0": (editor, {"source": source, "strength": 1.0}),
        "instruct-edit (InstructPix2Pix)": (instruct, {"source": source}),
    }
    print(f"renders per second, tiny SD, {side}x{side}, {steps} steps, batches of {batch}, median of {repeats} "
          "(the paths take turns in each repeat, so a slow spell of the machine falls on all of them)")
    calls = {name: (backend, [RenderRequest("the same cat as a watercolour", seed=k, width=side, height=side,
                                            steps=steps, **edit) for k in range(batch)])
             for name, (backend, edit) in paths.items()}
    for backend, requests in calls.values():
        backend.render(requests)  # warm, at the measured batch shape: the first call pays for lazy initialisation
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, (backend, requests) in calls.items():
            started = time.perf_counter()
            backend.render(requests)
            times[name].append(time.perf_counter() - started)
    rates = {name: batch / statistics.median(seconds) for name, seconds in times.items()}
    for name, rate in rates.items():
        print(f"{name:>32}: {rate:7.2f} renders/s  ratio to text-to-image {rate / rates['text-to-image']:5.2f}")


def scaling(sizes: list[int]) -> None:
    import tracemalloc

    from seir.operators.backends.base import RenderRequest
    from seir.operators.backends.diffusers_image import DiffusersImageToImage

    editor = DiffusersImageToImage("tiny:sd", max_batch_size=16)
    sources = [photograph(96 + k % 7) for k in range(7)]  # distinct sources, as a shard's seeds bring
    print("one render call of N requests, 64x64, 2 steps: s per 100 renders | peak traced MB")
    print(f"{'N':>6} {'text-to-image':>22} {'img2img 0.6':>22}")
    editor.render([RenderRequest("warm", seed=0, width=64, height=64, steps=2)])
    for n in sizes:
        cells = []
        for edit in (False, True):
            requests = [RenderRequest(f"picture {k}", seed=k, width=64, height=64, steps=2,
                                      source=sources[k % 7] if edit else None, strength=0.6 if edit else None)
                        for k in range(n)]
            tracemalloc.start()
            started = time.perf_counter()
            editor.render(requests)
            seconds = time.perf_counter() - started
            peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            cells.append(f"{seconds / n * 100:9.2f} | {peak:8.1f}")
        print(f"{n:>6} {cells[0]:>22} {cells[1]:>22}", flush=True)


def demo_before_and_after(repeats: int) -> None:
    import ray

    job = REPO / "jobs" / "demo-images.yaml"
    before = {"seir": {"edit": "never"}, "roles": {"image": {"backend": "diffusers-text-to-image"}}}
    ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    print(f"jobs/demo-images.yaml, dialogues per minute over the shard phase, median of {repeats}")
    rates = {}
    for name, settings in (("before: text-to-image", before), ("after: edits (as shipped)", {})):
        runs = [dialogues_per_minute(job, **settings) for _ in range(repeats)]
        rate, made, seconds = (statistics.median(run[i] for run in runs) for i in range(3))
        rates[name] = rate
        print(f"{name:>26}: {rate:6.1f} dialogues/min ({made:.0f} dialogues in {seconds:.1f} s)", flush=True)
    print(f"after / before: {rates['after: edits (as shipped)'] / rates['before: text-to-image']:.2f}")
    ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--demo-repeats", type=int, default=3, help="runs of the image demo each way (0: none)")
    parser.add_argument("--scale", type=int, nargs="*", default=[], help="request counts of one call to time")
    args = parser.parse_args()
    renders_per_second(args.side, args.steps, args.batch, args.repeats)
    if args.scale:
        scaling(args.scale)
    if args.demo_repeats:
        demo_before_and_after(args.demo_repeats)


if __name__ == "__main__":
    main()
