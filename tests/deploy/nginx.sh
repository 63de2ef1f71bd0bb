#!/usr/bin/env bash
# The shipped reverse proxy in front of two hub nodes: deploy/nginx/gpuscout.conf, run by Debian's
# nginx with a self-signed certificate, over two nodes with the production settings of
# deploy/systemd/gpuscout.env.example, a private Redis and a fresh PostgreSQL database. Checks
# what nginx answers alone (the redirect to HTTPS, /metrics refused, the body limit), then runs
# tests/deploy/failover.mjs: the proxy's headers and the server API through it, then a
# centrifuge-js client on wss:// through nginx whose node is stopped (SIGTERM) and later crashes
# (SIGKILL), reconnecting to the other node and recovering every publication.
#
#   GPUSCOUT_BIN=target/debug/gpuscout tests/deploy/nginx.sh
#
# GPUSCOUT_BIN defaults to target/debug/gpuscout, relative to the repository root. Needs node and
# npm (centrifuge-js is installed into tests/conformance/js with `npm ci`, as
# tests/conformance/run.sh does), openssl, redis-server, psql and curl; nginx is installed with
# apt-get (nginx-light, else nginx) when it is not on PATH and this runs as root. PostgreSQL is
# the server at GPUSCOUT_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432, as the
# Rust tests use it), where a database of the run's own is created and dropped. Everything listens
# on 127.0.0.1, on free ports. Every process started here is stopped on exit, and the database
# dropped. Exits non-zero when a check fails.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"

BIN="${GPUSCOUT_BIN:-target/debug/gpuscout}"
[[ "$BIN" == /* ]] || BIN="$ROOT/$BIN"
if [[ ! -x "$BIN" ]]; then
  echo "nginx.sh: hub binary not found at $BIN (build it with: cargo build --bin gpuscout)" >&2
  exit 1
fi
PYTHON="${PYTHON:-python3}"
for tool in node npm openssl redis-server psql curl "$PYTHON"; do
  command -v "$tool" >/dev/null || { echo "nginx.sh: $tool is required" >&2; exit 1; }
done
PG_BASE="${GPUSCOUT_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}"
PG_BASE="${PG_BASE%/}"

log() { printf '[deploy] %s\n' "$*"; }

# ---- nginx ---------------------------------------------------------------------------------------

find_nginx() { command -v nginx || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; } || true; }
NGINX="${NGINX:-$(find_nginx)}"
if [[ -z "$NGINX" ]]; then
  if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
    echo "nginx.sh: nginx is not installed (Debian: apt-get install nginx-light)" >&2
    exit 1
  fi
  log "installing nginx with apt-get"
  apt-get update -qq
  package=nginx-light
  apt-cache show nginx-light >/dev/null 2>&1 || package=nginx
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package" >/dev/null
  NGINX="$(find_nginx)"
  [[ -n "$NGINX" ]] || { echo "nginx.sh: nginx still not found after installing $package" >&2; exit 1; }
fi
log "$("$NGINX" -v 2>&1)"

# ---- centrifuge-js, as tests/conformance/run.sh installs it -------------------------------------

JS="$ROOT/tests/conformance/js"
install_js() {
  local stamp="$JS/node_modules/.conformance-stamp" want
  want="$(sha256sum "$JS/package.json" "$JS/package-lock.json" | sha256sum | cut -d' ' -f1) node-$(node --version)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return
  fi
  log "npm ci (tests/conformance/js)"
  (cd "$JS" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
}
install_js

# ---- the run's directory and its cleanup ----------------------------------------------------------

WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpuscout-deploy.XXXXXX")"
# nginx's workers run as nobody when this runs as root: they must reach their temp directories.
chmod 0711 "$WORK"
REDIS_PID=""
NGINX_PID=""
CHILD_PID=""
DB=""

stop_pid() { # PID [SECONDS]: SIGTERM, then SIGKILL after SECONDS (default 10)
  local pid="$1" i
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < ${2:-10} * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    # A process already ended but not yet reaped by its parent counts as gone.
    [[ "$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null)" == Z ]] && break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [[ -n "$CHILD_PID" ]] && stop_pid "$CHILD_PID" 5
  # Hub nodes failover.mjs started and did not stop (it records their pids).
  if [[ -f "$WORK/hubs.pids" ]]; then
    while read -r pid; do stop_pid "$pid" 10; done <"$WORK/hubs.pids"
  fi
  stop_pid "$NGINX_PID" 5
  stop_pid "$REDIS_PID" 5
  wait 2>/dev/null || true
  if [[ -n "$DB" ]]; then
    psql "$PG_BASE/postgres" -qAt -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null 2>&1 ||
      echo "nginx.sh: could not drop the database $DB" >&2
  fi
  if ((rc != 0)); then
    for f in "$WORK"/nginx/logs/error.log "$WORK"/nginx/logs/gpuscout.error.log "$WORK"/hub-*.log; do
      [[ -s "$f" ]] || continue
      echo "---- ${f#"$WORK"/} (last 30 lines) ----" >&2
      tail -n 30 "$f" >&2 || true
    done
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_tcp PORT SECONDS: until something accepts on 127.0.0.1:PORT.
wait_tcp() {
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# ---- Redis and PostgreSQL -------------------------------------------------------------------------

REDIS_PORT="$(free_port)"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" \
  --logfile "$WORK/redis.log" &
REDIS_PID=$!
wait_tcp "$REDIS_PORT" 10 || { echo "nginx.sh: redis-server did not start" >&2; exit 1; }
log "redis-server on 127.0.0.1:$REDIS_PORT"

DB="gpuscout_deploy_$(date +%s)_$$"
if ! timeout 20 psql "$PG_BASE/postgres" -qAt -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$DB\"" >/dev/null; then
  DB=""
  echo "nginx.sh: cannot create a database at $PG_BASE (PostgreSQL on 127.0.0.1:5432 is required)" >&2
  exit 1
fi
log "database $DB at $PG_BASE"

# ---- the nodes' settings: the shipped environment file, its secrets generated ---------------------

# The file as systemd reads it: KEY=VALUE lines, comments and blank lines skipped.
while IFS= read -r line; do
  [[ "$line" =~ ^[[:space:]]*(#|$) ]] && continue
  export "${line?}"
done <"$ROOT/deploy/systemd/gpuscout.env.example"
mkdir -p "$WORK/config"
export GPUSCOUT_CONFIG_DIR="$WORK/config" NO_COLOR=1
GPUSCOUT__AUTH__HMAC_SECRET="$(openssl rand -hex 32)"
GPUSCOUT__API__KEY="deploy-$(openssl rand -hex 16)"
GPUSCOUT__SECRETS__ENCRYPTION_KEY="$(openssl rand -base64 32)"
export GPUSCOUT__AUTH__HMAC_SECRET GPUSCOUT__API__KEY GPUSCOUT__SECRETS__ENCRYPTION_KEY
export GPUSCOUT__BUS__REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
export GPUSCOUT__DATABASE__URL="$PG_BASE/$DB?sslmode=disable"
# No internet here: the simulated market instead of the real sources (it publishes on the test's
# channel too, about once a second), and the server API may publish on market channels.
export GPUSCOUT__INGEST__FARM500__ENABLED=false GPUSCOUT__INGEST__SIMULATED__ENABLED=true
export GPUSCOUT__INGEST__SIMULATED__POLL_INTERVAL_MS=1000
export GPUSCOUT__API__ALLOW_MARKET_CHANNELS=true
if env | grep -E '^GPUSCOUT__INGEST__[A-Z0-9]+__ENABLED=true' | grep -qv SIMULATED; then
  echo "nginx.sh: a real market source is enabled; this test must not reach the internet" >&2
  exit 1
fi
if env | grep -q REPLACE_ME; then
  echo "nginx.sh: a REPLACE_ME value of gpuscout.env.example is not overridden here" >&2
  exit 1
fi

# ---- TLS and nginx --------------------------------------------------------------------------------

mkdir -p "$WORK/tls" "$WORK/nginx/logs" "$WORK/nginx/tmp" "$WORK/acme"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=localhost" -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
  -keyout "$WORK/tls/privkey.pem" -out "$WORK/tls/fullchain.pem" 2>/dev/null
CERT="$WORK/tls/fullchain.pem"

HTTP_PORT="$(free_port)"
HTTPS_PORT="$(free_port)"
NODE1_PORT="$(free_port)"
NODE2_PORT="$(free_port)"
while [[ "$NODE2_PORT" == "$NODE1_PORT" ]]; do NODE2_PORT="$(free_port)"; done

# The shipped file with this run's ports and paths; the IPv6 listeners dropped (loopback only).
CONF="$WORK/nginx/gpuscout.conf"
sed -e "s|^\( *\)listen 80;|\1listen 127.0.0.1:$HTTP_PORT;|" \
  -e "s|^\( *\)listen 443 ssl http2;|\1listen 127.0.0.1:$HTTPS_PORT ssl http2;|" \
  -e '/^ *listen \[::\]:/d' \
  -e "s|server 127.0.0.1:8081 |server 127.0.0.1:$NODE1_PORT |" \
  -e "s|server 127.0.0.1:8082 |server 127.0.0.1:$NODE2_PORT |" \
  -e "s|/etc/gpuscout/tls/|$WORK/tls/|" \
  -e "s|/var/log/nginx/|$WORK/nginx/logs/|" \
  -e "s|/var/www/letsencrypt|$WORK/acme|" \
  "$ROOT/deploy/nginx/gpuscout.conf" >"$CONF"
# Every substitution must have applied: the shipped file changing under this script fails here.
for want in "listen 127.0.0.1:$HTTP_PORT;" "listen 127.0.0.1:$HTTPS_PORT ssl http2;" \
  "server 127.0.0.1:$NODE1_PORT " "server 127.0.0.1:$NODE2_PORT " "$WORK/tls/fullchain.pem" \
  "$WORK/tls/privkey.pem" "$WORK/nginx/logs/gpuscout.access.log"; do
  grep -qF "$want" "$CONF" || { echo "nginx.sh: deploy/nginx/gpuscout.conf no longer has what becomes '$want'" >&2; exit 1; }
done
if sed 's/#.*//' "$CONF" | grep -nE '/etc/|/var/|:8081|:8082|listen (80|443)'; then
  echo "nginx.sh: deploy/nginx/gpuscout.conf has paths or ports this script does not rewrite (above)" >&2
  exit 1
fi

# A minimal main configuration around it, as /etc/nginx/nginx.conf includes conf.d/*.conf.
{
  [[ "$(id -u)" == 0 ]] && echo "user nobody nogroup;"
  cat <<EOF
worker_processes 1;
events { worker_connections 1024; }
http {
    access_log $WORK/nginx/logs/access.log;
    client_body_temp_path $WORK/nginx/tmp/body;
    proxy_temp_path $WORK/nginx/tmp/proxy;
    fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
    uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
    scgi_temp_path $WORK/nginx/tmp/scgi;
    include $CONF;
}
EOF
} >"$WORK/nginx/nginx.conf"

NGINX_ARGS=(-p "$WORK/nginx" -e "$WORK/nginx/logs/error.log" -c "$WORK/nginx/nginx.conf"
  -g "daemon off; pid $WORK/nginx/nginx.pid; error_log $WORK/nginx/logs/error.log warn;")
if ! "$NGINX" -t -q "${NGINX_ARGS[@]}"; then
  echo "nginx.sh: nginx -t refused the configuration" >&2
  exit 1
fi
"$NGINX" "${NGINX_ARGS[@]}" &
NGINX_PID=$!
wait_tcp "$HTTPS_PORT" 10 || { echo "nginx.sh: nginx did not start" >&2; exit 1; }
log "nginx on https://127.0.0.1:$HTTPS_PORT (http :$HTTP_PORT), upstream :$NODE1_PORT and :$NODE2_PORT"

# ---- what nginx answers by itself ---------------------------------------------------------------

passed=0
failed=0
check() { # NAME COMMAND...: a check run here
  local name="$1"
  shift
  if "$@"; then
    passed=$((passed + 1))
    log "ok   $name"
  else
    failed=$((failed + 1))
    log "FAIL $name"
  fi
}
C=(curl -sS --noproxy '*' -m 5 --cacert "$CERT")
redirects() {
  local out
  out="$("${C[@]}" -o /dev/null -w '%{http_code} %{redirect_url}' "http://127.0.0.1:$HTTP_PORT/connection/websocket?x=1")"
  [[ "$out" == "301 https://127.0.0.1/connection/websocket?x=1" ]] || { echo "    got: $out"; return 1; }
}
metrics_refused() {
  local code
  code="$("${C[@]}" -o /dev/null -w '%{http_code}' "https://127.0.0.1:$HTTPS_PORT/metrics")"
  [[ "$code" == 403 ]] || { echo "    got: $code"; return 1; }
}
large_body_refused() {
  local code
  code="$(head -c 1048577 /dev/zero | "${C[@]}" -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
    --data-binary @- "https://127.0.0.1:$HTTPS_PORT/api/v1/alerts/rules")"
  [[ "$code" == 413 ]] || { echo "    got: $code"; return 1; }
}
check "plain HTTP is redirected to HTTPS (301, path and query kept)" redirects
check "/metrics is refused through the proxy (403)" metrics_refused
check "a body over 1 MiB is refused by nginx (413)" large_body_refused

# ---- failover.mjs -----------------------------------------------------------------------------------

TOKEN="$("$BIN" token --user 9901 --tier individual --ttl 900)"
rc=0
(
  GPUSCOUT_BIN="$BIN" DEPLOY_WORK="$WORK" PROXY_URL="https://127.0.0.1:$HTTPS_PORT" \
    NODE_PORTS="$NODE1_PORT,$NODE2_PORT" NGINX_ACCESS_LOG="$WORK/nginx/logs/gpuscout.access.log" \
    CENTRIFUGE_FROM="$JS" TOKEN="$TOKEN" NODE_EXTRA_CA_CERTS="$CERT" \
    exec timeout --foreground -k 5 190 node "$HERE/failover.mjs"
) &
CHILD_PID=$!
wait "$CHILD_PID" || rc=$?
CHILD_PID=""
if ((rc != 0)); then
  failed=$((failed + 1))
  log "FAIL failover.mjs (exit $rc)"
else
  passed=$((passed + 1))
fi
if ! kill -0 "$NGINX_PID" 2>/dev/null; then
  failed=$((failed + 1))
  log "FAIL nginx died during the run"
fi

echo "deploy: $passed passed, $failed failed"
if ((failed)); then
  echo "nginx.sh: FAIL" >&2
  exit 1
fi
log "PASS"
