"""Run one exported graph on this machine: TFLite (ai-edge-litert CPU interpreter), ONNX Runtime, or a Core ML
package through the MIL interpreter (mobilesd.runtime.mil, imported only when one is opened).

Inputs and outputs are passed by the names the manifest lists, so the host pipeline, verification and
benchmarks all drive graphs the same way an app does.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from mobilesd.errors import MobileSDError
from mobilesd.runtime.graph_session import GraphSession

__all__ = ["GraphSession", "OnnxSession", "TFLiteSession", "open_graph"]

class TFLiteSession(GraphSession):
    def __init__(self, path: str | Path, input_names: list[str], output_names: list[str],
                 threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        self.interpreter = Interpreter(model_path=str(path), num_threads=threads or os.cpu_count())
        sig = self.interpreter.get_signature_list()
        self.signature = next(iter(sig))
        self.runner = self.interpreter.get_signature_runner(self.signature)
        graph_inputs = sig[self.signature]["inputs"]
        missing = [n for n in input_names if n not in graph_inputs]
        if missing:
            raise MobileSDError(f"{path}: graph has no inputs {missing} (it has {graph_inputs})",
                                "the bundle does not match its manifest; re-export it")
        # litert-torch names outputs output_0, output_1, ... in return order.
        self._graph_outputs = sorted(sig[self.signature]["outputs"],
                                     key=lambda s: int(re.sub(r"\D", "", s) or 0))
        self.input_names, self.output_names = list(input_names), list(output_names)

    def run(self, inputs):
        out = self.runner(**{k: np.ascontiguousarray(inputs[k]) for k in self.input_names})
        return [out[k] for k in self._graph_outputs]


class OnnxSession(GraphSession):
    def __init__(self, path: str | Path, input_names: list[str], output_names: list[str],
                 threads: int | None = None, low_memory: bool = False):
        """``low_memory``: no CPU memory arena, so each tensor is allocated at its size and freed when done
        (the arena grows by powers of two and keeps its peak until the session closes)."""
        import onnxruntime as ort

        self.path = Path(path)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        if low_memory:
            opts.enable_cpu_mem_arena = False
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        graph_inputs = [i.name for i in self.session.get_inputs()]
        unlisted = [n for n in graph_inputs if n not in input_names]
        if unlisted:
            raise MobileSDError(f"{path}: graph needs inputs {unlisted} that the manifest does not list "
                                f"(it lists {list(input_names)})", "the bundle does not match its manifest; re-export it")
        self.input_names = [n for n in input_names if n in graph_inputs]  # ONNX drops unused inputs
        self.output_names = list(output_names)
        self._graph_outputs = [o.name for o in self.session.get_outputs()]

    def run(self, inputs):
        return self.session.run(self._graph_outputs, {k: np.ascontiguousarray(inputs[k]) for k in self.input_names})


def open_graph(path: str | Path, input_names: list[str], output_names: list[str],
               threads: int | None = None, low_memory: bool = False) -> GraphSession:
    """``low_memory``: a session for one call on an SD-scale graph, allocating no more than it uses
    (onnxruntime: no memory arena; the other runtimes have no such setting)."""
    path = Path(path)
    if path.suffix == ".tflite":
        return TFLiteSession(path, input_names, output_names, threads)
    if path.suffix == ".onnx":
        return OnnxSession(path, input_names, output_names, threads, low_memory)
    if path.suffix == ".mlpackage":  # Core ML: its MIL program, interpreted op by op (mobilesd.runtime.mil)
        from mobilesd.runtime.mil import MILSession

        return MILSession(path, input_names, output_names, threads)
    raise MobileSDError(f"no host runtime for {path.name}",
                        "host runtimes: .tflite (ai-edge-litert), .onnx (onnxruntime) and .mlpackage "
                        "(the MIL interpreter)")
