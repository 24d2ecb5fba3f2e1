#!/usr/bin/env bash
# The browser client's own suite: node --test on the pure JS core (web_app/test/) against the golden vectors
# (MOBILESD_GOLDEN, default build/golden) and the repository's JSON Schemas. JUnit XML goes to
# $MOBILESD_TEST_RESULTS/web.xml (default build/test-results/). Exits non-zero on any failure or when no test
# ran. The browser end-to-end tests (headless Chromium, LiteRT.js) are pytest's: tests/test_app_web.py.
set -uo pipefail
cd "$(dirname "$0")/.."
results="${MOBILESD_TEST_RESULTS:-$PWD/build/test-results}"
export MOBILESD_GOLDEN="${MOBILESD_GOLDEN:-$PWD/build/golden}"
mkdir -p "$results"
if [ ! -f "$MOBILESD_GOLDEN/index.json" ]; then
  echo "test_web: no golden vectors at $MOBILESD_GOLDEN: run .venv/bin/python -m mobilesd.golden --out build/golden" >&2
  exit 1
fi
if [ ! -d web_app/node_modules/ajv ]; then
  echo "test_web: web_app/node_modules is missing: run bash scripts/setup_web.sh" >&2
  exit 1
fi
xml="$results/web.xml"
rm -f "$xml"
(cd web_app && node --test --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=junit --test-reporter-destination="$xml" test/)
rc=$?
tests=$(grep -c "<testcase" "$xml" 2>/dev/null || true)
if [ "${tests:-0}" -eq 0 ]; then
  echo "test_web: no tests ran" >&2
  exit 1
fi
failed=$(grep -c "<failure" "$xml" 2>/dev/null || true)
echo "web: ${tests} tests, ${failed:-0} failed (JUnit: $xml)"
exit $rc
