#!/usr/bin/env bash
# One-time set-up on a fresh Debian bookworm machine (run as root, or with sudo available):
#   - Vulkan software driver (lavapipe) from bookworm-backports: the GPU-delegate check compiles every
#     Android graph on it (bookworm's own Mesa 22.3 is rejected by LiteRT's WebGPU: "No adapters found")
#   - Chromium: the latency-report test opens the HTML report in a real headless browser
#   - .venv with torch pinned to the local CPU wheel (2.13.0) and numpy < 2.4 (coremltools 9.0)
set -euo pipefail
cd "$(dirname "$0")/.."

# Safe to run again: a stamp of everything the set-up depends on makes a repeat run a no-op.
stamp_inputs() { cat scripts/setup*.sh pyproject.toml constraints.txt web_app/package-lock.json 2>/dev/null | sha256sum | cut -c1-32; }
STAMP=.venv/.mobilesd-setup-done
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(stamp_inputs)" ] && [ "${MOBILESD_FORCE_SETUP:-0}" != "1" ]; then
  echo "set-up already done (delete $STAMP or set MOBILESD_FORCE_SETUP=1 to redo it)"
  exit 0
fi

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

if command -v apt-get >/dev/null 2>&1; then
  if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      | $SUDO tee /etc/apt/sources.list.d/mobilesd-backports.sources >/dev/null
  fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q -t bookworm-backports \
    mesa-vulkan-drivers mesa-libgallium libdrm2 libvulkan1
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# torch first and pinned: an unpinned torch pulls several GB of CUDA packages.
.venv/bin/pip install -q torch==2.13.0
# a fresh 3.11 venv ships setuptools 65 without wheel: the packaging test builds a wheel without isolation
.venv/bin/pip install -q -c constraints.txt "setuptools>=68" wheel
.venv/bin/pip install -q -c constraints.txt -e ".[test]"
# open_clip only for its bundled CLIP BPE vocabulary; --no-deps keeps torchvision (no CPU build) out.
.venv/bin/pip install -q -c constraints.txt --no-deps "open_clip_torch==3.3.0"
.venv/bin/python -c "import mobilesd.converters, mobilesd.quant, mobilesd.tokenizer as t; t.open_clip_bpe_path()"
# the app clients: JDK + JUnit + JNA (Android core), the Swift chroot + ONNX Runtime headers (iOS core),
# npm packages + Playwright driving Debian's chromium (browser)
for client in android ios web; do
  bash "scripts/setup_$client.sh"
done
stamp_inputs > "$STAMP"
echo "set-up done: .venv ready (torch $(.venv/bin/python -c 'import torch; print(torch.__version__)'))"
