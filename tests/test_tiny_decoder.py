"""--vae-decoder tiny=PATH: a diffusers AutoencoderTiny (TAESD) decoder exported in place of the full VAE decoder.

Uses the tiny decoder distilled here from the digits VAE (assets/tiny-digits-taesd); nothing is trained here.
"""

import json

import numpy as np
import pytest
import torch

from mobilesd.errors import MobileSDError
from mobilesd.export import ExportOptions, export, make_plan
from mobilesd.tiny.finetune import asset_path

TAESD = asset_path("tiny-digits-taesd")
PROMPT = "a handwritten digit four"


@pytest.fixture(scope="module")
def digits_pipe():
    from mobilesd.loading import default_model_path, load_pipeline

    return load_pipeline(default_model_path())


def test_component_keeps_the_contract_and_taesd_conventions(digits_pipe):
    """Same I/O as the full decoder: the sampler's latent in, [1, H, W, 3] in [0, 1] out; inside, diffusers'
    AutoencoderTiny decode of that latent as it is (TAESD: scaling_factor 1, not SD's)."""
    from mobilesd.components import load_tiny_vae, vae_decoder_component

    tiny = load_tiny_vae(TAESD, digits_pipe)
    assert tiny.config.scaling_factor == 1.0 and digits_pipe.vae.config.scaling_factor != 1.0
    comp = vae_decoder_component(digits_pipe, tiny_vae=tiny)
    full = vae_decoder_component(digits_pipe)
    assert comp.meta["decoder"] == "tiny" and full.meta["decoder"] == "full"
    assert comp.name == full.name == "vae_decoder" and comp.output_names == full.output_names == ["image"]
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3)) * 1.5
    with torch.no_grad():
        got = comp.module(z)
        ref = (tiny.decode(z).sample / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)   # what diffusers' pipeline decodes
        full_img = full.module(z)
    assert got.shape == full_img.shape == (2, 32, 32, 3)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
    assert float(got.min()) >= 0 and float(got.max()) <= 1


def test_tiny_decoder_is_close_to_the_full_decoder(digits_pipe):
    """On latents of real held-out digits (not seen in its training): PSNR against the full decoder."""
    from mobilesd.components import TinyVAEDecoder, VAEDecoder, load_tiny_vae
    from mobilesd.tiny import data
    from mobilesd.tiny.train import encode_posterior

    x, _ = data.load_split("heldout")
    mean, _ = encode_posterior(digits_pipe.vae, x[:64])
    z = mean * digits_pipe.vae.config.scaling_factor
    with torch.no_grad():
        a = VAEDecoder(digits_pipe.vae)(z)
        b = TinyVAEDecoder(load_tiny_vae(TAESD, digits_pipe))(z)
    psnr = 10 * np.log10(1 / float(((a - b) ** 2).mean()))
    recorded = json.loads((TAESD / "metrics.json").read_text())["decoder"]
    print(f"tiny vs full decoder PSNR on 64 held-out latents: {psnr:.2f} dB (card, all held-out: "
          f"{recorded['psnr_vs_full_decoder_heldout_real_latents_db']} dB)")
    assert psnr > 25


def test_wrong_tiny_decoders_are_refused(tmp_path, tiny_pipe):
    from diffusers import AutoencoderTiny

    from mobilesd.components import load_tiny_vae

    with pytest.raises(MobileSDError, match="upsampling"):            # factor 4 for a model whose VAE has 2
        load_tiny_vae(TAESD, tiny_pipe)
    three = tmp_path / "three"
    AutoencoderTiny(latent_channels=3, encoder_block_out_channels=(8, 8, 8), decoder_block_out_channels=(8, 8, 8),
                    num_encoder_blocks=(1, 1, 1), num_decoder_blocks=(1, 1, 0)).save_pretrained(str(three))
    with pytest.raises(MobileSDError, match="latent_channels"):
        load_tiny_vae(three, tiny_pipe)
    with pytest.raises(MobileSDError, match="not understood"):
        make_plan(ExportOptions(vae_decoder="taesd"))
    with pytest.raises(MobileSDError, match="no config.json"):
        make_plan(ExportOptions(vae_decoder=f"tiny={tmp_path / 'nowhere'}"))
    kl = tmp_path / "kl"
    tiny_pipe.vae.save_pretrained(str(kl))
    with pytest.raises(MobileSDError, match="not an AutoencoderTiny"):
        load_tiny_vae(kl)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((three / "config.json").read_text())
    torch.save({}, pickled / "diffusion_pytorch_model.bin")
    with pytest.raises(MobileSDError, match="pickle"):
        make_plan(ExportOptions(vae_decoder=f"tiny={pickled}"))


@pytest.fixture(scope="module")
def taesd_bundle(tmp_path_factory):
    """An android bundle with the tiny decoder: the fast-path bundle (also LCM LoRA, --cfg none), shared with
    tests/test_fast_assets.py; the decoder graph and its checks do not depend on the rest."""
    from bundles import fast_path_bundle

    return fast_path_bundle(tmp_path_factory)


def test_tiny_decoder_bundle_on_the_gpu_delegate(taesd_bundle):
    from mobilesd.bundle import load_bundle, sha256_file

    m = load_bundle(taesd_bundle.root).manifest
    dec = next(g for g in m["graphs"] if g["role"] == "vae_decoder")
    assert dec["name"] == "vae_decoder" and dec["meta"]["decoder"] == "tiny"
    assert [i["name"] for i in dec["inputs"]] == ["latent"] and dec["outputs"][0]["shape"] == [1, 32, 32, 3]
    gpu = dec["gpu"]
    assert gpu["fully_accelerated"] and gpu["unsupported_ops"] == [] and gpu["passed"] and gpu["ran"]
    assert gpu["output_rel_l2"] <= gpu["output_threshold"]
    assert m["source"]["vae_decoder"] == {"kind": "tiny", "class": "AutoencoderTiny", "model": str(TAESD.resolve()),
                                          "sha256": sha256_file(TAESD / "diffusion_pytorch_model.safetensors")}
    assert m["verification"]["end_to_end"]["passed"]


def test_tiny_decoder_bundle_smaller_and_close_to_the_full_decoder(taesd_bundle, tmp_path):
    """The full decoder converted the same way (same converter and precision) next to the bundle's tiny one: the
    tiny graph is smaller, and decoding the bundle's own final latent with both gives the PSNR on the device
    graphs. The bundle's other files are the model's, so the full-decoder bundle differs by the decoder alone."""
    from mobilesd.components import vae_decoder_component
    from mobilesd.export.options import make_plan as plan_of
    from mobilesd.loading import default_model_path, load_pipeline
    from mobilesd.pipeline import HostPipeline
    from mobilesd.runtime.graphs import open_graph

    m = taesd_bundle.manifest
    tiny_graph = next(g for g in m["graphs"] if g["role"] == "vae_decoder")
    pipe = load_pipeline(default_model_path())
    full = vae_decoder_component(pipe)
    conv = plan_of(ExportOptions(target="android")).converter()
    graph = conv.convert(full, tmp_path, m["precision"])
    full_bytes = graph.size_bytes
    total = sum(f["size"] for f in m["files"].values())
    print(f"decoder graph: tiny {tiny_graph['size_bytes']} B, full {full_bytes} B; bundle: {total} B with the tiny "
          f"decoder, {total - tiny_graph['size_bytes'] + full_bytes} B with the full one")
    assert tiny_graph["size_bytes"] < 0.8 * full_bytes

    hp = HostPipeline.from_bundle(taesd_bundle.root)
    latents = {}
    original = hp.stages.decode

    def keep_latent(x):
        latents["x"] = x
        return original(x)

    hp.stages.decode = keep_latent
    tiny_img = hp.generate(PROMPT, steps=4, seed=0, output="float")   # the bundle's LCM, no CFG
    sess = open_graph(tmp_path / graph.file, ["latent"], ["image"])
    full_img = sess.run({"latent": latents["x"]})[0][0]
    psnr = 10 * np.log10(1 / float(((tiny_img - full_img) ** 2).mean()))
    print(f"bundle graphs: tiny vs full decoder on the same latent: PSNR {psnr:.2f} dB")
    assert psnr > 20
