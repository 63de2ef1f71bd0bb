#!/usr/bin/env bash
# Two hub nodes share one Redis; clients are split between them and subscribe to a few channels
# fed through node B. Node A is then killed (SIGKILL, or SIGTERM for a graceful shutdown) and its
# clients reconnect to node B, recovering what they missed. Reports how fast A's clients are live
# again, what they recovered, duplicates and losses, and node B's CPU and memory in the storm.
#   cargo build --release --workspace --bins
#   loadtest/failover.sh [connections per node, default 9000] [sigkill|sigterm, default sigkill] \
#     [seconds to publish and measure after the kill, default 20]
# Runs its own redis-server on a free port (nothing saved). The load generator holds both nodes'
# clients in one process: 2 x connections sockets, under its open-file limit (20,000 here).
# Writes target/loadtest/failover-<signal>.json.
set -euo pipefail
source "$(dirname "$0")/common.sh"
CONNECTIONS="${1:-9000}"
SIGNAL="${2:-sigkill}"
RUN_SECONDS="${3:-20}"
case "$SIGNAL" in
  sigkill | sigterm) ;;
  *)
    echo "usage: $0 [connections per node] [sigkill|sigterm] [seconds after the kill]" >&2
    exit 2
    ;;
esac

REDIS_PORT="$(free_port)"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
  >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
wait_port "$REDIS_PORT" "$WORK/redis.log"

# The simulated market stays on: the leader node feeds market:summary, and node B takes the lease
# over when node A dies.
export GPUSCOUT__API__KEY=failover-key GPUSCOUT__API__ALLOW_MARKET_CHANNELS=true GPUSCOUT__LOG__LEVEL=warn
export GPUSCOUT__BUS__REDIS_URL="redis://127.0.0.1:$REDIS_PORT" GPUSCOUT__BUS__REDIS_PREFIX="failover$RANDOM$RANDOM"
PORT_A="$(free_port)"
start_hub node-a "$PORT_A"
PID_A=$HUB_PID
PORT_B="$(free_port)"
start_hub node-b "$PORT_B"
PID_B=$HUB_PID
echo "== node A 127.0.0.1:$PORT_A (pid $PID_A, gets $SIGNAL), node B 127.0.0.1:$PORT_B (pid $PID_B)"

# A first: it is the node killed; B is measured and takes every publication.
"$LOADTEST" --hub "127.0.0.1:$PORT_A,127.0.0.1:$PORT_B" --hub-pid "$PID_A,$PID_B" --label "failover $SIGNAL" \
  --json "$OUT/failover-$SIGNAL.json" failover --connections "$CONNECTIONS" --source-ips 2 --kill "$SIGNAL" --run-seconds "$RUN_SECONDS"

python3 - "$OUT/failover-$SIGNAL.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
report.get("live_again_ms", {}).pop("curve", None)
print(json.dumps(report, indent=1))
PY
uptime
