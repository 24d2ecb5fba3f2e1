"""Quality metrics of a text-to-image model on the digits task.

A *generator* turns (prompts, seeds, steps, guidance, scheduler) into uint8 images (N, H, W, 3), one
image per (prompt, seed) pair. Generators exist for a diffusers pipeline (the full-precision model),
a quantized model (``mobilesd.quant``) and an exported bundle run on this machine
(``mobilesd.pipeline.HostPipeline``). Each is scored with:

* prompt accuracy: the digit classifier's label equals the digit the prompt asks for;
* Frechet distance (FID-style) between classifier features of generated and real train-split digits;
* fidelity to the full-precision model (same prompts and seeds): PSNR, mean abs error, label agreement.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from mobilesd.errors import MobileSDError
from mobilesd.tiny import data

logger = logging.getLogger(__name__)

# The host pipeline's names (mobilesd.pipeline.SCHEDULERS), so every generator accepts the same ones.
SCHEDULERS = {
    "dpm": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "ddim": "DDIMScheduler",
    "lcm": "LCMScheduler",
    "pndm": "PNDMScheduler",
}

GenerateFn = Callable[[list[str], list[int], int, float, str], np.ndarray]


@dataclass
class Generator:
    """``fn(prompts, seeds, steps, guidance, scheduler) -> uint8 (N, H, W, 3)``, with a name for the table.
    ``sampling``: steps / guidance / scheduler this generator samples with instead of the evaluation's (a
    few-step model scored beside the full model's 20 steps); None = the evaluation's settings."""

    name: str
    source: str
    fn: GenerateFn
    sampling: dict | None = None

    def __call__(self, prompts: list[str], seeds: list[int], steps: int, guidance: float,
                 scheduler: str) -> np.ndarray:
        if len(prompts) != len(seeds):
            raise ValueError("one seed per prompt")
        images = self.fn(prompts, seeds, steps, guidance, scheduler)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] != len(prompts):
            raise MobileSDError(f"generator {self.name} returned {images.dtype} {images.shape}",
                                "a generator must return uint8 images (N, H, W, 3)")
        return images


@dataclass
class EvalSettings:
    n_prompts: int = 60          # prompts taken from the phrasing set (60 = every held-out phrasing x digit)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    steps: int = 20
    guidance: float = 3.0
    scheduler: str = "dpm"
    phrasings: str = "heldout"   # or "train"
    batch_size: int = 64

    def cases(self) -> tuple[list[str], np.ndarray, list[int]]:
        """The (prompt, seed) grid: every prompt with every seed. Returns prompts, digits, seeds."""
        if self.phrasings == "heldout":
            pairs = data.heldout_prompts(self.n_prompts)
        elif self.phrasings == "train":
            tp = data.train_prompts()
            # same balanced order as the held-out list: round r, digit d -> template (d + r) mod T
            n_t = len(data.TRAIN_TEMPLATES)
            ordered = [tp[((d + r) % n_t) * 10 + d] for r in range(n_t) for d in range(10)]
            pairs = [ordered[i % len(ordered)] for i in range(self.n_prompts)]
        else:
            raise MobileSDError(f"unknown phrasing set {self.phrasings!r}", "use heldout or train")
        prompts = [p for p, _ in pairs for _ in self.seeds]
        digits = np.array([d for _, d in pairs for _ in self.seeds])
        seeds = [s for _ in pairs for s in self.seeds]
        return prompts, digits, seeds


# ---------------------------------------------------------------- generators

def set_scheduler(pipe, name: str) -> None:
    import diffusers

    if name not in SCHEDULERS:
        raise MobileSDError(f"unknown scheduler {name!r}", f"use one of {', '.join(SCHEDULERS)}")
    pipe.scheduler = getattr(diffusers, SCHEDULERS[name]).from_config(pipe.scheduler.config)


def load_fp_pipeline(model: str | Path | None):
    """The full-precision pipeline, through mobilesd's loader when it exists."""
    try:
        from mobilesd.loading import load_pipeline
    except ModuleNotFoundError as exc:
        if exc.name != "mobilesd.loading":
            raise
        load_pipeline = None
    if load_pipeline is not None:
        pipe = load_pipeline(model)
    else:
        from diffusers import StableDiffusionPipeline

        from mobilesd.tiny.model import DEFAULT_MODEL

        path = Path(model) if model is not None else DEFAULT_MODEL
        if not (path / "model_index.json").exists():
            raise MobileSDError(f"{path} is not a diffusers model folder (no model_index.json)",
                                "pass --model a folder in diffusers layout, e.g. assets/tiny-digits-sd")
        pipe = StableDiffusionPipeline.from_pretrained(str(path), safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pipeline_generator(pipe, name: str = "fp32", source: str = "", batch_size: int = 64) -> Generator:
    import torch

    def fn(prompts, seeds, steps, guidance, scheduler):
        original = pipe.scheduler
        set_scheduler(pipe, scheduler)
        try:
            out = []
            for i in range(0, len(prompts), batch_size):
                gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds[i : i + batch_size]]
                with torch.no_grad():
                    img = pipe(prompt=prompts[i : i + batch_size], num_inference_steps=steps,
                               guidance_scale=guidance, generator=gens, output_type="np").images
                out.append((np.clip(img, 0, 1) * 255).round().astype(np.uint8))
        finally:
            pipe.scheduler = original
        return np.concatenate(out)

    return Generator(name, source, fn)


def host_generator(host, name: str, source: str) -> Generator:
    """Anything with ``generate(prompt, negative_prompt, steps, guidance, seed, scheduler) -> (H, W, 3) uint8``."""

    def fn(prompts, seeds, steps, guidance, scheduler):
        return np.stack([np.asarray(host.generate(prompt=p, negative_prompt="", steps=steps, guidance=guidance,
                                                  seed=int(s), scheduler=scheduler), dtype=np.uint8)
                         for p, s in zip(prompts, seeds)])

    return Generator(name, source, fn)


def bundle_runtime(bundle: str | Path, runtime: str | None = None) -> str:
    """The runtime a bundle runs on: ``runtime`` if it can (its graphs' runtime, or torch), else a clear error;
    None = the runtime of its graphs (tflite | onnx | coreml-mil)."""
    from mobilesd.bundle import load_bundle
    from mobilesd.pipeline import FORMAT_RUNTIME, RUNTIMES

    fmt = load_bundle(bundle, verify_checksums=False).graphs("unet")[0]["format"]
    graph_runtime = FORMAT_RUNTIME.get(fmt)
    if runtime is not None and runtime not in RUNTIMES:
        raise MobileSDError(f"unknown runtime {runtime!r}", f"use one of {', '.join(RUNTIMES)}")
    if runtime == "torch":
        return runtime
    if graph_runtime is None:
        raise MobileSDError(f"bundle {bundle} holds {fmt} graphs, which no host runtime runs",
                            "pass --runtime torch to run its source model")
    if runtime not in (None, graph_runtime):
        raise MobileSDError(f"bundle {bundle} holds {fmt} graphs; it cannot run on --runtime {runtime}",
                            f"use --runtime {graph_runtime} or torch (or no --runtime: each bundle's own)")
    return graph_runtime


def bundle_generator(bundle: str | Path, runtime: str | None = None, threads: int | None = None) -> Generator:
    """A bundle run on this machine by the host pipeline; ``runtime`` None = the runtime of its graphs."""
    from mobilesd.pipeline import HostPipeline

    runtime = bundle_runtime(bundle, runtime)
    host = HostPipeline.from_bundle(bundle, runtime=runtime, threads=threads)
    return host_generator(host, f"bundle ({runtime})", str(bundle))


def quantized_generator(quantized: str | Path, fp_pipe, batch_size: int = 64) -> Generator:
    """``mobilesd.quant.load_quantized(Q)`` may give a pipeline, a host-style generator or a UNet to swap in."""
    import torch

    try:
        from mobilesd.quant import load_quantized
    except ImportError:
        raise MobileSDError("evaluating a quantized model needs mobilesd.quant.load_quantized, which is not built yet",
                            "evaluate the model with --model, or wait for the quantization issue") from None
    obj = load_quantized(quantized)
    if hasattr(obj, "generate") and not isinstance(obj, torch.nn.Module):
        return host_generator(obj, "quantized", str(quantized))
    if isinstance(obj, torch.nn.Module):  # a UNet: swap it into the full-precision pipeline
        from diffusers import StableDiffusionPipeline

        comps = dict(fp_pipe.components, unet=obj)
        pipe = StableDiffusionPipeline(**{k: comps[k] for k in ("vae", "text_encoder", "tokenizer", "unet",
                                                                "scheduler", "safety_checker",
                                                                "feature_extractor")},
                                       requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        return pipeline_generator(pipe, "quantized", str(quantized), batch_size)
    if callable(obj) and hasattr(obj, "scheduler"):
        obj.set_progress_bar_config(disable=True)
        return pipeline_generator(obj, "quantized", str(quantized), batch_size)
    raise MobileSDError(f"mobilesd.quant.load_quantized({quantized}) returned a {type(obj).__name__}",
                        "it must return a diffusers pipeline, a UNet module or an object with generate()")


def lora_pipeline(model: str | Path | None, loras: list[str], allow_pickle: bool = False):
    """The full-precision pipeline with LoRAs (``FILE[:SCALE]``) fused, as ``mobilesd export --lora`` fuses them."""
    from mobilesd.lora import fuse_loras, inspect_loras

    pipe = load_fp_pipeline(model)
    fuse_loras(pipe, inspect_loras(loras, allow_pickle), allow_pickle)
    return pipe


def lora_generator(model: str | Path | None, loras: list[str], name: str | None = None,
                   batch_size: int = 64, sampling: dict | None = None) -> Generator:
    gen = pipeline_generator(lora_pipeline(model, loras), name or "lora " + "+".join(Path(s).name for s in loras),
                             ", ".join(loras), batch_size)
    gen.sampling = sampling
    return gen


def tiny_decoder_generator(fp_pipe, path: str | Path, name: str | None = None, batch_size: int = 64,
                           sampling: dict | None = None) -> Generator:
    """The full-precision pipeline with a diffusers ``AutoencoderTiny`` (TAESD) in place of its VAE: the same
    latents, decoded by the tiny decoder (its fidelity columns are then PSNR against the full decoder)."""
    from diffusers import StableDiffusionPipeline

    from mobilesd.components import load_tiny_vae

    comps = dict(fp_pipe.components, vae=load_tiny_vae(path, fp_pipe))
    pipe = StableDiffusionPipeline(**{k: comps[k] for k in ("vae", "text_encoder", "tokenizer", "unet", "scheduler",
                                                            "safety_checker", "feature_extractor")},
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    gen = pipeline_generator(pipe, name or f"tiny decoder {Path(path).name}", str(path), batch_size)
    gen.sampling = sampling
    return gen


# ---------------------------------------------------------------- metrics

def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^1/2), the FID formula, on any feature vectors.

    The matrix square root is scipy's, as in pytorch-fid; S1 S2 is similar to a PSD matrix, so any imaginary
    part of its root is round-off and is dropped."""
    import warnings

    from scipy import linalg

    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    with warnings.catch_warnings():
        # The classifier's dead ReLU units (zero variance) make both covariances, and so S1 S2, singular and
        # scipy warns on every call; the root is still right (it matches the eigenvalue form to 1e-6).
        warnings.filterwarnings("ignore", message="Matrix is singular", category=linalg.LinAlgWarning)
        tr_sqrt = np.trace(linalg.sqrtm(s1 @ s2)).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def fidelity(images: np.ndarray, reference: np.ndarray) -> dict:
    """PSNR (dB, over all pixels) and mean absolute error (0-255 scale) against reference images."""
    if images.shape != reference.shape:
        raise MobileSDError(f"images {images.shape} and full-precision images {reference.shape} differ in shape",
                            "compare models of the same resolution")
    diff = images.astype(np.float64) - reference.astype(np.float64)
    mse = float((diff ** 2).mean())
    per_image = (diff ** 2).reshape(len(diff), -1).mean(1)
    per_psnr = 10 * np.log10(255.0 ** 2 / np.maximum(per_image, 1e-10))
    return dict(psnr_db=None if mse == 0 else round(10 * np.log10(255.0 ** 2 / mse), 3),
                min_image_psnr_db=None if mse == 0 else round(float(per_psnr.min()), 3),
                mae=round(float(np.abs(diff).mean()), 4))


def score(images: np.ndarray, digits: np.ndarray, classifier, real_features: np.ndarray,
          reference: np.ndarray | None = None, reference_labels: np.ndarray | None = None) -> dict:
    labels, feats = classifier.predict(images)
    correct = labels == digits
    row = dict(images=int(len(images)), prompt_accuracy=round(float(correct.mean()), 4),
               per_class_accuracy=[round(float(correct[digits == d].mean()), 4) if (digits == d).any() else None
                                   for d in range(10)],
               fid=round(frechet_distance(feats, real_features), 4))
    if reference is not None:
        row.update(fidelity(images, reference))
        if reference_labels is not None:
            row["label_agreement"] = round(float((labels == reference_labels).mean()), 4)
    return row


def real_reference(classifier) -> dict:
    """Features of the real train-split digits (the FID reference) and a score of the held-out real digits
    against them: the floor an ideal generator reaches (with that many images)."""
    x_train, _ = data.load_split("train")
    x_held, y_held = data.load_split("heldout")
    _, feats = classifier.predict(data.to_uint8(x_train))
    held = data.to_uint8(x_held)
    row = score(held, y_held, classifier, feats)
    return dict(features=feats, row=dict(name="real digits (held-out)", source="sklearn load_digits", **row))


def evaluate(generators: list[Generator], classifier, settings: EvalSettings, log=logger.info,
             include_real: bool = True) -> dict:
    """Score every generator; the first one is the full-precision reference for fidelity."""
    prompts, digits, seeds = settings.cases()
    real = real_reference(classifier)
    rows, images_of = [], {}
    if include_real:
        rows.append(real["row"])
    ref_images = ref_labels = None
    for i, gen in enumerate(generators):
        own = dict(steps=settings.steps, guidance=settings.guidance, scheduler=settings.scheduler)
        own.update(gen.sampling or {})
        log(f"eval: {gen.name}: {len(prompts)} images ({own['steps']} steps, guidance {own['guidance']}, "
            f"{own['scheduler']})")
        t0 = time.time()
        images = gen(prompts, seeds, own["steps"], own["guidance"], own["scheduler"])
        secs = time.time() - t0
        if i == 0:
            row = score(images, digits, classifier, real["features"])
            ref_images, ref_labels = images, classifier.predict(images)[0]
        else:
            row = score(images, digits, classifier, real["features"], ref_images, ref_labels)
        rows.append(dict(name=gen.name, source=gen.source, reference=i == 0, **row,
                         seconds_per_image=round(secs / len(images), 4),
                         **({"sampling": own} if gen.sampling else {})))
        images_of[gen.name] = images
    n_ref = len(real["features"])
    return dict(settings=dict(asdict(settings), n_images=len(prompts), fid_reference_images=n_ref,
                              fid_reference=f"classifier features of {n_ref} real train-split digits"),
                rows=rows, images=images_of, digits=digits)


def strip_images(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("images", "digits")}


def save_grid(images: np.ndarray, digits: np.ndarray, path: str | Path, per_digit: int = 8, zoom: int = 2) -> Path:
    """A digits x samples grid (row d = the first images prompted with digit d)."""
    from PIL import Image

    h, w = images.shape[1:3]
    grid = np.full((10 * h, per_digit * w, 3), 255, np.uint8)
    for d in range(10):
        for j, k in enumerate(np.flatnonzero(digits == d)[:per_digit]):
            grid[d * h : (d + 1) * h, j * w : (j + 1) * w] = images[k]
    img = Image.fromarray(grid).resize((grid.shape[1] * zoom, grid.shape[0] * zoom), Image.NEAREST)
    img.save(str(path), optimize=True)
    return Path(path)


# ---------------------------------------------------------------- table

def _fmt(v, pct: bool = False, digits: int = 2) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}%" if pct else f"{v:.{digits}f}"


def render_markdown(result: dict) -> str:
    s = result["settings"]
    phrasings = "held-out" if s["phrasings"] == "heldout" else "training"
    lines = [
        f"Prompts: {s['n_prompts']} {phrasings} phrasings x {len(s['seeds'])} seeds = {s['n_images']} images; "
        f"{s['steps']} steps, guidance {s['guidance']}, scheduler {s['scheduler']}. "
        f"FID-style distance: {s['fid_reference']}.",
        "",
        "| model | images | prompt acc. | FID (clf. features) | PSNR vs FP (dB) | MAE vs FP | label agreement | s/image |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        if r.get("reference"):
            paired = ["ref", "ref", "ref"]
        elif "mae" in r:
            paired = ["identical" if r["psnr_db"] is None else _fmt(r["psnr_db"]), _fmt(r["mae"], digits=3),
                      _fmt(r.get("label_agreement"), pct=True)]
        else:
            paired = ["-", "-", "-"]
        name = r["name"]
        if r.get("sampling"):
            sm = r["sampling"]
            name += f" ({sm['steps']} {sm['scheduler']} steps, guidance {sm['guidance']})"
        cols = [name, str(r["images"]), _fmt(r["prompt_accuracy"], pct=True), _fmt(r["fid"], digits=3),
                *paired, _fmt(r.get("seconds_per_image"), digits=3)]
        lines.append("| " + " | ".join(cols) + " |")
    lines += ["", "Per-class prompt accuracy:", "",
              "| model | " + " | ".join(str(d) for d in range(10)) + " |",
              "|---|" + "---:|" * 10]
    for r in result["rows"]:
        lines.append(f"| {r['name']} | " + " | ".join(_fmt(a, pct=True) for a in r["per_class_accuracy"]) + " |")
    return "\n".join(lines) + "\n"


def write_table(result: dict, out: str | Path) -> tuple[Path, Path]:
    """Write ``out`` as .md and .json (the suffix of ``out``, if any, is replaced)."""
    out = Path(out)
    if out.suffix in (".md", ".json"):
        out = out.with_suffix("")
    out.parent.mkdir(parents=True, exist_ok=True)
    md, js = out.with_suffix(".md"), out.with_suffix(".json")
    md.write_text(render_markdown(result))
    js.write_text(json.dumps(strip_images(result), indent=2) + "\n")
    return md, js
