"""Runs and their plans: a run's record, its seeds, quarantined input and planned shards, and what resuming or
planning the next run reads back (unfinished runs, committed dialogues, prior drafts, the latest candidates)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import pyarrow as pa

from seir.engine.keys import content_key
from seir.engine.records import SEED_COLUMNS, DialogueTask, PriorDraft, Seed, StageRecord
from seir.engine.store.base import StoreBase, held, now, pages
from seir.engine.store.schema import VERSION_ROWS
from seir.operators.registry import lookup
from seir.operators.stages import BUILT_IN

# The latest version's dialogues, accepted or not, as a run's candidates (what a rescore or a dedup works on).
LATEST_CANDIDATES = """
    SELECT row_number() OVER (ORDER BY vd.dialogue_id) - 1 AS n, vd.dialogue_key, vd.dialogue_id, d.seed_key,
           d.n_turns AS turns
    FROM version_dialogues vd JOIN (SELECT DISTINCT dialogue_key, seed_key, n_turns FROM dialogues) d
         USING (dialogue_key)
    WHERE vd.version = (SELECT max(version) FROM versions)"""

# Every draft of the newest committed dialogue of each seed in $seeds (a list; NULL: the planned seeds): how many
# calls it made per role, a row per draft and role.
_PRIOR_CALLS = """
    WITH wanted AS (SELECT unnest($seeds::VARCHAR[]) AS seed_key WHERE $seeds IS NOT NULL
                    UNION ALL SELECT seed_key FROM plan_dialogues WHERE $seeds IS NULL),
         latest AS (SELECT seed_key, arg_max(dialogue_key, created_at) AS dialogue_key FROM dialogues
                    SEMI JOIN wanted USING (seed_key) GROUP BY seed_key),
         roles AS (SELECT DISTINCT call_key, role FROM model_calls),
         calls AS (SELECT l.seed_key, dr.turn_index, dr.stage, dr.round, dr.candidate, r.role, count(*) AS n
                   FROM latest l JOIN drafts dr USING (dialogue_key), unnest(dr.call_keys) AS u(call_key)
                   JOIN roles r ON r.call_key = u.call_key GROUP BY ALL)
    SELECT * FROM calls"""


def output_stages(con: Any) -> list[StageRecord]:
    """Every stage an output's runs ran, in the order they ran them (a stage first run later goes after the stages
    before it): what its exports and lineage iterate over. A run recorded before stages were (schema v10) ran the
    built-in ones."""
    found: dict[str, StageRecord] = {}
    for (stored,) in con.execute("SELECT stages FROM runs WHERE kind = 'run' ORDER BY started_at").fetchall():
        records = ([StageRecord.from_stored(s) for s in json.loads(stored)] if stored is not None
                   else [StageRecord.of(lookup("stage", name)) for name in BUILT_IN])
        for record in records:
            found.setdefault(record.name, record)
    return list(found.values()) or [StageRecord.of(lookup("stage", name)) for name in BUILT_IN]


def stage_order_sql(column: str, stages: Sequence[StageRecord]) -> str:
    """An ORDER BY term putting ``column``'s stages in the order ``stages`` has them (any other after them)."""
    cases = " ".join(f"WHEN {sql_text(stage.name)} THEN {i}" for i, stage in enumerate(stages))
    return f"CASE {column} {cases} ELSE {len(stages)} END, {column}"


def sql_text(text: str) -> str:
    """``text`` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


class RunRecords(StoreBase):
    @held
    def unfinished_run(self, kind: str, job_key: str) -> str | None:
        rows = self.con.execute(
            "SELECT run_id FROM runs WHERE kind = ? AND job_key = ? AND status = 'running' ORDER BY started_at DESC",
            [kind, job_key],
        ).fetchall()
        return rows[0][0] if rows else None

    def begin_run(self, run_id: str, kind: str, job_name: str, job_key: str, generation_key: str,
                  scoring_key: str, job_spec: dict[str, Any], engine_version: str, candidates: str | None,
                  shard_size: int | None = None, stages: Sequence[StageRecord] = ()) -> int:
        """Record a new run (with the ``stages`` it runs, if it makes drafts) and its dialogues all at once; returns
        how many shards it planned. Older unfinished runs are marked superseded: their committed shards stay, their
        plan is dropped.

        ``candidates`` is a query of the run's dialogues ``(n, dialogue_key, dialogue_id, seed_key, turns)`` (None:
        a run of no dialogues, such as a judge evaluation). With
        ``shard_size`` (a run that makes dialogues) the seeds just planned are recorded too, from the temp tables
        seed planning leaves (``planned_seeds``, ``seed_refused``, ``seed_dropped``), and the candidates not yet
        committed are packed into shards of that size, in order."""
        with self.transaction():
            self.con.execute("UPDATE runs SET status = 'superseded' WHERE status = 'running'")
            self.con.execute(
                "INSERT INTO runs BY NAME SELECT ? AS run_id, ? AS kind, ? AS job_name, ? AS job_key, "
                "? AS generation_key, ? AS scoring_key, ? AS job_spec, ? AS engine_version, ? AS started_at, "
                "'running' AS status, ? AS stages",
                [run_id, kind, job_name, job_key, generation_key, scoring_key, json.dumps(job_spec), engine_version,
                 now(), json.dumps([asdict(s) for s in stages]) if stages else None],
            )
            if candidates is not None:
                self.con.execute(f"INSERT INTO run_dialogues BY NAME SELECT ? AS run_id, * FROM ({candidates})",
                                 [run_id])
            if shard_size is None:
                return 0
            columns = ", ".join(SEED_COLUMNS)
            self.con.execute(f"INSERT INTO seeds BY NAME SELECT {columns}, flatten(turn_images) AS images, "
                             "? AS run_id FROM planned_seeds ANTI JOIN (SELECT DISTINCT seed_key FROM seeds) "
                             "USING (seed_key) ORDER BY n", [run_id])
            for table, planned in (("quarantine", "seed_refused"), ("seed_duplicates", "seed_dropped")):
                self.con.execute(f"INSERT INTO {table} BY NAME SELECT ? AS run_id, * FROM {planned}", [run_id])
            return self._pack_shards(run_id, shard_size)

    def _pack_shards(self, run_id: str, shard_size: int) -> int:
        """Consecutive uncommitted dialogues in plan order; a shard's id names its run and members."""
        packed = ("SELECT (row_number() OVER (ORDER BY rd.n) - 1) // ? AS position, rd.dialogue_key, rd.n "
                  "FROM run_dialogues rd ANTI JOIN (SELECT DISTINCT dialogue_key FROM dialogues) USING (dialogue_key) "
                  "WHERE rd.run_id = ?")
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE packing AS SELECT position, list(dialogue_key ORDER BY n) "
                         f"AS dialogue_keys FROM ({packed}) GROUP BY position", [shard_size, run_id])
        shards = 0
        for page in pages(self.con, "SELECT position, dialogue_keys FROM packing", "position", 8192):
            keys = page.column("dialogue_keys").to_pylist()
            self._insert("shards", {
                "shard_id": [content_key([run_id, members]) for members in keys], "run_id": [run_id] * len(keys),
                "position": page.column("position").to_pylist(), "dialogue_keys": keys,
                "status": ["planned"] * len(keys), "committed_at": [None] * len(keys),
            })
            shards += len(keys)
        self.con.execute("DROP TABLE packing")
        return shards

    def record_models(self, run_id: str, models: dict[str, tuple[str, dict[str, Any]]],
                      probes: Mapping[str, Any] | None = None) -> None:
        """``models``: role -> (model key, backend config); ``probes``: role -> what its model server said it can do
        (a ``ProbeReport``; None for local backends)."""
        probes = probes or {}
        with self.transaction():
            self.con.execute("DELETE FROM models WHERE run_id = ?", [run_id])
            self._insert("models", {
                "model_key": [key for key, _ in models.values()], "run_id": [run_id] * len(models),
                "role": list(models), "backend": [cfg.get("operator") for _, cfg in models.values()],
                "model_id": [cfg.get("model") for _, cfg in models.values()],
                "revision": [cfg.get("revision") for _, cfg in models.values()],
                "config": [json.dumps(cfg, default=str) for _, cfg in models.values()],
                "probe": [json.dumps(asdict(probes[role])) if probes.get(role) else None
                          for role in models],
            })

    @held
    def finish_run(self, run_id: str, summary: dict[str, Any], status: str = "finished") -> None:
        """``status``: finished, or partial (a budget stopped it; the next run makes the rest)."""
        self.con.execute(
            "UPDATE runs SET status = ?, finished_at = ?, summary = ? WHERE run_id = ?",
            [status, now(), json.dumps(summary), run_id],
        )

    @held
    def shards_left(self, run_id: str) -> tuple[int, int]:
        """(shards, dialogues) of the run not committed yet."""
        return self.con.execute("SELECT count(*), coalesce(sum(len(dialogue_keys)), 0) FROM shards "
                                "WHERE run_id = ? AND status = 'planned'", [run_id]).fetchall()[0]

    def planned_shards(self, run_id: str, batch: int = 1024) -> Iterator[tuple[str, list[DialogueTask]]]:
        """The run's shards not yet committed, in plan order, each with its dialogues' tasks; read ``batch`` shards
        at a time, so a plan of millions of dialogues is never held whole."""
        columns = ", ".join(f"s.{name}" for name in SEED_COLUMNS)
        after = -1
        while True:
            with self.held():
                rows = self.con.execute(f"""
                    WITH wanted AS (SELECT shard_id, position, unnest(dialogue_keys) AS dialogue_key,
                                           generate_subscripts(dialogue_keys, 1) AS i
                                    FROM shards WHERE run_id = $run AND status = 'planned' AND position > $after
                                    ORDER BY position LIMIT $batch)
                    SELECT w.shard_id, w.position, rd.dialogue_key, rd.dialogue_id, rd.turns, {columns}
                    FROM wanted w JOIN run_dialogues rd ON rd.run_id = $run AND rd.dialogue_key = w.dialogue_key
                    JOIN seeds s ON s.seed_key = rd.seed_key  -- one row per key: only new seeds are inserted
                    ORDER BY w.position, w.i""", {"run": run_id, "after": after, "batch": batch}).fetchall()
            if not rows:
                return
            shards: dict[str, list[DialogueTask]] = {}
            for shard_id, position, key, dialogue_id, turns, *seed in rows:
                shards.setdefault(shard_id, []).append(DialogueTask(Seed.from_row(seed), dialogue_id, key, turns))
                after = position
            yield from shards.items()

    def start_plan(self) -> None:
        """An empty ``plan_dialogues`` (a temp table: a dry run's plan is never written)."""
        self.con.execute("CREATE OR REPLACE TEMP TABLE plan_dialogues (n BIGINT, dialogue_key VARCHAR, "
                         "dialogue_id VARCHAR, seed_key VARCHAR, turns INTEGER)")

    def planned_seed_pages(self, size: int) -> Iterator[pa.Table]:
        """``planned_seeds`` (left by seed planning) in seed order, with how many turns their pictures need."""
        return pages(self.con, "SELECT n, seed_key, seed_id, turns, len(turn_images) AS shown FROM planned_seeds",
                     "n", size)

    def add_to_plan(self, rows: pa.Table) -> None:
        self.insert_arrow("plan_dialogues", rows)

    def plan_counts(self) -> tuple[int, int]:
        """(planned dialogues, those not committed yet)."""
        return self.con.execute(
            "SELECT count(*), count(*) FILTER (WHERE dialogue_key NOT IN (SELECT dialogue_key FROM dialogues)) "
            "FROM plan_dialogues").fetchall()[0]

    def pending_plan_pages(self, size: int) -> Iterator[pa.Table]:
        """(seed_key, turns) of the planned dialogues not committed yet, in seed order."""
        return pages(self.con, "SELECT n, seed_key, turns FROM plan_dialogues ANTI JOIN "
                               "(SELECT DISTINCT dialogue_key FROM dialogues) USING (dialogue_key)", "n", size)

    @held
    def generation_key_of(self, run_id: str) -> str:
        return self.con.execute("SELECT generation_key FROM runs WHERE run_id = ?", [run_id]).fetchall()[0][0]

    @held
    def plan_changes(self, examples: int = 8) -> dict[str, tuple[int, list[str]]]:
        """How the dialogues in temp table ``plan_dialogues`` relate to what the output has: per kind (reused: made
        already; regenerated: its seed was made under another config; changed_seeds: its id was made from another
        seed; new; removed: in the latest version, not planned) the count and the first ``examples`` ids."""
        self.con.execute("""
            CREATE OR REPLACE TEMP TABLE plan_kinds AS
            SELECT p.n, p.dialogue_id,
                   CASE WHEN m.dialogue_key IS NOT NULL THEN 'reused' WHEN s.seed_key IS NOT NULL THEN 'regenerated'
                        WHEN i.dialogue_id IS NOT NULL THEN 'changed_seeds' ELSE 'new' END AS kind
            FROM plan_dialogues p
            LEFT JOIN (SELECT DISTINCT dialogue_key FROM dialogues) m USING (dialogue_key)
            LEFT JOIN (SELECT DISTINCT seed_key FROM dialogues) s USING (seed_key)
            LEFT JOIN (SELECT DISTINCT dialogue_id FROM dialogues) i USING (dialogue_id)
            UNION ALL
            SELECT NULL, dialogue_id, 'removed' FROM (
                SELECT dialogue_id FROM version_dialogues WHERE version = (SELECT max(version) FROM versions)
                EXCEPT SELECT dialogue_id FROM plan_dialogues)""")
        counts = dict(self.con.execute("SELECT kind, count(*) FROM plan_kinds GROUP BY kind").fetchall())
        shown: dict[str, list[str]] = {}
        first = self.con.execute("SELECT kind, dialogue_id FROM plan_kinds QUALIFY row_number() OVER (PARTITION BY "
                                 "kind ORDER BY n, dialogue_id) <= ? ORDER BY kind, n, dialogue_id", [examples])
        for kind, dialogue_id in first.fetchall():
            shown.setdefault(kind, []).append(dialogue_id)
        self.con.execute("DROP TABLE plan_kinds")
        return {kind: (n, shown.get(kind, [])) for kind, n in counts.items()}

    def prior_drafts(self, seed_keys: Sequence[str]) -> list[PriorDraft]:
        """Every draft of the newest committed dialogue of each of these seeds, with its calls per role."""
        with self.held():
            rows = self.con.execute(f"SELECT * FROM ({_PRIOR_CALLS}) ORDER BY ALL",
                                    {"seeds": list(seed_keys)}).fetchall()
        drafts: dict[tuple[str, int, str, int, int], dict[str, int]] = {}
        for seed_key, turn, stage, round_, candidate, role, n in rows:
            drafts.setdefault((seed_key, turn, stage, round_, candidate), {})[role] = n
        return [PriorDraft(seed_key, turn, stage, round_, calls, candidate)
                for (seed_key, turn, stage, round_, candidate), calls in drafts.items()]

    @held
    def prior_call_maxima(self) -> dict[tuple[str, str], int]:
        """Over the newest committed dialogue of each seed in ``plan_dialogues``: the most calls one draft of a stage
        made, per role."""
        rows = self.con.execute(
            f"SELECT stage, role, max(n) FROM ({_PRIOR_CALLS}) GROUP BY ALL", {"seeds": None}).fetchall()
        return {(stage, role): n for stage, role, n in rows}

    @held
    def run_size(self, run_id: str) -> int:
        return self.con.execute("SELECT count(*) FROM run_dialogues WHERE run_id = ?", [run_id]).fetchall()[0][0]

    @held
    def latest_version_size(self) -> int:
        """How many dialogues the latest version considered, accepted or not (0 without a version)."""
        return self.con.execute(f"SELECT count(*) FROM ({LATEST_CANDIDATES})").fetchall()[0][0]

    @held
    def seeds_used(self, run_id: str) -> int:
        """How many of the run's planned dialogues (one per seed) are committed."""
        return self.con.execute("SELECT count(*) FROM run_dialogues SEMI JOIN dialogues USING (dialogue_key) "
                                "WHERE run_id = ?", [run_id]).fetchall()[0][0]

    @held
    def accepted_after_dedup(self, run_id: str) -> int:
        """How many of the run's dialogues its version would accept now."""
        return self.con.execute(f"SELECT count(*) FILTER (WHERE accepted) FROM ({VERSION_ROWS})",
                                {"run": run_id}).fetchall()[0][0]

    @held
    def previous_job_spec(self) -> dict[str, Any] | None:
        rows = self.con.execute("SELECT job_spec FROM runs WHERE kind = 'run' AND status = 'finished' "
                                "ORDER BY started_at DESC LIMIT 1").fetchall()
        return json.loads(rows[0][0]) if rows else None
