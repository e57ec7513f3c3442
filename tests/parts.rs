//! Parts on storage are Parquet files other engines read as they are: ClickHouse (chdb) reads
//! every row a compaction wrote, with its values, log position and multiplicity, from the
//! part files of a running server (LZ4-compressed since session 46, docs/storage.md).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::Server;
use serde_json::{json, Value};

/// The rows of batch `b` (200 users of their own, so every row tells its batch apart).
fn batch(b: u64) -> Vec<(u64, u64, String)> {
    (b * 200..(b + 1) * 200)
        .map(|user| (user, user % 7 + 1, format!("C{}", user % 5)))
        .collect()
}

#[test]
fn clickhouse_reads_every_row_of_a_compacted_part() {
    let server = Server::start("dataflows/clicks", &[]);
    // 17 `wait=true` writes are 17 log segments: past the 16 that make a compaction.
    let mut sent = BTreeMap::new();
    for b in 0..17 {
        let rows = batch(b);
        let body: String = rows
            .iter()
            .map(|(user, clicks, country)| {
                format!(
                    "{{\"user_id\":{user},\"click_count\":{clicks},\"country\":\"{country}\"}}\n"
                )
            })
            .collect();
        common::ingest_clicks(&server, &body);
        sent.extend(rows.into_iter().map(|(u, c, country)| (u, (c, country))));
    }
    let parts_dir = server.dir.join(".petrel/data/tables/clicks/parts");
    let deadline = Instant::now() + Duration::from_secs(60);
    let files = loop {
        let mut files: Vec<String> = std::fs::read_dir(&parts_dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
                    .map(|p| p.to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        if !files.is_empty() {
            files.sort();
            break files;
        }
        assert!(Instant::now() < deadline, "no part after 60 s");
        std::thread::sleep(Duration::from_millis(200));
    };
    let spec = json!({
        "files": files,
        "columns": ["_seq", "_diff", "user_id", "click_count", "country"],
    });
    let out: Value = serde_json::from_slice(&common::chdb_script("chdb_parts.py", &spec)).unwrap();
    let rows = out["rows"].as_array().unwrap();
    // A compaction takes whole segments: 16 or 17 of the 17 writes.
    assert!(
        rows.len() == 16 * 200 || rows.len() == 17 * 200,
        "{} rows",
        rows.len()
    );
    let mut seen = BTreeSet::new();
    for row in rows {
        let (diff, user) = (row[1].as_i64(), row[2].as_u64().unwrap());
        assert_eq!(diff, Some(1), "{row}");
        let (clicks, country) = sent
            .get(&user)
            .unwrap_or_else(|| panic!("no such user: {row}"));
        assert_eq!(row[3].as_u64(), Some(*clicks), "{row}");
        assert_eq!(row[4].as_str(), Some(country.as_str()), "{row}");
        assert!(seen.insert(user), "user {user} twice");
    }
    // The rows are the first writes', each write's rows at one log position, in log order.
    let users: Vec<u64> = seen.into_iter().collect();
    assert_eq!(users, (0..rows.len() as u64).collect::<Vec<_>>());
    let seqs: Vec<u64> = rows.iter().map(|r| r[0].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] <= w[1]), "log order");
    assert_eq!(seqs.iter().collect::<BTreeSet<_>>().len(), rows.len() / 200);
}
