//! Columnar parts: a run of a datasource's log as one Parquet file.
//!
//! Besides the datasource's own columns, a part stores each update's place in the log
//! (`_seq`, the batch it came in), the timestamp it landed at (`_ts`) and its multiplicity
//! (`_diff`), so a replay can stop at any log position and give every update its own time.
//! Scalar columns get their natural Parquet type (with Parquet's min/max statistics per row
//! group); a column holding arrays, tuples, maps or mixed kinds is stored as the bincode of
//! each value. The field metadata key `petrel` says how to read a column back.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, FixedSizeBinaryBuilder, Float64Builder, Int32Builder,
    Int64Builder, StringBuilder, UInt64Builder,
};
use arrow_array::{
    new_null_array, Array, ArrayRef, BinaryArray, BooleanArray, FixedSizeBinaryArray, Float64Array,
    Int32Array, Int64Array, RecordBatch, StringArray, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::statistics::{Statistics, ValueStatistics};
use parquet::schema::types::ColumnPath;
use petrel_value::{Row, Value, F64, U128};
use petrel_view::Ts;

use super::StorageError;

/// The most rows per Parquet row group (row groups are the unit workers split a replay by; a
/// merged part copies its parts' row groups, the last of each part's possibly smaller).
pub(crate) const ROW_GROUP_ROWS: usize = 65_536;

/// One update as a part holds it: log position, timestamp, multiplicity, row.
#[derive(Clone)]
pub(crate) struct PartRow {
    pub seq: u64,
    pub ts: Ts,
    pub diff: i64,
    pub row: Row,
}

/// The smallest and largest value of one column in a part.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ColumnStats {
    /// The column.
    pub name: String,
    /// Smallest non-null value (None when the column is all NULL).
    pub min: Option<Value>,
    /// Largest non-null value.
    pub max: Option<Value>,
}

impl ColumnStats {
    /// Widens the column's extremes to take in values from `least` to `greatest` (a batch's,
    /// or another part's when parts are merged).
    pub(crate) fn include(&mut self, least: Value, greatest: Value) {
        if self.min.as_ref().is_none_or(|m| least < *m) {
            self.min = Some(least);
        }
        if self.max.as_ref().is_none_or(|m| greatest > *m) {
            self.max = Some(greatest);
        }
    }
}

/// What writing a part produced, for the manifest.
pub(crate) struct EncodedPart {
    pub bytes: Bytes,
    pub row_groups: usize,
    pub stats: Vec<ColumnStats>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Kind {
    Bool,
    Int,
    UInt,
    Float,
    Str,
    Uuid,
    Date,
    DateTime,
    DateTime64(u8),
    /// Any value, as bincode.
    Encoded,
}

impl Kind {
    fn of(v: &Value) -> Kind {
        match v {
            Value::Bool(_) => Kind::Bool,
            Value::Int(_) => Kind::Int,
            Value::UInt(_) => Kind::UInt,
            Value::Float(_) => Kind::Float,
            Value::String(_) => Kind::Str,
            Value::Uuid(_) => Kind::Uuid,
            Value::Date(_) => Kind::Date,
            Value::DateTime(_) => Kind::DateTime,
            Value::DateTime64(_, p) => Kind::DateTime64(*p),
            Value::Null | Value::Array(_) | Value::Tuple(_) | Value::Map(_) => Kind::Encoded,
        }
    }

    fn tag(self) -> String {
        match self {
            Kind::Bool => "bool".into(),
            Kind::Int => "int".into(),
            Kind::UInt => "uint".into(),
            Kind::Float => "float".into(),
            Kind::Str => "string".into(),
            Kind::Uuid => "uuid".into(),
            Kind::Date => "date".into(),
            Kind::DateTime => "datetime".into(),
            Kind::DateTime64(p) => format!("datetime64:{p}"),
            Kind::Encoded => "value".into(),
        }
    }

    fn from_tag(tag: &str) -> Option<Kind> {
        Some(match tag {
            "bool" => Kind::Bool,
            "int" => Kind::Int,
            "uint" => Kind::UInt,
            "float" => Kind::Float,
            "string" => Kind::Str,
            "uuid" => Kind::Uuid,
            "date" => Kind::Date,
            "datetime" => Kind::DateTime,
            "value" => Kind::Encoded,
            other => Kind::DateTime64(other.strip_prefix("datetime64:")?.parse().ok()?),
        })
    }

    /// Whether a column of this kind has its extremes read value by value: bincode's bytes
    /// do not sort as their values do. Every other kind's are the Parquet writer's
    /// statistics ([`chunk_extremes`]).
    fn read_by_value(self) -> bool {
        matches!(self, Kind::Encoded)
    }

    /// Stored as a Parquet integer (what a delta encoding applies to).
    fn is_integer(self) -> bool {
        matches!(
            self,
            Kind::Int | Kind::UInt | Kind::Date | Kind::DateTime | Kind::DateTime64(_)
        )
    }

    fn data_type(self) -> DataType {
        match self {
            Kind::Bool => DataType::Boolean,
            Kind::Int | Kind::DateTime | Kind::DateTime64(_) => DataType::Int64,
            Kind::UInt => DataType::UInt64,
            Kind::Float => DataType::Float64,
            Kind::Str => DataType::Utf8,
            Kind::Uuid => DataType::FixedSizeBinary(16),
            Kind::Date => DataType::Int32,
            Kind::Encoded => DataType::Binary,
        }
    }
}

/// How each of the first `columns` columns of `rows` is stored: the kind of its non-NULL
/// values, bincode where they are of several kinds, a string column where all are NULL. One
/// pass over the rows, reading each row's values where they lie.
fn column_kinds(rows: &[PartRow], columns: usize) -> Vec<Kind> {
    // None: only NULLs so far; Some(None): several kinds.
    let mut kinds: Vec<Option<Option<Kind>>> = vec![None; columns];
    for r in rows {
        for (found, v) in kinds.iter_mut().zip(&r.row) {
            if v.is_null() || *found == Some(None) {
                continue;
            }
            let k = Kind::of(v);
            match found {
                None => *found = Some(Some(k)),
                Some(Some(prev)) if *prev != k => *found = Some(None),
                Some(_) => {}
            }
        }
    }
    kinds
        .into_iter()
        .map(|k| match k {
            None => Kind::Str,
            Some(None) => Kind::Encoded,
            Some(Some(k)) => k,
        })
        .collect()
}

fn encode_value(v: &Value) -> Result<Vec<u8>, StorageError> {
    bincode::serde::encode_to_vec(v, bincode::config::standard())
        .map_err(|e| StorageError::Corrupt(format!("cannot encode a value: {e}")))
}

/// The smallest and largest non-NULL value of a column chunk, from the statistics the
/// Parquet writer computed as it encoded the chunk (exact: parts are written without
/// truncating them); `None` for bincode columns, whose bytes do not sort as their values
/// do, and for a chunk of NULLs. Parquet orders each kind as [`Value`] does: integers signed
/// or unsigned as their logical type says, floats by their total order, strings and UUIDs'
/// big-endian bytes bytewise.
fn chunk_extremes(stats: &Statistics, kind: Kind) -> Option<(Value, Value)> {
    fn pair<T>(
        s: &ValueStatistics<T>,
        wrap: impl Fn(&T) -> Option<Value>,
    ) -> Option<(Value, Value)> {
        Some((wrap(s.min_opt()?)?, wrap(s.max_opt()?)?))
    }
    match (stats, kind) {
        (Statistics::Int64(s), Kind::Int) => pair(s, |v| Some(Value::Int(*v))),
        (Statistics::Int64(s), Kind::UInt) => pair(s, |v| Some(Value::UInt(*v as u64))),
        (Statistics::Int64(s), Kind::DateTime) => pair(s, |v| Some(Value::DateTime(*v))),
        (Statistics::Int64(s), Kind::DateTime64(p)) => pair(s, |v| Some(Value::DateTime64(*v, p))),
        (Statistics::Int32(s), Kind::Date) => pair(s, |v| Some(Value::Date(*v))),
        (Statistics::Double(s), Kind::Float) => pair(s, |v| Some(Value::Float(F64(*v)))),
        (Statistics::Boolean(s), Kind::Bool) => pair(s, |v| Some(Value::Bool(*v))),
        (Statistics::ByteArray(s), Kind::Str) => pair(s, |v| v.as_utf8().ok().map(Value::str)),
        (Statistics::FixedLenByteArray(s), Kind::Uuid) => {
            pair(s, |v| Some(Value::Uuid(uuid_of(v.data()))))
        }
        _ => None,
    }
}

/// One column of a part being built, as the Arrow builder of its kind. A value of another
/// kind than the column's (only NULL, once the kinds are known) is stored as NULL.
enum Cells {
    Bool(BooleanBuilder),
    Int(Int64Builder),
    UInt(UInt64Builder),
    Float(Float64Builder),
    Str(StringBuilder),
    Uuid(FixedSizeBinaryBuilder),
    Date(Int32Builder),
    DateTime(Int64Builder),
    DateTime64(Int64Builder),
    Encoded(BinaryBuilder),
}

impl Cells {
    fn new(kind: Kind, rows: usize) -> Cells {
        match kind {
            Kind::Bool => Cells::Bool(BooleanBuilder::with_capacity(rows)),
            Kind::Int => Cells::Int(Int64Builder::with_capacity(rows)),
            Kind::UInt => Cells::UInt(UInt64Builder::with_capacity(rows)),
            Kind::Float => Cells::Float(Float64Builder::with_capacity(rows)),
            Kind::Str => Cells::Str(StringBuilder::with_capacity(rows, rows * 8)),
            Kind::Uuid => Cells::Uuid(FixedSizeBinaryBuilder::with_capacity(rows, 16)),
            Kind::Date => Cells::Date(Int32Builder::with_capacity(rows)),
            Kind::DateTime => Cells::DateTime(Int64Builder::with_capacity(rows)),
            Kind::DateTime64(_) => Cells::DateTime64(Int64Builder::with_capacity(rows)),
            Kind::Encoded => Cells::Encoded(BinaryBuilder::with_capacity(rows, rows * 8)),
        }
    }

    fn push(&mut self, cell: Option<&Value>) -> Result<(), StorageError> {
        match (self, cell) {
            (Cells::Bool(b), Some(Value::Bool(x))) => b.append_value(*x),
            (Cells::Int(b), Some(Value::Int(x))) => b.append_value(*x),
            (Cells::UInt(b), Some(Value::UInt(x))) => b.append_value(*x),
            (Cells::Float(b), Some(Value::Float(x))) => b.append_value(x.0),
            (Cells::Str(b), Some(Value::String(x))) => b.append_value(x.as_str()),
            (Cells::Uuid(b), Some(Value::Uuid(u))) => b
                .append_value(u.get().to_be_bytes())
                .map_err(|e| StorageError::Corrupt(e.to_string()))?,
            (Cells::Date(b), Some(Value::Date(x))) => b.append_value(*x),
            (Cells::DateTime(b), Some(Value::DateTime(x))) => b.append_value(*x),
            (Cells::DateTime64(b), Some(Value::DateTime64(x, _))) => b.append_value(*x),
            (Cells::Encoded(b), Some(v)) if !v.is_null() => b.append_value(encode_value(v)?),
            (Cells::Bool(b), _) => b.append_null(),
            (Cells::Int(b) | Cells::DateTime(b) | Cells::DateTime64(b), _) => b.append_null(),
            (Cells::UInt(b), _) => b.append_null(),
            (Cells::Float(b), _) => b.append_null(),
            (Cells::Str(b), _) => b.append_null(),
            (Cells::Uuid(b), _) => b.append_null(),
            (Cells::Date(b), _) => b.append_null(),
            (Cells::Encoded(b), _) => b.append_null(),
        }
        Ok(())
    }

    fn finish(self) -> ArrayRef {
        match self {
            Cells::Bool(mut b) => Arc::new(b.finish()),
            Cells::Int(mut b) | Cells::DateTime(mut b) | Cells::DateTime64(mut b) => {
                Arc::new(b.finish())
            }
            Cells::UInt(mut b) => Arc::new(b.finish()),
            Cells::Float(mut b) => Arc::new(b.finish()),
            Cells::Str(mut b) => Arc::new(b.finish()),
            Cells::Uuid(mut b) => Arc::new(b.finish()),
            Cells::Date(mut b) => Arc::new(b.finish()),
            Cells::Encoded(mut b) => Arc::new(b.finish()),
        }
    }
}

/// The Arrow columns of `rows` stored as `kinds`, built in one pass over the rows: each row's
/// values are read once, where they lie, instead of once per column.
fn build_columns(rows: &[PartRow], kinds: &[Kind]) -> Result<Vec<ArrayRef>, StorageError> {
    let mut cells: Vec<Cells> = kinds.iter().map(|&k| Cells::new(k, rows.len())).collect();
    for r in rows {
        for (c, column) in cells.iter_mut().enumerate() {
            column.push(r.row.get(c))?;
        }
    }
    Ok(cells.into_iter().map(Cells::finish).collect())
}

/// Writes `rows` (already in the order the part keeps) as a Parquet file with one column per
/// name, and computes each column's min/max for the manifest.
pub(crate) fn encode(names: &[String], rows: &[PartRow]) -> Result<EncodedPart, StorageError> {
    encode_compressed(names, rows, PART_COMPRESSION)
}

/// [`encode`] with the pages compressed by `compression` (tests write the codec earlier
/// versions used).
pub(crate) fn encode_compressed(
    names: &[String],
    rows: &[PartRow],
    compression: Compression,
) -> Result<EncodedPart, StorageError> {
    let mut writer = PartWriter::new(names, column_kinds(rows, names.len()))?;
    writer.compression = compression;
    for chunk in rows.chunks(ROW_GROUP_ROWS) {
        writer.write(chunk)?;
    }
    writer.finish()
}

/// Writes `rows` (in log order, as compactions gather them) as a part in that order, taking
/// their values. The columns are built in one pass over the rows, which reads each row's
/// values where they were allocated, one after the other, and frees each row's values once
/// its cells are built, while they are still in the cache (a second pass to free them missed
/// the cache on every row): `rows` keep their log positions, times and multiplicities, and
/// their values only where a column's kinds are mixed. Each row group is a slice of the
/// built columns: nothing is copied again. Parts are read only by replays, which take a
/// part's rows in any order, so a part is not sorted (see docs/storage.md: sorting cost a
/// third of a compaction and bought nothing a reader used).
pub(crate) fn encode_taking(
    names: &[String],
    rows: &mut [PartRow],
) -> Result<EncodedPart, StorageError> {
    let Some(Built {
        kinds,
        arrays,
        extremes,
    }) = build_columns_by_first_kind(rows, names.len())?
    else {
        // A column's kinds turned out mixed: the rows have their values back, and are
        // written as they are.
        return encode(names, rows);
    };
    let mut writer = PartWriter::new(names, kinds)?;
    let columns = writer.with_statistics(rows, arrays, Some(extremes));
    let mut start = 0;
    while start < rows.len() {
        let len = ROW_GROUP_ROWS.min(rows.len() - start);
        writer.write_columns(columns.iter().map(|c| c.slice(start, len)).collect())?;
        start += len;
    }
    writer.finish()
}

/// What the manifest says of a part's updates besides their columns.
pub(crate) struct PartFigures {
    /// Updates (rows and retractions).
    pub updates: u64,
    /// Their multiplicities' sum.
    pub net_rows: i64,
    /// The earliest time an update landed at.
    pub min_ts: Ts,
    /// The latest.
    pub max_ts: Ts,
}

impl PartFigures {
    /// The figures of updates with times `ts` and multiplicities `diff`.
    fn of(ts: impl Iterator<Item = Ts> + Clone, diff: impl Iterator<Item = i64>) -> PartFigures {
        let (mut updates, mut net_rows) = (0, 0);
        for d in diff {
            updates += 1;
            net_rows += d;
        }
        PartFigures {
            updates,
            net_rows,
            min_ts: ts.clone().min().unwrap_or(0),
            max_ts: ts.max().unwrap_or(0),
        }
    }

    /// The figures of `rows`.
    pub(crate) fn of_rows(rows: &[PartRow]) -> PartFigures {
        PartFigures::of(rows.iter().map(|r| r.ts), rows.iter().map(|r| r.diff))
    }
}

/// A written segment's batches as a part's columns, built when the segment is written,
/// while its rows are still in the cache, and kept for its compaction in place of the rows:
/// a compaction then writes the columns as they are and reads no row (reading a part's
/// rows, made long before and spread over memory, was the larger part of its work), and the
/// rows are freed by whoever drops them last, soon after they were made.
pub(crate) struct HeldColumns {
    seq: Vec<u64>,
    ts: Vec<Ts>,
    diff: Vec<i64>,
    built: Built,
}

impl HeldColumns {
    /// The columns of `batches` (each its time and updates; the first is the log's batch
    /// `first`) with `columns` values a row, or `None` when a column's values are of several
    /// kinds or a row has another number of columns (the segment's compaction then reads
    /// its rows).
    pub(crate) fn build<'a>(
        first: u64,
        batches: impl Iterator<Item = (Ts, &'a [(Row, isize)])> + Clone,
        columns: usize,
    ) -> Result<Option<HeldColumns>, StorageError> {
        let rows: usize = batches.clone().map(|(_, updates)| updates.len()).sum();
        let mut built = FirstKinds::new(columns, rows);
        let mut seq = Vec::with_capacity(rows);
        let mut ts = Vec::with_capacity(rows);
        let mut diff = Vec::with_capacity(rows);
        for (n, (time, updates)) in (first..).zip(batches) {
            for (row, d) in updates {
                if !built.push_row(row)? {
                    return Ok(None);
                }
                seq.push(n);
                ts.push(time);
                diff.push(*d as i64);
            }
        }
        Ok(Some(HeldColumns {
            seq,
            ts,
            diff,
            built: built.finish()?,
        }))
    }

    /// The rows again, for a compaction that cannot write the columns as they are.
    pub(crate) fn into_rows(self) -> Result<Vec<PartRow>, StorageError> {
        let values = values_of(&self.built.arrays, &self.built.kinds, self.seq.len())?;
        let meta = self.seq.into_iter().zip(self.ts).zip(self.diff);
        Ok(meta
            .zip(values)
            .map(|(((seq, ts), diff), row)| PartRow { seq, ts, diff, row })
            .collect())
    }
}

/// Writes the held columns of consecutive segments (in log order) as one part, as they are,
/// and its figures; or gives them back when a column holds values of different kinds in two
/// of them (a column of NULLs in one segment takes the other segments' kind).
pub(crate) fn encode_held(
    names: &[String],
    held: Vec<HeldColumns>,
) -> Result<Result<(EncodedPart, PartFigures), Vec<HeldColumns>>, StorageError> {
    let mut kinds = Vec::with_capacity(names.len());
    for c in 0..names.len() {
        let mut found = None;
        for h in &held {
            let (Some(array), Some(&kind)) = (h.built.arrays.get(c), h.built.kinds.get(c)) else {
                return Ok(Err(held));
            };
            if array.null_count() == array.len() {
                continue;
            }
            match found {
                None => found = Some(kind),
                Some(k) if k != kind => return Ok(Err(held)),
                Some(_) => {}
            }
        }
        kinds.push(found.unwrap_or(Kind::Str));
    }
    let figures = PartFigures::of(
        held.iter().flat_map(|h| h.ts.iter().copied()),
        held.iter().flat_map(|h| h.diff.iter().copied()),
    );
    let mut writer = PartWriter::new(names, kinds.clone())?;
    for h in held {
        let HeldColumns {
            seq,
            ts,
            diff,
            built,
        } = h;
        if seq.is_empty() {
            continue;
        }
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from(seq)),
            Arc::new(UInt64Array::from(ts)),
            Arc::new(Int64Array::from(diff)),
        ];
        let own = built.kinds.iter().zip(built.extremes);
        for (c, (array, (own, extremes))) in built.arrays.into_iter().zip(own).enumerate() {
            if *own == kinds[c] {
                if let Some((least, greatest)) = extremes.found() {
                    writer.stats[c].include(least, greatest);
                }
                columns.push(array);
            } else {
                columns.push(new_null_array(&kinds[c].data_type(), array.len()));
            }
        }
        writer.write_columns(columns)?;
    }
    Ok(Ok((writer.finish()?, figures)))
}

/// Puts back the values of `rows` that [`build_columns_by_first_kind`] took, from the
/// columns it built of them (`arrays`, of at least as many cells as `rows`, stored as
/// `kinds`): the rare part whose column kinds turn out mixed is then written from its rows.
fn restore_rows(
    arrays: &[ArrayRef],
    kinds: &[Kind],
    rows: &mut [PartRow],
) -> Result<(), StorageError> {
    let values = values_of(arrays, kinds, rows.len())?;
    for (r, row) in rows.iter_mut().zip(values) {
        r.row = row;
    }
    Ok(())
}

/// How many of an integer column's first values [`many_valued_integer_columns`] reads.
const ENCODING_SAMPLE: usize = 1024;

/// The integer columns whose first [`ENCODING_SAMPLE`] values (in log order) are more than a
/// quarter distinct: stored as deltas rather than through a dictionary, which would cost a
/// hash per value and store about as many bits per value (a dictionary index of a column of
/// thousands of values against the differences of its neighbours). A column of few values
/// (status codes, flags), whose indices are a few bits each, keeps its dictionary.
fn many_valued_integer_columns(built: &[ArrayRef], kinds: &[Kind]) -> Vec<usize> {
    let mut sample: Vec<i64> = Vec::with_capacity(ENCODING_SAMPLE);
    let mut columns = Vec::new();
    for (c, (array, kind)) in built.iter().zip(kinds).enumerate() {
        sample.clear();
        // Only how many values differ matters: unsigned ones are counted by their bits.
        let any = array.as_any();
        match kind {
            Kind::Int | Kind::DateTime | Kind::DateTime64(_) => {
                let Some(ints) = any.downcast_ref::<Int64Array>() else {
                    continue;
                };
                sample.extend(ints.iter().flatten().take(ENCODING_SAMPLE))
            }
            Kind::UInt => {
                let Some(uints) = any.downcast_ref::<UInt64Array>() else {
                    continue;
                };
                sample.extend(
                    uints
                        .iter()
                        .flatten()
                        .take(ENCODING_SAMPLE)
                        .map(|u| u as i64),
                )
            }
            Kind::Date => {
                let Some(days) = any.downcast_ref::<Int32Array>() else {
                    continue;
                };
                sample.extend(days.iter().flatten().take(ENCODING_SAMPLE).map(i64::from))
            }
            _ => continue,
        }
        sample.sort_unstable();
        sample.dedup();
        if sample.len() > ENCODING_SAMPLE / 4 {
            columns.push(c);
        }
    }
    columns
}

/// A column being built by [`FirstKinds`]: NULLs so far, or the kind of its first value and
/// its cells.
enum FirstKind {
    Nulls(usize),
    Typed(Kind, Cells),
}

/// A part's columns as [`build_columns_by_first_kind`] built them.
struct Built {
    kinds: Vec<Kind>,
    arrays: Vec<ArrayRef>,
    /// Each column's extremes, read from its values for the kinds read value by value
    /// ([`Kind::read_by_value`]).
    extremes: Vec<Extremes>,
}

/// A part's columns being built row by row, each stored as the kind of its first non-NULL
/// value (a string column when it is all NULL; bincode, whatever follows, when its first
/// value is an array, tuple or map).
pub(super) struct FirstKinds {
    columns: Vec<FirstKind>,
    extremes: Vec<Extremes>,
    /// The rows expected, for the builders' capacity.
    capacity: usize,
}

impl FirstKinds {
    /// Columns for `columns` values a row, about `capacity` rows.
    pub(super) fn new(columns: usize, capacity: usize) -> FirstKinds {
        FirstKinds {
            columns: (0..columns).map(|_| FirstKind::Nulls(0)).collect(),
            extremes: (0..columns).map(|_| Extremes::default()).collect(),
            capacity,
        }
    }

    /// Appends `row`'s values; false when it does not fit (a typed column meets a value of
    /// another kind, or the row has another number of columns): the columns then hold some
    /// of its cells and are only good for [`restore_rows`] of the rows before it.
    pub(super) fn push_row(&mut self, row: &Row) -> Result<bool, StorageError> {
        if row.len() != self.columns.len() {
            return Ok(false);
        }
        for ((column, extremes), v) in self.columns.iter_mut().zip(&mut self.extremes).zip(row) {
            match column {
                FirstKind::Typed(kind, cells) => {
                    if !v.is_null() && *kind != Kind::Encoded && Kind::of(v) != *kind {
                        return Ok(false);
                    }
                    cells.push(Some(v))?;
                    if !v.is_null() && kind.read_by_value() {
                        extremes.include(v);
                    }
                }
                FirstKind::Nulls(nulls) if v.is_null() => *nulls += 1,
                FirstKind::Nulls(nulls) => {
                    let kind = Kind::of(v);
                    let mut cells = Cells::new(kind, self.capacity);
                    for _ in 0..*nulls {
                        cells.push(None)?;
                    }
                    cells.push(Some(v))?;
                    if kind.read_by_value() {
                        extremes.include(v);
                    }
                    *column = FirstKind::Typed(kind, cells);
                }
            }
        }
        Ok(true)
    }

    /// The columns' kinds, Arrow arrays and value-by-value extremes.
    fn finish(self) -> Result<Built, StorageError> {
        let mut kinds = Vec::with_capacity(self.columns.len());
        let mut arrays = Vec::with_capacity(self.columns.len());
        for column in self.columns {
            let (kind, cells) = match column {
                FirstKind::Typed(kind, cells) => (kind, cells),
                FirstKind::Nulls(nulls) => {
                    let mut cells = Cells::new(Kind::Str, nulls);
                    for _ in 0..nulls {
                        cells.push(None)?;
                    }
                    (Kind::Str, cells)
                }
            };
            kinds.push(kind);
            arrays.push(cells.finish());
        }
        Ok(Built {
            kinds,
            arrays,
            extremes: self.extremes,
        })
    }
}

/// The Arrow columns of `rows` and how each is stored ([`FirstKinds`]), in one pass over the
/// rows, which takes each row's values once their cells are built (the caller keeps the
/// rows' log positions, times and multiplicities). `None` when a typed column meets a value
/// of another kind, or a row has another number of columns: the values taken are put back
/// ([`restore_rows`]), and [`column_kinds`] decides the kinds first (several kinds are
/// stored as bincode).
fn build_columns_by_first_kind(
    rows: &mut [PartRow],
    columns: usize,
) -> Result<Option<Built>, StorageError> {
    let mut built = FirstKinds::new(columns, rows.len());
    for i in 0..rows.len() {
        if !built.push_row(&rows[i].row)? {
            let Built { kinds, arrays, .. } = built.finish()?;
            restore_rows(&arrays, &kinds, &mut rows[..i])?;
            return Ok(None);
        }
        drop(std::mem::take(&mut rows[i].row));
    }
    built.finish().map(Some)
}

/// The least and greatest non-NULL values of a column, read value by value; each value's
/// order prefix settles almost every comparison without comparing values.
#[derive(Default)]
struct Extremes {
    min: Option<(Value, (u8, u64))>,
    max: Option<(Value, (u8, u64))>,
}

impl Extremes {
    /// Takes in the non-NULL value `v`.
    fn include(&mut self, v: &Value) {
        let p = v.order_prefix().0;
        if self.min.as_ref().is_none_or(|(m, mp)| p <= *mp && v < m) {
            self.min = Some((v.clone(), p));
        }
        if self.max.as_ref().is_none_or(|(m, mp)| p >= *mp && v > m) {
            self.max = Some((v.clone(), p));
        }
    }

    /// The extremes, when any value was taken in.
    fn found(self) -> Option<(Value, Value)> {
        Some((self.min?.0, self.max?.0))
    }
}

/// A UUID stored as its 16 big-endian bytes.
fn uuid_of(bytes: &[u8]) -> U128 {
    let mut b = [0u8; 16];
    if bytes.len() == 16 {
        b.copy_from_slice(bytes);
    }
    u128::from_be_bytes(b).into()
}

/// How each column of a part is stored, read from its schema.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PartKinds(Vec<Kind>);

impl PartKinds {
    /// The kinds that store both parts' values: a column's kind where the two agree or one
    /// part holds only NULLs there (told by `a_has`/`b_has`), else bincode.
    pub(crate) fn merge(&self, a_has: &[bool], other: &PartKinds, b_has: &[bool]) -> PartKinds {
        PartKinds(
            self.0
                .iter()
                .zip(&other.0)
                .enumerate()
                .map(|(c, (a, b))| {
                    match (
                        a_has.get(c).copied().unwrap_or(true),
                        b_has.get(c).copied().unwrap_or(true),
                    ) {
                        (false, _) => *b,
                        (_, false) => *a,
                        _ if a == b => *a,
                        _ => Kind::Encoded,
                    }
                })
                .collect(),
        )
    }
}

/// Writes a part one row group at a time, so its Arrow arrays never exist whole: a merge
/// streams its inputs through it in bounded memory.
pub(crate) struct PartWriter {
    /// Opened by the first row group written, whose columns decide which are stored as
    /// deltas ([`PartWriter::open`]).
    writer: Option<ArrowWriter<Vec<u8>>>,
    schema: Arc<Schema>,
    kinds: Vec<Kind>,
    stats: Vec<ColumnStats>,
    /// [`PART_COMPRESSION`]; tests write the codec earlier versions used.
    compression: Compression,
}

/// How parts' pages are compressed: LZ4 (the raw block format), as ClickHouse compresses its
/// parts by default. A part's columns are already bit-packed deltas and dictionaries, so
/// zstd (used until session 46) made realistic parts no smaller (the top-k's events: 7.92
/// bytes per row with zstd, 7.93 with LZ4; very repetitive rows 0.9 against 2.1) and cost a
/// sixth of each compaction (the compactor uses 18% less CPU with LZ4). Parts written with
/// zstd are still read and merged: each column chunk names its codec.
const PART_COMPRESSION: Compression = Compression::LZ4_RAW;

impl PartWriter {
    /// A writer of parts with columns `names` stored as `kinds`.
    pub(super) fn new(names: &[String], kinds: Vec<Kind>) -> Result<PartWriter, StorageError> {
        let mut fields = vec![
            Field::new("_seq", DataType::UInt64, false),
            Field::new("_ts", DataType::UInt64, false),
            Field::new("_diff", DataType::Int64, false),
        ];
        for (name, kind) in names.iter().zip(&kinds) {
            fields.push(
                Field::new(name, kind.data_type(), true)
                    .with_metadata(HashMap::from([("petrel".to_string(), kind.tag())])),
            );
        }
        let stats = names
            .iter()
            .map(|name| ColumnStats {
                name: name.clone(),
                min: None,
                max: None,
            })
            .collect();
        Ok(PartWriter {
            writer: None,
            schema: Arc::new(Schema::new(fields)),
            kinds,
            stats,
            compression: PART_COMPRESSION,
        })
    }

    /// A writer with the given stored kinds (a merge's, from [`PartKinds::merge`]).
    pub(crate) fn with_kinds(
        names: &[String],
        kinds: PartKinds,
    ) -> Result<PartWriter, StorageError> {
        PartWriter::new(names, kinds.0)
    }

    /// The Parquet writer, with the integer columns among `deltas` stored as the differences
    /// between neighbours.
    fn open(&self, deltas: &[usize]) -> Result<ArrowWriter<Vec<u8>>, StorageError> {
        let mut props = WriterProperties::builder()
            .set_compression(self.compression)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            // Min/max per row group; no page index (nothing reads one, and it costs the
            // writer a statistics pass per page).
            .set_statistics_enabled(EnabledStatistics::Chunk)
            // Whole values: the manifest's extremes are read from these statistics.
            .set_statistics_truncate_length(None);
        // Log positions (rising), a row's tick (rising with the log, in long runs of one
        // value), a row's multiplicity (long runs of one value), and the `deltas` columns (of
        // many values) are stored as the differences between neighbours, bit-packed, which is
        // no larger than a dictionary and costs no hash per value.
        let deltas = deltas
            .iter()
            .filter(|&&c| self.kinds.get(c).is_some_and(|k| k.is_integer()))
            // The datasource's columns follow `_seq`, `_ts` and `_diff` in the schema.
            .filter_map(|&c| self.schema.fields().get(c + 3).map(|f| f.name().clone()))
            .chain(["_seq", "_ts", "_diff"].map(String::from));
        for name in deltas {
            let column = ColumnPath::new(vec![name]);
            props = props
                .set_column_dictionary_enabled(column.clone(), false)
                .set_column_encoding(column, Encoding::DELTA_BINARY_PACKED);
        }
        ArrowWriter::try_new(Vec::new(), self.schema.clone(), Some(props.build()))
            .map_err(|e| StorageError::Corrupt(format!("cannot write a part: {e}")))
    }

    /// Appends rows (in the part's order).
    pub(crate) fn write(&mut self, rows: &[PartRow]) -> Result<(), StorageError> {
        if rows.is_empty() {
            return Ok(());
        }
        let columns = self.columns(rows)?;
        self.write_columns(columns)
    }

    /// The part's Arrow columns of `rows` (log position, time and diff first), in the rows'
    /// order; each column's extremes are folded into the part's statistics.
    fn columns(&mut self, rows: &[PartRow]) -> Result<Vec<ArrayRef>, StorageError> {
        let built = build_columns(rows, &self.kinds)?;
        Ok(self.with_statistics(rows, built, None))
    }

    /// The part's Arrow columns of `rows`: their log position, time and diff, then `built`
    /// (the rows' columns, stored as the writer's kinds). The extremes of the kinds read
    /// value by value ([`Kind::read_by_value`]) are folded into the part's statistics here:
    /// taken from `extremes` when given, else from the rows; the other kinds' come from the
    /// Parquet writer's statistics when the part is finished.
    fn with_statistics(
        &mut self,
        rows: &[PartRow],
        built: Vec<ArrayRef>,
        extremes: Option<Vec<Extremes>>,
    ) -> Vec<ArrayRef> {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.seq))),
            Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.ts))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.diff))),
        ];
        let mut extremes = extremes.map(Vec::into_iter);
        for (c, array) in built.into_iter().enumerate() {
            let known = extremes.as_mut().and_then(Iterator::next);
            if self.kinds[c].read_by_value() {
                let found = match known {
                    Some(known) => known.found(),
                    None => {
                        let mut read = Extremes::default();
                        let values = rows.iter().filter_map(|r| r.row.get(c));
                        values
                            .filter(|v| !v.is_null())
                            .for_each(|v| read.include(v));
                        read.found()
                    }
                };
                if let Some((least, greatest)) = found {
                    self.stats[c].include(least, greatest);
                }
            }
            columns.push(array);
        }
        columns
    }

    /// Writes one record batch of the part's columns (log position, time and diff first).
    /// The first one opens the file: its many-valued integer columns
    /// ([`many_valued_integer_columns`]) are stored as deltas.
    fn write_columns(&mut self, columns: Vec<ArrayRef>) -> Result<(), StorageError> {
        let batch = RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| StorageError::Corrupt(format!("cannot build a part: {e}")))?;
        let writer = match &mut self.writer {
            Some(writer) => writer,
            None => {
                let own = batch.columns().get(3..).unwrap_or_default();
                let deltas = many_valued_integer_columns(own, &self.kinds);
                self.writer.insert(self.open(&deltas)?)
            }
        };
        writer
            .write(&batch)
            .map_err(|e| StorageError::Corrupt(format!("cannot write a part: {e}")))
    }

    /// Closes the file.
    pub(crate) fn finish(mut self) -> Result<EncodedPart, StorageError> {
        let mut writer = match self.writer.take() {
            Some(writer) => writer,
            None => self.open(&[])?,
        };
        let fail = |e: parquet::errors::ParquetError| {
            StorageError::Corrupt(format!("cannot write a part: {e}"))
        };
        writer.flush().map_err(fail)?;
        let groups = writer.flushed_row_groups();
        for group in groups {
            for (c, kind) in self.kinds.iter().enumerate() {
                let found = group
                    .columns()
                    .get(c + 3)
                    .and_then(|chunk| chunk.statistics())
                    .and_then(|stats| chunk_extremes(stats, *kind));
                if let Some((least, greatest)) = found {
                    self.stats[c].include(least, greatest);
                }
            }
        }
        let row_groups = groups.len();
        let out = writer.into_inner().map_err(fail)?;
        Ok(EncodedPart {
            bytes: Bytes::from(out),
            row_groups,
            stats: self.stats,
        })
    }
}

/// Reads a part's updates one record batch at a time, in the part's order.
pub(crate) struct PartReader {
    batches: parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    kinds: Vec<Kind>,
}

impl PartReader {
    /// Opens a part.
    pub(crate) fn open(bytes: Bytes) -> Result<PartReader, StorageError> {
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(corrupt)?;
        let kinds = kinds_of(builder.schema())?;
        Ok(PartReader {
            batches: builder.build().map_err(corrupt)?,
            kinds,
        })
    }

    /// How the part stores its columns.
    pub(crate) fn kinds(&self) -> PartKinds {
        PartKinds(self.kinds.clone())
    }

    /// The next record batch, or `None` at the end.
    fn next_batch(&mut self) -> Result<Option<RecordBatch>, StorageError> {
        self.batches.next().transpose().map_err(corrupt)
    }

    /// The next updates, or `None` at the end.
    pub(crate) fn next_rows(&mut self) -> Result<Option<Vec<PartRow>>, StorageError> {
        let Some(batch) = self.next_batch()? else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(batch.num_rows());
        rows_of(&batch, &self.kinds, &mut |seq, row, ts, diff| {
            out.push(PartRow {
                seq,
                ts,
                diff: diff as i64,
                row,
            })
        })?;
        Ok(Some(out))
    }
}

pub(super) fn corrupt(e: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt(format!("unreadable part: {e}"))
}

fn downcast<T: 'static>(a: &ArrayRef) -> Result<&T, StorageError> {
    a.as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| corrupt("a column does not have the type its metadata says"))
}

/// The first `len` rows' values of columns `arrays`, stored as `kinds`.
fn values_of(arrays: &[ArrayRef], kinds: &[Kind], len: usize) -> Result<Vec<Row>, StorageError> {
    let mut rows: Vec<Row> = (0..len).map(|_| Vec::with_capacity(kinds.len())).collect();
    for (array, kind) in arrays.iter().zip(kinds) {
        read_cells(array, *kind, &mut rows)?;
    }
    Ok(rows)
}

fn read_cells(array: &ArrayRef, kind: Kind, out: &mut [Row]) -> Result<(), StorageError> {
    macro_rules! read {
        ($ty:ty, $x:ident => $val:expr) => {{
            let a = downcast::<$ty>(array)?;
            for (i, row) in out.iter_mut().enumerate() {
                row.push(if a.is_null(i) {
                    Value::Null
                } else {
                    let $x = a.value(i);
                    $val
                });
            }
        }};
    }
    match kind {
        Kind::Bool => read!(BooleanArray, x => Value::Bool(x)),
        Kind::Int => read!(Int64Array, x => Value::Int(x)),
        Kind::UInt => read!(UInt64Array, x => Value::UInt(x)),
        Kind::Float => read!(Float64Array, x => Value::Float(F64(x))),
        Kind::Str => read!(StringArray, x => Value::str(x)),
        Kind::Date => read!(Int32Array, x => Value::Date(x)),
        Kind::DateTime => read!(Int64Array, x => Value::DateTime(x)),
        Kind::DateTime64(p) => read!(Int64Array, x => Value::DateTime64(x, p)),
        Kind::Uuid => read!(FixedSizeBinaryArray, x => Value::Uuid(uuid_of(x))),
        Kind::Encoded => {
            let a = downcast::<BinaryArray>(array)?;
            for (i, row) in out.iter_mut().enumerate() {
                row.push(if a.is_null(i) {
                    Value::Null
                } else {
                    bincode::serde::decode_from_slice(a.value(i), bincode::config::standard())
                        .map(|(v, _)| v)
                        .map_err(corrupt)?
                });
            }
        }
    }
    Ok(())
}

/// Reads the updates of `row_groups` (all when `None`) of a part whose `_seq` is below
/// `upto`, calling `f` with each row, its timestamp and multiplicity.
pub(crate) fn decode(
    bytes: Bytes,
    row_groups: Option<Vec<usize>>,
    upto: u64,
    f: &mut dyn FnMut(Row, Ts, isize),
) -> Result<(), StorageError> {
    read(bytes, row_groups, &mut |seq, row, ts, diff| {
        if seq < upto {
            f(row, ts, diff)
        }
    })
}

/// Reads every update of a part with its log position (`_seq`).
pub(crate) fn decode_with_seq(
    bytes: Bytes,
    f: &mut dyn FnMut(u64, Row, Ts, isize),
) -> Result<(), StorageError> {
    read(bytes, None, f)
}

fn read(
    bytes: Bytes,
    row_groups: Option<Vec<usize>>,
    f: &mut dyn FnMut(u64, Row, Ts, isize),
) -> Result<(), StorageError> {
    let mut builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(corrupt)?;
    if let Some(groups) = row_groups {
        builder = builder.with_row_groups(groups);
    }
    let kinds = kinds_of(builder.schema())?;
    for batch in builder.build().map_err(corrupt)? {
        rows_of(&batch.map_err(corrupt)?, &kinds, f)?;
    }
    Ok(())
}

/// How a part's schema says its columns are stored.
pub(super) fn kinds_of(schema: &Schema) -> Result<Vec<Kind>, StorageError> {
    schema
        .fields()
        .iter()
        .skip(3)
        .map(|f| {
            f.metadata()
                .get("petrel")
                .and_then(|t| Kind::from_tag(t))
                .ok_or_else(|| corrupt(format!("column '{}' has no petrel type", f.name())))
        })
        .collect()
}

/// Calls `f` with each update of one record batch of a part.
fn rows_of(
    batch: &RecordBatch,
    kinds: &[Kind],
    f: &mut dyn FnMut(u64, Row, Ts, isize),
) -> Result<(), StorageError> {
    let seq = downcast::<UInt64Array>(batch.column(0))?;
    let ts = downcast::<UInt64Array>(batch.column(1))?;
    let diff = downcast::<Int64Array>(batch.column(2))?;
    let own = batch.columns().get(3..).unwrap_or_default();
    let rows = values_of(own, kinds, batch.num_rows())?;
    for (i, row) in rows.into_iter().enumerate() {
        f(seq.value(i), row, ts.value(i), diff.value(i) as isize);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Every row of `part` with its log position, time and multiplicity, in the part's order.
    fn read_back(part: Bytes) -> Vec<(u64, Row, Ts, i64)> {
        let mut read = Vec::new();
        decode_with_seq(part, &mut |seq, row, ts, diff| {
            read.push((seq, row, ts, diff as i64))
        })
        .unwrap();
        read
    }

    /// `rows` as [`read_back`] gives them.
    fn as_read(rows: &[PartRow]) -> Vec<(u64, Row, Ts, i64)> {
        rows.iter()
            .map(|r| (r.seq, r.row.clone(), r.ts, r.diff))
            .collect()
    }

    /// A compaction's part, whose columns are built from the rows it takes (typed: every
    /// column of one kind) or, when kinds mix, written from the rows themselves, is the part
    /// written from the rows as they are: the same rows, in log order (over several row
    /// groups), with the same statistics; on rows with NULLs, strings inline and on the heap,
    /// and every scalar kind.
    #[test]
    fn a_compaction_writes_its_rows_in_log_order() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x9e37_79b9_7f4a_7c15);
        let mut next = move || rng.random::<u64>();
        let strings = [
            "",
            "US",
            "US\0",
            "abcdefgh",
            "abcdefgh-long-enough-to-be-on-the-heap",
            "DE",
        ];
        for typed in [false, true] {
            let mut rows = Vec::new();
            for n in 0..(ROW_GROUP_ROWS as u64 + 2_000) {
                let s = match next() % 7 {
                    0 => Value::Null,
                    _ => Value::str(strings[(next() % strings.len() as u64) as usize]),
                };
                let i = match (next() % 5, typed) {
                    (0, _) => Value::Null,
                    (1, false) => Value::Int(-((next() % 4) as i64)),
                    _ => Value::UInt(next() % 6),
                };
                let mut row = vec![s, i, Value::Float(F64((next() % 5) as f64 - 2.0))];
                if typed {
                    row.push(Value::DateTime((next() % 3) as i64 - 1));
                    row.push(match next() % 4 {
                        0 => Value::Null,
                        n => Value::Uuid((((n as u128) << 64) | (next() % 3) as u128).into()),
                    });
                    row.push(Value::DateTime64((next() % 5) as i64 - 2, 3));
                    row.push(Value::Date((next() % 3) as i32 - 1));
                    row.push(Value::Bool(next() % 2 == 0));
                }
                rows.push(PartRow {
                    seq: n / 3,
                    ts: n / 100,
                    diff: if n % 9 == 0 { -1 } else { 1 },
                    row,
                });
            }
            let width = if typed { 8 } else { 3 };
            let names: Vec<String> = (0..width).map(|c| format!("c{c}")).collect();
            let by_columns = build_columns_by_first_kind(&mut rows.clone(), width)
                .unwrap()
                .is_some();
            assert_eq!(by_columns, typed);
            let expected = encode(&names, &rows).unwrap();
            let got = encode_taking(&names, &mut rows.clone()).unwrap();
            assert_eq!(got.stats, expected.stats, "typed {typed}");
            assert_eq!(got.row_groups, 2);
            assert_eq!(read_back(got.bytes), as_read(&rows), "typed {typed}");
        }
    }

    /// A compaction frees each row's values as it builds the part's columns; a part whose
    /// column meets a value of another kind only at its last row is written from its rows put
    /// back: every row reads back, in log order, with the statistics of a part written from
    /// the rows as they are.
    #[test]
    fn a_part_whose_kinds_mix_late_keeps_every_row() {
        let names: Vec<String> = (0..3).map(|c| format!("c{c}")).collect();
        let row = |n: u64, last: bool| PartRow {
            seq: n,
            ts: n / 10,
            diff: 1,
            row: vec![
                Value::Array(vec![Value::UInt(n % 7), Value::str("a")].into()),
                if last {
                    Value::Int(-1)
                } else {
                    Value::UInt(n % 13)
                },
                Value::Bool(n.is_multiple_of(3)),
            ],
        };
        let mixed: Vec<PartRow> = (0..3_000).map(|n| row(n, n == 2_999)).collect();
        let typed: Vec<PartRow> = (0..3_000).map(|n| row(n, false)).collect();
        for rows in [&mixed, &typed] {
            let expected = encode(&names, rows).unwrap();
            let got = encode_taking(&names, &mut rows.clone()).unwrap();
            assert_eq!(got.stats, expected.stats);
            assert_eq!(read_back(got.bytes), as_read(rows));
        }
    }

    /// Many-valued integer columns (and log positions) are stored as deltas: the whole range
    /// of each integer kind, where neighbours' differences overflow, reads back exactly.
    #[test]
    fn integers_stored_as_deltas_read_back_at_their_extremes() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(15);
        let ints = [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX - 1, i64::MAX];
        let mut int = || -> i64 {
            // Mostly many values (stored as deltas), over the whole range.
            match rng.random_range(0..3) {
                0 => ints[rng.random_range(0..ints.len())],
                _ => rng.random(),
            }
        };
        let rows: Vec<PartRow> = (0..3_000u64)
            .map(|n| {
                let (a, b, c) = (int(), int(), int());
                PartRow {
                    // In log order (as compactions gather rows), over the whole range.
                    seq: n * (u64::MAX / 3_000),
                    ts: n,
                    diff: 1,
                    row: vec![
                        Value::Int(a),
                        Value::UInt(b as u64),
                        Value::Date((c >> 32) as i32),
                        Value::DateTime(b),
                        Value::DateTime64(c, 6),
                        if n % 5 == 0 {
                            Value::Null
                        } else {
                            Value::Int(a)
                        },
                    ],
                }
            })
            .collect();
        let names: Vec<String> = (0..6).map(|c| format!("c{c}")).collect();
        let part = encode_taking(&names, &mut rows.clone()).unwrap();
        let meta = ParquetRecordBatchReaderBuilder::try_new(part.bytes.clone())
            .unwrap()
            .metadata()
            .clone();
        // Columns 0..3 are `_seq`, `_ts` and `_diff`.
        for c in (3..9).chain([0]) {
            let chunk = meta.row_group(0).column(c);
            assert!(
                chunk
                    .encodings()
                    .any(|e| e == Encoding::DELTA_BINARY_PACKED),
                "column {c}"
            );
        }
        assert_eq!(read_back(part.bytes), as_read(&rows));
    }

    /// An integer column of many values is stored as deltas, one of few values (a status
    /// code) through its dictionary, and a row's multiplicity as deltas; every value reads
    /// back.
    #[test]
    fn integer_columns_are_stored_as_their_values_suit() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(30);
        let rows: Vec<PartRow> = (0..5_000u64)
            .map(|n| PartRow {
                seq: n,
                ts: n / 700,
                diff: if n % 11 == 0 { -1 } else { 1 },
                row: vec![
                    Value::UInt(rng.random_range(0..100_000)),
                    Value::Int([200, 404, 500][rng.random_range(0..3)]),
                    Value::Int(rng.random_range(i64::MIN..i64::MAX)),
                    Value::str("x"),
                ],
            })
            .collect();
        let names: Vec<String> = (0..4).map(|c| format!("c{c}")).collect();
        let part = encode_taking(&names, &mut rows.clone()).unwrap();
        let meta = ParquetRecordBatchReaderBuilder::try_new(part.bytes.clone())
            .unwrap()
            .metadata()
            .clone();
        let encodings = |c: usize| meta.row_group(0).column(c).encodings().collect::<Vec<_>>();
        // Columns 0..3 are `_seq`, `_ts` and `_diff`.
        for c in [0, 2, 3, 5] {
            assert!(
                encodings(c).contains(&Encoding::DELTA_BINARY_PACKED),
                "column {c}: {:?}",
                encodings(c)
            );
        }
        assert!(
            !encodings(4).contains(&Encoding::DELTA_BINARY_PACKED),
            "few values keep their dictionary: {:?}",
            encodings(4)
        );
        assert_eq!(read_back(part.bytes), as_read(&rows));
    }

    /// A column takes the kind of its first value when every value is of that kind, and is
    /// stored as bincode (its kinds decided first) when its values are of several kinds.
    #[test]
    fn a_part_column_of_one_kind_is_typed_and_of_several_kinds_encoded() {
        let row = |a: Value, b: Value| PartRow {
            seq: 0,
            ts: 0,
            diff: 1,
            row: vec![a, b],
        };
        let rows = vec![
            row(Value::Null, Value::UInt(1)),
            row(Value::str("x"), Value::Null),
            row(Value::Null, Value::UInt(2)),
        ];
        let built = build_columns_by_first_kind(&mut rows.clone(), 2)
            .unwrap()
            .unwrap();
        assert_eq!(built.kinds, vec![Kind::Str, Kind::UInt]);
        assert_eq!(built.arrays[0].null_count(), 2);
        let mixed = vec![
            row(Value::UInt(1), Value::Null),
            row(Value::Int(-1), Value::Null),
        ];
        let mut taken = mixed.clone();
        assert!(build_columns_by_first_kind(&mut taken, 2)
            .unwrap()
            .is_none());
        // The values it took are put back.
        let rows_of = |rows: &[PartRow]| rows.iter().map(|r| r.row.clone()).collect::<Vec<_>>();
        assert_eq!(rows_of(&taken), rows_of(&mixed));
        assert_eq!(column_kinds(&mixed, 2), vec![Kind::Encoded, Kind::Str]);
    }

    use super::*;

    /// A part's statistics, read from the Parquet writer's, equal the smallest and largest
    /// values of its rows, as `Value` orders them, across chunks written one at a time: for
    /// unsigned integers above `i64::MAX` (stored in Parquet's signed 64 bits), strings longer
    /// than Parquet truncates statistics to by default, UUIDs and booleans too.
    #[test]
    fn statistics_equal_the_rows_extremes() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let long = "é".repeat(50);
        let longer = format!("{long}é");
        let strings = ["", "a", "a\0", "zz", "US", "é", &long, &longer];
        let mut rows = Vec::new();
        for n in 0..3_000u64 {
            let maybe = |v: Value, rng: &mut rand::rngs::StdRng| {
                if rng.random_range(0..7) == 0 {
                    Value::Null
                } else {
                    v
                }
            };
            let row = vec![
                maybe(Value::Int(rng.random_range(-500..500)), &mut rng),
                maybe(
                    Value::UInt(if rng.random_range(0..3) == 0 {
                        u64::MAX - rng.random_range(0..1_000)
                    } else {
                        rng.random_range(0..1_000)
                    }),
                    &mut rng,
                ),
                maybe(
                    Value::Float(F64(rng.random_range(-4..4) as f64 / 3.0)),
                    &mut rng,
                ),
                maybe(
                    Value::str(strings[rng.random_range(0..strings.len())]),
                    &mut rng,
                ),
                maybe(Value::Date(rng.random_range(0..20_000)), &mut rng),
                maybe(
                    Value::DateTime(rng.random_range(0..2_000_000_000)),
                    &mut rng,
                ),
                maybe(Value::DateTime64(rng.random_range(-9..9), 3), &mut rng),
                maybe(Value::Uuid(rng.random::<u128>().into()), &mut rng),
                maybe(Value::Bool(rng.random_range(0..5) == 0), &mut rng),
            ];
            rows.push(PartRow {
                seq: n,
                ts: n,
                diff: 1,
                row,
            });
        }
        let names: Vec<String> = (0..9).map(|i| format!("c{i}")).collect();
        let kinds = column_kinds(&rows, names.len());
        let mut writer = PartWriter::new(&names, kinds).unwrap();
        for chunk in rows.chunks(700) {
            writer.write(chunk).unwrap();
        }
        let encoded = writer.finish().unwrap();
        for c in 0..names.len() {
            let values = rows
                .iter()
                .filter_map(|r| r.row.get(c))
                .filter(|v| !v.is_null());
            assert_eq!(
                encoded.stats[c].min.as_ref(),
                values.clone().min(),
                "column {c}"
            );
            assert_eq!(encoded.stats[c].max.as_ref(), values.max(), "column {c}");
        }
    }

    #[test]
    fn every_kind_of_value_round_trips() {
        let rows = [
            vec![
                Value::Bool(true),
                Value::Int(-5),
                Value::UInt(7),
                Value::Float(F64(1.5)),
                Value::str("a"),
                Value::Uuid(0x1234_5678_9abc_def0_1122_3344_5566_7788u128.into()),
                Value::Date(19_000),
                Value::DateTime(1_700_000_000),
                Value::DateTime64(1_700_000_000_123, 3),
                Value::Array(vec![Value::Int(1), Value::Int(2)].into()),
                Value::Int(1),
                Value::Null,
                Value::Null,
            ],
            vec![
                Value::Null,
                Value::Int(9),
                Value::UInt(0),
                Value::Float(F64(-0.25)),
                Value::str("zz"),
                Value::Null,
                Value::Date(1),
                Value::DateTime(2),
                Value::DateTime64(3, 3),
                Value::Array(vec![].into()),
                Value::str("mixed"),
                Value::Null,
                Value::UInt(3),
            ],
        ];
        let names: Vec<String> = (0..13).map(|i| format!("c{i}")).collect();
        let part: Vec<PartRow> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| PartRow {
                seq: i as u64,
                ts: 100 + i as u64,
                diff: if i == 0 { 1 } else { -2 },
                row: r.clone(),
            })
            .collect();
        let encoded = encode(&names, &part).unwrap();
        assert_eq!(encoded.row_groups, 1);
        assert_eq!(encoded.stats[1].min, Some(Value::Int(-5)));
        assert_eq!(encoded.stats[1].max, Some(Value::Int(9)));
        assert_eq!(encoded.stats[0].max, Some(Value::Bool(true)));
        let mut back = Vec::new();
        decode(encoded.bytes.clone(), None, u64::MAX, &mut |r, t, d| {
            back.push((r, t, d))
        })
        .unwrap();
        assert_eq!(
            back,
            vec![(rows[0].clone(), 100, 1), (rows[1].clone(), 101, -2)]
        );
        // A replay up to a log position stops there.
        let mut first = Vec::new();
        decode(encoded.bytes, None, 1, &mut |r, _, _| first.push(r)).unwrap();
        assert_eq!(first, vec![rows[0].clone()]);
    }
}
