//! Plans to differential dataflow: one function per plan operator.
//!
//! Every collection is `(Row, u64 time in ms, isize)`. Expressions are cloned into the
//! operators' closures once, at install time; per row only `Expr::eval` runs.

use std::collections::BTreeMap;

use std::collections::hash_map::Entry;

use differential_dataflow::difference::{IsZero, Semigroup};
use differential_dataflow::operators::CountTotal;
use differential_dataflow::AsCollection;
use differential_dataflow::VecCollection;
use petrel_sql::{CmpOp, Expr, JoinKind, Plan, PlanNode, SortKey, TemporalBound};
use petrel_value::{Row, Value};
use rustc_hash::FxHashMap;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use crate::accum::{Accum, AccumLayout};
use crate::aggregate::ValuesLayout;

/// A collection of rows at millisecond timestamps.
pub type Rows<'s> = VecCollection<'s, u64, Row, isize>;

/// What rendering needs besides the plan: the source collections by datasource name and the
/// collection of the dataflow's constant rows.
pub struct Sources<'s> {
    /// Each datasource the plan scans, as a collection.
    pub tables: BTreeMap<String, Rows<'s>>,
    /// A collection holding the single empty row once (from worker 0 only); constant rows and
    /// keyless-aggregate markers are derived from it.
    pub unit: Rows<'s>,
}

/// Renders `plan` over `sources`.
pub fn render<'s>(plan: &Plan, sources: &Sources<'s>) -> Rows<'s> {
    match &plan.node {
        PlanNode::Scan { table } => sources.tables[table].clone(),
        PlanNode::Values { rows } => {
            let rows = rows.clone();
            sources.unit.clone().flat_map(move |_| rows.clone())
        }
        PlanNode::Filter { input, predicate } => {
            let predicate = predicate.clone();
            render(input, sources).filter(move |row| predicate.eval(row).is_true())
        }
        PlanNode::TemporalFilter { input, bounds } => temporal(render(input, sources), bounds),
        PlanNode::Project { input, exprs } => {
            let exprs = exprs.clone();
            render(input, sources).map(move |row| exprs.iter().map(|e| e.eval(&row)).collect())
        }
        PlanNode::Aggregate {
            input,
            keys,
            aggregates,
        } => {
            let input = render(input, sources);
            if aggregates.iter().all(|a| a.func.is_accumulable()) {
                accumulate(input, keys, aggregates, sources)
            } else {
                reduce(input, keys, aggregates, sources)
            }
        }
        PlanNode::Distinct { input } => render(input, sources).distinct(),
        PlanNode::Join {
            left,
            right,
            kind,
            left_keys,
            right_keys,
            residual,
        } => join(
            render(left, sources),
            render(right, sources),
            *kind,
            left_keys,
            right_keys,
            residual.as_ref(),
            right.columns.iter().map(|c| c.ty.default_value()).collect(),
        ),
        PlanNode::Union { inputs } => {
            let mut parts = inputs.iter().map(|p| render(p, sources));
            match parts.next() {
                Some(first) => first.concatenate(parts),
                None => sources.unit.clone().filter(|_| false),
            }
        }
        PlanNode::TopK {
            input,
            order_by,
            limit,
            offset,
            partition_by,
        } => top_k(
            render(input, sources),
            order_by,
            *limit,
            *offset,
            partition_by,
        ),
        PlanNode::ArrayJoin { input, column } => {
            let column = *column;
            render(input, sources).flat_map(move |row| {
                let items = match &row[column] {
                    Value::Array(items) => items.clone(),
                    _ => Vec::new(),
                };
                items.into_iter().map(move |item| {
                    let mut out = row.clone();
                    out[column] = item;
                    out
                })
            })
        }
    }
}

fn eval_all(exprs: &[Expr], row: &[Value]) -> Row {
    exprs.iter().map(|e| e.eval(row)).collect()
}

/// count/sum/avg: contributions accumulate in the difference type (see `accum`).
fn accumulate<'s>(
    input: Rows<'s>,
    keys: &[Expr],
    aggregates: &[petrel_sql::Aggregate],
    sources: &Sources<'s>,
) -> Rows<'s> {
    let layout = AccumLayout::new(aggregates);
    let (k, l) = (keys.to_vec(), layout.clone());
    let mut contributions =
        input.explode(move |row| Some((eval_all(&k, &row), l.contribution(&row))));
    if keys.is_empty() {
        let l = layout.clone();
        contributions = contributions.concat(
            sources
                .unit
                .clone()
                .explode(move |_| Some((Vec::new(), l.presence()))),
        );
    }
    combine(contributions)
        .count_total()
        .map(move |(mut key, acc)| {
            layout.finish(&acc, &mut key);
            key
        })
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

/// Aggregates that need the group's values: a reduce over the cut-down rows.
fn reduce<'s>(
    input: Rows<'s>,
    keys: &[Expr],
    aggregates: &[petrel_sql::Aggregate],
    sources: &Sources<'s>,
) -> Rows<'s> {
    let layout = ValuesLayout::new(aggregates);
    let (k, l) = (keys.to_vec(), layout.clone());
    let mut pairs = input.map(move |row| (eval_all(&k, &row), l.cut(&row)));
    if keys.is_empty() {
        pairs = pairs.concat(sources.unit.clone().map(|_| (Vec::new(), Vec::new())));
    }
    pairs
        .reduce(
            move |_key, group: &[(&Row, isize)], out: &mut Vec<(Row, isize)>| {
                let mut values = Vec::new();
                layout.finish(group, &mut values);
                out.push((values, 1));
            },
        )
        .map(|(mut key, values)| {
            key.extend(values);
            key
        })
}

fn join<'s>(
    left: Rows<'s>,
    right: Rows<'s>,
    kind: JoinKind,
    left_keys: &[Expr],
    right_keys: &[Expr],
    residual: Option<&Expr>,
    right_defaults: Row,
) -> Rows<'s> {
    let (lk, rk) = (left_keys.to_vec(), right_keys.to_vec());
    // NULL keys never match (SQL semantics); such left rows still appear in a left join.
    let keyed_left = left
        .clone()
        .map(move |row| (eval_all(&lk, &row), row))
        .filter(|(k, _)| !k.iter().any(Value::is_null));
    let keyed_right = right
        .map(move |row| (eval_all(&rk, &row), row))
        .filter(|(k, _)| !k.iter().any(Value::is_null));
    let mut matched = keyed_left
        .clone()
        .join_map(keyed_right.clone(), |_k, l, r| {
            let mut row = l.clone();
            row.extend(r.iter().cloned());
            row
        });
    if let Some(residual) = residual {
        let residual = residual.clone();
        matched = matched.filter(move |row| residual.eval(row).is_true());
    }
    if kind != JoinKind::Left {
        return matched;
    }
    let width = right_defaults.len();
    let pad = move |mut row: Row| {
        row.extend(right_defaults.iter().cloned());
        row
    };
    let unmatched = match residual {
        None => {
            let lk = left_keys.to_vec();
            let right_keys_present = keyed_right.map(|(k, _)| k).distinct();
            left.map(move |row| (eval_all(&lk, &row), row))
                .antijoin(right_keys_present)
                .map(|(_, row)| row)
        }
        Some(_) => {
            let matched_left = matched
                .clone()
                .map(move |mut row| {
                    row.truncate(row.len() - width);
                    row
                })
                .distinct();
            left.map(|row| (row, ()))
                .antijoin(matched_left)
                .map(|(row, ())| row)
        }
    };
    matched.concat(unmatched.map(pad))
}

/// `ORDER BY .. LIMIT n BY ..` inside a query: a reduce per partition that keeps the top rows.
fn top_k<'s>(
    input: Rows<'s>,
    order_by: &[SortKey],
    limit: Option<u64>,
    offset: u64,
    partition_by: &[Expr],
) -> Rows<'s> {
    let (order, part) = (order_by.to_vec(), partition_by.to_vec());
    let order_exprs: Vec<Expr> = order.iter().map(|s| s.expr.clone()).collect();
    input
        .map(move |row| (eval_all(&part, &row), row))
        .reduce(
            move |_key, group: &[(&Row, isize)], out: &mut Vec<(Row, isize)>| {
                let mut rows: Vec<(Row, &Row, isize)> = group
                    .iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(r, n)| (eval_all(&order_exprs, r), *r, *n))
                    .collect();
                rows.sort_by(|a, b| {
                    compare_sort_keys(&order, &a.0, &b.0).then_with(|| a.1.cmp(b.1))
                });
                let mut skip = offset as isize;
                let mut take = limit.map(|l| l as isize).unwrap_or(isize::MAX);
                for (_, row, n) in rows {
                    let skipped = skip.min(n);
                    skip -= skipped;
                    let keep = (n - skipped).min(take);
                    if keep > 0 {
                        out.push((row.clone(), keep));
                        take -= keep;
                    }
                    if take == 0 {
                        break;
                    }
                }
            },
        )
        .map(|(_, row)| row)
}

/// Compares two rows of evaluated sort keys by `order` (ClickHouse: NULLs last by default).
pub fn compare_sort_keys(order: &[SortKey], a: &[Value], b: &[Value]) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    for (i, key) in order.iter().enumerate() {
        let (x, y) = (&a[i], &b[i]);
        let o = match (x.is_null(), y.is_null()) {
            (true, true) => Ordering::Equal,
            (true, false) => {
                if key.nulls_first {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            (false, true) => {
                if key.nulls_first {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            _ => {
                let o = x.sql_cmp(y).unwrap_or(Ordering::Equal);
                if key.desc {
                    o.reverse()
                } else {
                    o
                }
            }
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// Temporal filters: a row is valid over a time interval derived from its own values, so it
/// is inserted when the interval starts (or when it arrives, if later) and retracted when the
/// interval ends. The clock's ticks make those future updates happen (Materialize's model).
fn temporal<'s>(input: Rows<'s>, bounds: &[TemporalBound]) -> Rows<'s> {
    let bounds = bounds.to_vec();
    input.join_function(move |row| {
        let mut lower = 0u64;
        let mut upper = u64::MAX;
        for b in &bounds {
            let Some(secs) = b.expr.eval(&row).epoch_seconds() else {
                return Vec::new();
            };
            // expr op now + offset  <=>  now  op'  expr - offset
            let pivot = (secs * 1000.0).floor() as i64 - b.offset_ms;
            let pivot = pivot.max(0) as u64;
            match b.op {
                // now < expr - off: valid while now <= pivot - 1
                CmpOp::Gt => upper = upper.min(pivot),
                // now <= pivot
                CmpOp::Ge => upper = upper.min(pivot.saturating_add(1)),
                // now > pivot
                CmpOp::Lt => lower = lower.max(pivot.saturating_add(1)),
                // now >= pivot
                CmpOp::Le => lower = lower.max(pivot),
            }
        }
        if lower >= upper {
            return Vec::new();
        }
        let mut out = vec![(row.clone(), lower, 1isize)];
        if upper != u64::MAX {
            out.push((row, upper, -1));
        }
        out
    })
}
