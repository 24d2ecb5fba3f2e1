"""Scale test: `mobilesd export` on full SD architectures with random weights (SD1.5, SD 2.x-base 512 epsilon,
SD 2.x 768 v-prediction, and a Turbo-style export of the 2.x-base shape: no CFG, trailing spacing, 1-4 steps).

Real SD weights cannot be downloaded here; the architecture (and so export time, memory, file sizes, op
coverage) is the real one. Each configuration runs `mobilesd export` in its own process, sampled for
peak RSS (the whole process tree, GPU-check children included). Prints a table and writes JSON + Markdown.
`--baseline REF` runs every configuration also on the code of git commit REF (installed from a wheel into a
folder of its own), interleaved with the working tree's runs: before and after in one run, on one machine.

    .venv/bin/python benchmarks/export_sd15.py                                  # android fp16, default chunks
    .venv/bin/python benchmarks/export_sd15.py --configs android:fp16:default --baseline HEAD~1
    .venv/bin/python benchmarks/export_sd15.py --configs sd21-base:android:fp16:default:turbo \
        --export-args="--allow-cpu-fallback" --json benchmarks/results/export_sd21-base-android-fp16-default-turbo.json
(docs/benchmarks/export_sd2.md holds the rows of three such runs, one config each.)
Config: [ARCH:]TARGET:PRECISION:CHUNKS[:PRESET], ARCH sd15 (default), sd21-base or sd21; CHUNKS a number or
"default" (no --unet-chunks: the export's own plan); PRESET "turbo" (--cfg none --timestep-spacing trailing
--default-scheduler euler, end-to-end check at 1 step).
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

ARCHES = {"sd15": "SD1.5", "sd21-base": "SD 2.x-base (512 px, epsilon)", "sd21": "SD 2.x (768 px, v-prediction)"}
PRESETS = {"turbo": ["--cfg", "none", "--timestep-spacing", "trailing", "--default-scheduler", "euler"]}
PRESET_VERIFY_STEPS = {"turbo": 1}


def model_dir(cache: Path, arch: str = "sd15") -> Path:
    path = cache / f"{arch}-random"
    if not (path / "model_index.json").exists():
        from mobilesd.architectures import save_random_pipeline

        print(f"building {ARCHES[arch]} (random weights) in {path} ...", flush=True)
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cache))
        save_random_pipeline(tmp / "m", arch, seed=0)
        os.replace(tmp / "m", path)
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def tree_memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) summed over the process tree. The RSS sum counts a page shared by two processes twice (the
    forkserver's imported libraries and its forked workers; a spawned worker and its parent map the same
    libtorch); PSS gives each process its share, so the PSS sum is what the tree takes from the machine."""
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p] + p.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0, 0
    rss = pss = 0
    for q in procs:
        try:
            info = q.memory_full_info()
            rss += info.rss
            pss += info.pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return rss, pss


def baseline_site(ref: str, cache: Path) -> tuple[Path, str]:
    """The package as of git commit ``ref``, installed (from a wheel, no dependencies) into a folder of its own
    that PYTHONPATH puts before the working tree's editable install."""
    sha = subprocess.run(["git", "rev-parse", ref], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()
    site = cache / f"baseline-{sha[:12]}"
    if not (site / ".done").exists():
        shutil.rmtree(site, ignore_errors=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            src = Path(tmp) / "src"
            src.mkdir()
            archive = subprocess.run(["git", "archive", sha], cwd=ROOT, check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
            subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                            str(Path(tmp) / "dist"), str(src)], check=True)
            wheel = next((Path(tmp) / "dist").glob("*.whl"))
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
                            str(wheel)], check=True)
        (site / ".done").write_text(sha)
    if not (site / "web_app").exists():
        # the web target's check runs LiteRT.js from web_app/ beside the package: the commit's own web app, with
        # the working tree's installed node_modules (npm cannot reach the registry from every machine)
        archive = subprocess.run(["git", "archive", sha, "web_app"], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(site)], input=archive, check=True)
        if (ROOT / "web_app" / "node_modules").exists():
            (site / "web_app" / "node_modules").symlink_to(ROOT / "web_app" / "node_modules")
    # run from the site folder: python puts the current folder first on sys.path (the repo's own package)
    where = subprocess.run([sys.executable, "-c", "import mobilesd; print(mobilesd.__file__)"], check=True, cwd=site,
                           capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(site))).stdout
    assert where.startswith(str(site)), f"the baseline package is not the one imported: {where}"
    return site, sha


def run_export(model: Path, out: Path, target: str, precision: str, chunks: int | None, verify_steps: int,
               extra: list[str] | tuple = (), site: Path | None = None) -> dict:
    """One `mobilesd export` process (the working tree's code, or the baseline's installed in ``site``)."""
    cmd = [sys.executable, "-m", "mobilesd", "export", "--model", str(model), "--target", target,
           "--precision", precision, "--out", str(out), "--overwrite", "--verify-steps", str(verify_steps),
           *(["--unet-chunks", str(chunks)] if chunks is not None else []), *extra]
    env = dict(os.environ, PYTHONPATH=str(site)) if site is not None else None
    t0 = time.perf_counter()
    log = out.parent / f"{out.name}.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=site or ROOT, env=env)
        peak = peak_pss = 0
        while proc.poll() is None:
            rss, pss = tree_memory(proc.pid)
            peak, peak_pss = max(peak, rss), max(peak_pss, pss)
            time.sleep(0.5)
    seconds = time.perf_counter() - t0
    row = {"target": target, "precision": precision, "unet_chunks": chunks, "seconds": round(seconds, 1),
           "flags": list(extra),
           "peak_rss_gb": round(peak / 1e9, 2),
           "peak_pss_gb": round(peak_pss / 1e9, 2), "returncode": proc.returncode, "log": str(log)}
    if proc.returncode != 0:
        row["error"] = "\n".join(log.read_text().splitlines()[-15:])
        return row
    m = json.loads((out / "manifest.json").read_text())
    row["unet_chunks"] = len(m["unet"]["chunks"])
    row["unet_chunks_given"] = chunks is not None
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


def parse_config(cfg: str) -> dict:
    parts = cfg.split(":")
    if parts[0] not in ARCHES:
        parts = ["sd15"] + parts
    if len(parts) not in (4, 5) or parts[0] not in ARCHES or (len(parts) == 5 and parts[4] not in PRESETS):
        raise SystemExit(f"bad config {cfg!r}: [ARCH:]TARGET:PRECISION:CHUNKS[:PRESET], ARCH in {list(ARCHES)}, "
                         f"PRESET in {list(PRESETS)}")
    arch, target, precision, chunks = parts[:4]
    preset = parts[4] if len(parts) == 5 else None
    return {"arch": arch, "target": target, "precision": precision, "preset": preset,
            "chunks": None if chunks == "default" else int(chunks), "name": cfg}


def row_label(r: dict) -> str:
    chunks = ("default" if r["unet_chunks"] is None else f"{r['unet_chunks']}"
              + ("" if r.get("unet_chunks_given", True) else " (default)"))
    return (f"{r['arch']}{'+' + r['preset'] if r.get('preset') else ''} {r['target']} {r['precision']} x{chunks}"
            + (f" [{r['code']}]" if r.get("code") else ""))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["android:fp16:default"],
                    help="[ARCH:]TARGET:PRECISION:CHUNKS[:PRESET] (see the module docstring)")
    ap.add_argument("--baseline", metavar="REF", help="also run every config on git commit REF (before/after)")
    ap.add_argument("--export-args", default="", help="more `mobilesd export` flags for every config, e.g. "
                    "\"--allow-cpu-fallback\" (SD's VAE decoder run fails on this machine's software GPU)")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "mobilesd" / "bench"))
    ap.add_argument("--verify-steps", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the bundles")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "export_sd15.json"))
    ap.add_argument("--markdown", default=str(ROOT / "docs" / "benchmarks" / "export_sd15.md"))
    args = ap.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    configs = [parse_config(c) for c in args.configs]
    codes: list[tuple[str, Path | None]] = [("working tree", None)]
    baseline_sha = None
    if args.baseline:
        site, baseline_sha = baseline_site(args.baseline, cache)
        codes = [(f"before: {baseline_sha[:10]}", site), ("after: working tree", None)]
    rows = []
    for c in configs:
        model = model_dir(cache, c["arch"])
        extra = PRESETS.get(c["preset"], []) + args.export_args.split()
        steps = PRESET_VERIFY_STEPS.get(c["preset"], args.verify_steps)
        for code, site in codes:
            out = cache / f"bundle-{c['name'].replace(':', '-')}"
            print(f"export {c['name']} ({code}) ...", flush=True)
            row = run_export(model, out, c["target"], c["precision"], c["chunks"], steps, extra, site)
            row.update(arch=c["arch"], preset=c["preset"], code=code if args.baseline else None, verify_steps=steps)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "graphs"}), flush=True)
            # the rows so far, so that an interrupted run keeps what it measured
            partial = Path(args.json + ".partial")
            partial.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps({"partial": True, "baseline": baseline_sha, "rows": rows}, indent=2))
            if not args.keep:
                shutil.rmtree(out, ignore_errors=True)
    for r in rows:
        if r.get("phase_peak_rss_gb"):
            print(f"{row_label(r)}: peak RSS per step (GB): "
                  + ", ".join(f"{k} {v}" for k, v in r["phase_peak_rss_gb"].items()))
    lines = [f"{'configuration':<52}{'time s':>8}{'peak RSS GB':>13}{'peak PSS GB':>13}{'bundle MB':>11}"
             f"{'max rel.L2':>12}{'GPU':>6}"
             f"{'img MAE':>10}"]
    md = ["| configuration | export time (s) | peak RSS (GB) | peak PSS (GB) | step with the peak | bundle (MB) "
          "| largest graph (MB) "
          "| max graph rel. L2 | all graphs fully on GPU | end-to-end image MAE (PSNR) |", "|" + "---|" * 10]
    for r in rows:
        label = row_label(r)
        if r["returncode"] != 0:
            lines.append(f"{label:<52}  FAILED: {r['error'][-200:]}")
            md.append(f"| {label} | failed after {r['seconds']:.0f} | {r['peak_rss_gb']} | {r.get('peak_pss_gb', '')} "
                      "| | | | | | |")
            continue
        g = r["graphs"]
        worst = max(v["rel_l2"] for v in g.values())
        gpu = "-" if r["target"] not in ("android", "web") else (
            "yes" if all(v["gpu_full"] for v in g.values()) else "NO")
        e2e = r["end_to_end"]
        lines.append(f"{label:<52}{r['seconds']:>8.0f}{r['peak_rss_gb']:>13.2f}{r['peak_pss_gb']:>13.2f}"
                     f"{r['bundle_mb']:>11.0f}{worst:>12.2e}"
                     f"{gpu:>6}{e2e['mean_abs']:>10.2e}")
        md.append(f"| {label} | {r['seconds']:.0f} | {r['peak_rss_gb']:.2f} | {r['peak_pss_gb']:.2f} | "
                  f"{r.get('peak_phase', '')} | "
                  f"{r['bundle_mb']:.0f} | {max(v['mb'] for v in g.values()):.0f} | {worst:.2e} | {gpu} | "
                  f"{e2e['mean_abs']:.2e} ({e2e['psnr_db']:.0f} dB) |")
    print("\n".join(lines))
    result = {"benchmark": "export_sd15", "models": {a: ARCHES[a] + ", random weights (seed 0)"
                                                     for a in sorted({c["arch"] for c in configs})},
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "baseline": baseline_sha, "verify_steps": args.verify_steps, "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    Path(args.json + ".partial").unlink(missing_ok=True)
    Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
    Path(args.markdown).write_text(
        "# Export at full SD scale (random weights)\n\n"
        f"Written by `benchmarks/export_sd15.py {' '.join(sys.argv[1:])}` on this machine ({os.cpu_count()} cores, "
        "CPU only). Peak RSS and peak PSS, each summed over the whole process tree (workers, the forkserver and "
        "GPU-check processes included; the RSS sum counts shared pages once per process). End-to-end "
        "check: DPM steps (2; Turbo preset: 1, no CFG) at the model's native size, PyTorch vs "
        "the bundle's graphs.\n\n" + "\n".join(md) + "\n")
    print(f"wrote {args.json} and {args.markdown}")
    return 0 if all(r["returncode"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
