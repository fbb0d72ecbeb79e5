#!/usr/bin/env bash
# Runs a command with a real Kafka-compatible broker (Tansu) on 127.0.0.1:19092.
# Installs Tansu into $HOME/.cache/exfilwatch/tansu when it is not there (cached: never rebuilt),
# starts the broker unless one already listens there, exports EXFILWATCH_TEST_KAFKA, runs the
# command, and stops only the broker it started, by process id.
set -euo pipefail
ROOT="${TANSU_ROOT:-$HOME/.cache/exfilwatch/tansu}"
TANSU="$ROOT/bin/tansu"
PORT="${TANSU_PORT:-19092}"
ADDR="127.0.0.1:$PORT"

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

TANSU_ROOT="$ROOT" bash "$(dirname "$0")/install-tansu.sh"

started=""
if listening; then
  echo "== a broker already listens on $ADDR: using it"
else
  log="$(mktemp -t tansu.XXXXXX.log)"
  "$TANSU" broker --listener-url "tcp://$ADDR" --advertised-listener-url "tcp://$ADDR" \
    --storage-engine memory://tansu/ >"$log" 2>&1 &
  started=$!
  trap 'kill "$started" 2>/dev/null || true; wait "$started" 2>/dev/null || true' EXIT
  for _ in $(seq 1 300); do
    listening && break
    if ! kill -0 "$started" 2>/dev/null; then echo "tansu exited:"; cat "$log"; exit 1; fi
    sleep 0.1
  done
  listening || { echo "tansu did not listen on $ADDR within 30 s:"; cat "$log"; exit 1; }
  echo "== tansu started on $ADDR (pid $started, log $log)"
fi

export EXFILWATCH_TEST_KAFKA="$ADDR"
# For tests that run a broker of their own (stopped and restarted on cue).
export EXFILWATCH_TANSU_BIN="$TANSU"
"$@"
