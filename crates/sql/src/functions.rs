//! The scalar function catalog: what each function is called in SQL, what it returns for its
//! argument types (ClickHouse's rules, simplified where noted), and how it evaluates.
//!
//! Evaluation is infallible: a value that cannot be computed (a cast of a bad string, an
//! integer division by zero) yields NULL, where ClickHouse would fail the whole query.

use std::cmp::Ordering;

use petrel_value::{time, ColumnType, Value, F64};

/// A calendar unit of `INTERVAL`, `toStartOfInterval`, `dateDiff` and date arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Unit {
    /// Seconds.
    Second,
    /// Minutes.
    Minute,
    /// Hours.
    Hour,
    /// Days.
    Day,
    /// Weeks.
    Week,
    /// Months.
    Month,
    /// Quarters.
    Quarter,
    /// Years.
    Year,
}

impl Unit {
    /// Parses a unit name (`hour`, `HOURS`, `hh`, ..).
    pub fn parse(name: &str) -> Option<Unit> {
        Some(match name.to_ascii_lowercase().trim_end_matches('s') {
            "second" | "ss" | "s" => Unit::Second,
            "minute" | "mi" | "n" => Unit::Minute,
            "hour" | "hh" | "h" => Unit::Hour,
            "day" | "dd" | "d" => Unit::Day,
            "week" | "wk" | "ww" => Unit::Week,
            "month" | "mm" | "m" => Unit::Month,
            "quarter" | "qq" | "q" => Unit::Quarter,
            "year" | "yyyy" | "yy" => Unit::Year,
            _ => return None,
        })
    }

    /// Seconds in one unit, for the fixed-length units.
    fn seconds(self) -> Option<i64> {
        Some(match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3600,
            Unit::Day => 86_400,
            Unit::Week => 7 * 86_400,
            _ => return None,
        })
    }

    /// Months in one unit, for the calendar units.
    fn months(self) -> Option<i64> {
        Some(match self {
            Unit::Month => 1,
            Unit::Quarter => 3,
            Unit::Year => 12,
            _ => return None,
        })
    }
}

/// A scalar function.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Func {
    /// `a + b`.
    Plus,
    /// `a - b`.
    Minus,
    /// `a * b`.
    Multiply,
    /// `a / b` (always a float).
    Divide,
    /// `a % b`.
    Modulo,
    /// `intDiv(a, b)`.
    IntDiv,
    /// `-a`.
    Negate,
    /// `abs(a)`.
    Abs,
    /// `round(x[, n])`: ties to even, as ClickHouse rounds floats.
    Round,
    /// `floor(x)`.
    Floor,
    /// `ceil(x)`.
    Ceil,
    /// `greatest(..)`.
    Greatest,
    /// `least(..)`.
    Least,
    /// `a = b`.
    Eq,
    /// `a != b`.
    NotEq,
    /// `a < b`.
    Lt,
    /// `a <= b`.
    LtEq,
    /// `a > b`.
    Gt,
    /// `a >= b`.
    GtEq,
    /// `a AND b AND ..`.
    And,
    /// `a OR b OR ..`.
    Or,
    /// `NOT a`.
    Not,
    /// `xor(a, b)`.
    Xor,
    /// `isNull(a)`.
    IsNull,
    /// `isNotNull(a)`.
    IsNotNull,
    /// `coalesce(..)`.
    Coalesce,
    /// `ifNull(a, b)`.
    IfNull,
    /// `nullIf(a, b)`.
    NullIf,
    /// `assumeNotNull(a)`.
    AssumeNotNull,
    /// `if(c, a, b)`.
    If,
    /// `multiIf(c1, a1, .., else)`; CASE WHEN plans to it.
    MultiIf,
    /// `x IN (v1, v2, ..)`: first argument x, the rest the list.
    In,
    /// `x NOT IN (..)`.
    NotIn,
    /// `has(array, x)`.
    Has,
    /// `lower(s)`.
    Lower,
    /// `upper(s)`.
    Upper,
    /// `concat(..)`.
    Concat,
    /// `length(s or array)`.
    Length,
    /// `empty(s or array)`.
    Empty,
    /// `notEmpty(s or array)`.
    NotEmpty,
    /// `s LIKE p`.
    Like,
    /// `s NOT LIKE p`.
    NotLike,
    /// `s ILIKE p`.
    ILike,
    /// `substring(s, offset[, length])` (1-based).
    Substring,
    /// `startsWith(s, p)`.
    StartsWith,
    /// `endsWith(s, p)`.
    EndsWith,
    /// `position(s, needle)` (1-based, 0 when absent).
    Position,
    /// `replaceAll(s, from, to)`.
    ReplaceAll,
    /// `trim(s)` / `trimBoth`.
    Trim,
    /// `trimLeft(s)`.
    TrimLeft,
    /// `trimRight(s)`.
    TrimRight,
    /// `splitByChar(sep, s)`.
    SplitByChar,
    /// `splitByString(sep, s)`.
    SplitByString,
    /// `toString(x)`.
    ToString,
    /// `toDate(x)`.
    ToDate,
    /// `toDateTime(x)`.
    ToDateTime,
    /// `toDateTime64(x, p)`: the precision is part of the function.
    ToDateTime64(u8),
    /// `toStartOfMinute`, `toStartOfHour`, .. : truncation to a unit (n = 1), or to n units
    /// (`toStartOfFiveMinutes`, `toStartOfInterval(t, INTERVAL n unit)`: second argument n).
    ToStartOf(Unit),
    /// `toYYYYMM(t)`.
    ToYYYYMM,
    /// `toYYYYMMDD(t)`.
    ToYYYYMMDD,
    /// `toYear(t)`.
    ToYear,
    /// `toMonth(t)`.
    ToMonth,
    /// `toDayOfMonth(t)`.
    ToDayOfMonth,
    /// `toDayOfWeek(t)` (Monday = 1).
    ToDayOfWeek,
    /// `toHour(t)`.
    ToHour,
    /// `toMinute(t)`.
    ToMinute,
    /// `toUnixTimestamp(t)`.
    ToUnixTimestamp,
    /// `fromUnixTimestamp64Milli(ms)`.
    FromUnixTimestamp64Milli,
    /// `toUnixTimestamp64Milli(t)`.
    ToUnixTimestamp64Milli,
    /// `dateDiff(unit, a, b)`: unit boundaries crossed from a to b.
    DateDiff(Unit),
    /// `t + INTERVAL n unit` (args t, n).
    AddInterval(Unit),
    /// `t - INTERVAL n unit` (args t, n).
    SubtractInterval(Unit),
    /// `CAST(x AS T)`, `x::T`, `toInt32(x)`, ..
    Cast(ColumnType),
    /// `[a, b, ..]`.
    Array,
    /// `(a, b, ..)`.
    Tuple,
    /// `arr[i]` (1-based).
    ArrayElement,
    /// `tupleElement(t, i)` (1-based, constant i).
    TupleElement(usize),
    /// `indexOf(arr, x)`.
    IndexOf,
    /// `cityHash64(..)`: a stable 64-bit hash (not bit-compatible with ClickHouse's CityHash).
    CityHash64,
    /// `JSONExtractString(json, key)`.
    JsonExtractString,
    /// `domain(url)`: the host of a URL.
    Domain,
    /// `domainWithoutWWW(url)`: the host without a leading `www.`.
    DomainWithoutWww,
    /// `path(url)`: the path of a URL, without query or fragment.
    UrlPath,
}

/// Splits a URL into host and the rest (`https://h:1/p?q` → `("h", "/p?q")`).
fn url_parts(url: &str) -> (&str, &str) {
    let rest = match url.find("://") {
        Some(i) => &url[i + 3..],
        None if url.starts_with("//") => &url[2..],
        None => return ("", url),
    };
    let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = &rest[..end];
    let host = host.split(':').next().unwrap_or(host);
    (host, &rest[end..])
}

/// The common type of branches (`if`, `multiIf`, `coalesce`): the first non-NULL-literal type,
/// widened to Float64 when numeric kinds mix, Nullable when any branch is.
pub fn common_type(types: &[ColumnType]) -> ColumnType {
    let nullable = types.iter().any(|t| t.is_nullable());
    let bases: Vec<&ColumnType> = types.iter().map(|t| t.base()).collect();
    let mut out = bases
        .first()
        .map(|t| (*t).clone())
        .unwrap_or(ColumnType::String);
    if bases.iter().all(|t| t.is_numeric()) && bases.iter().any(|t| **t != out) {
        out = if bases
            .iter()
            .any(|t| matches!(t, ColumnType::Float32 | ColumnType::Float64))
        {
            ColumnType::Float64
        } else if bases.iter().any(|t| matches!(t, ColumnType::Int(_))) {
            ColumnType::Int(64)
        } else {
            ColumnType::UInt(64)
        };
    }
    if nullable {
        ColumnType::Nullable(Box::new(out))
    } else {
        out
    }
}

fn is_float(t: &ColumnType) -> bool {
    matches!(t.base(), ColumnType::Float32 | ColumnType::Float64)
}

fn is_unsigned(t: &ColumnType) -> bool {
    matches!(t.base(), ColumnType::UInt(_) | ColumnType::Bool)
}

fn is_time(t: &ColumnType) -> bool {
    matches!(
        t.base(),
        ColumnType::Date | ColumnType::DateTime | ColumnType::DateTime64(_)
    )
}

fn wrap_nullable(ty: ColumnType, args: &[ColumnType]) -> ColumnType {
    if args.iter().any(|a| a.is_nullable()) && !ty.is_nullable() {
        ColumnType::Nullable(Box::new(ty))
    } else {
        ty
    }
}

/// Result of arithmetic on two numeric types.
fn arithmetic_type(op: &Func, a: &ColumnType, b: &ColumnType) -> ColumnType {
    if is_float(a) || is_float(b) {
        ColumnType::Float64
    } else if is_unsigned(a) && is_unsigned(b) && *op != Func::Minus {
        ColumnType::UInt(64)
    } else {
        ColumnType::Int(64)
    }
}

impl Func {
    /// The function's result type for these argument types, or why the call is wrong.
    pub fn result_type(&self, args: &[ColumnType]) -> Result<ColumnType, String> {
        use ColumnType as T;
        let arity = |n: usize| -> Result<(), String> {
            if args.len() == n {
                Ok(())
            } else {
                Err(format!(
                    "{self:?} takes {n} argument(s), got {}",
                    args.len()
                ))
            }
        };
        let first = || args.first().cloned().unwrap_or(T::String);
        Ok(match self {
            Func::Plus | Func::Minus | Func::Multiply | Func::Modulo | Func::IntDiv => {
                arity(2)?;
                if is_time(&args[0])
                    && matches!(self, Func::Plus | Func::Minus)
                    && !is_time(&args[1])
                {
                    return Ok(args[0].clone());
                }
                if is_time(&args[0]) && is_time(&args[1]) && *self == Func::Minus {
                    return Ok(T::Int(64));
                }
                if *self == Func::IntDiv && !(is_float(&args[0]) || is_float(&args[1])) {
                    return Ok(wrap_nullable(
                        arithmetic_type(self, &args[0], &args[1]),
                        args,
                    ));
                }
                wrap_nullable(arithmetic_type(self, &args[0], &args[1]), args)
            }
            Func::Divide => {
                arity(2)?;
                wrap_nullable(T::Float64, args)
            }
            Func::Negate => {
                arity(1)?;
                if is_float(&args[0]) {
                    T::Float64
                } else {
                    wrap_nullable(T::Int(64), args)
                }
            }
            Func::Abs | Func::Floor | Func::Ceil | Func::AssumeNotNull => first().base().clone(),
            Func::Round => first().base().clone(),
            Func::Greatest | Func::Least => common_type(args),
            Func::Eq
            | Func::NotEq
            | Func::Lt
            | Func::LtEq
            | Func::Gt
            | Func::GtEq
            | Func::Like
            | Func::NotLike
            | Func::ILike => wrap_nullable(T::UInt(8), args),
            Func::And | Func::Or | Func::Not | Func::Xor => T::UInt(8),
            Func::IsNull | Func::IsNotNull | Func::In | Func::NotIn | Func::Has => T::UInt(8),
            Func::StartsWith | Func::EndsWith | Func::Empty | Func::NotEmpty => T::UInt(8),
            Func::Coalesce => {
                let all_nullable = args.iter().all(|a| a.is_nullable());
                let base = common_type(&args.iter().map(|a| a.base().clone()).collect::<Vec<_>>());
                if all_nullable {
                    T::Nullable(Box::new(base))
                } else {
                    base
                }
            }
            Func::IfNull => {
                arity(2)?;
                common_type(&[args[0].base().clone(), args[1].clone()])
            }
            Func::NullIf => T::Nullable(Box::new(first().base().clone())),
            Func::If => {
                arity(3)?;
                common_type(&args[1..])
            }
            Func::MultiIf => {
                if args.len() < 3 || args.len().is_multiple_of(2) {
                    return Err(
                        "multiIf takes pairs of condition and value, then an else value".into(),
                    );
                }
                let values: Vec<ColumnType> = args
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i % 2 == 1 || *i == args.len() - 1)
                    .map(|(_, t)| t.clone())
                    .collect();
                common_type(&values)
            }
            Func::Lower
            | Func::Upper
            | Func::Concat
            | Func::Substring
            | Func::ReplaceAll
            | Func::Trim
            | Func::TrimLeft
            | Func::TrimRight => wrap_nullable(T::String, args),
            Func::ToString
            | Func::JsonExtractString
            | Func::Domain
            | Func::DomainWithoutWww
            | Func::UrlPath => T::String,
            Func::Length | Func::CityHash64 | Func::Position | Func::IndexOf => T::UInt(64),
            Func::SplitByChar | Func::SplitByString => T::Array(Box::new(T::String)),
            Func::ToDate => T::Date,
            Func::ToDateTime | Func::FromUnixTimestamp64Milli => T::DateTime,
            Func::ToDateTime64(p) => T::DateTime64(*p),
            Func::ToStartOf(unit) => match (unit, first().base()) {
                (Unit::Day, T::Date) => T::Date,
                (Unit::Day, _) if args.len() == 1 => T::DateTime,
                (Unit::Week | Unit::Month | Unit::Quarter | Unit::Year, _) => T::Date,
                (_, T::Date) => T::Date,
                _ => T::DateTime,
            },
            Func::ToYYYYMM | Func::ToUnixTimestamp => T::UInt(32),
            Func::ToYYYYMMDD => T::UInt(32),
            Func::ToYear => T::UInt(16),
            Func::ToMonth
            | Func::ToDayOfMonth
            | Func::ToDayOfWeek
            | Func::ToHour
            | Func::ToMinute => T::UInt(8),
            Func::ToUnixTimestamp64Milli => T::Int(64),
            Func::DateDiff(_) => T::Int(64),
            Func::AddInterval(u) | Func::SubtractInterval(u) => match (first().base(), u) {
                (T::Date, Unit::Day | Unit::Week | Unit::Month | Unit::Quarter | Unit::Year) => {
                    T::Date
                }
                (T::Date, _) => T::DateTime,
                (t, _) => t.clone(),
            },
            Func::Cast(t) => t.clone(),
            Func::TupleElement(i) => match first().base() {
                T::Tuple(items) => items
                    .get(i.wrapping_sub(1))
                    .cloned()
                    .ok_or_else(|| format!("tuple has no element {i}"))?,
                other => return Err(format!("tupleElement of a {} value", other.name())),
            },
            Func::Array => T::Array(Box::new(if args.is_empty() {
                T::String
            } else {
                common_type(args)
            })),
            Func::Tuple => T::Tuple(args.to_vec()),
            Func::ArrayElement => match first().base() {
                T::Array(inner) => (**inner).clone(),
                T::Map(_, v) => (**v).clone(),
                other => return Err(format!("cannot index a value of type {}", other.name())),
            },
        })
    }

    /// Evaluates the function on already evaluated arguments (`if`, `multiIf`, `and`, `or`
    /// short-circuit in `Expr::eval` before reaching here).
    pub fn apply(&self, args: &[Value]) -> Value {
        let arg = |i: usize| args.get(i).unwrap_or(&Value::Null);
        match self {
            Func::Plus
            | Func::Minus
            | Func::Multiply
            | Func::Modulo
            | Func::IntDiv
            | Func::Divide => arithmetic(self, arg(0), arg(1)),
            Func::Negate => match arg(0) {
                Value::Int(i) => Value::Int(i.wrapping_neg()),
                Value::UInt(u) => Value::Int((*u as i64).wrapping_neg()),
                Value::Float(f) => Value::Float(F64(-f.0)),
                _ => Value::Null,
            },
            Func::Abs => match arg(0) {
                Value::Int(i) => Value::Int(i.wrapping_abs()),
                Value::Float(f) => Value::Float(F64(f.0.abs())),
                other => other.clone(),
            },
            Func::Round => {
                let digits = arg(1).as_i64().unwrap_or(0) as i32;
                match arg(0) {
                    Value::Float(f) => {
                        let scale = 10f64.powi(digits);
                        Value::Float(F64((f.0 * scale).round_ties_even() / scale))
                    }
                    other => other.clone(),
                }
            }
            Func::Floor => match arg(0) {
                Value::Float(f) => Value::Float(F64(f.0.floor())),
                other => other.clone(),
            },
            Func::Ceil => match arg(0) {
                Value::Float(f) => Value::Float(F64(f.0.ceil())),
                other => other.clone(),
            },
            Func::Greatest | Func::Least => {
                let want = if *self == Func::Greatest {
                    Ordering::Greater
                } else {
                    Ordering::Less
                };
                let mut best: Option<&Value> = None;
                for v in args {
                    if v.is_null() {
                        return Value::Null;
                    }
                    if best.is_none_or(|b| v.sql_cmp(b) == Some(want)) {
                        best = Some(v);
                    }
                }
                best.cloned().unwrap_or(Value::Null)
            }
            Func::Eq | Func::NotEq | Func::Lt | Func::LtEq | Func::Gt | Func::GtEq => {
                match compare(arg(0), arg(1)) {
                    None => Value::Null,
                    Some(o) => bool_value(match self {
                        Func::Eq => o == Ordering::Equal,
                        Func::NotEq => o != Ordering::Equal,
                        Func::Lt => o == Ordering::Less,
                        Func::LtEq => o != Ordering::Greater,
                        Func::Gt => o == Ordering::Greater,
                        _ => o != Ordering::Less,
                    }),
                }
            }
            Func::And => bool_value(args.iter().all(Value::is_true)),
            Func::Or => bool_value(args.iter().any(Value::is_true)),
            Func::Not => {
                if arg(0).is_null() {
                    Value::Null
                } else {
                    bool_value(!arg(0).is_true())
                }
            }
            Func::Xor => bool_value(arg(0).is_true() != arg(1).is_true()),
            Func::IsNull => bool_value(arg(0).is_null()),
            Func::IsNotNull => bool_value(!arg(0).is_null()),
            Func::Coalesce => args
                .iter()
                .find(|v| !v.is_null())
                .cloned()
                .unwrap_or(Value::Null),
            Func::IfNull => {
                if arg(0).is_null() {
                    arg(1).clone()
                } else {
                    arg(0).clone()
                }
            }
            Func::NullIf => {
                if compare(arg(0), arg(1)) == Some(Ordering::Equal) {
                    Value::Null
                } else {
                    arg(0).clone()
                }
            }
            Func::AssumeNotNull => arg(0).clone(),
            Func::If => {
                if arg(0).is_true() {
                    arg(1).clone()
                } else {
                    arg(2).clone()
                }
            }
            Func::MultiIf => {
                let mut i = 0;
                while i + 1 < args.len() {
                    if args[i].is_true() {
                        return args[i + 1].clone();
                    }
                    i += 2;
                }
                args.last().cloned().unwrap_or(Value::Null)
            }
            Func::In | Func::NotIn => {
                let x = arg(0);
                if x.is_null() {
                    return Value::Null;
                }
                let found = args[1..].iter().any(|v| match v {
                    Value::Array(items) if !matches!(x, Value::Array(_)) => {
                        items.iter().any(|i| compare(x, i) == Some(Ordering::Equal))
                    }
                    v => compare(x, v) == Some(Ordering::Equal),
                });
                bool_value(found == (*self == Func::In))
            }
            Func::Has => match arg(0) {
                Value::Array(items) => bool_value(
                    items
                        .iter()
                        .any(|i| compare(arg(1), i) == Some(Ordering::Equal)),
                ),
                _ => Value::UInt(0),
            },
            Func::Lower => map_str(arg(0), |s| s.to_ascii_lowercase()),
            Func::Upper => map_str(arg(0), |s| s.to_ascii_uppercase()),
            Func::Concat => {
                let mut out = String::new();
                for v in args {
                    if v.is_null() {
                        return Value::Null;
                    }
                    v.write_text(&mut out);
                }
                Value::from(out)
            }
            Func::Length => match arg(0) {
                Value::String(s) => Value::UInt(s.len() as u64),
                Value::Array(a) => Value::UInt(a.len() as u64),
                Value::Map(m) => Value::UInt(m.len() as u64),
                _ => Value::UInt(0),
            },
            Func::Empty | Func::NotEmpty => {
                let empty = match arg(0) {
                    Value::String(s) => s.is_empty(),
                    Value::Array(a) => a.is_empty(),
                    Value::Map(m) => m.is_empty(),
                    Value::Uuid(u) => *u == 0,
                    _ => false,
                };
                bool_value(empty == (*self == Func::Empty))
            }
            Func::Like | Func::NotLike | Func::ILike => match (arg(0), arg(1)) {
                (Value::Null, _) | (_, Value::Null) => Value::Null,
                (s, p) => {
                    let (s, p) = (s.to_text(), p.to_text());
                    let m = if *self == Func::ILike {
                        like(&s.to_lowercase(), &p.to_lowercase())
                    } else {
                        like(&s, &p)
                    };
                    bool_value(m == (*self != Func::NotLike))
                }
            },
            Func::Substring => match arg(0) {
                Value::String(s) => {
                    let bytes = s.as_bytes();
                    let offset = arg(1).as_i64().unwrap_or(1);
                    let start = if offset > 0 {
                        (offset - 1) as usize
                    } else if offset < 0 {
                        bytes.len().saturating_sub((-offset) as usize)
                    } else {
                        bytes.len()
                    };
                    let start = start.min(bytes.len());
                    let end = match arg(2).as_i64() {
                        Some(l) if l >= 0 => (start + l as usize).min(bytes.len()),
                        _ => bytes.len(),
                    };
                    Value::from(String::from_utf8_lossy(&bytes[start..end]).into_owned())
                }
                other => other.clone(),
            },
            Func::StartsWith => bool_value(arg(0).to_text().starts_with(&arg(1).to_text())),
            Func::EndsWith => bool_value(arg(0).to_text().ends_with(&arg(1).to_text())),
            Func::Position => {
                let (s, n) = (arg(0).to_text(), arg(1).to_text());
                Value::UInt(s.find(&n).map(|p| p as u64 + 1).unwrap_or(0))
            }
            Func::ReplaceAll => {
                map_str(arg(0), |s| s.replace(&arg(1).to_text(), &arg(2).to_text()))
            }
            Func::Trim => map_str(arg(0), |s| s.trim().to_string()),
            Func::TrimLeft => map_str(arg(0), |s| s.trim_start().to_string()),
            Func::TrimRight => map_str(arg(0), |s| s.trim_end().to_string()),
            Func::SplitByChar | Func::SplitByString => {
                let (sep, s) = (arg(0).to_text(), arg(1).to_text());
                if arg(1).is_null() {
                    return Value::Null;
                }
                let parts: Vec<Value> = if sep.is_empty() {
                    s.chars().map(|c| Value::from(c.to_string())).collect()
                } else {
                    s.split(sep.as_str()).map(Value::from).collect()
                };
                Value::Array(parts)
            }
            Func::ToString => match arg(0) {
                Value::Null => Value::Null,
                v => Value::from(v.to_text()),
            },
            Func::ToDate => cast(&ColumnType::Date, arg(0)),
            Func::ToDateTime => cast(&ColumnType::DateTime, arg(0)),
            Func::ToDateTime64(p) => cast(&ColumnType::DateTime64(*p), arg(0)),
            Func::ToStartOf(unit) => start_of(*unit, arg(0), arg(1).as_i64().unwrap_or(1).max(1)),
            Func::ToYYYYMM
            | Func::ToYYYYMMDD
            | Func::ToYear
            | Func::ToMonth
            | Func::ToDayOfMonth => {
                let Some(secs) = arg(0).epoch_seconds() else {
                    return Value::Null;
                };
                let (y, m, d) = time::civil_from_days((secs as i64).div_euclid(86_400));
                Value::UInt(match self {
                    Func::ToYYYYMM => (y as u64) * 100 + m as u64,
                    Func::ToYYYYMMDD => (y as u64) * 10_000 + m as u64 * 100 + d as u64,
                    Func::ToYear => y as u64,
                    Func::ToMonth => m as u64,
                    _ => d as u64,
                })
            }
            Func::ToDayOfWeek => match arg(0).epoch_seconds() {
                Some(secs) => {
                    Value::UInt(((secs as i64).div_euclid(86_400) + 3).rem_euclid(7) as u64 + 1)
                }
                None => Value::Null,
            },
            Func::ToHour | Func::ToMinute => match arg(0).epoch_seconds() {
                Some(secs) => {
                    let s = (secs as i64).rem_euclid(86_400);
                    Value::UInt(if *self == Func::ToHour {
                        s / 3600
                    } else {
                        (s % 3600) / 60
                    } as u64)
                }
                None => Value::Null,
            },
            Func::ToUnixTimestamp => match arg(0) {
                Value::String(s) => time::parse_datetime(s, 0)
                    .map(|t| Value::UInt(t as u64))
                    .unwrap_or(Value::Null),
                v => v
                    .epoch_seconds()
                    .map(|s| Value::UInt(s as u64))
                    .unwrap_or(Value::Null),
            },
            Func::FromUnixTimestamp64Milli => match arg(0).as_i64() {
                Some(ms) => Value::DateTime64(ms, 3),
                None => Value::Null,
            },
            Func::ToUnixTimestamp64Milli => match arg(0).epoch_seconds() {
                Some(s) => Value::Int((s * 1000.0).round() as i64),
                None => Value::Null,
            },
            Func::DateDiff(unit) => date_diff(*unit, arg(0), arg(1)),
            Func::AddInterval(unit) => add_interval(*unit, arg(0), arg(1).as_i64().unwrap_or(0)),
            Func::SubtractInterval(unit) => {
                add_interval(*unit, arg(0), -arg(1).as_i64().unwrap_or(0))
            }
            Func::Cast(t) => cast(t, arg(0)),
            Func::Array => Value::Array(args.to_vec()),
            Func::Tuple => Value::Tuple(args.to_vec()),
            Func::TupleElement(i) => match arg(0) {
                Value::Tuple(items) => items.get(i.wrapping_sub(1)).cloned().unwrap_or(Value::Null),
                _ => Value::Null,
            },
            Func::ArrayElement => match (arg(0), arg(1)) {
                (Value::Array(items), i) => {
                    let i = i.as_i64().unwrap_or(0);
                    let idx = if i > 0 { i - 1 } else { items.len() as i64 + i };
                    if idx >= 0 && (idx as usize) < items.len() {
                        items[idx as usize].clone()
                    } else {
                        Value::Null
                    }
                }
                (Value::Map(pairs), k) => pairs
                    .iter()
                    .find(|(pk, _)| compare(pk, k) == Some(Ordering::Equal))
                    .map(|(_, v)| v.clone())
                    .unwrap_or(Value::Null),
                _ => Value::Null,
            },
            Func::IndexOf => match arg(0) {
                Value::Array(items) => Value::UInt(
                    items
                        .iter()
                        .position(|i| compare(i, arg(1)) == Some(Ordering::Equal))
                        .map(|p| p as u64 + 1)
                        .unwrap_or(0),
                ),
                _ => Value::UInt(0),
            },
            Func::CityHash64 => {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                for a in args {
                    a.hash(&mut h);
                }
                Value::UInt(h.finish())
            }
            Func::Domain => map_str(arg(0), |s| url_parts(s).0.to_string()),
            Func::DomainWithoutWww => map_str(arg(0), |s| {
                let host = url_parts(s).0;
                host.strip_prefix("www.").unwrap_or(host).to_string()
            }),
            Func::UrlPath => map_str(arg(0), |s| {
                let rest = url_parts(s).1;
                let end = rest.find(['?', '#']).unwrap_or(rest.len());
                rest[..end].to_string()
            }),
            Func::JsonExtractString => {
                let key = arg(1).to_text();
                serde_json_extract(&arg(0).to_text(), &key)
                    .map(Value::from)
                    .unwrap_or_else(|| Value::str(""))
            }
        }
    }
}

fn serde_json_extract(json: &str, key: &str) -> Option<String> {
    // A small scan for `"key": "value"` at any depth; enough for flat event payloads.
    let needle = format!("\"{key}\"");
    let at = json.find(&needle)? + needle.len();
    let rest = json[at..].trim_start().strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => out.push(chars.next()?),
            c => out.push(c),
        }
    }
    None
}

fn bool_value(b: bool) -> Value {
    Value::UInt(b as u64)
}

fn map_str(v: &Value, f: impl Fn(&str) -> String) -> Value {
    match v {
        Value::Null => Value::Null,
        Value::String(s) => Value::from(f(s)),
        other => Value::from(f(&other.to_text())),
    }
}

/// SQL comparison (NULL is `None`), with numbers compared across kinds.
pub fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    a.sql_cmp(b)
}

/// SQL `LIKE`: `%` any run, `_` one character, `\` escapes.
pub fn like(s: &str, pattern: &str) -> bool {
    let s: Vec<char> = s.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    fn go(s: &[char], p: &[char]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some('%') => (0..=s.len()).any(|i| go(&s[i..], &p[1..])),
            Some('_') => !s.is_empty() && go(&s[1..], &p[1..]),
            Some('\\') if p.len() > 1 => s.first() == Some(&p[1]) && go(&s[1..], &p[2..]),
            Some(c) => s.first() == Some(c) && go(&s[1..], &p[1..]),
        }
    }
    go(&s, &p)
}

fn arithmetic(op: &Func, a: &Value, b: &Value) -> Value {
    use Value::*;
    if a.is_null() || b.is_null() {
        return Null;
    }
    // Date and time arithmetic with plain numbers: seconds (or days for Date).
    match (op, a, b) {
        (Func::Plus | Func::Minus, Date(d), n)
            if n.as_i64().is_some() && !matches!(n, Date(_) | DateTime(_) | DateTime64(..)) =>
        {
            let n = n.as_i64().unwrap_or(0);
            return Date((*d as i64 + if *op == Func::Plus { n } else { -n }) as i32);
        }
        (Func::Plus | Func::Minus, DateTime(t), n)
            if n.as_i64().is_some() && !matches!(n, Date(_) | DateTime(_) | DateTime64(..)) =>
        {
            let n = n.as_i64().unwrap_or(0);
            return DateTime(t + if *op == Func::Plus { n } else { -n });
        }
        (Func::Minus, x, y) if x.epoch_seconds().is_some() && y.epoch_seconds().is_some() => {
            return Int(
                (x.epoch_seconds().unwrap_or(0.0) - y.epoch_seconds().unwrap_or(0.0)) as i64,
            );
        }
        _ => {}
    }
    let float = matches!(a, Float(_)) || matches!(b, Float(_)) || *op == Func::Divide;
    if float {
        let (Some(x), Some(y)) = (a.as_f64(), b.as_f64()) else {
            return Null;
        };
        return match op {
            Func::Plus => Float(F64(x + y)),
            Func::Minus => Float(F64(x - y)),
            Func::Multiply => Float(F64(x * y)),
            Func::Divide => Float(F64(x / y)),
            Func::Modulo => Float(F64(x % y)),
            _ => {
                if y == 0.0 {
                    Null
                } else {
                    Int((x / y).floor() as i64)
                }
            }
        };
    }
    let to_i = |v: &Value| -> Option<i128> {
        match v {
            Int(i) => Some(*i as i128),
            UInt(u) => Some(*u as i128),
            Bool(b) => Some(*b as i128),
            _ => None,
        }
    };
    let (Some(x), Some(y)) = (to_i(a), to_i(b)) else {
        return Null;
    };
    let unsigned =
        matches!(a, UInt(_) | Bool(_)) && matches!(b, UInt(_) | Bool(_)) && *op != Func::Minus;
    let r = match op {
        Func::Plus => x + y,
        Func::Minus => x - y,
        Func::Multiply => x.wrapping_mul(y),
        Func::Modulo => {
            if y == 0 {
                return Null;
            }
            x % y
        }
        _ => {
            // ClickHouse's intDiv truncates toward zero.
            if y == 0 {
                return Null;
            }
            x / y
        }
    };
    if unsigned {
        UInt(r as u64)
    } else {
        Int(r as i64)
    }
}

/// `CAST`: also tolerant of floats for integer targets (truncation), as ClickHouse is.
pub fn cast(ty: &ColumnType, v: &Value) -> Value {
    if v.is_null() {
        return Value::Null;
    }
    match (ty.base(), v) {
        (ColumnType::String, v) => Value::from(v.to_text()),
        (ColumnType::DateTime, Value::String(s)) => time::parse_datetime(s, 0)
            .map(Value::DateTime)
            .unwrap_or(Value::Null),
        _ => ty.coerce(v).unwrap_or(Value::Null),
    }
}

fn start_of(unit: Unit, v: &Value, n: i64) -> Value {
    let Some(secs) = v.epoch_seconds() else {
        return Value::Null;
    };
    let secs = secs.floor() as i64;
    let days = secs.div_euclid(86_400);
    let is_date = matches!(v, Value::Date(_));
    match unit {
        Unit::Week => {
            let start = days - (days + 4).rem_euclid(7);
            Value::Date(start as i32)
        }
        Unit::Month | Unit::Quarter | Unit::Year => {
            let (y, m, _) = time::civil_from_days(days);
            let months = y * 12 + (m as i64 - 1);
            let step = unit.months().unwrap_or(1) * n;
            let months = months - months.rem_euclid(step);
            let (y, m) = (months.div_euclid(12), months.rem_euclid(12) as u32 + 1);
            Value::Date(time::days_from_civil(y, m, 1) as i32)
        }
        Unit::Day if is_date => Value::Date((days - days.rem_euclid(n)) as i32),
        _ => {
            let step = unit.seconds().unwrap_or(1) * n;
            let start = secs - secs.rem_euclid(step);
            if is_date {
                Value::Date(start.div_euclid(86_400) as i32)
            } else {
                Value::DateTime(start)
            }
        }
    }
}

fn relative(unit: Unit, secs: i64) -> i64 {
    let days = secs.div_euclid(86_400);
    match unit {
        Unit::Second => secs,
        Unit::Minute => secs.div_euclid(60),
        Unit::Hour => secs.div_euclid(3600),
        Unit::Day => days,
        Unit::Week => (days + 3).div_euclid(7),
        Unit::Month | Unit::Quarter | Unit::Year => {
            let (y, m, _) = time::civil_from_days(days);
            let months = y * 12 + m as i64 - 1;
            months.div_euclid(unit.months().unwrap_or(1))
        }
    }
}

fn date_diff(unit: Unit, a: &Value, b: &Value) -> Value {
    let secs = |v: &Value| match v {
        Value::String(s) => time::parse_datetime(s, 0),
        v => v.epoch_seconds().map(|s| s.floor() as i64),
    };
    match (secs(a), secs(b)) {
        (Some(x), Some(y)) => Value::Int(relative(unit, y) - relative(unit, x)),
        _ => Value::Null,
    }
}

fn add_interval(unit: Unit, v: &Value, n: i64) -> Value {
    if let Some(s) = unit.seconds() {
        return match v {
            Value::Date(d) if s % 86_400 == 0 => Value::Date((*d as i64 + n * s / 86_400) as i32),
            Value::Date(d) => Value::DateTime(*d as i64 * 86_400 + n * s),
            Value::DateTime(t) => Value::DateTime(t + n * s),
            Value::DateTime64(t, p) => Value::DateTime64(t + n * s * 10i64.pow(*p as u32), *p),
            _ => Value::Null,
        };
    }
    let months = n * unit.months().unwrap_or(1);
    let shift = |days: i64| -> i64 {
        let (y, m, d) = time::civil_from_days(days);
        let total = y * 12 + m as i64 - 1 + months;
        let (ny, nm) = (total.div_euclid(12), total.rem_euclid(12) as u32 + 1);
        let mut nd = d;
        while nd > 28 && time::parse_date(&format!("{ny:04}-{nm:02}-{nd:02}")).is_none() {
            nd -= 1;
        }
        time::days_from_civil(ny, nm, nd)
    };
    match v {
        Value::Date(d) => Value::Date(shift(*d as i64) as i32),
        Value::DateTime(t) => {
            let days = t.div_euclid(86_400);
            Value::DateTime(shift(days) * 86_400 + t.rem_euclid(86_400))
        }
        Value::DateTime64(t, p) => {
            let scale = 10i64.pow(*p as u32);
            let secs = t.div_euclid(scale);
            let days = secs.div_euclid(86_400);
            Value::DateTime64(
                (shift(days) * 86_400 + secs.rem_euclid(86_400)) * scale + t.rem_euclid(scale),
                *p,
            )
        }
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dt(s: &str) -> Value {
        Value::DateTime(time::parse_datetime(s, 0).unwrap())
    }

    #[test]
    fn date_functions() {
        let t = dt("2024-03-15 13:47:12");
        assert_eq!(
            Func::ToStartOf(Unit::Hour).apply(std::slice::from_ref(&t)),
            dt("2024-03-15 13:00:00")
        );
        assert_eq!(
            Func::ToStartOf(Unit::Minute).apply(&[t.clone(), Value::Int(15)]),
            dt("2024-03-15 13:45:00")
        );
        assert_eq!(
            Func::ToStartOf(Unit::Month).apply(std::slice::from_ref(&t)),
            Value::Date(time::parse_date("2024-03-01").unwrap() as i32)
        );
        // 2024-03-15 is a Friday; ClickHouse weeks start on Sunday.
        assert_eq!(
            Func::ToStartOf(Unit::Week).apply(std::slice::from_ref(&t)),
            Value::Date(time::parse_date("2024-03-10").unwrap() as i32)
        );
        assert_eq!(
            Func::ToYYYYMM.apply(std::slice::from_ref(&t)),
            Value::UInt(202403)
        );
        assert_eq!(
            Func::AddInterval(Unit::Month).apply(&[dt("2024-01-31 10:00:00"), Value::Int(1)]),
            dt("2024-02-29 10:00:00")
        );
        assert_eq!(
            Func::SubtractInterval(Unit::Hour).apply(&[t.clone(), Value::Int(2)]),
            dt("2024-03-15 11:47:12")
        );
        assert_eq!(
            Func::DateDiff(Unit::Hour)
                .apply(&[dt("2024-01-01 10:59:00"), dt("2024-01-01 11:01:00")]),
            Value::Int(1)
        );
        assert_eq!(
            Func::DateDiff(Unit::Month)
                .apply(&[dt("2024-01-31 00:00:00"), dt("2024-03-01 00:00:00")]),
            Value::Int(2)
        );
    }

    #[test]
    fn arithmetic_and_strings() {
        assert_eq!(
            Func::Divide.apply(&[Value::Int(1), Value::Int(2)]),
            Value::Float(F64(0.5))
        );
        assert_eq!(
            Func::IntDiv.apply(&[Value::Int(-7), Value::Int(2)]),
            Value::Int(-3)
        );
        assert_eq!(
            Func::IntDiv.apply(&[Value::Int(7), Value::Int(0)]),
            Value::Null
        );
        assert_eq!(
            Func::Modulo.apply(&[Value::Int(-7), Value::Int(3)]),
            Value::Int(-1)
        );
        assert_eq!(
            Func::Minus.apply(&[Value::UInt(1), Value::UInt(3)]),
            Value::Int(-2)
        );
        assert_eq!(
            Func::Round.apply(&[Value::Float(F64(2.5))]),
            Value::Float(F64(2.0))
        );
        assert!(like("abc", "a%"));
        assert!(like("abc", "_b_"));
        assert!(!like("abc", "b%"));
        assert_eq!(
            Func::SplitByChar.apply(&[Value::str("-"), Value::str("a-b")]),
            Value::Array(vec![Value::str("a"), Value::str("b")])
        );
        assert_eq!(Func::Eq.apply(&[Value::Int(1), Value::Null]), Value::Null);
        assert_eq!(
            Func::In.apply(&[Value::Int(2), Value::Int(1), Value::UInt(2)]),
            Value::UInt(1)
        );
    }
}
