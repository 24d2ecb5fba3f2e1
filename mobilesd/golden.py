"""Golden vectors: what the Python reference computes, written once for the Java, Swift and JS clients to match.

One writer (this module), one documented format (docs/golden-vectors.md, ``FORMAT_VERSION``), read by every
client's unit tests. The test suite writes them afresh (``tests/conftest.py``, fixture ``golden_dir``), so a
change on the Python side fails the clients until they follow; nothing is copied between languages by hand.

    python -m mobilesd.golden --out build/golden

Layout: ``index.json`` lists the sections; each section is a JSON file whose arrays live in raw
little-endian files beside it (``{"file", "dtype", "shape"}``; dtype ``float32`` or ``int32``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import torch

from mobilesd.errors import MobileSDError

logger = logging.getLogger(__name__)

FORMAT = "mobilesd-golden"
FORMAT_VERSION = 1

# Prompts for the tokenizer vectors: the cases a CLIP BPE port gets wrong first.
PROMPTS = [
    "",
    "a handwritten digit seven",
    "A Handwritten DIGIT Seven",
    "a photo of an astronaut riding a horse on mars",
    "  leading and trailing spaces  ",
    "repeated    spaces   between     words",
    "tabs\tand\nnewlines\r\nmixed",
    "punctuation!!! does it, work? yes; it: does...",
    "hyphen-ated and under_scored and slash/separated",
    "it's a dog's life, they're here, we've gone, I'm ok, you'll see, he'd go",
    "IT'S SHOUTED, THEY'RE LOUD",
    "digits 0123456789 and 3.14159 and 1,000,000",
    "year 2024, 4k, 8K UHD, 1080p",
    "café crème brûlée, naïve façade",
    "Übergrößenträger straße",
    "日本語のプロンプト 東京",
    "中文提示词，一只猫",
    "한국어 프롬프트",
    "emoji 🚀🔥 and 👍🏽 thumbs",
    "greek αβγ δέλτα and cyrillic привет мир",
    "combining e\u0301 accent and decomposed a\u0308",
    "quotes \"double\" and 'single' and «guillemets»",
    "brackets (round) [square] {curly} <angle>",
    "symbols @#$%^&*+=~`|\\",
    "masterpiece, best quality, ((ultra detailed)), [bad anatomy:0.5]",
    "<|startoftext|> literal special tokens <|endoftext|>",
    "zero\u200bwidth space and non\u00a0breaking space",
    "mixed CamelCaseWords and snake_case_words and kebab-case-words",
    "a " * 40 + "very long prompt",
    " ".join(f"word{i}" for i in range(90)),
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "x",
    "...",
    "a\u0000control\u0007characters\u001f",
]
SCHEDULER_STEPS = (1, 4, 20, 50)
STEP_SHAPE = (1, 4, 8, 8)
RANDN_CASES = [(0, (1, 4, 64, 64)), (1, (1, 4, 64, 64)), (42, (1, 4, 8, 8)), (2**32 - 1, (1, 4, 8, 8)),
               (7, (16,)), (7, (17,)), (7, (100,)), (123456789, (2, 4, 9, 7)), (5, (1,)), (5, (3,)), (5, (15,))]
TRAJECTORY = dict(prompt="a handwritten digit seven", negative_prompt="", steps=8, guidance=7.5, seed=0)


def scheduler_configs(base: dict) -> dict[str, dict]:
    """The bundle-side scheduler configs the vectors cover: SD 1.x (epsilon), SD 2.x 768 (v-prediction) and
    the trailing timestep spacing of SD-Turbo-style few-step models."""
    return {"sd_epsilon": dict(base), "sd2_v_prediction": dict(base, prediction_type="v_prediction"),
            "sd_epsilon_trailing": dict(base, timestep_spacing="trailing")}


class _Writer:
    def __init__(self, root: Path):
        self.root = root

    def array(self, rel: str, a) -> dict:
        a = np.asarray(a)
        dtype = {np.dtype(np.float32): "float32", np.dtype(np.int32): "int32"}.get(a.dtype)
        if dtype is None:
            raise ValueError(f"golden arrays are float32 or int32, not {a.dtype}")
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes())
        return {"file": rel, "dtype": dtype, "shape": list(a.shape)}

    def json(self, rel: str, obj) -> str:
        (self.root / rel).write_text(json.dumps(obj, indent=1, allow_nan=False) + "\n", encoding="utf-8")
        return rel


def _finite_config(cfg: dict) -> tuple[dict, dict]:
    """diffusers configs hold -inf (``lambda_min_clipped``); strict JSON cannot: move them aside as strings."""
    clean, nonfinite = {}, {}
    for k, v in cfg.items():
        if isinstance(v, float) and not math.isfinite(v):
            nonfinite[k] = "inf" if v > 0 else ("-inf" if v < 0 else "nan")
        elif not k.startswith("_") or k == "_class_name":
            clean[k] = v
    return clean, nonfinite


def _tokenizer_section(w: _Writer, tokenizer_dir: Path) -> dict:
    from mobilesd.tokenizer import load_clip_tokenizer, tokenize

    tok_out = w.root / "tokenizer"
    tok_out.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(tokenizer_dir / name, tok_out / name)
    tok = load_clip_tokenizer(tokenizer_dir)
    cases = []
    for prompt in PROMPTS:
        ids = tokenize(tok, [prompt])[0].astype(int).tolist()
        full = tok(prompt).input_ids   # untruncated: shows where truncation cut
        cases.append({"prompt": prompt, "ids": ids, "untruncated_length": len(full)})
    return {"vocab": "tokenizer/vocab.json", "merges": "tokenizer/merges.txt", "max_length": 77,
            "bos_id": int(tok.bos_token_id), "eos_id": int(tok.eos_token_id), "pad_id": int(tok.pad_token_id),
            "cases": cases}


def _randn_section(w: _Writer) -> dict:
    cases = []
    for seed, shape in RANDN_CASES:
        g = torch.Generator("cpu").manual_seed(seed)
        a = torch.randn(shape, generator=g, dtype=torch.float32).numpy()
        cases.append({"seed": seed, "shape": list(shape),
                      "values": w.array(f"randn/seed{seed}_{'x'.join(map(str, shape))}.f32", a)})
    # one generator, several draws in a row: the state (and torch's cached scalar normal) carries over
    g = torch.Generator("cpu").manual_seed(11)
    stream = []
    for k, shape in enumerate([(1, 4, 8, 8), (5,), (20,), (3,), (1, 4, 8, 8)]):
        a = torch.randn(shape, generator=g, dtype=torch.float32).numpy()
        stream.append({"shape": list(shape), "values": w.array(f"randn/stream11_{k}.f32", a)})
    return {"generator": "torch.Generator('cpu').manual_seed(seed); torch.randn(shape, generator=g)",
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cases": cases, "stream": {"seed": 11, "draws": stream}}


def _scheduler_case(w: _Writer, name: str, cfg_name: str, config: dict, steps: int) -> dict:
    from mobilesd.pipeline import make_scheduler

    from mobilesd.pipeline import _step_kwargs

    sched = make_scheduler(name, config)
    sched.set_timesteps(steps)
    prefix = f"schedulers/{cfg_name}/{name}_{steps}"
    noise = torch.Generator("cpu").manual_seed(1000 + steps)     # initial latent, then LCM's step noise
    fake_unet = torch.Generator("cpu").manual_seed(2000 + steps)  # stands in for the model outputs
    x = torch.randn(STEP_SHAPE, generator=noise) * sched.init_noise_sigma
    samples, outputs, scaled = [x], [], []
    for k, t in enumerate(sched.timesteps):
        scaled.append(sched.scale_model_input(samples[-1], t))
        out = torch.randn(STEP_SHAPE, generator=fake_unet)
        outputs.append(out)
        kwargs = _step_kwargs(sched, noise) if name == "lcm" else {}
        samples.append(sched.step(out, t, samples[-1], **kwargs).prev_sample)
    sigmas = getattr(sched, "sigmas", None)
    return {
        "scheduler": name, "config": cfg_name, "steps": steps, "noise_seed": 1000 + steps,
        "timesteps": [float(t) for t in sched.timesteps],
        "sigmas": [float(s) for s in sigmas] if sigmas is not None else None,
        "init_noise_sigma": float(sched.init_noise_sigma),
        "samples": w.array(f"{prefix}_samples.f32", torch.stack(samples).numpy()),
        "model_outputs": w.array(f"{prefix}_model_outputs.f32", torch.stack(outputs).numpy()),
        "scaled_model_inputs": w.array(f"{prefix}_scaled.f32", torch.stack(scaled).numpy()),
    }


def _schedulers_section(w: _Writer, base_config: dict, schedulers: list[str]) -> dict:
    from mobilesd.pipeline import make_scheduler

    configs = scheduler_configs(base_config)
    resolved = {}
    for cfg_name, cfg in configs.items():
        for name in schedulers:
            clean, nonfinite = _finite_config(dict(make_scheduler(name, cfg).config))
            resolved[f"{cfg_name}/{name}"] = {"config": clean, "nonfinite": nonfinite}
    cases = [_scheduler_case(w, name, cfg_name, cfg, steps)
             for cfg_name, cfg in configs.items() for name in schedulers for steps in SCHEDULER_STEPS]
    return {"configs": configs, "resolved_configs": resolved, "shape": list(STEP_SHAPE),
            "rule": "g = generator(noise_seed); samples[0] = randn(g, shape) * init_noise_sigma; for step k: "
                    "scaled_model_inputs[k] = scale_model_input(samples[k], timesteps[k]); samples[k+1] = "
                    "step(model_outputs[k], timesteps[k], samples[k]).prev_sample, where lcm's step draws its "
                    "noise as randn(g, shape) (every step but the last); model_outputs come from another "
                    "generator and are given",
            "cases": cases}


def _trajectory_section(w: _Writer, model, schedulers: list[str]) -> dict:
    """A whole CFG generation of the default model in PyTorch, recorded step by step. A client starts from
    the seed, feeds the recorded UNet predictions in place of its own graphs, and must reproduce every latent."""
    from mobilesd.components import TextEncoder, VAEDecoder
    from mobilesd.loading import load_pipeline
    from mobilesd.pipeline import _step_kwargs, make_scheduler
    from mobilesd.tokenizer import tokenize

    pipe = load_pipeline(model)
    s = TRAJECTORY
    ids = tokenize(pipe.tokenizer, [s["negative_prompt"], s["prompt"]]).astype(np.int32)
    with torch.no_grad():
        ctx = TextEncoder(pipe.text_encoder).eval()(torch.from_numpy(ids))
    out = {"settings": dict(s), "input_ids": w.array("trajectory/input_ids.i32", ids),
           "cfg": "pred = uncond + guidance * (cond - uncond); batch order [unconditional, conditional]",
           "rule": "g = generator(seed); noise = randn(g, latent shape); latents[0] = noise * init_noise_sigma; "
                   "each step: unet_inputs[k] = scale_model_input([x, x]); given unet_predictions[k] (batch 2), "
                   "guided_predictions[k] = CFG; latents[k+1] = step(guided, t, x) (lcm: noise from g); "
                   "image = the PyTorch VAE decoder of latents[-1], [1, H, W, 3] in [0, 1]",
           "cases": []}
    config = dict(pipe.scheduler.config)
    for name in schedulers:
        sched = make_scheduler(name, config)
        sched.set_timesteps(s["steps"])
        g = torch.Generator("cpu").manual_seed(s["seed"])
        shape = (1, pipe.unet.config.in_channels, pipe.unet.config.sample_size, pipe.unet.config.sample_size)
        x = torch.randn(shape, generator=g, dtype=torch.float32)
        noise = x.clone()
        x = x * sched.init_noise_sigma
        latents, inputs, preds, guided = [x], [], [], []
        with torch.no_grad():
            for t in sched.timesteps:
                model_in = sched.scale_model_input(torch.cat([x, x]), t)
                pred = pipe.unet(model_in, t, encoder_hidden_states=ctx).sample
                g_pred = pred[:1] + s["guidance"] * (pred[1:] - pred[:1])
                x = sched.step(g_pred, t, x, **_step_kwargs(sched, g)).prev_sample
                inputs.append(model_in)
                preds.append(pred)
                guided.append(g_pred)
                latents.append(x)
            image = VAEDecoder(pipe.vae).eval()(x)
        p = f"trajectory/{name}"
        out["cases"].append({
            "scheduler": name, "timesteps": [float(t) for t in sched.timesteps],
            "noise": w.array(f"{p}_noise.f32", noise.numpy()),
            "latents": w.array(f"{p}_latents.f32", torch.stack(latents).numpy()),
            "unet_inputs": w.array(f"{p}_unet_inputs.f32", torch.stack(inputs).numpy()),
            "unet_predictions": w.array(f"{p}_unet_predictions.f32", torch.stack(preds).numpy()),
            "guided_predictions": w.array(f"{p}_guided.f32", torch.stack(guided).numpy()),
            "image": w.array(f"{p}_image.f32", image.numpy()),
        })
    out["variants"] = _trajectory_variants(w, pipe, ids, ctx)
    out["variants_rule"] = (
        "as cases, with the scheduler config's timestep_spacing replaced by the variant's (the manifest's "
        "scheduler.timestep_spacing); cfg_mode none: input_ids_conditional only, unet_inputs[k] = "
        "scale_model_input(x) (batch 1), unet_predictions[k] batch 1 used as is (no guidance)")
    return out


# Extra trajectories (kept out of ``cases`` so that clients reading those are unaffected): the trailing timestep
# spacing of SD-Turbo-style bundles, and cfg mode none (one batch-1 UNet call per step on the prompt: distilled
# models such as an LCM LoRA).
TRAJECTORY_VARIANTS = (("dpm", "trailing", "batch"), ("euler", "trailing", "batch"), ("lcm", "trailing", "none"),
                       ("lcm", None, "none"))


def _trajectory_variants(w: _Writer, pipe, ids: np.ndarray, ctx: torch.Tensor) -> list[dict]:
    from mobilesd.components import VAEDecoder
    from mobilesd.pipeline import _step_kwargs, make_scheduler

    s = TRAJECTORY
    out = []
    for name, spacing, cfg_mode in TRAJECTORY_VARIANTS:
        sched = make_scheduler(name, dict(pipe.scheduler.config), spacing)
        sched.set_timesteps(s["steps"])
        g = torch.Generator("cpu").manual_seed(s["seed"])
        shape = (1, pipe.unet.config.in_channels, pipe.unet.config.sample_size, pipe.unet.config.sample_size)
        noise = torch.randn(shape, generator=g, dtype=torch.float32)
        x = noise * sched.init_noise_sigma
        context = ctx if cfg_mode == "batch" else ctx[1:]
        latents, inputs, preds = [x], [], []
        with torch.no_grad():
            for t in sched.timesteps:
                model_in = sched.scale_model_input(torch.cat([x, x]) if cfg_mode == "batch" else x, t)
                pred = pipe.unet(model_in, t, encoder_hidden_states=context).sample
                guided = pred[:1] + s["guidance"] * (pred[1:] - pred[:1]) if cfg_mode == "batch" else pred
                x = sched.step(guided, t, x, **_step_kwargs(sched, g)).prev_sample
                inputs.append(model_in)
                preds.append(pred)
                latents.append(x)
            image = VAEDecoder(pipe.vae).eval()(x)
        p = f"trajectory/variants/{name}_{spacing or 'config'}_{cfg_mode}"
        out.append({"scheduler": name, "timestep_spacing": spacing, "cfg_mode": cfg_mode,
                    "guidance": s["guidance"] if cfg_mode == "batch" else None,
                    "timesteps": [float(t) for t in sched.timesteps],
                    "input_ids_conditional": w.array(f"{p}_input_ids.i32", ids[1:]) if cfg_mode == "none" else None,
                    "noise": w.array(f"{p}_noise.f32", noise.numpy()),
                    "latents": w.array(f"{p}_latents.f32", torch.stack(latents).numpy()),
                    "unet_inputs": w.array(f"{p}_unet_inputs.f32", torch.stack(inputs).numpy()),
                    "unet_predictions": w.array(f"{p}_unet_predictions.f32", torch.stack(preds).numpy()),
                    "image": w.array(f"{p}_image.f32", image.numpy())})
    return out


def write_golden(out: str | Path, model: str | Path | None = None) -> Path:
    """Write every section into ``out`` (replaced if it exists) and return it."""
    from mobilesd.loading import default_model_path
    from mobilesd.pipeline import CLIENT_SCHEDULERS

    out = Path(out)
    model = Path(model) if model else default_model_path()
    if not (model / "tokenizer" / "vocab.json").exists():
        raise MobileSDError(f"{model} has no tokenizer/vocab.json", "pass a diffusers model folder")
    import tempfile

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))   # two writers never share one
    w = _Writer(tmp)
    base_config = json.loads((model / "scheduler" / "scheduler_config.json").read_text())
    schedulers = list(CLIENT_SCHEDULERS)
    logger.info("writing golden vectors to %s", out)
    sections = {
        "tokenizer": w.json("tokenizer.json", _tokenizer_section(w, model / "tokenizer")),
        "randn": w.json("randn.json", _randn_section(w)),
        "schedulers": w.json("schedulers.json", _schedulers_section(w, base_config, schedulers)),
        "trajectory": w.json("trajectory.json", _trajectory_section(w, model, schedulers)),
    }
    import mobilesd

    w.json("index.json", {"format": FORMAT, "format_version": FORMAT_VERSION,
                          "mobilesd_version": mobilesd.__version__, "torch": torch.__version__,
                          "schedulers": schedulers, "sections": sections,
                          "doc": "docs/golden-vectors.md"})
    if out.exists():
        shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="write the golden vectors the app clients test against")
    parser.add_argument("--out", default="build/golden")
    parser.add_argument("--model", default=None, help="diffusers folder (default: the bundled digits model)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(write_golden(args.out, args.model))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
