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
    /// For a key without quote, backslash or control character (so the JSON string of its
    /// bytes between two quotes is the key itself), its bytes and closing quote as they
    /// lie in a line: a line's key is checked against the key expected there by comparing
    /// those bytes, without scanning it first. `None` for another key.
    plain: Vec<Option<Quoted>>,
}

/// A key's bytes followed by its closing quote, and the machine words a line's bytes are
/// compared with: a key of up to 16 bytes with its quote (most keys) is checked with one or
/// two 8-byte comparisons instead of a byte at a time.
struct Quoted {
    bytes: Box<[u8]>,
    /// The first 8 bytes (zeros past the end of a shorter key).
    first: u64,
    /// The last 8 bytes, for keys of 9 to 16 bytes.
    last: u64,
    /// The bits of `first` a shorter key's bytes take.
    mask: u64,
}

impl Quoted {
    fn new(name: &str) -> Quoted {
        let mut bytes = name.as_bytes().to_vec();
        bytes.push(b'"');
        let n = bytes.len();
        let mut first = [0u8; 8];
        let head = n.min(8);
        first[..head].copy_from_slice(&bytes[..head]);
        let last = match n.checked_sub(8) {
            Some(from) => word(&bytes[from..]).unwrap_or(0),
            None => 0,
        };
        Quoted {
            first: u64::from_le_bytes(first),
            last,
            mask: u64::MAX >> (8 * (8 - head)),
            bytes: bytes.into(),
        }
    }

    /// Whether `at` starts with the key's bytes and closing quote.
    #[inline(always)]
    fn starts(&self, at: &[u8]) -> bool {
        let n = self.bytes.len();
        match (n, word(at)) {
            (..=8, Some(w)) => w & self.mask == self.first,
            (9..=16, Some(w)) => {
                w == self.first && at.get(n - 8..n).and_then(word) == Some(self.last)
            }
            _ => at.get(..n) == Some(&self.bytes[..]),
        }
    }
}

/// The little-endian word of `b`'s first 8 bytes; `None` when it is shorter.
#[inline(always)]
fn word(b: &[u8]) -> Option<u64> {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(b.get(..8)?);
    Some(u64::from_le_bytes(bytes))
}

impl Keys {
    /// The keys `names`, by their index in it.
    pub(crate) fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Keys {
        let names: Vec<Box<str>> = names.into_iter().map(Box::from).collect();
        let plain = names
            .iter()
            .map(|k| (!k.bytes().any(|b| STOPS_STRING[b as usize])).then(|| Quoted::new(k)))
            .collect();
        Keys { names, plain }
    }

    /// The index of the key whose string opens at `i` (or `None` for a key not looked for),
    /// and the position past its closing quote. Events mostly list their keys in one order:
    /// `guess`, the key after the one found last, is tried first. Inlined: it runs for every
    /// key of every line, and its call cost as much as its work.
    #[inline(always)]
    fn find(&self, b: &[u8], i: usize, guess: usize) -> Option<(Option<usize>, usize)> {
        if let Some(Some(quoted)) = self.plain.get(guess) {
            if b.get(i + 1..).is_some_and(|at| quoted.starts(at)) {
                return Some((Some(guess), i + 1 + quoted.bytes.len()));
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
/// string has an escape or a control character (or does not close). Eight bytes are checked
/// at once, in a general-purpose register (no vector set-up, which short event strings would
/// not repay); the last few bytes of the line one at a time.
#[inline(always)]
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while let Some(w) = b.get(i..).and_then(word) {
        let stops = stop_bytes(w);
        if stops != 0 {
            i += (stops.trailing_zeros() / 8) as usize;
            break;
        }
        i += 8;
    }
    closing_quote_from(b, i)
}

/// The first quote, backslash or control character at or after `i`, a byte at a time: its
/// position when it is a quote (the string's end), `None` otherwise.
#[inline(always)]
fn closing_quote_from(b: &[u8], mut i: usize) -> Option<usize> {
    while !STOPS_STRING[*b.get(i)? as usize] {
        i += 1;
    }
    (b[i] == b'"').then_some(i)
}

/// The high bit of each byte of `word` (in memory order, least significant first) that is a
/// quote, a backslash or a control character ([`STOPS_STRING`]). A byte's borrow may set bits
/// in the bytes after the first such byte, never before it, so the lowest bit set is exact.
#[inline(always)]
fn stop_bytes(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let quote = zero(word ^ (ONES * u64::from(b'"')));
    let backslash = zero(word ^ (ONES * u64::from(b'\\')));
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    quote | backslash | control
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
            let start = i;
            let mut m = 0u64;
            while let Some(&d) = b.get(i).filter(|d| d.is_ascii_digit()) {
                m = m.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
                i += 1;
            }
            // Up to 19 digits always fit in a `u64`; a longer run is read again, checked.
            magnitude = match b.get(start..i) {
                Some(run) if run.len() > 19 => run.iter().try_fold(0u64, |m, &d| {
                    m.checked_mul(10)?.checked_add(u64::from(d - b'0'))
                }),
                _ => Some(m),
            };
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

    /// A line's key is the key expected there only when its bytes and closing quote are the
    /// key's: for keys of every length around the 8 and 16 bytes compared as words, against
    /// keys that are one byte longer or shorter, differ in their last byte, or end the line.
    #[test]
    fn tells_expected_keys_from_their_neighbours() {
        for len in 1..20 {
            let key: String = (0..len).map(|n| (b'a' + n as u8) as char).collect();
            let keys = Keys::new([key.as_str()]);
            let mut other = key.clone().into_bytes();
            *other.last_mut().unwrap() = b'Z';
            let other = String::from_utf8(other).unwrap();
            let found = |line: &str| {
                let mut out = Vec::new();
                scan(line, &keys, |k, v| {
                    out.push((k, v.raw.to_string()));
                    Some(())
                })
                .map(|()| out)
            };
            let one = Some(vec![(0, "1".to_string())]);
            assert_eq!(found(&format!(r#"{{"{key}":1}}"#)), one, "{key}");
            assert_eq!(found(&format!(r#"{{"{key}": 1 , "x":2}}"#)), one, "{key}");
            assert_eq!(found(&format!(r#"{{"{key}x":1}}"#)), Some(vec![]), "{key}x");
            assert_eq!(
                found(&format!(r#"{{"{other}":1}}"#)),
                Some(vec![]),
                "{other}"
            );
            let shorter = &key[..len - 1];
            assert_eq!(
                found(&format!(r#"{{"{shorter}":1}}"#)),
                Some(vec![]),
                "{shorter}"
            );
            // A key cut by the line's end: the scanner gives up on the line.
            assert_eq!(found(&format!(r#"{{"{key}"#)), None, "{key} cut");
            assert_eq!(found(&format!(r#"{{"{shorter}"#)), None, "{shorter} cut");
        }
    }

    /// The end of a string is found eight bytes at a time as byte by byte: at every position
    /// of a long string, for a closing quote, an escape, a control character, and bytes that
    /// come close to them (multi-byte UTF-8, `#`, `]`, DEL, space).
    #[test]
    fn finds_the_end_of_strings_of_every_length() {
        let byte_by_byte = |b: &[u8], start: usize| closing_quote_from(b, start + 1);
        let fillers: [&[u8]; 3] = [b"a", "é".as_bytes(), b"#] \x7f!"];
        for filler in fillers {
            for len in 0..40 {
                let body: Vec<u8> = filler.iter().copied().cycle().take(len).collect();
                for stop in [b'"', b'\\', b'\n', 0x1f, 0x00] {
                    for at in 0..=len {
                        let mut line = vec![b'"'];
                        line.extend_from_slice(&body[..at]);
                        line.push(stop);
                        line.extend_from_slice(&body[at..]);
                        line.extend_from_slice(b"\"x");
                        assert_eq!(
                            string_end(&line, 0),
                            byte_by_byte(&line, 0),
                            "{:?}",
                            String::from_utf8_lossy(&line)
                        );
                    }
                }
                let mut open = vec![b'"'];
                open.extend_from_slice(&body);
                assert_eq!(string_end(&open, 0), None, "a string that does not close");
            }
        }
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
