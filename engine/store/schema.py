"""The provenance schema: the first version's tables, the migrations that bring any database forward, and the
views that answer common questions without joins.

A new database is created at v1 and migrated like any old one, so the migration path is exercised every time.
Views are recreated on every writable open: they hold no data, and a newer seir may define them differently.
Tables and views are documented in docs/provenance.md.
"""

from __future__ import annotations

from seir.engine.records import CONTENT_DIMENSIONS, TURN_DIMENSIONS

# -- business rules the queries share: each is stated here once (the dimensions in engine/records.py), and the SQL
# that needs it is generated here.


def dialogue_text_sql(dialogue: str = "d", turns: str = "turns") -> str:
    """A dialogue's text, as dedup compares it and embeddings embed it: every turn's question, answer and caption,
    in turn order ('' for a dialogue without turns). ``dialogue`` is the alias of a row with a ``dialogue_key``;
    ``turns`` a table of turns holding at least that dialogue's (a page's own, so the ordered aggregate never spans
    every dialogue of the output)."""
    return (f"coalesce((SELECT string_agg(t.question || ' ' || t.answer || ' ' || t.caption, ' ' "
            f"ORDER BY t.turn_index) FROM {turns} t WHERE t.dialogue_key = {dialogue}.dialogue_key), '')")


def keep_score_sql(dialogue: str = "d") -> str:
    """Which of two duplicate dialogues dedup keeps: the mean of the content dimensions' final scores over all its
    turns (missing scores left out; 0 when it has none), the higher kept."""
    columns = ", ".join(f"f.{name}" for name in CONTENT_DIMENSIONS)
    return (f"coalesce((SELECT avg(x) FROM turn_final_scores f, unnest([{columns}]) AS u(x) "
            f"WHERE f.dialogue_key = {dialogue}.dialogue_key), 0)")


# The dialogues of run $run (its ``run_dialogues``) that their latest decision accepts: what the dedup pass compares.
ACCEPTED_IN_RUN = """
    SELECT d.* FROM dialogues d JOIN latest_decisions ld USING (dialogue_key)
    WHERE ld.accepted AND d.dialogue_key IN (SELECT dialogue_key FROM run_dialogues WHERE run_id = $run)"""


# Every dialogue of run $run as its version records it: accepted unless its latest decision or the run's dedup says
# otherwise, with the reason.
VERSION_ROWS = """
    SELECT d.dialogue_id, d.dialogue_key, ld.accepted AND dd.dropped_id IS NULL AS accepted,
           CASE WHEN dd.dropped_id IS NOT NULL
                THEN 'duplicate of ' || dd.matched_id || ' (' || dd.method || ', similarity '
                     || round(dd.similarity, 3) || '), kept ' || dd.kept_id
                ELSE ld.reason END AS reason,
           d.messages, d.run_id
    FROM (SELECT DISTINCT dialogue_key FROM run_dialogues WHERE run_id = $run)
    JOIN dialogues d USING (dialogue_key)
    JOIN latest_decisions ld USING (dialogue_key)
    LEFT JOIN dedup dd ON dd.run_id = $run AND dd.dropped_id = d.dialogue_id"""


def candidate_preferences_sql(comparisons: str = "comparisons") -> str:
    """How much the judge prefers ``draft_key`` over ``other_key`` (0-1, 0.5 none), per ordered pair of compared
    candidates: its win probability with a tie counting half, averaged over the orders it was asked (the rule of
    ``pairwise.preference``, which the loop ranks by). ``comparisons``: the table, or a page of it."""
    return f"""
    SELECT dialogue_key, turn_index, stage, round, draft_key, other_key, avg(share) AS preference,
           count(*) AS orders, list(call_key ORDER BY call_key) AS call_keys
    FROM (SELECT dialogue_key, turn_index, stage, round, first_key AS draft_key, second_key AS other_key,
                 p_first + p_tie / 2 AS share, call_key FROM {comparisons}
          UNION ALL
          SELECT dialogue_key, turn_index, stage, round, second_key, first_key, p_second + p_tie / 2, call_key
          FROM {comparisons})
    GROUP BY ALL"""


# What people said of each dialogue they judged (``human_verdicts``), one row per dialogue key: per turn, the mean
# over annotators of each one's latest score per dimension (a map turn -> map dimension -> score); the latest accept
# or reject of each turn (a map turn -> verdict) and of the whole dialogue. ``acceptance.HumanSays`` reads it.
HUMAN_SAYS = """
    WITH scored AS (
        SELECT dialogue_key, turn_index, map(list(dimension), list(score)) AS scores
        FROM (SELECT dialogue_key, turn_index, dimension, avg(score) AS score FROM human_scores GROUP BY ALL)
        GROUP BY ALL),
    said AS (
        SELECT dialogue_key, turn_index, arg_max(verdict, created_at) AS verdict
        FROM human_verdicts WHERE verdict IS NOT NULL GROUP BY ALL),
    keys AS (SELECT DISTINCT dialogue_key FROM human_verdicts)
    SELECT k.dialogue_key,
           (SELECT map(list(s.turn_index), list(s.scores)) FROM scored s WHERE s.dialogue_key = k.dialogue_key)
               AS scores,
           (SELECT map(list(v.turn_index), list(v.verdict)) FROM said v
            WHERE v.dialogue_key = k.dialogue_key AND v.turn_index IS NOT NULL) AS turns,
           (SELECT any_value(v.verdict) FROM said v WHERE v.dialogue_key = k.dialogue_key AND v.turn_index IS NULL)
               AS dialogue
    FROM keys k"""


def turn_scores_sql(turns: str = "t") -> str:
    """One exported turn's final scores: a struct of its index and each content dimension."""
    fields = ", ".join(f"'{name}': {turns}.{name}" for name in CONTENT_DIMENSIONS)
    return f"{{'turn': {turns}.turn_index, {fields}}}"


SCHEMA_V1 = """
CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE runs (
    run_id VARCHAR PRIMARY KEY, kind VARCHAR, job_name VARCHAR, job_key VARCHAR, generation_key VARCHAR,
    job_spec JSON, engine_version VARCHAR, started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ, status VARCHAR,
    summary JSON);
CREATE TABLE models (
    model_key VARCHAR, run_id VARCHAR, role VARCHAR, backend VARCHAR, model_id VARCHAR, revision VARCHAR,
    config JSON);
CREATE TABLE seeds (
    seed_key VARCHAR, seed_id VARCHAR, source VARCHAR, text VARCHAR, topic VARCHAR, template VARCHAR,
    images VARCHAR[], turns INTEGER, run_id VARCHAR);
CREATE TABLE shards (
    shard_id VARCHAR PRIMARY KEY, run_id VARCHAR, position INTEGER, dialogue_keys VARCHAR[], status VARCHAR,
    committed_at TIMESTAMPTZ);
CREATE TABLE dialogues (
    dialogue_key VARCHAR, dialogue_id VARCHAR, seed_key VARCHAR, generation_key VARCHAR, run_id VARCHAR,
    shard_id VARCHAR, accepted BOOLEAN, reason VARCHAR, n_turns INTEGER, messages JSON, created_at TIMESTAMPTZ);
CREATE TABLE turns (
    dialogue_key VARCHAR, turn_index INTEGER, question VARCHAR, answer VARCHAR, caption VARCHAR,
    image_key VARCHAR, text_content DOUBLE, image_content DOUBLE, image_quality DOUBLE,
    image_text_synergy DOUBLE, question_score DOUBLE, accepted BOOLEAN, failing VARCHAR[], run_id VARCHAR);
CREATE TABLE drafts (
    draft_key VARCHAR, dialogue_key VARCHAR, turn_index INTEGER, stage VARCHAR, round INTEGER, text VARCHAR,
    caption VARCHAR, image_key VARCHAR, ok BOOLEAN, reason VARCHAR, critique VARCHAR, passed BOOLEAN,
    best BOOLEAN, call_keys VARCHAR[], run_id VARCHAR);
CREATE TABLE scores (
    draft_key VARCHAR, dialogue_key VARCHAR, dimension VARCHAR, scorer VARCHAR, value DOUBLE, model_id VARCHAR,
    raw JSON, run_id VARCHAR);
CREATE TABLE images (
    image_key VARCHAR PRIMARY KEY, path VARCHAR, width INTEGER, height INTEGER, bytes BIGINT, run_id VARCHAR);
CREATE TABLE model_calls (
    call_key VARCHAR, run_id VARCHAR, shard_id VARCHAR, role VARCHAR, method VARCHAR, model_id VARCHAR,
    revision VARCHAR, tokens_in INTEGER, tokens_out INTEGER, latency_ms DOUBLE, batch_id VARCHAR,
    batch_size INTEGER, cached BOOLEAN, error VARCHAR, created_at TIMESTAMPTZ);
CREATE TABLE call_outputs (call_key VARCHAR PRIMARY KEY, request JSON, output JSON);
CREATE TABLE quarantine (run_id VARCHAR, source VARCHAR, line INTEGER, field VARCHAR, reason VARCHAR, raw VARCHAR);
CREATE TABLE dedup (
    run_id VARCHAR, dropped_id VARCHAR, kept_id VARCHAR, method VARCHAR, similarity DOUBLE,
    created_at TIMESTAMPTZ);
CREATE TABLE versions (
    version INTEGER PRIMARY KEY, run_id VARCHAR, created_at TIMESTAMPTZ, job_key VARCHAR,
    engine_version VARCHAR, n_dialogues INTEGER, path VARCHAR);
CREATE TABLE version_dialogues (version INTEGER, dialogue_id VARCHAR, dialogue_key VARCHAR);
"""

# Migrations are frozen: they name the columns of the version they start from, not today's dimensions.

# v1 -> v2: scores and acceptance can change after generation (``seir rescore``), so they move out of the
# generated rows into tables with one row per decision, each tagged with the run that made it.
_TO_V2 = """
CREATE TABLE turn_scores (dialogue_key VARCHAR, turn_index INTEGER, dimension VARCHAR, value DOUBLE,
                          run_id VARCHAR);
INSERT INTO turn_scores
    SELECT dialogue_key, turn_index, dimension, value, run_id FROM (
        UNPIVOT (SELECT dialogue_key, turn_index, run_id, text_content, image_content, image_quality,
                        image_text_synergy, question_score AS question FROM turns)
        ON text_content, image_content, image_quality, image_text_synergy, question
        INTO NAME dimension VALUE value);
CREATE TABLE decisions (dialogue_key VARCHAR, run_id VARCHAR, accepted BOOLEAN, reason VARCHAR,
                        turns_accepted BOOLEAN[], decided_at TIMESTAMPTZ);
INSERT INTO decisions
    SELECT d.dialogue_key, d.run_id, d.accepted, d.reason,
           coalesce((SELECT list(t.accepted ORDER BY t.turn_index) FROM turns t
                     WHERE t.dialogue_key = d.dialogue_key), []),
           d.created_at
    FROM dialogues d;
-- Generation failures are facts about the dialogue; threshold verdicts are decisions that can change.
ALTER TABLE dialogues ADD COLUMN failure VARCHAR DEFAULT '';
UPDATE dialogues SET failure = reason WHERE reason LIKE '%gave no usable draft%';
ALTER TABLE dialogues DROP COLUMN accepted;
ALTER TABLE dialogues DROP COLUMN reason;
ALTER TABLE turns DROP COLUMN text_content;
ALTER TABLE turns DROP COLUMN image_content;
ALTER TABLE turns DROP COLUMN image_quality;
ALTER TABLE turns DROP COLUMN image_text_synergy;
ALTER TABLE turns DROP COLUMN question_score;
ALTER TABLE turns DROP COLUMN accepted;
ALTER TABLE turns DROP COLUMN failing;
ALTER TABLE dedup ADD COLUMN matched_id VARCHAR;
ALTER TABLE versions ADD COLUMN kind VARCHAR;
UPDATE versions SET kind = 'run';
-- A version lists every candidate dialogue, rejected ones too, so a later rescore knows what to re-decide.
ALTER TABLE version_dialogues ADD COLUMN accepted BOOLEAN DEFAULT true;
ALTER TABLE runs ADD COLUMN scoring_key VARCHAR;
CREATE TABLE dialogue_embeddings (dialogue_key VARCHAR, embed_key VARCHAR, vector FLOAT[], run_id VARCHAR);
"""

# v2 -> v3: seeds dropped as near-duplicates of other seeds, before any model call. Model calls keep their keys:
# a call key names exactly what determined the call, so every committed answer stays valid in the cache.
_TO_V3 = """
CREATE TABLE seed_duplicates (run_id VARCHAR, seed_key VARCHAR, seed_id VARCHAR, source VARCHAR, text VARCHAR,
                              kept_seed_key VARCHAR, kept_seed_id VARCHAR, method VARCHAR, similarity DOUBLE);
"""

# v3 -> v4: seeds place their images per user turn, and each model call's input images are listed, in the order
# the request showed them (a request stores images by key, so earlier calls' lists are read out of their requests).
# Dialogue-level scores (InterMT's five dimensions, judged at the end of a dialogue) get their own table.
_TO_V4 = """
ALTER TABLE seeds ADD COLUMN IF NOT EXISTS turn_images VARCHAR[][];
UPDATE seeds SET turn_images = CASE WHEN len(images) > 0 THEN [images] ELSE [] END WHERE turn_images IS NULL;
CREATE TABLE IF NOT EXISTS call_images (call_key VARCHAR, position INTEGER, image_key VARCHAR,
                                        PRIMARY KEY (call_key, position));
CREATE TABLE IF NOT EXISTS dialogue_scores (dialogue_key VARCHAR, dimension VARCHAR, scorer VARCHAR, value DOUBLE,
                                            model_id VARCHAR, raw JSON, critique VARCHAR, call_keys VARCHAR[],
                                            run_id VARCHAR);
INSERT OR IGNORE INTO call_images
    SELECT call_key, generate_subscripts(found, 1) - 1, unnest(found)
    FROM (SELECT call_key, regexp_extract_all(CAST(request AS VARCHAR),
                                              '"__bytes_xxh3_128__":\\s*"([0-9a-f]{32})"', 1) AS found
          FROM call_outputs);
"""

# v4 -> v5: a version written by a run its budget stopped early is marked partial.
_TO_V5 = """
ALTER TABLE versions ADD COLUMN IF NOT EXISTS partial BOOLEAN DEFAULT false;
"""

# v5 -> v6: what each endpoint role's model server said it can do (probed when the pool starts), beside the model;
# and which method read each score (openai_chat.SCORE_METHODS; NULL for scores not read from a judge's answer
# distribution, and for combined rows).
_TO_V6 = """
ALTER TABLE models ADD COLUMN IF NOT EXISTS probe JSON;
ALTER TABLE scores ADD COLUMN IF NOT EXISTS method VARCHAR;
"""

# v6 -> v7: a run's dialogues are a table (a run's plan: every current seed's dialogue in seed order; a rescore's or
# dedup's: the candidates it works on), so no step holds millions of keys in memory. A run an older seir left
# unfinished kept its plan in memory only: it is superseded (its committed shards stay; the next run reuses them).
_TO_V7 = """
CREATE TABLE IF NOT EXISTS run_dialogues (run_id VARCHAR, n BIGINT, dialogue_key VARCHAR, dialogue_id VARCHAR,
                                          seed_key VARCHAR, turns INTEGER);
UPDATE runs SET status = 'superseded' WHERE status = 'running';
"""

# v7 -> v8: best-of-N. Each draft is one of its round's candidates (0 for every draft made before, each its round's
# only one, so its round's best), and the judge's pairwise comparisons of candidates are kept, one row per order asked.
_TO_V8 = """
ALTER TABLE drafts ADD COLUMN IF NOT EXISTS candidate INTEGER DEFAULT 0;
ALTER TABLE drafts ADD COLUMN IF NOT EXISTS round_best BOOLEAN DEFAULT true;
CREATE TABLE IF NOT EXISTS comparisons (dialogue_key VARCHAR, turn_index INTEGER, stage VARCHAR, round INTEGER,
                                        first_key VARCHAR, second_key VARCHAR, p_first DOUBLE, p_second DOUBLE,
                                        p_tie DOUBLE, call_key VARCHAR, run_id VARCHAR);
"""

# v8 -> v9: edits of the user's pictures. An image draft and a turn name the user's picture their image was edited
# from (NULL for every picture made before: each was made from its caption alone).
_TO_V9 = """
ALTER TABLE drafts ADD COLUMN IF NOT EXISTS source_key VARCHAR;
ALTER TABLE turns ADD COLUMN IF NOT EXISTS source_key VARCHAR;
"""

# v9 -> v10: stages as units. A run records the stages it ran (records.StageRecord, in order); NULL for the runs
# before, which ran the built-in question, answer and image stages.
_TO_V10 = """
ALTER TABLE runs ADD COLUMN IF NOT EXISTS stages JSON;
"""

# v10 -> v11: people's verdicts (``seir view``, ``seir verdicts import``). One row per verdict, never updated: the
# latest of an annotator on a target is the one in force. A verdict names the dialogue and draft by content key, so it
# stays on what it judged whatever a refresh makes later. ``turn_index`` NULL: the whole dialogue.
_TO_V11 = """
CREATE TABLE IF NOT EXISTS human_verdicts (
    verdict_key VARCHAR PRIMARY KEY, dialogue_id VARCHAR, dialogue_key VARCHAR, turn_index INTEGER, stage VARCHAR,
    draft_key VARCHAR, dimension VARCHAR, score DOUBLE, verdict VARCHAR, prefer VARCHAR, other VARCHAR,
    note VARCHAR, annotator VARCHAR, source VARCHAR, created_at TIMESTAMPTZ);
"""

# MIGRATIONS[n] brings a database from version n to n + 1.
MIGRATIONS: dict[int, str] = {1: _TO_V2, 2: _TO_V3, 3: _TO_V4, 4: _TO_V5, 5: _TO_V6, 6: _TO_V7, 7: _TO_V8,
                              8: _TO_V9, 9: _TO_V10, 10: _TO_V11}
SCHEMA_VERSION = 1 + len(MIGRATIONS)

VIEWS = """
CREATE OR REPLACE VIEW latest_decisions AS
    SELECT dialogue_key, arg_max(accepted, decided_at) AS accepted, arg_max(reason, decided_at) AS reason,
           arg_max(turns_accepted, decided_at) AS turns_accepted, arg_max(run_id, decided_at) AS run_id,
           max(decided_at) AS decided_at
    FROM decisions GROUP BY dialogue_key;

CREATE OR REPLACE VIEW turn_final_scores AS
    SELECT dialogue_key, turn_index,
           """ + ",\n           ".join(
    f"arg_max(value, run_seq) FILTER (WHERE dimension = '{name}') AS {name}" for name in TURN_DIMENSIONS) + """
    FROM (SELECT ts.*, r.started_at AS run_seq FROM turn_scores ts JOIN runs r USING (run_id))
    GROUP BY dialogue_key, turn_index;

CREATE OR REPLACE VIEW dialogue_final_scores AS
    SELECT dialogue_key, dimension, arg_max(value, r.started_at) AS value
    FROM dialogue_scores JOIN runs r USING (run_id)
    WHERE scorer = 'combined'
    GROUP BY dialogue_key, dimension;

CREATE OR REPLACE VIEW dataset_latest AS
    SELECT vd.version, d.dialogue_id, d.dialogue_key, s.seed_id, s.text AS seed_text, d.n_turns,
           d.messages, d.run_id AS generated_by
    FROM version_dialogues vd
    JOIN dialogues d USING (dialogue_key)
    JOIN seeds s USING (seed_key)
    WHERE vd.accepted AND vd.version = (SELECT max(version) FROM versions);

-- The score each annotator gave last on each target (a turn's dimension, and the draft where one was named): the one
-- in force. Acceptance (``HUMAN_SAYS``) and the judge's agreement with people average them over annotators.
CREATE OR REPLACE VIEW human_scores AS
    SELECT dialogue_key, dialogue_id, turn_index, dimension, draft_key, annotator,
           arg_max(score, created_at) AS score, max(created_at) AS created_at
    FROM human_verdicts WHERE score IS NOT NULL
    GROUP BY dialogue_key, dialogue_id, turn_index, dimension, draft_key, annotator;

CREATE OR REPLACE VIEW refinement_history AS
    SELECT d.dialogue_id, dr.dialogue_key, dr.turn_index, dr.stage, dr.round, dr.candidate, dr.round_best, dr.ok,
           dr.passed, dr.best,
           dr.text, dr.image_key, dr.source_key, dr.critique, dr.reason,
           (SELECT map(list(s.dimension ORDER BY s.dimension), list(s.value ORDER BY s.dimension))
            FROM scores s WHERE s.draft_key = dr.draft_key AND s.scorer = 'combined'
              AND s.run_id = dr.run_id) AS scores,
           dr.run_id
    FROM drafts dr JOIN dialogues d USING (dialogue_key);

CREATE OR REPLACE VIEW candidate_preferences AS """ + candidate_preferences_sql() + """;

CREATE OR REPLACE VIEW model_usage AS
    SELECT c.run_id, c.role, c.method,
           count(*) AS requests,
           count(*) FILTER (WHERE NOT c.cached) AS computed,
           count(*) FILTER (WHERE c.cached) AS cached,
           count(*) FILTER (WHERE c.error IS NOT NULL) AS failed,
           count(DISTINCT c.batch_id) FILTER (WHERE NOT c.cached) AS batches,
           sum(c.tokens_in) AS tokens_in, sum(c.tokens_out) AS tokens_out,
           b.busy_s,
           b.busy_s * coalesce(TRY_CAST(json_extract(r.job_spec, '$.roles.' || c.role || '.num_gpus') AS DOUBLE), 0)
               AS gpu_s
    FROM model_calls c
    JOIN runs r USING (run_id)
    LEFT JOIN (SELECT run_id, role, method, sum(latency_ms) / 1000 AS busy_s
               FROM (SELECT run_id, role, method, batch_id, any_value(latency_ms) AS latency_ms FROM model_calls
                     WHERE NOT cached GROUP BY ALL)
               GROUP BY ALL) b USING (run_id, role, method)
    GROUP BY c.run_id, c.role, c.method, b.busy_s, r.job_spec;
"""
