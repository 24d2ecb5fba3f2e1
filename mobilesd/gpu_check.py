"""GPU-delegate compatibility check: compile a .tflite with LiteRT's GPU (WebGPU) accelerator only.

Static checkers (ai-edge-litert's analyzer, TensorFlow's gpu_compatibility) call graphs "compatible"
even when they hold ops the delegate rejects, so we compile for real: ``CompiledModel`` with the GPU
accelerator and no CPU fallback, on whatever Vulkan device is present (software lavapipe here, from
Debian bookworm-backports' mesa-vulkan-drivers). The delegate prints the ops it rejects on the native
stderr, so the compile runs in a child process whose stderr we parse; that also keeps a crash in the
accelerator from taking down an export. Optionally the compiled graph is run on given inputs so the
GPU numerics can be compared with PyTorch.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class GpuCheckResult:
    available: bool                       # a GPU accelerator (Vulkan adapter) could be created
    fully_accelerated: bool
    compiled: bool = False                # CompiledModel was created with the GPU accelerator only
    ran: bool = False                     # inputs were given and the compiled graph ran on them
    run_error: str | None = None          # why a compiled graph failed to run (inputs given)
    unsupported_ops: list[str] = field(default_factory=list)
    gpu_ops: int | None = None            # as the delegate reports: ops on the GPU / left for the CPU
    cpu_ops: int | None = None
    adapter: str | None = None
    error: str | None = None
    seconds: float | None = None
    peak_rss_bytes: int | None = None      # of the compile (+ run) process
    outputs: list[np.ndarray] | None = None   # when inputs were given and the graph compiled

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("outputs")
        return d


_UNSUPPORTED = re.compile(r"^([A-Z0-9_]+):\s*(.*)$")
_SPLIT = re.compile(r"(\d+) operations will run on the GPU, and the remaining (\d+) operations? will run on the CPU")
_ADAPTER = re.compile(r"Selected adapter: (.+?), arch=")


def parse_delegate_log(text: str) -> dict:
    """Unsupported ops (op -> reason), op split and adapter name from the delegate's stderr."""
    ops, gpu, cpu, adapter = {}, None, None, None
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "are not supported by GPU delegate" in line:
            for nxt in lines[i + 1:]:
                m = _UNSUPPORTED.match(nxt.strip())
                if not m:
                    break
                ops[m.group(1)] = m.group(2)
        m = _SPLIT.search(line)
        if m:
            gpu, cpu = int(m.group(1)), int(m.group(2))
        m = _ADAPTER.search(line)
        if m:
            adapter = m.group(1).strip()
    return {"unsupported": ops, "gpu_ops": gpu, "cpu_ops": cpu, "adapter": adapter}


def check_gpu(tflite_path: str | Path, inputs: dict[str, np.ndarray] | None = None,
              timeout: float = 1800) -> GpuCheckResult:
    import time

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result_file = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "mobilesd.gpu_check", str(tflite_path), "--result", str(result_file)]
        if inputs is not None:
            np.savez(Path(tmp) / "inputs.npz", **inputs)
            cmd += ["--inputs", str(Path(tmp) / "inputs.npz"), "--outputs", str(Path(tmp) / "outputs.npz")]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return GpuCheckResult(available=True, fully_accelerated=False, error=f"timed out after {timeout}s")
        log = parse_delegate_log(proc.stderr)
        child = json.loads(result_file.read_text()) if result_file.exists() else {}
        outputs = None
        if child.get("ran") and (Path(tmp) / "outputs.npz").exists():
            with np.load(Path(tmp) / "outputs.npz") as z:
                outputs = [z[f"out{i}"] for i in range(len(z.files))]
    error = child.get("error")
    run_error = error if (inputs is not None and child.get("compiled") and not child.get("ran")) else None
    if proc.returncode != 0 and not child:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        error = f"GPU check process died (exit {proc.returncode}): {tail}"
    available = bool(child.get("compiled")) or bool(log["unsupported"]) or log["adapter"] is not None
    if error and ("No adapters found" in proc.stderr or "No adapter" in error):
        available = False
    if inputs is not None and child.get("compiled") and not child.get("ran") and run_error is None:
        run_error = error or f"the GPU run produced no outputs (exit {proc.returncode})"
    return GpuCheckResult(
        available=available, compiled=bool(child.get("compiled")), ran=outputs is not None, run_error=run_error,
        fully_accelerated=bool(child.get("compiled")) and bool(child.get("fully_accelerated")) and not log["unsupported"],
        unsupported_ops=sorted(log["unsupported"]), gpu_ops=log["gpu_ops"], cpu_ops=log["cpu_ops"],
        adapter=log["adapter"], error=error, seconds=round(time.perf_counter() - start, 2),
        peak_rss_bytes=child.get("peak_rss_bytes"), outputs=outputs)


def _child(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--result", required=True)
    p.add_argument("--inputs")
    p.add_argument("--outputs")
    a = p.parse_args(argv)
    res: dict = {"compiled": False}
    try:
        from ai_edge_litert.compiled_model import CompiledModel, HardwareAccelerator

        model = CompiledModel.from_file(a.model, hardware_accel=HardwareAccelerator.GPU)
        res["compiled"] = True
        res["fully_accelerated"] = bool(model.is_fully_accelerated())
        # recorded now: a crash while running must still read as "compiled, then the run failed"
        Path(a.result).write_text(json.dumps(dict(res, error="the GPU run crashed the process")))
        if a.inputs:
            sig = model.get_signature_list()
            key = next(iter(sig))
            # buffers by name: the positional buffer order need not follow the signature's
            ins = {name: model.create_input_buffer_by_name(key, name) for name in sig[key]["inputs"]}
            outs = {name: model.create_output_buffer_by_name(key, name) for name in sig[key]["outputs"]}
            with np.load(a.inputs) as z:
                for name, buf in ins.items():
                    buf.write(np.ascontiguousarray(z[name]))
            model.run_by_name(key, ins, outs)
            details = model.get_output_tensor_details(key)
            arrays = {}
            names = sorted(sig[key]["outputs"], key=lambda s: int(re.sub(r"\D", "", s) or 0))
            for i, name in enumerate(names):
                d = details[name]
                shape = tuple(d["shape"])
                dtype = np.dtype(d.get("dtype", np.float32))
                arrays[f"out{i}"] = outs[name].read(int(np.prod(shape)), dtype).reshape(shape)
            np.savez(a.outputs, **arrays)
            res["ran"] = True
    except Exception as exc:  # reported to the parent, which decides what it means
        res["error"] = f"{type(exc).__name__}: {str(exc).strip()[:2000]}"
    import resource

    res["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    Path(a.result).write_text(json.dumps(res))
    sys.stderr.flush()
    os._exit(0)  # skip native teardown, which can be slow or noisy


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
