//! A fast scanner for the common shape of an event: one flat JSON object per line, whose values
//! are strings without escapes, numbers and literals.
//!
//! It finds each entry's key and raw value text in one pass over the bytes, without building
//! anything, and checks the JSON grammar as it goes. Anything else (nested values, escapes,
//! a line that is not valid JSON) makes it give up, and the caller reads the line with the
//! general parser, which handles every shape and words the errors: so a line gets the same
//! row, or the same rejection, whichever path reads it.

use petrel_value::same_bytes;

/// The keys a scan looks for, each by its index: a schema's top-level JSON keys.
pub(crate) struct Keys {
    names: Vec<Box<str>>,
    /// The key has no quote, backslash or control character, so the JSON string of its
    /// bytes between two quotes is the key itself: a line's key is checked against the
    /// key expected there by comparing bytes, without scanning it first.
    plain: Vec<bool>,
}

impl Keys {
    /// The keys `names`, by their index in it.
    pub(crate) fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Keys {
        let names: Vec<Box<str>> = names.into_iter().map(Box::from).collect();
        let plain = names
            .iter()
            .map(|k| !k.bytes().any(|b| STOPS_STRING[b as usize]))
            .collect();
        Keys { names, plain }
    }

    /// The index of the key whose string opens at `i` (or `None` for a key not looked for),
    /// and the position past its closing quote. Events mostly list their keys in one order:
    /// `guess`, the key after the one found last, is tried first.
    fn find(&self, b: &[u8], i: usize, guess: usize) -> Option<(Option<usize>, usize)> {
        if let (Some(name), Some(true)) = (self.names.get(guess), self.plain.get(guess)) {
            let end = i + 1 + name.len();
            let same = b
                .get(i + 1..end)
                .is_some_and(|k| same_bytes(k, name.as_bytes()));
            if same && b.get(end) == Some(&b'"') {
                return Some((Some(guess), end + 1));
            }
        }
        let end = string_end(b, i)?;
        let key = b.get(i + 1..end)?;
        let found = self
            .names
            .iter()
            .position(|k| same_bytes(k.as_bytes(), key));
        Some((found, end + 1))
    }
}

/// A value the scan found: its raw JSON text, and what the scan learnt of it on the way, so
/// that reading it as a column's type does not scan it again.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Found<'a> {
    /// The value's JSON text (a string with its quotes).
    pub(crate) raw: &'a str,
    pub(crate) shape: Shape,
}

/// What a found value is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Shape {
    /// A string without escapes or control characters: its value is its text between the
    /// quotes.
    String,
    /// A number without fraction or exponent whose magnitude fits in a `u64`.
    Integer { magnitude: u64, negative: bool },
    /// Any other number, or a literal.
    Other,
}

impl<'a> Found<'a> {
    /// A [`Shape::String`]'s value: its text between the quotes.
    pub(crate) fn string(&self) -> Option<&'a str> {
        match self.shape {
            Shape::String => self.raw.get(1..self.raw.len().saturating_sub(1)),
            _ => None,
        }
    }
}

/// Calls `entry(key, value)` for each entry of the flat object on `line` whose key is one of
/// `keys` (by its index), in order, and returns `Some(())`; returns `None`, possibly after
/// some calls, when the line is not a flat object this scanner reads, or when `entry` gives
/// up by returning `None` (the caller then discards what it was given). The values of other
/// keys are checked and skipped.
pub(crate) fn scan<'a>(
    line: &'a str,
    keys: &Keys,
    mut entry: impl FnMut(usize, Found<'a>) -> Option<()>,
) -> Option<()> {
    let b = line.as_bytes();
    let mut i = skip_whitespace(b, 0);
    if *b.get(i)? != b'{' {
        return None;
    }
    i = skip_whitespace(b, i + 1);
    if *b.get(i)? == b'}' {
        return only_whitespace_after(b, i + 1);
    }
    let mut guess = 0;
    loop {
        if *b.get(i)? != b'"' {
            return None;
        }
        let (key, key_end) = keys.find(b, i, guess)?;
        i = skip_whitespace(b, key_end);
        if *b.get(i)? != b':' {
            return None;
        }
        i = skip_whitespace(b, i + 1);
        let start = i;
        let shape;
        (i, shape) = scalar(b, i)?;
        if let Some(key) = key {
            guess = key + 1;
            let raw = line.get(start..i)?;
            entry(key, Found { raw, shape })?;
        }
        i = skip_whitespace(b, i);
        match *b.get(i)? {
            b',' => i = skip_whitespace(b, i + 1),
            b'}' => return only_whitespace_after(b, i + 1),
            _ => return None,
        }
    }
}

fn skip_whitespace(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

fn only_whitespace_after(b: &[u8], i: usize) -> Option<()> {
    (skip_whitespace(b, i) == b.len()).then_some(())
}

/// The bytes that end the fast scan of a string: its closing quote, an escape, or a control
/// character (invalid in JSON strings).
static STOPS_STRING: [bool; 256] = {
    let mut table = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        table[c] = true;
        c += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// The position of the quote that closes the string opening at `start`; `None` when the
/// string has an escape or a control character (or does not close). Event strings are short:
/// a table lookup per byte beats a vectorised search's set-up.
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while !STOPS_STRING[*b.get(i)? as usize] {
        i += 1;
    }
    (b[i] == b'"').then_some(i)
}

/// The end (exclusive) and shape of the string, number or literal starting at `i`; `None`
/// for objects, arrays and anything that is not valid JSON there. Inlined: returned through
/// memory, the pair was read back whole before the stores that made it were done.
#[inline(always)]
fn scalar(b: &[u8], i: usize) -> Option<(usize, Shape)> {
    match *b.get(i)? {
        b'"' => string_end(b, i).map(|end| (end + 1, Shape::String)),
        b'-' | b'0'..=b'9' => number(b, i),
        b't' => literal_end(b, i, b"true"),
        b'f' => literal_end(b, i, b"false"),
        b'n' => literal_end(b, i, b"null"),
        _ => None,
    }
}

fn literal_end(b: &[u8], i: usize, literal: &[u8]) -> Option<(usize, Shape)> {
    b.get(i..)?
        .starts_with(literal)
        .then_some((i + literal.len(), Shape::Other))
}

/// The end of a JSON number (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`) and its
/// shape: an integer's magnitude is read with its digits, as they are checked.
#[inline(always)]
fn number(b: &[u8], mut i: usize) -> Option<(usize, Shape)> {
    let digits = |b: &[u8], mut i: usize| {
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        (i > start).then_some(i)
    };
    let negative = b.get(i) == Some(&b'-');
    if negative {
        i += 1;
    }
    let mut magnitude = Some(0u64);
    match *b.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => {
            while let Some(&d) = b.get(i).filter(|d| d.is_ascii_digit()) {
                magnitude = magnitude
                    .and_then(|m| m.checked_mul(10))
                    .and_then(|m| m.checked_add(u64::from(d - b'0')));
                i += 1;
            }
        }
        _ => return None,
    }
    let mut integer = true;
    if b.get(i) == Some(&b'.') {
        i = digits(b, i + 1)?;
        integer = false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        i = digits(b, i)?;
        integer = false;
    }
    let shape = match magnitude {
        Some(magnitude) if integer => Shape::Integer {
            magnitude,
            negative,
        },
        _ => Shape::Other,
    };
    Some((i, shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys the tests' lines use; a key with a quote is looked for by scanning it.
    const KEYS: [&str; 8] = ["a", "b", "c", "d", "e", "f", "é", "q\"x"];

    fn entries(line: &str) -> Option<Vec<(&str, &str)>> {
        let mut out = Vec::new();
        scan(line, &Keys::new(KEYS), |k, v| {
            out.push((KEYS[k], v.raw));
            Some(())
        })?;
        Some(out)
    }

    #[test]
    fn reads_flat_objects() {
        assert_eq!(
            entries(r#" {"a": 1, "b":"x y", "c" : -2.5e+3,"d":true,"e":null,"f":false} "#),
            Some(vec![
                ("a", "1"),
                ("b", r#""x y""#),
                ("c", "-2.5e+3"),
                ("d", "true"),
                ("e", "null"),
                ("f", "false")
            ])
        );
        assert_eq!(entries("{}"), Some(vec![]));
        // Keys in another order, keys not looked for (skipped), a key that is a prefix of
        // another.
        assert_eq!(
            entries(r#"{"b":2,"ab":3,"a":1,"bb":[],"c":"z"}"#),
            None,
            "a nested value is not read, even under a key not looked for"
        );
        assert_eq!(
            entries(r#"{"b":2,"ab":3,"a":1,"bb":"w","c":"z","a2":0}"#),
            Some(vec![("b", "2"), ("a", "1"), ("c", r#""z""#)])
        );
        assert_eq!(entries(r#"{"é":"ü"}"#), Some(vec![("é", r#""ü""#)]));
    }

    /// The scan tells strings without escapes and integers (with their magnitude, read as
    /// their digits are checked) from other values.
    #[test]
    fn tells_the_shape_of_each_value() {
        let mut found = Vec::new();
        let line = r#"{"a":"x","b":0,"c":-17,"d":18446744073709551615,"e":18446744073709551616,"f":1.5,"a":-0,"b":2e3,"c":true,"d":null}"#;
        scan(line, &Keys::new(KEYS), |_, v| {
            found.push(v.shape);
            Some(())
        })
        .unwrap();
        let integer = |magnitude, negative| Shape::Integer {
            magnitude,
            negative,
        };
        assert_eq!(
            found,
            vec![
                Shape::String,
                integer(0, false),
                integer(17, true),
                integer(u64::MAX, false),
                Shape::Other,
                Shape::Other,
                integer(0, true),
                Shape::Other,
                Shape::Other,
                Shape::Other,
            ]
        );
        let string = Found {
            raw: r#""x y""#,
            shape: Shape::String,
        };
        assert_eq!(string.string(), Some("x y"));
    }

    /// Every line this scanner does not read is left to the general parser: nested values,
    /// escapes, and everything that is not valid JSON, which serde_json must reject too.
    #[test]
    fn gives_up_on_what_it_does_not_read() {
        for line in [
            r#"{"a":{"b":1}}"#,
            r#"{"a":[1]}"#,
            r#"{"a":"x\"y"}"#,
            r#"{"a\n":1}"#,
            r#"["a"]"#,
        ] {
            assert_eq!(entries(line), None, "{line}");
            assert!(serde_json::from_str::<serde_json::Value>(line).is_ok());
        }
        for line in [
            "",
            "{",
            r#"{"a":1"#,
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":1e}"#,
            r#"{"a":-}"#,
            r#"{"a":tru}"#,
            r#"{"a":truex}"#,
            r#"{"a":1} x"#,
            r#"{"a":1}{"#,
            r#"{a:1}"#,
            r#"{"a":"x}"#,
            r#"{"a":1 2}"#,
            "{\"a\":\"x\ty\"}",
        ] {
            assert_eq!(entries(line), None, "{line}");
            assert!(
                serde_json::from_str::<serde_json::Value>(line).is_err(),
                "serde_json must reject {line}"
            );
        }
    }
}
