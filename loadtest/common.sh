# Shared by the loadtest scripts (sourced): the binaries, the output and work folders, cleanup of
# every process started, free ports, and hubs started in the background until ready.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HUB="${GPUSCOUT_BIN:-$ROOT/target/release/gpuscout}"
LOADTEST="${LOADTEST_BIN:-$ROOT/target/release/loadtest}"
OUT="$ROOT/target/loadtest"
mkdir -p "$OUT"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_port() { # port log: until something accepts connections on the port
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1" >&2
  cat "$2" >&2
  exit 1
}

# start_hub NAME PORT [VAR=VALUE...]: a hub with its own SQLite file and log ($WORK/NAME.log),
# extra settings as environment variables; returns once /readyz answers, with its pid in HUB_PID.
start_hub() {
  local name=$1 port=$2
  shift 2
  env "$@" GPUSCOUT__SERVER__LISTEN="127.0.0.1:$port" GPUSCOUT__DATABASE__URL="sqlite://$WORK/$name.db" \
    "$HUB" serve 2>"$WORK/$name.log" &
  HUB_PID=$!
  PIDS+=("$HUB_PID")
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && return 0
    sleep 0.1
  done
  echo "hub $name on $port did not become ready" >&2
  cat "$WORK/$name.log" >&2
  exit 1
}
