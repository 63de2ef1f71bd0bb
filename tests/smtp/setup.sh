#!/usr/bin/env bash
# Install the SMTP server the e-mail tests run (aiosmtpd) into tests/smtp/.venv; skipped when
# requirements.txt has not changed since the last install.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"
STAMP="$HERE/.venv/.installed"
if [[ -f "$STAMP" ]] && cmp -s "$STAMP" "$HERE/requirements.txt"; then
  exit 0
fi
"$PYTHON" -m venv "$HERE/.venv"
"$HERE/.venv/bin/pip" install --quiet --disable-pip-version-check --require-hashes -r "$HERE/requirements.txt"
cp "$HERE/requirements.txt" "$STAMP"
