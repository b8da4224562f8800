"""An OpenAI-compatible HTTP server over the real tiny models, for tests (a fixture, not product code).

It serves ``GET /v1/models``, ``POST /v1/chat/completions`` (``image_url`` data URLs, seed, ``n``,
``continue_final_message``, and ``logprobs``/``top_logprobs`` of the first generated token, read from the model's
real next-token distribution), ``POST /v1/completions`` (one token of a raw prompt with ``logprobs`` top tokens),
``POST /v1/images/generations`` and ``POST /v1/images/edits`` (multipart/form-data, as OpenAI's API takes it, for a
model whose backend edits; ``edit_form`` keeps the last one's parsed fields) through the local backends, so a remote
backend's results can be held against the local ones. ``continues = False`` and ``logprobs = False`` make it ignore
those fields, as many servers do.

``server.context_length = N`` makes it report N as ``max_model_len`` (as vLLM does) and refuse, as vLLM words it
(HTTP 400), a chat request whose prompt and ``max_tokens`` exceed N, counted by the model's own tokenizer.

Faults: ``server.faults.extend(["500", "429", "hang", "truncate"])`` spoils the next requests, one fault each;
``server.always = "503"`` spoils every request; ``server.fault_path`` limits them to one path. A number is answered
as that HTTP status (429 with ``Retry-After``), "hang" sleeps ``hang_s`` and closes unanswered, "truncate" cuts the
JSON body in half. ``requests`` records what came in.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from seir.operators.backends.base import Backend, ChatRequest, ChatResult, RenderRequest, Sampling, text_of
from seir.operators.backends.transformers_chat import ChatTokenCounter
from seir.operators.registry import lookup


class _ContinueFinal:
    """Mixed into a local chat backend: a final assistant message marked ``continue`` is left open, as vLLM's
    ``continue_final_message`` leaves it, instead of being closed and followed by a new generation prompt."""

    def _prompt(self, messages: list[dict[str, Any]]) -> str:
        if messages[-1].get("continue"):
            return super()._prompt(messages[:-1]) + text_of(messages[-1])  # type: ignore[misc]
        return super()._prompt(messages)  # type: ignore[misc]


def _local(backend: str, model: str) -> Backend:
    cls = lookup("backend", backend)
    if "chat" in cls.capabilities:
        cls = type(f"Continuing{cls.__name__}", (_ContinueFinal, cls), {})
    return cls(model)


@dataclass
class _Waiting:
    requests: list[ChatRequest]
    results: list[ChatResult] | None = None
    done: threading.Event = field(default_factory=threading.Event)


class _Batcher:
    """Chat requests that arrive while the model is busy go through it together, as a serving engine batches them:
    whoever gets the model lock runs everything waiting, its own requests included."""

    def __init__(self, backend: Backend, model_lock: threading.Lock) -> None:
        self.backend, self.model_lock = backend, model_lock
        self.waiting: list[_Waiting] = []
        self.waiting_lock = threading.Lock()

    def run(self, requests: list[ChatRequest]) -> list[ChatResult]:
        mine = _Waiting(requests)
        with self.waiting_lock:
            self.waiting.append(mine)
        with self.model_lock:
            if not mine.done.is_set():
                with self.waiting_lock:
                    batch, self.waiting = self.waiting, []
                try:
                    results = iter(self.backend.chat([r for w in batch for r in w.requests]))
                    for w in batch:
                        w.results = [next(results) for _ in w.requests]
                finally:
                    for w in batch:
                        w.done.set()
        if mine.results is None:
            raise RuntimeError("the batch this request was in failed")
        return mine.results


class OpenAIServer:
    """``models``: served model name -> local backend name, e.g. ``{"tiny:llm": "transformers-chat"}``."""

    def __init__(self, models: dict[str, str]) -> None:
        self.backends = {name: _local(backend, name) for name, backend in models.items()}
        self.faults: deque[str] = deque()
        self.requests: list[dict[str, Any]] = []
        self.reset()
        self._model_lock = threading.Lock()  # one model call at a time: a fast tokenizer is not thread-safe
        self._batchers = {name: _Batcher(backend, self._model_lock) for name, backend in self.backends.items()}
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._http.daemon_threads = True  # a hung reply must not hold up shutdown
        self.url = f"http://127.0.0.1:{self._http.server_port}/v1"

    def __enter__(self) -> OpenAIServer:
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()

    def reset(self) -> None:
        """No faults, nothing recorded, default behaviour."""
        self.faults.clear()
        self.requests.clear()
        self.always: str | None = None
        self.fault_path: str | None = None  # set: faults spoil only requests to this path
        self.hang_s = 2.0
        self.retry_after = "1"
        self.delay_s = 0.0  # added to every reply outside the model lock, like a remote server's network and queue
        self.logprobs = True  # False: ignore logprobs, like servers that do not support them
        self.continues = True  # False: ignore continue_final_message, like servers that do not know it
        self.image_format = "PNG"
        self.context_length: int | None = None  # set: reported by /models and enforced on chat requests
        self.edit_form: dict[str, Any] | None = None  # the last edit's fields; its file as filename/content_type/data

    def next_fault(self) -> str | None:
        try:
            return self.always or self.faults.popleft()
        except IndexError:
            return None

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        model = body["model"]
        messages = [_from_wire(m) for m in body["messages"]]
        if self.context_length is not None:
            tokens = ChatTokenCounter(self.backends[model].processor).count(messages)
            if tokens + body.get("max_tokens", 16) > self.context_length:
                raise Refused(400, f"This model's maximum context length is {self.context_length} tokens. However, "
                                   f"you requested {tokens + body.get('max_tokens', 16)} tokens ({tokens} in the "
                                   f"messages, {body.get('max_tokens', 16)} in the completion). Please reduce the "
                                   "length of the messages or completion.")
        if body.get("continue_final_message") and self.continues:
            messages[-1]["continue"] = True
        logprobs = None
        if body.get("logprobs") and self.logprobs:  # one forward pass: the reply's token is the most likely one
            backend = self.backends[model]
            top, tokens_in = self._top_logprobs(backend, backend._prompt(messages), messages,
                                                body.get("top_logprobs", 0))
            results = [ChatResult(top[0]["token"], tokens_in, 1, "length")]
            logprobs = {"content": [{**top[0], "top_logprobs": top}]}
        else:
            sampling = Sampling(body.get("max_tokens", 16), body.get("temperature", 1.0), body.get("top_p", 1.0),
                                body.get("seed", 0))
            results = self._batchers[model].run([ChatRequest(messages, replace(sampling, seed=sampling.seed + i))
                                                 for i in range(body.get("n", 1))])
        choices = [{"index": i, "message": {"role": "assistant", "content": r.text}, "finish_reason": r.finish_reason,
                    "logprobs": logprobs} for i, r in enumerate(results)]
        completion = sum(r.tokens_out for r in results)
        return {"object": "chat.completion", "model": model, "choices": choices,
                "usage": {"prompt_tokens": results[0].tokens_in, "completion_tokens": completion,
                          "total_tokens": results[0].tokens_in + completion}}

    def completions(self, body: dict[str, Any]) -> dict[str, Any]:
        """One token of the raw prompt: the most likely, with the top ``logprobs`` tokens when asked."""
        backend, k = self.backends[body["model"]], body.get("logprobs") if self.logprobs else None
        top, tokens_in = self._top_logprobs(backend, body["prompt"], [], k or 1)
        logprobs = {"tokens": [top[0]["token"]], "token_logprobs": [top[0]["logprob"]],
                    "top_logprobs": [{t["token"]: t["logprob"] for t in top}]} if k else None
        return {"object": "text_completion", "model": body["model"],
                "choices": [{"index": 0, "text": top[0]["token"], "finish_reason": "length", "logprobs": logprobs}],
                "usage": {"prompt_tokens": tokens_in, "completion_tokens": 1, "total_tokens": tokens_in + 1}}

    def _top_logprobs(self, backend: Any, prompt: str, messages: list[dict[str, Any]],
                      k: int) -> tuple[list[dict[str, Any]], int]:
        import torch

        with self._model_lock, torch.inference_mode():
            inputs = backend._inputs([prompt], [messages])
            logprobs = backend.model(**inputs).logits[0, -1].float().log_softmax(-1)
        values, ids = logprobs.topk(min(max(k, 1), logprobs.numel()))
        top = [{"token": backend.tokenizer.decode([i]), "logprob": v}
               for v, i in zip(values.tolist(), ids.tolist(), strict=True)]
        return top, inputs["input_ids"].shape[1]

    def images(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._render(self.backends[body["model"]], body)

    def edits(self, form: dict[str, Any]) -> dict[str, Any]:
        self.edit_form = form
        backend = self.backends[form["model"]]
        if "edit" not in backend.capabilities:
            raise Refused(400, f"model {form['model']} does not edit images")
        strength = float(form["strength"]) if "strength" in form else None  # None: the backend's default
        return self._render(backend, form, source=form["image"]["data"], strength=strength)

    def _render(self, backend: Backend, body: dict[str, Any], **edit: Any) -> dict[str, Any]:
        """Form fields arrive as strings, JSON ones as numbers: both are read with int() and float()."""
        from PIL import Image

        width, height = (int(side) for side in body["size"].split("x"))
        request = RenderRequest(body["prompt"], int(body.get("seed", 0)), width, height,
                                int(body.get("num_inference_steps", 30)), float(body.get("guidance_scale", 7.5)),
                                body.get("negative_prompt", ""), **edit)
        with self._model_lock:
            png = backend.render([request])[0].png
        if self.image_format != "PNG":
            buffer = io.BytesIO()
            Image.open(io.BytesIO(png)).save(buffer, format=self.image_format, lossless=True)
            png = buffer.getvalue()
        return {"created": int(time.time()), "data": [{"b64_json": base64.b64encode(png).decode()}]}


def _from_wire(message: dict[str, Any]) -> dict[str, Any]:
    content = message["content"]
    if isinstance(content, list):
        content = [{"type": "image", "image": base64.b64decode(p["image_url"]["url"].partition(",")[2])}
                   if p["type"] == "image_url" else p for p in content]
    return {"role": message["role"], "content": content}


def _form(content_type: str, data: bytes) -> dict[str, Any]:
    """A multipart/form-data body, read by the standard library's MIME parser: each text field as a string, each
    file as its filename, content_type and data."""
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + data)
    form: dict[str, Any] = {}
    for part in message.iter_parts():
        name, payload = part.get_param("name", header="content-disposition"), part.get_payload(decode=True)
        filename = part.get_filename()
        form[name] = payload.decode() if filename is None else {"filename": filename, "data": payload,
                                                                "content_type": part.get_content_type()}
    return form


class Refused(Exception):
    """A request the server answers with an error status, as a real one would."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _handler(server: OpenAIServer) -> type[BaseHTTPRequestHandler]:
    routes = {"/v1/chat/completions": server.chat, "/v1/completions": server.completions,
              "/v1/images/generations": server.images, "/v1/images/edits": server.edits}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            if self.path == "/v1/models":
                window = {"max_model_len": server.context_length} if server.context_length else {}
                models = [{"id": name, "object": "model", **window} for name in server.backends]
                self._send(200, {"object": "list", "data": models})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            data = self.rfile.read(int(self.headers["Content-Length"]))
            content_type = self.headers.get("Content-Type", "")
            body = _form(content_type, data) if content_type.startswith("multipart/form-data") else json.loads(data)
            auth = self.headers.get("Authorization")
            server.requests.append({"path": self.path, "body": body, "authorization": auth})
            fault = server.next_fault() if server.fault_path in (None, self.path) else None
            if fault and fault.isdigit():
                # Echo the key in the message, as a careless server might: the client must not pass it on.
                return self._send(int(fault), {"error": {"message": f"injected fault (auth: {auth})"}},
                                  {"Retry-After": server.retry_after} if fault == "429" else {})
            if fault == "hang":  # sleep past the client's timeout, then drop the connection unanswered
                time.sleep(server.hang_s)
                return None
            if self.path not in routes or body.get("model") not in server.backends:
                return self._send(404, {"error": {"message": f"no route {self.path} for model {body.get('model')}"}})
            time.sleep(server.delay_s)
            try:
                reply = json.dumps(routes[self.path](body)).encode()
            except Refused as refused:
                return self._send(refused.status, {"error": {"message": str(refused), "type": "BadRequestError"}})
            self._send(200, reply[: len(reply) // 2] if fault == "truncate" else reply)

        def _send(self, status: int, payload: dict[str, Any] | bytes, headers: dict[str, str] | None = None) -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            try:
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting: nobody to answer
                pass

    return Handler
