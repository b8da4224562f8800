"""Text-to-image from an OpenAI-compatible server: the ``openai-image`` backend.

Posts ``/images/generations`` with the prompt, ``size: "WxH"`` and ``response_format: "b64_json"``. With
``diffusion_params`` (the default) it also sends the request's ``seed``, ``num_inference_steps``, ``guidance_scale``
and ``negative_prompt``: extension fields of diffusion servers (SGLang Diffusion, vLLM-Omni) that make an image
reproducible. OpenAI's own API refuses fields it does not know: set ``diffusion_params: false`` there (its images
then do not follow the seed). Whatever the server encodes (PNG, JPEG, WebP), the result is PNG, sized as received.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from seir.operators.backends.base import ProbeReport, RenderRequest, RenderResult
from seir.operators.backends.openai_http import OpenAIBackend
from seir.operators.base import register

IMAGES_PATH = "/images/generations"


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
            body.update(seed=request.seed, num_inference_steps=request.steps, guidance_scale=request.guidance_scale,
                        negative_prompt=request.negative_prompt)
        return body


def _png_result(reply: dict[str, Any]) -> RenderResult:
    from PIL import Image

    data = base64.b64decode(reply["data"][0]["b64_json"])
    with Image.open(io.BytesIO(data)) as image:
        if image.format != "PNG":
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            data = buffer.getvalue()
        return RenderResult(png=data, width=image.width, height=image.height)
