"""Runs queries in ClickHouse (chdb, in process) over NDJSON snapshots of tables.

Input on stdin: {"tables": {"t": "k Int64, ...", ...},
                 "checkpoints": [{"files": {"t": "/path/t.ndjson", ...}, "queries": ["SELECT ...", ...]}]}
Output on stdout: one JSON list per checkpoint, each a list of per-query results, each a list
of rows (JSON objects), or {"error": "..."}.
"""
import json
import sys

import chdb
from chdb import session as chs

spec = json.load(sys.stdin)
out = []
sess = chs.Session()
sess.query("SET output_format_json_quote_64bit_integers = 0")
sess.query("SET output_format_json_quote_denormals = 0")
for cp in spec["checkpoints"]:
    for name, schema in spec["tables"].items():
        sess.query(f"DROP TABLE IF EXISTS {name}")
        sess.query(f"CREATE TABLE {name} ({schema}) ENGINE = MergeTree ORDER BY tuple()")
        path = cp["files"][name]
        sess.query(f"INSERT INTO {name} SELECT * FROM file('{path}', JSONEachRow, '{schema}')")
    results = []
    for q in cp["queries"]:
        try:
            text = sess.query(q + " FORMAT JSONEachRow", "CSV").bytes().decode()
            results.append([json.loads(line) for line in text.splitlines() if line.strip()])
        except Exception as e:  # report, do not stop: the Rust side fails the test
            results.append({"error": str(e)})
    out.append(results)
json.dump(out, sys.stdout)
