"""engine/ and operators/ install as seir.engine and seir.operators through an explicit package list."""

from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]


def test_every_python_package_folder_is_listed_in_pyproject():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"seir"}
    for top, name in (("engine", "seir.engine"), ("operators", "seir.operators")):
        for init in (REPO / top).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO / top).parts
            found.add(".".join((name, *relative)))
    assert found == listed
