//! The web-analytics events the ClickHouse comparison and the batch-fold bench send: Zipf-like
//! users out of 100k, a home country per user, six hours of timestamps, ~500 skewed paths,
//! heavy-tailed durations, as NDJSON lines.

#![allow(dead_code)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Countries and their share of the traffic.
pub const COUNTRIES: [(&str, f64); 8] = [
    ("US", 0.34),
    ("DE", 0.14),
    ("GB", 0.12),
    ("FR", 0.10),
    ("BR", 0.10),
    ("IN", 0.09),
    ("JP", 0.07),
    ("VN", 0.04),
];

const SECTIONS: [&str; 10] = [
    "blog", "docs", "products", "pricing", "about", "careers", "search", "account", "help", "news",
];

const USERS: f64 = 100_000.0;
const PATHS: f64 = 500.0;
/// Six hours of traffic, starting 2024-06-01 00:00:00 UTC.
const SPAN_SECONDS: u64 = 6 * 3600;

fn pick_country(x: f64) -> &'static str {
    let mut acc = 0.0;
    for (c, share) in COUNTRIES {
        acc += share;
        if x < acc {
            return c;
        }
    }
    COUNTRIES[COUNTRIES.len() - 1].0
}

/// A user's home country: a fixed function of the user id.
fn home_country(user: u32) -> &'static str {
    let h = (user as u64 ^ 0x5bd1_e995).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    pick_country((h >> 11) as f64 / (1u64 << 53) as f64)
}

/// One event as an NDJSON line: Zipf-like users (`100000 * u^3`: user 0 is about 2% of the
/// traffic, most users are seen a few times), a country that is the user's home 85% of the
/// time, time spread evenly over six hours with a minute of jitter, ~500 paths with a skew,
/// and heavy-tailed durations.
fn event(rng: &mut StdRng, n: usize, rows: usize, out: &mut String) {
    let user = (USERS * rng.random::<f64>().powi(3)) as u32;
    let country = if rng.random::<f64>() < 0.85 {
        home_country(user)
    } else {
        pick_country(rng.random::<f64>())
    };
    let base = (n as u64 * SPAN_SECONDS) / rows.max(1) as u64;
    let t = (base + rng.random_range(0..60u64))
        .saturating_sub(30)
        .min(SPAN_SECONDS - 1);
    let p = (PATHS * rng.random::<f64>().powi(2)) as usize;
    let path = if p == 0 {
        "/".to_string()
    } else {
        format!("/{}/page-{p}", SECTIONS[p % SECTIONS.len()])
    };
    let (a, b) = (rng.random::<f64>(), rng.random::<f64>());
    let duration = 5 + (a * a * b * 8_000.0) as u32;
    let amount = 1 + (rng.random::<f64>().powi(2) * 999.0) as u32;
    use std::fmt::Write as _;
    writeln!(
        out,
        "{{\"timestamp\":\"2024-06-01 {:02}:{:02}:{:02}\",\"user_id\":{user},\"country\":\"{country}\",\"path\":\"{path}\",\"duration\":{duration},\"amount\":{amount}}}",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
    .unwrap();
}

/// `rows` events as NDJSON bodies of `batch` lines each, the same for every bench and run
/// (one seed), made one body at a time.
pub fn batches(rows: usize, batch: usize) -> impl Iterator<Item = String> {
    let mut rng = StdRng::seed_from_u64(0x5045_5452_454c);
    let mut n = 0;
    std::iter::from_fn(move || {
        if n >= rows {
            return None;
        }
        let size = batch.min(rows - n);
        let mut body = String::with_capacity(size * 128);
        for i in n..n + size {
            event(&mut rng, i, rows, &mut body);
        }
        n += size;
        Some(body)
    })
}
