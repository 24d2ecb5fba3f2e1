#!/usr/bin/env python
"""The iOS client core's own cost, two ways, in one run:

1. **Overhead per denoising step at SD 1.5 size.** The Swift pipeline (ios_app/, release build) runs on a
   bundle whose manifest has SD 1.5's three UNet chunks with their real tensor names, shapes and aliases
   (taken from the SD 1.5 UNet on PyTorch's meta device, chunked as `mobilesd export --unet-chunks 3` does),
   latent 1x4x64x64, CFG batch 2 (and batch 1); the graphs are synthetic runners that copy inputs in and hand
   back preallocated outputs (no compute). The core's time outside graph calls (scheduler, CFG, batch
   concat/split, chunk bookkeeping) and the copies in and out are each given as a fraction of the SD 1.5 UNet
   step measured on this machine (benchmarks/results/sd15_unet_host.json, docs/sd15-unet-host.md).
2. **End to end on the tiny digits bundle** (ONNX): the Swift CLI (`mobilesd app ios`'s binary, ONNX Runtime
   C API) against the Python host (`mobilesd generate --runtime onnx`'s HostPipeline, measured by
   `mobilesd bench`'s protocol), alternating rounds, same prompt, seed, steps, scheduler and threads; plus
   the whole command (a fresh process for one image) of each.

Writes benchmarks/results/ios_core_overhead.json and docs/benchmarks/ios_core_overhead.md, prints the tables.
Not a test: it measures. Needs scripts/setup_ios.sh (the chroot).

    nice -n 10 .venv/bin/python benchmarks/ios_core_overhead.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable without installing the package
    sys.path.insert(0, str(ROOT))

PROMPT = "a photo of an astronaut riding a horse on mars"
SCHEDULERS = ("dpm", "euler", "ddim", "lcm")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20, help="denoising steps (both parts)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="timed generations per measurement")
    p.add_argument("--rounds", type=int, default=2, help="end to end: alternating host / Swift rounds")
    p.add_argument("--commands", type=int, default=3, help="end to end: fresh-process runs of each command")
    p.add_argument("--bundle", type=Path, default=None,
                   help="ONNX bundle of the digits model for part 2 (default: exported into the work folder)")
    p.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "ios_core_overhead.json")
    p.add_argument("--md", type=Path, default=ROOT / "docs" / "benchmarks" / "ios_core_overhead.md")
    return p.parse_args(argv)


# -- part 1: SD 1.5 chunk tensors -------------------------------------------------------------------------------
def sd15_chunk_graphs(batch: int, chunks: int = 3) -> list[dict]:
    """Manifest graph entries of SD 1.5's UNet cut into `chunks` (inputs, outputs, aliases, shapes), from the real
    architecture on the meta device: names and shapes exactly as the exporter writes them, no weights."""
    import torch
    from diffusers import UNet2DConditionModel

    from mobilesd.architectures import ARCHITECTURES
    from mobilesd.components import make_unet_chunk, plan_unet_chunks

    with torch.device("meta"):
        unet = UNet2DConditionModel(**ARCHITECTURES["sd15"]["unet"])
    state = {"sample": torch.empty(batch, 4, 64, 64, device="meta"), "timestep": torch.empty(1, device="meta"),
             "encoder_hidden_states": torch.empty(batch, 77, 768, device="meta")}
    graphs = []
    for i, (a, b) in enumerate(plan_unet_chunks(unet, n_chunks=chunks)):
        chunk = make_unet_chunk(unet, a, b).eval()
        names_in, names_out, aliases = chunk.input_names(), chunk.output_names(), chunk.aliases()
        spec = lambda n, t: {"name": n, "shape": list(t.shape), "dtype": "float32"}  # noqa: E731
        inputs = [spec(n, state[n]) for n in names_in]
        with torch.no_grad():
            out = chunk(**{n: state[n] for n in names_in})
        out = [out] if isinstance(out, torch.Tensor) else list(out)
        outputs = [spec(n, t) for n, t in zip(names_out, out)]
        state.update(zip(names_out, out))
        for alias, source in aliases.items():
            state[alias] = state[source]
        graphs.append(_graph(f"unet_chunk{i}", "unet", inputs, outputs,
                             {"aliases": aliases, "chunk_index": i, "stage_range": [a, b]}))
    return graphs


def _graph(name, role, inputs, outputs, meta) -> dict:
    return {"name": name, "role": role, "file": f"{name}.onnx", "format": "onnx", "precision": "fp32",
            "inputs": inputs, "outputs": outputs, "size_bytes": 1, "sha256": "0" * 64,
            "meta": dict(meta, file_output_names=[o["name"] for o in outputs]),
            "verification": {"rel_l2": 0.0, "rel_l2_per_output": {o["name"]: 0.0 for o in outputs}, "max_abs": 0.0,
                             "threshold": 1e-4, "passed": True, "runtime": "onnx"}}


def write_sd15_synthetic_bundle(out: Path, batch: int) -> Path:
    """A bundle folder with SD 1.5's I/O (text encoder 77x768, 3 UNet chunks, 512x512 decoder) and placeholder
    graph files: what the overhead tool runs the real pipeline on with synthetic graphs."""
    from mobilesd.bundle import finalize_manifest
    from mobilesd.loading import default_model_path

    model = default_model_path()
    shutil.rmtree(out, ignore_errors=True)
    (out / "tokenizer").mkdir(parents=True)
    (out / "scheduler").mkdir()
    for f in ("vocab.json", "merges.txt"):
        shutil.copyfile(model / "tokenizer" / f, out / "tokenizer" / f)
    shutil.copyfile(model / "scheduler" / "scheduler_config.json", out / "scheduler" / "scheduler_config.json")
    t = lambda n, s, d="float32": {"name": n, "shape": s, "dtype": d}  # noqa: E731
    chunks = sd15_chunk_graphs(batch)
    graphs = ([_graph("text_encoder", "text_encoder", [t("input_ids", [1, 77], "int32")],
                      [t("last_hidden_state", [1, 77, 768])], {})] + chunks
              + [_graph("vae_decoder", "vae_decoder", [t("latent", [1, 4, 64, 64])], [t("image", [1, 512, 512, 3])], {})])
    for g in graphs:
        content = f"synthetic {g['name']}: no weights, the runner is a Swift closure".encode()
        (out / g["file"]).write_bytes(content)
        g["size_bytes"] = len(content)
    manifest = {
        "format": "mobilesd-bundle", "format_version": 2, "mobilesd_version": "benchmark", "created": "benchmark",
        "target": "onnx", "precision": "fp32", "source": {"model": "sd15-synthetic", "prediction_type": "epsilon"},
        "image": {"height": 512, "width": 512, "channels": 3, "layout": "NHWC", "range": [0, 1]},
        "latent": {"channels": 4, "height": 64, "width": 64, "scaling_factor": 0.18215, "vae_scale_factor": 8},
        "tokenizer": {"type": "clip_bpe", "dir": "tokenizer", "vocab": "tokenizer/vocab.json",
                      "merges": "tokenizer/merges.txt", "max_length": 77, "bos_id": 49406, "eos_id": 49407,
                      "pad_id": 49407, "lowercase": True, "padding": "max_length"},
        "scheduler": {"config": "scheduler/scheduler_config.json", "default": "dpm", "supported": list(SCHEDULERS),
                      "train_timesteps": 1000},
        "cfg": {"mode": "batch" if batch == 2 else "sequential", "unet_batch": batch,
                "batch_order": ["unconditional", "conditional"], "default_guidance": 7.5, "negative_prompt_default": ""},
        "unet": {"chunks": [g["name"] for g in chunks], "timestep": {"shape": [1], "dtype": "float32"}},
        "graphs": graphs, "quantization": None,
        "verification": {"graph_thresholds": {"fp32": 1e-4}, "image_thresholds": {"fp32": 1e-2},
                         "gpu_thresholds": {"fp16": 1e-2},
                         "end_to_end": {"mean_abs": 0.0, "max_abs": 0.0, "threshold": 1e-2, "passed": True,
                                        "settings": {}, "runtime": "onnx"}, "passed": True},
    }
    finalize_manifest(out, manifest)
    return out


def tensor_bytes_per_step(bundle: Path) -> int:
    """Bytes of every UNet chunk input and output per denoising step (a batch-1 bundle calls each chunk twice)."""
    m = json.loads((bundle / "manifest.json").read_text())
    calls = 1 if m["cfg"]["unet_batch"] == 2 else 2
    total = 0
    for g in m["graphs"]:
        if g["role"] == "unet":
            for t in g["inputs"] + g["outputs"]:
                n = 1
                for d in t["shape"]:
                    n *= d
                total += 4 * n
    return calls * total


def swift_build(product: str) -> Path:
    from mobilesd.apps import ios

    ios._check_setup()
    proc = ios.swift(["build", "-c", "release", "--product", product], capture=True)
    if proc.returncode != 0:
        raise SystemExit(f"swift build {product} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return ios.PACKAGE / ".build" / "release" / product


def overhead(bundle: Path, scheduler: str, args) -> dict:
    from mobilesd.apps import ios

    tool = ios.PACKAGE / ".build" / "release" / "mobilesd-ios-overhead"
    proc = ios.swift(["--run", str(tool), "--bundle", str(bundle), "--steps", str(args.steps), "--warmup",
                      str(args.warmup), "--repeats", str(args.repeats), "--scheduler", scheduler],
                     mounts=[bundle], capture=True)
    if proc.returncode != 0:
        raise SystemExit(f"mobilesd-ios-overhead failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def sd15_step_seconds() -> tuple[float, str]:
    """The fastest measured SD 1.5 UNet step on this machine (the smallest denominator: the fraction an upper bound)."""
    data = json.loads((ROOT / "benchmarks" / "results" / "sd15_unet_host.json").read_text())
    best = min((r for r in data["results"] if r.get("median_s")), key=lambda r: r["median_s"])
    return best["median_s"], f"{best['variant']}: {best['runtime']}, median of {len(best['samples_s'])}"


# -- part 2: end to end on the digits bundle ----------------------------------------------------------------------
def digits_bundle(args, work: Path) -> Path:
    if args.bundle:
        return args.bundle
    from mobilesd.export import ExportOptions, export
    from mobilesd.loading import default_model_path

    out = work / "digits-onnx"
    if not (out / "manifest.json").is_file():
        export(default_model_path(), out, ExportOptions(target="onnx", progress=False, overwrite=True))
    return out


def swift_report(bundle: Path, work: Path, args, k: int) -> dict:
    from mobilesd.apps import ios
    from mobilesd.latency.schema import load_report

    report = work / f"swift-{k}.json"
    ios.run_cli(["--bundle", str(bundle.resolve()), "--prompt", PROMPT, "--steps", str(args.steps), "--seed", "0",
                 "--scheduler", "dpm", "--guidance", "7.5", "--out", str(work / "swift.png"), "--report", str(report),
                 "--warmup", str(args.warmup), "--repeats", str(args.repeats), "--quiet"], [bundle.resolve(), work])
    return load_report(report)


def command_seconds(cmd: list[str], env: dict | None = None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def end_to_end(bundle: Path, work: Path, args) -> dict:
    from mobilesd.apps import ios
    from mobilesd.latency.bench import bench_runtime

    ios.build_cli()
    host_runs, swift_runs = [], []
    for k in range(args.rounds):
        host_runs.append(bench_runtime(bundle, "onnx", steps=args.steps, warmup=args.warmup, repeats=args.repeats,
                                       scheduler="dpm", prompt=PROMPT, seed=0, progress=False))
        swift_runs.append(swift_report(bundle, work, args, k))

    def stages(reports: list[dict]) -> dict:
        names = ("load", "text_encoder", "unet_step", "vae_decoder", "end_to_end")
        return {n: {"median_s": statistics.median(x for r in reports for x in r["stages"][n]["samples_s"]),
                    "samples_s": [x for r in reports for x in r["stages"][n]["samples_s"]]} for n in names}

    # whole commands, fresh processes, one image each, alternating
    gen = [str(ROOT / ".venv" / "bin" / "mobilesd"), "generate", "--bundle", str(bundle), "--runtime", "onnx",
           "--prompt", PROMPT, "--steps", str(args.steps), "--seed", "0", "--scheduler", "dpm",
           "--out", str(work / "host.png")]
    swift_cli = ["bash", str(ios.SWIFT_SH), "--run", str(ios.build_cli()), "--bundle", str(bundle.resolve()),
                 "--prompt", PROMPT, "--steps", str(args.steps), "--seed", "0", "--scheduler", "dpm",
                 "--out", str(work / "swift-cmd.png"), "--quiet"]
    swift_env = dict(os.environ, MOBILESD_IOS_MOUNTS=f"{bundle.resolve()}:{work}")
    host_cmd, swift_cmd = [], []
    for _ in range(args.commands):
        host_cmd.append(command_seconds(gen))
        swift_cmd.append(command_seconds(swift_cli, swift_env))
    from PIL import Image
    import numpy as np

    a = np.asarray(Image.open(work / "host.png").convert("RGB"), np.float64)
    b = np.asarray(Image.open(work / "swift-cmd.png").convert("RGB"), np.float64)
    return {"host": stages(host_runs), "swift": stages(swift_runs), "image_mean_abs_diff": float(np.abs(a - b).mean()),
            "command_s": {"host": host_cmd, "swift": swift_cmd},
            "host_runtime": host_runs[0]["runtime"], "swift_runtime": swift_runs[0]["runtime"],
            "bundle_id": swift_runs[0]["bundle"]["id"]}


# -- report -----------------------------------------------------------------------------------------------------
def markdown(meta: dict, part1: list[dict], part2: dict) -> str:
    sd15 = meta["sd15_step_s"]
    lines = [
        "# iOS client core: overhead per step at SD 1.5 size, and end to end against the Python host", "",
        "Made by `python benchmarks/ios_core_overhead.py` "
        f"(--steps {meta['steps']} --warmup {meta['warmup']} --repeats {meta['repeats']} --rounds {meta['rounds']}) "
        f"on {meta['created']}. Host: {meta['cpu']}, {meta['cpu_count']} CPUs shared with other jobs (load average "
        f"{meta['loadavg_start']} at the start, {meta['loadavg_end']} at the end), {meta['os']}. "
        f"{meta['swift']} (release build) in the Debian trixie chroot. Not a phone.", "",
        "## 1. The core's own time per denoising step, SD 1.5 tensors", "",
        "Real pipeline code (`StableDiffusionPipeline.generateImage`) with the graphs replaced by synthetic runners "
        "that hand back preallocated outputs of the manifest's shapes and compute nothing: SD 1.5's UNet in 3 "
        "chunks with its real tensors (chunk 0 hands out 13, chunk 2 takes 12, up to 2x320x64x64), latent "
        "1x4x64x64, all four schedulers, CFG batch 2 and sequential. What is left is the client's own work: "
        "scale_model_input, the CFG batch (concat, split, guidance), the name -> tensor chaining with aliases and "
        "the input checks, the scheduler update (LCM: a fresh torch-exact randn every step). The synthetic "
        "runners stand for the ONNX Runtime runner's binding, which copies nothing either: inputs are bound where "
        "they lie (CreateTensorWithDataAsOrtValue over the Swift arrays) and outputs are written into buffers the "
        "runner hands out. Per step the chunk calls move "
        f"{meta['tensor_mb_per_step'][2]:.0f} MB (batch 2) / {meta['tensor_mb_per_step'][1]:.0f} MB (sequential) of "
        "tensors in and out: the Core ML runner copies those (MLMultiArray in, MLShapedArray(converting:) out), "
        "which is not measured here. Fractions are of the SD 1.5 UNet step measured on this machine: "
        f"{sd15:.4f} s ({meta['sd15_step_source']}; docs/sd15-unet-host.md), the fastest runtime there, so the "
        "fractions are upper bounds.", "",
        "| CFG | scheduler | UNet calls / step | client time per step (median s) | % of SD 1.5 step | "
        "of which inside runner calls (median s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in part1:
        lines.append(f"| {'batch 2' if r['unet_batch'] == 2 else 'sequential (batch 1)'} | {r['scheduler']} | "
                     f"{r['unet_calls_per_step']:.0f} | {r['step_median_s']:.6f} | "
                     f"{100 * r['step_median_s'] / sd15:.4f} % | {r['copies_median_s']:.6f} |")
    worst = max(part1, key=lambda r: r["step_median_s"])
    lines += ["", f"Target: under 1 % of an SD 1.5 step. Worst case: {worst['step_median_s'] * 1e3:.3f} ms = "
              f"{100 * worst['step_median_s'] / sd15:.4f} % ({worst['scheduler']}, unet_batch {worst['unet_batch']}): "
              + ("met." if worst["step_median_s"] / sd15 < 0.01 else "NOT met.")]
    h, s = part2["host"], part2["swift"]
    lines += ["", "## 2. End to end on the digits bundle (ONNX, 32x32, CFG batch 2)", "",
              f"Same bundle ({part2['bundle_id']}), prompt, seed 0, {meta['steps']} DPM-Solver++ steps, guidance 7.5, "
              "ONNX Runtime's default threads on both sides; host and Swift measured in alternating rounds "
              f"({meta['rounds']} x ({meta['warmup']} warm-up + {meta['repeats']} timed)). Host: "
              f"{part2['host_runtime']['version']} through Python (HostPipeline, what `mobilesd generate --runtime onnx` "
              f"runs); Swift: {part2['swift_runtime']['version']} through its C API. Images: mean abs difference "
              f"{part2['image_mean_abs_diff']:.4f} / 255.", "",
              "| stage | Python host (median s) | Swift core (median s) | Swift / host |", "|---|---|---|---|"]
    for n in ("load", "text_encoder", "unet_step", "vae_decoder", "end_to_end"):
        lines.append(f"| {n} | {h[n]['median_s']:.4f} | {s[n]['median_s']:.4f} | {s[n]['median_s'] / h[n]['median_s']:.2f} |")
    hc, sc = part2["command_s"]["host"], part2["command_s"]["swift"]
    lines.append(f"| whole command, one image, fresh process | {statistics.median(hc):.2f} | {statistics.median(sc):.2f} | "
                 f"{statistics.median(sc) / statistics.median(hc):.2f} |")
    e2e = s["end_to_end"]["median_s"] / h["end_to_end"]["median_s"]
    lines += ["", f"Target: end to end no slower than the Python host: Swift / host = {e2e:.2f} "
              + ("(met)." if e2e <= 1.0 else "(NOT met: the Swift core is slower here)."),
              "", "The whole command: `mobilesd generate --runtime onnx` (Python start-up, torch import, load) vs "
              "`mobilesd-ios` in the chroot (namespace set-up, SHA-256 of every bundle file, load); each a fresh "
              f"process, {meta['commands']} runs each, alternating. A shared 2-CPU machine: timings move by tens of "
              "percent between runs; the numbers are every sample's median, all samples in "
              "benchmarks/results/ios_core_overhead.json.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mobilesd.latency.bench import _cpu_name
    from mobilesd.latency.schema import now_iso, write_json_atomic, write_text_atomic

    with tempfile.TemporaryDirectory(prefix="ios-overhead-", dir=args.workdir) as tmp:
        work = Path(tmp)
        load0 = os.getloadavg()
        swift_build("mobilesd-ios-overhead")
        sd15, source = sd15_step_seconds()
        part1 = []
        for batch in (2, 1):
            bundle = write_sd15_synthetic_bundle(work / f"sd15-batch{batch}", batch)
            for scheduler in SCHEDULERS:
                r = overhead(bundle, scheduler, args)
                copies = r["in_graph_calls_s"]
                row = {"unet_batch": batch, "scheduler": scheduler, "unet_calls_per_step": r["unet_calls_per_step"],
                       "step_median_s": statistics.median(r["step_s"]),
                       "outside_median_s": statistics.median(r["outside_calls_s"]),
                       "copies_median_s": statistics.median(copies), "samples": r}
                part1.append(row)
                print(f"SD1.5 {scheduler} batch {batch}: step {row['step_median_s']:.5f} s, outside calls "
                      f"{row['outside_median_s']:.6f} s ({100 * row['outside_median_s'] / sd15:.4f} % of {sd15:.3f} s), "
                      f"copies {row['copies_median_s']:.5f} s", flush=True)
        volume = {b: tensor_bytes_per_step(work / f"sd15-batch{b}") / 1e6 for b in (2, 1)}
        part2 = end_to_end(digits_bundle(args, work), work, args)
        version = subprocess.run(["bash", str(ROOT / "scripts" / "swift.sh"), "--version"], capture_output=True, text=True)
        meta = {"created": now_iso(), "cpu": _cpu_name(), "cpu_count": os.cpu_count(), "os": f"{platform.system()} {platform.release()}",
                "loadavg_start": [round(x, 2) for x in load0], "loadavg_end": [round(x, 2) for x in os.getloadavg()],
                "swift": (version.stdout.strip().splitlines() or ["?"])[0], "steps": args.steps, "warmup": args.warmup,
                "repeats": args.repeats, "rounds": args.rounds, "commands": args.commands, "sd15_step_s": sd15,
                "sd15_step_source": source, "tensor_mb_per_step": volume}
        md = markdown(meta, part1, part2)
        print(md)
        write_json_atomic(args.json, {"meta": meta, "overhead": part1, "end_to_end": part2})
        write_text_atomic(args.md, md)
        print(f"wrote {args.json} and {args.md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
