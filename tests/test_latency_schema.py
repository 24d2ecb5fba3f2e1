"""Latency-report schema and validator: valid reports pass, each kind of malformed report fails naming the field."""

import copy
import json
from pathlib import Path

import pytest

from mobilesd.errors import MobileSDError
from mobilesd.latency.schema import (SCHEMA_VERSION, check_report, load_report, load_schema, stage_stats,
                                     validate_report, write_report)

APP = Path(__file__).parent / "data" / "latency_app_report.json"


@pytest.fixture
def app_report():
    return json.loads(APP.read_text())


def test_schema_is_versioned_and_app_example_validates(app_report):
    schema = load_schema()
    assert schema["properties"]["schema_version"]["pattern"] == "^1\\.[0-9]+$"
    assert SCHEMA_VERSION.startswith("1.")
    assert check_report(app_report) == []
    assert load_report(APP)["bundle"]["id"] == "sd15-android-w8"


def _set(path, value):
    def mutate(r):
        *head, last = path
        node = r
        for k in head:
            node = node[k]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
    return mutate


_DELETE = object()

CASES = [
    (_set(["stages", "unet_step", "median_s"], -1.0), "stages.unet_step.median_s", ">= 0"),
    (_set(["stages", "unet_stp"], {"median_s": 1.0}), "stages", "unet_chunk_<i>"),
    (_set(["device", "os"], _DELETE), "device.os", "Android 14"),
    (_set(["bundle", "manifest_sha256"], "abc"), "bundle.manifest_sha256", "64 lowercase hex"),
    (_set(["settings", "cfg_mode"], "double"), "settings.cfg_mode", "batch"),
    (_set(["kind"], "estimate"), "estimate", "estimator details"),
    (_set(["protocol", "repeats"], 0), "protocol.repeats", "timed runs"),
    (_set(["measured_by", "kind"], "robot"), "measured_by.kind", "host"),
    (_set(["stages", "end_to_end"], _DELETE), "stages.end_to_end", "end_to_end"),
    (_set(["surprise"], 1), "(top level)", "allowed keys"),
    (_set(["created"], "yesterday"), "created", "ISO 8601"),
]


@pytest.mark.parametrize("mutate,field,hint", CASES, ids=[c[1] + ":" + c[2] for c in CASES])
def test_malformed_report_names_field_and_fix(app_report, mutate, field, hint):
    bad = copy.deepcopy(app_report)
    mutate(bad)
    with pytest.raises(MobileSDError) as err:
        validate_report(bad, "bad.json")
    msg = str(err.value)
    assert f"'{field}" in msg or field in msg, msg
    assert hint in msg, msg
    assert err.value.fix and "docs/latency-report.md" in err.value.fix


def test_semantic_checks(app_report):
    r = copy.deepcopy(app_report)
    r["steps"].pop()
    assert any("settings.steps is 4" in p for p, _ in check_report(r))
    r = copy.deepcopy(app_report)
    r["stages"]["vae_decoder"]["median_s"] = 5.0  # outside its samples
    assert any("outside its samples" in p for p, _ in check_report(r))
    r = copy.deepcopy(app_report)
    r["schema_version"] = "2.0"
    assert "not supported" in check_report(r)[0][0]
    assert check_report([1, 2]) and "not a JSON object" in check_report([1, 2])[0][0]


def test_stage_stats():
    st = stage_stats([0.3, 0.1, 0.2, 0.4], calls_per_run=20)
    assert st["median_s"] == pytest.approx(0.25)
    assert (st["min_s"], st["max_s"]) == (0.1, 0.4)
    assert st["stdev_s"] == pytest.approx(0.1290994, rel=1e-5)
    assert st["calls_per_run"] == 20
    assert stage_stats([2.0])["stdev_s"] == 0.0


def test_write_report_refuses_invalid_and_leaves_nothing(tmp_path, app_report):
    out = tmp_path / "r.json"
    bad = copy.deepcopy(app_report)
    bad["stages"]["end_to_end"]["median_s"] = "fast"
    with pytest.raises(MobileSDError):
        write_report(out, bad)
    assert list(tmp_path.iterdir()) == []
    write_report(out, app_report)
    assert json.loads(out.read_text()) == app_report
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp file left behind


def test_load_report_errors(tmp_path):
    with pytest.raises(MobileSDError, match="does not exist"):
        load_report(tmp_path / "missing.json")
    p = tmp_path / "x.json"
    p.write_text("{not json")
    with pytest.raises(MobileSDError, match="is not JSON"):
        load_report(p)
