#!/usr/bin/env bash
# `cargo deny check` (advisories, licences, duplicate crates, sources; deny.toml) against
# Cargo.lock, without network beyond the package registries:
#
# * cargo-deny is installed once per machine into $HOME/.cache/exfilwatch/tools (cargo install
#   --locked from crates.io, about 6 minutes on 2 cores), like Tansu.
# * The RustSec advisory database is not fetched from its git host (unreachable here): the
#   snapshot vendored in the repository (vendor/rustsec-advisory-db-*.tar.gz) is unpacked into
#   $HOME/.cache/exfilwatch/advisory-dbs, made a git repository there (cargo deny wants one),
#   and used with fetching disabled. EXFILWATCH_ADVISORY_DB names another copy (a folder).
set -euo pipefail
cd "$(dirname "$0")/.."

DENY_VERSION=0.20.2
TOOLS="$HOME/.cache/exfilwatch/tools"
DENY="$TOOLS/bin/cargo-deny"
if ! { [ -x "$DENY" ] && "$DENY" --version | grep -q " $DENY_VERSION\$"; }; then
  echo "== installing cargo-deny $DENY_VERSION into $TOOLS (once per machine)"
  cargo install --locked cargo-deny --version "$DENY_VERSION" --root "$TOOLS"
fi

DB_ARCHIVE=vendor/rustsec-advisory-db-2026-08-21.tar.gz
src="${EXFILWATCH_ADVISORY_DB:-}"
if [ -z "$src" ]; then
  unpacked="$HOME/.cache/exfilwatch/advisory-db-src/$(basename "$DB_ARCHIVE" .tar.gz)"
  if [ ! -d "$unpacked/rustsec-advisory-db/crates" ]; then
    rm -rf "$unpacked"
    mkdir -p "$unpacked"
    tar -xzf "$DB_ARCHIVE" -C "$unpacked"
  fi
  src="$unpacked/rustsec-advisory-db"
fi
if [ ! -d "$src/crates" ]; then
  echo "cargo-deny.sh: no RustSec advisory database at $src" >&2
  exit 1
fi

# deny.toml's db-path; cargo deny looks for the database of db-urls[0] in a folder named after
# the URL (advisory-db-<hash of the URL>).
DBS="$HOME/.cache/exfilwatch/advisory-dbs"
export EXFILWATCH_ADVISORY_DBS="$DBS"
db="$DBS/advisory-db-3157b0e258782691"
stamp="$(cd "$src" && find . -type f -printf '%P %s %T@\n' | sort | sha256sum | cut -c1-16)"
if [ "$(cat "$db.stamp" 2>/dev/null)" != "$stamp" ] || [ ! -d "$db/.git" ]; then
  echo "== advisory database: copying $src to $db"
  [ -d "$db" ] && chmod -R u+w "$db"
  rm -rf "$db"
  mkdir -p "$db"
  cp -R "$src/." "$db/"
  # A copy named by EXFILWATCH_ADVISORY_DB may be read-only: the cache must not be.
  chmod -R u+w "$db"
  (cd "$db" && git init -q && git add -A &&
    git -c user.name=exfilwatch -c user.email=ci@localhost commit -qm "RustSec advisory database (vendored copy)")
  echo "$stamp" >"$db.stamp"
fi
# The crates' manifests (from crates.io, the one registry reached), then no network at all.
cargo fetch --locked -q
echo "== cargo deny ($("$DENY" --version)), advisory database from $src"
# --workspace: the investigation crate (investigate/, polars) too, not only the root package.
"$DENY" --offline --locked --workspace check
