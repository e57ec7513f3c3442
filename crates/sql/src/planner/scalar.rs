//! Scalar subqueries that read tables (`SELECT (SELECT count() FROM a) + (SELECT count() FROM
//! b)`, `WHERE x > (SELECT avg(x) FROM t)`): each becomes a CROSS JOIN with a one-row relation
//! (`SELECT any(value) FROM (subquery)`), so it is maintained like any join; the expression
//! reads the joined column. Subqueries computed from constants are left to the expression
//! planner, which folds them to their value.
//!
//! `x [NOT] IN (subquery)` where it is not one of WHERE's conditions joined by AND (those are
//! semi-joins: see `filter`), in the select list, HAVING or under OR, is the same: the
//! subquery's distinct values as one array (`SELECT groupUniqArray(v) FROM (subquery)`),
//! and the expression `has(values, x)`.

use std::collections::HashMap;
use std::ops::ControlFlow;

use sqlparser::ast::{self, Spanned, VisitMut, VisitorMut};
use sqlparser::dialect::ClickHouseDialect;
use sqlparser::parser::Parser;

use super::expr::{contains_aggregate, is_aggregate_call};
use super::{unsupported, Planner};
use crate::SqlError;

/// Where a subquery starts in the SQL text: which one it is.
type At = (u64, u64);

fn at(q: &ast::Query) -> At {
    let start = q.span().start;
    (start.line, start.column)
}

/// Finds (and, when told which, replaces) the scalar subqueries of one SELECT level.
struct Subqueries<'r> {
    /// Nesting depth in queries: only depth 0 belongs to the SELECT being planned.
    depth: usize,
    /// Every scalar subquery met at depth 0, in order, by where it starts (an IN subquery as
    /// the query of its distinct values).
    found: Vec<(At, ast::Query)>,
    /// IN subqueries that are WHERE conditions joined by AND: semi-joins, not lifted.
    semi: &'r std::collections::HashSet<At>,
    /// Replacements by where the subquery starts (when replacing).
    replace: Option<&'r HashMap<At, ast::Expr>>,
    /// Replacements inside an aggregate's arguments, which read rows even where the select
    /// list reads groups.
    row_replace: Option<&'r HashMap<At, ast::Expr>>,
    /// How many aggregate calls the visit is inside of.
    inside_aggregates: usize,
    /// `WITH (subquery) AS name` items in scope: a use of the name is the subquery.
    inline: &'r HashMap<String, ast::Expr>,
}

impl VisitorMut for Subqueries<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, _: &mut ast::Query) -> ControlFlow<()> {
        self.depth += 1;
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _: &mut ast::Query) -> ControlFlow<()> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut ast::Expr) -> ControlFlow<()> {
        if self.depth == 0 {
            if let ast::Expr::Function(f) = expr {
                if is_aggregate_call(f) {
                    self.inside_aggregates = self.inside_aggregates.saturating_sub(1);
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &mut ast::Expr) -> ControlFlow<()> {
        if self.depth != 0 {
            return ControlFlow::Continue(());
        }
        if let ast::Expr::Function(f) = expr {
            if is_aggregate_call(f) {
                self.inside_aggregates += 1;
            }
        }
        let replace = if self.inside_aggregates > 0 {
            self.row_replace.or(self.replace)
        } else {
            self.replace
        };
        if let ast::Expr::Identifier(id) = expr {
            if let Some(sub) = self.inline.get(&id.value) {
                *expr = sub.clone();
            }
        }
        if let ast::Expr::Subquery(q) = expr {
            self.found.push((at(q), (**q).clone()));
            if let Some(new) = replace.and_then(|r| r.get(&at(q))) {
                *expr = new.clone();
            }
        }
        if let ast::Expr::In {
            expr: x,
            target: ast::InTarget::Subquery(q),
            negated,
            ..
        } = expr
        {
            let key = at(q);
            if !self.semi.contains(&key) {
                if let Some(values) = distinct_values(q) {
                    self.found.push((key, values));
                }
                if let Some(array) = replace.and_then(|r| r.get(&key)) {
                    if let Ok(call) = has_call(array.clone(), (**x).clone(), *negated) {
                        *expr = call;
                    }
                }
            }
        }
        ControlFlow::Continue(())
    }
}

/// `SELECT groupUniqArray(__in_value) AS __in_values FROM (q)`, with q's one column named
/// `__in_value`; `None` when q has not exactly one plain column.
fn distinct_values(q: &ast::Query) -> Option<ast::Query> {
    let mut inner = q.clone();
    match inner.body.as_mut() {
        ast::SetExpr::Select(s) if s.projection.len() == 1 => {
            let expr = match &s.projection[0] {
                ast::SelectItem::UnnamedExpr(e)
                | ast::SelectItem::ExprWithAlias { expr: e, .. } => e.clone(),
                _ => return None,
            };
            s.projection[0] = ast::SelectItem::ExprWithAlias {
                expr,
                alias: ast::Ident::new("__in_value"),
            };
        }
        _ => return None,
    }
    let mut values =
        parse_query("SELECT groupUniqArray(__in_value) AS __in_values FROM __in_input").ok()?;
    if let ast::SetExpr::Select(s) = values.body.as_mut() {
        let from = s.from.first_mut()?;
        from.relation = derived(inner, "__in_input");
    }
    Some(values)
}

/// `has(array, x)`, or `NOT has(array, x)`.
fn has_call(array: ast::Expr, x: ast::Expr, negated: bool) -> Result<ast::Expr, SqlError> {
    let q = parse_query("SELECT has(__in_array, __in_x)")?;
    let ast::SetExpr::Select(s) = *q.body else {
        return Err(SqlError::new("internal: has()"));
    };
    let Some(ast::SelectItem::UnnamedExpr(mut call)) = s.projection.into_iter().next() else {
        return Err(SqlError::new("internal: has()"));
    };
    if let ast::Expr::Function(f) = &mut call {
        if let ast::FunctionArguments::List(list) = &mut f.args {
            for (arg, value) in list.args.iter_mut().zip([array, x]) {
                *arg = ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(value));
            }
        }
    }
    Ok(if negated {
        ast::Expr::UnaryOp {
            op: ast::UnaryOperator::Not,
            expr: Box::new(ast::Expr::Nested(Box::new(call))),
        }
    } else {
        call
    })
}

/// Where the IN subqueries that are conditions of `e` joined by AND start (semi-joins).
fn semi_joins(e: &ast::Expr, out: &mut std::collections::HashSet<At>) {
    match e {
        ast::Expr::BinaryOp {
            left,
            op: ast::BinaryOperator::And,
            right,
        } => {
            semi_joins(left, out);
            semi_joins(right, out);
        }
        ast::Expr::Nested(inner) => semi_joins(inner, out),
        ast::Expr::UnaryOp {
            op: ast::UnaryOperator::Not,
            expr,
        } => {
            if let ast::Expr::In {
                target: ast::InTarget::Subquery(q),
                ..
            } = strip_nested(expr)
            {
                out.insert(at(q));
            }
        }
        ast::Expr::In {
            target: ast::InTarget::Subquery(q),
            ..
        } => {
            out.insert(at(q));
        }
        _ => {}
    }
}

fn strip_nested(e: &ast::Expr) -> &ast::Expr {
    match e {
        ast::Expr::Nested(inner) => strip_nested(inner),
        other => other,
    }
}

/// Visits the expressions of `select` that are planned at its level.
fn visit(select: &mut ast::Select, v: &mut Subqueries<'_>) {
    for item in &mut select.projection {
        match item {
            ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. } => {
                let _ = e.visit(v);
            }
            _ => {}
        }
    }
    for e in [
        &mut select.prewhere,
        &mut select.selection,
        &mut select.having,
    ]
    .into_iter()
    .flatten()
    {
        let _ = e.visit(v);
    }
}

fn parse_query(sql: &str) -> Result<ast::Query, SqlError> {
    let mut statements = Parser::parse_sql(&ClickHouseDialect {}, sql)
        .map_err(|e| SqlError::new(format!("internal: {e}")))?;
    match statements.pop() {
        Some(ast::Statement::Query(q)) => Ok(*q),
        _ => Err(SqlError::new("internal: expected a query")),
    }
}

/// A derived table `(query) AS alias`.
fn derived(query: ast::Query, alias: &str) -> ast::TableFactor {
    ast::TableFactor::Derived {
        lateral: false,
        subquery: Box::new(query),
        alias: Some(ast::TableAlias {
            explicit: true,
            name: ast::Ident::new(alias),
            columns: Vec::new(),
            at: None,
        }),
        sample: None,
    }
}

impl Planner<'_> {
    /// `select` with its table-reading scalar subqueries lifted into CROSS JOINs, or `None`
    /// when it has none.
    pub(super) fn lift_scalar_subqueries(
        &mut self,
        select: &ast::Select,
    ) -> Result<Option<ast::Select>, SqlError> {
        let inline: HashMap<String, ast::Expr> = self
            .scalars
            .iter()
            .filter(|(name, e)| {
                matches!(e, ast::Expr::Subquery(_)) && !self.defining.contains(name)
            })
            .map(|(name, e)| (name.clone(), e.clone()))
            .collect();
        let mut semi = std::collections::HashSet::new();
        for e in [&select.prewhere, &select.selection].into_iter().flatten() {
            semi_joins(e, &mut semi);
        }
        let mut probe = select.clone();
        let mut finder = Subqueries {
            depth: 0,
            found: Vec::new(),
            semi: &semi,
            replace: None,
            row_replace: None,
            inside_aggregates: 0,
            inline: &inline,
        };
        visit(&mut probe, &mut finder);
        let mut seen = std::collections::HashSet::new();
        finder.found.retain(|(key, _)| seen.insert(*key));
        if finder.found.is_empty() {
            return Ok(None);
        }
        let aggregated = !matches!(&select.group_by, ast::GroupByExpr::Expressions(e, _) if e.is_empty())
            || select.projection.iter().any(|item| match item {
                ast::SelectItem::UnnamedExpr(e)
                | ast::SelectItem::ExprWithAlias { expr: e, .. } => contains_aggregate(e),
                _ => false,
            });
        let mut over_rows = HashMap::new();
        let mut over_groups = HashMap::new();
        let mut joins = Vec::new();
        for (key, sub) in &finder.found {
            let planned = self.query(sub, false)?;
            if planned.visible != 1 {
                return Err(unsupported("a scalar subquery with several columns", sub));
            }
            if planned.plan.constant_rows().is_some() {
                continue;
            }
            let n = self.lifted_scalars;
            self.lifted_scalars += 1;
            let column = format!("__scalar_{n}");
            // The subquery's one column by a name that planning it again keeps: its alias,
            // or one given to it here.
            let key = *key;
            let mut sub = sub.clone();
            let value = match sub.body.as_mut() {
                ast::SetExpr::Select(s) if s.projection.len() == 1 => match &mut s.projection[0] {
                    ast::SelectItem::ExprWithAlias { alias, .. } => alias.value.replace('`', "``"),
                    item @ ast::SelectItem::UnnamedExpr(_) => {
                        if let ast::SelectItem::UnnamedExpr(expr) = item.clone() {
                            *item = ast::SelectItem::ExprWithAlias {
                                expr,
                                alias: ast::Ident::new("__scalar_value"),
                            };
                        }
                        "__scalar_value".to_string()
                    }
                    _ => planned.plan.columns[0].name.replace('`', "``"),
                },
                _ => planned.plan.columns[0].name.replace('`', "``"),
            };
            let mut one_row = parse_query(&format!(
                "SELECT any(`{value}`) AS {column} FROM __scalar_input"
            ))?;
            if let ast::SetExpr::Select(s) = one_row.body.as_mut() {
                if let Some(from) = s.from.first_mut() {
                    from.relation = derived(sub.clone(), &format!("__scalar_input_{n}"));
                }
            }
            joins.push(ast::Join {
                relation: derived(one_row, &format!("__scalar_table_{n}")),
                global: false,
                join_operator: ast::JoinOperator::CrossJoin(ast::JoinConstraint::None),
            });
            let column_ref = ast::Expr::Identifier(ast::Ident::new(&column));
            // Where rows are grouped, the (single) value is taken with `any`.
            let grouped = if aggregated {
                any_of(&column)?
            } else {
                column_ref.clone()
            };
            over_rows.insert(key, column_ref);
            over_groups.insert(key, grouped);
        }
        if joins.is_empty() {
            return Ok(None);
        }
        let mut rewritten = select.clone();
        // WHERE and PREWHERE are planned over rows; the select list and HAVING over groups.
        let mut rows = Subqueries {
            depth: 0,
            found: Vec::new(),
            semi: &semi,
            replace: Some(&over_rows),
            row_replace: None,
            inside_aggregates: 0,
            inline: &inline,
        };
        for e in [&mut rewritten.prewhere, &mut rewritten.selection]
            .into_iter()
            .flatten()
        {
            let _ = e.visit(&mut rows);
        }
        let mut groups = Subqueries {
            depth: 0,
            found: Vec::new(),
            semi: &semi,
            replace: Some(&over_groups),
            row_replace: Some(&over_rows),
            inside_aggregates: 0,
            inline: &inline,
        };
        visit(&mut rewritten, &mut groups);
        if rewritten.from.is_empty() {
            rewritten.from.push(ast::TableWithJoins {
                relation: derived(parse_query("SELECT 1 AS __scalar_unit")?, "__scalar_unit"),
                joins: Vec::new(),
            });
        }
        if let Some(first) = rewritten.from.first_mut() {
            first.joins.extend(joins);
        }
        Ok(Some(rewritten))
    }
}

/// `any(column)`.
fn any_of(column: &str) -> Result<ast::Expr, SqlError> {
    let q = parse_query(&format!("SELECT any({column})"))?;
    match *q.body {
        ast::SetExpr::Select(s) => match s.projection.into_iter().next() {
            Some(ast::SelectItem::UnnamedExpr(e)) => Ok(e),
            _ => Err(SqlError::new("internal: any()")),
        },
        _ => Err(SqlError::new("internal: any()")),
    }
}
