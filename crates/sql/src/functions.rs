//! The scalar function catalog: what each function is called in SQL, how many arguments it
//! takes, what it returns for its argument types (ClickHouse's rules, simplified where noted),
//! and how it evaluates.
//!
//! Evaluation is infallible: a value that cannot be computed (a cast of a bad string, an
//! integer division or modulo by zero, an out-of-range array index) yields NULL, where
//! ClickHouse would fail the whole query. Float division by zero follows IEEE (`1/0 = inf`),
//! as in ClickHouse.
//!
//! Integer widths are not tracked at run time (a [`Value::Int`] is 64 bits), so arithmetic
//! results are typed `Int64`/`UInt64` where ClickHouse would pick the next wider type
//! (`UInt8 + UInt8` is `UInt16` there, `UInt64` here). Comparisons and predicates are typed
//! `UInt8`, as in ClickHouse, and evaluate to `Value::UInt(0 | 1)`.
//!
//! Dates and times are UTC.

use std::borrow::{Borrow, Cow};
use std::cmp::Ordering;

use petrel_value::{time, ColumnType, Value, F64};

use crate::Expr;

/// The NULL that absent arguments read as.
pub(crate) static NULL: Value = Value::Null;

/// A calendar unit of `INTERVAL`, `toStartOfInterval`, `dateDiff` and date arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Unit {
    /// Milliseconds (`toIntervalMillisecond`): the result of adding one to a `DateTime` is a
    /// `DateTime64(3)`.
    Millisecond,
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
    /// Parses a unit name as ClickHouse accepts it (`hour`, `HOURS`, `hh`, ..).
    pub fn parse(name: &str) -> Option<Unit> {
        let lower = name.trim().trim_matches('\'').to_ascii_lowercase();
        let singular = if lower.len() > 2 {
            lower.trim_end_matches('s')
        } else {
            lower.as_str()
        };
        Some(match singular {
            "millisecond" | "ms" => Unit::Millisecond,
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

    /// The unit's name in SQL (`hour`), for display.
    pub fn name(self) -> &'static str {
        match self {
            Unit::Millisecond => "millisecond",
            Unit::Second => "second",
            Unit::Minute => "minute",
            Unit::Hour => "hour",
            Unit::Day => "day",
            Unit::Week => "week",
            Unit::Month => "month",
            Unit::Quarter => "quarter",
            Unit::Year => "year",
        }
    }

    /// Seconds in one unit, for the fixed-length units (second to week); `None` for the
    /// calendar units, whose length varies.
    pub fn seconds(self) -> Option<i64> {
        Some(match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3600,
            Unit::Day => 86_400,
            Unit::Week => 7 * 86_400,
            _ => return None,
        })
    }

    /// Months in one unit, for the calendar units (month, quarter, year).
    pub fn months(self) -> Option<i64> {
        Some(match self {
            Unit::Month => 1,
            Unit::Quarter => 3,
            Unit::Year => 12,
            _ => return None,
        })
    }
}

/// A scalar function. Variants carry what ClickHouse fixes at planning time (a cast's target
/// type, a date unit, a precision), so evaluation never looks at SQL text.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Func {
    /// `a + b` (also a Date/DateTime plus a number of days/seconds).
    Plus,
    /// `a - b` (also Date - Date in days, DateTime - DateTime in seconds).
    Minus,
    /// `a * b`.
    Multiply,
    /// `a / b`: always a float; `x / 0` is `inf` (or `nan` for `0 / 0`).
    Divide,
    /// `a % b`: NULL for an integer modulo by zero.
    Modulo,
    /// `intDiv(a, b)`: truncates toward zero; NULL for a division by zero.
    IntDiv,
    /// `-a`.
    Negate,
    /// `abs(a)`.
    Abs,
    /// `round(x[, n])`: ties to even for floats, as ClickHouse rounds them.
    Round,
    /// `floor(x)`.
    Floor,
    /// `ceil(x)`.
    Ceil,
    /// `greatest(..)`: NULL when any argument is NULL.
    Greatest,
    /// `least(..)`: NULL when any argument is NULL.
    Least,
    /// `a = b`: numbers compare across kinds, dates and times by instant, a date with a string
    /// by parsing the string (see [`Value::sql_cmp`]).
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
    /// `a AND b AND ..` (three-valued: false wins over NULL).
    And,
    /// `a OR b OR ..` (three-valued: true wins over NULL).
    Or,
    /// `NOT a`.
    Not,
    /// `xor(a, b)`.
    Xor,
    /// `isNull(a)`, `a IS NULL`.
    IsNull,
    /// `isNotNull(a)`, `a IS NOT NULL`.
    IsNotNull,
    /// `coalesce(..)`.
    Coalesce,
    /// `ifNull(a, b)`.
    IfNull,
    /// `nullIf(a, b)`.
    NullIf,
    /// `assumeNotNull(a)`.
    AssumeNotNull,
    /// `throwIf(cond[, message])`: 0, or an evaluation error when `cond` is true (the query
    /// fails, as in ClickHouse).
    ThrowIf,
    /// `if(c, a, b)`.
    If,
    /// `multiIf(c1, a1, .., else)`; CASE WHEN plans to it.
    MultiIf,
    /// `x IN (v1, v2, ..)`: first argument x, the rest the list (an array in the list is
    /// searched too).
    In,
    /// `x NOT IN (..)`.
    NotIn,
    /// `has(array, x)`; also `x IN $arrayParam`.
    Has,
    /// `lower(s)`: ASCII letters only, as in ClickHouse.
    Lower,
    /// `upper(s)`: ASCII letters only.
    Upper,
    /// `lowerUTF8(s)`.
    LowerUtf8,
    /// `upperUTF8(s)`.
    UpperUtf8,
    /// `concat(..)`: NULL when any argument is NULL.
    Concat,
    /// `length(s or array)`: bytes of a string.
    Length,
    /// `lengthUTF8(s)`: characters of a string.
    LengthUtf8,
    /// `empty(s or array)`.
    Empty,
    /// `notEmpty(s or array)`.
    NotEmpty,
    /// `s LIKE p`: `%` any run, `_` one character, `\` escapes.
    Like,
    /// `s NOT LIKE p`.
    NotLike,
    /// `s ILIKE p`: case-insensitive LIKE.
    ILike,
    /// `substring(s, offset[, length])`: 1-based, in bytes.
    Substring,
    /// `substringUTF8(s, offset[, length])`: 1-based, in characters.
    SubstringUtf8,
    /// `startsWith(s, p)`.
    StartsWith,
    /// `endsWith(s, p)`.
    EndsWith,
    /// `position(s, needle)`: 1-based byte position, 0 when absent.
    Position,
    /// `replaceAll(s, from, to)`.
    ReplaceAll,
    /// `trim(s)` / `trimBoth(s)`: spaces, as in ClickHouse.
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
    /// Truncation of a time. With one argument: `toStartOfMinute`, `toStartOfHour`,
    /// `toStartOfDay` (a DateTime), `toStartOfWeek` (Sunday), `toStartOfMonth`, .. With a second
    /// argument n: `toStartOfInterval(t, INTERVAL n unit)` (and `toStartOfFiveMinutes` etc.),
    /// aligned as ClickHouse aligns intervals: seconds and minutes to the epoch, hours to the
    /// start of the day, weeks to Mondays, months and quarters to 1900-01, years to year 0.
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
    /// `toSecond(t)`.
    ToSecond,
    /// `toUnixTimestamp(t)`.
    ToUnixTimestamp,
    /// `fromUnixTimestamp64Milli(ms)`: a DateTime64(3).
    FromUnixTimestamp64Milli,
    /// `toUnixTimestamp64Milli(t)`.
    ToUnixTimestamp64Milli,
    /// `dateDiff(unit, a, b)`: unit boundaries crossed from a to b.
    DateDiff(Unit),
    /// `t + INTERVAL n unit`, `addHours(t, n)`, .. (args t, n). Months clamp to the month's
    /// last day (Jan 31 + 1 month = Feb 28/29).
    AddInterval(Unit),
    /// `t - INTERVAL n unit`, `subtractHours(t, n)`, .. (args t, n).
    SubtractInterval(Unit),
    /// `CAST(x AS T)`, `x::T`, `toInt32(x)`, `toInt32OrNull(x)` (T Nullable), ..: NULL when the
    /// value does not fit T.
    Cast(ColumnType),
    /// `toInt32OrZero(x)`, ..: like [`Func::Cast`], but T's default value when it does not fit.
    CastOrZero(ColumnType),
    /// `[a, b, ..]`, `array(..)`.
    Array,
    /// `(a, b, ..)`, `tuple(..)`.
    Tuple,
    /// `arr[i]` (1-based; negative from the end), also `map[key]`.
    ArrayElement,
    /// `tupleElement(t, i)` (1-based, constant i).
    TupleElement(usize),
    /// `indexOf(arr, x)`: 1-based, 0 when absent.
    IndexOf,
    /// `arrayMap(x -> .., arr[, arr2..])` and the other functions taking a lambda: the first
    /// argument is the lambda's body (its parameters are [`Expr::LambdaArg`]s at `level`),
    /// the others the arrays whose elements it is called with.
    HigherOrder {
        /// Which function.
        kind: HigherOrder,
        /// The lambda's nesting level.
        level: usize,
    },
    /// `range(end)`, `range(start, end[, step])`: the integers from start (0) up to end,
    /// excluded.
    Range,
    /// `URLHierarchy(url)`: the URL cut after its host and after each later `/`, `?` and `#`.
    UrlHierarchy,
    /// `extractURLParameter(url, name)`: the first value of a query (or fragment) parameter,
    /// not decoded; empty when absent.
    ExtractUrlParameter,
    /// `decodeURLComponent(s)`: `%XX` escapes decoded.
    DecodeUrlComponent,
    /// `decodeURLFormComponent(s)`: `%XX` escapes and `+` (a space) decoded.
    DecodeUrlFormComponent,
    /// `formatDateTime(t, format)`: MySQL-style `%` specifiers as ClickHouse formats them (UTC).
    FormatDateTime,
    /// `encodeURLComponent(s)`: every byte but `A-Za-z0-9-_.~` as `%XX`.
    EncodeUrlComponent,
    /// `encodeURLFormComponent(s)`: as `encodeURLComponent`, with a space as `+`.
    EncodeUrlFormComponent,
    /// `arrayIntersect(a, b, ..)`: the distinct elements of `a` found in every other array.
    ArrayIntersect,
    /// `match(s, pattern)`: 1 when the regular expression (RE2 syntax) matches somewhere.
    Match,
    /// `extract(s, pattern)`: the first capture group of the first match (or the whole match
    /// without groups); empty when there is none.
    Extract,
    /// `replaceRegexpOne(s, pattern, replacement)`: the first match replaced (`\1`..`\9`
    /// refer to groups, `\0` to the match).
    ReplaceRegexpOne,
    /// `replaceRegexpAll(s, pattern, replacement)`: every match replaced.
    ReplaceRegexpAll,
    /// `cityHash64(..)`: ClickHouse's value for strings (CityHash64 v1.0.2) and for 64-bit
    /// integers and floats (intHash64 of the bits), combined across arguments as ClickHouse
    /// does. Narrower integer types, arrays and UUIDs hash differently from ClickHouse.
    CityHash64,
    /// `JSONExtractString(json, path..)`: the string at the path of object keys and 1-based
    /// array indexes, '' when absent or not a string.
    JsonExtractString,
    /// `JSONExtractInt(json, path..)`: 0 when absent or not a number.
    JsonExtractInt,
    /// `JSONExtractFloat(json, path..)`: 0 when absent or not a number.
    JsonExtractFloat,
    /// `JSONExtractBool(json, path..)`: 1 for `true`, else 0.
    JsonExtractBool,
    /// `JSONExtractRaw(json, path..)`: the value's JSON text, '' when absent.
    JsonExtractRaw,
    /// `JSONHas(json, path..)`.
    JsonHas,
    /// `domain(url)`: the host of a URL.
    Domain,
    /// `domainWithoutWWW(url)`: the host without a leading `www.`.
    DomainWithoutWww,
    /// `path(url)`: the path of a URL, without query or fragment.
    UrlPath,
}

fn is_float(t: &ColumnType) -> bool {
    matches!(t.base(), ColumnType::Float32 | ColumnType::Float64)
}

fn is_unsigned(t: &ColumnType) -> bool {
    matches!(t.base(), ColumnType::UInt(_) | ColumnType::Bool)
}

/// True for Date, DateTime and DateTime64 (also Nullable/LowCardinality of them).
pub(crate) fn is_time(t: &ColumnType) -> bool {
    matches!(
        t.base(),
        ColumnType::Date | ColumnType::DateTime | ColumnType::DateTime64(_)
    )
}

fn nullable(ty: ColumnType) -> ColumnType {
    if ty.is_nullable() {
        ty
    } else {
        ColumnType::Nullable(Box::new(ty))
    }
}

/// `ty`, made Nullable when any argument is (a NULL argument gives a NULL result).
fn wrap_nullable(ty: ColumnType, args: &[ColumnType]) -> ColumnType {
    if args.iter().any(|a| a.is_nullable()) {
        nullable(ty)
    } else {
        ty
    }
}

/// The common type of branches (`if`, `multiIf`, `coalesce`, array elements, UNION ALL
/// columns): the first type, widened to Float64/Int64/UInt64 when numeric kinds mix, and
/// Nullable when any branch is. A NULL literal's type (`Nullable(String)` from the planner)
/// only contributes nullability.
pub fn common_type(types: &[ColumnType]) -> ColumnType {
    let is_null_literal =
        |t: &ColumnType| matches!(t, ColumnType::Nullable(inner) if **inner == ColumnType::String);
    let nullable_any = types.iter().any(|t| t.is_nullable());
    let concrete: Vec<&ColumnType> = types
        .iter()
        .filter(|t| !is_null_literal(t))
        .map(|t| t.base())
        .collect();
    let mut out = match concrete.first() {
        Some(t) => (*t).clone(),
        None => ColumnType::String,
    };
    if concrete.iter().all(|t| t.is_numeric()) && concrete.iter().any(|t| **t != out) {
        out = if concrete.iter().any(|t| is_float(t)) {
            ColumnType::Float64
        } else if concrete.iter().all(|t| is_unsigned(t)) {
            ColumnType::UInt(64)
        } else {
            ColumnType::Int(64)
        };
    } else if concrete.iter().all(|t| is_time(t)) && concrete.iter().any(|t| **t != out) {
        out = concrete
            .iter()
            .map(|t| match t {
                ColumnType::DateTime64(p) => (2, *p),
                ColumnType::DateTime => (1, 0),
                _ => (0, 0),
            })
            .max()
            .map(|k| match k {
                (2, p) => ColumnType::DateTime64(p),
                (1, _) => ColumnType::DateTime,
                _ => ColumnType::Date,
            })
            .unwrap_or(out);
    }
    if nullable_any {
        nullable(out)
    } else {
        out
    }
}

/// Result of arithmetic on two numeric types (see the module docs on widening).
fn arithmetic_type(op: &Func, a: &ColumnType, b: &ColumnType) -> ColumnType {
    if *op == Func::IntDiv {
        if is_unsigned(a) && is_unsigned(b) {
            ColumnType::UInt(64)
        } else {
            ColumnType::Int(64)
        }
    } else if is_float(a) || is_float(b) {
        ColumnType::Float64
    } else if is_unsigned(a) && is_unsigned(b) && *op != Func::Minus {
        ColumnType::UInt(64)
    } else {
        ColumnType::Int(64)
    }
}

impl Func {
    /// The function's SQL name, as ClickHouse spells it (operators by their function names:
    /// `plus`, `equals`, ..).
    pub fn name(&self) -> &'static str {
        match self {
            Func::Plus => "plus",
            Func::Minus => "minus",
            Func::Multiply => "multiply",
            Func::Divide => "divide",
            Func::Modulo => "modulo",
            Func::IntDiv => "intDiv",
            Func::Negate => "negate",
            Func::Abs => "abs",
            Func::Round => "round",
            Func::Floor => "floor",
            Func::Ceil => "ceil",
            Func::Greatest => "greatest",
            Func::Least => "least",
            Func::Eq => "equals",
            Func::NotEq => "notEquals",
            Func::Lt => "less",
            Func::LtEq => "lessOrEquals",
            Func::Gt => "greater",
            Func::GtEq => "greaterOrEquals",
            Func::And => "and",
            Func::Or => "or",
            Func::Not => "not",
            Func::Xor => "xor",
            Func::IsNull => "isNull",
            Func::IsNotNull => "isNotNull",
            Func::Coalesce => "coalesce",
            Func::IfNull => "ifNull",
            Func::NullIf => "nullIf",
            Func::AssumeNotNull => "assumeNotNull",
            Func::ThrowIf => "throwIf",
            Func::If => "if",
            Func::MultiIf => "multiIf",
            Func::In => "in",
            Func::NotIn => "notIn",
            Func::Has => "has",
            Func::Lower => "lower",
            Func::Upper => "upper",
            Func::LowerUtf8 => "lowerUTF8",
            Func::UpperUtf8 => "upperUTF8",
            Func::Concat => "concat",
            Func::Length => "length",
            Func::LengthUtf8 => "lengthUTF8",
            Func::Empty => "empty",
            Func::NotEmpty => "notEmpty",
            Func::Like => "like",
            Func::NotLike => "notLike",
            Func::ILike => "ilike",
            Func::Substring => "substring",
            Func::SubstringUtf8 => "substringUTF8",
            Func::StartsWith => "startsWith",
            Func::EndsWith => "endsWith",
            Func::Position => "position",
            Func::ReplaceAll => "replaceAll",
            Func::Trim => "trimBoth",
            Func::TrimLeft => "trimLeft",
            Func::TrimRight => "trimRight",
            Func::SplitByChar => "splitByChar",
            Func::SplitByString => "splitByString",
            Func::ToString => "toString",
            Func::ToDate => "toDate",
            Func::ToDateTime => "toDateTime",
            Func::ToDateTime64(_) => "toDateTime64",
            Func::ToStartOf(unit) => match unit {
                Unit::Millisecond => "toStartOfMillisecond",
                Unit::Second => "toStartOfSecond",
                Unit::Minute => "toStartOfMinute",
                Unit::Hour => "toStartOfHour",
                Unit::Day => "toStartOfDay",
                Unit::Week => "toStartOfWeek",
                Unit::Month => "toStartOfMonth",
                Unit::Quarter => "toStartOfQuarter",
                Unit::Year => "toStartOfYear",
            },
            Func::ToYYYYMM => "toYYYYMM",
            Func::ToYYYYMMDD => "toYYYYMMDD",
            Func::ToYear => "toYear",
            Func::ToMonth => "toMonth",
            Func::ToDayOfMonth => "toDayOfMonth",
            Func::ToDayOfWeek => "toDayOfWeek",
            Func::ToHour => "toHour",
            Func::ToMinute => "toMinute",
            Func::ToSecond => "toSecond",
            Func::ToUnixTimestamp => "toUnixTimestamp",
            Func::FromUnixTimestamp64Milli => "fromUnixTimestamp64Milli",
            Func::ToUnixTimestamp64Milli => "toUnixTimestamp64Milli",
            Func::DateDiff(_) => "dateDiff",
            Func::AddInterval(_) => "plus",
            Func::SubtractInterval(_) => "minus",
            Func::Cast(_) => "CAST",
            Func::CastOrZero(_) => "accurateCastOrDefault",
            Func::Array => "array",
            Func::Tuple => "tuple",
            Func::ArrayElement => "arrayElement",
            Func::TupleElement(_) => "tupleElement",
            Func::IndexOf => "indexOf",
            Func::HigherOrder { kind, .. } => kind.name(),
            Func::Range => "range",
            Func::UrlHierarchy => "URLHierarchy",
            Func::ExtractUrlParameter => "extractURLParameter",
            Func::DecodeUrlComponent => "decodeURLComponent",
            Func::DecodeUrlFormComponent => "decodeURLFormComponent",
            Func::FormatDateTime => "formatDateTime",
            Func::EncodeUrlComponent => "encodeURLComponent",
            Func::EncodeUrlFormComponent => "encodeURLFormComponent",
            Func::ArrayIntersect => "arrayIntersect",
            Func::Match => "match",
            Func::Extract => "extract",
            Func::ReplaceRegexpOne => "replaceRegexpOne",
            Func::ReplaceRegexpAll => "replaceRegexpAll",
            Func::CityHash64 => "cityHash64",
            Func::JsonExtractString => "JSONExtractString",
            Func::JsonExtractInt => "JSONExtractInt",
            Func::JsonExtractFloat => "JSONExtractFloat",
            Func::JsonExtractBool => "JSONExtractBool",
            Func::JsonExtractRaw => "JSONExtractRaw",
            Func::JsonHas => "JSONHas",
            Func::Domain => "domain",
            Func::DomainWithoutWww => "domainWithoutWWW",
            Func::UrlPath => "path",
        }
    }

    /// How many arguments the function takes: at least `.0`, at most `.1` (`None`: any).
    pub fn arity(&self) -> (usize, Option<usize>) {
        match self {
            Func::Array => (0, None),
            Func::ArrayIntersect => (1, None),
            Func::Greatest
            | Func::Least
            | Func::Coalesce
            | Func::Concat
            | Func::Tuple
            | Func::CityHash64
            | Func::JsonExtractString
            | Func::JsonExtractInt
            | Func::JsonExtractFloat
            | Func::JsonExtractBool
            | Func::JsonExtractRaw
            | Func::JsonHas => (1, None),
            Func::And | Func::Or | Func::In | Func::NotIn => (2, None),
            Func::MultiIf => (3, None),
            Func::Round | Func::ToStartOf(_) | Func::ThrowIf => (1, Some(2)),
            Func::HigherOrder { .. } => (2, None),
            Func::Range => (1, Some(3)),
            Func::ExtractUrlParameter | Func::Match | Func::Extract => (2, Some(2)),
            Func::ReplaceRegexpOne | Func::ReplaceRegexpAll => (3, Some(3)),
            Func::FormatDateTime => (2, Some(3)),
            Func::Substring | Func::SubstringUtf8 => (2, Some(3)),
            Func::If | Func::ReplaceAll => (3, Some(3)),
            Func::Plus
            | Func::Minus
            | Func::Multiply
            | Func::Divide
            | Func::Modulo
            | Func::IntDiv
            | Func::Eq
            | Func::NotEq
            | Func::Lt
            | Func::LtEq
            | Func::Gt
            | Func::GtEq
            | Func::Xor
            | Func::IfNull
            | Func::NullIf
            | Func::Has
            | Func::Like
            | Func::NotLike
            | Func::ILike
            | Func::StartsWith
            | Func::EndsWith
            | Func::Position
            | Func::SplitByChar
            | Func::SplitByString
            | Func::DateDiff(_)
            | Func::AddInterval(_)
            | Func::SubtractInterval(_)
            | Func::ArrayElement
            | Func::IndexOf => (2, Some(2)),
            _ => (1, Some(1)),
        }
    }

    /// The function's result type for these argument types, or why the call is wrong.
    pub fn result_type(&self, args: &[ColumnType]) -> Result<ColumnType, String> {
        use ColumnType as T;
        let (min, max) = self.arity();
        if args.len() < min || max.is_some_and(|m| args.len() > m) {
            let expected = match max {
                Some(m) if m == min => format!("{min}"),
                Some(m) => format!("{min} to {m}"),
                None => format!("at least {min}"),
            };
            return Err(format!(
                "{} takes {expected} argument(s), got {}",
                self.name(),
                args.len()
            ));
        }
        let first = || args.first().cloned().unwrap_or(T::String);
        Ok(match self {
            Func::Plus | Func::Minus if is_time(&args[0]) && !is_time(&args[1]) => args[0].clone(),
            Func::Plus if is_time(&args[1]) && !is_time(&args[0]) => args[1].clone(),
            Func::Minus if is_time(&args[0]) && is_time(&args[1]) => {
                wrap_nullable(T::Int(64), args)
            }
            Func::Plus | Func::Minus | Func::Multiply | Func::Modulo | Func::IntDiv => {
                wrap_nullable(arithmetic_type(self, &args[0], &args[1]), args)
            }
            Func::Divide => wrap_nullable(T::Float64, args),
            Func::Negate => wrap_nullable(
                if is_float(&args[0]) {
                    T::Float64
                } else {
                    T::Int(64)
                },
                args,
            ),
            Func::Abs | Func::Floor | Func::Ceil | Func::Round => first(),
            Func::AssumeNotNull => first().base().clone(),
            Func::ThrowIf => T::UInt(8),
            Func::Greatest | Func::Least => common_type(args),
            Func::Eq
            | Func::NotEq
            | Func::Lt
            | Func::LtEq
            | Func::Gt
            | Func::GtEq
            | Func::Like
            | Func::NotLike
            | Func::ILike
            | Func::And
            | Func::Or
            | Func::Not
            | Func::Xor => wrap_nullable(T::UInt(8), args),
            Func::In | Func::NotIn => wrap_nullable(T::UInt(8), &args[..1]),
            Func::IsNull | Func::IsNotNull | Func::Has => T::UInt(8),
            Func::StartsWith | Func::EndsWith | Func::Empty | Func::NotEmpty => T::UInt(8),
            // NULL for a NULL document (a Nullable(String) column), as ClickHouse answers.
            Func::JsonHas | Func::JsonExtractBool => wrap_nullable(T::UInt(8), &args[..1]),
            Func::JsonExtractInt => wrap_nullable(T::Int(64), &args[..1]),
            Func::JsonExtractFloat => wrap_nullable(T::Float64, &args[..1]),
            Func::Coalesce => {
                let all_nullable = args.iter().all(|a| a.is_nullable());
                let base = common_type(&args.iter().map(|a| a.base().clone()).collect::<Vec<_>>());
                if all_nullable {
                    nullable(base)
                } else {
                    base
                }
            }
            Func::IfNull => common_type(&[args[0].base().clone(), args[1].clone()]),
            Func::NullIf => nullable(first().base().clone()),
            Func::If => common_type(&args[1..]),
            Func::MultiIf => {
                if args.len().is_multiple_of(2) {
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
            | Func::LowerUtf8
            | Func::UpperUtf8
            | Func::Concat
            | Func::Substring
            | Func::SubstringUtf8
            | Func::ReplaceAll
            | Func::Trim
            | Func::TrimLeft
            | Func::TrimRight
            | Func::ToString => wrap_nullable(T::String, &args[..1]),
            Func::JsonExtractString | Func::JsonExtractRaw => wrap_nullable(T::String, &args[..1]),
            Func::Domain | Func::DomainWithoutWww | Func::UrlPath => T::String,
            Func::Length | Func::LengthUtf8 | Func::CityHash64 | Func::Position | Func::IndexOf => {
                T::UInt(64)
            }
            Func::SplitByChar | Func::SplitByString => T::Array(Box::new(T::String)),
            Func::ToDate => wrap_nullable(T::Date, args),
            Func::ToDateTime => wrap_nullable(T::DateTime, args),
            Func::ToDateTime64(p) => wrap_nullable(T::DateTime64(*p), args),
            Func::FromUnixTimestamp64Milli => wrap_nullable(T::DateTime64(3), args),
            Func::ToStartOf(unit) => {
                let date = match unit {
                    Unit::Week | Unit::Month | Unit::Quarter | Unit::Year => true,
                    Unit::Day => args.len() == 2 && *first().base() == T::Date,
                    _ => false,
                };
                wrap_nullable(if date { T::Date } else { T::DateTime }, &args[..1])
            }
            Func::ToYYYYMM | Func::ToYYYYMMDD | Func::ToUnixTimestamp => {
                wrap_nullable(T::UInt(32), args)
            }
            Func::ToYear => wrap_nullable(T::UInt(16), args),
            Func::ToMonth
            | Func::ToDayOfMonth
            | Func::ToDayOfWeek
            | Func::ToHour
            | Func::ToMinute
            | Func::ToSecond => wrap_nullable(T::UInt(8), args),
            Func::ToUnixTimestamp64Milli => wrap_nullable(T::Int(64), args),
            Func::DateDiff(_) => wrap_nullable(T::Int(64), args),
            Func::AddInterval(Unit::Millisecond) | Func::SubtractInterval(Unit::Millisecond) => {
                match first().base() {
                    T::DateTime64(p) if *p >= 3 => first(),
                    _ => wrap_nullable(T::DateTime64(3), &args[..1]),
                }
            }
            Func::AddInterval(u) | Func::SubtractInterval(u) => {
                match (first().base(), u.seconds()) {
                    (T::Date, Some(s)) if s % 86_400 != 0 => wrap_nullable(T::DateTime, &args[..1]),
                    _ => first(),
                }
            }
            Func::Cast(t) | Func::CastOrZero(t) => t.clone(),
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
            // The first "argument" type is the lambda body's.
            Func::HigherOrder { kind, .. } => match kind {
                HigherOrder::Map => T::Array(Box::new(first())),
                HigherOrder::Filter => args[1].clone(),
                HigherOrder::Exists | HigherOrder::All => T::UInt(8),
                HigherOrder::Count => T::UInt(32),
                HigherOrder::First => match args[1].base() {
                    T::Array(inner) => (**inner).clone(),
                    other => {
                        return Err(format!("arrayFirst needs an array, not {}", other.name()))
                    }
                },
            },
            Func::UrlHierarchy => T::Array(Box::new(T::String)),
            Func::Match => wrap_nullable(T::UInt(8), &args[..1]),
            Func::EncodeUrlComponent | Func::EncodeUrlFormComponent => {
                wrap_nullable(T::String, &args[..1])
            }
            Func::ArrayIntersect => first(),
            Func::Extract | Func::ReplaceRegexpOne | Func::ReplaceRegexpAll => {
                wrap_nullable(T::String, &args[..1])
            }
            Func::ExtractUrlParameter
            | Func::DecodeUrlComponent
            | Func::DecodeUrlFormComponent
            | Func::FormatDateTime => wrap_nullable(T::String, &args[..1]),
            Func::Range => {
                let signed = args.iter().any(|t| matches!(t.base(), T::Int(_)));
                T::Array(Box::new(if signed { T::Int(64) } else { T::UInt(64) }))
            }
        })
    }

    /// Evaluates the function on already evaluated arguments. `Expr::eval` short-circuits
    /// `and`, `or`, `if` and `multiIf` and scans IN lists itself; this handles every function
    /// on plain values.
    pub fn apply(&self, args: &[&Value]) -> Value {
        let arg = |i: usize| -> &Value { args.get(i).copied().unwrap_or(&NULL) };
        let json = matches!(
            self,
            Func::JsonExtractString
                | Func::JsonExtractInt
                | Func::JsonExtractFloat
                | Func::JsonExtractBool
                | Func::JsonExtractRaw
                | Func::JsonHas
        );
        if json && arg(0).is_null() {
            return Value::Null;
        }
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
                Value::Bool(b) => Value::Int(-(*b as i64)),
                Value::Float(f) => Value::Float(F64(-f.0)),
                _ => Value::Null,
            },
            Func::Abs => match arg(0) {
                Value::Int(i) => Value::Int(i.wrapping_abs()),
                Value::Float(f) => Value::Float(F64(f.0.abs())),
                other => other.clone(),
            },
            Func::Round => round(arg(0), arg(1).as_i64().unwrap_or(0)),
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
                match arg(0).sql_cmp(arg(1)) {
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
            Func::And => logic(args.iter().copied(), false),
            Func::Or => logic(args.iter().copied(), true),
            Func::Not => match arg(0) {
                Value::Null => Value::Null,
                v => bool_value(!v.is_true()),
            },
            Func::Xor => match (arg(0), arg(1)) {
                (Value::Null, _) | (_, Value::Null) => Value::Null,
                (a, b) => bool_value(a.is_true() != b.is_true()),
            },
            Func::IsNull => bool_value(arg(0).is_null()),
            Func::IsNotNull => bool_value(!arg(0).is_null()),
            Func::Coalesce => args
                .iter()
                .find(|v| !v.is_null())
                .map(|v| (*v).clone())
                .unwrap_or(Value::Null),
            Func::IfNull => {
                if arg(0).is_null() {
                    arg(1).clone()
                } else {
                    arg(0).clone()
                }
            }
            Func::NullIf => {
                if arg(0).sql_cmp(arg(1)) == Some(Ordering::Equal) {
                    Value::Null
                } else {
                    arg(0).clone()
                }
            }
            Func::AssumeNotNull => arg(0).clone(),
            Func::ThrowIf => {
                if arg(0).is_true() {
                    let message = match args.get(1) {
                        Some(Value::String(m)) => m.to_string(),
                        _ => "Value passed to 'throwIf' function is non-zero".to_string(),
                    };
                    std::panic::panic_any(crate::EvalError(message));
                }
                Value::UInt(0)
            }
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
                args.last().map(|v| (*v).clone()).unwrap_or(Value::Null)
            }
            Func::In | Func::NotIn => in_list(
                *self == Func::NotIn,
                arg(0),
                args.get(1..).unwrap_or(&[]).iter().copied(),
            ),
            Func::Has => match arg(0) {
                Value::Array(items) => bool_value(items.iter().any(|i| equal(arg(1), i))),
                _ => Value::UInt(0),
            },
            Func::Lower => map_str(arg(0), |s| s.to_ascii_lowercase()),
            Func::Upper => map_str(arg(0), |s| s.to_ascii_uppercase()),
            Func::LowerUtf8 => map_str(arg(0), str::to_lowercase),
            Func::UpperUtf8 => map_str(arg(0), str::to_uppercase),
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
                Value::Null => Value::Null,
                other => Value::UInt(other.to_text().len() as u64),
            },
            Func::LengthUtf8 => match arg(0) {
                Value::Null => Value::Null,
                v => Value::UInt(text(v).chars().count() as u64),
            },
            Func::Empty | Func::NotEmpty => {
                let empty = match arg(0) {
                    Value::String(s) => s.is_empty(),
                    Value::Array(a) => a.is_empty(),
                    Value::Map(m) => m.is_empty(),
                    Value::Uuid(u) => u.get() == 0,
                    _ => false,
                };
                bool_value(empty == (*self == Func::Empty))
            }
            Func::Like | Func::NotLike | Func::ILike => match (arg(0), arg(1)) {
                (Value::Null, _) | (_, Value::Null) => Value::Null,
                (s, p) => {
                    let m = like_match(&text(s), &text(p), *self == Func::ILike);
                    bool_value(m == (*self != Func::NotLike))
                }
            },
            Func::Substring => match arg(0) {
                Value::Null => Value::Null,
                v => {
                    let s = text(v);
                    let (start, end) = substring_range(s.len(), arg(1), arg(2));
                    Value::from(String::from_utf8_lossy(&s.as_bytes()[start..end]).as_ref())
                }
            },
            Func::SubstringUtf8 => match arg(0) {
                Value::Null => Value::Null,
                v => {
                    let s = text(v);
                    let (start, end) = substring_range(s.chars().count(), arg(1), arg(2));
                    Value::from(s.chars().skip(start).take(end - start).collect::<String>())
                }
            },
            Func::StartsWith => bool_value(text(arg(0)).starts_with(text(arg(1)).as_ref())),
            Func::EndsWith => bool_value(text(arg(0)).ends_with(text(arg(1)).as_ref())),
            Func::Position => {
                let (s, n) = (text(arg(0)), text(arg(1)));
                Value::UInt(s.find(n.as_ref()).map(|p| p as u64 + 1).unwrap_or(0))
            }
            Func::ReplaceAll => {
                let (from, to) = (text(arg(1)), text(arg(2)));
                if from.is_empty() {
                    return arg(0).clone();
                }
                map_str(arg(0), |s| s.replace(from.as_ref(), &to))
            }
            Func::Trim => map_str(arg(0), |s| s.trim_matches(' ').to_string()),
            Func::TrimLeft => map_str(arg(0), |s| s.trim_start_matches(' ').to_string()),
            Func::TrimRight => map_str(arg(0), |s| s.trim_end_matches(' ').to_string()),
            Func::SplitByChar | Func::SplitByString => {
                if arg(1).is_null() {
                    return Value::Null;
                }
                let (sep, s) = (text(arg(0)), text(arg(1)));
                let parts: Vec<Value> = if sep.is_empty() {
                    s.chars()
                        .map(|c| Value::from(c.encode_utf8(&mut [0; 4]) as &str))
                        .collect()
                } else {
                    s.split(sep.as_ref()).map(Value::from).collect()
                };
                Value::Array(parts.into())
            }
            Func::ToString => match arg(0) {
                Value::Null => Value::Null,
                v @ Value::String(_) => v.clone(),
                v => Value::from(v.to_text()),
            },
            Func::ToDate => cast(&ColumnType::Date, arg(0)),
            Func::ToDateTime => cast(&ColumnType::DateTime, arg(0)),
            Func::ToDateTime64(p) => cast(&ColumnType::DateTime64(*p), arg(0)),
            Func::ToStartOf(unit) => {
                let interval = if args.len() > 1 {
                    Some(interval_amount(arg(1)).unwrap_or(1).max(1))
                } else {
                    None
                };
                start_of(*unit, arg(0), interval)
            }
            Func::ToYYYYMM
            | Func::ToYYYYMMDD
            | Func::ToYear
            | Func::ToMonth
            | Func::ToDayOfMonth => {
                let Some(secs) = epoch_secs(arg(0)) else {
                    return Value::Null;
                };
                let (y, m, d) = time::civil_from_days(secs.div_euclid(86_400));
                let (y, m, d) = (y as u64, m as u64, d as u64);
                Value::UInt(match self {
                    Func::ToYYYYMM => y * 100 + m,
                    Func::ToYYYYMMDD => y * 10_000 + m * 100 + d,
                    Func::ToYear => y,
                    Func::ToMonth => m,
                    _ => d,
                })
            }
            Func::ToDayOfWeek => match epoch_secs(arg(0)) {
                Some(secs) => Value::UInt((secs.div_euclid(86_400) + 3).rem_euclid(7) as u64 + 1),
                None => Value::Null,
            },
            Func::ToHour | Func::ToMinute | Func::ToSecond => match epoch_secs(arg(0)) {
                Some(secs) => {
                    let s = secs.rem_euclid(86_400) as u64;
                    Value::UInt(match self {
                        Func::ToHour => s / 3600,
                        Func::ToMinute => (s % 3600) / 60,
                        _ => s % 60,
                    })
                }
                None => Value::Null,
            },
            Func::ToUnixTimestamp => {
                let secs = match arg(0) {
                    Value::String(s) => time::parse_datetime(s, 0),
                    v => epoch_secs(v),
                };
                secs.map(|s| Value::UInt(s.max(0) as u64))
                    .unwrap_or(Value::Null)
            }
            Func::FromUnixTimestamp64Milli => match arg(0).as_i64() {
                Some(ms) => Value::DateTime64(ms, 3),
                None => Value::Null,
            },
            Func::ToUnixTimestamp64Milli => match arg(0) {
                Value::DateTime64(t, p) if *p >= 3 => {
                    Value::Int(t.div_euclid(ticks_per_second(*p - 3)))
                }
                Value::DateTime64(t, p) => Value::Int(t.saturating_mul(ticks_per_second(3 - *p))),
                v => epoch_secs(v)
                    .map(|s| Value::Int(s * 1000))
                    .unwrap_or(Value::Null),
            },
            Func::DateDiff(unit) => date_diff(*unit, arg(0), arg(1)),
            Func::AddInterval(unit) => match interval_amount(arg(1)) {
                Some(n) => add_interval(*unit, arg(0), n),
                None => Value::Null,
            },
            Func::SubtractInterval(unit) => match interval_amount(arg(1)) {
                Some(n) => add_interval(*unit, arg(0), n.wrapping_neg()),
                None => Value::Null,
            },
            Func::Cast(t) => cast(t, arg(0)),
            Func::CastOrZero(t) => match (arg(0), cast(t, arg(0))) {
                (Value::Null, _) => Value::Null,
                (_, Value::Null) => t.default_value(),
                (_, v) => v,
            },
            Func::Array => Value::Array(args.iter().map(|v| (*v).clone()).collect()),
            Func::Tuple => Value::Tuple(args.iter().map(|v| (*v).clone()).collect()),
            Func::TupleElement(i) => match arg(0) {
                Value::Tuple(items) => items.get(i.wrapping_sub(1)).cloned().unwrap_or(Value::Null),
                _ => Value::Null,
            },
            Func::ArrayElement => match arg(0) {
                Value::Array(items) => {
                    let i = arg(1).as_i64().unwrap_or(0);
                    let idx = if i > 0 { i - 1 } else { items.len() as i64 + i };
                    usize::try_from(idx)
                        .ok()
                        .and_then(|idx| items.get(idx))
                        .cloned()
                        .unwrap_or(Value::Null)
                }
                Value::Map(pairs) => pairs
                    .iter()
                    .find(|(k, _)| equal(k, arg(1)))
                    .map(|(_, v)| v.clone())
                    .unwrap_or(Value::Null),
                _ => Value::Null,
            },
            // Evaluated by `Expr::eval`, which owns the lambda.
            Func::HigherOrder { .. } => Value::Null,
            Func::Range => range(args),
            Func::UrlHierarchy => match arg(0) {
                Value::Null => Value::Null,
                v => Value::Array(
                    url_hierarchy(&text(v))
                        .into_iter()
                        .map(Value::from)
                        .collect(),
                ),
            },
            Func::ExtractUrlParameter => match (arg(0), arg(1)) {
                (Value::Null, _) | (_, Value::Null) => Value::Null,
                (url, name) => Value::from(url_parameter(&text(url), &text(name)).to_string()),
            },
            Func::Match | Func::Extract | Func::ReplaceRegexpOne | Func::ReplaceRegexpAll => {
                if arg(0).is_null() {
                    return Value::Null;
                }
                regex_call(self, &text(arg(0)), &text(arg(1)), &text(arg(2)))
            }
            Func::DecodeUrlComponent => map_str(arg(0), |s| percent_decode(s, false)),
            Func::EncodeUrlComponent => map_str(arg(0), |s| percent_encode(s, false)),
            Func::EncodeUrlFormComponent => map_str(arg(0), |s| percent_encode(s, true)),
            Func::ArrayIntersect => {
                let lists: Option<Vec<&Box<[Value]>>> = args
                    .iter()
                    .map(|a| match a {
                        Value::Array(items) => Some(items),
                        _ => None,
                    })
                    .collect();
                match lists {
                    Some(lists) if !lists.is_empty() => {
                        let mut out: Vec<Value> = Vec::new();
                        for v in lists[0] {
                            if !out.iter().any(|o| equal(o, v))
                                && lists[1..].iter().all(|l| l.iter().any(|x| equal(x, v)))
                            {
                                out.push(v.clone());
                            }
                        }
                        Value::Array(out.into())
                    }
                    _ => Value::Null,
                }
            }
            Func::DecodeUrlFormComponent => map_str(arg(0), |s| percent_decode(s, true)),
            Func::FormatDateTime => match (epoch_secs(arg(0)), arg(1)) {
                (Some(secs), Value::String(format)) => Value::from(format_date_time(
                    secs,
                    matches!(arg(0), Value::Date(_)),
                    format,
                )),
                _ => Value::Null,
            },
            Func::IndexOf => match arg(0) {
                Value::Array(items) => Value::UInt(
                    items
                        .iter()
                        .position(|i| equal(i, arg(1)))
                        .map(|p| p as u64 + 1)
                        .unwrap_or(0),
                ),
                _ => Value::UInt(0),
            },
            Func::CityHash64 => city::hash_values(args),
            // A string's text; another value's JSON, compact, as ClickHouse returns it.
            Func::JsonExtractString => match json_at(args) {
                Some(raw) if raw.starts_with('"') => json::unescape(raw)
                    .map(Value::from)
                    .unwrap_or(Value::str("")),
                Some("null") | None => Value::str(""),
                Some(raw) => Value::from(json::compact(raw)),
            },
            Func::JsonExtractInt => Value::Int(
                json_at(args)
                    .and_then(|raw| {
                        raw.parse::<i64>()
                            .ok()
                            .or_else(|| raw.parse::<f64>().ok().map(|f| f as i64))
                    })
                    .unwrap_or(0),
            ),
            Func::JsonExtractFloat => Value::Float(F64(json_at(args)
                .and_then(|raw| raw.parse::<f64>().ok())
                .unwrap_or(0.0))),
            Func::JsonExtractBool => bool_value(json_at(args) == Some("true")),
            Func::JsonExtractRaw => Value::from(json_at(args).unwrap_or("")),
            Func::JsonHas => bool_value(json_at(args).is_some()),
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
        }
    }
}

fn bool_value(b: bool) -> Value {
    Value::UInt(b as u64)
}

/// SQL equality of two values (NULL equals nothing).
fn equal(a: &Value, b: &Value) -> bool {
    a.sql_cmp(b) == Some(Ordering::Equal)
}

/// `x [NOT] IN list`: NULL for a NULL x; an array in the list is searched as a list.
pub(crate) fn in_list<V: Borrow<Value>>(
    negated: bool,
    x: &Value,
    list: impl IntoIterator<Item = V>,
) -> Value {
    if x.is_null() {
        return Value::Null;
    }
    let x_is_array = matches!(x, Value::Array(_));
    let found = list.into_iter().any(|v| match v.borrow() {
        Value::Array(items) if !x_is_array => items.iter().any(|i| equal(x, i)),
        v => equal(x, v),
    });
    bool_value(found != negated)
}

/// Three-valued AND (`any_wins = false`) and OR (`any_wins = true`): the deciding value wins
/// over NULL; otherwise NULL wins over the neutral value. Stops at the deciding value.
pub(crate) fn logic<V: Borrow<Value>>(
    values: impl IntoIterator<Item = V>,
    any_wins: bool,
) -> Value {
    let mut saw_null = false;
    for v in values {
        let v = v.borrow();
        if v.is_null() {
            saw_null = true;
        } else if v.is_true() == any_wins {
            return bool_value(any_wins);
        }
    }
    if saw_null {
        Value::Null
    } else {
        bool_value(!any_wins)
    }
}

/// A value's text without copying when it already is a string.
fn text(v: &Value) -> Cow<'_, str> {
    match v {
        Value::String(s) => Cow::Borrowed(s.as_str()),
        other => Cow::Owned(other.to_text()),
    }
}

fn map_str(v: &Value, f: impl Fn(&str) -> String) -> Value {
    match v {
        Value::Null => Value::Null,
        other => Value::from(f(&text(other))),
    }
}

/// The byte (or char) range `[start, end)` of `substring(s, offset, length)` in a string of
/// `len` units: 1-based offsets, negative offsets from the end, a negative length stops that
/// many units before the end.
fn substring_range(len: usize, offset: &Value, length: &Value) -> (usize, usize) {
    let len_i = len as i64;
    let offset = offset.as_i64().unwrap_or(1);
    let start = if offset > 0 {
        offset - 1
    } else if offset < 0 {
        (len_i + offset).max(0)
    } else {
        len_i
    }
    .min(len_i);
    let end = match length.as_i64() {
        Some(l) if l >= 0 => start.saturating_add(l).min(len_i),
        Some(l) => (len_i + l).max(start),
        None => len_i,
    };
    (start as usize, end as usize)
}

fn round(v: &Value, digits: i64) -> Value {
    let digits = digits.clamp(-30, 30) as i32;
    match v {
        Value::Float(f) => {
            let scale = 10f64.powi(digits);
            Value::Float(F64((f.0 * scale).round_ties_even() / scale))
        }
        Value::Int(_) | Value::UInt(_) if digits < 0 => {
            // Half away from zero, in i128 so no step overflows.
            let x = match v {
                Value::Int(i) => *i as i128,
                Value::UInt(u) => *u as i128,
                _ => 0,
            };
            let scale = 10i128.pow((-digits).min(20) as u32);
            let r = (x.abs() + scale / 2) / scale * scale * x.signum();
            match v {
                Value::UInt(_) => u64::try_from(r).map(Value::UInt).unwrap_or(Value::Null),
                _ => i64::try_from(r).map(Value::Int).unwrap_or(Value::Null),
            }
        }
        other => other.clone(),
    }
}

/// SQL `LIKE`: `%` any run, `_` one character, `\` escapes the next character. Matches
/// without allocating (greedy with backtracking to the last `%`), ASCII case-insensitively
/// when `fold` (other letters are lowercased first).
fn like_match(s: &str, pattern: &str, fold: bool) -> bool {
    if fold && !(s.is_ascii() && pattern.is_ascii()) {
        return like_bytes(
            s.to_lowercase().as_bytes(),
            pattern.to_lowercase().as_bytes(),
            false,
        );
    }
    like_bytes(s.as_bytes(), pattern.as_bytes(), fold)
}

/// The byte length of the UTF-8 character starting with `b`.
fn utf8_len(b: u8) -> usize {
    match b {
        0xF0.. => 4,
        0xE0.. => 3,
        0xC0.. => 2,
        _ => 1,
    }
}

fn like_bytes(s: &[u8], p: &[u8], fold: bool) -> bool {
    let (mut si, mut pi) = (0usize, 0usize);
    // After a `%`: where the pattern resumes, and where in `s` the `%` stops matching.
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() {
            match p[pi] {
                b'%' => {
                    pi += 1;
                    star = Some((pi, si));
                    continue;
                }
                b'_' => {
                    si = (si + utf8_len(s[si])).min(s.len());
                    pi += 1;
                    continue;
                }
                c => {
                    let (lit, step) = if c == b'\\' && pi + 1 < p.len() {
                        (p[pi + 1], 2)
                    } else {
                        (c, 1)
                    };
                    let same = if fold {
                        s[si].eq_ignore_ascii_case(&lit)
                    } else {
                        s[si] == lit
                    };
                    if same {
                        si += 1;
                        pi += step;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((resume, from)) => {
                let next = (from + utf8_len(s[from])).min(s.len());
                star = Some((resume, next));
                pi = resume;
                si = next;
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == b'%')
}

/// `10^precision`, the ticks per second of a DateTime64 (precisions beyond 18 clamp).
fn ticks_per_second(precision: u8) -> i64 {
    10i64.pow(precision.min(18) as u32)
}

/// Integer seconds since the epoch of a Date, DateTime or DateTime64 (floored).
fn epoch_secs(v: &Value) -> Option<i64> {
    match v {
        Value::Date(d) => Some(*d as i64 * 86_400),
        Value::DateTime(s) => Some(*s),
        Value::DateTime64(t, p) => Some(t.div_euclid(ticks_per_second(*p))),
        _ => None,
    }
}

fn arithmetic(op: &Func, a: &Value, b: &Value) -> Value {
    use Value::*;
    if a.is_null() || b.is_null() {
        return Null;
    }
    let is_time = |v: &Value| matches!(v, Date(_) | DateTime(_) | DateTime64(..));
    // Date and time arithmetic: with a plain number (days for Date, seconds otherwise), and
    // the difference of two times (days between Dates, seconds otherwise).
    if matches!(op, Func::Plus | Func::Minus) && (is_time(a) || is_time(b)) {
        let (t, n, sign) = match (is_time(a), is_time(b)) {
            (true, true) if *op == Func::Minus => {
                return match (a, b) {
                    (Date(x), Date(y)) => Int(*x as i64 - *y as i64),
                    _ => match (epoch_secs(a), epoch_secs(b)) {
                        (Some(x), Some(y)) => Int(x - y),
                        _ => Null,
                    },
                };
            }
            (true, false) => (a, b, if *op == Func::Plus { 1 } else { -1 }),
            (false, true) if *op == Func::Plus => (b, a, 1),
            _ => return Null,
        };
        let Some(n) = n.as_i64().and_then(|n| n.checked_mul(sign)) else {
            return Null;
        };
        let shifted = match t {
            Date(d) => (*d as i64).checked_add(n).map(|d| Date(d as i32)),
            DateTime(s) => s.checked_add(n).map(DateTime),
            DateTime64(ticks, p) => n
                .checked_mul(ticks_per_second(*p))
                .and_then(|n| ticks.checked_add(n))
                .map(|t| DateTime64(t, *p)),
            _ => None,
        };
        return shifted.unwrap_or(Null);
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
                let q = (x / y).trunc();
                if q.is_finite() {
                    Int(q as i64)
                } else {
                    Null
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
        _ if y == 0 => return Null,
        Func::Modulo => x % y,
        // ClickHouse's intDiv truncates toward zero.
        _ => x / y,
    };
    if unsigned {
        UInt(r as u64)
    } else {
        Int(r as i64)
    }
}

/// `CAST`: ClickHouse's conversions as [`ColumnType::coerce`] implements them, plus strings
/// holding a date and time cast to Date. NULL when the value does not fit.
fn cast(ty: &ColumnType, v: &Value) -> Value {
    if v.is_null() {
        return Value::Null;
    }
    match (ty.base(), v) {
        (ColumnType::String, Value::String(_)) => v.clone(),
        (ColumnType::String, v) => Value::from(v.to_text()),
        (ColumnType::Date, Value::String(s)) => time::parse_date(s)
            .or_else(|| time::parse_datetime(s, 0).map(|t| t.div_euclid(86_400)))
            .map(|d| Value::Date(d as i32))
            .unwrap_or(Value::Null),
        // ClickHouse reads a number past the UInt16 range as a Unix time, not a day number.
        (ColumnType::Date, Value::Int(_) | Value::UInt(_)) => match v.as_i64() {
            Some(n) if n > 65_535 => Value::Date(n.div_euclid(86_400) as i32),
            _ => ty.coerce(v).unwrap_or(Value::Null),
        },
        _ => ty.coerce(v).unwrap_or(Value::Null),
    }
}

/// An interval's amount: a number, or a string holding one (`INTERVAL '30' minute`, a
/// String template parameter).
fn interval_amount(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => s.trim().parse::<f64>().ok().map(|f| f as i64),
        other => other.as_i64(),
    }
}

/// Days since the epoch of the first day of month index `months` (months since 0000-01).
fn first_of_month(months: i64) -> i64 {
    time::days_from_civil(months.div_euclid(12), months.rem_euclid(12) as u32 + 1, 1)
}

fn start_of(unit: Unit, v: &Value, interval: Option<i64>) -> Value {
    let Some(secs) = epoch_secs(v) else {
        return Value::Null;
    };
    let n = interval.unwrap_or(1);
    let days = secs.div_euclid(86_400);
    let date = |d: i64| Value::Date(d as i32);
    match unit {
        // toStartOfWeek: Sundays; week intervals: Mondays (1970-01-05 is day 4).
        Unit::Week if interval.is_none() => date(days - (days + 4).rem_euclid(7)),
        Unit::Week => date(days - (days - 4).rem_euclid(n.saturating_mul(7))),
        Unit::Year => {
            let (y, _, _) = time::civil_from_days(days);
            date(time::days_from_civil(y - y.rem_euclid(n), 1, 1))
        }
        Unit::Month | Unit::Quarter => {
            let (y, m, _) = time::civil_from_days(days);
            let step = unit.months().unwrap_or(1).saturating_mul(n);
            let since_1900 = (y - 1900) * 12 + m as i64 - 1;
            date(first_of_month(
                1900 * 12 + since_1900 - since_1900.rem_euclid(step),
            ))
        }
        Unit::Day if interval.is_some() && matches!(v, Value::Date(_)) => {
            date(days - days.rem_euclid(n))
        }
        Unit::Hour if n > 1 => {
            // ClickHouse counts hour intervals from the start of each day.
            let in_day = secs - days * 86_400;
            Value::DateTime(days * 86_400 + in_day - in_day.rem_euclid(n.saturating_mul(3600)))
        }
        _ => {
            let step = unit.seconds().unwrap_or(1).saturating_mul(n);
            Value::DateTime(secs - secs.rem_euclid(step))
        }
    }
}

/// The unit's number of `t` (seconds since the epoch) on ClickHouse's relative scales.
fn relative(unit: Unit, secs: i64) -> i64 {
    let days = secs.div_euclid(86_400);
    match unit {
        Unit::Millisecond => secs.saturating_mul(1000),
        Unit::Second => secs,
        Unit::Minute => secs.div_euclid(60),
        Unit::Hour => secs.div_euclid(3600),
        Unit::Day => days,
        // Weeks start on Monday.
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
        v => epoch_secs(v),
    };
    match (secs(a), secs(b)) {
        (Some(x), Some(y)) => Value::Int(relative(unit, y) - relative(unit, x)),
        _ => Value::Null,
    }
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// `v + n units`; NULL when the result is out of range.
fn add_interval(unit: Unit, v: &Value, n: i64) -> Value {
    add_interval_checked(unit, v, n).unwrap_or(Value::Null)
}

fn add_interval_checked(unit: Unit, v: &Value, n: i64) -> Option<Value> {
    if unit == Unit::Millisecond {
        // In milliseconds, as a DateTime64 of at least millisecond precision.
        let (ticks, p) = match v {
            Value::DateTime64(t, p) if *p >= 3 => (*t, *p),
            Value::DateTime64(t, p) => (t.checked_mul(10i64.pow(3 - *p as u32))?, 3),
            Value::DateTime(t) => (t.checked_mul(1000)?, 3),
            Value::Date(d) => ((*d as i64).checked_mul(86_400_000)?, 3),
            _ => return None,
        };
        let delta = n.checked_mul(10i64.pow(p as u32 - 3))?;
        return Some(Value::DateTime64(ticks.checked_add(delta)?, p));
    }
    if let Some(s) = unit.seconds() {
        let delta = n.checked_mul(s)?;
        return match v {
            Value::Date(d) if s % 86_400 == 0 => {
                let days = (*d as i64).checked_add(delta / 86_400)?;
                Some(Value::Date(i32::try_from(days).ok()?))
            }
            Value::Date(d) => Some(Value::DateTime((*d as i64 * 86_400).checked_add(delta)?)),
            Value::DateTime(t) => Some(Value::DateTime(t.checked_add(delta)?)),
            Value::DateTime64(t, p) => {
                let ticks = delta.checked_mul(ticks_per_second(*p))?;
                Some(Value::DateTime64(t.checked_add(ticks)?, *p))
            }
            _ => None,
        };
    }
    // Within ±100000 years the calendar arithmetic cannot overflow.
    let months = n.checked_mul(unit.months().unwrap_or(1))?;
    if months.abs() > 1_200_000 {
        return None;
    }
    let shift = |days: i64| -> i64 {
        let (y, m, d) = time::civil_from_days(days);
        let total = y * 12 + m as i64 - 1 + months;
        let (ny, nm) = (total.div_euclid(12), total.rem_euclid(12) as u32 + 1);
        time::days_from_civil(ny, nm, d.min(days_in_month(ny, nm)))
    };
    Some(match v {
        Value::Date(d) => Value::Date(i32::try_from(shift(*d as i64)).ok()?),
        Value::DateTime(t) => {
            let days = t.div_euclid(86_400);
            Value::DateTime(
                shift(days)
                    .checked_mul(86_400)?
                    .checked_add(t.rem_euclid(86_400))?,
            )
        }
        Value::DateTime64(t, p) => {
            let per_day = 86_400i64.checked_mul(ticks_per_second(*p))?;
            let days = t.div_euclid(per_day);
            Value::DateTime64(
                shift(days)
                    .checked_mul(per_day)?
                    .checked_add(t.rem_euclid(per_day))?,
                *p,
            )
        }
        _ => return None,
    })
}

/// Splits a URL into host and the rest (`https://h:1/p?q` → `("h", "/p?q")`).
fn url_parts(url: &str) -> (&str, &str) {
    let rest = match url.find("://") {
        Some(i) => &url[i + 3..],
        None if url.starts_with("//") => &url[2..],
        None => return ("", url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host = authority
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(authority);
    let host = host.split(':').next().unwrap_or(host);
    (host, &rest[end..])
}

/// The raw JSON text at the path `args[1..]` in the document `args[0]`.
fn json_at<'a>(args: &[&'a Value]) -> Option<&'a str> {
    let Value::String(doc) = args.first()? else {
        return None;
    };
    json::find(doc, &args[1..])
}

/// A small JSON reader: enough to walk a path of keys and indexes without building a tree.
mod json {
    use petrel_value::Value;

    /// `raw` JSON without the whitespace outside its strings.
    pub(super) fn compact(raw: &str) -> String {
        let mut out = String::with_capacity(raw.len());
        let mut in_string = false;
        let mut escaped = false;
        for c in raw.chars() {
            if in_string {
                out.push(c);
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => in_string = false,
                    _ => {}
                }
            } else if c == '"' {
                in_string = true;
                out.push(c);
            } else if !c.is_whitespace() {
                out.push(c);
            }
        }
        out
    }

    fn ws(b: &[u8], mut i: usize) -> usize {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    }

    /// The end of the string starting at the quote `b[i]`.
    fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
        i += 1;
        while i < b.len() {
            match b[i] {
                b'\\' => i += 2,
                b'"' => return Some(i + 1),
                _ => i += 1,
            }
        }
        None
    }

    /// The end of the value starting at `b[i]` (no leading whitespace).
    fn value_end(b: &[u8], i: usize) -> Option<usize> {
        match *b.get(i)? {
            b'"' => string_end(b, i),
            b'{' | b'[' => {
                let mut depth = 0usize;
                let mut j = i;
                while j < b.len() {
                    match b[j] {
                        b'"' => {
                            j = string_end(b, j)?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                return Some(j + 1);
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                None
            }
            _ => {
                let mut j = i;
                while j < b.len() && !matches!(b[j], b',' | b'}' | b']') {
                    j += 1;
                }
                let mut end = j;
                while end > i && b[end - 1].is_ascii_whitespace() {
                    end -= 1;
                }
                (end > i).then_some(end)
            }
        }
    }

    /// The members (object: key span and value span; array: value spans) of the container at
    /// `b[start]`, visited until `visit` returns true; returns the chosen value's span.
    fn members(
        b: &[u8],
        start: usize,
        mut visit: impl FnMut(usize, Option<(usize, usize)>) -> bool,
    ) -> Option<(usize, usize)> {
        let object = b[start] == b'{';
        let close = if object { b'}' } else { b']' };
        let mut i = ws(b, start + 1);
        let mut index = 0;
        if b.get(i) == Some(&close) {
            return None;
        }
        loop {
            let key = if object {
                let k_end = string_end(b, i)?;
                let key = (i, k_end);
                i = ws(b, k_end);
                if b.get(i) != Some(&b':') {
                    return None;
                }
                i = ws(b, i + 1);
                Some(key)
            } else {
                None
            };
            let end = value_end(b, i)?;
            if visit(index, key) {
                return Some((i, end));
            }
            index += 1;
            i = ws(b, end);
            match b.get(i) {
                Some(b',') => i = ws(b, i + 1),
                _ => return None,
            }
        }
    }

    /// The raw text of the value at `path` (string keys, 1-based or negative indexes).
    pub fn find<'a>(doc: &'a str, path: &[&Value]) -> Option<&'a str> {
        let b = doc.as_bytes();
        let mut start = ws(b, 0);
        let mut end = value_end(b, start)?;
        for step in path {
            if !matches!(b.get(start), Some(b'{' | b'[')) {
                return None;
            }
            let span = match step {
                Value::String(key) => {
                    if b[start] != b'{' {
                        return None;
                    }
                    members(b, start, |_, k| {
                        k.is_some_and(|(ks, ke)| {
                            unescape(&doc[ks..ke]).is_some_and(|k| k == key.as_str())
                        })
                    })?
                }
                v => {
                    let i = v.as_i64()?;
                    let want = if i > 0 {
                        i - 1
                    } else {
                        let mut count = 0i64;
                        members(b, start, |_, _| {
                            count += 1;
                            false
                        });
                        count + i
                    };
                    if want < 0 {
                        return None;
                    }
                    members(b, start, |n, _| n as i64 == want)?
                }
            };
            (start, end) = span;
        }
        Some(&doc[start..end])
    }

    /// The text of a quoted JSON string, escapes resolved.
    pub fn unescape(raw: &str) -> Option<String> {
        let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
        if !inner.contains('\\') {
            return Some(inner.to_string());
        }
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    let mut code = u32::from_str_radix(&hex, 16).ok()?;
                    if (0xD800..0xDC00).contains(&code) {
                        let rest: String = chars.by_ref().take(6).collect();
                        let low = u32::from_str_radix(rest.strip_prefix("\\u")?, 16).ok()?;
                        code = 0x10000 + ((code - 0xD800) << 10) + (low.checked_sub(0xDC00)?);
                    }
                    out.push(char::from_u32(code)?);
                }
                other => out.push(other),
            }
        }
        Some(out)
    }
}

/// ClickHouse's `cityHash64`: CityHash64 v1.0.2 for strings, `intHash64` for numbers, and
/// `Hash128to64` to combine arguments.
mod city {
    use petrel_value::Value;

    const K0: u64 = 0xc3a5c85c97cb3127;
    const K1: u64 = 0xb492b66fbe98f273;
    const K2: u64 = 0x9ae16a3b2f90404f;
    const K3: u64 = 0xc949d7c7509e6557;

    fn fetch64(s: &[u8], i: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&s[i..i + 8]);
        u64::from_le_bytes(b)
    }

    fn fetch32(s: &[u8], i: usize) -> u64 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&s[i..i + 4]);
        u32::from_le_bytes(b) as u64
    }

    fn rotate(v: u64, shift: u32) -> u64 {
        v.rotate_right(shift)
    }

    fn shift_mix(v: u64) -> u64 {
        v ^ (v >> 47)
    }

    /// CityHash's `Hash128to64`, ClickHouse's way of combining two hashes.
    pub fn hash128_to_64(low: u64, high: u64) -> u64 {
        const MUL: u64 = 0x9ddfea08eb382d69;
        let mut a = (low ^ high).wrapping_mul(MUL);
        a ^= a >> 47;
        let mut b = (high ^ a).wrapping_mul(MUL);
        b ^= b >> 47;
        b.wrapping_mul(MUL)
    }

    fn len0to16(s: &[u8]) -> u64 {
        let len = s.len();
        if len > 8 {
            let a = fetch64(s, 0);
            let b = fetch64(s, len - 8);
            return hash128_to_64(a, rotate(b.wrapping_add(len as u64), len as u32)) ^ b;
        }
        if len >= 4 {
            let a = fetch32(s, 0);
            return hash128_to_64((len as u64).wrapping_add(a << 3), fetch32(s, len - 4));
        }
        if len > 0 {
            let (a, b, c) = (s[0] as u32, s[len >> 1] as u32, s[len - 1] as u32);
            let y = a.wrapping_add(b << 8);
            let z = (len as u32).wrapping_add(c << 2);
            return shift_mix((y as u64).wrapping_mul(K2) ^ (z as u64).wrapping_mul(K3))
                .wrapping_mul(K2);
        }
        K2
    }

    fn len17to32(s: &[u8]) -> u64 {
        let len = s.len();
        let a = fetch64(s, 0).wrapping_mul(K1);
        let b = fetch64(s, 8);
        let c = fetch64(s, len - 8).wrapping_mul(K2);
        let d = fetch64(s, len - 16).wrapping_mul(K0);
        hash128_to_64(
            rotate(a.wrapping_sub(b), 43)
                .wrapping_add(rotate(c, 30))
                .wrapping_add(d),
            a.wrapping_add(rotate(b ^ K3, 20))
                .wrapping_sub(c)
                .wrapping_add(len as u64),
        )
    }

    fn len33to64(s: &[u8]) -> u64 {
        let len = s.len();
        let mut z = fetch64(s, 24);
        let mut a = fetch64(s, 0).wrapping_add(
            (len as u64)
                .wrapping_add(fetch64(s, len - 16))
                .wrapping_mul(K0),
        );
        let mut b = rotate(a.wrapping_add(z), 52);
        let mut c = rotate(a, 37);
        a = a.wrapping_add(fetch64(s, 8));
        c = c.wrapping_add(rotate(a, 7));
        a = a.wrapping_add(fetch64(s, 16));
        let vf = a.wrapping_add(z);
        let vs = b.wrapping_add(rotate(a, 31)).wrapping_add(c);
        a = fetch64(s, 16).wrapping_add(fetch64(s, len - 32));
        z = fetch64(s, len - 8);
        b = rotate(a.wrapping_add(z), 52);
        c = rotate(a, 37);
        a = a.wrapping_add(fetch64(s, len - 24));
        c = c.wrapping_add(rotate(a, 7));
        a = a.wrapping_add(fetch64(s, len - 16));
        let wf = a.wrapping_add(z);
        let ws = b.wrapping_add(rotate(a, 31)).wrapping_add(c);
        let r = shift_mix(
            vf.wrapping_add(ws)
                .wrapping_mul(K2)
                .wrapping_add(wf.wrapping_add(vs).wrapping_mul(K0)),
        );
        shift_mix(r.wrapping_mul(K0).wrapping_add(vs)).wrapping_mul(K2)
    }

    fn weak32(s: &[u8], i: usize, a: u64, b: u64) -> (u64, u64) {
        let (w, x, y, z) = (
            fetch64(s, i),
            fetch64(s, i + 8),
            fetch64(s, i + 16),
            fetch64(s, i + 24),
        );
        let mut a = a.wrapping_add(w);
        let mut b = rotate(b.wrapping_add(a).wrapping_add(z), 21);
        let c = a;
        a = a.wrapping_add(x).wrapping_add(y);
        b = b.wrapping_add(rotate(a, 44));
        (a.wrapping_add(z), b.wrapping_add(c))
    }

    /// CityHash64 v1.0.2 of `s`.
    pub fn hash64(s: &[u8]) -> u64 {
        let len = s.len();
        if len <= 16 {
            return len0to16(s);
        }
        if len <= 32 {
            return len17to32(s);
        }
        if len <= 64 {
            return len33to64(s);
        }
        let mut x = fetch64(s, 0);
        let mut y = fetch64(s, len - 16) ^ K1;
        let mut z = fetch64(s, len - 56) ^ K0;
        let mut v = weak32(s, len - 64, len as u64, y);
        let mut w = weak32(s, len - 32, (len as u64).wrapping_mul(K1), K0);
        z = z.wrapping_add(shift_mix(v.1).wrapping_mul(K1));
        x = rotate(z.wrapping_add(x), 39).wrapping_mul(K1);
        y = rotate(y, 33).wrapping_mul(K1);
        let mut at = 0;
        let mut left = (len - 1) & !63;
        while left != 0 {
            x = rotate(
                x.wrapping_add(y)
                    .wrapping_add(v.0)
                    .wrapping_add(fetch64(s, at + 16)),
                37,
            )
            .wrapping_mul(K1);
            y = rotate(y.wrapping_add(v.1).wrapping_add(fetch64(s, at + 48)), 42).wrapping_mul(K1);
            x ^= w.1;
            y ^= v.0;
            z = rotate(z ^ w.0, 33);
            v = weak32(s, at, v.1.wrapping_mul(K1), x.wrapping_add(w.0));
            w = weak32(s, at + 32, z.wrapping_add(w.1), y);
            std::mem::swap(&mut z, &mut x);
            at += 64;
            left -= 64;
        }
        hash128_to_64(
            hash128_to_64(v.0, w.0)
                .wrapping_add(shift_mix(y).wrapping_mul(K1))
                .wrapping_add(z),
            hash128_to_64(v.1, w.1).wrapping_add(x),
        )
    }

    /// ClickHouse's `intHash64` as `cityHash64` applies it to numbers.
    fn int_hash64(x: u64) -> u64 {
        let mut x = x ^ 0x4CF2D2BAAE6DA887;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51afd7ed558ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ceb9fe1a85ec53);
        x ^ (x >> 33)
    }

    fn hash_one(v: &Value) -> u64 {
        match v {
            Value::String(s) => hash64(s.as_bytes()),
            Value::Int(i) => int_hash64(*i as u64),
            Value::UInt(u) => int_hash64(*u),
            Value::Bool(b) => int_hash64(*b as u64),
            Value::Float(f) => int_hash64(f.0.to_bits()),
            Value::Date(d) => int_hash64(*d as u32 as u64),
            Value::DateTime(s) => int_hash64(*s as u64),
            Value::DateTime64(t, _) => int_hash64(*t as u64),
            Value::Uuid(u) => hash64(&u.get().to_le_bytes()),
            Value::Null => 0,
            Value::Array(items) | Value::Tuple(items) => combine(items.iter()),
            Value::Map(pairs) => combine(pairs.iter().flat_map(|(k, v)| [k, v])),
        }
    }

    fn combine<'v>(values: impl Iterator<Item = &'v Value>) -> u64 {
        let mut out: Option<u64> = None;
        for v in values {
            let h = hash_one(v);
            out = Some(match out {
                None => h,
                Some(prev) => hash128_to_64(prev, h),
            });
        }
        out.unwrap_or(K2)
    }

    /// `cityHash64(args..)`: NULL when any argument is NULL; tuples hash as their elements.
    pub fn hash_values(args: &[&Value]) -> Value {
        if args.iter().any(|a| a.is_null()) {
            return Value::Null;
        }
        let flat = args.iter().flat_map(|a| match a {
            Value::Tuple(items) => items.iter().collect::<Vec<_>>(),
            other => vec![*other],
        });
        Value::UInt(combine(flat))
    }
}

/// The functions that take a lambda.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum HigherOrder {
    /// `arrayMap`: the lambda's value for each element.
    Map,
    /// `arrayFilter`: the first array's elements for which the lambda is true.
    Filter,
    /// `arrayExists`: 1 when the lambda is true for some element.
    Exists,
    /// `arrayAll`: 1 when the lambda is true for every element.
    All,
    /// `arrayCount`: how many elements the lambda is true for.
    Count,
    /// `arrayFirst`: the first element the lambda is true for (the type's default if none).
    First,
}

impl HigherOrder {
    /// The function for a lower-case name, if it takes a lambda.
    pub fn parse(lower: &str) -> Option<HigherOrder> {
        Some(match lower {
            "arraymap" => HigherOrder::Map,
            "arrayfilter" => HigherOrder::Filter,
            "arrayexists" => HigherOrder::Exists,
            "arrayall" => HigherOrder::All,
            "arraycount" => HigherOrder::Count,
            "arrayfirst" => HigherOrder::First,
            _ => return None,
        })
    }

    /// Its ClickHouse name.
    pub fn name(self) -> &'static str {
        match self {
            HigherOrder::Map => "arrayMap",
            HigherOrder::Filter => "arrayFilter",
            HigherOrder::Exists => "arrayExists",
            HigherOrder::All => "arrayAll",
            HigherOrder::Count => "arrayCount",
            HigherOrder::First => "arrayFirst",
        }
    }
}

/// Evaluates a higher-order function: `body` once per element position of `arrays` (all of
/// the same length, as ClickHouse requires; the shortest bounds it here), with the lambda's
/// parameters at `level` bound to the elements.
pub(crate) fn higher_order(
    kind: HigherOrder,
    level: usize,
    body: &Expr,
    arrays: &[Expr],
    row: &[Value],
) -> Value {
    let values: Vec<Value> = arrays.iter().map(|a| a.eval(row)).collect();
    let mut lists = Vec::with_capacity(values.len());
    for v in &values {
        match v {
            Value::Array(items) => lists.push(&items[..]),
            Value::Null => return Value::Null,
            _ => return Value::Null,
        }
    }
    let n = lists.iter().map(|l| l.len()).min().unwrap_or(0);
    let mut args = Vec::with_capacity(lists.len());
    let mut call = |i: usize| {
        args.clear();
        args.extend(lists.iter().map(|l| l[i].clone()));
        body.substitute_lambda(level, &args).eval(row)
    };
    match kind {
        HigherOrder::Map => Value::Array((0..n).map(&mut call).collect()),
        HigherOrder::Filter => Value::Array(
            (0..n)
                .filter(|&i| call(i).is_true())
                .map(|i| lists[0][i].clone())
                .collect(),
        ),
        HigherOrder::Exists => Value::UInt((0..n).any(|i| call(i).is_true()) as u64),
        HigherOrder::All => Value::UInt((0..n).all(|i| call(i).is_true()) as u64),
        HigherOrder::Count => Value::UInt((0..n).filter(|&i| call(i).is_true()).count() as u64),
        HigherOrder::First => match (0..n).find(|&i| call(i).is_true()) {
            Some(i) => lists[0][i].clone(),
            None => lists[0].first().map(zero_like).unwrap_or(Value::Null),
        },
    }
}

/// `URLHierarchy`: the scheme and host up to the first `/` (inclusive), then the URL cut after
/// each further `/`, `?` or `#`, ending with the whole URL. Without `://` the URL is one
/// element.
fn url_hierarchy(url: &str) -> Vec<String> {
    if url.is_empty() {
        return Vec::new();
    }
    let Some(scheme_end) = url.find("://") else {
        return vec![url.to_string()];
    };
    let after_host = scheme_end + 3;
    let mut cuts = Vec::new();
    let mut pos = match url[after_host..].find(['/', '?', '#']) {
        Some(i) if url.as_bytes()[after_host + i] == b'/' => after_host + i + 1,
        Some(i) => after_host + i,
        None => url.len(),
    };
    cuts.push(pos);
    while pos < url.len() {
        // Separators right after a cut belong to the next part (`a//b/` is one step).
        let start = url[pos..]
            .find(|c| !matches!(c, '/' | '?' | '#'))
            .map_or(url.len(), |i| pos + i);
        pos = match url[start..].find(['/', '?', '#']) {
            Some(i) => start + i + 1,
            None => url.len(),
        };
        cuts.push(pos);
    }
    cuts.dedup();
    cuts.into_iter().map(|c| url[..c].to_string()).collect()
}

/// The first value of the parameter `name` in a URL's query string or fragment.
fn url_parameter<'u>(url: &'u str, name: &str) -> &'u str {
    let Some(start) = url.find(['?', '#']) else {
        return "";
    };
    url[start + 1..]
        .split(['&', '#', '?'])
        .find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
        .unwrap_or("")
}

thread_local! {
    /// Compiled patterns by text: a view evaluates the same few patterns on every row.
    static PATTERNS: std::cell::RefCell<std::collections::HashMap<String, Option<regex::Regex>>> =
        Default::default();
}

/// `match`, `extract` and `replaceRegexp*` with a cached pattern; a pattern that does not
/// compile matches nothing.
fn regex_call(func: &Func, subject: &str, pattern: &str, replacement: &str) -> Value {
    PATTERNS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.len() > 1024 {
            cache.clear();
        }
        let re = cache
            .entry(pattern.to_string())
            .or_insert_with(|| regex::Regex::new(pattern).ok());
        let Some(re) = re.as_ref() else {
            return match func {
                Func::Match => Value::UInt(0),
                Func::Extract => Value::str(""),
                _ => Value::from(subject.to_string()),
            };
        };
        match func {
            Func::Match => bool_value(re.is_match(subject)),
            Func::Extract => Value::from(
                re.captures(subject)
                    .and_then(|c| c.get(1).or_else(|| c.get(0)))
                    .map_or("", |m| m.as_str())
                    .to_string(),
            ),
            _ => {
                // ClickHouse writes groups as \0..\9; the regex crate as ${0}..${9}.
                let mut rewritten = String::with_capacity(replacement.len());
                let mut chars = replacement.chars().peekable();
                while let Some(c) = chars.next() {
                    match (c, chars.peek().copied()) {
                        ('\\', Some(d)) if d.is_ascii_digit() => {
                            rewritten.push_str(&format!("${{{d}}}"));
                            chars.next();
                        }
                        ('\\', Some('\\')) => {
                            rewritten.push('\\');
                            chars.next();
                        }
                        ('$', _) => rewritten.push_str("$$"),
                        _ => rewritten.push(c),
                    }
                }
                let out = if *func == Func::ReplaceRegexpOne {
                    re.replace(subject, rewritten.as_str())
                } else {
                    re.replace_all(subject, rewritten.as_str())
                };
                Value::from(out.into_owned())
            }
        }
    })
}

/// `%XX` for every byte but the unreserved `A-Za-z0-9-_.~` (and `+` for a space in form
/// encoding).
fn percent_encode(s: &str, form: bool) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' if form => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Decodes `%XX` escapes (and `+` as a space in form encoding); invalid escapes stay.
fn percent_decode(s: &str, form: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if form => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `formatDateTime` over UTC seconds: `%Y %y %m %d %e %H %I %i %M (month name) %S %s %p %F %T
/// %D %j %b %a %h %z %n %t %%`; other specifiers are written as they are.
fn format_date_time(secs: i64, _is_date: bool, format: &str) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let days = secs.div_euclid(86_400);
    let in_day = secs.rem_euclid(86_400);
    let (y, m, d) = time::civil_from_days(days);
    let (hh, mi, ss) = (in_day / 3600, in_day / 60 % 60, in_day % 60);
    let hour12 = if hh % 12 == 0 { 12 } else { hh % 12 };
    let yday = days - time::days_from_civil(y, 1, 1) + 1;
    // 1970-01-01 was a Thursday.
    let weekday = DAYS[(days + 3).rem_euclid(7) as usize];
    let month = MONTHS[(m as usize).saturating_sub(1) % 12];
    let mut out = String::with_capacity(format.len() + 16);
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&format!("{y:04}")),
            Some('y') => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('e') => out.push_str(&format!("{d}")),
            Some('H') => out.push_str(&format!("{hh:02}")),
            Some('I') | Some('h') => out.push_str(&format!("{hour12:02}")),
            Some('i') => out.push_str(&format!("{mi:02}")),
            Some('M') => out.push_str(month),
            Some('S') | Some('s') => out.push_str(&format!("{ss:02}")),
            Some('p') => out.push_str(if hh < 12 { "AM" } else { "PM" }),
            Some('F') => out.push_str(&format!("{y:04}-{m:02}-{d:02}")),
            Some('T') => out.push_str(&format!("{hh:02}:{mi:02}:{ss:02}")),
            Some('D') => out.push_str(&format!("{m:02}/{d:02}/{:02}", y.rem_euclid(100))),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('b') => out.push_str(&month[..3]),
            Some('a') => out.push_str(weekday),
            Some('z') => out.push_str("+0000"),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// The default value of `v`'s type, as far as the value tells it.
fn zero_like(v: &Value) -> Value {
    match v {
        Value::Int(_) => Value::Int(0),
        Value::UInt(_) => Value::UInt(0),
        Value::Float(_) => Value::Float(F64(0.0)),
        Value::String(_) => Value::str(""),
        _ => Value::Null,
    }
}

/// `range(end)`, `range(start, end[, step])`: at most 100 million elements, as ClickHouse's
/// default `function_range_max_elements_in_block` bounds it; past that, NULL.
fn range(args: &[&Value]) -> Value {
    let num = |v: &Value| v.as_i64();
    let (start, end, step) = match args {
        [end] => (Some(0), num(end), Some(1)),
        [start, end] => (num(start), num(end), Some(1)),
        [start, end, step] => (num(start), num(end), num(step)),
        _ => return Value::Null,
    };
    let (Some(start), Some(end), Some(step)) = (start, end, step) else {
        return Value::Null;
    };
    if step == 0 {
        return Value::Null;
    }
    let count = if step > 0 {
        (end.saturating_sub(start).max(0) as u64).div_ceil(step as u64)
    } else {
        (start.saturating_sub(end).max(0) as u64).div_ceil(step.unsigned_abs())
    };
    if count > 100_000_000 {
        return Value::Null;
    }
    let signed = args.iter().any(|v| matches!(v, Value::Int(_)));
    Value::Array(
        (0..count as i64)
            .map(|i| {
                let v = start + i * step;
                if signed {
                    Value::Int(v)
                } else {
                    Value::UInt(v as u64)
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dt(s: &str) -> Value {
        Value::DateTime(time::parse_datetime(s, 0).unwrap())
    }

    fn d(s: &str) -> Value {
        Value::Date(time::parse_date(s).unwrap() as i32)
    }

    fn call(f: Func, args: &[Value]) -> Value {
        let refs: Vec<&Value> = args.iter().collect();
        f.apply(&refs)
    }

    #[test]
    fn start_of_units_and_intervals() {
        let t = dt("2024-03-15 13:47:12");
        let one = |u: Unit| call(Func::ToStartOf(u), std::slice::from_ref(&t));
        let every = |u: Unit, n: u64| call(Func::ToStartOf(u), &[t.clone(), Value::UInt(n)]);
        assert_eq!(one(Unit::Second), t);
        assert_eq!(one(Unit::Minute), dt("2024-03-15 13:47:00"));
        assert_eq!(one(Unit::Hour), dt("2024-03-15 13:00:00"));
        assert_eq!(one(Unit::Day), dt("2024-03-15 00:00:00"));
        // 2024-03-15 is a Friday; toStartOfWeek's default mode starts weeks on Sunday.
        assert_eq!(one(Unit::Week), d("2024-03-10"));
        assert_eq!(one(Unit::Month), d("2024-03-01"));
        assert_eq!(one(Unit::Quarter), d("2024-01-01"));
        assert_eq!(one(Unit::Year), d("2024-01-01"));
        assert_eq!(every(Unit::Minute, 5), dt("2024-03-15 13:45:00"));
        assert_eq!(every(Unit::Minute, 15), dt("2024-03-15 13:45:00"));
        assert_eq!(every(Unit::Second, 10), dt("2024-03-15 13:47:10"));
        // Hour intervals count from midnight: 5-hour buckets start at 00, 05, 10, 15, 20.
        assert_eq!(every(Unit::Hour, 5), dt("2024-03-15 10:00:00"));
        assert_eq!(every(Unit::Day, 1), dt("2024-03-15 00:00:00"));
        // Week intervals start on Mondays.
        assert_eq!(every(Unit::Week, 1), d("2024-03-11"));
        assert_eq!(every(Unit::Month, 2), d("2024-03-01"));
        // Month intervals count from 1900-01: 2024-03 is month 1490, a multiple of 5.
        assert_eq!(every(Unit::Month, 5), d("2024-03-01"));
        assert_eq!(every(Unit::Month, 7), d("2023-09-01"));
        assert_eq!(every(Unit::Quarter, 2), d("2024-01-01"));
        assert_eq!(every(Unit::Year, 10), d("2020-01-01"));
        let date = d("2024-03-15");
        assert_eq!(
            call(Func::ToStartOf(Unit::Day), &[date.clone(), Value::UInt(2)]),
            d("2024-03-14")
        );
        assert_eq!(
            call(Func::ToStartOf(Unit::Day), std::slice::from_ref(&date)),
            dt("2024-03-15 00:00:00")
        );
        let ms = Value::DateTime64(
            time::parse_datetime("2024-03-15 13:47:12.345", 3).unwrap(),
            3,
        );
        assert_eq!(
            call(Func::ToStartOf(Unit::Minute), &[ms]),
            dt("2024-03-15 13:47:00")
        );
        assert_eq!(
            call(Func::ToStartOf(Unit::Hour), &[Value::Null]),
            Value::Null
        );
    }

    #[test]
    fn calendar_parts() {
        let t = dt("2024-03-05 07:08:09");
        let get = |f: Func| call(f, std::slice::from_ref(&t));
        assert_eq!(get(Func::ToYYYYMM), Value::UInt(202403));
        assert_eq!(get(Func::ToYYYYMMDD), Value::UInt(20240305));
        assert_eq!(get(Func::ToYear), Value::UInt(2024));
        assert_eq!(get(Func::ToMonth), Value::UInt(3));
        assert_eq!(get(Func::ToDayOfMonth), Value::UInt(5));
        assert_eq!(get(Func::ToDayOfWeek), Value::UInt(2));
        assert_eq!(get(Func::ToHour), Value::UInt(7));
        assert_eq!(get(Func::ToMinute), Value::UInt(8));
        assert_eq!(get(Func::ToSecond), Value::UInt(9));
        assert_eq!(get(Func::ToUnixTimestamp), Value::UInt(1_709_622_489));
        assert_eq!(
            get(Func::ToUnixTimestamp64Milli),
            Value::Int(1_709_622_489_000)
        );
        assert_eq!(
            call(Func::ToYYYYMM, &[d("1969-12-31")]),
            Value::UInt(196912)
        );
        assert_eq!(
            call(
                Func::FromUnixTimestamp64Milli,
                &[Value::Int(1_709_622_489_123)]
            ),
            Value::DateTime64(1_709_622_489_123, 3)
        );
        assert_eq!(
            call(
                Func::ToUnixTimestamp64Milli,
                &[Value::DateTime64(1_709_622_489_123_456, 6)]
            ),
            Value::Int(1_709_622_489_123)
        );
    }

    #[test]
    fn date_diff_counts_boundaries() {
        let diff = |u: Unit, a: &str, b: &str| call(Func::DateDiff(u), &[dt(a), dt(b)]);
        assert_eq!(
            diff(Unit::Hour, "2024-01-01 10:59:00", "2024-01-01 11:01:00"),
            Value::Int(1)
        );
        assert_eq!(
            diff(Unit::Minute, "2024-01-01 10:59:59", "2024-01-01 10:59:00"),
            Value::Int(0)
        );
        assert_eq!(
            diff(Unit::Day, "2024-01-01 23:00:00", "2024-01-03 01:00:00"),
            Value::Int(2)
        );
        assert_eq!(
            diff(Unit::Month, "2024-01-31 00:00:00", "2024-03-01 00:00:00"),
            Value::Int(2)
        );
        assert_eq!(
            diff(Unit::Year, "2024-12-31 00:00:00", "2023-01-01 00:00:00"),
            Value::Int(-1)
        );
        // Sunday to Monday crosses a week boundary.
        assert_eq!(
            diff(Unit::Week, "2024-03-10 00:00:00", "2024-03-11 00:00:00"),
            Value::Int(1)
        );
        assert_eq!(
            call(
                Func::DateDiff(Unit::Day),
                &[d("2024-01-01"), Value::str("2024-01-10 00:00:00")]
            ),
            Value::Int(9)
        );
    }

    #[test]
    fn interval_arithmetic() {
        let add = |u: Unit, t: Value, n: i64| call(Func::AddInterval(u), &[t, Value::Int(n)]);
        assert_eq!(
            add(Unit::Month, dt("2024-01-31 10:00:00"), 1),
            dt("2024-02-29 10:00:00")
        );
        assert_eq!(
            add(Unit::Month, dt("2023-01-31 10:00:00"), 1),
            dt("2023-02-28 10:00:00")
        );
        assert_eq!(add(Unit::Month, d("2024-03-31"), -1), d("2024-02-29"));
        assert_eq!(add(Unit::Quarter, d("2024-11-30"), 1), d("2025-02-28"));
        assert_eq!(add(Unit::Year, d("2024-02-29"), 1), d("2025-02-28"));
        assert_eq!(add(Unit::Week, d("2024-02-26"), 1), d("2024-03-04"));
        assert_eq!(
            add(Unit::Hour, d("2024-02-26"), 3),
            dt("2024-02-26 03:00:00")
        );
        assert_eq!(
            call(
                Func::SubtractInterval(Unit::Hour),
                &[dt("2024-03-15 13:47:12"), Value::UInt(2)]
            ),
            dt("2024-03-15 11:47:12")
        );
        assert_eq!(
            add(Unit::Day, Value::DateTime64(1_500, 3), 1),
            Value::DateTime64(86_401_500, 3)
        );
        assert_eq!(
            add(Unit::Month, Value::DateTime64(1_500, 3), 1),
            Value::DateTime64(31 * 86_400_000 + 1_500, 3)
        );
        // Plain numbers: days for Date, seconds for DateTime; differences of times.
        assert_eq!(
            call(Func::Plus, &[d("2024-01-01"), Value::UInt(1)]),
            d("2024-01-02")
        );
        assert_eq!(
            call(Func::Minus, &[dt("2024-01-01 00:00:10"), Value::UInt(10)]),
            dt("2024-01-01 00:00:00")
        );
        assert_eq!(
            call(Func::Minus, &[d("2024-01-03"), d("2024-01-01")]),
            Value::Int(2)
        );
        assert_eq!(
            call(
                Func::Minus,
                &[dt("2024-01-01 00:01:00"), dt("2024-01-01 00:00:00")]
            ),
            Value::Int(60)
        );
    }

    #[test]
    fn arithmetic_rules() {
        assert_eq!(
            call(Func::Divide, &[Value::Int(1), Value::Int(2)]),
            Value::Float(F64(0.5))
        );
        assert_eq!(
            call(Func::Divide, &[Value::Int(1), Value::Int(0)]),
            Value::Float(F64(f64::INFINITY))
        );
        assert_eq!(
            call(Func::IntDiv, &[Value::Int(-7), Value::Int(2)]),
            Value::Int(-3)
        );
        assert_eq!(
            call(Func::IntDiv, &[Value::Float(F64(7.9)), Value::Int(2)]),
            Value::Int(3)
        );
        assert_eq!(
            call(Func::IntDiv, &[Value::Int(7), Value::Int(0)]),
            Value::Null
        );
        assert_eq!(
            call(Func::Modulo, &[Value::Int(-7), Value::Int(3)]),
            Value::Int(-1)
        );
        assert_eq!(
            call(Func::Modulo, &[Value::UInt(7), Value::UInt(0)]),
            Value::Null
        );
        assert_eq!(
            call(Func::Minus, &[Value::UInt(1), Value::UInt(3)]),
            Value::Int(-2)
        );
        assert_eq!(
            call(Func::Plus, &[Value::UInt(1), Value::UInt(3)]),
            Value::UInt(4)
        );
        assert_eq!(
            call(Func::Multiply, &[Value::Int(2), Value::Float(F64(1.5))]),
            Value::Float(F64(3.0))
        );
        assert_eq!(call(Func::Plus, &[Value::Int(2), Value::Null]), Value::Null);
        assert_eq!(
            call(Func::Round, &[Value::Float(F64(2.5))]),
            Value::Float(F64(2.0))
        );
        assert_eq!(
            call(Func::Round, &[Value::Float(F64(1.23456)), Value::Int(2)]),
            Value::Float(F64(1.23))
        );
        assert_eq!(
            call(Func::Round, &[Value::Int(1234), Value::Int(-2)]),
            Value::Int(1200)
        );
        assert_eq!(
            call(Func::Round, &[Value::Int(-1250), Value::Int(-2)]),
            Value::Int(-1300)
        );
        assert_eq!(
            call(Func::Round, &[Value::UInt(u64::MAX), Value::Int(-30)]),
            Value::UInt(0)
        );
        // Out-of-range date arithmetic is NULL, never a panic.
        assert_eq!(
            call(Func::Plus, &[Value::DateTime(i64::MAX), Value::UInt(1)]),
            Value::Null
        );
        assert_eq!(
            call(
                Func::AddInterval(Unit::Year),
                &[Value::Date(0), Value::Int(i64::MAX)]
            ),
            Value::Null
        );
        assert_eq!(
            call(
                Func::AddInterval(Unit::Hour),
                &[Value::DateTime64(0, 9), Value::Int(i64::MAX / 2)]
            ),
            Value::Null
        );
        assert_eq!(
            call(
                Func::ToStartOf(Unit::Hour),
                &[Value::DateTime(1_000_000), Value::Int(i64::MAX)]
            ),
            Value::DateTime(950_400)
        );
        assert_eq!(call(Func::Negate, &[Value::UInt(3)]), Value::Int(-3));
        assert_eq!(
            call(Func::Greatest, &[Value::Int(1), Value::Float(F64(2.5))]),
            Value::Float(F64(2.5))
        );
        assert_eq!(
            call(Func::Least, &[Value::Int(1), Value::UInt(0)]),
            Value::UInt(0)
        );
    }

    #[test]
    fn result_types_follow_clickhouse() {
        use ColumnType as T;
        let rt = |f: Func, a: &[T]| f.result_type(a).unwrap();
        assert_eq!(rt(Func::Plus, &[T::Int(32), T::Int(8)]), T::Int(64));
        assert_eq!(rt(Func::Plus, &[T::UInt(8), T::UInt(8)]), T::UInt(64));
        assert_eq!(rt(Func::Minus, &[T::UInt(8), T::UInt(8)]), T::Int(64));
        assert_eq!(rt(Func::Plus, &[T::UInt(8), T::Float32]), T::Float64);
        assert_eq!(rt(Func::Divide, &[T::Int(8), T::Int(8)]), T::Float64);
        assert_eq!(rt(Func::IntDiv, &[T::Float64, T::Int(8)]), T::Int(64));
        assert_eq!(rt(Func::Eq, &[T::String, T::String]), T::UInt(8));
        assert_eq!(
            rt(Func::Eq, &[T::Nullable(Box::new(T::String)), T::String]),
            T::Nullable(Box::new(T::UInt(8)))
        );
        assert_eq!(rt(Func::Plus, &[T::Date, T::UInt(64)]), T::Date);
        assert_eq!(rt(Func::Minus, &[T::DateTime, T::DateTime]), T::Int(64));
        assert_eq!(
            rt(Func::AddInterval(Unit::Hour), &[T::Date, T::UInt(64)]),
            T::DateTime
        );
        assert_eq!(
            rt(Func::AddInterval(Unit::Month), &[T::Date, T::UInt(64)]),
            T::Date
        );
        assert_eq!(rt(Func::ToStartOf(Unit::Hour), &[T::DateTime]), T::DateTime);
        assert_eq!(rt(Func::ToStartOf(Unit::Day), &[T::Date]), T::DateTime);
        assert_eq!(
            rt(Func::ToStartOf(Unit::Day), &[T::Date, T::UInt(64)]),
            T::Date
        );
        assert_eq!(rt(Func::ToStartOf(Unit::Month), &[T::DateTime]), T::Date);
        assert_eq!(
            rt(Func::FromUnixTimestamp64Milli, &[T::Int(64)]),
            T::DateTime64(3)
        );
        assert_eq!(
            rt(Func::If, &[T::UInt(8), T::UInt(8), T::Int(32)]),
            T::Int(64)
        );
        assert_eq!(
            rt(
                Func::MultiIf,
                &[T::UInt(8), T::String, T::Nullable(Box::new(T::String))]
            ),
            T::Nullable(Box::new(T::String))
        );
        assert_eq!(
            rt(Func::Array, &[T::UInt(8), T::Int(8)]),
            T::Array(Box::new(T::Int(64)))
        );
        assert_eq!(
            rt(
                Func::ArrayElement,
                &[T::Array(Box::new(T::String)), T::UInt(64)]
            ),
            T::String
        );
        assert!(Func::If.result_type(&[T::UInt(8)]).is_err());
        assert!(Func::ArrayElement
            .result_type(&[T::String, T::UInt(8)])
            .is_err());
        let e = Func::Substring.result_type(&[T::String]).unwrap_err();
        assert!(e.contains("substring takes 2 to 3"), "{e}");
    }

    #[test]
    fn logic_is_three_valued() {
        let (t, f, n) = (Value::UInt(1), Value::UInt(0), Value::Null);
        assert_eq!(call(Func::And, &[t.clone(), n.clone()]), Value::Null);
        assert_eq!(call(Func::And, &[f.clone(), n.clone()]), Value::UInt(0));
        assert_eq!(call(Func::Or, &[t.clone(), n.clone()]), Value::UInt(1));
        assert_eq!(call(Func::Or, &[f.clone(), n.clone()]), Value::Null);
        assert_eq!(call(Func::Not, &[Value::Null]), Value::Null);
        assert_eq!(call(Func::Not, &[Value::UInt(0)]), Value::UInt(1));
        assert_eq!(call(Func::Xor, &[t.clone(), f.clone()]), Value::UInt(1));
        assert_eq!(call(Func::Eq, &[Value::Int(1), n.clone()]), Value::Null);
        assert_eq!(call(Func::IsNull, &[Value::Null]), Value::UInt(1));
        assert_eq!(
            call(Func::Coalesce, &[n.clone(), Value::Int(3), Value::Int(4)]),
            Value::Int(3)
        );
        assert_eq!(
            call(Func::IfNull, &[n.clone(), Value::Int(3)]),
            Value::Int(3)
        );
        assert_eq!(
            call(Func::NullIf, &[Value::Int(3), Value::UInt(3)]),
            Value::Null
        );
        assert_eq!(
            call(
                Func::MultiIf,
                &[
                    f.clone(),
                    Value::str("a"),
                    t.clone(),
                    Value::str("b"),
                    Value::str("c")
                ]
            ),
            Value::str("b")
        );
    }

    #[test]
    fn comparisons_cross_types() {
        assert_eq!(
            call(Func::Eq, &[Value::Int(3), Value::UInt(3)]),
            Value::UInt(1)
        );
        assert_eq!(
            call(Func::Lt, &[Value::Float(F64(2.5)), Value::Int(3)]),
            Value::UInt(1)
        );
        assert_eq!(
            call(
                Func::GtEq,
                &[dt("2024-01-01 10:00:00"), Value::str("2024-01-01")]
            ),
            Value::UInt(1)
        );
        assert_eq!(
            call(Func::Eq, &[d("2024-01-01"), dt("2024-01-01 00:00:00")]),
            Value::UInt(1)
        );
        assert_eq!(
            call(Func::In, &[Value::Int(2), Value::Int(1), Value::UInt(2)]),
            Value::UInt(1)
        );
        assert_eq!(
            call(
                Func::NotIn,
                &[Value::str("x"), Value::Array(vec![Value::str("x")].into())]
            ),
            Value::UInt(0)
        );
        assert_eq!(
            call(
                Func::Has,
                &[Value::Array(vec![Value::UInt(1)].into()), Value::Int(1)]
            ),
            Value::UInt(1)
        );
    }

    #[test]
    fn strings() {
        let s = |v: &str| Value::str(v);
        assert!(like_match("abc", "a%", false));
        assert!(like_match("abc", "_b_", false));
        assert!(!like_match("abc", "b%", false));
        assert!(like_match("abc", "%", false));
        assert!(like_match("", "%", false));
        assert!(!like_match("", "_", false));
        assert!(like_match("a%c", "a\\%c", false));
        assert!(!like_match("abc", "a\\%c", false));
        assert!(like_match("xxaxxbxx", "%a%b%", false));
        assert!(like_match("héllo", "h_llo", false));
        assert!(like_match("HeLLo", "%ll%", true));
        assert!(like_match("ÉCOLE", "école", true));
        assert!(!like_match("mississippi", "%sip%x", false));
        assert!(like_match("mississippi", "%iss%ppi", false));
        assert_eq!(call(Func::ILike, &[s("ABC"), s("a%")]), Value::UInt(1));
        assert_eq!(call(Func::NotLike, &[s("ABC"), s("a%")]), Value::UInt(1));
        assert_eq!(call(Func::Like, &[Value::Null, s("a%")]), Value::Null);
        assert_eq!(call(Func::Lower, &[s("ÀB")]), s("Àb"));
        assert_eq!(call(Func::LowerUtf8, &[s("ÀB")]), s("àb"));
        assert_eq!(call(Func::UpperUtf8, &[s("àb")]), s("ÀB"));
        assert_eq!(call(Func::Length, &[s("é")]), Value::UInt(2));
        assert_eq!(call(Func::LengthUtf8, &[s("é")]), Value::UInt(1));
        assert_eq!(
            call(Func::Concat, &[s("a"), Value::Int(1), s("b")]),
            s("a1b")
        );
        assert_eq!(call(Func::Concat, &[s("a"), Value::Null]), Value::Null);
        assert_eq!(
            call(Func::Substring, &[s("hello"), Value::Int(2), Value::Int(3)]),
            s("ell")
        );
        assert_eq!(
            call(Func::Substring, &[s("hello"), Value::Int(-3)]),
            s("llo")
        );
        assert_eq!(
            call(
                Func::SubstringUtf8,
                &[s("héllo"), Value::Int(2), Value::Int(2)]
            ),
            s("él")
        );
        assert_eq!(
            call(Func::StartsWith, &[s("hello"), s("he")]),
            Value::UInt(1)
        );
        assert_eq!(call(Func::EndsWith, &[s("hello"), s("lo")]), Value::UInt(1));
        assert_eq!(call(Func::Position, &[s("hello"), s("l")]), Value::UInt(3));
        assert_eq!(call(Func::Position, &[s("hello"), s("z")]), Value::UInt(0));
        assert_eq!(
            call(Func::ReplaceAll, &[s("a-b-c"), s("-"), s("+")]),
            s("a+b+c")
        );
        assert_eq!(call(Func::Trim, &[s("  a b  ")]), s("a b"));
        assert_eq!(call(Func::TrimLeft, &[s("  a ")]), s("a "));
        assert_eq!(call(Func::TrimRight, &[s("  a ")]), s("  a"));
        assert_eq!(
            call(Func::SplitByChar, &[s("-"), s("a-b")]),
            Value::Array(vec![s("a"), s("b")].into())
        );
        assert_eq!(
            call(Func::SplitByString, &[s("::"), s("a::b::")]),
            Value::Array(vec![s("a"), s("b"), s("")].into())
        );
        assert_eq!(call(Func::Empty, &[s("")]), Value::UInt(1));
        assert_eq!(call(Func::NotEmpty, &[s("")]), Value::UInt(0));
        assert_eq!(call(Func::ToString, &[Value::Float(F64(2.0))]), s("2"));
        assert_eq!(call(Func::ToString, &[d("2024-01-02")]), s("2024-01-02"));
        assert_eq!(
            call(Func::Domain, &[s("https://user@www.x.com:8080/a?b")]),
            s("www.x.com")
        );
        assert_eq!(
            call(Func::DomainWithoutWww, &[s("https://www.x.com/a")]),
            s("x.com")
        );
        assert_eq!(
            call(Func::UrlPath, &[s("https://x.com/a/b?c#d")]),
            s("/a/b")
        );
        // The values ClickHouse gives.
        let hierarchy = |u: &str| match call(Func::UrlHierarchy, &[s(u)]) {
            Value::Array(items) => items
                .iter()
                .map(|v| text(v).into_owned())
                .collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            hierarchy("http://ya.ru/a/b?c=1#x"),
            [
                "http://ya.ru/",
                "http://ya.ru/a/",
                "http://ya.ru/a/b?",
                "http://ya.ru/a/b?c=1#",
                "http://ya.ru/a/b?c=1#x"
            ]
        );
        assert_eq!(
            hierarchy("https://www.x.com:8080/a//b/?q=1&r=2#f"),
            [
                "https://www.x.com:8080/",
                "https://www.x.com:8080/a/",
                "https://www.x.com:8080/a//b/",
                "https://www.x.com:8080/a//b/?q=1&r=2#",
                "https://www.x.com:8080/a//b/?q=1&r=2#f"
            ]
        );
        assert_eq!(hierarchy("http://ya.ru"), ["http://ya.ru"]);
        assert_eq!(hierarchy("example.com/a/b"), ["example.com/a/b"]);
        assert!(hierarchy("").is_empty());
        let url = s("https://x.com/a?utm_source=go%20o&b=2#c=3");
        assert_eq!(
            call(Func::ExtractUrlParameter, &[url.clone(), s("utm_source")]),
            s("go%20o")
        );
        assert_eq!(
            call(Func::ExtractUrlParameter, &[url.clone(), s("c")]),
            s("3")
        );
        assert_eq!(call(Func::ExtractUrlParameter, &[url, s("zz")]), s(""));
        assert_eq!(
            call(Func::DecodeUrlFormComponent, &[s("a+b%20c")]),
            s("a b c")
        );
        // The values ClickHouse gives.
        assert_eq!(
            call(Func::EncodeUrlFormComponent, &[s("a b&c/d=é")]),
            s("a+b%26c%2Fd%3D%C3%A9")
        );
        assert_eq!(
            call(Func::EncodeUrlComponent, &[s("a b&c/d=é~-_.")]),
            s("a%20b%26c%2Fd%3D%C3%A9~-_.")
        );
        let ints = |v: &[u64]| Value::Array(v.iter().map(|i| Value::UInt(*i)).collect());
        assert_eq!(
            call(
                Func::ArrayIntersect,
                &[ints(&[3, 1, 2, 1]), ints(&[1, 2, 5])]
            ),
            ints(&[1, 2])
        );
        let ua = s("Mozilla/5.0 (iPhone; CPU) curl/8");
        assert_eq!(
            call(Func::Match, &[ua.clone(), s(r"wget|curl|\+https://")]),
            Value::UInt(1)
        );
        assert_eq!(
            call(Func::Match, &[ua.clone(), s("android")]),
            Value::UInt(0)
        );
        assert_eq!(
            call(Func::Match, &[ua.clone(), s("(unclosed")]),
            Value::UInt(0)
        );
        assert_eq!(call(Func::Extract, &[ua.clone(), s(r"curl/(\d+)")]), s("8"));
        assert_eq!(call(Func::Extract, &[ua, s(r"i[A-Z]\w+")]), s("iPhone"));
        assert_eq!(
            call(
                Func::ReplaceRegexpAll,
                &[s("a1b22c"), s(r"(\d+)"), s(r"<\1>")]
            ),
            s("a<1>b<22>c")
        );
        assert_eq!(
            call(Func::ReplaceRegexpOne, &[s("a1b22c"), s(r"\d+"), s("$")]),
            s("a$b22c")
        );
        assert_eq!(
            call(Func::DecodeUrlComponent, &[s("a+b%20c%2")]),
            s("a+b c%2")
        );
        let t = Value::DateTime(time::parse_datetime("2024-03-05 07:08:09", 0).unwrap());
        assert_eq!(
            call(Func::FormatDateTime, &[t, s("%Y-%m-%d %H:%i:%S %M %F %T %D %e %j %b %a %p %I %y|%FT%T.000%z")]),
            s("2024-03-05 07:08:09 March 2024-03-05 07:08:09 03/05/24 5 065 Mar Tue AM 07 24|2024-03-05T07:08:09.000+0000")
        );
    }

    #[test]
    fn casts() {
        use ColumnType as T;
        let s = |v: &str| Value::str(v);
        assert_eq!(call(Func::Cast(T::Int(32)), &[s("42")]), Value::Int(42));
        assert_eq!(call(Func::Cast(T::Int(32)), &[s("x")]), Value::Null);
        assert_eq!(call(Func::CastOrZero(T::Int(32)), &[s("x")]), Value::Int(0));
        assert_eq!(
            call(Func::Cast(T::UInt(8)), &[Value::Int(300)]),
            Value::Null
        );
        assert_eq!(
            call(Func::Cast(T::Int(64)), &[Value::Float(F64(2.9))]),
            Value::Int(2)
        );
        assert_eq!(
            call(Func::Cast(T::Float64), &[s("2.5")]),
            Value::Float(F64(2.5))
        );
        assert_eq!(call(Func::Cast(T::String), &[Value::Int(7)]), s("7"));
        assert_eq!(call(Func::ToDate, &[s("2024-01-02")]), d("2024-01-02"));
        assert_eq!(
            call(Func::ToDate, &[s("2024-01-02 10:00:00")]),
            d("2024-01-02")
        );
        assert_eq!(
            call(Func::ToDate, &[dt("2024-01-02 23:59:59")]),
            d("2024-01-02")
        );
        assert_eq!(
            call(Func::ToDateTime, &[s("2024-01-02 10:00:00")]),
            dt("2024-01-02 10:00:00")
        );
        assert_eq!(
            call(Func::ToDateTime, &[Value::UInt(1_704_189_600)]),
            dt("2024-01-02 10:00:00")
        );
        assert_eq!(
            call(Func::ToDateTime64(3), &[dt("1970-01-01 00:00:01")]),
            Value::DateTime64(1000, 3)
        );
    }

    #[test]
    fn arrays_tuples_and_json() {
        let arr = Value::Array(vec![Value::str("a"), Value::str("b")].into());
        assert_eq!(
            call(Func::ArrayElement, &[arr.clone(), Value::Int(1)]),
            Value::str("a")
        );
        assert_eq!(
            call(Func::ArrayElement, &[arr.clone(), Value::Int(-1)]),
            Value::str("b")
        );
        assert_eq!(
            call(Func::ArrayElement, &[arr.clone(), Value::Int(3)]),
            Value::Null
        );
        assert_eq!(
            call(Func::IndexOf, &[arr.clone(), Value::str("b")]),
            Value::UInt(2)
        );
        assert_eq!(
            call(Func::Length, std::slice::from_ref(&arr)),
            Value::UInt(2)
        );
        assert_eq!(
            call(
                Func::TupleElement(2),
                &[Value::Tuple(vec![Value::Int(1), Value::Int(2)].into())]
            ),
            Value::Int(2)
        );
        let doc = Value::str(
            r#"{"a": "key", "key": "v\"1\u00e9", "n": 12, "f": 1.5, "b": true, "o": {"x": [10, {"y": "z"}]}}"#,
        );
        let j = |f: Func, path: &[Value]| {
            let mut args = vec![doc.clone()];
            args.extend_from_slice(path);
            call(f, &args)
        };
        assert_eq!(
            j(Func::JsonExtractString, &[Value::str("key")]),
            Value::str("v\"1é")
        );
        assert_eq!(
            j(Func::JsonExtractString, &[Value::str("a")]),
            Value::str("key")
        );
        // A value that is not a string comes back as its compact JSON (ClickHouse 24+).
        assert_eq!(
            j(Func::JsonExtractString, &[Value::str("n")]),
            Value::str("12")
        );
        assert_eq!(
            j(Func::JsonExtractString, &[Value::str("o")]),
            Value::str(r#"{"x":[10,{"y":"z"}]}"#)
        );
        assert_eq!(
            j(Func::JsonExtractString, &[Value::str("zz")]),
            Value::str("")
        );
        assert_eq!(j(Func::JsonExtractInt, &[Value::str("n")]), Value::Int(12));
        assert_eq!(
            j(Func::JsonExtractFloat, &[Value::str("f")]),
            Value::Float(F64(1.5))
        );
        assert_eq!(j(Func::JsonExtractBool, &[Value::str("b")]), Value::UInt(1));
        assert_eq!(
            j(
                Func::JsonExtractString,
                &[
                    Value::str("o"),
                    Value::str("x"),
                    Value::Int(2),
                    Value::str("y")
                ]
            ),
            Value::str("z")
        );
        assert_eq!(
            j(
                Func::JsonExtractInt,
                &[Value::str("o"), Value::str("x"), Value::Int(-2)]
            ),
            Value::Int(10)
        );
        assert_eq!(
            j(Func::JsonExtractRaw, &[Value::str("o"), Value::str("x")]),
            Value::str(r#"[10, {"y": "z"}]"#)
        );
        assert_eq!(j(Func::JsonHas, &[Value::str("o")]), Value::UInt(1));
        assert_eq!(j(Func::JsonHas, &[Value::str("q")]), Value::UInt(0));
        assert_eq!(
            call(
                Func::JsonExtractString,
                &[Value::str("not json"), Value::str("a")]
            ),
            Value::str("")
        );
    }

    #[test]
    fn city_hash_matches_clickhouse() {
        // Values from ClickHouse (`SELECT cityHash64(s)`).
        for (s, h) in [
            ("", 11160318154034397263u64),
            ("a", 2603192927274642682),
            ("Moscow", 12507901496292878638),
            ("abcdefghi", 7406163328168016081),
            ("0123456789=012345", 9851079735554060767),
            ("miDTZ-Ws)_sU%Pl,bXYjmwXkzQjbz_HOSz%RhC", 11251631013238783039),
            (
                "ELpv?oO+aFM=G^M$tJ.qiio@Ri-FfgJqZoD*hbaBFv!n$suk.dsqW$#QXF!msfnWVFs*Ai)iEkjUGn)B*fV!U$h=%+K XQcJOXGRg%",
                18124490703513715163,
            ),
        ] {
            assert_eq!(call(Func::CityHash64, &[Value::str(s)]), Value::UInt(h), "{s}");
        }
        assert_eq!(call(Func::CityHash64, &[Value::Null]), Value::Null);
        let two = call(Func::CityHash64, &[Value::str("a"), Value::Int(1)]);
        assert_ne!(two, call(Func::CityHash64, &[Value::str("a")]));
        assert_eq!(
            two,
            call(
                Func::CityHash64,
                &[Value::Tuple(vec![Value::str("a"), Value::Int(1)].into())]
            )
        );
    }
}
