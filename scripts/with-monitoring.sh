#!/usr/bin/env bash
# Makes sure real Prometheus (with promtool) and Alertmanager are installed, then runs the
# command given (if any); the tests that need them fail without them. The tests start and stop
# the servers themselves
# (tests/support/monitoring.rs): this script only installs.
#
#   bash scripts/with-monitoring.sh                   # install when missing, nothing else
#   bash scripts/with-monitoring.sh make test         # install when missing, then run the tests
#
# Installs Debian's packages (Prometheus 2.42 with promtool, Alertmanager 0.25) when `promtool`
# or `prometheus-alertmanager` is not on PATH: non-interactive, as root (CI) or through sudo.
# The packages start nothing by themselves on a machine without systemd; where systemd runs
# their units, the tests' own servers use other (free) ports and are unaffected.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

if have promtool && have prometheus && have prometheus-alertmanager; then
  echo "== prometheus and alertmanager already installed: $(command -v prometheus) $(command -v prometheus-alertmanager)"
else
  bash "$(dirname "$0")/apt-install.sh" "the tests' monitoring, about 35 s" prometheus prometheus-alertmanager
  for bin in prometheus promtool prometheus-alertmanager; do
    have "$bin" || { echo "with-monitoring.sh: $bin is still not on PATH after the install" >&2; exit 1; }
  done
fi
prometheus --version 2>&1 | head -n 1
prometheus-alertmanager --version 2>&1 | head -n 1

if [ "$#" -gt 0 ]; then
  exec "$@"
fi
