#!/usr/bin/env bash
# Browser tests of the dashboard (web/): Debian's chromium driven by playwright-core against a real
# hub the test starts (binary from GPUSCOUT_BIN). Installs chromium with apt-get when it is missing
# and this runs as root; installs playwright-core with npm ci (no browser download).
#
#   GPUSCOUT_BIN=target/debug/gpuscout tests/web/run-tests.sh
#
# GPUSCOUT_BIN defaults to target/debug/gpuscout; a relative path is taken from the repository root.
# The hubs the tests start serve the dashboard and the SDK from this checkout
# (server.static_dir, set by client-sdk/js/test/helpers.mjs), so the files tested are the working
# tree's whatever binary runs them. Screenshots go to artifacts/ at the repository root; the
# README's (docs/img/) are regenerated with `node tests/web/screenshots.mjs`, which this script
# runs too, writing to artifacts/img/ instead.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"

BIN="${GPUSCOUT_BIN:-target/debug/gpuscout}"
[[ "$BIN" == /* ]] || BIN="$ROOT/$BIN"
if [[ ! -x "$BIN" ]]; then
  echo "run-tests.sh: hub binary not found at $BIN (build it with: cargo build --bin gpuscout)" >&2
  exit 1
fi
command -v node >/dev/null || { echo "run-tests.sh: node (>= 18) is required" >&2; exit 1; }
command -v npm >/dev/null || { echo "run-tests.sh: npm is required" >&2; exit 1; }

CHROMIUM="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [[ ! -x "$CHROMIUM" ]]; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    echo "[web] installing chromium (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  fi
  if [[ ! -x "$CHROMIUM" ]]; then
    echo "run-tests.sh: chromium not found at $CHROMIUM (apt-get install chromium, or set CHROMIUM_PATH)" >&2
    exit 1
  fi
fi

cd "$HERE"
echo "[web] npm ci"
# No install scripts: playwright-core downloads nothing; the browser is Debian's.
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error

echo "[web] node --test ($(node --version), $("$CHROMIUM" --version 2>/dev/null | head -1), hub $BIN)"
# One file at a time: each starts its own hub and browser, and the performance test measures frames.
failed=()
for file in ./*.test.mjs; do
  echo "[web] $file"
  GPUSCOUT_BIN="$BIN" CHROMIUM_PATH="$CHROMIUM" timeout -k 5 300 node --test "$file" || failed+=("$file")
done
if (( ${#failed[@]} )); then
  echo "run-tests.sh: failed: ${failed[*]}" >&2
  exit 1
fi

echo "[web] screenshots (artifacts/img)"
GPUSCOUT_BIN="$BIN" CHROMIUM_PATH="$CHROMIUM" timeout -k 5 150 node screenshots.mjs "$ROOT/artifacts/img"
