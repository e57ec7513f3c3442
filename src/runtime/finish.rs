//! Finishing a read: the query's top-level ORDER BY, OFFSET and LIMIT bound per request, and
//! its visible columns. Views that keep the query's order answer by walking their ordered
//! index ([`read_page`]); views whose order depends on an unbound parameter sort on read
//! ([`finish`]).

use std::collections::BTreeMap;

use petrel_engine::row_order;
use petrel_sql::{Expr, Query};
use petrel_value::{Row, Value};
use petrel_view::{Ts, View};

use super::views::bad;
use super::{QueryResult, RuntimeError};

/// The most rows a `WITH FILL` adds to one answer (a step too small for its range would
/// otherwise make an unbounded answer).
const FILL_MAX_ROWS: usize = 1_000_000;

/// The query's top-level sort keys with parameters bound.
pub(super) fn bind_order(
    query: &Query,
    values: &BTreeMap<String, Value>,
) -> Result<Vec<petrel_sql::SortKey>, RuntimeError> {
    query
        .order_by
        .iter()
        .map(|k| {
            Ok(petrel_sql::SortKey {
                expr: k.expr.bind(values).map_err(bad)?,
                desc: k.desc,
                nulls_first: k.nulls_first,
            })
        })
        .collect()
}

/// The query's top-level OFFSET and LIMIT for a request's parameter values.
fn offset_and_limit(
    query: &Query,
    values: &BTreeMap<String, Value>,
) -> Result<(usize, Option<usize>), RuntimeError> {
    let number = |e: &Option<Expr>, what: &str| -> Result<Option<usize>, RuntimeError> {
        match e {
            None => Ok(None),
            Some(e) => {
                let v = e.bind(values).map_err(bad)?.eval(&[]);
                v.as_i64()
                    .filter(|n| *n >= 0)
                    .map(|n| Some(n as usize))
                    .ok_or_else(|| {
                        bad(format!(
                            "{what} must be a non-negative integer, got {}",
                            v.to_text()
                        ))
                    })
            }
        }
    };
    Ok((
        number(&query.offset, "OFFSET")?.unwrap_or(0),
        number(&query.limit, "LIMIT")?,
    ))
}

/// Reads one key of a view that keeps the query's order: walks OFFSET + LIMIT rows of its
/// ordered index, nothing more, and keeps the visible columns.
pub(super) fn read_page(
    view: &View,
    key: &[Value],
    query: &Query,
    values: &BTreeMap<String, Value>,
) -> Result<QueryResult, RuntimeError> {
    let (offset, limit) = offset_and_limit(query, values)?;
    let page = view.page(key, offset, limit);
    let rows_read = offset.min(page.total) + page.rows.len();
    Ok(visible_result(
        query,
        page.rows.into_iter(),
        page.total,
        rows_read,
        page.upper,
    ))
}

/// The answer of a read: `rows` cut to the query's visible columns.
fn visible_result(
    query: &Query,
    rows: impl Iterator<Item = Row>,
    rows_before_limit: usize,
    rows_read: usize,
    upper: Ts,
) -> QueryResult {
    let visible = query.visible;
    let columns = &query.plan.columns[..visible.min(query.plan.columns.len())];
    let order_by: Option<Vec<(String, bool, bool)>> = query
        .order_by
        .iter()
        .map(|k| match &k.expr {
            Expr::Column(i) => columns
                .get(*i)
                .map(|c| (c.name.clone(), k.desc, k.nulls_first)),
            _ => None,
        })
        .collect();
    QueryResult {
        order_by: order_by.unwrap_or_default(),
        columns: columns.to_vec(),
        rows: rows
            .map(|mut r| {
                r.truncate(visible);
                r
            })
            .collect(),
        rows_before_limit,
        rows_read,
        upper,
    }
}

/// Applies the top-level ORDER BY, OFFSET and LIMIT and keeps the visible columns: for
/// views whose order depends on a parameter they are not bound to.
pub(super) fn finish(
    query: &Query,
    mut rows: Vec<Row>,
    upper: Ts,
    values: &BTreeMap<String, Value>,
) -> Result<QueryResult, RuntimeError> {
    let rows_read = rows.len();
    if !query.order_by.is_empty() {
        rows = row_order(&bind_order(query, values)?).sort(rows);
    }
    if let (Some(fill), Some(first)) = (&query.fill, query.order_by.first()) {
        let fill = fill.bind(values).map_err(bad)?;
        rows = fill.apply(rows, first.desc, &query.plan.columns, FILL_MAX_ROWS);
    }
    let total = rows.len();
    let (offset, limit) = offset_and_limit(query, values)?;
    let end = limit
        .map(|l| offset.saturating_add(l))
        .unwrap_or(total)
        .min(total);
    let start = offset.min(total);
    Ok(visible_result(
        query,
        rows.drain(start..end),
        total,
        rows_read,
        upper,
    ))
}
