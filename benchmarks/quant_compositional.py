"""Quantization methods on the compositional digits model, with error bars: the table that tells them apart.

Rows: W8A8, W4A8, W4A4, W4A16 x {PTQ, TDQ (and its static-interval LSQ baseline), EfficientDM, EfficientDM +
L4Q, EfficientDM + GraLoRA, SVDQuant, SVDQuant + distillation}, plus FP and FP with a second seed set (the
noise floor). Columns: binding accuracy per attribute, overall and mean over attributes with 95% bootstrap intervals, the paired
difference to FP, FID-style distance vs real pictures and vs FP (noise floor: FP vs FP), PSNR vs FP, the
guidance-preservation ratio, bundle size (a real android export per weight format), quantize time, peak RSS.

    .venv/bin/python benchmarks/quant_compositional.py                 # everything (resumes where it stopped)
    .venv/bin/python benchmarks/quant_compositional.py --only W4A4     # rows whose label starts with W4A4
    .venv/bin/python benchmarks/quant_compositional.py --table-only    # rebuild the table from what is cached

Every step is cached under --work (quantized model + cost, generated images, guidance ratio, exports), so an
interrupted run resumes; delete a row's folder to redo it. Quantization runs `mobilesd quantize` in its own
process (wall time, peak RSS of its process tree); evaluation runs here on 1 thread.
Writes benchmarks/results/quant_compositional.json and docs/benchmarks/quant_compositional.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_MODEL = ROOT / "assets" / "tiny-compositional-sd"

# method label -> quantize flags (beyond --weights / --acts); None: not applicable at A16
METHODS = [
    ("PTQ", ["--method", "ptq", "--act-intervals", "static"]),
    ("LSQ static", ["--method", "tdq", "--act-intervals", "static"]),
    ("TDQ", ["--method", "tdq", "--act-intervals", "tdq"]),
    ("EfficientDM", ["--method", "efficientdm"]),
    ("EfficientDM + L4Q", ["--method", "efficientdm", "--learn-weight-scales"]),
    ("EfficientDM + GraLoRA", ["--method", "efficientdm", "--lora-blocks", "2"]),
    ("SVDQuant", ["--method", "svdquant"]),
    ("SVDQuant + distill", ["--method", "svdquant", "--distill"]),
]
BITS = [(8, 8), (4, 8), (4, 4), (4, 16)]
TRAINS_ACTS_ONLY = {"LSQ static", "TDQ"}   # nothing to train without quantized activations


def rows() -> list[dict]:
    out = []
    for w, a in BITS:
        for method, flags in METHODS:
            if a == 16 and method in TRAINS_ACTS_ONLY:
                continue
            label = f"W{w}A{a} {method}"
            out.append({"label": label, "weights": w, "acts": a, "method": method, "flags": flags,
                        "slug": label.lower().replace(" + ", "-").replace(" ", "-")})
    return out


def export_class(row: dict) -> str:
    """Rows whose android bundles have the same tensors (and so the same size): weight bits x branch or not."""
    return f"w{row['weights']}-{'svdquant' if row['method'].startswith('SVDQuant') else 'plain'}"


# ---------------------------------------------------------------- steps (each cached)

def run_quantize(row: dict, out: Path, args) -> dict:
    import psutil

    cmd = [sys.executable, "-m", "mobilesd", "quantize", "--model", args.model, "--weights", str(row["weights"]),
           "--acts", str(row["acts"]), *row["flags"], "--iterations", str(args.iterations), "--steps",
           str(args.steps), "--calib-prompts", str(args.calib_prompts), "--guidance", str(args.guidance),
           "--rank", str(args.rank), "--out", str(out), "--overwrite", "--quiet"]
    if (out.parent / "q.checkpoint").exists():
        cmd.append("--resume")   # a distillation interrupted with this benchmark: continue it
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    peak, stop = 0, threading.Event()

    def sample():
        nonlocal peak
        while not stop.is_set():
            try:
                p = psutil.Process(proc.pid)
                peak = max(peak, sum(q.memory_info().rss for q in [p] + p.children(recursive=True)))
            except psutil.Error:
                pass
            time.sleep(0.2)

    th = threading.Thread(target=sample, daemon=True)
    t0 = time.perf_counter()
    th.start()
    log, _ = proc.communicate()
    secs = time.perf_counter() - t0
    stop.set()
    th.join()
    if proc.returncode:
        raise SystemExit(f"quantize failed ({' '.join(cmd)}):\n{log[-3000:]}")
    return {"seconds": round(secs, 1), "peak_rss_bytes": peak, "command": " ".join(cmd[1:])}


def generate_images(pipe, settings, prompts, seeds) -> np.ndarray:
    from mobilesd.tiny.compositional_card import generate

    return generate(pipe, prompts, seeds, settings)


def export_bundle(q: Path, out: Path, args) -> dict:
    """A real android export of one quantized model: sizes, verification, GPU check, SVDQuant branch facts."""
    cmd = [sys.executable, "-m", "mobilesd", "export", "--target", "android", "--model", args.model,
           "--quantized", str(q), "--out", str(out), "--overwrite"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        return {"error": (proc.stderr or proc.stdout)[-2000:], "command": " ".join(cmd[1:])}
    m = json.loads((out / "manifest.json").read_text())
    files = [p for p in out.rglob("*") if p.is_file()]
    unet = [g for g in m["graphs"] if g["role"] == "unet"]
    return {"bundle_bytes": sum(p.stat().st_size for p in files), "seconds": round(time.perf_counter() - t0, 1),
            "unet_bytes": sum(g["size_bytes"] for g in unet),
            "graphs": {g["name"]: {"precision": g["precision"], "bytes": g["size_bytes"],
                                   "rel_l2": g["verification"]["rel_l2"],
                                   "gpu_fully_accelerated": g.get("gpu", {}).get("fully_accelerated"),
                                   "gpu_passed": g.get("gpu", {}).get("passed"),
                                   "integer_weights": g["meta"].get("integer_weights"),
                                   "svdquant": g["meta"].get("svdquant")} for g in m["graphs"]},
            "end_to_end_mean_abs": m["verification"]["end_to_end"]["mean_abs"], "command": " ".join(cmd[1:])}


# ---------------------------------------------------------------- table

def _ci(e, pct=True, digits=1) -> str:
    f = (lambda v: f"{100 * v:.{digits}f}") if pct else (lambda v: f"{v:.{digits}f}")
    return f"{f(e['value'])} [{f(e['ci'][0])}, {f(e['ci'][1])}]"


def paired_difference(a: np.ndarray, b: np.ndarray, prompt_index: np.ndarray, n_boot: int) -> dict:
    from mobilesd.tiny import compositional_metrics as cm

    d = a.astype(float) - b.astype(float)
    boots = cm.prompt_bootstrap(prompt_index, n_boot, seed=1)
    return {"value": round(float(d.mean()), 4), "ci": cm.interval([d[i].mean() for i in boots])}


def goals(results: dict, raw: dict, prompt_index: np.ndarray, n_boot: int) -> dict:
    """The issue's compass: best W4A4 within 3 points of FP and >= 10 points above W4A4 PTQ; TDQ at or above
    static (LSQ-trained) intervals at every activation width. Read off with paired intervals, on overall
    accuracy (all six attributes right: the issue's measure) and on mean attribute accuracy (the share right
    per image), which still moves where FP rarely gets all six."""
    per_image = {"overall": lambda c: c.all(1), "mean_attribute": lambda c: c.mean(1)}
    out = {}
    for metric, f in per_image.items():
        g = {}
        fp = f(raw["FP"])
        w4a4 = {k: v for k, v in results.items() if k.startswith("W4A4")}
        if w4a4:
            best = max(w4a4, key=lambda k: w4a4[k]["accuracy"][metric]["value"])
            vs_fp = paired_difference(f(raw[best]), fp, prompt_index, n_boot)
            g["w4a4_best"] = {"row": best, "vs_fp": vs_fp, "within_3_points": vs_fp["value"] >= -0.03}
            if "W4A4 PTQ" in raw:
                vs_ptq = paired_difference(f(raw[best]), f(raw["W4A4 PTQ"]), prompt_index, n_boot)
                g["w4a4_best"].update(vs_ptq=vs_ptq, at_least_10_above_ptq=vs_ptq["value"] >= 0.10)
        tdq = []
        for w, a in BITS:
            t, st = f"W{w}A{a} TDQ", f"W{w}A{a} LSQ static"
            if t in raw and st in raw:
                d = paired_difference(f(raw[t]), f(raw[st]), prompt_index, n_boot)
                tdq.append({"bits": f"W{w}A{a}", "tdq_minus_static": d,
                            "at_or_above": d["value"] >= 0 or d["ci"][0] <= 0 <= d["ci"][1]})
        g["tdq_vs_static"] = tdq
        out[metric] = g
    # the distance to FP's own images: where accuracy saturates or sits near chance, this still separates rows
    w4a4 = {k: v for k, v in results.items() if k.startswith("W4A4") and v.get("fid_vs_fp")}
    floor = results.get("FP (other seeds)", {}).get("fid_vs_fp")
    if w4a4 and floor:
        best = min(w4a4, key=lambda k: w4a4[k]["fid_vs_fp"]["value"])
        b, ptq = w4a4[best]["fid_vs_fp"], w4a4.get("W4A4 PTQ", {}).get("fid_vs_fp")
        out["fid_vs_fp"] = {"w4a4_best": {"row": best, "fid_vs_fp": b, "noise_floor": floor,
                                          "within_noise_floor": b["ci"][0] <= floor["ci"][1],
                                          "ptq": ptq, "clearly_below_ptq": bool(ptq and b["ci"][1] < ptq["ci"][0])}}
    return out


def render(result: dict) -> str:
    from mobilesd.tiny import compositional as comp

    s = result["settings"]
    fp, floor = result["rows"]["FP"], result["rows"]["FP (other seeds)"]
    lines = ["| row | overall acc. [95% CI] | vs FP, pts [CI] | mean attr. acc. [CI] | vs FP, pts [CI] | "
             "FID-style vs real [CI] | FID-style vs FP [CI] | PSNR vs FP | guidance ratio [CI] | bundle | quantize | "
             "peak RSS | verdict |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for label, r in result["rows"].items():
        d = r.get("delta_vs_fp", {}).get("overall")
        dm = r.get("delta_vs_fp", {}).get("mean_attribute")
        fvp = r.get("fid_vs_fp")
        g = r.get("guidance_ratio")
        cost = r.get("quantize") or {}
        b = r.get("bundle") or {}
        v = r.get("verdict") or {}
        verdict = "; ".join(f"{k}: {val}" for k, val in v.items()) if v else ("reference" if label == "FP" else "noise floor")
        lines.append("| " + " | ".join([
            label, _ci(r["accuracy"]["overall"]), _ci(d) if d else "-",
            _ci(r["accuracy"]["mean_attribute"]), _ci(dm) if dm else "-",
            _ci(r["fid_real"], pct=False, digits=2),
            (_ci(fvp, pct=False, digits=2) + (" (noise floor)" if label == "FP (other seeds)" else "")) if fvp else "-",
            "-" if r.get("psnr_db") is None else f"{r['psnr_db']:.1f} dB",
            _ci(g, pct=False, digits=3) if g else "-",
            f"{b['bundle_bytes'] / 1e6:.2f} MB" if b.get("bundle_bytes") else "-",
            f"{cost['seconds']:.0f} s" if cost.get("seconds") else "-",
            f"{cost['peak_rss_bytes'] / 2**20:.0f} MiB" if cost.get("peak_rss_bytes") else "-",
            verdict]) + " |")
    attr = ["", "Binding accuracy per attribute (%, 95% CI):", "",
            "| row | " + " | ".join(comp.ATTRIBUTE_NAMES) + " |", "|---|" + "---:|" * len(comp.ATTRIBUTE_NAMES)]
    for label, r in result["rows"].items():
        attr.append(f"| {label} | " + " | ".join(_ci(r["accuracy"][a]) for a in comp.ATTRIBUTE_NAMES) + " |")
    goal_lines = ["", "Goals (paired differences, 95% CI over prompts):", ""]
    for metric, name in (("overall", "overall accuracy"), ("mean_attribute", "mean attribute accuracy")):
        gl = result["goals"][metric]
        if "w4a4_best" in gl:
            b = gl["w4a4_best"]
            goal_lines.append(f"- {name}: best W4A4 row **{b['row']}**, vs FP {_ci(b['vs_fp'])} points "
                              f"({'within' if b['within_3_points'] else 'NOT within'} 3 points)"
                              + (f"; vs W4A4 PTQ {_ci(b['vs_ptq'])} points "
                                 f"({'at least' if b['at_least_10_above_ptq'] else 'less than'} 10 above)"
                                 if "vs_ptq" in b else ""))
        for t in gl.get("tdq_vs_static", []):
            goal_lines.append(f"- {name}, {t['bits']}: TDQ - LSQ static intervals {_ci(t['tdq_minus_static'])} points "
                              f"({'at or above' if t['at_or_above'] else 'BELOW'})")
    fg = result["goals"].get("fid_vs_fp", {}).get("w4a4_best")
    if fg:
        goal_lines.append(f"- FID-style vs FP: best W4A4 row **{fg['row']}**, {_ci(fg['fid_vs_fp'], pct=False, digits=2)} "
                          f"against the noise floor {_ci(fg['noise_floor'], pct=False, digits=2)} "
                          f"({'within' if fg['within_noise_floor'] else 'beyond'} it)"
                          + (f"; W4A4 PTQ {_ci(fg['ptq'], pct=False, digits=2)} "
                             f"({'intervals disjoint' if fg['clearly_below_ptq'] else 'intervals overlap'})" if fg["ptq"] else ""))
    q = result["quantize_settings"]
    head = (f"Eval: {s['n_prompts']} held-out-phrasing prompts x seed offsets {s['seeds']} = {fp['images']} images per row "
            f"(each case its own seed: 100 x prompt index + offset), "
            f"{s['steps']} {s['scheduler']} steps, guidance {s['guidance']}; intervals: 95% bootstrap over prompts "
            f"({s['n_boot']} resamples, {s['n_boot_fid']} for FID-style). Noise floor: FP with seed offsets "
            f"{result['other_seeds']} against FP. Guidance ratio: std(cond - uncond) of the row's UNet / FP's on the FP "
            f"trajectory, {fp.get('guidance_cases', s['guidance_cases'])} cases. Quantization: calibration on "
            f"{q['calib_prompts']} training-phrasing prompts x {q['steps']} steps; distillation {q['iterations']} "
            f"iterations x 8 prompts x {q['steps']} steps; SVDQuant rank {q['rank']}; GraLoRA 2x2 blocks; 1 thread. "
            f"Bundle: android export of the first row of each weight format (rows of one format have the same tensors; "
            f"where that row's export failed, the next row's, and the failure is listed below). "
            f"Times: wall clock on a 2-core machine shared with other jobs.")
    failures = [f"- export of {x['from_row']} failed: `{_last_error_line(x['error'])}`"
                for b in result["exports"].values()
                for x in b.get("failed_rows", []) + ([b] if "error" in b else [])]
    if failures:
        failures = ["", "Exports that failed (bundle size then measured on the next row of that format):", ""] + failures
    return head + "\n\n" + "\n".join(lines + attr + goal_lines + failures) + "\n"


def _last_error_line(error: str) -> str:
    """The reason of a failed export: the lines after mobilesd's last "error:" line, up to its "fix:"."""
    lines = [ln.strip() for ln in error.splitlines() if ln.strip()]
    start = max((i for i, ln in enumerate(lines) if "error:" in ln), default=len(lines) - 1)
    body = []
    for ln in lines[start + 1:] or lines[start:]:
        if ln.startswith("fix:"):
            break
        body.append(ln.lstrip("└ "))
    return " ".join(body)[:300].replace("`", "'")


# ---------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--work", default=str(ROOT / "benchmarks" / "results" / "quant_compositional_models"))
    ap.add_argument("--only", default=None, help="rows whose label starts with this (e.g. W4A4)")
    ap.add_argument("--iterations", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--calib-prompts", type=int, default=32)
    ap.add_argument("--rank", type=int, default=8, help="SVDQuant branch rank")
    ap.add_argument("--guidance", type=float, default=None, help="default: the eval settings' guidance")
    ap.add_argument("--no-export", action="store_true", help="skip the android exports (bundle size column)")
    ap.add_argument("--table-only", action="store_true", help="only rebuild the table from cached results")
    ap.add_argument("--out-json", default=str(ROOT / "benchmarks" / "results" / "quant_compositional.json"))
    ap.add_argument("--out-md", default=str(ROOT / "docs" / "benchmarks" / "quant_compositional.md"))
    args = ap.parse_args()

    import torch

    from mobilesd.tiny import compositional_metrics as cm
    from mobilesd.tiny.attribute_classifier import SUBDIR, load_attribute_classifier
    from mobilesd.tiny.compositional_card import OTHER_OFFSET, other_seed_set
    from mobilesd.tiny.metrics import load_fp_pipeline

    torch.set_num_threads(1)
    settings = cm.EvalSettings()
    args.guidance = settings.guidance if args.guidance is None else args.guidance
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = Path(args.model)
    clf = load_attribute_classifier(model / SUBDIR)
    fp_pipe = load_fp_pipeline(model)
    prompts, labels, seeds, pidx = settings.cases()
    other = other_seed_set(seeds, settings.seeds)
    gcases = list(range(0, len(prompts), len(settings.seeds)))[: settings.guidance_cases]  # first seed of each prompt
    g_prompts, g_seeds = [prompts[i] for i in gcases], [seeds[i] for i in gcases]
    log = lambda m: print(m, flush=True)  # noqa: E731

    def cached_images(folder: Path, pipe_fn, case_seeds) -> np.ndarray:
        f = folder / "images.npz"
        if f.exists():
            return np.load(f)["images"]
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        images = generate_images(pipe_fn(), settings, prompts, case_seeds)
        np.savez_compressed(folder / "images.tmp.npz", images=images)
        os.replace(folder / "images.tmp.npz", f)
        (folder / "eval_seconds.json").write_text(json.dumps({"seconds": round(time.time() - t0, 1)}))
        log(f"  generated {len(images)} images in {time.time() - t0:.0f} s")
        return images

    selected = [r for r in rows() if args.only is None or r["label"].startswith(args.only)]
    images = {"FP": cached_images(work / "fp", lambda: fp_pipe, seeds),
              "FP (other seeds)": cached_images(work / "fp-other-seeds", lambda: fp_pipe, other)}
    extra = {}
    for row in selected:
        folder, label = work / row["slug"], row["label"]
        q = folder / "q"
        cost_file = folder / "cost.json"
        if args.table_only and not (folder / "images.npz").exists():
            continue
        if not cost_file.exists():
            log(f"{label}: quantizing ...")
            folder.mkdir(parents=True, exist_ok=True)
            cost = run_quantize(row, q, args)
            cost_file.write_text(json.dumps(cost, indent=1))
            log(f"  {cost['seconds']:.0f} s, peak {cost['peak_rss_bytes'] / 2**20:.0f} MiB")
        if not (folder / "images.npz").exists():
            log(f"{label}: generating ...")

        def load_q(q=q):
            from mobilesd.quant import load_quantized

            p = load_quantized(q, model=args.model)
            p.set_progress_bar_config(disable=True)
            return p

        images[label] = cached_images(folder, load_q, seeds)
        gfile = folder / "guidance.json"
        if not gfile.exists():
            t0 = time.time()
            gr = cm.guidance_ratio(fp_pipe, load_q().unet, g_prompts, g_seeds, settings)
            gfile.write_text(json.dumps(gr))
            log(f"  guidance ratio {gr['value']:.3f} ({time.time() - t0:.0f} s)")
        extra[label] = {"quantize": json.loads(cost_file.read_text()), "guidance_ratio": json.loads(gfile.read_text()),
                        "config": json.loads((q / "quant_config.json").read_text())}
    # bundle size: one real export per weight format; when a row's export fails, the failure is kept and the
    # next row of that format is exported
    bundles = {}
    if not args.no_export:
        for row in selected:
            cls = export_class(row)
            f = work / f"export-{cls}.json"
            if cls in bundles or not (work / row["slug"] / "q").exists():
                continue
            prev = json.loads(f.read_text()) if f.exists() else None
            if prev is not None and ("error" not in prev or args.table_only):
                bundles[cls] = prev
                continue
            if args.table_only:
                continue
            failed = ([{"from_row": prev["from_row"], "error": prev["error"][-600:]}] + prev.get("failed_rows", [])
                      if prev is not None else [])
            if any(x["from_row"] == row["label"] for x in failed):
                continue
            log(f"export {cls} (from {row['label']}) ...")
            res = dict(export_bundle(work / row["slug"] / "q", work / f"bundle-{cls}", args), from_row=row["label"])
            if failed:
                res["failed_rows"] = failed
            f.write_text(json.dumps(res, indent=1))
            log(f"  {res.get('bundle_bytes', 0) / 1e6:.2f} MB" if "error" not in res else f"  FAILED: {res['error'][-300:]}")
            if "error" not in res:
                bundles[cls] = res
        for f in sorted(work.glob("export-*.json")):   # formats whose every export failed: listed too
            bundles.setdefault(f.stem[len("export-"):], json.loads(f.read_text()))

    # scoring (cheap; always recomputed from the cached images)
    real = cm.real_features(clf, labels)
    scored = {"FP": cm.score(images["FP"], labels, pidx, clf, real, settings)}
    fp_raw = scored["FP"]["_raw"]
    scored["FP (other seeds)"] = cm.score(images["FP (other seeds)"], labels, pidx, clf, real, settings, fp_raw)
    g_fp = cm.guidance_ratio(fp_pipe, fp_pipe.unet, g_prompts[:4], g_seeds[:4], settings)  # sanity: exactly 1
    rows_out = {}
    for label in images:
        if label not in scored:
            scored[label] = cm.score(images[label], labels, pidx, clf, real, settings, fp_raw)
        r = cm.public(scored[label])
        if label in extra:
            r.update(quantize=extra[label]["quantize"], guidance_ratio=extra[label]["guidance_ratio"])
            cfg = extra[label]["config"]
            r["distill_loss"] = None if not cfg.get("training") else [cfg["training"]["first_loss"], cfg["training"]["final_loss"]]
            if cfg.get("svdquant"):
                r["svdquant_branch_parameters"] = cfg["svdquant"]["branch_parameters"]
            row = next(x for x in rows() if x["label"] == label)
            b = bundles.get(export_class(row))
            if b:
                r["bundle"] = dict(b, measured_on=b.get("from_row"))
            r["verdict"] = cm.verdict(scored[label], scored["FP"], scored["FP (other seeds)"])
        rows_out[label] = r
    raw = {k: v["_raw"]["correct"] for k, v in scored.items()}
    result = {
        "benchmark": "quant_compositional", "model": str(model), "settings": settings.to_dict(),
        "other_seeds": [OTHER_OFFSET + i for i in range(len(settings.seeds))],
        "quantize_settings": {"iterations": args.iterations, "steps": args.steps, "calib_prompts": args.calib_prompts,
                              "rank": args.rank, "guidance": args.guidance},
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "threads": 1,
                 "python": platform.python_version(), "torch": torch.__version__},
        "fp_guidance_ratio_self_check": g_fp["value"],
        "rows": rows_out, "goals": goals(rows_out, raw, pidx, settings.n_boot),
        "exports": bundles,
    }
    Path(args.out_json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out_json).write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
    table = render(result)
    print(table)
    md = Path(args.out_md)
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text("# Quantization on the compositional digits model\n\n"
                  "Generated by `.venv/bin/python benchmarks/quant_compositional.py` "
                  "(JSON: `benchmarks/results/quant_compositional.json`).\n\n" + table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
