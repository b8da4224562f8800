"""Text-to-image through a diffusers pipeline (Stable Diffusion style), one PNG per request.

Each request brings its own seed, through its own generator, so its image does not depend on its batch-mates;
requests that share size, steps and guidance go through the pipeline together.
"""

from __future__ import annotations

import io
import logging
from collections import defaultdict
from typing import Any

from seir.operators.backends.base import LocalBackend, RenderRequest, RenderResult, batches
from seir.operators.base import register


@register
class DiffusersTextToImage(LocalBackend):
    name = "diffusers-text-to-image"
    capabilities = frozenset({"render"})

    def __init__(self, model: str, revision: str | None = None, *, max_batch_size: int = 4, **options: Any) -> None:
        super().__init__(model, revision, **options)
        from diffusers import DiffusionPipeline

        self.max_batch_size = max_batch_size
        self.pipeline = DiffusionPipeline.from_pretrained(self.path, revision=self.load_revision, dtype=self.dtype)
        self.pipeline.to(self.device)
        self.pipeline.set_progress_bar_config(disable=True)
        logging.getLogger(type(self.pipeline).__module__).addFilter(_FirstTruncationWarningOnly())

    def render(self, requests: list[RenderRequest]) -> list[RenderResult]:
        groups: dict[tuple[int, int, int, float], list[int]] = defaultdict(list)
        for index, r in enumerate(requests):
            groups[(r.width, r.height, r.steps, r.guidance_scale)].append(index)
        done: dict[int, RenderResult] = {}
        for (width, height, steps, guidance), indices in groups.items():
            for chunk in batches(indices, self.max_batch_size):
                images = self._render([requests[i] for i in chunk], width, height, steps, guidance)
                for index, png in zip(chunk, images, strict=True):
                    done[index] = RenderResult(png=png, width=width, height=height)
        return [done[i] for i in range(len(requests))]

    def _render(self, batch: list[RenderRequest], width: int, height: int, steps: int, guidance: float) -> list[bytes]:
        import torch

        # CPU generators: the starting noise of a seed is then the same on any device.
        generators = [torch.Generator("cpu").manual_seed(r.seed) for r in batch]
        with torch.inference_mode():
            images = self.pipeline(
                prompt=[r.prompt for r in batch], negative_prompt=[r.negative_prompt for r in batch], width=width,
                height=height, num_inference_steps=steps, guidance_scale=guidance, generator=generators,
            ).images
        return [_png(image) for image in images]


class _FirstTruncationWarningOnly(logging.Filter):
    """Pipelines warn about every prompt longer than their text encoder reads (77 tokens for CLIP). Long captions
    are common and the warnings would bury the run's progress lines: the first one says it all."""

    def __init__(self) -> None:
        super().__init__()
        self.warned = False

    def filter(self, record: logging.LogRecord) -> bool:
        if "was truncated because" not in record.getMessage():
            return True
        if self.warned:
            return False
        self.warned = True
        record.msg, record.args = f"{record.getMessage()}\n(later prompt truncations are not reported)", ()
        return True


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
