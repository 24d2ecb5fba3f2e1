"""MILSession: a Core ML package as a ``GraphSession`` (what ``open_graph`` returns for ``.mlpackage``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mobilesd.errors import MobileSDError
from mobilesd.runtime.graph_session import GraphSession

from .interpreter import MILInterpreter, torch_threads


class MILSession(GraphSession):
    """``open_graph`` for ``.mlpackage``: runs the package's MIL program with the interpreter.

    Inputs and outputs go by the manifest's names. ``name_map`` (manifest name -> Core ML name) renames
    where they differ; an output name the program lacks falls back to the function's output order.
    Decompressed weights are cached between runs (``cache_weights``).
    """

    def __init__(self, path, input_names: list[str], output_names: list[str], threads: int | None = None,
                 *, fp16_emulation: bool = True, function: str = "main",
                 name_map: dict[str, str] | None = None, cache_weights: bool = True):
        self.path = Path(path) if isinstance(path, (str, Path)) else None
        self.interp = MILInterpreter(path, function, fp16_emulation=fp16_emulation,
                                     cache_constants=cache_weights, where=str(path))
        self.threads = threads
        name_map = dict(name_map or {})
        self.input_names, self.output_names = list(input_names), list(output_names)
        graph_inputs = self.interp.input_names
        self._in = {}
        missing = []
        for n in self.input_names:
            g = name_map.get(n, n)
            if g in graph_inputs:
                self._in[n] = g
            else:
                missing.append(n)
        if missing:
            raise MobileSDError(f"{path}: graph has no inputs {missing} (it has {graph_inputs})",
                                "the bundle does not match its manifest; re-export it (or pass name_map)")
        graph_outputs = self.interp.output_names
        wanted = [name_map.get(n, n) for n in self.output_names]
        if all(w in graph_outputs for w in wanted):
            self._out = wanted
        elif len(wanted) == len(graph_outputs):
            # a name the program lacks (e.g. a chunk's "hidden" saved as "hidden_out", Core ML names being
            # unique) takes the function's output at the same position
            self._out = [w if w in graph_outputs else graph_outputs[i] for i, w in enumerate(wanted)]
        else:
            raise MobileSDError(f"{path}: graph outputs {graph_outputs} do not match the manifest's "
                                f"{self.output_names}", "the bundle does not match its manifest; re-export it")

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        feed = {self._in[n]: inputs[n] for n in self.input_names}
        with torch_threads(self.threads):
            out = self.interp.run(feed)
        return [out[n] for n in self._out]
