"""Scoring drafts inside the SEIR loop: run the job's scorers on a stage's drafts, combine, and gate.

Scorers are plain operators that take the backends' batch methods as callables. Here those callables are bridges
into the event loop: a scorer runs in a worker thread, and each of its calls becomes one batched call through the
role's model client (cached and recorded like every other call), so the loop keeps other shards moving meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from seir.engine.calls import Ledger, ModelClient
from seir.engine.pools import CallFailure
from seir.engine.records import Draft, Score, Stage
from seir.engine.spec import JobSpec
from seir.operators.backends.base import Sampling
from seir.operators.scoring.base import Scorer, ScorerResult
from seir.operators.scoring.clip import ClipScorer
from seir.operators.scoring.combine import combine, passes
from seir.operators.scoring.image_quality import ImageQualityScorer
from seir.operators.scoring.judge import JudgeScorer
from seir.operators.scoring.rubrics import TurnView
from seir.operators.scoring.text import TextScorer

STAGE_DIMENSIONS: dict[Stage, tuple[str, ...]] = {
    Stage.QUESTION: ("question",),
    Stage.ANSWER: ("text_content",),
    Stage.IMAGE: ("image_content", "image_quality", "image_text_synergy"),
}
# Which role each scorer calls, so a job that weights a scorer without its role gets a clear error at start.
SCORER_ROLES: dict[str, tuple[str, ...]] = {"judge": ("judge",), "clip": ("clip",), "text": ("embed",),
                                            "image-quality": ()}


class ScorerFailed(RuntimeError):
    pass


@dataclass
class Verdict:
    """What the scorers made of one draft."""

    scores: list[Score] = field(default_factory=list)  # combined and per-scorer, per dimension
    critique: str = ""
    combined: dict[str, float] = field(default_factory=dict)
    passed: bool = False  # every dimension reached its gate
    call_keys: list[str] = field(default_factory=list)
    failure: str = ""  # why it could not be judged

    def apply(self, draft: Draft) -> None:
        draft.scores, draft.critique, draft.passed = self.scores, self.critique, self.passed
        draft.call_keys += self.call_keys
        if self.failure:
            draft.ok, draft.reason = False, self.failure


def blocking_call(client: ModelClient, method: str, loop: asyncio.AbstractEventLoop,
                  ledger: Ledger) -> Callable[[list[Any]], list[Any]]:
    """A plain batch function for a scorer running in a worker thread: each call runs on the event loop through
    the model client (cached and recorded), and any failed request raises ``ScorerFailed``."""
    call = getattr(client, method)

    def blocking(requests: list[Any]) -> list[Any]:
        results = asyncio.run_coroutine_threadsafe(call(requests, ledger), loop).result()
        failure = next((r for r in results if isinstance(r, CallFailure)), None)
        if failure is not None:
            raise ScorerFailed(failure.reason)
        return results

    return blocking


def judge_sampling(spec: JobSpec) -> Sampling:
    sampling = spec.roles["judge"].sampling
    return Sampling(sampling.max_new_tokens, sampling.temperature, sampling.top_p)


class StageScorer:
    def __init__(self, spec: JobSpec, clients: dict[str, ModelClient]) -> None:
        self.spec = spec
        self.clients = clients
        for scorer in spec.scoring.scorers():
            if scorer not in SCORER_ROLES:
                raise ValueError(f"scoring.weights names unknown scorer {scorer!r}; known: {', '.join(SCORER_ROLES)}")
            missing = [role for role in SCORER_ROLES[scorer] if role not in clients]
            if missing:
                raise ValueError(f"scorer {scorer!r} needs the {', '.join(missing)} role: add it under roles")

    async def verdicts(self, stage: Stage, views: Sequence[TurnView], ledger: Ledger) -> list[Verdict]:
        """Every scorer weighted for the stage's dimensions on every view, combined and gated, one verdict each.
        A scorer call that fails fails the whole batch's verdicts with its reason."""
        if not views:
            return []
        dimensions = STAGE_DIMENSIONS[stage]
        weights = self.spec.scoring.weights
        names = sorted({s for d in dimensions for s in weights.get(d, {})})
        loop = asyncio.get_running_loop()
        runs = [asyncio.to_thread(self._scorer(name, loop, ledger).score_turns, list(views),
                                  *([list(dimensions)] if name == "judge" else [])) for name in names]
        try:
            results = dict(zip(names, await asyncio.gather(*runs), strict=True))
        except ScorerFailed as err:
            return [Verdict(failure=f"not judged: {err}") for _ in views]
        gates = {d: self.spec.seir.gate_for(d) for d in dimensions}
        return [self._verdict({name: results[name][i] for name in names}, dimensions, gates)
                for i in range(len(views))]

    def _verdict(self, by_scorer: dict[str, ScorerResult], dimensions: Sequence[str],
                 gates: dict[str, float]) -> Verdict:
        combined = combine(by_scorer, self.spec.scoring)
        judged = by_scorer.get("judge")
        verdict = Verdict(critique=(judged.critique or "") if judged else "",
                          combined={d: combined.scores[d] for d in dimensions if d in combined.scores},
                          passed=passes(combined, gates)[0],
                          call_keys=[key for result in by_scorer.values() for key in result.call_keys if key])
        for dimension, value in verdict.combined.items():
            parts = combined.parts.get(dimension, {})
            verdict.scores.append(Score(dimension, value, verdict.critique, "combined", None, {"parts": parts}))
            for name, part in parts.items():
                result = by_scorer[name]
                verdict.scores.append(Score(dimension, part, result.critique or "", name, self._model(name),
                                            {"raw": result.raw, "reasons": result.reasons}))
        return verdict

    def _model(self, scorer: str) -> str | None:
        roles = SCORER_ROLES.get(scorer, ())
        return self.clients[roles[0]].model_id if roles else None

    def _scorer(self, name: str, loop: asyncio.AbstractEventLoop, ledger: Ledger) -> Scorer:
        def bridge(role: str, method: str) -> Callable[[list[Any]], list[Any]]:
            return blocking_call(self.clients[role], method, loop, ledger)

        seir = self.spec.seir
        if name == "judge":
            return JudgeScorer(bridge("judge", "chat"), bridge("judge", "score"), sampling=judge_sampling(self.spec))
        if name == "clip":
            embed = bridge("embed", "embed") if "embed" in self.clients else None
            return ClipScorer(bridge("clip", "similarity"), embed)
        if name == "text":
            return TextScorer(bridge("embed", "embed"), question_words=seir.question_words,
                              caption_words=seir.caption_words)
        return ImageQualityScorer(target_side=max(seir.image_width, seir.image_height))

