"""The job's ``dedup`` section: which dedup methods run and with what settings, and how a method a job names is
found (a built-in, or a plugin as ``module:Class``). The pass that applies them is seir.engine.dedup."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from seir.operators.dedup import DedupMethod, MinHashDedup, PerceptualHash, SemanticDedup, SketchMethod
from seir.operators.dedup.common import INPUTS
from seir.operators.registry import lookup

# The built-in methods, in the priority they have when two methods link the same pair (a decision names the most
# certain one); plugin methods come after them, in the order the job lists them.
METHODS = ("exact-text", "exact-image", "minhash", "image-phash", "semantic")


@dataclass(frozen=True)
class DedupConfig:
    """Which methods run, and each method's settings (the operators are their own config).

    ``methods`` name registered methods or plugins (``module:Class``, a ``SketchMethod`` built with its defaults).
    In a job spec that does not list them, the default is every built-in method whose roles the job has.

    Defaults, and why (numbers measured on the synthetic corpora of ``bench/corpora.py``):
    - MinHash at Jaccard 0.8 over 3-word shingles, 128 permutations. Dialogues are short (100-500 words) and each
      replaced word breaks ``shingle_size`` shingles: with 3-grams, 1% of words replaced gives Jaccard ~0.94, 2%
      ~0.89, 3% ~0.83, 5% ~0.75, so 0.8 sits near 3.5%; with the 5-grams common for web pages it would sit near 2%,
      and bag-of-words would match templated questions that only swap entities. 128 permutations estimate Jaccard
      to +-0.035 (one sd at 0.8): enough to decide pairs far from the threshold, while those within 3 sds of it
      are decided on exact Jaccard (more permutations would cost signature time on every text, the exact check
      only on the unsure pairs).
    - Perceptual hash at Hamming distance <= 6 of 64 bits: resizing moves a hash by 0-2 bits, JPEG at quality
      30-70 by 0-6, crops of 1% per side by <= 6 (99.5%) and of 2% per side by <= 6 (90%); unrelated images
      sit at 31.5 on average, never below 14 in 45k pairs. 6 keeps the pigeonhole bands at 9-10 bits; 8 would
      catch 2% crops but cut bands to 7 bits, 4x the random candidates.
    - Embedding cosine >= 0.95: with all-MiniLM-L6-v2, a dialogue with its sentences reordered scores 0.99 and a
      reworded one 0.97-0.98, while another question on the same topic scores ~0.5.
    """

    methods: tuple[str, ...] = METHODS
    minhash: MinHashDedup = field(default_factory=MinHashDedup)
    phash: PerceptualHash = field(default_factory=PerceptualHash)
    semantic: SemanticDedup = field(default_factory=SemanticDedup)
    batch_size: int = 8192  # dialogues sketched and stored per step (~15 MB of text and sketches)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"dedup batch_size must be >= 1, got {self.batch_size}")
        for method in self.methods:
            method_class(method)

    def judges(self, name: str) -> bool:
        """Whether some method reads this input (one of ``INPUTS``)."""
        return any(name in method_class(method).reads for method in self.methods)

    def operators(self) -> dict[str, DedupMethod]:
        """Each method, built (the built-ins with their settings here), in priority order."""
        configured: dict[str, DedupMethod] = {op.name: op for op in (self.minhash, self.phash, self.semantic)}
        ordered = [m for m in METHODS if m in self.methods] + [m for m in self.methods if m not in METHODS]
        return {name: configured.get(name) or method_class(name)() for name in dict.fromkeys(ordered)}


def default_methods(roles: Iterable[str]) -> tuple[str, ...]:
    """The built-in methods a job with these model roles can run: all of them, less semantic without ``embed``."""
    return tuple(m for m in METHODS if set(method_class(m).roles) <= set(roles))


def method_class(name: str) -> type[DedupMethod]:
    """The dedup method a job names: a built-in, or a plugin as ``module:Class``."""
    try:
        found = lookup("dedup", name)
    except KeyError as err:
        raise ValueError(err.args[0]) from None
    if not issubclass(found, DedupMethod) or len(found.reads) != 1 or found.reads[0] not in INPUTS:
        raise ValueError(f"dedup method {name!r} must be a DedupMethod that reads one of {', '.join(INPUTS)}")
    if name not in METHODS and not issubclass(found, SketchMethod):
        raise ValueError(f"dedup method {name!r}: a plugin method must be a SketchMethod "
                         "(seir.operators.dedup.SketchMethod)")
    return found  # type: ignore[return-value]
