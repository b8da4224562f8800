"""Issue 22 benchmark: the same chat requests through ``transformers-chat`` (padded ``generate``) and through a vLLM
engine that seir starts (``backend: vllm``: continuous batching, paged KV cache), on one random-weight LM at a real
architecture size (Qwen2.5-0.5B's shape, bench/real_size.py, built from its config: nothing to download).

The requests have the demo's real prompt shapes: the question, answer and caption prompts seir builds
(operators/seir/prompts.py) for the demo job's topics and templates, with 0-3 earlier turns and some revisions, so
prompts run from about 100 to 1,000 tokens; each reply is allowed 16-256 tokens, drawn uniformly (seeded).
Random weights over a 151,936-token vocabulary almost never draw the end token, so replies run to their limit on both
paths. Printed: output tokens/s of each path and the ratio, measured in the same run; for ``transformers-chat`` both
its batches in arrival order (what it did before) and its batches of similar length (what ``chat`` does now).
Engine start-up is timed apart and left out of the rate.

    .venv/bin/python bench/bench_engines.py --requests 512                    # the issue's size
    .venv/bin/python bench/bench_engines.py --requests 64 --repeats 1         # what fits a 2-core CPU in minutes

On a GPU machine: ``--python /path/to/vllm-venv/bin/python --device cuda`` (the CUDA build of vLLM in that venv).

``--scale 100 1000 10000`` instead measures how one call grows with its requests, on the tiny LM with 64-wide heads
(16-token replies): seconds, seconds per 1k requests, and the calling process's peak Python memory (tracemalloc),
for both paths.

    .venv/bin/python bench/bench_engines.py --scale 100 1000 10000
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path
from typing import Any

import real_size  # bench/real_size.py, beside this script

from seir.engine.spec import load_job
from seir.operators.backends.base import ChatRequest, ChatResult, Sampling, batches
from seir.operators.backends.engines import Vllm
from seir.operators.backends.tiny import corpus
from seir.operators.backends.transformers_chat import TransformersChat
from seir.operators.stages.prompts import History, Revision, answer_messages, caption_messages, question_messages

ROOT = Path(__file__).resolve().parent.parent
SHORTEST_REPLY, LONGEST_REPLY = 16, 256


def demo_requests(count: int, seed: int = 0) -> list[ChatRequest]:
    """``count`` requests shaped like the demo's: its openings, stages in turn, histories and revisions drawn."""
    rng = random.Random(seed)
    seeds = load_job(ROOT / "jobs" / "demo.yaml").seeds
    openings = [template.replace(seeds.slot, topic) for topic in seeds.topics for template in seeds.templates]
    sentences = list(corpus())

    def text(words: int) -> str:
        return " ".join(" ".join(rng.choice(sentences) for _ in range(words // 8 + 1)).split()[:words])

    requests = []
    for index in range(count):
        opening = rng.choice(openings)
        history = History(tuple((text(rng.randint(10, 30)), text(rng.randint(40, 150)))
                                for _ in range(rng.randint(0, 3))))
        revision = Revision(text(rng.randint(20, 80)), text(rng.randint(20, 60))) if rng.random() < 0.4 else None
        stage = index % 3
        if stage == 0:
            messages = question_messages(opening, history, 40, revision)
        elif stage == 1:
            messages = answer_messages(opening, history, revision)
        else:
            messages = caption_messages(opening, text(rng.randint(40, 150)), 60, revision)
        reply = rng.randint(SHORTEST_REPLY, LONGEST_REPLY)
        requests.append(ChatRequest(messages, Sampling(reply, temperature=0.8, top_p=0.95, seed=index)))
    return requests


def timed(call: Any, requests: list[ChatRequest]) -> tuple[float, int]:
    """Seconds and output tokens of one pass over ``requests``."""
    started = time.perf_counter()
    results: list[ChatResult] = call(requests)
    return time.perf_counter() - started, sum(result.tokens_out for result in results)


def padded_rates(model: str, requests: list[ChatRequest], args: argparse.Namespace,
                 rates: dict[str, list[float]]) -> None:
    """transformers-chat's batches in arrival order, then by length; the model is freed on return."""
    local = TransformersChat(model, device=args.device, max_batch_size=args.batch_size)
    local.chat(requests[:2])  # warm-up

    def arrival_order(batch: list[ChatRequest]) -> list[ChatResult]:
        return [result for part in batches(batch, args.batch_size) for result in local._chat(part)]

    for _ in range(args.repeats):
        for label, call in (("transformers-chat, arrival order", arrival_order),
                            ("transformers-chat, by length", local.chat)):
            seconds, tokens = timed(call, requests)
            rates[label].append(tokens / seconds)
            print(f"  {label}: {tokens:,} tokens in {seconds:.1f}s = {tokens / seconds:.1f} tok/s", flush=True)


def scaling(sizes: list[int], args: argparse.Namespace) -> None:
    """One call of N requests through each path: time and the caller's peak Python memory, N growing 10x a step."""
    local = TransformersChat("tiny:llm-wide-heads", device=args.device, max_batch_size=args.batch_size)
    engine = Vllm("tiny:llm-wide-heads", python=args.python, max_model_len=4096, extra_args=args.engine_args,
                  env={"VLLM_CPU_KVCACHE_SPACE": args.kv_cache_gb})
    try:
        print(f"{'path':<18} {'requests':>9} {'s':>8} {'s per 1k':>9} {'peak MB':>8}")
        for label, backend in (("transformers-chat", local), ("vllm", engine)):
            backend.chat(demo_requests(2))  # warm-up
            for size in sizes:
                requests = [ChatRequest(r.messages, replace(r.sampling, max_new_tokens=16))
                            for r in demo_requests(size)]
                tracemalloc.start()
                seconds, _ = timed(backend.chat, requests)
                peak = tracemalloc.get_traced_memory()[1] / 2**20
                tracemalloc.stop()
                print(f"{label:<18} {size:>9,} {seconds:>8.1f} {seconds / size * 1000:>9.2f} {peak:>8.1f}", flush=True)
    finally:
        engine.server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--models", type=Path, default=Path("/tmp/real-models"),
                        help="where the real-size models are built (kept for later runs)")
    parser.add_argument("--python", default=str(ROOT / ".venv-vllm" / "bin" / "python"),
                        help="the interpreter of vLLM's environment (`make vllm-env`)")
    parser.add_argument("--device", default="auto", help="transformers-chat's device")
    parser.add_argument("--batch-size", type=int, default=16, help="transformers-chat's max_batch_size")
    parser.add_argument("--kv-cache-gb", default="4", help="VLLM_CPU_KVCACHE_SPACE for vLLM's CPU build")
    parser.add_argument("--engine-args", nargs="*", default=[], help="more of vLLM's own flags")
    parser.add_argument("--scale", nargs="*", type=int, help="request counts for the scaling run (tiny LM)")
    args = parser.parse_args()
    if args.scale:
        scaling(args.scale, args)
        return

    model = str(real_size.build(args.models)["llm"])
    requests = demo_requests(args.requests)
    budget = sum(r.sampling.max_new_tokens for r in requests)
    print(f"{len(requests)} requests, {budget:,} reply tokens allowed; model {model} "
          f"({real_size.parameters('llm') / 1e6:.0f}M parameters)", flush=True)
    rates: dict[str, list[float]] = {"transformers-chat, arrival order": [], "transformers-chat, by length": [],
                                     "vllm": []}

    padded_rates(model, requests, args, rates)
    started = time.perf_counter()
    engine = Vllm(model, python=args.python, max_model_len=4096, extra_args=args.engine_args,
                  env={"VLLM_CPU_KVCACHE_SPACE": args.kv_cache_gb})
    print(f"  vllm {engine.engine_version}: engine up in {time.perf_counter() - started:.1f}s", flush=True)
    try:
        engine.chat(requests[:2])  # warm-up
        for _ in range(args.repeats):
            seconds, tokens = timed(engine.chat, requests)
            rates["vllm"].append(tokens / seconds)
            print(f"  vllm: {tokens:,} tokens in {seconds:.1f}s = {tokens / seconds:.1f} tok/s", flush=True)
    finally:
        engine.server.stop()

    medians = {label: statistics.median(values) for label, values in rates.items()}
    baseline = medians["transformers-chat, arrival order"]
    print(f"\n{'path':<34} {'output tok/s':>12} {'ratio':>6}")
    for label, rate in medians.items():
        print(f"{label:<34} {rate:>12.1f} {rate / baseline:>6.2f}")
    print(f"vllm / transformers-chat by length: {medians['vllm'] / medians['transformers-chat, by length']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
