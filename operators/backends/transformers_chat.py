"""Causal language models through transformers: batched chat and the label-token score read.

The vision backend subclasses this one and swaps only how the model loads and how prompts become tensors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import takewhile
from typing import Any

from seir.operators.backends.base import (
    EMPTY,
    ChatRequest,
    ChatResult,
    LocalBackend,
    ScoreRequest,
    ScoreResult,
    batches,
    image_parts,
    label_expectation,
    template_switches,
    text_of,
)
from seir.operators.backends.sampling import SeededSampling
from seir.operators.base import register
from seir.operators.context import TokenCounter

_LABEL_READS_KEPT = 4096


def without_image_bytes(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Image parts reduced to placeholders: chat templates only need to know where an image sits."""
    return [
        {**m, "content": [{"type": "image"} if p.get("type") == "image" else p for p in m["content"]]}
        if isinstance(m.get("content"), list) else m
        for m in messages
    ]


def render_prompt(processor: Any, messages: list[dict[str, Any]], template_options: Mapping[str, Any] = EMPTY) -> str:
    """The prompt text a chat model reads: its chat template with the generation prompt, pictures as placeholders.
    ``template_options`` are the switches a family's template reads (Qwen3's ``enable_thinking``)."""
    return processor.apply_chat_template(without_image_bytes(messages), add_generation_prompt=True, tokenize=False,
                                         **template_options)


def config_window(config: Any) -> int | None:
    """The most positions a model's config allows (a composite model's text model decides)."""
    for part in (getattr(config, "text_config", None), config):
        for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            value = getattr(part, name, None)
            if isinstance(value, int) and value > 0:
                return value
    return None


@dataclass
class ChatTokenCounter:
    """Counts tokens as ``TransformersChat`` feeds them: its chat template and tokenizer, each picture as the
    processor expands its placeholder. Small and picklable (a tokenizer, an image processor, no weights), so the
    engine counts where it builds requests."""

    processor: Any
    template_options: Mapping[str, Any] = field(default_factory=dict)  # as the backend renders its prompts
    # (picture size, alone in its prompt) -> the tokens such a picture adds
    _per_picture: dict[tuple[tuple[int, int], bool], int] = field(default_factory=dict)

    def count(self, messages: list[dict[str, Any]], suffix: str = "") -> int:
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        text = render_prompt(self.processor, messages, self.template_options) + suffix
        in_text = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        # The processor replaces each picture's placeholder in the text by what the family reads for it.
        pictures = [data for m in messages for data in image_parts(m)]
        return in_text + sum(self._picture_adds(data, alone=len(pictures) == 1) for data in pictures)

    def _picture_adds(self, data: bytes, alone: bool) -> int:
        """The tokens a picture of this size adds to its placeholder's, as the processor itself expands it (its
        image tokens, and whatever the family wraps them in, such as Gemma's start and end of image): measured once
        per size on blank pictures. Some families read a picture differently when others share its prompt
        (LLaVA-OneVision tiles a picture only when it is alone), so it is measured alone and beside one other: a
        long dialogue's many pictures cost two measurements per size, not one per count of pictures."""
        import io

        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:  # the header only: no pixel is decoded
            size = image.size
        key = (size, alone)
        if key not in self._per_picture:
            tokenizer = getattr(self.processor, "tokenizer", self.processor)
            pictures = 1 if alone else 2
            placeholders = [{"type": "image", "image": b""}] * pictures
            text = render_prompt(self.processor, [{"role": "user", "content": placeholders}], self.template_options)
            blanks = [Image.new("RGB", size)] * pictures
            expanded = self.processor(text=[text], images=[blanks], add_special_tokens=False)
            added = len(expanded["input_ids"][0]) - len(tokenizer(text, add_special_tokens=False)["input_ids"])
            self._per_picture[key] = added // pictures
        return self._per_picture[key]


def label_tokens(tokenizer: Any, prefix: str, labels: tuple[str, ...]) -> tuple[str, list[int]]:
    """The prefix to feed and the token each label starts with after it. Where a tokenizer would merge the prefix's
    tail into the label (GPT-2 style BPE makes " 5" one token), the tail is cut from the prefix and read as part of
    the label token instead, so the model sees the tokens it would see in ``prefix + label``."""
    base = tokenizer.encode(prefix, add_special_tokens=False)
    full = [tokenizer.encode(prefix + label, add_special_tokens=False) for label in labels]
    keep = min(sum(1 for _ in takewhile(lambda pair: pair[0] == pair[1], zip(base, f, strict=False))) for f in full)
    ids = [f[keep] for f in full]
    if len(set(ids)) < len(ids):
        raise ValueError(f"labels {labels} do not start with distinct tokens after {prefix!r}")
    return tokenizer.decode(base[:keep]), ids


def score_result(labels: tuple[str, ...], label_log_probs: Any, tokens_in: int) -> ScoreResult:
    """Renormalise the label tokens' log-probabilities; their total mass tells how on-format the model was."""
    probabilities = label_log_probs.softmax(-1).tolist()
    expectation = label_expectation(labels, probabilities)
    return ScoreResult(probabilities, expectation, label_log_probs.exp().sum().item(), tokens_in)


@register
class TransformersChat(LocalBackend):
    name = "transformers-chat"
    capabilities = frozenset({"chat", "score"})

    def __init__(self, model: str, revision: str | None = None, *, max_batch_size: int = 16,
                 chat_template_kwargs: Mapping[str, Any] | None = None, **options: Any) -> None:
        super().__init__(model, revision, **options)
        self.max_batch_size = max_batch_size
        # Switches of the family's chat template, e.g. {enable_thinking: false} for Qwen3's hybrid models: part of
        # every prompt, so of every call's key (only when set, so jobs without them keep theirs).
        self.template_options = template_switches(self.name, chat_template_kwargs)
        if self.template_options:
            self.options["chat_template_kwargs"] = self.template_options
        self.processor, self.model = self._load()
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.tokenizer.padding_side = "left"  # generated tokens then start at the same column in every row
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        eos = self.model.generation_config.eos_token_id
        eos = self.tokenizer.eos_token_id if eos is None else eos
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self._labels: dict[tuple[str, tuple[str, ...]], tuple[str, list[int]]] = {}
        # A model that computes its own rotary positions from the pictures in a prompt (Qwen-VL's M-RoPE).
        self._places_own_positions = hasattr(getattr(self.model, "model", self.model), "get_rope_index")

    @classmethod
    def load_processor(cls, path: str, revision: str | None, **options: Any) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path, revision=revision, **options)

    @classmethod
    def offline_context(cls, model: str, revision: str | None = None,
                        options: Mapping[str, Any] = EMPTY) -> tuple[int | None, TokenCounter | None]:
        from transformers import AutoConfig

        from seir.operators.backends.tiny import resolve_model_ref

        path = resolve_model_ref(model)  # files already here only: a check never waits on the network
        window = config_window(AutoConfig.from_pretrained(path, revision=revision, local_files_only=True))
        return window, ChatTokenCounter(cls.load_processor(path, revision, local_files_only=True),
                                        template_switches(cls.name, options.get("chat_template_kwargs")))

    def _load(self) -> tuple[Any, Any]:
        from transformers import AutoModelForCausalLM

        processor = self.load_processor(self.path, self.load_revision)
        return processor, AutoModelForCausalLM.from_pretrained(self.path, **self.load_options)

    def _inputs(self, prompts: list[str], conversations: list[list[dict[str, Any]]]) -> dict[str, Any]:
        """Tokenised, left-padded prompts on the model's device (the template already wrote any special tokens)."""
        encoded = self.tokenizer(prompts, padding=True, add_special_tokens=False, return_tensors="pt")
        return self.on_device(encoded)

    def _prompt(self, messages: list[dict[str, Any]]) -> str:
        return render_prompt(self.processor, messages, self.template_options)

    def context(self) -> tuple[int | None, TokenCounter | None]:
        return config_window(self.model.config), ChatTokenCounter(self.processor, self.template_options)

    def chat(self, requests: list[ChatRequest]) -> list[ChatResult]:
        """Requests of similar length share a batch: a padded batch runs every row to its longest prompt and its
        longest reply limit (bench/bench_engines.py measures the gain). Seeded sampling makes each result the same
        whichever requests share its batch."""
        order = sorted(range(len(requests)), key=lambda i: (requests[i].sampling.max_new_tokens,
                                                            self.prompt_size(requests[i].messages)))
        results: list[ChatResult | None] = [None] * len(requests)
        for batch in batches(order, self.max_batch_size):
            for i, result in zip(batch, self._chat([requests[i] for i in batch]), strict=True):
                results[i] = result
        return [result for result in results if result is not None]

    @staticmethod
    def prompt_size(messages: list[dict[str, Any]]) -> int:
        """A cheap stand-in for a prompt's length, to sort by: its text's characters and its pictures."""
        return sum(len(text_of(m)) + 1000 * len(image_parts(m)) for m in messages)

    def _chat(self, batch: list[ChatRequest]) -> list[ChatResult]:
        import torch
        from transformers import LogitsProcessorList

        inputs = self._inputs([self._prompt(r.messages) for r in batch], [r.messages for r in batch])
        width = inputs["input_ids"].shape[1]
        sampler = SeededSampling([r.sampling for r in batch], prompt_length=width)
        with torch.inference_mode():
            output = self.model.generate(
                **inputs, max_new_tokens=max(r.sampling.max_new_tokens for r in batch), do_sample=False,
                logits_processor=LogitsProcessorList([sampler]), pad_token_id=self.tokenizer.pad_token_id,
                use_cache=True,
            )
        rows = zip(batch, output[:, width:].tolist(), inputs["attention_mask"].sum(1).tolist(), strict=True)
        return [self._chat_result(request, tokens, tokens_in) for request, tokens, tokens_in in rows]

    def _chat_result(self, request: ChatRequest, tokens: list[int], tokens_in: int) -> ChatResult:
        tokens = tokens[: request.sampling.max_new_tokens]  # the batch ran to its longest request's limit
        stop = next((i for i, token in enumerate(tokens) if token in self.eos_ids), None)
        if stop is not None:
            tokens = tokens[: stop + 1]
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        return ChatResult(text, tokens_in, len(tokens), "length" if stop is None else "stop")

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        return [result for batch in batches(requests, self.max_batch_size) for result in self._score(batch)]

    def _score(self, batch: list[ScoreRequest]) -> list[ScoreResult]:
        import torch

        reads = [self._label_read(r.answer_prefix, r.labels) for r in batch]
        prompts = [self._prompt(r.messages) for r in batch]
        suffixes = [prefix for prefix, _ in reads]
        # A conversation is its rendered prompt and its images (the prompt holds only their placeholders).
        conversations = [(prompt, tuple(data for m in r.messages for data in image_parts(m)))
                         for prompt, r in zip(prompts, batch, strict=True)]
        tails = self._shared_tails(conversations, suffixes)
        if tails is not None:
            log_probs, tokens_in = self._read_after_shared_conversations(batch, conversations, tails)
        else:
            inputs = self._inputs([p + s for p, s in zip(prompts, suffixes, strict=True)], [r.messages for r in batch])
            with torch.inference_mode():
                logits = self.model(**inputs, logits_to_keep=1).logits[:, -1].float()
            log_probs, tokens_in = logits.log_softmax(-1), inputs["attention_mask"].sum(1).tolist()
        rows = zip(batch, log_probs, reads, tokens_in, strict=True)
        return [score_result(r.labels, row[ids], n) for r, row, (_, ids), n in rows]

    def _shared_tails(self, conversations: list[tuple[str, tuple[bytes, ...]]],
                      suffixes: list[str]) -> list[list[int]] | None:
        """A judge reads several dimensions' scores after one critique conversation: those requests differ only in
        their answer prefix. When some requests share a conversation, each request's tokens after its prompt (the
        tokens of ``prompt + suffix`` past those of ``prompt``); None when nothing is shared, when a prompt's tokens
        do not begin those of its whole text or a suffix adds none, or when the model places positions by what the
        prompt holds (Qwen-VL's multimodal rotary positions, which a cache copied between rows does not carry): the
        requests then run whole."""
        if len(set(conversations)) == len(conversations) or self._places_own_positions:
            return None
        prompt_tokens = {prompt: self.tokenizer.encode(prompt, add_special_tokens=False)
                         for prompt, _ in conversations}
        tails = []
        for (prompt, _), suffix in zip(conversations, suffixes, strict=True):
            head, whole = prompt_tokens[prompt], self.tokenizer.encode(prompt + suffix, add_special_tokens=False)
            if len(whole) == len(head) or whole[: len(head)] != head:
                return None
            tails.append(whole[len(head):])
        return tails

    def _read_after_shared_conversations(self, batch: list[ScoreRequest],
                                         conversations: list[tuple[str, tuple[bytes, ...]]],
                                         tails: list[list[int]]) -> tuple[Any, list[int]]:
        """Next-token log-probabilities after each request's prompt and tail, each distinct conversation run once:
        its key-value cache is copied to every request that shares it, and the tails run on top."""
        import torch

        first = {conversation: i for i, conversation in reversed(list(enumerate(conversations)))}
        unique = list(first)
        inputs = self._inputs([prompt for prompt, _ in unique], [batch[first[c]].messages for c in unique])
        prompt_mask = inputs["attention_mask"]
        device = prompt_mask.device
        owner = torch.tensor([unique.index(c) for c in conversations], device=device)
        # Tails are right-padded: each row's tail then follows its prompt with no gap (a gap would take room in a
        # sliding window), and its score is read at its own last token. Positions are the model's: it continues
        # them from the cache.
        width = max(map(len, tails))
        tail_ids = torch.tensor([t + [self.tokenizer.pad_token_id] * (width - len(t)) for t in tails], device=device)
        tail_mask = torch.tensor([[1] * len(t) + [0] * (width - len(t)) for t in tails], device=device)
        last = torch.tensor([len(t) - 1 for t in tails], device=device)
        with torch.inference_mode():
            cache = self.model(**inputs, use_cache=True, logits_to_keep=1).cache
            cache.batch_select_indices(owner)
            logits = self.model(input_ids=tail_ids, cache=cache,
                                attention_mask=torch.cat([prompt_mask[owner], tail_mask], 1)).logits.float()
        read = logits[torch.arange(len(tails), device=device), last]
        return read.log_softmax(-1), (prompt_mask.sum(1)[owner] + tail_mask.sum(1)).tolist()

    def _label_read(self, prefix: str, labels: tuple[str, ...]) -> tuple[str, list[int]]:
        key = (prefix, tuple(labels))
        if key not in self._labels:
            if len(self._labels) >= _LABEL_READS_KEPT:  # prefixes hold critiques: nearly every one is new
                self._labels.clear()
            self._labels[key] = label_tokens(self.tokenizer, prefix, key[1])
        return self._labels[key]
