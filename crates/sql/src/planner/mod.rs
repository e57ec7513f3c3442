//! ClickHouse-dialect SQL text to a typed [`Query`]: names resolved against the catalog, types
//! inferred, unsupported constructs refused with their location. One function per clause:
//! this module plans queries, set operations, FROM and joins; `select` the select list,
//! GROUP BY, HAVING and ORDER BY; `filter` WHERE/PREWHERE (temporal bounds and IN-subquery
//! joins); `expr` expressions, functions and aggregates.
//!
//! Shapes the engine sees:
//! - `SELECT .. FROM t WHERE .. GROUP BY ..` is Scan → Filter/TemporalFilter → Aggregate
//!   (keys, then aggregates) → Filter (HAVING) → Project (the select list, then hidden ORDER
//!   BY columns) → Distinct.
//! - `x IN (SELECT y ..)` is a Join(Inner) of the input with Distinct(subquery) projected to
//!   `(y, 1)`, then a Project back to the input's columns; `NOT IN` is the same with a
//!   Join(Left) and a Filter keeping rows whose marker column is 0 (the default of an
//!   unmatched right side).
//! - `arrayJoin(x)` / `ARRAY JOIN x` append `x` with a Project, then unnest it in place with
//!   ArrayJoin; `ARRAY JOIN col` without an alias unnests the column where it is.

mod expr;
mod filter;
mod grouped_windows;
mod scalar;
mod select;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use petrel_value::{Column, ColumnType, Value};
use sqlparser::ast::{
    self, BinaryOperator, JoinConstraint, JoinOperator, LimitClause, OrderByKind, SetExpr,
    SetOperator, SetQuantifier, Spanned, TableFactor,
};
use sqlparser::dialect::ClickHouseDialect;
use sqlparser::parser::Parser;

use crate::expr::Expr;
use crate::functions::{common_type, Func};
use crate::plan::*;
use crate::preprocess::{parse_error, prepare, ScalarWith};
use crate::SqlError;

pub(crate) use expr::cast_type;

/// Plans one SELECT query (ClickHouse dialect) against `catalog`.
pub fn plan_query(sql: &str, catalog: &dyn Catalog) -> Result<Query, SqlError> {
    let prepared = prepare(sql)?;
    let end = prepared
        .tokens
        .last()
        .map(|t| t.span.end)
        .unwrap_or(sqlparser::tokenizer::Location { line: 1, column: 1 });
    let dialect = ClickHouseDialect {};
    let statements = Parser::new(&dialect)
        .with_tokens_with_locations(prepared.tokens)
        .parse_statements()
        .map_err(|e| {
            // An error at the end of the text comes without a location.
            let mut err = parse_error(&e);
            if err.line == 0 {
                (err.line, err.column) = (end.line, end.column);
            }
            err
        })?;
    let [ast::Statement::Query(query)] = statements.as_slice() else {
        return Err(SqlError::new("expected exactly one SELECT query"));
    };
    let mut planner = Planner {
        catalog,
        ctes: Vec::new(),
        with_scalars: prepared.scalars,
        scalars: Vec::new(),
        array_joins: Vec::new(),
        lambdas: Vec::new(),
        lifted_scalars: 0,
        windows: Vec::new(),
        defining: Vec::new(),
        any_left_joins: prepared.any_left_joins,
    };
    planner.query(query, true)
}

/// An error at the location of `node`.
fn at(message: impl Into<String>, node: &impl Spanned) -> SqlError {
    let start = node.span().start;
    SqlError {
        message: message.into(),
        line: start.line,
        column: start.column,
    }
}

/// `unsupported: <what> at line:column`.
fn unsupported(what: &str, node: &impl Spanned) -> SqlError {
    let start = node.span().start;
    let message = if start.line > 0 {
        format!("unsupported: {what} at {}:{}", start.line, start.column)
    } else {
        format!("unsupported: {what}")
    };
    at(message, node)
}

/// One column visible to expressions.
#[derive(Clone, Debug)]
struct ScopeColumn {
    /// The table (or alias) qualifying it, if any.
    table: Option<String>,
    name: String,
    ty: ColumnType,
    /// Reachable only qualified (a USING column's right-hand copy, an array that ARRAY JOIN
    /// shadows) or not at all (internal columns).
    hidden: bool,
    /// Listed by an unqualified `*`.
    in_star: bool,
}

/// The columns of the relation expressions are planned over, in row order.
#[derive(Clone, Debug, Default)]
struct Scope {
    columns: Vec<ScopeColumn>,
}

impl Scope {
    fn of(table: Option<&str>, columns: &[Column]) -> Scope {
        Scope {
            columns: columns
                .iter()
                .map(|c| ScopeColumn {
                    table: table.map(str::to_string),
                    name: c.name.clone(),
                    ty: c.ty.clone(),
                    hidden: false,
                    in_star: true,
                })
                .collect(),
        }
    }

    /// A column that only the planner refers to (by index).
    fn push_internal(&mut self, name: String, ty: ColumnType) {
        self.columns.push(ScopeColumn {
            table: None,
            name,
            ty,
            hidden: true,
            in_star: false,
        });
    }

    /// The column `[table.]name`: exact names first, then case-insensitively.
    fn resolve(&self, table: Option<&str>, name: &str) -> Result<Option<usize>, String> {
        let find = |exact: bool| -> Vec<usize> {
            self.columns
                .iter()
                .enumerate()
                .filter(|(_, c)| {
                    let name_ok = if exact {
                        c.name == name
                    } else {
                        c.name.eq_ignore_ascii_case(name)
                    };
                    let table_ok = match table {
                        Some(t) => c
                            .table
                            .as_deref()
                            .is_some_and(|ct| ct == t || ct.eq_ignore_ascii_case(t)),
                        None => !c.hidden,
                    };
                    name_ok && table_ok
                })
                .map(|(i, _)| i)
                .collect()
        };
        let mut found = find(true);
        if found.is_empty() {
            found = find(false);
        }
        // `t.col` over an unaliased subquery that selected `t.col`: ClickHouse still reads it
        // by that name, so it resolves to the subquery's column `col`.
        if found.is_empty() {
            if let Some(t) = table {
                let known = self.columns.iter().any(|c| {
                    c.table
                        .as_deref()
                        .is_some_and(|ct| ct.eq_ignore_ascii_case(t))
                });
                if !known {
                    if let Ok(Some(i)) = self.resolve(None, name) {
                        if self.columns[i].table.is_none() {
                            return Ok(Some(i));
                        }
                    }
                }
            }
        }
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            _ => Err(format!(
                "column '{name}' is ambiguous: qualify it with its table"
            )),
        }
    }
}

/// How expressions are being planned.
enum Mode<'m> {
    /// Over the input rows.
    Rows,
    /// Over groups: GROUP BY keys (over the input) become key columns, aggregates are
    /// collected (with their output columns).
    Groups {
        keys: &'m [Expr],
        aggregates: &'m mut Vec<Aggregate>,
        agg_columns: &'m mut Vec<Column>,
    },
}

/// Select-list and `WITH <expr> AS <name>` aliases, usable in WHERE, GROUP BY, HAVING and
/// ORDER BY, as ClickHouse allows.
type Aliases = BTreeMap<String, ast::Expr>;

struct Planner<'c> {
    catalog: &'c dyn Catalog,
    /// CTEs in scope, innermost last.
    ctes: Vec<(String, Plan)>,
    /// Every scalar WITH item of the text, with the query it belongs to.
    with_scalars: Vec<ScalarWith>,
    /// The scalar WITH aliases in scope (outer queries' first).
    scalars: Vec<(String, ast::Expr)>,
    /// `arrayJoin(..)` calls of the current select list, by text, and their column.
    array_joins: Vec<(String, usize)>,
    /// The parameters (name, element type) of the lambdas being planned, outermost first.
    lambdas: Vec<Vec<(String, ColumnType)>>,
    /// How many scalar subqueries were lifted into joins (names their columns).
    lifted_scalars: usize,
    /// Window function calls of the current select list, by text: their column and type.
    windows: Vec<(String, usize, ColumnType)>,
    /// `WITH (subquery) AS name` items whose subquery is being planned: inside it, `name`
    /// is not the alias (ClickHouse reads it as a column there).
    defining: Vec<String>,
    /// Where the relations of `ANY LEFT JOIN`s start (from `preprocess`).
    any_left_joins: Vec<(u64, u64)>,
}

fn conjuncts<'a>(e: &'a ast::Expr, out: &mut Vec<&'a ast::Expr>) {
    match e {
        ast::Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            conjuncts(left, out);
            conjuncts(right, out);
        }
        ast::Expr::Nested(inner)
            if matches!(
                **inner,
                ast::Expr::BinaryOp {
                    op: BinaryOperator::And,
                    ..
                }
            ) =>
        {
            conjuncts(inner, out)
        }
        other => out.push(other),
    }
}

fn and_all(mut parts: Vec<Expr>) -> Option<Expr> {
    match parts.len() {
        0 => None,
        1 => parts.pop(),
        _ => Some(Expr::call(Func::And, parts)),
    }
}

pub(super) fn sort_key(expr: Expr, o: &ast::OrderByExpr) -> SortKey {
    SortKey {
        expr,
        desc: matches!(o.options.sort, Some(ast::OrderBySort::Desc)),
        nulls_first: o.options.nulls_first.unwrap_or(false),
    }
}

/// A plan node with the given output columns.
fn node(node: PlanNode, columns: Vec<Column>) -> Plan {
    Plan { node, columns }
}

/// `input` projected through `exprs` into `columns`.
fn project(input: Plan, exprs: Vec<Expr>, columns: Vec<Column>) -> Plan {
    node(
        PlanNode::Project {
            input: Box::new(input),
            exprs,
        },
        columns,
    )
}

/// `input` filtered by `predicate`.
fn filtered(input: Plan, predicate: Expr) -> Plan {
    let columns = input.columns.clone();
    node(
        PlanNode::Filter {
            input: Box::new(input),
            predicate,
        },
        columns,
    )
}

impl Planner<'_> {
    /// A query with its WITH clause: CTEs and scalar aliases are in scope for its body.
    fn query(&mut self, q: &ast::Query, top: bool) -> Result<Query, SqlError> {
        let defining_mark = self.defining.len();
        let span = q.span();
        let defined: Vec<String> = self
            .scalars
            .iter()
            .filter(|(_, e)| matches!(e, ast::Expr::Subquery(s) if s.span() == span))
            .map(|(name, _)| name.clone())
            .collect();
        self.defining.extend(defined);
        let out = self.query_in_scope(q, top);
        self.defining.truncate(defining_mark);
        out
    }

    fn query_in_scope(&mut self, q: &ast::Query, top: bool) -> Result<Query, SqlError> {
        let (cte_mark, scalar_mark) = (self.ctes.len(), self.scalars.len());
        let starts = q.body.span().start;
        let own: Vec<(String, ast::Expr)> = self
            .with_scalars
            .iter()
            .filter(|s| s.query_at == starts)
            .map(|s| (s.name.clone(), s.expr.clone()))
            .collect();
        self.scalars.extend(own);
        let out = self.ctes_then_body(q, top);
        self.ctes.truncate(cte_mark);
        self.scalars.truncate(scalar_mark);
        out
    }

    fn ctes_then_body(&mut self, q: &ast::Query, top: bool) -> Result<Query, SqlError> {
        if let Some(with) = &q.with {
            if with.recursive {
                return Err(unsupported("WITH RECURSIVE", with));
            }
            for cte in &with.cte_tables {
                let plan = self.subquery(&cte.query)?;
                self.ctes.push((cte.alias.name.value.clone(), plan));
            }
        }
        self.query_body(q, top)
    }

    /// A query read as a relation (a subquery, a CTE): its LIMIT becomes a top-k, hidden
    /// columns are dropped.
    fn subquery(&mut self, q: &ast::Query) -> Result<Plan, SqlError> {
        Ok(self.query(q, false)?.into_plan())
    }

    /// The body with ORDER BY, LIMIT [BY] and OFFSET.
    fn query_body(&mut self, q: &ast::Query, top: bool) -> Result<Query, SqlError> {
        if let Some(split) = grouped_windows::windows_over_groups(q) {
            return self.query_body(&split, top);
        }
        if q.fetch.is_some() {
            return Err(unsupported("FETCH", q));
        }
        if q.format_clause.is_some() {
            return Err(unsupported("FORMAT (the endpoint chooses the format)", q));
        }
        if !q.locks.is_empty() || q.for_clause.is_some() || !q.pipe_operators.is_empty() {
            return Err(unsupported("FOR UPDATE, FOR XML or pipe operators", q));
        }
        let (limit, offset, limit_by) = match &q.limit_clause {
            None => (None, None, Vec::new()),
            Some(LimitClause::LimitOffset {
                limit,
                offset,
                limit_by,
            }) => (
                limit.clone(),
                offset.as_ref().map(|o| o.value.clone()),
                limit_by.clone(),
            ),
            Some(LimitClause::OffsetCommaLimit { offset, limit }) => {
                (Some(limit.clone()), Some(offset.clone()), Vec::new())
            }
        };
        let order: Vec<ast::OrderByExpr> = match &q.order_by {
            None => Vec::new(),
            Some(ob) => match &ob.kind {
                OrderByKind::Expressions(e) => e.clone(),
                OrderByKind::All(_) => return Err(unsupported("ORDER BY ALL", ob)),
            },
        };
        let mut query = match q.body.as_ref() {
            SetExpr::Select(select) => self.select(select, &order)?,
            other => {
                let plan = self.set_expr(other)?;
                let scope = Scope::of(None, &plan.columns);
                let mut order_by = Vec::new();
                for o in &order {
                    let (expr, _) = self.expr(&o.expr, &scope, &Aliases::new(), &mut Mode::Rows)?;
                    order_by.push(sort_key(expr, o));
                }
                Query {
                    visible: plan.columns.len(),
                    plan,
                    order_by,
                    limit: None,
                    offset: None,
                    fill: None,
                }
            }
        };
        query.fill = self.fill(&order, &query, top)?;
        let limit = limit.map(|e| self.limit_expr(&e, top)).transpose()?;
        let offset = offset.map(|e| self.limit_expr(&e, top)).transpose()?;
        if limit_by.is_empty() {
            query.limit = limit;
            query.offset = offset;
            return Ok(query);
        }
        // `LIMIT n BY x` is maintained: a top-k per partition, inside the plan.
        let scope = Scope::of(None, &query.plan.columns);
        let mut partition_by = Vec::new();
        for e in &limit_by {
            partition_by.push(self.expr(e, &scope, &Aliases::new(), &mut Mode::Rows)?.0);
        }
        let constant = |e: Option<Expr>| -> Result<Option<u64>, SqlError> {
            match e {
                None => Ok(None),
                Some(Expr::Literal(v)) => match v.as_i64() {
                    Some(n) if n >= 0 => Ok(Some(n as u64)),
                    _ => Err(SqlError::new("LIMIT BY needs a non-negative integer")),
                },
                Some(_) => Err(unsupported(
                    "a parameter as the limit of LIMIT BY",
                    &limit_by[0],
                )),
            }
        };
        let columns = query.plan.columns.clone();
        query.plan = node(
            PlanNode::TopK {
                input: Box::new(query.plan),
                order_by: query.order_by.clone(),
                limit: constant(limit)?,
                offset: constant(offset)?.unwrap_or(0),
                partition_by,
            },
            columns,
        );
        Ok(query)
    }

    /// `WITH FILL` on the first ORDER BY key of the top-level query, over a result column,
    /// with constant bounds and step.
    fn fill(
        &mut self,
        order: &[ast::OrderByExpr],
        query: &Query,
        top: bool,
    ) -> Result<Option<Fill>, SqlError> {
        let Some(at_key) = order.iter().position(|o| o.with_fill.is_some()) else {
            return Ok(None);
        };
        let o = &order[at_key];
        if at_key != 0 || !top {
            return Err(unsupported(
                "WITH FILL other than on the first ORDER BY key of the endpoint's query",
                &o.expr,
            ));
        }
        let Some(Expr::Column(column)) = query.order_by.first().map(|k| &k.expr) else {
            return Err(unsupported(
                "WITH FILL on an expression that is not a column of the result",
                &o.expr,
            ));
        };
        let Some(with_fill) = &o.with_fill else {
            return Ok(None);
        };
        let mut constant = |e: &ast::Expr| -> Result<Expr, SqlError> {
            let (x, _) = self.expr(e, &Scope::default(), &Aliases::new(), &mut Mode::Rows)?;
            if x.is_constant() {
                Ok(x)
            } else {
                Err(at("WITH FILL bounds and step must be constants", e))
            }
        };
        let from = with_fill.from.as_ref().map(&mut constant).transpose()?;
        let to = with_fill.to.as_ref().map(&mut constant).transpose()?;
        let step = match &with_fill.step {
            None => FillStep::Number(Expr::Literal(Value::Int(1))),
            Some(e) => match expr::interval_of(e) {
                Some((amount, unit)) => {
                    let unit = unit.map_err(|m| at(m, e))?;
                    FillStep::Interval(constant(amount)?, unit)
                }
                None => FillStep::Number(constant(e)?),
            },
        };
        Ok(Some(Fill {
            column: *column,
            from,
            to,
            step,
        }))
    }

    /// A LIMIT or OFFSET: a constant, or (at the top level only) a parameter.
    fn limit_expr(&mut self, e: &ast::Expr, top: bool) -> Result<Expr, SqlError> {
        let (expr, _) = self.expr(e, &Scope::default(), &Aliases::new(), &mut Mode::Rows)?;
        match expr {
            Expr::Literal(v) if v.as_i64().is_some_and(|n| n >= 0) => {
                Ok(Expr::Literal(Value::UInt(v.as_i64().unwrap_or(0) as u64)))
            }
            Expr::Literal(_) => Err(at("LIMIT and OFFSET must be non-negative integers", e)),
            x if x.is_constant() && top => Ok(x),
            x if x.is_constant() => Err(unsupported(
                "a parameter as LIMIT or OFFSET of a subquery",
                e,
            )),
            _ => Err(at("LIMIT and OFFSET must be constants or parameters", e)),
        }
    }

    /// UNION ALL and parenthesized queries, as relations.
    fn set_expr(&mut self, s: &SetExpr) -> Result<Plan, SqlError> {
        match s {
            SetExpr::Select(select) => Ok(self.select(select, &[])?.into_plan()),
            SetExpr::Query(q) => self.subquery(q),
            SetExpr::SetOperation {
                op: SetOperator::Union,
                set_quantifier: SetQuantifier::All,
                left,
                right,
            } => {
                let l = self.set_expr(left)?;
                let r = self.set_expr(right)?;
                if l.columns.len() != r.columns.len() {
                    return Err(at(
                        format!(
                            "UNION ALL of {} and {} columns",
                            l.columns.len(),
                            r.columns.len()
                        ),
                        s,
                    ));
                }
                let columns = l
                    .columns
                    .iter()
                    .zip(&r.columns)
                    .map(|(a, b)| Column {
                        name: a.name.clone(),
                        ty: common_type(&[a.ty.clone(), b.ty.clone()]),
                    })
                    .collect();
                let mut inputs = Vec::new();
                for p in [l, r] {
                    match p.node {
                        PlanNode::Union { inputs: inner } => inputs.extend(inner),
                        other => inputs.push(node(other, p.columns)),
                    }
                }
                Ok(node(PlanNode::Union { inputs }, columns))
            }
            SetExpr::SetOperation {
                op: SetOperator::Union,
                ..
            } => Err(unsupported(
                "UNION without ALL (write UNION ALL, or SELECT DISTINCT over it)",
                s,
            )),
            SetExpr::SetOperation { op, .. } => Err(unsupported(&op.to_string(), s)),
            SetExpr::Values(_) => Err(unsupported("VALUES", s)),
            other => Err(unsupported(
                "this statement (only SELECT is allowed)",
                other,
            )),
        }
    }

    /// One table of FROM: a CTE, a datasource, an earlier node, or a subquery.
    fn table(&mut self, factor: &TableFactor) -> Result<(Plan, Scope), SqlError> {
        match factor {
            TableFactor::Table {
                name,
                alias,
                args,
                sample,
                version,
                partitions,
                with_hints,
                ..
            } => {
                if args.is_some() {
                    return Err(unsupported(&format!("table function {name}"), factor));
                }
                if sample.is_some() {
                    return Err(unsupported("SAMPLE", factor));
                }
                if version.is_some() || !partitions.is_empty() || !with_hints.is_empty() {
                    return Err(unsupported("table hints, versions or partitions", factor));
                }
                // `workspace.table` names a table of another workspace (Tinybird's shared
                // datasources) or database: not one of this project's.
                if name.0.len() > 1 {
                    return Err(at(
                        format!(
                            "unknown table '{name}' (a table of another workspace or database)"
                        ),
                        factor,
                    ));
                }
                let table_name = name
                    .0
                    .last()
                    .and_then(|p| p.as_ident())
                    .map(|i| i.value.clone())
                    .unwrap_or_else(|| name.to_string());
                let qualifier = alias
                    .as_ref()
                    .map(|a| a.name.value.clone())
                    .unwrap_or_else(|| table_name.clone());
                if let Some((_, plan)) = self.ctes.iter().rev().find(|(n, _)| *n == table_name) {
                    let scope = Scope::of(Some(&qualifier), &plan.columns);
                    return Ok((plan.clone(), scope));
                }
                match self.catalog.table(&table_name) {
                    Some(TableRef::Datasource(columns)) => {
                        let scope = Scope::of(Some(&qualifier), &columns);
                        Ok((node(PlanNode::Scan { table: table_name }, columns), scope))
                    }
                    Some(TableRef::Plan(plan)) => {
                        let scope = Scope::of(Some(&qualifier), &plan.columns);
                        Ok((plan, scope))
                    }
                    None => Err(at(format!("unknown table '{table_name}'"), factor)),
                }
            }
            TableFactor::Derived {
                subquery,
                alias,
                lateral,
                ..
            } => {
                if *lateral {
                    return Err(unsupported("LATERAL", factor));
                }
                let plan = self.subquery(subquery)?;
                let scope = Scope::of(alias.as_ref().map(|a| a.name.value.as_str()), &plan.columns);
                Ok((plan, scope))
            }
            TableFactor::NestedJoin { .. } => Err(unsupported("parenthesized joins", factor)),
            other => Err(unsupported(&format!("FROM {other}"), other)),
        }
    }

    /// FROM: tables, joins (comma joins are cross joins) and ARRAY JOIN; no FROM is one
    /// empty row.
    fn from(&mut self, from: &[ast::TableWithJoins]) -> Result<(Plan, Scope), SqlError> {
        let mut current: Option<(Plan, Scope)> = None;
        let mut after_array_join = false;
        for twj in from {
            let mut acc = self.table(&twj.relation).map_err(|e| {
                if after_array_join && e.message.starts_with("unknown table") {
                    unsupported("ARRAY JOIN of several arrays", &twj.relation)
                } else {
                    e
                }
            })?;
            after_array_join = false;
            for join in &twj.joins {
                after_array_join = false;
                acc = match &join.join_operator {
                    JoinOperator::ArrayJoin => {
                        after_array_join = true;
                        self.array_join(acc, &join.relation, false)?
                    }
                    JoinOperator::LeftArrayJoin => {
                        after_array_join = true;
                        self.array_join(acc, &join.relation, true)?
                    }
                    JoinOperator::InnerArrayJoin => self.array_join(acc, &join.relation, false)?,
                    op => {
                        let right = self.table(&join.relation)?;
                        let start = join.relation.span().start;
                        let any = self.any_left_joins.contains(&(start.line, start.column));
                        self.join(acc, right, op, join, any)?
                    }
                };
            }
            current = Some(match current {
                None => acc,
                Some(left) => self.join(
                    left,
                    acc,
                    &JoinOperator::CrossJoin(JoinConstraint::None),
                    &twj.relation,
                    false,
                )?,
            });
        }
        Ok(current.unwrap_or_else(|| {
            (
                node(
                    PlanNode::Values {
                        rows: vec![Vec::new()],
                    },
                    Vec::new(),
                ),
                Scope::default(),
            )
        }))
    }

    /// `left JOIN right ON/USING ..`: equalities across the sides become keys, the rest of
    /// ON a residual. With `any` (an `ANY LEFT JOIN`), each left row meets at most one right
    /// row: the right side keeps one row per key, the least (a deterministic pick where
    /// ClickHouse takes whichever it reads first).
    fn join(
        &mut self,
        (left, lscope): (Plan, Scope),
        (right, rscope): (Plan, Scope),
        op: &JoinOperator,
        at_node: &impl Spanned,
        any: bool,
    ) -> Result<(Plan, Scope), SqlError> {
        let (kind, constraint) = match op {
            JoinOperator::Join(c) | JoinOperator::Inner(c) => (JoinKind::Inner, c),
            JoinOperator::Left(c) | JoinOperator::LeftOuter(c) => (JoinKind::Left, c),
            JoinOperator::CrossJoin(c) => (JoinKind::Cross, c),
            JoinOperator::Right(_) | JoinOperator::RightOuter(_) => {
                return Err(unsupported("RIGHT JOIN (swap the tables)", at_node))
            }
            JoinOperator::FullOuter(_) => return Err(unsupported("FULL JOIN", at_node)),
            JoinOperator::LeftSemi(_)
            | JoinOperator::LeftAnti(_)
            | JoinOperator::Semi(_)
            | JoinOperator::Anti(_)
            | JoinOperator::RightSemi(_)
            | JoinOperator::RightAnti(_) => {
                return Err(unsupported(
                    "SEMI/ANTI JOIN (use IN / NOT IN (subquery))",
                    at_node,
                ))
            }
            JoinOperator::AsOf { .. } => return Err(unsupported("ASOF JOIN", at_node)),
            _ => return Err(unsupported("this join kind", at_node)),
        };
        let nl = lscope.columns.len();
        let mut scope = lscope.clone();
        scope.columns.extend(rscope.columns.iter().cloned());
        let (mut left_keys, mut right_keys, mut residual) = (Vec::new(), Vec::new(), Vec::new());
        match constraint {
            JoinConstraint::On(on) => {
                let mut parts = Vec::new();
                conjuncts(on, &mut parts);
                for p in parts {
                    if let Some((l, r)) = self.join_key(p, &lscope, &rscope) {
                        left_keys.push(l);
                        right_keys.push(r);
                    } else {
                        residual.push(self.expr(p, &scope, &Aliases::new(), &mut Mode::Rows)?.0);
                    }
                }
            }
            JoinConstraint::Using(names) => {
                for n in names {
                    let name =
                        n.0.last()
                            .and_then(|p| p.as_ident())
                            .map(|i| i.value.clone())
                            .unwrap_or_else(|| n.to_string());
                    let l = lscope.resolve(None, &name).map_err(|e| at(e, n))?;
                    let r = rscope.resolve(None, &name).map_err(|e| at(e, n))?;
                    let (Some(l), Some(r)) = (l, r) else {
                        return Err(at(format!("USING column '{name}' is not on both sides"), n));
                    };
                    left_keys.push(Expr::Column(l));
                    right_keys.push(Expr::Column(r));
                    scope.columns[nl + r].hidden = true;
                    scope.columns[nl + r].in_star = false;
                }
            }
            JoinConstraint::None => {}
            JoinConstraint::Natural => return Err(unsupported("NATURAL JOIN", at_node)),
            JoinConstraint::UsingAlias(..) => return Err(unsupported("USING .. AS", at_node)),
        }
        if kind != JoinKind::Cross && left_keys.is_empty() {
            return Err(at(
                "a join needs an equality between the two sides (or use CROSS JOIN)",
                at_node,
            ));
        }
        let kind = if left_keys.is_empty() {
            JoinKind::Cross
        } else {
            kind
        };
        let right = if any && kind == JoinKind::Left && residual.is_empty() {
            let columns = right.columns.clone();
            node(
                PlanNode::TopK {
                    order_by: (0..columns.len())
                        .map(|i| SortKey {
                            expr: Expr::Column(i),
                            desc: false,
                            nulls_first: false,
                        })
                        .collect(),
                    input: Box::new(right),
                    limit: Some(1),
                    offset: 0,
                    partition_by: right_keys.clone(),
                },
                columns,
            )
        } else {
            right
        };
        let mut columns = left.columns.clone();
        columns.extend(right.columns.iter().cloned());
        let plan = node(
            PlanNode::Join {
                left: Box::new(left),
                right: Box::new(right),
                kind,
                left_keys,
                right_keys,
                residual: and_all(residual),
            },
            columns,
        );
        Ok((plan, scope))
    }

    /// `a = b` with `a` over the left side only and `b` over the right only (or mirrored),
    /// as the pair (left key, right key).
    fn join_key(&mut self, p: &ast::Expr, lscope: &Scope, rscope: &Scope) -> Option<(Expr, Expr)> {
        let mut p = p;
        while let ast::Expr::Nested(inner) = p {
            p = inner;
        }
        let ast::Expr::BinaryOp {
            left: a,
            op: BinaryOperator::Eq,
            right: b,
        } = p
        else {
            return None;
        };
        let mut side = |e: &ast::Expr, s: &Scope| {
            self.expr(e, s, &Aliases::new(), &mut Mode::Rows)
                .ok()
                .filter(|(x, _)| !x.is_constant())
        };
        if let (Some(l), Some(r)) = (side(a, lscope), side(b, rscope)) {
            return Some(filter::key_pair(l, r));
        }
        match (side(b, lscope), side(a, rscope)) {
            (Some(l), Some(r)) => Some(filter::key_pair(l, r)),
            _ => None,
        }
    }

    /// `ARRAY JOIN arr [AS a]` / `LEFT ARRAY JOIN ..`: one row per element (LEFT keeps rows
    /// with an empty array, with the element type's default).
    fn array_join(
        &mut self,
        (plan, mut scope): (Plan, Scope),
        relation: &TableFactor,
        left: bool,
    ) -> Result<(Plan, Scope), SqlError> {
        let TableFactor::Table {
            name, alias, args, ..
        } = relation
        else {
            return Err(unsupported("this ARRAY JOIN", relation));
        };
        let text = match args {
            None => name.to_string(),
            Some(a) => {
                let args: Vec<String> = a.args.iter().map(|x| x.to_string()).collect();
                format!("{name}({})", args.join(", "))
            }
        };
        let e = Parser::new(&ClickHouseDialect {})
            .try_with_sql(&text)
            .and_then(|mut p| p.parse_expr())
            .map_err(|err| at(format!("ARRAY JOIN {text}: {err}"), relation))?;
        let (x, ty) = self.expr(&e, &scope, &Aliases::new(), &mut Mode::Rows)?;
        let ColumnType::Array(inner) = ty.base().clone() else {
            return Err(at(
                format!("ARRAY JOIN needs an array, '{text}' is {}", ty.name()),
                relation,
            ));
        };
        let plain_column = match (&x, alias) {
            (Expr::Column(i), None) => Some(*i),
            _ => None,
        };
        let x = if left {
            Expr::call(
                Func::If,
                vec![
                    Expr::call(Func::Empty, vec![x.clone()]),
                    Expr::Literal(Value::Array(vec![inner.default_value()].into())),
                    x,
                ],
            )
        } else {
            x
        };
        let width = plan.columns.len();
        let mut exprs: Vec<Expr> = (0..width).map(Expr::Column).collect();
        let mut columns = plan.columns.clone();
        let column = match plain_column {
            // `ARRAY JOIN col`: the column itself becomes the element.
            Some(i) => {
                exprs[i] = x;
                i
            }
            None => {
                let name = alias
                    .as_ref()
                    .map(|a| a.name.value.clone())
                    .unwrap_or_else(|| text.clone());
                exprs.push(x);
                columns.push(Column {
                    name: name.clone(),
                    ty: ty.clone(),
                });
                scope.push_internal(name, (*inner).clone());
                scope.columns[width].hidden = false;
                width
            }
        };
        let identity =
            exprs.len() == width && exprs.iter().enumerate().all(|(i, x)| *x == Expr::Column(i));
        let input = if identity {
            plan
        } else {
            project(plan, exprs, columns.clone())
        };
        columns[column].ty = (*inner).clone();
        scope.columns[column].ty = (*inner).clone();
        Ok((
            node(
                PlanNode::ArrayJoin {
                    input: Box::new(input),
                    column,
                },
                columns,
            ),
            scope,
        ))
    }
}
