#!/usr/bin/env bash
# The small load test of CI: 1,000 subscribers on one channel of a private hub, 1,000 publications
# through the server API. Fails on any lost delivery or connection, never on timing.
#
#   GPUSCOUT_BIN=target/debug/gpuscout LOADTEST_BIN=target/debug/loadtest loadtest/ci.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${GPUSCOUT_BIN:-$ROOT/target/debug/gpuscout}"
LOADTEST="${LOADTEST_BIN:-$ROOT/target/debug/loadtest}"
CONNECTIONS="${CONNECTIONS:-1000}"
PUBLICATIONS="${PUBLICATIONS:-1000}"
ulimit -n 8192

WORK="$(mktemp -d)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"
KEY="lt-$RANDOM$RANDOM"
mkdir -p "$WORK/config"
export GPUSCOUT_CONFIG_DIR="$WORK/config"
GPUSCOUT__SERVER__LISTEN="127.0.0.1:$PORT" GPUSCOUT__API__KEY="$KEY" GPUSCOUT__API__ALLOW_MARKET_CHANNELS=true \
  GPUSCOUT__DATABASE__URL="sqlite://$WORK/hub.db" GPUSCOUT__INGEST__SIMULATED__ENABLED=false \
  GPUSCOUT__LOG__LEVEL=warn "$BIN" > "$WORK/hub.log" 2>&1 &
HUB=$!
trap 'kill $HUB 2>/dev/null || true; wait $HUB 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
"$LOADTEST" --hub "127.0.0.1:$PORT" --api-key "$KEY" --hub-pid "$HUB" fanout \
  --connections "$CONNECTIONS" --publications "$PUBLICATIONS" --rate 200 --payload 200 \
  --max-seconds 600 --fail-on-loss
