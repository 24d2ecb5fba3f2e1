"""Scale test: `mobilesd export` on the full SD1.5 architecture with random weights.

Real SD weights cannot be downloaded here; the architecture (and so export time, memory, file sizes, op
coverage) is the real one. Each configuration runs `mobilesd export` in its own process, sampled for
peak RSS (the whole process tree, GPU-check children included). Prints a table and writes JSON + Markdown.

    .venv/bin/python benchmarks/export_sd15.py                      # android fp16 x 2 chunks, onnx fp32
    .venv/bin/python benchmarks/export_sd15.py --configs android:fp16:1 android:int8:2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def model_dir(cache: Path) -> Path:
    path = cache / "sd15-random"
    if not (path / "model_index.json").exists():
        from mobilesd.architectures import save_random_pipeline

        print(f"building SD1.5 (random weights) in {path} ...", flush=True)
        tmp = Path(tempfile.mkdtemp(dir=cache))
        save_random_pipeline(tmp / "m", "sd15", seed=0)
        os.replace(tmp / "m", path)
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def tree_rss(pid: int) -> int:
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p] + p.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for q in procs:
        try:
            total += q.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_export(model: Path, out: Path, target: str, precision: str, chunks: int, verify_steps: int,
               extra: list[str] | tuple = ()) -> dict:
    cmd = [sys.executable, "-m", "mobilesd", "export", "--model", str(model), "--target", target,
           "--precision", precision, "--unet-chunks", str(chunks), "--out", str(out), "--overwrite",
           "--verify-steps", str(verify_steps), *extra]
    t0 = time.perf_counter()
    log = out.parent / f"{out.name}.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, tree_rss(proc.pid))
            time.sleep(0.5)
    seconds = time.perf_counter() - t0
    row = {"target": target, "precision": precision, "unet_chunks": chunks, "seconds": round(seconds, 1),
           "peak_rss_gb": round(peak / 1e9, 2), "returncode": proc.returncode, "log": str(log)}
    if proc.returncode != 0:
        row["error"] = "\n".join(log.read_text().splitlines()[-15:])
        return row
    m = json.loads((out / "manifest.json").read_text())
    row["bundle_mb"] = round(sum(v["size"] for v in m["files"].values()) / 1e6, 1)
    row["graphs"] = {g["name"]: {"mb": round(g["size_bytes"] / 1e6, 1), "rel_l2": g["verification"]["rel_l2"],
                                 "convert_s": g["meta"].get("convert_seconds"),
                                 "gpu_full": g.get("gpu", {}).get("fully_accelerated"),
                                 "gpu_unsupported": g.get("gpu", {}).get("unsupported_ops"),
                                 "gpu_rel_l2": g.get("gpu", {}).get("output_rel_l2")}
                     for g in m["graphs"]}
    row["end_to_end"] = {k: m["verification"]["end_to_end"][k] for k in ("mean_abs", "psnr_db", "passed")}
    peaks = m.get("export_peak_rss_bytes") or {}
    row["phase_peak_rss_gb"] = {k: round(v / 1e9, 2) for k, v in peaks.items()}
    if peaks:
        worst = max(peaks, key=peaks.get)
        row["peak_phase"] = worst
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["android:fp16:2", "onnx:fp32:1"],
                    help="target:precision:chunks")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "mobilesd" / "bench"))
    ap.add_argument("--verify-steps", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the bundles")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "export_sd15.json"))
    ap.add_argument("--markdown", default=str(ROOT / "docs" / "benchmarks" / "export_sd15.md"))
    args = ap.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    model = model_dir(cache)
    rows = []
    for cfg in args.configs:
        target, precision, chunks = cfg.split(":")
        out = cache / f"bundle-{target}-{precision}-{chunks}"
        print(f"export {cfg} ...", flush=True)
        row = run_export(model, out, target, precision, int(chunks), args.verify_steps)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "graphs"}), flush=True)
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    for r in rows:
        if r.get("phase_peak_rss_gb"):
            print(f"{r['target']} {r['precision']} x{r['unet_chunks']}: peak RSS per step (GB): "
                  + ", ".join(f"{k} {v}" for k, v in r["phase_peak_rss_gb"].items()))
    header = f"{'target':<8}{'prec':<6}{'chunks':>7}{'time s':>9}{'peak RSS GB':>13}{'bundle MB':>11}{'max rel.L2':>12}{'GPU':>6}{'img MAE':>10}"
    lines = [header]
    md = ["| target | precision | UNet chunks | export time (s) | peak RSS (GB) | bundle (MB) | largest graph (MB) "
          "| max graph rel. L2 | all graphs fully on GPU | end-to-end image MAE | step with the peak |", "|" + "---|" * 11]
    for r in rows:
        if r["returncode"] != 0:
            lines.append(f"{r['target']:<8}{r['precision']:<6}{r['unet_chunks']:>7}  FAILED: {r['error'][-200:]}")
            md.append(f"| {r['target']} | {r['precision']} | {r['unet_chunks']} | failed | {r['peak_rss_gb']} | | | | | | |")
            continue
        g = r["graphs"]
        worst = max(v["rel_l2"] for v in g.values())
        gpu = "-" if r["target"] != "android" else ("yes" if all(v["gpu_full"] for v in g.values()) else "NO")
        lines.append(f"{r['target']:<8}{r['precision']:<6}{r['unet_chunks']:>7}{r['seconds']:>9.0f}{r['peak_rss_gb']:>13.1f}"
                     f"{r['bundle_mb']:>11.0f}{worst:>12.2e}{gpu:>6}{r['end_to_end']['mean_abs']:>10.2e}")
        md.append(f"| {r['target']} | {r['precision']} | {r['unet_chunks']} | {r['seconds']:.0f} | {r['peak_rss_gb']:.1f} | "
                  f"{r['bundle_mb']:.0f} | {max(v['mb'] for v in g.values()):.0f} | {worst:.2e} | {gpu} | "
                  f"{r['end_to_end']['mean_abs']:.2e} | {r.get('peak_phase', '')} |")
    print("\n".join(lines))
    result = {"benchmark": "export_sd15", "model": "SD1.5 architecture, random weights (seed 0)",
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "verify_steps": args.verify_steps, "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
    Path(args.markdown).write_text("# Export of the full SD1.5 architecture (random weights)\n\n"
                                   "Written by `benchmarks/export_sd15.py` on this machine (2 cores, 24 GiB). "
                                   f"End-to-end check: {args.verify_steps} DPM steps at 512x512.\n\n"
                                   + "\n".join(md) + "\n")
    print(f"wrote {args.json} and {args.markdown}")
    return 0 if all(r["returncode"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
