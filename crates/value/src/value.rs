//! [`Value`]: one typed cell of a row.

use std::cmp::Ordering;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};

use smol_str::SmolStr;

use crate::time;

/// An `f64` with a total order and hashing by bits, so rows holding floats can be sorted,
/// consolidated and used as keys. `-0.0` equals `0.0`; all NaNs are equal and sort last.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct F64(pub f64);

impl F64 {
    fn key(self) -> u64 {
        if self.0.is_nan() {
            return u64::MAX;
        }
        let f = if self.0 == 0.0 { 0.0 } else { self.0 };
        let bits = f.to_bits();
        if bits >> 63 == 1 {
            !bits
        } else {
            bits | (1 << 63)
        }
    }
}

impl PartialEq for F64 {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for F64 {}
impl PartialOrd for F64 {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for F64 {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}
impl Hash for F64 {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state)
    }
}

/// A UUID's 128 bits, aligned to 8 bytes: a `u128` is aligned to 16, which would make every
/// [`Value`] (and so every row) a third larger, 32 bytes instead of 24. It compares, hashes
/// and (de)serializes exactly as the `u128` does.
#[derive(Clone, Copy)]
#[repr(C, packed(8))]
pub struct U128(u128);

impl U128 {
    /// The bits as a `u128`.
    pub const fn get(self) -> u128 {
        self.0
    }
}

impl From<u128> for U128 {
    fn from(v: u128) -> U128 {
        U128(v)
    }
}

impl PartialEq for U128 {
    fn eq(&self, other: &U128) -> bool {
        self.get() == other.get()
    }
}
impl Eq for U128 {}
impl PartialOrd for U128 {
    fn partial_cmp(&self, other: &U128) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for U128 {
    fn cmp(&self, other: &U128) -> Ordering {
        self.get().cmp(&other.get())
    }
}
impl Hash for U128 {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.get().hash(state)
    }
}
impl std::fmt::Debug for U128 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}
impl serde::Serialize for U128 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u128(self.get())
    }
}
impl<'de> serde::Deserialize<'de> for U128 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<U128, D::Error> {
        u128::deserialize(d).map(U128)
    }
}

/// One cell. Integers widen to 64 bits (the column's [`crate::ColumnType`] keeps the width),
/// strings are small-string-optimised and cheap to clone, and times are integers in UTC.
///
/// The derived order (variant first) is what differential dataflow sorts by; SQL comparisons
/// across numeric variants use [`Value::sql_cmp`]. Equality is the derived one's, written out
/// so that strings compare without a call to `memcmp` ([`same_bytes`]).
// Equal values hash alike: `eq` holds exactly where the derived equality does.
#[allow(clippy::derived_hash_with_manual_eq)]
#[derive(Debug, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// `Bool`.
    Bool(bool),
    /// Signed integers up to 64 bits.
    Int(i64),
    /// Unsigned integers up to 64 bits.
    UInt(u64),
    /// `Float32` and `Float64`.
    Float(F64),
    /// `String`.
    String(SmolStr),
    /// `UUID`.
    Uuid(U128),
    /// `Date`: days since 1970-01-01.
    Date(i32),
    /// `DateTime`: seconds since the epoch.
    DateTime(i64),
    /// `DateTime64(p)`: ticks of 10^-p seconds since the epoch, and p.
    DateTime64(i64, u8),
    /// `Array(T)`. A boxed slice (two words, where a vector takes three) keeps a value at
    /// 24 bytes.
    Array(Box<[Value]>),
    /// `Tuple(..)`, also the state of multi-part aggregates.
    Tuple(Box<[Value]>),
    /// `Map(K, V)`, as ordered pairs.
    Map(Box<[(Value, Value)]>),
}

/// A value that owns nothing (every variant but a long string and the nested ones) is
/// copied as its 24 bytes at once. The derived clone made it variant by variant in the
/// callee's return place, a string's bytes from its second byte on; the caller then read
/// the whole value back to move it into a row, before the stores that made it were done
/// (a stall on every cloned cell of every output row).
impl Clone for Value {
    #[inline]
    fn clone(&self) -> Value {
        match self {
            Value::String(s) if s.is_heap_allocated() => Value::String(s.clone()),
            Value::Array(items) => Value::Array(items.clone()),
            Value::Tuple(items) => Value::Tuple(items.clone()),
            Value::Map(pairs) => Value::Map(pairs.clone()),
            // SAFETY: the value owns no memory and no count: an inline or static string's
            // bytes are its own (`SmolStr`'s clone copies them the same way), and every other
            // variant here holds `Copy` data. The copy is a value equal to `self`, dropped on
            // its own.
            _ => unsafe { std::ptr::read(self) },
        }
    }
}

/// Integers, times and strings (the keys and identities every fold and probe compares) are
/// compared where the comparison is made; the other kinds in a call.
impl PartialEq for Value {
    #[inline]
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::UInt(a), Value::UInt(b)) => a == b,
            (Value::Int(a), Value::Int(b)) | (Value::DateTime(a), Value::DateTime(b)) => a == b,
            (Value::String(a), Value::String(b)) => same_bytes(a.as_bytes(), b.as_bytes()),
            _ => self.eq_other(other),
        }
    }
}

impl Value {
    /// [`PartialEq::eq`] of the kinds it does not compare inline.
    #[inline(never)]
    fn eq_other(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a == b,
            (Value::Uuid(a), Value::Uuid(b)) => a == b,
            (Value::Date(a), Value::Date(b)) => a == b,
            (Value::DateTime64(a, p), Value::DateTime64(b, q)) => a == b && p == q,
            (Value::Array(a), Value::Array(b)) | (Value::Tuple(a), Value::Tuple(b)) => a == b,
            (Value::Map(a), Value::Map(b)) => a == b,
            _ => false,
        }
    }
}

/// How long a string [`same_bytes`] compares a byte at a time.
const SHORT_BYTES: usize = 16;

/// True when two byte strings are equal. Short ones (an event's country, path or key) are
/// compared a byte at a time without branching, which costs less than the call to `memcmp`
/// that comparing slices makes; rows are compared by their strings in every hash probe.
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    if a.len() > SHORT_BYTES {
        return a == b;
    }
    a.iter().zip(b).fold(true, |same, (x, y)| same & (x == y))
}

impl Value {
    /// A string value.
    pub fn str(s: &str) -> Value {
        Value::String(SmolStr::new(s))
    }

    /// About how many bytes the value takes in memory: itself, and what it keeps on the heap
    /// (long strings, nested values). What bounds in-memory logs by bytes count.
    pub fn footprint(&self) -> usize {
        std::mem::size_of::<Value>()
            + match self {
                Value::String(s) if s.is_heap_allocated() => s.len(),
                Value::Array(items) | Value::Tuple(items) => {
                    items.iter().map(Value::footprint).sum()
                }
                Value::Map(pairs) => pairs
                    .iter()
                    .map(|(k, v)| k.footprint() + v.footprint())
                    .sum(),
                _ => 0,
            }
    }

    /// A cheap prefix of the derived order (variant, then 64 bits of the value in an
    /// order-preserving encoding), and whether it is exact. When `a`'s prefix is below `b`'s
    /// then `a < b`; equal exact prefixes mean equal values; equal inexact ones say nothing.
    /// Sorts of many rows compare these integers and fall back to the values only on ties.
    pub fn order_prefix(&self) -> ((u8, u64), bool) {
        let flip = |i: i64| (i as u64) ^ (1 << 63);
        match self {
            Value::Null => ((0, 0), true),
            Value::Bool(b) => ((1, *b as u64), true),
            Value::Int(i) => ((2, flip(*i)), true),
            Value::UInt(u) => ((3, *u), true),
            Value::Float(f) => ((4, f.key()), true),
            Value::String(s) => Value::str_order_prefix(s),
            Value::Uuid(u) => ((6, (u.get() >> 64) as u64), false),
            Value::Date(d) => ((7, flip(*d as i64)), true),
            Value::DateTime(t) => ((8, flip(*t)), true),
            Value::DateTime64(t, _) => ((9, flip(*t)), false),
            Value::Array(_) => ((10, 0), false),
            Value::Tuple(_) => ((11, 0), false),
            Value::Map(_) => ((12, 0), false),
        }
    }

    /// [`Value::order_prefix`] of the string `s`, read where it lies (a column of strings
    /// sorted without making a value of each). The first seven bytes, then the length up to
    /// 8: strings of up to seven bytes are told apart exactly (also "ab" from "ab\0"), longer
    /// ones tie.
    pub fn str_order_prefix(s: &str) -> ((u8, u64), bool) {
        let bytes = s.as_bytes();
        // Read as one word where there are eight bytes, else a byte at a time (a copy of a
        // length known only at run time was a call to `memcpy`, in every sort of a part).
        let head = match bytes.first_chunk::<8>() {
            Some(eight) => u64::from_be_bytes(*eight) & !0xff,
            None => bytes
                .iter()
                .fold(0u64, |word, &b| (word << 8) | u64::from(b))
                .checked_shl(8 * (8 - bytes.len() as u32))
                .unwrap_or(0),
        };
        ((5, head | bytes.len().min(8) as u64), bytes.len() <= 7)
    }

    /// True for NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Whether dropping the value frees memory or a count (a long string's, a nested
    /// value's); every other value's drop does nothing.
    #[inline(always)]
    pub fn owns_memory(&self) -> bool {
        match self {
            Value::String(s) => s.is_heap_allocated(),
            Value::Array(_) | Value::Tuple(_) | Value::Map(_) => true,
            _ => false,
        }
    }

    /// Puts `value` in the value's place. A NULL there (a row's cell not yet set: rows are
    /// made at their size, NULL, and filled in place) is overwritten without a call to its
    /// drop glue, a call and a jump by kind for every cell of every row the decoder or a fold
    /// makes, which would do nothing.
    #[inline(always)]
    pub fn set(&mut self, value: Value) {
        if self.is_null() {
            std::mem::forget(std::mem::replace(self, value));
        } else {
            *self = value;
        }
    }

    /// The value as a float, for numbers and booleans.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::UInt(u) => Some(*u as f64),
            Value::Float(f) => Some(f.0),
            Value::Bool(b) => Some(*b as i64 as f64),
            _ => None,
        }
    }

    /// The value as a signed integer, for integers, booleans and (truncated) floats.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::UInt(u) => i64::try_from(*u).ok(),
            Value::Bool(b) => Some(*b as i64),
            Value::Float(f) if f.0.is_finite() => Some(f.0 as i64),
            Value::Date(d) => Some(*d as i64),
            Value::DateTime(s) => Some(*s),
            Value::DateTime64(t, _) => Some(*t),
            _ => None,
        }
    }

    /// The string, when this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s.as_str()),
            _ => None,
        }
    }

    /// Truthiness as ClickHouse's `WHERE` sees it: non-zero numbers and `true`.
    pub fn is_true(&self) -> bool {
        match self {
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::UInt(u) => *u != 0,
            Value::Float(f) => f.0 != 0.0,
            _ => false,
        }
    }

    /// Seconds since the epoch for date and time values, as a float (sub-second precision kept).
    pub fn epoch_seconds(&self) -> Option<f64> {
        match self {
            Value::Date(d) => Some(*d as f64 * 86_400.0),
            Value::DateTime(s) => Some(*s as f64),
            Value::DateTime64(t, p) => Some(*t as f64 / 10f64.powi(*p as i32)),
            _ => None,
        }
    }

    /// SQL comparison: numbers compare by value across integer and float variants, dates and
    /// times by instant, everything else by the total order. NULL compares as `None`.
    pub fn sql_cmp(&self, other: &Value) -> Option<Ordering> {
        use Value::*;
        match (self, other) {
            (Null, _) | (_, Null) => None,
            (Int(a), Int(b)) => Some(a.cmp(b)),
            (UInt(a), UInt(b)) => Some(a.cmp(b)),
            (Int(a), UInt(b)) => Some((*a as i128).cmp(&(*b as i128))),
            (UInt(a), Int(b)) => Some((*a as i128).cmp(&(*b as i128))),
            (String(a), String(b)) => Some(a.as_str().cmp(b.as_str())),
            (Date(_) | DateTime(_) | DateTime64(..), Date(_) | DateTime(_) | DateTime64(..)) => {
                self.epoch_seconds()?.partial_cmp(&other.epoch_seconds()?)
            }
            (Date(_) | DateTime(_) | DateTime64(..), String(s)) => {
                let t = time::parse_datetime(s, 6)? as f64 / 1e6;
                self.epoch_seconds()?.partial_cmp(&t)
            }
            (String(_), Date(_) | DateTime(_) | DateTime64(..)) => {
                other.sql_cmp(self).map(Ordering::reverse)
            }
            (Array(a), Array(b)) | (Tuple(a), Tuple(b)) => {
                for (x, y) in a.iter().zip(b.iter()) {
                    match x.sql_cmp(y)? {
                        Ordering::Equal => continue,
                        o => return Some(o),
                    }
                }
                Some(a.len().cmp(&b.len()))
            }
            _ => match (self.as_f64(), other.as_f64()) {
                (Some(a), Some(b)) => F64(a).partial_cmp(&F64(b)),
                _ => Some(self.cmp(other)),
            },
        }
    }

    /// The value's text form as ClickHouse prints it in CSV and `toString` (no quotes).
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        self.write_text(&mut s);
        s
    }

    /// Appends the text form (see [`Value::to_text`]).
    pub fn write_text(&self, out: &mut String) {
        match self {
            Value::Null => out.push_str("\\N"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::UInt(u) => {
                let _ = write!(out, "{u}");
            }
            Value::Float(f) => write_float(f.0, out),
            Value::String(s) => out.push_str(s),
            Value::Uuid(u) => {
                let h = format!("{:032x}", u.get());
                let _ = write!(
                    out,
                    "{}-{}-{}-{}-{}",
                    &h[0..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..32]
                );
            }
            Value::Date(d) => out.push_str(&time::format_date(*d as i64)),
            Value::DateTime(s) => out.push_str(&time::format_datetime(*s)),
            Value::DateTime64(t, p) => out.push_str(&time::format_datetime64(*t, *p)),
            Value::Array(items) | Value::Tuple(items) => {
                let (open, close) = if matches!(self, Value::Array(_)) {
                    ('[', ']')
                } else {
                    ('(', ')')
                };
                out.push(open);
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write_sql_literal(out);
                }
                out.push(close);
            }
            Value::Map(pairs) => {
                out.push('{');
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    k.write_sql_literal(out);
                    out.push(':');
                    v.write_sql_literal(out);
                }
                out.push('}');
            }
        }
    }

    /// Appends the value as a SQL literal: strings quoted and escaped, numbers bare.
    pub fn write_sql_literal(&self, out: &mut String) {
        match self {
            Value::Null => out.push_str("NULL"),
            Value::String(_)
            | Value::Uuid(_)
            | Value::Date(_)
            | Value::DateTime(_)
            | Value::DateTime64(..) => {
                out.push('\'');
                for c in self.to_text().chars() {
                    if c == '\'' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('\'');
            }
            other => other.write_text(out),
        }
    }

    /// Appends the value as JSON the way ClickHouse's JSON formats print it: numbers bare,
    /// dates and times as strings, NULL as `null`, non-finite floats as `null`.
    pub fn write_json(&self, out: &mut String) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(_) | Value::UInt(_) => self.write_text(out),
            Value::Float(f) if !f.0.is_finite() => out.push_str("null"),
            Value::Float(f) => write_float(f.0, out),
            Value::Array(items) | Value::Tuple(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write_json(out);
                }
                out.push(']');
            }
            Value::Map(pairs) => {
                out.push('{');
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_json_string(&k.to_text(), out);
                    out.push(':');
                    v.write_json(out);
                }
                out.push('}');
            }
            other => write_json_string(&other.to_text(), out),
        }
    }

    /// The value as a `serde_json::Value` (for APIs that build JSON documents).
    pub fn to_json(&self) -> serde_json::Value {
        let mut s = String::new();
        self.write_json(&mut s);
        serde_json::from_str(&s).unwrap_or(serde_json::Value::Null)
    }
}

/// Writes a float the way ClickHouse prints it: integral values without a fraction.
fn write_float(f: f64, out: &mut String) {
    if f.is_nan() {
        out.push_str("nan");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 { "inf" } else { "-inf" });
    } else if f == f.trunc() && f.abs() < 1e15 {
        let _ = write!(out, "{}", f as i64);
    } else {
        let _ = write!(out, "{f}");
    }
}

/// Appends `s` as a quoted, escaped JSON string.
pub fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::str(s)
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(SmolStr::from(s))
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<u64> for Value {
    fn from(u: u64) -> Self {
        Value::UInt(u)
    }
}
impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(F64(f))
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

#[cfg(test)]
mod tests {
    /// A value is three words: every row, key and stored entry is a vector of them, so a
    /// wider variant (a `u128`'s 16-byte alignment, a vector's third word) would make them all
    /// a third larger.
    #[test]
    fn a_value_is_three_words() {
        assert_eq!(std::mem::size_of::<Value>(), 24);
    }

    /// Exactly the values whose drop frees something (a string on the heap, a nested value)
    /// own memory: [`crate::clear_row`] skips the drop of every other value, so one of these
    /// called owning nothing would leak.
    #[test]
    fn only_long_strings_and_nested_values_own_memory() {
        let long = "a string longer than the twenty-three bytes kept inline";
        let owning = [
            Value::str(long),
            Value::Array(vec![Value::Int(1)].into()),
            Value::Tuple(vec![Value::Null].into()),
            Value::Map(vec![(Value::UInt(1), Value::UInt(2))].into()),
        ];
        let owning_nothing = [
            Value::Null,
            Value::Bool(false),
            Value::Int(-7),
            Value::UInt(7),
            Value::Float(F64(1.5)),
            Value::str("exactly twenty-three b."),
            Value::String(smol_str::SmolStr::new_static(
                "a static string past the inline bytes",
            )),
            Value::Uuid(U128(1)),
            Value::Date(1),
            Value::DateTime(1),
            Value::DateTime64(1, 3),
        ];
        assert!(owning.iter().all(Value::owns_memory));
        assert!(!owning_nothing.iter().any(Value::owns_memory));
    }

    /// `set` puts its value in place of a NULL (a row's unset cell) and of any other value,
    /// and `clear_row` empties rows of either kind of value, keeping their allocation.
    #[test]
    fn set_and_clear_row_replace_and_empty_any_value() {
        let long = Value::str("a string longer than the twenty-three bytes kept inline");
        let mut row = vec![Value::Null, long.clone(), Value::UInt(3)];
        row[0].set(long.clone());
        row[1].set(Value::Int(-1));
        row[2].set(Value::str("US"));
        assert_eq!(row, vec![long.clone(), Value::Int(-1), Value::str("US")]);
        let capacity = row.capacity();
        crate::clear_row(&mut row);
        assert!(row.is_empty());
        assert_eq!(row.capacity(), capacity);
        let mut small = vec![Value::UInt(1), Value::str("DE")];
        crate::clear_row(&mut small);
        assert!(small.is_empty());
        assert_eq!(
            long,
            Value::str("a string longer than the twenty-three bytes kept inline")
        );
    }

    /// A clone equals its value for every variant (the ones copied as bytes and the ones
    /// that own memory), and clone and value live and drop on their own: a long string's
    /// clone shares its bytes and outlives the value it was cloned from.
    #[test]
    fn a_clone_equals_its_value_and_owns_itself() {
        let long = "a string longer than the twenty-three bytes kept inline";
        let values = vec![
            Value::Null,
            Value::Bool(true),
            Value::Int(-7),
            Value::UInt(u64::MAX),
            Value::Float(F64(1.5)),
            Value::str("US"),
            Value::str("exactly twenty-three b."),
            Value::str(long),
            Value::String(smol_str::SmolStr::new_static("static")),
            Value::Uuid(U128(u128::MAX - 3)),
            Value::Date(-1),
            Value::DateTime(1_717_200_000),
            Value::DateTime64(123_456, 3),
            Value::Array(vec![Value::str(long), Value::Int(1)].into()),
            Value::Tuple(vec![Value::Null, Value::str("x")].into()),
            Value::Map(vec![(Value::str(long), Value::UInt(2))].into()),
        ];
        for v in &values {
            let c = v.clone();
            assert_eq!(&c, v);
            assert_eq!(c.cmp(v), std::cmp::Ordering::Equal);
        }
        let clones: Vec<Value> = values.iter().map(Value::clone).collect();
        drop(values);
        assert_eq!(clones[7], Value::str(long));
        assert_eq!(
            clones[13],
            Value::Array(vec![Value::str(long), Value::Int(1)].into())
        );
    }

    /// A UUID compares, hashes and serializes as its `u128` does (parts and segments written
    /// before it was stored as two words read back the same).
    #[test]
    fn a_uuid_behaves_as_its_u128() {
        use std::hash::BuildHasher;
        let hasher = std::collections::hash_map::RandomState::new();
        let pairs = [(0u128, 1u128), (u128::MAX, 7), (1 << 64, (1 << 64) - 1)];
        for (a, b) in pairs {
            let (x, y) = (U128::from(a), U128::from(b));
            assert_eq!(x.cmp(&y), a.cmp(&b));
            assert_eq!(hasher.hash_one(x), hasher.hash_one(a));
            let text = serde_json::to_string(&Value::Uuid(x)).ok();
            assert_eq!(text, Some(format!("{{\"Uuid\":{a}}}")));
            let back: Option<Value> = text.and_then(|t| serde_json::from_str(&t).ok());
            assert_eq!(back, Some(Value::Uuid(x)));
        }
    }

    /// The prefix never contradicts the derived order, over every kind of value and the
    /// edges of each encoding (signs, shared string prefixes, -0.0, NaN).
    #[test]
    fn order_prefixes_agree_with_the_order() {
        let values = vec![
            Value::Null,
            Value::Bool(false),
            Value::Bool(true),
            Value::Int(i64::MIN),
            Value::Int(-1),
            Value::Int(0),
            Value::Int(7),
            Value::Int(i64::MAX),
            Value::UInt(0),
            Value::UInt(u64::MAX),
            Value::Float(F64(f64::NEG_INFINITY)),
            Value::Float(F64(-2.5)),
            Value::Float(F64(-0.0)),
            Value::Float(F64(0.0)),
            Value::Float(F64(1e300)),
            Value::Float(F64(f64::NAN)),
            Value::str(""),
            Value::str("a"),
            Value::str("a\0"),
            Value::str("abcdefg"),
            Value::str("abcdefg\0"),
            Value::str("abcdefgh"),
            Value::str("abcdefghi"),
            Value::str("abcdefgz"),
            Value::str("\u{e9}"),
            Value::Uuid(1.into()),
            Value::Uuid(u128::MAX.into()),
            Value::Date(-3),
            Value::Date(19_000),
            Value::DateTime(-1),
            Value::DateTime(1_700_000_000),
            Value::DateTime64(5, 3),
            Value::DateTime64(5, 6),
            Value::Array(vec![Value::Int(1)].into()),
            Value::Tuple(vec![].into()),
            Value::Map(vec![].into()),
        ];
        for a in &values {
            for b in &values {
                let ((pa, exact_a), (pb, exact_b)) = (a.order_prefix(), b.order_prefix());
                if pa < pb {
                    assert!(a < b, "{a:?} vs {b:?}");
                }
                if a <= b {
                    assert!(pa <= pb, "{a:?} vs {b:?}");
                }
                if pa == pb && exact_a {
                    assert!(exact_b && a == b, "{a:?} vs {b:?}");
                }
            }
        }
    }

    use super::*;

    /// Equality holds exactly where the derived order says equal, and equal values hash
    /// alike: over every kind of value, strings up to and past the length compared a byte at
    /// a time, and an array and a tuple of the same values (not equal).
    #[test]
    fn equality_agrees_with_the_order_and_the_hash() {
        let hash = |v: &Value| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            v.hash(&mut h);
            h.finish()
        };
        let long = "a string longer than sixteen bytes";
        let mut values = vec![
            Value::Null,
            Value::Bool(true),
            Value::Int(-1),
            Value::UInt(1),
            Value::Float(F64(-0.0)),
            Value::Float(F64(0.0)),
            Value::Float(F64(f64::NAN)),
            Value::Uuid(7.into()),
            Value::Date(1),
            Value::DateTime(1),
            Value::DateTime64(1, 3),
            Value::DateTime64(1, 6),
            Value::Array(vec![Value::Int(1), Value::str("US")].into()),
            Value::Tuple(vec![Value::Int(1), Value::str("US")].into()),
            Value::Map(vec![(Value::str("k"), Value::Int(1))].into()),
        ];
        for len in 0..=long.len() {
            values.push(Value::str(&long[..len]));
            values.push(Value::str(&format!("{}z", &long[..len])));
        }
        for a in &values {
            for b in &values {
                assert_eq!(a == b, a.cmp(b).is_eq(), "{a:?} vs {b:?}");
                if a == b {
                    assert_eq!(hash(a), hash(b), "{a:?} vs {b:?}");
                }
            }
            assert_eq!(a, &a.clone());
        }
    }

    #[test]
    fn floats_order_totally() {
        let mut v = [F64(1.0), F64(f64::NAN), F64(-2.0), F64(-0.0), F64(0.0)];
        v.sort();
        assert_eq!(v[0].0, -2.0);
        assert_eq!(v[1], F64(0.0));
        assert!(v[4].0.is_nan());
    }

    #[test]
    fn sql_compare_across_numeric_variants() {
        assert_eq!(
            Value::Int(3).sql_cmp(&Value::UInt(3)),
            Some(Ordering::Equal)
        );
        assert_eq!(
            Value::Int(-1).sql_cmp(&Value::UInt(0)),
            Some(Ordering::Less)
        );
        assert_eq!(
            Value::from(2.5).sql_cmp(&Value::Int(2)),
            Some(Ordering::Greater)
        );
        assert_eq!(Value::Null.sql_cmp(&Value::Int(2)), None);
        assert_eq!(
            Value::DateTime(86_400).sql_cmp(&Value::str("1970-01-02 00:00:00")),
            Some(Ordering::Equal)
        );
    }

    #[test]
    fn json_and_text_forms() {
        let mut s = String::new();
        Value::str("a\"b").write_json(&mut s);
        assert_eq!(s, "\"a\\\"b\"");
        assert_eq!(Value::from(2.0).to_text(), "2");
        assert_eq!(Value::from(2.5).to_text(), "2.5");
        assert_eq!(Value::DateTime(0).to_text(), "1970-01-01 00:00:00");
    }
}
