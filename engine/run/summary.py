"""A run's progress while its shards run (a meter over its dialogues, a line at every commit), and the summary at
its end, read from the store."""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TextIO

from seir.engine.progress import PLAIN_EVERY_S, Meter
from seir.engine.records import Dialogue, Ledger
from seir.engine.store import Decision
from seir.operators.context import DOES_NOT_FIT_ROLE


@dataclass
class Progress:
    """A run's shards: a meter over its dialogues, and a line of seir's own at every shard commit."""

    total_dialogues: int
    total_shards: int
    stream: TextIO = sys.stderr
    every_s: float = PLAIN_EVERY_S
    shards: int = 0
    dialogues: int = 0
    accepted: int = 0
    turns: int = 0
    turns_accepted: int = 0
    stage_runs: int = 0  # (turn, stage) pairs finished
    drafts: int = 0
    calls: Counter[str] = field(default_factory=Counter)
    cached: Counter[str] = field(default_factory=Counter)
    activity: str = "starting"  # the latest batched step, shown between commits

    def __post_init__(self) -> None:
        self.meter = Meter("run", self.total_dialogues, "dialogues", self.stream, self.detail, self.every_s)

    def __enter__(self) -> Progress:
        self.meter.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.meter.__exit__(*exc)

    def note_round(self, turn_index: int, stage: str, round_: int, active: int) -> None:
        self.activity = f"turn {turn_index + 1} {stage} round {round_} ({active} dialogues)"

    def shard_committed(self, dialogues: list[Dialogue], decided: list[Decision], ledger: Ledger) -> None:
        self.shards += 1
        self.dialogues += len(dialogues)
        for d, decision in zip(dialogues, decided, strict=True):
            self.accepted += decision.accepted
            self.turns += len(d.turns)
            self.turns_accepted += sum(decision.turns_accepted)
            self.drafts += len(d.drafts)
            self.stage_runs += len({(x.turn_index, x.stage) for x in d.drafts})
        for call in ledger.calls:
            (self.cached if call.cached else self.calls)[call.role] += 1
        self.meter.done = self.dialogues
        if self.meter.tty:
            self.meter.show()
        else:
            self.meter.show(force=True)  # a commit is worth a line of its own in a log

    def line(self) -> str:
        return self.meter.line()

    def detail(self) -> str:
        rounds = self.drafts / self.stage_runs if self.stage_runs else 0.0
        roles = " ".join(f"{role}={n}" + (f"(+{self.cached[role]} cached)" if self.cached[role] else "")
                         for role, n in sorted((self.calls + self.cached).items()))
        return (f"shards {self.shards}/{self.total_shards} | {self.accepted} accepted | turns accepted "
                f"{self.turns_accepted}/{self.turns} | drafts per stage {rounds:.2f} | calls {roles or '-'} | "
                f"working on {self.activity}")


def run_summary(con: Any, run_id: str) -> dict[str, Any]:
    """What a run did, from the provenance store: the same numbers a user gets with SQL."""
    status = dict(con.execute(
        """SELECT CASE WHEN accepted THEN 'accepted' ELSE 'rejected' END, count(*) FROM version_dialogues
           WHERE version = (SELECT version FROM versions WHERE run_id = ?) GROUP BY ALL""", [run_id]).fetchall())
    quarantined = con.execute("SELECT count(*) FROM quarantine WHERE run_id = ?", [run_id]).fetchall()[0][0]
    by_round = con.execute(
        """SELECT s.dimension, d.round, round(avg(s.value), 3), count(*) FROM scores s
           JOIN drafts d USING (draft_key) WHERE s.run_id = ? AND s.scorer = 'combined'
           GROUP BY ALL ORDER BY ALL""", [run_id]).fetchall()
    calls = con.execute(
        """SELECT role, count(*) FILTER (WHERE NOT cached), count(*) FILTER (WHERE cached),
                  count(DISTINCT batch_id) FILTER (WHERE NOT cached), count(*) FILTER (WHERE error IS NOT NULL)
           FROM model_calls WHERE run_id = ? GROUP BY role ORDER BY role""", [run_id]).fetchall()
    errors = con.execute(
        """SELECT role, error, count(*) AS n FROM model_calls WHERE run_id = ? AND error IS NOT NULL
           GROUP BY role, error QUALIFY row_number() OVER (PARTITION BY role ORDER BY n DESC, error) <= 3
           ORDER BY role, n DESC, error""", [run_id]).fetchall()
    unfitted = con.execute(
        """SELECT regexp_extract(reason, $fit, 1) AS role, count(*) FROM drafts
           WHERE run_id = $run AND regexp_matches(reason, $fit) GROUP BY ALL ORDER BY ALL""",
        {"fit": DOES_NOT_FIT_ROLE, "run": run_id}).fetchall()
    return {
        "accepted": status.get("accepted", 0),
        "rejected": status.get("rejected", 0),
        "quarantined": quarantined,
        "mean_score_by_round": [{"dimension": d, "round": r, "mean": m, "n": n} for d, r, m, n in by_round],
        "calls": {role: {"computed": n, "cached": c, "batches": b, "failed": f} for role, n, c, b, f in calls},
        "top_errors": [{"role": role, "error": error, "count": n} for role, error, n in errors],  # 3 per role
        "did_not_fit": dict(unfitted),  # role -> drafts failed because a request could not fit its window
    }


def format_summary(summary: dict[str, Any]) -> str:
    lines = [
        f"accepted {summary['accepted']} | rejected {summary['rejected']} | quarantined {summary['quarantined']}"
        f" | wall time {summary.get('wall_s', 0):.1f}s",
    ]
    rounds = sorted({row["round"] for row in summary["mean_score_by_round"]})
    if rounds:
        lines.append("mean score by round: " + " ".join(f"{'r' + str(r):>6}" for r in rounds))
        table: dict[str, dict[int, float]] = {}
        for row in summary["mean_score_by_round"]:
            table.setdefault(row["dimension"], {})[row["round"]] = row["mean"]
        for dimension, values in table.items():
            cells = " ".join(f"{values[r]:6.2f}" if r in values else "     -" for r in rounds)
            lines.append(f"  {dimension:<20} {cells}")
    for role, c in summary["calls"].items():
        lines.append(f"  calls {role:<6} computed {c['computed']} in {c['batches']} batches, cached {c['cached']}, "
                     f"failed {c['failed']}")
    if summary.get("did_not_fit"):
        counts = ", ".join(f"{role} {n}" for role, n in summary["did_not_fit"].items())
        lines.append(f"  drafts failed as too long for a role's window: {counts} (see drafts.reason; a larger "
                     "context_length, fewer turns or shorter replies)")
    for row in summary.get("top_errors", []):
        lines.append(f"  error  {row['role']:<6} x{row['count']}: {row['error'][:240]}")
    if "version" in summary:
        lines.append(f"dataset version {summary['version']}: {summary['version_path']}")
    if "snapshot" in summary:
        lines.append(f"store snapshot: {summary['snapshot']}")
    return "\n".join(lines)
