"""export --quantized Q: the model's own integers in the TFLite graphs, activation tables in the bundle, and
--simulate-activations graphs that reproduce the PyTorch quantized model (real litert-torch + ai-edge-litert)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mobilesd.errors import MobileSDError
from mobilesd.export import ExportOptions, export


@pytest.fixture(scope="module")
def quantized_dir(tmp_path_factory):
    from bundles import quantized_w8a8

    return quantized_w8a8(tmp_path_factory)


def _tflite_int_tensors(path):
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    out = []
    for t in model.subgraphs[0].tensors:
        buf = model.buffers[t.buffer]
        if t.type == 9 and buf.data is not None and len(buf.data):  # INT8 constants
            out.append(np.frombuffer(bytes(buf.data), np.int8).reshape([int(v) for v in t.shape]))
    return out


@pytest.mark.parametrize("simulate", [False, True], ids=["weights", "simulate-activations"])
def test_export_quantized_android(quantized_dir, tmp_path_factory, simulate):
    from mobilesd.quant import QuantizedModel

    from bundles import quantized_android_bundle
    from mobilesd.bundle import load_bundle

    bundle = load_bundle(quantized_android_bundle(tmp_path_factory, simulate))
    m = bundle.manifest
    q = m["quantization"]
    assert q["method"] == "ptq" and q["weight_bits"] == 8 and q["simulate_activations"] is simulate
    tables = json.loads((bundle.root / q["activation_tables"]["file"]).read_text())
    assert len(tables["timesteps"]) == 4
    assert all(len(v["step_sizes"]) == 4 for v in tables["layers"].values())
    assert q["activation_tables"]["file"] in m["files"]  # listed with its SHA-256
    unet = next(g for g in m["graphs"] if g["role"] == "unet")
    assert unet["precision"] == "int8"
    # the text encoder / VAE are not in the quantized model: they keep the target's default precision
    assert {g["precision"] for g in m["graphs"] if g["role"] != "unet"} == {"fp16"}
    iw = unet["meta"]["integer_weights"]
    assert iw["carried_exactly"] >= 0.9 * iw["layers"], iw
    # the graph holds the quantized model's integers: e.g. the first down block's conv, in OHWI layout
    qm = QuantizedModel.from_pretrained(quantized_dir)
    ints = qm.quantized_weights("unet")["down_blocks.0.resnets.0.conv1.weight"]["int"].transpose(0, 2, 3, 1)
    assert any(t.shape == ints.shape and np.array_equal(t, ints) for t in _tflite_int_tensors(bundle.root / unet["file"]))
    assert m["verification"]["passed"]
    names = [i["name"] for i in unet["inputs"]]
    assert ("step_index" in names) is simulate
    if simulate:
        assert "informative_only" in unet["gpu"]  # recorded, not gating (see docs/quantization.md)
        from mobilesd.pipeline import HostPipeline

        hp = HostPipeline.from_bundle(bundle.root, runtime="tflite")
        img = hp.generate("a handwritten digit two", steps=2, guidance=3.0)
        assert img.shape == (32, 32, 3)


def test_export_quantized_bad_requests(tmp_path, quantized_dir):
    with pytest.raises(MobileSDError, match="--simulate-activations needs --quantized"):
        export(None, tmp_path / "a", ExportOptions(simulate_activations=True, progress=False))
    with pytest.raises(MobileSDError, match="not a quantized model"):
        export(None, tmp_path / "b", ExportOptions(quantized=str(tmp_path), progress=False))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_export_quantized_ios_w8a8(quantized_dir, tmp_path):
    """Core ML: the model's integers as constexpr weights, and W8A8 quantize/dequantize ops from its tables."""
    from mobilesd.runtime.mil import static_facts

    opts = ExportOptions(target="ios", quantized=str(quantized_dir), activation_quantization="static",
                         verify_steps=2, progress=False)
    bundle = export(None, tmp_path / "b", opts)
    m = bundle.manifest
    assert m["quantization"]["activation_quantization"] == "static" and m["verification"]["passed"]
    unet = next(g for g in m["graphs"] if g["role"] == "unet")
    ops = static_facts(tmp_path / "b" / unet["file"])["op_counts"]
    n_act = sum(1 for _ in json.loads((tmp_path / "b" / "quantization" / "activations.json").read_text())["layers"])
    aq = unet["meta"]["activation_quantization"]
    assert aq["count"] == n_act  # every layer with an activation table got its quantize -> dequantize
    # (the package has fewer ops than layers: Core ML's cleanup merges identical ones on a shared input)
    assert 0 < ops.get("quantize", 0) <= n_act and ops.get("quantize") == ops.get("dequantize")
    with pytest.raises(MobileSDError, match="--activation-quantization static needs --target ios"):
        export(None, tmp_path / "c", ExportOptions(target="android", quantized=str(quantized_dir),
                                                   activation_quantization="static", progress=False))
