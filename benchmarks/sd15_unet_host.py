#!/usr/bin/env python
"""Host UNet step of the full SD1.5 architecture (random weights): torch eager vs ONNX Runtime vs TFLite.

One UNet step = one call of the UNet graph on a CFG batch of 2 at the given resolution, exactly the
graph `mobilesd export` puts in a bundle (same Component, same converters, same host runtimes). Runs
every runtime in this one process, one after another, and writes:

  benchmarks/results/sd15_unet_host[-small].json   every sample, for re-analysis
  docs/sd15-unet-host.md                           the table (ratios to torch eager)  [full size]
  benchmarks/results/sd15-unet-host-small.md       the table                          [--small]

Full size needs ~20 GB RAM and tens of minutes (conversion dominates); `--small` builds a tiny UNet
with the same block types in about a minute, to check the script itself.

    python benchmarks/sd15_unet_host.py --resolution 512 --threads 16
    python benchmarks/sd15_unet_host.py --small
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable without installing the package
    sys.path.insert(0, str(ROOT))

VARIANTS = ("torch", "onnx", "tflite-fp32", "tflite-fp16", "tflite-int8")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--resolution", type=int, default=512, help="image side in pixels (default 512)")
    p.add_argument("--small", action="store_true",
                   help="tiny UNet (same block types) at its own tiny size, ignoring --resolution: a smoke test")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads for every runtime")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--workdir", type=Path, default=None, help="where converted graphs go (default: a temp dir)")
    p.add_argument("--json", type=Path, default=None, help="results JSON path")
    p.add_argument("--md", type=Path, default=None, help="Markdown table path")
    args = p.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in args.variants if v not in VARIANTS]
    if bad:
        p.error(f"unknown variant(s) {bad}; use {', '.join(VARIANTS)}")
    if args.resolution % 64:
        p.error("--resolution must be a multiple of 64 (the UNet down-samples the 1/8 latent 3 times)")
    suffix = "-small" if args.small else ""
    args.json = args.json or ROOT / "benchmarks" / "results" / f"sd15_unet_host{suffix}.json"
    args.md = args.md or (ROOT / "benchmarks" / "results" / "sd15-unet-host-small.md" if args.small
                          else ROOT / "docs" / "sd15-unet-host.md")
    return args


def build_component(small: bool, resolution: int):
    """The bundle's UNet component (CFG batch 2) of SD1.5 (or the tiny test architecture)."""
    import torch

    from mobilesd.architectures import build_random_pipeline
    from mobilesd.components import unet_components, unet_stages

    torch.manual_seed(0)
    pipe = build_random_pipeline("tiny" if small else "sd15", seed=0, with_text_encoder=False)
    n = len(unet_stages(pipe.unet))
    size = None if small else resolution  # the tiny model's VAE factor is 2, not 8: keep its native size
    comp = unet_components(pipe, [(0, n)], batch=2, height=size, width=size)[0]
    params = sum(p.numel() for p in pipe.unet.parameters())
    del pipe
    gc.collect()
    return comp, params


def time_calls(fn, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def run_variant(variant: str, comp, workdir: Path, threads: int, warmup: int, repeats: int) -> dict:
    import numpy as np
    import torch

    inputs = {k: v.detach().numpy() for k, v in comp.example_inputs.items()}
    info: dict = {"variant": variant}
    if variant == "torch":
        torch.set_num_threads(threads)
        with torch.inference_mode():
            samples = time_calls(lambda: comp.module(**comp.example_inputs), warmup, repeats)
        info.update(runtime=f"torch {torch.__version__} eager (fp32)", size_bytes=comp.weight_bytes())
    else:
        from mobilesd.converters import get_converter
        from mobilesd.runtime.graphs import open_graph

        fmt, precision = ("onnx", "fp32") if variant == "onnx" else ("android", variant.split("-")[1])
        folder = workdir / variant
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        graph = get_converter(fmt).convert(comp, folder, precision)
        info["convert_s"] = time.perf_counter() - t0
        gc.collect()
        path = folder / graph.file
        sess = open_graph(path, list(comp.example_inputs), comp.output_names, threads)
        samples = time_calls(lambda: sess.run(inputs), warmup, repeats)
        # output agreement with eager: conversion must not have changed the function
        with torch.inference_mode():
            ref = comp.module(**comp.example_inputs)
        ref = (ref[0] if isinstance(ref, (tuple, list)) else ref).numpy()
        got = np.asarray(sess.run(inputs)[0])
        info["rel_l2_vs_torch"] = float(np.linalg.norm(got - ref) / (np.linalg.norm(ref) + 1e-12))
        import importlib.metadata as md

        dist = "onnxruntime" if fmt == "onnx" else "ai-edge-litert"
        info.update(runtime=f"{dist} {md.version(dist)} ({'CPUExecutionProvider' if fmt == 'onnx' else 'XNNPACK'}), "
                            f"weights {precision}", size_bytes=graph.size_bytes)
        del sess
        for f in folder.iterdir():  # keep disk use to one graph at a time
            f.unlink()
    gc.collect()
    info.update(samples_s=samples, median_s=statistics.median(samples), min_s=min(samples), max_s=max(samples))
    return info


def markdown(results: list[dict], meta: dict) -> str:
    base = next((r["median_s"] for r in results if r["variant"] == "torch"), None)
    lines = [
        f"# SD1.5 UNet step on the host: torch eager vs ONNX Runtime vs TFLite{' (--small smoke run)' if meta['small'] else ''}",
        "",
        f"One UNet step = one call on the CFG batch of 2 (`unet_batch=2`), latent {meta['latent']} "
        f"({meta['resolution']}x{meta['resolution']} image), {meta['architecture']} architecture with "
        f"random weights ({meta['params'] / 1e6:.0f}M parameters). Median of {meta['repeats']} calls after "
        f"{meta['warmup']} warm-up, {meta['threads']} threads, all runtimes in one process.",
        "",
        f"Host: {meta['cpu']}, {meta['os']}, Python {meta['python']}. Made by `python benchmarks/sd15_unet_host.py "
        f"{meta['argv']}` on {meta['date']}.",
        "",
        "| variant | runtime | graph size MiB | convert s | median s | min s | max s | x torch eager | rel. L2 vs torch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ratio = f"{r['median_s'] / base:.2f}" if base else "-"
        conv = f"{r['convert_s']:.0f}" if "convert_s" in r else "-"
        err = f"{r['rel_l2_vs_torch']:.1e}" if "rel_l2_vs_torch" in r else "-"
        lines.append(f"| {r['variant']} | {r['runtime']} | {r['size_bytes'] / 2**20:.1f} | {conv} | {r['median_s']:.4f} | "
                     f"{r['min_s']:.4f} | {r['max_s']:.4f} | {ratio} | {err} |")
    lines += ["", "x torch eager: median time relative to torch eager (below 1 = faster). TFLite runs on the CPU "
              "interpreter with XNNPACK; fp16 / int8 are the bundle's weight precisions (converters/tflite.py: "
              "activations stay float, int8 FULLY_CONNECTED runs dynamic-range), so on the CPU they mainly save "
              "memory. rel. L2 vs torch: output difference from eager on the same inputs. Phone GPU latency is a "
              "different question: see docs/latency-estimate.md.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mobilesd.latency.bench import _cpu_name
    from mobilesd.latency.schema import now_iso, write_json_atomic, write_text_atomic

    t_all = time.perf_counter()
    print(f"building the {'tiny' if args.small else 'SD1.5'} UNet component (batch 2)...", flush=True)
    comp, params = build_component(args.small, args.resolution)
    latent = list(comp.example_inputs["sample"].shape)
    if args.small:
        args.resolution = latent[-1] * 2  # tiny VAE: factor 2
    results = []
    with tempfile.TemporaryDirectory(prefix="sd15_unet_host_", dir=args.workdir) as tmp:
        from tqdm.auto import tqdm

        bar = tqdm(args.variants, desc="variants", unit="variant")
        for v in bar:
            bar.set_postfix_str(v)
            results.append(run_variant(v, comp, Path(tmp), args.threads, args.warmup, args.repeats))
            tqdm.write(f"  {v:12s} median {results[-1]['median_s']:.4f} s")
    meta = {"small": args.small, "resolution": args.resolution, "latent": "x".join(map(str, latent)),
            "architecture": "tiny" if args.small else "sd15",
            "params": params, "threads": args.threads, "warmup": args.warmup, "repeats": args.repeats,
            "cpu": _cpu_name(), "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "date": now_iso(), "argv": " ".join(sys.argv[1:] if argv is None else argv),
            "total_s": time.perf_counter() - t_all}
    md = markdown(results, meta)
    print()
    print(md)
    write_json_atomic(args.json, {"meta": meta, "results": results})
    write_text_atomic(args.md, md)
    print(f"wrote {args.json} and {args.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
