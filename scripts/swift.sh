#!/usr/bin/env bash
# Runs a Swift command on the iOS client's package (ios_app/) inside the trixie chroot of scripts/setup_ios.sh:
#   bash scripts/swift.sh build -c release          # = swift build -c release, in ios_app/
#   bash scripts/swift.sh test --disable-swift-testing
#   bash scripts/swift.sh --run PROGRAM [ARGS...]   # any program, e.g. the built CLI, from the repository root
#
# Inside a private mount namespace (unshare -m: every mount ends with the command, nothing stays mounted on the
# host) it mounts /proc, a tmpfs on the chroot's /tmp, and the repository at its own absolute path (.build
# stores absolute paths, so the build cache stays valid). /dev is never bind-mounted. Further folders the
# command needs (bundles, output folders) are mounted at their own paths when listed, colon-separated, in
# MOBILESD_IOS_MOUNTS. MOBILESD_* variables are passed through.
#
# ONNX Runtime: the package links `ios_app/.build/onnxruntime-lib`, links made here to the onnxruntime wheel's
# library in the repository's .venv (or MOBILESD_ONNXRUNTIME_LIB), so the client runs the release the Python
# host runs, without Debian's build and its stderr noise.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd -P)"
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo -E"; fi
CHROOT="${MOBILESD_IOS_CHROOT:-${MOBILESD_CACHE:-/var/cache/mobilesd}/trixie-swift}"
if [ ! -f "$CHROOT/.mobilesd-chroot" ]; then
  echo "swift.sh: no Swift chroot at $CHROOT (fix: bash scripts/setup_ios.sh)" >&2
  exit 3
fi

ort="${MOBILESD_ONNXRUNTIME_LIB:-}"
if [ -z "$ort" ]; then
  ort="$(ls "$repo"/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.1.* 2>/dev/null | head -1 || true)"
fi
if [ -z "$ort" ] || [ ! -f "$ort" ]; then
  echo "swift.sh: no onnxruntime library in $repo/.venv (fix: bash scripts/setup.sh, or set MOBILESD_ONNXRUNTIME_LIB)" >&2
  exit 3
fi
libdir="$repo/ios_app/.build/onnxruntime-lib"
mkdir -p "$libdir"
ln -sfn "$ort" "$libdir/libonnxruntime.so"
ln -sfn "$ort" "$libdir/libonnxruntime.so.1"

if [ "${1:-}" = "--run" ]; then
  shift
  workdir="$repo"
  cmd=("$@")
else
  workdir="$repo/ios_app"
  cmd=(swift "$@")
fi
if [ ${#cmd[@]} -eq 0 ]; then
  echo "usage: bash scripts/swift.sh SWIFT-ARGS... | --run PROGRAM [ARGS...]" >&2
  exit 2
fi

# mount points: the repository and MOBILESD_IOS_MOUNTS, absolute, without ones inside another
mounts="$(
  { echo "$repo"; tr ':' '\n' <<<"${MOBILESD_IOS_MOUNTS:-}"; } | while read -r m; do
    [ -n "$m" ] || continue
    case "$m" in /*) ;; *) echo "swift.sh: MOBILESD_IOS_MOUNTS entry '$m' is not absolute" >&2; exit 2 ;; esac
    [ -d "$m" ] || { echo "swift.sh: cannot mount $m: not a folder" >&2; exit 2; }
    (cd "$m" && pwd -P)
  done | sort -u | awk 'BEGIN { last = "" } { if (last != "" && index($0, last "/") == 1) next; print; last = $0 }'
)"

export SWIFT_SH_ROOT="$CHROOT" SWIFT_SH_MOUNTS="$mounts" SWIFT_SH_WORKDIR="$workdir"
exec $SUDO unshare --mount --propagation private -- /bin/bash -c '
  set -euo pipefail
  root="$SWIFT_SH_ROOT"
  mount -t proc proc "$root/proc"
  mount -t tmpfs -o size=8g tmpfs "$root/tmp"
  while read -r m; do
    [ -n "$m" ] || continue
    mkdir -p "$root$m"
    mount --bind "$m" "$root$m"
  done <<<"$SWIFT_SH_MOUNTS"
  vars=(HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 TERM=dumb)
  while IFS= read -r -d "" kv; do
    case "$kv" in MOBILESD_*) vars+=("$kv") ;; esac
  done < <(env -0)
  exec chroot "$root" /usr/bin/env -i "${vars[@]}" /bin/sh -c "cd \"\$0\" && exec \"\$@\"" "$SWIFT_SH_WORKDIR" "$@"
' swift-sh "${cmd[@]}"
