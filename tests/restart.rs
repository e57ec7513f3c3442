//! Across a primary restart (SIGKILL): views come back equal, and a WebSocket subscriber that
//! resumes with `since` receives exactly the changes it missed, batch by batch, then live ones.

mod common;

use std::time::Duration;

use common::{get, next_json, Server, Ws};
use serde_json::{json, Value};

const SEED: &str = include_str!("../dataflows/clicks/fixtures/clicks.ndjson");

fn ingest(server: &Server, body: &str) -> u64 {
    common::ingest_clicks(server, body)
}

async fn connect(server: &Server, query: &str) -> Ws {
    common::connect_clicks_by_user(server, &format!("country=DE{query}")).await
}

/// The next message that is not a progress frame.
async fn next_message(ws: &mut Ws) -> Value {
    loop {
        let v = next_json(ws).await;
        if v["type"] != "progress" {
            return v;
        }
    }
}

fn sorted(changes: &Value) -> Vec<Value> {
    let mut data = changes["data"].as_array().unwrap().clone();
    data.sort_by_key(|c| c["diff"].as_i64());
    data
}

fn change(from: u64, to: u64) -> Vec<Value> {
    vec![
        json!({"diff": -1, "row": {"user_id": 2, "clicks": from}}),
        json!({"diff": 1, "row": {"user_id": 2, "clicks": to}}),
    ]
}

fn de_click(n: u64) -> String {
    format!("{{\"user_id\":2,\"click_count\":{n},\"country\":\"DE\"}}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_resumes_exactly_across_a_restart() {
    let server = tokio::task::spawn_blocking(|| Server::start("dataflows/clicks", &[]))
        .await
        .unwrap();
    let s = &server;
    tokio::task::block_in_place(|| ingest(s, SEED));
    let mut ws = connect(&server, "").await;
    let snap = next_message(&mut ws).await;
    assert_eq!(snap["data"], json!([{"user_id": 2, "clicks": 22}]));
    tokio::task::block_in_place(|| ingest(s, &de_click(3)));
    let seen = next_message(&mut ws).await;
    assert_eq!(sorted(&seen), change(22, 25));
    // The subscriber holds every change below this frontier, and goes away.
    let since = seen["upper"].as_u64().unwrap();
    drop(ws);

    // Changes it misses: two DE batches at two timestamps, and one of another country.
    let missed_a = tokio::task::block_in_place(|| ingest(s, &de_click(5)));
    tokio::time::sleep(Duration::from_millis(50)).await;
    tokio::task::block_in_place(|| {
        ingest(s, "{\"user_id\":1,\"click_count\":1,\"country\":\"US\"}\n")
    });
    let missed_b = tokio::task::block_in_place(|| ingest(s, &de_click(1)));
    assert!(missed_a < missed_b);
    let before = tokio::task::block_in_place(|| get(s, "/v0/pipes/top_countries.json"));

    // SIGKILL, restart on the same data.
    let dir = server.stop();
    let server = tokio::task::spawn_blocking(move || Server::start_in(dir, &[]))
        .await
        .unwrap();
    let s = &server;
    let after = tokio::task::block_in_place(|| get(s, "/v0/pipes/top_countries.json"));
    assert_eq!(
        before["data"], after["data"],
        "views after a restart equal views before"
    );

    // Resume: exactly the two missed DE batches, at the times they first happened.
    let mut ws = connect(&server, &format!("&since={since}")).await;
    let first = next_message(&mut ws).await;
    assert_eq!(
        first["type"], "changes",
        "resumed without a resync: {first}"
    );
    assert_eq!(sorted(&first), change(25, 30));
    assert!(
        first["lower"].as_u64().unwrap() <= missed_a && missed_a < first["upper"].as_u64().unwrap()
    );
    let second = next_message(&mut ws).await;
    assert_eq!(sorted(&second), change(30, 31));
    assert!(
        second["lower"].as_u64().unwrap() <= missed_b
            && missed_b < second["upper"].as_u64().unwrap()
    );

    // Then live changes continue on the same stream.
    tokio::task::block_in_place(|| ingest(s, &de_click(2)));
    let live = next_message(&mut ws).await;
    assert_eq!(sorted(&live), change(31, 33));

    // A frontier older than the restarted view's history gets a fresh snapshot, marked.
    let mut old = connect(&server, "&since=1").await;
    let resync = next_message(&mut old).await;
    assert_eq!(resync["type"], "snapshot");
    assert_eq!(resync["resync"], true);
    assert_eq!(resync["data"], json!([{"user_id": 2, "clicks": 33}]));
}

/// Appends rows without waiting for them to be stored.
fn post_unwaited(server: &Server, body: String) {
    let r = common::client()
        .post(format!("{}/v0/events?name=clicks", server.url))
        .bearer_auth(common::ADMIN)
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
}

/// A server whose group commit is far away, and the frontier of a subscriber that was sent a
/// change (user 2's clicks from 22 to 25) that is not stored yet.
async fn sent_a_change_not_yet_stored() -> (Server, u64) {
    let server = tokio::task::spawn_blocking(|| {
        Server::start("dataflows/clicks", &["--flush-interval-ms", "600000"])
    })
    .await
    .unwrap();
    let s = &server;
    tokio::task::block_in_place(|| ingest(s, SEED));
    let mut ws = connect(&server, "").await;
    let snap = next_message(&mut ws).await;
    assert_eq!(snap["data"], json!([{"user_id": 2, "clicks": 22}]));
    tokio::task::block_in_place(|| post_unwaited(s, de_click(3)));
    let seen = next_message(&mut ws).await;
    assert_eq!(sorted(&seen), change(22, 25));
    (server, seen["upper"].as_u64().unwrap())
}

/// A subscriber is never left believing a change a crash erased: it is sent a row that was
/// not stored yet (written without `wait=true`, the group commit far away), the server is
/// SIGKILLed, and on resuming from the frontier it holds it gets a fresh snapshot, marked,
/// without that row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_after_a_crash_takes_back_changes_that_were_lost() {
    let (server, since) = sent_a_change_not_yet_stored().await;

    let dir = server.stop();
    let server = tokio::task::spawn_blocking(move || Server::start_in(dir, &[]))
        .await
        .unwrap();
    let s = &server;
    let pulled = tokio::task::block_in_place(|| get(s, "/v0/pipes/clicks_by_user.json?country=DE"));
    assert_eq!(
        pulled["data"],
        json!([{"user_id": 2, "clicks": 22}]),
        "the row was lost"
    );
    let mut ws = connect(&server, &format!("&since={since}")).await;
    let first = tokio::time::timeout(Duration::from_secs(20), next_message(&mut ws))
        .await
        .expect("a resync snapshot, not only progress, after resuming past a crash");
    assert_eq!(first["type"], "snapshot", "{first}");
    assert_eq!(first["resync"], true, "{first}");
    assert_eq!(first["data"], json!([{"user_id": 2, "clicks": 22}]));
}

#[test]
fn a_restarted_server_restores_views_from_their_snapshots() {
    let server = Server::start("dataflows/clicks", &["--snapshot-interval-ms", "200"]);
    ingest(&server, SEED);
    ingest(&server, &de_click(3));
    let snapshots = server.dir.join(".petrel/data/views");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(&snapshots).map_or(0, |d| d.count()) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no view snapshot was written"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Let a snapshot cover the last ingest, then crash.
    std::thread::sleep(Duration::from_millis(1_000));
    let before = get(&server, "/v0/pipes/top_countries.json");
    let dir = server.stop();
    let server = Server::start_in(dir, &["--snapshot-interval-ms", "200"]);
    let views = get(&server, "/v0/views");
    let restored: Vec<&Value> = views["views"]
        .as_array()
        .unwrap_or_else(|| panic!("{views}"))
        .iter()
        .filter(|v| v["restored_from"].is_u64())
        .collect();
    assert!(
        !restored.is_empty(),
        "no view was restored from a snapshot: {views}"
    );
    assert_eq!(
        get(&server, "/v0/pipes/top_countries.json")["data"],
        before["data"]
    );
    // Restored views go on maintaining: new rows count on top of the snapshot, once.
    ingest(&server, &de_click(4));
    let de = get(&server, "/v0/pipes/clicks_by_user.json?country=DE");
    assert_eq!(de["data"], json!([{"user_id": 2, "clicks": 29}]));
}

/// A clean stop (`POST /v0/admin/shutdown`, what `petrel local stop` sends; SIGTERM does the
/// same) stores rows acknowledged without `wait=true` first, and writes the durable frontier,
/// so a subscriber resumes after it exactly, with no resync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_keeps_unwaited_rows_and_exact_resumes() {
    let (server, since) = sent_a_change_not_yet_stored().await;
    let s = &server;
    tokio::task::block_in_place(|| {
        post_unwaited(s, de_click(5));
        let r = common::client()
            .post(format!("{}/v0/admin/shutdown", s.url))
            .bearer_auth(common::ADMIN)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        // The server exits on its own once the rows are stored.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while common::client()
            .get(format!("{}/v0/health", s.url))
            .send()
            .is_ok()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the server did not stop"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let dir = server.stop();
    let server = tokio::task::spawn_blocking(move || Server::start_in(dir, &[]))
        .await
        .unwrap();
    let s = &server;
    let pulled = tokio::task::block_in_place(|| get(s, "/v0/pipes/clicks_by_user.json?country=DE"));
    assert_eq!(pulled["data"], json!([{"user_id": 2, "clicks": 30}]));
    let mut ws = connect(&server, &format!("&since={since}")).await;
    let first = tokio::time::timeout(Duration::from_secs(20), next_message(&mut ws))
        .await
        .expect("the missed change");
    assert_eq!(
        first["type"], "changes",
        "resumed without a resync: {first}"
    );
    assert_eq!(sorted(&first), change(25, 30));
}
