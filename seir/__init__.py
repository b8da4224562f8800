"""seir: generate, self-evaluate and refine interleaved image-text dialogues at scale."""

__version__ = "0.1.0"
