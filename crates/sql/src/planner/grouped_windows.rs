//! Window functions over grouped rows: ClickHouse evaluates `f(..) OVER (..)` after GROUP BY,
//! over the groups, so `SELECT k, sum(x) AS s, sum(s) OVER (ORDER BY k) AS running FROM t
//! GROUP BY k` is the grouping as a subquery (with each window's arguments, partitions and
//! orders computed per group) and the windows over its rows. This module rewrites the query
//! that way; the windows then plan as they do over plain rows.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use sqlparser::ast::{
    self, visit_expressions, visit_expressions_mut, Expr, FunctionArg, FunctionArgExpr,
    FunctionArguments, GroupByExpr, Ident, OrderByKind, SelectItem, SetExpr, TableFactor,
    TableWithJoins, WindowType,
};

use super::expr::{contains_aggregate, window_calls};

/// True when `e` names one of `names` (an alias of the select list).
fn references(e: &Expr, names: &BTreeSet<String>) -> bool {
    visit_expressions(e, |x| match x {
        Expr::Identifier(id) if names.contains(&id.value) => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

fn has_window(e: &Expr) -> bool {
    let mut calls = Vec::new();
    window_calls(e, &mut calls);
    !calls.is_empty()
}

/// The inner query's extra columns: each expression a window or the order reads per group.
struct Hidden {
    items: Vec<SelectItem>,
}

impl Hidden {
    /// Computes `e` per group as a hidden column; the identifier the outer query reads it by.
    fn column(&mut self, e: &Expr) -> Expr {
        let name = Ident::new(format!("__grouped_{}", self.items.len()));
        self.items.push(SelectItem::ExprWithAlias {
            expr: e.clone(),
            alias: name.clone(),
        });
        Expr::Identifier(name)
    }

    /// Rewrites the window calls in `e` to read their arguments, partitions and orders from
    /// hidden columns; `None` for a named window (not supported).
    fn windows_read_columns(&mut self, e: &mut Expr) -> Option<()> {
        let mut ok = true;
        let _ = visit_expressions_mut(e, |x| {
            let Expr::Function(f) = x else {
                return ControlFlow::<()>::Continue(());
            };
            let Some(over) = &mut f.over else {
                return ControlFlow::Continue(());
            };
            let WindowType::WindowSpec(spec) = over else {
                ok = false;
                return ControlFlow::Break(());
            };
            for p in &mut spec.partition_by {
                *p = self.column(p);
            }
            for o in &mut spec.order_by {
                o.expr = self.column(&o.expr);
            }
            if let FunctionArguments::List(list) = &mut f.args {
                for arg in &mut list.args {
                    if let FunctionArg::Unnamed(FunctionArgExpr::Expr(a)) = arg {
                        *a = self.column(a);
                    }
                }
            }
            ControlFlow::Continue(())
        });
        ok.then_some(())
    }
}

/// The query with its grouping moved into a subquery and its windows over that subquery's
/// rows, when it has window functions in a select list that groups; else `None`.
pub(super) fn windows_over_groups(q: &ast::Query) -> Option<ast::Query> {
    let SetExpr::Select(select) = q.body.as_ref() else {
        return None;
    };
    let items: Vec<(&Expr, Option<&Ident>)> = select
        .projection
        .iter()
        .map(|item| match item {
            SelectItem::UnnamedExpr(e) => Some((e, None)),
            SelectItem::ExprWithAlias { expr, alias } => Some((expr, Some(alias))),
            _ => None,
        })
        .collect::<Option<_>>()?;
    if !items.iter().any(|(e, _)| has_window(e)) {
        return None;
    }
    let groups = match &select.group_by {
        GroupByExpr::Expressions(e, _) => !e.is_empty(),
        GroupByExpr::All(_) => true,
    };
    if !(groups || select.having.is_some() || items.iter().any(|(e, _)| contains_aggregate(e))) {
        return None;
    }
    // Items computed over the windows: those with a window, and those naming one of them.
    let mut outer = vec![false; items.len()];
    let mut outer_names = BTreeSet::new();
    loop {
        let mut changed = false;
        for (i, (e, alias)) in items.iter().enumerate() {
            if !outer[i] && (has_window(e) || references(e, &outer_names)) {
                outer[i] = true;
                if let Some(a) = alias {
                    outer_names.insert(a.value.clone());
                }
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut inner_items = Vec::new();
    let mut outer_items = Vec::new();
    let mut hidden = Hidden { items: Vec::new() };
    for (i, (e, alias)) in items.iter().enumerate() {
        let named_as = |name: String| Ident::with_quote('`', name);
        if outer[i] {
            let mut rewritten = (*e).clone();
            hidden.windows_read_columns(&mut rewritten)?;
            outer_items.push(SelectItem::ExprWithAlias {
                expr: rewritten,
                alias: alias.map_or_else(|| named_as(e.to_string()), |a| (*a).clone()),
            });
            continue;
        }
        match (e, alias) {
            (_, Some(a)) => {
                inner_items.push(SelectItem::ExprWithAlias {
                    expr: (*e).clone(),
                    alias: (*a).clone(),
                });
                outer_items.push(SelectItem::UnnamedExpr(Expr::Identifier((*a).clone())));
            }
            (Expr::Identifier(id), None) => {
                inner_items.push(SelectItem::UnnamedExpr((*e).clone()));
                outer_items.push(SelectItem::UnnamedExpr(Expr::Identifier(id.clone())));
            }
            (_, None) => {
                let column = hidden.column(e);
                outer_items.push(SelectItem::ExprWithAlias {
                    expr: column,
                    alias: named_as(e.to_string()),
                });
            }
        }
    }
    // The query's ORDER BY reads the outer rows: what it orders by that the outer rows do
    // not carry is computed per group.
    let mut outer_q = q.clone();
    if let Some(order) = &mut outer_q.order_by {
        if let OrderByKind::Expressions(exprs) = &mut order.kind {
            let carried: BTreeSet<String> = items
                .iter()
                .filter_map(|(e, a)| match (e, a) {
                    (_, Some(a)) => Some(a.value.clone()),
                    (Expr::Identifier(id), None) => Some(id.value.clone()),
                    _ => None,
                })
                .collect();
            for o in exprs {
                let plain = matches!(&o.expr, Expr::Identifier(id) if carried.contains(&id.value));
                if !plain && !references(&o.expr, &outer_names) && !has_window(&o.expr) {
                    o.expr = hidden.column(&o.expr);
                }
            }
        }
    }
    let mut inner_select = (**select).clone();
    inner_select.projection = inner_items.into_iter().chain(hidden.items).collect();
    inner_select.distinct = None;
    let mut inner_q = q.clone();
    inner_q.with = None;
    inner_q.order_by = None;
    inner_q.limit_clause = None;
    inner_q.body = Box::new(SetExpr::Select(Box::new(inner_select)));
    let mut outer_select = (**select).clone();
    outer_select.projection = outer_items;
    outer_select.from = vec![TableWithJoins {
        relation: TableFactor::Derived {
            lateral: false,
            subquery: Box::new(inner_q),
            alias: None,
            sample: None,
        },
        joins: Vec::new(),
    }];
    outer_select.prewhere = None;
    outer_select.selection = None;
    outer_select.group_by = GroupByExpr::Expressions(Vec::new(), Vec::new());
    outer_select.having = None;
    outer_q.with = None;
    outer_q.body = Box::new(SetExpr::Select(Box::new(outer_select)));
    Some(outer_q)
}
