#!/usr/bin/env bash
# The same fan-out load against one hub on the in-process bus, then against two hubs sharing one
# Redis (subscribers split between them, publications through the first). Release builds:
#   cargo build --release --workspace --bins
#   loadtest/compare-bus.sh [connections] [publications] [rate] [payload]
# Needs Redis on REDIS_URL (default redis://127.0.0.1:6379); keys go under a fresh prefix.
# Writes target/loadtest/bus-{memory,redis}.json and prints both reports.
set -euo pipefail
cd "$(dirname "$0")/.."
CONNECTIONS="${1:-2000}"
PUBLICATIONS="${2:-2000}"
RATE="${3:-200}"
PAYLOAD="${4:-200}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
HUB="${GPUSCOUT_BIN:-$PWD/target/release/gpuscout}"
LOADTEST="${LOADTEST_BIN:-$PWD/target/release/loadtest}"
OUT="$PWD/target/loadtest"
mkdir -p "$OUT"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

export GPUSCOUT__API__KEY=compare-bus-key
export GPUSCOUT__INGEST__SIMULATED__ENABLED=false
export GPUSCOUT__LOG__LEVEL=warn

start_hub() { # port [redis prefix]
  local port=$1 dir="$WORK/$1"
  mkdir -p "$dir"
  (
    cd "$dir"
    if [ -n "${2:-}" ]; then
      export GPUSCOUT__BUS__REDIS_URL="$REDIS_URL" GPUSCOUT__BUS__REDIS_PREFIX="$2"
    fi
    GPUSCOUT__SERVER__LISTEN="127.0.0.1:$port" GPUSCOUT__DATABASE__URL="sqlite://$dir/hub.db" \
      exec "$HUB" serve 2>"$dir/hub.log"
  ) &
  PIDS+=($!)
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && return 0
    sleep 0.1
  done
  echo "hub on $port did not become ready" >&2
  cat "$dir/hub.log" >&2
  exit 1
}

run() { # name hubs pids
  "$LOADTEST" --hub "$2" --hub-pid "$3" --json "$OUT/bus-$1.json" fanout \
    --connections "$CONNECTIONS" --publications "$PUBLICATIONS" --rate "$RATE" --payload "$PAYLOAD" \
    --max-seconds 300 >/dev/null
  echo "== $1"
  cat "$OUT/bus-$1.json"
}

start_hub 9301
run memory 127.0.0.1:9301 "${PIDS[0]}"
kill "${PIDS[0]}"
PIDS=()

PREFIX="cmp$(date +%s)"
start_hub 9302 "$PREFIX"
start_hub 9303 "$PREFIX"
run redis 127.0.0.1:9302,127.0.0.1:9303 "${PIDS[0]},${PIDS[1]}"
