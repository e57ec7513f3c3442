//! Window functions (`sum(x) OVER (PARTITION BY p ORDER BY t)`, `row_number()`, ..): each
//! partition keeps its rows in order and, when it changes, computes every row's value again.
//! A change costs the size of its partition, which is what dashboards' running totals over a
//! few hundred buckets need.

use std::collections::BTreeMap;

use petrel_sql::functions::Func;
use petrel_sql::{AggFunc, Aggregate, Expr, SortKey, WindowFunction};
use petrel_value::{ColumnType, Row, Value, F64};
use petrel_view::{add_multiplicity, RowOrder, SortedRow};

use crate::guard::Guard;
use crate::keyed::{fold_by_key, KeyedState};
use crate::render::{row_order, Rows};

/// Renders a window node: the input rows, each with the function's value appended.
pub(crate) fn window<'s>(
    input: Rows<'s>,
    partition_by: &[Expr],
    order_by: &[SortKey],
    function: &WindowFunction,
    guard: &Guard,
) -> Rows<'s> {
    let part = partition_by.to_vec();
    let order = row_order(order_by);
    let order_exprs: Vec<Expr> = order_by.iter().map(|k| k.expr.clone()).collect();
    let function = function.clone();
    let g = guard.clone();
    let keyed = input.flat_map(move |row| {
        g.run(|| {
            let key: Row = part.iter().map(|e| e.eval(&row)).collect();
            (key, row)
        })
    });
    fold_by_key(keyed, guard.clone(), move || WindowState {
        order: order.clone(),
        order_exprs: order_exprs.clone(),
        function: function.clone(),
        rows: BTreeMap::new(),
    })
}

/// One partition: its rows in the window's order, with multiplicities.
struct WindowState {
    order: RowOrder,
    order_exprs: Vec<Expr>,
    function: WindowFunction,
    rows: BTreeMap<SortedRow, i64>,
}

impl KeyedState for WindowState {
    type Update = Row;
    type Alignment = ();

    fn apply(&mut self, row: Row, diff: isize) {
        add_multiplicity(&mut self.rows, self.order.entry_of(row), diff as i64);
    }

    fn output(&self, _key: &[Value], out: &mut Vec<Row>) {
        let rows: Vec<&[Value]> = self
            .rows
            .iter()
            .flat_map(|(entry, &n)| std::iter::repeat_n(entry.row(), n.max(0) as usize))
            .collect();
        for (row, value) in rows
            .iter()
            .zip(window_values(&rows, &self.order_exprs, &self.function))
        {
            let mut row = row.to_vec();
            row.push(value);
            out.push(row);
        }
    }

    fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// The function's value for each of `rows` (one partition, in the window's order). Rows with
/// equal `order_exprs` values are peers: they share the frame that ends with the last of them.
pub(crate) fn window_values(
    rows: &[&[Value]],
    order_exprs: &[Expr],
    function: &WindowFunction,
) -> Vec<Value> {
    let keys: Vec<Vec<Value>> = rows
        .iter()
        .map(|r| order_exprs.iter().map(|e| e.eval(r)).collect())
        .collect();
    // Peer groups as index ranges.
    let mut groups = Vec::new();
    let mut start = 0;
    for i in 1..=rows.len() {
        if i == rows.len() || keys[i] != keys[start] {
            groups.push(start..i);
            start = i;
        }
    }
    let mut out = Vec::with_capacity(rows.len());
    match function {
        WindowFunction::RowNumber => {
            out.extend((1..=rows.len() as u64).map(Value::UInt));
        }
        WindowFunction::Rank => {
            for g in &groups {
                out.extend(g.clone().map(|_| Value::UInt(g.start as u64 + 1)));
            }
        }
        WindowFunction::DenseRank => {
            for (n, g) in groups.iter().enumerate() {
                out.extend(g.clone().map(|_| Value::UInt(n as u64 + 1)));
            }
        }
        WindowFunction::Aggregate(a) => {
            let mut acc = Accumulator::new(a);
            if order_exprs.is_empty() {
                rows.iter().for_each(|r| acc.add(r));
                let v = acc.value();
                out.extend(rows.iter().map(|_| v.clone()));
            } else {
                for g in &groups {
                    g.clone().for_each(|i| acc.add(rows[i]));
                    let v = acc.value();
                    out.extend(g.clone().map(|_| v.clone()));
                }
            }
        }
    }
    out
}

/// A running aggregate over the rows added so far.
struct Accumulator<'a> {
    aggregate: &'a Aggregate,
    sum: Option<Value>,
    count: u64,
    best: Option<Value>,
}

impl<'a> Accumulator<'a> {
    fn new(aggregate: &'a Aggregate) -> Accumulator<'a> {
        Accumulator {
            aggregate,
            sum: None,
            count: 0,
            best: None,
        }
    }

    fn add(&mut self, row: &[Value]) {
        let a = self.aggregate;
        if let Some(f) = &a.filter {
            if !f.eval(row).is_true() {
                return;
            }
        }
        let v = match a.args.first() {
            Some(e) => e.eval(row),
            None => {
                self.count += 1;
                return;
            }
        };
        if v.is_null() {
            return;
        }
        self.count += 1;
        match a.func {
            AggFunc::Sum | AggFunc::Avg => {
                self.sum = Some(match self.sum.take() {
                    Some(s) => Func::Plus.apply(&[&s, &v]),
                    None => v,
                });
            }
            AggFunc::Min | AggFunc::Max => {
                let better = match &self.best {
                    None => true,
                    Some(b) => {
                        let ord = v.sql_cmp(b);
                        if a.func == AggFunc::Min {
                            ord == Some(std::cmp::Ordering::Less)
                        } else {
                            ord == Some(std::cmp::Ordering::Greater)
                        }
                    }
                };
                if better {
                    self.best = Some(v);
                }
            }
            AggFunc::Any => {
                if self.best.is_none() {
                    self.best = Some(v);
                }
            }
            _ => self.best = Some(v),
        }
    }

    fn value(&self) -> Value {
        let a = self.aggregate;
        match a.func {
            AggFunc::Count => Value::UInt(self.count),
            AggFunc::Sum => match &self.sum {
                Some(s) => a.ty.coerce(s).unwrap_or_else(|| s.clone()),
                None => match a.ty.base() {
                    ColumnType::Float64 | ColumnType::Float32 => Value::Float(F64(0.0)),
                    ColumnType::Int(_) => Value::Int(0),
                    _ => Value::UInt(0),
                },
            },
            AggFunc::Avg => match (&self.sum, self.count) {
                (Some(s), n) if n > 0 => Value::Float(F64(s.as_f64().unwrap_or(0.0) / n as f64)),
                _ => Value::Float(F64(f64::NAN)),
            },
            _ => self.best.clone().unwrap_or_else(|| a.ty.default_value()),
        }
    }
}
