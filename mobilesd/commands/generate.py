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
                        "graphs; torch: the PyTorch source model (default: the bundle's)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scheduler", choices=sorted(SCHEDULERS), default="dpm")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--model", default=None, help="source model for --runtime torch (default: the manifest's)")
    p.add_argument("--out", default="out.png", help="PNG to write")


def run(args) -> int:
    from mobilesd.bundle import load_bundle
    from mobilesd.pipeline import HostPipeline, save_png

    fmt = load_bundle(args.bundle, verify_checksums=False).graphs("unet")[0]["format"]
    runtime = args.runtime or FORMAT_RUNTIME.get(fmt, fmt)
    hp = HostPipeline.from_bundle(args.bundle, runtime=runtime, threads=args.threads, model=args.model)
    image = hp.generate(args.prompt, args.negative_prompt, steps=args.steps, guidance=args.guidance,
                        seed=args.seed, scheduler=args.scheduler, progress=True)
    path = save_png(image, Path(args.out))
    print(f"wrote {path} ({image.shape[1]}x{image.shape[0]}, {runtime}, {args.steps} {args.scheduler} steps, seed {args.seed})")
    return 0
