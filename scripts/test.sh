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
# pytest-xdist: one worker per core (at most 4); files stay whole on a worker, bundles shared across files are
# built once under a file lock (tests/shared.py). Pass -n 0 to run in one process.
workers=(-n auto --maxprocesses 4 --dist loadfile)
case " $* " in *" -n "*|*" -n="*|*" -p no:xdist "*) workers=() ;; esac
# one compute thread per worker: torch's default (a thread per core) in every worker made the training tests
# 10x slower by oversubscription (TDQ test: 24 s alone, 244 s beside another worker)
[ ${#workers[@]} -gt 0 ] && export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
basetemp="$PWD/build/pytest-tmp"
.venv/bin/python -m pytest "${workers[@]}" "${args[@]}" --basetemp "$basetemp" \
  --ignore tests/test_zz_strict_json.py --junitxml="$MOBILESD_TEST_RESULTS/python.xml"
py=$?
# pytest exits 5 when no test was collected: a failure of the suite, the summary says so.
# Then the check of everything the suite wrote (strict JSON), once the workers are done; a part of the suite.
MOBILESD_STRICT_JSON_ROOT="$basetemp" .venv/bin/python -m pytest -q -p no:xdist tests/test_zz_strict_json.py \
  --basetemp "$PWD/build/pytest-tmp-json" --junitxml="$MOBILESD_TEST_RESULTS/python-strict-json.xml"
json_rc=$?
[ "$py" = 0 ] && py=$json_rc

suites="python=$py"
for client in android ios web; do
  echo "---- $client client suite ----"
  bash "scripts/test_$client.sh"
  suites="$suites,$client=$?"
done
.venv/bin/python scripts/summarize_tests.py "$MOBILESD_TEST_RESULTS" "$suites"
