"""The job spec's sections as typed, frozen models: what a job may say, its defaults and its keys.

``load_job`` (spec/load.py) reads one from YAML and checks it; an unknown key or a wrong type is an error there,
naming the file, the line and the key path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from seir.engine.errors import SeirError
from seir.engine.keys import content_key
from seir.engine.spec.dedup import DedupConfig, default_methods
from seir.operators.limits import WordLimits
from seir.operators.registry import lookup
from seir.operators.scoring.combine import ScoringConfig
from seir.operators.stages import BUILT_IN, Stage

MAX_TURNS = 32  # MMDU's dialogues run to 27 turns; a job's turns and a seed line's alike
MAX_CANDIDATES = 16  # drafts per round of a stage; pairwise judging asks N(N-1) comparisons of them


class JobSpecError(SeirError, ValueError):
    """A job spec that cannot be used; the message names the file, line and key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SamplingSpec(_Strict):
    max_new_tokens: int = Field(128, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)


class RoleSpec(_Strict):
    """One model role: which backend serves it, which model, and how its actor pool is sized and placed."""

    backend: str
    model: str  # hub id, local folder, "tiny:<name>" (built offline on first use) or "bundled:all-MiniLM-L6-v2"
    revision: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)  # keyword arguments of the backend
    sampling: SamplingSpec = SamplingSpec()
    replicas: int = Field(1, ge=1)
    batch_size: int = Field(16, ge=1)  # most requests in one call to one actor
    max_concurrency: int = Field(1, ge=1)  # batches one actor runs at once (async servers want more than 1)
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    memory_gb: float | None = Field(None, gt=0)
    resources: dict[str, float] = Field(default_factory=dict)  # custom Ray resources, e.g. {"image_node": 0.1}
    label_selector: dict[str, str] = Field(default_factory=dict)  # Ray node labels the actors must land on
    timeout_s: float = Field(600.0, gt=0)
    max_retries: int = Field(3, ge=0)
    # Tokens the model reads at most: wins over what the model's config or the server says. Requests are fitted to
    # it; the fitted request is keyed, so it is no output field of its own.
    context_length: int | None = Field(None, ge=16)

    @field_validator("num_gpus")
    @classmethod
    def _whole_gpus_above_one(cls, value: float) -> float:
        if value > 1 and not value.is_integer():
            raise ValueError(f"num_gpus above 1 must be a whole number (Ray packs fractions only within one GPU), "
                             f"got {value}")
        return value

    OUTPUT_FIELDS: ClassVar[frozenset[str]] = frozenset({"backend", "model", "revision", "options", "sampling"})

    def output_config(self) -> dict[str, Any]:
        """What changes this role's outputs (pool sizing and placement do not)."""
        return self.model_dump(include=set(self.OUTPUT_FIELDS))


class SeedSpec(_Strict):
    """InterSyn-style topics put into question templates, and/or JSONL seed files."""

    topics: list[str] = Field(default_factory=list)
    topics_file: Path | None = None  # JSON list of strings, or one topic per line
    templates: list[str] = Field(default_factory=list)
    templates_file: Path | None = None
    slot: str = "***"  # where the topic goes in a template
    templates_per_topic: int = Field(1, ge=1)
    limit: int | None = Field(None, ge=1)  # first N topics only
    files: list[Path] = Field(default_factory=list)  # JSONL: one seed per line
    # Reads stay inside declared folders: the files above and seed images must resolve, `..` and symlinks followed,
    # inside the job's folder, one of these, or (for an image) its seed file's folder; else nothing is opened.
    images_root: Path | None = None  # where seed lines' relative image paths start (default: the seed file's folder)
    roots: list[Path] = Field(default_factory=list)  # more folders seeds and their images may be read from
    _job_folder: Path | None = PrivateAttr(None)  # set by load_job
    # A seed whose words (punctuation aside) reach this Jaccard similarity with an earlier seed's is dropped before
    # any model call; null keeps every seed. On InterSyn's 10,503 topic x template seeds 0.9 drops 1 (0.8: 105).
    near_duplicates: float | None = Field(0.9, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _has_some_seeds(self) -> SeedSpec:
        has_topics = bool(self.topics or self.topics_file)
        has_templates = bool(self.templates or self.templates_file)
        if has_topics != has_templates:
            raise ValueError("topics and templates come together: give both (lists or files) or neither")
        if not has_topics and not self.files:
            raise ValueError("no seeds: give topics and templates, or seed files")
        return self

    def read_roots(self, *more: Path) -> list[Path]:
        """The folders reads may reach: the job's, images_root, roots and ``more``, each with symlinks resolved."""
        return [root.resolve() for root in (self._job_folder, self.images_root, *self.roots, *more) if root]

    def inside_roots(self, path: Path, *more: Path) -> Path | None:
        """``path`` with every `..` and symlink resolved when that lies inside a read root, else None; opens nothing."""
        resolved = path.resolve()
        return resolved if any(resolved.is_relative_to(root) for root in self.read_roots(*more)) else None


class SeirSpec(_Strict):
    """The loop: InterSyn's SEIR with a numeric gate."""

    turns: int = Field(3, ge=1, le=MAX_TURNS)
    rounds: int = Field(3, ge=0, le=10)  # refinement rounds per stage after the first draft (InterSyn: 3)
    # The stages of every turn, in order: the built-in ones by name, a stage of one's own as "module:Class"
    # (seir.operators.stages.Stage; docs/stages.md).
    stages: tuple[str, ...] = BUILT_IN
    question_words: int = Field(WordLimits.question, ge=1)
    caption_words: int = Field(WordLimits.caption, ge=1)
    # Stop refining a stage once every dimension it is judged on reaches its gate. Generation depends on the gate,
    # so it is part of every dialogue's key; acceptance thresholds (scoring.thresholds) are not.
    gate: dict[str, float] = Field(default_factory=dict)  # per dimension; dimensions not named use gate_default
    gate_default: float = Field(4.0, ge=0)

    image_width: int = Field(512, ge=8)
    image_height: int = Field(512, ge=8)
    image_steps: int = Field(30, ge=1)
    # Unset: the image model's family's own (its pipeline's default: 7.5 for Stable Diffusion, 3.5 for FLUX.1 [dev]),
    # read from its checkpoint when a run starts (engine/run/planning.py, with_family_sampling).
    guidance_scale: float | None = Field(None, ge=0)
    # Edits of the user's pictures, in turns where the user shows some: "auto" starts the render from the picture
    # the writer's caption names (the first shown when it names none), unless it asks for a new picture; "always"
    # starts from a picture even then; "never" renders from the caption alone. Seeds without pictures never edit.
    edit: Literal["auto", "always", "never"] = "auto"
    edit_strength: float = Field(0.6, gt=0, le=1)  # how far an edit may move from its source (1: only layout kept)

    # Best-of-N: drafts sampled per round of a stage, one number for every stage or per stage ({answer: 4}). All
    # are judged in the same batches; the best is critiqued and refined.
    candidates: int | dict[str, int] = Field(1)
    # Pairwise judging of a round's candidates, asked in both orders: "record" stores the comparisons beside the
    # scores, "rank" also keeps the candidate that wins most of them (ties broken by mean score).
    pairwise: Literal["off", "record", "rank"] = "off"

    @field_validator("stages", mode="before")
    @classmethod
    def _stages_found(cls, value: Any) -> Any:
        """Every stage named is a built-in one or an importable ``module:Class``, each once."""
        names = [value] if isinstance(value, str) else list(value or [])
        if not names:
            raise ValueError(f"stages: name at least one stage (the built-in ones: {', '.join(BUILT_IN)})")
        for name in names:
            try:
                lookup("stage", str(name))
            except KeyError as err:
                raise ValueError(f"stages: {err.args[0]}") from None
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"stages: {', '.join(repeated)} named more than once")
        return tuple(names)

    @field_validator("candidates", mode="before")
    @classmethod
    def _candidate_counts(cls, value: Any, info: ValidationInfo) -> Any:
        """One message for every way to get it wrong, rather than one per member of the union; a stage named must
        be one of the job's (``stages`` is checked first: fields are validated in order)."""
        counts = value if isinstance(value, dict) else {"every stage": value}
        for stage, count in counts.items():
            if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_CANDIDATES:
                raise ValueError(f"candidates: give 1 to {MAX_CANDIDATES} drafts per round ({stage}: {count!r})")
        if isinstance(value, dict) and "stages" in info.data:
            names = [lookup("stage", name).name for name in info.data["stages"]]
            unknown = [stage for stage in value if stage not in names]
            if unknown:
                raise ValueError(f"unknown stage {unknown[0]!r}; name some of {', '.join(names)}, or give one "
                                 "number for every stage")
        return value

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Settings added after the first jobs were made are left out at their defaults, so out of every key: a
        job that does not use them keeps every key and output it had."""
        dumped = handler(self)
        if all(self.candidates_for(stage) == 1 for stage in self.stage_names()):
            dumped.pop("candidates", None)
        if self.stages == BUILT_IN:
            dumped.pop("stages")
        for name in ("pairwise", "edit", "edit_strength"):
            if dumped.get(name) == type(self).model_fields[name].default:
                dumped.pop(name)
        return dumped

    def gate_for(self, dimension: str) -> float:
        return self.gate.get(dimension, self.gate_default)

    def candidates_for(self, stage: str) -> int:
        return self.candidates if isinstance(self.candidates, int) else self.candidates.get(stage, 1)

    def stage_names(self) -> tuple[str, ...]:
        """Each stage's own name (a plugin's ``Class.name``), in order."""
        return tuple(lookup("stage", name).name for name in self.stages)

    def stage_units(self) -> list[Stage]:
        """The job's stages, in order, each made with the settings of this section its constructor names."""
        return [make_stage(lookup("stage", name), self) for name in self.stages]  # type: ignore[arg-type]


def make_stage(cls: type[Stage], seir: SeirSpec) -> Stage:
    """A stage made with the ``seir`` settings its constructor names; a parameter that names none keeps its
    default."""
    found = {name: getattr(seir, name) for name in cls.settings() if name in type(seir).model_fields}
    try:
        return cls(**found)
    except TypeError as err:
        raise SeirError(f"stage {cls.name!r} ({cls.__module__}:{cls.__qualname__}) cannot be made from the job's seir "
                        f"settings: {err}. Its constructor may name settings of seir "
                        f"({', '.join(type(seir).model_fields)}); give others a default") from None


class BudgetSpec(_Strict):
    """Caps on what one command spends on computed model calls; reached, the run stops at a shard boundary."""

    calls: int | None = Field(None, ge=1)
    tokens: int | None = Field(None, ge=1)
    gpu_hours: float | None = Field(None, gt=0)


class ExecutionSpec(_Strict):
    shard_size: int = Field(8, ge=1)  # dialogues advanced together; one shard is committed in one transaction
    shards_in_flight: int = Field(2, ge=1)  # bounds memory; more keeps more pools busy
    seed: int = 0  # global random seed, part of every sampling seed
    cache: Path | None = None  # a call cache shared with other outputs (relative to the spec); --cache overrides
    budget: BudgetSpec = BudgetSpec()  # --max-calls, --max-tokens, --max-gpu-hours override
    # Take seeds in order, shard by shard, until this many dialogues are accepted after dedup; --target-accepted
    # overrides. A later run with a larger target goes on from there.
    target_accepted: int | None = Field(None, ge=1)
    # Snapshots of the provenance store kept in OUT/snapshots/, one taken whenever a version is written (0: none).
    snapshots: int = Field(1, ge=0)


class JobSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    seeds: SeedSpec
    roles: dict[str, RoleSpec]
    seir: SeirSpec = SeirSpec()
    scoring: ScoringConfig = ScoringConfig()
    dedup: DedupConfig = DedupConfig()
    execution: ExecutionSpec = ExecutionSpec()

    @model_validator(mode="before")
    @classmethod
    def _default_dedup_methods(cls, data: Any) -> Any:
        """Dedup methods a job does not list default to the built-in ones its roles allow (semantic needs embed)."""
        if isinstance(data, dict) and isinstance(data.get("roles"), dict):
            dedup = data.get("dedup", {})
            if isinstance(dedup, dict) and "methods" not in dedup:
                return {**data, "dedup": {**dedup, "methods": default_methods(data["roles"])}}
        return data

    def generation_key(self, prompt_fingerprint: str) -> str:
        """The key of everything that determines how a dialogue is generated (not how it is accepted)."""
        return content_key(
            {
                "roles": {name: role.output_config() for name, role in sorted(self.roles.items())},
                "seir": self.seir.model_dump(mode="json"),
                "weights": self.scoring.model_dump(mode="json", exclude={"thresholds", "human", "human_weight"}),
                "seed": self.execution.seed,
                "prompts": prompt_fingerprint,
            }
        )

    def key(self) -> str:
        return content_key(self.model_dump(mode="json"))
