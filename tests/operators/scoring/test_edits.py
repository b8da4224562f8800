"""source-similarity on scikit-image's photographs: what an edit kept of its source, measured without a model."""

from __future__ import annotations

import io

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageFilter

from seir.operators.registry import lookup
from seir.operators.scoring.edits import SourceSimilarityScorer
from seir.operators.scoring.measures import structural_similarity
from seir.operators.scoring.rubrics import TurnView


def encoded(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


CAT = Image.fromarray(skimage.data.chelsea())


def test_kept_layout_scores_above_a_restyled_copy_above_an_unrelated_photograph() -> None:
    scorer = SourceSimilarityScorer()
    source = encoded(CAT)
    # What an edit pipeline returns: the source at the job's size, changed a little or a lot.
    same = encoded(CAT.resize((128, 85)))
    restyled = encoded(CAT.resize((128, 85)).filter(ImageFilter.GaussianBlur(2)).quantize(8).convert("RGB"))
    unrelated = encoded(Image.fromarray(skimage.data.astronaut()).resize((128, 85)))
    scores = [scorer.score_edit(source, made) for made in (same, restyled, unrelated)]
    kept = [result.scores["image_content"] for result in scores]
    ssim = [result.raw["ssim"] for result in scores]
    assert kept[0] == 5.0 and 0 < kept[1] < 5.0 and kept[2] < 1.0 and kept[1] > kept[2]
    assert ssim[0] > ssim[1] > ssim[2]
    # A JPEG source is read as well as a PNG one.
    assert scorer.score_edit(encoded(CAT, "JPEG", quality=90), same).scores["image_content"] == 5.0


def test_a_picture_made_from_text_gets_no_value_and_an_unreadable_one_gets_zero() -> None:
    scorer = lookup("scorer", "source-similarity")()
    made = encoded(CAT.resize((64, 43)))
    [from_text, broken] = scorer.score_turns([TurnView("q", "a", "c", made),
                                              TurnView("q", "a", "c", b"not a picture", source=encoded(CAT))])
    assert from_text.scores == {} and from_text.reasons == []
    assert broken.scores == {"image_content": 0.0} and broken.reasons


def test_structural_similarity_is_one_for_a_picture_and_itself_and_symmetric() -> None:
    rng = np.random.default_rng(0)
    grey = rng.uniform(0, 255, (40, 50))
    other = rng.uniform(0, 255, (40, 50))
    assert structural_similarity(grey, grey) == pytest.approx(1.0)
    assert structural_similarity(grey, other) == pytest.approx(structural_similarity(other, grey))
    assert abs(structural_similarity(grey, other)) < 0.1
