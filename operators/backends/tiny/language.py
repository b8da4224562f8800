"""The language families users run, each from its real model class, processor, special tokens and chat template, at
toy size: vision-language judges and writers, and text writers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from seir.operators.backends.tiny.common import corpus, seeded

# Each family's conventions, written out here: its special tokens and a chat template that renders the same turns as
# the family's published one (system, user and assistant turns, and where a picture's placeholder goes).
_QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>")
_QWEN_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% elif part['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Qwen3 (the hybrid-thinking releases): ChatML with no default system turn; it thinks in a <think> block before it
# answers unless the template is rendered with enable_thinking=False, which writes the block empty.
_QWEN3_SPECIALS = (*_QWEN_SPECIALS, "<think>", "</think>")
_QWEN3_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% if enable_thinking is defined and enable_thinking is false"
    " %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)
_GEMMA_SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
                   "<end_of_image>", "<image_soft_token>")
# Gemma has no system turn: a system message opens the first user turn; the assistant is "model".
_GEMMA_TEMPLATE = (
    "{{ bos_token }}{% set system = '' %}{% for message in messages %}{% if message['role'] == 'system' %}"
    "{% set system = (message['content'] if message['content'] is string else message['content'][0]['text']) %}"
    "{% else %}<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% if loop.index0 == 1 and messages[0]['role'] == 'system' %}{{ messages[0]['content'] if messages[0]['content']"
    " is string else messages[0]['content'][0]['text'] }}\n\n{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% elif part['type'] == 'image' %}<start_of_image>{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
_CHATML_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# A ChatML turn whose text is either a string or parts; each family defines ``render_parts``.
_CHATML_TURNS = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{{ render_parts(message['content']) }}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_LLAVA_OV_SPECIALS = (*_CHATML_SPECIALS, "<image>", "<video>")
# LLaVA-OneVision: a turn's pictures first, then a line break and its text. The break is an expression: templates
# render with trim_blocks, which drops a line break right after a tag.
_LLAVA_OV_TEMPLATE = (
    "{% macro render_parts(parts) %}{% for part in parts | selectattr('type', 'equalto', 'image') %}<image>"
    "{% endfor %}{% if parts | selectattr('type', 'equalto', 'image') | list %}{{ '\\n' }}{% endif %}"
    "{% for part in parts | selectattr('type', 'equalto', 'text') %}{{ part['text'] }}{% endfor %}{% endmacro %}"
    + _CHATML_TURNS
)
_INTERNVL_SPECIALS = (*_CHATML_SPECIALS, "<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>",
                      "<box>", "</box>", "<video>")
# InternVL: each picture where it stands, on its own line.
_INTERNVL_TEMPLATE = (
    "{% macro render_parts(parts) %}{% for part in parts %}{% if part['type'] == 'image' %}<IMG_CONTEXT>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endmacro %}" + _CHATML_TURNS
)
# SmolVLM's: the tile markers Idefics3's processor writes (a grid of up to 6x6) are tokens of their own.
_IDEFICS3_SPECIALS = (*_CHATML_SPECIALS, "<fake_token_around_image>", "<image>", "<global-img>",
                      "<end_of_utterance>", *(f"<row_{row}_col_{col}>" for row in range(1, 7) for col in range(1, 7)))
# SmolVLM: "Role:" turns ending in <end_of_utterance>, pictures where they stand.
_IDEFICS3_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}: {{ message['content'] }}{% else %}"
    "{{ ':' if message['content'][0]['type'] == 'image' else ': ' }}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% elif part['type'] == 'image' %}<image>{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)
_LLAMA_SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                   "<|finetune_right_pad_id|>")
_LLAMA_TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def _byte_level_tokenizer(untrained: Any, specials: tuple[str, ...], template: str) -> Any:
    """``untrained``'s byte-level BPE pipeline trained on ``corpus()``, with a family's special tokens and chat
    template. Training through the family's own tokenizer class matters: transformers 5 rebuilds that class's
    pre-tokenizer when it loads the tokenizer back."""
    from tokenizers.pre_tokenizers import ByteLevel

    tokenizer = untrained.train_new_from_iterator(
        corpus(), vocab_size=1024, new_special_tokens=list(specials), initial_alphabet=ByteLevel.alphabet(),
        show_progress=False)
    tokenizer.chat_template = template
    return tokenizer


def _qwen_tokenizer(specials: tuple[str, ...] = _QWEN_SPECIALS, template: str = _QWEN_TEMPLATE) -> Any:
    """Qwen's byte-level BPE with its ChatML special tokens (by default Qwen-VL's vision ones too)."""
    from transformers import Qwen2Tokenizer

    return _byte_level_tokenizer(Qwen2Tokenizer(eos_token="<|im_end|>", pad_token="<|endoftext|>"), specials,
                                 template)


def _with_named_tokens(tokenizer: Any, path: Path, names: dict[str, str]) -> Any:
    """``tokenizer`` saved into ``path`` with some special tokens given names, and read back: processors (Gemma 3's,
    InternVL's) find their image tokens as the tokenizer's named special tokens (``tokenizer.image_token``)."""
    import json

    tokenizer.save_pretrained(path)
    config_file = path / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["extra_special_tokens"] = names
    config_file.write_text(json.dumps(config, indent=2))
    return type(tokenizer).from_pretrained(path)


def _gemma_tokenizer(path: Path) -> Any:
    """Gemma's metaspace BPE (trained on ``corpus()``) with its turn and image special tokens, saved into ``path``
    with its image tokens named."""
    from transformers import GemmaTokenizer

    tokenizer = GemmaTokenizer().train_new_from_iterator(
        corpus(), vocab_size=1024, new_special_tokens=list(_GEMMA_SPECIALS), show_progress=False)
    tokenizer.chat_template = _GEMMA_TEMPLATE
    return _with_named_tokens(tokenizer, path, {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                                "image_token": "<image_soft_token>"})


def _small_text(tokenizer: Any, **extra: Any) -> dict[str, Any]:
    """A family's text model at toy size (its own class fills in the rest of its architecture). Two 64-wide attention
    heads: inference engines' CPU kernels (vLLM's) take head sizes from 32 up only."""
    return {"vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 64, "max_position_embeddings": 4096,
            "initializer_range": 0.2, "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id, **extra}


def _small_vision(**extra: Any) -> dict[str, Any]:
    """A family's vision tower at toy size (its own class fills in the rest)."""
    return {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, **extra}


def _save_without_video(path: Path, processor_class: str, image_processor: Any, tokenizer: Any,
                        **settings: Any) -> None:
    """A processor saved as its parts: image processor, tokenizer (with the chat template) and the processor's own
    settings. For families whose processor insists on a video processor, which needs torchvision (seir sends no
    video): such a processor cannot even be made without one, so it is never saved whole."""
    import json

    image_processor.save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "processor_config.json").write_text(json.dumps({"processor_class": processor_class, **settings},
                                                           indent=2))


def _build_qwen_vl(path: Path, family: str, seed: int, text: dict[str, Any], vision: dict[str, Any],
                   patch: int) -> None:
    """A Qwen-VL family (``family``: the transformers name, Qwen2_5_VL or Qwen3VL) at toy size: Qwen's tokenizer,
    pictures cut into ``patch``-pixel patches merged 2x2, and a processor saved without its video part (which needs
    torchvision; seir sends no video)."""
    import transformers
    from transformers import Qwen2VLImageProcessorPil

    tokenizer = _qwen_tokenizer()
    ids = {f"{name}_token_id": tokenizer.convert_tokens_to_ids(f"<|{token}|>") for name, token in
           (("image", "image_pad"), ("video", "video_pad"), ("vision_start", "vision_start"),
            ("vision_end", "vision_end"))}
    config = getattr(transformers, f"{family}Config")(
        text_config=_small_text(tokenizer, **text), bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, vision_config={
            "depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
            "patch_size": patch, "spatial_merge_size": 2, "temporal_patch_size": 2, **vision}, **ids)
    with seeded(seed):
        model = getattr(transformers, f"{family}ForConditionalGeneration")(config)
    model.save_pretrained(path)
    side = 2 * patch  # one merged patch of pixels; a picture spans one to four of them
    images = Qwen2VLImageProcessorPil(min_pixels=side * side, max_pixels=4 * side * side, patch_size=patch,
                                      merge_size=2, temporal_patch_size=2)
    _save_without_video(path, f"{family}Processor", images, tokenizer)


def _build_qwen25_vl(path: Path) -> None:
    """Qwen2.5-VL: multimodal rotary positions (M-RoPE), 14-pixel patches, windowed attention in the vision tower."""
    _build_qwen_vl(path, "Qwen2_5_VL", 6, {"rope_scaling": {"type": "mrope", "mrope_section": [4, 6, 6]},
                                           "head_dim": None},
                   {"window_size": 56, "fullatt_block_indexes": [1]}, patch=14)


def _build_qwen3_vl(path: Path) -> None:
    """Qwen3-VL: interleaved multimodal rotary positions, 16-pixel patches, and DeepStack (visual features fed into
    early text layers)."""
    rope = {"rope_type": "default", "rope_theta": 5_000_000.0, "mrope_section": [12, 10, 10],
            "mrope_interleaved": True}
    _build_qwen_vl(path, "Qwen3VL", 11, {"rope_parameters": rope},
                   {"num_position_embeddings": 64, "deepstack_visual_indexes": [0]}, patch=16)


def _build_gemma3_vl(path: Path) -> None:
    """Gemma 3 with its SigLIP vision tower: interleaved sliding-window and full attention, each picture read as a
    fixed number of soft tokens between ``<start_of_image>`` and ``<end_of_image>``."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessorPil, Gemma3Processor

    tokenizer = _gemma_tokenizer(path)
    text = _small_text(tokenizer, sliding_window=16, layer_types=["sliding_attention", "full_attention"],
                       eos_token_id=tokenizer.convert_tokens_to_ids("<end_of_turn>"))
    config = Gemma3Config(
        text_config=text, mm_tokens_per_image=4,
        vision_config=_small_vision(image_size=32, patch_size=8),
        boi_token_index=tokenizer.convert_tokens_to_ids("<start_of_image>"),
        eoi_token_index=tokenizer.convert_tokens_to_ids("<end_of_image>"),
        image_token_index=tokenizer.convert_tokens_to_ids("<image_soft_token>"))
    with seeded(7):
        model = Gemma3ForConditionalGeneration(config)
    model.save_pretrained(path)
    images = Gemma3ImageProcessorPil(size={"height": 32, "width": 32}, do_pan_and_scan=False)
    Gemma3Processor(image_processor=images, tokenizer=tokenizer, chat_template=_GEMMA_TEMPLATE,
                    image_seq_length=4).save_pretrained(path)


def _build_llava_onevision(path: Path) -> None:
    """LLaVA-OneVision (its Qwen2 0.5B/7B shape): a SigLIP tower without class token, and "anyres": a picture alone
    in its prompt is read whole and as the grid of tiles that best fits its size (so its token count follows its
    size); each of several pictures is read whole only."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessorPil,
    )

    tokenizer = _qwen_tokenizer(_LLAVA_OV_SPECIALS, _LLAVA_OV_TEMPLATE)
    tile, patch = 16, 8  # 4 tokens a tile; a grid of at most 2x2 tiles
    grid = [[tile * rows, tile * cols] for rows in (1, 2) for cols in (1, 2)]
    config = LlavaOnevisionConfig(
        text_config={"model_type": "qwen2", **_small_text(tokenizer)},
        vision_config=_small_vision(model_type="siglip_vision_model", image_size=tile, patch_size=patch,
                                    vision_use_head=False),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"), vision_feature_select_strategy="full",
        vision_feature_layer=-1, image_grid_pinpoints=grid, tie_word_embeddings=True)
    with seeded(20):
        model = LlavaOnevisionForConditionalGeneration(config)
    model.save_pretrained(path)
    images = LlavaOnevisionImageProcessorPil(size={"height": tile, "width": tile}, image_grid_pinpoints=grid)
    _save_without_video(path, "LlavaOnevisionProcessor", images, tokenizer, num_image_tokens=(tile // patch) ** 2,
                        vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9")


def _build_internvl(path: Path) -> None:
    """InternVL 3 as transformers ports it (OpenGVLab/InternVL3-*-hf): a picture cut into the tiles whose grid best
    fits its shape, plus a thumbnail of the whole, each tile's patches shuffled down 2x2 into its tokens between
    ``<img>`` and ``</img>``; a Qwen2 text model."""
    from transformers import GotOcr2ImageProcessorPil, InternVLConfig, InternVLForConditionalGeneration

    tokenizer = _with_named_tokens(_qwen_tokenizer(_INTERNVL_SPECIALS, _INTERNVL_TEMPLATE), path, {
        "start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
        "video_token": "<video>"})
    tile, patch = 32, 8
    tokens_per_tile = (tile // patch) ** 2 // 4  # the 2x2 pixel shuffle (downsample ratio 0.5)
    config = InternVLConfig(
        text_config={"model_type": "qwen2", **_small_text(tokenizer)},
        vision_config=_small_vision(image_size=[tile, tile], patch_size=[patch, patch]),
        image_token_id=tokenizer.context_image_token_id, image_seq_length=tokens_per_tile, downsample_ratio=0.5)
    with seeded(21):
        model = InternVLForConditionalGeneration(config)
    model.save_pretrained(path)
    images = GotOcr2ImageProcessorPil(size={"height": tile, "width": tile}, crop_to_patches=True, min_patches=1,
                                      max_patches=4)
    _save_without_video(path, "InternVLProcessor", images, tokenizer, image_seq_length=tokens_per_tile)


def _build_idefics3(path: Path) -> None:
    """Idefics3 in SmolVLM's shape: SmolLM's byte-level BPE and a Llama text model; a picture split into a grid of
    tiles (each marked by its row and column) and read once more whole, each tile's patches shuffled down 2x2."""
    from transformers import (
        GPT2Tokenizer,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
    )

    untrained = GPT2Tokenizer(bos_token="<|im_start|>", eos_token="<end_of_utterance>", pad_token="<|im_end|>",
                              unk_token="<|endoftext|>")
    tokenizer = _byte_level_tokenizer(untrained, _IDEFICS3_SPECIALS, _IDEFICS3_TEMPLATE)
    tile, patch = 32, 8
    tokens_per_tile = (tile // patch) ** 2 // 4  # scale factor 2
    config = Idefics3Config(
        text_config=_small_text(tokenizer),
        vision_config=_small_vision(image_size=tile, patch_size=patch),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), scale_factor=2)
    with seeded(22):
        model = Idefics3ForConditionalGeneration(config)
    model.save_pretrained(path)
    # A picture's longest side goes to two tiles: a grid of at most 2x2 tiles, and the whole.
    images = Idefics3ImageProcessorPil(size={"longest_edge": 2 * tile}, max_image_size={"longest_edge": tile})
    Idefics3Processor(image_processor=images, tokenizer=tokenizer, image_seq_len=tokens_per_tile,
                      chat_template=_IDEFICS3_TEMPLATE).save_pretrained(path)


def _build_qwen3(path: Path) -> None:
    """Qwen3: Qwen's tokenizer and ChatML with its thinking switch, and per-head query and key norms."""
    from transformers import AutoModelForCausalLM, Qwen3Config

    tokenizer = _qwen_tokenizer(_QWEN3_SPECIALS, _QWEN3_TEMPLATE)
    with seeded(8):
        model = AutoModelForCausalLM.from_config(Qwen3Config(**_small_text(tokenizer), tie_word_embeddings=True))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def _build_gemma3(path: Path) -> None:
    """Gemma 3's text model alone (its 1B shape): sliding-window layers between full ones, no system turn."""
    from transformers import AutoModelForCausalLM, Gemma3TextConfig

    tokenizer = _gemma_tokenizer(path)
    config = Gemma3TextConfig(**_small_text(tokenizer, sliding_window=16,
                                            layer_types=["sliding_attention", "full_attention"],
                                            eos_token_id=tokenizer.convert_tokens_to_ids("<end_of_turn>")))
    with seeded(9):
        model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(path)


def _build_llama3(path: Path) -> None:
    """Llama 3: byte-level BPE saved as a plain fast tokenizer (as Meta's checkpoints are), header-style turns ending
    in ``<|eot_id|>``, and its long-context rotary scaling."""
    import json

    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Tokenizer

    untrained = Qwen2Tokenizer(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                               pad_token="<|finetune_right_pad_id|>")
    tokenizer = _byte_level_tokenizer(untrained, _LLAMA_SPECIALS, _LLAMA_TEMPLATE)
    tokenizer.save_pretrained(path)
    config_file = path / "tokenizer_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()),
                                       "tokenizer_class": "PreTrainedTokenizerFast"}, indent=2))
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 1024}
    with seeded(10):
        model = AutoModelForCausalLM.from_config(LlamaConfig(**_small_text(tokenizer, rope_scaling=scaling)))
    model.save_pretrained(path)


BUILDERS: dict[str, Callable[[Path], None]] = {
    "qwen2.5-vl": _build_qwen25_vl, "qwen3-vl": _build_qwen3_vl, "gemma3-vl": _build_gemma3_vl,
    "llava-onevision": _build_llava_onevision, "internvl": _build_internvl, "idefics3": _build_idefics3,
    "qwen3": _build_qwen3, "gemma3": _build_gemma3, "llama3": _build_llama3}
