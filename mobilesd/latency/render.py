"""Render latency reports: one self-contained HTML page (plots inlined as PNG) and a Markdown summary."""

from __future__ import annotations

import base64
import html
import io
import textwrap

from mobilesd.latency.schema import end_to_end, now_iso, report_label
from mobilesd.latency.verdict import MISS, NOT_COMPARABLE, PASS, SYNTHETIC, target_of, verdict

COLORS = {"text_encoder": "#4C72B0", "unet": "#DD8452", "vae_decoder": "#55A868", "other": "#B0B0B0"}
DPI = 110  # figures are drawn and saved at this dpi: artist extents are PNG pixels (the Chromium test uses them)
CSS_CLASS = {PASS: "pass", MISS: "miss", NOT_COMPARABLE: "nc", SYNTHETIC: "synthetic"}


def _stage(report: dict, name: str) -> float | None:
    st = report["stages"].get(name)
    return float(st["median_s"]) if st else None


def unet_total(report: dict) -> float | None:
    """Seconds spent in the UNet per generation: the step timeline if given, else steps x median step."""
    if report.get("steps"):
        return sum(s["seconds"] for s in report["steps"])
    step = _stage(report, "unet_step")
    if step is None:
        chunks = [v["median_s"] for k, v in report["stages"].items() if k.startswith("unet_chunk_")]
        step = sum(chunks) if chunks else None
    return None if step is None else step * report["settings"]["steps"]


# ------------------------------------------------------------------------------------------ plots

def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _figure(height_in: float):
    # constrained layout keeps tick labels and the outside legend inside the figure without
    # bbox_inches="tight", so the saved PNG has exactly the figure's pixels
    return _plt().subplots(figsize=(9, height_in), dpi=DPI, layout="constrained")


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _png(fig) -> str:
    data = png_bytes(fig)
    _plt().close(fig)
    return base64.b64encode(data).decode("ascii")


def _legend_below(fig, handles: list, ncols: int | None = None):
    """One legend under the axes, outside them: it can never cover bars or lines. One entry per label."""
    uniq: dict = {}
    for h in handles:
        uniq.setdefault(h.get_label(), h)
    if not uniq:
        return None
    return fig.legend(list(uniq.values()), list(uniq.keys()), loc="outside lower center", fontsize=8,
                      ncols=ncols or min(len(uniq), 4))


def _labels(reports: list[dict]) -> list[str]:
    labels = [report_label(r) for r in reports]
    seen: dict[str, int] = {}
    out = []
    for lab in labels:  # identical labels would merge bars
        seen[lab] = seen.get(lab, 0) + 1
        out.append(lab if labels.count(lab) == 1 else f"{lab} #{seen[lab]}")
    return out


def stage_bars_figure(reports: list[dict]):
    """Per-stage stacked bars, one row per run, with the target line; the legend sits below the axes."""
    from matplotlib.patches import Patch

    labels = _labels(reports)
    fig, ax = _figure(0.6 * len(reports) + 2.2)
    drawn: set[str] = set()
    for i, r in enumerate(reports):
        left = 0.0
        parts = [("text_encoder", _stage(r, "text_encoder")), ("unet", unet_total(r)),
                 ("vae_decoder", _stage(r, "vae_decoder"))]
        known = sum(v for _, v in parts if v)
        parts.append(("other", max(end_to_end(r) - known, 0.0)))
        for name, v in parts:
            if v:
                ax.barh(i, v, left=left, color=COLORS[name], edgecolor="white",
                        hatch="//" if r["kind"] == "estimate" else None)
                drawn.add(name)
                left += v
        ax.text(left, i, f" {end_to_end(r):.2f} s", va="center", fontsize=8)
    target = target_of(reports[0])
    line = ax.axvline(target, color="red", linestyle="--", linewidth=1.5, label=f"{target:g} s target")
    ax.set_yticks(range(len(reports)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds per image (end to end; UNet = all steps; hatched = estimate)")
    ax.set_title("Per-stage latency per device / runtime")
    ax.set_xlim(0, max(max(end_to_end(r) for r in reports), target) * 1.18)
    # plain colour patches: hatching (estimates) is explained in the axis label
    _legend_below(fig, [line] + [Patch(facecolor=c, label=n) for n, c in COLORS.items() if n in drawn], ncols=5)
    return fig


def plot_stage_bars(reports: list[dict]) -> str:
    return _png(stage_bars_figure(reports))


def plot_step_timeline(reports: list[dict]) -> str:
    fig, ax = _figure(3.9)
    drawn = 0
    for lab, r in zip(_labels(reports), reports):
        if r.get("steps"):
            xs = [s["index"] for s in r["steps"]]
            ys = [s["seconds"] for s in r["steps"]]
        elif _stage(r, "unet_step") is not None:
            xs = list(range(r["settings"]["steps"]))
            ys = [_stage(r, "unet_step")] * len(xs)
        else:
            continue
        style = "--" if r["kind"] == "estimate" else "-"
        ax.plot(xs, ys, style, marker="o" if len(xs) <= 60 else None, markersize=3, label=lab)
        drawn += 1
    if not drawn:
        ax.text(0.5, 0.5, "no per-step data in these reports", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("denoising step")
    ax.set_ylabel("seconds (CFG included)")
    ax.set_title("Per-step timeline (dashed = estimate)")
    ax.set_ylim(bottom=0)
    _legend_below(fig, ax.get_legend_handles_labels()[0], ncols=2)
    return _png(fig)


def plot_estimate_vs_measured(reports: list[dict]) -> str:
    """End-to-end per device: estimate and measurement side by side, with the target line."""
    groups: dict[str, dict[str, list[tuple[str, float]]]] = {}
    for lab, r in zip(_labels(reports), reports):
        dev = r["device"].get("device_key") or r["device"]["name"]
        kind = SYNTHETIC if r.get("synthetic") else r["kind"]
        groups.setdefault(dev, {"estimate": [], "measurement": [], SYNTHETIC: []})[kind].append((lab, end_to_end(r)))
    fig, ax = _figure(4.2)
    x = 0
    ticks, names = [], []
    styles = (("estimate", "#8172B3", "//"), ("measurement", "#C44E52", None), (SYNTHETIC, "#B0B0B0", "xx"))
    for dev, g in groups.items():
        start = x
        for kind, color, hatch in styles:
            for lab, v in g[kind]:
                ax.bar(x, v, color=color, hatch=hatch, edgecolor="white", label=kind)
                ax.text(x, v, f"{v:.1f}", ha="center", va="bottom", fontsize=7)
                x += 1
        ticks.append((start + x - 1) / 2)
        names.append(textwrap.fill(dev, 24))  # host CPU names are long
        x += 0.8
    target = target_of(reports[0])
    ax.axhline(target, color="red", linestyle="--", linewidth=1.5, label=f"{target:g} s target")
    ax.set_xticks(ticks, names, fontsize=8)
    ax.set_ylabel("end-to-end seconds")
    ax.set_title("Estimate vs measured, per device")
    _legend_below(fig, ax.get_legend_handles_labels()[0])
    return _png(fig)


# ------------------------------------------------------------------------------------------ text

def _fmt(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}" if v >= 0.1 or v == 0 else f"{v:.2g}"


def summary_rows(reports: list[dict]) -> list[list[str]]:
    rows = []
    for lab, r in zip(_labels(reports), reports):
        s, rt = r["settings"], r["runtime"]
        rows.append([
            lab, SYNTHETIC if r.get("synthetic") else r["kind"], r["measured_by"]["kind"], r["device"]["name"],
            rt["name"] + (f"/{rt['delegate']}" if rt.get("delegate") else ""),
            f"{s['width']}x{s['height']}", str(s["steps"]), s["cfg_mode"],
            _fmt(_stage(r, "load"), 2), _fmt(_stage(r, "text_encoder")), _fmt(_stage(r, "unet_step")),
            _fmt(_stage(r, "vae_decoder")), _fmt(end_to_end(r), 2), verdict(r).text,
        ])
    return rows


HEADER = ["run", "kind", "by", "device", "runtime", "size", "steps", "CFG", "load s", "text enc s",
          "UNet step s", "decoder s", "end-to-end s", "verdict"]


def render_markdown(reports: list[dict]) -> str:
    lines = [f"# Latency report ({len(reports)} runs, target {target_of(reports[0]):g} s end to end, 512x512 on a phone)",
             "", "PASS / MISS only for phone runs at 512x512; host and desktop runs and other sizes are "
             "\"not comparable\", hand-made examples \"synthetic example\".", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in summary_rows(reports):
        lines.append("| " + " | ".join(c.replace("|", "/") for c in row) + " |")
    lines.append("")
    for lab, r in zip(_labels(reports), reports):
        if r["kind"] == "estimate":
            est = r["estimate"]
            lines.append(f"- {lab}: efficiency {est['efficiency']:.3f}, source {est.get('source', '?')}")
    return "\n".join(lines) + "\n"


def _stage_table(r: dict) -> str:
    order = ["load", "text_encoder", "unet_step"] + sorted(
        (k for k in r["stages"] if k.startswith("unet_chunk_")), key=lambda k: int(k.rsplit("_", 1)[1])) + [
        "vae_decoder", "end_to_end"]
    rows = []
    for name in order:
        st = r["stages"].get(name)
        if not st:
            continue
        n = len(st.get("samples_s", []))
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in (
            name, _fmt(st["median_s"], 4), _fmt(st.get("min_s"), 4), _fmt(st.get("max_s"), 4),
            _fmt(st.get("stdev_s"), 4), n or "-", st.get("calls_per_run", 1))) + "</tr>")
    return ("<table><tr><th>stage</th><th>median s</th><th>min s</th><th>max s</th><th>stdev s</th>"
            "<th>samples</th><th>per run</th></tr>" + "".join(rows) + "</table>")


def _kv(d: dict) -> str:
    return ", ".join(f"{html.escape(str(k))}: <b>{html.escape(str(v))}</b>" for k, v in d.items() if v not in (None, ""))


def render_html(reports: list[dict], sources: list[str] | None = None) -> str:
    e = html.escape
    plots = [("Per-stage latency", plot_stage_bars(reports)),
             ("Per-step timeline", plot_step_timeline(reports)),
             ("Estimate vs measured", plot_estimate_vs_measured(reports))]
    rows = "".join(
        f"<tr class='{CSS_CLASS[verdict(r).status]}'>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>"
        for r, row in zip(reports, summary_rows(reports)))
    details = []
    for i, (lab, r) in enumerate(zip(_labels(reports), reports)):
        v = verdict(r)
        extra = ""
        if r["kind"] == "estimate":
            est = r["estimate"]
            extra = ("<h4>Assumptions</h4><ul>" + "".join(f"<li>{e(a)}</li>" for a in est["assumptions"]) + "</ul>")
            if est.get("calibration"):
                extra += ("<h4>Calibration against published figures</h4><table><tr><th>figure</th><th>device</th>"
                          "<th>stage</th><th>published s</th><th>model s</th><th>error</th><th>leave-one-out</th></tr>"
                          + "".join(f"<tr><td>{e(c['id'])}</td><td>{e(c['device'])}</td><td>{e(c['stage'])}</td>"
                                    f"<td>{c['seconds']:.3f}</td><td>{c['estimated_s']:.3f}</td><td>{c['error']:+.0%}</td>"
                                    f"<td>{'-' if c.get('loo_error') is None else format(c['loo_error'], '+.0%')}</td></tr>"
                                    for c in est["calibration"]) + "</table>")
        mem = r.get("memory") or {}
        details.append(f"""
<section class="run" id="run-{i}">
  <h3>{e(lab)} <span class="{CSS_CLASS[v.status]}">{e(v.status)}</span></h3>
  <p class="verdict">{e(v.text)}</p>
  <p>measured by: {_kv(r['measured_by'])}<br>device: {_kv(r['device'])}<br>runtime: {_kv(r['runtime'])}<br>
  bundle: {_kv(r['bundle'])}<br>settings: {_kv(r['settings'])}<br>protocol: {_kv(r['protocol'])}
  {'<br>memory: ' + _kv(mem) if mem else ''}{'<br>source file: ' + e(sources[i]) if sources else ''}</p>
  {_stage_table(r)}
  {extra}
  {'<p class="notes">' + e(r['notes']) + '</p>' if r.get('notes') else ''}
</section>""")
    imgs = "".join(f"<figure><img alt='{e(t)}' src='data:image/png;base64,{b}'><figcaption>{e(t)}</figcaption></figure>"
                   for t, b in plots)
    target = target_of(reports[0])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mobilesd latency report</title>
<style>
body {{ font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 2em; color: #222; max-width: 1200px; }}
table {{ border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1em; }}
th, td {{ border: 1px solid #ccc; padding: 3px 6px; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; }}
tr.pass td:last-child, span.pass {{ color: #1a7f37; font-weight: 600; }}
tr.miss td:last-child, span.miss {{ color: #cf222e; font-weight: 600; }}
tr.nc td:last-child, span.nc {{ color: #57606a; font-weight: 600; }}
tr.synthetic td, span.synthetic {{ color: #8250df; font-style: italic; }}
figure {{ margin: 1em 0; }} figure img {{ max-width: 100%; border: 1px solid #eee; }}
section.run {{ border-top: 1px solid #ddd; margin-top: 1.5em; }}
.notes {{ color: #555; font-style: italic; }}
</style></head>
<body>
<h1>Latency report</h1>
<p>{len(reports)} run(s); target: <b>{target:g} s</b> end to end for a 512x512 image on a phone. Runs that are not
(a host, a desktop build of an app, another image size) are marked <i>not comparable</i>; hand-made examples are
marked <i>synthetic example</i>; neither gets PASS or MISS. Generated {e(now_iso())} by mobilesd from reports in
the latency-report schema (docs/latency-report.md).</p>
<h2>Summary</h2>
<table><tr>{''.join(f'<th>{e(h)}</th>' for h in HEADER)}</tr>{rows}</table>
<h2>Plots</h2>
{imgs}
<h2>Runs</h2>
{''.join(details)}
</body></html>
"""
