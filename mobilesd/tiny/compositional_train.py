"""Training of the tiny compositional SD (assets/tiny-compositional-sd): VAE, attribute classifier, then text
encoder + UNet, on pictures rendered from the digits data (mobilesd.tiny.compositional).

    .venv/bin/python -m mobilesd.tiny.compositional_train --out assets/tiny-compositional-sd [--resume]

The same machinery as the digits model (mobilesd.tiny.train): each phase seeds its own generators, the run is
assembled in ``<out>.partial/`` with a checkpoint every ``checkpoint_every`` UNet steps (``--resume`` continues
bit-identically on one thread) and renamed to ``<out>`` when complete. Differences: pictures are rendered on the
fly (VAE, classifier) or from a fixed pool of rendered training pictures whose latents are encoded once
(UNet); the text encoder has a third layer (word order carries the binding); prompts are tokenized per batch.
"""

from __future__ import annotations

import argparse
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

from mobilesd.tiny import compositional as comp
from mobilesd.tiny.attribute_classifier import SUBDIR, AttributeClassifier, load_attribute_classifier
from mobilesd.tiny.model import TEXT_CONFIG, UNET_CONFIG, VAE_CONFIG, fp16_roundtrip_, save_pipeline, scheduler_config
from mobilesd.tiny.train import _Clock, _cpu_name, _ema_update, _lr, _Run, _set_lr, encode_posterior

logger = logging.getLogger(__name__)

COMPOSITIONAL_TEXT_CONFIG = dict(TEXT_CONFIG, num_hidden_layers=3)
# VAE factor 2 (32x32 -> 4x16x16), so a large digit is 8x8 latent pixels as in the digits model. The first run
# used the digits model's factor 4: a digit was 2.5 to 4 latent pixels wide, and after 4000 steps the UNet had
# learned size, colours and stroke weight but not which digit to draw (chance level).
COMPOSITIONAL_VAE_CONFIG = dict(VAE_CONFIG, block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                                up_block_types=("UpDecoderBlock2D",) * 2)
# the 16x16 level has no attention (self-attention over 256 latent pixels would double a training step); the
# prompt enters at 8x8 and 4x4 as before, each latent pixel now covering 2x2 image pixels instead of 4x4
COMPOSITIONAL_UNET_CONFIG = dict(
    UNET_CONFIG, sample_size=16,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"))
CALIBRATION_PROMPTS_FILE = "calibration_prompts.txt"


@dataclass
class CompositionalConfig:
    seed: int = 0
    threads: int = 1
    vae_steps: int = 1000
    vae_batch: int = 64
    vae_lr: float = 1e-3
    kl_weight: float = 1e-3
    clf_steps: int = 2000
    clf_batch: int = 128
    clf_lr: float = 2e-3
    pool: int = 16384             # rendered training pictures whose latents the UNet trains on
    unet_steps: int = 4000
    unet_batch: int = 64
    unet_lr: float = 1e-3
    warmup: int = 200
    ema_decay: float = 0.995
    min_snr_gamma: float = 5.0
    cond_drop: float = 0.1
    checkpoint_every: int = 250


def build_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(**COMPOSITIONAL_TEXT_CONFIG))


def build_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**COMPOSITIONAL_UNET_CONFIG)


def build_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(**COMPOSITIONAL_VAE_CONFIG, scaling_factor=1.0)


# ---------------------------------------------------------------- phase 1: VAE

def train_vae(cfg: CompositionalConfig, log=logger.info):
    torch.manual_seed(cfg.seed * 1000 + 1)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + 11)
    pool = comp.DigitPool.of("train")
    vae = build_vae()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    bar = tqdm(range(cfg.vae_steps), desc="vae", dynamic_ncols=True)
    avg = None
    vae.train()
    for step in bar:
        _set_lr(opt, _lr(step, cfg.vae_steps, cfg.vae_lr, 100))
        x = comp.render(comp.random_labels(cfg.vae_batch, gen), pool, gen)
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
    fp16_roundtrip_(vae)
    g = torch.Generator().manual_seed(cfg.seed * 1000 + 12)
    x_train = comp.render(comp.random_labels(1024, g), pool, g)
    mean, std = encode_posterior(vae, x_train)
    sf = 1.0 / float(mean.std())
    vae.register_to_config(scaling_factor=sf)
    x_held = comp.render(comp.random_labels(512, g), comp.DigitPool.of("heldout"), g)
    with torch.no_grad():
        rec = vae.decode(vae.encode(x_held).latent_dist.mean).sample
    mse = F.mse_loss(rec.clamp(-1, 1), x_held).item() / 4
    info = dict(scaling_factor=round(sf, 5), posterior_std_mean=round(float(std.mean()), 4),
                heldout_recon_psnr_db=round(10 * math.log10(1 / mse), 2))
    log(f"vae: scaling_factor {sf:.4f}, held-out reconstruction PSNR {info['heldout_recon_psnr_db']} dB")
    return vae, info


# ---------------------------------------------------------------- phase 2: attribute classifier

def _classifier_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Grey pictures as a generator makes them: a random light blur (VAE-like softness), noise, uint8 steps."""
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)
    mix = torch.rand(len(x), 1, 1, 1, generator=gen) * 0.6
    x = (1 - mix) * x + mix * blur
    x = x + 0.05 * torch.randn(x.shape, generator=gen)
    return (((x.clamp(-1, 1) + 1) * 127.5).round() / 127.5) - 1


def train_classifier(cfg: CompositionalConfig, log=logger.info):
    torch.manual_seed(cfg.seed * 1000 + 2)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + 22)
    pool = comp.DigitPool.of("train")
    model = AttributeClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.clf_lr, weight_decay=1e-4)
    bar = tqdm(range(cfg.clf_steps), desc="attribute classifier", dynamic_ncols=True)
    avg = None
    model.train()
    for step in bar:
        _set_lr(opt, _lr(step, cfg.clf_steps, cfg.clf_lr, 50))
        labels = comp.random_labels(cfg.clf_batch, gen)
        x = _classifier_augment(AttributeClassifier.prepare(comp.render(labels, pool, gen)), gen)
        y = torch.from_numpy(labels)
        loss = sum(F.cross_entropy(lg, y[:, i]) for i, lg in enumerate(model(x)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        avg = loss.item() if avg is None else 0.98 * avg + 0.02 * loss.item()
        if step % 10 == 0 or step == cfg.clf_steps - 1:
            bar.set_postfix(loss=f"{avg:.4f}")
    model.eval()
    g = torch.Generator().manual_seed(cfg.seed * 1000 + 23)
    labels = comp.random_labels(2000, g)
    from mobilesd.tiny import data

    pred, _ = model.predict(data.to_uint8(comp.render(labels, comp.DigitPool.of("heldout"), g)))
    acc = {name: round(float((pred[:, i] == labels[:, i]).mean()), 4) for i, name in enumerate(comp.ATTRIBUTE_NAMES)}
    acc["all"] = round(float((pred == labels).all(1).mean()), 4)
    log(f"attribute classifier: held-out accuracy {acc}")
    return model, dict(heldout_accuracy=acc, heldout_images=len(labels))


# ---------------------------------------------------------------- phase 3: text encoder + UNet

def build_pool(cfg: CompositionalConfig, vae) -> dict:
    """The UNet's training pictures: labels and posterior (mean, std) of each rendered picture."""
    g = torch.Generator().manual_seed(cfg.seed * 1000 + 31)
    pool = comp.DigitPool.of("train")
    labels = comp.random_labels(cfg.pool, g)
    means, stds = [], []
    for i in tqdm(range(0, cfg.pool, 512), desc="latent pool", dynamic_ncols=True):
        m, s = encode_posterior(vae, comp.render(labels[i : i + 512], pool, g))
        means.append(m)
        stds.append(s)
    return dict(labels=torch.from_numpy(labels), mean=torch.cat(means), std=torch.cat(stds))


def train_text_unet(cfg: CompositionalConfig, vae, ckpt_dir: Path, run: _Run | None = None, log=logger.info):
    from diffusers import DDPMScheduler

    from mobilesd.tokenizer import load_clip_tokenizer, tokenize

    pool_path = ckpt_dir / "latent_pool.pt"
    if pool_path.exists():
        pool = torch.load(pool_path, weights_only=True)
    else:
        pool = build_pool(cfg, vae)
        torch.save(pool, pool_path)
    torch.manual_seed(cfg.seed * 1000 + 3)
    text_encoder, unet = build_text_encoder(), build_unet()
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + 33)
    noise_sched = DDPMScheduler.from_config(scheduler_config())
    snr = noise_sched.alphas_cumprod / (1 - noise_sched.alphas_cumprod)
    weight = (snr.clamp(max=cfg.min_snr_gamma) / snr) if cfg.min_snr_gamma > 0 else torch.ones_like(snr)
    sf = vae.config.scaling_factor
    tok = load_clip_tokenizer()

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
    n_pool = len(pool["labels"])
    for step in bar:
        _set_lr(opt, _lr(step, cfg.unet_steps, cfg.unet_lr, cfg.warmup))
        b = cfg.unet_batch
        idx = torch.randint(n_pool, (b,), generator=gen)
        mean, std = pool["mean"][idx], pool["std"][idx]
        z0 = (mean + std * torch.randn(mean.shape, generator=gen)) * sf
        noise = torch.randn(z0.shape, generator=gen)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (b,), generator=gen)
        zt = noise_sched.add_noise(z0, noise, t)
        prompts = comp.random_prompts(pool["labels"][idx].numpy(), gen)
        drop = torch.rand(b, generator=gen) < cfg.cond_drop
        prompts = ["" if drop[i] else p for i, p in enumerate(prompts)]
        ids = torch.from_numpy(tokenize(tok, prompts)).long()
        hidden = text_encoder(ids).last_hidden_state
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
        if (step + 1) % cfg.checkpoint_every == 0 or step == cfg.unet_steps - 1:
            tmp = ckpt_path.with_suffix(".tmp")
            torch.save(dict(text_encoder=text_encoder.state_dict(), unet=unet.state_dict(), ema=ema,
                            opt=opt.state_dict(), gen=gen.get_state(), step=step + 1, losses=losses), tmp)
            tmp.replace(ckpt_path)
            if run is not None:
                run.add_time("text_unet", clock)
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(ema[k])
    text_encoder.eval()
    unet.eval()
    return text_encoder, unet, dict(final_loss=avg, loss_every_100_steps=losses)


# ---------------------------------------------------------------- the whole run

def command_line(cfg: CompositionalConfig, out: str) -> str:
    d = CompositionalConfig()
    flags = {"seed": "--seed", "threads": "--threads", "vae_steps": "--vae-steps", "clf_steps": "--classifier-steps",
             "unet_steps": "--unet-steps", "unet_batch": "--unet-batch"}
    extra = "".join(f" {flag} {getattr(cfg, k)}" for k, flag in flags.items() if getattr(cfg, k) != getattr(d, k))
    return f"python -m mobilesd.tiny.compositional_train --out {out}{extra}"


def train(out: str | Path, cfg: CompositionalConfig | None = None, resume: bool = False, force: bool = False,
          evaluate: bool = True, log=logger.info) -> Path:
    from safetensors.torch import load_file, save_file

    cfg = cfg or CompositionalConfig()
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
        clf.save(ck / SUBDIR)
        run.finish("classifier", clock, **info)
    clf = load_attribute_classifier(ck / SUBDIR)

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
    clf.save(model_dir / SUBDIR)
    (model_dir / CALIBRATION_PROMPTS_FILE).write_text("\n".join(comp.calibration_prompts()) + "\n")
    training = dict(
        command=command_line(cfg, str(out)), config=dataclasses.asdict(cfg), phases=run.state["phases"],
        total_seconds=round(sum(p.get("seconds", 0) for p in run.state["phases"].values()), 1),
        total_cpu_seconds=round(sum(p.get("cpu_seconds", 0) for p in run.state["phases"].values()), 1),
        machine=dict(python=platform.python_version(), torch=torch.__version__, threads=cfg.threads,
                     processor=_cpu_name(), cores=os.cpu_count()),
    )
    (model_dir / "training.json").write_text(json.dumps(training, indent=2) + "\n")
    if evaluate:
        from mobilesd.tiny.compositional_card import evaluate_and_write_card

        evaluate_and_write_card(model_dir, log)
    if out.exists():
        shutil.rmtree(out)
    model_dir.rename(out)
    shutil.rmtree(run.work)
    log(f"wrote {out}")
    return out


def main(argv=None) -> int:
    d = CompositionalConfig()
    p = argparse.ArgumentParser(description="train the tiny compositional digits SD (assets/tiny-compositional-sd)")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from OUT.partial/")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation and the model card")
    p.add_argument("--vae-steps", type=int, default=d.vae_steps)
    p.add_argument("--classifier-steps", type=int, default=d.clf_steps)
    p.add_argument("--unet-steps", type=int, default=d.unet_steps)
    p.add_argument("--unet-batch", type=int, default=d.unet_batch)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[compositional] %(message)s")
    cfg = CompositionalConfig(seed=args.seed, threads=args.threads, vae_steps=args.vae_steps,
                              clf_steps=args.classifier_steps, unet_steps=args.unet_steps, unet_batch=args.unet_batch)
    train(args.out, cfg, resume=args.resume, force=args.force, evaluate=not args.no_eval,
          log=lambda m: logging.getLogger("compositional").info(m))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
