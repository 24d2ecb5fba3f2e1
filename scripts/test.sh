#!/usr/bin/env bash
# The test command (README and CI). Fast tests by default; `bash scripts/test.sh -m slow` for the slow ones.
set -uo pipefail
cd "$(dirname "$0")/.."
args=("$@")
# slow tests only when asked for with -m
case " $* " in *" -m "*) ;; *) args=(-m "not slow" "${args[@]}") ;; esac
.venv/bin/python -m pytest "${args[@]}"
rc=$?
# pytest exits 5 when no test was collected: that is a failure of the suite, say so.
if [ $rc -eq 5 ]; then echo "no tests ran (pytest exit 5)" >&2; exit 1; fi
exit $rc
