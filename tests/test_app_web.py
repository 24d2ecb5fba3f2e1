"""The browser client end to end: web_app/ served by `mobilesd serve`, driven in headless Chromium (one browser for
the module), generating with LiteRT.js on WebGPU (SwiftShader) and WASM, compared with `mobilesd generate
--runtime tflite` (HostPipeline on the same bundle). Every scheduler, unet_batch 2 and 1, a 3-chunk bundle;
bundles with a changed byte or another format version refused on the page before any graph runs; the
Benchmark button's report validated like `mobilesd report` does; a screenshot of the page after a generation.

Bounds. WASM (XNNPACK, fp32 compute) and WebGPU at fp32 (SwiftShader computes in fp32) run the same fp16-weight
graphs as the host's CPU interpreter, so their images agree to rounding: mean abs diff within 1/255 (measured
6e-6 on WebGPU, max one pixel level). WebGPU at fp16 (what a GPU with shader-f16 may pick) computes in fp16
throughout and is held to the GPU image bound vs the host (mobilesd.verify.GPU_IMAGE_THRESHOLD, mean abs 9e-3;
measured 1.4e-3).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from bundles import digits_bundle
from mobilesd.apps import web as web_app
from mobilesd.errors import MobileSDError

REPO = Path(__file__).resolve().parents[1]
PROMPT = "a handwritten digit seven"
BUNDLES = {   # kind -> export options: the default digits model
    "default": dict(unet_batch=2),
}
TARGET = "web"
WASM_BOUND = 1 / 255


def export_bundle(kind: str, tmp_path_factory):
    """A web bundle of the default model, exported once per test session (tests/test_litert_js.py uses it too);
    batch1_chunks3: the --unet-batch 1, 3-chunk TFLite bundle the Android tests share (an android bundle: the
    page runs those too; the graph checks of the export are tested on the default bundle)."""
    from bundles import batch1_chunks3_bundle
    from mobilesd.bundle import load_bundle

    if kind == "batch1_chunks3":
        return load_bundle(batch1_chunks3_bundle(tmp_path_factory))
    return load_bundle(digits_bundle(tmp_path_factory, TARGET, **BUNDLES[kind]))


@functools.cache
def _host_image(bundle_dir: str, scheduler: str, steps: int, seed: int, guidance: float) -> np.ndarray:
    """`mobilesd generate --runtime tflite` on the same bundle and settings."""
    from mobilesd.pipeline import HostPipeline

    return HostPipeline.from_bundle(bundle_dir, runtime="tflite").generate(
        PROMPT, "", steps=steps, guidance=guidance, seed=seed, scheduler=scheduler)


def _mean_abs(a, b) -> float:
    return float(np.mean(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) / 255


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from mobilesd.litert_js import BrowserSession

    with BrowserSession(downloads=tmp_path_factory.mktemp("downloads")) as session:
        yield session


def _page(browser, bundle, name):
    browser.server.mount(name, bundle.root if hasattr(bundle, "root") else bundle)
    return web_app.open_bundle(browser, f"mount/{name}/", timeout_s=600)


@pytest.fixture(scope="module")
def default_bundle(tmp_path_factory):
    return export_bundle("default", tmp_path_factory)


@pytest.fixture(scope="module")
def default_page(browser, default_bundle):
    return _page(browser, default_bundle, "default")


def _generate(page, **settings):
    return web_app.generate(page, {"prompt": PROMPT, "negative_prompt": "", "guidance": 7.5, "seed": 0,
                                   "reduce_memory": False, **settings}, timeout_s=900)


# ---- the server -----------------------------------------------------------------------------------------

def test_serve_types_and_isolation_headers(default_bundle):
    from mobilesd.commands.serve import WebServer

    with WebServer(default_bundle.root) as server:
        def head(path):
            req = urllib.request.Request(server.url + path, method="HEAD")
            try:
                with urllib.request.urlopen(req) as r:
                    return r.status, r.headers
            except urllib.error.HTTPError as e:
                return e.code, e.headers

        for path, mime in [("", "text/html"), ("app.js", "text/javascript"),
                           ("node_modules/@litertjs/core/wasm/litert_wasm_internal.wasm", "application/wasm"),
                           ("bundle/manifest.json", "application/json"), ("bundle/unet.tflite", "application/octet-stream")]:
            status, headers = head(path)
            assert status == 200, path
            assert headers["Content-Type"].startswith(mime), (path, headers["Content-Type"])
            assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
            assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        assert head("bundle/unet.tflite")[1]["Cache-Control"] == "no-store"
        # nothing outside the page and the bundle: '..' normalises into the page's own folder, which has no such files
        for bad in ["bundle/../../pyproject.toml", "bundle/%2e%2e/%2e%2e/mobilesd/cli.py", "../../pyproject.toml",
                    "bundle/.hidden", "mount/none/x", "bundle/nothing.tflite"]:
            assert head(bad)[0] == 404, bad


def test_serve_refuses_a_folder_that_is_not_a_bundle(tmp_path):
    from mobilesd.commands.serve import WebServer

    with pytest.raises(MobileSDError, match="not a mobilesd bundle"):
        WebServer(tmp_path)


# ---- generation: WebGPU and WASM vs the host -------------------------------------------------------------

def test_webgpu_image_matches_the_host_and_screenshot(browser, default_page, default_bundle, tmp_path):
    res = _generate(default_page, steps=8, scheduler="dpm", accelerator="webgpu", precision="fp32")
    assert res["accelerator"] == "webgpu" and res["wasmFallbacks"] == []
    host = _host_image(str(default_bundle.root), "dpm", 8, 0, 7.5)
    err = _mean_abs(res["image"], host)
    assert err <= WASM_BOUND, err
    assert res["image"].std() > 10, "a digit, not a flat image"
    out = Path(os.environ.get("MOBILESD_TEST_RESULTS", tmp_path)) / "web"
    out.mkdir(parents=True, exist_ok=True)
    shot = out / "page-after-generation.png"
    default_page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    text = default_page.inner_text("body")
    assert "software WebGPU (swiftshader)" in text and "end to end" in text


def test_benchmark_report_is_valid_and_says_software_webgpu(default_page, default_bundle, tmp_path):
    from mobilesd.latency.schema import validate_report

    settings = {"prompt": PROMPT, "steps": 4, "scheduler": "dpm", "accelerator": "webgpu", "precision": "fp32",
                "warmup": 1, "repeats": 2}
    _, report = web_app.benchmark(default_page, settings, timeout_s=900)
    validate_report(report)
    assert report["measured_by"]["kind"] == "browser" and "HeadlessChrome" in report["measured_by"]["user_agent"]
    assert "software WebGPU (swiftshader)" in report["label"]
    assert "NOT a phone" in report["notes"]
    assert report["device"]["accelerator"] == "gpu" and "swiftshader" in report["device"]["accelerator_name"]
    assert report["bundle"]["manifest_sha256"] == hashlib.sha256((default_bundle.root / "manifest.json").read_bytes()).hexdigest()
    assert len(report["stages"]["unet_step"]["samples_s"]) == 2 * 4 and len(report["steps"]) == 4
    path = tmp_path / "web.json"
    path.write_text(json.dumps(report))
    done = subprocess.run([sys.executable, "-m", "mobilesd.cli", "report", str(path), "--out", str(tmp_path / "r.html")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_webgpu_fp16_precision_stays_finite_and_close(default_page, default_bundle):
    from mobilesd.verify import GPU_IMAGE_THRESHOLD

    res = _generate(default_page, steps=8, scheduler="dpm", accelerator="webgpu", precision="fp16")
    err = _mean_abs(res["image"], _host_image(str(default_bundle.root), "dpm", 8, 0, 7.5))
    assert err <= GPU_IMAGE_THRESHOLD, err
    assert res["image"].std() > 10


@pytest.mark.parametrize("scheduler", ["dpm", "euler", "ddim", "lcm"])
def test_every_scheduler_on_wasm_matches_the_host(default_page, default_bundle, scheduler):
    steps = 4
    res = _generate(default_page, steps=steps, scheduler=scheduler, accelerator="wasm")
    assert res["settings"]["scheduler"] == scheduler and res["settings"]["cfgMode"] == "batch"
    err = _mean_abs(res["image"], _host_image(str(default_bundle.root), scheduler, steps, 0, 7.5))
    assert err <= WASM_BOUND, (scheduler, err)


def test_unet_batch_1_with_three_chunks(browser, tmp_path_factory):
    bundle = export_bundle("batch1_chunks3", tmp_path_factory)
    m = bundle.manifest
    assert m["cfg"]["unet_batch"] == 1 and len(m["unet"]["chunks"]) == 3
    assert any(g["meta"].get("aliases") for g in bundle.unet_graphs()), "the chunks pass tensors by alias"
    page = _page(browser, bundle, "batch1_chunks3")
    host = _host_image(str(bundle.root), "euler", 4, 3, 7.5)
    for accelerator in ("wasm", "webgpu"):
        res = _generate(page, steps=4, scheduler="euler", seed=3, accelerator=accelerator, precision="fp32")
        assert res["settings"]["cfgMode"] == "sequential"
        assert set(res["stages"]) >= {"unet_chunk_0", "unet_chunk_1", "unet_chunk_2"}
        assert len(res["stages"]["unet_chunk_0"]) == 4   # per step, both CFG calls summed
        err = _mean_abs(res["image"], host)
        assert err <= WASM_BOUND, (accelerator, err)
    # per-stage loading needs the single-threaded build: refused with a message on the threaded page ...
    with pytest.raises(MobileSDError, match=r"threads=0"):
        _generate(page, steps=4, scheduler="euler", seed=3, accelerator="wasm", reduce_memory=True)
    page.close()
    # ... and gives the same image on it
    single = web_app.open_bundle(browser, "mount/batch1_chunks3/&threads=0", timeout_s=600)
    res = _generate(single, steps=4, scheduler="euler", seed=3, accelerator="wasm", reduce_memory=True)
    assert _mean_abs(res["image"], host) <= WASM_BOUND
    single.close()


def test_no_guidance_runs_the_prompt_only(default_page, default_bundle):
    res = _generate(default_page, steps=4, scheduler="ddim", accelerator="wasm", guidance=1.0)
    assert res["settings"]["cfgMode"] == "none"
    assert _mean_abs(res["image"], _host_image(str(default_bundle.root), "ddim", 4, 0, 1.0)) <= WASM_BOUND


# ---- refusals: before any graph runs ---------------------------------------------------------------------

def _copy(bundle, tmp_path, name):
    out = tmp_path / name
    shutil.copytree(bundle.root, out)
    return out


def _refused(browser, folder, name) -> str:
    browser.server.mount(name, folder)
    page = browser.open(f"{web_app.PAGE}?bundle=mount/{name}/")
    page.wait_for_function("() => ['ready', 'error'].includes(document.body.dataset.state)")
    state = page.evaluate("() => ({state: document.body.dataset.state, engine: window.mobilesdApp.engine, "
                          "error: window.mobilesdApp.error, generate: document.getElementById('generate').disabled})")
    shown = page.inner_text("#error")
    page.close()
    assert state["state"] == "error" and state["engine"] is None and state["generate"], state
    assert shown == state["error"]
    return shown


def test_a_changed_byte_is_refused_on_the_page(browser, default_bundle, tmp_path):
    bad = _copy(default_bundle, tmp_path, "changed-byte")
    data = bytearray((bad / "unet.tflite").read_bytes())
    data[len(data) // 2] ^= 0x01
    (bad / "unet.tflite").write_bytes(bytes(data))
    shown = _refused(browser, bad, "changed-byte")
    assert "unet.tflite does not match its SHA-256" in shown and "Fix:" in shown


def test_another_format_version_is_refused_on_the_page(browser, default_bundle, tmp_path):
    bad = _copy(default_bundle, tmp_path, "version-3")
    m = json.loads((bad / "manifest.json").read_text())
    m["format_version"] = 3
    (bad / "manifest.json").write_text(json.dumps(m))
    shown = _refused(browser, bad, "version-3")
    assert "format version 3 is not supported (this client reads version 2)" in shown


def test_bundle_from_a_folder_picked_on_disk(browser, default_bundle):
    page = browser.open(web_app.PAGE + "?bundle=none/")
    page.wait_for_function("() => document.body.dataset.state === 'no-bundle'")
    page.set_input_files("#folder-input", str(default_bundle.root))
    page.wait_for_function("() => ['ready', 'error'].includes(document.body.dataset.state)")
    assert page.evaluate("() => document.body.dataset.state") == "ready", page.evaluate("() => window.mobilesdApp.error")
    assert f"folder {default_bundle.root.name}" in page.inner_text("#bundle-status")
    page.close()


# ---- the Benchmark button's report, and `mobilesd app web` ------------------------------------------------

def test_mobilesd_app_web_writes_image_and_report(default_bundle, tmp_path):
    from PIL import Image

    image, report = tmp_path / "web.png", tmp_path / "web.json"
    cmd = [sys.executable, "-m", "mobilesd.cli", "app", "web", "--bundle", str(default_bundle.root), "--prompt", PROMPT,
           "--steps", "4", "--scheduler", "euler", "--seed", "5", "--accelerator", "wasm", "--out", str(image),
           "--report", str(report), "--warmup", "0", "--repeats", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    got = np.asarray(Image.open(image).convert("RGB"))
    assert _mean_abs(got, _host_image(str(default_bundle.root), "euler", 4, 5, 7.5)) <= WASM_BOUND
    r = json.loads(report.read_text())
    assert r["runtime"]["delegate"] == "xnnpack" and r["measured_by"]["kind"] == "browser"
    assert "latency report" in done.stdout


def test_mobilesd_app_web_reports_a_refused_bundle(default_bundle, tmp_path):
    bad = _copy(default_bundle, tmp_path, "bad")
    (bad / "vae_decoder.tflite").write_bytes(b"not a graph")
    out = tmp_path / "never.png"
    done = subprocess.run([sys.executable, "-m", "mobilesd.cli", "app", "web", "--bundle", str(bad), "--prompt", PROMPT,
                           "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 2
    assert "vae_decoder.tflite is 11 bytes" in done.stderr and "fix:" in done.stderr
    assert not out.exists()
