"""Image-text agreement from a contrastive model (CLIP or SigLIP behind a ``similarity`` callable).

Cosines become 0-1 agreements by u(s) = clip((s - low) / (high - low), 0, 1); the default low 0.15 / high 0.35
suits OpenAI CLIP ViT-B/L, where unrelated pairs sit near 0.15 and a fitting caption near 0.3-0.35 (SigLIP and
others need their own ``cosine_range``).

- image_content = 5 x mean(u(sim(image, question)), u(sim(image, caption))): the question and the caption apart,
  since each fits CLIP's 77-token window where their concatenation would be cut.
- image_text_synergy, what the image adds in agreement with the answer beyond what the caption alone explains:
  with a = u(sim(image, answer)), c = u(sim(image, caption)) and r = ``measures.redundancy`` of caption and answer
  (0-1, from their text cosine under ``embed`` when given, and their shared content words),

      synergy = 5 x max(0, a - r x min(a, c))

  The caption can account only for agreement it shares with the image (min(a, c)), and only to the degree r that
  it restates the answer. A caption copying the answer has r = 1 and c = a, so synergy is 0; an image that
  illustrates the answer beside a caption adding its own facet keeps most of a; an image unrelated to the answer
  scores 0 whatever its caption. Without a caption, synergy is a.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from seir.operators.backends.base import SimilarityRequest, SimilarityResult
from seir.operators.base import register
from seir.operators.scoring import measures as m
from seir.operators.scoring.base import Scorer, ScorerResult
from seir.operators.scoring.guards import MAX_PIXELS, guarded_view
from seir.operators.scoring.rubrics import TurnView
from seir.operators.scoring.text import Embed

Similarity = Callable[[list[SimilarityRequest]], list[SimilarityResult]]


@register
class ClipScorer(Scorer):
    name: ClassVar[str] = "clip"
    roles: ClassVar[dict[str, tuple[str, ...]]] = {"clip": ("similarity",)}
    optional_roles: ClassVar[dict[str, tuple[str, ...]]] = {"embed": ("embed",)}  # caption-answer text cosine
    reads: ClassVar[tuple[str, ...]] = ("question", "answer", "caption", "image")
    informs: ClassVar[tuple[str, ...]] = ("image_content", "image_text_synergy")

    def __init__(self, similarity: Similarity, embed: Embed | None = None,
                 cosine_range: tuple[float, float] = (0.15, 0.35), max_pixels: int = MAX_PIXELS,
                 max_chars: int = 2000) -> None:
        self.similarity, self.embed = similarity, embed
        self.cosine_range = cosine_range
        self.max_pixels, self.max_chars = max_pixels, max_chars

    def config(self) -> dict[str, Any]:
        return {"operator": self.name, "cosine_range": list(self.cosine_range), "max_pixels": self.max_pixels,
                "max_chars": self.max_chars, "text_cosine": self.embed is not None}

    def score_turns(self, views: Sequence[TurnView]) -> list[ScorerResult]:
        results = [ScorerResult(self.name, {"image_content": 0.0, "image_text_synergy": 0.0}) for _ in views]
        requests, asked = [], []
        for view, result in zip(views, results, strict=True):
            clean, result.reasons = guarded_view(view, self.max_chars, self.max_pixels)  # CLIP reads only 77 tokens
            texts = {k: text for k in ("question", "answer", "caption") if (text := getattr(clean, k)) and text.strip()}
            if clean.image and "question" in texts:
                requests.append(SimilarityRequest(image=clean.image, texts=list(texts.values())))
                asked.append((texts, result))
            elif clean.image:
                result.reasons.append("no question: image content and synergy score 0")
            elif view.image is None:
                result.reasons.append("no image")
        if not asked:
            return results
        paired = [[t["answer"], t["caption"]] for t, _ in asked if {"answer", "caption"} <= set(t)]
        vectors = iter(self.embed([text for pair in paired for text in pair]) if self.embed and paired else [])
        for (texts, result), answer in zip(asked, self.similarity(requests), strict=True):
            sims = dict(zip(texts, answer.cosines, strict=True))
            result.call_keys.append(answer.call_key)
            result.raw.update({f"sim_{k}": v for k, v in sims.items()})
            if {"answer", "caption"} <= set(texts):
                overlap = m.containment(m.content_words(texts["caption"]), m.content_words(texts["answer"]))
                text_cosine = m.cosine(next(vectors), next(vectors)) if self.embed else None
                result.raw["caption_restates_answer"] = m.redundancy(overlap, text_cosine)
            self._fill(result, sims)
        return results

    def _fill(self, result: ScorerResult, sims: dict[str, float]) -> None:
        agree = {k: m.ramp(v, *self.cosine_range) / 5 for k, v in sims.items()}
        result.scores["image_content"] = 5 * (agree["question"] + agree.get("caption", agree["question"])) / 2
        if "answer" not in agree:
            result.reasons.append("no answer: image-text synergy scores 0")
            return
        a, c = agree["answer"], agree.get("caption", 0.0)
        restated = result.raw.get("caption_restates_answer", 0.0)
        result.scores["image_text_synergy"] = 5 * max(0.0, a - restated * min(a, c))
