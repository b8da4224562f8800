"""Images from an OpenAI-compatible server: the ``openai-image`` (text-to-image) and ``openai-image-edit`` backends.

``openai-image`` posts ``/images/generations`` with the prompt, ``size: "WxH"`` and ``response_format: "b64_json"``.
With ``diffusion_params`` (the default) it also sends the request's ``seed``, ``num_inference_steps``,
``guidance_scale`` and ``negative_prompt``: extension fields of diffusion servers (SGLang Diffusion, vLLM-Omni) that
make an image reproducible. OpenAI's own API refuses fields it does not know: set ``diffusion_params: false`` there
(its images then do not follow the seed). Whatever the server encodes (PNG, JPEG, WebP), the result is PNG, sized as
received.

``openai-image-edit`` posts a request without a source the same way; one with a source goes to ``/images/edits`` as
``multipart/form-data``, as OpenAI's API takes it: the source as the file ``image`` (PNG, converted when it is not)
beside the same fields, and with ``diffusion_params`` also the request's ``strength`` (an extension field too).
"""

from __future__ import annotations

import base64
import io
from functools import partial
from typing import Any

from seir.operators.backends.base import ProbeReport, RenderRequest, RenderResult
from seir.operators.backends.openai_http import OpenAIBackend
from seir.operators.base import register

IMAGES_PATH = "/images/generations"
EDITS_PATH = "/images/edits"


@register
class OpenAIImage(OpenAIBackend):
    name = "openai-image"
    capabilities = frozenset({"render"})

    def __init__(self, model: str, revision: str | None = None, *, diffusion_params: bool = True,
                 **options: Any) -> None:
        super().__init__(model, revision, **options)
        self.diffusion_params = diffusion_params
        self.options["diffusion_params"] = diffusion_params

    def probe(self, needs: frozenset[str]) -> ProbeReport:
        """The model listing only: a probe image would cost as much as a real one."""
        report = super().probe(needs)
        if report.served is False:
            report.problems.append(self.not_served())
        return report

    def render(self, requests: list[RenderRequest]) -> list[RenderResult]:
        replies = self.endpoint.post_all(IMAGES_PATH, [self._body(r) for r in requests])
        return [_png_result(reply) for reply in replies]

    def _body(self, request: RenderRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model_id, "prompt": request.prompt, "n": 1,
                                "size": f"{request.width}x{request.height}", "response_format": "b64_json"}
        if self.diffusion_params:
            body.update(seed=request.seed, num_inference_steps=request.steps, negative_prompt=request.negative_prompt)
            if request.guidance_scale is not None:  # unset: the server's default for its model
                body["guidance_scale"] = request.guidance_scale
        return body


@register
class OpenAIImageEdit(OpenAIImage):
    name = "openai-image-edit"
    capabilities = frozenset({"render", "edit"})

    def render(self, requests: list[RenderRequest]) -> list[RenderResult]:
        posts = [partial(self.endpoint.post, IMAGES_PATH, self._body(r)) if r.source is None
                 else partial(self.endpoint.post_form, EDITS_PATH, self._fields(r),
                              {"image": ("source.png", _as_png(r.source)[0], "image/png")})
                 for r in requests]
        return [_png_result(reply) for reply in self.endpoint.concurrently(posts)]

    def _fields(self, request: RenderRequest) -> dict[str, Any]:
        fields = self._body(request)
        if self.diffusion_params and request.strength is not None:  # absent, the server's default applies
            fields["strength"] = request.strength
        return fields


def _png_result(reply: dict[str, Any]) -> RenderResult:
    return RenderResult(*_as_png(base64.b64decode(reply["data"][0]["b64_json"])))


def _as_png(data: bytes) -> tuple[bytes, int, int]:
    """Encoded picture ``data`` as PNG (unchanged when it is one), with its width and height."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        if image.format != "PNG":
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            data = buffer.getvalue()
        return data, image.width, image.height
