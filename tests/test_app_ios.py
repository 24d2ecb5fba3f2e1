"""`mobilesd app ios` end to end: the iOS client's Swift pipeline (ios_app/, built and run in the trixie chroot,
ONNX Runtime's C API) against the Python host (`mobilesd generate --runtime onnx`, i.e. HostPipeline on the
same graphs) on ONNX bundles of the default digits model: every scheduler, unet_batch 2 and 1, a 3-chunk
UNet; corrupt and wrong-version bundles refused before any graph runs; the latency report validated and
rendered beside a host report. Needs scripts/setup_ios.sh (the chroot); the first test builds the CLI.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

PROMPT = "a handwritten digit seven"
STEPS = 4
SEED = 0
GUIDANCE = 7.5


def _export(tmp_path_factory, name: str, **options) -> Path:
    from bundles import digits_bundle

    return digits_bundle(tmp_path_factory, "onnx", **options)   # shared with the other client tests


@pytest.fixture(scope="session")
def ios_cli():
    """The release build of mobilesd-ios (cached under ios_app/.build until a Swift source changes)."""
    from mobilesd.apps import ios

    return ios.build_cli()


@pytest.fixture(scope="session")
def digits_onnx(tmp_path_factory):
    return _export(tmp_path_factory, "onnx")


@pytest.fixture(scope="session")
def digits_onnx_chunks3(tmp_path_factory):
    return _export(tmp_path_factory, "onnx-chunks3", unet_chunks=3)


@pytest.fixture(scope="session")
def digits_onnx_batch1(tmp_path_factory):
    return _export(tmp_path_factory, "onnx-batch1", unet_batch=1)


@pytest.fixture(scope="session")
def host():
    """Host images as `mobilesd generate --runtime onnx` makes them (its HostPipeline), one pipeline per bundle."""
    from mobilesd.pipeline import HostPipeline

    pipelines = {}

    def image(bundle: Path, scheduler: str, guidance: float = GUIDANCE) -> np.ndarray:
        if bundle not in pipelines:
            pipelines[bundle] = HostPipeline.from_bundle(bundle, runtime="onnx")
        return pipelines[bundle].generate(PROMPT, "", steps=STEPS, guidance=guidance, seed=SEED, scheduler=scheduler)

    return image


def app_ios(bundle: Path, out: Path, *extra: str, scheduler: str = "dpm", guidance: float = GUIDANCE) -> int:
    from mobilesd.cli import main

    return main(["app", "ios", "--bundle", str(bundle), "--prompt", PROMPT, "--steps", str(STEPS), "--seed", str(SEED),
                 "--guidance", str(guidance), "--scheduler", scheduler, "--out", str(out), *extra])


def assert_same_image(swift_png: Path, reference: np.ndarray) -> float:
    got = np.asarray(Image.open(swift_png).convert("RGB")).astype(np.float64)
    assert got.shape == reference.shape
    assert reference.std() > 1.0, "the reference image is flat: the comparison would prove nothing"
    mean_abs = float(np.abs(got - reference.astype(np.float64)).mean())
    assert mean_abs <= 1.0, f"Swift image differs from the host's by {mean_abs:.3f}/255 on average"
    print(f"{swift_png.name}: mean abs difference {mean_abs:.4f}/255, max {np.abs(got - reference).max():.0f}/255")
    return mean_abs


@pytest.mark.parametrize("scheduler", ["dpm", "euler", "ddim", "lcm"])
def test_every_scheduler_matches_the_host(ios_cli, digits_onnx, host, tmp_path, scheduler):
    out = tmp_path / f"{scheduler}.png"
    assert app_ios(digits_onnx, out, scheduler=scheduler) == 0
    assert_same_image(out, host(digits_onnx, scheduler))


def test_unet_batch_1_matches_the_host(ios_cli, digits_onnx_batch1, host, tmp_path):
    manifest = json.loads((digits_onnx_batch1 / "manifest.json").read_text())
    assert manifest["cfg"]["unet_batch"] == 1 and manifest["cfg"]["mode"] == "sequential"
    for scheduler in ("dpm", "lcm"):
        out = tmp_path / f"b1-{scheduler}.png"
        assert app_ios(digits_onnx_batch1, out, scheduler=scheduler) == 0
        assert_same_image(out, host(digits_onnx_batch1, scheduler))


def test_three_chunks_match_the_host(ios_cli, digits_onnx_chunks3, host, tmp_path):
    manifest = json.loads((digits_onnx_chunks3 / "manifest.json").read_text())
    assert len(manifest["unet"]["chunks"]) == 3
    assert any(g["meta"].get("aliases") for g in manifest["graphs"] if g["role"] == "unet"), "no aliases to exercise"
    for scheduler in ("dpm", "euler"):
        out = tmp_path / f"c3-{scheduler}.png"
        assert app_ios(digits_onnx_chunks3, out, scheduler=scheduler) == 0
        assert_same_image(out, host(digits_onnx_chunks3, scheduler))


def test_guidance_off_and_reduce_memory_match_the_host(ios_cli, digits_onnx, host, tmp_path):
    out = tmp_path / "g1.png"
    assert app_ios(digits_onnx, out, guidance=1.0) == 0
    assert_same_image(out, host(digits_onnx, "dpm", guidance=1.0))
    out = tmp_path / "reduced.png"
    assert app_ios(digits_onnx, out, "--reduce-memory", scheduler="euler") == 0
    assert_same_image(out, host(digits_onnx, "euler"))


def test_one_changed_byte_is_refused_before_any_graph_runs(ios_cli, digits_onnx, tmp_path, capfd):
    bundle = tmp_path / "corrupt"
    shutil.copytree(digits_onnx, bundle)
    victim = bundle / "vae_decoder.onnx"   # the graph that would run last
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    out = tmp_path / "never.png"
    assert app_ios(bundle, out) == 2
    err = capfd.readouterr().err
    assert "bundle file vae_decoder.onnx does not match its SHA-256 in the manifest" in err
    assert "fix: re-export the bundle or copy it again" in err
    assert "loaded" not in err and "generation" not in err, "graphs were loaded or run before the check"
    assert not out.exists()


def test_other_format_version_is_refused(ios_cli, digits_onnx, tmp_path, capfd):
    bundle = tmp_path / "v1"
    shutil.copytree(digits_onnx, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["format_version"] = 1
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert app_ios(bundle, tmp_path / "never.png") == 2
    err = capfd.readouterr().err
    assert "bundle format version 1 is not supported: this client reads version 2" in err
    assert not (tmp_path / "never.png").exists()


def test_user_errors_are_named(ios_cli, digits_onnx, tmp_path, capfd):
    assert app_ios(digits_onnx, tmp_path / "x.png", scheduler="pndm") == 2
    assert "unknown scheduler 'pndm'" in capfd.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_report_validates_and_renders_beside_a_host_report(ios_cli, digits_onnx, tmp_path):
    from mobilesd.cli import main
    from mobilesd.latency.bench import bench_runtime
    from mobilesd.latency.schema import load_report

    report = tmp_path / "ios.json"
    assert app_ios(digits_onnx, tmp_path / "r.png", "--report", str(report), "--warmup", "1", "--repeats", "2") == 0
    r = load_report(report)   # raises on any schema problem
    assert r["measured_by"]["kind"] == "app"
    assert "Not a phone" in r["notes"] and "not a phone" in r["device"]["name"]
    assert r["runtime"]["name"] == "onnx" and r["settings"]["steps"] == STEPS and len(r["steps"]) == STEPS
    assert len(r["stages"]["unet_step"]["samples_s"]) == 2 * STEPS
    assert r["bundle"]["id"] == json.loads((digits_onnx / "manifest.json").read_text())["bundle_id"]
    host_report = tmp_path / "host.json"
    host_report.write_text(json.dumps(bench_runtime(digits_onnx, "onnx", steps=STEPS, warmup=0, repeats=1,
                                                    progress=False, prompt=PROMPT)))
    page = tmp_path / "report.html"
    assert main(["report", str(report), str(host_report), "--out", str(page)]) == 0
    html = page.read_text()
    assert r["label"] in html and "host / onnx" in html
