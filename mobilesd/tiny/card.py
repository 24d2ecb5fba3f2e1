"""The model card (README.md) of the tiny digits model, written from the training log and its evaluation."""

from __future__ import annotations

import math
from pathlib import Path

from mobilesd.tiny import data
from mobilesd.tiny.metrics import render_markdown
from mobilesd.tiny.model import TEXT_CONFIG, UNET_CONFIG, VAE_CONFIG

# How far a re-run may land from the card's figures (see "Reproducing").
TOLERANCE_EVAL = dict(prompt_accuracy=0.005, fid_relative=0.02)
TOLERANCE_RETRAIN = dict(prompt_accuracy=0.05, fid_relative=0.5, classifier_accuracy=0.015)


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _params(path: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


def _feature_dim(d: Path) -> int:
    import json

    return json.loads((d / "classifier" / "config.json").read_text())["features"]


def _other_seeds(result: dict, fp: dict) -> str:
    runs = [(fp["fid"], fp["prompt_accuracy"], result["settings"]["seeds"])]
    runs += [(o["fid"], o["prompt_accuracy"], o["seeds"]) for o in result.get("other_seeds", [])]
    return "; ".join(f"seeds {seeds[0]}-{seeds[-1]}: FID-style {fid:.1f}, accuracy {100 * acc:.1f}%"
                     for fid, acc, seeds in runs)


def _threads(training: dict) -> str:
    n = training["machine"]["threads"]
    return f"{n} thread" + ("s" if n != 1 else "")


def _mmss(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s"


def write_model_card(model_dir: str | Path, training: dict, result: dict) -> Path:
    d = Path(model_dir)
    phases = training["phases"]
    cfg = training["config"]
    fp = next(r for r in result["rows"] if r.get("reference"))
    real = next((r for r in result["rows"] if r["name"].startswith("real")), None)
    s = result["settings"]
    sizes = {name: _size(d / name) for name in ("text_encoder", "tokenizer", "unet", "vae", "scheduler",
                                                 "classifier")}
    params = {
        "text_encoder": _params(d / "text_encoder" / "model.safetensors"),
        "unet": _params(d / "unet" / "diffusion_pytorch_model.safetensors"),
        "vae": _params(d / "vae" / "diffusion_pytorch_model.safetensors"),
        "classifier": _params(d / "classifier" / "model.safetensors"),
    }
    total = _size(d)
    mb = lambda b: f"{b / 1e6:.2f} MB"  # noqa: E731
    held = ", ".join(f'"{data.prompt(t, 7)}"' for t in data.HELDOUT_TEMPLATES)
    train_t = ", ".join(f'"{data.prompt(t, 7)}"' for t in data.TRAIN_TEMPLATES)
    clf_acc = phases["classifier"]["heldout_accuracy"]

    text = f"""# tiny-digits-sd

A small Stable Diffusion trained in this repository on scikit-learn's handwritten digits, so that
quantization and export can be measured on a model that has learned something. Same three parts and
the same diffusers classes as SD 1.5: `CLIPTextModel`, `UNet2DConditionModel` (cross-attention on the
text encoder's hidden states), `AutoencoderKL`, SD's scheduler config and the real CLIP BPE tokenizer.

```python
from diffusers import StableDiffusionPipeline
pipe = StableDiffusionPipeline.from_pretrained("assets/tiny-digits-sd")
image = pipe("a handwritten number seven", num_inference_steps={s['steps']},
             guidance_scale={s['guidance']}).images[0]  # 32x32 PIL image
```

![samples](samples.png)

*Rows: digits 0-9; columns: the first {8 // len(s['seeds'])} held-out phrasings of each digit x seeds
{s['seeds'][0]}-{s['seeds'][-1]} ({s['steps']} steps, {s['scheduler']}, guidance {s['guidance']}).*

## Figures

| | |
|---|---|
| prompt accuracy, held-out phrasings | **{100 * fp['prompt_accuracy']:.1f}%** ({fp['images']} images, chance 10%) |
| FID-style distance (classifier features) | **{fp['fid']:.3f}** (held-out real digits: {real['fid']:.3f}) |
| digit classifier, held-out real digits | **{100 * clf_acc:.2f}%** ({phases['classifier']['heldout_images']} images) |
| VAE reconstruction PSNR, held-out digits | {phases['vae']['heldout_recon_psnr_db']} dB |
| training time | {_mmss(training['total_cpu_seconds'])} of CPU time, {_threads(training)} \
({_mmss(training['total_seconds'])} wall on a shared machine) |
| size on disk | {mb(total)} |

Evaluation (`mobilesd eval`, whose defaults these are): {s['n_prompts']} prompts (every held-out
phrasing x digit) x seeds {s['seeds']}, {s['steps']} steps of {s['scheduler']}, guidance {s['guidance']}.
Prompt accuracy: the classifier's label of each image equals the prompted digit. The FID-style
distance is the Fréchet distance between the classifier's {_feature_dim(d)}-d penultimate features of the
generated images and of the {s['fid_reference_images']} real train-split digits. Like FID it shrinks with more
images (the held-out real row uses {real['images'] if real else '-'}), so compare rows of equal size only; its
sampling noise at {s['n_images']} images: {_other_seeds(result, fp)}.
Quantized models and bundles are compared with the same seeds (paired), so their fidelity columns
(PSNR, MAE, label agreement vs this model) do not carry that noise.

{render_markdown(result)}
## How it was made

```
{training['command']}
```

* Data: `sklearn.datasets.load_digits` (1,797 8x8 digits), upsampled bicubically to 32x32, dark ink on
  white, replicated to RGB, in [-1, 1]. One stratified split (80% train, 20% held out, split seed
  {data.SPLIT_SEED}) for every phase; the held-out real digits are seen by nothing during training.
* Prompts: {len(data.TRAIN_TEMPLATES)} training templates ({train_t}) and {len(data.HELDOUT_TEMPLATES)}
  held-out templates ({held}), with number words and numerals. Every held-out token occurs in training,
  in other combinations. {int(100 * cfg['cond_drop'])}% of training prompts are empty, for
  classifier-free guidance.
* Phase 1, VAE ({_mmss(phases['vae']['cpu_seconds'])} CPU): `AutoencoderKL`, blocks {list(VAE_CONFIG['block_out_channels'])},
  factor 4 (32x32x3 -> 4x8x8), {params['vae']:,} parameters; L1 + L2 + {cfg['kl_weight']} x KL,
  {cfg['vae_steps']} steps of batch {cfg['vae_batch']}, light affine jitter. `scaling_factor` =
  1 / std of the train latents = {phases['vae']['scaling_factor']}.
* Phase 2, classifier ({_mmss(phases['classifier']['cpu_seconds'])} CPU): a 3-conv CNN on grayscale 32x32,
  {params['classifier']:,} parameters, {cfg['clf_steps']} steps of batch {cfg['clf_batch']} with affine jitter and noise;
  in `classifier/` (safetensors + config.json, loaded by `mobilesd.tiny.classifier.load_classifier`).
* Phase 3, text encoder + UNet together ({_mmss(phases['text_unet']['cpu_seconds'])} CPU): `CLIPTextModel`
  (hidden {TEXT_CONFIG['hidden_size']}, {TEXT_CONFIG['num_hidden_layers']} layers, {TEXT_CONFIG['num_attention_heads']} heads,
  77 positions, vocabulary 49,408; {params['text_encoder']:,} parameters, most of them the token
  embedding) and `UNet2DConditionModel` (blocks {list(UNET_CONFIG['block_out_channels'])},
  {', '.join(UNET_CONFIG['down_block_types'])} / {UNET_CONFIG['mid_block_type']}, {params['unet']:,} parameters),
  both from scratch, epsilon prediction on SD's schedule (scaled_linear 0.00085-0.012, 1000 steps),
  loss weighted by min(SNR, {cfg['min_snr_gamma']}) / SNR,
  {cfg['unet_steps']} steps of batch {cfg['unet_batch']}, AdamW lr {cfg['unet_lr']} (warm-up, cosine), EMA {cfg['ema_decay']}
  (the EMA weights are saved). Final loss {phases['text_unet']['final_loss']:.4f}.
* Weights are stored as fp16 safetensors and load as fp32 (diffusers upcasts; the text encoder's
  `config.json` says `"dtype": "float32"`). Every figure here is measured on the stored weights.
  Sizes: text encoder {mb(sizes['text_encoder'])}, UNet {mb(sizes['unet'])}, VAE {mb(sizes['vae'])},
  tokenizer {mb(sizes['tokenizer'])}, classifier {mb(sizes['classifier'])}.
* Machine: Python {training['machine']['python']}, torch {training['machine']['torch']},
  {_threads(training)}, {training['machine']['processor']} ({training['machine']['cores']} cores).
  `training.json` holds the full log, `metrics.json` the evaluation.

## Reproducing

* `mobilesd eval` (its defaults are this model and the settings above) regenerates the table. On the
  machine that trained the model the figures come out identical. On other CPUs float rounding may
  move them slightly; `pytest -m slow tests/test_tiny_model.py` accepts ±{100 * TOLERANCE_EVAL['prompt_accuracy']:.1f}
  points of prompt accuracy and ±{100 * TOLERANCE_EVAL['fid_relative']:.0f}% of FID-style distance.
* `{training['command'].replace(' --force', '')}` retrains it. Training is deterministic: each phase
  seeds its own generator, and it runs on one thread by default, so the result does not depend on the
  number of cores. The same seed and torch build on the same kind of CPU give byte-identical weights.
  This was checked two ways: two full-length runs gave identical VAE and classifier weights, and the
  slow test trains twice, plus once interrupted and resumed, and compares every weight file. On that
  setup a fresh clone reproduces this folder and card exactly, apart from the timings. On another CPU
  or torch build the weights differ by rounding, and training amplifies that. This was not measured
  (one full run was made). Expect the classifier within
  {100 * TOLERANCE_RETRAIN['classifier_accuracy']:.1f} points and prompt accuracy within
  {100 * TOLERANCE_RETRAIN['prompt_accuracy']:.0f} points. The FID-style distance moves between sampling seeds
  by about as much as shown above; a retrained model may land up to
  {100 * TOLERANCE_RETRAIN['fid_relative']:.0f}% away.
"""
    (d / "README.md").write_text(text)
    return d / "README.md"
