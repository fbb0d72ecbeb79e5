#!/usr/bin/env bash
# Installs the C libraries the build links against when they are missing: OpenSSL's headers
# and pkg-config (librdkafka's TLS, rdkafka's `ssl` feature, links the system's libssl).
# Debian's packages, non-interactive, as root (CI) or through sudo. Does nothing when present.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

if have pkg-config && pkg-config --exists openssl 2>/dev/null; then
  exit 0
fi
bash "$(dirname "$0")/apt-install.sh" "librdkafka's TLS" libssl-dev pkg-config
pkg-config --exists openssl || { echo "build-deps.sh: openssl is still unknown to pkg-config" >&2; exit 1; }
