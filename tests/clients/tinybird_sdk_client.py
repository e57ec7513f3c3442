"""PyPI tinybird-python-sdk 0.3.7 (module `tb`) over dataflows/clicks plus tb_logs.datasource:
- tb.datasource.Datasource: buffered NDJSON to /v0/events?mode=append&name=..&format=ndjson&wait=false;
- tb.api.API / tb.a.api.AsyncAPI: GET a pipe's endpoint, POST /v0/datasources (append NDJSON),
  and AsyncAPI.initialize() (GET /v0/datasources);
- tb.logger.TinybirdLoggingHandler: log records into the tb_logs datasource.

Needs PETREL_URL, PETREL_TOKEN (admin, for the checks and initialize()), PETREL_APPEND_TOKEN
(append on clicks), PETREL_READ_TOKEN (read on clicks_by_user), PETREL_LOGS_TOKEN (append on
tb_logs; default PETREL_TOKEN). Prints {"country", "run", "pipe": data, "async_pipe": data, "log": row}.
"""

import asyncio
import json
import logging
import os

from tb.a.api import AsyncAPI
from tb.api import API
from tb.datasource import Datasource
from tb.logger import TinybirdLoggingHandler

from clientlib import (
    RUN,
    admin,
    append_token,
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
country = f"SD_{RUN}"


def landed(what, expected):
    """Waits for this run's rows of user ids in `expected` ({user_id: total clicks})."""
    ids = ",".join(str(u) for u in expected)
    rows = wait_rows(
        f"SELECT user_id, sum(click_count) AS c FROM clicks WHERE country = '{country}' "
        f"AND user_id IN ({ids}) GROUP BY user_id ORDER BY user_id",
        lambda rows: len(rows) >= len(expected)
        and all(r["c"] >= expected[r["user_id"]] for r in rows),
        what,
    )
    expect({r["user_id"]: r["c"] for r in rows} == expected, f"{what}: the rows landed once", rows)


# Datasource: rows appended with `<<` and `+=`, flushed when the block ends.
def sync_datasource():
    with Datasource("clicks", append_token(), api_url=url()) as ds:
        ds << {"user_id": 21, "click_count": 2, "country": country}
        ds << {"user_id": 22, "click_count": 3, "country": country}
        ds += {"user_id": 21, "click_count": 4, "country": country}
    landed("Datasource", {21: 6, 22: 3})


step("Datasource", sync_datasource)


# AsyncDatasource is not exercised: in 0.3.7 it never sends (its timer's flush cancels its
# own task, a flush on a full buffer deadlocks on the datasource's lock, and close() flushes
# nothing once it has set _shutdown), whatever the server.

# AsyncAPI: append NDJSON through the Data Sources API.
async def async_append():
    async with AsyncAPI(append_token(), url()) as api:
        r = await api.post(
            "datasources",
            params={"name": "clicks", "mode": "append", "format": "ndjson"},
            data=json.dumps({"user_id": 25, "click_count": 7, "country": country}) + "\n",
        )
        expect(r.status == 200, f"AsyncAPI.post datasources answered {r.status}", await r.text())


step("AsyncAPI.post('datasources', mode=append)", lambda: asyncio.run(async_append()))
landed("AsyncAPI.post('datasources')", {25: 7})

# Reading the endpoint with the read token, sync and async.
want = [
    {"user_id": 25, "clicks": 7},
    {"user_id": 21, "clicks": 6},
    {"user_id": 22, "clicks": 3},
]
expect(pipe("clicks_by_user", {"country": country})["data"] == want, "the endpoint answers the sums")
got = step(
    "API.get pipe",
    lambda: API(read_token(), url()).get("pipes/clicks_by_user.json", params={"country": country}).json(),
)
if got is not None:
    expect(got["data"] == want, "API.get('pipes/clicks_by_user.json') answers the endpoint's rows", got)


async def async_pipe():
    async with AsyncAPI(read_token(), url()) as api:
        return await api.get_json("pipes/clicks_by_user.json", params={"country": country})


got_async = step("AsyncAPI.get_json pipe", lambda: asyncio.run(async_pipe()))
if got_async is not None:
    expect(got_async["data"] == want, "AsyncAPI.get_json answers the endpoint's rows", got_async)


# AsyncAPI.initialize(): checks the token with GET /v0/datasources (exits the process on 403).
async def initialize():
    async with AsyncAPI(admin(), url()) as api:
        await api.initialize()


try:
    step("AsyncAPI.initialize", lambda: asyncio.run(initialize()))
except SystemExit:
    expect(False, "AsyncAPI.initialize() exited: GET /v0/datasources refused the admin token")


# TinybirdLoggingHandler: each record is sent to tb_logs as it is logged.
def logging_handler():
    token = os.environ.get("PETREL_LOGS_TOKEN") or admin()
    logger = logging.getLogger(f"petrel-clients-{RUN}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = TinybirdLoggingHandler(token, url(), "petrel-clients", ds_name="tb_logs")
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logging.raiseExceptions = True
    logger.warning("order %s shipped", RUN)
    rows = wait_rows(
        "SELECT app_name, name, level, levelname, message, formatted_message, funcName, module "
        f"FROM tb_logs WHERE message = 'order {RUN} shipped'",
        lambda rows: len(rows) >= 1,
        "the log record",
    )
    expect(
        rows
        == [
            {
                "app_name": "petrel-clients",
                "name": f"petrel-clients-{RUN}",
                "level": 30,
                "levelname": "WARNING",
                "message": f"order {RUN} shipped",
                "formatted_message": f"WARNING petrel-clients-{RUN}: order {RUN} shipped",
                "funcName": "logging_handler",
                "module": "tinybird_sdk_client",
            }
        ],
        "the log record landed in tb_logs with its fields",
        rows,
    )
    return rows[0]


log_row = step("TinybirdLoggingHandler", logging_handler)

report({"country": country, "run": RUN, "pipe": got and got.get("data"), "async_pipe": got_async and got_async.get("data"), "log": log_row})
finish("tinybird-python-sdk")
