"""FP vs naive PTQ vs TDQ vs EfficientDM on the trained tiny digits model, scored by `mobilesd eval`'s metrics.

Each quantization runs `mobilesd quantize` in its own process (wall time and peak RSS of that process
tree); then every quantized model and the FP model are scored side by side in one eval run (prompt
accuracy on held-out phrasings, FID-style distance on the classifier's features, PSNR / MAE vs FP).
Writes docs/benchmarks/quant_tiny.md and benchmarks/results/quant_tiny.json.

    .venv/bin/python benchmarks/quant_tiny.py              # the whole table (about 30 min on 2 idle cores)
    .venv/bin/python benchmarks/quant_tiny.py --only W8A8  # one group
Quantized models are kept under --work and reused when present (delete them to re-run a method).
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# (label, weights, acts, method, intervals)
RUNS = [
    ("W8A8 PTQ (static)", 8, 8, "ptq", "static"),
    ("W8A8 LSQ static interval", 8, 8, "tdq", "static"),
    ("W8A8 TDQ", 8, 8, "tdq", "tdq"),
    ("W4A8 PTQ (static)", 4, 8, "ptq", "static"),
    ("W4A8 EfficientDM", 4, 8, "efficientdm", "per-step"),
    ("W4A16 PTQ", 4, 16, "ptq", "static"),
    ("W4A16 EfficientDM", 4, 16, "efficientdm", "per-step"),
    ("W8A4 LSQ static interval", 8, 4, "tdq", "static"),
    ("W8A4 TDQ", 8, 4, "tdq", "tdq"),
]


def slug(label: str) -> str:
    return label.lower().replace(" ", "-").replace("(", "").replace(")", "")


def run_quantize(out: Path, w: int, a: int, method: str, intervals: str, args) -> dict:
    import psutil

    cmd = [sys.executable, "-m", "mobilesd", "quantize", "--method", method, "--weights", str(w), "--acts", str(a),
           "--act-intervals", intervals, "--iterations", str(args.iterations), "--steps", str(args.steps),
           "--calib-prompts", str(args.calib_prompts), "--out", str(out), "--overwrite", "--quiet"]
    if args.model:
        cmd += ["--model", args.model]
    peak = 0
    # one thread: the tiny model's ops are too small to gain from more, and oversubscribed threads on a busy
    # machine slowed runs by an order of magnitude (times would not be comparable)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    stop = threading.Event()

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
    return {"seconds": round(secs, 1), "peak_rss_bytes": peak}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="default: assets/tiny-digits-sd")
    ap.add_argument("--work", default=str(ROOT / "benchmarks" / "results" / "quant_tiny_models"))
    ap.add_argument("--only", default=None, help="run only labels starting with this (e.g. W8A8)")
    ap.add_argument("--iterations", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--calib-prompts", type=int, default=32)
    ap.add_argument("--eval-prompts", type=int, default=60)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out-json", default=str(ROOT / "benchmarks" / "results" / "quant_tiny.json"))
    ap.add_argument("--out-md", default=str(ROOT / "docs" / "benchmarks" / "quant_tiny.md"))
    args = ap.parse_args()

    import torch

    from mobilesd.tiny import metrics
    from mobilesd.tiny.classifier import load_classifier
    from mobilesd.tiny.model import CLASSIFIER_SUBDIR, DEFAULT_MODEL

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    runs = [r for r in RUNS if args.only is None or r[0].startswith(args.only)]
    cost = {}
    for label, w, a, method, intervals in runs:
        out = work / slug(label)
        stats_file = out / "benchmark_cost.json"
        if stats_file.exists():
            cost[label] = json.loads(stats_file.read_text())
            print(f"{label}: reusing {out}", flush=True)
            continue
        print(f"{label}: quantizing ...", flush=True)
        cost[label] = run_quantize(out, w, a, method, intervals, args)
        stats_file.write_text(json.dumps(cost[label]))
        print(f"{label}: {cost[label]['seconds']:.0f}s, peak {cost[label]['peak_rss_bytes'] / 2**20:.0f} MiB", flush=True)

    model = Path(args.model) if args.model else DEFAULT_MODEL
    classifier = load_classifier(model / CLASSIFIER_SUBDIR)
    fp = metrics.load_fp_pipeline(model)
    settings = metrics.EvalSettings(n_prompts=args.eval_prompts, seeds=list(range(args.seeds)))
    gens = [metrics.pipeline_generator(fp, "FP32", str(model), settings.batch_size)]
    for label, *_ in runs:
        g = metrics.quantized_generator(work / slug(label), fp, settings.batch_size)
        g.name = label
        gens.append(g)
    result = metrics.evaluate(gens, classifier, settings, log=lambda m: print(m, flush=True), include_real=False)
    rows = []
    for r in result["rows"]:
        label = r["name"]
        spec = next((x for x in runs if x[0] == label), None)
        qcfg = json.loads((work / slug(label) / "quant_config.json").read_text()) if spec else None
        rows.append({
            "name": label, "weights": spec[1] if spec else 32, "acts": spec[2] if spec else 32,
            "method": spec[3] if spec else "fp", "intervals": spec[4] if spec else None,
            "prompt_accuracy": r["prompt_accuracy"], "fid": r["fid"], "psnr_db": r.get("psnr_db"),
            "mae": r.get("mae"), "label_agreement": r.get("label_agreement"),
            "quantize_seconds": cost.get(label, {}).get("seconds"),
            "quantize_peak_rss_bytes": cost.get(label, {}).get("peak_rss_bytes"),
            "distill_loss": None if not qcfg or not qcfg["training"] else
            [qcfg["training"]["first_loss"], qcfg["training"]["final_loss"]],
        })
    out = {"benchmark": "quant_tiny", "model": str(model), "settings": metrics.strip_images(result)["settings"],
           "quantize_settings": {"iterations": args.iterations, "steps": args.steps,
                                 "calib_prompts": args.calib_prompts},
           "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "threads": args.threads,
                    "python": platform.python_version(), "torch": torch.__version__},
           "rows": rows}
    Path(args.out_json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out_json).write_text(json.dumps(out, indent=2) + "\n")
    fp_acc = rows[0]["prompt_accuracy"]
    lines = ["| model | method | intervals | prompt acc. | vs FP (pts) | FID-style | PSNR vs FP (dB) | quantize time | peak RSS |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        d = 100 * (r["prompt_accuracy"] - fp_acc)
        psnr = "-" if r["psnr_db"] is None else f"{r['psnr_db']:.1f}"
        secs = "-" if r["quantize_seconds"] is None else f"{r['quantize_seconds']:.0f} s"
        rss = "-" if not r["quantize_peak_rss_bytes"] else f"{r['quantize_peak_rss_bytes'] / 2**20:.0f} MiB"
        lines.append(f"| {r['name']} | {r['method']} | {r['intervals'] or '-'} | {100 * r['prompt_accuracy']:.1f}% | "
                     f"{d:+.1f} | {r['fid']:.1f} | {psnr} | {secs} | {rss} |")
    table = "\n".join(lines)
    print(table)
    md = Path(args.out_md)
    md.parent.mkdir(parents=True, exist_ok=True)
    s = out["settings"]
    md.write_text(
        "# Quantization on the tiny digits model\n\n"
        "Generated by `.venv/bin/python benchmarks/quant_tiny.py` (JSON: `benchmarks/results/quant_tiny.json`).\n\n"
        f"Eval: {s['n_images']} images ({s['n_prompts']} held-out prompts x {len(s['seeds'])} seeds), "
        f"{s['steps']} {s['scheduler']} steps, guidance {s['guidance']}. Quantization: calibration on "
        f"{args.calib_prompts} training-phrasing prompts, {args.steps} steps; distillation {args.iterations} "
        f"iterations x 8 prompts x {args.steps} steps. Times are wall clock on a 2-core machine shared with other jobs (indicative only).\n\n" + table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
