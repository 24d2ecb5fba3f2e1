"""Bundles of the bundled digits model shared by the client tests: each configuration is exported once per
test run (exports are the slow part of the app tests), shared by pytest-xdist's workers (tests/shared.py)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from shared import build_once


def readme_android_bundle(tmp_path_factory) -> tuple[Path, str]:
    """The README's main command, `mobilesd export --target android`, run once in a folder of its own: the
    bundle it wrote (./bundles/android) and what it printed. It is also the default android digits bundle."""
    def build(cwd: Path) -> None:
        from mobilesd.cli import main

        cwd.mkdir(parents=True)
        out = io.StringIO()
        with contextlib.chdir(cwd), contextlib.redirect_stdout(out):
            rc = main(["export", "--target", "android", "--quiet"])
        assert rc == 0, f"`mobilesd export --target android` exited {rc}:\n{out.getvalue()}"
        (cwd / "stdout.txt").write_text(out.getvalue())

    cwd = build_once(tmp_path_factory, "readme-export", build)
    return cwd / "bundles" / "android", (cwd / "stdout.txt").read_text()


def digits_bundle(tmp_path_factory, target: str, **options) -> Path:
    """The digits model exported with ``--target target`` and ``options`` (ExportOptions fields), once per run."""
    if target == "android" and not options:
        return readme_android_bundle(tmp_path_factory)[0]
    key = tuple(sorted(options.items()))
    name = "-".join([target] + [f"{k}{v}" for k, v in key]) or target

    def build(out: Path) -> None:
        from mobilesd.export import ExportOptions, export
        from mobilesd.loading import default_model_path

        export(default_model_path(), out, ExportOptions(target=target, progress=False, **options))

    return build_once(tmp_path_factory, f"digits-{name}", build)


def batch1_chunks3_bundle(tmp_path_factory) -> Path:
    """The digits model with --unet-batch 1 (two UNet calls per step) in 3 UNet chunks, TFLite (android target:
    the browser page runs android bundles too): the Android and web clients' chaining and batch-1 tests share it.
    Its GPU checks are left to the default bundles."""
    return digits_bundle(tmp_path_factory, "android", unet_batch=1, unet_chunks=3, skip_gpu_check=True, verify_steps=1)


def quantized_w8a8(tmp_path_factory) -> Path:
    """The digits model quantized W8A8 (PTQ, per-step activation tables, 4 calibration prompts x 4 steps), once
    per run; tests read it and never change it."""
    def build(out: Path) -> None:
        from mobilesd.quant import quantize

        quantize(None, out, method="ptq", weight_bits=8, act_bits=8, act_intervals="per-step", calib_prompts=4,
                 steps=4, batch_size=4, progress=False)

    return build_once(tmp_path_factory, "quantized-w8a8-ptq-per-step", build)


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
