"""Host bench: aggregation of on_stage timings, report wiring, and (slow) the real HostPipeline on a
tiny exported bundle, side by side, rendered with an estimate and an app report."""

import json
from pathlib import Path

import pytest

from mobilesd.cli import main
from mobilesd.errors import MobileSDError
from mobilesd.latency.bench import RunRecorder, aggregate, bench_runtime, ratio_table
from mobilesd.latency.schema import load_report, validate_report

APP = Path(__file__).parent / "data" / "latency_app_report.json"


def _record(step_times, chunk_calls=1, text=0.01, dec=0.05):
    rec = RunRecorder()
    rec("text_encoder", text)
    for s in step_times:
        for _ in range(chunk_calls):  # sequential CFG: every chunk runs twice per step
            rec("unet_chunk_0", s * 0.4 / chunk_calls)
            rec("unet_chunk_1", s * 0.6 / chunk_calls)
        rec("unet_step", s)
    rec("vae_decoder", dec)
    rec("end_to_end", text + sum(step_times) + dec)
    return rec


def test_aggregate_medians_spread_and_timeline():
    runs = [_record([0.10, 0.20, 0.30]), _record([0.30, 0.20, 0.10]), _record([0.20, 0.20, 0.20], chunk_calls=2)]
    stages, timeline = aggregate(runs, [1.5], steps=3)
    assert stages["load"]["median_s"] == 1.5
    assert stages["unet_step"]["median_s"] == pytest.approx(0.2)
    assert len(stages["unet_step"]["samples_s"]) == 9 and stages["unet_step"]["calls_per_run"] == 3
    assert (stages["unet_step"]["min_s"], stages["unet_step"]["max_s"]) == (0.1, 0.3)
    # chunk times are per step (summed over the two sequential-CFG calls)
    assert stages["unet_chunk_0"]["median_s"] == pytest.approx(0.08)
    assert [t["seconds"] for t in timeline] == pytest.approx([0.2, 0.2, 0.2])
    assert timeline[0]["chunks_s"] == pytest.approx([0.08, 0.12])
    assert stages["end_to_end"]["median_s"] == pytest.approx(0.66)


def test_aggregate_rejects_missing_step_timings():
    with pytest.raises(MobileSDError, match="unet_step"):
        aggregate([_record([0.1, 0.1])], [], steps=3)


class StubPipeline:
    """Stands in for HostPipeline in the fast wiring test only (the slow test below runs the real one):
    reports stages through on_stage like HostPipeline does, with fixed durations."""

    load_seconds = 0.5

    def __init__(self, runtime):
        self.scale = {"tflite": 1.0, "onnx": 2.0}[runtime]
        self.calls = 0

    def generate(self, prompt, negative_prompt="", steps=20, guidance=7.5, seed=0, scheduler=None, on_stage=None):
        self.calls += 1
        on_stage("text_encoder", 0.01 * self.scale)
        for _ in range(steps):
            on_stage("unet_chunk_0", 0.1 * self.scale)
            on_stage("unet_step", 0.1 * self.scale)
        on_stage("vae_decoder", 0.2 * self.scale)
        on_stage("end_to_end", (0.21 + 0.1 * steps) * self.scale)


def _fake_bundle(tmp_path):
    b = tmp_path / "bundle"
    b.mkdir()
    (b / "manifest.json").write_text(json.dumps({
        "bundle_id": "android-test", "precision": "fp16", "cfg": {"unet_batch": 1},
        "image": {"width": 256, "height": 256}, "source": {"model": "/somewhere/tiny-model"},
        "graphs": [{"name": "unet", "role": "unet", "file": "unet.tflite", "format": "tflite"}]}))
    return b


def test_bench_runtime_report(tmp_path):
    bundle = _fake_bundle(tmp_path)
    pipes = {}

    def factory(b, runtime, threads):
        pipes[runtime] = StubPipeline(runtime)
        return pipes[runtime]

    reps = [bench_runtime(bundle, rt, warmup=2, repeats=3, steps=4, progress=False, pipeline_factory=factory)
            for rt in ("tflite", "onnx")]
    for rep in reps:
        validate_report(rep)
    assert pipes["tflite"].calls == 5  # warm-ups run but are not in the statistics
    r = reps[0]
    assert r["protocol"] == {"warmup": 2, "repeats": 3, "clock": "time.perf_counter"}
    assert r["settings"]["cfg_mode"] == "sequential" and r["settings"]["width"] == 256
    assert r["stages"]["load"]["median_s"] == 0.5
    assert len(r["stages"]["unet_step"]["samples_s"]) == 12
    assert r["bundle"]["model"] == "tiny-model" and len(r["bundle"]["manifest_sha256"]) == 64
    assert r["memory"]["peak_rss_bytes"] > 10 * 2**20
    rows = {name: ratios for name, _, ratios in ratio_table(reps)}
    assert rows["unet_step"][1] == pytest.approx(2.0)
    assert rows["end_to_end"][0] == 1.0


def test_bench_cli_errors(tmp_path, capsys):
    assert main(["bench", "--bundle", str(tmp_path)]) == 2
    assert "not a bundle" in capsys.readouterr().err
    bundle = _fake_bundle(tmp_path)
    assert main(["bench", "--bundle", str(bundle), "--runtime", "tensorrt"]) == 2
    assert "unknown runtime" in capsys.readouterr().err
    assert main(["bench", "--bundle", str(bundle), "--threads", "0"]) == 2


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    from mobilesd.architectures import save_random_pipeline
    from mobilesd.export import ExportOptions, export

    root = tmp_path_factory.mktemp("bench")
    model = save_random_pipeline(root / "model", "tiny")  # a path: --runtime torch reloads the source model
    out = root / "bundle"
    export(model, out=out,
           options=ExportOptions(target="android", skip_gpu_check=True, progress=False, unet_chunks=2))
    return out


@pytest.mark.slow
def test_bench_estimate_app_render_together(tiny_bundle, tmp_path, capsys):
    """Acceptance: bench (two runtimes side by side, real HostPipeline), estimate from the bundle's graphs
    and the hand-written app report all validate and render in one HTML."""
    out = tmp_path / "bench-{runtime}.json"
    assert main(["bench", "--bundle", str(tiny_bundle), "--runtime", "tflite,torch", "--steps", "3",
                 "--warmup", "1", "--repeats", "2", "--threads", "2", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "torch / tflite" in text  # the ratio column of side-by-side mode
    benches = [load_report(tmp_path / f"bench-{rt}.json") for rt in ("tflite", "torch")]
    for rep in benches:
        assert {"load", "text_encoder", "unet_step", "unet_chunk_0", "unet_chunk_1", "vae_decoder",
                "end_to_end"} <= set(rep["stages"])
        assert len(rep["steps"]) == 3 and len(rep["steps"][0]["chunks_s"]) == 2
        assert rep["device"]["cpu_threads"] == 2
    est = tmp_path / "est.json"
    assert main(["estimate", "--bundle", str(tiny_bundle), "--device", "s23", "--steps", "3", "--out", str(est)]) == 0
    est_rep = load_report(est)
    assert est_rep["estimate"]["source"].startswith("tflite:")
    assert {"unet_chunk_0", "unet_chunk_1"} <= set(est_rep["stages"])
    html = tmp_path / "report.html"
    assert main(["report", str(tmp_path / "bench-tflite.json"), str(tmp_path / "bench-torch.json"), str(est),
                 str(APP), "--out", str(html)]) == 0
    from test_latency_report import chromium_image_check

    loaded = chromium_image_check(html, tmp_path)
    if loaded is not None:
        assert len(loaded) == 3 and all(w > 100 for _, w, _ in loaded)
