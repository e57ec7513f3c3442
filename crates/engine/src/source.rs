//! A datasource's rows as they reach a view's dataflow: the inserted batch itself, shared by
//! every view that reads it, and read where it lies.
//!
//! An insert is one `Arc` of rows. Each view's input receives a [`Slice`] of it (a range and
//! a time), not copies of its rows, and the filters and projections over the datasource (a
//! [`Scan`]) run on each row in place: a view copies only the rows that pass its filters, a
//! projection builds only its own columns, and a `GROUP BY` over a datasource makes its keys
//! and contributions straight from the batch ([`Feed`]). So `n` views over one datasource cost
//! `n` reads of each row, not `n` copies of it.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

use differential_dataflow::difference::Semigroup;
use differential_dataflow::{AsCollection, VecCollection};
use petrel_sql::{Expr, Plan, PlanNode};
use petrel_value::Row;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map as _;
use timely::dataflow::Stream;

use crate::guard::Guard;
use crate::render::Rows;

/// Rows `range` of an inserted (or replayed) batch, entering at `ts`. It is serializable only
/// because timely's exchange asks it to be: a slice is sent between the workers of one process
/// (as a handle on the batch), never to another process, where it would carry the whole batch.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Slice {
    pub rows: Arc<Vec<(Row, isize)>>,
    pub range: Range<usize>,
    pub ts: u64,
}

impl Slice {
    /// The slice's rows with their multiplicities.
    pub(crate) fn updates(&self) -> &[(Row, isize)] {
        self.rows.get(self.range.clone()).unwrap_or_default()
    }
}

/// One datasource's slices, as a view's dataflow receives them.
pub(crate) type Slices<'s> = Stream<'s, u64, Vec<Slice>>;

/// One step of a [`Scan`].
#[derive(Clone)]
enum Step {
    /// Keeps the rows the predicate holds for.
    Filter(Expr),
    /// Replaces each row by these expressions' values.
    Project(Vec<Expr>),
}

/// Filters and projections over one datasource, applied to each row where it lies.
#[derive(Clone)]
pub(crate) struct Scan {
    table: String,
    /// In the order they apply.
    steps: Vec<Step>,
}

impl Scan {
    /// The scan `plan` is, when it is a datasource under filters and projections only.
    pub(crate) fn of(plan: &Plan) -> Option<Scan> {
        match &plan.node {
            PlanNode::Scan { table } => Some(Scan::whole(table)),
            PlanNode::Filter { input, predicate } => {
                let mut scan = Scan::of(input)?;
                scan.steps.push(Step::Filter(predicate.clone()));
                Some(scan)
            }
            PlanNode::Project { input, exprs } => {
                let mut scan = Scan::of(input)?;
                scan.steps.push(Step::Project(exprs.clone()));
                Some(scan)
            }
            _ => None,
        }
    }

    /// All of `table`'s rows.
    pub(crate) fn whole(table: &str) -> Scan {
        Scan {
            table: table.to_string(),
            steps: Vec::new(),
        }
    }

    /// `exprs`, which read the rows the scan keeps, as expressions over the batch's rows as
    /// they lie: each projection's columns substituted, from the last step to the first. Such
    /// an expression is evaluated only on the rows the scan's filters keep
    /// ([`Scan::filters_keep`]), so it is `None` unless every filter comes before every
    /// projection (the filters then read the batch's rows too), where a lambda is involved
    /// ([`Expr::substitute_columns`]), and where a computed column would be substituted more
    /// than once (its work would be repeated, and over stacked projections multiplied).
    pub(crate) fn over_batch_rows(&self, exprs: &[Expr]) -> Option<Vec<Expr>> {
        let project = self
            .steps
            .iter()
            .position(|s| matches!(s, Step::Project(_)))
            .unwrap_or(self.steps.len());
        if self.steps[project..]
            .iter()
            .any(|s| matches!(s, Step::Filter(_)))
        {
            return None;
        }
        let mut exprs = exprs.to_vec();
        for step in self.steps.iter().rev() {
            if let Step::Project(columns) = step {
                let mut reads = vec![0usize; columns.len()];
                exprs.iter().for_each(|e| e.count_column_reads(&mut reads));
                let repeated = |(read, column): (&usize, &Expr)| {
                    *read > 1 && matches!(column, Expr::Call { .. })
                };
                if reads.iter().zip(columns).any(repeated) {
                    return None;
                }
                exprs = exprs
                    .iter()
                    .map(|e| e.substitute_columns(columns))
                    .collect::<Option<Vec<Expr>>>()?;
            }
        }
        Some(exprs)
    }

    /// True when the scan's filters keep `row`, for a scan whose filters all come before its
    /// projections ([`Scan::over_batch_rows`]); [`Scan::project`] then makes the row it keeps.
    pub(crate) fn filters_keep(&self, guard: &Guard, row: &Row) -> bool {
        self.steps.iter().all(|step| match step {
            Step::Filter(predicate) => guard.run(|| predicate.eval(row).is_true()) == Some(true),
            Step::Project(_) => true,
        })
    }

    /// `row` after the scan's projections alone: the row the scan keeps, for a row its
    /// filters kept ([`Scan::filters_keep`]). `None` when evaluating fails.
    pub(crate) fn project<'r>(&self, guard: &Guard, row: &'r Row) -> Option<Cow<'r, Row>> {
        let mut row = Cow::Borrowed(row);
        for step in &self.steps {
            if let Step::Project(exprs) = step {
                row = Cow::Owned(projected(guard, exprs, &row)?);
            }
        }
        Some(row)
    }

    /// The datasource it reads.
    pub(crate) fn table(&self) -> &str {
        &self.table
    }

    /// `row` after the steps, or None when a filter drops it (or evaluating fails: the guard
    /// then fails the view). Borrowed unless a projection made a new row.
    pub(crate) fn apply<'r>(&self, guard: &Guard, row: &'r Row) -> Option<Cow<'r, Row>> {
        let mut row = Cow::Borrowed(row);
        for step in &self.steps {
            match step {
                Step::Filter(predicate) => {
                    if guard.run(|| predicate.eval(&row).is_true()) != Some(true) {
                        return None;
                    }
                }
                Step::Project(exprs) => row = Cow::Owned(projected(guard, exprs, &row)?),
            }
        }
        Some(row)
    }

    /// `row` after the steps, as [`Scan::apply`] makes it, with the projection's row made in
    /// `made` (whose allocation a caller reuses row after row: a fold reads each projected
    /// row once, for its key and its update, and a new vector each row was an allocation and
    /// a free per row).
    pub(crate) fn apply_in<'r>(
        &self,
        guard: &Guard,
        row: &'r Row,
        made: &'r mut Row,
    ) -> Option<&'r Row> {
        // Whether the row so far is `made` (a projection ran), not `row`.
        let mut in_made = false;
        for step in &self.steps {
            match step {
                Step::Filter(predicate) => {
                    let at: &Row = if in_made { made } else { row };
                    if guard.run(|| predicate.eval(at).is_true()) != Some(true) {
                        return None;
                    }
                }
                // A later projection reads the one before it: a new row, as `apply` makes.
                Step::Project(exprs) if in_made => *made = projected(guard, exprs, made)?,
                Step::Project(exprs) => {
                    made.clear();
                    guard.run(|| made.extend(exprs.iter().map(|e| e.eval(row))))?;
                    in_made = true;
                }
            }
        }
        Some(if in_made { made } else { row })
    }

    /// Applies `f` to each row of `slices` that passes the steps, with the row's multiplicity;
    /// what it returns enters the collection at the slice's time.
    fn read<'s, D, R>(
        self,
        slices: Slices<'s>,
        guard: Guard,
        f: impl Fn(Cow<'_, Row>, isize) -> Option<(D, R)> + 'static,
    ) -> VecCollection<'s, u64, D, R>
    where
        D: differential_dataflow::Data,
        R: Semigroup + 'static,
    {
        slices
            .unary::<CapacityContainerBuilder<Vec<(D, u64, R)>>, _, _, _>(
                Pipeline,
                "Scan",
                move |_, _| {
                    move |input, output| {
                        input.for_each(|cap, data| {
                            let mut session = output.session(&cap);
                            for slice in data.iter() {
                                // The engine sends no slice older than its input's time; a
                                // record is never placed before its capability.
                                let ts = cap.least().map_or(slice.ts, |&t| slice.ts.max(t));
                                for (row, diff) in slice.updates() {
                                    if let Some(row) = self.apply(&guard, row) {
                                        if let Some((d, r)) = f(row, *diff) {
                                            session.give((d, ts, r));
                                        }
                                    }
                                }
                            }
                        });
                    }
                },
            )
            .as_collection()
    }
}

/// The row `exprs` make of `row` (a projection); `None` when evaluating fails.
fn projected(guard: &Guard, exprs: &[Expr], row: &Row) -> Option<Row> {
    guard.run(|| exprs.iter().map(|e| e.eval(row)).collect())
}

/// The rows an operator keyed on them reads: a collection, or a scan of a datasource read in
/// place (no row is copied on its way to the operator's keys).
pub(crate) enum Feed<'s> {
    Rows(Rows<'s>),
    Scan(Scan, Slices<'s>, Guard),
}

impl<'s> Feed<'s> {
    /// What `f` makes of each row, with the row's multiplicity.
    pub(crate) fn map<D, R>(
        self,
        f: impl Fn(Cow<'_, Row>, isize) -> Option<(D, R)> + 'static,
    ) -> VecCollection<'s, u64, D, R>
    where
        D: differential_dataflow::Data,
        R: Semigroup + 'static,
    {
        match self {
            Feed::Rows(rows) => rows
                .inner
                .flat_map(move |(row, time, diff)| {
                    f(Cow::Owned(row), diff).map(|(d, r)| (d, time, r))
                })
                .as_collection(),
            Feed::Scan(scan, slices, guard) => scan.read(slices, guard, f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use petrel_sql::functions::Func;
    use petrel_value::Value;

    fn scan_of(steps: Vec<Step>) -> Scan {
        Scan {
            table: "t".into(),
            steps,
        }
    }

    fn plus_one(c: usize) -> Expr {
        Expr::call(
            Func::Plus,
            vec![Expr::Column(c), Expr::Literal(Value::Int(1))],
        )
    }

    /// Keys over the rows a scan keeps are rewritten over the batch's rows through its
    /// projections, except where a filter follows a projection or a computed column would be
    /// evaluated twice; filters before the projections leave the rewrite as it is.
    #[test]
    fn keys_read_the_batch_rows_through_the_projections_they_can() {
        let filter = Step::Filter(Expr::call(
            Func::NotEq,
            vec![Expr::Column(0), Expr::Literal(Value::Int(3))],
        ));
        let project = Step::Project(vec![Expr::Column(2), plus_one(0)]);
        let scan = scan_of(vec![filter.clone(), project.clone()]);
        assert_eq!(
            scan.over_batch_rows(&[Expr::Column(1), Expr::Column(0)]),
            Some(vec![plus_one(0), Expr::Column(2)])
        );
        assert_eq!(
            scan.over_batch_rows(&[Expr::Column(0), Expr::Column(0)]),
            Some(vec![Expr::Column(2), Expr::Column(2)]),
            "a plain column may be read twice"
        );
        assert_eq!(
            scan.over_batch_rows(&[Expr::Column(1), plus_one(1)]),
            None,
            "the computed column would be computed twice"
        );
        let filter_after = scan_of(vec![project, filter]);
        assert_eq!(filter_after.over_batch_rows(&[Expr::Column(0)]), None);
        assert_eq!(
            scan_of(Vec::new()).over_batch_rows(&[plus_one(1)]),
            Some(vec![plus_one(1)])
        );
    }

    /// A scan made in a reused row keeps and makes the rows a scan makes anew, whatever its
    /// steps (filters before or after a projection, two projections, none), row after row
    /// through one vector.
    #[test]
    fn a_scan_made_in_a_reused_row_equals_the_scan() {
        let not_three = |c: usize| {
            Step::Filter(Expr::call(
                Func::NotEq,
                vec![Expr::Column(c), Expr::Literal(Value::Int(3))],
            ))
        };
        let project = Step::Project(vec![Expr::Column(2), plus_one(0), Expr::Column(1)]);
        let again = Step::Project(vec![plus_one(1), Expr::Column(0)]);
        let scans = [
            vec![],
            vec![not_three(0)],
            vec![not_three(0), project.clone()],
            vec![project.clone(), not_three(1)],
            vec![project.clone(), not_three(2), again.clone()],
            vec![project, again],
        ];
        let guard = Guard::for_tests();
        let rows: Vec<Row> = (0..8)
            .map(|i| vec![Value::Int(i % 5), Value::str("x"), Value::Int(10 - i)])
            .collect();
        for steps in scans {
            let scan = scan_of(steps);
            let mut made = Row::new();
            for row in &rows {
                let expected = scan.apply(&guard, row).map(|r| r.into_owned());
                let got = scan.apply_in(&guard, row, &mut made).cloned();
                assert_eq!(got, expected, "{:?} on {row:?}", scan.steps.len());
            }
        }
    }
}
