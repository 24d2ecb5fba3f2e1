"""mobilesd export --target android|ios|onnx"""

from __future__ import annotations


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
    p.add_argument("--unet-batch", type=int, choices=(1, 2), default=2,
                   help="2: CFG's two halves in one UNet call (default); 1: two calls per step")
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
                   help="override the scheduler's prediction type (SD 2.x 768 single files: v_prediction)")
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

    opts = ExportOptions(target=args.target, precision=args.precision, unet_chunks=args.unet_chunks,
                         unet_max_mb=args.unet_max_mb, unet_batch=args.unet_batch, height=args.height,
                         width=args.width, allow_cpu_fallback=args.allow_cpu_fallback,
                         skip_gpu_check=args.skip_gpu_check, verify_steps=args.verify_steps,
                         overwrite=args.overwrite, progress=not args.quiet)
    opts.quantized, opts.simulate_activations = args.quantized, args.simulate_activations
    opts.activation_quantization = args.activation_quantization
    opts.attention, opts.min_deployment_target = args.attention, args.min_deployment_target
    opts.palettize, opts.palettize_mode = args.palettize, args.palettize_mode
    out = args.out or f"bundles/{args.target}"
    bundle = export(args.model, out, opts, allow_pickle=args.allow_pickle, prediction_type=args.prediction_type,
                    config=args.config)
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
    e2e = m["verification"]["end_to_end"]
    psnr = "identical" if e2e["psnr_db"] is None else f"PSNR {e2e['psnr_db']:.1f} dB"
    print(f"end-to-end image vs PyTorch: mean abs {e2e['mean_abs']:.2e}, {psnr} "
          f"({e2e['settings']['steps']} {e2e['settings']['scheduler']} steps)")
    return 0
