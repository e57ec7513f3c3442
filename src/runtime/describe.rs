//! What `GET /v0/datasources` shows of each datasource.

use super::*;

/// What `GET /v0/datasources` shows of a datasource.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DatasourceInfo {
    /// The name.
    pub name: String,
    /// The columns.
    pub columns: Vec<ColumnInfo>,
    /// Rows stored.
    pub row_count: u64,
    /// Rows in its quarantine table.
    pub quarantine_rows: u64,
    /// How its rows are stored: parts, segments, bytes.
    pub storage: TableFigures,
}

/// A column as the API lists it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ColumnInfo {
    /// The name.
    pub name: String,
    /// The ClickHouse type.
    #[serde(rename = "type")]
    pub ty: String,
}

impl Runtime {
    /// Every datasource with its columns and row counts.
    pub fn describe_datasources(&self) -> Vec<DatasourceInfo> {
        self.project()
            .datasources
            .values()
            .map(|ds| DatasourceInfo {
                name: ds.name.clone(),
                columns: ds
                    .schema()
                    .iter()
                    .map(|c| ColumnInfo {
                        name: c.name.clone(),
                        ty: c.ty.name(),
                    })
                    .collect(),
                row_count: self.row_count(&ds.name).unwrap_or(0),
                quarantine_rows: self
                    .row_count(&format!("{}_quarantine", ds.name))
                    .unwrap_or(0),
                storage: self
                    .source(&ds.name)
                    .map(|s| s.log.figures())
                    .unwrap_or_default(),
            })
            .collect()
    }
}
