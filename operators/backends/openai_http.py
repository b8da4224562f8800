"""What the OpenAI-compatible backends share: their options, one pooled HTTP client, bounded concurrency, retries.

A batch call posts its requests concurrently, at most ``max_concurrency`` in flight per backend (so per Ray actor).
A request is retried, with exponential backoff and jitter, on 408, 429 and 5xx (honouring ``Retry-After``),
connection errors, timeouts, and replies that are not a whole JSON object (a proxy cut the body); other 4xx are the
request's fault and fail at once. The API key is read from the environment variable the job names and goes only
into the Authorization header: never into ``config()`` (so never into content keys or provenance), logs or errors.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

import httpx

from seir.operators.backends.base import Backend, ProbeReport

log = logging.getLogger(__name__)


class EndpointError(RuntimeError):
    """The server did not answer a request usefully; the message names the URL, the status and what to check.
    ``status`` is the HTTP status of a refusal (None when the retries ran out). Either way the same request would
    fail again, so the engine stops a run whose whole batch fails with one (``stops_run``)."""

    stops_run = True

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Endpoint:
    def __init__(self, base_url: str, api_key_env: str, max_concurrency: int, timeout_s: float, max_retries: int,
                 backoff_s: float) -> None:
        self.base_url, self.api_key_env = base_url, api_key_env
        self.timeout_s, self.max_retries, self.backoff_s = timeout_s, max_retries, backoff_s
        self._key = os.environ.get(api_key_env, "")
        self._client = httpx.Client(
            headers={"Authorization": f"Bearer {self._key}"} if self._key else {}, timeout=timeout_s,
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
        )
        self._pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="seir-http")

    def post_all(self, path: str, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Replies in the order of ``bodies``; the first request that fails for good fails the batch."""
        futures = [self._pool.submit(self.post, path, body) for body in bodies]
        try:
            return [future.result() for future in futures]
        finally:
            for future in futures:  # after a failure, requests not yet sent are dropped rather than sent in vain
                future.cancel()

    def post(self, path: str, body: dict[str, Any], max_retries: int | None = None) -> dict[str, Any]:
        """``max_retries`` overrides the backend's (a probe asks once or twice, not for a minute)."""
        url = self.base_url + path
        problem, wait_s = "", 0.0
        retries = self.max_retries if max_retries is None else max_retries
        for attempt in range(retries + 1):
            if attempt:
                log.warning("POST %s: %s; retry %d of %d", url, problem, attempt, retries)
                time.sleep(self._delay(attempt, wait_s))
            wait_s = 0.0
            try:
                response = self._client.post(url, json=body)
            except httpx.TimeoutException:
                problem = f"no reply within timeout_s={self.timeout_s:g}"
                continue
            except httpx.TransportError as err:
                problem = f"connection failed ({type(err).__name__}: {self._clean(str(err))})"
                continue
            status = response.status_code
            if status in (408, 429) or status >= 500:
                problem, wait_s = f"HTTP {status}: {self._excerpt(response)}", _retry_after(response)
                continue
            if response.is_error:
                raise EndpointError(f"POST {url} -> HTTP {status}: {self._excerpt(response)}; "
                                    f"{self._hint(status, body)}", status)
            reply = _json_object(response)
            if reply is not None:
                return reply
            problem = f"HTTP {status} with a body that is not a whole JSON object (truncated?)"
        raise EndpointError(f"POST {url} failed {retries + 1} time(s), last: {problem}; check that the "
                            f"server is up and serves model {body.get('model')!r}, or raise the role's options "
                            f"max_retries / timeout_s if it is just busy or slow")

    def _delay(self, attempt: int, retry_after: float) -> float:
        base = self.backoff_s * 2 ** (attempt - 1)
        return max(retry_after, base / 2 + random.uniform(0, base / 2))  # jitter: retries of a batch spread out

    def _hint(self, status: int, body: dict[str, Any]) -> str:
        if status in (401, 403):
            return (f"put a valid API key in ${self.api_key_env}" if self._key
                    else f"no API key was sent: set ${self.api_key_env}, or name another variable in api_key_env")
        if status == 404:
            return (f"check base_url (it usually ends in /v1) and the model name {body.get('model')!r}; the server "
                    f"serves: {self._served_models()}")
        return "the server refused the request as sent; its message says which field"

    def _served_models(self) -> str:
        listed = self.models()
        return ", ".join(str(model.get("id")) for model in listed) if listed else "(GET /models did not say)"

    def models(self) -> list[dict[str, Any]]:
        """The entries of ``GET /models`` (empty when the server lists none or has no such route)."""
        try:
            listed = self._client.get(self.base_url + "/models").json()["data"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return []
        return [entry for entry in listed if isinstance(entry, dict)] if isinstance(listed, list) else []

    def _excerpt(self, response: httpx.Response) -> str:
        return self._clean(response.text[:300]) or "(empty body)"

    def _clean(self, text: str) -> str:
        """One line (the engine reports an error's last line), with the key masked should a server echo it."""
        text = " ".join(text.split())
        return text.replace(self._key, "***") if self._key else text


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        reply = response.json()
    except ValueError:
        return None
    return reply if isinstance(reply, dict) else None


def _retry_after(response: httpx.Response) -> float:
    """Seconds the server asked us to wait, as delta-seconds or an HTTP date; 0 when it did not say."""
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


class OpenAIBackend(Backend):
    """Base of the backends that call an OpenAI-compatible server. ``model`` is the served model name; the revision
    is the job's, else "server" (the weights are the server's, not ours to fingerprint). ``config()`` holds the
    base URL and the options that change outputs (subclasses add theirs to ``self.options``), not the ones that
    only change how requests travel."""

    def __init__(self, model: str, revision: str | None = None, *, base_url: str,
                 api_key_env: str = "OPENAI_API_KEY", max_concurrency: int = 8, timeout_s: float = 120.0,
                 max_retries: int = 4, backoff_s: float = 1.0, **unknown: Any) -> None:
        self.refuse_unknown(unknown)
        if max_concurrency < 1 or timeout_s <= 0 or max_retries < 0 or backoff_s < 0:
            raise ValueError(f"backend {self.name!r}: need max_concurrency >= 1, timeout_s > 0, max_retries >= 0 and "
                             f"backoff_s >= 0")
        base_url = base_url.rstrip("/")
        super().__init__(model, revision or "server", base_url=base_url)
        self.endpoint = Endpoint(base_url, api_key_env, max_concurrency, timeout_s, max_retries, backoff_s)

    def probe(self, needs: frozenset[str]) -> ProbeReport:
        """What every endpoint role checks: whether the model is among those the server lists (when it lists any),
        and the context length it reports. Subclasses check what their methods need; a model that is not listed is
        a problem there (some servers take names they do not list, e.g. Ollama's without ":latest")."""
        report = ProbeReport(self.endpoint.base_url, self.model_id)
        listed = self.endpoint.models()
        entry = next((m for m in listed if m.get("id") == self.model_id), None)
        report.served = (entry is not None) if listed else None
        report.context_length = _context_length(entry or {})
        return report

    def not_served(self) -> str:
        return (f"model {self.model_id!r} is not among those it serves ({self.endpoint._served_models()}): set the "
                f"role's model to a served name, or base_url to the server that serves it")


def _context_length(entry: dict[str, Any]) -> int | None:
    """The context length a ``/models`` entry reports, under the names servers use (vLLM: max_model_len; llama.cpp:
    meta.n_ctx_train; others: context_length or context_window)."""
    for value in (entry.get("max_model_len"), entry.get("context_length"), entry.get("context_window"),
                  (entry.get("meta") or {}).get("n_ctx_train")):
        if isinstance(value, int) and value > 0:
            return value
    return None
