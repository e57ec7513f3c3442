//! The HTTP API (axum): events in, endpoints and SQL out, health and tokens.
//!
//! Handlers only parse requests, check tokens and format answers; everything else is the
//! runtime's. Pull requests read maintained views and never wait on the dataflow, except the
//! first request for a new parameter binding, which installs its view and waits for it.

mod admin;
mod auth;
mod classic;
mod cluster;
mod datasources;
mod deployments;
mod error;
mod format;
mod jobs;
mod metrics;
mod multipart;
mod openapi;
mod pipes;
mod sql;
mod subscribe;
mod tokens;
mod url_import;
mod workspace;

pub use deployments::Deployments;
pub use jobs::Jobs;
pub use workspace::WorkspaceNames;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tower_http::decompression::RequestDecompressionLayer;

pub use error::{ApiError, DOCUMENTATION};
pub use format::{render, Format, ResultSet};
pub use metrics::resident_bytes;
pub use tokens::{new_token_value, parse_scope, write_private, Grant, Scope, Token, Tokens};

use crate::runtime::{QueryResult, Runtime};

use auth::{authorize, grant, known_token, request_token};
use datasources::{
    append_datasource, delete_rows, events, get_datasource, list_datasources, truncate_datasource,
};
use pipes::{copy_pipe, list_pipes, pipe, pipe_post, respond, RESERVED_PARAMS};
use sql::{sql_get, sql_post};

/// The largest request body the Events API takes (Tinybird's paid-plan limit); larger ones
/// get 413.
pub const MAX_BODY_BYTES: usize = 100 * 1024 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The running project.
    pub runtime: Arc<Runtime>,
    /// The tokens.
    pub tokens: Arc<Tokens>,
    /// The admin token (returned by `GET /tokens` on loopback).
    pub admin_token: String,
    /// Request counters for `GET /metrics`.
    pub requests: Arc<metrics::RequestMetrics>,
    /// The last import jobs, for clients that follow appends as jobs.
    pub jobs: Arc<Jobs>,
    /// Names clients gave this server's one workspace (`POST /v1/workspaces`).
    pub workspace_names: Arc<WorkspaceNames>,
    /// The numbered deployments clients follow (`GET /v1/deployments`).
    pub deployments: Arc<Deployments>,
}

/// The API's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v0/events", post(events))
        .route("/v0/pipes", get(list_pipes).post(classic::create_pipe))
        .route(
            "/v0/pipes/{name}/nodes/{node}/endpoint",
            post(classic::endpoint).delete(classic::endpoint),
        )
        .route("/v0/sql_tables", post(classic::sql_tables))
        .route(
            "/v0/pipes/{file}",
            get(pipe).post(pipe_post).delete(classic::delete_pipe),
        )
        .route(
            "/v0/pipes/{name}/nodes/{node}/analysis",
            get(classic::analyze_node),
        )
        .route("/v0/pipes/{name}/copy", post(copy_pipe))
        .route("/v0/sql", get(sql_get).post(sql_post))
        .route(
            "/v0/datasources",
            get(list_datasources).post(append_datasource),
        )
        .route("/v0/health", get(health))
        .route("/v0/workspace", get(workspace::workspace))
        .route("/v1/workspace", get(workspace::workspace))
        .route("/v0/user/workspaces", get(workspace::user_workspaces))
        .route("/v0/user/workspaces/", get(workspace::user_workspaces))
        .route("/v1/user/workspaces", get(workspace::user_workspaces))
        .route("/v1/user/workspaces/", get(workspace::user_workspaces))
        .route("/v0/regions", get(workspace::regions))
        .route("/examples/query.http", get(workspace::example_query))
        .route("/v1/workspaces", post(workspace::create_workspace))
        .route("/v1/datasources/{name}/append", post(jobs::append))
        .route("/v0/jobs", get(jobs::jobs))
        .route("/v0/jobs/{id}", get(jobs::job))
        .route("/v0/tokens", get(list_tokens).post(create_token))
        .route(
            "/v0/tokens/{name}",
            get(classic::get_token).put(classic::alter_token),
        )
        .route("/v0/views", get(list_views))
        .route("/v0/datasources/{name}", get(get_datasource))
        .route("/v0/datasources/{name}/truncate", post(truncate_datasource))
        .route("/v0/datasources/{name}/delete", post(delete_rows))
        .route("/tokens", get(local_tokens))
        .route("/", get(live_page))
        .route("/v1/deploy", post(admin::deploy))
        .route("/v1/build", post(admin::build))
        .route("/v1/deployments", get(deployments::list))
        .route(
            "/v1/deployments/{id}",
            get(deployments::get).delete(deployments::delete),
        )
        .route("/v1/deployments/{id}/set-live", post(deployments::set_live))
        .route("/v0/admin/shutdown", post(admin::shutdown))
        .route("/v0/cluster", get(cluster::status))
        .route("/v0/cluster/local", get(cluster::local))
        .route("/v0/cluster/visible", post(cluster::visible))
        .route("/v0/cluster/deploy", post(cluster::deploy))
        .route("/v0/cluster/truncate", post(cluster::truncate))
        .route("/v0/cluster/datasources", get(cluster::datasources))
        .route("/v0/cluster/delete", post(cluster::delete))
        .route("/metrics", get(metrics_route))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route",
            )
        })
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::count_requests,
        ))
        // A cluster's follower sends what it does not answer itself to process 0.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            cluster::forward,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Every error answer carries the JSON error body, also axum's own rejections.
        .layer(axum::middleware::map_response(error::json_errors))
        .layer(RequestDecompressionLayer::new())
        // A handler that panics (a bug) answers 500 with a JSON body; the server goes on.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error while answering the request",
                )
                .into_response()
            },
        ))
        .with_state(state)
}

/// Browsers may call the API from any page (as Tinybird allows): the token, not the origin,
/// is the credential. `/tokens`, the one route without a token, refuses requests from other
/// origins itself.
fn cors() -> tower_http::cors::CorsLayer {
    tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
        .allow_headers(tower_http::cors::Any)
        .expose_headers([header::HeaderName::from_static("x-petrel-upper")])
        .max_age(Duration::from_secs(3600))
}

/// How many connections the server holds and how long a client may take to send a
/// request's headers.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Connections served at once; further ones wait in the listen backlog until one ends.
    pub max_connections: usize,
    /// A connection that has not sent a whole request head within this time (a new
    /// connection, or an idle keep-alive one) is closed.
    pub header_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 10_000,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves the API on `listener` until the process ends, with the default limits.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) -> std::io::Result<()> {
    serve_with(listener, state, ConnectionLimits::default()).await
}

/// Serves the API on `listener` until the process ends: each connection is served by hyper
/// (HTTP/1.1 with upgrades for WebSocket) within `limits`.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    state: AppState,
    limits: ConnectionLimits,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use tower::{Layer as _, ServiceExt as _};
    // Around the whole router, so preflight OPTIONS requests are answered on every route.
    let app = cors().layer(router(state));
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return Ok(());
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait, keep serving the others.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let app = app.clone();
        let service = hyper::service::service_fn(
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                app.clone().oneshot(request.map(axum::body::Body::new))
            },
        );
        tokio::spawn(async move {
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
            drop(slot);
        });
    }
}

/// `GET /v0/health`: 503 while starting, and once a cluster lost a process; else 200, with `"status": "degraded"` when some
/// view stopped while the rest keep serving. Anyone sees the count of failed views; an admin
/// token also sees which views and their errors (labels carry parameter values).
async fn health(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let ready = state.runtime.is_ready();
    let failed: Vec<serde_json::Value> = state
        .runtime
        .failed_views()
        .into_iter()
        .map(|(view, error)| serde_json::json!({"view": view, "error": error}))
        .collect();
    let failure = state.runtime.failure();
    let (code, status) = match (ready, failed.is_empty()) {
        _ if failure.is_some() => (StatusCode::SERVICE_UNAVAILABLE, "failed"),
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "starting"),
        (true, true) => (StatusCode::OK, "ok"),
        (true, false) => (StatusCode::OK, "degraded"),
    };
    let mut body = serde_json::json!({"status": status, "failed_view_count": failed.len()});
    // A cluster that lost a process: every process says so, and why.
    if let Some(failure) = failure {
        body["error"] = failure.into();
    }
    if authorize(&state, &headers, &params, &Scope::Admin).is_ok() {
        body["failed_views"] = serde_json::Value::Array(failed);
    }
    (code, Json(body)).into_response()
}

async fn list_tokens(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &params, &Scope::Admin)?;
    // Each with a stable `id` (by name), as Tinybird lists tokens.
    let tokens: Vec<serde_json::Value> = state
        .tokens
        .all()
        .into_iter()
        .map(|t: Token| {
            let mut entry = serde_json::to_value(&t).unwrap_or_default();
            entry["id"] =
                serde_json::json!(crate::project::resource_id(&format!("token:{}", t.name)));
            entry
        })
        .collect();
    Ok(Json(serde_json::json!({ "tokens": tokens })).into_response())
}

/// The live page: lists the pipes and shows one as a table (and a chart) kept current over a
/// WebSocket subscription. Embedded in the binary; it reads data only with the user's token.
async fn live_page() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("ui.html"))
}

/// `GET /metrics` (admin): Prometheus text.
async fn metrics_route(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &params, &Scope::Admin)?;
    Ok(metrics::metrics(State(state)).await)
}

/// The parameters of an `application/x-www-form-urlencoded` body (`None` for other bodies),
/// for routes that take their parameters as a form as well as in the query string.
fn form_params(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<BTreeMap<String, String>>, ApiError> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Ok(None);
    }
    serde_urlencoded::from_bytes(body)
        .map(Some)
        .map_err(|e| ApiError::bad_request(format!("malformed form body: {e}")))
}

/// The URL the client reached this server at (`http://` and its `Host` header), for answers
/// that name the server's own URLs.
fn base_url(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|host| format!("http://{host}"))
}

/// True for `localhost`, `*.localhost`, `127.x.y.z` and `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                name
            } else {
                host
            }
        })
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `GET /v0/views` (admin): the maintained views, their bindings, sizes and subscribers.
async fn list_views(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &params, &Scope::Admin)?;
    let buffers = state.runtime.subscriber_buffers();
    Ok(Json(serde_json::json!({
        "views": state.runtime.describe_views(),
        "subscriber_buffers": {
            "queued_bytes": buffers.queued_bytes(),
            "capacity_bytes": buffers.capacity,
            "per_subscriber_bytes": buffers.per_subscriber,
        },
    }))
    .into_response())
}

/// The `scope` parameters among `pairs`; an unknown scope is a 400.
fn scopes_in(pairs: &[(String, String)]) -> Result<Vec<Scope>, ApiError> {
    pairs
        .iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| {
            parse_scope(v).ok_or_else(|| {
                ApiError::bad_request(format!("unknown scope '{v}': use PIPES:READ:<pipe>, DATASOURCES:APPEND:<ds> or DATASOURCES:READ:<ds>"))
            })
        })
        .collect()
}

/// `POST /v0/tokens?name=N&scope=PIPES:READ:pipe&scope=..` (admin): creates or updates a
/// static token, kept across restarts.
async fn create_token(
    State(state): State<AppState>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("malformed query: {e}")))?;
    let params: BTreeMap<String, String> = pairs.iter().cloned().collect();
    authorize(&state, &headers, &params, &Scope::Admin)?;
    let name = params
        .get("name")
        .ok_or_else(|| ApiError::bad_request("the 'name' parameter is required"))?;
    let scopes = scopes_in(&pairs)?;
    if scopes.is_empty() {
        return Err(ApiError::bad_request("at least one 'scope' is required"));
    }
    let token = state
        .tokens
        .create_static(name, scopes)
        .map_err(ApiError::bad_request)?;
    Ok(Json(token).into_response())
}

/// Tinybird Local's `GET /tokens`: the admin token, to clients on this machine only.
async fn local_tokens(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !peer.ip().is_loopback() {
        return Err(ApiError::forbidden("GET /tokens answers only on loopback"));
    }
    // A page in a local browser (DNS rebinding) or a reverse proxy on this host connects
    // from loopback too: it must also name a loopback host, and come from no other origin.
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if !host.is_some_and(is_loopback_host) {
        return Err(ApiError::forbidden(
            "GET /tokens answers only requests to localhost, 127.0.0.1 or [::1]",
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin_host = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, rest)| rest);
        if !origin_host.is_some_and(is_loopback_host) {
            return Err(ApiError::forbidden(
                "GET /tokens does not answer pages from other origins",
            ));
        }
    }
    Ok(Json(serde_json::json!({
        "user_token": state.admin_token,
        "admin_token": state.admin_token,
        "workspace_admin_token": state.admin_token,
    }))
    .into_response())
}
