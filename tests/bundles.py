"""Bundles of the bundled digits model shared by the client tests: each configuration is exported once per
test session (exports are the slow part of the app tests), into pytest's temporary folder."""

from __future__ import annotations

import functools
from pathlib import Path


@functools.cache
def _digits_bundle(target: str, root: str, options: tuple) -> Path:
    from mobilesd.export import ExportOptions, export
    from mobilesd.loading import default_model_path

    opts = dict(options)
    name = "-".join([target] + [f"{k}{v}" for k, v in options]) or target
    out = Path(root) / "digits-bundles" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    return export(default_model_path(), out, ExportOptions(target=target, progress=False, **opts)).root


def digits_bundle(tmp_path_factory, target: str, **options) -> Path:
    """The digits model exported with ``--target target`` and ``options`` (ExportOptions fields), once."""
    return _digits_bundle(target, str(tmp_path_factory.getbasetemp()), tuple(sorted(options.items())))


def batch1_chunks3_bundle(tmp_path_factory) -> Path:
    """The digits model with --unet-batch 1 (two UNet calls per step) in 3 UNet chunks, TFLite (android target:
    the browser page runs android bundles too): the Android and web clients' chaining and batch-1 tests share it.
    Its GPU checks are left to the default bundles."""
    return digits_bundle(tmp_path_factory, "android", unet_batch=1, unet_chunks=3, skip_gpu_check=True, verify_steps=1)


@functools.cache
def _quantized_w8a8(root: str) -> Path:
    from mobilesd.quant import quantize

    out = Path(root) / "quantized" / "w8a8-ptq-per-step"
    out.parent.mkdir(parents=True, exist_ok=True)
    quantize(None, out, method="ptq", weight_bits=8, act_bits=8, act_intervals="per-step", calib_prompts=4,
             steps=4, batch_size=4, progress=False)
    return out


def quantized_w8a8(tmp_path_factory) -> Path:
    """The digits model quantized W8A8 (PTQ, per-step activation tables, 4 calibration prompts x 4 steps), once
    per session; tests read it and never change it."""
    return _quantized_w8a8(str(tmp_path_factory.getbasetemp()))


def quantized_android_bundle(tmp_path_factory, simulate: bool) -> Path:
    """``quantized_w8a8`` exported with --target android (its integers in the graphs, GPU check included), with
    or without --simulate-activations, once per session."""
    return digits_bundle(tmp_path_factory, "android", quantized=str(quantized_w8a8(tmp_path_factory)),
                         simulate_activations=simulate, verify_steps=2)


def fast_path_bundle(tmp_path_factory):
    """The fast path of the digits model as an android bundle, once per session: the LCM LoRA made here fused,
    --cfg none, the LCM scheduler as default and the tiny decoder made here (assets/tiny-digits-*). The tiny
    decoder's tests use it too (its decoder graph and checks are the same with or without the LoRA)."""
    from mobilesd.bundle import load_bundle
    from mobilesd.lora import LoraSpec
    from mobilesd.tiny.finetune import asset_path

    lcm = asset_path("tiny-digits-lcm-lora") / "lcm-peft.safetensors"
    taesd = asset_path("tiny-digits-taesd")
    return load_bundle(digits_bundle(tmp_path_factory, "android", loras=(LoraSpec(str(lcm)),), cfg="none",
                                     vae_decoder=f"tiny={taesd}", default_scheduler="lcm"))
