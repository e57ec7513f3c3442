//! The published Tinybird client libraries against a running Petrel server, unchanged: each
//! test starts its own server, runs one client's script from `tests/clients/` (which does what
//! a user of the library does, checks it and prints a one-line JSON report), then checks on the
//! server what a user relies on: the rows landed with their values, and what the client read
//! equals the endpoint's own answer. Clients use scoped tokens where they would in use: a
//! datafile's `TOKEN` line or one made with `POST /v0/tokens`.
//!
//! - npm `@tinybirdco/flock.js` 1.4.1 in headless Chromium on a page of another origin;
//! - npm `@tinybirdco/charts` 0.3.0 (its fetcher: GET, and POST for URLs over 2048 chars);
//! - PyPI `verdin` 0.5.3 (appends, pipe queries, `pages()`, the Query API);
//! - npm `@chronark/zod-bird` 1.0.0 (typed ingest and pipes);
//! - npm `@tinybirdco/mockingbird` 1.1.4 (its Tinybird generator);
//! - PyPI `tinybird-python-sdk` 0.3.7 (buffered datasource, API, logging handler).
//!
//! Needs what `scripts/test.sh` installs: `PETREL_CLIENTS_NODE_MODULES` (the npm packages of
//! `tests/clients/package-lock.json`), `PETREL_CLIENTS_PYTHON` (a Python with
//! `tests/clients/requirements.txt`), `node`, and Debian's `chromium` (or `PETREL_CHROMIUM`).
//! The web-analytics tests use the starter kit in `../shared/corpus` and are skipped without it.
//!
//! A script also runs by hand against any server: see the header of each file in tests/clients/.

mod common;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{client, repo, Server, ADMIN};
use serde_json::{json, Value};

const SEED: &str = include_str!("../dataflows/clicks/fixtures/clicks.ndjson");

/// The web-analytics starter kit (its `analytics_events` is what flock.js sends to).
const WEB_ANALYTICS: &str = "../shared/corpus/tinybirdco__web-analytics-starter-kit/tinybird";

fn installed(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the tests through scripts/test.sh, which installs the client libraries")
    })
}

/// Runs `tests/clients/SCRIPT` (node for `.mjs`, the clients' Python for `.py`) against
/// `server` with the admin token and `env`; checks it succeeds within 3 minutes; its report
/// (the last line of its standard output) as JSON.
fn run_client(script: &str, server: &Server, env: &[(&str, &str)]) -> Value {
    let dir = repo().join("tests/clients");
    let program = if script.ends_with(".py") {
        installed("PETREL_CLIENTS_PYTHON")
    } else {
        "node".to_string()
    };
    let mut command = Command::new(&program);
    command
        .arg(dir.join(script))
        .current_dir(dir)
        .env("PETREL_URL", &server.url)
        .env("PETREL_TOKEN", ADMIN)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if script.ends_with(".mjs") {
        command.env(
            "PETREL_CLIENTS_NODE_MODULES",
            installed("PETREL_CLIENTS_NODE_MODULES"),
        );
    }
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} {script}: {e}"));
    let stdout = read_all(child.stdout.take().unwrap());
    let stderr = read_all(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = stdout.join().unwrap();
    let stderr = stderr.join().unwrap();
    let status =
        status.unwrap_or_else(|| panic!("{script} did not finish within 180 s:\n{stderr}"));
    assert!(
        status.success(),
        "{script} failed ({status}):\n{stderr}\n{stdout}"
    );
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_else(|| panic!("{script} printed no report:\n{stderr}"));
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("{script}'s report is not JSON ({e}): {last}"))
}

/// Reads all of a child's output pipe on a thread of its own.
fn read_all(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// The value of the token `name` (a datafile's `TOKEN` line), read with the admin token.
fn token(server: &Server, name: &str) -> String {
    let tokens = common::get(server, "/v0/tokens");
    tokens["tokens"]
        .as_array()
        .and_then(|all| all.iter().find(|t| t["name"] == name))
        .and_then(|t| t["token"].as_str())
        .unwrap_or_else(|| panic!("no token {name}: {tokens}"))
        .to_string()
}

/// Creates a static token with `scopes` (`POST /v0/tokens`); its value.
fn create_token(server: &Server, name: &str, scopes: &[&str]) -> String {
    let mut query = vec![("name", name)];
    query.extend(scopes.iter().map(|s| ("scope", *s)));
    let r = client()
        .post(format!("{}/v0/tokens", server.url))
        .query(&query)
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    let status = r.status();
    let body: Value = r.json().unwrap();
    assert!(status.is_success(), "POST /v0/tokens: {status} {body}");
    body["token"].as_str().unwrap().to_string()
}

/// The rows of a SQL query (admin token).
fn sql(server: &Server, q: &str) -> Value {
    let r = client()
        .get(format!("{}/v0/sql", server.url))
        .query(&[("q", format!("{q} FORMAT JSON"))])
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    let status = r.status();
    let body: Value = r.json().unwrap();
    assert!(status.is_success(), "/v0/sql {q}: {status} {body}");
    body["data"].clone()
}

/// An endpoint's rows: `GET /v0/pipes/NAME.json` with `params`, with `token`.
fn endpoint(server: &Server, pipe: &str, params: &[(&str, &str)], token: &str) -> Value {
    let r = client()
        .get(format!("{}/v0/pipes/{pipe}.json", server.url))
        .query(params)
        .bearer_auth(token)
        .send()
        .unwrap();
    let status = r.status();
    let body: Value = r.json().unwrap();
    assert!(
        status.is_success(),
        "GET {pipe}.json {params:?}: {status} {body}"
    );
    body["data"].clone()
}

/// A copy of the web-analytics starter kit, or None (the test is skipped) without the corpus.
fn web_analytics(name: &str) -> Option<PathBuf> {
    if !repo().join(WEB_ANALYTICS).is_dir() {
        eprintln!("skipped: no web-analytics starter kit at {WEB_ANALYTICS}");
        return None;
    }
    Some(common::copy_project_files(WEB_ANALYTICS, name))
}

fn text<'a>(report: &'a Value, key: &str) -> &'a str {
    report[key]
        .as_str()
        .unwrap_or_else(|| panic!("the report has no {key}: {report}"))
}

#[test]
fn flock_js_on_another_origin_tracks_page_hits_and_custom_events() {
    let Some(dir) = web_analytics("clients-flock") else {
        return;
    };
    let server = Server::start_in(dir, &[]);
    // The starter kit's own append token (`TOKEN "tracker" APPEND`), as a site embeds it.
    let tracker = token(&server, "tracker");
    let report = run_client(
        "flock.mjs",
        &server,
        &[("PETREL_APPEND_TOKEN", tracker.as_str())],
    );
    let run = text(&report, "run");

    let rows = sql(
        &server,
        &format!(
            "SELECT action, version, session_id, payload FROM analytics_events \
             WHERE payload LIKE '%\"run\":\"{run}\"%' ORDER BY timestamp, action"
        ),
    );
    let rows = rows.as_array().unwrap();
    assert_eq!(
        rows.len(),
        3,
        "two page hits and one custom event: {rows:?}"
    );
    let payload =
        |r: &Value| -> Value { serde_json::from_str(r["payload"].as_str().unwrap()).unwrap() };
    let mut actions: Vec<&str> = rows.iter().map(|r| r["action"].as_str().unwrap()).collect();
    actions.sort();
    assert_eq!(actions, ["add_to_cart", "page_hit", "page_hit"], "{rows:?}");
    assert!(rows.iter().all(|r| r["version"] == "1"), "{rows:?}");
    // One visitor: the session id of the tracker's cookie on every event.
    let session = &rows[0]["session_id"];
    assert!(
        session.as_str().is_some_and(|s| s.len() == 36),
        "a session id: {rows:?}"
    );
    assert!(rows.iter().all(|r| &r["session_id"] == session), "{rows:?}");
    let mut paths: Vec<String> = rows
        .iter()
        .filter(|r| r["action"] == "page_hit")
        .map(|r| payload(r)["pathname"].as_str().unwrap().to_string())
        .collect();
    paths.sort();
    let first = format!("/run-{run}/");
    let second = format!("/run-{run}/second");
    assert_eq!(paths, [first.clone(), second.clone()], "{rows:?}");
    let custom = rows.iter().find(|r| r["action"] == "add_to_cart").unwrap();
    assert_eq!(
        payload(custom),
        json!({"product": "petrel", "qty": 2, "email": "********", "run": run}),
        "the custom event's payload (the tracker masks the email)"
    );

    // The starter kit's dashboard (its `dashboard` read token) counts the two pages.
    let dashboard = token(&server, "dashboard");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pages = endpoint(&server, "top_pages", &[("limit", "100")], &dashboard);
        let hits = |path: &str| {
            pages
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["pathname"] == path)
                .map(|p| (p["visits"].clone(), p["hits"].clone()))
        };
        if hits(first.as_str()) == Some((json!(1), json!(1)))
            && hits(second.as_str()) == Some((json!(1), json!(1)))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "top_pages never showed the two page hits: {pages}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn charts_fetcher_reads_by_get_and_by_post_when_the_url_is_long() {
    let server = Server::start("dataflows/clicks", &[]);
    common::ingest_clicks(&server, SEED);
    // A chart's token: read on the one pipe it shows.
    let chart = create_token(&server, "chart", &["PIPES:READ:clicks_by_user"]);
    let report = run_client(
        "charts.mjs",
        &server,
        &[("PETREL_READ_TOKEN", chart.as_str())],
    );
    let country = text(&report, "country");
    let want = endpoint(&server, "clicks_by_user", &[("country", country)], ADMIN);
    assert_eq!(
        want,
        json!([{"user_id": 102, "clicks": 9}, {"user_id": 101, "clicks": 7}])
    );
    assert_eq!(report["get"], want, "the chart's GET");
    assert_eq!(report["post"], want, "the chart's long-URL POST");
}

#[test]
fn verdin_appends_queries_and_pages_through_a_pipe() {
    let server = Server::start("dataflows/clicks", &[]);
    common::ingest_clicks(&server, SEED);
    let append = token(&server, "clicks_append");
    let read = create_token(&server, "verdin", &["PIPES:READ:clicks_by_user"]);
    let report = run_client(
        "verdin_client.py",
        &server,
        &[
            ("PETREL_APPEND_TOKEN", append.as_str()),
            ("PETREL_READ_TOKEN", read.as_str()),
        ],
    );
    let country = text(&report, "country");

    // CSV, NDJSON, events and gzipped events: each row once, with its values.
    let rows = sql(
        &server,
        &format!(
            "SELECT user_id, click_count FROM clicks WHERE country = '{country}' \
             ORDER BY user_id, click_count"
        ),
    );
    let pairs: Vec<(u64, u64)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["user_id"].as_u64().unwrap(),
                r["click_count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [(11, 3), (12, 4), (13, 5), (14, 6), (15, 2), (16, 1)]
    );

    let by_country = endpoint(&server, "clicks_by_user", &[("country", country)], ADMIN);
    assert_eq!(report["query"], by_country, "pipe.query");

    // pages(): every row of the pipe's default answer exactly once, in the pipe's order.
    let all = endpoint(&server, "clicks_by_user", &[], ADMIN);
    assert_eq!(
        all.as_array().unwrap().len(),
        13,
        "12 seeded users and the fixtures' US one"
    );
    let pages = report["pages"].as_array().expect("pages in the report");
    let sizes: Vec<usize> = pages.iter().map(|p| p.as_array().unwrap().len()).collect();
    assert_eq!(sizes, [5, 5, 3], "pages of 5");
    let flat: Vec<Value> = pages
        .iter()
        .flat_map(|p| p.as_array().unwrap().clone())
        .collect();
    assert_eq!(
        Value::Array(flat),
        all,
        "pages() equals the endpoint's rows"
    );
}

#[test]
fn zod_bird_ingests_and_parses_pipes() {
    let server = Server::start("dataflows/clicks", &[]);
    common::ingest_clicks(&server, SEED);
    // The project's own tokens: append on clicks, read on its endpoints.
    let append = token(&server, "clicks_append");
    let read = token(&server, "dashboard");
    let report = run_client(
        "zod_bird.mjs",
        &server,
        &[
            ("PETREL_APPEND_TOKEN", append.as_str()),
            ("PETREL_READ_TOKEN", read.as_str()),
        ],
    );
    let country = text(&report, "country");
    let landed = sql(
        &server,
        &format!(
            "SELECT count() AS n, sum(click_count) AS clicks FROM clicks WHERE country = '{country}'"
        ),
    );
    assert_eq!(landed, json!([{"n": 4, "clicks": 19}]));
    assert_eq!(
        report["by_user"],
        endpoint(&server, "clicks_by_user", &[("country", country)], ADMIN)
    );
    assert_eq!(
        report["top"],
        endpoint(&server, "top_countries", &[("limit", "50")], ADMIN)
    );
}

#[test]
fn mockingbird_generates_rows_that_land() {
    let Some(dir) = web_analytics("clients-mockingbird") else {
        return;
    };
    let server = Server::start_in(dir, &[]);
    let tracker = token(&server, "tracker");
    let report = run_client(
        "mockingbird.mjs",
        &server,
        &[("PETREL_APPEND_TOKEN", tracker.as_str())],
    );
    let ids: Vec<String> = report["session_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| format!("'{}'", v.as_str().unwrap()))
        .collect();
    assert_eq!(ids.len(), 10);
    let rows = sql(
        &server,
        "SELECT count() AS n, uniqExact(session_id) AS sessions, countIf(action = 'page_hit') AS hits FROM analytics_events",
    );
    assert_eq!(rows, json!([{"n": 10, "sessions": 10, "hits": 10}]));
    let mine = sql(
        &server,
        &format!(
            "SELECT count() AS n FROM analytics_events WHERE session_id IN ({})",
            ids.join(",")
        ),
    );
    assert_eq!(mine, json!([{"n": 10}]), "the rows are the generator's");
}

#[test]
fn tinybird_python_sdk_appends_reads_and_logs() {
    // dataflows/clicks plus the datasource the SDK's logging handler writes to.
    let dir = common::copy_project_files("dataflows/clicks", "clients-sdk");
    std::fs::copy(
        repo().join("tests/clients/tb_logs.datasource"),
        dir.join("datasources/tb_logs.datasource"),
    )
    .unwrap();
    let server = Server::start_in(dir, &[]);
    let append = token(&server, "clicks_append");
    let logs = token(&server, "logs_append");
    let read = create_token(&server, "sdk", &["PIPES:READ:clicks_by_user"]);
    let report = run_client(
        "tinybird_sdk_client.py",
        &server,
        &[
            ("PETREL_APPEND_TOKEN", append.as_str()),
            ("PETREL_READ_TOKEN", read.as_str()),
            ("PETREL_LOGS_TOKEN", logs.as_str()),
        ],
    );
    let country = text(&report, "country");
    let run = text(&report, "run");
    let sums = sql(
        &server,
        &format!(
            "SELECT user_id, sum(click_count) AS clicks FROM clicks WHERE country = '{country}' \
             GROUP BY user_id ORDER BY user_id"
        ),
    );
    assert_eq!(
        sums,
        json!([
            {"user_id": 21, "clicks": 6},
            {"user_id": 22, "clicks": 3},
            {"user_id": 25, "clicks": 7}
        ])
    );
    let want = endpoint(&server, "clicks_by_user", &[("country", country)], ADMIN);
    assert_eq!(report["pipe"], want, "API.get");
    assert_eq!(report["async_pipe"], want, "AsyncAPI.get_json");
    let logged = sql(
        &server,
        "SELECT app_name, levelname, message FROM tb_logs ORDER BY created",
    );
    assert_eq!(
        logged,
        json!([{"app_name": "petrel-clients", "levelname": "WARNING", "message": format!("order {run} shipped")}])
    );
}
