//! Parameter types: the typed functions of the template language (`String`, `Int32`,
//! `DateTime`, `Array(x, 'Int32')`, ...), what each accepts (Tinybird's validation rules), and
//! the typed [`Value`] a request value becomes.

use std::fmt;

use petrel_value::{time, ColumnType, Value, F64};

use crate::val::Val;

/// The type a typed parameter function declares.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ParamType {
    /// `String(x)`.
    String,
    /// `Boolean(x)`: `0`/`false` (any case) is false, anything else true. Bound as `UInt8` 1/0,
    /// as Tinybird renders it.
    Boolean,
    /// `Int8(x)` .. `Int256(x)`, with the width in bits; `Int(x)` and `Integer(x)` are `Int32`.
    Int(u16),
    /// `UInt8(x)` .. `UInt256(x)`, with the width in bits.
    UInt(u16),
    /// `Float32(x)`.
    Float32,
    /// `Float64(x)`.
    Float64,
    /// `Date(x)`: `YYYY-MM-DD`.
    Date,
    /// `DateTime(x)`: `YYYY-MM-DD hh:mm:ss` (also with `T`).
    DateTime,
    /// `DateTime64(x)`: `YYYY-MM-DD hh:mm:ss.fff`.
    DateTime64,
    /// `Array(x, 'T')`: a comma-separated list of `T`.
    Array(Box<ParamType>),
    /// `JSON(x)`: parsed for use in template logic; never bound into SQL.
    Json,
}

impl ParamType {
    /// The type's name as templates write it (`Int32`, `Array(String)`, `JSON`).
    pub fn name(&self) -> String {
        match self {
            ParamType::String => "String".into(),
            ParamType::Boolean => "Boolean".into(),
            ParamType::Int(b) => format!("Int{b}"),
            ParamType::UInt(b) => format!("UInt{b}"),
            ParamType::Float32 => "Float32".into(),
            ParamType::Float64 => "Float64".into(),
            ParamType::Date => "Date".into(),
            ParamType::DateTime => "DateTime".into(),
            ParamType::DateTime64 => "DateTime64".into(),
            ParamType::Array(t) => format!("Array({})", t.name()),
            ParamType::Json => "JSON".into(),
        }
    }

    /// The ClickHouse type of the bound value: `Boolean` is `UInt8`, the 128- and 256-bit
    /// integers are bound as 64-bit ones (Petrel's values are 64-bit; wider request values are
    /// rejected), `DateTime64` is nominally `DateTime64(3)` (a value keeps the precision it was
    /// written with, 3 to 9 digits). `None` for `JSON`, which is never bound.
    pub fn column_type(&self) -> Option<ColumnType> {
        Some(match self {
            ParamType::String => ColumnType::String,
            ParamType::Boolean => ColumnType::UInt(8),
            ParamType::Int(b) => ColumnType::Int((*b).min(64) as u8),
            ParamType::UInt(b) => ColumnType::UInt((*b).min(64) as u8),
            ParamType::Float32 => ColumnType::Float32,
            ParamType::Float64 => ColumnType::Float64,
            ParamType::Date => ColumnType::Date,
            ParamType::DateTime => ColumnType::DateTime,
            ParamType::DateTime64 => ColumnType::DateTime64(3),
            ParamType::Array(t) => ColumnType::Array(Box::new(t.column_type()?)),
            ParamType::Json => return None,
        })
    }

    /// The element type `Array(x, 'name')` declares. Names that are not scalar parameter types
    /// (Tinybird accepts anything there) are kept as unvalidated strings.
    pub(crate) fn array_element(name: &str) -> ParamType {
        match crate::expr::Func::from_name(name) {
            Some(crate::expr::Func::Scalar(t)) => t,
            _ => ParamType::String,
        }
    }
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// A typed parameter a template declares: what endpoint docs and build output show.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamDecl {
    /// The parameter's name in the query string.
    pub name: String,
    /// Its declared type.
    pub ty: ParamType,
    /// The default used when the request leaves it out, converted to the type (the literal as
    /// a string when it does not convert; `None` when there is none or it is not a constant).
    pub default: Option<Value>,
    /// True when a request must supply it: `required=True`, or no default where the template
    /// never tests `defined(name)` (`defined=False`, `Boolean` and `JSON` never fail for a
    /// missing value).
    pub required: bool,
    /// `description=`.
    pub description: Option<String>,
    /// `example=`.
    pub example: Option<String>,
    /// `enum=[...]`: the allowed values, as documentation (Tinybird does not enforce them).
    pub enum_values: Vec<String>,
    /// `format=`.
    pub format: Option<String>,
    /// The line of the SQL text where the declaration is.
    pub line: usize,
}

/// The text of a validation failure, as Tinybird words it.
fn invalid(text: &str, ty: &ParamType) -> String {
    format!("Error validating '{text}' to type {}", ty.name())
}

/// Validates the text of a scalar parameter and converts it: the value template logic sees
/// (Tinybird's Python value) and the typed value bound into SQL. `String` and `Boolean` never
/// fail and are handled by the caller; so are `Array` and `JSON`.
pub(crate) fn convert_scalar(ty: &ParamType, text: &str) -> Result<(Val, Value), String> {
    match ty {
        ParamType::Int(bits) | ParamType::UInt(bits) => {
            let signed = matches!(ty, ParamType::Int(_));
            convert_int(text, signed, *bits).map_err(|wide| {
                if wide {
                    format!("{}: Petrel keeps integers to 64 bits", invalid(text, ty))
                } else {
                    invalid(text, ty)
                }
            })
        }
        ParamType::Float32 | ParamType::Float64 => {
            let f = parse_float(text).ok_or_else(|| invalid(text, ty))?;
            let bound = if *ty == ParamType::Float32 {
                (f as f32) as f64
            } else {
                f
            };
            Ok((Val::Float(f), Value::Float(F64(bound))))
        }
        ParamType::Date => {
            let ok = text.len() == 10
                && text.bytes().enumerate().all(|(i, c)| match i {
                    4 | 7 => c == b'-',
                    _ => c.is_ascii_digit(),
                });
            let days = ok
                .then(|| time::parse_date(text))
                .flatten()
                .ok_or_else(|| invalid(text, ty))?;
            Ok((Val::Str(text.to_string()), Value::Date(days as i32)))
        }
        ParamType::DateTime => {
            let (norm, _) = match_datetime(text, false).ok_or_else(|| invalid(text, ty))?;
            let secs = time::parse_datetime(&norm, 0).ok_or_else(|| invalid(text, ty))?;
            Ok((Val::Str(text.to_string()), Value::DateTime(secs)))
        }
        ParamType::DateTime64 => {
            let (norm, digits) = match_datetime(text, true).ok_or_else(|| invalid(text, ty))?;
            let precision = digits.clamp(3, 9) as u8;
            let ticks = time::parse_datetime(&norm, precision).ok_or_else(|| invalid(text, ty))?;
            Ok((
                Val::Str(text.to_string()),
                Value::DateTime64(ticks, precision),
            ))
        }
        ParamType::String | ParamType::Boolean | ParamType::Array(_) | ParamType::Json => {
            Ok((Val::Str(text.to_string()), Value::from(text)))
        }
    }
}

/// Python's `float()` on text, without the `_` digit separators Tinybird refuses.
pub(crate) fn parse_float(text: &str) -> Option<f64> {
    if text.contains('_') {
        return None;
    }
    text.trim().parse::<f64>().ok()
}

/// `Err(true)` when the value is valid for Tinybird but wider than Petrel's 64-bit values.
fn convert_int(text: &str, signed: bool, bits: u16) -> Result<(Val, Value), bool> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    let sign_ok = signed || bits >= 128 || digits.len() == text.len();
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) || !sign_ok {
        return Err(false);
    }
    let Ok(v) = text.parse::<i128>() else {
        // Too long for 128 bits: in range only for the 256-bit types.
        return Err(bits >= 256 && digits.len() <= 78 && (signed || !text.starts_with('-')));
    };
    let in_range = match (signed, bits) {
        (_, b) if b >= 128 && signed => true,
        (true, b) => {
            let half = 1i128 << (b - 1);
            (-half..half).contains(&v)
        }
        (false, b) if b >= 128 => v >= 0,
        (false, b) => (0..(1i128 << b)).contains(&v),
    };
    if !in_range {
        return Err(false);
    }
    let bound = if signed {
        Value::Int(i64::try_from(v).map_err(|_| true)?)
    } else {
        Value::UInt(u64::try_from(v).map_err(|_| true)?)
    };
    Ok((Val::Int(v), bound))
}

/// Matches Tinybird's date-time patterns at the start of `text` and rewrites the matched part
/// as `YYYY-MM-DD hh:mm:ss[.fff]`, keeping the rest; also returns the number of fraction
/// digits (0 when there is none). The patterns (`.` is any character):
/// `\d\d\d\d.\d\d.\d\d(T|\s)\d\d:\d\d:\d\d` and `\d\d.\d\d.\d\d\d\d.\d{1,2}:\d{1,2}:\d{1,2}`;
/// for `DateTime64` followed by `.\d\d\d` and `.\d{1,3}` respectively.
fn match_datetime(text: &str, needs_fraction: bool) -> Option<(String, usize)> {
    let c: Vec<char> = text.chars().collect();
    let digit = |i: usize| c.get(i).is_some_and(|x| x.is_ascii_digit());
    let any = |i: usize| c.get(i).is_some();
    let run = |from: usize, max: usize| {
        let mut n = 0;
        while n < max && digit(from + n) {
            n += 1;
        }
        n
    };
    let take = |from: usize, n: usize| c[from..from + n].iter().collect::<String>();
    // Form 1: YYYY-MM-DD hh:mm:ss.
    let form1 = (0..4).all(digit)
        && any(4)
        && digit(5)
        && digit(6)
        && any(7)
        && digit(8)
        && digit(9)
        && c.get(10).is_some_and(|x| *x == 'T' || x.is_whitespace())
        && digit(11)
        && digit(12)
        && c.get(13) == Some(&':')
        && digit(14)
        && digit(15)
        && c.get(16) == Some(&':')
        && digit(17)
        && digit(18);
    let (mut norm, mut end) = if form1 {
        (
            format!(
                "{}-{}-{} {}:{}:{}",
                take(0, 4),
                take(5, 2),
                take(8, 2),
                take(11, 2),
                take(14, 2),
                take(17, 2)
            ),
            19,
        )
    } else {
        // Form 2: DD.MM.YYYY h:m:s.
        if !(digit(0) && digit(1) && any(2) && digit(3) && digit(4) && any(5)) {
            return None;
        }
        if !((6..10).all(digit) && any(10)) {
            return None;
        }
        let mut i = 11;
        let mut parts = Vec::new();
        for k in 0..3 {
            let n = run(i, 2);
            if n == 0 {
                return None;
            }
            parts.push(take(i, n));
            i += n;
            if k < 2 {
                if c.get(i) != Some(&':') {
                    return None;
                }
                i += 1;
            }
        }
        (
            format!(
                "{}-{}-{} {:0>2}:{:0>2}:{:0>2}",
                take(6, 4),
                take(3, 2),
                take(0, 2),
                parts[0],
                parts[1],
                parts[2]
            ),
            i,
        )
    };
    let mut digits = 0;
    if any(end) && digit(end + 1) {
        digits = run(end + 1, usize::MAX);
        let needed = if form1 { 3 } else { 1 };
        if needs_fraction && digits < needed {
            return None;
        }
        norm.push('.');
        norm.push_str(&take(end + 1, digits));
        end += 1 + digits;
    } else if needs_fraction {
        return None;
    }
    norm.extend(&c[end..]);
    Some((norm, digits))
}

/// Python's `datetime.strptime` for the directives date templates use (`%Y %m %d %H %M %S
/// %f %y %z %%`): microseconds since the epoch (UTC), or `None` when the text does not match.
pub(crate) fn strptime(text: &str, format: &str) -> Option<i64> {
    let t: Vec<char> = text.chars().collect();
    let f: Vec<char> = format.chars().collect();
    let (mut ti, mut fi) = (0usize, 0usize);
    let (mut year, mut month, mut day) = (1900i64, 1u32, 1u32);
    let (mut hour, mut minute, mut second, mut micros, mut offset) = (0i64, 0i64, 0i64, 0i64, 0i64);
    let digits = |ti: &mut usize, min: usize, max: usize| -> Option<i64> {
        let start = *ti;
        while *ti < t.len() && *ti - start < max && t[*ti].is_ascii_digit() {
            *ti += 1;
        }
        if *ti - start < min {
            return None;
        }
        t[start..*ti].iter().collect::<String>().parse().ok()
    };
    while fi < f.len() {
        let fc = f[fi];
        if fc == '%' {
            let d = *f.get(fi + 1)?;
            fi += 2;
            match d {
                'Y' => year = digits(&mut ti, 4, 4)?,
                'y' => {
                    let y = digits(&mut ti, 2, 2)?;
                    year = if y < 69 { 2000 + y } else { 1900 + y };
                }
                'm' => month = u32::try_from(digits(&mut ti, 1, 2)?).ok()?,
                'd' => day = u32::try_from(digits(&mut ti, 1, 2)?).ok()?,
                'H' => hour = digits(&mut ti, 1, 2)?,
                'M' => minute = digits(&mut ti, 1, 2)?,
                'S' => second = digits(&mut ti, 1, 2)?,
                'f' => {
                    let start = ti;
                    let v = digits(&mut ti, 1, 6)?;
                    micros = v * 10i64.pow(6 - (ti - start) as u32);
                }
                'z' => {
                    if t.get(ti).is_some_and(|c| *c == 'Z' || *c == 'z') {
                        ti += 1;
                    } else {
                        let sign = match t.get(ti)? {
                            '+' => 1,
                            '-' => -1,
                            _ => return None,
                        };
                        ti += 1;
                        let h = digits(&mut ti, 2, 2)?;
                        if t.get(ti) == Some(&':') {
                            ti += 1;
                        }
                        let m = digits(&mut ti, 2, 2)?;
                        offset = sign * (h * 3600 + m * 60);
                    }
                }
                '%' => {
                    if t.get(ti) != Some(&'%') {
                        return None;
                    }
                    ti += 1;
                }
                _ => return None,
            }
        } else if fc.is_whitespace() {
            fi += 1;
            let start = ti;
            while ti < t.len() && t[ti].is_whitespace() {
                ti += 1;
            }
            if ti == start {
                return None;
            }
        } else {
            let tc = *t.get(ti)?;
            if !tc.to_lowercase().eq(fc.to_lowercase()) {
                return None;
            }
            ti += 1;
            fi += 1;
        }
    }
    if ti != t.len() {
        return None;
    }
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => return None,
    };
    if day == 0 || day > month_days || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = time::days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some(secs * 1_000_000 + micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_follow_tinybird_ranges() {
        assert_eq!(
            convert_scalar(&ParamType::Int(8), "127").unwrap().1,
            Value::Int(127)
        );
        assert!(convert_scalar(&ParamType::Int(8), "128").is_err());
        assert!(convert_scalar(&ParamType::UInt(8), "-1").is_err());
        assert!(convert_scalar(&ParamType::UInt(8), "+1").is_err());
        assert_eq!(
            convert_scalar(&ParamType::Int(32), "+5").unwrap().1,
            Value::Int(5)
        );
        assert!(convert_scalar(&ParamType::Int(32), "5.0").is_err());
        assert!(convert_scalar(&ParamType::Int(32), " 5").is_err());
        assert_eq!(
            convert_scalar(&ParamType::UInt(64), "18446744073709551615")
                .unwrap()
                .1,
            Value::UInt(u64::MAX)
        );
        let wide = convert_scalar(
            &ParamType::Int(128),
            "170141183460469231731687303715884105727",
        )
        .unwrap_err();
        assert!(wide.ends_with("Petrel keeps integers to 64 bits"), "{wide}");
        assert_eq!(
            convert_scalar(&ParamType::Int(32), "abc").unwrap_err(),
            "Error validating 'abc' to type Int32"
        );
    }

    #[test]
    fn floats_and_dates() {
        assert_eq!(
            convert_scalar(&ParamType::Float64, "1e3").unwrap().1,
            Value::Float(F64(1000.0))
        );
        assert!(convert_scalar(&ParamType::Float32, "1_0").is_err());
        assert_eq!(
            convert_scalar(&ParamType::Date, "2024-01-02").unwrap().1,
            Value::Date(19724)
        );
        assert!(convert_scalar(&ParamType::Date, "2024-01-02 00:00:00").is_err());
        assert!(convert_scalar(&ParamType::Date, "2024-02-30").is_err());
        let dt = convert_scalar(&ParamType::DateTime, "2024-01-02T03:04:05Z")
            .unwrap()
            .1;
        assert_eq!(dt, Value::DateTime(19724 * 86_400 + 3 * 3600 + 4 * 60 + 5));
        assert_eq!(
            convert_scalar(&ParamType::DateTime, "02/01/2024 3:04:05")
                .unwrap()
                .1,
            dt
        );
        assert!(convert_scalar(&ParamType::DateTime, "2024-01-02").is_err());
        assert!(convert_scalar(&ParamType::DateTime64, "2024-01-02 03:04:05").is_err());
        assert_eq!(
            convert_scalar(&ParamType::DateTime64, "2024-01-02 03:04:05.123456")
                .unwrap()
                .1,
            Value::DateTime64(
                (19724 * 86_400 + 3 * 3600 + 4 * 60 + 5) * 1_000_000 + 123_456,
                6
            )
        );
    }

    #[test]
    fn strptime_subset() {
        let a = strptime("2022-12-19T18:42:23.521Z", "%Y-%m-%dT%H:%M:%S.%fz").unwrap();
        let b = strptime("2022-12-19 18:42:23", "%Y-%m-%d %H:%M:%S").unwrap();
        assert_eq!(a - b, 521_000);
        assert!(strptime("2022-12-19", "%Y-%m-%d %H:%M:%S").is_none());
        assert!(strptime("2019-00-02", "%Y-%m-%d").is_none());
        assert_eq!(
            strptime("2019/01/04", "%Y/%m/%d"),
            strptime("2019-01-04", "%Y-%m-%d")
        );
    }
}
