"""Write a diffusers Stable Diffusion pipeline as one original-format (CompVis / LDM) checkpoint.

Real SD weights cannot be downloaded here, so the single-file loading path (``load_pipeline`` on a
``.safetensors`` file, i.e. diffusers' ``from_single_file``) is tested on checkpoints written by
``save_single_file`` from a pipeline with known weights. The keys follow the layout of the released
SD 1.x checkpoints (``v1-5-pruned-emaonly.safetensors``):

* UNet under ``model.diffusion_model.``: ``time_embed.{0,2}``, ``input_blocks.{k}.{0,1}`` (resnet,
  attention; ``input_blocks.{k}.0.op`` for a downsampler), ``middle_block.{0,1,2}``,
  ``output_blocks.{k}.{0,1,2}`` (resnet, attention, upsampler ``.conv``), ``out.{0,2}``. Each UNet level
  takes ``layers_per_block + 1`` consecutive block indices.
* VAE under ``first_stage_model.``: ``encoder.down.{i}.block.{j}``, ``decoder.up.{n-1-i}.block.{j}``,
  ``mid.block_{1,2}``, ``mid.attn_1.{norm,q,k,v,proj_out}`` (1x1 conv weights), ``norm_out``...
* CLIP text encoder under ``cond_stage_model.transformer.text_model.`` (the HF CLIPTextModel keys).

The released SD 2.x files hold an OpenCLIP text encoder (``cond_stage_model.model.``); this writer has
no such layout: an SD 2.x-architecture pipeline (``architectures.ARCHITECTURES["sd21"]``, a CLIPTextModel)
gets its text encoder in the CLIP layout above, which diffusers reads as well.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from mobilesd.errors import MobileSDError

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."

_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
_VAE_TOP = {"conv_in": "conv_in", "conv_out": "conv_out", "conv_norm_out": "norm_out"}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _unknown(component: str, key: str) -> MobileSDError:
    return MobileSDError(f"save_single_file: no original-format name for {component} parameter {key!r}",
                         "only SD 1.x pipelines (UNet2DConditionModel + AutoencoderKL + CLIPTextModel) "
                         "without extra embeddings can be written as a single file")


def _layers_per_block(config) -> int:
    lpb = config["layers_per_block"]
    if isinstance(lpb, (list, tuple)):
        if len(set(lpb)) != 1:
            raise MobileSDError(f"save_single_file: per-block layers_per_block {list(lpb)} has no LDM layout",
                                "use a UNet with the same layers_per_block in every block")
        lpb = lpb[0]
    return int(lpb)


def unet_key_to_ldm(key: str, config) -> str:
    """The LDM name (without ``model.diffusion_model.``) of a diffusers UNet2DConditionModel key."""
    name, _, param = key.rpartition(".")
    if name in _UNET_TOP:
        return f"{_UNET_TOP[name]}.{param}"
    lpb = _layers_per_block(config)
    per_level = lpb + 1

    def resnet(rest: str) -> str:
        head, _, tail = rest.partition(".")  # norm1.weight -> in_layers.0.weight
        if head not in _UNET_RESNET:
            raise _unknown("UNet", key)
        return f"{_UNET_RESNET[head]}.{tail}"

    m = re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key)
    if m:
        level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        k = 1 + level * per_level + j
        return f"input_blocks.{k}.0.{resnet(rest)}" if kind == "resnets" else f"input_blocks.{k}.1.{rest}"
    m = re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(weight|bias)", key)
    if m:
        return f"input_blocks.{1 + int(m[1]) * per_level + lpb}.0.op.{m[2]}"
    m = re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key)
    if m:
        kind, j, rest = m[1], int(m[2]), m[3]
        if kind == "resnets":
            return f"middle_block.{2 * j}.{resnet(rest)}"  # resnets.0 -> 0, resnets.1 -> 2
        if j == 0:
            return f"middle_block.1.{rest}"
        raise _unknown("UNet", key)
    m = re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key)
    if m:
        level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        k = level * per_level + j
        return f"output_blocks.{k}.0.{resnet(rest)}" if kind == "resnets" else f"output_blocks.{k}.1.{rest}"
    m = re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(weight|bias)", key)
    if m:
        level = int(m[1])
        # after the resnet (.0) and, in a cross-attention block, the attention (.1)
        slot = 2 if "CrossAttn" in config["up_block_types"][level] else 1
        return f"output_blocks.{level * per_level + lpb}.{slot}.conv.{m[2]}"
    raise _unknown("UNet", key)


def vae_key_to_ldm(key: str, config) -> str:
    """The LDM name (without ``first_stage_model.``) of a diffusers AutoencoderKL key."""
    if key.split(".")[0] in ("quant_conv", "post_quant_conv"):
        return key
    part, _, rest = key.partition(".")  # encoder / decoder
    if part not in ("encoder", "decoder"):
        raise _unknown("VAE", key)
    name, _, param = rest.rpartition(".")
    if name in _VAE_TOP:
        return f"{part}.{_VAE_TOP[name]}.{param}"
    n_levels = len(config["up_block_types"] if part == "decoder" else config["down_block_types"])
    m = re.fullmatch(r"(down|up)_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest)
    if m:
        kind, i, j, tail = m[1], int(m[2]), int(m[3]), m[4]
        level = i if kind == "down" else n_levels - 1 - i
        return f"{part}.{kind}.{level}.block.{j}.{tail.replace('conv_shortcut', 'nin_shortcut')}"
    m = re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(weight|bias)", rest)
    if m:
        return f"{part}.down.{m[1]}.downsample.conv.{m[2]}"
    m = re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(weight|bias)", rest)
    if m:
        return f"{part}.up.{n_levels - 1 - int(m[1])}.upsample.conv.{m[2]}"
    m = re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", rest)
    if m:
        return f"{part}.mid.block_{int(m[1]) + 1}.{m[2].replace('conv_shortcut', 'nin_shortcut')}"
    m = re.fullmatch(r"mid_block\.attentions\.0\.(.+)\.(weight|bias)", rest)
    if m and m[1] in _VAE_ATTN:
        return f"{part}.mid.attn_1.{_VAE_ATTN[m[1]]}.{m[2]}"
    raise _unknown("VAE", key)


def clip_key_to_ldm(key: str) -> str:
    """The LDM name (without ``cond_stage_model.transformer.``) of a CLIPTextModel key.

    transformers >= 5.6 flattened CLIPTextModel (``embeddings.…``); older ones nest it under
    ``text_model.``. The released checkpoints have ``text_model.``.
    """
    return key if key.startswith("text_model.") else f"text_model.{key}"


def to_original_state_dict(pipe) -> dict[str, torch.Tensor]:
    """The pipeline's UNet, VAE and CLIP text encoder weights under their original (LDM) names."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    if not isinstance(getattr(pipe, "unet", None), UNet2DConditionModel) or \
            not isinstance(getattr(pipe, "vae", None), AutoencoderKL):
        raise MobileSDError(f"save_single_file: {type(pipe).__name__} is not an SD pipeline",
                            "pass a StableDiffusionPipeline")
    if not isinstance(getattr(pipe, "text_encoder", None), CLIPTextModel):
        raise MobileSDError(
            f"save_single_file: text encoder {type(getattr(pipe, 'text_encoder', None)).__name__} is not a "
            "CLIPTextModel", "only SD 1.x pipelines (CLIP ViT-L text encoder layout) can be written")
    ucfg = pipe.unet.config
    if ucfg.get("addition_embed_type") or ucfg.get("class_embed_type") or ucfg.get("num_class_embeds"):
        raise MobileSDError("save_single_file: UNets with class/addition embeddings have no SD 1.x layout",
                            "pass a plain text-to-image SD 1.x pipeline")
    out: dict[str, torch.Tensor] = {}

    def put(name: str, tensor: torch.Tensor, source: str):
        if name in out:
            raise MobileSDError(f"save_single_file: two parameters map to {name!r} (the last one: {source})",
                                "this UNet/VAE layout has no unambiguous LDM layout")
        out[name] = tensor.detach().contiguous()

    for key, t in pipe.unet.state_dict().items():
        put(UNET_PREFIX + unet_key_to_ldm(key, ucfg), t, key)
    for key, t in pipe.vae.state_dict().items():
        name = vae_key_to_ldm(key, pipe.vae.config)
        if ".mid.attn_1." in name and name.endswith(".weight") and t.ndim == 2:
            t = t.reshape(*t.shape, 1, 1)  # the LDM VAE attention is 1x1 convolutions
        put(VAE_PREFIX + name, t, key)
    for key, t in pipe.text_encoder.state_dict().items():
        put(CLIP_PREFIX + clip_key_to_ldm(key), t, key)
    return out


def save_single_file(pipe, path: str | Path, fmt: str = "safetensors", metadata: dict[str, str] | None = None) -> Path:
    """Write ``pipe`` (SD 1.x, or SD 2.x-shaped with a CLIP text encoder) as one original-format checkpoint.

    fmt "safetensors" (the default); "ckpt" writes a torch.save pickle ({"state_dict": ...}, like the
    released .ckpt files) and exists only to test that pickle checkpoints are refused.
    metadata: extra safetensors header entries (strings), e.g. SAI ModelSpec ``modelspec.architecture`` or
    kohya-ss ``ss_v_parameterization``, as trainers write them: what tells SD 2.x variants apart.
    """
    path = Path(path)
    state = to_original_state_dict(pipe)
    path.parent.mkdir(parents=True, exist_ok=True)
    if metadata and fmt != "safetensors":
        raise MobileSDError("save_single_file: metadata needs the safetensors format", 'use fmt="safetensors"')
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path), metadata={"format": "pt", **{k: str(v) for k, v in (metadata or {}).items()}})
    elif fmt == "ckpt":
        torch.save({"state_dict": state}, str(path))
    else:
        raise MobileSDError(f"save_single_file: unknown format {fmt!r}", 'use "safetensors" (or "ckpt" in tests)')
    return path
