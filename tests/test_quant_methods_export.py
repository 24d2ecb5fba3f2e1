"""export --quantized Q for the methods of issue 15 (real litert-torch / ai-edge-quantizer / LiteRT GPU delegate,
coremltools + the MIL interpreter): SVDQuant's low-rank branch beside the integer main branch, and L4Q / GraLoRA
integers carried exactly."""

from __future__ import annotations

import numpy as np
import pytest

from mobilesd.errors import MobileSDError
from mobilesd.export import ExportOptions, export

FAST = dict(calib_prompts=4, steps=4, batch_size=4, progress=False)


@pytest.fixture(scope="module")
def svdquant_dir(tmp_path_factory):
    from mobilesd.quant import quantize

    out = tmp_path_factory.mktemp("svdq-export") / "q"
    quantize(None, out, method="svdquant", weight_bits=4, act_bits=8, svd_rank=4, **FAST)
    return out


@pytest.fixture(scope="module")
def l4q_gralora_dir(tmp_path_factory):
    """EfficientDM with both options: learned step sizes (so ai-edge-quantizer's own min-max scales differ from
    the model's) and 2 x 2 GraLoRA blocks merged into the integers."""
    from mobilesd.quant import quantize

    out = tmp_path_factory.mktemp("l4q-export") / "q"
    quantize(None, out, method="efficientdm", weight_bits=4, act_bits=8, iterations=1, lora_rank=4, lora_blocks=2,
             learn_weight_scales=True, weight_scale_lr=0.05, **FAST)
    return out


def _int_tensors(path):
    """(shape, int values, scales) of every int8 / int4 constant of a .tflite file."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    out = []
    for t in model.subgraphs[0].tensors:
        buf = model.buffers[t.buffer]
        if t.type not in (9, 17) or buf.data is None or not len(buf.data):
            continue
        shape = [int(v) for v in t.shape]
        raw = np.frombuffer(bytes(buf.data), np.int8 if t.type == 9 else np.uint8)
        if t.type == 17:   # int4, two per byte, low nibble first
            lo, hi = (raw & 0xF).astype(np.int8), (raw >> 4).astype(np.int8)
            raw = np.stack([lo, hi], 1).reshape(-1)[: int(np.prod(shape))]
            raw = np.where(raw > 7, raw - 16, raw).astype(np.int8)
        out.append((tuple(shape), raw.reshape(shape), np.asarray(t.quantization.scale, np.float32)))
    return out


def _unet_name(chunk_name: str) -> str:
    """A UNet chunk's parameter name (manifest) -> the UNet's: parts.down_0.x -> down_blocks.0.x, parts.mid -> mid_block."""
    import re

    n = chunk_name.removeprefix("parts.")
    n = re.sub(r"^down_(\d+)", r"down_blocks.\1", n)
    n = re.sub(r"^up_(\d+)", r"up_blocks.\1", n)
    return re.sub(r"^mid\b", "mid_block", n)


def test_svdquant_android_branch_beside_integers(svdquant_dir, tmp_path):
    from mobilesd.quant import QuantizedModel

    bundle = export(None, tmp_path / "b", ExportOptions(target="android", quantized=str(svdquant_dir), verify_steps=2,
                                                        progress=False))
    m = bundle.manifest
    q = m["quantization"]
    assert q["method"] == "svdquant" and q["svdquant"]["rank"] == 4 and q["svdquant"]["smoothed_layers"] > 0
    unet = next(g for g in m["graphs"] if g["role"] == "unet")
    assert unet["precision"] == "int4" and m["verification"]["passed"]
    assert unet["gpu"]["fully_accelerated"] and unet["gpu"]["passed"]       # the whole graph on the GPU delegate
    svd = unet["meta"]["svdquant"]
    assert svd["layers"] == q["svdquant"]["layers"]
    assert svd["branch_tensors_found"] == svd["branch_tensors"]             # every branch weight is in the file ...
    assert svd["branch_dtypes"]["float32"] + svd["branch_dtypes"]["float16"] == svd["branch_tensors"]   # ... as float
    assert svd["smoothing"]["folded"] > 0 and svd["smoothing"]["multiply"] > 0
    assert svd["branch_weight_bytes"] > 0
    iw = unet["meta"]["integer_weights"]
    assert iw["carried_exactly"] == iw["layers"], iw["not_carried"]         # the residual's integers, all of them
    # e.g. the first resnet conv's residual integers, OHWI in the graph
    qm = QuantizedModel.from_pretrained(svdquant_dir)
    entry = qm.quantized_weights("unet")["down_blocks.0.resnets.0.conv1.weight"]
    ints = entry["int"].transpose(0, 2, 3, 1)
    assert any(s == ints.shape and np.array_equal(v, ints) for s, v, _ in _int_tensors(tmp_path / "b" / unet["file"]))


def test_l4q_and_gralora_integers_are_carried_exactly(l4q_gralora_dir, tmp_path):
    from mobilesd.quant import QuantizedModel

    bundle = export(None, tmp_path / "b", ExportOptions(target="android", quantized=str(l4q_gralora_dir),
                                                        verify_steps=2, progress=False))
    m = bundle.manifest
    assert m["quantization"]["learn_weight_scales"] and m["quantization"]["lora_blocks"] == 2
    unet = next(g for g in m["graphs"] if g["role"] == "unet")
    iw = unet["meta"]["integer_weights"]
    # learned scales are not ai-edge-quantizer's min-max ones: those tensors are overwritten with ours
    assert iw["tensors"]["overwritten"] + iw["tensors"]["folded_constant"] > 0
    qm = QuantizedModel.from_pretrained(l4q_gralora_dir)
    tensors = _int_tensors(tmp_path / "b" / unet["file"])
    checked = 0
    not_carried = {_unet_name(n) for n in iw["not_carried"]}
    for name, e in qm.quantized_weights("unet").items():
        if name in not_carried:
            continue
        ints = e["int"].transpose(0, 2, 3, 1) if e["int"].ndim == 4 else e["int"]
        scale = e["scale"].reshape(-1)
        parts = [(ints, scale)]
        if not any(shp == ints.shape and np.array_equal(v, ints) for shp, v, _ in tensors):
            h = len(ints) // 2   # a GEGLU projection the converter split into its two halves
            parts = [(ints[:h], scale[:h]), (ints[h:], scale[h:])]
        for part, sc in parts:
            hits = [s for shp, v, s in tensors if shp == part.shape and np.array_equal(v, part)]
            assert hits, name
            # and the scales are the learned ones (up to a constant the converter folded in, e.g. 1/sqrt(d))
            ratio = hits[0] / sc
            np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5, err_msg=name)
        checked += 1
    assert checked == iw["carried_exactly"] >= 0.9 * iw["layers"]
    assert m["verification"]["passed"] and unet["gpu"]["passed"]


@pytest.mark.slow
def test_svdquant_ios_constexpr_main_and_float_branch(svdquant_dir, tmp_path):
    opts = ExportOptions(target="ios", quantized=str(svdquant_dir), attention="original",
                         min_deployment_target="iOS18", verify_steps=2, progress=False)
    bundle = export(None, tmp_path / "b", opts)
    m = bundle.manifest
    unet = next(g for g in m["graphs"] if g["role"] == "unet")
    assert m["verification"]["passed"]
    svd = unet["meta"]["svdquant"]
    assert svd["branch_tensors_found"] == svd["branch_tensors"] and svd["branch_weight_bytes"] > 0
    qw = unet["meta"]["quantized_weights"]
    assert qw["count"] == m["quantization"]["layers"]["unet"]   # every main branch holds Q's integers
    assert qw["op"] == "constexpr_blockwise_shift_scale"


def test_svdquant_ios_needs_the_original_attention(svdquant_dir, tmp_path):
    with pytest.raises(MobileSDError, match="split-einsum"):
        export(None, tmp_path / "b", ExportOptions(target="ios", quantized=str(svdquant_dir), progress=False))
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_svdquant_simulated_activations_reproduce_pytorch(svdquant_dir, tmp_path):
    opts = ExportOptions(target="android", quantized=str(svdquant_dir), simulate_activations=True, verify_steps=2,
                         progress=False)
    bundle = export(None, tmp_path / "b", opts)
    unet = next(g for g in bundle.manifest["graphs"] if g["role"] == "unet")
    assert "step_index" in [i["name"] for i in unet["inputs"]] and bundle.manifest["verification"]["passed"]
