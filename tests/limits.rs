//! Requests are bounded: an ad-hoc query that runs too long is cancelled with a 408 and
//! leaves no dataflow behind, a query whose client went away is dropped too, and meanwhile
//! writes and other reads keep answering.

mod common;

use std::time::{Duration, Instant};

use common::{client, Server, ADMIN};
use serde_json::Value;

fn ingest(server: &Server, rows: usize) {
    let body: String = (0..rows)
        .map(|i| {
            format!(
                "{{\"user_id\":{},\"click_count\":{},\"country\":\"{}\"}}\n",
                i % 500,
                i % 7 + 1,
                ["US", "DE", "VN", "FR"][i % 4]
            )
        })
        .collect();
    let r = client()
        .post(format!("{}/v0/events?name=clicks&wait=true", server.url))
        .bearer_auth(ADMIN)
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// The ad-hoc views installed now (`label` "sql").
fn adhoc_views(server: &Server) -> usize {
    let views = common::get(server, "/v0/views");
    views["views"]
        .as_array()
        .map(|vs| vs.iter().filter(|v| v["label"] == "sql").count())
        .unwrap_or(0)
}

fn wait_until(mut ok: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `GET /metrics` with the admin token.
fn metrics(server: &Server) -> String {
    client()
        .get(format!("{}/metrics", server.url))
        .bearer_auth(ADMIN)
        .send()
        .unwrap()
        .text()
        .unwrap()
}

const CROSS_JOIN: &str =
    "SELECT count() AS n FROM clicks a CROSS JOIN clicks b CROSS JOIN clicks c";

/// A server of `dataflows/clicks` (started with `flags`, and a row budget too large to act)
/// holding 2,000 rows and running `CROSS_JOIN` on its own thread, which answers the query's
/// status once the server ends it; returns once the query runs (`GET /v0/views` shows it).
fn server_with_a_runaway(flags: &[&str]) -> (Server, std::thread::JoinHandle<u16>) {
    let mut args = flags.to_vec();
    args.extend(["--query-max-rows", "1000000000000"]);
    let server = Server::start("dataflows/clicks", &args);
    ingest(&server, 2_000);
    let url = server.url.clone();
    let runaway = std::thread::spawn(move || {
        client()
            .get(format!("{url}/v0/sql"))
            .query(&[("q", CROSS_JOIN)])
            .bearer_auth(ADMIN)
            .send()
            .unwrap()
            .status()
            .as_u16()
    });
    wait_until(|| adhoc_views(&server) == 1, "the query shows in /v0/views");
    (server, runaway)
}

#[test]
fn a_runaway_query_is_cancelled_and_others_keep_answering() {
    // A row budget too large to act first: this test is about the time limit.
    let server = Server::start(
        "dataflows/clicks",
        &[
            "--query-timeout-ms",
            "1500",
            "--query-max-rows",
            "1000000000000",
        ],
    );
    ingest(&server, 2_000);
    let url = server.url.clone();
    let runaway = std::thread::spawn(move || {
        let started = Instant::now();
        let r = client()
            .get(format!("{url}/v0/sql"))
            .query(&[("q", CROSS_JOIN)])
            .bearer_auth(ADMIN)
            .send()
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<Value>().unwrap(),
            started.elapsed(),
        )
    });
    // While it runs (GET /v0/views shows it), writes that wait for visibility and reads of
    // endpoints answer.
    wait_until(|| adhoc_views(&server) == 1, "the query shows in /v0/views");
    ingest(&server, 10);
    let top = common::get(&server, "/v0/pipes/top_countries.json");
    assert_eq!(top["data"].as_array().map(Vec::len), Some(3), "{top}");
    let (status, body, took) = runaway.join().unwrap();
    assert_eq!(status, 408, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("1500 ms"),
        "{body}"
    );
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert_eq!(
        adhoc_views(&server),
        0,
        "the cancelled query's dataflow is gone"
    );
    // The cancellation and the requests show in GET /metrics (admin only).
    let metrics = metrics(&server);
    assert!(
        metrics.contains("petrel_queries_cancelled_total{reason=\"timeout\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("petrel_http_requests_total{route=\"/v0/sql\",status=\"408\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("petrel_datasource_rows{datasource=\"clicks\"} 2010"),
        "{metrics}"
    );
    assert!(
        metrics.contains("petrel_view_lag_milliseconds{"),
        "{metrics}"
    );
    let anonymous = client()
        .get(format!("{}/metrics", server.url))
        .send()
        .unwrap();
    assert_eq!(anonymous.status(), 403);
}

/// The server's resident memory as `GET /metrics` reports it.
fn resident_bytes(server: &Server) -> f64 {
    metrics(server)
        .lines()
        .find_map(|l| l.strip_prefix("petrel_resident_memory_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A query whose joins multiply rows past `--query-max-rows` answers 422 long before any time
/// limit, leaves no dataflow behind and takes little memory, while a join within the budget
/// answers as usual.
#[test]
fn a_query_past_its_row_budget_is_cancelled_with_422() {
    let server = Server::start(
        "dataflows/clicks",
        &["--query-timeout-ms", "600000", "--query-max-rows", "200000"],
    );
    ingest(&server, 2_000);
    let before = resident_bytes(&server);
    let sql = |q: &str| {
        let r = client()
            .get(format!("{}/v0/sql", server.url))
            .query(&[("q", q)])
            .bearer_auth(ADMIN)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };
    let started = Instant::now();
    let (status, body) = sql(CROSS_JOIN);
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("--query-max-rows"),
        "{body}"
    );
    // Far below the 10 minute time limit: the budget acted, not the clock.
    assert!(started.elapsed() < Duration::from_secs(60));
    wait_until(
        || adhoc_views(&server) == 0,
        "the cancelled query's dataflow is dropped",
    );
    // 8 billion joined rows would take hundreds of GB; the server grew by far less than 1 GB.
    let after = resident_bytes(&server);
    assert!(
        after - before < 1e9,
        "resident memory grew from {before} to {after}"
    );
    // A join that fits the budget (500 users x 4 countries per side, 2,000 x 2,000 / 500
    // matching pairs = 8,000 rows) answers.
    let (status, body) =
        sql("SELECT count() AS n FROM clicks a JOIN clicks b ON a.user_id = b.user_id");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][0]["n"], 8000, "{body}");
    let metrics = metrics(&server);
    assert!(
        metrics.contains("petrel_queries_cancelled_total{reason=\"max_rows\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("petrel_http_requests_total{route=\"/v0/sql\",status=\"422\"} 1"),
        "{metrics}"
    );
    // Writes and reads go on.
    ingest(&server, 10);
}

/// Past `--max-concurrent-queries`, an ad-hoc query answers 429 at once instead of piling up
/// behind the running ones; once they end, queries run again.
#[test]
fn queries_beyond_the_concurrency_limit_are_refused_at_once() {
    let (server, runaway) = server_with_a_runaway(&[
        "--max-concurrent-queries",
        "1",
        "--query-timeout-ms",
        "3000",
    ]);
    let count = || {
        let r = client()
            .get(format!("{}/v0/sql", server.url))
            .query(&[("q", "SELECT count() AS n FROM clicks")])
            .bearer_auth(ADMIN)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };
    let started = Instant::now();
    let (status, body) = count();
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("--max-concurrent-queries"),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused at once"
    );
    assert_eq!(runaway.join().unwrap(), 408);
    // The slot is free again (the workers may first finish the cancelled join's step).
    let mut answer = Value::Null;
    wait_until(
        || {
            let (status, body) = count();
            answer = body;
            status == 200
        },
        "a query runs once the slot is free",
    );
    assert_eq!(answer["data"][0]["n"], 2000, "{answer}");
    assert!(
        metrics(&server).contains("petrel_queries_refused_total 1"),
        "{}",
        metrics(&server)
    );
}

#[test]
fn a_query_whose_client_disconnects_leaves_no_dataflow() {
    let server = Server::start(
        "dataflows/clicks",
        &[
            "--query-timeout-ms",
            "60000",
            "--query-max-rows",
            "1000000000000",
        ],
    );
    ingest(&server, 2_000);
    let url = server.url.clone();
    let impatient = std::thread::spawn(move || {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_millis(1500))
            .build()
            .unwrap()
            .get(format!("{url}/v0/sql"))
            .query(&[("q", CROSS_JOIN)])
            .bearer_auth(ADMIN)
            .send()
            .is_err()
    });
    wait_until(|| adhoc_views(&server) == 1, "the query shows in /v0/views");
    assert!(impatient.join().unwrap(), "the client gave up first");
    wait_until(
        || adhoc_views(&server) == 0,
        "the abandoned query's dataflow is dropped",
    );
    let metrics = metrics(&server);
    assert!(
        metrics.contains("petrel_queries_cancelled_total{reason=\"abandoned\"} 1"),
        "{metrics}"
    );
    // And the server still answers.
    ingest(&server, 10);
}

/// A connection that never finishes its request head is closed after the header timeout.
#[test]
fn half_open_connections_are_closed() {
    use std::io::{Read, Write};
    let server = Server::start("dataflows/clicks", &["--header-timeout-ms", "500"]);
    let addr = server.url.trim_start_matches("http://").to_string();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream
        .write_all(b"GET /v0/health HTTP/1.1\r\nHost: loc")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    // The server ends the connection (EOF, possibly after a 408); a timeout would be an error.
    let read = stream.read_to_end(&mut buf);
    assert!(
        read.is_ok(),
        "still open after {:?}: {read:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // A complete request is served as usual.
    assert_eq!(common::get(&server, "/v0/health")["status"], "ok");
}

/// Past `--max-connections`, new connections wait until one ends.
#[test]
fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let server = Server::start(
        "dataflows/clicks",
        &["--max-connections", "2", "--header-timeout-ms", "60000"],
    );
    let addr = server.url.trim_start_matches("http://").to_string();
    let idle: Vec<std::net::TcpStream> = (0..2)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let quick = reqwest::blocking::Client::builder()
        .timeout(Duration::from_millis(700))
        .build()
        .unwrap();
    assert!(
        quick
            .get(format!("{}/v0/health", server.url))
            .send()
            .is_err(),
        "a third connection was served while two held every slot"
    );
    drop(idle);
    wait_until(
        || {
            quick
                .get(format!("{}/v0/health", server.url))
                .send()
                .is_ok_and(|r| r.status() == 200)
        },
        "a freed slot serves the next connection",
    );
}

/// A gzip body that inflates past the body limit (a decompression bomb) answers 413 without
/// inflating it whole, and lands nothing.
#[test]
fn a_decompression_bomb_answers_413() {
    use std::io::Write;
    let server = Server::start("dataflows/clicks", &[]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let line = b"{\"user_id\":1,\"click_count\":1,\"country\":\"US\"}\n";
    let chunk: Vec<u8> = line.iter().copied().cycle().take(1 << 20).collect();
    for _ in 0..150 {
        gz.write_all(&chunk).unwrap();
    }
    let body = gz.finish().unwrap();
    assert!(body.len() < 2 << 20, "{} bytes compressed", body.len());
    let r = client()
        .post(format!("{}/v0/events?name=clicks&wait=true", server.url))
        .bearer_auth(ADMIN)
        .header("content-encoding", "gzip")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 413);
    let error: Value = r.json().expect("a JSON error body");
    assert!(error["error"].is_string(), "{error}");
    let stats = common::get(&server, "/v0/datasources/clicks");
    assert_eq!(stats["row_count"].as_u64(), Some(0), "{stats}");
}

/// Rows the Events API accepted but the views have not read, as `GET /metrics` shows them.
fn rows_waiting(server: &Server) -> u64 {
    metrics(server)
        .lines()
        .find_map(|l| l.strip_prefix("petrel_rows_waiting "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the metric is served")
}

/// The answer to `SELECT count() AS n FROM clicks`.
fn clicks_count(server: &Server) -> Value {
    common::get(
        server,
        "/v0/sql?q=SELECT%20count()%20AS%20n%20FROM%20clicks",
    )
}

/// `POST /v0/events` of `rows` rows without waiting; the status.
fn post_events(url: &str, rows: usize) -> u16 {
    let body: String = (0..rows)
        .map(|i| format!("{{\"user_id\":{i},\"click_count\":1,\"country\":\"US\"}}\n"))
        .collect();
    client()
        .post(format!("{url}/v0/events?name=clicks"))
        .bearer_auth(ADMIN)
        .body(body)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

/// A client that writes while a view cannot keep up does not queue rows without limit: once
/// more than `--max-waiting-rows` wait for the views, its next request waits until they are
/// read (here, until the view that held them, a runaway query, is cancelled), then lands.
#[test]
fn writes_wait_while_more_rows_than_the_limit_wait_for_the_views() {
    let (server, runaway) =
        server_with_a_runaway(&["--max-waiting-rows", "100", "--query-timeout-ms", "4000"]);
    // Accepted at once: nothing waited before it. The runaway query's view reads `clicks`
    // and cannot pass these rows until it is done.
    assert_eq!(post_events(&server.url, 500), 202);
    assert_eq!(rows_waiting(&server), 500);
    let url = server.url.clone();
    let second = std::thread::spawn(move || post_events(&url, 300));
    std::thread::sleep(Duration::from_millis(500));
    assert!(!runaway.is_finished(), "the runaway query still runs");
    assert!(
        !second.is_finished(),
        "the second write waits while 500 rows wait for the views"
    );
    assert_eq!(
        runaway.join().unwrap(),
        408,
        "the runaway query is cancelled"
    );
    assert_eq!(second.join().unwrap(), 202, "then the write lands");
    wait_until(|| rows_waiting(&server) == 0, "the views read every row");
    let count = clicks_count(&server);
    assert_eq!(count["data"][0]["n"], 2_800, "{count}");
}

/// While the storage refuses writes, rows acknowledged without `wait=true` stay in memory:
/// they count as waiting, so once more than `--max-waiting-rows` wait, the next write waits
/// too (the server's memory does not grow with a storage outage), and it lands once the
/// storage takes writes again; no acknowledged row is lost.
#[test]
fn writes_wait_while_the_storage_refuses_to_store_the_rows_before_them() {
    let server = Server::start("dataflows/clicks", &["--max-waiting-rows", "100"]);
    ingest(&server, 100);
    wait_until(|| rows_waiting(&server) == 0, "the first rows are stored");
    let log = server.dir.join(".petrel/data/tables/clicks/log");
    assert!(log.is_dir(), "the datasource's log is at {}", log.display());
    // The storage refuses writes: its log folder becomes a file.
    let away = server.dir.join(".petrel/log-away");
    std::fs::rename(&log, &away).unwrap();
    std::fs::write(&log, b"not a folder").unwrap();
    assert_eq!(
        post_events(&server.url, 500),
        202,
        "accepted: nothing waited before it"
    );
    let url = server.url.clone();
    let second = std::thread::spawn(move || post_events(&url, 300));
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(
        rows_waiting(&server),
        500,
        "the views read the rows long ago, the storage has not stored them"
    );
    assert!(
        !second.is_finished(),
        "the second write waits while 500 rows wait for the storage"
    );
    // The storage takes writes again.
    std::fs::remove_file(&log).unwrap();
    std::fs::rename(&away, &log).unwrap();
    assert_eq!(second.join().unwrap(), 202, "then the write lands");
    wait_until(|| rows_waiting(&server) == 0, "every row is stored");
    let count = clicks_count(&server);
    assert_eq!(count["data"][0]["n"], 900, "{count}");
    // Stored: a server killed now and restarted over the same data has every row.
    let dir = server.stop();
    let server = Server::start_in(dir, &[]);
    let count = clicks_count(&server);
    assert_eq!(count["data"][0]["n"], 900, "after a restart: {count}");
}
