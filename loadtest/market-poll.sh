#!/usr/bin/env bash
# A release hub polling a fake 500.farm of N machines (loadtest/fake500.py; 1% of machines change
# between polls) every 5 s: the time of each poll's market update (normalised offers → books,
# diff, aggregates, deltas), and the hub's RSS and peak RSS.
#   loadtest/market-poll.sh [MACHINES=100000] [POLLS=8]
set -euo pipefail
source "$(dirname "$0")/common.sh"
MACHINES="${1:-100000}"
POLLS="${2:-8}"

FARM_PORT="$(free_port)"
python3 "$ROOT/loadtest/fake500.py" "$FARM_PORT" "$MACHINES" >"$WORK/fake500.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 1 600); do grep -q serving "$WORK/fake500.log" && break; sleep 0.1; done
wait_port "$FARM_PORT" "$WORK/fake500.log"
cat "$WORK/fake500.log"

start_hub market "$(free_port)" RUST_LOG=info,gpuscout_hub::ingest::runner=debug \
  GPUSCOUT__INGEST__FARM500__ENABLED=true GPUSCOUT__INGEST__FARM500__BASE_URL="http://127.0.0.1:$FARM_PORT" \
  GPUSCOUT__INGEST__FARM500__POLL_INTERVAL_MS=5000 GPUSCOUT__INGEST__FARM500__JITTER_RATIO=0
for _ in $(seq 1 $((POLLS * 70))); do
  [[ "$(grep -c 'market updated' "$WORK/market.log" || true)" -ge "$POLLS" ]] && break
  sleep 0.1
done
echo "market updates (ms), the first on an empty market:"
grep 'market updated' "$WORK/market.log" | sed 's/\x1b\[[0-9;]*m//g' | grep -o 'elapsed_ms=[0-9]*' | cut -d= -f2 | paste -sd' '
grep -E 'VmRSS|VmHWM' "/proc/$HUB_PID/status"
