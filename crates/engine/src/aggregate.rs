//! GROUP BY: each aggregate maintained in time proportional to the change.
//!
//! An aggregation is split into families, each rendered the cheap way for its kind, and
//! their per-key results are collated into the output row:
//! - **accumulable** (`count`, `sum`, `avg`, and the group's row count that says whether the
//!   group exists): contributions added up in the difference type (see `accum`);
//! - **distinct counts** (`uniq`, `uniqExact`, `count(DISTINCT)`): distinct `(key, value)`
//!   pairs, then a count per key in the difference type;
//! - **extremes** (`min`, `max`, `argMin`, `argMax`, `any`, `anyLast`): one hierarchical
//!   reduction for all of them (see `hierarchical`);
//! - **whole-group** (`quantile`, `median`, `groupArray`, `groupUniqArray`): a reduce over the
//!   arguments of these aggregates only.
//!
//! The collation is a reduce per key over one record per family, so its cost per changed
//! key is the number of families, not the group's size.

use std::collections::hash_map::Entry;

use differential_dataflow::difference::{IsZero, Semigroup};
use differential_dataflow::operators::CountTotal;
use differential_dataflow::AsCollection;
use differential_dataflow::VecCollection;
use petrel_sql::{AggFunc, Aggregate, Expr};
use petrel_value::{Row, Value};
use rustc_hash::FxHashMap;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use crate::accum::{Accum, AccumLayout};
use crate::hierarchical::{self, End, Keyed};
use crate::render::Rows;
use crate::values::ValuesLayout;

/// The family an aggregate is maintained in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Accumulable,
    Distinct,
    Extreme(End),
    WholeGroup,
}

fn family(func: AggFunc) -> Family {
    match func {
        AggFunc::Count | AggFunc::Sum | AggFunc::Avg => Family::Accumulable,
        AggFunc::Uniq | AggFunc::UniqExact | AggFunc::UniqExactArray => Family::Distinct,
        AggFunc::Min | AggFunc::Any | AggFunc::ArgMin => Family::Extreme(End::Least),
        AggFunc::Max | AggFunc::AnyLast | AggFunc::ArgMax => Family::Extreme(End::Greatest),
        AggFunc::Quantile | AggFunc::GroupArray | AggFunc::GroupUniqArray => Family::WholeGroup,
    }
}

/// Tags of the collated records (the first cell of each): accumulable, extremes,
/// whole-group, then one per distinct-count aggregate.
const TAG_ACCUMULABLE: u64 = 0;
const TAG_EXTREMES: u64 = 1;
const TAG_WHOLE_GROUP: u64 = 2;
const TAG_DISTINCT: u64 = 3;

fn eval_all(exprs: &[Expr], row: &[Value]) -> Row {
    exprs.iter().map(|e| e.eval(row)).collect()
}

/// Renders `GROUP BY keys` with `aggregates` over `input`; `unit` holds one empty row, which
/// gives a keyless aggregation its row over empty input.
pub fn render<'s>(
    input: Rows<'s>,
    keys: &[Expr],
    aggregates: &[Aggregate],
    unit: &Rows<'s>,
) -> Rows<'s> {
    let of = |f: &dyn Fn(Family) -> bool| -> Vec<usize> {
        (0..aggregates.len())
            .filter(|&i| f(family(aggregates[i].func)))
            .collect()
    };
    let accumulable = of(&|f| f == Family::Accumulable);
    let acc_aggs: Vec<Aggregate> = accumulable.iter().map(|&i| aggregates[i].clone()).collect();
    if accumulable.len() == aggregates.len() {
        let layout = AccumLayout::new(&acc_aggs);
        return accumulate(input, keys, &layout, unit).map(move |(mut key, acc)| {
            layout.finish(&acc, &mut key);
            key
        });
    }
    let extremes = of(&|f| matches!(f, Family::Extreme(_)));
    let whole = of(&|f| f == Family::WholeGroup);
    let distinct = of(&|f| f == Family::Distinct);

    let layout = AccumLayout::new(&acc_aggs);
    let acc_layout = layout.clone();
    let mut parts = accumulate(input.clone(), keys, &layout, unit).map(move |(key, acc)| {
        let mut values = vec![Value::UInt(TAG_ACCUMULABLE)];
        acc_layout.finish(&acc, &mut values);
        (key, values)
    });
    if !extremes.is_empty() {
        let aggs: Vec<Aggregate> = extremes.iter().map(|&i| aggregates[i].clone()).collect();
        parts = parts.concat(extreme_part(input.clone(), keys, &aggs));
    }
    if !whole.is_empty() {
        let aggs: Vec<Aggregate> = whole.iter().map(|&i| aggregates[i].clone()).collect();
        parts = parts.concat(whole_group_part(input.clone(), keys, &aggs));
    }
    for (j, &i) in distinct.iter().enumerate() {
        let tag = TAG_DISTINCT + j as u64;
        parts = parts.concat(distinct_part(input.clone(), keys, &aggregates[i], tag));
    }

    // The value of each aggregate for a group where its family has no record.
    let empty_whole = {
        let aggs: Vec<Aggregate> = whole.iter().map(|&i| aggregates[i].clone()).collect();
        let mut out = Vec::new();
        ValuesLayout::new(&aggs).finish(&[], &mut out);
        out
    };
    let aggregates = aggregates.to_vec();
    parts
        .reduce(
            move |_key, group: &[(&Row, isize)], out: &mut Vec<(Row, isize)>| {
                let mut values: Vec<Option<Value>> = vec![None; aggregates.len()];
                let mut present = false;
                for (record, n) in group {
                    if *n <= 0 {
                        continue;
                    }
                    let tag = record[0].as_i64().unwrap_or(-1) as u64;
                    let cells = &record[1..];
                    match tag {
                        TAG_ACCUMULABLE => {
                            present = true;
                            for (&i, v) in accumulable.iter().zip(cells) {
                                values[i] = Some(v.clone());
                            }
                        }
                        TAG_EXTREMES => {
                            for (&i, v) in extremes.iter().zip(cells.iter().skip(1).step_by(2)) {
                                values[i] = Some(v.clone());
                            }
                        }
                        TAG_WHOLE_GROUP => {
                            for (&i, v) in whole.iter().zip(cells) {
                                values[i] = Some(v.clone());
                            }
                        }
                        t => {
                            if let Some(&i) = distinct.get((t - TAG_DISTINCT) as usize) {
                                values[i] = cells.first().cloned();
                            }
                        }
                    }
                }
                if !present {
                    return;
                }
                let row: Row = values
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| {
                        let agg = &aggregates[i];
                        let v = v.unwrap_or_else(|| match family(agg.func) {
                            Family::Distinct => Value::UInt(0),
                            Family::WholeGroup => whole
                                .iter()
                                .position(|&w| w == i)
                                .and_then(|p| empty_whole.get(p).cloned())
                                .unwrap_or(Value::Null),
                            _ => Value::Null,
                        });
                        if v.is_null() && !agg.ty.is_nullable() {
                            agg.ty.default_value()
                        } else {
                            v
                        }
                    })
                    .collect();
                out.push((row, 1));
            },
        )
        .map(|(mut key, values)| {
            key.extend(values);
            key
        })
}

/// The accumulable family: each key's accumulated contributions (slot 0 counts the group's
/// rows, so a group with no rows has no record).
fn accumulate<'s>(
    input: Rows<'s>,
    keys: &[Expr],
    layout: &AccumLayout,
    unit: &Rows<'s>,
) -> VecCollection<'s, u64, (Row, Accum), isize> {
    let (k, l) = (keys.to_vec(), layout.clone());
    let mut contributions =
        input.explode(move |row| Some((eval_all(&k, &row), l.contribution(&row))));
    if keys.is_empty() {
        let l = layout.clone();
        contributions = contributions.concat(
            unit.clone()
                .explode(move |_| Some((Vec::new(), l.presence()))),
        );
    }
    combine(contributions).count_total()
}

/// Adds up the contributions of each key within each batch before they are exchanged and
/// arranged, so the arrangement sorts one record per key and batch instead of one per row (a
/// combiner, as in MapReduce). With a few thousand groups this removes most of ingest's sorting.
fn combine<'s>(
    contributions: VecCollection<'s, u64, Row, Accum>,
) -> VecCollection<'s, u64, Row, Accum> {
    contributions
        .inner
        .unary::<CapacityContainerBuilder<Vec<(Row, u64, Accum)>>, _, _, _>(
            Pipeline,
            "Combine",
            |_, _| {
                let mut sums: FxHashMap<(Row, u64), Accum> = FxHashMap::default();
                move |input, output| {
                    input.for_each(|cap, data| {
                        for (key, time, acc) in data.drain(..) {
                            match sums.entry((key, time)) {
                                Entry::Occupied(mut e) => e.get_mut().plus_equals(&acc),
                                Entry::Vacant(e) => {
                                    e.insert(acc);
                                }
                            }
                        }
                        let mut session = output.session(&cap);
                        for ((key, time), acc) in sums.drain() {
                            if !acc.is_zero() {
                                session.give((key, time, acc));
                            }
                        }
                    });
                }
            },
        )
        .as_collection()
}

/// A distinct count: the distinct `(key, value)` pairs (array elements for `uniqExactArray`),
/// then a count per key in the difference type.
fn distinct_part<'s>(input: Rows<'s>, keys: &[Expr], agg: &Aggregate, tag: u64) -> Keyed<'s> {
    let (k, args, filter) = (keys.to_vec(), agg.args.clone(), agg.filter.clone());
    let arrays = agg.func == AggFunc::UniqExactArray;
    input
        .flat_map(move |row| {
            let included = filter.as_ref().is_none_or(|f| f.eval(&row).is_true());
            let values = eval_all(&args, &row);
            let key = eval_all(&k, &row);
            let mut out: Vec<(Row, Row)> = Vec::new();
            if included && !values.first().is_some_and(Value::is_null) {
                if arrays {
                    if let Some(Value::Array(items)) = values.into_iter().next() {
                        out.extend(items.into_iter().map(|item| (key.clone(), vec![item])));
                    }
                } else {
                    out.push((key, values));
                }
            }
            out
        })
        .distinct()
        .map(|(key, _)| key)
        .count_total()
        .map(move |(key, n)| (key, vec![Value::UInt(tag), Value::UInt(n.max(0) as u64)]))
}

/// The extremes: per aggregate an ordering value and the value returned (`argMax(a, v)`
/// orders by v and returns a), reduced hierarchically.
fn extreme_part<'s>(input: Rows<'s>, keys: &[Expr], aggs: &[Aggregate]) -> Keyed<'s> {
    let k = keys.to_vec();
    let aggs_row = aggs.to_vec();
    let candidates = input.map(move |row| {
        let mut cells = Vec::with_capacity(aggs_row.len() * 2);
        for agg in &aggs_row {
            let included = agg.filter.as_ref().is_none_or(|f| f.eval(&row).is_true());
            let (order, value) = match (included, agg.func) {
                (false, _) => (Value::Null, Value::Null),
                (true, AggFunc::ArgMin | AggFunc::ArgMax) => {
                    (agg.args[1].eval(&row), agg.args[0].eval(&row))
                }
                (true, _) => {
                    let v = agg.args[0].eval(&row);
                    (v.clone(), v)
                }
            };
            cells.push(order);
            cells.push(value);
        }
        (eval_all(&k, &row), cells)
    });
    let ends: Vec<End> = aggs
        .iter()
        .map(|a| match family(a.func) {
            Family::Extreme(end) => end,
            _ => End::Least,
        })
        .collect();
    let last_ends = ends.clone();
    hierarchical::reduce(
        candidates,
        move |group, out| hierarchical::best_of(&ends, group, out),
        move |group, out| hierarchical::best_of(&last_ends, group, out),
    )
    .map(|(key, best)| {
        let mut record = vec![Value::UInt(TAG_EXTREMES)];
        record.extend(best);
        (key, record)
    })
}

/// The aggregates that need every value of the group: one reduce over their arguments.
fn whole_group_part<'s>(input: Rows<'s>, keys: &[Expr], aggs: &[Aggregate]) -> Keyed<'s> {
    let layout = ValuesLayout::new(aggs);
    let (k, l) = (keys.to_vec(), layout.clone());
    input
        .map(move |row| (eval_all(&k, &row), l.cut(&row)))
        .reduce(
            move |_key, group: &[(&Row, isize)], out: &mut Vec<(Row, isize)>| {
                let mut values = vec![Value::UInt(TAG_WHOLE_GROUP)];
                layout.finish(group, &mut values);
                out.push((values, 1));
            },
        )
}
