"""engine/ and operators/ install as seir.engine and seir.operators through an explicit package list; constraints.txt
pins what pyproject.toml asks for."""

from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]


def test_every_python_package_folder_is_listed_in_pyproject():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"seir"}
    for top, name in (("engine", "seir.engine"), ("operators", "seir.operators")):
        for init in (REPO / top).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO / top).parts
            found.add(".".join((name, *relative)))
    assert found == listed


def test_constraints_pin_every_requirement_within_its_bounds_and_leave_torch_out():
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = Version(version)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for text in project["dependencies"] + project["optional-dependencies"]["dev"]:
        wanted = Requirement(text)
        name = canonicalize_name(wanted.name)
        if name == "torch":
            continue  # installed first, as the Makefile's TORCH names it
        assert name in pins, f"{name} is not in constraints.txt: run `make lock`"
        assert wanted.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} breaks {text!r}"
    cuda = [name for name in pins if name in {"torch", "triton"} or name.startswith(("nvidia-", "cuda-"))]
    assert not cuda, f"constraints.txt pins torch or CUDA wheels: {cuda}"
