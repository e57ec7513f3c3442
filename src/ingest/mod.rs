//! Ingestion: bytes from the Events API, Kafka and files (CSV, NDJSON, Parquet) to validated
//! rows.
//! Rows that do not fit their datasource's schema go to its quarantine table.

mod cells;
pub mod kafka;
mod ndjson;
pub mod parquet;

pub use cells::{typed_row, Cell};
pub use ndjson::{ColumnError, Rejected, RowDecoder};

use petrel_value::{Column, ColumnType, Row, Value};

/// The columns of `NAME_quarantine`: the error columns, then every original column as
/// `Nullable(String)` holding the raw value (reference §4).
pub fn quarantine_columns(schema: &[Column]) -> Vec<Column> {
    let string_array = ColumnType::Array(Box::new(ColumnType::String));
    let mut columns = vec![
        Column {
            name: "c__error_column".into(),
            ty: string_array.clone(),
        },
        Column {
            name: "c__error".into(),
            ty: string_array,
        },
        Column {
            name: "c__import_id".into(),
            ty: ColumnType::String,
        },
        Column {
            name: "insertion_date".into(),
            ty: ColumnType::DateTime,
        },
    ];
    columns.extend(schema.iter().map(|c| Column {
        name: c.name.clone(),
        ty: ColumnType::Nullable(Box::new(ColumnType::String)),
    }));
    columns
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
