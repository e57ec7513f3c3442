//! The SELECT clause: FROM and WHERE (delegated), `arrayJoin` in the select list, GROUP BY
//! with aggregates, HAVING, the select list itself, DISTINCT and ORDER BY.

use petrel_value::{Column, ColumnType};
use sqlparser::ast::{self, Distinct, GroupByExpr, SelectItem};

use super::expr::{calls_named, contains_aggregate, function_args, window_calls};
use super::{at, filtered, node, project, sort_key, unsupported, Aliases, Mode, Planner, Scope};
use crate::expr::Expr;
use crate::naming::column_name;
use crate::plan::*;
use crate::SqlError;

/// The expression and alias of a select item that has one.
fn item_expr(item: &SelectItem) -> Option<(&ast::Expr, Option<&ast::Ident>)> {
    match item {
        SelectItem::UnnamedExpr(e) => Some((e, None)),
        SelectItem::ExprWithAlias { expr, alias } => Some((expr, Some(alias))),
        _ => None,
    }
}

impl Planner<'_> {
    /// A SELECT with its query's ORDER BY (which may use the select list's aliases and
    /// columns, and any other expression: those become hidden columns after the visible ones).
    pub(super) fn select(
        &mut self,
        select: &ast::Select,
        order: &[ast::OrderByExpr],
    ) -> Result<Query, SqlError> {
        if let Some(Distinct::On(_)) = &select.distinct {
            return Err(unsupported("DISTINCT ON", select));
        }
        if select.top.is_some() || select.into.is_some() {
            return Err(unsupported("TOP or INTO", select));
        }
        if !select.lateral_views.is_empty()
            || select.qualify.is_some()
            || !select.named_window.is_empty()
            || !select.connect_by.is_empty()
            || !select.cluster_by.is_empty()
            || !select.distribute_by.is_empty()
            || !select.sort_by.is_empty()
        {
            return Err(unsupported(
                "LATERAL VIEW, QUALIFY, WINDOW, CONNECT BY or CLUSTER/DISTRIBUTE/SORT BY",
                select,
            ));
        }
        if let Some(lifted) = self.lift_scalar_subqueries(select)? {
            return self.select(&lifted, order);
        }
        let (plan, mut scope) = self.from(&select.from)?;
        let mut aliases = Aliases::new();
        for (name, e) in &self.scalars {
            if !self.defining.contains(name) {
                aliases.insert(name.clone(), e.clone());
            }
        }
        for item in &select.projection {
            if let Some((expr, Some(alias))) = item_expr(item) {
                aliases.insert(alias.value.clone(), expr.clone());
            }
        }
        let saved = std::mem::take(&mut self.array_joins);
        let saved_windows = std::mem::take(&mut self.windows);
        let result = self.select_after_from(select, order, plan, &mut scope, &aliases);
        self.array_joins = saved;
        self.windows = saved_windows;
        result
    }

    fn select_after_from(
        &mut self,
        select: &ast::Select,
        order: &[ast::OrderByExpr],
        input: Plan,
        scope: &mut Scope,
        aliases: &Aliases,
    ) -> Result<Query, SqlError> {
        let mut input = self.select_array_joins(select, input, scope, aliases)?;
        if let Some(pre) = &select.prewhere {
            input = self.filter(input, scope, pre, aliases)?;
        }
        if let Some(w) = &select.selection {
            input = self.filter(input, scope, w, aliases)?;
        }
        let group_exprs: &[ast::Expr] = match &select.group_by {
            GroupByExpr::Expressions(e, modifiers) => {
                if !modifiers.is_empty() {
                    return Err(unsupported(
                        "GROUP BY modifiers (WITH ROLLUP/CUBE/TOTALS)",
                        select,
                    ));
                }
                e
            }
            GroupByExpr::All(_) => return Err(unsupported("GROUP BY ALL", select)),
        };
        let aggregating = !group_exprs.is_empty()
            || select.having.is_some()
            || select
                .projection
                .iter()
                .filter_map(item_expr)
                .any(|(e, _)| contains_aggregate(e));
        if aggregating {
            self.grouped(select, input, scope, aliases, group_exprs, order)
        } else {
            let input = self.select_windows(select, input, scope, aliases)?;
            self.projected(select, input, scope, aliases, order)
        }
    }

    /// Window functions (`f(..) OVER (..)`) in the select list of a query that does not
    /// group: each appends its value to the rows before the select list reads it.
    fn select_windows(
        &mut self,
        select: &ast::Select,
        mut plan: Plan,
        scope: &mut Scope,
        aliases: &Aliases,
    ) -> Result<Plan, SqlError> {
        let mut calls = Vec::new();
        for (e, _) in select.projection.iter().filter_map(item_expr) {
            window_calls(e, &mut calls);
        }
        for call in calls {
            let text = call.to_string();
            if self.windows.iter().any(|(t, ..)| *t == text) {
                continue;
            }
            let (partition_by, order_by, function, ty) =
                self.window_function(call, scope, aliases)?;
            let width = plan.columns.len();
            let mut columns = plan.columns.clone();
            columns.push(Column {
                name: column_name(call),
                ty: ty.clone(),
            });
            plan = node(
                PlanNode::Window {
                    input: Box::new(plan),
                    partition_by,
                    order_by,
                    function,
                },
                columns,
            );
            scope.push_internal(format!("window#{width}"), ty.clone());
            self.windows.push((text, width, ty));
        }
        Ok(plan)
    }

    /// `arrayJoin(x)` anywhere in the select list: each call unnests before anything else
    /// reads the row; the call then reads its element column.
    fn select_array_joins(
        &mut self,
        select: &ast::Select,
        mut plan: Plan,
        scope: &mut Scope,
        aliases: &Aliases,
    ) -> Result<Plan, SqlError> {
        let mut calls = Vec::new();
        for (e, _) in select.projection.iter().filter_map(item_expr) {
            calls_named(e, "arrayjoin", &mut calls);
        }
        for call in calls {
            let text = call.to_string();
            if self.array_joins.iter().any(|(t, _)| *t == text) {
                continue;
            }
            let ast::Expr::Function(f) = call else {
                continue;
            };
            let args = function_args(f)?;
            let [arg] = args.as_slice() else {
                return Err(at("arrayJoin takes one argument", call));
            };
            let (x, ty) = self.expr(arg, scope, aliases, &mut Mode::Rows)?;
            let ColumnType::Array(inner) = ty.base().clone() else {
                return Err(at(
                    format!("arrayJoin needs an array, not {}", ty.name()),
                    call,
                ));
            };
            let width = plan.columns.len();
            let mut columns = plan.columns.clone();
            columns.push(Column {
                name: column_name(call),
                ty: ty.clone(),
            });
            let mut exprs: Vec<Expr> = (0..width).map(Expr::Column).collect();
            exprs.push(x);
            let projected = project(plan, exprs, columns.clone());
            columns[width].ty = (*inner).clone();
            plan = node(
                PlanNode::ArrayJoin {
                    input: Box::new(projected),
                    column: width,
                },
                columns,
            );
            scope.push_internal(format!("arrayJoin#{width}"), *inner);
            self.array_joins.push((text, width));
        }
        Ok(plan)
    }

    /// The select list over rows (no aggregation).
    fn projected(
        &mut self,
        select: &ast::Select,
        plan: Plan,
        scope: &Scope,
        aliases: &Aliases,
        order: &[ast::OrderByExpr],
    ) -> Result<Query, SqlError> {
        let (mut exprs, mut columns) = self.select_list(select, scope, aliases, &mut Mode::Rows)?;
        let visible = exprs.len();
        let order_by = self.order_by(
            order,
            (&mut exprs, &mut columns),
            scope,
            aliases,
            &mut Mode::Rows,
            select.distinct.is_some(),
        )?;
        let plan = project(plan, exprs, columns);
        Ok(finish_select(select, plan, visible, order_by))
    }

    /// GROUP BY (or aggregates without it): Aggregate, HAVING, then the select list.
    fn grouped(
        &mut self,
        select: &ast::Select,
        plan: Plan,
        scope: &Scope,
        aliases: &Aliases,
        group_exprs: &[ast::Expr],
        order: &[ast::OrderByExpr],
    ) -> Result<Query, SqlError> {
        let mut keys = Vec::new();
        let mut key_columns = Vec::new();
        for g in group_exprs {
            let target = self.group_target(select, g)?;
            let (e, ty) = self.expr(target, scope, aliases, &mut Mode::Rows)?;
            if keys.contains(&e) {
                continue;
            }
            keys.push(e);
            key_columns.push(Column {
                name: column_name(g),
                ty,
            });
        }
        let mut aggregates = Vec::new();
        let mut agg_columns = Vec::new();
        let (exprs, columns, having, order_by, visible) = {
            let mut mode = Mode::Groups {
                keys: &keys,
                aggregates: &mut aggregates,
                agg_columns: &mut agg_columns,
            };
            let (mut exprs, mut columns) = self.select_list(select, scope, aliases, &mut mode)?;
            let visible = exprs.len();
            let having = match &select.having {
                Some(h) => Some(self.expr(h, scope, aliases, &mut mode)?.0),
                None => None,
            };
            let order_by = self.order_by(
                order,
                (&mut exprs, &mut columns),
                scope,
                aliases,
                &mut mode,
                select.distinct.is_some(),
            )?;
            (exprs, columns, having, order_by, visible)
        };
        let mut out_columns = key_columns;
        out_columns.extend(agg_columns);
        let mut plan = node(
            PlanNode::Aggregate {
                input: Box::new(plan),
                keys,
                aggregates,
            },
            out_columns,
        );
        if let Some(predicate) = having {
            plan = filtered(plan, predicate);
        }
        let plan = project(plan, exprs, columns);
        Ok(finish_select(select, plan, visible, order_by))
    }

    /// A GROUP BY item: `GROUP BY 2` is the second select item.
    fn group_target<'s>(
        &self,
        select: &'s ast::Select,
        g: &'s ast::Expr,
    ) -> Result<&'s ast::Expr, SqlError> {
        let ast::Expr::Value(v) = g else {
            return Ok(g);
        };
        let ast::Value::Number(n, _) = &v.value else {
            return Ok(g);
        };
        let i: usize = n.parse().map_err(|_| at("bad GROUP BY position", g))?;
        match i
            .checked_sub(1)
            .and_then(|i| select.projection.get(i))
            .and_then(item_expr)
        {
            Some((e, _)) => Ok(e),
            None => Err(at("GROUP BY position out of range", g)),
        }
    }

    /// The select list's expressions and output columns (ClickHouse names for unaliased
    /// expressions).
    fn select_list(
        &mut self,
        select: &ast::Select,
        scope: &Scope,
        aliases: &Aliases,
        mode: &mut Mode<'_>,
    ) -> Result<(Vec<Expr>, Vec<Column>), SqlError> {
        let mut exprs = Vec::new();
        let mut columns = Vec::new();
        for item in &select.projection {
            match item {
                SelectItem::UnnamedExpr(e) => {
                    let (x, ty) = self.expr(e, scope, aliases, mode)?;
                    exprs.push(x);
                    columns.push(Column {
                        name: column_name(e),
                        ty,
                    });
                }
                SelectItem::ExprWithAlias { expr, alias } => {
                    // The alias must not resolve to itself inside its own expression.
                    let mut inner = aliases.clone();
                    inner.remove(&alias.value);
                    let (x, ty) = self.expr(expr, scope, &inner, mode)?;
                    exprs.push(x);
                    columns.push(Column {
                        name: alias.value.clone(),
                        ty,
                    });
                }
                SelectItem::ExprWithAliases { .. } => {
                    return Err(unsupported("multiple aliases for one expression", item))
                }
                SelectItem::Wildcard(opts) | SelectItem::QualifiedWildcard(_, opts) => {
                    if opts.opt_replace.is_some()
                        || opts.opt_rename.is_some()
                        || opts.opt_ilike.is_some()
                        || opts.opt_alias.is_some()
                    {
                        return Err(unsupported("* with REPLACE, RENAME, ILIKE or AS", item));
                    }
                    let qualifier = match item {
                        SelectItem::QualifiedWildcard(
                            ast::SelectItemQualifiedWildcardKind::ObjectName(name),
                            _,
                        ) => Some(
                            name.0
                                .last()
                                .and_then(|p| p.as_ident())
                                .map(|i| i.value.clone())
                                .unwrap_or_else(|| name.to_string()),
                        ),
                        SelectItem::QualifiedWildcard(..) => {
                            return Err(unsupported("expression.*", item))
                        }
                        _ => None,
                    };
                    let mut except: Vec<String> = Vec::new();
                    if let Some(e) = &opts.opt_except {
                        except.push(e.first_element.value.clone());
                        except.extend(e.additional_elements.iter().map(|i| i.value.clone()));
                    }
                    match &opts.opt_exclude {
                        Some(ast::ExcludeSelectItem::Multiple(names)) => {
                            except.extend(names.iter().map(|n| n.to_string()))
                        }
                        Some(ast::ExcludeSelectItem::Single(name)) => except.push(name.to_string()),
                        None => {}
                    }
                    let mut any = false;
                    for (i, c) in scope.columns.iter().enumerate() {
                        let wanted = match &qualifier {
                            Some(q) => c
                                .table
                                .as_deref()
                                .is_some_and(|t| t == q || t.eq_ignore_ascii_case(q)),
                            None => c.in_star,
                        };
                        if !wanted || except.iter().any(|x| x.eq_ignore_ascii_case(&c.name)) {
                            continue;
                        }
                        any = true;
                        let x = match mode {
                            Mode::Rows => Expr::Column(i),
                            Mode::Groups { keys, .. } => {
                                match keys.iter().position(|k| *k == Expr::Column(i)) {
                                    Some(k) => Expr::Column(k),
                                    None => {
                                        return Err(at(
                                            format!(
                                                "column '{}' is not under an aggregate function and not in GROUP BY",
                                                c.name
                                            ),
                                            item,
                                        ))
                                    }
                                }
                            }
                        };
                        exprs.push(x);
                        columns.push(Column {
                            name: c.name.clone(),
                            ty: c.ty.clone(),
                        });
                    }
                    if let (false, Some(q)) = (any, &qualifier) {
                        return Err(at(format!("unknown table '{q}' in {q}.*"), item));
                    }
                }
            }
        }
        Ok((exprs, columns))
    }

    /// Sort keys over the projected columns; keys that are not select items become hidden
    /// columns after the visible ones.
    fn order_by(
        &mut self,
        order: &[ast::OrderByExpr],
        (exprs, columns): (&mut Vec<Expr>, &mut Vec<Column>),
        scope: &Scope,
        aliases: &Aliases,
        mode: &mut Mode<'_>,
        distinct: bool,
    ) -> Result<Vec<SortKey>, SqlError> {
        let mut keys = Vec::new();
        for o in order {
            // An output column by name (an alias or a plain column).
            if let ast::Expr::Identifier(id) = &o.expr {
                if let Some(i) = columns.iter().position(|c| c.name == id.value) {
                    keys.push(sort_key(Expr::Column(i), o));
                    continue;
                }
            }
            if let ast::Expr::Value(v) = &o.expr {
                if let ast::Value::Number(n, _) = &v.value {
                    let i: usize = n
                        .parse()
                        .map_err(|_| at("bad ORDER BY position", &o.expr))?;
                    if i == 0 || i > columns.len() {
                        return Err(at("ORDER BY position out of range", &o.expr));
                    }
                    keys.push(sort_key(Expr::Column(i - 1), o));
                    continue;
                }
            }
            let (e, ty) = self.expr(&o.expr, scope, aliases, mode)?;
            let i = match exprs.iter().position(|x| *x == e) {
                Some(i) => i,
                None if distinct => {
                    return Err(at(
                        "with DISTINCT, ORDER BY may only use selected columns",
                        &o.expr,
                    ))
                }
                None => {
                    exprs.push(e);
                    columns.push(Column {
                        name: column_name(&o.expr),
                        ty,
                    });
                    exprs.len() - 1
                }
            };
            keys.push(sort_key(Expr::Column(i), o));
        }
        Ok(keys)
    }
}

/// The end of a SELECT: DISTINCT over the projection, and the query around it.
fn finish_select(
    select: &ast::Select,
    plan: Plan,
    visible: usize,
    order_by: Vec<SortKey>,
) -> Query {
    let plan = if select.distinct.is_some() {
        let columns = plan.columns.clone();
        node(
            PlanNode::Distinct {
                input: Box::new(plan),
            },
            columns,
        )
    } else {
        plan
    };
    Query {
        plan,
        visible,
        order_by,
        limit: None,
        offset: None,
        fill: None,
    }
}
