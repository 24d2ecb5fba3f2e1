"""The estimate table: which configurations reach the target, per device (`benchmarks/estimate_fast_path.py`).

One JSON document (format ``mobilesd-estimate-table/1``) with one row per (device, configuration): the
per-stage estimate of `mobilesd estimate`, its end-to-end total, the leave-one-out error of the calibration
that applies to that device, and where it lies against the target. `mobilesd report` renders it (Markdown
and HTML, with the target line). Every row says whether it is an estimate or a measurement: rows built here
are estimates; rows taken from app reports (``measurement_row``) are measurements.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mobilesd.errors import MobileSDError
from mobilesd.latency.schema import TARGET_SECONDS

TABLE_FORMAT = "mobilesd-estimate-table/1"
ARCH_NAMES = {"sd15": "SD1.5", "sd21": "SD2.1"}
ESTIMATE_STATEMENT = ("Every row of kind 'estimate' is a roofline estimate (mobilesd estimate, calibrated on "
                      "published figures), not a measurement.")

_NUM = {"type": "number", "minimum": 0}
_ROW = {
    "type": "object",
    "required": ["kind", "device_key", "device", "config", "steps", "cfg", "decoder", "precision",
                 "end_to_end_s", "under_target"],
    "properties": {
        "kind": {"enum": ["estimate", "measurement"]},
        "device_key": {"type": "string"}, "device": {"type": "string"},
        "config": {"type": "string"}, "named": {"type": ["string", "null"]},
        "steps": {"type": "integer", "minimum": 1}, "cfg": {"enum": ["batch", "sequential", "none"]},
        "decoder": {"enum": ["full", "tiny", "unknown"]}, "precision": {"type": "string"},
        "text_encoder_s": {"type": ["number", "null"], "minimum": 0},
        "unet_step_s": {"type": ["number", "null"], "minimum": 0},
        "unet_s": {"type": ["number", "null"], "minimum": 0},
        "decoder_s": {"type": ["number", "null"], "minimum": 0},
        "end_to_end_s": _NUM, "weight_bytes": {"type": ["number", "null"], "minimum": 0},
        "loo_error": {"type": ["number", "null"]},
        "loo_kind": {"enum": ["device figure", "class mean", None]},
        "loo_source": {"type": ["string", "null"]},
        "under_target": {"type": "boolean"},
        "target_within_loo": {"type": ["boolean", "null"]},
        "source": {"type": "string"},
    },
}
TABLE_SCHEMA = {
    "type": "object",
    "required": ["format", "created", "target_s", "statement", "rows", "model", "width", "height"],
    "properties": {
        "format": {"const": TABLE_FORMAT},
        "created": {"type": "string"}, "tool": {"type": "string"}, "title": {"type": "string"},
        "statement": {"type": "string", "minLength": 1},
        "target_s": {"type": "number", "exclusiveMinimum": 0},
        "model": {"type": "string"}, "width": {"type": "integer"}, "height": {"type": "integer"},
        "fusion": {"type": "string"},
        "rows": {"type": "array", "items": _ROW, "minItems": 1},
        "decoders": {"type": "object"}, "devices": {"type": "array"}, "configurations": {"type": "array"},
        "notes": {"type": "array", "items": {"type": "string"}},
    },
}


def is_table(data: Any) -> bool:
    return isinstance(data, dict) and data.get("format") == TABLE_FORMAT


def validate_table(doc: Any, source: str = "estimate table") -> dict:
    import jsonschema

    errors = sorted(jsonschema.Draft202012Validator(TABLE_SCHEMA).iter_errors(doc), key=lambda e: list(map(str, e.path)))
    if errors:
        lines = [f"field '{'.'.join(map(str, e.path)) or '(top level)'}': {e.message}" for e in errors[:8]]
        raise MobileSDError(f"{source} is not a valid estimate table:\n  " + "\n  ".join(lines),
                            "regenerate it with benchmarks/estimate_fast_path.py (format described in "
                            "docs/latency-estimate.md)")
    for i, r in enumerate(doc["rows"]):
        if r["under_target"] != (r["end_to_end_s"] <= doc["target_s"]):
            raise MobileSDError(f"{source}: rows[{i}].under_target disagrees with its end_to_end_s",
                                "regenerate the table")
    return doc


def write_table(path: str | Path, doc: dict) -> Path:
    """Validate and write ``doc`` as strict JSON (no NaN or Infinity)."""
    from mobilesd.latency.schema import write_text_atomic

    validate_table(doc, "the table to write")
    return write_text_atomic(path, json.dumps(doc, indent=2, allow_nan=False) + "\n")


def loo_for_device(device_key: str, fusion: str) -> tuple[float | None, str | None, str | None]:
    """(error, kind, source) of the leave-one-out error that applies to an estimate for ``device_key``.

    Where a published figure was measured on this device (and used in the fit), its own held-out error
    (signed: positive = the estimate is slower than the published figure); otherwise the mean absolute
    leave-one-out error of the device's accelerator class (unsigned)."""
    from mobilesd.latency.roofline import calibrate, load_devices

    cal = calibrate(fusion)
    own = [f for f in cal["figures"] if f.get("device") == device_key and f.get("used") and "loo_error" in f]
    if own:
        f = own[0]
        return float(f["loo_error"]), "device figure", f"{f['id']} ({f['stage']}, published {f['seconds']:g} s)"
    acc = load_devices()[device_key]["accelerator"]
    c = cal["classes"].get(acc) or {}
    if c.get("mean_abs_loo_error") is None:
        return None, None, None
    return float(c["mean_abs_loo_error"]), "class mean", (f"mean |leave-one-out error| of the '{acc}' class over "
                                                           f"{len(c['figures'])} published figures")


def target_within_loo(seconds: float, loo: float | None, target: float) -> bool | None:
    """Whether the target lies inside the band the leave-one-out error allows around an estimate:
    truth in [est / (1 + m), est / (1 - m)] for m = |error| (m >= 1: no upper bound)."""
    if loo is None:
        return None
    m = abs(loo)
    lo = seconds / (1 + m)
    hi = seconds / (1 - m) if m < 1 else math.inf
    return lo <= target <= hi


def estimate_row(report: dict, config: str, named: str | None, decoder: str, fusion: str,
                 weight_bytes: float | None = None) -> dict:
    """A table row from one estimate report (`roofline.estimate_report`)."""
    from mobilesd.latency.render import unet_total

    st, s = report["stages"], report["settings"]
    key = report["estimate"]["device_key"]
    loo, loo_kind, loo_source = loo_for_device(key, fusion)
    target = float(report.get("target_s", TARGET_SECONDS))
    e2e = float(st["end_to_end"]["median_s"])
    return {
        "kind": "estimate", "device_key": key, "device": report["device"]["name"], "config": config, "named": named,
        "steps": s["steps"], "cfg": s["cfg_mode"], "decoder": decoder, "precision": report["runtime"]["precision"],
        "text_encoder_s": st.get("text_encoder", {}).get("median_s"), "unet_step_s": st["unet_step"]["median_s"],
        "unet_s": unet_total(report), "decoder_s": st.get("vae_decoder", {}).get("median_s"), "end_to_end_s": e2e,
        "weight_bytes": weight_bytes, "loo_error": loo, "loo_kind": loo_kind, "loo_source": loo_source,
        "under_target": e2e <= target, "target_within_loo": target_within_loo(e2e, loo, target),
        "source": report["estimate"].get("source", "roofline"),
    }


def measurement_row(report: dict, target: float) -> dict:
    """A table row from a measured latency report (an app's): kind 'measurement', no error band."""
    from mobilesd.latency.render import unet_total

    if report["kind"] != "measurement":
        raise MobileSDError("only measured reports can be added as measurement rows", "pass an app's report")
    if report.get("synthetic"):
        raise MobileSDError("a synthetic example (hand-made numbers) is not a measurement",
                            "pass a report an app wrote on a phone")
    st, s = report["stages"], report["settings"]
    e2e = float(st["end_to_end"]["median_s"])
    return {
        "kind": "measurement", "device_key": report["device"].get("device_key") or report["device"]["name"],
        "device": report["device"]["name"], "config": f"{s['steps']} steps, CFG {s['cfg_mode']} (measured)",
        "named": None, "steps": s["steps"], "cfg": s["cfg_mode"], "decoder": "unknown",
        "precision": report["runtime"].get("precision") or "unknown",
        "text_encoder_s": st.get("text_encoder", {}).get("median_s"),
        "unet_step_s": st.get("unet_step", {}).get("median_s"), "unet_s": unet_total(report),
        "decoder_s": st.get("vae_decoder", {}).get("median_s"), "end_to_end_s": e2e, "weight_bytes": None,
        "loo_error": None, "loo_kind": None, "loo_source": None, "under_target": e2e <= target,
        "target_within_loo": None, "source": f"{report['measured_by']['kind']}: {report['measured_by']['tool']}",
    }


# ------------------------------------------------------------------------------------------ the fast-path table

# Issue 14 part 6's configurations: (name, steps, CFG mode, weight bits, the decoder the name implies).
CONFIGURATIONS = (
    ("20 steps CFG", 20, "batch", 16, "full"),
    ("20 steps CFG int8", 20, "batch", 8, "full"),
    ("8 steps CFG", 8, "batch", 16, "full"),
    ("4 steps no CFG", 4, "none", 16, "full"),
    ("4 steps no CFG + tiny decoder", 4, "none", 16, "tiny"),
    ("1 step no CFG + tiny decoder", 1, "none", 16, "tiny"),
)


def _base_name(steps: int, cfg: str, bits: int) -> str:
    name = f"{steps} step{'s' if steps != 1 else ''} " + ("no CFG" if cfg == "none" else "CFG" if cfg == "batch"
                                                           else "CFG sequential")
    return name + ("" if bits == 16 else f" int{bits}")


def configuration_rows(configurations=CONFIGURATIONS) -> list[dict]:
    """Each configuration with each decoder, de-duplicated: one entry per (steps, CFG, bits, decoder), with the
    configuration name(s) of the issue it is (a name that already says "+ tiny decoder" is the tiny row)."""
    out: dict[tuple, dict] = {}
    for name, steps, cfg, bits, implied in configurations:
        for decoder in ("full", "tiny"):
            key = (steps, cfg, bits, decoder)
            entry = out.setdefault(key, {"config": _base_name(steps, cfg, bits), "steps": steps, "cfg": cfg,
                                         "weight_bits": bits, "decoder": decoder, "named": []})
            if decoder == implied:
                entry["named"].append(name)
    return list(out.values())


def phone_devices() -> list[str]:
    from mobilesd.latency.roofline import load_devices

    return [k for k, d in load_devices().items() if not d.get("calibration_only")]


def build_fast_path_table(device_keys: list[str] | None = None, arch: str = "sd15", width: int = 512,
                          height: int = 512, fusion: str | None = None, configurations=CONFIGURATIONS,
                          app_reports: list[dict] = (), tool: str = "mobilesd") -> dict:
    """The estimate table of issue 14 part 6: ``arch`` at ``width`` x ``height`` on each device (default: every
    phone of devices.json), for each configuration x {full, tiny decoder}, estimated exactly as
    `mobilesd estimate --model arch --steps N --cfg MODE --decoder D --weight-bits B` does."""
    from mobilesd.latency import roofline
    from mobilesd.latency.schema import now_iso

    fusion = fusion or roofline.DEFAULT_FUSION
    keys = list(device_keys) if device_keys else phone_devices()
    devices = roofline.load_devices()
    entries = configuration_rows(configurations)
    rows: list[dict] = []
    plans = {}
    for e in entries:
        plans[id(e)] = roofline.analytic_plan(arch, width, height, e["cfg"], weight_bytes=e["weight_bits"] / 8,
                                              decoder=e["decoder"])
    for key in keys:
        for e in entries:
            plan = plans[id(e)]
            precision = "fp16" if e["weight_bits"] == 16 else f"int{e['weight_bits']}"
            rep = roofline.estimate_report(
                plan, key, e["steps"], e["cfg"], width, height,
                {"id": f"analytic:{arch}", "manifest_sha256": None, "model": arch}, f"analytic:{arch}",
                fusion=fusion, precision=precision, decoder=e["decoder"],
                label=f"{devices[key]['name']} / {e['config']}, {e['decoder']} decoder / estimate")
            weights = sum(p.graph.weight_bytes for p in plan)
            row = estimate_row(rep, e["config"], " / ".join(e["named"]) or None, e["decoder"], fusion, weights)
            rows.append(row)
    rows += [measurement_row(r, TARGET_SECONDS) for r in app_reports]
    full = roofline.analytic_graph_cost(arch, "vae_decoder", height, width, 1)
    tiny = roofline.analytic_graph_cost(arch, "tiny_vae_decoder", height, width, 1)
    cal = roofline.calibrate(fusion)
    n_meas = sum(r["kind"] == "measurement" for r in rows)
    statement = ESTIMATE_STATEMENT + (" No app report exists yet: every row is an estimate." if not n_meas else
                                      f" {n_meas} row(s) of kind 'measurement' come from app reports.")
    dev_info = []
    for key in keys:
        loo, kind, src = loo_for_device(key, fusion)
        dev_info.append({"key": key, "name": devices[key]["name"], "accelerator": devices[key]["accelerator"],
                         "loo_error": loo, "loo_kind": kind, "loo_source": src})
    return {
        "format": TABLE_FORMAT,
        "created": now_iso(),
        "tool": tool,
        "title": f"Which configurations reach {TARGET_SECONDS:g} s: {ARCH_NAMES.get(arch, arch)} at "
                 f"{width}x{height}, estimates",
        "statement": statement,
        "target_s": TARGET_SECONDS,
        "model": arch, "width": width, "height": height, "fusion": fusion,
        "configurations": [{"name": n, "steps": s, "cfg": c, "weight_bits": b, "decoder": d}
                           for n, s, c, b, d in configurations],
        "devices": dev_info,
        "decoders": {
            "full": {"class": "AutoencoderKL decoder (+ post_quant_conv)", "flops": full.flops,
                     "weight_bytes": full.weight_bytes, "params": round(full.weight_bytes / 2)},
            "tiny": {"class": "AutoencoderTiny decoder (TAESD, diffusers default config)", "flops": tiny.flops,
                     "weight_bytes": tiny.weight_bytes, "params": round(tiny.weight_bytes / 2)},
            "flops_ratio": full.flops / tiny.flops, "weight_bytes_ratio": full.weight_bytes / tiny.weight_bytes,
        },
        "rows": rows,
        "notes": [
            f"estimates: the roofline of docs/latency-estimate.md, fusion '{fusion}', one efficiency per accelerator "
            "class (" + ", ".join(f"{a} {c['efficiency']:.3f}" for a, c in cal["classes"].items()) + "), "
            "op costs from the architecture on PyTorch's meta device; model load excluded",
            "leave-one-out error: a device with its own published figure in the fit shows that figure's held-out "
            "error (signed: + means the estimate is slower than the published time); the others show the mean "
            "|leave-one-out error| of their accelerator class. 'within error': the 7 s line lies in "
            "[total / (1 + |e|), total / (1 - |e|)]",
            "CFG: one batch-2 UNet call per step; no CFG: one batch-1 call (distilled models: LCM-LoRA, SD-Turbo)",
            "int8: weights read at 1 byte per call (a kernel reading int8 weights); the TFLite GPU delegate instead "
            "unpacks int8 weights to fp16 at load, which makes that row equal to the fp16 one. The UNet is "
            "compute-bound at 512x512, so int8 weights barely change the estimate either way",
            "tiny decoder: diffusers' AutoencoderTiny default config (SD 1.x/2.x TAESD), random weights (only "
            "shapes matter), in place of the full VAE decoder; same input and output",
            "weights: fp16 (or int8) bytes of all three graphs, about what the bundle's graph files weigh",
        ],
    }


# ------------------------------------------------------------------------------------------ text

TABLE_HEADER = ["device", "configuration", "kind", "decoder", "text enc s", "UNet s (all steps)", "decoder s",
                "total s", "leave-one-out error", "7 s line", "weights GB"]


def _s(v: float | None) -> str:
    return "-" if v is None else (f"{v:.2f}" if v >= 0.1 or v == 0 else f"{v:.3f}")


def _loo(r: dict) -> str:
    if r.get("loo_error") is None:
        return "-"
    if r["loo_kind"] == "device figure":
        return f"{r['loo_error']:+.0%} (own figure)"
    return f"±{r['loo_error']:.0%} (class)"


def _line(r: dict, target: float) -> str:
    word = f"under {target:g} s" if r["under_target"] else f"over {target:g} s"
    if r.get("target_within_loo"):
        word += " (within error)"
    return ("**" + word + "**") if r["under_target"] else word


def table_rows(doc: dict) -> list[list[str]]:
    t = float(doc["target_s"])
    return [[r["device"], r["config"] + (f" (= {r['named']})" if r.get("named") and r["named"] != r["config"] else ""),
             r["kind"], r["decoder"], _s(r.get("text_encoder_s")), _s(r.get("unet_s")), _s(r.get("decoder_s")),
             _s(r["end_to_end_s"]), _loo(r), _line(r, t),
             "-" if r.get("weight_bytes") is None else f"{r['weight_bytes'] / 1e9:.2f}"] for r in doc["rows"]]


def render_table_markdown(doc: dict) -> str:
    t = float(doc["target_s"])
    n_est = sum(r["kind"] == "estimate" for r in doc["rows"])
    lines = [f"# {doc.get('title') or 'Estimate table'}", "",
             f"**{n_est} of {len(doc['rows'])} rows are estimates, not measurements.** {doc['statement']}", "",
             f"Target line: {t:g} s end to end ({doc['width']}x{doc['height']}, {doc['model']}). "
             "'within error': the target lies inside the estimate's leave-one-out error band.", "",
             "| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
    for row in table_rows(doc):
        lines.append("| " + " | ".join(c.replace("|", "/") for c in row) + " |")
    dec = doc.get("decoders") or {}
    if dec.get("full") and dec.get("tiny"):
        f, k = dec["full"], dec["tiny"]
        lines += ["", f"Decoders at {doc['width']}x{doc['height']}: full {f['flops'] / 1e9:,.0f} GFLOP, "
                      f"{f['weight_bytes'] / 1e6:.1f} MB fp16 weights; tiny (TAESD) {k['flops'] / 1e9:,.0f} GFLOP, "
                      f"{k['weight_bytes'] / 1e6:.2f} MB ({f['flops'] / k['flops']:.1f}x fewer FLOPs, "
                      f"{f['weight_bytes'] / k['weight_bytes']:.0f}x smaller)."]
    for n in doc.get("notes") or []:
        lines.append(f"- {n}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ html

def table_figure(doc: dict):
    """Stacked bars per row (text encoder, UNet, decoder; hatched = estimate) with the target line."""
    from matplotlib.patches import Patch

    from mobilesd.latency.render import COLORS, _figure, _legend_below

    rows = doc["rows"]
    fig, ax = _figure(0.22 * len(rows) + 2.0)
    for i, r in enumerate(rows):
        left = 0.0
        for name, v in (("text_encoder", r.get("text_encoder_s")), ("unet", r.get("unet_s")),
                        ("vae_decoder", r.get("decoder_s"))):
            if v:
                ax.barh(i, v, left=left, color=COLORS[name], edgecolor="white",
                        hatch="//" if r["kind"] == "estimate" else None)
                left += v
        ax.text(max(left, r["end_to_end_s"]), i, f" {r['end_to_end_s']:.1f} s", va="center", fontsize=6)
    target = float(doc["target_s"])
    line = ax.axvline(target, color="red", linestyle="--", linewidth=1.5, label=f"{target:g} s target")
    labels = [f"{r['device']} | {r['config']}, {r['decoder']} dec." + (" (measured)" if r["kind"] != "estimate" else "")
              for r in rows]
    ax.set_yticks(range(len(rows)), labels, fontsize=6)
    ax.set_ylim(len(rows) - 0.5, -0.5)  # first row on top, no empty margin
    ax.set_xlabel("seconds per image, end to end (hatched = estimate, not a measurement)")
    ax.set_title(doc.get("title") or "Estimate table")
    ax.set_xlim(0, max(max(r["end_to_end_s"] for r in rows), target) * 1.15)
    _legend_below(fig, [line] + [Patch(facecolor=COLORS[n], label=n) for n in ("text_encoder", "unet", "vae_decoder")],
                  ncols=4)
    return fig


def render_table_section(doc: dict, source: str | None = None) -> str:
    import html

    from mobilesd.latency.render import _png

    e = html.escape
    t = float(doc["target_s"])
    n_est = sum(r["kind"] == "estimate" for r in doc["rows"])
    rows = "".join(
        f"<tr class='{'pass' if r['under_target'] else 'miss'} {r['kind']}'>"
        + "".join(f"<td>{e(c.replace('**', ''))}</td>" for c in cells) + "</tr>"
        for r, cells in zip(doc["rows"], table_rows(doc)))
    notes = "".join(f"<li>{e(n)}</li>" for n in doc.get("notes") or [])
    md = render_table_markdown(doc).split("\n")
    dec = next((ln for ln in md if ln.startswith("Decoders at")), "")
    return f"""
<section class="table" id="estimate-table">
<h2>{e(doc.get('title') or 'Estimate table')}</h2>
<p><b>{n_est} of {len(doc['rows'])} rows are estimates, not measurements.</b> {e(doc['statement'])}
Target line: <b>{t:g} s</b> end to end. {'Source file: ' + e(source) + '.' if source else ''}</p>
<figure><img alt="estimate table" src="data:image/png;base64,{_png(table_figure(doc))}">
<figcaption>per-stage estimate per device and configuration, with the {t:g} s line</figcaption></figure>
<table><tr>{''.join(f'<th>{e(h)}</th>' for h in TABLE_HEADER)}</tr>{rows}</table>
<p>{e(dec)}</p>
<ul>{notes}</ul>
</section>"""


def render_table_html(docs: list[dict], sources: list[str] | None = None) -> str:
    from mobilesd.latency.schema import now_iso

    body = "".join(render_table_section(d, (sources or [None] * len(docs))[i]) for i, d in enumerate(docs))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mobilesd estimate table</title>
<style>
body {{ font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 2em; color: #222; max-width: 1200px; }}
table {{ border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1em; }}
th, td {{ border: 1px solid #ccc; padding: 3px 6px; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; }}
tr.pass td:last-child {{ color: #1a7f37; font-weight: 600; }}
tr.miss td:last-child {{ color: #cf222e; }}
figure img {{ max-width: 100%; border: 1px solid #eee; }}
</style></head>
<body>
<h1>Estimate table</h1>
<p>Generated {now_iso()} by mobilesd from estimate tables (docs/latency-estimate.md).</p>
{body}
</body></html>
"""
