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
    parser.add_argument("--runtime", choices=["tflite", "onnx", "torch"], default=None,
                        help="runtime for --bundle (default: the bundle's own)")
    parser.add_argument("--classifier", default=None, help="digit classifier folder (default: MODEL/classifier)")
    parser.add_argument("--prompts", type=int, default=d.n_prompts,
                        help="number of prompts (default %(default)s = every held-out phrasing x digit)")
    parser.add_argument("--phrasings", choices=["heldout", "train"], default=d.phrasings,
                        help="prompt templates to draw from (default %(default)s)")
    parser.add_argument("--seeds", default=",".join(map(str, d.seeds)),
                        help="seeds per prompt: a count N (seeds 0..N-1) or a comma list (default %(default)s)")
    parser.add_argument("--steps", type=int, default=d.steps, help="denoising steps (default %(default)s)")
    parser.add_argument("--guidance", type=float, default=d.guidance, help="guidance scale (default %(default)s)")
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

    if args.prompts < 1 or args.steps < 1:
        raise MobileSDError("--prompts and --steps must be positive", "e.g. --prompts 60 --steps 20")
    settings = metrics.EvalSettings(n_prompts=args.prompts, seeds=parse_seeds(args.seeds), steps=args.steps,
                                    guidance=args.guidance, scheduler=args.scheduler, phrasings=args.phrasings,
                                    batch_size=args.batch_size)
    if args.threads < 1:
        raise MobileSDError("--threads must be at least 1", "e.g. --threads 1")
    import torch

    torch.set_num_threads(args.threads)
    model = Path(args.model) if args.model else DEFAULT_MODEL
    classifier = load_classifier(Path(args.classifier) if args.classifier else model / CLASSIFIER_SUBDIR)
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
