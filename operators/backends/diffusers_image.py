"""Pictures through diffusers pipelines, one PNG per request: any family whose checkpoint names its pipeline
(Stable Diffusion, SDXL, SD3, FLUX.1, Qwen-Image, and the edit models FLUX.1 Kontext, Qwen-Image-Edit and
InstructPix2Pix).

``diffusers-text-to-image`` renders from text only. ``diffusers-image-to-image`` also edits: a request with a source
picture starts from it (the checkpoint's img2img pipeline, made with ``from_pipe`` over the same weights, so the
model is loaded once), a request without one renders from text. ``diffusers-instruct-edit`` serves an instruction-edit
checkpoint, whose pipeline reads the picture to edit beside the noise and reads the caption as what the result shows;
a request without a source renders from text the way the family does (see ``_from_text``).

Every picture is rendered at the job's size (passed to every pipeline that takes one), and sampling settings a request
leaves unset (``guidance_scale: None``) are the family's own: its pipeline's defaults (``family_sampling``).

Each request brings its own seed, through its own generator, so its image does not depend on its batch-mates;
requests that share size, steps, guidance (and, for edits, strength) go through the pipeline together.
"""

from __future__ import annotations

import inspect
import io
import logging
import math
from collections import defaultdict
from collections.abc import Mapping
from functools import cache
from typing import Any

from seir.operators.backends.base import (
    LocalBackend,
    RenderRequest,
    RenderResult,
    batches,
    decode_image,
)
from seir.operators.base import register


@register
class DiffusersTextToImage(LocalBackend):
    name = "diffusers-text-to-image"
    capabilities = frozenset({"render"})

    def __init__(self, model: str, revision: str | None = None, *, max_batch_size: int = 4, **options: Any) -> None:
        super().__init__(model, revision, **options)
        self.max_batch_size = max_batch_size
        self.pipeline = _load_pipeline(self.path, self.load_revision, self.dtype)
        self.pipeline.to(self.device)
        self.pipeline.set_progress_bar_config(disable=True)
        logging.getLogger(type(self.pipeline).__module__).addFilter(_FirstTruncationWarningOnly())
        logging.getLogger("diffusers.models.modeling_utils").addFilter(_no_float32_modules_to_keep)
        self.resized = _ResizedOnce(self.name)
        if self.edits_by_instruction() != self.reads_instructions:
            raise ValueError(self._wrong_checkpoint())

    reads_instructions = False  # whether this backend serves instruction-edit checkpoints

    @classmethod
    def family_sampling(cls, model: str, revision: str | None = None) -> dict[str, Any]:
        """The family's own ``guidance_scale``: the default of the pipeline its checkpoint names (a family that guides
        another way, as Qwen-Image's true CFG does, has None), read from the checkpoint's index."""
        import diffusers

        from seir.operators.backends.tiny import resolve_model_ref

        index = diffusers.DiffusionPipeline.load_config(resolve_model_ref(model), revision=revision)
        # A community pipeline (a class diffusers does not name) or one without guidance: nothing known here.
        pipeline_class = getattr(diffusers, str(index.get("_class_name")), None)
        guidance = _call_parameters(pipeline_class).get("guidance_scale") if pipeline_class else None
        return {} if guidance is None else {"guidance_scale": guidance.default}

    def edits_by_instruction(self) -> bool:
        """Whether the checkpoint's own pipeline is an instruction edit: it takes the picture to edit and no
        img2img ``strength``."""
        taken = _call_parameters(type(self.pipeline))
        return "image" in taken and "strength" not in taken

    def _wrong_checkpoint(self) -> str:
        return (f"backend {self.name!r}: {self.model_id} is an instruction-edit checkpoint "
                f"({type(self.pipeline).__name__}), which renders from the picture it edits: serve it with "
                "diffusers-instruct-edit")

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
        taken = _call_parameters(type(pipeline))
        # CPU generators: the starting noise of a seed is then the same on any device.
        inputs = {"prompt": [r.prompt for r in batch], "num_inference_steps": first.steps,
                  "generator": [torch.Generator("cpu").manual_seed(r.seed) for r in batch], **inputs}
        if {"width", "height"} <= set(taken):
            # Pipelines that take a size (FLUX's img2img and edits among them) render at their default size unless
            # told; the others render at their input's.
            inputs = {"width": first.width, "height": first.height, **inputs}
        if "max_area" in taken:  # FLUX.1 Kontext scales any size asked to this area (a megapixel by default)
            inputs["max_area"] = first.width * first.height
        if "_auto_resize" in taken:  # and its source to a trained size near a megapixel: it is given the job's
            inputs["_auto_resize"] = False
        if first.guidance_scale is not None:  # unset: the family's own
            inputs["guidance_scale"] = first.guidance_scale
        if any(r.negative_prompt for r in batch):
            inputs["negative_prompt"] = [r.negative_prompt for r in batch]
        elif "true_cfg_scale" in taken and taken["true_cfg_scale"].default > 1:
            # A family guided by true CFG (Qwen-Image's) is guided only given a negative prompt: its cards use a blank.
            inputs["negative_prompt"] = [" "] * len(batch)
        with torch.inference_mode():
            images = pipeline(**inputs).images
        # Whatever a pipeline did with the size asked (a family may round it to its patch size), the picture is
        # written at the job's size, the size provenance records.
        size = (first.width, first.height)
        return [_png(image if image.size == size else self.resized(image, size)) for image in images]


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
        if "strength" not in _call_parameters(type(self.edit_pipeline)):
            raise ValueError(f"backend {self.name!r}: {model} has no img2img pipeline "
                             f"({type(self.edit_pipeline).__name__} takes no strength)")

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


class _ResizedOnce:
    """Resizes a picture a pipeline rendered at another size than asked, saying so once per backend: a family that
    rounds sizes to its patch grid is expected, a pipeline that ignored the size asked is a problem worth seeing."""

    def __init__(self, backend: str) -> None:
        self.backend, self.said = backend, False

    def __call__(self, image: Any, size: tuple[int, int]) -> Any:
        if not self.said:
            self.said = True
            logging.getLogger(__name__).warning(
                "%s: the pipeline rendered %dx%d where %dx%d was asked; pictures are resized to the job's size",
                self.backend, *image.size, *size)
        return image.resize(size)


@cache  # read on every batch; a class's signature does not change
def _call_parameters(pipeline_class: type) -> Mapping[str, inspect.Parameter]:
    return inspect.signature(pipeline_class.__call__).parameters


def _load_pipeline(path: str, revision: str | None, dtype: Any) -> Any:
    """The checkpoint's own pipeline. A text encoder's processor with a video part whose library (torchvision) is
    missing (Qwen-Image-Edit's Qwen2-VL processor) is loaded without it: pipelines send it no video."""
    from diffusers import DiffusionPipeline

    from seir.operators.backends.transformers_vision import TransformersVisionChat, lacks_video_library

    try:
        return DiffusionPipeline.from_pretrained(path, revision=revision, dtype=dtype)
    except (ImportError, ValueError) as err:
        if not lacks_video_library(err):
            raise

    processor = TransformersVisionChat.load_processor(path, revision, subfolder="processor")
    return DiffusionPipeline.from_pretrained(path, revision=revision, dtype=dtype, processor=processor)


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


def _no_float32_modules_to_keep(record: logging.LogRecord) -> bool:
    """diffusers warns, on every ``from_pipe`` and every upcast of a VAE (SDXL's edits), of the modules that should
    stay in float32 when the list it names is empty: nothing to tell a user, many times a run."""
    return "should be kept in float32: []" not in record.getMessage()


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
    """An instruction-edit checkpoint: InstructPix2Pix, FLUX.1 Kontext, Qwen-Image-Edit. ``image_guidance_scale``
    (InstructPix2Pix's; 1.5 by default) says how closely the result follows its source; the request's ``strength``
    does not apply to these pipelines."""

    name = "diffusers-instruct-edit"
    capabilities = frozenset({"render", "edit"})
    reads_instructions = True

    def __init__(self, model: str, revision: str | None = None, *, image_guidance_scale: float = 1.5,
                 **options: Any) -> None:
        super().__init__(model, revision, **options)
        if "image_guidance_scale" in _call_parameters(type(self.pipeline)):
            self.options["image_guidance_scale"] = image_guidance_scale
        self.text_pipeline = _from_text(self.pipeline)

    def _wrong_checkpoint(self) -> str:
        return (f"backend {self.name!r}: {self.model_id} is not an instruction-edit checkpoint "
                f"({type(self.pipeline).__name__} does not read a picture to edit beside its noise); serve it with "
                "diffusers-image-to-image")

    def _batch_key(self, request: RenderRequest) -> tuple[Any, ...]:
        return request.width, request.height, request.steps, request.guidance_scale, request.source is None

    def _render(self, batch: list[RenderRequest]) -> list[bytes]:
        first = batch[0]
        guided = {k: v for k, v in self.options.items() if k == "image_guidance_scale"}
        if first.source is not None:
            return self._run(self.pipeline, batch, image=_fitted_sources(batch), **guided)
        if self.text_pipeline is not None:
            return self._run(self.text_pipeline, batch)
        import torch

        # InstructPix2Pix: latents passed as the image are used as they are, and zeros are the "no picture" condition
        # it was trained with for classifier-free guidance.
        scale = self.pipeline.vae_scale_factor
        channels = self.pipeline.vae.config.latent_channels
        zeros = torch.zeros(len(batch), channels, first.height // scale, first.width // scale, dtype=self.dtype,
                            device=self.device)
        return self._run(self.pipeline, batch, image=zeros, **guided)


# Edit pipelines that need a picture, and the pipeline of the same family that renders the same weights from text.
_TEXT_SIBLINGS = {"QwenImageEditPipeline": "QwenImagePipeline", "QwenImageEditPlusPipeline": "QwenImagePipeline"}


def _from_text(pipeline: Any) -> Any:
    """How an instruction-edit checkpoint renders without a source: FLUX.1 Kontext's pipeline takes no picture as
    rendering from text; Qwen-Image-Edit's weights render through Qwen-Image's pipeline; InstructPix2Pix (None here)
    is given zero source latents."""
    import diffusers

    name = type(pipeline).__name__
    if name in _TEXT_SIBLINGS:
        sibling = getattr(diffusers, _TEXT_SIBLINGS[name]).from_pipe(pipeline)
        sibling.set_progress_bar_config(disable=True)
        return sibling
    if "unet" in pipeline.components:
        return None
    return pipeline
