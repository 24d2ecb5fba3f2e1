"""The compositional digits task: rendering, prompts, evaluation grid, metrics with error bars, the shipped
model (assets/tiny-compositional-sd) and its classifier. No training here (the slow test trains a few steps)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mobilesd.tiny import compositional as comp
from mobilesd.tiny import compositional_metrics as cm

ASSET = Path(__file__).resolve().parents[1] / "assets" / "tiny-compositional-sd"


def test_prompts_name_every_attribute():
    labels = [3, 7, 0, 1, 1, 0]   # 3 left of 7, thin / bold, large, white background
    for t in comp.TRAIN_TEMPLATES + comp.HELDOUT_TEMPLATES:
        p = comp.prompt(t, labels, (True, False))
        assert "3" in p and "seven" in p and "thin" in p and "bold" in p and "large" in p and "white background" in p
    # the clause order of the right-first templates still binds "bold" to the 7 on the right
    assert comp.prompt(comp.TRAIN_TEMPLATES[1], labels) == "a bold 7 right of a thin 3, large, white background"
    words = lambda ts: {w for t in ts for w in t.replace(",", " ").replace(":", " ").split() if "{" not in w}  # noqa: E731
    assert words(comp.HELDOUT_TEMPLATES) <= words(comp.TRAIN_TEMPLATES)   # held-out phrasings, no new words


def test_rendering_shows_each_attribute():
    g = torch.Generator().manual_seed(0)
    pool = comp.DigitPool.of("train")
    base = np.array([[1, 8, 0, 0, 1, 0]])
    img = lambda lab: comp.render(np.asarray(lab), pool, torch.Generator().manual_seed(1), jitter=0)[0, 0]  # noqa: E731
    x = img(base)
    assert x.shape == (32, 32) and float(x.max()) <= 1 and float(x.min()) >= -1
    ink = lambda im, half: float((1 - im[:, half * 16 : (half + 1) * 16]).sum())  # noqa: E731
    # bold strokes carry more ink than thin ones, on their own side only
    bold_right = img([[1, 8, 0, 1, 1, 0]])
    assert ink(bold_right, 1) > 1.3 * ink(x, 1) and ink(bold_right, 0) == pytest.approx(ink(x, 0))
    # small digits: less ink, nothing outside the central rows
    small = img([[1, 8, 0, 0, 0, 0]])
    assert ink(small, 0) + ink(small, 1) < 0.6 * (ink(x, 0) + ink(x, 1))
    assert torch.all(small[:10] == 1) and torch.all(small[-10:] == 1)
    # inverted colours: exactly the negative picture
    assert torch.equal(img([[1, 8, 0, 0, 1, 1]]), -x)
    # random batches: every attribute independent and uniform
    lab = comp.random_labels(4000, g)
    for k, n in enumerate(comp.N_CLASSES):
        counts = np.bincount(lab[:, k], minlength=n) / len(lab)
        assert np.all(np.abs(counts - 1 / n) < 0.05)


def test_eval_cases_are_balanced_and_deterministic():
    prompts, labels, seeds, pidx = comp.eval_cases(160, [0, 1, 2])
    assert len(prompts) == 480 and labels.shape == (480, 6) and seeds[:6] == [0, 1, 2, 100, 101, 102]
    assert len(set(seeds)) == 480   # every case its own noise
    assert np.array_equal(pidx[:6], [0, 0, 0, 1, 1, 1])
    first = labels[::3]
    for k, n in enumerate(comp.N_CLASSES):
        assert np.all(np.bincount(first[:, k], minlength=n) == 160 // n)   # exactly balanced
    again = comp.eval_cases(160, [0, 1, 2])
    assert again[0] == prompts and np.array_equal(again[1], labels)
    assert all(t.format(d1="", d2="", w1="", w2="", size="", colours="") for t in comp.HELDOUT_TEMPLATES)


def test_the_noise_floor_seed_set_is_disjoint():
    from mobilesd.tiny.compositional_card import other_seed_set

    _, _, seeds, _ = comp.eval_cases(160, [0, 1, 2])
    other = other_seed_set(seeds, [0, 1, 2])
    assert other[:4] == [50, 51, 52, 150] and not set(other) & set(seeds) and len(set(other)) == 480


def test_prompt_bootstrap_resamples_whole_prompts():
    pidx = np.repeat(np.arange(10), 3)
    boots = cm.prompt_bootstrap(pidx, 50, seed=3)
    for b in boots:
        assert len(b) == 30
        counts = np.bincount(pidx[b], minlength=10)
        assert np.all(counts % 3 == 0)          # a prompt comes with all its seeds or not at all
    lo, hi = cm.interval(np.arange(1000))
    assert lo == pytest.approx(24.975) and hi == pytest.approx(974.025)


def test_fid_intervals_come_from_half_samples_centred_on_the_estimate():
    pidx = np.repeat(np.arange(10), 3)
    for h in cm.prompt_half_samples(pidx, 20, seed=1):
        assert len(h) == 15 and len(set(h.tolist())) == 15          # no image twice
        assert np.all(np.bincount(pidx[h], minlength=10) % 3 == 0)   # whole prompts
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 4)), rng.normal(size=(300, 4))     # two samples of one distribution
    pidx = np.repeat(np.arange(100), 3)
    fid = cm.frechet_distance(a, b)
    ci = cm.half_sample_interval(fid, [cm.frechet_distance(a[h], b[h]) for h in cm.prompt_half_samples(pidx, 100)])
    assert ci[0] < fid < ci[1]
    # why not the bootstrap: repeated images push a resample's distance up, past the estimate itself
    boots = cm.prompt_bootstrap(pidx, 100)
    assert np.percentile([cm.frechet_distance(a[x], b[x]) for x in boots], 2.5) > fid


def test_verdict_reads_intervals_and_the_noise_floor():
    fp = {"fid_real": {"value": 10.0, "ci": [9.0, 11.0]}}
    floor = {"fid_real": {"value": 10.5, "ci": [9.4, 11.6]}, "fid_vs_fp": {"value": 1.0, "ci": [0.8, 1.3]}}
    better_within_noise = {"fid_real": {"value": 9.2, "ci": [8.5, 10.0]},
                           "delta_vs_fp": {"overall": {"value": 0.01, "ci": [-0.02, 0.04]}},
                           "fid_vs_fp": {"value": 1.1, "ci": [0.9, 1.4]}}
    v = cm.verdict(better_within_noise, fp, floor)
    assert v == {"accuracy": "no measurable difference", "fid_vs_fp": "no measurable difference",
                 "fid_real": "no measurable difference"}
    worse = {"fid_real": {"value": 20.0, "ci": [18.0, 22.0]},
             "delta_vs_fp": {"overall": {"value": -0.2, "ci": [-0.25, -0.15]}},
             "fid_vs_fp": {"value": 6.0, "ci": [5.0, 7.0]}}
    assert cm.verdict(worse, fp, floor) == {"accuracy": "worse", "fid_vs_fp": "further from FP than the noise floor",
                                           "fid_real": "worse"}


def test_score_on_real_pictures_and_their_paired_deltas():
    """A classifier that is always right scores 100% with a zero-width interval; paired deltas see flips."""

    class Oracle:
        def __init__(self, labels, flip=None):
            self.labels, self.flip = labels, flip

        def predict(self, images):
            lab = self.labels.copy()
            if self.flip is not None:
                lab[self.flip, 0] = (lab[self.flip, 0] + 1) % 10
            rng = np.random.default_rng(0)
            return lab, rng.normal(size=(len(lab), 8)) + lab[:, :1]

    prompts, labels, seeds, pidx = comp.eval_cases(20, [0, 1])
    settings = cm.EvalSettings(n_prompts=20, seeds=[0, 1], n_boot=200, n_boot_fid=20)
    images = np.zeros((len(labels), 32, 32, 3), np.uint8)
    real = Oracle(labels).predict(images)[1]
    ref = cm.score(images, labels, pidx, Oracle(labels), real, settings)
    assert ref["accuracy"]["overall"] == {"value": 1.0, "ci": [1.0, 1.0]}
    row = cm.score(images, labels, pidx, Oracle(labels, flip=np.arange(0, 40, 4)), real, settings, ref["_raw"])
    assert row["accuracy"]["left_digit"]["value"] == 0.75 and row["accuracy"]["right_digit"]["value"] == 1.0
    assert row["delta_vs_fp"]["overall"]["value"] == -0.25 and row["delta_vs_fp"]["overall"]["ci"][1] < 0
    # one attribute of six wrong on a quarter of the images
    assert row["accuracy"]["mean_attribute"]["value"] == pytest.approx(1 - 0.25 / 6, abs=1e-4)
    assert row["delta_vs_fp"]["mean_attribute"]["value"] == pytest.approx(-0.25 / 6, abs=1e-4)
    assert cm.verdict(row, ref, ref)["attributes"] == "worse"
    assert row["psnr_db"] is None   # identical pixels


def test_shipped_model_and_classifier():
    from mobilesd.quant.calibrate import default_prompts
    from mobilesd.tiny import data
    from mobilesd.tiny.attribute_classifier import SUBDIR, load_attribute_classifier

    clf = load_attribute_classifier(ASSET / SUBDIR)
    g = torch.Generator().manual_seed(5)
    labels = comp.random_labels(400, g)
    pred, feats = clf.predict(data.to_uint8(comp.render(labels, comp.DigitPool.of("heldout"), g)))
    assert feats.shape == (400, 64)
    assert (pred == labels).mean(0).min() > 0.9   # every attribute readable on real held-out pictures
    # quantize calibrates on the model's own training phrasings
    prompts = default_prompts(ASSET)
    assert prompts == comp.calibration_prompts() and not any(
        p == comp.prompt(t, [0] * 6) for p in prompts for t in comp.HELDOUT_TEMPLATES)


def test_guidance_ratio_of_the_model_with_itself_is_one():
    from mobilesd.tiny.metrics import load_fp_pipeline

    pipe = load_fp_pipeline(ASSET)
    settings = cm.EvalSettings(steps=3, n_boot=50)
    prompts, labels, seeds, _ = settings.cases()
    r = cm.guidance_ratio(pipe, pipe.unet, prompts[:4], seeds[:4], settings)
    assert r["value"] == pytest.approx(1.0, abs=1e-6) and r["cases"] == 4 and len(r["per_step"]) == 3


@pytest.mark.slow
def test_training_resumes_bit_identically(tmp_path):
    from safetensors.numpy import load_file

    from mobilesd.tiny.compositional_train import CompositionalConfig, train

    cfg = CompositionalConfig(vae_steps=2, clf_steps=2, unet_steps=4, pool=256, checkpoint_every=2)
    train(tmp_path / "a", cfg, evaluate=False)
    from mobilesd.tiny.train import _Run

    real = _Run.add_time

    def interrupt(self, phase, clock):   # the UNet phase calls this right after writing a checkpoint
        real(self, phase, clock)
        if phase == "text_unet":
            raise KeyboardInterrupt

    _Run.add_time = interrupt
    try:
        with pytest.raises(KeyboardInterrupt):
            train(tmp_path / "b", cfg, evaluate=False)
    finally:
        _Run.add_time = real
    train(tmp_path / "b", cfg, resume=True, evaluate=False)
    for f in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        a, b = load_file(str(tmp_path / "a" / f)), load_file(str(tmp_path / "b" / f))
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
