"""`mobilesd bench`: per-stage latency of a bundle on this machine, one or several runtimes side by side."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mobilesd.errors import MobileSDError

NAME = "bench"
HELP = "measure per-stage latency of a bundle on this machine"
# the host runtimes (mobilesd.pipeline.RUNTIMES): a bundle's graphs run on the one of their format
# (FORMAT_RUNTIME: tflite, onnx, coreml-mil = Core ML packages through the MIL interpreter); torch runs its
# source model
RUNTIMES = ("tflite", "onnx", "coreml-mil", "torch")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", type=Path, required=True, help="bundle folder written by `mobilesd export`")
    p.add_argument("--runtime", action="append", default=None,
                   help="tflite | onnx | coreml-mil | torch; repeat or comma-separate for side-by-side "
                        "(default: the runtime of the bundle's graphs)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the runtime (default: all cores)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs (default 3)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=7.5, help="CFG scale; <= 1 runs without CFG")
    p.add_argument("--scheduler", default="dpm")
    p.add_argument("--prompt", default="a photo of an astronaut riding a horse on mars")
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("bench-{runtime}.json"),
                   help="report path; {runtime} is replaced per runtime (default bench-{runtime}.json)")
    p.add_argument("--no-progress", action="store_true")


def bundle_graph_runtime(bundle: Path) -> tuple[str, str]:
    """(graph format, the host runtime of it: tflite | onnx | coreml-mil) of a bundle, from its manifest."""
    import json

    from mobilesd.pipeline import FORMAT_RUNTIME

    try:
        manifest = json.loads((bundle / "manifest.json").read_text())
        fmt = manifest["graphs"][0]["format"]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise MobileSDError(f"{bundle}/manifest.json does not say what its graphs are ({type(exc).__name__}: {exc})",
                            "re-export the bundle with `mobilesd export`") from exc
    if fmt not in FORMAT_RUNTIME:
        raise MobileSDError(f"bundle {bundle} holds {fmt} graphs, which no host runtime runs",
                            f"bench a bundle of {', '.join(FORMAT_RUNTIME)} graphs, or --runtime torch")
    return fmt, FORMAT_RUNTIME[fmt]


def parse_runtimes(values: list[str] | None, bundle: Path) -> list[str]:
    """The runtimes to bench, each checked against the bundle before any runs: its graphs' runtime or torch."""
    fmt, graph_runtime = bundle_graph_runtime(bundle)
    if not values:
        return [graph_runtime]
    out: list[str] = []
    for v in values:
        for name in v.split(","):
            name = name.strip().lower()
            if name not in RUNTIMES:
                raise MobileSDError(f"unknown runtime '{name}'", f"use one of {', '.join(RUNTIMES)}")
            if name not in ("torch", graph_runtime):
                raise MobileSDError(f"bundle {bundle} holds {fmt} graphs; it cannot run on --runtime {name}",
                                    f"use --runtime {graph_runtime} or torch, or bench a bundle exported for {name}")
            if name not in out:
                out.append(name)
    return out


def out_path(template: Path, runtime: str, many: bool) -> Path:
    s = str(template)
    if "{runtime}" in s:
        return Path(s.replace("{runtime}", runtime))
    return template.with_name(f"{template.stem}-{runtime}{template.suffix}") if many else template


def print_results(reports: list[dict], console) -> None:
    from rich.table import Table

    from mobilesd.latency.bench import ratio_table

    t = Table(title="host latency: median seconds (min - max) per stage")
    t.add_column("stage")
    for r in reports:
        t.add_column(r["runtime"]["name"], justify="right")
    if len(reports) > 1:
        for r in reports[1:]:
            t.add_column(f"{r['runtime']['name']} / {reports[0]['runtime']['name']}", justify="right")
    for name, med, ratios in ratio_table(reports):
        cells = []
        for r, m in zip(reports, med):
            st = r["stages"].get(name)
            cells.append("-" if m is None else f"{m:.4f} ({st.get('min_s', m):.4f} - {st.get('max_s', m):.4f})")
        cells += ["-" if x is None else f"{x:.2f}x" for x in ratios[1:]]
        t.add_row(name, *cells)
    console.print(t)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from mobilesd.latency.bench import bench_runtime
    from mobilesd.latency.schema import write_report

    if args.threads is not None and args.threads < 1:
        raise MobileSDError(f"--threads {args.threads} is not a positive thread count", "use e.g. --threads 4")
    if not (args.bundle / "manifest.json").is_file():
        raise MobileSDError(f"{args.bundle} is not a bundle (no manifest.json)", "pass a folder written by `mobilesd export`")
    runtimes = parse_runtimes(args.runtime, args.bundle)
    console = Console(width=None if sys.stdout.isatty() else 160)
    reports = []
    for rt in runtimes:  # all in this process: same machine state, ratios comparable
        reports.append(bench_runtime(args.bundle, rt, threads=args.threads, warmup=args.warmup, repeats=args.repeats,
                                     steps=args.steps, guidance=args.guidance, scheduler=args.scheduler,
                                     prompt=args.prompt, negative_prompt=args.negative_prompt, seed=args.seed,
                                     progress=not args.no_progress))
    print_results(reports, console)
    for rt, rep in zip(runtimes, reports):
        path = write_report(out_path(args.out, rt, len(runtimes) > 1), rep)
        console.print(f"wrote {path}")
    return 0
