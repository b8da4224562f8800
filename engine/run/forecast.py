"""What a refresh will cost before it runs: per role, how many calls will be computed and how many come from the
cache, from the committed drafts of the dialogues it remakes.

A remade dialogue replays its loop through the call cache. Its earlier drafts are walked in loop order (turn,
stage, round): a draft's calls are answered by the cache for certain when nothing they depend on changed, namely
the roles the stage declares it writes with, the job settings its constructor reads, its scorers (their roles and
the settings they read), the earlier rounds of the stage, and every earlier stage that later ones read (a stage that
declares ``read_later = False``, like the image, does not enter later requests). Once a stage may take
another path, the rest of it is bounded by its rounds times the most calls one of its drafts made anywhere in the
output: "at most". A stage that may fail may also end the dialogue, so the cached calls after it are an upper bound.
A round makes ``seir.candidates`` drafts of its stage (and, judged pairwise, N(N-1) comparisons), so the bound
counts N of them per round.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from seir.engine.records import PriorDraft
from seir.engine.run.planning import Changes
from seir.engine.run.scoring import SCORER_SETTINGS, scorer_classes
from seir.engine.spec import JobSpec, RoleSpec
from seir.operators.stages import TEXT_WRITER, VISION_WRITER, Stage


@dataclass
class RoleForecast:
    """Calls in unchanged parts come from the cache (all of them when every part before them is reached for sure);
    calls in parts that may take another path are at most ``computed_max``, computed or, where their inputs happen
    to repeat, from the cache."""

    computed_max: int = 0
    cached_min: int = 0
    cached_max: int = 0

    def describe(self) -> str:
        computed = "0 computed" if self.computed_max == 0 else f"at most {self.computed_max} computed"
        cached = (f"{self.cached_min} from the cache" if self.cached_min == self.cached_max
                  else f"{self.cached_min} to {self.cached_max} from the cache")
        return f"{computed}, {cached}"


@dataclass
class Forecast:
    roles: dict[str, RoleForecast] = field(default_factory=dict)
    unchanged_stages: list[str] = field(default_factory=list)  # no role computes a call in these, for certain
    known: bool = True  # False: no earlier drafts to estimate new work from

    def describe(self) -> str:
        if not self.known:
            return "calls: no earlier drafts in this output to estimate from"
        lines = ["calls per role (certain unless 'at most'):"]
        lines += [f"  {role}: {forecast.describe()}" for role, forecast in sorted(self.roles.items())]
        if self.unchanged_stages:
            stages = ", ".join(self.unchanged_stages)
            lines.append(f"  {stages} stages: every call from the cache")
        return "\n".join(lines)


def _writer_roles(stage: Stage) -> set[str]:
    """The roles a stage writes with; the vision writer stands in for the text writer on dialogues with pictures."""
    roles = set(stage.roles)
    return roles | {VISION_WRITER} if TEXT_WRITER in roles else roles


def changed_parts(previous: Mapping[str, Any] | None, spec: JobSpec) -> tuple[set[str], set[str], bool]:
    """(stages whose writer changed, stages whose scorers changed, whether anything else changed that can move
    every stage) between the previous run's spec and this one."""
    if previous is None:
        return set(), set(), True
    now = spec.model_dump(mode="json")
    old_roles, new_roles = previous.get("roles", {}), now["roles"]
    changed_roles = {r for r in set(old_roles) | set(new_roles)
                     if {k: (old_roles.get(r) or {}).get(k) for k in RoleSpec.OUTPUT_FIELDS}
                     != {k: (new_roles.get(r) or {}).get(k) for k in RoleSpec.OUTPUT_FIELDS}}
    old_seir, new_seir = previous.get("seir", {}), now["seir"]
    seir_changed = {k for k in set(old_seir) | set(new_seir) if old_seir.get(k) != new_seir.get(k)}
    # the seir settings scorers are made with, and which of them changed
    scorer_fields = {f for fields in SCORER_SETTINGS.values() for f in fields}
    scorer_changed = {setting for setting, fields in SCORER_SETTINGS.items() if seir_changed & set(fields)}
    classes = scorer_classes(spec.scoring)
    writers: set[str] = set()
    scorers: set[str] = set()
    stages = spec.seir.stage_units()
    for stage in stages:
        if changed_roles & _writer_roles(stage) or seir_changed & set(stage.settings()):
            writers.add(stage.name)
        for dimension in stage.dimensions:
            for name in spec.scoring.weights.get(dimension, {}):
                cls = classes[name]
                reads = set(inspect.signature(cls).parameters)
                if changed_roles & {*cls.roles, *cls.optional_roles} or scorer_changed & reads:
                    scorers.add(stage.name)
    settings = {name for stage in stages for name in stage.settings()}
    elsewhere = (seir_changed - settings - scorer_fields
                 or previous.get("scoring", {}).get("weights") != now["scoring"]["weights"]
                 or previous.get("execution", {}).get("seed") != now["execution"]["seed"])
    return writers, scorers, bool(elsewhere)


def forecast(remade: Iterable[tuple[int, Sequence[PriorDraft]]], per_draft: Mapping[tuple[str, str], int],
             changes: Changes, previous: Mapping[str, Any] | None, spec: JobSpec) -> Forecast:
    """``remade``: each dialogue to make, as its number of turns and every draft of its seed's latest committed
    dialogue; ``per_draft``: the most calls one draft of a stage made, per role, over the planned seeds' latest
    dialogues (empty when none has any)."""
    result = Forecast()
    if not per_draft:
        result.known = not changes.remakes()
        return result
    rounds = spec.seir.rounds + 1
    writers, scorers, everything = changed_parts(previous, spec)
    stages = spec.seir.stage_units()
    order = {stage.name: i for i, stage in enumerate(stages)}
    unclean_stages: set[str] = set()
    writes_with = {stage.name: _writer_roles(stage) for stage in stages}  # a draft's calls to these are its writing

    def role(name: str) -> RoleForecast:
        return result.roles.setdefault(name, RoleForecast())

    def bound(stage: str, n_rounds: int) -> None:
        """A round writes N candidates, each making at most a draft's calls, and (judged pairwise) N(N-1)
        comparisons."""
        candidates = spec.seir.candidates_for(stage)
        for (s, name), n in per_draft.items():
            if s == stage:
                role(name).computed_max += n * n_rounds * candidates
        if spec.seir.pairwise != "off":
            role("judge").computed_max += candidates * (candidates - 1) * n_rounds

    for turns, priors in remade:
        drafts = sorted((d for d in priors if d.stage in order),
                        key=lambda d: (d.turn_index, order[d.stage], d.round, d.candidate))
        certain, text_clean = True, not everything
        for turn in range(turns):
            for unit in stages:
                stage = unit.name
                stage_drafts = [d for d in drafts if d.turn_index == turn and d.stage == stage]
                clean_rounds, clean = 0, text_clean and bool(stage_drafts)
                for _, candidates in itertools.groupby(stage_drafts, key=lambda d: d.round):
                    for draft in candidates:
                        for name, n in draft.calls.items():
                            writer_clean = clean and stage not in writers
                            if writer_clean and (name in writes_with[stage] or stage not in scorers):
                                role(name).cached_max += n
                                role(name).cached_min += n if certain else 0
                    clean = clean and stage not in writers and stage not in scorers
                    clean_rounds += clean
                    if not clean:
                        break
                if not clean:
                    bound(stage, rounds - clean_rounds)
                    unclean_stages.add(stage)
                    certain = False
                    text_clean = text_clean and not unit.read_later
    result.unchanged_stages = [stage.name for stage in stages if stage.name not in unclean_stages]
    return result
