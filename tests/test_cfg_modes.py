"""CFG modes (batch | sequential | none) and the trailing timestep spacing: export options, manifest, host pipeline."""

import json

import numpy as np
import pytest

from mobilesd.errors import MobileSDError
from mobilesd.export import ExportOptions, make_plan
from mobilesd.pipeline import HostPipeline, diffusers_reference, make_scheduler

PROMPT = "a handwritten digit three"


# ---- the host pipeline (torch runtime: equal to diffusers bit for bit) ---------------------------------------

def test_cfg_none_is_diffusers_without_guidance(tiny_pipe):
    """--cfg none: one batch-1 call on the prompt per step; guidance and negative prompt are ignored, so the image
    is diffusers' at guidance_scale 1 whatever guidance is asked for."""
    ref = diffusers_reference(tiny_pipe, PROMPT, steps=4, guidance=1.0, seed=3)
    hp = HostPipeline.from_diffusers(tiny_pipe, cfg_mode="none")
    assert hp.stages.unet_batch == 1 and hp.cfg_mode == "none"
    calls = []
    original = hp.stages.unet

    def counting(sample, timestep, context, on_stage=None):
        calls.append((sample.shape[0], context.shape[0]))
        return original(sample, timestep, context, on_stage)

    hp.stages.unet = counting
    got = hp.generate(PROMPT, negative_prompt="blurry", steps=4, guidance=7.5, seed=3)
    assert np.array_equal(got, ref)
    assert calls == [(1, 1)] * 4
    with_cfg = HostPipeline.from_diffusers(tiny_pipe).generate(PROMPT, steps=4, guidance=7.5, seed=3)
    assert not np.array_equal(with_cfg, ref)   # guidance does change the image when CFG runs


# LCM at guidance 1: with CFG its x0 output shows the float rounding of the CFG sum (numpy here, torch in
# diffusers) as 1 in 255 on a pixel or two, with or without trailing spacing; without CFG it is exact
@pytest.mark.parametrize("scheduler,guidance", [("dpm", 5.0), ("euler", 5.0), ("ddim", 5.0), ("lcm", 1.0)])
def test_trailing_spacing_equals_diffusers(tiny_pipe, scheduler, guidance):
    ref = diffusers_reference(tiny_pipe, PROMPT, steps=4, guidance=guidance, seed=2, scheduler=scheduler,
                              timestep_spacing="trailing")
    hp = HostPipeline.from_diffusers(tiny_pipe, timestep_spacing="trailing")
    assert np.array_equal(hp.generate(PROMPT, steps=4, guidance=guidance, seed=2, scheduler=scheduler), ref)


def test_trailing_spacing_changes_the_timesteps(tiny_pipe):
    cfg = dict(tiny_pipe.scheduler.config)
    lead, trail = make_scheduler("dpm", cfg), make_scheduler("dpm", cfg, "trailing")
    lead.set_timesteps(4)
    trail.set_timesteps(4)
    assert trail.timesteps.tolist() == [999, 749, 499, 249]     # SD-Turbo's: the first step at the last timestep
    assert lead.timesteps.tolist() != trail.timesteps.tolist()


# ---- export options --------------------------------------------------------------------------------------------

def test_cfg_option_resolution():
    assert (make_plan(ExportOptions()).cfg_mode, make_plan(ExportOptions()).unet_batch) == ("batch", 2)
    assert (make_plan(ExportOptions(unet_batch=1)).cfg_mode, make_plan(ExportOptions(unet_batch=1)).unet_batch) == (
        "sequential", 1)
    for mode, batch in (("batch", 2), ("sequential", 1), ("none", 1)):
        plan = make_plan(ExportOptions(cfg=mode))
        assert (plan.cfg_mode, plan.unet_batch) == (mode, batch)
    with pytest.raises(MobileSDError, match="unknown --cfg"):
        make_plan(ExportOptions(cfg="half"))
    with pytest.raises(MobileSDError, match="timestep-spacing"):
        make_plan(ExportOptions(timestep_spacing="sideways"))
    with pytest.raises(MobileSDError, match="not in --schedulers"):
        make_plan(ExportOptions(schedulers=("dpm",), default_scheduler="lcm"))
    with pytest.raises(MobileSDError, match="not one the app clients implement"):
        make_plan(ExportOptions(schedulers=("dpm", "pndm")))


def test_cli_cfg_and_unet_batch_must_agree(tmp_path, capsys):
    from mobilesd.cli import main

    rc = main(["export", "--cfg", "batch", "--unet-batch", "1", "--out", str(tmp_path / "b"), "--quiet"])
    assert rc == 2 and "contradicts --cfg batch" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


# ---- an export with --cfg none and trailing spacing -------------------------------------------------------------

@pytest.fixture(scope="module")
def none_bundle(tiny_model_dir, tmp_path_factory):
    from mobilesd.export import export

    out = tmp_path_factory.mktemp("cfg") / "onnx-none"
    return export(tiny_model_dir, out, ExportOptions(target="onnx", cfg="none", timestep_spacing="trailing",
                                                     progress=False))


def test_cfg_none_manifest(none_bundle):
    m = none_bundle.manifest
    assert m["cfg"]["mode"] == "none" and m["cfg"]["unet_batch"] == 1 and m["cfg"]["batch_order"] == ["conditional"]
    assert m["scheduler"]["timestep_spacing"] == "trailing"
    for g in none_bundle.unet_graphs():
        shapes = {i["name"]: i["shape"] for i in g["inputs"]}
        assert shapes["sample"][0] == 1 and shapes["encoder_hidden_states"][0] == 1 and g["meta"]["batch"] == 1
    assert m["verification"]["end_to_end"]["settings"]["guidance"] == 1.0
    # the written manifest validates against the schema (load_bundle checks it and every checksum)
    from mobilesd.bundle import load_bundle

    assert load_bundle(none_bundle.root).manifest["cfg"]["mode"] == "none"


def test_cfg_none_bundle_runs_like_diffusers_without_guidance(none_bundle, tiny_pipe):
    hp = HostPipeline.from_bundle(none_bundle.root, runtime="onnx")
    assert hp.timestep_spacing == "trailing" and hp.cfg_mode == "none"
    a = hp.generate(PROMPT, steps=4, guidance=1.0, seed=7)
    b = hp.generate(PROMPT, negative_prompt="noise", steps=4, guidance=9.0, seed=7)
    assert np.array_equal(a, b)                 # guidance and negative prompt ignored
    ref = diffusers_reference(tiny_pipe, PROMPT, steps=4, guidance=1.0, seed=7, timestep_spacing="trailing")
    assert np.abs(a.astype(float) - ref).mean() <= 0.1   # fp32 ONNX vs diffusers (uint8 units)
    torch_hp = HostPipeline.from_bundle(none_bundle.root, runtime="torch")
    assert np.array_equal(torch_hp.generate(PROMPT, steps=4, seed=7), ref)


def test_generate_cli_on_cfg_none_bundle(none_bundle, tmp_path, capsys):
    from mobilesd.cli import main

    out = tmp_path / "x.png"
    rc = main(["generate", "--bundle", str(none_bundle.root), "--prompt", PROMPT, "--steps", "2", "--guidance", "5",
               "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and out.is_file()
    assert "ignored" in text and "no CFG" in text


def test_manifest_cfg_mode_none_requires_batch_one_in_schema_terms(none_bundle, tmp_path):
    """The schema accepts the none mode and the recorded spacing; an unknown mode is refused on read."""
    import shutil

    from mobilesd.bundle import load_bundle

    copy = tmp_path / "copy"
    shutil.copytree(none_bundle.root, copy)
    m = json.loads((copy / "manifest.json").read_text())
    m["cfg"]["mode"] = "half"
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(MobileSDError, match="cfg"):
        load_bundle(copy)


def test_golden_trajectory_variants_match_the_host_pipeline(golden_dir):
    """The golden vectors' extra trajectories (trailing spacing; cfg mode none) are the host pipeline's images for
    the same settings, so the app clients can check both against the reference."""
    from mobilesd.golden import TRAJECTORY
    from mobilesd.loading import default_model_path, load_pipeline

    traj = json.loads((golden_dir / "trajectory.json").read_text())
    pipe = load_pipeline(default_model_path())
    assert {(v["timestep_spacing"], v["cfg_mode"]) for v in traj["variants"]} >= {("trailing", "batch"),
                                                                                 ("trailing", "none")}
    for v in traj["variants"]:
        hp = HostPipeline.from_diffusers(pipe, cfg_mode=v["cfg_mode"], timestep_spacing=v["timestep_spacing"])
        img = hp.generate(TRAJECTORY["prompt"], steps=TRAJECTORY["steps"], guidance=v["guidance"] or 1.0,
                          seed=TRAJECTORY["seed"], scheduler=v["scheduler"], output="float")
        ref = np.fromfile(golden_dir / v["image"]["file"], dtype="<f4").reshape(v["image"]["shape"])[0]
        np.testing.assert_allclose(img, ref, atol=1e-5)
        preds = v["unet_predictions"]["shape"]
        assert preds[1] == (1 if v["cfg_mode"] == "none" else 2) and preds[0] == TRAJECTORY["steps"]
