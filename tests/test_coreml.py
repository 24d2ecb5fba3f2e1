"""Core ML target (--target ios): conversion, compression modes, carried integer weights, W8A8, bad requests,
the exported bundle and its run through the MIL interpreter."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from mobilesd.errors import MobileSDError
from mobilesd.export import ExportOptions, export
from mobilesd.runtime import mil  # the MIL interpreter: a part of mobilesd, so an import error fails the tests

QUANTIZED = ["parts.down_0.resnets.0.conv1.weight",                                # conv 3x3
             "parts.down_0.attentions.0.proj_in.weight",                           # conv 1x1
             "parts.down_0.attentions.0.transformer_blocks.0.attn1.to_q.weight",   # linear (a 1x1 conv after the pass)
             "parts.down_0.attentions.0.transformer_blocks.0.ff.net.2.weight"]     # linear


def _small_component(pipe, stop: int = 2):
    """UNet stages stem + down_0 (conv, resnet, cross-attention transformer) of the tiny SD."""
    from mobilesd.components import Component, UNetChunk, unet_example_inputs

    chunk = UNetChunk(pipe.unet, 0, stop).eval()
    state = unet_example_inputs(pipe, 2)
    return Component("unet_chunk0", "unet", chunk, {n: state[n] for n in chunk.input_names()},
                     chunk.output_names(), meta={"aliases": chunk.aliases()})


def _quantize_in_place(module, names, bits=8, group=None):
    """Hand-made symmetric quantization of some weights: the module's weights become exactly scale * int."""
    params = dict(module.named_parameters())
    table = {}
    hi = (1 << (bits - 1)) - 1
    for n in names:
        w = params[n].detach().clone()
        o, i = w.shape[:2]
        tail = (1,) * (w.dim() - 2)
        if group:
            amax = w.reshape(o, i // group, group, *w.shape[2:]).abs().amax(dim=tuple(range(2, w.dim() + 1)))
            scale = (amax / hi).reshape(o, i // group, *tail)
            full = scale.repeat_interleave(group, dim=1)
        else:
            scale = (w.abs().reshape(o, -1).amax(dim=1) / hi).reshape(o, 1, *tail)
            full = scale
        ints = torch.clamp(torch.round(w / full), -hi - 1, hi)
        with torch.no_grad():
            params[n].copy_(full * ints)
        if group:  # block scales as quantizers often write them, [O, I/g] (lines up with the leading dims)
            scale = scale.reshape(o, i // group)
        table[n] = {"int": ints.numpy().astype(np.int8), "scale": scale.numpy().astype(np.float32),
                    "zero_point": None, "bits": bits, "group_size": group}
    return table


def _rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _check_numerics(path, comp, bound):
    ref = [r.numpy() for r in comp.run(comp.example_inputs)]
    got = mil.interpret(path, {k: v.numpy() for k, v in comp.example_inputs.items()})
    got = list(got.values()) if isinstance(got, dict) else got
    errs = [_rel_l2(g, r) for g, r in zip(got, ref)]
    assert max(errs) < bound, errs
    return max(errs)


@pytest.fixture(scope="session")
def quantized_small(tiny_pipe):
    pipe = copy.copy(tiny_pipe)
    pipe.unet = copy.deepcopy(tiny_pipe.unet)   # the session's pipeline keeps its weights
    comp = _small_component(pipe)
    comp.quantized_weights = _quantize_in_place(comp.module, QUANTIZED, bits=8)
    return comp


# ---- conversion ---------------------------------------------------------------------------------------

def test_default_conversion_names_and_layout(tiny_pipe, tmp_path):
    from mobilesd.converters import get_converter
    from mobilesd.converters.coreml import load_package_program

    comp = _small_component(tiny_pipe)
    g = get_converter("ios").convert(comp, tmp_path, "fp16")
    assert g.file == "unet_chunk0.mlpackage" and (tmp_path / g.file / "Manifest.json").exists()
    assert g.passes == ["split_einsum_attention"] and g.meta["coreml"]["min_deployment_target"] == "iOS17"
    assert g.meta["coreml"]["compute_precision"] == "float16"
    prog = load_package_program(tmp_path / g.file)
    func = prog.functions["main"]
    assert list(func.inputs) == list(comp.example_inputs)          # sample, timestep, encoder_hidden_states
    assert [o.name for o in func.outputs] == g.meta["file_output_names"] == comp.output_names
    kinds = {op.op_type for op in func.operations}
    assert "einsum" in kinds and "matmul" not in kinds, "split-einsum attention is Core ML's native einsum"
    assert g.size_bytes == sum(p.stat().st_size for p in (tmp_path / g.file).rglob("*") if p.is_file())
    _check_numerics(tmp_path / g.file, comp, 2e-2)


# ---- compression ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("precision,options,op_type,bound", [
    ("int8", {"attention": "original"}, "constexpr_affine_dequantize", 8e-2),
    ("int4", {"min_deployment_target": "iOS18"}, "constexpr_blockwise_shift_scale", 3e-1),
    ("fp16", {"palettize": 8}, "constexpr_lut_to_dense", 5e-2),
    ("fp16", {"palettize": 6}, "constexpr_lut_to_dense", 1.2e-1),
    ("fp16", {"palettize": 4, "palettize_mode": "uniform"}, "constexpr_lut_to_dense", 3e-1),
])
def test_compression_modes(tiny_pipe, tmp_path, precision, options, op_type, bound):
    from mobilesd.converters import get_converter
    from mobilesd.converters.coreml import load_package_program

    comp = _small_component(tiny_pipe)
    conv = get_converter("ios", options)
    g = conv.convert(comp, tmp_path, precision)
    c = g.meta["compression"]
    assert c["compressed_tensors"].get(op_type, 0) > 0 and c["mode"] == conv.compression_mode(precision)
    ops = {op.op_type for op in load_package_program(tmp_path / g.file).functions["main"].operations}
    assert op_type in ops
    assert c["weight_file_bytes"] < sum(p.numel() * 2 for p in comp.module.parameters())  # under fp16 size
    _check_numerics(tmp_path / g.file, comp, bound)


# ---- integer weights from our quantizer ------------------------------------------------------------------

def _carried(path):
    from mobilesd.converters.coreml import load_package_program

    return {op.name: op for op in load_package_program(path).functions["main"].operations
            if op.name.endswith("_carried")}


def test_quantized_weights_are_carried_bit_exact(quantized_small, tmp_path):
    from mobilesd.converters import get_converter

    comp = copy.copy(quantized_small)
    comp.float_layers = ["parts.down_0.resnets.0.conv2"]        # the quantized model's policy keeps it float
    g = get_converter("ios").convert(comp, tmp_path, "int8")   # the other weights: coremltools' int8
    assert g.meta["compression"]["float_layers_kept"] == 1
    summary = g.meta["quantized_weights"]
    assert summary["count"] == len(QUANTIZED) and summary["op"] == "constexpr_affine_dequantize"
    ops = _carried(tmp_path / g.file)
    for entry in summary["params"]:
        op = ops[entry["const"]]
        assert op.op_type == "constexpr_affine_dequantize"
        q = comp.quantized_weights[entry["param"]]
        data = op.quantized_data.val
        assert data.dtype == np.int8 and np.array_equal(data.reshape(q["int"].shape), q["int"])  # bit for bit
        assert np.array_equal(op.scale.val, q["scale"].reshape(-1).astype(np.float16))
    from mobilesd.converters.coreml import load_package_program

    consts = {op.name: op.op_type for op in load_package_program(tmp_path / g.file).functions["main"].operations}
    assert consts.get("p_parts_down_0_resnets_0_conv2_weight_to_fp16") == "const", "a float layer stays float"
    _check_numerics(tmp_path / g.file, comp, 8e-2)


def test_groupwise_4bit_weights_need_ios18(tiny_pipe, tmp_path):
    from coremltools.converters.mil.mil import types
    from mobilesd.converters import get_converter

    pipe = copy.copy(tiny_pipe)
    pipe.unet = copy.deepcopy(tiny_pipe.unet)
    comp = _small_component(pipe)
    comp.quantized_weights = _quantize_in_place(comp.module, QUANTIZED, bits=4, group=8)
    with pytest.raises(MobileSDError, match="iOS18"):
        get_converter("ios").convert(comp, tmp_path, "fp16")
    g = get_converter("ios", {"min_deployment_target": "iOS18"}).convert(comp, tmp_path, "fp16")
    assert g.meta["quantized_weights"]["op"] == "constexpr_blockwise_shift_scale"
    ops = _carried(tmp_path / g.file)
    for entry in g.meta["quantized_weights"]["params"]:
        op, q = ops[entry["const"]], comp.quantized_weights[entry["param"]]
        data = op.data.val
        assert np.array_equal(data.reshape(q["int"].shape).astype(np.int8), q["int"])
        assert types.builtin_to_string(op.data.dtype) == "int4"
        assert list(op.scale.val.shape)[:2] == [q["int"].shape[0], q["int"].shape[1] // 8]
    _check_numerics(tmp_path / g.file, comp, 3e-1)


def test_static_activation_quantization(quantized_small, tmp_path):
    from mobilesd.converters import get_converter
    from mobilesd.converters.coreml import load_package_program

    comp = copy.copy(quantized_small)
    x_scales = np.array([0.02, 0.05, 0.03], np.float32)
    comp.activation_scales = {
        "parts.down_0.resnets.0.conv1": {"scale": x_scales, "zero_point": 0, "timesteps": [999, 500, 1]},
        "parts.down_0.attentions.0.transformer_blocks.0.ff.net.2": {"scale": x_scales * 2, "zero_point": 0,
                                                                    "timesteps": [999, 500, 1]}}
    g = get_converter("ios").convert(comp, tmp_path, "fp16")
    act = g.meta["activation_quantization"]
    assert act["count"] == 2 and act["layers"][0]["scale"] == pytest.approx(0.05)
    ops = load_package_program(tmp_path / g.file).functions["main"].operations
    q = [op for op in ops if op.op_type == "quantize"]
    assert len(q) == 2 and len([op for op in ops if op.op_type == "dequantize"]) == 2
    assert sorted(float(op.scale.val) for op in q) == pytest.approx([0.05, 0.1], rel=1e-3)
    with pytest.raises(MobileSDError, match="iOS17"):
        get_converter("ios", {"min_deployment_target": "iOS16"}).convert(comp, tmp_path, "fp16")


# ---- bad requests: clear errors, nothing written -----------------------------------------------------------

def _nothing_left(out):
    assert not out.exists() and not list(out.parent.glob(f".{out.name}.partial-*"))


@pytest.mark.parametrize("opts,match", [
    ({"target": "android", "attention": "split-einsum"}, "split-einsum is the Core ML"),
    ({"target": "onnx", "palettize": 6}, "--palettize is not supported for --target onnx"),
    ({"target": "ios", "precision": "int4"}, "iOS18"),
    ({"target": "ios", "precision": "int8", "palettize": 6}, "cannot be combined"),
    ({"target": "ios", "unet_chunks": 1, "unet_max_mb": 0.05}, "cannot fit"),
    ({"target": "ios", "unet_chunks": 50}, "cannot fit"),
    ({"target": "ios", "min_deployment_target": "iOS15"}, "not supported"),
])
def test_bad_requests_fail_cleanly(tiny_model_dir, tmp_path, opts, match):
    out = tmp_path / "bundle"
    with pytest.raises(MobileSDError, match=match):
        export(tiny_model_dir, out, ExportOptions(progress=False, **opts))
    _nothing_left(out)


# ---- the bundle -----------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def ios_bundle(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "ios"
    return export(tiny_model_dir, out, ExportOptions(target="ios", unet_chunks=2, verify_steps=2, progress=False))


def test_ios_bundle_manifest(ios_bundle):
    from mobilesd.bundle import folder_sha256, load_bundle

    m = ios_bundle.manifest
    assert m["target"] == "ios" and m["precision"] == "fp16"
    assert [g["name"] for g in m["graphs"]] == ["text_encoder", "unet_chunk0", "unet_chunk1", "vae_decoder"]
    for g in m["graphs"]:
        assert g["format"] == "mlpackage" and g["file"].endswith(".mlpackage")
        assert g["sha256"] == folder_sha256(m["files"], g["file"])
        v = g["verification"]
        assert v["runtime"] == "coreml-mil" and v["passed"] and v["rel_l2"] <= v["threshold"]
        facts = g["static_facts"]
        assert facts["op_counts"] and facts["compute_precision"] and "neural_engine" in facts
        assert g["meta"]["coreml"]["attention"] == ("split-einsum" if g["role"] == "unet" else "original")
        assert g["meta"]["compression"]["mode"] == "none-fp16"
    assert m["graphs"][1]["passes"] == ["split_einsum_attention"]
    assert {"tokenizer/vocab.json", "scheduler/scheduler_config.json"} <= set(m["files"])
    e2e = m["verification"]["end_to_end"]
    assert e2e["passed"] and e2e["runtime"] == "coreml-mil"
    load_bundle(ios_bundle.root)  # every checksum


def test_generate_on_coreml_mil_matches_torch(ios_bundle, tiny_model_dir):
    """The acceptance check on the tiny model: the bundle's image through the MIL interpreter vs PyTorch."""
    from mobilesd.pipeline import HostPipeline

    kw = {"prompt": "a handwritten digit seven", "steps": 3, "guidance": 7.5, "seed": 1, "output": "float"}
    got = HostPipeline.from_bundle(ios_bundle.root, runtime="coreml-mil").generate(**kw)
    ref = HostPipeline.from_bundle(ios_bundle.root, runtime="torch", model=str(tiny_model_dir)).generate(**kw)
    assert got.shape == ref.shape
    assert np.abs(got - ref).mean() < 1e-2   # fp16 compute (emulated) vs fp32 PyTorch


def test_cli_flags(tiny_model_dir, tmp_path, capsys):
    from mobilesd.cli import main

    out = tmp_path / "b"
    rc = main(["export", "--model", str(tiny_model_dir), "--target", "android", "--attention", "split-einsum",
               "--out", str(out), "--quiet"])
    assert rc == 2 and "--attention split-einsum is not supported for --target android" in capsys.readouterr().err
    rc = main(["export", "--model", str(tiny_model_dir), "--target", "ios", "--precision", "int4",
               "--min-deployment-target", "iOS17", "--out", str(out), "--quiet"])
    assert rc == 2 and "--min-deployment-target iOS18" in capsys.readouterr().err
    _nothing_left(out)


def test_generate_cli_coreml_mil(ios_bundle, tmp_path):
    from PIL import Image

    from mobilesd.cli import main

    png = tmp_path / "seven.png"
    assert main(["generate", "--bundle", str(ios_bundle.root), "--prompt", "a handwritten digit seven", "--steps", "2",
                 "--out", str(png)]) == 0   # default runtime of an ios bundle: coreml-mil
    assert Image.open(png).size == (16, 16)
