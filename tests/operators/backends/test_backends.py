"""Every backend on real (tiny, random-weight) models: batching, token counts, the score read, reproducibility."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from seir.operators.backends.base import (
    ChatRequest,
    RenderRequest,
    Sampling,
    ScoreRequest,
    SimilarityRequest,
    fingerprint_model,
)
from seir.operators.backends.clip import ClipSimilarity
from seir.operators.backends.diffusers_image import DiffusersImageToImage, DiffusersInstructEdit, DiffusersTextToImage
from seir.operators.backends.sentence_embed import SentenceEmbed
from seir.operators.backends.transformers_chat import TransformersChat, label_tokens
from seir.operators.backends.transformers_vision import TransformersVisionChat
from seir.operators.registry import lookup


def user(*parts: str | bytes) -> list[dict[str, Any]]:
    content = [{"type": "image", "image": p} if isinstance(p, bytes) else {"type": "text", "text": p} for p in parts]
    return [{"role": "user", "content": content}]


def png(color: tuple[int, int, int], size: tuple[int, int] = (48, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


SHORT = user("Rate it.")
LONG = [
    {"role": "system", "content": "You are a strict judge of pictures and of the stories told about them."},
    {"role": "user", "content": "What does a red fox look like next to the stone bridge in the evening? " * 3},
]


@pytest.fixture(scope="module")
def llm(tiny_models: dict[str, Path]) -> TransformersChat:
    return TransformersChat(str(tiny_models["llm"]))


@pytest.fixture(scope="module")
def judge(tiny_models: dict[str, Path]) -> TransformersVisionChat:
    return TransformersVisionChat(str(tiny_models["judge"]))


@pytest.fixture(scope="module")
def painter(tiny_models: dict[str, Path]) -> DiffusersTextToImage:
    return DiffusersTextToImage(str(tiny_models["sd"]))


def prompt_tokens(backend: TransformersChat, messages: list[dict[str, Any]]) -> int:
    prompt = backend.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return len(backend.tokenizer.encode(prompt, add_special_tokens=False))


# --- chat ---------------------------------------------------------------------------------------------------------


def test_chat_batch_of_different_sizes(llm: TransformersChat) -> None:
    requests = [
        ChatRequest(SHORT, Sampling(max_new_tokens=4)),
        ChatRequest(LONG, Sampling(max_new_tokens=9, temperature=0.8, seed=5)),
        ChatRequest(user("Draw a robot", " that glows above the evening sky."), Sampling(max_new_tokens=6)),
    ]
    results = llm.chat(requests)
    for request, result in zip(requests, results, strict=True):
        assert result.text.strip()
        assert result.tokens_in == prompt_tokens(llm, request.messages)  # padding is not counted
        assert result.finish_reason == "length"
        assert result.tokens_out == request.sampling.max_new_tokens


def test_requests_are_batched_by_length_and_answered_in_their_order(llm: TransformersChat,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Four prompt lengths interleaved, batches of two: each batch holds one length, and each result is the one its
    request gets when sent alone (sampled with its own seed), in the order of the requests."""
    repeats = [1, 9, 1, 9, 3, 6, 3, 6]
    requests = [ChatRequest(user("Draw " + "a red fox near the stone bridge " * n),
                            Sampling(max_new_tokens=4, temperature=0.8, seed=i)) for i, n in enumerate(repeats)]
    alone = [llm.chat([request])[0].text for request in requests]
    batches_seen: list[list[int]] = []
    run_batch = llm._chat

    def recording(batch: list[ChatRequest]) -> list[Any]:
        batches_seen.append(sorted(requests.index(r) for r in batch))
        return run_batch(batch)

    monkeypatch.setattr(llm, "max_batch_size", 2)
    monkeypatch.setattr(llm, "_chat", recording)
    results = llm.chat(requests)
    assert sorted(batches_seen) == [[0, 2], [1, 3], [4, 6], [5, 7]]
    assert [r.text for r in results] == alone


def test_chat_stops_at_end_of_turn(llm: TransformersChat) -> None:
    # Random weights rarely pick <|im_end|>, so feed the result reader a row that does: the end token is counted,
    # what the batch generated after it is dropped.
    eos = llm.tokenizer.eos_token_id
    result = llm._chat_result(ChatRequest(SHORT, Sampling(max_new_tokens=8)), [11, 12, eos, 13, 14], tokens_in=3)
    assert (result.tokens_out, result.finish_reason) == (3, "stop")


def test_temperature_zero_is_plain_greedy(llm: TransformersChat) -> None:
    prompt = llm.tokenizer.apply_chat_template(LONG, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    expected = llm.model.generate(**prompt, max_new_tokens=8, do_sample=False)[0, prompt["input_ids"].shape[1] :]
    result = llm.chat([ChatRequest(LONG, Sampling(max_new_tokens=8))])[0]
    assert result.text == llm.tokenizer.decode(expected, skip_special_tokens=True)


def test_sampling_depends_only_on_the_request(llm: TransformersChat) -> None:
    sampled = ChatRequest(SHORT, Sampling(max_new_tokens=12, temperature=1.0, seed=7))
    alone = llm.chat([sampled])[0]
    crowded = llm.chat([ChatRequest(LONG, Sampling(max_new_tokens=3, temperature=1.0, seed=1)), sampled,
                        ChatRequest(LONG + SHORT, Sampling(max_new_tokens=20, temperature=0.5, seed=2))])[1]
    assert crowded == alone
    other_seeds = {llm.chat([ChatRequest(SHORT, Sampling(12, 1.0, seed=seed))])[0].text for seed in (8, 9)}
    assert alone.text not in other_seeds


def test_tiny_top_p_keeps_only_the_best_token(llm: TransformersChat) -> None:
    greedy = llm.chat([ChatRequest(LONG, Sampling(max_new_tokens=8))])[0]
    tiny_nuclei = [Sampling(8, temperature=1.0, top_p=1e-6, seed=1), Sampling(8, temperature=1.0, top_p=0, seed=2)]
    nucleus = llm.chat([ChatRequest(LONG, sampling) for sampling in tiny_nuclei])
    assert [r.text for r in nucleus] == [greedy.text] * 2


# --- score --------------------------------------------------------------------------------------------------------


def hand_score(backend: TransformersChat, messages: list[dict[str, Any]], prefix: str, image: bytes | None = None):
    """The expectation computed from scratch: one unpadded forward pass, softmax over the digit tokens."""
    prompt = backend._prompt(messages) + prefix
    if image is None:
        inputs = backend.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    else:
        inputs = backend.processor(text=prompt, images=Image.open(io.BytesIO(image)).convert("RGB"),
                                   add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        logits = backend.model(**inputs).logits[0, -1]
    digits = backend.tokenizer.convert_tokens_to_ids(list("012345"))
    probabilities = logits[digits].softmax(-1)
    return float((probabilities * torch.arange(6)).sum()), float(logits.softmax(-1)[digits].sum())


def test_score_is_the_expectation_over_label_tokens(llm: TransformersChat) -> None:
    result = llm.score([ScoreRequest(LONG, "The answer is vague. Score: ")])[0]
    expectation, mass = hand_score(llm, LONG, "The answer is vague. Score: ")
    assert result.expectation == pytest.approx(expectation, abs=1e-4)
    assert result.label_mass == pytest.approx(mass, rel=1e-4)
    assert sum(result.probabilities) == pytest.approx(1.0)
    assert result.tokens_in == prompt_tokens(llm, LONG) + len(llm.tokenizer.encode("The answer is vague. Score: "))


def test_score_does_not_depend_on_batch_mates(llm: TransformersChat) -> None:
    request = ScoreRequest(SHORT, "Score: ")
    alone = llm.score([request])[0]
    crowded = llm.score([ScoreRequest(LONG, "Critique: fine. Score:"), request,
                         ScoreRequest(LONG + LONG, "Score: ", labels=("0", "1", "2", "3"))])
    assert crowded[1].expectation == pytest.approx(alone.expectation, abs=1e-4)
    assert len(crowded[2].probabilities) == 4


def batch_shapes(backend: TransformersChat, requests: list[ScoreRequest], monkeypatch) -> list[tuple[int, int]]:
    """The (rows, tokens) of every forward pass that scoring ``requests`` together makes."""
    shapes: list[tuple[int, int]] = []
    forward = backend.model.forward
    with monkeypatch.context() as patch:
        patch.setattr(backend.model, "forward", lambda *a, **k: shapes.append(tuple(k["input_ids"].shape))
                      or forward(*a, **k))
        backend.score(requests)
    return shapes


def assert_same_reads(backend: TransformersChat, requests: list[ScoreRequest]) -> None:
    """Scored together, requests that share a conversation read what each reads alone (one forward pass each)."""
    together = backend.score(requests)
    for request, result in zip(requests, together, strict=True):
        alone = backend.score([request])[0]
        assert result.expectation == pytest.approx(alone.expectation, abs=1e-4)
        assert result.label_mass == pytest.approx(alone.label_mass, rel=1e-3)
        assert result.tokens_in == alone.tokens_in


def test_requests_sharing_a_conversation_encode_it_once(llm: TransformersChat, monkeypatch) -> None:
    requests = [ScoreRequest(LONG, "Vague in places.\n\nText score (0-5): "),
                ScoreRequest(SHORT, "Fine.\n\nText score (0-5): "),
                ScoreRequest(LONG, "Vague in places.\n\nImage score (0-5): "),
                ScoreRequest(LONG, "Vague.\n\nSynergy score (0-3): ", labels=("0", "1", "2", "3"))]
    (conversations, width), (suffixes, suffix_width) = batch_shapes(llm, requests, monkeypatch)
    assert (conversations, suffixes) == (2, 4) and suffix_width < width // 2
    assert_same_reads(llm, requests)
    assert [rows for rows, _ in batch_shapes(llm, requests[:2], monkeypatch)] == [2]  # nothing shared: one pass


def test_vision_requests_sharing_an_image_conversation(judge: TransformersVisionChat, monkeypatch) -> None:
    red, blue = png((220, 20, 20)), png((20, 20, 220), size=(30, 60))
    requests = [ScoreRequest(user(red, "Is it red?"), "Looks red.\n\nImage score (0-5): "),
                ScoreRequest(user(blue, "Is it red?"), "Blue.\n\nImage score (0-5): "),  # same text, other image
                ScoreRequest(user(red, "Is it red?"), "Looks red.\n\nSynergy score (0-5): "),
                ScoreRequest(LONG, "Score: ")]
    assert [rows for rows, _ in batch_shapes(judge, requests, monkeypatch)] == [3, 4]
    assert_same_reads(judge, requests)


def test_label_tokens_heal_a_prefix_the_label_would_merge_with(llm: TransformersChat) -> None:
    tokenizer = llm.tokenizer
    assert label_tokens(tokenizer, "Score: ", ("0", "5")) == ("Score: ", tokenizer.convert_tokens_to_ids(["0", "5"]))
    # The trained BPE has "Ġthe": after "Answer: " the label starts with that token, not with a bare "Ġ".
    prefix, ids = label_tokens(tokenizer, "Answer: ", ("the", "snow"))
    assert prefix == "Answer:"
    assert ids == [tokenizer.encode(" the")[0], tokenizer.encode(" snow")[0]]


# --- vision -------------------------------------------------------------------------------------------------------


def test_vision_chat_with_an_image_part(judge: TransformersVisionChat) -> None:
    requests = [ChatRequest(user(png((200, 30, 30)), "What is shown?"), Sampling(max_new_tokens=5)),
                ChatRequest(LONG, Sampling(max_new_tokens=3))]
    with_image, text_only = judge.chat(requests)
    assert with_image.text.strip() and text_only.text.strip()
    assert with_image.tokens_in == prompt_tokens(judge, requests[0].messages) - 1 + 16  # <image> -> 16 patch tokens
    assert (with_image.tokens_out, text_only.tokens_out) == (5, 3)
    assert judge.chat(requests[:1])[0] == with_image


def test_vision_score_reads_the_pixels(judge: TransformersVisionChat) -> None:
    red, blue = png((220, 20, 20)), png((20, 20, 220), size=(30, 60))
    prefix = "Score: "
    alone = judge.score([ScoreRequest(user(red, "Is it red?"), prefix)])[0]
    batch = judge.score([ScoreRequest(LONG, prefix), ScoreRequest(user(blue, "Is it red?"), prefix),
                         ScoreRequest(user(red, "Is it red?"), prefix)])
    assert batch[2].expectation == pytest.approx(alone.expectation, abs=1e-4)
    assert batch[1].expectation != pytest.approx(alone.expectation, abs=1e-4)
    expectation, _ = hand_score(judge, user(red, "Is it red?"), prefix, image=red)
    assert alone.expectation == pytest.approx(expectation, abs=1e-4)


# --- render -------------------------------------------------------------------------------------------------------


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def test_render_sizes_and_seeds(painter: DiffusersTextToImage) -> None:
    fox = RenderRequest("a red fox", seed=1, width=64, height=64, steps=2)
    requests = [fox, RenderRequest("a tall thin robot", seed=2, width=32, height=64, steps=2, negative_prompt="blur"),
                RenderRequest("a red fox", seed=2, width=64, height=64, steps=2), fox]
    results = painter.render(requests)
    for request, result in zip(requests, results, strict=True):
        assert Image.open(io.BytesIO(result.png)).size == (request.width, request.height)
        assert (result.width, result.height) == (request.width, request.height)
    assert results[0].png == results[3].png
    assert results[0].png != results[2].png
    # Alone, the same seed starts from the same noise; only float rounding of a smaller batch may move a pixel level.
    assert np.abs(pixels(painter.render([fox])[0].png) - pixels(results[0].png)).max() <= 1


def test_prompt_truncation_is_reported_once(painter: DiffusersTextToImage, caplog: pytest.LogCaptureFixture) -> None:
    long_prompts = [RenderRequest(" ".join(["a red fox in the snow"] * 40), seed=k, width=32, height=32, steps=1)
                    for k in range(3)]
    with caplog.at_level(logging.WARNING):
        painter.render(long_prompts)
        painter.render(long_prompts[:1])
    warnings = [record for record in caplog.records if "was truncated because" in record.getMessage()]
    assert len(warnings) == 1 and "later prompt truncations are not reported" in warnings[0].getMessage()


def photo(name: str, side: int = 96) -> bytes:
    """A real photograph from scikit-image, as PNG."""
    image = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("backend", [DiffusersImageToImage, DiffusersInstructEdit])
def test_an_edit_starts_from_its_source(backend: type[DiffusersTextToImage], tiny_models: dict[str, Path]) -> None:
    model = tiny_models["sd" if backend is DiffusersImageToImage else "sd-instruct-edit"]
    editor = backend(str(model))
    cat, astronaut = photo("chelsea"), photo("astronaut")
    edit = RenderRequest("the same cat as a watercolour", seed=3, width=64, height=48, steps=2, source=cat,
                         strength=0.6)
    other = RenderRequest(edit.prompt, seed=3, width=64, height=48, steps=2, source=astronaut, strength=0.6)
    text = RenderRequest(edit.prompt, seed=3, width=64, height=48, steps=2)
    results = editor.render([edit, other, text, edit])
    assert [(r.width, r.height) for r in results] == [(64, 48)] * 4
    assert all(Image.open(io.BytesIO(r.png)).size == (64, 48) for r in results)
    # Two sources at the same seed give two pictures; one source, the same picture (to float rounding, which the
    # rows of one batch may differ by); no source, another still.
    first, second, from_text, again = (pixels(r.png) for r in results)
    assert np.abs(first - again).max() <= 1
    assert np.abs(first - second).mean() > 5 and np.abs(first - from_text).mean() > 5
    assert np.abs(pixels(editor.render([edit])[0].png) - first).max() <= 1
    # A schedule too short for one step at this strength still edits (img2img runs steps x strength of it).
    short = RenderRequest(edit.prompt, seed=3, width=32, height=32, steps=1, source=cat, strength=0.3)
    assert Image.open(io.BytesIO(editor.render([short])[0].png)).size == (32, 32)


def test_img2img_shares_the_text_to_image_weights(tiny_models: dict[str, Path],
                                                 painter: DiffusersTextToImage) -> None:
    editor = DiffusersImageToImage(str(tiny_models["sd"]))
    assert editor.edit_pipeline.unet is editor.pipeline.unet  # from_pipe: one model in memory
    fox = RenderRequest("a red fox", seed=1, width=64, height=64, steps=2)
    assert np.abs(pixels(editor.render([fox])[0].png) - pixels(painter.render([fox])[0].png)).max() <= 1
    assert editor.config()["operator"] == "diffusers-image-to-image"


def test_a_text_to_image_backend_refuses_a_source(painter: DiffusersTextToImage) -> None:
    with pytest.raises(ValueError, match=r"renders from text only.*diffusers-image-to-image"):
        painter.render([RenderRequest("x", seed=1, width=32, height=32, steps=1, source=photo("coffee"))])


def test_an_instruct_edit_backend_refuses_a_plain_checkpoint(tiny_models: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match=r"not an instruction-edit checkpoint.*diffusers-image-to-image"):
        DiffusersInstructEdit(str(tiny_models["sd"]))


# --- embed and clip -----------------------------------------------------------------------------------------------


def test_embed_with_the_bundled_minilm() -> None:
    embedder = SentenceEmbed("bundled:all-MiniLM-L6-v2")
    assert embedder.config()["model"] == "bundled:all-MiniLM-L6-v2"
    cat, kitten, market = np.array(embedder.embed(["A cat sits on the mat.", "A kitten is sitting on a rug.",
                                                   "Stock markets fell sharply today."]))
    assert cat.shape == (384,)
    assert np.linalg.norm([cat, kitten, market], axis=1) == pytest.approx([1, 1, 1], abs=1e-5)
    assert cat @ kitten > cat @ market + 0.3


def test_clip_similarity(tiny_models: dict[str, Path]) -> None:
    clip = ClipSimilarity(str(tiny_models["clip"]))
    green = SimilarityRequest(png((10, 200, 30)), ["a green field", "a red fox", "snow"])
    results = clip.similarity([green, SimilarityRequest(png((0, 0, 0), (64, 20)), ["night"])])
    assert [len(r.cosines) for r in results] == [3, 1]
    assert all(-1 <= c <= 1 for r in results for c in r.cosines)
    assert clip.similarity([green])[0].cosines == pytest.approx(results[0].cosines, abs=1e-5)


# --- construction -------------------------------------------------------------------------------------------------

BACKENDS = ["transformers-chat", "transformers-vision-chat", "diffusers-text-to-image", "sentence-transformers", "clip"]


@pytest.mark.parametrize("name", BACKENDS)
def test_unknown_option_is_refused_by_name(name: str, tiny_models: dict[str, Path]) -> None:
    chat = "chat_template_kwargs, " if "chat" in name else ""
    message = rf"backend '{name}' got unknown option\(s\): temprature; it takes: {chat}device, dtype, max_batch_size$"
    with pytest.raises(TypeError, match=message):
        lookup("backend", name)(str(tiny_models["llm"]), temprature=0.2)


def test_bad_dtype_is_refused(tiny_models: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="dtype must be"):
        TransformersChat(str(tiny_models["llm"]), dtype="int8")


def test_config_names_the_reference_and_pins_the_files(
    tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SEIR_HOME", str(tmp_path))
    backend = TransformersChat("tiny:llm", max_batch_size=2)
    assert backend.config() == {"operator": "transformers-chat", "model": "tiny:llm", "dtype": "float32",
                                "device": "cpu", "revision": fingerprint_model(str(tiny_models["llm"]))}
    assert [r.tokens_out for r in backend.chat([ChatRequest(SHORT, Sampling(max_new_tokens=2))] * 3)] == [2, 2, 2]
