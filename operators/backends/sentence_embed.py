"""Text embeddings through sentence-transformers, L2-normalised so a dot product is a cosine."""

from __future__ import annotations

from typing import Any

from seir.operators.backends.base import LocalBackend
from seir.operators.base import register


@register
class SentenceEmbed(LocalBackend):
    name = "sentence-transformers"
    capabilities = frozenset({"embed"})

    def __init__(self, model: str, revision: str | None = None, *, max_batch_size: int = 64, **options: Any) -> None:
        super().__init__(model, revision, **options)
        from sentence_transformers import SentenceTransformer

        self.max_batch_size = max_batch_size
        self.model = SentenceTransformer(self.path, device=str(self.device), revision=self.load_revision,
                                         model_kwargs={"dtype": self.dtype})

    def embed(self, texts: list[str]) -> list[list[float]]:
        vectors = self.model.encode(texts, batch_size=self.max_batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
        return vectors.astype("float64").tolist()
