"""Content-addressed image storage: ``images/ab/abcdef....png`` under the output folder.

Writes are atomic (temp file, then rename) and idempotent, so a resumed shard rewriting an image is harmless.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from seir.engine.errors import writing
from seir.engine.keys import bytes_key
from seir.engine.store.files import write_whole


def as_png(data: bytes) -> bytes:
    """PNG bytes as they are; any other format PIL reads is re-encoded, so one picture has one key."""
    if data.startswith(b"\x89PNG"):
        return data
    buffer = io.BytesIO()
    with Image.open(io.BytesIO(data)) as image:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def relative_path(self, key: str) -> str:
        return f"images/{key[:2]}/{key}.png"

    def path(self, key: str) -> Path:
        return self.root / self.relative_path(key)

    def put(self, data: bytes) -> str:
        """Store encoded image bytes; returns the key of their PNG encoding."""
        data = as_png(data)
        key = bytes_key(data)
        target = self.path(key)
        if not target.exists():
            with writing(self.root, f"image {self.relative_path(key)}"):
                target.parent.mkdir(parents=True, exist_ok=True)
                write_whole(target, data)
        return key

    def get(self, key: str) -> bytes:
        return self.path(key).read_bytes()
