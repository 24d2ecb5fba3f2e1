"""The host pipeline: tokenizer -> text encoder -> denoising loop with CFG -> VAE decoder -> image.

This is the reference implementation of what the phone apps do with a bundle. Its stages run on one
of the host runtimes (torch, tflite, onnx); the loop follows diffusers' StableDiffusionPipeline step for
step, so on the torch runtime its image equals diffusers' own for the same seed and scheduler.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mobilesd.errors import MobileSDError

SCHEDULERS = {
    "dpm": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "ddim": "DDIMScheduler",
    "lcm": "LCMScheduler",
    "pndm": "PNDMScheduler",
}
# the schedulers every app client implements (and the bundle's scheduler.supported list)
CLIENT_SCHEDULERS = ("dpm", "euler", "ddim", "lcm")
RUNTIMES = ("torch", "tflite", "onnx", "coreml-mil")
# graph file format -> the host runtime that runs it (coreml-mil: the MIL interpreter, mobilesd/runtime/mil/)
FORMAT_RUNTIME = {"tflite": "tflite", "onnx": "onnx", "mlpackage": "coreml-mil"}

OnStage = Callable[[str, float], None]


def make_scheduler(name: str, config: dict, timestep_spacing: str | None = None):
    """Scheduler ``name`` from a diffusers config; ``timestep_spacing`` (the manifest's
    ``scheduler.timestep_spacing``) overrides the config's for every scheduler (SD-Turbo-style "trailing")."""
    import diffusers

    if name not in SCHEDULERS:
        raise MobileSDError(f"unknown scheduler {name!r}", f"use one of {sorted(SCHEDULERS)}")
    if timestep_spacing is not None:
        config = dict(config, timestep_spacing=timestep_spacing)
    return getattr(diffusers, SCHEDULERS[name]).from_config(config)


def cfg_mode_of(unet_batch: int) -> str:
    """The CFG mode of a UNet graph batch when none is stated (bundles always state it)."""
    return "batch" if unet_batch == 2 else "sequential"


class Stages:
    """The three stages on some runtime. Arrays in and out are numpy float32 (ids int32)."""

    unet_batch: int = 2
    cfg_mode: str = "batch"      # batch | sequential | none (mobilesd.export: the manifest's cfg.mode)
    runtime: str = ""

    def encode(self, input_ids: np.ndarray) -> np.ndarray: ...

    def unet(self, sample: np.ndarray, timestep: np.ndarray, context: np.ndarray,
             on_stage: OnStage | None = None) -> np.ndarray: ...

    def decode(self, latent: np.ndarray) -> np.ndarray: ...


def _timed(on_stage, name, fn, *args):
    if on_stage is None:
        return fn(*args)
    t0 = time.perf_counter()
    out = fn(*args)
    on_stage(name, time.perf_counter() - t0)
    return out


class TorchStages(Stages):
    """The PyTorch components (the same modules the converters see)."""

    runtime = "torch"

    def __init__(self, pipe, chunks: list[tuple[int, int]] | None = None, unet_batch: int = 2,
                 step_context=None, cfg_mode: str | None = None, decoder_vae=None, reduce_memory: bool = False):
        """``step_context``: the StepContext of a quantized UNet with simulated activation quantization (its
        chunks then take a step_index input, as the exported graphs do). ``cfg_mode`` none runs batch-1 UNet
        calls on the prompt only. ``decoder_vae``: an AutoencoderTiny decoding in place of the pipeline's VAE.
        ``reduce_memory``: for one generation at SD scale, weights (in ``pipe`` too) are freed as soon as they
        are done with: the VAE's encoder at once (never used here), the text encoder at the first UNet call and
        the UNet at the decode, so that each stage runs with only its own weights beside its activations."""
        self.reduce_memory = reduce_memory
        self._unet_module = pipe.unet if reduce_memory else None
        if reduce_memory:
            _free(pipe.vae.encoder, getattr(pipe.vae, "quant_conv", None),
                  *([pipe.vae.decoder, pipe.vae.post_quant_conv] if decoder_vae is not None else []))
        from mobilesd.components import TextEncoder, TinyVAEDecoder, VAEDecoder, make_unet_chunk, unet_stages

        self.text_encoder = TextEncoder(pipe.text_encoder).eval()
        chunks = chunks or [(0, len(unet_stages(pipe.unet)))]
        self.chunks = [make_unet_chunk(pipe.unet, a, b, step_context).eval() for a, b in chunks]
        self.step_timesteps = step_context.timesteps if step_context is not None else None
        self.specs = [(c.input_names(), c.output_names(), c.aliases()) for c in self.chunks]
        self.decoder = (TinyVAEDecoder(decoder_vae) if decoder_vae is not None else VAEDecoder(pipe.vae)).eval()
        self.cfg_mode = cfg_mode or cfg_mode_of(unet_batch)
        self.unet_batch = 1 if self.cfg_mode == "none" else unet_batch

    @torch.no_grad()
    def encode(self, input_ids):
        if self.text_encoder is None:
            raise MobileSDError("this reduce-memory pipeline freed its text encoder after its first generation",
                                "make a new pipeline for each generation, or pass reduce_memory=False")
        return self.text_encoder(torch.from_numpy(np.asarray(input_ids, np.int32))).numpy()

    @torch.no_grad()
    def unet(self, sample, timestep, context, on_stage=None):
        from mobilesd.components import run_unet_chunks

        if self.reduce_memory and self.text_encoder is not None:   # the prompt is encoded by now
            _free(self.text_encoder)
            self.text_encoder = None

        def run(i, inputs):
            out = self.chunks[i](**inputs)
            return [out] if isinstance(out, torch.Tensor) else list(out)

        out = run_unet_chunks(self.chunks, self.specs, torch.from_numpy(sample),
                              torch.from_numpy(np.asarray(timestep, np.float32).reshape(1)),
                              torch.from_numpy(context), run, on_stage, _step_input(self.step_timesteps, timestep,
                                                                                    torch.from_numpy))
        return out.numpy()

    @torch.no_grad()
    def decode(self, latent):
        if self._unet_module is not None:   # the last step is done: the decoder runs without the UNet's weights
            _free(self._unet_module)
            self._unet_module, self.chunks = None, None
        return self.decoder(torch.from_numpy(latent)).numpy()


def _free(*modules) -> None:
    """Free modules' weights in place (parameters and buffers to the meta device), for reduce_memory."""
    import gc

    for m in modules:
        if m is not None:
            m.to("meta")
    gc.collect()


def _step_kwargs(scheduler, generator) -> dict:
    """``generator=`` for schedulers whose step takes one, as diffusers' pipelines pass it (only LCM draws
    from it in the configurations we ship: Euler's draw is unused at s_churn 0, DDIM at eta 0 draws none)."""
    import inspect

    return {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}


def _step_input(step_timesteps, timestep, convert=lambda a: a) -> dict | None:
    """{"step_index": ...} for graphs with simulated activation quantization (per-step tables), else None."""
    if not step_timesteps:
        return None
    from mobilesd.components import nearest_step_index

    return {"step_index": convert(nearest_step_index(step_timesteps, float(np.asarray(timestep).reshape(-1)[0])))}


class GraphStages(Stages):
    """Exported graphs of a bundle on a host runtime (ai-edge-litert or onnxruntime).

    ``low_memory``: open each graph only for its call and drop it afterwards, so one graph's weights are
    resident at a time (export's verification run of SD-scale bundles); slower, as graphs load per call.
    """

    def __init__(self, bundle, threads: int | None = None, low_memory: bool = False):
        self.bundle, self.threads, self.low_memory = bundle, threads, low_memory
        self.runtime = FORMAT_RUNTIME[bundle.graphs("unet")[0]["format"]]
        self.graph_specs = {"text_encoder": bundle.graphs("text_encoder")[0],
                            "vae_decoder": bundle.graphs("vae_decoder")[0]}
        chunk_specs = bundle.unet_graphs()
        self.chunk_names = [g["name"] for g in chunk_specs]
        self.graph_specs.update({g["name"]: g for g in chunk_specs})
        self.specs = [([i["name"] for i in g["inputs"]], [o["name"] for o in g["outputs"]],
                       g["meta"].get("aliases", {})) for g in chunk_specs]
        self.sessions = {} if low_memory else {name: self._open(name) for name in self.graph_specs}
        quant = bundle.manifest.get("quantization") or {}
        self.step_timesteps = quant.get("timesteps") if quant.get("simulate_activations") else None
        self.unet_batch = bundle.manifest["cfg"]["unet_batch"]
        self.cfg_mode = bundle.manifest["cfg"].get("mode") or cfg_mode_of(self.unet_batch)

    def _open(self, name):
        from mobilesd.runtime.graphs import open_graph

        g = self.graph_specs[name]
        return open_graph(self.bundle.path(g["file"]), [i["name"] for i in g["inputs"]],
                          [o["name"] for o in g["outputs"]], self.threads, low_memory=self.low_memory)

    def _run(self, name, inputs):
        sess = self.sessions.get(name) or self._open(name)
        out = sess.run(inputs)
        del sess
        return out

    def encode(self, input_ids):
        return self._run("text_encoder", {"input_ids": np.asarray(input_ids, np.int32)})[0]

    def unet(self, sample, timestep, context, on_stage=None):
        from mobilesd.components import run_unet_chunks

        return run_unet_chunks(self.chunk_names, self.specs, sample, np.asarray(timestep, np.float32).reshape(1),
                               context, lambda i, inputs: self._run(self.chunk_names[i], inputs), on_stage,
                               _step_input(self.step_timesteps, timestep))

    def decode(self, latent):
        return self._run("vae_decoder", {"latent": latent})[0]


class HostPipeline:
    def __init__(self, stages: Stages, tokenizer, scheduler_config: dict, latent_shape: tuple[int, int, int],
                 default_scheduler: str = "dpm", timestep_spacing: str | None = None):
        """``timestep_spacing``: overrides the scheduler config's for every scheduler (the manifest's
        ``scheduler.timestep_spacing``)."""
        self.stages = stages
        self.tokenizer = tokenizer
        self.scheduler_config = dict(scheduler_config)
        self.latent_shape = tuple(latent_shape)
        self.default_scheduler = default_scheduler
        self.timestep_spacing = timestep_spacing
        self.load_seconds = 0.0

    @property
    def cfg_mode(self) -> str:
        return getattr(self.stages, "cfg_mode", None) or cfg_mode_of(self.stages.unet_batch)

    # -- construction ---------------------------------------------------------------------------------
    @classmethod
    def from_diffusers(cls, pipe, chunks=None, unet_batch: int = 2, height: int | None = None,
                       width: int | None = None, step_context=None, cfg_mode: str | None = None,
                       timestep_spacing: str | None = None, decoder_vae=None,
                       reduce_memory: bool = False) -> "HostPipeline":
        from mobilesd.components import latent_shape

        return cls(TorchStages(pipe, chunks, unet_batch, step_context, cfg_mode, decoder_vae, reduce_memory),
                   pipe.tokenizer,
                   dict(pipe.scheduler.config), latent_shape(pipe, height, width), timestep_spacing=timestep_spacing)

    @classmethod
    def from_bundle(cls, bundle_dir, runtime: str = "tflite", threads: int | None = None,
                    model: str | None = None, quantized: str | None = None) -> "HostPipeline":
        """``runtime`` torch runs the PyTorch model the export verified the bundle against: the source model
        recorded in the manifest (or ``model``) and, for a bundle of a quantized model, that quantized model's
        weights from ``quantization.source`` (or ``quantized``), see ``_torch_stages``."""
        from mobilesd.bundle import load_bundle
        from mobilesd.tokenizer import load_clip_tokenizer

        t0 = time.perf_counter()
        if runtime not in RUNTIMES:
            raise MobileSDError(f"unknown runtime {runtime!r}", f"use one of {list(RUNTIMES)}")
        if threads is not None:
            torch.set_num_threads(threads)
        bundle = load_bundle(bundle_dir)
        m = bundle.manifest
        fmt = bundle.graphs("unet")[0]["format"]
        if runtime != "torch" and FORMAT_RUNTIME.get(fmt) != runtime:
            raise MobileSDError(f"bundle {bundle.root} holds {fmt} graphs; it cannot run on --runtime {runtime}",
                                f"use --runtime {FORMAT_RUNTIME.get(fmt, fmt)} or torch, or export with the matching --target")
        tokenizer = load_clip_tokenizer(bundle.path(m["tokenizer"]["dir"]))
        sched_cfg = json.loads(bundle.path(m["scheduler"]["config"]).read_text())
        lat = m["latent"]
        if runtime == "torch":
            stages: Stages = _torch_stages(bundle, model, quantized)
        else:
            stages = GraphStages(bundle, threads)
        hp = cls(stages, tokenizer, sched_cfg, (lat["channels"], lat["height"], lat["width"]),
                 m["scheduler"].get("default", "dpm"), timestep_spacing=m["scheduler"].get("timestep_spacing"))
        hp.bundle = bundle
        hp.load_seconds = time.perf_counter() - t0
        return hp

    # -- running --------------------------------------------------------------------------------------
    def encode_prompt(self, prompt: str, negative_prompt: str = "") -> tuple[np.ndarray, np.ndarray]:
        from mobilesd.tokenizer import tokenize

        ids = tokenize(self.tokenizer, [negative_prompt, prompt]).astype(np.int32)
        uncond = self.stages.encode(ids[:1])
        cond = self.stages.encode(ids[1:])
        return uncond, cond

    def initial_latent(self, seed: int | torch.Generator, scheduler) -> np.ndarray:
        # torch's CPU generator, as diffusers' prepare_latents uses: same seed -> same noise. The generator
        # goes on into scheduler.step (LCM draws fresh noise every step from it), as in diffusers.
        g = seed if isinstance(seed, torch.Generator) else torch.Generator("cpu").manual_seed(int(seed))
        noise = torch.randn((1, *self.latent_shape), generator=g, dtype=torch.float32)
        return (noise * scheduler.init_noise_sigma).numpy()

    def generate(self, prompt: str, negative_prompt: str = "", steps: int = 20, guidance: float = 7.5,
                 seed: int = 0, scheduler: str | None = None, on_stage: OnStage | None = None,
                 latents: np.ndarray | None = None, progress: bool = False,
                 output: str = "uint8") -> np.ndarray:
        """One image, (H, W, 3) uint8 (or float32 in [0, 1] with ``output="float"``)."""
        if steps < 1:
            raise MobileSDError(f"--steps must be at least 1 (got {steps})", "pass --steps 20, for example")
        sched = make_scheduler(scheduler or self.default_scheduler, self.scheduler_config, self.timestep_spacing)
        sched.set_timesteps(steps)
        t_start = time.perf_counter()
        if self.cfg_mode == "none":
            # a guidance-free (distilled) bundle: the prompt only, one batch-1 UNet call per step, no guidance
            # (what diffusers' pipeline does at guidance_scale <= 1)
            from mobilesd.tokenizer import tokenize

            ids = tokenize(self.tokenizer, [prompt]).astype(np.int32)
            uncond, cond = None, _timed(on_stage, "text_encoder", self.stages.encode, ids)
            cfg = False
        else:
            uncond, cond = _timed(on_stage, "text_encoder", self.encode_prompt, prompt, negative_prompt)
            cfg = guidance > 1.0
        generator = torch.Generator("cpu").manual_seed(int(seed))
        x = latents.astype(np.float32) if latents is not None else self.initial_latent(generator, sched)
        timesteps = sched.timesteps
        iterator = timesteps
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(timesteps, desc=f"denoising ({self.stages.runtime})", unit="step")
        for t in iterator:
            t0 = time.perf_counter()
            x_t = torch.from_numpy(x)
            t_val = np.asarray([float(t)], np.float32)
            if cfg:
                model_in = sched.scale_model_input(torch.cat([x_t, x_t]), t).numpy()
                if self.stages.unet_batch == 2:
                    pred = self.stages.unet(model_in, t_val, np.concatenate([uncond, cond]), on_stage)
                    pred_u, pred_c = pred[:1], pred[1:]
                else:
                    pred_u = self.stages.unet(model_in[:1], t_val, uncond, on_stage)
                    pred_c = self.stages.unet(model_in[1:], t_val, cond, on_stage)
                pred = pred_u + guidance * (pred_c - pred_u)
            else:
                model_in = sched.scale_model_input(x_t, t).numpy()
                if self.stages.unet_batch == 2:  # a batch-2 graph: run the conditional half twice
                    pred = self.stages.unet(np.concatenate([model_in, model_in]), t_val,
                                            np.concatenate([cond, cond]), on_stage)[:1]
                else:
                    pred = self.stages.unet(model_in, t_val, cond, on_stage)
            x = sched.step(torch.from_numpy(np.ascontiguousarray(pred)), t, x_t,
                           **_step_kwargs(sched, generator)).prev_sample.numpy()
            if on_stage:
                on_stage("unet_step", time.perf_counter() - t0)
        image = _timed(on_stage, "vae_decoder", self.stages.decode, x.astype(np.float32))[0]
        if on_stage:
            on_stage("end_to_end", time.perf_counter() - t_start)
        if output == "float":
            return image
        # what diffusers' image processor does: *255, round, uint8
        return (image * 255).round().astype(np.uint8)


def _torch_stages(bundle, model: str | None, quantized: str | None) -> TorchStages:
    """The bundle's source model in PyTorch, as the export loaded it: prediction type and native size from the
    manifest (what a single-file source did not state), and for a quantized model's bundle the same
    quantized-model plumbing as the export (``mobilesd.export.quantized.apply_quantized``): its integer weights,
    and with --simulate-activations its per-step activation quantization, step-indexed per chunk."""
    from mobilesd.loading import load_pipeline

    m = bundle.manifest
    src = model or m["source"]["model"]
    if src.startswith("<"):
        raise MobileSDError("this bundle was exported from an in-memory pipeline: --runtime torch has no "
                            "source model to load", "pass --model DIR (the model the bundle came from)")
    image_size = None
    sample, factor = m["source"].get("unet_config", {}).get("sample_size"), m["latent"].get("vae_scale_factor")
    if Path(src).suffix == ".safetensors" and sample is not None and factor:
        image_size = tuple(s * factor for s in sample) if isinstance(sample, list) else sample * factor
    pipe = load_pipeline(src, prediction_type=m["source"]["prediction_type"], image_size=image_size)
    if m["source"].get("loras"):   # fused as the export fused them (files checked against their SHA-256)
        from mobilesd.lora import fuse_loras, recorded_loras

        fuse_loras(pipe, recorded_loras(m["source"]["loras"]))
    decoder_vae = None
    tiny = m["source"].get("vae_decoder")
    if tiny and tiny.get("kind") == "tiny":
        from mobilesd.components import load_tiny_vae

        if not Path(tiny["model"]).is_dir():
            raise MobileSDError(f"bundle {bundle.root} was exported with the tiny decoder {tiny['model']}, which is "
                                "not here: --runtime torch would decode with the full VAE",
                                "restore that folder, or run the bundle's own graphs (no --runtime torch)")
        decoder_vae = load_tiny_vae(tiny["model"], pipe)
    chunks = [tuple(g["meta"]["stage_range"]) for g in bundle.unet_graphs()]
    cfg_mode = m["cfg"].get("mode")
    q = m.get("quantization")
    if not q:
        return TorchStages(pipe, chunks, m["cfg"]["unet_batch"], cfg_mode=cfg_mode, decoder_vae=decoder_vae)
    import logging

    from mobilesd.export.options import ExportOptions
    from mobilesd.export.quantized import apply_quantized

    qdir = Path(quantized or q["source"])
    cfg_file = qdir / "quant_config.json"
    if not cfg_file.is_file():
        raise MobileSDError(f"bundle {bundle.root} was exported from the quantized model {qdir} (manifest "
                            "quantization.source), which is not here: --runtime torch would run the float model",
                            "pass --quantized Q (the quantized-model folder the bundle was exported from)")
    cfg = json.loads(cfg_file.read_text())
    differ = [k for k in ("method", "weight_bits", "act_bits", "timesteps")
              if (cfg.get(k) or None) != (q.get(k) or None)]
    if differ:
        raise MobileSDError(f"the quantized model {qdir} is not the one bundle {bundle.root} was exported from "
                            f"({', '.join(f'{k}: {cfg.get(k)!r} here, {q.get(k)!r} in the manifest' for k in differ)})",
                            "pass --quantized Q with the quantized-model folder the bundle was exported from")
    opts = ExportOptions(target=m["target"], quantized=str(qdir), simulate_activations=bool(q.get("simulate_activations")),
                         activation_quantization=q.get("activation_quantization"))
    state = apply_quantized(pipe, opts)
    logging.getLogger(__name__).info(
        "torch runtime: %s with the integer weights of %s%s", src, qdir,
        ", activations quantized per step (as the bundle's step_index graphs)" if state.step_context is not None
        else ", activations in float (the export's reference for this bundle)")
    return TorchStages(pipe, chunks, m["cfg"]["unet_batch"], state.step_context, cfg_mode, decoder_vae)


def diffusers_reference(pipe, prompt: str, negative_prompt: str = "", steps: int = 20, guidance: float = 7.5,
                        seed: int = 0, scheduler: str = "dpm", timestep_spacing: str | None = None) -> np.ndarray:
    """diffusers' own StableDiffusionPipeline output (uint8 HxWx3) for the same settings."""
    original = pipe.scheduler
    pipe.scheduler = make_scheduler(scheduler, original.config, timestep_spacing)
    try:
        out = pipe(prompt, negative_prompt=negative_prompt or None, num_inference_steps=steps,
                   guidance_scale=guidance, generator=torch.Generator("cpu").manual_seed(seed), output_type="np")
    finally:
        pipe.scheduler = original
    return (out.images[0] * 255).round().astype(np.uint8)


def save_png(image: np.ndarray, path: str | Path) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    Image.fromarray(image).save(tmp, format="PNG")
    tmp.replace(path)
    return path
