#!/usr/bin/env bash
# Run a loadtest scenario against a private release hub set up for it: the advisor's provider is
# the fake OpenAI-compatible server the `advisor` and `mixed` scenarios serve, the simulated market
# runs (for `mixed`'s market books and alert evaluation), and the hub's pid is passed for its
# RSS and CPU. Everything after the script's name goes to `loadtest`:
#   loadtest/with-hub.sh advisor --streams 1000 --tokens 100 --token-gap-ms 100
#   loadtest/with-hub.sh mixed --connections 2000 --rate 20 --publications 600 --streams 100 --books 50
set -euo pipefail
source "$(dirname "$0")/common.sh"
PORT="$(free_port)"
PROVIDER="127.0.0.1:$(free_port)"
export GPUSCOUT__API__KEY=with-hub-key GPUSCOUT__API__ALLOW_MARKET_CHANNELS=true GPUSCOUT__LOG__LEVEL=warn
start_hub hub "$PORT" GPUSCOUT__ADVISOR__PROVIDER=openai GPUSCOUT__ADVISOR__OPENAI__BASE_URL="http://$PROVIDER" \
  GPUSCOUT__INGEST__SIMULATED__ENABLED="${SIMULATED:-true}"
scenario="$1"
shift
"$LOADTEST" --hub "127.0.0.1:$PORT" --hub-pid "$HUB_PID" "$scenario" --provider-listen "$PROVIDER" "$@"
