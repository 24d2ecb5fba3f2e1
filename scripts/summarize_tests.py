"""Read every suite's JUnit XML report and print one combined summary; exit non-zero if any suite failed,
ran no test, or wrote no report. Used by scripts/test.sh (the README's test command, which CI runs)."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def counts(path: Path) -> dict:
    """Counts of the test cases anywhere in a JUnit XML file: reporters nest them differently (pytest and JUnit
    in one <testsuite>, Swift's xunit in nested suites, node's test runner directly under <testsuites> for
    tests outside describe blocks), so every <testcase> element counts once, wherever it stands."""
    cases = list(ET.parse(path).getroot().iter("testcase"))
    return {"tests": len(cases),
            "failures": sum(1 for t in cases if t.find("failure") is not None),
            "errors": sum(1 for t in cases if t.find("error") is not None),
            "skipped": sum(1 for t in cases if t.find("skipped") is not None)}


def main(argv: list[str]) -> int:
    results = Path(argv[0])
    suites = argv[1].split(",")                     # name=exit code pairs, in run order
    ok, total = True, {"passed": 0, "failed": 0, "skipped": 0}
    parts = []
    print("\n==================== test summary (all suites) ====================")
    for item in suites:
        name, code = item.split("=")
        # a suite may write its report in parts: <name>.xml and <name>-<part>.xml (scripts/test.sh)
        reports = [results / f"{name}.xml"] + sorted(results.glob(f"{name}-*.xml"))
        if not reports[0].exists():
            print(f"{name:>8}: NO REPORT (runner exit {code})")
            ok = False
            continue
        parts_counts = [counts(r) for r in reports]
        c = {k: sum(pc[k] for pc in parts_counts) for k in parts_counts[0]}
        failed = c["failures"] + c["errors"]
        passed = c["tests"] - failed - c["skipped"]
        status = "ok" if (failed == 0 and c["tests"] > 0 and code == "0") else "FAILED"
        if c["tests"] == 0:
            status = "FAILED (no tests ran)"
        ok &= status == "ok"
        total["passed"] += passed
        total["failed"] += failed
        total["skipped"] += c["skipped"]
        parts.append(f"{name} {passed}")
        print(f"{name:>8}: {passed} passed, {failed} failed, {c['skipped']} skipped (runner exit {code}) {status}")
    print(f"{total['passed']} passed, {total['failed']} failed, {total['skipped']} skipped "
          f"({', '.join(parts)})" + ("" if ok else "  -- FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
