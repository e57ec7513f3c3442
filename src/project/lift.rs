//! Parameter lifting (Principle 4): `WHERE col = {{String(p)}}` becomes a lookup key.
//!
//! The filter is removed and `col` is carried up to the query's output (added to every
//! GROUP BY, DISTINCT and LIMIT BY on the way), so one maintained view holds the result for
//! every value of `p`, grouped by `col`; a request reads the key it names. Where an operator
//! cannot carry the column (a keyless aggregate, which must answer one row even for a value
//! with no data; a union; the right side of a join), nothing below it is lifted and the
//! parameter stays in the plan, to be bound per view instead.

use petrel_sql::{Expr, Plan, PlanNode, Query};
use petrel_value::{Column, ColumnType};

/// An equality parameter served as a lookup key.
#[derive(Clone, Debug, PartialEq)]
pub struct LiftedKey {
    /// The template parameter.
    pub param: String,
    /// The view's column holding the key.
    pub column: usize,
    /// The column's type (the parameter's value is coerced to it for the lookup).
    pub ty: ColumnType,
}

/// Lifts every liftable equality parameter of `query` into a key column appended to its
/// plan's output. Columns before `query.visible` and the ORDER BY are unchanged.
pub fn lift_keys(mut query: Query) -> (Query, Vec<LiftedKey>) {
    let (plan, keys) = lift(query.plan);
    query.plan = plan;
    (query, keys)
}

/// Splits an expression into its AND-ed conjuncts.
fn conjuncts(e: Expr, out: &mut Vec<Expr>) {
    match e {
        Expr::Call {
            func: petrel_sql::functions::Func::And,
            args,
        } => {
            for a in args {
                conjuncts(a, out);
            }
        }
        other => out.push(other),
    }
}

/// `Column(c) = Param(p)` (either way round).
fn column_equals_param(e: &Expr) -> Option<(usize, String)> {
    match e {
        Expr::Call { func, args }
            if *func == petrel_sql::functions::Func::Eq && args.len() == 2 =>
        {
            match (&args[0], &args[1]) {
                (Expr::Column(c), Expr::Param { name, .. })
                | (Expr::Param { name, .. }, Expr::Column(c)) => Some((*c, name.clone())),
                _ => None,
            }
        }
        _ => None,
    }
}

fn and_all(mut parts: Vec<Expr>) -> Option<Expr> {
    match parts.len() {
        0 => None,
        1 => parts.pop(),
        _ => Some(Expr::Call {
            func: petrel_sql::functions::Func::And,
            args: parts,
        }),
    }
}

/// Appends key columns to `plan`'s output: `keys` are input positions of `input_width`-wide
/// rows that become new trailing columns.
fn with_key_columns(plan: Plan, width: usize, keys: &[LiftedKey]) -> (Plan, Vec<LiftedKey>) {
    let mut exprs: Vec<Expr> = (0..width).map(Expr::Column).collect();
    let mut columns: Vec<Column> = plan.columns[..width].to_vec();
    let mut lifted = Vec::new();
    for k in keys {
        exprs.push(Expr::Column(k.column));
        columns.push(Column {
            name: format!("__key_{}", k.param),
            ty: k.ty.clone(),
        });
        lifted.push(LiftedKey {
            column: columns.len() - 1,
            ..k.clone()
        });
    }
    (
        Plan {
            node: PlanNode::Project {
                input: Box::new(plan),
                exprs,
            },
            columns,
        },
        lifted,
    )
}

/// Lifts below `plan`; the result's output is `plan`'s columns followed by key columns.
fn lift(plan: Plan) -> (Plan, Vec<LiftedKey>) {
    let Plan { node, columns } = plan;
    match node {
        PlanNode::Filter { input, predicate } => {
            let (input, mut keys) = lift(*input);
            let mut parts = Vec::new();
            conjuncts(predicate, &mut parts);
            let mut kept = Vec::new();
            for p in parts {
                match column_equals_param(&p) {
                    Some((c, param)) => keys.push(LiftedKey {
                        param,
                        column: c,
                        ty: input.columns[c].ty.clone(),
                    }),
                    None => kept.push(p),
                }
            }
            let out_columns = input.columns.clone();
            let plan = match and_all(kept) {
                Some(predicate) => Plan {
                    node: PlanNode::Filter {
                        input: Box::new(input),
                        predicate,
                    },
                    columns: out_columns,
                },
                None => input,
            };
            // Keys found here point into the filter's input, which is also its output; move
            // them to trailing columns so parents see them after their own columns.
            let width = columns.len();
            let (trailing, direct): (Vec<LiftedKey>, Vec<LiftedKey>) =
                keys.into_iter().partition(|k| k.column >= width);
            if direct.is_empty() {
                (plan, trailing)
            } else {
                with_key_columns(plan, width, &[trailing, direct].concat())
            }
        }
        PlanNode::TemporalFilter { input, bounds } => {
            let (input, keys) = lift(*input);
            let columns = input.columns.clone();
            (
                Plan {
                    node: PlanNode::TemporalFilter {
                        input: Box::new(input),
                        bounds,
                    },
                    columns,
                },
                keys,
            )
        }
        PlanNode::ArrayJoin { input, column } => {
            let (input, keys) = lift(*input);
            let columns = input.columns.clone();
            (
                Plan {
                    node: PlanNode::ArrayJoin {
                        input: Box::new(input),
                        column,
                    },
                    columns,
                },
                keys,
            )
        }
        PlanNode::Project { input, mut exprs } => {
            let (input, keys) = lift(*input);
            let mut columns = columns;
            let mut lifted = Vec::new();
            for k in keys {
                exprs.push(Expr::Column(k.column));
                columns.push(Column {
                    name: format!("__key_{}", k.param),
                    ty: k.ty.clone(),
                });
                lifted.push(LiftedKey {
                    column: columns.len() - 1,
                    ..k
                });
            }
            (
                Plan {
                    node: PlanNode::Project {
                        input: Box::new(input),
                        exprs,
                    },
                    columns,
                },
                lifted,
            )
        }
        PlanNode::Aggregate {
            input,
            mut keys,
            aggregates,
        } if !keys.is_empty() => {
            let (input, lifted_in) = lift(*input);
            if lifted_in.is_empty() {
                return (
                    Plan {
                        node: PlanNode::Aggregate {
                            input: Box::new(input),
                            keys,
                            aggregates,
                        },
                        columns,
                    },
                    Vec::new(),
                );
            }
            // GROUP BY keys ++ lifted, then reorder to keys, aggregates, lifted.
            let nk = keys.len();
            let na = aggregates.len();
            let mut agg_columns: Vec<Column> = columns[..nk].to_vec();
            for k in &lifted_in {
                keys.push(Expr::Column(k.column));
                agg_columns.push(Column {
                    name: format!("__key_{}", k.param),
                    ty: k.ty.clone(),
                });
            }
            agg_columns.extend(columns[nk..].iter().cloned());
            let aggregate = Plan {
                node: PlanNode::Aggregate {
                    input: Box::new(input),
                    keys,
                    aggregates,
                },
                columns: agg_columns.clone(),
            };
            let nl = lifted_in.len();
            let mut exprs: Vec<Expr> = (0..nk).map(Expr::Column).collect();
            exprs.extend((nk + nl..nk + nl + na).map(Expr::Column));
            exprs.extend((nk..nk + nl).map(Expr::Column));
            let mut out_columns = columns.clone();
            let mut lifted = Vec::new();
            for (i, k) in lifted_in.into_iter().enumerate() {
                out_columns.push(agg_columns[nk + i].clone());
                lifted.push(LiftedKey {
                    column: nk + na + i,
                    ..k
                });
            }
            (
                Plan {
                    node: PlanNode::Project {
                        input: Box::new(aggregate),
                        exprs,
                    },
                    columns: out_columns,
                },
                lifted,
            )
        }
        PlanNode::Distinct { input } => {
            let (input, keys) = lift(*input);
            let columns = input.columns.clone();
            (
                Plan {
                    node: PlanNode::Distinct {
                        input: Box::new(input),
                    },
                    columns,
                },
                keys,
            )
        }
        PlanNode::TopK {
            input,
            order_by,
            limit,
            offset,
            mut partition_by,
        } => {
            let (input, keys) = lift(*input);
            partition_by.extend(keys.iter().map(|k| Expr::Column(k.column)));
            let columns = input.columns.clone();
            (
                Plan {
                    node: PlanNode::TopK {
                        input: Box::new(input),
                        order_by,
                        limit,
                        offset,
                        partition_by,
                    },
                    columns,
                },
                keys,
            )
        }
        PlanNode::Join {
            left,
            right,
            kind,
            left_keys,
            right_keys,
            residual,
        } => {
            let left_width = left.columns.len();
            let (left, keys) = lift(*left);
            if keys.is_empty() {
                return (
                    Plan {
                        node: PlanNode::Join {
                            left: Box::new(left),
                            right,
                            kind,
                            left_keys,
                            right_keys,
                            residual,
                        },
                        columns,
                    },
                    Vec::new(),
                );
            }
            // Joined rows are left ++ keys ++ right: shift right-side references in the residual,
            // then reorder to left ++ right ++ keys.
            let nl = keys.len();
            let right_width = right.columns.len();
            let shift = |i: usize| if i < left_width { i } else { i + nl };
            let residual = residual.map(|r| r.map_columns(&shift));
            let mut joined_columns = left.columns.clone();
            joined_columns.extend(right.columns.iter().cloned());
            let join = Plan {
                node: PlanNode::Join {
                    left: Box::new(left),
                    right,
                    kind,
                    left_keys,
                    right_keys,
                    residual,
                },
                columns: joined_columns.clone(),
            };
            let mut exprs: Vec<Expr> = (0..left_width).map(Expr::Column).collect();
            exprs.extend((left_width + nl..left_width + nl + right_width).map(Expr::Column));
            exprs.extend((left_width..left_width + nl).map(Expr::Column));
            let mut out_columns = columns;
            let mut lifted = Vec::new();
            for (i, k) in keys.into_iter().enumerate() {
                out_columns.push(joined_columns[left_width + i].clone());
                lifted.push(LiftedKey {
                    column: left_width + right_width + i,
                    ..k
                });
            }
            (
                Plan {
                    node: PlanNode::Project {
                        input: Box::new(join),
                        exprs,
                    },
                    columns: out_columns,
                },
                lifted,
            )
        }
        node => (Plan { node, columns }, Vec::new()),
    }
}
