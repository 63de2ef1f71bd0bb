#!/usr/bin/env bash
# The OpenAPI document against the running hub: schemathesis generates requests from
# /api/v1/openapi.json (examples, boundary values, fuzzed bodies, and sequences that follow the
# responses) and checks every answer: no 5xx, each status documented, each body and header as the
# document says, and schema-invalid requests refused.
#
#   GPUSCOUT_BIN=target/debug/gpuscout tests/openapi/run.sh
#
# One check is left out: `positive_data_acceptance` (every schema-valid request accepted). The
# document states each field's own limits, but some requests are refused for reasons a schema
# cannot carry: a model the market does not list, a machine that is not the caller's, `from`
# after `to`, `confirm: false`. Those answers are documented 422s.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BIN="${GPUSCOUT_BIN:-$ROOT/target/debug/gpuscout}"
[[ "$BIN" == /* ]] || BIN="$ROOT/$BIN"
[[ -x "$BIN" ]] || { echo "openapi: hub binary not found at $BIN (cargo build --bin gpuscout)" >&2; exit 1; }
PYTHON="${PYTHON:-python3}"

STAMP="$HERE/.venv/.installed"
if ! { [[ -f "$STAMP" ]] && cmp -s "$STAMP" "$HERE/requirements.txt"; }; then
  "$PYTHON" -m venv "$HERE/.venv"
  "$HERE/.venv/bin/pip" install --quiet --disable-pip-version-check --require-hashes -r "$HERE/requirements.txt"
  cp "$HERE/requirements.txt" "$STAMP"
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpuscout-openapi.XXXXXX")"
HUB_PID=""
cleanup() {
  local rc=$?
  [[ -n "$HUB_PID" ]] && kill "$HUB_PID" 2>/dev/null && wait "$HUB_PID" 2>/dev/null
  if [[ $rc -ne 0 ]]; then grep -E "WARN|ERROR" "$WORK/hub.log" | tail -n 20 >&2 || true; fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT

PORT="$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
URL="http://127.0.0.1:$PORT"
# A private hub on the embedded defaults, with the development login, limits high enough that
# the run tests the routes rather than the rate limiter (429 stays documented and checked), and
# linked accounts polled on a closed loopback port rather than at Vast.ai.
GPUSCOUT__SERVER__LISTEN="127.0.0.1:$PORT" \
GPUSCOUT__AUTH__DEV_MODE=true \
GPUSCOUT__DATABASE__URL="sqlite://$WORK/hub.db" \
GPUSCOUT__TIERS__ENTERPRISE__REST_PER_MINUTE=100000 \
GPUSCOUT__SERVER__REST_PER_MINUTE_PER_IP=100000 \
GPUSCOUT__INGEST__VAST_HOST__BASE_URL=http://127.0.0.1:9 \
  "$BIN" > "$WORK/hub.log" 2>&1 &
HUB_PID=$!
for _ in $(seq 1 100); do
  curl -sf "$URL/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "$URL/readyz" >/dev/null || { echo "openapi: the hub did not get ready" >&2; exit 1; }
TOKEN="$(curl -sf "$URL/api/v1/dev/token?user=openapi&tier=enterprise" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["token"])')"

cd "$WORK"
"$HERE/.venv/bin/schemathesis" run "$URL/api/v1/openapi.json" \
  --header "Authorization: Bearer $TOKEN" \
  --checks all --exclude-checks positive_data_acceptance \
  --max-examples "${OPENAPI_MAX_EXAMPLES:-40}" --seed 1 \
  --no-color
