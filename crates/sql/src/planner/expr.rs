//! Expressions: column references (through aliases), literals, operators, functions (the
//! SQL names of [`Func`]) and aggregates (collected into the enclosing GROUP BY).

use petrel_value::{ColumnType, Value, F64};
use sqlparser::ast::{
    self, BinaryOperator, FunctionArg, FunctionArgExpr, FunctionArguments, UnaryOperator,
};
use sqlparser::dialect::ClickHouseDialect;
use sqlparser::parser::Parser;

use super::{at, unsupported, Aliases, Mode, Planner, Scope};
use crate::expr::Expr;
use crate::functions::{common_type, is_time, Func, HigherOrder, Unit};
use crate::naming::column_name;
use crate::plan::*;
use crate::SqlError;

/// The aggregate functions by lowercase SQL name.
const AGGREGATES: &[(&str, AggFunc)] = &[
    ("uniqexactarray", AggFunc::UniqExactArray),
    ("count", AggFunc::Count),
    ("sum", AggFunc::Sum),
    ("avg", AggFunc::Avg),
    ("min", AggFunc::Min),
    ("max", AggFunc::Max),
    ("uniq", AggFunc::Uniq),
    ("uniqcombined", AggFunc::Uniq),
    ("uniqcombined64", AggFunc::Uniq),
    ("uniqhll12", AggFunc::Uniq),
    ("uniqexact", AggFunc::UniqExact),
    // ClickHouse's count_distinct_implementation is uniqExact.
    ("countdistinct", AggFunc::UniqExact),
    ("quantile", AggFunc::Quantile),
    ("quantileexact", AggFunc::Quantile),
    ("quantiletdigest", AggFunc::Quantile),
    ("quantiletiming", AggFunc::Quantile),
    ("median", AggFunc::Quantile),
    ("medianexact", AggFunc::Quantile),
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
    let find = |n: &str| AGGREGATES.iter().find(|(a, _)| *a == n).map(|(_, f)| *f);
    if let Some(f) = find(&lower) {
        return Some((f, false));
    }
    find(lower.strip_suffix("if")?).map(|f| (f, true))
}

pub(super) fn function_name(f: &ast::Function) -> String {
    f.name
        .0
        .last()
        .and_then(|p| p.as_ident())
        .map(|i| i.value.clone())
        .unwrap_or_else(|| f.name.to_string())
}

/// True when a call's arguments are `*`.
fn has_wildcard(f: &ast::Function) -> bool {
    matches!(&f.args, FunctionArguments::List(list)
        if list.args.iter().any(|a| matches!(a, FunctionArg::Unnamed(FunctionArgExpr::Wildcard))))
}

/// A call's arguments (`count(*)` has none).
pub(super) fn function_args(f: &ast::Function) -> Result<Vec<&ast::Expr>, SqlError> {
    match &f.args {
        FunctionArguments::None => Ok(Vec::new()),
        FunctionArguments::Subquery(_) => Err(unsupported("a subquery as a function argument", f)),
        FunctionArguments::List(list) => {
            if !list.clauses.is_empty() {
                return Err(unsupported("clauses inside function arguments", f));
            }
            list.args
                .iter()
                .filter_map(|a| match a {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(Ok(e)),
                    FunctionArg::Unnamed(FunctionArgExpr::Wildcard) => None,
                    other => Some(Err(unsupported(&format!("function argument '{other}'"), f))),
                })
                .collect()
        }
    }
}

fn is_distinct(f: &ast::Function) -> bool {
    matches!(&f.args, FunctionArguments::List(l)
        if matches!(l.duplicate_treatment, Some(ast::DuplicateTreatment::Distinct)))
}

/// Visits `e` and its sub-expressions (not inside subqueries), depth first, until `visit`
/// returns true; true when it did.
fn any_expr<'a>(e: &'a ast::Expr, visit: &mut dyn FnMut(&'a ast::Expr) -> bool) -> bool {
    if visit(e) {
        return true;
    }
    let mut any = |x: &'a ast::Expr| any_expr(x, visit);
    match e {
        ast::Expr::Function(f) => match &f.args {
            FunctionArguments::List(l) => l.args.iter().any(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) => any(x),
                _ => false,
            }),
            _ => false,
        },
        ast::Expr::BinaryOp { left, right, .. } => any(left) || any(right),
        ast::Expr::UnaryOp { expr, .. }
        | ast::Expr::Nested(expr)
        | ast::Expr::IsNull(expr)
        | ast::Expr::IsNotNull(expr)
        | ast::Expr::Cast { expr, .. }
        | ast::Expr::Floor { expr, .. }
        | ast::Expr::Ceil { expr, .. }
        | ast::Expr::Trim { expr, .. }
        | ast::Expr::Extract { expr, .. } => any(expr),
        ast::Expr::Position { expr, r#in } => any(expr) || any(r#in),
        ast::Expr::Substring {
            expr,
            substring_from,
            substring_for,
            ..
        } => {
            any(expr)
                || substring_from.as_deref().is_some_and(&mut any)
                || substring_for.as_deref().is_some_and(&mut any)
        }
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
            operand.as_deref().is_some_and(&mut any)
                || conditions
                    .iter()
                    .any(|c| any(&c.condition) || any(&c.result))
                || else_result.as_deref().is_some_and(&mut any)
        }
        ast::Expr::Array(a) => a.elem.iter().any(any),
        ast::Expr::Tuple(items) => items.iter().any(any),
        ast::Expr::CompoundFieldAccess { root, access_chain } => {
            any(root)
                || access_chain.iter().any(|a| match a {
                    ast::AccessExpr::Subscript(ast::Subscript::Index { index }) => any(index),
                    _ => false,
                })
        }
        ast::Expr::Interval(iv) => any(&iv.value),
        _ => false,
    }
}

/// True when some function call inside `e` satisfies `pred`.
fn any_call(e: &ast::Expr, pred: &dyn Fn(&ast::Function) -> bool) -> bool {
    any_expr(e, &mut |x| matches!(x, ast::Expr::Function(f) if pred(f)))
}

/// The calls inside `e` of the function with this lowercase name, outermost first.
pub(super) fn calls_named<'a>(e: &'a ast::Expr, name: &str, out: &mut Vec<&'a ast::Expr>) {
    any_expr(e, &mut |x| {
        if let ast::Expr::Function(f) = x {
            if function_name(f).eq_ignore_ascii_case(name) {
                out.push(x);
            }
        }
        false
    });
}

/// The window function calls (`f(..) OVER (..)`) in `e`.
pub(super) fn window_calls<'a>(e: &'a ast::Expr, out: &mut Vec<&'a ast::Expr>) {
    any_expr(e, &mut |x| {
        if let ast::Expr::Function(f) = x {
            if f.over.is_some() {
                out.push(x);
            }
        }
        false
    });
}

/// True when `e` contains an aggregate call (including `-State`/`-Merge` combinators).
pub(super) fn contains_aggregate(e: &ast::Expr) -> bool {
    any_call(e, &is_aggregate_call)
}

/// True when `f` itself is an aggregate (not a window function).
pub(super) fn is_aggregate_call(f: &ast::Function) -> bool {
    let name = function_name(f);
    f.over.is_none() && (aggregate_of(&name).is_some() || combinator_sql(&name, &[]).is_some())
}

/// ClickHouse's `-State`, `-SimpleState` and `-Merge` combinators (materialized views into
/// AggregatingMergeTree), as plain SQL over Petrel's state values: a count or sum is its
/// number, `avgState` is `(sum, count)`, `uniqState` is the set of distinct values,
/// `argMaxState` is `(arg, max)`. The materialized view is maintained whole, so merging
/// states is an ordinary aggregation over them.
fn combinator_sql(name: &str, args: &[String]) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    if let Some(base) = lower.strip_suffix("stateif") {
        return state_if_sql(base, args);
    }
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
    let uniq = matches!(
        base,
        "uniq" | "uniqexact" | "uniqcombined" | "uniqcombined64" | "uniqhll12"
    );
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
        (_, true) if uniq => format!("groupUniqArray({all})"),
        (_, false) if uniq => format!("uniqExactArray({first})"),
        ("argmax" | "argmin", true) => {
            let extreme = if base == "argmax" { "max" } else { "min" };
            let second = args.get(1).cloned().unwrap_or_default();
            format!("tuple({base}({all}), {extreme}({second}))")
        }
        ("argmax" | "argmin", false) => {
            format!("tupleElement({base}({first}, tupleElement({first}, 2)), 1)")
        }
        _ => return None,
    })
}

/// `-StateIf` (`countStateIf(cond)`, `sumStateIf(x, cond)`): the state of the rows for which
/// the last argument holds, in the same form `-State` gives (so `-Merge` reads it alike).
fn state_if_sql(base: &str, args: &[String]) -> Option<String> {
    let all = args.join(", ");
    let (cond, values) = args
        .split_last()
        .map_or(("", &[][..]), |(c, v)| (c.as_str(), v));
    let first = values.first().cloned().unwrap_or_default();
    let uniq = matches!(
        base,
        "uniq" | "uniqexact" | "uniqcombined" | "uniqcombined64" | "uniqhll12"
    );
    Some(match base {
        "count" | "sum" | "min" | "max" | "any" | "anylast" => format!("{base}If({all})"),
        "avg" => format!("tuple(sumIf({first}, {cond}), countIf({cond}))"),
        _ if uniq => format!("groupUniqArrayIf({all})"),
        "argmax" | "argmin" => {
            let extreme = if base == "argmax" { "max" } else { "min" };
            let second = values.get(1).cloned().unwrap_or_default();
            format!("tuple({base}If({all}), {extreme}If({second}, {cond}))")
        }
        _ => return None,
    })
}

/// True when `e` reads the clock (`now()`, `today()`, ..).
pub(super) fn mentions_now(e: &ast::Expr) -> bool {
    any_call(e, &|f| {
        matches!(
            function_name(f).to_ascii_lowercase().as_str(),
            "now" | "now64" | "today" | "yesterday"
        )
    })
}

/// True when `e` names an alias whose expression reads the clock.
pub(super) fn uses_now_alias(e: &ast::Expr, aliases: &Aliases) -> bool {
    any_expr(e, &mut |x| match x {
        ast::Expr::Identifier(id) => aliases.get(&id.value).is_some_and(|a| {
            let mut inner = aliases.clone();
            inner.remove(&id.value);
            mentions_now(a) || uses_now_alias(a, &inner)
        }),
        _ => false,
    })
}

/// The type of a literal: the smallest integer type holding it, as ClickHouse types
/// literals; a NULL literal is `Nullable(String)` (see [`common_type`]).
fn literal_type(v: &Value) -> ColumnType {
    match v {
        Value::Null => ColumnType::Nullable(Box::new(ColumnType::String)),
        Value::Bool(_) => ColumnType::Bool,
        Value::UInt(u) => ColumnType::UInt(match *u {
            0..=0xFF => 8,
            0x100..=0xFFFF => 16,
            0x1_0000..=0xFFFF_FFFF => 32,
            _ => 64,
        }),
        Value::Int(i) => ColumnType::Int(match *i {
            -0x80..=0x7F => 8,
            -0x8000..=0x7FFF => 16,
            -0x8000_0000..=0x7FFF_FFFF => 32,
            _ => 64,
        }),
        Value::Float(_) => ColumnType::Float64,
        Value::Date(_) => ColumnType::Date,
        Value::DateTime(_) => ColumnType::DateTime,
        Value::DateTime64(_, p) => ColumnType::DateTime64(*p),
        Value::Uuid(_) => ColumnType::Uuid,
        Value::Array(items) => ColumnType::Array(Box::new(if items.is_empty() {
            ColumnType::String
        } else {
            common_type(&items.iter().map(literal_type).collect::<Vec<_>>())
        })),
        Value::Tuple(items) => ColumnType::Tuple(items.iter().map(literal_type).collect()),
        Value::String(_) | Value::Map(_) => ColumnType::String,
    }
}

/// `INTERVAL n unit` or `toIntervalUnit(n)`: the amount and the unit.
pub(super) fn interval_of(e: &ast::Expr) -> Option<(&ast::Expr, Result<Unit, String>)> {
    match e {
        ast::Expr::Interval(iv) => {
            let unit = match &iv.leading_field {
                Some(f) => Unit::parse(&f.to_string())
                    .ok_or_else(|| format!("unknown interval unit '{f}'")),
                None => Err("INTERVAL needs a unit, e.g. INTERVAL 1 DAY".to_string()),
            };
            Some((&iv.value, unit))
        }
        ast::Expr::Nested(inner) => interval_of(inner),
        ast::Expr::Function(f) => {
            let name = function_name(f).to_ascii_lowercase();
            let unit = Unit::parse(name.strip_prefix("tointerval")?)?;
            match function_args(f).ok()?.as_slice() {
                [n] => Some((n, Ok(unit))),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The type a `CAST`/`::` names: ClickHouse's names in any case (the parser upper-cases
/// some), and the SQL synonyms.
pub(crate) fn cast_type(text: &str) -> Result<ColumnType, String> {
    let text = text.trim().trim_matches('\'');
    if let Ok(t) = ColumnType::parse(text) {
        return Ok(t);
    }
    let upper = text.to_ascii_uppercase();
    let wrapped = |prefix: &str| {
        upper
            .strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(')'))
            .map(|inner| &text[prefix.len()..prefix.len() + inner.len()])
    };
    if let Some(inner) = wrapped("NULLABLE(") {
        return cast_type(inner).map(|t| ColumnType::Nullable(Box::new(t)));
    }
    if let Some(inner) = wrapped("LOWCARDINALITY(") {
        return cast_type(inner).map(|t| ColumnType::LowCardinality(Box::new(t)));
    }
    if let Some(inner) = wrapped("ARRAY(") {
        return cast_type(inner).map(|t| ColumnType::Array(Box::new(t)));
    }
    if let Some(args) = wrapped("DATETIME64(") {
        let p = args.split(',').next().unwrap_or("3").trim();
        return p
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= 9)
            .map(ColumnType::DateTime64)
            .ok_or_else(|| format!("bad DateTime64 precision in '{text}'"));
    }
    if wrapped("DATETIME(").is_some() {
        return Ok(ColumnType::DateTime);
    }
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

/// A string literal compared with a typed value, converted to that type at planning time
/// (`ts >= '2024-01-01'` compares times, not text, and parses once); a String parameter
/// ordered against a time is cast to it (folded when bound).
fn coerce_to(x: Expr, ty: ColumnType, other: &ColumnType, ordering: bool) -> (Expr, ColumnType) {
    let target = other.base();
    let convertible = is_time(target) || target.is_numeric() || *target == ColumnType::Uuid;
    match &x {
        Expr::Literal(Value::String(s)) if convertible => match target.parse_text(s) {
            Some(v) => (Expr::Literal(v), target.clone()),
            None => (x, ty),
        },
        Expr::Param { ty: pty, .. }
            if ordering && *pty.base() == ColumnType::String && is_time(target) =>
        {
            (
                Expr::call(Func::Cast(target.clone()), vec![x]),
                target.clone(),
            )
        }
        // A String parameter compared with a number or a time is read as that type, as
        // ClickHouse converts the literal it renders to (`id = {{String(id)}}` on an Int32).
        Expr::Param { name, ty: pty } if *pty.base() == ColumnType::String && convertible => (
            Expr::Param {
                name: name.clone(),
                ty: target.clone(),
            },
            target.clone(),
        ),
        _ => (x, ty),
    }
}

/// Functions taking one argument that map straight to a [`Func`].
fn simple_function(lower: &str) -> Option<Func> {
    Some(match lower {
        "plus" => Func::Plus,
        "minus" => Func::Minus,
        "multiply" => Func::Multiply,
        "divide" => Func::Divide,
        "modulo" => Func::Modulo,
        "intdiv" => Func::IntDiv,
        "range" => Func::Range,
        "urlhierarchy" => Func::UrlHierarchy,
        "extracturlparameter" => Func::ExtractUrlParameter,
        "decodeurlcomponent" => Func::DecodeUrlComponent,
        "decodeurlformcomponent" => Func::DecodeUrlFormComponent,
        "formatdatetime" => Func::FormatDateTime,
        "match" => Func::Match,
        "encodeurlcomponent" => Func::EncodeUrlComponent,
        "encodeurlformcomponent" => Func::EncodeUrlFormComponent,
        "arrayintersect" => Func::ArrayIntersect,
        "extract" => Func::Extract,
        "replaceregexpone" => Func::ReplaceRegexpOne,
        "replaceregexpall" => Func::ReplaceRegexpAll,
        "negate" => Func::Negate,
        "abs" => Func::Abs,
        "round" => Func::Round,
        "floor" => Func::Floor,
        "ceil" | "ceiling" => Func::Ceil,
        "greatest" => Func::Greatest,
        "least" => Func::Least,
        "equals" => Func::Eq,
        "notequals" => Func::NotEq,
        "less" => Func::Lt,
        "lessorequals" => Func::LtEq,
        "greater" => Func::Gt,
        "greaterorequals" => Func::GtEq,
        "and" => Func::And,
        "or" => Func::Or,
        "not" => Func::Not,
        "xor" => Func::Xor,
        "isnull" => Func::IsNull,
        "isnotnull" => Func::IsNotNull,
        "coalesce" => Func::Coalesce,
        "ifnull" => Func::IfNull,
        "nullif" => Func::NullIf,
        "assumenotnull" => Func::AssumeNotNull,
        "throwif" => Func::ThrowIf,
        "if" => Func::If,
        "multiif" => Func::MultiIf,
        "has" => Func::Has,
        "in" => Func::In,
        "notin" => Func::NotIn,
        "lower" | "lcase" => Func::Lower,
        "upper" | "ucase" => Func::Upper,
        "lowerutf8" => Func::LowerUtf8,
        "upperutf8" => Func::UpperUtf8,
        "concat" => Func::Concat,
        "length" => Func::Length,
        "lengthutf8" | "char_length" | "character_length" => Func::LengthUtf8,
        "empty" => Func::Empty,
        "notempty" => Func::NotEmpty,
        "like" => Func::Like,
        "notlike" => Func::NotLike,
        "ilike" => Func::ILike,
        "substring" | "substr" | "mid" => Func::Substring,
        "substringutf8" => Func::SubstringUtf8,
        "startswith" => Func::StartsWith,
        "endswith" => Func::EndsWith,
        "position" | "locate" => Func::Position,
        "replaceall" | "replace" => Func::ReplaceAll,
        "trim" | "trimboth" => Func::Trim,
        "trimleft" | "ltrim" => Func::TrimLeft,
        "trimright" | "rtrim" => Func::TrimRight,
        "splitbychar" => Func::SplitByChar,
        "splitbystring" => Func::SplitByString,
        "tostring" => Func::ToString,
        "todate" | "todate32" => Func::ToDate,
        "tostartofsecond" => Func::ToStartOf(Unit::Second),
        "tostartofminute" => Func::ToStartOf(Unit::Minute),
        "tostartofhour" => Func::ToStartOf(Unit::Hour),
        "tostartofday" => Func::ToStartOf(Unit::Day),
        "tostartofmonth" => Func::ToStartOf(Unit::Month),
        "tostartofquarter" => Func::ToStartOf(Unit::Quarter),
        "tostartofyear" => Func::ToStartOf(Unit::Year),
        "toyyyymm" => Func::ToYYYYMM,
        "toyyyymmdd" => Func::ToYYYYMMDD,
        "toyear" => Func::ToYear,
        "tomonth" => Func::ToMonth,
        "todayofmonth" => Func::ToDayOfMonth,
        "tohour" => Func::ToHour,
        "tominute" => Func::ToMinute,
        "tosecond" => Func::ToSecond,
        "tounixtimestamp" => Func::ToUnixTimestamp,
        "fromunixtimestamp64milli" => Func::FromUnixTimestamp64Milli,
        "tounixtimestamp64milli" => Func::ToUnixTimestamp64Milli,
        "addseconds" => Func::AddInterval(Unit::Second),
        "addminutes" => Func::AddInterval(Unit::Minute),
        "addhours" => Func::AddInterval(Unit::Hour),
        "adddays" => Func::AddInterval(Unit::Day),
        "addweeks" => Func::AddInterval(Unit::Week),
        "addmonths" => Func::AddInterval(Unit::Month),
        "addquarters" => Func::AddInterval(Unit::Quarter),
        "addyears" => Func::AddInterval(Unit::Year),
        "subtractseconds" => Func::SubtractInterval(Unit::Second),
        "subtractminutes" => Func::SubtractInterval(Unit::Minute),
        "subtracthours" => Func::SubtractInterval(Unit::Hour),
        "subtractdays" => Func::SubtractInterval(Unit::Day),
        "subtractweeks" => Func::SubtractInterval(Unit::Week),
        "subtractmonths" => Func::SubtractInterval(Unit::Month),
        "subtractquarters" => Func::SubtractInterval(Unit::Quarter),
        "subtractyears" => Func::SubtractInterval(Unit::Year),
        "array" => Func::Array,
        "tuple" => Func::Tuple,
        "arrayelement" => Func::ArrayElement,
        "indexof" => Func::IndexOf,
        // sipHash64 and xxHash64 are different hashes in ClickHouse: the values differ.
        "cityhash64" | "siphash64" | "xxhash64" => Func::CityHash64,
        "jsonextractstring" | "simplejsonextractstring" | "visitparamextractstring" => {
            Func::JsonExtractString
        }
        "jsonextractint" | "jsonextractuint" | "simplejsonextractint" => Func::JsonExtractInt,
        "jsonextractfloat" | "simplejsonextractfloat" => Func::JsonExtractFloat,
        "jsonextractbool" | "simplejsonextractbool" => Func::JsonExtractBool,
        "jsonextractraw" | "simplejsonextractraw" => Func::JsonExtractRaw,
        "jsonhas" | "simplejsonhas" => Func::JsonHas,
        "domain" => Func::Domain,
        "domainwithoutwww" => Func::DomainWithoutWww,
        "path" => Func::UrlPath,
        "tobool" => Func::Cast(ColumnType::Bool),
        "parsedatetimebesteffort" => Func::Cast(ColumnType::DateTime),
        "parsedatetimebesteffortornull" => {
            Func::Cast(ColumnType::Nullable(Box::new(ColumnType::DateTime)))
        }
        "parsedatetime64besteffort" => Func::Cast(ColumnType::DateTime64(3)),
        _ => return None,
    })
}

/// `toInt32`, `toFloat64OrZero`, `toDateOrNull`, ..: the cast they are.
fn conversion(lower: &str) -> Option<Func> {
    let (base, suffix) = ["orzero", "ornull", "ordefault"]
        .iter()
        .find_map(|s| lower.strip_suffix(s).map(|b| (b, *s)))
        .unwrap_or((lower, ""));
    let target = match base {
        "toint8" => ColumnType::Int(8),
        "toint16" => ColumnType::Int(16),
        "toint32" => ColumnType::Int(32),
        "toint64" => ColumnType::Int(64),
        "touint8" => ColumnType::UInt(8),
        "touint16" => ColumnType::UInt(16),
        "touint32" => ColumnType::UInt(32),
        "touint64" => ColumnType::UInt(64),
        "tofloat32" => ColumnType::Float32,
        "tofloat64" => ColumnType::Float64,
        "touuid" => ColumnType::Uuid,
        "todate" | "todate32" if !suffix.is_empty() => ColumnType::Date,
        "todatetime" if !suffix.is_empty() => ColumnType::DateTime,
        _ => return None,
    };
    Some(match suffix {
        "ornull" => Func::Cast(ColumnType::Nullable(Box::new(target))),
        "" => Func::Cast(target),
        _ => Func::CastOrZero(target),
    })
}

impl Planner<'_> {
    /// `[table.]name`: a select alias (unqualified), else a column of the scope; in group
    /// mode it must be a GROUP BY key.
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
            for (level, params) in self.lambdas.iter().enumerate().rev() {
                if let Some(index) = params.iter().position(|(p, _)| p == name) {
                    return Ok((Expr::LambdaArg { level, index }, params[index].1.clone()));
                }
            }
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

    /// Plans one expression with its type. In group mode, sub-expressions equal to a GROUP
    /// BY key become that key's column and aggregates are collected.
    pub(super) fn expr(
        &mut self,
        e: &ast::Expr,
        scope: &Scope,
        aliases: &Aliases,
        mode: &mut Mode<'_>,
    ) -> Result<(Expr, ColumnType), SqlError> {
        if let ast::Expr::Function(f) = e {
            if !self.array_joins.is_empty() && function_name(f).eq_ignore_ascii_case("arrayjoin") {
                let text = e.to_string();
                if let Some(&(_, col)) = self.array_joins.iter().find(|(t, _)| *t == text) {
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
            }
        }
        if let Mode::Groups { keys, .. } = mode {
            let plain_column = matches!(
                e,
                ast::Expr::Identifier(_) | ast::Expr::CompoundIdentifier(_)
            );
            if !plain_column && !contains_aggregate(e) {
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
            ast::Expr::CompoundIdentifier(parts) => match parts.as_slice() {
                [t, c] | [_, t, c] => {
                    self.column_ref(Some(&t.value), &c.value, e, scope, aliases, mode)
                }
                _ => Err(at(format!("cannot resolve '{e}'"), e)),
            },
            ast::Expr::Value(v) => self.value(&v.value, e),
            ast::Expr::TypedString(ts) => {
                let ty = cast_type(&ts.data_type.to_string()).map_err(|m| at(m, e))?;
                let text = match &ts.value.value {
                    ast::Value::SingleQuotedString(s) | ast::Value::DoubleQuotedString(s) => s,
                    _ => return Err(unsupported("this typed literal", e)),
                };
                let v = ty
                    .parse_text(text)
                    .ok_or_else(|| at(format!("'{text}' is not a {}", ty.name()), e))?;
                Ok((Expr::Literal(v), ty))
            }
            ast::Expr::Nested(inner) => self.expr(inner, scope, aliases, mode),
            ast::Expr::UnaryOp { op, expr } => {
                let (x, ty) = self.expr(expr, scope, aliases, mode)?;
                match op {
                    UnaryOperator::Not => {
                        let ty = Func::Not.result_type(&[ty]).map_err(|m| at(m, e))?;
                        Ok((Expr::call(Func::Not, vec![x]).fold(), ty))
                    }
                    UnaryOperator::Plus => Ok((x, ty)),
                    UnaryOperator::Minus => match x {
                        Expr::Literal(Value::UInt(u)) if u <= i64::MAX as u64 + 1 => {
                            let v = Value::Int((u as i64).wrapping_neg());
                            let ty = literal_type(&v);
                            Ok((Expr::Literal(v), ty))
                        }
                        Expr::Literal(Value::Float(f)) => {
                            Ok((Expr::Literal(Value::Float(F64(-f.0))), ColumnType::Float64))
                        }
                        x => {
                            let ty = Func::Negate.result_type(&[ty]).map_err(|m| at(m, e))?;
                            Ok((Expr::call(Func::Negate, vec![x]).fold(), ty))
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
                Ok((Expr::call(f, vec![a]).fold(), ColumnType::UInt(8)))
            }
            ast::Expr::In {
                expr,
                target: ast::InTarget::List(list),
                negated,
                ..
            } => self.in_list(expr, list, *negated, scope, aliases, mode),
            ast::Expr::In { .. } => Err(unsupported(
                "IN (subquery) of several columns outside a WHERE condition joined by AND",
                e,
            )),
            ast::Expr::Between {
                expr,
                negated,
                low,
                high,
            } => {
                let (x, tx) = self.expr(expr, scope, aliases, mode)?;
                let (lo, tl) = self.expr(low, scope, aliases, mode)?;
                let (hi, th) = self.expr(high, scope, aliases, mode)?;
                let (lo, _) = coerce_to(lo, tl, &tx, true);
                let (hi, _) = coerce_to(hi, th, &tx, true);
                let between = Expr::call(
                    Func::And,
                    vec![
                        Expr::call(Func::GtEq, vec![x.clone(), lo]),
                        Expr::call(Func::LtEq, vec![x, hi]),
                    ],
                );
                let ty = Func::And
                    .result_type(&[tx, ColumnType::UInt(8)])
                    .map_err(|m| at(m, e))?;
                Ok((
                    if *negated {
                        Expr::call(Func::Not, vec![between])
                    } else {
                        between
                    }
                    .fold(),
                    ty,
                ))
            }
            ast::Expr::Like {
                negated,
                expr,
                pattern,
                escape_char,
                any,
            }
            | ast::Expr::ILike {
                negated,
                expr,
                pattern,
                escape_char,
                any,
            } => {
                if *any || escape_char.is_some() {
                    return Err(unsupported("LIKE ANY or LIKE .. ESCAPE", e));
                }
                let ilike = matches!(e, ast::Expr::ILike { .. });
                let func = match (ilike, *negated) {
                    (false, false) => Func::Like,
                    (false, true) => Func::NotLike,
                    (true, _) => Func::ILike,
                };
                let (x, tx) = self.expr(expr, scope, aliases, mode)?;
                let (p, tp) = self.expr(pattern, scope, aliases, mode)?;
                let ty = func.result_type(&[tx, tp]).map_err(|m| at(m, e))?;
                let like = Expr::call(func, vec![x, p]);
                Ok((
                    if ilike && *negated {
                        Expr::call(Func::Not, vec![like])
                    } else {
                        like
                    }
                    .fold(),
                    ty,
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
                    Some(o) => Some(self.expr(o, scope, aliases, mode)?),
                    None => None,
                };
                for c in conditions {
                    let (cond, tc) = self.expr(&c.condition, scope, aliases, mode)?;
                    let cond = match &op {
                        Some((o, to)) => {
                            let (cond, _) = coerce_to(cond, tc, to, false);
                            Expr::call(Func::Eq, vec![o.clone(), cond])
                        }
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
                        ColumnType::Nullable(Box::new(ColumnType::String)),
                    ),
                };
                args.push(els);
                types.push(ty);
                Ok((Expr::call(Func::MultiIf, args), common_type(&types)))
            }
            ast::Expr::Cast {
                expr,
                data_type,
                format,
                ..
            } => {
                if format.is_some() {
                    return Err(unsupported("CAST .. FORMAT", e));
                }
                let (x, _) = self.expr(expr, scope, aliases, mode)?;
                let ty = cast_type(&data_type.to_string()).map_err(|m| at(m, e))?;
                Ok((Expr::call(Func::Cast(ty.clone()), vec![x]).fold(), ty))
            }
            ast::Expr::Array(arr) => {
                let (args, types) = self.exprs(&arr.elem, scope, aliases, mode)?;
                let ty = Func::Array.result_type(&types).map_err(|m| at(m, e))?;
                let inner = match &ty {
                    ColumnType::Array(inner) => (**inner).clone(),
                    other => other.clone(),
                };
                // Elements converted to the common type, so `[1, -1]` holds two Int values.
                let args = args
                    .into_iter()
                    .zip(&types)
                    .map(|(a, t)| {
                        if *t == inner || matches!(a, Expr::Literal(Value::Null)) {
                            a
                        } else {
                            Expr::call(Func::Cast(inner.clone()), vec![a]).fold()
                        }
                    })
                    .collect();
                Ok((Expr::call(Func::Array, args).fold(), ty))
            }
            ast::Expr::Tuple(items) => {
                let (args, types) = self.exprs(items, scope, aliases, mode)?;
                Ok((
                    Expr::call(Func::Tuple, args).fold(),
                    ColumnType::Tuple(types),
                ))
            }
            ast::Expr::CompoundFieldAccess { root, access_chain } => {
                let (mut x, mut ty) = self.expr(root, scope, aliases, mode)?;
                for a in access_chain {
                    match a {
                        ast::AccessExpr::Subscript(ast::Subscript::Index { index }) => {
                            let (i, ti) = self.expr(index, scope, aliases, mode)?;
                            ty = Func::ArrayElement
                                .result_type(&[ty, ti])
                                .map_err(|m| at(m, e))?;
                            x = Expr::call(Func::ArrayElement, vec![x, i]);
                        }
                        ast::AccessExpr::Dot(ast::Expr::Value(v)) => {
                            let n = match &v.value {
                                ast::Value::Number(n, _) => n.parse::<usize>().ok(),
                                _ => None,
                            }
                            .filter(|n| *n > 0)
                            .ok_or_else(|| unsupported("this field access", e))?;
                            let f = Func::TupleElement(n);
                            ty = f.result_type(&[ty]).map_err(|m| at(m, e))?;
                            x = Expr::call(f, vec![x]);
                        }
                        _ => return Err(unsupported("this field access", e)),
                    }
                }
                Ok((x.fold(), ty))
            }
            ast::Expr::Floor { expr, field } | ast::Expr::Ceil { expr, field } => {
                if !matches!(
                    field,
                    ast::CeilFloorKind::DateTimeField(ast::DateTimeField::NoDateTime)
                ) {
                    return Err(unsupported("floor/ceil with a scale or unit", e));
                }
                let func = if matches!(e, ast::Expr::Floor { .. }) {
                    Func::Floor
                } else {
                    Func::Ceil
                };
                self.call(func, &[expr.as_ref()], e, scope, aliases, mode)
            }
            ast::Expr::Substring {
                expr,
                substring_from,
                substring_for,
                ..
            } => {
                let mut args: Vec<&ast::Expr> = vec![expr];
                args.extend(substring_from.as_deref());
                args.extend(substring_for.as_deref());
                self.call(Func::Substring, &args, e, scope, aliases, mode)
            }
            ast::Expr::Trim {
                expr,
                trim_where,
                trim_what,
                trim_characters,
            } => {
                let spaces = match trim_what.as_deref() {
                    None => true,
                    Some(ast::Expr::Value(v)) => {
                        matches!(&v.value, ast::Value::SingleQuotedString(s) if s == " ")
                    }
                    _ => false,
                };
                if !spaces || trim_characters.is_some() {
                    return Err(unsupported("trim of characters other than spaces", e));
                }
                let func = match trim_where {
                    Some(ast::TrimWhereField::Leading) => Func::TrimLeft,
                    Some(ast::TrimWhereField::Trailing) => Func::TrimRight,
                    _ => Func::Trim,
                };
                self.call(func, &[expr.as_ref()], e, scope, aliases, mode)
            }
            ast::Expr::Position { expr, r#in } => self.call(
                Func::Position,
                &[r#in.as_ref(), expr.as_ref()],
                e,
                scope,
                aliases,
                mode,
            ),
            ast::Expr::Extract { field, expr, .. } => {
                let func = match field {
                    ast::DateTimeField::Year => Func::ToYear,
                    ast::DateTimeField::Month => Func::ToMonth,
                    ast::DateTimeField::Day => Func::ToDayOfMonth,
                    ast::DateTimeField::Hour => Func::ToHour,
                    ast::DateTimeField::Minute => Func::ToMinute,
                    ast::DateTimeField::Second => Func::ToSecond,
                    other => return Err(unsupported(&format!("EXTRACT({other})"), e)),
                };
                self.call(func, &[expr.as_ref()], e, scope, aliases, mode)
            }
            ast::Expr::Function(f) => self.function(f, e, scope, aliases, mode),
            ast::Expr::Interval(_) => Err(at(
                "INTERVAL is only supported added to or subtracted from a date or time",
                e,
            )),
            // A scalar subquery over constants (a node of dates computed from today(), say)
            // is its value; others are not maintained yet.
            ast::Expr::Subquery(q) => {
                let sub = self.query(q, false)?;
                match (sub.plan.constant_rows(), sub.visible) {
                    (Some(rows), 1) => {
                        let ty = sub.plan.columns[0].ty.clone();
                        let v = rows.first().and_then(|r| r.first().cloned());
                        Ok((Expr::Literal(v.unwrap_or(Value::Null)), ty))
                    }
                    _ => Err(unsupported(
                        "scalar subqueries (other than one value computed from constants)",
                        e,
                    )),
                }
            }
            ast::Expr::Exists { .. } => Err(unsupported("EXISTS", e)),
            ast::Expr::Lambda(_) => Err(unsupported("lambda functions", e)),
            other => Err(unsupported(&format!("expression '{other}'"), other)),
        }
    }

    /// Plans several expressions.
    fn exprs(
        &mut self,
        items: &[ast::Expr],
        scope: &Scope,
        aliases: &Aliases,
        mode: &mut Mode<'_>,
    ) -> Result<(Vec<Expr>, Vec<ColumnType>), SqlError> {
        let mut args = Vec::new();
        let mut types = Vec::new();
        for item in items {
            let (x, t) = self.expr(item, scope, aliases, mode)?;
            args.push(x);
            types.push(t);
        }
        Ok((args, types))
    }

    /// `func(args)` with its arguments planned and its type checked, folded when constant.
    fn call(
        &mut self,
        func: Func,
        args: &[&ast::Expr],
        node: &ast::Expr,
        scope: &Scope,
        aliases: &Aliases,
        mode: &mut Mode<'_>,
    ) -> Result<(Expr, ColumnType), SqlError> {
        let mut xs = Vec::new();
        let mut types = Vec::new();
        for a in args {
            let (x, t) = self.expr(a, scope, aliases, mode)?;
            xs.push(x);
            types.push(t);
        }
        let ty = func.result_type(&types).map_err(|m| at(m, node))?;
        Ok((Expr::call(func, xs).fold(), ty))
    }

    /// `x [NOT] IN (list)`; `x IN $array` (an array parameter) is `has($array, x)`.
    fn in_list(
        &mut self,
        x: &ast::Expr,
        list: &[ast::Expr],
        negated: bool,
        scope: &Scope,
        aliases: &Aliases,
        mode: &mut Mode<'_>,
    ) -> Result<(Expr, ColumnType), SqlError> {
        let (x, tx) = self.expr(x, scope, aliases, mode)?;
        let (items, types) = self.exprs(list, scope, aliases, mode)?;
        let ty = Func::In
            .result_type(&[tx.clone(), ColumnType::UInt(8)])
            .unwrap_or(ColumnType::UInt(8));
        if let ([array], [ColumnType::Array(_)]) = (items.as_slice(), types.as_slice()) {
            if !matches!(tx.base(), ColumnType::Array(_)) {
                // `id IN {{Array(ids, 'String')}}` on a number column reads the strings as
                // numbers, as ClickHouse converts them.
                let array = match array {
                    Expr::Literal(Value::Array(items))
                        if tx.base().is_numeric() || is_time(tx.base()) =>
                    {
                        Expr::Literal(Value::Array(
                            items
                                .iter()
                                .map(|v| match v {
                                    Value::String(s) => {
                                        tx.base().parse_text(s).unwrap_or_else(|| v.clone())
                                    }
                                    other => other.clone(),
                                })
                                .collect(),
                        ))
                    }
                    Expr::Param { name, ty }
                        if matches!(ty.base(), ColumnType::Array(inner) if *inner.base() == ColumnType::String)
                            && (tx.base().is_numeric() || is_time(tx.base())) =>
                    {
                        Expr::Param {
                            name: name.clone(),
                            ty: ColumnType::Array(Box::new(tx.base().clone())),
                        }
                    }
                    other => other.clone(),
                };
                let has = Expr::call(Func::Has, vec![array, x]);
                let e = if negated {
                    Expr::call(Func::Not, vec![has])
                } else {
                    has
                };
                return Ok((e.fold(), ty));
            }
        }
        let mut args = vec![x];
        for (item, t) in items.into_iter().zip(types) {
            args.push(coerce_to(item, t, &tx, false).0);
        }
        let func = if negated { Func::NotIn } else { Func::In };
        Ok((Expr::call(func, args).fold(), ty))
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
                let name = p.trim_start_matches(['$', ':', '?', '@']).to_string();
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

    /// Binary operators; `t ± INTERVAL n unit` is date arithmetic.
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
        if let BinaryOperator::Plus | BinaryOperator::Minus = op {
            let interval = match (interval_of(right), interval_of(left)) {
                (Some(iv), _) => Some((left, iv)),
                (None, Some(iv)) if *op == BinaryOperator::Plus => Some((right, iv)),
                _ => None,
            };
            if let Some((t, (value, unit))) = interval {
                let unit = unit.map_err(|m| at(m, node))?;
                let (t, ty) = self.expr(t, scope, aliases, mode)?;
                let (n, tn) = self.expr(value, scope, aliases, mode)?;
                let f = if *op == BinaryOperator::Plus {
                    Func::AddInterval(unit)
                } else {
                    Func::SubtractInterval(unit)
                };
                if !is_time(&ty) {
                    return Err(at(
                        format!(
                            "INTERVAL added to a {} value (needs a date or time)",
                            ty.name()
                        ),
                        node,
                    ));
                }
                let ty = f.result_type(&[ty, tn]).map_err(|m| at(m, node))?;
                return Ok((Expr::call(f, vec![t, n]).fold(), ty));
            }
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
            BinaryOperator::MyIntegerDivide => Func::IntDiv,
            other => return Err(unsupported(&format!("operator {other}"), node)),
        };
        let (mut a, mut ta) = self.expr(left, scope, aliases, mode)?;
        let (mut b, mut tb) = self.expr(right, scope, aliases, mode)?;
        if matches!(
            func,
            Func::Eq | Func::NotEq | Func::Lt | Func::LtEq | Func::Gt | Func::GtEq
        ) {
            let ordering = !matches!(func, Func::Eq | Func::NotEq);
            (a, ta) = coerce_to(a, ta, &tb, ordering);
            (b, tb) = coerce_to(b, tb, &ta, ordering);
        }
        // `a AND b AND c` is one call.
        let mut args = Vec::new();
        for x in [a, b] {
            match x {
                Expr::Call {
                    func: f,
                    args: inner,
                } if f == func && matches!(f, Func::And | Func::Or) => args.extend(inner),
                x => args.push(x),
            }
        }
        let ty = func.result_type(&[ta, tb]).map_err(|m| at(m, node))?;
        Ok((Expr::call(func, args).fold(), ty))
    }

    /// A function call: an aggregate, a `-State`/`-Merge` combinator, or a scalar function.
    fn function(
        &mut self,
        f: &ast::Function,
        node: &ast::Expr,
        scope: &Scope,
        aliases: &Aliases,
        mode: &mut Mode<'_>,
    ) -> Result<(Expr, ColumnType), SqlError> {
        if f.over.is_some() {
            let text = node.to_string();
            if let Some((_, column, ty)) = self.windows.iter().find(|(t, ..)| *t == text) {
                return Ok((Expr::Column(*column), ty.clone()));
            }
            return Err(unsupported(
                "window functions (OVER) outside the select list, or over the groups of a select list with * (compute them in a subquery first)",
                node,
            ));
        }
        if f.filter.is_some() {
            return Err(unsupported(
                "FILTER (WHERE ..) on aggregates (use the -If combinator)",
                node,
            ));
        }
        if f.null_treatment.is_some() || !f.within_group.is_empty() {
            return Err(unsupported("IGNORE/RESPECT NULLS or WITHIN GROUP", node));
        }
        let name = function_name(f);
        let lower = name.to_ascii_lowercase();
        if let Some((agg, with_if)) = aggregate_of(&name) {
            return self.aggregate(f, agg, with_if, node, scope, aliases, mode);
        }
        if let Some(sql) = {
            let args: Vec<String> = function_args(f)?.iter().map(|a| a.to_string()).collect();
            combinator_sql(&name, &args)
        } {
            let rewritten = Parser::new(&ClickHouseDialect {})
                .try_with_sql(&sql)
                .and_then(|mut p| p.parse_expr())
                .map_err(|err| at(format!("{name}: {err}"), node))?;
            return self.expr(&rewritten, scope, aliases, mode);
        }
        if matches!(lower.as_str(), "now" | "now64" | "today" | "yesterday") {
            return Err(at(
                format!("{name}() is only supported in WHERE comparisons (temporal filters)"),
                node,
            ));
        }
        if !matches!(&f.parameters, FunctionArguments::None) {
            return Err(unsupported(&format!("parameters of {name}"), node));
        }
        let args_ast = function_args(f)?;
        if let Some(kind) = HigherOrder::parse(&lower) {
            return self.higher_order(kind, &args_ast, node, scope, aliases, mode);
        }
        match lower.as_str() {
            "datediff" | "date_diff" | "timestampdiff" | "age" => {
                let [unit, a, b, ..] = args_ast.as_slice() else {
                    return Err(at(format!("{name} takes (unit, start, end)"), node));
                };
                let unit = match unit {
                    ast::Expr::Value(v) => match &v.value {
                        ast::Value::SingleQuotedString(s) => Unit::parse(s),
                        _ => None,
                    },
                    ast::Expr::Identifier(i) => Unit::parse(&i.value),
                    _ => None,
                }
                .ok_or_else(|| at(format!("{name} needs a unit such as 'hour'"), *unit))?;
                if args_ast.len() > 3 {
                    return Err(unsupported(&format!("{name} with a time zone"), node));
                }
                return self.call(Func::DateDiff(unit), &[a, b], node, scope, aliases, mode);
            }
            "tostartofinterval" => {
                let [t, iv] = args_ast.as_slice() else {
                    return Err(at("toStartOfInterval takes (time, INTERVAL n unit)", node));
                };
                let Some((value, unit)) = interval_of(iv) else {
                    return Err(at("toStartOfInterval needs an INTERVAL", *iv));
                };
                let unit = unit.map_err(|m| at(m, *iv))?;
                return self.call(
                    Func::ToStartOf(unit),
                    &[t, value],
                    node,
                    scope,
                    aliases,
                    mode,
                );
            }
            // `timestampAdd(t, INTERVAL n unit)`, `timestampSub(..)`.
            "timestampadd" | "timestamp_add" | "timestampsub" | "timestamp_sub"
                if args_ast.len() == 2 =>
            {
                let (t, iv) = (args_ast[0], args_ast[1]);
                let Some((value, unit)) = interval_of(iv) else {
                    return Err(at(format!("{name} takes (time, INTERVAL n unit)"), node));
                };
                let unit = unit.map_err(|m| at(m, iv))?;
                let func = if lower.contains("add") {
                    Func::AddInterval(unit)
                } else {
                    Func::SubtractInterval(unit)
                };
                return self.call(func, &[t, value], node, scope, aliases, mode);
            }
            // `date_add(unit, n, t)`, `date_sub(DAY, 7, now())`.
            "date_add" | "dateadd" | "date_sub" | "datesub" if args_ast.len() == 3 => {
                let unit = match args_ast[0] {
                    ast::Expr::Value(v) => match &v.value {
                        ast::Value::SingleQuotedString(s) => Unit::parse(s),
                        _ => None,
                    },
                    ast::Expr::Identifier(i) => Unit::parse(&i.value),
                    _ => None,
                }
                .ok_or_else(|| at(format!("{name} needs a unit such as DAY"), args_ast[0]))?;
                let func = if lower.contains("add") {
                    Func::AddInterval(unit)
                } else {
                    Func::SubtractInterval(unit)
                };
                return self.call(
                    func,
                    &[args_ast[2], args_ast[1]],
                    node,
                    scope,
                    aliases,
                    mode,
                );
            }
            "cast" | "accuratecast" | "accuratecastornull" | "accuratecastordefault" => {
                let target = match args_ast.as_slice() {
                    [_, ast::Expr::Value(v)] => match &v.value {
                        ast::Value::SingleQuotedString(t) => Some(t),
                        _ => None,
                    },
                    _ => None,
                }
                .ok_or_else(|| at(format!("{name} takes (value, 'Type')"), node))?;
                let ty = cast_type(target).map_err(|m| at(m, node))?;
                let func = match lower.as_str() {
                    "accuratecastornull" => Func::Cast(ColumnType::Nullable(Box::new(ty))),
                    "accuratecastordefault" => Func::CastOrZero(ty),
                    _ => Func::Cast(ty),
                };
                return self.call(func, &args_ast[..1], node, scope, aliases, mode);
            }
            // `JSON_VALUE(doc, '$.a.b')`: the scalar at a JSONPath of keys, as a string.
            "json_value" => {
                let [doc, path] = args_ast.as_slice() else {
                    return Err(at("JSON_VALUE takes (json, '$.path')", node));
                };
                let ast::Expr::Value(v) = path else {
                    return Err(at(
                        "JSON_VALUE needs a constant path such as '$.a.b'",
                        *path,
                    ));
                };
                let ast::Value::SingleQuotedString(p) = &v.value else {
                    return Err(at(
                        "JSON_VALUE needs a constant path such as '$.a.b'",
                        *path,
                    ));
                };
                let keys: Vec<&str> = match p.strip_prefix('$') {
                    Some(rest) => rest.split('.').filter(|k| !k.is_empty()).collect(),
                    None => return Err(at("a JSONPath starts with $", *path)),
                };
                if keys.iter().any(|k| k.contains('[') || k.contains('*')) {
                    return Err(unsupported(
                        "JSON_VALUE paths with indexes or wildcards",
                        *path,
                    ));
                }
                let (doc, ty) = self.expr(doc, scope, aliases, mode)?;
                let mut args = vec![doc];
                args.extend(keys.iter().map(|k| Expr::Literal(Value::str(k))));
                let ty = Func::JsonExtractString
                    .result_type(&[ty])
                    .map_err(|m| at(m, node))?;
                return Ok((Expr::call(Func::JsonExtractString, args), ty));
            }
            "arrayjoin" => {
                return Err(unsupported(
                    "arrayJoin outside the select list (alias it there and use the alias)",
                    node,
                ))
            }
            _ => {}
        }
        let (args, types) = {
            let mut args = Vec::new();
            let mut types = Vec::new();
            for a in &args_ast {
                let (x, t) = self.expr(a, scope, aliases, mode)?;
                args.push(x);
                types.push(t);
            }
            (args, types)
        };
        let constant = |i: usize| match args.get(i) {
            Some(Expr::Literal(v)) => v.as_i64(),
            _ => None,
        };
        let (func, keep) = match lower.as_str() {
            "todatetime" => (Func::ToDateTime, 1),
            "todatetime64" => {
                let p = constant(1).unwrap_or(3).clamp(0, 9) as u8;
                (Func::ToDateTime64(p), 1)
            }
            "tostartoffiveminute" | "tostartoffiveminutes" => {
                return self.every(Unit::Minute, 5, args, types, node)
            }
            "tostartoftenminutes" => return self.every(Unit::Minute, 10, args, types, node),
            "tostartoffifteenminutes" => return self.every(Unit::Minute, 15, args, types, node),
            // Mode 0 (the default) starts weeks on Sunday, odd modes on Monday.
            "tostartofweek" if constant(1).is_some_and(|m| m % 2 == 1) => {
                return self.every(Unit::Week, 1, args, types, node)
            }
            "tostartofweek" => (Func::ToStartOf(Unit::Week), 1),
            "tomonday" => return self.every(Unit::Week, 1, args, types, node),
            "todayofweek" => (Func::ToDayOfWeek, 1),
            "tupleelement" => {
                let i = constant(1)
                    .filter(|i| *i > 0)
                    .ok_or_else(|| at("tupleElement needs a constant position", node))?;
                (Func::TupleElement(i as usize), 1)
            }
            // Times are UTC instants; converting to UTC changes nothing.
            "totimezone" => match args.get(1) {
                Some(Expr::Literal(Value::String(tz)))
                    if matches!(tz.as_str(), "UTC" | "Etc/UTC" | "GMT") =>
                {
                    return Ok((args[0].clone(), types[0].clone()))
                }
                _ => {
                    return Err(unsupported(
                        "toTimeZone to a zone other than UTC (Petrel computes in UTC)",
                        node,
                    ))
                }
            },
            "tolowcardinality" | "identity" if args.len() == 1 => {
                return Ok((args[0].clone(), types[0].clone()))
            }
            other => match simple_function(other).or_else(|| conversion(other)) {
                Some(func) => (func, usize::MAX),
                None => return Err(unsupported(&format!("function {name}"), node)),
            },
        };
        let (args, types): (Vec<Expr>, Vec<ColumnType>) = if keep < args.len() {
            (args[..keep].to_vec(), types[..keep].to_vec())
        } else {
            (args, types)
        };
        let ty = func.result_type(&types).map_err(|m| at(m, node))?;
        Ok((Expr::call(func, args).fold(), ty))
    }

    /// A window function call over the rows of `scope`: its partition, order, function and
    /// result type.
    pub(super) fn window_function(
        &mut self,
        call: &ast::Expr,
        scope: &Scope,
        aliases: &Aliases,
    ) -> Result<(Vec<Expr>, Vec<SortKey>, WindowFunction, ColumnType), SqlError> {
        let ast::Expr::Function(f) = call else {
            return Err(at("expected a window function", call));
        };
        let spec = match &f.over {
            Some(ast::WindowType::WindowSpec(spec)) => spec,
            _ => return Err(unsupported("named windows (OVER w)", call)),
        };
        if spec.window_frame.is_some() {
            return Err(unsupported(
                "window frames (ROWS/RANGE BETWEEN ..): the default frame is supported",
                call,
            ));
        }
        let mut partition_by = Vec::new();
        for e in &spec.partition_by {
            partition_by.push(self.expr(e, scope, aliases, &mut Mode::Rows)?.0);
        }
        let mut order_by = Vec::new();
        for o in &spec.order_by {
            let (x, _) = self.expr(&o.expr, scope, aliases, &mut Mode::Rows)?;
            order_by.push(super::sort_key(x, o));
        }
        let name = function_name(f);
        let ranking = match name.to_ascii_lowercase().as_str() {
            "row_number" => Some(WindowFunction::RowNumber),
            "rank" => Some(WindowFunction::Rank),
            "dense_rank" | "denserank" => Some(WindowFunction::DenseRank),
            _ => None,
        };
        if let Some(function) = ranking {
            return Ok((partition_by, order_by, function, ColumnType::UInt(64)));
        }
        let Some((agg, with_if)) = aggregate_of(&name) else {
            return Err(unsupported(&format!("{name} as a window function"), call));
        };
        if !matches!(
            agg,
            AggFunc::Sum
                | AggFunc::Count
                | AggFunc::Avg
                | AggFunc::Min
                | AggFunc::Max
                | AggFunc::Any
                | AggFunc::AnyLast
        ) {
            return Err(unsupported(&format!("{name} as a window function"), call));
        }
        let mut aggregates = Vec::new();
        let mut agg_columns = Vec::new();
        let mut mode = Mode::Groups {
            keys: &[],
            aggregates: &mut aggregates,
            agg_columns: &mut agg_columns,
        };
        let (_, ty) = self.aggregate(f, agg, with_if, call, scope, aliases, &mut mode)?;
        let aggregate = aggregates
            .pop()
            .ok_or_else(|| at("expected an aggregate", call))?;
        Ok((
            partition_by,
            order_by,
            WindowFunction::Aggregate(Box::new(aggregate)),
            ty,
        ))
    }

    /// `arrayMap(x -> body, arr)` and the other functions taking a lambda: the arrays are
    /// planned first, then the body with the lambda's parameters typed as their elements.
    fn higher_order(
        &mut self,
        kind: HigherOrder,
        args_ast: &[&ast::Expr],
        node: &ast::Expr,
        scope: &Scope,
        aliases: &Aliases,
        mode: &mut Mode<'_>,
    ) -> Result<(Expr, ColumnType), SqlError> {
        let (Some(ast::Expr::Lambda(lambda)), arrays) =
            (args_ast.first(), &args_ast[1.min(args_ast.len())..])
        else {
            return Err(at(
                format!("{} takes a lambda (x -> ..) and arrays", kind.name()),
                node,
            ));
        };
        if arrays.is_empty() || lambda.params.len() != arrays.len() {
            return Err(at(
                format!(
                    "{}: the lambda takes one parameter per array ({} parameter(s), {} array(s))",
                    kind.name(),
                    lambda.params.len(),
                    arrays.len()
                ),
                node,
            ));
        }
        let mut args = vec![Expr::Literal(Value::Null)];
        let mut types = vec![ColumnType::String];
        let mut params = Vec::new();
        for (a, p) in arrays.iter().zip(lambda.params.iter()) {
            let (x, t) = self.expr(a, scope, aliases, mode)?;
            let element = match t.base() {
                ColumnType::Array(inner) => (**inner).clone(),
                other => {
                    return Err(at(
                        format!("{} needs arrays, not {}", kind.name(), other.name()),
                        *a,
                    ))
                }
            };
            params.push((p.name.value.clone(), element));
            args.push(x);
            types.push(t);
        }
        let level = self.lambdas.len();
        self.lambdas.push(params);
        let body = self.expr(&lambda.body, scope, aliases, mode);
        self.lambdas.pop();
        let (body, body_type) = body?;
        args[0] = body;
        types[0] = body_type;
        let func = Func::HigherOrder { kind, level };
        let ty = func.result_type(&types).map_err(|m| at(m, node))?;
        Ok((Expr::call(func, args).fold(), ty))
    }

    /// `toStartOf..(t)` as an interval of n units.
    fn every(
        &mut self,
        unit: Unit,
        n: u64,
        args: Vec<Expr>,
        types: Vec<ColumnType>,
        node: &ast::Expr,
    ) -> Result<(Expr, ColumnType), SqlError> {
        let (Some(t), Some(ty)) = (args.into_iter().next(), types.into_iter().next()) else {
            return Err(at("needs a time argument", node));
        };
        let func = Func::ToStartOf(unit);
        let ty = func
            .result_type(&[ty, ColumnType::UInt(8)])
            .map_err(|m| at(m, node))?;
        Ok((
            Expr::call(func, vec![t, Expr::Literal(Value::UInt(n))]).fold(),
            ty,
        ))
    }

    /// An aggregate call in group mode: collected once (equal calls share a column) and read
    /// as its output column.
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
        let fname = function_name(f);
        let Mode::Groups {
            keys,
            aggregates,
            agg_columns,
        } = mode
        else {
            return Err(at(
                format!("aggregate function {fname} is not allowed here"),
                node,
            ));
        };
        let nkeys = keys.len();
        let args_ast = function_args(f)?;
        let mut args = Vec::new();
        let mut types = Vec::new();
        // `uniq(*)`: the distinct rows, over every column `*` lists.
        if args_ast.is_empty()
            && matches!(agg, AggFunc::Uniq | AggFunc::UniqExact)
            && has_wildcard(f)
        {
            for (i, c) in scope.columns.iter().enumerate() {
                if c.in_star && !c.hidden {
                    args.push(Expr::Column(i));
                    types.push(c.ty.clone());
                }
            }
        }
        for a in &args_ast {
            if contains_aggregate(a) {
                return Err(at("aggregate functions cannot be nested", *a));
            }
            let (x, t) = self.expr(a, scope, aliases, &mut Mode::Rows)?;
            args.push(x);
            types.push(t);
        }
        let filter = if with_if {
            types.pop();
            Some(
                args.pop()
                    .ok_or_else(|| at("the -If combinator needs a condition argument", node))?,
            )
        } else {
            None
        };
        let mut params = Vec::new();
        if let FunctionArguments::List(list) = &f.parameters {
            for p in &list.args {
                let FunctionArg::Unnamed(FunctionArgExpr::Expr(pe)) = p else {
                    return Err(at("aggregate parameters must be constants", node));
                };
                match self
                    .expr(pe, &Scope::default(), &Aliases::new(), &mut Mode::Rows)?
                    .0
                {
                    Expr::Literal(v) => params.push(v),
                    _ => return Err(at("aggregate parameters must be constants", pe)),
                }
            }
        }
        let mut func = agg;
        if is_distinct(f) {
            if agg != AggFunc::Count {
                return Err(unsupported(&format!("DISTINCT inside {fname}"), node));
            }
            func = AggFunc::UniqExact;
        }
        if func == AggFunc::Quantile {
            if fname.to_ascii_lowercase().starts_with("median") || params.is_empty() {
                params = vec![Value::Float(F64(0.5))];
            }
            if params.len() != 1 || params[0].as_f64().is_none_or(|p| !(0.0..=1.0).contains(&p)) {
                return Err(at(
                    format!("{fname} takes one level between 0 and 1, as in quantile(0.9)(x)"),
                    node,
                ));
            }
        }
        let arity_ok = match func {
            AggFunc::Count => args.len() <= 1 || is_distinct(f),
            AggFunc::ArgMax | AggFunc::ArgMin => args.len() == 2,
            AggFunc::Uniq | AggFunc::UniqExact => !args.is_empty(),
            _ => args.len() == 1,
        };
        if !arity_ok {
            return Err(at(
                format!("{fname}: wrong number of arguments ({})", args.len()),
                node,
            ));
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
            AggFunc::Avg => {
                if !arg_ty.is_numeric() {
                    return Err(at(format!("{fname} of {} values", arg_ty.name()), node));
                }
                ColumnType::Float64
            }
            // NULL over a group whose values are all NULL, as ClickHouse answers.
            AggFunc::Quantile => {
                if !arg_ty.is_numeric() {
                    return Err(at(format!("{fname} of {} values", arg_ty.name()), node));
                }
                if arg_ty.is_nullable() {
                    ColumnType::Nullable(Box::new(ColumnType::Float64))
                } else {
                    ColumnType::Float64
                }
            }
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
                agg_columns.push(petrel_value::Column {
                    name: column_name(node),
                    ty: ty.clone(),
                });
                aggregates.len() - 1
            }
        };
        Ok((Expr::Column(nkeys + index), ty))
    }
}
