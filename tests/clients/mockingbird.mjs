// @tinybirdco/mockingbird 1.1.4: its TinybirdGenerator, with `endpoint` set to the server,
// generates rows from the preset schema "Web Analytics Starter Kit" and POSTs them as NDJSON
// batches to /v0/events?name=analytics_events&from=mockingbird (Bearer token), as
// `mockingbird` does against Tinybird. Every row it generated must land, with its values.
//
// Needs PETREL_URL, PETREL_TOKEN (admin, for the checks), PETREL_APPEND_TOKEN (append on
// analytics_events: the web-analytics starter kit's `tracker`). Prints {"sent": n, "landed": n, "session_ids": [...]}.

import { APPEND, URL_, check, importClient, report, waitRows } from "./lib.mjs";

const { TinybirdGenerator, presetSchemas } = await importClient("@tinybirdco/mockingbird");

// The generator logs each answer ("Tinybird Response: ...") and swallows errors, so the
// answers are read from its log as well as from what lands.
const answers = [];
const log = console.log;
console.log = (...args) => {
  const line = args.join(" ");
  if (line.includes("Tinybird Response") || line.includes("Tinybird Error")) answers.push(line);
  process.stderr.write(`${line}\n`);
};

const sent = [];
const generator = new TinybirdGenerator({
  schema: presetSchemas["Web Analytics Starter Kit"],
  endpoint: URL_(),
  datasource: "analytics_events",
  token: APPEND(),
  eps: 5,
  limit: 10,
  logs: true,
});
await generator.generate((rows) => sent.push(...rows));
console.log = log;

check(sent.length === 10, "the generator made 10 rows in two batches", sent.length);
check(
  answers.length === 2 && answers.every((a) => a.includes('"successful_rows":5')),
  "each batch was answered with 5 successful rows",
  answers,
);

// The preset's session ids are fresh UUIDs: find exactly these rows.
const ids = sent.map((r) => `'${r.session_id}'`).join(",");
const landed = await waitRows(
  `SELECT session_id, action, version, payload, toUnixTimestamp(timestamp) AS ts FROM analytics_events WHERE session_id IN (${ids}) ORDER BY session_id`,
  (rows) => rows.length >= sent.length,
  "mockingbird's rows",
);
check(landed.length === sent.length, "every generated row landed once", landed);
const byId = new Map(sent.map((r) => [r.session_id, r]));
for (const row of landed) {
  const want = byId.get(row.session_id);
  check(want, "a landed row is one the generator sent", row);
  check(row.action === want.action && row.version === want.version, "action and version landed", { row, want });
  check(row.payload === want.payload, "the payload landed unchanged", { row, want });
  const ts = Math.floor(Date.parse(want.timestamp) / 1000);
  check(Math.abs(row.ts - ts) <= 1, "the timestamp landed", { row, want });
}

report({ sent: sent.length, landed: landed.length, session_ids: sent.map((r) => r.session_id), answers });
process.stderr.write("mockingbird: ok\n");
