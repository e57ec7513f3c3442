//! Storage figures: Events API ingest with `wait=true` (durable: group-committed segment
//! objects, fsynced) against without; bytes stored per row (log segments, then Parquet parts)
//! against the NDJSON input; restart to ready over 10M stored rows, from view snapshots and
//! by replaying the parts.
//!
//! `cargo bench --bench storage` (env: ROWS for the restart figures, default 10M; PHASES, a
//! comma-separated choice of `ingest`, `bytes` and `restart`, default all three; WORKERS,
//! default the number of cores, as `petrel local start` runs).

#[path = "support.rs"]
mod support;

use support::env;

use std::time::{Duration, Instant};

use petrel::runtime::{Runtime, RuntimeConfig};
use petrel_value::Value;

const COUNTRIES: [&str; 12] = [
    "US", "DE", "VN", "FR", "BR", "IN", "JP", "GB", "ES", "IT", "MX", "CA",
];

/// A deterministic spread of users, counts, countries and times (a day of clicks).
fn event(n: u64) -> (u64, u64, &'static str, i64) {
    let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (
        (h >> 40) % 100_000,
        1 + (h >> 20) % 9,
        COUNTRIES[((h >> 8) % COUNTRIES.len() as u64) as usize],
        1_717_200_000 + (n as i64 * 86_400 / 1_000_000),
    )
}

fn ndjson(from: u64, rows: u64) -> String {
    (from..from + rows)
        .map(|n| {
            let (user, clicks, country, ts) = event(n);
            let t = petrel_value::Value::DateTime(ts).to_text();
            format!("{{\"user_id\":{user},\"click_count\":{clicks},\"country\":\"{country}\",\"timestamp\":\"{t}\"}}\n")
        })
        .collect()
}

fn figures(rt: &Runtime) -> petrel::storage::TableFigures {
    rt.describe_datasources()
        .into_iter()
        .find(|d| d.name == "clicks")
        .map(|d| d.storage)
        .unwrap_or_default()
}

/// Stops a runtime's background work so the next one owns its storage alone.
fn stop(rt: &Runtime) {
    rt.storage().stop().unwrap();
    rt.engine().shutdown();
}

fn main() {
    let rows = env::<usize>("ROWS", 10_000_000) as u64;
    let phases = std::env::var("PHASES").unwrap_or_else(|_| "ingest,bytes,restart".into());
    let phase = |name: &str| phases.split(',').any(|p| p.trim() == name);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    // Every server below runs as `petrel local start` would: one worker per core.
    let base = RuntimeConfig {
        engine: petrel_engine::EngineConfig {
            workers: env("WORKERS", cores),
            ..Default::default()
        },
        ..Default::default()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        // wait=true against without: 1M rows in 10k-row requests, one client.
        let requests = 100u64;
        for wait in [false, true].into_iter().filter(|_| phase("ingest")) {
            let dir = support::project_copy("dataflows/clicks");
            let (url, runtime) = support::start(&dir, base.clone()).await;
            let client = reqwest::Client::new();
            let bodies: Vec<String> = (0..requests).map(|r| ndjson(r * 10_000, 10_000)).collect();
            let started = Instant::now();
            for body in bodies {
                let r = client
                    .post(format!("{url}/v0/events?name=clicks&wait={wait}"))
                    .bearer_auth(support::ADMIN)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success());
            }
            let secs = started.elapsed().as_secs_f64();
            let total = requests * 10_000;
            println!("storage: ingest with wait={wait}: {:.0} rows/s ({total} rows, 10k rows/request, 1 client)", total as f64 / secs);
            stop(&runtime);
            let _ = std::fs::remove_dir_all(&dir);
        }

        // Bytes per row: the same rows into log segments (compaction held back), then parts.
        if phase("bytes") {
            let dir = support::project_copy("dataflows/clicks");
            let config = RuntimeConfig {
                storage: petrel::storage::StorageConfig {
                    compact_rows: u64::MAX,
                    compact_segments: usize::MAX,
                    ..Default::default()
                },
                ..base.clone()
            };
            let (url, runtime) = support::start(&dir, config).await;
            let client = reqwest::Client::new();
            let total = requests * 10_000;
            let mut input_bytes = 0;
            for r in 0..requests {
                let body = ndjson(r * 10_000, 10_000);
                input_bytes += body.len();
                let resp = client
                    .post(format!("{url}/v0/events?name=clicks&wait=true"))
                    .bearer_auth(support::ADMIN)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert!(resp.status().is_success());
            }
            {
                let before = figures(&runtime);
                let segment_bytes = before.segment_bytes;
                runtime.storage().compact_now().unwrap();
                let after = figures(&runtime);
                let parts = after.part_bytes;
                println!(
                    "storage: bytes per row: {:.1} as NDJSON input, {:.1} in log segments, {:.1} in Parquet parts ({} part(s) after compaction)",
                    input_bytes as f64 / total as f64,
                    segment_bytes as f64 / total as f64,
                    parts as f64 / total as f64,
                    after.parts,
                );
            }
            stop(&runtime);
            let _ = std::fs::remove_dir_all(&dir);
        }

        // Restart to ready over a large table.
        if !phase("restart") {
            return;
        }
        let dir = support::project_copy("dataflows/clicks");
        let snapshots = RuntimeConfig { snapshot_interval_ms: 1_000, ..base.clone() };
        {
            let (_, runtime) = support::start(&dir, snapshots.clone()).await;
            let batch = 100_000u64;
            let mut ts = 0;
            for b in 0..rows.div_ceil(batch) {
                let updates = (b * batch..(b + 1) * batch)
                    .map(|n| {
                        let (user, clicks, country, t) = event(n);
                        (vec![Value::UInt(user), Value::UInt(clicks), Value::str(country), Value::DateTime(t)], 1isize)
                    })
                    .collect();
                ts = runtime.engine().insert("clicks", updates).unwrap();
                // At most about a million rows in flight, as a server's admission keeps
                // writers: queued whole, the load alone held 8.4-8.8 GB.
                if b % 10 == 9 {
                    runtime.wait_durable_and_visible("clicks", ts).await.unwrap();
                }
            }
            runtime.wait_durable_and_visible("clicks", ts).await.unwrap();
            // Let compaction and a round of view snapshots happen, as on a running server.
            tokio::time::sleep(Duration::from_secs(4)).await;
            stop(&runtime);
        }
        println!("storage: {rows} rows stored; restarting");
        let expected = {
            let started = Instant::now();
            let (_, runtime) = support::start(&dir, RuntimeConfig { snapshot_interval_ms: 0, ..base.clone() }).await;
            let ready = started.elapsed().as_secs_f64();
            let restored = runtime.describe_views().iter().filter(|v| v.restored_from.is_some()).count();
            println!(
                "storage: restart with view snapshots over {} stored rows ({:.0} MB of parts, {} part(s)): serving after {ready:.2}s ({restored} of 3 views restored)",
                runtime.row_count("clicks").unwrap_or(0),
                figures(&runtime).part_bytes as f64 / 1e6,
                figures(&runtime).parts,
            );
            let caught_up = Instant::now();
            while runtime.describe_views().iter().any(|v| v.catching_up) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            println!("storage: ... views caught up with their snapshots {:.2}s later", caught_up.elapsed().as_secs_f64());
            let result = runtime.query_pipe("top_countries", &Default::default()).await.unwrap();
            stop(&runtime);
            result.rows.first().map(|r| r[1].to_text()).unwrap_or_default()
        };
        // Without snapshots, with history collapsed (a 1 s change-log retention), every view
        // replays the whole table.
        let _ = std::fs::remove_dir_all(dir.join(".petrel/data/views"));
        let started = Instant::now();
        let replay = RuntimeConfig { snapshot_interval_ms: 0, retention_ms: 1_000, ..base.clone() };
        let (_, runtime) = support::start(&dir, replay).await;
        let ready = started.elapsed().as_secs_f64();
        let result = runtime.query_pipe("top_countries", &Default::default()).await.unwrap();
        let top = result.rows.first().map(|r| r[1].to_text()).unwrap_or_default();
        assert_eq!(top, expected, "the replayed view equals the restored one");
        println!("storage: restart without snapshots (replaying {} rows into 3 endpoint views, history collapsed): ready after {ready:.2}s; top country has {top} clicks", runtime.row_count("clicks").unwrap_or(0));
        stop(&runtime);
        let _ = std::fs::remove_dir_all(&dir);
    });
}
