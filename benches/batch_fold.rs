//! What the top-k workload's in-memory path costs per row when a batch is handled a column at
//! a time, against what Petrel spends today: the floor a batch-at-a-time engine would start
//! from (issue 15's ingest targets leave about 1.3 µs of CPU per row on 2 cores for all of
//! Petrel's work, see docs/performance.md).
//!
//! The same NDJSON batches as `vs_clickhouse`'s top-k (20k events, 100k skewed users, 8
//! countries) are, in one thread:
//! - decoded by Petrel's decoder into rows of values (`decode_ndjson_body`, the server's
//!   path; it splits a large body over the cores, so its figure is CPU time, not wall time);
//! - decoded into typed columns (country as a dictionary code, user and amount as integers,
//!   the timestamp parsed, the path's bytes appended to one buffer), every column kept, as a
//!   log would need them;
//! - folded a column at a time into `sum(amount) GROUP BY country, user_id` (keys packed in
//!   one integer, a hash map of integers), each touched group's old and new total moved in its
//!   country's ordered index of (total descending, user) packed in one integer: what the view
//!   keeps for `ORDER BY total DESC, user_id LIMIT n`.
//!
//! It prints CPU per row for each step. It checks that every country's top 10 from the index
//! equals a recomputation from all the rows, and exits non-zero if not. It asserts nothing
//! about time. `cargo bench --bench batch_fold` (env: ROWS default 2000000, BATCH default
//! 20000).

#[path = "events.rs"]
mod events;
#[path = "support.rs"]
mod support;

use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasherDefault;

use petrel::ingest::{decode_ndjson_body, RowDecoder};
use petrel::project::ColumnSpec;
use petrel_value::{Column, ColumnType, Value};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rustc_hash::FxHasher;

type Fx = BuildHasherDefault<FxHasher>;

/// One NDJSON event as the columnar decoder reads it (strings borrowed from the body).
#[derive(serde::Deserialize)]
struct Event<'a> {
    timestamp: &'a str,
    user_id: u32,
    country: &'a str,
    path: &'a str,
    duration: u32,
    amount: u32,
}

/// A batch as typed columns.
#[derive(Default)]
struct Columns {
    timestamp: Vec<i64>,
    user: Vec<u32>,
    country: Vec<u32>,
    path_ends: Vec<u32>,
    path_bytes: Vec<u8>,
    duration: Vec<u32>,
    amount: Vec<u32>,
}

/// Country names and their codes, in the order first seen.
#[derive(Default)]
struct Dictionary(Vec<String>);

impl Dictionary {
    fn code(&mut self, s: &str) -> u32 {
        match self.0.iter().position(|c| c == s) {
            Some(i) => i as u32,
            None => {
                self.0.push(s.to_string());
                self.0.len() as u32 - 1
            }
        }
    }
}

fn decode_columns(body: &[u8], dict: &mut Dictionary) -> Columns {
    let mut c = Columns::default();
    let datetime = ColumnType::DateTime;
    for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let e: Event = serde_json::from_slice(line).expect("the bench's events are valid JSON");
        let ts = match datetime.parse_text(e.timestamp) {
            Some(Value::DateTime(t)) => t,
            other => panic!("not a DateTime: {other:?}"),
        };
        c.timestamp.push(ts);
        c.user.push(e.user_id);
        c.country.push(dict.code(e.country));
        c.path_bytes.extend_from_slice(e.path.as_bytes());
        c.path_ends.push(c.path_bytes.len() as u32);
        c.duration.push(e.duration);
        c.amount.push(e.amount);
    }
    c
}

/// `sum(amount) GROUP BY country, user_id`, and per country the groups ordered by (total
/// descending, user).
#[derive(Default)]
struct TopK {
    sums: HashMap<u64, u64, Fx>,
    index: Vec<BTreeSet<u128>>,
}

/// A group's place in its country's index: total descending, then user ascending.
fn entry(total: u64, user: u32) -> u128 {
    (((u64::MAX - total) as u128) << 64) | user as u128
}

impl TopK {
    fn fold(&mut self, c: &Columns, touched: &mut HashMap<u64, u64, Fx>) {
        touched.clear();
        for i in 0..c.user.len() {
            let key = ((c.country[i] as u64) << 32) | c.user[i] as u64;
            let sum = self.sums.entry(key).or_insert(0);
            touched.entry(key).or_insert(*sum);
            *sum += c.amount[i] as u64;
        }
        for (&key, &old) in touched.iter() {
            let country = (key >> 32) as usize;
            let user = key as u32;
            if self.index.len() <= country {
                self.index.resize_with(country + 1, BTreeSet::new);
            }
            let index = &mut self.index[country];
            if old > 0 {
                index.remove(&entry(old, user));
            }
            index.insert(entry(self.sums[&key], user));
        }
    }

    fn top(&self, country: usize, n: usize) -> Vec<(u32, u64)> {
        self.index[country]
            .iter()
            .take(n)
            .map(|e| ((*e as u64) as u32, u64::MAX - (e >> 64) as u64))
            .collect()
    }
}

fn main() {
    let rows: usize = support::env("ROWS", 2_000_000);
    let batch: usize = support::env("BATCH", 20_000);
    let mut rng = StdRng::seed_from_u64(0x5045_5452_454c);
    let mut bodies = Vec::new();
    let mut n = 0;
    while n < rows {
        let size = batch.min(rows - n);
        let mut body = String::with_capacity(size * 128);
        for i in n..n + size {
            events::event(&mut rng, i, rows, &mut body);
        }
        bodies.push(body.into_bytes());
        n += size;
    }
    let spec = |name: &str, ty: &str| ColumnSpec {
        column: Column {
            name: name.to_string(),
            ty: ColumnType::parse(ty).expect("a known type"),
        },
        json_path: None,
        default: None,
    };
    let decoder = RowDecoder::new(&[
        spec("timestamp", "DateTime"),
        spec("user_id", "UInt32"),
        spec("country", "LowCardinality(String)"),
        spec("path", "String"),
        spec("duration", "UInt32"),
        spec("amount", "UInt32"),
    ]);

    let cpu = support::cpu_seconds;
    let started = cpu();
    let mut decoded_rows = 0;
    for body in &bodies {
        let decoded = decode_ndjson_body(&decoder, body, 0, "bench");
        assert!(decoded.bad.is_empty(), "a bench event was rejected");
        decoded_rows += decoded.good.len();
    }
    let petrel_decode = cpu() - started;
    assert_eq!(decoded_rows, rows);

    let mut dict = Dictionary::default();
    let mut topk = TopK::default();
    let mut touched = HashMap::default();
    let (mut decode, mut fold) = (0.0, 0.0);
    let mut all: Vec<(u32, u32, u32)> = Vec::with_capacity(rows);
    for body in &bodies {
        let t0 = cpu();
        let columns = decode_columns(body, &mut dict);
        let t1 = cpu();
        topk.fold(&columns, &mut touched);
        let t2 = cpu();
        decode += t1 - t0;
        fold += t2 - t1;
        all.extend(
            (0..columns.user.len())
                .map(|i| (columns.country[i], columns.user[i], columns.amount[i])),
        );
    }

    // Every country's top 10 from the index against a recomputation from all the rows.
    let mut sums: HashMap<(u32, u32), u64> = HashMap::new();
    for (country, user, amount) in all {
        *sums.entry((country, user)).or_insert(0) += amount as u64;
    }
    let mut mismatches = 0;
    for country in 0..dict.0.len() {
        let mut expected: Vec<(u32, u64)> = sums
            .iter()
            .filter(|((c, _), _)| *c as usize == country)
            .map(|((_, u), s)| (*u, *s))
            .collect();
        expected.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        expected.truncate(10);
        if topk.top(country, 10) != expected {
            eprintln!(
                "country {}: index and recomputation differ",
                dict.0[country]
            );
            mismatches += 1;
        }
    }

    let per_row = |s: f64| format!("{:.3} µs", s * 1e6 / rows as f64);
    println!();
    println!(
        "batch_fold: {rows} top-k events in batches of {batch}, {} groups, CPU per row",
        topk.sums.len()
    );
    println!(
        "  {:<58} {:>10}",
        "Petrel's decode into rows of values",
        per_row(petrel_decode)
    );
    println!(
        "  {:<58} {:>10}",
        "decode into typed columns (serde_json, every column kept)",
        per_row(decode)
    );
    println!(
        "  {:<58} {:>10}",
        "fold a column at a time + ordered index of the groups",
        per_row(fold)
    );
    println!(
        "  {:<58} {:>10}",
        "columnar decode + fold + index",
        per_row(decode + fold)
    );
    println!("  answers equal to the recomputation: {}", mismatches == 0);
    if mismatches > 0 {
        std::process::exit(1);
    }
}
