#!/usr/bin/env bash
# Protocol conformance: the unmodified `centrifuge` npm client (js/), and centrifuge-python plus the
# `cent` server API client (python/), against a private hub started here; then the channel payloads
# of a hub with a market and an advisor against their JSON Schemas (python/schemas.py,
# docs/schemas/); then the developer examples of docs/developers.md, and every code block of
# README.md, client-sdk/README.md and docs/ (scripts/doc-snippets.py, which starts hubs of its own).
#
#   GPUSCOUT_BIN=target/debug/gpuscout tests/conformance/run.sh
#
# GPUSCOUT_BIN defaults to target/debug/gpuscout, relative to the repository root. Installs the npm
# packages with `npm ci` (js/node_modules) and the Python ones with `pip install --require-hashes`
# into tests/conformance/.venv, each skipped when its lock file has not changed since the last
# install. Exits non-zero if the hub does not start or any check fails.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"

BIN="${GPUSCOUT_BIN:-target/debug/gpuscout}"
[[ "$BIN" == /* ]] || BIN="$ROOT/$BIN"
if [[ ! -x "$BIN" ]]; then
  echo "run.sh: hub binary not found at $BIN (build it with: cargo build --bin gpuscout)" >&2
  exit 1
fi
command -v node >/dev/null || { echo "run.sh: node is required" >&2; exit 1; }
command -v npm >/dev/null || { echo "run.sh: npm is required" >&2; exit 1; }
PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null || { echo "run.sh: $PYTHON is required" >&2; exit 1; }

log() { printf '[conformance] %s\n' "$*"; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpuscout-conformance.XXXXXX")"
HUB_PID=""
CHILD_PID=""
LLM_PID=""

stop_llm() {
  if [[ -n "$LLM_PID" ]]; then
    kill -TERM "$LLM_PID" 2>/dev/null || true
    wait "$LLM_PID" 2>/dev/null || true
  fi
  LLM_PID=""
}

stop_hub() {
  if [[ -n "$HUB_PID" ]] && kill -0 "$HUB_PID" 2>/dev/null; then
    kill -TERM "$HUB_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$HUB_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$HUB_PID" 2>/dev/null || true
    wait "$HUB_PID" 2>/dev/null || true
  fi
  HUB_PID=""
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n "$CHILD_PID" ]]; then
    kill -TERM "$CHILD_PID" 2>/dev/null || true
    wait "$CHILD_PID" 2>/dev/null || true
  fi
  stop_hub
  stop_llm
  if [[ $rc -ne 0 && -f "$WORK/hub.log" ]]; then
    echo "---- hub log (last 60 lines) ----" >&2
    tail -n 60 "$WORK/hub.log" >&2 || true
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- dependencies -------------------------------------------------------------------------------

sha() { sha256sum "$@" | sha256sum | cut -d' ' -f1; }

install_js() {
  local dir="$HERE/js" stamp="$HERE/js/node_modules/.conformance-stamp"
  local want
  want="$(sha "$dir/package.json" "$dir/package-lock.json") node-$(node --version)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    log "npm packages are current"
    return
  fi
  log "npm ci (js/)"
  # No install scripts: the client libraries need none.
  (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
}

install_python() {
  local venv="$HERE/.venv" req="$HERE/python/requirements.txt" stamp="$HERE/.venv/.conformance-stamp"
  local want
  want="$(sha "$req") $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && "$venv/bin/python" -c 'import centrifuge, cent, jsonschema, prometheus_client' 2>/dev/null; then
    log "Python packages are current"
    return
  fi
  log "pip install --require-hashes (python/ into .venv)"
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    --require-hashes -r "$req"
  echo "$want" >"$stamp"
}

install_js
install_python

# ---- the hub ------------------------------------------------------------------------------------

free_port() {
  "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Only the settings compiled into the binary plus the environment below: a developer's config/
# files (or a config/default.toml newer than the binary) do not leak in.
export GPUSCOUT_CONFIG_DIR="${GPUSCOUT_CONFIG_DIR:-$WORK/config}"
export GPUSCOUT__API__ALLOW_MARKET_CHANNELS=true GPUSCOUT__API__ALLOW_PERSONAL_CHANNELS=true
# The webhook receiver of the Standard Webhooks check is local.
export GPUSCOUT__ALERTS__WEBHOOK_ALLOW_HTTP=true GPUSCOUT__ALERTS__WEBHOOK_ALLOW_PRIVATE=true
export GPUSCOUT__API__KEY="conformance-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
export GPUSCOUT__DATABASE__URL="sqlite://$WORK/hub.db"
export GPUSCOUT__INGEST__SIMULATED__ENABLED=false
# Short ping and pong intervals (defaults 25 s and 10 s), so the scripts can check within seconds
# that the clients get pings and answer them. GPUSCOUT_PING_S tells the scripts.
export GPUSCOUT_PING_S="${GPUSCOUT_PING_S:-2}"
export GPUSCOUT__SERVER__PING_INTERVAL_S="$GPUSCOUT_PING_S"
export GPUSCOUT__SERVER__PONG_TIMEOUT_S="${GPUSCOUT__SERVER__PONG_TIMEOUT_S:-2}"

# readyz answers 200 once the bus and the database are up.
ready() {
  if command -v curl >/dev/null; then
    curl -sf --noproxy '*' -m 2 -o /dev/null "http://127.0.0.1:$1/readyz"
  else
    "$PYTHON" -c 'import sys, urllib.request as u; u.build_opener(u.ProxyHandler({})).open(sys.argv[1], timeout=2)' \
      "http://127.0.0.1:$1/readyz" 2>/dev/null
  fi
}

start_hub() {
  local attempt port
  for attempt in 1 2 3; do
    port="$(free_port)"
    export GPUSCOUT__SERVER__LISTEN="127.0.0.1:$port"
    log "starting the hub on 127.0.0.1:$port (attempt $attempt)"
    "$BIN" serve >"$WORK/hub.log" 2>&1 &
    HUB_PID=$!
    for _ in $(seq 1 300); do
      if ! kill -0 "$HUB_PID" 2>/dev/null; then
        break
      fi
      if ready "$port"; then
        PORT="$port"
        return 0
      fi
      sleep 0.1
    done
    if kill -0 "$HUB_PID" 2>/dev/null; then
      echo "run.sh: the hub did not become ready within 30 s" >&2
      return 1
    fi
    wait "$HUB_PID" 2>/dev/null || true
    HUB_PID=""
    echo "run.sh: the hub exited during start; its log:" >&2
    tail -n 20 "$WORK/hub.log" >&2 || true
  done
  return 1
}

PORT=""
start_hub
export GPUSCOUT_URL="http://127.0.0.1:$PORT" GPUSCOUT_PORT="$PORT" GPUSCOUT_API_KEY="$GPUSCOUT__API__KEY"
log "hub ready at $GPUSCOUT_URL (pid $HUB_PID)"

# Tokens are minted with the same settings (environment) as the running hub, so the secrets match.
token() { "$BIN" token --user "$1" --tier "$2" --ttl 600; }

# ---- the scripts --------------------------------------------------------------------------------

# run_script DIR PRO_USER FREE_USER COMMAND...: in DIR, with fresh tokens, at most 90 s. In the
# background and waited for, so that a signal to this script ends it (and the hub) at once.
run_script() {
  local dir="$1" pro="$2" free="$3" rc=0
  shift 3
  local token_pro token_free
  token_pro="$(token "$pro" professional)"
  token_free="$(token "$free" free)"
  (
    cd "$dir"
    TOKEN_PRO="$token_pro" TOKEN_PRO_USER="$pro" TOKEN_FREE="$token_free" TOKEN_FREE_USER="$free" \
      exec timeout --foreground -k 5 90 "$@"
  ) &
  CHILD_PID=$!
  wait "$CHILD_PID" || rc=$?
  CHILD_PID=""
  return "$rc"
}

failed=()

log "centrifuge-js (node $(node --version))"
if run_script "$HERE/js" 7101 7102 node conformance.mjs; then
  log "centrifuge-js: passed"
else
  failed+=("centrifuge-js")
fi

log "centrifuge-python + cent ($("$HERE/.venv/bin/python" --version))"
if run_script "$HERE/python" 7201 7202 "$HERE/.venv/bin/python" conformance.py; then
  log "centrifuge-python + cent: passed"
else
  failed+=("centrifuge-python")
fi

if ! kill -0 "$HUB_PID" 2>/dev/null; then
  echo "run.sh: the hub died during the run" >&2
  failed+=("hub")
fi

# ---- channel payloads against docs/schemas ------------------------------------------------------
# A hub with the simulated market (fast, and market:summary.1m every second) and the advisor on an
# OpenAI-compatible fake (python/fake_llm.py) replaying captured answers, with a database of its
# own; schemas.py makes every channel publish and validates what an enterprise client receives.

stop_hub
log "channel payloads against docs/schemas"
"$HERE/.venv/bin/python" "$HERE/python/fake_llm.py" "$WORK/llm.port" >"$WORK/llm.log" 2>&1 &
LLM_PID=$!
for _ in $(seq 1 100); do
  [[ -s "$WORK/llm.port" ]] && break
  sleep 0.1
done
if [[ -s "$WORK/llm.port" ]]; then
  export GPUSCOUT__INGEST__SIMULATED__ENABLED=true GPUSCOUT__INGEST__SIMULATED__POLL_INTERVAL_MS=300
  export GPUSCOUT__INGEST__SUMMARY_INTERVAL_S=1 GPUSCOUT__DATABASE__URL="sqlite://$WORK/schemas.db"
  export GPUSCOUT__ADVISOR__PROVIDER=openai GPUSCOUT__ADVISOR__OPENAI__BASE_URL="http://127.0.0.1:$(cat "$WORK/llm.port")"
  start_hub
  token_ent="$(token 7301 enterprise)"
  if run_script "$HERE/python" 7302 7303 env TOKEN_ENT="$token_ent" TOKEN_ENT_USER=7301 GPUSCOUT_SUMMARY_INTERVAL_S=1 \
    GPUSCOUT_URL="http://127.0.0.1:$PORT" "$HERE/.venv/bin/python" schemas.py; then
    log "channel payloads: passed"
  else
    failed+=("schemas")
  fi
  # The same hub, now that it has polled, answered and refused: /metrics in the text format.
  if run_script "$HERE/python" 7304 7305 env GPUSCOUT_URL="http://127.0.0.1:$PORT" "$HERE/.venv/bin/python" metrics.py; then
    log "metrics: passed"
  else
    failed+=("metrics")
  fi
  unset GPUSCOUT__INGEST__SUMMARY_INTERVAL_S GPUSCOUT__ADVISOR__PROVIDER GPUSCOUT__ADVISOR__OPENAI__BASE_URL
  export GPUSCOUT__DATABASE__URL="sqlite://$WORK/hub.db"
else
  echo "run.sh: the fake language model server did not start; its log:" >&2
  cat "$WORK/llm.log" >&2 || true
  failed+=("schemas")
fi
stop_llm

# ---- the developer examples of docs/developers.md, run as written ------------------------------
# A hub with a market (the simulated one, fast), a key made the documented way, then each example
# extracted from the page and run: it must print the snapshot and three deltas, every checksum ok.

stop_hub
export GPUSCOUT__INGEST__SIMULATED__ENABLED=true GPUSCOUT__INGEST__SIMULATED__POLL_INTERVAL_MS=300
start_hub
HUB_URL="http://127.0.0.1:$PORT"
GSK="$("$PYTHON" - "$HUB_URL" "$(token devdocs professional)" <<'PY'
import json, sys, urllib.request
hub, token = sys.argv[1], sys.argv[2]
body = json.dumps({"name": "developer examples", "scopes": ["subscribe", "market:read"]}).encode()
request = urllib.request.Request(f"{hub}/api/v1/keys", data=body, method="POST",
                                 headers={"Authorization": f"Bearer {token}", "content-type": "application/json"})
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
print(json.load(opener.open(request, timeout=5))["key"])
PY
)"
"$PYTHON" - "$ROOT/docs/developers.md" "$WORK" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
blocks = dict(re.findall(r"```(\w+) example\n(.*?)```", text, re.S))
for lang, name in [("js", "five-minutes.mjs"), ("python", "five_minutes.py"), ("rust", "five_minutes.rs")]:
    open(f"{sys.argv[2]}/{name}", "w").write(blocks[lang])
PY
cp "$WORK/five-minutes.mjs" "$HERE/js/.five-minutes.mjs"

# example NAME COMMAND...: the output has a snapshot and three deltas, every checksum ok.
example() {
  local name="$1" out="$WORK/$1.out" rc=0
  shift
  log "developer example: $name"
  (HUB="$HUB_URL" GSK="$GSK" exec timeout --foreground -k 5 120 "$@") >"$out" 2>&1 &
  CHILD_PID=$!
  wait "$CHILD_PID" || rc=$?
  CHILD_PID=""
  sed "s/^/    /" "$out"
  if ((rc == 0)) && grep -q '^snapshot seq [0-9]*, checksum ok' "$out" &&
    (($(grep -c '^delta seq [0-9]*: .* checksum ok' "$out") == 3)) && ! grep -q MISMATCH "$out"; then
    log "developer example $name: passed"
  else
    echo "run.sh: developer example $name failed (exit $rc):" >&2
    tail -n 20 "$out" >&2
    failed+=("example-$name")
  fi
}
example js bash -c "cd '$HERE/js' && node .five-minutes.mjs"
rm -f "$HERE/js/.five-minutes.mjs"
example python "$HERE/.venv/bin/python" "$WORK/five_minutes.py"
if cmp -s "$WORK/five_minutes.rs" "$ROOT/client-sdk/rust/examples/five_minutes.rs"; then
  example rust cargo run -q -p gpuscout-client --example five_minutes
else
  echo "run.sh: the Rust example in docs/developers.md differs from client-sdk/rust/examples/five_minutes.rs" >&2
  failed+=("example-rust")
fi

# ---- every code block of the documents, run as written (scripts/doc-snippets.py) ----------------
# Its own hubs, on the embedded defaults (it drops the GPUSCOUT_ settings above), one per document.

stop_hub
log "documentation code blocks (scripts/doc-snippets.py)"
rc=0
(GPUSCOUT_BIN="$BIN" exec timeout --foreground -k 10 900 "$PYTHON" "$ROOT/scripts/doc-snippets.py") &
CHILD_PID=$!
wait "$CHILD_PID" || rc=$?
CHILD_PID=""
if ((rc == 0)); then
  log "documentation code blocks: passed"
else
  failed+=("doc-snippets")
fi

if ((${#failed[@]})); then
  echo "run.sh: FAILED: ${failed[*]}" >&2
  exit 1
fi
log "all conformance checks passed"
