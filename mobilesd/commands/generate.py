"""mobilesd generate --bundle DIR --prompt ..."""

from __future__ import annotations

from pathlib import Path

from mobilesd.pipeline import FORMAT_RUNTIME, RUNTIMES, SCHEDULERS


def add_arguments(p):
    p.add_argument("--bundle", required=True, help="bundle folder written by `mobilesd export`")
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--runtime", choices=RUNTIMES, default=None,
                   help="tflite | onnx | coreml-mil (Core ML packages through the MIL interpreter): the bundle's "
                        "graphs; torch: the PyTorch model the bundle was verified against (its source model, with a "
                        "quantized model's weights) (default: the bundle's)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=None,
                   help="CFG scale (default: the manifest's cfg.default_guidance; ignored by --cfg none bundles)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scheduler", choices=sorted(SCHEDULERS), default=None,
                   help="default: the bundle's (manifest scheduler.default)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--model", default=None, help="source model for --runtime torch (default: the manifest's)")
    p.add_argument("--quantized", default=None, metavar="Q",
                   help="quantized-model folder for --runtime torch on a bundle of a quantized model "
                        "(default: the manifest's quantization.source)")
    p.add_argument("--out", default="out.png", help="PNG to write")


def run(args) -> int:
    from mobilesd.bundle import load_bundle
    from mobilesd.pipeline import HostPipeline, save_png

    fmt = load_bundle(args.bundle, verify_checksums=False).graphs("unet")[0]["format"]
    runtime = args.runtime or FORMAT_RUNTIME.get(fmt, fmt)
    if runtime != "torch" and (args.model or args.quantized):
        from mobilesd.errors import MobileSDError

        raise MobileSDError(f"--model / --quantized choose the PyTorch model of --runtime torch; --runtime {runtime} "
                            "runs the bundle's own graphs", "drop --model / --quantized, or pass --runtime torch")
    manifest = load_bundle(args.bundle, verify_checksums=False).manifest
    scheduler = args.scheduler or manifest["scheduler"].get("default", "dpm")
    supported = manifest["scheduler"].get("supported") or []
    if scheduler != "pndm" and supported and scheduler not in supported:
        from mobilesd.errors import MobileSDError

        raise MobileSDError(f"bundle {args.bundle} does not support --scheduler {scheduler} (it lists "
                            f"{', '.join(supported)})", f"use one of {', '.join(supported)}")
    cfg = manifest["cfg"]
    guidance = args.guidance if args.guidance is not None else float(cfg.get("default_guidance", 7.5))
    if cfg.get("mode") == "none" and (args.guidance not in (None, 1.0) or args.negative_prompt):
        print("note: this bundle runs without classifier-free guidance (cfg mode none): --guidance and "
              "--negative-prompt are ignored")
    hp = HostPipeline.from_bundle(args.bundle, runtime=runtime, threads=args.threads, model=args.model,
                                  quantized=args.quantized)
    image = hp.generate(args.prompt, args.negative_prompt, steps=args.steps, guidance=guidance,
                        seed=args.seed, scheduler=scheduler, progress=True)
    path = save_png(image, Path(args.out))
    mode = "no CFG" if cfg.get("mode") == "none" else f"guidance {guidance:g} ({cfg.get('mode')})"
    print(f"wrote {path} ({image.shape[1]}x{image.shape[0]}, {runtime}, {args.steps} {scheduler} steps, {mode}, "
          f"seed {args.seed})")
    return 0
