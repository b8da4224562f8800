"""The image-text scorers users run, each from its real model class, processor and tokenizer at toy size."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from seir.operators.backends.tiny.common import corpus, seeded

# SigLIP 2 was trained on texts padded (or cut) to 64 tokens, and its text model reads them at its last position.
_SIGLIP2_TEXT_LENGTH = 64


def _build_siglip2(path: Path) -> None:
    """SigLIP 2 (NaFlex): Gemma's tokenizer lowercasing its text, and pictures read at their own aspect ratio as up
    to 256 patches of 16 pixels, padded and masked to that many. The published patch size and count: its processor
    applies them whatever its image processor says."""
    from transformers import Siglip2Config, Siglip2ImageProcessorPil, Siglip2Model, Siglip2Processor, Siglip2Tokenizer

    tokenizer = Siglip2Tokenizer(model_max_length=_SIGLIP2_TEXT_LENGTH).train_new_from_iterator(
        corpus(), vocab_size=1024, show_progress=False)
    patches, patch = 256, 16
    config = Siglip2Config(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": _SIGLIP2_TEXT_LENGTH,
                     "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
                     "eos_token_id": tokenizer.eos_token_id},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "patch_size": patch, "num_patches": patches})
    with seeded(23):
        model = Siglip2Model(config)
    model.save_pretrained(path)
    images = Siglip2ImageProcessorPil(patch_size=patch, max_num_patches=patches)
    Siglip2Processor(image_processor=images, tokenizer=tokenizer).save_pretrained(path)


BUILDERS: dict[str, Callable[[Path], None]] = {"siglip2": _build_siglip2}
