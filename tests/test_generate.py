"""The host pipeline reproduces diffusers, and runs bundles on every host runtime."""

import numpy as np
import pytest
from PIL import Image

from mobilesd.pipeline import HostPipeline, diffusers_reference

PROMPT = "a handwritten digit three"


@pytest.mark.parametrize("scheduler", ["dpm", "euler", "ddim"])
def test_torch_runtime_equals_diffusers_exactly(tiny_pipe, scheduler):
    ref = diffusers_reference(tiny_pipe, PROMPT, steps=6, guidance=7.5, seed=11, scheduler=scheduler)
    got = HostPipeline.from_diffusers(tiny_pipe).generate(PROMPT, steps=6, guidance=7.5, seed=11, scheduler=scheduler)
    assert np.array_equal(got, ref)


def test_cfg_as_two_calls_and_no_guidance(tiny_pipe):
    ref = diffusers_reference(tiny_pipe, PROMPT, steps=4, guidance=5.0, seed=1)
    assert np.array_equal(HostPipeline.from_diffusers(tiny_pipe, unet_batch=1).generate(
        PROMPT, steps=4, guidance=5.0, seed=1), ref)
    ref1 = diffusers_reference(tiny_pipe, PROMPT, steps=4, guidance=1.0, seed=1)
    assert np.array_equal(HostPipeline.from_diffusers(tiny_pipe).generate(PROMPT, steps=4, guidance=1.0, seed=1), ref1)


def test_reduce_memory_frees_finished_stages_and_keeps_the_image(tiny_pipe, tiny_model_dir):
    from mobilesd.errors import MobileSDError
    from mobilesd.loading import load_pipeline

    ref = HostPipeline.from_diffusers(tiny_pipe).generate(PROMPT, steps=3, guidance=7.5, seed=4)
    own = load_pipeline(tiny_model_dir)   # its own copy: reduce_memory frees weights in place
    hp = HostPipeline.from_diffusers(own, reduce_memory=True)
    assert np.array_equal(hp.generate(PROMPT, steps=3, guidance=7.5, seed=4), ref)
    for freed in (own.text_encoder, own.unet, own.vae.encoder):
        assert all(p.device.type == "meta" for p in freed.parameters())
    assert all(p.device.type == "cpu" for p in own.vae.decoder.parameters())   # the last stage keeps its own
    with pytest.raises(MobileSDError, match="freed its text encoder"):
        hp.generate(PROMPT, steps=1, seed=4)


# Bundle images vs diffusers' own pipeline on the same model, seed and scheduler. Tolerance: mean absolute
# difference of the uint8 images, in 0-255 units (fp16 weights: < 1; fp32 ONNX: < 0.1).
@pytest.mark.parametrize("fixture,runtime,tol", [("android_bundle", "tflite", 1.0), ("onnx_bundle", "onnx", 0.1),
                                                 ("android_bundle", "torch", 0.0)])
def test_bundle_matches_diffusers(request, tiny_pipe, fixture, runtime, tol):
    bundle = request.getfixturevalue(fixture)
    hp = HostPipeline.from_bundle(bundle.root, runtime=runtime)
    for scheduler in ("dpm", "euler"):
        ref = diffusers_reference(tiny_pipe, PROMPT, steps=8, guidance=7.5, seed=5, scheduler=scheduler)
        got = hp.generate(PROMPT, steps=8, guidance=7.5, seed=5, scheduler=scheduler)
        assert got.shape == ref.shape == (16, 16, 3)
        assert np.abs(got.astype(float) - ref.astype(float)).mean() <= tol


def test_generate_cli_writes_png(android_bundle, tmp_path):
    from mobilesd.cli import main

    out = tmp_path / "img.png"
    rc = main(["generate", "--bundle", str(android_bundle.root), "--prompt", PROMPT, "--steps", "3",
               "--seed", "2", "--scheduler", "ddim", "--out", str(out)])
    assert rc == 0
    img = np.asarray(Image.open(out))
    assert img.shape == (16, 16, 3) and img.dtype == np.uint8


def test_generate_bad_requests(android_bundle, tmp_path, capsys):
    from mobilesd.cli import main

    assert main(["generate", "--bundle", str(tmp_path), "--prompt", "x"]) == 2
    assert "not a mobilesd bundle" in capsys.readouterr().err
    assert main(["generate", "--bundle", str(android_bundle.root), "--prompt", "x", "--runtime", "onnx"]) == 2
    assert "cannot run on --runtime onnx" in capsys.readouterr().err
    assert main(["generate", "--bundle", str(android_bundle.root), "--prompt", "x", "--steps", "0"]) == 2


def test_low_memory_graph_stages_give_the_same_image(onnx_bundle):
    """The export's verification run at SD scale: one graph open at a time and, on onnxruntime, no memory
    arena. Same graphs, so the same image as with every session kept open."""
    from mobilesd.bundle import Bundle
    from mobilesd.pipeline import GraphStages
    from mobilesd.runtime.graphs import OnnxSession

    default = HostPipeline.from_bundle(onnx_bundle.root, runtime="onnx")
    low = GraphStages(Bundle(onnx_bundle.root, onnx_bundle.manifest), low_memory=True)
    assert low.sessions == {}
    sess = low._open("vae_decoder")
    assert isinstance(sess, OnnxSession)
    assert not sess.session.get_session_options().enable_cpu_mem_arena
    hp = HostPipeline(low, default.tokenizer, default.scheduler_config, default.latent_shape,
                      default.default_scheduler, timestep_spacing=default.timestep_spacing)
    assert np.array_equal(hp.generate(PROMPT, steps=3, guidance=7.5, seed=6),
                          default.generate(PROMPT, steps=3, guidance=7.5, seed=6))
