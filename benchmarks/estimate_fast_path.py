"""Which configurations reach 7 s: SD1.5 at 512x512 on every phone of the device table (issue 14, part 6).

For {20 steps CFG, 20 steps CFG int8, 8 steps CFG, 4 steps no CFG, 4 steps no CFG + tiny decoder, 1 step no CFG
+ tiny decoder} x {full decoder, tiny decoder} (de-duplicated: "4 steps no CFG" with the tiny decoder *is*
"4 steps no CFG + tiny decoder"), the per-stage roofline estimate of `mobilesd estimate`, its leave-one-out
error for that device and where it lies against the 7 s line. Every row is an estimate: no app has reported a
phone measurement yet (pass one with --app-report and it is added as a row of kind 'measurement').

    .venv/bin/python benchmarks/estimate_fast_path.py [--device KEY ...] [--app-report R.json ...]
    mobilesd report benchmarks/results/estimate_fast_path.json --out table.html

Prints the table and writes benchmarks/results/estimate_fast_path.json (format mobilesd-estimate-table/1,
rendered by `mobilesd report`). Analytic op costs only (PyTorch meta device): no export, no weights, ~1 minute.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULTS = REPO / "benchmarks" / "results" / "estimate_fast_path.json"


def main(argv: list[str] | None = None) -> int:
    from mobilesd import __version__
    from mobilesd.latency.roofline import find_device
    from mobilesd.latency.schema import load_report
    from mobilesd.latency.table import build_fast_path_table, render_table_markdown, write_table

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", action="append", default=None,
                    help="device key or alias (repeatable; default: every phone of devices.json)")
    ap.add_argument("--app-report", action="append", type=Path, default=[],
                    help="a measured latency report from an app, added as a 'measurement' row (repeatable)")
    ap.add_argument("--out", type=Path, default=RESULTS, help=f"JSON to write (default {RESULTS.relative_to(REPO)})")
    args = ap.parse_args(argv)

    keys = [find_device(d)[0] for d in args.device] if args.device else None
    apps = [load_report(p) for p in args.app_report]
    doc = build_fast_path_table(keys, app_reports=apps,
                                tool=f"mobilesd {__version__} benchmarks/estimate_fast_path.py")
    sys.stdout.write(render_table_markdown(doc))
    path = write_table(args.out, doc)
    sys.stdout.write(f"\nwrote {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
