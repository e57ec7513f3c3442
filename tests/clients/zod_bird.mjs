// @chronark/zod-bird 1.0.0 (with zod 4): `buildIngestEndpoint` sends typed events to the
// Events API (NDJSON, `wait=true`), `buildPipe` reads an endpoint and parses its answer with a
// zod schema.
//
// Needs PETREL_URL, PETREL_TOKEN (admin, for the checks), PETREL_APPEND_TOKEN (append on
// clicks), PETREL_READ_TOKEN (read on clicks_by_user and top_countries), over dataflows/clicks.
// Prints {"country", "ingested": {...}, "by_user": data, "top": data}.

import { ADMIN, APPEND, READ, RUN, URL_, check, fail, logFetches, pipe, report, requireClient, same, waitRows } from "./lib.mjs";

logFetches();
const { Tinybird } = requireClient("@chronark/zod-bird");
const { z } = requireClient("zod");

const country = `ZB_${RUN}`;
const writer = new Tinybird({ baseUrl: URL_(), token: APPEND() });
const reader = new Tinybird({ baseUrl: URL_(), token: READ() });

const ingest = writer.buildIngestEndpoint({
  datasource: "clicks",
  event: z.object({
    user_id: z.number().int(),
    click_count: z.number().int(),
    country: z.string(),
    timestamp: z.string().optional(),
  }),
  wait: true,
});

let ingested;
try {
  ingested = await ingest([
    { user_id: 7, click_count: 5, country },
    { user_id: 8, click_count: 2, country, timestamp: "2024-05-01 10:00:00" },
    { user_id: 7, click_count: 1, country },
  ]);
  // One event alone (not an array) is sent as one NDJSON line.
  const one = await ingest({ user_id: 9, click_count: 11, country });
  check(one.successful_rows === 1 && one.quarantined_rows === 0, "one event: 1 row", one);
} catch (e) {
  fail(`buildIngestEndpoint failed: ${e.message}`);
}
check(
  ingested.successful_rows === 3 && ingested.quarantined_rows === 0,
  "the ingest answer counts 3 successful rows",
  ingested,
);
// With wait=true the rows are there when the answer comes.
const landed = await waitRows(
  `SELECT user_id, click_count, toString(timestamp) AS ts FROM clicks WHERE country = '${country}' ORDER BY user_id, click_count`,
  (rows) => rows.length >= 4,
  "the zod-bird events",
);
check(
  same(
    landed.map((r) => [r.user_id, r.click_count]),
    [[7, 1], [7, 5], [8, 2], [9, 11]],
  ),
  "the events landed with their values",
  landed,
);
check(landed.some((r) => r.ts === "2024-05-01 10:00:00"), "the explicit timestamp landed", landed);

const byUser = reader.buildPipe({
  pipe: "clicks_by_user",
  parameters: z.object({ country: z.string(), limit: z.number().int().optional() }),
  data: z.object({ user_id: z.number().int(), clicks: z.number().int() }),
});
const top = reader.buildPipe({
  pipe: "top_countries",
  parameters: z.object({ limit: z.number().int().optional() }),
  data: z.object({ country: z.string(), clicks: z.number(), users: z.number() }),
});

let got, gotLimited, gotTop;
try {
  got = await byUser({ country });
  gotLimited = await byUser({ country, limit: 2 });
  gotTop = await top({ limit: 50 });
} catch (e) {
  fail(`buildPipe failed (zod parse or HTTP): ${e.message}`);
}
const want = [
  { user_id: 9, clicks: 11 },
  { user_id: 7, clicks: 6 },
  { user_id: 8, clicks: 2 },
];
check(same(got.data, want), "clicks_by_user parsed: the sums per user, in the pipe's order", got);
check(same(gotLimited.data, want.slice(0, 2)), "clicks_by_user with limit=2", gotLimited);
check(
  got.meta.map((m) => m.name).join(",") === "user_id,clicks",
  "the answer's meta names the columns",
  got.meta,
);
const direct = await pipe("top_countries", { limit: 50 });
check(same(gotTop.data, direct.data), "top_countries parsed equals the endpoint's answer", { zod_bird: gotTop.data, endpoint: direct.data });
check(
  gotTop.data.some((r) => r.country === country && r.clicks === 19 && r.users === 3),
  "top_countries counts this run's country",
  gotTop.data,
);

// A parameter the schema refuses never reaches the server.
let refused = false;
try {
  await byUser({ country: 42 });
} catch {
  refused = true;
}
check(refused, "a parameter of the wrong type is refused by the schema");

report({ country, ingested, by_user: got.data, top: gotTop.data });
process.stderr.write("zod-bird: ok\n");
