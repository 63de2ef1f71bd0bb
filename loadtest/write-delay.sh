#!/usr/bin/env bash
# Many deliveries a second: N subscribers each on C channels of one hub, publications at R/s over
# all channels (each subscriber receives every one: N × R deliveries/s offered), once per
# `server.write_delay_ms` in DELAYS, a fresh hub each time. Prints, per delay, deliveries/s, frames
# and system calls per second (the hub's `gpuscout_frames_written_total`; `perf stat` on the hub's
# syscall tracepoints over the publishing span, when perf is there), deliveries per frame, latency
# from the schedule and the hub's CPU per delivery.
#   cargo build --release -p gpuscout-hub -p loadtest
#   loadtest/write-delay.sh [N=19000] [C=4] [R=53] [PUBLICATIONS=1600] [DELAYS="0 2 5 10 20"]
# Writes target/loadtest/write-delay-<ms>.json.
set -euo pipefail
source "$(dirname "$0")/common.sh"
CONNECTIONS="${1:-19000}"
CHANNELS="${2:-4}"
RATE="${3:-53}"
PUBLICATIONS="${4:-1600}"
DELAYS="${5:-0 2 5 10 20}"

export GPUSCOUT__API__KEY=write-delay-key GPUSCOUT__API__ALLOW_MARKET_CHANNELS=true \
  GPUSCOUT__INGEST__SIMULATED__ENABLED=false GPUSCOUT__LOG__LEVEL=warn
REPORTS=()
for delay in $DELAYS; do
  port="$(free_port)"
  start_hub "hub-$delay" "$port" GPUSCOUT__SERVER__WRITE_DELAY_MS="$delay"
  echo "== write_delay_ms=$delay (pid $HUB_PID)"
  "$LOADTEST" --hub "127.0.0.1:$port" --hub-pid "$HUB_PID" --label "write_delay_ms=$delay" \
    --json "$OUT/write-delay-$delay.json" fanout --connections "$CONNECTIONS" --channels "$CHANNELS" \
    --rate "$RATE" --publications "$PUBLICATIONS" --payload 200 --source-ips 2 --max-seconds 600 \
    --channel gpu:wd >/dev/null
  echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
  kill "$HUB_PID"; wait "$HUB_PID" 2>/dev/null || true
  REPORTS+=("$OUT/write-delay-$delay.json")
done
"$LOADTEST" --svg "$OUT/write-delay.svg" plot "${REPORTS[@]}"
python3 - "${REPORTS[@]}" <<'PY'
import json, sys
print("\nlabel                 deliv/s  frames/s  deliv/frame  syscalls/s  sock writes/s  syscalls/deliv  sched p50/p99/max ms        CPU µs/deliv  lost")
for path in sys.argv[1:]:
    r = json.load(open(path))
    l = r["latency_ms"]
    f = lambda k, d=0: "-" if r.get(k) is None else f"{r[k]:,.{d}f}"
    print(f"{r['label']:<20} {r['deliveries_per_second']:>9,.0f} {f('hub_frames_per_second'):>9} {f('deliveries_per_frame', 1):>12}"
          f" {f('hub_syscalls_per_second'):>11} {f('hub_socket_write_syscalls_per_second'):>14} {f('hub_syscalls_per_delivery', 2):>15}"
          f"  {l['p50']:>7,.0f} / {l['p99']:>7,.0f} / {l['max']:>7,.0f}   {f('hub_cpu_us_per_delivery', 2):>10}  {r['lost']}")
PY
