"""What every operator declares, and ``register``, which lets a YAML job name one (``registry.lookup`` finds it).

Operators are plain Python: they know neither Ray nor DuckDB. The engine reads ``roles`` and ``optional_roles`` to
check a job before any model loads (and to start only the model pools the job's operators use), ``reads`` to give an
operator its inputs and check that the engine has them, and ``config()`` to build the content keys of the work the
operator does.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any, ClassVar, TypeVar

# Metadata of a record field added after records were first keyed: ``seir.engine.keys`` leaves it out at its
# default, so every record that does not use it keeps the key it had.
LATER_FIELD = "seir_later_field"


def later_field(default: Any) -> Any:
    """A dataclass field, with ``default``, added after records of its class were first keyed."""
    return field(default=default, metadata={LATER_FIELD: True})


class Operator:
    """Base of every pluggable unit: backends, scorers, dedup methods and the loop's stages."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""  # registry namespace: "backend", "scorer", "dedup", "stage"
    # The model roles it cannot work without, each with the backend capabilities it uses on that role ("chat",
    # "score", "embed", "similarity", "render"; "vision" for chat requests that carry images, "edit" for renders that
    # start from a source picture).
    roles: ClassVar[dict[str, tuple[str, ...]]] = {}
    optional_roles: ClassVar[dict[str, tuple[str, ...]]] = {}  # used when the job has them
    reads: ClassVar[tuple[str, ...]] = ()  # the inputs it is given (each kind's engine names the ones it has)

    def config(self) -> dict[str, Any]:
        """Everything about this instance that changes its outputs (part of every content key it produces)."""
        return {"operator": self.name}


REGISTRY: dict[tuple[str, str], type[Operator]] = {}  # (kind, name) -> operator; read by registry.lookup
OperatorT = TypeVar("OperatorT", bound=type[Operator])


def register(cls: OperatorT) -> OperatorT:
    """Class decorator: make ``cls`` nameable from a job spec as ``cls.name`` within ``cls.kind``."""
    if not cls.name or not cls.kind:
        raise TypeError(f"{cls.__qualname__} needs both a name and a kind to be registered")
    key = (cls.kind, cls.name)
    existing = REGISTRY.get(key)
    if existing is not None and existing is not cls:
        raise ValueError(f"{cls.kind} {cls.name!r} is registered twice: {existing.__qualname__} and {cls.__qualname__}")
    REGISTRY[key] = cls
    return cls
