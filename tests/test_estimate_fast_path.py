"""Issue 14 part 6: `mobilesd estimate` reads steps, CFG mode, decoder and precision from the bundle or the
flags; the fast-path estimate table (benchmarks/estimate_fast_path.py) and its rendering by `mobilesd report`."""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

from mobilesd.bundle import loads_strict
from mobilesd.cli import main
from mobilesd.errors import MobileSDError
from mobilesd.latency import roofline
from mobilesd.latency.costs import analytic_graph_cost
from mobilesd.latency.schema import validate_report
from mobilesd.latency.table import (CONFIGURATIONS, build_fast_path_table, configuration_rows, is_table,
                                    render_table_markdown, validate_table, write_table)

REPO = Path(__file__).resolve().parents[1]


def _estimate(capsys, tmp_path, *argv) -> tuple[dict, str]:
    out = tmp_path / "est.json"
    assert main(["estimate", *argv, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    rep = json.loads(out.read_text())
    validate_report(rep)
    return rep, text


# ------------------------------------------------------------------------------------------ --model

def test_tiny_decoder_is_the_taesd_decoder_and_cheaper_by_its_flop_ratio():
    from diffusers import AutoencoderTiny

    tiny = analytic_graph_cost("sd15", "tiny_vae_decoder", 512, 512, 1)
    full = analytic_graph_cost("sd15", "vae_decoder", 512, 512, 1)
    with torch.device("meta"):
        taesd = AutoencoderTiny()  # diffusers' default config: SD 1.x/2.x's TAESD
    assert taesd.config.decoder_block_out_channels == (64, 64, 64, 64)
    assert tiny.weight_bytes == pytest.approx(2 * sum(p.numel() for p in taesd.decoder.parameters()))
    assert sorted(tiny.ops[-1].out_shape) == sorted(full.ops[-1].out_shape) == [1, 3, 512, 512]  # a 512 px image
    assert 10 < full.flops / tiny.flops < 30  # 2.5 TFLOP against ~0.14 TFLOP
    # the estimate's decoder stage follows the FLOPs: the decoder is compute-bound on a phone GPU at 512 px
    _, dev = roofline.find_device("galaxy-s23-gpu")
    eff = roofline.efficiency_for(dev)
    sec = {d: roofline.stage_seconds(roofline.analytic_plan("sd15", 512, 512, "none", decoder=d), dev, eff, 4)
           for d in ("full", "tiny")}
    ratio = sec["full"]["vae_decoder"] / sec["tiny"]["vae_decoder"]
    assert ratio == pytest.approx(full.flops / tiny.flops, rel=0.2)
    assert sec["full"]["unet_step"] == sec["tiny"]["unet_step"]
    assert sec["full"]["end_to_end"] - sec["tiny"]["end_to_end"] == pytest.approx(
        sec["full"]["vae_decoder"] - sec["tiny"]["vae_decoder"])
    with pytest.raises(MobileSDError, match="unknown decoder"):
        roofline.analytic_plan("sd15", decoder="small")


def test_estimate_cli_decoder_flag(capsys, tmp_path):
    full, _ = _estimate(capsys, tmp_path, "--device", "s23", "--steps", "4", "--cfg", "none")
    tiny, text = _estimate(capsys, tmp_path, "--device", "s23", "--steps", "4", "--cfg", "none", "--decoder", "tiny")
    fc, tc = full["estimate"]["stage_costs"]["vae_decoder"], tiny["estimate"]["stage_costs"]["vae_decoder"]
    assert fc["decoder"] == "full" and tc["decoder"] == "tiny"
    assert tc["flops"] == analytic_graph_cost("sd15", "tiny_vae_decoder", 512, 512, 1).flops
    assert tc["weight_bytes"] < fc["weight_bytes"] / 20
    assert tiny["stages"]["vae_decoder"]["median_s"] < full["stages"]["vae_decoder"]["median_s"] / 10
    assert "tiny decoder" in text and "decoder: tiny  [flag --decoder]" in text
    assert any("TAESD" in a for a in tiny["estimate"]["assumptions"])


def test_cfg_none_halves_the_unet_work_of_cfg_batch(capsys, tmp_path):
    batch, text = _estimate(capsys, tmp_path, "--device", "s23", "--steps", "20")
    none, _ = _estimate(capsys, tmp_path, "--device", "s23", "--steps", "20", "--cfg", "none")
    assert batch["settings"]["cfg_mode"] == "batch" and none["settings"]["cfg_mode"] == "none"
    assert "cfg: batch  [default]" in text
    for stage in ("unet_step", "text_encoder"):
        b, n = batch["estimate"]["stage_costs"][stage], none["estimate"]["stage_costs"][stage]
        assert b["flops"] == pytest.approx(2 * n["flops"], rel=1e-5), stage  # (the causal mask is per call)
    assert batch["stages"]["unet_step"]["median_s"] == pytest.approx(2 * none["stages"]["unet_step"]["median_s"],
                                                                     rel=0.05)


def test_weight_bits_sets_the_report_precision(capsys, tmp_path):
    rep, text = _estimate(capsys, tmp_path, "--device", "s23", "--weight-bits", "8")
    assert rep["runtime"]["precision"] == "int8" and "precision: int8  [flag --weight-bits]" in text
    rep16, _ = _estimate(capsys, tmp_path, "--device", "s23")
    assert rep16["runtime"]["precision"] == "fp16"
    assert rep["estimate"]["stage_costs"]["unet_step"]["weight_bytes"] == pytest.approx(
        rep16["estimate"]["stage_costs"]["unet_step"]["weight_bytes"] / 2)


# ------------------------------------------------------------------------------------------ --bundle

class _Conv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


@pytest.fixture(scope="module")
def conv_tflite(tmp_path_factory):
    import litert_torch

    path = tmp_path_factory.mktemp("fastpath-tfl") / "conv.tflite"
    litert_torch.convert(_Conv().eval(), (torch.randn(1, 4, 8, 8),)).export(str(path))
    return path


def _bundle(root: Path, conv: Path, *, mode: str, decoder: str | None, scheduler: str, precision="fp16") -> Path:
    """A bundle folder with a manifest in the export's shape and stand-in .tflite graphs (a batch-1 conv):
    enough for the estimator, which costs whatever graphs the manifest lists."""
    root.mkdir(parents=True, exist_ok=True)
    graphs = []
    for name in ("text_encoder", "unet", "vae_decoder"):
        shutil.copy(conv, root / f"{name}.tflite")
        g = {"name": name, "role": name, "file": f"{name}.tflite", "precision": precision, "meta": {}}
        if name == "vae_decoder" and decoder:
            g["meta"]["decoder"] = decoder
        graphs.append(g)
    manifest = {"format": "mobilesd-bundle", "bundle_id": root.name, "precision": precision,
                "image": {"height": 64, "width": 64, "channels": 3, "layout": "NHWC", "range": [0, 1]},
                "latent": {"channels": 4, "height": 8, "width": 8, "scaling_factor": 0.18215, "vae_scale_factor": 8},
                "scheduler": {"config": "scheduler/scheduler_config.json", "default": scheduler,
                              "supported": [scheduler], "train_timesteps": 1000},
                "cfg": {"mode": mode, "unet_batch": 2 if mode == "batch" else 1,
                        "batch_order": ["conditional"] if mode == "none" else ["unconditional", "conditional"],
                        "default_guidance": 1.0 if mode == "none" else 7.5, "negative_prompt_default": ""},
                "graphs": graphs}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_bundle_settings_from_the_manifest(tmp_path, conv_tflite):
    fast = _bundle(tmp_path / "fast", conv_tflite, mode="none", decoder="tiny", scheduler="lcm")
    s = roofline.bundle_settings(roofline.read_manifest(fast))
    assert {k: v[0] for k, v in s.items()} == {"steps": 4, "cfg": "none", "decoder": "tiny", "precision": "fp16",
                                               "scheduler": "lcm"}
    assert "cfg.mode" in s["cfg"][1] and "meta.decoder" in s["decoder"][1] and "lcm" in s["steps"][1]
    old = _bundle(tmp_path / "old", conv_tflite, mode="batch", decoder=None, scheduler="dpm", precision="int8")
    s = roofline.bundle_settings(roofline.read_manifest(old))
    assert (s["steps"][0], s["cfg"][0], s["decoder"][0], s["precision"][0]) == (20, "batch", "full", "int8")


def test_estimate_bundle_takes_manifest_settings_and_flags_override(capsys, tmp_path, conv_tflite):
    fast = _bundle(tmp_path / "fast", conv_tflite, mode="none", decoder="tiny", scheduler="lcm")
    rep, text = _estimate(capsys, tmp_path, "--bundle", str(fast), "--device", "s23")
    assert rep["settings"]["steps"] == 4 and rep["settings"]["cfg_mode"] == "none"
    assert rep["settings"]["scheduler"] == "lcm" and rep["settings"]["guidance"] == 1.0
    assert rep["estimate"]["stage_costs"]["vae_decoder"]["decoder"] == "tiny"
    assert rep["estimate"]["stage_costs"]["unet_step"]["calls"] == 1
    assert len(rep["steps"]) == 4
    assert "steps: 4  [default for the manifest's scheduler.default 'lcm']" in text
    assert "cfg: none  [manifest cfg.mode]" in text and "decoder: tiny  [manifest" in text
    assert rep["runtime"]["precision"] == "fp16" and "precision: fp16  [manifest precision]" in text
    one_step = rep["stages"]["unet_step"]["median_s"]

    # flags override the manifest and say so; a batch-1 UNet graph runs twice per CFG step
    rep, text = _estimate(capsys, tmp_path, "--bundle", str(fast), "--device", "s23", "--steps", "8",
                          "--cfg", "batch")
    assert rep["settings"]["steps"] == 8 and rep["settings"]["cfg_mode"] == "batch"
    assert rep["estimate"]["stage_costs"]["unet_step"]["calls"] == 2
    assert rep["stages"]["unet_step"]["median_s"] == pytest.approx(2 * one_step)
    assert "steps: 8  [flag --steps, overrides 4 (default for the manifest's scheduler.default 'lcm')]" in text
    assert "cfg: batch  [flag --cfg, overrides none (manifest cfg.mode)]" in text

    # a full-decoder bundle: --decoder tiny costs the SD TAESD decoder in place of its graph
    full = _bundle(tmp_path / "full", conv_tflite, mode="batch", decoder="full", scheduler="dpm")
    rep_full, _ = _estimate(capsys, tmp_path, "--bundle", str(full), "--device", "s23")
    rep_tiny, text = _estimate(capsys, tmp_path, "--bundle", str(full), "--device", "s23", "--decoder", "tiny")
    assert rep_full["settings"]["steps"] == 20 and rep_full["settings"]["cfg_mode"] == "batch"
    dec = rep_tiny["estimate"]["stage_costs"]["vae_decoder"]
    assert dec["decoder"] == "tiny" and dec["flops"] == analytic_graph_cost("sd15", "tiny_vae_decoder", 64, 64, 1).flops
    assert rep_full["estimate"]["stage_costs"]["vae_decoder"]["decoder"] == "full"
    assert "decoder: tiny  [flag --decoder, overrides full (manifest graphs[vae_decoder].meta.decoder)]" in text

    # the full decoder of a tiny-decoder bundle has no graph to cost
    assert main(["estimate", "--bundle", str(fast), "--decoder", "full"]) == 2
    assert "full decoder's cost needs its graph" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ the table

def test_configuration_rows_keep_every_named_configuration():
    rows = configuration_rows()
    assert len(rows) == 10  # 6 x 2, less the two the "+ tiny decoder" names already are
    named = [n for r in rows for n in r["named"]]
    assert sorted(named) == sorted(c[0] for c in CONFIGURATIONS)
    by_name = {n: r for r in rows for n in r["named"]}
    assert by_name["4 steps no CFG + tiny decoder"]["decoder"] == "tiny"
    assert by_name["4 steps no CFG + tiny decoder"]["config"] == "4 steps no CFG"
    assert by_name["20 steps CFG int8"]["weight_bits"] == 8
    assert {(r["steps"], r["cfg"], r["weight_bits"], r["decoder"]) for r in rows} == {
        (s, c, b, d) for _, s, c, b, _ in CONFIGURATIONS for d in ("full", "tiny")}


@pytest.fixture(scope="module")
def s23_table():
    return build_fast_path_table(["galaxy-s23-gpu", "iphone-15-pro-ane"])


def test_table_rows_match_the_estimate_and_say_they_are_estimates(s23_table):
    doc = validate_table(s23_table)
    assert is_table(doc) and len(doc["rows"]) == 20
    assert all(r["kind"] == "estimate" for r in doc["rows"])
    assert "every row is an estimate" in doc["statement"]
    by = {(r["device_key"], r["steps"], r["cfg"], r["precision"], r["decoder"]): r for r in doc["rows"]}
    # the same numbers as `mobilesd estimate`
    plan = roofline.analytic_plan("sd15", 512, 512, "batch")
    rep = roofline.estimate_report(plan, "galaxy-s23-gpu", 20, "batch", 512, 512,
                                   {"id": "analytic:sd15", "manifest_sha256": None}, "analytic:sd15")
    row = by[("galaxy-s23-gpu", 20, "batch", "fp16", "full")]
    assert row["end_to_end_s"] == pytest.approx(rep["stages"]["end_to_end"]["median_s"])
    assert row["text_encoder_s"] + row["unet_s"] + row["decoder_s"] == pytest.approx(row["end_to_end_s"])
    # leave-one-out: the S23 has its own published figure; the iPhone's Neural Engine the class mean
    cal = roofline.calibrate()
    chen = next(f for f in cal["figures"] if f["id"] == "chen2023-s23ultra-gpu")
    assert row["loo_error"] == pytest.approx(chen["loo_error"]) and row["loo_kind"] == "device figure"
    ane = by[("iphone-15-pro-ane", 4, "none", "fp16", "tiny")]
    assert ane["loo_kind"] == "class mean"
    assert ane["loo_error"] == pytest.approx(cal["classes"]["ane"]["mean_abs_loo_error"])
    for r in doc["rows"]:
        assert r["under_target"] == (r["end_to_end_s"] <= 7.0)
        assert r["unet_s"] == pytest.approx(r["steps"] * r["unet_step_s"])
    # tiny decoder: the same UNet, a cheaper decoder, smaller weights
    for key in ("galaxy-s23-gpu", "iphone-15-pro-ane"):
        f, t = by[(key, 4, "none", "fp16", "full")], by[(key, 4, "none", "fp16", "tiny")]
        assert t["unet_s"] == f["unet_s"] and t["decoder_s"] < f["decoder_s"] / 10
        assert t["weight_bytes"] < f["weight_bytes"] and t["named"] == "4 steps no CFG + tiny decoder"
    assert doc["decoders"]["flops_ratio"] > 10 and doc["decoders"]["weight_bytes_ratio"] > 20
    # the fast path is under the line on the S23 GPU; 20 steps with CFG is not
    assert by[("galaxy-s23-gpu", 4, "none", "fp16", "tiny")]["under_target"]
    assert not by[("galaxy-s23-gpu", 20, "batch", "fp16", "full")]["under_target"]


def test_report_renders_the_table_with_the_target_line(s23_table, tmp_path, capsys):
    path = write_table(tmp_path / "table.json", s23_table)
    loads_strict(path.read_text())  # strict JSON: no NaN / Infinity
    html, md = tmp_path / "table.html", tmp_path / "table.md"
    assert main(["report", str(path), "--out", str(html), "--markdown", str(md)]) == 0
    text = capsys.readouterr().out
    assert "20 of 20 rows are estimates, not measurements" in text
    assert "Target line: 7 s" in text and "| 7 s line |" in text
    assert "under 7 s" in text and "over 7 s" in text and "+51% (own figure)" in text
    assert "4 steps no CFG (= 4 steps no CFG + tiny decoder)" in text
    page = html.read_text()
    assert "20 of 20 rows are estimates, not measurements" in page and "data:image/png;base64," in page
    assert md.read_text() == render_table_markdown(s23_table)

    # with latency reports: one page, the table after the runs
    est = tmp_path / "est.json"
    assert main(["estimate", "--device", "s23", "--out", str(est)]) == 0
    capsys.readouterr()
    assert main(["report", str(est), str(path), "--out", str(html)]) == 0
    text = capsys.readouterr().out
    assert "# Latency report (1 runs" in text and "rows are estimates" in text
    assert 'id="estimate-table"' in html.read_text()

    # a table whose verdict disagrees with its numbers is refused
    bad = json.loads(path.read_text())
    bad["rows"][0]["under_target"] = not bad["rows"][0]["under_target"]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    assert main(["report", str(tmp_path / "bad.json")]) == 2
    assert "under_target disagrees" in capsys.readouterr().err


def test_table_takes_app_reports_as_measurement_rows(tmp_path):
    from mobilesd.latency.schema import load_report

    example = load_report(REPO / "tests" / "data" / "latency_app_report.json")
    with pytest.raises(MobileSDError, match="synthetic example"):  # hand-made numbers are no measurement
        build_fast_path_table(["galaxy-s23-gpu"], configurations=CONFIGURATIONS[:1], app_reports=[example])
    app = {k: v for k, v in example.items() if k != "synthetic"}  # as an app on a phone would write it
    doc = build_fast_path_table(["galaxy-s23-gpu"], configurations=CONFIGURATIONS[:1], app_reports=[app])
    kinds = [r["kind"] for r in doc["rows"]]
    assert kinds == ["estimate", "estimate", "measurement"]
    assert "1 row(s) of kind 'measurement'" in doc["statement"]
    assert "2 of 3 rows are estimates" in render_table_markdown(doc)


def test_benchmark_script_writes_a_renderable_table(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("estimate_fast_path", REPO / "benchmarks" / "estimate_fast_path.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "fp.json"
    assert mod.main(["--device", "pixel-8", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "10 of 10 rows are estimates" in text and "Pixel 8 (GPU)" in text
    doc = validate_table(loads_strict(out.read_text()))
    assert {r["config"] for r in doc["rows"]} == {"20 steps CFG", "20 steps CFG int8", "8 steps CFG",
                                                  "4 steps no CFG", "1 step no CFG"}
