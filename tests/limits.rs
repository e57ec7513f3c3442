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

const CROSS_JOIN: &str =
    "SELECT count() AS n FROM clicks a CROSS JOIN clicks b CROSS JOIN clicks c";

#[test]
fn a_runaway_query_is_cancelled_and_others_keep_answering() {
    let server = Server::start("dataflows/clicks", &["--query-timeout-ms", "1500"]);
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
}

#[test]
fn a_query_whose_client_disconnects_leaves_no_dataflow() {
    let server = Server::start("dataflows/clicks", &["--query-timeout-ms", "60000"]);
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
    // And the server still answers.
    ingest(&server, 10);
}
