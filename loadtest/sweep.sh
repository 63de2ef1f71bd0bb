#!/usr/bin/env bash
# The most deliveries per second: `fanout` against a fresh release hub for each load of a list of
# SUBSCRIBERSxRATE (one channel, 200-byte payloads, 20 s of publications at RATE/s), then one row
# per load: deliveries/s, latency from the schedule and from the send, how far the publisher fell
# behind, the hub's CPU per delivery, deliveries per frame, losses and the load average.
#   cargo build --release -p gpuscout-hub -p loadtest
#   loadtest/sweep.sh [LOADS="2000x20 2000x40 1000x80 5000x16 5000x20 2000x60 1000x150 2000x80 2000x100"]
# Writes target/loadtest/sweep-<N>x<R>.json.
set -euo pipefail
source "$(dirname "$0")/common.sh"
LOADS="${1:-2000x20 2000x40 1000x80 5000x16 5000x20 2000x60 1000x150 2000x80 2000x100}"

export GPUSCOUT__API__KEY=sweep-key GPUSCOUT__API__ALLOW_MARKET_CHANNELS=true \
  GPUSCOUT__INGEST__SIMULATED__ENABLED=false GPUSCOUT__LOG__LEVEL=warn
REPORTS=()
for load in $LOADS; do
  connections="${load%x*}"
  rate="${load#*x}"
  port="$(free_port)"
  start_hub "hub-$load" "$port"
  echo "== $connections subscribers x $rate/s (pid $HUB_PID)"
  "$LOADTEST" --hub "127.0.0.1:$port" --hub-pid "$HUB_PID" --label "$connections x $rate/s" \
    --json "$OUT/sweep-$load.json" fanout --channel "gpu:sweep$load" --connections "$connections" \
    --rate "$rate" --publications "$((20 * rate))" --payload 200 --source-ips 2 --max-seconds 600 >/dev/null
  kill "$HUB_PID"; wait "$HUB_PID" 2>/dev/null || true
  echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$OUT/sweep-$load.load"
  REPORTS+=("$OUT/sweep-$load.json")
done
python3 - "${REPORTS[@]}" <<'PY'
import json, sys
print("\n| subscribers × publications/s | deliveries/s | from schedule p50 / p99 / max (ms) | from send p99 (ms) | publisher behind p99 (ms) | hub CPU / delivery | deliveries per frame | lost | load average |")
print("|---|---|---|---|---|---|---|---|---|")
for path in sys.argv[1:]:
    r = json.load(open(path))
    s, send, behind = r["latency_ms"], r["latency_from_send_ms"], r["publisher_behind_ms"]
    load = open(path[:-5] + ".load").read().split(":")[1].split()[0]
    per_frame = r.get("deliveries_per_frame")
    cpu = r.get("hub_cpu_us_per_delivery")
    print(f"| {r['label']} | {r['deliveries_per_second']:,.0f} | {s['p50']:,.0f} / {s['p99']:,.0f} / {s['max']:,.0f} |"
          f" {send['p99']:,.0f} | {behind['p99']:,.0f} | {'-' if cpu is None else f'{cpu:.1f} µs'} |"
          f" {'-' if per_frame is None else f'{per_frame:.1f}'} | {r['lost']} | {load} |")
PY
