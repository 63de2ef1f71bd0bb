#!/usr/bin/env bash
# The same fan-out load against one hub on the in-process bus, then against two hubs sharing one
# Redis (subscribers split between them, publications through the first). Release builds:
#   cargo build --release --workspace --bins
#   loadtest/compare-bus.sh [connections] [publications] [rate] [payload]
# Needs Redis on REDIS_URL (default redis://127.0.0.1:6379); keys go under a fresh prefix.
# Writes target/loadtest/bus-{memory,redis}.json and prints both reports.
set -euo pipefail
source "$(dirname "$0")/common.sh"
CONNECTIONS="${1:-2000}"
PUBLICATIONS="${2:-2000}"
RATE="${3:-200}"
PAYLOAD="${4:-200}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
export GPUSCOUT__API__KEY=compare-bus-key GPUSCOUT__API__ALLOW_MARKET_CHANNELS=true GPUSCOUT__INGEST__SIMULATED__ENABLED=false GPUSCOUT__LOG__LEVEL=warn

run() { # name hubs pids
  "$LOADTEST" --hub "$2" --hub-pid "$3" --label "$1" --json "$OUT/bus-$1.json" fanout \
    --connections "$CONNECTIONS" --publications "$PUBLICATIONS" --rate "$RATE" --payload "$PAYLOAD" \
    --max-seconds 300 >/dev/null
  echo "== $1"
  cat "$OUT/bus-$1.json"
}

P1="$(free_port)"
start_hub memory "$P1"
run memory "127.0.0.1:$P1" "$HUB_PID"
kill "$HUB_PID"
wait "$HUB_PID" 2>/dev/null || true

PREFIX="cmp$(date +%s)"
P2="$(free_port)" P3="$(free_port)"
start_hub redis1 "$P2" GPUSCOUT__BUS__REDIS_URL="$REDIS_URL" GPUSCOUT__BUS__REDIS_PREFIX="$PREFIX"
PID2=$HUB_PID
start_hub redis2 "$P3" GPUSCOUT__BUS__REDIS_URL="$REDIS_URL" GPUSCOUT__BUS__REDIS_PREFIX="$PREFIX"
run redis "127.0.0.1:$P2,127.0.0.1:$P3" "$PID2,$HUB_PID"
