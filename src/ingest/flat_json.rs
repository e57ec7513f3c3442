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

/// Calls `entry(key, raw_value)` for each entry of the flat object on `line` whose key is
/// one of `keys` (by its index), in order, and returns `Some(())`; returns `None`, possibly
/// after some calls, when the line is not a flat object this scanner reads, or when `entry`
/// gives up by returning `None` (the caller then discards what it was given). The values of
/// other keys are checked and skipped.
pub(crate) fn scan<'a>(
    line: &'a str,
    keys: &Keys,
    mut entry: impl FnMut(usize, &'a str) -> Option<()>,
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
        i = scalar_end(b, i)?;
        if let Some(key) = key {
            guess = key + 1;
            entry(key, line.get(start..i)?)?;
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

/// The end (exclusive) of the string, number or literal starting at `i`; `None` for objects,
/// arrays and anything that is not valid JSON there.
fn scalar_end(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string_end(b, i).map(|end| end + 1),
        b'-' | b'0'..=b'9' => number_end(b, i),
        b't' => literal_end(b, i, b"true"),
        b'f' => literal_end(b, i, b"false"),
        b'n' => literal_end(b, i, b"null"),
        _ => None,
    }
}

fn literal_end(b: &[u8], i: usize, literal: &[u8]) -> Option<usize> {
    b.get(i..)?
        .starts_with(literal)
        .then_some(i + literal.len())
}

/// The end of a JSON number: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn number_end(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |b: &[u8], mut i: usize| {
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        (i > start).then_some(i)
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    i = match *b.get(i)? {
        b'0' => i + 1,
        b'1'..=b'9' => digits(b, i)?,
        _ => return None,
    };
    if b.get(i) == Some(&b'.') {
        i = digits(b, i + 1)?;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        i = digits(b, i)?;
    }
    Some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys the tests' lines use; a key with a quote is looked for by scanning it.
    const KEYS: [&str; 8] = ["a", "b", "c", "d", "e", "f", "é", "q\"x"];

    fn entries(line: &str) -> Option<Vec<(&str, &str)>> {
        let mut out = Vec::new();
        scan(line, &Keys::new(KEYS), |k, v| {
            out.push((KEYS[k], v));
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
