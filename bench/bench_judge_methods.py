"""Issue 14 benchmark: the four ways ``openai-chat`` reads a judge score, on the same requests, against one server.

The tiny judge (random weights, built offline) is served over HTTP by the project's test server
(tests/support/openai_server.py), which supports every method: continued messages, chat and completions logprobs,
and ``n``. Each method scores the same ``--requests`` judge score requests (the real rubric prompts over InterSyn-
style turns, a quarter of them with an image) through a backend pinned to it. Printed per method:

- agreement with method 1 (continue-logprobs): Pearson r of the expectations over all requests and over the text-only
  ones (completions cannot carry images, so those are sampled), and the mean |difference|;
- the mean label mass (how much of the answer distribution fell on score labels);
- cost per score: HTTP requests, prompt + completion tokens (the servers' own usage counts), and wall seconds.

    python bench/bench_judge_methods.py --requests 200 --top-logprobs 20 --samples 5

Random weights put little probability on digits, so the logprob methods see few labels among their top tokens
and sampling rarely draws one: the agreement figures here measure the plumbing (methods 1 and 3 read the same
distribution from the same prompt, so they must agree), not a real judge; run it with a real judge's server for that.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from corpora import TextMaker, image  # bench/corpora.py, beside this script

from seir.operators.backends.base import ScoreRequest
from seir.operators.backends.openai_chat import SCORE_METHODS, OpenAIChat
from seir.operators.scoring.rubrics import SYNJUDGE, TurnView, score_request

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.support: the project's test server


def score_requests(count: int) -> list[ScoreRequest]:
    """Judge score requests as the loop makes them: a rubric dimension on a turn, after a short critique. Every
    fourth turn has an image, judged on image content; the rest on text content."""
    maker = TextMaker(seed=14)

    def words(n: int) -> str:
        return " ".join(maker.rng.choices(maker.words, cum_weights=maker.cumulative, k=n))

    requests = []
    for i in range(count):
        shown = i % 4 == 0
        turn = TurnView(question=words(8).capitalize() + "?", answer=words(20).capitalize() + ".",
                        caption=words(8), image=image(i, 32) if shown else None)
        dimension = SYNJUDGE["image_content" if shown else "text_content"]
        requests.append(score_request(dimension, turn, words(12).capitalize() + "."))
    return requests


class Metered:
    """Counts the HTTP requests and the tokens the server reports, around an endpoint's ``post``."""

    def __init__(self, chat: OpenAIChat) -> None:
        self.requests = self.tokens = 0
        self._post = chat.endpoint.post
        chat.endpoint.post = self.post  # type: ignore[method-assign]

    def post(self, path: str, body: dict[str, Any], max_retries: int | None = None) -> dict[str, Any]:
        reply = self._post(path, body, max_retries)
        usage = reply.get("usage") or {}
        self.requests += 1
        self.tokens += int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0)
        return reply


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """nan when either side is constant (every score the scale's middle: no label was seen)."""
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--top-logprobs", type=int, default=20)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    os.environ.setdefault("SEIR_HOME", tempfile.mkdtemp(prefix="seir-bench-home-"))
    from seir.operators.backends.tiny import build_tiny_models
    from tests.support.openai_server import OpenAIServer

    build_tiny_models(Path(os.environ["SEIR_HOME"]) / "models", ["judge"])
    requests = score_requests(args.requests)
    with OpenAIServer({"tiny:judge": "transformers-vision-chat"}) as server:
        runs = {}
        for method in SCORE_METHODS:
            chat = OpenAIChat("tiny:judge", base_url=server.url, score_method=method, top_logprobs=args.top_logprobs,
                              score_samples=args.samples, max_concurrency=args.concurrency)
            report = chat.probe(frozenset({"score"}))
            assert not report.problems, report.problems
            meter = Metered(chat)
            started = time.perf_counter()
            results = chat.score(requests)
            runs[method] = (results, meter, time.perf_counter() - started)
    base = np.array([r.expectation for r in runs[SCORE_METHODS[0]][0]])
    print(f"{args.requests} judge score requests on the tiny judge ({args.requests // 4 + (args.requests % 4 > 0)} "
          f"with an image), top_logprobs={args.top_logprobs}, samples={args.samples}, "
          f"concurrency={args.concurrency}")
    text = np.array([i % 4 != 0 for i in range(len(requests))])  # score_requests: every fourth has an image
    print(f"{'method':<22}{'pearson r':>10}{'r (text)':>10}{'mean |d|':>10}{'label mass':>11}  {'read by':<34}"
          f"{'req/score':>10}{'tok/score':>10}{'ms/score':>10}")
    for method, (results, meter, seconds) in runs.items():
        values = np.array([r.expectation for r in results])
        r, r_text = pearson(base, values), pearson(base[text], values[text])
        read_by = Counter(x.method for x in results)  # completions cannot carry images: those are sampled
        print(f"{method:<22}{r:>10.3f}{r_text:>10.3f}{float(np.abs(values - base).mean()):>10.3f}"
              f"{statistics.mean(x.label_mass for x in results):>11.3f}  "
              f"{', '.join(f'{m} {n}' for m, n in sorted(read_by.items())):<34}"
              f"{meter.requests / len(results):>10.2f}{meter.tokens / len(results):>10.1f}"
              f"{seconds / len(results) * 1000:>10.1f}")


if __name__ == "__main__":
    main()
