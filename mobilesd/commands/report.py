"""`mobilesd report`: render latency reports (JSON) into one HTML page and a Markdown summary."""

from __future__ import annotations

import argparse
from pathlib import Path

from mobilesd.errors import MobileSDError

NAME = "report"
HELP = "render latency reports (JSON) into HTML and Markdown"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("reports", nargs="+", type=Path, help="latency report JSON files (bench, estimate, apps)")
    p.add_argument("--out", type=Path, default=None, help="write a self-contained HTML report here")
    p.add_argument("--markdown", type=Path, default=None, help="also write the Markdown summary to this file")


def run(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")  # no display needed; plots are embedded as PNG

    from mobilesd.latency.render import render_html, render_markdown
    from mobilesd.latency.schema import load_report, write_text_atomic

    if args.out is not None and args.out.suffix.lower() not in (".html", ".htm"):
        raise MobileSDError(f"--out {args.out} is not an .html file", "use e.g. --out report.html")
    reports = [load_report(p) for p in args.reports]  # validates every report before writing anything
    md = render_markdown(reports)
    print(md)
    if args.out is not None:
        path = write_text_atomic(args.out, render_html(reports, [str(p) for p in args.reports]))
        print(f"wrote {path}")
    if args.markdown is not None:
        print(f"wrote {write_text_atomic(args.markdown, md)}")
    return 0
