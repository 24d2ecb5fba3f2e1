"""SVDQuant (mobilesd.quant.svdquant): smoothing, the low-rank branch + residual, folding, the saved model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mobilesd.quant.layers import QuantConv2d, QuantLinear, wrap
from mobilesd.quant.svdquant import (SVDQuantExport, decompose, export_module, fold_smoothing, layer_rank, low_rank,
                                     sharing_groups, smoothing_factors)

FAST = dict(calib_prompts=4, steps=4, batch_size=4, progress=False)


def _outlier_weight(o=32, i=48, k=None, seed=0):
    """A weight with a few dominant directions (what SVDQuant's branch absorbs) plus noise."""
    g = torch.Generator().manual_seed(seed)
    n = i * (k * k if k else 1)
    w = torch.randn(o, 3, generator=g) @ torch.randn(3, n, generator=g) * 2.0 + 0.05 * torch.randn(o, n, generator=g)
    return w.reshape(o, i, k, k) if k else w


@pytest.mark.parametrize("conv", [False, True], ids=["linear", "conv"])
def test_branch_plus_residual_reconstructs_the_smoothed_weight(conv):
    w = _outlier_weight(k=3 if conv else None)
    layer = nn.Conv2d(48, 32, 3, padding=1) if conv else nn.Linear(48, 32)
    layer.weight.data = w.clone()
    q = wrap(layer, 4)
    act_max = torch.rand(48, generator=torch.Generator().manual_seed(1)) * 10 + 0.1
    info = decompose({"l": q}, 8, {"l": act_max})["l"]
    lam = 1 / q.smooth
    shape = (1, -1) + (1,) * (w.dim() - 2)
    smoothed = w * lam.reshape(shape)
    # exact split: residual + up @ down == W diag(lambda)
    torch.testing.assert_close(q.weight + q.lowrank_delta(), smoothed, rtol=1e-5, atol=1e-5)
    # Eckart-Young: the residual's energy is that of the discarded singular values
    s = torch.linalg.svdvals(smoothed.double().reshape(32, -1))
    assert info["rank"] == 8
    assert float(q.weight.double().pow(2).sum()) == pytest.approx(float(s[8:].pow(2).sum()), rel=1e-4)
    # the quantized residual + branch is within half a step of the smoothed weight, element by element
    # (inside the clipping range: MSE scales may clip a few outliers of the residual)
    err = (q.weight_quant(q.weight) + q.lowrank_delta() - smoothed).abs()
    step = q.weight_quant.scale.expand_as(err)
    inside = (q.weight / step).abs() < 7
    assert torch.all(err[inside] <= step[inside] / 2 + 1e-6)
    # and it beats plain 4-bit quantization of the same weight by a wide margin (the outliers are in the branch)
    plain = wrap(layer, 4)
    plain_err = float((plain.weight_quant(w) - w).pow(2).sum())
    svd_err = float(((q.weight_quant(q.weight) + q.lowrank_delta()) / lam.reshape(shape) - w).pow(2).sum())
    assert svd_err < 0.25 * plain_err


def test_low_rank_is_the_truncated_svd():
    w = _outlier_weight(16, 24)
    down, up = low_rank(w, 5)
    assert down.shape == (5, 24) and up.shape == (16, 5)
    u, s, vh = torch.linalg.svd(w.double())
    torch.testing.assert_close((up @ down).double(), (u[:, :5] * s[:5]) @ vh[:5], rtol=1e-5, atol=1e-5)
    assert layer_rank(w, 32) == 4   # capped at a quarter of the smaller side (16)


@pytest.mark.parametrize("conv", [False, True], ids=["linear", "conv"])
def test_smoothing_leaves_the_float_output_unchanged(conv):
    torch.manual_seed(2)
    layer = nn.Conv2d(12, 8, 3, padding=1) if conv else nn.Linear(12, 8)
    x = torch.randn(3, 12, 5, 5) if conv else torch.randn(3, 7, 12)
    cdim = 1 if conv else -1
    x.select(cdim, 3).mul_(40.0)  # an outlier channel
    act_max = x.abs().movedim(cdim, -1).reshape(-1, 12).amax(0)
    reference = layer(x)
    q = wrap(layer, 8)
    decompose({"l": q}, 2, {"l": act_max})
    lam = 1 / q.smooth
    # the outlier channel is damped in the input, its weights grown by the same factor
    assert lam[3] == lam.max() and lam[3] > 2
    # float path: (residual + branch) on the smoothed input == the original layer
    w_float = q.weight + q.lowrank_delta()
    op = (lambda a, w: F.conv2d(a, w, q.bias, 1, 1)) if conv else (lambda a, w: F.linear(a, w, q.bias))
    torch.testing.assert_close(op(q.smooth_input(x), w_float), reference, rtol=1e-5, atol=1e-5)
    # the smoothed input's range is flatter: max over channels / median over channels shrinks
    sm = q.smooth_input(x).abs().movedim(cdim, -1).reshape(-1, 12).amax(0)
    assert float(sm.max() / sm.median()) < float(act_max.max() / act_max.median())


def test_smoothing_factors_formula():
    a = torch.tensor([4.0, 1.0, 0.0, 9.0])
    w = torch.tensor([1.0, 4.0, 2.0, 0.0])
    lam = smoothing_factors(a, w, 0.5)
    torch.testing.assert_close(lam, torch.tensor([2.0, 0.5, 1.0, 1.0]))  # dead channels keep 1


def test_layers_reading_one_tensor_share_their_smoothing():
    torch.manual_seed(3)
    names = ["b.attn1.to_q", "b.attn1.to_k", "b.attn1.to_v", "b.attn2.to_q", "c.attn1.to_q"]
    shared = torch.rand(16)
    act_max = {n: shared.clone() for n in names[:3]} | {"b.attn2.to_q": torch.rand(16), "c.attn1.to_q": shared.clone()}
    groups = sorted(sorted(g) for g in sharing_groups(names, act_max))
    assert groups == [["b.attn1.to_k", "b.attn1.to_q", "b.attn1.to_v"], ["b.attn2.to_q"], ["c.attn1.to_q"]]
    layers = {n: QuantLinear(nn.Linear(16, 16), 4) for n in names}
    decompose(layers, 2, act_max)
    assert torch.equal(layers["b.attn1.to_q"].smooth, layers["b.attn1.to_v"].smooth)
    assert not torch.equal(layers["b.attn1.to_q"].smooth, layers["b.attn2.to_q"].smooth)


def test_export_module_equals_the_quantized_layer():
    torch.manual_seed(4)
    from mobilesd.quant.quantizers import ActQuantizer, StepContext

    for conv in (False, True):
        layer = nn.Conv2d(8, 16, 3, padding=1) if conv else nn.Linear(8, 16)
        q = wrap(layer, 4)
        decompose({"l": q}, 2, {"l": torch.rand(8) * 3 + 0.1})
        q.act_quant = ActQuantizer(4, 1, StepContext(), torch.tensor([0.2]))
        q.merge()
        x = torch.randn(2, 8, 6, 6) if conv else torch.randn(2, 5, 8)
        e = export_module(q, q.act_quant)
        assert isinstance(e, SVDQuantExport)
        torch.testing.assert_close(e(x), q(x), rtol=1e-6, atol=1e-6)
        # weight-only graph form: the main branch holds exactly the dequantized integers
        assert torch.equal(export_module(q).main.weight, q.weight_quant.dequantize(q.integers))


def test_fold_smoothing_into_the_norms_is_exact(tiny_pipe):
    """On a UNet with every quantized layer an SVDQuant layer: folding changes no output, and moves the
    multiply of q/k/v, attn2.to_q and proj_in into their norms (ff.net.0.proj keeps it: see _FOLD_RULES)."""
    import copy

    from mobilesd.quant import policy
    from mobilesd.quant.model import replace_layers

    unet = copy.deepcopy(tiny_pipe.unet).eval()
    plan = policy.resolve(unet, 8, 8)
    layers = replace_layers(unet, plan)
    g = torch.Generator().manual_seed(5)
    act_max = {}
    for n, q in layers.items():
        c = q.weight.shape[1]
        act_max[n] = torch.rand(c, generator=g) * 5 + 0.1
    for n in layers:   # q/k/v read one tensor: one set of maxima
        if n.endswith(("attn1.to_k", "attn1.to_v")):
            act_max[n] = act_max[n.rsplit(".", 1)[0] + ".to_q"]
    decompose(layers, 2, act_max)
    exports = {}
    for n, q in layers.items():
        q.merge()
        e = export_module(q)
        unet.set_submodule(n, e)
        if isinstance(e, SVDQuantExport):
            exports[n] = e
    cfg = unet.config
    x = torch.randn(2, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=g)
    ctx = torch.randn(2, 77, cfg.cross_attention_dim, generator=g)
    with torch.no_grad():
        before = unet(x, 500, encoder_hidden_states=ctx).sample
        result = fold_smoothing(unet, exports)
        after = unet(x, 500, encoder_hidden_states=ctx).sample
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
    folded = {n for readers in result["folded"].values() for n in readers}
    assert any(n.endswith("attn1.to_v") for n in folded) and any(n.endswith("ff.net.0.proj") for n in result["multiply"])
    assert any(n.endswith("proj_in") for n in folded) and any(n.endswith("attn2.to_q") for n in folded)
    assert any(n.endswith("resnets.0.conv1") for n in result["multiply"])   # after SiLU: cannot fold
    assert not any(n in folded for n in result["multiply"])
    assert all(exports[n].smooth is None for n in folded)


@pytest.fixture(scope="module")
def svdquant_model(tmp_path_factory):
    from mobilesd.quant import quantize

    out = tmp_path_factory.mktemp("svdq") / "q"
    qm = quantize(None, out, method="svdquant", weight_bits=4, act_bits=8, svd_rank=4, **FAST)
    return out, qm


def test_svdquant_model_saves_and_loads(svdquant_model):
    from safetensors.numpy import load_file

    from mobilesd.quant import QuantizedModel
    from mobilesd.quant.model import FORMAT_VERSION

    out, qm = svdquant_model
    cfg = qm.config
    saved = json.loads((out / "quant_config.json").read_text())
    assert cfg["method"] == "svdquant" and saved["format_version"] == FORMAT_VERSION == 2
    svd = cfg["svdquant"]
    assert svd["rank"] == 4 and all(v["smoothed"] for v in svd["layers"].values())
    assert "conv_in" not in svd["layers"] and "conv_out" not in svd["layers"]   # the policy's fixed 8-bit layers
    w = load_file(str(out / "weights.safetensors"))
    key = "unet.down_blocks.0.resnets.0.conv1"
    assert w[f"{key}.lowrank_down"].shape == (4, 32, 3, 3) and w[f"{key}.lowrank_up"].shape == (32, 4, 1, 1)
    assert w[f"{key}.smooth"].shape == (32,) and w[f"{key}.qweight"].dtype == np.int8
    assert int(np.abs(w[f"{key}.qweight"]).max()) <= 7
    loaded = QuantizedModel.from_pretrained(out)
    x = torch.randn(2, 32, 8, 8)
    for name in (key.removeprefix("unet."), "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"):
        a, b = qm.layers["unet"][name], loaded.layers["unet"][name]
        assert torch.equal(a.weight, b.weight) and torch.equal(a.smooth, b.smooth)
        xi = x if a.kind == "conv" else torch.randn(2, 64, a.weight.shape[1])
        assert torch.equal(a(xi), b(xi))


def test_svdquant_flags_are_checked():
    from mobilesd.errors import MobileSDError
    from mobilesd.quant import quantize

    with pytest.raises(MobileSDError, match="--distill is an option of --method svdquant"):
        quantize(None, None, method="ptq", distill=True, **FAST)
    with pytest.raises(MobileSDError, match="--rank 0"):
        quantize(None, None, method="svdquant", svd_rank=0, **FAST)
