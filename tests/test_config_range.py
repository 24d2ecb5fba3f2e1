"""Configs that diffusers accepts either export on every target or are refused, before any conversion, with
an error naming the config field and the fix.

Each model is the tiny SD ("tiny" in mobilesd.architectures) with some fields changed: pairs where a number
is usual, tuples per block, linear projections, odd channel and group counts, unusual sizes, and fields whose
forward pass the components must carry over (or refuse). Three checks:

* every buildable config: the UNet chunks, chained as an app does, and the VAE decoder component compute
  what diffusers' own UNet2DConditionModel / AutoencoderKL compute (cheap, PyTorch only) - a component that
  silently drops part of the forward pass would pass export verification, which compares against it;
* configs mobilesd refuses: a MobileSDError naming the field, raised at load time, no bundle written;
* exports: one model combining the unusual fields on every target (fast); every config on every target is
  the slow matrix (``-m slow``).
"""

from __future__ import annotations

import copy
import functools
import os

import pytest
import torch

from mobilesd.errors import MobileSDError

CROSS2 = dict(down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
              up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))
ODD_TEXT = dict(hidden_size=20, num_attention_heads=5, intermediate_size=44, projection_dim=20)

# name -> overrides of the tiny config per component
CONFIGS = {
    "per_block_tuples": dict(unet=dict(layers_per_block=(1, 2), attention_head_dim=(2, 4),
                                       transformer_layers_per_block=(1, 2), **CROSS2)),
    "linear_projection": dict(unet=dict(use_linear_projection=True, upcast_attention=True, attention_head_dim=(2, 4))),
    "odd_channels_groups": dict(unet=dict(block_out_channels=(20, 30), norm_num_groups=5, attention_head_dim=5,
                                          cross_attention_dim=20),
                                vae=dict(block_out_channels=(12, 18), norm_num_groups=3), text=ODD_TEXT),
    "three_levels": dict(unet=dict(block_out_channels=(16, 32, 32), sample_size=12,
                                   down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                                   up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")),
                         vae=dict(block_out_channels=(8, 16, 16), down_block_types=("DownEncoderBlock2D",) * 3,
                                  up_block_types=("UpDecoderBlock2D",) * 3)),
    "one_level": dict(unet=dict(block_out_channels=(32,), down_block_types=("CrossAttnDownBlock2D",),
                                up_block_types=("CrossAttnUpBlock2D",))),
    "sample_size_pair": dict(unet=dict(sample_size=(6, 10))),
    "no_mid_block": dict(unet=dict(mid_block_type=None)),
    "no_post_quant_conv": dict(vae=dict(use_quant_conv=False, use_post_quant_conv=False,
                                        mid_block_add_attention=False)),
    "kernels_activations": dict(unet=dict(conv_in_kernel=1, conv_out_kernel=1, act_fn="gelu",
                                          resnet_time_scale_shift="scale_shift", flip_sin_to_cos=False, freq_shift=1,
                                          timestep_post_act="silu", time_embedding_dim=48)),
    "time_embedding_act": dict(unet=dict(time_embedding_act_fn="silu")),
    "center_input_sample": dict(unet=dict(center_input_sample=True)),
    "only_cross_attention": dict(unet=dict(only_cross_attention=True)),
    "simple_cross_attention": dict(unet=dict(down_block_types=("SimpleCrossAttnDownBlock2D", "ResnetDownsampleBlock2D"),
                                             up_block_types=("ResnetUpsampleBlock2D", "SimpleCrossAttnUpBlock2D"),
                                             mid_block_type="UNetMidBlock2DSimpleCrossAttn")),
    "self_attention_blocks": dict(unet=dict(down_block_types=("AttnDownBlock2D", "DownBlock2D"),
                                            up_block_types=("UpBlock2D", "AttnUpBlock2D"))),
    "fourier_time_embedding": dict(unet=dict(time_embedding_type="fourier", time_embedding_dim=64)),
    "text_gelu": dict(text=dict(hidden_act="gelu", num_hidden_layers=1)),
    "text_gelu_tanh": dict(text=dict(hidden_act="gelu_pytorch_tanh")),
}
# the unusual fields above in one model: the fast export check on every target
COMBINED = dict(unet=dict(block_out_channels=(20, 30), norm_num_groups=5, layers_per_block=(1, 2),
                          attention_head_dim=(5, 3), transformer_layers_per_block=(1, 2), cross_attention_dim=20,
                          use_linear_projection=True, sample_size=(6, 10), mid_block_type=None,
                          time_embedding_act_fn="silu", **CROSS2),
                vae=dict(block_out_channels=(12, 18), norm_num_groups=3, use_post_quant_conv=False,
                         mid_block_add_attention=False),
                text=dict(ODD_TEXT, hidden_act="gelu", num_hidden_layers=1))
# configs diffusers accepts that mobilesd refuses: name -> (overrides, text the error must contain)
REFUSED = {
    "lcm_guidance_embedding": (dict(unet=dict(time_cond_proj_dim=16)), "unet time_cond_proj_dim=16"),
    "encoder_hid_proj": (dict(unet=dict(encoder_hid_dim=48), text=dict(hidden_size=48, num_attention_heads=4)),
                         "unet encoder_hid_dim=48"),
    "class_embedding": (dict(unet=dict(class_embed_type="timestep")), "unet class_embed_type='timestep'"),
    "learned_variance": (dict(unet=dict(out_channels=8)), "unet in_channels/out_channels=(4, 8)"),
    "text_width_mismatch": (dict(text=dict(hidden_size=48, num_attention_heads=4)),
                            "unet cross_attention_dim=32 is not supported: the text encoder's states are 48 wide"),
    "small_vocabulary": (dict(text=dict(vocab_size=1000)), "text_encoder vocab_size=1000"),
    "short_positions": (dict(text=dict(max_position_embeddings=64)), "text_encoder max_position_embeddings=64"),
    "vae_shift_factor": (dict(vae=dict(shift_factor=0.1)), "vae shift_factor=0.1"),
    "vae_latent_channels": (dict(vae=dict(latent_channels=8)), "vae latent_channels=8"),
}
# (config, target) -> the error an export must stop with, naming the field: the LiteRT GPU delegate computes
# the Fourier time embedding's phase in fp16 (Core ML and ONNX keep it fp32)
REFUSED_ON = {("fourier_time_embedding", "android"): "unet time_embedding_type='fourier'"}
TARGETS = ("android", "onnx", "ios")


@functools.lru_cache(maxsize=1)
def _tokenizer():
    from mobilesd.tokenizer import load_clip_tokenizer

    return load_clip_tokenizer()


def build_pipeline(overrides: dict, seed: int = 0):
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from mobilesd.architectures import ARCHITECTURES, SCHEDULER_CONFIG_SD

    spec = copy.deepcopy(ARCHITECTURES["tiny"])
    for part in ("unet", "vae", "text"):
        spec[part].update(overrides.get(part, {}))
    torch.manual_seed(seed)
    return StableDiffusionPipeline(
        vae=AutoencoderKL(**spec["vae"]), text_encoder=CLIPTextModel(CLIPTextConfig(**spec["text"])),
        tokenizer=_tokenizer(), unet=UNet2DConditionModel(**spec["unet"]),
        scheduler=PNDMScheduler.from_config(SCHEDULER_CONFIG_SD), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)


def saved_model(overrides: dict, path):
    if not (path / "model_index.json").exists():
        build_pipeline(overrides).save_pretrained(str(path), safe_serialization=True)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> a saved diffusers folder (made on first use, kept for the module)."""
    root = tmp_path_factory.mktemp("configs")

    class Models(dict):
        def __missing__(self, name):
            overrides = COMBINED if name == "combined" else CONFIGS[name]
            self[name] = saved_model(overrides, root / name)
            return self[name]

    return Models()


@pytest.fixture
def one_thread():
    """Tiny ops: one thread (on a busy 2-core machine, more mostly spin: 8x slower measured)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# -- the components compute what diffusers computes -------------------------------------------------------
@pytest.mark.parametrize("name", list(CONFIGS) + ["combined"])
def test_components_match_diffusers(name, one_thread):
    from mobilesd.components import (latent_shape, make_unet_chunk, plan_unet_chunks, run_unet_chunks, unet_stages,
                                     vae_decoder_component)
    from mobilesd.loading import _check_pipeline

    pipe = build_pipeline(COMBINED if name == "combined" else CONFIGS[name])
    _check_pipeline(pipe, name)  # what load_pipeline checks: these configs are accepted
    unet = pipe.unet.eval()
    c, h, w = latent_shape(pipe)
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(2, c, h, w, generator=g)
    ctx = torch.randn(2, 77, pipe.text_encoder.config.hidden_size, generator=g)
    t = torch.tensor([321.0])
    with torch.no_grad():
        ref = unet(sample, t, encoder_hidden_states=ctx).sample
        n = len(unet_stages(unet))
        for chunks in ([(0, n)], plan_unet_chunks(unet, min(3, n))):
            mods = [make_unet_chunk(unet, a, b).eval() for a, b in chunks]
            specs = [(m.input_names(), m.output_names(), m.aliases()) for m in mods]

            def run(i, inputs):
                out = mods[i](**inputs)
                return [out] if isinstance(out, torch.Tensor) else list(out)

            got = run_unet_chunks(mods, specs, sample, t, ctx, run)
            torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5, msg=f"{name}: UNet chunks {chunks}")
        comp = vae_decoder_component(pipe)
        latent = comp.example_inputs["latent"]
        image = pipe.vae.decode(latent / pipe.vae.config.scaling_factor).sample
        expected = (image / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
        torch.testing.assert_close(comp.run({"latent": latent})[0], expected, rtol=1e-4, atol=1e-5)


# -- refused, naming the field, before conversion ---------------------------------------------------------
@pytest.mark.parametrize("name", list(REFUSED))
def test_refused_configs_name_the_field(name, tmp_path):
    from mobilesd.export import ExportOptions, export

    overrides, expected = REFUSED[name]
    model = saved_model(overrides, tmp_path / name)
    out = tmp_path / "bundle"
    with pytest.raises(MobileSDError) as err:
        export(model, out, ExportOptions(target="onnx", verify_steps=1, progress=False))
    assert expected in err.value.problem and str(model) in err.value.problem, err.value.problem
    assert err.value.fix
    assert not out.exists() and not list(tmp_path.glob(".bundle.partial-*"))


@pytest.mark.parametrize("target, refused", [("android", True), ("onnx", False), ("ios", False)])
def test_fourier_time_embedding_on_a_fp16_phase_runtime(target, refused):
    """Checked by the converter before it converts the UNet (the slow matrix exports it on every target)."""
    from mobilesd.components import Component, UNetChunk, unet_example_inputs, unet_stages
    from mobilesd.converters import get_converter

    pipe = build_pipeline(CONFIGS["fourier_time_embedding"])
    chunk = UNetChunk(pipe.unet, 0, len(unet_stages(pipe.unet)))
    comp = Component("unet", "unet", chunk, unet_example_inputs(pipe), chunk.output_names())
    conv = get_converter(target)
    precision = "fp16" if target != "onnx" else "fp32"
    if refused:
        with pytest.raises(MobileSDError, match=REFUSED_ON[("fourier_time_embedding", target)]) as err:
            conv.check_component(comp, precision)
        assert "--target ios" in err.value.fix
    else:
        conv.check_component(comp, precision)


# -- exports ----------------------------------------------------------------------------------------------
def _export(model, target, out):
    from mobilesd.export import ExportOptions, export

    bundle = export(model, out, ExportOptions(target=target, verify_steps=1, progress=False))
    m = bundle.manifest
    assert m["verification"]["passed"], m["verification"]
    return m


@pytest.mark.parametrize("target", TARGETS)
def test_combined_unusual_config_exports(target, models, tmp_path):
    m = _export(models["combined"], target, tmp_path / "b")
    assert (m["image"]["height"], m["image"]["width"]) == (12, 20)  # sample_size (6, 10) x the VAE's 2
    if target == "android":
        assert all(g["gpu"]["fully_accelerated"] for g in m["graphs"])


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_config_exports(name, target, models, tmp_path, request):
    if "slow" not in (request.config.getoption("markexpr") or "") and not os.environ.get("MOBILESD_SLOW"):
        pytest.skip("the full config x target matrix (~50 exports, 30+ min on 2 cores): run with -m slow")
    if (name, target) in REFUSED_ON:
        with pytest.raises(MobileSDError, match=REFUSED_ON[(name, target)]):
            _export(models[name], target, tmp_path / "b")
        assert not (tmp_path / "b").exists()
        return
    _export(models[name], target, tmp_path / "b")
