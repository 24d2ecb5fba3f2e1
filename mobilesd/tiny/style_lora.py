"""A style LoRA for the digits model: bold strokes.

The base model's UNet gets a LoRA on its attention projections (to_q, to_k, to_v, to_out.0: the layers SD
LoRAs usually adapt, and the ones every file format names), trained with the base model's own loss on the
train-split digits made bold (ink dilated by one pixel: a 3x3 min-filter on the 32x32 image, where ink is
dark). Text encoder, VAE and the UNet's own weights stay frozen. The adapter is saved twice, in diffusers
and kohya / A1111 format (same tensors), so that ``mobilesd export --lora`` can be checked on both.

    mobilesd train-tiny --asset bold-lora --out assets/tiny-digits-bold-lora --seed 0 --force
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mobilesd.tiny import finetune as ft

logger = logging.getLogger(__name__)

ASSET = "tiny-digits-bold-lora"
STEM = "bold"


@dataclass
class StyleLoraConfig:
    seed: int = 0
    threads: int = 1
    steps: int = 600
    batch: int = 64
    lr: float = 1e-3
    warmup: int = 50
    rank: int = 8
    bold_px: int = 1              # ink dilation in pixels (each side)
    min_snr_gamma: float = 5.0
    cond_drop: float = 0.1        # as the base model: the empty prompt learns the style too, so CFG keeps it
    checkpoint_every: int = 100


def embolden(x: torch.Tensor, px: int = 1) -> torch.Tensor:
    """Images (N, 3, H, W) in [-1, 1], ink dark: dilate the ink by ``px`` pixels (a min-filter of size 2px+1)."""
    return -F.max_pool2d(-x, 2 * px + 1, stride=1, padding=px)


def command_line(cfg: StyleLoraConfig, out: str) -> str:
    d = StyleLoraConfig()
    extra = "".join(f" --steps {cfg.steps}" if cfg.steps != d.steps else "")
    extra += f" --threads {cfg.threads}" if cfg.threads != d.threads else ""
    return f"mobilesd train-tiny --asset bold-lora --out {out} --seed {cfg.seed}{extra} --force"


def train_adapter(pipe, cfg: StyleLoraConfig, ckpt_dir: Path, run, log=logger.info) -> dict:
    from diffusers import DDPMScheduler

    from mobilesd.tiny.model import scheduler_config

    unet = pipe.unet
    unet.requires_grad_(False)
    ft.add_lora(unet, cfg.rank, ft.ATTENTION_TARGETS, cfg.seed * 1000 + 41)
    params = ft.lora_parameters(unet)
    for p in params.values():
        p.requires_grad_(True)
    data = ft.LatentData(pipe, lambda x: embolden(x, cfg.bold_px))
    noise_sched = DDPMScheduler.from_config(scheduler_config())
    snr = noise_sched.alphas_cumprod / (1 - noise_sched.alphas_cumprod)
    weight = snr.clamp(max=cfg.min_snr_gamma) / snr
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + 42)
    opt = torch.optim.AdamW(list(params.values()), lr=cfg.lr, weight_decay=0.0)
    start, losses, avg = 0, [], None
    ckpt = ckpt_dir / "lora_last.pt"
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(state["lora"][k])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        start, losses, avg = int(state["step"]), list(state["losses"]), state["avg"]
        log(f"bold LoRA: resuming at step {start}")
    clock = ft.Clock()
    unet.train()
    bar = tqdm(range(start, cfg.steps), desc="bold lora", initial=start, total=cfg.steps, dynamic_ncols=True)
    for step in bar:
        ft.set_lr(opt, ft.lr_at(step, cfg.steps, cfg.lr, cfg.warmup))
        z0, hidden, _ = data.batch(cfg.batch, gen, cfg.cond_drop)
        noise = torch.randn(z0.shape, generator=gen)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (cfg.batch,), generator=gen)
        pred = unet(noise_sched.add_noise(z0, noise, t), t, encoder_hidden_states=hidden).sample
        loss = (weight[t] * (pred - noise).pow(2).mean((1, 2, 3))).mean()
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
            torch.save(dict(lora={k: p.detach().clone() for k, p in params.items()}, opt=opt.state_dict(),
                            gen=gen.get_state(), step=step + 1, losses=losses, avg=avg), tmp)
            tmp.replace(ckpt)
            run.add_time("lora", clock)
    unet.eval()
    return dict(final_loss=round(avg, 5) if avg is not None else None, loss_every_50_steps=losses)


def evaluate_asset(asset: Path, base: Path, log=logger.info) -> dict:
    """Prompt accuracy and FID-style distance of the base model and of the base model with the LoRA fused
    (same prompts and seeds, ``mobilesd eval``'s defaults), plus how bold: the ink fraction of each, and of
    real and real-bold digits, and the mean pixel difference between the two models' images."""
    from mobilesd.tiny import data, metrics
    from mobilesd.tiny.classifier import load_classifier

    clf = load_classifier(base / "classifier")
    settings = metrics.EvalSettings()
    fp = metrics.load_fp_pipeline(base)
    lora_file = asset / f"{STEM}-diffusers.safetensors"
    styled = metrics.lora_generator(base, [str(lora_file)], name="bold LoRA (fused)")
    result = metrics.evaluate([metrics.pipeline_generator(fp, "base model", str(base)), styled], clf, settings, log)
    images = result["images"]
    x_held, _ = data.load_split("heldout")
    real = data.to_uint8(x_held)
    real_bold = data.to_uint8(embolden(x_held))
    base_img, lora_img = images["base model"], images[styled.name]
    style = dict(
        ink_fraction={"real digits (held-out)": ink_fraction(real), "real digits made bold": ink_fraction(real_bold),
                      "base model": ink_fraction(base_img), "bold LoRA": ink_fraction(lora_img)},
        mean_abs_difference_vs_base=round(float(np.abs(lora_img.astype(np.float64) - base_img).mean() / 255), 4),
        real_bold_accuracy=round(float((clf.predict(real_bold)[0] == data.load_split("heldout")[1]).mean()), 4),
    )
    _save_pair_grid(base_img, lora_img, result["digits"], asset / "samples.png")
    out = metrics.strip_images(result)
    out["style"] = style
    return out


def ink_fraction(images: np.ndarray) -> float:
    """Fraction of pixels darker than mid-grey (ink)."""
    return round(float((images.astype(np.float64).mean(-1) < 127.5).mean()), 4)


def _save_pair_grid(base_img, lora_img, digits, path: Path, per_digit: int = 4, zoom: int = 2) -> None:
    """Rows: digits 0-9; left half the base model, right half the LoRA (same prompts and seeds)."""
    from PIL import Image

    h, w = base_img.shape[1:3]
    grid = np.full((10 * h, (2 * per_digit + 1) * w, 3), 255, np.uint8)
    grid[:, per_digit * w:(per_digit + 1) * w] = 128
    for d in range(10):
        for j, k in enumerate(np.flatnonzero(digits == d)[:per_digit]):
            grid[d * h:(d + 1) * h, j * w:(j + 1) * w] = base_img[k]
            grid[d * h:(d + 1) * h, (per_digit + 1 + j) * w:(per_digit + 2 + j) * w] = lora_img[k]
    Image.fromarray(grid).resize((grid.shape[1] * zoom, grid.shape[0] * zoom), Image.NEAREST).save(str(path),
                                                                                                  optimize=True)


def train(out: str | Path, cfg: StyleLoraConfig | None = None, base: str | Path | None = None, resume: bool = False,
          force: bool = False, evaluate: bool = True, log=logger.info) -> Path:
    from mobilesd.loading import load_pipeline
    from mobilesd.tiny.model import DEFAULT_MODEL

    cfg = cfg or StyleLoraConfig()
    torch.set_num_threads(cfg.threads)
    base = ft.check_base(Path(base) if base else DEFAULT_MODEL)
    out = Path(out)
    run = ft.Run(out, cfg, resume, force)
    pipe = load_pipeline(base)
    info = train_adapter(pipe, cfg, run.ckpt, run, log) if not run.done("lora") else run.state["phases"]["lora"]
    if not run.done("lora"):
        run.state["phases"].setdefault("lora", {}).update(info, done=True)
        run.save_state()
    else:  # the finished adapter is in the last checkpoint
        ft.add_lora(pipe.unet, cfg.rank, ft.ATTENTION_TARGETS, 0)
        state = torch.load(run.ckpt / "lora_last.pt", weights_only=True)
        with torch.no_grad():
            for k, p in ft.lora_parameters(pipe.unet).items():
                p.copy_(state["lora"][k])
    model_dir = run.work / "model"
    if model_dir.exists():
        import shutil

        shutil.rmtree(model_dir)
    model_dir.mkdir()
    files = ft.save_lora_formats(pipe.unet, model_dir, STEM, ("diffusers", "kohya"))
    phases = run.state["phases"]
    training = dict(command=command_line(cfg, "assets/" + ASSET), base_model=str(base), config=ft.config_dict(cfg),
                    files=files, lora=dict(rank=cfg.rank, alpha=cfg.rank, targets=ft.ATTENTION_TARGETS,
                                           layers=sum(1 for k in ft.peft_lora_state_dict(pipe.unet) if "lora_A" in k)),
                    phases=phases, total_seconds=phases["lora"].get("seconds", 0),
                    total_cpu_seconds=phases["lora"].get("cpu_seconds", 0), machine=ft.machine(cfg.threads))
    from mobilesd.tiny.asset_cards import style_lora_card

    return ft.write_asset(run, model_dir, out, training, base, evaluate_asset, style_lora_card, evaluate, log)


def reevaluate(out: str | Path, base: str | Path | None = None, log=logger.info) -> Path:
    """Score the finished asset in ``out`` again and rewrite its metrics and card (``--eval-only``)."""
    from mobilesd.tiny.asset_cards import style_lora_card

    return ft.reevaluate(Path(out), base, evaluate_asset, style_lora_card, log)
