"""A few-step student of the digits model: latent consistency distillation as a LoRA (LCM-LoRA, Luo et al. 2023),
for 2-4 steps of the LCM scheduler without classifier-free guidance.

The recipe of diffusers' ``train_lcm_distill_lora_sd_wds.py``, on the digits data:

* a skipping-step DDIM solver on 50 of the 1000 training timesteps (t_n = 19, 39, ..., 999; k = 20), the grid
  diffusers' ``LCMScheduler`` samples from (``original_inference_steps`` 50);
* per sample: x_{t_n} = the train digit's latent noised to t_n; the teacher (the digits model itself: the UNet
  with the LoRA disabled) takes one CFG DDIM step to t_{n-k}, with the guidance folded in (guidance 3, the
  digits model's sampling guidance), so the student needs no CFG at inference;
* student f(x, t) = c_skip(t) x + c_out(t) x0_pred(x, t) with LCM's boundary scalings (sigma_data 0.5,
  timestep_scaling 10: those of ``LCMScheduler``), the LoRA'd UNet; target f(x_{t_{n-k}}, t_{n-k}) by the same
  student without gradient (LCM-LoRA has no EMA target); pseudo-Huber loss (c = 0.001).

The LoRA adapts every linear and conv layer of the UNet's blocks (as LCM-LoRA does) and is saved in peft format
(``unet.<module>.lora_A/lora_B.weight``, what diffusers' ``save_lora_weights`` writes for a peft adapter).

    mobilesd train-tiny --asset lcm-lora --out assets/tiny-digits-lcm-lora --seed 0 --force
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mobilesd.tiny import finetune as ft

logger = logging.getLogger(__name__)

ASSET = "tiny-digits-lcm-lora"
STEM = "lcm"
SIGMA_DATA = 0.5


@dataclass
class LCMConfig:
    seed: int = 0
    threads: int = 1
    steps: int = 800
    batch: int = 32
    lr: float = 1e-3
    warmup: int = 50
    rank: int = 16
    guidance: float = 3.0             # teacher CFG scale (diffusers convention: uncond + g (cond - uncond))
    ddim_timesteps: int = 50          # = LCMScheduler's original_inference_steps
    timestep_scaling: float = 10.0    # = LCMScheduler's timestep_scaling
    huber_c: float = 0.001
    checkpoint_every: int = 100


def boundary_scalings(t: torch.Tensor, timestep_scaling: float) -> tuple[torch.Tensor, torch.Tensor]:
    """LCMScheduler.get_scalings_for_boundary_condition_discrete: c_skip, c_out of the consistency function."""
    s = t.float() * timestep_scaling
    return SIGMA_DATA ** 2 / (s ** 2 + SIGMA_DATA ** 2), s / (s ** 2 + SIGMA_DATA ** 2) ** 0.5


def command_line(cfg: LCMConfig, out: str) -> str:
    d = LCMConfig()
    extra = (f" --steps {cfg.steps}" if cfg.steps != d.steps else "") + (
        f" --threads {cfg.threads}" if cfg.threads != d.threads else "")
    return f"mobilesd train-tiny --asset lcm-lora --out {out} --seed {cfg.seed}{extra} --force"


def _x0(eps, x, a):
    """Epsilon prediction -> predicted clean latent at alpha_cumprod a (broadcast per sample)."""
    return (x - (1 - a).sqrt() * eps) / a.sqrt()


def train_adapter(pipe, cfg: LCMConfig, ckpt_dir: Path, run, log=logger.info) -> dict:
    from diffusers import DDPMScheduler

    from mobilesd.tiny.model import scheduler_config

    unet = pipe.unet
    unet.requires_grad_(False)
    ft.add_lora(unet, cfg.rank, ft.ALL_TARGETS, cfg.seed * 1000 + 51)
    params = ft.lora_parameters(unet)
    for p in params.values():
        p.requires_grad_(True)
    data = ft.LatentData(pipe)
    sched = DDPMScheduler.from_config(scheduler_config())
    acp = sched.alphas_cumprod.float()
    n_train = sched.config.num_train_timesteps
    k = n_train // cfg.ddim_timesteps
    grid = torch.arange(1, cfg.ddim_timesteps + 1) * k - 1          # 19, 39, ..., 999
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + 52)
    opt = torch.optim.AdamW(list(params.values()), lr=cfg.lr, weight_decay=0.0)
    start, losses, avg = 0, [], None
    ckpt = ckpt_dir / "lora_last.pt"
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(state["lora"][name])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        start, losses, avg = int(state["step"]), list(state["losses"]), state["avg"]
        log(f"LCM LoRA: resuming at step {start}")
    b, g = cfg.batch, cfg.guidance
    view = lambda v: v.view(-1, 1, 1, 1)  # noqa: E731
    clock = ft.Clock()
    unet.train()
    bar = tqdm(range(start, cfg.steps), desc="lcm lora", initial=start, total=cfg.steps, dynamic_ncols=True)
    for step in bar:
        ft.set_lr(opt, ft.lr_at(step, cfg.steps, cfg.lr, cfg.warmup))
        z0, cond, uncond = data.batch(b, gen)
        noise = torch.randn(z0.shape, generator=gen)
        index = torch.randint(0, cfg.ddim_timesteps, (b,), generator=gen)
        t_start = grid[index]
        t_prev = (t_start - k).clamp(min=0)
        x_t = sched.add_noise(z0, noise, t_start)
        a_start, a_prev = view(acp[t_start]), view(acp[t_prev])
        c_skip_s, c_out_s = boundary_scalings(t_start, cfg.timestep_scaling)
        c_skip_p, c_out_p = boundary_scalings(t_prev, cfg.timestep_scaling)

        eps = unet(x_t, t_start, encoder_hidden_states=cond).sample
        pred = view(c_skip_s) * x_t + view(c_out_s) * _x0(eps, x_t, a_start)
        with torch.no_grad():
            unet.disable_adapters()           # the teacher: the digits model itself
            both = unet(torch.cat([x_t, x_t]), torch.cat([t_start, t_start]),
                        encoder_hidden_states=torch.cat([uncond, cond])).sample
            unet.enable_adapters()
            eps_u, eps_c = both[:b], both[b:]
            x0_u, x0_c = _x0(eps_u, x_t, a_start), _x0(eps_c, x_t, a_start)
            x0_g, eps_g = x0_u + g * (x0_c - x0_u), eps_u + g * (eps_c - eps_u)
            x_prev = a_prev.sqrt() * x0_g + (1 - a_prev).sqrt() * eps_g      # one DDIM step t_n -> t_{n-k}
            eps_target = unet(x_prev, t_prev, encoder_hidden_states=cond).sample
            target = view(c_skip_p) * x_prev + view(c_out_p) * _x0(eps_target, x_prev, a_prev)
        loss = (torch.sqrt((pred - target) ** 2 + cfg.huber_c ** 2) - cfg.huber_c).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        opt.step()
        avg = loss.item() if avg is None else 0.98 * avg + 0.02 * loss.item()
        if step % 10 == 0:
            bar.set_postfix(loss=f"{avg:.4f}")
        if step % 50 == 49:
            losses.append(round(avg, 5))
        if (step + 1) % cfg.checkpoint_every == 0 or step == cfg.steps - 1:
            tmp = ckpt.with_suffix(".tmp")
            torch.save(dict(lora={n: p.detach().clone() for n, p in params.items()}, opt=opt.state_dict(),
                            gen=gen.get_state(), step=step + 1, losses=losses, avg=avg), tmp)
            tmp.replace(ckpt)
            run.add_time("lora", clock)
    unet.eval()
    return dict(final_loss=round(avg, 5) if avg is not None else None, loss_every_50_steps=losses)


# the rows of the card: (name, steps, guidance, scheduler, with the LoRA)
EVAL_ROWS = (
    ("full model, 20 DPM steps, CFG 3", 20, 3.0, "dpm", False),
    ("full model, 4 DPM steps, CFG 3", 4, 3.0, "dpm", False),
    ("full model, 4 DPM steps, no CFG", 4, 1.0, "dpm", False),
    ("full model, 4 LCM steps, no CFG", 4, 1.0, "lcm", False),
    ("full model, 2 LCM steps, no CFG", 2, 1.0, "lcm", False),
    ("full model, 1 LCM step, no CFG", 1, 1.0, "lcm", False),
    ("LCM LoRA, 8 steps, no CFG", 8, 1.0, "lcm", True),
    ("LCM LoRA, 4 steps, no CFG", 4, 1.0, "lcm", True),
    ("LCM LoRA, 2 steps, no CFG", 2, 1.0, "lcm", True),
    ("LCM LoRA, 1 step, no CFG", 1, 1.0, "lcm", True),
)


def evaluate_asset(asset: Path, base: Path, log=logger.info) -> dict:
    """Prompt accuracy and FID-style distance (``mobilesd eval``'s prompts and seeds) of the full model at its
    20-step CFG setting (the reference), a few-step full model for comparison, and the student at 8/4/2/1 LCM
    steps without CFG."""
    from mobilesd.tiny import metrics
    from mobilesd.tiny.classifier import load_classifier

    clf = load_classifier(base / "classifier")
    fp = metrics.load_fp_pipeline(base)
    lora_file = asset / f"{STEM}-peft.safetensors"
    student = metrics.lora_pipeline(base, [str(lora_file)])
    gens = []
    for name, steps, guidance, sched, with_lora in EVAL_ROWS:
        gen = metrics.pipeline_generator(student if with_lora else fp, name, str(lora_file) if with_lora else str(base))
        gen.sampling = dict(steps=steps, guidance=guidance, scheduler=sched)
        gens.append(gen)
    result = metrics.evaluate(gens, clf, metrics.EvalSettings(), log)
    four = "LCM LoRA, 4 steps, no CFG"
    grid = np.concatenate([result["images"][EVAL_ROWS[0][0]][:40], result["images"][four][:40]])
    # rows: digits; the first 4 columns the full model (20 steps, CFG), the next 4 the student (4 steps, no CFG)
    metrics.save_grid(grid, np.concatenate([result["digits"][:40], result["digits"][:40]]), asset / "samples.png",
                      per_digit=8)
    out = metrics.strip_images(result)
    ref, fast = (next(r for r in out["rows"] if r["name"] == n) for n in (EVAL_ROWS[0][0], four))
    out["acceptance"] = dict(reference=EVAL_ROWS[0][0], student=four,
                             reference_accuracy=ref["prompt_accuracy"], student_accuracy=fast["prompt_accuracy"],
                             points_below_reference=round(100 * (ref["prompt_accuracy"] - fast["prompt_accuracy"]), 2),
                             within_5_points=bool(ref["prompt_accuracy"] - fast["prompt_accuracy"] <= 0.05))
    return out


def train(out: str | Path, cfg: LCMConfig | None = None, base: str | Path | None = None, resume: bool = False,
          force: bool = False, evaluate: bool = True, log=logger.info) -> Path:
    from mobilesd.loading import load_pipeline
    from mobilesd.tiny.model import DEFAULT_MODEL

    cfg = cfg or LCMConfig()
    torch.set_num_threads(cfg.threads)
    base = ft.check_base(Path(base) if base else DEFAULT_MODEL)
    out = Path(out)
    run = ft.Run(out, cfg, resume, force)
    pipe = load_pipeline(base)
    if not run.done("lora"):
        info = train_adapter(pipe, cfg, run.ckpt, run, log)
        run.state["phases"].setdefault("lora", {}).update(info, done=True)
        run.save_state()
    else:
        ft.add_lora(pipe.unet, cfg.rank, ft.ALL_TARGETS, 0)
        state = torch.load(run.ckpt / "lora_last.pt", weights_only=True)
        with torch.no_grad():
            for name, p in ft.lora_parameters(pipe.unet).items():
                p.copy_(state["lora"][name])
    model_dir = run.work / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    model_dir.mkdir()
    files = ft.save_lora_formats(pipe.unet, model_dir, STEM, ("peft",))
    phase = run.state["phases"]["lora"]
    training = dict(command=command_line(cfg, "assets/" + ASSET), base_model=str(base), config=ft.config_dict(cfg),
                    files=files, lora=dict(rank=cfg.rank, alpha=cfg.rank, targets=ft.ALL_TARGETS,
                                           layers=sum(1 for k in ft.peft_lora_state_dict(pipe.unet) if "lora_A" in k)),
                    phases=run.state["phases"], total_seconds=phase.get("seconds", 0),
                    total_cpu_seconds=phase.get("cpu_seconds", 0), machine=ft.machine(cfg.threads))
    from mobilesd.tiny.asset_cards import lcm_lora_card

    return ft.write_asset(run, model_dir, out, training, base, evaluate_asset, lcm_lora_card, evaluate, log)


def reevaluate(out: str | Path, base: str | Path | None = None, log=logger.info) -> Path:
    """Score the finished asset in ``out`` again and rewrite its metrics and card (``--eval-only``)."""
    from mobilesd.tiny.asset_cards import lcm_lora_card

    return ft.reevaluate(Path(out), base, evaluate_asset, lcm_lora_card, log)
