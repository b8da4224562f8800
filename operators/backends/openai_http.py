"""What the OpenAI-compatible backends share: their options, one client, bounded concurrency, retries.

Requests go through the official ``openai`` client (its generic ``post``, so any server's extension fields travel
as they are): it retries 408, 409, 429 and 5xx (honouring ``Retry-After`` up to two minutes), connection errors and
timeouts, with exponential backoff and jitter. A reply that is not a whole JSON object (a proxy cut the body) is
retried here; other 4xx are the request's fault and fail at once, with a hint. A batch call posts its requests
concurrently, at most ``max_concurrency`` in flight per backend (so per Ray actor). A body travels as JSON, or as
``multipart/form-data`` fields beside files (``post_form``, as OpenAI's image edits take their pictures), through the
same retries and errors. The API key is read from the environment variable the job names and goes only into the
Authorization header: never into ``config()`` (so never into content keys or provenance), logs or errors.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import openai

from seir.operators.backends.base import Backend, ProbeReport
from seir.operators.context import TokenCounter

log = logging.getLogger(__name__)

ESTIMATED_PICTURE_TOKENS = 1536  # vision models spend ~256-2,900 tokens a picture; a probe measures the server's
BYTES_PER_TOKEN = 2  # BPE tokenizers average ~4 bytes a token in English; digits, code and other scripts go lower
TOKENS_PER_MESSAGE = 8  # a chat template's role markers


class EndpointError(RuntimeError):
    """The server did not answer a request usefully; the message names the URL, the status and what to check.
    ``status`` is the HTTP status of a refusal (None when the retries ran out). Either way the same request would
    fail again, so the engine stops a run whose whole batch fails with one (``stops_run``)."""

    stops_run = True

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ContextOverflow(EndpointError):
    """The server refused a request as longer than its context window. Not transient, so never retried; and not a
    reason to stop the run: only the drafts whose requests were too long fail."""

    stops_run = False
    request_only = True  # other requests to the same role go through


# How servers word a request over their window (vLLM, SGLang, llama.cpp, TGI, OpenAI).
_OVERFLOW = re.compile(r"context length|context window|context_length_exceeded|max_model_len|maximum model length|"
                       r"too many tokens|exceeds? the (?:available )?context|prompt is too long", re.IGNORECASE)


class Endpoint:
    def __init__(self, base_url: str, api_key_env: str, max_concurrency: int, timeout_s: float,
                 max_retries: int) -> None:
        self.base_url, self.api_key_env = base_url, api_key_env
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self._key = os.environ.get(api_key_env, "")
        # Without a key no Authorization header is sent at all (the client wants a key; it is never used then).
        self._client = openai.OpenAI(api_key=self._key or "unused", base_url=base_url, timeout=timeout_s,
                                     max_retries=max_retries)
        self._headers = {} if self._key else {"Authorization": openai.omit}
        self._pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="seir-http")

    def post_all(self, path: str, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Replies in the order of ``bodies``; the first request that fails for good fails the batch."""
        return self.concurrently([partial(self.post, path, body) for body in bodies])

    def concurrently(self, posts: list[Callable[[], dict[str, Any]]]) -> list[dict[str, Any]]:
        """The replies of ``posts`` (each a call of ``post`` or ``post_form``), in their order, at most
        ``max_concurrency`` in flight; the first that fails for good fails them all."""
        futures = [self._pool.submit(post) for post in posts]
        try:
            return [future.result() for future in futures]
        finally:
            for future in futures:  # after a failure, requests not yet sent are dropped rather than sent in vain
                future.cancel()

    def post(self, path: str, body: dict[str, Any], max_retries: int | None = None) -> dict[str, Any]:
        """``body`` as JSON. ``max_retries`` overrides the backend's (a probe asks once or twice, not for a minute)."""
        return self._send(path, body, None, max_retries)

    def post_form(self, path: str, fields: dict[str, Any], files: dict[str, tuple[str, bytes, str]]) -> dict[str, Any]:
        """``fields`` and ``files`` (field name -> (file name, content, content type)) as multipart/form-data."""
        return self._send(path, fields, files, None)

    def _send(self, path: str, body: dict[str, Any], files: dict[str, tuple[str, bytes, str]] | None,
              max_retries: int | None) -> dict[str, Any]:
        url = self.base_url + path
        retries = self.max_retries if max_retries is None else max_retries
        client = self._client if max_retries is None else self._client.with_options(max_retries=retries)
        # A multipart Content-Type (without boundary) makes the client send the body as form fields beside the files.
        headers = {**self._headers, "Content-Type": "multipart/form-data"} if files else self._headers
        problem = ""
        for attempt in range(retries + 1):  # the client retries the rest; a cut body is retried here
            if attempt:
                log.warning("POST %s: %s; retry %d of %d", url, problem, attempt, retries)
            try:
                reply = client.post(path, cast_to=object, body=body, files=files, options={"headers": headers})
            except openai.APIStatusError as err:
                status = err.status_code
                if status in (408, 409, 429) or status >= 500:
                    problem = f"HTTP {status}: {self._excerpt(err.response)}"
                    break
                excerpt = self._excerpt(err.response)
                if status in (400, 413, 422) and _OVERFLOW.search(excerpt):
                    raise ContextOverflow(f"the server refused a request as longer than its context window: set "
                                          "the role's context_length to the server's window, so seir fits requests "
                                          f"to it (HTTP {status} from {url}: {excerpt})", status) from None
                raise EndpointError(f"POST {url} -> HTTP {status}: {excerpt}; {self._hint(status, body)}",
                                    status) from None
            except openai.APITimeoutError:
                problem = f"no reply within timeout_s={self.timeout_s:g}"
                break
            except openai.APIConnectionError as err:
                problem = f"connection failed ({self._clean(str(err.__cause__ or err))})"
                break
            except ValueError:
                problem = "a body that is not a whole JSON object (truncated?)"
                continue
            if isinstance(reply, dict):
                return reply
            problem = "a body that is not a JSON object"
        raise EndpointError(f"POST {url} failed {retries + 1} time(s), last: {problem}; check that the "
                            f"server is up and serves model {body.get('model')!r}, or raise the role's options "
                            f"max_retries / timeout_s if it is just busy or slow")

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
            listed = self._client.with_options(max_retries=1).get("/models", cast_to=object,
                                                                  options={"headers": self._headers})["data"]
        except (openai.OpenAIError, ValueError, KeyError, TypeError):
            return []
        return [entry for entry in listed if isinstance(entry, dict)] if isinstance(listed, list) else []

    def _excerpt(self, response: Any) -> str:
        return self._clean(response.text[:300]) or "(empty body)"

    def _clean(self, text: str) -> str:
        """One line (the engine reports an error's last line), with the key masked should a server echo it."""
        text = " ".join(text.split())
        return text.replace(self._key, "***") if self._key else text


class OpenAIBackend(Backend):
    """Base of the backends that call an OpenAI-compatible server. ``model`` is the served model name; the revision
    is the job's, else "server" (the weights are the server's, not ours to fingerprint). ``config()`` holds the
    base URL and the options that change outputs (subclasses add theirs to ``self.options``), not the ones that
    only change how requests travel."""

    def __init__(self, model: str, revision: str | None = None, *, base_url: str,
                 api_key_env: str = "OPENAI_API_KEY", max_concurrency: int = 8, timeout_s: float = 120.0,
                 max_retries: int = 4, picture_tokens: int = ESTIMATED_PICTURE_TOKENS, **unknown: Any) -> None:
        self.refuse_unknown(unknown)
        if max_concurrency < 1 or timeout_s <= 0 or max_retries < 0:
            raise ValueError(f"backend {self.name!r}: need max_concurrency >= 1, timeout_s > 0 and max_retries >= 0")
        base_url = base_url.rstrip("/")
        super().__init__(model, revision or "server", base_url=base_url)
        self.endpoint = Endpoint(base_url, api_key_env, max_concurrency, timeout_s, max_retries)
        self.picture_tokens = picture_tokens  # raised by a vision probe to what the server counted for one picture
        self.context_length: int | None = None

    def probe(self, needs: frozenset[str]) -> ProbeReport:
        """What every endpoint role checks: whether the model is among those the server lists (when it lists any),
        and the context length it reports. Subclasses check what their methods need; a model that is not listed is
        a problem there (some servers take names they do not list, e.g. Ollama's without ":latest")."""
        report = ProbeReport(self.endpoint.base_url, self.model_id)
        listed = self.endpoint.models()
        entry = next((m for m in listed if m.get("id") == self.model_id), None)
        report.served = (entry is not None) if listed else None
        report.context_length = self.context_length = _context_length(entry or {})
        return report

    def context(self) -> tuple[int | None, TokenCounter | None]:
        return self.context_length, EstimatedTokens(self.picture_tokens)

    def not_served(self) -> str:
        return (f"model {self.model_id!r} is not among those it serves ({self.endpoint._served_models()}): set the "
                f"role's model to a served name, or base_url to the server that serves it")


@dataclass
class EstimatedTokens:
    """A count for a server whose tokenizer is not here, erring on the safe side: more tokens than the server will
    count, so a fitted request is not refused (and a refusal is read as ``ContextOverflow`` all the same)."""

    picture_tokens: int

    def count(self, messages: list[dict[str, Any]], suffix: str = "") -> int:
        text = len(suffix.encode())
        pictures = 0
        for message in messages:
            content = message.get("content")
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
            text += sum(len(part.get("text", "").encode()) for part in parts)
            pictures += sum(part.get("type") == "image" for part in parts)
        return (-(-text // BYTES_PER_TOKEN) + TOKENS_PER_MESSAGE * (len(messages) + 1)
                + pictures * self.picture_tokens)


def _context_length(entry: dict[str, Any]) -> int | None:
    """The context length a ``/models`` entry reports, under the names servers use (vLLM: max_model_len; llama.cpp:
    meta.n_ctx_train; others: context_length or context_window)."""
    for value in (entry.get("max_model_len"), entry.get("context_length"), entry.get("context_window"),
                  (entry.get("meta") or {}).get("n_ctx_train")):
        if isinstance(value, int) and value > 0:
            return value
    return None
