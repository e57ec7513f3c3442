//! Plans to differential dataflow: one function per plan operator.
//!
//! Every collection is `(Row, u64 time in ms, isize)`. Expressions are cloned into the
//! operators' closures once, at install time; per row only `Expr::eval` runs.

use std::collections::BTreeMap;

use differential_dataflow::VecCollection;
use petrel_sql::{Aggregate, CmpOp, Expr, JoinKind, Plan, PlanNode, SortKey, TemporalBound};
use petrel_value::{Row, Value};

use std::sync::Arc;

use petrel_view::{add_multiplicity, RowOrder, SortDirection, SortedRow};

use crate::aggregate;
use crate::guard::Guard;
use crate::join::join_stopping;
use crate::keyed::{fold_by_key, KeyedState};
use crate::source::{Feed, Scan, Slices};

/// A collection of rows at millisecond timestamps.
pub type Rows<'s> = VecCollection<'s, u64, Row, isize>;

/// What rendering needs besides the plan: the datasources' slices by name and the
/// collection of the dataflow's constant rows.
pub struct Sources<'s> {
    /// Each datasource the plan scans, as the slices of its batches.
    pub(crate) tables: BTreeMap<String, Slices<'s>>,
    /// A collection holding the single empty row once (from worker 0 only); constant rows and
    /// keyless-aggregate markers are derived from it.
    pub unit: Rows<'s>,
    /// The view's failure switch: every operator that evaluates SQL runs through it.
    pub(crate) guard: Guard,
    /// Whether extremes and top-k over append-only inputs keep only their best values and
    /// rows.
    pub(crate) bounded_states: bool,
    /// Whether every worker is in this process (see [`aggregate::render`]).
    pub(crate) single_process: bool,
}

impl<'s> Sources<'s> {
    /// The rows of `plan` for an operator that reads them in place when it can: a datasource
    /// under filters and projections is read from its batches, anything else is rendered.
    pub(crate) fn feed(&self, plan: &Plan) -> Feed<'s> {
        match Scan::of(plan) {
            Some(scan) => self.scanned(scan),
            None => Feed::Rows(render(plan, self)),
        }
    }

    /// `scan` read from its datasource's batches.
    fn scanned(&self, scan: Scan) -> Feed<'s> {
        let slices = self.tables[scan.table()].clone();
        Feed::Scan(scan, slices, self.guard.clone())
    }
}

/// Renders `plan` over `sources`.
pub fn render<'s>(plan: &Plan, sources: &Sources<'s>) -> Rows<'s> {
    match &plan.node {
        PlanNode::Scan { table } => copied(Scan::whole(table), sources),
        PlanNode::Values { rows } => {
            let rows = rows.clone();
            sources.unit.clone().flat_map(move |_| rows.clone())
        }
        PlanNode::Filter { input, predicate } => match Scan::of(plan) {
            Some(scan) => copied(scan, sources),
            None => {
                let (predicate, guard) = (predicate.clone(), sources.guard.clone());
                render(input, sources)
                    .filter(move |row| guard.run(|| predicate.eval(row).is_true()) == Some(true))
            }
        },
        PlanNode::TemporalFilter { input, bounds } => {
            temporal(render(input, sources), bounds, sources.guard.clone())
        }
        PlanNode::Project { input, exprs } => project(plan, (input, exprs), sources),
        PlanNode::Aggregate {
            input,
            keys,
            aggregates,
        } => grouped(input, (keys, aggregates), sources, None),
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
            (left_keys, right_keys),
            residual.as_ref(),
            right.columns.iter().map(|c| c.ty.default_value()).collect(),
            &sources.guard,
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
            (*limit, *offset),
            partition_by,
            &sources.guard,
            sources.bounded_states && input.is_append_only(),
        ),
        PlanNode::Window {
            input,
            partition_by,
            order_by,
            function,
        } => crate::window::window(
            render(input, sources),
            partition_by,
            order_by,
            function,
            &sources.guard,
        ),
        PlanNode::ArrayJoin { input, column } => {
            let column = *column;
            let rows = render(input, sources).flat_map(move |row| {
                let items = match &row[column] {
                    Value::Array(items) => items.to_vec(),
                    _ => Vec::new(),
                };
                items.into_iter().map(move |item| {
                    let mut out = row.clone();
                    out[column] = item;
                    out
                })
            });
            bounded(rows, &sources.guard)
        }
    }
}

/// A datasource under filters and projections, its rows copied once: after the filters, as
/// the projection's columns.
fn copied<'s>(scan: Scan, sources: &Sources<'s>) -> Rows<'s> {
    sources
        .scanned(scan)
        .map(|row, diff| Some((row.into_owned(), diff)))
}

/// Counts the rows `ARRAY JOIN` produced against the view's row budget (ad-hoc queries have
/// one); past it they stop and the view fails. Joins charge as they make rows.
fn bounded<'s>(rows: Rows<'s>, guard: &Guard) -> Rows<'s> {
    if !guard.has_budget() {
        return rows;
    }
    let guard = guard.clone();
    rows.filter(move |_| guard.charge())
}

/// `GROUP BY keys` with `aggregates` over `input`, its rows made of the `projected` columns
/// of each group's row when given.
fn grouped<'s>(
    input: &Plan,
    (keys, aggregates): (&[Expr], &[Aggregate]),
    sources: &Sources<'s>,
    projected: Option<Vec<usize>>,
) -> Rows<'s> {
    // A projection of plain columns under the aggregation (a parameter lifted into the key
    // copies its column) is read through: the keys and arguments read its input's columns,
    // and no row of copies is made per input row.
    if let PlanNode::Project {
        input: inner,
        exprs,
    } = &input.node
    {
        if let Some(columns) = plain_columns(exprs) {
            let map = |i: usize| columns.get(i).copied().unwrap_or(i);
            let keys: Vec<Expr> = keys.iter().map(|k| k.map_columns(&map)).collect();
            let aggregates: Vec<Aggregate> = aggregates
                .iter()
                .map(|a| Aggregate {
                    args: a.args.iter().map(|e| e.map_columns(&map)).collect(),
                    filter: a.filter.as_ref().map(|e| e.map_columns(&map)),
                    ..a.clone()
                })
                .collect();
            return grouped(inner, (&keys, &aggregates), sources, projected);
        }
    }
    aggregate::render(
        sources.feed(input),
        (keys, aggregates),
        &sources.unit,
        &sources.guard,
        sources.bounded_states && input.is_append_only(),
        projected,
        sources.single_process,
    )
}

/// The columns a list of expressions reads (a projection, grouping keys, sort keys), when it
/// reads nothing but columns.
pub(crate) fn plain_columns(exprs: &[Expr]) -> Option<Vec<usize>> {
    exprs
        .iter()
        .map(|e| match e {
            Expr::Column(c) => Some(*c),
            _ => None,
        })
        .collect()
}

/// A projection. One of plain columns over another projection is rendered as one projection
/// (which may then fold into an aggregation below it), and one that keeps its input's columns
/// as they are is its input: neither copies each row once more.
fn project<'s>(plan: &Plan, (input, exprs): (&Plan, &[Expr]), sources: &Sources<'s>) -> Rows<'s> {
    let columns = plain_columns(exprs);
    if let Some(columns) = &columns {
        let identity = columns.len() == input.columns.len()
            && columns.iter().enumerate().all(|(i, c)| i == *c);
        if identity {
            return render(input, sources);
        }
        if let PlanNode::Project {
            input: inner,
            exprs: inner_exprs,
        } = &input.node
        {
            let composed: Option<Vec<Expr>> = columns
                .iter()
                .map(|&c| inner_exprs.get(c).cloned())
                .collect();
            if let Some(exprs) = composed {
                let merged = Plan {
                    node: PlanNode::Project {
                        input: inner.clone(),
                        exprs,
                    },
                    columns: plan.columns.clone(),
                };
                return render(&merged, sources);
            }
        }
    }
    match (&input.node, distinct_columns(exprs)) {
        // The aggregation makes its rows with the projection's columns.
        (
            PlanNode::Aggregate {
                input,
                keys,
                aggregates,
            },
            Some(columns),
        ) => grouped(input, (keys, aggregates), sources, Some(columns)),
        _ => match Scan::of(plan) {
            Some(scan) => copied(scan, sources),
            None => {
                let (exprs, guard) = (exprs.to_vec(), sources.guard.clone());
                render(input, sources).flat_map(move |row| guard.run(|| eval_all(&exprs, &row)))
            }
        },
    }
}

/// True when the rendered plan never emits a row twice in one time's changes: a fold by
/// group emits each group's changes of a time once, consolidated, from the one worker that
/// holds the group, and the group's keys, kept in every row, tell groups apart. Filters keep
/// that, and so do projections that reorder all their input's columns (one that dropped or
/// computed a column could make a group's old and new row alike).
pub(crate) fn emits_consolidated(plan: &Plan) -> bool {
    match &plan.node {
        PlanNode::Aggregate { .. } => true,
        PlanNode::Filter { input, .. } => emits_consolidated(input),
        PlanNode::Project { input, exprs } => {
            let mut columns = plain_columns(exprs).unwrap_or_default();
            columns.sort_unstable();
            columns.len() == input.columns.len()
                && columns.iter().enumerate().all(|(i, c)| i == *c)
                && emits_consolidated(input)
        }
        _ => false,
    }
}

/// The columns a projection reads, when it reads nothing but columns, each once.
fn distinct_columns(exprs: &[Expr]) -> Option<Vec<usize>> {
    let columns = plain_columns(exprs)?;
    let distinct = columns
        .iter()
        .enumerate()
        .all(|(i, c)| !columns[..i].contains(c));
    distinct.then_some(columns)
}

fn eval_all(exprs: &[Expr], row: &[Value]) -> Row {
    exprs.iter().map(|e| e.eval(row)).collect()
}

fn join<'s>(
    left: Rows<'s>,
    right: Rows<'s>,
    kind: JoinKind,
    (left_keys, right_keys): (&[Expr], &[Expr]),
    residual: Option<&Expr>,
    right_defaults: Row,
    guard: &Guard,
) -> Rows<'s> {
    let (lk, rk) = (left_keys.to_vec(), right_keys.to_vec());
    // NULL keys never match (SQL semantics); such left rows still appear in a left join.
    let g = guard.clone();
    let keyed_left = left
        .clone()
        .flat_map(move |row| g.run(|| (eval_all(&lk, &row), row)))
        .filter(|(k, _)| !k.iter().any(Value::is_null));
    let g = guard.clone();
    let keyed_right = right
        .flat_map(move |row| g.run(|| (eval_all(&rk, &row), row)))
        .filter(|(k, _)| !k.iter().any(Value::is_null));
    // Each joined row is charged to the view's row budget (ad-hoc queries have one) as it is
    // made: past the budget the join makes nothing more, so a runaway product never fills
    // memory on its way to the operators after it.
    // The join ends its work early once the view fails or is dropped (`join_stopping`).
    let g = guard.clone();
    let mut matched = join_stopping(
        keyed_left.clone().arrange_by_key(),
        keyed_right.clone().arrange_by_key(),
        guard.clone(),
        move |_k, l: &Row, r: &Row| {
            g.charge().then(|| {
                let mut row = l.clone();
                row.extend(r.iter().cloned());
                row
            })
        },
    );
    if let Some(residual) = residual {
        let (residual, g) = (residual.clone(), guard.clone());
        matched = matched.filter(move |row| g.run(|| residual.eval(row).is_true()) == Some(true));
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
            let g = guard.clone();
            left.flat_map(move |row| g.run(|| (eval_all(&lk, &row), row)))
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

/// How many rows past the end of its window a bounded top-k partition keeps, so that rows
/// deleted from the window are replaced from what is kept.
const TOP_SLACK: usize = 16;

/// `ORDER BY .. LIMIT n BY ..` inside a query (and a subscription's LIMIT): each partition
/// keeps its rows in order (see `keyed`), and a change re-emits only the partition's window
/// when it moves. Over an append-only input (see [`Plan::is_append_only`]) a partition with a LIMIT
/// keeps only its window and [`TOP_SLACK`] rows more, as `aggregate`'s extremes keep their
/// best values: if deletes empty what it kept while rows remain, the view is rebuilt.
fn top_k<'s>(
    input: Rows<'s>,
    order_by: &[SortKey],
    (limit, offset): (Option<u64>, u64),
    partition_by: &[Expr],
    guard: &Guard,
    append_only: bool,
) -> Rows<'s> {
    let part = partition_by.to_vec();
    let order = row_order(order_by);
    let g = guard.clone();
    let keyed = input.flat_map(move |row| g.run(|| (eval_all(&part, &row), row)));
    let bound = (append_only && limit.is_some()).then(|| guard.clone());
    fold_by_key(keyed, guard.clone(), move || {
        TopState::new(
            order.clone(),
            offset.min(usize::MAX as u64) as usize,
            limit.map(|l| l.min(usize::MAX as u64) as usize),
            bound.clone(),
        )
    })
}

/// One partition of a top-k: its rows in order, with multiplicities.
struct TopState {
    order: RowOrder,
    rows: BTreeMap<SortedRow, i64>,
    /// The sum of the positive multiplicities of `rows`.
    total: usize,
    offset: usize,
    limit: Option<usize>,
    /// Set when only the window and [`TOP_SLACK`] rows are kept.
    bounded: Option<TopBound>,
}

/// What a bounded top-k partition knows of the rows it forgot.
struct TopBound {
    /// Told when the window is no longer known.
    guard: Guard,
    /// Rows sorting at or after it are not kept; `None` until a row was forgotten.
    boundary: Option<SortedRow>,
    /// The partition's rows, kept or not.
    present: i64,
}

impl TopState {
    fn new(order: RowOrder, offset: usize, limit: Option<usize>, bound: Option<Guard>) -> TopState {
        TopState {
            order,
            rows: BTreeMap::new(),
            total: 0,
            offset,
            limit,
            bounded: bound.map(|guard| TopBound {
                guard,
                boundary: None,
                present: 0,
            }),
        }
    }

    /// The rows the window needs kept: its end.
    fn window_end(&self) -> usize {
        self.offset.saturating_add(self.limit.unwrap_or(usize::MAX))
    }

    /// False when forgotten rows may belong in the window: deletes left fewer kept rows than
    /// the window needs while the partition has more.
    fn window_known(&self) -> bool {
        self.bounded.as_ref().is_none_or(|b| {
            b.boundary.is_none()
                || self.total >= self.window_end()
                || b.present <= self.total as i64
        })
    }
}

impl KeyedState for TopState {
    type Update = Row;
    type Alignment = ();

    fn apply(&mut self, row: Row, diff: isize) {
        let entry = self.order.entry_of(row);
        if let Some(b) = &mut self.bounded {
            b.present += diff as i64;
            if b.boundary
                .as_ref()
                .is_some_and(|boundary| entry >= *boundary)
            {
                return;
            }
        }
        self.change_entry(entry, diff);
    }

    /// Forgets the rows past the window and its slack (only now: within a time, a row's
    /// retraction may come before its insertion).
    fn settle(&mut self) {
        if self.bounded.is_none() {
            return;
        }
        let end = self.window_end();
        let keep = end.saturating_add(TOP_SLACK);
        while self.total > keep {
            let Some(last) = self.rows.last_entry() else {
                break;
            };
            let n = (*last.get()).max(0) as usize;
            if self.total - n < end {
                break;
            }
            let (entry, _) = last.remove_entry();
            self.total -= n;
            if let Some(b) = &mut self.bounded {
                b.boundary = Some(entry);
            }
        }
    }

    /// With no OFFSET and every row inside the LIMIT before and after, the window is the
    /// whole partition: the output changes by the row itself, whatever the partition's size.
    fn apply_delta(
        &mut self,
        row: Row,
        diff: isize,
        delta: &mut Vec<(Row, isize)>,
    ) -> Result<(), Row> {
        if self.offset != 0 || self.bounded.as_ref().is_some_and(|b| b.boundary.is_some()) {
            return Err(row);
        }
        let limit = self.limit.unwrap_or(usize::MAX);
        let grows = diff.max(0) as usize;
        if self.total > limit || self.total.saturating_add(grows) > limit {
            return Err(row);
        }
        if let Some(b) = &mut self.bounded {
            b.present += diff as i64;
        }
        let (before, after) = self.change(&row, diff);
        let shown = after.max(0) - before.max(0);
        if shown != 0 {
            delta.push((row, shown as isize));
        }
        Ok(())
    }

    fn output(&self, _key: &[Value], out: &mut Vec<Row>) {
        if !self.window_known() {
            if let Some(b) = &self.bounded {
                b.guard.lose_track(format!(
                    "deletes removed the rows a top-k kept past its window ({TOP_SLACK} rows) in a partition that still has rows"
                ));
            }
            return;
        }
        let mut skip = self.offset;
        let want = self.limit.unwrap_or(usize::MAX);
        let mut taken = 0;
        for (entry, &count) in &self.rows {
            if taken >= want {
                break;
            }
            let mut n = count.max(0) as usize;
            let skipped = skip.min(n);
            skip -= skipped;
            n = (n - skipped).min(want - taken);
            out.extend(std::iter::repeat_n(entry.row(), n).map(<[Value]>::to_vec));
            taken += n;
        }
    }

    fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.bounded.as_ref().is_none_or(|b| b.present == 0)
    }
}

impl TopState {
    /// Adds `diff` copies of `row`; returns its multiplicity before and after.
    fn change(&mut self, row: &Row, diff: isize) -> (i64, i64) {
        self.change_entry(self.order.entry(row), diff)
    }

    /// Adds `diff` copies of the row `entry` sorts; returns its multiplicity before and after.
    fn change_entry(&mut self, entry: SortedRow, diff: isize) -> (i64, i64) {
        let (before, after) = add_multiplicity(&mut self.rows, entry, diff as i64);
        self.total = (self.total as i64 + after.max(0) - before.max(0)).max(0) as usize;
        (before, after)
    }
}

/// The order an `ORDER BY` gives rows (ClickHouse's: NULLs last unless asked first), for
/// top-k partitions, views' ordered indexes and every sort of result rows.
pub fn row_order(order_by: &[SortKey]) -> RowOrder {
    if order_by.is_empty() {
        return RowOrder::natural();
    }
    let directions = order_by
        .iter()
        .map(|k| SortDirection {
            desc: k.desc,
            nulls_first: k.nulls_first,
        })
        .collect();
    let exprs: Vec<Expr> = order_by.iter().map(|k| k.expr.clone()).collect();
    // Sorting by plain columns (the common case) reads them from the row: nothing is
    // evaluated or copied per entry.
    match plain_columns(&exprs) {
        Some(columns) => RowOrder::by_columns(directions, columns),
        None => RowOrder::by(
            directions,
            Arc::new(move |row: &Row| exprs.iter().map(|e| e.eval(row)).collect()),
        ),
    }
}

/// Temporal filters: a row is valid over a time interval derived from its own values, so it
/// is inserted when the interval starts (or when it arrives, if later) and retracted when the
/// interval ends. The clock's ticks make those future updates happen (Materialize's model).
fn temporal<'s>(input: Rows<'s>, bounds: &[TemporalBound], guard: Guard) -> Rows<'s> {
    let bounds = bounds.to_vec();
    input.join_function(move |row| {
        guard
            .run(|| valid_interval(&bounds, row))
            .unwrap_or_default()
    })
}

/// A row's updates for the interval its temporal bounds give it: an insert when the interval
/// starts, and a retraction when it ends (none if it is empty).
fn valid_interval(bounds: &[TemporalBound], row: Row) -> Vec<(Row, u64, isize)> {
    let mut lower = 0u64;
    let mut upper = u64::MAX;
    for b in bounds {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    fn multiset(rows: Vec<Row>) -> Vec<(Row, isize)> {
        let mut out: Vec<(Row, isize)> = rows.into_iter().map(|r| (r, 1)).collect();
        differential_dataflow::consolidation::consolidate(&mut out);
        out
    }

    /// A top-k's own delta is exactly the change of its output rows, whenever it gives one,
    /// over random inserts and retractions, limits and offsets.
    #[test]
    fn top_k_deltas_equal_the_change_of_the_output() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for case in 0..60 {
            let limit = [None, Some(1), Some(5), Some(40)][case % 4];
            let offset = if case % 3 == 0 { 1 } else { 0 };
            let mut state = TopState::new(
                row_order(&[SortKey {
                    expr: Expr::Column(1),
                    desc: true,
                    nulls_first: false,
                }]),
                offset,
                limit,
                None,
            );
            let mut live: Vec<Row> = Vec::new();
            let mut deltas = 0;
            for _ in 0..300 {
                let retract = !live.is_empty() && rng.random_bool(0.4);
                let (row, diff) = if retract {
                    let i = rng.random_range(0..live.len());
                    (live.swap_remove(i), -1)
                } else {
                    let row = vec![
                        Value::UInt(rng.random_range(0..30)),
                        Value::Int(rng.random_range(0..20)),
                    ];
                    live.push(row.clone());
                    (row, 1)
                };
                let mut before = Vec::new();
                state.output(&Vec::new(), &mut before);
                let mut delta = Vec::new();
                match state.apply_delta(row, diff, &mut delta) {
                    Ok(()) => {
                        deltas += 1;
                        let mut after = Vec::new();
                        state.output(&Vec::new(), &mut after);
                        let mut change = multiset(after);
                        change.extend(multiset(before).into_iter().map(|(r, n)| (r, -n)));
                        differential_dataflow::consolidation::consolidate(&mut change);
                        differential_dataflow::consolidation::consolidate(&mut delta);
                        assert_eq!(delta, change, "limit {limit:?} offset {offset}");
                    }
                    Err(row) => state.apply(row, diff),
                }
                assert_eq!(state.total, live.len());
            }
            if offset == 0 && limit.is_none_or(|l| l >= 40) {
                assert!(deltas > 0, "the fast path ran");
            }
        }
    }

    /// Over an append-only input, a top-k partition keeps at most its window and
    /// `TOP_SLACK` rows, and its output is the window of all its rows at every completed
    /// time, whatever the order of a time's updates. Only deletes can make it lose track, and
    /// exactly when the same time's updates, consolidated, would.
    #[test]
    fn bounded_top_k_equals_the_window_of_all_rows_or_says_it_lost_track() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let (mut lost_cases, mut deleting_cases) = (0, 0);
        for case in 0..80usize {
            let limit = [1usize, 5, 20][case % 3];
            let offset = if case % 4 == 0 { 2 } else { 0 };
            let deletes = case % 2 == 1;
            deleting_cases += usize::from(deletes);
            let order = row_order(&[SortKey {
                expr: Expr::Column(1),
                desc: true,
                nulls_first: false,
            }]);
            let fresh =
                || TopState::new(order.clone(), offset, Some(limit), Some(Guard::for_tests()));
            let (mut state, mut settled) = (fresh(), fresh());
            let mut live: Vec<Row> = Vec::new();
            let mut next_id = 0u64;
            let mut row = |rng: &mut rand::rngs::StdRng| {
                next_id += 1;
                vec![Value::UInt(next_id), Value::Int(rng.random_range(0..500))]
            };
            for time in 0..50 {
                let mut updates: Vec<(Row, isize)> = Vec::new();
                for _ in 0..rng.random_range(0..30) {
                    let r = row(&mut rng);
                    live.push(r.clone());
                    updates.push((r, 1));
                }
                if deletes && rng.random_bool(0.5) {
                    let r = row(&mut rng);
                    updates.push((r.clone(), 1));
                    updates.push((r, -1));
                }
                if deletes && time % 4 == 3 && !live.is_empty() {
                    // Delete some of the best rows (as a delete by condition would), or rows
                    // anywhere.
                    if rng.random_bool(0.5) {
                        live.sort_by_key(|r| std::cmp::Reverse(r[1].as_i64().unwrap_or(0)));
                    } else {
                        live.shuffle(&mut rng);
                    }
                    let n = rng.random_range(0..live.len().min(limit + 8) + 1);
                    updates.extend(live.drain(..n).map(|r| (r, -1)));
                }
                let mut consolidated = updates.clone();
                differential_dataflow::consolidation::consolidate(&mut consolidated);
                for (r, diff) in consolidated {
                    settled.apply(r, diff);
                }
                settled.settle();
                updates.shuffle(&mut rng);
                for (r, diff) in updates {
                    let mut delta = Vec::new();
                    if let Err(r) = state.apply_delta(r, diff, &mut delta) {
                        state.apply(r, diff);
                    }
                }
                state.settle();
                assert!(
                    state.rows.len() <= offset + limit + TOP_SLACK,
                    "case {case} time {time}"
                );
                let lost = !state.window_known();
                assert_eq!(lost, !settled.window_known(), "case {case} time {time}");
                if lost {
                    assert!(
                        deletes,
                        "case {case} time {time}: lost track without deletes"
                    );
                    lost_cases += 1;
                    break;
                }
                let mut got = Vec::new();
                state.output(&Vec::new(), &mut got);
                let mut want = live.clone();
                want.sort_by_key(|a| order.entry(a));
                let want: Vec<Row> = want.into_iter().skip(offset).take(limit).collect();
                assert_eq!(got, want, "case {case} time {time}");
            }
        }
        assert!(
            lost_cases > 0 && lost_cases < deleting_cases,
            "{lost_cases} of {deleting_cases}"
        );
    }

    /// Regression: a row the delta path gives back (the partition outgrew its LIMIT) is
    /// counted once, by `apply`, so a bounded partition whose rows are all deleted is empty
    /// and knows its window, instead of counting rows it never had and asking for a rebuild.
    #[test]
    fn a_bounded_top_k_counts_each_row_once() {
        let order = row_order(&[SortKey {
            expr: Expr::Column(0),
            desc: true,
            nulls_first: false,
        }]);
        let mut state = TopState::new(order, 0, Some(1), Some(Guard::for_tests()));
        let rows: Vec<Row> = (0..30).map(|x| vec![Value::Int(x)]).collect();
        for diff in [1, -1] {
            for row in &rows {
                if let Err(row) = state.apply_delta(row.clone(), diff, &mut Vec::new()) {
                    state.apply(row, diff);
                }
                state.settle();
            }
        }
        assert!(state.window_known());
        assert!(state.is_empty());
    }
}
