"""The OpenAI-compatible backends against a real HTTP server that serves the tiny models through the local backends:
same results as the local backends, retries, timeouts, clear errors, and no API key anywhere it should not be."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
import skimage.data
from PIL import Image

from seir.operators.backends.base import Backend, ChatRequest, RenderRequest, Sampling, ScoreRequest
from seir.operators.backends.openai_chat import OpenAIChat, _read_samples
from seir.operators.backends.openai_http import EndpointError
from seir.operators.backends.openai_image import OpenAIImage, OpenAIImageEdit
from seir.operators.registry import lookup
from tests.support.openai_server import OpenAIServer

MODELS = {"tiny:llm": "transformers-chat", "tiny:judge": "transformers-vision-chat",
          "tiny:sd": "diffusers-image-to-image"}  # it renders from text as diffusers-text-to-image does, and edits
FAST_RETRIES = {"max_retries": 3, "timeout_s": 10.0}


def user(*parts: str | bytes) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "image", "image": p} if isinstance(p, bytes)
                                         else {"type": "text", "text": p} for p in parts]}]


def png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 32), color).save(buffer, format="PNG")
    return buffer.getvalue()


def encoded(pixels: np.ndarray, format: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=format)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(tiny_models: dict[str, Path]) -> Iterator[OpenAIServer]:
    with OpenAIServer(MODELS) as running:
        yield running


@pytest.fixture(scope="module")
def local(tiny_models: dict[str, Path]) -> dict[str, Backend]:
    """Fresh local backends (not the server's), to hold the remote results against."""
    return {name: lookup("backend", backend)(name) for name, backend in MODELS.items()}


@pytest.fixture(autouse=True)
def clean_server(server: OpenAIServer) -> Iterator[None]:
    server.reset()
    yield
    server.reset()


def remote_chat(server: OpenAIServer, model: str = "tiny:llm", **options: Any) -> OpenAIChat:
    return OpenAIChat(model, base_url=server.url, **{**FAST_RETRIES, **options})


def greeting(max_new_tokens: int = 4) -> list[ChatRequest]:
    return [ChatRequest(user("Draw a red fox."), Sampling(max_new_tokens=max_new_tokens))]


# --- same results as the local backends -----------------------------------------------------------------------------


def test_chat_matches_the_local_backend(server: OpenAIServer, local: dict[str, Backend]) -> None:
    requests = [ChatRequest(user("What does a red fox look like next to the stone bridge?"), Sampling(8)),
                ChatRequest([{"role": "system", "content": "Be brief."}, *user("Draw a robot.")],
                            Sampling(max_new_tokens=10, temperature=0.9, top_p=0.95, seed=3))]
    assert remote_chat(server).chat(requests) == local["tiny:llm"].chat(requests)  # text, token counts, finish
    sent = {r["body"]["seed"]: r["body"] for r in server.requests}[3]
    assert (sent["temperature"], sent["top_p"], sent["max_tokens"]) == (0.9, 0.95, 10)


def test_image_parts_reach_the_model(server: OpenAIServer, local: dict[str, Backend]) -> None:
    red, blue = png((220, 20, 20)), png((20, 20, 220))
    requests = [ChatRequest(user(red, "What is shown?"), Sampling(6)), ChatRequest(user(blue, "What is shown?"),
                                                                                    Sampling(6))]
    results = remote_chat(server, "tiny:judge").chat(requests)
    assert results == local["tiny:judge"].chat(requests)
    assert results[0].tokens_in == results[1].tokens_in > 16  # the image became the model's 16 patch tokens
    sent = sorted(r["body"]["messages"][0]["content"][0]["image_url"]["url"] for r in server.requests)
    assert sent == sorted(f"data:image/png;base64,{base64.b64encode(image).decode()}" for image in (red, blue))


def test_score_from_logprobs_matches_the_local_read(server: OpenAIServer, local: dict[str, Backend]) -> None:
    requests = [ScoreRequest(user("Rate the fox."), "It is vague.\n\nText content score (0-5): "),
                ScoreRequest(user(png((220, 20, 20)), "Is it red?"), "Image content score (0-5): ",
                             labels=("0", "1", "2", "3"))]
    # Every token listed, so no label is cut off: the read must then be the local one.
    remote = remote_chat(server, "tiny:judge", top_logprobs=4096).score(requests)
    for got, want in zip(remote, local["tiny:judge"].score(requests), strict=True):
        assert got.probabilities == pytest.approx(want.probabilities, abs=1e-5)
        assert got.expectation == pytest.approx(want.expectation, abs=1e-4)
        assert got.label_mass == pytest.approx(want.label_mass, rel=1e-4)
        assert got.tokens_in == want.tokens_in
    sent = next(r["body"] for r in server.requests if r["body"]["messages"][-1]["content"].startswith("Image"))
    assert sent["messages"][-1] == {"role": "assistant", "content": "Image content score (0-5): "}
    assert (sent["continue_final_message"], sent["add_generation_prompt"], sent["max_tokens"]) == (True, False, 1)


def test_labels_outside_the_listed_tokens_get_nothing(server: OpenAIServer) -> None:
    request = ScoreRequest(user("Rate the fox."), "Score (0-5): ")
    remote_chat(server).score([request])
    assert server.requests[-1]["body"]["top_logprobs"] == 20  # what OpenAI and vLLM allow by default
    # The random model's single most likely token is no digit: no label is listed, so nothing is known.
    result = remote_chat(server, top_logprobs=1).score([request])[0]
    assert (result.label_mass, result.expectation, result.probabilities) == (0.0, 2.5, [1 / 6] * 6)


def test_sampled_scores_when_the_server_gives_no_logprobs(server: OpenAIServer) -> None:
    request = ScoreRequest(user("Rate the fox."), "Score (0-5): ")
    pinned = remote_chat(server, score_method="sampled")
    assert pinned.probe(frozenset({"score"})).score_method == "sampled"
    server.requests.clear()
    sampled = pinned.score([request, request])
    assert len(server.requests) == 2 and all(r["body"]["n"] == 5 and "logprobs" not in r["body"]
                                             for r in server.requests)
    assert sampled[0] == sampled[1] and sampled[0].label_mass in {i / 5 for i in range(6)}
    assert sampled[0].method == "sampled"
    server.logprobs = False
    server.requests.clear()
    assert remote_chat(server).score([request]) == sampled[:1]  # probed first: no logprobs anywhere, so sampled
    assert [bool(r["body"].get("logprobs")) for r in server.requests][-1] is False


def test_samples_are_read_as_the_label_they_start_with() -> None:
    texts = ["4", " 4.", "**5**/5", "ten", "", "10"]
    reply = {"choices": [{"message": {"content": t}} for t in texts], "usage": {"prompt_tokens": 7}}
    result = _read_samples(("0", "1", "4", "5", "10"), reply)
    assert result.label_mass == pytest.approx(4 / 6)
    assert result.probabilities == pytest.approx([0, 0, 0.5, 0.25, 0.25])
    assert result.expectation == pytest.approx(0.5 * 4 + 0.25 * 5 + 0.25 * 10)
    assert result.tokens_in == 7


def test_render_matches_the_local_backend_and_is_always_png(server: OpenAIServer, local: dict[str, Backend]) -> None:
    requests = [RenderRequest("a red fox", seed=3, width=32, height=32, steps=1),
                RenderRequest("a tall robot", seed=4, width=32, height=64, steps=1, negative_prompt="blur")]
    painter = OpenAIImage("tiny:sd", base_url=server.url, **FAST_RETRIES)
    want = local["tiny:sd"].render(requests)
    assert painter.render(requests) == want
    sent = {r["body"]["size"]: r["body"] for r in server.requests}
    assert sent["32x64"]["negative_prompt"] == "blur" and sent["32x32"]["num_inference_steps"] == 1
    assert "guidance_scale" not in sent["32x32"]  # unset: the server's own for its model
    server.image_format = "WEBP"  # lossless, so the pixels must survive the round trip
    webp = painter.render(requests[:1])[0]
    assert webp.png.startswith(b"\x89PNG") and (webp.width, webp.height) == (32, 32)
    assert Image.open(io.BytesIO(webp.png)).tobytes() == Image.open(io.BytesIO(want[0].png)).tobytes()


CAT = encoded(skimage.data.chelsea(), "PNG")  # a real photograph, 451x300
# The fields of an edit as they travel (multipart fields are text), besides the picture.
EDIT_FIELDS = {"model": "tiny:sd", "prompt": "a cat in a hat", "n": "1", "size": "32x32", "response_format": "b64_json",
               "seed": "3", "num_inference_steps": "2", "guidance_scale": "7.5", "negative_prompt": "blur",
               "strength": "0.5"}


def cat_edit(source: bytes = CAT) -> RenderRequest:
    return RenderRequest("a cat in a hat", seed=3, width=32, height=32, steps=2, negative_prompt="blur",
                         guidance_scale=7.5, source=source, strength=0.5)


def test_an_edit_goes_as_multipart_and_a_render_from_text_as_json(server: OpenAIServer,
                                                                  local: dict[str, Backend]) -> None:
    requests = [cat_edit(), RenderRequest("a red fox", seed=4, width=32, height=64, steps=1)]
    painter = OpenAIImageEdit("tiny:sd", base_url=server.url, **FAST_RETRIES)
    assert painter.capabilities == {"render", "edit"}
    results = painter.render(requests)
    assert [(r.width, r.height) for r in results] == [(32, 32), (32, 64)]  # in the requests' order
    assert results == local["tiny:sd"].render(requests)  # seed, steps, strength... reached the model as sent
    assert sorted(r["path"] for r in server.requests) == ["/v1/images/edits", "/v1/images/generations"]
    sent = dict(server.edit_form or {})
    assert sent.pop("image") == {"filename": "source.png", "content_type": "image/png", "data": CAT}
    assert sent == EDIT_FIELDS
    generated = next(r["body"] for r in server.requests if r["path"] == "/v1/images/generations")
    assert generated["size"] == "32x64" and "strength" not in generated


def test_the_official_sdk_sends_an_edit_as_this_backend_does(server: OpenAIServer) -> None:
    """OpenAI's own client is the reference for the wire format: its edit must reach the server as ours does."""
    client = openai.OpenAI(api_key="unused", base_url=server.url, max_retries=0)
    extensions = {"seed": 3, "num_inference_steps": 2, "guidance_scale": 7.5, "negative_prompt": "blur",
                  "strength": 0.5}
    reply = client.images.edit(image=("source.png", CAT, "image/png"), prompt="a cat in a hat", model="tiny:sd", n=1,
                               size="32x32", response_format="b64_json", extra_body=extensions)
    by_sdk = server.edit_form
    ours = OpenAIImageEdit("tiny:sd", base_url=server.url, **FAST_RETRIES).render([cat_edit()])[0]
    assert server.edit_form == by_sdk and by_sdk is not None and by_sdk["image"]["data"] == CAT
    assert base64.b64decode(reply.data[0].b64_json) == ours.png


def test_a_jpeg_source_is_sent_as_png(server: OpenAIServer) -> None:
    jpeg = encoded(skimage.data.chelsea(), "JPEG")
    OpenAIImageEdit("tiny:sd", base_url=server.url, **FAST_RETRIES).render([cat_edit(jpeg)])
    sent = (server.edit_form or {})["image"]
    assert (sent["filename"], sent["content_type"]) == ("source.png", "image/png")
    with Image.open(io.BytesIO(sent["data"])) as image, Image.open(io.BytesIO(jpeg)) as source:
        assert image.format == "PNG" and image.size == (451, 300) and image.tobytes() == source.tobytes()


def test_an_edit_is_retried_and_without_diffusion_params_sends_only_openais_fields(server: OpenAIServer) -> None:
    server.faults.extend(["503", "truncate"])  # the client retries the first, seir the second
    server.fault_path = "/v1/images/edits"
    painter = OpenAIImageEdit("tiny:sd", base_url=server.url, diffusion_params=False, **FAST_RETRIES)
    assert (painter.render([cat_edit()])[0].width, len(server.requests)) == (32, 3)
    assert [r["body"] for r in server.requests[1:]] == [server.requests[0]["body"]] * 2  # the same form each time
    assert set(server.edit_form or {}) == {"image", "model", "prompt", "n", "size", "response_format"}


# --- probe: what the server can do, the best scoring method it allows, and what stops a job before it starts ------

JUDGE_NEEDS = frozenset({"chat", "score", "vision"})


def test_the_probe_picks_the_best_method_the_server_allows(server: OpenAIServer) -> None:
    report = remote_chat(server, "tiny:judge").probe(JUDGE_NEEDS)
    assert (report.served, report.score_method, report.problems) == (True, "continue-logprobs", [])
    assert report.checks == {"chat": "ok", "images": "ok", "continue-logprobs": "ok"}  # stops at the first that works
    server.continues = False  # ignores the field without a word, as some servers do: caught by the prompt's length
    report = remote_chat(server, "tiny:judge").probe(JUDGE_NEEDS)
    assert report.score_method == "answer-logprobs" and "ignored" in report.checks["continue-logprobs"]
    server.logprobs = False
    chat = remote_chat(server, "tiny:judge")
    report = chat.probe(JUDGE_NEEDS)
    assert report.score_method == "sampled" and report.checks["n"] == "ok" and not report.problems
    assert "no top logprobs" in report.checks["answer-logprobs"]
    assert "no top logprobs" in report.checks["completions-logprobs"]
    assert chat.config()["score_method"] == "sampled"  # the chosen method is part of every score's content key
    request = ScoreRequest(user("Rate the fox."), "Score (0-5): ")
    server.requests.clear()
    result = chat.score([request])[0]
    assert result.method == "sampled" and len(server.requests) == 1
    assert server.requests[0]["body"]["messages"][-1]["role"] == "user"  # the plain form: it asks for the score


def test_completions_on_the_prompt_rendered_here_match_the_local_read(server: OpenAIServer,
                                                                     local: dict[str, Backend]) -> None:
    text = ScoreRequest(user("Rate the fox."), "It is vague.\n\nText content score (0-5): ")
    shown = ScoreRequest(user(png((220, 20, 20)), "Is it red?"), "Image content score (0-5): ")
    chat = remote_chat(server, "tiny:judge", score_method="completions-logprobs", top_logprobs=4096)
    assert chat.probe(JUDGE_NEEDS).problems == []
    server.requests.clear()
    got, sampled = chat.score([text, shown])
    want = local["tiny:judge"].score([text])[0]
    assert got.method == "completions-logprobs" and got.expectation == pytest.approx(want.expectation, abs=1e-4)
    assert got.probabilities == pytest.approx(want.probabilities, abs=1e-5)
    assert sampled.method == "sampled"  # images cannot travel in a raw prompt: that request was sampled
    # Whether the server honours n was not asked (a logprob method was chosen): one request per sample, to be safe.
    assert [r["path"] for r in server.requests] == ["/v1/completions"] + ["/v1/chat/completions"] * 5


def test_a_pinned_method_the_server_lacks_is_a_problem_that_says_what_works(server: OpenAIServer) -> None:
    server.continues = False
    report = remote_chat(server, "tiny:judge", score_method="continue-logprobs").probe(JUDGE_NEEDS)
    assert len(report.problems) == 1
    assert report.problems[0].startswith("score_method 'continue-logprobs' does not work on this server "
                                         "(continue_final_message was ignored")
    assert report.problems[0].endswith("use score_method: auto (it would use answer-logprobs)")


def test_the_probe_names_what_stops_a_role(server: OpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = remote_chat(server, "tiny:nope", max_retries=0).probe(JUDGE_NEEDS)
    assert missing.served is False
    assert missing.problems == ["model 'tiny:nope' is not among those it serves (tiny:llm, tiny:judge, tiny:sd): "
                                "set the role's model to a served name, or base_url to the server that serves it"]
    monkeypatch.setenv("SEIR_TEST_KEY", "sk-wrong-1234567")
    server.always = "401"
    refused = remote_chat(server, "tiny:judge", api_key_env="SEIR_TEST_KEY").probe(JUDGE_NEEDS)
    assert len(refused.problems) == 1 and "HTTP 401" in refused.problems[0]
    assert "$SEIR_TEST_KEY" in refused.problems[0] and "sk-wrong" not in refused.problems[0]
    server.always = None
    assert remote_chat(server, "tiny:llm").probe(frozenset({"chat"})).problems == []
    assert "images" not in remote_chat(server, "tiny:llm").probe(frozenset({"chat"})).checks


# --- robustness ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("faults", [["500", "502"], ["503", "truncate"], ["429"], ["hang"]])
def test_retries_recover(server: OpenAIServer, faults: list[str]) -> None:
    server.faults.extend(faults)
    server.hang_s = 4.0
    started = time.monotonic()
    result = remote_chat(server, timeout_s=1.0 if faults == ["hang"] else 10.0).chat(greeting(1))[0]
    assert result.tokens_out == 1 and len(server.requests) == len(faults) + 1
    if faults in (["429"], ["hang"]):
        assert time.monotonic() - started >= 1.0  # Retry-After: 1 was honoured / the timeout cut the hang short


def test_a_batch_runs_its_requests_concurrently(server: OpenAIServer) -> None:
    server.delay_s = 0.2
    batch = greeting(2) * 6
    timings = {}
    for concurrency in (1, 6):
        started = time.monotonic()
        remote_chat(server, max_concurrency=concurrency).chat(batch)
        timings[concurrency] = time.monotonic() - started
    assert timings[6] < timings[1] / 2


def test_giving_up_names_url_status_and_next_step(server: OpenAIServer) -> None:
    server.always = "503"
    with pytest.raises(EndpointError) as err:
        remote_chat(server, max_retries=2).chat(greeting())
    message = str(err.value)
    assert f"POST {server.url}/chat/completions failed 3 time(s)" in message and "HTTP 503" in message
    assert "max_retries" in message and "\n" not in message
    assert len(server.requests) == 3


def test_refusals_are_not_retried(server: OpenAIServer) -> None:
    with pytest.raises(EndpointError, match=r"HTTP 404.*check base_url .* 'tiny:nope'; the server serves: tiny:llm, "):
        remote_chat(server, "tiny:nope").chat(greeting())
    assert len(server.requests) == 1


def test_an_unreachable_server_is_reported(server: OpenAIServer) -> None:
    closed = OpenAIChat("tiny:llm", base_url="http://127.0.0.1:9/v1", max_retries=1)
    with pytest.raises(EndpointError, match=r"127\.0\.0\.1:9/v1/chat/completions failed 2 time.*connection failed"):
        closed.chat(greeting())


# --- options and secrets ------------------------------------------------------------------------------------------


def test_unknown_options_are_refused_by_name() -> None:
    with pytest.raises(TypeError, match=r"unknown option\(s\): temprature; it takes: api_key_env, .*top_logprobs"):
        lookup("backend", "openai-chat")("m", base_url="http://x/v1", temprature=0.5)
    with pytest.raises(TypeError, match=r"unknown option.*score_method"):
        OpenAIImage("m", base_url="http://x/v1", score_method="sampled")
    with pytest.raises(ValueError, match="score_method must be auto or one of continue-logprobs, answer-logprobs"):
        OpenAIChat("m", base_url="http://x/v1", score_method="guess")


def test_the_api_key_comes_from_the_environment_and_stays_out_of_config(server: OpenAIServer,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-0123456789"
    monkeypatch.setenv("SEIR_TEST_KEY", secret)
    chat = remote_chat(server, api_key_env="SEIR_TEST_KEY", max_retries=0)
    chat.chat(greeting())
    assert server.requests[-1]["authorization"] == f"Bearer {secret}"
    config = chat.config()
    assert secret not in json.dumps(config) and "api_key_env" not in config
    assert config == {"operator": "openai-chat", "model": "tiny:llm", "revision": "server", "base_url": server.url,
                      "score_method": "auto", "top_logprobs": 20, "score_samples": 5, "tokenizer": None}
    server.always = "401"  # the fault's message echoes the Authorization header
    with pytest.raises(EndpointError) as err:
        chat.chat(greeting())
    assert secret not in str(err.value) and "$SEIR_TEST_KEY" in str(err.value)
