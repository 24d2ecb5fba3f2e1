"""Host bench: aggregation of on_stage timings, and the real HostPipeline benchmarked on the test run's tiny
bundle (LiteRT and PyTorch side by side), rendered with an estimate and the synthetic app example."""

import hashlib
import threading
from pathlib import Path

import psutil
import pytest

from mobilesd.cli import main
from mobilesd.errors import MobileSDError
from mobilesd.latency.bench import RunRecorder, aggregate, bench_runtime, ratio_table
from mobilesd.latency.schema import load_report, validate_report

APP = Path(__file__).parent / "data" / "latency_app_report.json"
CHUNKS = ("unet_chunk_0", "unet_chunk_1", "unet_chunk_2")  # android_bundle: the UNet in 3 chunks


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


class _RssSampler:
    """Samples this process's RSS from a thread, only while ``active`` (the pipeline loading or generating), so
    every sample precedes the bench's own peak reading at the end."""

    def __init__(self):
        self.proc, self.samples, self.active, self.stop = psutil.Process(), [], threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            if self.active.is_set():
                self.samples.append(self.proc.memory_info().rss)
            self.stop.wait(0.005)


class _MeasuredPipeline:
    """The real HostPipeline, with its generate() calls counted (warm-ups must run but stay out of the stats)."""

    def __init__(self, bundle, runtime, threads, sampler):
        from mobilesd.pipeline import HostPipeline

        self.sampler = sampler
        sampler.active.set()
        try:
            self.pipe = HostPipeline.from_bundle(bundle, runtime=runtime, threads=threads)
        finally:
            sampler.active.clear()
        self.load_seconds = self.pipe.load_seconds
        self.calls = 0

    def generate(self, *args, **kwargs):
        self.calls += 1
        self.sampler.active.set()
        try:
            return self.pipe.generate(*args, **kwargs)
        finally:
            self.sampler.samples.append(self.sampler.proc.memory_info().rss)
            self.sampler.active.clear()


def _bench_sampling_rss(bundle, runtime, pipes, **kw):
    """bench_runtime on the real pipeline; returns (report, highest RSS seen while the pipeline loaded or ran)."""
    sampler = _RssSampler()

    def factory(b, rt, threads):
        pipes[rt] = _MeasuredPipeline(b, rt, threads, sampler)
        return pipes[rt]

    sampler.thread.start()
    try:
        rep = bench_runtime(bundle, runtime, progress=False, pipeline_factory=factory, **kw)
    finally:
        sampler.stop.set()
        sampler.thread.join()
    return rep, max(sampler.samples)


def test_bench_runtime_report(android_bundle, tiny_model_dir):
    pipes = {}
    steps, warmup, repeats = 3, 2, 3
    results = [_bench_sampling_rss(android_bundle.root, rt, pipes, warmup=warmup, repeats=repeats, steps=steps)
               for rt in ("tflite", "torch")]
    reps = [r for r, _ in results]
    for rep in reps:
        validate_report(rep)
    for rt in ("tflite", "torch"):
        assert pipes[rt].calls == warmup + repeats  # warm-ups run ...
    for (rep, rss_seen), rt in zip(results, ("tflite", "torch")):
        st = rep["stages"]
        # ... but are not in the statistics: one sample per timed run, one per step of each timed run
        assert len(st["end_to_end"]["samples_s"]) == repeats and len(st["unet_step"]["samples_s"]) == repeats * steps
        assert set(CHUNKS) <= set(st) and len(rep["steps"]) == steps and len(rep["steps"][0]["chunks_s"]) == 3
        # stages nest: per timed run, text encoder + every step + decoder fit inside the end-to-end time
        for k in range(repeats):
            inner = (st["text_encoder"]["samples_s"][k] + sum(st["unet_step"]["samples_s"][k * steps:(k + 1) * steps])
                     + st["vae_decoder"]["samples_s"][k])
            assert inner <= st["end_to_end"]["samples_s"][k] + 1e-6, (rt, k)
        for j in range(repeats * steps):  # the chunks of a step run inside it
            assert sum(st[c]["samples_s"][j] for c in CHUNKS) <= st["unet_step"]["samples_s"][j] + 1e-6
        assert st["load"]["median_s"] == pytest.approx(pipes[rt].load_seconds)
        # peak RSS is a high-water mark in bytes: (about) at least every RSS the sampler saw during this bench;
        # the kernel's ru_maxrss can trail a sampled RSS by a few hundred KiB, hence 1 %
        assert 0.99 * rss_seen <= rep["memory"]["peak_rss_bytes"] <= psutil.virtual_memory().total
    r = reps[0]
    assert r["protocol"] == {"warmup": warmup, "repeats": repeats, "clock": "time.perf_counter"}
    assert r["settings"]["cfg_mode"] == "batch" and (r["settings"]["width"], r["settings"]["height"]) == (16, 16)
    assert r["runtime"]["precision"] == "fp16" and reps[1]["runtime"]["precision"] == "fp32"
    manifest = android_bundle.root / "manifest.json"
    assert r["bundle"] == {"id": android_bundle.manifest["bundle_id"], "model": Path(tiny_model_dir).name,
                           "manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest()}
    rows = {name: (med, ratios) for name, med, ratios in ratio_table(reps)}
    med, ratios = rows["unet_step"]
    assert med == [rep["stages"]["unet_step"]["median_s"] for rep in reps]
    assert ratios == [1.0, pytest.approx(med[1] / med[0])]


def test_bench_cli_errors(android_bundle, tmp_path, capsys):
    assert main(["bench", "--bundle", str(tmp_path)]) == 2
    assert "not a bundle" in capsys.readouterr().err
    assert main(["bench", "--bundle", str(android_bundle.root), "--runtime", "tensorrt"]) == 2
    assert "unknown runtime" in capsys.readouterr().err
    assert main(["bench", "--bundle", str(android_bundle.root), "--threads", "0"]) == 2
    assert "--threads 0" in capsys.readouterr().err


def test_bench_estimate_app_render_together(android_bundle, tmp_path, capsys):
    """`mobilesd bench` (two runtimes side by side), `mobilesd estimate --bundle` on the same bundle and the
    synthetic app example validate and render in one HTML page that Chromium displays."""
    from test_latency_report import chromium_image_check

    bundle = str(android_bundle.root)
    out = tmp_path / "bench-{runtime}.json"
    assert main(["bench", "--bundle", bundle, "--runtime", "tflite,torch", "--steps", "3",
                 "--warmup", "1", "--repeats", "2", "--threads", "2", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "torch / tflite" in text  # the ratio column of side-by-side mode
    benches = [load_report(tmp_path / f"bench-{rt}.json") for rt in ("tflite", "torch")]
    for rep in benches:
        assert {"load", "text_encoder", "unet_step", *CHUNKS, "vae_decoder", "end_to_end"} <= set(rep["stages"])
        assert len(rep["steps"]) == 3 and len(rep["steps"][0]["chunks_s"]) == 3
        assert rep["device"]["cpu_threads"] == 2
    est = tmp_path / "est.json"
    assert main(["estimate", "--bundle", bundle, "--device", "s23", "--steps", "3", "--out", str(est)]) == 0
    est_rep = load_report(est)
    assert est_rep["estimate"]["source"].startswith("tflite:")
    assert set(CHUNKS) <= set(est_rep["stages"])
    html = tmp_path / "report.html"
    assert main(["report", str(tmp_path / "bench-tflite.json"), str(tmp_path / "bench-torch.json"), str(est),
                 str(APP), "--out", str(html)]) == 0
    page = html.read_text()
    assert page.count("<span class=\"nc\">not comparable</span>") == 3  # two host runs and a 16x16 estimate
    assert page.count("<span class=\"synthetic\">synthetic example</span>") == 1
    loaded = chromium_image_check(html, tmp_path)
    assert len(loaded) == 3 and all(img["complete"] and img["w"] > 100 for img in loaded)
