"""The judge against people: for each dimension and each scorer, how well the scores seir gave agree with the scores
people gave the same turns (``human_verdicts``), with the measures ``seir judge-eval`` reports against InterMT.

Each turn a person scored is one point: the mean of its annotators' latest scores against the scorer's score of the
draft judged (the one the verdict names, else the turn's kept draft of that dimension's stage), from the latest run
that scored it. Spearman's rho and Kendall's tau-b come with 95% intervals by Fisher's z; pairwise accuracy (how
often the scorer orders two turns as people did, a tie counting half, over the pairs people did not tie) with a 95%
Wilson interval over its pairs, which is narrower than it should be since pairs share turns.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import duckdb

from seir.operators.scoring.judge_eval import pair_accuracy
from seir.operators.scoring.measures import fisher_interval, kendall_tau_b, spearman, wilson_interval

# (dimension, scorer, person's score, scorer's score) for every turn people scored.
AGREEMENT_POINTS = """
    WITH people AS (SELECT dialogue_key, turn_index, dimension, draft_key, avg(score) AS human FROM human_scores
                    GROUP BY ALL)
    SELECT p.dimension, s.scorer, p.human, arg_max(s.value, r.started_at) AS judged
    FROM people p
    JOIN drafts d ON d.dialogue_key = p.dialogue_key AND d.turn_index = p.turn_index
                 AND (d.draft_key = p.draft_key OR (p.draft_key IS NULL AND d.best))
    JOIN scores s ON s.draft_key = d.draft_key AND s.dimension = p.dimension
    JOIN runs r ON r.run_id = s.run_id
    GROUP BY p.dimension, s.scorer, p.human, p.dialogue_key, p.turn_index, d.draft_key
    ORDER BY p.dimension, s.scorer, p.dialogue_key, p.turn_index"""


@dataclass(frozen=True)
class Agreement:
    dimension: str
    scorer: str
    n: int  # turns people and the scorer both scored
    spearman: float | None
    spearman_ci: tuple[float, float] | None
    kendall: float | None
    kendall_ci: tuple[float, float] | None
    pairs: int  # pairs of turns people scored differently
    pair_accuracy: float | None
    pair_accuracy_ci: tuple[float, float] | None


def agreement_points(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], tuple[list[float], list[float]]]:
    """(dimension, scorer) -> (people's scores, the scorer's), one point per turn."""
    points: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
    for dimension, scorer, human, judged in con.execute(AGREEMENT_POINTS).fetchall():
        people, scorer_said = points.setdefault((dimension, scorer), ([], []))
        people.append(human)
        scorer_said.append(judged)
    return points


def judge_agreement(con: duckdb.DuckDBPyConnection) -> list[Agreement]:
    """The agreement of every scorer with people on every dimension people scored, by dimension then scorer."""
    found = []
    for (dimension, scorer), (human, judged) in agreement_points(con).items():
        n = len(human)
        rho, tau = spearman(human, judged), kendall_tau_b(human, judged)
        pairs, credit = pair_accuracy(human, judged, ["all"] * n)
        found.append(Agreement(dimension, scorer, n, rho, fisher_interval(rho, n, 1.06 / (n - 3) if n > 3 else 0),
                               tau, fisher_interval(tau, n, 0.437 / (n - 4) if n > 4 else 0), pairs,
                               credit / pairs if pairs else None, wilson_interval(credit, pairs)))
    return found


def agreement_table(rows: list[Agreement]) -> str:
    """The agreement as an HTML table (the viewer's page and report.html)."""
    if not rows:
        return ("<p>No human scores yet: give some in <code>seir view</code> or with <code>seir verdicts import"
                "</code>.</p>")

    def cell(value: float | None, interval: tuple[float, float] | None) -> str:
        if value is None:
            return "<td>-</td>"
        span = f" <small>[{interval[0]:.2f}, {interval[1]:.2f}]</small>" if interval else ""
        return f"<td>{value:.3f}{span}</td>"

    body = "".join(
        f"<tr><td>{html.escape(a.dimension)}</td><td>{html.escape(a.scorer)}</td><td>{a.n}</td>"
        f"{cell(a.spearman, a.spearman_ci)}"
        f"{cell(a.kendall, a.kendall_ci)}<td>{a.pairs}</td>{cell(a.pair_accuracy, a.pair_accuracy_ci)}</tr>"
        for a in rows)
    return ('<table class="agreement"><tr><th>dimension</th><th>scorer</th><th>turns</th><th>Spearman [95%]</th>'
            "<th>Kendall tau-b [95%]</th><th>pairs</th><th>pairwise accuracy [95%]</th></tr>" + body + "</table>")
