//! The one workspace a Petrel server is, answered the way Tinybird's clients ask about it
//! before anything else: `GET /v0/workspace` (the Classic CLI's first call, also `/v1`),
//! `GET /v0/user/workspaces` (also `/v1`, with or without the trailing slash) and
//! `GET /v0/regions`. A Petrel server serves one project, so it has one workspace, named after
//! the project's folder; its ids are stable across restarts.

use serde_json::json;

use super::*;

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

/// `GET /v0/user/workspaces`: the workspaces of the token's user: this one.
pub(super) async fn user_workspaces(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    known_token(&state, &headers, &params)?;
    let (id, user_id) = ids(&state);
    Ok(Json(json!({
        "id": user_id,
        "email": "local@petrel",
        "workspaces": [{
            "id": id,
            "name": workspace_name(&state),
            "role": "admin",
            "plan": "dev",
            "is_branch": false,
        }],
    }))
    .into_response())
}

/// `GET /v0/regions`: the one region, this server (no token needed, as Tinybird's).
pub(super) async fn regions(headers: HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| format!("http://{h}"))
        .unwrap_or_default();
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
