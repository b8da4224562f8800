"""Image dedup operators alone: the DCT, perceptual hashes of near-identical and unrelated images, pigeonhole
banding, undecodable input, exact image keys."""

from __future__ import annotations

import random

import numpy as np
import pytest
import scipy.fft

from bench.corpora import image, variant
from seir.operators.dedup import ExactImage, PerceptualHash
from seir.operators.dedup.phash import _dct_matrix


def test_the_numpy_dct_is_the_orthonormal_dct_ii() -> None:
    x = np.random.default_rng(0).random((32, 32))
    assert np.allclose(_dct_matrix(32) @ x @ _dct_matrix(32).T, scipy.fft.dctn(x, type=2, norm="ortho"))


def test_near_identical_images_stay_close_and_unrelated_ones_far() -> None:
    op, rng = PerceptualHash(), random.Random(0)
    originals = [image(seed) for seed in range(40)]
    copies = [variant(original, how, rng) for original in originals for how in ("resize", "jpeg", "crop")]
    hashes = op.sketch(originals + copies).rows
    near = op.similarity(np.repeat(hashes[:40], 3, axis=0), hashes[40:])
    assert (near >= op.min_similarity).mean() >= 0.95
    i, j = np.triu_indices(40, 1)
    assert (op.similarity(hashes[i], hashes[j]) < op.min_similarity).all()


def test_pigeonhole_bands_never_miss_a_pair_within_the_distance() -> None:
    op, rng = PerceptualHash(max_distance=6), np.random.default_rng(1)
    hashes = rng.integers(0, 2**63, 2000, dtype=np.uint64)[:, None]
    flipped = hashes.copy()
    for row in flipped:
        for bit in rng.choice(64, size=rng.integers(0, 7), replace=False):
            row[0] ^= np.uint64(1) << np.uint64(bit)
    shares_a_band = (op.band_keys(hashes) == op.band_keys(flipped)).any(axis=1)
    assert shares_a_band.all() and (op.similarity(hashes, flipped) >= op.min_similarity).all()
    assert op.band_keys(hashes).shape == (2000, 7)


@pytest.mark.parametrize("data", [b"", b"not an image", image(1)[:60]])
def test_undecodable_images_are_skipped_with_a_reason(data: bytes) -> None:
    sketches = PerceptualHash().sketch([image(0), data])
    assert sketches.index.tolist() == [0] and sketches.rows.shape == (1, 1)
    assert sketches.skips[0].index == 1 and sketches.skips[0].reason.startswith("undecodable image: ")
    assert "0x" not in sketches.skips[0].reason  # no memory addresses in a stored reason


def test_exact_image_keys_are_content_keys_and_sets_ignore_order() -> None:
    op = ExactImage()
    first, second = op.keys([image(0), image(1)])
    assert op.keys([image(0)]) == [first] and first != second
    assert op.set_key([first, second]) == op.set_key([second, first, first])
    assert op.set_key([]) is None
