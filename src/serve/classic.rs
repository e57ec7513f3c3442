//! Tinybird Classic's resource calls, as `tb push` makes them: the tables a node reads
//! (`POST /v0/sql_tables`), a datasource created from its parsed definition
//! (`POST /v0/datasources?mode=create`), a pipe created from its nodes (`POST /v0/pipes`)
//! and published (`POST /v0/pipes/NAME/nodes/NODE/endpoint`). Petrel's project is its
//! datafiles, so each call writes the datafile the resource would have come from and deploys
//! the project with it: a pushed resource is live and persisted like a deployed one.

use std::collections::BTreeMap;
use std::path::PathBuf;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::admin::{self, Outcome};
use super::{authorize, form_params, known_token, ApiError, AppState, Scope};

/// `POST /v0/sql_tables` (any valid token; `q` in the query or a form): the tables `q`
/// reads, `{"tables": [[database, table], ...]}` (database empty when unqualified). With
/// `raising=true` SQL that does not parse is a 400; otherwise it reads no tables.
pub(super) async fn sql_tables(
    State(state): State<AppState>,
    Query(mut params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if let Some(form) = form_params(&headers, &body)? {
        params.extend(form);
    }
    known_token(&state, &headers, &params)?;
    let q = params
        .get("q")
        .ok_or_else(|| ApiError::bad_request("the 'q' parameter is required"))?;
    let tables = match petrel_sql::tables_read(q) {
        Ok(tables) => tables,
        Err(e) if params.get("raising").is_some_and(|v| v == "true") => {
            return Err(ApiError::bad_request(format!(
                "cannot parse the query: {e}"
            )))
        }
        Err(_) => Vec::new(),
    };
    let tables: Vec<[String; 2]> = tables.into_iter().map(|(db, t)| [db, t]).collect();
    Ok(Json(json!({ "tables": tables })).into_response())
}

/// Indents every line of `text` by four spaces (blank lines stay blank), as datafile blocks.
fn indented(text: &str) -> String {
    text.trim_matches('\n')
        .lines()
        .map(|l| {
            if l.trim().is_empty() {
                String::new()
            } else {
                format!("    {l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A datafile setting written as `KEY "value"` (quotes inside escaped).
fn setting(key: &str, value: &str) -> Result<String, ApiError> {
    Ok(format!(
        "{key} \"{}\"\n",
        one_line(key, value)?.replace('"', "\\\"")
    ))
}

/// `value`, refused when it spans lines (it would write further directives).
fn one_line<'a>(key: &str, value: &'a str) -> Result<&'a str, ApiError> {
    if value.contains(['\n', '\r']) {
        return Err(ApiError::bad_request(format!(
            "'{}' must be one line",
            key.to_ascii_lowercase()
        )));
    }
    Ok(value)
}

/// The `.datasource` text of a datasource definition as the Classic CLI sends it.
fn datasource_text(params: &BTreeMap<String, String>) -> Result<String, ApiError> {
    if let Some(key) = params.keys().find(|k| {
        k.starts_with("kafka_") || matches!(k.as_str(), "service" | "connector" | "bucket_uri")
    }) {
        return Err(ApiError::bad_request(format!(
            "'{key}': datasources fed by connectors are created from datafiles (`tb deploy` or `petrel deploy`)"
        )));
    }
    let schema = params
        .get("schema")
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| ApiError::bad_request("the 'schema' parameter is required"))?;
    let mut text = String::new();
    if let Some(d) = params.get("description").filter(|d| !d.trim().is_empty()) {
        text.push_str(&format!("DESCRIPTION >\n{}\n\n", indented(d)));
    }
    text.push_str(&format!("SCHEMA >\n{}\n\n", indented(schema)));
    for (param, key) in [
        ("engine", "ENGINE"),
        ("engine_sorting_key", "ENGINE_SORTING_KEY"),
        ("engine_partition_key", "ENGINE_PARTITION_KEY"),
        ("engine_ttl", "ENGINE_TTL"),
        ("engine_ver", "ENGINE_VER"),
        ("engine_is_deleted", "ENGINE_IS_DELETED"),
        ("engine_sign", "ENGINE_SIGN"),
        ("engine_version", "ENGINE_VERSION"),
        ("engine_summing_columns", "ENGINE_SUMMING_COLUMNS"),
        ("engine_settings", "ENGINE_SETTINGS"),
    ] {
        if let Some(v) = params.get(param).filter(|v| !v.trim().is_empty()) {
            text.push_str(&setting(key, v)?);
        }
    }
    Ok(text)
}

/// Deploys the project's datafiles with `edits` (relative path → new text, or `None` to
/// remove the file); with `must_plan`, that pipe must plan with its defaults. A project that
/// does not load, or a refused change, is a 400 naming the errors.
async fn push(
    state: &AppState,
    edits: Vec<(PathBuf, Option<String>)>,
    must_plan: Option<&str>,
) -> Result<(), ApiError> {
    match admin::apply_edits(state, edits, must_plan).await? {
        Outcome::Failed(errors) => Err(admin::refused(errors)),
        Outcome::Checked(_) | Outcome::Deployed(_) => Ok(()),
    }
}

/// The pipe as `GET /v0/pipes/NAME` describes it, after a push.
fn pipe_answer(state: &AppState, name: &str) -> Result<serde_json::Value, ApiError> {
    let project = state.runtime.project();
    let pipe = project
        .pipes
        .get(name)
        .ok_or_else(|| ApiError::bad_request(format!("the pipe '{name}' did not load")))?;
    Ok(super::pipes::pipe_resource(&project, pipe))
}

fn internal(e: std::io::Error) -> ApiError {
    ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// The relative path of a resource's datafile: where it already is, or `folder/NAME.ext`.
fn datafile_path(state: &AppState, existing: Option<PathBuf>, default: String) -> PathBuf {
    let root = state.runtime.project().root.clone();
    existing
        .and_then(|f| f.strip_prefix(&root).ok().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(default))
}

/// A name that can be a datafile's stem (and a table name).
fn resource_name(name: &str) -> Result<&str, ApiError> {
    let ok = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(name)
    } else {
        Err(ApiError::bad_request(format!(
            "'{name}' is not a valid name: use letters, digits and underscores, not starting with a digit"
        )))
    }
}

/// `POST /v0/datasources?mode=create` (admin; the definition in the query or a form): writes
/// the datasource's datafile and deploys it. Answers `{"datasource": {...}}`.
pub(super) async fn create_datasource(
    state: &AppState,
    params: &BTreeMap<String, String>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    authorize(state, headers, params, &Scope::Admin)?;
    let name = resource_name(
        params
            .get("name")
            .ok_or_else(|| ApiError::bad_request("the 'name' parameter is required"))?,
    )?
    .to_string();
    let text = datasource_text(params)?;
    let existing = state
        .runtime
        .project()
        .datasources
        .get(&name)
        .map(|d| d.file.clone());
    let rel = datafile_path(state, existing, format!("datasources/{name}.datasource"));
    push(state, vec![(rel, Some(text))], None).await?;
    let described = state.runtime.describe_datasource_named(&name);
    Ok(Json(json!({ "datasource": described })).into_response())
}

/// `POST /v0/pipes` (admin): a pipe from its nodes as the Classic CLI sends it,
/// `{"name", "description", "nodes": [{"name", "sql", "description", "type", "datasource",
/// ...}]}`. A node of type `materialized` writes into its `datasource`, one of type `copy`
/// into its `target_datasource`; the pipe is not published until its endpoint is set.
pub(super) async fn create_pipe(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &params, &Scope::Admin)?;
    let name = resource_name(
        body["name"]
            .as_str()
            .ok_or_else(|| ApiError::bad_request("the pipe's 'name' is required"))?,
    )?
    .to_string();
    let nodes = body["nodes"]
        .as_array()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("the pipe needs at least one node"))?;
    // Pushing over a pipe (`--force`) keeps its TOKEN lines and its endpoint node, so that
    // readers and subscribers of a published pipe are not cut off between the two calls.
    let (old_file, old_endpoint) = {
        let project = state.runtime.project();
        let old = project.pipes.get(&name);
        (
            old.map(|p| p.file.clone()),
            old.and_then(|p| {
                p.endpoint
                    .and_then(|i| p.nodes.get(i))
                    .map(|n| n.name.clone())
            }),
        )
    };
    let mut text: String = old_file
        .as_ref()
        .and_then(|f| std::fs::read_to_string(f).ok())
        .map(|t| {
            t.lines()
                .filter(|l| l.starts_with("TOKEN "))
                .map(|l| format!("{l}\n"))
                .collect()
        })
        .unwrap_or_default();
    if let Some(d) = body["description"]
        .as_str()
        .filter(|d| !d.trim().is_empty())
    {
        text.push_str(&format!("DESCRIPTION >\n{}\n\n", indented(d)));
    }
    let mut target = None;
    for node in nodes {
        let str_of = |k: &str| node[k].as_str().filter(|v| !v.trim().is_empty());
        let node_name = resource_name(
            str_of("name").ok_or_else(|| ApiError::bad_request("each node needs a 'name'"))?,
        )?;
        let sql = str_of("sql")
            .ok_or_else(|| ApiError::bad_request(format!("node '{node_name}' has no 'sql'")))?;
        text.push_str(&format!("NODE {node_name}\n"));
        if let Some(d) = str_of("description") {
            text.push_str(&format!("DESCRIPTION >\n{}\n\n", indented(d)));
        }
        text.push_str(&format!("SQL >\n{}\n\n", indented(sql)));
        match str_of("type").or(str_of("node_type")).map(str::to_ascii_lowercase).as_deref() {
            None | Some("standard" | "default" | "endpoint") => {
                if old_endpoint.as_deref() == Some(node_name) {
                    text.push_str("TYPE endpoint\n\n");
                }
            }
            Some("materialized") => {
                let ds = str_of("datasource").ok_or_else(|| {
                    ApiError::bad_request(format!("materialized node '{node_name}' names no 'datasource'"))
                })?;
                let ds = resource_name(ds)?;
                text.push_str(&format!("TYPE materialized\nDATASOURCE {ds}\n\n"));
                target = Some(ds.to_string());
            }
            Some("copy") => {
                let ds = str_of("target_datasource")
                    .or(body["target_datasource"].as_str())
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("copy node '{node_name}' names no 'target_datasource'"))
                    })?;
                let ds = resource_name(ds)?;
                text.push_str(&format!("TYPE copy\nTARGET_DATASOURCE {ds}\n"));
                if let Some(s) = str_of("copy_schedule").filter(|s| *s != "@on-demand") {
                    text.push_str(&format!("COPY_SCHEDULE {}\n", one_line("copy_schedule", s)?));
                }
                if let Some(m) = str_of("mode").or(str_of("copy_mode")) {
                    text.push_str(&format!("COPY_MODE {}\n", one_line("copy_mode", m)?));
                }
                text.push('\n');
                target = Some(ds.to_string());
            }
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "node '{node_name}' is of type '{other}': sink and stream pipes are created from datafiles"
                )))
            }
        }
    }
    let rel = datafile_path(&state, old_file, format!("pipes/{name}.pipe"));
    // Tinybird refuses a pipe whose nodes do not plan when it is created, published or not.
    push(&state, vec![(rel, Some(text))], Some(&name)).await?;
    let mut answer = pipe_answer(&state, &name)?;
    if let Some(ds) = target {
        answer["datasource"] = json!({ "name": ds });
        answer["created_datasource"] = json!(false);
    }
    Ok(Json(answer).into_response())
}

/// Rewrites a pipe's datafile so that `node` (a name or a node id) is its endpoint, or so
/// that it has none (`publish` false), and deploys it; answers the pipe.
async fn set_endpoint(
    state: &AppState,
    pipe_name: &str,
    node: &str,
    publish: bool,
) -> Result<Response, ApiError> {
    let (file, node_name) = {
        let project = state.runtime.project();
        let pipe = project
            .pipes
            .get(pipe_name)
            .ok_or_else(|| ApiError::not_found(format!("The pipe '{pipe_name}' does not exist")))?;
        let node_id = |n: &str| crate::project::resource_id(&format!("{}.{n}", pipe.name));
        let found = pipe
            .nodes
            .iter()
            .find(|n| n.name == node || node_id(&n.name) == node)
            .ok_or_else(|| {
                ApiError::not_found(format!("The pipe '{pipe_name}' has no node '{node}'"))
            })?;
        (pipe.file.clone(), found.name.clone())
    };
    let text = std::fs::read_to_string(&file).map_err(internal)?;
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().eq_ignore_ascii_case("type endpoint"))
        .map(str::to_string)
        .collect();
    if publish {
        let start = lines
            .iter()
            .position(|l| l.trim_end() == format!("NODE {node_name}"))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "node '{node_name}' is not at the start of a line of {}",
                    file.display()
                ))
            })?;
        let end = lines[start + 1..]
            .iter()
            .position(|l| l.starts_with("NODE "))
            .map_or(lines.len(), |i| start + 1 + i);
        lines.insert(end, "TYPE endpoint".to_string());
        lines.insert(end + 1, String::new());
    }
    let rel = datafile_path(state, Some(file), format!("pipes/{pipe_name}.pipe"));
    push(state, vec![(rel, Some(lines.join("\n") + "\n"))], None).await?;
    Ok(Json(pipe_answer(state, pipe_name)?).into_response())
}

/// `POST /v0/pipes/NAME/nodes/NODE/endpoint` (admin) publishes the node as the endpoint;
/// `DELETE` unpublishes the pipe.
pub(super) async fn endpoint(
    method: axum::http::Method,
    State(state): State<AppState>,
    Path((pipe, node)): Path<(String, String)>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &params, &Scope::Admin)?;
    set_endpoint(&state, &pipe, &node, method == axum::http::Method::POST).await
}

/// `PUT /v0/tokens/NAME?scope=..&scope=..` (admin; the scopes may also come as a form): sets
/// a token's scopes, as `tb push` does after pushing a resource its datafile grants to a
/// token. A token the API created gets exactly these scopes (created if new). A token the
/// datafiles declare gets the scopes it lacks as `TOKEN` lines in the resources' datafiles,
/// deployed (it keeps the ones it has: its datafiles are where scopes are removed).
pub(super) async fn alter_token(
    State(state): State<AppState>,
    Path(name): Path<String>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("malformed query: {e}")))?;
    if let Ok(form) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body) {
        pairs.extend(form);
    }
    let params: BTreeMap<String, String> = pairs.iter().cloned().collect();
    authorize(&state, &headers, &params, &Scope::Admin)?;
    let scopes = super::scopes_in(&pairs)?;
    let declared = state.runtime.project().tokens.contains_key(&name);
    if !declared {
        let token = state
            .tokens
            .create_static(&name, scopes)
            .map_err(ApiError::bad_request)?;
        return Ok(Json(token).into_response());
    }
    let has: Vec<Scope> = state
        .tokens
        .all()
        .into_iter()
        .find(|t| t.name == name)
        .map(|t| t.scopes)
        .unwrap_or_default();
    let mut edits: BTreeMap<PathBuf, String> = BTreeMap::new();
    {
        let project = state.runtime.project();
        for scope in scopes.iter().filter(|s| !has.contains(s)) {
            let (file, grant) = match scope {
                Scope::PipesRead(p) => (project.pipes.get(p).map(|p| p.file.clone()), "READ"),
                Scope::DatasourcesAppend(d) => {
                    (project.datasources.get(d).map(|d| d.file.clone()), "APPEND")
                }
                Scope::DatasourcesRead(d) => {
                    (project.datasources.get(d).map(|d| d.file.clone()), "READ")
                }
                Scope::Admin => {
                    return Err(ApiError::bad_request(
                        "a token the datafiles declare cannot be made an admin token",
                    ))
                }
            };
            let file = file.ok_or_else(|| {
                ApiError::bad_request(format!("{scope:?} names a resource that does not exist"))
            })?;
            let text = match edits.remove(&file) {
                Some(t) => t,
                None => std::fs::read_to_string(&file).map_err(internal)?,
            };
            edits.insert(file, format!("TOKEN \"{name}\" {grant}\n{text}"));
        }
    }
    let root = state.runtime.project().root.clone();
    let edits = edits
        .into_iter()
        .filter_map(|(f, t)| {
            f.strip_prefix(&root)
                .ok()
                .map(|r| (r.to_path_buf(), Some(t)))
        })
        .collect();
    push(&state, edits, None).await?;
    let token = state
        .tokens
        .all()
        .into_iter()
        .find(|t| t.name == name)
        .ok_or_else(|| ApiError::not_found(format!("the token '{name}' does not exist")))?;
    Ok(Json(token).into_response())
}

/// `GET /v0/tokens/NAME` (admin): one token, by name.
pub(super) async fn get_token(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &params, &Scope::Admin)?;
    let token = state
        .tokens
        .all()
        .into_iter()
        .find(|t| t.name == name || t.token == name)
        .ok_or_else(|| ApiError::not_found(format!("the token '{name}' does not exist")))?;
    Ok(Json(token).into_response())
}

/// `DELETE /v0/pipes/NAME` (admin): removes the pipe's datafile and deploys the project
/// without it (refused with 400 when other resources read it). Answers 204.
pub(super) async fn delete_pipe(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &params, &Scope::Admin)?;
    let rel = {
        let project = state.runtime.project();
        let pipe = project
            .pipes
            .get(&name)
            .ok_or_else(|| ApiError::not_found(format!("The pipe '{name}' does not exist")))?;
        pipe.file
            .strip_prefix(&project.root)
            .map(PathBuf::from)
            .map_err(|_| {
                ApiError::bad_request(format!("the pipe '{name}' is outside the project"))
            })?
    };
    push(&state, vec![(rel, None)], None).await?;
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}

/// `GET /v0/pipes/NAME/nodes/NODE/analysis` (admin): what `tb push` asks before pushing a
/// materialized pipe (over a temporary copy of it): the pipe's nodes must plan; answers
/// `{"analysis": {"pipe", "node"}, "warnings": []}`, or 400 with the cause.
pub(super) async fn analyze_node(
    State(state): State<AppState>,
    Path((pipe, node)): Path<(String, String)>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &params, &Scope::Admin)?;
    let project = state.runtime.project();
    let p = project
        .pipes
        .get(&pipe)
        .ok_or_else(|| ApiError::not_found(format!("The pipe '{pipe}' does not exist")))?;
    if !p.nodes.iter().any(|n| n.name == node) {
        return Err(ApiError::not_found(format!(
            "The pipe '{pipe}' has no node '{node}'"
        )));
    }
    admin::plans_with_defaults(&project, &pipe).map_err(ApiError::bad_request)?;
    Ok(Json(json!({
        "analysis": {"pipe": {"name": pipe}, "node": {"name": node}},
        "warnings": [],
    }))
    .into_response())
}
