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
    Array, ArrayRef, BinaryArray, BooleanArray, FixedSizeBinaryArray, Float64Array, Int32Array,
    Int64Array, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
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

/// The order rows have in a part: by the sorting key's columns, then by log position.
pub(crate) fn part_order(sort_key: &[usize], a: &PartRow, b: &PartRow) -> std::cmp::Ordering {
    sort_key
        .iter()
        .map(|&i| a.row.get(i).cmp(&b.row.get(i)))
        .find(|o| o.is_ne())
        .unwrap_or(std::cmp::Ordering::Equal)
        .then(a.seq.cmp(&b.seq))
}

/// The positions of `rows` (in log order, as compactions gather them) in the part order (see
/// [`part_order`]), without moving the rows ([`sort_places`] over the rows' values). A
/// compaction sorts from the part's built columns instead ([`encode_sorted`]) where it can.
pub(crate) fn sort_order(rows: &[PartRow], sort_key: &[usize]) -> Vec<usize> {
    let prefix = |k: usize, r: usize| match sort_key.get(k).and_then(|&i| rows[r].row.get(i)) {
        None => (0, true),
        Some(v) => wide_prefix(v.order_prefix()),
    };
    sort_places(rows.len(), sort_key.len(), prefix, |a, b| {
        part_order(sort_key, &rows[a], &rows[b])
    })
}

/// An order prefix ([`Value::order_prefix`]) as one integer above every NULL's (0), and
/// whether it is exact.
type Prefix = (u128, bool);

/// A part's columns as built, and how each is stored.
type BuiltColumns = (Vec<Kind>, Vec<ArrayRef>);

/// A value's order prefix as a [`Prefix`].
fn wide_prefix(((class, bits), exact): ((u8, u64), bool)) -> Prefix {
    (((class as u128 + 1) << 64) | bits as u128, exact)
}

/// The places of `rows` rows sorted by a key of `key_len` columns: a sort of each row's first
/// two columns' order prefixes (`prefix(column, row)`, 0 or 1, with whether it is exact),
/// where only rows whose prefixes tie are compared by `cmp` (the whole order, the rows' places
/// or log positions last: rows come in log order); rows whose prefixes are exact over the
/// whole key are equal by it and keep their places' order. The prefixes are read where they
/// lie, once to find the bits where rows differ and once to pack them: no vector of them is
/// built (those vectors, each written and read back, cost a compaction more than its sort).
fn sort_places(
    rows: usize,
    key_len: usize,
    prefix: impl Fn(usize, usize) -> Prefix,
    cmp: impl Fn(usize, usize) -> std::cmp::Ordering,
) -> Vec<usize> {
    // The second column's prefix orders rows only where the first column's values are
    // known equal (an exact prefix); elsewhere the rows' own comparison decides.
    let key = |row: usize| match prefix(0, row) {
        (first, true) => {
            let (second, second_exact) = prefix(1, row);
            ((first, second), second_exact && key_len <= 2)
        }
        (first, false) => ((first, 0), false),
    };
    let by_rows = |run: &mut [usize]| {
        if !key(run[0]).1 {
            run.sort_by(|&a, &b| cmp(a, b));
        }
    };
    let Some(packing) = Packing::of(rows, &|row| key(row).0) else {
        let mut sorted: Vec<(u128, u128, usize)> = (0..rows)
            .map(|row| {
                let (a, b) = key(row).0;
                (a, b, row)
            })
            .collect();
        sorted.sort_unstable();
        return order_of_sorted(&sorted, |k| k.2, |k| (k.0, k.1), by_rows);
    };
    let packed = (0..rows).map(|row| packing.pack(key(row).0, row));
    match packing.bits() <= u64::BITS {
        // Keys of up to 64 bits (a country code, a user id and a place) are sorted as
        // `u64`s: half the bytes to move, and one comparison of a machine word each.
        true => {
            let mut sorted: Vec<u64> = packed.map(|k| k as u64).collect();
            sorted.sort_unstable();
            order_of_sorted(
                &sorted,
                |&k| packing.place(k.into()),
                |&k| packing.prefixes(k.into()),
                by_rows,
            )
        }
        false => {
            let mut sorted: Vec<u128> = packed.collect();
            sorted.sort_unstable();
            order_of_sorted(
                &sorted,
                |&k| packing.place(k),
                |&k| packing.prefixes(k),
                by_rows,
            )
        }
    }
}

/// How each row's two prefixes and its place are packed into one integer that orders as the
/// (first, second, place) triple does: of each prefix only the bits where the rows' prefixes
/// differ are kept (the bits above and below them are the same in every row, so they order
/// nothing). A sort of one integer per row moves 8 or 16 bytes and compares once; keys such
/// as a country code and a user id need about 50 bits in all.
struct Packing {
    /// The lowest differing bit and the width of each prefix's differing bits.
    first: (u32, u32),
    second: (u32, u32),
    /// How many low bits hold the place.
    place_bits: u32,
}

impl Packing {
    /// The packing of `rows` rows' prefix pairs (`key(row)`); `None` when there are no rows,
    /// or the differing bits and the place need more than 128 bits.
    fn of(rows: usize, key: &impl Fn(usize) -> (u128, u128)) -> Option<Packing> {
        let (first0, second0) = (rows > 0).then(|| key(0))?;
        let (differ1, differ2) = (0..rows).fold((0u128, 0u128), |(a, b), row| {
            let (f, s) = key(row);
            (a | (f ^ first0), b | (s ^ second0))
        });
        // The lowest differing bit and how many bits reach from it to the highest.
        let window = |d: u128| match d {
            0 => (0, 0),
            d => (
                d.trailing_zeros(),
                128 - d.leading_zeros() - d.trailing_zeros(),
            ),
        };
        let packing = Packing {
            first: window(differ1),
            second: window(differ2),
            place_bits: (usize::BITS - rows.leading_zeros()).max(1),
        };
        (packing.bits() <= u128::BITS).then_some(packing)
    }

    /// The bits a packed key takes.
    fn bits(&self) -> u32 {
        self.first.1 + self.second.1 + self.place_bits
    }

    /// The packed key of the row at `place` with prefixes `(f, s)`.
    fn pack(&self, (f, s): (u128, u128), place: usize) -> u128 {
        // A prefix's differing bits, shifted above `shift` bits (none when it has none: a
        // shift by the whole width would overflow).
        let bits = |v: u128, (low, width): (u32, u32), shift: u32| match width {
            0 => 0,
            w => ((v >> low) & (u128::MAX >> (128 - w))) << shift,
        };
        bits(f, self.first, self.second.1 + self.place_bits)
            | bits(s, self.second, self.place_bits)
            | place as u128
    }

    /// The row's place in the rows.
    fn place(&self, key: u128) -> usize {
        (key & ((1u128 << self.place_bits) - 1)) as usize
    }

    /// The key's prefixes without the place.
    fn prefixes(&self, key: u128) -> u128 {
        key >> self.place_bits
    }
}

/// The places of `sorted` (each row's sort key, sorted, giving its `place` and its
/// `prefixes`), where each run of rows whose prefixes tie is handed to `by_rows`, which
/// orders the run by the rows themselves.
fn order_of_sorted<T, P: PartialEq>(
    sorted: &[T],
    place: impl Fn(&T) -> usize,
    prefixes: impl Fn(&T) -> P,
    by_rows: impl Fn(&mut [usize]),
) -> Vec<usize> {
    let mut order: Vec<usize> = sorted.iter().map(place).collect();
    // Each row's prefixes are read once: the run's are kept while the rows after it tie.
    let mut start = 0;
    let mut run = sorted.first().map(&prefixes);
    for end in 1..=order.len() {
        let next = sorted.get(end).map(&prefixes);
        if next != run {
            if end - start > 1 {
                by_rows(&mut order[start..end]);
            }
            start = end;
            run = next;
        }
    }
    order
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

    /// Whether a column of this kind has its extremes read value by value, not from its
    /// built column ([`array_extremes`]).
    fn read_by_value(self) -> bool {
        matches!(self, Kind::Bool | Kind::Uuid | Kind::Encoded)
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

/// The smallest and largest value of `values` by `key` (the first of equals), if any.
fn least_and_greatest<T: Copy, K: Ord>(
    mut values: impl Iterator<Item = T>,
    key: impl Fn(T) -> K,
) -> Option<(T, T)> {
    let first = values.next()?;
    Some(values.fold((first, first), |(least, greatest), v| {
        (
            if key(v) < key(least) { v } else { least },
            if key(v) > key(greatest) { v } else { greatest },
        )
    }))
}

/// The smallest and largest non-NULL value of a typed column, read from its Arrow array
/// (one column's values in a row, not each row's values in turn); the outer `None` for the
/// kinds whose statistics are read from the rows. Values compare as [`Value`] orders them.
fn array_extremes(array: &ArrayRef, kind: Kind) -> Option<Option<(Value, Value)>> {
    fn pair<T>(found: Option<(T, T)>, wrap: impl Fn(T) -> Value) -> Option<(Value, Value)> {
        found.map(|(least, greatest)| (wrap(least), wrap(greatest)))
    }
    let any = array.as_any();
    Some(match kind {
        Kind::Int | Kind::DateTime | Kind::DateTime64(_) => {
            let values = any.downcast_ref::<Int64Array>()?;
            let found = least_and_greatest(values.iter().flatten(), |v| v);
            match kind {
                Kind::Int => pair(found, Value::Int),
                Kind::DateTime => pair(found, Value::DateTime),
                Kind::DateTime64(p) => pair(found, |v| Value::DateTime64(v, p)),
                _ => return None,
            }
        }
        Kind::UInt => {
            let values = any.downcast_ref::<UInt64Array>()?;
            pair(
                least_and_greatest(values.iter().flatten(), |v| v),
                Value::UInt,
            )
        }
        Kind::Date => {
            let values = any.downcast_ref::<Int32Array>()?;
            pair(
                least_and_greatest(values.iter().flatten(), |v| v),
                Value::Date,
            )
        }
        Kind::Float => {
            let values = any.downcast_ref::<Float64Array>()?;
            pair(least_and_greatest(values.iter().flatten(), F64), |v| {
                Value::Float(F64(v))
            })
        }
        Kind::Str => {
            let values = any.downcast_ref::<StringArray>()?;
            pair(
                least_and_greatest(values.iter().flatten(), |v| v),
                Value::str,
            )
        }
        Kind::Bool | Kind::Uuid | Kind::Encoded => return None,
    })
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
    let kinds = column_kinds(rows, names.len());
    let mut writer = PartWriter::new(names, kinds, &[])?;
    for chunk in rows.chunks(ROW_GROUP_ROWS) {
        writer.write(chunk)?;
    }
    writer.finish()
}

/// Writes `rows` (in log order, as compactions gather them) as a part in the part order
/// ([`part_order`] by `sort_key`). The columns are built in the rows' own order, which reads
/// each row's values where they were allocated, one after the other, and frees each row's
/// values once its cells are built, while they are still in the cache (a second pass to
/// free them missed the cache on every row): `rows` keep their log positions, times and
/// multiplicities, and their values only where a column's kinds are mixed. The order is then
/// sorted from the built columns ([`sort_order_of_columns`]), and only the columns are
/// gathered into it. Rows sorted in place are scattered in memory, and reading them costs a
/// cache miss each.
pub(crate) fn encode_sorted(
    names: &[String],
    rows: &mut [PartRow],
    sort_key: &[usize],
) -> Result<EncodedPart, StorageError> {
    let (kinds, built, extremes, order) = match build_columns_by_first_kind(rows, names.len())? {
        Some(Built {
            kinds,
            arrays,
            extremes,
        }) => {
            let order = match sort_order_of_columns(&arrays, &kinds, sort_key, rows.len()) {
                Some(order) => order,
                None => {
                    restore_rows(&arrays, &kinds, rows)?;
                    sort_order(rows, sort_key)
                }
            };
            (kinds, arrays, Some(extremes), order)
        }
        None => {
            let kinds = column_kinds(rows, names.len());
            let built = build_columns(rows, &kinds)?;
            let order = sort_order(rows, sort_key);
            (kinds, built, None, order)
        }
    };
    let mut deltas = sort_key.to_vec();
    deltas.extend(many_valued_integer_columns(&built, &kinds));
    let mut writer = PartWriter::new(names, kinds, &deltas)?;
    let columns = writer.with_statistics(rows, built, extremes);
    for chunk in order.chunks(ROW_GROUP_ROWS) {
        let indices = UInt32Array::from_iter_values(chunk.iter().map(|&i| i as u32));
        let taken = columns
            .iter()
            .map(|c| super::gather::gather(c, &indices))
            .collect::<Result<Vec<ArrayRef>, _>>()
            .map_err(|e| StorageError::Corrupt(format!("cannot build a part: {e}")))?;
        writer.write_columns(taken)?;
    }
    writer.finish()
}

/// Puts back the values of `rows` that [`build_columns_by_first_kind`] took, from the
/// columns it built of them (`arrays`, of at least as many cells as `rows`, stored as
/// `kinds`): the rare part whose column kinds are mixed, or whose sort key is stored as
/// bincode, is then written from its rows.
fn restore_rows(
    arrays: &[ArrayRef],
    kinds: &[Kind],
    rows: &mut [PartRow],
) -> Result<(), StorageError> {
    let mut values: Vec<Row> = rows
        .iter()
        .map(|_| Vec::with_capacity(kinds.len()))
        .collect();
    for (array, kind) in arrays.iter().zip(kinds) {
        read_cells(array, *kind, &mut values)?;
    }
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
        // Read where the values lie, as the sort reads them; the order of the sampled
        // values does not matter, only how many differ (unsigned ones are counted by bits).
        match SortColumn::of(array, *kind) {
            Some(SortColumn::Int(ints, _)) => {
                sample.extend(ints.iter().flatten().take(ENCODING_SAMPLE))
            }
            Some(SortColumn::UInt(uints)) => sample.extend(
                uints
                    .iter()
                    .flatten()
                    .take(ENCODING_SAMPLE)
                    .map(|u| u as i64),
            ),
            Some(SortColumn::Date(days)) => {
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

/// A column being built by [`build_columns_by_first_kind`]: NULLs so far, or the kind of its
/// first value and its cells.
enum FirstKind {
    Nulls(usize),
    Typed(Kind, Cells),
}

/// A part's columns as [`build_columns_by_first_kind`] built them.
struct Built {
    kinds: Vec<Kind>,
    arrays: Vec<ArrayRef>,
    /// Each column's extremes, read from its values for the kinds [`array_extremes`] does
    /// not read from the built column.
    extremes: Vec<Extremes>,
}

/// The Arrow columns of `rows` and how each is stored, in one pass over the rows, which
/// takes each row's values once their cells are built (the caller keeps the rows' log
/// positions, times and multiplicities): a column is stored as the kind of its first
/// non-NULL value (a string column when it is all NULL). A column whose first value is an
/// array, tuple or map is stored as bincode, whatever follows. `None` when a typed column
/// meets a value of another kind, or a row has another number of columns: the values taken
/// are put back ([`restore_rows`]), and [`column_kinds`] decides the kinds first (several
/// kinds are stored as bincode).
fn build_columns_by_first_kind(
    rows: &mut [PartRow],
    columns: usize,
) -> Result<Option<Built>, StorageError> {
    let mut built: Vec<FirstKind> = (0..columns).map(|_| FirstKind::Nulls(0)).collect();
    let mut extremes: Vec<Extremes> = (0..columns).map(|_| Extremes::default()).collect();
    for i in 0..rows.len() {
        let row = &rows[i].row;
        let mut fits = row.len() == columns;
        let width = if fits { columns } else { 0 };
        for ((column, extremes), v) in built.iter_mut().zip(&mut extremes).zip(row).take(width) {
            match column {
                FirstKind::Typed(kind, cells) => {
                    if !v.is_null() && *kind != Kind::Encoded && Kind::of(v) != *kind {
                        fits = false;
                        break;
                    }
                    cells.push(Some(v))?;
                    if !v.is_null() && kind.read_by_value() {
                        extremes.include(v);
                    }
                }
                FirstKind::Nulls(nulls) if v.is_null() => *nulls += 1,
                FirstKind::Nulls(nulls) => {
                    let kind = Kind::of(v);
                    let mut cells = Cells::new(kind, rows.len());
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
        if !fits {
            let (kinds, arrays) = finish_first_kinds(built)?;
            restore_rows(&arrays, &kinds, &mut rows[..i])?;
            return Ok(None);
        }
        drop(std::mem::take(&mut rows[i].row));
    }
    let (kinds, arrays) = finish_first_kinds(built)?;
    Ok(Some(Built {
        kinds,
        arrays,
        extremes,
    }))
}

/// The kinds and Arrow columns of columns being built (an all-NULL column as strings).
fn finish_first_kinds(built: Vec<FirstKind>) -> Result<BuiltColumns, StorageError> {
    let mut kinds = Vec::with_capacity(built.len());
    let mut arrays = Vec::with_capacity(built.len());
    for column in built {
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
    Ok((kinds, arrays))
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

/// A sort-key column of a part as built, read where its values lie.
enum SortColumn<'a> {
    Bool(&'a BooleanArray),
    /// `Int`, `DateTime` and `DateTime64` (the kind says which).
    Int(&'a Int64Array, Kind),
    UInt(&'a UInt64Array),
    Float(&'a Float64Array),
    Str(&'a StringArray),
    Date(&'a Int32Array),
    Uuid(&'a FixedSizeBinaryArray),
}

/// A row's value in a [`SortColumn`], ordered as the values are: strings borrowed, other
/// kinds as values (which none allocates). A column holds one kind, so cells of different
/// variants only ever compare NULL with a value.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum SortCell<'a> {
    Null,
    Str(&'a str),
    Value(Value),
}

impl<'a> SortColumn<'a> {
    /// `None` for a column stored as bincode, whose values are not read in place.
    fn of(array: &'a ArrayRef, kind: Kind) -> Option<SortColumn<'a>> {
        let any = array.as_any();
        Some(match kind {
            Kind::Bool => SortColumn::Bool(any.downcast_ref()?),
            Kind::Int | Kind::DateTime | Kind::DateTime64(_) => {
                SortColumn::Int(any.downcast_ref()?, kind)
            }
            Kind::UInt => SortColumn::UInt(any.downcast_ref()?),
            Kind::Float => SortColumn::Float(any.downcast_ref()?),
            Kind::Str => SortColumn::Str(any.downcast_ref()?),
            Kind::Date => SortColumn::Date(any.downcast_ref()?),
            Kind::Uuid => SortColumn::Uuid(any.downcast_ref()?),
            Kind::Encoded => return None,
        })
    }

    fn cell(&self, i: usize) -> SortCell<'a> {
        macro_rules! cell {
            ($a:expr, $x:ident => $val:expr) => {
                if $a.is_null(i) {
                    SortCell::Null
                } else {
                    let $x = $a.value(i);
                    $val
                }
            };
        }
        match self {
            SortColumn::Bool(a) => cell!(a, x => SortCell::Value(Value::Bool(x))),
            SortColumn::Int(a, kind) => cell!(a, x => SortCell::Value(match kind {
                Kind::DateTime => Value::DateTime(x),
                Kind::DateTime64(p) => Value::DateTime64(x, *p),
                _ => Value::Int(x),
            })),
            SortColumn::UInt(a) => cell!(a, x => SortCell::Value(Value::UInt(x))),
            SortColumn::Float(a) => cell!(a, x => SortCell::Value(Value::Float(F64(x)))),
            SortColumn::Str(a) => cell!(a, x => SortCell::Str(x)),
            SortColumn::Date(a) => cell!(a, x => SortCell::Value(Value::Date(x))),
            SortColumn::Uuid(a) => cell!(a, x => SortCell::Value(Value::Uuid(uuid_of(x)))),
        }
    }

    /// Row `i`'s order prefix, as [`sort_order`] takes it from the row's value, read from
    /// the typed array (strings and unsigned integers, the usual keys, without making a
    /// value).
    fn prefix(&self, i: usize) -> Prefix {
        match self {
            SortColumn::Str(a) if !a.is_null(i) => wide_prefix(Value::str_order_prefix(a.value(i))),
            SortColumn::UInt(a) if !a.is_null(i) => {
                wide_prefix(Value::UInt(a.value(i)).order_prefix())
            }
            _ => match self.cell(i) {
                SortCell::Null => (0, true),
                SortCell::Str(s) => wide_prefix(Value::str_order_prefix(s)),
                SortCell::Value(v) => wide_prefix(v.order_prefix()),
            },
        }
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

/// [`sort_order`] of `rows` rows from their built columns (in the rows' order, stored as
/// `kinds`): the prefixes and the ties' values are read from the typed arrays, which lie
/// together, instead of from each row's values behind its pointer. For columns built by
/// [`build_columns_by_first_kind`] (every row has every column); `None` when a sort column
/// is stored as bincode.
fn sort_order_of_columns(
    columns: &[ArrayRef],
    kinds: &[Kind],
    sort_key: &[usize],
    rows: usize,
) -> Option<Vec<usize>> {
    let sort_columns: Vec<SortColumn> = sort_key
        .iter()
        .map(|&c| SortColumn::of(columns.get(c)?, *kinds.get(c)?))
        .collect::<Option<_>>()?;
    let prefix = |k: usize, row: usize| match sort_columns.get(k) {
        Some(column) => column.prefix(row),
        None => (0, true),
    };
    let cmp = |a: usize, b: usize| {
        sort_columns
            .iter()
            .map(|c| c.cell(a).cmp(&c.cell(b)))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    };
    Some(sort_places(rows, sort_columns.len(), prefix, cmp))
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
    writer: ArrowWriter<Vec<u8>>,
    schema: Arc<Schema>,
    kinds: Vec<Kind>,
    stats: Vec<ColumnStats>,
}

impl PartWriter {
    /// A writer of parts with columns `names` stored as `kinds`, the integer ones among
    /// `deltas` as the differences between neighbours (the sorting key's integers, whose
    /// rows come in runs of rising values, and columns of many values).
    pub(super) fn new(
        names: &[String],
        kinds: Vec<Kind>,
        deltas: &[usize],
    ) -> Result<PartWriter, StorageError> {
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
        let schema = Arc::new(Schema::new(fields));
        let mut props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            // Min/max per row group; no page index (nothing reads one, and it costs the
            // writer a statistics pass per page).
            .set_statistics_enabled(EnabledStatistics::Chunk);
        // Log positions, a row's multiplicity (long runs of one value), and the `deltas`
        // columns (in runs of rising values, or of many values) are stored as the
        // differences between neighbours, bit-packed, which is no larger than a dictionary
        // and costs no hash per value. A row's tick keeps its dictionary: a part holds few
        // ticks, scattered over its rows once they are sorted by the sorting key.
        let deltas = deltas
            .iter()
            .filter(|&&c| kinds.get(c).is_some_and(|k| k.is_integer()))
            .filter_map(|&c| names.get(c).cloned())
            .chain(["_seq", "_diff"].map(String::from));
        for name in deltas {
            let column = ColumnPath::new(vec![name]);
            props = props
                .set_column_dictionary_enabled(column.clone(), false)
                .set_column_encoding(column, Encoding::DELTA_BINARY_PACKED);
        }
        let props = props.build();
        let writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props))
            .map_err(|e| StorageError::Corrupt(format!("cannot write a part: {e}")))?;
        let stats = names
            .iter()
            .map(|name| ColumnStats {
                name: name.clone(),
                min: None,
                max: None,
            })
            .collect();
        Ok(PartWriter {
            writer,
            schema,
            kinds,
            stats,
        })
    }

    /// A writer with the given stored kinds (a merge's, from [`PartKinds::merge`]).
    pub(crate) fn with_kinds(
        names: &[String],
        kinds: PartKinds,
        sort_key: &[usize],
    ) -> Result<PartWriter, StorageError> {
        PartWriter::new(names, kinds.0, sort_key)
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
    /// (the rows' columns, stored as the writer's kinds), whose extremes are folded into the
    /// part's statistics: read from the built columns, or for the kinds read value by value
    /// ([`Kind::read_by_value`]), taken from `extremes` when given, else from the rows.
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
            let kind = self.kinds[c];
            let known = extremes.as_mut().and_then(Iterator::next);
            let found = match array_extremes(&array, kind) {
                Some(found) => found,
                None => match known {
                    Some(known) => known.found(),
                    None => {
                        let mut read = Extremes::default();
                        let values = rows.iter().filter_map(|r| r.row.get(c));
                        values
                            .filter(|v| !v.is_null())
                            .for_each(|v| read.include(v));
                        read.found()
                    }
                },
            };
            if let Some((least, greatest)) = found {
                self.stats[c].include(least, greatest);
            }
            columns.push(array);
        }
        columns
    }

    /// Writes one record batch of the part's columns.
    fn write_columns(&mut self, columns: Vec<ArrayRef>) -> Result<(), StorageError> {
        let batch = RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| StorageError::Corrupt(format!("cannot build a part: {e}")))?;
        self.writer
            .write(&batch)
            .map_err(|e| StorageError::Corrupt(format!("cannot write a part: {e}")))
    }

    /// Closes the file.
    pub(crate) fn finish(self) -> Result<EncodedPart, StorageError> {
        let PartWriter {
            mut writer, stats, ..
        } = self;
        let fail = |e: parquet::errors::ParquetError| {
            StorageError::Corrupt(format!("cannot write a part: {e}"))
        };
        writer.flush().map_err(fail)?;
        let row_groups = writer.flushed_row_groups().len();
        let out = writer.into_inner().map_err(fail)?;
        Ok(EncodedPart {
            bytes: Bytes::from(out),
            row_groups,
            stats,
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
    let mut rows: Vec<Row> = (0..batch.num_rows())
        .map(|_| Vec::with_capacity(kinds.len()))
        .collect();
    for (c, kind) in kinds.iter().enumerate() {
        read_cells(batch.column(c + 3), *kind, &mut rows)?;
    }
    for (i, row) in rows.into_iter().enumerate() {
        f(seq.value(i), row, ts.value(i), diff.value(i) as isize);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The prefix sort gives exactly what a stable sort by the part order gives, on keys
    /// with ties, shared string prefixes, NULLs, missing columns and repeated log positions
    /// (packed in 64 bits, in 128, or in neither), whether it reads the rows or (typed
    /// columns) the built columns; and a part a compaction writes from the unmoved rows
    /// equals one written from the sorted rows.
    #[test]
    fn sorting_part_rows_matches_a_stable_sort() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x9e37_79b9_7f4a_7c15);
        let mut next = move || rng.random::<u64>();
        let strings = [
            "",
            "US",
            "US\0",
            "abcdefg",
            "abcdefg\0",
            "abcdefgh",
            "abcdefgz",
            "abcdefgh-long-enough-to-be-on-the-heap",
            "abcdefgh-long-enough-to-be-on-the-heap!",
            "DE",
        ];
        for typed in [false, true] {
            for sort_key in [
                vec![],
                vec![0],
                vec![1, 0],
                vec![0, 1, 2],
                vec![2, 5],
                vec![2, 0],
                vec![3, 1],
                vec![4, 5],
                vec![6, 7, 4],
                vec![5, 0],
                // Prefixes differing in more bits than one integer holds: sorted as triples.
                vec![0, 0],
            ] {
                let mut rows = Vec::new();
                for n in 0..2_000u64 {
                    let s = match next() % 7 {
                        0 => Value::Null,
                        _ => Value::str(strings[(next() % strings.len() as u64) as usize]),
                    };
                    let i = match (next() % 5, typed) {
                        (0, _) => Value::Null,
                        (1, false) => Value::Int(-((next() % 4) as i64)),
                        _ => Value::UInt(next() % 6),
                    };
                    let f = Value::Float(F64((next() % 5) as f64 - 2.0));
                    let mut row = vec![s, i, f];
                    if typed {
                        row.push(Value::DateTime((next() % 3) as i64 - 1));
                        row.push(match next() % 4 {
                            0 => Value::Null,
                            // Values that tie on their first 64 bits, and some that do not.
                            n => Value::Uuid((((n as u128) << 64) | (next() % 3) as u128).into()),
                        });
                        row.push(Value::DateTime64((next() % 5) as i64 - 2, 3));
                        row.push(Value::Date((next() % 3) as i32 - 1));
                        row.push(Value::Bool(next() % 2 == 0));
                    }
                    rows.push(PartRow {
                        seq: n / 3,
                        ts: 0,
                        diff: n as i64,
                        row,
                    });
                }
                let expected: Vec<i64> = {
                    let mut r: Vec<&PartRow> = rows.iter().collect();
                    r.sort_by(|a, b| part_order(&sort_key, a, b));
                    r.iter().map(|r| r.diff).collect()
                };
                let order = sort_order(&rows, &sort_key);
                let got: Vec<i64> = order.iter().map(|&i| rows[i].diff).collect();
                assert_eq!(got.len(), 2_000);
                assert_eq!(got, expected, "sort key {sort_key:?}");
                // A compaction's part, sorted from its built columns (typed) or its rows, is
                // the part written from the rows moved into the order: the same rows, in the
                // same order, with the same statistics.
                let names: Vec<String> = (0..8).map(|c| format!("c{c}")).collect();
                let by_columns = build_columns_by_first_kind(&mut rows.clone(), 8)
                    .unwrap()
                    .is_some();
                assert_eq!(by_columns, typed);
                let moved: Vec<PartRow> = order.iter().map(|&i| rows[i].clone()).collect();
                let (a, b) = (
                    encode(&names, &moved).unwrap(),
                    encode_sorted(&names, &mut rows.clone(), &sort_key).unwrap(),
                );
                assert_eq!(a.stats, b.stats);
                let read = |bytes: Bytes| {
                    let mut out = Vec::new();
                    decode_with_seq(bytes, &mut |seq, row, ts, diff| {
                        out.push((seq, row, ts, diff))
                    })
                    .unwrap();
                    out
                };
                assert_eq!(
                    read(a.bytes),
                    read(b.bytes),
                    "sort key {sort_key:?}, typed {typed}"
                );
            }
        }
    }

    /// A compaction frees each row's values as it builds the part's columns; a part whose
    /// column meets a value of another kind only at its last row, or whose sorting key is
    /// stored as bincode (an array), is written from its rows put back: every row reads back,
    /// in the part order, with the statistics of a part written from the sorted rows.
    #[test]
    fn a_part_whose_kinds_mix_late_or_whose_key_is_bincode_keeps_every_row() {
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
        let rows: Vec<PartRow> = (0..3_000).map(|n| row(n, n == 2_999)).collect();
        let typed: Vec<PartRow> = (0..3_000).map(|n| row(n, false)).collect();
        for (rows, sort_key) in [(&rows, vec![1]), (&rows, vec![0]), (&typed, vec![0, 1])] {
            let mut sorted = rows.clone();
            sorted.sort_by(|a, b| part_order(&sort_key, a, b));
            let expected = encode(&names, &sorted).unwrap();
            let got = encode_sorted(&names, &mut rows.clone(), &sort_key).unwrap();
            assert_eq!(got.stats, expected.stats, "sort key {sort_key:?}");
            let mut read = Vec::new();
            decode_with_seq(got.bytes, &mut |seq, row, ts, diff| {
                read.push((seq, row, ts, diff))
            })
            .unwrap();
            let want: Vec<_> = sorted
                .into_iter()
                .map(|r| (r.seq, r.row, r.ts, r.diff as isize))
                .collect();
            assert_eq!(read, want, "sort key {sort_key:?}");
        }
    }

    /// Integers of the sorting key (and log positions) are stored as deltas: the whole range
    /// of each integer kind, where neighbours' differences overflow, reads back exactly.
    #[test]
    fn sorting_key_integers_at_their_extremes_read_back() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(15);
        let ints = [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX - 1, i64::MAX];
        let rows: Vec<PartRow> = (0..3_000u64)
            .map(|n| {
                let int = ints[rng.random_range(0..ints.len())];
                PartRow {
                    // In log order (as compactions gather rows), over the whole range.
                    seq: n * (u64::MAX / 3_000),
                    ts: n,
                    diff: 1,
                    row: vec![
                        Value::Int(int),
                        Value::UInt(int as u64),
                        Value::Date([i32::MIN, -1, 0, i32::MAX][rng.random_range(0..4)]),
                        Value::DateTime(int),
                        Value::DateTime64(int, 6),
                        if n % 5 == 0 {
                            Value::Null
                        } else {
                            Value::Int(int)
                        },
                    ],
                }
            })
            .collect();
        let names: Vec<String> = (0..6).map(|c| format!("c{c}")).collect();
        for sort_key in [vec![0, 1], vec![1, 2, 3], vec![4, 5], vec![5]] {
            let part = encode_sorted(&names, &mut rows.clone(), &sort_key).unwrap();
            let meta = ParquetRecordBatchReaderBuilder::try_new(part.bytes.clone())
                .unwrap()
                .metadata()
                .clone();
            // Columns 0..3 are `_seq`, `_ts` and `_diff`.
            for c in sort_key.iter().map(|c| c + 3).chain([0]) {
                let chunk = meta.row_group(0).column(c);
                assert!(
                    chunk
                        .encodings()
                        .any(|e| e == Encoding::DELTA_BINARY_PACKED),
                    "column {c} of sort key {sort_key:?}"
                );
            }
            let mut read = Vec::new();
            decode_with_seq(part.bytes, &mut |seq, row, ts, diff| {
                read.push((seq, row, ts, diff as i64))
            })
            .unwrap();
            let expected: Vec<(u64, Row, Ts, i64)> = sort_order(&rows, &sort_key)
                .into_iter()
                .map(|i| (rows[i].seq, rows[i].row.clone(), rows[i].ts, rows[i].diff))
                .collect();
            assert_eq!(read, expected, "sort key {sort_key:?}");
        }
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
        let part = encode_sorted(&names, &mut rows.clone(), &[3]).unwrap();
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
        let mut read = Vec::new();
        decode_with_seq(part.bytes, &mut |seq, row, ts, diff| {
            read.push((seq, row, ts, diff as i64))
        })
        .unwrap();
        let expected: Vec<(u64, Row, Ts, i64)> = sort_order(&rows, &[3])
            .into_iter()
            .map(|i| (rows[i].seq, rows[i].row.clone(), rows[i].ts, rows[i].diff))
            .collect();
        assert_eq!(read, expected);
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

    /// A part's statistics read from its typed Arrow columns equal the smallest and largest
    /// values of its rows, as `Value` orders them, across chunks written one at a time.
    #[test]
    fn statistics_equal_the_rows_extremes() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let strings = ["", "a", "a\0", "zz", "US", "é"];
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
                maybe(Value::UInt(rng.random_range(0..1_000)), &mut rng),
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
            ];
            rows.push(PartRow {
                seq: n,
                ts: n,
                diff: 1,
                row,
            });
        }
        let names: Vec<String> = (0..7).map(|i| format!("c{i}")).collect();
        let kinds = column_kinds(&rows, names.len());
        let mut writer = PartWriter::new(&names, kinds, &[]).unwrap();
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
