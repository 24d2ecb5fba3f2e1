"""Evaluation and model card (README.md) of the tiny compositional model (assets/tiny-compositional-sd)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from mobilesd.tiny import compositional as comp
from mobilesd.tiny import compositional_metrics as cm

logger = logging.getLogger(__name__)



def generate(pipe, prompts: list[str], seeds: list[int], settings: cm.EvalSettings) -> np.ndarray:
    from mobilesd.tiny.metrics import pipeline_generator

    gen = pipeline_generator(pipe, batch_size=settings.batch_size)
    return gen(prompts, seeds, settings.steps, settings.guidance, settings.scheduler)


def save_grid(images: np.ndarray, path: Path, cols: int = 8, rows: int = 6, zoom: int = 3) -> Path:
    from PIL import Image

    h, w = images.shape[1:3]
    grid = np.full((rows * h, cols * w, 3), 128, np.uint8)
    for k in range(min(len(images), rows * cols)):
        r, c = divmod(k, cols)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = images[k]
    Image.fromarray(grid).resize((grid.shape[1] * zoom, grid.shape[0] * zoom), Image.NEAREST).save(str(path))
    return path


def evaluate_and_write_card(model_dir: str | Path, log=logger.info, settings: cm.EvalSettings | None = None) -> dict:
    from mobilesd.tiny.attribute_classifier import SUBDIR, load_attribute_classifier
    from mobilesd.tiny.metrics import load_fp_pipeline

    model_dir = Path(model_dir)
    settings = settings or cm.EvalSettings()
    training = json.loads((model_dir / "training.json").read_text())
    clf = load_attribute_classifier(model_dir / SUBDIR)
    pipe = load_fp_pipeline(model_dir)
    prompts, labels, seeds, pidx = settings.cases()
    t0 = time.time()
    real = cm.real_features(clf, labels)
    images = generate(pipe, prompts, seeds, settings)
    fp = cm.score(images, labels, pidx, clf, real, settings)
    other = generate(pipe, prompts, other_seed_set(seeds, settings.seeds), settings)
    floor = cm.score(other, labels, pidx, clf, real, settings, reference=fp["_raw"])
    real_row = cm.score(comp_real_images(labels), labels, pidx, clf, real, settings)
    log(f"compositional FP: overall {fp['accuracy']['overall']}, per attribute "
        f"{ {k: v['value'] for k, v in fp['accuracy'].items()} }")
    save_grid(images, model_dir / "samples.png")
    (model_dir / "samples.txt").write_text("\n".join(prompts[: 48]) + "\n")
    result = {"settings": settings.to_dict(), "fp": cm.public(fp),
              "fp_other_seeds": dict(cm.public(floor), seeds=[OTHER_OFFSET + i for i in range(len(settings.seeds))]),
              "real_heldout": cm.public(real_row), "eval_seconds": round(time.time() - t0, 1)}
    (model_dir / "metrics.json").write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    write_card(model_dir, training, result)
    return result


OTHER_OFFSET = 50   # the second FP seed set (the noise floor): offsets 50, 51, ... instead of 0, 1, ...


def other_seed_set(case_seeds: list[int], seeds: list[int]) -> list[int]:
    """Each case's seed replaced by its counterpart in a disjoint set (offset + 50 within its prompt's block)."""
    from mobilesd.tiny.compositional import SEEDS_PER_PROMPT

    out = []
    for s in case_seeds:
        base, offset = divmod(s, SEEDS_PER_PROMPT)
        out.append(base * SEEDS_PER_PROMPT + OTHER_OFFSET + seeds.index(offset))
    return out


def comp_real_images(labels: np.ndarray, seed: int = 199) -> np.ndarray:
    """Another draw of real pictures (other held-out source digits): what an ideal generator scores."""
    import torch

    from mobilesd.tiny import data

    return data.to_uint8(comp.render(labels, comp.DigitPool.of("heldout"), torch.Generator().manual_seed(seed)))


def _pct(entry) -> str:
    return f"{100 * entry['value']:.1f}% [{100 * entry['ci'][0]:.1f}, {100 * entry['ci'][1]:.1f}]"


def write_card(model_dir: Path, training: dict, result: dict) -> Path:
    from mobilesd.tiny.compositional_train import (COMPOSITIONAL_TEXT_CONFIG, COMPOSITIONAL_UNET_CONFIG,
                                                   COMPOSITIONAL_VAE_CONFIG)

    s, fp, floor, real = result["settings"], result["fp"], result["fp_other_seeds"], result["real_heldout"]
    phases, cfg = training["phases"], training["config"]
    rows = [("FP (seed offsets " + ", ".join(map(str, s["seeds"])) + ")", fp),
            ("FP (seed offsets " + ", ".join(map(str, floor["seeds"])) + ")", floor), ("real pictures (held-out digits)", real)]
    head = "| | " + " | ".join(comp.ATTRIBUTE_NAMES) + " | overall | FID-style vs real |"
    lines = [head, "|---|" + "---:|" * (len(comp.ATTRIBUTE_NAMES) + 2)]
    for name, r in rows:
        accs = " | ".join(_pct(r["accuracy"][a]) for a in comp.ATTRIBUTE_NAMES)
        f = r["fid_real"]
        lines.append(f"| {name} | {accs} | {_pct(r['accuracy']['overall'])} | {f['value']:.2f} [{f['ci'][0]:.2f}, {f['ci'][1]:.2f}] |")
    clf = phases["classifier"]["heldout_accuracy"]
    acc = {a: fp["accuracy"][a]["value"] for a in comp.ATTRIBUTE_NAMES}
    chance = {a: 1 / n for a, n in zip(comp.ATTRIBUTE_NAMES, comp.N_CLASSES)}
    at_chance = [a for a in acc if fp["accuracy"][a]["ci"][0] <= chance[a]]
    weak = [f"{a} {100 * v:.1f}%" for a, v in acc.items() if v < 0.9 and a not in at_chance]
    status = (f"FP binding accuracy is below 90%, and above chance, on {', '.join(weak) if weak else 'no attribute'} "
              f"(overall {100 * fp['accuracy']['overall']['value']:.1f}%): there quantization damage can show."
              + (f" At chance level (interval reaching 1/classes), so blind to damage: {', '.join(at_chance)}."
                 if at_chance else ""))
    example = comp.prompt(comp.HELDOUT_TEMPLATES[0], [3, 7, 0, 1, 1, 0])
    text = f"""# tiny-compositional-sd

A small Stable Diffusion trained in this repository on pictures composed from scikit-learn's handwritten
digits: two digits side by side, each with its own stroke weight, a size and a colour scheme, all named by
the prompt ("{example}"). It is the quality model of the quantization benchmark
(`benchmarks/quant_compositional.py`): attribute binding is hard for it, so quantization damage shows as
lost bindings, where the digits model (`assets/tiny-digits-sd`) scores 100% at every setting.

**What it learned:** {status}

Same diffusers classes as SD 1.5 (`CLIPTextModel` with {COMPOSITIONAL_TEXT_CONFIG['num_hidden_layers']} layers,
`UNet2DConditionModel` {list(COMPOSITIONAL_UNET_CONFIG['block_out_channels'])} on a {COMPOSITIONAL_UNET_CONFIG['sample_size']}x{COMPOSITIONAL_UNET_CONFIG['sample_size']} latent,
`AutoencoderKL` factor {2 ** (len(COMPOSITIONAL_VAE_CONFIG['block_out_channels']) - 1)}, 32x32 RGB).

![samples](samples.png)

*The first 48 evaluation cases (prompts in `samples.txt`), {s['steps']} {s['scheduler']} steps, guidance {s['guidance']}.*

## Figures ({fp['images']} images: {s['n_prompts']} held-out-phrasing prompts x seed offsets {s['seeds']}; case seed = 100 x prompt index + offset)

{chr(10).join(lines)}

Intervals: 95% bootstrap over prompts; for the FID-style distances, half-samples of the prompts without
replacement, centred on the estimate (`compositional_metrics.half_sample_interval`). FID-style: Frechet distance
of the attribute classifier's 64-d penultimate features against real pictures with the same attributes. FP against FP with other seeds
(the noise floor of the benchmark): FID-style {floor['fid_vs_fp']['value']:.2f}
[{floor['fid_vs_fp']['ci'][0]:.2f}, {floor['fid_vs_fp']['ci'][1]:.2f}], overall accuracy difference
{100 * floor['delta_vs_fp']['overall']['value']:+.1f} points [{100 * floor['delta_vs_fp']['overall']['ci'][0]:+.1f},
{100 * floor['delta_vs_fp']['overall']['ci'][1]:+.1f}].

Attribute classifier on real held-out pictures (2000): {', '.join(f'{k} {100 * v:.1f}%' for k, v in clf.items())}.
VAE reconstruction PSNR on held-out pictures: {phases['vae']['heldout_recon_psnr_db']} dB.

## How it was made

```
{training['command']}
```

* Pictures: `mobilesd/tiny/compositional.py` (two 8x8 digits, bicubic to 32x32, stroke weight by 3x3 grey-scale
  erosion / dilation, 16x16 or 10x10 cells, +-1 px jitter, optional inversion); prompts from
  {len(comp.TRAIN_TEMPLATES)} training templates; evaluation uses {len(comp.HELDOUT_TEMPLATES)} held-out templates
  (clause order changed, same words), numerals or number words at random.
* VAE {cfg['vae_steps']} steps x {cfg['vae_batch']}; attribute classifier {cfg['clf_steps']} steps x {cfg['clf_batch']}
  (blur / noise / uint8 augmentation); text encoder + UNet {cfg['unet_steps']} steps x {cfg['unet_batch']} on a pool of
  {cfg['pool']} rendered training pictures (latents encoded once), min-SNR {cfg['min_snr_gamma']}, EMA {cfg['ema_decay']},
  {int(100 * cfg['cond_drop'])}% empty prompts. Final loss {phases['text_unet']['final_loss']:.4f}.
* Training time: {training['total_cpu_seconds'] / 60:.0f} min of CPU time on {cfg['threads']} thread(s)
  ({training['total_seconds'] / 60:.0f} min wall on a 2-core machine); evaluation
  {result['eval_seconds']:.0f} s. `training.json` has the log, `metrics.json` the figures.
""" + (f"* Note: {phases['note']['text']}; its time is in the totals above.\n" if phases.get("note", {}).get("text") else "")
    (model_dir / "README.md").write_text(text)
    return model_dir / "README.md"
