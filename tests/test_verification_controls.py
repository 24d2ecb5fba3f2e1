"""Negative controls: a graph corrupted after conversion must fail the export's verification, at every
precision and on every target, and leave no bundle behind. A check never seen failing is not a check.

The corruption happens after the real converter has written the graph (a wrapper around it), before the
export verifies it: the largest weight tensor zeroed (tests/corrupt.py), two UNet chunk files swapped, or a
wrong scheduler config in the bundle.
"""

from __future__ import annotations

import json

import pytest

from corrupt import zero_largest_weight
from mobilesd.errors import MobileSDError
from mobilesd.export import ExportOptions, export
from mobilesd.export import options as export_options
from mobilesd.loading import default_model_path


class _Wrapped:
    """The real converter, with ``after(graph, out_dir)`` run once each graph file is written."""

    def __init__(self, real, after):
        self.real, self.after = real, after

    def __getattr__(self, name):
        return getattr(self.real, name)

    def convert(self, comp, out_dir, precision="fp32"):
        graph = self.real.convert(comp, out_dir, precision)
        self.after(graph, out_dir)
        return graph


def _patch_converter(monkeypatch, after):
    real = export_options.ExportPlan.converter
    monkeypatch.setattr(export_options.ExportPlan, "converter", lambda plan: _Wrapped(real(plan), after))


# (target, precision, extra options): every precision of every target, palettized Core ML included
MATRIX = [("android", "fp32", {}), ("android", "fp16", {}), ("android", "int8", {}), ("android", "int4", {}),
          ("onnx", "fp32", {}), ("onnx", "int8", {}),
          ("ios", "fp32", {}), ("ios", "fp16", {}), ("ios", "int8", {}),
          ("ios", "int4", {"min_deployment_target": "iOS18"}),
          ("ios", "fp16", {"palettize": 8}), ("ios", "fp16", {"palettize": 6}), ("ios", "fp16", {"palettize": 4})]
FAST = {("android", "fp16", ()), ("onnx", "fp32", ()), ("ios", "fp16", ())}


def _id(case):
    target, precision, extra = case
    return f"{target}-{precision}" + "".join(f"-pal{v}" for k, v in extra.items() if k == "palettize")


@pytest.mark.parametrize("case", [pytest.param(c, id=_id(c), marks=() if (c[0], c[1], tuple(c[2])) in FAST
                                               else pytest.mark.slow) for c in MATRIX])
def test_a_zeroed_layer_fails_verification(case, monkeypatch, tmp_path):
    target, precision, extra = case
    zeroed = []

    def corrupt(graph, out_dir):
        if graph.role == "unet":
            zeroed.append(zero_largest_weight(out_dir / graph.file))

    _patch_converter(monkeypatch, corrupt)
    out = tmp_path / "bundle"
    opts = ExportOptions(target=target, precision=precision, unet_chunks=1, skip_gpu_check=True, progress=False,
                         **extra)
    with pytest.raises(MobileSDError) as err:
        export(default_model_path(), out, opts)
    assert zeroed, "the corruption did not run"
    assert "verification failed" in err.value.problem and "unet: rel. L2 error" in err.value.problem, err.value.problem
    assert not out.exists() and not list(tmp_path.glob(".bundle.partial-*"))


@pytest.mark.parametrize("target", ["android", pytest.param("onnx", marks=pytest.mark.slow),
                                    pytest.param("ios", marks=pytest.mark.slow)])
def test_swapped_chunks_fail_verification(target, monkeypatch, tmp_path):
    def swap(graph, out_dir):
        if graph.name == "unet_chunk1":
            a, b = out_dir / graph.file, out_dir / graph.file.replace("chunk1", "chunk0")
            tmp = a.with_name("swap.tmp")
            a.rename(tmp)
            b.rename(a)
            tmp.rename(b)

    _patch_converter(monkeypatch, swap)
    out = tmp_path / "bundle"
    with pytest.raises(MobileSDError) as err:
        export(default_model_path(), out, ExportOptions(target=target, unet_chunks=2, skip_gpu_check=True,
                                                        progress=False))
    assert "unet_chunk1" in err.value.problem, err.value.problem
    assert not out.exists() and not list(tmp_path.glob(".bundle.partial-*"))


@pytest.mark.parametrize("target", [pytest.param("android", marks=pytest.mark.slow), "onnx",
                                    pytest.param("ios", marks=pytest.mark.slow)])
def test_a_wrong_scheduler_config_fails_the_end_to_end_check(target, monkeypatch, tmp_path):
    from mobilesd.export import tasks

    real = tasks.task_inspect

    def inspect_then_corrupt(job, loaded=None):
        result = real(job, loaded)
        cfg_file = job.root / "scheduler" / "scheduler_config.json"
        cfg = json.loads(cfg_file.read_text())
        cfg["beta_end"] = 0.02   # SD's is 0.012: a different noise schedule
        cfg_file.write_text(json.dumps(cfg))
        return result

    monkeypatch.setattr(tasks, "task_inspect", inspect_then_corrupt)
    out = tmp_path / "bundle"
    with pytest.raises(MobileSDError) as err:
        export(default_model_path(), out, ExportOptions(target=target, skip_gpu_check=True, progress=False))
    assert "end-to-end verification failed" in err.value.problem, err.value.problem
    assert not out.exists()
