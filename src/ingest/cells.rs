//! Rows from cells: the fields of a CSV record (text) or of a Parquet row (typed values),
//! checked against a datasource's columns. A row with a cell that does not fit is rejected
//! whole, with every reason, for the quarantine table.

use petrel_value::{Column, Row, Value};

use super::{ColumnError, Rejected};

/// One field as it arrived.
pub enum Cell {
    /// Text to parse as the column's type (CSV); empty text takes the column's default.
    Text(String),
    /// A typed value to cast to the column's type (Parquet).
    Value(Value),
    /// The input has no such column: the column's default.
    Missing,
}

impl Cell {
    fn raw(&self) -> Option<String> {
        match self {
            Cell::Text(t) => Some(t.clone()),
            Cell::Value(Value::Null) | Cell::Missing => None,
            Cell::Value(v) => Some(v.to_text()),
        }
    }
}

/// The row `cells` (one per column, in schema order) make, or why it does not fit.
pub fn typed_row(columns: &[Column], cells: Vec<Cell>) -> Result<Row, Rejected> {
    let mut row = Vec::with_capacity(columns.len());
    let mut errors = Vec::new();
    for (c, cell) in columns.iter().zip(&cells) {
        let value = match cell {
            Cell::Text(t) => {
                c.ty.parse_text(t)
                    .or_else(|| t.is_empty().then(|| c.ty.default_value()))
            }
            Cell::Value(Value::Null) if !c.ty.is_nullable() => Some(c.ty.default_value()),
            Cell::Value(v) => c.ty.coerce(v),
            Cell::Missing => Some(c.ty.default_value()),
        };
        match value {
            Some(v) => row.push(v),
            None => {
                errors.push(ColumnError {
                    column: c.name.clone(),
                    message: format!(
                        "value '{}' on column '{}' is not {}",
                        cell.raw().unwrap_or_default(),
                        c.name,
                        c.ty.name()
                    ),
                });
                row.push(Value::Null);
            }
        }
    }
    if errors.is_empty() {
        Ok(row)
    } else {
        Err(Rejected {
            errors,
            raw: cells.iter().map(Cell::raw).collect(),
        })
    }
}
