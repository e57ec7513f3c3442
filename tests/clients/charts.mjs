// @tinybirdco/charts 0.3.0: the query path of its charts and `useQuery` hook, without React:
// `buildEndpointUrl(endpoint, token, params)` then `chartQueryFetcher(url)` (what the hook
// hands SWR). The fetcher GETs the URL, and when the URL is over 2048 characters moves every
// parameter but `token` and `from` into a JSON body and POSTs it instead.
//
// Needs PETREL_URL, PETREL_TOKEN (admin, for the checks), PETREL_READ_TOKEN (the chart's
// token: read on clicks_by_user). Reads clicks_by_user of dataflows/clicks for a country of its
// own (seeded here with the admin token), once short (GET) and once with a long parameter
// (POST); both must answer the endpoint's rows. Prints {"country", "get": data, "post": data, "expected": data}.

import { URL_, ADMIN, READ, RUN, check, fail, logFetches, pipe, report, resolveClient, same } from "./lib.mjs";
import { pathToFileURL } from "node:url";
import path from "node:path";

logFetches();

// The library's own modules (dist/lib), as its hook and components use them. Its ESM build
// imports tslib, which it does not declare; the CommonJS build needs it too, so load the same
// files the package's `main` build uses.
const dist = path.join(path.dirname(resolveClient("@tinybirdco/charts")));
const { chartQueryFetcher } = await import(pathToFileURL(path.join(dist, "lib/fetcher.cjs")).href);
const { buildEndpointUrl } = await import(pathToFileURL(path.join(dist, "lib/utils.cjs")).href);

const country = `CH_${RUN}`;
// Seed: two users of this run's country, with the admin token.
const seed = [
  { user_id: 101, click_count: 4, country },
  { user_id: 102, click_count: 9, country },
  { user_id: 101, click_count: 3, country },
];
const r = await fetch(`${URL_()}/v0/events?name=clicks&wait=true`, {
  method: "POST",
  headers: { Authorization: `Bearer ${ADMIN()}` },
  body: seed.map((e) => JSON.stringify(e)).join("\n"),
});
check(r.ok, `seeding clicks answered ${r.status}`, await r.text());

const endpoint = `${URL_()}/v0/pipes/clicks_by_user.json`;
const expected = (await pipe("clicks_by_user", { country })).data;
check(
  same(expected, [
    { user_id: 102, clicks: 9 },
    { user_id: 101, clicks: 7 },
  ]),
  "the endpoint itself answers the seeded sums",
  expected,
);

// A chart's query: short URL, GET.
const short = buildEndpointUrl(endpoint, READ(), { country });
check(short.toString().length <= 2048, "the short URL is short");
let got;
try {
  got = await chartQueryFetcher(short.toString());
} catch (e) {
  fail(`the chart's GET ${short.pathname} failed: ${e.message}`);
}
check(same(got.data, expected), "the chart's GET answers the endpoint's rows", got);

// A chart with a long parameter (a filter of many values, say): the URL is over 2048
// characters, so the fetcher POSTs the parameters as JSON. The endpoint ignores `filter`.
const long = buildEndpointUrl(endpoint, READ(), { country, filter: "x".repeat(2100) });
check(long.toString().length > 2048, "the long URL is long");
let posted;
try {
  posted = await chartQueryFetcher(long.toString());
} catch (e) {
  fail(`the chart's long-URL POST ${long.pathname} (JSON body {country, filter}) failed: ${e.message}`);
}
check(same(posted.data, expected), "the chart's long-URL POST answers the endpoint's rows", posted);
check(same(posted.meta, got.meta), "the POST's meta is the GET's", { get: got.meta, post: posted.meta });

report({ country, get: got.data, post: posted.data, expected });
process.stderr.write("charts: ok\n");
