"""Verification that export runs on every graph: host-runtime numerics vs PyTorch, GPU coverage, and an
end-to-end image comparison. Results go into the manifest; export fails above the thresholds.

The bounds are set at a stated margin over what was measured on the trained tiny model and the SD1.5
architecture with random weights, per precision (docs/verification.md, which also shows that each bound
catches a corrupted graph: tests/test_verification_controls.py).
"""

from __future__ import annotations

import numpy as np

from mobilesd.errors import MobileSDError

# Relative L2 error of each graph's outputs vs the PyTorch module (host runtime), by weight precision.
# palN: N-bit palettized weights (Core ML, one k-means lookup table per tensor).
GRAPH_THRESHOLDS = {"fp32": 1e-3, "fp16": 2e-2, "int8": 8e-2, "int4": 3e-1, "pal8": 5e-2, "pal6": 1.2e-1,
                    "pal4": 3e-1}
# Mean absolute error of the final image (values in [0, 1]) vs the PyTorch pipeline, same seed/scheduler.
IMAGE_THRESHOLDS = {"fp32": 5e-3, "fp16": 3e-2, "int8": 8e-2, "int4": 2e-1, "pal8": 5e-2, "pal6": 1e-1,
                    "pal4": 2e-1}
# Relative L2 error of a graph run on the LiteRT GPU (WebGPU) accelerator vs PyTorch: it computes in fp16.
GPU_THRESHOLDS = {"fp32": 5e-2, "fp16": 5e-2, "int8": 1e-1, "int4": 3e-1}


class VerificationError(MobileSDError):
    """A graph's outputs do not match its PyTorch module's (missing, extra, or misshapen outputs)."""


def rel_l2(a, b) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    denom = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / denom) if denom > 0 else float(np.linalg.norm(a - b))


def compare_outputs(got: dict, ref: dict, where: str = "graph") -> dict:
    """Errors per output, matched by name: a missing, extra or misshapen output is an error, never skipped."""
    missing, extra = sorted(set(ref) - set(got)), sorted(set(got) - set(ref))
    if missing or extra:
        raise VerificationError(f"{where}: outputs do not match the PyTorch module's: "
                                + "; ".join(s for s in (f"missing {missing}" if missing else "",
                                                        f"unexpected {extra}" if extra else "") if s),
                                "re-export the bundle; if it persists, report it")
    errs, max_abs = {}, 0.0
    for name in ref:
        g, r = np.asarray(got[name]), np.asarray(ref[name])
        if g.shape != r.shape:
            raise VerificationError(f"{where}: output {name} has shape {list(g.shape)}, PyTorch's {list(r.shape)}",
                                    "re-export the bundle; if it persists, report it")
        d = np.abs(g.astype(np.float64) - r.astype(np.float64))
        if not np.all(np.isfinite(d)):
            errs[name] = float("inf")
        else:
            errs[name] = rel_l2(g, r)
            max_abs = max(max_abs, float(d.max()) if d.size else 0.0)
    worst = max(errs.values())
    if not np.isfinite(worst):   # strict JSON: a non-finite output is a failure, recorded with a finite stand-in
        bad = sorted(k for k, v in errs.items() if not np.isfinite(v))
        raise VerificationError(f"{where}: output(s) {bad} hold NaN or infinity",
                                "re-export with a higher --precision; report it if it persists")
    return {"rel_l2": worst, "rel_l2_per_output": errs, "max_abs": max_abs}


def image_metrics(img: np.ndarray, ref: np.ndarray) -> dict:
    """Images as float [0, 1] arrays. ``psnr_db`` is None for identical images (infinite: not JSON)."""
    diff = np.asarray(img, np.float64) - np.asarray(ref, np.float64)
    mse = float(np.mean(diff ** 2))
    return {"mean_abs": float(np.mean(np.abs(diff))), "max_abs": float(np.max(np.abs(diff))),
            "rel_l2": rel_l2(img, ref), "psnr_db": float(10 * np.log10(1.0 / mse)) if mse > 0 else None}
