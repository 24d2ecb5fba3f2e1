"""The browser client's own cost, and its end-to-end time next to the Python host, in one run.

1. Overhead: the page's time outside graph calls per denoising step (scheduler, CFG, tensor copies into
   LiteRT.js, chunk bookkeeping), measured in headless Chromium with the real client pipeline and a synthetic
   graph runner (web_app/src/runtime/synthetic_runner.js) on a manifest with SD1.5's tensors: 1x4x64x64
   latent (512x512), CFG batch 2, the UNet in 3 chunks with SD1.5's skip tensors (shapes from the sd15
   architecture on PyTorch's meta device). As a fraction of the SD1.5 UNet step measured on this machine
   (benchmarks/results/sd15_unet_host.json, docs/sd15-unet-host.md). Target: under 1%.
2. End to end on the tiny digits bundle: the page (Benchmark button, WASM and WebGPU) vs `mobilesd generate
   --runtime tflite` (HostPipeline), same prompt, seed, scheduler and steps, one after the other in this process.
   Target: the page no slower than the Python host.

    .venv/bin/python benchmarks/web_overhead.py [--bundle B] [--steps 20] [--repeats 3]

Prints a table, writes benchmarks/results/web_overhead.json and docs/benchmarks/web_overhead.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULTS = REPO / "benchmarks" / "results" / "web_overhead.json"
DOC = REPO / "docs" / "benchmarks" / "web_overhead.md"
PROMPT = "a handwritten digit seven"


def sd15_manifest(chunks: int = 3, batch: int = 2) -> dict:
    """A manifest with SD1.5's graph inputs/outputs (512x512, CFG batch ``batch``, UNet in ``chunks``): the
    chunk plan and tensor shapes the exporter would write, computed on the meta device (no weights)."""
    import torch
    from diffusers import UNet2DConditionModel

    from mobilesd.architectures import ARCHITECTURES
    from mobilesd.components import make_unet_chunk, plan_unet_chunks

    with torch.device("meta"):
        unet = UNet2DConditionModel(**ARCHITECTURES["sd15"]["unet"])
        state = {"sample": torch.empty(batch, 4, 64, 64), "timestep": torch.empty(1),
                 "encoder_hidden_states": torch.empty(batch, 77, 768)}
        graphs = []
        names = ["unet"] if chunks == 1 else [f"unet_chunk{k}" for k in range(chunks)]
        for k, (a, b) in enumerate(plan_unet_chunks(unet, chunks)):
            chunk = make_unet_chunk(unet, a, b).eval()
            inputs = {n: state[n] for n in chunk.input_names()}
            with torch.no_grad():
                out = chunk(**inputs)
            out = [out] if isinstance(out, torch.Tensor) else list(out)
            state.update(zip(chunk.output_names(), out))
            state.update({alias: state[src] for alias, src in chunk.aliases().items()})
            spec = lambda n, t: {"name": n, "shape": list(t.shape), "dtype": "float32"}  # noqa: E731
            graphs.append({"name": names[k], "role": "unet", "file": f"{names[k]}.tflite", "format": "tflite",
                           "inputs": [spec(n, t) for n, t in inputs.items()],
                           "outputs": [spec(n, t) for n, t in zip(chunk.output_names(), out)],
                           "meta": {"aliases": chunk.aliases(), "chunk_index": k, "stage_range": [a, b]}})
    t = lambda n, s, d="float32": {"name": n, "shape": s, "dtype": d}  # noqa: E731
    return {
        "format": "mobilesd-bundle", "format_version": 2, "target": "web", "bundle_id": "web-sd15synthetic00",
        "tokenizer": {"type": "clip_bpe", "dir": "tokenizer", "vocab": "tokenizer/vocab.json",
                      "merges": "tokenizer/merges.txt", "max_length": 77, "bos_id": 49406, "eos_id": 49407,
                      "pad_id": 49407},
        "cfg": {"mode": "batch" if batch == 2 else "sequential", "unet_batch": batch, "default_guidance": 7.5,
                "negative_prompt_default": ""},
        "scheduler": {"default": "dpm", "supported": ["dpm", "euler", "ddim", "lcm"],
                      "config": "scheduler/scheduler_config.json"},
        "unet": {"chunks": names},
        "graphs": [{"name": "text_encoder", "role": "text_encoder", "file": "text_encoder.tflite", "format": "tflite",
                    "inputs": [t("input_ids", [1, 77], "int32")], "outputs": [t("last_hidden_state", [1, 77, 768])],
                    "meta": {}}]
                  + graphs
                  + [{"name": "vae_decoder", "role": "vae_decoder", "file": "vae_decoder.tflite", "format": "tflite",
                      "inputs": [t("latent", [1, 4, 64, 64])], "outputs": [t("image", [1, 512, 512, 3])], "meta": {}}],
        "files": {},
    }


def sd15_step_seconds() -> dict:
    data = json.loads((REPO / "benchmarks" / "results" / "sd15_unet_host.json").read_text())
    rows = {r["variant"]: r for r in data["results"]}
    return {"source": "benchmarks/results/sd15_unet_host.json (docs/sd15-unet-host.md)",
            "date": data["meta"]["date"], "latent": data["meta"]["latent"],
            "tflite_fp16_s": rows["tflite-fp16"]["median_s"],
            "fastest_s": min(r["median_s"] for r in rows.values()),
            "fastest": min(rows.values(), key=lambda r: r["median_s"])["runtime"]}


def overhead(session, steps: int, warmup: int, repeats: int) -> dict:
    from mobilesd.architectures import SCHEDULER_CONFIG_SD
    from mobilesd.loading import default_model_path

    tok = default_model_path() / "tokenizer"
    session.server.mount("tok", tok)
    page = session.open("bench.html")
    out = {}
    for batch in (2, 1):
        manifest = sd15_manifest(3, batch)
        spec = {"manifest": manifest, "schedulerConfig": SCHEDULER_CONFIG_SD, "warmup": warmup, "repeats": repeats,
                "vocabUrl": f"{session.server.url}mount/tok/vocab.json",
                "mergesUrl": f"{session.server.url}mount/tok/merges.txt",
                "settings": {"prompt": PROMPT, "steps": steps, "guidance": 7.5, "seed": 0, "scheduler": "dpm"}}
        res = page.evaluate("spec => window.runOverheadBench(spec)", spec)
        per_step = [s["overhead_s"] for run in res["runs"] for s in run]
        out["batch" if batch == 2 else "sequential"] = {
            "unet_batch": batch, "chunks": len(manifest["unet"]["chunks"]),
            "unet_calls_per_step": len(manifest["unet"]["chunks"]) * (1 if batch == 2 else 2),
            # what the UNet graphs read per step, and how much of it the page copies in from JS arrays (the rest
            # stays in LiteRT.js memory from chunk to chunk)
            "graph_input_values_per_step": sum(_count(i["shape"]) for g in manifest["graphs"] if g["role"] == "unet"
                                               for i in g["inputs"]) * (1 if batch == 2 else 2),
            "copied_in_values_per_step": res["copiedPerStep"],
            "overhead_median_s": statistics.median(per_step), "overhead_max_s": max(per_step),
            "overhead_samples": len(per_step)}
        out["user_agent"] = res["userAgent"]
    page.close()
    return out


def _count(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def end_to_end(session, bundle: Path, steps: int, warmup: int, repeats: int) -> dict:
    from mobilesd.apps import web as web_app
    from mobilesd.pipeline import HostPipeline

    host = HostPipeline.from_bundle(bundle, runtime="tflite")
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        host.generate(PROMPT, "", steps=steps, guidance=7.5, seed=0, scheduler="dpm")
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    rows = {"host tflite (mobilesd generate)": {"median_s": statistics.median(times), "samples_s": times,
                                                "runtime": "ai-edge-litert CPU interpreter (XNNPACK)"}}
    session.server.mount("e2e", bundle)
    page = web_app.open_bundle(session, "mount/e2e/", 900)
    for accelerator in ("wasm", "webgpu"):
        _, report = web_app.benchmark(page, {"prompt": PROMPT, "negative_prompt": "", "steps": steps, "guidance": 7.5,
                                             "seed": 0, "scheduler": "dpm", "accelerator": accelerator,
                                             "precision": "fp32", "warmup": warmup, "repeats": repeats}, 1800)
        e2e = report["stages"]["end_to_end"]
        rows[f"page {accelerator}"] = {"median_s": e2e["median_s"], "samples_s": e2e["samples_s"],
                                       "runtime": report["label"],
                                       "unet_step_median_s": report["stages"]["unet_step"]["median_s"]}
    page.close()
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", default=None, help="tiny web bundle (default: export the default model to a temp dir)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)

    from mobilesd.litert_js import BrowserSession

    t_start = time.perf_counter()
    load_before = os.getloadavg()[0]   # the machine is shared: say how busy it was
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(args.bundle) if args.bundle else None
        if bundle is None:
            from mobilesd.export import ExportOptions, export
            from mobilesd.loading import default_model_path

            bundle = export(default_model_path(), Path(tmp) / "web", ExportOptions(target="web", progress=False)).root
        with BrowserSession() as session:
            ovh = overhead(session, args.steps, args.warmup, args.repeats)
            e2e = end_to_end(session, bundle, args.steps, args.warmup, args.repeats)
    step = sd15_step_seconds()
    for row in (ovh["batch"], ovh["sequential"]):
        row["fraction_of_tflite_fp16_step"] = row["overhead_median_s"] / step["tflite_fp16_s"]
        row["fraction_of_fastest_step"] = row["overhead_median_s"] / step["fastest_s"]
    host_s = e2e["host tflite (mobilesd generate)"]["median_s"]
    for row in e2e.values():
        row["x_host"] = row["median_s"] / host_s
    result = {"benchmark": "web_overhead", "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "machine": {"cpu": platform.processor() or platform.machine(), "os": f"{platform.system()} {platform.release()}",
                          "python": platform.python_version(), "browser": ovh["user_agent"],
                          "load_average_1min_before_after": [round(load_before, 1), round(os.getloadavg()[0], 1)]},
              "argv": " ".join(sys.argv[1:]), "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats,
              "sd15_unet_step": step, "overhead": {k: v for k, v in ovh.items() if k != "user_agent"},
              "end_to_end": e2e, "bundle": str(bundle) if args.bundle else "default digits model (exported)",
              "total_s": round(time.perf_counter() - t_start, 1)}
    print(render(result))
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
        DOC.parent.mkdir(parents=True, exist_ok=True)
        DOC.write_text(render(result, markdown=True))
        print(f"wrote {RESULTS.relative_to(REPO)} and {DOC.relative_to(REPO)}")
    return 0


def render(r: dict, markdown: bool = False) -> str:
    s = r["sd15_unet_step"]
    lines = []
    if markdown:
        lines += ["# Browser client: page overhead per step and end-to-end time", "",
                  f"Made by `python benchmarks/web_overhead.py {r['argv']}`".rstrip() + f" on {r['date']} "
                  f"({r['machine']['cpu']}, {r['machine']['os']}, 2 cores shared with other work: 1-minute load average "
                  f"{r['machine']['load_average_1min_before_after'][0]} before, "
                  f"{r['machine']['load_average_1min_before_after'][1]} after; "
                  f"{r['machine']['browser']}).", ""]
    lines += ["## Page overhead per denoising step (SD1.5 tensors, synthetic graph runner)", "",
              "What the page does around the graph calls of one step: scheduler (DPM-Solver++), CFG, copying the "
              "step's inputs (sample, timestep, text context) into LiteRT.js, the chunk dictionary (chunk outputs stay "
              "in LiteRT.js memory and go to the next chunk as they are). 1x4x64x64 latent (512x512), UNet in "
              f"3 chunks with SD1.5's skip tensors, {r['steps']} steps x {r['repeats']} runs after {r['warmup']} "
              "warm-up. The SD1.5 UNet step is the host measurement in docs/sd15-unet-host.md "
              f"({s['latent']}, 2 threads): TFLite fp16 {s['tflite_fp16_s']:.2f} s, fastest ({s['fastest']}) "
              f"{s['fastest_s']:.2f} s.", "",
              "| CFG | UNet calls / step | values the graphs read / step | copied in by the page / step | overhead "
              "median ms | max ms | % of TFLite fp16 step | % of fastest step |", "|---|---|---|---|---|---|---|---|"]
    for name, o in r["overhead"].items():
        lines.append(f"| {name} (unet_batch {o['unet_batch']}) | {o['unet_calls_per_step']} | "
                     f"{o['graph_input_values_per_step'] / 1e6:.1f} M | {o['copied_in_values_per_step'] / 1e6:.3f} M | "
                     f"{o['overhead_median_s'] * 1e3:.2f} | {o['overhead_max_s'] * 1e3:.2f} | "
                     f"{100 * o['fraction_of_tflite_fp16_step']:.3f} | {100 * o['fraction_of_fastest_step']:.3f} |")
    lines += ["", "Target: under 1% of an SD1.5 step.", "",
              "## End to end on the tiny digits bundle (32x32, dpm, "
              f"{r['steps']} steps, CFG batch 2), side by side", "",
              "| client | runtime | end-to-end median s | samples s | x host |", "|---|---|---|---|---|"]
    for name, e in r["end_to_end"].items():
        lines.append(f"| {name} | {e['runtime']} | {e['median_s']:.3f} | "
                     f"{', '.join(f'{x:.3f}' for x in e['samples_s'])} | {e['x_host']:.2f} |")
    lines += ["", "Target: the page no slower than the Python host. End to end = text encoder to final image, graphs "
              "already compiled (load excluded), medians after warm-up. Software WebGPU (SwiftShader) runs on this "
              "machine's CPU: neither browser row is a GPU or phone figure.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
