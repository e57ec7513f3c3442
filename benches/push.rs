//! Push latency and fan-out over WebSocket.
//!
//! - Latency: at 1k, 10k and 100k rows/s offered (a POST every 10 ms), each POST carries one
//!   probe row for a new user; the time from the start of that POST to the WebSocket message
//!   that carries the probe's row, p50/p99/max.
//! - Fan-out: 1,000 WebSocket subscribers of one pipe; one POST; the time until all of them
//!   have the change.
//!
//! `cargo bench --bench push` (env: SECONDS per rate, RATES (rows/s, comma-separated,
//! default 1000,10000,100000), SUBSCRIBERS; PRELOAD rows written
//! before the latency runs, default 0, spread over PRELOAD distinct users so the views are
//! large; SNAPSHOT_MS, the view snapshot interval, default the server's 30 s).

#[path = "support.rs"]
mod support;

use support::env;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str, query: &str) -> Ws {
    let ws_url = format!(
        "{}/v0/pipes/{query}&token={}",
        url.replace("http", "ws"),
        support::ADMIN
    );
    tokio_tungstenite::connect_async(ws_url)
        .await
        .expect("websocket")
        .0
}

fn main() {
    let seconds = env::<u64>("SECONDS", 5);
    let subscribers = env::<u64>("SUBSCRIBERS", 1000) as usize;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let dir = support::project_copy("dataflows/clicks");
        let config = petrel::runtime::RuntimeConfig {
            engine: petrel_engine::EngineConfig { workers: 2, ..Default::default() },
            // Every subscriber of the fan-out uses the bench's one token.
            max_subscriptions_per_token: subscribers + 16,
            snapshot_interval_ms: env("SNAPSHOT_MS", 30_000),
            ..Default::default()
        };
        let (url, _runtime) = support::start(&dir, config).await;
        let client = reqwest::Client::new();
        let preload = env::<u64>("PRELOAD", 0);
        const COUNTRIES: [&str; 4] = ["US", "FR", "GB", "JP"];
        for chunk in (0..preload).step_by(100_000) {
            let body: String = (chunk..(chunk + 100_000).min(preload))
                .map(|u| format!("{{\"user_id\":{},\"click_count\":1,\"country\":\"{}\"}}\n", 10_000_000 + u, COUNTRIES[(u % 4) as usize]))
                .collect();
            support::post_batch(&client, &url, "clicks", body.into_bytes()).await;
        }
        if preload > 0 {
            println!("push: preloaded {preload} rows of distinct users");
        }
        let mut next_user: u64 = 1_000_000;

        let rates: Vec<u64> = std::env::var("RATES")
            .ok()
            .map(|r| r.split(',').filter_map(|x| x.trim().parse().ok()).collect())
            .unwrap_or_else(|| vec![1_000, 10_000, 100_000]);
        for rate in rates {
            let mut ws = connect(&url, "clicks_by_user.ws?country=DE&limit=100000000").await;
            let sent: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
            let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
            let (s2, l2) = (sent.clone(), latencies.clone());
            let reader = tokio::spawn(async move {
                while let Some(Ok(msg)) = ws.next().await {
                    let Message::Text(text) = msg else { continue };
                    let arrived = Instant::now();
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                    if v["type"] != "changes" {
                        continue;
                    }
                    for c in v["data"].as_array().unwrap() {
                        if c["diff"] == 1 {
                            if let Some(user) = c["row"]["user_id"].as_u64() {
                                if let Some(t) = s2.lock().unwrap().remove(&user) {
                                    l2.lock().unwrap().push(arrived.duration_since(t).as_secs_f64() * 1e3);
                                }
                            }
                        }
                    }
                }
            });
            let per_request = (rate / 100).max(1);
            let deadline = Instant::now() + Duration::from_secs(seconds);
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while Instant::now() < deadline {
                tick.tick().await;
                next_user += 1;
                let probe = next_user;
                let mut body = format!("{{\"user_id\":{probe},\"click_count\":1,\"country\":\"DE\"}}\n");
                for i in 1..per_request {
                    body.push_str(&format!("{{\"user_id\":{},\"click_count\":1,\"country\":\"US\"}}\n", i % 5000));
                }
                let (client, url, sent) = (client.clone(), url.clone(), sent.clone());
                tokio::spawn(async move {
                    sent.lock().unwrap().insert(probe, Instant::now());
                    let _ = client
                        .post(format!("{url}/v0/events?name=clicks"))
                        .bearer_auth(support::ADMIN)
                        .body(body)
                        .send()
                        .await;
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            reader.abort();
            let mut l = latencies.lock().unwrap().clone();
            l.sort_by(|a, b| a.total_cmp(b));
            let lost = sent.lock().unwrap().len();
            println!(
                "push latency at {rate:>6} rows/s: {} probes, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms{}",
                l.len(),
                support::percentile(&l, 0.5),
                support::percentile(&l, 0.99),
                l.last().copied().unwrap_or(0.0),
                if lost > 0 { format!(" ({lost} not seen within 500 ms of the end)") } else { String::new() }
            );
        }

        // Fan-out: many subscribers of one view.
        let mut clients = Vec::new();
        for _ in 0..subscribers {
            let mut ws = connect(&url, "top_countries.ws?limit=10").await;
            let first = ws.next().await.unwrap().unwrap();
            assert!(first.to_text().unwrap().contains("snapshot"));
            clients.push(ws);
        }
        let started = Instant::now();
        let waiters: Vec<_> = clients
            .into_iter()
            .map(|mut ws| {
                tokio::spawn(async move {
                    while let Some(Ok(msg)) = ws.next().await {
                        if msg.to_text().is_ok_and(|t| t.contains("\"changes\"")) {
                            return Instant::now();
                        }
                    }
                    panic!("subscriber closed")
                })
            })
            .collect();
        client
            .post(format!("{url}/v0/events?name=clicks"))
            .bearer_auth(support::ADMIN)
            .body("{\"user_id\":1,\"click_count\":1000000,\"country\":\"XX\"}\n")
            .send()
            .await
            .unwrap();
        let mut last = started;
        let mut times = Vec::new();
        for w in waiters {
            let t = w.await.unwrap();
            times.push(t.duration_since(started).as_secs_f64() * 1e3);
            last = last.max(t);
        }
        times.sort_by(|a, b| a.total_cmp(b));
        println!(
            "fan-out: {subscribers} WebSocket subscribers all had the change {:.1} ms after the POST started (first {:.1} ms, median {:.1} ms)",
            last.duration_since(started).as_secs_f64() * 1e3,
            times.first().copied().unwrap_or(0.0),
            support::percentile(&times, 0.5)
        );
        let _ = std::fs::remove_dir_all(&dir);
    });
}
