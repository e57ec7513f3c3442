//! What the top-k workload's in-memory path costs per row when a batch is handled a column at
//! a time, against what Petrel spends today: the floor a batch-at-a-time engine would start
//! from (issue 15's ingest targets leave about 1.3 µs of CPU per row on 2 cores for all of
//! Petrel's work, see docs/performance.md).
//!
//! The same NDJSON batches as `vs_clickhouse`'s top-k (20k events, 100k skewed users, 8
//! countries) are, in one thread:
//! - decoded by Petrel's decoder into rows of values (`decode_ndjson_body`, the server's
//!   path; it splits a large body over the cores, so its figure is CPU time, not wall time),
//!   and folded by Petrel's engine (two workers) into the same `GROUP BY` and a view in the
//!   same order, each batch waited for as `wait=true` does: the row-at-a-time path's
//!   in-memory cost, as the process's CPU time;
//! - decoded into typed columns (country as a dictionary code, user and amount as integers,
//!   the timestamp parsed, the path's bytes appended to one buffer), every column kept, as a
//!   log would need them;
//! - folded a column at a time into `sum(amount) GROUP BY country, user_id` (keys packed in
//!   one integer, a hash map of integers), each touched group's old and new total moved in its
//!   country's ordered index of (total descending, user) packed in one integer: what the view
//!   keeps for `ORDER BY total DESC, user_id LIMIT n`;
//! - compacted from the columns, every 250k rows as Petrel's storage does, into a Parquet part
//!   sorted by the sorting key (country, user_id) with the log position, timestamp and
//!   multiplicity columns a part keeps, zstd-compressed as Petrel writes parts.
//!
//! It prints CPU per row for each step. It checks that every country's top 10, from the
//! batch fold's index and from Petrel's view, equals a recomputation from all the rows, and
//! exits non-zero if not. It asserts nothing
//! about time. `cargo bench --bench batch_fold` (env: ROWS default 2000000, BATCH default
//! 20000).

#[path = "events.rs"]
mod events;
#[path = "support.rs"]
mod support;

use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, UInt32Array, UInt64Array};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use petrel::ingest::{decode_ndjson_body, RowDecoder};
use petrel::project::ColumnSpec;
use petrel_engine::{Engine, EngineConfig, SourceLog};
use petrel_sql::{AggFunc, Aggregate, Expr, Plan, PlanNode};
use petrel_value::{Column, ColumnType, Row, Value};
use petrel_view::{KeyColumns, Retention, RowOrder, SortDirection, View};
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

impl Columns {
    fn len(&self) -> usize {
        self.user.len()
    }

    fn path(&self, i: usize) -> &str {
        let start = if i == 0 {
            0
        } else {
            self.path_ends[i - 1] as usize
        };
        std::str::from_utf8(&self.path_bytes[start..self.path_ends[i] as usize])
            .expect("paths are UTF-8")
    }

    fn append(&mut self, other: &Columns) {
        let base = self.path_bytes.len() as u32;
        self.timestamp.extend_from_slice(&other.timestamp);
        self.user.extend_from_slice(&other.user);
        self.country.extend_from_slice(&other.country);
        self.path_ends
            .extend(other.path_ends.iter().map(|e| e + base));
        self.path_bytes.extend_from_slice(&other.path_bytes);
        self.duration.extend_from_slice(&other.duration);
        self.amount.extend_from_slice(&other.amount);
    }
}

/// Rows a compaction takes at most (Petrel's `compact_max_rows`).
const PART_ROWS: usize = 250_000;

/// Writes `c` (rows of log positions `seq`) as one Parquet part sorted by (country, user_id,
/// log position), with the columns a Petrel part has; returns its size in bytes.
fn compact(c: &Columns, seq: &[u64], dict: &Dictionary) -> usize {
    // Country codes ranked by name, so the sort is by the strings' order.
    let mut names: Vec<(usize, &String)> = dict.0.iter().enumerate().collect();
    names.sort_by(|a, b| a.1.cmp(b.1));
    let mut rank = vec![0u32; names.len()];
    for (r, (code, _)) in names.iter().enumerate() {
        rank[*code] = r as u32;
    }
    let mut order: Vec<u32> = (0..c.len() as u32).collect();
    order.sort_unstable_by_key(|&i| {
        let i = i as usize;
        (rank[c.country[i] as usize], c.user[i], seq[i])
    });
    let gather_u32 = |v: &[u32]| -> ArrayRef {
        Arc::new(UInt32Array::from_iter_values(
            order.iter().map(|&i| v[i as usize]),
        ))
    };
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "timestamp",
            Arc::new(Int64Array::from_iter_values(
                order.iter().map(|&i| c.timestamp[i as usize]),
            )),
        ),
        ("user_id", gather_u32(&c.user)),
        (
            "country",
            Arc::new(StringArray::from_iter_values(
                order
                    .iter()
                    .map(|&i| dict.0[c.country[i as usize] as usize].as_str()),
            )),
        ),
        (
            "path",
            Arc::new(StringArray::from_iter_values(
                order.iter().map(|&i| c.path(i as usize)),
            )),
        ),
        ("duration", gather_u32(&c.duration)),
        ("amount", gather_u32(&c.amount)),
        (
            "_seq",
            Arc::new(UInt64Array::from_iter_values(
                order.iter().map(|&i| seq[i as usize]),
            )),
        ),
        // A stand-in for the landing time: one per batch, as a batch lands at one time.
        (
            "_ts",
            Arc::new(UInt64Array::from_iter_values(
                order.iter().map(|&i| seq[i as usize]),
            )),
        ),
        (
            "_diff",
            Arc::new(Int64Array::from_iter_values(order.iter().map(|_| 1))),
        ),
    ];
    let batch = RecordBatch::try_from_iter(columns).expect("columns of one length");
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(65_536))
        .build();
    let mut writer =
        ArrowWriter::try_new(Vec::new(), batch.schema(), Some(props)).expect("a Parquet writer");
    writer.write(&batch).expect("the part is written");
    writer.into_inner().expect("the part is finished").len()
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

/// A datasource log that keeps nothing: the view is installed before the first batch, so
/// nothing is replayed, and the bench measures the engine, not a log (the server's log and
/// its compaction are costs of their own, in `vs_clickhouse`'s figures).
struct NoLog(std::sync::atomic::AtomicU64);

impl SourceLog for NoLog {
    fn append(&self, _: u64, _: &Arc<Vec<(Row, isize)>>, _: Option<&[u8]>) -> std::io::Result<u64> {
        Ok(self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1)
    }
    fn len(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn replay(
        &self,
        _: u64,
        _: usize,
        _: usize,
        _: &mut dyn FnMut(Row, u64, isize),
    ) -> std::io::Result<()> {
        Ok(())
    }
}

/// Petrel's engine with the top-k's `sum(amount) GROUP BY country, user_id` installed, and
/// its view: rows (country, user_id, total) by country, in (total descending, user) order.
fn petrel_engine(columns: Vec<Column>) -> (Arc<Engine>, Arc<View>) {
    let engine = Engine::start(EngineConfig {
        workers: 2,
        ..Default::default()
    })
    .expect("the engine starts");
    engine.register_source("events", Arc::new(NoLog(Default::default())));
    let total = ColumnType::UInt(64);
    let out = vec![
        columns[2].clone(),
        columns[1].clone(),
        Column {
            name: "total".into(),
            ty: total.clone(),
        },
    ];
    let plan = Plan {
        node: PlanNode::Aggregate {
            input: Box::new(Plan {
                node: PlanNode::Scan {
                    table: "events".into(),
                },
                columns,
            }),
            keys: vec![Expr::Column(2), Expr::Column(1)],
            aggregates: vec![Aggregate {
                func: AggFunc::Sum,
                args: vec![Expr::Column(5)],
                params: vec![],
                filter: None,
                ty: total,
            }],
        },
        columns: out.clone(),
    };
    let desc = SortDirection {
        desc: true,
        nulls_first: false,
    };
    let order = RowOrder::by_columns(vec![desc, SortDirection::default()], vec![2, 1]);
    let view = View::ordered(out, KeyColumns(vec![0]), order, Retention::for_ms(60_000));
    engine
        .install(plan, view.clone())
        .expect("the view installs");
    (engine, view)
}

fn main() {
    // As the server's main does (no transparent huge pages, freed memory kept ten seconds):
    // without it the kernel's zeroing of fresh pages took a third of this bench's samples,
    // and the engine's figure moved by half between runs.
    petrel::host::tune_process();
    let rows: usize = support::env("ROWS", 2_000_000);
    let batch: usize = support::env("BATCH", 20_000);
    let bodies: Vec<Vec<u8>> = events::batches(rows, batch)
        .map(String::into_bytes)
        .collect();
    let spec = |name: &str, ty: &str| ColumnSpec {
        column: Column {
            name: name.to_string(),
            ty: ColumnType::parse(ty).expect("a known type"),
        },
        json_path: None,
        default: None,
    };
    let specs = [
        spec("timestamp", "DateTime"),
        spec("user_id", "UInt32"),
        spec("country", "LowCardinality(String)"),
        spec("path", "String"),
        spec("duration", "UInt32"),
        spec("amount", "UInt32"),
    ];
    let decoder = RowDecoder::new(&specs);

    let cpu = support::cpu_seconds;
    let (engine, view) = petrel_engine(specs.iter().map(|s| s.column.clone()).collect());
    let waiter = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (mut petrel_decode, mut petrel_fold) = (0.0, 0.0);
    let mut decoded_rows = 0;
    for body in &bodies {
        let t0 = cpu();
        let decoded = decode_ndjson_body(&decoder, body, 0, "bench");
        let t1 = cpu();
        assert!(decoded.bad.is_empty(), "a bench event was rejected");
        decoded_rows += decoded.good.len();
        let ts = engine
            .insert("events", decoded.good)
            .expect("the engine takes the batch");
        engine.close(ts);
        waiter.block_on(view.wait_for(ts));
        let t2 = cpu();
        petrel_decode += t1 - t0;
        petrel_fold += t2 - t1;
    }
    assert_eq!(decoded_rows, rows);
    assert!(view.failure().is_none(), "the view failed");

    let mut dict = Dictionary::default();
    let mut topk = TopK::default();
    let mut touched = HashMap::default();
    let (mut decode, mut fold, mut compaction) = (0.0, 0.0, 0.0);
    let (mut pending, mut pending_seq) = (Columns::default(), Vec::new());
    let mut part_bytes = 0;
    let mut all: Vec<(u32, u32, u32)> = Vec::with_capacity(rows);
    for (seq, body) in bodies.iter().enumerate() {
        let t0 = cpu();
        let columns = decode_columns(body, &mut dict);
        let t1 = cpu();
        topk.fold(&columns, &mut touched);
        let t2 = cpu();
        pending.append(&columns);
        pending_seq.extend(std::iter::repeat_n(seq as u64, columns.len()));
        if pending.len() >= PART_ROWS || seq + 1 == bodies.len() {
            part_bytes += compact(&pending, &pending_seq, &dict);
            (pending, pending_seq) = (Columns::default(), Vec::new());
        }
        let t3 = cpu();
        decode += t1 - t0;
        fold += t2 - t1;
        compaction += t3 - t2;
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
        let page = view.page(&[Value::str(&dict.0[country])], 0, Some(10));
        let from_view: Vec<(u32, u64)> = page
            .rows
            .iter()
            .map(|r: &Row| match (&r[1], &r[2]) {
                (Value::UInt(u), Value::UInt(t)) => (*u as u32, *t),
                other => panic!("not a (user, total) row: {other:?}"),
            })
            .collect();
        if from_view != expected {
            eprintln!(
                "country {}: Petrel's view and recomputation differ",
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
        "Petrel's engine: fold + ordered view (2 workers)",
        per_row(petrel_fold)
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
        "compaction into Parquet parts from the columns",
        per_row(compaction)
    );
    println!(
        "  {:<58} {:>10}",
        "columnar decode + fold + index + compaction",
        per_row(decode + fold + compaction)
    );
    println!(
        "  parts: {:.1} bytes per row",
        part_bytes as f64 / rows as f64
    );
    println!("  answers equal to the recomputation: {}", mismatches == 0);
    if mismatches > 0 {
        std::process::exit(1);
    }
}
