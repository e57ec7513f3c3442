//! A read replica on the primary's storage serves the same endpoint results, follows new data
//! (pull and push) at the primary's own timestamps, and refuses writes.

mod common;

use std::time::{Duration, Instant};

use common::{client, get, Server, ADMIN};
use futures_util::StreamExt;
use serde_json::{json, Value};

const SEED: &str = include_str!("../dataflows/clicks/fixtures/clicks.ndjson");

fn ingest(server: &Server, body: &str) -> reqwest::StatusCode {
    client()
        .post(format!("{}/v0/events?name=clicks&wait=true", server.url))
        .bearer_auth(ADMIN)
        .body(body.to_string())
        .send()
        .unwrap()
        .status()
}

fn until_equal(primary: &Server, replica: &Server, path: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (p, r) = (
            get(primary, path)["data"].clone(),
            get(replica, path)["data"].clone(),
        );
        if p == r {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "the replica never caught up: {p} vs {r}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_follows_the_primary() {
    let primary = tokio::task::spawn_blocking(|| Server::start("dataflows/clicks", &[]))
        .await
        .unwrap();
    let p = &primary;
    assert_eq!(tokio::task::block_in_place(|| ingest(p, SEED)), 200);
    let data = primary.dir.join(".petrel/data");
    let replica = tokio::task::spawn_blocking(move || {
        let dir = common::copy_project_files("dataflows/clicks", "replica");
        Server::start_in(dir, &["--replica", "--data", data.to_str().unwrap()])
    })
    .await
    .unwrap();
    let r = &replica;
    for path in [
        "/v0/pipes/clicks_by_user.json?country=DE",
        "/v0/pipes/top_countries.json",
        "/v0/pipes/clicks_per_minute.json",
    ] {
        tokio::task::block_in_place(|| until_equal(p, r, path));
    }
    // New data on the primary reaches the replica's pulls and subscribers.
    let url = format!(
        "{}/v0/pipes/clicks_by_user.ws?country=DE&token={ADMIN}",
        replica.url.replace("http", "ws")
    );
    let mut ws = tokio_tungstenite::connect_async(url).await.unwrap().0;
    let snap: Value =
        serde_json::from_str(ws.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(snap["data"], json!([{"user_id": 2, "clicks": 22}]));
    let landed: u64 = tokio::task::block_in_place(|| {
        let r = client()
            .post(format!("{}/v0/events?name=clicks&wait=true", p.url))
            .bearer_auth(ADMIN)
            .body("{\"user_id\":2,\"click_count\":8,\"country\":\"DE\"}\n")
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().unwrap()["ts"].as_u64().unwrap()
    });
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
        if v["type"] == "changes" {
            assert!(
                v["data"]
                    .as_array()
                    .unwrap()
                    .contains(&json!({"diff": 1, "row": {"user_id": 2, "clicks": 30}})),
                "{v}"
            );
            // The replica publishes the change at the timestamp the primary gave it.
            assert_eq!(v["lower"].as_u64(), Some(landed), "{v}");
            break;
        }
    }
    let de = tokio::task::block_in_place(|| {
        until_equal(p, r, "/v0/pipes/clicks_by_user.json?country=DE")
    });
    assert_eq!(de, json!([{"user_id": 2, "clicks": 30}]));
    // Writes go to the primary.
    let refused = tokio::task::block_in_place(|| ingest(r, SEED));
    assert_eq!(refused, 400);
}
