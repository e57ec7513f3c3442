"""Type-by-type decoding against ClickHouse (chdb): the same values go into a ClickHouse table
and into Petrel datasources of the same schema, as NDJSON, CSV and Parquet, and the stored
rows are compared.

Input on stdin: {"url": Petrel's URL, "token": its admin token, "schema": [[name, type], ...],
                 "rows": [NDJSON lines], "datasources": {"ndjson": DS, "csv": DS, "parquet": DS}}
The ClickHouse table gets the NDJSON lines (rows it cannot parse are skipped); its CSV and
Parquet exports of the stored rows are what Petrel gets for those formats.
Output on stdout: {"clickhouse_rows": N, "formats": {fmt: {"petrel_rows", "quarantined",
"differences": [...]}}}.
"""
import json
import math
import os
import sys
import tempfile
import urllib.parse
import urllib.request

from chdb import session as chs

spec = json.load(sys.stdin)
columns = ", ".join(f"`{n}` {t}" for n, t in spec["schema"])
names = [n for n, _ in spec["schema"]]
# The structure as a string literal inside file(..) (enum names and time zones are quoted).
structure = columns.replace("\\", "\\\\").replace("'", "\\'")
sess = chs.Session()
for setting in [
    "output_format_json_quote_64bit_integers = 0",
    "output_format_json_quote_denormals = 0",
    "input_format_allow_errors_num = 1000",
    "input_format_allow_errors_ratio = 1",
    "date_time_input_format = 'best_effort'",
]:
    sess.query(f"SET {setting}")
sess.query(f"CREATE TABLE t ({columns}) ENGINE = MergeTree ORDER BY tuple()")
work = tempfile.mkdtemp(prefix="petrel-decode-")
src = os.path.join(work, "rows.ndjson")
with open(src, "w") as f:
    f.write("\n".join(spec["rows"]) + "\n")
sess.query(f"INSERT INTO t SELECT * FROM file('{src}', JSONEachRow, '{structure}')")


def ch_rows():
    text = sess.query("SELECT * FROM t ORDER BY id FORMAT JSONEachRow", "CSV").bytes().decode()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


expected = ch_rows()
exports = {}
for fmt, ch_format in [("csv", "CSV"), ("parquet", "Parquet")]:
    path = os.path.join(work, f"rows.{fmt}")
    sess.query(
        f"INSERT INTO FUNCTION file('{path}', {ch_format}, '{structure}') SELECT * FROM t ORDER BY id"
    )
    with open(path, "rb") as f:
        exports[fmt] = f.read()
exports["ndjson"] = ("\n".join(spec["rows"]) + "\n").encode()


def request(method, path, body=None):
    req = urllib.request.Request(
        spec["url"] + path,
        data=body,
        method=method,
        headers={"Authorization": f"Bearer {spec['token']}"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=60) as r:
            return r.status, json.loads(r.read().decode())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def same(a, b):
    """Values equal as ClickHouse and Petrel print them (floats within rounding)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b or (a in (0, 1) and b in (0, 1) and bool(a) == bool(b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if isinstance(a, float) or isinstance(b, float):
            return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


report = {"clickhouse_rows": len(expected), "formats": {}}
for fmt, ds in spec["datasources"].items():
    q = urllib.parse.urlencode({"name": ds, "mode": "append", "format": fmt})
    status, body = request("POST", f"/v0/datasources?{q}", exports[fmt])
    entry = {"append_status": status, "differences": []}
    if status != 200:
        entry["differences"].append(f"append answered {status}: {str(body)[:300]}")
        report["formats"][fmt] = entry
        continue
    entry["quarantined"] = body.get("quarantined_rows")
    sql = urllib.parse.quote(f"SELECT * FROM {ds} ORDER BY id FORMAT JSON")
    status, got = request("GET", f"/v0/sql?q={sql}")
    if status != 200:
        entry["differences"].append(f"reading back answered {status}: {str(got)[:300]}")
        report["formats"][fmt] = entry
        continue
    rows = got["data"]
    entry["petrel_rows"] = len(rows)
    if len(rows) != len(expected):
        entry["differences"].append(f"{len(rows)} rows stored, ClickHouse stored {len(expected)}")
    for want, have in zip(expected, rows):
        for col in names:
            if not same(want.get(col), have.get(col)):
                entry["differences"].append(
                    f"id {want.get('id')} column {col}: petrel {have.get(col)!r}, clickhouse {want.get(col)!r}"
                )
    report["formats"][fmt] = entry
json.dump(report, sys.stdout)
