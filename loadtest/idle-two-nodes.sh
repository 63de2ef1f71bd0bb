#!/usr/bin/env bash
# Two hub nodes sharing one Redis hold idle authenticated connections from two load-generator
# processes (each process may open at most 20,000 files, so each opens PER_PROCESS connections
# spread over both nodes). Prints each generator's report and the nodes' memory per connection.
#   cargo build --release --workspace --bins
#   loadtest/idle-two-nodes.sh [per-process, default 19000]
# Needs Redis on REDIS_URL (default redis://127.0.0.1:6379); keys go under a fresh prefix.
set -euo pipefail
source "$(dirname "$0")/common.sh"
PER_PROCESS="${1:-19000}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
export GPUSCOUT__INGEST__SIMULATED__ENABLED=false GPUSCOUT__LOG__LEVEL=warn
export GPUSCOUT__BUS__REDIS_URL="$REDIS_URL" GPUSCOUT__BUS__REDIS_PREFIX="idle$RANDOM$RANDOM"
HUBS=() HUB_PIDS=()
for n in 1 2; do
  port="$(free_port)"
  start_hub "hub$n" "$port"
  HUB_PIDS+=("$HUB_PID") HUBS+=("127.0.0.1:$port")
done
HUB_LIST="$(IFS=,; echo "${HUBS[*]}")"
PID_LIST="$(IFS=,; echo "${HUB_PIDS[*]}")"
rss_sum() { local t=0; for p in "${HUB_PIDS[@]}"; do t=$((t + $(awk '/^VmRSS:/ {print $2}' "/proc/$p/status"))); done; echo "$t"; }
conn_sum() { local t=0; for h in "${HUBS[@]}"; do t=$((t + $(curl -sf "http://$h/metrics" | awk '/^gpuscout_connections / {print $2}'))); done; echo "$t"; }
RSS_BEFORE_KB="$(rss_sum)"
# Sample the nodes while the generators run: the most connections held at once, and the RSS then.
( best=0; while sleep 2; do c="$(conn_sum 2>/dev/null || echo 0)"; if [ "$c" -gt "$best" ]; then best=$c; echo "$c $(rss_sum)" > "$WORK/peak"; fi; done ) &
PIDS+=($!)
# Both generators ramp at once and hold until both are done (hold covers the other's ramp).
for g in 1 2; do
  "$LOADTEST" --hub "$HUB_LIST" --hub-pid "$PID_LIST" --label "generator $g" --json "$OUT/idle-two-nodes-$g.json" \
    connect-storm --connections "$PER_PROCESS" --source-ips 4 --concurrency 128 --hold-seconds 60 \
    > "$WORK/gen$g.out" 2>"$WORK/gen$g.err" &
  PIDS+=($!)
  GEN[$g]=$!
done
wait "${GEN[1]}" "${GEN[2]}"
cat "$WORK/gen1.out" "$WORK/gen2.out" | grep -v '^{'
read -r PEAK_CONNS PEAK_RSS_KB < "$WORK/peak"
echo "nodes: $PEAK_CONNS connections at once (gpuscout_connections summed), RSS ${RSS_BEFORE_KB} KB -> ${PEAK_RSS_KB} KB:" \
  "$(( (PEAK_RSS_KB - RSS_BEFORE_KB) * 1024 / (PEAK_CONNS > 0 ? PEAK_CONNS : 1) )) bytes per connection"
python3 - "$OUT/idle-two-nodes-1.json" "$OUT/idle-two-nodes-2.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
print(f"\nconnected {a['connected']} + {b['connected']} = {a['connected'] + b['connected']}; "
      f"held {a['held']} + {b['held']} = {a['held'] + b['held']}; failed {a['failed'] + b['failed']}")
PY
