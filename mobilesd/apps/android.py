"""`mobilesd app android`: the Android app's Java core (android_app/) on this machine's JVM.

Builds the core (android_app/core + litert + cli) into a jar with javac when its sources changed (cached under
build/android/), then runs the core's CLI with the venv's LiteRT: ``libLiteRt.so`` and the WebGPU accelerator
from the ai-edge-litert wheel, bound through JNA exactly as the app binds the library in its LiteRT AAR.
The same code path as the app, minus the screen.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from mobilesd.errors import MobileSDError

HELP = "run a bundle through the Android app's Java core on this machine's JVM (LiteRT C API via JNA)"

REPO = Path(__file__).resolve().parents[2]
APP_DIR = REPO / "android_app"
SOURCE_ROOTS = [APP_DIR / m / "src" / "main" / "java" for m in ("core", "litert", "cli")]
BUILD_DIR = REPO / "build" / "android"
JAR_NAME = "mobilesd-android-core.jar"
JAVA_LIBS = Path("/usr/share/java")
DEPENDENCY_JARS = [JAVA_LIBS / "jna.jar", JAVA_LIBS / "com.android.json.jar"]
MAIN_CLASS = "dev.mobilesd.cli.Main"
SETUP_FIX = "bash scripts/setup_android.sh  (installs the JDK, libjna-java, libandroid-json-java and junit5 from Debian)"


def add_arguments(p) -> None:
    p.add_argument("--accelerator", choices=("gpu", "cpu"), default="gpu",
                   help="gpu: LiteRT's GPU accelerator only (here WebGPU on the software Vulkan device; the app's "
                        "default); cpu: XNNPACK")
    p.add_argument("--allow-cpu-fallback", action="store_true",
                   help="with --accelerator gpu: accept graphs the GPU accelerator cannot fully run")
    p.add_argument("--low-memory", action="store_true",
                   help="open each stage's graphs just before the stage and close them after (the app's low-memory mode)")
    p.add_argument("--native-log", default=None,
                   help="keep the LiteRT runtime's own log in this file (default: a temporary file, kept and named only when a run fails)")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MobileSDError(f"{name} is not installed (the Android core runs on a JDK)", SETUP_FIX)
    return path


def _sources() -> list[Path]:
    files = sorted(p for root in SOURCE_ROOTS for p in root.rglob("*.java"))
    if not files:
        raise MobileSDError(f"no Java sources under {APP_DIR}", "restore android_app/ from the repository")
    return files


def sources_digest(files: list[Path]) -> str:
    """SHA-256 over every source (path and bytes) and the compiler version: the build cache key."""
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes() + b"\0")
    h.update(subprocess.run([_tool("javac"), "-version"], capture_output=True, text=True).stdout.encode())
    return h.hexdigest()


def build_jar(force: bool = False) -> Path:
    """The core's jar, rebuilt (javac --release 11) only when a source file or the compiler changed."""
    for jar in DEPENDENCY_JARS:
        if not jar.is_file():
            raise MobileSDError(f"{jar} is missing (JNA / org.json for the Android core)", SETUP_FIX)
    files = _sources()
    digest = sources_digest(files)
    jar = BUILD_DIR / JAR_NAME
    stamp = BUILD_DIR / f"{JAR_NAME}.sha256"
    if not force and jar.is_file() and stamp.is_file() and stamp.read_text().strip() == digest:
        return jar
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=BUILD_DIR, prefix=".build-") as tmp:
        classes = Path(tmp) / "classes"
        argfile = Path(tmp) / "sources.txt"
        argfile.write_text("\n".join(str(f) for f in files) + "\n")
        proc = subprocess.run([_tool("javac"), "--release", "11", "-encoding", "UTF-8", "-nowarn",
                               "-cp", os.pathsep.join(map(str, DEPENDENCY_JARS)), "-d", str(classes), f"@{argfile}"],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise MobileSDError(f"javac failed on android_app/:\n{proc.stderr.strip()[-4000:]}",
                                "fix the Java sources (the error is above)")
        built = Path(tmp) / JAR_NAME
        proc = subprocess.run([_tool("jar"), "--create", "--file", str(built), "-C", str(classes), "."],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise MobileSDError(f"jar failed: {proc.stderr.strip()}", SETUP_FIX)
        os.replace(built, jar)
    stamp.write_text(digest + "\n")
    return jar


def classpath(jar: Path) -> str:
    return os.pathsep.join([str(jar), *map(str, DEPENDENCY_JARS)])


def litert_library() -> Path:
    """libLiteRt.so of the ai-edge-litert wheel (the GPU accelerator library sits beside it)."""
    spec = importlib.util.find_spec("ai_edge_litert")
    if spec is None or not spec.submodule_search_locations:
        raise MobileSDError("ai-edge-litert is not installed in this Python", "bash scripts/setup.sh")
    lib = Path(list(spec.submodule_search_locations)[0]) / "libLiteRt.so"
    if not lib.is_file():
        raise MobileSDError(f"{lib} is missing: this ai-edge-litert wheel has no LiteRT C library",
                            "reinstall ai-edge-litert (scripts/setup.sh)")
    return lib


def litert_version() -> str:
    try:
        return f"LiteRT C API, libLiteRt.so of ai-edge-litert {importlib.metadata.version('ai-edge-litert')}"
    except importlib.metadata.PackageNotFoundError:
        return "LiteRT C API (libLiteRt.so)"


def run_core(core_args: list[str], *, quiet: bool = False, main_class: str = MAIN_CLASS) -> dict:
    """Runs the core's CLI with ``core_args`` and returns its result object; user errors become MobileSDError."""
    jar = build_jar()
    lib = litert_library()
    with tempfile.TemporaryDirectory(prefix="mobilesd-android-") as tmp:
        result = Path(tmp) / "result.json"
        cmd = [_tool("java"), "-cp", classpath(jar), main_class, *core_args, "--litert-lib", str(lib),
               "--runtime-version", litert_version(), "--result", str(result)]
        if quiet:
            cmd.append("--quiet")
        proc = subprocess.run(cmd, stdout=None if not quiet else subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if result.is_file():
            out = json.loads(result.read_text())
            if not out.get("ok"):
                problem = out.get("problem", "the Android core failed")
                if out.get("native_log"):
                    problem += f" (LiteRT's log: {out['native_log']})"
                raise MobileSDError(problem, out.get("fix"))
            return out
        raise MobileSDError(f"the Android core exited with status {proc.returncode} and no result:\n"
                            f"{proc.stderr.strip()[-4000:]}", "this is a bug in android_app/: please report it")


def core_arguments(args) -> list[str]:
    """The argparse namespace of `mobilesd app android` as the Java CLI's flags."""
    out = ["--bundle", str(args.bundle), "--prompt", args.prompt, "--steps", str(args.steps), "--seed", str(args.seed),
           "--out", str(args.out), "--accelerator", args.accelerator]
    if args.negative_prompt is not None:
        out += ["--negative-prompt", args.negative_prompt]
    if args.guidance is not None:
        out += ["--guidance", repr(float(args.guidance))]
    if args.scheduler is not None:
        out += ["--scheduler", args.scheduler]
    if args.report is not None:
        out += ["--report", str(args.report), "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
    if args.allow_cpu_fallback:
        out.append("--allow-cpu-fallback")
    if args.low_memory:
        out.append("--low-memory")
    if args.native_log is not None:
        out += ["--native-log", str(args.native_log)]
    return out


def run(args) -> int:
    if args.steps < 1:
        raise MobileSDError(f"--steps must be at least 1 (got {args.steps})", "pass --steps 20, for example")
    if args.report is not None and (args.warmup < 0 or args.repeats < 1):
        raise MobileSDError(f"--warmup {args.warmup} / --repeats {args.repeats} are out of range",
                            "use --warmup >= 0 and --repeats >= 1")
    run_core(core_arguments(args))
    return 0
