"""What the three small assets trained on top of the digits model share: the run folder with checkpoints and
``--resume`` (``mobilesd.tiny.train``'s, so every training here behaves like ``mobilesd train-tiny``), the
training data in latent space, LoRA adapters through peft and their files in diffusers / kohya / peft format.

The assets: a style LoRA (``style_lora``), a few-step consistency-distilled LoRA (``lcm_lora``) and a tiny
decoder (``tiny_decoder``). Each is deterministic for a seed and thread count, like the base model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
from pathlib import Path

import numpy as np
import torch

from mobilesd.errors import MobileSDError
# the run-folder bookkeeping, LR schedule and CPU name of the base model's trainer, shared on purpose so that
# every asset trains, checkpoints and resumes the same way
from mobilesd.tiny.train import _Clock, _cpu_name, _lr, _Run, _set_lr, encode_posterior, prompt_table

__all__ = ["Clock", "Run", "lr_at", "set_lr", "LatentData", "machine", "finish_run", "add_lora",
           "lora_parameters", "peft_lora_state_dict", "save_lora_formats", "asset_path"]

Clock, Run, lr_at, set_lr = _Clock, _Run, _lr, _set_lr


def asset_path(name: str) -> Path:
    """assets/<name> wherever mobilesd is installed (package data ``mobilesd.assets``, as the default model)."""
    from mobilesd.tiny.model import DEFAULT_MODEL

    return DEFAULT_MODEL.parent / name


def machine(threads: int) -> dict:
    return dict(python=platform.python_version(), torch=torch.__version__, threads=threads,
                processor=_cpu_name(), cores=os.cpu_count())


class LatentData:
    """The train-split digits in the UNet's latent space (posterior mean and std, x scaling_factor at draw time)
    and the training prompt table encoded once by the frozen text encoder. ``transform`` maps the images
    ((N, 3, 32, 32) in [-1, 1]) before encoding: the style LoRA trains on bold digits."""

    def __init__(self, pipe, transform=None):
        from mobilesd.tiny import data
        from mobilesd.tokenizer import tokenize

        x, y = data.load_split("train")
        if transform is not None:
            x = transform(x)
        self.mean, self.std = encode_posterior(pipe.vae, x)
        self.sf = float(pipe.vae.config.scaling_factor)
        prompts, digit = prompt_table()
        ids = torch.from_numpy(tokenize(pipe.tokenizer, prompts)).long()
        with torch.no_grad():
            self.hidden = pipe.text_encoder(ids).last_hidden_state
        self.empty_row = len(prompts) - 1
        self.rows_of = torch.from_numpy(np.stack([np.flatnonzero(digit == d) for d in range(10)]))
        self.labels = torch.from_numpy(y)

    def batch(self, n: int, gen: torch.Generator, cond_drop: float = 0.0):
        """(z0 latents x scaling_factor, text states of a random training phrasing of each digit, empty-prompt states)."""
        idx = torch.randint(len(self.labels), (n,), generator=gen)
        z0 = (self.mean[idx] + self.std[idx] * torch.randn(self.mean[idx].shape, generator=gen)) * self.sf
        row = self.rows_of[self.labels[idx], torch.randint(self.rows_of.shape[1], (n,), generator=gen)]
        if cond_drop > 0:
            drop = torch.rand(n, generator=gen) < cond_drop
            row = torch.where(drop, torch.full_like(row, self.empty_row), row)
        return z0, self.hidden[row], self.hidden[self.empty_row].expand(n, -1, -1)


# ---- LoRA adapters ------------------------------------------------------------------------------------------

ATTENTION_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
# what LCM-LoRA adapts in SD's UNet: every linear and conv layer of the blocks
ALL_TARGETS = ATTENTION_TARGETS + ["proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1", "conv2",
                                   "conv_shortcut", "time_emb_proj", "downsamplers.0.conv", "upsamplers.0.conv"]


def add_lora(unet, rank: int, targets: list[str], seed: int) -> None:
    """A peft LoRA adapter on ``unet`` (alpha = rank: scaling 1, so every file format fuses to the same weights).
    ``lora_B`` starts at zero (peft's default), so the adapted model starts as the base model."""
    from peft import LoraConfig

    torch.manual_seed(seed)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=True, target_modules=targets))


def lora_parameters(unet) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in unet.named_parameters() if "lora_" in n}


def peft_lora_state_dict(unet) -> dict[str, torch.Tensor]:
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().float().contiguous().clone() for k, v in get_peft_model_state_dict(unet).items()}


def save_lora_formats(unet, out: Path, stem: str, formats: tuple[str, ...]) -> dict[str, str]:
    """Write the adapter of ``unet`` as ``<stem>-<format>.safetensors`` for each of diffusers (``lora.down`` /
    ``lora.up`` keys: only attention layers have them), kohya (``lora_unet_*`` + alpha) and peft (``unet.*.lora_A``
    keys, as diffusers' save_lora_weights writes a peft state dict). Returns {format: file name}."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_kohya
    from safetensors.torch import save_file

    peft_sd = peft_lora_state_dict(unet)
    files = {}
    for fmt in formats:
        name = f"{stem}-{fmt}.safetensors"
        if fmt == "diffusers":
            sd = convert_state_dict_to_diffusers(peft_sd)
            left = [k for k in sd if ".lora_A." in k or ".lora_B." in k]
            if left:
                raise MobileSDError(f"the diffusers LoRA format has no names for {left[0]} (only attention layers)",
                                    "save this adapter in kohya or peft format")
            StableDiffusionPipeline.save_lora_weights(str(out), unet_lora_layers=sd, weight_name=name,
                                                      safe_serialization=True)
        elif fmt == "peft":
            StableDiffusionPipeline.save_lora_weights(str(out), unet_lora_layers=peft_sd, weight_name=name,
                                                      safe_serialization=True)
        elif fmt == "kohya":
            sd = convert_state_dict_to_kohya({f"unet.{k}": v for k, v in peft_sd.items()})
            save_file({k: v.contiguous() for k, v in sd.items()}, str(out / name),
                      metadata={"ss_network_module": "networks.lora", "ss_base_model": "tiny-digits-sd"})
        else:
            raise ValueError(fmt)
        os.chmod(out / name, 0o644)   # safetensors writes 0600; an asset is read by everyone
        files[fmt] = name
    return files


def finish_run(run: Run, model_dir: Path, out: Path) -> Path:
    """Move the finished asset into place and drop the run folder (a failed run never leaves a half asset)."""
    if out.exists():
        shutil.rmtree(out)
    model_dir.rename(out)
    shutil.rmtree(run.work)
    return out


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n")


def config_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def file_bytes(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def check_base(base: Path) -> Path:
    base = Path(base)
    if not (base / "model_index.json").exists() or not (base / "classifier").is_dir():
        raise MobileSDError(f"{base} is not the digits model (needs model_index.json and classifier/)",
                            "pass --base assets/tiny-digits-sd (or a model made by `mobilesd train-tiny`)")
    return base


def write_asset(run: Run, model_dir: Path, out: Path, training: dict, base: Path, evaluate_fn, card_fn,
                evaluate: bool, log) -> Path:
    """The end of every asset's training: training.json, then (unless ``evaluate`` is false) the evaluation's
    metrics.json and the README card, then the finished folder moved into place as ``out``."""
    write_json(model_dir / "training.json", training)
    if evaluate:
        _evaluate_into(model_dir, base, training, evaluate_fn, card_fn, log)
    finish_run(run, model_dir, out)
    log(f"wrote {out}")
    return out


def _evaluate_into(folder: Path, base: Path, training: dict, evaluate_fn, card_fn, log) -> None:
    clock = Clock()
    result = evaluate_fn(folder, base, log)
    training["eval_seconds"] = round(clock.lap()[0], 1)
    write_json(folder / "training.json", training)
    write_json(folder / "metrics.json", result)
    (folder / "README.md").write_text(card_fn(folder, training, result))


def reevaluate(out: Path, base: Path | None, evaluate_fn, card_fn, log) -> Path:
    """Evaluate a finished asset folder again and rewrite metrics.json, samples.png and README.md (no training):
    ``mobilesd train-tiny --asset A --out OUT --eval-only``."""
    from mobilesd.tiny.model import DEFAULT_MODEL

    out = Path(out)
    if not (out / "training.json").is_file():
        raise MobileSDError(f"{out} is not a finished asset (no training.json)", "train it first (without --eval-only)")
    base = check_base(Path(base) if base else DEFAULT_MODEL)
    training = json.loads((out / "training.json").read_text())
    _evaluate_into(out, base, training, evaluate_fn, card_fn, log)
    return out
