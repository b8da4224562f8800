"""Reading a job spec: YAML validated on load, then checked against what its operators declare.

An unknown key, a wrong type or a declared need the job does not meet is an error naming the file, the line and the
key path. Relative paths in the spec are relative to the YAML file's folder, and seed files must lie inside the
folders the job may read.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from seir.engine.spec.declared import check_job, seed_picture_problems
from seir.engine.spec.job import JobSpec, JobSpecError


def load_job(path: str | Path) -> JobSpec:
    path = Path(path)
    _importable_beside(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise JobSpecError(f"{path}: job spec not found") from None
    except UnicodeDecodeError as err:
        raise JobSpecError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise JobSpecError(f"{path}{where}: not valid YAML: {getattr(err, 'problem', err)}") from None
    if not isinstance(data, dict):
        raise JobSpecError(f"{path}: a job spec is a mapping (name, seeds, roles, ...), got {type(data).__name__}")
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as err:
        raise JobSpecError("\n".join(_describe(path, node, error) for error in err.errors())) from None
    problems = check_job(spec)
    if problems:
        raise JobSpecError("\n".join(_located(path, node, list(loc), message) for loc, message in problems))
    spec = _resolve_paths(spec, path.parent)
    _refuse_reads_outside_roots(spec, path, node)
    problems = seed_picture_problems(spec)
    if problems:
        raise JobSpecError("\n".join(_located(path, node, list(loc), message) for loc, message in problems))
    return spec


def _describe(path: Path, root: yaml.Node | None, error: dict[str, Any]) -> str:
    loc = [part for part in error["loc"] if not isinstance(part, str) or not part.startswith("function-")]
    return _located(path, root, loc, "unknown key" if error["type"] == "extra_forbidden" else error["msg"])


def _located(path: Path, root: yaml.Node | None, loc: list[Any], message: str) -> str:
    dotted = ".".join(str(part) for part in loc) or "(top level)"
    line = _line_of(root, loc)
    where = f"{path}:{line}" if line else str(path)
    return f"{where}: {dotted}: {message}"


def _line_of(node: yaml.Node | None, loc: list[Any]) -> int | None:
    """The 1-based line of the deepest YAML node on ``loc`` that exists."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            child = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if child is None:
                break
            line, node = child[0].start_mark.line + 1, child[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _resolve_paths(spec: JobSpec, base: Path) -> JobSpec:
    def resolve(p: Path | None) -> Path | None:
        return None if p is None else (p if p.is_absolute() else (base / p).resolve())

    seeds = spec.seeds.model_copy(
        update={
            "topics_file": resolve(spec.seeds.topics_file),
            "templates_file": resolve(spec.seeds.templates_file),
            "files": [resolve(f) for f in spec.seeds.files],
            "images_root": resolve(spec.seeds.images_root),
            "roots": [resolve(r) for r in spec.seeds.roots],
        }
    )
    seeds._job_folder = base.resolve()
    execution = spec.execution.model_copy(update={"cache": resolve(spec.execution.cache)})
    return spec.model_copy(update={"seeds": seeds, "execution": execution})


def _refuse_reads_outside_roots(spec: JobSpec, path: Path, node: yaml.Node | None) -> None:
    seeds = spec.seeds
    named = [(["seeds", "topics_file"], seeds.topics_file), (["seeds", "templates_file"], seeds.templates_file),
             *((["seeds", "files", i], file) for i, file in enumerate(seeds.files))]
    roots = ", ".join(map(str, seeds.read_roots()))
    problems = [_located(path, node, loc, f"{file} resolves to {file.resolve()}, outside the folders this job may "
                                          f"read ({roots}); add its folder to seeds.roots")
                for loc, file in named if file is not None and seeds.inside_roots(file) is None]
    if problems:
        raise JobSpecError("\n".join(problems))


def _importable_beside(path: Path) -> None:
    """Operators a job names as ``module:Class`` (a stage of one's own, a scorer) are imported from the job file's
    folder first, where such a module ships with its job."""
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
