//! `.pipe` files: nodes of SQL, and what the pipe publishes (endpoint, materialization, copy, sink).

use std::collections::{BTreeMap, HashSet};

use crate::datasource::{TokenDef, TokenScope};
use crate::lexer::{
    is_valid_schedule, read_commands, split_tags, sql_block, substitute_env, token_line, unquote,
    Command, Ctx, SqlBlock,
};
use crate::{DatafileError, DatafileWarning, Loc, Setting, SqlMap};

/// A parsed `.pipe` file.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipe {
    /// Resource name (the file stem).
    pub name: String,
    /// `DESCRIPTION` given before the first NODE.
    pub description: Option<String>,
    /// `TAGS` entries.
    pub tags: Vec<String>,
    /// `TOKEN name READ` lines (pipes only take READ tokens).
    pub tokens: Vec<TokenDef>,
    /// The nodes, in file order (later nodes may read earlier ones by name).
    pub nodes: Vec<Node>,
    /// What the pipe publishes, taken from its one non-standard node.
    pub kind: PipeKind,
    /// What Tinybird would warn about (deprecated keywords, repeated keywords, ...).
    pub warnings: Vec<DatafileWarning>,
    /// True when the file uses syntax only Tinybird Classic accepts (`ENGINE` settings in a
    /// pipe): its project is read with Classic's rules (untyped pipes are published).
    pub classic_syntax: bool,
}

/// One `NODE` of a pipe.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Node name.
    pub name: String,
    /// `DESCRIPTION` given after the NODE line.
    pub description: Option<String>,
    /// The SQL text: the block dedented and right-trimmed, or only stripped when it starts with `%`.
    pub sql: String,
    /// File position of the SQL text's first character.
    pub sql_loc: Loc,
    /// Maps SQL positions back to the file.
    pub sql_map: SqlMap,
    /// The node's `TYPE` (Standard when absent).
    pub node_type: NodeType,
    /// Every node keyword other than NODE, SQL and DESCRIPTION, keyed by upper-case keyword (`TYPE`,
    /// `DATASOURCE`, `COPY_SCHEDULE`, `EXPORT_*`, ...). `MODE` is stored as `COPY_MODE`.
    pub settings: BTreeMap<String, Setting>,
    /// Where the NODE keyword is.
    pub loc: Loc,
}

impl Node {
    /// The value of a node keyword (upper case, e.g. `"DATASOURCE"`).
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings.get(key).map(|s| s.value.as_str())
    }
}

/// A node's `TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeType {
    /// No TYPE (or `standard`): an intermediate node.
    Standard,
    /// `endpoint`: published over HTTP.
    Endpoint,
    /// `materialized`: feeds a data source on every insert.
    Materialized,
    /// `copy`: copies its result into a data source on a schedule or on demand.
    Copy,
    /// `sink`: exports its result to Kafka, S3 or GCS.
    Sink,
    /// `stream`: undocumented Tinybird type, accepted and recorded.
    Stream,
}

impl NodeType {
    fn parse(text: &str) -> Option<NodeType> {
        Some(match text.to_lowercase().as_str() {
            "" | "standard" => NodeType::Standard,
            "endpoint" => NodeType::Endpoint,
            "materialized" => NodeType::Materialized,
            "copy" => NodeType::Copy,
            "sink" => NodeType::Sink,
            "stream" => NodeType::Stream,
            _ => return None,
        })
    }
}

/// `COPY_MODE` of a copy pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CopyMode {
    /// Append the result to the target (the default).
    Append,
    /// Replace the target's content with the result.
    Replace,
}

/// Where a sink exports to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkTarget {
    /// A Kafka topic (`EXPORT_KAFKA_TOPIC`).
    Kafka {
        /// Topic name.
        topic: String,
    },
    /// Files in an S3 or GCS bucket.
    Blob {
        /// `EXPORT_BUCKET_URI`.
        bucket_uri: String,
        /// `EXPORT_FILE_TEMPLATE`, e.g. `events_{date}`.
        file_template: String,
        /// `EXPORT_FORMAT` (csv, ndjson, parquet).
        format: Option<String>,
        /// `EXPORT_COMPRESSION`.
        compression: Option<String>,
        /// `EXPORT_WRITE_STRATEGY` (or the legacy `EXPORT_STRATEGY`).
        write_strategy: Option<String>,
    },
}

/// What a pipe publishes. A pipe has at most one non-standard node; a pipe without one is Standard
/// (Classic projects treated such pipes as endpoints on their last node: the caller decides).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PipeKind {
    /// No TYPE on any node.
    Standard,
    /// `TYPE endpoint`.
    Endpoint {
        /// The endpoint node.
        node: String,
    },
    /// `TYPE materialized`.
    Materialized {
        /// The materializing node.
        node: String,
        /// `DATASOURCE`: the target data source.
        datasource: String,
        /// `DEPLOYMENT_METHOD` (only `alter`).
        deployment_method: Option<String>,
    },
    /// `TYPE copy`.
    Copy {
        /// The copy node.
        node: String,
        /// `TARGET_DATASOURCE`.
        target_datasource: String,
        /// `COPY_SCHEDULE` (cron or `@on-demand`; `None` means on demand).
        schedule: Option<String>,
        /// `COPY_MODE`/`MODE`.
        mode: CopyMode,
    },
    /// `TYPE sink`.
    Sink {
        /// The sink node.
        node: String,
        /// `EXPORT_CONNECTION_NAME`.
        connection: String,
        /// `EXPORT_SCHEDULE` (cron or `@on-demand`).
        schedule: String,
        /// Kafka topic or bucket.
        target: SinkTarget,
    },
    /// `TYPE stream`.
    Stream {
        /// The stream node.
        node: String,
    },
}

const NODE_KEYS: [&str; 18] = [
    "type",
    "datasource",
    "target_datasource",
    "copy_schedule",
    "copy_mode",
    "mode",
    "deployment_method",
    "on_demand_compute",
    "export_connection_name",
    "export_schedule",
    "export_bucket_uri",
    "export_file_template",
    "export_format",
    "export_strategy",
    "export_compression",
    "export_write_strategy",
    "export_kafka_topic",
    // Petrel's extension: the envelope of a Kafka sink's messages.
    "export_kafka_envelope",
];
const OTHER_KEYS: [&str; 8] = [
    "node",
    "sql",
    "description",
    "tags",
    "token",
    "include",
    "version",
    "export_service",
];

/// Classic materialized nodes could also set the target's engine (`ENGINE`, `ENGINE_*`).
const CLASSIC_ENGINE_KEYS: [&str; 12] = [
    "engine",
    "engine_sorting_key",
    "engine_partition_key",
    "engine_primary_key",
    "engine_sampling_key",
    "engine_ttl",
    "engine_settings",
    "engine_ver",
    "engine_is_deleted",
    "engine_sign",
    "engine_version",
    "engine_columns",
];

fn is_keyword(key: &str) -> bool {
    NODE_KEYS.contains(&key) || OTHER_KEYS.contains(&key) || CLASSIC_ENGINE_KEYS.contains(&key)
}

/// A node while the file is read.
struct NodeDraft {
    name: String,
    loc: Loc,
    description: Option<String>,
    sql: Option<SqlBlock>,
    /// Whether a SQL keyword was seen (so a broken one is not also reported as missing).
    sql_seen: bool,
    settings: BTreeMap<String, Setting>,
}

/// Parses a `.pipe` file. SQL is kept as text (templates are not rendered); `$VAR` references in node
/// settings are kept as written.
pub fn parse_pipe(name: &str, text: &str) -> Result<Pipe, Vec<DatafileError>> {
    parse_pipe_with_env(name, text, &|_| None)
}

/// Like [`parse_pipe`], replacing `$VAR`/`${VAR}` in node names and node settings with `env(VAR)`.
pub fn parse_pipe_with_env(
    name: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Pipe, Vec<DatafileError>> {
    let mut ctx = Ctx::new("pipe", env);
    let commands = read_commands(text, &is_keyword, &mut ctx.errors);
    let mut pipe = Pipe {
        name: name.to_string(),
        description: None,
        tags: Vec::new(),
        tokens: Vec::new(),
        nodes: Vec::new(),
        kind: PipeKind::Standard,
        warnings: Vec::new(),
        classic_syntax: false,
    };
    let mut drafts: Vec<NodeDraft> = Vec::new();
    for cmd in &commands {
        apply(&mut ctx, &mut pipe, &mut drafts, cmd);
    }
    if drafts.is_empty() {
        ctx.error(Loc::new(1, 1), "Pipe data file must have at least one node");
    }
    pipe.nodes = finish_nodes(&mut ctx, drafts);
    pipe.kind = validate(&mut ctx, &pipe);
    let (mut pipe, warnings) = ctx.finish(pipe)?;
    pipe.warnings = warnings;
    Ok(pipe)
}

fn apply(ctx: &mut Ctx<'_>, pipe: &mut Pipe, drafts: &mut Vec<NodeDraft>, cmd: &Command) {
    let key = cmd.key.as_str();
    if ctx.legacy(cmd) {
        return;
    }
    if NODE_KEYS.contains(&key) {
        node_setting(ctx, drafts.last_mut(), cmd);
        return;
    }
    if CLASSIC_ENGINE_KEYS.contains(&key) {
        pipe.classic_syntax = true;
        ctx.warn(
            cmd.loc,
            format!(
                "{} in a pipe is Classic syntax (Tinybird Forward rejects it): the target data source's own file defines its engine",
                cmd.name.to_uppercase()
            ),
        );
        node_setting(ctx, drafts.last_mut(), cmd);
        return;
    }
    match key {
        "node" => {
            if cmd.block.is_some() {
                ctx.error(cmd.loc, "NODE does not support multiline arguments");
                return;
            }
            match cmd.args.first() {
                Some(arg) => drafts.push(NodeDraft {
                    name: substitute_env(unquote(&arg.text), ctx.env),
                    loc: cmd.loc,
                    description: None,
                    sql: None,
                    sql_seen: false,
                    settings: BTreeMap::new(),
                }),
                None => ctx.error(cmd.loc, "NODE requires a node name"),
            }
        }
        "sql" => {
            let lines = ctx.require_block(cmd);
            let Some(draft) = drafts.last_mut() else {
                if lines.is_some() {
                    ctx.error(cmd.loc, "SQL must be called after a NODE command");
                }
                return;
            };
            draft.sql_seen = true;
            let Some(lines) = lines else {
                return;
            };
            match sql_block(lines) {
                Some(block) => {
                    if draft.sql.is_some() {
                        ctx.warn(cmd.loc, "SQL is set more than once; the last value is used");
                    }
                    draft.sql = Some(block);
                }
                None => ctx.error(cmd.loc, format!("Empty SQL in node '{}'", draft.name)),
            }
        }
        "description" => {
            let description = ctx
                .scalar_or_block(cmd)
                .map(|s| s.value)
                .filter(|d| !d.is_empty());
            match drafts.last_mut() {
                Some(draft) => draft.description = description,
                None => pipe.description = description,
            }
        }
        "tags" => {
            if let Some(setting) = ctx.scalar_or_block(cmd) {
                pipe.tags.extend(split_tags(&setting.value));
            }
        }
        "token" => {
            if let Some(token) = token_line(ctx, cmd) {
                if token.permission == "READ" {
                    pipe.tokens.push(TokenDef {
                        name: token.name,
                        scope: TokenScope::Read,
                        loc: cmd.loc,
                    });
                } else {
                    ctx.error(
                        token.permission_loc,
                        format!(
                            "Invalid permission {} for token {}. Only READ is allowed for pipes",
                            token.permission, token.name
                        ),
                    );
                }
            }
        }
        "export_service" => ctx.deprecated_warning(
            cmd,
            " If you're using an S3 or GCS connection, you don't need this setting anymore.",
        ),
        _ => ctx.unknown(cmd),
    }
}

fn node_setting(ctx: &mut Ctx<'_>, draft: Option<&mut NodeDraft>, cmd: &Command) {
    let Some(draft) = draft else {
        ctx.error(
            cmd.loc,
            format!(
                "{} must be called after a NODE command",
                cmd.name.to_uppercase()
            ),
        );
        return;
    };
    let setting = if cmd.key.starts_with("engine") {
        ctx.scalar_or_block(cmd).map(|mut s| {
            s.value = substitute_env(&s.value, ctx.env);
            s
        })
    } else {
        ctx.scalar_env(cmd)
    };
    let Some(setting) = setting else {
        return;
    };
    if cmd.key == "deployment_method" && !setting.value.eq_ignore_ascii_case("alter") {
        ctx.error(
            setting.loc,
            format!(
                "{} is not an allowed value for DEPLOYMENT_METHOD. Use one of: alter",
                setting.value
            ),
        );
        return;
    }
    let key = if cmd.key == "mode" {
        "COPY_MODE".to_string()
    } else {
        cmd.key.to_uppercase()
    };
    let mut slot = draft.settings.remove(&key);
    ctx.set(&mut slot, cmd, setting);
    draft.settings.extend(slot.map(|v| (key, v)));
}

fn finish_nodes(ctx: &mut Ctx<'_>, drafts: Vec<NodeDraft>) -> Vec<Node> {
    let mut nodes = Vec::new();
    let mut names = HashSet::new();
    for draft in drafts {
        if !names.insert(draft.name.clone()) {
            ctx.error(
                draft.loc,
                format!("Node name '{}' is used more than once", draft.name),
            );
        }
        let node_type = match draft.settings.get("TYPE") {
            Some(t) => NodeType::parse(&t.value).unwrap_or_else(|| {
                ctx.error(
                    t.loc,
                    format!(
                        "Invalid node '{}' of type ({}). Allowed node types: endpoint, materialized, copy, sink",
                        draft.name, t.value
                    ),
                );
                NodeType::Standard
            }),
            None => NodeType::Standard,
        };
        let Some(sql) = draft.sql else {
            if !draft.sql_seen {
                ctx.error(draft.loc, format!("Node '{}' has no SQL", draft.name));
            }
            continue;
        };
        if !sql.text.starts_with('%') {
            if let Some((line, col)) = find_in_text(&sql.text, "{{") {
                ctx.error(
                    sql.map.file_loc(line, col),
                    "In order to make a query dynamic, it is necessary to start the query with a % character",
                );
            }
        }
        nodes.push(Node {
            name: draft.name,
            description: draft.description,
            sql: sql.text,
            sql_loc: sql.loc,
            sql_map: sql.map,
            node_type,
            settings: draft.settings,
            loc: draft.loc,
        });
    }
    nodes
}

/// 1-based (line, column) of the first occurrence of `needle`, columns counted in characters.
fn find_in_text(text: &str, needle: &str) -> Option<(usize, usize)> {
    text.lines().enumerate().find_map(|(n, line)| {
        line.find(needle)
            .map(|byte| (n + 1, line[..byte].chars().count() + 1))
    })
}

/// Reports every setting of `node` that is not in `allowed` (TYPE is always allowed).
fn check_allowed(ctx: &mut Ctx<'_>, node: &Node, label: &str, allowed: &[&str]) {
    for (key, setting) in &node.settings {
        if key != "TYPE" && !allowed.contains(&key.as_str()) {
            ctx.error(
                setting.loc,
                format!(
                    "{label} node '{}' has an invalid attribute ({key})",
                    node.name
                ),
            );
        }
    }
}

/// Reports the keys of `required` that `node` lacks; true when none is missing.
fn check_required(ctx: &mut Ctx<'_>, node: &Node, message: &str, required: &[&str]) -> bool {
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|k| !node.settings.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        let loc = node.settings.get("TYPE").map_or(node.loc, |s| s.loc);
        ctx.error(loc, format!("{message}: {}", missing.join(", ")));
    }
    missing.is_empty()
}

fn value(node: &Node, key: &str) -> String {
    node.setting(key).unwrap_or_default().to_string()
}

fn validate(ctx: &mut Ctx<'_>, pipe: &Pipe) -> PipeKind {
    let mut kind = PipeKind::Standard;
    let mut non_standard = 0;
    for node in &pipe.nodes {
        if node.node_type != NodeType::Standard {
            non_standard += 1;
            if non_standard > 1 {
                let loc = node.settings.get("TYPE").map_or(node.loc, |s| s.loc);
                ctx.error(
                    loc,
                    "Multiple non-standard nodes in pipe. There can only be one",
                );
            }
        }
        if let Some(k) = validate_node(ctx, node) {
            kind = k;
        }
    }
    kind
}

fn validate_node(ctx: &mut Ctx<'_>, node: &Node) -> Option<PipeKind> {
    let name = node.name.clone();
    match node.node_type {
        NodeType::Standard => {
            check_allowed(ctx, node, "Standard", &[]);
            None
        }
        NodeType::Endpoint => Some(PipeKind::Endpoint { node: name }),
        NodeType::Stream => Some(PipeKind::Stream { node: name }),
        NodeType::Materialized => {
            let mut allowed = vec!["DATASOURCE".to_string(), "DEPLOYMENT_METHOD".to_string()];
            allowed.extend(CLASSIC_ENGINE_KEYS.iter().map(|k| k.to_uppercase()));
            let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
            check_allowed(ctx, node, "Materialized", &allowed);
            check_required(
                ctx,
                node,
                "Some materialized node params have been provided, but the following required ones are missing",
                &["DATASOURCE"],
            )
            .then(|| PipeKind::Materialized {
                node: name,
                datasource: value(node, "DATASOURCE"),
                deployment_method: node.setting("DEPLOYMENT_METHOD").map(str::to_string),
            })
        }
        NodeType::Copy => validate_copy(ctx, node),
        NodeType::Sink => validate_sink(ctx, node),
    }
}

fn validate_copy(ctx: &mut Ctx<'_>, node: &Node) -> Option<PipeKind> {
    check_allowed(
        ctx,
        node,
        "Copy",
        &[
            "TARGET_DATASOURCE",
            "COPY_SCHEDULE",
            "COPY_MODE",
            "ON_DEMAND_COMPUTE",
        ],
    );
    let complete = check_required(
        ctx,
        node,
        "Some copy node params have been provided, but the following required ones are missing",
        &["TARGET_DATASOURCE"],
    );
    let mode = match node.settings.get("COPY_MODE") {
        None => CopyMode::Append,
        Some(m) if m.value.eq_ignore_ascii_case("append") => CopyMode::Append,
        Some(m) if m.value.eq_ignore_ascii_case("replace") => CopyMode::Replace,
        Some(m) => {
            ctx.error(m.loc, "COPY node mode must be append or replace");
            CopyMode::Append
        }
    };
    if let Some(schedule) = node.settings.get("COPY_SCHEDULE") {
        if !is_valid_schedule(&schedule.value) {
            ctx.error(
                schedule.loc,
                "COPY node schedule must be @on-demand or a valid cron expression.",
            );
        }
    }
    complete.then(|| PipeKind::Copy {
        node: node.name.clone(),
        target_datasource: value(node, "TARGET_DATASOURCE"),
        schedule: node.setting("COPY_SCHEDULE").map(str::to_string),
        mode,
    })
}

fn validate_sink(ctx: &mut Ctx<'_>, node: &Node) -> Option<PipeKind> {
    const KAFKA: [&str; 3] = [
        "EXPORT_CONNECTION_NAME",
        "EXPORT_KAFKA_TOPIC",
        "EXPORT_SCHEDULE",
    ];
    const BLOB_REQUIRED: [&str; 4] = [
        "EXPORT_CONNECTION_NAME",
        "EXPORT_SCHEDULE",
        "EXPORT_BUCKET_URI",
        "EXPORT_FILE_TEMPLATE",
    ];
    const BLOB_ALLOWED: [&str; 8] = [
        "EXPORT_CONNECTION_NAME",
        "EXPORT_SCHEDULE",
        "EXPORT_BUCKET_URI",
        "EXPORT_FILE_TEMPLATE",
        "EXPORT_FORMAT",
        "EXPORT_COMPRESSION",
        "EXPORT_WRITE_STRATEGY",
        "EXPORT_STRATEGY",
    ];
    let type_loc = node.settings.get("TYPE").map_or(node.loc, |s| s.loc);
    let name = &node.name;
    if !node.settings.contains_key("EXPORT_CONNECTION_NAME") {
        ctx.error(
            type_loc,
            format!("Sink node '{name}' is missing required parameter 'EXPORT_CONNECTION_NAME'"),
        );
    }
    if let Some(schedule) = node.settings.get("EXPORT_SCHEDULE") {
        if schedule.value.contains("{{") {
            ctx.error(
                schedule.loc,
                "EXPORT_SCHEDULE must be a literal value (tb_secret is not allowed)",
            );
        } else if !is_valid_schedule(&schedule.value) {
            ctx.error(
                schedule.loc,
                format!(
                    "Sink node '{name}' has invalid export_schedule '{}'. Must be @on-demand or a valid cron expression.",
                    schedule.value
                ),
            );
        }
    }
    let has_topic = node.settings.contains_key("EXPORT_KAFKA_TOPIC");
    let has_blob = node.settings.contains_key("EXPORT_BUCKET_URI")
        || node.settings.contains_key("EXPORT_FILE_TEMPLATE");
    let target = match (has_topic, has_blob) {
        (true, true) => {
            ctx.error(
                type_loc,
                format!("Sink node '{name}' has mixed Kafka and S3/GCS parameters. Use either Kafka parameters (EXPORT_KAFKA_TOPIC) or S3/GCS parameters (EXPORT_BUCKET_URI, EXPORT_FILE_TEMPLATE), not both."),
            );
            None
        }
        (true, false) => {
            for (key, setting) in &node.settings {
                if key != "TYPE" && key != "EXPORT_KAFKA_ENVELOPE" && !KAFKA.contains(&key.as_str())
                {
                    ctx.error(
                        setting.loc,
                        format!("Kafka sink node '{name}' has invalid parameter '{key}'. Only EXPORT_KAFKA_TOPIC, EXPORT_SCHEDULE, and EXPORT_CONNECTION_NAME are allowed for Kafka sinks."),
                    );
                }
            }
            check_required(
                ctx,
                node,
                &format!("Kafka sink node '{name}' is missing required parameters"),
                &KAFKA,
            )
            .then(|| SinkTarget::Kafka {
                topic: value(node, "EXPORT_KAFKA_TOPIC"),
            })
        }
        (false, true) => {
            for (key, setting) in &node.settings {
                if key != "TYPE" && !BLOB_ALLOWED.contains(&key.as_str()) {
                    ctx.error(
                        setting.loc,
                        format!("S3/GCS sink node '{name}' has invalid parameter '{key}'"),
                    );
                }
            }
            check_required(
                ctx,
                node,
                &format!("S3/GCS sink node '{name}' is missing required parameters"),
                &BLOB_REQUIRED,
            )
            .then(|| SinkTarget::Blob {
                bucket_uri: value(node, "EXPORT_BUCKET_URI"),
                file_template: value(node, "EXPORT_FILE_TEMPLATE"),
                format: node.setting("EXPORT_FORMAT").map(str::to_string),
                compression: node.setting("EXPORT_COMPRESSION").map(str::to_string),
                write_strategy: node
                    .setting("EXPORT_WRITE_STRATEGY")
                    .or_else(|| node.setting("EXPORT_STRATEGY"))
                    .map(str::to_string),
            })
        }
        (false, false) => {
            ctx.error(
                type_loc,
                format!("Sink node '{name}' is missing required parameters. For Kafka sinks, provide 'EXPORT_KAFKA_TOPIC'. For S3/GCS sinks, provide 'EXPORT_BUCKET_URI' and 'EXPORT_FILE_TEMPLATE'."),
            );
            None
        }
    };
    let connection = node.setting("EXPORT_CONNECTION_NAME")?.to_string();
    let schedule = node.setting("EXPORT_SCHEDULE")?.to_string();
    Some(PipeKind::Sink {
        node: name.clone(),
        connection,
        schedule,
        target: target?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"DESCRIPTION >
    Top pages

TOKEN "dashboard" READ

NODE filtered
SQL >
    %
    SELECT pathname FROM page_views
    WHERE timestamp >= {{ DateTime(start, '2024-01-01 00:00:00') }}
    {% if defined(country) %} AND country = {{ String(country) }} {% end %}

NODE endpoint
SQL >
    %
    SELECT pathname, count() AS views FROM filtered GROUP BY pathname
    ORDER BY views DESC LIMIT {{ Int32(limit, 10, description="rows") }}

TYPE endpoint
"#;

    fn errors(text: &str) -> Vec<DatafileError> {
        parse_pipe("p", text).unwrap_err()
    }

    fn one_error(text: &str) -> DatafileError {
        let errs = errors(text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        errs.into_iter().next().unwrap()
    }

    #[test]
    fn reference_example() {
        let pipe = parse_pipe("top_pages", EXAMPLE).unwrap();
        assert_eq!(pipe.name, "top_pages");
        assert_eq!(pipe.description.as_deref(), Some("Top pages"));
        assert_eq!(pipe.tokens.len(), 1);
        assert_eq!(pipe.tokens[0].name, "dashboard");
        assert_eq!(pipe.nodes.len(), 2);
        let first = &pipe.nodes[0];
        assert_eq!(first.name, "filtered");
        assert_eq!(first.loc, Loc::new(6, 1));
        assert!(
            first.sql.starts_with("%\n    SELECT pathname"),
            "{:?}",
            first.sql
        );
        assert!(first.sql.ends_with("{% end %}"));
        assert_eq!(first.sql_loc, Loc::new(8, 5));
        assert_eq!(first.node_type, NodeType::Standard);
        assert_eq!(pipe.nodes[1].node_type, NodeType::Endpoint);
        assert_eq!(
            pipe.kind,
            PipeKind::Endpoint {
                node: "endpoint".into()
            }
        );
    }

    #[test]
    fn sql_is_dedented_and_blank_lines_dropped() {
        let text = "NODE n\nSQL >\n\n        SELECT a,\n\n          b   \n        FROM t   \n  # comment\n    WHERE x\nDESCRIPTION node doc\n";
        let pipe = parse_pipe("p", text).unwrap();
        let node = &pipe.nodes[0];
        assert_eq!(
            node.sql,
            "    SELECT a,\n      b   \n    FROM t   \nWHERE x"
        );
        assert_eq!(node.sql_loc, Loc::new(4, 5));
        assert_eq!(node.sql_map.lines, [4, 6, 7, 9]);
        assert_eq!(node.sql_map.file_loc(2, 9), Loc::new(6, 13));
        assert_eq!(node.sql_map.file_loc(4, 1), Loc::new(9, 5));
        assert_eq!(node.description.as_deref(), Some("node doc"));
        // An unindented line that does not start with a keyword stays in the block (no dedent then).
        let pipe = parse_pipe("p", "NODE n\nSQL >\n    SELECT a\nFROM t\n").unwrap();
        assert_eq!(pipe.nodes[0].sql, "    SELECT a\nFROM t");
        assert_eq!(pipe.nodes[0].sql_loc, Loc::new(3, 1));
    }

    #[test]
    fn percent_sql_is_only_stripped() {
        let pipe = parse_pipe("p", "NODE n\nSQL >\n    %\n    SELECT {{ x }}   \n").unwrap();
        assert_eq!(pipe.nodes[0].sql, "%\n    SELECT {{ x }}");
        assert_eq!(pipe.nodes[0].sql_loc, Loc::new(3, 5));
        assert_eq!(pipe.nodes[0].sql_map.file_loc(2, 5), Loc::new(4, 5));
    }

    #[test]
    fn template_without_percent_is_an_error() {
        let e = one_error("NODE n\nSQL >\n    SELECT 1\n    WHERE a = {{ String(a) }}\n");
        assert_eq!(e.loc(), Loc::new(4, 15));
        assert!(
            e.message.contains("start the query with a % character"),
            "{e}"
        );
    }

    #[test]
    fn type_case_and_position() {
        // Classic: TYPE upper case, placed after SQL; also before SQL.
        let pipe = parse_pipe("p", "NODE a\nSQL >\n    SELECT 1\nTYPE ENDPOINT\n").unwrap();
        assert_eq!(pipe.kind, PipeKind::Endpoint { node: "a".into() });
        let pipe = parse_pipe("p", "NODE a\nTYPE Endpoint\nSQL >\n    SELECT 1\n").unwrap();
        assert_eq!(pipe.nodes[0].node_type, NodeType::Endpoint);
        let pipe = parse_pipe("p", "NODE a\nSQL >\n    SELECT 1\nTYPE stream\n").unwrap();
        assert_eq!(pipe.kind, PipeKind::Stream { node: "a".into() });
        let pipe = parse_pipe("p", "NODE a\nSQL >\n    SELECT 1\n").unwrap();
        assert_eq!(pipe.kind, PipeKind::Standard);
        let e = one_error("NODE a\nSQL >\n    SELECT 1\nTYPE api\n");
        assert_eq!(e.loc(), Loc::new(4, 6));
        assert!(e.message.contains("Invalid node 'a' of type (api)"), "{e}");
    }

    #[test]
    fn materialized() {
        let pipe = parse_pipe(
            "p",
            "NODE m\nSQL >\n    SELECT countState() AS c FROM t\nTYPE materialized\nDATASOURCE views_mv\nDEPLOYMENT_METHOD alter\n",
        )
        .unwrap();
        assert_eq!(
            pipe.kind,
            PipeKind::Materialized {
                node: "m".into(),
                datasource: "views_mv".into(),
                deployment_method: Some("alter".into())
            }
        );
        assert_eq!(pipe.nodes[0].setting("DATASOURCE"), Some("views_mv"));
        let pipe = parse_pipe(
            "p",
            "NODE m\nSQL >\n    SELECT 1 AS a\nTYPE materialized\nDATASOURCE t\nENGINE \"AggregatingMergeTree\"\nENGINE_SORTING_KEY \"a\"\n",
        )
        .unwrap();
        assert_eq!(
            pipe.nodes[0].setting("ENGINE"),
            Some("AggregatingMergeTree")
        );
        assert_eq!(pipe.nodes[0].setting("ENGINE_SORTING_KEY"), Some("a"));
        assert_eq!(
            pipe.warnings.len(),
            2,
            "Classic ENGINE settings are accepted with a warning"
        );
        let e = one_error("NODE e\nSQL >\n    SELECT 1\nTYPE endpoint\nNODE s\nSQL >\n    SELECT 1\nENGINE MergeTree\n");
        assert!(
            e.message
                .contains("Standard node 's' has an invalid attribute (ENGINE)"),
            "{e}"
        );
        let e = one_error("NODE m\nSQL >\n    SELECT 1\nTYPE materialized\n");
        assert_eq!(e.loc(), Loc::new(4, 6));
        assert!(e.message.ends_with("missing: DATASOURCE"), "{e}");
        let e = one_error("NODE m\nSQL >\n    SELECT 1\nTYPE materialized\nDATASOURCE d\nDEPLOYMENT_METHOD drop\n");
        assert!(e.message.contains("DEPLOYMENT_METHOD"), "{e}");
    }

    #[test]
    fn copy() {
        let pipe = parse_pipe(
            "p",
            "NODE c\nSQL >\n    SELECT 1\nTYPE copy\nTARGET_DATASOURCE snap\nCOPY_SCHEDULE 0 * * * *\nMODE replace\n",
        )
        .unwrap();
        assert_eq!(
            pipe.kind,
            PipeKind::Copy {
                node: "c".into(),
                target_datasource: "snap".into(),
                schedule: Some("0 * * * *".into()),
                mode: CopyMode::Replace
            }
        );
        assert_eq!(pipe.nodes[0].setting("COPY_MODE"), Some("replace"));
        let errs = errors(
            "NODE c\nSQL >\n    SELECT 1\nTYPE COPY\nCOPY_SCHEDULE hourly\nCOPY_MODE upsert\n",
        );
        let messages: Vec<&str> = errs.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(errs.len(), 3, "{messages:?}");
        assert!(messages[0].ends_with("missing: TARGET_DATASOURCE"));
        assert!(messages[1].starts_with("COPY node schedule"));
        assert!(messages[2].starts_with("COPY node mode"));
    }

    #[test]
    fn sinks() {
        let pipe = parse_pipe(
            "p",
            "NODE s\nSQL >\n    SELECT 1\nTYPE sink\nEXPORT_CONNECTION_NAME my_kafka\nEXPORT_KAFKA_TOPIC out\nEXPORT_SCHEDULE */5 * * * *\n",
        )
        .unwrap();
        assert_eq!(
            pipe.kind,
            PipeKind::Sink {
                node: "s".into(),
                connection: "my_kafka".into(),
                schedule: "*/5 * * * *".into(),
                target: SinkTarget::Kafka {
                    topic: "out".into()
                }
            }
        );
        let pipe = parse_pipe(
            "p",
            "NODE s\nSQL >\n    SELECT 1\nTYPE SINK\nEXPORT_SERVICE s3_iamrole\nEXPORT_CONNECTION_NAME s3\nEXPORT_SCHEDULE @on-demand\nEXPORT_BUCKET_URI s3://b/x\nEXPORT_FILE_TEMPLATE \"events_{date}\"\nEXPORT_FORMAT ndjson\nEXPORT_STRATEGY @new\n",
        )
        .unwrap();
        assert!(matches!(
            &pipe.kind,
            PipeKind::Sink { target: SinkTarget::Blob { file_template, format, write_strategy, .. }, .. }
                if file_template == "events_{date}" && format.as_deref() == Some("ndjson") && write_strategy.as_deref() == Some("@new")
        ));
        assert_eq!(pipe.warnings.len(), 1, "EXPORT_SERVICE is deprecated");
        let e = one_error("NODE s\nSQL >\n    SELECT 1\nTYPE sink\nEXPORT_CONNECTION_NAME k\nEXPORT_KAFKA_TOPIC t\n");
        assert!(
            e.message
                .ends_with("missing required parameters: EXPORT_SCHEDULE"),
            "{e}"
        );
        let e = one_error("NODE s\nSQL >\n    SELECT 1\nTYPE sink\nEXPORT_CONNECTION_NAME k\nEXPORT_KAFKA_TOPIC t\nEXPORT_SCHEDULE @on-demand\nEXPORT_FORMAT csv\n");
        assert_eq!(e.loc(), Loc::new(8, 15));
        let e = one_error("NODE s\nSQL >\n    SELECT 1\nTYPE sink\nEXPORT_CONNECTION_NAME k\nEXPORT_SCHEDULE @on-demand\n");
        assert!(
            e.message
                .contains("is missing required parameters. For Kafka"),
            "{e}"
        );
        let e = one_error("NODE s\nSQL >\n    SELECT 1\nTYPE sink\nEXPORT_CONNECTION_NAME k\nEXPORT_KAFKA_TOPIC t\nEXPORT_SCHEDULE {{tb_secret('S')}}\n");
        assert!(e.message.contains("literal"), "{e}");
    }

    #[test]
    fn structural_errors_are_all_reported() {
        let text = "TYPE endpoint\nNODE a\nSQL SELECT 1\nNODE b\nSQL >\n    SELECT 1\nDATASOURCE x\nTYPE endpoint\nNODE c\nSQL >\n    SELECT 2\nTYPE endpoint\nNODE b\nSQL >\n    SELECT 3\nTOKEN t APPEND\nKAFKA_TOPIC x\n";
        let errs = errors(text);
        let rendered: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(
            rendered,
            [
                "1:1: TYPE must be called after a NODE command",
                "3:1: SQL must be multiline. Use > to start a multiline block",
                "12:6: Multiple non-standard nodes in pipe. There can only be one",
                "13:1: Node name 'b' is used more than once",
                "16:9: Invalid permission APPEND for token t. Only READ is allowed for pipes",
                "17:1: KAFKA_TOPIC is not a valid option in pipe files.",
            ]
        );
    }

    #[test]
    fn standard_nodes_take_no_settings() {
        let e = one_error("NODE a\nSQL >\n    SELECT 1\nDATASOURCE x\n");
        assert_eq!(e.loc(), Loc::new(4, 12));
        assert!(
            e.message
                .contains("Standard node 'a' has an invalid attribute (DATASOURCE)"),
            "{e}"
        );
    }

    #[test]
    fn empty_pipes_and_sql() {
        let e = one_error("DESCRIPTION nothing\n");
        assert_eq!(
            e.to_string(),
            "1:1: Pipe data file must have at least one node"
        );
        let e = one_error("NODE a\nSQL >\n\n    # only a comment\n");
        assert_eq!(e.to_string(), "2:1: Empty SQL in node 'a'");
    }

    #[test]
    fn node_names_and_tags() {
        let env = |k: &str| (k == "SUFFIX").then(|| "v2".to_string());
        let pipe = parse_pipe_with_env(
            "p",
            "TAGS \"a,b\"\nNODE \"n_$SUFFIX\"\nSQL >\n    SELECT 1\nVERSION 3\n",
            &env,
        )
        .unwrap();
        assert_eq!(pipe.nodes[0].name, "n_v2");
        assert_eq!(pipe.tags, ["a", "b"]);
        assert_eq!(pipe.warnings.len(), 1);
    }
}
