//! Crash safety of acknowledged writes: the server is SIGKILLed at random moments during
//! sustained ingest, many rounds, on the local folder and on a real S3-compatible server;
//! every row acknowledged with 200 (`wait=true`) is present after each restart, none appears
//! twice, and the endpoint equals a from-scratch computation over the stored rows.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{client, get, S3Server, Server, ADMIN};
use rand::{Rng, SeedableRng};
use serde_json::Value;

#[test]
fn acknowledged_rows_survive_sigkill() {
    let server = Server::start("dataflows/clicks", &[]);
    let server = crash_rounds(server, 6, 7, &|dir| Server::start_in(dir, &[]));
    assert!(server.dir.join(".petrel/data/tables/clicks/log").exists());
}

#[test]
fn acknowledged_rows_survive_sigkill_on_s3() {
    let s3 = S3Server::start("petrel-crash");
    let url = s3.url("crash");
    let env = s3.env();
    let start = |dir| Server::run_env(&["local", "start"], dir, &["--storage", &url], &env);
    let dir = common::copy_project_files("dataflows/clicks", "s3-crash");
    let server = crash_rounds(start(dir), 5, 11, &start);
    // The data lives in the bucket alone: nothing was written to the local data folder.
    assert!(!server.dir.join(".petrel/data").exists());
    // Segments were compacted into Parquet parts along the way.
    let ds = get(&server, "/v0/datasources");
    let clicks = ds["datasources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "clicks")
        .unwrap()
        .clone();
    assert!(
        clicks["storage"]["parts"].as_u64().unwrap() >= 1,
        "{clicks}"
    );
}

/// Runs `rounds` rounds of sustained `wait=true` ingest ended by a SIGKILL at a random
/// moment, restarting with `restart`, and checks the stored rows and the endpoint after each.
fn crash_rounds(
    mut server: Server,
    rounds: usize,
    seed: u64,
    restart: &dyn Fn(std::path::PathBuf) -> Server,
) -> Server {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let acked: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let mut next_id = 0u64;
    for round in 0..rounds {
        let url = server.url.clone();
        let stop_at = Instant::now() + Duration::from_millis(rng.random_range(200..900));
        let (acked2, start) = (acked.clone(), next_id);
        let writer = std::thread::spawn(move || {
            let c = client();
            let mut id = start;
            while Instant::now() < stop_at + Duration::from_millis(500) {
                let ids: Vec<u64> = (id..id + 200).collect();
                id += 200;
                let body: String = ids
                    .iter()
                    .map(|i| {
                        format!(
                            "{{\"user_id\":{},\"click_count\":{},\"country\":\"C{}\"}}\n",
                            i,
                            i % 7 + 1,
                            i % 5
                        )
                    })
                    .collect();
                match c
                    .post(format!("{url}/v0/events?name=clicks&wait=true"))
                    .bearer_auth(ADMIN)
                    .body(body)
                    .send()
                {
                    Ok(r) if r.status() == 200 => acked2.lock().unwrap().extend(ids),
                    _ => break, // the server is gone: this batch was not acknowledged
                }
            }
            id
        });
        std::thread::sleep(stop_at.saturating_duration_since(Instant::now()));
        let dir = server.stop(); // SIGKILL
        next_id = writer.join().unwrap();
        server = restart(dir);
        // Every acknowledged row is there, once.
        let r: Value = client()
            .get(format!("{}/v0/sql", server.url))
            .bearer_auth(ADMIN)
            .query(&[(
                "q",
                "SELECT user_id, click_count, country FROM clicks FORMAT JSON",
            )])
            .send()
            .unwrap()
            .json()
            .unwrap();
        let rows = r["data"].as_array().unwrap();
        let mut seen = BTreeSet::new();
        let mut per_country: BTreeMap<String, u64> = BTreeMap::new();
        for row in rows {
            let id = row["user_id"].as_u64().unwrap();
            assert!(seen.insert(id), "round {round}: user {id} stored twice");
            *per_country
                .entry(row["country"].as_str().unwrap().to_string())
                .or_default() += row["click_count"].as_u64().unwrap();
        }
        let acked_now = acked.lock().unwrap().clone();
        let missing: Vec<&u64> = acked_now.difference(&seen).take(5).collect();
        assert!(
            missing.is_empty(),
            "round {round}: acknowledged rows lost after SIGKILL: {missing:?}"
        );
        assert!(!acked_now.is_empty());
        // The maintained endpoint equals a from-scratch sum over the stored rows.
        let top: Value = client()
            .get(format!(
                "{}/v0/pipes/top_countries.json?limit=100",
                server.url
            ))
            .bearer_auth(ADMIN)
            .send()
            .unwrap()
            .json()
            .unwrap();
        for row in top["data"].as_array().unwrap() {
            let country = row["country"].as_str().unwrap();
            assert_eq!(
                row["clicks"].as_u64(),
                per_country.get(country).copied(),
                "round {round}: {country}"
            );
        }
        assert_eq!(top["rows"].as_u64().unwrap() as usize, per_country.len());
    }
    server
}
