"""`mobilesd export`: model -> components -> passes -> convert -> verify -> bundle, in one call.

Verification is not optional: every graph runs on this machine against its PyTorch module, Android
graphs are compiled for the GPU delegate, and a short generation compares the bundle's image with the
PyTorch pipeline's. Results go into the manifest; any failure aborts the export and leaves no bundle.
"""

from __future__ import annotations

import datetime
import gc
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

import mobilesd
from mobilesd import verify
from mobilesd.bundle import FORMAT, FORMAT_VERSION, Bundle, atomic_folder, check_output_dir, finalize_manifest
from mobilesd.errors import MobileSDError

TARGETS = ("android", "ios", "onnx")
DEFAULT_PRECISION = {"android": "fp16", "ios": "fp16", "onnx": "fp32"}
BYTES_PER_PARAM = {"fp32": 4.0, "fp16": 2.0, "int8": 1.0, "int4": 0.5}
VERIFY_PROMPT = "a handwritten digit seven"


@dataclass
class ExportOptions:
    target: str = "android"
    precision: str | None = None          # None: the target's default
    unet_chunks: int | None = None
    unet_max_mb: float | None = None
    unet_batch: int = 2                   # 2: CFG halves in one call (see mobilesd/components.py)
    height: int | None = None
    width: int | None = None
    allow_cpu_fallback: bool = False
    skip_gpu_check: bool = False
    gpu_run_max_mb: float = 256.0         # run graphs up to this weight size on the (software) GPU too
    verify_steps: int = 4
    verify_scheduler: str = "dpm"
    verify_guidance: float = 7.5
    overwrite: bool = False
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def resolved_precision(self) -> str:
        return self.precision or DEFAULT_PRECISION[self.target]


def _log(msg: str, progress: bool):
    if progress:
        print(f"[mobilesd] {msg}", flush=True)


def export(model=None, out: str | Path = "bundle", options: ExportOptions | None = None, *,
           pipe=None, allow_pickle: bool = False, prediction_type: str | None = None) -> Bundle:
    from mobilesd.components import (plan_unet_chunks, text_encoder_component, unet_components,
                                     vae_decoder_component)
    from mobilesd.converters import get_converter
    from mobilesd.loading import default_model_path, load_pipeline

    opts = options or ExportOptions()
    if opts.target not in TARGETS:
        raise MobileSDError(f"unknown target {opts.target!r}", f"use one of {list(TARGETS)}")
    precision = opts.resolved_precision()
    converter = get_converter(opts.target)
    converter.check_precision(precision)
    if opts.unet_batch not in (1, 2):
        raise MobileSDError(f"--unet-batch must be 1 or 2 (got {opts.unet_batch})", "use 2 (CFG in one call) or 1")
    out = Path(out)
    check_output_dir(out, opts.overwrite)  # fail before the slow part
    t_start = time.perf_counter()
    source = str(model) if model is not None else str(default_model_path())
    if pipe is None:
        _log(f"loading {source}", opts.progress)
        pipe = load_pipeline(source, allow_pickle=allow_pickle, prediction_type=prediction_type)
    if pipe.text_encoder is None:
        raise MobileSDError(f"{source} has no text encoder", "pass a complete SD pipeline")

    max_bytes = opts.unet_max_mb * 2**20 if opts.unet_max_mb else None
    chunks = plan_unet_chunks(pipe.unet, opts.unet_chunks, max_bytes, BYTES_PER_PARAM[precision])
    components = [text_encoder_component(pipe)]
    components += unet_components(pipe, chunks, batch=opts.unet_batch, height=opts.height, width=opts.width)
    components.append(vae_decoder_component(pipe, opts.height, opts.width))
    for comp, rng in zip([c for c in components if c.role == "unet"], chunks):
        comp.meta["stage_range"] = list(rng)

    graphs_info: list[dict] = []
    failures: list[str] = []
    with atomic_folder(out, opts.overwrite) as tmp:
        from tqdm.auto import tqdm

        bar = tqdm(components, desc=f"export {opts.target}/{precision}", unit="graph", disable=not opts.progress)
        for comp in bar:
            bar.set_postfix_str(comp.name)
            t0 = time.perf_counter()
            graph = converter.convert(comp, tmp, precision)
            convert_s = time.perf_counter() - t0
            gc.collect()
            info = graph.to_dict()
            info["meta"]["convert_seconds"] = round(convert_s, 2)
            info["verification"] = _verify_graph(tmp, graph, comp, precision)
            if not info["verification"]["passed"]:
                failures.append(f"{comp.name}: rel. L2 error {info['verification']['rel_l2']:.3g} "
                                f"> {info['verification']['threshold']:.3g}")
            if opts.target == "android":
                info["gpu"] = _gpu_check(tmp / graph.file, comp, opts)
                if not info["gpu"].get("skipped") and not info["gpu"]["fully_accelerated"] \
                        and not opts.allow_cpu_fallback:
                    failures.append(f"{comp.name}: not fully GPU-accelerated "
                                    f"(ops left to the CPU: {info['gpu']['unsupported_ops'] or info['gpu']['error']})")
            graphs_info.append(info)
            _log(f"{comp.name}: {graph.size_bytes / 2**20:.1f} MiB, converted in {convert_s:.1f}s, "
                 f"rel. L2 {info['verification']['rel_l2']:.2e}"
                 + (f", GPU: {'full' if info['gpu'].get('fully_accelerated') else info['gpu'].get('unsupported_ops')}"
                    if "gpu" in info and not info["gpu"].get("skipped") else ""), opts.progress)
            if failures:
                break  # no point converting the rest; the folder is discarded
        if failures:
            raise MobileSDError("export verification failed:\n    " + "\n    ".join(failures),
                                "for GPU coverage, pass --allow-cpu-fallback to accept CPU ops; for accuracy, "
                                "use a higher --precision; details above")

        _write_tokenizer(pipe, tmp / "tokenizer")
        pipe.scheduler.save_config(str(tmp / "scheduler"))
        manifest = _manifest(pipe, source, opts, precision, chunks, graphs_info, components)
        e2e = _verify_end_to_end(tmp, manifest, pipe, opts, precision)
        manifest["verification"]["end_to_end"] = e2e
        manifest["verification"]["passed"] = e2e["passed"] and all(g["verification"]["passed"] for g in graphs_info)
        if not e2e["passed"]:
            raise MobileSDError(
                f"end-to-end verification failed: the bundle's image differs from PyTorch's by a mean of "
                f"{e2e['mean_abs']:.3g} (threshold {e2e['threshold']:.3g})", "use a higher --precision")
        manifest["export_seconds"] = round(time.perf_counter() - t_start, 1)
        manifest = finalize_manifest(tmp, manifest)
    _log(f"bundle {manifest['bundle_id']} written to {out} in {manifest['export_seconds']:.0f}s", opts.progress)
    return Bundle(out, manifest)


def _verify_graph(root: Path, graph, comp, precision: str) -> dict:
    from mobilesd.runtime.graphs import open_graph

    sess = open_graph(root / graph.file, [i.name for i in graph.inputs], [o.name for o in graph.outputs])
    inputs = {k: v.numpy() for k, v in comp.example_inputs.items()}
    t0 = time.perf_counter()
    got = sess.run(inputs)
    run_s = time.perf_counter() - t0
    ref = [r.numpy() for r in comp.run(comp.example_inputs)]
    res = verify.compare_outputs(got, ref)
    threshold = verify.GRAPH_THRESHOLDS[precision]
    del sess
    return dict(res, runtime=graph.format, threshold=threshold, passed=res["rel_l2"] <= threshold,
                host_run_seconds=round(run_s, 3), inputs="fixed random (seed 0)")


def _gpu_check(path: Path, comp, opts: ExportOptions) -> dict:
    from mobilesd.gpu_check import check_gpu

    if opts.skip_gpu_check:
        return {"skipped": True, "reason": "--skip-gpu-check"}
    run_on_gpu = comp.weight_bytes() <= opts.gpu_run_max_mb * 2**20
    inputs = {k: v.numpy() for k, v in comp.example_inputs.items()} if run_on_gpu else None
    res = check_gpu(path, inputs)
    if not res.available:
        raise MobileSDError(
            f"the GPU-delegate check could not create a GPU accelerator ({res.error})",
            "install Vulkan drivers (bash scripts/setup.sh installs mesa-vulkan-drivers from bookworm-backports), "
            "or pass --skip-gpu-check to export without it (recorded in the manifest)")
    info = res.to_dict()
    info["delegate"] = "LiteRT GPU (WebGPU) accelerator, no CPU fallback"
    if res.outputs is not None:
        ref = [r.numpy() for r in comp.run(comp.example_inputs)]
        cmp = verify.compare_outputs(res.outputs, ref)
        info["output_rel_l2"] = cmp["rel_l2"]
        info["output_threshold"] = verify.GPU_THRESHOLD
        info["numerics_passed"] = cmp["rel_l2"] <= verify.GPU_THRESHOLD
    else:
        info["output_rel_l2"] = None
        info["note"] = f"compiled only: weights over {opts.gpu_run_max_mb:.0f} MiB are too slow to run on lavapipe"
    return info


def _write_tokenizer(pipe, out: Path):
    from mobilesd.tokenizer import write_clip_tokenizer_files

    tok = getattr(pipe, "tokenizer", None)
    if tok is not None and type(tok).__name__.startswith("CLIPTokenizer"):
        # keep only the slow-tokenizer files the apps read (vocab.json + merges.txt + configs)
        tok.save_pretrained(str(out))
        for extra in ("tokenizer.json",):
            (out / extra).unlink(missing_ok=True)
    else:
        write_clip_tokenizer_files(out)
    if not (out / "vocab.json").exists() or not (out / "merges.txt").exists():
        write_clip_tokenizer_files(out)


def _manifest(pipe, source, opts, precision, chunks, graphs_info, components) -> dict:
    from mobilesd.components import latent_shape
    from mobilesd.tokenizer import BOS_ID, EOS_ID

    c, h, w = latent_shape(pipe, opts.height, opts.width)
    factor = pipe.vae_scale_factor
    tok = pipe.tokenizer
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mobilesd_version": mobilesd.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "target": opts.target,
        "precision": precision,
        "source": {
            "model": source,
            "prediction_type": pipe.scheduler.config.get("prediction_type", "epsilon"),
            "unet_config": {k: v for k, v in dict(pipe.unet.config).items() if not k.startswith("_")
                            and k in ("block_out_channels", "cross_attention_dim", "attention_head_dim",
                                      "layers_per_block", "sample_size", "use_linear_projection")},
            "text_hidden_size": pipe.text_encoder.config.hidden_size,
        },
        "image": {"height": h * factor, "width": w * factor, "channels": 3, "layout": "NHWC",
                  "range": [0.0, 1.0], "to_uint8": "round(x * 255)"},
        "latent": {"channels": c, "height": h, "width": w, "scaling_factor": float(pipe.vae.config.scaling_factor),
                   "vae_scale_factor": factor, "note": "the decoder graph applies 1/scaling_factor itself"},
        "tokenizer": {"type": "clip_bpe", "dir": "tokenizer", "vocab": "tokenizer/vocab.json",
                      "merges": "tokenizer/merges.txt", "max_length": int(tok.model_max_length),
                      "bos_id": int(tok.bos_token_id if tok.bos_token_id is not None else BOS_ID),
                      "eos_id": int(tok.eos_token_id if tok.eos_token_id is not None else EOS_ID),
                      "pad_id": int(tok.pad_token_id if tok.pad_token_id is not None else EOS_ID),
                      "lowercase": True, "padding": "max_length"},
        "scheduler": {"config": "scheduler/scheduler_config.json", "default": "dpm",
                      "supported": ["dpm", "euler", "ddim"], "train_timesteps": int(pipe.scheduler.config.num_train_timesteps)},
        "cfg": {"unet_batch": opts.unet_batch, "batch_order": ["unconditional", "conditional"],
                "default_guidance": 7.5, "negative_prompt_default": "",
                "formula": "uncond + guidance * (cond - uncond)"},
        "unet": {"chunks": [c.name for c in components if c.role == "unet"],
                 "stage_ranges": [list(r) for r in chunks],
                 "timestep": {"shape": [1], "dtype": "float32", "note": "raw scheduler timestep"}},
        "graphs": graphs_info,
        "quantization": None,
        "verification": {
            "graph_thresholds": verify.GRAPH_THRESHOLDS, "image_thresholds": verify.IMAGE_THRESHOLDS,
            "gpu_threshold": verify.GPU_THRESHOLD,
            "host": {"python": platform.python_version(), "machine": platform.machine(),
                     "torch": torch.__version__},
        },
    }


def _verify_end_to_end(root: Path, manifest: dict, pipe, opts: ExportOptions, precision: str) -> dict:
    from mobilesd.pipeline import GraphStages, HostPipeline

    bundle = Bundle(root, manifest)
    chunks = [tuple(r) for r in manifest["unet"]["stage_ranges"]]
    img = manifest["image"]
    ref_pipe = HostPipeline.from_diffusers(pipe, chunks, opts.unet_batch, img["height"], img["width"])
    lat = manifest["latent"]
    graph_pipe = HostPipeline(GraphStages(bundle), pipe.tokenizer, dict(pipe.scheduler.config),
                              (lat["channels"], lat["height"], lat["width"]))
    kw = dict(prompt=VERIFY_PROMPT, steps=opts.verify_steps, guidance=opts.verify_guidance, seed=0,
              scheduler=opts.verify_scheduler, output="float")
    t0 = time.perf_counter()
    ref = ref_pipe.generate(**kw)
    t1 = time.perf_counter()
    got = graph_pipe.generate(**kw, progress=opts.progress)
    t2 = time.perf_counter()
    metrics = verify.image_metrics(got, ref)
    threshold = verify.IMAGE_THRESHOLDS[precision]
    return dict(metrics, threshold=threshold, passed=metrics["mean_abs"] <= threshold,
                settings={k: v for k, v in kw.items() if k != "output"},
                runtime=manifest["graphs"][0]["format"],
                torch_seconds=round(t1 - t0, 2), graphs_seconds=round(t2 - t1, 2))
