//! A loaded project: every datafile parsed, column types resolved, templates parsed, and
//! each pipe planned once with its default parameters so that unsupported SQL is reported at
//! load time with its file and line.
//!
//! A pipe that fails to plan is kept out of service with its error (a failing pipe fails
//! alone); `petrel build` reports it as an error.

mod lift;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use petrel_datafile::{Datafile, PipeKind, SqlMap, TokenScope};
use petrel_sql::{plan_query, Catalog, Expr, Plan, PlanNode, Query, SqlError, TableRef};
use petrel_template::{ParamDecl, ParamType, Params, Template, TemplateError};
use petrel_value::{Column, ColumnType, Value};

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
    /// The columns of `ENGINE_SORTING_KEY` that are plain columns, as indices: stored parts
    /// are sorted by them.
    pub sort_key: Vec<usize>,
    /// `ENGINE_PARTITION_KEY` over a row: stored parts hold one partition each.
    pub partition_key: Option<Expr>,
    /// `ENGINE_TTL`'s expiry time over a row: storage drops rows once they expired.
    pub expiry: Option<Expr>,
    /// The file it came from.
    pub file: PathBuf,
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

/// A datasource's Kafka settings, when it names a topic.
fn kafka_source(ds: &petrel_datafile::Datasource) -> Option<KafkaSource> {
    let get = |k: &str| ds.kafka.get(k).map(|s| s.value.clone());
    Some(KafkaSource {
        connection: get("KAFKA_CONNECTION_NAME")?,
        topic: get("KAFKA_TOPIC")?,
        group_id: get("KAFKA_GROUP_ID").unwrap_or_else(|| format!("petrel-{}", ds.name)),
        auto_offset_reset: get("KAFKA_AUTO_OFFSET_RESET").unwrap_or_else(|| "latest".into()),
    })
}

/// `expr` planned over one row of `ds` (no read rules): a partition key or TTL expression.
fn row_expr(ds: &Datasource, expr: &str) -> Result<Expr, String> {
    let sql = format!("SELECT {expr} FROM `{}`", ds.name);
    let query = plan_query(&sql, &RawCatalog { ds }).map_err(|e| e.to_string())?;
    match query.plan.node {
        PlanNode::Project { input, mut exprs }
            if exprs.len() == 1 && matches!(input.node, PlanNode::Scan { .. }) =>
        {
            Ok(exprs.remove(0))
        }
        _ => Err(format!("'{expr}' is not an expression over the row")),
    }
}

/// The indices of the plain columns named in `ENGINE_SORTING_KEY` (`a, b`, `(a, b)` or
/// `tuple()`); expressions are skipped.
fn sort_key_columns(ds: &petrel_datafile::Datasource, columns: &[ColumnSpec]) -> Vec<usize> {
    let Some(key) = ds.engine.sorting_key.as_ref() else {
        return Vec::new();
    };
    let text = key.value.trim();
    let text = text
        .strip_prefix("tuple(")
        .or_else(|| text.strip_prefix('('))
        .and_then(|t| t.strip_suffix(')'))
        .unwrap_or(text);
    text.split(',')
        .filter_map(|name| {
            let name = name.trim().trim_matches('`');
            columns.iter().position(|c| c.column.name == name)
        })
        .collect()
}

/// The SQL a datasource is read through (see [`Datasource::read_sql`]).
fn engine_read_sql(ds: &petrel_datafile::Datasource) -> Option<String> {
    use petrel_datafile::Engine;
    let engine = &ds.engine;
    let name = format!("`{}`", ds.name);
    let mut sql = None;
    if engine.engine == Engine::ReplacingMergeTree {
        let key = engine.sorting_key.as_ref()?.value.clone();
        let order = match &engine.ver {
            Some(v) => format!("`{}` DESC", v.value),
            None => "1".to_string(),
        };
        let mut q =
            format!("SELECT * FROM (SELECT * FROM {name} ORDER BY {order} LIMIT 1 BY {key})");
        if let Some(d) = &engine.is_deleted {
            q.push_str(&format!(" WHERE `{}` = 0", d.value));
        }
        sql = Some(q);
    }
    if let Some(ttl) = engine.ttl.as_ref().filter(|t| !t.value.trim().is_empty()) {
        // `expr + INTERVAL n unit [DELETE]`: the row lives while that is after now().
        let expr = ttl
            .value
            .trim()
            .trim_end_matches("DELETE")
            .trim_end_matches("delete")
            .trim();
        let inner = sql
            .map(|q| format!("({q})"))
            .unwrap_or_else(|| name.clone());
        sql = Some(format!("SELECT * FROM {inner} WHERE ({expr}) > now()"));
    }
    sql
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

/// Minutes between runs of a `COPY_SCHEDULE`, for the forms Petrel runs by itself.
fn schedule_minutes(schedule: &str) -> Option<u64> {
    match schedule.trim() {
        "@hourly" | "0 * * * *" => Some(60),
        "@daily" | "0 0 * * *" => Some(24 * 60),
        "* * * * *" => Some(1),
        other => {
            let (first, rest) = other.split_once(' ')?;
            let n = first.strip_prefix("*/")?.parse().ok()?;
            (rest.split_whitespace().all(|f| f == "*") && n > 0).then_some(n)
        }
    }
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
    /// Target datasource of each `TYPE materialized` pipe → the pipe. Reading the target
    /// reads the pipe's maintained result (see `ProjectCatalog`).
    pub materialized: BTreeMap<String, String>,
    /// Kafka connections by name.
    pub connections: BTreeMap<String, KafkaConnection>,
    /// Non-fatal findings, `file:line:column: message`.
    pub warnings: Vec<String>,
}

/// Every datafile under `dir`, recursively, skipping hidden folders.
fn datafiles(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let path = e.path();
        let hidden = e.file_name().to_string_lossy().starts_with('.');
        if path.is_dir() && !hidden {
            datafiles(&path, out)?;
        } else if matches!(
            path.extension().and_then(|x| x.to_str()),
            Some("datasource" | "pipe" | "connection")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

fn located(file: &Path, line: usize, column: usize, message: impl std::fmt::Display) -> String {
    format!("{}:{}:{}: {}", file.display(), line, column, message)
}

/// Parses a column's `DEFAULT` text.
fn column_default(ty: &ColumnType, text: &str) -> Option<ColumnDefault> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("now()") || t.eq_ignore_ascii_case("now64()") {
        return Some(ColumnDefault::Now);
    }
    let unquoted = t
        .strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
        .unwrap_or(t);
    ty.parse_text(unquoted).map(ColumnDefault::Value)
}

/// Values to render a template with when checking it at load time: the defaults, and a
/// placeholder for each required parameter (as Tinybird's build check does).
fn check_params(decls: &[ParamDecl]) -> Params {
    let mut p = Params::new();
    for d in decls.iter().filter(|d| d.required) {
        let v = match &d.ty {
            ParamType::String => "__no_value__",
            ParamType::Date => "2019-01-01",
            ParamType::DateTime | ParamType::DateTime64 => "2019-01-01 00:00:00",
            ParamType::Json => "{}",
            _ => "0",
        };
        p.insert(d.name.clone(), v);
    }
    p
}

impl Project {
    /// Loads every datafile under `dir`. Errors (unparsable files, unknown types, pipes whose
    /// SQL cannot be planned) come back together, each `file:line:column: message`; the
    /// project is returned alongside when it can still run without the broken pipes.
    pub fn load_with_errors(dir: &Path) -> (Project, Vec<String>) {
        let mut project = Project {
            root: dir.to_path_buf(),
            ..Project::default()
        };
        let mut errors = Vec::new();
        let mut files = Vec::new();
        if let Err(e) = datafiles(dir, &mut files) {
            errors.push(format!(
                "{}: cannot read the project folder: {e}",
                dir.display()
            ));
            return (project, errors);
        }
        // Secrets: the environment first, then the project's `.env.local` and `.env`.
        let mut dotenv: BTreeMap<String, String> = BTreeMap::new();
        for file in [".env", ".env.local"] {
            if let Ok(text) = std::fs::read_to_string(dir.join(file)) {
                for line in text.lines() {
                    let line = line.trim();
                    if line.starts_with('#') {
                        continue;
                    }
                    if let Some((k, v)) = line.split_once('=') {
                        let v = v.trim().trim_matches('"').trim_matches('\'');
                        dotenv.insert(k.trim().to_string(), v.to_string());
                    }
                }
            }
        }
        let env = |name: &str| {
            std::env::var(name)
                .ok()
                .or_else(|| dotenv.get(name).cloned())
        };
        let mut parsed_pipes = Vec::new();
        for path in &files {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(format!("{}: cannot read: {e}", path.display()));
                    continue;
                }
            };
            // Pipes use tb_secret() in their templates; other files are rendered first.
            let is_pipe = path.extension().is_some_and(|x| x == "pipe");
            let rendered = if is_pipe {
                Ok(text)
            } else {
                petrel_datafile::render_secrets(&text, &env)
            };
            let text = match rendered {
                Ok(t) => t,
                Err(e) => {
                    errors.push(located(path, e.line, e.column, &e.message));
                    continue;
                }
            };
            match petrel_datafile::parse_file_with_env(path, &text, &env) {
                Err(es) => errors.extend(
                    es.iter()
                        .map(|e| located(path, e.line, e.column, &e.message)),
                ),
                Ok(Datafile::Datasource(ds)) => project.add_datasource(path, *ds, &mut errors),
                Ok(Datafile::Pipe(pipe)) => parsed_pipes.push((path.clone(), *pipe)),
                Ok(Datafile::Connection(c)) => project.add_connection(path, *c),
            }
        }
        for (path, pipe) in parsed_pipes {
            project.add_pipe(&path, pipe, &mut errors);
        }
        project.check_pipes(&mut errors);
        (project, errors)
    }

    /// Loads a project, failing on any error.
    pub fn load(dir: &Path) -> Result<Project, Vec<String>> {
        let (project, errors) = Project::load_with_errors(dir);
        if errors.is_empty() {
            Ok(project)
        } else {
            Err(errors)
        }
    }

    fn add_datasource(
        &mut self,
        path: &Path,
        ds: petrel_datafile::Datasource,
        errors: &mut Vec<String>,
    ) {
        for w in &ds.warnings {
            self.warnings
                .push(located(path, w.loc.line, w.loc.column, &w.message));
        }
        let mut columns = Vec::new();
        for c in &ds.columns {
            let Some(type_text) = &c.type_text else {
                errors.push(located(
                    path,
                    c.loc.line,
                    c.loc.column,
                    format!("column '{}' needs a type", c.name),
                ));
                continue;
            };
            let ty = match ColumnType::parse(type_text) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(located(path, c.loc.line, c.loc.column, e));
                    continue;
                }
            };
            let default = match &c.default {
                None => None,
                Some(text) => {
                    let d = column_default(&ty, text);
                    if d.is_none() {
                        self.warnings.push(located(
                            path,
                            c.loc.line,
                            c.loc.column,
                            format!("DEFAULT {text} is not supported yet: missing values get the type's default"),
                        ));
                    }
                    d
                }
            };
            columns.push(ColumnSpec {
                column: Column {
                    name: c.name.clone(),
                    ty: ty.stored(),
                },
                json_path: c.json_path.clone(),
                default,
            });
        }
        let engine = &ds.engine;
        if let Some(loc) = engine.loc {
            let name = format!("{:?}", engine.engine);
            // Aggregating and Summing targets of materialized pipes are exact: the view is
            // maintained whole and -Merge reads its states.
            if !matches!(
                name.as_str(),
                "MergeTree" | "AggregatingMergeTree" | "SummingMergeTree" | "ReplacingMergeTree"
            ) {
                self.warnings.push(located(
                    path,
                    loc.line,
                    loc.column,
                    format!("ENGINE {name} is maintained as MergeTree for now: rows are neither replaced nor merged"),
                ));
            }
        }
        // The datasource before its read and storage rules, to plan those over.
        let probe = Datasource {
            name: ds.name.clone(),
            columns,
            read_sql: None,
            kafka: None,
            sort_key: Vec::new(),
            partition_key: None,
            expiry: None,
            file: path.to_path_buf(),
        };
        let read_sql = engine_read_sql(&ds).and_then(|sql| {
            match plan_query(&sql, &RawCatalog { ds: &probe }) {
                Ok(_) => Some(sql),
                Err(e) => {
                    let loc = engine.loc.unwrap_or(petrel_datafile::Loc::new(1, 1));
                    self.warnings.push(located(
                        path,
                        loc.line,
                        loc.column,
                        format!("the engine's replacing/TTL rules are not applied: {e}"),
                    ));
                    None
                }
            }
        });
        let kafka = kafka_source(&ds);
        let sort_key = sort_key_columns(&ds, &probe.columns);
        let mut storage_rule = |what: &str, setting: Option<&petrel_datafile::Setting>| {
            let setting =
                setting.filter(|s| !s.value.trim().is_empty() && s.value.trim() != "tuple()")?;
            let text = setting.value.trim();
            let text = text
                .strip_suffix("DELETE")
                .or_else(|| text.strip_suffix("delete"))
                .unwrap_or(text);
            match row_expr(&probe, text) {
                Ok(e) => Some(e),
                Err(e) => {
                    let loc = setting.loc;
                    self.warnings.push(located(
                        path,
                        loc.line,
                        loc.column,
                        format!("{what} is not applied to stored parts: {e}"),
                    ));
                    None
                }
            }
        };
        let partition_key = storage_rule("ENGINE_PARTITION_KEY", ds.engine.partition_key.as_ref());
        let expiry = storage_rule("ENGINE_TTL", ds.engine.ttl.as_ref());
        for t in &ds.tokens {
            let grant = match t.scope {
                TokenScope::Append => Grant::AppendDatasource(ds.name.clone()),
                _ => Grant::ReadDatasource(ds.name.clone()),
            };
            self.tokens.entry(t.name.clone()).or_default().push(grant);
        }
        self.datasources.insert(
            ds.name.clone(),
            Datasource {
                read_sql,
                kafka,
                sort_key,
                partition_key,
                expiry,
                ..probe
            },
        );
    }

    fn add_connection(&mut self, path: &Path, c: petrel_datafile::Connection) {
        for w in &c.warnings {
            self.warnings
                .push(located(path, w.loc.line, w.loc.column, &w.message));
        }
        if !format!("{:?}", c.kind).eq_ignore_ascii_case("kafka") {
            self.warnings.push(located(
                path,
                c.kind_loc.line,
                c.kind_loc.column,
                "only Kafka connections are used; this one is kept but not used",
            ));
            return;
        }
        let Some(servers) = c.kafka_bootstrap_servers() else {
            self.warnings.push(located(
                path,
                c.kind_loc.line,
                c.kind_loc.column,
                "KAFKA_BOOTSTRAP_SERVERS is missing",
            ));
            return;
        };
        self.connections.insert(
            c.name.clone(),
            KafkaConnection {
                name: c.name.clone(),
                bootstrap_servers: servers.to_string(),
                security_protocol: c
                    .kafka_security_protocol()
                    .unwrap_or("PLAINTEXT")
                    .to_string(),
                sasl_mechanism: c.kafka_sasl_mechanism().map(str::to_string),
                key: c.kafka_key().map(str::to_string),
                secret: c.kafka_secret().map(str::to_string),
                ssl_ca_pem: c.kafka_ssl_ca_pem().map(str::to_string),
            },
        );
    }

    fn add_pipe(&mut self, path: &Path, pipe: petrel_datafile::Pipe, errors: &mut Vec<String>) {
        for w in &pipe.warnings {
            self.warnings
                .push(located(path, w.loc.line, w.loc.column, &w.message));
        }
        let mut nodes = Vec::new();
        let mut params: Vec<ParamDecl> = Vec::new();
        let mut broken = None;
        for n in &pipe.nodes {
            match Template::parse(&n.sql) {
                Ok(template) => {
                    for d in template.declared_params() {
                        if !params.iter().any(|p| p.name == d.name) {
                            params.push(d);
                        }
                    }
                    nodes.push(PipeNode {
                        name: n.name.clone(),
                        template,
                        sql_map: n.sql_map.clone(),
                    });
                }
                Err(e) => {
                    let line = match &e {
                        TemplateError::Syntax { line, .. }
                        | TemplateError::UnknownFunction { line, .. }
                        | TemplateError::Eval { line, .. } => *line,
                        _ => 1,
                    };
                    let loc = n.sql_map.file_loc(line, 1);
                    let msg = located(path, loc.line, loc.column, &e);
                    errors.push(msg.clone());
                    broken = Some(msg);
                }
            }
        }
        let mut sink = None;
        let mut copy = None;
        let endpoint = match &pipe.kind {
            PipeKind::Endpoint { node } => nodes.iter().position(|n| &n.name == node),
            PipeKind::Standard => None,
            PipeKind::Materialized { datasource, .. } => {
                self.materialized
                    .insert(datasource.clone(), pipe.name.clone());
                None
            }
            PipeKind::Sink {
                connection,
                target: petrel_datafile::SinkTarget::Kafka { topic },
                ..
            } => {
                let node = pipe
                    .nodes
                    .iter()
                    .find(|n| n.settings.contains_key("EXPORT_KAFKA_ENVELOPE"));
                let envelope = match node.and_then(|n| n.setting("EXPORT_KAFKA_ENVELOPE")) {
                    None | Some("changes") => SinkEnvelope::Changes,
                    Some("upsert") => SinkEnvelope::Upsert,
                    Some("debezium") => SinkEnvelope::Debezium,
                    Some(other) => {
                        let loc = node
                            .and_then(|n| n.settings.get("EXPORT_KAFKA_ENVELOPE"))
                            .map(|s| s.loc)
                            .unwrap_or(petrel_datafile::Loc::new(1, 1));
                        errors.push(located(
                            path,
                            loc.line,
                            loc.column,
                            format!("EXPORT_KAFKA_ENVELOPE must be changes, upsert or debezium, not '{other}'"),
                        ));
                        SinkEnvelope::Changes
                    }
                };
                sink = Some(KafkaSink {
                    connection: connection.clone(),
                    topic: topic.clone(),
                    envelope,
                });
                None
            }
            PipeKind::Copy {
                target_datasource,
                schedule,
                mode,
                ..
            } => {
                let schedule = schedule.as_deref().filter(|s| s.trim() != "@on-demand");
                let every_minutes = schedule.and_then(schedule_minutes);
                if let (Some(s), None) = (schedule, every_minutes) {
                    self.warnings.push(located(
                        path,
                        1,
                        1,
                        format!("COPY_SCHEDULE '{s}' is not run by Petrel yet (use */N * * * *, @hourly or @daily): the copy runs on demand only"),
                    ));
                }
                copy = Some(CopyJob {
                    target: target_datasource.clone(),
                    every_minutes,
                    replace: *mode == petrel_datafile::CopyMode::Replace,
                });
                None
            }
            other => {
                let what = match other {
                    PipeKind::Sink { .. } => "TYPE sink to object storage",
                    _ => "TYPE stream",
                };
                self.warnings
                    .push(located(path, 1, 1, format!("{what} pipes are not run yet")));
                None
            }
        };
        for t in &pipe.tokens {
            self.tokens
                .entry(t.name.clone())
                .or_default()
                .push(Grant::ReadPipe(pipe.name.clone()));
        }
        self.pipes.insert(
            pipe.name.clone(),
            Pipe {
                name: pipe.name.clone(),
                description: pipe.description.clone(),
                nodes,
                endpoint,
                params,
                broken,
                sink,
                copy,
                file: path.to_path_buf(),
                checked_plan: None,
            },
        );
    }

    /// Plans every endpoint with its defaults (or placeholders for required parameters).
    fn check_pipes(&mut self, errors: &mut Vec<String>) {
        let names: Vec<String> = self
            .pipes
            .values()
            .filter(|p| (p.endpoint.is_some() || p.sink.is_some()) && p.broken.is_none())
            .map(|p| p.name.clone())
            .collect();
        // Materialized pipes first: endpoints read their targets.
        let mut names: Vec<String> = self.materialized.values().cloned().chain(names).collect();
        names.dedup();
        for name in names {
            let params = check_params(&self.pipes[&name].params);
            let outcome = self
                .render_with(&name, &params)
                .and_then(|r| Ok((self.plan_rendered(&name, &r)?, r.shape)));
            if let Ok((query, shape)) = &outcome {
                if let Some(p) = self.pipes.get_mut(&name) {
                    p.checked_plan = Some(Arc::new((shape.clone(), query.clone())));
                }
            }
            if let Err(e) = outcome {
                let file = self.pipes[&name].file.display().to_string();
                let msg = match e {
                    ProjectError::Custom { .. } => continue,
                    ProjectError::Sql(m)
                    | ProjectError::Template(m)
                    | ProjectError::NotFound(m) => {
                        if m.starts_with(&file) {
                            m
                        } else {
                            format!("{file}: {m}")
                        }
                    }
                };
                errors.push(msg.clone());
                if let Some(p) = self.pipes.get_mut(&name) {
                    p.broken = Some(msg);
                }
            }
        }
    }

    /// The tokens datafiles declare, with their grants.
    pub fn declared_tokens(&self) -> Vec<(String, Vec<Grant>)> {
        self.tokens
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
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

    /// Renders every node of a pipe for a request.
    pub fn render_pipe(
        &self,
        pipe: &str,
        params: &BTreeMap<String, String>,
    ) -> Result<RenderedPipe, ProjectError> {
        self.render_with(pipe, &Params::from(params.clone()))
    }

    fn render_with(&self, pipe: &str, params: &Params) -> Result<RenderedPipe, ProjectError> {
        let p = self
            .pipes
            .get(pipe)
            .ok_or_else(|| ProjectError::NotFound(format!("The pipe '{pipe}' does not exist")))?;
        let mut out = RenderedPipe {
            shape: String::new(),
            values: BTreeMap::new(),
            nodes: Vec::new(),
            types: BTreeMap::new(),
        };
        let last = p.endpoint.unwrap_or(p.nodes.len().saturating_sub(1));
        for node in p.nodes.iter().take(last + 1) {
            let r = node.template.render(params)?;
            out.shape.push_str(&r.sql);
            out.shape.push('\u{0}');
            for (k, v) in r.values {
                out.values.insert(k, v);
            }
            for (k, t) in r.types {
                if let Some(ct) = t.column_type() {
                    out.types.insert(k, ct);
                }
            }
            out.nodes.push(r.sql);
        }
        Ok(out)
    }

    /// The plan of a rendered pipe: the one made at load when the shapes match, else planned
    /// now (see [`Project::plan_rendered`]).
    pub fn plan_for(&self, pipe: &str, rendered: &RenderedPipe) -> Result<Query, ProjectError> {
        if let Some(checked) = self.pipes.get(pipe).and_then(|p| p.checked_plan.as_ref()) {
            if checked.0 == rendered.shape {
                return Ok(checked.1.clone());
            }
        }
        self.plan_rendered(pipe, rendered)
    }

    /// Plans a rendered pipe: each node in turn, later nodes reading earlier ones.
    pub fn plan_rendered(
        &self,
        pipe: &str,
        rendered: &RenderedPipe,
    ) -> Result<Query, ProjectError> {
        let p = self
            .pipes
            .get(pipe)
            .ok_or_else(|| ProjectError::NotFound(format!("The pipe '{pipe}' does not exist")))?;
        let mut catalog = ProjectCatalog {
            project: self,
            nodes: HashMap::new(),
            types: &rendered.types,
            named: Default::default(),
        };
        let mut last = None;
        for (node, sql) in p.nodes.iter().zip(&rendered.nodes) {
            let query =
                plan_query(sql, &catalog).map_err(|e| sql_error(&p.file, &node.sql_map, &e))?;
            let as_table = query
                .clone()
                .bind_limits(&rendered.values)
                .map_err(|e| ProjectError::Sql(e.to_string()))?
                .into_plan();
            catalog.nodes.insert(node.name.clone(), as_table);
            last = Some(query);
        }
        last.ok_or_else(|| ProjectError::Sql(format!("pipe '{pipe}' has no nodes")))
    }

    /// Plans an ad-hoc query (`/v0/sql`, `petrel sql`) over datasources and endpoint pipes.
    /// A query starting with `%` is a template over `params`. Also returns the datasources,
    /// quarantine tables and pipes the query names (what a token must be allowed to read).
    pub fn plan_sql(
        &self,
        sql: &str,
        params: &BTreeMap<String, String>,
    ) -> Result<PlannedSql, ProjectError> {
        let template = Template::parse(sql)?;
        let rendered = template.render(&Params::from(params.clone()))?;
        let types = rendered
            .types
            .iter()
            .filter_map(|(k, t)| t.column_type().map(|c| (k.clone(), c)))
            .collect();
        let catalog = ProjectCatalog {
            project: self,
            nodes: HashMap::new(),
            types: &types,
            named: Default::default(),
        };
        let query =
            plan_query(&rendered.sql, &catalog).map_err(|e| ProjectError::Sql(e.to_string()))?;
        Ok((query, rendered.values, catalog.named.into_inner()))
    }

    /// Plans `sql` over one datasource's stored rows (no engine read rules), for data
    /// operations such as delete by condition.
    pub fn plan_raw(&self, datasource: &str, sql: &str) -> Result<Query, ProjectError> {
        let ds = self.datasources.get(datasource).ok_or_else(|| {
            ProjectError::NotFound(format!("Data Source '{datasource}' not found"))
        })?;
        plan_query(sql, &RawCatalog { ds }).map_err(|e| ProjectError::Sql(e.to_string()))
    }

    /// Plans `sql` over a result that it reads as the table `_` (an endpoint's `q=`).
    pub fn plan_sql_over(
        &self,
        sql: &str,
        columns: &[Column],
    ) -> Result<(Query, BTreeMap<String, Value>), ProjectError> {
        let catalog = ResultCatalog { columns };
        let query = plan_query(sql, &catalog).map_err(|e| {
            let mut message = e.to_string();
            if e.message.starts_with("unknown table") {
                message.push_str(" (q= reads only the table _, the pipe's own result)");
            }
            ProjectError::Sql(message)
        })?;
        Ok((query, BTreeMap::new()))
    }
}

fn sql_error(file: &Path, map: &SqlMap, e: &SqlError) -> ProjectError {
    if e.line == 0 {
        return ProjectError::Sql(format!("{}: {}", file.display(), e.message));
    }
    let loc = map.file_loc(e.line as usize, e.column.max(1) as usize);
    ProjectError::Sql(located(file, loc.line, loc.column, &e.message))
}

/// An ad-hoc query's plan, its parameter values, and the datasources, quarantine tables and
/// pipes its SQL names.
pub type PlannedSql = (Query, BTreeMap<String, Value>, BTreeSet<String>);

/// What a query may read: earlier nodes, datasources, quarantine tables and endpoint pipes
/// (with their default parameters).
struct ProjectCatalog<'a> {
    project: &'a Project,
    nodes: HashMap<String, Plan>,
    types: &'a BTreeMap<String, ColumnType>,
    /// The datasources, quarantine tables and pipes the query named.
    named: std::cell::RefCell<BTreeSet<String>>,
}

/// What an endpoint's `q=` may read: the table `_` (the pipe's own result) and nothing
/// else, so a token scoped to one pipe never reaches raw rows, other pipes or quarantine
/// tables through it (Tinybird's rule).
struct ResultCatalog<'a> {
    columns: &'a [Column],
}

impl Catalog for ResultCatalog<'_> {
    fn table(&self, name: &str) -> Option<TableRef> {
        (name == "_").then(|| TableRef::Datasource(self.columns.to_vec()))
    }

    fn param_type(&self, _name: &str) -> Option<ColumnType> {
        None
    }
}

/// A catalog with only one datasource's stored rows: what its engine's read SQL reads.
struct RawCatalog<'a> {
    ds: &'a Datasource,
}

impl Catalog for RawCatalog<'_> {
    fn table(&self, name: &str) -> Option<TableRef> {
        (name == self.ds.name).then(|| TableRef::Datasource(self.ds.schema()))
    }

    fn param_type(&self, _name: &str) -> Option<ColumnType> {
        None
    }
}

thread_local! {
    /// How deep pipe-as-table resolution is nested: pipes that read each other in a cycle
    /// stop here instead of recursing forever.
    static NESTING: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Runs `f` one pipe deeper; `None` past 16 levels (a cycle).
fn nested<T>(f: impl FnOnce() -> Option<T>) -> Option<T> {
    let depth = NESTING.with(|n| n.get());
    if depth >= 16 {
        return None;
    }
    NESTING.with(|n| n.set(depth + 1));
    let out = f();
    NESTING.with(|n| n.set(depth));
    out
}

impl ProjectCatalog<'_> {
    /// The target of a materialized pipe, read as the pipe's maintained result with the
    /// target's column names (columns the pipe does not produce take their defaults).
    fn materialized_target(&self, name: &str) -> Option<Plan> {
        let pipe = self.project.materialized.get(name)?;
        let target = self.project.datasources.get(name)?;
        let rendered = self.project.render_with(pipe, &Params::new()).ok()?;
        let query = self.project.plan_rendered(pipe, &rendered).ok()?;
        let plan = query
            .bind_limits(&rendered.values)
            .ok()?
            .into_plan()
            .bind(&rendered.values)
            .ok()?;
        let mut exprs = Vec::new();
        let mut columns = Vec::new();
        for c in &target.columns {
            match plan.columns.iter().position(|p| p.name == c.column.name) {
                Some(i) => {
                    exprs.push(petrel_sql::Expr::Column(i));
                    columns.push(Column {
                        name: c.column.name.clone(),
                        ty: plan.columns[i].ty.clone(),
                    });
                }
                None => {
                    exprs.push(petrel_sql::Expr::Literal(c.column.ty.default_value()));
                    columns.push(c.column.clone());
                }
            }
        }
        Some(Plan {
            node: petrel_sql::PlanNode::Project {
                input: Box::new(plan),
                exprs,
            },
            columns,
        })
    }
}

impl Catalog for ProjectCatalog<'_> {
    fn table(&self, name: &str) -> Option<TableRef> {
        if let Some(plan) = self.nodes.get(name) {
            return Some(TableRef::Plan(plan.clone()));
        }
        let found = self.resource(name);
        if found.is_some() {
            self.named.borrow_mut().insert(name.to_string());
        }
        found
    }

    fn param_type(&self, name: &str) -> Option<ColumnType> {
        self.types.get(name).cloned()
    }
}

impl ProjectCatalog<'_> {
    /// A datasource, quarantine table, materialized target or endpoint pipe by name.
    fn resource(&self, name: &str) -> Option<TableRef> {
        if let Some(plan) = nested(|| self.materialized_target(name)) {
            return Some(TableRef::Plan(plan));
        }
        if let Some(ds) = self.project.datasources.get(name) {
            if let Some(sql) = &ds.read_sql {
                let raw = RawCatalog { ds };
                return plan_query(sql, &raw)
                    .ok()
                    .map(|q| TableRef::Plan(q.into_plan()));
            }
            return Some(TableRef::Datasource(ds.schema()));
        }
        if let Some(ds) = name
            .strip_suffix("_quarantine")
            .and_then(|n| self.project.datasources.get(n))
        {
            return Some(TableRef::Datasource(quarantine_columns(&ds.schema())));
        }
        let pipe = self.project.pipes.get(name).filter(|p| p.is_endpoint())?;
        nested(|| {
            let rendered = self.project.render_with(&pipe.name, &Params::new()).ok()?;
            let query = self.project.plan_rendered(&pipe.name, &rendered).ok()?;
            let plan = query.bind_limits(&rendered.values).ok()?.into_plan();
            Some(TableRef::Plan(plan.bind(&rendered.values).ok()?))
        })
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
