#!/usr/bin/env python3
"""Runs the DuckDB peer query (bench/peer.sql) over a JSON Lines file with a given number of
threads; prints one JSON line: rows found, seconds, records/s (records counted by the caller)."""
import json
import pathlib
import sys
import time

import duckdb

path, threads = sys.argv[1], int(sys.argv[2])
sql = (pathlib.Path(__file__).parent / "peer.sql").read_text().replace("__FILE__", path)
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
started = time.perf_counter()
rows = con.execute(sql).fetchall()
secs = time.perf_counter() - started
print(json.dumps({"rows": len(rows), "seconds": round(secs, 3), "duckdb": duckdb.__version__,
                  "top": [list(map(str, r)) for r in rows[:3]]}))
