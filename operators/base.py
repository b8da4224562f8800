"""What every operator declares, and the registry that lets a YAML job name one.

Operators are plain Python: they know neither Ray nor DuckDB. The engine reads ``roles`` and ``optional_roles`` to
check a job before any model loads (and to start only the model pools the job's operators use), ``reads`` to give an
operator its inputs and check that the engine has them, and ``config()`` to build the content keys of the work the
operator does.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar, TypeVar


class Operator:
    """Base of every pluggable unit: backends, scorers, dedup methods."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""  # registry namespace: "backend", "scorer", "dedup"
    # The model roles it cannot work without, each with the backend capabilities it uses on that role ("chat",
    # "score", "embed", "similarity", "render"; "vision" for chat requests that carry images).
    roles: ClassVar[dict[str, tuple[str, ...]]] = {}
    optional_roles: ClassVar[dict[str, tuple[str, ...]]] = {}  # used when the job has them
    reads: ClassVar[tuple[str, ...]] = ()  # the inputs it is given (each kind's engine names the ones it has)

    def config(self) -> dict[str, Any]:
        """Everything about this instance that changes its outputs (part of every content key it produces)."""
        return {"operator": self.name}


_REGISTRY: dict[tuple[str, str], type[Operator]] = {}
_NOUNS = {"dedup": "dedup method"}  # what a kind's operators are called in messages
OperatorT = TypeVar("OperatorT", bound=type[Operator])


def register(cls: OperatorT) -> OperatorT:
    """Class decorator: make ``cls`` nameable from a job spec as ``cls.name`` within ``cls.kind``."""
    if not cls.name or not cls.kind:
        raise TypeError(f"{cls.__qualname__} needs both a name and a kind to be registered")
    key = (cls.kind, cls.name)
    existing = _REGISTRY.get(key)
    if existing is not None and existing is not cls:
        raise ValueError(f"{cls.kind} {cls.name!r} is registered twice: {existing.__qualname__} and {cls.__qualname__}")
    _REGISTRY[key] = cls
    return cls


def lookup(kind: str, name: str) -> type[Operator]:
    """A registered operator by name, or any importable one as ``"package.module:ClassName"`` (a plugin)."""
    if ":" in name:
        return _import_operator(kind, name)
    _import_builtin_operators()
    try:
        return _REGISTRY[(kind, name)]
    except KeyError:
        known = ", ".join(sorted(n for k, n in _REGISTRY if k == kind)) or "none"
        noun = _NOUNS.get(kind, kind)
        raise KeyError(f"unknown {noun} {name!r}; known {noun}s: {known}, or give 'module:Class'") from None


def _import_operator(kind: str, reference: str) -> type[Operator]:
    module_name, _, attribute = reference.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise KeyError(f"cannot import {kind} {reference!r}: {err}") from None
    if not (isinstance(found, type) and issubclass(found, Operator) and found.kind == kind):
        raise KeyError(f"{reference!r} is not a {kind} operator (a subclass of Operator with kind {kind!r})")
    return found


def _import_builtin_operators() -> None:
    # Importing the packages runs their @register decorators; heavy libraries load lazily inside the operators.
    from seir.operators import backends, dedup, scoring  # noqa: F401
