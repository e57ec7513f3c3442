"""Shared helpers of the Python client scripts (the Python twin of lib.mjs).

Environment:
  PETREL_URL           the server, e.g. http://127.0.0.1:4000 (required)
  PETREL_TOKEN         the admin token (required: the scripts check what landed with it)
  PETREL_READ_TOKEN    a token the client reads pipes with (default: PETREL_TOKEN)
  PETREL_APPEND_TOKEN  a token the client appends with (default: PETREL_TOKEN)

Every request the clients make through `requests` or `aiohttp` is logged to stderr (method,
path and query, content type, the body's start; the status, and the answer when it is not a
success), so a failure shows the exact request. The checks here use urllib, outside that log.
"""

import json
import os
import random
import string
import sys
import time
import urllib.parse
import urllib.request

RUN = "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(6))


def fail(message, got=None):
    sys.stderr.write(f"FAIL: {message}\n")
    if got is not None:
        text = got if isinstance(got, str) else json.dumps(got, indent=1, default=str)
        sys.stderr.write(f"got: {text}\n")
    sys.exit(1)


def check(condition, message, got=None):
    if not condition:
        fail(message, got)


FAILURES = []


def expect(condition, message, got=None):
    """A check that lets the script go on (so one run reports every failure); finish()
    exits non-zero if any failed."""
    if not condition:
        FAILURES.append(message)
        sys.stderr.write(f"FAIL: {message}\n")
        if got is not None:
            text = got if isinstance(got, str) else json.dumps(got, indent=1, default=str)
            sys.stderr.write(f"got: {text}\n")
    return condition


def step(what, fn):
    """Runs one step of a script; an exception (the client's error on an answer it did not
    expect) is a failed check, and the script goes on. The step's value, or None."""
    try:
        return fn()
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - any client error is a finding
        expect(False, f"{what}: {type(e).__name__}: {e}")
        return None


def finish(name):
    if FAILURES:
        sys.stderr.write(f"{name}: {len(FAILURES)} check(s) failed: {FAILURES}\n")
        sys.exit(1)
    sys.stderr.write(f"{name}: ok\n")


def env(name, fallback=None):
    value = os.environ.get(name) or fallback
    if not value:
        fail(f"the environment variable {name} is not set")
    return value


def url():
    return env("PETREL_URL").rstrip("/")


def admin():
    return env("PETREL_TOKEN")


def read_token():
    return env("PETREL_READ_TOKEN", os.environ.get("PETREL_TOKEN"))


def append_token():
    return env("PETREL_APPEND_TOKEN", os.environ.get("PETREL_TOKEN"))


def _get_json(path, params):
    full = f"{url()}{path}?{urllib.parse.urlencode(params)}"
    request = urllib.request.Request(full, headers={"Authorization": f"Bearer {admin()}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        fail(f"GET {path} answered {e.code}", e.read().decode(errors="replace"))


def sql(q):
    """Runs SQL with the admin token; the JSON answer."""
    return _get_json("/v0/sql", {"q": f"{q} FORMAT JSON"})


def pipe(name, params=None):
    """Reads a pipe's endpoint (GET, admin token); the JSON answer."""
    return _get_json(f"/v0/pipes/{name}.json", params or {})


def wait_rows(q, done, what):
    """Polls `q` until done(rows) holds (30 s at most); the last rows."""
    deadline = time.time() + 30
    while True:
        rows = sql(q)["data"]
        if done(rows):
            return rows
        if time.time() > deadline:
            fail(f"{what}: never landed (query: {q})", rows)
        time.sleep(0.2)


def report(value):
    """The script's result, for tests/clients.rs: one JSON line on stdout."""
    sys.stdout.write(json.dumps(value, default=str) + "\n")
    sys.stdout.flush()


def _describe(method, full_url, content_type, body):
    u = urllib.parse.urlsplit(str(full_url))
    query = "?" + u.query if u.query else ""
    if "token=" in query:
        query = "&".join(
            "token=..." if p.startswith("token=") or p.startswith("?token=") else p
            for p in query.split("&")
        )
    if len(query) > 300:
        query = f"{query[:300]}... ({len(query)} chars)"
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    text = "" if body is None else str(body)
    if len(text) > 200:
        text = f"{text[:200]}... ({len(text)} chars)"
    return f"{method} {u.path}{query} content-type={content_type or '-'}" + (
        f" body={text!r}" if text else ""
    )


def log_requests():
    """Logs every request made through requests and aiohttp to stderr."""
    try:
        import requests

        real_send = requests.Session.send

        def send(self, request, **kwargs):
            line = _describe(
                request.method, request.url, request.headers.get("Content-Type"), request.body
            )
            response = real_send(self, request, **kwargs)
            note = "" if response.ok else " " + response.text[:500]
            sys.stderr.write(f"> {line}\n< {response.status_code}{note}\n")
            return response

        requests.Session.send = send
    except ImportError:
        pass
    try:
        import aiohttp

        real_request = aiohttp.ClientSession._request

        async def _request(self, method, str_or_url, **kwargs):
            headers = kwargs.get("headers") or {}
            content_type = headers.get("Content-Type") or headers.get("content-type")
            full = str(str_or_url)
            if kwargs.get("params"):
                full += ("&" if "?" in full else "?") + urllib.parse.urlencode(kwargs["params"])
            line = _describe(method, full, content_type, kwargs.get("data"))
            response = await real_request(self, method, str_or_url, **kwargs)
            note = ""
            if response.status >= 400:
                note = " " + (await response.text())[:500]
            sys.stderr.write(f"> {line} (aiohttp)\n< {response.status}{note}\n")
            return response

        aiohttp.ClientSession._request = _request
    except ImportError:
        pass
