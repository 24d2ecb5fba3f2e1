"""`mobilesd app android|ios|web`: run a bundle through an app client's own pipeline on this machine."""

from __future__ import annotations

import importlib

from mobilesd.apps import CLIENTS

NAME = "app"
HELP = "run a bundle through the Android (JVM), iOS (Swift) or browser client on this machine"


def add_common_arguments(p) -> None:
    """The flags every client takes, named as in `mobilesd generate`."""
    p.add_argument("--bundle", required=True, help="bundle folder (mobilesd export)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative-prompt", default=None, help="default: the manifest's negative_prompt_default")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=None, help="default: the manifest's default_guidance")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scheduler", default=None, help="dpm | euler | ddim | lcm (default: the manifest's)")
    p.add_argument("--out", default="image.png", help="PNG to write")
    p.add_argument("--report", default=None, help="also run the benchmark protocol and write a latency report")
    p.add_argument("--warmup", type=int, default=1, help="benchmark warm-up runs (with --report)")
    p.add_argument("--repeats", type=int, default=3, help="benchmark measured runs (with --report)")


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="client", metavar="CLIENT", required=True)
    for name, module in CLIENTS.items():
        try:
            mod = importlib.import_module(f"mobilesd.apps.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"mobilesd.apps.{module}":
                continue   # a client not built yet
            raise
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        add_common_arguments(p)
        mod.add_arguments(p)
        p.set_defaults(_client=mod)


def run(args) -> int:
    return int(args._client.run(args) or 0)
