//! A view's index under a top-k's changes, without the engine: what publishing costs as the
//! groups grow. The view is `top users by total per country` (key `country`, order
//! `total DESC, user_id`), holding every (country, user) group; each batch changes the totals
//! of the users 20k skewed events touch (a retraction of the old row and an insertion of the
//! new one per user touched), as the engine's fold publishes them. Two sizes of the same
//! work: the cost per change should not grow with the rows a key holds.
//!
//! Each size runs twice: rows told apart by the whole row, and by the group keys (as a
//! `GROUP BY` view is, so a user's retraction and insertion fold with one probe).
//!
//! Prints, per size, the nanoseconds per change to consolidate and fold a batch (and each
//! apart; both use every core for large batches, so these are elapsed, not CPU), and the p50
//! of reading a key's first 10 rows (`page(key, 0, 10)`).
//!
//! `cargo bench --bench view_index` (env: USERS, comma-separated users per country, default
//! `12500,100000`; BATCHES default 100).

#[path = "events.rs"]
mod events;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use events::COUNTRIES;
use petrel_value::{Column, ColumnType, Row, Value};
use petrel_view::{ChangeBatch, KeyColumns, Retention, RowOrder, SortDirection, View};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// mimalloc, as the server's binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Events per batch, as the ClickHouse comparison sends them.
const EVENTS_PER_BATCH: usize = 20_000;

fn row(country: usize, user: u64, total: u64) -> Row {
    vec![
        Value::str(COUNTRIES[country].0),
        Value::UInt(user),
        Value::UInt(total),
    ]
}

fn pick_country(rng: &mut StdRng) -> usize {
    let x: f64 = rng.random();
    let mut acc = 0.0;
    for (i, (_, share)) in COUNTRIES.iter().enumerate() {
        acc += share;
        if x < acc {
            return i;
        }
    }
    COUNTRIES.len() - 1
}

fn run(users: u64, batches: usize, by_keys: bool) {
    let columns = ["country", "user_id", "total"]
        .iter()
        .map(|name| Column {
            name: name.to_string(),
            ty: if *name == "country" {
                ColumnType::String
            } else {
                ColumnType::UInt(64)
            },
        })
        .collect();
    let desc = SortDirection {
        desc: true,
        nulls_first: false,
    };
    let order = RowOrder::by_columns(vec![desc, SortDirection::default()], vec![2, 1]);
    // Told apart by (country, user_id), the GROUP BY's keys, or by the whole row.
    let identity = by_keys.then(|| vec![0, 1]);
    let view = View::identified(
        columns,
        (KeyColumns(vec![0]), identity),
        order,
        Retention::for_ms(1_000),
    );
    let mut rng = StdRng::seed_from_u64(7);
    let mut totals: HashMap<(usize, u64), u64> = HashMap::new();
    let mut ts = 0;
    // Consolidating and folding, timed apart.
    let publish = |changes: Vec<(Row, i64)>, ts: &mut u64| {
        let mut changes = changes;
        let started = Instant::now();
        view.consolidate(&mut changes);
        let consolidated = Instant::now();
        view.apply(ChangeBatch::new(*ts, *ts + 1, changes));
        *ts += 1;
        (consolidated - started, consolidated.elapsed())
    };
    // Every user in every country, with skewed totals.
    for country in 0..COUNTRIES.len() {
        let mut changes = Vec::new();
        for user in 0..users {
            let total = 1 + (rng.random::<f64>().powi(3) * 100_000.0) as u64;
            totals.insert((country, user), total);
            changes.push((row(country, user, total), 1));
        }
        publish(changes, &mut ts);
    }
    let (mut consolidating, mut folding) = (Duration::ZERO, Duration::ZERO);
    let mut changed = 0usize;
    for _ in 0..batches {
        let mut touched: HashMap<(usize, u64), u64> = HashMap::new();
        for _ in 0..EVENTS_PER_BATCH {
            let user = (users as f64 * rng.random::<f64>().powi(3)) as u64;
            let amount = 1 + (rng.random::<f64>().powi(2) * 999.0) as u64;
            *touched.entry((pick_country(&mut rng), user)).or_default() += amount;
        }
        let mut changes = Vec::with_capacity(touched.len() * 2);
        for ((country, user), amount) in touched {
            let total = totals.entry((country, user)).or_default();
            if *total > 0 {
                changes.push((row(country, user, *total), -1));
            }
            *total += amount;
            changes.push((row(country, user, *total), 1));
        }
        changed += changes.len();
        let (c, f) = publish(changes, &mut ts);
        consolidating += c;
        folding += f;
    }
    let key = [Value::str(COUNTRIES[0].0)];
    let mut reads: Vec<Duration> = (0..1_000)
        .map(|_| {
            let started = Instant::now();
            let page = view.page(&key, 0, Some(10));
            assert_eq!(page.rows.len(), 10);
            started.elapsed()
        })
        .collect();
    reads.sort();
    println!(
        "  {users:>7} users per country ({:>7} rows), rows told apart by {}: {:>4.0} ns per change ({:.0} consolidating, {:.0} folding; {changed} changes in {batches} batches), page of 10 p50 {:.1} µs",
        view.distinct_rows(),
        if by_keys { "group keys" } else { "whole row " },
        (consolidating + folding).as_nanos() as f64 / changed.max(1) as f64,
        consolidating.as_nanos() as f64 / changed.max(1) as f64,
        folding.as_nanos() as f64 / changed.max(1) as f64,
        reads[reads.len() / 2].as_secs_f64() * 1e6,
    );
}

fn main() {
    let sizes: Vec<u64> = std::env::var("USERS")
        .unwrap_or_else(|_| "12500,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let batches = std::env::var("BATCHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    println!("view_index: a top-k view's consolidate + fold per change, {EVENTS_PER_BATCH} events per batch");
    for users in sizes {
        for by_keys in [false, true] {
            run(users, batches, by_keys);
        }
    }
}
