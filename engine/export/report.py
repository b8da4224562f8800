"""``report.html``: one self-contained page per dataset version that opens offline (plotly.js and the gallery's
images inlined), answering "did refinement help, on which dimension, at which round, at what cost?".

``seir diff V1 V2 --report FILE`` puts two versions on the same plots and lists what changed and why; judge-eval
writes its own page, judge against human scores per dimension.

Plots (plotly): mean combined score per dimension by refinement round with the share of stages that stopped at each
round (the SEIR gain curve); the best-of-N gain (the first round's best of k candidates for k = 1..N, then the kept
draft after refinement); the acceptance funnel and rejection reasons; final-score distributions against the
thresholds; calls, tokens, busy and GPU seconds per role; dedup drops by method. Then a gallery of dialogues (best,
worst, random) with each stage's drafts side by side, their critiques, scores and images.

Everything is read with aggregate SQL over the version's dialogues, so the page builds in seconds at 100k dialogues
(bench/bench_report.py).
"""

from __future__ import annotations

import base64
import html
import io
import json
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import plotly.graph_objects as go
from PIL import Image
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from seir.engine.errors import SeirError, writing
from seir.engine.export.agreement import agreement_table, judge_agreement
from seir.engine.export.dialogue_html import STYLE, dialogue_html, load_dialogue
from seir.engine.records import CONTENT_DIMENSIONS
from seir.engine.store import ImageStore, keep_score_sql, version_name, write_whole
from seir.operators.scoring.judge_eval import JudgeEvalReport

GALLERY_EACH = 3  # dialogues shown as best, as worst and at random
THUMBNAIL_SIDE = 256
BIN = 0.25  # width of a score histogram's bins
_SHORTFALL = re.compile(r"([a-z_]+) (?:[\d.]+ <|not scored)")


def write_report(con: duckdb.DuckDBPyConnection, out_dir: Path, version: int | None = None) -> Path:
    """Build the report of ``version`` (default: the latest) into its version folder; returns the file."""
    number = version or con.execute("SELECT max(version) FROM versions").fetchall()[0][0]
    run_id, created, figures = _version_figures(con, out_dir, number)
    target = out_dir / "versions" / version_name(number) / "report.html"
    _write_page(target, f"seir report: {version_name(number)} ({run_id})", f"written {created}", figures,
                "<h2>The judge against people</h2>" + agreement_table(judge_agreement(con))
                + "<h2>Gallery</h2>" + _gallery(con, out_dir))
    return target


def write_diff_report(con: duckdb.DuckDBPyConnection, out_dir: Path, before: int, after: int,
                      changes: dict[str, list[dict[str, Any]]], target: Path) -> Path:
    """Two versions on the same plots (each trace named by its version), what changed between them and why (each
    changed dialogue's current decision), and the changed dialogues' drafts."""
    merged: list[go.Figure] = []
    for number in (before, after):
        _, _, figures = _version_figures(con, out_dir, number)
        if not merged:
            merged = [go.Figure(layout=f.layout) for f in figures]
        for into, figure in zip(merged, figures, strict=True):
            for trace in figure.data:
                into.add_trace(trace.update(name=f"{version_name(number)}: {trace.name or ''}",
                                            legendgroup=version_name(number)))
    decided = {i: (ok, reason) for i, ok, reason in con.execute(
        """SELECT vd.dialogue_id, vd.accepted, coalesce(ld.reason, '') FROM version_dialogues vd
           LEFT JOIN latest_decisions ld USING (dialogue_key) WHERE vd.version = ?""", [after]).fetchall()}
    ids = {e["dialogue_id"] for kind in ("added", "changed", "status") for e in changes[kind]}
    rows = "".join(
        f"<tr><td>{kind}</td><td>{html.escape(e['dialogue_id'])}</td><td>{html.escape(_verdict(decided, e))}</td></tr>"
        for kind in ("added", "removed", "changed", "status") for e in changes[kind])
    con.execute("CREATE OR REPLACE TEMP TABLE report_keys AS SELECT dialogue_key, dialogue_id, accepted "
                "FROM version_dialogues WHERE version = ? AND dialogue_id IN (SELECT unnest(?::VARCHAR[]))",
                [after, sorted(ids)])
    cards = "".join(_dialogue_card(con, out_dir, row[0]) for row in con.execute(
        f"SELECT dialogue_key, dialogue_id, accepted, {keep_score_sql('k')} FROM report_keys k "
        f"ORDER BY dialogue_id LIMIT {GALLERY_EACH * 2}").fetchall())
    summary = ", ".join(f"{len(changes[k])} {k}" for k in ("added", "removed", "changed", "status"))
    _write_page(target, f"seir diff: {version_name(before)} -> {version_name(after)}", summary, merged,
                "<h2>What changed</h2><table><tr><th>change</th><th>dialogue</th><th>decision now</th></tr>"
                f"{rows}</table><h2>Changed dialogues in {version_name(after)}</h2>{cards or '<p>none</p>'}")
    return target


def write_judge_eval_report(report: JudgeEvalReport, target: Path) -> Path:
    """Judge against human scores, one scatter per evaluable dimension (points jittered a little, so equal
    scores stay visible), with the agreement measures in each title."""
    dimensions = [d for d in report.dimensions if d.evaluable]
    if not dimensions:
        _write_page(target, f"seir judge-eval: {report.source}", "no dimension could be evaluated", [], "")
        return target
    columns = min(3, len(dimensions))
    titles = [f"{d.name}<br>pearson {_num(d.pearson)}, spearman {_num(d.spearman)}, n {d.n}" for d in dimensions]
    figure = make_subplots(rows=-(-len(dimensions) // columns), cols=columns, subplot_titles=titles)
    rng = random.Random(0)
    for index, d in enumerate(dimensions):
        points = [p for p in report.predictions if p.dimension == d.name]
        row, col = index // columns + 1, index % columns + 1
        figure.add_scatter(x=[p.human + rng.uniform(-0.12, 0.12) for p in points], y=[p.model for p in points],
                           mode="markers", marker={"size": 5, "opacity": 0.5}, name=d.name, row=row, col=col,
                           text=[p.item_id for p in points], showlegend=False)
        low, high = d.scale
        figure.add_scatter(x=[low, high], y=[low, high], mode="lines", line={"dash": "dot", "color": "gray"},
                           row=row, col=col, showlegend=False, hoverinfo="skip")
        figure.update_xaxes(title_text="human", row=row, col=col)
        figure.update_yaxes(title_text="judge", row=row, col=col)
    figure.update_layout(height=360 * -(-len(dimensions) // columns), title="Judge vs human scores")
    skipped = "".join(f"<li>{html.escape(d.name)}: {html.escape(d.reason or '')}</li>"
                      for d in report.dimensions if not d.evaluable)
    _write_page(target, f"seir judge-eval: {report.source} ({report.rubric})", f"{report.n_items} items", [figure],
                f"<h2>Not evaluable</h2><ul>{skipped}</ul>" if skipped else "")
    return target


def _verdict(decided: dict[str, tuple[bool, str]], change: dict[str, Any]) -> str:
    if change["dialogue_id"] not in decided:
        return "not in the newer version"
    accepted, reason = decided[change["dialogue_id"]]
    return "accepted" if accepted else reason or "dropped as a duplicate"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _version_figures(con: duckdb.DuckDBPyConnection, out_dir: Path,
                     number: int) -> tuple[str, Any, list[go.Figure]]:
    """The version's run, when it was written, and its plots; leaves its keys in the temp table ``report_keys``."""
    found = con.execute("SELECT run_id, created_at FROM versions WHERE version = ?", [number]).fetchall()
    if not found:
        raise SeirError(f"no dataset version {number} in {out_dir} (see `seir versions --out {out_dir}`)")
    run_id, created = found[0]
    spec = json.loads(con.execute("SELECT job_spec FROM runs WHERE run_id = ?", [run_id]).fetchall()[0][0] or "{}")
    thresholds = spec.get("scoring", {}).get("thresholds", {})
    _report_keys(con, number)
    return run_id, created, [_gain_curve(con), _best_of_n(con), _funnel(con), _reasons(con, run_id),
                             _distributions(con, thresholds), _usage(con), _dedup(con, run_id)]


def _write_page(target: Path, title: str, subtitle: str, figures: list[go.Figure], tail: str) -> None:
    body = "\n".join(f'<section class="plot">{f.to_html(full_html=False, include_plotlyjs=False)}</section>'
                     for f in figures)
    page = _PAGE.format(title=html.escape(title), plotly=get_plotlyjs(), subtitle=html.escape(subtitle),
                        body=body, tail=tail, style=STYLE)
    with writing(target.parent, f"the report {target.name}"):
        target.parent.mkdir(parents=True, exist_ok=True)
        write_whole(target, page)


def _gain_curve(con: duckdb.DuckDBPyConnection) -> go.Figure:
    means = con.execute("""
        SELECT s.dimension, d.round, avg(s.value) FROM drafts d JOIN report_keys USING (dialogue_key)
        JOIN scores s USING (draft_key) WHERE s.scorer = 'combined' AND d.round_best
        GROUP BY ALL ORDER BY ALL""").fetchall()
    stops = con.execute("""
        SELECT last_round, count(*) / sum(count(*)) OVER () FROM (
            SELECT max(round) AS last_round FROM drafts JOIN report_keys USING (dialogue_key)
            GROUP BY dialogue_key, turn_index, stage) GROUP BY ALL ORDER BY ALL""").fetchall()
    figure = go.Figure()
    figure.add_bar(x=[r for r, _ in stops], y=[share for _, share in stops], name="stages stopped here",
                   yaxis="y2", opacity=0.3)
    for dimension in sorted({d for d, _, _ in means}):
        rows = [(r, m) for d, r, m in means if d == dimension]
        figure.add_scatter(x=[r for r, _ in rows], y=[m for _, m in rows], mode="lines+markers", name=dimension)
    figure.update_layout(title="SEIR gain: mean combined score by refinement round",
                         xaxis={"title": "round", "dtick": 1},
                         yaxis={"title": "mean score (0-5)"},
                         yaxis2={"title": "share of stages", "overlaying": "y", "side": "right", "range": [0, 1]})
    return figure


def _report_keys(con: duckdb.DuckDBPyConnection, version: int) -> None:
    con.execute("CREATE OR REPLACE TEMP TABLE report_keys AS SELECT dialogue_key, dialogue_id, accepted "
                "FROM version_dialogues WHERE version = ?", [version])


def best_of_n_means(con: duckdb.DuckDBPyConnection, version: int) -> dict[str, dict[str, float]]:
    """Per dimension, the mean combined score of the first round's best of its first k candidates (by mean score;
    k = "1" is the first candidate alone) over the version's dialogues, and of the kept draft after refinement
    ("refined"). The best-of-N gain is k = N against k = 1; the refinement gain, "refined" against k = N."""
    _report_keys(con, version)
    means: dict[str, dict[str, float]] = {}
    for dimension, k, mean in _best_of_k_rows(con):
        means.setdefault(dimension, {})[k] = mean
    return means


def _best_of_k_rows(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, float]]:
    best_of_k = con.execute("""
        WITH ranked AS (
            SELECT d.draft_key, d.dialogue_key, d.turn_index, d.stage, d.candidate, avg(s.value) AS mean
            FROM drafts d JOIN report_keys USING (dialogue_key)
            JOIN scores s ON s.draft_key = d.draft_key AND s.run_id = d.run_id AND s.scorer = 'combined'
            WHERE d.round = 0 AND d.ok GROUP BY ALL),
        best_so_far AS (
            SELECT candidate + 1 AS k, arg_max(draft_key, mean) OVER (
                PARTITION BY dialogue_key, turn_index, stage ORDER BY candidate
                ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS best_key
            FROM ranked)
        SELECT s.dimension, b.k::VARCHAR, avg(s.value)
        FROM best_so_far b JOIN scores s ON s.draft_key = b.best_key AND s.scorer = 'combined'
        JOIN drafts d ON d.draft_key = b.best_key AND d.run_id = s.run_id
        GROUP BY ALL ORDER BY ALL""").fetchall()
    refined = con.execute("""
        SELECT s.dimension, 'refined', avg(s.value) FROM drafts d JOIN report_keys USING (dialogue_key)
        JOIN scores s ON s.draft_key = d.draft_key AND s.run_id = d.run_id AND s.scorer = 'combined'
        WHERE d.best GROUP BY ALL ORDER BY ALL""").fetchall()
    return [*best_of_k, *refined]


def _best_of_n(con: duckdb.DuckDBPyConnection) -> go.Figure:
    """Best-of-N beside refinement, per dimension (``best_of_n_means``); with one candidate per round, the first
    draft against the kept one."""
    rows = _best_of_k_rows(con)
    figure = go.Figure()
    for dimension in sorted({d for d, _, _ in rows}):
        points = [(k, m) for d, k, m in rows if d == dimension]
        figure.add_scatter(x=[k for k, _ in points], y=[m for _, m in points], mode="lines+markers", name=dimension)
    figure.update_layout(title="Best-of-N gain: the first round's best of k candidates (seir.candidates), then the "
                               "kept draft after refinement",
                         xaxis={"title": "candidates (k), then refined", "type": "category"},
                         yaxis={"title": "mean score (0-5)"})
    return figure


def _funnel(con: duckdb.DuckDBPyConnection) -> go.Figure:
    total, made, passed, kept = con.execute("""
        SELECT count(*), count(*) FILTER (WHERE d.failure = ''),
               count(*) FILTER (WHERE ld.accepted), count(*) FILTER (WHERE k.accepted)
        FROM report_keys k JOIN dialogues d USING (dialogue_key) LEFT JOIN latest_decisions ld USING (dialogue_key)
        """).fetchall()[0]
    return go.Figure(go.Funnel(y=["candidates", "generated", "passed thresholds", "kept after dedup"],
                               x=[total, made, passed, kept])).update_layout(title="Acceptance funnel")


def _reasons(con: duckdb.DuckDBPyConnection, run_id: str) -> go.Figure:
    rows = con.execute("""
        SELECT d.failure, ld.reason, dd.method FROM report_keys k JOIN dialogues d USING (dialogue_key)
        LEFT JOIN latest_decisions ld USING (dialogue_key)
        LEFT JOIN dedup dd ON dd.run_id = ? AND dd.dropped_id = k.dialogue_id
        WHERE NOT k.accepted""", [run_id]).fetchall()
    counts: Counter[str] = Counter()
    for failure, reason, method in rows:
        if failure:
            counts["generation failed"] += 1
        elif method:
            counts[f"duplicate ({method})"] += 1
        else:
            counts.update(f"below threshold: {d}" for d in sorted(set(_SHORTFALL.findall(reason or ""))) or ["?"])
    ordered = counts.most_common()
    return go.Figure(go.Bar(x=[n for _, n in ordered], y=[r for r, _ in ordered], orientation="h")).update_layout(
        title="Rejection reasons (a dialogue counts once per dimension it fails)" + ("" if ordered else ": none"),
        xaxis_title="dialogues")


def _distributions(con: duckdb.DuckDBPyConnection, thresholds: dict[str, float]) -> go.Figure:
    """Counted in SQL, in bins of ``BIN``: the page stays small however many turns there are."""
    unpivoted = " UNION ALL ".join(f"SELECT '{d}' AS dimension, f.{d} AS value FROM turn_final_scores f "
                                   f"JOIN report_keys USING (dialogue_key)" for d in CONTENT_DIMENSIONS)
    rows = con.execute(f"""SELECT dimension, least(floor(value / {BIN}), {5 / BIN - 1}) * {BIN} AS bin, count(*)
                           FROM ({unpivoted}) WHERE value IS NOT NULL GROUP BY ALL ORDER BY ALL""").fetchall()
    figure = go.Figure()
    for dimension in CONTENT_DIMENSIONS:
        mine = [(b, n) for d, b, n in rows if d == dimension]
        figure.add_bar(x=[b + BIN / 2 for b, _ in mine], y=[n for _, n in mine], width=BIN, name=dimension,
                       opacity=0.6)
        if dimension in thresholds:
            figure.add_vline(x=thresholds[dimension], line_dash="dash",
                             annotation_text=f"{dimension} ≥ {thresholds[dimension]}", annotation_textangle=-90)
    return figure.update_layout(title="Final turn scores against the thresholds", barmode="overlay",
                                xaxis={"title": "score", "range": [0, 5]}, yaxis_title="turns")


def _usage(con: duckdb.DuckDBPyConnection) -> go.Figure:
    rows = con.execute("""
        SELECT role, sum(computed), sum(cached), sum(coalesce(tokens_in, 0) + coalesce(tokens_out, 0)),
               sum(coalesce(busy_s, 0)), sum(coalesce(gpu_s, 0))
        FROM model_usage WHERE run_id IN (SELECT DISTINCT d.run_id FROM dialogues d JOIN report_keys USING
                                          (dialogue_key)) GROUP BY role ORDER BY role""").fetchall()
    roles = [r[0] for r in rows]
    figure = go.Figure()
    for index, name in enumerate(["computed calls", "cached calls", "tokens", "busy seconds", "GPU seconds"], 1):
        figure.add_bar(x=roles, y=[r[index] for r in rows], name=name)
    return figure.update_layout(title="Cost per role (runs that made this version's dialogues)", barmode="group",
                                yaxis_type="log")


def _dedup(con: duckdb.DuckDBPyConnection, run_id: str) -> go.Figure:
    rows = con.execute("SELECT method, count(*), count(DISTINCT kept_id) FROM dedup WHERE run_id = ? GROUP BY 1 "
                       "ORDER BY 1", [run_id]).fetchall()
    figure = go.Figure()
    figure.add_bar(x=[r[0] for r in rows], y=[r[1] for r in rows], name="dialogues dropped")
    figure.add_bar(x=[r[0] for r in rows], y=[r[2] for r in rows], name="groups (kept dialogues)")
    return figure.update_layout(title="Dedup by method" + ("" if rows else ": no duplicates"), barmode="group")


def _gallery(con: duckdb.DuckDBPyConnection, out_dir: Path) -> str:
    ranked = con.execute(f"""
        SELECT k.dialogue_key, k.dialogue_id, k.accepted, {keep_score_sql("k")} AS score
        FROM report_keys k ORDER BY score DESC, k.dialogue_id""").fetchall()
    picks: dict[str, list[Any]] = {"best": ranked[:GALLERY_EACH], "worst": ranked[::-1][:GALLERY_EACH]}
    rest = con.execute(f"SELECT dialogue_key FROM report_keys USING SAMPLE reservoir({GALLERY_EACH} ROWS) "
                       "REPEATABLE (7)").fetchall() if ranked else []
    by_key = {row[0]: row for row in ranked}
    picks["random"] = [by_key[key] for (key,) in rest]
    parts = []
    for label, rows in picks.items():
        cards = "".join(_dialogue_card(con, out_dir, row[0]) for row in rows)
        parts.append(f"<h3>{label}</h3>{cards or '<p>none</p>'}")
    return "\n".join(parts)


def _dialogue_card(con: duckdb.DuckDBPyConnection, out_dir: Path, key: str) -> str:
    """A dialogue drawn as the viewer draws it, its pictures inlined as thumbnails."""
    record = load_dialogue(con, key)
    images = ImageStore(out_dir)
    return dialogue_html(record, lambda image_key: _data_url(images.path(image_key))) if record else ""


def _data_url(path: Path) -> str:
    """A thumbnail as a PNG data URL, so the page needs no file beside it."""
    with Image.open(path) as image:
        image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<script>{plotly}</script>
<style>
section.plot {{ max-width: 1100px; }}
{style}
</style></head>
<body><h1>{title}</h1><p>{subtitle}</p>
{body}
{tail}
</body></html>
"""
