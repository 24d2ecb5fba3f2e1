"""`mobilesd train-tiny`: train the small digits text-to-image model (the default --model of every command)."""

from __future__ import annotations

import argparse

NAME = "train-tiny"
HELP = "train the small digits text-to-image model shipped in assets/"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mobilesd.tiny.train import TrainConfig

    d = TrainConfig()
    parser.add_argument("--out", required=True, help="output folder (diffusers layout); built in OUT.partial/ "
                        "and renamed when complete")
    parser.add_argument("--seed", type=int, default=d.seed, help="training seed (default %(default)s)")
    parser.add_argument("--threads", type=int, default=d.threads,
                        help="torch CPU threads; weights are bit-identical only for the same count "
                             "(default %(default)s)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from OUT.partial/")
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--no-eval", action="store_true", help="skip the evaluation and the model card")
    g = parser.add_argument_group("training length (defaults: the shipped asset)")
    g.add_argument("--vae-steps", type=int, default=d.vae_steps)
    g.add_argument("--classifier-steps", type=int, default=d.clf_steps)
    g.add_argument("--unet-steps", type=int, default=d.unet_steps)
    g.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                   help="text+UNet checkpoint interval in steps (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    from mobilesd.errors import MobileSDError
    from mobilesd.tiny.train import TrainConfig, train

    if min(args.vae_steps, args.classifier_steps, args.unet_steps, args.checkpoint_every) < 1:
        raise MobileSDError("step counts must be positive", "pass --vae-steps/--classifier-steps/--unet-steps >= 1")
    cfg = TrainConfig(seed=args.seed, threads=args.threads, vae_steps=args.vae_steps, clf_steps=args.classifier_steps,
                      unet_steps=args.unet_steps, checkpoint_every=args.checkpoint_every)
    train(args.out, cfg, resume=args.resume, force=args.force, evaluate=not args.no_eval)
    return 0
