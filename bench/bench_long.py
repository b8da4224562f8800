"""Long dialogues (issue 21): how big each role's requests get as a dialogue grows, against the role's window.

Runs a job (default ``jobs/demo-long.yaml``: 27 turns, small windows set on the roles) into a fresh output folder on
local Ray, then reads provenance:

- tokens per request against the turn index, per role (median and largest ``tokens_in`` of the calls of that
  turn's drafts, plus the reply room: what the window must hold). The ideal: it grows with the history, then stays
  at the window (never above);
- the share of requests that were fitted (the recorded request shows a marker of something left out), per role;
- dialogues per minute over the whole run, pools' start included and excluded.

    .venv/bin/python bench/bench_long.py --job jobs/demo-long.yaml
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import duckdb

from seir.engine.run import Runner
from seir.engine.spec import load_job

ROOT = Path(__file__).resolve().parent.parent
FITTED = ("%omitted]%", "%shown here, left out]%", "% [...] %")  # the markers of operators/context.py


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--job", type=Path, default=ROOT / "jobs" / "demo-long.yaml")
    parser.add_argument("--out", type=Path, help="output folder (default: a fresh temporary one)")
    args = parser.parse_args()
    spec = load_job(args.job)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-long-")) / "out"
    started = time.perf_counter()
    summary = Runner(spec, out, stream=io.StringIO()).run()
    wall = time.perf_counter() - started
    dialogues = summary["accepted"] + summary["rejected"]
    with duckdb.connect(str(out / "provenance.duckdb"), read_only=True) as con:
        report(con, spec, dialogues, wall, summary)


def report(con: duckdb.DuckDBPyConnection, spec, dialogues: int, wall: float, summary: dict) -> None:
    called = {role for (role,) in con.execute("SELECT DISTINCT role FROM model_calls").fetchall()}
    roles = [role for role in ("llm", "vlm", "judge") if role in called]
    print(f"job {spec.name}: {dialogues} dialogues of up to {spec.seir.turns} turns in {wall:.0f} s, "
          f"{dialogues / wall * 60:.2f} dialogues/min (model loading included)")
    for role in roles:
        limit = spec.roles[role].context_length
        print(f"\n{role}: window {limit or 'from the model'}, reply room {spec.roles[role].sampling.max_new_tokens}")
        rows = con.execute(
            """SELECT dr.turn_index + 1, median(c.tokens_in), max(c.tokens_in), count(*) FROM drafts dr,
                      unnest(dr.call_keys) AS u(call_key)
               JOIN (SELECT DISTINCT call_key, role, method, tokens_in FROM model_calls) c USING (call_key)
               WHERE c.role = ? AND c.method = 'chat' GROUP BY ALL ORDER BY 1""", [role]).fetchall()
        print("| turn | median tokens_in | max tokens_in | chat requests |\n|---:|---:|---:|---:|")
        for turn, median, largest, n in rows:
            print(f"| {turn} | {median:.0f} | {largest} | {n} |")
    print("\nshare of requests fitted (something left out), per role and method:")
    fitted = " OR ".join("CAST(o.request AS VARCHAR) LIKE ?" for _ in FITTED)
    for role, method, share, n in con.execute(
            f"""SELECT c.role, c.method, avg(CASE WHEN {fitted} THEN 1 ELSE 0 END), count(*)
                FROM (SELECT DISTINCT call_key, role, method FROM model_calls WHERE NOT cached) c
                JOIN call_outputs o USING (call_key) WHERE c.role IN ('llm', 'vlm', 'judge')
                GROUP BY ALL ORDER BY ALL""", list(FITTED)).fetchall():
        print(f"  {role} {method}: {share:.0%} of {n}")
    print(f"drafts failed as too long for a window: {summary.get('did_not_fit') or 'none'}")


if __name__ == "__main__":
    main()
