"""What an export reads from the provenance store: a version's dialogues, and preference pairs from its refinement
history, streamed in batches (never the whole dataset in memory).

Messages come out in the chat-template convention with ``{"type": "image"}`` placeholders and the images beside them
in order of appearance, wherever a message holds one (an assistant's picture, or a user's seed image).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from seir.engine.errors import SeirError
from seir.engine.spec import SeirSpec
from seir.engine.store import candidate_preferences_sql, turn_scores_sql
from seir.operators.base import REGISTRY
from seir.operators.stages import BUILT_IN
from seir.operators.stages.prompts import History, question_messages

FETCH_ROWS = 256  # rows per fetch from DuckDB: small enough that a batch of dialogue JSON stays a few MB
PAGE_DIALOGUES = 2048  # dialogues per query (see _paged)
# Where engine/store/images.py stores an image: images/ab/abcdef....png (key: 32 hex digits, the first two its folder).
_STORED_IMAGE = re.compile(r"images/([0-9a-f]{2})/\1[0-9a-f]{30}\.png")


class ExportError(SeirError):
    pass


@dataclass(frozen=True)
class ImageRef:
    """An image of the output folder, read only when a writer needs its bytes."""

    key: str
    path: Path

    def read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            raise ExportError(f"image {self.path} is missing: the output folder is incomplete (copy its images/ "
                              "folder along with provenance.duckdb)") from None


@dataclass
class Conversation:
    """Messages with image placeholders, and their images in order."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    images: list[ImageRef] = field(default_factory=list)


@dataclass
class DialogueRow:
    dialogue_id: str
    dialogue_key: str
    conversation: Conversation
    scores: list[dict[str, Any]]  # per turn: {"turn": i, dimension: value, ...}


@dataclass
class DraftSide:
    """One side of a preference pair: a draft of the stage with its combined scores."""

    draft_key: str
    round: int
    candidate: int
    text: str
    caption: str | None
    image: ImageRef | None
    score: float  # mean of the stage's dimensions, what ranks drafts of a stage
    scores: list[dict[str, Any]]  # [{"dimension": name, "value": v}, ...]


@dataclass
class PairRow:
    dialogue_id: str
    dialogue_key: str
    turn: int
    stage: str
    prompt: Conversation  # the conversation up to the turn (a question's: what its writer was asked)
    chosen: DraftSide
    rejected: DraftSide
    margin: float
    critique: str  # the judge's critique of the draft the chosen one was refined from
    kind: str = "refinement"  # or "sibling": two candidates of one round
    pairwise: float | None = None  # the judge's preference for chosen over rejected (0-1), where judged pairwise
    caption: str | None = None  # image stage: the caption the answer stage kept (the context both images had)
    answer: str | None = None  # image stage: the turn's answer
    source: ImageRef | None = None  # image stage: the user's picture both images were edited from, if any

    @property
    def image_pair(self) -> bool:
        """The two sides differ in their pictures (a stage that writes images), not only in text."""
        return self.chosen.image is not None


class OutputImages:
    """Image paths named in stored messages, checked to be content-addressed files of the output's ``images/``
    folder (``images/ab/KEY.png``) before any read: no other path is ever opened."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir

    def ref(self, relative: str, where: str) -> ImageRef:
        if not _STORED_IMAGE.fullmatch(relative):
            raise ExportError(f"{where}: image {relative!r} is not a file of {self.out_dir / 'images'} "
                              "(images/ab/KEY.png); refusing to read it")
        return ImageRef(relative[10:-4], self.out_dir / relative)

    def by_key(self, key: str, where: str) -> ImageRef:
        return self.ref(f"images/{key[:2]}/{key}.png", where)


def conversation(messages: Sequence[dict[str, Any]], images: OutputImages, where: str) -> Conversation:
    """Stored messages (image parts name their file) as placeholders plus the images in order."""
    found = Conversation()
    for message in messages:
        content = []
        for part in message["content"]:
            if part.get("type") == "image":
                found.images.append(images.ref(part["image"], where))
                content.append({"type": "image", "text": None})
            else:
                content.append({"type": "text", "text": part.get("text") or ""})
        found.messages.append({"role": message["role"], "content": content})
    return found


def turn_spans(messages: Sequence[dict[str, Any]]) -> list[int]:
    """Where each turn starts: a turn opens with the user's message(s) that follow an assistant's (or begin)."""
    starts = []
    for i, message in enumerate(messages):
        if message["role"] == "user" and (i == 0 or messages[i - 1]["role"] != "user"):
            starts.append(i)
    return starts


_VERSION_KEYS = """
    SELECT d.dialogue_id, d.dialogue_key FROM version_dialogues vd JOIN dialogues d USING (dialogue_key)
    WHERE vd.version = $version AND vd.accepted"""

# A page's dialogues with what every query needs of them; ``export_page`` holds the page's keys in export order.
# Pair queries leave the messages out: a dialogue has many pairs, and they are read once per dialogue instead.
_PAGE_DIALOGUES = """
    SELECT p.n, p.dialogue_id, p.dialogue_key, d.seed_key, d.run_id{messages}
    FROM export_page p JOIN dialogues d USING (dialogue_key)"""


def count_dialogues(con: duckdb.DuckDBPyConnection, version: int) -> int:
    return con.execute(f"SELECT count(*) FROM ({_VERSION_KEYS})", {"version": version}).fetchall()[0][0]


def _paged(con: duckdb.DuckDBPyConnection, version: int, sql: str, params: dict[str, Any],
           on_page: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
           page_dialogues: int = PAGE_DIALOGUES) -> Iterator[list[dict[str, Any]]]:
    """Rows of ``sql`` page by page of the version's dialogues in dialogue id order. Only the keys are sorted whole
    (a temporary table); each page's query joins and aggregates ``page_dialogues`` dialogues, so DuckDB's working
    set is one page's, not the dataset's. ``on_page`` runs once the page's keys are in ``export_page``, before its
    rows are read."""
    con.execute(f"""CREATE OR REPLACE TEMP TABLE export_order AS
                    SELECT row_number() OVER (ORDER BY dialogue_id) AS n, dialogue_id, dialogue_key
                    FROM ({_VERSION_KEYS})""", {"version": version})
    total = con.execute("SELECT count(*) FROM export_order").fetchall()[0][0]
    for first in range(1, total + 1, page_dialogues):
        con.execute("CREATE OR REPLACE TEMP TABLE export_page AS SELECT * FROM export_order WHERE n BETWEEN ? AND ?",
                    [first, first + page_dialogues - 1])
        if on_page is not None:
            on_page(con)
        for batch in con.sql(sql, params=params or None).to_arrow_reader(FETCH_ROWS):
            yield batch.to_pylist()


def dialogue_rows(con: duckdb.DuckDBPyConnection, out_dir: Path, version: int) -> Iterator[DialogueRow]:
    """The version's accepted dialogues in dialogue id order, with each turn's final scores."""
    images = OutputImages(out_dir)
    # A join and a group rather than a correlated subquery: DuckDB then aggregates the page's scores only.
    sql = f"""
        SELECT v.dialogue_id, v.dialogue_key, any_value(v.messages) AS messages,
               list({turn_scores_sql("t")} ORDER BY t.turn_index) FILTER (WHERE t.turn_index IS NOT NULL) AS scores
        FROM ({_PAGE_DIALOGUES.format(messages=", d.messages")}) v LEFT JOIN turn_final_scores t USING (dialogue_key)
        GROUP BY v.n, v.dialogue_id, v.dialogue_key ORDER BY v.n"""
    for batch in _paged(con, version, sql, {}):
        for row in batch:
            where = f"dialogue {row['dialogue_id']}"
            yield DialogueRow(row["dialogue_id"], row["dialogue_key"],
                              conversation(json.loads(row["messages"]), images, where), row["scores"] or [])


# --pairs: which pairs an export holds. Refinement pairs: the kept draft of a stage against an earlier round's draft.
# Sibling pairs: two candidates of one round (seir.candidates), which share exactly their prompt.
PAIR_KINDS = {"refinement": ("refinement",), "siblings": ("sibling",), "both": ("sibling", "refinement")}


@dataclass(frozen=True)
class PairOptions:
    stages: tuple[str, ...] = BUILT_IN  # the stages whose pairs to export
    min_margin: float = 0.0
    per_turn: int | None = None  # at most this many pairs per turn, the widest margins first
    pairs: str = "both"

    def __post_init__(self) -> None:
        known = stage_names()
        unknown = [s for s in self.stages if s not in known]
        if unknown:
            raise ExportError(f"--stages {','.join(self.stages)}: choose among {', '.join(known)}")
        if self.pairs not in PAIR_KINDS:
            raise ExportError(f"--pairs {self.pairs}: choose among {', '.join(PAIR_KINDS)}")
        if self.min_margin < 0:
            raise ExportError(f"--min-margin {self.min_margin}: a margin is 0 or more (scores are 0-5)")
        if self.per_turn is not None and self.per_turn < 1:
            raise ExportError(f"--pairs-per-turn {self.per_turn}: give 1 or more (or leave it out for all pairs)")


def stage_names() -> list[str]:
    """Every stage an export can name: the built-in ones in their order, then any other registered stage."""
    return [*BUILT_IN, *sorted(name for kind, name in REGISTRY if kind == "stage" and name not in BUILT_IN)]


def _stage_order_sql(column: str) -> str:
    """Stages in the built-in order, a stage of one's own after them (by name)."""
    cases = " ".join(f"WHEN '{name}' THEN {i}" for i, name in enumerate(BUILT_IN))
    return f"CASE {column} {cases} ELSE {len(BUILT_IN)} END, {column}"


def _pair_tables_sql() -> str:
    """Every scored draft of the version's accepted dialogues, and their comparisons, each tagged with its dialogue's
    place in the export (``n``) and stored in that order: built once per pair export, so each page reads its own
    range (DuckDB skips the other row groups) instead of joining every draft, score and comparison again. A draft's
    score is the mean of its combined scores on its stage's dimensions, as ``Draft.mean_score`` ranks drafts in the
    loop (a draft's combined scores are on its stage's dimensions alone); scores are those of the run that made the
    draft (a rescore re-scores kept drafts only)."""
    return """
    CREATE OR REPLACE TEMP TABLE export_drafts AS
        SELECT o.n, dr.draft_key, dr.dialogue_key, dr.turn_index, dr.stage, dr.round, dr.candidate, dr.round_best,
               dr.text, dr.caption, dr.image_key, dr.source_key, dr.best, dr.critique, avg(s.value) AS score,
               list({'dimension': s.dimension, 'value': s.value} ORDER BY s.dimension) AS scores
        FROM export_order o JOIN drafts dr USING (dialogue_key)
        JOIN scores s ON s.draft_key = dr.draft_key AND s.scorer = 'combined' AND s.run_id = dr.run_id
        WHERE dr.ok
        GROUP BY ALL ORDER BY o.n;
    CREATE OR REPLACE TEMP TABLE export_comparisons AS
        SELECT o.n, c.* FROM export_order o JOIN comparisons c USING (dialogue_key) ORDER BY o.n;"""


def _pairs_sql(limit_per_turn: bool) -> str:
    """Pairs of drafts of one stage where the chosen one scores higher by at least the margin: (kept draft, earlier
    round's draft) for refinement pairs, two candidates of one round for sibling pairs, from the page's scored drafts
    (``page_drafts``) and comparisons (``page_comparisons``)."""
    return f"""
    WITH chosen_dialogues AS ({_PAGE_DIALOGUES.format(messages="")}),
    scored AS (SELECT * FROM page_drafts WHERE list_contains($stages, stage)),
    pairs AS (
        SELECT k.dialogue_key, k.turn_index, k.stage, k AS chosen, e AS rejected, k.score - e.score AS margin,
               CASE WHEN e.round = k.round THEN 'sibling' ELSE 'refinement' END AS kind,
               row_number() OVER (PARTITION BY k.dialogue_key, k.turn_index
                                  ORDER BY k.score - e.score DESC, {_stage_order_sql('k.stage')}, e.round,
                                           e.candidate, k.candidate) AS rank
        FROM scored k JOIN scored e ON e.dialogue_key = k.dialogue_key AND e.turn_index = k.turn_index
                                    AND e.stage = k.stage
                                    AND ((e.round < k.round AND k.best AND list_contains($kinds, 'refinement'))
                                         OR (e.round = k.round AND e.candidate != k.candidate
                                             AND list_contains($kinds, 'sibling')))
        WHERE k.score > e.score AND k.score - e.score >= $min_margin),
    preferences AS ({candidate_preferences_sql("page_comparisons")})
    SELECT c.dialogue_id, p.dialogue_key, p.turn_index, p.stage, p.chosen, p.rejected, p.margin, p.kind,
           cp.preference AS pairwise,
           (SELECT any_value(x.critique) FROM page_drafts x WHERE x.dialogue_key = p.dialogue_key AND x.round_best
              AND x.turn_index = p.turn_index AND x.stage = p.stage AND x.round = p.chosen.round - 1) AS critique,
           (SELECT any_value(a.caption) FROM page_drafts a WHERE a.dialogue_key = p.dialogue_key
              AND a.turn_index = p.turn_index AND a.stage = 'answer' AND a.best) AS kept_caption,
           (SELECT any_value(sd.text) FROM seeds sd WHERE sd.seed_key = c.seed_key) AS seed_text,
           (SELECT list([t.question, t.answer] ORDER BY t.turn_index) FROM turns t
              WHERE t.dialogue_key = p.dialogue_key AND t.turn_index < p.turn_index) AS history,
           (SELECT any_value(r.job_spec->>'$.seir.question_words') FROM runs r WHERE r.run_id = c.run_id)
              AS question_words
    FROM pairs p JOIN chosen_dialogues c USING (dialogue_key)
    LEFT JOIN preferences cp ON cp.draft_key = p.chosen.draft_key AND cp.other_key = p.rejected.draft_key
    {"WHERE p.rank <= $per_turn" if limit_per_turn else ""}
    ORDER BY c.n, p.turn_index, {_stage_order_sql('p.stage')}, p.chosen.round, p.kind, p.rejected.round,
             p.chosen.candidate, p.rejected.candidate"""


def _params(options: PairOptions) -> dict[str, Any]:
    params: dict[str, Any] = {"stages": list(options.stages), "min_margin": options.min_margin,
                              "kinds": list(PAIR_KINDS[options.pairs])}
    if options.per_turn is not None:
        params["per_turn"] = options.per_turn
    return params


def most_candidates(con: duckdb.DuckDBPyConnection) -> int:
    """The most candidates any round of this output sampled (seir.candidates; 1 when it never asked for more)."""
    return con.execute("SELECT coalesce(max(candidate), 0) + 1 FROM drafts").fetchall()[0][0]


def pair_page(con: duckdb.DuckDBPyConnection) -> int:
    """Dialogues per page of a pair export. Sibling pairs grow with the square of the candidates per round, so pages
    shrink with it and a page's pairs (which DuckDB sorts whole) stay within its memory cap; one candidate per round
    keeps the dialogues' page."""
    return max(16, PAGE_DIALOGUES // most_candidates(con) ** 2)


def pair_rows(con: duckdb.DuckDBPyConnection, out_dir: Path, version: int,
              options: PairOptions) -> Iterator[PairRow]:
    """Preference pairs from the refinement history of the version's accepted dialogues (refinement pairs, sibling
    pairs or both), in dialogue id, turn, stage and round order."""
    images = OutputImages(out_dir)
    default_words = SeirSpec.model_fields["question_words"].default
    for row, messages in stored_pairs(con, version, options):
        yield _pair(row, messages, images, default_words)


def stored_pairs(con: duckdb.DuckDBPyConnection, version: int,
                 options: PairOptions) -> Iterator[tuple[dict[str, Any], str]]:
    """Each pair as the store holds it, with its dialogue's stored messages ("" when only question pairs are asked
    for: their prompt is rebuilt from the seed), page by page (``pair_page``)."""
    # A page's messages are read once per dialogue, not carried on each of its pairs: with several candidates per
    # round a dialogue has dozens of pairs, and its messages on every one would fill DuckDB's memory with copies.
    messages: dict[str, str] = {}
    tables_built = False

    def read_page(page: duckdb.DuckDBPyConnection) -> None:
        nonlocal tables_built
        if not tables_built:  # export_order is there from the first page on
            page.execute(_pair_tables_sql())
            tables_built = True
        first, last = page.execute("SELECT min(n), max(n) FROM export_page").fetchall()[0]
        for table in ("drafts", "comparisons"):  # constant bounds: DuckDB prunes by the tables' order
            page.execute(f"CREATE OR REPLACE TEMP TABLE page_{table} AS SELECT * FROM export_{table} "
                         "WHERE n BETWEEN ? AND ?", [first, last])
        messages.clear()
        if options.stages != ("question",):  # a question pair's prompt is rebuilt
            messages.update(page.execute("SELECT p.dialogue_key, d.messages FROM export_page p "
                                         "JOIN dialogues d USING (dialogue_key)").fetchall())

    for batch in _paged(con, version, _pairs_sql(options.per_turn is not None), _params(options), read_page,
                        pair_page(con)):
        for row in batch:
            yield row, messages.get(row["dialogue_key"], "")


def _pair(row: dict[str, Any], stored_messages: str, images: OutputImages, default_words: int) -> PairRow:
    where = f"dialogue {row['dialogue_id']} turn {row['turn_index'] + 1} {row['stage']}"
    sides = [_side(row[name], images, where) for name in ("chosen", "rejected")]
    pair = PairRow(row["dialogue_id"], row["dialogue_key"], row["turn_index"], row["stage"], Conversation(),
                   sides[0], sides[1], row["margin"], row["critique"] or "", row["kind"], row["pairwise"])
    if row["stage"] == "question":
        # A question is written by the user side: its prompt is what seir's writer was asked for the first draft.
        history = History(tuple((q, a) for q, a in row["history"] or []))
        words = int(row["question_words"] or default_words)
        asked = question_messages(row["seed_text"] or "", history, words)
        pair.prompt.messages = [{"role": m["role"], "content": [{"type": "text", "text": m["content"]}]}
                                for m in asked]
        return pair
    messages = json.loads(stored_messages)
    starts = [*turn_spans(messages), len(messages)]
    if row["turn_index"] + 1 >= len(starts):
        raise ExportError(f"{where}: the dialogue's messages have no turn {row['turn_index'] + 1}")
    turn_start, turn_end = starts[row["turn_index"]], starts[row["turn_index"] + 1]
    asking = messages[:turn_start] + [m for m in messages[turn_start:turn_end] if m["role"] == "user"]
    pair.prompt = conversation(asking, images, where)
    if row["stage"] == "image":
        answer = next((m for m in messages[turn_start:turn_end] if m["role"] == "assistant"), {"content": []})
        pair.answer = " ".join(p.get("text") or "" for p in answer["content"] if p.get("type") == "text")
        pair.caption = row["kept_caption"]
        # Every round of a turn's image stage starts from the same picture, so both sides share the source.
        source = row["chosen"]["source_key"]
        pair.source = images.by_key(source, where) if source else None
    return pair


def _side(draft: dict[str, Any], images: OutputImages, where: str) -> DraftSide:
    image = images.by_key(draft["image_key"], where) if draft["image_key"] else None
    return DraftSide(draft["draft_key"], draft["round"], draft["candidate"], draft["text"] or "", draft["caption"],
                     image, draft["score"], draft["scores"])
