"""split_einsum_attention: the Neural Engine layout of the UNet's transformer blocks keeps the numerics."""

import pytest
import torch
from torch import nn

from mobilesd.passes import PASSES, apply_passes

TINY = {"sample_size": 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 1, "block_out_channels": (32, 64),
            "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"), "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
            "norm_num_groups": 8}


def _unet(**kw):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(**dict(TINY, **kw)).eval()


def _before_after(unet, ctx_dim, t=500):
    out = apply_passes(unet, ["split_einsum_attention"])
    torch.manual_seed(1)
    x, ctx = torch.randn(2, 4, 8, 8), torch.randn(2, 77, ctx_dim)
    with torch.no_grad():
        return unet(x, t, ctx).sample, out(x, t, ctx).sample, out


@pytest.mark.parametrize("kw", [
    {"cross_attention_dim": 32, "attention_head_dim": 4},                                  # SD 1.x: conv proj_in
    {"cross_attention_dim": 48, "attention_head_dim": (2, 4), "use_linear_projection": True},  # SD 2.x: linear proj_in
])
def test_split_einsum_matches_diffusers_attention(kw):
    unet = _unet(**kw)
    ref, got, out = _before_after(unet, kw["cross_attention_dim"])
    # stated tolerance: float32 rounding (the function is the same, the summation order is not)
    assert (got - ref).abs().max() < 1e-5 and (got - ref).norm() / ref.norm() < 1e-5
    kinds = {type(m).__name__ for m in out.modules()}
    assert "Transformer2DANE" in kinds and "Transformer2DModel" not in kinds
    assert "Transformer2DModel" in {type(m).__name__ for m in unet.modules()}, "the original must be left alone"
    # parameters are the original tensors, under the original names (quantized-weight tables still apply)
    mine, theirs = dict(out.named_parameters()), dict(unet.named_parameters())
    assert mine.keys() == theirs.keys() and all(mine[k] is theirs[k] for k in mine)


def test_split_einsum_layout_is_channels_first_4d(tiny_pipe):
    """Every activation inside the rewritten transformer blocks is (B, C, 1, S) and linears are 1x1 convs."""
    from mobilesd.passes.split_einsum import AttentionANE, LayerNormANE

    out = apply_passes(tiny_pipe.unet, ["split_einsum_attention"])
    shapes = []

    def hook(mod, args, result):
        shapes.append((type(mod).__name__, tuple(args[0].shape), tuple(result.shape)))

    for m in out.modules():
        if isinstance(m, (AttentionANE, LayerNormANE)):
            m.register_forward_hook(hook)
    with torch.no_grad():
        out(torch.randn(2, 4, 8, 8), 10, torch.randn(2, 77, 32))
    assert shapes and all(len(s) == 4 and s[2] == 1 for _, a, r in shapes for s in (a, r))


def test_layer_norm_over_channels_matches_layer_norm():
    from mobilesd.passes.split_einsum import LayerNormANE

    torch.manual_seed(0)
    ln = nn.LayerNorm(48)
    nn.init.normal_(ln.weight)
    nn.init.normal_(ln.bias)
    x = torch.randn(2, 48, 1, 77) * 3 + 1                  # (B, C, 1, S)
    ref = ln(x.squeeze(2).transpose(1, 2)).transpose(1, 2).unsqueeze(2)
    assert torch.allclose(LayerNormANE(ln)(x), ref, atol=1e-5)


def test_split_einsum_is_registered_and_composes_with_gelu(tiny_pipe):
    assert "split_einsum_attention" in PASSES
    unet = tiny_pipe.unet
    torch.manual_seed(0)
    x, ctx = torch.randn(2, 4, 8, 8), torch.randn(2, 77, 32)
    with torch.no_grad():
        ref = apply_passes(unet, ["approximate_gelu"])(x, 10, ctx).sample
        got = apply_passes(unet, ["approximate_gelu", "split_einsum_attention"])(x, 10, ctx).sample
    assert (got - ref).abs().max() < 1e-5


def test_unsupported_block_is_a_clear_error():
    from diffusers.models.attention import BasicTransformerBlock

    from mobilesd.errors import MobileSDError
    from mobilesd.passes.split_einsum import BasicTransformerBlockANE

    block = BasicTransformerBlock(32, 4, 8, cross_attention_dim=32, norm_type="ada_norm", num_embeds_ada_norm=10)
    with pytest.raises(MobileSDError, match="norm type"):
        BasicTransformerBlockANE(block)
    with pytest.raises(MobileSDError, match="1x1"):
        from diffusers.models.transformers.transformer_2d import Transformer2DModel

        from mobilesd.passes.split_einsum import Transformer2DANE

        tm = Transformer2DModel(4, 8, in_channels=32, norm_num_groups=8, cross_attention_dim=32)
        tm.proj_in = nn.Conv2d(32, 32, 3, padding=1)
        Transformer2DANE(tm)
