//! Scalar subqueries that read tables (`SELECT (SELECT count() FROM a) + (SELECT count() FROM
//! b)`, `WHERE x > (SELECT avg(x) FROM t)`): each becomes a CROSS JOIN with a one-row relation
//! (`SELECT any(value) FROM (subquery)`), so it is maintained like any join; the expression
//! reads the joined column. Subqueries computed from constants are left to the expression
//! planner, which folds them to their value.

use std::collections::HashMap;
use std::ops::ControlFlow;

use sqlparser::ast::{self, Spanned, VisitMut, VisitorMut};
use sqlparser::dialect::ClickHouseDialect;
use sqlparser::parser::Parser;

use super::expr::contains_aggregate;
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
    /// Every scalar subquery met at depth 0, in order.
    found: Vec<ast::Query>,
    /// Replacements by where the subquery starts (when replacing).
    replace: Option<&'r HashMap<At, ast::Expr>>,
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

    fn pre_visit_expr(&mut self, expr: &mut ast::Expr) -> ControlFlow<()> {
        if self.depth != 0 {
            return ControlFlow::Continue(());
        }
        if let ast::Expr::Identifier(id) = expr {
            if let Some(sub) = self.inline.get(&id.value) {
                *expr = sub.clone();
            }
        }
        if let ast::Expr::Subquery(q) = expr {
            self.found.push((**q).clone());
            if let Some(new) = self.replace.and_then(|r| r.get(&at(q))) {
                *expr = new.clone();
            }
        }
        ControlFlow::Continue(())
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
        let mut probe = select.clone();
        let mut finder = Subqueries {
            depth: 0,
            found: Vec::new(),
            replace: None,
            inline: &inline,
        };
        visit(&mut probe, &mut finder);
        let mut seen = std::collections::HashSet::new();
        finder.found.retain(|q| seen.insert(at(q)));
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
        for sub in &finder.found {
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
            let key = at(sub);
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
            replace: Some(&over_rows),
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
            replace: Some(&over_groups),
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
