"""`mobilesd export`: model -> components -> passes -> convert -> verify -> bundle, in one call.

Verification is not optional: every graph runs on this machine against its PyTorch module, Android
graphs are compiled for the GPU delegate, and a short generation compares the bundle's image with the
PyTorch pipeline's. Results go into the manifest; any failure aborts the export and leaves no bundle.

Memory: converting a graph costs litert-torch several times the graph's weights. For SD-scale models
(``isolate``) every heavy step runs in its own spawned worker process that loads only the part of the model
it needs (one UNet chunk's stages, say) and gives all its memory back when it exits; the parent only
orchestrates. Small models run in-process (same task functions, no process start-up cost).
"""

from __future__ import annotations

import datetime
import gc
import json
import multiprocessing as mp
import os
import platform
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import mobilesd
from mobilesd import verify
from mobilesd.bundle import FORMAT, FORMAT_VERSION, Bundle, atomic_folder, check_output_dir, finalize_manifest
from mobilesd.errors import MobileSDError

TARGETS = ("android", "ios", "onnx")
DEFAULT_PRECISION = {"android": "fp16", "ios": "fp16", "onnx": "fp32"}
BYTES_PER_PARAM = {"fp32": 4.0, "fp16": 2.0, "int8": 1.0, "int4": 0.5, "pal8": 1.0, "pal6": 0.75, "pal4": 0.5}
IOS_UNET_MAX_MB = 953.0   # ios default --unet-max-mb: the Neural Engine loads models under 1 GB (10^9 bytes)
VERIFY_PROMPT = "a handwritten digit seven"
ISOLATE_ABOVE_BYTES = 512 * 2**20   # models with more weights than this export through worker processes


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
    isolate: bool | None = None           # None: automatic, by model size
    quantized: str | None = None          # quantized-model folder (mobilesd quantize): its integers go in the graphs
    simulate_activations: bool = False    # bake its activation fake-quant (step-index input) into the UNet graphs
    activation_quantization: str | None = None  # ios: "static" = W8A8 Core ML ops from the model's tables
    # target options, passed to the converter (None: the target's default; others reject what they lack)
    attention: str | None = None          # original | split-einsum (ios default: split-einsum, Neural Engine)
    min_deployment_target: str | None = None  # ios: iOS16 | iOS17 | iOS18 (default iOS17)
    palettize: int | None = None          # ios: 4 | 6 | 8-bit weight palettization (instead of --precision int*)
    palettize_mode: str | None = None     # ios: kmeans (default) | uniform
    extra: dict = field(default_factory=dict)

    def converter_options(self) -> dict:
        return {"attention": self.attention, "min_deployment_target": self.min_deployment_target,
                "palettize": self.palettize, "palettize_mode": self.palettize_mode}

    def resolved_precision(self) -> str:
        return self.precision or DEFAULT_PRECISION[self.target]


@dataclass
class _Job:
    """What every task needs to find the model and the work folders (picklable for spawn)."""

    source: str
    load: dict
    opts: ExportOptions
    precision: str
    root: Path                            # the bundle being written (temporary folder)
    work: Path                            # scratch: carried tensors, verification inputs


def _log(msg: str, progress: bool):
    if progress:
        print(f"[mobilesd] {msg}", flush=True)


def _model_bytes(source: str) -> int:
    path = Path(source)
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in (path / "unet").glob("*") if p.is_file())
    return 1 << 40  # hub id: assume SD scale


def export(model=None, out: str | Path = "bundle", options: ExportOptions | None = None, *,
           pipe=None, allow_pickle: bool = False, prediction_type: str | None = None,
           config: str | Path | None = None) -> Bundle:
    from mobilesd.converters import get_converter
    from mobilesd.loading import default_model_path

    opts = options or ExportOptions()
    if opts.target not in TARGETS:
        raise MobileSDError(f"unknown target {opts.target!r}", f"use one of {list(TARGETS)}")
    qcfg = _quantized_config(opts)
    if qcfg is not None and opts.precision is None and opts.target in ("android", "ios"):
        import dataclasses

        opts = dataclasses.replace(opts, precision=f"int{qcfg['weight_bits']}",  # the model's own integers
                                   extra=dict(opts.extra, precision_given=False))
    elif qcfg is not None:
        opts.extra["precision_given"] = True
    precision = opts.resolved_precision()
    get_converter(opts.target, opts.converter_options()).check_precision(precision)
    if opts.target == "ios" and opts.unet_max_mb is None:
        import dataclasses

        opts = dataclasses.replace(opts, unet_max_mb=IOS_UNET_MAX_MB)
    if opts.unet_batch not in (1, 2):
        raise MobileSDError(f"--unet-batch must be 1 or 2 (got {opts.unet_batch})", "use 2 (CFG in one call) or 1")
    if opts.verify_steps < 1:
        raise MobileSDError("--verify-steps must be at least 1", "verification is part of every export")
    out = Path(out)
    check_output_dir(out, opts.overwrite)  # fail before the slow part
    if model is not None:
        source = str(model)
    elif pipe is not None:
        source = "<in-memory pipeline>"  # nothing to reload: --runtime torch then needs --model
    else:
        source = str(default_model_path())
    isolate = opts.isolate if opts.isolate is not None else (
        pipe is None and Path(source).exists() and _model_bytes(source) > ISOLATE_ABOVE_BYTES)
    load = dict(allow_pickle=allow_pickle, prediction_type=prediction_type,
                config=str(config) if config else None)
    t_start = time.perf_counter()

    with atomic_folder(out, opts.overwrite) as tmp:
        work = tmp / ".work"
        work.mkdir()
        job = _Job(source, load, opts, precision, tmp, work)
        if not isolate and pipe is None:
            _log(f"loading {source}" + (f" with quantized model {opts.quantized}" if opts.quantized else ""),
                 opts.progress)
            pipe = _load(job)
        elif pipe is not None and opts.quantized:
            _apply_quantized(pipe, opts)
        run = _Runner(isolate, pipe)
        _log(f"inspecting {source}" + (" (SD-scale: one worker process per step)" if isolate else ""), opts.progress)
        base = run(_task_inspect, job=job)
        manifest, chunks = base["manifest"], [tuple(c) for c in base["chunks"]]
        if qcfg is not None:
            manifest["quantization"] = _write_quantization(tmp, opts, qcfg)
        names = (["text_encoder"] + manifest["unet"]["chunks"] + ["vae_decoder"])

        from tqdm.auto import tqdm

        graphs_info, failures = [], []
        bar = tqdm(names, desc=f"export {opts.target}/{precision}", unit="graph", disable=not opts.progress)
        for index, name in enumerate(bar):
            bar.set_postfix_str(name)
            info = run(_task_convert, job=job, index=index, chunks=chunks)
            if opts.target == "android":
                info["gpu"] = _gpu_check(job, info)
            graphs_info.append(info)
            failures += _graph_failures(info, opts)
            _log(_graph_line(info), opts.progress)
            if failures:
                break  # no point converting the rest; the folder is discarded
        bar.close()
        if failures:
            raise MobileSDError("export verification failed:\n    " + "\n    ".join(failures),
                                "for GPU coverage, pass --allow-cpu-fallback to accept CPU ops; for accuracy, "
                                "use a higher --precision; details above")

        manifest["graphs"] = graphs_info
        _log(f"end-to-end check: {opts.verify_steps} {opts.verify_scheduler} steps, PyTorch vs the bundle", opts.progress)
        ref = run(_task_reference_image, job=job, chunks=chunks)["path"]
        got = run(_task_graph_image, job=job, manifest=manifest)["path"]
        e2e = _end_to_end(np.load(got), np.load(ref), opts, precision, manifest)
        manifest["verification"]["end_to_end"] = e2e
        manifest["verification"]["passed"] = e2e["passed"] and all(g["verification"]["passed"] for g in graphs_info)
        if not e2e["passed"]:
            raise MobileSDError(
                f"end-to-end verification failed: the bundle's image differs from PyTorch's by a mean of "
                f"{e2e['mean_abs']:.3g} (threshold {e2e['threshold']:.3g})", "use a higher --precision")
        manifest["export_seconds"] = round(time.perf_counter() - t_start, 1)
        manifest["export_isolated"] = isolate
        if isolate:
            peaks = dict(run.peaks)
            peaks.update({f"gpu_check[{g['name']}]": g["gpu"].get("peak_rss_bytes") or 0
                          for g in graphs_info if "gpu" in g and not g["gpu"].get("skipped")})
            manifest["export_peak_rss_bytes"] = peaks
        import shutil

        shutil.rmtree(work)
        manifest = finalize_manifest(tmp, manifest)
    _log(f"bundle {manifest['bundle_id']} written to {out} in {manifest['export_seconds']:.0f}s", opts.progress)
    return Bundle(out, manifest)


# ---- running tasks in-process or in a spawned worker ------------------------------------------------

class _Runner:
    def __init__(self, isolate: bool, pipe=None):
        self.isolate, self.pipe = isolate, pipe
        self.peaks: dict[str, int] = {}   # worker -> its peak RSS (bytes), isolated runs only

    def __call__(self, fn, **kwargs) -> dict:
        if not self.isolate:
            return fn(pipe=self.pipe, **kwargs)
        job: _Job = kwargs["job"]
        result = job.work / f"{fn.__name__}-{uuid.uuid4().hex[:8]}.json"
        ctx = mp.get_context("spawn")
        proc = ctx.Process(target=_worker_main, args=(fn.__name__, kwargs, str(result)))
        # large allocations through mmap, so memory freed inside a worker goes back to the OS at once
        saved = os.environ.get("MALLOC_MMAP_THRESHOLD_")
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(1 << 20)
        try:
            proc.start()
        finally:
            if saved is None:
                os.environ.pop("MALLOC_MMAP_THRESHOLD_", None)
            else:
                os.environ["MALLOC_MMAP_THRESHOLD_"] = saved
        proc.join()
        if not result.exists():
            raise MobileSDError(f"export worker {fn.__name__} died (exit code {proc.exitcode})",
                                "exit code -9 usually means out of memory: use more --unet-chunks")
        data = json.loads(result.read_text())
        if "error" in data:
            raise MobileSDError(data["error"]["problem"], data["error"].get("fix"))
        label = fn.__name__.removeprefix("_task_") + (f"[{kwargs['index']}]" if "index" in kwargs else "")
        self.peaks[label] = data.pop("_peak_rss_bytes", 0)
        return data


def _worker_main(name: str, kwargs: dict, result: str) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    try:
        data = globals()[name](pipe=None, **kwargs)
    except MobileSDError as exc:
        data = {"error": {"problem": exc.problem, "fix": exc.fix}}
    except Exception as exc:
        data = {"error": {"problem": f"{name} failed: {type(exc).__name__}: {exc}\n{traceback.format_exc()}",
                          "fix": "report this with the model's config"}}
    import resource

    data["_peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    Path(result).write_text(json.dumps(data))


def _load(job: _Job, skip: tuple = ()):
    from mobilesd.loading import load_pipeline

    pipe = load_pipeline(job.source, skip=skip, **job.load)
    if job.opts.quantized:
        _apply_quantized(pipe, job.opts)
    return pipe


# ---- quantized models (mobilesd quantize) -----------------------------------------------------------------

def _quantized_config(opts: ExportOptions) -> dict | None:
    if opts.simulate_activations and not opts.quantized:
        raise MobileSDError("--simulate-activations needs --quantized Q",
                            "quantize first (mobilesd quantize --out Q), then export --quantized Q")
    if opts.activation_quantization not in (None, "static"):
        raise MobileSDError(f"--activation-quantization {opts.activation_quantization} is not supported",
                            "use --activation-quantization static")
    if opts.activation_quantization and (opts.target != "ios" or not opts.quantized or opts.simulate_activations):
        raise MobileSDError("--activation-quantization static needs --target ios and --quantized Q (and not "
                            "--simulate-activations)", "Core ML runs integer activations (W8A8, iOS17+); the "
                            "android GPU delegate computes activations in float")
    if not opts.quantized:
        return None
    path = Path(opts.quantized)
    cfg_file = path / "quant_config.json"
    if not cfg_file.is_file():
        raise MobileSDError(f"--quantized {path} is not a quantized model (no quant_config.json)",
                            "pass a folder written by `mobilesd quantize --out Q`")
    cfg = json.loads(cfg_file.read_text())
    if (opts.simulate_activations or opts.activation_quantization) and not (cfg.get("act_bits") and cfg["act_bits"] < 16):
        raise MobileSDError(f"--simulate-activations: {path} does not quantize activations (W{cfg['weight_bits']}"
                            f"A{cfg['act_bits']})", "drop --simulate-activations, or quantize with --acts 8")
    return cfg


def _apply_quantized(pipe, opts: ExportOptions) -> None:
    """Put the quantized model into ``pipe``: its layers hold the dequantized integers exactly, and a table
    (by module identity) remembers each layer's integers for the converters. Without
    --simulate-activations the layers become plain Linear / Conv2d (weights only: activations stay float
    on the GPU); with it the UNet keeps the quantizers and gets a step-index input per chunk."""
    from torch import nn

    from mobilesd.quant import QuantizedModel
    from mobilesd.quant.layers import plain_layer
    from mobilesd.quant.model import component_module

    if getattr(pipe, "_mobilesd_quant", None) is not None:
        return
    qm = QuantizedModel.from_pretrained(opts.quantized, pipe=pipe)
    by_id, acts_by_id, quantized_ids = {}, {}, set()
    for comp, layers in qm.layers.items():
        module = component_module(pipe, comp)
        if module is None:
            continue
        entries = qm.quantized_weights(comp)
        tables = qm.activation_tables(comp) if opts.activation_quantization else {}
        for name, q in layers.items():
            target = q if (opts.simulate_activations and comp == "unet") else plain_layer(q)
            if target is not q:
                module.set_submodule(name, target)
            quantized_ids.add(id(target))
            if f"{name}.weight" in entries:
                by_id[id(target)] = entries[f"{name}.weight"]
            if name in tables:
                acts_by_id[id(target)] = tables[name]
    # layers the policy keeps in full precision (skip / downsampling convs): no integer weights in the graph
    float_ids = {id(m) for m in pipe.unet.modules()
                 if isinstance(m, (nn.Conv2d, nn.Linear)) and id(m) not in quantized_ids}
    pipe._mobilesd_quant = {"weights": by_id, "float": float_ids, "acts": acts_by_id}
    if opts.simulate_activations:
        pipe.unet._mobilesd_step_context = qm.context


def _attach_quantized(pipe, comp) -> None:
    """The converters' contract: ``component.quantized_weights`` {parameter name: integers, scale, ...} and
    ``component.float_layers`` (module names kept in floating point), by the component module's own names."""
    info = getattr(pipe, "_mobilesd_quant", None)
    if info is None:
        return
    comp.quantized_weights, comp.float_layers = {}, []
    if info["acts"]:  # ios W8A8: {layer module name: per-step scales}; Core ML gets one static scale per layer
        comp.activation_scales = {name: info["acts"][id(m)] for name, m in comp.module.named_modules()
                                  if id(m) in info["acts"]}
    for name, m in comp.module.named_modules():
        if id(m) in info["weights"]:
            comp.quantized_weights[f"{name}.weight"] = info["weights"][id(m)]
        elif id(m) in info["float"]:
            comp.float_layers.append(name)


def _write_quantization(root: Path, opts: ExportOptions, cfg: dict) -> dict:
    """The manifest's quantization section, and the per-step activation tables as a bundle file (for
    runtimes with integer activations; layer names are the PyTorch module names of the UNet)."""
    from safetensors.numpy import load_file

    qdir = Path(opts.quantized)
    section = {
        "source": str(qdir.resolve()), "method": cfg["method"], "weight_bits": cfg["weight_bits"],
        "act_bits": cfg["act_bits"], "act_intervals": cfg["act_intervals"], "group_size": cfg.get("group_size"),
        "weight_symmetric": cfg["weight_symmetric"], "timesteps": cfg.get("timesteps") or [],
        "layers": {comp: len(plan) for comp, plan in cfg["plan"].items()},
        "simulate_activations": bool(opts.simulate_activations),
        "activation_quantization": opts.activation_quantization,
        "activation_tables": None,
    }
    acts_file = qdir / "activations.safetensors"
    if acts_file.exists():
        acts = load_file(str(acts_file))
        plan = cfg["plan"]["unet"]
        tables = {k.removeprefix("unet.").removesuffix(".act_step"): v.astype(float).tolist()
                  for k, v in acts.items() if k.startswith("unet.")}
        (root / "quantization").mkdir(exist_ok=True)
        (root / "quantization" / "activations.json").write_text(json.dumps({
            "format": "mobilesd-activation-tables", "format_version": 1,
            "timesteps": section["timesteps"],
            "rule": "step size s of a layer's input at timestep t: the entry of the nearest table timestep; "
                    "x_q = s * clamp(round(x / s), -2^(b-1), 2^(b-1) - 1), zero point 0",
            "layers": {name: {"bits": plan[name]["acts"], "step_sizes": tables[name]} for name in sorted(tables)},
        }, indent=1) + "\n")
        section["activation_tables"] = {"file": "quantization/activations.json", "layers": len(tables)}
    if opts.simulate_activations:
        section["step_index"] = {"input": "step_index", "dtype": "float32", "shape": [1],
                                 "rule": "index of the table timestep nearest the scheduler timestep"}
    return section


# ---- tasks ------------------------------------------------------------------------------------------

def _task_inspect(job: _Job, pipe=None) -> dict:
    from mobilesd.components import plan_unet_chunks

    pipe = pipe or _load(job)
    if pipe.text_encoder is None:
        raise MobileSDError(f"{job.source} has no text encoder", "pass a complete SD pipeline")
    opts = job.opts
    max_bytes = opts.unet_max_mb * 2**20 if opts.unet_max_mb else None
    chunks = plan_unet_chunks(pipe.unet, opts.unet_chunks, max_bytes, BYTES_PER_PARAM[_threshold_key(job)])
    _write_tokenizer(pipe, job.root / "tokenizer")
    pipe.scheduler.save_config(str(job.root / "scheduler"))
    return {"chunks": chunks, "manifest": _manifest_base(pipe, job.source, opts, job.precision, chunks)}


def _component(pipe, job: _Job, index: int, chunks: list):
    comp = _build_component(pipe, job, index, chunks)
    _attach_quantized(pipe, comp)
    return comp


def _build_component(pipe, job: _Job, index: int, chunks: list):
    """Component ``index`` (0 text encoder, 1..n UNet chunks, n+1 VAE decoder). A UNet chunk's example inputs
    are the named tensors made so far: the seeded inputs and the PyTorch outputs of the chunks before it,
    kept in the work folder (``carry_<k>.npz``) so each chunk can be built in its own process."""
    from mobilesd.components import (Component, make_unet_chunk, text_encoder_component, unet_example_inputs,
                                     vae_decoder_component)

    opts = job.opts
    n = len(chunks)
    if index == 0:
        return text_encoder_component(pipe)
    if index == n + 1:
        return vae_decoder_component(pipe, opts.height, opts.width)
    k = index - 1
    if k == 0:
        state = unet_example_inputs(pipe, opts.unet_batch, opts.height, opts.width)
        ctx = getattr(pipe.unet, "_mobilesd_step_context", None)
        if ctx is not None:  # simulated activation quantization: verify at a middle step of the tables
            state["step_index"] = torch.tensor([len(ctx.timesteps) // 2], dtype=torch.float32)
    else:
        with np.load(job.work / f"carry_{k}.npz") as z:
            state = {name: torch.from_numpy(z[name]) for name in z.files}
    chunk = make_unet_chunk(pipe.unet, *chunks[k]).eval()
    comp = Component("unet" if n == 1 else f"unet_chunk{k}", "unet", chunk,
                     {name: state[name] for name in chunk.input_names()}, chunk.output_names(),
                     meta={"chunk_index": k, "stages": chunk.stages, "batch": opts.unet_batch,
                           "stage_range": list(chunks[k]), "aliases": chunk.aliases()})
    comp.carry_state = state
    return comp


def _drop_unused_stages(pipe, stage_range) -> None:
    """Free the weights of UNet stages a chunk does not run (worker processes only)."""
    from mobilesd.components import _stage_module, unet_stages

    for i, stage in enumerate(unet_stages(pipe.unet)):
        if not stage_range[0] <= i < stage_range[1]:
            for m in _stage_module(pipe.unet, stage):
                m.to("meta")
    gc.collect()


def _task_convert(job: _Job, index: int, chunks: list, pipe=None) -> dict:
    from mobilesd.converters import get_converter
    from mobilesd.runtime.graphs import open_graph

    n = len(chunks)
    role = "text_encoder" if index == 0 else ("vae_decoder" if index == n + 1 else "unet")
    if pipe is None:
        skip = {"text_encoder": ("vae",), "vae_decoder": ("text_encoder",), "unet": ("text_encoder", "vae")}[role]
        pipe = _load(job, skip)
        if role == "unet":
            _drop_unused_stages(pipe, chunks[index - 1])
    comp = _component(pipe, job, index, chunks)
    ref = [r.numpy() for r in comp.run(comp.example_inputs)]
    inputs = {k: v.numpy() for k, v in comp.example_inputs.items()}
    np.savez(job.work / f"io_{comp.name}.npz", **{f"in_{k}": v for k, v in inputs.items()},
             **{f"ref_{i}": r for i, r in enumerate(ref)})
    if role == "unet" and index < n:  # every named tensor so far: the next chunks' example inputs
        state = {name: t.numpy() for name, t in comp.carry_state.items()}
        state.update(zip(comp.output_names, ref))
        for alias, src in comp.meta["aliases"].items():
            state[alias] = state[src]
        np.savez(job.work / f"carry_{index}.npz", **state)
    weight_bytes = comp.weight_bytes()
    del pipe
    gc.collect()

    t0 = time.perf_counter()
    precision = _graph_precision(job, role)
    graph = get_converter(job.opts.target, job.opts.converter_options()).convert(comp, job.root, precision)
    convert_s = time.perf_counter() - t0
    del comp
    gc.collect()
    info = graph.to_dict()
    info["meta"]["convert_seconds"] = round(convert_s, 2)
    info["meta"]["weight_bytes_fp32"] = weight_bytes

    sess = open_graph(job.root / graph.file, [i.name for i in graph.inputs], [o.name for o in graph.outputs])
    t0 = time.perf_counter()
    got = sess.run(inputs)
    run_s = time.perf_counter() - t0
    del sess
    res = verify.compare_outputs(got, ref)
    threshold = verify.GRAPH_THRESHOLDS[_threshold_key(job, precision)]
    info["verification"] = dict(res, runtime=graph.format, threshold=threshold, passed=res["rel_l2"] <= threshold,
                                host_run_seconds=round(run_s, 3), inputs="fixed random (seed 0)")
    if graph.format == "mlpackage":  # ios: what the MIL interpreter reads from the package
        from mobilesd.runtime.mil import static_facts

        info["verification"]["runtime"] = "coreml-mil"
        info["static_facts"] = static_facts(job.root / graph.file)
    return info


def _graph_precision(job: _Job, role: str) -> str:
    """With --quantized and no --precision, graphs of components the quantized model leaves in float (often the
    text encoder and VAE decoder) keep the target's default precision; the rest take the model's integers."""
    if not job.opts.quantized or job.opts.extra.get("precision_given") or role == "unet":
        return job.precision
    comps = json.loads((Path(job.opts.quantized) / "quant_config.json").read_text())["plan"]
    key = {"text_encoder": "text_encoder", "vae_decoder": "vae"}[role]
    return job.precision if comps.get(key) else DEFAULT_PRECISION[job.opts.target]


def _threshold_key(job: _Job, precision: str | None = None) -> str:
    """Key of the verification thresholds (mobilesd.verify): the precision, or e.g. pal6 for palettized weights."""
    from mobilesd.converters import get_converter

    return get_converter(job.opts.target, job.opts.converter_options()).threshold_key(precision or job.precision)


def _gpu_check(job: _Job, info: dict) -> dict:
    from mobilesd.gpu_check import check_gpu

    opts = job.opts
    if opts.skip_gpu_check:
        return {"skipped": True, "reason": "--skip-gpu-check"}
    run_on_gpu = info["meta"]["weight_bytes_fp32"] <= opts.gpu_run_max_mb * 2**20
    with np.load(job.work / f"io_{info['name']}.npz") as z:
        inputs = {k[3:]: z[k] for k in z.files if k.startswith("in_")} if run_on_gpu else None
        ref = [z[f"ref_{i}"] for i in range(len(info["outputs"]))]
    res = check_gpu(job.root / info["file"], inputs)
    if not res.available:
        raise MobileSDError(
            f"the GPU-delegate check could not create a GPU accelerator ({res.error})",
            "install Vulkan drivers (bash scripts/setup.sh installs mesa-vulkan-drivers from bookworm-backports), "
            "or pass --skip-gpu-check to export without it (recorded in the manifest)")
    out = res.to_dict()
    out["delegate"] = "LiteRT GPU (WebGPU) accelerator, no CPU fallback"
    if res.outputs is not None:
        cmp = verify.compare_outputs(res.outputs, ref)
        out.update(output_rel_l2=cmp["rel_l2"], output_threshold=verify.GPU_THRESHOLD,
                   numerics_passed=cmp["rel_l2"] <= verify.GPU_THRESHOLD)
    else:
        out["output_rel_l2"] = None
        out["note"] = f"compiled only: weights over {opts.gpu_run_max_mb:.0f} MiB are too slow to run on lavapipe"
    return out


def _graph_failures(info: dict, opts: ExportOptions) -> list[str]:
    fails = []
    v = info["verification"]
    if not v["passed"]:
        fails.append(f"{info['name']}: rel. L2 error {v['rel_l2']:.3g} > {v['threshold']:.3g}")
    if opts.unet_max_mb and info["role"] == "unet" and info["size_bytes"] > opts.unet_max_mb * 2**20:
        fails.append(f"{info['name']}: the file is {info['size_bytes'] / 2**20:.1f} MiB, over --unet-max-mb "
                     f"{opts.unet_max_mb:g}")
    gpu = info.get("gpu")
    if gpu and opts.simulate_activations and info["role"] == "unet":
        # a simulate-activations UNet is the CPU numerics reference of the quantized model, not the graph a
        # phone's GPU runs (that one is weight-only); its GPU result is recorded but does not gate the export
        gpu["informative_only"] = "simulate-activations graph: CPU numerics reference of the quantized model"
        return fails
    if gpu and not gpu.get("skipped") and not opts.allow_cpu_fallback:
        if not gpu["fully_accelerated"]:
            fails.append(f"{info['name']}: not fully GPU-accelerated "
                         f"(ops left to the CPU: {gpu['unsupported_ops'] or gpu['error']})")
        elif gpu.get("numerics_passed") is False:
            fails.append(f"{info['name']}: GPU output error {gpu['output_rel_l2']:.3g} > {gpu['output_threshold']:.3g}")
    return fails


def _graph_line(info: dict) -> str:
    gpu = info.get("gpu")
    gpu_s = ""
    if gpu and not gpu.get("skipped"):
        gpu_s = ", GPU: " + ("fully accelerated" if gpu["fully_accelerated"] else f"CPU ops {gpu['unsupported_ops']}")
    return (f"{info['name']}: {info['size_bytes'] / 2**20:.1f} MiB, converted in {info['meta']['convert_seconds']:.1f}s, "
            f"rel. L2 {info['verification']['rel_l2']:.2e}{gpu_s}")


def _verify_settings(opts: ExportOptions) -> dict:
    return dict(prompt=VERIFY_PROMPT, steps=opts.verify_steps, guidance=opts.verify_guidance, seed=0,
                scheduler=opts.verify_scheduler)


def _task_reference_image(job: _Job, chunks: list, pipe=None) -> dict:
    from mobilesd.pipeline import HostPipeline

    pipe = pipe or _load(job)
    hp = HostPipeline.from_diffusers(pipe, [tuple(c) for c in chunks], job.opts.unet_batch, job.opts.height,
                                     job.opts.width)
    path = job.work / "reference.npy"
    np.save(path, hp.generate(**_verify_settings(job.opts), output="float"))
    return {"path": str(path)}


def _task_graph_image(job: _Job, manifest: dict, pipe=None) -> dict:
    from mobilesd.pipeline import GraphStages, HostPipeline
    from mobilesd.tokenizer import load_clip_tokenizer

    lat = manifest["latent"]
    sched = json.loads((job.root / manifest["scheduler"]["config"]).read_text())
    low_memory = _model_bytes(job.source) > ISOLATE_ABOVE_BYTES  # SD scale: one graph resident at a time
    hp = HostPipeline(GraphStages(Bundle(job.root, manifest), low_memory=low_memory),
                      load_clip_tokenizer(job.root / "tokenizer"), sched,
                      (lat["channels"], lat["height"], lat["width"]))
    path = job.work / "graphs.npy"
    np.save(path, hp.generate(**_verify_settings(job.opts), output="float", progress=job.opts.progress))
    return {"path": str(path)}


def _end_to_end(got, ref, opts: ExportOptions, precision: str, manifest: dict) -> dict:
    from mobilesd.converters import get_converter
    from mobilesd.pipeline import FORMAT_RUNTIME

    metrics = verify.image_metrics(got, ref)
    threshold = verify.IMAGE_THRESHOLDS[get_converter(opts.target, opts.converter_options()).threshold_key(precision)]
    fmt = manifest["graphs"][0]["format"]
    return dict(metrics, threshold=threshold, passed=metrics["mean_abs"] <= threshold,
                settings=_verify_settings(opts), runtime=FORMAT_RUNTIME.get(fmt, fmt))


def _write_tokenizer(pipe, out: Path):
    from mobilesd.tokenizer import write_clip_tokenizer_files

    tok = getattr(pipe, "tokenizer", None)
    if tok is not None and type(tok).__name__.startswith("CLIPTokenizer"):
        # keep the slow-tokenizer files the apps read (vocab.json + merges.txt + configs)
        tok.save_pretrained(str(out))
        (out / "tokenizer.json").unlink(missing_ok=True)
    if not (out / "vocab.json").exists() or not (out / "merges.txt").exists():
        write_clip_tokenizer_files(out)


def _manifest_base(pipe, source, opts, precision, chunks) -> dict:
    from mobilesd.components import latent_shape
    from mobilesd.tokenizer import BOS_ID, EOS_ID

    c, h, w = latent_shape(pipe, opts.height, opts.width)
    factor = pipe.vae_scale_factor
    tok = pipe.tokenizer
    chunk_names = ["unet"] if len(chunks) == 1 else [f"unet_chunk{k}" for k in range(len(chunks))]
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
            "unet_config": {k: v for k, v in dict(pipe.unet.config).items()
                            if k in ("block_out_channels", "cross_attention_dim", "attention_head_dim",
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
                      "supported": ["dpm", "euler", "ddim"],
                      "train_timesteps": int(pipe.scheduler.config.num_train_timesteps)},
        "cfg": {"unet_batch": opts.unet_batch, "batch_order": ["unconditional", "conditional"],
                "default_guidance": 7.5, "negative_prompt_default": "",
                "formula": "uncond + guidance * (cond - uncond)"},
        "unet": {"chunks": chunk_names, "stage_ranges": [list(r) for r in chunks],
                 "timestep": {"shape": [1], "dtype": "float32", "note": "raw scheduler timestep"}},
        "graphs": [],
        "quantization": None,
        "verification": {
            "graph_thresholds": verify.GRAPH_THRESHOLDS, "image_thresholds": verify.IMAGE_THRESHOLDS,
            "gpu_threshold": verify.GPU_THRESHOLD,
            "host": {"python": platform.python_version(), "machine": platform.machine(), "torch": torch.__version__},
        },
    }
