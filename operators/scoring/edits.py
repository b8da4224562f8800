"""What an edit kept of the picture it started from: ``source-similarity``, a structure metric (no model).

An edit should change what its caption asks and keep the rest: the judge sees source and result side by side, and
this scorer measures the keeping. It is the mean SSIM of the two pictures' luminance at the result's size, mapped onto
0-5 (``measures.ramp``): 0 at 0.2 (unrelated photographs of scikit-image score 0.21-0.24 against each other), 5 at
0.7 (an edit that keeps the layout and changes style or detail; a heavily compressed copy scores 0.88). Weight it
on ``image_content`` beside the judge and clip, which score what the caption asked for. A picture made from text
alone has nothing to keep and gets no value, so the dimension's other scorers decide it (weights are normalised over
the scorers that gave a value).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from seir.operators.base import register
from seir.operators.scoring import measures as m
from seir.operators.scoring.base import Scorer, ScorerResult
from seir.operators.scoring.guards import MAX_PIXELS, open_image
from seir.operators.scoring.rubrics import TurnView

KEPT_AT_ZERO, KEPT_AT_FIVE = 0.2, 0.7


@register
class SourceSimilarityScorer(Scorer):
    name: ClassVar[str] = "source-similarity"
    reads: ClassVar[tuple[str, ...]] = ("image", "source")
    informs: ClassVar[tuple[str, ...]] = ("image_content",)

    def __init__(self, max_pixels: int = MAX_PIXELS) -> None:
        self.max_pixels = max_pixels

    def config(self) -> dict[str, Any]:
        return {"operator": self.name, "max_pixels": self.max_pixels, "kept": [KEPT_AT_ZERO, KEPT_AT_FIVE]}

    def score_turns(self, views: Sequence[TurnView]) -> list[ScorerResult]:
        return [self.score_edit(view.source, view.image) for view in views]

    def score_edit(self, source: bytes | None, result: bytes | None) -> ScorerResult:
        if source is None:
            return ScorerResult(self.name)  # made from text: nothing was meant to be kept
        made, reasons = open_image(result, self.max_pixels)
        start, source_reasons = open_image(source, self.max_pixels)
        reasons += [f"source: {reason}" for reason in source_reasons]
        if made is None or start is None:
            return ScorerResult(self.name, {"image_content": 0.0}, reasons=reasons)
        made_grey = made.convert("L")
        # The result's size: an edit pipeline renders its source at the size the job asks.
        start_grey = start.convert("L").resize(made_grey.size, Image.Resampling.BILINEAR)
        ssim = m.structural_similarity(np.asarray(start_grey, dtype=np.float64),
                                       np.asarray(made_grey, dtype=np.float64))
        kept = m.ramp(ssim, KEPT_AT_ZERO, KEPT_AT_FIVE)
        return ScorerResult(self.name, {"image_content": kept}, {"ssim": ssim}, reasons)
