//! The typed relational plan: what SQL text becomes, and what the engine compiles to
//! differential dataflow. Every node knows its output columns (names and ClickHouse types),
//! so results carry `meta` and the engine never guesses a type.

use petrel_value::{Column, ColumnType, Row, Value};

use crate::expr::Expr;

/// A relational plan node with its output columns.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    /// What the node computes.
    pub node: PlanNode,
    /// The node's output columns, in row order.
    pub columns: Vec<Column>,
}

/// The relational operators Petrel maintains incrementally.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum PlanNode {
    /// All rows of a datasource; the output columns are the datasource's schema.
    Scan {
        /// The datasource's name.
        table: String,
    },
    /// Constant rows (`SELECT 1`, `VALUES`, a table function with literal input).
    Values {
        /// The rows.
        rows: Vec<Row>,
    },
    /// Keeps the rows for which `predicate` is true.
    Filter {
        /// The input.
        input: Box<Plan>,
        /// A boolean expression over the input's columns.
        predicate: Expr,
    },
    /// Keeps each row while `bound.expr  op  now() + offset` holds: a temporal filter, whose
    /// rows enter and leave the result as the clock ticks (see the engine's temporal module).
    TemporalFilter {
        /// The input.
        input: Box<Plan>,
        /// All bounds must hold.
        bounds: Vec<TemporalBound>,
    },
    /// Computes one output column per expression.
    Project {
        /// The input.
        input: Box<Plan>,
        /// One expression per output column, over the input's columns.
        exprs: Vec<Expr>,
    },
    /// `GROUP BY keys` with aggregates. Output columns: the keys, then the aggregates.
    /// With no keys, the result has exactly one row, even over no input (as in SQL).
    Aggregate {
        /// The input.
        input: Box<Plan>,
        /// Grouping expressions over the input's columns.
        keys: Vec<Expr>,
        /// The aggregates.
        aggregates: Vec<Aggregate>,
    },
    /// `SELECT DISTINCT`: each distinct row once.
    Distinct {
        /// The input.
        input: Box<Plan>,
    },
    /// An equi-join. Output columns: the left's, then the right's.
    Join {
        /// The left input.
        left: Box<Plan>,
        /// The right input.
        right: Box<Plan>,
        /// Inner, left outer or cross.
        kind: JoinKind,
        /// Key expressions over the left's columns, pairwise equal to `right_keys`.
        left_keys: Vec<Expr>,
        /// Key expressions over the right's columns.
        right_keys: Vec<Expr>,
        /// A further condition over the joined row (left columns, then right columns), applied
        /// to matching pairs.
        residual: Option<Expr>,
    },
    /// `UNION ALL`: every row of every input (inputs have the same column count).
    Union {
        /// The inputs.
        inputs: Vec<Plan>,
    },
    /// `ORDER BY .. LIMIT n [OFFSET m] [BY partition]` inside a query (a subquery or an
    /// earlier node read as a table): the top rows, per partition when `partition_by` is set.
    TopK {
        /// The input.
        input: Box<Plan>,
        /// Sort order over the input's columns.
        order_by: Vec<SortKey>,
        /// How many rows to keep (after `offset`); `None` keeps all.
        limit: Option<u64>,
        /// How many leading rows to skip.
        offset: u64,
        /// `LIMIT n BY exprs`: the limit applies per distinct value of these expressions.
        partition_by: Vec<Expr>,
    },
    /// `ARRAY JOIN` / `arrayJoin(x)`: one output row per element of an array column; the output
    /// is the input's columns with column `column` replaced by the element.
    ArrayJoin {
        /// The input.
        input: Box<Plan>,
        /// Index of the array column in the input.
        column: usize,
    },
    /// A window function (`sum(x) OVER (PARTITION BY .. ORDER BY ..)`): the input's rows,
    /// each with the function's value over its partition appended as a last column.
    Window {
        /// The input.
        input: Box<Plan>,
        /// `PARTITION BY`.
        partition_by: Vec<Expr>,
        /// `ORDER BY` within the partition.
        order_by: Vec<SortKey>,
        /// The function.
        function: WindowFunction,
    },
}

/// What a window computes for each row.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum WindowFunction {
    /// `row_number()`: the row's position in its partition, from 1.
    RowNumber,
    /// `rank()`: 1 + the rows ordered strictly before it.
    Rank,
    /// `dense_rank()`: 1 + the distinct order values before it.
    DenseRank,
    /// An aggregate over the frame: with an ORDER BY, the rows up to the row and its peers
    /// (SQL's default `RANGE UNBOUNDED PRECEDING`); without, the whole partition.
    Aggregate(Box<Aggregate>),
}

/// The join kinds Petrel maintains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum JoinKind {
    /// Matching pairs only.
    Inner,
    /// Every left row; a left row without a match gets the right columns' default values
    /// (ClickHouse's `join_use_nulls = 0`), or NULL where the right column is Nullable.
    Left,
    /// Every pair.
    Cross,
}

/// A comparison against the clock: `expr op now() + offset_ms`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TemporalBound {
    /// An expression over the input's columns giving a Date, DateTime or DateTime64.
    pub expr: Expr,
    /// How `expr` compares to the shifted clock.
    pub op: CmpOp,
    /// Added to `now()`, in milliseconds (negative for `now() - INTERVAL ..`).
    pub offset_ms: i64,
}

/// Comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CmpOp {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// One aggregate of an [`PlanNode::Aggregate`].
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Aggregate {
    /// Which aggregate.
    pub func: AggFunc,
    /// Argument expressions over the input's columns (`count()` has none).
    pub args: Vec<Expr>,
    /// Constant parameters, e.g. the level of `quantile(0.9)(x)`.
    pub params: Vec<Value>,
    /// The `-If` combinator's condition: only rows where it holds contribute.
    pub filter: Option<Expr>,
    /// The output type.
    pub ty: ColumnType,
}

/// The aggregate functions. `count(DISTINCT x)` is planned as [`AggFunc::UniqExact`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum AggFunc {
    /// `count()`, `count(x)` (non-NULL x).
    Count,
    /// `sum(x)`.
    Sum,
    /// `avg(x)`.
    Avg,
    /// `min(x)`.
    Min,
    /// `max(x)`.
    Max,
    /// `uniq(x)`: approximate distinct count (Petrel computes it exactly).
    Uniq,
    /// `uniqExact(x)`, `count(DISTINCT x)`.
    UniqExact,
    /// `quantile(p)(x)`: params[0] is p.
    Quantile,
    /// `argMax(arg, val)`.
    ArgMax,
    /// `argMin(arg, val)`.
    ArgMin,
    /// `any(x)`: some value of the group (Petrel: the smallest).
    Any,
    /// `anyLast(x)`: some value of the group (Petrel: the largest).
    AnyLast,
    /// `groupArray(x)`: the group's values (Petrel: sorted).
    GroupArray,
    /// `groupUniqArray(x)`: the group's distinct values, sorted.
    GroupUniqArray,
    /// The number of distinct elements across the group's arrays: how `uniqMerge` reads
    /// `uniqState`, which Petrel keeps as the set of distinct values.
    UniqExactArray,
}

impl AggFunc {
    /// True when the aggregate accumulates in the difference type (count, sum, avg): its
    /// state per group is a few numbers, whatever the group's row count, and retractions
    /// subtract exactly.
    pub fn is_accumulable(self) -> bool {
        matches!(self, AggFunc::Count | AggFunc::Sum | AggFunc::Avg)
    }
}

/// One `ORDER BY` item.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SortKey {
    /// What to sort by, over the input's columns.
    pub expr: Expr,
    /// `DESC`.
    pub desc: bool,
    /// `NULLS FIRST` (ClickHouse's default is NULLS LAST).
    pub nulls_first: bool,
}

/// A whole query: a plan to maintain, plus the top-level `ORDER BY`, `LIMIT` and `OFFSET`,
/// which a maintained view applies when it is read rather than maintaining them.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Query {
    /// The maintained part. Its first `visible` columns are the result; any further ones
    /// exist only for `order_by`.
    pub plan: Plan,
    /// How many leading columns of `plan` are the query's result.
    pub visible: usize,
    /// The top-level sort, over `plan`'s columns.
    pub order_by: Vec<SortKey>,
    /// The top-level limit: a literal or a parameter.
    pub limit: Option<Expr>,
    /// The top-level offset: a literal or a parameter.
    pub offset: Option<Expr>,
    /// `ORDER BY key WITH FILL ..` on the first sort key: rows for the missing key values,
    /// made when the result is read (before OFFSET and LIMIT).
    pub fill: Option<Fill>,
}

/// `WITH FILL [FROM a] [TO b] [STEP s]` on the first ORDER BY key, a result column.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Fill {
    /// The filled column (an index into the plan's columns).
    pub column: usize,
    /// `FROM`: where filling starts (the first row's value without it).
    pub from: Option<Expr>,
    /// `TO`: where it stops, excluded (the last row's value without it).
    pub to: Option<Expr>,
    /// `STEP`: a number (days for a Date, seconds for a DateTime), or `INTERVAL n unit`.
    pub step: FillStep,
}

/// Sort keys with parameters replaced by their values.
fn bind_sort_keys(
    keys: &[SortKey],
    values: &std::collections::BTreeMap<String, Value>,
) -> Result<Vec<SortKey>, crate::SqlError> {
    keys.iter()
        .map(|k| {
            Ok(SortKey {
                expr: k.expr.bind(values)?,
                ..k.clone()
            })
        })
        .collect()
}

impl Fill {
    /// Adds the missing rows to `rows`, sorted by the fill column (descending when `desc`):
    /// the keys from `from` (else the first row's key) by `step`, up to `to` excluded (else
    /// the last row's key), that no row has. A made row holds the key and every other
    /// column's default value, as ClickHouse fills. Bounds and step must be bound; at most
    /// `max_rows` rows are made.
    pub fn apply(
        &self,
        rows: Vec<Row>,
        desc: bool,
        columns: &[Column],
        max_rows: usize,
    ) -> Vec<Row> {
        use crate::functions::Func;
        let value = |e: &Option<Expr>| e.as_ref().map(|e| e.eval(&[]));
        let ty = columns.get(self.column).map(|c| c.ty.clone());
        let cast = |v: Value| match &ty {
            Some(t) => t.coerce(&v).unwrap_or(v),
            None => v,
        };
        let advance = |v: &Value| -> Value {
            cast(match &self.step {
                FillStep::Number(e) => Func::Plus.apply(&[v, &e.eval(&[])]),
                FillStep::Interval(e, unit) => Func::AddInterval(*unit).apply(&[v, &e.eval(&[])]),
            })
        };
        // `a` comes before `b` in the result's order.
        let before = |a: &Value, b: &Value| match a.sql_cmp(b) {
            Some(std::cmp::Ordering::Less) => !desc,
            Some(std::cmp::Ordering::Greater) => desc,
            _ => false,
        };
        let made = |key: &Value| -> Row {
            columns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if i == self.column {
                        key.clone()
                    } else {
                        c.ty.default_value()
                    }
                })
                .collect()
        };
        // The sequence of keys is a grid from `from` (else the first row's key) by `step`;
        // a row on a grid point takes that point's place.
        let mut next = value(&self.from).map(cast);
        let to = value(&self.to).map(cast);
        let mut out = Vec::with_capacity(rows.len());
        let mut budget = max_rows;
        let mut fill_until = |next: &mut Value, end: &Value, out: &mut Vec<Row>| {
            while before(next, end) && to.as_ref().is_none_or(|t| before(next, t)) && budget > 0 {
                out.push(made(next));
                budget -= 1;
                let stepped = advance(next);
                if !before(next, &stepped) {
                    // A step that does not move in the sort's direction fills nothing more.
                    *next = end.clone();
                    break;
                }
                *next = stepped;
            }
        };
        for row in rows {
            let key = row.get(self.column).cloned().unwrap_or(Value::Null);
            let at = next.get_or_insert_with(|| key.clone());
            fill_until(at, &key, &mut out);
            if at.sql_cmp(&key) == Some(std::cmp::Ordering::Equal) {
                *at = advance(at);
            }
            out.push(row);
        }
        if let (Some(mut at), Some(end)) = (next, to.clone()) {
            fill_until(&mut at, &end, &mut out);
        }
        out
    }

    /// The fill with parameters replaced by their values.
    pub fn bind(
        &self,
        values: &std::collections::BTreeMap<String, Value>,
    ) -> Result<Fill, crate::SqlError> {
        let b = |e: &Option<Expr>| e.as_ref().map(|e| e.bind(values)).transpose();
        Ok(Fill {
            column: self.column,
            from: b(&self.from)?,
            to: b(&self.to)?,
            step: match &self.step {
                FillStep::Number(e) => FillStep::Number(e.bind(values)?),
                FillStep::Interval(e, u) => FillStep::Interval(e.bind(values)?, *u),
            },
        })
    }
}

/// The step of a `WITH FILL`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum FillStep {
    /// A number added to the key.
    Number(Expr),
    /// `INTERVAL n unit`.
    Interval(Expr, crate::functions::Unit),
}

/// What a plan may read: datasources by name and earlier nodes of the same pipe (or other
/// pipes) as already-planned relations.
pub trait Catalog {
    /// The table called `name`, if any.
    fn table(&self, name: &str) -> Option<TableRef>;
    /// The type of the template parameter `name` (written `$name` in the SQL), if any.
    fn param_type(&self, name: &str) -> Option<ColumnType>;
}

/// A table as the catalog describes it.
#[derive(Clone, Debug)]
pub enum TableRef {
    /// A datasource with its columns: planned as a [`PlanNode::Scan`].
    Datasource(Vec<Column>),
    /// An earlier node or pipe: its plan is inlined.
    Plan(Plan),
}

impl Plan {
    /// Output columns whose values tell the result's rows apart, when the plan guarantees it:
    /// a `GROUP BY`'s keys (one row per group) and a `DISTINCT`'s columns, through filters,
    /// top-k and projections that keep them as plain columns. A view finds a row's earlier
    /// version by them (a group's retraction and insertion), so one probe serves both.
    pub fn identity(&self) -> Option<Vec<usize>> {
        match &self.node {
            PlanNode::Aggregate { keys, .. } => Some((0..keys.len()).collect()),
            PlanNode::Distinct { .. } => Some((0..self.columns.len()).collect()),
            PlanNode::Filter { input, .. }
            | PlanNode::TemporalFilter { input, .. }
            | PlanNode::TopK { input, .. } => input.identity(),
            PlanNode::Project { input, exprs } => input
                .identity()?
                .into_iter()
                .map(|i| exprs.iter().position(|e| *e == Expr::Column(i)))
                .collect(),
            _ => None,
        }
    }

    /// True when only an explicit delete or truncate can retract the plan's rows: datasource
    /// rows and constants through filters, projections and unions. Engine rules
    /// (ReplacingMergeTree read as FINAL, TTL), temporal filters, aggregates, joins and top-k
    /// retract rows as data lands, so plans holding them are not. A top-k over such a plan
    /// can keep just its window, and min/max just their best values.
    pub fn is_append_only(&self) -> bool {
        match &self.node {
            PlanNode::Scan { .. } | PlanNode::Values { .. } => true,
            PlanNode::Filter { input, .. } | PlanNode::Project { input, .. } => {
                input.is_append_only()
            }
            PlanNode::Union { inputs } => inputs.iter().all(Plan::is_append_only),
            _ => false,
        }
    }

    /// The rows of a plan that reads no table and no parameter (constants, projected and
    /// filtered), computed now; `None` for anything else.
    pub fn constant_rows(&self) -> Option<Vec<Row>> {
        let closed = |e: &Expr| {
            let mut params = std::collections::BTreeSet::new();
            e.params(&mut params);
            params.is_empty()
        };
        match &self.node {
            PlanNode::Values { rows } => Some(rows.clone()),
            PlanNode::Project { input, exprs } if exprs.iter().all(closed) => Some(
                input
                    .constant_rows()?
                    .iter()
                    .map(|r| exprs.iter().map(|e| e.eval(r)).collect())
                    .collect(),
            ),
            PlanNode::Filter { input, predicate } if closed(predicate) => Some(
                input
                    .constant_rows()?
                    .into_iter()
                    .filter(|r| predicate.eval(r).is_true())
                    .collect(),
            ),
            _ => None,
        }
    }

    /// The node's inputs.
    pub fn inputs(&self) -> Vec<&Plan> {
        match &self.node {
            PlanNode::Scan { .. } | PlanNode::Values { .. } => Vec::new(),
            PlanNode::Filter { input, .. }
            | PlanNode::TemporalFilter { input, .. }
            | PlanNode::Project { input, .. }
            | PlanNode::Aggregate { input, .. }
            | PlanNode::Distinct { input }
            | PlanNode::TopK { input, .. }
            | PlanNode::ArrayJoin { input, .. }
            | PlanNode::Window { input, .. } => vec![input],
            PlanNode::Join { left, right, .. } => vec![left, right],
            PlanNode::Union { inputs } => inputs.iter().collect(),
        }
    }

    /// The node's inputs, to rewrite them.
    pub fn inputs_mut(&mut self) -> Vec<&mut Plan> {
        match &mut self.node {
            PlanNode::Scan { .. } | PlanNode::Values { .. } => Vec::new(),
            PlanNode::Filter { input, .. }
            | PlanNode::TemporalFilter { input, .. }
            | PlanNode::Project { input, .. }
            | PlanNode::Aggregate { input, .. }
            | PlanNode::Distinct { input }
            | PlanNode::TopK { input, .. }
            | PlanNode::ArrayJoin { input, .. }
            | PlanNode::Window { input, .. } => vec![input],
            PlanNode::Join { left, right, .. } => vec![left, right],
            PlanNode::Union { inputs } => inputs.iter_mut().collect(),
        }
    }

    /// The plan with every parameter replaced by its value.
    pub fn bind(
        &self,
        values: &std::collections::BTreeMap<String, Value>,
    ) -> Result<Plan, crate::SqlError> {
        let b = |e: &Expr| e.bind(values);
        let bs = |es: &[Expr]| {
            es.iter()
                .map(|e| e.bind(values))
                .collect::<Result<Vec<_>, _>>()
        };
        let bp = |p: &Plan| p.bind(values).map(Box::new);
        let node = match &self.node {
            PlanNode::Scan { .. } | PlanNode::Values { .. } => self.node.clone(),
            PlanNode::Filter { input, predicate } => PlanNode::Filter {
                input: bp(input)?,
                predicate: b(predicate)?,
            },
            PlanNode::TemporalFilter { input, bounds } => PlanNode::TemporalFilter {
                input: bp(input)?,
                bounds: bounds
                    .iter()
                    .map(|t| {
                        Ok(TemporalBound {
                            expr: b(&t.expr)?,
                            ..t.clone()
                        })
                    })
                    .collect::<Result<_, crate::SqlError>>()?,
            },
            PlanNode::Project { input, exprs } => PlanNode::Project {
                input: bp(input)?,
                exprs: bs(exprs)?,
            },
            PlanNode::Aggregate {
                input,
                keys,
                aggregates,
            } => PlanNode::Aggregate {
                input: bp(input)?,
                keys: bs(keys)?,
                aggregates: aggregates
                    .iter()
                    .map(|a| {
                        Ok(Aggregate {
                            args: bs(&a.args)?,
                            filter: a.filter.as_ref().map(b).transpose()?,
                            ..a.clone()
                        })
                    })
                    .collect::<Result<_, crate::SqlError>>()?,
            },
            PlanNode::Distinct { input } => PlanNode::Distinct { input: bp(input)? },
            PlanNode::Join {
                left,
                right,
                kind,
                left_keys,
                right_keys,
                residual,
            } => PlanNode::Join {
                left: bp(left)?,
                right: bp(right)?,
                kind: *kind,
                left_keys: bs(left_keys)?,
                right_keys: bs(right_keys)?,
                residual: residual.as_ref().map(b).transpose()?,
            },
            PlanNode::Union { inputs } => PlanNode::Union {
                inputs: inputs
                    .iter()
                    .map(|p| p.bind(values))
                    .collect::<Result<_, _>>()?,
            },
            PlanNode::TopK {
                input,
                order_by,
                limit,
                offset,
                partition_by,
            } => PlanNode::TopK {
                input: bp(input)?,
                order_by: bind_sort_keys(order_by, values)?,
                limit: *limit,
                offset: *offset,
                partition_by: bs(partition_by)?,
            },
            PlanNode::ArrayJoin { input, column } => PlanNode::ArrayJoin {
                input: bp(input)?,
                column: *column,
            },
            PlanNode::Window {
                input,
                partition_by,
                order_by,
                function,
            } => PlanNode::Window {
                input: bp(input)?,
                partition_by: bs(partition_by)?,
                order_by: bind_sort_keys(order_by, values)?,
                function: match function {
                    WindowFunction::Aggregate(a) => {
                        WindowFunction::Aggregate(Box::new(Aggregate {
                            args: bs(&a.args)?,
                            filter: a.filter.as_ref().map(b).transpose()?,
                            ..(**a).clone()
                        }))
                    }
                    other => other.clone(),
                },
            },
        };
        Ok(Plan {
            node,
            columns: self.columns.clone(),
        })
    }

    /// Adds the names of the parameters the plan reads.
    pub fn params(&self, out: &mut std::collections::BTreeSet<String>) {
        match &self.node {
            PlanNode::Scan { .. } | PlanNode::Values { .. } => {}
            PlanNode::Filter { input, predicate } => {
                predicate.params(out);
                input.params(out);
            }
            PlanNode::TemporalFilter { input, bounds } => {
                bounds.iter().for_each(|b| b.expr.params(out));
                input.params(out);
            }
            PlanNode::Project { input, exprs } => {
                exprs.iter().for_each(|e| e.params(out));
                input.params(out);
            }
            PlanNode::Aggregate {
                input,
                keys,
                aggregates,
            } => {
                keys.iter().for_each(|e| e.params(out));
                for a in aggregates {
                    a.args.iter().for_each(|e| e.params(out));
                    if let Some(f) = &a.filter {
                        f.params(out);
                    }
                }
                input.params(out);
            }
            PlanNode::Distinct { input } | PlanNode::ArrayJoin { input, .. } => input.params(out),
            PlanNode::Join {
                left,
                right,
                left_keys,
                right_keys,
                residual,
                ..
            } => {
                left_keys
                    .iter()
                    .chain(right_keys)
                    .for_each(|e| e.params(out));
                if let Some(r) = residual {
                    r.params(out);
                }
                left.params(out);
                right.params(out);
            }
            PlanNode::Union { inputs } => inputs.iter().for_each(|p| p.params(out)),
            PlanNode::TopK {
                input,
                order_by,
                partition_by,
                ..
            } => {
                order_by.iter().for_each(|k| k.expr.params(out));
                partition_by.iter().for_each(|e| e.params(out));
                input.params(out);
            }
            PlanNode::Window {
                input,
                partition_by,
                order_by,
                function,
            } => {
                order_by.iter().for_each(|k| k.expr.params(out));
                partition_by.iter().for_each(|e| e.params(out));
                if let WindowFunction::Aggregate(a) = function {
                    a.args.iter().for_each(|e| e.params(out));
                    if let Some(f) = &a.filter {
                        f.params(out);
                    }
                }
                input.params(out);
            }
        }
    }
}

impl Query {
    /// The query as a relation, for when it is read as a table (a subquery, a CTE, an earlier
    /// node): a top-level LIMIT becomes a top-k (its ORDER BY decides which rows), ORDER BY
    /// alone is dropped, and hidden columns are projected away. A LIMIT or OFFSET that is
    /// still an unbound parameter is bound with [`Query::bind_limits`] first; left unbound it
    /// is ignored.
    pub fn into_plan(self) -> Plan {
        let Query {
            mut plan,
            visible,
            order_by,
            limit,
            offset,
            fill: _,
        } = self;
        let constant = |e: &Option<Expr>| match e {
            Some(Expr::Literal(v)) => v.as_i64().map(|n| n.max(0) as u64),
            _ => None,
        };
        let (limit, offset) = (constant(&limit), constant(&offset));
        if limit.is_some() || offset.is_some_and(|o| o > 0) {
            let columns = plan.columns.clone();
            plan = Plan {
                node: PlanNode::TopK {
                    input: Box::new(plan),
                    order_by,
                    limit,
                    offset: offset.unwrap_or(0),
                    partition_by: Vec::new(),
                },
                columns,
            };
        }
        if plan.columns.len() > visible {
            let columns = plan.columns[..visible].to_vec();
            plan = Plan {
                node: PlanNode::Project {
                    input: Box::new(plan),
                    exprs: (0..visible).map(Expr::Column).collect(),
                },
                columns,
            };
        }
        plan
    }

    /// The query with every parameter replaced by its value: in the plan, the ORDER BY, the
    /// LIMIT and the OFFSET.
    pub fn bind(
        &self,
        values: &std::collections::BTreeMap<String, Value>,
    ) -> Result<Query, crate::SqlError> {
        Ok(Query {
            plan: self.plan.bind(values)?,
            visible: self.visible,
            order_by: bind_sort_keys(&self.order_by, values)?,
            limit: self.limit.as_ref().map(|e| e.bind(values)).transpose()?,
            offset: self.offset.as_ref().map(|e| e.bind(values)).transpose()?,
            fill: self.fill.as_ref().map(|f| f.bind(values)).transpose()?,
        })
    }

    /// Binds parameters in LIMIT and OFFSET only.
    pub fn bind_limits(
        mut self,
        values: &std::collections::BTreeMap<String, Value>,
    ) -> Result<Query, crate::SqlError> {
        self.limit = self.limit.map(|e| e.bind(values)).transpose()?;
        self.offset = self.offset.map(|e| e.bind(values)).transpose()?;
        Ok(self)
    }
}
