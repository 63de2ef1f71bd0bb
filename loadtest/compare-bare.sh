#!/usr/bin/env bash
# The same fan-out load against the hub (in-process bus) and against `loadtest bare-server`, a
# minimal tokio-tungstenite broadcast server (the stack with zero features), one after the other
# in one run; prints both reports and the hub's figures as a ratio of the bare server's.
#   cargo build --release --workspace --bins
#   loadtest/compare-bare.sh [connections] [publications] [rate] [payload]
# Writes target/loadtest/bare-{hub,bare}.json and target/loadtest/bare.svg (latency percentiles).
set -euo pipefail
source "$(dirname "$0")/common.sh"
CONNECTIONS="${1:-2000}"
PUBLICATIONS="${2:-2000}"
RATE="${3:-200}"
PAYLOAD="${4:-200}"

export GPUSCOUT__API__KEY=compare-bare-key GPUSCOUT__API__ALLOW_MARKET_CHANNELS=true GPUSCOUT__INGEST__SIMULATED__ENABLED=false GPUSCOUT__LOG__LEVEL=warn
HUB_PORT="$(free_port)"
start_hub hub "$HUB_PORT"
echo "== hub (pid $HUB_PID)"
"$LOADTEST" --hub "127.0.0.1:$HUB_PORT" --hub-pid "$HUB_PID" --label hub --json "$OUT/bare-hub.json" fanout \
  --connections "$CONNECTIONS" --publications "$PUBLICATIONS" --rate "$RATE" --payload "$PAYLOAD" \
  --source-ips 2 --max-seconds 600 --connect-concurrency 512
kill "$HUB_PID"; wait "$HUB_PID" 2>/dev/null || true

BARE_PORT="$(free_port)"
"$LOADTEST" bare-server --listen "127.0.0.1:$BARE_PORT" 2>"$WORK/bare.log" &
BARE_PID=$!
PIDS+=("$BARE_PID")
wait_port "$BARE_PORT" "$WORK/bare.log"
echo "== bare tokio-tungstenite broadcast server (pid $BARE_PID)"
"$LOADTEST" --hub "127.0.0.1:$BARE_PORT" --hub-pid "$BARE_PID" --label bare --json "$OUT/bare-bare.json" fanout \
  --connections "$CONNECTIONS" --publications "$PUBLICATIONS" --rate "$RATE" --payload "$PAYLOAD" \
  --source-ips 2 --max-seconds 600 --connect-concurrency 512

"$LOADTEST" --svg "$OUT/bare.svg" plot "$OUT/bare-hub.json" "$OUT/bare-bare.json"
python3 - "$OUT/bare-hub.json" "$OUT/bare-bare.json" <<'PY'
import json, sys
hub, bare = (json.load(open(p)) for p in sys.argv[1:3])
print("\n== hub / bare")
print(f"deliveries/s  {hub['deliveries_per_second']:.0f} / {bare['deliveries_per_second']:.0f}"
      f" = {hub['deliveries_per_second'] / max(bare['deliveries_per_second'], 1):.2f}")
for key, what in (("latency_ms", "from schedule"), ("latency_from_send_ms", "from send"),
                  ("publisher_behind_ms", "publisher behind schedule")):
    for p in ("p50", "p99", "max"):
        h, b = hub[key][p], bare[key][p]
        print(f"{what:<26} {p:<4} {h:9.1f} ms / {b:9.1f} ms = {h / max(b, 0.001):.2f}")
print(f"lost          {hub['lost']} / {bare['lost']}")
for k in ("hub_cpu_seconds", "hub_cpu_us_per_delivery", "generator_cpu_us_per_delivery", "hub_rss_bytes_per_connection", "hub_frames_per_second",
          "deliveries_per_frame", "hub_syscalls_per_second", "hub_socket_write_syscalls_per_second", "hub_syscalls_per_delivery"):
    print(f"{k}  {hub.get(k)} / {bare.get(k)}")
PY
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
