"""`seir view` over HTTP on a real output: lists filtered in SQL, a dialogue with its history and the requests its
writer and judge were sent, verdicts recorded into provenance, and what it refuses (a write without its page's
token, a file outside the images, SQL that writes or reads files, any request without the token off 127.0.0.1).
Then verdicts from a file, and the judge's agreement with people against scipy."""

from __future__ import annotations

import io
import itertools
import json
import re
import shutil
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import numpy as np
import pytest
from PIL import Image
from scipy import stats

from seir.engine.cli import main
from seir.engine.export import write_report
from seir.engine.export.agreement import judge_agreement
from seir.engine.query import run_sql
from seir.engine.store import open_read_only
from seir.engine.view import Viewer
from seir.engine.view.server import make_server
from tests.engine.conftest import FinishedRun


@pytest.fixture
def output(finished: FinishedRun, tmp_path: Path) -> Path:
    """A copy of the finished run's output: verdicts change it."""
    return Path(shutil.copytree(finished.out, tmp_path / "out"))


@contextmanager
def served(out: Path, host: str = "127.0.0.1", token: str | None = None) -> Iterator[tuple[Viewer, str]]:
    viewer = Viewer(out, "ana", token, needs_token=host != "127.0.0.1")
    server = make_server(viewer, host, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    viewer.start_background()
    try:
        yield viewer, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        viewer.stop()


def ask(url: str, body: dict | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict]:
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                     headers=headers or {}, method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.read(), dict(answer.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


def keys_listed(page: bytes) -> list[str]:
    return re.findall(r"/dialogue/([0-9a-f]{32})", page.decode())


def test_the_list_filters_sorts_and_refuses_sql_that_writes_or_reads_files(output: Path) -> None:
    statuses = dict(run_sql(output, """
        SELECT d.dialogue_key, CASE WHEN d.failure <> '' THEN 'failed' WHEN ld.accepted THEN 'accepted'
                                    ELSE 'rejected' END
        FROM dialogues d JOIN latest_decisions ld USING (dialogue_key)""")[1])
    quarantined = run_sql(output, "SELECT count(*) FROM quarantine")[1][0][0]
    with served(output) as (_, url):
        status, page, _ = ask(url + "/")
        assert status == 200 and set(keys_listed(page)) == set(statuses)
        for wanted in ("rejected", "accepted", "failed"):
            status, page, _ = ask(f"{url}/?status={wanted}")
            assert status == 200
            assert sorted(keys_listed(page)) == sorted(k for k, s in statuses.items() if s == wanted), wanted
        status, page, _ = ask(f"{url}/?status=quarantined")
        assert status == 200 and page.decode().count("<tr class='row quarantined'>") == quarantined > 0
        status, page, _ = ask(f"{url}/?sort=image_quality&order=desc&where=image_quality+IS+NOT+NULL")
        shown = [float(v) for v in re.findall(r"<td>(\d\.\d\d)</td></tr>", page.decode())]
        means = dict(run_sql(output, "SELECT dialogue_key, avg(image_quality) FROM turn_final_scores GROUP BY 1")[1])
        assert keys_listed(page) == sorted(means, key=lambda k: (-means[k], k))[: len(keys_listed(page))]
        assert status == 200 and len(shown) == len(means)
        for refused in ("1=1; DROP TABLE dialogue_list", "seed_text IN (SELECT content FROM read_text('/etc/passwd'))",
                        "dialogue_id IN (SELECT dialogue_id FROM read_parquet('x.parquet'))", "no_such_column > 1"):
            status, page, _ = ask(f"{url}/?where={urllib.request.quote(refused)}")
            assert status == 400 and page.startswith(b"where:"), (refused, page)
        assert ask(f"{url}/?status=lost")[0] == 400 and ask(f"{url}/?min_image_quality=high")[0] == 400


def test_a_dialogue_page_shows_its_turns_history_pictures_and_recorded_requests(output: Path) -> None:
    con = open_read_only(output)
    try:
        key, dialogue_id = con.execute("""SELECT dialogue_key, dialogue_id FROM dialogues WHERE failure = ''
                                          ORDER BY dialogue_id LIMIT 1""").fetchone()
        questions = [q for (q,) in con.execute("SELECT question FROM turns WHERE dialogue_key = ?", [key]).fetchall()]
        drafts = con.execute("""SELECT draft_key, critique, call_keys FROM drafts WHERE dialogue_key = ? AND round > 0
                                AND stage = 'answer' ORDER BY turn_index""", [key]).fetchall()
        draft_key, critique_before, call_keys = drafts[0]
        request = json.loads(con.execute("SELECT request FROM call_outputs WHERE call_key = ?",
                                         [call_keys[0]]).fetchone()[0])
        images = dict(con.execute("SELECT image_key, width FROM images WHERE image_key IN (SELECT image_key FROM "
                                  "drafts WHERE dialogue_key = ?)", [key]).fetchall())
        earlier = con.execute("SELECT draft_key FROM drafts WHERE dialogue_key = ? AND stage = 'answer' AND round = 0 "
                              "ORDER BY turn_index LIMIT 1", [key]).fetchone()[0]
    finally:
        con.close()
    with served(output) as (_, url):
        status, page, _ = ask(f"{url}/dialogue/{key}")
        text = page.decode()
        assert status == 200 and dialogue_id in text and "round 1" in text and "threshold" in text
        assert all(html_escaped(q) in text for q in questions)
        shown = set(re.findall(r'src="/image/([0-9a-f]{32})"', text))
        assert set(images) <= shown
        for image_key in shown:
            status, body, headers = ask(f"{url}/image/{image_key}")
            assert status == 200 and headers["Content-Type"] == "image/png"
            with Image.open(io.BytesIO(body)) as picture:
                assert picture.width == images.get(image_key, picture.width) > 0
        status, page, _ = ask(f"{url}/draft/{draft_key}")
        first_message = request["messages"][-1]["content"]
        first_text = first_message if isinstance(first_message, str) else first_message[-1]["text"]
        assert status == 200 and html_escaped(json.dumps(first_text, ensure_ascii=False)[1:40]) in page.decode()
        assert "tokens" in page.decode() and "judge." in page.decode() and "llm.chat" in page.decode()
        status, page, _ = ask(f"{url}/compare?a={draft_key}&b={earlier}")
        assert status == 200 and page.decode().count('data-draft=') == 2 and "prefer left" in page.decode()
        status, page, _ = ask(f"{url}/lineage/{key}")
        assert status == 200 and f"dialogue {dialogue_id}" in page.decode()
        assert critique_before is not None
        assert ask(f"{url}/dialogue/{'0' * 32}")[0] == 404


def html_escaped(text: str) -> str:
    import html

    return html.escape(text)


def test_a_write_needs_its_pages_token_and_lands_in_provenance(output: Path) -> None:
    key = run_sql(output, "SELECT dialogue_key FROM dialogues WHERE failure = '' LIMIT 1")[1][0][0]
    verdict = {"dialogue_key": key, "turn": 1, "dimension": "image_quality", "score": 1, "note": "smudged"}
    with served(output) as (viewer, url):
        assert ask(f"{url}/verdict", verdict)[0] == 403
        assert ask(f"{url}/verdict", verdict, {"X-Seir-CSRF": "guess"})[0] == 403
        assert not list(viewer.inbox.folder.glob("*.json")) if viewer.inbox.folder.exists() else True
        status, body, _ = ask(f"{url}/verdict", verdict, {"X-Seir-CSRF": viewer.csrf})
        assert status == 200 and json.loads(body)["stored"] is True
        status, body, _ = ask(f"{url}/verdict", {**verdict, "turn": 9}, {"X-Seir-CSRF": viewer.csrf})
        assert status == 400 and b"field 'turn'" in body
    rows = run_sql(output, "SELECT annotator, source, turn_index, dimension, score, note FROM human_verdicts")[1]
    assert rows == [("ana", "viewer", 0, "image_quality", 1.0, "smudged")]


def test_nothing_outside_the_images_is_served(output: Path) -> None:
    image_key = run_sql(output, "SELECT image_key FROM images LIMIT 1")[1][0][0]
    with served(output) as (_, url):
        assert ask(f"{url}/image/{image_key}")[0] == 200
        for path in ("/image/..%2Fprovenance.duckdb", f"/image/{'f' * 32}", f"/images/{image_key[:2]}/{image_key}.png",
                     "/provenance.duckdb", "/image/../../etc/passwd", "/draft/..%2F..%2Fetc%2Fpasswd",
                     f"/image/{image_key}.png", "/logs/seir.log"):
            assert ask(url + path)[0] == 404, path


def test_off_127_0_0_1_every_request_needs_the_token(output: Path) -> None:
    with served(output, host="0.0.0.0") as (viewer, url):
        assert viewer.token and len(viewer.token) >= 24
        assert ask(url + "/")[0] == 403
        assert ask(url + "/?token=wrong")[0] == 403
        assert ask(f"{url}/image/{'0' * 32}")[0] == 403
        status, _, headers = ask(f"{url}/?token={viewer.token}")
        assert status == 200 and "HttpOnly" in headers["Set-Cookie"]
        assert ask(url + "/", headers={"Cookie": f"seir_token={viewer.token}"})[0] == 200
        assert ask(url + "/", headers={"Authorization": f"Bearer {viewer.token}"})[0] == 200
        assert ask(f"{url}/verdict", {"dialogue_key": "x"}, {"X-Seir-CSRF": viewer.csrf})[0] == 403


def test_verdicts_import_checks_every_line_first_and_stores_each_once(output: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    rows = run_sql(output, """SELECT d.dialogue_id, dr.draft_key, dr.turn_index FROM dialogues d
                              JOIN drafts dr USING (dialogue_key) WHERE d.failure = '' AND dr.stage = 'answer'
                              ORDER BY d.dialogue_id, dr.turn_index, dr.round""")[1]
    (first_id, first_draft, first_turn), other = rows[0], next(r for r in rows if r[0] != rows[0][0])
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(json.dumps(line) for line in [
        {"dialogue_id": first_id, "turn": first_turn + 1, "dimension": "text_content", "score": 4},
        {"dialogue_id": first_id, "verdict": "reject", "note": "repeats itself"},
        {"dialogue_id": first_id, "turn": first_turn + 1, "prefer": first_draft}]) + "\n")
    assert main(["verdicts", "import", "--out", str(output), str(good), "--annotator", "bo"]) == 0
    assert main(["verdicts", "import", "--out", str(output), str(good), "--annotator", "bo"]) == 0
    assert run_sql(output, "SELECT count(*), min(annotator) FROM human_verdicts")[1] == [(3, "bo")]
    bad = tmp_path / "bad.jsonl"
    for line, field in [({"dialogue_id": "nobody", "verdict": "accept"}, "dialogue_id"),
                        ({"dialogue_id": other[0], "turn": other[2] + 1, "prefer": first_draft}, "prefer")]:
        bad.write_text(json.dumps({"dialogue_id": first_id, "verdict": "accept"}) + "\n" + json.dumps(line) + "\n")
        capsys.readouterr()
        assert main(["verdicts", "import", "--out", str(output), str(bad)]) == 2
        assert f"seir: error: {bad}:2: field '{field}'" in capsys.readouterr().err
    assert run_sql(output, "SELECT count(*) FROM human_verdicts")[1] == [(3,)]  # a bad file stores nothing


def test_agreement_equals_scipy_on_the_same_pairs(output: Path, tmp_path: Path) -> None:
    """Every turn scored by people on two dimensions; the viewer's and the report's agreement per dimension and
    scorer equals scipy's (and a plain count of concordant pairs) on the turns' kept drafts' scores."""
    turns = run_sql(output, """SELECT d.dialogue_id, t.turn_index FROM dialogues d JOIN turns t USING (dialogue_key)
                               WHERE d.failure = '' ORDER BY ALL""")[1]
    rng = np.random.default_rng(5)
    lines = [{"dialogue_id": i, "turn": t + 1, "dimension": dim, "score": int(rng.integers(0, 6))}
             for i, t in turns for dim in ("image_quality", "text_content")]
    path = tmp_path / "scores.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines))
    assert main(["verdicts", "import", "--out", str(output), str(path)]) == 0
    points: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with duckdb.connect(str(output / "provenance.duckdb"), read_only=True) as con:
        for dimension, scorer, human, judged in con.execute("""
                SELECT h.dimension, s.scorer, h.score, s.value FROM human_verdicts h
                JOIN drafts d ON d.dialogue_key = h.dialogue_key AND d.turn_index = h.turn_index AND d.best
                JOIN scores s ON s.draft_key = d.draft_key AND s.dimension = h.dimension""").fetchall():
            points.setdefault((dimension, scorer), []).append((human, judged))
    con = open_read_only(output)
    try:
        found = {(a.dimension, a.scorer): a for a in judge_agreement(con)}
        report = write_report(con, output, 1).read_text()
    finally:
        con.close()
    assert set(found) == set(points) and {s for _, s in points} >= {"judge", "combined"}
    for pair, values in points.items():
        human, judged = np.array(values).T
        mine = found[pair]
        assert mine.n == len(values)
        for value, theirs in ((mine.spearman, stats.spearmanr(human, judged).statistic),
                              (mine.kendall, stats.kendalltau(human, judged).statistic)):
            assert (value is None and np.isnan(theirs)) or value == pytest.approx(theirs, abs=1e-9), pair
        differ = [(i, j) for i, j in itertools.combinations(range(len(human)), 2) if human[i] != human[j]]
        credit = sum(1.0 if np.sign(human[i] - human[j]) == np.sign(judged[i] - judged[j]) else
                     0.5 if judged[i] == judged[j] else 0.0 for i, j in differ)
        assert mine.pairs == len(differ) and mine.pair_accuracy == pytest.approx(credit / len(differ))
        low, high = mine.pair_accuracy_ci
        assert low <= mine.pair_accuracy <= high
    assert "The judge against people" in report and "<td>image_quality</td><td>judge</td>" in report


def test_two_viewers_at_once_lose_no_verdict(output: Path) -> None:
    """Two viewers on one output, verdicts given on both at the same time: every one is stored, once."""
    keys = [k for (k,) in run_sql(output, "SELECT dialogue_key FROM dialogues WHERE failure = ''")[1]]
    with served(output) as (first, first_url), served(output) as (second, second_url):
        def give(url: str, viewer: Viewer, offset: int) -> None:
            for i in range(8):
                verdict = {"dialogue_key": keys[(i + offset) % len(keys)], "turn": 1, "dimension": "image_quality",
                           "score": (i + offset) % 6, "note": f"{offset}-{i}"}
                assert ask(f"{url}/verdict", verdict, {"X-Seir-CSRF": viewer.csrf})[0] == 200

        threads = [threading.Thread(target=give, args=(url, viewer, offset)) for url, viewer, offset in
                   ((first_url, first, 0), (second_url, second, 3))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    notes = sorted(n for (n,) in run_sql(output, "SELECT note FROM human_verdicts")[1])
    assert notes == sorted(f"{offset}-{i}" for offset in (0, 3) for i in range(8))
    assert not list((output / "verdicts" / "inbox").glob("*.json"))


def test_a_port_in_use_is_one_line(output: Path) -> None:
    import socket

    from seir.engine.errors import SeirError
    from seir.engine.view import serve

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SeirError, match=rf"cannot serve on 127\.0\.0\.1:{port} .*pick another port with --port"):
            serve(output, port=port)
