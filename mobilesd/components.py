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
        self.post_quant_conv = vae.post_quant_conv
        self.decoder = vae.decoder
        self.inv_scale = 1.0 / float(vae.config.scaling_factor)
        shift = vae.config.get("shift_factor", None)
        if shift:
            raise MobileSDError("VAE shift_factor is not supported (not an SD 1.x/2.x VAE)")

    def forward(self, latent):
        z = self.post_quant_conv(latent * self.inv_scale)
        image = self.decoder(z)
        # == (image / 2 + 0.5).clamp(0, 1); a clamp to [0, 1] lowers to RELU_0_TO_1, which the GPU
        # delegate rejects, while hardtanh's [-1, 1] lowers to the supported RELU_N1_TO_1.
        image = torch.nn.functional.hardtanh(image) * 0.5 + 0.5
        return image.permute(0, 2, 3, 1)


# ---- the UNet, cut at block boundaries -------------------------------------------------------------

def unet_stages(unet) -> list[str]:
    """The UNet as a sequence of stages: stem, down_0.., mid, up_0.., head."""
    return (["stem"] + [f"down_{i}" for i in range(len(unet.down_blocks))] + ["mid"]
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


def _residual_count_after(unet, stage_index: int) -> int:
    """How many skip tensors are waiting on the stack after stage ``stage_index``."""
    n = 0
    for stage in unet_stages(unet)[: stage_index + 1]:
        if stage == "stem":
            n = 1
        elif stage.startswith("down_"):
            block = unet.down_blocks[int(stage[5:])]
            n += len(block.resnets) + (1 if block.downsamplers is not None else 0)
        elif stage.startswith("up_"):
            n -= len(unet.up_blocks[int(stage[3:])].resnets)
    return n


def stage_weight_bytes(unet) -> list[int]:
    out = []
    for stage in unet_stages(unet):
        out.append(sum(p.numel() * p.element_size() for m in _stage_module(unet, stage) for p in m.parameters()))
    return out


class UNetChunk(nn.Module):
    """Stages [start, stop) of the UNet as one graph.

    Inputs: the first chunk takes (sample, timestep, encoder_hidden_states); a later one takes the
    running hidden state, the time embedding and the waiting skip tensors from the chunk before it, plus
    encoder_hidden_states. The last chunk returns the noise prediction (or v); the others return
    (hidden, temb, skip_0, ...).
    """

    def __init__(self, unet, start: int, stop: int):
        super().__init__()
        stages = unet_stages(unet)
        if not (0 <= start < stop <= len(stages)):
            raise ValueError(f"bad stage range {start}:{stop}")
        self.unet = unet
        self.stages = stages[start:stop]
        self.first, self.last = start == 0, stop == len(stages)
        self.n_res_in = 0 if self.first else _residual_count_after(unet, start - 1)
        self.n_res_out = 0 if self.last else _residual_count_after(unet, stop - 1)
        self.needs_text = True  # every chunk takes the text states; unused inputs are cheap and keep I/O uniform

    def input_names(self) -> list[str]:
        if self.first:
            return ["sample", "timestep", "encoder_hidden_states"]
        return ["hidden", "temb"] + [f"skip_{i}" for i in range(self.n_res_in)] + ["encoder_hidden_states"]

    def output_names(self) -> list[str]:
        if self.last:
            return ["noise_pred"]
        return ["hidden", "temb"] + [f"skip_{i}" for i in range(self.n_res_out)]

    def forward(self, *args, **kwargs):
        names = self.input_names()
        values = dict(zip(names, args))
        values.update(kwargs)
        ctx = values["encoder_hidden_states"]
        unet = self.unet
        if self.first:
            h, emb, skips = values["sample"], None, []
        else:
            h, emb = values["hidden"], values["temb"]
            skips = [values[f"skip_{i}"] for i in range(self.n_res_in)]
        for stage in self.stages:
            if stage == "stem":
                # timestep has shape [1]: its embedding broadcasts over the CFG batch in every resnet
                # (an explicit expand would become BROADCAST_TO, which the GPU delegate rejects).
                t = values["timestep"].reshape(-1)
                emb = unet.time_embedding(unet.time_proj(t).to(h.dtype))
                h = unet.conv_in(h)
                skips = [h]
            elif stage.startswith("down_"):
                block = unet.down_blocks[int(stage[5:])]
                if getattr(block, "has_cross_attention", False):
                    h, res = block(hidden_states=h, temb=emb, encoder_hidden_states=ctx)
                else:
                    h, res = block(hidden_states=h, temb=emb)
                skips.extend(res)
            elif stage == "mid":
                if getattr(unet.mid_block, "has_cross_attention", False):
                    h = unet.mid_block(h, emb, encoder_hidden_states=ctx)
                else:
                    h = unet.mid_block(h, emb)
            elif stage.startswith("up_"):
                i = int(stage[3:])
                block = unet.up_blocks[i]
                n = len(block.resnets)
                res, skips = tuple(skips[-n:]), skips[:-n]
                upsample_size = None  # sizes are static (powers of two), as in diffusers' default path
                if getattr(block, "has_cross_attention", False):
                    h = block(hidden_states=h, temb=emb, res_hidden_states_tuple=res,
                              encoder_hidden_states=ctx, upsample_size=upsample_size)
                else:
                    h = block(hidden_states=h, temb=emb, res_hidden_states_tuple=res, upsample_size=upsample_size)
            elif stage == "head":
                if unet.conv_norm_out is not None:
                    h = unet.conv_act(unet.conv_norm_out(h))
                h = unet.conv_out(h)
        if self.last:
            return h
        return (h, emb, *skips)


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
    h = height or pipe.unet.config.sample_size * factor
    w = width or pipe.unet.config.sample_size * factor
    if h % (factor * 2 ** (len(pipe.unet.down_blocks) - 1)) or w % (factor * 2 ** (len(pipe.unet.down_blocks) - 1)):
        raise MobileSDError(f"image size {h}x{w} does not divide into the UNet's down-sampling steps",
                            f"use a multiple of {factor * 2 ** (len(pipe.unet.down_blocks) - 1)}")
    return pipe.unet.config.in_channels, h // factor, w // factor


def unet_components(pipe, chunks: list[tuple[int, int]], batch: int = 2, height=None, width=None,
                    seed: int = 0) -> list[Component]:
    """One Component per chunk; example inputs of later chunks come from running the earlier ones."""
    unet = pipe.unet.eval()
    c, h, w = latent_shape(pipe, height, width)
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, c, h, w, generator=g)
    ctx = torch.randn(batch, pipe.tokenizer.model_max_length if pipe.tokenizer is not None else 77,
                      unet.config.cross_attention_dim, generator=g)
    timestep = torch.tensor([500.0])
    comps: list[Component] = []
    carried: list[torch.Tensor] = []
    for k, (start, stop) in enumerate(chunks):
        chunk = UNetChunk(unet, start, stop).eval()
        names = chunk.input_names()
        if chunk.first:
            values = [sample, timestep, ctx]
        else:
            values = carried + [ctx]
        inputs = dict(zip(names, values))
        name = "unet" if len(chunks) == 1 else f"unet_chunk{k}"
        comp = Component(name, "unet", chunk, inputs, chunk.output_names(),
                         meta={"chunk_index": k, "stages": chunk.stages, "batch": batch})
        carried = comp.run(inputs)
        comps.append(comp)
    return comps


def vae_decoder_component(pipe, height=None, width=None, seed: int = 0) -> Component:
    c, h, w = latent_shape(pipe, height, width)
    latent = torch.randn(1, c, h, w, generator=torch.Generator().manual_seed(seed)) * pipe.vae.config.scaling_factor
    return Component("vae_decoder", "vae_decoder", VAEDecoder(pipe.vae.eval()).eval(), {"latent": latent}, ["image"])
