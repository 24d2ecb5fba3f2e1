"""Measure what the verification bounds must separate: the error of every graph as exported (per target and
precision) and the error of the same graph with one layer broken (its largest weight tensor zeroed).

    .venv/bin/python benchmarks/verification_bounds.py [--model DIR] [--configs android:fp16 ios:pal6 ...]

For each configuration: export the model (the bundled digits model by default; UNet in one graph), then
record per graph the host-runtime relative L2 error vs PyTorch, the GPU (lavapipe) error of TFLite graphs,
and the end-to-end image's mean absolute error; then zero the UNet graph's largest weight in a copy and
measure that graph's error and the image error of a generation through it. Prints a table, writes
benchmarks/results/verification_bounds.json. docs/verification.md derives the bounds from these numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

CONFIGS = ["android:fp32", "android:fp16", "android:int8", "android:int4", "onnx:fp32", "onnx:int8",
           "ios:fp32", "ios:fp16", "ios:int8", "ios:int4", "ios:pal8", "ios:pal6", "ios:pal4"]


def _options(config: str):
    from mobilesd.export import ExportOptions

    target, prec = config.split(":")
    extra = {}
    if prec.startswith("pal"):
        extra["palettize"], prec = int(prec[3:]), "fp16"
    if target == "ios" and prec == "int4":
        extra["min_deployment_target"] = "iOS18"
    return ExportOptions(target=target, precision=prec, unet_chunks=1, progress=False, overwrite=True, **extra)


def _unet_error(bundle, pipe, opts) -> float:
    """The bundle's UNet graph vs the PyTorch UNet on the export's fixed inputs."""
    from mobilesd.components import make_unet_chunk, unet_example_inputs, unet_stages
    from mobilesd.runtime.graphs import open_graph
    from mobilesd.verify import rel_l2

    g = bundle.graph("unet")
    chunk = make_unet_chunk(pipe.unet, 0, len(unet_stages(pipe.unet))).eval()
    inputs = unet_example_inputs(pipe, opts.unet_batch)
    import torch

    with torch.no_grad():
        ref = chunk(**inputs).numpy()
    sess = open_graph(bundle.path(g["file"]), [i["name"] for i in g["inputs"]], [o["name"] for o in g["outputs"]])
    return rel_l2(sess.run({k: v.numpy() for k, v in inputs.items()})[0], ref)


def _image_error(bundle_dir, pipe) -> float:
    from mobilesd.export.tasks import verify_settings
    from mobilesd.pipeline import GraphStages, HostPipeline
    from mobilesd.tokenizer import load_clip_tokenizer
    from mobilesd.bundle import Bundle, read_manifest
    from mobilesd.export import ExportOptions

    m = read_manifest(bundle_dir)
    settings = verify_settings(ExportOptions())
    lat = m["latent"]
    hp = HostPipeline(GraphStages(Bundle(Path(bundle_dir), m)), load_clip_tokenizer(Path(bundle_dir) / "tokenizer"),
                      json.loads((Path(bundle_dir) / m["scheduler"]["config"]).read_text()),
                      (lat["channels"], lat["height"], lat["width"]))
    ref = HostPipeline.from_diffusers(pipe).generate(**settings, output="float")
    return float(np.mean(np.abs(hp.generate(**settings, output="float") - ref)))


def unrelated_image_distance(model: Path) -> float:
    """Mean abs difference between two images the model makes for different prompts and seeds: what an
    image bound near this value could not tell from a wrong image."""
    from mobilesd.export import ExportOptions
    from mobilesd.export.tasks import verify_settings
    from mobilesd.loading import load_pipeline
    from mobilesd.pipeline import HostPipeline

    hp = HostPipeline.from_diffusers(load_pipeline(model))
    a = hp.generate(**verify_settings(ExportOptions()), output="float")
    b = hp.generate(**dict(verify_settings(ExportOptions()), prompt="a handwritten digit three", seed=1), output="float")
    return float(np.mean(np.abs(a - b)))


def measure(model: Path, config: str, work: Path) -> dict:
    from corrupt import zero_largest_weight
    from mobilesd.export import export
    from mobilesd.loading import load_pipeline

    from mobilesd import verify

    opts = _options(config)
    opts.allow_cpu_fallback = True   # record the GPU error, whatever it is
    out = work / config.replace(":", "-")
    saved = {name: dict(getattr(verify, name)) for name in ("GRAPH_THRESHOLDS", "IMAGE_THRESHOLDS", "GPU_THRESHOLDS")}
    for name in saved:   # measure, do not judge: no bound may stop the export being measured
        getattr(verify, name).update({k: 1e9 for k in saved[name]})
    t0 = time.perf_counter()
    try:
        bundle = export(model, out, opts)
    finally:
        for name, values in saved.items():
            getattr(verify, name).update(values)
    row = {"config": config, "export_s": round(time.perf_counter() - t0, 1), "graphs": {}}
    for g in bundle.manifest["graphs"]:
        gpu = g.get("gpu") or {}
        row["graphs"][g["name"]] = {"rel_l2": g["verification"]["rel_l2"], "gpu_rel_l2": gpu.get("output_rel_l2"),
                                    "simulated": g["verification"].get("simulated_quantization_rel_l2")}
    row["image_mean_abs"] = bundle.manifest["verification"]["end_to_end"]["mean_abs"]
    pipe = load_pipeline(model)
    broken = work / (out.name + "-broken")
    shutil.copytree(out, broken)
    row["broken_layer"] = zero_largest_weight(broken / bundle.graph("unet")["file"])
    from mobilesd.bundle import Bundle, read_manifest

    row["broken_unet_rel_l2"] = _unet_error(Bundle(broken, read_manifest(broken)), pipe, opts)
    row["broken_image_mean_abs"] = _image_error(broken, pipe)
    shutil.rmtree(broken)
    shutil.rmtree(out)
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="diffusers folder (default: the bundled digits model)")
    p.add_argument("--configs", nargs="*", default=CONFIGS)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "verification_bounds.json"))
    a = p.parse_args()
    from mobilesd.loading import default_model_path

    model = Path(a.model) if a.model else default_model_path()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for config in a.configs:
            print(f"measuring {config} ...", flush=True)
            rows.append(measure(model, config, Path(tmp)))
            r = rows[-1]
            worst = max(v["rel_l2"] for v in r["graphs"].values())
            gpu = [v["gpu_rel_l2"] for v in r["graphs"].values() if v["gpu_rel_l2"] is not None]
            print(f"  worst graph {worst:.2e}, GPU {max(gpu) if gpu else float('nan'):.2e}, image {r['image_mean_abs']:.2e}; "
                  f"broken UNet {r['broken_unet_rel_l2']:.2e}, broken image {r['broken_image_mean_abs']:.2e}", flush=True)
    result = {"benchmark": "verification_bounds", "model": str(model), "machine": {"cpus": os.cpu_count()},
              "unrelated_image_mean_abs": unrelated_image_distance(model), "rows": rows}
    Path(a.out).write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
    print(f"\n| config | text enc. | UNet | decoder | GPU worst | image MAE | broken UNet | broken image MAE |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        gs = r["graphs"]
        gpu = [v["gpu_rel_l2"] for v in gs.values() if v["gpu_rel_l2"] is not None]
        print(f"| {r['config']} | {gs['text_encoder']['rel_l2']:.1e} | {gs['unet']['rel_l2']:.1e} | "
              f"{gs['vae_decoder']['rel_l2']:.1e} | {max(gpu):.1e} | " if gpu else
              f"| {r['config']} | {gs['text_encoder']['rel_l2']:.1e} | {gs['unet']['rel_l2']:.1e} | "
              f"{gs['vae_decoder']['rel_l2']:.1e} | - | ", end="")
        print(f"{r['image_mean_abs']:.1e} | {r['broken_unet_rel_l2']:.1e} | {r['broken_image_mean_abs']:.1e} |")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
