"""The Android app's Java core (android_app/) end to end on the real LiteRT runtime: `mobilesd app android`
against `mobilesd generate --runtime tflite` on the same bundles, seeds and schedulers.

The core's own unit tests (golden vectors, manifest schema, report schema) run in JUnit through
scripts/test_android.sh; this module checks what needs real exported bundles: the JNA binding of libLiteRt.so
on the CPU and on the GPU accelerator (WebGPU on lavapipe), chunk chaining and both CFG batch layouts on real
graphs, the checksum refusal, and the latency report next to a host report.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mobilesd.verify import GPU_IMAGE_THRESHOLD

javac = shutil.which("javac")

PROMPT = "a handwritten digit seven"
STEPS = 4
SEED = 3
# CPU (XNNPACK through the C API) vs the host's tflite Interpreter (XNNPACK): the bound.
CPU_BOUND = 1 / 255
# GPU: LiteRT's WebGPU accelerator computes in fp16 throughout: the GPU image bound (mobilesd.verify,
# docs/verification.md; mean abs on [0, 1]); measured on the default bundle: 0.0035 mean abs (max 5/255).
GPU_BOUND = GPU_IMAGE_THRESHOLD


@pytest.fixture(scope="session")
def android_core_jar():
    # the set-up installs these: a missing one fails the tests (it used to skip them)
    assert javac is not None and Path("/usr/share/java/jna.jar").is_file() and Path(
        "/usr/share/java/com.android.json.jar").is_file(), \
        "the Android core needs a JDK, libjna-java and libandroid-json-java: run bash scripts/setup_android.sh"
    from mobilesd.apps.android import build_jar

    return build_jar()


@pytest.fixture(scope="session")
def default_android_bundle(tmp_path_factory):
    """The default model (mobilesd.loading.default_model_path()) exported as `mobilesd export --target android`."""
    from bundles import digits_bundle

    return digits_bundle(tmp_path_factory, "android")


@pytest.fixture(scope="session")
def batch1_android_bundle(tmp_path_factory):
    """The default model with --unet-batch 1 (two UNet calls per step) in 3 chunks, shared with the web tests."""
    from bundles import batch1_chunks3_bundle

    return batch1_chunks3_bundle(tmp_path_factory)


_host_pipelines: dict = {}


def host_image(bundle: Path, scheduler: str) -> np.ndarray:
    """`mobilesd generate --runtime tflite` for the same settings, as float RGB in [0, 255]."""
    from mobilesd.pipeline import HostPipeline

    key = str(bundle)
    if key not in _host_pipelines:
        _host_pipelines[key] = HostPipeline.from_bundle(bundle, runtime="tflite")
    return _host_pipelines[key].generate(PROMPT, "", steps=STEPS, guidance=7.5, seed=SEED,
                                         scheduler=scheduler).astype(np.float64)


def app_image(bundle: Path, out: Path, *extra: str) -> np.ndarray:
    """`mobilesd app android` (the real CLI entry) and the PNG it wrote."""
    from PIL import Image

    from mobilesd.cli import main

    rc = main(["app", "android", "--bundle", str(bundle), "--prompt", PROMPT, "--steps", str(STEPS), "--seed", str(SEED),
               "--guidance", "7.5", "--out", str(out), *extra])
    assert rc == 0
    return np.asarray(Image.open(out).convert("RGB")).astype(np.float64)


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.abs(a - b).mean() / 255.0)


@pytest.mark.parametrize("scheduler", ["dpm", "euler", "ddim", "lcm"])
def test_cpu_image_matches_the_host_for_each_scheduler(android_core_jar, default_android_bundle, tmp_path, scheduler):
    got = app_image(default_android_bundle, tmp_path / "app.png", "--scheduler", scheduler, "--accelerator", "cpu")
    want = host_image(default_android_bundle, scheduler)
    assert mean_abs(got, want) <= CPU_BOUND, f"{scheduler}: mean abs {mean_abs(got, want):.5f}"


def test_cpu_unet_batch_1_matches_the_host(android_core_jar, batch1_android_bundle, tmp_path):
    manifest = json.loads((batch1_android_bundle / "manifest.json").read_text())
    assert manifest["cfg"]["unet_batch"] == 1 and manifest["cfg"]["mode"] == "sequential"
    got = app_image(batch1_android_bundle, tmp_path / "app.png", "--scheduler", "dpm", "--accelerator", "cpu")
    assert mean_abs(got, host_image(batch1_android_bundle, "dpm")) <= CPU_BOUND


def test_cpu_three_chunks_match_the_host_also_in_low_memory_mode(android_core_jar, android_bundle, tmp_path):
    bundle = android_bundle.root
    assert len(json.loads((bundle / "manifest.json").read_text())["unet"]["chunks"]) == 3
    want = host_image(bundle, "euler")
    got = app_image(bundle, tmp_path / "a.png", "--scheduler", "euler", "--accelerator", "cpu")
    assert mean_abs(got, want) <= CPU_BOUND
    low = app_image(bundle, tmp_path / "b.png", "--scheduler", "euler", "--accelerator", "cpu", "--low-memory")
    assert np.array_equal(low, got), "low-memory mode must not change the image"


@pytest.mark.parametrize("which", ["default", "three_chunks"])
def test_gpu_image_is_within_the_gpu_bound(android_core_jar, default_android_bundle, android_bundle, tmp_path, which):
    bundle = default_android_bundle if which == "default" else android_bundle.root
    got = app_image(bundle, tmp_path / "gpu.png", "--scheduler", "dpm", "--accelerator", "gpu")
    err = mean_abs(got, host_image(bundle, "dpm"))
    assert err <= GPU_BOUND, f"GPU image mean abs {err:.5f} over the bound {GPU_BOUND}"


def test_a_changed_byte_is_refused_before_any_graph_runs(android_core_jar, default_android_bundle, tmp_path, capsys):
    from mobilesd.cli import main

    bundle = tmp_path / "bundle"
    shutil.copytree(default_android_bundle, bundle)
    graph = bundle / "unet.tflite"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0x01
    graph.write_bytes(bytes(data))
    log = tmp_path / "litert.log"
    out = tmp_path / "image.png"
    rc = main(["app", "android", "--bundle", str(bundle), "--prompt", PROMPT, "--steps", "2", "--out", str(out),
               "--accelerator", "cpu", "--native-log", str(log)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "unet.tflite" in err and "SHA-256" in err, err
    assert not out.exists(), "a refused run leaves no image"
    # LiteRT was never asked to load anything: its log is empty (it logs every environment and model it creates)
    assert not log.exists() or log.read_text() == "", log.read_text()


def test_report_validates_and_renders_next_to_a_host_bench_report(android_core_jar, default_android_bundle, tmp_path):
    from mobilesd.cli import main
    from mobilesd.latency.schema import load_report

    report = tmp_path / "app.json"
    app_image(default_android_bundle, tmp_path / "app.png", "--accelerator", "cpu", "--report", str(report),
              "--warmup", "1", "--repeats", "2")
    r = load_report(report)   # schema and consistency checks of `mobilesd report`
    assert r["measured_by"]["kind"] == "app"
    assert "not a phone" in r["notes"].lower() and "desktop JVM" in r["notes"]
    assert r["settings"]["steps"] == STEPS and r["settings"]["cfg_mode"] == "batch"
    assert len(r["stages"]["unet_step"]["samples_s"]) == 2 * STEPS
    assert r["memory"]["peak_rss_bytes"] > 0
    manifest = json.loads((default_android_bundle / "manifest.json").read_text())
    assert r["bundle"]["id"] == manifest["bundle_id"]
    host = tmp_path / "host.json"
    assert main(["bench", "--bundle", str(default_android_bundle), "--runtime", "tflite", "--steps", str(STEPS),
                 "--warmup", "0", "--repeats", "1", "--no-progress", "--out", str(host)]) == 0
    html = tmp_path / "report.html"
    assert main(["report", str(report), str(host), "--out", str(html)]) == 0
    page = html.read_text()
    assert r["label"] in page and load_report(host)["label"] in page
