"""`mobilesd app ios`: the iOS client's Swift pipeline (ios_app/, the `mobilesd-ios` CLI) on this machine.

Core ML does not exist on Linux, so here the CLI runs ONNX bundles (`mobilesd export --target onnx`) through
ONNX Runtime's C API, with the onnxruntime library of the venv's wheel (the release the Python host runs). It
is built (release mode, cached until a Swift source changes) and run inside the Debian trixie chroot of
scripts/setup_ios.sh, through scripts/swift.sh. The same Swift code as the app, minus Core ML and the screen.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path

from mobilesd.errors import MobileSDError

HELP = "run a bundle through the iOS client's Swift pipeline on this machine (ONNX Runtime C API, in a Linux chroot)"

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "ios_app"
SWIFT_SH = REPO / "scripts" / "swift.sh"
SCHEMA = REPO / "mobilesd" / "schemas" / "manifest.schema.json"
SETUP_FIX = "bash scripts/setup_ios.sh  (builds the trixie chroot with Debian's Swift and the ONNX Runtime headers)"
COMPUTE_UNITS = ("cpuAndNeuralEngine", "cpuAndGPU", "all", "cpuOnly")


def add_arguments(p) -> None:
    p.add_argument("--compute-units", choices=COMPUTE_UNITS, default="cpuAndNeuralEngine",
                   help="Core ML compute units (Apple platforms; ONNX bundles here run on ONNX Runtime's CPU provider)")
    p.add_argument("--reduce-memory", action="store_true",
                   help="load each stage's graphs just before it runs and unload them after (the app's low-memory mode)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: its own)")


def chroot_dir() -> Path:
    base = os.environ.get("MOBILESD_CACHE", "/var/cache/mobilesd")
    return Path(os.environ.get("MOBILESD_IOS_CHROOT", f"{base}/trixie-swift"))


def _check_setup() -> None:
    if not (chroot_dir() / ".mobilesd-chroot").is_file():
        raise MobileSDError(f"the Swift build chroot is not set up ({chroot_dir()} is missing)", SETUP_FIX)


def sources_digest() -> str:
    """SHA-256 over the package manifest and every Swift/C source (path and bytes): the build cache key."""
    h = hashlib.sha256()
    files = [PACKAGE / "Package.swift"] + sorted(p for p in (PACKAGE / "Sources").rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes() + b"\0")
    h.update((chroot_dir() / ".mobilesd-chroot").read_bytes())
    return h.hexdigest()


def swift(args: list[str], *, mounts: list[Path] = (), capture: bool = False, env: dict | None = None,
          nice: bool = False) -> subprocess.CompletedProcess:
    """Runs scripts/swift.sh with ``args`` (a swift command, or ``--run PROGRAM ...``)."""
    e = dict(os.environ, **(env or {}))
    e["MOBILESD_IOS_MOUNTS"] = ":".join(str(Path(m).resolve()) for m in mounts)
    cmd = (["nice", "-n", "10"] if nice else []) + ["bash", str(SWIFT_SH), *args]
    return subprocess.run(cmd, env=e, text=True, capture_output=capture)


def build_cli(configuration: str = "release", force: bool = False) -> Path:
    """The `mobilesd-ios` binary, rebuilt only when a source changed (one build at a time: a file lock)."""
    _check_setup()
    binary = PACKAGE / ".build" / configuration / "mobilesd-ios"
    stamp = PACKAGE / ".build" / f"mobilesd-ios-{configuration}.sha256"
    (PACKAGE / ".build").mkdir(parents=True, exist_ok=True)
    with open(PACKAGE / ".build" / ".mobilesd-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        digest = sources_digest()
        if not force and binary.is_file() and stamp.is_file() and stamp.read_text().strip() == digest:
            return binary
        proc = swift(["build", "-c", configuration, "--product", "mobilesd-ios"], capture=True, nice=True)
        if proc.returncode != 0:
            raise MobileSDError(f"swift build failed on ios_app/:\n{(proc.stdout + proc.stderr).strip()[-4000:]}",
                                "fix the Swift sources (the error is above); the chroot: " + SETUP_FIX)
        stamp.write_text(digest + "\n")
    return binary


def cli_arguments(args) -> list[str]:
    """The argparse namespace of `mobilesd app ios` as mobilesd-ios flags (paths absolute: it runs in a chroot)."""
    out = ["--bundle", str(Path(args.bundle).resolve()), "--prompt", args.prompt, "--steps", str(args.steps),
           "--seed", str(args.seed), "--out", str(Path(args.out).resolve()), "--compute-units", args.compute_units,
           "--manifest-schema", str(SCHEMA)]
    if args.negative_prompt is not None:
        out += ["--negative-prompt", args.negative_prompt]
    if args.guidance is not None:
        out += ["--guidance", repr(float(args.guidance))]
    if args.scheduler is not None:
        out += ["--scheduler", args.scheduler]
    if args.report:
        out += ["--report", str(Path(args.report).resolve()), "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
    if args.reduce_memory:
        out.append("--reduce-memory")
    if args.threads is not None:
        out += ["--threads", str(args.threads)]
    return out


def run_cli(cli_args: list[str], mounts: list[Path]) -> dict:
    """Runs mobilesd-ios in the chroot; returns its --result object, user errors raised as MobileSDError."""
    binary = build_cli()
    with tempfile.TemporaryDirectory(prefix="mobilesd-ios-") as tmp:
        result = Path(tmp) / "result.json"
        proc = swift(["--run", str(binary), *cli_args, "--result", str(result)], mounts=[*mounts, Path(tmp)])
        if result.is_file():
            out = json.loads(result.read_text())
            if not out.get("ok"):
                raise MobileSDError(out.get("problem", "mobilesd-ios failed"), out.get("fix"))
            return out
    raise MobileSDError(f"mobilesd-ios exited with status {proc.returncode} and no result",
                        "see its output above; the chroot: " + SETUP_FIX)


def run(args) -> int:
    bundle = Path(args.bundle)
    if not (bundle / "manifest.json").is_file():
        raise MobileSDError(f"{bundle} is not a bundle (no manifest.json)", "pass a folder written by `mobilesd export`")
    if args.steps < 1:
        raise MobileSDError(f"--steps must be at least 1 (got {args.steps})", "pass --steps 20, for example")
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    mounts = [bundle.resolve(), out.parent]
    if args.report:
        report = Path(args.report).resolve()
        report.parent.mkdir(parents=True, exist_ok=True)
        mounts.append(report.parent)
    run_cli(cli_arguments(args), mounts)
    return 0
