"""Planning a run before any model loads: which dialogues exist already, which must be made, and why.

Every dialogue's key is the key of its seed and of everything that determines how it is generated, so a dialogue
committed by any earlier run (or an interrupted one) with the same key is reused, never recomputed. Work whose key
changed is redone, and the call cache answers every model call whose own key did not change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from seir.engine.keys import content_key
from seir.engine.run.scoring import scorer_roles
from seir.engine.spec import JobSpec, stage_prompts
from seir.engine.store import ProvenanceStore
from seir.operators.backends.base import Backend, fingerprint_model
from seir.operators.backends.tiny import resolve_model_ref
from seir.operators.limits import WordLimits
from seir.operators.registry import lookup
from seir.operators.scoring import rubrics
from seir.operators.stages import BUILT_IN, prompts
from seir.operators.stages.image import ImageStage

PLAN_ROWS = 65536  # seeds keyed per step while planning


@dataclass(frozen=True)
class Plan:
    """A run's plan; its dialogues are in the store's temp table ``plan_dialogues``, in seed order."""

    generation_key: str
    scoring_key: str
    dialogues: int  # every current seed's dialogue
    pending: int  # those not committed yet


_KINDS = {  # what a refresh does with each kind of planned dialogue (store.plan_changes), in the order it says them
    "reused": "reuse {} committed dialogues",
    "new": "make {} dialogues for new seeds",
    "changed_seeds": "remake {} dialogues whose seed changed",
    "regenerated": "remake {} dialogues whose generation config or models changed",
    "removed": "drop {} dialogues whose seed is gone (they stay in provenance)",
}


@dataclass
class Changes:
    """What a refresh will do, for the plan it prints: per kind, how many dialogues and the first few ids."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    config_changes: list[str] = field(default_factory=list)

    def count(self, kind: str) -> int:
        return self.counts.get(kind, 0)

    def remakes(self) -> bool:
        return any(self.count(kind) for kind in ("new", "changed_seeds", "regenerated"))

    def describe(self) -> str:
        lines = [text.format(self.count(kind)) for kind, text in _KINDS.items()]
        if self.config_changes:
            lines.append("changes since the last run (calls whose own key is unchanged come from the cache):")
            lines += [f"  {change}" for change in self.config_changes]
        for kind in ("new", "changed_seeds", "regenerated", "removed"):
            ids, n = self.examples.get(kind, []), self.count(kind)
            if n:
                shown = ", ".join(ids) + (f", ... ({n - len(ids)} more)" if n > len(ids) else "")
                lines.append(f"  {kind.replace('_', ' ')}: {shown}")
        return "\n".join(lines)


def prompt_fingerprint(spec: JobSpec) -> str:
    """Prompts are keyed by what they render, not by their source: an edit that renders the same prompts changes
    no dialogue key, a changed instruction changes every one (and the call keys of exactly the calls that use it).
    The comparison prompt counts only for jobs that judge pairwise, a stage of one's own's prompts only for jobs that
    run it."""
    limits = word_limits(spec)
    parts = [prompts.prompt_fingerprint(), rubrics.prompt_fingerprint(list(rubrics.DIMENSIONS.values()), limits)]
    if spec.seir.pairwise != "off":
        parts.append(rubrics.comparison_fingerprint(limits))
    own = [name for name in spec.seir.stage_names() if name not in BUILT_IN]
    if own:  # stages of one's own: what their prompts render (a job of the built-in stages keeps its keys)
        parts.append(content_key(stage_prompts(spec, own)))
    return content_key(parts)


def word_limits(spec: JobSpec) -> WordLimits:
    """The job's word limits, which its rubrics state (so they are part of what its prompts render)."""
    return WordLimits(spec.seir.question_words, spec.seir.caption_words)


def model_revisions(spec: JobSpec) -> dict[str, str]:
    """Each role's pinned revision, or the fingerprint of its files (building tiny models on first use), as the
    backends themselves compute it: known before any actor starts, so planning needs no Ray."""
    return {role: r.revision or fingerprint_model(resolve_model_ref(r.model)) for role, r in spec.roles.items()}


def with_family_sampling(spec: JobSpec) -> JobSpec:
    """The job with the sampling settings it leaves unset read from its image model's family (FLUX.1 guides at 3.5,
    Stable Diffusion at 7.5): they then key its dialogues as settings the job made. A checkpoint not readable here
    keeps them unset, which its backend reads the same way when the model loads."""
    role = spec.roles.get(ImageStage.writer)
    if role is None or spec.seir.guidance_scale is not None:
        return spec
    backend: type[Backend] = lookup("backend", role.backend)  # type: ignore[assignment]
    try:
        family = backend.family_sampling(role.model, role.revision)
    except OSError:
        return spec
    return spec.model_copy(update={"seir": spec.seir.model_copy(update={
        "guidance_scale": family.get("guidance_scale")})})


def scoring_key(spec: JobSpec, revisions: Mapping[str, str]) -> str:
    """Everything that determines a turn's scores (not its acceptance): a rescore with the same key is free."""
    return content_key({
        "weights": spec.scoring.weights,
        "roles": {r: [spec.roles[r].output_config(), revisions[r]] for r in scorer_roles(spec)},
        "rubrics": rubrics.prompt_fingerprint(list(rubrics.DIMENSIONS.values()), word_limits(spec)),
    })


def run_keys(spec: JobSpec, revisions: Mapping[str, str]) -> Plan:
    """A plan of no dialogues: the keys a run records (a rescore's, a dedup's, a judge evaluation's)."""
    generation_key = content_key([spec.generation_key(prompt_fingerprint(spec)), dict(sorted(revisions.items()))])
    return Plan(generation_key, scoring_key(spec, revisions), 0, 0)


def plan_dialogues(store: ProvenanceStore, spec: JobSpec, revisions: Mapping[str, str]) -> Plan:
    """The dialogue of every seed in ``planned_seeds`` (left by seed planning), keyed, into ``plan_dialogues``."""
    generation_key = run_keys(spec, revisions).generation_key
    with store.held():
        store.start_plan()
        for page in store.planned_seed_pages(PLAN_ROWS):
            seed_keys = page.column("seed_key").to_pylist()
            # A seed without its own turns runs the job's, or as many as its turn_images need to show every picture.
            store.add_to_plan(pa.table({
                "n": page.column("n"), "seed_key": page.column("seed_key"), "dialogue_id": page.column("seed_id"),
                "dialogue_key": [content_key([key, generation_key]) for key in seed_keys],
                "turns": pa.array([turns or max(spec.seir.turns, shown) for turns, shown in
                                   zip(page.column("turns").to_pylist(), page.column("shown").to_pylist(),
                                       strict=True)], pa.int32()),
            }))
        dialogues, pending = store.plan_counts()
    return dataclasses.replace(run_keys(spec, revisions), dialogues=dialogues, pending=pending)


def changes(store: ProvenanceStore, spec: JobSpec) -> Changes:
    """Sort every planned dialogue into reused / new / changed seed / regenerated, and count what left."""
    found = store.plan_changes()
    result = Changes({kind: n for kind, (n, _) in found.items()}, {kind: ids for kind, (_, ids) in found.items()})
    previous = store.previous_job_spec()
    if previous is not None:
        result.config_changes = _differences(previous, spec.model_dump(mode="json"))
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
