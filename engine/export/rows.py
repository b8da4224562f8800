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
from seir.engine.keys import BYTES_REFERENCE
from seir.engine.records import StageRecord
from seir.engine.store import candidate_preferences_sql, sql_text, stage_order_sql, turn_scores_sql

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
    # What the stage's writer was asked, as recorded (messages, pictures and trimming as sent): for sibling pairs
    # their round's request, for refinement pairs the first round's; for a stage whose writer is not asked in words
    # (image), the conversation up to the turn.
    prompt: Conversation
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
# Sibling pairs: two candidates of one round (seir.candidates), which share exactly their prompt. Human pairs: a draft
# a person preferred over another (``human_verdicts``), whatever the judge scored them.
PAIR_KINDS = {"refinement": ("refinement",), "siblings": ("sibling",), "both": ("sibling", "refinement"),
              "human": ("human",), "all": ("sibling", "refinement", "human")}


@dataclass(frozen=True)
class PairOptions:
    stages: tuple[StageRecord, ...]  # the stages whose pairs to export, in the output's order (``pair_stages``)
    min_margin: float = 0.0
    per_turn: int | None = None  # at most this many pairs per turn, the widest margins first
    pairs: str = "both"

    @property
    def names(self) -> list[str]:
        return [stage.name for stage in self.stages]


def pair_stages(known: Sequence[StageRecord], asked: Sequence[str] | None,
                text_only: bool) -> tuple[StageRecord, ...]:
    """The stages an export takes pairs of: those ``asked`` for (default: every stage the output ran whose pairs the
    format can hold; ``text_only``: formats whose chosen and rejected are text), in the output's stage order."""
    by_name = {stage.name: stage for stage in known}
    unknown = [name for name in asked or () if name not in by_name]
    if unknown:
        raise ExportError(f"--stages {','.join(asked or ())}: this output's stages are {', '.join(by_name)}")
    chosen = [stage for stage in known if (stage.name in asked if asked else not (text_only and stage.image_pairs))]
    if text_only and any(stage.image_pairs for stage in chosen):
        raise ExportError("this format holds text pairs only (its chosen and rejected are text): export the pairs of "
                          f"{', '.join(s.name for s in chosen if s.image_pairs)} with --format trl-dpo "
                          "(image_pairs/), or leave them out of --stages")
    return tuple(chosen)


def _prompt_call_sql(column: str, stages: Sequence[StageRecord]) -> str:
    """The position (from 1) in a draft's call keys of its stage's pair-prompt request; NULL for stages without."""
    cases = " ".join(f"WHEN {sql_text(stage.name)} THEN {stage.prompt_call + 1}" for stage in stages
                     if stage.prompt_call is not None)
    return f"CASE {column} {cases} END" if cases else "NULL::INTEGER"


def _caption_stage(stages: Sequence[StageRecord]) -> str:
    """The stage whose kept caption an image pair shows as the context both its pictures were made for: the first
    that writes a caption without a picture ("" when none does)."""
    return next((s.name for s in stages if "caption" in s.writes and not s.image_pairs), "")


def _pair_tables_sql(stages: Sequence[StageRecord]) -> str:
    """Every scored draft of the version's accepted dialogues, and their comparisons, each tagged with its dialogue's
    place in the export (``n``) and stored in that order: built once per pair export, so each page reads its own
    range (DuckDB skips the other row groups) instead of joining every draft, score and comparison again. A draft's
    score is the mean of its combined scores on its stage's dimensions, as ``Draft.mean_score`` ranks drafts in the
    loop (a draft's combined scores are on its stage's dimensions alone); scores are those of the run that made the
    draft (a rescore re-scores kept drafts only). ``export_prompts`` names, per turn, stage and round, the recorded
    writer request its candidates shared (the first candidate's whose answer is recorded): a pair's prompt."""
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
        SELECT o.n, c.* FROM export_order o JOIN comparisons c USING (dialogue_key) ORDER BY o.n;
    CREATE OR REPLACE TEMP TABLE export_human AS
        SELECT DISTINCT o.n, h.dialogue_key, h.prefer AS chosen_key, h.other AS rejected_key
        FROM export_order o JOIN human_verdicts h USING (dialogue_key) WHERE h.prefer IS NOT NULL ORDER BY o.n;
    CREATE OR REPLACE TEMP TABLE export_prompts AS
        SELECT n, dialogue_key, turn_index, stage, round, arg_min(call_key, candidate) AS call_key
        FROM (SELECT o.n, dr.dialogue_key, dr.turn_index, dr.stage, dr.round, dr.candidate,
                     dr.call_keys[{prompt_call}] AS call_key
              FROM export_order o JOIN drafts dr USING (dialogue_key))
        SEMI JOIN call_outputs USING (call_key)
        GROUP BY ALL ORDER BY n;""".replace("{prompt_call}", _prompt_call_sql("dr.stage", stages))


def _pairs_sql(limit_per_turn: bool, stages: Sequence[StageRecord]) -> str:
    """Pairs of drafts of one stage where the chosen one scores higher by at least the margin: (kept draft, earlier
    round's draft) for refinement pairs, two candidates of one round for sibling pairs, from the page's scored drafts
    (``page_drafts``) and comparisons (``page_comparisons``)."""
    return f"""
    WITH chosen_dialogues AS ({_PAGE_DIALOGUES.format(messages="")}),
    scored AS (SELECT * FROM page_drafts WHERE list_contains($stages, stage)),
    judged AS (
        SELECT k, e, CASE WHEN e.round = k.round THEN 'sibling' ELSE 'refinement' END AS kind
        FROM scored k JOIN scored e ON e.dialogue_key = k.dialogue_key AND e.turn_index = k.turn_index
                                    AND e.stage = k.stage
                                    AND ((e.round < k.round AND k.best AND list_contains($kinds, 'refinement'))
                                         OR (e.round = k.round AND e.candidate != k.candidate
                                             AND list_contains($kinds, 'sibling')))
        WHERE k.score > e.score AND k.score - e.score >= $min_margin
        UNION ALL
        -- a person's preference over a named draft, or over every other candidate of its round
        SELECT k, e, 'human' FROM page_human h JOIN scored k ON k.draft_key = h.chosen_key
        JOIN scored e ON e.dialogue_key = k.dialogue_key AND e.turn_index = k.turn_index AND e.stage = k.stage
                     AND (e.draft_key = h.rejected_key
                          OR (h.rejected_key IS NULL AND e.round = k.round AND e.candidate != k.candidate))
        WHERE list_contains($kinds, 'human')),
    pairs AS (
        SELECT k.dialogue_key, k.turn_index, k.stage, k AS chosen, e AS rejected, k.score - e.score AS margin, kind,
               row_number() OVER (PARTITION BY k.dialogue_key, k.turn_index
                                  ORDER BY k.score - e.score DESC, {stage_order_sql('k.stage', stages)}, e.round,
                                           e.candidate, k.candidate) AS rank
        FROM judged),
    preferences AS ({candidate_preferences_sql("page_comparisons")})
    SELECT c.dialogue_id, p.dialogue_key, p.turn_index, p.stage, p.chosen, p.rejected, p.margin, p.kind,
           cp.preference AS pairwise,
           (SELECT any_value(x.critique) FROM page_drafts x WHERE x.dialogue_key = p.dialogue_key AND x.round_best
              AND x.turn_index = p.turn_index AND x.stage = p.stage AND x.round = p.chosen.round - 1) AS critique,
           (SELECT any_value(a.caption) FROM page_drafts a WHERE a.dialogue_key = p.dialogue_key
              AND a.turn_index = p.turn_index AND a.stage = {sql_text(_caption_stage(stages))} AND a.best)
              AS kept_caption
    FROM pairs p JOIN chosen_dialogues c USING (dialogue_key)
    LEFT JOIN preferences cp ON cp.draft_key = p.chosen.draft_key AND cp.other_key = p.rejected.draft_key
    {"WHERE p.rank <= $per_turn" if limit_per_turn else ""}
    ORDER BY c.n, p.turn_index, {stage_order_sql('p.stage', stages)}, p.chosen.round, p.kind, p.rejected.round,
             p.chosen.candidate, p.rejected.candidate"""


def _params(options: PairOptions) -> dict[str, Any]:
    params: dict[str, Any] = {"stages": options.names, "min_margin": options.min_margin,
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
    by_name = {stage.name: stage for stage in options.stages}
    for row, messages, request in stored_pairs(con, version, options):
        yield _pair(row, by_name[row["stage"]], messages, request, images)


def stored_pairs(con: duckdb.DuckDBPyConnection, version: int,
                 options: PairOptions) -> Iterator[tuple[dict[str, Any], str, str | None]]:
    """Each pair as the store holds it, with its dialogue's stored messages and the recorded writer request that is
    its prompt (None for a stage whose pairs' prompt is the dialogue so far), page by page (``pair_page``)."""
    # A page's messages and requests are read once per dialogue and turn, not carried on each of its pairs: with
    # several candidates per round a turn has dozens of pairs, and a long dialogue's requests on every one would
    # fill DuckDB's memory with copies.
    messages: dict[str, str] = {}
    requests: dict[tuple[str, int, str, int], str] = {}
    tables_built = False

    def read_page(page: duckdb.DuckDBPyConnection) -> None:
        nonlocal tables_built
        if not tables_built:  # export_order is there from the first page on
            page.execute(_pair_tables_sql(options.stages))
            tables_built = True
        first, last = page.execute("SELECT min(n), max(n) FROM export_page").fetchall()[0]
        # constant bounds: DuckDB prunes by the tables' order
        for table in ("drafts", "comparisons", "prompts", "human"):
            page.execute(f"CREATE OR REPLACE TEMP TABLE page_{table} AS SELECT * FROM export_{table} "
                         "WHERE n BETWEEN ? AND ?", [first, last])
        messages.clear()
        requests.clear()
        if any(stage.prompt_call is None for stage in options.stages):  # their prompt is the dialogue so far
            messages.update(page.execute("SELECT p.dialogue_key, d.messages FROM export_page p "
                                         "JOIN dialogues d USING (dialogue_key)").fetchall())
        for key, turn, stage, round_, request in page.execute(
                "SELECT p.dialogue_key, p.turn_index, p.stage, p.round, c.request FROM page_prompts p "
                "JOIN call_outputs c USING (call_key) WHERE list_contains(?, p.stage)", [options.names]).fetchall():
            requests[(key, turn, stage, round_)] = request

    sql = _pairs_sql(options.per_turn is not None, options.stages)
    for batch in _paged(con, version, sql, _params(options), read_page, pair_page(con)):
        for row in batch:
            key = row["dialogue_key"]
            # Two drafts of one round were both written for its request; a pair across rounds is prompted by the task
            # as first asked (round 0's request), which the later draft answers better.
            asked_in = row["chosen"]["round"] if row["chosen"]["round"] == row["rejected"]["round"] else 0
            yield row, messages.get(key, ""), requests.get((key, row["turn_index"], row["stage"], asked_in))


def _pair(row: dict[str, Any], stage: StageRecord, stored_messages: str, request: str | None,
          images: OutputImages) -> PairRow:
    where = f"dialogue {row['dialogue_id']} turn {row['turn_index'] + 1} {row['stage']}"
    sides = [_side(row[name], images, where) for name in ("chosen", "rejected")]
    pair = PairRow(row["dialogue_id"], row["dialogue_key"], row["turn_index"], row["stage"], Conversation(),
                   sides[0], sides[1], row["margin"], row["critique"] or "", row["kind"], row["pairwise"])
    if stage.prompt_call is not None:
        # The stage's writer was asked in words: its pairs' prompt is that recorded request, as it was sent.
        if request is None:
            raise ExportError(f"{where}: the writer's request for this stage is not in call_outputs, so its pairs "
                              "have no prompt; run `seir check` on the output")
        pair.prompt = asked_conversation(json.loads(request)["messages"], images, where)
        return pair
    messages = json.loads(stored_messages)
    starts = [*turn_spans(messages), len(messages)]
    if row["turn_index"] + 1 >= len(starts):
        raise ExportError(f"{where}: the dialogue's messages have no turn {row['turn_index'] + 1}")
    turn_start, turn_end = starts[row["turn_index"]], starts[row["turn_index"] + 1]
    asking = messages[:turn_start] + [m for m in messages[turn_start:turn_end] if m["role"] == "user"]
    pair.prompt = conversation(asking, images, where)
    answer = next((m for m in messages[turn_start:turn_end] if m["role"] == "assistant"), {"content": []})
    pair.answer = " ".join(p.get("text") or "" for p in answer["content"] if p.get("type") == "text")
    pair.caption = row["kept_caption"]
    # Every round of a turn's image stage starts from the same picture, so both sides share the source.
    source = row["chosen"]["source_key"]
    pair.source = images.by_key(source, where) if source else None
    return pair


def asked_conversation(messages: Sequence[dict[str, Any]], images: OutputImages, where: str) -> Conversation:
    """A recorded chat request's messages (text as a string or parts; pictures by content key) as placeholders plus
    the images in order: the exact messages, pictures and trimming the writer was sent."""
    found = Conversation()
    for message in messages:
        parts = message["content"]
        if isinstance(parts, str):
            parts = [{"type": "text", "text": parts}]
        content = []
        for part in parts:
            if part.get("type") == "image":
                found.images.append(images.by_key(part["image"][BYTES_REFERENCE], where))
                content.append({"type": "image", "text": None})
            else:
                content.append({"type": "text", "text": part.get("text") or ""})
        found.messages.append({"role": message["role"], "content": content})
    return found


def _side(draft: dict[str, Any], images: OutputImages, where: str) -> DraftSide:
    image = images.by_key(draft["image_key"], where) if draft["image_key"] else None
    return DraftSide(draft["draft_key"], draft["round"], draft["candidate"], draft["text"] or "", draft["caption"],
                     image, draft["score"], draft["scores"])
