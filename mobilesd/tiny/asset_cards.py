"""Model cards (README.md) of the small assets trained on the digits model, written from each training log and
evaluation (so every figure in a card is one that was measured)."""

from __future__ import annotations

from pathlib import Path

from mobilesd.tiny.metrics import render_markdown


def _mmss(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s"


def _kb(n: int) -> str:
    return f"{n / 1e3:.0f} kB" if n < 1e6 else f"{n / 1e6:.2f} MB"


def _row(result: dict, name: str) -> dict:
    return next(r for r in result["rows"] if r["name"] == name)


def _machine(training: dict) -> str:
    m = training["machine"]
    return (f"Python {m['python']}, torch {m['torch']}, {m['threads']} thread{'s' if m['threads'] != 1 else ''}, "
            f"{m['processor']} ({m['cores']} cores, shared with other jobs: wall times are not benchmarks)")


def _files_table(asset: Path) -> str:
    rows = ["| file | size |", "|---|---:|"]
    for f in sorted(asset.rglob("*")):
        if f.is_file():
            rows.append(f"| `{f.relative_to(asset).as_posix()}` | {_kb(f.stat().st_size)} |")
    return "\n".join(rows)


def style_lora_card(asset: Path, training: dict, result: dict) -> str:
    cfg, files, lora = training["config"], training["files"], training["lora"]
    base = _row(result, "base model")
    styled = next(r for r in result["rows"] if r["name"].startswith("bold LoRA"))
    st = result["style"]
    ink = st["ink_fraction"]
    phase = training["phases"]["lora"]
    return f"""# tiny-digits-bold-lora

A style LoRA for the digits model (`assets/tiny-digits-sd`): **bold strokes**. Trained in this repository, so
that LoRA fusion at export (`mobilesd export --lora`) can be checked on a LoRA that visibly does something. The
same adapter is stored in two formats with identical tensors:

* `{files['diffusers']}`: diffusers format (`unet.<module>.lora.down/up.weight`, as diffusers'
  `save_lora_weights` writes it);
* `{files['kohya']}`: kohya-ss / A1111 format (`lora_unet_<module>.lora_down/lora_up.weight` + `.alpha`).

Either gives the same fused weights and the same bundle (the same bundle id):

```bash
mobilesd export --target android --lora assets/tiny-digits-bold-lora/{files['diffusers']} --out bundles/android-bold
mobilesd export --target android --lora assets/tiny-digits-bold-lora/{files['kohya']}:1.0 --out bundles/android-bold-k
mobilesd eval --lora assets/tiny-digits-bold-lora/{files['diffusers']}
```

```python
from diffusers import StableDiffusionPipeline
pipe = StableDiffusionPipeline.from_pretrained("assets/tiny-digits-sd")
pipe.load_lora_weights("assets/tiny-digits-bold-lora", weight_name="{files['diffusers']}")
pipe.fuse_lora()
```

![samples](samples.png)

*Rows: digits 0-9; left: the base model, right: with the LoRA fused (same held-out prompts and seeds,
{result['settings']['steps']} {result['settings']['scheduler']} steps, guidance {result['settings']['guidance']}).*

## What it does, measured

| | base model | with the bold LoRA |
|---|---:|---:|
| ink fraction (pixels darker than mid-grey) | {100 * ink['base model']:.1f}% | **{100 * ink['bold LoRA']:.1f}%** |
| prompt accuracy, held-out phrasings | {100 * base['prompt_accuracy']:.1f}% | {100 * styled['prompt_accuracy']:.1f}% |
| FID-style distance to real (not bold) digits | {base['fid']:.1f} | {styled['fid']:.1f} |

Real held-out digits have {100 * ink['real digits (held-out)']:.1f}% ink, the same digits made bold (the training
target) {100 * ink['real digits made bold']:.1f}%; the classifier reads those bold real digits with
{100 * st['real_bold_accuracy']:.1f}% accuracy. Mean absolute pixel difference between the two models' images
(same prompts and seeds): **{st['mean_abs_difference_vs_base']:.3f}** of the [0, 1] range. The FID-style distance
is to real digits of normal weight, so a bolder model is expected to be further away.

{render_markdown(result)}
## How it was made

```
{training['command']}
```

* Base: `assets/tiny-digits-sd`, frozen (text encoder, VAE, UNet weights).
* Adapter: peft LoRA, rank {lora['rank']}, alpha {lora['alpha']} (scaling 1, so every file format fuses to the same
  weights), on the UNet's {', '.join(lora['targets'])} ({lora['layers']} layers), `lora_B` initialised to zero.
* Data: the train split of the digits (the base model's), ink dilated by {cfg['bold_px']} pixel (3x3 min-filter on
  the 32x32 image), encoded by the base VAE (posterior mean and std, sampled each step); the training prompts,
  {int(100 * cfg['cond_drop'])}% empty (so the empty prompt is bold too and CFG keeps the style).
* Loss: the base model's (epsilon MSE weighted by min(SNR, {cfg['min_snr_gamma']}) / SNR), {cfg['steps']} steps of batch
  {cfg['batch']}, AdamW lr {cfg['lr']} (warm-up {cfg['warmup']}, cosine to 0.1x). Final loss {phase['final_loss']}.
* Time: {_mmss(phase['cpu_seconds'])} of CPU ({_mmss(phase['seconds'])} wall); evaluation {training.get('eval_seconds', 0):.0f} s.
  {_machine(training)}.
* Checkpoints every {cfg['checkpoint_every']} steps in `OUT.partial/`; `--resume` continues an interrupted run
  bit-identically (the generator state is checkpointed). Same seed, thread count and torch build give the same
  weights.

{_files_table(asset)}
"""


def _fid_pair(by: dict, n: int):
    """(base FID, LoRA FID) at n LCM steps without CFG, or None."""
    s = "s" if n > 1 else ""
    b, lo = by.get(f"full model, {n} LCM step{s}, no CFG"), by.get(f"LCM LoRA, {n} step{s}, no CFG")
    return (b["fid"], lo["fid"]) if b and lo else None


def lcm_lora_card(asset: Path, training: dict, result: dict) -> str:
    cfg, files, lora = training["config"], training["files"], training["lora"]
    acc = result["acceptance"]
    phase = training["phases"]["lora"]
    rows = ["| configuration | UNet calls per image | prompt accuracy | FID-style |", "|---|---:|---:|---:|"]
    for r in result["rows"]:
        sm = r.get("sampling")
        if not sm:
            continue
        calls = sm["steps"] * (2 if sm["guidance"] > 1 else 1)
        rows.append(f"| {r['name']} | {calls} | {100 * r['prompt_accuracy']:.1f}% | {r['fid']:.1f} |")
    by = {r["name"]: r for r in result["rows"]}
    control = []
    for n in (4, 2, 1):
        base_row = by.get(f"full model, {n} LCM step{'s' if n > 1 else ''}, no CFG")
        lora_row = by.get(f"LCM LoRA, {n} step{'s' if n > 1 else ''}, no CFG")
        if base_row and lora_row:
            control.append(f"{n} step{'s' if n > 1 else ''}: base {100 * base_row['prompt_accuracy']:.1f}% / FID-style "
                           f"{base_row['fid']:.1f}, LoRA {100 * lora_row['prompt_accuracy']:.1f}% / {lora_row['fid']:.1f}")
    better = [n for n in (4, 2, 1) if _fid_pair(by, n) and _fid_pair(by, n)[1] < _fid_pair(by, n)[0]]
    worse = [n for n in (4, 2, 1) if _fid_pair(by, n) and _fid_pair(by, n)[1] >= _fid_pair(by, n)[0]]
    steps_text = lambda ns: " and ".join(f"{n} step{'s' if n > 1 else ''}" for n in ns)  # noqa: E731
    control_text = ("The control rows run the same LCM scheduler without CFG on the base model (no LoRA): "
                    + "; ".join(control) + ". The digits task is easy enough that the undistilled model with LCM's "
                    "x0-predicting steps still draws the right digit, so prompt accuracy cannot tell the two apart; "
                    "the FID-style distance can, read with its sampling noise (the base model's card: about 150-190 "
                    "between seed sets of 240 images). "
                    + (f"The LoRA has the lower distance at {steps_text(better)}" if better else "")
                    + (f"{' and the higher at ' if better else 'The LoRA has the higher distance at '}"
                       f"{steps_text(worse)}" if worse else "")
                    + ": on this model the distillation pays off at the fewest steps." if control else "")
    return f"""# tiny-digits-lcm-lora

A few-step student of the digits model (`assets/tiny-digits-sd`): latent consistency distillation as a LoRA
(LCM-LoRA), trained in this repository. It samples in **2-4 steps of the LCM scheduler without
classifier-free guidance**: one batch-1 UNet call per step instead of the full model's 20 steps x 2 (CFG).

| | full model | this LoRA |
|---|---:|---:|
| setting | 20 DPM steps, CFG 3 (40 UNet evaluations) | **4 LCM steps, no CFG (4 UNet evaluations)** |
| prompt accuracy, held-out phrasings | {100 * acc['reference_accuracy']:.1f}% | **{100 * acc['student_accuracy']:.1f}%** |

({acc['points_below_reference']:.1f} points below the full model: {"within" if acc['within_5_points'] else "NOT within"} the
5-point bound.) Every configuration measured (same prompts and seeds: {result['settings']['n_prompts']} held-out
phrasings x seeds {result['settings']['seeds']}):

{chr(10).join(rows)}

{control_text}

![samples](samples.png)

*Rows: digits 0-9; left 4 columns: full model, 20 DPM steps, CFG 3; right 4: this LoRA, 4 LCM steps, no CFG (same
prompts and seeds).*

```bash
mobilesd export --target android --lora assets/tiny-digits-lcm-lora/{files['peft']} --cfg none \\
    --default-scheduler lcm --out bundles/android-lcm
mobilesd generate --bundle bundles/android-lcm --scheduler lcm --steps 4 --prompt "a handwritten digit seven"
mobilesd eval --lora assets/tiny-digits-lcm-lora/{files['peft']} --candidate-steps 4 --candidate-guidance 1 \\
    --candidate-scheduler lcm
```

```python
from diffusers import LCMScheduler, StableDiffusionPipeline
pipe = StableDiffusionPipeline.from_pretrained("assets/tiny-digits-sd")
pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
pipe.load_lora_weights("assets/tiny-digits-lcm-lora", weight_name="{files['peft']}")
pipe.fuse_lora()
image = pipe("a handwritten number seven", num_inference_steps=4, guidance_scale=1.0).images[0]
```

{render_markdown(result)}
## How it was made

```
{training['command']}
```

Latent consistency distillation (Luo et al. 2023, "LCM-LoRA"), following diffusers'
`train_lcm_distill_lora_sd_wds.py`:

* Teacher: the digits model itself (the UNet with the LoRA disabled), guidance {cfg['guidance']} folded into the
  teacher's DDIM step (x0 and epsilon both guided), so the student runs without CFG.
* Solver: skipping-step DDIM on {cfg['ddim_timesteps']} of the 1000 training timesteps (19, 39, ..., 999), the grid
  diffusers' `LCMScheduler` samples from (`original_inference_steps` {cfg['ddim_timesteps']}).
* Student: f(x, t) = c_skip(t) x + c_out(t) x0(x, t), boundary scalings of `LCMScheduler` (sigma_data 0.5,
  timestep_scaling {cfg['timestep_scaling']}); target f(x_prev, t - 20) from the same student without gradient
  (no EMA, as LCM-LoRA); pseudo-Huber loss, c = {cfg['huber_c']}.
* Data: the base model's training data (train-split digits through its VAE, its training phrasings).
* Adapter: peft LoRA rank {lora['rank']}, alpha {lora['alpha']}, on {lora['layers']} layers (every linear and conv layer
  of the UNet's blocks: {', '.join(lora['targets'])}), saved in peft format (`{files['peft']}`: keys
  `unet.<module>.lora_A/lora_B.weight`).
* {cfg['steps']} steps of batch {cfg['batch']}, AdamW lr {cfg['lr']} (warm-up {cfg['warmup']}, cosine to 0.1x). Final
  loss {phase['final_loss']}.
* Time: {_mmss(phase['cpu_seconds'])} of CPU ({_mmss(phase['seconds'])} wall); evaluation {training.get('eval_seconds', 0):.0f} s.
  {_machine(training)}.
* Checkpoints every {cfg['checkpoint_every']} steps in `OUT.partial/`; `--resume` continues an interrupted run
  bit-identically.

{_files_table(asset)}
"""


def tiny_decoder_card(asset: Path, training: dict, result: dict) -> str:
    cfg = training["config"]
    dec = result["decoder"]
    full, tiny = dec["full"], dec["tiny"]
    ref = _row(result, "full decoder")
    t = _row(result, "tiny decoder")
    phase = training["phases"]["tiny_decoder"]
    return f"""# tiny-digits-taesd

A tiny decoder for the digits model (`assets/tiny-digits-sd`): a diffusers `AutoencoderTiny` (the TAESD
architecture: plain 3x3 convs, ReLU, nearest upsampling; no GroupNorm, no attention) sized for its 4x8x8
latents, distilled in this repository from the model's own VAE. Export it in place of the full decoder:

```bash
mobilesd export --target android --vae-decoder tiny=assets/tiny-digits-taesd --out bundles/android-taesd
mobilesd eval --tiny-decoder assets/tiny-digits-taesd
```

TAESD's conventions, kept: it decodes the sampler's latent **as it is** (its `scaling_factor` is 1.0; SD's
{result.get('sd_scaling_factor', 'scaling factor')} is not divided out, the decoder learned it), clamps it with
tanh(x / 3) * 3, and diffusers maps its output to [-1, 1]. The exported graph keeps the bundle's decoder contract
(latent in as the sampler makes it, image [1, H, W, 3] in [0, 1] out).

| | full VAE decoder | tiny decoder |
|---|---:|---:|
| parameters | {full['params']:,} | **{tiny['params']:,}** |
| weights at fp16 | {_kb(full['weight_bytes_fp16'])} | **{_kb(tiny['weight_bytes_fp16'])}** |
| FLOPs per image ({dec['latent'][1]}x{dec['latent'][2]} latent -> {dec['image'][0]}x{dec['image'][1]}) | {full['flops'] / 1e6:.1f} M | **{tiny['flops'] / 1e6:.1f} M** |
| PSNR vs the full decoder, generated latents (uint8 images) | ref | **{t['psnr_db']:.2f} dB** (worst image {t['min_image_psnr_db']:.2f} dB) |
| PSNR vs the full decoder, held-out real digits' latents | ref | **{dec['psnr_vs_full_decoder_heldout_real_latents_db']:.2f} dB** |
| PSNR vs the real held-out digits | {dec['full_decoder_psnr_vs_real_db']:.2f} dB | {dec['tiny_decoder_psnr_vs_real_db']:.2f} dB |
| prompt accuracy (same latents) | {100 * ref['prompt_accuracy']:.1f}% | {100 * t['prompt_accuracy']:.1f}% |
| FID-style distance (same latents) | {ref['fid']:.1f} | {t['fid']:.1f} |
| label agreement with the full decoder | ref | {100 * t['label_agreement']:.1f}% |

Generated latents: `mobilesd eval`'s prompts and seeds (held-out phrasings x seeds {result['settings']['seeds']},
{result['settings']['steps']} {result['settings']['scheduler']} steps, guidance {result['settings']['guidance']}),
decoded by both; none of them was seen in training.

![samples](samples.png)

*Rows: digits 0-9; left 4 columns: the full decoder, right 4: the tiny decoder, on the same latents.*

{render_markdown(result)}
## How it was made

```
{training['command']}
```

* Architecture: `AutoencoderTiny(latent_channels=4, decoder_block_out_channels={(cfg['channels'],) * 3},
  num_decoder_blocks=({cfg['decoder_blocks']}), encoder_block_out_channels={(cfg['channels'],) * 3},
  num_encoder_blocks=({cfg['encoder_blocks']}), upsampling_scaling_factor=2, scaling_factor=1.0)`: two 2x
  upsamplings, factor 4 like the digits VAE.
* Decoder: L1 + L2 to the full decoder's image (clamped to [-1, 1]) on latents drawn each step:
  {100 - int(100 * cfg['generated_share'])}% posterior samples of the train-split digits (x scaling factor),
  {int(100 * cfg['generated_share'])}% from {cfg['generated']} latents the digits model generated from the training
  phrasings (20 DPM steps, half at guidance 3, half at 7.5; seeds from 100000, far from every evaluation's).
* Encoder (distilled as well, so the folder is a complete AutoencoderTiny; only the decoder is exported): L2 to
  the full encoder's posterior mean x scaling factor, on jittered train digits.
* {cfg['steps']} steps of batch {cfg['batch']}, AdamW lr {cfg['lr']} (warm-up {cfg['warmup']}, cosine to 0.1x). Final loss
  {phase['final_loss']}.
* Time: {_mmss(phase['cpu_seconds'])} of CPU ({_mmss(phase['seconds'])} wall); evaluation {training.get('eval_seconds', 0):.0f} s.
  {_machine(training)}.{(' ' + training['note']) if training.get('note') else ''}
* Checkpoints every {cfg['checkpoint_every']} steps in `OUT.partial/`; `--resume` continues bit-identically.

{_files_table(asset)}
"""
