"""The golden vectors the clients test against: written by mobilesd.golden, consistent with the host pipeline."""

import json

import numpy as np


def _array(root, ref):
    return np.fromfile(root / ref["file"], dtype="<" + {"float32": "f4", "int32": "i4"}[ref["dtype"]]).reshape(ref["shape"])


def _strict(text):
    return json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(f"non-finite {c}")))


def test_index_and_sections_are_strict_json(golden_dir):
    index = _strict((golden_dir / "index.json").read_text())
    assert index["format"] == "mobilesd-golden" and index["format_version"] == 1
    assert set(index["sections"]) == {"tokenizer", "randn", "schedulers", "trajectory"}
    for rel in index["sections"].values():
        _strict((golden_dir / rel).read_text())
    assert index["schedulers"] == ["dpm", "euler", "ddim", "lcm"]


def test_tokenizer_cases_cover_the_hard_prompts(golden_dir):
    tok = _strict((golden_dir / "tokenizer.json").read_text())
    cases = tok["cases"]
    assert len(cases) >= 30
    assert all(len(c["ids"]) == 77 and c["ids"][0] == tok["bos_id"] for c in cases)
    assert any(c["untruncated_length"] > 77 for c in cases)         # a long prompt was truncated
    assert cases[0]["prompt"] == "" and cases[0]["ids"][1] == tok["eos_id"]


def test_scheduler_cases_replay_with_diffusers(golden_dir):
    """Replaying one case's recorded model outputs through diffusers gives the recorded samples."""
    import torch

    from mobilesd.pipeline import make_scheduler

    sch = _strict((golden_dir / "schedulers.json").read_text())
    assert {c["steps"] for c in sch["cases"]} == {1, 4, 20, 50}
    case = next(c for c in sch["cases"] if c["scheduler"] == "dpm" and c["steps"] == 20
                and c["config"] == "sd2_v_prediction")
    s = make_scheduler("dpm", sch["configs"][case["config"]])
    s.set_timesteps(20)
    samples, outs = _array(golden_dir, case["samples"]), _array(golden_dir, case["model_outputs"])
    x = torch.from_numpy(samples[0])
    for k, t in enumerate(s.timesteps):
        x = s.step(torch.from_numpy(outs[k]), t, x).prev_sample
        np.testing.assert_allclose(x.numpy(), samples[k + 1], rtol=0, atol=1e-6)


def test_trajectory_matches_the_host_pipeline(golden_dir):
    """The recorded trajectory image is the host pipeline's torch-runtime image for the same settings."""
    from mobilesd.golden import TRAJECTORY
    from mobilesd.loading import default_model_path, load_pipeline
    from mobilesd.pipeline import HostPipeline

    traj = _strict((golden_dir / "trajectory.json").read_text())
    case = next(c for c in traj["cases"] if c["scheduler"] == "lcm")    # LCM: the generator goes on per step
    hp = HostPipeline.from_diffusers(load_pipeline(default_model_path()))
    img = hp.generate(TRAJECTORY["prompt"], steps=TRAJECTORY["steps"], guidance=TRAJECTORY["guidance"],
                      seed=TRAJECTORY["seed"], scheduler="lcm", output="float")
    np.testing.assert_allclose(img, _array(golden_dir, case["image"])[0], atol=1e-5)
