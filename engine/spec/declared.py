"""A job checked against what its operators declare, before Ray starts or any model loads.

Scorers named in ``scoring.weights`` and methods in ``dedup.methods`` are looked up in the operator registry (a
built-in name or ``module:Class``); each declares the model roles it needs, with the backend capabilities it uses
on each (``Operator.roles``), the roles it can use (``optional_roles``) and the inputs it reads. A role it needs that
the job lacks, a backend without a capability it uses, a scorer weighted on a dimension it does not score, or an input
the engine does not give is a problem naming the key and the fix. ``load_job`` reports them with file and line.

Seeds that bring pictures need a writer that sees them: a ``vlm`` role, or an ``llm`` role whose backend offers
``vision``; and, unless ``seir.edit`` is ``never``, an ``image`` role whose backend offers ``edit``, since their
turns' pictures start from the user's. Whether they do is read from the seed files at load (a line naming images),
so a job that would send pictures to a text-only writer, or ask edits of a text-to-image role, is refused before Ray
starts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from seir.engine.spec.dedup import method_class
from seir.engine.spec.job import JobSpec, SeedSpec
from seir.operators.backends.base import Backend
from seir.operators.base import Operator
from seir.operators.registry import lookup
from seir.operators.scoring.base import TURN_INPUTS, Scorer
from seir.operators.scoring.pairwise import PairwiseJudge
from seir.operators.scoring.rubrics import DIMENSIONS
from seir.operators.stages import JUDGE, JUDGE_NEEDS, TEXT_WRITER, VISION_WRITER, Stage

Location = tuple[str | int, ...]  # a key path in the job spec
Problem = tuple[Location, str]  # where, and what is wrong and how to fix it
# Inputs the engine makes with a model role before a dedup method reads them.
INPUT_ROLES = {"dialogue.embedding": {"embed": ("embed",)}}


def loop_needs(stages: Sequence[type[Stage] | Stage]) -> dict[str, set[str]]:
    """What the loop itself calls on each role: what each stage declares of its writers, and the judge's critique."""
    needs: dict[str, set[str]] = {JUDGE: set(JUDGE_NEEDS)}
    for stage in stages:
        for role, capabilities in stage.roles.items():
            needs.setdefault(role, set()).update(capabilities)
    return needs


def role_needs(spec: JobSpec) -> dict[str, frozenset[str]]:
    """The backend capabilities the job uses on each of its roles: the loop's, its scorers' and its dedup methods'
    (what a model server is probed for before any work)."""
    loop = loop_needs(spec.seir.stage_units())
    if VISION_WRITER in spec.roles:  # it writes what the text writer would, for dialogues with pictures
        loop[VISION_WRITER] = {*loop.get(VISION_WRITER, set()), *loop.get(TEXT_WRITER, set())}
    needs: dict[str, set[str]] = {role: set(loop.get(role, ())) for role in spec.roles}
    users: list[type[Operator]] = [lookup("scorer", name) for name in spec.scoring.scorers()]
    users += [method_class(name) for name in spec.dedup.methods]
    if spec.seir.pairwise != "off":
        users.append(PairwiseJudge)
    for cls in users:
        uses = {**cls.optional_roles, **cls.roles, **INPUT_ROLES.get(cls.reads[0] if cls.reads else "", {})}
        for role, capabilities in uses.items():
            if role in needs:
                needs[role].update(capabilities)
    return {role: frozenset(used) for role, used in needs.items()}


def check_job(spec: JobSpec) -> list[Problem]:
    backends, problems = _backends(spec)
    return (problems + _stage_problems(spec, backends)
            + _scorer_problems(spec, backends) + _dedup_problems(spec, backends)
            + _vlm_problems(spec, backends) + _candidate_problems(spec, backends) + _placement_problems(spec, backends)
            + (_edit_problems(spec, backends, "seir.edit is always") if spec.seir.edit == "always" else []))


def _stage_problems(spec: JobSpec, backends: dict[str, type[Backend]]) -> list[Problem]:
    """The roles the job's stages and the judge need, the capabilities they use on them, and the dimensions each stage
    is judged on, each one a rubric defines (a dimension no scorer is weighted on goes unscored, as it always has)."""
    stages = spec.seir.stage_units()
    needs = loop_needs(stages)
    missing = [role for role in needs if role not in spec.roles]
    if missing:
        names = ", ".join(stage.name for stage in stages)
        return [(("roles",), f"missing model roles: {', '.join(missing)} (the stages {names} and the judge need "
                             f"{', '.join(needs)}): add them under roles")]
    problems: list[Problem] = []
    for position, stage in enumerate(stages):
        where: Location = ("seir", "stages", position)
        problems += _role_problems(spec, backends, f"stage {stage.name!r}", type(stage), stage.roles, where,
                                   f"remove {stage.name!r} from seir.stages")
        for dimension in stage.dimensions:
            if dimension not in DIMENSIONS:
                problems.append((where, f"stage {stage.name!r} is judged on {dimension!r}, which no rubric defines "
                                        f"(known: {', '.join(DIMENSIONS)})"))
    return problems


def _cannot_edit(backends: dict[str, type[Backend]]) -> bool:
    """Whether the job's image role renders from text only."""
    backend = backends.get("image")
    return backend is not None and "edit" not in backend.capabilities


def _edit_problems(spec: JobSpec, backends: dict[str, type[Backend]], why: str) -> list[Problem]:
    """Edits asked (``why``) of an image role whose backend cannot start from a picture."""
    if not _cannot_edit(backends):
        return []
    return [(("roles", "image", "backend"),
             f"{why}, so the image role must edit the user's pictures, but backend {spec.roles['image'].backend!r} "
             "renders from text only: serve it with an edit backend (diffusers-image-to-image, openai-image-edit), "
             "or set seir.edit: never to render every picture from its caption")]


def _placement_problems(spec: JobSpec, backends: dict[str, type[Backend]]) -> list[Problem]:
    """A role whose backend's options and GPUs disagree (tensor parallelism over more GPUs than the role asks)."""
    problems: list[Problem] = []
    for role, backend in backends.items():
        try:
            backend.placement(spec.roles[role].options, spec.roles[role].num_gpus)
        except TypeError as err:
            problems.append((("roles", role, "options"), str(err)))
        except ValueError as err:
            problems.append((("roles", role, "num_gpus"), str(err)))
    return problems


def _candidate_problems(spec: JobSpec, backends: dict[str, type[Backend]]) -> list[Problem]:
    """Best-of-N text candidates need a writer that samples (greedy decoding writes the same draft N times), and
    pairwise judging needs a judge that can be read over labels."""
    problems: list[Problem] = []
    text_stages = [stage.name for stage in spec.seir.stage_units()
                   if stage.writer == TEXT_WRITER and spec.seir.candidates_for(stage.name) > 1]
    for role in (TEXT_WRITER, VISION_WRITER):
        if text_stages and role in spec.roles and spec.roles[role].sampling.temperature == 0:
            stages = " and ".join(text_stages)
            problems.append((("roles", role, "sampling", "temperature"),
                             f"seir.candidates asks several {stages} drafts per round, but the {role} role decodes "
                             "greedily (temperature 0), so every candidate would be the same text: give it a "
                             "temperature above 0 (e.g. 0.8), or set seir.candidates to 1 for those stages"))
    if spec.seir.pairwise != "off":
        problems += _role_problems(spec, backends, "pairwise judging", PairwiseJudge, PairwiseJudge.roles,
                                   ("seir", "pairwise"), "set seir.pairwise to off")
    return problems


def _vlm_problems(spec: JobSpec, backends: dict[str, type[Backend]]) -> list[Problem]:
    backend = backends.get(VISION_WRITER)
    if backend is None or "vision" in backend.capabilities:
        return []
    return [(("roles", VISION_WRITER, "backend"),
             f"the {VISION_WRITER} role writes about the pictures seeds bring, but backend "
             f"{spec.roles[VISION_WRITER].backend!r} cannot see images: give it a vision backend (e.g. "
             "transformers-vision-chat)")]


def seed_picture_problems(spec: JobSpec) -> list[Problem]:
    """Problems when a seed file brings pictures (the spec's paths resolved): no writer can see them, or the job
    edits them (``seir.edit: auto``) with an image role that cannot."""
    backends, _ = _backends(spec)
    writer = None if VISION_WRITER in spec.roles else backends.get(TEXT_WRITER)
    blind = writer is not None and "vision" not in writer.capabilities
    cannot_edit = spec.seir.edit == "auto" and _cannot_edit(backends)
    if not blind and not cannot_edit:
        return []
    for index, file in enumerate(spec.seeds.files):
        line = first_line_with_images(spec.seeds, file)
        if line is None:
            continue
        problems = _edit_problems(spec, backends, f"{file}:{line} brings images and seir.edit is auto")
        if blind:
            problems.append((("seeds", "files", index),
                             f"{file}:{line} brings images, but the writer cannot see them: roles.llm's backend "
                             f"{spec.roles['llm'].backend!r} takes no image parts. Add a `{VISION_WRITER}` role "
                             "served by a vision backend (e.g. backend: transformers-vision-chat), or serve llm with "
                             "one"))
        return problems
    return []


def first_line_with_images(seeds: SeedSpec, path: Path) -> int | None:
    """The first line of a JSONL seed file that brings a picture: one of its ``images`` or ``turn_images`` is a file
    inside the folders seeds may read (found by the path alone, nothing opened). Lines that do not parse, and images
    that are missing or outside, are left to the seed loader, which quarantines them."""
    if not path.is_file():
        return None
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            if b"images" not in raw:
                continue
            try:
                row = json.loads(raw)
            except ValueError:
                continue
            if isinstance(row, dict) and any(_is_seed_image(seeds, path, ref) for ref in _image_refs(row)):
                return number
    return None


def _image_refs(row: dict[str, Any]) -> list[Any]:
    turns = row.get("turn_images")
    refs = list(row.get("images") or []) if isinstance(row.get("images"), list) else []
    if isinstance(turns, list):
        refs += [ref for entry in turns if isinstance(entry, list) for ref in entry]
    return refs


def _is_seed_image(seeds: SeedSpec, seed_file: Path, ref: Any) -> bool:
    if not isinstance(ref, str) or not ref:
        return False
    try:
        found = seeds.inside_roots((seeds.images_root or seed_file.parent) / ref, seed_file.parent)
    except (OSError, RuntimeError, ValueError):
        return False
    return found is not None and found.is_file()


def job_summary(spec: JobSpec) -> str:
    scorers = spec.scoring.scorers()
    return (f"{len(spec.roles)} roles, {len(scorers)} scorer{'s' * (len(scorers) != 1)} on "
            f"{len(spec.scoring.weights)} dimensions, {len(spec.dedup.methods)} dedup methods")


def _backends(spec: JobSpec) -> tuple[dict[str, type[Backend]], list[Problem]]:
    found, problems = {}, []
    for role, role_spec in spec.roles.items():
        try:
            found[role] = lookup("backend", role_spec.backend)
        except KeyError as err:
            problems.append((("roles", role, "backend"), err.args[0]))
    return found, problems  # type: ignore[return-value]


def _scorer_problems(spec: JobSpec, backends: dict[str, type[Backend]]) -> list[Problem]:
    problems: list[Problem] = []
    checked: set[str] = set()
    for dimension, by_scorer in spec.scoring.weights.items():
        for name in by_scorer:
            where: Location = ("scoring", "weights", dimension, name)
            try:
                cls = lookup("scorer", name)
            except KeyError as err:
                problems.append((where, f"{err.args[0]}; fix the name, or remove it from scoring.weights.{dimension}"))
                continue
            if not issubclass(cls, Scorer):
                problems.append((where, f"{name!r} is not a Scorer (seir.operators.scoring.base.Scorer)"))
                continue
            if dimension not in cls.informs:
                scores = ", ".join(cls.informs) or "nothing"
                problems.append((where, f"scorer {name!r} gives no {dimension} score (it scores {scores}): remove it "
                                        f"from scoring.weights.{dimension}"))
            if name in checked:
                continue
            checked.add(name)
            unknown = [i for i in cls.reads if i not in TURN_INPUTS]
            if unknown:
                problems.append((where, f"scorer {name!r} reads {', '.join(unknown)}, which scorers are not given "
                                        f"(they get {', '.join(TURN_INPUTS)})"))
            problems += _role_problems(spec, backends, f"scorer {name!r}", cls, cls.roles, where,
                                       f"remove {name!r} from scoring.weights")
    return problems


def _dedup_problems(spec: JobSpec, backends: dict[str, type[Backend]]) -> list[Problem]:
    problems: list[Problem] = []
    for position, name in enumerate(spec.dedup.methods):
        cls = method_class(name)  # DedupConfig has resolved every name
        needs = {**INPUT_ROLES.get(cls.reads[0], {}), **cls.roles}
        problems += _role_problems(spec, backends, f"dedup method {name!r}", cls, needs, ("dedup", "methods", position),
                                   f"remove {name!r} from dedup.methods")
    return problems


def _role_problems(spec: JobSpec, backends: dict[str, type[Backend]], who: str, cls: type[Operator],
                   needs: Mapping[str, tuple[str, ...]], where: Location, otherwise: str) -> list[Problem]:
    """Roles ``who`` needs that the job lacks, and capabilities it uses that a role's backend does not offer."""
    problems: list[Problem] = []
    optional = {role: uses for role, uses in cls.optional_roles.items() if role in spec.roles}
    for role, uses in {**optional, **needs}.items():
        if role not in spec.roles:
            article = "an" if role[0] in "aeiou" else "a"
            problems.append((where, f"{who} needs the {role} role: add {article} `{role}` role under roles, "
                                    f"or {otherwise}"))
            continue
        backend = backends.get(role)
        missing = [c for c in uses if backend is not None and c not in backend.capabilities]
        if missing:
            offers = ", ".join(sorted(backend.capabilities)) or "nothing"  # type: ignore[union-attr]
            problems.append((("roles", role, "backend"),
                             f"{who} uses {', '.join(missing)} on the {role} role, which backend "
                             f"{spec.roles[role].backend!r} does not offer (it offers {offers}): give the role a "
                             f"backend that does, or {otherwise}"))
    return problems
