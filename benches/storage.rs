//! Storage figures: Events API ingest with `wait=true` (durable: group-committed segment
//! objects, fsynced) against without, bytes stored per row (log segments, then Parquet parts)
//! against the NDJSON input, and restart-to-ready time over 10M stored rows.
//!
//! `cargo bench --bench storage` (env: ROWS for the restart figure, default 10M).

#[path = "support.rs"]
mod support;

use std::time::Instant;

use petrel_value::Value;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let rows = env("ROWS", 10_000_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        // wait=true against without, 200k rows in 10k-row requests, one client.
        for wait in [false, true] {
            let dir = support::project_copy("dataflows/clicks");
            let (url, _runtime) = support::start(&dir, Default::default()).await;
            let client = reqwest::Client::new();
            let body: String = (0..10_000)
                .map(|i| format!("{{\"user_id\":{},\"click_count\":1,\"country\":\"DE\",\"timestamp\":\"2024-06-01 12:00:00\"}}\n", i % 1000))
                .collect();
            let started = Instant::now();
            for _ in 0..20 {
                let r = client
                    .post(format!("{url}/v0/events?name=clicks&wait={wait}"))
                    .bearer_auth(support::ADMIN)
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success());
            }
            let secs = started.elapsed().as_secs_f64();
            println!("storage: ingest with wait={wait}: {:.0} rows/s (200k rows, 10k rows/request, 1 client)", 200_000.0 / secs);
            if wait {
                let figures = |rt: &petrel::runtime::Runtime| {
                    rt.describe_datasources().into_iter().find(|d| d.name == "clicks").unwrap().storage
                };
                let before = figures(&_runtime);
                // Let the compactor turn the segments into a Parquet part.
                tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
                let after = figures(&_runtime);
                println!(
                    "storage: bytes stored per row: {:.1} in log segments, {:.1} in Parquet parts ({} part(s)), against {:.1} bytes of NDJSON input",
                    (before.segment_bytes + before.part_bytes) as f64 / 200_000.0,
                    after.part_bytes as f64 / 200_000.0,
                    after.parts,
                    body.len() as f64 / 10_000.0
                );
            }
            let _ = std::fs::remove_dir_all(&dir);
        }

        // Restart-to-ready over a large log.
        let dir = support::project_copy("dataflows/clicks");
        {
            let (_, runtime) = support::start(&dir, Default::default()).await;
            let countries = ["US", "DE", "VN", "FR"];
            let batch = 100_000;
            let mut ts = 0;
            for b in 0..rows.div_ceil(batch) {
                let updates = (0..batch)
                    .map(|i| {
                        let n = b * batch + i;
                        (vec![Value::UInt((n % 10_000) as u64), Value::UInt(1), Value::str(countries[n % 4]), Value::DateTime(1_717_243_200)], 1isize)
                    })
                    .collect();
                ts = runtime.engine().insert("clicks", updates).unwrap();
            }
            runtime.wait_durable_and_visible("clicks", ts).await.unwrap();
            // Let the compactor catch up, as a server running a while would have.
            tokio::time::sleep(std::time::Duration::from_secs(3)).await;
            runtime.storage().stop().unwrap();
            runtime.engine().shutdown();
        }
        let stored = dir_size(&dir.join(".petrel/data"));
        let started = Instant::now();
        let (_, runtime) = support::start(&dir, Default::default()).await;
        let ready = started.elapsed().as_secs_f64();
        let result = runtime.query_pipe("top_countries", &Default::default()).await.unwrap();
        println!(
            "storage: restart to ready over {rows} rows ({:.0} MB stored, {} part(s), 3 endpoint views): {ready:.2}s; top country has {} clicks",
            stored as f64 / 1e6,
            runtime.describe_datasources().iter().find(|d| d.name == "clicks").map(|d| d.storage.parts).unwrap_or(0),
            result.rows.first().map(|r| r[1].to_text()).unwrap_or_default()
        );
        let _ = std::fs::remove_dir_all(&dir);
    });
}

fn dir_size(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
