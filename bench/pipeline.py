#!/usr/bin/env python3
"""Whole-pipeline benchmark (`make bench-pipeline`).

Two workloads, each a legacy-shape file of 2,000,000 records of ~1.1 KB over 10 days plus 10
planted thefts, generated once by `gen-logs bench` (deterministic) and cached in bench-data/:
  typical: 1,000 keys x 8 origins (each key reads from its origins all along);
  state:   100,000 keys x 20 origins (nearly every record is the first sighting of its
           (key, origin) pair: the state-size and worst case for a per-key detector).
On each file, interleaved, REPS times each:
  (a) parse_only: the same sources + decoder as replay, nothing else (the limit, one thread);
  (b) exfilwatch replay --threads 1 and --threads 2 (the same output: tests/parallel.rs);
  (c) the peer: the fixed-threshold rule as one DuckDB query (bench/peer.sql), with
      `SET threads = 1` and `SET threads = 2`.
Reports medians (wall time, records/s, MB/s, peak RSS of the whole process) and the ratios at
equal thread counts, as a Markdown table ready for BENCHMARKS.md. Run from the repository root.
"""
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

REPS = int(os.environ.get("REPS", "3"))
RECORDS = int(os.environ.get("RECORDS", "2000000"))
WORKLOADS = [("typical", 1000, 8), ("state", 100000, 20)]
DATA_DIR = os.environ.get("BENCH_DATA", "bench-data")
TARGET = os.environ.get("CARGO_TARGET_DIR", "target")


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def timed(cmd):
    """Runs cmd under /usr/bin/time; returns (wall seconds, peak RSS KiB, stdout)."""
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode not in (0, 3):
        sys.exit(f"{cmd[0]} failed ({p.returncode}): {p.stderr[-2000:]}")
    rss = int(p.stderr.strip().splitlines()[-1])
    return wall, rss, p.stdout


def measure(name_, keys, origins):
    data = os.path.join(DATA_DIR, f"bench-{RECORDS}-{keys}-{origins}.jsonl")
    if not os.path.exists(data):
        sh([f"{TARGET}/release/gen-logs", "bench", "--records", str(RECORDS), "--keys", str(keys),
            "--origins-per-key", str(origins), "--out", data + ".tmp"], stderr=subprocess.DEVNULL)
        os.rename(data + ".tmp", data)
    size = os.path.getsize(data)
    with open(data, "rb") as f:
        records = sum(1 for _ in f)
    # Warm the page cache so that every contender reads from memory.
    with open(data, "rb") as f:
        while f.read(64 << 20):
            pass
    contenders = [
        ("parse_only", [f"{TARGET}/release/examples/parse_only", data]),
        ("replay, 1 thread", [f"{TARGET}/release/exfilwatch", "replay", "-q", "--threads", "1", data]),
        ("replay, 2 threads", [f"{TARGET}/release/exfilwatch", "replay", "-q", "--threads", "2", data]),
        ("DuckDB, 1 thread", [sys.executable, "bench/peer.py", data, "1"]),
        ("DuckDB, 2 threads", [sys.executable, "bench/peer.py", data, "2"]),
    ]
    runs = {name: [] for name, _ in contenders}
    found = {}
    outputs = {}
    for _ in range(REPS):
        for name, cmd in contenders:
            w, r, out = timed(cmd)
            runs[name].append((w, r))
            if name.startswith("replay"):
                outputs.setdefault(name, out)
                found[name] = sum(1 for l in out.splitlines() if '"rule":"unfamiliar_origin_volume"' in l
                                  and '"escalation_level":0' in l)
            elif name.startswith("DuckDB"):
                found[name] = json.loads(out)["rows"]
    med = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for k, v in runs.items()}
    mb = size / 1e6
    print(f"\n### {name_}: {keys:,} keys x {origins} origins")
    print(f"\n`{data}`: {records:,} records, {mb:,.0f} MB; {REPS} runs each, interleaved; medians.")
    print("\n| contender | seconds | records/s | MB/s | peak RSS |")
    print("|---|---:|---:|---:|---:|")
    for k, _ in contenders:
        w, r = med[k]
        print(f"| {k} | {w:.2f} | {records / w:,.0f} | {mb / w:,.0f} | {r / 1024:,.0f} MiB |")
    t = lambda k: med[k][0]
    print(f"\n- replay vs DuckDB, 1 thread each: {t('DuckDB, 1 thread') / t('replay, 1 thread'):.2f}x as fast")
    print(f"- replay vs DuckDB, 2 threads each: {t('DuckDB, 2 threads') / t('replay, 2 threads'):.2f}x as fast")
    print(f"- replay throughput per core / parse_only: 1 thread {t('parse_only') / t('replay, 1 thread'):.2f}, "
          f"2 threads {t('parse_only') / t('replay, 2 threads') / 2:.2f}")
    print(f"- replay 2 threads / 1 thread speed-up: {t('replay, 1 thread') / t('replay, 2 threads'):.2f}x")
    same = outputs.get("replay, 1 thread") == outputs.get("replay, 2 threads")
    print(f"- replay output with 1 and 2 threads byte-identical: {same}")
    print("- thefts found: " + ", ".join(f"{k} {v}" for k, v in found.items())
          + " (`unfamiliar_origin_volume` alerts at level 0 for replay, rows for DuckDB)")
    print("- all runs (s): " + json.dumps({k: [round(x[0], 3) for x in v] for k, v in runs.items()}))


def main():
    sh(["cargo", "build", "--release", "--locked", "--bins", "--example", "parse_only"])
    try:
        import duckdb  # noqa: F401
    except ImportError:
        sh([sys.executable, "-m", "pip", "install", "--quiet", "duckdb"])
    os.makedirs(DATA_DIR, exist_ok=True)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    for name, keys, origins in WORKLOADS:
        measure(name, keys, origins)


if __name__ == "__main__":
    main()
