"""Quality metrics of the compositional digits task, with error bars.

* binding accuracy per attribute (left / right digit, left / right stroke, size, colours), overall (all six
  right) and mean attribute accuracy (the share of the six right, per image), scored by the attribute classifier;
* FID-style distance: the Frechet distance of the classifier's penultimate features, against real pictures
  rendered from held-out digits with the same attributes as the prompts ("vs real"), and against the
  full-precision model's images of the same prompts and seeds ("vs FP"); FP with a second seed set against FP
  is the noise floor of the latter;
* PSNR vs FP (same prompts and seeds);
* guidance preservation: std(cond - uncond) of a model's noise prediction over std(cond - uncond) of the FP
  model's, on the FP sampling trajectory (both models see the same latents at every step), averaged over steps.

Every interval is a 95% bootstrap over *prompts* (a prompt's seeds are resampled together, since they share
the prompt): percentile intervals for accuracies; differences against FP are paired (the same resampled prompts
for both). The FID-style distances take half-samples instead (``half_sample_interval``): a Frechet distance of
a resample with repeated images is biased upward, so bootstrap intervals of it did not even contain the
estimate (a first version's FP vs FP: 78.1 with [0.0, 34.7]).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from mobilesd.tiny import compositional as comp
from mobilesd.tiny import data


@dataclass
class EvalSettings:
    n_prompts: int = 160
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    steps: int = 20
    guidance: float = 4.0
    scheduler: str = "dpm"
    phrasings: str = "heldout"
    batch_size: int = 64
    n_boot: int = 1000
    n_boot_fid: int = 300        # half-samples of the FID-style intervals
    guidance_cases: int = 64   # (prompt, seed) cases of the guidance-preservation measurement

    def cases(self):
        return comp.eval_cases(self.n_prompts, self.seeds, self.phrasings)

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- bootstrap

def prompt_bootstrap(prompt_index: np.ndarray, n_boot: int, seed: int = 0) -> list[np.ndarray]:
    """Case indices of ``n_boot`` resamples: prompts drawn with replacement, each with all its cases."""
    prompts = np.unique(prompt_index)
    members = [np.flatnonzero(prompt_index == p) for p in prompts]
    rng = np.random.default_rng(seed)
    return [np.concatenate([members[j] for j in rng.integers(0, len(prompts), len(prompts))]) for _ in range(n_boot)]


def interval(samples) -> list[float]:
    lo, hi = np.percentile(np.asarray(samples, np.float64), [2.5, 97.5])
    return [round(float(lo), 4), round(float(hi), 4)]


def prompt_half_samples(prompt_index: np.ndarray, n: int, seed: int = 0) -> list[np.ndarray]:
    """Case indices of ``n`` half-samples: half of the prompts drawn *without* replacement, each with all its
    cases, so no image is repeated."""
    prompts = np.unique(prompt_index)
    members = [np.flatnonzero(prompt_index == p) for p in prompts]
    rng = np.random.default_rng(seed)
    return [np.concatenate([members[j] for j in np.sort(rng.choice(len(prompts), len(prompts) // 2, replace=False))])
            for _ in range(n)]


def half_sample_interval(value: float, samples) -> list[float]:
    """95% interval of a distance from its half-sample values: value + the 2.5 / 97.5 percentiles of
    (half-sample distance - their mean), at least 0.

    A half-sample drawn without replacement varies around the full sample with the full sample's own variance
    (for a mean: var(half - full) = s^2 (2/n - 1/n) = s^2 / n), so its spread is the interval's width, unscaled.
    Subtracting the half-samples' mean removes their extra small-sample bias (a Frechet distance grows as the
    sample shrinks), so the interval is centred on the estimate."""
    d = np.asarray(samples, np.float64)
    lo, hi = np.percentile(d - d.mean(), [2.5, 97.5])
    return [round(max(0.0, float(value + lo)), 4), round(max(0.0, float(value + hi)), 4)]


def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    from mobilesd.tiny.metrics import frechet_distance as fd

    return fd(f1, f2)


# ---------------------------------------------------------------- references

def real_features(classifier, labels: np.ndarray, seed: int = 99) -> np.ndarray:
    """Classifier features of real pictures (held-out source digits) with the evaluation's attributes."""
    import torch

    g = torch.Generator().manual_seed(seed)
    images = data.to_uint8(comp.render(labels, comp.DigitPool.of("heldout"), g))
    return classifier.predict(images)[1]


# ---------------------------------------------------------------- scoring

def score(images: np.ndarray, labels: np.ndarray, prompt_index: np.ndarray, classifier, real: np.ndarray,
          settings: EvalSettings, reference: dict | None = None) -> dict:
    """One row. ``reference``: the FP row's ``score(...)["_raw"]`` (paired differences, FID-style vs FP, PSNR)."""
    pred, feats = classifier.predict(images)
    correct = pred == labels                            # (N, 6)
    overall = correct.all(1)
    boots = prompt_bootstrap(prompt_index, settings.n_boot)
    halves = prompt_half_samples(prompt_index, settings.n_boot_fid)
    row = {"images": int(len(images))}
    row["accuracy"] = {name: {"value": round(float(correct[:, i].mean()), 4),
                              "ci": interval([correct[b, i].mean() for b in boots])}
                       for i, name in enumerate(comp.ATTRIBUTE_NAMES)}
    row["accuracy"]["overall"] = {"value": round(float(overall.mean()), 4),
                                  "ci": interval([overall[b].mean() for b in boots])}
    # the share of the six attributes right, per image: still sensitive where "all six right" is rare
    attrs = correct.mean(1)
    row["accuracy"]["mean_attribute"] = {"value": round(float(attrs.mean()), 4),
                                         "ci": interval([attrs[b].mean() for b in boots])}
    fid = frechet_distance(feats, real)
    row["fid_real"] = {"value": round(fid, 3),
                       "ci": half_sample_interval(fid, [frechet_distance(feats[h], real[h]) for h in halves])}
    if reference is not None:
        ref_correct, ref_feats, ref_images = reference["correct"], reference["features"], reference["images"]
        ref_overall = ref_correct.all(1)
        row["delta_vs_fp"] = {}
        for i, name in enumerate(comp.ATTRIBUTE_NAMES):
            d = correct[:, i].astype(float) - ref_correct[:, i]
            row["delta_vs_fp"][name] = {"value": round(float(d.mean()), 4), "ci": interval([d[b].mean() for b in boots])}
        d = overall.astype(float) - ref_overall
        row["delta_vs_fp"]["overall"] = {"value": round(float(d.mean()), 4), "ci": interval([d[b].mean() for b in boots])}
        d = attrs - ref_correct.mean(1)
        row["delta_vs_fp"]["mean_attribute"] = {"value": round(float(d.mean()), 4),
                                                "ci": interval([d[b].mean() for b in boots])}
        fid = frechet_distance(feats, ref_feats)
        row["fid_vs_fp"] = {"value": round(fid, 3),
                            "ci": half_sample_interval(fid, [frechet_distance(feats[h], ref_feats[h]) for h in halves])}
        from mobilesd.tiny.metrics import fidelity

        row.update(fidelity(images, ref_images))
    row["_raw"] = {"correct": correct, "features": feats, "images": images}
    return row


def public(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith("_")}


def verdict(row: dict, fp: dict, floor: dict) -> dict:
    """Whether a row differs measurably from FP: overall and mean-attribute accuracy by their paired 95%
    intervals (0 inside: no measurable difference), the FID-style distance vs FP by the noise floor (FP with other seeds vs FP: a row whose
    interval reaches below the floor's upper end cannot be told from a resampled FP)."""
    out = {}
    for key, name in (("overall", "accuracy"), ("mean_attribute", "attributes")):
        d = row.get("delta_vs_fp", {}).get(key)
        if d is not None:
            lo, hi = d["ci"]
            out[name] = "no measurable difference" if lo <= 0 <= hi else ("worse" if hi < 0 else "better")
    f = row.get("fid_vs_fp")
    if f is not None and floor.get("fid_vs_fp"):
        out["fid_vs_fp"] = ("no measurable difference" if f["ci"][0] <= floor["fid_vs_fp"]["ci"][1]
                            else "further from FP than the noise floor")
    fr, ffp, ffl = row["fid_real"], fp["fid_real"], floor["fid_real"]
    spread = abs(ffl["value"] - ffp["value"])   # how far FP moves with other seeds
    gap = row["fid_real"]["value"] - ffp["value"]
    overlap = fr["ci"][0] <= ffp["ci"][1] and ffp["ci"][0] <= fr["ci"][1]
    out["fid_real"] = ("no measurable difference" if overlap or abs(gap) <= spread
                       else ("worse" if gap > 0 else "better"))
    return out


# ---------------------------------------------------------------- guidance preservation

def guidance_ratio(fp_pipe, unet, prompts: list[str], seeds: list[int], settings: EvalSettings) -> dict:
    """std(cond - uncond) of ``unet`` / of the FP UNet, on the FP model's own sampling trajectory (CFG at
    ``settings.guidance``), per case summed over steps; mean over cases with a bootstrap interval, the ratio
    per step (mean over cases) and its minimum."""
    import torch

    from mobilesd.quant.calibrate import encode, make_scheduler

    n = len(prompts)
    std_fp = np.zeros((n, settings.steps))
    std_q = np.zeros((n, settings.steps))
    c, s = fp_pipe.unet.config.in_channels, fp_pipe.unet.config.sample_size
    bs = max(1, settings.batch_size // 2)
    with torch.no_grad():
        for i in range(0, n, bs):
            chunk = slice(i, min(i + bs, n))
            uncond, cond = encode(fp_pipe, prompts[chunk])
            context = torch.cat([uncond, cond])
            lat = torch.cat([torch.randn((1, c, s, s), generator=torch.Generator().manual_seed(int(sd)))
                             for sd in seeds[chunk]])
            sched = make_scheduler(fp_pipe, settings.scheduler)
            sched.set_timesteps(settings.steps)
            lat = lat * sched.init_noise_sigma
            for k, t in enumerate(sched.timesteps):
                x_in = sched.scale_model_input(torch.cat([lat] * 2), t)
                u, cnd = fp_pipe.unet(x_in, t, encoder_hidden_states=context).sample.chunk(2)
                uq, cq = unet(x_in, t, encoder_hidden_states=context).sample.chunk(2)
                std_fp[chunk, k] = (cnd - u).flatten(1).std(1).numpy()
                std_q[chunk, k] = (cq - uq).flatten(1).std(1).numpy()
                lat = sched.step(u + settings.guidance * (cnd - u), t, lat).prev_sample
    per_case = std_q.sum(1) / np.maximum(std_fp.sum(1), 1e-12)
    boots = prompt_bootstrap(np.arange(n), settings.n_boot)
    per_step = std_q.mean(0) / np.maximum(std_fp.mean(0), 1e-12)
    return {"value": round(float(per_case.mean()), 4), "ci": interval([per_case[b].mean() for b in boots]),
            "per_step": [round(float(v), 4) for v in per_step], "min_step": round(float(per_step.min()), 4),
            "cases": n}
