"""A job checked against what its operators declare, before Ray starts or any model loads.

Scorers named in ``scoring.weights`` and methods in ``dedup.methods`` are looked up in the operator registry (a
built-in name or ``module:Class``); each declares the model roles it needs, with the backend capabilities it uses
on each (``Operator.roles``), the roles it can use (``optional_roles``) and the inputs it reads. A role it needs that
the job lacks, a backend without a capability it uses, a scorer weighted on a dimension it does not score, or an input
the engine does not give is a problem naming the key and the fix. ``load_job`` reports them with file and line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from seir.engine.dedup import method_class
from seir.operators.backends.base import Backend
from seir.operators.base import Operator, lookup
from seir.operators.scoring.base import TURN_INPUTS, Scorer

if TYPE_CHECKING:
    from seir.engine.spec import JobSpec

Location = tuple[str | int, ...]  # a key path in the job spec
Problem = tuple[Location, str]  # where, and what is wrong and how to fix it
# Inputs the engine makes with a model role before a dedup method reads them.
INPUT_ROLES = {"dialogue.embedding": {"embed": ("embed",)}}


# What the SEIR loop itself calls on each role: it writes with the llm, critiques with the judge, renders with image.
LOOP_NEEDS: dict[str, tuple[str, ...]] = {"llm": ("chat",), "judge": ("chat",), "image": ("render",)}


def role_needs(spec: JobSpec) -> dict[str, frozenset[str]]:
    """The backend capabilities the job uses on each of its roles: the loop's, its scorers' and its dedup methods'
    (what a model server is probed for before any work)."""
    needs: dict[str, set[str]] = {role: set(LOOP_NEEDS.get(role, ())) for role in spec.roles}
    users: list[type[Operator]] = [lookup("scorer", name) for name in spec.scoring.scorers()]
    users += [method_class(name) for name in spec.dedup.methods]
    for cls in users:
        uses = {**cls.optional_roles, **cls.roles, **INPUT_ROLES.get(cls.reads[0] if cls.reads else "", {})}
        for role, capabilities in uses.items():
            if role in needs:
                needs[role].update(capabilities)
    return {role: frozenset(used) for role, used in needs.items()}


def check_job(spec: JobSpec) -> list[Problem]:
    backends, problems = _backends(spec)
    return problems + _scorer_problems(spec, backends) + _dedup_problems(spec, backends)


def summary(spec: JobSpec) -> str:
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
