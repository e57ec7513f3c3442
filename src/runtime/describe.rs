//! What `GET /v0/datasources` shows of each datasource.

use super::*;

/// What `GET /v0/datasources` shows of a datasource: Tinybird's fields (`id`, `name`,
/// `description`, `created_at`, `updated_at`, `engine`, `columns`, `schema`, `statistics`)
/// and Petrel's own (`row_count`, `quarantine_rows`, `storage`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct DatasourceInfo {
    /// A stable id (`t_…`).
    pub id: String,
    /// The name.
    pub name: String,
    /// `DESCRIPTION`.
    pub description: Option<String>,
    /// The datafile's modification time, `YYYY-MM-DD hh:mm:ss.ffffff`.
    pub created_at: String,
    /// The same (Petrel keeps no history of a datafile's versions).
    pub updated_at: String,
    /// The engine and its keys as written.
    pub engine: crate::project::EngineSummary,
    /// The columns.
    pub columns: Vec<ColumnInfo>,
    /// The columns again, under Tinybird's `schema.columns`.
    pub schema: SchemaInfo,
    /// Rows and bytes stored, as Tinybird reports them.
    pub statistics: StatisticsInfo,
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
    /// Where ingestion reads it in each JSON line (`$.a.b`), if not at its own name.
    pub jsonpath: Option<String>,
    /// True for `Nullable(..)` columns.
    pub nullable: bool,
}

/// Tinybird's `schema` object.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SchemaInfo {
    /// The columns.
    pub columns: Vec<ColumnInfo>,
}

/// Tinybird's `statistics` object.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StatisticsInfo {
    /// Rows stored.
    pub row_count: u64,
    /// Bytes stored (parts and log segments).
    pub bytes: u64,
}

impl Runtime {
    /// Every datasource with its columns and row counts.
    pub fn describe_datasources(&self) -> Vec<DatasourceInfo> {
        self.project()
            .datasources
            .values()
            .map(|ds| self.describe_datasource(ds))
            .collect()
    }

    /// One datasource, when the project has it.
    pub fn describe_datasource_named(&self, name: &str) -> Option<DatasourceInfo> {
        self.project()
            .datasources
            .get(name)
            .map(|ds| self.describe_datasource(ds))
    }

    /// What the API shows of `ds`.
    fn describe_datasource(&self, ds: &crate::project::Datasource) -> DatasourceInfo {
        let columns: Vec<ColumnInfo> = ds
            .columns
            .iter()
            .map(|c| ColumnInfo {
                name: c.column.name.clone(),
                ty: c.column.ty.name(),
                jsonpath: c.json_path.clone(),
                nullable: matches!(c.column.ty, petrel_value::ColumnType::Nullable(_)),
            })
            .collect();
        let storage: TableFigures = self
            .source(&ds.name)
            .map(|s| match &s.shares {
                Some(shares) => shares.figures(),
                None => s.log.figures(),
            })
            .unwrap_or_default();
        let row_count = self.row_count(&ds.name).unwrap_or(0);
        let stamp = crate::project::modified_stamp(&ds.file);
        DatasourceInfo {
            id: crate::project::resource_id(&ds.name),
            name: ds.name.clone(),
            description: ds.description.clone(),
            created_at: stamp.clone(),
            updated_at: stamp,
            engine: ds.engine.clone(),
            schema: SchemaInfo {
                columns: columns.clone(),
            },
            columns,
            statistics: StatisticsInfo {
                row_count,
                bytes: storage.part_bytes + storage.segment_bytes,
            },
            row_count,
            quarantine_rows: self
                .row_count(&format!("{}_quarantine", ds.name))
                .unwrap_or(0),
            storage,
        }
    }
}
