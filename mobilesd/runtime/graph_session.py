"""The interface of a host runtime session: what ``open_graph`` returns, whatever the graph format.

On its own module so that the runtimes implementing it (mobilesd.runtime.mil among them) do not import
``graphs.py``, which imports them: the dependency runs one way, graphs -> runtimes -> this module.
"""

from __future__ import annotations

import numpy as np

from mobilesd.errors import MobileSDError


class GraphSession:
    """Runs one graph; inputs and outputs go by the names the manifest lists."""

    input_names: list[str]
    output_names: list[str]

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def run_named(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by the manifest's names. The file's outputs map to them by position (TFLite names its
        outputs output_0, output_1, ...), so a count that differs is an error, never a silent truncation."""
        out = self.run(inputs)
        if len(out) != len(self.output_names):
            raise MobileSDError(f"{getattr(self, 'path', 'graph')}: the graph returns {len(out)} outputs, the "
                                f"manifest lists {len(self.output_names)} ({self.output_names})",
                                "the bundle does not match its manifest; re-export it")
        return dict(zip(self.output_names, out))
