#!/usr/bin/env python3
"""Runs bench/investigate.sql over an export Parquet file for one account with a given number
of threads; prints one JSON line: rows per table, seconds (query only), the DuckDB version."""
import json
import pathlib
import sys
import time

import duckdb

path, account, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
sql = (pathlib.Path(__file__).parent / "investigate.sql").read_text()
sql = sql.replace("__FILE__", path).replace("__ACCOUNT__", account)
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
started = time.perf_counter()
rows = con.execute(sql).fetchall()
secs = time.perf_counter() - started
tables = {}
for t, _ in rows:
    tables[t] = tables.get(t, 0) + 1
print(json.dumps({"tables": tables, "seconds": round(secs, 3), "duckdb": duckdb.__version__}))
