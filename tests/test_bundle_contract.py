"""The bundle as a declared contract: the JSON Schema checked on write and read, strict JSON, `mobilesd inspect`,
outputs compared by name, and a failed GPU run recorded as a failure."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from mobilesd.bundle import (FORMAT_VERSION, SCHEMA_PATH, finalize_manifest, load_bundle, loads_strict,
                             manifest_problems)
from mobilesd.cli import main
from mobilesd.errors import MobileSDError
from mobilesd.verify import VerificationError, compare_outputs


def test_exported_manifests_match_the_schema(android_bundle, onnx_bundle):
    schema = json.loads(SCHEMA_PATH.read_text())
    assert schema["properties"]["format_version"]["const"] == FORMAT_VERSION == 2
    for b in (android_bundle, onnx_bundle):
        text = (b.root / "manifest.json").read_text()
        assert manifest_problems(loads_strict(text)) == []
        m = b.manifest
        assert m["cfg"]["mode"] == "batch" and set(m["scheduler"]["supported"]) >= {"dpm", "euler", "ddim", "lcm"}
        for g in m["graphs"]:   # per-output errors are keyed by the manifest's output names
            assert set(g["verification"]["rel_l2_per_output"]) == {o["name"] for o in g["outputs"]}


def test_the_schema_rejects_what_a_client_could_not_use(android_bundle):
    m = json.loads((android_bundle.root / "manifest.json").read_text())
    bad = json.loads(json.dumps(m))
    bad["cfg"]["unet_batch"] = 3
    del bad["graphs"][0]["sha256"]
    bad["graphs"][1]["inputs"][0]["dtype"] = "float16"
    bad["files"]["../outside"] = {"sha256": "0" * 64, "size": 1}
    problems = "\n".join(manifest_problems(bad))
    for field in ("cfg.unet_batch", "graphs[0]", "graphs[1].inputs[0].dtype", "files"):
        assert field in problems, (field, problems)


def _corrupt_copy(bundle, tmp_path):
    out = tmp_path / "corrupt-bundle"
    shutil.copytree(bundle.root, out)
    return out


def test_inspect_prints_and_rejects(android_bundle, tmp_path, capsys):
    assert main(["inspect", "--bundle", str(android_bundle.root)]) == 0
    out = capsys.readouterr().out
    assert "all SHA-256 checksums match" in out and "unet_chunk2" in out and "fp16" in out
    # one edited byte in a graph
    bad = _corrupt_copy(android_bundle, tmp_path)
    graph = bad / "unet_chunk1.tflite"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0x01
    graph.write_bytes(bytes(data))
    assert main(["inspect", "--bundle", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "unet_chunk1.tflite does not match its SHA-256" in err
    # Infinity in the manifest: the file and the field are named
    shutil.rmtree(bad)
    bad = _corrupt_copy(android_bundle, tmp_path)
    mf = bad / "manifest.json"
    m = json.loads(mf.read_text())
    m["verification"]["end_to_end"]["psnr_db"] = float("inf")
    mf.write_text(json.dumps(m))
    assert main(["inspect", "--bundle", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(mf) in err and "verification.end_to_end.psnr_db" in err and "Infinity" in err
    # another format version
    m["verification"]["end_to_end"]["psnr_db"] = None
    m["format_version"] = 1
    mf.write_text(json.dumps(m))
    with pytest.raises(MobileSDError, match="format version 1 is not supported"):
        load_bundle(bad)


def test_finalize_validates_before_anything_is_written(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"1")
    with pytest.raises(MobileSDError, match="does not match the bundle schema"):
        finalize_manifest(tmp_path, {"format": "mobilesd-bundle", "format_version": FORMAT_VERSION, "target": "android"})
    assert not (tmp_path / "manifest.json").exists()
    with pytest.raises(MobileSDError, match="not strict JSON"):
        finalize_manifest(tmp_path, {"format": "mobilesd-bundle", "format_version": FORMAT_VERSION,
                                     "target": "android", "x": float("nan")})


def test_outputs_are_compared_by_name():
    ref = {"hidden": np.ones(4, np.float32), "temb": np.ones(2, np.float32)}
    assert compare_outputs(dict(ref), ref)["rel_l2"] == 0
    with pytest.raises(VerificationError, match=r"missing \['temb'\]"):
        compare_outputs({"hidden": ref["hidden"]}, ref)
    with pytest.raises(VerificationError, match=r"unexpected \['skip_0'\]"):
        compare_outputs(dict(ref, skip_0=ref["temb"]), ref)
    with pytest.raises(VerificationError, match="shape"):
        compare_outputs({"hidden": np.ones(5, np.float32), "temb": ref["temb"]}, ref)
    with pytest.raises(VerificationError, match="NaN"):
        compare_outputs({"hidden": np.full(4, np.nan, np.float32), "temb": ref["temb"]}, ref)


def test_a_graph_returning_fewer_outputs_than_listed_fails(android_bundle):
    from mobilesd.runtime.graphs import open_graph

    g = android_bundle.graph("unet_chunk0")
    inputs = {i["name"]: np.zeros(i["shape"], np.float32) for i in g["inputs"]}
    names = [o["name"] for o in g["outputs"]]
    sess = open_graph(android_bundle.path(g["file"]), [i["name"] for i in g["inputs"]], names + ["skip_99"])
    with pytest.raises(MobileSDError, match="the graph returns 6 outputs, the manifest lists 7"):
        sess.run_named(inputs)


@pytest.mark.gpu_delegate
def test_a_failed_gpu_run_fails_the_export(android_bundle):
    """A real graph that compiles for the GPU but cannot run on the inputs given (its input is missing):
    recorded as a run failure, and the export's gate refuses it (unless --allow-cpu-fallback)."""
    from mobilesd.export import ExportOptions, make_plan
    from mobilesd.export.checks import graph_failures
    from mobilesd.gpu_check import check_gpu

    g = android_bundle.graph("vae_decoder")
    res = check_gpu(android_bundle.path(g["file"]), {"not_the_input": np.zeros((1, 4, 8, 8), np.float32)})
    assert res.compiled and res.fully_accelerated and not res.ran and res.run_error
    info = dict(g, gpu=dict(res.to_dict(), passed=False, output_rel_l2=None, output_threshold=0.05))
    fails = graph_failures(info, make_plan(ExportOptions(target="android")))
    assert fails and "the GPU run failed" in fails[0]
    assert graph_failures(info, make_plan(ExportOptions(target="android", allow_cpu_fallback=True))) == []
