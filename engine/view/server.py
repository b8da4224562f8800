"""``seir view``: a local web app over an output (docs/viewer.md). Pages: the list of dialogues (paged, filtered and
sorted in SQL, ``listing.py``), a dialogue (drawn by ``export/dialogue_html.py``, as report.html draws its gallery),
a draft's recorded requests, two drafts side by side, and the judge's agreement with people.

Safe by default: it binds to 127.0.0.1; on any other host every request needs the token (printed at start unless
given), taken once from ``?token=`` into a cookie. A request that writes (a verdict) needs its page's CSRF token.
Pictures are served from the output's image store by key only; nothing else on disk is served; no SQL it runs
writes. Pages need no network: no CDN, the little script they have is inline.
"""

from __future__ import annotations

import getpass
import hmac
import html
import json
import re
import secrets
import socket
import sys
import tempfile
import threading
import time
import traceback
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from seir.engine.errors import SeirError
from seir.engine.export.agreement import agreement_table, judge_agreement
from seir.engine.export.dialogue_html import STYLE, DraftRow, dialogue_html, draft_card, load_dialogue
from seir.engine.query import QueryRefused, format_lineage, lineage
from seir.engine.query.sql import format_table
from seir.engine.records import TURN_DIMENSIONS
from seir.engine.store import HumanVerdict, ImageStore, ProvenanceStore, VerdictInbox, open_read_only
from seir.engine.view.listing import PAGE_ROWS, SORTABLE, STATUSES, Listing, ListQuery, ListRefused

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
KEY = re.compile(r"^[0-9a-f]{32}$")
REFRESH_EVERY_S = 1.0
REFRESH_GAP = 5
REFRESH_MOST_S = 10.0
STORED_WAIT_S = 5.0  # how long a verdict's request waits to see it stored before answering "saved"


class Viewer:
    """The app: the output, its list, the inbox of verdicts and the folder that stores them."""

    def __init__(self, out_dir: Path, annotator: str | None = None, token: str | None = None,
                 needs_token: bool = False) -> None:
        self.out_dir = Path(out_dir)
        open_read_only(self.out_dir).close()  # a missing, damaged or older store is refused before serving
        self.annotator = annotator or getpass.getuser()
        self.token = token or (secrets.token_urlsafe(24) if needs_token else None)
        self.csrf = secrets.token_urlsafe(24)
        self.images = ImageStore(self.out_dir)
        self.inbox = VerdictInbox(self.out_dir)
        self.listing = Listing(self.out_dir, Path(tempfile.mkdtemp(prefix="seir-view-")))
        self._stop = threading.Event()
        self._stored = threading.Condition()
        self._wanted = 0  # verdicts put in the inbox...
        self._done = 0  # ...and how many of them are stored
        self.listing.refresh()
        self.store_verdicts()  # what a killed viewer left in the inbox

    def start_background(self) -> None:
        threading.Thread(target=self._keep_fresh, name="seir-view-refresh", daemon=True).start()
        threading.Thread(target=self._store_loop, name="seir-view-verdicts", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        with self._stored:
            self._stored.notify_all()
        self.listing.close()

    def _keep_fresh(self) -> None:
        # A refresh holds the store for reading, so a running writer waits that long: at most a fifth of the time.
        while not self._stop.wait(min(REFRESH_MOST_S, max(REFRESH_EVERY_S, REFRESH_GAP * self.listing.refresh_s))):
            try:
                self.listing.refresh()
            except SeirError as err:  # a store busy past the reader's wait: try again next time
                print(f"[seir] view: the list was not refreshed: {err}", file=sys.stderr, flush=True)

    def store_verdicts(self) -> int:
        if not self.inbox.waiting():  # no writer's open (and lock) for nothing
            return 0
        with ProvenanceStore(self.out_dir) as store:
            return self.inbox.fold(store)

    def _store_loop(self) -> None:
        while not self._stop.is_set():
            with self._stored:
                while self._wanted == self._done and not self._stop.is_set():
                    self._stored.wait()
                if self._stop.is_set():
                    return
                wanted = self._wanted
            try:
                self.store_verdicts()
            except SeirError as err:
                print(f"[seir] view: verdicts wait in {self.inbox.folder}: {err}", file=sys.stderr, flush=True)
                self._stop.wait(1.0)
                continue
            with self._stored:
                self._done = max(self._done, wanted)
                self._stored.notify_all()

    def record(self, fields: dict[str, Any]) -> dict[str, Any]:
        """A verdict from a page: checked against the store, saved to the inbox (durable from then on), then stored
        by the background folder; waits a little to say whether it is in provenance yet."""
        turn = fields.get("turn")
        verdict = HumanVerdict(
            dialogue_id="", turn_index=None if turn in (None, "") else int(turn) - 1,
            dimension=fields.get("dimension"), score=None if fields.get("score") is None else float(fields["score"]),
            verdict=fields.get("verdict"), stage=fields.get("stage"), draft_key=fields.get("draft_key"),
            prefer=fields.get("prefer"), other=fields.get("other"), note=str(fields.get("note") or ""),
            annotator=self.annotator, source="viewer", created_at=datetime.now(timezone.utc),
            dialogue_key=str(fields.get("dialogue_key") or ""))
        with ProvenanceStore(self.out_dir, read_only=True) as store:
            resolved = store.resolve_verdicts([("the verdict", verdict)])[0]
        self.inbox.put(resolved)
        with self._stored:
            self._wanted += 1
            mine = self._wanted
            self._stored.notify_all()
            deadline = time.monotonic() + STORED_WAIT_S
            while self._done < mine and time.monotonic() < deadline:
                self._stored.wait(deadline - time.monotonic())
            stored = self._done >= mine
        return {"saved": resolved.verdict_key, "stored": stored}

    # -- pages ------------------------------------------------------------------------------------------------------
    def list_page(self, params: dict[str, str]) -> str:
        query = ListQuery.of(params)
        columns, rows, total = self.listing.page(query)
        cells = []
        for row in rows:
            found = dict(zip(columns, row, strict=True))
            link = (f'<a href="/dialogue/{found["dialogue_key"]}">{html.escape(found["dialogue_id"])}</a>'
                    if found["dialogue_key"] else html.escape(found["dialogue_id"]))
            scores = "".join(f"<td>{'' if found[d] is None else f'{found[d]:.2f}'}</td>" for d in TURN_DIMENSIONS)
            cells.append(f"<tr class='row {found['status']}'><td>{link}</td><td>{found['status']}</td>"
                         f"<td>{html.escape(found['reason'] or '')}</td><td>{html.escape(found['seed_id'] or '')}</td>"
                         f"<td>{found['n_turns']}</td><td>{found['verdicts']}</td>{scores}</tr>")
        head = "".join(f"<th><a href='?{_with(params, sort=c, order=_flip(params, c))}'>{c}</a></th>"
                       for c in ("dialogue_id", "status", "reason", "seed", "n_turns", "verdicts", *TURN_DIMENSIONS))
        pages = -(-total // PAGE_ROWS)
        nav = (f"<p class='nav'>{total} dialogues, page {query.page + 1} of {max(pages, 1)} "
               + (f"<a rel='prev' href='?{_with(params, page=query.page - 1)}'>previous</a> "
                  if query.page > 0 else "")
               + (f"<a rel='next' href='?{_with(params, page=query.page + 1)}'>next</a>"
                  if query.page + 1 < pages else "") + "</p>")
        return _page("seir view: " + self.out_dir.name, _filters(params) + nav
                     + f"<table class='list'><tr>{head}</tr>{''.join(cells)}</table>{nav}", self.csrf)

    def dialogue_page(self, key: str) -> str | None:
        near = self.listing.located(key)
        con = open_read_only(self.out_dir)
        try:
            record = load_dialogue(con, key, near)
        finally:
            con.close()
        if record is None:
            return None
        record.pending = [v for v in self.inbox.pending() if v.dialogue_key == key]
        body = (dialogue_html(record, self._image_url, live=True)
                + "<p><button id='compare'>compare the two checked drafts</button> "
                + f"<a href='/lineage/{key}'>lineage (keys, seed, runs, versions, calls)</a></p>")
        return _page(f"{record.dialogue_id}", body, self.csrf)

    def lineage_page(self, key: str) -> str:
        tree = format_lineage(lineage(self.out_dir, key))
        return _page(f"lineage of {key}", f"<p><a href='/dialogue/{key}'>back to the dialogue</a></p>"
                     f"<pre>{html.escape(tree)}</pre>", self.csrf)

    def draft_page(self, key: str) -> str | None:
        con = open_read_only(self.out_dir)
        try:
            found = con.execute("""SELECT dr.dialogue_key, dr.turn_index, dr.stage, dr.round, dr.candidate,
                                          dr.call_keys, d.created_at, d.dialogue_id
                                   FROM drafts dr JOIN dialogues d USING (dialogue_key) WHERE dr.draft_key = ?
                                   LIMIT 1""", [key]).fetchall()
            if not found:
                return None
            dialogue_key, turn, stage, round_, candidate, call_keys, created, dialogue_id = found[0]
            # A draft's calls were committed with its dialogue, at its time: DuckDB skips every other row group.
            calls = con.execute("""
                SELECT c.call_key, c.role, c.method, c.model_id, c.revision, c.tokens_in, c.tokens_out,
                       c.latency_ms, c.cached, c.error, o.request, o.output
                FROM model_calls c LEFT JOIN call_outputs o USING (call_key)
                WHERE c.created_at = ? AND c.call_key IN (SELECT unnest(?::VARCHAR[]))""",
                                [created, call_keys or []]).fetchall()
            shown = {k: [i for _, i in sorted(images)] for k, images in _grouped(con.execute(
                "SELECT call_key, position, image_key FROM call_images WHERE call_key IN "
                "(SELECT unnest(?::VARCHAR[]))", [call_keys or []]).fetchall()).items()}
        finally:
            con.close()
        by_key = {row[0]: row for row in calls}
        parts = []
        for call_key in call_keys or []:
            if call_key not in by_key:
                continue
            _, role, method, model, revision, tokens_in, tokens_out, latency, cached, error, request, output = \
                by_key[call_key]
            pictures = "".join(f'<img src="{self._image_url(k)}" alt="sent picture">' for k in shown.get(call_key, [])
                               if self.images.path(k).is_file())
            parts.append(
                f"<section class='call'><h4>{html.escape(role)}.{html.escape(method)}: {html.escape(model or '')}"
                f"{'@' + html.escape(revision) if revision else ''}</h4><p>"
                f"{'from the cache' if cached else f'{latency or 0:.0f} ms'}, tokens {tokens_in} in, {tokens_out} "
                f"out{', error: ' + html.escape(error) if error else ''} · call {call_key}</p>{pictures}"
                f"<details open><summary>request</summary><pre>{html.escape(_pretty(request))}</pre></details>"
                f"<details><summary>answer</summary><pre>{html.escape(_pretty(output))}</pre></details></section>")
        title = f"{dialogue_id} turn {turn + 1} {stage} round {round_} candidate {candidate}"
        back = f"<p><a href='/dialogue/{dialogue_key}'>back to the dialogue</a></p>"
        return _page(title, back + ("".join(parts) or "<p>no recorded calls</p>"), self.csrf)

    def compare_page(self, first: str, second: str) -> str | None:
        con = open_read_only(self.out_dir)
        try:
            keys = {con.execute("SELECT dialogue_key FROM drafts WHERE draft_key = ?", [k]).fetchone() for k in
                    (first, second)}
            if len(keys) != 1 or None in keys:
                return None
            record = load_dialogue(con, next(iter(keys))[0])
        finally:
            con.close()
        drafts: dict[str, DraftRow] = {d.draft_key: d for d in record.drafts} if record else {}
        if first not in drafts or second not in drafts:
            return None
        a, b = drafts[first], drafts[second]
        buttons = "".join(
            f"<button class='prefer' data-prefer='{win.draft_key}' data-other='{lose.draft_key}' "
            f"data-turn='{win.turn_index + 1}' data-stage='{html.escape(win.stage)}'>prefer {side}</button> "
            for side, win, lose in (("left", a, b), ("right", b, a)))
        body = (f'<article class="dialogue" data-key="{record.dialogue_key}"><div class="drafts">'
                f"{draft_card(a, self._image_url)}{draft_card(b, self._image_url)}</div><p>{buttons}</p>"
                f"<p><a href='/dialogue/{record.dialogue_key}'>back to the dialogue</a></p></article>")
        return _page(f"{record.dialogue_id}: turn {a.turn_index + 1} {a.stage}, two drafts", body, self.csrf)

    def agreement_page(self) -> str:
        con = open_read_only(self.out_dir)
        try:
            table = agreement_table(judge_agreement(con))
            counts = con.execute("SELECT annotator, count(*), max(created_at) FROM human_verdicts GROUP BY 1 "
                                 "ORDER BY 1").fetchall()
        finally:
            con.close()
        return _page("The judge against people", table + "<h3>Verdicts</h3><pre>"
                     + html.escape(format_table(["annotator", "verdicts", "latest"], counts)) + "</pre>", self.csrf)

    def image(self, key: str) -> bytes | None:
        if not KEY.match(key):
            return None
        path = self.images.path(key)
        return path.read_bytes() if path.is_file() else None

    def _image_url(self, key: str) -> str:
        return f"/image/{key}"


def _grouped(rows: list[tuple[str, int, str]]) -> dict[str, list[tuple[int, str]]]:
    found: dict[str, list[tuple[int, str]]] = {}
    for call_key, position, image_key in rows:
        found.setdefault(call_key, []).append((position, image_key))
    return found


def _pretty(stored: str | None) -> str:
    return "" if stored is None else json.dumps(json.loads(stored), indent=1, ensure_ascii=False)


def _with(params: dict[str, str], **changed: Any) -> str:
    return html.escape(urlencode({**params, **{k: str(v) for k, v in changed.items()}}))


def _flip(params: dict[str, str], column: str) -> str:
    return "desc" if params.get("sort") == column and params.get("order", "asc") == "asc" else "asc"


def _filters(params: dict[str, str]) -> str:
    def box(name: str, label: str, width: int = 10) -> str:
        return (f"<label>{label} <input name='{name}' size='{width}' value='{html.escape(params.get(name, ''))}'>"
                "</label> ")

    statuses = "".join(f"<option{' selected' if params.get('status') == s else ''}>{s}</option>"
                       for s in ("", *STATUSES))
    bounds = "".join(box(f"min_{d}", f"{d} ≥", 3) for d in TURN_DIMENSIONS)
    sort = "".join(f"<option{' selected' if params.get('sort', 'dialogue_id') == c else ''}>{c}</option>"
                   for c in SORTABLE)
    return ("<form class='filters' method='get'><label>status <select name='status'>" + statuses + "</select></label> "
            + box("stage", "refined in stage") + box("model", "model") + box("seed", "seed")
            + box("version", "version", 4)
            + "<br>" + bounds + "<br>" + box("where", "where (SQL over dialogue_list)", 60)
            + f"<label>sort <select name='sort'>{sort}</select></label> <label>order <select name='order'>"
            + "".join(f"<option{' selected' if params.get('order') == o else ''}>{o}</option>" for o in ("asc", "desc"))
            + "</select></label> <button>show</button> <a href='/agreement'>the judge against people</a></form>")


def _page(title: str, body: str, csrf: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="csrf" content="{csrf}"><title>{html.escape(title)}</title>
<style>{STYLE}
table.list td {{ font-size: 0.85em; }} tr.row.rejected td:nth-child(2), tr.row.failed td:nth-child(2) {{ color: #b33; }}
.call pre {{ white-space: pre-wrap; max-height: 30em; overflow: auto; background: #f7f7f7; }}
.call img {{ width: 128px; }}
</style></head><body><p><a href="/">all dialogues</a></p><h1>{html.escape(title)}</h1>{body}
<script>{_SCRIPT}</script></body></html>"""


_SCRIPT = """
const csrf = document.querySelector('meta[name=csrf]').content;
async function send(verdict) {
  const answer = await fetch('/verdict', {method: 'POST', body: JSON.stringify(verdict),
    headers: {'Content-Type': 'application/json', 'X-Seir-CSRF': csrf}});
  if (!answer.ok) { alert(await answer.text()); return; }
  location.reload();
}
document.querySelectorAll('form.verdict').forEach(form => form.addEventListener('submit', event => {
  event.preventDefault();
  const kind = event.submitter.value, article = form.closest('article');
  const verdict = {dialogue_key: article.dataset.key, note: form.note.value};
  if (form.dataset.turn) verdict.turn = Number(form.dataset.turn);
  if (kind === 'score') { verdict.dimension = form.dimension.value; verdict.score = Number(form.score.value); }
  else verdict.verdict = kind;
  send(verdict);
}));
document.querySelectorAll('button.prefer').forEach(button => button.addEventListener('click', () => send({
  dialogue_key: button.closest('article').dataset.key, turn: Number(button.dataset.turn),
  stage: button.dataset.stage, prefer: button.dataset.prefer, other: button.dataset.other})));
const compare = document.getElementById('compare');
if (compare) compare.addEventListener('click', () => {
  const picked = Array.from(document.querySelectorAll('input.pick:checked')).map(box => box.value);
  if (picked.length !== 2) { alert('check two drafts to compare'); return; }
  location.href = '/compare?a=' + picked[0] + '&b=' + picked[1];
});
"""


class _Handler(BaseHTTPRequestHandler):
    viewer: Viewer
    server_version = "seir-view"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # seir's lines only; a request log would drown them

    def _authorised(self, query: dict[str, str]) -> bool:
        token = self.viewer.token
        if token is None:
            return True
        cookies = dict(part.strip().split("=", 1) for part in (self.headers.get("Cookie") or "").split(";")
                       if "=" in part)
        given = query.get("token") or cookies.get("seir_token") or \
            (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        return hmac.compare_digest(given.encode(), token.encode())

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query))
        if not self._authorised(query):
            return self._send(HTTPStatus.FORBIDDEN, "a token is needed: open the address seir view printed")
        try:
            parts = url.path.strip("/").split("/")
            page: str | bytes | None
            if url.path == "/":
                page = self.viewer.list_page({k: v for k, v in query.items() if k != "token"})
            elif parts[0] == "dialogue" and len(parts) == 2 and KEY.match(parts[1]):
                page = self.viewer.dialogue_page(parts[1])
            elif parts[0] == "lineage" and len(parts) == 2 and KEY.match(parts[1]):
                page = self.viewer.lineage_page(parts[1])
            elif parts[0] == "draft" and len(parts) == 2 and KEY.match(parts[1]):
                page = self.viewer.draft_page(parts[1])
            elif url.path == "/compare" and KEY.match(query.get("a", "")) and KEY.match(query.get("b", "")):
                page = self.viewer.compare_page(query["a"], query["b"])
            elif url.path == "/agreement":
                page = self.viewer.agreement_page()
            elif parts[0] == "image" and len(parts) == 2:
                page = self.viewer.image(parts[1])
            else:
                page = None
        except ListRefused as err:
            return self._send(HTTPStatus.BAD_REQUEST, str(err))
        except QueryRefused as err:
            return self._send(HTTPStatus.NOT_FOUND, str(err))
        except SeirError as err:
            return self._send(HTTPStatus.SERVICE_UNAVAILABLE, str(err))
        except Exception:  # a page that failed says so and the server goes on
            traceback.print_exc(file=sys.stderr)
            return self._send(HTTPStatus.INTERNAL_SERVER_ERROR, "this page failed; see the viewer's terminal")
        if page is None:
            return self._send(HTTPStatus.NOT_FOUND, "not found")
        cookie = {"Set-Cookie": f"seir_token={query['token']}; HttpOnly; SameSite=Strict; Path=/"} \
            if "token" in query and self.viewer.token else {}
        if isinstance(page, bytes):
            return self._send(HTTPStatus.OK, page, "image/png", {"Cache-Control": "max-age=86400"})
        return self._send(HTTPStatus.OK, page, "text/html; charset=utf-8", cookie)

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        if not self._authorised(dict(parse_qsl(url.query))):
            return self._send(HTTPStatus.FORBIDDEN, "a token is needed: open the address seir view printed")
        if not hmac.compare_digest((self.headers.get("X-Seir-CSRF") or "").encode(), self.viewer.csrf.encode()):
            return self._send(HTTPStatus.FORBIDDEN, "a verdict is sent from a seir view page (its CSRF token)")
        if url.path != "/verdict":
            return self._send(HTTPStatus.NOT_FOUND, "not found")
        try:
            length = int(self.headers.get("Content-Length") or 0)
            fields = json.loads(self.rfile.read(min(length, 65536)) or b"{}")
            answer = self.viewer.record(fields if isinstance(fields, dict) else {})
        except (ValueError, TypeError, SeirError) as err:
            return self._send(HTTPStatus.BAD_REQUEST, str(err))
        return self._send(HTTPStatus.OK, json.dumps(answer), "application/json")

    def _send(self, status: HTTPStatus, body: str | bytes, kind: str = "text/plain; charset=utf-8",
              headers: dict[str, str] | None = None) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
                         "script-src 'unsafe-inline'; connect-src 'self'; form-action 'self'")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def make_server(viewer: Viewer, host: str, port: int) -> ThreadingHTTPServer:
    """An HTTP server of ``viewer``'s pages on ``host``:``port`` (0: a free port), not started."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_class = type("ViewServer", (ThreadingHTTPServer,), {"address_family": family, "daemon_threads": True})
    return server_class((host, port), type("Handler", (_Handler,), {"viewer": viewer}))


def serve(out_dir: Path, host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
          annotator: str | None = None) -> None:
    """Serve the viewer until interrupted, printing its address (with the token where one is needed)."""
    print(f"[seir] view: reading {out_dir}", file=sys.stderr, flush=True)
    viewer = Viewer(out_dir, annotator, token, needs_token=host not in LOCAL_HOSTS or token is not None)
    try:
        server = make_server(viewer, host, port)
    except OSError as err:
        viewer.stop()
        raise SeirError(f"cannot serve on {host}:{port} ({err.strerror}): pick another port with --port "
                        "(0 picks a free one)") from None
    viewer.start_background()
    shown = f"[{host}]" if ":" in host else host
    address = f"http://{shown}:{server.server_address[1]}/" + (f"?token={viewer.token}" if viewer.token else "")
    print(f"[seir] view: {address} ({viewer.listing.refresh_s:.1f} s to list the dialogues; verdicts are recorded as "
          f"{viewer.annotator}; Ctrl-C stops)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        viewer.stop()
