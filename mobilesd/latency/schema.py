"""The latency-report schema (JSON Schema, versioned) and its validator.

Host bench, the apps, the browser demo and the estimator all write the same JSON; see
docs/latency-report.md. ``validate_report`` turns schema violations into a MobileSDError that names the
field, what is wrong and what is expected.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import tempfile
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from mobilesd.errors import MobileSDError

# 1.1 added the optional top-level "synthetic" flag (hand-made examples); every 1.x report stays readable.
SCHEMA_VERSION = "1.1"
SCHEMA_PATH = Path(__file__).with_name("latency_report.schema.json")
TARGET_SECONDS = 7.0
STAGE_ORDER = ("load", "text_encoder", "unet_step", "vae_decoder", "end_to_end")
DOC = "docs/latency-report.md"


@lru_cache(maxsize=1)
def load_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def _validator():
    try:
        import jsonschema
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MobileSDError("the jsonschema package is not installed; latency reports cannot be validated",
                            "pip install -c constraints.txt 'jsonschema>=4.18'") from exc
    schema = load_schema()
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def _field(path: Iterable[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _describe(error) -> tuple[str, str]:
    """(problem, expected) for one jsonschema error, in words a report writer can act on."""
    field = _field(error.absolute_path)
    desc = error.schema.get("description") if isinstance(error.schema, dict) else None
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        sub = (error.schema.get("properties") or load_schema()["properties"]).get(missing, {})
        where = f"{field}.{missing}" if error.absolute_path else missing
        return f"field '{where}' is missing", sub.get("description") or desc or "see the schema"
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return (f"field '{field}' has unknown key(s) {', '.join(map(repr, extra))}",
                f"allowed keys: {', '.join(sorted(error.schema.get('properties', {})))}")
    if error.validator == "propertyNames" or (error.schema_path and "propertyNames" in error.schema_path):
        return f"field '{field}' has a bad key: {error.message}", \
            load_schema()["properties"]["stages"]["propertyNames"]["description"]
    return f"field '{field}' is invalid: {error.message}", desc or "see the schema"


def check_report(report: Any) -> list[tuple[str, str]]:
    """All problems of ``report`` as (problem, expected) pairs; empty when valid."""
    if not isinstance(report, dict):
        return [("the report is not a JSON object", "a latency report is one JSON object")]
    problems: list[tuple[str, str]] = []
    version = report.get("schema_version")
    if isinstance(version, str) and not version.startswith("1."):
        return [(f"schema_version '{version}' is not supported by this mobilesd (reads 1.x)",
                 f"write schema_version \"{SCHEMA_VERSION}\" or upgrade mobilesd")]
    for error in sorted(_validator().iter_errors(report), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path)))):
        # For "if/then" failures jsonschema reports the inner 'required' error too; keep it once.
        problems.append(_describe(error))
    if problems:
        return problems
    # Consistency that JSON Schema cannot say.
    for name, st in report["stages"].items():
        samples = st.get("samples_s")
        if samples:
            lo, hi = min(samples), max(samples)
            if not (lo - 1e-9 <= st["median_s"] <= hi + 1e-9):
                problems.append((f"field 'stages.{name}.median_s' = {st['median_s']} lies outside its samples [{lo}, {hi}]",
                                 "median_s must be the median of samples_s"))
        if "min_s" in st and "max_s" in st and st["min_s"] > st["max_s"]:
            problems.append((f"field 'stages.{name}': min_s > max_s", "min_s <= median_s <= max_s"))
    steps = report.get("steps")
    if steps:
        if [s["index"] for s in steps] != list(range(len(steps))):
            problems.append(("field 'steps' indices are not 0, 1, 2, ... in order", "one entry per step, index from 0"))
        if len(steps) != report["settings"]["steps"]:
            problems.append((f"field 'steps' has {len(steps)} entries but settings.steps is {report['settings']['steps']}",
                             "one timeline entry per denoising step"))
    return problems


def validate_report(report: Any, source: str = "report") -> dict:
    """Return ``report`` if it is a valid latency report, else raise MobileSDError naming every problem."""
    problems = check_report(report)
    if problems:
        lines = [f"{p} (expected: {e})" for p, e in problems[:8]]
        more = f"\n  ... and {len(problems) - 8} more" if len(problems) > 8 else ""
        raise MobileSDError(f"{source} is not a valid latency report:\n  " + "\n  ".join(lines) + more,
                            f"fix the field(s) above; the format is described in {DOC}")
    return report


def load_report(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise MobileSDError(f"latency report {path} does not exist", "pass the path of a JSON file written by "
                            "`mobilesd bench`, `mobilesd estimate` or an app")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MobileSDError(f"{path} is not JSON: {exc}", f"a latency report is a JSON object, see {DOC}") from exc
    return validate_report(data, str(path))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write via a temp file + rename so a failed run leaves no half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | Path, data: Any) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def write_report(path: str | Path, report: dict) -> Path:
    validate_report(report, "the report to write")  # never write an invalid report
    return write_json_atomic(path, report)


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def stage_stats(samples: list[float], calls_per_run: int | None = None) -> dict:
    """Median and spread of timed samples, in the schema's stage form."""
    if not samples:
        raise ValueError("no samples")
    xs = [float(x) for x in samples]
    out = {
        "median_s": statistics.median(xs),
        "samples_s": xs,
        "min_s": min(xs),
        "max_s": max(xs),
        "mean_s": statistics.fmean(xs),
        "stdev_s": statistics.stdev(xs) if len(xs) > 1 else 0.0,
    }
    if len(xs) >= 2:
        out["p90_s"] = statistics.quantiles(xs, n=10, method="inclusive")[-1]
    if calls_per_run:
        out["calls_per_run"] = int(calls_per_run)
    return out


def report_label(report: dict) -> str:
    """Short name for plots and tables; a synthetic example says so wherever its label appears."""
    if report.get("label"):
        label = report["label"]
    else:
        rt = report["runtime"]
        parts = [report["device"]["name"], rt["name"] + (f"-{rt['delegate']}" if rt.get("delegate") else "")]
        if report["kind"] == "estimate":
            parts.append("estimate")
        label = " / ".join(parts)
    return f"{label} (synthetic example)" if report.get("synthetic") else label


def end_to_end(report: dict) -> float:
    return float(report["stages"]["end_to_end"]["median_s"])
