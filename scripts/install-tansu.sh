#!/usr/bin/env bash
# Installs Tansu 0.6.0 (the Kafka-compatible broker of the tests and demos) into
# $HOME/.cache/exfilwatch/tansu when it is not there: once per machine, about 20 minutes on
# 2 cores; never rebuilt afterwards. `.ci/run` starts it in the background beside the build.
set -euo pipefail
ROOT="${TANSU_ROOT:-$HOME/.cache/exfilwatch/tansu}"
if [ ! -x "$ROOT/bin/tansu" ]; then
  echo "== installing tansu 0.6.0 into $ROOT (once per machine; about 20 minutes on 2 cores)"
  # Its own target directory: with the caller's CARGO_TARGET_DIR (CI exports one) cargo would
  # hold that directory's lock for the whole install, and the project's build beside it would
  # wait instead of sharing the cores.
  build_dir="$(mktemp -d -t tansu-build.XXXXXX)"
  trap 'rm -rf "$build_dir"' EXIT
  cargo install tansu --version 0.6.0 --locked --features dynostore,libsql --root "$ROOT" --target-dir "$build_dir"
fi
