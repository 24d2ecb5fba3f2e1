"""Training of the tiny digits SD: VAE, then the digit classifier, then text encoder + UNet together.

Deterministic for a seed on one machine and thread count: every phase seeds its own initialisation
and draws its batches from its own ``torch.Generator``, whose state is checkpointed, so ``--resume``
continues bit-identically. The run is assembled in ``<out>.partial/`` and renamed to ``<out>`` only
when complete, so a failed run never leaves a half-written model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mobilesd.errors import MobileSDError
from mobilesd.tiny import data
from mobilesd.tiny.classifier import DigitClassifier, load_classifier
from mobilesd.tiny.model import (CLASSIFIER_SUBDIR, build_text_encoder, build_unet, build_vae,
                                 fp16_roundtrip_, save_pipeline, scheduler_config)

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    seed: int = 0
    threads: int = 1
    vae_steps: int = 1000
    vae_batch: int = 64
    vae_lr: float = 1e-3
    kl_weight: float = 1e-3
    clf_steps: int = 1500
    clf_batch: int = 128
    clf_lr: float = 2e-3
    unet_steps: int = 2500
    unet_batch: int = 128
    unet_lr: float = 1e-3
    warmup: int = 200
    ema_decay: float = 0.995
    min_snr_gamma: float = 5.0   # loss weight min(SNR, gamma) / SNR: less weight on nearly clean steps
    cond_drop: float = 0.1
    checkpoint_every: int = 500


# Hand-written on purpose: the LR schedule, the EMA and the min-SNR weight below define the shipped asset
# (assets/tiny-digits-sd, whose card says `mobilesd train-tiny --seed 0` gives byte-identical weights). The library
# versions compute other numbers: diffusers.optimization.get_scheduler("cosine") decays to 0 (ours to 0.1 x
# base) and its warm-up starts at lr 0 (ours at base / warmup); diffusers.training_utils.EMAModel copies the
# weights on its first step (decay 0, ours 0.1) and updates as ema - (1 - d)(ema - p) (other rounding than
# ours); compute_snr squares sqrt(a)/sqrt(1 - a) and differs from a / (1 - a) in 624 of the 1000 timesteps
# (up to 2.7e-7 relative, 80 different min-SNR weights). Switching would mean retraining and a new card.

def _lr(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up from base / warmup, then cosine from base down to 0.1 x base."""
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


class _Run:
    """Folder bookkeeping: <out>.partial/{checkpoints/, state.json}."""

    def __init__(self, out: Path, cfg: TrainConfig, resume: bool, force: bool):
        self.out = out
        self.work = out.with_name(out.name + ".partial")
        self.ckpt = self.work / "checkpoints"
        if out.exists() and not force:
            raise MobileSDError(f"{out} already exists", "pass --force to replace it, or choose another --out")
        if self.work.exists() and not resume:
            raise MobileSDError(f"an unfinished run is in {self.work}",
                                "pass --resume to continue it, or delete that folder to start over")
        self.ckpt.mkdir(parents=True, exist_ok=True)
        self.state_path = self.work / "state.json"
        self.state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        cfg_dict = dataclasses.asdict(cfg)
        if self.state.get("config") not in (None, cfg_dict):
            raise MobileSDError(f"{self.work} was started with other settings: {self.state['config']}",
                                "resume with the same options, or delete that folder to start over")
        self.state.setdefault("config", cfg_dict)
        self.state.setdefault("phases", {})
        self.save_state()

    def save_state(self) -> None:
        self.state_path.write_text(json.dumps(self.state, indent=2) + "\n")

    def done(self, phase: str) -> bool:
        return bool(self.state["phases"].get(phase, {}).get("done"))

    def finish(self, phase: str, clock: "_Clock", **info) -> None:
        self.add_time(phase, clock)
        self.state["phases"][phase].update(info, done=True)
        self.save_state()

    def add_time(self, phase: str, clock: "_Clock") -> None:
        """Accumulate wall and CPU seconds (CPU time of one thread ~ wall time on an idle machine)."""
        p = self.state["phases"].setdefault(phase, {})
        wall, cpu = clock.lap()
        p["seconds"] = round(p.get("seconds", 0) + wall, 1)
        p["cpu_seconds"] = round(p.get("cpu_seconds", 0) + cpu, 1)
        self.save_state()


class _Clock:
    def __init__(self):
        self.wall, self.cpu = time.time(), time.process_time()

    def lap(self) -> tuple[float, float]:
        wall, cpu = time.time(), time.process_time()
        out = (wall - self.wall, cpu - self.cpu)
        self.wall, self.cpu = wall, cpu
        return out


# ---------------------------------------------------------------- phase 1: VAE

def train_vae(cfg: TrainConfig, log=logger.info):
    torch.manual_seed(cfg.seed * 1000 + 1)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + 11)
    x_train, _ = data.load_split("train")
    vae = build_vae()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    bar = tqdm(range(cfg.vae_steps), desc="vae", dynamic_ncols=True)
    avg = None
    vae.train()
    for step in bar:
        _set_lr(opt, _lr(step, cfg.vae_steps, cfg.vae_lr, 100))
        idx = torch.randint(len(x_train), (cfg.vae_batch,), generator=gen)
        x = data.augment(x_train[idx], gen, shift=1.5, rotate_deg=6, scale=0.06)
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        kl = post.kl().mean() / post.mean[0].numel()
        loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + cfg.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        avg = loss.item() if avg is None else 0.98 * avg + 0.02 * loss.item()
        if step % 10 == 0 or step == cfg.vae_steps - 1:
            bar.set_postfix(loss=f"{avg:.4f}", kl=f"{kl.item():.3f}")
    vae.eval()
    fp16_roundtrip_(vae)  # downstream phases see exactly the weights the asset ships
    mean, std = encode_posterior(vae, x_train)
    sf = 1.0 / float(mean.std())
    vae.register_to_config(scaling_factor=sf)
    x_held, _ = data.load_split("heldout")
    with torch.no_grad():
        rec = vae.decode(vae.encode(x_held).latent_dist.mean).sample
    mse = F.mse_loss(rec.clamp(-1, 1), x_held).item() / 4  # [-1,1] -> [0,1] scale
    info = dict(scaling_factor=round(sf, 5), posterior_std_mean=round(float(std.mean()), 4),
                heldout_recon_psnr_db=round(10 * math.log10(1 / mse), 2))
    log(f"vae: scaling_factor {sf:.4f}, held-out reconstruction PSNR {info['heldout_recon_psnr_db']} dB")
    return vae, info


@torch.no_grad()
def encode_posterior(vae, x: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    means, stds = [], []
    for i in range(0, len(x), batch):
        post = vae.encode(x[i : i + batch]).latent_dist
        means.append(post.mean)
        stds.append(post.std)
    return torch.cat(means), torch.cat(stds)


# ---------------------------------------------------------------- phase 2: classifier

def train_classifier(cfg: TrainConfig, log=logger.info):
    torch.manual_seed(cfg.seed * 1000 + 2)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + 22)
    x_train, y_train = data.load_split("train")
    # the classifier sees images the way it will see generated ones: uint8-quantised
    x_train = DigitClassifier.prepare(data.to_uint8(x_train))
    y_train = torch.from_numpy(y_train)
    model = DigitClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.clf_lr, weight_decay=1e-4)
    bar = tqdm(range(cfg.clf_steps), desc="classifier", dynamic_ncols=True)
    avg = None
    model.train()
    for step in bar:
        _set_lr(opt, _lr(step, cfg.clf_steps, cfg.clf_lr, 50))
        idx = torch.randint(len(x_train), (cfg.clf_batch,), generator=gen)
        x = data.augment(x_train[idx], gen)
        x = x + 0.05 * torch.randn(x.shape, generator=gen)
        loss = F.cross_entropy(model(x), y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        avg = loss.item() if avg is None else 0.98 * avg + 0.02 * loss.item()
        if step % 10 == 0 or step == cfg.clf_steps - 1:
            bar.set_postfix(loss=f"{avg:.4f}")
    model.eval()
    x_held, y_held = data.load_split("heldout")
    pred, _ = model.predict(data.to_uint8(x_held))
    acc = float((pred == y_held).mean())
    log(f"classifier: held-out accuracy {acc:.4f} on {len(y_held)} real digits")
    return model, dict(heldout_accuracy=round(acc, 4), heldout_images=int(len(y_held)))


# ---------------------------------------------------------------- phase 3: text encoder + UNet

def prompt_table() -> tuple[list[str], np.ndarray]:
    """Training prompts (all train templates x digits) followed by the empty prompt; digit of each (-1 = empty)."""
    pairs = data.train_prompts()
    return [p for p, _ in pairs] + [""], np.array([d for _, d in pairs] + [-1])


def _ema_update(ema: dict, model_params: dict, decay: float) -> None:
    """ema = decay * ema + (1 - decay) * p (hand-written, not diffusers' EMAModel: see the note above _lr)."""
    with torch.no_grad():
        for k, p in model_params.items():
            ema[k].mul_(decay).add_(p.detach(), alpha=1 - decay)


def train_text_unet(cfg: TrainConfig, vae, ckpt_dir: Path, run: _Run | None = None, log=logger.info):
    from diffusers import DDPMScheduler

    from mobilesd.tokenizer import load_clip_tokenizer, tokenize

    torch.manual_seed(cfg.seed * 1000 + 3)
    text_encoder, unet = build_text_encoder(), build_unet()
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + 33)
    noise_sched = DDPMScheduler.from_config(scheduler_config())
    # min-SNR weighting (Hang et al. 2023), hand-written rather than diffusers' compute_snr: see the note above _lr
    snr = noise_sched.alphas_cumprod / (1 - noise_sched.alphas_cumprod)
    weight = (snr.clamp(max=cfg.min_snr_gamma) / snr) if cfg.min_snr_gamma > 0 else torch.ones_like(snr)

    x_train, y_train = data.load_split("train")
    lat_mean, lat_std = encode_posterior(vae, x_train)
    sf = vae.config.scaling_factor
    prompts, prompt_digit = prompt_table()
    ids = torch.from_numpy(tokenize(load_clip_tokenizer(), prompts)).long()
    empty_row = len(prompts) - 1
    # rows_of[d, j]: row of the prompt table holding digit d in the j-th training template
    rows_of = torch.from_numpy(np.stack([np.flatnonzero(prompt_digit == d) for d in range(10)]))
    y_train = torch.from_numpy(y_train)

    params = {f"te.{k}": p for k, p in text_encoder.named_parameters()}
    params.update({f"unet.{k}": p for k, p in unet.named_parameters()})
    ema = {k: p.detach().clone() for k, p in params.items()}
    opt = torch.optim.AdamW(list(params.values()), lr=cfg.unet_lr, weight_decay=0.0)
    start, losses = 0, []

    ckpt_path = ckpt_dir / "text_unet_last.pt"
    if ckpt_path.exists():
        state = torch.load(ckpt_path, weights_only=True)
        text_encoder.load_state_dict(state["text_encoder"])
        unet.load_state_dict(state["unet"])
        for k in ema:
            ema[k].copy_(state["ema"][k])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        start, losses = int(state["step"]), list(state["losses"])
        log(f"text+unet: resuming at step {start}")

    text_encoder.train()
    unet.train()
    bar = tqdm(range(start, cfg.unet_steps), desc="text+unet", initial=start, total=cfg.unet_steps,
               dynamic_ncols=True)
    avg = losses[-1] if losses else None
    clock = _Clock()
    for step in bar:
        _set_lr(opt, _lr(step, cfg.unet_steps, cfg.unet_lr, cfg.warmup))
        b = cfg.unet_batch
        idx = torch.randint(len(y_train), (b,), generator=gen)
        z0 = (lat_mean[idx] + lat_std[idx] * torch.randn(lat_mean[idx].shape, generator=gen)) * sf
        noise = torch.randn(z0.shape, generator=gen)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (b,), generator=gen)
        zt = noise_sched.add_noise(z0, noise, t)
        row = rows_of[y_train[idx], torch.randint(rows_of.shape[1], (b,), generator=gen)]
        drop = torch.rand(b, generator=gen) < cfg.cond_drop
        row = torch.where(drop, torch.full_like(row, empty_row), row)
        # encode each distinct prompt once per step, then gather
        hidden = text_encoder(ids).last_hidden_state[row]
        pred = unet(zt, t, encoder_hidden_states=hidden).sample
        loss = (weight[t] * (pred - noise).pow(2).mean((1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        opt.step()
        _ema_update(ema, params, min(cfg.ema_decay, (1 + step) / (10 + step)))
        avg = loss.item() if avg is None else 0.98 * avg + 0.02 * loss.item()
        if step % 10 == 0 or step == cfg.unet_steps - 1:
            bar.set_postfix(loss=f"{avg:.4f}")
        if step % 100 == 99:
            losses.append(round(avg, 5))
        last = step == cfg.unet_steps - 1
        if (step + 1) % cfg.checkpoint_every == 0 or last:
            tmp = ckpt_path.with_suffix(".tmp")
            torch.save(dict(text_encoder=text_encoder.state_dict(), unet=unet.state_dict(), ema=ema,
                            opt=opt.state_dict(), gen=gen.get_state(), step=step + 1, losses=losses), tmp)
            tmp.replace(ckpt_path)
            if run is not None:
                run.add_time("text_unet", clock)
    # the EMA weights are the model
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(ema[k])
    text_encoder.eval()
    unet.eval()
    return text_encoder, unet, dict(final_loss=avg, loss_every_100_steps=losses)


# ---------------------------------------------------------------- the whole run

def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


OTHER_SEEDS = ([4, 5, 6, 7], [8, 9, 10, 11])


def evaluate_and_write_card(model_dir: str | Path, log=logger.info) -> dict:
    """Evaluate a trained model folder with `mobilesd eval`'s defaults (so that running it on the asset
    reproduces the card), measure the sampling noise with other seeds, and write metrics.json,
    samples.png and README.md. Needs the folder's training.json."""
    from mobilesd.tiny import metrics
    from mobilesd.tiny.card import write_model_card

    model_dir = Path(model_dir)
    training = json.loads((model_dir / "training.json").read_text())
    clock = _Clock()
    clf = load_classifier(model_dir / CLASSIFIER_SUBDIR)
    pipe = metrics.load_fp_pipeline(model_dir)
    settings = metrics.EvalSettings()
    full = metrics.evaluate([metrics.pipeline_generator(pipe, "fp32", source=".")], clf, settings, log)
    metrics.save_grid(full["images"]["fp32"], full["digits"], model_dir / "samples.png")
    result = metrics.strip_images(full)
    result["other_seeds"] = []
    for seeds in OTHER_SEEDS:
        s = dataclasses.replace(settings, seeds=seeds)
        row = metrics.evaluate([metrics.pipeline_generator(pipe)], clf, s, log, include_real=False)["rows"][0]
        result["other_seeds"].append(dict(seeds=seeds, prompt_accuracy=row["prompt_accuracy"], fid=row["fid"]))
    training["eval_seconds"] = round(clock.lap()[0], 1)
    (model_dir / "training.json").write_text(json.dumps(training, indent=2) + "\n")
    (model_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    write_model_card(model_dir, training, result)
    return result


def command_line(cfg: TrainConfig, out: str = "assets/tiny-digits-sd") -> str:
    """The command that reproduces ``cfg`` (options left at their defaults are omitted)."""
    d = TrainConfig()
    flags = {"threads": "--threads", "vae_steps": "--vae-steps", "clf_steps": "--classifier-steps",
             "unet_steps": "--unet-steps"}
    extra = "".join(f" {flag} {getattr(cfg, k)}" for k, flag in flags.items() if getattr(cfg, k) != getattr(d, k))
    return f"mobilesd train-tiny --out {out} --seed {cfg.seed}{extra} --force"


def train(out: str | Path, cfg: TrainConfig | None = None, resume: bool = False, force: bool = False,
          evaluate: bool = True, log=logger.info) -> Path:
    """Train every phase into ``<out>.partial/``, evaluate, write the model card, rename to ``out``."""
    from safetensors.torch import load_file, save_file

    cfg = cfg or TrainConfig()
    torch.set_num_threads(cfg.threads)
    out = Path(out)
    run = _Run(out, cfg, resume, force)
    ck = run.ckpt

    if not run.done("vae"):
        clock = _Clock()
        vae, info = train_vae(cfg, log)
        vae.save_pretrained(str(ck / "vae"), safe_serialization=True)
        run.finish("vae", clock, **info)
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(ck / "vae")).eval()

    if not run.done("classifier"):
        clock = _Clock()
        clf, info = train_classifier(cfg, log)
        clf.save(ck / "classifier")
        run.finish("classifier", clock, **info)
    clf = load_classifier(ck / "classifier")

    if not run.done("text_unet"):
        te, unet, info = train_text_unet(cfg, vae, ck, run, log)
        save_file({k: v.contiguous() for k, v in te.state_dict().items()}, str(ck / "text_encoder.safetensors"))
        save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, str(ck / "unet.safetensors"))
        run.state["phases"].setdefault("text_unet", {})
        run.state["phases"]["text_unet"].update(info, done=True)
        run.save_state()
        (ck / "text_unet_last.pt").unlink(missing_ok=True)
    te, unet = build_text_encoder(), build_unet()
    te.load_state_dict(load_file(str(ck / "text_encoder.safetensors")))
    unet.load_state_dict(load_file(str(ck / "unet.safetensors")))

    model_dir = run.work / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    save_pipeline(model_dir, te.eval(), unet.eval(), vae)
    clf.save(model_dir / CLASSIFIER_SUBDIR)
    training = dict(
        command=command_line(cfg),
        config=dataclasses.asdict(cfg),
        phases=run.state["phases"],
        total_seconds=round(sum(p.get("seconds", 0) for p in run.state["phases"].values()), 1),
        total_cpu_seconds=round(sum(p.get("cpu_seconds", 0) for p in run.state["phases"].values()), 1),
        machine=dict(python=platform.python_version(), torch=torch.__version__, threads=cfg.threads,
                     processor=_cpu_name(), cores=os.cpu_count()),
    )
    (model_dir / "training.json").write_text(json.dumps(training, indent=2) + "\n")

    if evaluate:
        evaluate_and_write_card(model_dir, log)

    if out.exists():
        shutil.rmtree(out)
    model_dir.rename(out)
    shutil.rmtree(run.work)
    log(f"wrote {out}")
    return out
