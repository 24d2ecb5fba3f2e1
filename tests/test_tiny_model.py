"""The shipped tiny digits SD (assets/tiny-digits-sd), its classifier, the metrics and `mobilesd eval`.

Fast by default: one pipeline and one classifier per session, small image counts. The full evaluation
(the model card's settings) and the training tests are marked slow.
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from mobilesd.tiny import data, metrics
from mobilesd.tiny.classifier import load_classifier
from mobilesd.tiny.model import CLASSIFIER_SUBDIR, DEFAULT_MODEL

# MOBILESD_TINY_MODEL: check another build of the model (e.g. a fresh `mobilesd train-tiny --out DIR`)
ASSET = Path(os.environ.get("MOBILESD_TINY_MODEL", DEFAULT_MODEL))
REPO = Path(__file__).resolve().parents[1]

# Fast checks: every held-out phrasing x digit once (60 images) with the card's sampler settings.
FAST = metrics.EvalSettings(seeds=[0])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model's ops are too small to gain from threads, and on a shared machine extra threads
    mostly spin: run this module single-threaded, then restore."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def slow(request):
    """Like the other slow tests of the repo: skipped unless asked for (-m slow or MOBILESD_SLOW=1)."""
    if "slow" not in (request.config.getoption("markexpr") or "") and not os.environ.get("MOBILESD_SLOW"):
        pytest.skip("slow: run with -m slow")


@pytest.fixture(scope="session")
def asset() -> Path:
    assert (ASSET / "model_index.json").exists(), f"the tiny model is missing at {ASSET}"
    return ASSET


@pytest.fixture(scope="session")
def pipe(asset):
    from diffusers import StableDiffusionPipeline

    p = StableDiffusionPipeline.from_pretrained(str(asset))
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="session")
def classifier(asset):
    return load_classifier(asset / CLASSIFIER_SUBDIR)


def _damaged(pipe, level: float):
    """A copy of the pipeline whose UNet weights got Gaussian noise of ``level`` x each tensor's std."""
    from diffusers import StableDiffusionPipeline

    unet = copy.deepcopy(pipe.unet)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(level * p.std().nan_to_num(0) * torch.randn(p.shape, generator=g))
    bad = StableDiffusionPipeline(**dict(pipe.components, unet=unet), requires_safety_checker=False)
    bad.set_progress_bar_config(disable=True)
    return bad


@pytest.fixture(scope="session")
def fast_result(pipe, classifier):
    """The full-precision model and two damaged copies (mild, strong), same prompts and seeds."""
    gens = [metrics.pipeline_generator(pipe, "fp32"), metrics.pipeline_generator(_damaged(pipe, 0.3), "mild"),
            metrics.pipeline_generator(_damaged(pipe, 0.6), "strong")]
    return metrics.evaluate(gens, classifier, FAST, log=lambda *a: None)


# ---------------------------------------------------------------- the asset

def test_asset_layout_is_sd(asset):
    index = json.loads((asset / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert index["vae"] == ["diffusers", "AutoencoderKL"]
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]
    assert index["tokenizer"] == ["transformers", "CLIPTokenizer"]
    assert index["safety_checker"] == [None, None] and index["requires_safety_checker"] is False
    for f in ("text_encoder/model.safetensors", "unet/diffusion_pytorch_model.safetensors",
              "vae/diffusion_pytorch_model.safetensors", "classifier/model.safetensors",
              "classifier/config.json", "tokenizer/vocab.json", "tokenizer/merges.txt", "README.md"):
        assert (asset / f).is_file(), f
    files = [f for f in asset.rglob("*") if f.is_file()]
    assert not [f for f in files if f.suffix in (".bin", ".pt", ".pkl", ".joblib", ".ckpt")]
    size = sum(f.stat().st_size for f in files)
    print(f"asset size: {size / 1e6:.2f} MB")
    assert size < 10e6

    sched = json.loads((asset / "scheduler" / "scheduler_config.json").read_text())
    assert sched["_class_name"] == "PNDMScheduler"
    assert (sched["beta_schedule"], sched["beta_start"], sched["beta_end"]) == ("scaled_linear", 0.00085, 0.012)
    assert sched["num_train_timesteps"] == 1000 and sched["prediction_type"] == "epsilon"
    vae = json.loads((asset / "vae" / "config.json").read_text())
    assert 0.05 < vae["scaling_factor"] < 20 and vae["scaling_factor"] != 0.18215


def test_loads_with_diffusers_as_fp32(pipe):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    assert isinstance(pipe.unet, UNet2DConditionModel)
    assert isinstance(pipe.vae, AutoencoderKL)
    assert isinstance(pipe.text_encoder, CLIPTextModel)
    assert pipe.safety_checker is None
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        assert m.dtype == torch.float32
    assert pipe.text_encoder.config.max_position_embeddings == 77
    assert pipe.text_encoder.config.hidden_size == pipe.unet.config.cross_attention_dim
    assert pipe.vae_scale_factor == 4 and pipe.unet.config.sample_size * 4 == 32
    assert {"CrossAttnDownBlock2D", "DownBlock2D"} <= set(pipe.unet.config.down_block_types)
    assert pipe.unet.config.mid_block_type == "UNetMidBlock2DCrossAttn"


def test_loads_with_mobilesd_loader(asset, pipe):
    from mobilesd.loading import load_pipeline

    p = load_pipeline(asset)
    assert type(p.unet).__name__ == "UNet2DConditionModel"
    for name in ("unet", "vae", "text_encoder"):
        a, b = getattr(p, name).state_dict(), getattr(pipe, name).state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k].float(), b[k].float()) for k in a), name


def test_tokenizer_is_real_clip(pipe):
    from mobilesd.tokenizer import load_clip_tokenizer, tokenize

    prompts = [p for p, _ in data.heldout_prompts()[:10]] + [""]
    assert len(pipe.tokenizer) == 49408
    np.testing.assert_array_equal(tokenize(pipe.tokenizer, prompts), tokenize(load_clip_tokenizer(), prompts))
    ids = tokenize(pipe.tokenizer, ["a handwritten digit seven"])[0]
    assert ids[0] == 49406 and ids[6] == 49407 and ids.shape == (77,)


def test_heldout_phrasings_are_new_wordings_of_known_tokens(pipe):
    train = {p for p, _ in data.train_prompts()}
    held = data.heldout_prompts()
    assert len(held) == 60 and len({p for p, _ in held}) == 60
    assert not train & {p for p, _ in held}
    vocab = {t for p in train for t in pipe.tokenizer.tokenize(p)}
    for p, _ in held:
        assert set(pipe.tokenizer.tokenize(p)) <= vocab, p
    # any prefix of 10 is balanced over digits
    assert sorted(d for _, d in held[:10]) == list(range(10))


@pytest.mark.parametrize("scheduler", ["euler", "ddim", "pndm"])
def test_sd_schedulers_from_config(pipe, classifier, scheduler):
    s = metrics.EvalSettings(n_prompts=10, seeds=[0], scheduler=scheduler)
    r = metrics.evaluate([metrics.pipeline_generator(pipe)], classifier, s, log=lambda *a: None, include_real=False)
    print(f"{scheduler}: prompt accuracy {r['rows'][0]['prompt_accuracy']:.2f} on 10 images")
    assert r["rows"][0]["prompt_accuracy"] >= 0.7


# ---------------------------------------------------------------- classifier and quality

def test_classifier_accurate_on_heldout_real_digits(classifier, asset):
    x, y = data.load_split("heldout")
    pred, feats = classifier.predict(data.to_uint8(x))
    acc = float((pred == y).mean())
    print(f"classifier held-out accuracy: {acc:.4f} on {len(y)} real digits")
    assert len(y) == 360 and feats.shape[0] == 360
    assert acc >= 0.97
    training = json.loads((asset / "training.json").read_text())
    assert acc == pytest.approx(training["phases"]["classifier"]["heldout_accuracy"], abs=0.003)


def test_prompt_accuracy_on_heldout_phrasings(fast_result):
    fp = fast_result["rows"][1]
    print(f"prompt accuracy (held-out phrasings, {fp['images']} images): {fp['prompt_accuracy']:.3f}, "
          f"FID-style {fp['fid']:.3f}")
    assert fp["name"] == "fp32" and fp["images"] == 60
    assert fp["prompt_accuracy"] >= 0.85
    assert min(fp["per_class_accuracy"]) >= 0.5


def test_metrics_detect_a_damaged_model(fast_result):
    real, fp, mild, strong = fast_result["rows"]
    for r in (fp, mild, strong):
        print(f"{r['name']}: acc {r['prompt_accuracy']:.3f} fid {r['fid']:.1f} psnr {r.get('psnr_db')} "
              f"mae {r.get('mae')}")
    # noise of 0.3 std barely changes the digits (the table should still see it), 0.6 std breaks them
    assert mild["prompt_accuracy"] <= fp["prompt_accuracy"] and mild["fid"] > fp["fid"]
    assert mild["psnr_db"] < 30 and mild["mae"] > 5
    assert strong["prompt_accuracy"] < 0.6 and strong["label_agreement"] < 0.6
    assert strong["fid"] > 3 * fp["fid"]
    assert strong["psnr_db"] < mild["psnr_db"] and strong["mae"] > mild["mae"]
    assert real["prompt_accuracy"] >= 0.97 and real["fid"] < fp["fid"]


def test_fidelity_of_identical_generators_is_perfect(fast_result, pipe, classifier):
    s = metrics.EvalSettings(n_prompts=4, seeds=[3], steps=8)
    g = metrics.pipeline_generator(pipe)
    r = metrics.evaluate([g, metrics.Generator("again", "", g.fn)], classifier, s, log=lambda *a: None)
    again = r["rows"][2]
    assert again["mae"] == 0 and again["psnr_db"] is None and again["label_agreement"] == 1


def test_same_seed_same_image_regardless_of_batch(pipe):
    g = metrics.pipeline_generator(pipe, batch_size=2)
    a = g(["seven", "number 3", "a picture of the number 8"], [5, 6, 7], 10, 3.0, "dpm")
    b = g(["number 3"], [6], 10, 3.0, "dpm")
    assert a.shape == (3, 32, 32, 3) and a.dtype == np.uint8
    assert np.abs(a[1].astype(int) - b[0].astype(int)).max() <= 1


def test_frechet_distance():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2000, 8))
    b = rng.normal(size=(2000, 8))
    assert metrics.frechet_distance(a, a) == pytest.approx(0, abs=1e-8)
    assert metrics.frechet_distance(a, b) < 0.1
    # shifted mean by 1 in every dim -> distance ~ 8; doubled std -> ~ 8 * (2 - 1)^2
    assert metrics.frechet_distance(a, b + 1) == pytest.approx(8, rel=0.1)
    assert metrics.frechet_distance(a, 2 * b) == pytest.approx(8, rel=0.15)


def test_fidelity_numbers():
    a = np.zeros((2, 4, 4, 3), np.uint8)
    b = a.copy()
    b[0] = 10
    f = metrics.fidelity(b, a)
    assert f["mae"] == 5.0
    assert f["psnr_db"] == pytest.approx(10 * math.log10(255 ** 2 / 50), abs=1e-3)


# ---------------------------------------------------------------- the command

def test_eval_command_prints_and_writes_table(tmp_path, capsys, asset):
    from mobilesd.cli import main

    out = tmp_path / "table"
    rc = main(["eval", "--model", str(asset), "--prompts", "10", "--seeds", "1", "--steps", "10",
               "--out", str(out), "--save-images", str(tmp_path / "img")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| fp32 |" in text and "prompt acc." in text and "real digits (held-out)" in text
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["settings"]["n_images"] == 10 and result["rows"][1]["name"] == "fp32"
    assert out.with_suffix(".md").read_text().startswith("Prompts:")
    assert (tmp_path / "img" / "fp32.png").exists()


def test_eval_of_a_quantized_model(tmp_path, capsys, asset):
    """`eval --quantized Q` scores a mobilesd.quant model next to FP (load_quantized gives a pipeline)."""
    from mobilesd.cli import main
    from mobilesd.quant import quantize

    q = tmp_path / "q"
    quantize(asset, q, method="ptq", weight_bits=4, act_bits=8, calib_prompts=4, steps=4, batch_size=4,
             progress=False)
    out = tmp_path / "table"
    rc = main(["eval", "--model", str(asset), "--quantized", str(q), "--prompts", "5", "--seeds", "1",
               "--steps", "4", "--out", str(out)])
    assert rc == 0
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    qrow = next(r for r in rows if r["name"] == "quantized q")
    assert qrow["images"] == 5 and qrow["psnr_db"] is not None and qrow["psnr_db"] < 80  # not identical to FP


@pytest.mark.slow
def test_eval_of_an_onnx_bundle_on_the_host(slow, tmp_path, asset, pipe, classifier):
    """The same metrics for an exported bundle: an fp32 ONNX bundle must match the model closely."""
    from mobilesd.export import ExportOptions, export

    bundle = export(asset, tmp_path / "onnx", ExportOptions(target="onnx", progress=False))
    s = metrics.EvalSettings(n_prompts=20, seeds=[0])
    r = metrics.evaluate([metrics.pipeline_generator(pipe), metrics.bundle_generator(bundle.root)], classifier,
                         s, log=lambda *a: None)
    fp, host = r["rows"][1], r["rows"][2]
    print(f"onnx bundle: acc {host['prompt_accuracy']:.3f} (fp {fp['prompt_accuracy']:.3f}), "
          f"PSNR {host['psnr_db']} dB, MAE {host['mae']}")
    assert host["name"] == "bundle (onnx)"
    assert host["psnr_db"] is None or host["psnr_db"] > 35
    assert host["label_agreement"] >= 0.95


def test_eval_rejects_bad_options(capsys, asset):
    from mobilesd.cli import main

    assert main(["eval", "--model", str(asset), "--seeds", "x"]) == 2
    assert main(["eval", "--model", str(asset / "nope")]) == 2
    assert "fix:" in capsys.readouterr().err


# ---------------------------------------------------------------- slow: the card's figures, training

@pytest.mark.slow
def test_card_figures_reproduce(slow, asset, pipe, classifier):
    from mobilesd.tiny.card import TOLERANCE_EVAL

    card = json.loads((asset / "metrics.json").read_text())
    s = card["settings"]
    settings = metrics.EvalSettings(n_prompts=s["n_prompts"], seeds=s["seeds"], steps=s["steps"],
                                    guidance=s["guidance"], scheduler=s["scheduler"], phrasings=s["phrasings"])
    r = metrics.evaluate([metrics.pipeline_generator(pipe)], classifier, settings, log=lambda *a: None)
    fp, ref = r["rows"][1], card["rows"][1]
    print(f"prompt accuracy {fp['prompt_accuracy']:.4f} (card {ref['prompt_accuracy']}), "
          f"FID-style {fp['fid']:.3f} (card {ref['fid']})")
    assert fp["prompt_accuracy"] >= 0.9
    assert fp["prompt_accuracy"] == pytest.approx(ref["prompt_accuracy"], abs=TOLERANCE_EVAL["prompt_accuracy"])
    assert fp["fid"] == pytest.approx(ref["fid"], rel=TOLERANCE_EVAL["fid_relative"])
    assert str(round(100 * ref["prompt_accuracy"], 1)) in (asset / "README.md").read_text()


def _short_train(out: Path, **kw):
    from mobilesd.tiny.train import TrainConfig, train

    cfg = TrainConfig(vae_steps=6, clf_steps=6, unet_steps=12, checkpoint_every=4)
    return train(out, cfg, evaluate=False, log=lambda *a: None, **kw)


def _weights(folder: Path) -> dict[str, bytes]:
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*.safetensors"))}


@pytest.mark.slow
def test_training_is_deterministic_and_resumable(slow, tmp_path, monkeypatch):
    import mobilesd.tiny.train as train_mod
    from mobilesd.errors import MobileSDError

    a = _short_train(tmp_path / "a")
    b = _short_train(tmp_path / "b")
    assert _weights(a) == _weights(b) and len(_weights(a)) == 4

    # interrupt the text+UNet phase after its step-8 checkpoint, then resume
    real_tqdm = train_mod.tqdm

    class Interrupting(real_tqdm):
        def __iter__(self):
            for i in super().__iter__():
                if self.desc == "text+unet" and i == 10:
                    raise KeyboardInterrupt
                yield i

    monkeypatch.setattr(train_mod, "tqdm", Interrupting)
    c = tmp_path / "c"
    with pytest.raises(KeyboardInterrupt):
        _short_train(c)
    assert not c.exists() and (tmp_path / "c.partial" / "checkpoints" / "text_unet_last.pt").exists()
    monkeypatch.setattr(train_mod, "tqdm", real_tqdm)
    with pytest.raises(MobileSDError):
        _short_train(c)  # a partial run exists: needs --resume
    _short_train(c, resume=True)
    assert _weights(c) == _weights(a)
    assert not (tmp_path / "c.partial").exists()
    with pytest.raises(MobileSDError):
        _short_train(c)  # exists: needs --force
