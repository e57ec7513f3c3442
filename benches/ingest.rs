//! Events API ingest throughput into the demo project: ~100-byte NDJSON events in batched
//! requests, until the last rows are visible in the demo endpoint.
//!
//! `cargo bench --bench ingest` (env: ROWS, BATCH, CLIENTS, WORKERS).

#[path = "support.rs"]
mod support;

use support::env;

use std::time::Instant;

fn main() {
    let rows = env::<usize>("ROWS", 2_000_000);
    let batch = env::<usize>("BATCH", 20_000);
    let clients = env::<usize>("CLIENTS", 2);
    let workers = env::<usize>("WORKERS", 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let dir = support::project_copy("dataflows/clicks");
        let config = petrel::runtime::RuntimeConfig {
            engine: petrel_engine::EngineConfig { workers, ..Default::default() },
            ..Default::default()
        };
        let (url, _runtime) = support::start(&dir, config).await;
        let countries = ["US", "DE", "VN", "FR", "ES", "IT", "JP", "BR"];
        let bodies: Vec<String> = (0..rows.div_ceil(batch))
            .map(|b| {
                (0..batch)
                    .map(|i| {
                        let n = b * batch + i;
                        format!(
                            "{{\"user_id\":{},\"click_count\":{},\"country\":\"{}\",\"timestamp\":\"2024-06-01 12:{:02}:{:02}\"}}\n",
                            n % 10_000,
                            n % 7 + 1,
                            countries[n % countries.len()],
                            (n / 60) % 60,
                            n % 60
                        )
                    })
                    .collect()
            })
            .collect();
        let bytes: usize = bodies.iter().map(|b| b.len()).sum();
        let client = reqwest::Client::new();
        let started = Instant::now();
        let per_client = bodies.len().div_ceil(clients);
        let mut tasks = Vec::new();
        for chunk in bodies.chunks(per_client) {
            let chunk = chunk.to_vec();
            let (client, url) = (client.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                for body in chunk {
                    let r = client
                        .post(format!("{url}/v0/events?name=clicks"))
                        .bearer_auth(support::ADMIN)
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success(), "{}", r.text().await.unwrap_or_default());
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // One more request with wait=true: visible in every view and durable.
        let r = client
            .post(format!("{url}/v0/events?name=clicks&wait=true"))
            .bearer_auth(support::ADMIN)
            .body("{\"user_id\":1,\"click_count\":1,\"country\":\"US\"}\n")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let secs = started.elapsed().as_secs_f64();
        println!(
            "ingest: {rows} rows ({:.0} bytes/row) in {secs:.2}s = {:.0} rows/s, {:.1} MB/s ({clients} clients, {batch} rows/request, {workers} workers)",
            bytes as f64 / rows as f64,
            rows as f64 / secs,
            bytes as f64 / secs / 1e6
        );
        let _ = std::fs::remove_dir_all(&dir);
    });
}
