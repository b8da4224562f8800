"""No-reference image quality from pixel statistics alone (numpy and PIL; no model, no download).

Each metric is measured, then mapped onto 0-5 (``measures.ramp``: linear between the two anchors, flat beyond):

============== ================================================ ========== ==========
metric         raw measurement                                  0 at       5 at
============== ================================================ ========== ==========
sharpness      variance of the 4-neighbour Laplacian (log10)    10         500
exposure       share of pixels crushed (<= 4) or blown (>= 251) 0.30       0.02
contrast       RMS contrast (luminance std / 255)               0.02       0.15
colourfulness  Hasler-Süsstrunk M                               0          35
noise          Immerkær sigma (grey levels)                     15         3
blockiness     8x8 boundary step / inside step                  2.0        1.2
resolution     log2 of the shorter side                         target/8   target
============== ================================================ ========== ==========

The anchors were set on synthetic 512x512 scenes and their degraded copies
(tests/operators/scoring/test_image_quality.py); image_quality is their weighted mean (``WEIGHTS``), so one
defect lowers it without zeroing an otherwise good picture, and greyscale art loses only colourfulness' weight.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from seir.operators.base import register
from seir.operators.scoring import measures as m
from seir.operators.scoring.base import Scorer, ScorerResult
from seir.operators.scoring.guards import MAX_PIXELS, image_array
from seir.operators.scoring.rubrics import TurnView

WEIGHTS = {"sharpness": 0.25, "exposure": 0.15, "contrast": 0.1, "colourfulness": 0.05, "noise": 0.15,
           "blockiness": 0.15, "resolution": 0.15}


def image_metrics(rgb: np.ndarray, target_side: int = 512) -> tuple[dict[str, float], dict[str, float]]:
    """(raw measurements, their 0-5 scores) for an HxWx3 float RGB picture in 0-255."""
    gray = m.luminance(rgb)
    raw = {
        "laplacian_variance": m.laplacian_variance(gray),
        "clipped_share": m.clipped_share(gray),
        "rms_contrast": m.rms_contrast(gray),
        "colourfulness": m.colourfulness(rgb),
        "noise_sigma": m.immerkaer_sigma(gray),
        "blockiness": m.blockiness(gray),
        "min_side": float(min(gray.shape)),
    }
    scores = {
        "sharpness": m.log_ramp(raw["laplacian_variance"], 10.0, 500.0),
        "exposure": m.ramp(raw["clipped_share"], 0.30, 0.02),
        "contrast": m.ramp(raw["rms_contrast"], 0.02, 0.15),
        "colourfulness": m.ramp(raw["colourfulness"], 0.0, 35.0),
        "noise": m.ramp(raw["noise_sigma"], 15.0, 3.0),
        "blockiness": m.ramp(raw["blockiness"], 2.0, 1.2),
        "resolution": m.ramp(math.log2(raw["min_side"]), math.log2(target_side / 8), math.log2(target_side)),
    }
    return raw, scores


@register
class ImageQualityScorer(Scorer):
    name: ClassVar[str] = "image-quality"
    reads: ClassVar[tuple[str, ...]] = ("image",)
    informs: ClassVar[tuple[str, ...]] = ("image_quality",)

    def __init__(self, target_side: int = 512, max_pixels: int = MAX_PIXELS,
                 weights: Mapping[str, float] | None = None) -> None:
        self.target_side = target_side
        self.max_pixels = max_pixels
        self.weights = dict(WEIGHTS if weights is None else weights)
        if set(self.weights) - set(WEIGHTS) or sum(self.weights.values()) <= 0:
            raise ValueError(f"image-quality weights must name some of {sorted(WEIGHTS)} with a positive sum")

    def config(self) -> dict[str, Any]:
        return {"operator": self.name, "target_side": self.target_side, "max_pixels": self.max_pixels,
                "weights": self.weights}

    def score_turns(self, views: Sequence[TurnView]) -> list[ScorerResult]:
        return [self.score_image(view.image) for view in views]

    def score_image(self, data: bytes | None) -> ScorerResult:
        rgb, reasons = image_array(data, self.max_pixels)
        if rgb is None:  # SynJudge: a missing (or unusable) picture scores 0
            return ScorerResult(self.name, {"image_quality": 0.0}, reasons=reasons)
        raw, scores = image_metrics(rgb, self.target_side)
        combined = sum(w * scores[k] for k, w in self.weights.items()) / sum(self.weights.values())
        raw.update({f"{k}_score": v for k, v in scores.items()})
        return ScorerResult(self.name, {"image_quality": combined}, raw, reasons)
