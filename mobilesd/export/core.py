"""`mobilesd export`: model -> components -> passes -> convert -> verify -> bundle, in one call.

Verification is not optional: every graph runs on this machine against its PyTorch module, TFLite graphs
are compiled (and where small enough run) on the LiteRT GPU accelerator, and a short generation compares the
bundle's image with the PyTorch pipeline's. Results go into the manifest; any failure aborts the export and
leaves no bundle (and the previous one where it was).

Memory: converting a graph costs litert-torch several times the graph's weights. For SD-scale models every
heavy step runs in its own worker process (mobilesd.export.runner) that loads only the part of the
model it needs; small models run the same task functions in-process.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import numpy as np

from mobilesd.bundle import Bundle, atomic_folder, check_output_dir, finalize_manifest
from mobilesd.errors import MobileSDError
from mobilesd.export import checks, manifest as manifest_mod, tasks
from mobilesd.export.options import ISOLATE_ABOVE_BYTES, TFLITE_TARGETS, ExportOptions, make_plan
from mobilesd.export.quantized import apply_quantized, write_quantization
from mobilesd.export.runner import DISK_FULL, TaskRunner, disk_full_error

logger = logging.getLogger("mobilesd.export")


def export(model=None, out: str | Path = "bundle", options: ExportOptions | None = None, *,
           pipe=None, allow_pickle: bool = False, prediction_type: str | None = None,
           config: str | Path | None = None, image_size: int | None = None) -> Bundle:
    """Export ``model`` (a diffusers folder, single-file checkpoint or hub id; default: the bundled digits
    model) or an in-memory diffusers ``pipe`` into the bundle folder ``out``. ``prediction_type``,
    ``config`` and ``image_size`` describe a single-file checkpoint (mobilesd.loading.load_pipeline)."""
    from mobilesd.loading import default_model_path

    plan = make_plan(options or ExportOptions())
    opts = plan.opts
    out = Path(out)
    check_output_dir(out, opts.overwrite)  # fail before the slow part
    if model is not None:
        source = str(model)
    elif pipe is not None:
        source = "<in-memory pipeline>"  # nothing to reload: --runtime torch then needs --model
    else:
        source = str(default_model_path())
    isolate = opts.isolate if opts.isolate is not None else (
        pipe is None and Path(source).exists() and tasks.model_bytes(source) > ISOLATE_ABOVE_BYTES)
    if isolate and pipe is not None:
        raise MobileSDError("an in-memory pipeline cannot be exported through worker processes",
                            "pass the model's folder instead, or isolate=False")
    load = dict(allow_pickle=allow_pickle, prediction_type=prediction_type, config=str(config) if config else None)
    if image_size is not None:
        load["image_size"] = image_size
    if pipe is not None:   # a loaded model skips load_pipeline's checks: run them here, before any conversion
        from mobilesd.components import check_supported

        check_supported(pipe)
    try:
        manifest = _export_into(out, plan, source, load, isolate, pipe)
    except OSError as exc:
        if exc.errno in DISK_FULL:
            raise disk_full_error(exc, str(out)) from exc
        raise
    logger.info("bundle %s written to %s in %.0fs", manifest["bundle_id"], out, manifest["export_seconds"])
    return Bundle(out, manifest)


def _export_into(out: Path, plan, source: str, load: dict, isolate: bool, pipe) -> dict:
    from mobilesd.pipeline import FORMAT_RUNTIME

    opts = plan.opts
    t_start = time.perf_counter()
    with atomic_folder(out, opts.overwrite) as tmp:
        work = tmp / ".work"
        work.mkdir()
        job = tasks.Job(source, load, plan, tmp, work)
        loaded = None
        if pipe is not None:
            if plan.loras:   # the caller's pipeline itself takes the LoRAs, as a loaded model would
                from mobilesd.lora import fuse_loras

                fuse_loras(pipe, plan.loras, opts.allow_pickle)
            loaded = tasks.Loaded(pipe, apply_quantized(pipe, opts) if opts.quantized else None)
        elif not isolate:
            logger.info("loading %s%s", source, f" with quantized model {opts.quantized}" if opts.quantized else "")
            loaded = tasks.load(job)
        run = TaskRunner(isolate, loaded, timeout_s=opts.worker_timeout_s)
        logger.info("inspecting %s%s", source, " (SD-scale: one worker process per step)" if isolate else "")
        base = run(tasks.task_inspect, job=job)
        chunks = [tuple(c) for c in base["chunks"]]
        manifest = manifest_mod.base_manifest(plan, source, base["facts"], chunks)
        if plan.quant_config is not None:
            manifest["quantization"] = write_quantization(tmp, opts, plan.quant_config)
        graphs = _convert_all(run, job, chunks, manifest)
        if opts.target == "web":
            checks.litert_js_check(job, graphs)
        manifest["graphs"] = graphs
        settings = tasks.verify_settings(plan)
        logger.info("end-to-end check: %d %s steps, PyTorch vs the bundle", opts.verify_steps, plan.verify_scheduler)
        ref = run(tasks.task_reference_image, job=job, chunks=chunks)["path"]
        got = run(tasks.task_graph_image, job=job, manifest=manifest)["path"]
        e2e = checks.end_to_end(np.load(got), np.load(ref), plan, settings,
                                FORMAT_RUNTIME.get(graphs[0]["format"], graphs[0]["format"]))
        if not e2e["passed"]:
            raise MobileSDError(
                f"end-to-end verification failed: the bundle's image differs from PyTorch's by a mean of "
                f"{e2e['mean_abs']:.3g} (threshold {e2e['threshold']:.3g})", "use a higher --precision")
        peaks = None
        if isolate:
            peaks = dict(run.peaks)
            peaks.update({f"gpu_check[{g['name']}]": g["gpu"].get("peak_rss_bytes") or 0
                          for g in graphs if "gpu" in g and not g["gpu"].get("skipped")})
        steps = dict(run.seconds)
        steps.update({f"gpu_check[{g['name']}]": g["gpu"]["seconds"] for g in graphs
                      if g.get("gpu", {}).get("seconds") is not None})
        manifest_mod.add_results(manifest, graphs, e2e, time.perf_counter() - t_start, isolate, peaks, steps)
        shutil.rmtree(work)
        return finalize_manifest(tmp, manifest)


def _convert_all(run: TaskRunner, job: tasks.Job, chunks: list, manifest: dict) -> list[dict]:
    """Convert and check every graph in call order; stop at the first failure (the folder is discarded)."""
    from tqdm.auto import tqdm

    opts, plan = job.opts, job.plan
    names = ["text_encoder"] + manifest["unet"]["chunks"] + ["vae_decoder"]
    graphs = []
    bar = tqdm(names, desc=f"export {opts.target}/{plan.precision}", unit="graph", disable=not opts.progress)
    try:
        for index, name in enumerate(bar):
            bar.set_postfix_str(name)
            info = run(tasks.task_convert, job=job, index=index, chunks=chunks)
            if opts.target in TFLITE_TARGETS:
                info["gpu"] = checks.gpu_check(job, info)
            graphs.append(info)
            failures = checks.graph_failures(info, plan)
            logger.info(checks.graph_line(info))
            if failures:
                raise MobileSDError("export verification failed:\n    " + "\n    ".join(failures),
                                    "for GPU coverage, pass --allow-cpu-fallback to accept CPU ops; for accuracy, "
                                    "use a higher --precision; details above")
    finally:
        bar.close()
    return graphs
