"""LoRA fusion (--lora FILE[:SCALE]): formats, clear errors, and the fused bundle against diffusers' own pipeline.

Uses the bold-strokes LoRA trained here (assets/tiny-digits-bold-lora: the same adapter in diffusers and kohya
format) on the default digits model; nothing is trained in the tests.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from mobilesd.errors import MobileSDError
from mobilesd.export import ExportOptions, export, make_plan
from mobilesd.lora import LoraSpec, fuse_loras, inspect_lora, parse_lora_arg
from mobilesd.tiny.finetune import asset_path

BOLD = asset_path("tiny-digits-bold-lora")
DIFFUSERS = BOLD / "bold-diffusers.safetensors"
KOHYA = BOLD / "bold-kohya.safetensors"
PROMPT = "a handwritten number seven"


@pytest.fixture(scope="module")
def digits_pipe():
    from mobilesd.loading import default_model_path, load_pipeline

    return load_pipeline(default_model_path())


def _fused(path, scale=1.0, **kw):
    from mobilesd.loading import default_model_path, load_pipeline

    pipe = load_pipeline(default_model_path())
    fuse_loras(pipe, [inspect_lora(LoraSpec(str(path), scale), **kw)], **kw)
    return pipe


def test_parse_lora_arg():
    assert parse_lora_arg("a/b.safetensors") == LoraSpec("a/b.safetensors", 1.0)
    assert parse_lora_arg("a/b.safetensors:0.5") == LoraSpec("a/b.safetensors", 0.5)
    assert parse_lora_arg("C:/x/b.safetensors") == LoraSpec("C:/x/b.safetensors", 1.0)   # a colon, no number
    with pytest.raises(MobileSDError, match="finite"):
        parse_lora_arg("b.safetensors:nan")


def test_formats_identified():
    d, k = inspect_lora(LoraSpec(str(DIFFUSERS))), inspect_lora(LoraSpec(str(KOHYA), 0.5))
    assert (d.format, k.format) == ("diffusers", "kohya")
    assert d.components == k.components == ("unet",) and d.layers == k.layers > 0
    assert k.scale == 0.5 and d.sha256 != k.sha256 and Path(d.file).is_absolute()


def test_kohya_and_diffusers_fuse_to_identical_weights(digits_pipe):
    a, b = _fused(DIFFUSERS), _fused(KOHYA)
    sa, sb, base = a.unet.state_dict(), b.unet.state_dict(), digits_pipe.unet.state_dict()
    assert sa.keys() == sb.keys() == base.keys()                     # plain layers again, no peft wrappers
    assert all(torch.equal(sa[n], sb[n]) for n in sa)
    changed = [n for n in sa if not torch.equal(sa[n], base[n])]
    assert changed and all(n.rsplit(".", 2)[-2] in ("to_q", "to_k", "to_v", "0") for n in changed)
    # scale 0.5 moves every changed weight half as far (diffusers' fuse_lora(lora_scale=...))
    half = _fused(KOHYA, 0.5).unet.state_dict()
    n = changed[0]
    torch.testing.assert_close(half[n] - base[n], 0.5 * (sa[n] - base[n]), rtol=1e-4, atol=1e-6)


def test_lora_for_another_architecture_names_the_layer(tiny_pipe):
    """The digits LoRA on the tiny random SD, whose second down block has no attention: refused before
    fusing, naming the first layer that does not exist there."""
    import copy

    pipe = copy.deepcopy(tiny_pipe)
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    with pytest.raises(MobileSDError, match=r"does not fit this model: its layer unet\.down_blocks\.1\.attentions\.0"
                                            r"\.transformer_blocks\.0\.attn1\.to_\w+ does not exist .*another "
                                            r"architecture"):
        fuse_loras(pipe, [inspect_lora(LoraSpec(str(DIFFUSERS)))])
    assert all(torch.equal(before[k], v) for k, v in pipe.unet.state_dict().items())   # nothing fused


def test_lora_with_other_widths_names_the_layer(tmp_path, digits_pipe):
    """A shape mismatch (a LoRA for a wider model): refused naming the layer and both widths."""
    import copy

    from safetensors.torch import load_file, save_file

    sd = load_file(str(KOHYA))
    key = sorted(k for k in sd if k.endswith("lora_down.weight"))[0]
    rank, width = sd[key].shape
    sd[key] = torch.zeros(rank, width + 16)
    wide = tmp_path / "wide.safetensors"
    save_file(sd, str(wide))
    with pytest.raises(MobileSDError, match=rf"layer unet\.\S+ has {width} input features, the LoRA's down matrix "
                                            rf"\({rank}, {width + 16}\) expects {width + 16}"):
        fuse_loras(copy.deepcopy(digits_pipe), [inspect_lora(LoraSpec(str(wide)))])


def test_lora_with_unknown_layer_is_refused(tmp_path, digits_pipe):
    import copy

    from safetensors.torch import load_file, save_file

    sd = load_file(str(KOHYA))
    first = sorted(k for k in sd if k.endswith("lora_down.weight"))[0].split(".")[0]
    renamed = {k.replace(first, "lora_unet_down_blocks_7_attentions_0_proj_in"): v for k, v in sd.items()}
    bad = tmp_path / "other.safetensors"
    save_file(renamed, str(bad))
    with pytest.raises(MobileSDError, match=r"layer unet\.down_blocks\.7\.attentions\.0\.proj_in does not exist"):
        fuse_loras(copy.deepcopy(digits_pipe), [inspect_lora(LoraSpec(str(bad)))])


def test_pickle_lora_needs_allow_pickle(tmp_path, digits_pipe):
    from safetensors.torch import load_file

    pt = tmp_path / "bold.pt"
    torch.save(load_file(str(KOHYA)), pt)
    with pytest.raises(MobileSDError, match="pickle file: loading it can execute arbitrary code"):
        inspect_lora(LoraSpec(str(pt)))
    with pytest.raises(MobileSDError, match="--allow-pickle"):
        make_plan(ExportOptions(loras=(LoraSpec(str(pt)),)))
    # a pickle without the usual suffix is recognised by its bytes
    disguised = tmp_path / "bold.lora"
    disguised.write_bytes(pt.read_bytes())
    with pytest.raises(MobileSDError, match="pickle"):
        inspect_lora(LoraSpec(str(disguised)))
    # allowed: the same weights as the safetensors file
    got = _fused(pt, allow_pickle=True).unet.state_dict()
    ref = _fused(KOHYA).unet.state_dict()
    assert all(torch.equal(got[n], ref[n]) for n in ref)


def test_corrupt_and_wrong_files(tmp_path):
    from safetensors.torch import save_file

    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(KOHYA.read_bytes()[: KOHYA.stat().st_size // 2])
    with pytest.raises(MobileSDError, match="not a readable safetensors file"):
        inspect_lora(LoraSpec(str(cut)))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(MobileSDError, match="not a readable safetensors file"):
        inspect_lora(LoraSpec(str(junk)))
    weights = tmp_path / "model.safetensors"
    save_file({"conv.weight": torch.zeros(2, 2)}, str(weights))
    with pytest.raises(MobileSDError, match="not a LoRA file"):
        inspect_lora(LoraSpec(str(weights)))
    with pytest.raises(MobileSDError, match="does not exist"):
        make_plan(ExportOptions(loras=(LoraSpec(str(tmp_path / "missing.safetensors")),)))


def test_partially_loadable_file_is_refused(tmp_path, digits_pipe):
    """A file mixing key styles that diffusers would load only in part (it drops the rest with a warning)."""
    import copy

    from safetensors.torch import load_file, save_file

    sd = load_file(str(DIFFUSERS))   # unet.<module>.lora.down.weight
    keys = sorted(k for k in sd if k.endswith("lora.down.weight"))
    first = keys[0].removesuffix(".lora.down.weight")
    mixed = dict(sd)
    mixed[first + ".lora_A.weight"] = mixed.pop(first + ".lora.down.weight")
    mixed[first + ".lora_B.weight"] = mixed.pop(first + ".lora.up.weight")
    path = tmp_path / "mixed.safetensors"
    save_file(dict(sorted(mixed.items(), key=lambda kv: kv[0] != first + ".lora_A.weight")), str(path))
    with pytest.raises(MobileSDError, match="diffusers loaded 1 of the"):
        fuse_loras(copy.deepcopy(digits_pipe), [inspect_lora(LoraSpec(str(path)))])


# ---- fused at export: the bundle vs diffusers' own pipeline with the LoRA fused ---------------------------------

@pytest.fixture(scope="module")
def bold_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "android-bold"
    return export(None, out, ExportOptions(target="android", loras=(LoraSpec(str(DIFFUSERS)),), progress=False))


def test_manifest_records_the_lora(bold_bundle):
    from mobilesd.bundle import load_bundle, sha256_file

    m = load_bundle(bold_bundle.root).manifest      # schema-valid, checksums verified
    (entry,) = m["source"]["loras"]
    assert entry["file"] == str(DIFFUSERS.resolve()) and entry["sha256"] == sha256_file(DIFFUSERS)
    assert entry["scale"] == 1.0 and entry["format"] == "diffusers" and entry["components"] == ["unet"]
    assert all(g["gpu"]["fully_accelerated"] and g["gpu"]["passed"] for g in m["graphs"])


def test_bundle_image_equals_diffusers_with_the_lora_fused(bold_bundle, digits_pipe):
    """Same seed and scheduler: the fused bundle is diffusers' LoRA pipeline within the fp16 image bound, and it
    differs visibly from the base model (both measured)."""
    from mobilesd.loading import default_model_path, load_pipeline
    from mobilesd.pipeline import HostPipeline, diffusers_reference
    from mobilesd.verify import IMAGE_THRESHOLDS

    pipe = load_pipeline(default_model_path())          # a diffusers StableDiffusionPipeline
    pipe.load_lora_weights(str(BOLD), weight_name=DIFFUSERS.name)   # diffusers' own loading and fusing
    pipe.fuse_lora()
    hp = HostPipeline.from_bundle(bold_bundle.root)           # tflite
    bound = IMAGE_THRESHOLDS[bold_bundle.manifest["precision"]]
    to_bundle, to_base = [], []
    for seed in (0, 1, 2):
        ref = diffusers_reference(pipe, PROMPT, steps=20, guidance=3.0, seed=seed, scheduler="dpm") / 255.0
        base = diffusers_reference(digits_pipe, PROMPT, steps=20, guidance=3.0, seed=seed, scheduler="dpm") / 255.0
        got = hp.generate(PROMPT, steps=20, guidance=3.0, seed=seed, scheduler="dpm") / 255.0
        to_bundle.append(np.abs(got - ref).mean())
        to_base.append(np.abs(base - ref).mean())
    print(f"bundle vs diffusers+LoRA: {np.mean(to_bundle):.4f}; base vs LoRA: {np.mean(to_base):.4f} (mean abs, [0, 1])")
    assert max(to_bundle) <= bound
    # visibly different: the style moves the image several times the precision's bound, and an order of
    # magnitude more than the export does
    assert np.mean(to_base) > 2 * bound and np.mean(to_base) > 10 * np.mean(to_bundle)


@pytest.mark.slow   # a second export (~1 min); by default the fused weights are compared bit for bit above
def test_kohya_copy_gives_the_same_bundle_checksum(bold_bundle, tmp_path):
    """Same tensors in kohya format: the same fused weights, so byte-identical graphs and the same bundle id
    (the GPU check only adds to the manifest, which the id does not cover; skipped here to save time)."""
    out = tmp_path / "android-bold-kohya"
    b = export(None, out, ExportOptions(target="android", loras=(LoraSpec(str(KOHYA)),), skip_gpu_check=True,
                                        progress=False))
    assert b.manifest["source"]["loras"][0]["format"] == "kohya"
    assert b.manifest["bundle_id"] == bold_bundle.manifest["bundle_id"]
    for rel, info in bold_bundle.manifest["files"].items():
        assert b.manifest["files"][rel]["sha256"] == info["sha256"], rel


def test_torch_runtime_refuses_a_changed_lora(bold_bundle, tmp_path):
    import json
    import shutil

    from mobilesd.pipeline import HostPipeline

    copy = tmp_path / "b"
    shutil.copytree(bold_bundle.root, copy)
    m = json.loads((copy / "manifest.json").read_text())
    m["source"]["loras"][0]["sha256"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(MobileSDError, match="changed since it was recorded"):
        HostPipeline.from_bundle(copy, runtime="torch")


# ---- quantize --lora -------------------------------------------------------------------------------------------

def test_quantize_with_lora_records_it_and_export_refuses_another(tmp_path):
    from mobilesd.quant import quantize

    q = tmp_path / "q"
    quantize(None, q, method="ptq", weight_bits=8, act_bits=16, loras=[LoraSpec(str(KOHYA))], calib_prompts=2,
             steps=2, progress=False)
    import json

    cfg = json.loads((q / "quant_config.json").read_text())
    assert [e["format"] for e in cfg["loras"]] == ["kohya"]
    plan = make_plan(ExportOptions(target="android", quantized=str(q)))
    assert [lora.format for lora in plan.loras] == ["kohya"]      # fused again before the integers go in
    with pytest.raises(MobileSDError, match="already holds its LoRAs"):
        make_plan(ExportOptions(target="android", quantized=str(q), loras=(LoraSpec(str(DIFFUSERS)),)))


def test_kohya_text_encoder_lora_with_alpha(tmp_path, digits_pipe):
    """A kohya LoRA on the text encoder with alpha != rank: fused as W + (alpha / rank) * up @ down, by diffusers'
    conversion (the text encoder path and the alpha both reach peft)."""
    import copy

    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    rank, alpha = 4, 2.0
    tensors, ups = {}, {}
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):   # kohya's usual text-encoder set (diffusers needs it)
        name = f"lora_te_text_model_encoder_layers_0_self_attn_{proj}"
        down, up = torch.randn(rank, 32, generator=g) * 0.1, torch.randn(32, rank, generator=g) * 0.1
        tensors.update({f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up,
                        f"{name}.alpha": torch.tensor(alpha)})
        ups[proj] = up @ down
    path = tmp_path / "te.safetensors"
    save_file(tensors, str(path))
    info = inspect_lora(LoraSpec(str(path), 0.5))
    assert info.format == "kohya" and info.components == ("text_encoder",)
    pipe = copy.deepcopy(digits_pipe)
    attn = lambda p: p.text_encoder.get_submodule("encoder.layers.0.self_attn")  # noqa: E731 (transformers 5 layout)
    w0 = {k: getattr(attn(pipe), k).weight.detach().clone() for k in ups}
    fuse_loras(pipe, [info])
    for k, delta in ups.items():
        torch.testing.assert_close(getattr(attn(pipe), k).weight.detach(), w0[k] + 0.5 * (alpha / rank) * delta,
                                   rtol=1e-5, atol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(pipe.unet.state_dict().values(), digits_pipe.unet.state_dict().values()))
