#!/usr/bin/env bash
# Market-to-screen data age: a release hub polling a fake 500.farm of MACHINES machines every 2 s
# (loadtest/fake500.py in age mode: 1% of the machines change on every poll, each body stamped
# with the time it is sent), CONNECTIONS subscribers on market:summary and three gpu:<model>
# channels for SECONDS: the age of every publication they receive (receipt minus its
# `source_ts`), publications per channel, the hub's CPU per delivery and its RSS.
#   cargo build --release --workspace --bins
#   loadtest/market-age.sh [MACHINES=20000] [CONNECTIONS=10000] [SECONDS=60]
# Writes target/loadtest/market-age.json.
set -euo pipefail
source "$(dirname "$0")/common.sh"
MACHINES="${1:-20000}"
CONNECTIONS="${2:-10000}"
# Not SECONDS: bash counts that one up by itself.
MEASURE_SECONDS="${3:-60}"

FARM_PORT="$(free_port)"
python3 "$ROOT/loadtest/fake500.py" "$FARM_PORT" "$MACHINES" age >"$WORK/fake500.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 1 600); do grep -q serving "$WORK/fake500.log" && break; sleep 0.1; done
wait_port "$FARM_PORT" "$WORK/fake500.log"
cat "$WORK/fake500.log"

PORT="$(free_port)"
export GPUSCOUT__LOG__LEVEL=warn
start_hub market "$PORT" GPUSCOUT__INGEST__FARM500__ENABLED=true \
  GPUSCOUT__INGEST__FARM500__BASE_URL="http://127.0.0.1:$FARM_PORT" GPUSCOUT__INGEST__FARM500__POLL_INTERVAL_MS=2000 \
  GPUSCOUT__INGEST__FARM500__JITTER_RATIO=0 GPUSCOUT__INGEST__SIMULATED__ENABLED=false
# The market holds data before anyone subscribes.
for _ in $(seq 1 600); do
  curl -s "http://127.0.0.1:$PORT/metrics" | grep -q '^gpuscout_source_polls_total{[^}]*result="ok"} [1-9]' && break
  sleep 0.1
done

"$LOADTEST" --hub "127.0.0.1:$PORT" --hub-pid "$HUB_PID" --label market-age --json "$OUT/market-age.json" \
  market-age --connections "$CONNECTIONS" --seconds "$MEASURE_SECONDS" --source-ips 2 \
  --max-seconds $((MEASURE_SECONDS + 300))
echo "wrote $OUT/market-age.json"
grep -E 'VmRSS|VmHWM' "/proc/$HUB_PID/status"
uptime
