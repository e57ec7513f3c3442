// Shared helpers of the client scripts: settings from the environment, loading the pinned
// packages from the node_modules folder scripts/test.sh installs (outside the checkout), a
// log of every HTTP request a client makes through `fetch`, and checks against the server.
//
// Environment:
//   PETREL_URL                   the server, e.g. http://127.0.0.1:4000 (required)
//   PETREL_TOKEN                 the admin token (required: the scripts check what landed with it)
//   PETREL_READ_TOKEN            a token the client reads pipes with (default: PETREL_TOKEN)
//   PETREL_APPEND_TOKEN          a token the client appends with (default: PETREL_TOKEN)
//   PETREL_CLIENTS_NODE_MODULES  the node_modules folder holding package.json's packages
//                                (default: tests/clients/node_modules)

import { createRequire } from "node:module";
import { fileURLToPath, pathToFileURL } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
// The checks below use the real fetch, so the log shows only what the clients sent.
const realFetch = globalThis.fetch;

/** A required environment variable. */
export function env(name, fallback) {
  const value = process.env[name] ?? fallback;
  if (value === undefined || value === "") {
    fail(`the environment variable ${name} is not set`);
  }
  return value;
}

export const URL_ = () => env("PETREL_URL").replace(/\/+$/, "");
export const ADMIN = () => env("PETREL_TOKEN");
export const READ = () => env("PETREL_READ_TOKEN", process.env.PETREL_TOKEN);
export const APPEND = () => env("PETREL_APPEND_TOKEN", process.env.PETREL_TOKEN);

/** A short random marker for this run, so repeated runs on one server do not mix. */
export const RUN = Math.random().toString(36).slice(2, 8);

/** Prints what went wrong (and what the script got) and exits 1. */
export function fail(message, got) {
  process.stderr.write(`FAIL: ${message}\n`);
  if (got !== undefined) {
    process.stderr.write(`got: ${typeof got === "string" ? got : JSON.stringify(got, null, 1)}\n`);
  }
  process.exit(1);
}

export function check(condition, message, got) {
  if (!condition) fail(message, got);
}

/** Deep equality of JSON values. */
export function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

const modules = () =>
  process.env.PETREL_CLIENTS_NODE_MODULES || path.join(here, "node_modules");

/** `require` from the clients' node_modules. */
export function requireClient(name) {
  const require = createRequire(path.join(modules(), "_.cjs"));
  try {
    return require(name);
  } catch (e) {
    fail(`cannot load ${name} from ${modules()} (scripts/test.sh installs it; set PETREL_CLIENTS_NODE_MODULES): ${e.message}`);
  }
}

/** The file a package specifier resolves to in the clients' node_modules. */
export function resolveClient(name) {
  const require = createRequire(path.join(modules(), "_.cjs"));
  try {
    return require.resolve(name);
  } catch (e) {
    fail(`cannot find ${name} in ${modules()} (scripts/test.sh installs it; set PETREL_CLIENTS_NODE_MODULES): ${e.message}`);
  }
}

/** `import()` of a package (an ES module) from the clients' node_modules. */
export async function importClient(name) {
  return import(pathToFileURL(resolveClient(name)).href);
}

/** Describes a request for the log: method, path and query, content type, body's start. */
function describe(method, url, headers, body) {
  const u = new URL(String(url));
  let query = u.search;
  if (query.length > 300) query = `${query.slice(0, 300)}... (${u.search.length} chars)`;
  const h = new Headers(headers || {});
  const type = h.get("content-type") || "-";
  let text = body === undefined || body === null ? "" : String(body);
  if (text.length > 200) text = `${text.slice(0, 200)}... (${text.length} chars)`;
  const auth = h.has("authorization") ? " [Authorization: Bearer]" : "";
  return `${method} ${u.pathname}${query.replace(/token=[^&]+/, "token=...")} content-type=${type}${auth}${text ? ` body=${text}` : ""}`;
}

/** Every `fetch` the process makes is logged to stderr: the request, the answer's status,
 *  and the answer's body when it is not a success. The log is what the reports quote. */
export function logFetches() {
  const real = globalThis.fetch;
  globalThis.fetch = async (input, init = {}) => {
    const method = (init.method || (input instanceof Request ? input.method : "GET")).toUpperCase();
    const url = input instanceof Request ? input.url : input;
    const line = describe(method, url, init.headers, init.body);
    const response = await real(input, init);
    let note = "";
    if (!response.ok) {
      note = ` ${(await response.clone().text()).slice(0, 500)}`;
    }
    process.stderr.write(`> ${line}\n< ${response.status}${note}\n`);
    return response;
  };
}

/** Runs SQL on the server with the admin token; its JSON answer. */
export async function sql(q) {
  const url = `${URL_()}/v0/sql?q=${encodeURIComponent(`${q} FORMAT JSON`)}`;
  const r = await realFetch(url, { headers: { Authorization: `Bearer ${ADMIN()}` } });
  const text = await r.text();
  if (!r.ok) fail(`/v0/sql answered ${r.status} to ${q}`, text);
  return JSON.parse(text);
}

/** Reads a pipe's endpoint (GET, admin token) with `params`: its JSON answer. */
export async function pipe(name, params = {}) {
  const u = new URL(`${URL_()}/v0/pipes/${name}.json`);
  for (const [k, v] of Object.entries(params)) u.searchParams.set(k, String(v));
  const r = await realFetch(u, { headers: { Authorization: `Bearer ${ADMIN()}` } });
  const text = await r.text();
  if (!r.ok) fail(`GET ${u.pathname}${u.search} answered ${r.status}`, text);
  return JSON.parse(text);
}

/** Polls `q` until `done(rows)` holds (30 s at most); the last rows. */
export async function waitRows(q, done, what) {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const rows = (await sql(q)).data;
    if (done(rows)) return rows;
    if (Date.now() > deadline) fail(`${what}: never landed (query: ${q})`, rows);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** The script's result, for tests/clients.rs: one JSON line on stdout. */
export function report(value) {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}
