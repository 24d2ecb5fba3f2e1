"""finite_causal_mask: the text encoder's causal mask becomes a finite constant that survives fp16, with the
original's numerics, for every target. (That it fixes LiteRT.js's fp16 NaN output on WebGPU is checked in
headless Chromium: tests/test_litert_js.py.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mobilesd.passes import apply_passes
from mobilesd.passes.finite_mask import MASK_VALUE, FiniteMaskEncoder

FP16_MAX = 65504.0


@pytest.fixture(scope="module")
def text_encoder(tiny_pipe):
    from mobilesd.components import TextEncoder

    return TextEncoder(tiny_pipe.text_encoder).eval()


def _ids(batch=2, seed=0):
    return torch.randint(0, 49408, (batch, 77), generator=torch.Generator().manual_seed(seed), dtype=torch.int32)


def _live_constants(module, ids) -> list[float]:
    """Every float constant the exported graph computes with: scalar arguments of live nodes and the values of
    lifted tensor constants and buffers (weights excluded: they are data, not masks)."""
    ep = torch.export.export(module, (ids,)).run_decompositions()
    ep.graph_module.graph.eliminate_dead_code()
    values = []
    for node in ep.graph.nodes:
        if node.op == "call_function":
            for a in list(node.args) + list(node.kwargs.values()):
                for v in (a if isinstance(a, (list, tuple)) else [a]):
                    if isinstance(v, float):
                        values.append(v)
    used = {n.name for n in ep.graph.nodes if n.op == "placeholder" and n.users}
    for spec in ep.graph_signature.input_specs:
        if spec.kind.name in ("BUFFER", "CONSTANT_TENSOR") and spec.arg.name in used:
            t = ep.constants.get(spec.target) if spec.target in ep.constants else ep.state_dict.get(spec.target)
            if t is not None and torch.is_tensor(t) and t.is_floating_point():
                values += [float(t.min()), float(t.max())]
    return values


def test_same_numerics_as_the_original(text_encoder):
    out = apply_passes(text_encoder, ["finite_causal_mask"]).eval()
    ids = _ids()
    with torch.no_grad():
        ref, got = text_encoder(ids), out(ids)
    rel = float((got - ref).norm() / ref.norm())
    assert rel < 1e-6, rel
    assert torch.isfinite(got).all()


def test_rewrites_the_copy_not_the_original(text_encoder):
    from transformers.models.clip.modeling_clip import CLIPEncoder

    impl = text_encoder.text_encoder.config._attn_implementation
    out = apply_passes(text_encoder, ["finite_causal_mask"])
    assert isinstance(out.text_encoder.encoder, FiniteMaskEncoder)
    assert out.text_encoder.config._attn_implementation == "eager"
    assert isinstance(text_encoder.text_encoder.encoder, CLIPEncoder), "the caller's module must be left alone"
    assert text_encoder.text_encoder.config._attn_implementation == impl
    assert {id(p) for p in out.parameters()} == {id(p) for p in text_encoder.parameters()}, "weights are shared"
    # applying it twice changes nothing more
    twice = apply_passes(out, ["finite_causal_mask"])
    assert not isinstance(twice.text_encoder.encoder.encoder, FiniteMaskEncoder)


def test_graph_holds_no_constant_fp16_cannot_represent(text_encoder):
    ids = _ids(batch=1)
    before = _live_constants(text_encoder, ids)
    after = _live_constants(apply_passes(text_encoder, ["finite_causal_mask"]).eval(), ids)
    unsafe = [v for v in before if not math.isfinite(v) or abs(v) > FP16_MAX]
    assert unsafe, "the original graph should hold the -inf / finfo.min mask this pass replaces"
    assert all(math.isfinite(v) and abs(v) <= FP16_MAX for v in after), [v for v in after if abs(v) > FP16_MAX]
    assert MASK_VALUE in after


def test_no_op_on_unet_and_decoder(tiny_pipe):
    torch.manual_seed(0)
    unet = apply_passes(tiny_pipe.unet, ["finite_causal_mask"])
    assert not any(isinstance(m, FiniteMaskEncoder) for m in unet.modules())
    x, ctx = torch.randn(2, 4, 8, 8), torch.randn(2, 77, 32)
    with torch.no_grad():
        assert torch.equal(unet(x, 500, ctx).sample, tiny_pipe.unet(x, 500, ctx).sample)


def test_every_converter_applies_it_to_the_text_encoder():
    from mobilesd.converters.onnx import OnnxConverter
    from mobilesd.converters.tflite import TFLiteConverter

    assert "finite_causal_mask" in TFLiteConverter.passes
    assert "finite_causal_mask" in OnnxConverter.passes
    conv = pytest.importorskip("mobilesd.converters.coreml").CoreMLConverter({"attention": "split-einsum"})
    assert "finite_causal_mask" in conv.passes_for("text_encoder")
    assert "finite_causal_mask" not in conv.passes_for("unet")


def _tflite_constants(path) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    out = []
    for t in it.get_tensor_details():
        try:
            v = it.get_tensor(t["index"])
        except ValueError:   # not a constant
            continue
        if v.dtype in (np.float32, np.float16) and v.size:
            out.append(v)
    return out


def test_tflite_text_encoder_has_a_finite_mask_and_matches_pytorch(tiny_pipe, tmp_path):
    from mobilesd.components import text_encoder_component
    from mobilesd.converters.tflite import TFLiteConverter
    from mobilesd.runtime.graphs import open_graph
    from mobilesd.verify import rel_l2

    comp = text_encoder_component(tiny_pipe)
    graph = TFLiteConverter().convert(comp, tmp_path, "fp32")
    constants = _tflite_constants(tmp_path / graph.file)
    assert all(np.all(np.isfinite(c)) and np.all(np.abs(c) <= FP16_MAX) for c in constants)
    sess = open_graph(tmp_path / graph.file, ["input_ids"], ["last_hidden_state"])
    got = sess.run({"input_ids": comp.example_inputs["input_ids"].numpy()})[0]
    ref = comp.run(comp.example_inputs)[0].numpy()
    assert rel_l2(got, ref) < 1e-4


def test_onnx_text_encoder_has_a_finite_mask_and_matches_pytorch(tiny_pipe, tmp_path):
    import onnx
    from onnx import numpy_helper

    from mobilesd.components import text_encoder_component
    from mobilesd.converters.onnx import OnnxConverter
    from mobilesd.runtime.graphs import open_graph
    from mobilesd.verify import rel_l2

    comp = text_encoder_component(tiny_pipe)
    graph = OnnxConverter().convert(comp, tmp_path, "fp32")
    model = onnx.load(tmp_path / graph.file)
    tensors = [numpy_helper.to_array(t) for t in model.graph.initializer]
    tensors += [numpy_helper.to_array(a.t) for n in model.graph.node if n.op_type == "Constant"
                for a in n.attribute if a.name == "value"]
    floats = [t for t in tensors if t.dtype in (np.float32, np.float16) and t.size]
    assert all(np.all(np.isfinite(t)) and np.all(np.abs(t) <= FP16_MAX) for t in floats)
    sess = open_graph(tmp_path / graph.file, ["input_ids"], ["last_hidden_state"])
    got = sess.run({"input_ids": comp.example_inputs["input_ids"].numpy()})[0]
    assert rel_l2(got, comp.run(comp.example_inputs)[0].numpy()) < 1e-5
