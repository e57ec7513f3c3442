//! A log segment's bytes, written directly into one buffer.
//!
//! A segment is bincode's standard encoding (little-endian, variable-length integers) of its
//! batches, and is read back with bincode. Encoding through serde cost a call for each value
//! and a call to `memcpy` for each byte written; on the top-k benchmark that was 7% of
//! the process's samples, on the thread answering a `wait=true` write. This module writes the
//! same bytes itself for the values rows are made of (nested values, rare in a log, still go
//! through bincode), so a segment written here reads back exactly as before.

use std::sync::Arc;

use petrel_value::{Row, Value};

use super::table::Record;
use super::StorageError;

/// bincode's marker before a 2-byte integer (values up to 250 are one byte).
const U16_MARK: u8 = 251;
/// bincode's marker before a 4-byte integer.
const U32_MARK: u8 = 252;
/// bincode's marker before an 8-byte integer.
const U64_MARK: u8 = 253;
/// bincode's marker before a 16-byte integer.
const U128_MARK: u8 = 254;

/// Appends bincode's encoding of a segment: its batches, as a sequence.
pub(super) fn encode_segment(
    out: &mut Vec<u8>,
    records: &[Arc<Record>],
) -> Result<(), StorageError> {
    length(out, records.len());
    for r in records {
        encode_batch(out, r.ts, &r.updates, r.meta.as_deref())?;
    }
    Ok(())
}

/// Appends bincode's encoding of a batch ([`Record`]): its timestamp, its updates (each a
/// row and a difference) and its metadata.
fn encode_batch(
    out: &mut Vec<u8>,
    ts: u64,
    updates: &[(Row, isize)],
    meta: Option<&[u8]>,
) -> Result<(), StorageError> {
    unsigned(out, ts);
    length(out, updates.len());
    for (row, diff) in updates {
        length(out, row.len());
        for v in row {
            value(out, v)?;
        }
        signed(out, *diff as i64);
    }
    match meta {
        None => out.push(0),
        Some(bytes) => {
            out.push(1);
            length(out, bytes.len());
            out.extend_from_slice(bytes);
        }
    }
    Ok(())
}

/// Appends a sequence's length, as bincode writes a `usize`.
fn length(out: &mut Vec<u8>, n: usize) {
    unsigned(out, n as u64);
}

/// Appends one value: its variant's index (the order `Value` declares them in), then its
/// fields.
fn value(out: &mut Vec<u8>, v: &Value) -> Result<(), StorageError> {
    match v {
        Value::Null => out.push(0),
        Value::Bool(b) => out.extend_from_slice(&[1, u8::from(*b)]),
        Value::Int(i) => {
            out.push(2);
            signed(out, *i);
        }
        Value::UInt(u) => {
            out.push(3);
            unsigned(out, *u);
        }
        Value::Float(f) => {
            out.push(4);
            out.extend_from_slice(&f.0.to_le_bytes());
        }
        Value::String(s) => {
            out.push(5);
            length(out, s.len());
            out.extend_from_slice(s.as_bytes());
        }
        Value::Uuid(u) => {
            out.push(6);
            unsigned_128(out, u.get());
        }
        Value::Date(d) => {
            out.push(7);
            signed(out, i64::from(*d));
        }
        Value::DateTime(s) => {
            out.push(8);
            signed(out, *s);
        }
        Value::DateTime64(ticks, precision) => {
            out.push(9);
            signed(out, *ticks);
            out.push(*precision);
        }
        Value::Array(_) | Value::Tuple(_) | Value::Map(_) => {
            bincode::serde::encode_into_std_write(v, out, bincode::config::standard())
                .map_err(|e| StorageError::Corrupt(format!("cannot encode a value: {e}")))?;
        }
    }
    Ok(())
}

/// bincode's variable-length unsigned integer.
fn unsigned(out: &mut Vec<u8>, n: u64) {
    if n <= 250 {
        out.push(n as u8);
    } else if n <= u64::from(u16::MAX) {
        out.push(U16_MARK);
        out.extend_from_slice(&(n as u16).to_le_bytes());
    } else if n <= u64::from(u32::MAX) {
        out.push(U32_MARK);
        out.extend_from_slice(&(n as u32).to_le_bytes());
    } else {
        out.push(U64_MARK);
        out.extend_from_slice(&n.to_le_bytes());
    }
}

/// bincode's variable-length unsigned 128-bit integer.
fn unsigned_128(out: &mut Vec<u8>, n: u128) {
    match u64::try_from(n) {
        Ok(small) => unsigned(out, small),
        Err(_) => {
            out.push(U128_MARK);
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
}

/// bincode's variable-length signed integer: zigzag, then as unsigned. An `i32` encodes as
/// its value widened to `i64` does, since zigzag keeps small magnitudes small.
fn signed(out: &mut Vec<u8>, n: i64) {
    unsigned(out, ((n << 1) ^ (n >> 63)) as u64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random_value(rng: &mut rand::rngs::StdRng, depth: u32) -> Value {
        let int = |rng: &mut rand::rngs::StdRng| -> i64 {
            // Each width bincode distinguishes, and both signs.
            let bits = [0u32, 7, 8, 15, 16, 17, 31, 32, 33, 62, 63][rng.random_range(0..11)];
            let magnitude = if bits == 0 {
                0
            } else {
                rng.random_range(0..(1i64 << bits.min(62)))
            };
            if rng.random_bool(0.5) {
                magnitude
            } else {
                -magnitude - i64::from(bits == 63)
            }
        };
        match rng.random_range(0..if depth > 0 { 13 } else { 10 }) {
            0 => Value::Null,
            1 => Value::Bool(rng.random_bool(0.5)),
            2 => Value::Int(match rng.random_range(0..3) {
                0 => i64::MIN,
                1 => i64::MAX,
                _ => int(rng),
            }),
            3 => Value::UInt(match rng.random_range(0..3) {
                0 => u64::MAX,
                _ => int(rng).unsigned_abs(),
            }),
            4 => Value::Float(petrel_value::F64(f64::from_bits(rng.random()))),
            5 => {
                let len = [0usize, 3, 16, 23, 24, 300][rng.random_range(0..6)];
                Value::str(&"é-ab".repeat(len).chars().take(len).collect::<String>())
            }
            6 => Value::Uuid(
                match rng.random_range(0..3) {
                    0 => u128::MAX,
                    1 => u128::from(rng.random::<u64>()),
                    _ => rng.random::<u128>(),
                }
                .into(),
            ),
            7 => Value::Date(match rng.random_range(0..3) {
                0 => i32::MIN,
                1 => i32::MAX,
                _ => int(rng) as i32,
            }),
            8 => Value::DateTime(int(rng)),
            9 => Value::DateTime64(int(rng), rng.random_range(0..10)),
            10 => Value::Array((0..3).map(|_| random_value(rng, depth - 1)).collect()),
            11 => Value::Tuple((0..2).map(|_| random_value(rng, depth - 1)).collect()),
            _ => Value::Map(
                (0..2)
                    .map(|_| (random_value(rng, depth - 1), random_value(rng, depth - 1)))
                    .collect(),
            ),
        }
    }

    #[test]
    fn a_batch_is_encoded_as_bincode_encodes_it() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(29);
        for case in 0..2_000 {
            let updates: Vec<(Row, isize)> = (0..rng.random_range(0..6))
                .map(|_| {
                    let row = (0..rng.random_range(0..7))
                        .map(|_| random_value(&mut rng, 2))
                        .collect();
                    let diff = [1isize, -1, 300, -70_000, isize::MIN, isize::MAX][case % 6];
                    (row, diff)
                })
                .collect();
            let ts = [0u64, 250, 251, 65_535, 65_536, u64::MAX][case % 6] ^ (case as u64 & 1);
            let meta = match case % 3 {
                0 => None,
                1 => Some(Vec::new()),
                _ => Some((0..300).map(|i| i as u8).collect()),
            };
            let record = Record {
                ts,
                updates: Arc::new(updates),
                meta,
            };
            let expected =
                bincode::serde::encode_to_vec(&record, bincode::config::standard()).unwrap();
            let mut out = Vec::new();
            encode_batch(&mut out, ts, &record.updates, record.meta.as_deref()).unwrap();
            assert_eq!(out, expected, "case {case}: {record:?}");
        }
    }
}
