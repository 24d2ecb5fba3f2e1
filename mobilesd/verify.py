"""Verification that export runs on every graph: host-runtime numerics vs PyTorch, GPU coverage, and an
end-to-end image comparison. Results go into the manifest; export fails above the thresholds."""

from __future__ import annotations

import numpy as np

# Relative L2 error of each graph's outputs vs the PyTorch module, by weight precision. fp16/int8 bounds
# come from measurements on SD1.5-sized random-weight and the trained tiny model (docs/verification.md).
# palN: N-bit palettized weights (Core ML, one k-means lookup table per tensor); measured on SD1.5 random
# weights: 6-bit UNet 4.9e-2 (docs/coreml.md).
GRAPH_THRESHOLDS = {"fp32": 1e-3, "fp16": 2e-2, "int8": 8e-2, "int4": 3e-1, "pal8": 5e-2, "pal6": 1.2e-1,
                    "pal4": 3e-1}
# Mean absolute error of the final image (values in [0, 1]) vs the PyTorch pipeline, same seed/scheduler.
IMAGE_THRESHOLDS = {"fp32": 5e-3, "fp16": 3e-2, "int8": 8e-2, "int4": 2e-1, "pal8": 5e-2, "pal6": 1e-1,
                    "pal4": 2e-1}
# The GPU delegate computes in fp16: looser bound for its outputs vs PyTorch.
GPU_THRESHOLD = 5e-2


def rel_l2(a, b) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    denom = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / denom) if denom > 0 else float(np.linalg.norm(a - b))


def compare_outputs(got: list, ref: list) -> dict:
    errs = [rel_l2(g, r) for g, r in zip(got, ref)]
    max_abs = max(float(np.max(np.abs(np.asarray(g, np.float64) - np.asarray(r, np.float64)))) for g, r in zip(got, ref))
    return {"rel_l2": max(errs), "rel_l2_per_output": errs, "max_abs": max_abs}


def image_metrics(img: np.ndarray, ref: np.ndarray) -> dict:
    """Images as float [0, 1] arrays."""
    diff = np.asarray(img, np.float64) - np.asarray(ref, np.float64)
    mse = float(np.mean(diff ** 2))
    return {"mean_abs": float(np.mean(np.abs(diff))), "max_abs": float(np.max(np.abs(diff))),
            "rel_l2": rel_l2(img, ref), "psnr_db": float(10 * np.log10(1.0 / mse)) if mse > 0 else float("inf")}
