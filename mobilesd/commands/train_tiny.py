"""`mobilesd train-tiny`: train the small digits text-to-image model (the default --model of every command), or one
of the small assets made on top of it (--asset): a style LoRA, a few-step consistency-distilled LoRA, a tiny
decoder."""

from __future__ import annotations

import argparse

NAME = "train-tiny"
HELP = "train the small digits text-to-image model shipped in assets/ (or, with --asset, a LoRA / tiny decoder for it)"

# --asset name -> (module under mobilesd.tiny, its config class, the asset folder it ships as)
ASSETS = {
    "model": ("train", "TrainConfig", "tiny-digits-sd"),
    "bold-lora": ("style_lora", "StyleLoraConfig", "tiny-digits-bold-lora"),
    "lcm-lora": ("lcm_lora", "LCMConfig", "tiny-digits-lcm-lora"),
    "tiny-decoder": ("tiny_decoder", "TinyDecoderConfig", "tiny-digits-taesd"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mobilesd.tiny.train import TrainConfig

    d = TrainConfig()
    parser.add_argument("--asset", choices=sorted(ASSETS), default="model",
                        help="what to train: the digits model (default), or for it: bold-lora (a style LoRA, diffusers "
                             "+ kohya files), lcm-lora (LCM-style consistency distillation as a LoRA: 2-4 steps, no "
                             "CFG), tiny-decoder (an AutoencoderTiny distilled from its VAE)")
    parser.add_argument("--out", required=True, help="output folder; built in OUT.partial/ and renamed when complete")
    parser.add_argument("--base", default=None,
                        help="--asset other than model: the digits model to train on (default: assets/tiny-digits-sd)")
    parser.add_argument("--seed", type=int, default=d.seed, help="training seed (default %(default)s)")
    parser.add_argument("--threads", type=int, default=d.threads,
                        help="torch CPU threads; weights are bit-identical only for the same count "
                             "(default %(default)s)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from OUT.partial/")
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--no-eval", action="store_true", help="skip the evaluation and the model card")
    parser.add_argument("--eval-only", action="store_true",
                        help="--asset other than model: no training; evaluate the finished asset in OUT again and "
                             "rewrite its metrics.json, samples.png and README.md")
    g = parser.add_argument_group("training length (defaults: the shipped assets)")
    g.add_argument("--vae-steps", type=int, default=d.vae_steps, help="--asset model")
    g.add_argument("--classifier-steps", type=int, default=d.clf_steps, help="--asset model")
    g.add_argument("--unet-steps", type=int, default=d.unet_steps, help="--asset model")
    g.add_argument("--steps", type=int, default=None,
                   help="--asset bold-lora / lcm-lora / tiny-decoder: optimisation steps (default: the shipped asset's)")
    g.add_argument("--checkpoint-every", type=int, default=None,
                   help="checkpoint interval in steps (default: 500 for the model, the asset's own otherwise)")


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import importlib

    from mobilesd.errors import MobileSDError

    steps = [s for s in (args.vae_steps, args.classifier_steps, args.unet_steps, args.steps, args.checkpoint_every)
             if s is not None]
    if min(steps) < 1:
        raise MobileSDError("step counts must be positive", "pass --steps / --vae-steps / ... >= 1")
    if args.threads < 1:
        raise MobileSDError("--threads must be at least 1", "e.g. --threads 1")
    if args.asset == "model":
        from mobilesd.tiny.train import TrainConfig, train

        if args.eval_only:
            raise MobileSDError("--eval-only applies to --asset bold-lora / lcm-lora / tiny-decoder",
                                "the digits model is evaluated with `mobilesd eval`")
        if args.steps is not None or args.base is not None:
            raise MobileSDError("--steps and --base apply to --asset bold-lora / lcm-lora / tiny-decoder",
                                "use --vae-steps / --classifier-steps / --unet-steps for the model")
        cfg = TrainConfig(seed=args.seed, threads=args.threads, vae_steps=args.vae_steps,
                          clf_steps=args.classifier_steps, unet_steps=args.unet_steps,
                          checkpoint_every=args.checkpoint_every or 500)
        train(args.out, cfg, resume=args.resume, force=args.force, evaluate=not args.no_eval)
        return 0
    from mobilesd.tiny.train import TrainConfig

    d = TrainConfig()
    if (args.vae_steps, args.classifier_steps, args.unet_steps) != (d.vae_steps, d.clf_steps, d.unet_steps):
        raise MobileSDError(f"--vae-steps / --classifier-steps / --unet-steps apply to --asset model, not {args.asset}",
                            "use --steps for the length of an asset's training")
    module_name, cfg_name, _ = ASSETS[args.asset]
    module = importlib.import_module(f"mobilesd.tiny.{module_name}")
    cfg_cls = getattr(module, cfg_name)
    changes = {"seed": args.seed, "threads": args.threads}
    if args.steps is not None:
        changes["steps"] = args.steps
    if args.checkpoint_every is not None:
        changes["checkpoint_every"] = args.checkpoint_every
    if args.eval_only:
        module.reevaluate(args.out, base=args.base)
        return 0
    cfg = dataclasses.replace(cfg_cls(), **changes)
    module.train(args.out, cfg, base=args.base, resume=args.resume, force=args.force, evaluate=not args.no_eval)
    return 0
