"""Architecture of the tiny digits SD and how it is written as a diffusers folder.

Same classes and block types as SD 1.5 (CLIPTextModel, UNet2DConditionModel with cross-attention
blocks, AutoencoderKL, SD's scheduler config, the real CLIP tokenizer), only narrower: 32x32 RGB images,
VAE factor 4, 4x8x8 latents.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


def _bundled_model() -> Path:
    """assets/tiny-digits-sd, the default --model of every command, wherever mobilesd is installed: package
    data of ``mobilesd.assets`` (pyproject.toml maps the repo's assets/ to it)."""
    from importlib.resources import files

    try:
        root = files("mobilesd.assets")
    except ModuleNotFoundError:
        # an editable install made before pyproject mapped mobilesd.assets (`pip install -e .` again fixes it)
        return Path(__file__).resolve().parents[2] / "assets" / "tiny-digits-sd"
    return Path(str(root.joinpath("tiny-digits-sd")))


DEFAULT_MODEL = _bundled_model()
CLASSIFIER_SUBDIR = "classifier"

TEXT_CONFIG = dict(
    vocab_size=49408, hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=32,
    pad_token_id=49407, bos_token_id=49406, eos_token_id=49407,
)
UNET_CONFIG = dict(
    sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64, 64),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn", cross_attention_dim=32, attention_head_dim=4, norm_num_groups=16,
)
VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, sample_size=32, layers_per_block=1,
    block_out_channels=(16, 32, 32), down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3, norm_num_groups=8,
)


def scheduler_config() -> dict:
    from mobilesd.architectures import SCHEDULER_CONFIG_SD

    return dict(SCHEDULER_CONFIG_SD)


def build_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))


def build_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**UNET_CONFIG)


def build_vae(scaling_factor: float = 1.0):
    from diffusers import AutoencoderKL

    return AutoencoderKL(**VAE_CONFIG, scaling_factor=scaling_factor)


def build_scheduler():
    from diffusers import PNDMScheduler

    return PNDMScheduler.from_config(scheduler_config())


def save_pipeline(out: str | Path, text_encoder, unet, vae) -> Path:
    """Write the diffusers folder: fp16 safetensors (half the size) that load back as fp32.

    diffusers upcasts fp16 weights to the model's fp32 by default; transformers 5 loads in the dtype
    of ``config.json``, so the text encoder's config says float32 while its file holds fp16.
    """
    import copy

    from diffusers import StableDiffusionPipeline

    from mobilesd.tokenizer import load_clip_tokenizer, write_clip_tokenizer_files

    out = Path(out)
    pipe = StableDiffusionPipeline(
        vae=copy.deepcopy(vae).half(), text_encoder=copy.deepcopy(text_encoder).half(),
        tokenizer=load_clip_tokenizer(), unet=copy.deepcopy(unet).half(), scheduler=build_scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(out), safe_serialization=True)
    cfg_path = out / "text_encoder" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("torch_dtype", None)
    cfg["dtype"] = "float32"
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    # the SD layout: vocab.json + merges.txt (save_pretrained adds a 3.6 MB tokenizer.json we do not need)
    for f in (out / "tokenizer").iterdir():
        f.unlink()
    write_clip_tokenizer_files(out / "tokenizer")
    return out


def fp16_roundtrip_(module: torch.nn.Module) -> torch.nn.Module:
    """Round weights to fp16 and back, in place: what the saved asset holds."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.half().float())
    return module
