"""Image-text similarity through a CLIP-style dual encoder (CLIP, SigLIP): cosine of the image with each text."""

from __future__ import annotations

from typing import Any

from seir.operators.backends.base import LocalBackend, SimilarityRequest, SimilarityResult, batches, decode_image
from seir.operators.base import register


@register
class ClipSimilarity(LocalBackend):
    name = "clip"
    capabilities = frozenset({"similarity"})

    def __init__(self, model: str, revision: str | None = None, *, max_batch_size: int = 32, **options: Any) -> None:
        super().__init__(model, revision, **options)
        from transformers import AutoModel, AutoProcessor

        self.max_batch_size = max_batch_size
        self.processor = AutoProcessor.from_pretrained(self.path, revision=self.load_revision)
        self.model = AutoModel.from_pretrained(self.path, **self.load_options)

    def similarity(self, requests: list[SimilarityRequest]) -> list[SimilarityResult]:
        return [result for batch in batches(requests, self.max_batch_size) for result in self._similarity(batch)]

    def _similarity(self, batch: list[SimilarityRequest]) -> list[SimilarityResult]:
        import torch

        texts = [text for r in batch for text in r.texts]
        # SigLIP was trained on texts padded to full length; CLIP reads its end token and does not mind.
        encoded = self.processor(text=texts, images=[decode_image(r.image) for r in batch], padding="max_length",
                                 truncation=True, return_tensors="pt")
        with torch.inference_mode():
            output = self.model(**self.on_device(encoded))
        normalize = torch.nn.functional.normalize
        images = normalize(output.image_embeds.float(), dim=-1)
        texts_of = normalize(output.text_embeds.float(), dim=-1).split([len(r.texts) for r in batch])
        return [SimilarityResult(cosines=(t @ image).tolist()) for image, t in zip(images, texts_of, strict=True)]
