"""Progress while a command works (counts, rate, ETA), and the summary at a run's end (read from the store).

``Meter`` is the one way a long step shows how far it is: a bar redrawn in place on a terminal, plain lines in a
log, a pipe or a Ray job's output (at least one every ``every_s``, whether or not anything advanced, so a slow model
never looks like a hang). ``say`` prints a line of seir's own without tearing a bar that is on the same stream.
"""

from __future__ import annotations

import math
import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO, TypeVar

from seir.engine.calls import Ledger
from seir.engine.decide import decide
from seir.engine.records import Dialogue, Stage

T = TypeVar("T")
R = TypeVar("R")
PLAIN_EVERY_S = 10.0  # a line at least this often where no bar can be drawn
BAR_EVERY_S = 0.5
_printing = threading.Lock()
_bars: dict[int, Meter] = {}  # the bar drawn on each stream, by id(stream)


def say(stream: TextIO, message: str) -> None:
    """``[seir] message`` on its own line; a bar on the stream is cleared first and drawn again below it."""
    with _printing:
        bar = _bars.get(id(stream))
        if bar is not None:
            stream.write("\r\x1b[K")
        print(f"[seir] {message}", file=stream, flush=True)
        if bar is not None:
            bar.draw()


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Meter:
    """How far one long step is: ``done`` of ``total`` ``unit``, the rate and the time left at that rate.

    Use as a context manager: it shows itself when entered, on every ``advance`` (a terminal at most every
    ``BAR_EVERY_S``, elsewhere at most every ``every_s``), from a timer while nothing advances, and once at the end.
    ``detail`` adds what the step is doing now to every line."""

    def __init__(self, label: str, total: int | None, unit: str, stream: TextIO = sys.stderr,
                 detail: Callable[[], str] | None = None, every_s: float = PLAIN_EVERY_S,
                 tty: bool | None = None) -> None:
        self.label, self.total, self.unit, self.stream = label, total, unit, stream
        self.detail = detail or (lambda: "")
        self.every_s = every_s
        self.tty = _isatty(stream) if tty is None else tty
        self.done = 0
        self.started = time.monotonic()
        self._shown = -math.inf
        self._said_done = -1  # the count the last plain line showed: the closing line is not said twice
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None

    def __enter__(self) -> Meter:
        self.started = time.monotonic()
        if self.tty:
            _bars[id(self.stream)] = self
        self.show(force=True)
        self._timer = threading.Thread(target=self._tick, name=f"seir-meter-{self.label}", daemon=True)
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._timer is not None:
            self._timer.join()
        with _printing:
            if _bars.get(id(self.stream)) is self:
                del _bars[id(self.stream)]
                self.stream.write("\r\x1b[K")
            elif self._said_done == self.done:
                return
            print(f"[seir] {self.line()}", file=self.stream, flush=True)

    def advance(self, n: int = 1) -> None:
        self.done += n
        self.show()

    def counted(self, items: Iterable[T]) -> Iterator[T]:
        """``items``, advancing by one as each is taken."""
        for item in items:
            yield item
            self.advance()

    def counted_call(self, step: Callable[..., R], *args: Any) -> R:
        """``step(*args)``, then one more done."""
        result = step(*args)
        self.advance()
        return result

    def show(self, force: bool = False) -> None:
        if force or time.monotonic() - self._shown >= (BAR_EVERY_S if self.tty else self.every_s):
            if self.tty:
                with _printing:
                    self.draw()
            else:
                say(self.stream, self.line())
                self._said_done = self.done
            self._shown = time.monotonic()

    def draw(self) -> None:
        """The bar, redrawn in place (callers hold ``_printing``)."""
        width = shutil.get_terminal_size((120, 20)).columns
        filled = int(20 * self.done / self.total) if self.total else 0
        text = f"[seir] [{'#' * filled}{'.' * (20 - filled)}] {self.line()}"
        self.stream.write("\r\x1b[K" + text[: width - 1])
        self.stream.flush()

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        detail = self.detail()
        if self.total is None:  # counted as found (the end shows itself): no share, no ETA
            counted, eta = f"{self.done} {self.unit}", ""
        else:
            left = (self.total - self.done) / rate if rate > 0 else None
            percent = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
            counted = f"{self.done}/{self.total} {self.unit}{percent}"
            eta = f"ETA {duration(left) if self.done < self.total else '0s'} | "
        return (f"{self.label} {counted} | {rate * 60:.1f} {self.unit}/min | {eta}elapsed {duration(elapsed)}"
                + (f" | {detail}" if detail else ""))

    def _tick(self) -> None:
        while not self._stop.wait(min(BAR_EVERY_S, self.every_s / 4)):
            self.show()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


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

    def note_round(self, turn_index: int, stage: Stage, round_: int, active: int) -> None:
        self.activity = f"turn {turn_index + 1} {stage.value} round {round_} ({active} dialogues)"

    def shard_committed(self, dialogues: list[Dialogue], ledger: Ledger, thresholds: Mapping[str, float]) -> None:
        self.shards += 1
        self.dialogues += len(dialogues)
        for d in dialogues:
            decision = decide(d.failure, [t.scores for t in d.turns], thresholds, d.dialogue_scores())
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
    return {
        "accepted": status.get("accepted", 0),
        "rejected": status.get("rejected", 0),
        "quarantined": quarantined,
        "mean_score_by_round": [{"dimension": d, "round": r, "mean": m, "n": n} for d, r, m, n in by_round],
        "calls": {role: {"computed": n, "cached": c, "batches": b, "failed": f} for role, n, c, b, f in calls},
        "top_errors": [{"role": role, "error": error, "count": n} for role, error, n in errors],  # 3 per role
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
    for row in summary.get("top_errors", []):
        lines.append(f"  error  {row['role']:<6} x{row['count']}: {row['error'][:240]}")
    if "version" in summary:
        lines.append(f"dataset version {summary['version']}: {summary['version_path']}")
    return "\n".join(lines)
