"""Host benchmark of a bundle: warm-ups, timed repeats, per-stage medians and spread, a schema report.

Timings come from HostPipeline's ``on_stage(name, seconds)`` callback, so the host measures exactly the
stages an app reports: load, text_encoder, unet_step (whole step incl. CFG), unet_chunk_<i>, vae_decoder,
end_to_end.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

from mobilesd.errors import MobileSDError
from mobilesd.latency.schema import SCHEMA_VERSION, TARGET_SECONDS, now_iso, sha256_file, stage_stats

RUNTIME_DELEGATE = {"tflite": "xnnpack", "onnx": "CPUExecutionProvider", "torch": "cpu",
                    # Core ML itself runs only on Apple devices: these are MIL-program timings on this CPU
                    "coreml-mil": "mobilesd MIL interpreter on the host CPU (not Core ML; fp16 emulated)"}
# the report's runtime.name (latency-report schema enum): the format the runtime reads
REPORT_RUNTIME_NAME = {"tflite": "tflite", "onnx": "onnx", "torch": "torch", "coreml-mil": "coreml"}


class RunRecorder:
    """Collects one generation's on_stage calls; chunk times are summed per step (sequential CFG calls
    every chunk twice per step)."""

    def __init__(self):
        self.stages: dict[str, list[float]] = {}
        self.steps: list[float] = []
        self.step_chunks: list[dict[int, float]] = []
        self._open_chunks: dict[int, float] = {}

    def __call__(self, name: str, seconds: float) -> None:
        seconds = float(seconds)
        if name.startswith("unet_chunk_"):
            i = int(name.rsplit("_", 1)[1])
            self._open_chunks[i] = self._open_chunks.get(i, 0.0) + seconds
        elif name == "unet_step":
            self.steps.append(seconds)
            self.step_chunks.append(self._open_chunks)
            self._open_chunks = {}
        else:
            self.stages.setdefault(name, []).append(seconds)


def aggregate(runs: list[RunRecorder], load_samples: list[float], steps: int) -> tuple[dict, list[dict]]:
    """Stage statistics (schema form) and the per-step timeline (median over runs) from recorded runs."""
    if not runs:
        raise ValueError("no timed runs")
    for r in runs:
        if len(r.steps) != steps:
            raise MobileSDError(f"the pipeline reported {len(r.steps)} unet_step timings for {steps} steps",
                                "the pipeline must call on_stage('unet_step', s) once per step")
    stages: dict[str, dict] = {}
    if load_samples:
        stages["load"] = stage_stats(load_samples, 1)
    for name in ("text_encoder", "vae_decoder", "end_to_end"):
        samples = [x for r in runs for x in r.stages.get(name, [])]
        if samples:
            stages[name] = stage_stats(samples)
    stages["unet_step"] = stage_stats([x for r in runs for x in r.steps], steps)
    n_chunks = max((max(c) + 1 for r in runs for c in r.step_chunks if c), default=0)
    for i in range(n_chunks):
        samples = [c.get(i, 0.0) for r in runs for c in r.step_chunks]
        stages[f"unet_chunk_{i}"] = stage_stats(samples, steps)
    timeline = []
    for k in range(steps):
        entry = {"index": k, "seconds": statistics.median(r.steps[k] for r in runs)}
        if n_chunks:
            entry["chunks_s"] = [statistics.median(r.step_chunks[k].get(i, 0.0) for r in runs) for i in range(n_chunks)]
        timeline.append(entry)
    return stages, timeline


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _runtime_version(runtime: str) -> str:
    if runtime == "coreml-mil":  # mobilesd's interpreter reads the package with coremltools' protobufs
        from mobilesd import __version__

        return f"mobilesd {__version__} MIL interpreter, " + _runtime_version("coremltools")
    dist = {"tflite": "ai-edge-litert", "onnx": "onnxruntime", "torch": "torch"}.get(runtime, runtime)
    try:
        return f"{dist} {importlib.metadata.version(dist)}"
    except importlib.metadata.PackageNotFoundError:
        return dist


def peak_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # Linux reports KiB


def _default_factory(bundle: Path, runtime: str, threads: int | None):
    from mobilesd.pipeline import HostPipeline

    return HostPipeline.from_bundle(bundle, runtime=runtime, threads=threads)


def bench_runtime(bundle: str | Path, runtime: str, *, threads: int | None = None, warmup: int = 1,
                  repeats: int = 3, steps: int = 20, guidance: float = 7.5, scheduler: str = "dpm",
                  prompt: str = "a photo of an astronaut riding a horse on mars", negative_prompt: str = "",
                  seed: int = 0, progress: bool = True,
                  pipeline_factory: Callable | None = None) -> dict:
    """Benchmark one runtime on ``bundle``; returns a latency report (kind 'measurement', by 'host')."""
    from mobilesd import __version__

    bundle = Path(bundle)
    manifest_path = bundle / "manifest.json"
    if not manifest_path.is_file():
        raise MobileSDError(f"{bundle} has no manifest.json", "pass a bundle folder written by `mobilesd export`")
    if warmup < 0 or repeats < 1:
        raise MobileSDError(f"--warmup {warmup} / --repeats {repeats} are out of range",
                            "use --warmup >= 0 and --repeats >= 1")
    if steps < 1:
        raise MobileSDError(f"--steps {steps} is not a positive number of steps", "use e.g. --steps 20")
    manifest = json.loads(manifest_path.read_text())
    if runtime not in RUNTIME_DELEGATE:
        raise MobileSDError(f"unknown runtime {runtime!r}", f"use one of {', '.join(RUNTIME_DELEGATE)}")
    factory = pipeline_factory or _default_factory

    t0 = time.perf_counter()
    pipe = factory(bundle, runtime, threads)
    load_s = getattr(pipe, "load_seconds", 0.0) or (time.perf_counter() - t0)

    runs: list[RunRecorder] = []
    total = warmup + repeats
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=f"bench {runtime}", unit="image", file=sys.stderr)
    for k in range(total):
        rec = RunRecorder()
        t_run = time.perf_counter()
        pipe.generate(prompt, negative_prompt=negative_prompt, steps=steps, guidance=guidance, seed=seed,
                      scheduler=scheduler, on_stage=rec)
        wall = time.perf_counter() - t_run
        rec.stages.setdefault("end_to_end", [wall])  # a pipeline that does not report it: our wall clock
        if k >= warmup:
            runs.append(rec)
        if bar is not None:
            bar.set_postfix_str("warm-up" if k < warmup else f"{wall:.2f}s")
            bar.update(1)
    if bar is not None:
        bar.close()

    stages, timeline = aggregate(runs, [load_s], steps)
    unet_batch = (manifest.get("cfg") or {}).get("unet_batch", 2)
    image = manifest.get("image") or {}
    source_model = ((manifest.get("source") or {}).get("model")) or ""
    threads_used = threads or os.cpu_count() or 1
    report = {
        "schema_version": SCHEMA_VERSION,
        "kind": "measurement",
        "created": now_iso(),
        "label": f"host / {runtime}",
        "measured_by": {"kind": "host", "tool": f"mobilesd {__version__} bench"},
        "device": {"name": f"host ({_cpu_name()})", "os": f"{platform.system()} {platform.release()}",
                   "soc": _cpu_name(), "accelerator": "cpu", "accelerator_name": platform.machine(),
                   "cpu_threads": int(threads_used)},
        "runtime": {"name": REPORT_RUNTIME_NAME[runtime], "version": _runtime_version(runtime),
                    "delegate": RUNTIME_DELEGATE[runtime],
                    "precision": "fp32" if runtime == "torch" else str(manifest.get("precision", "unknown"))},
        "bundle": {"id": str(manifest.get("bundle_id") or bundle.name), "manifest_sha256": sha256_file(manifest_path)},
        "settings": {"width": int(image.get("width", 512)), "height": int(image.get("height", 512)), "steps": steps,
                     "guidance": guidance, "scheduler": scheduler,
                     "cfg_mode": "none" if guidance <= 1.0 else ("batch" if unet_batch == 2 else "sequential"),
                     "batch_size": 1, "seed": seed, "prompt": prompt},
        "protocol": {"warmup": warmup, "repeats": repeats, "clock": "time.perf_counter"},
        "stages": stages,
        "steps": timeline,
        "memory": {"peak_rss_bytes": peak_rss_bytes(), "peak_accelerator_bytes": None,
                   "note": "getrusage ru_maxrss of the whole process so far (in side-by-side mode it includes "
                           "the runtimes benchmarked before this one)"},
        "target_s": TARGET_SECONDS,
    }
    if source_model:
        report["bundle"]["model"] = Path(source_model).name
    return report


def ratio_table(reports: list[dict], baseline: int = 0) -> list[tuple[str, list[float | None], list[float | None]]]:
    """Per stage: medians per report and ratio to the baseline report's median."""
    names = ["load", "text_encoder", "unet_step"]
    names += sorted({k for r in reports for k in r["stages"] if k.startswith("unet_chunk_")},
                    key=lambda k: int(k.rsplit("_", 1)[1]))
    names += ["vae_decoder", "end_to_end"]
    rows = []
    for name in names:
        med = [r["stages"][name]["median_s"] if name in r["stages"] else None for r in reports]
        if all(m is None for m in med):
            continue
        base = med[baseline]
        rows.append((name, med, [None if (m is None or not base) else m / base for m in med]))
    return rows
