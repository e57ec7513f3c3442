//! Admin routes: deploying a project to a running server, and stopping it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{authorize, ApiError, AppState, Scope};
use crate::project::Project;

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

/// `POST /v1/deploy?check=true&allow_destructive_operations=true` (admin): validates the
/// project, then swaps it in. Pipes whose plans are unchanged keep their views and state.
pub async fn deploy(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    Json(body): Json<DeployBody>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &params, &Scope::Admin)?;
    let flag = |k: &str| params.get(k).is_some_and(|v| v == "true" || v == "1");
    let (check, destructive) = (flag("check"), flag("allow_destructive_operations"));
    let mut files = BTreeMap::new();
    for name in body.files.keys() {
        let rel = safe_relative(name).ok_or_else(|| {
            ApiError::bad_request(format!("'{name}' is not a relative path to a datafile"))
        })?;
        files.insert(name.clone(), rel);
    }
    let internal =
        |e: std::io::Error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    let root = state.runtime.project().root.clone();
    let staging = root
        .join(".petrel")
        .join(format!("deploy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    write_files(&staging, &files, &body.files).map_err(internal)?;
    let (staged, errors) = Project::load_with_errors(&staging);
    let _ = std::fs::remove_dir_all(&staging);
    if !errors.is_empty() {
        let errors: Vec<String> = errors
            .iter()
            .map(|e| {
                e.strip_prefix(&format!("{}/", staging.display()))
                    .unwrap_or(e)
                    .to_string()
            })
            .collect();
        return Ok((
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"result": "failed", "errors": errors})),
        )
            .into_response());
    }
    // Validate against the running project before touching its folder.
    let report = match state.runtime.deploy(staged, destructive, true).await {
        Ok(r) => r,
        Err(e) => {
            return Ok((
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({"result": "failed", "errors": [e.to_string()]})),
            )
                .into_response())
        }
    };
    if check || report.is_empty() {
        let result = if report.is_empty() {
            "no_changes"
        } else {
            "success"
        };
        return Ok(
            Json(serde_json::json!({"result": result, "check": check, "build": report}))
                .into_response(),
        );
    }
    // Replace the project's datafiles, so a restart runs what was deployed.
    let mut old = Vec::new();
    existing_datafiles(&root, &mut old);
    for p in old {
        std::fs::remove_file(&p).map_err(internal)?;
    }
    write_files(&root, &files, &body.files).map_err(internal)?;
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
    let report = state.runtime.deploy(project, destructive, false).await?;
    Ok(Json(serde_json::json!({"result": "success", "build": report})).into_response())
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
