#!/usr/bin/env bash
# Set-up for the Android app's Java core (android_app/): everything it needs to build and test on this machine,
# from Debian bookworm. Idempotent: packages already installed are skipped. scripts/setup.sh calls it.
#   - openjdk-17-jdk-headless: javac / java / jar (the core compiles with --release 11, the app's language level)
#   - libjna-java (+ libjna-jni): JNA, which binds LiteRT's C API in the venv's ai_edge_litert/libLiteRt.so
#   - libandroid-json-java: Android's own org.json, so the core's JSON code is the phone's
#   - junit5: the JUnit 5 console launcher that scripts/test_android.sh runs
# The APK itself needs the Android SDK and Gradle plugin, which Debian does not ship: see android_app/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
PACKAGES="openjdk-17-jdk-headless libjna-java libjna-jni libandroid-json-java junit5"

missing=""
for pkg in $PACKAGES; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $pkg"
  fi
done
if [ -n "$missing" ]; then
  echo "setup_android: installing$missing"
  $SUDO apt-get update -q
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
fi

for jar in /usr/share/java/jna.jar /usr/share/java/com.android.json.jar /usr/share/java/junit-platform-console-standalone.jar; do
  [ -f "$jar" ] || { echo "setup_android: $jar is missing after the install" >&2; exit 1; }
done
command -v javac >/dev/null || { echo "setup_android: javac is not on PATH" >&2; exit 1; }
echo "setup_android: $(javac -version 2>&1), JNA, org.json and the JUnit 5 launcher are ready"
