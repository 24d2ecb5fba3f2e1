"""`mobilesd eval`: quality metrics of a model, quantized models and bundles on the digits task."""

from __future__ import annotations

import argparse

NAME = "eval"
HELP = "quality metrics (prompt accuracy, FID-style distance, fidelity) of a model or bundle"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mobilesd.tiny.metrics import SCHEDULERS, EvalSettings

    d = EvalSettings()
    parser.add_argument("--model", default=None,
                        help="full-precision model folder (diffusers layout); default: assets/tiny-digits-sd")
    parser.add_argument("--quantized", action="append", default=[], metavar="Q",
                        help="quantized model folder (mobilesd quantize); repeatable")
    parser.add_argument("--bundle", action="append", default=[], metavar="B",
                        help="exported bundle, run on this machine; repeatable")
    parser.add_argument("--runtime", choices=["tflite", "onnx", "coreml-mil", "torch"], default=None,
                        help="runtime for --bundle: its graphs' (tflite | onnx | coreml-mil, the MIL interpreter for "
                             "Core ML packages) or torch, the PyTorch model it was verified against (default: the "
                             "runtime of each bundle's graphs)")
    parser.add_argument("--lora", action="append", default=[], metavar="FILE[:SCALE]",
                        help="also score the model with these LoRAs fused (repeatable: fused together, in order, as "
                             "export --lora does)")
    parser.add_argument("--tiny-decoder", action="append", default=[], metavar="PATH",
                        help="also score the model decoding with this AutoencoderTiny (TAESD) folder: same latents, so "
                             "its PSNR column is against the full decoder; repeatable")
    parser.add_argument("--allow-pickle", action="store_true", help="allow pickle LoRA files (only if you trust them)")
    c = parser.add_argument_group("sampling of everything but the reference (default: the same as the reference)",
                                  "e.g. a few-step LoRA at 4 LCM steps without CFG beside the full model's 20 steps")
    c.add_argument("--candidate-steps", type=int, default=None)
    c.add_argument("--candidate-guidance", type=float, default=None, help="1.0 = no CFG")
    c.add_argument("--candidate-scheduler", choices=sorted(SCHEDULERS), default=None)
    parser.add_argument("--classifier", default=None, help="digit classifier folder (default: MODEL/classifier)")
    parser.add_argument("--prompts", type=int, default=None,
                        help=f"number of prompts (default {d.n_prompts} = every held-out phrasing x digit; "
                             "compositional model: 160)")
    parser.add_argument("--phrasings", choices=["heldout", "train"], default=d.phrasings,
                        help="prompt templates to draw from (default %(default)s)")
    parser.add_argument("--seeds", default=None,
                        help=f"seeds per prompt: a count N (seeds 0..N-1) or a comma list (default "
                             f"{','.join(map(str, d.seeds))}; compositional model: 0,1,2)")
    parser.add_argument("--steps", type=int, default=d.steps, help="denoising steps (default %(default)s)")
    parser.add_argument("--guidance", type=float, default=None,
                        help=f"guidance scale (default {d.guidance}; compositional model: its EvalSettings')")
    parser.add_argument("--scheduler", choices=sorted(SCHEDULERS), default=d.scheduler,
                        help="scheduler (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="images per pipeline call")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (default %(default)s: the tiny model's ops are too small to gain from more, "
                             "and on a busy machine extra threads mostly spin)")
    parser.add_argument("--out", default=None, help="write the table to OUT.md and OUT.json")
    parser.add_argument("--save-images", default=None, metavar="DIR", help="write a sample grid per model to DIR")


def parse_seeds(text: str) -> list[int]:
    from mobilesd.errors import MobileSDError

    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            seeds = list(range(int(text)))
    except ValueError:
        raise MobileSDError(f"--seeds {text!r} is neither a count nor a comma list of integers",
                            "e.g. --seeds 4 or --seeds 0,1,2,3") from None
    if not seeds:
        raise MobileSDError("--seeds gives no seed", "e.g. --seeds 4")
    return seeds


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mobilesd.errors import MobileSDError
    from mobilesd.tiny import metrics
    from mobilesd.tiny.classifier import load_classifier
    from mobilesd.tiny.model import CLASSIFIER_SUBDIR, DEFAULT_MODEL

    if (args.prompts is not None and args.prompts < 1) or args.steps < 1:
        raise MobileSDError("--prompts and --steps must be positive", "e.g. --prompts 60 --steps 20")
    d = metrics.EvalSettings()
    settings = metrics.EvalSettings(n_prompts=args.prompts or d.n_prompts,
                                    seeds=parse_seeds(args.seeds) if args.seeds else d.seeds, steps=args.steps,
                                    guidance=d.guidance if args.guidance is None else args.guidance,
                                    scheduler=args.scheduler, phrasings=args.phrasings, batch_size=args.batch_size)
    if args.threads < 1:
        raise MobileSDError("--threads must be at least 1", "e.g. --threads 1")
    import torch

    torch.set_num_threads(args.threads)
    model = Path(args.model) if args.model else DEFAULT_MODEL
    from mobilesd.tiny.attribute_classifier import SUBDIR as ATTRIBUTE_SUBDIR

    if (model / ATTRIBUTE_SUBDIR).is_dir():   # the compositional model: binding accuracy per attribute
        return run_compositional(args, model)
    classifier = load_classifier(Path(args.classifier) if args.classifier else model / CLASSIFIER_SUBDIR)
    for b in args.bundle:  # a runtime that cannot run a bundle is refused before anything is generated
        metrics.bundle_runtime(b, args.runtime)
    fp = metrics.load_fp_pipeline(model)
    generators = [metrics.pipeline_generator(fp, "fp32", str(model), settings.batch_size)]
    for q in args.quantized:
        gen = metrics.quantized_generator(q, fp, settings.batch_size)
        gen.name = f"quantized {Path(q).name}"
        generators.append(gen)
    for b in args.bundle:
        gen = metrics.bundle_generator(b, args.runtime, threads=args.threads)
        gen.name = f"{gen.name} {Path(b).name}"
        generators.append(gen)
    lora_pipe = None
    if args.lora:
        from mobilesd.lora import parse_lora_arg

        specs = [parse_lora_arg(x) for x in args.lora]
        lora_pipe = metrics.lora_pipeline(model, specs, args.allow_pickle)
        lora_name = "lora " + " + ".join(f"{Path(x.path).name}:{x.scale:g}" for x in specs)
        generators.append(metrics.pipeline_generator(lora_pipe, lora_name, ", ".join(args.lora), settings.batch_size))
    for t in args.tiny_decoder:
        generators.append(metrics.tiny_decoder_generator(fp, t, batch_size=settings.batch_size))
        if lora_pipe is not None:   # the two together: the LoRA'd model decoding with the tiny decoder
            generators.append(metrics.tiny_decoder_generator(lora_pipe, t, name=f"{lora_name} + tiny decoder "
                                                             f"{Path(t).name}", batch_size=settings.batch_size))
    candidate = {k: v for k, v in (("steps", args.candidate_steps), ("guidance", args.candidate_guidance),
                                   ("scheduler", args.candidate_scheduler)) if v is not None}
    if candidate:
        if candidate.get("steps", 1) < 1:
            raise MobileSDError("--candidate-steps must be positive", "e.g. --candidate-steps 4")
        for gen in generators[1:]:
            gen.sampling = dict(gen.sampling or {}, **candidate)

    result = metrics.evaluate(generators, classifier, settings)
    print(metrics.render_markdown(result))
    if args.save_images:
        out_dir = Path(args.save_images)
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, images in result["images"].items():
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
            print(f"wrote {metrics.save_grid(images, result['digits'], out_dir / f'{safe}.png')}")
    if args.out:
        md, js = metrics.write_table(result, args.out)
        print(f"wrote {md} and {js}")
    return 0


def run_compositional(args, model) -> int:
    """`eval` on the compositional model (assets/tiny-compositional-sd): its own prompt grid and metrics
    (mobilesd.tiny.compositional_metrics), every row against FP with paired 95% intervals. --prompts / --seeds
    / --steps / --guidance / --scheduler apply; --phrasings selects the templates."""
    import json
    from pathlib import Path

    from mobilesd.tiny import compositional_metrics as cm
    from mobilesd.tiny.attribute_classifier import SUBDIR, load_attribute_classifier
    from mobilesd.tiny.compositional_card import generate
    from mobilesd.tiny.metrics import bundle_generator, load_fp_pipeline

    d = cm.EvalSettings()
    seeds = parse_seeds(args.seeds) if args.seeds else d.seeds
    settings = cm.EvalSettings(n_prompts=args.prompts or d.n_prompts, seeds=seeds,
                               steps=args.steps, guidance=d.guidance if args.guidance is None else args.guidance,
                               scheduler=args.scheduler, phrasings=args.phrasings, batch_size=args.batch_size)
    clf = load_attribute_classifier(Path(args.classifier) if args.classifier else model / SUBDIR)
    fp = load_fp_pipeline(model)
    prompts, labels, case_seeds, pidx = settings.cases()
    real = cm.real_features(clf, labels)
    rows = {"fp32": cm.score(generate(fp, prompts, case_seeds, settings), labels, pidx, clf, real, settings)}
    ref = rows["fp32"]["_raw"]
    for q in args.quantized:
        from mobilesd.quant import load_quantized

        pipe = load_quantized(q, model=model)
        pipe.set_progress_bar_config(disable=True)
        row = cm.score(generate(pipe, prompts, case_seeds, settings), labels, pidx, clf, real, settings, ref)
        row["guidance_ratio"] = cm.guidance_ratio(fp, pipe.unet, prompts[:: len(seeds)][: settings.guidance_cases],
                                                  case_seeds[:: len(seeds)][: settings.guidance_cases], settings)
        rows[f"quantized {Path(q).name}"] = row
    for b in args.bundle:
        gen = bundle_generator(b, args.runtime, threads=args.threads)
        imgs = gen(prompts, case_seeds, settings.steps, settings.guidance, settings.scheduler)
        rows[f"{gen.name} {Path(b).name}"] = cm.score(imgs, labels, pidx, clf, real, settings, ref)
    pct = lambda e: f"{100 * e['value']:.1f}% [{100 * e['ci'][0]:.1f}, {100 * e['ci'][1]:.1f}]"  # noqa: E731
    print(f"{len(prompts)} images ({settings.n_prompts} prompts x seeds {settings.seeds}), {settings.steps} "
          f"{settings.scheduler} steps, guidance {settings.guidance}; 95% bootstrap intervals over prompts")
    for name, r in rows.items():
        acc = ", ".join(f"{k} {pct(v)}" for k, v in r["accuracy"].items())
        extra = ""
        if "fid_vs_fp" in r:
            extra = f"; FID-style vs FP {r['fid_vs_fp']['value']:.2f}; PSNR vs FP {r.get('psnr_db')}"
        if "guidance_ratio" in r:
            extra += f"; guidance ratio {r['guidance_ratio']['value']:.3f}"
        print(f"{name}: {acc}; FID-style vs real {r['fid_real']['value']:.2f}{extra}")
    if args.out:
        out = Path(args.out).with_suffix(".json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"settings": settings.to_dict(), "rows": {k: cm.public(v) for k, v in rows.items()}},
                                  indent=1, allow_nan=False) + "\n")
        print(f"wrote {out}")
    return 0
