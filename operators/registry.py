"""Finding an operator a job names: a built-in by its registered name, or any importable one as
``"package.module:ClassName"`` (a plugin).

Importing this module imports the built-in operator packages, whose ``@register`` decorators fill the registry;
heavy libraries load lazily inside the operators, so this stays cheap.
"""

from __future__ import annotations

import importlib

from seir.operators import backends, dedup, scoring, stages  # noqa: F401  (imported for their @register decorators)
from seir.operators.base import REGISTRY, Operator

_NOUNS = {"dedup": "dedup method"}  # what a kind's operators are called in messages


def lookup(kind: str, name: str) -> type[Operator]:
    """A registered operator by name, or any importable one as ``"package.module:ClassName"`` (a plugin)."""
    if ":" in name:
        return _import_operator(kind, name)
    try:
        return REGISTRY[(kind, name)]
    except KeyError:
        known = ", ".join(sorted(n for k, n in REGISTRY if k == kind)) or "none"
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
