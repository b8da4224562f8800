"""What the tiny builders share: a fixed English corpus their tokenizers are trained on, seeded weights, and the
tokenizers and configs of seir's own models (which some families reuse)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

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


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Weights drawn from ``seed`` without disturbing the caller's random state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def chat_tokenizer() -> Any:
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


def clip_tokenizer() -> Any:
    """CLIP's pipeline over single characters (no merges): trained CLIP-style BPE numbers its end-of-word tokens in
    hash order, which would make two builds differ."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    alphabet = sorted(ByteLevel.alphabet())
    specials = ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(specials + alphabet + [c + "</w>" for c in alphabet])}
    # 77 is CLIP's text length; Stable Diffusion pads every prompt to model_max_length.
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def text_config(tokenizer: Any) -> dict[str, Any]:
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


def clip_text_config(tokenizer: Any) -> dict[str, Any]:
    return {"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": 77, "projection_dim": 32,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id}


def clip_vision_config() -> dict[str, Any]:
    return {"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "projection_dim": 32}


def clip_image_processor() -> Any:
    from transformers import CLIPImageProcessorPil  # the PIL backend: torchvision must not be needed

    return CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


