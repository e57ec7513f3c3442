//! Ingestion: bytes from the Events API, Kafka messages and files (CSV, NDJSON, Parquet) to
//! validated rows.
//! Rows that do not fit their datasource's schema go to its quarantine table.

mod cells;
mod flat_json;
mod ndjson;
pub mod parquet;

pub use cells::{typed_row, Cell};
pub use ndjson::{ColumnError, Rejected, RowDecoder};

use petrel_value::{Row, Value};
use rayon::prelude::*;

/// An NDJSON body decoded: the rows that fit, and the quarantine rows of those that did not,
/// each in the body's order.
pub struct DecodedBody {
    /// Rows of the datasource.
    pub good: Vec<(Row, isize)>,
    /// Rows of its quarantine table.
    pub bad: Vec<(Row, isize)>,
}

/// Bodies at least this large are decoded on every core, in line-aligned slices.
const PARALLEL_BODY_BYTES: usize = 1 << 20;

/// How many slices a large body is decoded in, per core.
const SLICES_PER_CORE: usize = 4;

/// Decodes an NDJSON body: blank lines are skipped, lines that do not fit become quarantine
/// rows. A large body is split at line ends and its slices decoded on all cores at once (a
/// writer waiting for its rows pays the decode once per core, not once per body).
pub fn decode_ndjson_body(
    decoder: &RowDecoder,
    body: &[u8],
    now_secs: i64,
    import_id: &str,
) -> DecodedBody {
    decode_ndjson_chunks(decoder, &[body], now_secs, import_id)
}

/// [`decode_ndjson_body`] of the body made of `chunks` (as a request's body arrives), read
/// where they lie: only a line cut by a chunk's end is copied, so a large body is never
/// copied whole into one buffer.
pub fn decode_ndjson_chunks<B: AsRef<[u8]>>(
    decoder: &RowDecoder,
    chunks: &[B],
    now_secs: i64,
    import_id: &str,
) -> DecodedBody {
    // Asked once: the answer reads cgroup files.
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cores = *CORES.get_or_init(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let pieces = whole_lines(chunks);
    let pieces: Vec<&[u8]> = pieces.iter().map(|p| p.as_ref()).collect();
    let total: usize = pieces.iter().map(|p| p.len()).sum();
    // A few slices per core, each taken by the next free helper: two halves of a body left
    // one core decoding alone whenever one half ran slower or its helper started late.
    let slices = if total >= PARALLEL_BODY_BYTES {
        cores * SLICES_PER_CORE
    } else {
        1
    };
    let parts = split_at_line_ends(&pieces, total, slices);
    let decode = |part: &[&[u8]]| {
        let mut out = DecodedBody {
            good: Vec::with_capacity(part.iter().map(|p| p.len()).sum::<usize>() / 64),
            bad: Vec::new(),
        };
        for slice in part {
            decode_lines(decoder, slice, now_secs, import_id, &mut out);
        }
        out
    };
    if parts.len() <= 1 {
        return decode(parts.first().map_or(&[], Vec::as_slice));
    }
    // The slices are decoded by the process's helper pool (rayon's threads, which live as
    // long as the process): a helper woken for a slice goes to a free core, where a thread
    // started for the body was queued behind the one starting it while the compactor held
    // the other core. A panic in a slice (a decode never panics on input: errors become
    // quarantine rows) is raised here rather than its rows dropped.
    let decoded = parts
        .par_iter()
        .with_max_len(1)
        .map(|part| decode(part))
        .collect::<Vec<_>>();
    let mut out = DecodedBody {
        good: Vec::with_capacity(decoded.iter().map(|d| d.good.len()).sum()),
        bad: Vec::new(),
    };
    for part in decoded {
        out.good.extend(part.good);
        out.bad.extend(part.bad);
    }
    out
}

/// `chunks` as pieces of whole lines, in order: each chunk's lines where they lie, and each
/// line cut by a chunk's end copied whole into a piece of its own. Every piece but the last
/// ends with a line end.
fn whole_lines<B: AsRef<[u8]>>(chunks: &[B]) -> Vec<std::borrow::Cow<'_, [u8]>> {
    use std::borrow::Cow;
    let mut pieces = Vec::new();
    let mut cut: Vec<u8> = Vec::new();
    for chunk in chunks {
        let mut rest = chunk.as_ref();
        if !cut.is_empty() {
            let Some(end) = memchr::memchr(b'\n', rest) else {
                cut.extend_from_slice(rest);
                continue;
            };
            cut.extend_from_slice(&rest[..=end]);
            pieces.push(Cow::Owned(std::mem::take(&mut cut)));
            rest = &rest[end + 1..];
        }
        let whole = memchr::memrchr(b'\n', rest).map_or(0, |end| end + 1);
        if whole > 0 {
            pieces.push(Cow::Borrowed(&rest[..whole]));
        }
        cut.extend_from_slice(&rest[whole..]);
    }
    if !cut.is_empty() {
        pieces.push(Cow::Owned(cut));
    }
    pieces
}

/// `pieces` (of whole lines, `total` bytes in all) split into up to `slices` parts of about
/// equal bytes, each cut just past a line end; a part is the pieces, or pieces' ends, it
/// holds, in order.
fn split_at_line_ends<'a>(pieces: &[&'a [u8]], total: usize, slices: usize) -> Vec<Vec<&'a [u8]>> {
    let (mut parts, mut part) = (Vec::new(), Vec::new());
    // Bytes of the body before `rest`.
    let mut at = 0;
    let mut next_cut = 1;
    for &piece in pieces {
        let mut rest = piece;
        while next_cut < slices && total * next_cut / slices < at + rest.len() {
            let target = (total * next_cut / slices).saturating_sub(at);
            // Just past the next line end at or after the target byte.
            let cut = match memchr::memchr(b'\n', &rest[target..]) {
                Some(end) => target + end + 1,
                None => rest.len(),
            };
            part.push(&rest[..cut]);
            parts.push(std::mem::take(&mut part));
            rest = &rest[cut..];
            at += cut;
            next_cut += 1;
        }
        if !rest.is_empty() {
            part.push(rest);
        }
        at += rest.len();
    }
    parts.push(part);
    parts.retain(|part| part.iter().any(|p| !p.is_empty()));
    parts
}

/// Decodes the lines of `slice` (whole lines) into `out`.
fn decode_lines(
    decoder: &RowDecoder,
    slice: &[u8],
    now_secs: i64,
    import_id: &str,
    out: &mut DecodedBody,
) {
    // A slice that is UTF-8 throughout (the usual body) is checked once, not line by line;
    // a line end is ASCII, so each line is a `str` of it.
    let text = std::str::from_utf8(slice).ok();
    // Line ends found a word at a time, not byte by byte.
    let mut start = 0;
    let ends = memchr::memchr_iter(b'\n', slice).chain(std::iter::once(slice.len()));
    for end in ends {
        let line = &slice[start..end];
        let line_text = text.and_then(|t| t.get(start..end));
        start = end + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let decoded = match line_text {
            Some(t) => decoder.decode(t.strip_suffix('\r').unwrap_or(t), now_secs),
            None => decoder.decode_bytes(line, now_secs),
        };
        match decoded {
            Ok(row) => out.good.push((row, 1)),
            Err(rejected) => out
                .bad
                .push((quarantine_row(&rejected, import_id, now_secs), 1)),
        }
    }
}

/// The quarantine row for a rejected line.
pub fn quarantine_row(rejected: &Rejected, import_id: &str, now_secs: i64) -> Row {
    let mut row = vec![
        Value::Array(
            rejected
                .errors
                .iter()
                .map(|e| Value::from(e.column.as_str()))
                .collect(),
        ),
        Value::Array(
            rejected
                .errors
                .iter()
                .map(|e| Value::from(e.message.as_str()))
                .collect(),
        ),
        Value::from(import_id),
        Value::DateTime(now_secs),
    ];
    row.extend(rejected.raw.iter().map(|r| match r {
        Some(text) => Value::from(text.as_str()),
        None => Value::Null,
    }));
    row
}

#[cfg(test)]
mod body_tests {
    use super::*;
    use crate::project::ColumnSpec;
    use petrel_value::{Column, ColumnType};

    fn decoder() -> RowDecoder {
        RowDecoder::new(&[ColumnSpec {
            column: Column {
                name: "n".into(),
                ty: ColumnType::UInt(32),
            },
            json_path: Some("$.n".into()),
            default: None,
        }])
    }

    /// A body large enough to be decoded in slices gives the rows, in order, and the
    /// quarantine rows that decoding it line by line gives, whatever falls on a cut.
    #[test]
    fn sliced_decoding_keeps_every_line_in_order() {
        let mut body = Vec::new();
        let mut expected = Vec::new();
        let mut bad_lines = 0;
        let mut i = 0u32;
        while body.len() < 3 * PARALLEL_BODY_BYTES {
            if i.is_multiple_of(997) {
                body.extend_from_slice(b"{\"n\": \"not a number\"}\r\n\n");
                bad_lines += 1;
            } else {
                body.extend_from_slice(format!("{{\"n\": {i}}}\n").as_bytes());
                expected.push(vec![Value::UInt(i as u64)]);
            }
            i += 1;
        }
        body.extend_from_slice(b"{\"n\": 7}"); // the last line has no line end
        expected.push(vec![Value::UInt(7)]);
        let decoded = decode_ndjson_body(&decoder(), &body, 0, "import");
        let rows: Vec<Row> = decoded.good.into_iter().map(|(r, _)| r).collect();
        assert_eq!(rows, expected);
        assert_eq!(decoded.bad.len(), bad_lines);
        let small = decode_ndjson_body(&decoder(), b"{\"n\": 1}\n{\"n\": -1}\n", 0, "import");
        assert_eq!(small.good.len(), 1);
        assert_eq!(small.bad.len(), 1);
    }

    /// A body that arrives in chunks (as a request's does: any size, cutting lines, line
    /// ends between `\r` and `\n`, and characters of several bytes) decodes to the rows and
    /// quarantine rows, in order, of the same body in one buffer, small or sliced over cores.
    #[test]
    fn a_body_in_chunks_decodes_as_the_whole_body() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xc4u64);
        for size in [200, 3 * PARALLEL_BODY_BYTES] {
            let mut body = Vec::new();
            let mut i = 0u32;
            while body.len() < size {
                let line = match i % 101 {
                    0 => "{\"n\": \"not a number\", \"x\": \"é€\"}\r\n".to_string(),
                    50 => "\n  \n".to_string(),
                    _ => format!("{{\"x\": \"ü{i}\", \"n\": {i}}}\r\n"),
                };
                body.extend_from_slice(line.as_bytes());
                i += 1;
            }
            body.extend_from_slice("{\"n\": 7, \"x\": \"€\"}".as_bytes());
            let whole = decode_ndjson_body(&decoder(), &body, 0, "import");
            type Decoded = (Vec<(Row, isize)>, Vec<(Row, isize)>);
            let rows = |d: DecodedBody| -> Decoded { (d.good, d.bad) };
            let whole = rows(whole);
            assert!(whole.0.len() > 1 && !whole.1.is_empty(), "{size}");
            for most in [1, 7, 300, 70_000, PARALLEL_BODY_BYTES] {
                let mut chunks: Vec<&[u8]> = Vec::new();
                let mut rest = &body[..];
                while !rest.is_empty() {
                    let n = rng.random_range(1..=most).min(rest.len());
                    chunks.push(&rest[..n]);
                    rest = &rest[n..];
                }
                let chunked = decode_ndjson_chunks(&decoder(), &chunks, 0, "import");
                assert_eq!(
                    rows(chunked),
                    whole,
                    "{size} bytes in chunks of up to {most}"
                );
            }
        }
    }

    /// A line that is not UTF-8 is rejected on its own, in a body of any size: the lines
    /// around it (in the same slice) still land, and a character of several bytes is read
    /// whole.
    #[test]
    fn a_line_that_is_not_utf8_is_rejected_alone() {
        for lines in [3u32, 150_000] {
            let mut body = Vec::new();
            for i in 0..lines {
                if i == lines / 2 {
                    body.extend_from_slice(b"{\"n\": 1, \"x\": \"\xff\"}\n");
                } else {
                    body.extend_from_slice(format!("{{\"n\": {i}, \"x\": \"é\"}}\n").as_bytes());
                }
            }
            let decoded = decode_ndjson_body(&decoder(), &body, 0, "import");
            assert_eq!(decoded.good.len(), lines as usize - 1, "{lines} lines");
            assert_eq!(decoded.bad.len(), 1, "{lines} lines");
            let expected: Vec<Row> = (0..lines)
                .filter(|&i| i != lines / 2)
                .map(|i| vec![Value::UInt(i as u64)])
                .collect();
            let rows: Vec<Row> = decoded.good.into_iter().map(|(r, _)| r).collect();
            assert_eq!(rows, expected);
        }
    }
}
