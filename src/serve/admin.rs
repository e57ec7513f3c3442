//! Admin routes: deploying or building a project on a running server, and stopping it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::json;

use super::{authorize, deployments, multipart, ApiError, AppState, Scope};
use crate::project::Project;
use crate::runtime::DeployReport;

/// The body of `POST /v1/deploy`: every datafile of the project by relative path.
#[derive(serde::Deserialize)]
pub struct DeployBody {
    /// Relative path → file text.
    pub files: BTreeMap<String, String>,
}

fn is_datafile(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|x| x.to_str()),
        Some("datasource" | "pipe" | "connection")
    )
}

/// A relative path that stays inside the project (no `..`, not absolute).
fn safe_relative(path: &str) -> Option<PathBuf> {
    let p = PathBuf::from(path);
    let ok = !path.is_empty()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
        && is_datafile(&p);
    ok.then_some(p)
}

fn write_files(
    root: &Path,
    files: &BTreeMap<String, PathBuf>,
    texts: &BTreeMap<String, String>,
) -> std::io::Result<()> {
    for (name, rel) in files {
        let target = root.join(rel);
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(target, &texts[name])?;
    }
    Ok(())
}

/// Every datafile under `dir` (skipping hidden folders).
fn existing_datafiles(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() && !e.file_name().to_string_lossy().starts_with('.') {
            existing_datafiles(&path, out);
        } else if is_datafile(&path) {
            out.push(path);
        }
    }
}

/// The datafiles of a deploy or build body: Petrel's JSON form (`{"files": {path: text}}`)
/// or the Forward CLI's `multipart/form-data` (one `data_project://` part per datafile, named
/// by its relative path; the `context://` part is ignored).
async fn datafiles(headers: &HeaderMap, body: Bytes) -> Result<BTreeMap<String, String>, ApiError> {
    let Some(boundary) = multipart::boundary(headers) else {
        let body: DeployBody = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body is neither multipart/form-data nor JSON of the form {{\"files\": {{path: text}}}}: {e}"
            ))
        })?;
        return Ok(body.files);
    };
    let mut files = BTreeMap::new();
    for part in multipart::parts(&boundary, body).await? {
        match part.name.as_str() {
            "data_project://" => {
                let name = part.file_name.ok_or_else(|| {
                    ApiError::bad_request("a data_project:// part has no file name (its relative path)")
                })?;
                let text = String::from_utf8(part.data.to_vec()).map_err(|_| {
                    ApiError::bad_request(format!("'{name}' is not UTF-8 text"))
                })?;
                files.insert(name, text);
            }
            "data_project_vendored://" => {
                return Err(ApiError::bad_request(
                    "vendored datafiles (other workspaces' resources) are not supported: Petrel serves one workspace",
                ))
            }
            _ => {}
        }
    }
    Ok(files)
}

/// How a deploy ended.
pub(super) enum Outcome {
    /// The project does not load, or the running one refuses it: one entry per error, with
    /// the datafile it is in when known.
    Failed(LoadErrors),
    /// `check`: what a deploy would change.
    Checked(DeployReport),
    /// Swapped in (an empty report: nothing changed, nothing was touched).
    Deployed(DeployReport),
}

/// An error line `path:line:col: cause` split into the datafile and the whole message.
fn located(error: String) -> (Option<String>, String) {
    let file = error
        .split(':')
        .next()
        .filter(|f| is_datafile(Path::new(f)))
        .map(str::to_string);
    (file, error)
}

/// Load errors, each with the datafile it is in when known.
pub(super) type LoadErrors = Vec<(Option<String>, String)>;

/// A staged project and its datafiles' relative paths by name.
type Staged = (Project, BTreeMap<String, PathBuf>);

/// Loads `texts` (relative path → datafile text) as a whole project in a staging folder:
/// the project, or its load errors.
fn stage(
    state: &AppState,
    texts: &BTreeMap<String, String>,
) -> Result<Result<Staged, LoadErrors>, ApiError> {
    let mut files = BTreeMap::new();
    for name in texts.keys() {
        let rel = safe_relative(name).ok_or_else(|| {
            ApiError::bad_request(format!("'{name}' is not a relative path to a datafile"))
        })?;
        files.insert(name.clone(), rel);
    }
    let root = state.runtime.project().root.clone();
    // A folder of its own, so that a check beside a deploy does not share it.
    static STAGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = STAGED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let staging = root
        .join(".petrel")
        .join(format!("deploy-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    write_files(&staging, &files, texts).map_err(internal)?;
    let (staged, errors) = Project::load_with_errors(&staging);
    let _ = std::fs::remove_dir_all(&staging);
    if !errors.is_empty() {
        let prefix = format!("{}/", staging.display());
        return Ok(Err(errors
            .iter()
            .map(|e| located(e.strip_prefix(&prefix).unwrap_or(e).to_string()))
            .collect()));
    }
    Ok(Ok((staged, files)))
}

fn internal(e: std::io::Error) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// Validates `texts` (relative path → datafile text) as a whole project and, unless `check`,
/// swaps it in and writes it over the project's datafiles (so a restart runs it).
pub(super) async fn apply(
    state: &AppState,
    texts: BTreeMap<String, String>,
    check: bool,
    destructive: bool,
) -> Result<Outcome, ApiError> {
    let _one_at_a_time = CHANGING.lock().await;
    apply_locked(state, texts, check, destructive, None).await
}

/// A refused project as one 400 error: its errors joined.
pub(super) fn refused(errors: LoadErrors) -> ApiError {
    ApiError::bad_request(
        errors
            .into_iter()
            .map(|(_, e)| e)
            .collect::<Vec<_>>()
            .join("; "),
    )
}

/// Applies the datafiles process 0 of a cluster validated and is deploying (on a follower).
pub(super) async fn apply_from_coordinator(
    state: &AppState,
    texts: BTreeMap<String, String>,
    destructive: bool,
) -> Result<Response, ApiError> {
    match apply(state, texts, false, destructive).await? {
        Outcome::Failed(errors) => Err(refused(errors)),
        Outcome::Checked(report) | Outcome::Deployed(report) => Ok(Json(report).into_response()),
    }
}

/// Plans `pipe` of `project` with its parameters' defaults: what Tinybird checks when a pipe
/// is created, whether or not it is published (a deploy plans only what it serves).
pub(super) fn plans_with_defaults(project: &Project, pipe: &str) -> Result<(), String> {
    let defaults = project
        .build_parameter_sets(pipe)
        .into_iter()
        .next()
        .unwrap_or_default();
    project
        .render_pipe(pipe, &defaults)
        .and_then(|rendered| project.plan_rendered(pipe, &rendered))
        .map(|_| ())
        .map_err(|e| project.relative_message(&e.to_string()))
}

/// One change of the project at a time: deploys, builds and pushes rewrite the project's
/// files, and an edit must read the files the previous change wrote.
static CHANGING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Applies `edits` to the project's datafiles as they are now (a text writes the file,
/// `None` removes it) and deploys the result, with no other change in between. With
/// `must_plan`, that pipe of the edited project must plan with its defaults.
pub(super) async fn apply_edits(
    state: &AppState,
    edits: Vec<(PathBuf, Option<String>)>,
    must_plan: Option<&str>,
) -> Result<Outcome, ApiError> {
    let _one_at_a_time = CHANGING.lock().await;
    let root = state.runtime.project().root.clone();
    let mut texts = project_texts(&root).map_err(internal)?;
    for (rel, text) in edits {
        let rel = rel.to_string_lossy().into_owned();
        match text {
            Some(text) => texts.insert(rel, text),
            None => texts.remove(&rel),
        };
    }
    apply_locked(state, texts, false, false, must_plan).await
}

async fn apply_locked(
    state: &AppState,
    texts: BTreeMap<String, String>,
    check: bool,
    destructive: bool,
    must_plan: Option<&str>,
) -> Result<Outcome, ApiError> {
    let (staged, files) = match stage(state, &texts)? {
        Ok(staged) => staged,
        Err(errors) => return Ok(Outcome::Failed(errors)),
    };
    if let Some(Err(e)) = must_plan.map(|pipe| plans_with_defaults(&staged, pipe)) {
        return Ok(Outcome::Failed(vec![(None, e)]));
    }
    let root = state.runtime.project().root.clone();
    // TOKEN lines change no view, but change who may read what.
    let tokens_changed = staged.tokens != state.runtime.project().tokens;
    // Validate against the running project before touching its folder.
    let report = match state.runtime.deploy(staged, destructive, true).await {
        Ok(r) => r,
        Err(e) => return Ok(Outcome::Failed(vec![(None, e.to_string())])),
    };
    if check {
        return Ok(Outcome::Checked(report));
    }
    if report.is_empty() && !tokens_changed {
        return Ok(Outcome::Deployed(report));
    }
    // Every other process of a cluster applies it first: process 0's views of the new
    // project then find every process's datasources.
    if let Some(role) = state.runtime.leading() {
        role.push_deploy(&texts, destructive).await.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("the deploy did not reach every process of the cluster: {e}"),
            )
        })?;
    }
    // Replace the project's datafiles, so a restart runs what was deployed.
    let mut old = Vec::new();
    existing_datafiles(&root, &mut old);
    for p in old {
        std::fs::remove_file(&p).map_err(internal)?;
    }
    write_files(&root, &files, &texts).map_err(internal)?;
    let project = Project::load(&root)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.join("\n")))?;
    // The datafiles' TOKEN lines may have changed.
    let wanted = project
        .declared_tokens()
        .into_iter()
        .map(|(name, grants)| (name, grants.into_iter().map(Into::into).collect()))
        .collect();
    let tokens = super::Tokens::load(
        &root.join(".petrel").join("tokens.json"),
        &state.admin_token,
        wanted,
    )
    .map_err(internal)?;
    state.tokens.replace_with(tokens);
    Ok(Outcome::Deployed(
        state.runtime.deploy(project, destructive, false).await?,
    ))
}

fn flag(params: &BTreeMap<String, String>, key: &str) -> bool {
    params.get(key).is_some_and(|v| v == "true" || v == "1")
}

/// The project's datafiles as a deploy takes them: relative path → text.
fn project_texts(root: &Path) -> std::io::Result<BTreeMap<String, String>> {
    let mut files = Vec::new();
    existing_datafiles(root, &mut files);
    let mut texts = BTreeMap::new();
    for f in files {
        if let Ok(rel) = f.strip_prefix(root) {
            texts.insert(
                rel.to_string_lossy().into_owned(),
                std::fs::read_to_string(&f)?,
            );
        }
    }
    Ok(texts)
}

/// `POST /v1/deploy?check=true&allow_destructive_operations=true` (admin): validates the
/// project, then swaps it in and records it as the live deployment. Pipes whose plans are
/// unchanged keep their views and state. Answers Petrel's fields (`result`, `build`, `errors`
/// as text) and Tinybird's `deployment`.
pub async fn deploy(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &params, &Scope::Admin)?;
    let (check, destructive) = (
        flag(&params, "check"),
        flag(&params, "allow_destructive_operations"),
    );
    let texts = datafiles(&headers, body).await?;
    let answer = match apply(&state, texts, check, destructive).await? {
        Outcome::Failed(errors) => {
            let texts: Vec<&String> = errors.iter().map(|(_, e)| e).collect();
            let deployment = deployments::unrecorded("failed", None, tinybird_errors(&errors));
            return Ok((
                StatusCode::BAD_REQUEST,
                Json(json!({"result": "failed", "errors": texts, "deployment": deployment})),
            )
                .into_response());
        }
        Outcome::Checked(report) => {
            let result = if report.is_empty() {
                "no_changes"
            } else {
                "success"
            };
            let deployment = deployments::unrecorded("calculating", Some(&report), json!([]));
            json!({"result": result, "check": true, "build": report, "deployment": deployment})
        }
        Outcome::Deployed(report) if report.is_empty() => {
            let mut deployment = deployments::unrecorded("data_ready", Some(&report), json!([]));
            deployment["id"] = state.deployments.live()["id"].clone();
            json!({"result": "no_changes", "check": false, "build": report, "deployment": deployment})
        }
        Outcome::Deployed(report) => {
            let deployment = state.deployments.record(&report);
            json!({"result": "success", "build": report, "deployment": deployment})
        }
    };
    Ok(Json(answer).into_response())
}

/// Errors as Tinybird lists them: `{filename, error}` (no `filename` when not in one file).
fn tinybird_errors(errors: &[(Option<String>, String)]) -> serde_json::Value {
    errors
        .iter()
        .map(|(file, error)| match file {
            Some(f) => json!({"filename": f, "error": error}),
            None => json!({"error": error}),
        })
        .collect()
}

/// `POST /v1/build` (admin): the Forward CLI's `tb build` in local mode. Petrel serves one
/// workspace, so a build is a deploy that may replace datasources (a development build
/// starts changed datasources afresh, as Tinybird Local's build workspace does).
pub async fn build(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &params, &Scope::Admin)?;
    let texts = datafiles(&headers, body).await?;
    match apply(&state, texts, false, true).await? {
        Outcome::Failed(errors) => Ok((
            StatusCode::BAD_REQUEST,
            Json(json!({"result": "failed", "errors": tinybird_errors(&errors)})),
        )
            .into_response()),
        Outcome::Checked(report) | Outcome::Deployed(report) => {
            let mut build = serde_json::to_value(&report).unwrap_or_default();
            build["feedback"] = json!([]);
            Ok(Json(json!({"result": "success", "build": build})).into_response())
        }
    }
}

/// `POST /v0/admin/shutdown` (admin, loopback): stops the server (`petrel local stop`).
/// Every acknowledged row is already in the datasource logs.
pub async fn shutdown(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &params, &Scope::Admin)?;
    if !peer.ip().is_loopback() {
        return Err(ApiError::forbidden("shutdown answers only on loopback"));
    }
    let runtime = state.runtime.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let code = match runtime.stop_durably().await {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!(error = %e, "stopping: waiting rows were not all written");
                1
            }
        };
        std::process::exit(code);
    });
    Ok(Json(serde_json::json!({"result": "stopping"})).into_response())
}
