"""The bundle manifest, built in one place: the base from the model's facts, the graphs as converted and
verified, the end-to-end check, then the file table, id and schema validation (mobilesd.bundle)."""

from __future__ import annotations

import datetime
import platform

import torch

import mobilesd
from mobilesd import verify
from mobilesd.bundle import FORMAT, FORMAT_VERSION
from mobilesd.export.options import ExportPlan
from mobilesd.tokenizer import BOS_ID, EOS_ID


def base_manifest(plan: ExportPlan, source: str, facts: dict, chunks: list) -> dict:
    opts = plan.opts
    c, h, w = facts["latent"]
    factor = facts["vae_scale_factor"]
    tok = facts["tokenizer"]
    chunk_names = ["unet"] if len(chunks) == 1 else [f"unet_chunk{k}" for k in range(len(chunks))]
    source_section = {"model": source, "prediction_type": facts["prediction_type"],
                      "unet_config": facts["unet_config"], "text_hidden_size": facts["text_hidden_size"]}
    if plan.loras:
        source_section["loras"] = [lora.manifest_entry() for lora in plan.loras]
    if plan.tiny_decoder is not None:
        source_section["vae_decoder"] = {"kind": "tiny", "class": "AutoencoderTiny", "model": plan.tiny_decoder["path"],
                                         "sha256": plan.tiny_decoder["sha256"]}
    mode = plan.cfg_mode
    cfg = {"mode": mode, "unet_batch": plan.unet_batch,
           "batch_order": ["unconditional", "conditional"] if mode == "batch" else ["conditional"] if mode == "none"
           else ["unconditional", "conditional"],
           "default_guidance": 1.0 if mode == "none" else 7.5, "negative_prompt_default": "",
           "formula": "uncond + guidance * (cond - uncond)" if mode != "none"
           else "noise_pred = unet(prompt) (no guidance: the negative prompt and guidance are ignored)"}
    scheduler = {"config": "scheduler/scheduler_config.json", "default": opts.default_scheduler,
                 "supported": list(plan.schedulers), "train_timesteps": facts["train_timesteps"]}
    if opts.timestep_spacing:
        scheduler["timestep_spacing"] = opts.timestep_spacing
    if facts.get("scheduler_nonfinite_defaults"):
        scheduler["nonfinite_defaults_omitted"] = facts["scheduler_nonfinite_defaults"]

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mobilesd_version": mobilesd.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "target": opts.target,
        "precision": plan.precision,
        "source": source_section,
        "image": {"height": h * factor, "width": w * factor, "channels": 3, "layout": "NHWC",
                  "range": [0.0, 1.0], "to_uint8": "round(x * 255)"},
        "latent": {"channels": c, "height": h, "width": w, "scaling_factor": facts["scaling_factor"],
                   "vae_scale_factor": factor,
                   "note": "the decoder graph applies 1/scaling_factor itself" if plan.tiny_decoder is None else
                   "the tiny decoder graph reads the sampler's latent as it is (TAESD: its own scaling_factor 1.0)"},
        "tokenizer": {"type": "clip_bpe", "dir": "tokenizer", "vocab": "tokenizer/vocab.json",
                      "merges": "tokenizer/merges.txt", "max_length": tok["max_length"],
                      "bos_id": int(tok["bos_id"] if tok["bos_id"] is not None else BOS_ID),
                      "eos_id": int(tok["eos_id"] if tok["eos_id"] is not None else EOS_ID),
                      "pad_id": int(tok["pad_id"] if tok["pad_id"] is not None else EOS_ID),
                      "lowercase": True, "padding": "max_length"},
        "scheduler": scheduler,
        "cfg": cfg,
        "unet": {"chunks": chunk_names, "stage_ranges": [list(r) for r in chunks],
                 "timestep": {"shape": [1], "dtype": "float32", "note": "raw scheduler timestep"}},
        "graphs": [],
        "quantization": None,
        "verification": {
            "graph_thresholds": verify.GRAPH_THRESHOLDS, "graph_floors": verify.GRAPH_FLOORS,
            "simulation_margin": verify.SIM_MARGIN, "image_thresholds": verify.IMAGE_THRESHOLDS,
            "gpu_thresholds": verify.GPU_THRESHOLDS,
            "host": {"python": platform.python_version(), "machine": platform.machine(), "torch": torch.__version__},
        },
    }


def add_results(manifest: dict, graphs: list[dict], e2e: dict, seconds: float, isolated: bool,
                peaks: dict | None, step_seconds: dict | None = None) -> dict:
    manifest["graphs"] = graphs
    manifest["verification"]["end_to_end"] = e2e
    manifest["verification"]["passed"] = bool(e2e["passed"] and all(g["verification"]["passed"] for g in graphs))
    manifest["export_seconds"] = round(seconds, 1)
    manifest["export_isolated"] = isolated
    if peaks is not None:
        manifest["export_peak_rss_bytes"] = peaks
    if step_seconds is not None:
        manifest["export_step_seconds"] = step_seconds
    return manifest
