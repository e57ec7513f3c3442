//! Reductions whose cost follows the change, not the group: the group's values are spread
//! over hash buckets, each bucket is reduced to its best few, then buckets of buckets, level
//! by level, until one group per key remains (Materialize's hierarchical reductions).
//!
//! A change to one value re-reduces one bucket per level, each holding at most
//! [`FANOUT`] results of the level below (plus, at the first level, the values that share
//! its bucket), so its cost is logarithmic in the group's size instead of linear, and
//! retractions stay exact: every level keeps its inputs.

use std::hash::{Hash, Hasher};

use differential_dataflow::VecCollection;
use petrel_value::{Row, Value};

/// How many results of one level a bucket of the next level reduces.
pub const FANOUT: u64 = 16;

/// Buckets per key at each level, finest first; the last reduction is per key.
const LEVELS: [u64; 3] = [FANOUT * FANOUT * FANOUT, FANOUT * FANOUT, FANOUT];

/// A keyed collection: (group key, value row).
pub type Keyed<'s> = VecCollection<'s, u64, (Row, Row), isize>;

/// Reduces each key's values to what `select` keeps of them, level by level: `inner` at
/// every bucket level (it must keep whatever the final step could need, e.g. the best `k`),
/// then `last` once per key. Both see a group as its distinct values with their
/// multiplicities and push the rows they keep, with positive multiplicities.
pub fn reduce<'s, I, L>(input: Keyed<'s>, inner: I, last: L) -> Keyed<'s>
where
    I: Fn(&[(&Row, isize)], &mut Vec<(Row, isize)>) + Clone + 'static,
    L: Fn(&[(&Row, isize)], &mut Vec<(Row, isize)>) + 'static,
{
    let mut staged: VecCollection<'s, u64, ((Row, u64), Row), isize> = input.map(|(key, value)| {
        let bucket = bucket_of(&value);
        ((key, bucket), value)
    });
    for buckets in LEVELS {
        let inner = inner.clone();
        staged = staged
            .map(move |((key, bucket), value)| ((key, bucket % buckets), value))
            .reduce(
                move |_key, group: &[(&Row, isize)], out: &mut Vec<(Row, isize)>| inner(group, out),
            );
    }
    staged
        .map(|((key, _), value)| (key, value))
        .reduce(move |_key, group: &[(&Row, isize)], out: &mut Vec<(Row, isize)>| last(group, out))
}

/// A value's bucket: a hash that is the same on every worker and in every process.
fn bucket_of(value: &Row) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    value.hash(&mut h);
    // Fx's low bits are weak for small inputs: fold the high bits in.
    let x = h.finish();
    x ^ (x >> 29) ^ (x >> 47)
}

/// Keeps the rows of a group that `take` admits in the order `cmp` gives, skipping the
/// first `skip` (counting multiplicities).
pub fn keep_first(
    group: &[(&Row, isize)],
    cmp: &dyn Fn(&Row, &Row) -> std::cmp::Ordering,
    skip: u64,
    take: u64,
    out: &mut Vec<(Row, isize)>,
) {
    let mut rows: Vec<(&Row, isize)> = group.iter().filter(|(_, n)| *n > 0).copied().collect();
    rows.sort_by(|a, b| cmp(a.0, b.0).then_with(|| a.0.cmp(b.0)));
    let mut skip = skip as isize;
    let mut take = take.min(isize::MAX as u64) as isize;
    for (row, n) in rows {
        if take == 0 {
            break;
        }
        let skipped = skip.min(n);
        skip -= skipped;
        let keep = (n - skipped).min(take);
        if keep > 0 {
            out.push((row.clone(), keep));
            take -= keep;
        }
    }
}

/// Which end of the order an extreme aggregate keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The smallest ordering value (min, argMin, any).
    Least,
    /// The largest ordering value (max, argMax, anyLast).
    Greatest,
}

/// Several extreme aggregates reduced together: each candidate row holds, per aggregate, an
/// ordering value and the value it returns (NULL ordering value: the row does not
/// contribute). The best of a group, per aggregate, is again such a row, so levels compose.
pub fn best_of(ends: &[End], group: &[(&Row, isize)], out: &mut Vec<(Row, isize)>) {
    let mut best: Row = vec![Value::Null; ends.len() * 2];
    for (row, n) in group {
        if *n <= 0 {
            continue;
        }
        for (j, end) in ends.iter().enumerate() {
            let (order, value) = (&row[2 * j], &row[2 * j + 1]);
            if order.is_null() {
                continue;
            }
            let better = if best[2 * j].is_null() {
                true
            } else {
                let o = compare(order, &best[2 * j]);
                let o = match end {
                    End::Least => o,
                    End::Greatest => o.reverse(),
                };
                o.then_with(|| compare(value, &best[2 * j + 1])).is_lt()
            };
            if better {
                best[2 * j] = order.clone();
                best[2 * j + 1] = value.clone();
            }
        }
    }
    out.push((best, 1));
}

/// SQL's order where it is defined, the values' natural order elsewhere (a total order).
fn compare(a: &Value, b: &Value) -> std::cmp::Ordering {
    a.sql_cmp(b).unwrap_or_else(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_of_keeps_each_aggregates_extreme_and_skips_nulls() {
        let ends = [End::Least, End::Greatest];
        let a = vec![
            Value::Int(3),
            Value::str("a"),
            Value::Int(1),
            Value::str("x"),
        ];
        let b = vec![Value::Int(1), Value::str("b"), Value::Null, Value::Null];
        let c = vec![
            Value::Int(1),
            Value::str("c"),
            Value::Int(9),
            Value::str("y"),
        ];
        let mut out = Vec::new();
        best_of(&ends, &[(&a, 1), (&b, 2), (&c, 1)], &mut out);
        assert_eq!(
            out,
            vec![(
                vec![
                    Value::Int(1),
                    Value::str("b"),
                    Value::Int(9),
                    Value::str("y")
                ],
                1
            )]
        );
        // Retracted rows do not count; an empty group has NULLs.
        let mut out = Vec::new();
        best_of(&ends, &[(&c, -1)], &mut out);
        assert_eq!(out[0].0, vec![Value::Null; 4]);
    }

    #[test]
    fn keep_first_counts_multiplicities() {
        let rows: Vec<Row> = (0..5).map(|i| vec![Value::Int(i)]).collect();
        let group: Vec<(&Row, isize)> = rows.iter().map(|r| (r, 2)).collect();
        let mut out = Vec::new();
        keep_first(&group, &|a, b| b.cmp(a), 1, 3, &mut out);
        assert_eq!(
            out,
            vec![(vec![Value::Int(4)], 1), (vec![Value::Int(3)], 2)]
        );
    }
}
