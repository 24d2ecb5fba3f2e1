"""Running what the user asked for: `--runtime torch` on a quantized model's bundle runs that quantized model
(not the float one), and `bench` / `eval` run an iOS bundle on the MIL interpreter (coreml-mil); a runtime
that cannot run a bundle is refused before anything runs. Real exports of the small digits model, real
quantization (PTQ), real runtimes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from mobilesd import cli
from mobilesd.errors import MobileSDError
from mobilesd.export import ExportOptions, export

PROMPT = "a handwritten digit three"


# -- quantized bundles -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def quantized_dir(tmp_path_factory):
    from bundles import quantized_w8a8

    return quantized_w8a8(tmp_path_factory)


@pytest.fixture(scope="module", params=[False, True], ids=["weights", "simulate-activations"])
def quantized_bundle(request, tmp_path_factory):
    from bundles import quantized_android_bundle

    return quantized_android_bundle(tmp_path_factory, request.param), request.param


def _diffusers_image(pipe, bundle, steps=3, guidance=3.0, seed=1) -> np.ndarray:
    """diffusers' own sampling loop (not mobilesd's) with the bundle's scheduler config."""
    import torch
    from diffusers import DPMSolverMultistepScheduler

    pipe.scheduler = DPMSolverMultistepScheduler.from_config(
        json.loads((bundle / "scheduler" / "scheduler_config.json").read_text()))
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        img = pipe(PROMPT, num_inference_steps=steps, guidance_scale=guidance, output_type="np",
                   generator=torch.Generator("cpu").manual_seed(seed)).images[0]
    return (img * 255).round().astype(np.uint8)


def test_torch_runtime_runs_the_quantized_model(quantized_bundle, quantized_dir):
    from mobilesd.loading import default_model_path, load_pipeline
    from mobilesd.pipeline import HostPipeline
    from mobilesd.quant import QuantizedModel

    bundle, simulate = quantized_bundle
    got = HostPipeline.from_bundle(bundle, runtime="torch").generate(PROMPT, steps=3, guidance=3.0, seed=1)
    # the quantized model, sampled by diffusers: its integer weights; its per-step activation quantization
    # only where the bundle's graphs have it (--simulate-activations), as the export verified the bundle
    qm = QuantizedModel.from_pretrained(quantized_dir)
    if not simulate:
        for layer in qm.layers["unet"].values():
            layer.act_quant = None
    ref_q = _diffusers_image(qm.pipe, bundle)
    ref_fp = _diffusers_image(load_pipeline(default_model_path()), bundle)
    d_q = np.abs(got.astype(int) - ref_q).astype(float)
    d_fp = np.abs(got.astype(int) - ref_fp).astype(float)
    assert d_q.max() <= 1, f"torch runtime vs the quantized model: max {d_q.max()}"
    assert d_fp.mean() > 4 * max(d_q.mean(), 1e-3), f"vs float {d_fp.mean():.3f}, vs quantized {d_q.mean():.3f}"


def test_torch_runtime_on_the_command_line(quantized_bundle, tmp_path, capsys):
    bundle, _ = quantized_bundle
    png = tmp_path / "q.png"
    rc = cli.main(["generate", "--bundle", str(bundle), "--runtime", "torch", "--prompt", PROMPT, "--steps", "2",
                   "--guidance", "3", "--out", str(png)])
    assert rc == 0 and png.is_file(), capsys.readouterr().err


def test_torch_runtime_refuses_a_missing_or_different_quantized_model(quantized_bundle, quantized_dir, tmp_path):
    from mobilesd.pipeline import HostPipeline

    bundle, _ = quantized_bundle
    with pytest.raises(MobileSDError, match="which is not here: --runtime torch would run the float model") as err:
        HostPipeline.from_bundle(bundle, runtime="torch", quantized=str(tmp_path / "moved"))
    assert "--quantized Q" in err.value.fix
    other = tmp_path / "w4"
    shutil.copytree(quantized_dir, other)
    cfg = json.loads((other / "quant_config.json").read_text())
    (other / "quant_config.json").write_text(json.dumps(dict(cfg, weight_bits=4)))
    with pytest.raises(MobileSDError, match="weight_bits: 4 here, 8 in the manifest"):
        HostPipeline.from_bundle(bundle, runtime="torch", quantized=str(other))


# -- iOS bundles on bench / eval ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ios_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("ios") / "ios"
    export(None, out, ExportOptions(target="ios", verify_steps=1, progress=False))
    return out


def test_bench_ios_bundle_on_the_mil_interpreter(ios_bundle, tmp_path, capsys):
    from mobilesd.latency.schema import validate_report

    for extra in ([], ["--runtime", "coreml-mil"]):  # the default is the runtime of the bundle's graphs
        out = tmp_path / f"bench{len(extra)}-{{runtime}}.json"
        rc = cli.main(["bench", "--bundle", str(ios_bundle), "--steps", "2", "--warmup", "0", "--repeats", "1",
                       "--guidance", "3", "--no-progress", "--out", str(out), *extra])
        assert rc == 0, capsys.readouterr().err
        report = json.loads((tmp_path / f"bench{len(extra)}-coreml-mil.json").read_text())
        validate_report(report)
        assert report["label"] == "host / coreml-mil" and report["runtime"]["name"] == "coreml"
        assert "MIL interpreter" in report["runtime"]["delegate"] and "not Core ML" in report["runtime"]["delegate"]
        assert report["stages"]["unet_step"]["calls_per_run"] == 2 and len(report["stages"]["unet_step"]["samples_s"]) == 2


def test_eval_ios_bundle_on_the_mil_interpreter(ios_bundle, tmp_path, capsys):
    out = tmp_path / "eval"
    rc = cli.main(["eval", "--bundle", str(ios_bundle), "--prompts", "2", "--seeds", "1", "--steps", "2",
                   "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    table = json.loads(out.with_suffix(".json").read_text())
    assert any("bundle (coreml-mil)" in json.dumps(row) for row in table["rows"]), table


@pytest.mark.parametrize("command", ["bench", "eval"])
def test_runtime_bundle_mismatch_is_refused_before_running(command, ios_bundle, onnx_bundle, tmp_path, capsys):
    base = {"bench": ["bench", "--steps", "1", "--repeats", "1", "--warmup", "0", "--no-progress",
                      "--out", str(tmp_path / "r-{runtime}.json")],
            "eval": ["eval", "--prompts", "1", "--seeds", "1", "--steps", "1"]}[command]
    for bundle, runtime, holds in ((ios_bundle, "tflite", "mlpackage"), (ios_bundle, "onnx", "mlpackage"),
                                   (onnx_bundle.root, "coreml-mil", "onnx")):
        rc = cli.main([*base, "--bundle", str(bundle), "--runtime", runtime])
        err = capsys.readouterr().err
        assert rc == 2, err
        assert f"holds {holds} graphs; it cannot run on --runtime {runtime}" in err and "fix:" in err
    assert not list(tmp_path.glob("r-*.json"))  # nothing ran, nothing written
