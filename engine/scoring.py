"""Scoring drafts inside the SEIR loop: run the job's scorers on a stage's drafts, combine, and gate.

Scorers are plain operators that take the backends' batch methods as callables. Here those callables are bridges
into the event loop: a scorer runs in a worker thread, and each of its calls becomes one batched call through the
role's model client (cached and recorded like every other call), so the loop keeps other shards moving meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from seir.engine.calls import Ledger, ModelClient
from seir.engine.pools import CallFailure
from seir.engine.records import Draft, Score, Stage
from seir.engine.spec import JobSpec
from seir.operators.backends.base import Sampling
from seir.operators.scoring.base import Scorer, ScorerResult
from seir.operators.scoring.clip import ClipScorer
from seir.operators.scoring.combine import CombinedScores, combine, passes
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
class TurnScores:
    combined: dict[str, float]

    @classmethod
    def from_drafts(cls, kept: Sequence[Draft]) -> TurnScores:
        """A turn's scores: each dimension from the kept draft of the stage that judged it."""
        return cls({dimension: value for draft in kept for dimension, value in draft.combined().items()})


def decide_turn(combined: dict[str, float], thresholds: dict[str, float]) -> tuple[bool, list[str]]:
    """Acceptance, decided from stored scores alone, so new thresholds re-decide without regenerating."""
    return passes(CombinedScores(scores=combined), thresholds)


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

    async def judge(self, stage: Stage, items: Sequence[tuple[Any, Draft]], ledger: Ledger) -> None:
        """Score ``items`` (the working dialogue and its draft) on the stage's dimensions; fills each draft's scores,
        critique and gate verdict. A scorer that fails marks the drafts failed with the reason."""
        if not items:
            return
        dimensions = STAGE_DIMENSIONS[stage]
        weights = self.spec.scoring.weights
        names = sorted({s for d in dimensions for s in weights.get(d, {})})
        views = [_view(stage, working, draft) for working, draft in items]
        loop = asyncio.get_running_loop()
        runs = [asyncio.to_thread(self._scorer(name, loop, ledger).score_turns, views,
                                  *([list(dimensions)] if name == "judge" else [])) for name in names]
        try:
            results = dict(zip(names, await asyncio.gather(*runs), strict=True))
        except ScorerFailed as err:
            for _, draft in items:
                draft.ok, draft.reason = False, f"not judged: {err}"
            return
        for i, (_, draft) in enumerate(items):
            by_scorer: dict[str, ScorerResult] = {name: results[name][i] for name in names}
            combined = combine(by_scorer, self.spec.scoring)
            judged = by_scorer.get("judge")
            draft.critique = (judged.critique or "") if judged else ""
            draft.call_keys += [key for result in by_scorer.values() for key in result.call_keys if key]
            for dimension in dimensions:
                if dimension not in combined.scores:
                    continue
                draft.scores.append(Score(dimension, combined.scores[dimension], draft.critique, "combined", None,
                                          {"parts": combined.parts.get(dimension, {})}))
                for name, value in combined.parts.get(dimension, {}).items():
                    result = by_scorer[name]
                    draft.scores.append(Score(dimension, value, result.critique or "", name, self._model(name),
                                              {"raw": result.raw, "reasons": result.reasons}))
            gates = {d: self.spec.seir.gate_for(d) for d in dimensions}
            draft.passed = passes(combined, gates)[0]

    def _model(self, scorer: str) -> str | None:
        roles = SCORER_ROLES.get(scorer, ())
        return self.clients[roles[0]].model_id if roles else None

    def _scorer(self, name: str, loop: asyncio.AbstractEventLoop, ledger: Ledger) -> Scorer:
        def bridge(role: str, method: str) -> Callable[[list[Any]], list[Any]]:
            call = getattr(self.clients[role], method)

            def blocking(requests: list[Any]) -> list[Any]:
                results = asyncio.run_coroutine_threadsafe(call(requests, ledger), loop).result()
                failure = next((r for r in results if isinstance(r, CallFailure)), None)
                if failure is not None:
                    raise ScorerFailed(failure.reason)
                return results

            return blocking

        seir = self.spec.seir
        if name == "judge":
            sampling = self.spec.roles["judge"].sampling
            return JudgeScorer(bridge("judge", "chat"), bridge("judge", "score"),
                               sampling=Sampling(sampling.max_new_tokens, sampling.temperature, sampling.top_p))
        if name == "clip":
            embed = bridge("embed", "embed") if "embed" in self.clients else None
            return ClipScorer(bridge("clip", "similarity"), embed)
        if name == "text":
            return TextScorer(bridge("embed", "embed"), question_words=seir.question_words,
                              caption_words=seir.caption_words)
        return ImageQualityScorer(target_side=max(seir.image_width, seir.image_height))


def _view(stage: Stage, working: Any, draft: Draft) -> TurnView:
    if stage is Stage.QUESTION:
        return working.view(draft.text or "")
    question = working.kept[Stage.QUESTION].text or ""
    if stage is Stage.ANSWER:
        return working.view(question, draft.text, draft.caption)
    answer = working.kept[Stage.ANSWER].text or ""
    return working.view(question, answer, draft.text, working.images.get(draft.image_key or ""))
