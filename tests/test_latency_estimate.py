"""Roofline estimator: device table, calibration against published figures, the SD1.5 / S23 estimate."""

import json

import pytest

from mobilesd.cli import main
from mobilesd.errors import MobileSDError
from mobilesd.latency import roofline
from mobilesd.latency.schema import validate_report


def test_device_table_has_sources_for_every_figure():
    devices = roofline.load_devices()
    for key in ("galaxy-s23-gpu", "galaxy-s24-gpu", "pixel-8-gpu", "iphone-15-pro-gpu", "iphone-15-pro-ane"):
        assert key in devices, key
    for key, d in devices.items():
        assert d["peak_fp16_flops"] > 1e11 and d["bandwidth_bytes_s"] > 1e9, key
        assert len(d["peak_source"]) > 20 and len(d["bandwidth_source"]) > 20, key
        assert d["peak_confidence"] in ("low", "medium", "high"), key
        assert d["accelerator"] in ("gpu", "ane", "npu"), key


def test_published_figures_are_usable_or_say_why_not():
    devices = roofline.load_devices()
    figs = roofline.load_published()
    assert any(f["id"].startswith("chen2023") and f["used"] for f in figs)
    for f in figs:
        assert f["source"] and f["stage"] in ("unet_step", "end_to_end"), f["id"]
        if f["used"]:
            assert f["device"] in devices and f["arch"] in ("sd15", "sd21"), f["id"]
        else:
            assert f.get("why_not_used"), f["id"]


def test_find_device_aliases_and_error():
    assert roofline.find_device("S23")[0] == "galaxy-s23-gpu"
    assert roofline.find_device("iphone-15-pro")[0] == "iphone-15-pro-ane"
    with pytest.raises(MobileSDError) as err:
        roofline.find_device("nokia-3310")
    assert "galaxy-s23-gpu" in err.value.fix


def test_calibration_states_error_per_figure():
    cal = roofline.calibrate()
    assert set(cal["classes"]) == {"gpu", "ane"}
    for acc, c in cal["classes"].items():
        assert 0 < c["efficiency"] <= 1, acc
        assert c["mean_abs_loo_error"] >= c["mean_abs_error"] * 0.99  # held-out error is never better
    used = [f for f in cal["figures"] if f["used"]]
    assert len(used) >= 8
    for f in used:
        assert f["estimated_s"] > 0 and "error" in f and "loo_error" in f, f["id"]
        # the fit is a geometric mean: the estimate / published ratio is exactly 1 + error
        assert f["estimated_s"] / f["seconds"] == pytest.approx(1 + f["error"])
    # the chosen fusion mode is the one that fits the published figures best (held-out error)
    loo = {m: sum(c["mean_abs_loo_error"] for c in roofline.calibrate(m)["classes"].values())
           for m in roofline.FUSION_MODES}
    assert min(loo, key=loo.get) == roofline.DEFAULT_FUSION


def test_sd15_s23_estimate_report_validates():
    plan = roofline.analytic_plan("sd15", 512, 512, "batch")
    rep = roofline.estimate_report(plan, "galaxy-s23-gpu", 20, "batch", 512, 512,
                                   {"id": "analytic:sd15", "manifest_sha256": None}, "analytic:sd15")
    validate_report(rep)
    st = rep["stages"]
    assert st["end_to_end"]["median_s"] == pytest.approx(
        st["text_encoder"]["median_s"] + 20 * st["unet_step"]["median_s"] + st["vae_decoder"]["median_s"])
    # a UNet step of SD1.5 with CFG is ~1.6 TFLOP: on a ~4 TFLOP/s phone GPU it cannot be below 0.35 s
    assert 0.35 < st["unet_step"]["median_s"] < 3.0
    assert len(rep["steps"]) == 20
    assert any("efficiency" in a and "leave-one-out" in a for a in rep["estimate"]["assumptions"])
    # CFG doubles the UNet work; no CFG halves the step
    plan_none = roofline.analytic_plan("sd15", 512, 512, "none")
    _, dev = roofline.find_device("galaxy-s23-gpu")
    eff = roofline.efficiency_for(dev)
    one = roofline.stage_seconds(plan_none, dev, eff, 20)["unet_step"]
    assert one < st["unet_step"]["median_s"] < 2.2 * one


def test_estimate_cli_prints_assumptions_and_calibration(capsys, tmp_path):
    out = tmp_path / "est.json"
    rc = main(["estimate", "--device", "s23", "--steps", "20", "--cfg", "batch", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    assert "7 s target" in text and "assumptions" in text
    assert "chen2023-s23ultra-gpu" in text and "leave-one-out" in text
    rep = json.loads(out.read_text())
    validate_report(rep)
    assert rep["kind"] == "estimate" and rep["device"]["device_key"] == "galaxy-s23-gpu"


def test_estimate_cli_errors(capsys):
    assert main(["estimate", "--device", "nokia-3310"]) == 2
    assert "unknown device" in capsys.readouterr().err
    assert main(["estimate", "--efficiency", "1.5"]) == 2
    assert "out of range" in capsys.readouterr().err


def test_list_devices(capsys):
    assert main(["estimate", "--list-devices"]) == 0
    out = capsys.readouterr().out
    assert "galaxy-s24-gpu" in out and "pixel-8-gpu" in out
