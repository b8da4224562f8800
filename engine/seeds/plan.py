"""Seeds at any size: the job's seeds stream into DuckDB, and the rules that refuse or drop a seed run there as set
operations, so a seed file of millions of lines is planned in bounded memory and linear time.

Each rule has this one home, applied in this order (the first line of a group is always the one kept):

1. **Repeated seeds**: a line whose seed key (its text, topic, template, pictures and turns) an earlier line has is
   quarantined as a duplicate of that line.
2. **Repeated ids**: a line whose ``id`` an earlier kept line uses is quarantined: one id, one dialogue.
3. **Near-duplicate seeds** (``seeds.near_duplicates``): equal texts once punctuation and case are set aside, or the
   Jaccard similarity of their 3-word shingles (the output dedup's shingles) at or over the threshold, computed
   exactly through a prefix filter (``_drop_near_duplicates`` says why not MinHash bands), compared only among
   seeds that bring the same pictures: "What is in this picture?" over two photographs is two tasks. A dropped
   seed names the seed it was matched with; groups are connected, and each keeps its first seed.

The result is three temp tables on the connection: ``planned_seeds`` (the seeds kept, ``n`` numbering them in seed
order), ``seed_refused`` (quarantined lines) and ``seed_dropped`` (near-duplicates, with the seed each matched).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import TextIO

import duckdb
import numpy as np
import pyarrow as pa

from seir.engine.keys import bytes_key, normalize_words
from seir.engine.progress import Meter
from seir.engine.records import SEED_COLUMNS, Quarantined, Seed
from seir.engine.seeds.read import SeedLoad, SeedReader, image_key_only
from seir.engine.spec import SeedSpec
from seir.engine.store import pages
from seir.operators.dedup import MinHashDedup
from seir.operators.dedup.groups import resolve as resolve_groups
from seir.operators.dedup.groups import strongest_links
from seir.operators.dedup.shingles import normalized_utf8, shingle_hashes

STAGE_ROWS = 8192  # seeds sent to DuckDB per insert
_NEAR_DUPLICATE_ROWS = 16384  # seeds shingled per step of the near-duplicate pass
SHINGLE_WORDS = MinHashDedup().shingle_size  # shingles as the output dedup's MinHash takes them

# Pairs of seeds (a < b by n, among seeds that bring the same pictures) whose normalised texts are equal (exact 0,
# similarity 1) or whose shingle sets reach Jaccard $t (exact 1), found through the prefix filter; each seed text's
# shingles counted once. Texts of fewer than SHINGLE_WORDS words have no shingles and match only exactly. Each step
# is a temp table of its own, so DuckDB can spill every one of them.
_SIMILAR_SEEDS = ("""
    CREATE OR REPLACE TEMP TABLE seed_firsts AS SELECT part, text_key, min(n) AS first FROM seed_texts GROUP BY ALL
""", """
    CREATE OR REPLACE TEMP TABLE seed_distinct AS
        SELECT DISTINCT s.n, s.h FROM seed_shingles s SEMI JOIN seed_firsts f ON f.first = s.n
""", """
    CREATE OR REPLACE TEMP TABLE seed_lens AS
        SELECT s.n, s.len, t.part FROM (SELECT n, count(*) AS len FROM seed_distinct GROUP BY n) s
        JOIN seed_texts t USING (n)
""", """
    CREATE OR REPLACE TEMP TABLE seed_prefix AS
        SELECT r.n, r.h FROM (
            SELECT s.n, s.h, row_number() OVER (PARTITION BY s.n ORDER BY d.df, s.h) AS pos
            FROM seed_distinct s JOIN (SELECT h, count(*) AS df FROM seed_distinct GROUP BY h) d USING (h)) r
        JOIN seed_lens l USING (n) WHERE r.pos <= l.len - ceil($t * l.len - 1e-9) + 1
""", """
    CREATE OR REPLACE TEMP TABLE seed_candidates AS
        SELECT DISTINCT x.n AS a, y.n AS b FROM seed_prefix x JOIN seed_prefix y ON y.h = x.h AND x.n < y.n
        JOIN seed_lens la ON la.n = x.n JOIN seed_lens lb ON lb.n = y.n
        WHERE la.part = lb.part AND lb.len >= $t * la.len AND la.len >= $t * lb.len
""", """
    SELECT least(t.n, f.first) AS a, greatest(t.n, f.first) AS b, 1.0::DOUBLE AS similarity, 0 AS exact
    FROM seed_texts t JOIN seed_firsts f USING (part, text_key) WHERE t.n <> f.first
    UNION ALL
    SELECT s.a, s.b, s.both / (la.len + lb.len - s.both) AS similarity, 1 AS exact
    FROM (SELECT c.a, c.b, count(*) AS both FROM seed_candidates c JOIN seed_distinct x ON x.n = c.a
          JOIN seed_distinct y ON y.n = c.b AND y.h = x.h GROUP BY ALL) s
    JOIN seed_lens la ON la.n = s.a JOIN seed_lens lb ON lb.n = s.b
    WHERE s.both / (la.len + lb.len - s.both) >= $t
""")

_TABLES = """
CREATE OR REPLACE TEMP TABLE seed_lines (ord BIGINT, from_source VARCHAR, from_line BIGINT, seed_key VARCHAR,
    seed_id VARCHAR, source VARCHAR, text VARCHAR, topic VARCHAR, template VARCHAR, turn_images VARCHAR[][],
    turns INTEGER);
CREATE OR REPLACE TEMP TABLE seed_refused (source VARCHAR, line BIGINT, field VARCHAR, reason VARCHAR,
    raw VARCHAR);
"""


@dataclass(frozen=True)
class SeedCounts:
    kept: int
    quarantined: int
    near_duplicates: int


def plan_seeds(con: duckdb.DuckDBPyConnection, spec: SeedSpec, put_image: Callable[[bytes], str],
               stream: TextIO) -> SeedCounts:
    """Read the job's seeds into ``con``'s temp tables and apply the seed rules (see the module docstring)."""
    reader = SeedReader(spec, put_image)
    staged = [0]
    with Meter("reading seeds", reader.total_bytes() / 1e6 or None, "MB", stream,
               detail=lambda: f"{staged[0]:,} lines") as meter:
        reader.on_bytes = lambda n: meter.advance(n / 1e6)
        con.execute(_TABLES)
        _stage(con, reader, staged)
    _refuse_repeats(con)
    dropped = _drop_near_duplicates(con, spec.near_duplicates, stream)
    kept, refused = con.execute("SELECT (SELECT count(*) FROM planned_seeds), "
                                "(SELECT count(*) FROM seed_refused)").fetchall()[0]
    return SeedCounts(kept, refused, dropped)


def load_seeds(spec: SeedSpec, put_image: Callable[[bytes], str] = image_key_only,
               stream: TextIO | None = None) -> SeedLoad:
    """A small job's seeds after every rule, in memory (``seir validate``, tests): ``plan_seeds`` on a connection of
    its own."""
    con = duckdb.connect()
    try:
        plan_seeds(con, spec, put_image, stream or io.StringIO())
        columns = ", ".join(SEED_COLUMNS)
        seeds = [Seed.from_row(row) for row in con.execute(f"SELECT {columns} FROM planned_seeds ORDER BY n")
                 .fetchall()]
        refused = [Quarantined(*row) for row in con.execute("SELECT * FROM seed_refused").fetchall()]
        return SeedLoad(seeds, refused)
    finally:
        con.close()


def _stage(con: duckdb.DuckDBPyConnection, reader: Iterable[tuple[Seed, str] | Quarantined],
           staged: list[int]) -> None:
    lines: Iterator[tuple[Seed, str] | Quarantined] = iter(reader)
    while batch := list(islice(lines, STAGE_ROWS)):
        seeds = [(item, where) for item, where in (x for x in batch if not isinstance(x, Quarantined))]
        refused = [x for x in batch if isinstance(x, Quarantined)]
        start = staged[0]
        staged[0] += len(batch)
        if seeds:
            wheres = [where.rpartition(":") for _, where in seeds]
            rows = pa.table({
                "ord": pa.array(range(start, start + len(seeds)), pa.int64()),
                "from_source": [source for source, _, _ in wheres], "from_line": [int(line) for _, _, line in wheres],
                **{name: _column(name, [seed for seed, _ in seeds]) for name in SEED_COLUMNS},
            })
            _insert(con, "seed_lines", rows)
        if refused:
            _insert(con, "seed_refused", pa.table({name: [getattr(q, name) for q in refused]
                                                   for name in ("source", "line", "field", "reason", "raw")}))


def _column(name: str, seeds: list[Seed]) -> pa.Array:
    if name == "turn_images":
        return pa.array([[list(keys) for keys in s.turn_images] for s in seeds], pa.list_(pa.list_(pa.string())))
    return pa.array([getattr(s, name) for s in seeds], pa.int32() if name == "turns" else pa.string())


def _refuse_repeats(con: duckdb.DuckDBPyConnection) -> None:
    """Rules 1 and 2: the first line of each seed key, then the first kept line of each id, stays."""
    con.execute("""
        CREATE OR REPLACE TEMP TABLE seed_first AS
            SELECT seed_key, min(ord) AS first FROM seed_lines GROUP BY seed_key;
        INSERT INTO seed_refused
            SELECT l.from_source, l.from_line, 'text',
                   'duplicate of the seed at ' || f.from_source || ':' || f.from_line, ''
            FROM seed_lines l JOIN seed_first k USING (seed_key) JOIN seed_lines f ON f.ord = k.first
            WHERE l.ord <> k.first;
        CREATE OR REPLACE TEMP TABLE seed_unique AS
            SELECT l.* FROM seed_lines l SEMI JOIN seed_first k ON l.ord = k.first;
        CREATE OR REPLACE TEMP TABLE seed_first AS
            SELECT seed_id, min(ord) AS first FROM seed_unique GROUP BY seed_id;
        INSERT INTO seed_refused
            SELECT l.from_source, l.from_line, 'id',
                   'id ' || l.seed_id || ' is already used by the seed at ' || f.from_source || ':' || f.from_line
                   || '; give this line an id of its own', left(l.text, 500)
            FROM seed_unique l JOIN seed_first k USING (seed_id) JOIN seed_unique f ON f.ord = k.first
            WHERE l.ord <> k.first;
        CREATE OR REPLACE TEMP TABLE planned_seeds AS
            SELECT row_number() OVER (ORDER BY l.ord) - 1 AS n, l.*
            FROM seed_unique l SEMI JOIN seed_first k ON l.ord = k.first ORDER BY l.ord;
        DROP TABLE seed_first;
        DROP TABLE seed_unique;
        DROP TABLE seed_lines;
        CREATE OR REPLACE TEMP TABLE seed_dropped (seed_key VARCHAR, seed_id VARCHAR, source VARCHAR, text VARCHAR,
            kept_seed_key VARCHAR, kept_seed_id VARCHAR, method VARCHAR, similarity DOUBLE);
    """)


def _drop_near_duplicates(con: duckdb.DuckDBPyConnection, threshold: float | None, stream: TextIO) -> int:
    """Rule 3. Seeds that share a template share most of their shingles, so MinHash bands would make every pair of
    them a candidate (measured: 25k candidate pairs at 10k templated seeds, 2.5M at 100k). An exact similarity join
    with a prefix filter stays linear: order each text's shingles rarest first (by how many seeds have them); two
    texts of Jaccard >= t must share one of the first ``len - ceil(t * len) + 1`` shingles of each, and the rarest
    shingles are the ones only near-duplicates share. Candidates are then decided on their exact Jaccard."""
    if threshold is None:
        return 0
    total = con.execute("SELECT count(*) FROM planned_seeds").fetchall()[0][0]
    con.execute("CREATE OR REPLACE TEMP TABLE seed_texts (n BIGINT, part VARCHAR, text_key VARCHAR);"
                "CREATE OR REPLACE TEMP TABLE seed_shingles (n BIGINT, h UINTEGER)")
    with Meter("near-duplicate seeds", total, "seeds", stream) as meter:
        for page in pages(con, "SELECT n, text, array_to_string(list_sort(flatten(turn_images)), ',') AS part "
                               "FROM planned_seeds", "n", _NEAR_DUPLICATE_ROWS):
            texts = [normalized_utf8(normalize_words(text)) for text in page.column("text").to_pylist()]
            shingles = shingle_hashes(texts, SHINGLE_WORDS)
            ns = page.column("n").to_numpy()
            _insert(con, "seed_texts", pa.table({"n": ns, "part": page.column("part"),
                                                 "text_key": [bytes_key(text) for text in texts]}))
            _insert(con, "seed_shingles", pa.table({"n": np.repeat(ns, np.diff(shingles.offsets)),
                                                    "h": shingles.values}))
            meter.advance(page.num_rows)
        for step in _SIMILAR_SEEDS[:-1]:  # inside the meter: its timer shows the join goes on
            con.execute(step, {"t": threshold} if "$t" in step else None)
        links = con.execute(_SIMILAR_SEEDS[-1], {"t": threshold}).fetchnumpy()
    a, b = links["a"].astype(np.int64), links["b"].astype(np.int64)
    keep = strongest_links(a, b, links["exact"].astype(np.int64))  # an exact match wins over a near one
    a, b, similarity, exact = a[keep], b[keep], links["similarity"][keep], links["exact"][keep]
    drops = resolve_groups(a, b)  # the smallest n of each group is kept: seeds are numbered in seed order
    con.register("decided", pa.table({
        "n": drops.node, "matched": drops.match, "similarity": similarity[drops.link],
        "method": pa.array(np.where(exact[drops.link] == 0, "exact-text", "word-jaccard").tolist(), pa.string())}))
    con.execute("""
        INSERT INTO seed_dropped
            SELECT s.seed_key, s.seed_id, s.source, s.text, k.seed_key, k.seed_id, d.method, d.similarity
            FROM decided d JOIN planned_seeds s ON s.n = d.n JOIN planned_seeds k ON k.n = d.matched
            ORDER BY s.n;
        CREATE OR REPLACE TEMP TABLE planned_seeds AS
            SELECT row_number() OVER (ORDER BY s.n) - 1 AS n, s.* EXCLUDE (n)
            FROM planned_seeds s ANTI JOIN decided d ON d.n = s.n ORDER BY s.n;
        DROP TABLE seed_texts; DROP TABLE seed_shingles; DROP TABLE seed_firsts; DROP TABLE seed_distinct;
        DROP TABLE seed_lens; DROP TABLE seed_prefix; DROP TABLE seed_candidates;
    """)
    con.unregister("decided")
    return len(drops.node)


def _insert(con: duckdb.DuckDBPyConnection, table: str, rows: pa.Table) -> None:
    con.register("staged_rows", rows)
    con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM staged_rows")
    con.unregister("staged_rows")
