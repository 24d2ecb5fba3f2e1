"""The Android app core's own cost: per denoising step outside the graphs, at SD1.5 scale, and end to end.

1. **Core overhead per step at SD1.5 scale.** A bundle with SD1.5's shapes (1x4x64x64 latent, CFG batch 2, the
   real 3-chunk UNet split of the SD1.5 architecture with every chunk tensor at its real size, 768-wide text
   states, 512x512 image) whose graphs compute nothing: the Java core's real generation loop runs over runners
   that return preallocated outputs (android_app/cli/.../CoreOverheadBenchmark.java). Measured twice: the loop
   alone (scheduler, CFG, batch concat / split, chunk dictionary + aliases, timing), and with the copies the
   LiteRT runner makes: Java tensors into native buffers and the last chunk's output back (chunk-to-chunk tensors
   stay in their LiteRT buffers and are bound as the next chunk's inputs). Shapes come from the
   SD1.5 UNet built on the meta device (no weights, no graphs). A third pass copies every chunk-to-chunk tensor
   through Java, which is what the runner's buffer chaining saves. The result is set against the SD1.5 UNet step
   measured on this machine by benchmarks/sd15_unet_host.py (benchmarks/results/sd15_unet_host.json).
2. **End to end on the default tiny bundle**, side by side in one run: `mobilesd app android --accelerator cpu`
   (the Java core, LiteRT C API, XNNPACK) against the Python host (`mobilesd bench --runtime tflite`).

    .venv/bin/python benchmarks/android_core_overhead.py [--steps 20] [--repeats 5] [--e2e-repeats 5]

Prints a table and writes benchmarks/results/android_core_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULTS = REPO / "benchmarks" / "results"


def sd15_chunk_specs(n_chunks: int = 3, batch: int = 2) -> list[dict]:
    """The SD1.5 UNet's chunk graphs (names, inputs, outputs, aliases, shapes) as export would cut them."""
    import torch
    from diffusers import UNet2DConditionModel

    from mobilesd.architectures import ARCHITECTURES
    from mobilesd.components import make_unet_chunk, plan_unet_chunks

    with torch.device("meta"):
        unet = UNet2DConditionModel(**ARCHITECTURES["sd15"]["unet"])
    ranges = plan_unet_chunks(unet, n_chunks=n_chunks)
    h = w = unet.config.sample_size
    state = {"sample": torch.empty(batch, 4, h, w, device="meta"), "timestep": torch.empty(1, device="meta"),
             "encoder_hidden_states": torch.empty(batch, 77, 768, device="meta")}
    graphs = []
    for i, (a, b) in enumerate(ranges):
        chunk = make_unet_chunk(unet, a, b)
        names_in, names_out, aliases = chunk.input_names(), chunk.output_names(), chunk.aliases()
        with torch.no_grad():
            out = chunk(**{n: state[n] for n in names_in})
        out = [out] if isinstance(out, torch.Tensor) else list(out)
        graphs.append({"name": f"unet_chunk{i}", "stage_range": [a, b], "aliases": dict(aliases),
                       "inputs": [{"name": n, "shape": list(state[n].shape), "dtype": "float32"} for n in names_in],
                       "outputs": [{"name": n, "shape": list(t.shape), "dtype": "float32"} for n, t in zip(names_out, out)]})
        state.update(zip(names_out, out))
        for alias, source in aliases.items():
            state[alias] = state[source]
    return graphs


def _graph(name, role, inputs, outputs, aliases=None, stage_range=None) -> dict:
    meta = {"aliases": aliases or {}} if role == "unet" else {}
    if stage_range is not None:
        meta["stage_range"] = stage_range
    return {"name": name, "role": role, "file": f"{name}.tflite", "format": "tflite", "precision": "fp16",
            "inputs": inputs, "outputs": outputs, "size_bytes": 1, "sha256": "0" * 64, "meta": meta,
            "verification": {"rel_l2": 0.0, "rel_l2_per_output": {o["name"]: 0.0 for o in outputs}, "max_abs": 0.0,
                             "threshold": 0.02, "passed": True, "runtime": "tflite"},
            "gpu": {"skipped": True, "reason": "synthetic benchmark bundle: placeholder graphs"}}


def write_sd15_shaped_bundle(root: Path, chunks: list[dict]) -> Path:
    """A schema-valid bundle with SD1.5's I/O shapes; the graph files are placeholders nobody executes."""
    from mobilesd.bundle import finalize_manifest
    from mobilesd.loading import default_model_path

    model = default_model_path()
    (root / "tokenizer").mkdir(parents=True)
    (root / "scheduler").mkdir()
    for f in ("vocab.json", "merges.txt"):
        shutil.copyfile(model / "tokenizer" / f, root / "tokenizer" / f)
    shutil.copyfile(model / "scheduler" / "scheduler_config.json", root / "scheduler" / "scheduler_config.json")
    f32 = "float32"
    graphs = [_graph("text_encoder", "text_encoder", [{"name": "input_ids", "shape": [1, 77], "dtype": "int32"}],
                     [{"name": "last_hidden_state", "shape": [1, 77, 768], "dtype": f32}])]
    graphs += [_graph(c["name"], "unet", c["inputs"], c["outputs"], c["aliases"], c["stage_range"]) for c in chunks]
    graphs.append(_graph("vae_decoder", "vae_decoder", [{"name": "latent", "shape": [1, 4, 64, 64], "dtype": f32}],
                         [{"name": "image", "shape": [1, 512, 512, 3], "dtype": f32}]))
    for g in graphs:
        (root / g["file"]).write_text("placeholder: the overhead benchmark's runners return preallocated outputs\n")
    thresholds = {"fp16": 0.02}
    manifest = {
        "format": "mobilesd-bundle", "format_version": 2, "bundle_id": "android-0000000000000000",
        "mobilesd_version": "benchmark", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "target": "android", "precision": "fp16",
        "source": {"model": "sd15 architecture shapes (benchmarks/android_core_overhead.py)", "prediction_type": "epsilon"},
        "image": {"height": 512, "width": 512, "channels": 3, "layout": "NHWC", "range": [0, 1]},
        "latent": {"channels": 4, "height": 64, "width": 64, "scaling_factor": 0.18215, "vae_scale_factor": 8},
        "tokenizer": {"type": "clip_bpe", "dir": "tokenizer", "vocab": "tokenizer/vocab.json",
                      "merges": "tokenizer/merges.txt", "max_length": 77, "bos_id": 49406, "eos_id": 49407,
                      "pad_id": 49407, "lowercase": True, "padding": "max_length"},
        "scheduler": {"config": "scheduler/scheduler_config.json", "default": "dpm",
                      "supported": ["dpm", "euler", "ddim", "lcm"], "train_timesteps": 1000},
        "cfg": {"mode": "batch", "unet_batch": 2, "batch_order": ["unconditional", "conditional"],
                "default_guidance": 7.5, "negative_prompt_default": ""},
        "unet": {"chunks": [c["name"] for c in chunks], "stage_ranges": [c["stage_range"] for c in chunks],
                 "timestep": {"shape": [1], "dtype": "float32"}},
        "graphs": graphs, "quantization": None,
        "verification": {"graph_thresholds": thresholds, "image_thresholds": thresholds, "gpu_thresholds": thresholds,
                         "end_to_end": {"mean_abs": 0.0, "max_abs": 0.0, "threshold": 0.03, "passed": True,
                                        "settings": {}, "runtime": "none (synthetic)"}, "passed": True},
    }
    finalize_manifest(root, manifest)   # file table, checksums, schema check
    return root


def sd15_unet_step_reference() -> dict:
    """The SD1.5 UNet step (batch 2, 512x512) measured on this machine, for the bundle's precision (fp16)."""
    path = RESULTS / "sd15_unet_host.json"
    data = json.loads(path.read_text())
    rows = {r["variant"]: r for r in data["results"]}
    row = rows["tflite-fp16"]
    return {"source": str(path.relative_to(REPO)), "doc": "docs/sd15-unet-host.md", "variant": "tflite-fp16",
            "runtime": row["runtime"], "median_s": row["median_s"], "measured": data["meta"]["date"],
            "threads": data["meta"]["threads"], "all_variants_median_s": {k: v["median_s"] for k, v in rows.items()}}


def run_overhead(bundle: Path, steps: int, warmup: int, repeats: int) -> dict:
    from mobilesd.apps.android import build_jar, classpath

    jar = build_jar()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "overhead.json"
        subprocess.run(["java", "-cp", classpath(jar), "dev.mobilesd.cli.CoreOverheadBenchmark", "--bundle", str(bundle),
                        "--prompt", "a photo of an astronaut riding a horse on mars", "--steps", str(steps),
                        "--warmup", str(warmup), "--repeats", str(repeats), "--out", str(out)], check=True,
                       stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def default_bundle(path: Path | None) -> Path:
    """The default model's android bundle: the given one, or exported once into build/android/bench-default."""
    if path is not None:
        return path
    out = REPO / "build" / "android" / "bench-default"
    if not (out / "manifest.json").is_file():
        from mobilesd.export import ExportOptions, export
        from mobilesd.loading import default_model_path

        print(f"exporting the default model to {out} ...", flush=True)
        export(default_model_path(), out, ExportOptions(target="android", progress=False, overwrite=True))
    return out


def run_end_to_end(bundle: Path, steps: int, warmup: int, repeats: int, scheduler: str, rounds: int) -> dict:
    """Host and Java core alternately, ``rounds`` times (each: warm-ups then timed runs), samples pooled: on a
    shared machine, alternating keeps both sides under the same load."""
    import statistics

    from mobilesd.apps.android import run_core
    from mobilesd.latency.bench import bench_runtime
    from mobilesd.latency.schema import load_report

    prompt = "a handwritten digit seven"
    names = ("load", "text_encoder", "unet_step", "vae_decoder", "end_to_end")
    samples = {side: {n: [] for n in names} for side in ("python_host", "java_core")}
    host = app = None
    for _ in range(rounds):
        host = bench_runtime(bundle, "tflite", warmup=warmup, repeats=repeats, steps=steps, guidance=7.5,
                             scheduler=scheduler, prompt=prompt, seed=0, progress=False)
        with tempfile.TemporaryDirectory() as tmp:
            run_core(["--bundle", str(bundle), "--prompt", prompt, "--steps", str(steps), "--guidance", "7.5",
                      "--seed", "0", "--scheduler", scheduler, "--accelerator", "cpu", "--out", str(Path(tmp) / "a.png"),
                      "--report", str(Path(tmp) / "app.json"), "--warmup", str(warmup), "--repeats", str(repeats)],
                     quiet=True)
            app = load_report(Path(tmp) / "app.json")
        for side, rep in (("python_host", host), ("java_core", app)):
            for n in names:
                samples[side][n] += rep["stages"].get(n, {}).get("samples_s", [])
    stages = {}
    for n in names:
        h = statistics.median(samples["python_host"][n]) if samples["python_host"][n] else None
        a = statistics.median(samples["java_core"][n]) if samples["java_core"][n] else None
        stages[n] = {"python_host_s": h, "java_core_s": a, "java_over_python": (a / h) if (a and h) else None,
                     "samples": {"python_host": len(samples["python_host"][n]), "java_core": len(samples["java_core"][n])}}
    return {"bundle": str(bundle), "steps": steps, "warmup": warmup, "repeats": repeats, "rounds": rounds,
            "scheduler": scheduler, "stages": stages,
            "python_host": {"runtime": host["runtime"], "threads": host["device"].get("cpu_threads"),
                            "api": "ai_edge_litert.interpreter.Interpreter (num_threads = os.cpu_count())"},
            "java_core": {"runtime": app["runtime"], "device": app["device"]["name"],
                          "api": "LiteRtCompiledModel, CPU accelerator, LiteRT's default thread count"}}


def run_graph_calls(bundle: Path, graph: str, calls: int, rounds: int) -> dict:
    """One graph called ``calls`` times per API, the APIs alternated ``rounds`` times: the Java core's LiteRT
    runner (C API via JNA), Python's ai_edge_litert Interpreter (1 and os.cpu_count() threads) and CompiledModel."""
    import statistics

    import numpy as np
    from ai_edge_litert.compiled_model import CompiledModel, HardwareAccelerator
    from ai_edge_litert.interpreter import Interpreter

    from mobilesd.apps.android import build_jar, classpath, litert_library

    spec = next(g for g in json.loads((bundle / "manifest.json").read_text())["graphs"] if g["name"] == graph)
    path = str(bundle / spec["file"])
    inputs = {t["name"]: np.zeros(t["shape"], np.int32 if t["dtype"] == "int32" else np.float32) for t in spec["inputs"]}
    interpreters = {f"python Interpreter, {n} thread(s)": Interpreter(model_path=path, num_threads=n).get_signature_runner()
                    for n in sorted({1, os.cpu_count() or 1})}
    cm = CompiledModel.from_file(path, hardware_accel=HardwareAccelerator.CPU)
    sig = next(iter(cm.get_signature_list().values()))
    inb, outb = cm.create_input_buffers(0), cm.create_output_buffers(0)
    n_out = int(np.prod(spec["outputs"][0]["shape"]))

    def compiled():
        for b, name in zip(inb, sig["inputs"]):
            b.write(inputs[name])
        cm.run_by_index(0, inb, outb)
        outb[0].read(n_out, np.float32)

    fns = {name: (lambda r=r: r(**inputs)) for name, r in interpreters.items()}
    fns["python CompiledModel (CPU)"] = compiled
    samples = {name: [] for name in [*fns, "java core LiteRtGraphRunner (CPU, JNA)"]}
    jar = build_jar()
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(5):
                fn()
            for _ in range(calls):
                t = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - t)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "calls.json"
            subprocess.run(["java", "-cp", classpath(jar), "dev.mobilesd.cli.GraphCallBenchmark", "--bundle", str(bundle),
                            "--prompt", graph, "--steps", str(calls), "--litert-lib", str(litert_library()),
                            "--out", str(out)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            samples["java core LiteRtGraphRunner (CPU, JNA)"] += json.loads(out.read_text())["calls"]["samples_s"]
    return {"graph": graph, "calls": calls, "rounds": rounds,
            "median_ms": {k: 1e3 * statistics.median(v) for k, v in samples.items()}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20, help="denoising steps of the SD1.5-shaped overhead run")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--bundle", type=Path, default=None, help="the default model's android bundle (default: exported once)")
    p.add_argument("--e2e-steps", type=int, default=20)
    p.add_argument("--e2e-warmup", type=int, default=1)
    p.add_argument("--e2e-repeats", type=int, default=5)
    p.add_argument("--e2e-rounds", type=int, default=3, help="host / Java alternations (samples pooled)")
    p.add_argument("--scheduler", default="dpm")
    p.add_argument("--out", type=Path, default=RESULTS / "android_core_overhead.json")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    chunks = sd15_chunk_specs()
    with tempfile.TemporaryDirectory() as tmp:
        synth = write_sd15_shaped_bundle(Path(tmp) / "sd15-shapes", chunks)
        overhead = run_overhead(synth, args.steps, args.warmup, args.repeats)
    ref = sd15_unet_step_reference()
    calls = run_graph_calls(default_bundle(args.bundle), "unet", 30, args.e2e_rounds)
    e2e = run_end_to_end(default_bundle(args.bundle), args.e2e_steps, args.e2e_warmup, args.e2e_repeats,
                         args.scheduler, args.e2e_rounds)

    step_ref = ref["median_s"]
    core = overhead["loop_only"]["core"]["median_s"]
    with_copies = overhead["loop_and_copies"]["step"]["median_s"]
    copies = overhead["loop_and_copies"]["copies"]["median_s"]
    unchained = overhead["without_chunk_chaining"]["step"]["median_s"]
    chunk_bytes = {c["name"]: {"inputs_mb": round(sum(4 * _n(t["shape"]) for t in c["inputs"]) / 2**20, 1),
                               "outputs_mb": round(sum(4 * _n(t["shape"]) for t in c["outputs"]) / 2**20, 1)}
                   for c in chunks}
    result = {
        "benchmark": "android_core_overhead",
        "machine": {"cpu": _cpu(), "cpus": os.cpu_count(), "os": f"{platform.system()} {platform.release()}",
                    "python": platform.python_version(), "jvm": overhead["jvm"]},
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "argv": " ".join(sys.argv[1:]),
        "sd15_shapes": {"latent": [1, 4, 64, 64], "cfg_batch": 2, "chunks": chunks, "chunk_tensor_mb": chunk_bytes},
        "overhead": overhead,
        "sd15_unet_step_reference": ref,
        "fractions_of_sd15_step": {"loop_only": core / step_ref, "loop_and_copies": with_copies / step_ref,
                                   "copies_only": copies / step_ref, "without_chunk_chaining": unchained / step_ref},
        "targets": {"overhead_under_fraction": 0.01, "end_to_end_not_slower_than_python": True},
        "graph_calls_tiny": calls,
        "end_to_end_tiny": e2e,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    _print(result)
    print(f"wrote {args.out}")
    return 0


def _n(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _print(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    o, ref, fr = r["overhead"], r["sd15_unet_step_reference"], r["fractions_of_sd15_step"]
    t = Table(title=f"Java core per denoising step outside graph calls, SD1.5 shapes ({o['steps']} {o['scheduler']} "
                    f"steps x {o['repeats']} runs, median)")
    for col in ("part", "median ms", "p90 ms", f"of the SD1.5 UNet step ({ref['median_s']:.2f} s, {ref['variant']})"):
        t.add_column(col, justify="right" if col != "part" else "left")
    rows = [("loop: scheduler, CFG, concat/split, chunk dict", o["loop_only"]["core"], fr["loop_only"]),
            ("copies the LiteRT runner makes (Java <-> native)", o["loop_and_copies"]["copies"], fr["copies_only"]),
            ("loop + copies: the core's whole step", o["loop_and_copies"]["step"], fr["loop_and_copies"]),
            ("(for comparison) every chunk tensor through Java", o["without_chunk_chaining"]["step"],
             fr["without_chunk_chaining"])]
    for name, st, frac in rows:
        t.add_row(name, f"{1e3 * st['median_s']:.2f}", f"{1e3 * st.get('p90_s', st['median_s']):.2f}", f"{100 * frac:.3f} %")
    Console(width=160).print(t)
    e = r["end_to_end_tiny"]
    t2 = Table(title=f"default tiny bundle, end to end on the CPU ({e['steps']} {e['scheduler']} steps, "
                     f"{e['rounds']} rounds x {e['repeats']} runs after {e['warmup']} warm-up, median s)")
    for col in ("stage", "Python host (tflite)", "Java core (LiteRT C API)", "Java / Python"):
        t2.add_column(col, justify="right" if col != "stage" else "left")
    for name, s in e["stages"].items():
        if s["python_host_s"] is None and s["java_core_s"] is None:
            continue
        t2.add_row(name, "-" if s["python_host_s"] is None else f"{s['python_host_s']:.4f}",
                   "-" if s["java_core_s"] is None else f"{s['java_core_s']:.4f}",
                   "-" if s["java_over_python"] is None else f"{s['java_over_python']:.2f}x")
    Console(width=160).print(t2)
    c = r["graph_calls_tiny"]
    t3 = Table(title=f"one call of the tiny bundle's {c['graph']} graph ({c['rounds']} rounds x {c['calls']} calls, "
                     "APIs alternated, median)")
    t3.add_column("API")
    t3.add_column("ms per call", justify="right")
    for name, ms in c["median_ms"].items():
        t3.add_row(name, f"{ms:.3f}")
    Console(width=160).print(t3)


if __name__ == "__main__":
    raise SystemExit(main())
