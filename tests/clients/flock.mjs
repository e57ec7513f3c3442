// @tinybirdco/flock.js 1.4.1, the web-analytics tracking script, in headless Chromium on a
// page of another origin (a static server on another loopback port, started here), with
// `data-host` pointing at the server and `data-token` a token that appends to
// analytics_events (the web-analytics starter kit's `tracker`). The script sends, by itself,
// a page hit on load and another on a history.pushState navigation; the page calls
// `Tinybird.trackEvent` once. Each is an XHR `POST /v0/events?name=analytics_events&token=T`
// with `Content-Type: application/json` (so the browser first sends a CORS preflight).
// All three must land in analytics_events with their values.
//
// Needs PETREL_URL, PETREL_TOKEN (admin, for the checks), PETREL_APPEND_TOKEN (append on
// analytics_events); PETREL_CHROMIUM (default: chromium). Prints {"run", "rows": [...], "xhrs": [...], "info"}.

import http from "node:http";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { spawn } from "node:child_process";
import { APPEND, RUN, URL_, check, fail, report, resolveClient, waitRows } from "./lib.mjs";

const flockJs = fs.readFileSync(resolveClient("@tinybirdco/flock.js"), "utf8");

// What the page tells the static server: each XHR's request and answer, errors, facts.
const reports = [];
const page = (run) => `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>flock.js on another origin</title>
<script>
  // Watches the page's XHRs (flock.js sends with XMLHttpRequest) and reports each answer
  // to this page's own server; it changes nothing the tracker sends.
  const tell = (what) => navigator.sendBeacon("/report", JSON.stringify(what));
  const open = XMLHttpRequest.prototype.open, send = XMLHttpRequest.prototype.send;
  XMLHttpRequest.prototype.open = function (method, url) { this._req = { method, url }; return open.apply(this, arguments); };
  XMLHttpRequest.prototype.send = function (body) {
    this.addEventListener("loadend", () => tell({ kind: "xhr", ...this._req, body, status: this.status, answer: this.responseText }));
    return send.apply(this, arguments);
  };
  addEventListener("error", (e) => tell({ kind: "error", message: String(e.message) }));
  addEventListener("load", () => {
    tell({ kind: "info", webdriver: navigator.webdriver, cookie: document.cookie, secure: isSecureContext });
    // The site's own custom event, then an in-app navigation (a new page hit).
    setTimeout(() => {
      Tinybird.trackEvent("add_to_cart", { product: "petrel", qty: 2, email: "someone@example.com" });
      setTimeout(() => history.pushState({}, "", "/run-${run}/second"), 300);
    }, 800);
  });
</script>
<script src="/flock.js" data-host="${URL_()}/" data-token="${APPEND()}" tb_run="${run}"></script>
</head><body><h1>A shop</h1></body></html>`;

const server = http.createServer((req, res) => {
  if (req.method === "POST" && req.url === "/report") {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      try {
        reports.push(JSON.parse(body));
      } catch {
        reports.push({ kind: "unparsed", body });
      }
      res.end("ok");
    });
    return;
  }
  if (req.url === "/flock.js") {
    res.writeHead(200, { "content-type": "text/javascript" });
    return res.end(flockJs);
  }
  if (req.url === `/run-${RUN}/`) {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    return res.end(page(RUN));
  }
  res.writeHead(404);
  res.end();
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const origin = `http://127.0.0.1:${server.address().port}`;
const pageUrl = `${origin}/run-${RUN}/`;

// A visitor's browser: headless Chromium, not flagged as automated (flock.js sends nothing
// when navigator.webdriver is true).
const profile = fs.mkdtempSync(path.join(os.tmpdir(), "petrel-flock-chromium-"));
const chromium = spawn(
  process.env.PETREL_CHROMIUM || "chromium",
  [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-blink-features=AutomationControlled",
    `--user-data-dir=${profile}`,
    pageUrl,
  ],
  { stdio: ["ignore", "ignore", "pipe"] },
);
let chromiumErr = "";
chromium.stderr.on("data", (d) => (chromiumErr += d));
chromium.on("error", (e) => done(() => fail(`cannot start chromium (${e.message}): scripts/test.sh installs Debian's chromium`)));
const exited = new Promise((r) => chromium.on("exit", r));
// Stops Chromium, waits for it to exit (2 s at most), removes its profile.
const stop = async () => {
  chromium.kill("SIGKILL");
  server.close();
  await Promise.race([exited, new Promise((r) => setTimeout(r, 2000))]);
  try {
    fs.rmSync(profile, { recursive: true, force: true, maxRetries: 5 });
  } catch {
    // A leftover profile in the temporary folder is harmless.
  }
};
async function done(then) {
  await stop();
  then();
}

// The three XHRs, answered (20 s at most).
const deadline = Date.now() + 20_000;
while (reports.filter((r) => r.kind === "xhr").length < 3) {
  if (Date.now() > deadline) {
    await done(() => fail("the page did not send its three events within 20 s", { reports, chromium: chromiumErr.slice(-2000) }));
  }
  await new Promise((r) => setTimeout(r, 100));
}
const xhrs = reports.filter((r) => r.kind === "xhr");
for (const x of xhrs) {
  const u = new URL(x.url);
  process.stderr.write(
    `> ${x.method} ${u.pathname}${u.search.replace(/token=[^&]+/, "token=...")} content-type=application/json body=${x.body}\n< ${x.status} ${x.answer}\n`,
  );
}
const info = reports.find((r) => r.kind === "info");
await stop();

const bad = xhrs.filter((x) => x.status !== 200 && x.status !== 202);
check(!bad.length, "every event the tracker sent was accepted (a status 0 is a CORS or network refusal)", bad);
check(info && info.webdriver === false, "the browser is not flagged as automated", info);

const rows = await waitRows(
  `SELECT action, version, session_id, payload, toUnixTimestamp(timestamp) AS ts FROM analytics_events WHERE payload LIKE '%"run": "${RUN}"%' OR payload LIKE '%"run":"${RUN}"%' ORDER BY timestamp, action`,
  (rows) => rows.length >= 3,
  "flock.js's events",
);
check(rows.length === 3, "three rows landed: two page hits and the custom event", rows);
const parsed = rows.map((r) => ({ ...r, payload: JSON.parse(r.payload) }));
const hits = parsed.filter((r) => r.action === "page_hit");
const custom = parsed.filter((r) => r.action === "add_to_cart");
check(hits.length === 2 && custom.length === 1, "two page_hit rows and one add_to_cart row", parsed);
check(parsed.every((r) => r.version === "1"), "version is the tracker's", parsed);
const now = Date.now() / 1000;
check(parsed.every((r) => Math.abs(r.ts - now) < 120), "the timestamps are the browser's now", { now, parsed });
const paths = hits.map((r) => r.payload.pathname).sort();
check(
  JSON.stringify(paths) === JSON.stringify([`/run-${RUN}/`, `/run-${RUN}/second`]),
  "the page hits carry the page's path and the pushState navigation's",
  hits,
);
for (const h of hits) {
  check(h.payload.href === `${origin}${h.payload.pathname}`, "a page hit's href is the page's URL", h);
  check(/Chrome/.test(h.payload["user-agent"]), "a page hit carries the user agent", h);
  check(typeof h.payload.locale === "string" && h.payload.locale.length > 0, "a page hit carries the locale", h);
}
const c = custom[0].payload;
check(
  c.product === "petrel" && c.qty === 2 && c.email === "********" && c.run === RUN,
  "the custom event's payload landed (its email masked by the tracker, the tb_ attribute added)",
  c,
);
// The session cookie (Secure: kept on a loopback http page, which the browser treats as secure).
const sessions = new Set(parsed.map((r) => r.session_id));
if (info.secure) {
  check(
    sessions.size === 1 && typeof parsed[0].session_id === "string" && parsed[0].session_id.length === 36,
    "the three events carry the one session id of the tracker's cookie",
    parsed,
  );
}

report({ run: RUN, rows: parsed, xhrs: xhrs.map((x) => ({ method: x.method, status: x.status, body: x.body })), info });
process.stderr.write("flock.js: ok\n");
process.exit(0);
