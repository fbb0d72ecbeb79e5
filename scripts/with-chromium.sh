#!/usr/bin/env bash
# Makes sure headless Chromium (Debian's `chromium` package) is installed, then runs the
# command given (if any): the HTML report test (investigate/tests/report.rs) renders
# `exfilwatch investigate --report` in it and fails without it.
#
#   bash scripts/with-chromium.sh                  # install when missing, nothing else
#   bash scripts/with-chromium.sh make test        # install when missing, then run the tests
#
# Installs `chromium` and a font (`fonts-dejavu-core`, so that the screenshot has text) when
# `chromium` is not on PATH: non-interactive, as root (CI) or through sudo (about 30 s here).
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
  echo "== chromium already installed: $(command -v chromium)"
else
  bash "$(dirname "$0")/apt-install.sh" "the HTML report test, about 30 s" chromium fonts-dejavu-core
  command -v chromium >/dev/null 2>&1 || { echo "with-chromium.sh: chromium is still not on PATH after the install" >&2; exit 1; }
fi
chromium --version 2>/dev/null | head -n 1 || true

if [ "$#" -gt 0 ]; then
  exec "$@"
fi
