//! [`Val`]: the values template logic computes with, and the Python semantics of their
//! operators (truthiness, `==` across numbers, `in`, `+` on strings and lists, ...).
//!
//! Two kinds of value stand apart from Python's: [`Typed`] is what a typed parameter function
//! returns (it behaves as its value in logic, and renders as a `$name` placeholder), and
//! [`Val::Sql`] is structural SQL text (`column(..)`, `sql_and(..)`, setting comments) that
//! renders verbatim.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt::Write as _;

use petrel_value::Value;

use crate::expr::BinOp;
use crate::types::ParamType;

/// Longest list or string a template may build (`[1] * n`, `range(n)`, ...).
pub(crate) const MAX_LEN: usize = 100_000;

/// A value of template logic.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Val {
    None,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    List(Vec<Val>),
    Tuple(Vec<Val>),
    Dict(Vec<(Val, Val)>),
    /// The result of a typed parameter function, possibly combined by arithmetic.
    Typed(Box<Typed>),
    /// Structural SQL text, rendered as it is.
    Sql(Vec<Piece>),
}

/// A typed parameter value: its value for template logic and its SQL form.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Typed {
    /// The value as Tinybird's Python sees it (`None` when the parameter is missing).
    pub(crate) value: Val,
    /// The SQL it renders as: placeholders, and for arithmetic the operators around them.
    pub(crate) pieces: Vec<Piece>,
}

/// A part of rendered SQL: verbatim text or a placeholder bound to a typed value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Piece {
    Text(String),
    Bind(Bind),
}

/// A placeholder to bind: the request parameter it comes from (`None` for a value computed in
/// the template, which gets a generated name), its type and its value (`None` when a required
/// parameter is missing; the render then fails).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Bind {
    pub(crate) name: Option<String>,
    pub(crate) ty: ParamType,
    pub(crate) value: Option<Value>,
}

impl Val {
    /// The value template logic sees: typed values are their value, SQL text is a string.
    pub(crate) fn plain(&self) -> Cow<'_, Val> {
        match self {
            Val::Typed(t) => t.value.plain(),
            Val::Sql(pieces) => {
                let mut s = String::new();
                for p in pieces {
                    match p {
                        Piece::Text(t) => s.push_str(t),
                        Piece::Bind(b) => {
                            s.push('$');
                            s.push_str(b.name.as_deref().unwrap_or("_"));
                        }
                    }
                }
                Cow::Owned(Val::Str(s))
            }
            v => Cow::Borrowed(v),
        }
    }

    /// Python's type name, for error messages.
    pub(crate) fn type_name(&self) -> &'static str {
        match self.plain().as_ref() {
            Val::None => "NoneType",
            Val::Bool(_) => "bool",
            Val::Int(_) => "int",
            Val::Float(_) => "float",
            Val::Str(_) | Val::Sql(_) => "str",
            Val::List(_) => "list",
            Val::Tuple(_) => "tuple",
            Val::Dict(_) => "dict",
            Val::Typed(_) => "typed",
        }
    }

    /// Python truthiness.
    pub(crate) fn truthy(&self) -> bool {
        match self {
            Val::None => false,
            Val::Bool(b) => *b,
            Val::Int(i) => *i != 0,
            Val::Float(f) => *f != 0.0,
            Val::Str(s) => !s.is_empty(),
            Val::List(v) | Val::Tuple(v) => !v.is_empty(),
            Val::Dict(d) => !d.is_empty(),
            Val::Typed(t) => t.value.truthy(),
            Val::Sql(p) => !p.is_empty(),
        }
    }

    /// The value as a number, for booleans, ints and floats.
    fn number(&self) -> Option<Num> {
        match self {
            Val::Bool(b) => Some(Num::Int(*b as i128)),
            Val::Int(i) => Some(Num::Int(*i)),
            Val::Float(f) => Some(Num::Float(*f)),
            _ => None,
        }
    }

    /// The value as an int (booleans included).
    pub(crate) fn as_int(&self) -> Option<i128> {
        match self.plain().as_ref() {
            Val::Bool(b) => Some(*b as i128),
            Val::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The items of a list, tuple, string (characters) or dict (keys), for iteration.
    pub(crate) fn iter_items(&self) -> Result<Vec<Val>, String> {
        match self.plain().as_ref() {
            Val::List(v) | Val::Tuple(v) => Ok(v.clone()),
            Val::Str(s) => Ok(s.chars().map(|c| Val::Str(c.to_string())).collect()),
            Val::Dict(d) => Ok(d.iter().map(|(k, _)| k.clone()).collect()),
            other => Err(format!("'{}' object is not iterable", other.type_name())),
        }
    }
}

#[derive(Clone, Copy)]
enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    fn float(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

/// Python `==`.
pub(crate) fn py_eq(a: &Val, b: &Val) -> bool {
    let (a, b) = (a.plain(), b.plain());
    match (a.as_ref(), b.as_ref()) {
        (Val::None, Val::None) => true,
        (Val::Str(x), Val::Str(y)) => x == y,
        (Val::List(x), Val::List(y)) | (Val::Tuple(x), Val::Tuple(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| py_eq(p, q))
        }
        (Val::Dict(x), Val::Dict(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.iter().any(|(k2, v2)| py_eq(k, k2) && py_eq(v, v2)))
        }
        (x, y) => match (x.number(), y.number()) {
            (Some(Num::Int(p)), Some(Num::Int(q))) => p == q,
            (Some(p), Some(q)) => p.float() == q.float(),
            _ => false,
        },
    }
}

/// Python ordering for `<`, `<=`, `>`, `>=`: `None` when the types don't compare.
pub(crate) fn py_cmp(a: &Val, b: &Val) -> Option<Ordering> {
    let (a, b) = (a.plain(), b.plain());
    match (a.as_ref(), b.as_ref()) {
        (Val::Str(x), Val::Str(y)) => Some(x.cmp(y)),
        (Val::List(x), Val::List(y)) | (Val::Tuple(x), Val::Tuple(y)) => {
            for (p, q) in x.iter().zip(y) {
                if !py_eq(p, q) {
                    return py_cmp(p, q);
                }
            }
            Some(x.len().cmp(&y.len()))
        }
        (x, y) => match (x.number(), y.number()) {
            (Some(Num::Int(p)), Some(Num::Int(q))) => Some(p.cmp(&q)),
            (Some(p), Some(q)) => p.float().partial_cmp(&q.float()),
            _ => None,
        },
    }
}

/// Python `item in container`.
pub(crate) fn py_contains(container: &Val, item: &Val) -> Result<bool, String> {
    let (c, i) = (container.plain(), item.plain());
    match (c.as_ref(), i.as_ref()) {
        (Val::Str(s), Val::Str(sub)) => Ok(s.contains(sub.as_str())),
        (Val::Str(_), other) => Err(format!(
            "'in <string>' requires string as left operand, not {}",
            other.type_name()
        )),
        (Val::List(v) | Val::Tuple(v), x) => Ok(v.iter().any(|e| py_eq(e, x))),
        (Val::Dict(d), x) => Ok(d.iter().any(|(k, _)| py_eq(k, x))),
        (other, _) => Err(format!(
            "argument of type '{}' is not iterable",
            other.type_name()
        )),
    }
}

fn unsupported(op: BinOp, a: &Val, b: &Val) -> String {
    format!(
        "unsupported operand type(s) for {}: '{}' and '{}'",
        op.symbol(),
        a.type_name(),
        b.type_name()
    )
}

fn repeat<T: Clone>(items: &[T], times: i128) -> Result<Vec<T>, String> {
    let times = usize::try_from(times.max(0)).map_err(|_| "sequence too long".to_string())?;
    if items.len().saturating_mul(times) > MAX_LEN {
        return Err(format!("sequence longer than {MAX_LEN} items"));
    }
    Ok(items
        .iter()
        .cloned()
        .cycle()
        .take(items.len() * times)
        .collect())
}

/// Python arithmetic on plain values.
pub(crate) fn py_arith(op: BinOp, a: &Val, b: &Val) -> Result<Val, String> {
    let (pa, pb) = (a.plain(), b.plain());
    let (a, b) = (pa.as_ref(), pb.as_ref());
    let overflow = || "integer overflow".to_string();
    match (op, a, b) {
        (BinOp::Add, Val::Str(x), Val::Str(y)) => {
            if x.len() + y.len() > MAX_LEN * 10 {
                return Err("string too long".into());
            }
            Ok(Val::Str(format!("{x}{y}")))
        }
        (BinOp::Add, Val::List(x), Val::List(y)) => {
            Ok(Val::List(x.iter().chain(y).cloned().collect()))
        }
        (BinOp::Add, Val::Tuple(x), Val::Tuple(y)) => {
            Ok(Val::Tuple(x.iter().chain(y).cloned().collect()))
        }
        (BinOp::Mul, Val::Str(s), n) | (BinOp::Mul, n, Val::Str(s)) if n.as_int().is_some() => {
            let times = n.as_int().unwrap_or(0);
            let chars: Vec<char> = s.chars().collect();
            Ok(Val::Str(repeat(&chars, times)?.into_iter().collect()))
        }
        (BinOp::Mul, Val::List(v), n) | (BinOp::Mul, n, Val::List(v)) if n.as_int().is_some() => {
            Ok(Val::List(repeat(v, n.as_int().unwrap_or(0))?))
        }
        (BinOp::Mod, Val::Str(_), _) => {
            Err("string formatting with % is not supported in templates".into())
        }
        _ => {
            let (Some(x), Some(y)) = (a.number(), b.number()) else {
                return Err(unsupported(op, a, b));
            };
            match (x, y) {
                (Num::Int(x), Num::Int(y)) => match op {
                    BinOp::Add => x.checked_add(y).map(Val::Int).ok_or_else(overflow),
                    BinOp::Sub => x.checked_sub(y).map(Val::Int).ok_or_else(overflow),
                    BinOp::Mul => x.checked_mul(y).map(Val::Int).ok_or_else(overflow),
                    BinOp::Div => {
                        if y == 0 {
                            Err("division by zero".into())
                        } else {
                            Ok(Val::Float(x as f64 / y as f64))
                        }
                    }
                    BinOp::FloorDiv | BinOp::Mod => {
                        if y == 0 {
                            return Err("integer division or modulo by zero".into());
                        }
                        let q = x.div_euclid(y);
                        let r = x.rem_euclid(y);
                        // Python rounds the quotient towards negative infinity.
                        let (q, r) = if r != 0 && y < 0 {
                            (q - 1, r + y)
                        } else {
                            (q, r)
                        };
                        Ok(Val::Int(if op == BinOp::FloorDiv { q } else { r }))
                    }
                },
                (x, y) => {
                    let (x, y) = (x.float(), y.float());
                    match op {
                        BinOp::Add => Ok(Val::Float(x + y)),
                        BinOp::Sub => Ok(Val::Float(x - y)),
                        BinOp::Mul => Ok(Val::Float(x * y)),
                        _ if y == 0.0 => Err("float division by zero".into()),
                        BinOp::Div => Ok(Val::Float(x / y)),
                        BinOp::FloorDiv => Ok(Val::Float((x / y).floor())),
                        BinOp::Mod => Ok(Val::Float(x - y * (x / y).floor())),
                    }
                }
            }
        }
    }
}

/// Python `str(v)`.
pub(crate) fn py_str(v: &Val) -> String {
    match v.plain().as_ref() {
        Val::Str(s) => s.clone(),
        other => py_repr(other),
    }
}

/// Python `repr(v)`.
pub(crate) fn py_repr(v: &Val) -> String {
    let mut out = String::new();
    write_repr(v.plain().as_ref(), &mut out);
    out
}

fn write_repr(v: &Val, out: &mut String) {
    match v {
        Val::None => out.push_str("None"),
        Val::Bool(true) => out.push_str("True"),
        Val::Bool(false) => out.push_str("False"),
        Val::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Val::Float(f) => out.push_str(&float_repr(*f)),
        Val::Str(s) => {
            let quote = if s.contains('\'') && !s.contains('"') {
                '"'
            } else {
                '\''
            };
            out.push(quote);
            for c in s.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if c == quote => {
                        out.push('\\');
                        out.push(c);
                    }
                    c => out.push(c),
                }
            }
            out.push(quote);
        }
        Val::List(items) => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(x.plain().as_ref(), out);
            }
            out.push(']');
        }
        Val::Tuple(items) => {
            out.push('(');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(x.plain().as_ref(), out);
            }
            if items.len() == 1 {
                out.push(',');
            }
            out.push(')');
        }
        Val::Dict(pairs) => {
            out.push('{');
            for (i, (k, x)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(k.plain().as_ref(), out);
                out.push_str(": ");
                write_repr(x.plain().as_ref(), out);
            }
            out.push('}');
        }
        Val::Typed(_) | Val::Sql(_) => write_repr(v.plain().as_ref(), out),
    }
}

/// Python's `repr` of a float: `1.0`, `0.1`, `1e-05`, `1e+16`, `inf`, `nan`.
pub(crate) fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let s = format!("{f:?}");
    match s.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            let mantissa = mantissa.strip_suffix(".0").unwrap_or(mantissa);
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

/// Converts parsed JSON into a template value.
pub(crate) fn from_json(j: &serde_json::Value) -> Val {
    match j {
        serde_json::Value::Null => Val::None,
        serde_json::Value::Bool(b) => Val::Bool(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Val::Int(i as i128),
            (None, Some(u)) => Val::Int(u as i128),
            _ => Val::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Val::Str(s.clone()),
        serde_json::Value::Array(items) => Val::List(items.iter().map(from_json).collect()),
        serde_json::Value::Object(map) => Val::Dict(
            map.iter()
                .map(|(k, v)| (Val::Str(k.clone()), from_json(v)))
                .collect(),
        ),
    }
}

/// Converts a template value into JSON (for `custom_error` bodies).
pub(crate) fn to_json(v: &Val) -> serde_json::Value {
    match v.plain().as_ref() {
        Val::None => serde_json::Value::Null,
        Val::Bool(b) => serde_json::Value::Bool(*b),
        Val::Int(i) => match i64::try_from(*i) {
            Ok(i) => serde_json::Value::from(i),
            Err(_) => serde_json::Value::from(*i as f64),
        },
        Val::Float(f) => serde_json::Value::from(*f),
        Val::Str(s) => serde_json::Value::String(s.clone()),
        Val::List(items) | Val::Tuple(items) => {
            serde_json::Value::Array(items.iter().map(to_json).collect())
        }
        Val::Dict(pairs) => {
            serde_json::Value::Object(pairs.iter().map(|(k, v)| (py_str(k), to_json(v))).collect())
        }
        Val::Typed(_) | Val::Sql(_) => serde_json::Value::String(py_str(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_semantics() {
        assert!(py_eq(&Val::Bool(true), &Val::Int(1)));
        assert!(py_eq(&Val::Int(1), &Val::Float(1.0)));
        assert!(!py_eq(&Val::Str("1".into()), &Val::Int(1)));
        assert!(!py_eq(&Val::List(vec![]), &Val::Tuple(vec![])));
        assert_eq!(py_cmp(&Val::None, &Val::Int(1)), None);
        assert_eq!(
            py_arith(BinOp::FloorDiv, &Val::Int(-7), &Val::Int(2)).unwrap(),
            Val::Int(-4)
        );
        assert_eq!(
            py_arith(BinOp::Mod, &Val::Int(-7), &Val::Int(2)).unwrap(),
            Val::Int(1)
        );
        assert_eq!(
            py_arith(BinOp::Mod, &Val::Int(7), &Val::Int(-2)).unwrap(),
            Val::Int(-1)
        );
        assert!(py_arith(
            BinOp::Mul,
            &Val::List(vec![Val::Int(1)]),
            &Val::Int(10_000_000)
        )
        .is_err());
        assert_eq!(py_repr(&Val::Str("it's".into())), "\"it's\"");
        assert_eq!(float_repr(1.0), "1.0");
        assert_eq!(float_repr(1e-5), "1e-05");
        assert_eq!(float_repr(1e16), "1e+16");
        assert!(py_contains(&Val::Str("abc".into()), &Val::Str("b".into())).unwrap());
        assert!(py_contains(&Val::Int(1), &Val::Int(1)).is_err());
    }
}
