#!/usr/bin/env bash
# Runs a command with a real S3-compatible object store on loopback: moto's server (the S3 API
# as implemented by the `moto` project), for the state store's s3:// tests.
# Installs moto into $HOME/.cache/exfilwatch/moto (a Python virtualenv, once per machine, about
# 20 s from PyPI) when missing, starts it on 127.0.0.1:$S3_PORT (default 19500) unless something
# already answers there, creates the bucket `exfilwatch-test`, exports EXFILWATCH_TEST_S3 (the
# endpoint), runs the command, and stops only the server it started, by process id.
set -euo pipefail
VENV="${MOTO_VENV:-$HOME/.cache/exfilwatch/moto}"
PORT="${S3_PORT:-19500}"
ENDPOINT="http://127.0.0.1:$PORT"

answering() { python3 - "$ENDPOINT" <<'PY' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/", timeout=1).read()
PY
}

if [ ! -x "$VENV/bin/moto_server" ]; then
  echo "== installing moto 5.0.28 (S3 server) into $VENV (once per machine)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check 'moto[server]==5.0.28'
fi

started=""
if answering; then
  echo "== an S3 endpoint already answers on $ENDPOINT: using it"
else
  log="$(mktemp -t moto.XXXXXX.log)"
  "$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" >"$log" 2>&1 &
  started=$!
  trap 'kill "$started" 2>/dev/null || true; wait "$started" 2>/dev/null || true' EXIT
  for _ in $(seq 1 150); do
    answering && break
    if ! kill -0 "$started" 2>/dev/null; then echo "moto exited:"; cat "$log"; exit 1; fi
    sleep 0.2
  done
  answering || { echo "moto did not answer on $ENDPOINT within 30 s"; cat "$log"; exit 1; }
  echo "== moto (S3) started on $ENDPOINT (pid $started, log $log)"
fi
# The tests' bucket (creating an existing one is fine for moto in us-east-1).
python3 - "$ENDPOINT" <<'PY'
import sys, urllib.request
urllib.request.urlopen(urllib.request.Request(sys.argv[1] + "/exfilwatch-test", method="PUT"), timeout=10).read()
PY

export EXFILWATCH_TEST_S3="$ENDPOINT"
"$@"
