#!/usr/bin/env bash
# The JavaScript SDK's checks: install the pinned dev dependencies (npm ci), type-check the sources
# (tsc --checkJs), check that the committed declarations in types/ are what tsc generates, then the
# tests (node --test) against real hub processes the tests start themselves.
#
#   GPUSCOUT_BIN=target/debug/gpuscout client-sdk/js/run-tests.sh
#
# GPUSCOUT_BIN defaults to target/debug/gpuscout; a relative path is taken from the repository root.
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

cd "$HERE"
echo "[sdk-js] npm ci"
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error

echo "[sdk-js] tsc (type check)"
npx --no-install tsc -p . --noEmit

echo "[sdk-js] types/ is current"
GEN="$(mktemp -d "${TMPDIR:-/tmp}/gpuscout-sdk-types.XXXXXX")"
trap 'rm -rf "$GEN"' EXIT
npx --no-install tsc -p . --declarationDir "$GEN"
if ! diff -r types "$GEN" >/dev/null; then
  diff -ru types "$GEN" | head -40 >&2 || true
  echo "run-tests.sh: types/ is out of date: run 'npx tsc -p client-sdk/js' and commit types/" >&2
  exit 1
fi

echo "[sdk-js] node --test ($(node --version), hub $BIN)"
GPUSCOUT_BIN="$BIN" timeout -k 5 300 node --test test/*.test.mjs
