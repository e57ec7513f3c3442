//! GROUP BY: every aggregate maintained in time proportional to the change.
//!
//! Each input row becomes its group key and a contribution: the accumulable aggregates'
//! integers (`count`, `sum`, `avg`, and the group's row count, see `accum`), one cell per
//! distinct-count or extreme aggregate, and the arguments of the aggregates that need the
//! whole group. A [`GroupState`] per key folds contributions in time order (see `keyed`):
//! - **accumulable**: added up; a group costs a few integers whatever its row count;
//! - **distinct counts** (`uniq`, `uniqExact`, `count(DISTINCT)`): a map from value to
//!   multiplicity; the count is its size, exact under retraction;
//! - **extremes** (`min`, `max`, `argMin`, `argMax`, `any`, `anyLast`): an ordered map of the
//!   distinct (ordering value, returned value) pairs; the result is its first or last entry,
//!   found in O(log n) and exact when the current extreme is retracted;
//! - **whole-group** (`quantile`, `median`, `groupArray`, `groupUniqArray`): an ordered map of
//!   their arguments, evaluated for a group when it changes (their result depends on every
//!   value).
//!
//! So a change costs its own updates plus one output row per touched group, never a re-read
//! of the group, except for the whole-group aggregates.

use std::collections::hash_map::Entry;
use std::collections::BTreeMap;
use std::sync::Arc;

use differential_dataflow::difference::{IsZero, Multiply, Semigroup};
use differential_dataflow::AsCollection;
use differential_dataflow::VecCollection;
use petrel_sql::{AggFunc, Aggregate, Expr};
use petrel_value::{Row, Value};
use rustc_hash::FxHashMap;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use crate::accum::{Accum, AccumLayout};
use crate::guard::Guard;
use crate::keyed::{fold_by_key, KeyedState};
use crate::render::Rows;
use crate::values::ValuesLayout;

/// How a distinct-count or extreme aggregate keeps its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    /// Distinct values (each cell is a tuple of the arguments).
    Distinct,
    /// Distinct array elements (`uniqExactArray`: each cell is an array).
    DistinctElements,
    /// The smallest (ordering, value) pair.
    Least,
    /// The largest (ordering, value) pair.
    Greatest,
}

/// Where an aggregate's result comes from.
#[derive(Clone, Copy, Debug)]
enum Source {
    Accumulated(usize),
    Part(usize),
    WholeGroup(usize),
}

/// An aggregation's plan: which aggregates go where, and how a row contributes.
struct GroupLayout {
    aggregates: Vec<Aggregate>,
    keys: Vec<Expr>,
    accumulated: AccumLayout,
    /// The distinct-count and extreme aggregates with their kind.
    parts: Vec<(Aggregate, Part)>,
    whole: ValuesLayout,
    sources: Vec<Source>,
}

impl GroupLayout {
    fn new(keys: &[Expr], aggregates: &[Aggregate]) -> GroupLayout {
        let (mut acc, mut parts, mut whole, mut sources) = (vec![], vec![], vec![], vec![]);
        for agg in aggregates {
            let part = match agg.func {
                AggFunc::Count | AggFunc::Sum | AggFunc::Avg => None,
                AggFunc::Uniq | AggFunc::UniqExact => Some(Part::Distinct),
                AggFunc::UniqExactArray => Some(Part::DistinctElements),
                AggFunc::Min | AggFunc::Any | AggFunc::ArgMin => Some(Part::Least),
                AggFunc::Max | AggFunc::AnyLast | AggFunc::ArgMax => Some(Part::Greatest),
                AggFunc::Quantile | AggFunc::GroupArray | AggFunc::GroupUniqArray => {
                    sources.push(Source::WholeGroup(whole.len()));
                    whole.push(agg.clone());
                    continue;
                }
            };
            match part {
                None => {
                    sources.push(Source::Accumulated(acc.len()));
                    acc.push(agg.clone());
                }
                Some(part) => {
                    sources.push(Source::Part(parts.len()));
                    parts.push((agg.clone(), part));
                }
            }
        }
        GroupLayout {
            aggregates: aggregates.to_vec(),
            keys: keys.to_vec(),
            accumulated: AccumLayout::new(&acc),
            parts,
            whole: ValuesLayout::new(&whole),
            sources,
        }
    }

    /// True when every aggregate accumulates (the contributions can be pre-summed).
    fn only_accumulated(&self) -> bool {
        self.parts.is_empty()
            && self
                .sources
                .iter()
                .all(|s| matches!(s, Source::Accumulated(_)))
    }

    /// One cell per distinct/extreme aggregate (NULL: the row does not contribute), then the
    /// whole-group aggregates' arguments.
    fn cells(&self, row: &[Value]) -> Row {
        let mut out = Vec::with_capacity(self.parts.len());
        for (agg, part) in &self.parts {
            let included = agg.filter.as_ref().is_none_or(|f| f.eval(row).is_true());
            let cell = if !included {
                Value::Null
            } else {
                match part {
                    Part::Distinct => {
                        let args: Row = agg.args.iter().map(|a| a.eval(row)).collect();
                        if args.first().is_some_and(Value::is_null) {
                            Value::Null
                        } else {
                            Value::Tuple(args)
                        }
                    }
                    Part::DistinctElements => agg.args[0].eval(row),
                    Part::Least | Part::Greatest => {
                        let (order, value) = match agg.func {
                            AggFunc::ArgMin | AggFunc::ArgMax => {
                                (agg.args[1].eval(row), agg.args[0].eval(row))
                            }
                            _ => {
                                let v = agg.args[0].eval(row);
                                (v.clone(), v)
                            }
                        };
                        if order.is_null() {
                            Value::Null
                        } else {
                            Value::Tuple(vec![order, value])
                        }
                    }
                }
            };
            out.push(cell);
        }
        out.extend(self.whole.cut(row));
        out
    }
}

/// A value ordered as SQL orders it where that is defined, and naturally elsewhere (so the
/// order is total).
#[derive(Clone, Debug, PartialEq, Eq)]
struct SqlOrdered(Value);

impl Ord for SqlOrdered {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0
            .sql_cmp(&other.0)
            .unwrap_or_else(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for SqlOrdered {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The state of one distinct-count or extreme aggregate for one group.
enum PartState {
    Distinct(FxHashMap<Value, isize>),
    Ordered(BTreeMap<(SqlOrdered, SqlOrdered), isize>),
}

impl PartState {
    fn is_empty(&self) -> bool {
        match self {
            PartState::Distinct(m) => m.is_empty(),
            PartState::Ordered(m) => m.is_empty(),
        }
    }
}

/// Adds `diff` to `key`'s multiplicity, forgetting it at zero.
fn bump<K: Ord>(map: &mut BTreeMap<K, isize>, key: K, diff: isize) {
    match map.entry(key) {
        std::collections::btree_map::Entry::Occupied(mut e) => {
            *e.get_mut() += diff;
            if *e.get() == 0 {
                e.remove();
            }
        }
        std::collections::btree_map::Entry::Vacant(e) => {
            e.insert(diff);
        }
    }
}

fn bump_hashed(map: &mut FxHashMap<Value, isize>, key: Value, diff: isize) {
    match map.entry(key) {
        Entry::Occupied(mut e) => {
            *e.get_mut() += diff;
            if *e.get() == 0 {
                e.remove();
            }
        }
        Entry::Vacant(e) => {
            e.insert(diff);
        }
    }
}

/// One group's state.
struct GroupState {
    layout: Arc<GroupLayout>,
    accumulated: Accum,
    parts: Vec<PartState>,
    whole: BTreeMap<Row, isize>,
}

impl GroupState {
    fn new(layout: Arc<GroupLayout>) -> GroupState {
        let parts = layout
            .parts
            .iter()
            .map(|(_, p)| match p {
                Part::Distinct | Part::DistinctElements => {
                    PartState::Distinct(FxHashMap::default())
                }
                Part::Least | Part::Greatest => PartState::Ordered(BTreeMap::new()),
            })
            .collect();
        GroupState {
            layout,
            accumulated: Accum::default(),
            parts,
            whole: BTreeMap::new(),
        }
    }
}

impl KeyedState for GroupState {
    type Update = (Accum, Row);

    fn apply(&mut self, (accumulated, cells): (Accum, Row), diff: isize) {
        self.accumulated.plus_equals(&accumulated.multiply(&diff));
        let n = self.parts.len();
        for (state, cell) in self.parts.iter_mut().zip(&cells) {
            match (state, cell) {
                (_, Value::Null) => {}
                (PartState::Distinct(m), Value::Array(items)) => {
                    for item in items {
                        bump_hashed(m, item.clone(), diff);
                    }
                }
                (PartState::Distinct(m), v) => bump_hashed(m, v.clone(), diff),
                (PartState::Ordered(m), Value::Tuple(pair)) if pair.len() == 2 => bump(
                    m,
                    (SqlOrdered(pair[0].clone()), SqlOrdered(pair[1].clone())),
                    diff,
                ),
                (PartState::Ordered(_), _) => {}
            }
        }
        if cells.len() > n {
            bump(&mut self.whole, cells[n..].to_vec(), diff);
        }
    }

    fn output(&self, key: &Row, out: &mut Vec<Row>) {
        let acc = &self.accumulated.0;
        let exists = acc.first().is_some_and(|n| *n > 0) || acc.get(1).is_some_and(|n| *n > 0);
        if !exists {
            return;
        }
        let layout = &self.layout;
        let mut accumulated = Vec::new();
        layout
            .accumulated
            .finish(&self.accumulated, &mut accumulated);
        let mut whole = Vec::new();
        if !layout.whole_is_empty() {
            let group: Vec<(&Row, isize)> = self.whole.iter().map(|(r, n)| (r, *n)).collect();
            layout.whole.finish(&group, &mut whole);
        }
        let mut row = key.clone();
        for (agg, source) in layout.aggregates.iter().zip(&layout.sources) {
            let v = match *source {
                Source::Accumulated(i) => accumulated[i].clone(),
                Source::WholeGroup(i) => whole[i].clone(),
                Source::Part(i) => match (&self.parts[i], layout.parts[i].1) {
                    (PartState::Distinct(m), _) => Value::UInt(m.len() as u64),
                    (PartState::Ordered(m), Part::Least) => m
                        .keys()
                        .next()
                        .map(|(_, v)| v.0.clone())
                        .unwrap_or(Value::Null),
                    (PartState::Ordered(m), _) => m
                        .keys()
                        .next_back()
                        .map(|(_, v)| v.0.clone())
                        .unwrap_or(Value::Null),
                },
            };
            row.push(if v.is_null() && !agg.ty.is_nullable() {
                agg.ty.default_value()
            } else {
                v
            });
        }
        out.push(row);
    }

    fn is_empty(&self) -> bool {
        self.accumulated.is_zero()
            && self.parts.iter().all(PartState::is_empty)
            && self.whole.is_empty()
    }
}

impl GroupLayout {
    fn whole_is_empty(&self) -> bool {
        !self
            .sources
            .iter()
            .any(|s| matches!(s, Source::WholeGroup(_)))
    }
}

/// Renders `GROUP BY keys` with `aggregates` over `input`; `unit` holds one empty row, which
/// gives a keyless aggregation its row over empty input.
pub fn render<'s>(
    input: Rows<'s>,
    keys: &[Expr],
    aggregates: &[Aggregate],
    unit: &Rows<'s>,
    guard: &Guard,
) -> Rows<'s> {
    let layout = Arc::new(GroupLayout::new(keys, aggregates));
    let presence = {
        let l = layout.clone();
        (keys.is_empty()).then(|| {
            unit.clone()
                .map(move |_| (Vec::new(), (l.accumulated.presence(), Vec::new())))
        })
    };
    let updates = if layout.only_accumulated() {
        // Pre-summed per key and batch before the exchange (a combiner).
        let (l, g) = (layout.clone(), guard.clone());
        let contributions = input.explode(move |row| {
            g.run(|| {
                let key: Row = l.keys.iter().map(|e| e.eval(&row)).collect();
                (key, l.accumulated.contribution(&row))
            })
        });
        combine(contributions)
    } else {
        let (l, g) = (layout.clone(), guard.clone());
        input.flat_map(move |row| {
            g.run(|| {
                let key: Row = l.keys.iter().map(|e| e.eval(&row)).collect();
                (key, (l.accumulated.contribution(&row), l.cells(&row)))
            })
        })
    };
    let updates = match presence {
        Some(p) => updates.concat(p),
        None => updates,
    };
    fold_by_key(updates, guard.clone(), move || {
        GroupState::new(layout.clone())
    })
}

/// Adds up the contributions of each key within each batch before they are exchanged, so
/// one record per key and batch travels instead of one per row (a combiner, as in
/// MapReduce).
fn combine<'s>(
    contributions: VecCollection<'s, u64, Row, Accum>,
) -> VecCollection<'s, u64, (Row, (Accum, Row)), isize> {
    contributions
        .inner
        .unary::<CapacityContainerBuilder<Vec<((Row, (Accum, Row)), u64, isize)>>, _, _, _>(
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
                                session.give(((key, (acc, Vec::new())), time, 1));
                            }
                        }
                    });
                }
            },
        )
        .as_collection()
}

#[cfg(test)]
mod tests {
    use super::*;
    use petrel_value::ColumnType;
    use rand::{Rng, SeedableRng};

    fn agg(func: AggFunc, args: Vec<Expr>, ty: ColumnType) -> Aggregate {
        Aggregate {
            func,
            args,
            params: Vec::new(),
            filter: None,
            ty,
        }
    }

    /// Every family's state, after random inserts and retractions (the current extreme
    /// among them), equals the whole-group reference evaluation of the surviving rows.
    #[test]
    fn group_state_equals_the_whole_group_evaluation_under_retractions() {
        let (x, y) = (Expr::Column(0), Expr::Column(1));
        let mut only_positive = agg(AggFunc::Min, vec![y.clone()], ColumnType::Int(64));
        only_positive.filter = Some(Expr::Column(2));
        let aggregates = vec![
            agg(AggFunc::Count, vec![], ColumnType::UInt(64)),
            agg(AggFunc::Sum, vec![x.clone()], ColumnType::Int(64)),
            agg(AggFunc::UniqExact, vec![y.clone()], ColumnType::UInt(64)),
            agg(AggFunc::Min, vec![x.clone()], ColumnType::Int(64)),
            agg(AggFunc::Max, vec![y.clone()], ColumnType::Int(64)),
            agg(
                AggFunc::ArgMax,
                vec![x.clone(), y.clone()],
                ColumnType::Int(64),
            ),
            agg(
                AggFunc::ArgMin,
                vec![y.clone(), x.clone()],
                ColumnType::Int(64),
            ),
            only_positive,
            agg(AggFunc::Quantile, vec![x.clone()], ColumnType::Float64),
        ];
        let layout = Arc::new(GroupLayout::new(&[], &aggregates));
        let reference = ValuesLayout::new(&aggregates);
        for seed in 0..20u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut state = GroupState::new(layout.clone());
            let mut live: Vec<Row> = Vec::new();
            for step in 0..400 {
                let retract = !live.is_empty() && rng.random_range(0..3) == 0;
                let (row, diff) = if retract {
                    // Often the row holding the current minimum of x.
                    let at = if rng.random_bool(0.5) {
                        (0..live.len())
                            .min_by_key(|&i| live[i][0].clone())
                            .unwrap_or(0)
                    } else {
                        rng.random_range(0..live.len())
                    };
                    (live.swap_remove(at), -1)
                } else {
                    let row = vec![
                        Value::Int(rng.random_range(-50..50)),
                        Value::Int(rng.random_range(0..20)),
                        Value::Bool(rng.random_bool(0.5)),
                    ];
                    live.push(row.clone());
                    (row, 1)
                };
                state.apply(
                    (layout.accumulated.contribution(&row), layout.cells(&row)),
                    diff,
                );
                let mut got = Vec::new();
                state.output(&Vec::new(), &mut got);
                if live.is_empty() {
                    assert!(got.is_empty(), "seed {seed} step {step}: {got:?}");
                    assert!(state.is_empty());
                    continue;
                }
                let cut: Vec<Row> = live.iter().map(|r| reference.cut(r)).collect();
                let group: Vec<(&Row, isize)> = cut.iter().map(|r| (r, 1)).collect();
                let mut want = Vec::new();
                reference.finish(&group, &mut want);
                assert_eq!(got, vec![want], "seed {seed} step {step}");
            }
        }
    }
}
