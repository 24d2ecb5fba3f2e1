"""TFLite conversion + ai-edge-quantizer precisions, the >32 MiB quantizer fix, and the GPU-delegate check."""

import numpy as np
import pytest
import torch
from torch import nn

from mobilesd.components import Component
from mobilesd.converters import get_converter
from mobilesd.errors import MobileSDError
from mobilesd.gpu_check import check_gpu, parse_delegate_log
from mobilesd.runtime.graphs import open_graph
from mobilesd.verify import rel_l2


class ConvNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 32, 3, padding=1)
        self.norm = nn.GroupNorm(8, 32)
        self.proj = nn.Linear(32, 32)

    def forward(self, x):
        h = nn.functional.silu(self.norm(self.conv(x)))
        return self.proj(h.permute(0, 2, 3, 1))


def _component():
    torch.manual_seed(0)
    return Component("toy", "unet", ConvNorm().eval(), {"x": torch.randn(1, 4, 16, 16)}, ["y"])


@pytest.mark.parametrize("precision,tol", [("fp32", 1e-5), ("fp16", 5e-3), ("int8", 3e-2), ("int4", 3e-1)])
def test_tflite_precisions_run_and_match(tmp_path, precision, tol):
    comp = _component()
    graph = get_converter("android").convert(comp, tmp_path, precision)
    sess = open_graph(tmp_path / graph.file, ["x"], ["y"])
    got = sess.run({"x": comp.example_inputs["x"].numpy()})[0]
    assert rel_l2(got, comp.run(comp.example_inputs)[0].numpy()) < tol
    assert graph.inputs[0].shape == [1, 4, 16, 16] and graph.outputs[0].shape == [1, 16, 16, 32]


def test_unknown_precision_is_a_clear_error(tmp_path):
    with pytest.raises(MobileSDError, match="not supported"):
        get_converter("onnx").convert(_component(), tmp_path, "int4")
    with pytest.raises(MobileSDError, match="unknown target"):
        get_converter("windows")


def test_quantizer_fix_for_tensors_over_32_mib(tmp_path):
    """ai-edge-quantizer 0.10.0 raises on every SD 1280x3x3x1280 conv (59 MB fp32); our fix must quantize it
    exactly as the library does slice by slice."""
    import litert_torch
    from ai_edge_quantizer import quantizer

    from mobilesd.converters.tflite import quantize_weights, weight_recipe

    torch.manual_seed(0)
    conv = nn.Conv2d(1280, 1280, 3, padding=1).eval()
    x = torch.randn(1, 1280, 4, 4)
    path = tmp_path / "big.tflite"
    litert_torch.convert(conv, (x,)).export(str(path))
    qt = quantizer.Quantizer(str(path))
    qt.load_quantization_recipe(weight_recipe("int8"))
    try:
        qt.quantize()
        library_fixed = True
    except ValueError as exc:  # the bug our fix exists for
        assert "axis remapping" in str(exc)
        library_fixed = False
    out = tmp_path / "big_int8.tflite"
    quantize_weights(path, out, "int8")
    assert out.stat().st_size < path.stat().st_size / 3.5
    got = open_graph(out, ["args_0"], ["y"]).run({"args_0": x.numpy()})[0]
    assert rel_l2(got, conv(x).detach().numpy()) < 1e-2
    if library_fixed:
        pytest.skip("ai-edge-quantizer no longer has the >32 MiB bug; the fix is inactive")


def test_sliced_quantization_is_bit_identical_to_the_library():
    from ai_edge_quantizer import qtyping
    from ai_edge_quantizer.algorithms.uniform_quantize import uniform_quantize_tensor as uqt

    from mobilesd.converters._aeq_large_tensors import large_tensor_fix

    rng = np.random.default_rng(0)
    w = rng.standard_normal((1280, 3, 3, 1280)).astype(np.float32)  # 59 MB: takes the broken path
    scale = (np.abs(w).reshape(1280, -1).max(1) / 127).astype(np.float32).reshape(1280, 1, 1, 1)
    params = qtyping.UniformQuantParams(num_bits=8, quantized_dimension=0, scale=scale,
                                        zero_point=np.zeros_like(scale, dtype=np.int32), symmetric=True)
    with large_tensor_fix():
        q = uqt.uniform_quantize(w, params)
    # reference: the library's own unchunked arithmetic on each 64-channel slice (each under 32 MiB)
    ref = np.concatenate([uqt.uniform_quantize(w[i:i + 64], qtyping.UniformQuantParams(
        num_bits=8, quantized_dimension=0, scale=scale[i:i + 64], zero_point=np.zeros((64, 1, 1, 1), np.int32),
        symmetric=True)) for i in range(0, 1280, 64)])
    assert q.dtype == np.int8 and np.array_equal(q, ref)


def test_delegate_log_parsing():
    log = ("ERROR: Following operations are not supported by GPU delegate:\nBROADCAST_TO: Operation is not supported."
           "\nDEQUANTIZE: \n13 operations will run on the GPU, and the remaining 9 operations will run on the CPU.\n"
           "I0000 environment.cc:532] Selected adapter: llvmpipe (LLVM 15.0.6, 256 bits), arch=software, vendor=mesa")
    parsed = parse_delegate_log(log)
    assert parsed["unsupported"] == {"BROADCAST_TO": "Operation is not supported.", "DEQUANTIZE": ""}
    assert (parsed["gpu_ops"], parsed["cpu_ops"]) == (13, 9)
    assert parsed["adapter"] == "llvmpipe (LLVM 15.0.6, 256 bits)"


@pytest.mark.gpu_delegate
def test_gpu_check_catches_broadcast_to_and_the_pass_removes_it(tmp_path):
    """torch's GroupNorm lowers to BROADCAST_TO, which the GPU delegate rejects; the pass fixes it."""
    import litert_torch

    comp = _component()
    plain = tmp_path / "plain.tflite"
    litert_torch.convert(comp.module, sample_kwargs=comp.example_inputs).export(str(plain))
    res = check_gpu(plain)
    if not res.available:
        pytest.skip(f"no Vulkan GPU adapter here: {res.error} (run scripts/setup.sh)")
    assert not res.fully_accelerated and "BROADCAST_TO" in res.unsupported_ops
    graph = get_converter("android").convert(comp, tmp_path, "fp16")
    inputs = {"x": comp.example_inputs["x"].numpy()}
    fixed = check_gpu(tmp_path / graph.file, inputs)
    assert fixed.fully_accelerated and fixed.unsupported_ops == []
    assert rel_l2(fixed.outputs[0], comp.run(comp.example_inputs)[0].numpy()) < 2e-2  # GPU runs in fp16


def test_onnx_converter(tmp_path):
    comp = _component()
    graph = get_converter("onnx").convert(comp, tmp_path, "fp32")
    got = open_graph(tmp_path / graph.file, ["x"], ["y"]).run({"x": comp.example_inputs["x"].numpy()})[0]
    assert rel_l2(got, comp.run(comp.example_inputs)[0].numpy()) < 1e-5
