//! The ground floor of Petrel: values, rows, ClickHouse column types and schemas.
//!
//! Every other part of Petrel (datafiles, templates, SQL plans, the engine, ingestion and
//! serving) speaks in these types, so they are kept small, cheap to clone and totally ordered:
//! differential dataflow sorts and consolidates rows, and a row is a `Vec<Value>`.

mod column_type;
mod domain;
pub mod time;
mod value;
pub use value::write_json_string;

pub use column_type::{ColumnType, TypeError};
pub use domain::Domain;
pub use value::{same_bytes, Value, F64, U128};

/// One row of a datasource, a view or an intermediate collection: values in column order.
pub type Row = Vec<Value>;

/// Empties a row, keeping its allocation. Its cells are dropped one by one (the drop glue's
/// call and jump by kind, each) only when one of them owns memory; a row of numbers, times
/// and short strings is emptied by setting its length, after one read of each cell's kind.
#[inline]
pub fn clear_row(row: &mut Row) {
    if row.iter().any(Value::owns_memory) {
        row.clear();
    } else {
        // SAFETY: shortening a vector only forgets the values past its new length, and none
        // of these owns anything (their drop would do nothing), so nothing is lost.
        unsafe { row.set_len(0) }
    }
}

/// A named, typed column of a schema.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Column {
    /// The column's name as users write it in SQL.
    pub name: String,
    /// The column's ClickHouse type.
    pub ty: ColumnType,
}

/// The ordered columns of a datasource or of a query result.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Schema {
    /// The columns, in row order.
    pub columns: Vec<Column>,
}

impl Schema {
    /// Builds a schema from `(name, type)` pairs.
    pub fn new(columns: impl IntoIterator<Item = (String, ColumnType)>) -> Self {
        Schema {
            columns: columns
                .into_iter()
                .map(|(name, ty)| Column { name, ty })
                .collect(),
        }
    }

    /// The position of a column by name (exact match first, then case-insensitive).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.name == name)
            .or_else(|| {
                self.columns
                    .iter()
                    .position(|c| c.name.eq_ignore_ascii_case(name))
            })
    }

    /// Number of columns.
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    /// True when the schema has no columns.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }
}
