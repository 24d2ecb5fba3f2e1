#!/usr/bin/env bash
# Set-up of the browser client (web_app/): its npm packages from package-lock.json (exact versions: LiteRT.js,
# which bundles its wasm, and ajv for the tests), and Playwright's Python package, which drives Debian's
# chromium (installed by scripts/setup.sh). No browser is downloaded: Playwright is pointed at /usr/bin/chromium
# (mobilesd/litert_js.py), and its own browser download is never run.
# Idempotent: npm ci runs again only when package-lock.json changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q nodejs npm
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "setup_web: Node.js $(node --version) is too old; the browser client's tests need Node.js 20 or newer" \
       "(node --test with the junit reporter)" >&2
  exit 1
fi
if ! command -v chromium >/dev/null 2>&1; then
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium
fi

stamp=web_app/node_modules/.mobilesd-lock-sha256
want=$(sha256sum web_app/package-lock.json | cut -c1-64)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  (cd web_app && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" > "$stamp"
fi
test -f web_app/node_modules/@litertjs/core/wasm/litert_wasm_internal.wasm

PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 .venv/bin/pip install -q -c constraints.txt "playwright==1.65.2"
.venv/bin/python -c "import playwright.sync_api"
echo "browser client set up: $(node --version), LiteRT.js $(node -p 'require("./web_app/node_modules/@litertjs/core/package.json").version'), $(chromium --version 2>/dev/null | head -1)"
