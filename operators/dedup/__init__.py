"""Dedup methods: exact keys, MinHash text, perceptual image hash, embedding cosine; and duplicate grouping.

Importing the package registers every method (``kind = "dedup"``) for job specs.
"""

from seir.operators.dedup.common import DedupMethod, Sketches, SketchMethod, Skip
from seir.operators.dedup.exact import ExactImage, ExactText
from seir.operators.dedup.minhash import MinHashDedup
from seir.operators.dedup.phash import PerceptualHash
from seir.operators.dedup.semantic import SemanticDedup

__all__ = [
    "DedupMethod",
    "ExactImage",
    "ExactText",
    "MinHashDedup",
    "PerceptualHash",
    "SemanticDedup",
    "SketchMethod",
    "Sketches",
    "Skip",
]
