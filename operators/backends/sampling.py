"""Sampling that depends on nothing but the request: not on batch-mates, padding or batch order.

Each row gets its own temperature and top-p, then Gumbel noise from a generator seeded by (request seed, step).
``generate(do_sample=False)`` then takes the argmax, which by the Gumbel-max trick is an exact sample from the
filtered distribution. Temperature 0 leaves the row's logits alone: plain greedy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import xxhash

from seir.operators.backends.base import Sampling

if TYPE_CHECKING:
    import torch


def step_seed(seed: int, step: int) -> int:
    return xxhash.xxh64_intdigest(f"{seed}:{step}".encode())


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches ``top_p`` (at least the most likely
    one); the rest get -inf."""
    ordered, order = logits.sort(descending=True)
    probs = ordered.softmax(-1)
    above = probs.cumsum(-1) - probs  # the mass of the tokens ranked above each one
    dropped = order[1:][above[1:] >= top_p]
    return logits.index_fill(-1, dropped, float("-inf"))


class SeededSampling:
    """A transformers ``LogitsProcessor`` (duck-typed, so importing this module stays cheap)."""

    def __init__(self, samplings: list[Sampling], prompt_length: int) -> None:
        self.samplings = samplings
        self.prompt_length = prompt_length  # padded prompt width: input_ids grows from here, one token per step

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import torch

        step = input_ids.shape[1] - self.prompt_length
        out = scores.clone()
        for row, sampling in enumerate(self.samplings):
            if sampling.temperature <= 0:
                continue
            logits = scores[row].float() / sampling.temperature
            if sampling.top_p < 1:
                logits = top_p_filter(logits, sampling.top_p)
            # A generator on the logits' device: noise for a 150k vocabulary is cheap there, costly to copy over.
            generator = torch.Generator(device=logits.device).manual_seed(step_seed(sampling.seed, step))
            uniform = torch.rand(logits.shape, generator=generator, device=logits.device)
            gumbel = -torch.log(-torch.log(uniform.clamp_min(torch.finfo(uniform.dtype).tiny)))
            out[row] = logits + gumbel
        return out
