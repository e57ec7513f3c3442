"""Petrel's Parquet parts read by ClickHouse (chdb): what an external engine sees of them.

Input on stdin: {"files": [paths of part files], "columns": [column names]}.
Output on stdout: {"rows": [[value of each column, ...], ...]}, every row of every part, in
file order, each column as ClickHouse reads it.
"""
import json
import sys

import chdb

spec = json.load(sys.stdin)
select = ", ".join(f"`{c}`" for c in spec["columns"])
rows = []
for path in spec["files"]:
    literal = path.replace("\\", "\\\\").replace("'", "\\'")
    out = chdb.query(
        f"SELECT {select} FROM file('{literal}', Parquet)"
        " SETTINGS output_format_json_quote_64bit_integers = 0",
        "JSONCompact",
    )
    rows.extend(json.loads(out.bytes())["data"])
json.dump({"rows": rows}, sys.stdout)
