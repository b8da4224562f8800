"""The dedup index behind the global pass: duplicates across all shards and all runs, one decision per dropped
dialogue.

``find_duplicates(items, config, con)`` is ``DedupIndex(config, con)``, ``.add(items)``, ``.resolve()``:

- ``add`` computes per dialogue its exact keys (normalised text, image set), and per *content key* the sketch of
  each near-duplicate method (MinHash signature per text key, perceptual hash per image key, unit embedding per
  embedding key), with the sketch's LSH band rows. Sketches and band rows are stored in DuckDB under the content
  key and the method's *space* (one per method and config, ``dedup_index_spaces``), so a text, image or embedding
  seen by an earlier run or shard is never sketched again. A changed config opens a new space: dialogues added
  under the old one must be added again for that method to see them.
- ``resolve`` finds candidate pairs by grouping the band table (``GROUP BY band, bucket HAVING count(*) > 1``),
  verifies them (Jaccard, Hamming distance, cosine), links dialogues (exact keys, verified pairs, and for images:
  every image of each dialogue matched in the other), takes connected components and keeps one dialogue per
  component: highest combined score, then earliest order, then smallest dialogue id.
- Text pairs are verified by the rule of ``seir.operators.dedup.minhash``: a pair whose estimated Jaccard is more
  than 3 sds from the threshold keeps the estimate; the others (about two thirds of the candidates on the benchmark
  corpus) are decided on the exact Jaccard of the two texts' shingle-hash sets, from shingle hashes stored under
  the content key beside the signature when it is computed. A verified pair is then decided wrongly only when its
  estimate lands more than 3 sds off (~0.1% of pairs at the threshold, fewer farther away) or two of its shingles
  share a 32-bit hash; a true pair goes unseen when no band matches (0.8% at the threshold, 0.05% at Jaccard 0.85).

Tables: ``dedup_index_items`` (one row per dialogue: score, order, keys), ``_item_images``, ``_skips`` (why a
method could not judge a dialogue), ``_spaces``, ``_sketches``, ``_sets`` (set members: a text's shingle hashes)
and ``_bands``. The result is a function of the set of items in the index (all runs that used this connection), not
of their order or of how they were split into shards or ``add`` calls: ranks, candidate pairs and links are all
derived from table contents. Adding a dialogue id again replaces it (a refreshed dialogue); adding the same id
twice in one index session is an error, since one of the two would win by arrival order.

Scaling to 100M dialogues on a Ray cluster (the same steps, distributed):

1. Map, no shuffle: each shard's task normalises texts, hashes keys and computes sketches and band rows only for
   content keys absent from the sketch cache (a Parquet table keyed by content key; a semi-join against it),
   holding just its shard (~10k dialogues, ~5 MB of signatures). Output: band rows (16 bands x ~45 B per text:
   ~70 GB at 100M before compression), sketches (512 B per text: ~50 GB) and shingle hashes (4 B per shingle,
   ~800 B per text: ~80 GB) as Parquet.
2. Shuffle 1, band rows by ``hash(band, bucket)``: each partition groups its buckets and emits candidate key pairs.
   Bucket sizes follow the number of near-duplicates, so partitions stay balanced except for popular templates.
3. Shuffle 2, candidate pairs by key to meet their sketches (a join against the sketch table), then verify: each
   worker holds a slice of pairs and the sketches they name. The pairs left unsure meet their shingle hashes the
   same way (a third shuffle, of those pairs only).
4. Components: the verified links (about one per duplicate, ~10M at a 10% rate) fit one node (union-find over
   int64 ranks, ~1 GB); ranks come from a global sort on (score desc, order, id), the only other all-to-all step.
   Decisions go to the single provenance writer.
Images (step 3 joins dialogue-image rows with verified image pairs, partitioned by image key) and embeddings take the
same path. Limits: pigeonhole bands for 64-bit image hashes are 9-10 bits wide, so random candidate pairs grow as
n**2 / 150 and a corpus of many millions of images needs ``max_distance`` <= 3 (16-bit bands) or a longer hash; a
key shared by very many dialogues (one stock image) links them as a star, but image coverage joins grow with the
square of its count.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from seir.engine.keys import canonical_json, content_key
from seir.engine.spec import DedupConfig
from seir.engine.store import ACCEPTED_IN_RUN
from seir.operators.dedup import (
    DedupMethod,
    ExactImage,
    ExactText,
    Sketches,
    SketchMethod,
)
from seir.operators.dedup.common import Ragged, blob_key
from seir.operators.dedup.groups import resolve as resolve_groups
from seir.operators.dedup.groups import strongest_links
from seir.operators.dedup.shingles import normalized_utf8

_VERIFY_CHUNK = 1 << 15  # candidate pairs verified per step: their sketches are all that is held at once
_TEXT_KEYS, _IMAGE_KEYS = ExactText(), ExactImage()
# Where each input's content key is kept: the key dialogues share when the input is the same, and under which
# sketches are stored.
_KEY_COLUMN = {"dialogue.text": "text_key", "turn.image": "image_set_key", "dialogue.embedding": "embedding_key"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dedup_index_items (dialogue_id VARCHAR NOT NULL, score DOUBLE NOT NULL,
    ord BIGINT NOT NULL, text_key VARCHAR, image_set_key VARCHAR, n_images INTEGER NOT NULL, embedding_key VARCHAR);
CREATE TEMP TABLE IF NOT EXISTS dedup_index_session (dialogue_id VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS dedup_index_item_images (dialogue_id VARCHAR NOT NULL, image_key VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS dedup_index_skips (dialogue_id VARCHAR NOT NULL, method VARCHAR NOT NULL,
    reason VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS dedup_index_spaces (space SMALLINT NOT NULL, method VARCHAR NOT NULL,
    config_key VARCHAR NOT NULL, config VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS dedup_index_sketches (space SMALLINT NOT NULL, key VARCHAR NOT NULL, sketch BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS dedup_index_sets (space SMALLINT NOT NULL, key VARCHAR NOT NULL, members BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS dedup_index_bands (space SMALLINT NOT NULL, band SMALLINT NOT NULL, bucket UBIGINT NOT NULL,
    key VARCHAR NOT NULL);
"""


@dataclass(frozen=True)
class DedupItem:
    """One dialogue as the dedup pass sees it. ``image_bytes`` may be a loader, called once when the item is added
    (a loader that raises skips the image methods for this dialogue). ``score`` is the combined judge score."""

    dialogue_id: str
    text: str
    image_bytes: Sequence[bytes] | Callable[[], Sequence[bytes]] = ()
    embedding: Sequence[float] | None = None
    score: float = 0.0
    order: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.dialogue_id, str) or not self.dialogue_id:
            raise ValueError(f"dedup item needs a non-empty str dialogue_id, got {self.dialogue_id!r}")
        if not math.isfinite(self.score):
            raise ValueError(f"dedup item {self.dialogue_id!r}: score must be finite, got {self.score}")


@dataclass(frozen=True)
class DedupDecision:
    """``dropped_id`` leaves the dataset; ``kept_id`` is the dialogue kept for its group. ``matched_id`` is the
    dialogue it was directly found to duplicate (``kept_id`` itself, or another dropped member on the way to it),
    by ``method`` at ``similarity`` (1.0 for exact keys; Jaccard, exact near the threshold and estimated elsewhere;
    1 - Hamming/64; cosine)."""

    dropped_id: str
    kept_id: str
    method: str
    similarity: float
    matched_id: str


@dataclass(frozen=True)
class SkippedInput:
    """A method could not judge this dialogue (or one of its images); the other methods still did."""

    dialogue_id: str
    method: str
    reason: str


@dataclass(frozen=True)
class DedupLink:
    """Two dialogues found to be duplicates by ``method`` (the most certain one, when several agree). Dialogues
    with equal keys are linked as a star to the best-ranked of them, not as a clique."""

    a_id: str
    b_id: str
    method: str
    similarity: float


@dataclass(frozen=True)
class DedupResult:
    decisions: tuple[DedupDecision, ...]  # by dropped_id
    groups: tuple[tuple[str, ...], ...]  # each: the kept dialogue first, then the dropped ones by rank
    links: tuple[DedupLink, ...]  # the evidence: every direct link, by (a_id, b_id)
    skipped: tuple[SkippedInput, ...]
    stats: dict[str, int]  # items, and per near-duplicate method its candidate and verified key pairs

    @property
    def dropped_ids(self) -> frozenset[str]:
        return frozenset(decision.dropped_id for decision in self.decisions)


def find_duplicates(
    items: Iterable[DedupItem], config: DedupConfig | None = None, con: duckdb.DuckDBPyConnection | None = None
) -> DedupResult:
    """Duplicates among ``items`` and everything an earlier run stored in ``con`` (in-memory when None)."""
    index = DedupIndex(config, con)
    index.add(items)
    return index.resolve()


def _arrow(**columns: Any) -> pa.Table:
    return pa.table(columns)


def _blob_column(rows: np.ndarray) -> pa.Array:
    rows = np.ascontiguousarray(rows)
    width = rows.shape[1] * rows.itemsize
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(rows), [None, pa.py_buffer(rows.tobytes())])


def _ragged_column(rows: Ragged) -> pa.Array:
    """Each row as one BLOB of its uint32 values."""
    byte_offsets = pa.py_buffer(rows.offsets * rows.values.itemsize)
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(rows.offsets) - 1,
                                            [None, byte_offsets, pa.py_buffer(rows.values)])


def _ragged_rows(column: pa.ChunkedArray) -> Ragged:
    """Stored BLOBs of uint32 values (at least one BLOB) back to ``Ragged``, without copying the values."""
    blobs = column.combine_chunks().cast(pa.large_binary())
    offsets = np.frombuffer(blobs.buffers()[1], dtype=np.int64, count=len(blobs) + 1, offset=blobs.offset * 8)
    values = np.frombuffer(blobs.buffers()[2], dtype=np.uint32, count=(offsets[-1] - offsets[0]) // 4,
                           offset=offsets[0])
    return Ragged(values, (offsets - offsets[0]) // 4)


def _blob_rows(column: pa.ChunkedArray, dtype: type) -> np.ndarray:
    """Stored sketches (equal-sized BLOBs) back to one array row each."""
    blobs = column.combine_chunks()
    if len(blobs) == 0:
        return np.zeros((0, 0), dtype=dtype)
    size = pc.binary_length(blobs)[0].as_py()
    fixed = blobs.cast(pa.binary(size))
    data = np.frombuffer(fixed.buffers()[1], dtype=np.uint8, count=len(fixed) * size, offset=fixed.offset * size)
    return data.view(dtype).reshape(len(fixed), -1)


Links = tuple[np.ndarray, np.ndarray, np.ndarray]  # rank a, rank b, similarity
Skips = list[tuple[str, str, str]]  # dialogue id, method, reason


class DedupIndex:
    """Dedup state in DuckDB (tables ``dedup_index_*``), growing over shards and runs; see the module docstring."""

    def __init__(self, config: DedupConfig | None = None, con: duckdb.DuckDBPyConnection | None = None) -> None:
        self.config = config or DedupConfig()
        self.con = con if con is not None else duckdb.connect()
        self.con.execute(_SCHEMA)
        self.con.execute("DELETE FROM dedup_index_session")  # ids added in this session, checked at resolve
        self._operators = self.config.operators()
        self._methods = {name: op for name, op in self._operators.items() if isinstance(op, SketchMethod)}
        self._spaces = {name: self._space(name, op) for name, op in self._methods.items()}

    def _reading(self, name: str) -> dict[str, DedupMethod]:
        return {method: op for method, op in self._operators.items() if name in op.reads}

    def _space(self, method: str, op: SketchMethod) -> int:
        """The id under which sketches of this method and config are stored (a small int: it is on every band row)."""
        config = op.config()
        key = content_key(config)
        found = self.con.sql("SELECT space FROM dedup_index_spaces WHERE config_key = $k", params={"k": key}).fetchall()
        if found:
            return found[0][0]
        space = self.con.sql("SELECT count(*) FROM dedup_index_spaces").fetchall()[0][0]
        self.con.execute("INSERT INTO dedup_index_spaces VALUES ($s, $m, $k, $c)",
                         {"s": space, "m": method, "k": key, "c": canonical_json(config).decode()})
        return space

    # ---- add: keys and sketches --------------------------------------------------------------------------------

    def add(self, items: Iterable[DedupItem]) -> None:
        iterator = iter(items)
        while batch := list(islice(iterator, self.config.batch_size)):
            self._add_batch(batch)

    def retain(self, dialogue_ids: Iterable[str]) -> None:
        """Forget every dialogue but these (a dataset's current candidates); cached sketches stay for reuse."""
        self.con.register("dedup_kept_ids", _arrow(dialogue_id=pa.array(list(dialogue_ids), pa.string())))
        try:
            self._retain("SELECT dialogue_id FROM dedup_kept_ids")
        finally:
            self.con.unregister("dedup_kept_ids")

    def retain_run(self, run_id: str) -> None:
        """``retain`` the accepted dialogues of a run of the provenance store this index lives in."""
        self._retain(f"SELECT dialogue_id FROM ({ACCEPTED_IN_RUN})", {"run": run_id})

    def _retain(self, kept: str, params: dict[str, Any] | None = None) -> None:
        for table in ("items", "item_images", "skips"):
            self.con.execute(f"DELETE FROM dedup_index_{table} WHERE dialogue_id NOT IN ({kept})", params)

    def _add_batch(self, batch: list[DedupItem]) -> None:
        ids = Counter(item.dialogue_id for item in batch)
        repeated = sorted(i for i, n in ids.items() if n > 1)
        if repeated:
            raise ValueError(f"dialogue ids given twice to one dedup pass: {repeated[:5]}")
        skips: Skips = []
        normalized = [normalized_utf8(item.text) for item in batch]  # keys, and the text methods' input
        text_keys = _TEXT_KEYS.keys(normalized)
        for method in self._reading("dialogue.text"):
            if method not in self._methods:  # a sketch method names its own skips
                skips += [(item.dialogue_id, method, "empty text")
                          for item, key in zip(batch, text_keys, strict=True) if key is None]
        judges_images = bool(self._reading("turn.image"))
        images = [self._images(item, skips) if judges_images else {} for item in batch]
        self.con.begin()
        try:
            embedding_keys = self._sketch_embeddings(batch, skips)
            for method, op in self._methods.items():
                if op.reads == ("dialogue.text",):
                    self._sketch_texts(method, batch, normalized, text_keys, skips)
                elif op.reads == ("turn.image",):
                    self._sketch_images(method, batch, images, skips)
            self._store_items(batch, text_keys, images, embedding_keys, skips)
            self.con.commit()
        except BaseException:
            self.con.rollback()
            raise

    def _images(self, item: DedupItem, skips: Skips) -> dict[str, bytes]:
        """The item's distinct images by key; none if they cannot be loaded."""
        try:
            images = item.image_bytes() if callable(item.image_bytes) else item.image_bytes
            return dict(zip(_IMAGE_KEYS.keys(images), images, strict=True))
        except Exception as error:  # a failing loader or a non-bytes value: this dialogue's images go unjudged
            reason = f"images not loaded: {type(error).__name__}: {error}"
            skips += [(item.dialogue_id, method, reason) for method in self._reading("turn.image")]
            return {}

    def _sketch_embeddings(self, batch: list[DedupItem], skips: Skips) -> list[str | None]:
        keys: list[str | None] = [None] * len(batch)
        methods = [method for method, op in self._methods.items() if op.reads == ("dialogue.embedding",)]
        if not methods:
            return keys
        vector_of: dict[str, np.ndarray] = {}
        unkeyed: dict[int, str] = {}
        for position, item in enumerate(batch):  # keyed by the vector as given, so any method can reuse the key
            if item.embedding is None:
                unkeyed[position] = "no embedding"
                continue
            try:
                vector = np.asarray(item.embedding, dtype=np.float64)
            except (TypeError, ValueError):
                unkeyed[position] = "embedding is not numeric"
                continue
            keys[position] = key = blob_key(vector)
            vector_of.setdefault(key, vector)
        for method in methods:
            op = self._methods[method]
            reasons = self._store_sketches(method, vector_of,
                                           lambda todo, op=op: op.sketch([vector_of[k] for k in todo]))
            for position, (item, key) in enumerate(zip(batch, keys, strict=True)):
                reason = unkeyed.get(position) if key is None else reasons.get(key)
                if reason is not None:
                    skips.append((item.dialogue_id, method, reason))
        return keys

    def _sketch_texts(self, method: str, batch: list[DedupItem], normalized: list[bytes],
                      text_keys: list[str | None], skips: Skips) -> None:
        op = self._methods[method]
        text_of = {key: text for key, text in zip(text_keys, normalized, strict=True) if key is not None}
        reasons = self._store_sketches(method, text_of, lambda todo: op.sketch([text_of[k] for k in todo]))
        for item, key in zip(batch, text_keys, strict=True):
            reason = "empty text" if key is None else reasons.get(key)
            if reason is not None:
                skips.append((item.dialogue_id, method, reason))

    def _sketch_images(self, method: str, batch: list[DedupItem], images: list[dict[str, bytes]],
                       skips: Skips) -> None:
        op = self._methods[method]
        image_of = {key: data for item_images in images for key, data in item_images.items()}
        reasons = self._store_sketches(method, image_of, lambda todo: op.sketch([image_of[key] for key in todo]))
        for item, item_images in zip(batch, images, strict=True):
            skips += [(item.dialogue_id, method, f"image {position}: {reasons[key]}")
                      for position, key in enumerate(item_images) if key in reasons]

    def _store_sketches(self, method: str, keys: Iterable[str],
                        sketch: Callable[[list[str]], Sketches]) -> dict[str, str]:
        """Sketch the keys not yet stored under this config and store them with their band rows (and set members,
        where the method gives them); returns the reason for each key the method skipped."""
        op, params = self._methods[method], {"s": self._spaces[method]}
        self.con.register("dedup_wanted", _arrow(key=pa.array(list(keys), pa.string())))
        todo = self.con.sql(
            "SELECT key FROM dedup_wanted ANTI JOIN (SELECT key FROM dedup_index_sketches "
            "WHERE space = $s) USING (key)", params=params,
        ).fetchnumpy()["key"].tolist()
        sketches = sketch(todo)
        stored = pa.array([todo[i] for i in sketches.index.tolist()], pa.string())
        bands = op.band_keys(sketches.rows)
        self.con.register("dedup_new_sketches", _arrow(key=stored, sketch=_blob_column(sketches.rows)))
        self.con.register("dedup_new_bands", _arrow(
            band=np.tile(np.arange(bands.shape[1], dtype=np.int16), len(stored)),
            bucket=bands.ravel(),
            key=stored.take(np.repeat(np.arange(len(stored)), bands.shape[1])),
        ))
        self.con.execute("INSERT INTO dedup_index_sketches SELECT $s, key, sketch FROM dedup_new_sketches", params)
        self.con.execute("INSERT INTO dedup_index_bands SELECT $s, band, bucket, key FROM dedup_new_bands", params)
        if sketches.members is not None:
            self.con.register("dedup_new_sets", _arrow(key=stored, members=_ragged_column(sketches.members)))
            self.con.execute("INSERT INTO dedup_index_sets SELECT $s, key, members FROM dedup_new_sets", params)
        for name in ("dedup_wanted", "dedup_new_sketches", "dedup_new_bands", "dedup_new_sets"):
            self.con.unregister(name)
        return {todo[skip.index]: skip.reason for skip in sketches.skips}

    def _store_items(self, batch: list[DedupItem], text_keys: list[str | None], images: list[dict[str, bytes]],
                     embedding_keys: list[str | None], skips: Skips) -> None:
        """Insert the batch's dialogues, replacing any stored under the same ids."""
        ids = [item.dialogue_id for item in batch]
        new = {
            "items": _arrow(
                dialogue_id=pa.array(ids, pa.string()),
                score=pa.array([float(item.score) for item in batch], pa.float64()),
                ord=pa.array([int(item.order) for item in batch], pa.int64()),
                text_key=pa.array(text_keys, pa.string()),
                image_set_key=pa.array([_IMAGE_KEYS.set_key(list(keys)) if keys else None for keys in images],
                                       pa.string()),
                n_images=pa.array([len(keys) for keys in images], pa.int32()),
                embedding_key=pa.array(embedding_keys, pa.string()),
            ),
            "item_images": _arrow(
                dialogue_id=pa.array([i for i, keys in zip(ids, images, strict=True) for _ in keys], pa.string()),
                image_key=pa.array([key for keys in images for key in keys], pa.string()),
            ),
            "skips": _arrow(**{name: pa.array([row[i] for row in skips], pa.string())
                               for i, name in enumerate(("dialogue_id", "method", "reason"))}),
        }
        self.con.register("dedup_new_ids", _arrow(dialogue_id=pa.array(ids, pa.string())))
        self.con.execute("INSERT INTO dedup_index_session SELECT dialogue_id FROM dedup_new_ids")
        replaced = self.con.execute(
            "DELETE FROM dedup_index_items WHERE dialogue_id IN (SELECT * FROM dedup_new_ids) RETURNING dialogue_id"
        ).fetchall()
        for table, rows in new.items():
            if replaced and table != "items":  # refreshed dialogues: their old images and skips go too
                self.con.execute(f"DELETE FROM dedup_index_{table} WHERE dialogue_id IN (SELECT * FROM dedup_new_ids)")
            if rows.num_rows:
                self.con.register("dedup_new_rows", rows)
                self.con.execute(f"INSERT INTO dedup_index_{table} SELECT * FROM dedup_new_rows")
                self.con.unregister("dedup_new_rows")
        self.con.unregister("dedup_new_ids")

    # ---- resolve: candidates, links, groups --------------------------------------------------------------------

    def resolve(self) -> DedupResult:
        """Link, group and decide over every dialogue in the index, as Python records (for passes that are read
        whole; ``decide`` keeps large passes in DuckDB)."""
        links = self._decide()
        decisions = tuple(DedupDecision(*row) for row in self.con.sql(
            "SELECT dropped_id, kept_id, method, similarity, matched_id FROM dedup_decided "
            "ORDER BY dropped_id").fetchall())
        a, b, similarity, method = links
        ids = self._ids(np.concatenate([a, b]))
        members: dict[str, list[str]] = {}
        for decision in sorted(decisions, key=lambda d: self._rank_of[d.dropped_id]):
            members.setdefault(decision.kept_id, [decision.kept_id]).append(decision.dropped_id)
        found = sorted(
            (DedupLink(*sorted((ids[x], ids[y])), m, float(sim))
             for x, y, m, sim in zip(a.tolist(), b.tolist(), method, similarity.tolist(), strict=True)),
            key=lambda link: (link.a_id, link.b_id))
        skipped = [SkippedInput(*row) for row in self.con.sql(
            "SELECT dialogue_id, method, reason FROM dedup_index_skips SEMI JOIN dedup_ranked USING (dialogue_id) "
            "ORDER BY ALL").fetchall()]
        groups = tuple(tuple(group) for _, group in sorted(members.items(), key=lambda kv: self._rank_of[kv[0]]))
        return DedupResult(decisions, groups, tuple(found), tuple(skipped), self.stats)

    def decide(self) -> int:
        """Link, group and decide over every dialogue in the index into temp table ``dedup_decided(dropped_id,
        kept_id, method, similarity, matched_id)``; returns how many were dropped. Memory: the links as arrays."""
        self._decide()
        return self.con.sql("SELECT count(*) FROM dedup_decided").fetchall()[0][0]

    def _decide(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        repeated = self.con.sql("SELECT dialogue_id FROM dedup_index_session GROUP BY ALL HAVING count(*) > 1 "
                                "ORDER BY ALL LIMIT 5").fetchall()
        if repeated:
            raise ValueError(f"dialogue ids given twice to one dedup pass: {[r[0] for r in repeated]}")
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE dedup_ranked AS SELECT *, "
            "row_number() OVER (ORDER BY score DESC, ord ASC, dialogue_id ASC) - 1 AS rank FROM dedup_index_items"
        )
        self.stats = {"items": self.con.sql("SELECT count(*) FROM dedup_ranked").fetchall()[0][0]}
        found = {method: self._links(method, self.stats) for method in self._operators}
        a, b, similarity = (np.concatenate([np.zeros(0)] + [links[i] for links in found.values()]) for i in range(3))
        method = np.array([m for m, links in found.items() for _ in links[0]], dtype=object)
        priority = list(self._operators)
        keep = strongest_links(a.astype(np.int64), b.astype(np.int64), np.array([priority.index(m) for m in method]))
        a, b, similarity, method = a[keep].astype(np.int64), b[keep].astype(np.int64), similarity[keep], method[keep]
        drops = resolve_groups(a, b)
        self.con.register("dedup_drops", _arrow(
            node=drops.node, keeper=drops.keeper, match=drops.match, similarity=similarity[drops.link],
            method=pa.array(method[drops.link].tolist(), pa.string())))
        self.con.execute("""
            CREATE OR REPLACE TEMP TABLE dedup_decided AS
            SELECT n.dialogue_id AS dropped_id, k.dialogue_id AS kept_id, d.method, d.similarity,
                   m.dialogue_id AS matched_id
            FROM dedup_drops d JOIN dedup_ranked n ON n.rank = d.node JOIN dedup_ranked k ON k.rank = d.keeper
            JOIN dedup_ranked m ON m.rank = d.match""")
        self.con.unregister("dedup_drops")
        return a, b, similarity, method

    def _ids(self, ranks: np.ndarray) -> dict[int, str]:
        self.con.register("dedup_wanted_ranks", _arrow(rank=np.unique(ranks)))
        ids = dict(self.con.sql(
            "SELECT rank, dialogue_id FROM dedup_ranked SEMI JOIN dedup_wanted_ranks USING (rank)").fetchall())
        self.con.unregister("dedup_wanted_ranks")
        self._rank_of = {dialogue_id: rank for rank, dialogue_id in ids.items()}
        return ids

    def _links(self, method: str, stats: dict[str, int]) -> Links:
        """The dialogue pairs ``method`` finds to be duplicates."""
        column = _KEY_COLUMN[self._operators[method].reads[0]]
        if method not in self._methods:  # an exact method: equal content keys
            return self._same_key_links(column)
        if column == "image_set_key":
            self._verify(method, "SELECT image_key AS key FROM dedup_index_item_images "
                                 "SEMI JOIN dedup_ranked USING (dialogue_id)", stats)
            return self._coverage_links()
        self._verify(method, f"SELECT {column} AS key FROM dedup_ranked", stats)
        verified = self._fetch(
            f"WITH best AS (SELECT {column} AS key, min(rank) AS rank FROM dedup_ranked GROUP BY ALL) "
            "SELECT x.rank, y.rank, v.similarity FROM dedup_verified v "
            "JOIN best x ON x.key = v.a JOIN best y ON y.key = v.b")
        same = self._same_key_links(column, sketched_by=method)
        return tuple(np.concatenate(columns) for columns in zip(same, verified, strict=True))

    def _fetch(self, sql: str, params: dict[str, Any] | None = None) -> Links:
        columns = self.con.sql(sql, params=params).fetchnumpy().values()
        rank_a, rank_b, similarity = (np.asarray(values) for values in columns)
        return rank_a, rank_b, similarity

    def _same_key_links(self, column: str, sketched_by: str | None = None) -> Links:
        """Each dialogue to the best-ranked dialogue sharing its key; with ``sketched_by``, only keys that method
        could sketch (a text too short for its shingles links nothing)."""
        sketched, params = "", None
        if sketched_by is not None:
            sketched = f"AND {column} IN (SELECT key FROM dedup_index_sketches WHERE space = $s)"
            params = {"s": self._spaces[sketched_by]}
        return self._fetch(
            f"SELECT rank, min(rank) OVER (PARTITION BY {column}) AS best, 1.0::DOUBLE AS similarity "
            f"FROM dedup_ranked WHERE {column} IS NOT NULL {sketched} QUALIFY rank <> best", params)

    def _verify(self, method: str, live_keys: str, stats: dict[str, int]) -> None:
        """Candidate key pairs from the band table, verified into temp table ``dedup_verified(a, b, similarity)``.
        ``live_keys`` selects the keys of current dialogues (a replaced dialogue's old keys stay in the tables).
        Pairs are verified ``_VERIFY_CHUNK`` at a time, each chunk meeting its sketches in a join, so what is held
        is one chunk's sketches, however many pairs there are."""
        op, params = self._methods[method], {"s": self._spaces[method]}
        self.con.execute(f"""
            CREATE OR REPLACE TEMP TABLE dedup_pairs AS
            WITH banded AS (SELECT band, bucket, key FROM dedup_index_bands
                            WHERE space = $s AND key IN ({live_keys})),
                 shared AS (SELECT band, bucket FROM banded GROUP BY band, bucket HAVING count(*) > 1),
                 pairs AS (SELECT DISTINCT x.key AS a, y.key AS b
                           FROM banded x JOIN shared s ON x.band = s.band AND x.bucket = s.bucket
                           JOIN banded y ON y.band = s.band AND y.bucket = s.bucket AND x.key < y.key)
            SELECT row_number() OVER (ORDER BY a, b) - 1 AS i, a, b FROM pairs""", params)
        self.con.execute("CREATE OR REPLACE TEMP TABLE dedup_verified (a VARCHAR, b VARCHAR, similarity DOUBLE)")
        total = self.con.sql("SELECT count(*) FROM dedup_pairs").fetchall()[0][0]
        stats[f"{method}.candidates"], stats[f"{method}.verified"] = total, 0
        for lo in range(0, total, _VERIFY_CHUNK):
            chunk = self.con.sql(
                "SELECT p.a, p.b, x.sketch AS sa, y.sketch AS sb FROM dedup_pairs p "
                "JOIN dedup_index_sketches x ON x.space = $s AND x.key = p.a "
                "JOIN dedup_index_sketches y ON y.space = $s AND y.key = p.b "
                "WHERE p.i >= $lo AND p.i < $hi", params={**params, "lo": lo, "hi": lo + _VERIFY_CHUNK},
            ).to_arrow_table()
            similarity = op.similarity(_blob_rows(chunk.column("sa"), op.sketch_dtype),
                                       _blob_rows(chunk.column("sb"), op.sketch_dtype))
            unsure = op.unsure(similarity)
            if unsure is not None:
                stats[f"{method}.exact"] = stats.get(f"{method}.exact", 0) + self._settle(
                    method, unsure, chunk.column("a"), chunk.column("b"), similarity)
            verified = _arrow(a=chunk.column("a"), b=chunk.column("b"), similarity=similarity).filter(
                pa.array(similarity >= op.min_similarity))
            self.con.register("dedup_verified_rows", verified)
            self.con.execute("INSERT INTO dedup_verified SELECT * FROM dedup_verified_rows")
            self.con.unregister("dedup_verified_rows")
            stats[f"{method}.verified"] += verified.num_rows

    def _settle(self, method: str, unsure_mask: np.ndarray, a: pa.ChunkedArray, b: pa.ChunkedArray,
                similarity: np.ndarray) -> int:
        """Replace the estimates of the key pairs ``(a, b)`` that ``method`` is unsure of by the exact Jaccard of the
        stored set members (a text's shingle hashes); returns how many it replaced."""
        unsure = np.flatnonzero(unsure_mask)
        if len(unsure) == 0:
            return 0
        picked = pa.array(unsure)
        key_a, key_b = np.array(a.take(picked).to_pylist()), np.array(b.take(picked).to_pylist())
        keys = np.unique(np.concatenate([key_a, key_b]))
        self.con.register("dedup_unsure_keys", _arrow(key=pa.array(keys.tolist(), pa.string())))
        sets = _ragged_rows(self.con.sql(
            "SELECT s.members FROM dedup_unsure_keys u JOIN dedup_index_sets s ON s.key = u.key "
            "WHERE s.space = $s ORDER BY u.key", params={"s": self._spaces[method]},
        ).to_arrow_table().column(0)).as_sets()
        self.con.unregister("dedup_unsure_keys")
        ia, ib = np.searchsorted(keys, key_a), np.searchsorted(keys, key_b)
        similarity[unsure] = sets.jaccard(ia, ib)
        return len(unsure)

    def _coverage_links(self) -> Links:
        """Dialogue pairs in which every image of each has a near-identical image (or itself) in the other;
        similarity: the worst of the best matches."""
        return self._fetch("""
            WITH images AS (SELECT r.rank, i.image_key AS key FROM dedup_index_item_images i
                            JOIN dedup_ranked r USING (dialogue_id)),
                 matches AS (SELECT a, b, similarity FROM dedup_verified
                             UNION ALL SELECT b, a, similarity FROM dedup_verified
                             UNION ALL SELECT DISTINCT key, key, 1.0 FROM images),
                 best AS (SELECT x.rank AS ra, y.rank AS rb, x.key, max(m.similarity) AS similarity
                          FROM images x JOIN matches m ON m.a = x.key
                          JOIN images y ON y.key = m.b AND y.rank <> x.rank GROUP BY ALL),
                 covered AS (SELECT ra, rb, count(*) AS n, min(similarity) AS similarity FROM best GROUP BY ALL)
            SELECT c.ra, c.rb, least(c.similarity, d.similarity) AS similarity
            FROM covered c JOIN covered d ON d.ra = c.rb AND d.rb = c.ra
            JOIN dedup_ranked x ON x.rank = c.ra JOIN dedup_ranked y ON y.rank = c.rb
            WHERE c.ra < c.rb AND c.n = x.n_images AND d.n = y.n_images""")
