"""Per-op FLOPs and bytes: hand-checked counts on real .tflite files made with litert-torch, and the
analytic (meta-device) path against torch's own FLOP counter."""

import json
from pathlib import Path

import pytest
import torch

from mobilesd.errors import MobileSDError
from mobilesd.latency.costs import analytic_graph_cost, classify_graph, tflite_graph_cost


class ConvNet(torch.nn.Module):
    """conv 4->8 3x3 on 16x16, then FC 8->16, plus a batched matmul: FLOPs easy to count by hand."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(4, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 16)

    def forward(self, x, y):
        h = self.conv(x).mean(dim=(2, 3))
        return torch.softmax(self.fc(h), -1), torch.matmul(y, y.transpose(1, 2))


@pytest.fixture(scope="module")
def convnet_tflite(tmp_path_factory):
    import litert_torch

    path = tmp_path_factory.mktemp("tfl") / "convnet.tflite"
    litert_torch.convert(ConvNet().eval(), (torch.randn(1, 4, 16, 16), torch.randn(2, 5, 7))).export(str(path))
    return path


def _op(g, kind):
    ops = [o for o in g.ops if o.kind == kind]
    assert len(ops) == 1, [o.kind for o in g.ops]
    return ops[0]


def test_tflite_conv_fc_matmul_flops_by_hand(convnet_tflite):
    g = tflite_graph_cost(convnet_tflite, act_bytes=2, weight_bytes=2)
    conv = _op(g, "CONV_2D")
    # out 1x16x16x8 = 2048 values, each 3*3*4 = 36 MACs -> 2*2048*36 FLOPs, + 2048 bias adds
    assert conv.flops == 2 * 2048 * 36 + 2048
    # bytes at fp16: input 1024 el, weights 288 el, bias 8 el, output 2048 el
    assert conv.bytes == 2 * (1024 + 288 + 8 + 2048)
    assert conv.weight_bytes == 2 * (288 + 8)
    assert conv.category == "matmul"
    fc = _op(g, "FULLY_CONNECTED")
    assert fc.flops == 2 * 16 * 8 + 16
    bmm = _op(g, "BATCH_MATMUL")
    # [2,5,7] @ [2,7,5] -> 2*5*5 outputs, 7 MACs each
    assert bmm.flops == 2 * (2 * 5 * 5) * 7
    assert bmm.score_bytes == 2 * 70  # its largest operand: the [2,5,7] input
    assert _op(g, "SOFTMAX").flops == 5 * 16
    assert _op(g, "MEAN").flops == 2048  # one add per input element
    assert all(o.flops == 0 for o in g.ops if o.kind == "TRANSPOSE")  # NCHW<->NHWC: data movement only
    assert g.batch == 1


def test_tflite_int8_weights_counted_at_load_not_per_call(convnet_tflite, tmp_path):
    from ai_edge_quantizer import quantizer, recipe

    qt = quantizer.Quantizer(str(convnet_tflite))
    qt.load_quantization_recipe(recipe.weight_only_wi8_afp32())
    q = tmp_path / "q.tflite"
    qt.quantize().export_model(str(q), overwrite=True)
    g = tflite_graph_cost(q, act_bytes=2, weight_bytes=2)
    deq = [o for o in g.ops if o.kind == "DEQUANTIZE"]
    assert deq and all(o.flops == 0 and o.bytes == 0 for o in deq)
    conv = _op(g, "CONV_2D")
    assert conv.flops == 2 * 2048 * 36 + 2048
    assert conv.weight_bytes >= 2 * 288  # the dequantized weight is still a weight, read at fp16


def test_tflite_rejects_non_tflite(tmp_path):
    p = tmp_path / "x.tflite"
    p.write_bytes(b"\0" * 64)
    with pytest.raises(MobileSDError, match="not a TFLite flatbuffer"):
        tflite_graph_cost(p)
    with pytest.raises(MobileSDError, match="does not exist"):
        tflite_graph_cost(tmp_path / "none.tflite")


def test_analytic_matmul_flops_match_torch_flop_counter():
    """The meta-device trace counts the same conv/matmul FLOPs as torch.utils.flop_counter."""
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    from mobilesd.architectures import ARCHITECTURES

    g = analytic_graph_cost("tiny", "unet", 64, 64, 2)
    spec = ARCHITECTURES["tiny"]
    with torch.device("meta"):
        unet = UNet2DConditionModel(**spec["unet"]).eval()
        args = (torch.zeros(2, 4, 32, 32), torch.zeros(2), torch.zeros(2, 77, 32))
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        unet(*args)
    matmul = sum(o.flops for o in g.ops if o.category == "matmul")
    assert matmul == fc.get_total_flops()
    assert g.flops > matmul  # element-wise ops add a little on top


def test_analytic_sd15_unet_size():
    """SD1.5 UNet: 860M parameters (1.72 GB at fp16) and ~0.8 TFLOP per batch-1 step at 512x512."""
    g = analytic_graph_cost("sd15", "unet", 512, 512, 1)
    assert g.weight_bytes / 2 == pytest.approx(859.5e6, rel=0.01)
    assert 0.75e12 < g.flops < 0.85e12


def test_analytic_conv_by_hand():
    from mobilesd.latency.costs import _trace_costs

    conv = torch.nn.Conv2d(4, 8, 3, padding=1).to("meta")
    ops = _trace_costs(conv, (torch.zeros(1, 4, 16, 16, device="meta"),), act_bytes=2, weight_bytes=2)
    (op,) = [o for o in ops if o.category == "matmul"]
    assert op.flops == 2 * 2048 * 36
    assert op.weight_bytes == 2 * (288 + 8)


@pytest.mark.parametrize("name,stage", [
    ("text_encoder.tflite", "text_encoder"), ("unet.tflite", "unet"), ("unet_chunk0.tflite", "unet_chunk_0"),
    ("unet_chunk_12.tflite", "unet_chunk_12"), ("vae_decoder.tflite", "vae_decoder"), ("other.tflite", None)])
def test_classify_graph(name, stage):
    assert classify_graph(Path(name)) == stage


def test_bundle_plan_counts_cfg_calls(convnet_tflite, tmp_path):
    """A batch-1 UNet graph runs twice per CFG step; the manifest's graph entries are found."""
    from mobilesd.latency.roofline import bundle_plan, find_device, stage_seconds

    for name in ("text_encoder", "unet_chunk0", "unet_chunk1", "vae_decoder"):
        (tmp_path / f"{name}.tflite").write_bytes(convnet_tflite.read_bytes())
    manifest = {"bundle_id": "test-bundle", "graphs": [
        {"name": n, "role": n.split("_chunk")[0], "file": f"{n}.tflite", "format": "tflite"}
        for n in ("text_encoder", "unet_chunk0", "unet_chunk1", "vae_decoder")]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    plan, info = bundle_plan(tmp_path, cfg="batch")
    assert [p.stage for p in plan] == ["text_encoder", "unet_chunk_0", "unet_chunk_1", "vae_decoder"]
    assert [p.calls for p in plan] == [2, 2, 2, 1]
    assert info["id"] == "test-bundle" and len(info["manifest_sha256"]) == 64
    _, dev = find_device("galaxy-s23-gpu")
    sec = stage_seconds(plan, dev, 0.5, steps=10)
    assert sec["unet_step"] == pytest.approx(sec["unet_chunk_0"] + sec["unet_chunk_1"])
    assert sec["end_to_end"] == pytest.approx(sec["text_encoder"] + 10 * sec["unet_step"] + sec["vae_decoder"])
    plan_none, _ = bundle_plan(tmp_path, cfg="none")
    assert [p.calls for p in plan_none] == [1, 1, 1, 1]


def test_bundle_plan_errors(tmp_path):
    from mobilesd.latency.roofline import bundle_plan

    with pytest.raises(MobileSDError, match="no manifest.json"):
        bundle_plan(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"bundle_id": "x", "graphs": []}))
    with pytest.raises(MobileSDError, match="no .tflite graphs"):
        bundle_plan(tmp_path)
