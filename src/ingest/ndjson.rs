//! Schema-driven NDJSON decoding: each line is read once, straight into a typed row.
//!
//! A trie of the schema's JSON paths drives a serde visitor: keys that no column reads are
//! skipped without being built, and each column's value is captured as a borrowed raw JSON
//! slice and converted by the column's type. No generic JSON tree is built per line.

use std::borrow::Cow;
use std::fmt;

use petrel_value::{ColumnType, Row, Value};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::flat_json;
use crate::project::{ColumnDefault, ColumnSpec};

/// One column's failure to decode, as the quarantine table records it.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnError {
    /// The column's name (empty when the whole line is bad).
    pub column: String,
    /// What went wrong.
    pub message: String,
}

/// A line that did not fit the schema: the errors and each column's raw text, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// Why.
    pub errors: Vec<ColumnError>,
    /// The raw JSON text of each column, by schema position.
    pub raw: Vec<Option<String>>,
}

/// Where a JSON path leads in the trie.
#[derive(Default, Debug)]
struct Trie {
    children: Vec<(String, Trie)>,
    /// Columns whose value is the object at this node.
    columns: Vec<usize>,
}

impl Trie {
    fn child(&mut self, key: &str) -> &mut Trie {
        let pos = match self.children.iter().position(|(k, _)| k == key) {
            Some(p) => p,
            None => {
                self.children.push((key.to_string(), Trie::default()));
                self.children.len() - 1
            }
        };
        &mut self.children[pos].1
    }
}

/// How many columns' raw values a line's decode keeps on the stack (more go on the heap).
const SLOTS_ON_STACK: usize = 32;

/// Decodes NDJSON lines into rows of one datasource's schema.
pub struct RowDecoder {
    columns: Vec<ColumnSpec>,
    /// How each column's raw value is read (by position).
    readers: Vec<Reader>,
    trie: Trie,
    /// When every column reads a top-level key (or the whole line), the trie's keys: lines
    /// that are flat objects are then read by the fast scanner, each value converted as it
    /// is found.
    flat: Option<flat_json::Keys>,
    /// For each of those keys, the columns that read it and how.
    flat_columns: Vec<Box<[(usize, Reader)]>>,
    /// Columns that store the whole line (`json:$`).
    whole: Vec<usize>,
}

/// Splits `$.a.b[:]` into `["a", "b"]`; `$` is the empty path.
fn path_segments(path: &str) -> Vec<String> {
    let p = path.trim().trim_start_matches('$');
    p.split('.')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim_end_matches("[:]")
                .trim_start_matches("['")
                .trim_end_matches("']")
                .to_string()
        })
        .collect()
}

impl RowDecoder {
    /// Builds the decoder for `columns` (each read at its JSON path, or at its name).
    pub fn new(columns: &[ColumnSpec]) -> RowDecoder {
        let mut trie = Trie::default();
        let mut whole = Vec::new();
        for (i, c) in columns.iter().enumerate() {
            let segs = match &c.json_path {
                Some(p) => path_segments(p),
                None => vec![c.column.name.clone()],
            };
            if segs.is_empty() {
                whole.push(i);
                continue;
            }
            let mut node = &mut trie;
            for s in &segs {
                node = node.child(s);
            }
            node.columns.push(i);
        }
        let readers: Vec<Reader> = columns.iter().map(|c| Reader::of(&c.column.ty)).collect();
        let flat_columns = trie
            .children
            .iter()
            .map(|(_, node)| node.columns.iter().map(|&c| (c, readers[c])).collect())
            .collect();
        RowDecoder {
            columns: columns.to_vec(),
            readers,
            flat_columns,
            flat: trie
                .children
                .iter()
                .all(|(_, t)| t.children.is_empty())
                .then(|| flat_json::Keys::new(trie.children.iter().map(|(k, _)| k.as_str()))),
            trie,
            whole,
        }
    }

    /// Decodes one line of raw bytes: a line that is not UTF-8 is rejected on its own,
    /// like any other line that does not fit, and the other lines of the body still land.
    pub fn decode_bytes(&self, line: &[u8], now_secs: i64) -> Result<Row, Rejected> {
        match std::str::from_utf8(line) {
            Ok(text) => self.decode(text, now_secs),
            Err(e) => Err(Rejected {
                errors: vec![ColumnError {
                    column: String::new(),
                    message: format!("the line is not valid UTF-8 (at byte {})", e.valid_up_to()),
                }],
                raw: vec![None; self.columns.len()],
            }),
        }
    }

    /// Decodes one line into a row, or says why it does not fit.
    pub fn decode(&self, line: &str, now_secs: i64) -> Result<Row, Rejected> {
        if let Some(row) = self.decode_flat(line, now_secs) {
            return Ok(row);
        }
        self.decode_general(line, now_secs)
    }

    /// A line that is a flat object whose values all fit, read in one pass: each value is
    /// converted as the scanner finds it, straight into its place in the row. `None` for
    /// any other line (or a value that does not fit, or a schema of nested paths): the
    /// general path then reads it and words the errors, so every line gets the row, or the
    /// rejection, the general path gives.
    fn decode_flat(&self, line: &str, now_secs: i64) -> Option<Row> {
        let keys = self.flat.as_ref()?;
        // Each place made NULL where it lies: `vec![Value::Null; n]` clones the first (a call
        // that writes the value to the stack, each copy then read back whole before the
        // stores that made it were done).
        let mut row = Vec::with_capacity(self.columns.len());
        row.resize_with(self.columns.len(), || Value::Null);
        // Which columns the line set, for the first 64 (a wider schema's others are found
        // by their NULL, which no direct read gives, and are read as missing again when
        // they are NULL).
        let mut set = 0u64;
        flat_json::scan(line, keys, |key, found| {
            for &(c, reader) in self.flat_columns.get(key)?.iter() {
                let place = row.get_mut(c)?;
                if !reader.read_found(found, place) {
                    *place = self.cell(c, Some(found.raw), now_secs).ok()?;
                }
                set |= 1u64.checked_shl(c as u32).unwrap_or(0);
            }
            Some(())
        })?;
        for (c, place) in row.iter_mut().enumerate() {
            let was_set = match 1u64.checked_shl(c as u32) {
                Some(bit) => set & bit != 0,
                None => !place.is_null(),
            };
            if self.whole.contains(&c) {
                *place = self.cell(c, Some(line.trim()), now_secs).ok()?;
            } else if !was_set {
                *place = self.cell(c, None, now_secs).ok()?;
            }
        }
        Some(row)
    }

    /// Reads a line with serde_json's parser: every shape of line, and every error worded.
    fn decode_general(&self, line: &str, now_secs: i64) -> Result<Row, Rejected> {
        // On the stack for the usual datasource's columns: no allocation per line, and no
        // copy (a `SmallVec` returned by value moved its 520 bytes on every line).
        let mut on_stack = [None; SLOTS_ON_STACK];
        let mut on_heap = Vec::new();
        let slots: &mut [Option<&str>] = match on_stack.get_mut(..self.columns.len()) {
            Some(slots) => slots,
            None => {
                on_heap.resize(self.columns.len(), None);
                &mut on_heap
            }
        };
        let mut de = serde_json::Deserializer::from_str(line);
        let parsed = ObjectSeed {
            trie: &self.trie,
            slots: &mut *slots,
        }
        .deserialize(&mut de)
        .and_then(|_| de.end());
        if let Err(e) = parsed {
            return Err(Rejected {
                errors: vec![ColumnError {
                    column: String::new(),
                    message: format!("invalid JSON object: {e}"),
                }],
                raw: vec![None; self.columns.len()],
            });
        }
        let mut row = Vec::with_capacity(self.columns.len());
        let mut errors = Vec::new();
        for (c, &slot) in slots.iter().enumerate() {
            let raw = if self.whole.contains(&c) {
                Some(line.trim())
            } else {
                slot
            };
            match self.cell(c, raw, now_secs) {
                Ok(v) => row.push(v),
                Err(e) => {
                    errors.push(e);
                    row.push(Value::Null);
                }
            }
        }
        if errors.is_empty() {
            Ok(row)
        } else {
            Err(Rejected {
                errors,
                raw: slots.iter().map(|s| s.map(str::to_string)).collect(),
            })
        }
    }

    /// Column `c`'s value from its raw JSON text (`None` when the line has no value for it):
    /// a missing value or a `null` in a column that is not `Nullable` takes the column's
    /// default.
    fn cell(&self, c: usize, raw: Option<&str>, now_secs: i64) -> Result<Value, ColumnError> {
        let spec = &self.columns[c];
        let ty = &spec.column.ty;
        match raw {
            None | Some("null") if !ty.is_nullable() => Ok(match &spec.default {
                Some(ColumnDefault::Value(v)) => v.clone(),
                Some(ColumnDefault::Now) => ColumnType::DateTime
                    .coerce(&Value::DateTime(now_secs))
                    .and_then(|v| ty.coerce(&v))
                    .unwrap_or_else(|| ty.default_value()),
                None => ty.default_value(),
            }),
            None => Ok(Value::Null),
            Some(text) => self.readers[c].read(ty, text).ok_or_else(|| ColumnError {
                column: spec.column.name.clone(),
                message: format!(
                    "value {} on column '{}' is not {}",
                    text,
                    spec.column.name,
                    ty.name()
                ),
            }),
        }
    }
}

/// The common column types, read without asking the type what it is for every value; any
/// value these do not read directly goes through [`convert`], which reads every type.
#[derive(Clone, Copy, Debug)]
enum Reader {
    /// `String` (also under `LowCardinality`), not `Nullable`.
    Text,
    /// Integers, not `Nullable`, of this signedness and width in bits: read and checked
    /// against the type's range in one step.
    Integer {
        signed: bool,
        bits: u8,
    },
    /// `DateTime`, not `Nullable`.
    DateTime,
    General,
}

impl Reader {
    fn of(ty: &ColumnType) -> Reader {
        if ty.is_nullable() || ty.domain().is_some() {
            return Reader::General;
        }
        match ty.base() {
            ColumnType::String => Reader::Text,
            ColumnType::Int(bits) => Reader::Integer {
                signed: true,
                bits: *bits,
            },
            ColumnType::UInt(bits) => Reader::Integer {
                signed: false,
                bits: *bits,
            },
            ColumnType::DateTime => Reader::DateTime,
            _ => Reader::General,
        }
    }

    /// Reads `text` as the column's type: directly for the common types, else through
    /// [`convert`].
    fn read(self, ty: &ColumnType, text: &str) -> Option<Value> {
        self.read_direct(text).or_else(|| convert(ty, text))
    }

    /// The value of `text` for the common types, where they read it directly; `None` where
    /// [`convert`] must decide (which may still read it, or reject it).
    fn read_direct(self, text: &str) -> Option<Value> {
        let mut value = Value::Null;
        self.read_into(text, &mut value).then_some(value)
    }

    /// [`Reader::read_into`] of a value the flat scan found, using what the scan learnt of
    /// it: a string's text without looking for escapes again, an integer's digits without
    /// reading them again. The same value, or the same refusal, as `read_into` of its text.
    #[inline(always)]
    fn read_found(self, found: flat_json::Found, place: &mut Value) -> bool {
        use flat_json::Shape;
        match (self, found.shape) {
            (Reader::Text, Shape::String) => match found.string() {
                Some(s) => place.set(Value::from(s)),
                None => return false,
            },
            (
                Reader::Integer {
                    signed: false,
                    bits,
                },
                Shape::Integer {
                    magnitude,
                    negative: false,
                },
            ) if fits_unsigned(magnitude, bits) => place.set(Value::UInt(magnitude)),
            (
                Reader::Integer { signed: true, bits },
                Shape::Integer {
                    magnitude,
                    negative,
                },
            ) => {
                let i = if negative {
                    match 0i64.checked_sub_unsigned(magnitude) {
                        Some(i) => i,
                        None => return false,
                    }
                } else {
                    match i64::try_from(magnitude) {
                        Ok(i) => i,
                        Err(_) => return false,
                    }
                };
                if !fits_signed(i, bits) {
                    return false;
                }
                place.set(Value::Int(i))
            }
            (Reader::DateTime, Shape::String) => match found.string().and_then(datetime_text) {
                Some(secs) => place.set(Value::DateTime(secs)),
                None => return false,
            },
            _ => return self.read_into(found.raw, place),
        }
        true
    }

    /// [`Reader::read_direct`] into `place`; false (`place` unchanged) where [`convert`] must
    /// decide. The value is made where it goes: one returned and then moved into a row was
    /// copied in pieces, each copy waiting on the stores that had just made it.
    #[inline(always)]
    fn read_into(self, text: &str, place: &mut Value) -> bool {
        match self {
            Reader::Text => match unescaped_string(text) {
                Some(s) => place.set(Value::from(s)),
                None => return false,
            },
            Reader::Integer { signed: true, bits } => match text.parse::<i64>() {
                Ok(i) if fits_signed(i, bits) => place.set(Value::Int(i)),
                _ => return false,
            },
            Reader::Integer {
                signed: false,
                bits,
            } => match text.parse::<u64>() {
                Ok(u) if fits_unsigned(u, bits) => place.set(Value::UInt(u)),
                _ => return false,
            },
            Reader::DateTime => match unescaped_string(text).and_then(datetime_text) {
                Some(secs) => place.set(Value::DateTime(secs)),
                None => return false,
            },
            Reader::General => return false,
        }
        true
    }
}

/// Whether `u` is in the range of an unsigned integer of `bits` bits.
fn fits_unsigned(u: u64, bits: u8) -> bool {
    bits >= 64 || u >> bits == 0
}

/// Whether `i` is in the range of a signed integer of `bits` bits.
fn fits_signed(i: i64, bits: u8) -> bool {
    bits >= 64 || i >> (bits - 1) == 0 || i >> (bits - 1) == -1
}

/// The seconds of a `DateTime` written as a time (`2024-06-01 10:00:00`); a string of digits
/// only is left to [`convert`], which reads it as seconds.
fn datetime_text(inner: &str) -> Option<i64> {
    // A time's fifth byte is its date's dash: the usual time is told from digits without
    // reading all of its bytes.
    let bytes = inner.as_bytes();
    if bytes.get(4).is_none_or(u8::is_ascii_digit) && bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    petrel_value::time::parse_datetime(inner, 0)
}

/// The text of a raw JSON string that has no escapes (valid JSON already, so its text between
/// the quotes is its value).
fn unescaped_string(text: &str) -> Option<&str> {
    text.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .filter(|inner| !inner.contains('\\'))
}

/// Converts one raw JSON value to a column type.
fn convert(ty: &ColumnType, text: &str) -> Option<Value> {
    // JSON's whitespace is ASCII.
    let text = text.trim_ascii();
    if text == "null" {
        return ty.is_nullable().then_some(Value::Null);
    }
    // Enums, addresses and decimals take a JSON string or number, as their type admits it.
    if ty.domain().is_some() {
        let v = match serde_json::from_str::<serde_json::Value>(text).ok()? {
            serde_json::Value::String(s) => Value::from(s.as_str()),
            serde_json::Value::Number(n) => n
                .as_i64()
                .map(Value::Int)
                .or_else(|| n.as_u64().map(Value::UInt))
                .or_else(|| n.as_f64().map(|f| Value::Float(petrel_value::F64(f))))?,
            _ => return None,
        };
        return ty.coerce(&v);
    }
    if text.starts_with('"') {
        // The raw value is valid JSON already: a string without escapes is its own text.
        let s: Cow<str> = match unescaped_string(text) {
            Some(inner) => Cow::Borrowed(inner),
            None => serde_json::from_str(text).ok()?,
        };
        return match ty.base() {
            ColumnType::String => Some(Value::from(s.as_ref())),
            _ => ty.parse_text(&s),
        };
    }
    match ty.base() {
        ColumnType::String => Some(Value::from(text)),
        // The common case read without a detour through text parsing.
        ColumnType::Int(_) | ColumnType::UInt(_) if !ty.is_nullable() => {
            match text.parse::<i64>() {
                Ok(i) => ty.coerce(&Value::Int(i)),
                Err(_) => ty.parse_text(text),
            }
        }
        ColumnType::Array(inner) => {
            let items: Vec<&RawValue> = serde_json::from_str(text).ok()?;
            items
                .iter()
                .map(|i| convert(inner, i.get()))
                .collect::<Option<Box<[_]>>>()
                .map(Value::Array)
        }
        ColumnType::Bool => match text {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            t => ty.parse_text(t),
        },
        // A JSON object, its keys as the key type reads text, in the object's order.
        ColumnType::Map(k, v) => {
            let pairs: MapPairs = serde_json::from_str(text).ok()?;
            pairs
                .0
                .into_iter()
                .map(|(key, value)| {
                    let key = match k.base() {
                        ColumnType::String => Value::from(key.as_ref()),
                        _ => k.parse_text(&key)?,
                    };
                    Some((key, convert(v, value.get())?))
                })
                .collect::<Option<Box<[_]>>>()
                .map(Value::Map)
        }
        // A JSON array with one item per element.
        ColumnType::Tuple(types) => {
            let items: Vec<&RawValue> = serde_json::from_str(text).ok()?;
            if items.len() != types.len() {
                return None;
            }
            types
                .iter()
                .zip(items)
                .map(|(t, i)| convert(t, i.get()))
                .collect::<Option<Box<[_]>>>()
                .map(Value::Tuple)
        }
        // A number for a time is seconds since the epoch, as ClickHouse reads it.
        ColumnType::DateTime | ColumnType::DateTime64(_) => match text.parse::<i64>() {
            Ok(secs) => ty.coerce(&Value::DateTime(secs)),
            Err(_) => ty.parse_text(text),
        },
        _ if text == "true" || text == "false" => ty.coerce(&Value::Bool(text == "true")),
        _ => ty.parse_text(text),
    }
}

/// A JSON object's entries in their order, values left raw (a `Map` column's value).
struct MapPairs<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for MapPairs<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PairsVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for PairsVisitor<'a> {
            type Value = MapPairs<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<MapPairs<'a>, M::Error> {
                let mut pairs = Vec::new();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    pairs.push((key, map.next_value::<&'de RawValue>()?));
                }
                Ok(MapPairs(pairs))
            }
        }
        d.deserialize_map(PairsVisitor(std::marker::PhantomData))
    }
}

/// Visits one JSON object, capturing the raw values the trie asks for.
struct ObjectSeed<'a, 'de> {
    trie: &'a Trie,
    slots: &'a mut [Option<&'de str>],
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match self.trie.children.iter().find(|(k, _)| *k == key) {
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
                Some((_, child)) if child.children.is_empty() => {
                    let raw: &'de RawValue = map.next_value()?;
                    for &c in &child.columns {
                        self.slots[c] = Some(raw.get());
                    }
                }
                Some((_, child)) => {
                    // Nested paths read inside this value; a column may also want it whole.
                    let raw: &'de RawValue = map.next_value()?;
                    for &c in &child.columns {
                        self.slots[c] = Some(raw.get());
                    }
                    let mut de = serde_json::Deserializer::from_str(raw.get());
                    let _ = ObjectSeed {
                        trie: child,
                        slots: self.slots,
                    }
                    .deserialize(&mut de);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use petrel_value::Column;

    /// A decoder of the test's columns; without `fast`, every line goes through the general
    /// parser and every value through [`convert`].
    fn decoder(fast: bool) -> RowDecoder {
        let columns = [
            ("s", "String"),
            ("lc", "LowCardinality(String)"),
            ("u", "UInt32"),
            ("i", "Int64"),
            ("t", "DateTime"),
            ("ns", "Nullable(String)"),
            ("f", "Float64"),
            ("a", "Array(Int32)"),
            ("b", "Bool"),
            ("i8", "Int8"),
            ("u64", "UInt64"),
        ]
        .iter()
        .map(|(name, ty)| ColumnSpec {
            column: Column {
                name: name.to_string(),
                ty: ColumnType::parse(ty).unwrap(),
            },
            json_path: None,
            default: None,
        })
        .collect::<Vec<_>>();
        let mut d = RowDecoder::new(&columns);
        if !fast {
            d.flat = None;
            d.readers.fill(Reader::General);
        }
        d
    }

    /// The fast paths (flat objects scanned, common types read directly) decode every line
    /// into the same row, or the same rejection, as the general parser and converter.
    #[test]
    fn the_fast_path_decodes_as_the_general_parser_does() {
        let (fast, general) = (decoder(true), decoder(false));
        for line in [
            r#"{"s":"x","lc":"US","u":7,"i":-3,"t":"2024-06-01 10:00:00","ns":null,"f":1.5,"b":true}"#,
            r#"{"b":false,"f":2,"ns":"n","t":"2024-06-01T10:00:00","i":"12","u":"8","lc":"DE","s":"y"}"#,
            r#"{"s":"a\"b","u":1}"#,
            r#"{"s":"é","u":4294967295,"t":1717236000}"#,
            r#"{"s":"dup","s":"last","u":1}"#,
            r#"{"u":4294967296}"#,
            r#"{"u":-1}"#,
            r#"{"u":1.5}"#,
            r#"{"i":9223372036854775808}"#,
            r#"{"t":"2024-02-30 00:00:00"}"#,
            r#"{"t":"1717236000"}"#,
            r#"{"s":12,"lc":true,"ns":"\\N"}"#,
            r#"{"a":[1,2],"s":"x"}"#,
            r#"{"other":{"x":1},"s":"x"}"#,
            r#"{"s":"x","u":1"#,
            r#"{"s":"x",}"#,
            r#"{}"#,
            r#"  {"s" : "spaced" , "u" : 3 }  "#,
            r#"[1]"#,
            r#"{"f":"nan","u":"0x1"}"#,
            r#"{"i8":127,"u":0}"#,
            r#"{"i8":128}"#,
            r#"{"i8":-128,"u":-0}"#,
            r#"{"i8":-129}"#,
            r#"{"i8":-0,"i":-9223372036854775808}"#,
            r#"{"u64":18446744073709551615}"#,
            r#"{"u64":18446744073709551616}"#,
            r#"{"u64":-1,"i8":1e2}"#,
            r#"{"u":"x","u":5}"#,
            r#"{"u":5,"u":"x"}"#,
            r#"{"zz":"a\"b","u":1}"#,
            r#"{"u":2,"zz":[1,{"a":2}]}"#,
            r#"{"u64":1,"t":"2024-06-01 10:00:00","s":"x","ns":"y","i":-1,"u":3,"lc":"z"}"#,
            r#"{"s":"x","lc":"y","u":"3","i":4,"t":null,"ns":null,"u":null}"#,
            r#"{"i":-9223372036854775809,"u":0,"u64":0}"#,
            r#"{"i":9223372036854775807,"i8":-1}"#,
            r#"{"i":-12e0,"u":12.0,"i8":"-5"}"#,
            r#"{"t":"2024-06-01 10:00:0\u0030","lc":"\u0055S"}"#,
            r#"{"t":"2024-13-01 10:00:00","s":""}"#,
            r#"{"t":"1717"}"#,
            r#"{"t":"17172"}"#,
            r#"{"t":"20240601"}"#,
            r#"{"t":"2024x06-01 10:00:00"}"#,
            r#"{"t":"2024-06-01"}"#,
            r#"{"t":""}"#,
        ] {
            assert_eq!(fast.decode(line, 0), general.decode(line, 0), "{line}");
        }
        // The usual event is read by the fast path, in any key order; a nested value is
        // left to the general parser.
        let usual = r#"{"t":"2024-06-01 10:00:00","u":7,"lc":"US","i":-3,"s":"x"}"#;
        assert_eq!(
            fast.decode_flat(usual, 0).map(Ok),
            Some(general.decode(usual, 0))
        );
        assert!(fast.decode_flat(r#"{"u":7,"zz":{"a":1}}"#, 0).is_none());
    }

    /// A schema wider than the 64 columns whose presence the fast path tracks by bits: a
    /// column past them that a line leaves out, sets to `null`, or sets, is read as the
    /// general parser reads it.
    #[test]
    fn the_fast_path_reads_wide_schemas_as_the_general_parser_does() {
        let columns: Vec<ColumnSpec> = (0..70)
            .map(|c| ColumnSpec {
                column: Column {
                    name: format!("c{c}"),
                    ty: ColumnType::parse(if c % 2 == 0 {
                        "UInt32"
                    } else {
                        "Nullable(String)"
                    })
                    .unwrap(),
                },
                json_path: None,
                default: None,
            })
            .collect();
        let fast = RowDecoder::new(&columns);
        let mut general = RowDecoder::new(&columns);
        general.flat = None;
        for line in [
            r#"{"c0":1,"c65":null,"c66":7,"c69":"x"}"#,
            r#"{"c66":null,"c67":"y","c68":"8"}"#,
            r#"{"c1":"a","c64":"nope"}"#,
            r#"{}"#,
        ] {
            let row = fast.decode(line, 0);
            assert_eq!(row, general.decode(line, 0), "{line}");
            assert!(
                row.is_err() || fast.decode_flat(line, 0).is_some(),
                "{line}"
            );
        }
    }
}
