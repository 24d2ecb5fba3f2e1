"""What makes a converted graph acceptable: host numerics, GPU-delegate coverage and GPU numerics, size.

Every check either passes or fails the export with the reason; none passes by being skipped. A GPU run that
fails after a successful compile is a failure (unless --allow-cpu-fallback, recorded as such), not a note.
"""

from __future__ import annotations

from mobilesd import verify
from mobilesd.errors import MobileSDError
from mobilesd.export.tasks import Job, load_io


def gpu_check(job: Job, info: dict) -> dict:
    """The manifest's ``graphs[].gpu`` for a .tflite graph: compile on the LiteRT GPU accelerator only and,
    for graphs small enough for software Vulkan, run it and compare with PyTorch."""
    from mobilesd.gpu_check import check_gpu

    opts = job.opts
    if opts.skip_gpu_check:
        return {"skipped": True, "reason": "--skip-gpu-check"}
    run_on_gpu = info["meta"]["weight_bytes_fp32"] <= opts.gpu_run_max_mb * 2**20
    inputs, ref = load_io(job, info["name"])
    res = check_gpu(job.root / info["file"], inputs if run_on_gpu else None)
    if not res.available:
        raise MobileSDError(
            f"the GPU-delegate check could not create a GPU accelerator ({res.error})",
            "install Vulkan drivers (bash scripts/setup.sh installs mesa-vulkan-drivers from bookworm-backports), "
            "or pass --skip-gpu-check to export without it (recorded in the manifest)")
    out = res.to_dict()
    out["delegate"] = "LiteRT GPU (WebGPU) accelerator, no CPU fallback"
    threshold = verify.gpu_bound(info["precision"], info["verification"].get("simulated_quantization_rel_l2"))
    out.update(output_rel_l2=None, output_threshold=threshold)
    if not run_on_gpu:
        out["not_run"] = (f"compiled only: weights over {opts.gpu_run_max_mb:.0f} MiB are too slow to run on "
                          "software Vulkan (--gpu-run-max-mb)")
    elif res.ran:
        names = [o["name"] for o in info["outputs"]]
        if len(res.outputs) != len(names):
            out["run_error"] = f"the GPU run returned {len(res.outputs)} outputs, the graph has {len(names)}"
        else:
            try:
                cmp = verify.compare_outputs(dict(zip(names, res.outputs)), ref, where=f"{info['name']} on the GPU")
                out["output_rel_l2"] = cmp["rel_l2"]
            except verify.VerificationError as exc:   # NaN / infinity out of the GPU: a failed check, recorded
                out["numerics_error"] = exc.problem
    out["passed"] = bool(res.fully_accelerated and not out.get("run_error") and (not run_on_gpu or (
        res.ran and out["output_rel_l2"] is not None and out["output_rel_l2"] <= threshold)))
    return out


def litert_js_check(job: Job, graphs: list[dict]) -> None:
    """web: every graph loaded and run by LiteRT.js in headless Chromium (one browser session for all), on
    WebGPU in fp32 and fp16 precision; records ``graphs[].litert_js`` and fails the export when a graph does not
    run on WebGPU (unless --allow-cpu-fallback accepts the WASM path) or misses its bound."""
    from mobilesd.litert_js import GraphToCheck, check_graphs, failures

    opts = job.opts
    if opts.skip_gpu_check:
        for g in graphs:
            g["litert_js"] = {"accelerator": "none", "passed": False, "error": "skipped: --skip-gpu-check"}
        return
    todo = []
    for g in graphs:
        inputs, refs = load_io(job, g["name"])
        todo.append(GraphToCheck(g["name"], job.root / g["file"], inputs, refs, [o["name"] for o in g["outputs"]],
                                 run=g["meta"]["weight_bytes_fp32"] <= opts.gpu_run_max_mb * 2**20))
    results = check_graphs(todo, allow_wasm=opts.allow_cpu_fallback, precision=job.plan.precision)
    for g in graphs:
        g["litert_js"] = results[g["name"]]
    fails = failures(results)
    if fails:
        raise MobileSDError("LiteRT.js check failed:\n    " + "\n    ".join(fails),
                            "pass --allow-cpu-fallback to accept graphs LiteRT.js runs only on WASM; for accuracy, "
                            "use a higher --precision")


def graph_failures(info: dict, plan) -> list[str]:
    """Why graph ``info`` fails the export (empty: it passes)."""
    opts = plan.opts
    fails = []
    v = info["verification"]
    if not v["passed"]:
        fails.append(f"{info['name']}: rel. L2 error {v['rel_l2']:.3g} > {v['threshold']:.3g} (host runtime vs PyTorch)")
    if plan.unet_max_mb and info["role"] == "unet" and info["size_bytes"] > plan.unet_max_mb * 2**20:
        fails.append(f"{info['name']}: the file is {info['size_bytes'] / 2**20:.1f} MiB, over --unet-max-mb "
                     f"{plan.unet_max_mb:g}")
    gpu = info.get("gpu")
    if not gpu or gpu.get("skipped"):
        return fails
    if opts.simulate_activations and info["role"] == "unet":
        # a simulate-activations UNet is the CPU numerics reference of the quantized model, not the graph a
        # phone's GPU runs (that one is weight-only); its GPU result is recorded but does not gate the export
        gpu["informative_only"] = "simulate-activations graph: CPU numerics reference of the quantized model"
        return fails
    if gpu["passed"] or opts.allow_cpu_fallback:
        return fails
    if not gpu["fully_accelerated"]:
        fails.append(f"{info['name']}: not fully GPU-accelerated "
                     f"(ops left to the CPU: {gpu['unsupported_ops'] or gpu['error']})")
    elif gpu.get("run_error"):
        fails.append(f"{info['name']}: compiled for the GPU, but the GPU run failed: {gpu['run_error']}")
    elif gpu.get("numerics_error"):
        fails.append(f"{info['name']}: {gpu['numerics_error']}")
    else:
        fails.append(f"{info['name']}: GPU output error {gpu['output_rel_l2']:.3g} > {gpu['output_threshold']:.3g}")
    return fails


def graph_line(info: dict) -> str:
    gpu = info.get("gpu")
    gpu_s = ""
    if gpu and not gpu.get("skipped"):
        gpu_s = ", GPU: " + ("fully accelerated" if gpu["fully_accelerated"] else f"CPU ops {gpu['unsupported_ops']}")
        if gpu.get("output_rel_l2") is not None:
            gpu_s += f" (rel. L2 {gpu['output_rel_l2']:.2e})"
        elif gpu.get("run_error"):
            gpu_s += " (run FAILED)"
    return (f"{info['name']}: {info['size_bytes'] / 2**20:.1f} MiB, converted in {info['meta']['convert_seconds']:.1f}s, "
            f"rel. L2 {info['verification']['rel_l2']:.2e}{gpu_s}")


def end_to_end(got, ref, plan, settings: dict, runtime: str) -> dict:
    metrics = verify.image_metrics(got, ref)
    threshold = verify.IMAGE_THRESHOLDS[plan.threshold_key()]
    return dict(metrics, threshold=threshold, passed=metrics["mean_abs"] <= threshold, settings=settings,
                runtime=runtime)
