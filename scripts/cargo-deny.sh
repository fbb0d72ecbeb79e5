#!/usr/bin/env bash
# `cargo deny check` (advisories, licences, duplicate crates, sources; deny.toml) against
# Cargo.lock, without network beyond the package registries:
#
# * cargo-deny is installed once per machine into $HOME/.cache/exfilwatch/tools (cargo install
#   --locked from crates.io, about 6 minutes on 2 cores), like Tansu.
# * The RustSec advisory database is not fetched from its git host (unreachable here): it is
#   copied from the vendored copy in the workplace's shared/ folder (shared/vendor/
#   rustsec-advisory-db; CI gets a copy of shared/ beside its clone) into
#   $HOME/.cache/exfilwatch/advisory-dbs, made a git repository there (cargo deny wants one),
#   and used with --disable-fetch. EXFILWATCH_ADVISORY_DB names another copy. Without any
#   copy the script fails: a check that cannot see the advisories must not pass.
set -euo pipefail
cd "$(dirname "$0")/.."

DENY_VERSION=0.20.2
TOOLS="$HOME/.cache/exfilwatch/tools"
DENY="$TOOLS/bin/cargo-deny"
if ! { [ -x "$DENY" ] && "$DENY" --version | grep -q " $DENY_VERSION\$"; }; then
  echo "== installing cargo-deny $DENY_VERSION into $TOOLS (once per machine)"
  cargo install --locked cargo-deny --version "$DENY_VERSION" --root "$TOOLS"
fi

src="${EXFILWATCH_ADVISORY_DB:-}"
if [ -z "$src" ]; then
  for c in ../shared/vendor/rustsec-advisory-db ../../shared/vendor/rustsec-advisory-db /work/shared/vendor/rustsec-advisory-db; do
    if [ -d "$c/crates" ]; then src="$c"; break; fi
  done
fi
if [ -z "$src" ] || [ ! -d "$src/crates" ]; then
  echo "cargo-deny.sh: no RustSec advisory database: expected shared/vendor/rustsec-advisory-db beside the clone, or EXFILWATCH_ADVISORY_DB" >&2
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
  # The vendored copy may be read-only (CI's copy of shared/ is): the cache must not be.
  chmod -R u+w "$db"
  (cd "$db" && git init -q && git add -A &&
    git -c user.name=exfilwatch -c user.email=ci@localhost commit -qm "RustSec advisory database (vendored copy)")
  echo "$stamp" >"$db.stamp"
fi
# The crates' manifests (from crates.io, the one registry reached), then no network at all.
cargo fetch --locked -q
echo "== cargo deny ($("$DENY" --version)), advisory database from $src"
"$DENY" --offline --locked check
