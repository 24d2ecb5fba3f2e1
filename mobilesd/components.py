"""What the phone runs: the text encoder, one UNet denoising step (optionally in chunks) and the VAE decoder.

Each component is a plain ``nn.Module`` with named tensor inputs and example inputs, so every converter
(TFLite, Core ML, ONNX) sees the same thing. Only the top level of the UNet is re-authored (to cut it
into chunks at block boundaries); the diffusers blocks inside are used as they are.

CFG: the UNet graph takes a batch of 2 (unconditional + conditional) by default, so one call per step
reads the weights once for both halves; on a phone GPU the UNet step is largely weight-bandwidth and
dispatch bound, so this beats two batch-1 calls. ``unet_batch=1`` gives a graph for two calls (half the
activation memory, for devices where that is the limit, and for guidance 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from mobilesd.errors import MobileSDError


@dataclass
class Component:
    """A module ready for conversion: names of its inputs/outputs and example inputs (by name)."""

    name: str                     # file stem in the bundle: text_encoder, unet, unet_chunk0, vae_decoder
    role: str                     # text_encoder | unet | vae_decoder
    module: nn.Module
    example_inputs: dict[str, torch.Tensor]
    output_names: list[str]
    meta: dict = field(default_factory=dict)

    def run(self, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        with torch.no_grad():
            out = self.module(**inputs)
        return list(out) if isinstance(out, (tuple, list)) else [out]

    def weight_bytes(self) -> int:
        seen, total = set(), 0
        for t in list(self.module.parameters()) + list(self.module.buffers()):
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
        return total


class TextEncoder(nn.Module):
    """token ids [B, 77] (int32) -> last hidden states [B, 77, D], what SD's UNet cross-attends to."""

    def __init__(self, text_encoder):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids):
        return self.text_encoder(input_ids.to(torch.long), return_dict=False)[0]


class VAEDecoder(nn.Module):
    """latent [B, 4, h, w] (as the sampler produces it, still scaled) -> image [B, H, W, 3] in [0, 1].

    The 1/scaling_factor, the [-1, 1] -> [0, 1] mapping and NHWC output are in the graph, so an app only
    multiplies by 255.
    """

    def __init__(self, vae):
        super().__init__()
        check_vae(vae)
        self.post_quant_conv = vae.post_quant_conv  # None with use_post_quant_conv=False, as diffusers skips it
        self.decoder = vae.decoder
        self.inv_scale = 1.0 / float(vae.config.scaling_factor)

    def forward(self, latent):
        z = latent * self.inv_scale
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        image = self.decoder(z)
        # == (image / 2 + 0.5).clamp(0, 1); a clamp to [0, 1] lowers to RELU_0_TO_1, which the GPU
        # delegate rejects, while hardtanh's [-1, 1] lowers to the supported RELU_N1_TO_1.
        image = torch.nn.functional.hardtanh(image) * 0.5 + 0.5
        return image.permute(0, 2, 3, 1)


class TinyVAEDecoder(nn.Module):
    """The decoder of a diffusers ``AutoencoderTiny`` (TAESD architecture), with VAEDecoder's I/O contract:
    latent [B, 4, h, w] as the sampler produces it -> image [B, H, W, 3] in [0, 1].

    TAESD's conventions differ from AutoencoderKL's: it decodes the sampler's latent directly (its
    ``scaling_factor`` is 1.0, where SD's VAE divides by 0.18215), its decoder clamps the latent with
    tanh(x / 3) * 3, and it returns [-1, 1] (diffusers maps TAESD's [0, 1] output there). So the graph divides by
    the tiny VAE's own scaling_factor, never SD's, then maps [-1, 1] to [0, 1] as VAEDecoder does.
    """

    def __init__(self, tiny_vae):
        super().__init__()
        check_tiny_vae(tiny_vae)
        self.decoder = tiny_vae.decoder
        self.inv_scale = 1.0 / float(tiny_vae.config.scaling_factor)

    def forward(self, latent):
        z = latent * self.inv_scale if self.inv_scale != 1.0 else latent
        image = self.decoder(z)
        image = torch.nn.functional.hardtanh(image) * 0.5 + 0.5   # == (image / 2 + 0.5).clamp(0, 1), GPU-friendly
        return image.permute(0, 2, 3, 1)


def tiny_vae_scale_factor(tiny_vae) -> int:
    """Image pixels per latent pixel of an AutoencoderTiny decoder: one upsampling between its blocks."""
    n = len(tiny_vae.config.decoder_block_out_channels)
    return int(tiny_vae.config.upsampling_scaling_factor) ** (n - 1)


def check_tiny_vae(tiny_vae) -> None:
    from diffusers import AutoencoderTiny

    if not isinstance(tiny_vae, AutoencoderTiny):
        raise MobileSDError(f"--vae-decoder tiny=PATH must be a diffusers AutoencoderTiny, not a {type(tiny_vae).__name__}",
                            "pass a TAESD-style AutoencoderTiny folder (config.json + diffusion_pytorch_model.safetensors)")
    if tiny_vae.config.get("shift_factor"):
        raise _unsupported("AutoencoderTiny shift_factor", tiny_vae.config.shift_factor,
                           "StableDiffusionPipeline decodes without a shift", "use an SD 1.x/2.x TAESD (shift_factor 0)")


def load_tiny_vae(path, pipe=None, allow_pickle: bool = False):
    """A diffusers AutoencoderTiny folder (safetensors), checked against ``pipe``'s latent space when given: the
    same latent channels and the same image size per latent pixel as the pipeline's VAE."""
    from pathlib import Path

    from diffusers import AutoencoderTiny

    path = Path(path).expanduser()
    if not (path / "config.json").is_file():
        raise MobileSDError(f"tiny decoder {path} is not a diffusers model folder (no config.json)",
                            "pass --vae-decoder tiny=DIR with DIR holding an AutoencoderTiny (config.json + "
                            "diffusion_pytorch_model.safetensors)")
    cls = json_load(path / "config.json").get("_class_name")
    if cls != "AutoencoderTiny":
        raise MobileSDError(f"tiny decoder {path} holds a {cls}, not an AutoencoderTiny",
                            "pass a TAESD-style AutoencoderTiny folder")
    has_safe = (path / "diffusion_pytorch_model.safetensors").is_file()
    if not has_safe and not allow_pickle:
        raise MobileSDError(f"tiny decoder {path} has no safetensors weights (pickle files can execute code)",
                            "convert it to diffusion_pytorch_model.safetensors, or pass --allow-pickle if you trust it")
    try:
        vae = AutoencoderTiny.from_pretrained(str(path), use_safetensors=has_safe).eval()
    except Exception as exc:
        raise MobileSDError(f"could not load the tiny decoder {path}: {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}",
                            "check that the folder is a complete AutoencoderTiny (re-download or re-save it)") from exc
    check_tiny_vae(vae)
    if pipe is not None:
        want_c = pipe.unet.config.in_channels
        if vae.config.latent_channels != want_c:
            raise _unsupported("tiny decoder latent_channels", vae.config.latent_channels,
                               f"the UNet makes {want_c}-channel latents", "use a tiny decoder made for this model")
        if tiny_vae_scale_factor(vae) != pipe.vae_scale_factor:
            raise _unsupported("tiny decoder upsampling", tiny_vae_scale_factor(vae),
                               f"the model's VAE decodes {pipe.vae_scale_factor} image pixels per latent pixel",
                               "use a tiny decoder made for this model (TAESD for SD 1.x / 2.x: factor 8)")
    return vae


def json_load(path):
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MobileSDError(f"{path} is not valid JSON ({exc})", "re-download or re-save the model") from exc


# ---- the UNet, cut at block boundaries -------------------------------------------------------------

def unet_stages(unet) -> list[str]:
    """The UNet as a sequence of stages: stem, down_0.., mid (unless mid_block_type is None), up_0.., head."""
    return (["stem"] + [f"down_{i}" for i in range(len(unet.down_blocks))]
            + (["mid"] if unet.mid_block is not None else [])
            + [f"up_{i}" for i in range(len(unet.up_blocks))] + ["head"])


def _stage_module(unet, stage: str) -> list[nn.Module]:
    if stage == "stem":
        return [unet.time_proj, unet.time_embedding, unet.conv_in]
    if stage == "head":
        return [m for m in (unet.conv_norm_out, unet.conv_act, unet.conv_out) if m is not None]
    if stage == "mid":
        return [unet.mid_block]
    kind, i = stage.split("_")
    return [(unet.down_blocks if kind == "down" else unet.up_blocks)[int(i)]]


def _stage_pushes_pops(unet) -> list[tuple[list[int], list[int]]]:
    """For each stage, the global stack positions of the skip tensors it pushes and pops.

    All pushes (stem, down blocks) come before all pops (up blocks), so a position names one tensor.
    """
    out, depth = [], 0
    for stage in unet_stages(unet):
        push, pop = [], []
        if stage == "stem":
            push = [0]
            depth = 1
        elif stage.startswith("down_"):
            block = unet.down_blocks[int(stage[5:])]
            n = len(block.resnets) + (1 if block.downsamplers is not None else 0)
            push = list(range(depth, depth + n))
            depth += n
        elif stage.startswith("up_"):
            n = len(unet.up_blocks[int(stage[3:])].resnets)
            pop = list(range(depth - 1, depth - n - 1, -1))
            depth -= n
        out.append((push, pop))
    return out


def stage_weight_bytes(unet) -> list[int]:
    out = []
    for stage in unet_stages(unet):
        out.append(sum(p.numel() * p.element_size() for m in _stage_module(unet, stage) for p in m.parameters()))
    return out


class UNetChunk(nn.Module):
    """Stages [start, stop) of the UNet as one graph.

    Chunks pass named tensors: ``hidden`` (the running activation), ``temb`` (the time embedding, made by
    the stem) and ``skip_<p>`` (the skip tensor pushed at stack position p, consumed by an up block).
    A chunk's inputs are the names it reads that an earlier chunk made; its outputs are only tensors it
    computes and a later chunk reads. No output merely repeats an input: the GPU delegate returns garbage
    for such pass-through outputs, so the app keeps every named tensor until the chunk that needs it.
    When a skip is the very tensor the chunk ends on (a down block's last output), it is not a second
    output but an alias of ``hidden`` (``aliases()``).
    """

    def __init__(self, unet, start: int, stop: int):
        super().__init__()
        check_unet(unet)
        stages = unet_stages(unet)
        if not (0 <= start < stop <= len(stages)):
            raise ValueError(f"bad stage range {start}:{stop}")
        self.stages = stages[start:stop]
        self.first, self.last = start == 0, stop == len(stages)
        # Register only this chunk's modules: the graph (and a worker's memory) holds just its weights.
        self.parts = nn.ModuleDict()
        for stage in self.stages:
            if stage == "stem":
                self.parts.update({"time_proj": unet.time_proj, "time_embedding": unet.time_embedding, "conv_in": unet.conv_in})
                if unet.time_embed_act is not None:  # time_embedding_act_fn
                    self.parts["time_embed_act"] = unet.time_embed_act
            elif stage == "head":
                self.parts.update({"conv_out": unet.conv_out})
                if unet.conv_norm_out is not None:
                    self.parts.update({"conv_norm_out": unet.conv_norm_out, "conv_act": unet.conv_act})
            else:
                self.parts[stage] = _stage_module(unet, stage)[0]
        pp = _stage_pushes_pops(unet)
        self._pp = pp[start:stop]
        pushed_before = {p for push, _ in pp[:start] for p in push}
        popped_after = {p for _, pop in pp[stop:] for p in pop}
        mine_push = [p for push, _ in self._pp for p in push]
        mine_pop = [p for _, pop in self._pp for p in pop]
        self.skip_in = sorted(p for p in mine_pop if p in pushed_before)
        self.skip_out = sorted(p for p in mine_push if p in popped_after)
        blocks = [s for s in self.stages if s.startswith(("down_", "up_")) or s == "mid"]
        self.needs_temb = bool(blocks)
        self.makes_temb = "stem" in self.stages
        self.temb_out = self.makes_temb and not self.last and any(
            s.startswith(("down_", "up_")) or s == "mid" for s in stages[stop:])
        self.needs_text = any(getattr(self.parts[s], "has_cross_attention", False) for s in blocks)
        self.center_input = bool(unet.config.get("center_input_sample", False))

    def input_names(self) -> list[str]:
        names = ["sample", "timestep"] if self.first else ["hidden"]
        if self.needs_temb and not self.makes_temb:
            names.append("temb")
        names += [f"skip_{p}" for p in self.skip_in]
        if self.needs_text:
            names.append("encoder_hidden_states")
        return names

    def _all_outputs(self) -> list[str]:
        if self.last:
            return ["noise_pred"]
        return ["hidden"] + (["temb"] if self.temb_out else []) + [f"skip_{p}" for p in self.skip_out]

    def aliases(self) -> dict[str, str]:
        """{skip name: "hidden"} for a skip output that is the chunk's final activation itself: a chunk
        ending on the stem or a down block ends on its own last push (diffusers' down blocks return
        their last skip tensor as the hidden state)."""
        last = self.stages[-1]
        if self.last or not (last == "stem" or last.startswith("down_")):
            return {}
        pushed = self._pp[-1][0]
        return {f"skip_{pushed[-1]}": "hidden"} if pushed and pushed[-1] in self.skip_out else {}

    def output_names(self) -> list[str]:
        return [n for n in self._all_outputs() if n not in self.aliases()]

    def forward(self, **values):
        parts = self.parts
        ctx = values.get("encoder_hidden_states")
        emb = values.get("temb")
        h = values["sample"] if self.first else values["hidden"]
        skips = {p: values[f"skip_{p}"] for p in self.skip_in}
        for stage, (push, pop) in zip(self.stages, self._pp):
            if stage == "stem":
                # timestep has shape [1]: its embedding broadcasts over the CFG batch in every resnet
                # (an explicit expand would become BROADCAST_TO, which the GPU delegate rejects).
                t = values["timestep"].reshape(-1)
                emb = parts["time_embedding"](parts["time_proj"](t).to(h.dtype))
                if "time_embed_act" in parts:
                    emb = parts["time_embed_act"](emb)
                if self.center_input:  # center_input_sample, as UNet2DConditionModel.forward
                    h = 2 * h - 1.0
                h = parts["conv_in"](h)
                skips[0] = h
            elif stage.startswith("down_"):
                block = parts[stage]
                if getattr(block, "has_cross_attention", False):
                    h, res = block(hidden_states=h, temb=emb, encoder_hidden_states=ctx)
                else:
                    h, res = block(hidden_states=h, temb=emb)
                skips.update(zip(push, res))
            elif stage == "mid":
                block = parts[stage]
                if getattr(block, "has_cross_attention", False):
                    h = block(h, emb, encoder_hidden_states=ctx)
                else:
                    h = block(h, emb)
            elif stage.startswith("up_"):
                block = parts[stage]
                res = tuple(skips.pop(p) for p in reversed(pop))  # oldest first, as diffusers slices
                if getattr(block, "has_cross_attention", False):
                    h = block(hidden_states=h, temb=emb, res_hidden_states_tuple=res, encoder_hidden_states=ctx)
                else:
                    h = block(hidden_states=h, temb=emb, res_hidden_states_tuple=res)
            elif stage == "head":
                if "conv_norm_out" in parts:
                    h = parts["conv_act"](parts["conv_norm_out"](h))
                h = parts["conv_out"](h)
        if self.last:
            return h
        produced = {"hidden": h, "temb": emb, **{f"skip_{p}": skips[p] for p in self.skip_out}}
        for alias in self.aliases():
            assert produced[alias] is h, f"{alias} should be the chunk's final activation"
        return tuple(produced[n] for n in self.output_names())


def run_unet_chunks(chunks, specs, sample, timestep, context, run, on_stage=None, extra: dict | None = None):
    """Chain chunks through a dict of named tensors (what an app does).

    ``specs``: per chunk (input_names, output_names, aliases); ``run(i, inputs) -> list of outputs``;
    ``extra``: further named inputs (``step_index`` of graphs with simulated activation quantization).
    """
    import time

    state = {"sample": sample, "timestep": timestep, "encoder_hidden_states": context, **(extra or {})}
    out = None
    for i, (inputs, outputs, aliases) in enumerate(specs):
        t0 = time.perf_counter()
        out = run(i, {n: state[n] for n in inputs})
        if on_stage is not None:
            on_stage(f"unet_chunk_{i}", time.perf_counter() - t0)
        state.update(zip(outputs, out))
        for alias, source in aliases.items():
            state[alias] = state[source]
    return out[0]


def plan_unet_chunks(unet, n_chunks: int | None = None, max_bytes: int | None = None,
                     bytes_per_param: float = 4.0) -> list[tuple[int, int]]:
    """Stage ranges for the chunks: ``n_chunks`` balanced by weight size, or the fewest chunks whose
    weights (at ``bytes_per_param``) each stay under ``max_bytes``. Raises MobileSDError when impossible."""
    sizes = [b / 4.0 * bytes_per_param for b in stage_weight_bytes(unet)]  # params stored as fp32 here
    n_stages = len(sizes)
    if n_chunks is not None and not (1 <= n_chunks <= n_stages):
        raise MobileSDError(f"--unet-chunks {n_chunks} cannot fit: this UNet has {n_stages} block-boundary stages",
                            f"choose between 1 and {n_stages} chunks")
    if max_bytes is not None and max(sizes) > max_bytes:
        worst = unet_stages(unet)[sizes.index(max(sizes))]
        raise MobileSDError(
            f"chunk size limit {max_bytes / 2**20:.1f} MiB cannot fit: stage {worst} alone is "
            f"{max(sizes) / 2**20:.1f} MiB and the UNet is only cut at block boundaries",
            "raise --unet-max-mb, or lower the weight precision (--precision fp16 / int8)")

    def best_split(n: int) -> tuple[float, list[tuple[int, int]]]:
        # minimise the largest chunk (linear partition, dynamic programming over stage prefixes)
        inf = float("inf")
        prefix = [0.0]
        for s in sizes:
            prefix.append(prefix[-1] + s)
        cost = [[inf] * (n_stages + 1) for _ in range(n + 1)]
        cut = [[0] * (n_stages + 1) for _ in range(n + 1)]
        cost[0][0] = 0.0
        for k in range(1, n + 1):
            for j in range(k, n_stages + 1):
                for i in range(k - 1, j):
                    c = max(cost[k - 1][i], prefix[j] - prefix[i])
                    if c < cost[k][j]:
                        cost[k][j], cut[k][j] = c, i
        ranges, j = [], n_stages
        for k in range(n, 0, -1):
            i = cut[k][j]
            ranges.append((i, j))
            j = i
        return cost[n][n_stages], ranges[::-1]

    if n_chunks is not None:
        worst, ranges = best_split(n_chunks)
        if max_bytes is not None and worst > max_bytes:
            raise MobileSDError(
                f"--unet-chunks {n_chunks} cannot fit under {max_bytes / 2**20:.1f} MiB per chunk "
                f"(largest chunk {worst / 2**20:.1f} MiB)", "use more chunks, or drop one of the two limits")
        return ranges
    if max_bytes is None:
        return [(0, n_stages)]
    for n in range(1, n_stages + 1):
        worst, ranges = best_split(n)
        if worst <= max_bytes:
            return ranges
    raise AssertionError("unreachable: a single stage fits")


# ---- what the components support: checked when a model is loaded, before any conversion ---------------

def _unsupported(field: str, value, why: str, fix: str) -> MobileSDError:
    return MobileSDError(f"{field}={value!r} is not supported: {why}", fix)


def check_unet(unet) -> None:
    """UNet2DConditionModel configs whose forward has parts the UNet chunks would leave out (a silent change
    of the function, which verification against the chunks could not see): refused, naming the field."""
    cfg = unet.config
    if cfg.get("time_cond_proj_dim") is not None:
        raise _unsupported("unet time_cond_proj_dim", cfg.time_cond_proj_dim,
                           "a guidance-embedding UNet (LCM-distilled) needs a timestep_cond input the graphs do not have",
                           "export a UNet without time_cond_proj_dim (e.g. SD 1.5 with an LCM-LoRA fused in)")
    if getattr(unet, "encoder_hid_proj", None) is not None:
        raise _unsupported("unet encoder_hid_dim", cfg.get("encoder_hid_dim"),
                           "SD 1.x/2.x UNets attend to the text encoder's states as they are, without a projection",
                           "use a UNet with encoder_hid_dim null (its cross_attention_dim equal to the text encoder's "
                           "hidden_size)")
    for name in ("class_embed_type", "addition_embed_type", "num_class_embeds"):
        if cfg.get(name):
            raise _unsupported(f"unet {name}", cfg.get(name), "an extra conditioning input SD 1.x/2.x does not have",
                               "mobilesd supports text-to-image SD 1.x / 2.x UNets (no class or added embeddings)")
    if cfg.in_channels != 4 or cfg.out_channels != cfg.in_channels:
        raise _unsupported("unet in_channels/out_channels", (cfg.in_channels, cfg.out_channels),
                           "an SD UNet takes and predicts 4 latent channels (out_channels 8 is a learned variance, "
                           "an inpainting UNet takes 9)", "pass a text-to-image SD 1.x / 2.x UNet (4 in, 4 out)")


def check_vae(vae) -> None:
    shift = vae.config.get("shift_factor", None)
    if shift:
        raise _unsupported("vae shift_factor", shift, "StableDiffusionPipeline decodes latent / scaling_factor "
                           "without a shift (an SD3/Flux-style VAE)", "use an SD 1.x/2.x VAE (shift_factor null)")


def check_time_phase_fp16(module: nn.Module, where: str) -> None:
    """A Fourier time embedding (``time_embedding_type="fourier"``: sin/cos of ``2 pi w t``, |w t| in the
    thousands for timesteps up to 999) has no significant digits left where the phase is computed in fp16
    (fp16 spacing is 0.5 to 1 there): refused for runtimes that do (the LiteRT GPU delegate). Measured on the
    tiny UNet: GPU-delegate output rel. L2 0.13 (0.05 allowed); Core ML with the phase in fp16 0.10, with it
    in fp32 (what the Core ML converter does) 1.6e-3."""
    from diffusers.models.embeddings import GaussianFourierProjection

    if any(isinstance(m, GaussianFourierProjection) for m in module.modules()):
        raise _unsupported("unet time_embedding_type", "fourier",
                           f"{where} computes its phase 2 pi w t in fp16, where timesteps up to 999 leave it no "
                           "significant digits", "export it with --target ios or --target onnx (they keep the "
                           "phase in fp32), or use a UNet with time_embedding_type 'positional' (SD's)")


def check_supported(pipe) -> None:
    """Everything the components need of a pipeline's configs, checked before any conversion starts: each
    error names the config field (component and key) and the fix. Components set to None are skipped."""
    unet, te, vae, tok = pipe.unet, getattr(pipe, "text_encoder", None), getattr(pipe, "vae", None), pipe.tokenizer
    check_unet(unet)
    if vae is not None:
        check_vae(vae)
        if vae.config.latent_channels != unet.config.in_channels:
            raise _unsupported("vae latent_channels", vae.config.latent_channels,
                               f"the UNet takes {unet.config.in_channels} channels (unet in_channels)",
                               "pair the UNet with the VAE it was trained with")
    if te is not None:
        hidden = te.config.hidden_size
        cross = unet.config.cross_attention_dim
        crosses = set(cross) if isinstance(cross, (list, tuple)) else {cross}
        if crosses != {hidden}:
            raise _unsupported("unet cross_attention_dim", cross,
                               f"the text encoder's states are {hidden} wide (text_encoder hidden_size)",
                               "pair the UNet with the text encoder it was trained with")
        n_tok = tok.model_max_length if tok is not None else 77
        if te.config.max_position_embeddings < n_tok:
            raise _unsupported("text_encoder max_position_embeddings", te.config.max_position_embeddings,
                               f"the tokenizer pads every prompt to {n_tok} tokens (tokenizer model_max_length)",
                               f"use a text encoder with max_position_embeddings >= {n_tok}")
        if tok is not None and te.config.vocab_size < len(tok):
            raise _unsupported("text_encoder vocab_size", te.config.vocab_size,
                               f"the tokenizer has {len(tok)} token ids, which would index past the embedding",
                               f"use a text encoder with vocab_size >= {len(tok)} (the CLIP tokenizer's)")


# ---- building the components of a pipeline ---------------------------------------------------------

def text_encoder_component(pipe, batch: int = 1) -> Component:
    te = pipe.text_encoder.eval()
    n_tok = pipe.tokenizer.model_max_length if pipe.tokenizer is not None else 77
    ids = torch.randint(0, te.config.vocab_size, (batch, n_tok), generator=torch.Generator().manual_seed(0))
    ids = ids.to(torch.int32)
    return Component("text_encoder", "text_encoder", TextEncoder(te).eval(), {"input_ids": ids},
                     ["last_hidden_state"], meta={"hidden_size": te.config.hidden_size, "max_length": n_tok})


def latent_shape(pipe, height: int | None = None, width: int | None = None) -> tuple[int, int, int]:
    factor = pipe.vae_scale_factor
    sample = pipe.unet.config.sample_size  # an int, or (height, width): diffusers accepts both
    sample_h, sample_w = (sample, sample) if isinstance(sample, int) else tuple(sample)
    h = height or sample_h * factor
    w = width or sample_w * factor
    if h % (factor * 2 ** (len(pipe.unet.down_blocks) - 1)) or w % (factor * 2 ** (len(pipe.unet.down_blocks) - 1)):
        raise MobileSDError(f"image size {h}x{w} does not divide into the UNet's down-sampling steps",
                            f"use a multiple of {factor * 2 ** (len(pipe.unet.down_blocks) - 1)}")
    return pipe.unet.config.in_channels, h // factor, w // factor


def unet_example_inputs(pipe, batch: int = 2, height=None, width=None, seed: int = 0) -> dict:
    """Fixed random UNet inputs (seeded): sample, timestep [1], encoder_hidden_states."""
    c, h, w = latent_shape(pipe, height, width)
    g = torch.Generator().manual_seed(seed)
    n_tok = pipe.tokenizer.model_max_length if pipe.tokenizer is not None else 77
    return {
        "sample": torch.randn(batch, c, h, w, generator=g),
        "encoder_hidden_states": torch.randn(batch, n_tok, pipe.unet.config.cross_attention_dim, generator=g),
        "timestep": torch.tensor([500.0]),
    }


def unet_components(pipe, chunks: list[tuple[int, int]], batch: int = 2, height=None, width=None,
                    seed: int = 0) -> list[Component]:
    """One Component per chunk; example inputs of later chunks come from running the earlier ones."""
    unet = pipe.unet.eval()
    state = unet_example_inputs(pipe, batch, height, width, seed)
    comps: list[Component] = []
    for k, (start, stop) in enumerate(chunks):
        chunk = UNetChunk(unet, start, stop).eval()
        inputs = {n: state[n] for n in chunk.input_names()}
        name = "unet" if len(chunks) == 1 else f"unet_chunk{k}"
        comp = Component(name, "unet", chunk, inputs, [], meta={"chunk_index": k, "stages": chunk.stages,
                                                                 "batch": batch, "stage_range": [start, stop]})
        comp.output_names = chunk.output_names()
        outs = comp.run(inputs)
        comp.meta["aliases"] = chunk.aliases()
        state.update(zip(comp.output_names, outs))
        for alias, source in chunk.aliases().items():
            state[alias] = state[source]
        comps.append(comp)
    return comps


def vae_decoder_component(pipe, height=None, width=None, seed: int = 0, tiny_vae=None) -> Component:
    """The full VAE decoder, or with ``tiny_vae`` (an AutoencoderTiny) the tiny one: same name, inputs and outputs
    (``meta.decoder`` says which)."""
    c, h, w = latent_shape(pipe, height, width)
    g = torch.Generator().manual_seed(seed)
    if tiny_vae is not None:
        # the sampler's latents have about unit variance (SD's scaling_factor is chosen for that), and TAESD reads
        # them as they are: verify on that range, where its tanh(x / 3) clamp is exercised
        return Component("vae_decoder", "vae_decoder", TinyVAEDecoder(tiny_vae.eval()).eval(),
                         {"latent": torch.randn(1, c, h, w, generator=g)}, ["image"], meta={"decoder": "tiny"})
    latent = torch.randn(1, c, h, w, generator=g) * pipe.vae.config.scaling_factor
    return Component("vae_decoder", "vae_decoder", VAEDecoder(pipe.vae.eval()).eval(), {"latent": latent}, ["image"],
                     meta={"decoder": "full"})


class StepIndexedChunk(nn.Module):
    """A UNet chunk with simulated activation quantization: its per-step step-size tables are indexed by a
    ``step_index`` input (float32 [1] holding an integer: the entry whose table timestep is nearest the running timestep), which
    this wrapper hands to the quantizers' shared StepContext before running the chunk."""

    def __init__(self, chunk: nn.Module, step_context):
        super().__init__()
        self.chunk = chunk
        self.step_context = step_context
        self.stages = chunk.stages

    def input_names(self) -> list[str]:
        return self.chunk.input_names() + ["step_index"]

    def output_names(self) -> list[str]:
        return self.chunk.output_names()

    def aliases(self) -> dict:
        return self.chunk.aliases()

    def forward(self, step_index, **inputs):
        self.step_context.index = step_index
        return self.chunk(**inputs)


def nearest_step_index(timesteps: list, t: float) -> np.ndarray:
    """The step_index input for timestep ``t``: the table entry with the nearest timestep (float32 [1] holding
    an integer: float, so the graph selects the entry with GPU-friendly float ops)."""
    return np.asarray([int(np.argmin(np.abs(np.asarray(timesteps, np.float64) - float(t))))], np.float32)


def make_unet_chunk(unet, start: int, stop: int, step_context=None) -> nn.Module:
    """A UNetChunk; step-indexed (a ``step_index`` input) when ``step_context`` is given: the StepContext of a
    quantized model whose simulated activation quantizers read per-step tables (export --simulate-activations)."""
    chunk = UNetChunk(unet, start, stop)
    return StepIndexedChunk(chunk, step_context) if step_context is not None else chunk
