"""`mobilesd export`: bundle contents, manifest, verification, GPU coverage, atomic writes, bad requests."""

import os

import pytest

from mobilesd.bundle import FORMAT_VERSION, load_bundle, sha256_file
from mobilesd.errors import MobileSDError
from mobilesd.export import ExportOptions, export


def test_android_bundle_layout_and_manifest(android_bundle):
    m = android_bundle.manifest
    root = android_bundle.root
    assert m["format_version"] == FORMAT_VERSION and m["target"] == "android" and m["precision"] == "fp16"
    assert [g["name"] for g in m["graphs"]] == ["text_encoder", "unet_chunk0", "unet_chunk1", "unet_chunk2",
                                                "vae_decoder"]
    assert m["unet"]["chunks"] == ["unet_chunk0", "unet_chunk1", "unet_chunk2"]
    for rel, info in m["files"].items():  # every file listed, with its checksum
        assert sha256_file(root / rel) == info["sha256"]
    listed = set(m["files"]) | {"manifest.json"}
    assert {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} == listed
    assert {"tokenizer/vocab.json", "tokenizer/merges.txt", "scheduler/scheduler_config.json"} <= set(m["files"])
    # chunk I/O chains by name: every input was made by an earlier chunk (or is a pipeline input)
    made = {"sample", "timestep", "encoder_hidden_states"}
    for g in android_bundle.unet_graphs():
        assert {i["name"] for i in g["inputs"]} <= made
        made |= {o["name"] for o in g["outputs"]} | set(g["meta"]["aliases"])
    assert m["latent"]["scaling_factor"] == pytest.approx(0.18215)
    assert m["image"]["height"] == 16 and m["cfg"]["unet_batch"] == 2
    assert not list(root.parent.glob(".android.partial-*")), "no temporary folder left behind"


def test_every_graph_verified_and_fully_gpu_accelerated(android_bundle):
    m = android_bundle.manifest
    for g in m["graphs"]:
        v = g["verification"]
        # per-graph bound: a margin over the simulated error, never above the precision's ceiling
        assert v["passed"] and v["rel_l2"] <= v["threshold"] <= m["verification"]["graph_thresholds"]["fp16"]
        gpu = g["gpu"]
        # the fixture runs the GPU check; without a Vulkan adapter the export fails instead of recording a skip
        assert not gpu.get("skipped") and gpu["available"] and gpu["passed"], g["name"]
        assert gpu["fully_accelerated"] and gpu["unsupported_ops"] == [], g["name"]
        assert gpu["output_rel_l2"] is not None and gpu["output_rel_l2"] < m["verification"]["gpu_thresholds"][g["precision"]]
    e2e = m["verification"]["end_to_end"]
    assert e2e["passed"] and e2e["mean_abs"] < e2e["threshold"]
    assert m["verification"]["passed"]


def test_onnx_bundle(onnx_bundle):
    m = onnx_bundle.manifest
    assert m["target"] == "onnx" and m["precision"] == "fp32"
    assert all(g["file"].endswith(".onnx") and g["verification"]["rel_l2"] < 1e-4 for g in m["graphs"])
    assert m["verification"]["end_to_end"]["mean_abs"] < 1e-3


def test_load_bundle_detects_corruption(android_bundle, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(android_bundle.root, copy)
    assert load_bundle(copy).manifest["bundle_id"] == android_bundle.manifest["bundle_id"]
    graph = copy / "vae_decoder.tflite"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(MobileSDError, match="SHA-256"):
        load_bundle(copy)
    (copy / "unet_chunk0.tflite").unlink()
    with pytest.raises(MobileSDError, match="missing"):
        load_bundle(copy)
    with pytest.raises(MobileSDError, match="not a mobilesd bundle"):
        load_bundle(tmp_path)


def test_existing_output_needs_overwrite(android_bundle, tiny_model_dir):
    with pytest.raises(MobileSDError, match="already exists"):
        export(tiny_model_dir, android_bundle.root, ExportOptions(progress=False))


def _assert_nothing_left(parent, name):
    assert not (parent / name).exists()
    assert not [p for p in parent.iterdir() if p.name.startswith(f".{name}.")], list(parent.iterdir())


def test_chunk_count_that_cannot_fit_leaves_nothing(tiny_model_dir, tmp_path):
    with pytest.raises(MobileSDError, match="cannot fit"):
        export(tiny_model_dir, tmp_path / "b", ExportOptions(unet_chunks=99, progress=False))
    _assert_nothing_left(tmp_path, "b")


def test_failed_verification_leaves_nothing(tiny_model_dir, tmp_path, monkeypatch):
    import mobilesd.verify as verify

    monkeypatch.setitem(verify.GRAPH_THRESHOLDS, "fp32", 0.0)  # nothing can pass a zero threshold
    with pytest.raises(MobileSDError, match="verification failed"):
        export(tiny_model_dir, tmp_path / "b", ExportOptions(target="onnx", precision="fp32", progress=False))
    _assert_nothing_left(tmp_path, "b")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output(tiny_model_dir, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(MobileSDError, match="not writable"):
        export(tiny_model_dir, ro / "b", ExportOptions(progress=False))


def test_unwritable_output_path_under_a_file(tiny_model_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(MobileSDError, match="cannot create|writable"):
        export(tiny_model_dir, blocker / "b", ExportOptions(progress=False))


def test_bad_requests(tiny_model_dir, tmp_path):
    with pytest.raises(MobileSDError, match="not supported"):
        export(tiny_model_dir, tmp_path / "b", ExportOptions(target="onnx", precision="int4", progress=False))
    with pytest.raises(MobileSDError, match="unknown target"):
        export(tiny_model_dir, tmp_path / "b", ExportOptions(target="webgpu", progress=False))
    with pytest.raises(MobileSDError, match="does not exist"):
        export(tmp_path / "missing", tmp_path / "b", ExportOptions(progress=False))
    with pytest.raises(MobileSDError, match="does not divide"):
        export(tiny_model_dir, tmp_path / "b", ExportOptions(height=18, progress=False))
    _assert_nothing_left(tmp_path, "b")


def test_unet_size_limit_holds_for_the_files(tiny_model_dir, tmp_path):
    from mobilesd.components import stage_weight_bytes
    from mobilesd.loading import load_pipeline

    limit_mb = max(stage_weight_bytes(load_pipeline(tiny_model_dir).unet)) * 1.3 / 2**20  # fp32 graphs
    b = export(tiny_model_dir, tmp_path / "lim", ExportOptions(target="onnx", unet_max_mb=limit_mb, verify_steps=1,
                                                               progress=False))
    chunks = b.unet_graphs()
    assert len(chunks) > 1 and all(g["size_bytes"] <= limit_mb * 2**20 for g in chunks)


def test_non_square_image_size(tiny_model_dir, tmp_path):
    b = export(tiny_model_dir, tmp_path / "rect", ExportOptions(target="onnx", height=24, width=16, verify_steps=2,
                                                                progress=False))
    assert (b.manifest["image"]["height"], b.manifest["image"]["width"]) == (24, 16)
    assert b.manifest["latent"]["height"] == 12 and b.manifest["verification"]["passed"]


def test_cli_export_error_message(tmp_path, capsys):
    from mobilesd.cli import main

    rc = main(["export", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "b"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "does not exist" in err and "fix:" in err


def test_isolated_export_in_worker_processes(tiny_model_dir, tmp_path, onnx_bundle):
    """SD-scale exports run each step in its own process (memory); the result must equal the in-process one."""
    b = export(tiny_model_dir, tmp_path / "iso", ExportOptions(target="onnx", isolate=True, progress=False))
    m = b.manifest
    assert m["export_isolated"] and "convert[1]" in m["export_peak_rss_bytes"]
    assert all(v > 0 for v in m["export_peak_rss_bytes"].values())
    ref = {g["name"]: g["verification"]["rel_l2"] for g in onnx_bundle.manifest["graphs"]}
    assert {g["name"]: g["verification"]["rel_l2"] for g in m["graphs"]} == pytest.approx(ref, rel=1e-6, abs=1e-9)
    assert m["verification"]["end_to_end"]["mean_abs"] == pytest.approx(
        onnx_bundle.manifest["verification"]["end_to_end"]["mean_abs"], abs=1e-7)
    # the bundle and nothing else: no .iso.partial-* folder, no worker scratch space left beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iso"]


def test_readme_main_command_on_the_default_model(tmp_path_factory):
    """`mobilesd export --target android` on the bundled default model: every graph verified, fully on the GPU.
    The run is shared (tests/bundles.py): its bundle is the default android bundle of the client tests."""
    from bundles import readme_android_bundle
    from mobilesd.loading import DEFAULT_MODEL

    assert (DEFAULT_MODEL / "model_index.json").exists(), "the default model (assets/) is missing"
    root, printed = readme_android_bundle(tmp_path_factory)
    assert root.parent.name == "bundles"   # the command's default --out, bundles/<target>
    m = load_bundle(root).manifest
    assert m["source"]["model"] == str(DEFAULT_MODEL) and m["verification"]["passed"]
    assert all(g["gpu"]["fully_accelerated"] for g in m["graphs"] if not g["gpu"].get("skipped"))
    assert "end-to-end image vs PyTorch" in printed
