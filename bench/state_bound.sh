#!/usr/bin/env bash
# Peak RSS against tracked (key, origin) pairs under detect.max_state_bytes (BENCHMARKS.md,
# "State bound"). For each workload KEYSxORIGINS (gen-logs bench: 2,000,000 records over ten
# days, ten planted thefts of ~3 GiB each) and each cap, replays the file under /usr/bin/time -v
# and prints one row: workload, cap, peak RSS, keys and pairs at the end, the estimate
# (exfilwatch_detector_state_bytes at the end), keys evicted, thefts detected.
#
# usage: bench/state_bound.sh [WORKLOAD...]   (default: 400000x2 20000x100 100000x20)
#        CAPS="0 256MiB 64MiB" to choose the caps ("0": no bound).
set -euo pipefail
BIN=${BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}
DATA=${BENCH_DATA:-bench-data}
CAPS=${CAPS:-"0 256MiB 128MiB 64MiB"}
WORKLOADS=("$@")
[ ${#WORKLOADS[@]} -gt 0 ] || WORKLOADS=(400000x2 20000x100 100000x20)
mkdir -p "$DATA"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '| workload | max_state_bytes | peak RSS | keys | pairs | estimate | RSS / estimate | keys evicted | thefts detected |\n'
printf '|---|---:|---:|---:|---:|---:|---:|---:|---:|\n'
for w in "${WORKLOADS[@]}"; do
    keys=${w%x*}
    origins=${w#*x}
    file="$DATA/bench-2000000-$keys-$origins.jsonl"
    [ -f "$file" ] || "$BIN/gen-logs" bench --records 2000000 --keys "$keys" --origins-per-key "$origins" --out "$file" >&2
    for cap in $CAPS; do
        printf '[detect]\nmax_state_bytes = "%s"\n' "$cap" >"$tmp/cfg.toml"
        /usr/bin/time -v "$BIN/exfilwatch" replay --config "$tmp/cfg.toml" -o "$tmp/alerts.jsonl" "$file" \
            2>"$tmp/err" || { cat "$tmp/err" >&2; exit 1; }
        rss_kib=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$tmp/err")
        state=$(grep -o 'state: [0-9]* keys, [0-9]* (key, origin) pairs' "$tmp/err")
        k=$(echo "$state" | awk '{print $2}')
        p=$(echo "$state" | awk '{print $4}')
        evicted=$(grep -o 'keys evicted: [0-9]*' "$tmp/err" | awk '{print $3}')
        # The thieves read from 185.0.N.77 (gen-logs bench): each theft detected once counted.
        thefts=$(grep -o '"ip":"185\.0\.[0-9]*\.77"' "$tmp/alerts.jsonl" | sort -u | wc -l)
        python3 - "$w" "$cap" "$rss_kib" "$k" "$p" "${evicted:-0}" "$thefts" <<'EOF'
import sys
w, cap, rss_kib, k, p, evicted, thefts = sys.argv[1:]
KEY_BYTES, ORIGIN_BYTES = 3584, 256  # src/detect/stats.rs
est = int(k) * KEY_BYTES + int(p) * ORIGIN_BYTES
rss = int(rss_kib) * 1024
mib = lambda b: f"{b / 2**20:,.0f} MiB"
print(f"| {w} | {cap if cap != '0' else 'none'} | {mib(rss)} | {int(k):,} | {int(p):,} | {mib(est)} | "
      f"{rss / est:.2f} | {int(evicted):,} | {thefts}/10 |")
EOF
    done
done
