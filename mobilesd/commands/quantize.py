"""mobilesd quantize --model M --method ptq|tdq|efficientdm|svdquant --weights 8|4 --acts 8|16|4 --out Q"""

from __future__ import annotations

from pathlib import Path


def add_arguments(p):
    from mobilesd.quant.api import INTERVALS, METHODS
    from mobilesd.quant.model import COMPONENTS

    p.add_argument("--model", default=None, help="diffusers folder or single file (default: assets/tiny-digits-sd)")
    p.add_argument("--lora", action="append", default=[], metavar="FILE[:SCALE]",
                   help="fuse a LoRA into the model before quantizing (repeatable; as export --lora); recorded in the "
                        "quantized model, whose export fuses it again into the layers it keeps in float")
    p.add_argument("--allow-pickle", action="store_true", help="allow pickle LoRA files (only for files you trust)")
    p.add_argument("--method", choices=METHODS, default="ptq")
    p.add_argument("--weights", type=int, choices=(8, 4), default=8, help="weight bits")
    p.add_argument("--acts", type=int, choices=(16, 8, 6, 4), default=8, help="activation bits (16: float)")
    p.add_argument("--act-intervals", choices=INTERVALS, default=None,
                   help="static: one per layer; per-step: one per sampling step (TALSQ); tdq: generated from the "
                        "timestep (default: ptq static, tdq tdq, efficientdm per-step)")
    p.add_argument("--asymmetric", action="store_true", help="asymmetric weights (zero points; PyTorch and Core ML)")
    p.add_argument("--group-size", type=int, default=None, help="group-wise 4-bit weights (groups of N input channels)")
    p.add_argument("--components", default="unet",
                   help=f"comma list from {list(COMPONENTS)}; text encoder and VAE decoder get weights only")
    p.add_argument("--policy", default=None, help="JSON file with layer rules (see docs/quantization.md)")
    p.add_argument("--prompts", default=None, help="text file, one prompt per line (default: built-in set)")
    p.add_argument("--calib-prompts", type=int, default=32, help="prompts used for calibration")
    p.add_argument("--steps", type=int, default=20, help="sampling steps of calibration / distillation")
    p.add_argument("--scheduler", default="dpm", help="sampling scheduler (dpm | euler | ddim | pndm)")
    p.add_argument("--guidance", type=float, default=None, help="CFG scale (default 7.5; 3.0 for the tiny model)")
    p.add_argument("--iterations", type=int, default=40, help="distillation iterations (tdq, efficientdm)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lora-rank", type=int, default=32)
    p.add_argument("--lora-lr", type=float, default=0.002, help="LoRA rate relative to each layer's weight step size")
    p.add_argument("--act-lr", type=float, default=0.01, help="step-size rate relative to its initial value")
    p.add_argument("--tdq-lr", type=float, default=1e-3)
    g = p.add_argument_group("EfficientDM options (also for svdquant --distill)")
    g.add_argument("--learn-weight-scales", action="store_true",
                   help="L4Q: train the weight step sizes with LSQ gradients jointly with the LoRA")
    g.add_argument("--weight-scale-lr", type=float, default=0.005,
                   help="L4Q step-size rate relative to each scale (default %(default)s)")
    g.add_argument("--lora-blocks", type=int, default=1, metavar="K",
                   help="GraLoRA: K x K granular LoRA blocks of rank lora-rank/K each (same parameters; default 1: LoRA)")
    g = p.add_argument_group("SVDQuant options (--method svdquant)")
    g.add_argument("--rank", type=int, default=32,
                   help="rank of the 16-bit low-rank branch (capped per layer at a quarter of its smaller side)")
    g.add_argument("--smooth-alpha", type=float, default=0.5,
                   help="smoothing migration strength (activation outliers -> weights; only with quantized acts)")
    g.add_argument("--distill", action="store_true",
                   help="add EfficientDM distillation on the residual (QALoRA + per-step intervals)")
    p.add_argument("--device", default="cpu", help="cpu | cuda (multi-GPU: launch with `accelerate launch`)")
    p.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="no")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUT.checkpoint/ after an interruption")
    p.add_argument("--stop-after", type=int, default=None,
                   help="end this run after N distillation iterations (time-boxed jobs); continue with --resume")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--out", required=True, help="quantized-model folder to write")


def run(args) -> int:
    import json

    from mobilesd.errors import MobileSDError
    from mobilesd.quant import quantize

    prompts = None
    if args.prompts:
        path = Path(args.prompts)
        if not path.is_file():
            raise MobileSDError(f"--prompts {path} does not exist", "pass a text file with one prompt per line")
        prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not prompts:
            raise MobileSDError(f"--prompts {path} has no prompts", "one prompt per line")
    rules = None
    if args.policy:
        try:
            rules = json.loads(Path(args.policy).read_text())
            assert isinstance(rules, list) and all("pattern" in r for r in rules)
        except (OSError, ValueError, AssertionError):
            raise MobileSDError(f"--policy {args.policy} is not a JSON list of rules",
                                'e.g. [{"pattern": "*conv_shortcut", "weights": null, "acts": null}, '
                                '{"pattern": "*", "weights": "default", "acts": "default"}]') from None
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise MobileSDError("--device cuda but no CUDA device is visible to torch",
                                "run on a GPU machine with a CUDA build of torch, or use --device cpu")
    from mobilesd.lora import parse_lora_arg

    loras = [parse_lora_arg(x) for x in args.lora]
    qm = quantize(args.model, args.out, loras=loras, allow_pickle=args.allow_pickle, method=args.method, weight_bits=args.weights, act_bits=args.acts,
                  act_intervals=args.act_intervals, symmetric=not args.asymmetric, group_size=args.group_size,
                  components=[c.strip() for c in args.components.split(",") if c.strip()], rules=rules,
                  prompts=prompts, calib_prompts=args.calib_prompts, steps=args.steps, guidance=args.guidance,
                  scheduler=args.scheduler, iterations=args.iterations, batch_size=args.batch_size,
                  lora_rank=args.lora_rank, lora_lr=args.lora_lr, act_lr=args.act_lr, tdq_lr=args.tdq_lr,
                  learn_weight_scales=args.learn_weight_scales, weight_scale_lr=args.weight_scale_lr,
                  lora_blocks=args.lora_blocks, svd_rank=args.rank, smooth_alpha=args.smooth_alpha,
                  distill=args.distill,
                  device=args.device, mixed_precision=args.mixed_precision, seed=args.seed, resume=args.resume, stop_after=args.stop_after,
                  overwrite=args.overwrite, progress=not args.quiet)
    if qm is None:
        return 0
    c = qm.config
    n = sum(len(v) for v in c["plan"].values())
    extras = [x for x in ("distilled" if c.get("distill") else "", "L4Q scales" if c.get("learn_weight_scales") else "",
                          f"GraLoRA {c['lora_blocks']}x{c['lora_blocks']}" if (c.get("lora_blocks") or 1) > 1 else "",
                          f"rank-{c['svdquant']['rank']} branch" if c.get("svdquant") else "") if x]
    print(f"quantized model written to {args.out}: {c['method']} W{c['weight_bits']}A{c['act_bits']} "
          f"({c['act_intervals']} intervals{', ' + ', '.join(extras) if extras else ''}), {n} layers, "
          f"{c['seconds']['total']:.0f}s")
    if c["training"]:
        print(f"distillation loss: {c['training']['first_loss']:.3e} -> {c['training']['final_loss']:.3e}")
    return 0
