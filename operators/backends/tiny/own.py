"""seir's own tiny models: a Qwen2-style chat model, a LLaVA judge, CLIP, and Stable Diffusion (text-to-image and
InstructPix2Pix)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from seir.operators.backends.tiny.common import (
    CHAT_TEMPLATE,
    chat_tokenizer,
    clip_image_processor,
    clip_text_config,
    clip_tokenizer,
    clip_vision_config,
    seeded,
    text_config,
)


def _build_llm(path: Path) -> None:
    from transformers import AutoModelForCausalLM, Qwen2Config

    tokenizer = chat_tokenizer()
    with seeded(1):
        model = AutoModelForCausalLM.from_config(Qwen2Config(**text_config(tokenizer)))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def _build_llm_wide_heads(path: Path) -> None:
    """The tiny LM's tokenizer and layers with two 64-wide attention heads instead of four 16-wide ones: inference
    engines' CPU attention kernels (vLLM's) take head sizes from 32 up only."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    tokenizer = chat_tokenizer()
    config = {**text_config(tokenizer), "hidden_size": 128, "num_attention_heads": 2, "num_key_value_heads": 1}
    with seeded(5):
        model = AutoModelForCausalLM.from_config(Qwen2Config(**config))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def _build_judge(path: Path) -> None:
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tokenizer = chat_tokenizer()
    config = LlavaConfig(
        vision_config={"model_type": "clip_vision_model", **clip_vision_config()},
        text_config=text_config(tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    with seeded(2):
        model = LlavaForConditionalGeneration(config)
    model.save_pretrained(path)
    processor = LlavaProcessor(
        image_processor=clip_image_processor(),
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's class token, which the "default" strategy drops again
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(path)


def _build_clip(path: Path) -> None:
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    tokenizer = clip_tokenizer()
    text, vision = clip_text_config(tokenizer), clip_vision_config()
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)
    with seeded(3):
        model = CLIPModel(config)
    model.save_pretrained(path)
    CLIPProcessor(image_processor=clip_image_processor(), tokenizer=tokenizer).save_pretrained(path)


def _build_sd(path: Path, instruct_edit: bool = False) -> None:
    """Stable Diffusion's layout at toy size: 64x64 images in 2 steps take well under a second on a CPU. With
    ``instruct_edit``, InstructPix2Pix's: the UNet reads the source picture's 4 latent channels beside the noise's."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionInstructPix2PixPipeline,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = clip_tokenizer()
    with seeded(4):
        text_encoder = CLIPTextModel(CLIPTextConfig(**clip_text_config(tokenizer)))
        unet = UNet2DConditionModel(
            sample_size=8, in_channels=8 if instruct_edit else 4, block_out_channels=(32, 64), layers_per_block=1,
            cross_attention_dim=32,
            attention_head_dim=8, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        )
        # Four blocks give the usual 8x latent downscale: a 64x64 image denoises an 8x8 latent.
        vae = AutoencoderKL(
            block_out_channels=(8, 16, 16, 16), norm_num_groups=8, latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        )
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipeline_class = StableDiffusionInstructPix2PixPipeline if instruct_edit else StableDiffusionPipeline
    pipeline = pipeline_class(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipeline.save_pretrained(path)



BUILDERS: dict[str, Callable[[Path], None]] = {
    "llm": _build_llm, "judge": _build_judge, "sd": _build_sd, "clip": _build_clip,
    "llm-wide-heads": _build_llm_wide_heads, "sd-instruct-edit": partial(_build_sd, instruct_edit=True)}
