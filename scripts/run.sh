#!/usr/bin/env bash
# The main job on a fresh machine (README): set-up if needed (skipped when done), then export the bundled
# digits model for Android into bundles/android/ (replacing an earlier one). Extra arguments go to
# `mobilesd export`, e.g. `bash scripts/run.sh --target ios`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/mobilesd export --target android --overwrite "$@"
