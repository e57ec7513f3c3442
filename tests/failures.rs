//! A view that fails does not take the server with it: a pipe whose evaluation raises an
//! error (ClickHouse's `throwIf`) answers 500 with the error at once, its subscribers get an
//! `error` frame, `/v0/health` names it, and every other endpoint keeps answering and
//! following new data.

mod common;

use common::{client, Server, ADMIN};
use serde_json::Value;

fn project() -> std::path::PathBuf {
    let dir = common::temp_dir("failures");
    for sub in ["datasources", "endpoints"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(
        dir.join("datasources/events.datasource"),
        "SCHEMA >\n    `user_id` UInt32 `json:$.user_id`,\n    `country` String `json:$.country`\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("endpoints/by_country.pipe"),
        "NODE n\nSQL >\n    SELECT country, count() AS events FROM events GROUP BY country ORDER BY country\n\nTYPE endpoint\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("endpoints/fragile.pipe"),
        "NODE n\nSQL >\n    SELECT country, sum(user_id + throwIf(user_id = 13, 'unlucky user 13')) AS total FROM events GROUP BY country ORDER BY country\n\nTYPE endpoint\n",
    )
    .unwrap();
    dir
}

fn ingest(server: &Server, users: &[u32]) {
    let body: String = users
        .iter()
        .map(|u| {
            format!(
                "{{\"user_id\":{u},\"country\":\"{}\"}}\n",
                ["DE", "US"][*u as usize % 2]
            )
        })
        .collect();
    let r = client()
        .post(format!("{}/v0/events?name=events&wait=true", server.url))
        .bearer_auth(ADMIN)
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
}

fn pipe(server: &Server, name: &str) -> (u16, Value) {
    let r = client()
        .get(format!("{}/v0/pipes/{name}.json", server.url))
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap())
}

fn events(answer: &Value) -> Vec<(String, u64)> {
    answer["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["country"].as_str().unwrap().to_string(),
                r["events"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_view_fails_alone() {
    let server = tokio::task::spawn_blocking(|| Server::start_in(project(), &[]))
        .await
        .unwrap();
    let s = &server;
    tokio::task::block_in_place(|| {
        ingest(s, &[1, 2, 3, 4]);
        let (status, answer) = pipe(s, "fragile");
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["data"][0]["total"], 6, "{answer}");
        let health = common::get(s, "/v0/health");
        assert_eq!(health["status"], "ok", "{health}");
    });

    // A live subscriber to the pipe that is about to fail.
    let url = format!(
        "{}/v0/pipes/fragile.ws?token={ADMIN}",
        server.url.replace("http", "ws")
    );
    let mut ws = tokio_tungstenite::connect_async(url).await.unwrap().0;
    assert_eq!(common::next_json(&mut ws).await["type"], "snapshot");

    // The row that makes its evaluation raise.
    tokio::task::block_in_place(|| {
        ingest(s, &[13, 5]);
        let (status, answer) = pipe(s, "fragile");
        assert_eq!(status, 500, "{answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .contains("unlucky user 13"),
            "{answer}"
        );
    });
    let frame = loop {
        let f = common::next_json(&mut ws).await;
        if f["type"] == "error" {
            break f;
        }
    };
    assert!(frame.to_string().contains("unlucky user 13"), "{frame}");

    tokio::task::block_in_place(|| {
        // Health names the failed view to an admin, and only counts it for anyone else.
        let health = common::get(s, "/v0/health");
        assert_eq!(health["status"], "degraded", "{health}");
        assert_eq!(health["failed_view_count"], 1, "{health}");
        let failed = health["failed_views"].as_array().unwrap();
        assert!(
            failed[0]["view"].as_str().unwrap().contains("fragile"),
            "{health}"
        );
        assert!(
            failed[0]["error"].as_str().unwrap().contains("unlucky"),
            "{health}"
        );
        let anonymous: Value = client()
            .get(format!("{}/v0/health", s.url))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(anonymous["failed_view_count"], 1, "{anonymous}");
        assert!(anonymous.get("failed_views").is_none(), "{anonymous}");

        // The other endpoint saw every row, and keeps following new ones.
        let (status, answer) = pipe(s, "by_country");
        assert_eq!(status, 200, "{answer}");
        assert_eq!(events(&answer), vec![("DE".into(), 2), ("US".into(), 4)]);
        ingest(s, &[6, 8]);
        let (_, answer) = pipe(s, "by_country");
        assert_eq!(events(&answer), vec![("DE".into(), 4), ("US".into(), 4)]);
        // Ad-hoc SQL still runs, and a failing one fails alone too.
        let r = client()
            .get(format!("{}/v0/sql", s.url))
            .bearer_auth(ADMIN)
            .query(&[("q", "SELECT count() AS n FROM events")])
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = client()
            .get(format!("{}/v0/sql", s.url))
            .bearer_auth(ADMIN)
            .query(&[(
                "q",
                "SELECT throwIf(count() > 3, 'too many') AS n FROM events",
            )])
            .send()
            .unwrap();
        assert_eq!(r.status(), 500);
        let body: Value = r.json().unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("too many"),
            "{body}"
        );
    });
}
