"""Random-weight models at real architecture sizes, built from configs (nothing to download), for GPU figures of
bench_engine.py: ``llm`` shaped like Qwen2.5-0.5B-Instruct, ``judge`` a LLaVA of that LM with a CLIP ViT-L/14-336
vision tower, ``sd`` shaped like Stable Diffusion 2.1-base (512x512). They reuse the tiny models' tokenizers and
chat template, so their text is noise like the tiny models', at the real cost per token and per image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seir.operators.backends.tiny.common import CHAT_TEMPLATE, chat_tokenizer, clip_tokenizer

QWEN25_05B = {"model_type": "qwen2", "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864,
              "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
              "max_position_embeddings": 32768, "rope_theta": 1000000.0, "tie_word_embeddings": True}
CLIP_L14_336 = {"image_size": 336, "patch_size": 14, "hidden_size": 1024, "intermediate_size": 4096,
                "num_hidden_layers": 24, "num_attention_heads": 16, "projection_dim": 768}
SD21_UNET = {"sample_size": 64, "block_out_channels": (320, 640, 1280, 1280), "layers_per_block": 2,
             "cross_attention_dim": 1024, "attention_head_dim": (5, 10, 20, 20), "use_linear_projection": True}
SD21_VAE = {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "latent_channels": 4,
            "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4}
SD21_TEXT = {"vocab_size": 49408, "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 23,
             "num_attention_heads": 16, "max_position_embeddings": 77, "hidden_act": "gelu", "projection_dim": 512}
NAMES = ("llm", "judge", "sd")


def _text(tokenizer: Any) -> dict[str, Any]:
    return {**QWEN25_05B, "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id}


def models(name: str) -> dict[str, Any]:
    """The named model's modules, built from configs with random weights (under ``torch.device("meta")`` they
    take no memory: how the sizes are checked on a CPU machine)."""
    if name == "llm":
        from transformers import AutoModelForCausalLM, Qwen2Config

        tokenizer = chat_tokenizer()
        return {"model": AutoModelForCausalLM.from_config(Qwen2Config(**_text(tokenizer))), "tokenizer": tokenizer}
    if name == "judge":
        from transformers import LlavaConfig, LlavaForConditionalGeneration

        tokenizer = chat_tokenizer()
        config = LlavaConfig(vision_config={"model_type": "clip_vision_model", **CLIP_L14_336},
                             text_config=_text(tokenizer), image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                             vision_feature_select_strategy="default", vision_feature_layer=-2)
        return {"model": LlavaForConditionalGeneration(config), "tokenizer": tokenizer}
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = clip_tokenizer()
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    return {"text_encoder": CLIPTextModel(CLIPTextConfig(**SD21_TEXT, **ids)), "tokenizer": tokenizer,
            "unet": UNet2DConditionModel(**SD21_UNET), "vae": AutoencoderKL(**SD21_VAE)}


def parameters(name: str) -> int:
    import torch

    with torch.device("meta"):
        built = models(name)
    return sum(p.numel() for module in built.values() if isinstance(module, torch.nn.Module)
               for p in module.parameters())


def build(directory: Path) -> dict[str, Path]:
    """Save the three models under ``directory`` (a folder already there is kept): job ``model`` values."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    paths = {}
    for name in NAMES:
        path = directory / name
        paths[name] = path
        if path.exists():
            continue
        built = models(name)
        if name == "sd":
            scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                      clip_sample=False, set_alpha_to_one=False, steps_offset=1)
            StableDiffusionPipeline(vae=built["vae"], text_encoder=built["text_encoder"], tokenizer=built["tokenizer"],
                                    unet=built["unet"], scheduler=scheduler, safety_checker=None,
                                    feature_extractor=None, requires_safety_checker=False).save_pretrained(path)
            continue
        built["model"].save_pretrained(path)
        if name == "judge":
            processor = CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
            LlavaProcessor(image_processor=processor, tokenizer=built["tokenizer"], patch_size=14,
                           vision_feature_select_strategy="default", num_additional_image_tokens=1,
                           chat_template=CHAT_TEMPLATE).save_pretrained(path)
        else:
            built["tokenizer"].save_pretrained(path)
    return paths
