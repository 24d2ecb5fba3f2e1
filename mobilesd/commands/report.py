"""`mobilesd report`: render latency reports (JSON) into one HTML page and a Markdown summary."""

from __future__ import annotations

import argparse
from pathlib import Path

from mobilesd.errors import MobileSDError

NAME = "report"
HELP = "render latency reports and estimate tables (JSON) into HTML and Markdown"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("reports", nargs="+", type=Path,
                   help="latency report JSON files (bench, estimate, apps) and estimate tables "
                        "(benchmarks/estimate_fast_path.py)")
    p.add_argument("--out", type=Path, default=None, help="write a self-contained HTML report here")
    p.add_argument("--markdown", type=Path, default=None, help="also write the Markdown summary to this file")


def run(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")  # no display needed; plots are embedded as PNG

    from mobilesd.latency.render import render_html, render_markdown
    from mobilesd.latency.schema import load_report, write_text_atomic
    from mobilesd.latency.table import render_table_html, render_table_markdown, render_table_section

    if args.out is not None and args.out.suffix.lower() not in (".html", ".htm"):
        raise MobileSDError(f"--out {args.out} is not an .html file", "use e.g. --out report.html")
    reports, tables = [], []  # validates every file before writing anything
    for p in args.reports:
        table = _load_table(p)
        if table is not None:
            tables.append((p, table))
        else:
            reports.append((p, load_report(p)))
    parts = []
    if reports:
        parts.append(render_markdown([r for _, r in reports]))
    parts += [render_table_markdown(t) for _, t in tables]
    md = "\n".join(parts)
    print(md)
    if args.out is not None:
        if reports:
            page = render_html([r for _, r in reports], [str(p) for p, _ in reports])
            sections = "".join(render_table_section(t, str(p)) for p, t in tables)
            page = page.replace("</body></html>", sections + "\n</body></html>") if sections else page
        else:
            page = render_table_html([t for _, t in tables], [str(p) for p, _ in tables])
        print(f"wrote {write_text_atomic(args.out, page)}")
    if args.markdown is not None:
        print(f"wrote {write_text_atomic(args.markdown, md)}")
    return 0


def _load_table(path: Path):
    """The estimate table in ``path`` (benchmarks/estimate_fast_path.py), validated; None for any other file
    (latency reports, and files that are not JSON: load_report names their problem)."""
    import json

    from mobilesd.latency.table import is_table, validate_table

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return validate_table(data, str(path)) if is_table(data) else None
