#!/usr/bin/env bash
# Installs Debian packages, non-interactively, as root (CI) or through sudo:
#   bash scripts/apt-install.sh WHAT PACKAGE...
# WHAT names the packages' purpose in the messages. Fails when neither root nor sudo is there.
set -euo pipefail

what="$1"
shift
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo -n)
else
  echo "apt-install.sh: $* ($what) missing, and installing them needs root (or sudo)" >&2
  exit 1
fi
echo "== installing $* from the Debian packages ($what)"
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
