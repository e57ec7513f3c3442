//! Parquet bodies (`POST /v0/datasources?mode=append&format=parquet`): each row's columns,
//! matched to the datasource's by name, as typed cells that [`super::typed_row`] casts to
//! the column types. Datasource columns the file lacks take their defaults.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Date64Type, Decimal128Type, Float32Type, Float64Type, Int16Type, Int32Type,
    Int64Type, Int8Type, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrayRef};
use arrow_schema::{DataType, TimeUnit};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use petrel_value::{Column, Value, F64};

use super::Cell;

/// The cells of every row of a Parquet file, one per column of `columns`, or why the file
/// cannot be read.
pub fn read_cells(body: Bytes, columns: &[Column]) -> Result<Vec<Vec<Cell>>, String> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(body)
        .map_err(|e| format!("the body is not a Parquet file: {e}"))?;
    let reader = builder
        .build()
        .map_err(|e| format!("the Parquet file cannot be read: {e}"))?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| format!("the Parquet file cannot be read: {e}"))?;
        let schema = batch.schema();
        let arrays: Vec<Option<&ArrayRef>> = columns
            .iter()
            .map(|c| schema.index_of(&c.name).ok().map(|i| batch.column(i)))
            .collect();
        for (c, a) in columns.iter().zip(&arrays) {
            if let Some(a) = a.filter(|a| !supported(a.data_type())) {
                return Err(format!(
                    "column '{}' has the Parquet type {}, which Petrel cannot read",
                    c.name,
                    a.data_type()
                ));
            }
        }
        for i in 0..batch.num_rows() {
            rows.push(
                arrays
                    .iter()
                    .map(|a| match a {
                        Some(a) => Cell::Value(value_at(a, i)),
                        None => Cell::Missing,
                    })
                    .collect(),
            );
        }
    }
    Ok(rows)
}

/// True for the Arrow types [`value_at`] reads.
fn supported(t: &DataType) -> bool {
    use DataType::*;
    matches!(
        t,
        Boolean
            | Int8
            | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | UInt64
            | Float32
            | Float64
            | Utf8
            | LargeUtf8
            | Utf8View
            | Binary
            | FixedSizeBinary(16)
            | Date32
            | Date64
            | Timestamp(_, _)
            | Decimal128(_, _)
    ) || match t {
        List(f) | LargeList(f) => supported(f.data_type()),
        Struct(fields) => fields.iter().all(|f| supported(f.data_type())),
        Map(entries, _) => supported(entries.data_type()),
        _ => false,
    }
}

/// The value of row `i` of an Arrow array of a [`supported`] type, in its natural Petrel type.
fn value_at(a: &ArrayRef, i: usize) -> Value {
    if a.is_null(i) {
        return Value::Null;
    }
    match a.data_type() {
        DataType::Boolean => Value::Bool(a.as_boolean().value(i)),
        DataType::Int8 => Value::Int(a.as_primitive::<Int8Type>().value(i) as i64),
        DataType::Int16 => Value::Int(a.as_primitive::<Int16Type>().value(i) as i64),
        DataType::Int32 => Value::Int(a.as_primitive::<Int32Type>().value(i) as i64),
        DataType::Int64 => Value::Int(a.as_primitive::<Int64Type>().value(i)),
        DataType::UInt8 => Value::UInt(a.as_primitive::<UInt8Type>().value(i) as u64),
        DataType::UInt16 => Value::UInt(a.as_primitive::<UInt16Type>().value(i) as u64),
        DataType::UInt32 => Value::UInt(a.as_primitive::<UInt32Type>().value(i) as u64),
        DataType::UInt64 => Value::UInt(a.as_primitive::<UInt64Type>().value(i)),
        DataType::Float32 => Value::Float(F64(a.as_primitive::<Float32Type>().value(i) as f64)),
        DataType::Float64 => Value::Float(F64(a.as_primitive::<Float64Type>().value(i))),
        DataType::Utf8 => Value::str(a.as_string::<i32>().value(i)),
        DataType::LargeUtf8 => Value::str(a.as_string::<i64>().value(i)),
        DataType::Utf8View => Value::str(a.as_string_view().value(i)),
        DataType::Binary => Value::str(&String::from_utf8_lossy(a.as_binary::<i32>().value(i))),
        DataType::FixedSizeBinary(16) => {
            let mut b = [0u8; 16];
            b.copy_from_slice(a.as_fixed_size_binary().value(i));
            Value::Uuid(u128::from_be_bytes(b).into())
        }
        DataType::Date32 => Value::Date(a.as_primitive::<Date32Type>().value(i)),
        DataType::Date64 => Value::DateTime64(a.as_primitive::<Date64Type>().value(i), 3),
        DataType::Timestamp(unit, _) => match unit {
            TimeUnit::Second => Value::DateTime(a.as_primitive::<TimestampSecondType>().value(i)),
            TimeUnit::Millisecond => {
                Value::DateTime64(a.as_primitive::<TimestampMillisecondType>().value(i), 3)
            }
            TimeUnit::Microsecond => {
                Value::DateTime64(a.as_primitive::<TimestampMicrosecondType>().value(i), 6)
            }
            TimeUnit::Nanosecond => {
                Value::DateTime64(a.as_primitive::<TimestampNanosecondType>().value(i), 9)
            }
        },
        DataType::Decimal128(_, scale) => Value::Float(F64(a
            .as_primitive::<Decimal128Type>()
            .value(i) as f64
            / 10f64.powi(*scale as i32))),
        // Nested types, as ClickHouse writes Array, Tuple and Map columns.
        DataType::List(_) => {
            let items = a.as_list::<i32>().value(i);
            Value::Array((0..items.len()).map(|j| value_at(&items, j)).collect())
        }
        DataType::LargeList(_) => {
            let items = a.as_list::<i64>().value(i);
            Value::Array((0..items.len()).map(|j| value_at(&items, j)).collect())
        }
        DataType::Struct(_) => Value::Tuple(
            a.as_struct()
                .columns()
                .iter()
                .map(|c| value_at(c, i))
                .collect(),
        ),
        DataType::Map(_, _) => {
            let entries = a.as_map().value(i);
            let (keys, values) = (entries.column(0), entries.column(1));
            Value::Map(
                (0..entries.len())
                    .map(|j| (value_at(keys, j), value_at(values, j)))
                    .collect(),
            )
        }
        _ => Value::Null,
    }
}
