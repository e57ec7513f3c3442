//! Merging parts column by column.
//!
//! A merge rewrites rows that were already written: as a datasource grows, each row is merged
//! again every time its part grows by a merge. Turning every cell into a [`Value`] and back
//! made that the part of storage whose cost grew with the data. Here the parts' record batches
//! are merged as Arrow arrays: only the sorting key's columns and the log position are compared
//! (typed, in place), and every column of the merged part is gathered from the inputs'
//! arrays ([`interleave`]) without a value being built. Parts whose columns are stored
//! differently (a column of mixed kinds, or of a kind one part never saw) are merged row by
//! row instead (see `TableLog::merge_pair`).

use std::cmp::Ordering;

use arrow_array::{
    Array, ArrayRef, BooleanArray, FixedSizeBinaryArray, Float64Array, Int32Array, Int64Array,
    RecordBatch, StringArray, UInt64Array,
};
use arrow_select::interleave::interleave;
use petrel_value::F64;
use petrel_view::Ts;

use super::part::{corrupt, downcast, EncodedPart, Kind, PartReader, PartWriter, ROW_GROUP_ROWS};
use super::StorageError;

/// A merged part and what the manifest says of it (a merge by rows gives the same).
pub(crate) struct Merged {
    pub encoded: EncodedPart,
    pub updates: u64,
    pub net_rows: i64,
    pub min_ts: Ts,
    pub max_ts: Ts,
}

/// The merged updates' count, net rows and time range, as they are written.
struct Totals {
    updates: u64,
    net_rows: i64,
    min_ts: Ts,
    max_ts: Ts,
}

/// One sorting-key column of a record batch, typed once per batch.
enum KeyColumn {
    Bool(BooleanArray),
    Int(Int64Array),
    UInt(UInt64Array),
    Date(Int32Array),
    Float(Float64Array),
    Str(StringArray),
    Uuid(FixedSizeBinaryArray),
}

impl KeyColumn {
    fn of(array: &ArrayRef, kind: Kind) -> Result<Option<KeyColumn>, StorageError> {
        Ok(Some(match kind {
            Kind::Bool => KeyColumn::Bool(downcast::<BooleanArray>(array)?.clone()),
            Kind::Int | Kind::DateTime | Kind::DateTime64(_) => {
                KeyColumn::Int(downcast::<Int64Array>(array)?.clone())
            }
            Kind::UInt => KeyColumn::UInt(downcast::<UInt64Array>(array)?.clone()),
            Kind::Date => KeyColumn::Date(downcast::<Int32Array>(array)?.clone()),
            Kind::Float => KeyColumn::Float(downcast::<Float64Array>(array)?.clone()),
            Kind::Str => KeyColumn::Str(downcast::<StringArray>(array)?.clone()),
            Kind::Uuid => KeyColumn::Uuid(downcast::<FixedSizeBinaryArray>(array)?.clone()),
            Kind::Encoded => return Ok(None),
        }))
    }

    /// Row `i` of this column against row `j` of `other` (the same column of the other
    /// part), as [`petrel_value::Value`] orders them: NULL first, then by value.
    fn cmp(&self, i: usize, other: &KeyColumn, j: usize) -> Ordering {
        fn by<'a, A: Array, T: Ord>(
            a: &'a A,
            i: usize,
            b: &'a A,
            j: usize,
            v: impl Fn(&'a A, usize) -> T,
        ) -> Ordering {
            match (a.is_null(i), b.is_null(j)) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Less,
                (false, true) => Ordering::Greater,
                (false, false) => v(a, i).cmp(&v(b, j)),
            }
        }
        match (self, other) {
            (KeyColumn::Bool(a), KeyColumn::Bool(b)) => by(a, i, b, j, |x, n| x.value(n)),
            (KeyColumn::Int(a), KeyColumn::Int(b)) => by(a, i, b, j, |x, n| x.value(n)),
            (KeyColumn::UInt(a), KeyColumn::UInt(b)) => by(a, i, b, j, |x, n| x.value(n)),
            (KeyColumn::Date(a), KeyColumn::Date(b)) => by(a, i, b, j, |x, n| x.value(n)),
            (KeyColumn::Float(a), KeyColumn::Float(b)) => by(a, i, b, j, |x, n| F64(x.value(n))),
            (KeyColumn::Str(a), KeyColumn::Str(b)) => by(a, i, b, j, |x, n| x.value(n)),
            (KeyColumn::Uuid(a), KeyColumn::Uuid(b)) => by(a, i, b, j, |x, n| x.value(n)),
            // Both parts store the column alike (checked before merging).
            _ => Ordering::Equal,
        }
    }
}

/// One input part: its remaining batches and the batch being read.
struct Side {
    reader: PartReader,
    /// The batch being read: its place among the held batches, its sorting-key columns and
    /// log positions, and the next row.
    current: Option<Current>,
}

struct Current {
    held: usize,
    keys: Vec<KeyColumn>,
    seq: UInt64Array,
    len: usize,
    next: usize,
}

impl Side {
    /// Reads the next non-empty batch, holding it in `held`.
    fn advance(
        &mut self,
        held: &mut Vec<RecordBatch>,
        key_columns: &[(usize, Kind)],
    ) -> Result<(), StorageError> {
        self.current = None;
        while let Some(batch) = self.reader.next_batch()? {
            if batch.num_rows() == 0 {
                continue;
            }
            let mut keys = Vec::with_capacity(key_columns.len());
            for &(c, kind) in key_columns {
                if let Some(key) = KeyColumn::of(batch.column(c), kind)? {
                    keys.push(key);
                }
            }
            let seq = downcast::<UInt64Array>(batch.column(0))?.clone();
            self.current = Some(Current {
                held: held.len(),
                keys,
                seq,
                len: batch.num_rows(),
                next: 0,
            });
            held.push(batch);
            break;
        }
        Ok(())
    }
}

/// Whether the next row of `a` comes after the next row of `b` in the part order (sorting
/// key, then log position).
fn after(a: &Current, b: &Current) -> bool {
    let (i, j) = (a.next, b.next);
    a.keys
        .iter()
        .zip(&b.keys)
        .map(|(x, y)| x.cmp(i, y, j))
        .find(|o| o.is_ne())
        .unwrap_or_else(|| a.seq.value(i).cmp(&b.seq.value(j)))
        .is_gt()
}

/// Whether parts of a datasource with `width` columns can be merged by columns: they all
/// store every column alike, and none as encoded values (which only a merge by rows
/// compares).
pub(crate) fn applies(parts: &[PartReader], width: usize) -> bool {
    let Some(first) = parts.first() else {
        return false;
    };
    let kinds = first.stored_kinds();
    parts.iter().all(|p| p.stored_kinds() == kinds)
        && kinds.len() == width
        && !kinds.contains(&Kind::Encoded)
}

/// The side whose next row comes first in the part order, if any side has rows left.
fn first_side(sides: &[Side]) -> Option<usize> {
    let mut best: Option<(usize, &Current)> = None;
    for (i, side) in sides.iter().enumerate() {
        if let Some(current) = &side.current {
            if best.is_none_or(|(_, b)| after(b, current)) {
                best = Some((i, current));
            }
        }
    }
    best.map(|(i, _)| i)
}

/// Merges `parts` (each in the part order, and [`applies`] to them) into one part with
/// columns `names`, streaming one row group at a time: it holds one record batch per part.
pub(crate) fn merge(
    parts: Vec<PartReader>,
    names: &[String],
    sort_key: &[usize],
) -> Result<Merged, StorageError> {
    let kinds = parts
        .first()
        .map(|p| p.stored_kinds().to_vec())
        .unwrap_or_default();
    let key_columns: Vec<(usize, Kind)> = sort_key
        .iter()
        .filter_map(|&c| kinds.get(c).map(|k| (c + 3, *k)))
        .collect();
    let mut writer = PartWriter::new(names, kinds)?;
    let mut held: Vec<RecordBatch> = Vec::new();
    let mut sides: Vec<Side> = parts
        .into_iter()
        .map(|reader| Side {
            reader,
            current: None,
        })
        .collect();
    for side in &mut sides {
        side.advance(&mut held, &key_columns)?;
    }
    let mut totals = Totals {
        updates: 0,
        net_rows: 0,
        min_ts: Ts::MAX,
        max_ts: 0,
    };
    let mut picks: Vec<(usize, usize)> = Vec::with_capacity(ROW_GROUP_ROWS);
    while let Some(next) = first_side(&sides) {
        let side = &mut sides[next];
        let Some(current) = side.current.as_mut() else {
            break;
        };
        picks.push((current.held, current.next));
        current.next += 1;
        if current.next == current.len {
            side.advance(&mut held, &key_columns)?;
        }
        if picks.len() == ROW_GROUP_ROWS {
            write_picks(&mut writer, &mut held, &mut picks, &mut sides, &mut totals)?;
        }
    }
    write_picks(&mut writer, &mut held, &mut picks, &mut sides, &mut totals)?;
    Ok(Merged {
        encoded: writer.finish()?,
        updates: totals.updates,
        net_rows: totals.net_rows,
        min_ts: if totals.updates == 0 {
            0
        } else {
            totals.min_ts
        },
        max_ts: totals.max_ts,
    })
}

/// Gathers the picked rows of the held batches into one record batch and writes it, then
/// lets go of the batches no side still reads.
fn write_picks(
    writer: &mut PartWriter,
    held: &mut Vec<RecordBatch>,
    picks: &mut Vec<(usize, usize)>,
    sides: &mut [Side],
    totals: &mut Totals,
) -> Result<(), StorageError> {
    if !picks.is_empty() {
        let width = held.first().map_or(0, |b| b.num_columns());
        let mut columns = Vec::with_capacity(width);
        for c in 0..width {
            let arrays: Vec<&dyn Array> = held.iter().map(|b| b.column(c).as_ref()).collect();
            columns.push(interleave(&arrays, picks).map_err(corrupt)?);
        }
        let ts = downcast::<UInt64Array>(&columns[1])?;
        let diff = downcast::<Int64Array>(&columns[2])?;
        totals.updates += picks.len() as u64;
        totals.net_rows += diff.values().iter().sum::<i64>();
        for &t in ts.values().iter() {
            totals.min_ts = totals.min_ts.min(t);
            totals.max_ts = totals.max_ts.max(t);
        }
        writer.write_batch(columns)?;
        picks.clear();
    }
    let mut kept = Vec::with_capacity(sides.len());
    for side in sides.iter_mut() {
        if let Some(current) = side.current.as_mut() {
            kept.push(held[current.held].clone());
            current.held = kept.len() - 1;
        }
    }
    *held = kept;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::part::{self, PartRow};
    use petrel_value::Value;
    use rand::{Rng, SeedableRng};

    fn names() -> Vec<String> {
        ["country", "user_id", "score", "path"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// Random rows of one part, in the part order, their log positions from `first`.
    fn part_rows(rng: &mut rand::rngs::StdRng, n: usize, first: u64) -> Vec<PartRow> {
        let countries = ["DE", "FR", "US", "a much longer country name"];
        let rows: Vec<PartRow> = (0..n)
            .map(|i| {
                let country = match rng.random_range(0..10) {
                    0 => Value::Null,
                    c => Value::str(countries[c % countries.len()]),
                };
                PartRow {
                    seq: first + (i / 7) as u64,
                    ts: 1_000 + rng.random_range(0..5_000),
                    diff: if rng.random_range(0..10) == 0 { -1 } else { 1 },
                    row: vec![
                        country,
                        Value::UInt(rng.random_range(0..50)),
                        Value::Float(F64(rng.random_range(-3..3) as f64 * 0.5)),
                        Value::str(&format!("/p/{}", rng.random_range(0..100))),
                    ],
                }
            })
            .collect();
        let order = part::sort_order(&rows, &[0, 1]);
        order.into_iter().map(|i| rows[i].clone()).collect()
    }

    fn reader(rows: &[PartRow]) -> PartReader {
        let bytes = part::encode(&names(), rows).expect("encodes").bytes;
        PartReader::open(bytes).expect("opens")
    }

    fn read_back(bytes: bytes::Bytes) -> Vec<(u64, Ts, isize, Vec<Value>)> {
        let mut out = Vec::new();
        part::decode_with_seq(bytes, &mut |seq, row, ts, diff| {
            out.push((seq, ts, diff, row))
        })
        .expect("the merged part reads back");
        out
    }

    /// A columnar merge of three parts (one over several row groups, keys with NULLs, ties
    /// and long strings) holds exactly the rows of all in the part order, and the statistics
    /// and figures a merge of the rows themselves would give.
    #[test]
    fn a_columnar_merge_equals_the_ordered_union_of_its_parts() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        let a = part_rows(&mut rng, ROW_GROUP_ROWS + 1_234, 0);
        let b = part_rows(&mut rng, 40_000, 100_000);
        let c = part_rows(&mut rng, 7_000, 200_000);
        let parts = vec![reader(&a), reader(&b), reader(&c)];
        assert!(applies(&parts, names().len()));
        let merged = merge(parts, &names(), &[0, 1]).expect("merges");
        let union: Vec<PartRow> = a.iter().chain(&b).chain(&c).cloned().collect();
        let expected: Vec<PartRow> = part::sort_order(&union, &[0, 1])
            .into_iter()
            .map(|i| union[i].clone())
            .collect();
        let got = read_back(merged.encoded.bytes.clone());
        assert_eq!(got.len(), expected.len());
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!(g, &(e.seq, e.ts, e.diff as isize, e.row.clone()));
        }
        let reference = part::encode(&names(), &expected).expect("encodes");
        assert_eq!(merged.encoded.stats, reference.stats);
        assert_eq!(merged.updates, expected.len() as u64);
        assert_eq!(
            merged.net_rows,
            expected.iter().map(|r| r.diff).sum::<i64>()
        );
        assert_eq!(
            merged.min_ts,
            expected.iter().map(|r| r.ts).min().unwrap_or(0)
        );
        assert_eq!(
            merged.max_ts,
            expected.iter().map(|r| r.ts).max().unwrap_or(0)
        );
        assert_eq!(merged.encoded.row_groups, reference.row_groups);
    }

    /// Parts that store a column differently are left to the row-by-row merge.
    #[test]
    fn parts_that_store_a_column_differently_are_not_merged_by_columns() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let a = part_rows(&mut rng, 100, 0);
        let mut b = part_rows(&mut rng, 100, 1_000);
        b[0].row[1] = Value::Int(-1);
        assert!(!applies(&[reader(&a), reader(&b)], names().len()));
        assert!(applies(&[reader(&a), reader(&a)], names().len()));
    }
}
