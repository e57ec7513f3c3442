//! Rows as vectors of values (what every operator and index passes today) against a packed
//! row: one allocation of bytes in an order-preserving encoding, compared with `memcmp` and
//! hashed as bytes (Materialize's `Row` is of this kind). The operations are the ones a change
//! pays for on its way through Petrel: building the row from decoded scalars, cloning it,
//! hashing it, grouping by a key taken from it, and sorting by it; plus the heap each row
//! holds. The rows are the `vs_clickhouse` bench's events (timestamp, user_id, country, path,
//! duration, amount) with its skew: Zipf-like users out of 100k, 8 countries, ~500 paths.
//!
//! `cargo bench --bench row_format` (env: ROWS default 1000000). It checks that both formats
//! sort the rows alike and group them to the same sums, and exits non-zero if not. It asserts
//! nothing about time.

#[path = "support.rs"]
mod support;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::time::Instant;

use petrel_value::{Row, Value};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rustc_hash::FxHasher;

type Fx = BuildHasherDefault<FxHasher>;

const COUNTRIES: [&str; 8] = ["US", "DE", "GB", "FR", "IN", "BR", "JP", "VN"];

/// One event's decoded scalars.
struct Event {
    timestamp: i64,
    user: u64,
    country: &'static str,
    path: String,
    duration: u64,
    amount: u64,
}

fn events(rows: usize) -> Vec<Event> {
    let mut rng = StdRng::seed_from_u64(7);
    (0..rows)
        .map(|n| {
            let user = (100_000.0 * rng.random::<f64>().powi(3)) as u64;
            let country = COUNTRIES[(rng.random::<f64>().powi(2) * 8.0) as usize % 8];
            let p = (500.0 * rng.random::<f64>().powi(2)) as usize;
            Event {
                timestamp: 1_717_200_000 + (n as i64 * 21_600) / rows as i64,
                user,
                country,
                path: format!("/section/page-{p}"),
                duration: 5 + (rng.random::<f64>().powi(3) * 8_000.0) as u64,
                amount: 1 + (rng.random::<f64>().powi(2) * 999.0) as u64,
            }
        })
        .collect()
}

/// A packed row: each value as a type tag and its bytes, in an encoding whose byte order is
/// the values' order (integers big-endian, strings with `0x00` escaped and a two-byte end).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Packed(Box<[u8]>);

const TAG_UINT: u8 = 3;
const TAG_STRING: u8 = 5;
const TAG_DATETIME: u8 = 8;

fn push_u64(out: &mut Vec<u8>, tag: u8, v: u64) {
    out.push(tag);
    out.extend_from_slice(&v.to_be_bytes());
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    out.push(TAG_STRING);
    for &b in s.as_bytes() {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
    out.extend_from_slice(&[0, 0]);
}

/// The byte range of column `i` of a packed row.
fn column(row: &[u8], i: usize) -> std::ops::Range<usize> {
    let mut at = 0;
    for n in 0.. {
        let start = at;
        at += 1;
        if row[start] == TAG_STRING {
            while !(row[at] == 0 && row[at + 1] == 0) {
                at += if row[at] == 0 { 2 } else { 1 };
            }
            at += 2;
        } else {
            at += 8;
        }
        if n == i {
            return start..at;
        }
    }
    unreachable!()
}

fn pack(e: &Event, buf: &mut Vec<u8>) -> Packed {
    buf.clear();
    push_u64(buf, TAG_DATETIME, (e.timestamp as u64) ^ (1 << 63));
    push_u64(buf, TAG_UINT, e.user);
    push_str(buf, e.country);
    push_str(buf, &e.path);
    push_u64(buf, TAG_UINT, e.duration);
    push_u64(buf, TAG_UINT, e.amount);
    Packed(buf.as_slice().into())
}

fn values(e: &Event) -> Row {
    vec![
        Value::DateTime(e.timestamp),
        Value::UInt(e.user),
        Value::str(e.country),
        Value::str(&e.path),
        Value::UInt(e.duration),
        Value::UInt(e.amount),
    ]
}

fn fx_hash(v: &impl Hash) -> u64 {
    let mut h = FxHasher::default();
    v.hash(&mut h);
    h.finish()
}

/// What one format costs per batch, in nanoseconds summed over the batches.
#[derive(Default)]
struct Costs {
    build: f64,
    clone: f64,
    hash: f64,
    group: f64,
    sort: f64,
}

/// Runs `f`, adding the nanoseconds it took to `into`.
fn timed<T>(into: &mut f64, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = std::hint::black_box(f());
    *into += start.elapsed().as_nanos() as f64;
    out
}

/// The packed row's `sum(amount)` key: country then user_id, copied out of the row.
fn packed_key(row: &[u8], key: &mut Vec<u8>) -> u64 {
    key.clear();
    key.extend_from_slice(&row[column(row, 2)]);
    key.extend_from_slice(&row[column(row, 1)]);
    let amount = &row[column(row, 5)];
    u64::from_be_bytes(amount[1..9].try_into().unwrap_or_default())
}

/// The same row packed from its values (to check that both formats sort alike).
fn repack(r: &Row, buf: &mut Vec<u8>) -> Packed {
    let text = |v: &Value| match v {
        Value::String(s) => s.to_string(),
        _ => String::new(),
    };
    let int = |v: &Value| match v {
        Value::UInt(u) => *u,
        Value::DateTime(t) => *t as u64,
        _ => 0,
    };
    let e = Event {
        timestamp: int(&r[0]) as i64,
        user: int(&r[1]),
        country: COUNTRIES
            .iter()
            .find(|c| **c == text(&r[2]))
            .copied()
            .unwrap_or(""),
        path: text(&r[3]),
        duration: int(&r[4]),
        amount: int(&r[5]),
    };
    pack(&e, buf)
}

fn main() {
    support::count_heap();
    let rows: usize = support::env("ROWS", 1_000_000);
    let batch: usize = support::env("BATCH", 20_000);
    let events = events(rows);

    // The heap each row holds, all rows kept at once.
    let mut buf = Vec::with_capacity(64);
    let heap = support::heap_bytes();
    let all: Vec<Row> = events.iter().map(values).collect();
    let vec_heap = (support::heap_bytes() - heap) as f64 / rows as f64;
    drop(all);
    let heap = support::heap_bytes();
    let all: Vec<Packed> = events.iter().map(|e| pack(e, &mut buf)).collect();
    let packed_heap = (support::heap_bytes() - heap) as f64 / rows as f64;
    drop(all);

    // Batch by batch, as changes flow: build the batch's rows, clone them, hash them, fold
    // `sum(amount) GROUP BY country, user_id` into a state kept across batches, sort them.
    let (mut v, mut p) = (Costs::default(), Costs::default());
    let mut vec_sums: HashMap<Row, u64, Fx> = HashMap::default();
    let mut packed_sums: HashMap<Box<[u8]>, u64, Fx> = HashMap::default();
    let mut key = Vec::with_capacity(32);
    let mut same_order = true;
    for chunk in events.chunks(batch) {
        let vec_rows = timed(&mut v.build, || {
            chunk.iter().map(values).collect::<Vec<Row>>()
        });
        let packed_rows = timed(&mut p.build, || {
            chunk
                .iter()
                .map(|e| pack(e, &mut buf))
                .collect::<Vec<Packed>>()
        });
        let mut vec_copy = timed(&mut v.clone, || vec_rows.clone());
        let mut packed_copy = timed(&mut p.clone, || packed_rows.clone());
        timed(&mut v.hash, || {
            vec_rows.iter().fold(0u64, |acc, r| acc ^ fx_hash(r))
        });
        timed(&mut p.hash, || {
            packed_rows.iter().fold(0u64, |acc, r| acc ^ fx_hash(r))
        });
        timed(&mut v.group, || {
            for r in &vec_rows {
                let Value::UInt(amount) = r[5] else {
                    continue;
                };
                *vec_sums
                    .entry(vec![r[2].clone(), r[1].clone()])
                    .or_default() += amount;
            }
        });
        timed(&mut p.group, || {
            for r in &packed_rows {
                let amount = packed_key(&r.0, &mut key);
                match packed_sums.get_mut(key.as_slice()) {
                    Some(sum) => *sum += amount,
                    None => {
                        packed_sums.insert(key.as_slice().into(), amount);
                    }
                }
            }
        });
        timed(&mut v.sort, || vec_copy.sort_unstable());
        timed(&mut p.sort, || packed_copy.sort_unstable());
        same_order &= vec_copy
            .iter()
            .map(|r| repack(r, &mut buf))
            .eq(packed_copy.iter().cloned());
    }
    let same_sums = vec_sums.len() == packed_sums.len()
        && vec_sums.values().sum::<u64>() == packed_sums.values().sum::<u64>();

    println!("row_format: {rows} event rows (6 columns) in batches of {batch}, per row");
    println!(
        "{:<36} {:>14} {:>14} {:>8}",
        "", "Vec<Value>", "packed bytes", "ratio"
    );
    let per_row = |ns: f64| ns / rows as f64;
    let line = |what: &str, a: f64, b: f64, unit: &str| {
        println!(
            "{what:<36} {a:>11.1} {unit} {b:>11.1} {unit} {:>7.2}x",
            a / b
        );
    };
    line(
        "build from decoded scalars",
        per_row(v.build),
        per_row(p.build),
        "ns",
    );
    line("clone", per_row(v.clone), per_row(p.clone), "ns");
    line("hash (FxHash)", per_row(v.hash), per_row(p.hash), "ns");
    line(
        "sum GROUP BY (country, user_id)",
        per_row(v.group),
        per_row(p.group),
        "ns",
    );
    line("sort the batch", per_row(v.sort), per_row(p.sort), "ns");
    line("heap held", vec_heap, packed_heap, " B");
    println!(
        "groups: {}; same order: {same_order}; same sums: {same_sums}",
        vec_sums.len()
    );
    if !(same_order && same_sums) {
        std::process::exit(1);
    }
}
