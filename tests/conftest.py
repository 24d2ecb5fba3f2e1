"""Shared fixtures: tiny SD models built from configs and bundles exported from them, once per test run (also
across pytest-xdist's workers: tests/shared.py)."""

from __future__ import annotations

import os

import pytest

from shared import build_once

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the hub


@pytest.fixture(scope="session")
def golden_dir(tmp_path_factory):
    """The golden vectors of this run (the clients' suites get their own copy from scripts/test.sh)."""
    from mobilesd.golden import write_golden

    return build_once(tmp_path_factory, "golden", write_golden)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random SD 1.x-style pipeline saved in diffusers layout (safetensors)."""
    from mobilesd.architectures import save_random_pipeline

    return build_once(tmp_path_factory, "tiny-sd", lambda out: save_random_pipeline(out, "tiny", seed=0))


@pytest.fixture(scope="session")
def tiny_pipe(tiny_model_dir):
    from mobilesd.loading import load_pipeline

    return load_pipeline(tiny_model_dir)


@pytest.fixture(scope="session")
def android_bundle(tiny_model_dir, tmp_path_factory):
    """fp16 TFLite bundle with the UNet in 3 chunks (the middle one holds one up block only), GPU-checked."""
    from mobilesd.bundle import load_bundle
    from mobilesd.export import ExportOptions, export

    return load_bundle(build_once(tmp_path_factory, "tiny-android-chunks3", lambda out: export(
        tiny_model_dir, out, ExportOptions(target="android", unet_chunks=3, progress=False))))


@pytest.fixture(scope="session")
def onnx_bundle(tiny_model_dir, tmp_path_factory):
    from mobilesd.bundle import load_bundle
    from mobilesd.export import ExportOptions, export

    return load_bundle(build_once(tmp_path_factory, "tiny-onnx", lambda out: export(
        tiny_model_dir, out, ExportOptions(target="onnx", progress=False))))
