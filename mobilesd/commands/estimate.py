"""`mobilesd estimate`: roofline latency estimate of a bundle (or a full-size architecture) on a phone."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mobilesd.errors import MobileSDError

NAME = "estimate"
HELP = "estimate per-stage latency of a bundle on a phone (roofline model)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--bundle", type=Path, help="bundle folder: op costs come from its .tflite graphs")
    src.add_argument("--model", default=None, help="architecture to cost analytically instead (sd15, sd21; default sd15)")
    p.add_argument("--device", action="append", default=None,
                   help="device key or alias from devices.json (repeatable; default galaxy-s23-gpu)")
    p.add_argument("--steps", type=int, default=None,
                   help="denoising steps (default: 20; with --bundle, 4 if the manifest's default scheduler is lcm)")
    p.add_argument("--cfg", choices=["batch", "sequential", "none"], default=None,
                   help="classifier-free guidance: batch (UNet on batch 2), sequential (2 calls), none "
                        "(default: batch; with --bundle, the manifest's cfg.mode)")
    p.add_argument("--decoder", choices=["full", "tiny"], default=None,
                   help="VAE decoder: full (AutoencoderKL) or tiny (TAESD AutoencoderTiny, costed analytically) "
                        "(default: full; with --bundle, the manifest's decoder graph)")
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--resolution", type=int, default=512, help="image side for --model (default 512)")
    p.add_argument("--weight-bits", type=int, default=None, choices=[4, 6, 8, 16],
                   help="weight storage precision (default: 16 for --model; with --bundle, as stored in its "
                        "graphs, the manifest's precision; given with --bundle, float weights are read at this size)")
    p.add_argument("--efficiency", type=float, default=None,
                   help="override the calibrated efficiency (0 < E <= 1)")
    p.add_argument("--fusion", choices=["none", "elementwise", "attention"], default="attention",
                   help="which ops are assumed fused (default attention: the best fit to published figures)")
    p.add_argument("--out", type=Path, default=None,
                   help="write the estimate report(s) here (JSON; {device} in the name is replaced per device)")
    p.add_argument("--top", type=int, default=0, help="also print the N most expensive op kinds per stage")
    p.add_argument("--list-devices", action="store_true", help="print the device table with sources and exit")
    p.add_argument("--calibration", action="store_true", help="print the calibration against published figures")


def _out_path(out: Path, device: str, many: bool) -> Path:
    if "{device}" in str(out):
        return Path(str(out).replace("{device}", device))
    return out.with_name(f"{out.stem}-{device}{out.suffix}") if many else out


def _bundle_image_size(bundle: Path, plan, default: int) -> tuple[int, int]:
    """(width, height) from the manifest's image block, else the decoder graph's last output."""
    import json

    image = json.loads((bundle / "manifest.json").read_text()).get("image") or {}
    if image.get("width") and image.get("height"):
        return int(image["width"]), int(image["height"])
    for p in plan:
        if p.stage == "vae_decoder" and p.graph.ops and len(p.graph.ops[-1].out_shape) == 4:
            shp = p.graph.ops[-1].out_shape  # NHWC image (channels 3) or NCHW
            return (shp[2], shp[1]) if shp[-1] in (3, 4) else (shp[3], shp[2])
    return default, default




def resolve_settings(args: argparse.Namespace) -> dict[str, tuple]:
    """steps, cfg, decoder, precision (and scheduler, with --bundle) for the estimate, each as (value, where it
    came from): a flag when given, else the bundle's manifest, else the default."""
    from mobilesd.latency import roofline

    from_manifest = roofline.bundle_settings(roofline.read_manifest(args.bundle)) if args.bundle is not None else {}
    defaults = {"steps": (roofline.DEFAULT_STEPS_OTHER, "default"), "cfg": ("batch", "default"),
                "decoder": ("full", "default"), "precision": ("fp16", "default")}
    flags = {"steps": args.steps, "cfg": args.cfg, "decoder": args.decoder,
             "precision": None if args.weight_bits is None else ("fp16" if args.weight_bits == 16
                                                                  else f"int{args.weight_bits}")}
    out: dict[str, tuple] = {}
    for key in ("steps", "cfg", "decoder", "precision"):
        if flags[key] is not None:
            flag = "--weight-bits" if key == "precision" else f"--{key}"
            m = from_manifest.get(key)
            out[key] = (flags[key], f"flag {flag}" + (f", overrides {m[0]} ({m[1]})" if m and m[0] != flags[key] else ""))
        else:
            out[key] = from_manifest.get(key, defaults[key])
    if "scheduler" in from_manifest:
        out["scheduler"] = from_manifest["scheduler"]
    return out


def print_devices(console) -> None:
    from rich.table import Table

    from mobilesd.latency.roofline import load_devices

    t = Table(title="device table (mobilesd/latency/devices.json)", show_lines=True)
    for col in ("key", "accelerator", "FP16 peak", "bandwidth", "sources"):
        t.add_column(col, overflow="fold")
    for key, d in load_devices().items():
        t.add_row(key + (" (calibration only)" if d.get("calibration_only") else ""),
                  f"{d['accelerator']}: {d['accelerator_name']}", f"{d['peak_fp16_flops'] / 1e12:.2f} TFLOP/s",
                  f"{d['bandwidth_bytes_s'] / 1e9:.1f} GB/s",
                  f"peak ({d['peak_confidence']}): {d['peak_source']}\nbandwidth ({d['bandwidth_confidence']}): "
                  f"{d['bandwidth_source']}")
    console.print(t)


def print_calibration(console, fusion: str) -> None:
    from rich.table import Table

    from mobilesd.latency.roofline import calibrate

    cal = calibrate(fusion)
    t = Table(title=f"calibration against published figures (fusion: {fusion})")
    for col in ("figure", "device", "stage", "published s", "estimate s", "error", "leave-one-out error", "used"):
        t.add_column(col)
    for f in cal["figures"]:
        if "estimated_s" in f:
            t.add_row(f["id"], f["device"], f["stage"], f"{f['seconds']:.3f}", f"{f['estimated_s']:.3f}",
                      f"{f['error']:+.0%}", f"{f['loo_error']:+.0%}" if "loo_error" in f else "-",
                      "yes" if f["used"] else "no")
        else:
            t.add_row(f["id"], str(f.get("device") or "-"), f["stage"], f"{f['seconds']}", "-", "-", "-", "no")
    console.print(t)
    for f in cal["figures"]:
        if not f.get("used"):
            console.print(f"  not used: {f['id']}: {f.get('why_not_used', '')}", highlight=False)
    for acc, c in cal["classes"].items():
        loo = c["mean_abs_loo_error"]
        console.print(f"  class [bold]{acc}[/]: efficiency {c['efficiency']:.3f} from {len(c['figures'])} figures; "
                      f"mean |error| {c['mean_abs_error']:.0%} in-sample"
                      + (f", {loo:.0%} leave-one-out" if loo is not None else ""))


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from mobilesd.latency import roofline
    from rich.markup import escape

    from mobilesd.latency.schema import write_report
    from mobilesd.latency.verdict import MISS, PASS, verdict

    console = Console(width=None if sys.stdout.isatty() else 160)
    if args.list_devices:
        print_devices(console)
        return 0
    resolved = resolve_settings(args)
    steps, cfg, decoder = resolved["steps"][0], resolved["cfg"][0], resolved["decoder"][0]
    if steps < 1:
        raise MobileSDError(f"--steps {steps} is not a positive number of steps", "use e.g. --steps 20")
    if args.efficiency is not None and not 0 < args.efficiency <= 1:
        raise MobileSDError(f"--efficiency {args.efficiency} is out of range", "use 0 < E <= 1, e.g. 0.5")
    devices = [roofline.find_device(d) for d in (args.device or ["galaxy-s23-gpu"])]
    precision = resolved["precision"][0]
    scheduler = resolved.get("scheduler", (None, ""))[0]

    with console.status("costing the graphs (per-op FLOPs and bytes)..."):
        extra = []
        if args.bundle is not None:
            wb = args.weight_bits / 8 if args.weight_bits is not None else 2
            plan, bundle_info = roofline.bundle_plan(args.bundle, cfg, weight_bytes=wb)
            width, height = _bundle_image_size(args.bundle, plan, args.resolution)
            manifest = roofline.read_manifest(args.bundle)
            bundle_decoder = roofline.bundle_settings(manifest).get("decoder", ("full", ""))[0]
            if decoder != bundle_decoder:
                plan = roofline.replace_decoder(plan, manifest, decoder, width, height)
                extra.append(f"decoder: the bundle's graph is the {bundle_decoder} decoder; --decoder {decoder} "
                             "costs the SD-family TAESD decoder analytically in its place")
            source = "tflite:" + ",".join(sorted({p.graph.source.split(":", 1)[1] for p in plan}))
            unet_batch = max((p.graph.batch or 1) for p in plan if p.per_step)
            if cfg == "none" and unet_batch >= 2:
                extra.append("the bundle's UNet graph has batch 2: --cfg none costs one call of that graph as "
                             "exported (re-export with --cfg none for batch-1 graphs)")
            if args.weight_bits is not None:
                extra.append(f"float weights read at {args.weight_bits} bits (--weight-bits), not as stored")
        else:
            arch = args.model or "sd15"
            width = height = args.resolution
            bits = args.weight_bits or 16
            plan = roofline.analytic_plan(arch, width, height, cfg, weight_bytes=bits / 8, decoder=decoder)
            bundle_info = {"id": f"analytic:{arch}", "manifest_sha256": None, "model": arch}
            source = f"analytic:{arch}"
            extra = [f"op costs computed analytically from the {arch} architecture (diffusers/transformers modules "
                     f"on the meta device, random weights irrelevant), weights stored at {bits} bits"]
            if decoder == "tiny":
                extra.append("tiny decoder: diffusers' default AutoencoderTiny config (SD 1.x/2.x TAESD: decoder "
                             "blocks 64 channels x (3, 3, 3, 1), 8x upsampling), random weights")
        extra.append("settings: " + "; ".join(f"{k} {v[0]} ({v[1]})" for k, v in resolved.items()))
        if args.efficiency is None:
            cal = roofline.calibrate(args.fusion)

    console.print("settings (where each came from):", highlight=False)
    for k, (v, where) in resolved.items():
        console.print(f"  {k}: {v}  [{where}]", highlight=False, markup=False)

    if args.calibration:
        print_calibration(console, args.fusion)

    for key, dev in devices:
        report = roofline.estimate_report(plan, key, steps, cfg, width, height, bundle_info, source,
                                          args.efficiency, args.guidance, extra, args.fusion, precision=precision,
                                          decoder=decoder, scheduler=scheduler)
        st = report["stages"]
        costs = report["estimate"]["stage_costs"]
        t = Table(title=f"estimate: {dev['name']} ({dev['accelerator_name']}), {width}x{height}, "
                        f"{steps} steps, CFG {cfg}, {decoder} decoder, {precision}")
        for col in ("stage", "GFLOP / run", "GB moved / run", "memory-bound", "seconds", "x per run"):
            t.add_column(col, justify="right" if col != "stage" else "left")
        for p in plan:
            c = costs[p.stage]
            t.add_row(p.stage, f"{c['flops'] / 1e9:,.1f}", f"{c['bytes'] / 1e9:.2f}",
                      f"{c['memory_bound_fraction']:.0%}", f"{st[p.stage]['median_s']:.4g}",
                      str(steps) if p.per_step else "1")
        if any(p.stage.startswith("unet_chunk_") for p in plan):
            t.add_row("unet_step", "", "", "", f"{st['unet_step']['median_s']:.4g}", str(steps))
        e2e = st["end_to_end"]["median_s"]
        t.add_row("[bold]end_to_end[/]", "", "", "", f"[bold]{e2e:.4g}[/]", "1")
        console.print(t)
        v = verdict(report)  # the same verdict `mobilesd report` gives: PASS / MISS only at 512x512 on a phone
        color = {PASS: "green", MISS: "red"}.get(v.status, "yellow")
        console.print(f"  [{color}]{escape(v.text)}[/]", highlight=False)
        console.print("  assumptions:")
        for a in report["estimate"]["assumptions"]:
            console.print(f"   - {a}", highlight=False)
        if args.efficiency is None:
            acc = dev["accelerator"]
            console.print(f"  calibration error of the '{acc}' efficiency against the published figures:")
            for f in cal["figures"]:
                if f.get("accelerator") == acc and f.get("used") and "error" in f:
                    loo = f" (leave-one-out {f['loo_error']:+.0%})" if "loo_error" in f else ""
                    console.print(f"   - {f['id']}: published {f['seconds']:.3f} s, model {f['estimated_s']:.3f} s, "
                                  f"error {f['error']:+.0%}{loo}", highlight=False)
        if args.top:
            for p in plan:
                console.print(f"  top op kinds in {p.stage}:")
                for kind, d in list(p.graph.by_kind().items())[: args.top]:
                    console.print(f"    {kind:28s} x{d['count']:<4d} {d['flops'] / 1e9:10.1f} GFLOP "
                                  f"{d['bytes'] / 1e9:8.3f} GB", highlight=False)
        if args.out:
            path = write_report(_out_path(args.out, key, len(devices) > 1), report)
            console.print(f"  wrote {path}")
    return 0
