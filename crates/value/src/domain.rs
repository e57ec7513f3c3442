//! ClickHouse types Petrel stores as a simpler one, with rules for the values they accept:
//! `Enum8`/`Enum16` (a value's name, as a `String`), `IPv4`/`IPv6` (the address's text, as a
//! `String`) and `Decimal(P, S)` (a `Float64` rounded to S digits). Queries see the stored
//! type; results print the type as written.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::value::{Value, F64};

/// What a domain type accepts and how it prints.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Domain {
    /// `Enum8(..)` / `Enum16(..)`: the width in bits and the `(name, value)` pairs.
    Enum(u8, Vec<(String, i64)>),
    /// `IPv4`.
    Ipv4,
    /// `IPv6`.
    Ipv6,
    /// `Decimal(P, S)` (also `Decimal32(S)`, `Decimal64(S)`, `Decimal128(S)`).
    Decimal(u8, u8),
}

impl Domain {
    /// Parses `Enum8('a' = 1, ..)`, `IPv4`, `Decimal(10, 2)` and the like; `None` for other
    /// type names, `Some(Err)` for a malformed one.
    pub fn parse(name: &str, parts: &[&str]) -> Option<Result<Domain, ()>> {
        let int = |s: &str| s.trim().parse::<u8>().map_err(|_| ());
        Some(match name {
            "Enum8" | "Enum16" | "Enum" => {
                let bits = if name == "Enum16" { 16 } else { 8 };
                parts
                    .iter()
                    .enumerate()
                    .map(|(i, p)| match p.rsplit_once('=') {
                        Some((n, v)) => Ok((unquote(n)?, v.trim().parse().map_err(|_| ())?)),
                        None => Ok((unquote(p)?, i as i64 + 1)),
                    })
                    .collect::<Result<Vec<_>, ()>>()
                    .and_then(|pairs| {
                        if pairs.is_empty() {
                            Err(())
                        } else {
                            Ok(Domain::Enum(bits, pairs))
                        }
                    })
            }
            "IPv4" => Ok(Domain::Ipv4),
            "IPv6" => Ok(Domain::Ipv6),
            "Decimal" => match parts {
                [p] => int(p).map(|p| Domain::Decimal(p, 0)),
                [p, s] => int(p).and_then(|p| int(s).map(|s| Domain::Decimal(p, s))),
                _ => Err(()),
            }
            .and_then(check_decimal),
            "Decimal32" | "Decimal64" | "Decimal128" | "Decimal256" => match parts {
                [s] => int(s).map(|s| {
                    let p = match name {
                        "Decimal32" => 9,
                        "Decimal64" => 18,
                        "Decimal128" => 38,
                        _ => 76,
                    };
                    Domain::Decimal(p, s)
                }),
                _ => Err(()),
            }
            .and_then(check_decimal),
            _ => return None,
        })
    }

    /// The type as ClickHouse prints it.
    pub fn name(&self) -> String {
        match self {
            Domain::Enum(bits, pairs) => format!(
                "Enum{bits}({})",
                pairs
                    .iter()
                    .map(|(n, v)| format!("'{}' = {v}", n.replace('\'', "\\'")))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Domain::Ipv4 => "IPv4".into(),
            Domain::Ipv6 => "IPv6".into(),
            Domain::Decimal(p, s) => format!("Decimal({p}, {s})"),
        }
    }

    /// True when values are stored as `Float64` (else as `String`).
    pub fn is_number(&self) -> bool {
        matches!(self, Domain::Decimal(..))
    }

    /// The value a row that leaves the column out takes: ClickHouse's default.
    pub fn default_value(&self) -> Value {
        match self {
            Domain::Enum(_, pairs) => pairs
                .iter()
                .min_by_key(|(_, v)| v.abs())
                .map(|(n, _)| Value::str(n))
                .unwrap_or_else(|| Value::str("")),
            Domain::Ipv4 => Value::str("0.0.0.0"),
            Domain::Ipv6 => Value::str("::"),
            Domain::Decimal(..) => Value::Float(F64(0.0)),
        }
    }

    /// A value of another type as this one (a name or number of the enum, an address as text
    /// or a number, a decimal from text or a number, rounded to its scale); `None` when it
    /// does not fit.
    pub fn admit(&self, v: &Value) -> Option<Value> {
        match self {
            Domain::Enum(_, pairs) => match v {
                Value::String(s) => pairs
                    .iter()
                    .any(|(n, _)| n == s.as_str())
                    .then(|| v.clone())
                    .or_else(|| {
                        let n: i64 = s.trim().parse().ok()?;
                        pairs
                            .iter()
                            .find(|(_, x)| *x == n)
                            .map(|(n, _)| Value::str(n))
                    }),
                Value::Int(_) | Value::UInt(_) => {
                    let n = v.as_f64()? as i64;
                    pairs
                        .iter()
                        .find(|(_, x)| *x == n)
                        .map(|(n, _)| Value::str(n))
                }
                _ => None,
            },
            Domain::Ipv4 => match v {
                Value::String(s) => s
                    .trim()
                    .parse::<Ipv4Addr>()
                    .ok()
                    .or_else(|| s.trim().parse::<u32>().ok().map(Ipv4Addr::from))
                    .map(|a| Value::str(&a.to_string())),
                Value::Int(_) | Value::UInt(_) => {
                    let n = u32::try_from(v.as_f64()? as i64).ok()?;
                    Some(Value::str(&Ipv4Addr::from(n).to_string()))
                }
                _ => None,
            },
            Domain::Ipv6 => match v {
                Value::String(s) => {
                    let a = match s.trim().parse::<IpAddr>().ok()? {
                        IpAddr::V6(a) => a,
                        IpAddr::V4(a) => a.to_ipv6_mapped(),
                    };
                    Some(Value::str(&ipv6_text(a)))
                }
                // Parquet's 16-byte binary, as ClickHouse writes an IPv6.
                Value::Uuid(bits) => Some(Value::str(&ipv6_text(Ipv6Addr::from(bits.get())))),
                _ => None,
            },
            Domain::Decimal(p, s) => {
                let x = match v {
                    Value::String(t) => t.trim().parse::<f64>().ok()?,
                    Value::Bool(_) => return None,
                    other => other.as_f64()?,
                };
                let scale = 10f64.powi(*s as i32);
                let rounded = (x * scale).round() / scale;
                let limit = 10f64.powi(*p as i32 - *s as i32);
                (rounded.is_finite() && rounded.abs() < limit).then_some(Value::Float(F64(rounded)))
            }
        }
    }
}

/// An IPv6 address as ClickHouse prints it: IPv4-mapped ones as `::ffff:a.b.c.d`.
fn ipv6_text(a: Ipv6Addr) -> String {
    match a.to_ipv4_mapped() {
        Some(v4) => format!("::ffff:{v4}"),
        None => a.to_string(),
    }
}

fn check_decimal(d: Domain) -> Result<Domain, ()> {
    match d {
        Domain::Decimal(p, s) if (1..=76).contains(&p) && s <= p => Ok(d),
        _ => Err(()),
    }
}

/// An enum name written `'name'` (quotes required, `\'` inside).
fn unquote(s: &str) -> Result<String, ()> {
    let t = s.trim();
    let inner = t
        .strip_prefix('\'')
        .and_then(|r| r.strip_suffix('\''))
        .ok_or(())?;
    Ok(inner.replace("\\'", "'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_admits_as_clickhouse() {
        let e = Domain::parse("Enum8", &["'a' = 1", "'b c' = -2"])
            .unwrap()
            .unwrap();
        assert_eq!(e.name(), "Enum8('a' = 1, 'b c' = -2)");
        assert_eq!(e.admit(&Value::str("b c")), Some(Value::str("b c")));
        assert_eq!(e.admit(&Value::Int(1)), Some(Value::str("a")));
        assert_eq!(e.admit(&Value::str("z")), None);
        let ip = Domain::Ipv4;
        assert_eq!(
            ip.admit(&Value::str("1.2.3.4")),
            Some(Value::str("1.2.3.4"))
        );
        assert_eq!(
            ip.admit(&Value::UInt(16909060)),
            Some(Value::str("1.2.3.4"))
        );
        assert_eq!(ip.admit(&Value::str("1.2.3")), None);
        assert_eq!(
            Domain::Ipv6.admit(&Value::str("1.2.3.4")),
            Some(Value::str("::ffff:1.2.3.4"))
        );
        assert_eq!(
            Domain::Ipv6.admit(&Value::str("2001:DB8::1")),
            Some(Value::str("2001:db8::1"))
        );
        let d = Domain::parse("Decimal", &["5", "2"]).unwrap().unwrap();
        assert_eq!(d.admit(&Value::str("1.234")), Some(Value::Float(F64(1.23))));
        assert_eq!(d.admit(&Value::Float(F64(1000.0))), None);
        assert!(Domain::parse("Decimal", &["5", "9"]).unwrap().is_err());
        assert!(Domain::parse("String", &[]).is_none());
    }
}
