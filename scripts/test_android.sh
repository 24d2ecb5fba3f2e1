#!/usr/bin/env bash
# The Android app core's JUnit suite (android_app/core, android_app/litert, android_app/cli + their tests),
# compiled with javac and run with the JUnit 5 console launcher from Debian (scripts/setup_android.sh installs
# them). Reads the golden vectors from $MOBILESD_GOLDEN (default build/golden; written here if missing) and
# writes a JUnit XML report to $MOBILESD_TEST_RESULTS/android.xml (default build/test-results/).
# Exits non-zero on any failure, and when no test ran.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export MOBILESD_REPO="$ROOT"
export MOBILESD_GOLDEN="${MOBILESD_GOLDEN:-$ROOT/build/golden}"
RESULTS="${MOBILESD_TEST_RESULTS:-$ROOT/build/test-results}"
BUILD="$ROOT/build/android/test"
JAVA_LIBS=/usr/share/java
LAUNCHER="$JAVA_LIBS/junit-platform-console-standalone.jar"
for jar in "$LAUNCHER" "$JAVA_LIBS/jna.jar" "$JAVA_LIBS/com.android.json.jar"; do
  if [ ! -f "$jar" ]; then
    echo "test_android.sh: $jar is missing; run: bash scripts/setup_android.sh" >&2
    exit 1
  fi
done
if [ ! -f "$MOBILESD_GOLDEN/index.json" ]; then
  echo "test_android.sh: writing golden vectors to $MOBILESD_GOLDEN"
  .venv/bin/python -m mobilesd.golden --out "$MOBILESD_GOLDEN" >/dev/null || exit 1
fi
CP="$JAVA_LIBS/com.android.json.jar:$JAVA_LIBS/jna.jar"
rm -rf "$BUILD" && mkdir -p "$BUILD/main" "$BUILD/test" "$RESULTS"
# shellcheck disable=SC2046
javac --release 11 -encoding UTF-8 -nowarn -cp "$CP" -d "$BUILD/main" \
  $(find android_app/core/src/main android_app/litert/src/main android_app/cli/src/main -name '*.java') || exit 1
# shellcheck disable=SC2046
javac --release 11 -encoding UTF-8 -nowarn -cp "$CP:$BUILD/main:$LAUNCHER" -d "$BUILD/test" \
  $(find android_app/core/src/test -name '*.java') || exit 1
REPORTS="$BUILD/reports"
java -jar "$LAUNCHER" --disable-banner --details=summary --fail-if-no-tests \
  --class-path "$CP:$BUILD/main:$BUILD/test" --scan-class-path "$BUILD/test" --reports-dir "$REPORTS"
rc=$?
if [ -f "$REPORTS/TEST-junit-jupiter.xml" ]; then
  cp "$REPORTS/TEST-junit-jupiter.xml" "$RESULTS/android.xml"
  # one line the combined summary can read: counts from the XML report
  python3 - "$RESULTS/android.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
s = ET.parse(sys.argv[1]).getroot()
t, f, e, k = (int(s.get(a, 0)) for a in ("tests", "failures", "errors", "skipped"))
print(f"android (JUnit): {t - f - e - k} passed, {f + e} failed, {k} skipped")
PY
else
  echo "test_android.sh: the launcher wrote no XML report" >&2
  [ $rc -eq 0 ] && rc=1
fi
exit $rc
