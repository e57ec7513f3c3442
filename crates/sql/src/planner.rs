//! ClickHouse-dialect SQL text to a typed [`Query`]: names resolved against the catalog, types
//! inferred, unsupported constructs refused with their location. One function per clause.

use std::collections::BTreeMap;

use petrel_value::{Column, ColumnType, Value, F64};
use sqlparser::ast::{
    self, BinaryOperator, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr,
    JoinConstraint, JoinOperator, LimitClause, OrderByKind, SelectItem, SetExpr, SetOperator,
    SetQuantifier, Spanned, TableFactor, UnaryOperator,
};
use sqlparser::dialect::ClickHouseDialect;
use sqlparser::parser::Parser;

use crate::expr::Expr;
use crate::functions::{common_type, Func, Unit};
use crate::plan::*;
use crate::SqlError;

/// Plans one SELECT query (ClickHouse dialect) against `catalog`.
pub fn plan_query(sql: &str, catalog: &dyn Catalog) -> Result<Query, SqlError> {
    let sql = parenthesize_interval_params(sql);
    let (sql, scalars) = split_scalar_with(&sql)?;
    let statements = Parser::parse_sql(&ClickHouseDialect {}, &sql).map_err(|e| parse_error(&e))?;
    let [ast::Statement::Query(query)] = statements.as_slice() else {
        return Err(SqlError::new("expected exactly one SELECT query"));
    };
    let mut planner = Planner {
        catalog,
        ctes: Vec::new(),
        scalars: Vec::new(),
        array_joins: Vec::new(),
    };
    for (name, text) in scalars {
        let expr = Parser::new(&ClickHouseDialect {})
            .try_with_sql(&text)
            .and_then(|mut p| p.parse_expr())
            .map_err(|e| parse_error(&e))?;
        planner.scalars.push((name, expr));
    }
    planner.query(query)
}

fn parse_error(e: &sqlparser::parser::ParserError) -> SqlError {
    let text = e.to_string();
    // "... at Line: 3, Column: 14"
    let mut err = SqlError::new(text.trim_start_matches("sql parser error: ").to_string());
    if let Some(pos) = text.rfind("Line: ") {
        let rest = &text[pos + 6..];
        let mut parts = rest.split(", Column: ");
        if let (Some(l), Some(c)) = (parts.next(), parts.next()) {
            err.line = l.trim().parse().unwrap_or(0);
            err.column = c.trim().parse().unwrap_or(0);
        }
    }
    err
}

/// `INTERVAL $n DAY` (a template parameter as the amount) is valid ClickHouse but not for
/// the parser: write it `INTERVAL ($n) DAY`.
fn parenthesize_interval_params(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(pos) = rest.to_ascii_lowercase().find("interval $") {
        let (before, after) = rest.split_at(pos + "interval ".len());
        out.push_str(before);
        let name_len = after[1..]
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(after.len() - 1);
        out.push('(');
        out.push_str(&after[..1 + name_len]);
        out.push(')');
        rest = &after[1 + name_len..];
    }
    out.push_str(rest);
    out
}

/// ClickHouse's `WITH <expr> AS <name>` (a scalar alias) is not SQL-standard: lift such items
/// out of the WITH clause, leaving CTEs (`name AS (SELECT ..)`) for the parser.
fn split_scalar_with(sql: &str) -> Result<(String, Vec<(String, String)>), SqlError> {
    let trimmed = sql.trim_start();
    let offset = sql.len() - trimmed.len();
    let starts_with_with = trimmed
        .get(..4)
        .is_some_and(|w| w.eq_ignore_ascii_case("with"))
        && trimmed[4..].starts_with(char::is_whitespace);
    if !starts_with_with {
        return Ok((sql.to_string(), Vec::new()));
    }
    // Split the WITH list at top-level commas, up to the top-level SELECT.
    let body = &trimmed[5..];
    let bytes = body.as_bytes();
    let (mut depth, mut quote, mut start) = (0i32, None::<u8>, 0usize);
    let mut items = Vec::new();
    let mut end = None;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match quote {
            Some(q) => {
                if c == b'\\' {
                    i += 1;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                b'\'' | b'"' | b'`' => quote = Some(c),
                b'(' | b'[' => depth += 1,
                b')' | b']' => depth -= 1,
                b',' if depth == 0 => {
                    items.push(&body[start..i]);
                    start = i + 1;
                }
                _ if depth == 0
                    && body[i..].len() >= 6
                    && body[i..i + 6].eq_ignore_ascii_case("select")
                    && (i == 0
                        || !bytes[i - 1].is_ascii_alphanumeric() && bytes[i - 1] != b'_') =>
                {
                    items.push(&body[start..i]);
                    end = Some(i);
                    break;
                }
                _ => {}
            },
        }
        i += 1;
    }
    let Some(end) = end else {
        return Ok((sql.to_string(), Vec::new()));
    };
    let mut ctes = Vec::new();
    let mut scalars = Vec::new();
    for item in items {
        let item = item.trim();
        // CTE: `name AS (` ; scalar: `expr AS name`.
        let upper = item.to_ascii_uppercase();
        match upper.rfind(" AS ") {
            Some(pos) if !item[pos + 4..].trim_start().starts_with('(') => {
                let name = item[pos + 4..].trim().trim_matches('`').to_string();
                scalars.push((name, item[..pos].trim().to_string()));
            }
            _ => ctes.push(item.to_string()),
        }
    }
    if scalars.is_empty() {
        return Ok((sql.to_string(), Vec::new()));
    }
    let rest = &body[end..];
    let rewritten = if ctes.is_empty() {
        format!("{}{}", " ".repeat(offset), rest)
    } else {
        format!("{}WITH {} {}", " ".repeat(offset), ctes.join(", "), rest)
    };
    Ok((rewritten, scalars))
}

fn at(message: impl Into<String>, node: &impl Spanned) -> SqlError {
    let span = node.span();
    SqlError {
        message: message.into(),
        line: span.start.line,
        column: span.start.column,
    }
}

fn unsupported(what: &str, node: &impl Spanned) -> SqlError {
    let span = node.span();
    let mut e = at(format!("unsupported: {what}"), node);
    if span.start.line > 0 {
        e.message = format!(
            "unsupported: {what} at {}:{}",
            span.start.line, span.start.column
        );
    }
    e
}

/// One column visible to expressions.
#[derive(Clone, Debug)]
struct ScopeColumn {
    table: Option<String>,
    name: String,
    ty: ColumnType,
    /// A USING column's right-hand copy: reachable only qualified, not by `*`.
    hidden: bool,
}

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
                })
                .collect(),
        }
    }

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
    /// Over groups: keys (over the input) become key columns, aggregates are collected.
    Groups {
        keys: &'m [Expr],
        aggregates: &'m mut Vec<Aggregate>,
        agg_types: &'m mut Vec<ColumnType>,
    },
}

struct Planner<'c> {
    catalog: &'c dyn Catalog,
    ctes: Vec<(String, Plan)>,
    scalars: Vec<(String, ast::Expr)>,
    /// `arrayJoin(..)` calls of the current select list, by text, and their column.
    array_joins: Vec<(String, usize)>,
}

/// Select-list aliases, usable in WHERE, GROUP BY, HAVING and ORDER BY.
type Aliases = BTreeMap<String, ast::Expr>;

const AGGREGATES: [(&str, AggFunc); 17] = [
    ("uniqexactarray", AggFunc::UniqExactArray),
    ("count", AggFunc::Count),
    ("sum", AggFunc::Sum),
    ("avg", AggFunc::Avg),
    ("min", AggFunc::Min),
    ("max", AggFunc::Max),
    ("uniq", AggFunc::Uniq),
    ("uniqcombined", AggFunc::Uniq),
    ("uniqexact", AggFunc::UniqExact),
    ("quantile", AggFunc::Quantile),
    ("median", AggFunc::Quantile),
    ("argmax", AggFunc::ArgMax),
    ("argmin", AggFunc::ArgMin),
    ("any", AggFunc::Any),
    ("anylast", AggFunc::AnyLast),
    ("grouparray", AggFunc::GroupArray),
    ("groupuniqarray", AggFunc::GroupUniqArray),
];

/// The aggregate a function name denotes, and whether it has the `-If` combinator.
fn aggregate_of(name: &str) -> Option<(AggFunc, bool)> {
    let lower = name.to_ascii_lowercase();
    if let Some((_, f)) = AGGREGATES.iter().find(|(n, _)| *n == lower) {
        return Some((*f, false));
    }
    let base = lower.strip_suffix("if")?;
    AGGREGATES
        .iter()
        .find(|(n, _)| *n == base)
        .map(|(_, f)| (*f, true))
}

fn function_name(f: &ast::Function) -> String {
    f.name.to_string()
}

fn function_args(f: &ast::Function) -> Result<Vec<&ast::Expr>, SqlError> {
    match &f.args {
        FunctionArguments::None => Ok(Vec::new()),
        FunctionArguments::Subquery(_) => Err(unsupported("a subquery as a function argument", f)),
        FunctionArguments::List(list) => list
            .args
            .iter()
            .filter_map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(Ok(e)),
                FunctionArg::Unnamed(FunctionArgExpr::Wildcard) => None,
                other => Some(Err(unsupported(&format!("function argument '{other}'"), f))),
            })
            .collect(),
    }
}

fn is_distinct(f: &ast::Function) -> bool {
    matches!(&f.args, FunctionArguments::List(l) if matches!(l.duplicate_treatment, Some(ast::DuplicateTreatment::Distinct)))
}

/// True when some function call inside `e` (not inside a subquery) satisfies `pred`.
fn any_call(e: &ast::Expr, pred: &dyn Fn(&ast::Function) -> bool) -> bool {
    let any = |x: &ast::Expr| any_call(x, pred);
    match e {
        ast::Expr::Function(f) => {
            pred(f)
                || match &f.args {
                    FunctionArguments::List(l) => l.args.iter().any(|a| match a {
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) => any(x),
                        _ => false,
                    }),
                    _ => false,
                }
        }
        ast::Expr::BinaryOp { left, right, .. } => any(left) || any(right),
        ast::Expr::UnaryOp { expr, .. }
        | ast::Expr::Nested(expr)
        | ast::Expr::IsNull(expr)
        | ast::Expr::IsNotNull(expr)
        | ast::Expr::Cast { expr, .. } => any(expr),
        ast::Expr::Between {
            expr, low, high, ..
        } => any(expr) || any(low) || any(high),
        ast::Expr::Like { expr, pattern, .. } | ast::Expr::ILike { expr, pattern, .. } => {
            any(expr) || any(pattern)
        }
        ast::Expr::In { expr, target, .. } => {
            any(expr)
                || match target {
                    ast::InTarget::List(l) => l.iter().any(any),
                    _ => false,
                }
        }
        ast::Expr::Case {
            operand,
            conditions,
            else_result,
            ..
        } => {
            operand.as_deref().is_some_and(any)
                || conditions
                    .iter()
                    .any(|c| any(&c.condition) || any(&c.result))
                || else_result.as_deref().is_some_and(any)
        }
        ast::Expr::Array(a) => a.elem.iter().any(any),
        ast::Expr::Tuple(items) => items.iter().any(any),
        ast::Expr::CompoundFieldAccess { root, .. } => any(root),
        ast::Expr::Interval(iv) => any(&iv.value),
        _ => false,
    }
}

fn contains_aggregate(e: &ast::Expr) -> bool {
    any_call(e, &|f| {
        let name = function_name(f);
        let two = [String::new(), String::new()];
        (aggregate_of(&name).is_some() || combinator_sql(&name, &two).is_some()) && f.over.is_none()
    })
}

/// ClickHouse's `-State`, `-SimpleState` and `-Merge` combinators (materialized views into
/// AggregatingMergeTree), as plain SQL over Petrel's state values: a count or sum is its
/// number, `avgState` is `(sum, count)`, `uniqState` is the set of distinct values,
/// `argMaxState` is `(arg, max)`. The materialized view is maintained whole, so merging
/// states is an ordinary aggregation over them.
fn combinator_sql(name: &str, args: &[String]) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    let (base, state) = if let Some(b) = lower.strip_suffix("simplestate") {
        (b, true)
    } else if let Some(b) = lower.strip_suffix("state") {
        (b, true)
    } else if let Some(b) = lower.strip_suffix("merge") {
        (b, false)
    } else {
        return None;
    };
    let all = args.join(", ");
    let first = args.first().cloned().unwrap_or_default();
    let second = args.get(1);
    Some(match (base, state) {
        ("count" | "countif" | "sum" | "sumif" | "min" | "max" | "any" | "anylast", true) => {
            format!("{base}({all})")
        }
        ("count" | "countif" | "sum" | "sumif", false) => format!("sum({first})"),
        ("min" | "max" | "any" | "anylast", false) => format!("{base}({first})"),
        ("avg", true) => format!("tuple(sum({all}), count({all}))"),
        ("avg", false) => {
            format!("sum(tupleElement({first}, 1)) / sum(tupleElement({first}, 2))")
        }
        ("uniq" | "uniqexact" | "uniqcombined" | "uniqcombined64" | "uniqhll12", true) => {
            format!("groupUniqArray({all})")
        }
        ("uniq" | "uniqexact" | "uniqcombined" | "uniqcombined64" | "uniqhll12", false) => {
            format!("uniqExactArray({first})")
        }
        ("argmax" | "argmin", true) => {
            let extreme = if base == "argmax" { "max" } else { "min" };
            format!("tuple({base}({all}), {extreme}({}))", second?)
        }
        ("argmax" | "argmin", false) => {
            format!("tupleElement({base}({first}, tupleElement({first}, 2)), 1)")
        }
        _ => return None,
    })
}

fn mentions_now(e: &ast::Expr) -> bool {
    any_call(e, &|f| {
        let n = function_name(f).to_ascii_lowercase();
        n == "now" || n == "now64" || n == "today"
    })
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

fn literal_type(v: &Value) -> ColumnType {
    match v {
        Value::Null => ColumnType::Nullable(Box::new(ColumnType::String)),
        Value::Bool(_) => ColumnType::Bool,
        Value::Int(_) => ColumnType::Int(64),
        Value::UInt(_) => ColumnType::UInt(64),
        Value::Float(_) => ColumnType::Float64,
        Value::Date(_) => ColumnType::Date,
        Value::DateTime(_) => ColumnType::DateTime,
        Value::DateTime64(_, p) => ColumnType::DateTime64(*p),
        Value::Uuid(_) => ColumnType::Uuid,
        Value::Array(items) => ColumnType::Array(Box::new(
            items
                .first()
                .map(literal_type)
                .unwrap_or(ColumnType::String),
        )),
        Value::Tuple(items) => ColumnType::Tuple(items.iter().map(literal_type).collect()),
        _ => ColumnType::String,
    }
}

fn interval_of(e: &ast::Expr) -> Option<(&ast::Expr, Result<Unit, String>)> {
    match e {
        ast::Expr::Interval(iv) => {
            let unit = match &iv.leading_field {
                Some(f) => Unit::parse(&f.to_string())
                    .ok_or_else(|| format!("unknown interval unit '{f}'")),
                None => Err("INTERVAL needs a unit, e.g. INTERVAL 1 DAY".to_string()),
            };
            Some((&iv.value, unit))
        }
        // toIntervalDay(n), toIntervalHour(n), ..
        ast::Expr::Function(f) => {
            let name = function_name(f).to_ascii_lowercase();
            let unit = Unit::parse(name.strip_prefix("tointerval")?)?;
            match &f.args {
                FunctionArguments::List(l) => match l.args.as_slice() {
                    [FunctionArg::Unnamed(FunctionArgExpr::Expr(n))] => Some((n, Ok(unit))),
                    _ => None,
                },
                _ => None,
            }
        }
        _ => None,
    }
}

fn unit_seconds(unit: Unit) -> Option<i64> {
    Some(match unit {
        Unit::Second => 1,
        Unit::Minute => 60,
        Unit::Hour => 3600,
        Unit::Day => 86_400,
        Unit::Week => 604_800,
        _ => return None,
    })
}

impl Planner<'_> {
    fn query(&mut self, q: &ast::Query) -> Result<Query, SqlError> {
        let mark = self.ctes.len();
        if let Some(with) = &q.with {
            if with.recursive {
                return Err(unsupported("WITH RECURSIVE", with));
            }
            for cte in &with.cte_tables {
                let planned = self.query(&cte.query)?;
                let plan = planned.into_plan();
                self.ctes.push((cte.alias.name.value.clone(), plan));
            }
        }
        let out = self.query_body(q);
        self.ctes.truncate(mark);
        out
    }

    fn query_body(&mut self, q: &ast::Query) -> Result<Query, SqlError> {
        if q.fetch.is_some() {
            return Err(unsupported("FETCH", q));
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
        if order.iter().any(|o| o.with_fill.is_some()) {
            return Err(unsupported("WITH FILL", q));
        }
        let mut query = match q.body.as_ref() {
            SetExpr::Select(select) => self.select(select, &order)?,
            other => {
                let plan = self.set_expr(other)?;
                let visible = plan.columns.len();
                let scope = Scope::of(None, &plan.columns);
                let mut order_by = Vec::new();
                for o in &order {
                    let (expr, _) = self.expr(&o.expr, &scope, &Aliases::new(), &mut Mode::Rows)?;
                    order_by.push(sort_key(expr, o));
                }
                Query {
                    plan,
                    visible,
                    order_by,
                    limit: None,
                    offset: None,
                }
            }
        };
        let limit = limit.map(|e| self.limit_expr(&e)).transpose()?;
        let offset = offset.map(|e| self.limit_expr(&e)).transpose()?;
        if limit_by.is_empty() {
            query.limit = limit;
            query.offset = offset;
        } else {
            // `LIMIT n BY x` must be maintained: a top-k per partition, inside the plan.
            let scope = Scope::of(None, &query.plan.columns);
            let mut partition_by = Vec::new();
            for e in &limit_by {
                partition_by.push(self.expr(e, &scope, &Aliases::new(), &mut Mode::Rows)?.0);
            }
            let constant = |e: Option<Expr>, what: &str| -> Result<Option<u64>, SqlError> {
                match e {
                    None => Ok(None),
                    Some(Expr::Literal(v)) => v
                        .as_i64()
                        .filter(|n| *n >= 0)
                        .map(|n| Some(n as u64))
                        .ok_or_else(|| {
                            SqlError::new(format!("{what} must be a non-negative integer"))
                        }),
                    Some(_) => Err(SqlError::new(format!("LIMIT BY needs a constant {what}"))),
                }
            };
            let columns = query.plan.columns.clone();
            query.plan = Plan {
                node: PlanNode::TopK {
                    input: Box::new(query.plan),
                    order_by: query.order_by.clone(),
                    limit: constant(limit, "limit")?,
                    offset: constant(offset, "offset")?.unwrap_or(0),
                    partition_by,
                },
                columns,
            };
        }
        Ok(query)
    }

    fn limit_expr(&mut self, e: &ast::Expr) -> Result<Expr, SqlError> {
        let (expr, _) = self.expr(e, &Scope::default(), &Aliases::new(), &mut Mode::Rows)?;
        if !expr.is_constant() {
            return Err(at("LIMIT and OFFSET must be constants or parameters", e));
        }
        Ok(expr)
    }

    fn set_expr(&mut self, s: &SetExpr) -> Result<Plan, SqlError> {
        match s {
            SetExpr::Select(select) => Ok(self.select(select, &[])?.into_plan()),
            SetExpr::Query(q) => Ok(self.query(q)?.into_plan()),
            SetExpr::SetOperation {
                op: SetOperator::Union,
                set_quantifier,
                left,
                right,
            } => {
                if !matches!(set_quantifier, SetQuantifier::All) {
                    return Err(SqlError::new("unsupported: UNION without ALL (write UNION ALL, or SELECT DISTINCT over it)"));
                }
                let l = self.set_expr(left)?;
                let r = self.set_expr(right)?;
                if l.columns.len() != r.columns.len() {
                    return Err(SqlError::new(format!(
                        "UNION ALL of {} and {} columns",
                        l.columns.len(),
                        r.columns.len()
                    )));
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
                        node => inputs.push(Plan {
                            node,
                            columns: p.columns,
                        }),
                    }
                }
                Ok(Plan {
                    node: PlanNode::Union { inputs },
                    columns,
                })
            }
            SetExpr::SetOperation { op, .. } => Err(SqlError::new(format!("unsupported: {op}"))),
            SetExpr::Values(_) => Err(SqlError::new("unsupported: VALUES")),
            other => Err(unsupported(
                "this statement (only SELECT is allowed)",
                other,
            )),
        }
    }

    fn table(&mut self, factor: &TableFactor) -> Result<(Plan, Scope), SqlError> {
        match factor {
            TableFactor::Table {
                name, alias, args, ..
            } => {
                if args.is_some() {
                    return Err(unsupported(&format!("table function {name}"), factor));
                }
                let parts: Vec<String> = name
                    .0
                    .iter()
                    .map(|p| p.to_string().trim_matches('`').to_string())
                    .collect();
                let table_name = parts.last().cloned().unwrap_or_default();
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
                        Ok((
                            Plan {
                                node: PlanNode::Scan { table: table_name },
                                columns,
                            },
                            scope,
                        ))
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
                let plan = self.query(subquery)?.into_plan();
                let scope = Scope::of(alias.as_ref().map(|a| a.name.value.as_str()), &plan.columns);
                Ok((plan, scope))
            }
            other => Err(unsupported(&format!("FROM {other}"), other)),
        }
    }

    fn from(&mut self, from: &[ast::TableWithJoins]) -> Result<(Plan, Scope), SqlError> {
        let mut current: Option<(Plan, Scope)> = None;
        for twj in from {
            let mut acc = self.table(&twj.relation)?;
            for join in &twj.joins {
                let right = self.table(&join.relation)?;
                acc = self.join(acc, right, &join.join_operator, join)?;
            }
            current = Some(match current {
                None => acc,
                Some(left) => self.join(
                    left,
                    acc,
                    &JoinOperator::CrossJoin(JoinConstraint::None),
                    &twj.relation,
                )?,
            });
        }
        Ok(current.unwrap_or_else(|| {
            (
                Plan {
                    node: PlanNode::Values {
                        rows: vec![Vec::new()],
                    },
                    columns: Vec::new(),
                },
                Scope::default(),
            )
        }))
    }

    fn join(
        &mut self,
        (left, lscope): (Plan, Scope),
        (right, rscope): (Plan, Scope),
        op: &JoinOperator,
        node: &impl Spanned,
    ) -> Result<(Plan, Scope), SqlError> {
        let (kind, constraint) = match op {
            JoinOperator::Join(c) | JoinOperator::Inner(c) => (JoinKind::Inner, c),
            JoinOperator::Left(c) | JoinOperator::LeftOuter(c) => (JoinKind::Left, c),
            JoinOperator::CrossJoin(c) => (JoinKind::Cross, c),
            JoinOperator::Right(_) | JoinOperator::RightOuter(_) => {
                return Err(unsupported("RIGHT JOIN", node))
            }
            JoinOperator::FullOuter(_) => return Err(unsupported("FULL JOIN", node)),
            JoinOperator::ArrayJoin
            | JoinOperator::LeftArrayJoin
            | JoinOperator::InnerArrayJoin => {
                return Err(unsupported(
                    "ARRAY JOIN (use arrayJoin() in the select list)",
                    node,
                ))
            }
            _ => return Err(unsupported("this join kind", node)),
        };
        let nl = lscope.columns.len();
        let mut scope = lscope.clone();
        scope.columns.extend(rscope.columns.iter().cloned());
        let mut left_keys = Vec::new();
        let mut right_keys = Vec::new();
        let mut residual = Vec::new();
        match constraint {
            JoinConstraint::On(on) => {
                let mut parts = Vec::new();
                conjuncts(on, &mut parts);
                for p in parts {
                    if let ast::Expr::BinaryOp {
                        left: a,
                        op: BinaryOperator::Eq,
                        right: b,
                    } = p
                    {
                        let side = |e: &ast::Expr, s: &Scope, me: &mut Self| {
                            me.expr(e, s, &Aliases::new(), &mut Mode::Rows).ok()
                        };
                        if let (Some((la, _)), Some((rb, _))) =
                            (side(a, &lscope, self), side(b, &rscope, self))
                        {
                            left_keys.push(la);
                            right_keys.push(rb);
                            continue;
                        }
                        if let (Some((lb, _)), Some((ra, _))) =
                            (side(b, &lscope, self), side(a, &rscope, self))
                        {
                            left_keys.push(lb);
                            right_keys.push(ra);
                            continue;
                        }
                    }
                    residual.push(self.expr(p, &scope, &Aliases::new(), &mut Mode::Rows)?.0);
                }
            }
            JoinConstraint::Using(names) => {
                for n in names {
                    let name = n.to_string().trim_matches('`').to_string();
                    let l = lscope.resolve(None, &name).map_err(|e| at(e, node))?;
                    let r = rscope.resolve(None, &name).map_err(|e| at(e, node))?;
                    let (Some(l), Some(r)) = (l, r) else {
                        return Err(at(
                            format!("USING column '{name}' is not on both sides"),
                            node,
                        ));
                    };
                    left_keys.push(Expr::Column(l));
                    right_keys.push(Expr::Column(r));
                    scope.columns[nl + r].hidden = true;
                }
            }
            JoinConstraint::None => {}
            JoinConstraint::Natural => return Err(unsupported("NATURAL JOIN", node)),
            JoinConstraint::UsingAlias(..) => return Err(unsupported("USING ... AS", node)),
        }
        if kind != JoinKind::Cross && left_keys.is_empty() {
            return Err(at(
                "a join needs an equality between the two sides (or use CROSS JOIN)",
                node,
            ));
        }
        let kind = if left_keys.is_empty() {
            JoinKind::Cross
        } else {
            kind
        };
        let mut columns: Vec<Column> = left.columns.clone();
        columns.extend(right.columns.iter().cloned());
        let plan = Plan {
            node: PlanNode::Join {
                left: Box::new(left),
                right: Box::new(right),
                kind,
                left_keys,
                right_keys,
                residual: and_all(residual),
            },
            columns,
        };
        Ok((plan, scope))
    }

    /// WHERE/PREWHERE: temporal bounds, IN-subquery semi/anti joins, then a filter.
    fn filter(
        &mut self,
        mut plan: Plan,
        scope: &mut Scope,
        cond: &ast::Expr,
        aliases: &Aliases,
    ) -> Result<Plan, SqlError> {
        let mut parts = Vec::new();
        conjuncts(cond, &mut parts);
        let mut predicates = Vec::new();
        let mut bounds = Vec::new();
        for p in parts {
            if let ast::Expr::In {
                expr,
                target: ast::InTarget::Subquery(subquery),
                negated,
                ..
            } = p
            {
                plan = self.in_subquery(plan, scope, expr, subquery, *negated, aliases)?;
                continue;
            }
            if mentions_now(p) || uses_now_alias(p, aliases) {
                bounds.extend(self.temporal(p, scope, aliases)?);
                continue;
            }
            predicates.push(self.expr(p, scope, aliases, &mut Mode::Rows)?.0);
        }
        if let Some(predicate) = and_all(predicates) {
            let columns = plan.columns.clone();
            plan = Plan {
                node: PlanNode::Filter {
                    input: Box::new(plan),
                    predicate,
                },
                columns,
            };
        }
        if !bounds.is_empty() {
            let columns = plan.columns.clone();
            plan = Plan {
                node: PlanNode::TemporalFilter {
                    input: Box::new(plan),
                    bounds,
                },
                columns,
            };
        }
        Ok(plan)
    }

    /// `x IN (SELECT y ..)`: a join with the subquery's distinct values; NOT IN: a left join
    /// that keeps the rows without a match.
    fn in_subquery(
        &mut self,
        plan: Plan,
        scope: &Scope,
        expr: &ast::Expr,
        subquery: &ast::Query,
        negated: bool,
        aliases: &Aliases,
    ) -> Result<Plan, SqlError> {
        let (key, _) = self.expr(expr, scope, aliases, &mut Mode::Rows)?;
        let sub = self.query(subquery)?.into_plan();
        if sub.columns.len() != 1 {
            return Err(at("IN (subquery) needs a subquery of one column", subquery));
        }
        let width = plan.columns.len();
        let sub_columns = sub.columns.clone();
        let distinct = Plan {
            node: PlanNode::Distinct {
                input: Box::new(sub),
            },
            columns: sub_columns.clone(),
        };
        // A marker column: 1 on the right side, so unmatched left rows read the default 0.
        let mut marked_columns = sub_columns.clone();
        marked_columns.push(Column {
            name: "__matched".into(),
            ty: ColumnType::UInt(8),
        });
        let marked = Plan {
            node: PlanNode::Project {
                input: Box::new(distinct),
                exprs: vec![Expr::Column(0), Expr::Literal(Value::UInt(1))],
            },
            columns: marked_columns.clone(),
        };
        let mut joined_columns = plan.columns.clone();
        joined_columns.extend(marked_columns);
        let joined = Plan {
            node: PlanNode::Join {
                left: Box::new(plan.clone()),
                right: Box::new(marked),
                kind: if negated {
                    JoinKind::Left
                } else {
                    JoinKind::Inner
                },
                left_keys: vec![key],
                right_keys: vec![Expr::Column(0)],
                residual: None,
            },
            columns: joined_columns.clone(),
        };
        let kept = if negated {
            Plan {
                node: PlanNode::Filter {
                    input: Box::new(joined),
                    predicate: Expr::call(
                        Func::Eq,
                        vec![Expr::Column(width + 1), Expr::Literal(Value::UInt(0))],
                    ),
                },
                columns: joined_columns,
            }
        } else {
            joined
        };
        Ok(Plan {
            node: PlanNode::Project {
                input: Box::new(kept),
                exprs: (0..width).map(Expr::Column).collect(),
            },
            columns: plan.columns,
        })
    }

    /// `expr CMP now() [± INTERVAL]` and `expr BETWEEN now() - .. AND now()` as bounds.
    fn temporal(
        &mut self,
        p: &ast::Expr,
        scope: &Scope,
        aliases: &Aliases,
    ) -> Result<Vec<TemporalBound>, SqlError> {
        let refuse = || {
            at("now() is only supported in WHERE comparisons of a column with now() [± INTERVAL] (temporal filters)", p)
        };
        match p {
            ast::Expr::BinaryOp { left, op, right } => {
                let op = match op {
                    BinaryOperator::Lt => CmpOp::Lt,
                    BinaryOperator::LtEq => CmpOp::Le,
                    BinaryOperator::Gt => CmpOp::Gt,
                    BinaryOperator::GtEq => CmpOp::Ge,
                    _ => return Err(refuse()),
                };
                let now_in = |e: &ast::Expr| mentions_now(e) || uses_now_alias(e, aliases);
                let (row_side, now_side, op) = if now_in(right) && !now_in(left) {
                    (left, right, op)
                } else if now_in(left) && !now_in(right) {
                    let flipped = match op {
                        CmpOp::Lt => CmpOp::Gt,
                        CmpOp::Le => CmpOp::Ge,
                        CmpOp::Gt => CmpOp::Lt,
                        CmpOp::Ge => CmpOp::Le,
                    };
                    (right, left, flipped)
                } else {
                    return Err(refuse());
                };
                let (offset_ms, scale) = self.now_offset(now_side, aliases).ok_or_else(refuse)?;
                let (expr, ty) = self.expr(row_side, scope, aliases, &mut Mode::Rows)?;
                // Compared with toUnixTimestamp64Milli(now() ..) or toUnixTimestamp(now() ..):
                // the row side is a number of milliseconds or seconds.
                let (expr, ty) = match scale {
                    ClockScale::Time => (expr, ty),
                    ClockScale::UnixMillis => (
                        Expr::call(Func::FromUnixTimestamp64Milli, vec![expr]),
                        ColumnType::DateTime64(3),
                    ),
                    ClockScale::UnixSeconds => (
                        Expr::call(Func::Cast(ColumnType::DateTime), vec![expr]),
                        ColumnType::DateTime,
                    ),
                };
                if !matches!(
                    ty.base(),
                    ColumnType::Date | ColumnType::DateTime | ColumnType::DateTime64(_)
                ) {
                    return Err(at(
                        "a temporal filter compares a Date or DateTime with now()",
                        &**row_side,
                    ));
                }
                Ok(vec![TemporalBound {
                    expr,
                    op,
                    offset_ms,
                }])
            }
            ast::Expr::Between {
                expr,
                negated: false,
                low,
                high,
            } => {
                let (e, _) = self.expr(expr, scope, aliases, &mut Mode::Rows)?;
                let (lo, _) = self.now_offset(low, aliases).ok_or_else(refuse)?;
                let (hi, _) = self.now_offset(high, aliases).ok_or_else(refuse)?;
                Ok(vec![
                    TemporalBound {
                        expr: e.clone(),
                        op: CmpOp::Ge,
                        offset_ms: lo,
                    },
                    TemporalBound {
                        expr: e,
                        op: CmpOp::Le,
                        offset_ms: hi,
                    },
                ])
            }
            ast::Expr::Nested(inner) => self.temporal(inner, scope, aliases),
            _ => Err(refuse()),
        }
    }

    /// `now()`, `now() ± INTERVAL n unit`, `now() ± n` (seconds), through aliases and the
    /// conversions `toDateTime`, `toDateTime64`, `toUnixTimestamp(64Milli)`: the offset in ms
    /// and the scale the comparison is made in.
    fn now_offset(&mut self, e: &ast::Expr, aliases: &Aliases) -> Option<(i64, ClockScale)> {
        match e {
            ast::Expr::Identifier(id) => {
                let aliased = aliases.get(&id.value)?.clone();
                let mut inner = aliases.clone();
                inner.remove(&id.value);
                self.now_offset(&aliased, &inner)
            }
            ast::Expr::Function(f) => {
                let n = function_name(f).to_ascii_lowercase();
                let args = function_args(f).ok()?;
                match n.as_str() {
                    "now" | "now64" => Some((0, ClockScale::Time)),
                    "todatetime" | "todatetime64" => {
                        let (off, scale) = self.now_offset(args.first()?, aliases)?;
                        (scale == ClockScale::Time).then_some((off, scale))
                    }
                    "tounixtimestamp64milli" | "tounixtimestamp" => {
                        let (off, scale) = self.now_offset(args.first()?, aliases)?;
                        let to = if n == "tounixtimestamp" {
                            ClockScale::UnixSeconds
                        } else {
                            ClockScale::UnixMillis
                        };
                        (scale == ClockScale::Time).then_some((off, to))
                    }
                    _ => None,
                }
            }
            ast::Expr::Nested(inner) => self.now_offset(inner, aliases),
            ast::Expr::BinaryOp {
                left,
                op: op @ (BinaryOperator::Plus | BinaryOperator::Minus),
                right,
            } => {
                let (base, scale) = self.now_offset(left, aliases)?;
                if scale != ClockScale::Time {
                    return None;
                }
                let sign = if *op == BinaryOperator::Plus { 1 } else { -1 };
                let amount_ms = match interval_of(right) {
                    Some((value, unit)) => {
                        let n = self.constant_int(value)?;
                        n * unit_seconds(unit.ok()?)? * 1000
                    }
                    None => self.constant_int(right)? * 1000,
                };
                Some((base + sign * amount_ms, scale))
            }
            _ => None,
        }
    }

    fn constant_int(&mut self, e: &ast::Expr) -> Option<i64> {
        match self
            .expr(e, &Scope::default(), &Aliases::new(), &mut Mode::Rows)
            .ok()?
            .0
        {
            Expr::Literal(v) => v.as_i64(),
            _ => None,
        }
    }

    /// A SELECT with its query's ORDER BY (which may reference the select list).
    fn select(
        &mut self,
        select: &ast::Select,
        order: &[ast::OrderByExpr],
    ) -> Result<Query, SqlError> {
        if let Some(Distinct::On(_)) = &select.distinct {
            return Err(unsupported("DISTINCT ON", select));
        }
        if select.top.is_some()
            || select.into.is_some()
            || !select.lateral_views.is_empty()
            || select.qualify.is_some()
        {
            return Err(unsupported("TOP, INTO, LATERAL VIEW or QUALIFY", select));
        }
        let (mut plan, mut scope) = self.from(&select.from)?;
        // Aliases of the select list (ClickHouse lets WHERE, GROUP BY, .. use them).
        let mut aliases = Aliases::new();
        for (name, e) in &self.scalars {
            aliases.insert(name.clone(), e.clone());
        }
        for item in &select.projection {
            if let SelectItem::ExprWithAlias { expr, alias } = item {
                aliases.insert(alias.value.clone(), expr.clone());
            }
        }
        // arrayJoin(x) in the select list: unnest before anything else reads the row.
        let mut array_joins: Vec<(String, usize)> = Vec::new();
        for item in &select.projection {
            let (expr, alias) = match item {
                SelectItem::UnnamedExpr(e) => (e, None),
                SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value.clone())),
                _ => continue,
            };
            if let ast::Expr::Function(f) = expr {
                if function_name(f).eq_ignore_ascii_case("arrayjoin") {
                    let args = function_args(f)?;
                    let [arg] = args.as_slice() else {
                        return Err(at("arrayJoin takes one argument", expr));
                    };
                    let (e, ty) = self.expr(arg, &scope, &aliases, &mut Mode::Rows)?;
                    let ColumnType::Array(inner) = ty.base().clone() else {
                        return Err(at("arrayJoin needs an array", expr));
                    };
                    let width = plan.columns.len();
                    let mut columns = plan.columns.clone();
                    let name = alias.clone().unwrap_or_else(|| expr.to_string());
                    columns.push(Column {
                        name: name.clone(),
                        ty: ty.clone(),
                    });
                    let mut exprs: Vec<Expr> = (0..width).map(Expr::Column).collect();
                    exprs.push(e);
                    let projected = Plan {
                        node: PlanNode::Project {
                            input: Box::new(plan),
                            exprs,
                        },
                        columns: columns.clone(),
                    };
                    columns[width].ty = *inner.clone();
                    plan = Plan {
                        node: PlanNode::ArrayJoin {
                            input: Box::new(projected),
                            column: width,
                        },
                        columns,
                    };
                    scope.columns.push(ScopeColumn {
                        table: None,
                        name: format!("__arrayjoin_{width}"),
                        ty: *inner,
                        hidden: true,
                    });
                    array_joins.push((expr.to_string(), width));
                    if let Some(a) = alias {
                        aliases.remove(&a);
                        scope.columns[width].name = a;
                        scope.columns[width].hidden = false;
                    }
                }
            }
        }
        self.array_joins = array_joins;
        if let Some(pre) = &select.prewhere {
            plan = self.filter(plan, &mut scope, pre, &aliases)?;
        }
        if let Some(w) = &select.selection {
            plan = self.filter(plan, &mut scope, w, &aliases)?;
        }
        let group_exprs: Vec<ast::Expr> = match &select.group_by {
            GroupByExpr::Expressions(e, modifiers) => {
                if !modifiers.is_empty() {
                    return Err(unsupported(
                        "GROUP BY modifiers (WITH ROLLUP/CUBE/TOTALS)",
                        select,
                    ));
                }
                e.clone()
            }
            GroupByExpr::All(_) => return Err(unsupported("GROUP BY ALL", select)),
        };
        let aggregating = !group_exprs.is_empty()
            || select.having.is_some()
            || select.projection.iter().any(|i| match i {
                SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                    contains_aggregate(e)
                }
                _ => false,
            });
        let result = if aggregating {
            self.grouped(select, plan, &scope, &aliases, &group_exprs, order)
        } else {
            self.projected(select, plan, &scope, &aliases, order)
        };
        self.array_joins.clear();
        result
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
            &mut exprs,
            &mut columns,
            scope,
            aliases,
            &mut Mode::Rows,
            select.distinct.is_some(),
        )?;
        let mut plan = Plan {
            node: PlanNode::Project {
                input: Box::new(plan),
                exprs,
            },
            columns,
        };
        if select.distinct.is_some() {
            let columns = plan.columns.clone();
            plan = Plan {
                node: PlanNode::Distinct {
                    input: Box::new(plan),
                },
                columns,
            };
        }
        Ok(Query {
            plan,
            visible,
            order_by,
            limit: None,
            offset: None,
        })
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
            // GROUP BY 2: the second select item.
            let target = match g {
                ast::Expr::Value(v) => match &v.value {
                    ast::Value::Number(n, _) => {
                        let i: usize = n.parse().map_err(|_| at("bad GROUP BY position", g))?;
                        match select.projection.get(i.wrapping_sub(1)) {
                            Some(SelectItem::UnnamedExpr(e))
                            | Some(SelectItem::ExprWithAlias { expr: e, .. }) => e.clone(),
                            _ => return Err(at("GROUP BY position out of range", g)),
                        }
                    }
                    _ => g.clone(),
                },
                _ => g.clone(),
            };
            let (e, ty) = self.expr(&target, scope, aliases, &mut Mode::Rows)?;
            let name = match g {
                ast::Expr::Identifier(i) => i.value.clone(),
                other => other.to_string(),
            };
            keys.push(e);
            key_columns.push(Column { name, ty });
        }
        let mut aggregates = Vec::new();
        let mut agg_types = Vec::new();
        let (exprs, columns, having, order_by, visible) = {
            let mut mode = Mode::Groups {
                keys: &keys,
                aggregates: &mut aggregates,
                agg_types: &mut agg_types,
            };
            let (mut exprs, mut columns) = self.select_list(select, scope, aliases, &mut mode)?;
            let visible = exprs.len();
            let having = match &select.having {
                Some(h) => Some(self.expr(h, scope, aliases, &mut mode)?.0),
                None => None,
            };
            let order_by = self.order_by(
                order,
                &mut exprs,
                &mut columns,
                scope,
                aliases,
                &mut mode,
                select.distinct.is_some(),
            )?;
            (exprs, columns, having, order_by, visible)
        };
        let mut agg_columns = key_columns;
        for (a, ty) in aggregates.iter().zip(&agg_types) {
            agg_columns.push(Column {
                name: format!("{:?}", a.func),
                ty: ty.clone(),
            });
        }
        let mut plan = Plan {
            node: PlanNode::Aggregate {
                input: Box::new(plan),
                keys,
                aggregates,
            },
            columns: agg_columns.clone(),
        };
        if let Some(predicate) = having {
            plan = Plan {
                node: PlanNode::Filter {
                    input: Box::new(plan),
                    predicate,
                },
                columns: agg_columns,
            };
        }
        plan = Plan {
            node: PlanNode::Project {
                input: Box::new(plan),
                exprs,
            },
            columns,
        };
        if select.distinct.is_some() {
            let columns = plan.columns.clone();
            plan = Plan {
                node: PlanNode::Distinct {
                    input: Box::new(plan),
                },
                columns,
            };
        }
        Ok(Query {
            plan,
            visible,
            order_by,
            limit: None,
            offset: None,
        })
    }

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
                    let name = match e {
                        ast::Expr::Identifier(i) => i.value.clone(),
                        ast::Expr::CompoundIdentifier(parts) => {
                            parts.last().map(|p| p.value.clone()).unwrap_or_default()
                        }
                        other => other.to_string(),
                    };
                    exprs.push(x);
                    columns.push(Column { name, ty });
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
                    let qualifier = match item {
                        SelectItem::QualifiedWildcard(kind, _) => Some(kind.to_string()),
                        _ => None,
                    };
                    let mut except: Vec<String> = Vec::new();
                    if let Some(e) = &opts.opt_except {
                        except.push(e.first_element.value.clone());
                        except.extend(e.additional_elements.iter().map(|i| i.value.clone()));
                    }
                    if let Some(ast::ExcludeSelectItem::Multiple(names)) = &opts.opt_exclude {
                        except.extend(names.iter().map(|n| n.to_string()));
                    }
                    for (i, c) in scope.columns.iter().enumerate() {
                        let wanted = match &qualifier {
                            Some(q) => c.table.as_deref() == Some(q.as_str()),
                            None => !c.hidden,
                        };
                        if !wanted || except.contains(&c.name) || c.name.starts_with("__arrayjoin_")
                        {
                            continue;
                        }
                        let x = match mode {
                            Mode::Rows => Expr::Column(i),
                            Mode::Groups { keys, .. } => match keys.iter().position(|k| *k == Expr::Column(i)) {
                                Some(k) => Expr::Column(k),
                                None => return Err(at(format!("column '{}' is not under an aggregate function and not in GROUP BY", c.name), item)),
                            },
                        };
                        exprs.push(x);
                        columns.push(Column {
                            name: c.name.clone(),
                            ty: c.ty.clone(),
                        });
                    }
                }
            }
        }
        Ok((exprs, columns))
    }

    /// Sort keys over the projected columns; keys not in the select list become hidden
    /// columns after the visible ones.
    #[allow(clippy::too_many_arguments)]
    fn order_by(
        &mut self,
        order: &[ast::OrderByExpr],
        exprs: &mut Vec<Expr>,
        columns: &mut Vec<Column>,
        scope: &Scope,
        aliases: &Aliases,
        mode: &mut Mode<'_>,
        distinct: bool,
    ) -> Result<Vec<SortKey>, SqlError> {
        let mut keys = Vec::new();
        for o in order {
            // An output column by name (alias or plain column name).
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
                None => {
                    if distinct {
                        return Err(at(
                            "with DISTINCT, ORDER BY may only use selected columns",
                            &o.expr,
                        ));
                    }
                    exprs.push(e);
                    columns.push(Column {
                        name: o.expr.to_string(),
                        ty,
                    });
                    exprs.len() - 1
                }
            };
            keys.push(sort_key(Expr::Column(i), o));
        }
        Ok(keys)
    }

    fn column_ref(
        &mut self,
        table: Option<&str>,
        name: &str,
        node: &ast::Expr,
        scope: &Scope,
        aliases: &Aliases,
        mode: &mut Mode<'_>,
    ) -> Result<(Expr, ColumnType), SqlError> {
        if table.is_none() {
            if let Some(e) = aliases.get(name) {
                let e = e.clone();
                let mut inner = aliases.clone();
                inner.remove(name);
                return self.expr(&e, scope, &inner, mode);
            }
        }
        let Some(i) = scope.resolve(table, name).map_err(|e| at(e, node))? else {
            let full = table
                .map(|t| format!("{t}.{name}"))
                .unwrap_or_else(|| name.to_string());
            return Err(at(format!("unknown column '{full}'"), node));
        };
        let ty = scope.columns[i].ty.clone();
        match mode {
            Mode::Rows => Ok((Expr::Column(i), ty)),
            Mode::Groups { keys, .. } => match keys.iter().position(|k| *k == Expr::Column(i)) {
                Some(k) => Ok((Expr::Column(k), ty)),
                None => Err(at(
                    format!(
                        "column '{name}' is not under an aggregate function and not in GROUP BY"
                    ),
                    node,
                )),
            },
        }
    }

    /// Plans one expression; in group mode, sub-expressions equal to a GROUP BY key become
    /// that key's column and aggregates are collected.
    fn expr(
        &mut self,
        e: &ast::Expr,
        scope: &Scope,
        aliases: &Aliases,
        mode: &mut Mode<'_>,
    ) -> Result<(Expr, ColumnType), SqlError> {
        if let Some((_, col)) = self
            .array_joins
            .iter()
            .find(|(text, _)| *text == e.to_string())
        {
            let col = *col;
            let ty = scope.columns[col].ty.clone();
            return match mode {
                Mode::Rows => Ok((Expr::Column(col), ty)),
                Mode::Groups { keys, .. } => keys
                    .iter()
                    .position(|k| *k == Expr::Column(col))
                    .map(|k| (Expr::Column(k), ty))
                    .ok_or_else(|| at("arrayJoin result is not in GROUP BY", e)),
            };
        }
        if let Mode::Groups { keys, .. } = mode {
            if !matches!(
                e,
                ast::Expr::Identifier(_) | ast::Expr::CompoundIdentifier(_)
            ) && !contains_aggregate(e)
            {
                let keys: Vec<Expr> = keys.to_vec();
                if let Ok((x, ty)) = self.expr(e, scope, aliases, &mut Mode::Rows) {
                    if let Some(k) = keys.iter().position(|k| *k == x) {
                        return Ok((Expr::Column(k), ty));
                    }
                    if x.is_constant() {
                        return Ok((x, ty));
                    }
                }
            }
        }
        match e {
            ast::Expr::Identifier(id) => self.column_ref(None, &id.value, e, scope, aliases, mode),
            ast::Expr::CompoundIdentifier(parts) => {
                let names: Vec<&str> = parts.iter().map(|p| p.value.as_str()).collect();
                match names.as_slice() {
                    [t, c] => self.column_ref(Some(t), c, e, scope, aliases, mode),
                    [_, t, c] => self.column_ref(Some(t), c, e, scope, aliases, mode),
                    _ => Err(at(format!("cannot resolve '{e}'"), e)),
                }
            }
            ast::Expr::Value(v) => self.value(&v.value, e),
            ast::Expr::Nested(inner) => self.expr(inner, scope, aliases, mode),
            ast::Expr::UnaryOp { op, expr } => {
                let (x, ty) = self.expr(expr, scope, aliases, mode)?;
                match op {
                    UnaryOperator::Not => Ok((Expr::call(Func::Not, vec![x]), ColumnType::UInt(8))),
                    UnaryOperator::Plus => Ok((x, ty)),
                    UnaryOperator::Minus => match x {
                        Expr::Literal(Value::UInt(u)) => {
                            Ok((Expr::Literal(Value::Int(-(u as i64))), ColumnType::Int(64)))
                        }
                        Expr::Literal(Value::Int(i)) => {
                            Ok((Expr::Literal(Value::Int(-i)), ColumnType::Int(64)))
                        }
                        Expr::Literal(Value::Float(f)) => {
                            Ok((Expr::Literal(Value::Float(F64(-f.0))), ColumnType::Float64))
                        }
                        x => {
                            let ty = Func::Negate.result_type(&[ty]).map_err(|m| at(m, e))?;
                            Ok((Expr::call(Func::Negate, vec![x]), ty))
                        }
                    },
                    other => Err(unsupported(&format!("operator {other}"), e)),
                }
            }
            ast::Expr::BinaryOp { left, op, right } => {
                self.binary(left, op, right, e, scope, aliases, mode)
            }
            ast::Expr::IsNull(x) | ast::Expr::IsNotNull(x) => {
                let (a, _) = self.expr(x, scope, aliases, mode)?;
                let f = if matches!(e, ast::Expr::IsNull(_)) {
                    Func::IsNull
                } else {
                    Func::IsNotNull
                };
                Ok((Expr::call(f, vec![a]), ColumnType::UInt(8)))
            }
            ast::Expr::In {
                expr,
                target: ast::InTarget::List(list),
                negated,
                ..
            } => {
                let (x, _) = self.expr(expr, scope, aliases, mode)?;
                let mut args = vec![x];
                for item in list {
                    args.push(self.expr(item, scope, aliases, mode)?.0);
                }
                Ok((
                    Expr::call(if *negated { Func::NotIn } else { Func::In }, args),
                    ColumnType::UInt(8),
                ))
            }
            ast::Expr::In { .. } => Err(unsupported(
                "IN (subquery) outside a WHERE condition joined by AND",
                e,
            )),
            ast::Expr::Between {
                expr,
                negated,
                low,
                high,
            } => {
                let (x, _) = self.expr(expr, scope, aliases, mode)?;
                let (lo, _) = self.expr(low, scope, aliases, mode)?;
                let (hi, _) = self.expr(high, scope, aliases, mode)?;
                let between = Expr::call(
                    Func::And,
                    vec![
                        Expr::call(Func::GtEq, vec![x.clone(), lo]),
                        Expr::call(Func::LtEq, vec![x, hi]),
                    ],
                );
                Ok((
                    if *negated {
                        Expr::call(Func::Not, vec![between])
                    } else {
                        between
                    },
                    ColumnType::UInt(8),
                ))
            }
            ast::Expr::Like {
                negated,
                expr,
                pattern,
                any: false,
                ..
            }
            | ast::Expr::ILike {
                negated,
                expr,
                pattern,
                any: false,
                ..
            } => {
                let (x, _) = self.expr(expr, scope, aliases, mode)?;
                let (p, _) = self.expr(pattern, scope, aliases, mode)?;
                let like = Expr::call(
                    if matches!(e, ast::Expr::ILike { .. }) {
                        Func::ILike
                    } else {
                        Func::Like
                    },
                    vec![x, p],
                );
                Ok((
                    if *negated {
                        Expr::call(Func::Not, vec![like])
                    } else {
                        like
                    },
                    ColumnType::UInt(8),
                ))
            }
            ast::Expr::Case {
                operand,
                conditions,
                else_result,
                ..
            } => {
                let mut args = Vec::new();
                let mut types = Vec::new();
                let op = match operand {
                    Some(o) => Some(self.expr(o, scope, aliases, mode)?.0),
                    None => None,
                };
                for c in conditions {
                    let (cond, _) = self.expr(&c.condition, scope, aliases, mode)?;
                    let cond = match &op {
                        Some(o) => Expr::call(Func::Eq, vec![o.clone(), cond]),
                        None => cond,
                    };
                    let (r, ty) = self.expr(&c.result, scope, aliases, mode)?;
                    args.push(cond);
                    args.push(r);
                    types.push(ty);
                }
                let (els, ty) = match else_result {
                    Some(x) => self.expr(x, scope, aliases, mode)?,
                    None => (
                        Expr::Literal(Value::Null),
                        ColumnType::Nullable(Box::new(
                            types.first().cloned().unwrap_or(ColumnType::String),
                        )),
                    ),
                };
                args.push(els);
                types.push(ty);
                Ok((Expr::call(Func::MultiIf, args), common_type(&types)))
            }
            ast::Expr::Cast {
                expr, data_type, ..
            } => {
                let (x, _) = self.expr(expr, scope, aliases, mode)?;
                let ty = cast_type(&data_type.to_string()).map_err(|err| at(err, e))?;
                Ok((Expr::call(Func::Cast(ty.clone()), vec![x]), ty))
            }
            ast::Expr::Array(arr) => {
                let mut args = Vec::new();
                let mut types = Vec::new();
                for item in &arr.elem {
                    let (x, t) = self.expr(item, scope, aliases, mode)?;
                    args.push(x);
                    types.push(t);
                }
                let ty = Func::Array.result_type(&types).map_err(|m| at(m, e))?;
                Ok((fold(Expr::call(Func::Array, args)), ty))
            }
            ast::Expr::Tuple(items) => {
                let mut args = Vec::new();
                let mut types = Vec::new();
                for item in items {
                    let (x, t) = self.expr(item, scope, aliases, mode)?;
                    args.push(x);
                    types.push(t);
                }
                Ok((Expr::call(Func::Tuple, args), ColumnType::Tuple(types)))
            }
            ast::Expr::CompoundFieldAccess { root, access_chain } => {
                let (mut x, mut ty) = self.expr(root, scope, aliases, mode)?;
                for a in access_chain {
                    let ast::AccessExpr::Subscript(ast::Subscript::Index { index }) = a else {
                        return Err(unsupported("this field access", e));
                    };
                    let (i, _) = self.expr(index, scope, aliases, mode)?;
                    ty = Func::ArrayElement
                        .result_type(&[ty])
                        .map_err(|m| at(m, e))?;
                    x = Expr::call(Func::ArrayElement, vec![x, i]);
                }
                Ok((x, ty))
            }
            ast::Expr::Function(f) => self.function(f, e, scope, aliases, mode),
            ast::Expr::Interval(_) => Err(at(
                "INTERVAL is only supported added to or subtracted from a date",
                e,
            )),
            ast::Expr::Subquery(_) => Err(unsupported("scalar subqueries", e)),
            ast::Expr::Lambda(_) => Err(unsupported("lambda functions", e)),
            other => Err(unsupported(&format!("expression '{other}'"), other)),
        }
    }

    fn value(&mut self, v: &ast::Value, node: &ast::Expr) -> Result<(Expr, ColumnType), SqlError> {
        let value = match v {
            ast::Value::Number(n, _) => {
                if let Ok(u) = n.parse::<u64>() {
                    Value::UInt(u)
                } else if let Ok(i) = n.parse::<i64>() {
                    Value::Int(i)
                } else {
                    Value::Float(F64(n
                        .parse::<f64>()
                        .map_err(|_| at(format!("bad number {n}"), node))?))
                }
            }
            ast::Value::SingleQuotedString(s)
            | ast::Value::DoubleQuotedString(s)
            | ast::Value::EscapedStringLiteral(s) => Value::from(s.as_str()),
            ast::Value::Boolean(b) => Value::Bool(*b),
            ast::Value::Null => Value::Null,
            ast::Value::Placeholder(p) => {
                let name = p.trim_start_matches('$').to_string();
                let ty = self
                    .catalog
                    .param_type(&name)
                    .ok_or_else(|| at(format!("unknown parameter '{name}'"), node))?;
                return Ok((
                    Expr::Param {
                        name,
                        ty: ty.clone(),
                    },
                    ty,
                ));
            }
            other => return Err(unsupported(&format!("literal {other}"), node)),
        };
        let ty = literal_type(&value);
        Ok((Expr::Literal(value), ty))
    }

    #[allow(clippy::too_many_arguments)]
    fn binary(
        &mut self,
        left: &ast::Expr,
        op: &BinaryOperator,
        right: &ast::Expr,
        node: &ast::Expr,
        scope: &Scope,
        aliases: &Aliases,
        mode: &mut Mode<'_>,
    ) -> Result<(Expr, ColumnType), SqlError> {
        if let (BinaryOperator::Plus | BinaryOperator::Minus, Some((value, unit))) =
            (op, interval_of(right))
        {
            let unit = unit.map_err(|m| at(m, right))?;
            let (t, ty) = self.expr(left, scope, aliases, mode)?;
            let (n, _) = self.expr(value, scope, aliases, mode)?;
            let f = if *op == BinaryOperator::Plus {
                Func::AddInterval(unit)
            } else {
                Func::SubtractInterval(unit)
            };
            let ty = f.result_type(&[ty]).map_err(|m| at(m, node))?;
            return Ok((Expr::call(f, vec![t, n]), ty));
        }
        let func = match op {
            BinaryOperator::Plus => Func::Plus,
            BinaryOperator::Minus => Func::Minus,
            BinaryOperator::Multiply => Func::Multiply,
            BinaryOperator::Divide => Func::Divide,
            BinaryOperator::Modulo => Func::Modulo,
            BinaryOperator::Eq => Func::Eq,
            BinaryOperator::NotEq => Func::NotEq,
            BinaryOperator::Lt => Func::Lt,
            BinaryOperator::LtEq => Func::LtEq,
            BinaryOperator::Gt => Func::Gt,
            BinaryOperator::GtEq => Func::GtEq,
            BinaryOperator::And => Func::And,
            BinaryOperator::Or => Func::Or,
            BinaryOperator::Xor => Func::Xor,
            BinaryOperator::StringConcat => Func::Concat,
            other => return Err(unsupported(&format!("operator {other}"), node)),
        };
        let (a, ta) = self.expr(left, scope, aliases, mode)?;
        let (b, tb) = self.expr(right, scope, aliases, mode)?;
        let ty = func.result_type(&[ta, tb]).map_err(|m| at(m, node))?;
        Ok((fold(Expr::call(func, vec![a, b])), ty))
    }

    fn function(
        &mut self,
        f: &ast::Function,
        node: &ast::Expr,
        scope: &Scope,
        aliases: &Aliases,
        mode: &mut Mode<'_>,
    ) -> Result<(Expr, ColumnType), SqlError> {
        if f.over.is_some() {
            return Err(unsupported("window functions (OVER)", node));
        }
        if f.filter.is_some() {
            return Err(unsupported(
                "FILTER (WHERE ..) on aggregates (use the -If combinator)",
                node,
            ));
        }
        let name = function_name(f);
        let lower = name.to_ascii_lowercase();
        if let Some((agg, with_if)) = aggregate_of(&name) {
            return self.aggregate(f, agg, with_if, node, scope, aliases, mode);
        }
        if lower.ends_with("state") || lower.ends_with("merge") {
            let args: Vec<String> = function_args(f)?.iter().map(|a| a.to_string()).collect();
            let Some(sql) = combinator_sql(&name, &args) else {
                return Err(unsupported(
                    &format!("{name} (this -State/-Merge combination)"),
                    node,
                ));
            };
            let rewritten = Parser::new(&ClickHouseDialect {})
                .try_with_sql(&sql)
                .and_then(|mut p| p.parse_expr())
                .map_err(|e| at(format!("{name}: {e}"), node))?;
            return self.expr(&rewritten, scope, aliases, mode);
        }
        if lower == "now" || lower == "now64" || lower == "today" || lower == "yesterday" {
            return Err(at(
                format!("{name}() is only supported in WHERE comparisons (temporal filters)"),
                node,
            ));
        }
        let args_ast = function_args(f)?;
        // Functions whose first or second argument is a unit or an interval.
        match lower.as_str() {
            "datediff" | "date_diff" | "timestampdiff" => {
                let [unit, a, b] = args_ast.as_slice() else {
                    return Err(at("dateDiff takes (unit, start, end)", node));
                };
                let unit = match unit {
                    ast::Expr::Value(v) => match &v.value {
                        ast::Value::SingleQuotedString(s) => Unit::parse(s),
                        _ => None,
                    },
                    ast::Expr::Identifier(i) => Unit::parse(&i.value),
                    _ => None,
                }
                .ok_or_else(|| at("dateDiff needs a unit such as 'hour'", *unit))?;
                let (x, _) = self.expr(a, scope, aliases, mode)?;
                let (y, _) = self.expr(b, scope, aliases, mode)?;
                return Ok((
                    Expr::call(Func::DateDiff(unit), vec![x, y]),
                    ColumnType::Int(64),
                ));
            }
            "tostartofinterval" => {
                let [t, iv] = args_ast.as_slice() else {
                    return Err(at("toStartOfInterval takes (time, INTERVAL n unit)", node));
                };
                let Some((value, unit)) = interval_of(iv) else {
                    return Err(at("toStartOfInterval needs an INTERVAL", *iv));
                };
                let unit = unit.map_err(|m| at(m, *iv))?;
                let (x, ty) = self.expr(t, scope, aliases, mode)?;
                let (n, _) = self.expr(value, scope, aliases, mode)?;
                let func = Func::ToStartOf(unit);
                let ty = func
                    .result_type(&[ty, ColumnType::UInt(64)])
                    .map_err(|m| at(m, node))?;
                return Ok((Expr::call(func, vec![x, n]), ty));
            }
            _ => {}
        }
        let mut args = Vec::new();
        let mut types = Vec::new();
        for a in &args_ast {
            let (x, t) = self.expr(a, scope, aliases, mode)?;
            args.push(x);
            types.push(t);
        }
        if args.is_empty() && !matches!(lower.as_str(), "array" | "tuple" | "concat") {
            return Err(at(format!("{name} needs arguments"), node));
        }
        let cast = |t: &str| ColumnType::parse(t).ok();
        let (func, args) = match lower.as_str() {
            "plus" => (Func::Plus, args),
            "minus" => (Func::Minus, args),
            "multiply" => (Func::Multiply, args),
            "divide" => (Func::Divide, args),
            "modulo" => (Func::Modulo, args),
            "intdiv" => (Func::IntDiv, args),
            "negate" => (Func::Negate, args),
            "abs" => (Func::Abs, args),
            "round" => (Func::Round, args),
            "floor" => (Func::Floor, args),
            "ceil" | "ceiling" => (Func::Ceil, args),
            "greatest" => (Func::Greatest, args),
            "least" => (Func::Least, args),
            "equals" => (Func::Eq, args),
            "notequals" => (Func::NotEq, args),
            "less" => (Func::Lt, args),
            "lessorequals" => (Func::LtEq, args),
            "greater" => (Func::Gt, args),
            "greaterorequals" => (Func::GtEq, args),
            "and" => (Func::And, args),
            "or" => (Func::Or, args),
            "not" => (Func::Not, args),
            "xor" => (Func::Xor, args),
            "isnull" => (Func::IsNull, args),
            "isnotnull" => (Func::IsNotNull, args),
            "coalesce" => (Func::Coalesce, args),
            "ifnull" => (Func::IfNull, args),
            "nullif" => (Func::NullIf, args),
            "assumenotnull" => (Func::AssumeNotNull, args),
            "if" => (Func::If, args),
            "multiif" => (Func::MultiIf, args),
            "has" => (Func::Has, args),
            "in" => (Func::In, args),
            "lower" | "lowerutf8" | "lcase" => (Func::Lower, args),
            "upper" | "upperutf8" | "ucase" => (Func::Upper, args),
            "concat" => (Func::Concat, args),
            "length" | "lengthutf8" | "char_length" => (Func::Length, args),
            "empty" => (Func::Empty, args),
            "notempty" => (Func::NotEmpty, args),
            "like" => (Func::Like, args),
            "notlike" => (Func::NotLike, args),
            "ilike" => (Func::ILike, args),
            "substring" | "substr" | "mid" | "substringutf8" => (Func::Substring, args),
            "startswith" => (Func::StartsWith, args),
            "endswith" => (Func::EndsWith, args),
            "position" | "locate" => (Func::Position, args),
            "replaceall" | "replace" => (Func::ReplaceAll, args),
            "trim" | "trimboth" => (Func::Trim, args),
            "trimleft" | "ltrim" => (Func::TrimLeft, args),
            "trimright" | "rtrim" => (Func::TrimRight, args),
            "splitbychar" => (Func::SplitByChar, args),
            "splitbystring" => (Func::SplitByString, args),
            "tostring" => (Func::ToString, args),
            "todate" | "todate32" => (Func::ToDate, args),
            "todatetime" => (Func::ToDateTime, args.into_iter().take(1).collect()),
            "todatetime64" => {
                let p = args.get(1).and_then(|a| match a {
                    Expr::Literal(v) => v.as_i64(),
                    _ => None,
                });
                (
                    Func::ToDateTime64(p.unwrap_or(3).clamp(0, 9) as u8),
                    args.into_iter().take(1).collect(),
                )
            }
            "tostartofsecond" => (Func::ToStartOf(Unit::Second), args),
            "tostartofminute" => (Func::ToStartOf(Unit::Minute), args),
            "tostartoffiveminute" | "tostartoffiveminutes" => (
                Func::ToStartOf(Unit::Minute),
                vec![args[0].clone(), Expr::Literal(Value::UInt(5))],
            ),
            "tostartoftenminutes" => (
                Func::ToStartOf(Unit::Minute),
                vec![args[0].clone(), Expr::Literal(Value::UInt(10))],
            ),
            "tostartoffifteenminutes" => (
                Func::ToStartOf(Unit::Minute),
                vec![args[0].clone(), Expr::Literal(Value::UInt(15))],
            ),
            "tostartofhour" => (Func::ToStartOf(Unit::Hour), args),
            "tostartofday" => (Func::ToStartOf(Unit::Day), args),
            "tostartofweek" => (
                Func::ToStartOf(Unit::Week),
                args.into_iter().take(1).collect(),
            ),
            "tostartofmonth" => (Func::ToStartOf(Unit::Month), args),
            "tostartofquarter" => (Func::ToStartOf(Unit::Quarter), args),
            "tostartofyear" => (Func::ToStartOf(Unit::Year), args),
            "toyyyymm" => (Func::ToYYYYMM, args),
            "toyyyymmdd" => (Func::ToYYYYMMDD, args),
            "toyear" => (Func::ToYear, args),
            "tomonth" => (Func::ToMonth, args),
            "todayofmonth" => (Func::ToDayOfMonth, args),
            "todayofweek" => (Func::ToDayOfWeek, args),
            "tohour" => (Func::ToHour, args),
            "tominute" => (Func::ToMinute, args),
            "tounixtimestamp" => (Func::ToUnixTimestamp, args),
            "fromunixtimestamp64milli" => (Func::FromUnixTimestamp64Milli, args),
            "tounixtimestamp64milli" => (Func::ToUnixTimestamp64Milli, args),
            "addseconds" => (Func::AddInterval(Unit::Second), args),
            "addminutes" => (Func::AddInterval(Unit::Minute), args),
            "addhours" => (Func::AddInterval(Unit::Hour), args),
            "adddays" => (Func::AddInterval(Unit::Day), args),
            "addweeks" => (Func::AddInterval(Unit::Week), args),
            "addmonths" => (Func::AddInterval(Unit::Month), args),
            "addquarters" => (Func::AddInterval(Unit::Quarter), args),
            "addyears" => (Func::AddInterval(Unit::Year), args),
            "subtractseconds" => (Func::SubtractInterval(Unit::Second), args),
            "subtractminutes" => (Func::SubtractInterval(Unit::Minute), args),
            "subtracthours" => (Func::SubtractInterval(Unit::Hour), args),
            "subtractdays" => (Func::SubtractInterval(Unit::Day), args),
            "subtractweeks" => (Func::SubtractInterval(Unit::Week), args),
            "subtractmonths" => (Func::SubtractInterval(Unit::Month), args),
            "subtractyears" => (Func::SubtractInterval(Unit::Year), args),
            "array" => (Func::Array, args),
            "tuple" => (Func::Tuple, args),
            "arrayelement" => (Func::ArrayElement, args),
            "tupleelement" => {
                let i = match args.get(1) {
                    Some(Expr::Literal(v)) => v.as_i64().filter(|i| *i > 0),
                    _ => None,
                }
                .ok_or_else(|| at("tupleElement needs a constant position", node))?;
                (
                    Func::TupleElement(i as usize),
                    args.into_iter().take(1).collect(),
                )
            }
            "indexof" => (Func::IndexOf, args),
            "cityhash64" | "sipHash64" | "siphash64" | "xxhash64" => (Func::CityHash64, args),
            "jsonextractstring" => (Func::JsonExtractString, args),
            "domain" => (Func::Domain, args),
            "domainwithoutwww" => (Func::DomainWithoutWww, args),
            "path" => (Func::UrlPath, args),
            "tobool" => (Func::Cast(ColumnType::Bool), args),
            // Times are UTC instants; converting to UTC changes nothing.
            "totimezone" => match args.get(1) {
                Some(Expr::Literal(Value::String(tz)))
                    if matches!(tz.as_str(), "UTC" | "Etc/UTC" | "GMT") =>
                {
                    let first = args
                        .into_iter()
                        .next()
                        .ok_or_else(|| at("toTimeZone needs a time", node))?;
                    return Ok((
                        first,
                        types.into_iter().next().unwrap_or(ColumnType::DateTime),
                    ));
                }
                _ => {
                    return Err(unsupported(
                        "toTimeZone to a zone other than UTC (Petrel computes in UTC)",
                        node,
                    ))
                }
            },
            "tolowcardinality" | "identity" => {
                let first = args
                    .into_iter()
                    .next()
                    .ok_or_else(|| at("needs an argument", node))?;
                return Ok((
                    first,
                    types.into_iter().next().unwrap_or(ColumnType::String),
                ));
            }
            n => {
                let base = n
                    .trim_end_matches("orzero")
                    .trim_end_matches("ornull")
                    .trim_end_matches("ordefault");
                let target = match base {
                    "toint8" => cast("Int8"),
                    "toint16" => cast("Int16"),
                    "toint32" => cast("Int32"),
                    "toint64" => cast("Int64"),
                    "touint8" => cast("UInt8"),
                    "touint16" => cast("UInt16"),
                    "touint32" => cast("UInt32"),
                    "touint64" => cast("UInt64"),
                    "tofloat32" => cast("Float32"),
                    "tofloat64" => cast("Float64"),
                    "touuid" => cast("UUID"),
                    _ => None,
                };
                match target {
                    Some(t) if n.ends_with("ornull") => {
                        (Func::Cast(ColumnType::Nullable(Box::new(t))), args)
                    }
                    Some(t) => (Func::Cast(t), args),
                    None => return Err(unsupported(&format!("function {name}"), node)),
                }
            }
        };
        let mut arg_types = types;
        arg_types.resize(args.len(), ColumnType::UInt(64));
        let ty = func.result_type(&arg_types).map_err(|m| at(m, node))?;
        Ok((fold(Expr::call(func, args)), ty))
    }

    #[allow(clippy::too_many_arguments)]
    fn aggregate(
        &mut self,
        f: &ast::Function,
        agg: AggFunc,
        with_if: bool,
        node: &ast::Expr,
        scope: &Scope,
        aliases: &Aliases,
        mode: &mut Mode<'_>,
    ) -> Result<(Expr, ColumnType), SqlError> {
        let Mode::Groups {
            keys,
            aggregates,
            agg_types,
        } = mode
        else {
            return Err(at(
                format!(
                    "aggregate function {} is not allowed here",
                    function_name(f)
                ),
                node,
            ));
        };
        let nkeys = keys.len();
        let args_ast = function_args(f)?;
        let mut args = Vec::new();
        let mut types = Vec::new();
        for a in &args_ast {
            if contains_aggregate(a) {
                return Err(at("aggregate functions cannot be nested", *a));
            }
            let (x, t) = self.expr(a, scope, aliases, &mut Mode::Rows)?;
            args.push(x);
            types.push(t);
        }
        let filter = if with_if {
            let cond = args
                .pop()
                .ok_or_else(|| at("the -If combinator needs a condition argument", node))?;
            types.pop();
            Some(cond)
        } else {
            None
        };
        let mut params = Vec::new();
        if let FunctionArguments::List(list) = &f.parameters {
            for p in &list.args {
                if let FunctionArg::Unnamed(FunctionArgExpr::Expr(pe)) = p {
                    match self
                        .expr(pe, &Scope::default(), &Aliases::new(), &mut Mode::Rows)?
                        .0
                    {
                        Expr::Literal(v) => params.push(v),
                        _ => return Err(at("aggregate parameters must be constants", pe)),
                    }
                }
            }
        }
        let name = function_name(f).to_ascii_lowercase();
        let mut func = agg;
        if is_distinct(f) {
            if agg != AggFunc::Count {
                return Err(unsupported("DISTINCT inside this aggregate", node));
            }
            func = AggFunc::UniqExact;
        }
        if name.starts_with("median") {
            params = vec![Value::Float(F64(0.5))];
        }
        if func == AggFunc::Quantile && params.is_empty() {
            params.push(Value::Float(F64(0.5)));
        }
        let expected = match func {
            AggFunc::Count => None,
            AggFunc::ArgMax | AggFunc::ArgMin => Some(2),
            AggFunc::Uniq | AggFunc::UniqExact => None,
            AggFunc::UniqExactArray => Some(1),
            _ => Some(1),
        };
        if let Some(n) = expected {
            if args.len() != n {
                return Err(at(
                    format!("{} takes {n} argument(s)", function_name(f)),
                    node,
                ));
            }
        }
        if func == AggFunc::Count && args.len() > 1 {
            return Err(at("count takes at most one argument", node));
        }
        if matches!(func, AggFunc::Uniq | AggFunc::UniqExact) && args.is_empty() {
            return Err(at(format!("{} needs an argument", function_name(f)), node));
        }
        let arg_ty = types.first().cloned().unwrap_or(ColumnType::UInt(64));
        let ty = match func {
            AggFunc::Count | AggFunc::Uniq | AggFunc::UniqExact | AggFunc::UniqExactArray => {
                ColumnType::UInt(64)
            }
            AggFunc::Sum => match arg_ty.base() {
                ColumnType::Float32 | ColumnType::Float64 => ColumnType::Float64,
                ColumnType::UInt(_) | ColumnType::Bool => ColumnType::UInt(64),
                ColumnType::Int(_) => ColumnType::Int(64),
                other => return Err(at(format!("sum of {} values", other.name()), node)),
            },
            AggFunc::Avg | AggFunc::Quantile => ColumnType::Float64,
            AggFunc::Min
            | AggFunc::Max
            | AggFunc::Any
            | AggFunc::AnyLast
            | AggFunc::ArgMax
            | AggFunc::ArgMin => arg_ty.clone(),
            AggFunc::GroupArray | AggFunc::GroupUniqArray => {
                ColumnType::Array(Box::new(arg_ty.base().clone()))
            }
        };
        let aggregate = Aggregate {
            func,
            args,
            params,
            filter,
            ty: ty.clone(),
        };
        let index = match aggregates.iter().position(|a| *a == aggregate) {
            Some(i) => i,
            None => {
                aggregates.push(aggregate);
                agg_types.push(ty.clone());
                aggregates.len() - 1
            }
        };
        Ok((Expr::Column(nkeys + index), ty))
    }
}

use ast::Distinct;

/// The type a `CAST`/`::` names: ClickHouse's names in any case, and the SQL synonyms.
fn cast_type(text: &str) -> Result<ColumnType, String> {
    if let Ok(t) = ColumnType::parse(text) {
        return Ok(t);
    }
    let upper = text.trim().to_ascii_uppercase();
    let name = match upper.as_str() {
        "STRING" | "TEXT" | "VARCHAR" | "CHAR" => "String",
        "INT" | "INTEGER" | "INT32" => "Int32",
        "BIGINT" | "INT64" => "Int64",
        "SMALLINT" | "INT16" => "Int16",
        "TINYINT" | "INT8" => "Int8",
        "UINT8" => "UInt8",
        "UINT16" => "UInt16",
        "UINT32" => "UInt32",
        "UINT64" => "UInt64",
        "FLOAT" | "FLOAT32" | "REAL" => "Float32",
        "DOUBLE" | "FLOAT64" => "Float64",
        "BOOL" | "BOOLEAN" => "Bool",
        "DATE" | "DATE32" => "Date",
        "DATETIME" | "TIMESTAMP" => "DateTime",
        "UUID" => "UUID",
        _ => return Err(format!("unknown or unsupported type '{text}'")),
    };
    ColumnType::parse(name).map_err(|e| e.to_string())
}

/// How a temporal comparison reads the clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClockScale {
    /// As a Date/DateTime.
    Time,
    /// As `toUnixTimestamp64Milli(..)`: milliseconds.
    UnixMillis,
    /// As `toUnixTimestamp(..)`: seconds.
    UnixSeconds,
}

/// True when `e` names an alias (select-list or `WITH expr AS name`) whose expression reads
/// the clock.
fn uses_now_alias(e: &ast::Expr, aliases: &Aliases) -> bool {
    let text = e.to_string();
    aliases.iter().any(|(name, a)| {
        mentions_now(a)
            && text
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .any(|w| w == name)
    })
}

/// Constant-folds a call whose arguments are all literals.
fn fold(e: Expr) -> Expr {
    match &e {
        Expr::Call { args, .. } if args.iter().all(|a| matches!(a, Expr::Literal(_))) => {
            Expr::Literal(e.eval(&[]))
        }
        _ => e,
    }
}

fn sort_key(expr: Expr, o: &ast::OrderByExpr) -> SortKey {
    let desc = matches!(o.options.sort, Some(ast::OrderBySort::Desc));
    SortKey {
        expr,
        desc,
        nulls_first: o.options.nulls_first.unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TestCatalog;

    impl Catalog for TestCatalog {
        fn table(&self, name: &str) -> Option<TableRef> {
            (name == "t").then(|| {
                TableRef::Datasource(vec![
                    Column {
                        name: "ts".into(),
                        ty: ColumnType::DateTime,
                    },
                    Column {
                        name: "ms".into(),
                        ty: ColumnType::Int(64),
                    },
                    Column {
                        name: "k".into(),
                        ty: ColumnType::String,
                    },
                ])
            })
        }
        fn param_type(&self, name: &str) -> Option<ColumnType> {
            (name == "p").then_some(ColumnType::String)
        }
    }

    fn bounds(sql: &str) -> Vec<TemporalBound> {
        fn find(p: &Plan) -> Option<Vec<TemporalBound>> {
            match &p.node {
                PlanNode::TemporalFilter { bounds, .. } => Some(bounds.clone()),
                PlanNode::Project { input, .. } | PlanNode::Filter { input, .. } => find(input),
                _ => None,
            }
        }
        let q = plan_query(sql, &TestCatalog).unwrap_or_else(|e| panic!("{sql}: {e}"));
        find(&q.plan).expect("a temporal filter")
    }

    #[test]
    fn temporal_filters_through_aliases_and_conversions() {
        let b =
            bounds("WITH (now() - interval 30 minute) as start SELECT k FROM t WHERE ts >= start");
        assert_eq!((b[0].op, b[0].offset_ms), (CmpOp::Ge, -1_800_000));
        let b = bounds("SELECT k FROM t WHERE ms >= toUnixTimestamp64Milli(toDateTime64(now() - INTERVAL 1 DAY, 3))");
        assert_eq!(b[0].offset_ms, -86_400_000);
        assert!(matches!(
            &b[0].expr,
            Expr::Call {
                func: Func::FromUnixTimestamp64Milli,
                ..
            }
        ));
        let b = bounds("SELECT k FROM t WHERE now() - INTERVAL 2 HOUR < ts");
        assert_eq!((b[0].op, b[0].offset_ms), (CmpOp::Gt, -7_200_000));
        let b = bounds("SELECT k FROM t WHERE ts BETWEEN now() - INTERVAL 1 HOUR AND now()");
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn errors_name_the_construct_and_place() {
        let e = plan_query("SELECT k,\n  row_number() OVER () FROM t", &TestCatalog).unwrap_err();
        assert!(e.message.contains("window functions"), "{e}");
        assert_eq!(e.line, 2);
        let e = plan_query("SELECT nope FROM t", &TestCatalog).unwrap_err();
        assert!(e.message.contains("unknown column 'nope'"), "{e}");
        let e = plan_query("SELECT k FROM t WHERE k = $q", &TestCatalog).unwrap_err();
        assert!(e.message.contains("unknown parameter 'q'"), "{e}");
        let e = plan_query("SELECT toString(now()) FROM t", &TestCatalog).unwrap_err();
        assert!(e.message.contains("temporal"), "{e}");
    }

    #[test]
    fn aggregates_keys_and_hidden_order_columns() {
        let q = plan_query(
            "SELECT k, count() AS c FROM t GROUP BY k ORDER BY max(ms) DESC LIMIT 3",
            &TestCatalog,
        )
        .unwrap();
        assert_eq!(q.visible, 2);
        assert_eq!(q.plan.columns.len(), 3, "max(ms) is a hidden sort column");
        assert_eq!(q.plan.columns[1].ty, ColumnType::UInt(64));
        assert_eq!(q.limit, Some(Expr::Literal(Value::UInt(3))));
        let q = plan_query("SELECT k FROM t WHERE k = $p", &TestCatalog).unwrap();
        let mut params = std::collections::BTreeSet::new();
        q.plan.params(&mut params);
        assert!(params.contains("p"));
    }
}
