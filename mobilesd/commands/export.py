"""mobilesd export --target android|ios|onnx"""

from __future__ import annotations

from pathlib import Path

from mobilesd.export import DEFAULT_PRECISION, TARGETS, ExportOptions


def add_arguments(p):
    p.add_argument("--model", default=None,
                   help="diffusers folder, single-file .safetensors, or hub id (default: assets/tiny-digits-sd)")
    p.add_argument("--target", choices=TARGETS, default="android")
    p.add_argument("--out", default=None, help="bundle folder to write (default: bundles/<target>)")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8", "int4"), default=None,
                   help="weight precision (default: " + ", ".join(f"{k} {v}" for k, v in DEFAULT_PRECISION.items()) + ")")
    p.add_argument("--unet-chunks", type=int, default=None, help="split the UNet into N graphs at block boundaries")
    p.add_argument("--unet-max-mb", type=float, default=None, help="largest UNet graph allowed (MiB); picks the chunk count")
    p.add_argument("--cfg", choices=("batch", "sequential", "none"), default=None,
                   help="classifier-free guidance in the app: batch (default: [uncond, cond] in one batch-2 UNet call "
                        "per step), sequential (two batch-1 calls), none (one batch-1 call on the prompt, no negative "
                        "prompt, guidance ignored: for guidance-free distilled models, e.g. an LCM LoRA)")
    p.add_argument("--unet-batch", type=int, choices=(1, 2), default=None,
                   help="older spelling of --cfg: 2 = --cfg batch, 1 = --cfg sequential")
    p.add_argument("--lora", action="append", default=[], metavar="FILE[:SCALE]",
                   help="fuse a LoRA into the weights before anything else (repeatable, fused in order; SCALE "
                        "default 1.0): diffusers, kohya/A1111 or peft safetensors; recorded in the manifest")
    p.add_argument("--vae-decoder", default="full", metavar="full|tiny=PATH",
                   help="full: the model's VAE decoder (default); tiny=PATH: a diffusers AutoencoderTiny (TAESD) "
                        "folder exported in its place (same graph name and I/O)")
    p.add_argument("--timestep-spacing", choices=("leading", "trailing", "linspace"), default=None,
                   help="record a timestep spacing that overrides the scheduler config's for every scheduler "
                        "(trailing: SD-Turbo-style few-step models)")
    p.add_argument("--default-scheduler", choices=("dpm", "euler", "ddim", "lcm"), default="dpm",
                   help="the bundle's default scheduler (lcm for an LCM LoRA; default %(default)s)")
    p.add_argument("--schedulers", default=None, metavar="LIST",
                   help="comma list of the schedulers the bundle supports (default: dpm,euler,ddim,lcm)")
    p.add_argument("--height", type=int, default=None, help="image height (default: the model's)")
    p.add_argument("--width", type=int, default=None, help="image width (default: the model's)")
    p.add_argument("--allow-cpu-fallback", action="store_true",
                   help="accept graphs the GPU delegate cannot fully run (android)")
    p.add_argument("--skip-gpu-check", action="store_true", help="do not compile graphs for the GPU delegate (android)")
    p.add_argument("--verify-steps", type=int, default=4, help="denoising steps of the end-to-end check")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow loading pickle checkpoints (.ckpt/.bin): only for files you trust")
    p.add_argument("--prediction-type", choices=("epsilon", "v_prediction"), default=None,
                   help="override the scheduler's prediction type (SD 2.x single files that do not state it: "
                        "epsilon for SD 2.x-base, v_prediction for SD 2.x 768)")
    p.add_argument("--image-size", type=int, choices=(512, 768), default=None,
                   help="native image size of a single-file checkpoint that does not state it (SD 2.x-base 512, "
                        "SD 2.x 768): the default --height/--width")
    p.add_argument("--config", default=None, help="diffusers config folder for a single-file checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--quantized", default=None, metavar="Q",
                   help="quantized model folder (mobilesd quantize): its own integer weights go into the graphs "
                        "(default precision: int8 / int4 from the model) and its activation tables into the bundle")
    p.add_argument("--simulate-activations", action="store_true",
                   help="with --quantized: bake activation quantize-dequantize with a step_index input into the "
                        "UNet graphs, so they reproduce the PyTorch quantized model")
    ios = p.add_argument_group("Core ML (--target ios)")
    ios.add_argument("--attention", choices=("split-einsum", "original"), default=None,
                     help="UNet attention layout: split-einsum (Neural Engine; ios default) or original "
                          "(diffusers' attention, for the GPU; the only one for android/onnx)")
    ios.add_argument("--min-deployment-target", choices=("iOS16", "iOS17", "iOS18"), default=None,
                     help="Core ML opset (default iOS17; --precision int4 needs iOS18)")
    ios.add_argument("--palettize", type=int, choices=(4, 6, 8), default=None,
                     help="N-bit weight palettization (one lookup table per tensor) instead of linear quantization")
    ios.add_argument("--activation-quantization", choices=("static",), default=None,
                     help="with --quantized: W8A8 Core ML (iOS17+): int8 quantize/dequantize on each quantized layer's "
                          "input, one static scale per layer (the largest of its per-step table)")
    ios.add_argument("--palettize-mode", choices=("kmeans", "uniform"), default=None,
                     help="how the lookup tables are made (default kmeans)")


def run(args) -> int:
    from mobilesd.export import export

    from mobilesd.lora import parse_lora_arg

    cfg = _cfg_mode(args)
    opts = ExportOptions(target=args.target, precision=args.precision, unet_chunks=args.unet_chunks,
                         unet_max_mb=args.unet_max_mb, unet_batch=2 if cfg == "batch" else 1, cfg=cfg,
                         height=args.height,
                         width=args.width, allow_cpu_fallback=args.allow_cpu_fallback,
                         skip_gpu_check=args.skip_gpu_check, verify_steps=args.verify_steps,
                         overwrite=args.overwrite, progress=not args.quiet)
    opts.quantized, opts.simulate_activations = args.quantized, args.simulate_activations
    opts.activation_quantization = args.activation_quantization
    opts.attention, opts.min_deployment_target = args.attention, args.min_deployment_target
    opts.palettize, opts.palettize_mode = args.palettize, args.palettize_mode
    opts.loras = tuple(parse_lora_arg(x) for x in args.lora)
    opts.allow_pickle, opts.vae_decoder = args.allow_pickle, args.vae_decoder
    opts.timestep_spacing, opts.default_scheduler = args.timestep_spacing, args.default_scheduler
    if args.schedulers:
        opts.schedulers = tuple(x.strip() for x in args.schedulers.split(",") if x.strip())
    out = args.out or f"bundles/{args.target}"
    config = _single_file_config(args)
    bundle = export(args.model, out, opts, allow_pickle=args.allow_pickle, prediction_type=args.prediction_type,
                    config=config)
    m = bundle.manifest
    print(f"\nbundle: {bundle.root}  id {m['bundle_id']}  ({m['target']}, {m['precision']})")
    ios = m["target"] == "ios"
    print(f"{'graph':<16}{'MiB':>9}{'rel.L2':>11}{'GPU':>8}" + ("  Neural-Engine-unfriendly ops" if ios else ""))
    for g in m["graphs"]:
        gpu = g.get("gpu", {})
        gpu_s = "-" if not gpu or gpu.get("skipped") else ("full" if gpu.get("fully_accelerated") else "PART")
        ne = g.get("static_facts", {}).get("neural_engine", {}).get("unsupported_ops") if ios else None
        print(f"{g['name']:<16}{g['size_bytes'] / 2**20:>9.2f}{g['verification']['rel_l2']:>11.2e}{gpu_s:>8}"
              + (f"  {ne or 'none'}" if ios else ""))
    extras = [f"cfg {m['cfg']['mode']} (UNet batch {m['cfg']['unet_batch']})",
              f"schedulers {','.join(m['scheduler']['supported'])} (default {m['scheduler']['default']}"
              + (f", {m['scheduler']['timestep_spacing']} spacing)" if m["scheduler"].get("timestep_spacing") else ")")]
    if m["source"].get("loras"):
        extras.append("LoRAs " + ", ".join(f"{Path(x['file']).name}:{x['scale']:g} ({x['format']})"
                                           for x in m["source"]["loras"]))
    dec = next(g for g in m["graphs"] if g["role"] == "vae_decoder")["meta"].get("decoder", "full")
    extras.append(f"{dec} VAE decoder")
    print("; ".join(extras))
    e2e = m["verification"]["end_to_end"]
    psnr = "identical" if e2e["psnr_db"] is None else f"PSNR {e2e['psnr_db']:.1f} dB"
    print(f"end-to-end image vs PyTorch: mean abs {e2e['mean_abs']:.2e}, {psnr} "
          f"({e2e['settings']['steps']} {e2e['settings']['scheduler']} steps)")
    return 0


def _cfg_mode(args) -> str:
    """--cfg, or its older spelling --unet-batch (2 batch, 1 sequential); both given must agree."""
    from mobilesd.errors import MobileSDError

    by_batch = {2: "batch", 1: "sequential"}.get(args.unet_batch)
    if args.cfg and by_batch and args.cfg != by_batch:
        raise MobileSDError(f"--unet-batch {args.unet_batch} means --cfg {by_batch}, which contradicts --cfg {args.cfg}",
                            "pass only --cfg (batch | sequential | none); --unet-batch is its older spelling")
    return args.cfg or by_batch or "batch"


def _single_file_config(args):
    """The config folder of a .safetensors single file without --config: architecture from its keys, prediction
    type and native size from what it states or --prediction-type / --image-size (an SD 2.x file that states
    neither is refused here, before any work). Settled here so --image-size reaches the loader through
    ``config``."""
    from pathlib import Path

    from mobilesd.errors import MobileSDError
    from mobilesd.loading import single_file_config

    model = Path(args.model).expanduser() if args.model else None
    single = model is not None and model.is_file() and model.suffix == ".safetensors"
    if args.image_size is not None and (not single or args.config):
        raise MobileSDError(f"--image-size applies to a .safetensors single file without --config "
                            f"(--model {args.model or 'default'} states its size in unet/config.json"
                            + (", and so does --config" if args.config else "") + ")",
                            "drop --image-size; use --height/--width to export at another size")
    if not single or args.config:
        return args.config
    config = single_file_config(model, args.prediction_type, args.image_size)
    if args.image_size and (args.height or args.width) and (args.height, args.width) != (args.image_size,) * 2:
        import logging

        logging.getLogger("mobilesd").info("exporting at %sx%s px; the model's native size is %s px",
                                           args.height or args.image_size, args.width or args.image_size,
                                           args.image_size)
    return str(config)
