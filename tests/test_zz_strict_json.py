"""Every manifest, bundle file, golden vector and latency report this test run wrote is strict JSON (no NaN or
Infinity), as Swift's JSONSerialization, Java's org.json and browsers' JSON.parse require. It reads what the
other tests produced under pytest's temporary folder, so it runs after them: last in file order in a plain
pytest run; scripts/test.sh, whose pytest-xdist workers keep no order, runs it on its own after the suite with
MOBILESD_STRICT_JSON_ROOT naming the suite's folder. Copies a test corrupted on purpose live under folders
named ``corrupt*`` and are left out."""

from __future__ import annotations

import json
import os
from pathlib import Path

from mobilesd.bundle import loads_strict
from shared import run_root


def _ours(path, obj) -> bool:
    if path.name == "manifest.json" or (path.parent / "manifest.json").exists():
        return True
    if any((p / "manifest.json").exists() for p in path.parents):
        return True   # inside a bundle (scheduler config, tokenizer files, quantization tables)
    if any((p / "index.json").exists() and "mobilesd-golden" in (p / "index.json").read_text()[:200]
           for p in path.parents):
        return True
    return isinstance(obj, dict) and "schema_version" in obj and "stages" in obj   # a latency report


def test_everything_this_run_wrote_is_strict_json(tmp_path_factory):
    given = os.environ.get("MOBILESD_STRICT_JSON_ROOT")
    root = Path(given) if given else run_root(tmp_path_factory)
    assert root.is_dir(), f"MOBILESD_STRICT_JSON_ROOT={given} is not a folder"
    checked, bad = 0, []
    for path in root.rglob("*.json"):
        if any(part.startswith("corrupt") for part in path.relative_to(root).parts):
            continue
        try:
            text = path.read_text()
            obj = json.loads(text)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if not _ours(path, obj):
            continue
        checked += 1
        try:
            loads_strict(text)
        except ValueError as exc:
            bad.append(f"{path.relative_to(root)}: {exc}")
    assert not bad, "\n".join(bad)
    # a lone run of this file, or a selection (-k) that wrote no bundle, has nothing to check
    assert checked > 0 or len(list(root.rglob("*.json"))) < 5, f"none of the JSON files under {root} was recognised"
