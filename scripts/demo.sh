#!/usr/bin/env bash
# `make demo`: the streaming service end to end on a real broker. Run through
# scripts/with-tansu.sh (which starts Tansu and stops it afterwards): creates the topics,
# produces the sample logs, runs `exfilwatch run` until its consumer group has committed
# everything, stops it with SIGTERM (drain, commit), and prints the alerts from the alert topic.
set -euo pipefail
cd "$(dirname "$0")/.."
BROKER="${EXFILWATCH_TEST_KAFKA:?run through scripts/with-tansu.sh}"
BIN="${CARGO_TARGET_DIR:-target}/release"
RUN_ID="$(date +%s)"
LOGS="cosmos-logs-$RUN_ID" ALERTS="exfilwatch-alerts-$RUN_ID" GROUP="exfilwatch-demo-$RUN_ID"
work="$(mktemp -d -t exfilwatch-demo.XXXXXX)"
svc=""
cleanup() {
  if [ -n "$svc" ] && kill -0 "$svc" 2>/dev/null; then kill -TERM "$svc"; wait "$svc" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "== topics"
"$BIN/examples/kafka_tool" create "$BROKER" "$LOGS" 4
"$BIN/examples/kafka_tool" create "$BROKER" "$ALERTS" 1

echo "== producing the sample logs (envelopes of 20 records, keyed by account)"
"$BIN/examples/kafka_tool" produce "$BROKER" "$LOGS" sample-logs 20

cat >"$work/exfilwatch.toml" <<TOML
[kafka]
bootstrap_servers = "$BROKER"
topics = ["$LOGS"]
group_id = "$GROUP"
[sinks]
stdout = false
kafka_topic = "$ALERTS"
[service]
metrics_addr = ""
state_store = "$work/state"
TOML

echo "== exfilwatch run (log: $work/run.log)"
"$BIN/exfilwatch" run --config "$work/exfilwatch.toml" >"$work/run.log" 2>&1 &
svc=$!
if ! "$BIN/examples/kafka_tool" wait-caught-up "$BROKER" "$LOGS" "$GROUP" 120; then
  cat "$work/run.log"; exit 1
fi
kill -TERM "$svc"
wait "$svc"
svc=""
echo "== exfilwatch run stopped (SIGTERM: drained, committed)"

echo "== alerts on $ALERTS"
"$BIN/examples/kafka_tool" print "$BROKER" "$ALERTS"
