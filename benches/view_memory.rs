//! Memory follows view state: a count()/sum() per key view over 10M rows and 1k keys keeps
//! the process's memory near the size of 1k groups, not of 10M rows.
//!
//! At each tenth of the rows it prints the resident memory, and the heap (bytes allocated and
//! not freed) once the storage's background work is done: the heap is what the process keeps,
//! resident memory also holds the pages the allocator kept after transient work (a batch in
//! flight, a compaction, a merge). The figure is the heap's growth per row from a tenth of
//! the rows to the end.
//!
//! `cargo bench --bench view_memory` (env: ROWS, KEYS).

#[path = "support.rs"]
mod support;

use std::time::Instant;

use petrel_value::Value;

fn main() {
    support::count_heap();
    let rows: usize = std::env::var("ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let keys: usize = std::env::var("KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let dir = std::env::temp_dir().join(format!("petrel-bench-memory-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("pipes")).unwrap();
        std::fs::write(dir.join("t.datasource"), "SCHEMA >\n    `k` UInt32,\n    `v` Int64\n").unwrap();
        std::fs::write(
            dir.join("pipes/per_key.pipe"),
            "NODE n\nSQL >\n    SELECT k, count() AS c, sum(v) AS s FROM t GROUP BY k\n\nTYPE endpoint\n",
        )
        .unwrap();
        // A short change-log retention: the log (history for resuming subscribers) is bounded
        // by time, and this measures the maintained state itself.
        let config = petrel::runtime::RuntimeConfig { retention_ms: 1_000, ..Default::default() };
        let (_, runtime) = support::start(&dir, config).await;
        let before = support::rss_bytes();
        let started = Instant::now();
        let batch = 100_000;
        let mut ts = 0;
        let mut at_tenth = (0, 0);
        let mut busy = 0.0;
        for b in 0..rows.div_ceil(batch) {
            if b > 0 && b % (rows.div_ceil(batch) / 10).max(1) == 0 {
                let rss = support::rss_bytes();
                let waited = Instant::now();
                support::wait_quiet(std::time::Duration::from_millis(500), 0.015).await;
                busy += waited.elapsed().as_secs_f64();
                let heap = support::heap_bytes();
                if b == rows.div_ceil(batch) / 10 {
                    at_tenth = (rss, heap);
                }
                println!(
                    "  after {} rows: RSS {:.1} MB; heap once storage is quiet {:.1} MB",
                    b * batch,
                    rss as f64 / 1e6,
                    heap as f64 / 1e6
                );
            }
            let updates = (0..batch)
                .map(|i| {
                    let n = b * batch + i;
                    (vec![Value::UInt((n % keys) as u64), Value::Int((n % 100) as i64)], 1isize)
                })
                .collect();
            ts = runtime.engine().insert("t", updates).unwrap();
            // One batch in flight at a time, so RSS shows retained state, not queued input.
            runtime.wait_durable_and_visible("t", ts).await.unwrap();
        }
        runtime.wait_durable_and_visible("t", ts).await.unwrap();
        let secs = started.elapsed().as_secs_f64() - busy;
        let result = runtime.query_pipe("per_key", &Default::default()).await.unwrap();
        let rss = support::rss_bytes();
        support::wait_quiet(std::time::Duration::from_millis(500), 0.015).await;
        let heap = support::heap_bytes();
        println!(
            "view memory: {rows} rows into {} groups in {secs:.1}s ({:.0} rows/s, without the waits for quiet storage)",
            result.rows.len(),
            rows as f64 / secs,
        );
        println!(
            "  RSS {:.1} MB at start, {:.1} MB after {} rows, {:.1} MB after {rows} rows",
            before as f64 / 1e6,
            at_tenth.0 as f64 / 1e6,
            rows / 10,
            rss as f64 / 1e6,
        );
        println!(
            "  heap once storage is quiet: {:.1} MB after {} rows, {:.1} MB after {rows} rows: {:.2} bytes per row over the last 90%",
            at_tenth.1 as f64 / 1e6,
            rows / 10,
            heap as f64 / 1e6,
            (heap - at_tenth.1) as f64 / (rows - rows / 10) as f64
        );
        let _ = std::fs::remove_dir_all(&dir);
    });
}
