//! Aggregates computed from all of a group's values at once: what `groupArray` and
//! `groupUniqArray` need (their result is every value), and the reference evaluation of every
//! aggregate that tests check the incremental families against (`quantile` among them).
//!
//! Each input row is cut down to the values the aggregates read (and one flag per `-If`
//! condition), so a group's memory is the aggregates' arguments, not whole rows.

use std::collections::HashSet;

use petrel_sql::{AggFunc, Aggregate};
use petrel_value::{Row, Value, F64};

/// Where each aggregate finds its arguments in the cut-down row.
#[derive(Clone, Debug)]
pub struct ValuesLayout {
    aggregates: Vec<(Aggregate, usize, Option<usize>)>,
}

impl ValuesLayout {
    /// Lays out the argument values (and `-If` flags) of `aggregates`.
    pub fn new(aggregates: &[Aggregate]) -> ValuesLayout {
        let mut at = 0;
        let mut out = Vec::new();
        for agg in aggregates {
            let args_at = at;
            at += agg.args.len();
            let flag_at = agg.filter.as_ref().map(|_| {
                at += 1;
                at - 1
            });
            out.push((agg.clone(), args_at, flag_at));
        }
        ValuesLayout { aggregates: out }
    }

    /// The values one input row contributes: arguments, then flags, per aggregate.
    pub fn cut(&self, row: &[Value]) -> Row {
        let mut out = Vec::new();
        for (agg, _, _) in &self.aggregates {
            out.extend(agg.args.iter().map(|a| a.eval(row)));
            if let Some(f) = &agg.filter {
                out.push(Value::Bool(f.eval(row).is_true()));
            }
        }
        out
    }

    /// Computes every aggregate over a group's cut-down rows with their multiplicities, and
    /// appends the results to `out`. Rows of length zero are presence markers and skipped.
    pub fn finish(&self, group: &[(&Row, isize)], out: &mut Row) {
        for (agg, args_at, flag_at) in &self.aggregates {
            let rows = group
                .iter()
                .filter(|(r, n)| *n > 0 && !r.is_empty() && flag_at.is_none_or(|f| r[f].is_true()));
            let arg = |r: &Row, i: usize| r[args_at + i].clone();
            let non_null = || {
                rows.clone()
                    .filter(|(r, _)| agg.args.is_empty() || !r[*args_at].is_null())
            };
            let v = match agg.func {
                AggFunc::Count => Value::UInt(non_null().map(|(_, n)| *n as u64).sum()),
                AggFunc::Sum => sum(non_null().map(|(r, n)| (arg(r, 0), *n)), &agg.ty),
                AggFunc::Avg => {
                    let (mut s, mut c) = (0f64, 0i64);
                    for (r, n) in non_null() {
                        s += r[*args_at].as_f64().unwrap_or(0.0) * *n as f64;
                        c += *n as i64;
                    }
                    Value::Float(F64(if c == 0 { f64::NAN } else { s / c as f64 }))
                }
                AggFunc::Min | AggFunc::Any => extreme(non_null().map(|(r, _)| arg(r, 0)), false),
                AggFunc::Max | AggFunc::AnyLast => {
                    extreme(non_null().map(|(r, _)| arg(r, 0)), true)
                }
                AggFunc::UniqExactArray => {
                    let mut set: HashSet<&Value> = HashSet::new();
                    for (r, _) in non_null() {
                        if let Value::Array(items) = &r[*args_at] {
                            set.extend(items.iter());
                        }
                    }
                    Value::UInt(set.len() as u64)
                }
                AggFunc::Uniq | AggFunc::UniqExact => {
                    let set: HashSet<Row> = non_null()
                        .map(|(r, _)| r[*args_at..*args_at + agg.args.len()].to_vec())
                        .collect();
                    Value::UInt(set.len() as u64)
                }
                AggFunc::Quantile => {
                    let p = agg.params.first().and_then(Value::as_f64).unwrap_or(0.5);
                    let mut xs: Vec<f64> = Vec::new();
                    for (r, n) in non_null() {
                        if let Some(x) = r[*args_at].as_f64() {
                            xs.extend(std::iter::repeat_n(x, *n as usize));
                        }
                    }
                    // Over no values: NULL for a Nullable argument, NaN otherwise (ClickHouse).
                    if xs.is_empty() && agg.ty.is_nullable() {
                        Value::Null
                    } else {
                        quantile(&mut xs, p)
                    }
                }
                AggFunc::ArgMax | AggFunc::ArgMin => {
                    let want_max = agg.func == AggFunc::ArgMax;
                    let mut best: Option<(Value, Value)> = None;
                    for (r, _) in rows.clone() {
                        let (a, v) = (arg(r, 0), arg(r, 1));
                        if v.is_null() {
                            continue;
                        }
                        // Ties on the value go to the largest argument for argMax and the
                        // smallest for argMin, so the result does not depend on row order.
                        let better = match &best {
                            None => true,
                            Some((ba, bv)) => {
                                let o = v
                                    .sql_cmp(bv)
                                    .unwrap_or(std::cmp::Ordering::Equal)
                                    .then_with(|| a.sql_cmp(ba).unwrap_or_else(|| a.cmp(ba)));
                                if want_max {
                                    o.is_gt()
                                } else {
                                    o.is_lt()
                                }
                            }
                        };
                        if better {
                            best = Some((a, v));
                        }
                    }
                    best.map(|(a, _)| a).unwrap_or(Value::Null)
                }
                AggFunc::GroupArray => {
                    let mut items = Vec::new();
                    for (r, n) in non_null() {
                        items.extend(std::iter::repeat_n(arg(r, 0), *n as usize));
                    }
                    Value::Array(items.into())
                }
                AggFunc::GroupUniqArray => {
                    let mut items: Vec<Value> = non_null().map(|(r, _)| arg(r, 0)).collect();
                    items.sort();
                    items.dedup();
                    Value::Array(items.into())
                }
            };
            out.push(if v.is_null() && !agg.ty.is_nullable() {
                agg.ty.default_value()
            } else {
                v
            });
        }
    }
}

fn sum(values: impl Iterator<Item = (Value, isize)>, ty: &petrel_value::ColumnType) -> Value {
    use petrel_value::ColumnType;
    match ty.base() {
        ColumnType::Float32 | ColumnType::Float64 => Value::Float(F64(values
            .map(|(v, n)| v.as_f64().unwrap_or(0.0) * n as f64)
            .sum())),
        ColumnType::UInt(_) => Value::UInt(
            values
                .map(|(v, n)| v.as_f64().unwrap_or(0.0) as i128 * n as i128)
                .sum::<i128>() as u64,
        ),
        _ => Value::Int(
            values
                .map(|(v, n)| {
                    let x = match v {
                        Value::Int(i) => i as i128,
                        Value::UInt(u) => u as i128,
                        other => other.as_f64().unwrap_or(0.0) as i128,
                    };
                    x * n as i128
                })
                .sum::<i128>() as i64,
        ),
    }
}

fn extreme(values: impl Iterator<Item = Value>, max: bool) -> Value {
    let mut best: Option<Value> = None;
    for v in values {
        let replace = match &best {
            None => true,
            Some(b) => {
                let o = v.sql_cmp(b).unwrap_or(std::cmp::Ordering::Equal);
                if max {
                    o.is_gt()
                } else {
                    o.is_lt()
                }
            }
        };
        if replace {
            best = Some(v);
        }
    }
    best.unwrap_or(Value::Null)
}

/// ClickHouse's interpolating quantile over all values (exact where ClickHouse samples).
pub(crate) fn quantile(xs: &mut [f64], p: f64) -> Value {
    if xs.is_empty() {
        return Value::Float(F64(f64::NAN));
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let pos = p.clamp(0.0, 1.0) * (xs.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(xs.len() - 1);
    let frac = pos - lo as f64;
    // ClickHouse's form of the interpolation, so results agree to the last bit.
    Value::Float(F64(xs[lo] * (1.0 - frac) + xs[hi] * frac))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates() {
        assert_eq!(quantile(&mut [1.0, 2.0], 0.5), Value::Float(F64(1.5)));
        // ClickHouse's a·(1-f) + b·f, to the last bit.
        assert_eq!(
            quantile(&mut [61.0, 62.0], 0.5),
            Value::Float(F64(61.0 * 0.5 + 62.0 * 0.5))
        );
        assert_eq!(quantile(&mut [3.0, 1.0, 2.0], 0.5), Value::Float(F64(2.0)));
    }
}
