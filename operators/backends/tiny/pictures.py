"""The picture families users run, each from its real diffusers pipeline, denoiser, VAE, scheduler and text
encoders, at toy size (a 64x64 picture in a couple of steps takes well under a second here): SDXL, SD3, FLUX.1 and
Qwen-Image render from text; FLUX.1 Kontext and Qwen-Image-Edit edit a picture they are given. (InstructPix2Pix is
seir's own ``sd-instruct-edit``.)"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from seir.operators.backends.tiny.common import clip_text_config, clip_tokenizer, corpus, seeded

# One 8x downscale for every family's VAE, as their real VAEs have: a 64x64 picture is an 8x8 latent.
_VAE_BLOCKS = {"block_out_channels": (8, 16, 16, 16), "norm_num_groups": 8,
               "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4}


def _clip_encoder(projection: bool, seed: int) -> Any:
    """A CLIP text encoder (with the projection SDXL's and SD3's second encoders pool through, or without)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with seeded(seed):
        config = CLIPTextConfig(**clip_text_config(clip_tokenizer()))
        return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def _t5(width: int, seed: int) -> tuple[Any, Any]:
    """T5's encoder and its Unigram tokenizer, as FLUX.1 and SD3 read long prompts. The pieces are written out, not
    trained (Unigram training breaks ties differently from run to run): every character of ``corpus()``, then its
    words, each scored by its length so whole words win."""
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    text = " ".join(corpus())
    words = sorted({"\u2581" + word for word in text.split()})
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0),
              *((c, -10.0) for c in sorted(set(text) - {" "})), *((w, -10.0 / len(w)) for w in words)]
    tokenizer = T5Tokenizer(vocab=pieces, extra_ids=0)
    config = T5Config(vocab_size=len(tokenizer), d_model=width, d_kv=16, d_ff=2 * width, num_layers=2, num_heads=2,
                      relative_attention_num_buckets=8, pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id)
    with seeded(seed):
        return T5EncoderModel(config), tokenizer


def _flow_scheduler(**shift: Any) -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**shift)


def _vae(latent_channels: int, seed: int, **scaling: Any) -> Any:
    from diffusers import AutoencoderKL

    with seeded(seed):
        return AutoencoderKL(latent_channels=latent_channels, **_VAE_BLOCKS, **scaling)


def _build_sdxl(path: Path) -> None:
    """SDXL: two CLIP text encoders (the second pooled), a UNet conditioned on both and on the picture's size."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    with seeded(30):
        unet = UNet2DConditionModel(
            sample_size=8, block_out_channels=(32, 64), layers_per_block=1, attention_head_dim=(2, 4),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), use_linear_projection=True,
            addition_embed_type="text_time", addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
            projection_class_embeddings_input_dim=6 * 8 + 32, cross_attention_dim=64)
    scheduler = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                       steps_offset=1, timestep_spacing="leading")
    StableDiffusionXLPipeline(
        vae=_vae(4, 31, scaling_factor=0.13025), text_encoder=_clip_encoder(False, 32), tokenizer=clip_tokenizer(),
        text_encoder_2=_clip_encoder(True, 33), tokenizer_2=clip_tokenizer(), unet=unet, scheduler=scheduler,
    ).save_pretrained(path)


def _build_sd3(path: Path) -> None:
    """SD3: an MMDiT read by two pooled CLIP encoders and T5, flow matching."""
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline

    with seeded(34):
        transformer = SD3Transformer2DModel(
            sample_size=8, patch_size=1, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=64, caption_projection_dim=32, pooled_projection_dim=64,
            pos_embed_max_size=16)
    t5, t5_tokenizer = _t5(64, 35)
    StableDiffusion3Pipeline(
        transformer=transformer, scheduler=_flow_scheduler(shift=3.0),
        vae=_vae(4, 36, scaling_factor=1.5305, shift_factor=0.0609),
        text_encoder=_clip_encoder(True, 37), tokenizer=clip_tokenizer(),
        text_encoder_2=_clip_encoder(True, 38), tokenizer_2=clip_tokenizer(),
        text_encoder_3=t5, tokenizer_3=t5_tokenizer,
    ).save_pretrained(path)


def _build_flux(path: Path, kontext: bool = False) -> None:
    """FLUX.1 [dev]: a rectified-flow transformer over 2x2-packed latents, read by pooled CLIP and T5, with guidance
    distilled into an embedding. With ``kontext``, FLUX.1 Kontext: the same model family, whose pipeline reads the
    picture to edit as tokens beside the ones it denoises."""
    from diffusers import FluxKontextPipeline, FluxPipeline, FluxTransformer2DModel

    with seeded(40 if kontext else 41):
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True,
            axes_dims_rope=(4, 6, 6))
    t5, t5_tokenizer = _t5(32, 42)
    pipeline_class = FluxKontextPipeline if kontext else FluxPipeline
    pipeline_class(
        transformer=transformer, vae=_vae(4, 43, scaling_factor=0.3611, shift_factor=0.1159),
        scheduler=_flow_scheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15),
        text_encoder=_clip_encoder(False, 44), tokenizer=clip_tokenizer(), text_encoder_2=t5,
        tokenizer_2=t5_tokenizer,
    ).save_pretrained(path)


def _build_qwen_image(path: Path, edit: bool = False) -> None:
    """Qwen-Image: an MMDiT read by Qwen2.5-VL's language model (seir's tiny Qwen2.5-VL, as Qwen-Image's is Qwen2.5-VL
    7B), over a causal video VAE's latents. With ``edit``, Qwen-Image-Edit: the same, whose text encoder also looks
    at the picture to edit (through its vision tower and processor) and whose transformer reads that picture's latents
    beside the ones it denoises."""
    import json
    import shutil
    import tempfile

    from diffusers import AutoencoderKLQwenImage, QwenImageEditPipeline, QwenImagePipeline, QwenImageTransformer2DModel
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    from seir.operators.backends.tiny.language import BUILDERS as LANGUAGE

    with tempfile.TemporaryDirectory() as folder:
        LANGUAGE["qwen2.5-vl"](Path(folder))
        text_encoder = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        with seeded(52 if edit else 53):
            transformer = QwenImageTransformer2DModel(
                patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16,
                num_attention_heads=2, joint_attention_dim=text_encoder.config.text_config.hidden_size,
                axes_dims_rope=(4, 6, 6))
            vae = AutoencoderKLQwenImage(base_dim=8, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                                         temperal_downsample=[False, True, True], latents_mean=[0.0] * 4,
                                         latents_std=[1.0] * 4)
        scheduler = _flow_scheduler(shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9,
                                    base_image_seq_len=256, max_image_seq_len=8192, shift_terminal=0.02,
                                    time_shift_type="exponential")
        parts = {"transformer": transformer, "vae": vae, "scheduler": scheduler, "text_encoder": text_encoder,
                 "tokenizer": tokenizer}
        if not edit:
            QwenImagePipeline(**parts).save_pretrained(path)
            return
        # The processor is saved as Qwen-VL's processors are without torchvision (no video part), which a pipeline's
        # save_pretrained cannot do: its files are copied over and named in the pipeline's index.
        QwenImageEditPipeline(**parts, processor=None).save_pretrained(path)
        shutil.copytree(folder, path / "processor",
                        ignore=shutil.ignore_patterns("*.safetensors", "config.json", "generation_config.json"))
    (path / "processor" / "processor_config.json").write_text(
        json.dumps({"processor_class": "Qwen2VLProcessor"}, indent=2))
    index = json.loads((path / "model_index.json").read_text())
    (path / "model_index.json").write_text(json.dumps({**index, "processor": ["transformers", "Qwen2VLProcessor"]},
                                                      indent=2, sort_keys=True))


BUILDERS: dict[str, Callable[[Path], None]] = {
    "sdxl": _build_sdxl, "sd3": _build_sd3, "flux": _build_flux, "flux-kontext": partial(_build_flux, kontext=True),
    "qwen-image": _build_qwen_image, "qwen-image-edit": partial(_build_qwen_image, edit=True)}
