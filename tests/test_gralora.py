"""GraLoRA (EfficientDM --lora-blocks K): k x k granular LoRA blocks, merged before quantization."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mobilesd.quant.layers import QuantConv2d, QuantLinear

FAST = dict(calib_prompts=4, steps=4, batch_size=4, progress=False)


def _randomise(q, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        q.lora_up.copy_(torch.randn(q.lora_up.shape, generator=g) * 0.1)
        q.lora_down.copy_(torch.randn(q.lora_down.shape, generator=g) * 0.1)


def test_block_structure():
    q = QuantLinear(nn.Linear(12, 8), 4)
    assert q.add_lora(4, torch.Generator().manual_seed(0), blocks=2) == 2
    assert q.lora_up.shape == (2, 2, 4, 2) and q.lora_down.shape == (2, 2, 2, 6)  # [k, k, O/k, r/k], [k, k, r/k, I/k]
    _randomise(q)
    delta = q.lora_delta()
    for a in range(2):
        for b in range(2):
            block = delta[a * 4 : (a + 1) * 4, b * 6 : (b + 1) * 6]
            torch.testing.assert_close(block, q.lora_up[a, b] @ q.lora_down[a, b])
    # one pair only moves its own block
    with torch.no_grad():
        q.lora_up[0, 1].zero_()
    d2 = q.lora_delta()
    assert torch.all(d2[0:4, 6:12] == 0) and torch.equal(d2[4:8], delta[4:8]) and torch.equal(d2[0:4, 0:6], delta[0:4, 0:6])


@pytest.mark.parametrize("blocks", [1, 2, 4])
def test_parameter_count_equals_rank_r_lora(blocks):
    for layer, kernel in ((nn.Linear(32, 16), 1), (nn.Conv2d(16, 32, 3, padding=1), 9)):
        q = (QuantLinear if isinstance(layer, nn.Linear) else QuantConv2d)(layer, 4)
        assert q.add_lora(8, blocks=blocks) == blocks
        o, i = q.weight.shape[:2]
        assert q.lora_up.numel() + q.lora_down.numel() == 8 * (o + i * kernel)


def test_conv_blocks_group_input_channels_with_their_kernel():
    torch.manual_seed(1)
    q = QuantConv2d(nn.Conv2d(4, 6, 3, padding=1), 8)
    q.add_lora(2, blocks=2)
    _randomise(q, 1)
    delta = q.lora_delta()
    assert delta.shape == (6, 4, 3, 3)
    for a in range(2):
        for b in range(2):
            block = delta[a * 3 : (a + 1) * 3, b * 2 : (b + 1) * 2].reshape(3, -1)   # [O/k, (I/k)*kh*kw]
            torch.testing.assert_close(block, q.lora_up[a, b] @ q.lora_down[a, b])


def test_granular_delta_reaches_higher_rank_than_lora():
    """The point of GraLoRA: with r(O + I) parameters the delta's rank is up to k * r, LoRA's only r."""
    q = QuantLinear(nn.Linear(32, 32), 4)
    q.add_lora(4, blocks=2)
    _randomise(q, 2)
    assert int(torch.linalg.matrix_rank(q.lora_delta().detach().double(), rtol=1e-5)) == 8
    lora = QuantLinear(nn.Linear(32, 32), 4)
    lora.add_lora(4)
    _randomise(lora, 2)
    assert int(torch.linalg.matrix_rank(lora.lora_delta().detach().double(), rtol=1e-5)) == 4


def test_merge_is_quantized_w_plus_granular_delta():
    torch.manual_seed(3)
    q = QuantLinear(nn.Linear(16, 8), 4)
    q.add_lora(4, blocks=2)
    _randomise(q, 3)
    expected = q.weight_quant(q.weight + q.lora_delta())
    x = torch.randn(2, 16)
    before = q(x)
    q.merge()
    assert torch.equal(q.weight, expected) and torch.equal(q.weight_quant.dequantize(q.integers), expected)
    assert torch.equal(q(x), before)


def test_blocks_fall_back_to_lora_where_they_do_not_divide():
    q = QuantLinear(nn.Linear(10, 9), 4)     # 9 output channels: no 2 x 2 split
    assert q.add_lora(4, blocks=2) == 1 and q.lora_blocks == 1 and q.lora_down.shape == (4, 10)


def test_efficientdm_with_gralora(tmp_path):
    from safetensors.numpy import load_file

    from mobilesd.errors import MobileSDError
    from mobilesd.quant import QuantizedModel, quantize

    qm = quantize(None, tmp_path / "g", method="efficientdm", weight_bits=4, act_bits=8, iterations=1, lora_rank=4,
                  lora_blocks=2, **FAST)
    assert qm.config["lora_blocks"] == 2 and qm.config["lora_blocks_fallback"] == []
    lora = load_file(str(tmp_path / "g" / "lora.safetensors"))
    up = lora["unet.down_blocks.0.resnets.0.conv1.lora_up"]
    assert up.shape == (2, 2, 16, 2) and abs(up).sum() > 0   # trained
    loaded = QuantizedModel.from_pretrained(tmp_path / "g")
    for name, q in qm.layers["unet"].items():
        assert torch.equal(loaded.layers["unet"][name].weight, q.weight), name
    with pytest.raises(MobileSDError, match="--lora-blocks 3 must .* divide --lora-rank 4"):
        quantize(None, None, method="efficientdm", lora_rank=4, lora_blocks=3, **FAST)
    with pytest.raises(MobileSDError, match="need --method efficientdm"):
        quantize(None, None, method="ptq", lora_blocks=2, **FAST)
