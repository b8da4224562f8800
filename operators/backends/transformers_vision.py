"""LLaVA-style vision-language models through transformers: the judge that looks at images.

Chat, sampling and the score read are the causal backend's; only loading and encoding differ, because image parts
travel as PNG bytes and the processor expands each image placeholder into the model's image tokens.
"""

from __future__ import annotations

from typing import Any

from seir.operators.backends.base import decode_image, image_parts
from seir.operators.backends.transformers_chat import TransformersChat
from seir.operators.base import register


@register
class TransformersVisionChat(TransformersChat):
    name = "transformers-vision-chat"
    capabilities = frozenset({"chat", "score", "vision"})

    @classmethod
    def load_processor(cls, path: str, revision: str | None, **options: Any) -> Any:
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(path, revision=revision, **options)

    def _load(self) -> tuple[Any, Any]:
        from transformers import AutoModelForImageTextToText

        processor = self.load_processor(self.path, self.load_revision)
        return processor, AutoModelForImageTextToText.from_pretrained(self.path, **self.load_options)

    def _inputs(self, prompts: list[str], conversations: list[list[dict[str, Any]]]) -> dict[str, Any]:
        # The processor takes one flat list: the images of every prompt, in the order their placeholders appear.
        images = [decode_image(data) for messages in conversations for m in messages for data in image_parts(m)]
        encoded = self.processor(text=prompts, images=images or None, padding=True, add_special_tokens=False,
                                 return_tensors="pt")
        return self.on_device(encoded)
