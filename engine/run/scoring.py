"""Scoring drafts inside the SEIR loop: run the job's scorers on a stage's drafts, combine, and gate.

Scorers are plain operators, found through the registry, that take the backends' batch methods they declare (in
``roles``) as callables. Here those callables are bridges into the event loop: a scorer runs in a worker thread, and
each of its calls becomes one batched call through the role's model client (cached and recorded like every other
call), so the loop keeps other shards moving meanwhile.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from seir.engine.records import Draft, Ledger, Score
from seir.engine.run.clients import ModelClient
from seir.engine.spec import JobSpec
from seir.operators.backends.base import METHODS, CallFailure, Sampling
from seir.operators.limits import WordLimits
from seir.operators.registry import lookup
from seir.operators.scoring.base import Scorer, ScorerResult
from seir.operators.scoring.combine import ScoringConfig, combine, passes
from seir.operators.scoring.pairwise import PairwiseJudge, Reading
from seir.operators.scoring.rubrics import DIMENSIONS, TurnView, View
from seir.operators.stages import Stage


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


def role_sampling(spec: JobSpec, role: str) -> Sampling:
    sampling = spec.roles[role].sampling
    return Sampling(sampling.max_new_tokens, sampling.temperature, sampling.top_p)


def judge_sampling(spec: JobSpec) -> Sampling:
    return role_sampling(spec, "judge")


# The job settings a scorer's constructor may name (Scorer documents them), and the seir settings each is made of.
SCORER_SETTINGS: dict[str, tuple[str, ...]] = {"question_words": ("question_words",),
                                               "caption_words": ("caption_words",),
                                               "target_side": ("image_width", "image_height")}


def scorer_settings(spec: JobSpec) -> dict[str, Any]:
    seir = spec.seir
    return {"question_words": seir.question_words, "caption_words": seir.caption_words,
            "target_side": max(seir.image_width, seir.image_height)}


def scorer_classes(scoring: ScoringConfig) -> dict[str, type[Scorer]]:
    """The scorers ``scoring.weights`` names (built-in names or ``module:Class``), by the name the weights use."""
    return {name: lookup("scorer", name) for name in scoring.scorers()}  # type: ignore[misc]


def scorer_roles(spec: JobSpec) -> list[str]:
    """The model roles the job's scorers call: those they need, and those they can use that the job has."""
    roles = {role for cls in scorer_classes(spec.scoring).values()
             for role in [*cls.roles, *(r for r in cls.optional_roles if r in spec.roles)]}
    return sorted(roles)


class StageScorer:
    def __init__(self, spec: JobSpec, clients: dict[str, ModelClient]) -> None:
        self.spec = spec
        self.clients = clients
        self.classes = scorer_classes(spec.scoring)
        for name, cls in self.classes.items():  # load_job has checked the spec; this checks the clients given
            missing = [role for role in cls.roles if role not in clients]
            if missing:
                raise ValueError(f"scorer {name!r} needs the {', '.join(missing)} role: add it under roles")

    def dialogue_dimensions(self) -> tuple[str, ...]:
        """The dialogue-level dimensions the job weights (InterMT's five), judged once a dialogue's last turn is
        made."""
        return tuple(d for d in self.spec.scoring.weights if DIMENSIONS[d].per_dialogue)

    async def verdicts(self, stage: Stage, views: Sequence[View], ledger: Ledger) -> list[Verdict]:
        """Every scorer weighted for the stage's dimensions on every view, combined and gated, one verdict each.
        A scorer call that fails fails the whole batch's verdicts with its reason."""
        return await self.verdicts_on(stage.dimensions, views, ledger)

    async def verdicts_on(self, dimensions: Sequence[str], views: Sequence[View], ledger: Ledger) -> list[Verdict]:
        if not views:
            return []
        weights = self.spec.scoring.weights
        names = sorted({s for d in dimensions for s in weights.get(d, {})})
        loop = asyncio.get_running_loop()
        runs = [asyncio.to_thread(self._scorer(name, dimensions, loop, ledger).score_turns, list(views))
                for name in names]
        try:
            results = dict(zip(names, await asyncio.gather(*runs), strict=True))
        except ScorerFailed as err:
            return [Verdict(failure=f"not judged: {err}") for _ in views]
        gates = {d: self.spec.seir.gate_for(d) for d in dimensions}
        return [self._verdict({name: results[name][i] for name in names}, dimensions, gates)
                for i in range(len(views))]

    async def compare(self, stage: Stage, pairs: Sequence[tuple[TurnView, TurnView]],
                      ledger: Ledger) -> list[tuple[Reading, Reading]] | None:
        """Each pair of candidates compared by the judge in both orders, in one batch; None when a comparison call
        failed (the failure is in the ledger; the round is then ranked by its scores alone)."""
        if not pairs:
            return []
        loop = asyncio.get_running_loop()
        seir = self.spec.seir
        judge = PairwiseJudge(**self._bridged(PairwiseJudge.roles, loop, ledger), dimensions=stage.dimensions,
                              limits=WordLimits(seir.question_words, seir.caption_words))
        try:
            return await asyncio.to_thread(judge.compare, list(pairs), stage.writes)
        except ScorerFailed:
            return None

    def _verdict(self, by_scorer: dict[str, ScorerResult], dimensions: Sequence[str],
                 gates: dict[str, float]) -> Verdict:
        failure = next((result.failure for result in by_scorer.values() if result.failure), "")
        if failure:
            return Verdict(failure=f"not judged: {failure}")
        combined = combine(by_scorer, self.spec.scoring)
        verdict = Verdict(critique=next((r.critique for r in by_scorer.values() if r.critique), ""),  # the judge's
                          combined={d: combined.scores[d] for d in dimensions if d in combined.scores},
                          passed=passes(combined, gates)[0],
                          call_keys=[key for result in by_scorer.values() for key in result.call_keys if key])
        for dimension, value in verdict.combined.items():
            parts = combined.parts.get(dimension, {})
            verdict.scores.append(Score(dimension, value, "combined", None, {"parts": parts}))
            for name, part in parts.items():
                result = by_scorer[name]
                verdict.scores.append(Score(dimension, part, name, self._model(name),
                                            {"raw": result.raw, "reasons": result.reasons},
                                            result.methods.get(dimension)))
        return verdict

    def _model(self, scorer: str) -> str | None:
        roles = list(self.classes[scorer].roles)
        return self.clients[roles[0]].model_id if roles else None

    def _bridged(self, roles: dict[str, tuple[str, ...]], loop: asyncio.AbstractEventLoop,
                 ledger: Ledger) -> dict[str, Callable[[list[Any]], list[Any]]]:
        """The backend methods an operator declares on ``roles``, as batch callables named after the method."""
        return {method: blocking_call(self.clients[role], method, loop, ledger)
                for role, capabilities in roles.items() for method in capabilities if method in METHODS}

    def _scorer(self, name: str, dimensions: Sequence[str], loop: asyncio.AbstractEventLoop,
                ledger: Ledger) -> Scorer:
        """The scorer built as ``Scorer`` documents: its declared backend methods as bridged batch callables, and
        the job settings its constructor names."""
        cls = self.classes[name]
        used = {**cls.roles, **{r: c for r, c in cls.optional_roles.items() if r in self.clients}}
        calls = self._bridged(used, loop, ledger)
        settings: dict[str, Any] = {"dimensions": list(dimensions), **scorer_settings(self.spec)}
        if cls.roles:
            first = next(iter(cls.roles))
            settings["sampling"] = role_sampling(self.spec, first)
            settings["window"] = self.clients[first].window
        accepted = inspect.signature(cls).parameters
        return cls(**calls, **{key: value for key, value in settings.items() if key in accepted})
