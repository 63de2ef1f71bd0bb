#!/usr/bin/env bash
# Checks deploy/systemd/ without installing anything:
#
#   1. `systemd-analyze verify` on gpuscout.service, with ExecStart pointed at the hub binary under
#      test (the shipped path, /usr/local/bin/gpuscout, need not exist here). Any line it prints
#      about the unit (an unknown key, a value it cannot parse) fails the check, as does a non-zero
#      exit.
#   2. `systemd-analyze security --offline=yes`: the unit's exposure level must stay at or under
#      MAX_EXPOSURE (2.0; the shipped unit scores 1.4).
#   3. The directives operators rely on are present, and TimeoutStopSec exceeds twice
#      server.shutdown_grace_ms (config/default.toml), the longest the hub's drain takes.
#   4. gpuscout.env.example: every GPUSCOUT__ name in it, commented out or not, is a key of
#      config/default.toml; with its REPLACE_ME values left, the hub refuses to start (exit 2);
#      with them filled with generated secrets, the hub's own configuration checks pass (it loads
#      the file with `gpuscout check-config`, as `serve` would; nothing is contacted), and the
#      printed configuration shows none of the secrets.
#
#   GPUSCOUT_BIN=target/debug/gpuscout deploy/systemd/verify.sh
#
# GPUSCOUT_BIN defaults to target/debug/gpuscout, relative to the repository root. Without
# systemd-analyze the script skips checks 1 and 2 with a notice, except under CI=true, where it
# fails. Exits non-zero when a check fails.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
UNIT="$HERE/gpuscout.service"
ENV_EXAMPLE="$HERE/gpuscout.env.example"
MAX_EXPOSURE="${MAX_EXPOSURE:-2.0}"

BIN="${GPUSCOUT_BIN:-target/debug/gpuscout}"
[[ "$BIN" == /* ]] || BIN="$ROOT/$BIN"
if [[ ! -x "$BIN" ]]; then
  echo "verify.sh: hub binary not found at $BIN (build it with: cargo build --bin gpuscout)" >&2
  exit 1
fi
PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null || { echo "verify.sh: $PYTHON is required" >&2; exit 1; }
command -v openssl >/dev/null || { echo "verify.sh: openssl is required" >&2; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpuscout-verify.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

failed=()
log() { printf '[verify] %s\n' "$*"; }
pass() { printf '[verify] ok: %s\n' "$*"; }
fail() {
  printf '[verify] FAILED: %s\n' "$1" >&2
  failed+=("$1")
}

# ---- 1 and 2: systemd-analyze ------------------------------------------------------------------

# The unit as shipped, ExecStart rewritten to the binary under test (same file name, so the
# messages name gpuscout.service).
mkdir -p "$WORK/unit"
sed "s|^ExecStart=/usr/local/bin/gpuscout |ExecStart=$BIN |" "$UNIT" >"$WORK/unit/gpuscout.service"
if ! grep -qxF "ExecStart=$BIN serve" "$WORK/unit/gpuscout.service"; then
  fail "ExecStart is not '/usr/local/bin/gpuscout serve' in $UNIT"
fi

if command -v systemd-analyze >/dev/null; then
  log "$(systemd-analyze --version | head -n 1)"
  rc=0
  out="$(systemd-analyze verify "$WORK/unit/gpuscout.service" 2>&1)" || rc=$?
  # Lines about other units (systemd loads the targets this one names) are not ours to fix.
  ours="$(grep -E 'gpuscout\.service|gpuscout-verify' <<<"$out" || true)"
  if ((rc != 0)) || [[ -n "$ours" ]]; then
    printf '%s\n' "$out" >&2
    fail "systemd-analyze verify gpuscout.service (exit $rc)"
  else
    pass "systemd-analyze verify gpuscout.service: no warning (ExecStart=$BIN serve)"
    [[ -z "$out" ]] || printf '    (about other units: %s)\n' "$out"
  fi

  rc=0
  out="$(systemd-analyze security --offline=yes "$WORK/unit/gpuscout.service" 2>&1)" || rc=$?
  level="$(grep -o 'Overall exposure level for gpuscout.service: [0-9.]*' <<<"$out" | grep -o '[0-9.]*$' || true)"
  if ((rc != 0)) || [[ -z "$level" ]] || ! awk -v l="$level" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(l <= m) }'; then
    grep '✗' <<<"$out" >&2 || printf '%s\n' "$out" >&2
    fail "systemd-analyze security: exposure ${level:-unknown} over $MAX_EXPOSURE (exit $rc)"
  else
    pass "systemd-analyze security --offline: exposure level $level (at most $MAX_EXPOSURE)"
  fi
else
  if [[ "${CI:-}" == "true" ]]; then
    fail "systemd-analyze is not installed (required under CI=true; Debian package: systemd)"
  else
    log "systemd-analyze is not installed: verify and security checks skipped"
  fi
fi

# ---- 3: the directives operators rely on --------------------------------------------------------

required=(
  "User=gpuscout" "Group=gpuscout" "DynamicUser=no" "ExecStart=/usr/local/bin/gpuscout serve"
  "EnvironmentFile=/etc/gpuscout/gpuscout.env" "WorkingDirectory=/var/lib/gpuscout"
  "StateDirectory=gpuscout" "Restart=on-failure" "KillSignal=SIGTERM" "LimitNOFILE=1048576"
  "NoNewPrivileges=yes" "ProtectSystem=strict" "ProtectHome=yes" "PrivateTmp=yes"
  "PrivateDevices=yes" "ProtectKernelTunables=yes" "ProtectKernelModules=yes"
  "ProtectKernelLogs=yes" "ProtectControlGroups=yes"
  "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX" "RestrictNamespaces=yes"
  "LockPersonality=yes" "MemoryDenyWriteExecute=yes" "SystemCallArchitectures=native"
  "CapabilityBoundingSet=" "ReadWritePaths=/var/lib/gpuscout"
)
missing=()
for line in "${required[@]}"; do
  grep -qxF "$line" "$UNIT" || missing+=("$line")
done
if ((${#missing[@]})); then
  fail "gpuscout.service lacks: ${missing[*]}"
else
  pass "gpuscout.service has the ${#required[@]} directives operators rely on"
fi

grace_ms="$(sed -n 's/^shutdown_grace_ms *= *\([0-9]*\).*/\1/p' "$ROOT/config/default.toml")"
stop_s="$(sed -n 's/^TimeoutStopSec=\([0-9]*\)$/\1/p' "$UNIT")"
if [[ -z "$grace_ms" || -z "$stop_s" ]]; then
  fail "server.shutdown_grace_ms (config/default.toml) or TimeoutStopSec (in seconds) not found"
elif ((stop_s * 1000 <= 2 * grace_ms)); then
  fail "TimeoutStopSec=$stop_s is not above twice server.shutdown_grace_ms ($grace_ms ms)"
else
  pass "TimeoutStopSec=${stop_s}s exceeds the drain (2 x server.shutdown_grace_ms = $((2 * grace_ms)) ms)"
fi

# ---- 4: the environment file --------------------------------------------------------------------

# Every GPUSCOUT__ name, commented out or not, is a key of config/default.toml.
if names="$("$PYTHON" - "$ENV_EXAMPLE" "$ROOT/config/default.toml" <<'PY'
import re, sys, tomllib
example, defaults = sys.argv[1], tomllib.load(open(sys.argv[2], "rb"))
bad, count = [], 0
for line in open(example):
    m = re.match(r"\s*#?\s*GPUSCOUT__([A-Z0-9_]+)=", line)
    if not m:
        continue
    count += 1
    node = defaults
    for part in m.group(1).lower().split("__"):
        if not isinstance(node, dict) or part not in node:
            bad.append("GPUSCOUT__" + m.group(1))
            break
        node = node[part]
if bad:
    print("unknown keys: " + ", ".join(bad))
    sys.exit(1)
print(count)
PY
)"; then
  pass "gpuscout.env.example: all $names GPUSCOUT__ names are keys of config/default.toml"
else
  fail "gpuscout.env.example: $names"
fi

# The file as systemd reads it (KEY=VALUE lines; comments and blank lines skipped), into an
# environment of its own: nothing of the caller's leaks in, and the config directory is empty.
mkdir -p "$WORK/config"
load_env() { # FILE: prints KEY=VALUE lines
  sed -e '/^[[:space:]]*#/d' -e '/^[[:space:]]*$/d' "$1"
}
run_hub_with() { # FILE ARGS...: the hub under the file's settings alone
  local file="$1"
  shift
  local -a vars
  mapfile -t vars < <(load_env "$file")
  env -i PATH=/usr/bin:/bin HOME="$WORK" GPUSCOUT_CONFIG_DIR="$WORK/config" "${vars[@]}" "$BIN" "$@"
}

rc=0
out="$(run_hub_with "$ENV_EXAMPLE" check-config 2>&1)" || rc=$?
if ((rc == 2)); then
  pass "with its REPLACE_ME values left, the hub refuses to start: exit 2 ($(head -n 1 <<<"$out"))"
else
  fail "with REPLACE_ME values left the hub should exit 2, got $rc: $out"
fi

# Generated secrets in place of the placeholders, as an operator fills them.
sed -e "s|REPLACE_ME_HMAC_SECRET|$(openssl rand -hex 32)|" \
  -e "s|REPLACE_ME_API_KEY|$(openssl rand -hex 24)|" \
  -e "s|REPLACE_ME_ENCRYPTION_KEY|$(openssl rand -base64 32)|" \
  -e "s|REPLACE_ME_DB_PASSWORD|$(openssl rand -hex 16)|" \
  "$ENV_EXAMPLE" >"$WORK/gpuscout.env"
if load_env "$WORK/gpuscout.env" | grep -q REPLACE_ME; then
  fail "gpuscout.env.example has a REPLACE_ME value this script does not fill: $(load_env "$WORK/gpuscout.env" | grep REPLACE_ME)"
fi
rc=0
out="$(run_hub_with "$WORK/gpuscout.env" check-config 2>&1)" || rc=$?
if ((rc == 0)) && grep -q '^environment = "production"$' <<<"$out"; then
  pass "filled in, gpuscout.env.example passes gpuscout check-config (environment=production)"
else
  fail "the filled-in gpuscout.env.example is refused by gpuscout check-config (exit $rc): $out"
fi
leaked=()
for key in AUTH__HMAC_SECRET API__KEY SECRETS__ENCRYPTION_KEY; do
  value="$(load_env "$WORK/gpuscout.env" | sed -n "s/^GPUSCOUT__${key}=//p")"
  [[ -n "$value" ]] && grep -qF -- "$value" <<<"$out" && leaked+=("$key")
done
if ((${#leaked[@]} == 0)); then
  pass "check-config masks the secrets of the filled-in file"
else
  fail "check-config printed secrets: ${leaked[*]}"
fi

if ((${#failed[@]})); then
  echo "verify.sh: FAILED: ${#failed[@]} check(s)" >&2
  exit 1
fi
log "all checks passed"
