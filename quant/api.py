"""``quantize()``: full-precision pipeline -> quantized-model folder, by one of three methods.

- ``ptq``: weights by per-channel MSE search, activations by calibration only (no training); intervals
  static by default (one per layer), or per step.
- ``tdq``: PTQ weights; activation intervals trained with LSQ gradients against the full-precision model
  (data-free distillation). Intervals ``tdq`` (timestep-generated, So et al. 2023; the default) or
  ``static`` / ``per-step`` (the same training with one interval per layer / per step: the baselines).
Learning rates are relative where Adam's step would otherwise ignore scale: a layer's LoRA rate is
``lora_lr`` x its mean weight step size (EfficientDM's scale-aware LoRA optimisation) and an activation
step size's rate is ``act_lr`` x its initial value; TDQ generators use ``tdq_lr`` directly.

- ``efficientdm``: QALoRA (LoRA merged before weight fake-quant) with scale-aware learning rates, plus
  per-step activation step sizes (TALSQ) or TDQ intervals, distilled from the teacher. Options:
  ``learn_weight_scales`` (L4Q, Jeon et al. 2024: the weight step sizes trained by LSQ jointly with the LoRA,
  rate ``weight_scale_lr`` x each scale) and ``lora_blocks`` k (GraLoRA, Jung et al. 2025: k x k granular
  LoRA blocks of rank r / k, same parameter count, merged before quantization).
- ``svdquant`` (Li et al. 2024; quant/svdquant.py): smoothing from per-channel calibration maxima (when
  activations are quantized), a rank-``svd_rank`` 16-bit branch from the SVD of the smoothed weight, the
  residual quantized; static intervals on the smoothed inputs. ``distill``: EfficientDM's distillation on
  top (QALoRA on the residual, per-step intervals; L4Q / GraLoRA options apply too).
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import torch

from mobilesd.errors import MobileSDError
from mobilesd.quant import policy
from mobilesd.quant.calibrate import default_prompts, record_inputs, step_size_tables
from mobilesd.quant.distill import DistillConfig
from mobilesd.quant.distill import distill as run_distillation
from mobilesd.quant.model import (COMPONENTS, QuantizedModel, attach_act_quantizers, install_step_hook,
                                  replace_layers)
from mobilesd.quant.quantizers import StepContext
from mobilesd.quant.tdq import TDQGenerator

logger = logging.getLogger(__name__)

METHODS = ("ptq", "tdq", "efficientdm", "svdquant")
INTERVALS = ("static", "per-step", "tdq")
DEFAULT_INTERVALS = {"ptq": "static", "tdq": "tdq", "efficientdm": "per-step", "svdquant": "static"}


def trains_lora(method: str, distill: bool) -> bool:
    return method == "efficientdm" or (method == "svdquant" and distill)


def _check(method, weight_bits, act_bits, intervals, group_size, components, svd_rank=32, distill=False,
           learn_weight_scales=False, lora_blocks=1, lora_rank=32):
    if method not in METHODS:
        raise MobileSDError(f"unknown method {method!r}", f"use one of {list(METHODS)}")
    if distill and method != "svdquant":
        raise MobileSDError(f"--distill is an option of --method svdquant (got --method {method})",
                            "for distillation of plain weights use --method efficientdm")
    if svd_rank < 1:
        raise MobileSDError(f"--rank {svd_rank} must be at least 1", "e.g. --method svdquant --rank 8")
    if (learn_weight_scales or lora_blocks != 1) and not trains_lora(method, distill):
        raise MobileSDError("--learn-weight-scales and --lora-blocks train with the LoRA: they need --method "
                            "efficientdm (or svdquant --distill)", "add --method efficientdm")
    if lora_blocks < 1 or lora_rank % lora_blocks:
        raise MobileSDError(f"--lora-blocks {lora_blocks} must be at least 1 and divide --lora-rank {lora_rank}",
                            "e.g. --lora-rank 32 --lora-blocks 2 (each block then has rank 16)")
    if weight_bits not in (4, 8):
        raise MobileSDError(f"--weights {weight_bits} is not supported", "use --weights 8 or 4")
    if act_bits not in (8, 16, 6, 4):
        raise MobileSDError(f"--acts {act_bits} is not supported", "use --acts 8 or 16 (4 and 6 for studies)")
    if intervals not in INTERVALS:
        raise MobileSDError(f"unknown --act-intervals {intervals!r}", f"use one of {list(INTERVALS)}")
    if group_size is not None and (group_size < 8 or group_size & (group_size - 1)):
        raise MobileSDError(f"--group-size {group_size} is not a power of two >= 8", "e.g. --group-size 32")
    if method == "tdq" and act_bits == 16:
        raise MobileSDError("--method tdq trains activation intervals: at --acts 16 there are none",
                            "quantize activations (--acts 8 or 4), or use --method ptq / efficientdm for weights only")
    bad = [c for c in components if c not in COMPONENTS]
    if bad or "unet" not in components:
        raise MobileSDError(f"--components {components} must include unet and only {list(COMPONENTS)}",
                            "e.g. --components unet,text_encoder,vae")


def quantize(model=None, out: str | Path | None = None, *, method: str = "ptq", weight_bits: int = 8,
             act_bits: int = 8, act_intervals: str | None = None, symmetric: bool = True,
             group_size: int | None = None, components=("unet",), rules: list[dict] | None = None,
             prompts: list[str] | None = None, calib_prompts: int = 32, steps: int = 20,
             guidance: float | None = None, scheduler: str = "dpm", iterations: int = 40, batch_size: int = 8,
             lora_rank: int = 32, lora_lr: float = 0.002, act_lr: float = 0.01, tdq_lr: float = 1e-3,
             learn_weight_scales: bool = False, weight_scale_lr: float = 0.005, lora_blocks: int = 1,
             svd_rank: int = 32, smooth_alpha: float = 0.5, distill: bool = False,
             device: str = "cpu", mixed_precision: str = "no", seed: int = 0, resume: bool = False,
             stop_after: int | None = None,
             overwrite: bool = False, progress: bool = True, pipe=None, loras=(),
             allow_pickle: bool = False) -> QuantizedModel | None:
    """Returns None when ``stop_after`` ended the run early (its checkpoint is kept for ``resume``).
    ``loras``: LoraSpec / "FILE[:SCALE]" fused into the model before calibration and quantization (recorded in
    the config: the export fuses them again into the float base before putting the integers in)."""
    from mobilesd.loading import default_model_path, load_pipeline
    from mobilesd.lora import fuse_loras, inspect_loras

    intervals = act_intervals or ("per-step" if method == "svdquant" and distill else
                                  DEFAULT_INTERVALS.get(method, "static"))
    components = tuple(components)
    _check(method, weight_bits, act_bits, intervals, group_size, components, svd_rank, distill,
           learn_weight_scales, lora_blocks, lora_rank)
    quant_acts = act_bits != 16
    if out is not None:
        from mobilesd.bundle import check_output_dir

        check_output_dir(Path(out), overwrite)
    source = str(model) if model is not None else (None if pipe is not None else str(default_model_path()))
    lora_files = inspect_loras(loras, allow_pickle)   # a bad LoRA file fails before the model loads
    if pipe is None:
        pipe = load_pipeline(source)
    if lora_files:
        fuse_loras(pipe, lora_files, allow_pickle)
    pipe.set_progress_bar_config(disable=True)
    tiny = source is not None and (Path(source) / "classifier").is_dir()
    compositional = source is not None and (Path(source) / "attribute_classifier").is_dir()
    if guidance is None:
        if compositional:  # the compositional model: the guidance it is evaluated at
            from mobilesd.tiny.compositional_metrics import EvalSettings

            guidance = EvalSettings().guidance
        else:
            guidance = 3.0 if tiny else 7.5  # the tiny digits model samples best at 3.0 (docs/tiny-model.md)
    prompts = prompts or default_prompts(source)
    t0 = time.perf_counter()
    torch.manual_seed(seed)

    # plan: which layers, how many bits
    plans = {}
    for comp in components:
        module = pipe.unet if comp == "unet" else (pipe.text_encoder if comp == "text_encoder" else pipe.vae)
        plan = policy.resolve(module, weight_bits, act_bits if quant_acts else None,
                              rules if comp == "unet" else policy.AUX_RULES, quantize_acts=comp == "unet")
        if comp == "vae":  # the decoder only: the encoder is not exported
            plan = {k: v for k, v in plan.items() if k.startswith(("decoder.", "post_quant_conv"))}
        plans[comp] = plan

    # calibration on the full-precision teacher
    unet_plan = plans["unet"]
    act_bits_by_layer = {n: s["acts"] for n, s in unet_plan.items() if s["acts"]}
    tables, timesteps, recorder = {"per_step": {}, "static": {}}, [], None
    if act_bits_by_layer:
        calib = prompts[:calib_prompts] if len(prompts) > calib_prompts else prompts
        if len(calib) < calib_prompts:  # cycle short prompt lists
            calib = [calib[i % len(calib)] for i in range(calib_prompts)]
        teacher_layers = {n: pipe.unet.get_submodule(n) for n in act_bits_by_layer}
        pipe.to(device)  # the teacher samples on the training device (real SD: the GPU)
        recorder, timesteps = record_inputs(pipe, teacher_layers, calib, steps, guidance, scheduler,
                                            batch_size=batch_size, seed=seed, progress=progress, device=device,
                                            per_channel=method == "svdquant")
        pipe.to("cpu")
    calib_s = time.perf_counter() - t0

    # student: a copy of the UNet with quantized layers (the teacher stays full precision)
    teacher = pipe.unet
    student = copy.deepcopy(teacher)
    context = StepContext(timesteps)
    layers = {"unet": replace_layers(student, unet_plan, symmetric, group_size)}
    svd_info, smooth = None, {}
    if method == "svdquant":
        from mobilesd.quant.svdquant import decompose

        act_max = {n: recorder.channel_max(n) for n in act_bits_by_layer} if recorder is not None else None
        # the branch goes on the layers at the requested width; the policy's fixed-width first / last layers
        # (conv_in / conv_out at 8 bits) stay plain, as in the paper, which keeps them out of the 4-bit scheme
        eligible = {n: q for n, q in layers["unet"].items() if not policy.fixed_width(n, rules)}
        svd_info = decompose(eligible, svd_rank, act_max, smooth_alpha)
        smooth = {n: q.smooth for n, q in layers["unet"].items() if q.smooth is not None}
    if recorder is not None:
        tables = step_size_tables(recorder, act_bits_by_layer, steps, smooth)
        del recorder
    init = tables["static"] if intervals == "static" else tables["per_step"]
    attach_act_quantizers(layers["unet"], unet_plan, context, init)
    generators = {}
    if intervals == "tdq":
        for name, q in layers["unet"].items():
            if q.act_quant is not None:
                gen = TDQGenerator()
                gen.fit(timesteps, tables["per_step"][name])
                q.act_quant.generator = gen
                generators[name] = gen
    for comp in components[1:]:
        module = pipe.text_encoder if comp == "text_encoder" else pipe.vae
        layers[comp] = replace_layers(module, plans[comp], symmetric, group_size)
    student.requires_grad_(False)

    # training
    train_stats = None
    lora_fallback = []
    if method == "tdq" or trains_lora(method, distill):
        groups, named = [], {}
        if trains_lora(method, distill):
            g = torch.Generator("cpu").manual_seed(seed)
            scales = {}
            for name, q in layers["unet"].items():
                if q.weight_quant is not None:
                    if q.add_lora(lora_rank, g, lora_blocks) != lora_blocks:
                        lora_fallback.append(name)
                    scales[name] = float(q.weight_quant.scale.mean())
            for name, s in scales.items():  # scale-aware: a layer's LoRA lr is lora_lr x its weight step size
                q = layers["unet"][name]
                groups.append({"params": [q.lora_down, q.lora_up], "lr": lora_lr * s})
                named[f"{name}.lora_down"], named[f"{name}.lora_up"] = q.lora_down, q.lora_up
                if learn_weight_scales:  # L4Q: the step sizes learn with the LoRA (relative rate, like act_lr)
                    p = q.weight_quant.make_scales_learnable()
                    groups.append({"params": [p], "lr": weight_scale_lr * float(p.detach().abs().mean())})
                    named[f"{name}.weight_scale"] = p
        for name, q in layers["unet"].items():
            if q.act_quant is None:
                continue
            if q.act_quant.generator is not None:
                params = list(q.act_quant.generator.parameters())
                groups.append({"params": params, "lr": tdq_lr})
                named.update({f"{name}.tdq.{k}": p for k, p in q.act_quant.generator.named_parameters()})
            else:
                # relative, like the LoRA rate: Adam moves every step size by about act_lr of itself
                groups.append({"params": [q.act_quant.step], "lr": act_lr * float(q.act_quant.step.abs().mean())})
                named[f"{name}.act_step"] = q.act_quant.step
        for grp in groups:
            for p in grp["params"]:
                p.requires_grad_(True)
        if not groups:
            raise MobileSDError(f"--method {method} has nothing to train at W{weight_bits}A{act_bits} with "
                                f"--act-intervals {intervals}", "use --method ptq, or quantize activations (--acts 8)")
        hook = install_step_hook(student, context)
        ckpt = Path(str(out) + ".checkpoint") if out is not None else None
        if ckpt is not None:
            ckpt.mkdir(parents=True, exist_ok=True)
        cfg = DistillConfig(iterations=iterations, batch_size=batch_size, steps=steps, guidance=guidance,
                            scheduler=scheduler, seed=seed, device=device, mixed_precision=mixed_precision,
                            stop_after=stop_after)
        train_stats = run_distillation(pipe, student, teacher, groups, named, prompts, cfg,
                              ckpt / "state.pt" if ckpt else None, resume, progress)
        hook.remove()
        if train_stats["stopped"]:
            logger.info("stopped after %d iterations; checkpoint in %s; run the same command with --resume "
                        "to continue", stop_after, ckpt)
            return None
        student.requires_grad_(False)
        student.to("cpu")
        pipe.to("cpu")

    # freeze: TDQ tables, LoRA merged into the integers
    for name, q in layers["unet"].items():
        if q.act_quant is not None:
            q.act_quant.freeze_table(timesteps)
        if q.weight_quant is not None:
            q.weight_quant.freeze_scales()  # L4Q: the learned step sizes are the layer's scales from here on
        if q.lora_down is not None:
            q.lora_saved = (q.lora_down.detach().clone(), q.lora_up.detach().clone())
        q.merge()
        q.lora_down = q.lora_up = None
    for comp in components[1:]:
        for q in layers[comp].values():
            q.merge()

    pipe.unet = student
    config = {
        "method": method, "weight_bits": weight_bits, "act_bits": act_bits, "act_intervals": intervals,
        "weight_symmetric": symmetric, "group_size": group_size, "act_symmetric": True,
        "components": list(components), "rules": rules if rules is not None else policy.DEFAULT_RULES,
        "plan": plans, "timesteps": timesteps, "calibration": {
            "prompts": min(len(prompts), calib_prompts) if act_bits_by_layer else 0, "steps": steps,
            "scheduler": scheduler, "guidance": guidance, "seed": seed},
        "lora_rank": lora_rank if trains_lora(method, distill) else None,
        "lora_blocks": lora_blocks if trains_lora(method, distill) else None,
        "lora_blocks_fallback": lora_fallback,
        "learn_weight_scales": bool(learn_weight_scales),
        "distill": bool(distill),
        "svdquant": None if svd_info is None else {
            "rank": svd_rank, "smooth_alpha": smooth_alpha if act_bits_by_layer else None,
            "layers": svd_info,
            "branch_parameters": sum(int(q.lowrank_down.numel() + q.lowrank_up.numel())
                                     for q in layers["unet"].values() if q.lowrank_down is not None)},
        "base_model": str(Path(source).resolve()) if source and Path(source).exists() else source,
        "loras": [lora.manifest_entry() for lora in lora_files],
        "seconds": {"calibration": round(calib_s, 1), "total": round(time.perf_counter() - t0, 1)},
        "training": None if train_stats is None else {
            "iterations": train_stats["iterations"], "resumed_from": train_stats["resumed_from"],
            "final_loss": train_stats["loss_history"][-1] if train_stats["loss_history"] else None,
            "first_loss": train_stats["loss_history"][0] if train_stats["loss_history"] else None,
            "batch_size": batch_size, "lora_lr": lora_lr, "act_lr": act_lr, "tdq_lr": tdq_lr,
            "weight_scale_lr": weight_scale_lr if learn_weight_scales else None,
            "device": device, "mixed_precision": mixed_precision},
    }
    qm = QuantizedModel(pipe, config, layers, context)
    if out is not None:
        extra = {}
        if generators:
            extra["tdq.safetensors"] = {f"unet.{n}.{k}": v.detach().contiguous()
                                        for n, gen in generators.items() for k, v in gen.state_dict().items()}
        qm.save_pretrained(out, overwrite=overwrite, extra_files=extra)
        if train_stats is not None:
            import shutil

            shutil.rmtree(Path(str(out) + ".checkpoint"), ignore_errors=True)
    return qm
