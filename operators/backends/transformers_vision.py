"""LLaVA-style vision-language models through transformers: the judge that looks at images.

Chat, sampling and the score read are the causal backend's; only loading and encoding differ, because image parts
travel as PNG bytes and the processor expands each image placeholder into the model's image tokens.
"""

from __future__ import annotations

from typing import Any

from seir.operators.backends.base import decode_image, image_parts
from seir.operators.backends.transformers_chat import TransformersChat
from seir.operators.base import register


@register
class TransformersVisionChat(TransformersChat):
    name = "transformers-vision-chat"
    capabilities = frozenset({"chat", "score", "vision"})

    @classmethod
    def load_processor(cls, path: str, revision: str | None, **options: Any) -> Any:
        from transformers import AutoProcessor

        try:
            return AutoProcessor.from_pretrained(path, revision=revision, **options)
        except (ImportError, ValueError) as err:
            if not lacks_video_library(err):
                raise
            return _without_video(path, revision, **options)

    def _load(self) -> tuple[Any, Any]:
        from transformers import AutoModelForImageTextToText

        processor = self.load_processor(self.path, self.load_revision)
        return processor, AutoModelForImageTextToText.from_pretrained(self.path, **self.load_options)

    def _inputs(self, prompts: list[str], conversations: list[list[dict[str, Any]]]) -> dict[str, Any]:
        # One list of pictures per prompt, in the order their placeholders appear (a prompt without any: an empty
        # list): the shape every family's processor takes; some (Gemma 3's) refuse one flat list for a batch.
        images = [[decode_image(data) for m in messages for data in image_parts(m)] for messages in conversations]
        encoded = self.processor(text=prompts, images=images if any(images) else None, padding=True,
                                 add_special_tokens=False, return_tensors="pt")
        return self.on_device(encoded)


def lacks_video_library(err: Exception) -> bool:
    """Whether loading failed on a video part whose library (torchvision) is missing: seir sends no video, so the
    rest loads without it. Families report it either way (an ImportError from the video processor class, a
    ValueError from the auto class)."""
    from transformers.utils import is_torchvision_available

    return isinstance(err, ImportError | ValueError) and not is_torchvision_available() \
        and "torchvision" in str(err).lower()


def _without_video(path: str, revision: str | None, **options: Any) -> Any:
    """The family's own processor class, made from its image processor, tokenizer and its own saved settings (such
    as how many tokens a picture takes) with no video processor: for families (Qwen-VL's, LLaVA-OneVision's,
    InternVL's) whose video processor needs torchvision, which seir never uses, and whose image processor has a PIL
    backend."""
    import json
    from pathlib import Path

    import transformers
    from transformers import AutoImageProcessor, AutoTokenizer
    from transformers.processing_utils import ProcessorMixin
    from transformers.utils import cached_file

    settings, _ = ProcessorMixin.get_processor_dict(path, revision=revision, **options)
    if "processor_class" not in settings:  # older checkpoints name it beside the image processor's settings only
        found = cached_file(path, "preprocessor_config.json", revision=revision,
                            _raise_exceptions_for_missing_entries=False, **options)
        if found:
            settings["processor_class"] = json.loads(Path(found).read_text(encoding="utf-8")).get("processor_class")
    family = getattr(transformers, str(settings.get("processor_class")), None)
    if family is None:
        raise ImportError(f"{path}: its processor needs a video library seir does not use, and its processor class "
                          f"({settings.get('processor_class')!r}) is not one transformers names: install torchvision")

    class ImageOnly(family):  # type: ignore[misc, valid-type]
        def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> Any:
            if argument_name == "video_processor" and argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, **options)
    return ImageOnly.from_args_and_dict(  # the processor's chat template if it has its own, else the tokenizer's
        [], {"chat_template": tokenizer.chat_template, **settings}, tokenizer=tokenizer, video_processor=None,
        image_processor=AutoImageProcessor.from_pretrained(path, revision=revision, **options))
