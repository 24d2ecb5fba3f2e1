"""mobilesd.quant: quantizers, LoRA merge, TDQ tables, policy, the quantized-model folder, resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from mobilesd.errors import MobileSDError
from mobilesd.quant import policy
from mobilesd.quant.layers import QuantConv2d, QuantLinear, plain_layer
from mobilesd.quant.quantizers import (ActQuantizer, StepContext, WeightQuantizer, grad_scale, init_weight_params,
                                       int_range, round_ste)
from mobilesd.quant.tdq import TDQGenerator

FAST = dict(calib_prompts=4, steps=4, batch_size=4, progress=False)


# ---------------------------------------------------------------- quantizers

def test_round_ste_and_grad_scale():
    x = torch.tensor([0.2, 1.7, -2.5], requires_grad=True)
    y = round_ste(x)
    assert torch.equal(y, torch.round(x.detach()))
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones(3))
    s = torch.tensor(2.0, requires_grad=True)
    z = grad_scale(s, 0.25)
    assert float(z.detach()) == 2.0
    z.backward()
    assert float(s.grad) == 0.25


@pytest.mark.parametrize("bits,symmetric", [(8, True), (4, True), (8, False), (4, False)])
def test_weight_quantizer_ranges_and_roundtrip(bits, symmetric):
    torch.manual_seed(0)
    w = torch.randn(6, 5, 3, 3) * torch.linspace(0.1, 2, 6).reshape(6, 1, 1, 1)
    wq = WeightQuantizer(w, bits, symmetric)
    assert wq.scale.shape == (6, 1, 1, 1)
    q = wq.integers(w)
    qmin, qmax = int_range(bits, symmetric)
    assert q.dtype == torch.int8 and int(q.min()) >= qmin and int(q.max()) <= qmax
    if symmetric:
        assert qmin == -qmax and torch.all(wq.zero_point == 0)
    # fake-quant == dequantized integers, exactly
    assert torch.equal(wq(w), wq.dequantize(q))
    # error bounded by half a step inside the range
    err = (wq(w) - w).abs()
    inside = (w / wq.scale + wq.zero_point).abs() < qmax
    assert torch.all(err[inside] <= wq.scale.expand_as(w)[inside] / 2 + 1e-6)


def test_weight_mse_search_beats_max_scaling():
    torch.manual_seed(1)
    w = torch.randn(16, 64)
    w[:, 0] = 8.0  # an outlier per channel: clipping it pays off at 4 bits
    s, _ = init_weight_params(w, 4, True)
    smax = w.abs().amax(1, keepdim=True) / 7
    err = lambda sc: float(((torch.clamp(torch.round(w / sc), -7, 7) * sc - w) ** 2).sum())  # noqa: E731
    assert err(s) < err(smax)


def test_groupwise_weights():
    torch.manual_seed(2)
    w = torch.randn(8, 64)
    wq = WeightQuantizer(w, 4, True, group_size=16)
    assert wq.scale.shape == (8, 4)
    # each group of 16 input channels has its own scale
    q = wq.integers(w)
    expected = torch.clamp(torch.round(w / wq.scale.repeat_interleave(16, 1)), -7, 7) * wq.scale.repeat_interleave(16, 1)
    assert torch.equal(wq(w), expected)
    assert torch.equal(wq.dequantize(q), expected)


def test_act_quantizer_lsq_gradients_and_ste():
    ctx = StepContext()
    aq = ActQuantizer(8, 1, ctx, torch.tensor([0.1])).train()
    x = torch.tensor([0.04, 0.26, -30.0, 5.0], requires_grad=True)  # -30 and 5 lie outside [-12.8, 12.7]
    y = aq(x)
    assert torch.allclose(y, torch.tensor([0.0, 0.3, -12.8, 5.0]), atol=1e-6)
    y.sum().backward()
    # STE: gradient 1 inside the range, 0 where clamped
    assert x.grad.tolist() == [1.0, 1.0, 0.0, 1.0]
    # LSQ: dy/ds = round(x/s) - x/s inside, qmin / qmax outside; scaled by 1/sqrt(N * Qp)
    xs = torch.tensor([0.04, 0.26, -30.0, 5.0]) / 0.1
    inside = (xs > -128) & (xs < 127)
    d = torch.where(inside, torch.round(xs) - xs, torch.clamp(xs, -128, 127))
    expected = float(d.sum()) / math.sqrt(4 * 127)
    assert math.isclose(float(aq.step.grad), expected, rel_tol=1e-4)


def test_act_quantizer_per_step_selection():
    ctx = StepContext([999, 500, 1])
    aq = ActQuantizer(8, 3, ctx, torch.tensor([1.0, 0.1, 0.01])).eval()
    x = torch.tensor([0.123])
    outs = []
    for t in (990, 480, 3):
        ctx.set_timestep(torch.tensor([t]))
        outs.append(float(aq(x)))
    assert outs == pytest.approx([0.0, 0.1, 0.12])
    ctx.index = torch.tensor([1], dtype=torch.int32)  # inside an exported graph: an index tensor
    assert float(aq(x)) == pytest.approx(0.1)


# ---------------------------------------------------------------- QALoRA

def test_lora_merge_is_quantized_w_plus_ba():
    torch.manual_seed(3)
    lin = QuantLinear(nn.Linear(32, 16), 4)
    lin.add_lora(8, torch.Generator().manual_seed(0))
    with torch.no_grad():
        lin.lora_up.normal_(0, 0.05)
    expected = lin.weight_quant(lin.weight + lin.lora_up @ lin.lora_down)
    x = torch.randn(3, 32)
    before = lin(x)
    lin.merge()
    assert torch.equal(lin.weight, expected)
    assert torch.equal(lin.weight_quant.dequantize(lin.integers), expected)
    assert torch.equal(lin(x), before)


def test_conv_lora_is_kxk_down_then_1x1_up():
    torch.manual_seed(4)
    conv = QuantConv2d(nn.Conv2d(8, 12, 3, padding=1), 8)
    conv.add_lora(4, torch.Generator().manual_seed(0))
    with torch.no_grad():
        conv.lora_up.normal_(0, 0.1)
    assert conv.lora_down.shape == (4, 8, 3, 3) and conv.lora_up.shape == (12, 4, 1, 1)
    x = torch.randn(2, 8, 6, 6)
    two_convs = conv.lora_branch(x)
    merged = torch.nn.functional.conv2d(x, conv.lora_delta(), None, 1, 1)
    torch.testing.assert_close(two_convs, merged, rtol=1e-5, atol=1e-5)
    expected = conv.weight_quant(conv.weight + conv.lora_delta())
    conv.merge()
    assert torch.equal(conv.weight, expected)


def test_lora_gets_gradients_through_fake_quant():
    torch.manual_seed(5)
    lin = QuantLinear(nn.Linear(16, 8), 4)
    lin.add_lora(4)
    lin(torch.randn(4, 16)).pow(2).sum().backward()
    assert lin.lora_up.grad is not None and lin.lora_up.grad.abs().sum() > 0


def test_plain_layer_matches_quant_layer():
    torch.manual_seed(6)
    q = QuantConv2d(nn.Conv2d(4, 6, 3, padding=1), 8)
    q.merge()
    x = torch.randn(1, 4, 5, 5)
    torch.testing.assert_close(plain_layer(q)(x), q(x), rtol=0, atol=0)


# ---------------------------------------------------------------- TDQ

def test_tdq_table_equals_generator_output():
    torch.manual_seed(7)
    timesteps = [981, 801, 601, 401, 201, 1]
    target = torch.tensor([0.5, 0.3, 0.2, 0.1, 0.05, 0.02])
    gen = TDQGenerator()
    err = gen.fit(timesteps, target)
    assert err < 0.2
    ctx = StepContext(timesteps)
    aq = ActQuantizer(8, len(timesteps), ctx)
    aq.generator = gen
    expected = [float(gen(torch.tensor([float(t)]))) for t in timesteps]
    aq.freeze_table(timesteps)
    assert aq.generator is None
    assert aq.step.detach().tolist() == pytest.approx(expected, rel=0, abs=0)


# ---------------------------------------------------------------- policy

def test_default_policy(tiny_pipe):
    plan = policy.resolve(tiny_pipe.unet, 4, 8)
    assert plan["conv_in"] == {"weights": 8, "acts": 8} and plan["conv_out"] == {"weights": 8, "acts": 8}
    assert not any(n.endswith("conv_shortcut") or ".downsamplers." in n for n in plan)
    assert plan["down_blocks.0.resnets.0.conv1"] == {"weights": 4, "acts": 8}
    a16 = policy.resolve(tiny_pipe.unet, 4, None)
    assert all(v["acts"] is None for v in a16.values())
    custom = policy.resolve(tiny_pipe.unet, 8, 8, [{"pattern": "*attn*", "weights": None, "acts": None},
                                                   {"pattern": "*", "weights": "default", "acts": None}])
    assert not any("attn" in n for n in custom) and all(v["acts"] is None for v in custom.values())


# ---------------------------------------------------------------- the quantized-model folder

@pytest.fixture(scope="module")
def ptq_model(tmp_path_factory):
    from mobilesd.quant import quantize

    out = tmp_path_factory.mktemp("q") / "ptq"
    qm = quantize(None, out, method="ptq", weight_bits=8, act_bits=8, act_intervals="per-step", **FAST)
    return out, qm


def _sample(pipe, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return pipe(prompt=["a handwritten digit three"], num_inference_steps=4, guidance_scale=3.0,
                    generator=g, output_type="np").images


def test_save_load_roundtrip(ptq_model):
    from safetensors.numpy import load_file

    from mobilesd.quant import QuantizedModel, load_quantized

    out, qm = ptq_model
    cfg = qm.config
    assert cfg["method"] == "ptq" and len(cfg["timesteps"]) == 4
    w = load_file(str(out / "weights.safetensors"))
    assert w["unet.down_blocks.0.resnets.0.conv1.qweight"].dtype == np.int8
    acts = load_file(str(out / "activations.safetensors"))
    assert acts["unet.down_blocks.0.resnets.0.conv1.act_step"].shape == (4,)
    loaded = QuantizedModel.from_pretrained(out)
    for name, q in qm.layers["unet"].items():
        assert torch.equal(loaded.layers["unet"][name].weight, q.weight), name
    pipe = load_quantized(out)
    qm.pipe.set_progress_bar_config(disable=True)
    pipe.set_progress_bar_config(disable=True)
    assert np.array_equal(_sample(pipe), _sample(qm.pipe))


def test_quantized_differs_from_fp(ptq_model):
    from mobilesd.loading import default_model_path, load_pipeline

    _, qm = ptq_model
    fp = load_pipeline(default_model_path())
    qm.pipe.set_progress_bar_config(disable=True)
    fp.set_progress_bar_config(disable=True)
    diff = np.abs(_sample(qm.pipe) - _sample(fp)).mean()
    assert 0 < diff < 0.1


def test_quantized_weights_for_exporters(ptq_model):
    _, qm = ptq_model
    qw = qm.quantized_weights("unet")
    entry = qw["down_blocks.0.resnets.0.conv1.weight"]
    layer = qm.layers["unet"]["down_blocks.0.resnets.0.conv1"]
    np.testing.assert_array_equal(entry["scale"] * entry["int"].astype(np.float32), layer.weight.numpy())
    tables = qm.activation_tables()
    assert tables["down_blocks.0.resnets.0.conv1"]["scale"].shape == (4,)


def test_bad_inputs(tmp_path):
    from mobilesd.quant import QuantizedModel, quantize

    with pytest.raises(MobileSDError, match="method"):
        quantize(None, None, method="gptq", **FAST)
    with pytest.raises(MobileSDError, match="--weights"):
        quantize(None, None, weight_bits=3, **FAST)
    with pytest.raises(MobileSDError, match="quant_config.json"):
        QuantizedModel.from_pretrained(tmp_path)


def test_resume_gives_the_same_result(tmp_path):
    from safetensors.numpy import load_file

    from mobilesd.quant import quantize

    kw = dict(method="efficientdm", weight_bits=4, act_bits=8, iterations=2, lora_rank=4, **FAST)
    quantize(None, tmp_path / "straight", **kw)
    assert quantize(None, tmp_path / "resumed", stop_after=1, **kw) is None
    assert (tmp_path / "resumed.checkpoint" / "state.pt").exists() and not (tmp_path / "resumed").exists()
    qm = quantize(None, tmp_path / "resumed", resume=True, **kw)
    assert qm.config["training"]["resumed_from"] == 1
    a, b = (load_file(str(tmp_path / d / "weights.safetensors")) for d in ("straight", "resumed"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    la, lb = (load_file(str(tmp_path / d / "lora.safetensors")) for d in ("straight", "resumed"))
    for k in la:
        np.testing.assert_array_equal(la[k], lb[k], err_msg=k)
    assert not (tmp_path / "resumed.checkpoint").exists()


def test_tdq_method_freezes_tables(tmp_path):
    from safetensors.torch import load_file

    from mobilesd.quant import quantize
    from mobilesd.quant.tdq import TDQGenerator

    qm = quantize(None, tmp_path / "tdq", method="tdq", weight_bits=8, act_bits=8, iterations=1, **FAST)
    gens = load_file(str(tmp_path / "tdq" / "tdq.safetensors"))
    acts = load_file(str(tmp_path / "tdq" / "activations.safetensors"))
    name = "down_blocks.0.resnets.0.conv1"
    gen = TDQGenerator()
    gen.load_state_dict({k.removeprefix(f"unet.{name}."): v for k, v in gens.items() if k.startswith(f"unet.{name}.")})
    t = torch.tensor([float(v) for v in qm.config["timesteps"]])
    with torch.no_grad():
        expected = torch.stack([gen(t[i : i + 1]).reshape(()) for i in range(len(t))])
    assert torch.equal(acts[f"unet.{name}.act_step"], expected)


def test_group_size_falls_back_per_channel_where_groups_do_not_fit(tmp_path):
    from mobilesd.quant import QuantizedModel, quantize

    qm = quantize(None, tmp_path / "g", method="ptq", weight_bits=4, act_bits=16, group_size=64, **FAST)
    shapes = {n: (q.weight.shape[1], q.weight_quant.scale.shape[1]) for n, q in qm.layers["unet"].items()
              if q.weight_quant is not None and q.weight_quant.bits == 4}
    assert any(groups > 1 for _, groups in shapes.values())             # 64 | in_channels: group-wise
    assert all(groups == (i // 64 if i % 64 == 0 else 1) for i, groups in shapes.values())
    loaded = QuantizedModel.from_pretrained(tmp_path / "g")
    for name, q in qm.layers["unet"].items():
        assert torch.equal(loaded.layers["unet"][name].weight, q.weight), name
