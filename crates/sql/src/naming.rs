//! ClickHouse's names for unaliased select-list expressions, which become result column
//! names (`meta` and JSON keys): functions with their arguments as written (`count()`,
//! `sum(click_count)`, `quantile(0.9)(x)`), operators by their function names
//! (`plus(a, 1)`, `equals(k, 'x')`), `count(DISTINCT x)` as `countDistinct(x)`, literals as
//! written, `CAST(x AS T)` and `x::T` as `CAST(x, 'T')`.

use sqlparser::ast::{
    self, BinaryOperator, FunctionArg, FunctionArgExpr, FunctionArguments, UnaryOperator,
};

use crate::planner::cast_type;

/// The ClickHouse column name of `e`.
pub(crate) fn column_name(e: &ast::Expr) -> String {
    match e {
        // A qualified column is named by its column alone at the top level.
        ast::Expr::CompoundIdentifier(parts) => {
            parts.last().map(|p| p.value.clone()).unwrap_or_default()
        }
        other => name(other),
    }
}

fn call(function: &str, args: &[&ast::Expr]) -> String {
    let args: Vec<String> = args.iter().map(|a| name(a)).collect();
    format!("{function}({})", args.join(", "))
}

fn operator(op: &BinaryOperator) -> Option<&'static str> {
    Some(match op {
        BinaryOperator::Plus => "plus",
        BinaryOperator::Minus => "minus",
        BinaryOperator::Multiply => "multiply",
        BinaryOperator::Divide => "divide",
        BinaryOperator::Modulo => "modulo",
        BinaryOperator::Eq => "equals",
        BinaryOperator::NotEq => "notEquals",
        BinaryOperator::Lt => "less",
        BinaryOperator::LtEq => "lessOrEquals",
        BinaryOperator::Gt => "greater",
        BinaryOperator::GtEq => "greaterOrEquals",
        BinaryOperator::And => "and",
        BinaryOperator::Or => "or",
        BinaryOperator::Xor => "xor",
        BinaryOperator::StringConcat => "concat",
        _ => return None,
    })
}

/// The operands of a chain of the same associative operator (`a AND b AND c`).
fn flatten<'a>(e: &'a ast::Expr, op: &BinaryOperator, out: &mut Vec<&'a ast::Expr>) {
    match e {
        ast::Expr::BinaryOp { left, op: o, right } if o == op => {
            flatten(left, op, out);
            flatten(right, op, out);
        }
        other => out.push(other),
    }
}

fn literal(v: &ast::Value) -> String {
    match v {
        ast::Value::SingleQuotedString(s) | ast::Value::DoubleQuotedString(s) => {
            format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
        }
        ast::Value::Boolean(b) => b.to_string(),
        ast::Value::Null => "NULL".into(),
        other => other.to_string(),
    }
}

fn name(e: &ast::Expr) -> String {
    match e {
        ast::Expr::Identifier(id) => id.value.clone(),
        ast::Expr::CompoundIdentifier(parts) => parts
            .iter()
            .map(|p| p.value.as_str())
            .collect::<Vec<_>>()
            .join("."),
        ast::Expr::Value(v) => literal(&v.value),
        ast::Expr::Nested(inner) => name(inner),
        ast::Expr::UnaryOp { op, expr } => match (op, expr.as_ref()) {
            (UnaryOperator::Minus, ast::Expr::Value(v)) => format!("-{}", literal(&v.value)),
            (UnaryOperator::Minus, x) => call("negate", &[x]),
            (UnaryOperator::Not, x) => call("not", &[x]),
            (_, x) => name(x),
        },
        ast::Expr::BinaryOp { left, op, right } => match (op, right.as_ref()) {
            (BinaryOperator::And | BinaryOperator::Or, _) => {
                let mut parts = Vec::new();
                flatten(e, op, &mut parts);
                call(operator(op).unwrap_or("and"), &parts)
            }
            _ => match operator(op) {
                Some(f) => call(f, &[left, right]),
                None => e.to_string(),
            },
        },
        ast::Expr::IsNull(x) => call("isNull", &[x]),
        ast::Expr::IsNotNull(x) => call("isNotNull", &[x]),
        ast::Expr::In {
            expr,
            target: ast::InTarget::List(list),
            negated,
            ..
        } => {
            let items: Vec<String> = list.iter().map(name).collect();
            let f = if *negated { "notIn" } else { "in" };
            format!("{f}({}, ({}))", name(expr), items.join(", "))
        }
        ast::Expr::Between {
            expr,
            negated,
            low,
            high,
        } => {
            let (x, lo, hi) = (name(expr), name(low), name(high));
            if *negated {
                format!("or(less({x}, {lo}), greater({x}, {hi}))")
            } else {
                format!("and(greaterOrEquals({x}, {lo}), lessOrEquals({x}, {hi}))")
            }
        }
        ast::Expr::Like {
            negated,
            expr,
            pattern,
            ..
        } => call(if *negated { "notLike" } else { "like" }, &[expr, pattern]),
        ast::Expr::ILike {
            negated,
            expr,
            pattern,
            ..
        } => call(
            if *negated { "notILike" } else { "ilike" },
            &[expr, pattern],
        ),
        ast::Expr::Case {
            operand,
            conditions,
            else_result,
            ..
        } => {
            let mut parts: Vec<String> = Vec::new();
            if let Some(o) = operand {
                parts.push(name(o));
            }
            for c in conditions {
                parts.push(name(&c.condition));
                parts.push(name(&c.result));
            }
            parts.push(else_result.as_deref().map(name).unwrap_or("NULL".into()));
            let f = if operand.is_some() {
                "caseWithExpression"
            } else {
                "multiIf"
            };
            format!("{f}({})", parts.join(", "))
        }
        ast::Expr::Cast {
            expr, data_type, ..
        } => {
            let ty = cast_type(&data_type.to_string())
                .map(|t| t.name())
                .unwrap_or_else(|_| data_type.to_string());
            format!("CAST({}, '{ty}')", name(expr))
        }
        ast::Expr::Array(arr) => {
            let items: Vec<String> = arr.elem.iter().map(name).collect();
            format!("[{}]", items.join(", "))
        }
        ast::Expr::Tuple(items) => {
            let items: Vec<String> = items.iter().map(name).collect();
            format!("({})", items.join(", "))
        }
        ast::Expr::CompoundFieldAccess { root, access_chain } => {
            let mut out = name(root);
            for a in access_chain {
                match a {
                    ast::AccessExpr::Subscript(ast::Subscript::Index { index }) => {
                        out = format!("arrayElement({out}, {})", name(index));
                    }
                    other => out = format!("{out}{other}"),
                }
            }
            out
        }
        ast::Expr::Interval(iv) => {
            let unit = iv
                .leading_field
                .as_ref()
                .map(|f| {
                    let f = f.to_string().to_ascii_lowercase();
                    let mut c = f.chars();
                    c.next()
                        .map(|h| h.to_ascii_uppercase().to_string() + c.as_str())
                        .unwrap_or_default()
                })
                .unwrap_or_default();
            format!("toInterval{unit}({})", name(&iv.value))
        }
        ast::Expr::Floor { expr, .. } => call("floor", &[expr]),
        ast::Expr::Ceil { expr, .. } => call("ceil", &[expr]),
        ast::Expr::Substring {
            expr,
            substring_from,
            substring_for,
            ..
        } => {
            let mut args: Vec<&ast::Expr> = vec![expr];
            args.extend(substring_from.as_deref());
            args.extend(substring_for.as_deref());
            call("substring", &args)
        }
        ast::Expr::Trim { expr, .. } => call("trimBoth", &[expr]),
        ast::Expr::Position { expr, r#in } => call("position", &[r#in, expr]),
        ast::Expr::Function(f) => function(f),
        other => other.to_string(),
    }
}

fn function(f: &ast::Function) -> String {
    let mut fname = f.name.to_string();
    let mut out = String::new();
    if let FunctionArguments::List(params) = &f.parameters {
        let ps: Vec<String> = params.args.iter().map(arg).collect();
        out.push_str(&format!("({})", ps.join(", ")));
    }
    let args = match &f.args {
        FunctionArguments::List(list) => {
            if matches!(
                list.duplicate_treatment,
                Some(ast::DuplicateTreatment::Distinct)
            ) {
                fname.push_str("Distinct");
            }
            list.args
                .iter()
                .filter(|a| !matches!(a, FunctionArg::Unnamed(FunctionArgExpr::Wildcard)))
                .map(arg)
                .collect::<Vec<_>>()
                .join(", ")
        }
        FunctionArguments::None => String::new(),
        FunctionArguments::Subquery(q) => q.to_string(),
    };
    format!("{fname}{out}({args})")
}

fn arg(a: &FunctionArg) -> String {
    match a {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => name(e),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::ClickHouseDialect;
    use sqlparser::parser::Parser;

    fn named(sql: &str) -> String {
        let e = Parser::new(&ClickHouseDialect {})
            .try_with_sql(sql)
            .and_then(|mut p| p.parse_expr())
            .unwrap();
        column_name(&e)
    }

    #[test]
    fn clickhouse_names() {
        assert_eq!(named("count()"), "count()");
        assert_eq!(named("count(*)"), "count()");
        assert_eq!(named("sum(click_count)"), "sum(click_count)");
        assert_eq!(named("count(DISTINCT user_id)"), "countDistinct(user_id)");
        assert_eq!(named("quantile(0.9)(x)"), "quantile(0.9)(x)");
        assert_eq!(named("a + 1"), "plus(a, 1)");
        assert_eq!(named("round(avg(x), 2)"), "round(avg(x), 2)");
        assert_eq!(named("sum(a) / count()"), "divide(sum(a), count())");
        assert_eq!(
            named("k = 'x' AND n > 1 AND b"),
            "and(equals(k, 'x'), greater(n, 1), b)"
        );
        assert_eq!(named("-x"), "negate(x)");
        assert_eq!(named("-1"), "-1");
        assert_eq!(named("t.k"), "k");
        assert_eq!(named("lower(t.k)"), "lower(t.k)");
        assert_eq!(named("x::Int32"), "CAST(x, 'Int32')");
        assert_eq!(named("CAST(x AS String)"), "CAST(x, 'String')");
        assert_eq!(named("ts - INTERVAL 1 DAY"), "minus(ts, toIntervalDay(1))");
        assert_eq!(named("x IN (1, 2)"), "in(x, (1, 2))");
        assert_eq!(named("arr[1]"), "arrayElement(arr, 1)");
        assert_eq!(named("CASE WHEN a THEN 1 END"), "multiIf(a, 1, NULL)");
        assert_eq!(named("x IS NULL"), "isNull(x)");
    }
}
