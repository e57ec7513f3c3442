//! Petrel against ClickHouse on the same work: the same NDJSON batches of realistic web
//! analytics events are sent to Petrel (`POST /v0/events?wait=true`, one client, sequential)
//! and inserted into ClickHouse (chdb, ClickHouse in process, `INSERT .. FORMAT JSONEachRow`,
//! one client, sequential). Both answer the same endpoints; the answers must be equal.
//!
//! Workloads (each a project under `benches/projects/vs_clickhouse/`):
//! - `topk`: top 10 users by `sum(amount)` in one country (a parameterised top-k). ClickHouse
//!   inserts into a plain MergeTree and recomputes the query on each read. Pull latency at 1
//!   and 16 clients.
//! - `mix`: a web-analytics mix of four endpoints: top users per country (parameter),
//!   `uniqExact(user_id)` and `count()` per country, hits and `max(duration)` per minute, the
//!   top 20 paths with `count()`, `min(duration)`, `max(duration)`. ClickHouse keeps them the
//!   way a Tinybird user would: materialized views into SummingMergeTree and
//!   AggregatingMergeTree targets (`-State` on insert, `-Merge` on read).
//! - `uniq`: `uniqExact(user_id)` and `count()` per country over a plain MergeTree.
//! - `quantile`: p50/p90/p99 of `duration` per path (500 paths), as a status page shows
//!   latencies, over a plain MergeTree (ClickHouse answers with `quantileExactInclusive`, the
//!   exact form of Petrel's interpolating `quantile`).
//!
//! `cargo bench --bench vs_clickhouse` (env: ROWS default 200000, BATCH default 20000,
//! WORKLOAD=topk|mix|uniq|quantile|all default all, WORKERS default the number of cores, READS pull
//! requests per client default 200, ROUNDS how many times each workload runs, each time both
//! sides in a fresh process, default 1 (past one, every round's ingest rates and the median
//! ratio are printed), PETREL_PYTHON a Python with chdb, default
//! `~/.cache/petrel/tools/venv/bin/python` as installed by `scripts/test.sh`).
//!
//! The bench asserts nothing about time. It exits non-zero when an answer differs.

#[path = "events.rs"]
mod events;
#[path = "support.rs"]
mod support;

use events::COUNTRIES;
use support::{env, get_json};

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{json, Value as Json};

const WORKLOADS: [&str; 4] = ["topk", "mix", "uniq", "quantile"];

/// The ClickHouse table the events land in (the same columns and sorting key as
/// `events.datasource`).
const CH_EVENTS: &str = "CREATE TABLE events (
    timestamp DateTime, user_id UInt32, country LowCardinality(String), path String,
    duration UInt32, amount UInt32
) ENGINE = MergeTree ORDER BY (country, user_id)";

/// Writes the batches as NDJSON files; returns their paths and the total bytes.
fn write_batches(dir: &Path, rows: usize, batch: usize) -> (Vec<PathBuf>, usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut files = Vec::new();
    let mut bytes = 0;
    for body in events::batches(rows, batch) {
        let path = dir.join(format!("batch-{:05}.ndjson", files.len()));
        std::fs::write(&path, &body).unwrap();
        bytes += body.len();
        files.push(path);
    }
    (files, bytes)
}

/// One endpoint compared on both sides.
struct Endpoint {
    /// What the report calls it.
    label: String,
    /// Petrel: pipe name and query string.
    pipe: &'static str,
    params: String,
    /// ClickHouse: the same answer, with the same column names.
    sql: String,
    /// Whether the answer's order is defined (a total ORDER BY): then it is compared in order.
    ordered: bool,
    /// Pull latency: requests per Petrel client (0: none) and ClickHouse repetitions.
    reads: usize,
    ch_repeat: usize,
    /// Also measured at 16 concurrent Petrel clients.
    concurrent: bool,
}

struct Workload {
    name: &'static str,
    project: &'static str,
    /// How ClickHouse keeps it.
    ch_shape: &'static str,
    ch_setup: Vec<String>,
    endpoints: Vec<Endpoint>,
    /// Figures for the report (the groups the endpoints keep), counted by ClickHouse.
    stats: Vec<(&'static str, &'static str)>,
}

const USER_GROUPS: (&str, &str) = (
    "(country, user) groups",
    "SELECT count() FROM (SELECT DISTINCT country, user_id FROM events)",
);

fn top_users_sql(table_sql: &str, country: &str) -> String {
    format!(
        "SELECT user_id, {table_sql} AS total FROM {{table}} WHERE country = '{country}' \
         GROUP BY user_id ORDER BY total DESC, user_id LIMIT 10"
    )
}

fn workload(name: &str, reads: usize) -> Workload {
    let countries = COUNTRIES.iter().map(|c| c.0);
    match name {
        "topk" => Workload {
            name: "topk",
            project: "benches/projects/vs_clickhouse/topk",
            ch_shape: "MergeTree, query recomputed per read",
            ch_setup: vec![CH_EVENTS.into()],
            endpoints: countries
                .enumerate()
                .map(|(i, c)| Endpoint {
                    label: format!("top_users country={c}"),
                    pipe: "top_users",
                    params: format!("country={c}"),
                    sql: top_users_sql("sum(amount)", c).replace("{table}", "events"),
                    ordered: true,
                    reads: if i == 0 { reads } else { 0 },
                    ch_repeat: if i == 0 { 50 } else { 0 },
                    concurrent: i == 0,
                })
                .collect(),
            stats: vec![USER_GROUPS],
        },
        "mix" => {
            let mut endpoints: Vec<Endpoint> = countries
                .enumerate()
                .map(|(i, c)| Endpoint {
                    label: format!("top_users country={c}"),
                    pipe: "top_users",
                    params: format!("country={c}"),
                    sql: top_users_sql("sum(total)", c).replace("{table}", "mv_top_users"),
                    ordered: true,
                    reads: if i == 0 { reads } else { 0 },
                    ch_repeat: if i == 0 { 50 } else { 0 },
                    concurrent: i == 0,
                })
                .collect();
            endpoints.push(Endpoint {
                label: "country_stats".into(),
                pipe: "country_stats",
                params: String::new(),
                sql: "SELECT country, uniqExactMerge(users) AS users, countMerge(hits) AS hits \
                      FROM mv_country_stats GROUP BY country ORDER BY country"
                    .into(),
                ordered: true,
                reads,
                ch_repeat: 50,
                concurrent: false,
            });
            endpoints.push(Endpoint {
                label: "per_minute".into(),
                pipe: "per_minute",
                params: String::new(),
                sql: "SELECT minute, countMerge(hits) AS hits, maxMerge(max_duration) AS max_duration \
                      FROM mv_per_minute GROUP BY minute ORDER BY minute"
                    .into(),
                ordered: true,
                reads,
                ch_repeat: 50,
                concurrent: false,
            });
            endpoints.push(Endpoint {
                label: "top_paths".into(),
                pipe: "top_paths",
                params: String::new(),
                sql: "SELECT path, countMerge(hits) AS hits, minMerge(min_duration) AS min_duration, \
                      maxMerge(max_duration) AS max_duration FROM mv_top_paths GROUP BY path \
                      ORDER BY hits DESC, path LIMIT 20"
                    .into(),
                ordered: true,
                reads,
                ch_repeat: 50,
                concurrent: false,
            });
            Workload {
                name: "mix",
                project: "benches/projects/vs_clickhouse/mix",
                ch_shape: "MergeTree + 4 materialized views (Summing/AggregatingMergeTree)",
                ch_setup: vec![
                    CH_EVENTS.into(),
                    "CREATE TABLE mv_top_users (country LowCardinality(String), user_id UInt32, \
                     total UInt64) ENGINE = SummingMergeTree ORDER BY (country, user_id)"
                        .into(),
                    "CREATE MATERIALIZED VIEW mv_top_users_mv TO mv_top_users AS SELECT country, \
                     user_id, sum(amount) AS total FROM events GROUP BY country, user_id"
                        .into(),
                    "CREATE TABLE mv_country_stats (country LowCardinality(String), \
                     users AggregateFunction(uniqExact, UInt32), hits AggregateFunction(count)) \
                     ENGINE = AggregatingMergeTree ORDER BY country"
                        .into(),
                    "CREATE MATERIALIZED VIEW mv_country_stats_mv TO mv_country_stats AS SELECT \
                     country, uniqExactState(user_id) AS users, countState() AS hits FROM events \
                     GROUP BY country"
                        .into(),
                    "CREATE TABLE mv_per_minute (minute DateTime, hits AggregateFunction(count), \
                     max_duration AggregateFunction(max, UInt32)) ENGINE = AggregatingMergeTree \
                     ORDER BY minute"
                        .into(),
                    "CREATE MATERIALIZED VIEW mv_per_minute_mv TO mv_per_minute AS SELECT \
                     toStartOfMinute(timestamp) AS minute, countState() AS hits, \
                     maxState(duration) AS max_duration FROM events GROUP BY minute"
                        .into(),
                    "CREATE TABLE mv_top_paths (path String, hits AggregateFunction(count), \
                     min_duration AggregateFunction(min, UInt32), \
                     max_duration AggregateFunction(max, UInt32)) ENGINE = AggregatingMergeTree \
                     ORDER BY path"
                        .into(),
                    "CREATE MATERIALIZED VIEW mv_top_paths_mv TO mv_top_paths AS SELECT path, \
                     countState() AS hits, minState(duration) AS min_duration, \
                     maxState(duration) AS max_duration FROM events GROUP BY path"
                        .into(),
                ],
                endpoints,
                stats: vec![
                    USER_GROUPS,
                    (
                        "minutes",
                        "SELECT uniqExact(toStartOfMinute(timestamp)) FROM events",
                    ),
                    ("paths", "SELECT uniqExact(path) FROM events"),
                ],
            }
        }
        "uniq" => Workload {
            name: "uniq",
            project: "benches/projects/vs_clickhouse/uniq",
            ch_shape: "MergeTree, query recomputed per read",
            ch_setup: vec![CH_EVENTS.into()],
            endpoints: vec![Endpoint {
                label: "country_uniq".into(),
                pipe: "country_uniq",
                params: String::new(),
                sql: "SELECT country, uniqExact(user_id) AS users, count() AS hits FROM events \
                      GROUP BY country"
                    .into(),
                ordered: false,
                reads,
                ch_repeat: 50,
                concurrent: false,
            }],
            stats: vec![
                USER_GROUPS,
                ("countries", "SELECT uniqExact(country) FROM events"),
            ],
        },
        "quantile" => Workload {
            name: "quantile",
            project: "benches/projects/vs_clickhouse/quantile",
            ch_shape: "MergeTree, query recomputed per read",
            ch_setup: vec![CH_EVENTS.into()],
            endpoints: vec![Endpoint {
                label: "path_latency".into(),
                pipe: "path_latency",
                params: String::new(),
                // ClickHouse's `quantile` samples; its exact interpolating form is this one.
                sql: "SELECT path, count() AS hits, \
                      quantileExactInclusive(0.5)(duration) AS p50, \
                      quantileExactInclusive(0.9)(duration) AS p90, \
                      quantileExactInclusive(0.99)(duration) AS p99 \
                      FROM events GROUP BY path ORDER BY path"
                    .into(),
                ordered: true,
                reads,
                ch_repeat: 50,
                concurrent: false,
            }],
            stats: vec![("paths", "SELECT uniqExact(path) FROM events")],
        },
        other => panic!("unknown WORKLOAD {other:?}: topk, mix, uniq, quantile or all"),
    }
}

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("PETREL_PYTHON") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    PathBuf::from(home).join(".cache/petrel/tools/venv/bin/python")
}

/// Runs the ClickHouse side: setup, timed inserts of the batch files, then the queries.
fn clickhouse(w: &Workload, files: &[PathBuf]) -> Json {
    let python = python();
    let ok = Command::new(&python)
        .args(["-c", "import chdb"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!(
            "vs_clickhouse: no Python with chdb at {} (set PETREL_PYTHON, or run scripts/test.sh, \
             or: python3 -m venv ~/.cache/petrel/tools/venv && \
             ~/.cache/petrel/tools/venv/bin/pip install 'chdb>=3')",
            python.display()
        );
        std::process::exit(2);
    }
    let spec = json!({
        "setup": w.ch_setup,
        "table": "events",
        "files": files.iter().map(|f| f.to_string_lossy()).collect::<Vec<_>>(),
        "queries": w.endpoints.iter().map(|e| json!({
            "name": e.label, "sql": e.sql, "repeat": e.ch_repeat,
        })).collect::<Vec<_>>(),
        "stats": w.stats.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
    });
    let script = support::repo().join("benches/clickhouse_driver.py");
    let mut child = Command::new(&python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the ClickHouse driver starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(spec.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the ClickHouse driver failed");
    serde_json::from_slice(&out.stdout).expect("the ClickHouse driver prints JSON")
}

struct PetrelSide {
    seconds: f64,
    /// CPU seconds the server spent while ingesting (the process's, less the bench client's):
    /// a steadier figure than the rate on a machine that runs other things.
    cpu_seconds: f64,
    /// The same, until the process went quiet after the ingest (background storage work in
    /// full).
    cpu_until_quiet: f64,
    /// Resident memory once quiet.
    rss_quiet: u64,
    /// CPU seconds the bench's client spent reading and sending the batches (not counted).
    client_cpu: f64,
    accepted: u64,
    rss: u64,
    results: BTreeMap<String, Json>,
    /// Per endpoint label: sorted latencies (ms) at 1 client and at 16 clients.
    read_1: BTreeMap<String, Vec<f64>>,
    read_16: BTreeMap<String, Vec<f64>>,
}

async fn pull_latency(url: &str, clients: usize, requests: usize) -> Vec<f64> {
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut lat = Vec::with_capacity(requests);
            // Each client's first request opens its connection: not timed, or the 16 clients'
            // 16 connections alone would be the p99 of 800 requests.
            client
                .get(&url)
                .bearer_auth(support::ADMIN)
                .send()
                .await
                .unwrap();
            for _ in 0..requests {
                let t = Instant::now();
                let r = client
                    .get(&url)
                    .bearer_auth(support::ADMIN)
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success());
                let body = r.bytes().await.unwrap();
                assert!(body.starts_with(b"{"), "not a JSON answer");
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
    all
}

/// Posts the batch files one after the other (`wait=true`) from a thread of their own, with
/// its own single-threaded runtime, so that the client's CPU (reading each file, sending it)
/// is that thread's alone. Returns the seconds the requests took, the rows accepted and the
/// client thread's CPU seconds.
fn send_batches(url: &str, files: &[PathBuf]) -> (f64, u64, f64) {
    let (url, files) = (url.to_string(), files.to_vec());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let cpu_before = support::thread_cpu_seconds();
        let (seconds, accepted) = rt.block_on(async {
            let client = reqwest::Client::new();
            let (mut seconds, mut accepted) = (0.0, 0u64);
            for f in &files {
                let body = std::fs::read(f).unwrap();
                let (took, landed) = support::post_batch(&client, &url, "events", body).await;
                seconds += took;
                accepted += landed;
            }
            (seconds, accepted)
        });
        (
            seconds,
            accepted,
            support::thread_cpu_seconds() - cpu_before,
        )
    })
    .join()
    .unwrap()
}

fn petrel(w: &Workload, files: &[PathBuf], workers: usize) -> PetrelSide {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let dir = support::project_copy(w.project);
        let config = petrel::runtime::RuntimeConfig {
            engine: petrel_engine::EngineConfig {
                workers,
                ..Default::default()
            },
            ..Default::default()
        };
        let (url, _runtime) = support::start(&dir, config).await;
        let client = reqwest::Client::new();
        // Endpoints are installed before the data arrives, as in production.
        for e in &w.endpoints {
            get_json(
                &client,
                &format!("{url}/v0/pipes/{}.json?{}", e.pipe, e.params),
            )
            .await;
        }
        let cpu_before = support::cpu_seconds();
        let (seconds, accepted, client_cpu) = send_batches(&url, files);
        // The server's CPU: the process's, less what the bench's own client spent reading
        // the batch files and sending them (ClickHouse's figure leaves out its driver's file
        // reads too).
        let cpu_seconds = support::cpu_seconds() - cpu_before - client_cpu;
        let rss = support::rss_bytes();
        // Storage keeps working after the last acknowledgement (compaction into parts and
        // merges, niced): wait until the process is quiet, so that work counts in full,
        // whenever it ran.
        let last = support::wait_quiet(std::time::Duration::from_secs(1), 0.05).await;
        let cpu_until_quiet = last - cpu_before - client_cpu;
        let rss_quiet = support::rss_bytes();
        let mut results = BTreeMap::new();
        for e in &w.endpoints {
            let answer = get_json(
                &client,
                &format!("{url}/v0/pipes/{}.json?{}", e.pipe, e.params),
            )
            .await;
            results.insert(e.label.clone(), answer["data"].clone());
        }
        let mut read_1 = BTreeMap::new();
        let mut read_16 = BTreeMap::new();
        for e in w.endpoints.iter().filter(|e| e.reads > 0) {
            let u = format!("{url}/v0/pipes/{}.json?{}", e.pipe, e.params);
            pull_latency(&u, 1, 20).await; // warm-up
            read_1.insert(e.label.clone(), pull_latency(&u, 1, e.reads).await);
            if e.concurrent {
                read_16.insert(e.label.clone(), pull_latency(&u, 16, e.reads).await);
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        PetrelSide {
            seconds,
            cpu_seconds,
            cpu_until_quiet,
            rss_quiet,
            client_cpu,
            accepted,
            rss,
            results,
            read_1,
            read_16,
        }
    })
}

/// A JSON value as a number, when it is one (Petrel may quote 64-bit integers).
fn number(v: &Json) -> Option<f64> {
    match v {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn values_equal(a: &Json, b: &Json) -> bool {
    if a == b {
        return true;
    }
    match (number(a), number(b)) {
        (Some(x), Some(y)) if a.is_number() || b.is_number() => {
            x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        _ => false,
    }
}

fn rows_equal(a: &Json, b: &Json) -> bool {
    match (a.as_object(), b.as_object()) {
        (Some(x), Some(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| values_equal(v, w)))
        }
        _ => false,
    }
}

/// A sort key for order-insensitive comparison: columns by name, numbers normalised.
fn row_key(row: &Json) -> String {
    let mut cols: Vec<(String, String)> = row
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    let s = match v {
                        Json::Number(_) => format!("{:.9e}", number(v).unwrap_or(0.0)),
                        Json::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), s)
                })
                .collect()
        })
        .unwrap_or_default();
    cols.sort();
    format!("{cols:?}")
}

/// Compares an endpoint's answers; returns a description of the difference.
fn compare(e: &Endpoint, petrel: &Json, ch: &Json) -> Option<String> {
    let mut p: Vec<Json> = petrel.as_array().cloned().unwrap_or_default();
    let mut c: Vec<Json> = ch.as_array().cloned().unwrap_or_default();
    if !e.ordered {
        p.sort_by_key(row_key);
        c.sort_by_key(row_key);
    }
    let mut diff = Vec::new();
    if p.len() != c.len() {
        diff.push(format!(
            "  {} rows from Petrel, {} from ClickHouse",
            p.len(),
            c.len()
        ));
    }
    for i in 0..p.len().max(c.len()) {
        let (a, b) = (p.get(i), c.get(i));
        let same = matches!((a, b), (Some(a), Some(b)) if rows_equal(a, b));
        if !same && diff.len() < 12 {
            let show = |r: Option<&Json>| r.map(|r| r.to_string()).unwrap_or_else(|| "-".into());
            diff.push(format!(
                "  row {i}: Petrel {} | ClickHouse {}",
                show(a),
                show(b)
            ));
        }
    }
    if p.is_empty() && c.is_empty() {
        diff.push("  both answers are empty".into());
    }
    (!diff.is_empty()).then(|| diff.join("\n"))
}

fn ms_pair(sorted: &[f64]) -> String {
    format!(
        "{:.2} / {:.2} ms",
        support::percentile(sorted, 0.5),
        support::percentile(sorted, 0.99)
    )
}

/// Runs one workload; returns whether every answer was equal.
fn run(name: &str) -> bool {
    let rows = env::<usize>("ROWS", 200_000);
    let batch = env::<usize>("BATCH", 20_000).max(1);
    let reads = env::<usize>("READS", 200);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let workers = env::<usize>("WORKERS", cores);
    let w = workload(name, reads);

    let data = std::env::temp_dir().join(format!(
        "petrel-vs-clickhouse-{}-{}",
        w.name,
        std::process::id()
    ));
    let (files, bytes) = write_batches(&data, rows, batch);

    // ClickHouse first, in its own process, so the two never share the cores.
    let ch = clickhouse(&w, &files);
    let p = petrel(&w, &files, workers);
    let _ = std::fs::remove_dir_all(&data);

    let ch_secs = ch["insert_seconds"].as_f64().unwrap_or(f64::NAN);
    let ch_rows = ch["rows"].as_u64().unwrap_or(0);
    let p_rate = rows as f64 / p.seconds;
    let ch_rate = rows as f64 / ch_secs;
    let ch_reads = |label: &str| -> Vec<f64> {
        let mut v: Vec<f64> = ch["read_ms"][label]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
            .unwrap_or_default();
        v.sort_by(|a, b| a.total_cmp(b));
        v
    };

    println!();
    println!(
        "vs_clickhouse: {} — {rows} rows ({:.0} bytes/row NDJSON) in batches of {batch}, one client, sequential",
        w.name,
        bytes as f64 / rows.max(1) as f64
    );
    println!(
        "  Petrel: POST /v0/events?wait=true, {workers} worker(s); ClickHouse {} (chdb {}): {}",
        ch["version"].as_str().unwrap_or("?"),
        ch["chdb"].as_str().unwrap_or("?"),
        w.ch_shape
    );
    println!(
        "  {:<40} {:>20} {:>20} {:>14}",
        "", "Petrel", "ClickHouse", "ratio"
    );
    println!(
        "  {:<40} {:>20} {:>20} {:>14}",
        "ingest rows/s",
        format!("{p_rate:.0}"),
        format!("{ch_rate:.0}"),
        format!("{:.2}x", p_rate / ch_rate)
    );
    println!("  {:<40} {:>20} {:>20}", "rows stored", p.accepted, ch_rows);
    let ch_cpu = ch["insert_cpu_seconds"].as_f64().unwrap_or(f64::NAN);
    // Microseconds of Petrel's CPU per accepted row.
    let p_per_row = |seconds: f64| seconds * 1e6 / p.accepted.max(1) as f64;
    let p_cpu_row = p_per_row(p.cpu_seconds);
    let ch_cpu_row = ch_cpu * 1e6 / ch_rows.max(1) as f64;
    println!(
        "  {:<40} {:>20} {:>20} {:>14}",
        "CPU per row while ingesting",
        format!("{p_cpu_row:.2} µs"),
        format!("{ch_cpu_row:.2} µs"),
        format!("{:.2}x", ch_cpu_row / p_cpu_row)
    );
    println!(
        "  {:<40} {:>20}",
        "  with storage work until quiet",
        format!("{:.2} µs", p_per_row(p.cpu_until_quiet))
    );
    println!(
        "  {:<40} {:>20}",
        "  bench client (reads, sends; not counted)",
        format!("{:.2} µs", p_per_row(p.client_cpu))
    );
    for e in w.endpoints.iter().filter(|e| e.reads > 0) {
        let p1 = &p.read_1[&e.label];
        let c1 = ch_reads(&e.label);
        let speedup = support::percentile(&c1, 0.5) / support::percentile(p1, 0.5);
        println!(
            "  {:<40} {:>20} {:>20} {:>14}",
            format!("read {} p50/p99, 1 client", e.label),
            ms_pair(p1),
            ms_pair(&c1),
            format!("{speedup:.1}x faster")
        );
        if let Some(p16) = p.read_16.get(&e.label) {
            println!(
                "  {:<40} {:>20} {:>20}",
                format!("read {} p50/p99, 16 clients", e.label),
                ms_pair(p16),
                "-"
            );
        }
    }
    println!(
        "  {:<40} {:>20}",
        "Petrel RSS after ingest",
        format!("{:.1} MB", p.rss as f64 / 1e6)
    );
    println!(
        "  {:<40} {:>20}",
        "  once storage work is done",
        format!("{:.1} MB", p.rss_quiet as f64 / 1e6)
    );
    let groups: Vec<String> = w
        .stats
        .iter()
        .map(|(k, _)| format!("{} {k}", ch["stats"][*k]))
        .collect();
    println!("  groups: {}", groups.join(", "));
    println!("  ratio: ingest is Petrel/ClickHouse rows/s and CPU is ClickHouse/Petrel µs per row (above 1: Petrel faster or cheaper); reads are ClickHouse p50 / Petrel p50");

    let mut equal = p.accepted == rows as u64 && ch_rows == rows as u64;
    if !equal {
        println!(
            "  rows: sent {rows}, Petrel accepted {}, ClickHouse stored {ch_rows}",
            p.accepted
        );
    }
    for e in &w.endpoints {
        let empty = Json::Null;
        let petrel = p.results.get(&e.label).unwrap_or(&empty);
        if let Some(d) = compare(e, petrel, &ch["results"][&e.label]) {
            equal = false;
            println!("  answers differ: {}\n{d}", e.label);
        }
    }
    println!(
        "  answers equal: {} ({} endpoint answers compared)",
        if equal { "yes" } else { "NO" },
        w.endpoints.len()
    );
    equal
}

/// Runs workload `name` `ROUNDS` times, each round both sides in a process of its own (a
/// clean heap, no server left from the round before): on a shared machine one run can land
/// in a slow minute for one side only. Prints the first round in full, then every round's
/// ingest rates and the median ratio. False when a round's answers differ.
fn rounds(name: &str) -> bool {
    let rounds = env::<usize>("ROUNDS", 1);
    let exe = std::env::current_exe().unwrap();
    let (mut ok, mut rates) = (true, Vec::new());
    for round in 0..rounds {
        let out = Command::new(&exe)
            .args(std::env::args().skip(1))
            .env("WORKLOAD", name)
            .env("ROUNDS", "1")
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        ok &= out.status.success();
        let text = String::from_utf8_lossy(&out.stdout);
        if round == 0 {
            print!("{text}");
        }
        // `ingest rows/s  <Petrel>  <ClickHouse>  <ratio>x`
        let rate = text.lines().find_map(|l| {
            let mut f = l.trim().strip_prefix("ingest rows/s")?.split_whitespace();
            Some((
                f.next()?.parse::<f64>().ok()?,
                f.next()?.parse::<f64>().ok()?,
            ))
        });
        rates.extend(rate);
    }
    let each: Vec<String> = rates
        .iter()
        .map(|(p, c)| format!("{:.0}k / {:.0}k = {:.2}x", p / 1e3, c / 1e3, p / c))
        .collect();
    let mut ratios: Vec<f64> = rates.iter().map(|(p, c)| p / c).collect();
    ratios.sort_by(f64::total_cmp);
    println!(
        "  ingest rows/s by round (Petrel / ClickHouse): {}",
        each.join(", ")
    );
    if let (Some(least), Some(most)) = (ratios.first(), ratios.last()) {
        println!(
            "  ingest ratio over {} rounds: median {:.2}x, least {least:.2}x, most {most:.2}x",
            ratios.len(),
            support::percentile(&ratios, 0.5)
        );
    }
    ok
}

fn main() {
    let which = std::env::var("WORKLOAD").unwrap_or_else(|_| "all".into());
    let ok = if which == "all" {
        // Each workload in its own process: a clean heap for the RSS figure, and no
        // leftover background work from the previous server.
        let exe = std::env::current_exe().unwrap();
        let mut ok = true;
        for w in WORKLOADS {
            let status = Command::new(&exe)
                .args(std::env::args().skip(1))
                .env("WORKLOAD", w)
                .status()
                .unwrap();
            ok &= status.success();
        }
        ok
    } else if env::<usize>("ROUNDS", 1) > 1 {
        rounds(&which)
    } else {
        run(&which)
    };
    if !ok {
        eprintln!("vs_clickhouse: answers differ (see above)");
    }
    std::process::exit(if ok { 0 } else { 1 });
}
