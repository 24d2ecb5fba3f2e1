#!/usr/bin/env bash
# Builds and caches the Debian trixie chroot in which the iOS client's Swift package (ios_app/) is built and
# tested on Linux: Debian's swiftlang (Swift 6), libc6-dev, and libonnxruntime-dev for the ONNX Runtime C
# headers. Bookworm has no Swift package; trixie's runs in a minbase chroot (../shared/PROBES.md).
#
# Idempotent: a finished chroot carries a stamp naming what it holds and is reused; an interrupted build is
# redone from scratch. The chroot lives outside the repository (default /var/cache/mobilesd/trixie-swift; set
# MOBILESD_IOS_CHROOT, or MOBILESD_CACHE for the folder above it). Nothing is mounted into it persistently:
# every use (here and scripts/swift.sh) mounts /proc and the sources inside a private mount namespace
# (unshare -m) that vanishes with the process, and /dev is never bind-mounted, so `rm -rf` of the chroot is
# always safe.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

CHROOT="${MOBILESD_IOS_CHROOT:-${MOBILESD_CACHE:-/var/cache/mobilesd}/trixie-swift}"
MIRROR="${MOBILESD_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES="swiftlang libc6-dev libonnxruntime-dev"
RECIPE="debootstrap --variant=minbase trixie; apt-get install --no-install-recommends $PACKAGES"
STAMP="$CHROOT/.mobilesd-chroot"

case "$CHROOT" in
  /|"") echo "setup_ios: refusing chroot path '$CHROOT'" >&2; exit 2 ;;
esac
repo="$(pwd -P)"
case "$CHROOT/" in
  "$repo"/*) echo "setup_ios: the chroot must be outside the repository ($CHROOT)" >&2; exit 2 ;;
esac

# Run a command inside the chroot with /proc mounted in a private mount namespace (gone when it exits).
in_chroot() {
  $SUDO unshare --mount --propagation private -- /bin/sh -c '
    set -e
    mount -t proc proc "$0/proc"
    exec chroot "$0" /usr/bin/env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin \
      DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@"' "$1" "${@:2}"
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$RECIPE" ]; then
  echo "setup_ios: chroot ready at $CHROOT ($(in_chroot "$CHROOT" swift --version 2>/dev/null | head -1))"
  exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q debootstrap
fi

PARTIAL="$CHROOT.partial"
if [ ! -f "$CHROOT/.mobilesd-base" ]; then
  # a base from an interrupted run is not trusted: start again
  $SUDO rm -rf --one-file-system "$PARTIAL" "$CHROOT"
  $SUDO mkdir -p "$(dirname "$CHROOT")"
  echo "setup_ios: debootstrap trixie into $PARTIAL (about 35 s plus downloads)"
  $SUDO debootstrap --variant=minbase trixie "$PARTIAL" "$MIRROR"
  $SUDO touch "$PARTIAL/.mobilesd-base"
  $SUDO mv "$PARTIAL" "$CHROOT"
fi

$SUDO cp /etc/resolv.conf "$CHROOT/etc/resolv.conf"
echo "setup_ios: apt-get install $PACKAGES (inside the chroot)"
in_chroot "$CHROOT" apt-get update -q
in_chroot "$CHROOT" apt-get install -y -q --no-install-recommends $PACKAGES
in_chroot "$CHROOT" apt-get clean
test -f "$CHROOT/usr/include/onnxruntime/onnxruntime_c_api.h" || {
  echo "setup_ios: libonnxruntime-dev did not install onnxruntime_c_api.h where expected" >&2; exit 1; }
echo "$RECIPE" | $SUDO tee "$STAMP" >/dev/null
echo "setup_ios: chroot ready at $CHROOT ($(in_chroot "$CHROOT" swift --version 2>/dev/null | head -1))"
