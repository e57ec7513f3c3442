//! ClickHouse column types: parsed from datafiles, inferred by the SQL planner, printed in
//! the `meta` of every result, and used to turn text and JSON into typed [`Value`]s.

use crate::domain::Domain;
use crate::time;
use crate::value::{Value, F64};

/// A ClickHouse column type, as far as Petrel stores and computes it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ColumnType {
    /// `Bool`.
    Bool,
    /// `Int8` .. `Int64`, with the width in bits.
    Int(u8),
    /// `UInt8` .. `UInt64`, with the width in bits.
    UInt(u8),
    /// `Float32`.
    Float32,
    /// `Float64`.
    Float64,
    /// `String` (and `FixedString(n)`, `JSON` kept as text).
    String,
    /// `UUID`.
    Uuid,
    /// `Date` / `Date32`: days since the epoch.
    Date,
    /// `DateTime[(tz)]`: seconds since the epoch.
    DateTime,
    /// `DateTime64(p[, tz])`: ticks of 10^-p seconds.
    DateTime64(u8),
    /// `Nullable(T)`.
    Nullable(Box<ColumnType>),
    /// `LowCardinality(T)`: stored as `T`, printed as written.
    LowCardinality(Box<ColumnType>),
    /// `Array(T)`.
    Array(Box<ColumnType>),
    /// `Tuple(T1, T2, ..)`.
    Tuple(Vec<ColumnType>),
    /// `Map(K, V)`.
    Map(Box<ColumnType>, Box<ColumnType>),
    /// `Enum8/16`, `IPv4`/`IPv6`, `Decimal(P, S)`: stored as `String` or `Float64`, with the
    /// values the type accepts (see [`Domain`]).
    Domain(Box<Domain>),
    /// `AggregateFunction(f, T..)` or `SimpleAggregateFunction(f, T)`: the stored state of an
    /// aggregate, read back with `-Merge`.
    AggregateState {
        /// True for `SimpleAggregateFunction`.
        simple: bool,
        /// The aggregate's name, e.g. `count` or `argMax`.
        function: String,
        /// The argument types.
        args: Vec<ColumnType>,
    },
}

/// A type that could not be parsed or is not supported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypeError {
    /// The text is not a type Petrel knows.
    #[error("unknown or unsupported type '{0}'")]
    Unknown(String),
    /// The type is written wrongly.
    #[error("malformed type '{0}'")]
    Malformed(String),
}

impl ColumnType {
    /// Parses ClickHouse type text such as `LowCardinality(Nullable(String))` or `DateTime64(3)`.
    pub fn parse(text: &str) -> Result<ColumnType, TypeError> {
        let t = text.trim();
        let (name, args) = match t.find('(') {
            Some(open) => {
                if !t.ends_with(')') {
                    return Err(TypeError::Malformed(text.to_string()));
                }
                (t[..open].trim(), Some(&t[open + 1..t.len() - 1]))
            }
            None => (t, None),
        };
        let parts = args.map(split_top_level).unwrap_or_default();
        if let Some(domain) = Domain::parse(name, &parts) {
            return domain
                .map(|d| ColumnType::Domain(Box::new(d)))
                .map_err(|()| TypeError::Malformed(text.to_string()));
        }
        let one = |parts: &[&str]| -> Result<ColumnType, TypeError> {
            match parts {
                [inner] => ColumnType::parse(inner),
                _ => Err(TypeError::Malformed(text.to_string())),
            }
        };
        Ok(match name {
            "Bool" | "bool" | "Boolean" => ColumnType::Bool,
            "Int8" => ColumnType::Int(8),
            "Int16" => ColumnType::Int(16),
            "Int32" => ColumnType::Int(32),
            "Int64" => ColumnType::Int(64),
            "UInt8" => ColumnType::UInt(8),
            "UInt16" => ColumnType::UInt(16),
            "UInt32" => ColumnType::UInt(32),
            "UInt64" => ColumnType::UInt(64),
            "Float32" => ColumnType::Float32,
            "Float64" => ColumnType::Float64,
            "String" | "FixedString" | "JSON" => ColumnType::String,
            "UUID" => ColumnType::Uuid,
            "Date" | "Date32" => ColumnType::Date,
            "DateTime" => ColumnType::DateTime,
            "DateTime64" => {
                let p = parts
                    .first()
                    .and_then(|p| p.trim().parse::<u8>().ok())
                    .filter(|p| *p <= 9)
                    .ok_or_else(|| TypeError::Malformed(text.to_string()))?;
                ColumnType::DateTime64(p)
            }
            "Nullable" => ColumnType::Nullable(Box::new(one(&parts)?)),
            "LowCardinality" => ColumnType::LowCardinality(Box::new(one(&parts)?)),
            "Array" => ColumnType::Array(Box::new(one(&parts)?)),
            "Tuple" => ColumnType::Tuple(
                parts
                    .iter()
                    .map(|p| ColumnType::parse(strip_tuple_name(p)))
                    .collect::<Result<_, _>>()?,
            ),
            "Map" => match parts.as_slice() {
                [k, v] => ColumnType::Map(
                    Box::new(ColumnType::parse(k)?),
                    Box::new(ColumnType::parse(v)?),
                ),
                _ => return Err(TypeError::Malformed(text.to_string())),
            },
            "AggregateFunction" | "SimpleAggregateFunction" => {
                let (function, args) = parts
                    .split_first()
                    .ok_or_else(|| TypeError::Malformed(text.to_string()))?;
                ColumnType::AggregateState {
                    simple: name == "SimpleAggregateFunction",
                    function: function.trim().to_string(),
                    args: args
                        .iter()
                        .map(|a| ColumnType::parse(a))
                        .collect::<Result<_, _>>()?,
                }
            }
            _ => return Err(TypeError::Unknown(text.to_string())),
        })
    }

    /// The type as ClickHouse prints it in a result's `meta`.
    pub fn name(&self) -> String {
        match self {
            ColumnType::Bool => "Bool".into(),
            ColumnType::Int(b) => format!("Int{b}"),
            ColumnType::UInt(b) => format!("UInt{b}"),
            ColumnType::Float32 => "Float32".into(),
            ColumnType::Float64 => "Float64".into(),
            ColumnType::String => "String".into(),
            ColumnType::Uuid => "UUID".into(),
            ColumnType::Date => "Date".into(),
            ColumnType::DateTime => "DateTime".into(),
            ColumnType::DateTime64(p) => format!("DateTime64({p})"),
            ColumnType::Nullable(t) => format!("Nullable({})", t.name()),
            ColumnType::LowCardinality(t) => format!("LowCardinality({})", t.name()),
            ColumnType::Array(t) => format!("Array({})", t.name()),
            ColumnType::Tuple(ts) => format!(
                "Tuple({})",
                ts.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ")
            ),
            ColumnType::Map(k, v) => format!("Map({}, {})", k.name(), v.name()),
            ColumnType::Domain(d) => d.name(),
            ColumnType::AggregateState {
                simple,
                function,
                args,
            } => format!(
                "{}({}{})",
                if *simple {
                    "SimpleAggregateFunction"
                } else {
                    "AggregateFunction"
                },
                function,
                args.iter()
                    .map(|a| format!(", {}", a.name()))
                    .collect::<String>()
            ),
        }
    }

    /// The type of the values Petrel stores for a column: for `AggregateFunction(f, T..)` and
    /// `SimpleAggregateFunction(f, T)` the state of `f` as Petrel keeps it (a count as UInt64,
    /// `avg` as `(sum, count)`, `uniq` as the array of distinct values, `argMax(A, B)` as
    /// `(A, B)`), so `-Merge` reads them; every other type is itself.
    pub fn stored(&self) -> ColumnType {
        let ColumnType::AggregateState {
            simple,
            function,
            args,
        } = self
        else {
            return self.clone();
        };
        let arg = |i: usize| args.get(i).cloned().unwrap_or(ColumnType::UInt(64));
        let f = function.to_ascii_lowercase();
        let f = f.trim_end_matches("if");
        if *simple {
            return arg(0);
        }
        match f {
            "count" => ColumnType::UInt(64),
            "sum" => match arg(0).base() {
                ColumnType::Float32 | ColumnType::Float64 => ColumnType::Float64,
                ColumnType::Int(_) => ColumnType::Int(64),
                _ => ColumnType::UInt(64),
            },
            "avg" => ColumnType::Tuple(vec![ColumnType::Float64, ColumnType::UInt(64)]),
            "uniq" | "uniqexact" | "uniqcombined" | "uniqcombined64" | "uniqhll12" => {
                ColumnType::Array(Box::new(arg(0)))
            }
            "argmax" | "argmin" => ColumnType::Tuple(vec![arg(0), arg(1)]),
            _ => arg(0),
        }
    }

    /// The type with `Nullable` and `LowCardinality` wrappers removed.
    pub fn base(&self) -> &ColumnType {
        static STRING: ColumnType = ColumnType::String;
        static FLOAT64: ColumnType = ColumnType::Float64;
        match self {
            ColumnType::Nullable(t) | ColumnType::LowCardinality(t) => t.base(),
            ColumnType::Domain(d) if d.is_number() => &FLOAT64,
            ColumnType::Domain(_) => &STRING,
            t => t,
        }
    }

    /// The domain type (`Enum`, `IPv4`, `Decimal`, ..) under `Nullable`/`LowCardinality`.
    pub fn domain(&self) -> Option<&Domain> {
        match self {
            ColumnType::Nullable(t) | ColumnType::LowCardinality(t) => t.domain(),
            ColumnType::Domain(d) => Some(d),
            _ => None,
        }
    }

    /// True for `Nullable(T)` (also under `LowCardinality`).
    pub fn is_nullable(&self) -> bool {
        match self {
            ColumnType::Nullable(_) => true,
            ColumnType::LowCardinality(t) => t.is_nullable(),
            _ => false,
        }
    }

    /// True for the integer, float and boolean types.
    pub fn is_numeric(&self) -> bool {
        matches!(
            self.base(),
            ColumnType::Int(_)
                | ColumnType::UInt(_)
                | ColumnType::Float32
                | ColumnType::Float64
                | ColumnType::Bool
        )
    }

    /// The value a non-nullable column takes when a row leaves it out (ClickHouse's defaults).
    pub fn default_value(&self) -> Value {
        match self.base() {
            _ if self.is_nullable() => Value::Null,
            _ if self.domain().is_some() => self
                .domain()
                .map(Domain::default_value)
                .unwrap_or(Value::Null),
            ColumnType::Bool => Value::Bool(false),
            ColumnType::Int(_) => Value::Int(0),
            ColumnType::UInt(_) => Value::UInt(0),
            ColumnType::Float32 | ColumnType::Float64 => Value::Float(F64(0.0)),
            ColumnType::String | ColumnType::AggregateState { .. } => Value::str(""),
            ColumnType::Uuid => Value::Uuid(0.into()),
            ColumnType::Date => Value::Date(0),
            ColumnType::DateTime => Value::DateTime(0),
            ColumnType::DateTime64(p) => Value::DateTime64(0, *p),
            ColumnType::Array(_) => Value::Array(Box::default()),
            ColumnType::Tuple(ts) => Value::Tuple(ts.iter().map(|t| t.default_value()).collect()),
            ColumnType::Map(_, _) => Value::Map(Box::default()),
            ColumnType::Nullable(_) | ColumnType::LowCardinality(_) | ColumnType::Domain(_) => {
                Value::Null
            }
        }
    }

    /// Converts a value of another type into this type, as `CAST` does; `None` when it does
    /// not fit (a string that is not a number, an integer out of range, ..).
    pub fn coerce(&self, v: &Value) -> Option<Value> {
        if v.is_null() {
            return if self.is_nullable() {
                Some(Value::Null)
            } else {
                None
            };
        }
        if let Some(domain) = self.domain() {
            return domain.admit(v);
        }
        match (self.base(), v) {
            (_, Value::String(s)) if !matches!(self.base(), ColumnType::String) => {
                self.parse_text(s)
            }
            (ColumnType::Bool, _) => v.as_f64().map(|f| Value::Bool(f != 0.0)),
            (ColumnType::Int(bits), _) => {
                let i = integer_of(v)?;
                let (lo, hi) = int_range(*bits);
                (lo..=hi).contains(&i).then_some(Value::Int(i as i64))
            }
            (ColumnType::UInt(bits), _) => {
                let i = integer_of(v)?;
                let hi = if *bits == 64 {
                    u64::MAX as i128
                } else {
                    (1i128 << bits) - 1
                };
                (0..=hi).contains(&i).then_some(Value::UInt(i as u64))
            }
            (ColumnType::Float32, _) => v.as_f64().map(|f| Value::Float(F64((f as f32) as f64))),
            (ColumnType::Float64, _) => v.as_f64().map(|f| Value::Float(F64(f))),
            (ColumnType::String, Value::String(_)) => Some(v.clone()),
            (ColumnType::String, _) => Some(Value::from(v.to_text())),
            (ColumnType::Date, _) => match v {
                Value::Date(_) => Some(v.clone()),
                Value::DateTime(s) => Some(Value::Date(s.div_euclid(86_400) as i32)),
                Value::DateTime64(t, p) => Some(Value::Date(
                    (t.div_euclid(10i64.pow(*p as u32))).div_euclid(86_400) as i32,
                )),
                Value::Int(_) | Value::UInt(_) => v.as_i64().map(|d| Value::Date(d as i32)),
                _ => None,
            },
            (ColumnType::DateTime, _) => match v {
                Value::DateTime(_) => Some(v.clone()),
                Value::Date(d) => Some(Value::DateTime(*d as i64 * 86_400)),
                Value::DateTime64(t, p) => {
                    Some(Value::DateTime(t.div_euclid(10i64.pow(*p as u32))))
                }
                Value::Int(_) | Value::UInt(_) | Value::Float(_) => {
                    v.as_f64().map(|s| Value::DateTime(s as i64))
                }
                _ => None,
            },
            (ColumnType::DateTime64(p), _) => {
                let scale = 10i64.pow(*p as u32);
                match v {
                    Value::DateTime64(t, q) => Some(Value::DateTime64(rescale(*t, *q, *p), *p)),
                    Value::DateTime(s) => Some(Value::DateTime64(s * scale, *p)),
                    Value::Date(d) => Some(Value::DateTime64(*d as i64 * 86_400 * scale, *p)),
                    Value::Int(_) | Value::UInt(_) | Value::Float(_) => v
                        .as_f64()
                        .map(|s| Value::DateTime64((s * scale as f64) as i64, *p)),
                    _ => None,
                }
            }
            (ColumnType::Uuid, Value::Uuid(_)) => Some(v.clone()),
            (ColumnType::Array(inner), Value::Array(items)) => Some(Value::Array(
                items
                    .iter()
                    .map(|i| inner.coerce(i))
                    .collect::<Option<Box<[_]>>>()?,
            )),
            (ColumnType::Tuple(types), Value::Tuple(items)) if types.len() == items.len() => {
                Some(Value::Tuple(
                    types
                        .iter()
                        .zip(items)
                        .map(|(t, i)| t.coerce(i))
                        .collect::<Option<Box<[_]>>>()?,
                ))
            }
            (ColumnType::Map(k, v), Value::Map(pairs)) => Some(Value::Map(
                pairs
                    .iter()
                    .map(|(key, value)| Some((k.coerce(key)?, v.coerce(value)?)))
                    .collect::<Option<Box<[_]>>>()?,
            )),
            (ColumnType::AggregateState { .. }, _) => Some(v.clone()),
            _ => None,
        }
    }

    /// Parses the text form of a value of this type (CSV fields, query parameters, JSON
    /// strings holding numbers or dates). `None` when the text does not fit the type.
    pub fn parse_text(&self, s: &str) -> Option<Value> {
        if let Some(domain) = self.domain() {
            if self.is_nullable() && matches!(s, "" | "\\N" | "null" | "NULL") {
                return Some(Value::Null);
            }
            return domain.admit(&Value::from(s));
        }
        match self.base() {
            // `\N` is ClickHouse's NULL in text formats.
            ColumnType::String if self.is_nullable() && s == "\\N" => Some(Value::Null),
            ColumnType::String => Some(Value::from(s)),
            _ if self.is_nullable()
                && (s.is_empty() || s == "\\N" || s == "null" || s == "NULL") =>
            {
                Some(Value::Null)
            }
            ColumnType::Bool => match s.trim() {
                "1" | "true" | "True" | "TRUE" => Some(Value::Bool(true)),
                "0" | "false" | "False" | "FALSE" => Some(Value::Bool(false)),
                _ => None,
            },
            ColumnType::Int(_) | ColumnType::UInt(_) => {
                let t = s.trim();
                let v = if let Ok(i) = t.parse::<i64>() {
                    Value::Int(i)
                } else {
                    Value::UInt(t.parse::<u64>().ok()?)
                };
                self.coerce(&v)
            }
            ColumnType::Float32 | ColumnType::Float64 => {
                let f = match s.trim() {
                    "inf" | "+inf" => f64::INFINITY,
                    "-inf" => f64::NEG_INFINITY,
                    "nan" => f64::NAN,
                    t => t.parse::<f64>().ok()?,
                };
                self.coerce(&Value::Float(F64(f)))
            }
            ColumnType::Date => time::parse_date(s).map(|d| Value::Date(d as i32)),
            // Digits alone are seconds since the epoch, as ClickHouse reads them.
            ColumnType::DateTime | ColumnType::DateTime64(_)
                if !s.trim().is_empty() && s.trim().bytes().all(|b| b.is_ascii_digit()) =>
            {
                self.coerce(&Value::DateTime(s.trim().parse().ok()?))
            }
            ColumnType::DateTime => time::parse_datetime(s, 0).map(Value::DateTime),
            ColumnType::DateTime64(p) => {
                time::parse_datetime(s, *p).map(|t| Value::DateTime64(t, *p))
            }
            ColumnType::Uuid => parse_uuid(s).map(|u| Value::Uuid(u.into())),
            ColumnType::Array(inner) => {
                let t = s.trim();
                let body = t.strip_prefix('[')?.strip_suffix(']')?;
                if body.trim().is_empty() {
                    return Some(Value::Array(Box::default()));
                }
                split_top_level(body)
                    .into_iter()
                    .map(|item| inner.parse_text(&unquote_text(item)))
                    .collect::<Option<Box<[_]>>>()
                    .map(Value::Array)
            }
            ColumnType::AggregateState { .. } => Some(Value::from(s)),
            // ClickHouse's text form `{'k':v,...}` (CSV, TSV).
            ColumnType::Map(k, v) => {
                let body = s.trim().strip_prefix('{')?.strip_suffix('}')?;
                if body.trim().is_empty() {
                    return Some(Value::Map(Box::default()));
                }
                split_top_level(body)
                    .into_iter()
                    .map(|entry| {
                        let (key, value) = split_map_entry(entry)?;
                        Some((
                            k.parse_text(&unquote_text(key))?,
                            v.parse_text(&unquote_text(value))?,
                        ))
                    })
                    .collect::<Option<Box<[_]>>>()
                    .map(Value::Map)
            }
            // ClickHouse's text form `('a',1)`.
            ColumnType::Tuple(types) => {
                let body = s.trim().strip_prefix('(')?.strip_suffix(')')?;
                let items = split_top_level(body);
                if items.len() != types.len() {
                    return None;
                }
                types
                    .iter()
                    .zip(items)
                    .map(|(t, item)| t.parse_text(&unquote_text(item)))
                    .collect::<Option<Box<[_]>>>()
                    .map(Value::Tuple)
            }
            ColumnType::Nullable(_) | ColumnType::LowCardinality(_) | ColumnType::Domain(_) => None,
        }
    }
}

/// A text-form element without its quotes and escapes (`'it\\'s'` → `it's`), else as it is.
fn unquote_text(s: &str) -> String {
    let t = s.trim();
    match t
        .strip_prefix('\'')
        .and_then(|r| r.strip_suffix('\''))
        .or_else(|| t.strip_prefix('"').and_then(|r| r.strip_suffix('"')))
    {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => out.extend(chars.next()),
                    c => out.push(c),
                }
            }
            out
        }
        None => t.to_string(),
    }
}

/// `key:value` of a map's text form, split at the first `:` outside quotes and brackets.
fn split_map_entry(entry: &str) -> Option<(&str, &str)> {
    let (mut depth, mut quote) = (0i32, None);
    for (i, c) in entry.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '[' | '(' | '{') => depth += 1,
            (None, ']' | ')' | '}') => depth -= 1,
            (None, ':') if depth == 0 => return Some((&entry[..i], &entry[i + 1..])),
            _ => {}
        }
    }
    None
}

/// A value as a wide integer, for integer casts (floats truncate; times are their ticks).
fn integer_of(v: &Value) -> Option<i128> {
    Some(match v {
        Value::Float(f) if f.0.is_finite() => f.0.trunc() as i128,
        Value::Int(i) => *i as i128,
        Value::UInt(u) => *u as i128,
        Value::Bool(b) => *b as i128,
        Value::Date(d) => *d as i128,
        Value::DateTime(s) => *s as i128,
        Value::DateTime64(t, _) => *t as i128,
        _ => return None,
    })
}

fn rescale(t: i64, from: u8, to: u8) -> i64 {
    if to >= from {
        t * 10i64.pow((to - from) as u32)
    } else {
        t.div_euclid(10i64.pow((from - to) as u32))
    }
}

fn int_range(bits: u8) -> (i128, i128) {
    let hi = (1i128 << (bits - 1)) - 1;
    (-hi - 1, hi)
}

/// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` into a 128-bit number.
fn parse_uuid(s: &str) -> Option<u128> {
    let hex: String = s.trim().chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    u128::from_str_radix(&hex, 16).ok()
}

/// Splits `a, Nullable(b), c` at the commas that are not inside parentheses or quotes.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match (quote, c) {
            (Some(_), '\\') => escaped = true,
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"' | '`') => quote = Some(c),
            (None, '(' | '[' | '{') => depth += 1,
            (None, ')' | ']' | '}') => depth -= 1,
            (None, ',') if depth == 0 => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if !s[start..].trim().is_empty() {
        out.push(s[start..].trim());
    }
    out
}

/// `Tuple(a String, b Int32)` names its elements: keep only the type.
fn strip_tuple_name(s: &str) -> &str {
    let s = s.trim();
    match s.split_once(' ') {
        Some((first, rest)) if !first.contains('(') => rest.trim(),
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_types() {
        for t in [
            "LowCardinality(Nullable(String))",
            "DateTime64(3)",
            "Array(String)",
            "Map(String, String)",
            "AggregateFunction(argMax, String, DateTime)",
            "SimpleAggregateFunction(max, UInt64)",
            "Tuple(Int32, String)",
        ] {
            assert_eq!(ColumnType::parse(t).unwrap().name(), t);
        }
        assert_eq!(
            ColumnType::parse("DateTime('UTC')").unwrap(),
            ColumnType::DateTime
        );
        assert!(ColumnType::parse("Int").is_err());
        assert!(ColumnType::parse("DateTime64").is_err());
    }

    #[test]
    fn parses_text_by_type() {
        let t = ColumnType::parse("Int8").unwrap();
        assert_eq!(t.parse_text("-5"), Some(Value::Int(-5)));
        assert_eq!(t.parse_text("300"), None);
        let t = ColumnType::parse("UInt32").unwrap();
        assert_eq!(t.parse_text("-1"), None);
        let t = ColumnType::parse("Array(Int32)").unwrap();
        assert_eq!(
            t.parse_text("[1, 2]"),
            Some(Value::Array(vec![Value::Int(1), Value::Int(2)].into()))
        );
        let t = ColumnType::parse("Nullable(Float64)").unwrap();
        assert_eq!(t.parse_text(""), Some(Value::Null));
        assert_eq!(t.parse_text("abc"), None);
    }
}
