//! Push over WebSocket and SSE with real clients: snapshot, changes after ingest, progress
//! while idle, parameters, resume (retained and resync), auth failures.

mod common;

use std::time::Duration;

use common::{client, next_json, Server, Ws, ADMIN};
use futures_util::StreamExt;
use serde_json::{json, Value};

const SEED: &str = include_str!("../dataflows/clicks/fixtures/clicks.ndjson");

fn ingest(server: &Server, body: &str) -> u64 {
    common::ingest_clicks(server, body)
}

async fn connect(server: &Server, query: &str) -> Ws {
    common::connect_clicks_by_user(server, query).await
}

/// Reads messages until one of type `kind` (skipping progress frames).
async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let v = next_json(ws).await;
        if v["type"] == kind {
            return v;
        }
        assert_eq!(v["type"], "progress", "unexpected {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_snapshot_changes_progress_and_parameters() {
    let server = tokio::task::spawn_blocking(|| Server::start("dataflows/clicks", &[]))
        .await
        .unwrap();
    let s = &server;
    let seed_ts = tokio::task::block_in_place(|| ingest(s, SEED));
    let mut de = connect(&server, "country=DE").await;
    let snap = next_json(&mut de).await;
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(snap["data"], json!([{"user_id": 2, "clicks": 22}]));
    assert_eq!(snap["meta"][1], json!({"name": "clicks", "type": "UInt64"}));
    assert!(snap["ts"].as_u64().unwrap() > seed_ts);

    // Idle: a progress frame within a few seconds.
    let p = next_json(&mut de).await;
    assert_eq!(p["type"], "progress");

    // Ingest: the change arrives, and only for the subscribed key.
    let ts = tokio::task::block_in_place(|| {
        ingest(s, "{\"user_id\":2,\"click_count\":3,\"country\":\"DE\"}\n{\"user_id\":5,\"click_count\":1,\"country\":\"US\"}\n")
    });
    let ch = next_of(&mut de, "changes").await;
    let mut data = ch["data"].as_array().unwrap().clone();
    data.sort_by_key(|c| c["diff"].as_i64());
    assert_eq!(
        data,
        vec![
            json!({"diff": -1, "row": {"user_id": 2, "clicks": 22}}),
            json!({"diff": 1, "row": {"user_id": 2, "clicks": 25}})
        ]
    );
    assert!(ch["upper"].as_u64().unwrap() > ts);
    assert!(ch["lower"].as_u64().unwrap() < ch["upper"].as_u64().unwrap());

    // snapshot=false starts with progress, not a snapshot.
    let mut quiet = connect(&server, "country=VN&snapshot=false").await;
    assert_eq!(next_json(&mut quiet).await["type"], "progress");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_by_since_retained_and_resync() {
    let server = tokio::task::spawn_blocking(|| {
        Server::start("dataflows/clicks", &["--retention-ms", "3000"])
    })
    .await
    .unwrap();
    let s = &server;
    tokio::task::block_in_place(|| ingest(s, SEED));
    let mut ws = connect(&server, "country=US").await;
    let snap = next_json(&mut ws).await;
    let since = snap["ts"].as_u64().unwrap();
    drop(ws);
    // Missed while disconnected.
    tokio::task::block_in_place(|| {
        ingest(s, "{\"user_id\":1,\"click_count\":10,\"country\":\"US\"}\n")
    });
    let mut ws = connect(&server, &format!("country=US&since={since}")).await;
    let ch = next_of(&mut ws, "changes").await;
    let rows: Vec<Value> = ch["data"].as_array().unwrap().clone();
    assert!(
        rows.contains(&json!({"diff": 1, "row": {"user_id": 1, "clicks": 15}})),
        "{ch}"
    );
    assert!(
        rows.contains(&json!({"diff": -1, "row": {"user_id": 1, "clicks": 5}})),
        "{ch}"
    );
    // A time older than the retained log resyncs with a snapshot.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    tokio::task::block_in_place(|| {
        ingest(s, "{\"user_id\":1,\"click_count\":1,\"country\":\"US\"}\n")
    });
    let mut ws = connect(&server, &format!("country=US&since={since}")).await;
    let v = next_json(&mut ws).await;
    assert_eq!(v["type"], "snapshot");
    assert_eq!(v["resync"], true);
    assert_eq!(v["data"], json!([{"user_id": 1, "clicks": 16}]));
}

/// A pull says the frontier it was read at (`statistics.upper` and `X-Petrel-Upper`), and a
/// subscription resuming from it gets exactly the changes after the pulled rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_pairs_with_a_subscription_since_its_frontier() {
    let server = tokio::task::spawn_blocking(|| Server::start("dataflows/clicks", &[]))
        .await
        .unwrap();
    let s = &server;
    let seed_ts = tokio::task::block_in_place(|| ingest(s, SEED));
    let (header, body) = tokio::task::block_in_place(|| {
        let r = client()
            .get(format!("{}/v0/pipes/clicks_by_user.json?country=US", s.url))
            .bearer_auth(ADMIN)
            .send()
            .unwrap();
        let header: u64 = r.headers()["x-petrel-upper"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        (header, r.json::<Value>().unwrap())
    });
    let upper = body["statistics"]["upper"].as_u64().unwrap();
    assert_eq!(upper, header);
    // Read-your-writes: the pull holds the acknowledged batch.
    assert!(upper > seed_ts, "{upper} <= {seed_ts}");
    assert_eq!(body["data"], json!([{"user_id": 1, "clicks": 5}]));
    let ts = tokio::task::block_in_place(|| {
        ingest(s, "{\"user_id\":1,\"click_count\":4,\"country\":\"US\"}\n")
    });
    assert!(ts >= upper);
    let mut ws = connect(&server, &format!("country=US&since={upper}")).await;
    let ch = next_of(&mut ws, "changes").await;
    let mut data = ch["data"].as_array().unwrap().clone();
    data.sort_by_key(|c| c["diff"].as_i64());
    assert_eq!(
        data,
        vec![
            json!({"diff": -1, "row": {"user_id": 1, "clicks": 5}}),
            json!({"diff": 1, "row": {"user_id": 1, "clicks": 9}})
        ]
    );
}

/// A subscription with a LIMIT holds what a pull with the same LIMIT reads, after every batch
/// of seeded random clicks (users climbing into and falling out of the top rows, a key
/// growing past the limit), for several limits at once, some shared by two subscribers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_subscriptions_hold_what_a_pull_with_the_limit_reads() {
    let server = tokio::task::spawn_blocking(|| Server::start("dataflows/clicks", &[]))
        .await
        .unwrap();
    let s = &server;
    tokio::task::block_in_place(|| ingest(s, SEED));
    let limits = [1u64, 3, 3, 8, 1000];
    let mut subs = Vec::new();
    for limit in limits {
        let mut ws = connect(&server, &format!("country=DE&limit={limit}")).await;
        let snap = next_of(&mut ws, "snapshot").await;
        let held: Vec<String> = snap["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(Value::to_string)
            .collect();
        subs.push((limit, ws, held, snap["ts"].as_u64().unwrap()));
    }
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..12 {
        let body: String = (0..1 + next() % 6)
            .map(|_| {
                format!(
                    "{{\"user_id\":{},\"click_count\":{},\"country\":\"DE\"}}\n",
                    100 + next() % 12,
                    1 + next() % 9
                )
            })
            .collect();
        tokio::task::block_in_place(|| ingest(s, &body));
        let pulls: Vec<Value> = subs
            .iter()
            .map(|(limit, ..)| {
                tokio::task::block_in_place(|| {
                    common::get(
                        s,
                        &format!("/v0/pipes/clicks_by_user.json?country=DE&limit={limit}"),
                    )
                })
            })
            .collect();
        // Every subscriber reads up to the pull's frontier at once (one that sees no change
        // waits for a progress frame).
        let caught_up = subs
            .iter_mut()
            .zip(&pulls)
            .map(|((_, ws, held, upper), pulled)| {
                mirror_until(
                    ws,
                    held,
                    upper,
                    pulled["statistics"]["upper"].as_u64().unwrap(),
                )
            });
        futures_util::future::join_all(caught_up).await;
        for ((limit, _, held, _), pulled) in subs.iter().zip(&pulls) {
            let mut want: Vec<String> = pulled["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(Value::to_string)
                .collect();
            let mut have = held.clone();
            want.sort();
            have.sort();
            assert_eq!(have, want, "limit {limit} after round {round}");
        }
    }
    // Four distinct limits: four windows of the one view, in GET /v0/views and /metrics.
    let views = tokio::task::block_in_place(|| common::get(s, "/v0/views"));
    let windowed: Vec<&Value> = views["views"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["windows"].as_u64().unwrap_or(0) > 0)
        .collect();
    assert_eq!(windowed.len(), 1, "{views}");
    assert_eq!(windowed[0]["windows"], 4, "{views}");
    let metrics = tokio::task::block_in_place(|| {
        client()
            .get(format!("{}/metrics", s.url))
            .bearer_auth(ADMIN)
            .send()
            .unwrap()
            .text()
            .unwrap()
    });
    let gauge = format!("petrel_view_windows{{id=\"{}\"", windowed[0]["id"]);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with(&gauge) && l.ends_with(" 4")),
        "{metrics}"
    );
}

/// Folds a subscriber's messages into the rows it holds (as JSON) until its frontier reaches
/// `until`.
async fn mirror_until(ws: &mut Ws, held: &mut Vec<String>, upper: &mut u64, until: u64) {
    while *upper < until {
        let m = next_json(ws).await;
        match m["type"].as_str() {
            Some("changes") => {
                for c in m["data"].as_array().unwrap() {
                    let row = c["row"].to_string();
                    let diff = c["diff"].as_i64().unwrap();
                    for _ in 0..diff.abs() {
                        if diff > 0 {
                            held.push(row.clone());
                        } else {
                            let at = held.iter().position(|r| *r == row);
                            held.remove(at.expect("a retraction of a held row"));
                        }
                    }
                }
                *upper = m["upper"].as_u64().unwrap();
            }
            Some("progress") => *upper = m["ts"].as_u64().unwrap(),
            _ => panic!("unexpected {m}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_streams_and_resumes_with_last_event_id() {
    let server = tokio::task::spawn_blocking(|| Server::start("dataflows/clicks", &[]))
        .await
        .unwrap();
    let s = &server;
    tokio::task::block_in_place(|| ingest(s, SEED));
    let http = reqwest::Client::new();
    let open = |last: Option<String>| {
        let mut r = http
            .get(format!(
                "{}/v0/pipes/clicks_by_user.sse?country=VN",
                server.url
            ))
            .bearer_auth(ADMIN);
        if let Some(id) = last {
            r = r.header("Last-Event-ID", id);
        }
        r.send()
    };
    let resp = open(None).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut events = eventsource_stream::EventStream::new(resp.bytes_stream());
    let first = tokio::time::timeout(Duration::from_secs(20), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.event, "snapshot");
    let data: Value = serde_json::from_str(&first.data).unwrap();
    assert_eq!(data["data"], json!([{"user_id": 3, "clicks": 10}]));
    let last_id = first.id.clone();
    drop(events);
    tokio::task::block_in_place(|| {
        ingest(s, "{\"user_id\":3,\"click_count\":5,\"country\":\"VN\"}\n")
    });
    let resp = open(Some(last_id)).await.unwrap();
    let mut events = eventsource_stream::EventStream::new(resp.bytes_stream());
    loop {
        let e = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if e.event == "progress" {
            continue;
        }
        assert_eq!(e.event, "changes");
        let v: Value = serde_json::from_str(&e.data).unwrap();
        assert!(v["data"]
            .as_array()
            .unwrap()
            .contains(&json!({"diff": 1, "row": {"user_id": 3, "clicks": 15}})));
        assert_eq!(e.id, v["upper"].to_string());
        break;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_check_tokens_and_parameters_before_upgrading() {
    let server = tokio::task::spawn_blocking(|| Server::start("dataflows/clicks", &[]))
        .await
        .unwrap();
    let base = server.url.replace("http", "ws");
    let err =
        tokio_tungstenite::connect_async(format!("{base}/v0/pipes/clicks_by_user.ws?country=DE"))
            .await
            .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(r) => assert_eq!(r.status(), 403),
        other => panic!("expected 403, got {other}"),
    }
    let err = tokio_tungstenite::connect_async(format!(
        "{base}/v0/pipes/clicks_by_user.ws?token={ADMIN}&limit=x"
    ))
    .await
    .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(r) => assert_eq!(r.status(), 400),
        other => panic!("expected 400, got {other}"),
    }
    let r = reqwest::Client::new()
        .get(format!(
            "{}/v0/pipes/clicks_by_user.sse?token=bad",
            server.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_does_not_hold_back_memory_or_others() {
    let server = tokio::task::spawn_blocking(|| Server::start("dataflows/clicks", &[]))
        .await
        .unwrap();
    let s = &server;
    tokio::task::block_in_place(|| ingest(s, SEED));
    // One subscriber never reads; another reads everything.
    let stalled = connect(&server, "country=DE").await;
    let mut live = connect(&server, "country=DE").await;
    assert_eq!(next_json(&mut live).await["type"], "snapshot");
    let before = server.rss_bytes();
    let total_rows = 1_000_000u64;
    let batch = 50_000u64;
    let mut expected: std::collections::BTreeMap<u64, u64> = std::collections::BTreeMap::new();
    expected.insert(2, 22);
    for b in 0..total_rows / batch {
        let body: String = (0..batch)
            .map(|i| {
                let user = (b * batch + i) % 1000;
                *expected.entry(user).or_insert(0) += 1;
                format!("{{\"user_id\":{user},\"click_count\":1,\"country\":\"DE\"}}\n")
            })
            .collect();
        // Each batch waits for its rows to be read and stored: what the server then holds is
        // what the subscribers keep, not a backlog of accepted rows that depends on how fast
        // this machine runs the dataflow.
        let r = reqwest::Client::new()
            .post(format!("{}/v0/events?name=clicks&wait=true", server.url))
            .bearer_auth(ADMIN)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // Keep the live subscriber reading.
        while let Ok(Some(Ok(_))) =
            tokio::time::timeout(Duration::from_millis(1), live.next()).await
        {}
    }
    let ts = tokio::task::block_in_place(|| {
        ingest(s, "{\"user_id\":2,\"click_count\":1,\"country\":\"DE\"}\n")
    });
    *expected.entry(2).or_insert(0) += 1;
    // The live subscriber reaches the final state: user 2 has all its clicks.
    let want = json!({"user_id": 2, "clicks": expected[&2]});
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the live subscriber never saw {want}"
        );
        let v = next_json(&mut live).await;
        let seen = match v["type"].as_str() {
            Some("changes") => v["data"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["diff"] == 1 && c["row"] == want),
            Some("snapshot") => v["data"].as_array().unwrap().contains(&want),
            _ => false,
        };
        let upper = v["upper"].as_u64().or(v["ts"].as_u64()).unwrap_or(0);
        if seen && upper > ts {
            break;
        }
    }
    let after = server.rss_bytes();
    assert!(
        after < before + 400 * 1024 * 1024,
        "server memory grew from {} MB to {} MB with a stalled subscriber",
        before / 1_000_000,
        after / 1_000_000
    );
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_envelope_sends_the_new_row_per_key() {
    let server = tokio::task::spawn_blocking(|| Server::start("dataflows/clicks", &[]))
        .await
        .unwrap();
    let s = &server;
    tokio::task::block_in_place(|| ingest(s, SEED));
    let mut ws = connect(&server, "country=DE&envelope=upsert").await;
    assert_eq!(next_json(&mut ws).await["type"], "snapshot");
    tokio::task::block_in_place(|| {
        ingest(s, "{\"user_id\":2,\"click_count\":1,\"country\":\"DE\"}\n{\"user_id\":9,\"click_count\":4,\"country\":\"DE\"}\n")
    });
    let ch = next_of(&mut ws, "changes").await;
    let mut data = ch["data"].as_array().unwrap().clone();
    data.sort_by_key(|c| c["key"]["user_id"].as_u64());
    assert_eq!(
        data,
        vec![
            json!({"key": {"user_id": 2}, "row": {"user_id": 2, "clicks": 23}}),
            json!({"key": {"user_id": 9}, "row": {"user_id": 9, "clicks": 4}}),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_and_ttl_retractions_reach_pull_and_push() {
    let server = tokio::task::spawn_blocking(|| Server::start("tests/projects/engines", &[]))
        .await
        .unwrap();
    let post = |ds: &str, body: String| {
        let r = client()
            .post(format!("{}/v0/events?name={ds}&wait=true", server.url))
            .bearer_auth(ADMIN)
            .body(body)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    };
    let pull = |pipe: &str| -> Value {
        client()
            .get(format!("{}/v0/pipes/{pipe}.json", server.url))
            .bearer_auth(ADMIN)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    tokio::task::block_in_place(|| {
        post(
            "users",
            concat!(
                "{\"id\":1,\"name\":\"ann\",\"plan\":\"free\",\"version\":1,\"deleted\":0}\n",
                "{\"id\":2,\"name\":\"bob\",\"plan\":\"free\",\"version\":1,\"deleted\":0}\n",
            )
            .to_string(),
        )
    });
    let url = format!(
        "{}/v0/pipes/users_by_plan.ws?token={ADMIN}",
        server.url.replace("http", "ws")
    );
    let mut ws = tokio_tungstenite::connect_async(url).await.unwrap().0;
    let snap = next_json(&mut ws).await;
    assert_eq!(
        snap["data"],
        json!([{"plan": "free", "users": 2, "names": ["ann", "bob"]}])
    );
    // A newer version replaces the old row everywhere; an older one is ignored.
    tokio::task::block_in_place(|| {
        post(
            "users",
            concat!(
                "{\"id\":1,\"name\":\"ann\",\"plan\":\"pro\",\"version\":3,\"deleted\":0}\n",
                "{\"id\":1,\"name\":\"ann\",\"plan\":\"team\",\"version\":2,\"deleted\":0}\n",
            )
            .to_string(),
        )
    });
    let ch = next_of(&mut ws, "changes").await;
    let data = ch["data"].as_array().unwrap();
    assert!(
        data.contains(
            &json!({"diff": -1, "row": {"plan": "free", "users": 2, "names": ["ann", "bob"]}})
        ),
        "{ch}"
    );
    assert!(
        data.contains(&json!({"diff": 1, "row": {"plan": "pro", "users": 1, "names": ["ann"]}})),
        "{ch}"
    );
    let mut rows = tokio::task::block_in_place(|| pull("users_by_plan"))["data"]
        .as_array()
        .unwrap()
        .clone();
    rows.sort_by_key(|r| r["plan"].as_str().map(str::to_string));
    assert_eq!(
        rows,
        vec![
            json!({"plan": "free", "users": 1, "names": ["bob"]}),
            json!({"plan": "pro", "users": 1, "names": ["ann"]})
        ]
    );
    // A delete marker retracts the row.
    tokio::task::block_in_place(|| {
        post(
            "users",
            "{\"id\":2,\"name\":\"bob\",\"plan\":\"free\",\"version\":5,\"deleted\":1}\n".into(),
        )
    });
    let ch = next_of(&mut ws, "changes").await;
    assert_eq!(
        ch["data"],
        json!([{"diff": -1, "row": {"plan": "free", "users": 1, "names": ["bob"]}}])
    );

    // TTL: rows leave the views when the clock passes their TTL.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let ts = |secs: i64| petrel_value::time::format_datetime(secs);
    tokio::task::block_in_place(|| {
        post("pings", format!(
            "{{\"ts\":\"{}\",\"host\":\"a\"}}\n{{\"ts\":\"{}\",\"host\":\"b\"}}\n{{\"ts\":\"{}\",\"host\":\"old\"}}\n",
            ts(now), ts(now + 60), ts(now - 3600)
        ))
    });
    let mut hosts = tokio::task::block_in_place(|| pull("live_hosts"))["data"]
        .as_array()
        .unwrap()
        .clone();
    hosts.sort_by_key(|r| r["host"].as_str().map(str::to_string));
    assert_eq!(
        hosts,
        vec![
            json!({"host": "a", "pings": 1}),
            json!({"host": "b", "pings": 1})
        ]
    );
    let url = format!(
        "{}/v0/pipes/live_hosts.ws?token={ADMIN}",
        server.url.replace("http", "ws")
    );
    let mut ws = tokio_tungstenite::connect_async(url).await.unwrap().0;
    assert_eq!(next_json(&mut ws).await["type"], "snapshot");
    let ch = next_of(&mut ws, "changes").await;
    assert_eq!(
        ch["data"],
        json!([{"diff": -1, "row": {"host": "a", "pings": 1}}]),
        "host a expires after 3 s"
    );
    let left = tokio::task::block_in_place(|| pull("live_hosts"));
    assert_eq!(left["data"], json!([{"host": "b", "pings": 1}]));
}

/// Views are capped (`--max-views`), and each LIMIT's window counts as one: distinct-limit
/// subscriptions past the cap answer 429 before upgrading while subscribers hold every view and
/// window; once some close, their windows make room and reads keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_are_capped_and_make_room_least_recently_used_first() {
    let server =
        tokio::task::spawn_blocking(|| Server::start("dataflows/clicks", &["--max-views", "5"]))
            .await
            .unwrap();
    let s = &server;
    tokio::task::block_in_place(|| ingest(s, SEED));
    // Each LIMIT of a subscription is a window of the pipe's view: the view and four windows
    // fill the cap.
    let mut held = Vec::new();
    for limit in 1..=4 {
        let mut ws = connect(&server, &format!("country=DE&limit={limit}")).await;
        assert_eq!(next_json(&mut ws).await["type"], "snapshot");
        held.push(ws);
    }
    let (status, body) = refused(&server, "country=DE&limit=6").await;
    assert_eq!(status, 429);
    assert!(body.contains("--max-views"), "{body}");
    let base = server.url.replace("http", "ws");
    let views = tokio::task::block_in_place(|| common::get(s, "/v0/views"));
    assert_eq!(held_views(&views), 5, "{views}");
    // Two subscribers leave: their windows make room for new ones (once the server has seen
    // the sockets close, within a progress interval).
    for mut ws in held.drain(..2) {
        ws.close(None).await.unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut ws = loop {
        match tokio_tungstenite::connect_async(format!(
            "{base}/v0/pipes/clicks_by_user.ws?token={ADMIN}&country=DE&limit=7"
        ))
        .await
        {
            Ok((ws, _)) => break ws,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "no room made: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(next_json(&mut ws).await["type"], "snapshot");
    // The second closed subscriber's view makes room for a read too (once its close is seen).
    let top = loop {
        let top = tokio::task::block_in_place(|| common::get(s, "/v0/pipes/top_countries.json"));
        if top["data"].is_array() || std::time::Instant::now() > deadline {
            break top;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(top["data"].as_array().map(Vec::len), Some(3), "{top}");
    let views = tokio::task::block_in_place(|| common::get(s, "/v0/views"));
    assert!(held_views(&views) <= 5, "{views}");
    // The subscribers that stayed still receive changes.
    tokio::task::block_in_place(|| {
        ingest(s, "{\"user_id\":2,\"click_count\":1,\"country\":\"DE\"}\n")
    });
    let ch = next_of(&mut held[0], "changes").await;
    assert!(ch["data"].to_string().contains("23"), "{ch}");
}

/// Making room for a window never drops the view the window is of: with room for one view,
/// a LIMIT subscription over the pipe's view is refused (429), and the view keeps serving
/// pulls, unchanged, instead of being dropped and replaced by a top-k of the subscription's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_never_makes_room_by_dropping_its_own_view() {
    let server =
        tokio::task::spawn_blocking(|| Server::start("dataflows/clicks", &["--max-views", "1"]))
            .await
            .unwrap();
    let s = &server;
    tokio::task::block_in_place(|| ingest(s, SEED));
    let pull = "/v0/pipes/clicks_by_user.json?country=DE";
    let before = tokio::task::block_in_place(|| common::get(s, pull));
    let views = tokio::task::block_in_place(|| common::get(s, "/v0/views"));
    assert_eq!(refused(&server, "country=DE&limit=3").await.0, 429);
    let after = tokio::task::block_in_place(|| common::get(s, pull));
    assert_eq!(after["data"], before["data"]);
    let still = tokio::task::block_in_place(|| common::get(s, "/v0/views"));
    assert_eq!(still["views"][0]["id"], views["views"][0]["id"], "{still}");
    assert!(still["views"][0]["error"].is_null(), "{still}");
}

/// The status and body a WebSocket upgrade to `clicks_by_user.ws?QUERY` is refused with.
async fn refused(server: &Server, query: &str) -> (u16, String) {
    let base = server.url.replace("http", "ws");
    let url = format!("{base}/v0/pipes/clicks_by_user.ws?token={ADMIN}&{query}");
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => (
            r.status().as_u16(),
            String::from_utf8_lossy(r.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        other => panic!("expected a refused upgrade, got {other:?}"),
    }
}

/// The views and windows `GET /v0/views` lists: what `--max-views` caps.
fn held_views(views: &Value) -> u64 {
    views["views"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| 1 + v["windows"].as_u64().unwrap_or(0))
        .sum()
}

/// Slow subscribers are bounded in bytes: 500 subscribers that never read, each with a 256 KiB
/// budget, hold a few frames each while 100 batches of changes flow; a reading subscriber
/// still gets every change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_subscribers_are_bounded_in_bytes() {
    let server = tokio::task::spawn_blocking(|| {
        Server::start("dataflows/clicks", &["--subscriber-buffer-bytes", "262144"])
    })
    .await
    .unwrap();
    let s = &server;
    tokio::task::block_in_place(|| ingest(s, SEED));
    raise_open_files_limit();
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        stalled.push(connect(&server, "country=DE&limit=100000").await);
    }
    let mut live = connect(&server, "country=DE&limit=100000").await;
    assert_eq!(next_json(&mut live).await["type"], "snapshot");
    let before = server.rss_bytes();
    let client = reqwest::Client::new();
    for b in 0..100u64 {
        // Every batch changes 2,000 users of DE: a frame of about 100 KB per subscriber.
        post_de_users(&client, &server, 10 + b % 2, false).await;
        while let Ok(Some(Ok(_))) =
            tokio::time::timeout(Duration::from_millis(1), live.next()).await
        {}
    }
    let ts = tokio::task::block_in_place(|| {
        ingest(s, "{\"user_id\":2,\"click_count\":1,\"country\":\"DE\"}\n")
    });
    let want = json!({"user_id": 2, "clicks": 23});
    // The reader works through about 10 MB of frames first; on a loaded 2-core machine (the
    // whole suite running) that has taken most of a minute.
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        assert!(std::time::Instant::now() < deadline, "never saw {want}");
        let v = next_json(&mut live).await;
        let seen = v["data"].to_string().contains("\"clicks\":23");
        let upper = v["upper"].as_u64().or(v["ts"].as_u64()).unwrap_or(0);
        if seen && upper > ts {
            break;
        }
    }
    // The server's own account: what is queued for subscribers stays within their budgets
    // (each may exceed its 256 KiB by the one frame it is writing and the one it is making).
    let views = tokio::task::block_in_place(|| common::get(s, "/v0/views"));
    let queued = views["subscriber_buffers"]["queued_bytes"]
        .as_u64()
        .unwrap();
    assert!(
        queued <= (STALLED as u64 + 1) * 262_144,
        "{queued} bytes queued: {views}"
    );
    let after = server.rss_bytes();
    // Without byte budgets, each stalled subscriber queued 64 frames of about 180 KB (over
    // 5 GB for 500 of them).
    assert!(
        after < before + 900 * 1024 * 1024,
        "server memory grew from {} MB to {} MB with {STALLED} stalled subscribers",
        before / 1_000_000,
        after / 1_000_000
    );
    drop(stalled);
}

/// How many subscribers never read in `stalled_subscribers_are_bounded_in_bytes`.
const STALLED: usize = 500;

/// Lets this test process hold thousands of sockets (the server raises its own limit).
fn raise_open_files_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// 2,000 subscriptions with distinct values of a lookup parameter share one view and one
/// window of it (the value is a key of it, not a view of its own); distinct LIMITs, each a
/// window of its own, stop at `--max-views` with 429; the server's memory stays bounded, and
/// a change reaches the subscriber of its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_distinct_parameter_subscriptions_stay_under_the_caps() {
    raise_open_files_limit();
    let server = tokio::task::spawn_blocking(|| {
        Server::start(
            "dataflows/clicks",
            &["--max-views", "20", "--max-subscriptions-per-token", "5000"],
        )
    })
    .await
    .unwrap();
    let s = &server;
    tokio::task::block_in_place(|| ingest(s, SEED));
    let before = server.rss_bytes();
    let mut by_country = Vec::new();
    for i in 0..2_000 {
        let mut ws = connect(&server, &format!("country=C{i}")).await;
        assert_eq!(next_json(&mut ws).await["type"], "snapshot", "country C{i}");
        by_country.push(ws);
    }
    let views = tokio::task::block_in_place(|| common::get(s, "/v0/views"));
    // The pipe's subscribers all hold one view (through one window of it: their LIMIT is the
    // default's).
    let subscribed: Vec<&Value> = views["views"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["subscribers"].as_u64().unwrap_or(0) > 0)
        .collect();
    assert_eq!(
        subscribed.len(),
        1,
        "one view serves every country: {views}"
    );
    assert_eq!(subscribed[0]["subscribers"], 2_000, "{views}");
    assert_eq!(subscribed[0]["windows"], 1, "{views}");
    let base = server.url.replace("http", "ws");
    let (mut served, mut refused) = (Vec::new(), 0);
    for limit in 1..=100 {
        match tokio_tungstenite::connect_async(format!(
            "{base}/v0/pipes/clicks_by_user.ws?token={ADMIN}&country=DE&limit={limit}"
        ))
        .await
        {
            Ok((mut ws, _)) => {
                assert_eq!(next_json(&mut ws).await["type"], "snapshot");
                served.push(ws);
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status(), 429, "limit={limit}");
                refused += 1;
            }
            Err(other) => panic!("limit={limit}: {other}"),
        }
    }
    let views = tokio::task::block_in_place(|| common::get(s, "/v0/views"));
    assert!(held_views(&views) <= 20, "{views}");
    assert!(
        served.len() <= 20 && refused >= 80,
        "{} served, {refused} refused",
        served.len()
    );
    // About 12 KB per WebSocket subscriber here (25 MB for these 2,100); with the 128 KiB read
    // buffer every connection used to take, it was 281 MB.
    let after = server.rss_bytes();
    assert!(
        after < before + 150 * 1024 * 1024,
        "server memory grew from {} MB to {} MB",
        before / 1_000_000,
        after / 1_000_000
    );
    // A change for one key reaches that key's subscriber.
    tokio::task::block_in_place(|| {
        ingest(
            s,
            "{\"user_id\":77,\"click_count\":5,\"country\":\"C1234\"}\n",
        )
    });
    let ch = next_of(&mut by_country[1234], "changes").await;
    assert!(ch["data"].to_string().contains("\"user_id\":77"), "{ch}");
}

/// `overflow=close`: a subscriber that falls behind the view's change ring is closed with an
/// error frame saying the frontier to resume from, instead of getting a resync snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflow_close_ends_a_lagging_subscriber_with_its_resume_point() {
    let server = tokio::task::spawn_blocking(|| {
        Server::start(
            "dataflows/clicks",
            &[
                "--subscriber-buffer-bytes",
                "4096",
                "--change-ring-batches",
                "32",
            ],
        )
    })
    .await
    .unwrap();
    let s = &server;
    tokio::task::block_in_place(|| ingest(s, SEED));
    let mut ws = connect(&server, "country=DE&limit=100000&overflow=close").await;
    assert_eq!(next_json(&mut ws).await["type"], "snapshot");
    // More batches than the view's change ring keeps (32 here), each changing 2,000 users
    // (about 180 KB of frame: more than the sockets' buffers absorb in all), while the client
    // reads nothing.
    let client = reqwest::Client::new();
    for i in 0..150u64 {
        post_de_users(&client, &server, 100 + i % 2, true).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut n = 0;
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no overflow error after {n} frames"
        );
        let v = next_json(&mut ws).await;
        n += 1;
        assert_ne!(v["type"], "snapshot", "overflow=close must not resync: {v}");
        if v["type"] == "error" {
            assert!(v["resume"].as_u64().unwrap() > 0, "{v}");
            break;
        }
    }
}

/// Posts one click for each of 2,000 DE users from `first` on.
async fn post_de_users(client: &reqwest::Client, server: &Server, first: u64, wait: bool) {
    let body: String = (first..first + 2_000)
        .map(|u| format!("{{\"user_id\":{u},\"click_count\":1,\"country\":\"DE\"}}\n"))
        .collect();
    let r = client
        .post(format!("{}/v0/events?name=clicks&wait={wait}", server.url))
        .bearer_auth(ADMIN)
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

/// One token holds at most `--max-subscriptions-per-token` open subscriptions; others are
/// unaffected, and a closed subscription gives its slot back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_per_token_are_capped() {
    let server = tokio::task::spawn_blocking(|| {
        Server::start("dataflows/clicks", &["--max-subscriptions-per-token", "3"])
    })
    .await
    .unwrap();
    let s = &server;
    tokio::task::block_in_place(|| ingest(s, SEED));
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut ws = connect(&server, "country=DE").await;
        assert_eq!(next_json(&mut ws).await["type"], "snapshot");
        held.push(ws);
    }
    let base = server.url.replace("http", "ws");
    let url = format!("{base}/v0/pipes/clicks_by_user.ws?token={ADMIN}&country=DE");
    match tokio_tungstenite::connect_async(url.clone()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 429),
        other => panic!("expected 429, got {:?}", other.map(|_| ())),
    }
    // Another token is not affected.
    let dashboard = tokio::task::block_in_place(|| {
        common::get(s, "/v0/tokens")["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "dashboard")
            .unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string()
    });
    let (mut other, _) = tokio_tungstenite::connect_async(format!(
        "{base}/v0/pipes/clicks_by_user.ws?token={dashboard}&country=DE"
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut other).await["type"], "snapshot");
    // A closed subscription gives its slot back (once the server has seen it close).
    let mut first = held.remove(0);
    first.close(None).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio_tungstenite::connect_async(url.clone()).await {
            Ok(_) => break,
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "slot never freed: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
