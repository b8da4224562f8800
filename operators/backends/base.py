"""The contract between the engine and a model backend.

A backend serves one model role (``llm``, ``judge``, ``image``, ``embed``, ``clip``) and takes whole batches: the
engine groups the requests of many dialogues into one call so an accelerator never waits on one sample. Requests
and results are plain dataclasses so they travel through Ray's object store unchanged.

Messages follow the chat-template convention: ``{"role": ..., "content": str | [part, ...]}`` where a part is
``{"type": "text", "text": str}`` or ``{"type": "image", "image": bytes}`` (encoded PNG/JPEG bytes).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

import xxhash

from seir.operators.base import Operator, later_field
from seir.operators.context import TokenCounter

EMPTY: Mapping[str, Any] = MappingProxyType({})  # a default for mapping arguments, never written to

SCORE_LABELS_0_TO_5 = ("0", "1", "2", "3", "4", "5")


@dataclass(frozen=True)
class Sampling:
    """Decoding parameters. temperature 0 means greedy. ``seed`` makes one request's sample reproducible no matter
    which other requests share its batch."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0


@dataclass
class ChatRequest:
    messages: list[dict[str, Any]]
    sampling: Sampling = field(default_factory=Sampling)


@dataclass
class ChatResult:
    text: str
    tokens_in: int
    tokens_out: int
    finish_reason: str  # "stop" (end of sequence) or "length" (hit max_new_tokens)
    call_key: str = ""  # set by the engine: the content key of the call, for provenance


@dataclass
class ScoreRequest:
    """Read a score as the probability-weighted expectation over label tokens (G-Eval style), so it never fails to
    parse. The backend renders ``messages`` with the generation prompt, appends ``answer_prefix`` (for a judge: its
    critique, then "Score: ") and reads the next-token distribution over the first token of each label."""

    messages: list[dict[str, Any]]
    answer_prefix: str
    labels: tuple[str, ...] = SCORE_LABELS_0_TO_5


@dataclass
class ScoreResult:
    probabilities: list[float]  # one per label, renormalised over the labels
    expectation: float | None  # sum(p_i * float(label_i)); None when the labels are not numbers (label_expectation)
    label_mass: float  # probability the model put on any label before renormalising: low means off-format
    tokens_in: int
    call_key: str = ""  # set by the engine: the content key of the call, for provenance
    method: str = "continue-logprobs"  # how the distribution was read (openai_chat.SCORE_METHODS)


def label_expectation(labels: Sequence[str], probabilities: Sequence[float]) -> float | None:
    """The expectation of numeric labels (a score) under their probabilities; None for labels that are not numbers,
    such as a comparison's "A", "B" and "tie", which are read by their probabilities alone."""
    try:
        values = [float(label) for label in labels]
    except ValueError:
        return None
    return sum(p * value for p, value in zip(probabilities, values, strict=True))


@dataclass
class CallFailure:
    """A request a role could not answer (the engine's pools return it in the failed request's place)."""

    reason: str
    call_key: str = ""
    stops_run: bool = False  # the backend said the same request would fail again (a refusal, retries spent)
    request_only: bool = False  # the request's own fault (too long for the window), not the role's


@dataclass
class RenderRequest:
    """A picture to render from ``prompt``; with ``source``, an edit: the picture starts from ``source`` (encoded
    bytes), which ``strength`` (0-1) lets the render move away from (1: only its layout survives the noise), and
    ``prompt`` says what the result shows. Only backends with the "edit" capability take a source."""

    prompt: str
    seed: int
    width: int = 512
    height: int = 512
    steps: int = 30
    guidance_scale: float | None = None  # None: the family's own (its pipeline's or server's default)
    negative_prompt: str = ""
    source: bytes | None = later_field(None)
    strength: float | None = later_field(None)


@dataclass
class RenderResult:
    png: bytes
    width: int
    height: int


@dataclass
class SimilarityRequest:
    """Image-text similarity (CLIP-style): cosine of the image embedding with each text's embedding."""

    image: bytes
    texts: list[str]


@dataclass
class SimilarityResult:
    cosines: list[float]
    call_key: str = ""  # set by the engine: the content key of the call, for provenance


@dataclass(frozen=True)
class ModelInfo:
    model_id: str  # what the job named: a hub id or a local folder
    revision: str  # hub commit, or a fingerprint of the local folder's files


@dataclass
class ProbeReport:
    """What a model server did when asked, once, whether it can serve a role: each check's outcome ("ok", or why
    not), the scoring method chosen, and ``problems``: what the role needs that the server cannot do, each saying
    what failed and what to change. Local backends have nothing to probe."""

    server: str
    model: str
    served: bool | None = None  # listed by GET /models; None when the server lists nothing
    context_length: int | None = None
    checks: dict[str, str] = field(default_factory=dict)
    score_method: str | None = None
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        served = {True: "listed", False: "NOT LISTED", None: "not listed (server lists none)"}[self.served]
        checks = ", ".join(f"{name} {'ok' if outcome == 'ok' else 'no'}" for name, outcome in self.checks.items())
        scores = f" | scores by {self.score_method}" if self.score_method else ""
        return (f"{self.server} model {self.model}: {served}, context {self.context_length or '?'} | "
                f"{checks or 'no checks'}{scores}")


# The batch methods a backend may serve; a capability outside them is a property of one ("vision": its chat takes
# image parts; "edit": its render takes a source picture).
METHODS = ("chat", "score", "render", "embed", "similarity")


class Backend(Operator):
    """A model behind a role. Subclasses implement the methods named in ``capabilities``."""

    kind: ClassVar[str] = "backend"
    capabilities: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, model: str, revision: str | None = None, **options: Any) -> None:
        self.model_id = model
        self.options = options
        self.info = ModelInfo(model_id=model, revision=revision or fingerprint_model(model))

    def config(self) -> dict[str, Any]:
        return {"operator": self.name, "model": self.info.model_id, "revision": self.info.revision, **self.options}

    @classmethod
    def option_names(cls) -> list[str]:
        """The keyword options of this backend and its bases, for error messages."""
        return sorted({
            p.name for c in cls.__mro__ if "__init__" in vars(c)
            for p in inspect.signature(c.__init__).parameters.values() if p.kind is p.KEYWORD_ONLY
        })

    @classmethod
    def family_sampling(cls, model: str, revision: str | None = None) -> dict[str, Any]:
        """Sampling settings the model's family defines itself, for a job that leaves them unset, read before any
        weight loads ({}: none known here)."""
        return {}

    def refuse_unknown(self, unknown: dict[str, Any]) -> None:
        """Subclasses take their options as keyword arguments and pass the rest here, which names them."""
        if unknown:
            raise TypeError(f"backend {self.name!r} got unknown option(s): {', '.join(sorted(unknown))}; "
                            f"it takes: {', '.join(self.option_names())}")

    def probe(self, needs: frozenset[str]) -> ProbeReport | None:
        """Ask the model server whether it can do ``needs`` (capabilities the job uses on this role), once, before
        any work. None: nothing to ask (the model is loaded here)."""
        return None

    @classmethod
    def placement(cls, options: dict[str, Any], num_gpus: float) -> tuple[dict[str, Any], float]:
        """The options and the GPUs of one actor, from the role's: a backend that splits a model over several GPUs
        says how many it takes. Raises TypeError for an option it cannot read, and ValueError where the options and
        the GPUs disagree, each saying what to change."""
        return options, num_gpus

    @classmethod
    def in_flight(cls, options: dict[str, Any]) -> int:
        """Requests the backend wants at once to keep its model busy, when it batches continuously (an inference
        engine); 0 when it serves one padded batch at a time."""
        return 0

    @classmethod
    def offline_context(cls, model: str, revision: str | None = None,
                        options: Mapping[str, Any] = EMPTY) -> tuple[int | None, TokenCounter | None]:
        """``context`` without loading the weights or asking a server (for ``seir validate``): what the model's files
        (and the role's ``options``) say, or (None, None) where only the running backend knows."""
        return None, None

    def context(self) -> tuple[int | None, TokenCounter | None]:
        """The model's context window in tokens (None: unknown) and how to count a request's tokens as it reads
        them (None: the backend takes no chat requests)."""
        return None, None

    def chat(self, requests: list[ChatRequest]) -> list[ChatResult]:
        raise NotImplementedError(f"backend {self.name!r} cannot chat")

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        raise NotImplementedError(f"backend {self.name!r} cannot score")

    def render(self, requests: list[RenderRequest]) -> list[RenderResult]:
        raise NotImplementedError(f"backend {self.name!r} cannot render images")

    def embed(self, texts: list[str]) -> list[list[float]]:
        raise NotImplementedError(f"backend {self.name!r} cannot embed text")

    def similarity(self, requests: list[SimilarityRequest]) -> list[SimilarityResult]:
        raise NotImplementedError(f"backend {self.name!r} cannot compare images with text")


def fingerprint_model(model: str) -> str:
    """A revision for ``model``: for a local folder, xxh3_128 over its file names, sizes and contents (weights
    over 64 MiB contribute their size and safetensors header only, so fingerprinting a 10 GB checkpoint stays
    fast); for a hub id, the commit of the locally cached snapshot, else "unpinned"."""
    path = Path(model)
    if path.is_dir():
        digest = xxhash.xxh3_128()
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            size = file.stat().st_size
            digest.update(f"{file.relative_to(path).as_posix()}\0{size}\0".encode())
            digest.update(_fingerprint_bytes(file, size))
        return digest.hexdigest()
    return _cached_hub_commit(model) or "unpinned"


_FULL_HASH_LIMIT = 64 * 1024 * 1024


def _fingerprint_bytes(file: Path, size: int) -> bytes:
    if size <= _FULL_HASH_LIMIT:
        return file.read_bytes()
    with file.open("rb") as handle:
        if file.suffix == ".safetensors":  # 8-byte little-endian header length, then a JSON header of tensor layout
            header_len = int.from_bytes(handle.read(8), "little")
            return handle.read(min(header_len, _FULL_HASH_LIMIT))
        return handle.read(1024 * 1024)


def _cached_hub_commit(model_id: str) -> str | None:
    cache = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", "~/.cache/huggingface")) / "hub")
    ref = cache.expanduser() / f"models--{model_id.replace('/', '--')}" / "refs" / "main"
    return ref.read_text().strip() if ref.is_file() else None


def image_parts(message: dict[str, Any]) -> list[bytes]:
    content = message.get("content")
    if isinstance(content, str):
        return []
    return [part["image"] for part in content if part.get("type") == "image"]


def text_of(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    return "".join(part["text"] for part in content if part.get("type") == "text")


def decode_image(data: bytes) -> Any:
    """Encoded image bytes -> an RGB ``PIL.Image`` (what image processors expect, whatever the file's mode)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


class LocalBackend(Backend):
    """A backend whose weights load into this process (transformers, diffusers, sentence-transformers).

    ``model`` may be a hub id, a folder or a ``tiny:``/``bundled:`` reference; the reference, not the machine's
    folder, goes into ``config()``, with the folder's fingerprint as revision, so content keys match across machines.
    Subclasses list their options as keyword arguments and pass the rest here, which refuses them by name.
    """

    def __init__(
        self, model: str, revision: str | None = None, *, device: str = "auto", dtype: str = "auto", **unknown: Any
    ) -> None:
        self.refuse_unknown(unknown)
        import torch

        from seir.operators.backends.tiny import resolve_model_ref

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if dtype == "auto":
            dtype = "bfloat16" if self.device.type == "cuda" else "float32"
        self.dtype = getattr(torch, dtype, None)
        if not isinstance(self.dtype, torch.dtype) or not self.dtype.is_floating_point:
            raise ValueError(f"backend {self.name!r}: dtype must be 'auto' or a torch float type, not {dtype!r}")
        self.path = resolve_model_ref(model)
        self.load_revision = revision  # only a revision the job pinned goes to from_pretrained (hub ids)
        # The device type belongs in the key: sampling noise and kernels differ between CPU and GPU.
        super().__init__(model, revision or fingerprint_model(self.path), dtype=dtype, device=self.device.type)

    @property
    def load_options(self) -> dict[str, Any]:
        """For transformers' ``from_pretrained``: weights go straight to the device, in the chosen dtype."""
        return {"revision": self.load_revision, "dtype": self.dtype, "device_map": self.device}

    def on_device(self, encoded: Any) -> dict[str, Any]:
        """Processor output moved to this backend's device, floating tensors (pixels) cast to its dtype."""
        return {k: v.to(self.device, dtype=self.dtype) if v.is_floating_point() else v.to(self.device)
                for k, v in encoded.items()}


def template_switches(backend: str, value: Any) -> dict[str, Any]:
    """A chat role's ``chat_template_kwargs``: the switches its family's chat template reads, as a mapping."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"backend {backend!r}: chat_template_kwargs must map template switches to values, e.g. "
                         f"{{enable_thinking: false}}, not {value!r}")
    return dict(value)


def batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
