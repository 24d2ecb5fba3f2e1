"""The three small assets made here for the digits model (assets/): what they ship, what they measure, and the
fast path (LCM LoRA, no CFG, tiny decoder) as an android bundle run through `mobilesd generate --scheduler lcm`.

Nothing is trained in the tests: they use the shipped assets, and re-measure what is cheap to re-measure.
"""

import json

import numpy as np
import pytest

from mobilesd.tiny.finetune import asset_path

ASSETS = {"tiny-digits-bold-lora": ["bold-diffusers.safetensors", "bold-kohya.safetensors"],
          "tiny-digits-lcm-lora": ["lcm-peft.safetensors"],
          "tiny-digits-taesd": ["config.json", "diffusion_pytorch_model.safetensors"]}
LCM = asset_path("tiny-digits-lcm-lora") / "lcm-peft.safetensors"
TAESD = asset_path("tiny-digits-taesd")


@pytest.mark.parametrize("name", sorted(ASSETS))
def test_asset_ships_weights_card_and_its_training_command(name):
    d = asset_path(name)
    for f in ASSETS[name] + ["README.md", "training.json", "metrics.json", "samples.png"]:
        assert (d / f).is_file(), f"{name}/{f}"
    training = json.loads((d / "training.json").read_text())
    assert training["command"].startswith("mobilesd train-tiny --asset ") and "--out assets/" + name in training["command"]
    assert training["machine"]["threads"] >= 1 and training["total_cpu_seconds"] > 0
    card = (d / "README.md").read_text()
    assert training["command"] in card
    assert not list(d.parent.glob(name + ".partial")), "no unfinished run folder shipped"


def test_assets_are_small():
    total = sum(f.stat().st_size for n in ASSETS for f in asset_path(n).rglob("*") if f.is_file())
    print(f"assets made here: {total / 1e6:.2f} MB")
    assert total < 4e6


def test_student_card_reports_both_accuracies_side_by_side():
    m = json.loads((LCM.parent / "metrics.json").read_text())
    acc = m["acceptance"]
    rows = {r["name"]: r for r in m["rows"]}
    assert rows[acc["reference"]]["sampling"] == {"steps": 20, "guidance": 3.0, "scheduler": "dpm"}
    assert rows[acc["student"]]["sampling"] == {"steps": 4, "guidance": 1.0, "scheduler": "lcm"}
    assert acc["within_5_points"] and acc["reference_accuracy"] - acc["student_accuracy"] <= 0.05
    card = (LCM.parent / "README.md").read_text()
    assert f"{100 * acc['reference_accuracy']:.1f}%" in card and f"{100 * acc['student_accuracy']:.1f}%" in card


@pytest.mark.slow   # ~2 min: the full model's 20 CFG steps on 120 images (the card's 240 are checked above)
def test_student_at_4_steps_without_cfg_within_5_points_of_the_full_model():
    """Re-measured (a subset of `mobilesd eval`'s grid: 60 held-out phrasings x 2 seeds): the student at 4 LCM
    steps without CFG against the full model at 20 DPM steps with CFG 3."""
    from mobilesd.tiny import metrics
    from mobilesd.tiny.classifier import load_classifier
    from mobilesd.tiny.model import DEFAULT_MODEL

    clf = load_classifier(DEFAULT_MODEL / "classifier")
    full = metrics.pipeline_generator(metrics.load_fp_pipeline(DEFAULT_MODEL), "full model")
    student = metrics.lora_generator(DEFAULT_MODEL, [str(LCM)], name="student",
                                     sampling=dict(steps=4, guidance=1.0, scheduler="lcm"))
    settings = metrics.EvalSettings(seeds=[0, 1])
    rows = {r["name"]: r for r in metrics.evaluate([full, student], clf, settings, include_real=False)["rows"]}
    print(f"prompt accuracy: full model 20 DPM steps CFG 3: {rows['full model']['prompt_accuracy']:.3f}; "
          f"student 4 LCM steps no CFG: {rows['student']['prompt_accuracy']:.3f}")
    assert rows["student"]["prompt_accuracy"] >= rows["full model"]["prompt_accuracy"] - 0.05


def test_distillation_shows_at_one_step():
    """The control, re-measured: one LCM step without CFG on the base model (no LoRA) and on the student. The
    digits task is easy enough that both draw the right digit, so prompt accuracy cannot tell them apart; the
    FID-style distance can (the card: base ~295, student ~170 on 240 images)."""
    from mobilesd.tiny import metrics
    from mobilesd.tiny.classifier import load_classifier
    from mobilesd.tiny.model import DEFAULT_MODEL

    clf = load_classifier(DEFAULT_MODEL / "classifier")
    one = dict(steps=1, guidance=1.0, scheduler="lcm")
    base = metrics.pipeline_generator(metrics.load_fp_pipeline(DEFAULT_MODEL), "base")
    base.sampling = one
    student = metrics.lora_generator(DEFAULT_MODEL, [str(LCM)], name="student", sampling=one)
    rows = {r["name"]: r for r in metrics.evaluate([base, student], clf, metrics.EvalSettings(seeds=[0, 1]),
                                                    include_real=False)["rows"]}
    print(f"1 LCM step, no CFG: FID-style base {rows['base']['fid']:.1f}, student {rows['student']['fid']:.1f}")
    assert rows["student"]["fid"] < rows["base"]["fid"] - 50
    assert rows["student"]["prompt_accuracy"] >= 0.95


# ---- the fast path as an android bundle ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def fast_bundle(tmp_path_factory):
    from bundles import fast_path_bundle

    return fast_path_bundle(tmp_path_factory)


def test_fast_bundle_manifest(fast_bundle):
    m = fast_bundle.manifest
    assert m["cfg"]["mode"] == "none" and m["cfg"]["unet_batch"] == 1
    assert m["scheduler"]["default"] == "lcm" and "lcm" in m["scheduler"]["supported"]
    assert m["source"]["loras"][0]["format"] == "peft" and m["source"]["vae_decoder"]["kind"] == "tiny"
    assert next(g for g in m["graphs"] if g["role"] == "vae_decoder")["meta"]["decoder"] == "tiny"
    assert all(g["gpu"]["fully_accelerated"] and g["gpu"]["passed"] for g in m["graphs"])
    assert m["verification"]["end_to_end"]["settings"]["scheduler"] == "dpm"   # numerics check, any scheduler


def test_fast_bundle_runs_through_generate_with_lcm(fast_bundle, tmp_path, capsys):
    """`mobilesd generate --scheduler lcm --steps 4` on the android bundle: the image is the digit asked for
    (the digit classifier reads it), and equals the PyTorch reference (LoRA fused, tiny decoder) within the
    fp16 image bound."""
    from PIL import Image

    from mobilesd.cli import main
    from mobilesd.pipeline import HostPipeline
    from mobilesd.tiny.classifier import load_classifier
    from mobilesd.tiny.model import DEFAULT_MODEL
    from mobilesd.verify import IMAGE_THRESHOLDS

    images = []
    for seed in range(4):
        out = tmp_path / f"seven-{seed}.png"
        rc = main(["generate", "--bundle", str(fast_bundle.root), "--prompt", "a handwritten digit seven",
                   "--scheduler", "lcm", "--steps", "4", "--seed", str(seed), "--out", str(out)])
        assert rc == 0 and "4 lcm steps, no CFG" in capsys.readouterr().out
        images.append(np.asarray(Image.open(out).convert("RGB")))
    labels, _ = load_classifier(DEFAULT_MODEL / "classifier").predict(np.stack(images))
    assert (labels == 7).sum() >= 3, labels
    ref = HostPipeline.from_bundle(fast_bundle.root, runtime="torch").generate(
        "a handwritten digit seven", steps=4, seed=0, scheduler="lcm")
    assert np.abs(images[0] / 255.0 - ref / 255.0).mean() <= IMAGE_THRESHOLDS[fast_bundle.manifest["precision"]]
