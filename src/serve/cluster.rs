//! The cluster's HTTP side: `GET /v0/cluster` (every process's status), the routes processes
//! call on each other, and a follower's forwarding of everything but writes to process 0.
//!
//! A follower answers writes (`/v0/events`, appends, their jobs), health, metrics and the
//! cluster routes itself; every other request (endpoints, subscriptions over SSE and
//! WebSocket, SQL, deploys, tokens) goes to process 0, which holds the views, and its answer
//! comes back unchanged.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{Message as AxumMessage, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderName, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WireMessage;

use super::{admin, authorize, ApiError, AppState, Scope};
use crate::cluster::ClusterRole;

/// `GET /v0/cluster` (admin): the processes, their workers, frontiers and lag behind the
/// most advanced one; a process that does not answer is listed with its error.
pub(super) async fn status(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &params, &Scope::Admin)?;
    let local = state.runtime.process_status();
    let Some(role) = state.runtime.cluster() else {
        let mut entry = serde_json::to_value(&local).unwrap_or_default();
        entry["lag_ms"] = 0.into();
        return Ok(Json(
            serde_json::json!({"processes": [entry], "healthy": local.failure.is_none()}),
        )
        .into_response());
    };
    let mut statuses = Vec::new();
    for (process, member) in role.members.iter().enumerate() {
        let status = if process == role.process {
            Ok(local.clone())
        } else {
            role.status_of(process).await
        };
        statuses.push((member, status));
    }
    let newest = statuses
        .iter()
        .filter_map(|(_, s)| s.as_ref().ok().map(|s| s.frontier))
        .max()
        .unwrap_or(0);
    let mut healthy = true;
    let processes: Vec<serde_json::Value> = statuses
        .into_iter()
        .enumerate()
        .map(|(process, (member, status))| {
            let mut entry = match status {
                Ok(s) => {
                    healthy &= s.failure.is_none() && s.ready;
                    let mut entry = serde_json::to_value(&s).unwrap_or_default();
                    entry["lag_ms"] = newest.saturating_sub(s.frontier).into();
                    entry
                }
                Err(e) => {
                    healthy = false;
                    serde_json::json!({"process": process, "error": e.to_string()})
                }
            };
            entry["url"] = member.http_url.clone().into();
            entry["cluster_address"] = member.cluster_address.clone().into();
            entry
        })
        .collect();
    Ok(Json(serde_json::json!({
        "process": role.process,
        "processes": processes,
        "healthy": healthy,
    }))
    .into_response())
}

/// `GET /v0/cluster/local` (admin): this process's own status.
pub(super) async fn local(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &params, &Scope::Admin)?;
    Ok(Json(state.runtime.process_status()).into_response())
}

/// The body of `POST /v0/cluster/visible`.
#[derive(serde::Deserialize)]
pub(super) struct VisibleBody {
    tables: Vec<String>,
    ts: u64,
}

/// `POST /v0/cluster/visible` (admin, process 0): answers once every view reading `tables`
/// has passed `ts`, or 504 after 60 s.
pub(super) async fn visible(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    Json(body): Json<VisibleBody>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &params, &Scope::Admin)?;
    let wait = state.runtime.wait_visible(&body.tables, body.ts);
    match tokio::time::timeout(Duration::from_secs(60), wait).await {
        Ok(()) => Ok(Json(serde_json::json!({"visible": body.ts})).into_response()),
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "the views did not reach the timestamp within 60 s",
        )),
    }
}

/// The body of `POST /v0/cluster/deploy`.
#[derive(serde::Deserialize)]
pub(super) struct DeployBody {
    files: BTreeMap<String, String>,
    #[serde(default)]
    allow_destructive_operations: bool,
}

/// `POST /v0/cluster/deploy` (admin, followers): applies the datafiles process 0 validated
/// and is about to deploy.
pub(super) async fn deploy(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    Json(body): Json<DeployBody>,
) -> Result<Response, ApiError> {
    from_coordinator(&state, &headers, &params)?;
    admin::apply_from_coordinator(&state, body.files, body.allow_destructive_operations).await
}

/// Runs a share operation on every follower when this is process 0 of a cluster (the rows
/// they removed), else nothing (0).
pub(super) async fn on_followers(
    state: &AppState,
    path: &str,
    body: serde_json::Value,
) -> Result<u64, ApiError> {
    let Some(role) = state.runtime.leading() else {
        return Ok(0);
    };
    role.on_every_share(path, &body).await.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("not every process of the cluster removed its rows: {e}"),
        )
    })
}

/// The body of `POST /v0/cluster/truncate` and `/v0/cluster/delete`.
#[derive(serde::Deserialize)]
pub(super) struct ShareBody {
    datasource: String,
    #[serde(default)]
    condition: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

/// Admits a call that process 0 makes to a follower: the admin token, on a follower.
fn from_coordinator(
    state: &AppState,
    headers: &HeaderMap,
    params: &BTreeMap<String, String>,
) -> Result<(), ApiError> {
    authorize(state, headers, params, &Scope::Admin)?;
    if state.runtime.following().is_none() {
        return Err(ApiError::bad_request(
            "only a cluster's followers take this call, from process 0",
        ));
    }
    Ok(())
}

/// `POST /v0/cluster/truncate` (admin, followers): removes this process's share of a
/// datasource's rows.
pub(super) async fn truncate(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    Json(body): Json<ShareBody>,
) -> Result<Response, ApiError> {
    from_coordinator(&state, &headers, &params)?;
    let (rows, ts) = super::datasources::truncate_share(&state, &body.datasource).await?;
    Ok(Json(serde_json::json!({"rows": rows, "ts": ts})).into_response())
}

/// `POST /v0/cluster/delete` (admin, followers): deletes the rows of this process's share
/// that match the condition.
pub(super) async fn delete(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    Json(body): Json<ShareBody>,
) -> Result<Response, ApiError> {
    from_coordinator(&state, &headers, &params)?;
    let condition = body
        .condition
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("'condition' is required"))?;
    let (rows, ts) =
        super::datasources::delete_from_share(&state, &body.datasource, condition, body.dry_run)
            .await?;
    Ok(Json(serde_json::json!({"rows": rows, "ts": ts})).into_response())
}

/// `GET /v0/cluster/datasources` (admin): this process's own figures of its datasources (its
/// share of their rows), which process 0 adds to its own in datasource listings.
pub(super) async fn datasources(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &params, &Scope::Admin)?;
    Ok(
        Json(serde_json::json!({"datasources": state.runtime.describe_datasources()}))
            .into_response(),
    )
}

/// On process 0 of a cluster, adds every follower's share to datasource descriptions
/// (`described`: a JSON array of them): their rows and storage figures, so a listing counts
/// the whole cluster's rows. Elsewhere, leaves them as they are.
pub(super) async fn add_followers_shares(
    state: &AppState,
    described: &mut serde_json::Value,
) -> Result<(), ApiError> {
    let Some(role) = state.runtime.leading() else {
        return Ok(());
    };
    let shares = role.followers_datasources().await.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("a process of the cluster did not describe its datasources: {e}"),
        )
    })?;
    let Some(mine) = described.as_array_mut() else {
        return Ok(());
    };
    for share in &shares {
        for theirs in share["datasources"].as_array().into_iter().flatten() {
            let Some(ds) = mine.iter_mut().find(|d| d["name"] == theirs["name"]) else {
                continue;
            };
            for pointer in [
                "/row_count",
                "/quarantine_rows",
                "/statistics/row_count",
                "/statistics/bytes",
                "/storage/rows",
                "/storage/parts",
                "/storage/part_bytes",
                "/storage/segments",
                "/storage/segment_bytes",
                "/storage/pending_batches",
            ] {
                let add = theirs.pointer(pointer).and_then(|v| v.as_u64());
                if let (Some(field), Some(add)) = (ds.pointer_mut(pointer), add) {
                    if let Some(mine) = field.as_u64() {
                        *field = (mine + add).into();
                    }
                }
            }
        }
    }
    Ok(())
}

/// What a follower does with a request.
enum OnFollower {
    /// Answer it here: health, metrics, `/tokens`, the cluster routes, jobs.
    Answer,
    /// A write: taken here when this process knows its token, else by process 0.
    Write,
    /// Send it to process 0.
    Forward,
}

fn on_follower(request: &Request, params: &BTreeMap<String, String>) -> OnFollower {
    let path = request.uri().path();
    let post = request.method() == axum::http::Method::POST;
    match path {
        "/v0/health" | "/metrics" | "/tokens" => OnFollower::Answer,
        _ if path.starts_with("/v0/cluster") || path.starts_with("/v0/jobs") => OnFollower::Answer,
        "/v0/events" if post => OnFollower::Write,
        "/v0/datasources"
            if post
                && params.contains_key("name")
                && matches!(
                    params.get("mode").map(String::as_str),
                    None | Some("append")
                )
                && !params.contains_key("schema") =>
        {
            OnFollower::Write
        }
        _ if post && path.starts_with("/v1/datasources/") && path.ends_with("/append") => {
            OnFollower::Write
        }
        _ => OnFollower::Forward,
    }
}

/// Headers that belong to one connection, not to the request or answer (RFC 9110 §7.6.1).
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

/// A follower's middleware: forwards what it does not answer itself to process 0.
pub(super) async fn forward(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(role) = state.runtime.following() else {
        return next.run(request).await;
    };
    let params: BTreeMap<String, String> =
        serde_urlencoded::from_str(request.uri().query().unwrap_or("")).unwrap_or_default();
    let here = match on_follower(&request, &params) {
        OnFollower::Answer => true,
        // A write whose token this process does not know (one created through process 0's
        // API since it started) goes to process 0, which checks it and takes the rows.
        OnFollower::Write => super::known_token(&state, request.headers(), &params).is_ok(),
        OnFollower::Forward => false,
    };
    if here {
        return next.run(request).await;
    }
    let is_websocket = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let result = if is_websocket {
        forward_websocket(role, &state, request).await
    } else {
        forward_http(role, request).await
    };
    result.unwrap_or_else(|e| e.into_response())
}

fn unreachable_coordinator(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        format!(
            "this process forwards reads to process 0 of its cluster, which did not answer: {e}"
        ),
    )
}

/// Forwards an HTTP request to process 0 and streams its answer back (SSE included).
async fn forward_http(role: &ClusterRole, request: Request) -> Result<Response, ApiError> {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default()
    });
    let (parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let url = format!("{}{path}", role.coordinator_url());
    let mut upstream = client.request(parts.method.clone(), &url);
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            upstream = upstream.header(name, value);
        }
    }
    let upstream = upstream
        .body(reqwest::Body::wrap_stream(body.into_data_stream()))
        .send()
        .await
        .map_err(unreachable_coordinator)?;
    let mut response = Response::builder().status(upstream.status());
    for (name, value) in upstream.headers() {
        if !hop_by_hop(name) {
            response = response.header(name, value);
        }
    }
    response
        .body(Body::from_stream(upstream.bytes_stream()))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// Forwards a WebSocket subscription: connects to process 0 first (so its refusals, a 401
/// or a 404, reach the client as they are), then relays frames both ways until either end
/// closes.
async fn forward_websocket(
    role: &ClusterRole,
    state: &AppState,
    request: Request,
) -> Result<Response, ApiError> {
    let (mut parts, _) = request.into_parts();
    let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, state)
        .await
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let url = format!("{}{path}", role.coordinator_url().replacen("http", "ws", 1));
    let mut upstream_request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
    for name in [
        header::AUTHORIZATION,
        header::ORIGIN,
        header::SEC_WEBSOCKET_PROTOCOL,
    ] {
        if let Some(value) = parts.headers.get(&name) {
            upstream_request.headers_mut().insert(name, value.clone());
        }
    }
    let upstream = match tokio_tungstenite::connect_async(upstream_request).await {
        Ok((stream, _)) => stream,
        Err(tokio_tungstenite::tungstenite::Error::Http(refused)) => {
            let (head, body) = refused.into_parts();
            let mut response = Response::builder().status(head.status);
            if let Some(t) = head.headers.get(header::CONTENT_TYPE) {
                response = response.header(header::CONTENT_TYPE, t);
            }
            return response
                .body(Body::from(body.unwrap_or_default()))
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()));
        }
        Err(e) => return Err(unreachable_coordinator(e)),
    };
    let protocol = parts
        .headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|p| p.trim().to_string());
    let upgrade = match protocol {
        Some(p) => upgrade.protocols([p]),
        None => upgrade,
    };
    Ok(upgrade.on_upgrade(move |client| async move {
        let (mut client_tx, mut client_rx) = client.split();
        let (mut upstream_tx, mut upstream_rx) = upstream.split();
        let down = async {
            while let Some(Ok(message)) = upstream_rx.next().await {
                let Some(message) = to_client(message) else {
                    continue;
                };
                if client_tx.send(message).await.is_err() {
                    break;
                }
            }
            let _ = client_tx.close().await;
        };
        let up = async {
            while let Some(Ok(message)) = client_rx.next().await {
                if upstream_tx.send(to_upstream(message)).await.is_err() {
                    break;
                }
            }
            let _ = upstream_tx.close().await;
        };
        tokio::select! {
            () = down => {}
            () = up => {}
        }
    }))
}

fn to_client(message: WireMessage) -> Option<AxumMessage> {
    Some(match message {
        WireMessage::Text(t) => AxumMessage::Text(t.as_str().into()),
        WireMessage::Binary(b) => AxumMessage::Binary(b),
        WireMessage::Ping(b) => AxumMessage::Ping(b),
        WireMessage::Pong(b) => AxumMessage::Pong(b),
        WireMessage::Close(frame) => {
            AxumMessage::Close(frame.map(|f| axum::extract::ws::CloseFrame {
                code: f.code.into(),
                reason: f.reason.as_str().into(),
            }))
        }
        WireMessage::Frame(_) => return None,
    })
}

fn to_upstream(message: AxumMessage) -> WireMessage {
    match message {
        AxumMessage::Text(t) => WireMessage::Text(t.as_str().into()),
        AxumMessage::Binary(b) => WireMessage::Binary(b),
        AxumMessage::Ping(b) => WireMessage::Ping(b),
        AxumMessage::Pong(b) => WireMessage::Pong(b),
        AxumMessage::Close(frame) => WireMessage::Close(frame.map(|f| {
            tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: f.code.into(),
                reason: f.reason.as_str().into(),
            }
        })),
    }
}
