//! A cluster of 1, 2 and 3 `petrel` processes on this machine (one worker each): ingest
//! rows/s and push latency, to measure what exchanging rows between processes over TCP costs.
//!
//! - Ingest: every process takes 20k-row NDJSON batches (`wait=true`) of the `clicks`
//!   project (100k users with skewed activity, 8 countries, hours of timestamps) from one
//!   sender each, for SECONDS; then `SELECT count()` on process 0 must count every row once.
//! - Push: a WebSocket subscriber on process 0 and probe rows written through the last
//!   process (a follower when there are several) at 10k rows/s offered; the time from the
//!   start of each POST to the message carrying its probe, p50/p99.
//!
//! On one machine the processes share its cores, so the figures show the exchange's
//! overhead, not the scaling across machines (docs/cluster.md derives that).
//!
//! `cargo bench --bench cluster` (env: SECONDS, PROCESSES as a list like `1,2,3`, WORKERS per
//! process, 1 by default; `PROCESSES=1 WORKERS=2` is one process using both cores, the
//! figure a two-process cluster's exchange over TCP compares with).

#[path = "support.rs"]
mod support;

use support::{env, ADMIN};

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

struct Process {
    child: Child,
    url: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `n` processes of one cluster over `dir`; returns them in process order.
fn start_cluster(dir: &std::path::Path, n: usize, workers: usize) -> Vec<Process> {
    let hosts = dir.join(format!("cluster-{n}x{workers}.txt"));
    let text: String = (0..n)
        .map(|_| {
            format!(
                "127.0.0.1:{} http://127.0.0.1:{}\n",
                free_port(),
                free_port()
            )
        })
        .collect();
    std::fs::write(&hosts, text).unwrap();
    let storage = dir.join(format!(".petrel/data-{n}x{workers}"));
    let starts: Vec<_> = (0..n)
        .map(|i| {
            let (dir, hosts, storage) = (dir.to_path_buf(), hosts.clone(), storage.clone());
            std::thread::spawn(move || {
                let mut child = Command::new(env!("CARGO_BIN_EXE_petrel"))
                    .args(["cluster", "start", "--insecure-dev-token", "--project"])
                    .arg(&dir)
                    .arg("--hosts")
                    .arg(&hosts)
                    .args(["--process", &i.to_string(), "--storage"])
                    .arg(&storage)
                    .args(["--workers", &workers.to_string()])
                    .env("PETREL_ADMIN_TOKEN", ADMIN)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("petrel starts");
                let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
                let url = lines
                    .by_ref()
                    .map_while(Result::ok)
                    .find_map(|l| {
                        l.strip_prefix("Petrel is listening on ")
                            .map(str::to_string)
                    })
                    .expect("the process printed its address");
                std::thread::spawn(move || for _ in lines {});
                Process { child, url }
            })
        })
        .collect();
    starts.into_iter().map(|s| s.join().unwrap()).collect()
}

/// A 20k-row batch: skewed users among 100k, 8 countries, timestamps over six hours.
fn batch(seed: &mut u64, rows: usize) -> Vec<u8> {
    const COUNTRIES: [&str; 8] = ["US", "DE", "FR", "VN", "BR", "IN", "JP", "GB"];
    let mut out = Vec::with_capacity(rows * 90);
    for _ in 0..rows {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        let r = *seed;
        let user = if r.is_multiple_of(5) {
            r % 1_000
        } else {
            r % 100_000
        };
        let country = COUNTRIES[((r >> 20) % 8) as usize];
        let second = (r >> 32) % (6 * 3600);
        out.extend_from_slice(
            format!(
                "{{\"user_id\":{user},\"click_count\":{},\"country\":\"{country}\",\"timestamp\":\"2026-12-03 {:02}:{:02}:{:02}\"}}\n",
                r % 7 + 1,
                second / 3600,
                second / 60 % 60,
                second % 60
            )
            .as_bytes(),
        );
    }
    out
}

async fn ingest(processes: &[Process], seconds: u64) -> (f64, u64) {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let senders: Vec<_> = processes
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (client, url) = (client.clone(), p.url.clone());
            tokio::spawn(async move {
                let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ (i as u64 + 1);
                let mut rows = 0;
                while started.elapsed() < Duration::from_secs(seconds) {
                    let body = batch(&mut seed, 20_000);
                    rows += support::post_batch(&client, &url, "clicks", body).await.1;
                }
                rows
            })
        })
        .collect();
    let mut rows = 0;
    for s in senders {
        rows += s.await.unwrap();
    }
    (rows as f64 / started.elapsed().as_secs_f64(), rows)
}

async fn push_latency(processes: &[Process], seconds: u64) -> (f64, f64, usize) {
    let subscriber = &processes[0].url;
    let writer = processes.last().unwrap().url.clone();
    let ws_url = format!(
        "{}/v0/pipes/clicks_by_user.ws?country=ZZ&limit=100000000&token={ADMIN}",
        subscriber.replace("http", "ws")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url)
        .await
        .expect("websocket");
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
                let user = c["row"]["user_id"].as_u64();
                if let Some(t) = user.and_then(|u| s2.lock().unwrap().remove(&u)) {
                    l2.lock()
                        .unwrap()
                        .push(arrived.duration_since(t).as_secs_f64() * 1e3);
                }
            }
        }
    });
    let client = reqwest::Client::new();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut probe = 10_000_000u64;
    while Instant::now() < deadline {
        tick.tick().await;
        probe += 1;
        let mut body = format!("{{\"user_id\":{probe},\"click_count\":1,\"country\":\"ZZ\"}}\n");
        for i in 1..100 {
            body.push_str(&format!(
                "{{\"user_id\":{},\"click_count\":1,\"country\":\"US\"}}\n",
                i % 5000
            ));
        }
        let (client, url, sent) = (client.clone(), writer.clone(), sent.clone());
        tokio::spawn(async move {
            sent.lock().unwrap().insert(probe, Instant::now());
            let _ = client
                .post(format!("{url}/v0/events?name=clicks"))
                .bearer_auth(ADMIN)
                .body(body)
                .send()
                .await;
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    reader.abort();
    let mut l = latencies.lock().unwrap().clone();
    l.sort_by(|a, b| a.total_cmp(b));
    (
        support::percentile(&l, 0.5),
        support::percentile(&l, 0.99),
        l.len(),
    )
}

fn main() {
    let seconds = env::<u64>("SECONDS", 10);
    let workers = env::<usize>("WORKERS", 1);
    let counts: Vec<usize> = std::env::var("PROCESSES")
        .unwrap_or_else(|_| "1,2,3".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let dir = support::project_copy("dataflows/clicks");
    let rt = tokio::runtime::Runtime::new().unwrap();
    println!("processes  ingest rows/s  (rows)      push p50 ms  p99 ms  (probes)");
    for n in counts {
        let processes = start_cluster(&dir, n, workers);
        rt.block_on(async {
            let (rate, rows) = ingest(&processes, seconds).await;
            // Every row is counted once, wherever it entered.
            let client = reqwest::Client::new();
            let count = support::get_json(
                &client,
                &format!(
                    "{}/v0/sql?q=SELECT%20count()%20AS%20c%20FROM%20clicks%20FORMAT%20JSON",
                    processes[0].url
                ),
            )
            .await;
            assert_eq!(
                count["data"][0]["c"].as_u64(),
                Some(rows),
                "every row counted once"
            );
            let (p50, p99, probes) = push_latency(&processes, seconds.min(5)).await;
            println!("{n:>9}  {rate:>13.0}  ({rows:>9})  {p50:>11.1}  {p99:>6.1}  ({probes})");
        });
        drop(processes);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
