#!/usr/bin/env bash
# The other subscribers' latency with and without hostile clients: a release hub on a fake
# 500.farm of MACHINES machines (loadtest/fake500.py), SUBSCRIBERS subscribers on one channel and
# a publisher at RATE/s, run twice: alone, then with HOARDERS clients that each ask for the
# `offers:all` snapshot twenty times in one frame, never read, and do it again whenever the hub
# closes them (loadtest fanout --hoarders). Prints both reports' p50/p99 and the hub's RSS.
#   loadtest/hoarders.sh [MACHINES=100000] [SUBSCRIBERS=1000] [HOARDERS=4] [RATE=20] [PUBLICATIONS=400]
set -euo pipefail
source "$(dirname "$0")/common.sh"
MACHINES="${1:-100000}"
SUBSCRIBERS="${2:-1000}"
HOARDERS="${3:-4}"
RATE="${4:-20}"
PUBLICATIONS="${5:-400}"

FARM_PORT="$(free_port)"
python3 "$ROOT/loadtest/fake500.py" "$FARM_PORT" "$MACHINES" >"$WORK/fake500.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 1 600); do grep -q serving "$WORK/fake500.log" && break; sleep 0.1; done
wait_port "$FARM_PORT" "$WORK/fake500.log"

PORT="$(free_port)"
export GPUSCOUT__API__KEY=hoarders-key GPUSCOUT__API__ALLOW_MARKET_CHANNELS=true GPUSCOUT__LOG__LEVEL=warn
start_hub hub "$PORT" GPUSCOUT__INGEST__FARM500__ENABLED=true \
  GPUSCOUT__INGEST__FARM500__BASE_URL="http://127.0.0.1:$FARM_PORT" GPUSCOUT__INGEST__FARM500__POLL_INTERVAL_MS=5000
for _ in $(seq 1 600); do
  curl -s "http://127.0.0.1:$PORT/metrics" | grep -q '^gpuscout_source_polls_total{[^}]*result="ok"} [1-9]' && break
  sleep 0.1
done

for hoarders in 0 "$HOARDERS"; do
  "$LOADTEST" --hub "127.0.0.1:$PORT" --hub-pid "$HUB_PID" --label "hoarders-$hoarders" \
    --json "$OUT/hoarders-$hoarders.json" fanout --connections "$SUBSCRIBERS" --rate "$RATE" \
    --publications "$PUBLICATIONS" --payload 200 --hoarders "$hoarders" --fail-on-loss >/dev/null
  python3 - "$OUT/hoarders-$hoarders.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
l = r["latency_ms"]
print(f'{r["label"]}: {r["delivered"]}/{r["expected_deliveries"]} delivered, p50 {l["p50"]:.1f} ms, '
      f'p99 {l["p99"]:.1f} ms, max {l["max"]:.1f} ms; hoarders closed {r["hoarder_closes"]} times; '
      f'hub RSS {r.get("hub_rss_bytes_before", 0) / 2**20:.0f} -> {r.get("hub_rss_bytes_after", 0) / 2**20:.0f} MB')
PY
done
grep -E 'VmHWM' "/proc/$HUB_PID/status"
