"""JSON-lines files read one object a line, each bad line named by its file and line (``path:line``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def object_lines(path: Path, text: str, error: type[Exception]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, object) of every non-blank line of ``text`` (``path``'s); ``error`` for a line that is not a JSON
    object."""
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            found = json.loads(line)
        except json.JSONDecodeError as err:
            raise error(f"{where}: not valid JSON: {err.msg} (column {err.colno})") from None
        if not isinstance(found, dict):
            raise error(f"{where}: expected an object, got {type(found).__name__}")
        yield where, found
