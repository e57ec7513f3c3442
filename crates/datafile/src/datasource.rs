//! `.datasource` files: schema, indexes, engine, tokens and connector settings.

use std::collections::{BTreeMap, HashMap};

use crate::lexer::{
    read_commands, split_tags, sql_block, substitute_env, token_line, Command, Ctx,
};
use crate::schema::{parse_columns, parse_indexes};
use crate::{DatafileError, DatafileWarning, Loc, Setting, SqlMap};

/// A parsed `.datasource` file: everything Petrel needs to create and feed the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Datasource {
    /// Resource name (the file stem).
    pub name: String,
    /// `DESCRIPTION`.
    pub description: Option<String>,
    /// Where the `SCHEMA` keyword is.
    pub schema_loc: Option<Loc>,
    /// The `SCHEMA` columns, in order.
    pub columns: Vec<ColumnDef>,
    /// The `INDEXES` block, one entry per line.
    pub indexes: Vec<IndexDef>,
    /// `ENGINE` and every `ENGINE_*` setting.
    pub engine: EngineDef,
    /// `TOKEN name READ|APPEND` lines.
    pub tokens: Vec<TokenDef>,
    /// `TAGS` entries (comma separated; `k=v` entries are Tinybird's operational tags).
    pub tags: Vec<String>,
    /// `FORWARD_QUERY` (a SELECT list used for schema evolution).
    pub forward_query: Option<ForwardQuery>,
    /// `BACKFILL` (only `skip` is allowed).
    pub backfill: Option<Setting>,
    /// `SHARED_WITH` workspace names.
    pub shared_with: Vec<String>,
    /// Every `KAFKA_*` keyword, keyed by the upper-case keyword (e.g. `KAFKA_TOPIC`).
    pub kafka: BTreeMap<String, Setting>,
    /// Every `IMPORT_*` keyword (S3, GCS, DynamoDB and legacy BigQuery/Snowflake imports).
    pub import: BTreeMap<String, Setting>,
    /// `PG_CONNECTION_NAME` and `PG_TABLE`.
    pub postgres: BTreeMap<String, Setting>,
    /// What Tinybird would warn about (deprecated keywords, repeated keywords, ...).
    pub warnings: Vec<DatafileWarning>,
}

/// One column of the `SCHEMA` block. Types stay as text; the caller interprets them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    /// Column name, without backticks.
    pub name: String,
    /// The ClickHouse type as written (e.g. `LowCardinality(Nullable(String))`); `None` when only a
    /// DEFAULT is given.
    pub type_text: Option<String>,
    /// The DEFAULT SQL expression text (`DEFAULT NULL` on a Nullable column is dropped).
    pub default: Option<String>,
    /// The codec clause as written, e.g. `CODEC(ZSTD(1))`.
    pub codec: Option<String>,
    /// The JSONPath from `` `json:$.a.b` `` (`$.a.b`).
    pub json_path: Option<String>,
    /// Where the column name starts.
    pub loc: Loc,
}

/// One line of the `INDEXES` block: `[INDEX] name expr TYPE type(args) [GRANULARITY n]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexDef {
    /// The line as written (trimmed, trailing commas removed).
    pub text: String,
    /// Index name.
    pub name: String,
    /// Indexed expression.
    pub expr: String,
    /// Index type with its arguments, e.g. `bloom_filter(0.01)`.
    pub type_full: String,
    /// GRANULARITY, when given.
    pub granularity: Option<String>,
    /// Where the line starts.
    pub loc: Loc,
}

/// The table engines Tinybird accepts in `ENGINE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Engine {
    /// `MergeTree` (the default).
    MergeTree,
    /// `ReplacingMergeTree` (ENGINE_VER, ENGINE_IS_DELETED).
    ReplacingMergeTree,
    /// `SummingMergeTree` (ENGINE_COLUMNS).
    SummingMergeTree,
    /// `AggregatingMergeTree`.
    AggregatingMergeTree,
    /// `CollapsingMergeTree` (ENGINE_SIGN).
    CollapsingMergeTree,
    /// `VersionedCollapsingMergeTree` (ENGINE_SIGN, ENGINE_VERSION).
    VersionedCollapsingMergeTree,
    /// `Null`: rows are dropped (used as a materialized view entry point).
    Null,
}

impl Engine {
    const ALL: [Engine; 7] = [
        Engine::MergeTree,
        Engine::ReplacingMergeTree,
        Engine::SummingMergeTree,
        Engine::AggregatingMergeTree,
        Engine::CollapsingMergeTree,
        Engine::VersionedCollapsingMergeTree,
        Engine::Null,
    ];

    /// The engine's ClickHouse name, for messages and DDL.
    pub fn name(self) -> &'static str {
        match self {
            Engine::MergeTree => "MergeTree",
            Engine::ReplacingMergeTree => "ReplacingMergeTree",
            Engine::SummingMergeTree => "SummingMergeTree",
            Engine::AggregatingMergeTree => "AggregatingMergeTree",
            Engine::CollapsingMergeTree => "CollapsingMergeTree",
            Engine::VersionedCollapsingMergeTree => "VersionedCollapsingMergeTree",
            Engine::Null => "Null",
        }
    }

    /// Reads an engine name case-insensitively (a trailing `()` is allowed).
    pub fn parse(text: &str) -> Option<Engine> {
        let text = text.trim();
        let text = text.strip_suffix("()").unwrap_or(text).trim();
        Engine::ALL
            .into_iter()
            .find(|e| e.name().eq_ignore_ascii_case(text))
    }

    fn needs_sorting_key(self) -> bool {
        matches!(
            self,
            Engine::ReplacingMergeTree
                | Engine::CollapsingMergeTree
                | Engine::VersionedCollapsingMergeTree
        )
    }
}

/// `ENGINE` with all its `ENGINE_*` settings, kept as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineDef {
    /// The engine (MergeTree when `ENGINE` is absent).
    pub engine: Engine,
    /// Where the `ENGINE` value is; `None` when the engine was not written.
    pub loc: Option<Loc>,
    /// `ENGINE_SORTING_KEY` (ORDER BY; `tuple()` when absent).
    pub sorting_key: Option<Setting>,
    /// `ENGINE_PARTITION_KEY` (PARTITION BY).
    pub partition_key: Option<Setting>,
    /// `ENGINE_PRIMARY_KEY` (PRIMARY KEY).
    pub primary_key: Option<Setting>,
    /// `ENGINE_SAMPLING_KEY` (SAMPLE BY).
    pub sampling_key: Option<Setting>,
    /// `ENGINE_TTL` (an empty TTL is ignored).
    pub ttl: Option<Setting>,
    /// `ENGINE_SETTINGS "k=v, k2=v2"`.
    pub settings: Option<Setting>,
    /// `ENGINE_VER` (ReplacingMergeTree version column).
    pub ver: Option<Setting>,
    /// `ENGINE_IS_DELETED` (ReplacingMergeTree deleted-flag column).
    pub is_deleted: Option<Setting>,
    /// `ENGINE_SIGN` ((Versioned)CollapsingMergeTree sign column).
    pub sign: Option<Setting>,
    /// `ENGINE_VERSION` (VersionedCollapsingMergeTree version column).
    pub version: Option<Setting>,
    /// `ENGINE_COLUMNS` (SummingMergeTree columns to sum).
    pub columns: Option<Setting>,
}

impl Default for EngineDef {
    fn default() -> Self {
        EngineDef {
            engine: Engine::MergeTree,
            loc: None,
            sorting_key: None,
            partition_key: None,
            primary_key: None,
            sampling_key: None,
            ttl: None,
            settings: None,
            ver: None,
            is_deleted: None,
            sign: None,
            version: None,
            columns: None,
        }
    }
}

impl EngineDef {
    fn slot(&mut self, key: &str) -> Option<&mut Option<Setting>> {
        Some(match key {
            "sorting_key" => &mut self.sorting_key,
            "partition_key" => &mut self.partition_key,
            "primary_key" => &mut self.primary_key,
            "sampling_key" => &mut self.sampling_key,
            "ttl" => &mut self.ttl,
            "settings" => &mut self.settings,
            "ver" => &mut self.ver,
            "is_deleted" => &mut self.is_deleted,
            "sign" => &mut self.sign,
            "version" => &mut self.version,
            "columns" => &mut self.columns,
            _ => return None,
        })
    }
}

/// What a datasource token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenScope {
    /// `READ`: query the resource.
    Read,
    /// `APPEND`: ingest into the data source.
    Append,
}

/// A `TOKEN name READ|APPEND` line: a resource-scoped token to create on deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenDef {
    /// Token name (quotes removed).
    pub name: String,
    /// Permission.
    pub scope: TokenScope,
    /// Where the TOKEN keyword is.
    pub loc: Loc,
}

/// The `FORWARD_QUERY >` block of a data source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardQuery {
    /// The SQL text, dedented (or stripped when it starts with `%`).
    pub sql: String,
    /// File position of the SQL text's first character.
    pub sql_loc: Loc,
    /// Maps SQL positions back to the file.
    pub sql_map: SqlMap,
}

const KAFKA_KEYS: [&str; 8] = [
    "kafka_connection_name",
    "kafka_topic",
    "kafka_group_id",
    "kafka_auto_offset_reset",
    "kafka_store_raw_value",
    "kafka_store_headers",
    "kafka_key_format",
    "kafka_value_format",
];
const IMPORT_KEYS: [&str; 8] = [
    "import_connection_name",
    "import_schedule",
    "import_bucket_uri",
    "import_from_timestamp",
    "import_query",
    "import_table_arn",
    "import_export_bucket",
    "import_format",
];
const ENGINE_PARAMS: [&str; 11] = [
    "sorting_key",
    "partition_key",
    "primary_key",
    "sampling_key",
    "ttl",
    "settings",
    "ver",
    "is_deleted",
    "sign",
    "version",
    "columns",
];
/// Old spellings of the first ENGINE_* settings, still accepted by the CLI.
const LEGACY_ENGINE_KEYS: [&str; 5] = [
    "sorting_key",
    "partition_key",
    "primary_key",
    "sampling_key",
    "ttl",
];
const OTHER_KEYS: [&str; 21] = [
    "description",
    "token",
    "source",
    "schema",
    "indexes",
    "engine",
    "tags",
    "include",
    "version",
    "shared_with",
    "export_service",
    "forward_query",
    "backfill",
    "kafka_store_binary_headers",
    "kafka_target_partitions",
    "kafka_key_avro_deserialization",
    "import_strategy",
    "import_service",
    "import_external_datasource",
    "pg_connection_name",
    "pg_table",
];

fn is_keyword(key: &str) -> bool {
    KAFKA_KEYS.contains(&key)
        || IMPORT_KEYS.contains(&key)
        || LEGACY_ENGINE_KEYS.contains(&key)
        || OTHER_KEYS.contains(&key)
        || key
            .strip_prefix("engine_")
            .is_some_and(|p| ENGINE_PARAMS.contains(&p))
}

/// Parses a `.datasource` file. `text` must have its `tb_secret(...)` calls rendered already
/// ([`crate::render_secrets`]); `$VAR` references are kept as written.
pub fn parse_datasource(name: &str, text: &str) -> Result<Datasource, Vec<DatafileError>> {
    parse_datasource_with_env(name, text, &|_| None)
}

/// Like [`parse_datasource`], replacing `$VAR`/`${VAR}` in connector and engine values with `env(VAR)`.
pub fn parse_datasource_with_env(
    name: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Datasource, Vec<DatafileError>> {
    let mut ctx = Ctx::new("datasource", env);
    let commands = read_commands(text, &is_keyword, &mut ctx.errors);
    let mut ds = Datasource {
        name: name.to_string(),
        description: None,
        schema_loc: None,
        columns: Vec::new(),
        indexes: Vec::new(),
        engine: EngineDef::default(),
        tokens: Vec::new(),
        tags: Vec::new(),
        forward_query: None,
        backfill: None,
        shared_with: Vec::new(),
        kafka: BTreeMap::new(),
        import: BTreeMap::new(),
        postgres: BTreeMap::new(),
        warnings: Vec::new(),
    };
    for cmd in &commands {
        apply(&mut ctx, &mut ds, cmd);
    }
    validate(&mut ctx, &ds);
    let (mut ds, warnings) = ctx.finish(ds)?;
    ds.warnings = warnings;
    Ok(ds)
}

fn insert_setting(ctx: &mut Ctx<'_>, map: &mut BTreeMap<String, Setting>, cmd: &Command) {
    if let Some(value) = ctx.scalar_env(cmd) {
        let key = cmd.key.to_uppercase();
        let mut slot = map.remove(&key);
        ctx.set(&mut slot, cmd, value);
        map.extend(slot.map(|v| (key, v)));
    }
}

fn apply(ctx: &mut Ctx<'_>, ds: &mut Datasource, cmd: &Command) {
    let key = cmd.key.as_str();
    if ctx.legacy(cmd) {
        return;
    }
    if KAFKA_KEYS.contains(&key) {
        insert_setting(ctx, &mut ds.kafka, cmd);
        return;
    }
    if IMPORT_KEYS.contains(&key) {
        insert_setting(ctx, &mut ds.import, cmd);
        return;
    }
    if let Some(param) = key
        .strip_prefix("engine_")
        .filter(|p| ENGINE_PARAMS.contains(p))
    {
        engine_param(ctx, ds, cmd, param);
        return;
    }
    if LEGACY_ENGINE_KEYS.contains(&key) {
        ctx.warn(
            cmd.loc,
            format!(
                "{} is a legacy spelling of ENGINE_{}",
                cmd.name.to_uppercase(),
                key.to_uppercase()
            ),
        );
        engine_param(ctx, ds, cmd, key);
        return;
    }
    match key {
        "description" => {
            ds.description = ctx
                .scalar_or_block(cmd)
                .map(|s| s.value)
                .filter(|d| !d.is_empty());
        }
        "schema" => {
            if ds.schema_loc.is_some() {
                ctx.warn(cmd.loc, "SCHEMA is set more than once; the last value is used");
            }
            ds.schema_loc = Some(cmd.loc);
            if let Some(lines) = ctx.require_block(cmd) {
                ds.columns = parse_columns(lines, &mut ctx.errors);
            }
        }
        "indexes" => {
            if let Some(lines) = ctx.require_block(cmd) {
                ds.indexes = parse_indexes(lines, &mut ctx.errors);
            }
        }
        "engine" => {
            if let Some(setting) = ctx.scalar_or_block(cmd) {
                let value = substitute_env(&setting.value, ctx.env);
                match Engine::parse(&value) {
                    Some(engine) => {
                        ds.engine.engine = engine;
                        ds.engine.loc = Some(setting.loc);
                    }
                    None => ctx.error(
                        setting.loc,
                        format!(
                            "Engine {value} is not supported. Use one of: {}",
                            Engine::ALL.map(Engine::name).join(", ")
                        ),
                    ),
                }
            }
        }
        "token" => {
            if let Some(token) = token_line(ctx, cmd) {
                let scope = if token.permission == "APPEND" {
                    TokenScope::Append
                } else {
                    TokenScope::Read
                };
                ds.tokens.push(TokenDef {
                    name: token.name,
                    scope,
                    loc: cmd.loc,
                });
            }
        }
        "tags" => {
            if let Some(setting) = ctx.scalar_or_block(cmd) {
                ds.tags.extend(split_tags(&setting.value));
            }
        }
        "forward_query" => {
            if let Some(lines) = ctx.require_block(cmd) {
                match sql_block(lines) {
                    Some(block) => {
                        ds.forward_query = Some(ForwardQuery {
                            sql: block.text,
                            sql_loc: block.loc,
                            sql_map: block.map,
                        })
                    }
                    None => ctx.error(cmd.loc, "FORWARD_QUERY is empty"),
                }
            }
        }
        "backfill" => {
            if let Some(setting) = ctx.scalar_env(cmd) {
                if setting.value.eq_ignore_ascii_case("skip") {
                    ctx.set(&mut ds.backfill, cmd, setting);
                } else {
                    ctx.error(
                        setting.loc,
                        format!(
                            "{} is not an allowed value for BACKFILL. Use one of: skip",
                            setting.value
                        ),
                    );
                }
            }
        }
        "shared_with" => {
            if let Some(setting) = ctx.scalar_or_block(cmd) {
                let names: Vec<String> = setting
                    .value
                    .lines()
                    .flat_map(|l| l.split(','))
                    .map(|w| w.trim().to_string())
                    .filter(|w| !w.is_empty())
                    .collect();
                if names.is_empty() {
                    ctx.error(cmd.loc, "SHARED_WITH requires at least one workspace name");
                }
                ds.shared_with.extend(names);
            }
        }
        "pg_connection_name" | "pg_table" => insert_setting(ctx, &mut ds.postgres, cmd),
        "kafka_target_partitions" => {
            insert_setting(ctx, &mut ds.kafka, cmd);
            ctx.deprecated_warning(cmd, "");
        }
        "import_service" | "import_external_datasource" => {
            insert_setting(ctx, &mut ds.import, cmd);
            ctx.deprecated_warning(
                cmd,
                " If you're using an S3 or GCS connection, you don't need this setting anymore.",
            );
        }
        "export_service" => ctx.deprecated_warning(
            cmd,
            " If you're using an S3 or GCS connection, you don't need this setting anymore.",
        ),
        "import_strategy" => ctx.error(
            cmd.loc,
            "IMPORT_STRATEGY has been deprecated. It is now fixed to 'append'",
        ),
        "kafka_store_binary_headers" => ctx.error(
            cmd.loc,
            "KAFKA_STORE_BINARY_HEADERS has been deprecated. When KAFKA_STORE_HEADERS is True, __headers is always of type Map(String, String)",
        ),
        "kafka_key_avro_deserialization" => ctx.error(
            cmd.loc,
            "KAFKA_KEY_AVRO_DESERIALIZATION has been deprecated. Use \"KAFKA_KEY_FORMAT avro\" in the corresponding .datasource file instead",
        ),
        "source" => ctx.error(cmd.loc, "SOURCE has been deprecated"),
        _ => ctx.unknown(cmd),
    }
}

fn engine_param(ctx: &mut Ctx<'_>, ds: &mut Datasource, cmd: &Command, param: &str) {
    let Some(mut setting) = ctx.scalar_or_block(cmd) else {
        return;
    };
    setting.value = substitute_env(&setting.value, ctx.env);
    if param == "ttl" && setting.value.trim().is_empty() {
        return;
    }
    if let Some(slot) = ds.engine.slot(param) {
        ctx.set(slot, cmd, setting);
    }
}

/// Strips backticks from a column reference.
fn column_ref(text: &str) -> &str {
    let t = text.trim();
    t.strip_prefix('`')
        .and_then(|x| x.strip_suffix('`'))
        .unwrap_or(t)
}

/// Whether a sorting-key part is a plain column reference (not an expression).
fn is_plain_column(text: &str) -> bool {
    let t = text.trim();
    (t.len() > 2 && t.starts_with('`') && t.ends_with('`') && !t[1..t.len() - 1].contains('`'))
        || (!t.is_empty()
            && !t.starts_with(|c: char| c.is_ascii_digit())
            && t.chars().all(|c| c.is_alphanumeric() || c == '_'))
}

/// Splits at commas outside parentheses and quotes.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '"' | '`' => quote = Some(c),
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&text[start..i]);
                    start = i + 1;
                }
                _ => {}
            },
        }
    }
    parts.push(&text[start..]);
    parts
}

/// The parts of a sorting key, without a surrounding `tuple(...)` or parentheses.
fn sorting_key_parts(key: &str) -> Vec<&str> {
    let mut inner = key.trim();
    if let Some(rest) = inner.strip_prefix("tuple(") {
        inner = rest.strip_suffix(')').unwrap_or(rest);
    } else if inner.starts_with('(') && inner.ends_with(')') && split_top_level(inner).len() == 1 {
        inner = &inner[1..inner.len() - 1];
    }
    split_top_level(inner)
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

fn validate(ctx: &mut Ctx<'_>, ds: &Datasource) {
    if ds.schema_loc.is_none() {
        ctx.error(Loc::new(1, 1), "SCHEMA is mandatory");
    }
    let mut by_name: HashMap<&str, &ColumnDef> = HashMap::new();
    for column in &ds.columns {
        if by_name.insert(column.name.as_str(), column).is_some() {
            ctx.error(
                column.loc,
                format!("Column '{}' is defined more than once", column.name),
            );
        }
    }
    validate_engine(ctx, ds, &by_name);
    validate_kafka(ctx, ds);
    validate_import(ctx, ds);
}

fn validate_engine(ctx: &mut Ctx<'_>, ds: &Datasource, columns: &HashMap<&str, &ColumnDef>) {
    let def = &ds.engine;
    let engine = def.engine;
    let engine_loc = def.loc.unwrap_or(Loc::new(1, 1));
    if engine.needs_sorting_key() {
        let key = def.sorting_key.as_ref().map(|s| s.value.trim());
        if matches!(key, None | Some("") | Some("tuple()")) {
            ctx.error(
                engine_loc,
                format!("ENGINE_SORTING_KEY should be set with {}", engine.name()),
            );
        }
    }
    let mut required: Vec<(&str, &Option<Setting>)> = Vec::new();
    if matches!(
        engine,
        Engine::CollapsingMergeTree | Engine::VersionedCollapsingMergeTree
    ) {
        required.push(("ENGINE_SIGN", &def.sign));
    }
    if engine == Engine::VersionedCollapsingMergeTree {
        required.push(("ENGINE_VERSION", &def.version));
    }
    for (name, setting) in required {
        if setting.is_none() {
            ctx.error(
                engine_loc,
                format!("{name} is required for {}", engine.name()),
            );
        }
    }
    let specific: [(&str, &Option<Setting>, &[Engine]); 5] = [
        ("ENGINE_VER", &def.ver, &[Engine::ReplacingMergeTree]),
        (
            "ENGINE_IS_DELETED",
            &def.is_deleted,
            &[Engine::ReplacingMergeTree],
        ),
        (
            "ENGINE_SIGN",
            &def.sign,
            &[
                Engine::CollapsingMergeTree,
                Engine::VersionedCollapsingMergeTree,
            ],
        ),
        (
            "ENGINE_VERSION",
            &def.version,
            &[Engine::VersionedCollapsingMergeTree],
        ),
        ("ENGINE_COLUMNS", &def.columns, &[Engine::SummingMergeTree]),
    ];
    let check_columns = ds.schema_loc.is_some() && !columns.is_empty();
    // Kafka and DynamoDB data sources get meta columns (`__timestamp`, `_timestamp`, ...) that the
    // schema does not list.
    let has_meta_columns = !ds.kafka.is_empty() || !ds.import.is_empty();
    for (name, setting, engines) in specific {
        let Some(setting) = setting else { continue };
        if !engines.contains(&engine) {
            ctx.warn(
                setting.loc,
                format!("{name} is ignored with engine {}", engine.name()),
            );
        }
        if !check_columns {
            continue;
        }
        let refs: Vec<&str> = if name == "ENGINE_COLUMNS" {
            sorting_key_parts(&setting.value)
        } else {
            vec![setting.value.as_str()]
        };
        for r in refs {
            let col = column_ref(r);
            let is_meta = has_meta_columns && col.starts_with('_');
            if !is_meta && !columns.contains_key(col) {
                ctx.error(
                    setting.loc,
                    format!("{name} must name a column of the schema; '{col}' is not one"),
                );
            }
        }
    }
    if let (Some(key), true) = (&def.sorting_key, check_columns) {
        let ver = def.ver.as_ref().map(|v| column_ref(&v.value));
        for part in sorting_key_parts(&key.value) {
            if !is_plain_column(part) {
                continue;
            }
            let name = column_ref(part);
            if engine == Engine::ReplacingMergeTree && ver == Some(name) {
                ctx.error(
                    key.loc,
                    format!(
                        "ENGINE_VER column '{name}' cannot be included in the sorting key for ReplacingMergeTree"
                    ),
                );
            }
            let Some(column) = columns.get(name) else {
                continue;
            };
            let type_text = column.type_text.as_deref().unwrap_or("");
            if type_text.to_lowercase().starts_with("nullable") || type_text.contains("Nullable(") {
                ctx.error(
                    key.loc,
                    format!(
                        "Sorting key contains nullable column '{name}'. Nullable columns cannot be used in sorting keys."
                    ),
                );
            } else if type_text.to_lowercase().contains("aggregatefunction") {
                ctx.error(
                    key.loc,
                    format!(
                        "Sorting key contains column '{name}' with AggregateFunction type. AggregateFunction columns cannot be used in sorting keys."
                    ),
                );
            }
        }
    }
}

fn validate_kafka(ctx: &mut Ctx<'_>, ds: &Datasource) {
    const REQUIRED: [&str; 3] = ["KAFKA_CONNECTION_NAME", "KAFKA_TOPIC", "KAFKA_GROUP_ID"];
    let Some(first) = REQUIRED.iter().find_map(|k| ds.kafka.get(*k)) else {
        return;
    };
    let missing: Vec<&str> = REQUIRED
        .into_iter()
        .filter(|k| !ds.kafka.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        ctx.error(
            first.loc,
            format!(
                "Some Kafka params have been provided, but the following required ones are missing: {}",
                missing.join(", ")
            ),
        );
    }
    if let Some(group) = ds.kafka.get("KAFKA_GROUP_ID") {
        if group.value.trim().is_empty() {
            ctx.error(group.loc, "KAFKA_GROUP_ID must not be empty");
        }
    }
}

fn validate_import(ctx: &mut Ctx<'_>, ds: &Datasource) {
    const BLOB: [&str; 4] = [
        "IMPORT_CONNECTION_NAME",
        "IMPORT_SCHEDULE",
        "IMPORT_BUCKET_URI",
        "IMPORT_FROM_TIMESTAMP",
    ];
    const VALID_SCHEDULES: [&str; 3] = ["@auto", "@on-demand", "@once"];
    // DynamoDB imports (IMPORT_TABLE_ARN) have no bucket URI.
    if ds.import.contains_key("IMPORT_TABLE_ARN") {
        return;
    }
    let Some(first) = BLOB.iter().find_map(|k| ds.import.get(*k)) else {
        return;
    };
    let missing: Vec<&str> = BLOB[..3]
        .iter()
        .copied()
        .filter(|k| !ds.import.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        ctx.error(
            first.loc,
            format!(
                "Some connection params have been provided, but the following required ones are missing: {}",
                missing.join(", ")
            ),
        );
    }
    if let Some(schedule) = ds.import.get("IMPORT_SCHEDULE") {
        if !VALID_SCHEDULES.contains(&schedule.value.as_str()) {
            ctx.error(
                schedule.loc,
                format!(
                    "Invalid import schedule '{}'. Only {} values are allowed",
                    schedule.value,
                    VALID_SCHEDULES.join(", ")
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"DESCRIPTION >
    Raw page views

SCHEMA >
    `timestamp` DateTime64(3) `json:$.timestamp`,
    `session_id` String `json:$.session_id`,
    `country` LowCardinality(Nullable(String)) `json:$.geo.country`,
    `tags` Array(String) `json:$.tags[:]`,
    `value` Float64 `json:$.value` DEFAULT 0

INDEXES >
    idx_session session_id TYPE bloom_filter(0.01) GRANULARITY 4

ENGINE "MergeTree"
ENGINE_PARTITION_KEY "toYYYYMM(timestamp)"
ENGINE_SORTING_KEY "session_id, timestamp"
ENGINE_TTL "toDateTime(timestamp) + INTERVAL 90 DAY"

TOKEN "ingest_token" APPEND
TOKEN "reader" READ
"#;

    fn errors(text: &str) -> Vec<DatafileError> {
        parse_datasource("ds", text).unwrap_err()
    }

    fn one_error(text: &str) -> DatafileError {
        let errs = errors(text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        errs.into_iter().next().unwrap()
    }

    #[test]
    fn reference_example() {
        let ds = parse_datasource("page_views", EXAMPLE).unwrap();
        assert_eq!(ds.name, "page_views");
        assert_eq!(ds.description.as_deref(), Some("Raw page views"));
        assert_eq!(ds.schema_loc, Some(Loc::new(4, 1)));
        assert_eq!(ds.columns.len(), 5);
        assert_eq!(ds.columns[4].default.as_deref(), Some("0"));
        assert_eq!(ds.columns[4].loc, Loc::new(9, 5));
        assert_eq!(ds.indexes.len(), 1);
        assert_eq!(ds.indexes[0].loc, Loc::new(12, 5));
        assert_eq!(ds.engine.engine, Engine::MergeTree);
        assert_eq!(ds.engine.loc, Some(Loc::new(14, 8)));
        let sk = ds.engine.sorting_key.as_ref().unwrap();
        assert_eq!(sk.value, "session_id, timestamp");
        assert_eq!(sk.loc, Loc::new(16, 20));
        assert_eq!(
            ds.engine.partition_key.as_ref().unwrap().value,
            "toYYYYMM(timestamp)"
        );
        assert!(ds.engine.ttl.is_some());
        assert_eq!(
            ds.tokens,
            vec![
                TokenDef {
                    name: "ingest_token".into(),
                    scope: TokenScope::Append,
                    loc: Loc::new(19, 1)
                },
                TokenDef {
                    name: "reader".into(),
                    scope: TokenScope::Read,
                    loc: Loc::new(20, 1)
                },
            ]
        );
        assert!(ds.warnings.is_empty());
    }

    #[test]
    fn keywords_ignore_case_and_engine_defaults() {
        let ds = parse_datasource("d", "schema >\n    a String\nengine_sorting_key a\n").unwrap();
        assert_eq!(ds.engine.engine, Engine::MergeTree);
        assert_eq!(ds.engine.loc, None);
        assert_eq!(ds.engine.sorting_key.unwrap().value, "a");
    }

    #[test]
    fn all_engine_settings_are_kept() {
        let text = "SCHEMA >\n    a String,\n    v UInt64,\n    d UInt8\nENGINE ReplacingMergeTree\nENGINE_SORTING_KEY a\nENGINE_PRIMARY_KEY a\nENGINE_SAMPLING_KEY a\nENGINE_SETTINGS \"index_granularity = 256\"\nENGINE_VER v\nENGINE_IS_DELETED d\nENGINE_TTL \"\"\n";
        let ds = parse_datasource("d", text).unwrap();
        let e = &ds.engine;
        assert_eq!(e.engine, Engine::ReplacingMergeTree);
        assert_eq!(e.primary_key.as_ref().unwrap().value, "a");
        assert_eq!(e.sampling_key.as_ref().unwrap().value, "a");
        assert_eq!(
            e.settings.as_ref().unwrap().value,
            "index_granularity = 256"
        );
        assert_eq!(e.ver.as_ref().unwrap().value, "v");
        assert_eq!(e.is_deleted.as_ref().unwrap().value, "d");
        assert_eq!(e.ttl, None, "an empty TTL is ignored");
        let text = "SCHEMA >\n    a String,\n    s Int8,\n    v UInt64,\n    n UInt64\nENGINE VersionedCollapsingMergeTree\nENGINE_SORTING_KEY a\nENGINE_SIGN s\nENGINE_VERSION v\n";
        let ds = parse_datasource("d", text).unwrap();
        assert_eq!(ds.engine.sign.unwrap().value, "s");
        assert_eq!(ds.engine.version.unwrap().value, "v");
        let text = "SCHEMA >\n    a String,\n    n UInt64\nENGINE SummingMergeTree\nENGINE_COLUMNS \"n\"\n";
        let ds = parse_datasource("d", text).unwrap();
        assert_eq!(ds.engine.columns.unwrap().value, "n");
    }

    #[test]
    fn engine_blocks_and_legacy_spellings() {
        let text = "SCHEMA >\n    a String,\n    b String\nENGINE_SORTING_KEY >\n    a,\n    b\nSORTING_KEY a\n";
        let ds = parse_datasource("d", text).unwrap();
        assert_eq!(ds.engine.sorting_key.as_ref().unwrap().value, "a");
        assert_eq!(ds.warnings.len(), 2, "{:?}", ds.warnings);
        let text = "SCHEMA >\n    a String,\n    b String\nENGINE_SORTING_KEY >\n    a,\n    b\n";
        let ds = parse_datasource("d", text).unwrap();
        let sk = ds.engine.sorting_key.unwrap();
        assert_eq!(sk.value, "a,\nb");
        assert_eq!(sk.loc, Loc::new(5, 5));
    }

    #[test]
    fn unknown_engine() {
        let e = one_error("SCHEMA >\n    a String\nENGINE Log\n");
        assert_eq!(e.loc(), Loc::new(3, 8));
        assert!(e.message.starts_with("Engine Log is not supported"), "{e}");
        assert_eq!(
            Engine::parse("replacingmergetree()"),
            Some(Engine::ReplacingMergeTree)
        );
    }

    #[test]
    fn schema_is_mandatory() {
        let e = one_error("ENGINE MergeTree\n");
        assert_eq!(e.to_string(), "1:1: SCHEMA is mandatory");
        let e = one_error("SCHEMA a String\n");
        assert_eq!(e.loc(), Loc::new(1, 1));
        assert!(e.message.contains("must be multiline"), "{e}");
    }

    #[test]
    fn unknown_keywords_and_node() {
        let errs = errors("NODE x\nFOO bar\nSETTINGS a=1\nSCHEMA >\n    a String\n");
        let messages: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                "1:1: NODE is not a valid option in datasource files.",
                "2:1: FOO is not a valid option in datasource files.",
                "3:1: SETTINGS option is not allowed, use ENGINE_SETTINGS instead",
            ]
        );
        // After a block, an unknown keyword is read as part of the block, as Tinybird does.
        let e = one_error("SCHEMA >\n    a String\nNODE x\n");
        assert_eq!(e.loc(), Loc::new(3, 1));
        assert!(e.message.contains("unindented line"), "{e}");
    }

    #[test]
    fn schema_errors_have_file_locations_and_are_all_reported() {
        let text = "DESCRIPTION x\n\nSCHEMA >\n    a Boolean,\n\n    # hash comment\n    b Int32 NOT NULL,\n    c String\nENGINE Nope\n";
        let errs = errors(text);
        let locs: Vec<Loc> = errs.iter().map(DatafileError::loc).collect();
        assert_eq!(locs, [Loc::new(4, 7), Loc::new(7, 13), Loc::new(9, 8)]);
    }

    #[test]
    fn tokens() {
        let e = one_error("SCHEMA >\n    a String\nTOKEN t DROP\n");
        assert_eq!(e.loc(), Loc::new(3, 9));
        assert!(e.message.contains("Invalid permission: DROP"), "{e}");
        // Classic's CREATE loads, with a warning and no grant.
        let ds = parse_datasource("d", "SCHEMA >\n    a String\nTOKEN t CREATE\n").unwrap();
        assert!(ds.tokens.is_empty());
        assert_eq!(ds.warnings[0].loc, Loc::new(3, 9));
        let e = one_error("SCHEMA >\n    a String\nTOKEN t\n");
        assert!(e.message.starts_with("TOKEN takes two params"), "{e}");
        let e = one_error("SCHEMA >\n    a String\nTOKEN t READ extra\n");
        assert_eq!(e.loc(), Loc::new(3, 14));
        let ds = parse_datasource("d", "SCHEMA >\n    a String\nTOKEN 'my token' read\n").unwrap();
        assert_eq!(ds.tokens[0].name, "my token");
        assert_eq!(ds.tokens[0].scope, TokenScope::Read);
    }

    #[test]
    fn tags_shared_with_backfill_forward_query() {
        let text = "SCHEMA >\n    a String\nTAGS \"a, b,k=v\"\nSHARED_WITH >\n    ws_one,\n    ws_two\nBACKFILL skip\nFORWARD_QUERY >\n    SELECT a\n      FROM x\n";
        let ds = parse_datasource("d", text).unwrap();
        assert_eq!(ds.tags, ["a", "b", "k=v"]);
        assert_eq!(ds.shared_with, ["ws_one", "ws_two"]);
        assert_eq!(ds.backfill.unwrap().value, "skip");
        let fq = ds.forward_query.unwrap();
        assert_eq!(fq.sql, "SELECT a\n  FROM x");
        assert_eq!(fq.sql_loc, Loc::new(9, 5));
        assert_eq!(fq.sql_map.file_loc(2, 3), Loc::new(10, 7));
        let e = one_error("SCHEMA >\n    a String\nBACKFILL always\n");
        assert!(
            e.message.contains("not an allowed value for BACKFILL"),
            "{e}"
        );
        let e = one_error("SCHEMA >\n    a String\nFORWARD_QUERY SELECT a\n");
        assert!(e.message.contains("must be multiline"), "{e}");
    }

    #[test]
    fn kafka_settings() {
        let text = "SCHEMA >\n    a String\nKAFKA_CONNECTION_NAME 'kc'\nKAFKA_TOPIC ${T}\nKAFKA_GROUP_ID \"g\"\nKAFKA_AUTO_OFFSET_RESET earliest\nKAFKA_STORE_RAW_VALUE 'False'\nKAFKA_STORE_HEADERS True\nKAFKA_KEY_FORMAT avro\nKAFKA_VALUE_FORMAT avro\nKAFKA_TARGET_PARTITIONS auto\n";
        let env = |k: &str| (k == "T").then(|| "topic".to_string());
        let ds = parse_datasource_with_env("d", text, &env).unwrap();
        assert_eq!(ds.kafka.len(), 9);
        assert_eq!(ds.kafka["KAFKA_CONNECTION_NAME"].value, "kc");
        assert_eq!(ds.kafka["KAFKA_TOPIC"].value, "topic");
        assert_eq!(ds.kafka["KAFKA_GROUP_ID"].value, "g");
        assert_eq!(ds.kafka["KAFKA_STORE_RAW_VALUE"].value, "False");
        assert_eq!(
            ds.warnings.len(),
            1,
            "KAFKA_TARGET_PARTITIONS is deprecated"
        );
        let e = one_error("SCHEMA >\n    a String\nKAFKA_TOPIC t\n");
        assert!(
            e.message.contains("KAFKA_CONNECTION_NAME, KAFKA_GROUP_ID"),
            "{e}"
        );
        let e = one_error(
            "SCHEMA >\n    a String\nKAFKA_CONNECTION_NAME c\nKAFKA_TOPIC t\nKAFKA_GROUP_ID ''\n",
        );
        assert_eq!(e.loc(), Loc::new(5, 16));
        let e = one_error("SCHEMA >\n    a String\nKAFKA_KEY_AVRO_DESERIALIZATION ''\n");
        assert!(e.message.contains("deprecated"), "{e}");
        let e = one_error("SCHEMA >\n    a String\nKAFKA_TOPIC >\n    t\n");
        assert!(e.message.contains("does not support multiline"), "{e}");
    }

    #[test]
    fn import_settings() {
        let text = "SCHEMA >\n    a String\nIMPORT_CONNECTION_NAME s3c\nIMPORT_BUCKET_URI s3://b/*.csv\nIMPORT_SCHEDULE @auto\nIMPORT_FORMAT csv\nIMPORT_FROM_TIMESTAMP 2024-01-01T00:00:00Z\n";
        let ds = parse_datasource("d", text).unwrap();
        assert_eq!(ds.import["IMPORT_BUCKET_URI"].value, "s3://b/*.csv");
        assert_eq!(ds.import.len(), 5);
        let e = one_error("SCHEMA >\n    a String\nIMPORT_CONNECTION_NAME c\nIMPORT_BUCKET_URI s3://b\nIMPORT_SCHEDULE 0 * * * *\n");
        assert!(e.message.contains("Invalid import schedule"), "{e}");
        let e = one_error("SCHEMA >\n    a String\nIMPORT_CONNECTION_NAME c\n");
        assert!(
            e.message.contains("IMPORT_SCHEDULE, IMPORT_BUCKET_URI"),
            "{e}"
        );
        let e = one_error("SCHEMA >\n    a String\nIMPORT_STRATEGY append\n");
        assert!(
            e.message.contains("IMPORT_STRATEGY has been deprecated"),
            "{e}"
        );
        let ds = parse_datasource(
            "d",
            "SCHEMA >\n    a String\nIMPORT_CONNECTION_NAME ddb\nIMPORT_TABLE_ARN arn:aws:dynamodb:x\nIMPORT_EXPORT_BUCKET b\nPG_TABLE t\n",
        )
        .unwrap();
        assert_eq!(ds.import.len(), 3);
        assert_eq!(ds.postgres["PG_TABLE"].value, "t");
    }

    #[test]
    fn engine_validation() {
        let e = one_error("SCHEMA >\n    a String\nENGINE ReplacingMergeTree\n");
        assert_eq!(
            e.to_string(),
            "3:8: ENGINE_SORTING_KEY should be set with ReplacingMergeTree"
        );
        let e =
            one_error("SCHEMA >\n    a String\nENGINE CollapsingMergeTree\nENGINE_SORTING_KEY a\n");
        assert!(e.message.contains("ENGINE_SIGN is required"), "{e}");
        let e = one_error("SCHEMA >\n    a String\nENGINE ReplacingMergeTree\nENGINE_SORTING_KEY a\nENGINE_VER nope\n");
        assert_eq!(e.loc(), Loc::new(5, 12));
        assert!(e.message.contains("'nope' is not one"), "{e}");
        let e = one_error("SCHEMA >\n    a String,\n    v UInt64\nENGINE ReplacingMergeTree\nENGINE_SORTING_KEY a, v\nENGINE_VER v\n");
        assert!(
            e.message.contains("cannot be included in the sorting key"),
            "{e}"
        );
        let e = one_error(
            "SCHEMA >\n    a Nullable(String),\n    b String\nENGINE_SORTING_KEY \"b, a\"\n",
        );
        assert!(e.message.contains("nullable column 'a'"), "{e}");
        let e = one_error("SCHEMA >\n    a AggregateFunction(count, UInt64),\n    b String\nENGINE_SORTING_KEY tuple(b, `a`)\n");
        assert!(e.message.contains("AggregateFunction"), "{e}");
        // Expressions over Nullable columns are fine (ifNull makes them non-nullable).
        parse_datasource(
            "d",
            "SCHEMA >\n    a Nullable(String)\nENGINE_SORTING_KEY \"ifNull(a, '')\"\n",
        )
        .unwrap();
        parse_datasource(
            "d",
            "SCHEMA >\n    pk String\nENGINE ReplacingMergeTree\nENGINE_SORTING_KEY pk\nENGINE_VER _timestamp\nIMPORT_CONNECTION_NAME ddb\nIMPORT_TABLE_ARN arn\n",
        )
        .expect("meta columns of connector data sources are not in the schema");
        let ds =
            parse_datasource("d", "SCHEMA >\n    a String,\n    v UInt64\nENGINE_VER v\n").unwrap();
        assert!(ds.warnings[0]
            .message
            .contains("ignored with engine MergeTree"));
    }

    #[test]
    fn duplicate_columns() {
        let e = one_error("SCHEMA >\n    a String,\n    `a` Int32\n");
        assert_eq!(e.loc(), Loc::new(3, 5));
    }

    #[test]
    fn legacy_keywords() {
        let ds = parse_datasource("d", "VERSION 1\nSCHEMA >\n    a String\n").unwrap();
        assert_eq!(ds.warnings[0].loc, Loc::new(1, 1));
        let errs = errors("INCLUDE \"x.incl\"\nSOURCE x\nSCHEMA >\n    a String\n");
        assert_eq!(errs.len(), 2);
    }
}
