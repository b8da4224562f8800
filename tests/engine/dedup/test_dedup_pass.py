"""The global dedup pass on a corpus with planted duplicates: recall and precision per method against ground truth,
independence from shard splits and runs, and bad inputs that must not stop the pass."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, replace
from pathlib import Path

import duckdb
import numpy as np
import pytest
import scipy.sparse

from bench.corpora import TextMaker, image, jaccard, near_vector, shingle_set, unit_vectors, variant
from seir.engine.dedup import DedupIndex, DedupItem, DedupResult, find_duplicates
from seir.engine.spec import DedupConfig
from seir.operators.dedup import MinHashDedup

Pairs = set[frozenset[str]]


@dataclass(frozen=True)
class Corpus:
    items: list[DedupItem]
    truth: dict[str, Pairs]  # method -> the dialogue pairs that are duplicates by that method's definition
    planted: dict[str, dict[str, str]]  # method -> dialogue id -> how it was planted
    exact_families: set[frozenset[str]]  # each text with its exact copies


def _jaccard_matrix(texts: list[str]) -> np.ndarray:
    """True Jaccard similarity of every pair's shingle sets, exactly: set sizes and intersections by sparse algebra."""
    sets = [shingle_set(text) for text in texts]
    vocabulary = {shingle: k for k, shingle in enumerate(set().union(*sets))}
    rows = [i for i, shingles in enumerate(sets) for _ in shingles]
    columns = [vocabulary[shingle] for shingles in sets for shingle in shingles]
    member = scipy.sparse.csr_matrix((np.ones(len(rows)), (rows, columns)), shape=(len(sets), len(vocabulary)))
    both = (member @ member.T).toarray()
    sizes = np.diag(both)
    return both / np.maximum(sizes[:, None] + sizes[None, :] - both, 1)


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    # Text: 200 originals; exact copies (up to case and spacing), copies with 1% and 2% of words replaced (true
    # Jaccard ~0.94 and ~0.89), with 5-20% replaced (0.33-0.78) and with sentences reordered (~0.78).
    copies = {"exact": 20, "edit 0.01": 20, "edit 0.02": 20, "edit 0.05-0.2": 40, "reorder": 15}
    text = TextMaker(seed=7).corpus(originals=200, copies=copies, words=200)
    n = len(text.texts)
    ids = [f"d{i:04d}" for i in range(n)]
    rng, np_rng = random.Random(7), np.random.default_rng(7)
    planted: dict[str, dict[str, str]] = {"minhash": dict(zip(ids, text.kind, strict=True)), "image-phash": {},
                                         "semantic": {}}

    # Images, independent of the text copies: 100 single originals and 60 variants of them; 10 two-image dialogues
    # with a full variant (a duplicate) and a half variant (not one: one of its images has no counterpart).
    images: list[list[bytes]] = [[] for _ in range(n)]
    families: list[frozenset[int]] = [frozenset()] * n
    for i in range(100):
        images[i], families[i] = [image(i)], frozenset([i])
    for k, how in enumerate(["resize", "jpeg", "crop"] * 20):
        origin, i = rng.randrange(100), 100 + k
        images[i], families[i] = [variant(images[origin][0], how, rng)], families[origin]
        planted["image-phash"][ids[i]] = how
    for k in range(10):
        both = [image(1000 + k), image(2000 + k)]
        a, full, half = 160 + k, 170 + k, 180 + k
        images[a], families[a] = both, frozenset([1000 + k, 2000 + k])
        images[full], families[full] = [variant(both[0], "jpeg", rng), variant(both[1], "resize", rng)], families[a]
        images[half], families[half] = [variant(both[0], "jpeg", rng), image(3000 + k)], frozenset([1000 + k, 3000 + k])
        planted["image-phash"][ids[full]] = "two images"

    # Embeddings: random unit vectors (unrelated), 50 near copies at cosine 0.955-0.995, 30 distractors at 0.85-0.94.
    vectors = unit_vectors(n, 384, np_rng)
    for k in range(80):
        origin, i = rng.randrange(120), 120 + k
        cosine = rng.uniform(0.955, 0.995) if k < 50 else rng.uniform(0.85, 0.94)
        vectors[i] = near_vector(vectors[origin], cosine, np_rng)
        planted["semantic"][ids[i]] = f"cosine {cosine:.2f}"
    cosines = vectors @ vectors.T

    pairs = list(itertools.combinations(range(n), 2))
    similarity = _jaccard_matrix(text.texts)
    truth = {
        "minhash": {frozenset((ids[i], ids[j])) for i, j in pairs if similarity[i, j] >= 0.8},
        "image-phash": {frozenset((ids[i], ids[j])) for i, j in pairs if families[i] and families[i] == families[j]},
        "semantic": {frozenset((ids[i], ids[j])) for i, j in pairs if cosines[i, j] >= 0.95},
    }
    items = [DedupItem(ids[i], text.texts[i], images[i], vectors[i].tolist(), score=rng.choice([3.0, 3.5, 4.0]),
                       order=i) for i in range(n)]
    families: dict[int, set[str]] = {}
    for i, (source, kind) in enumerate(zip(text.source, text.kind, strict=True)):
        if kind == "exact":
            families.setdefault(source, {ids[source]}).add(ids[i])
    return Corpus(items, truth, planted, {frozenset(family) for family in families.values()})


@pytest.mark.parametrize("method", ["minhash", "image-phash", "semantic"])
def test_each_method_finds_its_duplicates(corpus: Corpus, method: str) -> None:
    """Recall: the share of true duplicate pairs the pass put in one group. Precision: the share of the links the
    method made that join a true duplicate pair."""
    result = find_duplicates(corpus.items, DedupConfig(methods=(method,)))
    grouped = {frozenset(pair) for group in result.groups for pair in itertools.combinations(group, 2)}
    linked = {frozenset((link.a_id, link.b_id)) for link in result.links}
    truth = corpus.truth[method]
    recall, precision = len(grouped & truth) / len(truth), len(linked & truth) / len(linked)
    missed = sorted({corpus.planted[method].get(i, "original") for pair in truth - grouped for i in pair})
    wrong = sorted({corpus.planted[method].get(i, "original") for pair in linked - truth for i in pair})
    print(f"\n{method}: {len(truth)} true pairs, {len(linked)} links; recall {recall:.3f} (missed: {missed}), "
          f"precision {precision:.3f} (wrong: {wrong}); {result.stats}")
    assert recall >= 0.95 and precision >= 0.95


def test_text_pairs_near_the_threshold_are_decided_on_exact_jaccard(corpus: Corpus) -> None:
    """The corpus is dense just below the threshold (15 reorders at true Jaccard ~0.78, 5% edits at ~0.75), where
    a 128-permutation estimate (sd 0.035) alone crosses 0.8 a third of the time."""
    result = find_duplicates(corpus.items, DedupConfig(methods=("minhash",)))
    texts = {item.dialogue_id: item.text for item in corpus.items}
    near = [link for link in result.links if MinHashDedup().unsure(np.array(link.similarity))]
    assert result.stats["minhash.exact"] > 20 and len(near) > 10
    for link in near:
        assert link.similarity == pytest.approx(jaccard(shingle_set(texts[link.a_id]), shingle_set(texts[link.b_id])))


def test_exact_methods_find_only_exact_copies(corpus: Corpus) -> None:
    groups = find_duplicates(corpus.items, DedupConfig(methods=("exact-text",))).groups
    assert {frozenset(group) for group in groups} == corpus.exact_families
    assert not find_duplicates(corpus.items, DedupConfig(methods=("exact-image",))).decisions  # all were transformed


def _decisions(result: DedupResult) -> tuple[object, ...]:
    return result.decisions, result.groups, result.links, result.skipped


def test_shard_splits_batches_and_runs_do_not_change_the_decisions(corpus: Corpus, tmp_path: Path) -> None:
    whole = find_duplicates(corpus.items)
    assert len(whole.decisions) > 100 and len(whole.groups) > 30

    shuffled = random.Random(1).sample(corpus.items, len(corpus.items))
    index = DedupIndex(DedupConfig(batch_size=37))
    for shard in (shuffled[:50], shuffled[50:200], shuffled[200:]):
        index.add(shard)
    assert _decisions(index.resolve()) == _decisions(whole)

    path = str(tmp_path / "provenance.duckdb")  # two runs, each with its own connection to one database file
    for run in (shuffled[::2], shuffled[1::2]):
        with duckdb.connect(path) as con:
            result = find_duplicates(run, con=con)
    assert _decisions(result) == _decisions(whole)


def test_the_kept_dialogue_is_best_scored_then_earliest_then_smallest_id() -> None:
    text = " ".join(f"word{i}" for i in range(50))
    items = [DedupItem("c", text, score=4.0, order=5), DedupItem("b", text, score=4.0, order=5),
             DedupItem("a", text, score=3.0, order=0), DedupItem("d", text, score=4.0, order=9)]
    result = find_duplicates(items)
    assert result.groups == (("b", "c", "d", "a"),)
    assert {(d.dropped_id, d.kept_id, d.matched_id, d.method, d.similarity) for d in result.decisions} == {
        ("c", "b", "b", "exact-text", 1.0), ("d", "b", "b", "exact-text", 1.0), ("a", "b", "b", "exact-text", 1.0)}


def test_adding_a_dialogue_again_replaces_it_and_a_repeat_within_one_pass_is_refused() -> None:
    con = duckdb.connect()
    text = " ".join(f"word{i}" for i in range(50))
    first = find_duplicates([DedupItem("a", text), DedupItem("b", text, [b"broken"])], con=con)
    assert first.dropped_ids == {"b"} and [s.dialogue_id for s in first.skipped if s.method == "image-phash"] == ["b"]
    refreshed = find_duplicates([DedupItem("b", "a refreshed dialogue with other words entirely")], con=con)
    assert refreshed.decisions == () and refreshed.stats["items"] == 2
    assert not [s for s in refreshed.skipped if s.method == "image-phash"]  # the old image went with the old version
    with pytest.raises(ValueError, match="given twice"):
        find_duplicates([DedupItem("x", text), DedupItem("x", text)])
    index = DedupIndex(con=con)
    index.retain(["a"])  # a dataset that no longer holds "b"
    assert index.resolve().stats["items"] == 1


def test_bad_inputs_are_skipped_with_reasons_and_the_pass_goes_on(corpus: Corpus) -> None:
    def broken_loader() -> list[bytes]:
        raise OSError("image store unreachable")

    good = corpus.items[:40]
    bad = [
        DedupItem("empty", "", [b"\x89PNG\r\n\x1a\n truncated"], embedding=[]),
        DedupItem("one-word", "hello", broken_loader, embedding=[float("nan")] * 384),
        DedupItem("huge", "lorem ipsum dolor " * 333_334, [b""], embedding=[0.0] * 384),
        DedupItem("odd", "some text with enough words here", ["not bytes"], embedding=[1.0] * 10),  # type: ignore[list-item]
    ]
    result = find_duplicates(good + bad + [replace(good[0], dialogue_id="copy")])
    reasons = {(s.dialogue_id, s.method): s.reason for s in result.skipped}
    assert reasons[("empty", "minhash")] == "empty text"
    assert reasons[("empty", "exact-text")] == "empty text"
    assert reasons[("empty", "image-phash")].startswith("image 0: undecodable image")
    assert reasons[("one-word", "minhash")] == "1 word(s), fewer than the shingle size 3"
    assert reasons[("one-word", "image-phash")] == "images not loaded: OSError: image store unreachable"
    assert reasons[("one-word", "semantic")] == "embedding has non-finite values"
    assert reasons[("huge", "semantic")] == "embedding is all zeros"
    assert reasons[("odd", "exact-image")].startswith("images not loaded: TypeError")
    assert reasons[("odd", "semantic")] == "embedding has 10 values, expected 384"
    assert any(d.dropped_id == "copy" or d.kept_id == "copy" for d in result.decisions)
