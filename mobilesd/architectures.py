"""Stable Diffusion architectures built from configs with random weights.

Real SD weights cannot be downloaded here, so scale tests use the real SD1.5 / SD2.1 architecture with
random weights, and unit tests use a tiny SD with the same classes and block types.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mobilesd.errors import MobileSDError

SCHEDULER_CONFIG_SD = {
    # SD 1.x / 2.x training schedule (scheduler_config.json of the released checkpoints).
    "_class_name": "PNDMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "clip_sample": False,
    "prediction_type": "epsilon",
}

_CROSS_DOWN = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
_CROSS_UP = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3

ARCHITECTURES = {
    "sd15": dict(
        text=dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                  num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                  projection_dim=768),
        unet=dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                  block_out_channels=(320, 640, 1280, 1280), down_block_types=_CROSS_DOWN,
                  up_block_types=_CROSS_UP, cross_attention_dim=768, attention_head_dim=8),
        vae=dict(in_channels=3, out_channels=3, latent_channels=4, sample_size=512, layers_per_block=2,
                 block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                 up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.18215),
        prediction_type="epsilon",
    ),
    "sd21": dict(
        text=dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                  num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu",
                  projection_dim=512),
        unet=dict(sample_size=96, in_channels=4, out_channels=4, layers_per_block=2,
                  block_out_channels=(320, 640, 1280, 1280), down_block_types=_CROSS_DOWN,
                  up_block_types=_CROSS_UP, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
                  use_linear_projection=True),
        vae=dict(in_channels=3, out_channels=3, latent_channels=4, sample_size=768, layers_per_block=2,
                 block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                 up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.18215),
        prediction_type="v_prediction",
    ),
    # Same classes and block types as SD, a few hundred KB of weights: for unit tests.
    "tiny": dict(
        text=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu",
                  projection_dim=32),
        unet=dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                  block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                  attention_head_dim=4, norm_num_groups=8),
        vae=dict(in_channels=3, out_channels=3, latent_channels=4, sample_size=16, layers_per_block=1,
                 block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                 up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8, scaling_factor=0.18215),
        prediction_type="epsilon",
    ),
    # SD 2.x-shaped and tiny: 1024-wide cross-attention (what tells an SD 2.x single file from SD 1.x), linear
    # projections, per-block head counts, a GELU text encoder. The text encoder's token embedding (49408 x
    # 1024) makes it ~200 MB: for single-file tests, not for conversion tests.
    "tiny-sd2": dict(
        text=dict(vocab_size=49408, hidden_size=1024, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", projection_dim=32),
        unet=dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                  block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=1024,
                  attention_head_dim=(2, 4), use_linear_projection=True, norm_num_groups=8),
        vae=dict(in_channels=3, out_channels=3, latent_channels=4, sample_size=16, layers_per_block=1,
                 block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                 up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8, scaling_factor=0.18215),
        prediction_type="v_prediction",
    ),
}

# SD 2.x-base: the SD 2.x networks at 512 px (64x64 latents) with epsilon prediction (SD-Turbo has this shape too)
ARCHITECTURES["sd21-base"] = dict(
    ARCHITECTURES["sd21"], prediction_type="epsilon",
    unet=dict(ARCHITECTURES["sd21"]["unet"], sample_size=64), vae=dict(ARCHITECTURES["sd21"]["vae"], sample_size=512))


def build_random_pipeline(arch: str = "tiny", seed: int = 0, prediction_type: str | None = None,
                          with_text_encoder: bool = True):
    """A StableDiffusionPipeline of architecture ``arch`` with random weights (fp32, CPU)."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from mobilesd.tokenizer import load_clip_tokenizer

    spec = ARCHITECTURES[arch]
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(**spec["text"])) if with_text_encoder else None
    unet = UNet2DConditionModel(**spec["unet"])
    vae = AutoencoderKL(**spec["vae"])
    sched = dict(SCHEDULER_CONFIG_SD, prediction_type=prediction_type or spec["prediction_type"])
    scheduler = PNDMScheduler.from_config(sched)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=load_clip_tokenizer(),
                                   unet=unet, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    return pipe


def save_random_pipeline(path: str | Path, arch: str = "tiny", seed: int = 0, **kw) -> Path:
    """Build and save a random-weight pipeline in diffusers layout (safetensors)."""
    pipe = build_random_pipeline(arch, seed, **kw)
    pipe.save_pretrained(str(path), safe_serialization=True)
    return Path(path)


def write_config_folder(path: str | Path, arch: str, prediction_type: str | None = None,
                        image_size: int | tuple[int, int] | None = None) -> Path:
    """A diffusers-layout folder with every config (and the tokenizer) but no weights.

    diffusers' single-file loader needs such a folder to know the architecture; online it fetches one
    from the hub, offline we write it from ARCHITECTURES. Built on the meta device: costs no memory.
    ``image_size``: the native image size (a side, or (height, width)) instead of the architecture's, e.g.
    512 for SD 2.x-base with ``arch="sd21"``; it becomes the UNet's ``sample_size`` (in latent pixels).
    """
    import json

    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig

    from mobilesd.tokenizer import write_clip_tokenizer_files

    spec = ARCHITECTURES[arch]
    unet_cfg, vae_cfg = dict(spec["unet"]), dict(spec["vae"])
    if image_size is not None:
        factor = 2 ** (len(vae_cfg["block_out_channels"]) - 1)
        sides = tuple(image_size) if isinstance(image_size, (list, tuple)) else (image_size, image_size)
        if any(s <= 0 or s % factor for s in sides):
            raise MobileSDError(f"image size {image_size} is not a positive multiple of the VAE's factor {factor}",
                                "pass the model's native size, e.g. --image-size 512 or 768")
        unet_cfg["sample_size"] = sides[0] // factor if sides[0] == sides[1] else [s // factor for s in sides]
        vae_cfg["sample_size"] = sides[0] if sides[0] == sides[1] else list(sides)
    out = Path(path)
    with torch.device("meta"):
        UNet2DConditionModel(**unet_cfg).save_config(out / "unet")
        AutoencoderKL(**vae_cfg).save_config(out / "vae")
    CLIPTextConfig(**spec["text"], architectures=["CLIPTextModel"]).save_pretrained(out / "text_encoder")
    sched = dict(SCHEDULER_CONFIG_SD, prediction_type=prediction_type or spec["prediction_type"])
    PNDMScheduler.from_config(sched).save_config(out / "scheduler")
    write_clip_tokenizer_files(out / "tokenizer")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=2))
    return out
