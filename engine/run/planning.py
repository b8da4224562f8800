"""Planning a run before any model loads: which dialogues exist already, which must be made, and why.

Every dialogue's key is the key of its seed and of everything that determines how it is generated, so a dialogue
committed by any earlier run (or an interrupted one) with the same key is reused, never recomputed. Work whose key
changed is redone, and the call cache answers every model call whose own key did not change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from seir.engine.keys import content_key
from seir.engine.records import Seed
from seir.engine.run.scoring import scorer_roles
from seir.engine.spec import JobSpec
from seir.engine.store import Committed
from seir.operators.backends.base import fingerprint_model
from seir.operators.backends.tiny import resolve_model_ref
from seir.operators.scoring import rubrics
from seir.operators.seir import prompts


@dataclass(frozen=True)
class DialogueTask:
    seed: Seed
    dialogue_id: str
    dialogue_key: str
    turns: int


@dataclass
class Plan:
    generation_key: str
    scoring_key: str
    tasks: list[DialogueTask]  # every current seed's dialogue
    pending: list[DialogueTask]  # those not committed yet

    def keys(self) -> list[str]:
        return [t.dialogue_key for t in self.tasks]


@dataclass
class Changes:
    """What a refresh will do, for the plan it prints."""

    reused: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    changed_seeds: list[str] = field(default_factory=list)
    regenerated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    config_changes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        lines = [
            f"reuse {len(self.reused)} committed dialogues",
            f"make {len(self.new)} dialogues for new seeds",
            f"remake {len(self.changed_seeds)} dialogues whose seed changed",
            f"remake {len(self.regenerated)} dialogues whose generation config or models changed",
            f"drop {len(self.removed)} dialogues whose seed is gone (they stay in provenance)",
        ]
        if self.config_changes:
            lines.append("changes since the last run (calls whose own key is unchanged come from the cache):")
            lines += [f"  {change}" for change in self.config_changes]
        for name in ("new", "changed_seeds", "regenerated", "removed"):
            ids = getattr(self, name)
            if ids:
                shown = ", ".join(ids[:8]) + (f", ... ({len(ids) - 8} more)" if len(ids) > 8 else "")
                lines.append(f"  {name.replace('_', ' ')}: {shown}")
        return "\n".join(lines)


def prompt_fingerprint() -> str:
    """Prompts are keyed by what they render, not by their source: an edit that renders the same prompts changes
    no dialogue key, a changed instruction changes every one (and the call keys of exactly the calls that use it)."""
    return content_key([prompts.prompt_fingerprint(), rubrics.prompt_fingerprint(list(rubrics.DIMENSIONS.values()))])


def model_revisions(spec: JobSpec) -> dict[str, str]:
    """Each role's pinned revision, or the fingerprint of its files (building tiny models on first use), as the
    backends themselves compute it: known before any actor starts, so planning needs no Ray."""
    return {role: r.revision or fingerprint_model(resolve_model_ref(r.model)) for role, r in spec.roles.items()}


def scoring_key(spec: JobSpec, revisions: Mapping[str, str]) -> str:
    """Everything that determines a turn's scores (not its acceptance): a rescore with the same key is free."""
    return content_key({
        "weights": spec.scoring.weights,
        "roles": {r: [spec.roles[r].output_config(), revisions[r]] for r in scorer_roles(spec)},
        "rubrics": rubrics.prompt_fingerprint(list(rubrics.DIMENSIONS.values())),
    })


def plan_dialogues(spec: JobSpec, seeds: list[Seed], revisions: Mapping[str, str], committed: set[str]) -> Plan:
    generation_key = content_key([spec.generation_key(prompt_fingerprint()), dict(sorted(revisions.items()))])
    # A seed without its own turns runs the job's, or as many as its turn_images need to show every picture.
    tasks = [
        DialogueTask(seed, seed.seed_id, content_key([seed.seed_key, generation_key]),
                     seed.turns or max(spec.seir.turns, len(seed.turn_images)))
        for seed in seeds
    ]
    pending = [t for t in tasks if t.dialogue_key not in committed]
    return Plan(generation_key, scoring_key(spec, revisions), tasks, pending)


def pack_shards(run_id: str, tasks: list[DialogueTask], shard_size: int) -> list[tuple[str, list[str]]]:
    """Consecutive dialogues in seed order; a shard's id names its run and members, so replanning is stable."""
    shards = []
    for start in range(0, len(tasks), shard_size):
        keys = [t.dialogue_key for t in tasks[start : start + shard_size]]
        shards.append((content_key([run_id, keys]), keys))
    return shards


def changes(plan: Plan, committed: Mapping[str, Committed], latest_ids: Iterable[str],
            previous_spec: dict[str, Any] | None, spec: JobSpec) -> Changes:
    """Sort every current seed's dialogue into reused / new / changed seed / regenerated, and list what left."""
    seen_ids = {c.dialogue_id for c in committed.values()}
    seen_seeds = {c.seed_key for c in committed.values()}
    result = Changes()
    for task in plan.tasks:
        if task.dialogue_key in committed:
            result.reused.append(task.dialogue_id)
        elif task.seed.seed_key in seen_seeds:
            result.regenerated.append(task.dialogue_id)
        elif task.dialogue_id in seen_ids:
            result.changed_seeds.append(task.dialogue_id)
        else:
            result.new.append(task.dialogue_id)
    current = {t.dialogue_id for t in plan.tasks}
    result.removed = sorted(set(latest_ids) - current)
    if previous_spec is not None:
        result.config_changes = _differences(previous_spec, spec.model_dump(mode="json"))
    return result


_GENERATION_SECTIONS = ("roles", "seir", "scoring", "execution")


def _differences(before: Any, after: Any, path: str = "") -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key in sorted(set(before) | set(after)):
            if not path and key not in _GENERATION_SECTIONS:
                continue
            found += _differences(before.get(key), after.get(key), f"{path}.{key}" if path else key)
        return found
    return [] if before == after else [f"{path}: {before!r} -> {after!r}"]
