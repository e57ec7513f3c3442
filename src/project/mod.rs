//! A loaded project: every datafile parsed, column types resolved, templates parsed, and
//! each pipe planned once with its default parameters so that unsupported SQL is reported at
//! load time with its file and line.
//!
//! A pipe that fails to plan is kept out of service with its error (a failing pipe fails
//! alone); `petrel build` reports it as an error.

mod branches;
mod clock;
mod lift;
mod load;
mod plan;

use load::located;
use plan::RawCatalog;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use petrel_datafile::{Datafile, PipeKind, SqlMap, TokenScope};
use petrel_sql::{plan_query, Catalog, Expr, Plan, PlanNode, Query, SqlError, TableRef};
use petrel_template::{ParamDecl, ParamType, Params, Template, TemplateError};
use petrel_value::{Column, ColumnType, Value};

pub use clock::{RequestTime, TimePin};
pub use lift::{lift_keys, LiftedKey};

/// Failures of rendering or planning a pipe or query for a request.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    /// An unknown pipe, node or table.
    #[error("{0}")]
    NotFound(String),
    /// A template error (bad or missing parameter, syntax).
    #[error("{0}")]
    Template(String),
    /// A template's `error()`/`custom_error()`.
    #[error("{message}")]
    Custom {
        /// The HTTP status it asks for.
        status: u16,
        /// Its message.
        message: String,
    },
    /// SQL that does not plan.
    #[error("{0}")]
    Sql(String),
}

impl From<TemplateError> for ProjectError {
    fn from(e: TemplateError) -> ProjectError {
        match e {
            TemplateError::Custom { status, .. } => ProjectError::Custom {
                status,
                message: e.to_string(),
            },
            other => ProjectError::Template(other.to_string()),
        }
    }
}

/// How a datasource column gets a value when a row leaves it out.
#[derive(Clone, Debug, PartialEq)]
pub enum ColumnDefault {
    /// A constant.
    Value(Value),
    /// `now()`: the ingest time.
    Now,
}

/// A datasource column as ingestion reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnSpec {
    /// Name and type.
    pub column: Column,
    /// Where in each JSON line the value is (`$.a.b`); `None` reads the key named as the column.
    pub json_path: Option<String>,
    /// The value for rows that leave it out.
    pub default: Option<ColumnDefault>,
}

/// A datasource of the project.
#[derive(Clone, Debug)]
pub struct Datasource {
    /// Its name.
    pub name: String,
    /// Its columns.
    pub columns: Vec<ColumnSpec>,
    /// How queries read it, when that is not simply its rows: ReplacingMergeTree keeps the
    /// latest row per sorting key (FINAL, exactly), ENGINE_TTL keeps rows whose TTL is still
    /// ahead of the clock (a temporal filter). SQL over the datasource's own name.
    pub read_sql: Option<String>,
    /// Where its rows come from when it reads a Kafka topic.
    pub kafka: Option<KafkaSource>,
    /// `ENGINE_PARTITION_KEY` over a row: stored parts hold one partition each.
    pub partition_key: Option<Expr>,
    /// `ENGINE_TTL`'s expiry time over a row: storage drops rows once they expired.
    pub expiry: Option<Expr>,
    /// The file it came from.
    pub file: PathBuf,
    /// `DESCRIPTION`.
    pub description: Option<String>,
    /// The engine as the datafile declares it.
    pub engine: EngineSummary,
}

/// A datasource's `ENGINE` settings as written, for the API's description of it.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct EngineSummary {
    /// The engine (`MergeTree` when not written).
    pub engine: String,
    /// `ENGINE_SORTING_KEY`.
    pub sorting_key: Option<String>,
    /// `ENGINE_PARTITION_KEY`.
    pub partition_key: Option<String>,
    /// `ENGINE_TTL`.
    pub ttl: Option<String>,
}

/// A stable id for a resource named `name`, shaped as Tinybird's (`t_` and 32 hex digits):
/// clients that key resources by id keep working across restarts.
pub fn resource_id(name: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(name.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("t_{hex}")
}

/// A datafile's modification time as Tinybird writes times (`YYYY-MM-DD hh:mm:ss.ffffff`):
/// what the API reports as a resource's `created_at` and `updated_at`.
pub fn modified_stamp(file: &std::path::Path) -> String {
    let micros = std::fs::metadata(file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    Value::DateTime64(micros, 6).to_text()
}

/// A `.connection` file of `TYPE kafka`: how to reach the brokers.
#[derive(Clone, Debug, PartialEq)]
pub struct KafkaConnection {
    /// The connection's name (the file stem).
    pub name: String,
    /// `KAFKA_BOOTSTRAP_SERVERS`.
    pub bootstrap_servers: String,
    /// `KAFKA_SECURITY_PROTOCOL` (PLAINTEXT when absent, for local brokers).
    pub security_protocol: String,
    /// `KAFKA_SASL_MECHANISM`.
    pub sasl_mechanism: Option<String>,
    /// `KAFKA_KEY` (the SASL user).
    pub key: Option<String>,
    /// `KAFKA_SECRET` (the SASL password).
    pub secret: Option<String>,
    /// `KAFKA_SSL_CA_PEM`.
    pub ssl_ca_pem: Option<String>,
}

/// A datasource's Kafka settings.
#[derive(Clone, Debug, PartialEq)]
pub struct KafkaSource {
    /// `KAFKA_CONNECTION_NAME`.
    pub connection: String,
    /// `KAFKA_TOPIC`.
    pub topic: String,
    /// `KAFKA_GROUP_ID`: offsets are also committed to this group, for monitoring.
    pub group_id: String,
    /// `KAFKA_AUTO_OFFSET_RESET`: where to start without stored offsets (`earliest` or `latest`).
    pub auto_offset_reset: String,
}

/// A `TYPE sink` pipe writing to a Kafka topic.
#[derive(Clone, Debug, PartialEq)]
pub struct KafkaSink {
    /// `EXPORT_CONNECTION_NAME`.
    pub connection: String,
    /// `EXPORT_KAFKA_TOPIC`.
    pub topic: String,
    /// `EXPORT_KAFKA_ENVELOPE` (Petrel's extension): how changes are written.
    pub envelope: SinkEnvelope,
}

/// How a Kafka sink writes changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkEnvelope {
    /// `{"ts", "diff", "row"}` per changed row (the default).
    Changes,
    /// One message per changed key with the key's current row, or a tombstone (null value)
    /// when the key has no row any more: for compacted topics.
    Upsert,
    /// Debezium-style `{"before": row|null, "after": row|null, "ts"}` per changed key.
    Debezium,
}

impl Datasource {
    /// The columns as a schema.
    pub fn schema(&self) -> Vec<Column> {
        self.columns.iter().map(|c| c.column.clone()).collect()
    }
}

/// One node of a pipe.
#[derive(Clone, Debug)]
pub struct PipeNode {
    /// The node's name (later nodes read it as a table).
    pub name: String,
    /// Its SQL template.
    pub template: Template,
    /// Maps SQL lines to file lines.
    pub sql_map: SqlMap,
}

/// A pipe of the project.
#[derive(Clone, Debug)]
pub struct Pipe {
    /// Its name.
    pub name: String,
    /// `DESCRIPTION`.
    pub description: Option<String>,
    /// The nodes, in order.
    pub nodes: Vec<PipeNode>,
    /// The index of the endpoint node, when the pipe is published.
    pub endpoint: Option<usize>,
    /// Every typed parameter its templates declare.
    pub params: Vec<ParamDecl>,
    /// The error that keeps it out of service, if any.
    pub broken: Option<String>,
    /// Where a `TYPE sink` pipe writes its changes.
    pub sink: Option<KafkaSink>,
    /// Where a `TYPE copy` pipe appends its result, and when.
    pub copy: Option<CopyJob>,
    /// Set when it reads the clock outside temporal filters: its SQL is rendered with the
    /// request's time written in (see the `clock` module).
    pub time_pin: Option<TimePin>,
    /// The other pipes its templates mention: what it may read as tables.
    pub reads_pipes: Vec<String>,
    /// The file it came from.
    pub file: PathBuf,
    /// The plan made when the project was loaded (rendered with the parameters' defaults),
    /// with the rendered shape it is for: the first request with that shape uses it instead
    /// of planning the pipe again.
    pub checked_plan: Option<Arc<(String, Query)>>,
}

/// A `TYPE copy` pipe's job: run the pipe's query over the data as it is and append (or, with
/// `COPY_MODE replace`, swap in) the result into a datasource.
#[derive(Clone, Debug, PartialEq)]
pub struct CopyJob {
    /// `TARGET_DATASOURCE`.
    pub target: String,
    /// Minutes between runs from `COPY_SCHEDULE` (`*/N * * * *`, `@hourly`, `@daily`); `None`
    /// runs on demand only (`POST /v0/pipes/NAME/copy`).
    pub every_minutes: Option<u64>,
    /// True for `COPY_MODE replace`.
    pub replace: bool,
}

/// What `GET /v0/pipes` and the CLI show of a pipe.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PipeDescription {
    /// The name.
    pub name: String,
    /// The description.
    pub description: Option<String>,
    /// True when it is served as an endpoint.
    pub endpoint: bool,
    /// Its parameters.
    pub params: Vec<ParamDescription>,
    /// Why it is not served, if it is broken.
    pub error: Option<String>,
}

/// A parameter as users see it documented.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ParamDescription {
    /// The name.
    pub name: String,
    /// The template type (`String`, `Int32`, ..).
    #[serde(rename = "type")]
    pub ty: String,
    /// The default, as text.
    pub default: Option<String>,
    /// True when a request must give it.
    pub required: bool,
    /// `description=`.
    pub description: Option<String>,
}

impl Pipe {
    /// True when two versions of a pipe have the same nodes, SQL and endpoint.
    pub fn same_definition(&self, other: &Pipe) -> bool {
        self.endpoint == other.endpoint
            && self.broken == other.broken
            && self.nodes.len() == other.nodes.len()
            && self
                .nodes
                .iter()
                .zip(&other.nodes)
                .all(|(a, b)| a.name == b.name && a.template.source() == b.template.source())
    }

    /// True when the pipe is served as an endpoint (and is not broken).
    pub fn is_endpoint(&self) -> bool {
        self.endpoint.is_some() && self.broken.is_none()
    }

    /// The pipe as `GET /v0/pipes` lists it.
    pub fn describe(&self) -> PipeDescription {
        PipeDescription {
            name: self.name.clone(),
            description: self.description.clone(),
            endpoint: self.is_endpoint(),
            params: self
                .params
                .iter()
                .map(|p| ParamDescription {
                    name: p.name.clone(),
                    ty: p.ty.name(),
                    default: p.default.as_ref().map(Value::to_text),
                    required: p.required,
                    description: p.description.clone(),
                })
                .collect(),
            error: self.broken.clone(),
        }
    }
}

/// A resource-scoped permission a datafile `TOKEN` line grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grant {
    /// `TOKEN name READ` in a pipe.
    ReadPipe(String),
    /// `TOKEN name READ` in a datasource.
    ReadDatasource(String),
    /// `TOKEN name APPEND` in a datasource.
    AppendDatasource(String),
}

/// A pipe rendered for one request: the shape (rendered SQL of every node) and the typed
/// values of its placeholders.
#[derive(Clone, Debug)]
pub struct RenderedPipe {
    /// The rendered SQL of all nodes, joined: what plans are cached by.
    pub shape: String,
    /// Placeholder values.
    pub values: BTreeMap<String, Value>,
    /// Each node's rendered SQL.
    nodes: Vec<String>,
    /// Placeholder types.
    types: BTreeMap<String, ColumnType>,
    /// The request's parameters: pipes this one reads as tables are rendered with them.
    params: Params,
    /// The clock pin it was rendered with, and the time pinned: the same for the pipes it
    /// reads.
    pin: Option<TimePin>,
    at: RequestTime,
}

/// A loaded project.
#[derive(Clone, Debug, Default)]
pub struct Project {
    /// The project folder.
    pub root: PathBuf,
    /// Datasources by name.
    pub datasources: BTreeMap<String, Datasource>,
    /// Pipes by name.
    pub pipes: BTreeMap<String, Pipe>,
    /// `TOKEN` lines: token name and what it grants.
    pub tokens: BTreeMap<String, Vec<Grant>>,
    /// Target datasource of each `TYPE materialized` pipe → the pipes writing it (a pipe and
    /// its backfill, say). Reading the target reads the union of their maintained results
    /// (see `ProjectCatalog`).
    pub materialized: BTreeMap<String, Vec<String>>,
    /// Kafka connections by name.
    pub connections: BTreeMap<String, KafkaConnection>,
    /// Non-fatal findings, `file:line:column: message`.
    pub warnings: Vec<String>,
    /// True for a Tinybird Classic project: pipes without a `TYPE` publish their last node.
    pub classic: bool,
}

impl Project {
    /// The tokens datafiles declare, with their grants.
    pub fn declared_tokens(&self) -> Vec<(String, Vec<Grant>)> {
        self.tokens
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// A load error or warning as users of the server see it: file paths relative to the
    /// project folder, not the server's own paths.
    pub fn relative_message(&self, message: &str) -> String {
        let root = self.root.display().to_string();
        let root = root.trim_end_matches('/');
        match message.strip_prefix(root) {
            Some(rest) if !root.is_empty() => rest.trim_start_matches('/').to_string(),
            _ => message.to_string(),
        }
    }

    /// `fixtures/NAME.ndjson` files whose NAME is a datasource.
    pub fn fixtures(&self) -> Vec<(String, PathBuf)> {
        self.datasources
            .keys()
            .map(|n| {
                (
                    n.clone(),
                    self.root.join("fixtures").join(format!("{n}.ndjson")),
                )
            })
            .filter(|(_, p)| p.is_file())
            .collect()
    }
}

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

impl KafkaConnection {
    /// The client settings of this connection, shared by consumers and producers.
    pub fn client_config(&self) -> rdkafka::ClientConfig {
        let mut config = rdkafka::ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        config.set(
            "security.protocol",
            self.security_protocol.to_ascii_lowercase(),
        );
        if let Some(m) = &self.sasl_mechanism {
            config.set("sasl.mechanisms", m);
        }
        if let Some(k) = &self.key {
            config.set("sasl.username", k);
        }
        if let Some(s) = &self.secret {
            config.set("sasl.password", s);
        }
        if let Some(pem) = &self.ssl_ca_pem {
            config.set("ssl.ca.pem", pem);
        }
        config
    }
}
