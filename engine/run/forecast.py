"""What a refresh will cost before it runs: per role, how many calls will be computed and how many come from the
cache, from the committed drafts of the dialogues it remakes.

A remade dialogue replays its loop through the call cache. Its earlier drafts are walked in loop order (turn,
stage, round): a draft's calls are answered by the cache for certain when nothing they depend on changed, namely
the stage's writer (``llm`` for text, ``image`` for pictures) and its scorers, the earlier rounds of the stage and
the question and answer stages of earlier turns (a turn's image does not enter the next turn). Once a stage may take
another path, the rest of it is bounded by its rounds times the most calls one of its drafts made anywhere in the
output: "at most". A stage that may fail may also end the dialogue, so the cached calls after it are an upper bound.
A round makes ``seir.candidates`` drafts of its stage (and, judged pairwise, N(N-1) comparisons), so the bound
counts N of them per round.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from seir.engine.records import STAGE_DIMENSIONS, PriorDraft, Stage
from seir.engine.run.planning import Changes
from seir.engine.spec import JobSpec, RoleSpec
from seir.operators.registry import lookup

WRITERS = {"llm", "vlm", "image"}  # roles that write drafts; the others score them
# Read by renders only (whether and how much a render edits the user's picture too: the caption asks which picture
# to start from whatever seir.edit says).
_RENDER_SETTINGS = frozenset({"image_width", "image_height", "image_steps", "guidance_scale", "edit", "edit_strength"})
_STAGE_OF = {dimension: stage for stage, dims in STAGE_DIMENSIONS.items() for dimension in dims}


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
    unchanged_stages: set[Stage] = field(default_factory=set)  # no role computes a call in these, for certain
    known: bool = True  # False: no earlier drafts to estimate new work from

    def describe(self) -> str:
        if not self.known:
            return "calls: no earlier drafts in this output to estimate from"
        lines = ["calls per role (certain unless 'at most'):"]
        lines += [f"  {role}: {forecast.describe()}" for role, forecast in sorted(self.roles.items())]
        if self.unchanged_stages:
            stages = ", ".join(s.value for s in Stage if s in self.unchanged_stages)
            lines.append(f"  {stages} stages: every call from the cache")
        return "\n".join(lines)


def changed_parts(previous: Mapping[str, Any] | None, spec: JobSpec) -> tuple[set[Stage], set[Stage], bool]:
    """(stages whose writer changed, stages whose scorers changed, whether anything else changed that can move
    every stage) between the previous run's spec and this one."""
    if previous is None:
        return set(), set(), True
    now = spec.model_dump(mode="json")
    writers: set[Stage] = set()
    scorers: set[Stage] = set()
    old_roles, new_roles = previous.get("roles", {}), now["roles"]
    changed_roles = {r for r in set(old_roles) | set(new_roles)
                     if {k: (old_roles.get(r) or {}).get(k) for k in RoleSpec.OUTPUT_FIELDS}
                     != {k: (new_roles.get(r) or {}).get(k) for k in RoleSpec.OUTPUT_FIELDS}}
    if changed_roles & {"llm", "vlm"}:  # vlm writes the dialogues whose seeds bring pictures
        writers |= set(Stage)
    if "image" in changed_roles:
        writers.add(Stage.IMAGE)
    weights = spec.scoring.weights
    for dimension, stage in _STAGE_OF.items():
        for scorer in weights.get(dimension, {}):
            cls = lookup("scorer", scorer)
            if changed_roles & {*cls.roles, *cls.optional_roles}:  # the roles it declares it calls
                scorers.add(stage)
    old_seir, new_seir = previous.get("seir", {}), now["seir"]
    seir_changed = {k for k in set(old_seir) | set(new_seir) if old_seir.get(k) != new_seir.get(k)}
    if seir_changed & _RENDER_SETTINGS:
        writers.add(Stage.IMAGE)
    if "question_words" in seir_changed:
        writers.add(Stage.QUESTION)
        scorers.add(Stage.ANSWER)  # the text scorer checks lengths
    if "caption_words" in seir_changed:
        writers |= {Stage.ANSWER, Stage.IMAGE}
        scorers.add(Stage.ANSWER)
    elsewhere = (seir_changed - _RENDER_SETTINGS - {"question_words", "caption_words"}
                 or previous.get("scoring", {}).get("weights") != now["scoring"]["weights"]
                 or previous.get("execution", {}).get("seed") != now["execution"]["seed"])
    return writers, scorers, bool(elsewhere)


def forecast(remade: Iterable[tuple[int, Sequence[PriorDraft]]], per_draft: Mapping[tuple[Stage, str], int],
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
    order = {stage: i for i, stage in enumerate(Stage)}
    unclean_stages: set[Stage] = set()

    def role(name: str) -> RoleForecast:
        return result.roles.setdefault(name, RoleForecast())

    def bound(stage: Stage, n_rounds: int) -> None:
        """A round writes N candidates, each making at most a draft's calls, and (judged pairwise) N(N-1)
        comparisons."""
        candidates = spec.seir.candidates_for(stage)
        for (s, name), n in per_draft.items():
            if s is stage:
                role(name).computed_max += n * n_rounds * candidates
        if spec.seir.pairwise != "off":
            role("judge").computed_max += candidates * (candidates - 1) * n_rounds

    for turns, priors in remade:
        drafts = sorted(priors, key=lambda d: (d.turn_index, order[d.stage], d.round, d.candidate))
        certain, text_clean = True, not everything
        for turn in range(turns):
            for stage in Stage:
                stage_drafts = [d for d in drafts if d.turn_index == turn and d.stage is stage]
                clean_rounds, clean = 0, text_clean and bool(stage_drafts)
                for _, candidates in itertools.groupby(stage_drafts, key=lambda d: d.round):
                    for draft in candidates:
                        for name, n in draft.calls.items():
                            writer_clean = clean and stage not in writers
                            if writer_clean and (name in WRITERS or stage not in scorers):
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
                    text_clean = text_clean and stage is Stage.IMAGE
    result.unchanged_stages = set(Stage) - unclean_stages
    return result
