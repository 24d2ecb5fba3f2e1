"""The `mobilesd` command line.

Each sub-command lives in its own module under ``mobilesd/commands/`` and exposes
``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``. Modules are
imported lazily so `mobilesd --help` stays fast and one broken optional dependency
does not take down every command.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
from pathlib import Path

from mobilesd.errors import MobileSDError

# sub-command name -> module under mobilesd.commands (order = order in --help)
COMMANDS = {
    "export": "export",
    "generate": "generate",
    "quantize": "quantize",
    "eval": "evaluate",
    "train-tiny": "train_tiny",
    "bench": "bench",
    "estimate": "estimate",
    "report": "report",
    "inspect": "inspect",
    "app": "app",
    "serve": "serve",
}

HELP = {
    "export": "convert a Stable Diffusion model into a verified bundle (android | ios | onnx)",
    "generate": "run a bundle on this machine (the reference the apps must match)",
    "quantize": "quantize a model (PTQ / TDQ / EfficientDM) into a quantized-model folder",
    "eval": "quality metrics (prompt accuracy, FID-style distance, fidelity) of a model or bundle",
    "train-tiny": "train the small digits text-to-image model shipped in assets/",
    "bench": "measure per-stage latency of a bundle on this machine",
    "estimate": "estimate per-stage latency of a bundle on a phone (roofline model)",
    "report": "render latency reports (JSON) into HTML and Markdown",
    "inspect": "validate a bundle (schema, checksums) and print its graphs, I/O and verification",
    "app": "run a bundle through the Android (JVM), iOS (Swift) or browser client on this machine",
    "serve": "serve the browser client (web_app/) and a bundle on localhost",
}


def _load(name: str):
    return importlib.import_module(f"mobilesd.commands.{COMMANDS[name]}")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mobilesd", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mobilesd {__import__('mobilesd').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        if only is not None and name != only:
            sub.add_parser(name, help=HELP[name], add_help=False)
            continue
        try:
            module = _load(name)
        except ModuleNotFoundError as exc:  # a command not built yet, or an optional dependency missing
            if exc.name and exc.name.startswith("mobilesd.commands"):
                continue
            raise
        p = sub.add_parser(name, help=HELP[name], description=HELP[name])
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def _configure_logging(quiet: bool) -> None:
    """The library logs through ``logging`` (diffusers style); the command line shows mobilesd's INFO lines."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[mobilesd] %(message)s"))
    log = logging.getLogger("mobilesd")
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Only import the module of the command being run.
    only = argv[0] if argv and argv[0] in COMMANDS else None
    command = only or "mobilesd"
    try:
        parser = build_parser(only)
        args = parser.parse_args(argv)
        if not getattr(args, "_module", None):
            parser.print_help()
            return 2 if args.command else 0
        _configure_logging(quiet=bool(getattr(args, "quiet", False)))
        return int(args._module.run(args) or 0)
    except MobileSDError as exc:
        print(f"mobilesd {command}: error: {exc.problem}", file=sys.stderr)
        if exc.fix:
            print(f"  fix: {exc.fix}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not a user error: a short message, the traceback in a file
        return _report_internal_error(command, argv, exc)


# set to 1 to also print an internal error's traceback on stderr (for developers)
TRACEBACK_ENV = "MOBILESD_TRACEBACK"


def _crash_dir() -> Path:
    """Where internal-error reports go: the cache folder (MOBILESD_CACHE, as mobilesd.loading.cache_dir; not
    imported from there, since that module imports torch, which may be what failed)."""
    return Path(os.environ.get("MOBILESD_CACHE", Path.home() / ".cache" / "mobilesd")) / "crash-reports"


def _report_internal_error(command: str, argv: list[str], exc: Exception) -> int:
    import datetime
    import platform
    import traceback

    text = "".join(traceback.format_exception(exc))
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    body = (f"mobilesd {__import__('mobilesd').__version__} internal error\n"
            f"command line: mobilesd {' '.join(argv)}\n"
            f"python {platform.python_version()} on {platform.platform()}\n\n{text}")
    where = None
    for folder in (_crash_dir(), Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f"{command}-{stamp}-", suffix=".txt", dir=folder)
            with os.fdopen(fd, "w") as f:
                f.write(body)
            where = name
            break
        except OSError:
            continue
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    print(f"mobilesd {command}: internal error: {type(exc).__name__}" + (f": {first}" if first else ""),
          file=sys.stderr)
    if where:
        print(f"  the full traceback is in {where}", file=sys.stderr)
    if os.environ.get(TRACEBACK_ENV) == "1" or not where:
        print(text, file=sys.stderr, end="")
    print("  this is a bug in mobilesd, not in your input: please report it, with that file "
          "and the command line", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
