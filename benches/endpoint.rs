//! Endpoint requests per second and latency (p50/p99) on the keyed demo endpoint, at 1, 16
//! and 64 concurrent clients.
//!
//! `cargo bench --bench endpoint` (env: SECONDS per level).

#[path = "support.rs"]
mod support;

use std::time::{Duration, Instant};

fn main() {
    let seconds: u64 = std::env::var("SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let dir = support::project_copy("dataflows/clicks");
        let (url, runtime) = support::start(&dir, Default::default()).await;
        let countries = ["US", "DE", "VN", "FR", "ES", "IT", "JP", "BR"];
        let body: String = (0..100_000)
            .map(|n| format!("{{\"user_id\":{},\"click_count\":1,\"country\":\"{}\"}}\n", n % 1000, countries[n % 8]))
            .collect();
        let report = runtime.ingest_ndjson("clicks", body.as_bytes()).unwrap();
        runtime.wait_durable_and_visible("clicks", report.ts).await.unwrap();
        for clients in [1usize, 16, 64] {
            let deadline = Instant::now() + Duration::from_secs(seconds);
            let mut tasks = Vec::new();
            for c in 0..clients {
                let url = url.clone();
                tasks.push(tokio::spawn(async move {
                    let client = reqwest::Client::new();
                    let mut lat = Vec::new();
                    let mut i = c;
                    while Instant::now() < deadline {
                        let country = countries[i % 8];
                        i += 1;
                        let t = Instant::now();
                        let r = client
                            .get(format!("{url}/v0/pipes/clicks_by_user.json?country={country}&limit=10"))
                            .bearer_auth(support::ADMIN)
                            .send()
                            .await
                            .unwrap();
                        assert!(r.status().is_success());
                        let _ = r.bytes().await.unwrap();
                        lat.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    lat
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap());
            }
            all.sort_by(|a, b| a.total_cmp(b));
            println!(
                "endpoint: {clients:>2} clients: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                all.len() as f64 / seconds as f64,
                support::percentile(&all, 0.5),
                support::percentile(&all, 0.99),
                all.last().copied().unwrap_or(0.0)
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    });
}
