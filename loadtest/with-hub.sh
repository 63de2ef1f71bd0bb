#!/usr/bin/env bash
# Run a loadtest scenario against a private release hub set up for it: the advisor's provider is
# the fake OpenAI-compatible server the `advisor` and `mixed` scenarios serve, the simulated market
# runs (for `mixed`'s market books and alert evaluation), and the hub's pid is passed for its
# RSS and CPU. Everything after the script's name goes to `loadtest`:
#   loadtest/with-hub.sh advisor --streams 1000 --tokens 100 --token-gap-ms 100
#   loadtest/with-hub.sh mixed --connections 2000 --rate 20 --publications 600 --streams 100 --books 50
set -euo pipefail
cd "$(dirname "$0")/.."
HUB="${GPUSCOUT_BIN:-$PWD/target/release/gpuscout}"
LOADTEST="${LOADTEST_BIN:-$PWD/target/release/loadtest}"
WORK="$(mktemp -d)"
ulimit -n "$(ulimit -Hn)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
PORT="$(free_port)"
PROVIDER="127.0.0.1:$(free_port)"
export GPUSCOUT__API__KEY=with-hub-key GPUSCOUT__LOG__LEVEL=warn
GPUSCOUT__SERVER__LISTEN="127.0.0.1:$PORT" GPUSCOUT__DATABASE__URL="sqlite://$WORK/hub.db" \
  GPUSCOUT__ADVISOR__PROVIDER=openai GPUSCOUT__ADVISOR__OPENAI__BASE_URL="http://$PROVIDER" \
  GPUSCOUT__INGEST__SIMULATED__ENABLED="${SIMULATED:-true}" \
  "$HUB" serve 2>"$WORK/hub.log" &
HUB_PID=$!
trap 'kill $HUB_PID 2>/dev/null || true; wait $HUB_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break
  sleep 0.1
done
scenario="$1"; shift
"$LOADTEST" --hub "127.0.0.1:$PORT" --hub-pid "$HUB_PID" "$scenario" --provider-listen "$PROVIDER" "$@"
