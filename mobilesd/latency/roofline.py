"""Roofline latency estimate of a Stable Diffusion bundle on a phone, calibrated on published figures.

Per op: t = max(FLOPs / peak_fp16, bytes / bandwidth) / efficiency. A stage is the sum over its ops
times how often it runs (CFG, steps). ``efficiency`` is one number per accelerator class (gpu, ane),
fitted as the geometric mean of ideal/measured over the published figures in published.json, so the
estimate of each figure is off by exactly the spread of that ratio; ``calibrate()`` reports that error
per figure, both in-sample and leave-one-out (the honest one).
"""

from __future__ import annotations

import json
import math
import platform
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from mobilesd.errors import MobileSDError
from mobilesd.latency.costs import GraphCost, analytic_graph_cost, classify_graph, tflite_graph_cost
from mobilesd.latency.schema import SCHEMA_VERSION, TARGET_SECONDS, now_iso, sha256_file

HERE = Path(__file__).parent
DEVICES_PATH = HERE / "devices.json"
PUBLISHED_PATH = HERE / "published.json"


@lru_cache(maxsize=1)
def load_devices() -> dict[str, dict]:
    return json.loads(DEVICES_PATH.read_text())["devices"]


@lru_cache(maxsize=1)
def load_published() -> list[dict]:
    return json.loads(PUBLISHED_PATH.read_text())["figures"]


def find_device(name: str) -> tuple[str, dict]:
    """Device entry by key or alias (case-insensitive)."""
    devices = load_devices()
    want = name.strip().lower().replace(" ", "-").replace("_", "-")
    for key, dev in devices.items():
        if want == key or want in [a.lower() for a in dev.get("aliases", [])]:
            return key, dev
    phones = [k for k, d in devices.items() if not d.get("calibration_only")]
    raise MobileSDError(f"unknown device '{name}'",
                        f"use one of: {', '.join(phones)} (or see `mobilesd estimate --list-devices`)")


# ------------------------------------------------------------------------------------------ the plan

@dataclass
class StagePlan:
    """What one generation runs: per stage, its graph(s) and how often per run (or per step)."""
    stage: str              # text_encoder | unet_step | unet_chunk_<i> | vae_decoder
    graph: GraphCost
    calls: int              # graph calls per stage occurrence (e.g. 2 for sequential CFG)
    per_step: bool = False  # occurs once per denoising step


DECODERS = ("full", "tiny")
# Steps `mobilesd estimate --bundle` assumes when --steps is not given, by the manifest's scheduler.default
# (the manifest records no step count): LCM-distilled models sample in 4 steps, the others in 20.
DEFAULT_STEPS = {"lcm": 4}
DEFAULT_STEPS_OTHER = 20


def analytic_plan(arch: str = "sd15", width: int = 512, height: int = 512, cfg: str = "batch",
                  weight_bytes: float = 2, act_bytes: float = 2, decoder: str = "full") -> list[StagePlan]:
    """Plan for a full-size architecture computed on the meta device (no exported graph needed).

    ``decoder``: ``full`` (the architecture's AutoencoderKL decoder) or ``tiny`` (a TAESD AutoencoderTiny
    decoder in its place, as ``export --vae-decoder tiny=PATH`` builds)."""
    if cfg not in ("batch", "sequential", "none"):
        raise MobileSDError(f"unknown CFG mode '{cfg}'", "use batch, sequential or none")
    if decoder not in DECODERS:
        raise MobileSDError(f"unknown decoder '{decoder}'", "use full or tiny")
    batch, calls = (2, 1) if cfg == "batch" else (1, 2 if cfg == "sequential" else 1)
    text = analytic_graph_cost(arch, "text_encoder", height, width, batch, act_bytes, weight_bytes)
    unet = analytic_graph_cost(arch, "unet", height, width, batch, act_bytes, weight_bytes)
    vae = analytic_graph_cost(arch, "vae_decoder" if decoder == "full" else "tiny_vae_decoder", height, width, 1,
                              act_bytes, weight_bytes)
    return [StagePlan("text_encoder", text, calls), StagePlan("unet_step", unet, calls, per_step=True),
            StagePlan("vae_decoder", vae, 1)]


def _manifest_graph_files(bundle: Path, manifest: dict) -> list[tuple[str, Path]]:
    """(name-or-role, path) of every graph entry the manifest lists, wherever it lists them."""
    found: list[tuple[str, Path]] = []

    def walk(node):
        if isinstance(node, dict):
            f = node.get("file") or node.get("path")
            if isinstance(f, str) and f.endswith((".tflite", ".onnx")):
                label = " ".join(str(node.get(k, "")) for k in ("name", "role")) or f
                found.append((label, bundle / f))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(manifest)
    return found


def read_manifest(bundle: str | Path) -> dict:
    bundle = Path(bundle)
    manifest_path = bundle / "manifest.json"
    if not manifest_path.is_file():
        raise MobileSDError(f"{bundle} has no manifest.json", "pass a bundle folder written by `mobilesd export`")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise MobileSDError(f"{manifest_path} is not valid JSON: {exc}", "re-export the bundle") from exc
    if not isinstance(manifest, dict):
        raise MobileSDError(f"{manifest_path} is not a JSON object", "re-export the bundle")
    return manifest


def bundle_settings(manifest: dict) -> dict:
    """What a bundle's manifest says about how it runs, for the estimate: ``steps`` (from
    ``scheduler.default``: the manifest records no step count), ``cfg`` (``cfg.mode``), ``decoder`` (the
    ``vae_decoder`` graph's ``meta.decoder``), ``precision``, ``scheduler``. Each value is paired with where it
    came from: {"steps": (4, "manifest scheduler.default lcm"), ...}; a key the manifest lacks is absent."""
    out: dict[str, tuple] = {}
    sched = (manifest.get("scheduler") or {}).get("default") if isinstance(manifest.get("scheduler"), dict) else None
    if isinstance(sched, str):
        out["scheduler"] = (sched, "manifest scheduler.default")
        out["steps"] = (DEFAULT_STEPS.get(sched, DEFAULT_STEPS_OTHER),
                        f"default for the manifest's scheduler.default '{sched}'")
    mode = (manifest.get("cfg") or {}).get("mode") if isinstance(manifest.get("cfg"), dict) else None
    if mode in ("batch", "sequential", "none"):
        out["cfg"] = (mode, "manifest cfg.mode")
    for g in manifest.get("graphs") or []:
        if isinstance(g, dict) and (g.get("role") == "vae_decoder" or g.get("name") == "vae_decoder"):
            dec = (g.get("meta") or {}).get("decoder")
            if dec in DECODERS:
                out["decoder"] = (dec, "manifest graphs[vae_decoder].meta.decoder")
            elif isinstance((manifest.get("source") or {}).get("vae_decoder"), dict):
                out["decoder"] = (manifest["source"]["vae_decoder"].get("kind", "tiny"), "manifest source.vae_decoder")
            else:  # bundles written before meta.decoder existed hold the model's own decoder
                out["decoder"] = ("full", "manifest (no meta.decoder: the model's own decoder)")
            break
    if isinstance(manifest.get("precision"), str):
        out["precision"] = (manifest["precision"], "manifest precision")
    return out


def bundle_plan(bundle: str | Path, cfg: str = "batch", act_bytes: float = 2,
                weight_bytes: float = 2) -> tuple[list[StagePlan], dict]:
    """Plan from a bundle's exported .tflite graphs. Returns (plan, bundle info for the report)."""
    bundle = Path(bundle)
    manifest_path = bundle / "manifest.json"
    manifest = read_manifest(bundle)
    entries = _manifest_graph_files(bundle, manifest)
    if not entries:  # a manifest without graph entries: fall back to the files themselves
        entries = [(p.stem, p) for p in sorted(bundle.rglob("*.tflite"))]
    tflite = [(label, p) for label, p in entries if p.suffix == ".tflite"]
    if not tflite:
        raise MobileSDError(f"{bundle} has no .tflite graphs",
                            "the estimator reads TFLite graphs: estimate an android bundle, or use --model sd15")
    stages: dict[str, Path] = {}
    for label, path in tflite:
        if not path.is_file():
            raise MobileSDError(f"the manifest lists {path.name} but it is missing", "re-export the bundle")
        stage = classify_graph(Path(label.replace(" ", "_"))) or classify_graph(path)
        if stage:
            stages.setdefault(stage, path)
    unet_keys = sorted((k for k in stages if k.startswith("unet")), key=lambda k: (k != "unet", k))
    if not unet_keys:
        raise MobileSDError(f"no UNet graph found in {bundle}", "a bundle needs unet.tflite or unet_chunk<i>.tflite")
    plan: list[StagePlan] = []
    chunks = [k for k in unet_keys if k.startswith("unet_chunk_")]
    chunks = sorted(chunks, key=lambda k: int(k.rsplit("_", 1)[1])) if chunks else ["unet"]
    for key in ["text_encoder"] + chunks + ["vae_decoder"]:
        if key not in stages:
            continue
        g = tflite_graph_cost(stages[key], act_bytes, weight_bytes)
        batch = g.batch or 1
        if key == "vae_decoder":
            calls = 1
        elif cfg == "none":
            calls = 1
        else:  # a batch-1 graph runs twice per CFG step (or prompt + negative prompt)
            calls = 1 if batch >= 2 else 2
        plan.append(StagePlan("unet_step" if key == "unet" else key, g, calls, per_step=key.startswith("unet")))
    info = {"id": str(manifest.get("bundle_id") or bundle.name), "manifest_sha256": sha256_file(manifest_path)}
    if manifest.get("model") or manifest.get("architecture"):
        info["model"] = str(manifest.get("model") or manifest.get("architecture"))
    return plan, info


def replace_decoder(plan: list[StagePlan], manifest: dict, decoder: str, width: int, height: int) -> list[StagePlan]:
    """``plan`` with its vae_decoder stage costed analytically as ``decoder`` instead of from the bundle's graph
    (`mobilesd estimate --bundle B --decoder tiny` on a bundle exported with the full decoder: what would
    the TAESD decoder cost here). Only the SD-family TAESD (latent 4 channels, 8x upsampling) is known
    without a graph; the full decoder needs its graph."""
    if decoder != "tiny":
        raise MobileSDError("this bundle holds a tiny decoder: the full decoder's cost needs its graph",
                            "estimate a bundle exported without --vae-decoder tiny, or use --model sd15 --decoder full")
    latent = manifest.get("latent") or {}
    if int(latent.get("channels", 4)) != 4 or int(latent.get("vae_scale_factor", 8)) != 8:
        raise MobileSDError(f"no analytic tiny decoder for a latent of {latent.get('channels')} channels at "
                            f"{latent.get('vae_scale_factor')}x (the default TAESD is 4 channels, 8x)",
                            "export the bundle with --vae-decoder tiny=PATH and estimate that bundle")
    g = analytic_graph_cost("sd15", "tiny_vae_decoder", height, width, 1)
    return [StagePlan("vae_decoder", g, 1) if p.stage == "vae_decoder" else p for p in plan]


# ------------------------------------------------------------------------------------------ roofline

FUSION_MODES = ("none", "elementwise", "attention")
DEFAULT_FUSION = "attention"


def op_bytes(o, fusion: str) -> float:
    """DRAM traffic of one op under a fusion assumption.

    none: every op reads and writes DRAM. elementwise: element-wise ops, norms, softmax and copies run
    fused into their neighbours (traffic 0, compute kept). attention: additionally the attention score
    matrix never leaves the chip (fused / flash attention).
    """
    if fusion == "none":
        return o.bytes
    if o.category != "matmul":
        return 0.0
    return o.bytes - o.score_bytes if fusion == "attention" else o.bytes


def ideal_seconds(graph: GraphCost, peak_flops: float, bandwidth: float, fusion: str = DEFAULT_FUSION) -> float:
    """Roofline time at 100% efficiency: each op is bound by compute or by memory traffic."""
    return sum(max(o.flops / peak_flops, op_bytes(o, fusion) / bandwidth) for o in graph.ops)


def stage_seconds(plan: list[StagePlan], device: dict, efficiency: float, steps: int,
                  fusion: str = DEFAULT_FUSION) -> dict[str, float]:
    """Seconds per stage occurrence (unet_step = one step) and end_to_end, at ``efficiency``."""
    peak, bw = float(device["peak_fp16_flops"]), float(device["bandwidth_bytes_s"])
    out: dict[str, float] = {}
    for p in plan:
        out[p.stage] = out.get(p.stage, 0.0) + p.calls * ideal_seconds(p.graph, peak, bw, fusion) / efficiency
    chunks = [k for k in out if k.startswith("unet_chunk_")]
    if chunks:
        out["unet_step"] = sum(out[k] for k in chunks)
    out["end_to_end"] = out.get("text_encoder", 0.0) + steps * out["unet_step"] + out.get("vae_decoder", 0.0)
    return out


def bound_split(plan: list[StagePlan], device: dict, fusion: str = DEFAULT_FUSION) -> dict[str, float]:
    """Fraction of ideal time spent in memory-bound ops, per stage."""
    peak, bw = float(device["peak_fp16_flops"]), float(device["bandwidth_bytes_s"])
    out = {}
    for p in plan:
        mem = sum(op_bytes(o, fusion) / bw for o in p.graph.ops if op_bytes(o, fusion) / bw > o.flops / peak)
        tot = ideal_seconds(p.graph, peak, bw, fusion)
        out[p.stage] = mem / tot if tot else 0.0
    return out


# ------------------------------------------------------------------------------------------ calibration

def _figure_ideal(fig: dict, fusion: str) -> float:
    dev = load_devices()[fig["device"]]
    plan = analytic_plan(fig["arch"], fig["width"], fig["height"], fig["cfg"], weight_bytes=fig["weight_bits"] / 8)
    sec = stage_seconds(plan, dev, 1.0, fig["steps"], fusion)
    return sec[fig["stage"]]


def _geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


@lru_cache(maxsize=4)
def calibrate(fusion: str = DEFAULT_FUSION) -> dict:
    """Fit one efficiency per accelerator class; report every published figure's error."""
    figures = []
    for fig in load_published():
        row = {k: fig.get(k) for k in ("id", "used", "device", "arch", "steps", "cfg", "weight_bits", "stage",
                                        "seconds", "source", "caveats", "why_not_used")}
        if fig.get("device") and fig.get("arch") and fig.get("steps"):
            row["accelerator"] = load_devices()[fig["device"]]["accelerator"]
            row["ideal_s"] = _figure_ideal(fig, fusion)
        figures.append(row)
    classes: dict[str, dict] = {}
    for acc in sorted({f["accelerator"] for f in figures if f.get("used") and "ideal_s" in f}):
        used = [f for f in figures if f.get("used") and f.get("accelerator") == acc and "ideal_s" in f]
        eff = _geomean([f["ideal_s"] / f["seconds"] for f in used])
        classes[acc] = {"efficiency": eff, "figures": [f["id"] for f in used]}
        for f in used:
            others = [g for g in used if g is not f]
            f["loo_efficiency"] = _geomean([g["ideal_s"] / g["seconds"] for g in others]) if others else None
    for f in figures:
        if "ideal_s" not in f or f["accelerator"] not in classes:
            continue
        eff = classes[f["accelerator"]]["efficiency"]
        f["efficiency_fit"] = f["ideal_s"] / f["seconds"]
        f["estimated_s"] = f["ideal_s"] / eff
        f["error"] = f["estimated_s"] / f["seconds"] - 1
        if f.get("loo_efficiency"):
            f["loo_estimated_s"] = f["ideal_s"] / f["loo_efficiency"]
            f["loo_error"] = f["loo_estimated_s"] / f["seconds"] - 1
    for acc, c in classes.items():
        errs = [abs(f["error"]) for f in figures if f.get("used") and f.get("accelerator") == acc]
        loo = [abs(f["loo_error"]) for f in figures if f.get("used") and f.get("accelerator") == acc and "loo_error" in f]
        c["mean_abs_error"] = sum(errs) / len(errs)
        c["mean_abs_loo_error"] = sum(loo) / len(loo) if loo else None
    return {"fusion": fusion, "classes": classes, "figures": figures}


def efficiency_for(device: dict, fusion: str = DEFAULT_FUSION) -> float:
    classes = calibrate(fusion)["classes"]
    acc = device["accelerator"]
    if acc not in classes:
        raise MobileSDError(f"no published figure calibrates the '{acc}' accelerator class",
                            "pass --efficiency E (0 < E <= 1) to set it by hand")
    return classes[acc]["efficiency"]


# ------------------------------------------------------------------------------------------ report

def _device_os(device: dict) -> str:
    """The OS family of a devices.json entry (the table has phones, plus Macs and iPads for calibration)."""
    name = device["name"]
    if "Galaxy" in name or "Pixel" in name:
        return "Android"
    if "iPad" in name:
        return "iPadOS"
    if "Mac" in name:
        return "macOS"
    return "iOS"


def estimate_report(plan: list[StagePlan], device_key: str, steps: int, cfg: str, width: int, height: int,
                    bundle_info: dict, source: str, efficiency: float | None = None,
                    guidance: float = 7.5, extra_assumptions: list[str] | None = None,
                    fusion: str = DEFAULT_FUSION, precision: str = "fp16", decoder: str | None = None,
                    scheduler: str | None = None, label: str | None = None) -> dict:
    """A latency report (kind 'estimate') in the schema. ``decoder`` (full | tiny), when known, is recorded in
    ``estimate.stage_costs.vae_decoder.decoder`` and the assumptions; ``precision`` in ``runtime.precision``."""
    from mobilesd import __version__

    device = load_devices()[device_key]
    if fusion not in FUSION_MODES:
        raise MobileSDError(f"unknown fusion mode '{fusion}'", f"use one of {', '.join(FUSION_MODES)}")
    eff = efficiency if efficiency is not None else efficiency_for(device, fusion)
    if not 0 < eff <= 1:
        raise MobileSDError(f"efficiency {eff} is out of range", "use 0 < efficiency <= 1")
    sec = stage_seconds(plan, device, eff, steps, fusion)
    mem_frac = bound_split(plan, device, fusion)
    cal = calibrate(fusion)
    acc_class = cal["classes"].get(device["accelerator"], {})
    stages = {}
    for name, s in sec.items():
        st = {"median_s": s}
        if name == "unet_step" or name.startswith("unet_chunk_"):
            st["calls_per_run"] = steps
        stages[name] = st
    stage_costs = {}
    for p in plan:
        moved = sum(op_bytes(o, fusion) for o in p.graph.ops)
        stage_costs[p.stage] = {"flops": p.graph.flops * p.calls, "bytes": moved * p.calls,
                                "bytes_unfused": p.graph.bytes * p.calls,
                                "weight_bytes": p.graph.weight_bytes, "ops": len(p.graph.ops), "calls": p.calls,
                                "graph_batch": p.graph.batch, "source": p.graph.source,
                                "memory_bound_fraction": round(mem_frac[p.stage], 3)}
        if p.stage == "vae_decoder" and decoder:
            stage_costs[p.stage]["decoder"] = decoder
    assumptions = [
        f"roofline per op: max(FLOPs / {device['peak_fp16_flops'] / 1e12:.2f} TFLOP/s, bytes / "
        f"{device['bandwidth_bytes_s'] / 1e9:.1f} GB/s) / efficiency {eff:.3f}",
        f"peak: {device['peak_source']}",
        f"bandwidth: {device['bandwidth_source']}",
        "activations fp16 (2 bytes/element); float weights read as fp16, integer weights at their stored size; "
        "int8 weights feeding DEQUANTIZE are unpacked at load time (no per-step cost)",
        {"none": "no operator fusion: every op reads its inputs from and writes its output to DRAM",
         "elementwise": "element-wise ops, norms, softmax and copies are fused into neighbouring convs/matmuls "
                        "(compute counted, no DRAM traffic)",
         "attention": "element-wise ops, norms, softmax and copies are fused into neighbouring convs/matmuls, "
                      "and attention is fused (its score matrix never reaches DRAM)"}[fusion]
        + f" (fusion mode '{fusion}'); kernel launch overhead is not modelled (the efficiency absorbs it)",
        f"CFG mode '{cfg}': " + {"batch": "one UNet call on batch 2 per step (or two calls of a batch-1 graph)",
                                 "sequential": "two UNet calls per step", "none": "one UNet call per step"}[cfg],
        f"end_to_end = text encoder + {steps} x UNet step + VAE decoder; model load, tokenizer, scheduler "
        "arithmetic and image conversion are not included",
    ]
    if decoder:
        assumptions.append({"full": "decoder: the model's full VAE decoder (AutoencoderKL)",
                            "tiny": "decoder: a TAESD-style tiny decoder (diffusers AutoencoderTiny) in place of the "
                                    "full VAE decoder"}[decoder])
    if efficiency is None and acc_class:
        loo = acc_class.get("mean_abs_loo_error")
        assumptions.append(
            f"efficiency {eff:.3f} for class '{device['accelerator']}' = geometric mean of ideal/measured over "
            f"{len(acc_class['figures'])} published figures (mean |error| {acc_class['mean_abs_error']:.0%} in-sample"
            + (f", {loo:.0%} leave-one-out" if loo is not None else "") + "; see docs/latency-estimate.md)")
    elif efficiency is not None:
        assumptions.append(f"efficiency {eff:.3f} set by hand (--efficiency)")
    assumptions += extra_assumptions or []
    calib_rows = [{k: f[k] for k in ("id", "device", "stage", "seconds", "estimated_s", "error", "loo_error", "used")
                   if k in f} for f in cal["figures"] if "estimated_s" in f]
    report = {
        "schema_version": SCHEMA_VERSION,
        "kind": "estimate",
        "created": now_iso(),
        "label": label or f"{device['name']} / estimate",
        "measured_by": {"kind": "estimator", "tool": f"mobilesd {__version__} estimate ({platform.python_implementation()})"},
        "device": {"name": device["name"], "os": _device_os(device),
                   "soc": device["soc"], "accelerator": device["accelerator"],
                   "accelerator_name": device["accelerator_name"], "device_key": device_key},
        "runtime": {"name": "roofline", "version": f"mobilesd {__version__}", "delegate": None, "precision": precision},
        "bundle": bundle_info,
        "settings": {"width": width, "height": height, "steps": steps, "guidance": guidance if cfg != "none" else 1.0,
                     "cfg_mode": cfg, "batch_size": 1, **({"scheduler": scheduler} if scheduler else {})},
        "protocol": {"warmup": 0, "repeats": 1},
        "stages": stages,
        "steps": [{"index": i, "seconds": sec["unet_step"],
                   **({"chunks_s": [sec[k] for k in sorted((k for k in sec if k.startswith("unet_chunk_")),
                                                             key=lambda k: int(k.rsplit('_', 1)[1]))]}
                      if any(k.startswith("unet_chunk_") for k in sec) else {})} for i in range(steps)],
        "estimate": {"device_key": device_key, "source": source, "efficiency": eff,
                     "peak_flops": float(device["peak_fp16_flops"]),
                     "bandwidth_bytes_s": float(device["bandwidth_bytes_s"]),
                     "assumptions": assumptions, "stage_costs": stage_costs, "calibration": calib_rows},
        "target_s": TARGET_SECONDS,
    }
    return report
