"""L4Q (EfficientDM --learn-weight-scales): weight step sizes learned by LSQ jointly with the LoRA."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mobilesd.quant.layers import QuantLinear
from mobilesd.quant.quantizers import WeightQuantizer

FAST = dict(calib_prompts=4, steps=4, batch_size=4, progress=False)


def test_weight_step_size_gradient_is_lsq():
    w = torch.tensor([[0.04, 0.26, -3.0, 0.5], [0.11, -0.07, 0.02, 0.9]])
    wq = WeightQuantizer(w, 4, symmetric=True)
    wq.scale.copy_(torch.tensor([[0.1], [0.05]]))
    s = wq.make_scales_learnable()
    assert isinstance(s, nn.Parameter) and wq.learnable
    out = wq(w)
    out.sum().backward()
    # d/ds of s * clamp(round(w / s), -7, 7): round(w/s) - w/s inside the range, the bound outside,
    # times LSQ's gradient scale 1 / sqrt(weights per scale * Qp)
    for row, step in enumerate((0.1, 0.05)):
        v = w[row] / step
        inside = (v > -7) & (v < 7)
        d = torch.where(inside, torch.round(v) - v, torch.clamp(v, -7, 7))
        expected = float(d.sum()) / math.sqrt(4 * 7)
        assert float(s.grad[row, 0]) == pytest.approx(expected, rel=1e-5)
    # the forward is unchanged by making the scale learnable
    assert torch.equal(out.detach(), torch.clamp(torch.round(w / s.detach()), -7, 7) * s.detach())


def test_groupwise_scales_get_their_own_gradients():
    torch.manual_seed(0)
    w = torch.randn(4, 32)
    wq = WeightQuantizer(w, 4, True, group_size=16)
    s = wq.make_scales_learnable()
    (wq(w) * torch.randn(4, 32)).sum().backward()
    assert s.grad.shape == (4, 2)
    assert torch.all(s.grad != 0)


def test_frozen_scales_keep_integers_and_values_consistent():
    torch.manual_seed(1)
    lin = QuantLinear(nn.Linear(16, 8), 4)
    lin.add_lora(4, torch.Generator().manual_seed(0))
    s = lin.weight_quant.make_scales_learnable()
    with torch.no_grad():
        lin.lora_up.normal_(0, 0.05)
        s.mul_(1.3)   # as if training moved the step sizes
    x = torch.randn(3, 16)
    before = lin(x).detach()
    lin.weight_quant.freeze_scales()
    assert not lin.weight_quant.learnable and "scale" in dict(lin.weight_quant.named_buffers())
    lin.merge()
    # the merged integers use the learned scale: dequantized == the fake-quant forward, bit for bit
    assert torch.equal(lin.weight_quant.dequantize(lin.integers), lin.weight)
    # (the learnable forward differs by float rounding only: LSQ's gradient scaling computes s - s*g + s*g)
    torch.testing.assert_close(lin(x), before, rtol=1e-6, atol=1e-6)


def test_lsq_training_moves_the_step_sizes_and_lowers_the_error():
    """A few LSQ steps on a 4-bit layer's scales (no LoRA): the reconstruction error of its output falls."""
    torch.manual_seed(2)
    lin = nn.Linear(32, 16)
    q = QuantLinear(lin, 4)
    s = q.weight_quant.make_scales_learnable()
    s.data.mul_(1.6)  # start from a poor scale
    x = torch.randn(256, 32)
    target = lin(x).detach()
    opt = torch.optim.Adam([s], lr=1e-3)
    first = None
    for _ in range(60):
        loss = (q(x) - target).pow(2).mean()
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.7 * first


def test_efficientdm_with_learned_scales(tmp_path):
    """quantize(--learn-weight-scales): the saved scales are the learned ones, not the MSE initialisation."""
    from safetensors.numpy import load_file

    from mobilesd.quant import QuantizedModel, quantize

    kw = dict(method="efficientdm", weight_bits=4, act_bits=8, iterations=1, lora_rank=4, **FAST)
    quantize(None, tmp_path / "plain", **kw)
    qm = quantize(None, tmp_path / "l4q", learn_weight_scales=True, weight_scale_lr=0.05, **kw)
    assert qm.config["learn_weight_scales"] and qm.config["training"]["weight_scale_lr"] == 0.05
    a, b = (load_file(str(tmp_path / d / "weights.safetensors")) for d in ("plain", "l4q"))
    scales = [k for k in a if k.endswith(".scale")]
    moved = sum(not (a[k] == b[k]).all() for k in scales)
    assert moved > 0.9 * len(scales)
    loaded = QuantizedModel.from_pretrained(tmp_path / "l4q")
    for name, q in qm.layers["unet"].items():
        assert torch.equal(loaded.layers["unet"][name].weight, q.weight), name
