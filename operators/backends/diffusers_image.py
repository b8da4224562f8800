"""Pictures through diffusers pipelines (Stable Diffusion style), one PNG per request.

``diffusers-text-to-image`` renders from text only. ``diffusers-image-to-image`` also edits: a request with a source
picture starts from it (the checkpoint's img2img pipeline, made with ``from_pipe`` over the same weights, so the
model is loaded once), a request without one renders from text. ``diffusers-instruct-edit`` serves an instruction-edit
checkpoint (InstructPix2Pix: its UNet reads the source's latents beside the noise, and the caption is read as what the
result shows); a request without a source gets all-zero source latents, the "no picture" condition such models are
trained with for classifier-free guidance, so it renders from text.

Each request brings its own seed, through its own generator, so its image does not depend on its batch-mates;
requests that share size, steps, guidance (and, for edits, strength) go through the pipeline together.
"""

from __future__ import annotations

import inspect
import io
import logging
import math
from collections import defaultdict
from typing import Any

from seir.operators.backends.base import LocalBackend, RenderRequest, RenderResult, batches, decode_image
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
        groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
        for index, r in enumerate(requests):
            groups[self._batch_key(r)].append(index)
        done: dict[int, RenderResult] = {}
        for indices in groups.values():
            for chunk in batches(indices, self.max_batch_size):
                batch = [requests[i] for i in chunk]
                for index, png in zip(chunk, self._render(batch), strict=True):
                    done[index] = RenderResult(png=png, width=batch[0].width, height=batch[0].height)
        return [done[i] for i in range(len(requests))]

    def _batch_key(self, request: RenderRequest) -> tuple[Any, ...]:
        """What requests must share to go through the pipeline in one batch."""
        if request.source is not None:
            raise ValueError(f"backend {self.name!r} renders from text only and cannot start from a source picture: "
                             "serve the image role with diffusers-image-to-image to edit")
        return request.width, request.height, request.steps, request.guidance_scale

    def _render(self, batch: list[RenderRequest]) -> list[bytes]:
        first = batch[0]
        return self._run(self.pipeline, batch, width=first.width, height=first.height)

    def _run(self, pipeline: Any, batch: list[RenderRequest], **inputs: Any) -> list[bytes]:
        import torch

        first = batch[0]
        # CPU generators: the starting noise of a seed is then the same on any device.
        generators = [torch.Generator("cpu").manual_seed(r.seed) for r in batch]
        inputs = {"num_inference_steps": first.steps, **inputs}
        if {"width", "height"} <= set(inspect.signature(pipeline.__call__).parameters):
            # Pipelines that take a size (FLUX's img2img among them) render at their default size unless told.
            inputs = {"width": first.width, "height": first.height, **inputs}
        with torch.inference_mode():
            images = pipeline(
                prompt=[r.prompt for r in batch], negative_prompt=[r.negative_prompt for r in batch],
                guidance_scale=first.guidance_scale, generator=generators, **inputs,
            ).images
        # Whatever a pipeline did with the size asked (a family may round it to its patch size), the picture is
        # written at the job's size, the size provenance records.
        size = (first.width, first.height)
        return [_png(image if image.size == size else image.resize(size)) for image in images]


@register
class DiffusersImageToImage(DiffusersTextToImage):
    name = "diffusers-image-to-image"
    capabilities = frozenset({"render", "edit"})
    DEFAULT_STRENGTH = 0.6  # for a request that names none: enough change for an edit, the layout still kept

    def __init__(self, model: str, revision: str | None = None, **options: Any) -> None:
        super().__init__(model, revision, **options)
        from diffusers import AutoPipelineForImage2Image

        self.edit_pipeline = AutoPipelineForImage2Image.from_pipe(self.pipeline)
        self.edit_pipeline.set_progress_bar_config(disable=True)

    def _batch_key(self, request: RenderRequest) -> tuple[Any, ...]:
        if request.source is None:
            return super()._batch_key(request)
        return request.width, request.height, request.steps, request.guidance_scale, self._strength(request)

    def _render(self, batch: list[RenderRequest]) -> list[bytes]:
        first = batch[0]
        if first.source is None:
            return super()._render(batch)
        strength = self._strength(first)
        # img2img denoises only the last steps x strength of the schedule; a schedule too short for one step would
        # return the source's latents unchanged (diffusers fails on it), so it is lengthened to one step at least.
        steps = max(first.steps, math.ceil(1 / strength))
        return self._run(self.edit_pipeline, batch, image=_fitted_sources(batch), strength=strength,
                         num_inference_steps=steps)

    def _strength(self, request: RenderRequest) -> float:
        return self.DEFAULT_STRENGTH if request.strength is None else request.strength


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


def _fitted_sources(batch: list[RenderRequest]) -> list[Any]:
    """The batch's source pictures at its requested size: an edit pipeline keeps its input's size, and the job asks
    for its own."""
    size = (batch[0].width, batch[0].height)
    return [decode_image(r.source or b"").resize(size) for r in batch]


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@register
class DiffusersInstructEdit(DiffusersTextToImage):
    """An InstructPix2Pix-style checkpoint. ``image_guidance_scale`` (the pipeline's; 1.5 by default) says how
    closely the result follows its source; the request's ``strength`` does not apply to these pipelines."""

    name = "diffusers-instruct-edit"
    capabilities = frozenset({"render", "edit"})

    def __init__(self, model: str, revision: str | None = None, *, image_guidance_scale: float = 1.5,
                 **options: Any) -> None:
        super().__init__(model, revision, **options)
        if self.pipeline.unet.config.in_channels != 2 * self.pipeline.vae.config.latent_channels:
            raise ValueError(f"backend {self.name!r}: {model} is not an instruction-edit checkpoint (its UNet reads "
                             f"{self.pipeline.unet.config.in_channels} channels, not noise and source latents); "
                             "serve it with diffusers-image-to-image")
        self.options["image_guidance_scale"] = image_guidance_scale

    def _batch_key(self, request: RenderRequest) -> tuple[Any, ...]:
        return request.width, request.height, request.steps, request.guidance_scale, request.source is None

    def _render(self, batch: list[RenderRequest]) -> list[bytes]:
        import torch

        first = batch[0]
        if first.source is None:
            scale = self.pipeline.vae_scale_factor
            channels = self.pipeline.vae.config.latent_channels
            # Latents passed as the image are used as they are: zeros are the "no source" condition.
            sources: Any = torch.zeros(len(batch), channels, first.height // scale, first.width // scale,
                                       dtype=self.dtype, device=self.device)
        else:
            sources = _fitted_sources(batch)
        return self._run(self.pipeline, batch, image=sources,
                         image_guidance_scale=self.options["image_guidance_scale"])
