"""The export's steps as task functions: each runs in-process or in its own worker (mobilesd.export.runner).

A task takes the job (where the model and the work folders are), loads what it needs unless the parent
passes an already loaded model, and returns plain JSON-able data.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mobilesd import verify
from mobilesd.errors import MobileSDError
from mobilesd.export import faults
from mobilesd.export.options import BYTES_PER_PARAM, CONVERT_MAX_FP32_MB, ISOLATE_ABOVE_BYTES, VERIFY_PROMPT, ExportPlan

logger = logging.getLogger(__name__)


@dataclass
class Job:
    """What every task needs to find the model and the work folders (picklable: it goes to a worker process)."""

    source: str
    load: dict
    plan: ExportPlan
    root: Path                            # the bundle being written (temporary folder)
    work: Path                            # scratch: carried tensors, verification inputs, worker logs

    @property
    def opts(self):
        return self.plan.opts


@dataclass
class Loaded:
    """A loaded pipeline and, for --quantized, its integers (mobilesd.export.quantized.QuantizedExport)."""

    pipe: object
    quant: object | None = None


def load(job: Job, skip: tuple = ()) -> Loaded:
    """The model as the graphs hold it: loaded, the plan's LoRAs fused (in every worker, each reloads the model;
    a quantized model's LoRAs before its integers go in, as they were fused before quantization)."""
    from mobilesd.export.quantized import apply_quantized
    from mobilesd.loading import load_pipeline

    pipe = load_pipeline(job.source, skip=skip, **job.load)
    if job.plan.loras:
        from mobilesd.lora import fuse_loras

        fuse_loras(pipe, job.plan.loras, job.opts.allow_pickle)
    return Loaded(pipe, apply_quantized(pipe, job.opts) if job.opts.quantized else None)


def tiny_vae(job: Job, pipe):
    """The plan's AutoencoderTiny (``--vae-decoder tiny=PATH``), checked against the model's latents; None = full."""
    if job.plan.tiny_decoder is None:
        return None
    from mobilesd.bundle import sha256_file
    from mobilesd.components import load_tiny_vae

    info = job.plan.tiny_decoder
    path = Path(info["path"])
    if sha256_file(path / info["weights"]) != info["sha256"]:
        raise MobileSDError(f"tiny decoder {path} changed during the export", "export again")
    return load_tiny_vae(path, pipe, job.opts.allow_pickle)


def model_bytes(source: str) -> int:
    path = Path(source)
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in (path / "unet").glob("*") if p.is_file())
    return 1 << 40  # hub id: assume SD scale


def role_of(index: int, n_chunks: int) -> str:
    return "text_encoder" if index == 0 else ("vae_decoder" if index == n_chunks + 1 else "unet")


# ---- inspect ------------------------------------------------------------------------------------------

def task_inspect(job: Job, loaded: Loaded | None = None) -> dict:
    """Chunk plan, tokenizer and scheduler files, and the model facts the manifest needs."""
    from mobilesd.components import latent_shape, plan_unet_chunks, stage_weight_bytes

    loaded = loaded or load(job)
    pipe = loaded.pipe
    if pipe.text_encoder is None:
        raise MobileSDError(f"{job.source} has no text encoder", "pass a complete SD pipeline")
    plan = job.plan
    max_bytes = plan.unet_max_mb * 2**20 if plan.unet_max_mb else None
    if job.opts.unet_chunks is None and max_bytes is None:
        # the default: chunks small enough to convert in bounded memory (a single stage larger than the
        # limit becomes a chunk of its own)
        limit = max(CONVERT_MAX_FP32_MB * 2**20, max(stage_weight_bytes(pipe.unet)))
        chunks = plan_unet_chunks(pipe.unet, None, limit, 4.0)
        if len(chunks) > 1:
            logger.info("UNet in %d chunks, each under %.0f MiB of fp32 weights, to convert in bounded memory "
                     "(--unet-chunks 1 for one graph)", len(chunks), limit / 2**20)
    else:
        chunks = plan_unet_chunks(pipe.unet, job.opts.unet_chunks, max_bytes, BYTES_PER_PARAM[plan.threshold_key()])
    _write_tokenizer(pipe, job.root / "tokenizer")
    dropped = _write_scheduler_config(pipe.scheduler, job.root / "scheduler")
    c, h, w = latent_shape(pipe, job.opts.height, job.opts.width)
    tok = pipe.tokenizer
    facts = {
        "prediction_type": pipe.scheduler.config.get("prediction_type", "epsilon"),
        "unet_config": {k: v for k, v in dict(pipe.unet.config).items()
                        if k in ("block_out_channels", "cross_attention_dim", "attention_head_dim",
                                 "layers_per_block", "sample_size", "use_linear_projection")},
        "text_hidden_size": int(pipe.text_encoder.config.hidden_size),
        "latent": [c, h, w], "vae_scale_factor": int(pipe.vae_scale_factor),
        "scaling_factor": float(pipe.vae.config.scaling_factor),
        "tokenizer": {"max_length": int(tok.model_max_length), "bos_id": tok.bos_token_id,
                      "eos_id": tok.eos_token_id, "pad_id": tok.pad_token_id},
        "train_timesteps": int(pipe.scheduler.config.num_train_timesteps),
        "scheduler_nonfinite_defaults": dropped,
    }
    return {"chunks": chunks, "facts": json.loads(json.dumps(facts, allow_nan=False))}


def _write_scheduler_config(scheduler, out: Path) -> list[str]:
    """diffusers' scheduler_config.json, strict JSON: keys holding a non-finite value (DPM-Solver's
    ``lambda_min_clipped = -inf``, its default) are left out, so every reader applies the default."""
    import math

    scheduler.save_config(str(out))
    path = out / "scheduler_config.json"
    cfg = json.loads(path.read_text())
    dropped = sorted(k for k, v in cfg.items() if isinstance(v, float) and not math.isfinite(v))
    if dropped:
        path.write_text(json.dumps({k: v for k, v in cfg.items() if k not in dropped}, indent=2,
                                   allow_nan=False) + "\n")
    return dropped


def _write_tokenizer(pipe, out: Path):
    from mobilesd.tokenizer import write_clip_tokenizer_files

    tok = getattr(pipe, "tokenizer", None)
    if tok is not None and type(tok).__name__.startswith("CLIPTokenizer"):
        # keep the slow-tokenizer files the apps read (vocab.json + merges.txt + configs)
        tok.save_pretrained(str(out))
        (out / "tokenizer.json").unlink(missing_ok=True)
    if not (out / "vocab.json").exists() or not (out / "merges.txt").exists():
        write_clip_tokenizer_files(out)


# ---- components ---------------------------------------------------------------------------------------

def build_component(loaded: Loaded, job: Job, index: int, chunks: list):
    """Component ``index`` (0 text encoder, 1..n UNet chunks, n+1 VAE decoder). A UNet chunk's example inputs
    are the named tensors made so far: the seeded inputs and the PyTorch outputs of the chunks before it,
    kept in the work folder (``carry_<k>.npz``) so each chunk can be built in its own process."""
    from mobilesd.components import (Component, make_unet_chunk, text_encoder_component, unet_example_inputs,
                                     vae_decoder_component)

    pipe, opts = loaded.pipe, job.opts
    n = len(chunks)
    batch = job.plan.unet_batch
    if index == 0:
        comp = text_encoder_component(pipe)
    elif index == n + 1:
        comp = vae_decoder_component(pipe, opts.height, opts.width, tiny_vae=tiny_vae(job, pipe))
    else:
        k = index - 1
        step_context = loaded.quant.step_context if loaded.quant is not None else None
        if k == 0:
            state = unet_example_inputs(pipe, batch, opts.height, opts.width)
            if step_context is not None:  # simulated activation quantization: verify at a middle step
                state["step_index"] = torch.tensor([len(step_context.timesteps) // 2], dtype=torch.float32)
        else:
            with np.load(job.work / f"carry_{k}.npz") as z:
                state = {name: torch.from_numpy(z[name]) for name in z.files}
        chunk = make_unet_chunk(pipe.unet, *chunks[k], step_context=step_context).eval()
        comp = Component("unet" if n == 1 else f"unet_chunk{k}", "unet", chunk,
                         {name: state[name] for name in chunk.input_names()}, chunk.output_names(),
                         meta={"chunk_index": k, "stages": chunk.stages, "batch": batch,
                               "stage_range": list(chunks[k]), "aliases": chunk.aliases()})
        comp.carry_state = state
    if loaded.quant is not None:
        loaded.quant.attach(comp)
    return comp


def _drop_unused_stages(pipe, stage_range) -> None:
    """Free the weights of UNet stages a chunk does not run (worker processes only)."""
    from mobilesd.components import _stage_module, unet_stages

    for i, stage in enumerate(unet_stages(pipe.unet)):
        if not stage_range[0] <= i < stage_range[1]:
            for m in _stage_module(pipe.unet, stage):
                m.to("meta")
    gc.collect()


def io_file(job: Job, name: str) -> Path:
    """Fixed inputs and PyTorch reference outputs of graph ``name`` (verification and GPU check)."""
    return job.work / f"io_{name}.npz"


def load_io(job: Job, name: str) -> tuple[dict, dict]:
    with np.load(io_file(job, name)) as z:
        return ({k[3:]: z[k] for k in z.files if k.startswith("in_")},
                {k[4:]: z[k] for k in z.files if k.startswith("ref_")})


# ---- convert + host verification ------------------------------------------------------------------------

class _Clock:
    """Wall time of a task's phases, for the manifest (where an export spends its time)."""

    def __init__(self):
        self.laps: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._t, 2)
        self._t = now


def task_convert(job: Job, index: int, chunks: list, loaded: Loaded | None = None) -> dict:
    """Convert graph ``index`` and run it on the host runtime against its PyTorch module."""
    from mobilesd.runtime.graphs import open_graph

    n = len(chunks)
    role = role_of(index, n)
    clock = _Clock()
    if loaded is None:
        skip = {"text_encoder": ("vae",), "vae_decoder": ("text_encoder",), "unet": ("text_encoder", "vae")}[role]
        loaded = load(job, skip)
        if role == "unet":
            _drop_unused_stages(loaded.pipe, chunks[index - 1])
        clock.lap("load")
    comp = build_component(loaded, job, index, chunks)
    ref = dict(zip(comp.output_names, (r.numpy() for r in comp.run(comp.example_inputs))))
    clock.lap("pytorch")
    inputs = {k: v.numpy() for k, v in comp.example_inputs.items()}
    np.savez(io_file(job, comp.name), **{f"in_{k}": v for k, v in inputs.items()},
             **{f"ref_{k}": v for k, v in ref.items()})
    if role == "unet" and index < n:  # every named tensor so far: the next chunks' example inputs
        state = {name: t.numpy() for name, t in comp.carry_state.items()}
        state.update(ref)
        for alias, src in comp.meta["aliases"].items():
            state[alias] = state[src]
        np.savez(job.work / f"carry_{index}.npz", **state)
    weight_bytes = comp.weight_bytes()
    del loaded
    gc.collect()
    precision = job.plan.graph_precision(role)
    converter = job.plan.converter()
    # the error this graph's weight quantization alone causes, simulated in PyTorch: its bound derives from it
    simulated = verify.simulated_quantization_error(comp, converter.weight_scheme(precision), ref)
    clock.lap("simulated_quantization")

    faults.inject(f"convert:{index}")
    t0 = time.perf_counter()
    graph = converter.convert(comp, job.root, precision)
    convert_s = time.perf_counter() - t0
    del comp
    gc.collect()
    info = graph.to_dict()
    info["meta"]["convert_seconds"] = round(convert_s, 2)
    info["meta"]["weight_bytes_fp32"] = weight_bytes
    clock.lap("convert")

    sess = open_graph(job.root / graph.file, [i.name for i in graph.inputs], [o.name for o in graph.outputs])
    t0 = time.perf_counter()
    got = sess.run_named(inputs)
    run_s = time.perf_counter() - t0
    del sess
    clock.lap("host_run")
    info["meta"]["step_seconds"] = clock.laps
    res = verify.compare_outputs(got, ref, where=f"{graph.name} ({graph.file})")
    key = job.plan.threshold_key(precision)
    if job.opts.simulate_activations and role == "unet" and key in ("fp32", "fp16"):
        # fake-quantized activations: an input a rounding step away from a boundary lands on the other side
        # on another runtime, so a correct graph differs from PyTorch by the quantization's own step
        key = "int8"
    threshold = verify.graph_bound(key, simulated)
    info["verification"] = dict(res, runtime=graph.format, threshold=threshold, passed=res["rel_l2"] <= threshold,
                                simulated_quantization_rel_l2=simulated,
                                threshold_rule=(f"min({verify.GRAPH_THRESHOLDS[key]:g}, max({verify.GRAPH_FLOORS[key]:g}, "
                                                f"{verify.SIM_MARGIN:g} x simulated))" if simulated is not None
                                                else f"fixed {threshold:g}"),
                                host_run_seconds=round(run_s, 3), inputs="fixed random (seed 0)")
    if graph.format == "mlpackage":  # ios: what the MIL interpreter reads from the package
        from mobilesd.runtime.mil import static_facts

        info["verification"]["runtime"] = "coreml-mil"
        info["static_facts"] = static_facts(job.root / graph.file)
    return info


# ---- end to end -------------------------------------------------------------------------------------------

def verify_settings(plan) -> dict:
    """The end-to-end check's generation (cfg mode none: guidance 1, as it is ignored). ``plan``: an ExportPlan,
    or ExportOptions (their defaults resolved as make_plan would)."""
    from mobilesd.export.options import ExportOptions, resolve_cfg_mode

    if isinstance(plan, ExportOptions):
        opts, cfg_mode, scheduler = plan, resolve_cfg_mode(plan), plan.verify_scheduler
    else:
        opts, cfg_mode, scheduler = plan.opts, plan.cfg_mode, plan.verify_scheduler
    return dict(prompt=VERIFY_PROMPT, steps=opts.verify_steps,
                guidance=1.0 if cfg_mode == "none" else opts.verify_guidance, seed=0, scheduler=scheduler)


def task_reference_image(job: Job, chunks: list, loaded: Loaded | None = None) -> dict:
    from mobilesd.pipeline import HostPipeline

    own_model = loaded is None
    loaded = loaded or load(job)
    step_context = loaded.quant.step_context if loaded.quant is not None else None
    hp = HostPipeline.from_diffusers(loaded.pipe, [tuple(c) for c in chunks], job.plan.unet_batch, job.opts.height,
                                     job.opts.width, step_context=step_context, cfg_mode=job.plan.cfg_mode,
                                     timestep_spacing=job.opts.timestep_spacing,
                                     decoder_vae=tiny_vae(job, loaded.pipe),
                                     # a worker's own model (SD scale): the text encoder freed before the UNet runs
                                     reduce_memory=own_model)
    path = job.work / "reference.npy"
    np.save(path, hp.generate(**verify_settings(job.plan), output="float"))
    return {"path": str(path)}


def task_graph_image(job: Job, manifest: dict, loaded: Loaded | None = None) -> dict:
    """The same generation through the bundle's graphs (the bundle as written so far, manifest in memory)."""
    from mobilesd.bundle import Bundle
    from mobilesd.pipeline import GraphStages, HostPipeline
    from mobilesd.tokenizer import load_clip_tokenizer

    lat = manifest["latent"]
    sched = json.loads((job.root / manifest["scheduler"]["config"]).read_text())
    low_memory = model_bytes(job.source) > ISOLATE_ABOVE_BYTES  # SD scale: one graph resident at a time
    hp = HostPipeline(GraphStages(Bundle(job.root, manifest), low_memory=low_memory),
                      load_clip_tokenizer(job.root / "tokenizer"), sched,
                      (lat["channels"], lat["height"], lat["width"]),
                      timestep_spacing=manifest["scheduler"].get("timestep_spacing"))
    path = job.work / "graphs.npy"
    np.save(path, hp.generate(**verify_settings(job.plan), output="float", progress=job.opts.progress))
    return {"path": str(path)}
