"""The stages of the SEIR loop, each a declared unit (``base.Stage``): question, answer (with its caption) and image
are built in; a job may name its own as ``module:Class`` in ``seir.stages``."""

from seir.operators.stages.answer import AnswerStage
from seir.operators.stages.base import (
    JUDGE,
    JUDGE_NEEDS,
    TEXT_WRITER,
    VISION_WRITER,
    Draft,
    Prompt,
    Score,
    Stage,
    TurnContext,
    Writer,
    stored_fields,
)
from seir.operators.stages.image import ImageStage
from seir.operators.stages.question import QuestionStage

BUILT_IN = (QuestionStage.name, AnswerStage.name, ImageStage.name)  # every job's stages unless it names others

__all__ = ["BUILT_IN", "JUDGE", "JUDGE_NEEDS", "TEXT_WRITER", "VISION_WRITER", "AnswerStage", "Draft", "ImageStage",
           "Prompt", "QuestionStage", "Score", "Stage", "TurnContext", "Writer", "stored_fields"]
