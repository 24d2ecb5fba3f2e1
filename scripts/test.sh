#!/usr/bin/env bash
# The test command (README and CI): set-up if needed (skipped when done), then every suite: Python (pytest),
# the Android core (JUnit on the JVM), the iOS core (swift test in the Linux chroot) and the browser core
# (node --test; the browser e2e tests run in pytest), on golden vectors this run writes. One summary counts
# them all; the exit code is non-zero if any suite fails or runs no test.
#   bash scripts/test.sh               fast tests (CI)
#   bash scripts/test.sh -m slow       the slow Python tests (client suites too)
#   bash scripts/test.sh -k name       pytest selection (client suites still run)
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || { echo "set-up failed" >&2; exit 1; }

export MOBILESD_TEST_RESULTS="$PWD/build/test-results"
export MOBILESD_GOLDEN="$PWD/build/golden"
rm -rf "$MOBILESD_TEST_RESULTS"
mkdir -p "$MOBILESD_TEST_RESULTS"
.venv/bin/python -m mobilesd.golden --out "$MOBILESD_GOLDEN" >/dev/null || { echo "writing the golden vectors failed" >&2; exit 1; }

args=("$@")
# slow tests only when asked for with -m
case " $* " in *" -m "*) ;; *) args=(-m "not slow" "${args[@]}") ;; esac
.venv/bin/python -m pytest "${args[@]}" --junitxml="$MOBILESD_TEST_RESULTS/python.xml"
py=$?
# pytest exits 5 when no test was collected: a failure of the suite, the summary says so.

suites="python=$py"
for client in android ios web; do
  echo "---- $client client suite ----"
  bash "scripts/test_$client.sh"
  suites="$suites,$client=$?"
done
.venv/bin/python scripts/summarize_tests.py "$MOBILESD_TEST_RESULTS" "$suites"
