"""Chat and scores from any OpenAI-compatible server (vLLM, SGLang, TGI, llama.cpp, Ollama, OpenAI, ``transformers
serve``): the ``openai-chat`` backend.

Chat posts ``/chat/completions`` with the request's temperature, top_p, max_tokens and seed; image parts travel as
``data:`` URLs in ``image_url`` parts.

A score is read as the local backends read it (see ``ScoreRequest``): an expectation over the labels of the judge's
next answer after its partial answer (``answer_prefix``). Servers differ in what they allow, so there are four ways,
best first (``SCORE_METHODS``); ``score_method: auto`` (the default) takes the first the server supports, found by
``probe`` when the pool starts, and a job may pin one:

1. ``continue-logprobs``: the conversation plus the partial assistant message, left open with
   ``continue_final_message: true, add_generation_prompt: false`` (vLLM and SGLang), one token with
   ``top_logprobs``.
2. ``answer-logprobs``: a plain chat request, the partial answer closed as an assistant message and a user message
   asking for the score alone; the one-token answer's ``top_logprobs`` (OpenAI, TGI, llama.cpp, Ollama).
3. ``completions-logprobs``: ``/completions`` on the prompt rendered here with the model's chat template (the
   ``tokenizer`` option, default the model name when it is a local folder or a cached hub id) plus the partial
   answer; ``logprobs`` top tokens. Text only: a request with images is sampled instead.
4. ``sampled``: ``score_samples`` answers at temperature 1 (with ``n`` where the server honours it, else one
   request per sample with its own seed), each read as the label it starts with: the continuation's first token
   where ``continue_final_message`` works, else the plain request's short answer.

With logprobs, each listed token whose text, stripped of whitespace, is a label adds its probability to that label
(so "5" and " 5" both count); unlisted labels get 0. Servers list at most their top ``top_logprobs`` tokens (OpenAI
and vLLM's default ``--max-logprobs`` allow 20), so an off-format answer can leave every label unlisted: the
probabilities are then uniform and ``label_mass`` 0, which the judge reads as off-format. Sampled, the
probabilities are the labels' shares of the readable samples and ``label_mass`` the readable share of all samples:
coarser (steps of 1/n) and noisier. A reply that came without logprobs is sampled instead. Each ``ScoreResult``
says which method produced it.
"""

from __future__ import annotations

import base64
import math
import re
from typing import Any

from seir.operators.backends.base import (
    ChatRequest,
    ChatResult,
    ProbeReport,
    Sampling,
    ScoreRequest,
    ScoreResult,
    image_parts,
    label_expectation,
    template_switches,
)
from seir.operators.backends.openai_http import EndpointError, OpenAIBackend
from seir.operators.base import register

CHAT_PATH = "/chat/completions"
COMPLETIONS_PATH = "/completions"
SCORE_METHODS = ("continue-logprobs", "answer-logprobs", "completions-logprobs", "sampled")
LOGPROB_METHODS = SCORE_METHODS[:3]
CONTINUE = {"continue_final_message": True, "add_generation_prompt": False}  # vLLM and SGLang extensions
SAMPLED_ANSWER_TOKENS = 4  # a plain answer may open with markup or a space before the label
PROBE_RETRIES = 1
_PROBE_SCORE = ScoreRequest([{"role": "user", "content": "Rate from 0 to 5 how well this answers the question "
                                                          "'What is the capital of France?': 'Paris.'"}],
                            "The answer is right and brief.\n\nScore (0-5): ")


def wire_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """seir's messages in the OpenAI wire format: image bytes become base64 ``data:`` URLs."""
    return [m if isinstance(m.get("content"), str) else {**m, "content": [_wire_part(p) for p in m["content"]]}
            for m in messages]


def _wire_part(part: dict[str, Any]) -> dict[str, Any]:
    if part.get("type") != "image":
        return part
    data: bytes = part["image"]
    mime = "image/jpeg" if data.startswith(b"\xff\xd8") else "image/png"  # the contract allows PNG or JPEG bytes
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{base64.b64encode(data).decode()}"}}


def label_distribution(labels: tuple[str, ...], mass: list[float], tokens_in: int, method: str) -> ScoreResult:
    """Per-label probability mass (from logprobs or sample shares) renormalised; the total says how on-format the
    model was. With no mass on any label the probabilities are uniform, so the expectation is the scale's middle."""
    total = sum(mass)
    probabilities = [m / total for m in mass] if total > 0 else [1 / len(labels)] * len(labels)
    expectation = label_expectation(labels, probabilities)
    return ScoreResult(probabilities, expectation, min(total, 1.0), tokens_in, method=method)


def answer_alone(request: ScoreRequest) -> list[dict[str, Any]]:
    """The score as a plain chat turn, for servers that cannot continue a message: the partial answer closed as the
    judge's own message, then a user message asking for the score alone."""
    labels = ", ".join(request.labels)
    return [*request.messages, {"role": "assistant", "content": request.answer_prefix.rstrip()},
            {"role": "user", "content": f"Reply with the score alone: one of {labels}, and nothing else."}]


@register
class OpenAIChat(OpenAIBackend):
    name = "openai-chat"
    capabilities = frozenset({"chat", "score", "vision"})  # image parts travel as data: URLs; the server decides

    def __init__(self, model: str, revision: str | None = None, *, score_method: str = "auto",
                 top_logprobs: int = 20, score_samples: int = 5, tokenizer: str | None = None,
                 chat_template_kwargs: dict[str, Any] | None = None, **options: Any) -> None:
        if score_method not in ("auto", *SCORE_METHODS):
            raise ValueError(f"backend 'openai-chat': score_method must be auto or one of {', '.join(SCORE_METHODS)}, "
                             f"not {score_method!r}")
        if top_logprobs < 1 or score_samples < 1:
            raise ValueError("backend 'openai-chat': top_logprobs and score_samples must be at least 1")
        super().__init__(model, revision, **options)
        self.score_method, self.top_logprobs, self.score_samples = score_method, top_logprobs, score_samples
        self.tokenizer_ref = tokenizer
        self.options.update(score_method=score_method, top_logprobs=top_logprobs, score_samples=score_samples,
                            tokenizer=tokenizer)
        # Switches of the served model's chat template (Qwen3's enable_thinking), sent with every request as vLLM
        # and SGLang take them; keyed only when set.
        self.template_options = template_switches(self.name, chat_template_kwargs)
        if self.template_options:
            self.options["chat_template_kwargs"] = self.template_options
        # What the server supports, learnt by ``probe`` (or on the first score, in an actor Ray restarted).
        self.method: str | None = None if score_method == "auto" else score_method
        self.continues: bool | None = None  # continue_final_message honoured
        self.samples_with_n: bool | None = None  # ``n`` honoured
        self.probed = False
        self._template: Any = None

    def config(self) -> dict[str, Any]:
        """The method a probe chose is part of what determines a score, so of every score's content key."""
        config = super().config()
        if self.method is not None:
            config["score_method"] = self.method
        return config

    # -- chat -------------------------------------------------------------------------------------------------------
    def chat(self, requests: list[ChatRequest]) -> list[ChatResult]:
        bodies = [self._body(r.messages, r.sampling) for r in requests]
        return [_chat_result(reply) for reply in self.endpoint.post_all(CHAT_PATH, bodies)]

    def _body(self, messages: list[dict[str, Any]], sampling: Sampling, **extra: Any) -> dict[str, Any]:
        body = {"model": self.model_id, "messages": wire_messages(messages), "max_tokens": sampling.max_new_tokens,
                "temperature": sampling.temperature, "top_p": sampling.top_p, "seed": sampling.seed, **extra}
        if self.template_options:
            body["chat_template_kwargs"] = self.template_options
        return body

    # -- scores -----------------------------------------------------------------------------------------------------
    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        if not self.probed:
            self._probe_scoring(ProbeReport(self.endpoint.base_url, self.model_id))
        results: list[ScoreResult | None] = [None] * len(requests)
        if self.method in LOGPROB_METHODS:
            results = self._logprob_scores(requests)
        todo = [i for i, result in enumerate(results) if result is None]
        for i, result in zip(todo, self._sampled([requests[i] for i in todo]), strict=True):
            results[i] = result
        return [result for result in results if result is not None]

    def _logprob_scores(self, requests: list[ScoreRequest]) -> list[ScoreResult | None]:
        """None for each reply without logprobs, and (completions) each request with images: sampled instead."""
        method = self.method
        if method == "completions-logprobs":
            texts = [i for i, r in enumerate(requests) if not any(image_parts(m) for m in r.messages)]
            replies = self.endpoint.post_all(COMPLETIONS_PATH, [self._completion(requests[i]) for i in texts])
            results: list[ScoreResult | None] = [None] * len(requests)
            for i, reply in zip(texts, replies, strict=True):
                results[i] = _read_logprobs(requests[i].labels, _completion_top(reply), reply, method)
            return results
        bodies = [self._logprob_body(method, r) for r in requests]
        return [_read_logprobs(r.labels, _chat_top(reply), reply, method)  # type: ignore[arg-type]
                for r, reply in zip(requests, self.endpoint.post_all(CHAT_PATH, bodies), strict=True)]

    def _logprob_body(self, method: str | None, request: ScoreRequest) -> dict[str, Any]:
        top = {"logprobs": True, "top_logprobs": self.top_logprobs}
        if method == "continue-logprobs":
            return self._continuation(request, **top)
        return self._body(answer_alone(request), _ONE_TOKEN, **top)

    def _continuation(self, request: ScoreRequest, **extra: Any) -> dict[str, Any]:
        """One token after the judge's partial answer, left open rather than closed by the chat template.
        Temperature 1: servers that apply temperature before reporting logprobs then report the model's own."""
        messages = [*request.messages, {"role": "assistant", "content": request.answer_prefix}]
        return self._body(messages, _ONE_TOKEN, **CONTINUE, **extra)

    def _completion(self, request: ScoreRequest, **extra: Any) -> dict[str, Any]:
        prompt = self._chat_template().apply_chat_template(request.messages, add_generation_prompt=True, tokenize=False,
                                                           **self.template_options) + request.answer_prefix
        return {"model": self.model_id, "prompt": prompt, "max_tokens": 1, "temperature": 1.0,
                "logprobs": self.top_logprobs, **extra}

    def _chat_template(self) -> Any:
        """The served model's tokenizer, loaded here to render its chat template (raises when there is none)."""
        if self._template is None:
            from transformers import AutoTokenizer

            from seir.operators.backends.tiny import resolve_model_ref

            self._template = AutoTokenizer.from_pretrained(resolve_model_ref(self.tokenizer_ref or self.model_id))
        return self._template

    def _sampled(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        """``score_samples`` answers per request: one request with ``n``, or one per sample with its own seed."""
        if not requests:
            return []
        n = self.score_samples
        per_request = 1 if self.samples_with_n else n
        bodies = [self._sample_body(r, seed, n=n) if self.samples_with_n else self._sample_body(r, seed)
                  for r in requests for seed in range(per_request)]
        replies = self.endpoint.post_all(CHAT_PATH, bodies)
        results = []
        for i, request in enumerate(requests):
            mine = replies[i * per_request : (i + 1) * per_request]
            choices = [choice for reply in mine for choice in _choices(reply)]
            results.append(_read_samples(request.labels, {"choices": choices, "usage": mine[0].get("usage")}))
        return results

    def _sample_body(self, request: ScoreRequest, seed: int, **extra: Any) -> dict[str, Any]:
        if self.continues:
            return {**self._continuation(request, **extra), "seed": seed}
        return self._body(answer_alone(request), Sampling(SAMPLED_ANSWER_TOKENS, temperature=1.0, seed=seed), **extra)

    # -- probe ------------------------------------------------------------------------------------------------------
    def probe(self, needs: frozenset[str]) -> ProbeReport:
        report = super().probe(needs)
        if not needs & {"chat", "score", "vision"} or report.problems:
            return report
        text = [{"role": "user", "content": "Say OK."}]
        reply, why = self._ask(CHAT_PATH, self._body(text, _ONE_TOKEN))
        report.checks["chat"] = why or "ok"
        if reply is None:
            report.problems.append(self.not_served() if report.served is False
                                   else f"a one-token chat request failed: {why}")
            return report
        if "vision" in needs:
            self._probe_images(report, text, reply)
        if "score" in needs:
            self._probe_scoring(report)
        return report

    def _probe_images(self, report: ProbeReport, text: list[dict[str, Any]], text_reply: dict[str, Any]) -> None:
        shown = [{"role": "user", "content": [{"type": "image", "image": _probe_image()}, *_parts(text)]}]
        reply, why = self._ask(CHAT_PATH, self._body(shown, _ONE_TOKEN))
        if reply is not None and 0 < _prompt_tokens(reply) <= _prompt_tokens(text_reply):
            reply, why = None, "the server took the image but the prompt did not grow: it dropped the image"
        elif reply is not None and _prompt_tokens(text_reply) > 0:  # what one picture costs on this server
            self.picture_tokens = max(self.picture_tokens, _prompt_tokens(reply) - _prompt_tokens(text_reply))
        report.checks["images"] = why or "ok"
        if reply is None:
            report.problems.append(f"the server rejects images ({why}): serve a vision-language model there, with "
                                   "images allowed (vLLM: --limit-mm-per-prompt), or give the role a vision backend")

    def _probe_scoring(self, report: ProbeReport) -> None:
        """Try the methods best first (or the pinned one, then the rest to say what would work); keep the first that
        works. Also learns whether the server continues a message and honours ``n``, which sampling uses."""
        pinned = None if self.score_method == "auto" else self.score_method
        found = None
        for method in SCORE_METHODS if pinned is None else (pinned, *(m for m in SCORE_METHODS if m != pinned)):
            report.checks[method] = self._try_method(method)
            if report.checks[method] == "ok":
                found = method
                break
        if pinned is not None and report.checks[pinned] != "ok":
            use = f"score_method: auto (it would use {found})" if found else "another server"
            report.problems.append(f"score_method {pinned!r} does not work on this server "
                                   f"({report.checks[pinned]}): use {use}")
        elif found is None:
            tried = "; ".join(f"{m}: {report.checks[m]}" for m in SCORE_METHODS)
            report.problems.append(f"the judge cannot score by any method ({tried})")
        self.method, self.probed = pinned or found, True
        report.score_method = self.method
        if self.method == "sampled":
            report.checks["n"] = "ok" if self.samples_with_n else "ignored or refused: one request per sample"

    def _try_method(self, method: str) -> str:
        """"ok", or why ``method`` does not work here."""
        if method == "continue-logprobs":
            why = self._probe_continue()
            return why or self._logprob_check(CHAT_PATH, self._continuation(_PROBE_SCORE, logprobs=True,
                                                                             top_logprobs=self.top_logprobs),
                                              _chat_top)
        if method == "answer-logprobs":
            return self._logprob_check(CHAT_PATH, self._logprob_body(method, _PROBE_SCORE), _chat_top)
        if method == "completions-logprobs":
            try:
                body = self._completion(_PROBE_SCORE)
            except Exception as err:  # no local tokenizer or template: name it and how to give one
                return (f"no chat template to render the prompt here ({type(err).__name__}): set the tokenizer option "
                        f"to the served model's hub id or folder")
            return self._logprob_check(COMPLETIONS_PATH, body, _completion_top)
        self._probe_continue()
        reply, why = self._ask(CHAT_PATH, self._sample_body(_PROBE_SCORE, 0, n=2))
        self.samples_with_n = reply is not None and len(reply.get("choices") or []) == 2
        if reply is None and not self.samples_with_n:
            reply, why = self._ask(CHAT_PATH, self._sample_body(_PROBE_SCORE, 0))
        return "ok" if reply is not None else why

    def _probe_continue(self) -> str:
        """"" when the server leaves a final assistant message open, else why not (stored in ``continues``). An open
        message renders shorter than the same one closed and followed by a new generation prompt, so a server that
        silently ignores the field is caught by its prompt token count."""
        if self.continues is not None:
            return "" if self.continues else "continue_final_message is not honoured"
        open_reply, why = self._ask(CHAT_PATH, self._continuation(_PROBE_SCORE))
        if open_reply is not None:
            closed = [*_PROBE_SCORE.messages, {"role": "assistant", "content": _PROBE_SCORE.answer_prefix}]
            closed_reply, why = self._ask(CHAT_PATH, self._body(closed, _ONE_TOKEN))
            if closed_reply is not None and _prompt_tokens(open_reply) >= _prompt_tokens(closed_reply) > 0:
                why = "continue_final_message was ignored (the prompt did not shrink)"
        self.continues = not why
        return why

    def _logprob_check(self, path: str, body: dict[str, Any], top: Any) -> str:
        reply, why = self._ask(path, body)
        if reply is None:
            return why
        return "ok" if top(reply) else "the reply has no top logprobs (the server ignores logprobs)"

    def _ask(self, path: str, body: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        """A probe request: the reply, or None and why it failed."""
        try:
            reply = self.endpoint.post(path, body, max_retries=PROBE_RETRIES)
            _choices(reply)
            return reply, ""
        except EndpointError as err:
            return None, str(err)


_ONE_TOKEN = Sampling(max_new_tokens=1, temperature=1.0)


def _probe_image() -> bytes:
    """A small red square as PNG: what the vision probe shows."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _parts(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "text", "text": m["content"]} for m in messages]


def _choices(reply: dict[str, Any]) -> list[dict[str, Any]]:
    choices = reply.get("choices")
    if not choices:
        raise EndpointError(f"the server's reply has no choices: {str(reply)[:200]}")
    return choices


def _prompt_tokens(reply: dict[str, Any]) -> int:
    return int((reply.get("usage") or {}).get("prompt_tokens") or 0)


def _chat_result(reply: dict[str, Any]) -> ChatResult:
    choice = _choices(reply)[0]
    usage = reply.get("usage") or {}
    return ChatResult(text=(choice.get("message") or {}).get("content") or "", tokens_in=_prompt_tokens(reply),
                      tokens_out=int(usage.get("completion_tokens") or 0),
                      finish_reason="length" if choice.get("finish_reason") == "length" else "stop")


def _chat_top(reply: dict[str, Any]) -> dict[str, float]:
    """The first generated token's listed alternatives, token -> logprob (chat format)."""
    content = (_choices(reply)[0].get("logprobs") or {}).get("content") or [{}]
    top: dict[str, float] = {}
    for entry in content[0].get("top_logprobs") or []:
        top[entry["token"]] = max(top.get(entry["token"], -math.inf), entry["logprob"])
    return top


def _completion_top(reply: dict[str, Any]) -> dict[str, float]:
    """The same for a completions reply: ``logprobs.top_logprobs`` is a list of token -> logprob maps."""
    listed = (_choices(reply)[0].get("logprobs") or {}).get("top_logprobs") or [{}]
    return dict(listed[0] or {})


def _read_logprobs(labels: tuple[str, ...], top: dict[str, float], reply: dict[str, Any],
                   method: str) -> ScoreResult | None:
    """None when the server sent no top logprobs (it ignores the parameter): the caller samples instead."""
    if not top:
        return None
    mass = [0.0] * len(labels)
    for token, logprob in top.items():
        if token.strip() in labels:
            mass[labels.index(token.strip())] += math.exp(logprob)
    return label_distribution(labels, mass, _prompt_tokens(reply), method)


_LEADING_MARKUP = re.compile(r"^[\s*_`'\"“‘(\[]+")


def _read_samples(labels: tuple[str, ...], reply: dict[str, Any]) -> ScoreResult:
    texts = [_LEADING_MARKUP.sub("", (c.get("message") or {}).get("content") or "") for c in _choices(reply)]
    mass = [0.0] * len(labels)
    for text in texts:
        starts = [label for label in labels if text.startswith(label)]
        if starts:
            mass[labels.index(max(starts, key=len))] += 1 / len(texts)  # the longest: "10" is not read as "1"
    return label_distribution(labels, mass, _prompt_tokens(reply), "sampled")

