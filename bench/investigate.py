#!/usr/bin/env python3
"""`exfilwatch investigate` against DuckDB (`make bench-investigate`, BENCHMARKS.md).

One workload: `gen-logs bench` with RECORDS records (default 10,000,000; 1,000 keys x 8
origins, about 400 accounts), as JSON Lines and as the Parquet file `exfilwatch export --to
parquet` writes from it (both generated once and cached in bench-data/). The question: the
summary of one account (per credential, per origin, hourly timeline, first-seen origins).
Interleaved, REPS times each, with the page cache warm:
  (a) exfilwatch investigate over the Parquet file, --threads 1 and 2 (polars);
  (b) the same summary as one DuckDB query over the same Parquet file, threads 1 and 2
      (bench/investigate.sql; DuckDB from pip, as bench/pipeline.py);
  (c) exfilwatch investigate over the JSON Lines file (the library's decoder), --threads 2.
Wall time of the whole process for every contender (DuckDB's own query time too), medians;
the answers are compared (rows per table, total bytes). Run from the repository root.
"""
import json
import os
import platform
import statistics
import subprocess
import sys
import time

REPS = int(os.environ.get("REPS", "5"))
RECORDS = int(os.environ.get("RECORDS", "10000000"))
ACCOUNT = os.environ.get("ACCOUNT", "acct00042")
DATA_DIR = os.environ.get("BENCH_DATA", "bench-data")
TARGET = os.environ.get("CARGO_TARGET_DIR", "target")


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def timed(cmd):
    """Runs cmd under /usr/bin/time; returns (wall seconds, peak RSS KiB, stdout)."""
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"{cmd} failed ({p.returncode}): {p.stderr[-2000:]}")
    rss = int(p.stderr.strip().splitlines()[-1])
    return wall, rss, p.stdout


def warm(path):
    with open(path, "rb") as f:
        while f.read(64 << 20):
            pass


def main():
    sh(["cargo", "build", "--release", "--locked", "--bin", "exfilwatch", "--bin", "gen-logs"])
    sh(["cargo", "build", "--release", "--locked", "-p", "exfilwatch-investigate"])
    try:
        import duckdb  # noqa: F401
    except ImportError:
        sh([sys.executable, "-m", "pip", "install", "--quiet", "duckdb"])
    os.makedirs(DATA_DIR, exist_ok=True)
    jsonl = os.path.join(DATA_DIR, f"bench-{RECORDS}-1000-8.jsonl")
    parquet = os.path.join(DATA_DIR, f"export-{RECORDS}-1000-8.parquet")
    if not os.path.exists(jsonl):
        sh([f"{TARGET}/release/gen-logs", "bench", "--records", str(RECORDS), "--keys", "1000",
            "--origins-per-key", "8", "--out", jsonl + ".tmp"], stderr=subprocess.DEVNULL)
        os.rename(jsonl + ".tmp", jsonl)
    if not os.path.exists(parquet):
        t0 = time.perf_counter()
        sh([f"{TARGET}/release/exfilwatch", "export", jsonl, "--to", "parquet", parquet + ".tmp"])
        print(f"export: {time.perf_counter() - t0:.1f} s")
        os.rename(parquet + ".tmp", parquet)
    inv = f"{TARGET}/release/exfilwatch-investigate"
    warm(parquet)
    warm(jsonl)
    contenders = {
        "investigate parquet 1 thread": [inv, parquet, "--account", ACCOUNT, "--format", "json", "--threads", "1"],
        "investigate parquet 2 threads": [inv, parquet, "--account", ACCOUNT, "--format", "json", "--threads", "2"],
        "duckdb parquet 1 thread": [sys.executable, "bench/investigate_duckdb.py", parquet, ACCOUNT, "1"],
        "duckdb parquet 2 threads": [sys.executable, "bench/investigate_duckdb.py", parquet, ACCOUNT, "2"],
        "investigate jsonl 2 threads": [inv, jsonl, "--account", ACCOUNT, "--format", "json", "--threads", "2"],
    }
    runs = {k: [] for k in contenders}
    answers = {}
    for _ in range(REPS):
        for k, cmd in contenders.items():
            w, r, out = timed(cmd)
            runs[k].append((w, r))
            answers[k] = json.loads(out)
    # The same answers: rows per table; the credentials' total bytes.
    ours = answers["investigate parquet 2 threads"]
    for k, a in answers.items():
        if k.startswith("investigate"):
            assert a == ours, f"{k} differs from the Parquet answer"
    rows = {t: len(ours[t]) for t in ("credentials", "origins", "timeline", "first_seen")}
    duck = answers["duckdb parquet 1 thread"]["tables"]
    assert duck == rows, f"DuckDB's tables {duck} != investigate's {rows}"
    med = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for k, v in runs.items()}
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; DuckDB {answers['duckdb parquet 1 thread']['duckdb']}")
    print(f"\n`{parquet}` ({os.path.getsize(parquet) / 1e6:,.0f} MB) and `{jsonl}` "
          f"({os.path.getsize(jsonl) / 1e6:,.0f} MB): {RECORDS:,} records; --account {ACCOUNT}: "
          f"{sum(r['requests'] for r in ours['credentials']):,} requests, rows per table {rows}; "
          f"{REPS} runs each, interleaved; medians.")
    print("\n| contender | seconds | peak RSS |")
    print("|---|---:|---:|")
    for k in contenders:
        w, r = med[k]
        print(f"| {k} | {w:.3f} | {r / 1024:,.0f} MiB |")
    for t in ("1 thread", "2 threads"):
        print(f"- investigate vs DuckDB, Parquet, {t}: "
              f"{med[f'duckdb parquet {t}'][0] / med[f'investigate parquet {t}'][0]:.2f}x as fast")
    print("- all runs (s): " + json.dumps({k: [round(x[0], 3) for x in v] for k, v in runs.items()}))


if __name__ == "__main__":
    main()
