"""Text dedup operators alone: normalisation and exact keys, shingle hashing, MinHash estimates, LSH banding."""

from __future__ import annotations

import random

import numpy as np
import pytest

from bench.corpora import TextMaker, jaccard, shingle_set
from seir.engine.keys import normalize_text, text_key
from seir.operators.dedup import ExactText, MinHashDedup, common
from seir.operators.dedup.common import Ragged
from seir.operators.dedup.lsh import band_keys, choose_bands, collision_probability
from seir.operators.dedup.shingles import fold, normalize, normalized_utf8, shingle_hashes
from seir.operators.registry import lookup

TRICKY = ["", "   ", "Hello", "  Ｈｅｌｌｏ\t  WORLD\n", "a\x1cb\x1fc", "line\u2028break\u00a0nbsp\u3000wide",
          "Straße ΣΊΣΥΦΟΣ ﬁne", "tab\tand\r\nnewline", "nul\x00inside", "emoji 🙂  ok "]


def _random_texts() -> list[str]:
    """Half ASCII (the fast paths), half with Unicode whitespace and foldable letters."""
    rng, ascii_only = random.Random(0), "aZ9.,\x00\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f "
    alphabets = (ascii_only, ascii_only + "\x85\u00a0\u2028\u3000ÄßＡ")
    return ["".join(rng.choices(alphabets[i % 2], k=rng.randint(0, 30))) for i in range(300)]


def test_normalisation_and_exact_keys_match_the_engine() -> None:
    for text in TRICKY + _random_texts():
        assert normalize(text) == normalize_text(text)
        assert normalized_utf8(text) == normalize_text(text).encode()
        assert ExactText().keys([text]) == [text_key(text) if normalize_text(text) else None]


def test_the_fast_fold_shingles_exactly_like_full_normalisation() -> None:
    texts = [*TRICKY, *_random_texts(), *TextMaker(seed=2).corpus(originals=20, copies={"exact": 5}).texts]
    fast = shingle_hashes([fold(text) for text in texts], 2)
    full = shingle_hashes([normalize(text).encode() for text in texts], 2)
    assert (fast.words == full.words).all() and (fast.offsets == full.offsets).all()
    assert (fast.values == full.values).all()


def test_operators_are_registered_for_job_specs() -> None:
    assert lookup("dedup", "minhash") is MinHashDedup
    assert MinHashDedup().config()["bands"] == [16, 6]


def test_a_shingle_hashes_the_same_wherever_it_occurs() -> None:
    texts = [b"a b c d", b"x a b c", b"", b"a b", b"a b c d"]
    hashes = shingle_hashes(texts, 3)
    assert hashes.words.tolist() == [4, 4, 0, 2, 4]
    assert np.diff(hashes.offsets).tolist() == [2, 2, 0, 0, 2]
    first, second, last = (hashes.values[hashes.offsets[i]:hashes.offsets[i + 1]] for i in (0, 1, 4))
    assert first[0] == second[1] and first[1] != second[0] and (first == last).all()
    assert shingle_hashes([b"ab c d"], 3).values[0] != shingle_hashes([b"a bc d"], 3).values[0]


def test_signatures_do_not_depend_on_batching_and_stay_stable_across_versions() -> None:
    texts = TextMaker(seed=3).corpus(originals=1500, copies={}, words=200).texts  # > 256 KiB: several slices
    op = MinHashDedup()
    whole = op.sketch(texts).rows
    assert (np.concatenate([op.sketch(texts[i:i + 7]).rows for i in range(0, 63, 7)]) == whole[:63]).all()
    folded = [fold(text) for text in texts]
    members = op.sketch_folded(folded, members=True).members
    assert members is not None and len(members.offsets) == len(texts) + 1
    for i in (0, 700, len(texts) - 1):  # in the first, a middle and the last slice
        row = members.values[members.offsets[i]:members.offsets[i + 1]]
        assert (row == shingle_hashes(folded[i:i + 1], op.shingle_size).values).all()
    # Stored signatures must stay comparable with new ones: a change here invalidates every dedup index.
    pinned = [66484236, 2154497562, 1516796476, 1016380244]
    assert op.sketch(["the quick brown fox jumps"]).rows[0, :4].tolist() == pinned


def test_estimated_jaccard_is_unbiased_with_the_expected_spread() -> None:
    maker, op = TextMaker(seed=5), MinHashDedup()
    originals = [maker.dialogue(200) for _ in range(300)]
    copies = [maker.edit(text, rate) for text, rate in zip(originals, np.linspace(0.0, 0.3, 300), strict=True)]
    sketches = op.sketch(originals + copies).rows
    estimate = op.similarity(sketches[:300], sketches[300:])
    truth = np.array([jaccard(shingle_set(a), shingle_set(b)) for a, b in zip(originals, copies, strict=True)])
    error = estimate - truth
    expected_sd = np.sqrt(truth * (1 - truth) / op.num_perm)
    assert abs(error.mean()) < 0.006
    assert 0.8 < np.sqrt((error**2).mean()) / np.sqrt((expected_sd**2).mean()) < 1.2


def test_short_empty_and_huge_texts() -> None:
    op = MinHashDedup()
    huge = "lorem ipsum dolor sit amet " * 200_000  # a million words
    sketches = op.sketch(["", "one", "two words", huge, "exactly three words"])
    assert sketches.index.tolist() == [3, 4]
    assert [(s.index, s.reason) for s in sketches.skips] == [(0, "empty text"),
        (1, "1 word(s), fewer than the shingle size 3"), (2, "2 word(s), fewer than the shingle size 3")]
    five_shingles = op.sketch(["lorem ipsum dolor sit amet lorem ipsum dolor"]).rows  # the same 5 shingles as huge
    assert (sketches.rows[0] == five_shingles[0]).all()


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.9])
def test_bands_put_the_s_curve_step_at_the_threshold(threshold: float) -> None:
    bands, rows = choose_bands(threshold, 128)
    assert bands * rows <= 128
    around = np.array([threshold - 0.15, threshold, min(threshold + 0.15, 1.0)])
    probability = collision_probability(around, bands, rows)
    assert probability[0] < 0.2 and probability[1] > 0.5 and probability[2] > 0.9
    recall_leaning = choose_bands(threshold, 128, false_negative_weight=0.8)
    assert collision_probability(np.array(threshold), *recall_leaning) > probability[1]


def test_a_recall_floor_admits_only_bands_that_catch_pairs_at_the_threshold() -> None:
    bands, rows = choose_bands(0.8, 128, min_recall=0.99, false_negative_weight=0.0)
    assert (bands, rows) == (16, 6) and collision_probability(np.array(0.8), bands, rows) >= 0.99
    assert collision_probability(np.array(0.5), bands, rows) < 0.25  # the fewest false positives that allows
    assert choose_bands(0.8, 2, min_recall=0.99) == (2, 1)  # out of reach: the likeliest shape


def test_ragged_rows_as_sets_and_their_exact_jaccard_match_python_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    pool = rng.integers(0, 2**32, 60, dtype=np.uint64).astype(np.uint32)  # small: rows overlap and repeat values
    rows = [rng.choice(pool, rng.integers(0, 40)) if i % 10 else pool[:0] for i in range(50)]  # some empty

    def ragged(part: list[np.ndarray]) -> Ragged:
        return Ragged(np.concatenate(part), np.cumsum([0] + [len(row) for row in part]))

    sets = ragged(rows).as_sets()
    for i, row in enumerate(rows):
        assert sets.values[sets.offsets[i]:sets.offsets[i + 1]].tolist() == sorted(set(row.tolist()))
    a, b = rng.integers(0, len(rows), (2, 400))
    expected = [jaccard(set(rows[i].tolist()), set(rows[j].tolist())) for i, j in zip(a, b, strict=True)]
    assert sets.jaccard(a, b) == pytest.approx(expected)
    monkeypatch.setattr(common, "_JACCARD_CHUNK", 50)  # many chunks, some of a single pair
    assert sets.jaccard(a, b) == pytest.approx(expected)
    joined = Ragged.concatenate([ragged(rows[:15]), ragged(rows[15:])])
    assert (joined.values == np.concatenate(rows)).all() and (joined.offsets == ragged(rows).offsets).all()


def test_only_estimates_near_the_threshold_are_checked_exactly() -> None:
    op = MinHashDedup()  # 3 sds at 0.8 with 128 permutations: 0.106
    assert op.unsure(np.array([0.69, 0.70, 0.8, 0.9, 0.91])).tolist() == [False, True, True, True, False]


def test_band_keys_agree_exactly_when_a_band_agrees() -> None:
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 2**32, (2, 12), dtype=np.uint64).astype(np.uint32)
    rows[1, 4:8] = rows[0, 4:8]  # band 1 of 3 (4 rows each) agrees
    keys = band_keys(rows, 3, 4)
    assert (keys[0] == keys[1]).tolist() == [False, True, False]


def test_lsh_and_verification_find_light_edits_alone() -> None:
    """The operator without the engine: band keys bucket near copies together, similarity confirms them."""
    maker, op = TextMaker(seed=9), MinHashDedup()
    originals = [maker.dialogue(150) for _ in range(100)]
    texts = originals + [maker.edit(originals[i], 0.01) for i in range(50)]
    rows = op.sketch(texts).rows
    keys = op.band_keys(rows)
    candidates = {(i, j) for band in range(keys.shape[1]) for i in range(len(texts)) for j in range(i)
                  if keys[i, band] == keys[j, band]}
    found = {(i, j) for i, j in candidates if op.similarity(rows[[i]], rows[[j]])[0] >= op.threshold}
    planted = {(100 + k, k) for k in range(50)}
    assert len(found & planted) >= 48 and found <= planted
