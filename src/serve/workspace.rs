//! The one workspace a Petrel server is, answered the way Tinybird's clients ask about it
//! before anything else: `GET /v0/workspace` (the Classic CLI's first call, also `/v1`),
//! `GET /v0/user/workspaces` (also `/v1`, with or without the trailing slash) and
//! `GET /v0/regions`. A Petrel server serves one project, so it has one workspace, named after
//! the project's folder; its ids are stable across restarts.

use std::collections::BTreeSet;
use std::sync::Mutex;

use serde_json::json;

use super::*;

/// Further names clients gave the one workspace (`POST /v1/workspaces?name=X`: the Forward
/// CLI's local mode creates a build workspace named after the project path and reads it back).
/// Kept in memory: a restarted server starts with its own name only.
#[derive(Debug, Default)]
pub struct WorkspaceNames(Mutex<BTreeSet<String>>);

/// The most names kept (each is one entry of `GET /v0/user/workspaces`).
const MAX_NAMES: usize = 100;

impl WorkspaceNames {
    fn all(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    fn add(&self, name: &str) -> bool {
        let mut names = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if names.len() >= MAX_NAMES && !names.contains(name) {
            return false;
        }
        names.insert(name.to_string());
        true
    }
}

/// The workspace's name: the project folder's name.
fn workspace_name(state: &AppState) -> String {
    let project = state.runtime.project();
    project
        .root
        .canonicalize()
        .unwrap_or_else(|_| project.root.clone())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "petrel".into())
}

/// The workspace's id and the one (local) user's id.
fn ids(state: &AppState) -> (String, String) {
    let name = workspace_name(state);
    (
        crate::project::resource_id(&format!("workspace:{name}")),
        crate::project::resource_id(&format!("user:{name}")),
    )
}

/// `GET /v0/workspace`: the workspace the token belongs to (any valid token; 403 otherwise).
pub(super) async fn workspace(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = known_token(&state, &headers, &params)?;
    let admin = state.tokens.allows(token, &Scope::Admin);
    let (id, user_id) = ids(&state);
    Ok(Json(json!({
        "id": id,
        "name": workspace_name(&state),
        "user_id": user_id,
        "user_email": "local@petrel",
        "scope": if admin { Some("admin") } else { None },
        "plan": "dev",
    }))
    .into_response())
}

/// `GET /v0/user/workspaces`: the workspaces of the token's user: this one, under its own
/// name and every name a client gave it. An admin token also sees the workspace's token in
/// each entry (the Forward CLI uses it for every later call).
pub(super) async fn user_workspaces(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = known_token(&state, &headers, &params)?;
    let admin = state.tokens.allows(token, &Scope::Admin);
    let (id, user_id) = ids(&state);
    let mut names = vec![workspace_name(&state)];
    names.extend(state.workspace_names.all());
    let workspaces: Vec<serde_json::Value> = names
        .into_iter()
        .map(|name| {
            let mut entry = json!({
                "id": id,
                "name": name,
                "role": "admin",
                "plan": "dev",
                "is_branch": false,
            });
            if admin {
                entry["token"] = json!(token);
            }
            entry
        })
        .collect();
    Ok(Json(json!({
        "id": user_id,
        "email": "local@petrel",
        "organization_id": null,
        "workspaces": workspaces,
    }))
    .into_response())
}

/// `POST /v1/workspaces?name=X` (admin): gives the one workspace the name `X` too, so a client
/// that creates a workspace by name finds it; the data and tokens stay the server's.
pub(super) async fn create_workspace(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &params, &Scope::Admin)?;
    let name = params
        .get("name")
        .ok_or_else(|| ApiError::bad_request("the 'name' parameter is required"))?;
    let valid = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        return Err(ApiError::bad_request(format!(
            "invalid workspace name '{name}': use letters, digits, '_' and '-'"
        )));
    }
    if !state.workspace_names.add(name) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("this server already answers to {MAX_NAMES} workspace names"),
        ));
    }
    let (id, _) = ids(&state);
    Ok(Json(json!({ "id": id, "name": name })).into_response())
}

/// `GET /v0/regions`: the one region, this server (no token needed, as Tinybird's).
pub(super) async fn regions(headers: HeaderMap) -> Response {
    let host = base_url(&headers).unwrap_or_default();
    Json(json!({
        "regions": [{
            "name": "local",
            "host": host,
            "api_host": host,
            "provider": "petrel",
        }],
    }))
    .into_response()
}

/// `GET /examples/query.http?pipe=P&token=T`: the URL to read an endpoint with, as text (the
/// Forward CLI's `endpoint ls` shows it).
pub(super) async fn example_query(
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let pipe = params
        .get("pipe")
        .ok_or_else(|| ApiError::bad_request("the 'pipe' parameter is required"))?;
    let base = base_url(&headers).unwrap_or_else(|| "http://localhost".into());
    let token = params
        .get("token")
        .map(|t| format!("?token={t}"))
        .unwrap_or_default();
    Ok((
        [(header::CONTENT_TYPE, "text/plain")],
        format!("{base}/v0/pipes/{pipe}.json{token}"),
    )
        .into_response())
}
