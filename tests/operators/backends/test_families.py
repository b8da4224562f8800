"""The model families users run, at tiny size from their real classes, processors and chat templates: a score read
is the model's own forward pass on the request (alone or batched, with 0, 1 or several pictures per prompt, on the
whole-request and the shared-conversation paths), token counts are the processor's, and builds are reproducible."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from seir.operators.backends.base import (
    ChatRequest,
    Sampling,
    ScoreRequest,
    SimilarityRequest,
    decode_image,
    image_parts,
)
from seir.operators.backends.clip import ClipSimilarity
from seir.operators.backends.tiny import FAMILY_NAMES, build_tiny_models
from seir.operators.backends.transformers_chat import ChatTokenCounter, TransformersChat
from seir.operators.backends.transformers_vision import TransformersVisionChat

# "judge": seir's own tiny LLaVA, for comparison
VISION = ("qwen2.5-vl", "qwen3-vl", "gemma3-vl", "llava-onevision", "internvl", "idefics3", "judge")
TEXT = ("qwen3", "gemma3", "llama3", "llm")
SCORE = tuple(str(level) for level in range(6))


def picture(seed: int, width: int = 40, height: int = 30) -> bytes:
    pixels = (np.random.default_rng(seed).random((height, width, 3)) * 255).astype("uint8")
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def asking(pictures: int, text: str, system: str | None = None) -> list[dict[str, Any]]:
    content = [*({"type": "image", "image": picture(i)} for i in range(pictures)), {"type": "text", "text": text}]
    return [*([{"role": "system", "content": system}] if system else []), {"role": "user", "content": content}]


# Two reads after one critique conversation (the shared path), and prompts of 0, 1 and 2 pictures.
def requests(vision: bool) -> list[ScoreRequest]:
    shown = (lambda n: n) if vision else (lambda n: 0)
    return [
        ScoreRequest(asking(shown(1), "Describe the picture, then rate it.", "You are a careful judge."),
                     "Critique: the colours are dull.\n\nImage quality score (0-5): ", SCORE),
        ScoreRequest(asking(0, "Rate this answer about snow leopards."), "Score (0-5): ", SCORE),
        ScoreRequest(asking(shown(2), "Compare the two pictures and rate the second one."),
                     "Critique: none.\n\nSynergy score (0-5): ", SCORE),
        ScoreRequest(asking(shown(1), "Describe the picture, then rate it.", "You are a careful judge."),
                     "Critique: the colours are dull.\n\nImage content score (0-5): ", SCORE),
    ]


def model_path(name: str, tiny_models: dict[str, Path], tiny_families: dict[str, Path]) -> str:
    return str({**tiny_models, **tiny_families}[name])


def own_probabilities(backend: TransformersChat, request: ScoreRequest) -> np.ndarray:
    """The label probabilities of the model's own forward pass on the request alone: no padding, positions,
    attention masks and rotary deltas as the model computes them."""
    import torch

    prefix, ids = backend._label_read(request.answer_prefix, request.labels)
    text = backend._prompt(request.messages) + prefix
    pictures = [decode_image(data) for m in request.messages for data in image_parts(m)]
    if isinstance(backend, TransformersVisionChat):
        inputs = backend.processor(text=[text], images=[pictures] if pictures else None, add_special_tokens=False,
                                   return_tensors="pt")
    else:
        inputs = backend.tokenizer([text], add_special_tokens=False, return_tensors="pt")
    with torch.inference_mode():
        logits = backend.model(**inputs).logits[0, -1].float().log_softmax(-1)
    return logits[ids].softmax(-1).numpy()


@pytest.mark.parametrize("name", [*VISION, *TEXT])
def test_a_score_read_is_the_models_own_forward_pass(name: str, tiny_models: dict[str, Path],
                                                     tiny_families: dict[str, Path]) -> None:
    vision = name in VISION
    backend = (TransformersVisionChat if vision else TransformersChat)(model_path(name, tiny_models, tiny_families))
    asked = requests(vision)
    own = [own_probabilities(backend, r) for r in asked]
    for batch in ([0], [1], [0, 3], [0, 1, 2, 3], [2, 1]):  # alone; shared; shared beside others; mixed pictures
        read = backend.score([asked[i] for i in batch])
        for i, result in zip(batch, read, strict=True):
            assert np.abs(np.array(result.probabilities) - own[i]).max() < 1e-4, (name, batch, i)


@pytest.mark.parametrize("name", VISION)
def test_token_counts_are_the_processors(name: str, tiny_models: dict[str, Path],
                                         tiny_families: dict[str, Path]) -> None:
    backend = TransformersVisionChat(model_path(name, tiny_models, tiny_families))
    counter = ChatTokenCounter(backend.processor)
    three = ScoreRequest(asking(3, "Compare the three pictures."), "", SCORE)  # more pictures than were measured
    for request in [*requests(vision=True), three]:
        pictures = [decode_image(data) for m in request.messages for data in image_parts(m)]
        expanded = backend.processor(text=[backend._prompt(request.messages)], images=[pictures] if pictures else None,
                                     add_special_tokens=False)
        assert counter.count(request.messages) == len(expanded["input_ids"][0]), (name, len(pictures))


@pytest.mark.parametrize("name", [*VISION, *TEXT])
def test_a_batch_of_any_mix_writes_a_reply_for_every_request(name: str, tiny_models: dict[str, Path],
                                                             tiny_families: dict[str, Path]) -> None:
    vision = name in VISION
    backend = (TransformersVisionChat if vision else TransformersChat)(model_path(name, tiny_models, tiny_families))
    asked = [ChatRequest(r.messages, Sampling(max_new_tokens=6, temperature=0.8, seed=i))
             for i, r in enumerate(requests(vision))]
    together = backend.chat(asked)
    alone = [backend.chat([r])[0] for r in asked]
    assert [r.text for r in together] == [r.text for r in alone]  # seeded: the same whichever share a batch
    assert all(r.tokens_out > 0 for r in together)


@pytest.mark.parametrize(("name", "family"), [("qwen2.5-vl", "Qwen2_5_VLProcessor"), ("qwen3-vl", "Qwen3VLProcessor"),
                                            ("llava-onevision", "LlavaOnevisionProcessor"),
                                            ("internvl", "InternVLProcessor")])
def test_a_family_with_video_loads_without_torchvision(name: str, family: str, tiny_families: dict[str, Path]) -> None:
    """Its video processor needs torchvision, which is not installed here and which seir never uses."""
    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed here: the path without it is not taken")
    processor = TransformersVisionChat.load_processor(str(tiny_families[name]), None)
    assert type(processor).__mro__[1].__name__ == family and processor.video_processor is None


def test_siglip2_similarity_is_the_models_own_cosine(tiny_families: dict[str, Path]) -> None:
    """Each cosine is the model's own: an image and its texts encoded apart, as its processor prepares them (texts
    padded to the 64 tokens it was trained on), whatever else shares the batch."""
    import torch

    backend = ClipSimilarity(str(tiny_families["siglip2"]))
    asked = [SimilarityRequest(picture(0), ["a red fox near the lake", "Snow"]),
             SimilarityRequest(picture(1, width=64, height=20), ["two small boats", "the evening sky above a bridge"])]
    read = backend.similarity(asked)
    normalize = torch.nn.functional.normalize
    for request, result in zip(asked, read, strict=True):
        with torch.inference_mode():
            image = backend.model.get_image_features(
                **backend.processor(images=[decode_image(request.image)], return_tensors="pt")).pooler_output
            texts = backend.model.get_text_features(
                **backend.processor(text=request.texts, return_tensors="pt")).pooler_output
        own = normalize(texts, dim=-1) @ normalize(image, dim=-1)[0]
        assert np.abs(np.array(result.cosines) - own.numpy()).max() < 1e-5, request.texts


def test_two_family_builds_are_byte_identical(tiny_families: dict[str, Path], tmp_path: Path) -> None:
    from seir.operators.backends.base import fingerprint_model

    again = build_tiny_models(tmp_path, FAMILY_NAMES)
    for name in FAMILY_NAMES:
        assert fingerprint_model(str(again[name])) == fingerprint_model(str(tiny_families[name])), name


def test_qwen3_writes_an_empty_thinking_block_when_told_not_to_think(tiny_families: dict[str, Path]) -> None:
    """Qwen3's hybrid models think before they answer unless the template says otherwise; the switch reaches the
    prompt, the counts (online and offline), the score read and the calls' keys, and only where it is set."""
    path = str(tiny_families["qwen3"])
    options = {"chat_template_kwargs": {"enable_thinking": False}}
    thinking, quiet = TransformersChat(path), TransformersChat(path, **options)
    messages = asking(0, "Describe a red fox.", "Answer briefly.")
    assert quiet._prompt(messages) == thinking._prompt(messages) + "<think>\n\n</think>\n\n"
    assert quiet.config()["chat_template_kwargs"] == {"enable_thinking": False}
    assert "chat_template_kwargs" not in thinking.config()
    tokens = len(quiet.tokenizer(quiet._prompt(messages), add_special_tokens=False)["input_ids"])
    _, offline = TransformersChat.offline_context(path, None, options)
    assert offline.count(messages) == quiet.context()[1].count(messages) == tokens
    request = ScoreRequest(messages, "Score (0-5): ", SCORE)
    assert np.abs(np.array(quiet.score([request])[0].probabilities) - own_probabilities(quiet, request)).max() < 1e-4
    with pytest.raises(ValueError, match=r"chat_template_kwargs must map template switches.*not 'no-thinking'"):
        TransformersChat(path, chat_template_kwargs="no-thinking")
