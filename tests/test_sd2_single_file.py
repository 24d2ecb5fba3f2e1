"""SD 2.x single files: SD 2.x-base (512 px, epsilon) and SD 2.x (768 px, v-prediction) share every key, so
what a file states (safetensors metadata, an LDM .yaml beside it) or the user's --prediction-type /
--image-size decides; a file that states neither is refused, never guessed.

Real SD 2.x weights cannot be downloaded here: the files are written by mobilesd.single_file from a tiny
SD 2.x-shaped pipeline (architectures "tiny-sd2": 1024-wide cross-attention, linear projections), and the
loader's SD 2.x config (architectures "sd21") is swapped for that tiny one, so the real inference path runs
(keys -> "sd21" -> config folder with the settled size and prediction type -> diffusers' from_single_file).
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from mobilesd.errors import MobileSDError
from mobilesd.loading import load_pipeline, read_single_file_facts, resolve_single_file

V2_KEY = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"


def _keys_file(path, context_dim=1024, metadata=None):
    """The two tensors the architecture is read from, and the metadata under test (a few bytes)."""
    tensors = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 1, 1),
               V2_KEY: torch.zeros(4, context_dim)}
    save_file(tensors, str(path), metadata={"format": "pt", **(metadata or {})})
    return path


# -- what a file states ------------------------------------------------------------------------------
@pytest.mark.parametrize("metadata, expected", [
    ({"modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": "stable-diffusion-v2-512"}, ("epsilon", 512)),
    ({"modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": "stable-diffusion-v2-768-v"},
     ("v_prediction", 768)),
    ({"modelspec.prediction_type": "v", "modelspec.resolution": "768x768"}, ("v_prediction", 768)),
    ({"modelspec.prediction_type": "epsilon", "modelspec.resolution": "512x512"}, ("epsilon", 512)),
    ({"ss_v2": "True", "ss_v_parameterization": "True", "ss_resolution": "(768, 768)"}, ("v_prediction", 768)),
    ({"ss_v2": "True", "ss_v_parameterization": "False", "ss_resolution": "512,512"}, ("epsilon", 512)),
], ids=["modelspec-512", "modelspec-768-v", "modelspec-v-768", "modelspec-eps-512", "kohya-v", "kohya-eps"])
def test_sd2_variant_from_metadata(tmp_path, metadata, expected):
    path = _keys_file(tmp_path / "m.safetensors", metadata=metadata)
    assert resolve_single_file(path) == ("sd21", *expected)


def test_sd2_without_metadata_is_refused_naming_both_flags(tmp_path):
    path = _keys_file(tmp_path / "v2-1.safetensors")
    with pytest.raises(MobileSDError) as err:
        resolve_single_file(path)
    e = err.value
    assert "SD 2.x" in e.problem and "512" in e.problem and "768" in e.problem and "v2-1.safetensors" in e.problem
    assert "--prediction-type epsilon --image-size 512" in e.fix
    assert "--prediction-type v_prediction --image-size 768" in e.fix
    # either flag alone still leaves the other unknown
    with pytest.raises(MobileSDError, match="missing: --image-size"):
        resolve_single_file(path, prediction_type="v_prediction")
    with pytest.raises(MobileSDError, match="missing: --prediction-type"):
        resolve_single_file(path, image_size=512)
    assert resolve_single_file(path, "v_prediction", 768) == ("sd21", "v_prediction", 768)
    assert resolve_single_file(path, "epsilon", 512) == ("sd21", "epsilon", 512)


def test_partial_metadata_names_what_it_says_and_what_is_missing(tmp_path):
    path = _keys_file(tmp_path / "m.safetensors", metadata={"ss_v_parameterization": "true"})
    with pytest.raises(MobileSDError) as err:
        resolve_single_file(path)
    assert "v_prediction (metadata ss_v_parameterization='true')" in err.value.problem
    assert "missing: --image-size" in err.value.problem
    assert resolve_single_file(path, image_size=768) == ("sd21", "v_prediction", 768)


def test_flags_override_what_the_file_states(tmp_path):
    path = _keys_file(tmp_path / "m.safetensors", metadata={"modelspec.architecture": "stable-diffusion-v2-768-v"})
    assert resolve_single_file(path, "epsilon", 512) == ("sd21", "epsilon", 512)


def test_contradicting_metadata_is_an_error(tmp_path):
    path = _keys_file(tmp_path / "m.safetensors", metadata={"modelspec.architecture": "stable-diffusion-v2-768-v",
                                                            "ss_v_parameterization": "false"})
    with pytest.raises(MobileSDError, match="contradicts itself on its prediction type") as err:
        resolve_single_file(path)
    assert "--prediction-type" in err.value.fix
    sd1 = _keys_file(tmp_path / "sd1.safetensors", context_dim=768,
                     metadata={"modelspec.architecture": "stable-diffusion-v2-512"})
    with pytest.raises(MobileSDError, match="contradicts its weights, which are SD 1.x"):
        resolve_single_file(sd1)


@pytest.mark.parametrize("yaml_text, expected", [
    ('model:\n  target: ldm.models.diffusion.ddpm.LatentDiffusion\n  params:\n    parameterization: "v"\n'
     '    image_size: 64\n', "v_prediction"),
    ("model:\n  target: ldm.models.diffusion.ddpm.LatentDiffusion\n  params:\n    image_size: 64\n", "epsilon"),
], ids=["v2-inference-v.yaml", "v2-inference.yaml"])
def test_ldm_yaml_beside_the_file(tmp_path, yaml_text, expected):
    """The A1111 convention: <name>.yaml beside <name>.safetensors gives the parameterization (not the size)."""
    path = _keys_file(tmp_path / "m.safetensors")
    (tmp_path / "m.yaml").write_text(yaml_text)
    facts = read_single_file_facts(path)
    assert facts.prediction_type == expected and facts.image_size is None and "m.yaml" in facts.sources["prediction_type"]
    with pytest.raises(MobileSDError, match="missing: --image-size"):
        resolve_single_file(path)


def test_sd1_files_need_no_flags(tmp_path):
    """Every released SD 1.x is 512 px epsilon; v-prediction SD 1.x fine-tunes say so in their metadata."""
    assert resolve_single_file(_keys_file(tmp_path / "a.safetensors", 768)) == ("sd15", "epsilon", 512)
    v = _keys_file(tmp_path / "b.safetensors", 768, {"ss_v_parameterization": "True"})
    assert resolve_single_file(v) == ("sd15", "v_prediction", 512)


# -- loading tiny SD 2.x-shaped single files ---------------------------------------------------------
@pytest.fixture(scope="module")
def sd2_pipe():
    from mobilesd.architectures import build_random_pipeline

    return build_random_pipeline("tiny-sd2", seed=0)


@pytest.fixture(scope="module")
def sd2_files(sd2_pipe, tmp_path_factory):
    from mobilesd.single_file import save_single_file

    root = tmp_path_factory.mktemp("sd2")
    return {
        "plain": save_single_file(sd2_pipe, root / "plain.safetensors"),
        "base": save_single_file(sd2_pipe, root / "base.safetensors",
                                 metadata={"modelspec.sai_model_spec": "1.0.0",
                                           "modelspec.architecture": "stable-diffusion-v2-512",
                                           "modelspec.resolution": "512x512"}),
        "v768": save_single_file(sd2_pipe, root / "v768.safetensors",
                                 metadata={"ss_v2": "True", "ss_v_parameterization": "True"}),
    }


@pytest.fixture
def tiny_sd2_config(monkeypatch, tmp_path):
    """The loader's SD 2.x architecture -> the tiny SD 2.x-shaped one; a fresh config cache."""
    from mobilesd import architectures

    monkeypatch.setitem(architectures.ARCHITECTURES, "sd21", architectures.ARCHITECTURES["tiny-sd2"])
    monkeypatch.setenv("MOBILESD_CACHE", str(tmp_path / "cache"))


def _same_unet_weights(a, b) -> bool:
    sa, sb = a.unet.state_dict(), b.unet.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_sd2_base_file_loads_as_512_epsilon(sd2_pipe, sd2_files, tiny_sd2_config):
    pipe = load_pipeline(sd2_files["base"])
    assert pipe.scheduler.config.prediction_type == "epsilon"
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 512
    assert _same_unet_weights(sd2_pipe, pipe)


def test_sd2_768_v_file_loads_as_768_v(sd2_files, tiny_sd2_config):
    """ss_v_parameterization says v; the size comes from --image-size (kohya wrote no resolution)."""
    with pytest.raises(MobileSDError, match="missing: --image-size"):
        load_pipeline(sd2_files["v768"])
    pipe = load_pipeline(sd2_files["v768"], image_size=768)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 768


def test_sd2_file_without_metadata_is_refused_then_loads_with_flags(sd2_pipe, sd2_files, tiny_sd2_config):
    with pytest.raises(MobileSDError) as err:
        load_pipeline(sd2_files["plain"])
    assert "--prediction-type" in err.value.fix and "--image-size" in err.value.fix
    for pred, size in (("epsilon", 512), ("v_prediction", 768)):
        pipe = load_pipeline(sd2_files["plain"], prediction_type=pred, image_size=size)
        assert pipe.scheduler.config.prediction_type == pred
        assert pipe.unet.config.sample_size * pipe.vae_scale_factor == size
    assert _same_unet_weights(sd2_pipe, pipe)


def test_image_size_contradicting_a_config_is_an_error(tiny_model_dir):
    with pytest.raises(MobileSDError, match="--image-size 768 contradicts"):
        load_pipeline(tiny_model_dir, image_size=768)


# -- the command line --------------------------------------------------------------------------------
def test_export_refuses_an_unstated_sd2_file_before_any_work(sd2_files, tiny_sd2_config, tmp_path, capsys):
    from mobilesd import cli

    out = tmp_path / "bundle"
    rc = cli.main(["export", "--model", str(sd2_files["plain"]), "--target", "onnx", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "SD 2.x" in err and "--prediction-type" in err and "--image-size" in err
    assert not out.exists() and not list(tmp_path.glob(".bundle.partial-*"))


def test_export_image_size_is_for_single_files(tiny_model_dir, tmp_path, capsys):
    from mobilesd import cli

    rc = cli.main(["export", "--model", str(tiny_model_dir), "--image-size", "512", "--out", str(tmp_path / "b")])
    assert rc == 2 and "--image-size applies to a .safetensors single file" in capsys.readouterr().err


def test_export_flags_reach_the_loader(sd2_files, tiny_sd2_config):
    """--prediction-type / --image-size of `mobilesd export` become the config folder the export loads with."""
    import argparse
    import json
    from pathlib import Path

    from mobilesd.commands import export as export_command

    parser = argparse.ArgumentParser()
    export_command.add_arguments(parser)
    args = parser.parse_args(["--model", str(sd2_files["plain"]), "--prediction-type", "v_prediction",
                              "--image-size", "768"])
    config = Path(export_command._single_file_config(args))
    assert json.loads((config / "scheduler" / "scheduler_config.json").read_text())["prediction_type"] == "v_prediction"
    assert json.loads((config / "unet" / "config.json").read_text())["sample_size"] == 768 // 2  # tiny VAE: x2
    pipe = load_pipeline(sd2_files["plain"], config=config)  # what export's loader does with it
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 768
