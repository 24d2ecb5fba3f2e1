"""Data-free distillation (EfficientDM): the quantized student follows the full-precision teacher along the
teacher's own sampling trajectories.

At every sampling step both models predict the noise with CFG (unconditional + conditional halves in one
batch); the loss is the MSE between the guided predictions, the optimizer steps, and the latent is
advanced with the *teacher's* prediction (so the student trains on the distribution it will meet).
Which parameters train is the method's choice: LoRA factors (scale-aware learning rates) and per-step
activation step sizes (TALSQ) for EfficientDM, TDQ generators or static intervals for TDQ.

Runs through accelerate (``--device cuda``, mixed precision, several GPUs: each process takes its share
of every prompt batch); checkpoints every few iterations and resumes bit-exactly on CPU (prompt choice
and noise come from per-iteration seeds, the optimizer state is saved).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from mobilesd.quant.calibrate import encode, initial_latents, make_scheduler


@dataclass
class DistillConfig:
    iterations: int = 40
    batch_size: int = 8
    steps: int = 20
    guidance: float = 7.5
    scheduler: str = "dpm"
    seed: int = 0
    checkpoint_every: int = 10
    device: str = "cpu"
    mixed_precision: str = "no"        # no | fp16 | bf16 (accelerate)
    stop_after: int | None = None      # end this run after N iterations (checkpoint kept; --resume goes on)


def _save_checkpoint(path: Path, it: int, params: dict[str, nn.Parameter], optimizer, history: list[float]):
    tmp = path.with_suffix(".tmp")
    torch.save({"iteration": it, "params": {k: p.detach().cpu() for k, p in params.items()},
                "optimizer": optimizer.state_dict(), "history": history}, tmp)
    os.replace(tmp, path)


def distill(pipe, student: nn.Module, teacher: nn.Module, param_groups: list[dict], named_params: dict,
            prompts: list[str], cfg: DistillConfig, checkpoint: Path | None = None, resume: bool = False,
            progress: bool = True) -> dict:
    """Train ``param_groups`` (torch.optim param groups; ``named_params`` names them for checkpoints) of
    ``student`` against ``teacher``. Returns {"loss_history", "iterations", "resumed_from"}."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    acc = Accelerator(cpu=cfg.device == "cpu", mixed_precision=cfg.mixed_precision)
    device = acc.device
    optimizer = torch.optim.Adam(param_groups)
    start, history = 0, []
    if resume and checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=True)  # our own file; weights_only: never arbitrary pickle
        with torch.no_grad():
            for k, v in state["params"].items():
                named_params[k].copy_(v)
        optimizer.load_state_dict(state["optimizer"])
        start, history = state["iteration"], list(state["history"])
    teacher.to(device).eval().requires_grad_(False)
    student.to(device).train()
    student, optimizer = acc.prepare(student, optimizer)

    pipe.text_encoder.to(device)
    with torch.no_grad():  # embeddings of every prompt once (text encoder stays full precision)
        uncond_all, cond_all = encode(pipe, prompts, device)
    uncond_all, cond_all = uncond_all.to(device), cond_all.to(device)
    rank, world = acc.process_index, acc.num_processes
    bar = tqdm(range(start, cfg.iterations), initial=start, total=cfg.iterations, desc="distilling",
               unit="it", disable=not (progress and acc.is_main_process))
    mse = nn.MSELoss()
    stopped = False
    for it in bar:
        if cfg.stop_after is not None and it - start >= cfg.stop_after:
            stopped = True
            break
        g = torch.Generator("cpu").manual_seed(cfg.seed * 1_000_003 + it)
        pick = torch.randint(0, len(prompts), (cfg.batch_size,), generator=g)[rank::world]
        latents = initial_latents(pipe, cfg.batch_size, cfg.seed * 1_000_003 + it)[rank::world].to(device)
        uncond, cond = uncond_all[pick], cond_all[pick]
        context = torch.cat([uncond, cond])
        sched = make_scheduler(pipe, cfg.scheduler)
        sched.set_timesteps(cfg.steps)
        latents = latents * sched.init_noise_sigma
        it_loss = 0.0
        for t in sched.timesteps:
            x_in = sched.scale_model_input(torch.cat([latents] * 2), t)
            with torch.no_grad():
                eps_t = teacher(x_in, t, encoder_hidden_states=context).sample
                u, c = eps_t.chunk(2)
                guided_t = u + cfg.guidance * (c - u)
            with acc.autocast():
                eps_s = student(x_in, t, encoder_hidden_states=context).sample
                us, cs = eps_s.float().chunk(2)
                loss = mse(us + cfg.guidance * (cs - us), guided_t)
            acc.backward(loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            it_loss += float(loss.detach()) / cfg.steps
            latents = sched.step(guided_t, t, latents).prev_sample
        history.append(it_loss)
        bar.set_postfix(loss=f"{it_loss:.3e}")
        last_of_run = it + 1 == cfg.iterations or (cfg.stop_after is not None and it + 1 - start == cfg.stop_after)
        if checkpoint is not None and acc.is_main_process and ((it + 1) % cfg.checkpoint_every == 0 or last_of_run):
            _save_checkpoint(checkpoint, it + 1, named_params, optimizer, history)
    bar.close()
    student = acc.unwrap_model(student)
    student.eval()
    return {"loss_history": history, "iterations": cfg.iterations, "resumed_from": start,
            "stopped": stopped, "config": asdict(cfg)}


def save_history(path: Path, stats: dict) -> None:
    path.write_text(json.dumps(stats, indent=2))
