"""The tiny models: deterministic, atomic builds that load like real checkpoints, and the model references."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoProcessor, AutoTokenizer

from seir.operators.backends.base import fingerprint_model
from seir.operators.backends.tiny import (
    TINY_NAMES,
    build_tiny_models,
    default_cache_dir,
    resolve_model_ref,
    tiny_folder,
)


def test_two_builds_are_byte_identical(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    again = build_tiny_models(tmp_path, TINY_NAMES)
    assert sorted(again) == sorted(TINY_NAMES)
    for name in TINY_NAMES:
        assert fingerprint_model(str(again[name])) == fingerprint_model(str(tiny_models[name])), name


def test_concurrent_builds_never_expose_a_partial_folder(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    code = "import sys; from seir.operators.backends.tiny import build_tiny_models as b; b(sys.argv[1], ['llm'])"
    builders = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)]) for _ in range(2)]
    assert [builder.wait(timeout=120) for builder in builders] == [0, 0]
    assert [p for p in tmp_path.iterdir()] == [tiny_folder(tmp_path, "llm")]  # no staging folder left behind
    assert fingerprint_model(str(tiny_folder(tmp_path, "llm"))) == fingerprint_model(str(tiny_models["llm"]))


def test_chat_tokenizer_has_bytes_digits_and_chatml(tiny_models: dict[str, Path]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["llm"])
    for digit in "0123456789":
        assert len(tokenizer.encode(digit, add_special_tokens=False)) == 1
    text = "Score: 5 — naïve café, 🦊 {\"x\": [1, 2]}\n\ttab"  # any text survives: every byte is a token
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    assert {tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token} == {"<|endoftext|>", "<|im_end|>", "<|pad|>"}
    as_string = [{"role": "user", "content": "hi"}]
    as_parts = [{"role": "user", "content": [{"type": "text", "text": "h"}, {"type": "text", "text": "i"}]}]
    rendered = tokenizer.apply_chat_template(as_string, add_generation_prompt=True, tokenize=False)
    assert rendered == tokenizer.apply_chat_template(as_parts, add_generation_prompt=True, tokenize=False)
    assert rendered == "<|endoftext|><|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_judge_processor_expands_image_parts(tiny_models: dict[str, Path]) -> None:
    from PIL import Image

    processor = AutoProcessor.from_pretrained(tiny_models["judge"])
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is shown?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert "<image>" in prompt
    encoded = processor(text=[prompt], images=[Image.new("RGB", (50, 40))], return_tensors="pt")
    assert tuple(encoded["pixel_values"].shape) == (1, 3, 32, 32)
    assert (encoded["input_ids"] == processor.image_token_id).sum() == 16  # (32 / 8) ** 2 patches


def test_resolve_model_ref(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    built = resolve_model_ref("tiny:llm", tmp_path)
    assert built == str(tiny_folder(tmp_path, "llm"))
    assert fingerprint_model(built) == fingerprint_model(str(tiny_models["llm"]))
    assert (Path(resolve_model_ref("bundled:all-MiniLM-L6-v2", tmp_path)) / "config.json").is_file()
    assert resolve_model_ref("Qwen/Qwen2.5-7B-Instruct", tmp_path) == "Qwen/Qwen2.5-7B-Instruct"
    assert resolve_model_ref("/models/judge", tmp_path) == "/models/judge"
    with pytest.raises(KeyError, match="unknown tiny model 'giant'"):
        resolve_model_ref("tiny:giant", tmp_path)


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SEIR_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "models"
    monkeypatch.delenv("SEIR_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "seir" / "models"
