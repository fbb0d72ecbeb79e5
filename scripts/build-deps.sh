#!/usr/bin/env bash
# Installs the C libraries the build links against when they are missing: OpenSSL's headers
# and pkg-config (librdkafka's TLS, rdkafka's `ssl` feature, links the system's libssl).
# Debian's packages, non-interactive, as root (CI) or through sudo. Does nothing when present.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

if have pkg-config && pkg-config --exists openssl 2>/dev/null; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif have sudo; then
  as_root=(sudo -n)
else
  echo "build-deps.sh: libssl-dev and pkg-config are missing and installing them needs root (or sudo)" >&2
  exit 1
fi
echo "== installing libssl-dev and pkg-config from the Debian packages (librdkafka's TLS)"
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libssl-dev pkg-config
pkg-config --exists openssl || { echo "build-deps.sh: openssl is still unknown to pkg-config" >&2; exit 1; }
