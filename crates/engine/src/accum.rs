//! Aggregates that live in the difference type.
//!
//! `count`, `sum` and `avg` are abelian: each input row maps to a small vector of integers
//! (its contribution), differential dataflow adds the vectors of a group as it consolidates,
//! and a retraction subtracts exactly. A group therefore costs one record whatever its row
//! count (Principle 3). Float sums are kept in fixed point (2^-32 units) in an `i128`, so a
//! retraction cancels its insertion bit for bit instead of drifting as `f64` sums do.

use differential_dataflow::difference::{Abelian, IsZero, Monoid, Multiply, Semigroup};
use petrel_sql::{AggFunc, Aggregate};
use petrel_value::{ColumnType, Value, F64};
use serde::{Deserialize, Serialize};
use smallvec::{smallvec, SmallVec};

/// Fixed-point scale of float sums: values are stored as `round(x * 2^32)`.
const FIXED_SCALE: f64 = 4_294_967_296.0;

/// A vector of integer accumulators: the difference type of accumulable aggregations.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Accum(pub SmallVec<[i128; 4]>);

impl IsZero for Accum {
    fn is_zero(&self) -> bool {
        self.0.iter().all(|x| *x == 0)
    }
}

impl Semigroup for Accum {
    fn plus_equals(&mut self, rhs: &Self) {
        if self.0.len() < rhs.0.len() {
            self.0.resize(rhs.0.len(), 0);
        }
        for (a, b) in self.0.iter_mut().zip(rhs.0.iter()) {
            *a += b;
        }
    }
}

impl Monoid for Accum {
    fn zero() -> Self {
        Accum(SmallVec::new())
    }
}

impl Abelian for Accum {
    fn negate(&mut self) {
        for a in self.0.iter_mut() {
            *a = -*a;
        }
    }
}

impl Multiply<isize> for Accum {
    type Output = Accum;
    fn multiply(mut self, rhs: &isize) -> Accum {
        for a in self.0.iter_mut() {
            *a *= *rhs as i128;
        }
        self
    }
}

/// How one aggregate uses the accumulator slots.
#[derive(Clone, Debug)]
enum Slot {
    /// `count`: one slot, the number of contributing rows.
    Count { at: usize },
    /// `sum` over integers: the exact sum.
    SumInt { at: usize, unsigned: bool },
    /// `sum` over floats: the fixed-point sum.
    SumFloat { at: usize },
    /// `avg`: fixed-point sum and count.
    Avg { at: usize },
}

/// The layout of an accumulable aggregation: slot 0 counts the group's rows (so an empty group
/// vanishes), slot 1 is the constant "present" marker of a keyless aggregation (so it has a row
/// over no input, as SQL requires), then each aggregate's slots.
#[derive(Clone, Debug)]
pub struct AccumLayout {
    aggregates: Vec<(Aggregate, Slot)>,
    width: usize,
}

impl AccumLayout {
    /// Lays out the slots of `aggregates`, which must all be accumulable.
    pub fn new(aggregates: &[Aggregate]) -> AccumLayout {
        let mut width = 2;
        let mut out = Vec::new();
        for agg in aggregates {
            let slot = match agg.func {
                AggFunc::Count => Slot::Count { at: width },
                AggFunc::Sum => match agg.ty.base() {
                    ColumnType::Float32 | ColumnType::Float64 => Slot::SumFloat { at: width },
                    ColumnType::UInt(_) => Slot::SumInt {
                        at: width,
                        unsigned: true,
                    },
                    _ => Slot::SumInt {
                        at: width,
                        unsigned: false,
                    },
                },
                _ => Slot::Avg { at: width },
            };
            width += if matches!(slot, Slot::Avg { .. }) {
                2
            } else {
                1
            };
            out.push((agg.clone(), slot));
        }
        AccumLayout {
            aggregates: out,
            width,
        }
    }

    /// The contribution of one input row.
    pub fn contribution(&self, row: &[Value]) -> Accum {
        let mut acc: SmallVec<[i128; 4]> = smallvec![0i128; self.width];
        acc[0] = 1;
        for (agg, slot) in &self.aggregates {
            if let Some(filter) = &agg.filter {
                if !filter.eval(row).is_true() {
                    continue;
                }
            }
            let arg = agg.args.first().map(|a| a.eval(row));
            match slot {
                Slot::Count { at } => {
                    if !arg.as_ref().is_some_and(Value::is_null) {
                        acc[*at] = 1;
                    }
                }
                Slot::SumInt { at, .. } => {
                    acc[*at] = match arg {
                        Some(Value::Int(i)) => i as i128,
                        Some(Value::UInt(u)) => u as i128,
                        Some(Value::Bool(b)) => b as i128,
                        Some(Value::Float(f)) => f.0 as i128,
                        _ => 0,
                    }
                }
                Slot::SumFloat { at } => {
                    acc[*at] = arg.and_then(|v| v.as_f64()).map(to_fixed).unwrap_or(0);
                }
                Slot::Avg { at } => {
                    if let Some(f) = arg.and_then(|v| v.as_f64()) {
                        acc[*at] = to_fixed(f);
                        acc[*at + 1] = 1;
                    }
                }
            }
        }
        acc.truncate(self.width);
        Accum(acc)
    }

    /// How many accumulator slots a row's contribution has.
    pub fn width(&self) -> usize {
        self.width
    }

    /// The marker that gives a keyless aggregation its row over empty input.
    pub fn presence(&self) -> Accum {
        let mut acc: SmallVec<[i128; 4]> = smallvec![0i128; 2];
        acc[1] = 1;
        Accum(acc)
    }

    /// Writes the `i`-th aggregate's output value for a group's accumulators (`get` gives them
    /// slot by slot, 0 past the group's) into `place` (NULL past the aggregates): one value, so
    /// a group's output row is built without a vector of them all, and made where it lies in
    /// the row (a value made apart and moved in was read back before the stores that made it
    /// were done). No slot makes a NULL; the caller gives a NULL its type's default.
    #[inline]
    pub fn write_value(&self, get: impl Fn(usize) -> i128, i: usize, place: &mut Value) {
        let Some((_, slot)) = self.aggregates.get(i) else {
            place.set(Value::Null);
            return;
        };
        match slot {
            Slot::Count { at } => place.set(Value::UInt(get(*at).max(0) as u64)),
            Slot::SumInt { at, unsigned } => place.set(if *unsigned {
                Value::UInt(get(*at) as u64)
            } else {
                Value::Int(get(*at) as i64)
            }),
            Slot::SumFloat { at } => place.set(Value::Float(F64(from_fixed(get(*at))))),
            Slot::Avg { at } => {
                let n = get(*at + 1);
                place.set(if n == 0 {
                    Value::Float(F64(f64::NAN))
                } else {
                    Value::Float(F64(from_fixed(get(*at)) / n as f64))
                })
            }
        }
    }
}

fn to_fixed(f: f64) -> i128 {
    if f.is_finite() {
        (f * FIXED_SCALE).round() as i128
    } else {
        0
    }
}

fn from_fixed(v: i128) -> f64 {
    v as f64 / FIXED_SCALE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_sums_cancel_exactly() {
        let mut total = Accum(smallvec![0, 0, to_fixed(0.1)]);
        let mut x = Accum(smallvec![0, 0, to_fixed(1e-7)]);
        total.plus_equals(&x);
        x.negate();
        total.plus_equals(&x);
        assert_eq!(total, Accum(smallvec![0, 0, to_fixed(0.1)]));
        assert!((from_fixed(total.0[2]) - 0.1).abs() < 1e-9);
    }
}
