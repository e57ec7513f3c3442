"""PyPI verdin 0.5.3 over dataflows/clicks: a datasource's appends (CSV and NDJSON through
/v0/datasources?mode=append, events through /v0/events, gzipped too) with an append token,
and a pipe's queries with a read token: `query(params)`, a query whose parameters are too
long for a URL (verdin then POSTs them as a form), `pages()` (every row exactly once, in the
pipe's order), `pipe.sql(...)` over `_`, and the Query API.

Needs PETREL_URL, PETREL_TOKEN (admin, for the checks and the Query API),
PETREL_APPEND_TOKEN (append on clicks), PETREL_READ_TOKEN (read on clicks_by_user).
Prints {"country", "query": data, "pages": [...], "expected_pages": data}.
"""

from verdin import tinybird as verdin

from clientlib import (
    RUN,
    admin,
    append_token,
    check,
    expect,
    finish,
    log_requests,
    pipe,
    read_token,
    report,
    step,
    url,
    wait_rows,
)

log_requests()
country = f"VD_{RUN}"
writer = verdin.Client(append_token(), api=url())
reader = verdin.Client(read_token(), api=url())
ds = writer.datasource("clicks")


def landed(what, expected_rows):
    rows = wait_rows(
        f"SELECT user_id, click_count, country, toString(timestamp) AS ts FROM clicks "
        f"WHERE country = '{country}' AND user_id IN ({','.join(str(r[0]) for r in expected_rows)}) "
        f"ORDER BY user_id, click_count",
        lambda rows: len(rows) >= len(expected_rows),
        what,
    )
    got = [[r["user_id"], r["click_count"]] for r in rows]
    want = sorted([r[0], r[1]] for r in expected_rows)
    expect(got == want, f"{what}: the rows landed once, with their values", rows)
    return rows


# Appends: CSV (Content-Type text/html, as verdin sends it), NDJSON, events, gzipped events.
csv_rows = [(11, 3, country, "2024-05-01 10:00:00"), (12, 4, country, "2024-05-01 10:01:00")]
r = step("append (CSV)", lambda: ds.append(csv_rows))
if r is not None:
    expect(r.ok, f"append (CSV) answered {r.status_code}", r.text)
    rows = landed("append (CSV)", csv_rows)
    expect(
        sorted(x["ts"] for x in rows) == ["2024-05-01 10:00:00", "2024-05-01 10:01:00"],
        "append (CSV): the timestamps landed",
        rows,
    )

nd = [{"user_id": 13, "click_count": 5, "country": country}]
r = step("append_ndjson", lambda: ds.append_ndjson(nd))
if r is not None:
    expect(r.ok, f"append_ndjson answered {r.status_code}", r.text)
    landed("append_ndjson", [(13, 5)])

events = [
    {"user_id": 14, "click_count": 6, "country": country},
    {"user_id": 16, "click_count": 1, "country": country},
]
r = step("send_events", lambda: ds.send_events(events, wait=True))
if r is not None:
    expect(r.successful_rows == 2 and r.quarantined_rows == 0, "send_events: 2 rows", r._response.text)
    landed("send_events", [(14, 6), (16, 1)])

gz = [{"user_id": 15, "click_count": 2, "country": country}]
r = step(
    "events (gzip)",
    lambda: writer.api.events.send("clicks", records=gz, wait=True, compress=True),
)
if r is not None:
    expect(r.successful_rows == 1, "events (gzip): 1 row", r._response.text)
    landed("events (gzip)", [(15, 2)])

# Queries with the read token.
p = reader.pipe("clicks_by_user")
want = [
    {"user_id": 14, "clicks": 6},
    {"user_id": 13, "clicks": 5},
    {"user_id": 12, "clicks": 4},
    {"user_id": 11, "clicks": 3},
    {"user_id": 15, "clicks": 2},
    {"user_id": 16, "clicks": 1},
]
q = step("pipe.query", lambda: p.query({"country": country}))
if q is not None:
    expect(q.data == want, "pipe.query: the sums per user, in the pipe's order", q.data)
    expect(q.meta == [("user_id", "UInt32"), ("clicks", "UInt64")], "pipe.query: meta", q.meta)

# Parameters over 8 KiB: verdin POSTs them as a form body instead of a query string.
q_long = step("pipe.query (long parameters, POST form)", lambda: p.query({"country": country, "filter": "x" * 9000}))
if q_long is not None:
    expect(q_long.data == want, "pipe.query with long parameters (POST form) answers the same rows", q_long.data)

# pages(): the pipe's default answer (country US) page by page. Seed 12 US users with
# distinct totals (admin token: the seed is not what is tested).
seed = [{"user_id": 5000 + i, "click_count": 100 + 7 * i, "country": "US"} for i in range(12)]
verdin.Client(admin(), api=url()).datasource("clicks").send_events(seed, wait=True)
expected_pages = pipe("clicks_by_user")["data"]
check(len(expected_pages) >= 12, "the endpoint answers the seeded US users", expected_pages)
pages = step("pipe.pages", lambda: [page.data for page in p.pages(page_size=5)])
if pages is not None:
    flat = [row for page in pages for row in page]
    expect(
        [len(page) for page in pages] == [5] * (len(expected_pages) // 5) + ([len(expected_pages) % 5] if len(expected_pages) % 5 else []),
        "pages: full pages of 5 and a last partial one",
        [len(page) for page in pages],
    )
    expect(
        len({r["user_id"] for r in flat}) == len(flat),
        "pages: no row comes twice",
        flat,
    )
    expect(flat == expected_pages, "pages: every row exactly once, in the pipe's order", {"pages": pages, "endpoint": expected_pages})

# pipe.sql over `_` (the pipe with its default parameters) with the read token.
count = step("pipe.sql", lambda: p.sql("SELECT count() AS n FROM _"))
if count is not None:
    expect(count.data == [{"n": len(expected_pages)}], "pipe.sql: count() over _ is the pipe's row count", count.data)


# The Query API (admin): SQL, and SQL over a pipe with `pipeline` and its parameters.
def query_api():
    admin_client = verdin.Client(admin(), api=url())
    res = admin_client.sql(f"SELECT sum(click_count) AS s FROM clicks WHERE country = '{country}'").json()
    expect(res.data == [{"s": 21}], "client.sql: the sum of this run's clicks", res.data)


step("client.sql", query_api)


def query_pipeline():
    # GET /v0/sql?q=...&pipeline=clicks_by_user: `_` is the pipe (its default parameters).
    res = verdin.Client(admin(), api=url()).api.query.query(
        "SELECT count() AS n FROM _", pipeline="clicks_by_user"
    )
    expect(
        res.data == [{"n": len(expected_pages)}],
        "api.query.query with pipeline=clicks_by_user: count() over _ is the pipe's row count",
        res.data,
    )


step("api.query.query(pipeline=...)", query_pipeline)

report({"country": country, "query": q.data if q else None, "pages": pages, "expected_pages": expected_pages})
finish("verdin")
