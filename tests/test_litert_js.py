"""The LiteRT.js check of web bundles (mobilesd/litert_js.py) in real headless Chromium: every graph of the default
model runs on WebGPU (SwiftShader) in fp32 and fp16 within the GPU bound; the fp16 NaN of a text encoder without
the finite-mask pass is caught; a graph WebGPU cannot run fails unless WASM is allowed; the entries satisfy the
manifest schema's ``litert_js`` definition."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mobilesd import verify
from mobilesd.litert_js import BrowserSession, GraphToCheck, check_graph, check_graphs, failures

from test_app_web import export_bundle   # the bundles the browser tests share (one export per session)

SCHEMA = Path(__file__).resolve().parents[1] / "mobilesd" / "schemas" / "manifest.schema.json"


@pytest.fixture(scope="module")
def browser():
    with BrowserSession() as session:
        yield session


def _litert_js_validator():
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    return jsonschema.Draft202012Validator({**schema["$defs"]["litert_js"], "$defs": schema["$defs"]})


def graphs_to_check(pipe, bundle) -> list[GraphToCheck]:
    """Every graph of ``bundle`` with PyTorch's outputs on the export's fixed inputs (what the exporter compares)."""
    from mobilesd.components import make_unet_chunk, text_encoder_component, unet_example_inputs, vae_decoder_component

    m = bundle.manifest
    by_name = {g["name"]: g for g in m["graphs"]}

    def entry(g, inputs, outputs):
        return GraphToCheck(g["name"], bundle.path(g["file"]), {k: v.numpy() for k, v in inputs.items()},
                            {o["name"]: r.numpy() for o, r in zip(g["outputs"], outputs)},
                            [o["name"] for o in g["outputs"]])

    te = text_encoder_component(pipe)
    out = [entry(by_name["text_encoder"], te.example_inputs, te.run(te.example_inputs))]
    state = unet_example_inputs(pipe, m["cfg"]["unet_batch"])
    for name in m["unet"]["chunks"]:
        g = by_name[name]
        chunk = make_unet_chunk(pipe.unet, *g["meta"]["stage_range"]).eval()
        inputs = {n: state[n] for n in chunk.input_names()}
        with torch.no_grad():
            res = chunk(**inputs)
        res = [res] if isinstance(res, torch.Tensor) else list(res)
        out.append(entry(g, inputs, res))
        state.update(zip(chunk.output_names(), res))
        state.update({alias: state[src] for alias, src in chunk.aliases().items()})
    vd = vae_decoder_component(pipe)
    out.append(entry(by_name["vae_decoder"], vd.example_inputs, vd.run(vd.example_inputs)))
    return out


@pytest.fixture(scope="module")
def default_pipe():
    from mobilesd.loading import default_model_path, load_pipeline

    return load_pipeline(default_model_path())


@pytest.fixture(scope="module")
def default_web_bundle(tmp_path_factory):
    """Exported before ``browser`` starts (listed first): the export runs its own Playwright session, which
    cannot start inside a running one (found running this test alone, when no earlier test had exported it)."""
    return export_bundle("default", tmp_path_factory)


def test_every_graph_runs_on_webgpu_in_fp32_and_fp16(default_web_bundle, browser, default_pipe):
    bundle = default_web_bundle
    # a web export records its own LiteRT.js check in the manifest: test that; without one, run the check here
    recorded = {g["name"]: g["litert_js"] for g in bundle.manifest["graphs"] if "litert_js" in g}
    results = recorded if len(recorded) == len(bundle.manifest["graphs"]) else check_graphs(
        graphs_to_check(default_pipe, bundle), allow_wasm=False, precision="fp16", session=browser)
    validator = _litert_js_validator()
    for name, r in results.items():
        assert not list(validator.iter_errors(r)), (name, [e.message for e in validator.iter_errors(r)])
        assert r["accelerator"] == "webgpu", (name, r)
        assert r["passed"], (name, r["error"])
        assert r["output_rel_l2"] <= r["threshold"] and r["output_rel_l2_fp16"] <= r["threshold"], (name, r)
        assert r["threshold"] == verify.GPU_THRESHOLDS["fp16"]
        json.dumps(r, allow_nan=False)   # strict JSON, as the manifest is
    # measured (software WebGPU, fp32 compute): 1e-4 text encoder, 7e-5 UNet, 2e-6 decoder vs PyTorch; the fp16
    # runs 6e-4 to 8e-4. The fp32 path is the export's own fp16-weight numerics, so it stays near the CPU error.
    assert max(r["output_rel_l2"] for r in results.values()) < 1e-3
    assert max(r["output_rel_l2_fp16"] for r in results.values()) < 1e-2
    assert failures(results) == []


def test_fp16_nan_of_an_infinite_causal_mask_is_caught(browser, default_pipe, tmp_path):
    """The graph the pass exists for: a text encoder converted without finite_causal_mask holds the -inf mask,
    runs in fp32 and gives all NaN with precision fp16. The check must fail it and say why."""
    from mobilesd.components import text_encoder_component
    from mobilesd.converters.tflite import TFLiteConverter

    comp = text_encoder_component(default_pipe)
    conv = TFLiteConverter()
    conv.passes = [p for p in conv.passes if p != "finite_causal_mask"]
    graph = conv.convert(comp, tmp_path, "fp16")
    ref = comp.run(comp.example_inputs)[0].numpy()
    r = check_graph(tmp_path / graph.file, {"input_ids": comp.example_inputs["input_ids"].numpy()},
                    {"last_hidden_state": ref}, ["last_hidden_state"], allow_wasm=True, session=browser)
    assert r["accelerator"] == "webgpu"
    assert r["output_rel_l2"] is not None and r["output_rel_l2"] < 1e-3, "fp32 is fine"
    assert r["output_rel_l2_fp16"] is None and not r["passed"]
    assert "fp16" in r["error"] and "NaN" in r["error"], r["error"]


class _TwoDimGather(torch.nn.Module):
    """A GATHER with 2-D indices, which the LiteRT GPU accelerator refuses (../shared/PROBES.md)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("index", torch.tensor([[0, 2], [1, 3]]))

    def forward(self, x):
        return x[:, self.index] * 2.0


def test_a_graph_webgpu_cannot_run_fails_unless_wasm_is_allowed(browser, tmp_path):
    import litert_torch

    x = torch.randn(1, 8)
    path = tmp_path / "gather.tflite"
    litert_torch.convert(_TwoDimGather().eval(), (x,)).export(str(path))
    ref = (_TwoDimGather()(x)).numpy()
    strict = check_graph(path, {"args_0": x.numpy()}, {"y": ref}, ["y"], allow_wasm=False, session=browser)
    assert strict["accelerator"] == "none" and not strict["passed"], strict
    assert "WebGPU" in strict["error"] or "webgpu" in strict["error"].lower(), strict["error"]
    lenient = check_graph(path, {"args_0": x.numpy()}, {"y": ref}, ["y"], allow_wasm=True, session=browser)
    assert lenient["accelerator"] == "wasm" and lenient["passed"], lenient
    assert lenient["output_rel_l2"] < 1e-6
    assert lenient["output_rel_l2_fp16"] is None


class _Affine(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(8, 4)

    def forward(self, x):
        return torch.tanh(self.linear(x))


@pytest.fixture(scope="module")
def small_graph(tmp_path_factory):
    """A two-op graph: cheap to compile on software WebGPU, for the checks of the check itself."""
    import litert_torch

    torch.manual_seed(0)
    module, x = _Affine().eval(), torch.randn(2, 8)
    path = tmp_path_factory.mktemp("small") / "affine.tflite"
    litert_torch.convert(module, (x,)).export(str(path))
    with torch.no_grad():
        ref = module(x).numpy()
    return path, {"args_0": x.numpy()}, {"y": ref}


def test_compile_only_records_the_accelerator_without_numbers(browser, small_graph):
    path, inputs, ref = small_graph
    r = check_graph(path, inputs, ref, ["y"], allow_wasm=False, run=False, session=browser)
    assert r["accelerator"] == "webgpu" and r["passed"] and r["output_rel_l2"] is None and r["ran"] is False


def test_outputs_far_from_the_reference_fail_the_check(browser, small_graph):
    """The comparison is real: the same graph passes against PyTorch and fails against other numbers."""
    path, inputs, ref = small_graph
    good = check_graph(path, inputs, ref, ["y"], allow_wasm=False, session=browser)
    assert good["passed"] and good["output_rel_l2"] < 1e-5 and good["output_rel_l2_fp16"] < 1e-2, good
    bad = check_graph(path, inputs, {"y": ref["y"] + 0.5}, ["y"], allow_wasm=False, session=browser)
    assert not bad["passed"] and "output error" in bad["error"], bad
