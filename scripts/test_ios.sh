#!/usr/bin/env bash
# The iOS client's native unit tests (ios_app/Tests, XCTest) in the trixie chroot, against the golden vectors.
#   MOBILESD_GOLDEN        golden vectors folder (default build/golden; written if missing)
#   MOBILESD_TEST_RESULTS  where the JUnit XML goes (default build/test-results): ios.xml
# XCTest only (--disable-swift-testing: otherwise Swift Testing's closing "0 tests passed" line follows);
# --parallel, because SwiftPM writes --xunit-output only in parallel mode. Exits non-zero when a test fails,
# when the build fails, or when no test ran. Prints one summary line: "ios: N tests, F failed".
set -uo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd -P)"
PY="${PYTHON:-$repo/.venv/bin/python}"

golden="${MOBILESD_GOLDEN:-$repo/build/golden}"
results="${MOBILESD_TEST_RESULTS:-$repo/build/test-results}"
mkdir -p "$results"
golden="$(mkdir -p "$golden" && cd "$golden" && pwd -P)"
results="$(cd "$results" && pwd -P)"
if [ ! -f "$golden/index.json" ]; then
  echo "test_ios: writing golden vectors to $golden"
  "$PY" -m mobilesd.golden --out "$golden" >/dev/null || { echo "test_ios: could not write the golden vectors" >&2; exit 1; }
fi
xml="$results/ios.xml"
rm -f "$xml"

MOBILESD_GOLDEN="$golden" MOBILESD_IOS_MOUNTS="$golden:$results" \
  nice -n 10 bash scripts/swift.sh test --disable-swift-testing --parallel \
  --num-workers "${MOBILESD_IOS_TEST_WORKERS:-2}" --xunit-output "$xml"
rc=$?

if [ ! -f "$xml" ]; then
  echo "ios: no test results (swift test exited $rc before writing $xml)" >&2
  exit 1
fi
summary="$("$PY" - "$xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET

root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
tests = sum(int(s.get("tests", 0)) for s in suites)
failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
print(tests, failed)
EOF
)" || { echo "ios: cannot read $xml" >&2; exit 1; }
read -r tests failed <<<"$summary"
echo "ios: $tests tests, $failed failed (JUnit XML: $xml)"
if [ "$tests" -eq 0 ]; then echo "ios: no tests ran" >&2; exit 1; fi
if [ "$failed" -ne 0 ] || [ $rc -ne 0 ]; then exit 1; fi
exit 0
