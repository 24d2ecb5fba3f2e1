"""Single-file (original CompVis / LDM layout) checkpoints: written by mobilesd.single_file, read back
through load_pipeline -> diffusers' from_single_file, exactly."""

from __future__ import annotations

import gc
import hashlib
import os
import pickle
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mobilesd.errors import MobileSDError
from mobilesd.loading import _infer_architecture, load_pipeline
from mobilesd.single_file import save_single_file, to_original_state_dict

COMPONENTS = ("unet", "vae", "text_encoder")


@pytest.fixture(scope="module")
def tiny():
    from mobilesd.architectures import build_random_pipeline

    return build_random_pipeline("tiny", seed=0)


@pytest.fixture(scope="module")
def tiny_file(tiny, tmp_path_factory):
    return save_single_file(tiny, tmp_path_factory.mktemp("single") / "tiny-sd.safetensors")


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    """A configs-only folder for the tiny architecture (what load_pipeline writes for sd15/sd21)."""
    from mobilesd.architectures import write_config_folder

    return write_config_folder(tmp_path_factory.mktemp("configs") / "tiny", "tiny")


@pytest.fixture(scope="module")
def tiny_loaded(tiny_file, tiny_config):
    return load_pipeline(tiny_file, config=tiny_config)


def _mismatches(original, loaded) -> list[str]:
    bad = []
    for name in COMPONENTS:
        a, b = dict(getattr(original, name).named_parameters()), dict(getattr(loaded, name).named_parameters())
        if a.keys() != b.keys():
            bad.append(f"{name}: parameter names differ: {sorted(a.keys() ^ b.keys())[:5]}")
            continue
        bad += [f"{name}.{k}" for k in a
                if b[k].is_meta or b[k].shape != a[k].shape or not torch.equal(a[k], b[k])]
    return bad


# -- (a) round trip -----------------------------------------------------------------------------------
def test_layout_is_original_format(tiny):
    sd = to_original_state_dict(tiny)
    n = sum(len(getattr(tiny, c).state_dict()) for c in COMPONENTS)
    assert len(sd) == n  # one name per parameter, none dropped or merged
    assert {k.split(".")[0] for k in sd} == {"model", "first_stage_model", "cond_stage_model"}
    # the keys diffusers uses to recognise an SD 1.x checkpoint and its CLIP text encoder
    for key in ("model.diffusion_model.input_blocks.0.0.weight",
                "model.diffusion_model.middle_block.1.proj_in.weight",
                "model.diffusion_model.output_blocks.2.1.transformer_blocks.0.attn2.to_k.weight",
                "model.diffusion_model.input_blocks.2.0.op.weight",  # tiny: layers_per_block=1
                "model.diffusion_model.output_blocks.1.1.conv.weight",
                "first_stage_model.decoder.up.0.block.0.conv1.weight",
                "first_stage_model.encoder.down.0.downsample.conv.weight",
                "first_stage_model.quant_conv.weight",
                "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"):
        assert key in sd, key
    assert sd["first_stage_model.encoder.mid.attn_1.q.weight"].ndim == 4  # 1x1 conv, as in LDM


@pytest.mark.parametrize("config_kind", ["write_config_folder", "save_pretrained"])
def test_round_trip_is_exact(tiny, tiny_file, tiny_config, tiny_loaded, tmp_path, config_kind):
    if config_kind == "write_config_folder":
        loaded = tiny_loaded
    else:  # a full diffusers folder of the same architecture also serves as --config
        tiny.save_pretrained(str(tmp_path / "cfg"), safe_serialization=True)
        loaded = load_pipeline(tiny_file, config=tmp_path / "cfg")
    assert _mismatches(tiny, loaded) == []
    assert loaded.unet.dtype == torch.float32


def test_round_trip_with_realistic_extras(tiny, tiny_config, tmp_path):
    """Released checkpoints also hold the DDPM schedule buffers and CLIP's position_ids: ignored."""
    sd = to_original_state_dict(tiny)
    sd["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    sd["alphas_cumprod"] = torch.linspace(1, 0.01, 1000)
    sd["betas"] = torch.linspace(0.00085, 0.012, 1000)
    save_file(sd, str(tmp_path / "extras.safetensors"))
    assert _mismatches(tiny, load_pipeline(tmp_path / "extras.safetensors", config=tiny_config)) == []


# -- (b) end to end ----------------------------------------------------------------------------------
def test_same_image(tiny, tiny_loaded):
    from mobilesd.pipeline import HostPipeline

    ref = HostPipeline.from_diffusers(tiny)
    out = HostPipeline.from_diffusers(tiny_loaded)
    # A single file holds no scheduler config (it comes from the config folder), and the in-memory
    # original's differs from any saved one in diffusers' bookkeeping: its `_use_default_values` lists
    # timestep_spacing, so DPMSolver.from_config drops it ("linspace": 999, 500) where a saved config
    # passes "leading" on (667, 334). Same scheduler config on both: this compares the weights.
    out.scheduler_config = dict(ref.scheduler_config)
    a = ref.generate("a cat", steps=2, seed=0)
    b = out.generate("a cat", steps=2, seed=0)
    assert a.dtype == np.uint8 and a.shape == b.shape
    np.testing.assert_array_equal(b, a)


# -- (c) pickle checkpoints --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_ckpt(tiny, tmp_path_factory):
    path = save_single_file(tiny, tmp_path_factory.mktemp("ckpt") / "tiny-sd.ckpt", fmt="ckpt")
    assert "model.diffusion_model.input_blocks.0.0.weight" in torch.load(path, weights_only=True)["state_dict"]
    return path


@pytest.mark.parametrize("with_config", [False, True])
def test_pickle_checkpoint_is_refused_without_unpickling(tiny_ckpt, tiny_config, monkeypatch, with_config):
    def no_unpickling(*a, **k):
        raise AssertionError("a pickle checkpoint was unpickled")

    monkeypatch.setattr(torch, "load", no_unpickling)
    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    with pytest.raises(MobileSDError) as err:
        load_pipeline(tiny_ckpt, config=tiny_config if with_config else None)
    assert "pickle" in err.value.problem
    assert "--allow-pickle" in err.value.fix


def test_pickle_checkpoint_loads_with_allow_pickle(tiny, tiny_ckpt, tiny_config):
    loaded = load_pipeline(tiny_ckpt, allow_pickle=True, config=tiny_config)
    assert _mismatches(tiny, loaded) == []


# -- (d, e) broken or foreign files ------------------------------------------------------------------
@pytest.mark.parametrize("with_config", [False, True])
def test_truncated_safetensors(tiny_file, tiny_config, tmp_path, with_config):
    data = tiny_file.read_bytes()
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(MobileSDError) as err:
        load_pipeline(bad, config=tiny_config if with_config else None)
    assert str(bad) in err.value.problem
    assert err.value.fix


@pytest.mark.parametrize("payload", [b"", b"\x00" * 7, b"not a safetensors file at all" * 10])
def test_garbage_safetensors(tmp_path, payload):
    bad = tmp_path / "garbage.safetensors"
    bad.write_bytes(payload)
    with pytest.raises(MobileSDError, match="not a readable safetensors file"):
        load_pipeline(bad)


def test_not_an_sd_checkpoint(tmp_path):
    path = tmp_path / "one-tensor.safetensors"
    save_file({"weight": torch.randn(4, 4)}, str(path))
    with pytest.raises(MobileSDError) as err:
        load_pipeline(path)
    assert "not a Stable Diffusion checkpoint" in err.value.problem


def test_not_an_sd_checkpoint_with_config(tmp_path, tiny_config):
    path = tmp_path / "one-tensor.safetensors"
    save_file({"weight": torch.randn(4, 4)}, str(path))
    with pytest.raises(MobileSDError) as err:
        load_pipeline(path, config=tiny_config)
    assert str(path) in err.value.problem


def test_incomplete_checkpoint_is_an_error(tiny, tiny_config, tmp_path):
    """A missing weight must fail at load time, not leave a meta tensor that fails at generation."""
    for missing in ("model.diffusion_model.out.2.bias",
                    "first_stage_model.decoder.up.0.block.1.conv1.bias",
                    "cond_stage_model.transformer.text_model.final_layer_norm.weight"):
        sd = to_original_state_dict(tiny)
        del sd[missing]
        path = tmp_path / "incomplete.safetensors"
        save_file(sd, str(path))
        with pytest.raises(MobileSDError) as err:
            load_pipeline(path, config=tiny_config)
        assert str(path) in err.value.problem, missing


# -- (f) architecture inference ----------------------------------------------------------------------
@pytest.mark.parametrize("context_dim, arch", [(1024, "sd21"), (768, "sd15"), (None, "sd15")])
def test_infer_architecture(tmp_path, context_dim, arch):
    tensors = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 1, 1)}
    if context_dim:
        key = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"
        tensors[key] = torch.zeros(4, context_dim)
    path = tmp_path / "keys.safetensors"
    save_file(tensors, str(path))
    assert _infer_architecture(path)[0] == arch


# -- (g) SD 1.5 scale --------------------------------------------------------------------------------
def _digests(pipe) -> dict[str, str]:
    out = {}
    for name in COMPONENTS:
        for k, p in getattr(pipe, name).named_parameters():
            t = p.detach().contiguous()
            h = hashlib.blake2b(t.reshape(-1).view(torch.uint8).numpy(), digest_size=16)
            out[f"{name}.{k}"] = f"{t.dtype}{tuple(t.shape)}:{h.hexdigest()}"
    return out


@pytest.mark.slow
def test_sd15_single_file_with_inferred_config(tmp_path, monkeypatch, request):
    """The real SD 1.5 architecture (random weights, ~4.3 GB file) loads with no --config, offline."""
    if "slow" not in (request.config.getoption("markexpr") or "") and not os.environ.get("MOBILESD_SLOW"):
        pytest.skip("SD 1.5 scale (~1.5 min, ~5 GB RAM, 4.3 GB of disk): run with -m slow")
    from mobilesd.architectures import ARCHITECTURES, build_random_pipeline

    cache = tmp_path / "cache"
    monkeypatch.setenv("MOBILESD_CACHE", str(cache))
    path = tmp_path / "sd15-random.safetensors"
    try:
        pipe = build_random_pipeline("sd15", seed=0)
        expected = _digests(pipe)
        save_single_file(pipe, path)
        del pipe
        gc.collect()
        assert _infer_architecture(path)[0] == "sd15"
        loaded = load_pipeline(path)  # no config: inferred, offline config folder written into the cache
        assert (cache / "configs" / "sd15" / "model_index.json").exists()
        assert loaded.unet.config.cross_attention_dim == ARCHITECTURES["sd15"]["unet"]["cross_attention_dim"]
        got = _digests(loaded)
        assert got.keys() == expected.keys()
        assert [k for k in expected if got[k] != expected[k]] == []
    finally:
        path.unlink(missing_ok=True)
        shutil.rmtree(cache, ignore_errors=True)
