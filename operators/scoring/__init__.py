"""Scorers (judge, clip, image-quality, source-similarity, text), the rubrics they score on, how they combine,
and judge evaluation.

Importing this package registers every scorer, so a job spec can name it.
"""

from seir.operators.scoring import clip, edits, image_quality, judge, text  # noqa: F401  (runs @register)
