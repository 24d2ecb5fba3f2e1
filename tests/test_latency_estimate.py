"""Roofline estimator: device table, calibration against published figures, the SD1.5 / S23 estimate."""

import json
import math
import re

import pytest

from mobilesd.cli import main
from mobilesd.errors import MobileSDError
from mobilesd.latency import roofline
from mobilesd.latency.schema import validate_report


_UNIT = {"TFLOPS": 1e12, "trillion operations/s": 1e12, "GB/s": 1e9}
_NUMBER = r"~?([0-9]+(?:\.[0-9]+)?)"


def _figure_from_source(text: str, unit: str) -> float:
    """The number a device-table source sentence gives, in base units: the derivation's product where it shows
    one ("1536 FP32 ALUs x 2 x 0.719 GHz = 2.2 TFLOPS FP32", "LPDDR5X-8400 x 64-bit = 67.2 GB/s"), else the first
    figure quoted in ``unit``; then the conversion the sentence states ("x2 for FP16", "taken as half",
    "scaled by 24/32")."""
    units = "|".join(re.escape(u) for u in (_UNIT if unit == "flops" else ["GB/s"]))
    m = re.search(_NUMBER + rf" ({units})", text)
    assert m, f"no figure in {unit} in: {text}"
    stated = float(m.group(1)) * _UNIT[m.group(2)]
    value = stated
    derived = re.search(rf"derived: (.*?) = {_NUMBER} TFLOPS", text)
    if derived:  # factors "N things" x ... x "C GHz": the product in GFLOP/s
        factors = [float(re.match(_NUMBER, f.strip()).group(1)) for f in derived.group(1).split(" x ")]
        value = math.prod(factors) * 1e9
    lpddr = re.search(rf"LPDDR\w*-([0-9]+) x ([0-9]+)-bit = {_NUMBER} GB/s", text)
    if lpddr:  # transfers/s (MT/s) x bus width in bytes
        value = float(lpddr.group(1)) * 1e6 * int(lpddr.group(2)) / 8
    assert value == pytest.approx(stated, rel=0.03), f"the derivation does not give the stated figure: {text}"
    if unit == "flops":
        if "x2 for FP16" in text:
            value *= 2
        elif "taken as half" in text:
            value /= 2
        scaled = re.search(r"scaled by ([0-9]+)/([0-9]+)", text)
        if scaled:
            value *= int(scaled.group(1)) / int(scaled.group(2))
    return value


def test_device_table_figures_follow_from_their_sources():
    devices = roofline.load_devices()
    for key in ("galaxy-s23-gpu", "galaxy-s24-gpu", "pixel-8-gpu", "iphone-15-pro-gpu", "iphone-15-pro-ane"):
        assert key in devices, key
    for key, d in devices.items():
        # the figure the estimator uses is the one its source sentence states or derives, not a loose number
        assert d["peak_fp16_flops"] == pytest.approx(_figure_from_source(d["peak_source"], "flops"), rel=0.01), key
        assert d["bandwidth_bytes_s"] == pytest.approx(_figure_from_source(d["bandwidth_source"], "bytes"),
                                                       rel=0.01), key
        assert d["peak_confidence"] in ("low", "medium", "high"), key
        assert d["accelerator"] in ("gpu", "ane", "npu"), key
    # the check can fail: an FP16 peak that forgot its "x2 for FP16", a bandwidth off its LPDDR arithmetic
    s23 = devices["galaxy-s23-gpu"]
    assert s23["peak_fp16_flops"] / 2 != pytest.approx(_figure_from_source(s23["peak_source"], "flops"), rel=0.01)
    with pytest.raises(AssertionError, match="derivation"):
        _figure_from_source("LPDDR5X-8400 x 64-bit = 76.2 GB/s", "bytes")


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
    published = {f["id"]: f for f in roofline.load_published()}
    devices = roofline.load_devices()
    for acc, c in cal["classes"].items():
        figs = [f for f in used if f["accelerator"] == acc]
        assert sorted(c["figures"]) == sorted(f["id"] for f in figs)
        # recomputed here from the published figures and the device table: the roofline time of each figure
        # at efficiency 1, and the class efficiency as the geometric mean of ideal / published over them
        ideal = {}
        for f in figs:
            p = published[f["id"]]
            plan = roofline.analytic_plan(p["arch"], p["width"], p["height"], p["cfg"], weight_bytes=p["weight_bits"] / 8)
            ideal[f["id"]] = roofline.stage_seconds(plan, devices[p["device"]], 1.0, p["steps"])[p["stage"]]
        ratios = {i: ideal[i] / published[i]["seconds"] for i in ideal}
        assert c["efficiency"] == pytest.approx(math.exp(sum(map(math.log, ratios.values())) / len(ratios)), rel=1e-9)
        for f in figs:
            assert f["seconds"] == published[f["id"]]["seconds"]
            assert f["estimated_s"] == pytest.approx(ideal[f["id"]] / c["efficiency"], rel=1e-9), f["id"]
            others = [r for i, r in ratios.items() if i != f["id"]]
            loo_eff = math.exp(sum(map(math.log, others)) / len(others))
            assert f["loo_error"] == pytest.approx(ideal[f["id"]] / loo_eff / f["seconds"] - 1, rel=1e-9), f["id"]
        # a geometric-mean fit leaves errors whose log ratios cancel (an arithmetic mean would not)
        assert sum(math.log(1 + f["error"]) for f in figs) == pytest.approx(0, abs=1e-9)
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
