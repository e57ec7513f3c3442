"""ClickHouse side of `cargo bench --bench vs_clickhouse` (chdb: ClickHouse in process).

Input on stdin (JSON):
  {"setup": ["CREATE TABLE ...", "CREATE MATERIALIZED VIEW ...", ...],
   "table": "events",
   "files": ["/tmp/.../batch-00000.ndjson", ...],
   "queries": [{"name": "top_users US", "sql": "SELECT ...", "repeat": 50}, ...],
   "stats": {"name": "SELECT <one value>", ...}}

Runs the setup statements, then inserts each NDJSON file as one
`INSERT INTO <table> FORMAT JSONEachRow` (one client, sequential, as Petrel receives the same
batches); only the INSERT statements are timed (the file is read before the clock starts),
in wall-clock seconds and in the process's CPU seconds.
Then runs every query once for its answer and `repeat` more times, timing each run, and
each `stats` query once (figures for the report, such as the number of groups).

Output on stdout (JSON):
  {"insert_seconds": s, "insert_cpu_seconds": s, "rows": n, "version": "...",
   "results": {name: [row, ...]}, "read_ms": {name: [ms, ...]}, "stats": {name: value}}
"""
import json
import sys
import time

import chdb
from chdb import session as chs


def rows_of(sess, sql):
    text = sess.query(sql + " FORMAT JSONEachRow", "CSV").bytes().decode()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def main():
    spec = json.load(sys.stdin)
    sess = chs.Session()
    sess.query("SET session_timezone = 'UTC'")
    sess.query("SET output_format_json_quote_64bit_integers = 0")
    sess.query("SET output_format_json_quote_denormals = 0")
    for stmt in spec["setup"]:
        sess.query(stmt)

    table = spec["table"]
    insert_seconds = 0.0
    insert_cpu_seconds = 0.0
    for path in spec["files"]:
        with open(path, "r", encoding="utf-8") as f:
            body = f.read()
        started = time.perf_counter()
        # CPU of the whole process (every ClickHouse thread, including merges running
        # meanwhile), as Petrel's figure is its process's.
        cpu_started = time.process_time()
        sess.query(f"INSERT INTO {table} FORMAT JSONEachRow\n" + body)
        insert_cpu_seconds += time.process_time() - cpu_started
        insert_seconds += time.perf_counter() - started
    rows = rows_of(sess, f"SELECT count() AS n FROM {table}")[0]["n"]

    results = {}
    read_ms = {}
    for q in spec["queries"]:
        results[q["name"]] = rows_of(sess, q["sql"])
        times = []
        for _ in range(q.get("repeat", 0)):
            started = time.perf_counter()
            rows_of(sess, q["sql"])
            times.append((time.perf_counter() - started) * 1e3)
        read_ms[q["name"]] = times

    stats = {}
    for name, sql in spec.get("stats", {}).items():
        row = rows_of(sess, sql)[0]
        stats[name] = next(iter(row.values()))

    json.dump(
        {
            "insert_seconds": insert_seconds,
            "insert_cpu_seconds": insert_cpu_seconds,
            "rows": rows,
            "version": rows_of(sess, "SELECT version() AS v")[0]["v"],
            "chdb": chdb.__version__,
            "results": results,
            "read_ms": read_ms,
            "stats": stats,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
